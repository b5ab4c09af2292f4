#!/bin/sh
# POSIX semantics of regular files: create, read back, append, truncate and extend, large
# copies, rename over a file, O_EXCL, hard and symbolic links, a file read after its unlink.
# compare: rust
. /guest-tests/lib.sh
echo hello > a
expect "read back" hello "$(cat a)"
echo more >> a
expect "size after append" 11 "$(stat -c %s a)"
expect "lines after append" "hello more" "$(cat a | tr '\n' ' ' | sed 's/ $//')"
truncate -s 3 a
expect "after truncate to 3" hel "$(cat a)"
truncate -s 8192 a
expect "size after extending" 8192 "$(stat -c %s a)"
expect "extension reads as zeros" 8189 "$(tail -c 8189 a | tr -d '\0' | wc -c | awk '{ print 8189 - $1 }')"
dd if=/dev/urandom of=r bs=65536 count=40 2>/dev/null
cp r r2
check "2.5 MiB copy equals original" cmp r r2
dd if=r of=r3 bs=4096 skip=100 seek=300 count=50 conv=notrunc 2>/dev/null
expect "size of a file written at an offset" $((350 * 4096)) "$(stat -c %s r3)"
check "data at the offset" cmp -n 204800 r3 r 1228800 409600
echo one > b; echo two > c
mv b c
expect "rename over a file" one "$(cat c)"
expect "old name gone" no "$( [ -e b ] && echo yes || echo no )"
check "O_EXCL on an existing name" sh -c 'set -C; echo x > c'
ln c hl
expect "nlink after link" 2 "$(stat -c %h c)"
rm c
expect "nlink after unlink" 1 "$(stat -c %h hl)"
expect "content through the other name" one "$(cat hl)"
ln -s hl sl
expect "readlink" hl "$(readlink sl)"
expect "read through a symlink" one "$(cat sl)"
ln -s nowhere dangling
check "open a dangling symlink" cat dangling
exec 3<hl
rm hl
expect "read after unlink of the last name" one "$(cat <&3)"
exec 3<&-
check "write to a directory" sh -c 'echo x > .'
check "read a missing file" cat missing
done_
