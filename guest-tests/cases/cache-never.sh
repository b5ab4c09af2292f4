#!/bin/sh
# Cache mode never: whatever the host changes, the guest sees at its next access, even on a
# file it holds open (DIRECT_IO, no entry or attribute caching); a shared mapping is refused
# (no --allow-mmap); data survives fio --verify. The host-side changes go through a second
# daemon on the same share (see hostside.sh).
# daemon: --cache=never
# host-writer: yes
# timeout: 120
. /guest-tests/lib.sh
. /guest-tests/hostside.sh
host 'printf "one\n" > f'
expect "file the host created" one "$(cat f)"
exec 3<f
read -r l <&3
expect "first line through a descriptor kept open" one "$l"
host 'printf "one\nthree\n" > f'
read -r l <&3
expect "host rewrite seen at once through the open descriptor" three "$l"
exec 3<&-
host 'printf "AAAA" > s'
expect "read" AAAA "$(cat s)"
host 'printf "BBBB" > s'
expect "same-size host rewrite seen at once" BBBB "$(cat s)"
host 'truncate -s 2 s'
expect "host truncate seen at once" "2 BB" "$(stat -c %s s) $(cat s)"
host 'chmod 600 s'
expect "host chmod seen at once" 600 "$(stat -c %a s)"
host 'mv s s2'
expect "host rename seen at once" "no yes" "$(exists s) $(exists s2)"
host 'rm s2'
expect "host delete seen at once" no "$(exists s2)"
expect "a missing name" no "$(exists later)"
host 'echo x > later'
expect "a name the host creates after the guest found it missing" yes "$(exists later)"
reread_big
echo 0123456789 > m
expect "shared writable mmap without --allow-mmap" refused "$(mmap_shared m)"
fio_verify
done_
