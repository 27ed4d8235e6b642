#!/usr/bin/env bash
# `moec dump --after=all --verify-each` prints one "# after PASS" section per pass of
# the default pipeline, in order, each with the graph header and at least one node.
set -euo pipefail
moec=$1 model=$2
out=$("$moec" dump "$model" --after=all --verify-each)
want="infer-shapes verify expand-moe gw-specialize canonicalize fold-constants autodiff optimizer canonicalize fuse-gate-dispatch fuse-expert-ffn fuse-elementwise dce quantize-weights plan-memory"
got=$(printf '%s\n' "$out" | sed -n 's/^# after //p' | tr '\n' ' ' | sed 's/ $//')
if [ "$got" != "$want" ]; then
    echo "passes dumped: '$got', expected '$want'"
    exit 1
fi
sections=$(printf '%s\n' "$out" | grep -c '^graph ')
npasses=$(wc -w <<<"$want")
[ "$sections" -eq "$npasses" ] || { echo "expected $npasses graph dumps, got $sections"; exit 1; }
if printf '%s\n' "$out" | awk '/^# after expand-moe/{on=1} /^# after canonicalize/{on=0} on' | grep -q 'moe\.MoE('; then
    echo "moe.MoE survived expand-moe"
    exit 1
fi
if ! printf '%s\n' "$out" | awk '/^# after plan-memory/{on=1} on' | grep -q '^  plan peak='; then
    echo "the dump after plan-memory shows no memory plan"
    exit 1
fi
echo "1 passed, 0 failed"
