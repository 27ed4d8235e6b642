#!/usr/bin/python3
"""Differential test of the native backend: every op of ir/ops.def (moe.MoE through the
examples, since the backend sees it expanded) in a one-node model on random shapes,
compiled at -O0 and -O3 and run for several values of the symbol T (1, odd, max), against
the reference interpreter (`moec run --interp`).

Tolerances, per op family (relative, absolute), stated here once:
  exact   data movement, comparisons, casts, TopK, routing, dispatch: bit for bit
  arith   + - * / neg relu, normalisations, reductions: (1e-5, 1e-6)
  transc  exp log pow sqrt tanh sigmoid gelu silu softmax: (2e-5, 1e-6)
  gemm    MatMul Gemm ExpertMatMul (FMA, K up to ~100): (1e-5, 1e-5)
Routing ops are fed exact inputs here, so their decisions must match exactly.

usage: diff_ops.py MOEC [--only NAME] [--keep DIR] [--quick]
--quick (the sanitizer build, where moec itself runs instrumented and slowly): the first
case of each op, -O0 only, T = 1 and max. The compiled kernels are not instrumented
(they are bitcode built into moec), and neither is LLVM, so what the sanitizers watch
here is moec's path for each op (the same lowering at any level: -O0 skips only LLVM's
optimizer, which was most of the time) and the runtime; an op's other cases vary the
kernel's attributes, and -O3 its optimized code, which the release run checks."""
import json
import os
import platform
import re
import subprocess
import sys
import tempfile

import numpy as np

import cases_grad_loss
import cases_grad_moe
import cases_grad_std

TOL = {"exact": (0, 0), "arith": (1e-5, 1e-6), "transc": (2e-5, 1e-6), "gemm": (1e-5, 1e-5)}
TMAX = 33
T_VALUES = (1, 7, TMAX)
OPT_LEVELS = ("-O0", "-O3")


def f32(*shape):
    return {"dtype": "float32", "shape": list(shape)}


def case(name, op, inputs, outputs, tol, attrs=None, inits=(), extra_nodes=(), mode="infer"):
    """inputs: [(name, dtype, shape, generator)] graph inputs, dtype None for an
    initializer's slot; inits: initializer dicts; extra_nodes: nodes before the op."""
    return dict(name=name, op=op, inputs=inputs, outputs=outputs, tol=tol, attrs=attrs or {},
                inits=list(inits), extra_nodes=list(extra_nodes), mode=mode)


def rnd(scale=1.0):
    return lambda rng, shape: (rng.standard_normal(shape) * scale).astype(np.float32)


def pos():
    return lambda rng, shape: (rng.random(shape) + 0.5).astype(np.float32)


def ints(lo, hi, dt=np.int64):
    return lambda rng, shape: rng.integers(lo, hi, size=shape).astype(dt)


def bools():
    return lambda rng, shape: rng.random(shape) < 0.5


def const(name, dtype, shape, data):
    return {"name": name, "dtype": dtype, "shape": list(shape), "data": list(data)}


def unary(name, op, tol, gen=rnd(), attrs=None):
    return case(name, op, [("x", "float32", ["T", 5, 3], gen)], ["y"], tol, attrs)


def binary(name, op, tol, bshape=("T", 1, 6), gen_b=rnd()):
    return case(name, op, [("a", "float32", ["T", 4, 6], rnd()), ("b", "float32", list(bshape), gen_b)],
                ["y"], tol)


