#!/usr/bin/env bash
# Sets up, builds, then checks, dumps and runs the bundled Mixtral-style example.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh build
model=examples/mixtral_block/model.json
echo "== moec check"
build/moec check "$model"
echo "== moec dump (after the whole pipeline)"
build/moec dump "$model"
echo "== moec run (reference interpreter)"
build/moec run "$model" --input x=examples/mixtral_block/x.npy --interp
