#!/usr/bin/python3
"""int8 and int4 weights (docs/backend.md "Low-precision weights", docs/format.md
"Quantized weights"):
  - --weight-dtype=int8|int4[:GROUP][:zp] on the examples: the dump shows the storage,
    group and scale (and zero-point) arrays of the FFN and expert weights, routers and
    norms stay f32; compiled code agrees with the interpreter; with --weights=external
    (on mixtral_block, each format) the file holds NAME, NAME.scale and NAME.zero and
    gives the same bits as embedded weights; the output's relative error against the f32
    model stays under the documented bound;
  - a weights file that holds int8 / int4 tensors (quantized here by NumPy, round to
    nearest, in the documented layout) for params declared f32: taken as stored, and
    the interpreter's output equals, bit for bit, that of the f32 weights NumPy
    dequantizes with the documented formula; native code agrees;
  - accuracy on a two-layer MoE (the second layer's routing reads the first layer's
    output): relative error of the output and the share of tokens whose top-2 selection
    in layer 2 differs from the f32 model's, per dtype, under the documented figures;
  - errors: a missing or misshaped NAME.scale, an odd group, a group that does not
    divide K, a bad "weight_dtype", an external weights file without the scales at
    _create (exit 1, naming what is wrong); training with --weight-dtype (exit 2), and a
    stored int8 file in training is widened to f32.
usage: quantized_weights.py MOEC EXAMPLES_DIR [--quick]
--quick (the sanitizer build): mixtral_block with int8 and int4:64:zp, the stored file and
the errors (the accuracy of the two-layer model is the release run's)."""
import json
import os
import re
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_np import read as read_st, write as write_st  # noqa: E402
from weight_dtype import matches_interpreter, native_problems, run, with_weight_dtype  # noqa: E402

# Relative L2 error of an example's output against f32 (docs/backend.md); measured
# 0.006 (int8) and 0.09-0.10 (int4) on mixtral_block.
BOUND = {"int8": 0.02, "int4": 0.2, "int4:16": 0.2, "int4:64:zp": 0.2}
# Two-layer model: (relative error, share of tokens whose layer-2 top-2 set changes).
# Measured at 512 tokens: bf16 5e-4 and 0 %, f16 7e-5 and 0 %, int8 2.3e-3 and 0.2 %,
# int4 2.7e-2 and 2.1 %, int4:32:zp 2.5e-2 and 1.8 %.
TWO_LAYER_BOUND = {"bf16": (2e-3, 0.01), "f16": (3e-4, 0.01), "int8": (6e-3, 0.01),
                   "int4": (6e-2, 0.05), "int4:32:zp": (6e-2, 0.05)}
KEEP_F32 = re.compile(r"^(w_router\d*|norm_scale|bias|w_cls)$")


def param_lines(dump):
    """{name: whole line} of a dump's params."""
    return {m.group(1): m.group(0) for m in re.finditer(r"^  param %([\w.]+):.*$", dump, re.M)}


def outputs(moec_or_exe, args, outs, work, tag):
    files = {o: os.path.join(work, "%s_%s.npy" % (tag, o)) for o in outs}
    run(moec_or_exe + args + sum([["--output", "%s=%s" % kv] for kv in files.items()], []))
    return {o: np.load(p) for o, p in files.items()}


def rel(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b.astype(np.float64)), 1e-30))


# ---- --weight-dtype on the examples ----

def check_dump(moec, model, fmt):
    problems, quantized = [], []
    kind, zp = fmt.split(":")[0], fmt.endswith(":zp")
    for name, line in param_lines(run([moec, "dump", model, "--weight-dtype=" + fmt]).stdout).items():
        if KEEP_F32.match(name):
            if ":f32[" not in line:
                problems.append("%s must stay f32: %s" % (name, line))
            continue
        if "(from f32: quantize-weights)" not in line:
            continue
        quantized.append(name)
        if not re.search(r":%s\[.* group=\d+ scale f32\[" % kind, line):
            problems.append("dump of %s lacks the storage, group or scale: %s" % (name, line))
        if kind == "int4" and (" zero u8[" in line) != zp:
            problems.append("dump of %s: zero points %s: %s" % (name, "expected" if zp else "unexpected", line))
    if not quantized:
        problems.append("no param quantized")
    return problems, quantized


def check_external_file(path, quantized, fmt):
    problems, st = [], read_st(path)
    kind = fmt.split(":")[0]
    for n in quantized:
        dt, shape, _ = st.get(n, (None, None, None))
        if dt != ("I8" if kind == "int8" else "U8"):
            problems.append("external file holds %s as %s" % (n, dt))
        if n + ".scale" not in st or st[n + ".scale"][0] != "F32":
            problems.append("external file lacks %s.scale" % n)
        if (n + ".zero" in st) != fmt.endswith(":zp"):
            problems.append("external file: %s.zero %s" % (n, "missing" if fmt.endswith(":zp") else "unexpected"))
    return problems


