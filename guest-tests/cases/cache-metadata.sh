#!/bin/sh
# Cache mode metadata: names, attributes and a missing name are trusted for 86400 s, file
# data is not cached (DIRECT_IO): a host-side rewrite of a file's content is seen at once,
# a host-side rename, delete, chmod or new name is not. fio --verify holds.
# daemon: --cache=metadata
# host-writer: yes
# timeout: 120
. /guest-tests/lib.sh
. /guest-tests/hostside.sh
host 'printf "AAAA" > s; printf "x" > d'
expect "read" AAAA "$(cat s)"
host 'printf "BBBB" > s'
expect "same-size host rewrite seen at once (data not cached)" BBBB "$(cat s)"
expect "mode" 644 "$(stat -c %a s)"
host 'chmod 600 s'
expect "host chmod: the guest keeps its cached attributes" 644 "$(stat -c %a s)"
expect "exists" yes "$(exists d)"
host 'rm d'
expect "host delete: the cached name stays" yes "$(exists d)"
expect "a missing name" no "$(exists later)"
host 'echo x > later'
expect "a name the host creates after the guest found it missing stays missing" no "$(exists later)"
reread_big
echo 0123456789 > m
expect "shared writable mmap without --allow-mmap" refused "$(mmap_shared m)"
fio_verify
done_
