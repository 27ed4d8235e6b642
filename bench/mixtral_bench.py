#!/usr/bin/python3
"""Speed of a Mixtral MoE block: moec's compiled code against PyTorch (Debian's
python3-torch) and ONNX Runtime (npm's onnxruntime-node) on the same weights, in the
same run, next to what the machine can do at most (bench/probe.c).

Shape (issue 3): D=768, F=2048, E=8 experts, top-2 softmax routing with renormalised
weights, SwiGLU experts, fp32. Prefill: T=256 tokens. Decode: T=1 and T=4, each timed
call on the next of POOL token batches (ordered so that neighbours share few experts), so
that a call reads the weights of the experts its tokens route to instead of finding the
last call's in cache. FLOPs counted:
6*T*k*D*F (the three expert projections; the router's 2*T*D*E is left out).

usage: bench/setup.sh && bench/mixtral_bench.py [--moec build/moec] [--runs 20] [--threads 2]
                                               [--weight-dtype bf16|f16|int8|int4[:G][:zp]]
--weight-dtype adds a "moec <dtype>" engine: the same model compiled with that
--weight-dtype (expert weights in 16 bits, int8 or int4, docs/backend.md), timed in the
same run, and "pytorch bf16" (the block in bfloat16, at 1 and 2 threads); the moec
engine's decode lines compare with the weight-read bound of its stored bytes (values,
scales and zero points), and its output is compared with moec's f32 output. For int8
and int4 also "onnxrt <dtype>": the ONNX export with its expert MatMuls rewritten as ONNX
Runtime's MatMulNBits, weights quantized by ONNX Runtime's rules (bench/ort_quant.py).
See docs/bench.md for what each line means. The PyTorch side is the Hugging Face Mixtral
sparse block (gate Linear, a ModuleList of experts with w1/w2/w3 Linear layers; route,
then per expert: gather, SwiGLU, weighted index_add), the code a PyTorch user runs; the
ONNX Runtime side is the same module exported with torch.onnx."""
import argparse
import copy
import glob
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from probe import best, describe, probe  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
T, D, F, E, K = 256, 768, 2048, 8, 2
DECODE_T = (1, 4)
POOL = 64  # decode batches rotated through
ORT_LEVELS = (0, 4)  # MatMulNBits' accuracy_level: A in f32, A quantized to int8 per block
EXPERT_BYTES = 3 * D * F * 4  # w1, w2, w3 of one expert, fp32
NAME = "mixtral_block"


def flops(t):
    return 6 * t * K * D * F


