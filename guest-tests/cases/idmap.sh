#!/bin/sh
# --translate-uid/--translate-gid: guest user 1000 is host user 2000 (the host side checks
# the owners on the share afterwards), and guest uid 3000 may not own anything.
# daemon: --translate-uid=map:1000:2000:1 --translate-gid=map:1000:2000:1 --translate-uid=forbid-guest:3000:1
. /guest-tests/lib.sh
chmod 1777 .
check "user 1000 creates a file" as_user "echo mine > mine"
expect "its owner as the guest sees it" 1000:1000 "$(stat -c %u:%g mine)"
: > given; chown 1000:1000 given
expect "root chowns a file to user 1000" 1000:1000 "$(stat -c %u:%g given)"
expect "chown to the forbidden uid 3000 fails" 1 "$(chown 3000 given 2>/dev/null; echo $?)"
expect "and leaves the owner" 1000:1000 "$(stat -c %u:%g given)"
: > rootfile
expect "root's file is root's" 0:0 "$(stat -c %u:%g rootfile)"
done_
