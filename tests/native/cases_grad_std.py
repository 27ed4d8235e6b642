"""Differential cases (tests/native/diff_ops.py) for the gradients of standard ops: every
op at -O0 and -O3 against the interpreter, on the kernels' fast and general paths
(contiguous and strided rows, column sums, f16/bf16 through Casts, ties)."""

import numpy as np


def node(name, op, inputs, outputs, attrs=None):
    n = {"name": name, "op": op, "inputs": inputs, "outputs": outputs}
    if attrs:
        n["attrs"] = attrs
    return n


def cast(name, src, dst, code):
    return node(name, "Cast", [src], [dst], {"to": code})


def unary_cases(d):
    ops = [("Relu", d.rnd()), ("Gelu", d.rnd(2)), ("GeluTanh", d.rnd(2)), ("Sigmoid", d.rnd(2)),
           ("Tanh", d.rnd()), ("Silu", d.rnd(2)), ("Exp", d.rnd()), ("Log", d.pos()), ("Sqrt", d.pos())]
    return [d.case("unary_grad_" + op.lower(), "moe.UnaryGrad",
                   [("gy", "float32", ["T", 5, 3], d.rnd()), ("x", "float32", ["T", 5, 3], gen)], ["gx"],
                   "exact" if op == "Relu" else "transc", {"op": op})
            for op, gen in ops]


def sum_broadcast_cases(d):
    g3 = ("g", "float32", ["T", 4, 6], d.rnd())
    return [
        d.case("sum_to_bias", "moe.SumTo", [("g", "float32", ["T", 6], d.rnd()), ("like", "float32", [6], d.rnd())],
               ["y"], "arith"),
        d.case("sum_to_middle", "moe.SumTo", [g3, ("like", "float32", ["T", 1, 6], d.rnd())], ["y"], "arith"),
        d.case("sum_to_rows", "moe.SumTo", [g3, ("like", "float32", [4, 1], d.rnd())], ["y"], "arith"),
        d.case("sum_to_same", "moe.SumTo", [g3, ("like", "float32", ["T", 4, 6], d.rnd())], ["y"], "arith"),
        d.case("broadcast_to", "moe.BroadcastTo", [("g", "float32", [4, 1], d.rnd()), ("like", "float32",
                                                                                     ["T", 4, 6], d.rnd())],
               ["y"], "exact"),
        d.case("broadcast_to_axes", "moe.BroadcastTo", [("g", "float32", ["T", 6], d.rnd()),
                                                        ("like", "int64", ["T", 4, 6], d.ints(0, 3))],
               ["y"], "exact", {"axes": [-2]}),
    ]


def softmax_cases(d):
    out = []
    for name, op, log, tol, attrs in (("softmax_grad", "Softmax", 0, "arith", {}),
                                      ("softmax_grad_axis1", "Softmax", 0, "arith", {"axis": 1}),
                                      ("log_softmax_grad", "LogSoftmax", 1, "transc", {}),
                                      ("log_softmax_grad_axis1", "LogSoftmax", 1, "transc", {"axis": 1})):
        c = d.case(name, "moe.SoftmaxGrad", [("x", "float32", ["T", 5, 7], d.rnd(3)),
                                             ("gy", "float32", ["T", 5, 7], d.rnd())], ["gx"], tol,
                   dict(attrs, log=log), extra_nodes=[node("fwd", op, ["x"], ["y"], attrs or None)])
        c["op_inputs"] = ["gy", "y"]
        out.append(c)
    return out


def norm_cases(d):
    x2 = [("gy", "float32", ["T", 24], d.rnd()), ("x", "float32", ["T", 24], d.rnd(2))]
    s = ("s", "float32", [24], d.rnd())
    x3 = [("gy", "float32", ["T", 4, 6], d.rnd()), ("x", "float32", ["T", 4, 6], d.rnd(2)),
          ("s", "float32", [4, 6], d.rnd())]
    c = [d.case("layer_norm_grad", "moe.LayerNormGrad", x2 + [s, ("b", "float32", [24], d.rnd())],
                ["gx", "gs", "gb"], "arith"),
         d.case("layer_norm_grad_nobias_axis1", "moe.LayerNormGrad", x3, ["gx", "gs"], "arith",
                {"axis": 1, "epsilon": 1e-3}),
         d.case("rms_norm_grad", "moe.RMSNormGrad", x2 + [s], ["gx", "gs"], "arith"),
         d.case("rms_norm_grad_axis1", "moe.RMSNormGrad", x3, ["gx", "gs"], "arith", {"axis": -2})]
    # bf16 (the kernels' any-dtype paths), back to f32 for the .npy outputs
    nodes = [cast("c0", "gy", "gyh", 16), cast("c1", "x", "xh", 16), cast("c2", "s", "sh", 16),
             cast("c3", "b", "bh", 16),
             node("n", "moe.LayerNormGrad", ["gyh", "xh", "sh", "bh"], ["gxh", "gsh", "gbh"]),
             cast("c4", "gxh", "gx", 1), cast("c5", "gsh", "gs", 1), cast("c6", "gbh", "gb", 1)]
    c.append(d.case("layer_norm_grad_bf16", None, x2 + [s, ("b", "float32", [24], d.rnd())],
                    ["gx", "gs", "gb"], "arith", extra_nodes=nodes))
    return c


