#!/bin/sh
# --xattrmap storing security.capability under another name (here user.virtiofs.), cache
# never: a file's capabilities are still cleared when a user writes, truncates or chowns it,
# as the host kernel clears the real name. Otherwise a user who may write a privileged binary
# could change it and keep its privileges.
# daemon: --cache=never --xattrmap=:map:security.capability:user.virtiofs.:
# compare: rust
. /guest-tests/lib.sh
# A VFS_CAP_REVISION_2 value: cap_net_raw permitted and effective.
CAP=0x0100000200200000000000000000000000000000
for f in w t c m; do echo data > $f; chmod 666 $f; check "setfattr security.capability on $f" $T/setfattr -n security.capability -v $CAP $f; done
expect "the guest reads it back" "$CAP" "$($T/getfattr -e hex -n security.capability w 2>&1 | sed -n 's/^security.capability=//p')"
check "user 1000 appends to w" as_user "echo more >> w"
expect "w's capability after the append" gone "$($T/getfattr -n security.capability w >/dev/null 2>&1 && echo kept || echo gone)"
check "user 1000 truncates t" as_user truncate -s 2 t
expect "t's capability after the truncation" gone "$($T/getfattr -n security.capability t >/dev/null 2>&1 && echo kept || echo gone)"
check "root chowns c" chown 1000 c
expect "c's capability after the chown" gone "$($T/getfattr -n security.capability c >/dev/null 2>&1 && echo kept || echo gone)"
check "root chmods m" chmod 644 m
expect "m's capability after a chmod" kept "$($T/getfattr -n security.capability m >/dev/null 2>&1 && echo kept || echo gone)"
done_
