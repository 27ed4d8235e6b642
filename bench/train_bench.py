#!/usr/bin/python3
"""Training-step benchmark on the Mixtral block shape: moec's compiled training step
(forward, autodiff backward, AdamW) against PyTorch autograd with torch.optim.AdamW on
the same model and weights, in the same run; plus the cost of a GW-MoE training step
(uncertain tokens broadcast to every expert) over the plain top-k one; and moec's step
against what the machine can do at most (bench/probe.c).

Shape as bench/mixtral_bench.py: T=256, D=768, F=2048, E=8, top-2 (softmax over the
selected logits), SwiGLU experts, fp32; loss: mean squared error against a fixed
target. The PyTorch side is the Hugging Face Mixtral block (per-expert nn.Linear
modules, as mixtral_bench.torch_block), so autograd makes each expert's weight gradient
alone, as a Mixtral user's training does. See docs/bench.md for what each line means.
usage: bench/setup.sh && bench/train_bench.py [--moec build/moec] [--steps 5] [--threads 2]"""
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
from mixtral_bench import D, E, F, HERE, K, T, read_safetensors, system_blas, torch_block  # noqa: E402
from probe import best, describe, probe  # noqa: E402

LR, TAU, MAX_BROADCAST = 1e-4, 1.5, 32
FLOPS = 3 * 6 * T * K * D * F  # forward + backward (2x) of the expert GEMMs
PARAMS = 3 * E * D * F + D * E  # the experts' and the router's weights
ADAMW_BYTES = 7 * 4 * PARAMS  # reads param, grad, m, v; writes param, m, v; fp32


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
    """Median seconds of a training step, and the losses of the first two steps from
    fresh weights (to check against PyTorch's)."""
    path = os.path.join(work, router + ".json")
    with open(path, "w") as f:
        json.dump(model_json(router), f)
    exe = os.path.join(work, router.split(".")[1])
    subprocess.run([moec, "build", path, "-o", exe, "--mode=train", "--lr", str(LR)], check=True)
    env = dict(os.environ, MOERT_NUM_THREADS=str(threads))
    inputs = ["--input", "x=%s/x.npy" % work, "--input", "target=%s/t.npy" % work]
    out = subprocess.run([exe, *inputs, "--steps", "2"], check=True, capture_output=True, text=True,
                         env=env).stdout
    losses = [float(v) for v in re.findall(r"loss=(\S+)", out)]
    out = subprocess.run([exe, *inputs, "--bench", str(steps)], check=True, capture_output=True, text=True,
                         env=env).stdout
    return float(re.search(r"median ([\d.]+) ms", out).group(1)) / 1e3, losses


def bench_torch(x, target, w, steps, threads):
    """Median seconds of a PyTorch training step (the Hugging Face block, autograd,
    torch.optim.AdamW) at `threads` threads, and the losses of its first two steps."""
    import torch
    torch.set_num_threads(threads)
    block = torch_block(w).train()
    opt = torch.optim.AdamW(block.parameters(), lr=LR, weight_decay=0.01)
    xt, tt = torch.from_numpy(x), torch.from_numpy(target)

    def step():
        opt.zero_grad()
        loss = torch.mean((block(xt) - tt) ** 2)
        loss.backward()
        opt.step()
        return float(loss)
    losses = [step(), step()]
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), losses


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", default=os.path.join(HERE, "..", "build", "moec"))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    moec = os.path.abspath(a.moec)
    with tempfile.TemporaryDirectory() as work:
        m = probe(work, a.threads)
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
        t_topk, loss_moec = bench_moec(moec, work, "moe.TopKRoute", a.steps, a.threads)
        t_gw, _ = bench_moec(moec, work, "moe.GWRoute", a.steps, a.threads)
        t_torch, loss_torch = bench_torch(x, target, w, a.steps, a.threads)
        t_torch1, _ = bench_torch(x, target, w, a.steps, 1)
        m = best(m, probe(work, a.threads))  # probed before and after the engines
    t_flops = FLOPS / (m["fma_gflops_n"] * 1e9)
    t_bytes = ADAMW_BYTES / (m["read_gbs"] * 1e9)
    bound = t_flops + t_bytes
    torch_best = min((t_torch, a.threads), (t_torch1, 1))
    print(describe(m))
    print("Mixtral block training step T=%d D=%d F=%d E=%d k=%d fp32, AdamW, median of %d steps"
          % (T, D, F, E, K, a.steps))
    print("  bound    %9.2f ms  = %.1f GFLOP at the %d-thread peak (%.2f ms) + AdamW's %.0f MB at %.1f GB/s "
          "(%.2f ms)" % (bound * 1e3, FLOPS / 1e9, a.threads, t_flops * 1e3, ADAMW_BYTES / 1e6, m["read_gbs"],
                         t_bytes * 1e3))
    print("  moec top-k  %d thr  %8.2f ms  %6.1f GFLOP/s  %.2fx the bound" % (
        a.threads, t_topk * 1e3, FLOPS / t_topk / 1e9, t_topk / bound))
    print("  moec GW     %d thr  %8.2f ms  (tau %.1f nats, at most %d broadcast tokens)"
          % (a.threads, t_gw * 1e3, TAU, MAX_BROADCAST))
    for thr, t in ((a.threads, t_torch), (1, t_torch1)):
        print("  pytorch     %d thr  %8.2f ms  %6.1f GFLOP/s  %.2fx the bound  (HF block, autograd + "
              "torch.optim.AdamW, BLAS: %s)" % (thr, t * 1e3, FLOPS / t / 1e9, t / bound, system_blas()))
    print("  moec: %.2fx the bound (%.0f%% of it), %.2fx pytorch (its best: %d thr)   GW step cost over "
          "top-k: %.2fx" % (t_topk / bound, 100 * bound / t_topk, torch_best[0] / t_topk, torch_best[1],
                            t_gw / t_topk))
    print("  loss of steps 1, 2: moec %s, pytorch %s" % (
        ", ".join("%.6f" % v for v in loss_moec), ", ".join("%.6f" % v for v in loss_torch)))
    if len(loss_moec) != 2 or not np.allclose(loss_moec, loss_torch, rtol=1e-4):
        sys.exit("moec and PyTorch train differently: not the same step")


if __name__ == "__main__":
    main()
