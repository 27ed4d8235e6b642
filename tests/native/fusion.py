#!/usr/bin/python3
"""Fused against unfused pipelines (docs/fusion.md). For every example, and for
pattern models of each shape fuse-expert-ffn rewrites (gated or not, every activation,
rows or x read through row_token, a dense shared expert, an intermediate that something
else also reads, which must stay unfused):
  - the fused dump has the fused ops and none of the ops they replace (or, for the
    negative pattern, keeps them); an elementwise chain becomes moe.FusedElementwise, a
    norm and the chain after it moe.FusedNorm;
  - interpreted, fused and unfused outputs are identical (the interpreter runs a fused
    op's decomposition);
  - natively at -O0 and -O3, fused and unfused outputs are identical, bit for bit: the
    fused kernels run the same tiles in the same summation order;
  - the fused -O3 executable gives the same bits at 1, 2 and 3 threads;
  - native against the interpreter: within examples.sh's tolerance (1e-4, 1e-5).
Pattern models that fuse must lose every Dispatch, route, Combine and elementwise op of
the FFN; so must mixtral_block.
usage: fusion.py MOEC EXAMPLES_DIR [--quick]
--quick (the sanitizer build, where moec runs instrumented): -O0 only (the same lowering
as -O3, without LLVM's uninstrumented optimizer, whose code the release run checks), the
pattern models and mixtral_block."""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

UNFUSED = ("infer-shapes,verify,expand-moe,gw-specialize,{canonicalize,fold-constants},"
           "autodiff,optimizer,dce,plan-memory")
E, D, F = 4, 12, 20


def run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (cmd[0], r.returncode, (r.stderr or r.stdout).strip()))
    return r.stdout


def w(name, *shape, seed):
    return {"name": name, "dtype": "float32", "shape": list(shape),
            "init": {"dist": "normal", "std": 0.3, "seed": seed}}


def node(name, op, ins, outs, **attrs):
    return {"name": name, "op": op, "inputs": ins, "outputs": outs, "attrs": attrs}


def moe_model(name, ffn, inits, gather=False, extra_out=()):
    """Router, Dispatch, then `ffn` nodes reading rows (or x) that end in h; down and Combine."""
    disp = node("disp", "moe.Dispatch", ["x", "e", "w"], ["rows", "off", "rtok", "rw"],
                num_experts=E, materialize=0 if gather else 1)
    nodes = [node("router", "MatMul", ["x", "wr"], ["z"]), node("route", "moe.TopKRoute", ["z"], ["e", "w"], k=2),
             disp] + ffn + [node("down", "moe.ExpertMatMul", ["h", "off", "wd"], ["o"]),
                            node("comb", "moe.Combine", ["o", "rtok", "rw", "off", "x"], ["y"])]
    return {"moec": 1, "name": name, "symbols": {"T": {"max": 40}},
            "inputs": [{"name": "x", "dtype": "float32", "shape": ["T", D]}],
            "outputs": ["y"] + list(extra_out),
            "initializers": [w("wr", D, E, seed=1), w("wd", E, F, D, seed=2)] + inits, "nodes": nodes}


def product(name, w_name, out, gather):
    if gather:
        return node(name, "moe.GatherMatMul", ["x", "rtok", "off", w_name], [out])
    return node(name, "moe.ExpertMatMul", ["rows", "off", w_name], [out])


def glu(act, gather=False, **act_attrs):
    return [product("gate", "wg", "g", gather), product("up", "wu", "u", gather),
            node("act", act, ["g"], ["a"], **act_attrs), node("glu", "Mul", ["a", "u"], ["h"])]


