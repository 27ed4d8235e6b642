#!/usr/bin/env bash
# Every example compiled at -O0 and -O3 (gw_finetune also in training mode) and run on
# its bundled input and on T = 1, against the interpreter. Tolerance: relative 1e-4,
# absolute 1e-5 (a chain of GEMMs with FMA and of polynomial exp against libm).
# usage: examples.sh MOEC EXAMPLES_DIR [--quick]
# (--quick, the sanitizer build, where moec runs instrumented: -O0 only, the same lowering
# without LLVM's uninstrumented optimizer, whose code the release run checks)
set -euo pipefail
moec=$(realpath "$1")
examples=$(realpath "$2")
compare=$(dirname "$(realpath "$0")")/compare.py
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
opts=(-O0 -O3)
[ "${3:-}" != --quick ] || opts=(-O0)
check() { # name model mode x.npy...: the interpreter once per input, each build on every input
    local name=$1 model=$2 mode=$3 outs args i x
    shift 3
    outs=$(/usr/bin/python3 -c "import json,sys; print(' '.join(json.load(open(sys.argv[1]))['outputs']))" "$model")
    i=0
    for x in "$@"; do
        args=()
        for o in $outs; do args+=(--output "$o=$work/want${i}_$o.npy"); done
        "$moec" run "$model" --interp --mode="$mode" --input x="$x" "${args[@]}" >/dev/null
        i=$((i + 1))
    done
    for opt in "${opts[@]}"; do
        "$moec" build "$model" -o "$work/model" --mode="$mode" "$opt"
        i=0
        for x in "$@"; do
            args=()
            for o in $outs; do args+=(--output "$o=$work/got_$o.npy"); done
            "$work/model" --input x="$x" "${args[@]}"
            for o in $outs; do
                if ! /usr/bin/python3 "$compare" "$work/got_$o.npy" "$work/want${i}_$o.npy" 1e-4 1e-5; then
                    echo "FAIL $name ($mode $opt, $(basename "$x")) output $o"
                    failed=$((failed + 1))
                fi
            done
            i=$((i + 1))
        done
    done
}
for dir in "$examples"/*/; do
    name=$(basename "$dir")
    [ -f "$dir/model.json" ] || continue
    /usr/bin/python3 -c "import numpy as np,sys; x=np.load(sys.argv[1]); np.save(sys.argv[2], x[:1])" \
        "$dir/x.npy" "$work/x1.npy"
    check "$name" "$dir/model.json" infer "$dir/x.npy" "$work/x1.npy"
    [ "$name" != gw_finetune ] || check "$name" "$dir/model.json" train "$dir/x.npy" "$work/x1.npy"
    echo "ok $name"
done
[ "$failed" -eq 0 ]
