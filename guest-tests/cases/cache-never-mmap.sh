#!/bin/sh
# Cache mode never with --allow-mmap: a guest kernel that knows FUSE_DIRECT_IO_ALLOW_MMAP
# (6.6 and later) may map a DIRECT_IO file shared and writable, and its msync'ed writes reach
# the host file; an older kernel (6.1) still refuses the mapping. The mode is given as none
# (the C virtiofsd's and libvirt's name for never): data is still read from the host each time.
# daemon: --cache=none --allow-mmap
# host-writer: yes
. /guest-tests/lib.sh
. /guest-tests/hostside.sh
host 'printf "0123456789" > m'
case $(uname -r) in
    6.[0-5].*|[1-5].*) want=refused content=0123456789 ;;
    *) want=ok content=AAAA456789 ;;
esac
expect "shared writable mmap with --allow-mmap on Linux $(uname -r | cut -d. -f1-2)" "$want" "$(mmap_shared m)"
expect "the host file after msync" "$content" "$(cat "$H/m")"
host 'printf "AAAA" > s'
expect "read" AAAA "$(cat s)"
host 'printf "BBBB" > s'
expect "same-size host rewrite seen at once" BBBB "$(cat s)"
done_
