#!/usr/bin/env bash
# run-guest.sh: boot the test guest of scripts/build-guest.sh under QEMU with a
# vhost-user-fs-pci device connected to an already listening vhost-user-fs daemon, run one
# shell command in the guest (the virtio-fs tag is mounted on /mnt) and exit with its status.
#
# Usage: scripts/run-guest.sh --socket PATH [--tag myfs] [--cmd 'SHELL COMMAND']
#          [--timeout SECONDS] [--kernel 6.1] [--qemu PATH] [--smp 2] [--mem 512] [--queues 1]
#          [--queue-size 1024] [--mount-opts OPTS] [--accel auto|tcg|kvm]
#          [--boot-timeout SECONDS] [--append 'KERNEL PARAMS'] [--qemu-arg ARG]... [--log FILE]
#          [--socket2 PATH [--tag2 TAG]]
#   --socket PATH   vhost-user socket the daemon listens on (required; the daemon must be up)
#   --tag TAG       virtio-fs tag (default myfs)
#   --socket2 PATH  a second vhost-user-fs device on another daemon's socket, tag --tag2
#                   (default hostside), not mounted: the guest command mounts it where it
#                   wants (the coherence cases use it as a host-side writer on the same share)
#   --cmd CMD       command for the guest's `sh -c` after mounting (default: ls -la /mnt)
#   --timeout SECS  limit for the guest command (default 60); the whole VM is killed after
#                   SECS + --boot-timeout (default 120) seconds
#   --kernel X.Y    guest kernel series (default 6.1; see build-guest.sh)
#   --qemu PATH     QEMU binary (default /usr/bin/qemu-system-x86_64); add e.g.
#                   --qemu-arg -L --qemu-arg DIR for an unpacked QEMU that needs its firmware
#   --smp N, --mem MiB, --queues N (num-request-queues), --queue-size N
#   --mount-opts O  mount -o O in the guest (e.g. dax)
#   --accel A       auto (default): kvm if /dev/kvm opens, the CPU has vmx/svm and a probe
#                   boot of this kernel under KVM works (once per host boot, cached in
#                   .cache/kvm-check/), else tcg.  Env VFS_ACCEL does the same.
#   --append P      extra kernel parameters (e.g. 'loglevel=7' to see driver messages)
#   --log FILE      also keep the guest console in FILE
#   --interactive   the guest console on this terminal (Ctrl-A X quits QEMU), a login shell
#                   instead of --cmd, no time limit; needs a terminal on stdin
# The guest console streams to stdout (CR stripped), QEMU's own messages go to stderr.
# Exit status: the guest command's status (from the console line "VFS-EXIT <status>");
# 124 on a timeout (command killed in the guest, or the VM killed by the host);
# 125 when the guest never printed VFS-EXIT (mount failure, kernel panic, QEMU error, ...),
# with the reason on stderr; 2 on bad usage; 130/143/129 when interrupted by SIGINT/TERM/HUP
# (QEMU is killed then).
#
# Guest memory is a shared memfd (vhost-user needs it), the console is the serial port,
# -no-reboot plus panic=-1 turn a guest panic into a QEMU exit.  The command travels
# base64-encoded on the kernel command line, so it is limited to about 1400 bytes (put longer
# scripts into guest-tests/, which build-guest.sh copies into the guest at /guest-tests).
set -euo pipefail
PROG=run-guest
. "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
bad() { printf '%s: %s (see --help)\n' "$PROG" "$*" >&2; exit 2; }

socket="" tag=myfs qemu=/usr/bin/qemu-system-x86_64 kseries=6.1 cmd='ls -la /mnt'
tmo=60 boot_tmo=120 smp=2 mem=512 queues=1 qsize=1024 mopts="" accel=${VFS_ACCEL:-auto}
append="" logfile="" interactive="" socket2="" tag2=hostside
qemu_extra=()
while [ $# -gt 0 ]; do
    opt=$1
    case $opt in
        --*=*) set -- "${opt%%=*}" "${opt#*=}" "${@:2}"; continue ;;
        -h|--help) usage; exit 0 ;;
        --interactive) interactive=1; shift; continue ;;
        --socket|--tag|--qemu|--kernel|--cmd|--timeout|--boot-timeout|--smp|--mem|--queues|\
        --queue-size|--mount-opts|--accel|--append|--qemu-arg|--log|--socket2|--tag2)
            [ $# -ge 2 ] || bad "$opt needs a value" ;;
        *) bad "unknown argument: $opt" ;;
    esac
    val=$2
    case $opt in
        --socket) socket=$val ;;
        --tag) tag=$val ;;
        --qemu) qemu=$val ;;
        --kernel) kseries=$val ;;
        --cmd) cmd=$val ;;
        --timeout) tmo=$val ;;
        --boot-timeout) boot_tmo=$val ;;
        --smp) smp=$val ;;
        --mem) mem=$val ;;
        --queues) queues=$val ;;
        --queue-size) qsize=$val ;;
        --mount-opts) mopts=$val ;;
        --accel) accel=$val ;;
        --append) append=$val ;;
        --qemu-arg) qemu_extra+=("$val") ;;
        --log) logfile=$val ;;
        --socket2) socket2=$val ;;
        --tag2) tag2=$val ;;
    esac
    shift 2
