#!/usr/bin/python3
"""The dot-product micro-kernels (docs/backend.md, "Low-precision weights"), where the
host has them; without, the widening kernels run and compiled code must equal the
interpreter (within the GEMM tolerance) instead.

AVX512-BF16: a GEMM over bf16 weight panels rounds its activations to bf16 and sums exact
products in f32, so compiled code must equal the interpreter run on the activations
rounded to bf16 (to nearest even), within the GEMM tolerance, and must differ from the
interpreter on the unrounded ones by more than it (the proof that the dot kernel ran).
Cases: diff_ops.py's bf16-weight products whose A operand is a graph input (rows
gathered from it, or dispatched copies of it), and a MatMul with an odd K past one
384-row chunk and N past one panel, at T = 1 (one tile), 7 and 33 (chunks).

AVX512-VNNI: a GEMM over int8 or int4 weights quantizes its activations to int8 per
row and block of 32 K rows (within a group), and sums int8 products exactly. Compiled
code must equal NumPy's model of that (below, from the weights file `--weights=external`
writes: values, scales, zero points), within the GEMM tolerance, and differ from the
interpreter by more than it. MatMuls at T = 1, 3 and 6 (one tile) and 33 (chunks):
int8 with K = 777 (a last block of 9 rows, padded), int4 in groups of 32, and int4 in
groups of 64 with zero points (two blocks a group); N = 200 (a partial panel). An
infinite activation makes its row's outputs non-finite and leaves the others alone. Two
products in turn whose activations share a buffer each get their own quantized blocks
(the kernels keep a thread's last ones for the next panel).

With --aarch64 (from aarch64.sh, which exports the cross toolchain and runtime), the
int8 / int4 checks alone, on code built for aarch64-linux-gnu with a CPU that has the
dot product (neoverse-n1: sdot) and run under qemu-user.

The instruction selection itself is checked on object code by targets.sh.
usage: dot_kernels.py MOEC [--aarch64]"""
import json
import os
import sys
import tempfile

import numpy as np

import diff_ops
from npy_run import run, run_model
from safetensors_np import read as read_st
from weight_dtype import host_has

# The graph input that is (or is copied into) each case's GEMM A operand.
A_INPUT = {"matmul_wbf16": "a", "expert_matmul_wbf16": "x", "gather_matmul_wide_wbf16": "x",
           "fused_up_silu_wbf16": "x", "matmul_odd_k_wbf16": "a"}
# int8 / int4: (weight_dtype, K)
QUANT = (("int8", 777), ("int4:32", 256), ("int4:64:zp", 192))
A_BLOCK, N, MR = 32, 200, 6


# ---- bf16 ----

def round_bf16(a):
    """f32 to the nearest bf16 (ties to even), as f32."""
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32) << 16
    return r.view(np.float32)


def bf16_cases():
    every = diff_ops.moe_cases() + diff_ops.std_cases()
    wide = {c["name"]: c for c in diff_ops.weight_dtype_cases(every)}
    odd_k = diff_ops.case(
        "matmul_odd_k", "MatMul", [("a", "float32", ["T", 391], diff_ops.rnd()), ("w", None, None, None)],
        ["y"], "gemm", inits=[{"name": "w", "dtype": "bfloat16", "shape": [391, 70],
                               "init": {"dist": "normal", "std": 0.5, "seed": 3}}])
    wide["matmul_odd_k_wbf16"] = dict(odd_k, name="matmul_odd_k_wbf16")
    return [wide[n] for n in A_INPUT]


