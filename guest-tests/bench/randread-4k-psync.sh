#!/bin/sh
# fio job of npm run bench:guest: --rw=randread --bs=4k --ioengine=psync
# timeout: 120
. /guest-tests/bench/fio.lib
fio_job randread-4k-psync --rw=randread --bs=4k --ioengine=psync
