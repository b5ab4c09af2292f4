#!/bin/sh
# --killpriv-v2 (FUSE_HANDLE_KILLPRIV_V2), with --xattr and cache auto: the guest leaves
# clearing setuid and setgid to the daemon on a write, a truncating open and a truncation by
# a user who is not root, and no longer asks for security.capability before each write it
# caches (the host side counts the GETXATTRs of the appends at the end).
# daemon: --killpriv-v2 --xattr
. /guest-tests/lib.sh
for f in w o t r; do echo data > $f; chmod 6777 $f; done
echo data > g; chmod 2767 g
check "user 1000 appends to a setuid file" as_user "echo more >> w"
expect "its mode after the append" 777 "$(stat -c %a w)"
check "user 1000 empties a setuid file by opening it with O_TRUNC" as_user ": > o"
expect "its mode after the truncating open" 777 "$(stat -c %a o)"
expect "its size" 0 "$(stat -c %s o)"
check "user 1000 truncates a setuid file" as_user truncate -s 2 t
expect "its mode after the truncation" 777 "$(stat -c %a t)"
check "user 1000 appends to a setgid file without group execute" as_user "echo more >> g"
expect "setgid without group execute stays" 2767 "$(stat -c %a g)"
echo more >> r; : > r
expect "root's append and truncating open keep both bits" 6777 "$(stat -c %a r)"
i=0; while [ $i -lt 200 ]; do echo line >> appended; i=$((i+1)); done
expect "200 appends" 200 "$(wc -l < appended)"
done_