def model_json():
    def w(name, shape, seed):
        return {"name": name, "dtype": "float32", "shape": shape,
                "init": {"dist": "normal", "std": 0.02, "seed": seed}}
    return {"moec": 1, "name": NAME, "symbols": {"T": {"max": T}},
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


def system_blas():
    """Which library Debian's libblas.so.3 alternative points to (torch uses it)."""
    links = glob.glob("/etc/alternatives/libblas.so.3-*")
    return os.path.realpath(links[0]).split("/")[-2] if links else "unknown"


# ---- moec: `moec compile` and bench/rotate.c ----

def build_rotate(moec, work, flags=(), tag=""):
    """Compiles the model (with flags) and links bench/rotate.c against it; returns
    (exe, compile s)."""
    model = os.path.join(work, "model.json")
    out = os.path.join(work, "build" + tag)
    os.makedirs(out, exist_ok=True)
    obj, header = os.path.join(out, NAME + ".o"), os.path.join(out, NAME + ".h")
    t0 = time.time()
    subprocess.run([moec, "compile", model, "-o", obj, "--header", header] + list(flags), check=True)
    compile_s = time.time() - t0
    exe = os.path.join(out, "rotate")
    runtime = os.path.join(HERE, "..", "runtime")
    libmoert = os.path.join(os.path.dirname(moec), "libmoert.a")
    subprocess.run([os.environ.get("CC", "cc"), "-O2", "-DMODEL=" + NAME, '-DMODEL_HEADER="%s.h"' % NAME,
                    "-I" + out, "-I" + runtime, os.path.join(HERE, "rotate.c"), obj, libmoert,
                    "-lpthread", "-lm", "-o", exe], check=True)
    return exe, compile_s


def times_of(out, who):
    m = re.search(r"times_ms ([\d. ]+)", out)
    if not m:
        sys.exit("unexpected output of %s: %s" % (who, out))
    return np.array([float(v) for v in m.group(1).split()]) / 1e3


def bench_moec(rotate, work, pool, calls, threads):
    """Per-call seconds over `calls` calls rotating through pool [P, t, D], and the
    outputs [P, t, D] of the untimed pass."""
    np.save(os.path.join(work, "pool.npy"), pool)
    y = os.path.join(work, "y_moec.npy")
    env = dict(os.environ, MOERT_NUM_THREADS=str(threads))
    out = subprocess.run([rotate, os.path.join(work, "pool.npy"), str(calls), y], check=True,
                         capture_output=True, text=True, env=env).stdout
    return times_of(out, "rotate"), np.load(y)


# ---- PyTorch ----

def torch_block(w):
    """The Hugging Face Mixtral sparse MoE block (MixtralSparseMoeBlock, fp32), with the
    bench's weights: gate [E, D]; experts[e].w1 (gate proj) and w3 (up) [F, D], w2
    (down) [D, F], as nn.Linear stores them. Returns y only (no router logits)."""
    import torch
    from torch import nn

    class Expert(nn.Module):  # MixtralBlockSparseTop2MLP
        def __init__(self):
            super().__init__()
            self.w1 = nn.Linear(D, F, bias=False)
            self.w2 = nn.Linear(F, D, bias=False)
            self.w3 = nn.Linear(D, F, bias=False)

        def forward(self, h):
            return self.w2(nn.functional.silu(self.w1(h)) * self.w3(h))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = nn.Linear(D, E, bias=False)
            self.experts = nn.ModuleList(Expert() for _ in range(E))

        def forward(self, x):
            probs = torch.softmax(self.gate(x), dim=-1)
            top_w, top_e = torch.topk(probs, K, dim=-1)
            top_w = top_w / top_w.sum(dim=-1, keepdim=True)
            expert_mask = nn.functional.one_hot(top_e, num_classes=E).permute(2, 1, 0)
            y = torch.zeros_like(x)
            for e in range(E):
                slot, tok = torch.where(expert_mask[e])
                h = self.experts[e](x[tok]) * top_w[tok, slot, None]
                y = y.index_add(0, tok, h)
            return y

    def param(a):
        return nn.Parameter(torch.from_numpy(np.ascontiguousarray(a)))
    block = Block()
    block.gate.weight = param(w["w_router"].T)
    for e, ex in enumerate(block.experts):
        ex.w1.weight = param(w["w_gate"][e].T)
        ex.w3.weight = param(w["w_up"][e].T)
        ex.w2.weight = param(w["w_down"][e].T)
    return block


def bench_torch(block, pool, calls, threads, dtype=None):
    """As bench_moec, in PyTorch at `threads` threads (the block and its inputs in
    `dtype` when given: bf16 weights)."""
    import torch
    torch.set_num_threads(threads)
    xs = [torch.from_numpy(x) if dtype is None else torch.from_numpy(x).to(dtype) for x in pool]
    times = []
    with torch.no_grad():
        ys = np.stack([block(x).float().numpy() for x in xs])
        for i in range(calls):
            t0 = time.perf_counter()
            block(xs[i % len(xs)])
            times.append(time.perf_counter() - t0)
    return np.array(times), ys


# ---- ONNX Runtime ----

def export_onnx(block, work):
    """The PyTorch block through torch.onnx (what a user deploying with ONNX Runtime gets),
    T left dynamic; None when onnxruntime-node is not installed (bench/setup.sh)."""
    if not os.path.isdir(os.path.join(HERE, "node_modules", "onnxruntime-node")):
        return None
    import torch
    import warnings
    path = os.path.join(work, "block.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # index_add's duplicate-index caveat: indices are unique here
        torch.onnx.export(block, (torch.zeros(T, D),), path, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "T"}, "y": {0: "T"}}, opset_version=17)
    return path


