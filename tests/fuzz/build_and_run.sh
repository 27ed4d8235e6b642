#!/usr/bin/env bash
# Builds the libFuzzer targets with clang-19 (ASan + UBSan) and runs each for SECONDS
# on a scratch copy of its committed seed corpus; any crash, leak or timeout fails.
set -euo pipefail
seconds=${1:-60}
cd "$(dirname "$0")/../.."
out=${FUZZ_BUILD:-build-fuzz}
mkdir -p "$out"
srcs=$(git ls-files "ir/*.c" "frontend/*.c" "passes/*.c" 2>/dev/null || ls ir/*.c frontend/*.c passes/*.c)
flags="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -g -O1 -Iir -Ifrontend -Ipasses"
for target in frontend formats; do
    clang-19 $flags -ffp-contract=off tests/fuzz/fuzz_$target.c $srcs -lcjson -lm -o "$out/fuzz_$target"
    work="$out/corpus_$target"
    rm -rf "$work"
    cp -r "tests/fuzz/corpus/$target" "$work"
    echo "fuzzing $target for ${seconds}s"
    "$out/fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$out/" "$work" 2>"$out/fuzz_$target.log" || {
        tail -40 "$out/fuzz_$target.log"
        exit 1
    }
    tail -1 "$out/fuzz_$target.log"
done
