#!/bin/sh
# Metadata job of npm run bench:guest: create, stat and remove 2000 small files; prints
#   FIO metadata ops/s 0 0 0   (ops = files x 3)
# timeout: 300
n=2000
start=$(cut -d' ' -f1 /proc/uptime)
i=0; while [ $i -lt $n ]; do echo x > f$i; i=$((i + 1)); done
i=0; while [ $i -lt $n ]; do stat -c %s f$i >/dev/null; i=$((i + 1)); done
i=0; while [ $i -lt $n ]; do rm f$i; i=$((i + 1)); done
end=$(cut -d' ' -f1 /proc/uptime)
awk -v s="$start" -v e="$end" -v n="$n" 'BEGIN { printf "FIO metadata %d 0 0 0\n", (3 * n) / (e - s) }'
