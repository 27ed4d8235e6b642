#!/usr/bin/python3
"""Checks `moec run` against the NumPy oracle: every MoE routing op on random logits
and edge cases, and every example model at several token counts.

Tolerances (ROUTING.md §7): routing decisions exactly, except rows whose deciding
margin is below 1e-6 relative (either answer allowed); floats rtol 1e-5, atol 1e-6
(atol 1e-5 for whole models, whose outputs sum many products).

Compiled code (--engine native) takes the routers on the random logits, the ties and
T = 1; the interpreter takes every logit case (native.ops checks compiled routers
against the interpreter bit for bit).
--quick (the sanitizer build, where moec runs instrumented and slowly): the routers on the
random logits only, and each model at one token count, compiled at -O0. The compiled
kernels and LLVM are not instrumented, so the sanitizers watch moec's path for each op
(the same lowering at any -O) and the runtime, which these cover; the release run checks
every case at -O3."""
import argparse, json, os, subprocess, sys
import numpy as np
import moe_ref as R
import graph_ref as G

F = np.float32
results = {"pass": 0, "fail": 0}


def report(name, ok, detail=""):
    results["pass" if ok else "fail"] += 1
    if not ok:
        print(f"FAIL {name}: {detail}")


def moec(args):
    if args[0] == "run" and ARGS.engine == "interp":
        args = args + ["--interp"]
    elif args[0] == "run" and ARGS.quick:  # the same lowering; LLVM's optimizer is not what
        args = args + ["-O0"]  # the sanitizers watch, and the release run checks -O3
    p = subprocess.run([ARGS.moec] + args, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"moec {' '.join(args)} exited {p.returncode}: {p.stderr.strip()}")


def near_tie(z, rtol=1e-6):
    """True if any row has two scores within rtol (a decision either way is allowed)."""
    for row in np.atleast_2d(z):
        s = np.sort(row)
        gaps = np.abs(np.diff(s)) <= rtol * np.maximum(np.abs(s[1:]), 1e-30)
        if gaps.any() and not (np.ptp(row) == 0):
            return True
    return False


def op_model(op, attrs, E, outputs, extra_inputs=()):
    ins = [{"name": "z", "dtype": "float32", "shape": ["T", E]}] + list(extra_inputs)
    return {"moec": 1, "name": "op", "symbols": {"T": {"max": 64}}, "inputs": ins, "outputs": outputs,
            "nodes": [{"name": "n", "op": op, "inputs": [i["name"] for i in ins], "outputs": outputs,
                       "attrs": attrs}]}


def run_op(name, model, feeds, training=False):
    d = os.path.join(ARGS.work, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "m.json"), "w") as f:
        json.dump(model, f)
    args = ["run", os.path.join(d, "m.json")]
    for k, v in feeds.items():
        np.save(os.path.join(d, k + ".npy"), v)
        args += ["--input", f"{k}={os.path.join(d, k + '.npy')}"]
    for o in model["outputs"]:
        args += ["--output", f"{o}={os.path.join(d, 'out_' + o + '.npy')}"]
    if training:
        args.append("--mode=train")
    moec(args)
    return [np.load(os.path.join(d, "out_" + o + ".npy")) for o in model["outputs"]]


def compare_route(name, z, got, want, E):
    if near_tie(z):
        report(name, True)
        return
    ge, gw = got
    we, ww = want
    ok = np.array_equal(ge, we) and np.allclose(gw, ww, rtol=1e-5, atol=1e-6)
    report(name, ok, f"experts equal={np.array_equal(ge, we)}, max weight diff={np.abs(gw - ww).max():.3g}")


def logit_cases(rng, E):
    T = 64
    native = ARGS.engine == "native"
    yield "random", rng.standard_normal((T, E)).astype(F) * 2
    if ARGS.quick:
        return
    tie = rng.standard_normal((T, E)).astype(F)
    tie[::3] = 1.0
    tie[1::5, :2] = 0.5
    yield "ties", tie
    one = rng.standard_normal((T, E)).astype(F)
    one[:, 0] += 20
    if not native:
        yield "all_to_expert_0", one
    idle = rng.standard_normal((T, E)).astype(F)
    idle[:, E - 1] -= 30
    if not native:
        yield "idle_expert", idle
    yield "T1", rng.standard_normal((1, E)).astype(F)
    if not native:
        yield "T7", rng.standard_normal((7, E)).astype(F)


def topk_variants(E):
    yield {"k": 1}
    yield {"k": 2, "normalize": 1}
    yield {"k": E}
    yield {"k": 2, "score": "softmax_selected"}
    yield {"k": 1, "capacity": 4}
    yield {"k": 2, "capacity": 5, "order": "priority", "normalize": 1}
    yield {"k": 2, "score": "sigmoid", "normalize": 1, "scale": 2.5, "groups": 4, "topk_groups": 2}