def gather_slice_cases(d):
    c = [d.case("gather_grad", "moe.GatherGrad", [("gy", "float32", ["T", 2, 4], d.rnd()),
                                                  ("x", "float32", [11, 4], d.rnd()),
                                                  ("i", "int64", ["T", 2], d.ints(-11, 11))], ["gd"], "arith"),
         d.case("gather_grad_axis1", "moe.GatherGrad", [("gy", "float32", [3, "T", 2], d.rnd()),
                                                        ("x", "float32", [3, 5, 2], d.rnd()),
                                                        ("i", "int32", ["T"], d.ints(0, 5, np.int32))],
                ["gd"], "arith", {"axis": 1})]
    nodes = [cast("c0", "gy", "gyh", 10), cast("c1", "x", "xh", 10),
             node("g", "moe.GatherGrad", ["gyh", "xh", "i"], ["gdh"])]
    h = d.case("gather_grad_f16", "Cast", [("gy", "float32", ["T", 2, 4], d.rnd()), ("x", "float32", [11, 4], d.rnd()),
                                           ("i", "int64", ["T", 2], d.ints(0, 3))], ["gd"], "arith", {"to": 1},
               extra_nodes=nodes)
    h["op_inputs"] = ["gdh"]
    c.append(h)
    c += [d.case("slice_grad", "moe.SliceGrad", [("gy", "float32", ["T", 3], d.rnd()),
                                                 ("x", "float32", ["T", 10], d.rnd())], ["gd"], "exact",
                 inits=[d.const("st", "int64", [1], [1]), d.const("en", "int64", [1], [9]),
                        d.const("ax", "int64", [1], [1]), d.const("sp", "int64", [1], [3])]),
          d.case("slice_grad_negative_steps", "moe.SliceGrad", [("gy", "float32", ["T", 2, 3], d.rnd()),
                                                                ("x", "float32", ["T", 4, 6], d.rnd())],
                 ["gd"], "exact",
                 inits=[d.const("st", "int64", [2], [5, 1]), d.const("en", "int64", [2], [-7, 4]),
                        d.const("ax", "int64", [2], [2, 1]), d.const("sp", "int64", [2], [-2, 2])])]
    return c


def topk_reduce_cases(d):
    ties = lambda r, s: r.integers(0, 3, s).astype(np.float32)  # noqa: E731
    return [
        d.case("topk_grad", "moe.TopKGrad", [("gv", "float32", ["T", 4], d.rnd()), ("x", "float32", ["T", 9], d.rnd())],
               ["gx"], "exact", inits=[d.const("k", "int64", [1], [4])]),
        d.case("topk_grad_ties_axis1", "moe.TopKGrad", [("gv", "float32", ["T", 3, 2], d.rnd()),
                                                        ("x", "float32", ["T", 9, 2], ties)],
               ["gx"], "exact", {"axis": 1, "largest": 0}, inits=[d.const("k", "int64", [1], [3])]),
        d.case("reduce_max_grad", "moe.ReduceMaxGrad", [("gy", "float32", ["T", 4, 1], d.rnd()),
                                                        ("x", "float32", ["T", 4, 6], d.rnd())],
               ["gx"], "arith", inits=[d.const("axes", "int64", [1], [2])]),
        d.case("reduce_max_grad_ties", "moe.ReduceMaxGrad", [("gy", "float32", [4], d.rnd()),
                                                             ("x", "float32", ["T", 4, 6], ties)],
               ["gx"], "arith", {"keepdims": 0}, inits=[d.const("axes", "int64", [2], [0, 2])]),
    ]


def cases():
    import diff_ops as d  # lazily: diff_ops imports this module
    return (unary_cases(d) + sum_broadcast_cases(d) + softmax_cases(d) + norm_cases(d) + gather_slice_cases(d) +
            topk_reduce_cases(d))