def check_bf16(moec, cs, work, rng, dot):
    d = os.path.join(work, cs["name"])
    os.makedirs(d)
    model, exe = os.path.join(d, "model.json"), os.path.join(d, "model")
    with open(model, "w") as f:
        json.dump(diff_ops.model_of(cs), f)
    run([moec, "build", model, "-o", exe])
    problems, out = [], cs["outputs"][0]
    for T in diff_ops.T_VALUES:
        feeds = diff_ops.feeds_of(cs, T, rng)
        a = A_INPUT[cs["name"]]
        native = run_model([exe], feeds, d, "native%d" % T, out)
        interp = run_model([moec, "run", model, "--interp"], feeds, d, "interp%d" % T, out)
        rounded = run_model([moec, "run", model, "--interp"], dict(feeds, **{a: round_bf16(feeds[a])}),
                            d, "rounded%d" % T, out)
        msg = diff_ops.compare(cs, native, rounded if dot else interp)
        if msg:
            problems.append("T=%d: against the interpreter on %s activations: %s"
                            % (T, "rounded" if dot else "unrounded", msg))
        if dot and diff_ops.compare(cs, native, interp) is None:
            problems.append("T=%d: equals the interpreter on unrounded activations: "
                            "the dot-product kernel did not run" % T)
    return problems


# ---- int8 / int4 ----

def quant_model(fmt, K):
    return {"moec": 1, "name": "q", "symbols": {"T": {"max": 40}},
            "inputs": [{"name": "x", "dtype": "float32", "shape": ["T", K]}], "outputs": ["y"],
            "initializers": [{"name": "w", "dtype": "float32", "shape": [K, N], "weight_dtype": fmt,
                              "init": {"dist": "normal", "std": 0.05, "seed": 11}}],
            "nodes": [{"name": "mm", "op": "MatMul", "inputs": ["x", "w"], "outputs": ["y"]}]}


def quantize_block(a):
    """One row's block as the kernels quantize it: (int8 values, f32 scale)."""
    most = np.float32(np.max(np.abs(a)))
    inv = np.float32(127) / most if most > 0 else np.float32(0)
    return np.rint(a * inv).astype(np.int64), most / np.float32(127)


def dot_reference(x, st, fmt, K):
    """NumPy's model of the VNNI decode path: per row and block of A_BLOCK rows of K
    (within a group), C += S (sa sum(q w)) (+ O (sa sum(q)) for int4, O = -(zero S))."""
    w, S = st["w"][2], st["w.scale"][2].astype(np.float64)
    int4 = fmt.startswith("int4")
    if int4:  # byte row i: row 2i in the low nibble, 2i+1 in the high one
        u = np.empty((K, N), np.int64)
        u[0::2], u[1::2] = w & 15, w >> 4
        zero = st["w.zero"][2].astype(np.float32) if "w.zero" in st else np.full(S.shape, 8, np.float32)
        O = -(zero * st["w.scale"][2]).astype(np.float64)
    group = K // S.shape[0]
    y = np.zeros((x.shape[0], N))
    for t in range(x.shape[0]):
        for k in range(0, K, A_BLOCK):
            g, end = k // group, min(k + A_BLOCK, K)
            q, sa = quantize_block(x[t, k:end])
            vals = u[k:end] if int4 else w[k:end].astype(np.int64)
            y[t] += S[g] * (float(sa) * (q @ vals))
            if int4:
                y[t] += O[g] * (float(sa) * q.sum())
    return y


# Where the int8 checks build and run: this host, or AArch64 under qemu-user.
HOST = {"build": [], "run": []}
AARCH64 = {"build": ["--target-triple", "aarch64-linux-gnu", "--cpu=neoverse-n1"], "run": ["qemu-aarch64"]}


def reuse_model(fmt, K):
    """Two products of one weight whose activations (2x, then x * x) the memory plan puts
    in one buffer: the second must not take the first's quantized blocks, which the
    kernels keep per thread for the next panel."""
    m = quant_model(fmt, K)
    m["outputs"] = ["y1", "y2"]
    m["nodes"] = [{"name": "twice", "op": "Add", "inputs": ["x", "x"], "outputs": ["a1"]},
                  {"name": "mm1", "op": "MatMul", "inputs": ["a1", "w"], "outputs": ["y1"]},
                  {"name": "square", "op": "Mul", "inputs": ["x", "x"], "outputs": ["a2"]},
                  {"name": "mm2", "op": "MatMul", "inputs": ["a2", "w"], "outputs": ["y2"]}]
    return m


