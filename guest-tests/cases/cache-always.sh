#!/bin/sh
# Cache mode always: names, attributes and a missing name are trusted for the entry and
# attribute timeout (86400 s) and file data is kept across opens, so a host-side change is
# NOT seen (that is the documented trade: use it when only the guest changes the share).
# Re-reading is served from the page cache (the host test counts the READs); MAP_SHARED
# writes reach the host at msync; the guest's own writes reach the host; fio --verify holds.
# daemon: --cache=always
# host-writer: yes
# timeout: 120
. /guest-tests/lib.sh
. /guest-tests/hostside.sh
host 'printf "one\n" > f; printf "keep" > k'
expect "file the host created" one "$(cat f)"
host 'printf "ONE\n" > f'
expect "same-size host rewrite: the guest keeps its cached data" one "$(cat f)"
# (A file the guest has read would have its atime marked stale, and stat asks the host again.)
expect "size and mode" "4 644" "$(stat -c '%s %a' k)"
host 'printf "longer now\n" > k; chmod 600 k'
expect "host size and mode change: the guest keeps its cached attributes" "4 644" "$(stat -c '%s %a' k)"
host 'rm f'
expect "host delete: the cached name stays" yes "$(exists f)"
expect "a missing name" no "$(exists later)"
host 'echo x > later'
expect "a name the host creates after the guest found it missing stays missing" no "$(exists later)"
echo mine > g
expect "the guest's own write reaches the host" mine "$(cat "$H/g")"
reread_big
host 'printf "0123456789" > m'
expect "shared writable mmap" ok "$(mmap_shared m)"
expect "the host file after msync" AAAA456789 "$(cat "$H/m")"
fio_verify
done_
