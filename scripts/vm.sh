#!/usr/bin/env bash
# vm.sh (npm run vm): the main job. Serves a host directory with virtiofsd-ts and boots a
# small Linux guest under QEMU that mounts it at /mnt and runs a command.
#
# Usage: npm run vm -- [--run 'CMD'] [--share DIR] [--qemu 7.2|10.0] [--kernel 6.1|6.12]
#          [--cache MODE] [--queues N] [--smp N] [--daemon-arg ARG]...
#   --run CMD     run CMD in the guest (sh -c, cwd /) and exit with its status; without it,
#                 a shell on the guest's console (leave with exit, or Ctrl-A X)
#   --share DIR   host directory to serve (default ./share, created if missing)
#   --qemu V      7.2 (Debian 12's, default) or 10.0 (bookworm-backports, fetched on first
#                 use); 10.0 boots the 6.12 guest unless --kernel says otherwise
#   --kernel K    guest kernel series: 6.1 (default with QEMU 7.2) or 6.12
#   --cache MODE  never|metadata|auto|always (default auto)
#   --queues N    request queues (num-request-queues; default 1), --smp N vCPUs (default 2)
#   --daemon-arg ARG  one more virtiofsd-ts option (repeatable), e.g. --daemon-arg --xattr
# Installs what is missing first (QEMU from Debian, the guest image), so it works on a fresh
# Debian machine after `npm ci`. Exits with the guest command's status; the daemon exits
# with QEMU, and the socket is removed.
set -euo pipefail
cd "$(dirname "$0")/.."
run="" share=./share kernel="" qemu=7.2 cache=auto queues=1 smp=2
daemon_args=()
while [ $# -gt 0 ]; do
    case $1 in
        --run) run=$2; shift 2 ;;
        --share) share=$2; shift 2 ;;
        --kernel) kernel=$2; shift 2 ;;
        --qemu) qemu=$2; shift 2 ;;
        --smp) smp=$2; shift 2 ;;
        --cache) cache=$2; shift 2 ;;
        --queues) queues=$2; shift 2 ;;
        --daemon-arg) daemon_args+=("$2"); shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "vm: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case $qemu in
    7.2) kernel=${kernel:-6.1} ;;
    10.0) kernel=${kernel:-6.12} ;;
    *) echo "vm: --qemu wants 7.2 or 10.0" >&2; exit 2 ;;
esac
[ -n "$run" ] || [ -t 0 ] || { echo "vm: no terminal for a shell: give a command with --run 'CMD'" >&2; exit 2; }
bash scripts/install-host-deps.sh >&2
qemu_bin=$(bash scripts/fetch-qemu.sh --version "$qemu" | tail -n1)
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
if [ -n "$run" ]; then
    bash scripts/run-guest.sh --socket "$sock" --qemu "$qemu_bin" --kernel "$kernel" --queues "$queues" --smp "$smp" --cmd "$run"
else
    bash scripts/run-guest.sh --socket "$sock" --qemu "$qemu_bin" --kernel "$kernel" --queues "$queues" --smp "$smp" --interactive
fi
status=$?
set -e
wait "$daemon" 2>/dev/null || true
echo "vm: guest command exited with $status; daemon log: $(grep -c . "$dir/daemon.log") lines" >&2
exit $status
