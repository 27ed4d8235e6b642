#!/usr/bin/env bash
# Golden dumps: `moec dump CASE.json --after=PASS` must print exactly CASE.PASS.txt.
# The expected files were reviewed by hand: each shows what its pass must do.
set -u
moec=$(realpath "$1")
cd "$(dirname "$0")"
passed=0 failed=0
for want in *.*.txt; do
    case_name=${want%%.*}
    pass=${want#*.}
    pass=${pass%.txt}
    if "$moec" dump "$case_name.json" --after="$pass" --verify-each | diff -u "$want" - >/tmp/golden.$$; then
        passed=$((passed + 1))
    else
        echo "FAIL $want:"
        cat /tmp/golden.$$
        failed=$((failed + 1))
    fi
done
rm -f /tmp/golden.$$
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
