#!/bin/sh
# Cache mode auto: names and attributes are trusted for 1 s, file data is kept while the host
# file does not change. A host-side change is seen at the next open (close-to-open) and, on a
# file held open, once the 1 s timeout has passed; re-reading an unchanged file is served
# from the guest's page cache (the host test counts the READs); MAP_SHARED writes reach the
# host at msync; data survives fio --verify.
# daemon: --cache=auto
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
sleep 2
read -r l <&3
expect "host rewrite seen through the open descriptor after the timeout" three "$l"
exec 3<&-
host 'printf "AAAA" > s'
sleep 1
expect "read" AAAA "$(cat s)"
expect "read again" AAAA "$(cat s)"
host 'printf "BBBB" > s'
expect "same-size host rewrite seen at the next open" BBBB "$(cat s)"
cat s2 >/dev/null 2>&1
host 'printf "x" > s2; chmod 600 s; mv f f2'
sleep 2
expect "after the timeout: a host-created name, a chmod, a rename" "yes 600 no yes" "$(exists s2) $(stat -c %a s) $(exists f) $(exists f2)"
host 'truncate -s 2 s; rm f2'
sleep 2
expect "after the timeout: a host truncate and a delete" "2 BB no" "$(stat -c %s s) $(cat s) $(exists f2)"
reread_big
host 'printf "0123456789" > m'
expect "shared writable mmap" ok "$(mmap_shared m)"
expect "the host file after msync" AAAA456789 "$(cat "$H/m")"
fio_verify
done_
