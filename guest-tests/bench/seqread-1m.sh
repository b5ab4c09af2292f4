#!/bin/sh
# fio job of npm run bench:guest: --rw=read --bs=1m --ioengine=psync
# timeout: 120
. /guest-tests/bench/fio.lib
fio_job seqread-1m --rw=read --bs=1m --ioengine=psync
