#!/usr/bin/python3
"""ONNX's own node tests (Debian's libonnx-testdata: a model.onnx per test, with .pb
inputs and expected outputs) for every op moec implements: each test whose nodes are
all ops moec has, of its element types and opsets 13 to 21, runs in the interpreter, and
the first of each op also natively (without --quick: a compile each), and must match
ONNX's expected outputs (relative 1e-4, absolute 1e-5; integers and bools exactly).
Shape operands the tests feed as inputs (Reshape's shape, Slice's starts, ...) become
initializers of the test's data, since moec takes them only as constants, as exports
give them.
The tests that cannot pass are listed below with the reason (docs/format.md, "ONNX
models", repeats the list); one of them passing, or any other failing, fails this test,
so the list stays true. Prints the count run and passed per op.
--quick (the sanitizer build): the first test of each op, in the interpreter.
usage: onnx_node_tests.py MOEC [--quick] [--only NAME] [-v]"""
import collections
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import numpy_helper

DATA = "/usr/share/libonnx-testdata/data/node"
TOL = dict(rtol=1e-4, atol=1e-5)

# Tests of moec's ops that cannot pass, and why (patterns over test names). What the
# ONNX issue still has to do: optional outputs, mixed dtypes, zero-size dims.
EXPECTED_FAILURES = [
    (r"test_reduce_sum_(default_axes_keepdims|empty_axes_input_noop|negative_axes_keepdims_random)",
     "an empty axes tensor (a zero-size dim)"),
    (r"test_(reshape_allowzero_reordered|split_zero_size_splits|slice_start_out_of_bounds)$",
     "zero-size dims and empty slices"),
    (r"test_cast(like)?_FLOAT_to_BFLOAT16", "ONNX 1.12's expected bfloat16 values truncate; moec "
     "rounds to nearest even, as ONNX specifies since 1.13"),
    (r"test_castlike_BFLOAT16_to_FLOAT_expanded", "its data feeds 'like' as [1], not the declared [3, 4]"),
]


def expected_failure(name):
    return next((why for pattern, why in EXPECTED_FAILURES if re.search(pattern, name)), None)


def moec_ops(moec):
    """The standard (ONNX) ops moec has, from its own error message about one it lacks."""
    r = subprocess.run([moec, "check", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                    "diag", "cases", "90-onnx-unknown-op.onnx"),
                        "--max", "batch=4"], capture_output=True, text=True)
    return set(re.search(r"it has (.*)$", r.stderr.strip()).group(1).split(", "))


DTYPES = {1, 10, 16, 6, 7, 9}  # float, float16, bfloat16, int32, int64, bool: moec's


# Operands moec takes only as constants (docs/format.md): (op, input index).
CONSTANT_OPERANDS = {("Reshape", 1), ("Split", 1), ("ReduceSum", 1), ("ReduceMean", 1),
                     ("ReduceMax", 1), ("TopK", 1)} | {("Slice", k) for k in range(1, 5)}


def with_constant_operands(model, d):
    """The model with each graph input that feeds a shape operand moec takes only as a
    constant (Reshape's shape, Slice's starts...) turned into an initializer holding the
    test's data for it: the node tests feed them as inputs, exports as constants."""
    feeds = {n.input[k] for n in model.graph.node for k in range(len(n.input))
             if (n.op_type, k) in CONSTANT_OPERANDS}
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    for k, i in enumerate(inputs):
        if i.name in feeds:
            t = onnx.load_tensor(os.path.join(d, "input_%d.pb" % k))
            t.name = i.name
            model.graph.initializer.append(t)
    return model


def out_of_scope(model, ops):
    """Why a test cannot run in moec (an op, element type or opset it lacks), or None."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if not 13 <= opset <= 21:
        return "opset"
    for n in model.graph.node:
        if (n.domain and n.domain != "ai.onnx") or n.op_type not in ops:
            return "op"
        for a in n.attribute:
            if a.name == "to" and a.i not in DTYPES:
                return "dtype"
    values = list(model.graph.input) + list(model.graph.output)
    if any(v.type.tensor_type.elem_type not in DTYPES for v in values):
        return "dtype"
    return None


def as_moec_array(a, value):
    """A test's array for graph value `value` as moec's .npy files hold it: float16 and
    bfloat16 as float32 (ONNX 1.12's data stores bfloat16 as uint16 bits)."""
    if value.type.tensor_type.elem_type == onnx.TensorProto.BFLOAT16:
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32) if a.dtype == np.float16 else a


