#!/usr/bin/python3
"""ONNX models in (docs/format.md, "ONNX models"): .onnx files written with Debian's
python3-onnx are read by every command, recognized by content (a copy named .json is
read as ONNX too), and their outputs match NumPy's in the interpreter and natively:
  - MatMul, Relu, Add with a dynamic batch ("batch", given with --max), the weight as
    raw bytes and the bias as float_data;
  - Gemm (transB, alpha, beta, a bias), Softmax, Reshape to an int64 shape initializer
    (int64_data), Cast of a float16 initializer (its bits in int32_data), a nameless
    node, at opset 17 and 21;
  - RMSNorm as exports write it, with ReduceMean and ReduceMax taking their axes as an
    attribute (opset 13) and as an input (opset 18);
  - Constant nodes (a tensor, value_float, value_ints) read as initializers;
  - `moec import` writes the JSON and a safetensors file that give the same bits in the
    interpreter as the .onnx file itself;
  - the dense model saved with its initializers in an external data file (as models
    over 2 GiB must be) gives the same bits as with them inside.
Errors (an op, domain, opset, dtype or dim moec cannot read, a truncated file) are in
the bad-input corpus (tests/diag, cases 90-99).
usage: onnx_import.py MOEC [--quick]   (--quick: the interpreter only)"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from npy_run import run, run_model

RNG = np.random.default_rng(20261208)


def dense_model(opset):
    """y = Relu(x @ W) + b over x [batch, 6]."""
    w = RNG.standard_normal((6, 5)).astype(np.float32)
    b = RNG.standard_normal(5).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"], name="proj"),
         helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Add", ["r", "b"], ["y"], name="bias")],
        "torch_jit", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 5])],
        [numpy_helper.from_array(w, "W"), helper.make_tensor("b", TensorProto.FLOAT, [5], b.tolist())])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return model, lambda x: np.maximum(x @ w, 0) + b


def gemm_model(opset):
    """Gemm(x, Wt^T) * 0.5 + 2 c, Softmax, Reshape to [batch, 2, 2], + Cast(f16 bias)."""
    wt = RNG.standard_normal((4, 6)).astype(np.float32)
    c = RNG.standard_normal(4).astype(np.float32)
    half = RNG.standard_normal(4).astype(np.float16)
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "Wt", "c"], ["g"], transB=1, alpha=0.5, beta=2.0),
         helper.make_node("Softmax", ["g"], ["s"], axis=-1),
         helper.make_node("Cast", ["h16"], ["h32"], to=TensorProto.FLOAT),
         helper.make_node("Add", ["s", "h32"], ["a"]),
         helper.make_node("Reshape", ["a", "shape"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(wt, "Wt"), numpy_helper.from_array(c, "c"),
         helper.make_tensor("h16", TensorProto.FLOAT16, [4], half.astype(np.float32).tolist()),
         helper.make_tensor("shape", TensorProto.INT64, [3], [-1, 2, 2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])

    def want(x):
        z = 0.5 * (x @ wt.T) + 2 * c
        e = np.exp(z - z.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True) + half.astype(np.float32)).reshape(-1, 2, 2)
    return model, want


def rmsnorm_model(opset):
    """RMSNorm as exports write it: x / Sqrt(ReduceMean(x * x) + eps) * w, plus the row's
    ReduceMax. Before opset 18 both Reduce ops take axes as an attribute, from 18 on as
    an input."""
    w = RNG.standard_normal(6).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1e-5], np.float32), "eps")]
    if opset < 18:
        mean = helper.make_node("ReduceMean", ["sq"], ["ms"], axes=[-1], keepdims=1)
        most = helper.make_node("ReduceMax", ["x"], ["mx"], axes=[1], keepdims=1)
    else:
        inits.append(numpy_helper.from_array(np.array([-1], np.int64), "last"))
        mean = helper.make_node("ReduceMean", ["sq", "last"], ["ms"], keepdims=1)
        most = helper.make_node("ReduceMax", ["x", "last"], ["mx"], keepdims=1)
    g = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["sq"]), mean,
         helper.make_node("Add", ["ms", "eps"], ["var"]), helper.make_node("Sqrt", ["var"], ["rms"]),
         helper.make_node("Div", ["x", "rms"], ["n"]), helper.make_node("Mul", ["n", "w"], ["nw"]), most,
         helper.make_node("Add", ["nw", "mx"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 6])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])

    def want(x):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + np.float32(1e-5)) * w + x.max(-1, keepdims=True)
    return model, want


def constant_model(opset):
    """Constant nodes in each form moec reads (a tensor, value_float, value_ints) feeding
    Mul, Add and Reshape, as exports write them."""
    shift = RNG.standard_normal(6).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Constant", [], ["two"], value_float=2.0),
         helper.make_node("Constant", [], ["shift"], value=numpy_helper.from_array(shift)),
         helper.make_node("Constant", [], ["shape"], value_ints=[-1, 3, 2]),
         helper.make_node("Mul", ["x", "two"], ["a"]),
         helper.make_node("Add", ["a", "shift"], ["b"]),
         helper.make_node("Reshape", ["b", "shape"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    return model, lambda x: (2 * x + shift).reshape(-1, 3, 2)


def check_model(moec, name, model, want, work, quick):
    d = os.path.join(work, name)
    os.makedirs(d)
    path = os.path.join(d, name + ".onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    problems = []
    summary = run([moec, "check", path, "--max", "batch=8"])
    if "symbols batch<=8" not in summary:
        problems.append("check: %s" % summary.strip())
    misnamed = os.path.join(d, name + "_onnx.json")  # recognized by content, not by name
    shutil.copy(path, misnamed)
    engines = [("interp", [moec, "run", path, "--max", "batch=8", "--interp"]),
               ("interp, named .json", [moec, "run", misnamed, "--max", "batch=8", "--interp"])]
    if not quick:
        exe = os.path.join(d, name)
        run([moec, "build", path, "--max", "batch=8", "-o", exe])
        engines.append(("native", [exe]))
    for batch in (1, 5):
        x = RNG.standard_normal((batch, 6)).astype(np.float32)
        for tag, cmd in engines:
            got = run_model(cmd, {"x": x}, d, "%s%d" % (tag.split(",")[0], batch))
            if got.shape != want(x).shape or not np.allclose(got, want(x), rtol=1e-5, atol=1e-5):
                problems.append("%s, batch %d: differs from NumPy by %g" % (
                    tag, batch, np.abs(got - want(x)).max() if got.shape == want(x).shape else np.inf))
    problems += check_import(moec, path, d)
    return problems


def check_import(moec, path, d):
    """moec import's JSON and safetensors give the .onnx file's bits in the interpreter."""
    out = os.path.join(d, "imported.json")
    run([moec, "import", path, "--max", "batch=8", "-o", out])
    doc = json.load(open(out))
    problems = []
    if doc.get("weights") != "imported.safetensors" or not os.path.exists(os.path.join(d, "imported.safetensors")):
        problems.append("import: the JSON does not name its weights file beside it")
    x = RNG.standard_normal((3, 6)).astype(np.float32)
    a = run_model([moec, "run", path, "--max", "batch=8", "--interp"], {"x": x}, d, "onnx")
    b = run_model([moec, "run", out, "--interp"], {"x": x}, d, "json")
    if a.tobytes() != b.tobytes():
        problems.append("import: the JSON's outputs differ from the .onnx file's")
    return problems


def check_external(moec, work):
    """The dense model with its tensors in one external file."""
    import onnx
    model, want = dense_model(17)
    d = os.path.join(work, "external")
    os.makedirs(d)
    inside, outside = os.path.join(d, "inside.onnx"), os.path.join(d, "outside.onnx")
    onnx.save_model(model, inside)
    onnx.save_model(model, outside, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="outside.bin", size_threshold=0)
    problems = []
    stored = {t.name: t for t in onnx.load(outside, load_external_data=False).graph.initializer}
    if stored["W"].data_location != onnx.TensorProto.EXTERNAL:  # b, as float_data, stays in
        problems.append("the external-data model still holds W")
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    ys = [run_model([moec, "run", p, "--max", "batch=8", "--interp"], {"x": x}, d, tag)
          for tag, p in (("in", inside), ("out", outside))]
    if ys[0].tobytes() != ys[1].tobytes() or not np.allclose(ys[1], want(x), rtol=1e-5, atol=1e-5):
        problems.append("external data: outputs differ from the model with its tensors inside")
    return problems


def main():
    moec = os.path.abspath(sys.argv[1])
    quick = "--quick" in sys.argv
    cases = [("dense13", *dense_model(13)), ("gemm17", *gemm_model(17)), ("gemm21", *gemm_model(21)),
             ("rmsnorm13", *rmsnorm_model(13)), ("rmsnorm18", *rmsnorm_model(18)),
             ("constants", *constant_model(19))]
    failed = 0
    with tempfile.TemporaryDirectory() as work:
        checks = [(name, lambda m=model, w=want, n=name: check_model(moec, n, m, w, work, quick))
                  for name, model, want in cases]
        checks.append(("external data", lambda: check_external(moec, work)))
        for name, check in checks:
            try:
                problems = check()
            except RuntimeError as e:
                problems = [str(e)]
            for p in problems:
                print("FAIL %s: %s" % (name, p))
            failed += bool(problems)
    print("%d checks, %d failed" % (len(checks), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
