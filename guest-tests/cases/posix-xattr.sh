#!/bin/sh
# Extended attributes (the daemon runs with --xattr): set, get, list, remove, on files and
# directories, and the errors for missing names.
# daemon: --xattr
# compare: rust
. /guest-tests/lib.sh
: > f; mkdir d
check "setfattr on a file" $T/setfattr -n user.color -v blue f
check "setfattr on a directory" $T/setfattr -n user.kind -v box d
expect "getfattr" '"blue"' "$($T/getfattr --only-values -n user.color f | sed 's/^/"/; s/$/"/')"
expect "listed" user.color "$($T/getfattr -d f | sed -n 's/=.*//p')"
check "remove" $T/setfattr -x user.color f
check "get a removed attribute" $T/getfattr -n user.color f
check "remove a missing attribute" $T/setfattr -x user.nothing d
done_
