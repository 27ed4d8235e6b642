#!/usr/bin/python3
"""Prefill benchmark of a Mixtral MoE block: moec's compiled code against PyTorch
(Debian's python3-torch) and ONNX Runtime (npm's onnxruntime-node) on the same weights,
in the same run.

Shape (issue 3): T=256 tokens, D=768, F=2048, E=8 experts, top-2 softmax routing with
renormalised weights, SwiGLU experts, fp32, 2 threads. FLOPs counted: 6*T*k*D*F (the
three expert projections; the router's 2*T*D*E is left out).

usage: bench/setup.sh && bench/mixtral_bench.py [--moec build/moec] [--runs 20] [--threads 2]
Prints GFLOP/s for each engine and moec's speed as a ratio over each. The PyTorch side
is the Hugging Face Mixtral sparse block (route, then per expert: gather, SwiGLU,
weighted index_add), the code a PyTorch user runs."""
import argparse
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

T, D, F, E, K = 256, 768, 2048, 8, 2
FLOPS = 6 * T * K * D * F


def model_json():
    def w(name, shape, seed):
        return {"name": name, "dtype": "float32", "shape": shape,
                "init": {"dist": "normal", "std": 0.02, "seed": seed}}
    return {"moec": 1, "name": "mixtral_prefill", "symbols": {"T": {"max": T}},
            "inputs": [{"name": "x", "dtype": "float32", "shape": ["T", D]}], "outputs": ["y"],
            "initializers": [w("w_router", [D, E], 1), w("w_gate", [E, D, F], 2), w("w_up", [E, D, F], 3),
                             w("w_down", [E, F, D], 4)],
            "nodes": [{"name": "router", "op": "MatMul", "inputs": ["x", "w_router"], "outputs": ["logits"]},
                      {"name": "moe", "op": "moe.MoE",
                       "inputs": ["x", "logits", "w_up", "w_down", "w_gate"], "outputs": ["y"],
                       "attrs": {"k": K, "activation_type": "silu", "normalize_routing_weights": 1}}]}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, t in header.items():
            if name == "__metadata__":
                continue
            a, b = t["data_offsets"]
            f.seek(base + a)
            out[name] = np.frombuffer(f.read(b - a), dtype=np.float32).reshape(t["shape"])
    return out


def bench_moec(moec, work, runs, threads):
    model = os.path.join(work, "model.json")
    exe = os.path.join(work, "model")
    t0 = time.time()
    subprocess.run([moec, "build", model, "-o", exe], check=True)
    build_s = time.time() - t0
    env = dict(os.environ, MOERT_NUM_THREADS=str(threads))
    out = subprocess.run([exe, "--input", "x=%s/x.npy" % work, "--output", "y=%s/y.npy" % work,
                          "--bench", str(runs)], check=True, capture_output=True, text=True, env=env).stdout
    m = re.search(r"min ([\d.]+) ms, median ([\d.]+) ms, max ([\d.]+) ms", out)
    if not m:
        sys.exit("unexpected driver output: " + out)
    return float(m.group(2)) / 1e3, build_s, np.load(os.path.join(work, "y.npy"))


def torch_block(w):
    """The Hugging Face Mixtral sparse MoE block, fp32, as a module (ONNX export too)."""
    import torch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for n in ("w_router", "w_gate", "w_up", "w_down"):
                self.register_buffer(n, torch.from_numpy(np.array(w[n])))

        def forward(self, x):
            probs = torch.softmax(x @ self.w_router, dim=-1)
            top_w, top_e = torch.topk(probs, K, dim=-1)
            top_w = top_w / top_w.sum(dim=-1, keepdim=True)
            y = torch.zeros_like(x)
            for e in range(E):
                tok, slot = torch.where(top_e == e)
                h = x[tok]
                h = torch.nn.functional.silu(h @ self.w_gate[e]) * (h @ self.w_up[e])
                y = y.index_add(0, tok, (h @ self.w_down[e]) * top_w[tok, slot, None])
            return y
    return Block().eval()


