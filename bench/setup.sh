#!/usr/bin/env bash
# Installs what bench/ compares against, from Debian's packages: PyTorch
# (python3-torch) with OpenBLAS built for OpenMP as its BLAS (Debian's torch uses the
# system libblas.so.3; the reference BLAS would understate it, and the pthread OpenBLAS
# fights torch's OpenMP threads for the cores), python3-onnx for torch.onnx.export, and
# ONNX Runtime's CPU build from npm (onnxruntime-node, --ignore-scripts: nothing but the
# package itself is fetched). Node.js and npm come from Debian only when `node` or `npm`
# is not on PATH already: a Node.js that ships its own npm (as NodeSource's nodejs
# package does) conflicts with Debian's npm package. The probe (bench/probe.c) needs a C
# compiler with OpenMP, `cc`, which the build already requires.
set -euo pipefail
packages=(python3-numpy python3-torch python3-onnx libopenblas0-openmp)
command -v node >/dev/null || packages+=(nodejs)
command -v npm >/dev/null || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo=sudo
if ((${#missing[@]})); then
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}"
fi
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
for lib in libblas.so.3 liblapack.so.3; do
    $sudo update-alternatives --set "$lib-$arch" "/usr/lib/$arch/openblas-openmp/$lib" >/dev/null
done
cd "$(dirname "$0")"
[ -d node_modules/onnxruntime-node ] || npm install --ignore-scripts --no-package-lock --no-audit --no-fund