def check_reuse(moec, fmt, K, d, rng, target, st):
    model, exe = os.path.join(d, "reuse.json"), os.path.join(d, "reuse")
    with open(model, "w") as f:
        json.dump(reuse_model(fmt, K), f)
    run([moec, "build", model, "-o", exe] + target["build"])  # w: the same recipe, values
    x = rng.standard_normal((2, K)).astype(np.float32)
    problems = []
    for y, a in (("y1", x + x), ("y2", x * x)):
        got = run_model(target["run"] + [exe], {"x": x}, d, "reuse_" + y, y)
        want = dot_reference(a, st, fmt, K)
        if not np.allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max()):
            problems.append("%s of two products in turn: differs from NumPy's model by %g"
                            % (y, np.abs(got - want).max()))
    return problems


def check_quant(moec, fmt, K, work, rng, dot, target):
    d = os.path.join(work, fmt.replace(":", "_"))
    os.makedirs(d)
    model, exe = os.path.join(d, "model.json"), os.path.join(d, "model")
    with open(model, "w") as f:
        json.dump(quant_model(fmt, K), f)
    run([moec, "build", model, "-o", exe, "--weights=external"] + target["build"])
    st = read_st(exe + ".safetensors")
    native_cmd = target["run"] + [exe, "--weights", exe + ".safetensors"]
    problems = []
    for T in (1, 3, MR, 33):
        feeds = {"x": rng.standard_normal((T, K)).astype(np.float32)}
        native = run_model(native_cmd, feeds, d, "native%d" % T)
        interp = run_model([moec, "run", model, "--interp"], feeds, d, "interp%d" % T)
        want = dot_reference(feeds["x"], st, fmt, K) if dot else interp
        tol = dict(rtol=1e-5, atol=1e-5 * np.abs(want).max())
        if not np.allclose(native, want, **tol):
            problems.append("T=%d: differs from %s by %g" % (
                T, "NumPy's int8-activation model" if dot else "the interpreter", np.abs(native - want).max()))
        if dot and np.allclose(native, interp, **tol):
            problems.append("T=%d: equals the interpreter: the int8 dot kernel did not run" % T)
    if dot:
        problems += check_reuse(moec, fmt, K, d, rng, target, st)
    # An infinite activation: its row's outputs are not finite (NaN from the dot kernel,
    # whose block scale is NaN), the other rows untouched.
    x = rng.standard_normal((3, K)).astype(np.float32)
    x[1, 5] = np.inf
    native = run_model(native_cmd, {"x": x}, d, "inf")
    clean = run_model(native_cmd, {"x": x[[0, 2]]}, d, "clean")
    if np.isfinite(native[1]).any() or not np.array_equal(native[[0, 2]], clean):
        problems.append("an infinite activation: its row is not all non-finite, or the others changed")
    return problems


def main():
    moec = os.path.abspath(sys.argv[1])
    rng = np.random.default_rng(20261208)
    if "--aarch64" in sys.argv:
        checks = [(fmt, lambda w, f=fmt, k=K: check_quant(moec, f, k, w, rng, True, AARCH64))
                  for fmt, K in QUANT]
    else:
        bf16_dot, int8_dot = host_has("avx512_bf16"), host_has("avx512_vnni")
        print("host: AVX512-BF16 %s, AVX512-VNNI %s" % ("yes" if bf16_dot else "no", "yes" if int8_dot else "no"))
        checks = [(cs["name"], lambda w, cs=cs: check_bf16(moec, cs, w, rng, bf16_dot)) for cs in bf16_cases()]
        checks += [(fmt, lambda w, f=fmt, k=K: check_quant(moec, f, k, w, rng, int8_dot, HOST))
                   for fmt, K in QUANT]
    failed = 0
    with tempfile.TemporaryDirectory() as work:
        for name, check in checks:
            try:
                problems = check(work)
            except RuntimeError as e:
                problems = [str(e)]
            for p in problems:
                print("FAIL %s: %s" % (name, p))
            failed += bool(problems)
    print("%d checks, %d failed" % (len(checks), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
