#!/usr/bin/python3
"""Writes the bundled example models (examples/<name>/model.json) and a small input
for each (x.npy, seeded). Weights come from seeded `init` recipes, so every example
runs as it is. Run with /usr/bin/python3 (Debian's numpy)."""
import json, os
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
T_MAX = 64


def normal(name, shape, std, seed):
    return {"name": name, "dtype": "float32", "shape": shape,
            "init": {"dist": "normal", "std": std, "seed": seed}}


def ones(name, shape):
    return {"name": name, "dtype": "float32", "shape": shape, "init": {"dist": "ones"}}


def node(name, op, inputs, outputs, **attrs):
    n = {"name": name, "op": op, "inputs": inputs, "outputs": outputs}
    if attrs:
        n["attrs"] = attrs
    return n


def model(name, doc, D, inits, nodes, outputs, extra_inputs=()):
    return {"moec": 1, "name": name, "doc": doc, "symbols": {"T": {"max": T_MAX}},
            "inputs": [{"name": "x", "dtype": "float32", "shape": ["T", D]}, *extra_inputs],
            "outputs": outputs, "initializers": inits, "nodes": nodes}



def expert_chain(x, idx, E, act_op, out, **dispatch_attrs):
    """Dispatch -> ExpertMatMul(up) -> activation -> ExpertMatMul(down) -> Combine."""
    return [
        node("dispatch", "moe.Dispatch", [x, idx, "weight"],
             ["rows", "offsets", "row_token", "row_weight"], num_experts=E, **dispatch_attrs),
        node("up", "moe.ExpertMatMul", ["rows", "offsets", "w_up"], ["u"]),
        node(act_op[0], act_op[1], ["u"], ["a"]),
        node("down", "moe.ExpertMatMul", ["a", "offsets", "w_down"], ["o"]),
        node("combine", "moe.Combine", ["o", "row_token", "row_weight", "offsets", x], [out]),
    ]


def mixtral():
    E, D, F = 8, 64, 128
    inits = [ones("norm_scale", [D]), normal("w_router", [D, E], 0.3, 1),
             normal("w_gate", [E, D, F], 0.15, 2), normal("w_up", [E, D, F], 0.15, 3),
             normal("w_down", [E, F, D], 0.1, 4)]
    nodes = [
        node("norm", "RMSNormalization", ["x", "norm_scale"], ["h"], epsilon=1e-5),
        node("router", "MatMul", ["h", "w_router"], ["logits"]),
        node("route", "moe.TopKRoute", ["logits"], ["expert", "weight"], k=2, score="softmax_selected"),
        node("dispatch", "moe.Dispatch", ["h", "expert", "weight"],
             ["rows", "offsets", "row_token", "row_weight"], num_experts=E),
        node("gate", "moe.ExpertMatMul", ["rows", "offsets", "w_gate"], ["g"]),
        node("up", "moe.ExpertMatMul", ["rows", "offsets", "w_up"], ["u"]),
        node("silu", "moe.Silu", ["g"], ["a"]),
        node("glu", "Mul", ["a", "u"], ["m"]),
        node("down", "moe.ExpertMatMul", ["m", "offsets", "w_down"], ["o"]),
        node("combine", "moe.Combine", ["o", "row_token", "row_weight", "offsets", "h"], ["moe_out"]),
        node("residual", "Add", ["x", "moe_out"], ["y"]),
    ]
    return model("mixtral_block", "Mixtral-style block: RMSNorm, top-2 softmax over the selected "
                 "logits, SwiGLU experts (E=8), residual.", D, inits, nodes, ["y"])


def switch():
    E, D, F = 4, 32, 64
    inits = [normal("w_router", [D, E], 0.3, 11), normal("w_up", [E, D, F], 0.2, 12),
             normal("w_down", [E, F, D], 0.15, 13)]
    nodes = [
        node("router", "MatMul", ["x", "w_router"], ["logits"]),
        node("route", "moe.TopKRoute", ["logits"], ["expert", "weight", "choice"], k=1, capacity=6),
        *expert_chain("x", "expert", E, ("relu", "Relu"), "y"),
        node("probs", "Softmax", ["logits"], ["p"], axis=-1),
        node("balance", "moe.LoadBalanceLoss", ["p", "choice"], ["aux_loss"], coef=0.01),
        node("zloss", "moe.ZLoss", ["logits"], ["z_loss"], coef=0.001),
    ]
    return model("switch_ffn", "Switch top-1 with capacity 6 per expert (tokens beyond it are "
                 "dropped), ReLU experts, load-balance and z-losses.", D, inits, nodes,
                 ["y", "aux_loss", "z_loss"])


