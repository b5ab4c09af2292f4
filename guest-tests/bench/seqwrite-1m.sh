#!/bin/sh
# fio job of npm run bench:guest: --rw=write --bs=1m --ioengine=psync
# timeout: 120
. /guest-tests/bench/fio.lib
fio_job seqwrite-1m --rw=write --bs=1m --ioengine=psync
