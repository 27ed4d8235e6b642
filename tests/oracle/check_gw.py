#!/usr/bin/python3
"""GW-MoE in training, forward and backward: the NumPy oracle (gw_ref.py) against its own
central finite differences (float64), then `moec run --mode=train` (interpreter and
compiled code) against the oracle, on the GW route alone and on whole GW MoE layers.

moec's autodiff exposes d loss / d param as the graph output grad.<param> when the
pipeline stops before the optimizer. Inputs whose routing is within 1e-5 (relative) of a
decision boundary (a top-k or priority tie, the entropy threshold, a ReLU kink) are
redrawn, never skipped; ROUTING.md §7 allows either answer below 1e-6.

Tolerances: |moec - oracle| <= rtol * (|oracle| + max |oracle|), rtol 1e-5 for the
interpreter and 1e-4 for compiled f32 code; integer outputs exactly.

--quick (the sanitizer build, where moec runs instrumented and slowly): one draw of inputs
per layer configuration instead of LAYER_DRAWS, compiled code at -O0 (the same lowering;
the release run checks -O3)."""
import argparse, json, os, subprocess, sys
import numpy as np
import gw_ref as GW

F32 = np.float32
PASSES = "infer-shapes,verify,expand-moe,gw-specialize,autodiff"
TIE = 1e-5
LAYER_DRAWS = 2  # random inputs per layer configuration
RESULTS = {"pass": 0, "fail": 0}
LARGEST = {}


def report(name, ok, detail=""):
    RESULTS["pass" if ok else "fail"] += 1
    print(("ok   " if ok else "FAIL ") + name + (f": {detail}" if detail else ""))