def deepseek():
    E, D, F, S = 16, 32, 16, 32
    inits = [normal("w_router", [D, E], 0.3, 21), normal("w_up", [E, D, F], 0.2, 22),
             normal("w_gate", [E, D, F], 0.2, 23), normal("w_down", [E, F, D], 0.15, 24),
             {"name": "bias", "dtype": "float32", "shape": [E],
              "data": [0.0, 0.1, 0.0, -0.1, 0.05, 0.0, 0.0, 0.2, -0.05, 0.0, 0.1, 0.0, 0.0, -0.2, 0.0, 0.05]},
             normal("shared_up", [D, S], 0.2, 25), normal("shared_gate", [D, S], 0.2, 26),
             normal("shared_down", [S, D], 0.15, 27)]
    nodes = [
        node("router", "MatMul", ["x", "w_router"], ["logits"]),
        node("moe", "moe.MoE", ["x", "logits", "w_up", "w_down", "w_gate", "bias",
                                "shared_up", "shared_down", "shared_gate"], ["y"],
             k=4, activation_type="silu", score="sigmoid", normalize_routing_weights=1,
             scale=2.5, groups=4, topk_groups=2),
    ]
    return model("deepseek_moe", "DeepSeek-style layer as one composite moe.MoE: sigmoid gating "
                 "with a selection bias, 4 groups keep 2, 16 fine-grained routed experts (k=4) "
                 "plus a shared SwiGLU expert.", D, inits, nodes, ["y"])


def expert_choice():
    E, D, F = 4, 32, 64
    inits = [normal("w_router", [D, E], 0.3, 31), normal("w_up", [E, D, F], 0.2, 32),
             normal("w_down", [E, F, D], 0.15, 33)]
    nodes = [
        node("router", "MatMul", ["x", "w_router"], ["logits"]),
        node("route", "moe.ExpertChoiceRoute", ["logits"], ["token", "weight"], capacity=16),
        *expert_chain("x", "token", E, ("gelu", "Gelu"), "y", source="expert_choice"),
    ]
    return model("expert_choice", "Expert choice: each of 4 experts takes its top-16 tokens; "
                 "GELU experts.", D, inits, nodes, ["y"])


def top_p():
    E, D, F = 8, 32, 32
    inits = [normal("w_router", [D, E], 0.3, 41), normal("w_up", [E, D, F], 0.2, 42),
             normal("w_down", [E, F, D], 0.15, 43)]
    nodes = [
        node("router", "MatMul", ["x", "w_router"], ["logits"]),
        node("route", "moe.TopPRoute", ["logits"], ["expert", "weight"], p=0.4, max_k=4),
        *expert_chain("x", "expert", E, ("silu", "moe.Silu"), "y"),
        node("probs", "Softmax", ["logits"], ["p"]),
        node("entropy", "moe.EntropyLoss", ["p"], ["entropy_loss"], coef=1e-4),
    ]
    return model("top_p", "Dynamic top-p routing (p=0.4, at most 4 experts) with the routing-"
                 "entropy loss.", D, inits, nodes, ["y", "entropy_loss"])


def resonance():
    E, D, F = 4, 32, 32
    inits = [normal("w_up", [E, D, F], 0.2, 51), normal("w_down", [E, F, D], 0.15, 52)]
    nodes = [
        node("route", "moe.ResonanceRoute", ["x"], ["expert", "weight"], num_experts=E, k=1, capacity=16),
        *expert_chain("x", "expert", E, ("relu", "Relu"), "y"),
    ]
    return model("resonance", "Expert-Token Resonance: cosine affinity to block gating vectors, "
                 "tokens pick their top expert, each expert keeps its 16 best.", D, inits, nodes, ["y"])


def gw():
    E, D, F, C = 4, 32, 32, 3
    inits = [normal("w_router", [D, E], 0.15, 61), normal("w_up", [E, D, F], 0.2, 62),
             normal("w_down", [E, F, D], 0.15, 63), normal("w_cls", [D, C], 0.2, 64)]
    nodes = [
        node("router", "MatMul", ["x", "w_router"], ["logits"]),
        node("route", "moe.GWRoute", ["logits"], ["expert", "weight"],
             k=1, threshold=1.2, max_broadcast=8),
        *expert_chain("x", "expert", E, ("relu", "Relu"), "moe_out"),
        node("residual", "Add", ["x", "moe_out"], ["h"]),
        node("classify", "MatMul", ["h", "w_cls"], ["y"]),
    ]
    return model("gw_finetune", "GW-MoE: top-1 routing; with --mode=train, tokens whose routing "
                 "entropy reaches 1.2 nats (at most 8) are sent to every expert.", D, inits, nodes, ["y"])


def main():
    rng = np.random.default_rng(2026)
    for m in [mixtral(), switch(), deepseek(), expert_choice(), top_p(), resonance(), gw()]:
        d = os.path.join(HERE, m["name"])
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "model.json"), "w") as f:
            json.dump(m, f, indent=1)
            f.write("\n")
        D = m["inputs"][0]["shape"][1]
        np.save(os.path.join(d, "x.npy"), rng.standard_normal((16, D)).astype(np.float32))


if __name__ == "__main__":
    main()
