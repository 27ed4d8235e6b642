#!/usr/bin/env bash
# One golden check (tests/golden.cmake registers one ctest per check):
#   run.sh MOEC CASE PASS [dot]   `moec dump CASE.json --after=PASS` must print exactly
#                                 CASE.PASS.txt (CASE.PASS.dot with --format=dot);
#                                 PASS "final" dumps the graph after the whole pipeline.
#   run.sh MOEC CASE dump-dir     --dump-dir writes NN-pass.txt for every pass, and the
#                                 last one equals CASE.dce.txt.
# The pipeline is spelled out so that passes added to the default one later do not
# change these files. CASE.args, when present, holds extra flags (e.g. --mode=train);
# CASE.passes, when present, another pass list (the fusion cases: before and after).
# The expected files were reviewed by hand: each shows what its pass must do.
set -u
moec=$(realpath "$1")
case_name=$2
pass=$3
format=${4:-text}
cd "$(dirname "$0")"
passes=infer-shapes,verify,expand-moe,canonicalize,fold-constants,dce
[ -f "$case_name.passes" ] && read -r passes <"$case_name.passes"
extra=()
[ -f "$case_name.args" ] && read -r -a extra <"$case_name.args"

if [ "$pass" = dump-dir ]; then
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
    "$moec" dump "$case_name.json" --passes=$passes "${extra[@]}" --dump-dir="$dir" >/dev/null || exit 1
    want="01-infer-shapes.txt 02-verify.txt 03-expand-moe.txt 04-canonicalize.txt 05-fold-constants.txt 06-dce.txt"
    got=$(cd "$dir" && echo *)
    [ "$got" = "$want" ] || { echo "--dump-dir wrote: $got; expected: $want"; exit 1; }
    diff -u "$case_name.dce.txt" "$dir/06-dce.txt"
    exit
fi

args=(dump "$case_name.json" --passes=$passes --verify-each "${extra[@]}")
[ "$pass" = final ] || args+=(--after="$pass")
want=$case_name.$pass.txt
if [ "$format" = dot ]; then
    args+=(--format=dot)
    want=$case_name.$pass.dot
fi
"$moec" "${args[@]}" >"${TMPDIR:-/tmp}/golden.$$" || { rm -f "${TMPDIR:-/tmp}/golden.$$"; exit 1; }
diff -u "$want" "${TMPDIR:-/tmp}/golden.$$"
status=$?
rm -f "${TMPDIR:-/tmp}/golden.$$"
exit $status
