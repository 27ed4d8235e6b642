#!/usr/bin/python3
"""ONNX Runtime's com.microsoft.MoE in moec (docs/format.md, "ONNX models"): the same
.onnx file run in onnxruntime-node (tests/ort, installed by scripts/test.sh) and in
moec, interpreted and native, with E = 4 experts, k = 2, H = 8, I = 6 over 5 tokens:
  - activation_type relu, gelu (ONNX Runtime's is the tanh form), silu and swiglu
    (swiglu_fusion=1: gate and linear rows interleaved in fc1), with and without
    normalize_routing_weights;
  - fc3 (act(x fc1^T) * (x fc3^T)), which ONNX Runtime's CPU kernel rejects: against
    NumPy's model of the documented semantics instead;
and each against NumPy's model as well. Tolerance 1e-5 relative and absolute.
usage: onnx_moe.py MOEC [--quick]   (--quick: the interpreter only)"""
import os
import sys
import tempfile

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from npy_run import run, run_model

E, K, H, I, N = 4, 2, 8, 6, 5
RNG = np.random.default_rng(20261208)
ORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ort")


def moe_model(act, normalize, fc3=False):
    f = 2 if act == "swiglu" else 1
    w = {"fc1": RNG.standard_normal((E, f * I, H)).astype(np.float32) * 0.4,
         "fc2": RNG.standard_normal((E, H, I)).astype(np.float32) * 0.4}
    names = ["x", "router", "fc1", "", "fc2"]
    if fc3:
        w["fc3"] = RNG.standard_normal((E, I, H)).astype(np.float32) * 0.4
        names += ["", "fc3"]
    attrs = dict(k=K, activation_type=act, normalize_routing_weights=normalize)
    if act == "swiglu":
        attrs["swiglu_fusion"] = 1
    node = helper.make_node("MoE", names, ["y"], domain="com.microsoft", **attrs)
    g = helper.make_graph([node], "moe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["tokens", H]),
                           helper.make_tensor_value_info("router", TensorProto.FLOAT, ["tokens", E])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["tokens", H])],
                          [numpy_helper.from_array(a, n) for n, a in w.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                helper.make_opsetid("com.microsoft", 1)])
    return model, w


def activation(act, h):
    if act == "relu":
        return np.maximum(h, 0)
    if act == "gelu":
        return 0.5 * h * (1 + np.tanh(0.7978845608028654 * (h + 0.044715 * h ** 3)))
    if act == "silu":
        return h / (1 + np.exp(-h))
    g, lin = h[..., 0::2], h[..., 1::2]  # swiglu, interleaved
    return g / (1 + np.exp(-g)) * lin


def reference(x, router, w, act, normalize):
    """ONNX Runtime's CPU MoE: softmax over all experts, top k, optional renormalizing."""
    z = router.astype(np.float64)
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    y = np.zeros((x.shape[0], H))
    for t in range(x.shape[0]):
        top = np.argsort(-p[t], kind="stable")[:K]
        weights = p[t, top] / (p[t, top].sum() if normalize else 1)
        for e, wt in zip(top, weights):
            h = x[t] @ w["fc1"][e].T.astype(np.float64)
            a = activation(act if "fc3" not in w else act, h)
            if "fc3" in w:
                a = a * (x[t] @ w["fc3"][e].T)
            y[t] += wt * (a @ w["fc2"][e].T)
    return y


def ort_output(path, feeds, d):
    args = []
    for name, a in feeds.items():
        p = os.path.join(d, name + ".bin")
        a.astype(np.float32).tofile(p)
        args.append("%s=%s:%s" % (name, p, ",".join(map(str, a.shape))))
    out = os.path.join(d, "ort_y.bin")
    dims = run(["node", os.path.join(ORT, "run_model.js"), path, out] + args).strip()
    return np.fromfile(out, np.float32).reshape([int(v) for v in dims.split(",")])


def check(moec, act, normalize, fc3, work, quick):
    tag = "%s%s%s" % (act, "_norm" if normalize else "", "_fc3" if fc3 else "")
    d = os.path.join(work, tag)
    os.makedirs(d)
    model, w = moe_model(act, normalize, fc3)
    path = os.path.join(d, tag + ".onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    feeds = {"x": RNG.standard_normal((N, H)).astype(np.float32),
             "router": RNG.standard_normal((N, E)).astype(np.float32)}
    want = reference(feeds["x"], feeds["router"], w, act, normalize)
    got = {"numpy": want}
    if not fc3:  # ONNX Runtime's CPU kernel has no fc3
        got["onnxruntime"] = ort_output(path, feeds, d)
    got["moec interp"] = run_model([moec, "run", path, "--max", "tokens=16", "--interp"], feeds, d, "i")
    if not quick:
        exe = os.path.join(d, "model")
        run([moec, "build", path, "--max", "tokens=16", "-o", exe])
        got["moec native"] = run_model([exe], feeds, d, "n")
    problems = []
    for name, y in got.items():
        for ref in ("numpy", "onnxruntime"):
            if ref in got and ref != name and not np.allclose(y, got[ref], rtol=1e-5, atol=1e-5):
                problems.append("%s: %s differs from %s by %g" % (tag, name, ref, np.abs(y - got[ref]).max()))
    return problems


def main():
    moec = os.path.abspath(sys.argv[1])
    quick = "--quick" in sys.argv
    cases = [(a, n, False) for a in ("relu", "gelu", "silu", "swiglu") for n in (0, 1)]
    cases.append(("silu", 1, True))
    failed = 0
    with tempfile.TemporaryDirectory() as work:
        for act, normalize, fc3 in cases:
            try:
                problems = check(moec, act, normalize, fc3, work, quick)
            except RuntimeError as e:
                problems = [str(e)]
            for p in problems:
                print("FAIL %s" % p)
            failed += bool(problems)
    print("%d cases, %d failed" % (len(cases), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
