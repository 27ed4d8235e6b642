#!/usr/bin/env bash
# Sets up, builds, then checks, dumps, compiles to a native executable and runs the
# bundled Mixtral-style example (and the interpreter on it, for comparison).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build
model=examples/mixtral_block/model.json
echo "== moec check"
build/moec check "$model"
echo "== moec dump (after the whole pipeline)"
build/moec dump "$model"
echo "== moec build: a native executable"
build/moec build "$model" -o build/mixtral_block
echo "== ./mixtral_block (compiled)"
build/mixtral_block --input x=examples/mixtral_block/x.npy
echo "== moec run --interp (reference interpreter, for comparison)"
build/moec run "$model" --input x=examples/mixtral_block/x.npy --interp
