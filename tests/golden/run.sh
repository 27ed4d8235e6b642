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
# The dot form of the final graph, and --dump-dir's numbered files.
if "$moec" dump fold.json --format=dot | diff -u fold.final.dot - >/tmp/golden.$$; then
    passed=$((passed + 1))
else
    echo "FAIL fold.final.dot:"; cat /tmp/golden.$$; failed=$((failed + 1))
fi
dir=$(mktemp -d)
"$moec" dump fold.json --dump-dir="$dir" >/dev/null
want="01-infer-shapes.txt 02-verify.txt 03-expand-moe.txt 04-canonicalize.txt 05-fold-constants.txt 06-dce.txt"
if [ "$(ls "$dir" | tr '\n' ' ' | sed 's/ $//')" = "$want" ] && diff -q "$dir/06-dce.txt" fold.dce.txt >/dev/null; then
    passed=$((passed + 1))
else
    echo "FAIL --dump-dir wrote: $(ls "$dir")"; failed=$((failed + 1))
fi
rm -rf "$dir" /tmp/golden.$$
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
