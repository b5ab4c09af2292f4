#!/bin/sh
# fio job of npm run bench:guest: --rw=randread --bs=4k --ioengine=libaio --iodepth=16 --direct=1
# timeout: 120
. /guest-tests/bench/fio.lib
fio_job randread-4k-libaio-qd16 --rw=randread --bs=4k --ioengine=libaio --iodepth=16 --direct=1
