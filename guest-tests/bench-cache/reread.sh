#!/bin/sh
# Job of npm run bench:guest, cache modes: re-reads /mnt/reread-16m (16 MiB the host wrote
# before the boot) 20 times, each through a new open (cat), as a build re-reads its headers.
# Prints "REREAD first_MB/s rest_MB/s": the first read, then the 19 others together.
# timeout: 300
f=/mnt/reread-16m
[ -f $f ] || { echo "FAIL: $f is missing"; exit 1; }
now() { cut -d' ' -f1 /proc/uptime; }
t0=$(now)
cat $f >/dev/null || exit 1
t1=$(now)
i=1
while [ $i -lt 20 ]; do cat $f >/dev/null || exit 1; i=$((i + 1)); done
t2=$(now)
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {
    d1 = b - a; d2 = c - b; if (d1 < 0.01) d1 = 0.01; if (d2 < 0.01) d2 = 0.01
    printf "REREAD %.1f %.1f\n", 16 * 1.048576 / d1, 19 * 16 * 1.048576 / d2 }'
