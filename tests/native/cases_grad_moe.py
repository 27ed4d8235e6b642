"""Differential cases (tests/native/diff_ops.py) for the gradients of MoE ops.

Every router gradient with the options that change its Jacobian (score kinds,
normalisation, scale, bias, groups, capacity in both orders; top-p with max_k; expert
choice with a mask; resonance in each weight mode; GW in inference and in training with
broadcast tokens), and the adjoints of Dispatch (token and expert choice, and without
rows), ExpertMatMul and GatherMatMul (f32 and f16, and big enough at T = 33 for the
thread pool) and Combine, fed by a real router so that indices, offsets and dropped rows are realistic. Cotangents of [T*k, .]
values are computed in the graph (inputs cannot have such shapes)."""
import numpy as np


def node(name, op, inputs, outputs, attrs=None):
    n = {"name": name, "op": op, "inputs": inputs, "outputs": outputs}
    if attrs:
        n["attrs"] = attrs
    return n


def router_cases(d):
    case, rnd, bools, f32 = d.case, d.rnd, d.bools, d.f32
    E = 6
    z = ("z", "float32", ["T", E], rnd(2))
    bias = [{"name": "bias", **f32(E), "init": {"dist": "normal", "std": 0.5, "seed": 9}}]
    mask = ("mask", "bool", ["T"], bools())

    def g(k):
        return ("g", "float32", ["T", k], rnd())

    topk = "moe.TopKRouteGrad"
    c = [case("topk_route_grad", topk, [g(2), z], ["gz"], "transc", {"k": 2}),
         case("topk_route_grad_norm_capacity", topk, [g(2), z], ["gz"], "transc",
              {"k": 2, "normalize": 1, "capacity": 4, "scale": 1.5}),
         case("topk_route_grad_priority", topk, [g(3), z], ["gz"], "transc",
              {"k": 3, "capacity": 5, "order": "priority"}),
         case("topk_route_grad_selected", topk, [g(2), z], ["gz"], "transc",
              {"k": 2, "score": "softmax_selected"}),
         case("topk_route_grad_selected_norm_bias", topk, [g(3), z, ("bias", None, None, None)], ["gz"],
              "transc", {"k": 3, "score": "softmax_selected", "normalize": 1, "capacity": 6}, bias),
         case("topk_route_grad_sigmoid_groups", topk, [g(2), z, ("bias", None, None, None)], ["gz"], "transc",
              {"k": 2, "score": "sigmoid", "normalize": 1, "scale": 2.5, "groups": 3, "topk_groups": 2}, bias),
         case("topk_route_grad_sigmoid_capacity", topk, [g(2), z], ["gz"], "transc",
              {"k": 2, "score": "sigmoid", "capacity": 3, "order": "priority"}),
         case("topp_route_grad", "moe.TopPRouteGrad", [g(E), z], ["gz"], "transc", {"p": 0.6}),
         case("topp_route_grad_max_k", "moe.TopPRouteGrad", [g(3), z], ["gz"], "transc",
              {"p": 0.8, "max_k": 3, "inclusive": 0}),
         case("expert_choice_grad", "moe.ExpertChoiceRouteGrad", [("g", "float32", [E, 3], rnd()), z],
              ["gz"], "transc", {"capacity": 3}),
         case("expert_choice_grad_mask", "moe.ExpertChoiceRouteGrad",
              [("g", "float32", [E, 5], rnd()), z, mask], ["gz"], "transc", {"capacity": 5})]
    x = ("x", "float32", ["T", 12], rnd())
    for mode, k, cap in (("softmax_cosine", 1, 5), ("softmax_cosine", 2, 0),
                         ("softmax_grap_logits", 2, 6), ("unit", 1, 4)):
        c.append(case("resonance_grad_%s_k%d" % (mode, k), "moe.ResonanceRouteGrad", [g(k), x], ["gx"],
                      "transc", {"num_experts": 4, "k": k, "capacity": cap, "weight_mode": mode}))
    gw = "moe.GWRouteGrad"
    gw_attrs = {"k": 2, "threshold": 1.2, "max_broadcast": 3}
    c.append(case("gw_route_grad", gw, [g(2), z], ["gz"], "transc", gw_attrs))
    # The node's mode decides, not the compile mode: broadcast in an inference build.
    c.append(case("gw_route_grad_mode_train", gw, [g(E), z], ["gz"], "transc",
                  dict(gw_attrs, mode="train")))
    # Training graphs need a loss output: a z-loss beside the gradient node.
    for name, ins, attrs, inits in (
            ("gw_route_grad_train", ["g", "z", "bias", "mask"], gw_attrs, bias),
            ("gw_route_grad_train_capacity", ["g", "z"],
             dict(gw_attrs, capacity=4, normalize=1, max_broadcast=40, entropy_unit="normalized",
                  threshold=0.6), [])):
        nodes = [node("zl", "moe.ZLoss", ["z"], ["zl"]), node("n", gw, ins, ["gz"], attrs)]
        c.append(case(name, None, [g(E), z, mask], ["gz", "zl"], "transc", inits=inits, extra_nodes=nodes,
                      mode="train"))
    return c


