#!/usr/bin/python3
"""The AVX512-BF16 micro-kernel (docs/backend.md, "Low-precision weights"): where the
host has vdpbf16ps, a GEMM over bf16 weight panels rounds its activations to bf16 and
sums exact products in f32. So compiled code must equal the interpreter run on the
activations rounded to bf16 (to nearest even), within the GEMM tolerance, and must
differ from the interpreter on the unrounded ones by more than it (the proof that the
dot-product kernel ran). Cases: diff_ops.py's bf16-weight products whose A operand is a
graph input (rows gathered from it, or dispatched copies of it), and a MatMul with an
odd K past one 384-row chunk and N past one panel, at T = 1 (one tile), 7 and 33
(chunks). On a host without AVX512-BF16 the widening kernel runs and the first check
alone applies with the activations unrounded; the instruction selection itself is
checked on object code by targets.sh.
usage: bf16_dot.py MOEC"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import diff_ops

# The graph input that is (or is copied into) each case's GEMM A operand.
A_INPUT = {"matmul_wbf16": "a", "expert_matmul_wbf16": "x", "gather_matmul_wide_wbf16": "x",
           "fused_up_silu_wbf16": "x", "matmul_odd_k_wbf16": "a"}


def host_bf16_dot():
    with open("/proc/cpuinfo") as f:
        flags = set(next((line for line in f if line.startswith("flags")), "").split())
    return {"avx512f", "avx512_bf16"} <= flags


def round_bf16(a):
    """f32 to the nearest bf16 (ties to even), as f32."""
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint32) << 16
    return r.view(np.float32)


def cases():
    every = diff_ops.moe_cases() + diff_ops.std_cases()
    wide = {c["name"]: c for c in diff_ops.weight_dtype_cases(every)}
    odd_k = diff_ops.case(
        "matmul_odd_k", "MatMul", [("a", "float32", ["T", 391], diff_ops.rnd()), ("w", None, None, None)],
        ["y"], "gemm", inits=[{"name": "w", "dtype": "bfloat16", "shape": [391, 70],
                               "init": {"dist": "normal", "std": 0.5, "seed": 3}}])
    wide["matmul_odd_k_wbf16"] = dict(odd_k, name="matmul_odd_k_wbf16")
    return [dict(wide[n], build_flags=[]) for n in A_INPUT]


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd[:3]), r.returncode, r.stderr.strip()))


def check(moec, cs, work, rng, dot):
    d = os.path.join(work, cs["name"])
    os.makedirs(d)
    model, exe = os.path.join(d, "model.json"), os.path.join(d, "model")
    with open(model, "w") as f:
        json.dump(diff_ops.model_of(cs), f)
    run([moec, "build", model, "-o", exe])
    problems = []
    for T in diff_ops.T_VALUES:
        feeds = diff_ops.feeds_of(cs, T, rng)
        rounded = dict(feeds, **{A_INPUT[cs["name"]]: round_bf16(feeds[A_INPUT[cs["name"]]])})
        ys = {}
        for tag, exe_args, arrays in (("native", [exe], feeds), ("interp", [moec, "run", model, "--interp"], feeds),
                                      ("interp_rounded", [moec, "run", model, "--interp"], rounded)):
            args = []
            for name, arr in arrays.items():
                p = os.path.join(d, "%s_%s_T%d.npy" % (tag, name, T))
                np.save(p, arr)
                args += ["--input", "%s=%s" % (name, p)]
            out = os.path.join(d, "%s_T%d.npy" % (tag, T))
            run(exe_args + args + ["--output", "%s=%s" % (cs["outputs"][0], out)])
            ys[tag] = np.load(out)
        want = ys["interp_rounded"] if dot else ys["interp"]
        msg = diff_ops.compare(cs, ys["native"], want)
        if msg:
            problems.append("T=%d: against the interpreter on %s activations: %s"
                            % (T, "rounded" if dot else "unrounded", msg))
        if dot and diff_ops.compare(cs, ys["native"], ys["interp"]) is None:
            problems.append("T=%d: equals the interpreter on unrounded activations: "
                            "the dot-product kernel did not run" % T)
    return problems


def main():
    moec = os.path.abspath(sys.argv[1])
    dot = host_bf16_dot()
    print("host %s AVX512-BF16" % ("has" if dot else "lacks"))
    rng = np.random.default_rng(20261208)
    failed = 0
    with tempfile.TemporaryDirectory() as work:
        for cs in cases():
            try:
                problems = check(moec, cs, work, rng, dot)
            except RuntimeError as e:
                problems = [str(e)]
            for p in problems:
                print("FAIL %s: %s" % (cs["name"], p))
            failed += bool(problems)
    print("%d cases, %d failed" % (len(A_INPUT), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
