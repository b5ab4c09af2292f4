#!/bin/sh
# --security-label: a guest running SELinux (booted with security=selinux, no policy loaded,
# so every new file is "unlabeled") sends each new file's label with the request that makes
# it; the daemon stores it, here under user.virtiofs.security.selinux (--xattrmap, as on a
# host whose own LSM must not see the guest's labels), and the guest reads it back. A
# symlink or a fifo cannot hold a user. name: making one fails and leaves nothing, as with
# the Rust virtiofsd. The host side checks the stored names afterwards.
# daemon: --security-label --xattrmap=:map:security.selinux:user.virtiofs.:
# kernel: security=selinux
# compare: rust
. /guest-tests/lib.sh
expect "SELinux runs in the guest" kernel "$(tr -d '\0' < /proc/self/attr/current 2>/dev/null)"
check "create a file" sh -c ': > f'
check "mkdir" mkdir d
expect "the file's label" unlabeled "$($T/getfattr --only-values -n security.selinux f 2>&1 | tr -d '\0')"
expect "the directory's label" unlabeled "$($T/getfattr --only-values -n security.selinux d 2>&1 | tr -d '\0')"
expect "the file's names as the guest sees them" security.selinux "$($T/getfattr -m - -d f 2>/dev/null | sed -n 's/=.*//p')"
expect "ln -s fails: a symlink cannot hold a user. name" 1 "$(ln -s f l 2>/dev/null; echo $?)"
expect "and leaves no symlink" absent "$(if [ -e l ] || [ -L l ]; then echo present; else echo absent; fi)"
expect "mkfifo fails too" 1 "$(mkfifo p 2>/dev/null; echo $?)"
expect "and leaves no fifo" absent "$(if [ -e p ]; then echo present; else echo absent; fi)"
done_
