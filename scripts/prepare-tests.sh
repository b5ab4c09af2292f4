#!/usr/bin/env bash
# prepare-tests.sh: everything the tests need beyond npm ci, each step idempotent and quick
# once done (npm test runs it first): host packages (QEMU 7.2, busybox, guest tools), the
# reference daemons (Rust and C virtiofsd), QEMU 10.0 beside 7.2, and the 6.1 and 6.12 guest
# images. Progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-host-deps.sh
bash scripts/fetch-anchors.sh >/dev/null
bash scripts/fetch-qemu.sh --version 10.0 >/dev/null
bash scripts/build-guest.sh --kernel 6.1 >/dev/null
bash scripts/build-guest.sh --kernel 6.12 >/dev/null
