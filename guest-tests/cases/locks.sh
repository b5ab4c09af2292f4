#!/bin/sh
# Locks seen from inside the guest: flock() between two guest processes, and a lock the
# host holds (test/guest/cases.test.ts takes it with flock(1) on the host before the boot).
# virtiofsd-ts holds locks on the host, so the host's lock keeps the guest out; the Rust
# virtiofsd has no locks and the guest does not see it (that line is marked better:).
# compare: rust
. /guest-tests/lib.sh
: > f
( $T/flock -x f sleep 4 ) &
sleep 1
check "flock -n while another guest process holds it" $T/flock -n -x f true
wait
check "flock -n after it was released" $T/flock -n -x f true
if [ -e /mnt/host-locked ]; then
    if $T/flock -n -x /mnt/host-locked true 2>/dev/null; then better "a lock the host holds" "not seen"
    else better "a lock the host holds" "keeps the guest out"; fi
fi
done_