def export_nbits(onnx_path, weight_dtype, work):
    """{accuracy_level: path} of the export with ONNX Runtime's own quantized weights
    (MatMulNBits, bench/ort_quant.py) for weight_dtype, at each of ORT_LEVELS; {} without
    ONNX Runtime or for a dtype MatMulNBits has no counterpart of (bf16, f16)."""
    import ort_quant
    if not onnx_path or ort_quant.scheme(weight_dtype) is None:
        return {}
    import onnx
    model = ort_quant.nbits_model(onnx_path, weight_dtype)
    paths = {}
    for level in ORT_LEVELS:
        ort_quant.set_accuracy_level(model, level)
        paths[level] = os.path.join(work, "block_nbits%d.onnx" % level)
        onnx.save(model, paths[level])
    return paths


def run_ort(onnx_path, pool, calls, threads, work):
    """ort_run.js on the pool: the finished process."""
    pool.tofile(os.path.join(work, "pool.bin"))
    p, t, d = pool.shape
    return subprocess.run(["node", os.path.join(HERE, "ort_run.js"), onnx_path, os.path.join(work, "pool.bin"),
                           str(p), str(t), str(d), str(calls), str(threads), os.path.join(work, "y_ort.bin")],
                          capture_output=True, text=True, cwd=HERE)


def ort_result(proc, work, pool):
    """(per-call seconds, outputs [P, t, D]) of a run_ort that succeeded."""
    return times_of(proc.stdout, "ort_run.js"), np.fromfile(os.path.join(work, "y_ort.bin"),
                                                           dtype=np.float32).reshape(pool.shape)


def bench_ort(onnx_path, pool, calls, threads, work):
    """As bench_moec, in ONNX Runtime."""
    proc = run_ort(onnx_path, pool, calls, threads, work)
    if proc.returncode:
        sys.exit("ort_run.js failed:\n" + proc.stderr)
    return ort_result(proc, work, pool)


def first_error_line(stderr):
    """The first line of the exception ort_run.js reports (ONNX Runtime's own log line
    before it repeats it behind a timestamp and colour codes)."""
    lines = [re.sub(r"\x1b\[[\d;]*m", "", ln).strip() for ln in stderr.splitlines()]
    lines = [ln for ln in lines if ln]
    return next((ln for ln in lines if ln.startswith("Error")), lines[0] if lines else "no message")


def try_bench_ort(onnx_path, pool, calls, threads, work):
    """As bench_ort, or the error's first line when ONNX Runtime rejects the model (a
    contrib op or a variant of it missing from its CPU build)."""
    proc = run_ort(onnx_path, pool, calls, threads, work)
    return first_error_line(proc.stderr) if proc.returncode else ort_result(proc, work, pool)


# ---- the report ----

def routed(pool, w_router):
    """Per batch of pool [P, t, D]: the set of experts its tokens route to (top-k of the
    router's logits; softmax keeps their order)."""
    logits = pool @ w_router
    top = np.argsort(-logits, axis=-1)[..., :K]
    return [set(b.ravel().tolist()) for b in top]


def decode_pool(rng, t, w_router):
    """POOL random batches of t tokens, put in an order (greedily) where each shares as few
    experts as it can with the one before it: a call then reads other experts' weights
    than the last call left in cache. Ordering, not choosing, keeps the batches'
    routing as random tokens give it. Returns the pool [POOL, t, D] and each batch's set
    of experts."""
    pool = rng.standard_normal((POOL, t, D)).astype(np.float32)
    sets = routed(pool, w_router)
    order, left = [0], list(range(1, POOL))
    while left:
        j = min(left, key=lambda c: len(sets[c] & sets[order[-1]]))
        order.append(j)
        left.remove(j)
    return pool[order], [sets[j] for j in order]