done
[ -n "$socket" ] || bad "--socket PATH is required"
for v in tmo boot_tmo smp mem queues qsize; do
    [[ ${!v} =~ ^[0-9]+$ ]] && [ "${!v}" -gt 0 ] || bad "--${v//_/-} wants a positive integer"
done
case $accel in auto|tcg|kvm) ;; *) bad "--accel wants auto, tcg or kvm" ;; esac
[[ $tag =~ ^[^[:space:],=]+$ ]] || bad "--tag must not contain spaces, commas or '='"
[[ $mopts =~ ^[^[:space:]]*$ ]] || bad "--mount-opts must not contain spaces"
[ -S "$socket" ] || { log "error: $socket is not a socket: start the daemon first"; exit 125; }
[ -z "$socket2" ] || [ -S "$socket2" ] || { log "error: $socket2 is not a socket: start the second daemon first"; exit 125; }
[[ $tag2 =~ ^[^[:space:],=]+$ ]] && [ "$tag2" != "$tag" ] || bad "--tag2 must differ from --tag and not contain spaces, commas or '='"
[ -x "$qemu" ] || command -v "$qemu" >/dev/null || { log "error: no QEMU at $qemu (run scripts/install-host-deps.sh)"; exit 125; }

guest=$("$SCRIPTS_DIR/build-guest.sh" --kernel "$kseries" | tail -n1) ||
    { log "error: scripts/build-guest.sh --kernel $kseries failed"; exit 125; }
kernel=$guest/vmlinuz initrd=$guest/initrd.gz

# --- Accelerator ----------------------------------------------------------------------------
# kvm only if /dev/kvm opens read-write AND a real boot of this kernel gets through (e.g. a
# /dev/kvm that creates VMs but cannot run this guest must not be used).  The probe boots the
# kernel without an initramfs: it panics at "VFS: Unable to mount root fs" within seconds
# under working KVM.  The verdict is cached per host boot, QEMU binary and kernel.
kvm_works() {
    [ -e /dev/kvm ] && { exec 9<>/dev/kvm; } 2>/dev/null || return 1
    exec 9>&-
    local dir=$CACHE_DIR/kvm-check key out
    # Hardware KVM (kvm_intel/kvm_amd) needs vmx/svm.  Without them a /dev/kvm can only be
    # something like kvm_pvm (seen here: it needs PVM-enabled guest kernels, a stock kernel
    # never gets through SeaBIOS), so skip the 20 s probe.
    grep -qwE 'vmx|svm' /proc/cpuinfo || return 1
    key=$( { cat /proc/sys/kernel/random/boot_id; echo "$qemu"; stat -L -c '%s %Y' "$(command -v "$qemu")"; head -n1 "$guest/VERSION"; } | sha_stdin)
    mkdir -p "$dir"
    if [ -f "$dir/$key" ]; then [ "$(cat "$dir/$key")" = yes ]; return; fi
    log "probing KVM (booting the guest kernel once under -accel kvm)"
    out=$(timeout -k 2 20 "$qemu" -accel kvm -machine q35 -cpu host -m 256 -smp 1 -nodefaults \
        -display none -no-reboot -serial stdio -kernel "$kernel" \
        -append "console=ttyS0 panic=-1 root=/dev/nonexistent" </dev/null 2>&1) || true
    if grep -q 'Unable to mount root fs\|Kernel panic' <<<"$out"; then
        echo yes >"$dir/$key"; log "KVM works"
    else
        echo no >"$dir/$key"
        log "/dev/kvm opens but a KVM guest did not get through its boot within 20s; using TCG"
    fi
    [ "$(cat "$dir/$key")" = yes ]
}
case $accel in
    auto) if kvm_works; then accel=kvm; else accel=tcg; fi ;;
esac
if [ "$accel" = kvm ]; then cpu=host; else cpu=max; fi

# --- Command line ---------------------------------------------------------------------------
if [ -n "$interactive" ]; then
    [ -t 0 ] || { log "error: --interactive needs a terminal on stdin (use --cmd instead)"; exit 2; }
    # cttyhack makes the console the shell's controlling terminal: Ctrl-C reaches its jobs.
    cmd='echo "virtio-fs tag mounted on /mnt. Leave with exit (or Ctrl-A X)."; cd /mnt; exec cttyhack sh -l'
    tmo=31536000
