#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite: a Release build, a Debug build under
# AddressSanitizer and UndefinedBehaviorSanitizer, and a bounded fuzzing run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# ONNX Runtime's CPU build from npm, the peer the ONNX tests compare with: the package
# alone (--ignore-scripts fetches nothing else).
[ -d tests/ort/node_modules/onnxruntime-node ] ||
    (cd tests/ort && npm install --ignore-scripts --no-package-lock --no-audit --no-fund)
jobs=$(nproc)

echo "== release build and tests"
scripts/build.sh build
ctest --test-dir build --output-on-failure -j"$jobs"

echo "== sanitizer build (ASan + UBSan) and tests"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DMOEC_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
# A 32 MiB quarantine (256 by default) still holds freed blocks long after moec's last
# use of them, and lets LLVM's allocations reuse warm pages: a training model's compile
# under the sanitizers 7.2 -> 5.0 s.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1:quarantine_size_mb=32 \
    UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir build-asan --output-on-failure -j"$jobs"

echo "== fuzzing the frontend (bounded)"
FUZZ_BUILD=build-fuzz tests/fuzz/build_and_run.sh "${MOEC_FUZZ_SECONDS:-20}"