def stored_bytes(fmt):
    """Bytes a weight of the block's expert matrices takes in --weight-dtype `fmt`: its
    value, and its share of its group's f32 scale and zero point (int8: one scale per
    column of K = D or F rows)."""
    if fmt in ("bf16", "f16"):
        return 2.0
    if fmt == "int8":
        return 1 + 4 * (2 / D + 1 / F) / 3
    parts = fmt.split(":")
    group = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 32
    return 0.5 + (4 + ("zp" in parts)) / group


def line(name, threads, t, fl, note=""):
    return "  %-8s %d thr  %8.3f ms  %7.1f GFLOP/s  %s" % (name, threads, t * 1e3, fl / t / 1e9, note)


def run_engines(a, work, moec_exe, block, onnx, pool, calls, narrow_exe=None, nbits=None):
    """{engine: (per-call seconds, outputs)} for moec at a.threads (and 1 thread for the
    prefill pool), moec with narrow weights, PyTorch at 1 and a.threads, ONNX Runtime at
    a.threads, and ONNX Runtime's MatMulNBits model at each accuracy level of `nbits`
    ({level: path}; its entry is the error line when ONNX Runtime rejects it)."""
    r = {"moec": bench_moec(moec_exe, work, pool, calls, a.threads)}
    if narrow_exe:
        import torch
        r["moec " + a.weight_dtype] = bench_moec(narrow_exe, work, pool, calls, a.threads)
        b16 = copy.deepcopy(block).to(torch.bfloat16)
        r["pytorch bf16"] = bench_torch(b16, pool, calls, a.threads, torch.bfloat16)
        r["pytorch bf16 1"] = bench_torch(b16, pool, calls, 1, torch.bfloat16)
    if pool.shape[1] == T:
        r["moec 1"] = bench_moec(moec_exe, work, pool, calls, 1)
    r["pytorch"] = bench_torch(block, pool, calls, a.threads)
    r["pytorch 1"] = bench_torch(block, pool, calls, 1)
    if onnx:
        r["onnxrt"] = bench_ort(onnx, pool, calls, a.threads, work)
    for level, path in (nbits or {}).items():
        r["onnxrt nbits %d" % level] = try_bench_ort(path, pool, calls, a.threads, work)
    return r


F32_PEERS = ("pytorch", "pytorch 1", "onnxrt")  # the engines that must agree with moec f32


def ratios(r, t_moec, threads):
    """'2.10x pytorch (its best: 2 thr), 1.52x onnxrt' and the largest output difference."""
    torch_best = min((np.median(r["pytorch"][0]), threads), (np.median(r["pytorch 1"][0]), 1))
    s = "%.2fx pytorch (its best: %d thr)" % (torch_best[0] / t_moec, torch_best[1])
    if "onnxrt" in r:
        s += ", %.2fx onnxrt" % (np.median(r["onnxrt"][0]) / t_moec)
    y = r["moec"][1]
    diff = max(float(np.abs(y - r[k][1]).max()) for k in F32_PEERS if k in r)
    return s, diff


