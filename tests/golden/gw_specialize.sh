#!/usr/bin/env bash
# gw-specialize (ROUTING.md §3.10: the broadcast exists only in training):
#  - in inference, the dump of gw.json after the pass is exactly that of gw_topk.json
#    (the same model written with moe.TopKRoute), and both equal gw.gw-specialize.txt;
#  - the two models compile to byte-identical objects;
#  - in training the moe.GWRoute stays and its Dispatch's rows are not materialised: no
#    moe.ExpertMatMul reads them, the up projection is a moe.GatherMatMul of x, the
#    Dispatch has materialize=0 (gw.train.gw-specialize.txt).
# usage: gw_specialize.sh MOEC
set -euo pipefail
moec=$(realpath "$1")
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passes=infer-shapes,verify,expand-moe,gw-specialize
"$moec" dump gw.json --passes=$passes --after=gw-specialize >"$work/gw.txt"
"$moec" dump gw_topk.json --passes=$passes --after=gw-specialize >"$work/topk.txt"
diff -u gw.gw-specialize.txt "$work/gw.txt"
diff -u "$work/gw.txt" "$work/topk.txt"
"$moec" dump gw.json --passes=$passes --after=gw-specialize --mode=train >"$work/train.txt"
diff -u gw.train.gw-specialize.txt "$work/train.txt"
rows=$(sed -n 's/^ *%\([A-Za-z0-9_.]*\):[^ ]* .*= moe\.Dispatch(.*/\1/p' "$work/train.txt")
[ -n "$rows" ] || { echo "no moe.Dispatch in the training dump"; exit 1; }
for r in $rows; do
    if grep -q "moe\.ExpertMatMul(%$r," "$work/train.txt"; then
        echo "training: a moe.ExpertMatMul still reads the Dispatch's rows %$r"
        exit 1
    fi
done
grep -q 'moe\.GatherMatMul(%x, %row_token, %offsets, %w_up)' "$work/train.txt" ||
    { echo "training: no moe.GatherMatMul of x"; exit 1; }
grep -q 'moe\.Dispatch(.*materialize=0' "$work/train.txt" ||
    { echo "training: the Dispatch still materialises its rows"; exit 1; }
"$moec" compile gw.json -o "$work/gw.o"
"$moec" compile gw_topk.json -o "$work/topk.o"
cmp "$work/gw.o" "$work/topk.o" || { echo "the GW and top-k objects differ"; exit 1; }
echo "gw-specialize: ok"