def run_test(moec, name, model, work, native):
    """None when the outputs match, else why not."""
    d = os.path.join(DATA, name, "test_data_set_0")
    inits = {i.name for i in model.graph.initializer}
    declared = {v.name: v for v in list(model.graph.input) + list(model.graph.output)}
    all_inputs = [i.name for i in model.graph.input if i.name not in inits]
    model = with_constant_operands(model, d)
    path = os.path.join(work, "model.onnx")
    onnx.save(model, path)
    inits = {i.name for i in model.graph.initializer}
    inputs = [(k, n) for k, n in enumerate(all_inputs) if n not in inits]
    outputs = [o.name for o in model.graph.output]
    args = []
    for k, n in inputs:
        p = os.path.join(work, "in%d.npy" % k)
        a = numpy_helper.to_array(onnx.load_tensor(os.path.join(d, "input_%d.pb" % k)))
        np.save(p, as_moec_array(a, declared[n]))
        args += ["--input", "%s=%s" % (n, p)]
    outs = {n: os.path.join(work, "out%d.npy" % k) for k, n in enumerate(outputs)}
    for n, p in outs.items():
        args += ["--output", "%s=%s" % (n, p)]
    engines = [("interp", ["--interp"])] + ([("native", [])] if native else [])
    for engine, flag in engines:
        r = subprocess.run([moec, "run", path] + flag + args,
                           capture_output=True, text=True)
        if r.returncode != 0:
            return "%s: %s" % (engine, (r.stderr.strip().splitlines() or ["exit %d" % r.returncode])[0])
        for k, n in enumerate(outputs):
            want = numpy_helper.to_array(onnx.load_tensor(os.path.join(d, "output_%d.pb" % k)))
            want = as_moec_array(want, declared[n])
            got = np.load(outs[n])
            if got.shape != want.shape:
                return "%s: output %s has shape %s, expected %s" % (engine, n, got.shape, want.shape)
            same = (np.allclose(got, want, equal_nan=True, **TOL) if want.dtype.kind == "f"
                    else np.array_equal(got, want))
            if not same:
                return "%s: output %s differs" % (engine, n)
    return None


def main():
    moec = os.path.abspath(sys.argv[1])
    quick, verbose = "--quick" in sys.argv, "-v" in sys.argv
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    ops = moec_ops(moec)
    ran, passed, skipped = collections.Counter(), collections.Counter(), collections.Counter()
    problems = []
    with tempfile.TemporaryDirectory() as work:
        for name in sorted(os.listdir(DATA)):
            if only and name != only:
                continue
            model = onnx.load(os.path.join(DATA, name, "model.onnx"))
            reason = out_of_scope(model, ops)
            if reason:
                skipped[reason] += 1
                continue
            if quick and model.graph.node[0].op_type in ran:
                continue  # the sanitizer run: the first test of each op
            op = model.graph.node[0].op_type
            why = run_test(moec, name, model, work, not quick and op not in ran)
            ran[op] += 1
            passed[op] += why is None
            if verbose and why:
                print("  %s: %s" % (name, why))
            known = expected_failure(name)
            if why and not known:
                problems.append("FAIL %s: %s" % (name, why))
            elif not why and known:
                problems.append("FAIL %s passes now: take it off the list (%s)" % (name, known))
    for op in sorted(ran):
        print("  %-26s %3d run, %3d passed" % (op, ran[op], passed[op]))
    for p in problems:
        print(p)
    print("%d node tests of %d ops, %d passed, %d problems; not run: %d with an op moec lacks, "
          "%d with an element type it lacks, %d of an opset outside 13 to 21"
          % (sum(ran.values()), len(ran), sum(passed.values()), len(problems), skipped["op"],
             skipped["dtype"], skipped["opset"]))
    return 1 if problems or not ran else 0


if __name__ == "__main__":
    sys.exit(main())
