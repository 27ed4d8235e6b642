#!/usr/bin/env bash
# Builds the libFuzzer targets with clang-19 (ASan + UBSan) from the same source lists
# as the compiler (CMake option MOEC_FUZZ), and runs each for SECONDS on a scratch copy
# of its committed seed corpus; any crash, leak or timeout fails.
set -euo pipefail
seconds=${1:-60}
cd "$(dirname "$0")/../.."
out=${FUZZ_BUILD:-build-fuzz}
CC=clang-19 cmake -S . -B "$out" -DCMAKE_BUILD_TYPE=Debug -DMOEC_FUZZ=ON \
    -DMOEC_TESTS=OFF >/dev/null
cmake --build "$out" -j"$(nproc)" --target fuzz_frontend fuzz_formats
for target in frontend formats; do
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
