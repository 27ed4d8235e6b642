#!/usr/bin/env bash
# The GW-MoE fine-tuning demo, from a fresh machine: sets up (Debian packages, gnuplot
# for the plot), builds moec, then pre-trains and fine-tunes the classifier of demo.py
# and prints the table; the plot goes to build/gw_demo/gw_finetune.png.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/setup.sh
scripts/build.sh build
/usr/bin/python3 examples/gw_finetune/demo.py --moec build/moec --out build/gw_demo
