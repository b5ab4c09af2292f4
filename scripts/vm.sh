#!/usr/bin/env bash
# vm.sh (npm run vm): the main job. Serves a host directory with virtiofsd-ts and boots a
# small Linux guest under QEMU that mounts it at /mnt and runs a command.
#
# Usage: npm run vm -- [--run 'CMD'] [--share DIR] [--kernel 6.1] [--cache MODE] [--queues N]
#          [--daemon-arg ARG]...
#   --run CMD     command to run in the guest (default: show the mount and the share)
#   --share DIR   host directory to serve (default ./share, created if missing)
#   --cache MODE  never|metadata|auto|always (default auto)
# Installs what is missing first (QEMU from Debian, the guest image), so it works on a fresh
# Debian machine after `npm ci`. Exits with the guest command's status; the daemon exits
# with QEMU, and the socket is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
run='grep virtiofs /proc/mounts && cat /mnt/hello.txt'
share=./share kernel=6.1 cache=auto queues=1
daemon_args=()
while [ $# -gt 0 ]; do
    case $1 in
        --run) run=$2; shift 2 ;;
        --share) share=$2; shift 2 ;;
        --kernel) kernel=$2; shift 2 ;;
        --cache) cache=$2; shift 2 ;;
        --queues) queues=$2; shift 2 ;;
        --daemon-arg) daemon_args+=("$2"); shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "vm: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
bash scripts/install-host-deps.sh >&2
bash scripts/build-guest.sh --kernel "$kernel" >&2
[ -f dist/src/main.js ] && [ -f build/Release/virtiofsd_native.node ] || npm run build >&2
mkdir -p "$share"
[ -e "$share/hello.txt" ] || echo "Hello from the host, served by virtiofsd-ts." > "$share/hello.txt"
dir=$(mktemp -d /tmp/virtiofsd-ts-vm.XXXXXX)
sock=$dir/vfs.sock
node bin/virtiofsd-ts --socket-path="$sock" --shared-dir="$share" --cache="$cache" "${daemon_args[@]}" 2>"$dir/daemon.log" &
daemon=$!
cleanup() { kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { cat "$dir/daemon.log" >&2; echo "vm: the daemon did not start" >&2; exit 1; }
set +e
bash scripts/run-guest.sh --socket "$sock" --kernel "$kernel" --queues "$queues" --cmd "$run"
status=$?
set -e
wait "$daemon" 2>/dev/null || true
echo "vm: guest command exited with $status; daemon log: $(grep -c . "$dir/daemon.log") lines" >&2
exit $status