def narrow_line(a, r, t_f32, bound=None):
    """The narrow-weight engine: time, speedup over f32 moec, output difference."""
    name = "moec " + (a.weight_dtype or "")
    if name not in r:
        return
    t = np.median(r[name][0])
    rel = np.linalg.norm(r[name][1] - r["moec"][1]) / np.linalg.norm(r["moec"][1])
    note = "" if bound is None else "%5.2fx the %s weight-read bound, " % (
        np.median(r[name][0] / bound), a.weight_dtype)
    print("  %-13s %8.3f ms  %s%.2fx moec f32; relative difference from it %.1e"
          % (name, t * 1e3, note, t_f32 / t, rel))
    for peer, thr in (("pytorch bf16", a.threads), ("pytorch bf16 1", 1)):
        tp = np.median(r[peer][0])
        rel = np.linalg.norm(r[peer][1] - r["moec"][1]) / np.linalg.norm(r["moec"][1])
        print("  %-13s %8.3f ms  %d thr: moec %s is %.2fx it; its relative difference from f32 %.1e"
              % (peer.rsplit(" 1", 1)[0], tp * 1e3, thr, a.weight_dtype, tp / t, rel))
    nbits_line(a, r, t)


def nbits_line(a, r, t):
    """ONNX Runtime's MatMulNBits model at its faster accuracy level against moec's
    narrow-weight time t, or why ONNX Runtime did not run it."""
    runs = {lv: r["onnxrt nbits %d" % lv] for lv in ORT_LEVELS if "onnxrt nbits %d" % lv in r}
    if not runs:
        return
    name = "onnxrt " + a.weight_dtype
    ok = {lv: v for lv, v in runs.items() if not isinstance(v, str)}
    failed = {lv: v for lv, v in runs.items() if isinstance(v, str)}
    if not ok:
        lv, err = min(failed.items())
        print("  %-13s MatMulNBits rejected by this ONNX Runtime build (accuracy_level %d): %s" % (name, lv, err))
        return
    lv = min(ok, key=lambda k: np.median(ok[k][0]))
    tp = np.median(ok[lv][0])
    rel = np.linalg.norm(ok[lv][1] - r["moec"][1]) / np.linalg.norm(r["moec"][1])
    which = "the faster of %s" % " and ".join(map(str, sorted(ok))) if len(ok) > 1 else "the one it took"
    print("  %-13s %8.3f ms  MatMulNBits (accuracy_level %d, %s): moec %s is %.2fx it; "
          "its relative difference from f32 %.1e" % (name, tp * 1e3, lv, which, a.weight_dtype, tp / t, rel))
    for lv, err in sorted(failed.items()):
        print("  %-13s MatMulNBits at accuracy_level %d rejected: %s" % ("", lv, err))


def report_prefill(a, r, m, compile_s):
    t2, t1 = np.median(r["moec"][0]), np.median(r["moec 1"][0])
    fl, peak2, peak1 = flops(T), m["fma_gflops_n"] * 1e9, m["fma_gflops_1"] * 1e9
    print("prefill T=%d, median of %d runs" % (T, a.runs))
    print(line("moec", a.threads, t2, fl, "%3.0f%% of the %d-thread peak  (moec compile: %.1f s)"
               % (100 * fl / t2 / peak2, a.threads, compile_s)))
    print(line("moec", 1, t1, fl, "%3.0f%% of the 1-core peak; %d-thread speedup %.2fx"
               % (100 * fl / t1 / peak1, a.threads, t1 / t2)))
    for name, thr in (("pytorch", a.threads), ("pytorch 1", 1), ("onnxrt", a.threads)):
        if name in r:
            t = np.median(r[name][0])
            peak = peak1 if thr == 1 else peak2
            print(line(name.split()[0], thr, t, fl, "%3.0f%% of the %s peak" % (
                100 * fl / t / peak, "1-core" if thr == 1 else "%d-thread" % a.threads)))
    narrow_line(a, r, t2)
    s, diff = ratios(r, t2, a.threads)
    print("  moec: %.0f%% of the %d-thread peak, %s   max |y_moec - y_other| = %.1e"
          % (100 * fl / t2 / peak2, a.threads, s, diff))
    return diff