def std_cases():
    c = [binary("add_bcast", "Add", "arith"), binary("add_same", "Add", "arith", ("T", 4, 6)),
         binary("sub_row", "Sub", "arith", (6,)), binary("mul_scalar", "Mul", "arith", (1,)),
         binary("div", "Div", "arith", ("T", 4, 1), pos()), binary("pow", "Pow", "transc", (6,), pos()),
         case("pow_int_exponent", "Pow", [("a", "float32", ["T", 4], pos()), ("b", "int32", [4], ints(-2, 4, np.int32))],
              ["y"], "transc"),
         case("pow_int_base", "Pow", [("a", "int64", ["T", 4], ints(-5, 6)), ("b", "float32", [4], ints(0, 3, np.float32))],
              ["y"], "exact")]
    c[5]["inputs"][0] = ("a", "float32", ["T", 4, 6], pos())
    c += [unary("neg", "Neg", "exact"), unary("sqrt", "Sqrt", "transc", pos()),
          unary("exp", "Exp", "transc"), unary("log", "Log", "transc", pos()),
          unary("relu", "Relu", "exact"), unary("gelu", "Gelu", "transc"),
          unary("gelu_tanh", "Gelu", "transc", attrs={"approximate": "tanh"}),
          unary("sigmoid", "Sigmoid", "transc"), unary("tanh", "Tanh", "transc"),
          unary("silu", "moe.Silu", "transc"), unary("softmax", "Softmax", "transc", rnd(3)),
          unary("abs", "Abs", "arith"), unary("reciprocal", "Reciprocal", "arith", pos()),
          unary("erf", "Erf", "transc"),
          case("abs_int", "Abs", [("x", "int64", ["T", 5], ints(-9, 9))], ["y"], "exact"),
          unary("softmax_axis1", "Softmax", "transc", rnd(3), {"axis": 1}),
          unary("log_softmax", "LogSoftmax", "transc", rnd(3)),
          case("layer_norm", "LayerNormalization",
               [("x", "float32", ["T", 24], rnd()), ("s", "float32", [24], rnd()), ("b", "float32", [24], rnd())],
               ["y"], "arith"),
          case("layer_norm_stats", "LayerNormalization",
               [("x", "float32", ["T", 3, 8], rnd()), ("s", "float32", [3, 8], rnd())],
               ["y", "mean", "inv_std"], "arith", {"axis": 1}),
          case("rms_norm", "RMSNormalization", [("x", "float32", ["T", 24], rnd()), ("s", "float32", [24], rnd())],
               ["y"], "arith"),
          case("matmul", "MatMul", [("a", "float32", ["T", 37], rnd()), ("w", None, None, None)], ["y"], "gemm",
               inits=[{"name": "w", **f32(37, 70), "init": {"dist": "normal", "std": 0.5, "seed": 3}}]),
          case("matmul_act", "MatMul", [("a", "float32", ["T", 3, 9], rnd()), ("w", "float32", [9, 5], rnd())],
               ["y"], "gemm"),
          case("matmul_batch", "MatMul", [("a", "float32", [2, "T", 9], rnd()), ("w", "float32", [2, 9, 40], rnd())],
               ["y"], "gemm"),
          case("gemm", "Gemm", [("a", "float32", ["T", 20], rnd()), ("w", None, None, None),
                                ("c", "float32", [33], rnd())], ["y"], "gemm",
               attrs={"alpha": 0.5, "beta": 2.0},
               inits=[{"name": "w", **f32(20, 33), "init": {"dist": "normal", "std": 0.5, "seed": 4}}]),
          # B params used off the micro-kernel's fast path must stay plain (not panels).
          case("gemm_transA", "Gemm", [("a", "float32", [20, "T"], rnd()), ("w", None, None, None)], ["y"], "gemm",
               attrs={"transA": 1},
               inits=[{"name": "w", **f32(20, 40), "init": {"dist": "normal", "std": 0.5, "seed": 6}}]),
          dict(case("matmul_vector", "MatMul", [("x", "float32", ["T", 20], rnd())], ["y"], "gemm",
                    inits=[{"name": "w", **f32(20, 40), "init": {"dist": "normal", "std": 0.5, "seed": 7}},
                           const("row", "int64", [], [0])],
                    extra_nodes=[{"name": "first", "op": "Gather", "inputs": ["x", "row"], "outputs": ["a"]}]),
               op_inputs=["a", "w"]),  # a rank-1 A times a param B
          case("gemm_transB", "Gemm", [("a", "float32", ["T", 20], rnd()), ("w", "float32", [12, 20], rnd())],
               ["y"], "gemm", attrs={"transB": 1})]
    return c