def patterns():
    wu, wg = w("wu", E, D, F, seed=3), w("wg", E, D, F, seed=4)
    dense = {"moec": 1, "name": "dense_ffn", "symbols": {"T": {"max": 40}},
             "inputs": [{"name": "x", "dtype": "float32", "shape": ["T", D]}], "outputs": ["y"],
             "initializers": [w("su", D, F, seed=5), w("sg", D, F, seed=6), w("sd", F, D, seed=7)],
             "nodes": [node("gate", "MatMul", ["x", "sg"], ["g"]), node("up", "MatMul", ["x", "su"], ["u"]),
                       node("act", "moe.Silu", ["g"], ["a"]), node("glu", "Mul", ["u", "a"], ["h"]),
                       node("down", "MatMul", ["h", "sd"], ["y"])]}
    yield moe_model("glu_silu", glu("moe.Silu"), [wu, wg]), True
    yield moe_model("glu_gelu_tanh", glu("Gelu", approximate="tanh"), [wu, wg]), True
    yield moe_model("glu_gather", glu("Gelu", gather=True), [wu, wg], gather=True), True
    yield moe_model("relu_ffn", [product("up", "wu", "u", False), node("act", "Relu", ["u"], ["h"])], [wu]), True
    yield dense, True
    # g is also a graph output: nothing of the up half may fuse.
    yield moe_model("glu_shared_g", glu("moe.Silu"), [wu, wg], extra_out=["g"]), False
    chain = {"moec": 1, "name": "elementwise_chain", "symbols": {"T": {"max": 40}},
             "inputs": [{"name": "x", "dtype": "float32", "shape": ["T", D]}], "outputs": ["y"],
             "initializers": [w("s", D, seed=8), w("b", D, seed=9)],
             "nodes": [node("scale", "Mul", ["x", "s"], ["xs"]), node("shift", "Add", ["xs", "b"], ["xb"]),
                       node("act", "Tanh", ["xb"], ["t"]), node("res", "Add", ["t", "x"], ["y"])]}
    yield chain, "moe.FusedElementwise"
    # A norm and the chain after it: one moe.FusedNorm, whose program also reads x.
    ln = {"moec": 1, "name": "layernorm_chain", "symbols": {"T": {"max": 40}},
          "inputs": [{"name": "x", "dtype": "float32", "shape": ["T", D]}], "outputs": ["y"],
          "initializers": [w("g", D, seed=8), w("b", D, seed=9), w("s", D, seed=10)],
          "nodes": [node("ln", "LayerNormalization", ["x", "g", "b"], ["n"]),
                    node("act", "Gelu", ["n"], ["a"]), node("scale", "Mul", ["a", "s"], ["m"]),
                    node("res", "Add", ["m", "x"], ["y"])]}
    yield ln, "moe.FusedNorm"
    rms = {"moec": 1, "name": "rmsnorm_chain", "symbols": {"T": {"max": 40}},
           "inputs": [{"name": "x", "dtype": "float32", "shape": ["T", D]}], "outputs": ["y"],
           "initializers": [w("g", D, seed=11)],
           "nodes": [node("rms", "RMSNormalization", ["x", "g"], ["n"], epsilon=1e-6),
                     node("act", "moe.Silu", ["n"], ["y"])]}
    yield rms, "moe.FusedNorm"
    topp = moe_model("topp_relu", [product("up", "wu", "u", False), node("act", "Relu", ["u"], ["h"])], [wu])
    topp["nodes"][1] = node("route", "moe.TopPRoute", ["z"], ["e", "w"], p=0.7, max_k=3)
    yield topp, True


def dump_ops(moec, model):
    out = run([moec, "dump", model, "--after=plan-memory"])
    return [l.split(" = ", 1)[1].split("(", 1)[0] for l in out.splitlines() if " = " in l]


def outputs(model):
    return json.load(open(model))["outputs"]


def interp(moec, model, x, passes, work, tag):
    files = {o: os.path.join(work, "%s_%s.npy" % (tag, o)) for o in outputs(model)}
    args = sum([["--output", "%s=%s" % kv] for kv in files.items()], [])
    run([moec, "run", model, "--interp", "--input", "x=" + x] + args + (["--passes=" + passes] if passes else []))
    return {o: np.load(p) for o, p in files.items()}