fi
cmd64=$(printf '%s' "$cmd" | base64 -w0)
# no_timer_check: the boot-time IO-APIC timer check fails when TCG runs slowly on a loaded
# host ("IO-APIC + timer doesn't work!" panic, seen here with QEMU 10.0 + 6.12).
kargs="console=ttyS0 quiet panic=-1 no_timer_check vfs.tag=$tag vfs.timeout=$tmo"
[ -z "$mopts" ] || kargs+=" vfs.opts=$mopts"
[ -z "$append" ] || kargs+=" $append"
kargs+=" vfs.cmd=$cmd64"
[ ${#kargs} -le 2040 ] || { log "error: --cmd too long for the kernel command line (${#cmd} bytes; keep it under ~1400, or put a script into guest-tests/)"; exit 2; }

args=(
    -machine q35 -accel "$accel" -cpu "$cpu" -smp "$smp" -m "${mem}M"
    -object "memory-backend-memfd,id=mem,size=${mem}M,share=on" -numa node,memdev=mem
    -chardev "socket,id=vfs0,path=$socket"
    -device "vhost-user-fs-pci,queue-size=$qsize,num-request-queues=$queues,chardev=vfs0,tag=$tag"
    -kernel "$kernel" -initrd "$initrd" -append "$kargs"
    -nodefaults -no-user-config -display none -serial stdio -monitor none -no-reboot
    "${qemu_extra[@]+"${qemu_extra[@]}"}"
)
[ -z "$socket2" ] || args+=(
    -chardev "socket,id=vfs1,path=$socket2"
    -device "vhost-user-fs-pci,queue-size=$qsize,chardev=vfs1,tag=$tag2"
)

# --- Run --------------------------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/run-guest.XXXXXX")
qpid="" rpid="" signalled=""
cleanup() {
    [ -z "$qpid" ] || kill -TERM "$qpid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
on_signal() { signalled=$1; [ -z "$qpid" ] || kill -TERM "$qpid" 2>/dev/null || true; }
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

if [ -n "$interactive" ]; then
    log "booting $(basename "$guest") guest on $("$qemu" --version | head -n1 | sed 's/ *Copyright.*//'), accel=$accel, interactive"
    for i in "${!args[@]}"; do
        case ${args[$i]} in stdio) [ "${args[$((i - 1))]}" = -serial ] && args[$i]=mon:stdio ;; none) [ "${args[$((i - 1))]}" = -monitor ] && args[$i]=none ;; esac
    done
    set +e
    "$qemu" "${args[@]}"
    rc=$?
    set -e
    trap - EXIT
    rm -rf "$tmp"
    exit "$rc"
fi
total=$((tmo + boot_tmo))
log "booting $(basename "$guest") guest ($(awk 'NR==1 {print $2}' "$guest/VERSION")) on $("$qemu" --version | head -n1 | sed 's/ *Copyright.*//'), accel=$accel smp=$smp mem=${mem}M queues=$queues tag=$tag socket=$socket, limit ${total}s"
mkfifo "$tmp/out"
start=$(date +%s.%N)
# setsid: QEMU and timeout get their own process group, so a Ctrl-C is handled here (we
# kill QEMU) and QEMU never touches the terminal; stdin is /dev/null so QEMU cannot eat it.
setsid timeout -k 5 "$total" "$qemu" "${args[@]}" </dev/null >"$tmp/out" 2> >(tee "$tmp/stderr" >&2) &
qpid=$!
sed -u 's/\r$//' <"$tmp/out" | tee "$tmp/console" &
rpid=$!
rc=0
while :; do
    wait "$qpid" && rc=0 || rc=$?
    kill -0 "$qpid" 2>/dev/null || break
done
qpid=""
wait "$rpid" 2>/dev/null || true
elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
[ -z "$logfile" ] || cp "$tmp/console" "$logfile"
[ -z "$signalled" ] || { log "interrupted; QEMU killed"; exit "$signalled"; }

con=$tmp/console
status=$(grep -ao 'VFS-EXIT [0-9]*' "$con" | tail -n1 | cut -d' ' -f2) || true
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    if [ -n "$status" ]; then
        log "timeout: the guest printed VFS-EXIT $status but did not power off within ${total}s (unmount hang?); QEMU killed"
    elif grep -aq '^VFS-MOUNTED' "$con"; then
        log "timeout: no VFS-EXIT within ${total}s after the mount; QEMU killed"
    else
        log "timeout: the guest did not even mount within ${total}s; QEMU killed"
    fi
    exit 124
fi
if [ -n "$status" ]; then
    grep -aq '^VFS-UMOUNT-FAILED' "$con" && log "warning: unmounting /mnt in the guest failed or hung"
    grep -aq '^VFS-TIMEOUT' "$con" && log "the guest command ran into its ${tmo}s timeout"
    [ "$rc" = 0 ] || log "warning: QEMU exited with status $rc after the guest finished"
    log "guest command exit status $status (${elapsed}s)"
    exit "$status"
fi
if grep -aq '^VFS-MOUNT-FAILED' "$con"; then
    why="the virtio-fs mount failed: $(grep -a '^VFS-MOUNT-FAILED' "$con" | tail -n1)"
elif grep -aq 'Kernel panic' "$con"; then
    why="the guest kernel panicked: $(grep -a 'Kernel panic' "$con" | head -n1)"
elif [ "$rc" != 0 ]; then
    why="QEMU exited with status $rc: $(tail -n3 "$tmp/stderr" | tr '\n' ' ')"
elif ! grep -aq '^VFS-INIT' "$con"; then
    why="the guest init never started (QEMU exited with status 0)"
else
    why="the guest stopped without printing VFS-EXIT"
fi
log "error: no VFS-EXIT line: $why (${elapsed}s)"
exit 125