def tensor_cases():
    return [
        case("reshape", "Reshape", [("x", "float32", ["T", 6], rnd())], ["y"], "exact",
             inits=[const("shape", "int64", [3], [-1, 2, 3])]),
        case("transpose", "Transpose", [("x", "float32", ["T", 4, 5], rnd())], ["y"], "exact",
             attrs={"perm": [2, 0, 1]}),
        case("concat", "Concat", [("a", "float32", ["T", 3], rnd()), ("b", "float32", ["T", 5], rnd())], ["y"],
             "exact", attrs={"axis": 1}),
        case("split", "Split", [("x", "float32", ["T", 9], rnd())], ["y0", "y1"], "exact",
             attrs={"axis": 1}, inits=[const("sizes", "int64", [2], [4, 5])]),
        case("slice", "Slice", [("x", "float32", ["T", 10], rnd())], ["y"], "exact",
             inits=[const("st", "int64", [1], [1]), const("en", "int64", [1], [9]),
                    const("ax", "int64", [1], [1]), const("sp", "int64", [1], [3])]),
        case("gather", "Gather", [("x", "float32", [11, 4], rnd()), ("i", "int64", ["T", 2], ints(-11, 11))],
             ["y"], "exact"),
        case("reduce_sum", "ReduceSum", [("x", "float32", ["T", 4, 6], rnd())], ["y"], "arith",
             inits=[const("axes", "int64", [1], [2])]),
        case("reduce_mean", "ReduceMean", [("x", "float32", ["T", 4, 6], rnd())], ["y"], "arith",
             attrs={"keepdims": 0}, inits=[const("axes", "int64", [1], [1])]),
        case("reduce_max", "ReduceMax", [("x", "float32", ["T", 4, 6], rnd())], ["y"], "exact",
             inits=[const("axes", "int64", [2], [0, 2])]),
        case("cast_f2i", "Cast", [("x", "float32", ["T", 7], rnd(20))], ["y"], "exact", attrs={"to": 6}),
        case("cast_i2f", "Cast", [("x", "int64", ["T", 7], ints(-99, 99))], ["y"], "exact", attrs={"to": 1}),
        case("identity", "Identity", [("x", "float32", ["T", 7], rnd())], ["y"], "exact"),
        case("where", "Where", [("c", "bool", ["T", 6], bools()), ("a", "float32", ["T", 6], rnd()),
                                ("b", "float32", [6], rnd())], ["y"], "exact"),
        case("equal", "Equal", [("a", "int32", ["T", 6], ints(0, 3, np.int32)),
                                ("b", "int32", [6], ints(0, 3, np.int32))], ["y"], "exact"),
        case("less", "Less", [("a", "float32", ["T", 6], rnd()), ("b", "float32", [6], rnd())], ["y"], "exact"),
        case("greater", "Greater", [("a", "float32", ["T", 6], rnd()), ("b", "float32", [6], rnd())], ["y"], "exact"),
        case("less_or_equal_int", "LessOrEqual", [("a", "int64", ["T", 6], ints(0, 3)), ("b", "int64", [6], ints(0, 3))],
             ["y"], "exact"),
        case("topk", "TopK", [("x", "float32", ["T", 9], rnd())], ["v", "i"], "exact",
             inits=[const("k", "int64", [1], [4])]),
        case("topk_ties", "TopK", [("x", "float32", ["T", 9], lambda r, s: r.integers(0, 3, s).astype(np.float32))],
             ["v", "i"], "exact", attrs={"largest": 0}, inits=[const("k", "int64", [1], [3])]),
    ]


def half_cases():
    """f16 and bf16 kernels, reached through Cast (ONNX codes 10 and 16)."""
    out = []
    for name, code in (("f16", 10), ("bf16", 16)):
        nodes = [{"name": "c1", "op": "Cast", "inputs": ["a"], "outputs": ["ah"], "attrs": {"to": code}},
                 {"name": "c2", "op": "Cast", "inputs": ["b"], "outputs": ["bh"], "attrs": {"to": code}},
                 {"name": "mul", "op": "Mul", "inputs": ["ah", "ah"], "outputs": ["p"]},
                 {"name": "sm", "op": "Softmax", "inputs": ["p"], "outputs": ["s"]},
                 {"name": "mm", "op": "MatMul", "inputs": ["s", "bh"], "outputs": ["q"]},
                 {"name": "sum", "op": "ReduceSum", "inputs": ["q", "axes"], "outputs": ["r"]}]
        out.append(case(name + "_chain", "Cast", [("r", None, None, None)], ["y"], "transc", {"to": 1},
                        [const("axes", "int64", [1], [1])], nodes))
        out[-1]["inputs"] = [("a", "float32", ["T", 8], rnd()), ("b", "float32", [8, 8], rnd())]
        out[-1]["op_inputs"] = ["r"]
    return out


NARROW_WEIGHTS = ("matmul", "expert_matmul", "gather_matmul_wide", "fused_up_silu",
                  "fused_down_combine")


# The widening kernels on every x86 host: the dot-product kernels of AVX512-BF16 and
# AVX512-VNNI round or quantize the activations, and dot_kernels.py checks them against
# the interpreter on rounded inputs and against NumPy.
X86 = platform.machine() == "x86_64"
# The weight variants test the micro-kernels, which are the same at every level: -O3 only
# (the op's f32 case runs at -O0 too).
WEIGHT_OPT_LEVELS = ("-O3",)
WIDEN = {"bf16": ["--features=-avx512bf16"] if X86 else [],
         "int8": ["--features=-avx512vnni"] if X86 else []}


