#!/bin/sh
# fio job of npm run bench:guest: --rw=randwrite --bs=4k --ioengine=psync
# timeout: 120
. /guest-tests/bench/fio.lib
fio_job randwrite-4k-psync --rw=randwrite --bs=4k --ioengine=psync
