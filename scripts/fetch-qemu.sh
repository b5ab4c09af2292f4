#!/usr/bin/env bash
# fetch-qemu.sh: provide a QEMU of a given series beside the machine's own, without installing
# it: QEMU 10.0 from bookworm-backports (for the 6.12 guest; see GUEST-VM.md), while the
# machine keeps Debian 12's QEMU 7.2 from install-host-deps.sh.
#
# Usage: scripts/fetch-qemu.sh [--version 10.0] [--refresh]
#   --version X.Y  QEMU series (default 10.0). 7.2 prints /usr/bin/qemu-system-x86_64 (the
#                  installed one) and downloads nothing.
#   --refresh      re-download the package index first
# Output: the path of a qemu-system-x86_64 to run, as the last stdout line. For a fetched
# series that is a wrapper in .cache/qemu/X.Y/ which runs the unpacked binary with its own
# firmware and data directories (-L), so it is used exactly like the installed one.
# qemu-system-x86, qemu-system-common and qemu-system-data of the newest X.Y.* version in
# bookworm/bookworm-backports are fetched with apt-get download (verified against Debian's
# signed index, see lib/common.sh) and unpacked with dpkg -x; their shared libraries come
# from the machine (install-host-deps.sh installs QEMU 7.2, which pulls them in). Idempotent:
# nothing is downloaded again while the unpacked version is current.
set -euo pipefail
PROG=fetch-qemu
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

series=10.0 refresh=""
while [ $# -gt 0 ]; do
    case $1 in
        --version) series=${2:?--version needs a value}; shift ;;
        --version=*) series=${1#*=} ;;
        --refresh) refresh=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done
[[ $series =~ ^[0-9]+\.[0-9]+$ ]] || die "--version wants a series like 10.0, not '$series'"

if [ "$series" = 7.2 ]; then
    command -v qemu-system-x86_64 >/dev/null || die "QEMU 7.2 is not installed: run scripts/install-host-deps.sh"
    qemu-system-x86_64 --version | head -n1 | grep -q ' 7\.2' || die "the installed QEMU is not 7.2"
    command -v qemu-system-x86_64
    exit 0
fi

OUT=$CACHE_DIR/qemu/$series
mkdir -p "$OUT"
exec 8>"$OUT/.lock"; flock 8
apt_private_bookworm
[ -z "$refresh" ] || apt_private_update bookworm force
apt_private_update bookworm
ver=$(apt_private_version bookworm qemu-system-x86 "$series")
[ -n "$ver" ] || die "no qemu-system-x86 $series.* in bookworm or bookworm-backports"
stamp="$ver $(cat "$0" | sha_stdin)"
if [ "$(cat "$OUT/STAMP" 2>/dev/null)" != "$stamp" ] || [ ! -x "$OUT/qemu-system-x86_64" ]; then
    rm -rf "$OUT/root"
    for p in qemu-system-x86 qemu-system-common qemu-system-data; do
        deb=$(apt_private_download bookworm "$p" "$series")
        log "unpacking $(basename "$deb")"
        dpkg -x "$deb" "$OUT/root"
    done
    missing=$(ldd "$OUT/root/usr/bin/qemu-system-x86_64" | awk '/not found/ { print $1 }' | paste -sd' ' -)
    [ -z "$missing" ] || die "QEMU $ver needs libraries this machine lacks: $missing (run scripts/install-host-deps.sh)"
    cat >"$OUT/qemu-system-x86_64" <<WRAP
#!/bin/sh
# QEMU $ver unpacked by scripts/fetch-qemu.sh; firmware from its own data and the machine's.
exec "$OUT/root/usr/bin/qemu-system-x86_64" -L "$OUT/root/usr/share/qemu" -L /usr/share/seabios -L /usr/lib/ipxe/qemu "\$@"
WRAP
    chmod +x "$OUT/qemu-system-x86_64"
    printf '%s\n' "$stamp" >"$OUT/STAMP"
    log "QEMU $("$OUT/qemu-system-x86_64" --version | head -n1)"
fi
echo "$OUT/qemu-system-x86_64"
