#!/bin/sh
# --xattrmap: the guest's trusted. attributes (overlayfs keeps its opaque directories and
# whiteouts there) are stored on the host under user.virtiofs.trusted., apart from the host's
# own trusted. names; the guest sees its names and cannot reach the mapped ones directly.
# The host side checks the names stored on the share afterwards.
# daemon: --xattrmap=:map:trusted.:user.virtiofs.:
# compare: rust
. /guest-tests/lib.sh
mkdir d; : > f
check "setfattr trusted.overlay.opaque on a directory" $T/setfattr -n trusted.overlay.opaque -v y d
expect "getfattr reads it back" y "$($T/getfattr --only-values -n trusted.overlay.opaque d)"
check "setfattr user.color on a file" $T/setfattr -n user.color -v blue f
expect "the directory's names as the guest set them" trusted.overlay.opaque "$($T/getfattr -m - -d d 2>/dev/null | sed -n 's/=.*//p')"
expect "the file's" user.color "$($T/getfattr -m - -d f 2>/dev/null | sed -n 's/=.*//p')"
expect "a mapped name is out of the guest's reach" 1 "$($T/setfattr -n user.virtiofs.trusted.x -v 1 f 2>/dev/null; echo $?)"
check "setfattr -x trusted.overlay.opaque" $T/setfattr -x trusted.overlay.opaque d
expect "gone" "" "$($T/getfattr -m - -d d 2>/dev/null | sed -n 's/=.*//p')"
check "setfattr trusted.overlay.origin" $T/setfattr -n trusted.overlay.origin -v o d
done_