def data_cases(d):
    case, rnd, f32 = d.case, d.rnd, d.f32
    E, D, F = 6, 10, 7
    xz = [("x", "float32", ["T", D], rnd()), ("z", "float32", ["T", E], rnd(2))]
    inits = [{"name": "c1", **f32(D), "init": {"dist": "normal", "std": 1.0, "seed": 21}},
             {"name": "c2", **f32(1), "init": {"dist": "normal", "std": 1.0, "seed": 22}},
             {"name": "wg", **f32(E, D, F), "init": {"dist": "normal", "std": 0.5, "seed": 23}},
             {"name": "w1", **f32(E, D, F), "init": {"dist": "normal", "std": 0.5, "seed": 24}}]
    # A capacity router drops choices, so some rows are past offsets[E].
    chain = [node("route", "moe.TopKRoute", ["z"], ["e", "w"], {"k": 2, "capacity": 5}),
             node("disp", "moe.Dispatch", ["x", "e", "w"], ["rows", "off", "rtok", "rw"], {"num_experts": E}),
             node("g_rows", "Mul", ["rows", "c1"], ["gr0"]),
             node("g_rows2", "Add", ["gr0", "c2"], ["gr"]),  # nonzero past the live rows too
             node("g_rw", "Mul", ["rw", "c2"], ["grw0"]),
             node("g_rw2", "Add", ["grw0", "c2"], ["grw"])]
    c = [dict(case("dispatch_grad", "moe.DispatchGrad", xz, ["gx", "gw"], "arith", {"num_experts": E}, inits,
                   chain), op_inputs=["gr", "grw", "x", "e", "w"])]
    ec = [node("route", "moe.ExpertChoiceRoute", ["z"], ["tok", "w"], {"capacity": 4})]
    c.append(case("dispatch_grad_expert_choice", "moe.DispatchGrad",
                  [("gr", "float32", [E * 4, D], rnd()), ("grw", "float32", [E * 4], rnd()), xz[0],
                   ("tok", None, None, None), ("w", None, None, None)], ["gx", "gw"], "arith",
                  {"num_experts": E, "source": "expert_choice"}, extra_nodes=ec))
    c[-1]["inputs"].append(xz[1])
    c[-1]["op_inputs"] = ["gr", "grw", "x", "tok", "w"]
    mm = chain + [node("gout", "moe.ExpertMatMul", ["rows", "off", "wg"], ["go"])]
    c.append(dict(case("expert_matmul_grad", "moe.ExpertMatMulGrad", xz, ["grows", "gW"], "gemm",
                       inits=inits, extra_nodes=mm), op_inputs=["go", "rows", "off", "w1"]))
    # GatherMatMul over an unmaterialised Dispatch, and DispatchGrad of its [0,D] rows.
    lean = [chain[0], dict(chain[1], attrs={"num_experts": E, "materialize": 0}),
            node("gout", "moe.GatherMatMul", ["x", "rtok", "off", "wg"], ["go"])]
    c.append(dict(case("gather_matmul_grad", "moe.GatherMatMulGrad", xz, ["gx", "gW"], "gemm",
                       inits=inits, extra_nodes=lean), op_inputs=["go", "x", "rtok", "off", "w1"]))
    c.append(dict(case("dispatch_grad_unmaterialized", "moe.DispatchGrad", xz, ["gx", "gw"], "arith",
                       {"num_experts": E, "materialize": 0}, inits, lean[:2] + chain[4:]),
                  op_inputs=["rows", "grw", "x", "e", "w"]))
    comb = chain[:2]
    c.append(dict(case("combine_grad", "moe.CombineGrad", xz + [("gy", "float32", ["T", D], rnd())],
                       ["gout", "grw"], "arith", extra_nodes=comb),
                  op_inputs=["gy", "rows", "rtok", "rw", "off", "x"]))
    return c