def rel_diff(got, want):
    """max |got - want| / (|want| + max |want|): the error measure the tolerances bound."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return np.inf
    scale = np.abs(want) + max(np.abs(want).max(initial=0), 1e-30)
    return float(np.max(np.abs(got - want) / scale, initial=0))


def note(kind, d):
    LARGEST[kind] = max(LARGEST.get(kind, 0.0), d)


# ---------------------------------------------------------------- case drawing

def threshold_for(H, mask, n_uncertain):
    """A threshold between the n-th and (n+1)-th largest valid entropies, so exactly
    n valid tokens are uncertain (n = 0: none, n >= valid count: all)."""
    Hs = np.sort(H[np.asarray(mask, bool)].astype(np.float64))[::-1]
    if n_uncertain == 0:
        return float(Hs[0]) + 0.05
    if n_uncertain >= len(Hs):
        return float(Hs[-1]) - 0.05
    return float(Hs[n_uncertain - 1] + Hs[n_uncertain]) / 2


def near(a, b):
    return abs(float(a) - float(b)) <= TIE * max(1.0, abs(float(a)), abs(float(b)))


def routing_clear(z32, cfg, mask, bias, tie_rows=()):
    """False when a decision is within TIE of flipping: adjacent scores among the first
    k+1 ranks, priority keys, or an entropy at the threshold (ROUTING §1.3, §7). In
    tie_rows, scores from exactly equal logits are exact ties: the tie rule decides."""
    dec = GW.decide(z32, cfg, mask, bias)
    for t, row in enumerate(dec["q"]):
        top = np.sort(row.astype(np.float64))[::-1][:cfg["k"] + 1]
        if any(near(a, b) and not (t in tie_rows and a == b) for a, b in zip(top, top[1:])):
            return False
    if cfg["capacity"] and cfg["order"] == "priority":
        keys = np.sort([GW.softmax(z32)[t, c] if cfg["score"] != "sigmoid" else GW.sigmoid(z32)[t, c]
                        for t, c in enumerate(dec["choice"][:, 0])])
        if any(near(a, b) for a, b in zip(keys, keys[1:])):
            return False
    valid = np.ones(len(z32), bool) if mask is None else mask
    return not any(near(h, cfg["threshold"]) for h in dec["H"][valid])


def draw_mask(rng, T):
    """Padding at the end and at random places, at least two valid tokens."""
    m = rng.random(T) > 0.25
    m[-max(1, T // 5):] = False
    m[:2] = True
    return m


def add_exact_ties(z):
    """ROUTING §7: exact-tie rows test the tie rule (lower expert index first): rows 0
    and 5 all equal, row 8 with its two largest logits equal. Returns the tie rows."""
    z[0], z[5] = 0.7, -0.2
    z[8, 2] = z[8, 5] = z[8].max() + 0.5
    return (0, 5, 8)


def route_case(rng, spec, ties=False):
    """Logits (f32 values), attributes with a threshold giving spec's uncertain count,
    mask, bias and an MSE target, redrawn until no decision is near a boundary other than
    the exact ties of spec["ties"] (with ties=True; finite differences cannot use them)."""
    T, E = spec["T"], spec.get("E", 8)
    for _ in range(100):
        z = (rng.standard_normal((T, E)) * spec.get("spread", 1.0)).astype(F32)
        tie_rows = add_exact_ties(z) if ties and spec.get("ties") else ()
        mask = draw_mask(rng, T) if spec.get("mask") else None
        bias = (rng.standard_normal(E) * 0.05).astype(F32) if spec.get("bias") else None
        cfg = GW.config(**spec["cfg"])
        H = GW.entropy(GW.softmax(z), cfg["eps"], cfg["entropy_unit"])
        cfg["threshold"] = threshold_for(H, np.ones(T, bool) if mask is None else mask, spec["uncertain"])
        if routing_clear(z, cfg, mask, bias, tie_rows):
            target = (rng.standard_normal((T, E)) * 0.5).astype(F32)
            return {"z": z, "cfg": cfg, "mask": mask, "bias": bias, "target": target}
    raise RuntimeError(f"no tie-free draw for {spec['name']}")


def layer_params(rng, D, E, Fh):
    return {"w_router": (rng.standard_normal((D, E)) * 0.6).astype(F32),
            "w_up": (rng.standard_normal((E, D, Fh)) * 0.5).astype(F32),
            "w_down": (rng.standard_normal((E, Fh, D)) * 0.5).astype(F32)}


def relu_clear(fwd):
    us = [u for _, _, _, u, _ in fwd["pairs"]]
    if not us:
        return True
    u = np.abs(np.concatenate(us))
    return bool(np.all(u > TIE * max(1.0, u.max())))


def layer_case(rng, spec):
    """Weights, x, target/labels, mask and a threshold for spec, redrawn away from ties
    and ReLU kinks (decisions from f32 logits, as moec computes them)."""
    T, D, E, Fh = spec["T"], 6, 4, 5
    for _ in range(100):
        params = layer_params(rng, D, E, Fh)
        x = rng.standard_normal((T, D)).astype(F32)
        mask = draw_mask(rng, T) if spec.get("mask") else None
        cfg = GW.config(**spec["cfg"])
        z32 = x @ params["w_router"]
        H = GW.entropy(GW.softmax(z32), cfg["eps"], cfg["entropy_unit"])
        cfg["threshold"] = threshold_for(H, np.ones(T, bool) if mask is None else mask, spec["uncertain"])
        target = rng.integers(0, D, T) if spec["loss"] == "ce" else (rng.standard_normal((T, D))).astype(F32)
        if not routing_clear(z32, cfg, mask, None):
            continue
        c = {"params": params, "x": x, "mask": mask, "cfg": cfg, "target": target, "loss": spec["loss"]}
        if relu_clear(layer_oracle(c)[0]):
            return c
    raise RuntimeError(f"no tie-free draw for {spec['name']}")


def layer_oracle(c):
    """Oracle forward (decisions from f32 logits, values in f64) and backward."""
    p64 = {n: v.astype(np.float64) for n, v in c["params"].items()}
    dec = GW.decide(c["x"] @ c["params"]["w_router"], c["cfg"], c["mask"])
    x64, tgt = c["x"].astype(np.float64), c["target"]
    fwd = GW.layer_forward(p64, x64, tgt, c["cfg"], c["loss"], c["mask"], dec)
    return fwd, GW.layer_backward(p64, x64, tgt, c["cfg"], fwd, c["loss"])


# ---------------------------------------------------------------- cases

def C(**kw):
    return kw


ROUTE_SPECS = [
    {"name": "route T=1 k=1, the token broadcast", "T": 1, "uncertain": 1, "cfg": C(k=1, max_broadcast=2)},
    {"name": "route T=7 k=2 normalize eps 1e-3, some broadcast", "T": 7, "uncertain": 3,
     "cfg": C(k=2, normalize=1, eps=1e-3, max_broadcast=5)},
    {"name": "route T=16 k=1 capacity 3, more uncertain than max_broadcast, padding mask", "T": 16,
     "uncertain": 7, "mask": True, "cfg": C(k=1, capacity=3, max_broadcast=3)},
    {"name": "route T=9 softmax_selected k=2 normalized entropy, none broadcast", "T": 9, "uncertain": 0,
     "cfg": C(k=2, score="softmax_selected", entropy_unit="normalized", max_broadcast=4)},
    {"name": "route T=11 sigmoid k=2 normalize scale 2.5 bias, priority capacity 4", "T": 11,
     "uncertain": 4, "bias": True,
     "cfg": C(k=2, score="sigmoid", normalize=1, scale=2.5, capacity=4, order="priority", max_broadcast=2)},
    {"name": "route T=13 k=3 softmax capacity 5, normalized entropy, mask, over max_broadcast, exact ties",
     "T": 13, "uncertain": 6, "mask": True, "ties": True, "cfg": C(k=3, capacity=5, entropy_unit="normalized", max_broadcast=2)},
]

LAYER_SPECS = [
    {"name": "layer T=1 MSE, the token broadcast", "T": 1, "uncertain": 1, "loss": "mse",
     "cfg": C(k=1, max_broadcast=1)},
    {"name": "layer T=7 CE k=2 capacity 3, some broadcast", "T": 7, "uncertain": 2, "loss": "ce",
     "cfg": C(k=2, capacity=3, max_broadcast=3)},
    {"name": "layer T=16 MSE padding mask, more uncertain than max_broadcast", "T": 16, "uncertain": 7,
     "loss": "mse", "mask": True, "cfg": C(k=1, max_broadcast=4)},
    {"name": "layer T=5 CE k=2 normalize, normalized entropy, none broadcast", "T": 5, "uncertain": 0,
     "loss": "ce", "cfg": C(k=2, normalize=1, entropy_unit="normalized", max_broadcast=2)},
    {"name": "layer T=16 CE normalized entropy, mask, all valid uncertain", "T": 16, "uncertain": 16,
     "loss": "ce", "mask": True, "cfg": C(k=1, entropy_unit="normalized", max_broadcast=3)},
    {"name": "layer T=11 MSE softmax_selected k=2, some broadcast", "T": 11, "uncertain": 3, "loss": "mse",
     "cfg": C(k=2, score="softmax_selected", max_broadcast=8)},
]


# ---------------------------------------------------------------- oracle self-checks

def check_worked_example():
    """ROUTING §6: base Switch C=2, tau=1.3 nats, M=1 -> token 1 broadcast with its
    softmax row, token 3 uncertain but over the limit and dropped -> all-zero row."""
    Z = np.array([[2.0, 1.0, 0.5, -1.0], [0.1, 0.2, 0.3, 0.4], [3.0, 2.9, -2.0, 0.0],
                  [1.0, 1.0, 1.0, 1.0], [2.5, -0.5, 0.0, 0.3], [0.0, 2.0, 1.9, -3.0]], F32)
    cfg = GW.config(k=1, capacity=2, threshold=1.3, max_broadcast=1)
    dec = GW.decide(Z, cfg)
    e, w = GW.forward(Z, cfg, dec)
    ok = (np.allclose(dec["H"], [1.0144, 1.3800, 0.8131, 1.3863, 0.6987, 0.9092], atol=1e-4)
          and list(e[1]) == [0, 1, 2, 3] and np.allclose(w[1], [.2138, .2363, .2612, .2887], atol=1e-4)
          and np.all(e[3] == -1) and np.all(w[3] == 0) and list(e[:, 0]) == [0, 0, 0, -1, -1, 1])
    report("oracle: ROUTING §6 GW worked example", ok)


def fd_grad(f, v, h=1e-6):
    """Central differences of the scalar f over every element of v (float64)."""
    g = np.zeros_like(v)
    for i in np.ndindex(v.shape):
        x0 = v[i]
        v[i] = x0 + h
        fp = f()
        v[i] = x0 - h
        fm = f()
        v[i] = x0
        g[i] = (fp - fm) / (2 * h)
    return g


def fd_route(rng, spec):
    """d(sum weight*C)/dz: analytic vjp against finite differences with the decisions
    recomputed at every point (they must not change: the case is tie-free)."""
    c = route_case(rng, spec)
    z = c["z"].astype(np.float64)
    bias = None if c["bias"] is None else c["bias"].astype(np.float64)
    Cot = rng.standard_normal(z.shape)
    dec = GW.decide(z, c["cfg"], c["mask"], bias)
    base = GW.forward(z, c["cfg"], dec)[0]
    same = []
    def L():
        e, w = GW.route(z, c["cfg"], c["mask"], bias)
        same.append(np.array_equal(e, base))
        return np.sum(w * Cot)
    num = fd_grad(L, z)
    d = rel_diff(GW.vjp(z, c["cfg"], dec, Cot), num)
    note("oracle vs finite differences", d)
    report(f"oracle FD: {spec['name']} ({int(dec['bc'].sum())} broadcast)", all(same) and d < 1e-6,
           f"rel diff {d:.2e}, decisions stable {all(same)}")


def fd_layer(rng, spec):
    """d loss / d every weight of a GW MoE layer against finite differences (float64)."""
    c = layer_case(rng, spec)
    p = {n: v.astype(np.float64) for n, v in c["params"].items()}
    x = c["x"].astype(np.float64)
    fwd = GW.layer_forward(p, x, c["target"], c["cfg"], c["loss"], c["mask"])
    grads = GW.layer_backward(p, x, c["target"], c["cfg"], fwd, c["loss"])
    worst, stable = 0.0, True
    for name in p:
        def L():
            nonlocal stable
            f = GW.layer_forward(p, x, c["target"], c["cfg"], c["loss"], c["mask"])
            stable &= np.array_equal(f["expert"], fwd["expert"])
            return f["loss"]
        worst = max(worst, rel_diff(grads[name], fd_grad(L, p[name])))
    note("oracle vs finite differences", worst)
    report(f"oracle FD: {spec['name']} ({int(fwd['dec']['bc'].sum())} broadcast)",
           stable and worst < 1e-6, f"rel diff {worst:.2e}, decisions stable {stable}")


# ---------------------------------------------------------------- moec

def moec_run(model, feeds, outputs, work, engine):
    """Writes the model and inputs, runs the training pipeline up to autodiff, returns
    the named outputs."""
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "m.json")
    with open(path, "w") as f:
        json.dump(model, f)
    args = [ARGS.moec, "run", path, "--mode=train", f"--passes={PASSES}"]
    args += ["--interp"] if engine == "interp" else []
    # the sanitizer subset compiles at -O0: the same lowering, without LLVM's optimizer
    # (not instrumented, and most of the time); the release run checks -O3
    args += ["-O0"] if engine != "interp" and ARGS.quick else []
    for k, v in feeds.items():
        np.save(os.path.join(work, k + ".npy"), v)
        args += ["--input", f"{k}={os.path.join(work, k + '.npy')}"]
    for o in outputs:
        args += ["--output", f"{o}={os.path.join(work, 'out_' + o + '.npy')}"]
    p = subprocess.run(args, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"moec exited {p.returncode}: {p.stderr.strip()}")
    return {o: np.load(os.path.join(work, "out_" + o + ".npy")) for o in outputs}


def gw_attrs(cfg):
    return {k: v for k, v in cfg.items() if v != GW.CFG[k] or k in ("k", "threshold", "max_broadcast")}


def inp(name, dtype, shape):
    return {"name": name, "dtype": dtype, "shape": shape}


def node(name, op, inputs, outputs, attrs=None):
    n = {"name": name, "op": op, "inputs": inputs, "outputs": outputs}
    return dict(n, attrs=attrs) if attrs else n


def route_model(c):
    """z = z0 + b (b a zero param, so grad.b = d loss/dz), GWRoute, loss = sum (weight -
    target)^2: the cotangent of weight is 2 (weight - target)."""
    T, E = c["z"].shape
    ins = [inp("z0", "float32", [T, E]), inp("target", "float32", [T, E])]
    ins += [inp("bias", "float32", [E])] if c["bias"] is not None else []
    ins += [inp("mask", "bool", [T])] if c["mask"] is not None else []
    route_in = ["z", "bias" if c["bias"] is not None else "", "mask" if c["mask"] is not None else ""]
    while route_in[-1] == "":
        route_in.pop()
    return {"moec": 1, "name": "gw_route", "inputs": ins, "outputs": ["loss", "expert", "weight"],
            "initializers": [{"name": "b", "dtype": "float32", "shape": [T, E], "data": [0.0] * (T * E)}],
            "nodes": [{"name": "add", "op": "Add", "inputs": ["z0", "b"], "outputs": ["z"]},
                      {"name": "route", "op": "moe.GWRoute", "inputs": route_in, "outputs": ["expert", "weight"],
                       "attrs": gw_attrs(c["cfg"])},
                      {"name": "mse", "op": "MSELoss", "inputs": ["weight", "target"], "outputs": ["loss"],
                       "attrs": {"reduction": "sum"}}]}


def compare(name, engine, got, want, ints=()):
    rtol = 1e-5 if engine == "interp" else 1e-4
    bad = []
    for k, w in want.items():
        if k in ints:
            if not np.array_equal(got[k], w):
                bad.append(f"{k} differs")
            continue
        d = rel_diff(got[k], w)
        note(f"moec {engine} vs oracle ({'grad' if k.startswith('grad.') else 'forward'})", d)
        if d > rtol:
            bad.append(f"{k} rel diff {d:.2e}")
    report(f"moec {engine}: {name}", not bad, "; ".join(bad))


def check_route(rng, spec, idx):
    c = route_case(rng, spec, ties=True)
    z = c["z"].astype(np.float64)
    dec = GW.decide(c["z"], c["cfg"], c["mask"], c["bias"])
    e, w = GW.forward(z, c["cfg"], dec)
    Cot = 2 * (w - c["target"])
    want = {"loss": np.sum((w - c["target"]) ** 2), "expert": e, "weight": w,
            "grad.b": GW.vjp(z, c["cfg"], dec, Cot)}
    feeds = {"z0": c["z"], "target": c["target"]}
    feeds.update({k: c[k] for k in ("bias", "mask") if c[k] is not None})
    for engine in ARGS.engines:
        got = moec_run(route_model(c), feeds, list(want), os.path.join(ARGS.work, f"route{idx}-{engine}"), engine)
        compare(f"{spec['name']} ({int(dec['bc'].sum())} broadcast)", engine, got, want, ints=("expert",))


def layer_model(c):
    """x -> MatMul -> GWRoute -> Dispatch -> ExpertMatMul -> Relu -> ExpertMatMul ->
    Combine -> MSELoss (mean) or SoftmaxCrossEntropyLoss (mean), weights as data params."""
    T = "T"
    D = c["x"].shape[1]
    ins = [inp("x", "float32", [T, D]),
           inp("target", "int64", [T]) if c["loss"] == "ce" else inp("target", "float32", [T, D])]
    ins += [inp("mask", "bool", [T])] if c["mask"] is not None else []
    inits = [{"name": n, "dtype": "float32", "shape": list(v.shape), "data": [float(a) for a in v.ravel()]}
             for n, v in c["params"].items()]
    E = c["params"]["w_up"].shape[0]
    nodes = [node("router", "MatMul", ["x", "w_router"], ["z"]),
             node("route", "moe.GWRoute", ["z", "", "mask"] if c["mask"] is not None else ["z"],
                  ["expert", "weight"], gw_attrs(c["cfg"])),
             node("dispatch", "moe.Dispatch", ["x", "expert", "weight"], ["rows", "off", "tok", "rw"],
                  {"num_experts": E}),
             node("up", "moe.ExpertMatMul", ["rows", "off", "w_up"], ["u"]),
             node("relu", "Relu", ["u"], ["a"]),
             node("down", "moe.ExpertMatMul", ["a", "off", "w_down"], ["o"]),
             node("combine", "moe.Combine", ["o", "tok", "rw", "off", "x"], ["y"]),
             node("loss", "SoftmaxCrossEntropyLoss" if c["loss"] == "ce" else "MSELoss", ["y", "target"], ["loss"])]
    return {"moec": 1, "name": "gw_layer", "symbols": {"T": {"max": 16}}, "inputs": ins,
            "outputs": ["loss", "expert", "weight", "y"], "initializers": inits, "nodes": nodes}


def check_layer(rng, spec, idx):
    c = layer_case(rng, spec)
    fwd, grads = layer_oracle(c)
    want = {"loss": fwd["loss"], "expert": fwd["expert"], "weight": fwd["weight"], "y": fwd["y"]}
    want.update({"grad." + n: g for n, g in grads.items()})
    feeds = {"x": c["x"], "target": c["target"]}
    if c["mask"] is not None:
        feeds["mask"] = c["mask"]
    for engine in ARGS.engines:
        got = moec_run(layer_model(c), feeds, list(want), os.path.join(ARGS.work, f"layer{idx}-{engine}"), engine)
        compare(f"{spec['name']} ({int(fwd['dec']['bc'].sum())} broadcast)", engine, got, want, ints=("expert",))


def guarded(name, fn, *a):
    """A crash of the harness or of moec is a failure, never a skip."""
    try:
        fn(*a)
    except Exception as e:
        report(name, False, repr(e))


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", help="the moec binary; without it only the oracle self-checks run")
    ap.add_argument("--work", default="gw-oracle-work")
    ap.add_argument("--engines", default="interp,native")
    ap.add_argument("--quick", action="store_true", help="the sanitizer build's subset")
    ARGS = ap.parse_args()
    ARGS.engines = ARGS.engines.split(",")
    rng = np.random.default_rng(20240613)
    guarded("worked example", check_worked_example)
    for spec in ROUTE_SPECS:
        guarded(spec["name"], fd_route, rng, spec)
    for spec in LAYER_SPECS:
        guarded(spec["name"], fd_layer, rng, spec)
    if ARGS.moec:
        for i, spec in enumerate(ROUTE_SPECS):
            guarded(spec["name"], check_route, rng, spec, i)
        for draw in range(1 if ARGS.quick else LAYER_DRAWS):
            for i, spec in enumerate(LAYER_SPECS):
                guarded(spec["name"], check_layer, rng, spec, f"{i}-{draw}")
    for kind, d in sorted(LARGEST.items()):
        print(f"largest {kind}: {d:.3g}")
    print(f"{RESULTS['pass']} passed, {RESULTS['fail']} failed")
    sys.exit(1 if RESULTS["fail"] else 0)


if __name__ == "__main__":
    main()
