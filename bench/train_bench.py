#!/usr/bin/python3
"""Training-step benchmark on the Mixtral block shape: moec's compiled training step
(forward, autodiff backward, AdamW) against PyTorch autograd with torch.optim.AdamW on
the same model and weights, in the same run; plus the cost of a GW-MoE training step
(uncertain tokens broadcast to every expert) over the plain top-k one.

Shape as bench/mixtral_bench.py: T=256, D=768, F=2048, E=8, top-2 (softmax over the
selected logits), SwiGLU experts, fp32, 2 threads; loss: mean squared error against a
fixed target. usage: bench/setup.sh && bench/train_bench.py [--moec build/moec] [--steps 5]"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mixtral_bench import D, E, F, K, T, read_safetensors, system_blas  # noqa: E402

LR, TAU, MAX_BROADCAST = 1e-4, 1.5, 32


def model_json(router):
    def w(name, shape, seed):
        return {"name": name, "dtype": "float32", "shape": shape,
                "init": {"dist": "normal", "std": 0.02, "seed": seed}}
    attrs = {"k": K, "score": "softmax_selected"}
    if router == "moe.GWRoute":
        attrs.update({"threshold": TAU, "max_broadcast": MAX_BROADCAST})
    nodes = [
        {"name": "router", "op": "MatMul", "inputs": ["x", "w_router"], "outputs": ["logits"]},
        {"name": "route", "op": router, "inputs": ["logits"], "outputs": ["expert", "weight"], "attrs": attrs},
        {"name": "dispatch", "op": "moe.Dispatch", "inputs": ["x", "expert", "weight"],
         "outputs": ["rows", "offsets", "row_token", "row_weight"], "attrs": {"num_experts": E}},
        {"name": "gate", "op": "moe.ExpertMatMul", "inputs": ["rows", "offsets", "w_gate"], "outputs": ["g"]},
        {"name": "up", "op": "moe.ExpertMatMul", "inputs": ["rows", "offsets", "w_up"], "outputs": ["u"]},
        {"name": "act", "op": "moe.Silu", "inputs": ["g"], "outputs": ["a"]},
        {"name": "glu", "op": "Mul", "inputs": ["a", "u"], "outputs": ["h"]},
        {"name": "down", "op": "moe.ExpertMatMul", "inputs": ["h", "offsets", "w_down"], "outputs": ["o"]},
        {"name": "combine", "op": "moe.Combine", "inputs": ["o", "row_token", "row_weight", "offsets", "x"],
         "outputs": ["y"]},
        {"name": "loss", "op": "MSELoss", "inputs": ["y", "target"], "outputs": ["loss"]}]
    return {"moec": 1, "name": "train_block", "symbols": {"T": {"max": T}},
            "inputs": [{"name": "x", "dtype": "float32", "shape": ["T", D]},
                       {"name": "target", "dtype": "float32", "shape": ["T", D]}],
            "outputs": ["loss"],
            "initializers": [w("w_router", [D, E], 1), w("w_gate", [E, D, F], 2), w("w_up", [E, D, F], 3),
                             w("w_down", [E, F, D], 4)],
            "nodes": nodes}


def bench_moec(moec, work, router, steps, threads):
    path = os.path.join(work, router + ".json")
    with open(path, "w") as f:
        json.dump(model_json(router), f)
    exe = os.path.join(work, router.split(".")[1])
    subprocess.run([moec, "build", path, "-o", exe, "--mode=train", "--lr", str(LR)], check=True)
    env = dict(os.environ, MOERT_NUM_THREADS=str(threads))
    out = subprocess.run([exe, "--input", "x=%s/x.npy" % work, "--input", "target=%s/t.npy" % work,
                          "--bench", str(steps)], check=True, capture_output=True, text=True, env=env).stdout
    return float(re.search(r"median ([\d.]+) ms", out).group(1)) / 1e3


def bench_torch(x, target, w, steps, threads):
    import torch
    torch.set_num_threads(threads)
    params = {n: torch.nn.Parameter(torch.from_numpy(np.array(w[n]))) for n in
              ("w_router", "w_gate", "w_up", "w_down")}
    opt = torch.optim.AdamW(params.values(), lr=LR, weight_decay=0.01)
    xt, tt = torch.from_numpy(x), torch.from_numpy(target)

    def step():  # the Hugging Face Mixtral sparse block, autograd, AdamW
        opt.zero_grad()
        z = xt @ params["w_router"]
        top_z, top_e = torch.topk(z, K, dim=-1)
        top_w = torch.softmax(top_z, dim=-1)
        y = torch.zeros_like(xt)
        for e in range(E):
            tok, slot = torch.where(top_e == e)
            h = xt[tok]
            h = torch.nn.functional.silu(h @ params["w_gate"][e]) * (h @ params["w_up"][e])
            y = y.index_add(0, tok, (h @ params["w_down"][e]) * top_w[tok, slot, None])
        loss = torch.mean((y - tt) ** 2)
        loss.backward()
        opt.step()
    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", default=os.path.join(os.path.dirname(__file__), "..", "build", "moec"))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    moec = os.path.abspath(a.moec)
    with tempfile.TemporaryDirectory() as work:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((T, D)).astype(np.float32)
        target = rng.standard_normal((T, D)).astype(np.float32)
        np.save(os.path.join(work, "x.npy"), x)
        np.save(os.path.join(work, "t.npy"), target)
        with open(os.path.join(work, "m.json"), "w") as f:
            json.dump(model_json("moe.TopKRoute"), f)
        subprocess.run([moec, "init-weights", os.path.join(work, "m.json"), "-o",
                        os.path.join(work, "w.safetensors")], check=True)
        w = read_safetensors(os.path.join(work, "w.safetensors"))
        t_topk = bench_moec(moec, work, "moe.TopKRoute", a.steps, a.threads)
        t_gw = bench_moec(moec, work, "moe.GWRoute", a.steps, a.threads)
        t_torch = bench_torch(x, target, w, a.steps, a.threads)
    flops = 3 * 6 * T * K * D * F  # forward + backward (2x) of the expert GEMMs
    print("Mixtral block training step T=%d D=%d F=%d E=%d k=%d fp32, AdamW, %d threads, median of %d"
          % (T, D, F, E, K, a.threads, a.steps))
    print("  moec top-k  %8.2f ms  %6.1f GFLOP/s" % (t_topk * 1e3, flops / t_topk / 1e9))
    print("  moec GW     %8.2f ms  (tau %.1f nats, at most %d broadcast tokens)" % (t_gw * 1e3, TAU, MAX_BROADCAST))
    print("  pytorch     %8.2f ms  %6.1f GFLOP/s  (autograd + torch.optim.AdamW, BLAS: %s)"
          % (t_torch * 1e3, flops / t_torch / 1e9, system_blas()))
    print("  moec / pytorch speed: %.2fx   GW step cost over top-k: %.2fx" % (t_torch / t_topk, t_gw / t_topk))


if __name__ == "__main__":
    main()