def weight_dtype_cases(cases):
    """f16 and bf16 weights next to f32 activations (what --weight-dtype makes): the
    products read them in panels and widen them in registers, the interpreter widens the
    same values; a weight init recipe fills its declared dtype. int8 weights (K of 37, 10,
    300 and 40: every remainder of the 4-row blocks but 3), and int4 in groups of 8 for the
    weights whose K allows, through the initializer's "weight_dtype": the interpreter
    dequantizes."""
    out = []
    for c in cases:
        if c["name"] not in NARROW_WEIGHTS:
            continue
        weights = [i for i in c["inits"] if "init" in i and len(i["shape"]) >= 2]
        assert weights, c["name"]
        for dt, tag in (("float16", "f16"), ("bfloat16", "bf16")):
            inits = [dict(i, dtype=dt) if i in weights else i for i in c["inits"]]
            flags = WIDEN["bf16"] if tag == "bf16" else []
            out.append(dict(c, name="%s_w%s" % (c["name"], tag), inits=inits, build_flags=flags,
                            opt_levels=WEIGHT_OPT_LEVELS))
        for fmt, tag in (("int8", "int8"), ("int4:8", "int4")):
            takes = [i for i in weights if fmt == "int8" or i["shape"][-2] % 8 == 0]
            if takes:
                inits = [dict(i, weight_dtype=fmt) if i in takes else i for i in c["inits"]]
                out.append(dict(c, name="%s_w%s" % (c["name"], tag), inits=inits,
                                build_flags=WIDEN["int8"], opt_levels=WEIGHT_OPT_LEVELS))
    return out


def route_input(E):
    return [("z", "float32", ["T", E], rnd(2))]


