# hostside.sh: the host-side writer of the cache-mode cases (sourced after lib.sh, from a case
# with the header "# host-writer: yes"). The runner serves the same share a second time, by a
# second virtiofsd-ts with nothing cached, as tag "hostside"; a change made through it is, for
# the mount under test, a change made by a host process. It is mounted on /tmp/hostside.
#
#   host CMD        run the shell command CMD in this case's directory as the host sees it
#   exists NAME     "yes" or "no": does NAME exist in the guest's view (the mount under test)
#   reread_big      the host writes 4 MiB to "big"; the guest reads it 10 times, each time
#                   through a new open (cat), and checks it has the host's content (the host
#                   test counts the READs this costs in each mode)
#   X               the path of xfs_io (pread, pwrite, mmap, msync, fsync on one open file)

X=/usr/sbin/xfs_io
HOSTSIDE=/tmp/hostside
mkdir -p "$HOSTSIDE"
mount -t virtiofs hostside "$HOSTSIDE" || fail "cannot mount the host-side tag"
trap 'cd /; umount "$HOSTSIDE"' EXIT
H=$HOSTSIDE/.vfs-tests/$(basename "$PWD")
[ -d "$H" ] || fail "this case's directory is not visible through the host side ($H)"

host() { (cd "$H" && sh -c "$1") || fail "host-side command failed: $1"; }
exists() { if [ -e "$1" ]; then echo yes; else echo no; fi; }
reread_big() {
    host 'dd if=/dev/urandom of=big bs=1M count=4 2>/dev/null'
    sleep 1   # older than a timestamp tick: auto may keep it cached between opens
    _i=0
    while [ $_i -lt 10 ]; do cat big >/dev/null || fail "re-reading big failed"; _i=$((_i + 1)); done
    expect "re-read content equals the host's" "$(md5sum <"$H/big")" "$(md5sum <big)"
}

# fio_verify: 4 MiB of random writes of 4 to 64 KiB, each block read back and checked
# (crc32c). (Blocks up to 64 KiB keep its READs few beside those the host test counts.)
fio_verify() {
    /usr/bin/fio --name=verify --filename=fio-verify --rw=randwrite --bsrange=4k-64k --size=4m --ioengine=psync \
        --verify=crc32c --do_verify=1 --verify_fatal=1 --output=/tmp/fio-verify.out >/dev/null 2>&1
    _st=$?
    [ $_st -eq 0 ] || tail -n 5 /tmp/fio-verify.out
    expect "fio randwrite with --verify=crc32c" ok "$( [ $_st -eq 0 ] && echo ok || echo "failed ($_st)")"
    rm -f fio-verify
}

# mmap_shared FILE: writes "AAAA" at offset 0 through a MAP_SHARED mapping and msyncs it;
# prints "ok" or xfs_io's complaint (a refused mapping: "No such device").
mmap_shared() {
    _out=$($X -c 'mmap -rw 0 4' -c 'mwrite -S 0x41 0 4' -c 'msync -s 0 4' "$1" 2>&1)
    case $_out in
        *"No such device"*) echo refused ;;
        *[a-zA-Z]*) echo "$_out" | tail -n1 ;;
        *) echo ok ;;
    esac
}
