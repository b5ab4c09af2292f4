#!/bin/sh
# POSIX semantics of directories: mkdir/rmdir, ENOTEMPTY, listings of many entries, renames
# of directories (over an empty one, over a full one, into themselves), link counts, '..'.
# compare: rust
. /guest-tests/lib.sh
mkdir -p a/b/c
check "rmdir a non-empty directory" rmdir a
check "mkdir an existing name" mkdir a
expect "nlink of a directory with one subdirectory" 3 "$(stat -c %h a)"
i=0; while [ $i -lt 500 ]; do : > "a/f$i"; i=$((i + 1)); done
expect "entries listed" 501 "$(ls a | wc -l)"
expect "listing is complete and unique" 501 "$(ls a | sort -u | wc -l)"
expect "find sees all" 503 "$(find a | wc -l)"
mkdir empty full; : > full/x
mv -T a/b empty
expect "rename a directory over an empty one" c "$(ls empty)"
check "rename a directory over a non-empty one" mv -T empty full
check "rename a directory into itself" mv full full/sub
expect "'..' of a subdirectory is its parent" yes "$( [ "$(stat -c %i .)" = "$(cd empty/c/.. && cd .. && stat -c %i .)" ] && echo yes || echo no)"
check "rmdir of a file" rmdir full/x
rm -r a
expect "rm -r removed everything" "empty full" "$(ls | tr '\n' ' ' | sed 's/ $//')"
long=$(printf 'n%.0s' $(seq 255))
check "a 255-byte name" touch "$long"
check "a 256-byte name" touch "${long}x"
done_
