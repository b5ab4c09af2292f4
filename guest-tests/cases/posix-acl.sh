#!/bin/sh
# --posix-acl: ACLs set in the guest are enforced there for other users, a default ACL is
# inherited and replaces the umask, chmod and setfacl -b behave as on a local file system,
# and an ACL set by a file's owner outside its group clears setgid.
# daemon: --posix-acl
# compare: rust
. /guest-tests/lib.sh
chmod 755 .
umask 022
mkdir plain; : > plain-file
expect "without a default ACL the umask applies (mkdir)" 755 "$(stat -c %a plain)"
expect "without a default ACL the umask applies (file)" 644 "$(stat -c %a plain-file)"

echo secret > f; chmod 600 f
expect "user 1000 cannot read a 0600 root file" 1 "$(as_user 'cat f' >/dev/null 2>&1; echo $?)"
check "setfacl -m u:1000:r" $T/setfacl -m u:1000:r f
expect "getfacl shows the entry" user:1000:r-- "$($T/getfacl -pn f 2>/dev/null | grep '^user:1000')"
expect "the group bits show the mask" 640 "$(stat -c %a f)"
expect "user 1000 reads it through the ACL" secret "$(as_user 'cat f' 2>&1)"
check "chmod 600 with an ACL" chmod 600 f
expect "chmod set the mask" mask::--- "$($T/getfacl -pn f 2>/dev/null | grep '^mask')"
expect "user 1000 is refused by the mask" 1 "$(as_user 'cat f' >/dev/null 2>&1; echo $?)"
check "setfacl -b" $T/setfacl -b f
expect "no ACL left" "" "$($T/getfacl -pn --skip-base f 2>/dev/null)"

mkdir d; check "setfacl -d -m u:1000:rwx on a directory" $T/setfacl -d -m u:1000:rwx d
(umask 077; : > d/new; mkdir d/sub)
expect "a new file takes the default ACL, not the umask" 664 "$(stat -c %a d/new)"
expect "a new directory too" 775 "$(stat -c %a d/sub)"
expect "the new file's ACL names user 1000" user:1000:rwx "$($T/getfacl -pn d/new 2>/dev/null | sed -n 's/\t.*//; /^user:1000/p')"
expect "the new directory inherited the default ACL" default:user:1000:rwx "$($T/getfacl -pn d/sub 2>/dev/null | grep '^default:user:1000')"
check "user 1000 writes the new file through its ACL" as_user "echo hello > d/new"

: > sg; chown 1000:2000 sg; chmod 2770 sg
check "the owner (user 1000, not in group 2000) sets an ACL" as_user "$T/setfacl -m u:0:r sg"
expect "setgid cleared, as chmod would" 770 "$(stat -c %a sg)"
: > sg-root; chown 1000:2000 sg-root; chmod 2770 sg-root
check "root sets an ACL" $T/setfacl -m u:0:r sg-root
expect "setgid kept for root" 2770 "$(stat -c %a sg-root)"
done_
