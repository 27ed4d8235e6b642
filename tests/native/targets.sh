#!/usr/bin/env bash
# What the backend emits: packed FMAs in the GEMM micro-kernel on AVX-512 and AVX2,
# AVX512-BF16 and AVX512-VNNI dot products for bf16 and int8 weights where the target
# has them, an
# AArch64 object (inspected with llvm-readobj-19 and llvm-objdump-19), large weights in
# the x86-64 large-data section so that models above 2 GiB of weights still link, and
# nothing half-written when a compile fails.
# usage: targets.sh MOEC
set -euo pipefail
moec=$(realpath "$1")
model=$(dirname "$(realpath "$0")")/abi_model.json
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
x86=(--target-triple x86_64-linux-gnu)

"$moec" compile "$model" "${x86[@]}" --cpu=skylake-avx512 --emit=asm -o "$work/avx512.s"
grep -Eq 'vfmadd[0-9]+ps[^#]*%zmm' "$work/avx512.s" || fail "no packed zmm FMA for skylake-avx512"
"$moec" compile "$model" "${x86[@]}" --cpu=haswell --emit=asm -o "$work/avx2.s"
grep -Eq 'vfmadd[0-9]+ps[^#]*%ymm' "$work/avx2.s" || fail "no packed ymm FMA for haswell"
grep -Eq '%zmm' "$work/avx2.s" && fail "haswell code uses AVX-512 registers"

# bf16 weights: vdpbf16ps where the CPU or the features have AVX512-BF16, and only there.
bf16=(--weight-dtype=bf16 --emit=asm "${x86[@]}")
"$moec" compile "$model" "${bf16[@]}" --cpu=sapphirerapids -o "$work/spr.s"
grep -Eq 'vdpbf16ps[^#]*%zmm' "$work/spr.s" || fail "no vdpbf16ps for bf16 weights on sapphirerapids"
"$moec" compile "$model" "${bf16[@]}" --cpu=skylake-avx512 --features=+avx512bf16 -o "$work/skx_bf16.s"
grep -q 'vdpbf16ps' "$work/skx_bf16.s" || fail "no vdpbf16ps with --features=+avx512bf16"
"$moec" compile "$model" "${bf16[@]}" --cpu=sapphirerapids --features=-avx512bf16 -o "$work/spr_no.s"
grep -q 'vdpbf16ps' "$work/spr_no.s" && fail "vdpbf16ps despite --features=-avx512bf16"
"$moec" compile "$model" "${bf16[@]}" --cpu=skylake-avx512 -o "$work/skx.s"
grep -q 'vdpbf16ps' "$work/skx.s" && fail "vdpbf16ps on skylake-avx512, which lacks it"
# int8 weights: vpdpbusd where the CPU or the features have AVX512-VNNI, and only there.
int8=(--weight-dtype=int8 --emit=asm "${x86[@]}")
"$moec" compile "$model" "${int8[@]}" --cpu=icelake-server -o "$work/icx.s"
grep -Eq 'vpdpbusd[^#]*%zmm' "$work/icx.s" || fail "no vpdpbusd for int8 weights on icelake-server"
"$moec" compile "$model" "${int8[@]}" --cpu=icelake-server --features=-avx512vnni -o "$work/icx_no.s"
grep -q 'vpdpbusd' "$work/icx_no.s" && fail "vpdpbusd despite --features=-avx512vnni"
"$moec" compile "$model" "${int8[@]}" --cpu=skylake-avx512 -o "$work/skx8.s"
grep -q 'vpdpbusd' "$work/skx8.s" && fail "vpdpbusd on skylake-avx512, which lacks it"

# AArch64: sdot for int8 weights on a CPU with the dot product, not on the generic CPU.
a64_int8=(--weight-dtype=int8 --emit=asm --target-triple aarch64-linux-gnu)
"$moec" compile "$model" "${a64_int8[@]}" --cpu=neoverse-n1 -o "$work/n1.s"
grep -Eq 'sdot[[:space:]]+v[0-9]+\.4s' "$work/n1.s" || fail "no sdot for int8 weights on neoverse-n1"
"$moec" compile "$model" "${a64_int8[@]}" -o "$work/a64gen.s"
grep -q 'sdot' "$work/a64gen.s" && fail "sdot on the generic AArch64 CPU, which may lack it"

"$moec" compile "$model" --target-triple aarch64-linux-gnu -o "$work/a64.o"
# (Tool output goes to files first: grep -q closing a pipe early trips pipefail.)
llvm-readobj-19 --file-headers "$work/a64.o" >"$work/a64.hdr"
grep -q 'Machine: EM_AARCH64' "$work/a64.hdr" || fail "not an AArch64 object"
llvm-objdump-19 -d -t "$work/a64.o" >"$work/a64.dis"
grep -Eq 'fmla[[:space:]]+v[0-9]+\.4s' "$work/a64.dis" || fail "no NEON FMA in the AArch64 object"
grep -q 'abi_model_run' "$work/a64.dis" || fail "AArch64 object lacks abi_model_run"

# Weights (w1: 6*48*70 floats, above LLVM's large-data threshold) go to .lrodata.
"$moec" compile "$model" "${x86[@]}" -o "$work/x86.o"
llvm-readobj-19 --sections "$work/x86.o" >"$work/x86.sec"
grep -q 'Name: .lrodata' "$work/x86.sec" || fail "weights are not in .lrodata"

# -O0 and LLVM IR output.
"$moec" compile "$model" -O0 --emit=llvm -o "$work/m.ll"
grep -q 'define .*@abi_model_run(' "$work/m.ll" || fail "no abi_model_run in the LLVM IR"

# A compile that fails after the object is written (the header cannot be) leaves
# neither the object nor a temporary file behind.
if "$moec" compile "$model" -o "$work/late.o" --header "$work/no/such/dir.h" 2>"$work/err"; then
    fail "compile with an unwritable header succeeded"
fi
grep -q "cannot write $work/no/such/dir.h" "$work/err" || fail "unexpected message: $(cat "$work/err")"
[ -z "$(ls "$work" | grep late)" ] || fail "a failed compile left files behind: $(ls "$work")"
# An unknown CPU or feature is a diagnostic, not an LLVM abort.
for flag in --cpu=nosuchcpu --cpu=i686 --features=+nosuchfeature; do
    status=0
    "$moec" compile "$model" "${x86[@]}" "$flag" -o "$work/cpu.o" 2>"$work/err" || status=$?
    [ "$status" -eq 1 ] || fail "$flag: exit status $status, expected 1"
    grep -q "error: --cpu" "$work/err" || fail "$flag: unexpected message: $(cat "$work/err")"
done

# Model names that cannot prefix C symbols are refused; tensor names are not formats.
sed 's/"name": "abi_model"/"name": "main"/' "$model" >"$work/main.json"
if "$moec" compile "$work/main.json" -o "$work/main.o" 2>"$work/err"; then fail "model 'main' compiled"; fi
grep -q "model name 'main' cannot prefix" "$work/err" || fail "unexpected message: $(cat "$work/err")"
sed 's/"x"/"x%s%n"/g' "$model" >"$work/pct.json"
"$moec" compile "$work/pct.json" -o "$work/pct.o"
grep -q 'x%s%n' "$work/pct.h" || fail "the header lost the tensor name"
"$moec" compile "$work/pct.json" -O0 --emit=llvm -o "$work/pct.ll"
grep -q "x%s%n' is NULL" "$work/pct.ll" && fail "a tensor name went into a printf format"
grep -q "%s: %s '%s' is NULL" "$work/pct.ll" || fail "no NULL-buffer message in the IR"
echo "targets: ok"
