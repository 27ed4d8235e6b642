"""Differential cases (tests/native/diff_ops.py) for the gradients of losses, and the optimizers.

Every loss gradient with each of its options (masks, LBL scale/count/scope, ignore_index,
class weights, every reduction, spatial scores, f16), and SGD and AdamW in f32 and through
Casts to 16-bit types. The *_big cases reach the kernels' thread-pool paths at T = 33."""
import numpy as np


def cases():
    import diff_ops as d  # diff_ops imports this module: import it when called

    case, rnd, pos, ints, bools = d.case, d.rnd, d.pos, d.ints, d.bools
    E = 6
    gy = ("gy", "float32", [], rnd())
    mask = ("mask", "bool", ["T"], bools())
    probs = ("p", "float32", ["T", E], pos())
    choice = ("e", "int32", ["T", 2], ints(-1, E, np.int32))  # -1: a dropped choice
    lbl = "moe.LoadBalanceLossGrad"
    c = [case("lb_loss_grad", lbl, [gy, probs, choice], ["g"], "arith"),
         case("lb_loss_grad_mask_e_over_k_first", lbl, [gy, probs, choice, mask], ["g"], "arith",
              {"scale": "E_over_K", "count": "first_rank_only", "coef": 0.01}),
         case("lb_loss_grad_sequence", lbl, [gy, probs, choice, mask], ["g"], "arith",
              {"scope": "sequence", "seq_len": 1, "coef": 0.5}),
         case("z_loss_grad", "moe.ZLossGrad", [gy, ("z", "float32", ["T", E], rnd(2))], ["g"], "transc"),
         case("z_loss_grad_mask", "moe.ZLossGrad", [gy, ("z", "float32", ["T", E], rnd(2)), mask], ["g"],
              "transc", {"coef": 0.1}),
         case("z_loss_grad_big", "moe.ZLossGrad", [gy, ("z", "float32", ["T", 1024], rnd(2)), mask], ["g"],
              "transc"),
         case("entropy_loss_grad", "moe.EntropyLossGrad", [gy, probs], ["g"], "transc"),
         case("entropy_loss_grad_mask", "moe.EntropyLossGrad", [gy, probs, mask], ["g"], "transc",
              {"coef": 0.25})]
    c += training_loss_cases(d, gy)
    by = {x["name"]: x for x in c}
    c += [dirty(by["lb_loss_grad_mask_e_over_k_first"], "p"), dirty(by["z_loss_grad_mask"], "z"),
          dirty(by["entropy_loss_grad_mask"], "p"), dirty(by["ce_grad_mean_weights_ignore"], "s")]
    c += optimizer_cases(d)
    return c


def dirty(cs, x):
    """The case again with its gradient in a planned temp, in bytes an earlier temp filled
    (the first-fit plan puts it there): masked rows and ignored labels must be written as
    zeros, not left as they were. x, the differentiable input, becomes x * exp(x)."""
    node = {"name": "grad", "op": cs["op"], "inputs": [i[0] for i in cs["inputs"]], "outputs": ["gt"],
            "attrs": cs["attrs"]}
    node["inputs"] = [x + "q" if i == x else i for i in node["inputs"]]
    pre = [{"name": "junk", "op": "Exp", "inputs": [x], "outputs": ["junk"]},
           {"name": "xq", "op": "Mul", "inputs": [x, "junk"], "outputs": [x + "q"]}]
    return dict(cs, name=cs["name"] + "_dirty", op="Neg", op_inputs=["gt"], attrs={},
                extra_nodes=pre + [node])


