#!/bin/sh
# The share is mounted as virtio-fs and answers the first requests.
# compare: rust
. /guest-tests/lib.sh
expect "mounted as" virtiofs "$(awk '$2 == "/mnt" { print $3 }' /proc/mounts)"
expect "share is a directory" directory "$(stat -c %F /mnt)"
expect "case directory is empty" 0 "$(ls -A . | wc -l)"
done_
