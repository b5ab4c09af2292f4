#!/bin/sh
# fio job of npm run bench:guest: --rw=randread --bs=4k --ioengine=psync --numjobs=2 --cpus_allowed=0-1 --cpus_allowed_policy=split
# timeout: 120
. /guest-tests/bench/fio.lib
fio_job randread-4k-2jobs-2cpus --rw=randread --bs=4k --ioengine=psync --numjobs=2 --cpus_allowed=0-1 --cpus_allowed_policy=split