def training_loss_cases(d, gy):
    case, rnd, ints, f32 = d.case, d.rnd, d.ints, d.f32
    C = 5
    ce = "moe.SoftmaxCrossEntropyLossGrad"
    scores = ("s", "float32", ["T", C], rnd(3))
    labels = ("l", "int64", ["T"], ints(0, C))
    labels_ig = ("l", "int64", ["T"], ints(-1, C))
    gy_none = ("gy", "float32", ["T"], rnd())
    w = {"name": "w", **f32(C), "init": {"dist": "uniform", "low": 0.25, "high": 2.0, "seed": 11}}
    wslot = ("w", None, None, None)
    pt = [("p", "float32", ["T", 4, 3], rnd()), ("t", "float32", ["T", 4, 3], rnd())]
    c = [case("ce_grad_mean", ce, [gy, scores, labels], ["g"], "transc"),
         case("ce_grad_sum_ignore", ce, [gy, scores, labels_ig], ["g"], "transc",
              {"reduction": "sum", "ignore_index": -1}),
         case("ce_grad_none_weights_ignore", ce, [gy_none, scores, ("l", "int32", ["T"], ints(0, C, np.int32)),
                                                  wslot], ["g"], "transc",
              {"reduction": "none", "ignore_index": 2}, [w]),
         case("ce_grad_mean_weights_ignore", ce, [gy, scores, labels_ig, wslot], ["g"], "transc",
              {"ignore_index": -1}, [w]),
         case("ce_grad_spatial", ce, [("gy", "float32", ["T", 3], rnd()), ("s", "float32", ["T", 4, 3], rnd(3)),
                                      ("l", "int32", ["T", 3], ints(0, 4, np.int32))], ["g"], "transc",
              {"reduction": "none"}),
         case("ce_grad_big", ce, [gy, ("s", "float32", ["T", 1000], rnd(3)), ("l", "int64", ["T"], ints(0, 1000))],
              ["g"], "transc"),
         case("ce_grad_f16", ce, [gy, scores, labels], ["g"], "transc",
              extra_nodes=[cast("cs", "s", "sh", 10), cast("cg", "gy", "gyh", 10)]),
         case("mse_grad_mean", "moe.MSELossGrad", [gy] + pt, ["g"], "arith"),
         case("mse_grad_sum", "moe.MSELossGrad", [gy] + pt, ["g"], "arith", {"reduction": "sum"}),
         case("mse_grad_none", "moe.MSELossGrad", [("gy", "float32", ["T", 4, 3], rnd())] + pt, ["g"], "arith",
              {"reduction": "none"}),
         case("mse_grad_bf16", "moe.MSELossGrad", [gy] + pt, ["g"], "arith",
              extra_nodes=[cast("cg", "gy", "gyh", 16), cast("cp", "p", "ph", 16), cast("ct", "t", "th", 16)])]
    c[6]["op_inputs"] = ["gyh", "sh", "l"]
    c[10]["op_inputs"] = ["gyh", "ph", "th"]
    return c


def cast(name, src, dst, code):
    return {"name": name, "op": "Cast", "inputs": [src], "outputs": [dst], "attrs": {"to": code}}


def optimizer_cases(d):
    case, rnd, pos, ints = d.case, d.rnd, d.pos, d.ints

    def state(n, shape, gen=rnd()):
        return (n, "float32", shape, gen)

    def sgd(shape):
        return [state("p", shape), state("gr", shape), state("v", shape)]

    def adamw(shape):
        return [state("p", shape), state("gr", shape), state("m", shape, rnd(0.1)),
                state("v", shape, pos()), ("step", "int64", [1], ints(1, 20))]

    big = ["T", 2048]
    c = [case("sgd", "moe.SGD", sgd(["T", 7]), ["p2", "v2"], "arith", {"lr": 0.1}),
         case("sgd_momentum_decay", "moe.SGD", sgd(["T", 7]), ["p2", "v2"], "arith",
              {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
         case("sgd_big", "moe.SGD", sgd(big), ["p2", "v2"], "arith", {"lr": 0.05, "momentum": 0.9}),
         case("sgd_f16", "moe.SGD", sgd(["T", 7]), ["p2", "v2"], "arith",
              {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
              extra_nodes=[cast("c" + n, n, n + "h", 10) for n in ("p", "gr", "v")]),
         case("adamw", "moe.AdamW", adamw(["T", 7]), ["p2", "m2", "v2"], "transc", {"lr": 0.01}),
         case("adamw_options", "moe.AdamW", adamw(["T", 3, 5]), ["p2", "m2", "v2"], "transc",
              {"lr": 0.003, "beta1": 0.8, "beta2": 0.99, "epsilon": 1e-6, "weight_decay": 0.1}),
         case("adamw_big", "moe.AdamW", adamw(big), ["p2", "m2", "v2"], "transc", {"lr": 0.01}),
         case("adamw_bf16", "moe.AdamW", adamw(["T", 7]), ["p2", "m2", "v2"], "transc", {"lr": 0.01},
              extra_nodes=[cast("c" + n, n, n + "h", 16) for n in ("p", "gr", "m", "v")])]
    c[3]["op_inputs"] = ["ph", "grh", "vh"]
    c[7]["op_inputs"] = ["ph", "grh", "mh", "vh", "step"]
    return c
