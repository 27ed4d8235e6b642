#!/usr/bin/env bash
# The GW-MoE fine-tuning demo, from a fresh machine: sets up (Debian packages, gnuplot
# for the plot), builds moec, then pre-trains and fine-tunes the classifier of demo.py
# and prints the table; the plot goes to build/gw_demo/gw_finetune.png.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup.sh
if ! dpkg-query -W -f='${Status}' gnuplot-nox 2>/dev/null | grep -q "install ok installed"; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends gnuplot-nox
fi
scripts/build.sh build
/usr/bin/python3 examples/gw_finetune/demo.py --moec build/moec --out build/gw_demo