def big_and_half_cases(d):
    """The thread-pool paths at T = 33, and 16-bit operands through Casts."""
    case, rnd, f32 = d.case, d.rnd, d.f32
    E, D, F = 4, 32, 64
    xz = [("x", "float32", ["T", D], rnd()), ("z", "float32", ["T", E], rnd(2))]
    w = [{"name": n, **f32(E, D, F), "init": {"dist": "normal", "std": 0.3, "seed": s}}
         for n, s in (("wg", 31), ("w1", 32))]
    chain = [node("route", "moe.TopKRoute", ["z"], ["e", "w"], {"k": 2}),
             node("disp", "moe.Dispatch", ["x", "e", "w"], ["rows", "off", "rtok", "rw"], {"num_experts": E}),
             node("gout", "moe.ExpertMatMul", ["rows", "off", "wg"], ["go"])]
    c = [dict(case("expert_matmul_grad_big", "moe.ExpertMatMulGrad", xz, ["grows", "gW"], "gemm",
                   inits=w, extra_nodes=chain), op_inputs=["go", "rows", "off", "w1"])]
    lean = [chain[0], dict(chain[1], attrs={"num_experts": E, "materialize": 0}),
            node("gout", "moe.GatherMatMul", ["x", "rtok", "off", "wg"], ["go"])]
    c.append(dict(case("gather_matmul_grad_big", "moe.GatherMatMulGrad", xz, ["gx", "gW"], "gemm",
                       inits=w, extra_nodes=lean), op_inputs=["go", "x", "rtok", "off", "w1"]))
    Db = 256
    cb = [node("route", "moe.TopKRoute", ["z"], ["e", "w"], {"k": 2}),
          node("disp", "moe.Dispatch", ["x", "e", "w"], ["rows", "off", "rtok", "rw"], {"num_experts": E})]
    c.append(dict(case("combine_grad_big", "moe.CombineGrad",
                       [("x", "float32", ["T", Db], rnd()), xz[1], ("gy", "float32", ["T", Db], rnd())],
                       ["gout", "grw"], "arith", extra_nodes=cb),
                  op_inputs=["gy", "rows", "rtok", "rw", "off", "x"]))
    half = [node("route", "moe.TopKRoute", ["z"], ["e", "w"], {"k": 2}),
            node("xh", "Cast", ["x"], ["x16"], {"to": 10}),
            node("wh", "Cast", ["w1"], ["w16"], {"to": 10}),
            node("gh", "Cast", ["wg"], ["g16"], {"to": 10}),
            node("disp", "moe.Dispatch", ["x16", "e", "w"], ["rows", "off", "rtok", "rw"], {"num_experts": E}),
            node("gout", "moe.ExpertMatMul", ["rows", "off", "g16"], ["go"]),
            node("gxr", "moe.ExpertMatMulGrad", ["go", "rows", "off", "w16"], ["grows", "gW"]),
            node("gd", "moe.DispatchGrad", ["grows", "rw", "x16", "e", "w"], ["gx", "gwt"], {"num_experts": E})]
    for name, src in (("expert_matmul_grad_f16_gW", "gW"), ("dispatch_grad_f16_gx", "gx")):
        c.append(dict(case(name, "Cast", xz, ["y"], "gemm", {"to": 1}, w, half), op_inputs=[src]))
    half_gather = half[:4] + [
        node("disp", "moe.Dispatch", ["x16", "e", "w"], ["rows", "off", "rtok", "rw"],
             {"num_experts": E, "materialize": 0}),
        node("gout", "moe.GatherMatMul", ["x16", "rtok", "off", "g16"], ["go"]),
        node("gxr", "moe.GatherMatMulGrad", ["go", "x16", "rtok", "off", "w16"], ["gx", "gW"])]
    for name, src in (("gather_matmul_f16_out", "go"), ("gather_matmul_grad_f16_gx", "gx"),
                      ("gather_matmul_grad_f16_gW", "gW")):
        c.append(dict(case(name, "Cast", xz, ["y"], "gemm", {"to": 1}, w, half_gather), op_inputs=[src]))
    return c


def panel_cases(d):
    """The f32 expert gradients through the micro-kernel with experts of more rows than a
    panel holds (64 on AVX-512, 8 on NEON): 0 rows; 70 (a whole panel, then a few rows
    by dot products); 100 (a panel and a padded one); 80. F = 300 is longer than a
    K chunk and not a whole number of panels. Fixed shapes: a token-choice router over
    T <= 33 tokens cannot give an expert more than 33 rows."""
    case, rnd, f32 = d.case, d.rnd, d.f32
    E, D, F, N, X = 4, 40, 300, 250, 60
    off = ("off", "int32", [E + 1], lambda rng, shape: np.array([0, 0, 70, 170, 250], np.int32))
    go = ("go", "float32", [N, F], rnd())
    w = [{"name": "w1", **f32(E, D, F), "init": {"dist": "normal", "std": 0.3, "seed": 41}}]
    rtok = ("rtok", "int32", [N], d.ints(0, X, np.int32))
    t = ("t", "float32", ["T", 1], rnd())  # unread: the harness runs every case at T = 1, 7, 33
    return [dict(case("expert_matmul_grad_panels", "moe.ExpertMatMulGrad",
                      [go, ("rows", "float32", [N, D], rnd()), off, t], ["grows", "gW"], "gemm", inits=w),
                 op_inputs=["go", "rows", "off", "w1"]),
            dict(case("gather_matmul_grad_panels", "moe.GatherMatMulGrad",
                      [go, ("x", "float32", [X, D], rnd()), rtok, off, t], ["gx", "gW"], "gemm", inits=w),
                 op_inputs=["go", "x", "rtok", "off", "w1"])]


def cases():
    import diff_ops as d  # diff_ops imports this module: import it when called

    return router_cases(d) + data_cases(d) + big_and_half_cases(d) + panel_cases(d)
