#!/usr/bin/env bash
# The bad-input corpus: every tests/diag/cases/NAME.err holds the exact message moec
# must print for that case. The command is `moec check NAME.json` unless NAME.args
# gives the arguments (paths relative to cases/, OUT for a scratch output path).
# Each case must exit with status 1 (or the number in NAME.status), print exactly the
# expected text on stderr, and leave no output file behind.
set -u
moec=$(realpath "$1")
cd "$(dirname "$0")/cases"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
passed=0 failed=0
for err in *.err; do
    name=${err%.err}
    out="$scratch/$name.out"
    if [ -f "$name.args" ]; then
        read -r -a args < <(sed "s|OUT|$out|g" "$name.args")
    else
        args=(check "$name.json")
    fi
    want_status=1
    [ -f "$name.status" ] && want_status=$(cat "$name.status")
    "$moec" "${args[@]}" >"$scratch/stdout" 2>"$scratch/raw_stderr" </dev/null
    status=$?
    # AddressSanitizer reports a failed huge allocation (allocator_may_return_null=1)
    # on stderr before moec's own message; that line is the sanitizer's, not moec's.
    grep -v '^==[0-9]*==WARNING: AddressSanitizer failed to allocate' "$scratch/raw_stderr" \
        >"$scratch/stderr" || true
    problem=""
    [ "$status" -eq "$want_status" ] || problem="exit status $status, expected $want_status"
    if [ -z "$problem" ] && ! diff -u "$err" "$scratch/stderr" >"$scratch/diff"; then
        problem="message differs:"$'\n'"$(cat "$scratch/diff")"
    fi
    if [ -z "$problem" ] && ls "$scratch"/"$name".out* >/dev/null 2>&1; then
        problem="left an output file behind"
    fi
    if [ -n "$problem" ]; then
        echo "FAIL $name: $problem"
        failed=$((failed + 1))
    else
        passed=$((passed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
