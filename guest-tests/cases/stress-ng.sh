#!/bin/sh
# stress-ng's file-system stressors with --verify for 60 s on the share; then what is on the
# share (stress-ng's leftovers, if any, and a tree copied after it), as "LIST type size path"
# lines the host compares with its own view of the share.
# timeout: 240
# daemon: --xattr
. /guest-tests/lib.sh
$T/stress-ng --dir 1 --rename 1 --link 1 --symlink 1 --hdd 1 --hdd-bytes 8M --fallocate 1 \
    --fallocate-bytes 8M --seek 1 --seek-size 8M --chmod 1 --utime 1 --dentry 1 --flock 1 --lockf 1 \
    --xattr 1 --verify -t 60s --temp-path . --metrics-brief >/tmp/stress.log 2>&1
st=$?
grep -E 'metrc|passed|failed|skipped|untrustworthy|error' /tmp/stress.log | sed 's/^stress-ng: //' | tail -n 25
expect "stress-ng exit status" 0 "$st"
expect "failures reported" 0 "$(grep -c 'failed: [1-9]' /tmp/stress.log)"
# stress-ng removed its own files; leave a known tree behind for the host to compare.
cp -a /guest-tests after
ln -s after/run.sh after-link
find . -mindepth 1 | sort | while read -r p; do echo "LIST $(stat -c '%F %s' "$p") $p"; done
done_
