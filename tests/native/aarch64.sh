#!/usr/bin/env bash
# AArch64 code run under qemu-user: the runtime cross-compiled with the AArch64 toolchain,
# models built with --target-triple aarch64-linux-gnu (NEON micro-kernels, every weight
# storage: f32, bf16, f16, int8, int4 with zero points) and run on the bundled input and
# on 64 tokens (the buffered path of quantized weights), against the interpreter on this
# machine. Tolerance as native.examples: relative 1e-4, absolute 1e-5. Then int8 and int4
# on a CPU with the dot product (sdot) against NumPy's model (dot_kernels.py --aarch64).
# usage: aarch64.sh MOEC SOURCE_DIR [--quick]   (--quick: f32 and int4:64:zp only)
set -euo pipefail
moec=$(realpath "$1")
src=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
compare=$src/tests/native/compare.py
for f in "$src"/runtime/*.c; do
    aarch64-linux-gnu-gcc -std=c11 -O2 -D_GNU_SOURCE -pthread -c "$f" -o "$work/$(basename "$f" .c).o"
done
aarch64-linux-gnu-ar rcs "$work/libmoert.a" "$work"/*.o
export CC=aarch64-linux-gnu-gcc MOEC_RUNTIME_LIB=$work/libmoert.a MOEC_LDFLAGS="-static -pthread -lm"

ex=$src/examples/mixtral_block
/usr/bin/python3 -c "import numpy as np, sys; np.save(sys.argv[1], np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32))" "$work/x64.npy"
formats=(f32 bf16 f16 int8 int4:64:zp)
[ "${3:-}" != --quick ] || formats=(f32 int4:64:zp)
failed=0
for fmt in "${formats[@]}"; do
    flag=()
    [ "$fmt" = f32 ] || flag=(--weight-dtype="$fmt")
    "$moec" build "$ex/model.json" --target-triple aarch64-linux-gnu -o "$work/m" "${flag[@]}"
    for x in "$ex/x.npy" "$work/x64.npy"; do
        qemu-aarch64 "$work/m" --input x="$x" --output y="$work/got.npy"
        "$moec" run "$ex/model.json" --interp "${flag[@]}" --input x="$x" --output y="$work/want.npy"
        if ! /usr/bin/python3 "$compare" "$work/got.npy" "$work/want.npy" 1e-4 1e-5; then
            echo "FAIL aarch64 $fmt on $(basename "$x")"
            failed=1
        fi
    done
done
# The dot-product kernels (sdot) on a CPU that has them, against NumPy's model.
/usr/bin/python3 "$src/tests/native/dot_kernels.py" "$moec" --aarch64 || failed=1
[ "$failed" -eq 0 ] && echo "aarch64: ok (${formats[*]}, sdot)"
exit "$failed"