def moe_cases():
    E = 6
    bias = [{"name": "bias", **f32(E), "init": {"dist": "normal", "std": 0.5, "seed": 9}}]
    mask = ("mask", "bool", ["T"], bools())
    c = [case("topk_route", "moe.TopKRoute", route_input(E), ["e", "w"], "exact", {"k": 2, "normalize": 1}),
         case("topk_route_sigmoid_groups", "moe.TopKRoute", route_input(E) + [("bias", None, None, None)],
              ["e", "w"], "exact", {"k": 2, "score": "sigmoid", "groups": 3, "topk_groups": 2}, bias),
         case("topk_route_capacity", "moe.TopKRoute", route_input(E), ["e", "w", "choice"], "exact",
              {"k": 2, "capacity": 4, "order": "priority"}),
         case("topp_route", "moe.TopPRoute", route_input(E), ["e", "w"], "exact", {"p": 0.6, "max_k": 3}),
         case("expert_choice", "moe.ExpertChoiceRoute", route_input(E), ["tok", "w"], "exact", {"capacity": 3}),
         case("resonance", "moe.ResonanceRoute", [("x", "float32", ["T", 8], rnd())], ["e", "w"], "exact",
              {"num_experts": 4, "k": 1, "capacity": 5}),
         case("gw_route", "moe.GWRoute", route_input(E), ["e", "w"], "exact",
              {"k": 2, "threshold": 1.2, "max_broadcast": 3}),
         case("gw_route_train", "moe.GWRoute", route_input(E) + [("bias", None, None, None), mask], ["e", "w"],
              "exact", {"k": 2, "threshold": 1.2, "max_broadcast": 3}, bias, mode="train"),
         case("lb_loss", "moe.LoadBalanceLoss", [("p", "float32", ["T", E], pos()),
                                                 ("e", "int32", ["T", 2], ints(0, E, np.int32))], ["l"], "arith"),
         case("z_loss", "moe.ZLoss", route_input(E) + [mask], ["l"], "arith", {"coef": 0.1}),
         case("entropy_loss", "moe.EntropyLoss", [("p", "float32", ["T", E], pos())], ["l"], "arith")]
    # Dispatch / ExpertMatMul / Combine behind a real router, so indices are valid.
    chain = [{"name": "route", "op": "moe.TopKRoute", "inputs": ["z"], "outputs": ["e", "w"], "attrs": {"k": 2}},
             {"name": "disp", "op": "moe.Dispatch", "inputs": ["x", "e", "w"],
              "outputs": ["rows", "off", "rtok", "rw"], "attrs": {"num_experts": E}}]
    w1 = {"name": "w1", **f32(E, 10, 40), "init": {"dist": "normal", "std": 0.3, "seed": 5}}
    xz = [("x", "float32", ["T", 10], rnd()), ("z", "float32", ["T", E], rnd(2))]
    c.append(case("dispatch", None, xz, ["rows", "off", "rtok", "rw"], "exact", extra_nodes=chain))
    c.append(case("expert_matmul", None, xz, ["h"], "gemm", inits=[w1], extra_nodes=chain + [
        {"name": "up", "op": "moe.ExpertMatMul", "inputs": ["rows", "off", "w1"], "outputs": ["h"]}]))
    c.append(case("expert_matmul_act", None, xz + [("w2", "float32", [E, 10, 7], rnd())], ["h"], "gemm",
                  extra_nodes=chain + [{"name": "up", "op": "moe.ExpertMatMul", "inputs": ["rows", "off", "w2"],
                                        "outputs": ["h"]}]))
    # materialize=0: rows is [0,D] and unwritten; GatherMatMul reads x through row_token
    # (panels for the param, plain for the activation W, K past one 256-column chunk).
    lean = [dict(chain[0]), dict(chain[1], attrs={"num_experts": E, "materialize": 0})]
    c.append(case("dispatch_unmaterialized", None, xz, ["off", "rtok", "rw"], "exact", extra_nodes=lean))
    c.append(case("gather_matmul", None, xz, ["h"], "gemm", inits=[w1], extra_nodes=lean + [
        {"name": "up", "op": "moe.GatherMatMul", "inputs": ["x", "rtok", "off", "w1"], "outputs": ["h"]}]))
    c.append(case("gather_matmul_act", None, xz + [("w2", "float32", [E, 10, 7], rnd())], ["h"], "gemm",
                  extra_nodes=lean + [{"name": "up", "op": "moe.GatherMatMul", "inputs": ["x", "rtok", "off", "w2"],
                                       "outputs": ["h"]}]))
    wide = {"name": "w3", **f32(E, 300, 40), "init": {"dist": "normal", "std": 0.1, "seed": 6}}
    c.append(case("gather_matmul_wide", None, [("x", "float32", ["T", 300], rnd()), xz[1]], ["h"], "gemm",
                  inits=[wide], extra_nodes=lean + [
                      {"name": "up", "op": "moe.GatherMatMul", "inputs": ["x", "rtok", "off", "w3"],
                       "outputs": ["h"]}]))
    # Training: gw-specialize turns the GW Dispatch + ExpertMatMul into GatherMatMul.
    gw = [{"name": "route", "op": "moe.GWRoute", "inputs": ["z"], "outputs": ["e", "w"],
           "attrs": {"k": 2, "threshold": 1.2, "max_broadcast": 40}}, chain[1],
          {"name": "up", "op": "moe.ExpertMatMul", "inputs": ["rows", "off", "w1"], "outputs": ["h"]},
          {"name": "comb", "op": "moe.Combine", "inputs": ["h", "rtok", "rw", "off", "x"], "outputs": ["y"]}]
    w1b = dict(w1, shape=[E, 10, 10])
    c.append(case("gw_gather_train", None, xz, ["y"], "gemm", inits=[w1b], extra_nodes=gw, mode="train"))
    c.append(case("combine", None, xz, ["y"], "arith", extra_nodes=chain + [
        {"name": "comb", "op": "moe.Combine", "inputs": ["rows", "rtok", "rw", "off", "x"], "outputs": ["y"]}]))
    ec = [{"name": "route", "op": "moe.ExpertChoiceRoute", "inputs": ["z"], "outputs": ["tok", "w"],
           "attrs": {"capacity": 4}},
          {"name": "disp", "op": "moe.Dispatch", "inputs": ["x", "tok", "w"], "outputs": ["rows", "off", "rtok", "rw"],
           "attrs": {"num_experts": E, "source": "expert_choice"}},
          {"name": "comb", "op": "moe.Combine", "inputs": ["rows", "rtok", "rw", "off", "x"], "outputs": ["y"]}]
    c.append(case("dispatch_expert_choice", None, xz, ["y", "off"], "arith", extra_nodes=ec))
    # The fused ops written directly (fuse-expert-ffn makes them; docs/fusion.md): gated
    # and not, every activation, rows or x through row_token, dense, param (panels) and
    # activation (plain) weights, a width that leaves a partial panel.
    w2 = {"name": "w2", **f32(E, 10, 40), "init": {"dist": "normal", "std": 0.3, "seed": 7}}
    for act in ("silu", "gelu", "gelu_tanh", "relu"):
        c.append(case("fused_up_" + act, None, xz, ["h"], "transc", inits=[w1, w2], extra_nodes=chain + [
            {"name": "up", "op": "moe.FusedUp", "inputs": ["rows", "w1", "w2", "off"], "outputs": ["h"],
             "attrs": {"activation": act}}]))
    c.append(case("fused_up_ungated_gather", None, xz + [("w5", "float32", [E, 10, 7], rnd())], ["h"], "transc",
                  extra_nodes=lean + [{"name": "up", "op": "moe.FusedUp", "inputs": ["x", "w5", "", "off", "rtok"],
                                       "outputs": ["h"], "attrs": {"activation": "relu"}}]))
    c.append(case("fused_up_dense", "moe.FusedUp", [("x", "float32", ["T", 10], rnd()),
                                                    ("wd1", None, None, None), ("wd2", None, None, None)],
                  ["h"], "transc", {"activation": "silu"},
                  [{"name": "wd1", **f32(10, 37), "init": {"dist": "normal", "std": 0.3, "seed": 8}},
                   {"name": "wd2", **f32(10, 37), "init": {"dist": "normal", "std": 0.3, "seed": 9}}]))
    wdown = {"name": "wdn", **f32(E, 40, 10), "init": {"dist": "normal", "std": 0.3, "seed": 10}}
    c.append(case("fused_down_combine", None, xz, ["y"], "gemm", inits=[w1, wdown], extra_nodes=chain + [
        {"name": "up", "op": "moe.ExpertMatMul", "inputs": ["rows", "off", "w1"], "outputs": ["h"]},
        {"name": "down", "op": "moe.FusedDownCombine", "inputs": ["h", "off", "wdn", "rtok", "rw", "x"],
         "outputs": ["y"]}]))
    c.append(case("fused_down_combine_residual", None, xz, ["y"], "gemm", inits=[w1, wdown], extra_nodes=chain + [
        {"name": "up", "op": "moe.ExpertMatMul", "inputs": ["rows", "off", "w1"], "outputs": ["h"]},
        {"name": "down", "op": "moe.FusedDownCombine", "inputs": ["h", "off", "wdn", "rtok", "rw", "x", "x"],
         "outputs": ["y"]}]))
    # A chain of elementwise ops in one loop (ir/elementwise.h): t = a * b (b broadcast
    # along rows); u = silu(t); v = u - c (c a column); y = gelu_tanh(v) / a.
    prog = [2, 0, 1, 13, 3, -1, 1, 4, 2, 10, 5, -1, 3, 6, 0]
    # A rank-2 param in slot 2 (where the fused routers take W_router) stays plain.
    c.append(case("fused_elementwise_param", "moe.FusedElementwise",
                  [("a", "float32", ["T", 8], rnd()), ("b", "float32", ["T", 8], rnd()), ("pm", None, None, None)],
                  ["y"], "transc", {"program": [0, 0, 2, 2, 3, 1]},
                  [{"name": "pm", **f32(1, 8), "init": {"dist": "normal", "std": 1.0, "seed": 13}}]))
    c.append(case("fused_elementwise", "moe.FusedElementwise",
                  [("a", "float32", ["T", 8], pos()), ("b", "float32", [8], rnd()), ("c", "float32", ["T", 1], rnd())],
                  ["y"], "transc", {"program": prog}))
    # A norm, then a program on its result (register 0) and the extras (1, 2): gelu(n * e1) + e2
    # after LayerNorm with bias; silu(n) * e after RMSNorm (bias omitted).
    c.append(case("fused_norm_layer", "moe.FusedNorm",
                  [("x", "float32", ["T", 8], rnd()), ("g", "float32", [8], rnd()), ("b", "float32", [8], rnd()),
                   ("e1", "float32", [8], rnd()), ("e2", "float32", ["T", 1], rnd())],
                  ["y"], "transc", {"kind": "layer", "program": [2, 0, 1, 9, 3, -1, 0, 4, 2]}))
    rms = case("fused_norm_rms", "moe.FusedNorm",
               [("x", "float32", ["T", 8], rnd()), ("g", "float32", [8], rnd()), ("e", "float32", ["T", 8], rnd())],
               ["y"], "transc", {"kind": "rms", "epsilon": 1e-6, "program": [13, 0, -1, 2, 2, 1]})
    rms["op_inputs"] = ["x", "g", "", "e"]
    c.append(rms)
    # Router, route and Dispatch in one op: the logits come from the GEMM micro-kernel (FMA),
    # so weights match the interpreter to rounding; the random inputs leave no near-ties.
    wr = {"name": "wr", **f32(10, E), "init": {"dist": "normal", "std": 0.5, "seed": 11}}
    bias_e = {"name": "bias_e", **f32(E), "init": {"dist": "normal", "std": 0.2, "seed": 12}}
    outs4 = ["rows", "off", "rtok", "rw"]
    c.append(case("fused_topk_dispatch", "moe.FusedTopKDispatch",
                  [xz[0], ("h2", "float32", ["T", 10], rnd()), ("wr", None, None, None), ("bias_e", None, None, None)],
                  outs4, "transc", {"k": 2, "score": "sigmoid", "normalize": 1, "num_experts": E}, [wr, bias_e]))
    c.append(case("fused_topk_dispatch_lean", "moe.FusedTopKDispatch",
                  [xz[0], ("h2", "float32", ["T", 10], rnd()), ("wr", None, None, None)], outs4,
                  "transc", {"k": 2, "capacity": 5, "num_experts": E, "materialize": 0}, [wr]))
    c.append(case("fused_topp_dispatch", "moe.FusedTopPDispatch",
                  [xz[0], ("h2", "float32", ["T", 10], rnd()), ("wr", None, None, None)], outs4, "transc",
                  {"p": 0.6, "max_k": 3, "num_experts": E}, [wr]))
    c.append(case("fused_expert_choice_dispatch", "moe.FusedExpertChoiceDispatch",
                  [xz[0], ("h2", "float32", ["T", 10], rnd()), ("wr", None, None, None)], outs4, "transc",
                  {"capacity": 3, "num_experts": E, "source": "expert_choice"}, [wr]))
    return c


