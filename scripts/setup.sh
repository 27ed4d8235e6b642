#!/usr/bin/env bash
# Installs what moec needs from Debian 12's packages, skipping what is already there.
set -euo pipefail

# qemu-user and the AArch64 cross compiler: the tests run AArch64 code (tests/native/aarch64.sh).
# protobuf-c reads ONNX models; the tests write theirs with python3-onnx and run ONNX's
# node tests (libonnx-testdata).
packages=(build-essential cmake pkg-config llvm-19-dev libzstd-dev clang-19 libclang-rt-19-dev
          libcjson-dev libcriterion-dev libprotobuf-c-dev protobuf-c-compiler
          python3 python3-numpy python3-onnx libonnx-testdata gnuplot-nox
          qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross)

# Node.js runs ONNX Runtime for the tests that compare with it (tests/ort); Debian's only
# when none is on PATH (a Node.js with its own npm conflicts with Debian's npm package).
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
