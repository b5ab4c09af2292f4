#!/bin/sh
# --writeback (cache auto): the guest caches writes and sends them later, so what matters is
# when they reach the host: at fsync (checked while the file is still open in the guest), at
# close, with the size and mtime right; appends from two guest processes interleave without
# loss; a file opened write-only still takes a partial write (the guest reads around it, so
# the daemon opens it read-write); a file opened O_APPEND gets its data at the guest's offsets.
# daemon: --cache=auto --writeback
# host-writer: yes
# timeout: 120
. /guest-tests/lib.sh
. /guest-tests/hostside.sh
# At fsync: xfs_io reads its commands from a fifo, so the file stays open while the host side
# is checked; its opening of fifo "gate" (which our opening for writing waits for) tells us
# that the fsync before it has returned.
mkfifo /tmp/cmds /tmp/gate
before=$(date +%s)
$X -f w </tmp/cmds >/dev/null 2>&1 &
xpid=$!
exec 5>/tmp/cmds
echo 'pwrite -S 0x42 0 10000' >&5
echo 'fsync' >&5
echo 'open -r /tmp/gate' >&5
exec 6>/tmp/gate
expect "after fsync, the file still open: host size" 10000 "$(stat -c %s "$H/w")"
expect "after fsync, the file still open: host data" 0 "$(tr -d B <"$H/w" | wc -c)"
mt=$(stat -c %Y "$H/w")
expect "after fsync: host mtime is the write's" ok "$( [ "$mt" -ge $((before - 5)) ] && [ "$mt" -le $(($(date +%s) + 5)) ] && echo ok || echo "mtime $mt, write at $before")"
exec 5>&-
wait $xpid
exec 6>&-
# At close.
$X -f -c 'pwrite -S 0x43 0 4096' -c 'pwrite -S 0x44 4096 100' c >/dev/null 2>&1
expect "after close: host size" 4196 "$(stat -c %s "$H/c")"
expect "after close: host data" "4096 100" "$(tr -d -c C <"$H/c" | wc -c) $(tr -d -c D <"$H/c" | wc -c)"
# Two appenders.
( i=0; while [ $i -lt 200 ]; do echo "a $i" >>app; i=$((i + 1)); done ) &
( i=0; while [ $i -lt 200 ]; do echo "b $i" >>app; i=$((i + 1)); done ) &
wait
sync
expect "appends from two processes, lines on the host" 400 "$(wc -l <"$H/app")"
expect "each process's lines, whole and in order" "200 200 ok ok" "$(grep -c '^a [0-9]*$' "$H/app") $(grep -c '^b [0-9]*$' "$H/app") $(grep '^a ' "$H/app" | cut -d' ' -f2 | sort -nc && echo ok) $(grep '^b ' "$H/app" | cut -d' ' -f2 | sort -nc && echo ok)"
# Write-only, partial page.
host 'printf 0123456789 > wo'
sleep 1
printf XY | dd of=wo bs=1 seek=3 conv=notrunc 2>/dev/null
expect "a write-only open takes a partial write" 012XY56789 "$(cat "$H/wo")"
# O_APPEND onto a file the host wrote.
host 'printf "host\n" > ap'
sleep 1
echo guest >>ap
expect "O_APPEND after host data" "host guest" "$(tr '\n' ' ' <"$H/ap" | sed 's/ $//')"
fio_verify
done_
