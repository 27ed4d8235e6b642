#!/usr/bin/env bash
# Every example compiled at -O0 and -O3 (gw_finetune also in training mode) and run on
# its bundled input and on T = 1, against the interpreter. Tolerance: relative 1e-4,
# absolute 1e-5 (a chain of GEMMs with FMA and of polynomial exp against libm).
# usage: examples.sh MOEC EXAMPLES_DIR
set -euo pipefail
moec=$(realpath "$1")
examples=$(realpath "$2")
compare=$(dirname "$(realpath "$0")")/compare.py
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
check() { # name model mode x.npy
    local name=$1 model=$2 mode=$3 x=$4 outs args=()
    outs=$(/usr/bin/python3 -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))['outputs']))" "$model")
    for o in $outs; do args+=(--output "$o=$work/want_$o.npy"); done
    "$moec" run "$model" --interp --mode="$mode" --input x="$x" "${args[@]}" >/dev/null
    for opt in -O0 -O3; do
        "$moec" build "$model" -o "$work/model" --mode="$mode" "$opt"
        args=()
        for o in $outs; do args+=(--output "$o=$work/got_$o.npy"); done
        "$work/model" --input x="$x" "${args[@]}"
        for o in $outs; do
            if ! /usr/bin/python3 "$compare" "$work/got_$o.npy" "$work/want_$o.npy" 1e-4 1e-5; then
                echo "FAIL $name ($mode $opt, $(basename "$x")) output $o"
                failed=$((failed + 1))
            fi
        done
    done
}
for dir in "$examples"/*/; do
    name=$(basename "$dir")
    [ -f "$dir/model.json" ] || continue
    /usr/bin/python3 -c "import numpy as np,sys; x=np.load(sys.argv[1]); np.save(sys.argv[2], x[:1])" \
        "$dir/x.npy" "$work/x1.npy"
    for x in "$dir/x.npy" "$work/x1.npy"; do
        check "$name" "$dir/model.json" infer "$x"
        [ "$name" != gw_finetune ] || check "$name" "$dir/model.json" train "$x"
    done
    echo "ok $name"
done
[ "$failed" -eq 0 ]
