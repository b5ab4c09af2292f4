# lib.sh: helpers for guest test cases (sourced: . /guest-tests/lib.sh). A case prints what
# it observes, one fact a line, so that two runs (virtiofsd-ts and the Rust virtiofsd) can
# be compared line by line; it fails by exiting non-zero after printing why.
#
#   say TEXT...          print an observation
#   check NAME CMD...    run CMD; print "NAME: ok" or "NAME: <error message of CMD>"
#   expect NAME WANT GOT fail unless GOT = WANT (prints "NAME: GOT")
#   better NAME TEXT     an observation where virtiofsd-ts is deliberately better than the
#                        Rust virtiofsd (prefixed "better:", excluded from the comparison)
#   skip REASON          stop: the case does not apply here (exit 77)
#   fail REASON          stop: failed
#   as_user CMD...       run CMD as uid/gid 1000 (user "user" of the test guest)
#   T=/usr/bin           where the real tools are (busybox prefers its own applets)

T=/usr/bin
failed=0

say() { echo "$*"; }

as_user() { su user -s /bin/sh -c "$*"; }

# check NAME CMD...: runs CMD, prints "NAME: ok" or "NAME: <its error, without the program's
# name and path>"; returns CMD's status.
check() {
    _n=$1; shift
    _out=$("$@" 2>&1); _st=$?
    if [ $_st -eq 0 ]; then echo "$_n: ok"
    elif [ -z "$_out" ]; then echo "$_n: failed (status $_st)"
    else echo "$_n: $(echo "$_out" | tail -n1 | sed 's/^[^:]*: //; s/^.*: //')"; fi
    return $_st
}

expect() {
    if [ "$2" = "$3" ]; then echo "$1: $3"; else echo "$1: $3 (expected $2)"; failed=1; fi
}

better() { _n=$1; shift; echo "better: $_n: $*"; }

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

# done_: the case's exit status from the expect failures so far.
done_() { [ $failed -eq 0 ] || { echo "FAIL: some expectation did not hold"; exit 1; }; exit 0; }
