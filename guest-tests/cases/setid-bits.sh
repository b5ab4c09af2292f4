#!/bin/sh
# Setuid and setgid when a user who is not root writes through the guest's direct I/O
# (cache never): Linux marks each such WRITE (FUSE_WRITE_KILL_SUIDGID) and the daemon
# clears the bits, as a local file system would: both on a write or append, setgid only
# where the group may execute; root's writes keep them. The Rust virtiofsd keeps them
# unless started with --killpriv-v2.
# daemon: --cache=never
. /guest-tests/lib.sh
for f in w a k; do echo data > $f; chmod 6777 $f; done
echo data > g; chmod 2767 g
check "user 1000 writes over a setuid file" as_user "echo more 1<> w"
expect "its mode after the write" 777 "$(stat -c %a w)"
check "user 1000 appends to a setuid file" as_user "echo more >> a"
expect "its mode after the append" 777 "$(stat -c %a a)"
check "user 1000 appends to a setgid file without group execute" as_user "echo more >> g"
expect "setgid without group execute stays" 2767 "$(stat -c %a g)"
echo more >> k
expect "root's append keeps both bits" 6777 "$(stat -c %a k)"
check "user 1000 truncates it" as_user truncate -s 2 k
expect "and the truncation clears them" 777 "$(stat -c %a k)"
expect "what the user wrote is there" "data
more" "$(cat a)"
done_