def bench_torch(x, w, runs, threads):
    import torch
    torch.set_num_threads(threads)
    xt = torch.from_numpy(x)
    model = torch_block(w)

    def block():
        with torch.no_grad():
            return model(xt)
    block()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        y = block()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), y.numpy()


def bench_ort(x, w, runs, threads, work):
    """The same module exported with torch.onnx (what a user deploying with ONNX Runtime
    gets), run by npm's onnxruntime-node; None when it is not installed (bench/setup.sh)."""
    here = os.path.dirname(os.path.abspath(__file__))
    if not os.path.isdir(os.path.join(here, "node_modules", "onnxruntime-node")):
        return None
    import torch
    onnx_path = os.path.join(work, "block.onnx")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # index_add's duplicate-index caveat: indices are unique here
        torch.onnx.export(torch_block(w), (torch.from_numpy(x),), onnx_path, input_names=["x"],
                          output_names=["y"], opset_version=17)
    x.tofile(os.path.join(work, "x.bin"))
    out = subprocess.run(["node", os.path.join(here, "ort_run.js"), onnx_path, os.path.join(work, "x.bin"),
                          str(T), str(D), str(runs), str(threads), os.path.join(work, "y_ort.bin")],
                         check=True, capture_output=True, text=True, cwd=here).stdout
    t = float(re.search(r"median_ms ([\d.]+)", out).group(1)) / 1e3
    return t, np.fromfile(os.path.join(work, "y_ort.bin"), dtype=np.float32).reshape(T, D)


def system_blas():
    """Which library Debian's libblas.so.3 alternative points to (torch uses it)."""
    try:
        return os.path.realpath("/etc/alternatives/libblas.so.3-x86_64-linux-gnu").split("/")[-2]
    except OSError:
        return "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", default=os.path.join(os.path.dirname(__file__), "..", "build", "moec"))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        with open(os.path.join(work, "model.json"), "w") as f:
            json.dump(model_json(), f)
        x = np.random.default_rng(0).standard_normal((T, D)).astype(np.float32)
        np.save(os.path.join(work, "x.npy"), x)
        subprocess.run([a.moec, "init-weights", os.path.join(work, "model.json"), "-o",
                        os.path.join(work, "w.safetensors")], check=True)
        weights = read_safetensors(os.path.join(work, "w.safetensors"))
        t_moec, build_s, y_moec = bench_moec(os.path.abspath(a.moec), work, a.runs, a.threads)
        t_torch, y_torch = bench_torch(x, weights, a.runs, a.threads)
        ort = bench_ort(x, weights, a.runs, a.threads, work)
    diff = float(np.abs(y_moec - y_torch).max())
    print("Mixtral prefill block T=%d D=%d F=%d E=%d k=%d fp32, %d threads, median of %d runs"
          % (T, D, F, E, K, a.threads, a.runs))
    print("  moec     %8.2f ms  %6.1f GFLOP/s  (moec build: %.1f s)" % (t_moec * 1e3, FLOPS / t_moec / 1e9, build_s))
    print("  pytorch  %8.2f ms  %6.1f GFLOP/s  (torch %s, BLAS: %s)" % (
        t_torch * 1e3, FLOPS / t_torch / 1e9, __import__("torch").__version__, system_blas()))
    if ort:
        print("  onnxrt   %8.2f ms  %6.1f GFLOP/s  (onnxruntime-node, torch.onnx export)"
              % (ort[0] * 1e3, FLOPS / ort[0] / 1e9))
    print("  moec / pytorch speed: %.2fx   max |y_moec - y_torch| = %.2e" % (t_torch / t_moec, diff))
    if ort:
        diff = max(diff, float(np.abs(y_moec - ort[1]).max()))
        print("  moec / onnxrt speed:  %.2fx   max |y_moec - y_ort| = %.2e"
              % (ort[0] / t_moec, float(np.abs(y_moec - ort[1]).max())))
    else:
        print("  onnxrt: not installed (run bench/setup.sh)")
    if diff > 1e-3:
        sys.exit("the engines disagree: not the same model")


if __name__ == "__main__":
    main()