def loss_cases():
    """The training losses: every reduction, ignore_index (labels include it), class
    weights, i32 labels, spatial dims, and f16 scores through a Cast."""
    C = 5
    scores = ("s", "float32", ["T", C], rnd(3))
    labels = ("l", "int64", ["T"], ints(0, C))
    w = {"name": "w", **f32(C), "init": {"dist": "uniform", "low": 0.25, "high": 2.0, "seed": 11}}
    pt = [("p", "float32", ["T", 4, 3], rnd()), ("t", "float32", ["T", 4, 3], rnd())]
    ce = "SoftmaxCrossEntropyLoss"
    c = [case("ce_mean", ce, [scores, labels], ["y"], "transc"),
         case("ce_sum_ignore", ce, [scores, ("l", "int64", ["T"], ints(-1, C))], ["y"], "transc",
              {"reduction": "sum", "ignore_index": -1}),
         case("ce_none_weights_ignore", ce, [scores, ("l", "int32", ["T"], ints(0, C, np.int32)),
                                             ("w", None, None, None)], ["y"], "transc",
              {"reduction": "none", "ignore_index": 2}, [w]),
         case("ce_mean_weights_ignore", ce, [scores, ("l", "int64", ["T"], ints(-1, C)),
                                             ("w", None, None, None)], ["y"], "transc",
              {"ignore_index": -1}, [w]),
         case("ce_spatial", ce, [("s", "float32", ["T", 4, 3], rnd(3)), ("l", "int32", ["T", 3],
                                                                         ints(0, 4, np.int32))],
              ["y"], "transc", {"reduction": "none"}),
         case("ce_f16", ce, [("s", "float32", ["T", C], rnd(3)), labels], ["y"], "transc",
              extra_nodes=[{"name": "c", "op": "Cast", "inputs": ["s"], "outputs": ["sh"],
                            "attrs": {"to": 10}}]),
         case("mse_mean", "MSELoss", pt, ["y"], "arith"),
         case("mse_sum", "MSELoss", pt, ["y"], "arith", {"reduction": "sum"}),
         case("mse_none", "MSELoss", pt, ["y"], "arith", {"reduction": "none"})]
    c[5]["op_inputs"] = ["sh", "l"]
    c.append(case("ce_log_prob", ce, [("s", "float32", ["T", C, 2], rnd(3)), ("l", "int64", ["T", 2], ints(0, C))],
                  ["y", "lp"], "transc", {"reduction": "none"}))
    return c


