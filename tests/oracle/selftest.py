#!/usr/bin/python3
"""The oracle reproduces every worked example of ROUTING.md §6."""
import sys
import numpy as np
from moe_ref import *

Z = np.array([[2.0, 1.0, 0.5, -1.0], [0.1, 0.2, 0.3, 0.4], [3.0, 2.9, -2.0, 0.0],
              [1.0, 1.0, 1.0, 1.0], [2.5, -0.5, 0.0, 0.3], [0.0, 2.0, 1.9, -3.0]], np.float32)
results = []


def check(name, cond):
    results.append(bool(cond))
    if not cond:
        print("FAIL", name)


def close(a, b, tol=1e-4):
    return np.allclose(np.asarray(a, float), np.asarray(b, float), atol=tol, rtol=0)


e, w, ch = topk_route(Z, 1, capacity=2)
check("switch choices", list(ch[:, 0]) == [0, 3, 0, 0, 0, 1])
check("switch drops", list(e[:, 0]) == [0, 3, 0, -1, -1, 1])
check("switch weights", close(w[:, 0], [.6095, .2887, .5098, 0, 0, .4885]))
check("switch lbl", close(load_balance_loss(softmax(Z), ch), 1.355914, 1e-6))
check("z-loss", close(z_loss(Z), 7.14598, 1e-5))
e, w, _ = topk_route(Z, 1, capacity=2, order="priority")
check("bpr", list(e[:, 0]) == [0, 3, -1, -1, 0, 1])
e, w, _ = topk_route(Z, 2, normalize=1, capacity=3)
check("gshard", close(dense_combine(e, w, 4), [[.7311, .2689, 0, 0], [0, 0, .4750, .5250], [.5250, .4750, 0, 0],
                                                [.5, 0, 0, 0], [0, 0, 0, .0998], [0, .5250, .4750, 0]]))
e, w, _ = topk_route(Z, 2, capacity=3)
c = dense_combine(e, w, 4)
check("st-moe", close(c[0], [.6095, .2242, 0, 0]) and close(c[3], [.25, 0, 0, 0]))
e, w, _ = topk_route(Z, 2, score="softmax_selected")
c = dense_combine(e, w, 4)
check("mixtral", close(c[3], [.5, .5, 0, 0]) and close(c[4], [.9002, 0, 0, .0998]))
tok, _ = expert_choice(Z, 3)
check("expert choice", [sorted(r) for r in tok.tolist()] == [[0, 2, 4], [2, 3, 5], [1, 3, 5], [1, 3, 4]])
check("expert choice per token", list(np.bincount(tok.ravel(), minlength=6)) == [1, 2, 2, 3, 2, 2])
e, w = topp_route(Z, 0.4)
check("top-p", list((e >= 0).sum(axis=1)) == [1, 2, 1, 2, 1, 1])
check("entropy loss", close(entropy_loss(softmax(Z)), 1.033643, 1e-6))
zb = np.array([[np.log(2), 0, 0, -100]], np.float32)
check("top-p boundary", (topp_route(zb, 0.5)[0] >= 0).sum() == 1 and (topp_route(zb, 0.5, inclusive=0)[0] >= 0).sum() == 2)
e, w, ch = topk_route(Z, 2)
check("deepseekmoe", close(dense_combine(e, w, 4)[0], [.6095, .2242, 0, 0]))
check("seq balance", close(load_balance_loss(softmax(Z), ch, scale="E_over_K"), 1.128272, 1e-6))
e, w, _ = topk_route(Z, 2, bias=[0, 0, 0.3, 0], score="sigmoid", normalize=1, scale=2.5, groups=2, topk_groups=1)
c = dense_combine(e, w, 4)
check("deepseek-v3", close(c[0], [1.3661, 1.1339, 0, 0]) and close(c[3], [0, 0, 1.25, 1.25]))
e, w = gw_route(Z, True, 1, 1.3, 1, capacity=2)
c = dense_combine(e, w, 4)
check("gw broadcast", close(c[1], [.2138, .2363, .2612, .2887]) and close(c[3], [0, 0, 0, 0]))
p = softmax(Z)
H = -np.sum(p * np.log(p + np.float32(1e-5)), axis=1)
check("gw entropies", close(H, [1.0144, 1.3800, 0.8131, 1.3863, 0.6987, 0.9092]))
print(f"{sum(results)} passed, {len(results) - sum(results)} failed")
sys.exit(0 if all(results) else 1)
