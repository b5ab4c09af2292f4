#!/bin/sh
# run.sh: runs guest test cases inside the test guest (scripts/build-guest.sh puts this folder
# at /guest-tests). Usage: sh /guest-tests/run.sh [-d DIR] CASE...  (names of DIR/*.sh without
# the suffix; DIR is cases, the default, or bench for npm run bench:guest).
#
# Each case runs in a fresh directory on the share, /mnt/.vfs-tests/CASE, with its own time
# limit (a line "# timeout: SECS" in the case, default 60), and its output is bracketed:
#   VFS-CASE-BEGIN CASE
#   ...what the case printed...
#   VFS-CASE-END CASE STATUS
# STATUS is the case's exit status: 0 passed, 77 skipped (its last line says why), 124
# timed out, anything else failed. The host (test/guest/runner.ts) reads these lines; a case
# the guest never finished (a hang, a panic) has no END line and fails there.
cd / || exit 1
set_=cases
if [ "$1" = -d ]; then set_=$2; shift 2; fi
root=/mnt/.vfs-tests
mkdir -p "$root" || { echo "VFS-CASE-ERROR cannot create $root on the share"; exit 1; }
for c in "$@"; do
    f=/guest-tests/$set_/$c.sh
    echo "VFS-CASE-BEGIN $c"
    if [ ! -f "$f" ]; then
        echo "no such case: $f"
        echo "VFS-CASE-END $c 2"
        continue
    fi
    tmo=$(sed -n 's/^# timeout: *\([0-9][0-9]*\).*/\1/p' "$f" | head -n1)
    dir=$root/$c
    rm -rf "$dir" && mkdir -p "$dir" || { echo "cannot make $dir"; echo "VFS-CASE-END $c 1"; continue; }
    # The case changes into its directory itself: busybox timeout leaves a watcher process
    # behind for up to a second, and one whose cwd is on the share keeps /mnt busy at umount.
    timeout -s KILL "${tmo:-60}" sh -c 'cd "$1" && exec sh "$2"' sh "$dir" "$f" 2>&1
    st=$?
    [ $st -eq 137 ] && { echo "timed out after ${tmo:-60}s"; st=124; }
    echo "VFS-CASE-END $c $st"
done
