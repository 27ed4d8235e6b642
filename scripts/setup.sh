#!/usr/bin/env bash
# Installs what moec needs from Debian 12's packages, skipping what is already there.
set -euo pipefail

packages=(build-essential cmake pkg-config llvm-19-dev libzstd-dev clang-19 libclang-rt-19-dev
          libcjson-dev libcriterion-dev python3 python3-numpy gnuplot-nox)

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