def check_example(moec, ex, fmt, work, external, f32_cache):
    """external: also build with --weights=external and compare (once per format)."""
    model, x = os.path.join(ex, "model.json"), os.path.join(ex, "x.npy")
    outs = json.load(open(model))["outputs"]
    problems, quantized = check_dump(moec, model, fmt)
    flag = "--weight-dtype=" + fmt
    if ex not in f32_cache:
        f32_cache[ex] = outputs([moec, "run", model, "--interp"], ["--input", "x=" + x], outs, work, "f32")
    f32 = f32_cache[ex]
    want = outputs([moec, "run", model, "--interp", flag], ["--input", "x=" + x], outs, work, "want")
    exe, ext = os.path.join(work, "model"), os.path.join(work, "model_ext")
    run([moec, "build", model, "-o", exe, flag])
    got = outputs([exe], ["--input", "x=" + x], outs, work, "got")
    if external:
        run([moec, "build", model, "-o", ext, flag, "--weights=external"])
        problems += check_external_file(ext + ".safetensors", quantized, fmt)
        got_ext = outputs([ext], ["--input", "x=" + x, "--weights", ext + ".safetensors"], outs, work, "ext")
    for o in outs:
        problems += native_problems(o, got[o], want[o], got_ext[o] if external else None, fmt)
        if f32[o].dtype.kind != "f":
            continue
        err = rel(want[o], f32[o])
        print("  %s %s %s: relative error against f32 %.2e" % (os.path.basename(ex), fmt, o, err))
        if err > BOUND[fmt]:
            problems.append("%s: relative error %.3g against f32 over the bound %g" % (o, err, BOUND[fmt]))
    return problems


# ---- a file that already holds quantized tensors ----

def quantize_int8(w):
    """Round to nearest, one scale per column of each matrix: (I8 values, F32 scales)."""
    s = np.abs(w).max(axis=-2, keepdims=True) / 127
    s[s == 0] = 1
    q = np.clip(np.rint(w / s), -127, 127).astype(np.int8)
    return q, s.astype(np.float32)


