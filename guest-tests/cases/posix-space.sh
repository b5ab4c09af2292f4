#!/bin/sh
# Space: fallocate (with and without keeping the size), punching holes, sparse files, statfs.
# compare: rust
. /guest-tests/lib.sh
check "fallocate 4 MiB" $T/fallocate -l 4M big
expect "size after fallocate" 4194304 "$(stat -c %s big)"
check "fallocate keep-size" $T/fallocate -n -o 4M -l 1M big
expect "keep-size kept the size" 4194304 "$(stat -c %s big)"
dd if=/dev/urandom of=data bs=1M count=2 2>/dev/null
before=$(stat -c %b data)
check "punch a hole" $T/fallocate -p -o 0 -l 1M data
expect "punching freed blocks" yes "$( [ "$(stat -c %b data)" -lt "$before" ] && echo yes || echo no)"
expect "the hole reads as zeros" 0 "$(head -c 1048576 data | tr -d '\0' | wc -c)"
dd if=/dev/zero of=sparse bs=1 count=1 seek=100M 2>/dev/null
expect "sparse file size" 104857601 "$(stat -c %s sparse)"
expect "sparse file takes little space" yes "$( [ "$(stat -c %b sparse)" -lt 1024 ] && echo yes || echo no)"
expect "statfs type" fuseblk "$(stat -f -c %T /mnt | sed 's/^fuse$/fuseblk/; s/^UNKNOWN.*/fuseblk/')"
check "sync" sync
done_