def model_of(cs):
    ins = []
    for name, dt, shape, _ in cs["inputs"]:
        if dt is not None:
            ins.append({"name": name, "dtype": dt, "shape": shape})
    nodes = list(cs["extra_nodes"])
    if cs["op"]:
        node = {"name": "n", "op": cs["op"], "inputs": cs.get("op_inputs") or [i[0] for i in cs["inputs"]],
                "outputs": cs["outputs"]}
        if cs["inits"] and not cs.get("op_inputs") and not any(i[1] is None for i in cs["inputs"]):
            node["inputs"] += [i["name"] for i in cs["inits"]]
        if cs["attrs"]:
            node["attrs"] = cs["attrs"]
        nodes.append(node)
    return {"moec": 1, "name": "op_" + cs["name"], "symbols": {"T": {"max": TMAX}}, "inputs": ins,
            "outputs": cs["outputs"], "initializers": cs["inits"], "nodes": nodes}


def feeds_of(cs, T, rng):
    out = {}
    for name, dt, shape, gen in cs["inputs"]:
        if dt is not None:
            out[name] = gen(rng, tuple(T if d == "T" else d for d in shape))
    return out


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd[:2]), p.returncode, p.stderr.strip()))


def compare(cs, got, want):
    rtol, atol = TOL[cs["tol"]]
    if got.dtype != want.dtype or got.shape != want.shape:
        return "dtype/shape %s%s vs %s%s" % (got.dtype, got.shape, want.dtype, want.shape)
    if rtol == 0 and atol == 0:
        same = (got == want) | (np.isnan(got) & np.isnan(want)) if got.dtype.kind == "f" else got == want
        return None if np.all(same) else "%d elements differ (exact expected)" % np.sum(~same)
    ok = np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    if np.all(ok):
        return None
    i = np.argmax(~ok.ravel())
    return "%d elements outside (%g, %g); first got %r want %r" % (
        np.sum(~ok), rtol, atol, got.ravel()[i], want.ravel()[i])