def quantize_int4_zp(w, group):
    """Round to nearest with zero points, groups of `group` rows of K: (U8 packed values,
    F32 scales, U8 zero points), low nibble = even k."""
    *lead, K, N = w.shape
    g = w.reshape(*lead, K // group, group, N)
    lo, hi = g.min(axis=-2), g.max(axis=-2)
    s = ((hi - lo) / 15).astype(np.float32)
    s[s == 0] = 1
    z = np.clip(np.rint(-lo / s), 0, 15).astype(np.uint8)
    u = np.clip(np.rint(g / s[..., None, :]) + z[..., None, :], 0, 15).astype(np.uint8)
    u = u.reshape(*lead, K, N)
    packed = (u[..., 0::2, :] | (u[..., 1::2, :] << 4)).astype(np.uint8)
    return packed, s, z


def dequant_int8(q, s):
    return q.astype(np.float32) * s  # float32 products, one rounding each


def dequant_int4(packed, s, z, group):
    """fma(u, s, -(z * s)) in f32: u*s + offset is exact in f64 (docs/format.md), so
    rounding that sum once gives the FMA's bits."""
    *lead, K2, N = packed.shape
    u = np.empty((*lead, 2 * K2, N), np.float64)
    u[..., 0::2, :] = packed & 15
    u[..., 1::2, :] = packed >> 4
    sk = np.repeat(s, group, axis=-2).astype(np.float64)
    off = np.repeat(-(z.astype(np.float32) * s), group, axis=-2).astype(np.float64)
    return (u * sk + off).astype(np.float32)


def check_stored(moec, ex, work):
    model, x = os.path.join(ex, "model.json"), os.path.join(ex, "x.npy")
    w32 = os.path.join(work, "w32.safetensors")
    run([moec, "init-weights", model, "-o", w32])
    base = {k: a for k, (dt, shape, a) in read_st(w32).items()}
    quant, wide = {k: ("F32", a) for k, a in base.items()}, {k: ("F32", a) for k, a in base.items()}
    q, s = quantize_int8(base["w_down"])
    quant["w_down"], quant["w_down.scale"] = ("I8", q), ("F32", s)
    wide["w_down"] = ("F32", dequant_int8(q, s))
    for name in ("w_gate", "w_up"):
        p, s, z = quantize_int4_zp(base[name], 32)
        quant[name], quant[name + ".scale"], quant[name + ".zero"] = ("U8", p), ("F32", s), ("U8", z)
        wide[name] = ("F32", dequant_int4(p, s, z, 32))
    wq, ww = os.path.join(work, "wq.safetensors"), os.path.join(work, "ww.safetensors")
    write_st(wq, quant)
    write_st(ww, wide)
    problems = []
    lines = param_lines(run([moec, "dump", model, "--weights=" + wq]).stdout)
    for name, want in (("w_down", ":int8[8,128,64] file"), ("w_up", ":int4[8,64,128] file")):
        if want not in lines[name] or "read as the file stores it" not in lines[name]:
            problems.append("stored file: dump of %s: %s" % (name, lines[name]))
    if "zero u8[8,2,128]" not in lines["w_up"] or "group=32" not in lines["w_up"]:
        problems.append("stored file: w_up's group or zero points: %s" % lines["w_up"])
    train = param_lines(run([moec, "dump", model, "--weights=" + wq, "--mode=train"]).stdout)
    if ":f32[" not in train["w_down"]:
        problems.append("stored file in training: w_down is not widened to f32: %s" % train["w_down"])
    out = {}
    for tag, extra in (("iq", ["--interp", "--weights=" + wq]), ("iw", ["--interp", "--weights=" + ww]),
                       ("nq", ["--weights=" + wq])):
        out[tag] = outputs([moec, "run", model], ["--input", "x=" + x] + extra, ["y"], work, tag)["y"]
    if out["iq"].tobytes() != out["iw"].tobytes():
        problems.append("stored file: the interpreter differs from NumPy's dequantized weights by %g"
                        % np.abs(out["iq"] - out["iw"]).max())
    if not matches_interpreter(out["nq"], out["iq"], "int4"):
        problems.append("stored file: native differs from the interpreter")
    return problems, quant


def check_errors(moec, ex, quant, work):
    model, x = os.path.join(ex, "model.json"), os.path.join(ex, "x.npy")
    problems = []

    def bad_file(tag, **change):
        t = dict(quant)
        for k, v in change.items():
            if v is None:
                del t[k]
            else:
                t[k] = v
        path = os.path.join(work, tag + ".safetensors")
        write_st(path, t)
        return path

    def bad_model(tag, **wd):
        return with_weight_dtype(model, os.path.join(work, tag + ".json"), **wd)

    s = quant["w_up.scale"][1]
    cases = [
        (["check", model, "--weights=" + bad_file("noscale", **{"w_down.scale": None})],
         1, "no 'w_down.scale' (F32) beside it"),
        (["check", model, "--weights=" + bad_file("shape", **{"w_up.scale": ("F32", s[:, :1, :64])})],
         1, "'w_up.scale' as F32 [8,1,64]"),
        (["check", model, "--weights=" + bad_file("odd", **{
            "w_up.scale": ("F32", np.ones((8, 64, 128), np.float32)),
            "w_up.zero": ("U8", np.zeros((8, 64, 128), np.uint8))})],
         1, "groups of 1 rows; they must be a multiple of 8"),
        (["check", model, "--weights=" + bad_file("four", **{
            "w_up.scale": ("F32", np.ones((8, 16, 128), np.float32)),
            "w_up.zero": ("U8", np.zeros((8, 16, 128), np.uint8))})],
         1, "groups of 4 rows; they must be a multiple of 8"),
        (["check", model, "--weights=" + bad_file("zshape", **{"w_up.zero": ("U8", np.zeros((8, 4, 128), np.uint8))})],
         1, "'w_up.zero' as U8 [8,4,128]"),
        (["dump", model, "--weight-dtype=int4:48"], 1, "cannot be stored as int4:48"),
        (["check", bad_model("norm", norm_scale="int8")], 1, "param 'norm_scale' cannot be int8: it is not a matrix"),
        (["check", bad_model("value", w_up="int4:7")], 1, "weight_dtype must be"),
        (["dump", bad_model("router", w_router="int8")], 0, ""),
        (["run", model, "--weight-dtype=int4:7", "--input", "x=" + x], 2, "--weight-dtype takes"),
        (["run", model, "--weight-dtype=int8", "--mode=train", "--input", "x=" + x], 2, "--weight-dtype"),
    ]
    for args, code, says in cases:
        r = run([moec] + args, ok=False)
        if r.returncode != code or says not in r.stderr:
            problems.append("moec %s: exit %d, %s" % (" ".join(args[:3]), r.returncode, r.stderr.strip()))
    # the runtime checks an external file too
    ext = os.path.join(work, "ext")
    run([moec, "build", model, "-o", ext, "--weight-dtype=int4:32:zp", "--weights=external"])
    good = read_st(ext + ".safetensors")
    t = {k: (dt, a) for k, (dt, shape, a) in good.items() if k != "w_gate.zero"}
    broken = os.path.join(work, "broken.safetensors")
    write_st(broken, t)
    r = run([ext, "--input", "x=" + x, "--weights", broken], ok=False)
    if r.returncode != 1 or "tensor 'w_gate.zero' is missing" not in r.stderr:
        problems.append("external file without w_gate.zero: exit %d, %s" % (r.returncode, r.stderr.strip()))
    return problems


# ---- accuracy on two layers ----

def two_layer_model(T, D, F, E):
    def w(name, shape, seed, std):
        return {"name": name, "dtype": "float32", "shape": shape,
                "init": {"dist": "normal", "std": std, "seed": seed}}
    inits, nodes, h = [], [], "x"
    for l in (1, 2):
        inits += [w("w_router%d" % l, [D, E], 10 * l, 0.5), w("w_gate%d" % l, [E, D, F], 10 * l + 1, 0.05),
                  w("w_up%d" % l, [E, D, F], 10 * l + 2, 0.05), w("w_down%d" % l, [E, F, D], 10 * l + 3, 0.05)]
        nodes += [{"name": "router%d" % l, "op": "MatMul", "inputs": [h, "w_router%d" % l],
                   "outputs": ["logits%d" % l]}]
        if l == 2:
            nodes += [{"name": "route2", "op": "moe.TopKRoute", "inputs": ["logits2"],
                       "outputs": ["expert2", "weight2"], "attrs": {"k": 2}}]
        nodes += [{"name": "moe%d" % l, "op": "moe.MoE",
                   "inputs": [h, "logits%d" % l, "w_up%d" % l, "w_down%d" % l, "w_gate%d" % l],
                   "outputs": ["y%d" % l], "attrs": {"k": 2, "activation_type": "silu",
                                                     "normalize_routing_weights": 1}},
                  {"name": "res%d" % l, "op": "Add", "inputs": [h, "y%d" % l], "outputs": ["h%d" % l]}]
        h = "h%d" % l
    return {"moec": 1, "name": "two_layers", "symbols": {"T": {"max": T}},
            "inputs": [{"name": "x", "dtype": "float32", "shape": ["T", D]}], "outputs": ["h2", "expert2"],
            "initializers": inits, "nodes": nodes}


def check_two_layers(moec, work, T):
    model, x = os.path.join(work, "two.json"), os.path.join(work, "two_x.npy")
    json.dump(two_layer_model(T, 128, 256, 8), open(model, "w"))
    np.save(x, np.random.default_rng(7).standard_normal((T, 128)).astype(np.float32))
    base = outputs([moec, "run", model], ["--input", "x=" + x], ["h2", "expert2"], work, "two_f32")
    problems = []
    for fmt, (err_bound, flip_bound) in TWO_LAYER_BOUND.items():
        got = outputs([moec, "run", model, "--weight-dtype=" + fmt], ["--input", "x=" + x], ["h2", "expert2"],
                      work, "two_q")
        err = rel(got["h2"], base["h2"])
        changed = float(np.mean([set(a) != set(b) for a, b in zip(got["expert2"], base["expert2"])]))
        print("  two layers %s: relative error %.2e, layer-2 top-2 changed for %.1f%% of tokens"
              % (fmt, err, 100 * changed))
        if err > err_bound or changed > flip_bound:
            problems.append("two layers %s: error %.3g (bound %g), selection changed %.3g (bound %g)"
                            % (fmt, err, err_bound, changed, flip_bound))
    return problems


def main():
    moec, examples = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    quick = "--quick" in sys.argv
    failed = total = 0

    def report(what, fn):
        nonlocal failed, total
        total += 1
        try:
            problems = fn()
        except RuntimeError as e:
            problems = [str(e)]
        for p in problems:
            print("FAIL %s: %s" % (what, p))
        failed += bool(problems)

    f32_cache = {}
    with tempfile.TemporaryDirectory() as work:
        for name in sorted(os.listdir(examples)):
            ex = os.path.join(examples, name)
            if not os.path.exists(os.path.join(ex, "model.json")) or (quick and name != "mixtral_block"):
                continue
            fmts = {"mixtral_block": ("int8", "int4", "int4:64:zp"),
                    "deepseek_moe": ("int8", "int4:16")}.get(name, ("int8", "int4"))  # its F is 16
            if quick:
                fmts = ("int8", "int4:64:zp")
            for fmt in fmts:
                external = name == "mixtral_block"  # external files: one example, each format
                report("%s %s" % (name, fmt), lambda: check_example(moec, ex, fmt, work, external, f32_cache))
        mixtral = os.path.join(examples, "mixtral_block")
        stored = {}

        def stored_and_errors():
            problems, quant = check_stored(moec, mixtral, work)
            stored["quant"] = quant
            return problems + check_errors(moec, mixtral, quant, work)
        report("stored file and errors", stored_and_errors)
        if not quick:
            report("two layers", lambda: check_two_layers(moec, work, 512))
    print("%d checks, %d failed" % (total, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