def check_routers(rng):
    E = 8
    bias = (rng.standard_normal(E) * 0.1).astype(F)
    for cname, z in logit_cases(rng, E):
        for i, a in enumerate(topk_variants(E)):
            got = run_op(f"topk_{cname}_{i}", op_model("moe.TopKRoute", a, E, ["e", "w"]), {"z": z})
            want = R.topk_route(z, a["k"], **{k: v for k, v in a.items() if k != "k"})[:2]
            # priority order ranks tokens by their top probability: ties there count too
            keys = np.sort(R.softmax(z), axis=1)[:, -1:].T if a.get("order") == "priority" else z
            compare_route(f"TopKRoute {cname} {a}", keys if near_tie(keys) else z, got, want, E)
        a = {"k": 2, "score": "sigmoid", "normalize": 1, "groups": 2, "topk_groups": 1}
        m = op_model("moe.TopKRoute", a, E, ["e", "w"], [{"name": "b", "dtype": "float32", "shape": [E]}])
        got = run_op(f"topk_bias_{cname}", m, {"z": z, "b": bias})
        want = R.topk_route(z, 2, bias=bias, score="sigmoid", normalize=1, groups=2, topk_groups=1)[:2]
        compare_route(f"TopKRoute bias {cname}", z, got, want, E)
        for p, mk in ((0.4, 0), (0.9, 3)):
            a = {"p": p, "max_k": mk}
            got = run_op(f"topp_{cname}_{p}", op_model("moe.TopPRoute", a, E, ["e", "w"]), {"z": z})
            compare_route(f"TopPRoute {cname} {a}", z, got, R.topp_route(z, p, mk), E)
        got = run_op(f"ec_{cname}", op_model("moe.ExpertChoiceRoute", {"capacity": 5}, E, ["t", "w"]), {"z": z})
        compare_route(f"ExpertChoiceRoute {cname}", z.T, got, R.expert_choice(z, 5), E)
        for training in (False, True):
            a = {"k": 1, "capacity": 6, "threshold": 1.6, "max_broadcast": 4}
            got = run_op(f"gw_{cname}_{training}", op_model("moe.GWRoute", a, E, ["e", "w"]), {"z": z}, training)
            want = R.gw_route(z, training, 1, 1.6, 4, capacity=6)
            compare_route(f"GWRoute {cname} training={training}", z, got, want, E)


def check_resonance(rng):
    for mode in ("softmax_cosine", "unit", "softmax_grap_logits"):
        for T, cap in ((64, 9), (1, 0), (7, 2))[:1 if ARGS.quick else 3]:
            x = rng.standard_normal((T, 16)).astype(F)
            m = op_model("moe.ResonanceRoute", {"num_experts": 4, "k": 2, "capacity": cap, "weight_mode": mode}, 16, ["e", "w"])
            got = run_op(f"etr_{mode}_{T}", m, {"z": x})
            blocks = x.reshape(T, 4, 4).sum(axis=2)
            compare_route(f"ResonanceRoute {mode} T={T}", blocks, got, R.resonance(x, 4, 2, cap, mode), 4)


def check_losses(rng):
    E, K = 8, 2
    for T in (64, 7):
        z = rng.standard_normal((T, E)).astype(F)
        p = R.softmax(z)
        e, _, ch = R.topk_route(z, K)
        ins = [{"name": "c", "dtype": "int32", "shape": ["T", K]}]
        for a in ({}, {"scale": "E_over_K"}, {"count": "first_rank_only"}):
            m = op_model("moe.LoadBalanceLoss", a, E, ["l"], ins)
            got = run_op(f"lbl_{T}_{len(a)}", m, {"z": p, "c": ch.astype(np.int32)})[0]
            want = R.load_balance_loss(p, ch, **a)
            report(f"LoadBalanceLoss T={T} {a}", np.allclose(got, want, rtol=1e-5), f"{got} vs {want}")
        got = run_op(f"z_{T}", op_model("moe.ZLoss", {}, E, ["l"]), {"z": z})[0]
        report(f"ZLoss T={T}", np.allclose(got, R.z_loss(z), rtol=1e-5), f"{got} vs {R.z_loss(z)}")
        got = run_op(f"h_{T}", op_model("moe.EntropyLoss", {}, E, ["l"]), {"z": p})[0]
        report(f"EntropyLoss T={T}", np.allclose(got, R.entropy_loss(p), rtol=1e-5), f"{got} vs {R.entropy_loss(p)}")


def check_examples(rng):
    for name in sorted(os.listdir(ARGS.examples)):
        path = os.path.join(ARGS.examples, name, "model.json")
        if not os.path.exists(path):
            continue
        model = json.load(open(path))
        d = os.path.join(ARGS.work, "ex_" + name)
        os.makedirs(d, exist_ok=True)
        wpath = os.path.join(d, "w.safetensors")
        moec(["init-weights", path, "-o", wpath])
        weights = G.read_safetensors(wpath)
        D = model["inputs"][0]["shape"][1]
        for T in (7,) if ARGS.quick else (1, 7, 64):
            for training in ((False, True) if name == "gw_finetune" else (False,)):
                x = rng.standard_normal((T, D)).astype(F)
                np.save(os.path.join(d, "x.npy"), x)
                args = ["run", path, "--input", f"x={d}/x.npy"]
                for o in model["outputs"]:
                    args += ["--output", f"{o}={d}/{o}.npy"]
                moec(args + (["--mode=train"] if training else []))
                env = G.evaluate(model, {"x": x}, weights, training)
                for o in model["outputs"]:
                    got, want = np.load(f"{d}/{o}.npy"), env[o]
                    ok = got.shape == np.shape(want) and np.allclose(got, want, rtol=1e-5, atol=1e-5)
                    diff = np.abs(got - want).max() if ok or got.shape == np.shape(want) else "shape"
                    report(f"example {name} T={T} training={training} output {o}", ok, f"max diff {diff}")


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--moec", required=True)
    ap.add_argument("--examples", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--engine", choices=("native", "interp"), default="native",
                    help="compiled code (moec run) or the reference interpreter (--interp)")
    ap.add_argument("--quick", action="store_true", help="the sanitizer build's subset")
    ARGS = ap.parse_args()
    os.makedirs(ARGS.work, exist_ok=True)
    rng = np.random.default_rng(7)
    for check in (check_routers, check_resonance, check_losses, check_examples):
        try:
            check(rng)
        except Exception as e:  # a crash of the harness or of moec is a failure, not a skip
            report(check.__name__, False, repr(e))
    print(f"{results['pass']} passed, {results['fail']} failed")
    sys.exit(1 if results["fail"] else 0)


if __name__ == "__main__":
    main()