def check_case(moec, cs, work, rng):
    d = os.path.join(work, cs["name"])
    os.makedirs(d, exist_ok=True)
    model = os.path.join(d, "model.json")
    with open(model, "w") as f:
        json.dump(model_of(cs), f, indent=1)
    exes = {}
    mode = "--mode=" + cs["mode"]
    for opt in cs.get("opt_levels", OPT_LEVELS):
        exes[opt] = os.path.join(d, "model" + opt)
        run([moec, "build", model, "-o", exes[opt], opt, mode] + cs.get("build_flags", []))
    problems = []
    for T in T_VALUES:
        feeds = feeds_of(cs, T, rng)
        args = []
        for name, arr in feeds.items():
            p = os.path.join(d, "%s_T%d.npy" % (name, T))
            np.save(p, arr)
            args += ["--input", "%s=%s" % (name, p)]
        want = {o: os.path.join(d, "want_%s_T%d.npy" % (o, T)) for o in cs["outputs"]}
        run([moec, "run", model, "--interp", mode] + args + sum([["--output", "%s=%s" % kv] for kv in want.items()], []))
        for opt, exe in exes.items():
            got = {o: os.path.join(d, "got%s_%s_T%d.npy" % (opt, o, T)) for o in cs["outputs"]}
            run([exe] + args + sum([["--output", "%s=%s" % kv] for kv in got.items()], []))
            for o in cs["outputs"]:
                msg = compare(cs, np.load(got[o]), np.load(want[o]))
                if msg:
                    problems.append("%s T=%d output %s: %s" % (opt, T, o, msg))
    return problems


def untested_ops(cases):
    """Ops of ir/ops.def no case uses: a new op must come with a case here."""
    table = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "ir", "ops.def")
    names = set(re.findall(r'^OP\(\w+,\s*"([^"]+)"', open(table).read(), re.M))
    used = {c["op"] for c in cases} | {n["op"] for c in cases for n in c["extra_nodes"]}
    return sorted(names - used - {"moe.MoE"})  # moe.MoE: expanded first; see examples.sh


def first_case_per_op(cases):
    seen = set()
    return [c for c in cases if c["op"] not in seen and not seen.add(c["op"])]


def main():
    moec = os.path.abspath(sys.argv[1])
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    keep = sys.argv[sys.argv.index("--keep") + 1] if "--keep" in sys.argv else None
    if "--quick" in sys.argv:
        global T_VALUES, OPT_LEVELS
        T_VALUES, OPT_LEVELS = (1, TMAX), ("-O0",)
    rng = np.random.default_rng(20261123)
    every = (std_cases() + tensor_cases() + half_cases() + moe_cases() + loss_cases() +
             cases_grad_std.cases() + cases_grad_moe.cases() + cases_grad_loss.cases())
    every += weight_dtype_cases(every)
    cases = [c for c in every if not only or c["name"] == only]
    if "--quick" in sys.argv and not only:
        cases = first_case_per_op(cases)
    failed = 0
    if untested_ops(every):
        print("FAIL: no case for %s" % ", ".join(untested_ops(every)))
        failed += 1
    with tempfile.TemporaryDirectory() as tmp:
        work = keep or tmp
        for cs in cases:
            try:
                problems = check_case(moec, cs, work, rng)
            except RuntimeError as e:
                problems = [str(e)]
            for p in problems:
                print("FAIL %s: %s" % (cs["name"], p))
            failed += bool(problems)
    print("%d cases, %d passed, %d failed" % (len(cases), len(cases) - failed, failed))
    return 1 if failed or not cases else 0


if __name__ == "__main__":
    sys.exit(main())
