#!/bin/sh
# Attributes and ownership: chmod, chown, times, umask, special files (FIFO, device nodes,
# sockets made by mknod), and what a user who is not root may do.
# compare: rust
. /guest-tests/lib.sh
: > f
chmod 754 f
expect "mode after chmod" 754 "$(stat -c %a f)"
chown 1000:1000 f
expect "owner after chown" 1000:1000 "$(stat -c %u:%g f)"
touch -d '2001-02-03 04:05:06' f
expect "mtime after touch -d" 2001-02-03 "$(date -d @"$(stat -c %Y f)" +%F)"
(umask 027 && : > masked && mkdir maskdir)
expect "umask applies to files" 640 "$(stat -c %a masked)"
expect "umask applies to directories" 750 "$(stat -c %a maskdir)"
mkfifo fifo
expect "fifo type" fifo "$(stat -c %F fifo)"
mknod nul c 1 3
expect "device node numbers" 1,3 "$(stat -c '%t,%T' nul)"
check "write to the device node (the guest's own /dev/null)" sh -c 'echo x > nul'
chmod 1777 .
check "user 1000 creates a file" as_user touch mine
expect "owner of a file user 1000 made" 1000:1000 "$(stat -c %u:%g mine)"
mkdir rootonly; chmod 755 rootonly
check "user 1000 creates in a root directory" as_user touch rootonly/x
chmod 600 f; chown 0:0 f
check "user 1000 reads a 0600 root file" as_user cat f
check "user 1000 chmods a root file" as_user chmod 666 f
check "user 1000 removes from a sticky directory what root owns" as_user rm -f f
chmod 2775 maskdir; chgrp 1000 maskdir
: > maskdir/inherited
expect "setgid directory passes its group on" 1000 "$(stat -c %g maskdir/inherited)"
check "xattrs without --xattr" $T/getfattr -n user.x f
done_