def report_decode(a, r, m, t, experts, calls):
    """Against the weight-read bound: each call reads at least its batch's distinct
    experts' weights from memory, at best at the probe's read bandwidth."""
    bw = m["read_gbs"] * 1e9
    batch_of = np.arange(calls) % POOL
    bound = np.array([len(experts[p]) * EXPERT_BYTES / bw for p in batch_of])
    shared = np.mean([len(experts[p] & experts[p - 1]) / len(experts[p]) for p in range(POOL)])
    print("decode T=%d, median of %d calls rotating over %d batches" % (t, calls, POOL))
    print("  bound    %.2f distinct experts a call = %.1f MB of weights at %.1f GB/s = %.3f ms "
          "(%.0f%% of those experts also the previous call's)"
          % (np.mean([len(s) for s in experts]), np.mean(bound) * bw / 1e6, m["read_gbs"],
             np.mean(bound) * 1e3, 100 * shared))
    for name, thr in (("moec", a.threads), ("pytorch", a.threads), ("pytorch 1", 1), ("onnxrt", a.threads)):
        if name in r:
            over = np.median(r[name][0] / bound)
            print(line(name.split()[0], thr, np.median(r[name][0]), flops(t),
                       "%5.2fx the weight-read bound (%3.0f%% of read bandwidth)" % (over, 100 / over)))
    if a.weight_dtype:
        narrow_line(a, r, np.median(r["moec"][0]), bound * stored_bytes(a.weight_dtype) / 4)
    over = np.median(r["moec"][0] / bound)
    s, diff = ratios(r, np.median(r["moec"][0]), a.threads)
    print("  moec: %.0f%% of read bandwidth (%.2fx the bound), %s   max |y_moec - y_other| = %.1e"
          % (100 / over, over, s, diff))
    return diff


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", default=os.path.join(HERE, "..", "build", "moec"))
    ap.add_argument("--runs", type=int, default=20, help="timed prefill runs (decode: at least 2 x %d)" % POOL)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--weight-dtype", help="also time moec with expert weights stored so: "
                    "bf16, f16, int8, int4[:GROUP][:zp]")
    a = ap.parse_args()
    moec = os.path.abspath(a.moec)
    import torch
    with tempfile.TemporaryDirectory() as work:
        m = probe(work, a.threads)
        with open(os.path.join(work, "model.json"), "w") as f:
            json.dump(model_json(), f)
        subprocess.run([moec, "init-weights", os.path.join(work, "model.json"), "-o",
                        os.path.join(work, "w.safetensors")], check=True)
        w = read_safetensors(os.path.join(work, "w.safetensors"))
        rotate, compile_s = build_rotate(moec, work)
        narrow = None
        if a.weight_dtype:
            narrow = build_rotate(moec, work, ["--weight-dtype=" + a.weight_dtype], "_" + a.weight_dtype)[0]
        block = torch_block(w).eval()
        onnx = export_onnx(block, work)
        nbits = export_nbits(onnx, a.weight_dtype, work)
        rng = np.random.default_rng(0)
        pool = rng.standard_normal((1, T, D)).astype(np.float32)
        prefill = run_engines(a, work, rotate, block, onnx, pool, a.runs, narrow, nbits)
        calls = max(a.runs, 2 * POOL)
        decode = []
        for t in DECODE_T:
            pool, experts = decode_pool(rng, t, w["w_router"])
            decode.append((t, experts, run_engines(a, work, rotate, block, onnx, pool, calls, narrow, nbits)))
        m = best(m, probe(work, a.threads))  # probed before and after the engines
    print(describe(m))
    print("Mixtral MoE block D=%d F=%d E=%d k=%d fp32; torch %s (BLAS: %s), %s"
          % (D, F, E, K, torch.__version__, system_blas(),
             "onnxruntime-node (torch.onnx export)" if onnx else "onnxrt: not installed (run bench/setup.sh)"))
    diff = report_prefill(a, prefill, m, compile_s)
    for t, experts, r in decode:
        diff = max(diff, report_decode(a, r, m, t, experts, calls))
    if diff > 1e-3:
        sys.exit("the engines disagree: not the same model")


if __name__ == "__main__":
    main()