def native(moec, model, x, passes, opt, work, tag, threads=(2,)):
    exe = os.path.join(work, tag)
    run([moec, "build", model, "-o", exe, opt] + (["--passes=" + passes] if passes else []))
    got = []
    for t in threads:
        files = {o: os.path.join(work, "%s_t%d_%s.npy" % (tag, t, o)) for o in outputs(model)}
        args = sum([["--output", "%s=%s" % kv] for kv in files.items()], [])
        run([exe, "--input", "x=" + x] + args, env=dict(os.environ, MOERT_NUM_THREADS=str(t)))
        got.append({o: np.load(p) for o, p in files.items()})
    return got


def same(a, b):
    return all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and
               a[k].tobytes() == b[k].tobytes() for k in a)


def close(a, b):
    return all(np.allclose(a[k], b[k], rtol=1e-4, atol=1e-5, equal_nan=True) for k in a)


OPT_LEVELS = ("-O0", "-O3")


def check(moec, model, x, work, expect_fused):
    problems = []
    ops = dump_ops(moec, model)
    marker = expect_fused if isinstance(expect_fused, str) else "moe.FusedUp"
    fused = marker in ops
    gone = {"moe.Silu", "Relu", "Gelu", "Tanh", "Mul", "Add", "moe.Combine", "moe.Dispatch",
            "moe.TopKRoute", "moe.TopPRoute"} & set(ops)
    if marker == "moe.FusedNorm":
        gone |= {"LayerNormalization", "RMSNormalization"} & set(ops)
    if expect_fused is not None and fused != bool(expect_fused):
        problems.append("fused ops %s expected, dump has %s" % ("are" if expect_fused else "are not", ops))
    if expect_fused and gone:
        problems.append("the fused dump still has %s" % sorted(gone))
    want = interp(moec, model, x, None, work, "if")
    if not same(want, interp(moec, model, x, UNFUSED, work, "iu")):
        problems.append("interpreter: fused and unfused outputs differ")
    for opt in OPT_LEVELS:
        threads = (1, 2, 3) if opt == "-O3" else (2,)
        f = native(moec, model, x, None, opt, work, "nf", threads)
        u = native(moec, model, x, UNFUSED, opt, work, "nu")[0]
        if not same(f[0], u):
            problems.append("%s: native fused and unfused outputs differ" % opt)
        if not all(same(f[0], other) for other in f[1:]):
            problems.append("%s: outputs differ across 1, 2 and 3 threads" % opt)
        if not close(f[0], want):
            problems.append("%s: native differs from the interpreter" % opt)
    return problems


def main():
    global OPT_LEVELS
    moec, examples = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    quick = "--quick" in sys.argv
    if quick:
        OPT_LEVELS = ("-O0",)
    rng = np.random.default_rng(8)
    failed = total = 0
    with tempfile.TemporaryDirectory() as work:
        x = os.path.join(work, "x.npy")
        np.save(x, rng.standard_normal((37, D)).astype(np.float32))
        cases = []
        for model, fuses in patterns():
            path = os.path.join(work, model["name"] + ".json")
            json.dump(model, open(path, "w"))
            cases.append((model["name"], path, x, fuses))
        for name in sorted(os.listdir(examples)):
            path = os.path.join(examples, name, "model.json")
            if os.path.exists(path) and (not quick or name == "mixtral_block"):
                fuses = True if name == "mixtral_block" else None
                cases.append((name, path, os.path.join(examples, name, "x.npy"), fuses))
        for name, path, xin, fuses in cases:
            total += 1
            try:
                problems = check(moec, path, xin, work, fuses)
            except RuntimeError as e:
                problems = [str(e)]
            for p in problems:
                print("FAIL %s: %s" % (name, p))
            failed += bool(problems)
            if not problems:
                print("ok %s" % name)
    print("%d passed, %d failed" % (total - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
