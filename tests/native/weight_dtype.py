#!/usr/bin/python3
"""--weight-dtype=f16|bf16 (quantize-weights, docs/backend.md) on every example, in
inference:
  - the dump shows the FFN and expert weights narrowed ("from f32: quantize-weights")
    and routers, norms, biases and heads still f32;
  - compiled code against the interpreter with the same flag: (1e-4, 1e-5), or with
    bf16 on an AVX512-BF16 host (activations rounded to bf16 in the GEMMs) a relative L2
    error of 5e-3 (matches_interpreter, which quantized_weights.py shares); on
    mixtral_block also --weights=external, whose file holds the narrowed tensors and
    gives the embedded weights' bits;
  - accuracy against the f32 model (interpreter): relative L2 error of the output
    below the documented bound, bf16 1e-2 and f16 1e-3; a block's routing is unchanged,
    since routers stay f32;
  - a weights file holding bf16 tensors for params declared f32 (as Hugging Face
    checkpoints do): product weights are read as stored (the dump says so) and give the
    interpreter's output of the same values widened to f32, bit for bit; a norm scale
    and training get f32;
  - an initializer's "weight_dtype" overrides the option and the rule: "bf16" narrows a
    router (and compiled code still agrees with the interpreter), "f32" keeps an expert
    weight, with or without --weight-dtype; on a norm scale, or with a bad value, it is
    an error naming the param or the JSON path (exit 1);
  - misuse: another dtype, training, a command that does not compile: exit 2.
usage: weight_dtype.py MOEC EXAMPLES_DIR [--quick]
bf16 runs on every example, f16 (the same path with another widening) on mixtral_block
and deepseek_moe (shared experts).
--quick (the sanitizer build): mixtral_block only."""
import functools
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_np import read as read_st, write as write_st  # noqa: E402

BOUND = {"bf16": 1e-2, "f16": 1e-3}
ST_NAME = {"bf16": "BF16", "f16": "F16"}
# Params that must stay f32 whatever the dtype: not FFN weights.
KEEP_F32 = re.compile(r"^(w_router|norm_scale|bias|w_cls)$")


def run(cmd, ok=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if ok and r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd[:3]), r.returncode, r.stderr.strip()))
    return r


def params(dump):
    """{name: (dtype, narrowed)} from a dump's param lines."""
    out = {}
    for m in re.finditer(r"^  param %([\w.]+):(\w+)\[.*$", dump, re.M):
        out[m.group(1)] = (m.group(2), "(from f32: quantize-weights)" in m.group(0))
    return out


@functools.lru_cache(maxsize=None)  # /proc/cpuinfo read once, not once per comparison
def host_has(flag):
    """Whether this host's CPU has AVX-512 and `flag` (as /proc/cpuinfo spells it), so
    that moec's code for it uses the dot-product kernels that need it (docs/backend.md):
    avx512_bf16 for bf16 weights (activations rounded to bf16), avx512_vnni for int8 and
    int4 (activations quantized to int8 in tiles of few rows)."""
    with open("/proc/cpuinfo") as f:
        flags = set(next((line for line in f if line.startswith("flags")), "").split())
    return {"avx512f", flag} <= flags


# Compiled code against the interpreter: (1e-4, 1e-5) elementwise, or, where the host's
# dot-product kernels round the activations, a relative L2 error of 5e-3 (bf16) and
# 2.5e-2 (int8, int4).
DOT_BOUND = {"bf16": ("avx512_bf16", 5e-3), "int8": ("avx512_vnni", 2.5e-2),
             "int4": ("avx512_vnni", 2.5e-2)}


def matches_interpreter(got, want, dt=None):
    flag, bound = DOT_BOUND.get((dt or "").split(":")[0], (None, 0))
    if flag and host_has(flag):
        return np.linalg.norm(got - want) <= bound * np.linalg.norm(want)
    return np.allclose(got, want, rtol=1e-4, atol=1e-5)


def native_problems(name, got, want, got_ext=None, dt=None):
    """Output `name` of compiled code against the interpreter's (the model tolerance for
    weight dtype dt), and, when given, of external weights against embedded ones (the
    same bits)."""
    problems = []
    if not matches_interpreter(got, want, dt):
        problems.append("%s: native differs from the interpreter by %g (relative L2 %.2e)" % (
            name, np.abs(got - want).max(), np.linalg.norm(got - want) / np.linalg.norm(want)))
    if got_ext is not None and got_ext.tobytes() != got.tobytes():
        problems.append("%s: external weights give other bits than embedded ones" % name)
    return problems


def with_weight_dtype(model, path, **wd):
    """Model file `model` written to `path` with "weight_dtype" wd[name] on those params."""
    m = json.load(open(model))
    for i in m["initializers"]:
        if i["name"] in wd:
            i["weight_dtype"] = wd[i["name"]]
    json.dump(m, open(path, "w"))
    return path


def check_dump(moec, model, dt):
    problems = []
    ps = params(run([moec, "dump", model, "--weight-dtype=" + dt]).stdout)
    narrowed = [n for n, (t, mark) in ps.items() if mark]
    if not narrowed:
        problems.append("no param narrowed")
    for n, (t, mark) in ps.items():
        if mark and t != dt:
            problems.append("%s marked narrowed but is %s" % (n, t))
        if KEEP_F32.match(n) and t != "f32":
            problems.append("%s is %s; it must stay f32" % (n, t))
    return problems, narrowed


def check_example(moec, ex, dt, work):
    model, x = os.path.join(ex, "model.json"), os.path.join(ex, "x.npy")
    outs = json.load(open(model))["outputs"]
    problems, narrowed = check_dump(moec, model, dt)

    def outputs(tag, cmd):
        files = {o: os.path.join(work, "%s_%s.npy" % (tag, o)) for o in outs}
        run(cmd + sum([["--output", "%s=%s" % kv] for kv in files.items()], []))
        return {o: np.load(p) for o, p in files.items()}

    flag = "--weight-dtype=" + dt
    f32 = outputs("f32", [moec, "run", model, "--interp", "--input", "x=" + x])
    want = outputs("want", [moec, "run", model, "--interp", flag, "--input", "x=" + x])
    exe = os.path.join(work, "model")
    run([moec, "build", model, "-o", exe, flag])
    got = outputs("got", [exe, "--input", "x=" + x])
    external = os.path.basename(ex) == "mixtral_block"  # the same path for every example
    if external:
        exe_ext = os.path.join(work, "model_ext")
        run([moec, "build", model, "-o", exe_ext, flag, "--weights=external"])
        stored = {k: dt for k, (dt, shape, a) in read_st(exe_ext + ".safetensors").items()}
        for n in narrowed:
            if stored.get(n) != ST_NAME[dt]:
                problems.append("external weights hold %s as %s" % (n, stored.get(n)))
        got_ext = outputs("ext", [exe_ext, "--input", "x=" + x, "--weights", exe_ext + ".safetensors"])
    for o in outs:
        problems += native_problems(o, got[o], want[o], got_ext[o] if external else None, dt)
        if f32[o].dtype.kind != "f":
            if not np.array_equal(f32[o], want[o]):
                problems.append("%s (routing) changed with %s weights" % (o, dt))
            continue
        err = np.linalg.norm(want[o] - f32[o]) / max(np.linalg.norm(f32[o]), 1e-30)
        if err > BOUND[dt]:
            problems.append("%s: relative error %.3g against f32 over the bound %g" % (o, err, BOUND[dt]))
        print("  %s %s %s: relative error against f32 %.2e" % (os.path.basename(ex), dt, o, err))
    return problems


def to_bf16(a):
    """Round to nearest even, as moec does."""
    u = a.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def check_stored_bf16(moec, ex, work):
    """Every tensor of the file in bf16, the model declaring f32."""
    model, x = os.path.join(ex, "model.json"), os.path.join(ex, "x.npy")
    w32 = os.path.join(work, "w32.safetensors")
    run([moec, "init-weights", model, "-o", w32])
    narrow = {k: to_bf16(a) for k, (dt, shape, a) in read_st(w32).items()}
    wide = {k: (v.astype(np.uint32) << 16).view(np.float32) for k, v in narrow.items()}
    w16, wwide = os.path.join(work, "w16.safetensors"), os.path.join(work, "wwide.safetensors")
    write_st(w16, {k: ("BF16", a) for k, a in narrow.items()})
    write_st(wwide, {k: ("F32", a) for k, a in wide.items()})
    problems = []
    ps = params(run([moec, "dump", model, "--weights=" + w16]).stdout)
    for n, (t, _) in ps.items():
        want = "f32" if n == "norm_scale" else "bf16"
        if t != want:
            problems.append("stored bf16 file: %s is %s, expected %s" % (n, t, want))
    if params(run([moec, "dump", model, "--weights=" + w16, "--mode=train"]).stdout)["w_up"][0] != "f32":
        problems.append("stored bf16 file: training does not widen w_up to f32")
    out = {}
    for tag, cmd in (("interp16", ["--interp", "--weights=" + w16]),
                     ("interp32", ["--interp", "--weights=" + wwide]),
                     ("native16", ["--weights=" + w16])):
        y = os.path.join(work, tag + ".npy")
        run([moec, "run", model, "--input", "x=" + x, "--output", "y=" + y] + cmd)
        out[tag] = np.load(y)
    if out["interp16"].tobytes() != out["interp32"].tobytes():
        problems.append("stored bf16 file: the interpreter differs from the widened f32 weights")
    if not matches_interpreter(out["native16"], out["interp16"], "bf16"):
        problems.append("stored bf16 file: native differs from the interpreter")
    return problems


def check_overrides(moec, ex, work):
    x = os.path.join(ex, "x.npy")

    def variant(tag, **wd):
        return with_weight_dtype(os.path.join(ex, "model.json"), os.path.join(work, tag + ".json"), **wd)

    problems = []
    ok = variant("override", w_router="bf16", w_up="f32")
    for flags, want in (([], {"w_router": "bf16", "w_up": "f32", "w_gate": "f32"}),
                        (["--weight-dtype=bf16"], {"w_router": "bf16", "w_up": "f32", "w_gate": "bf16"})):
        ps = params(run([moec, "dump", ok] + flags).stdout)
        for n, dt in want.items():
            if ps[n][0] != dt:
                problems.append("weight_dtype override %s: %s is %s, expected %s" % (flags, n, ps[n][0], dt))
    ys = {}
    for tag, extra in (("native", []), ("interp", ["--interp"])):
        ys[tag] = os.path.join(work, "ov_%s.npy" % tag)
        run([moec, "run", ok, "--input", "x=" + x, "--output", "y=" + ys[tag]] + extra)
    if not matches_interpreter(np.load(ys["native"]), np.load(ys["interp"]), "bf16"):
        problems.append("weight_dtype override: native differs from the interpreter")
    for tag, wd, says in (("norm", {"norm_scale": "bf16"}, "param 'norm_scale' has weight_dtype"),
                          ("value", {"w_up": "int3"}, "weight_dtype must be")):
        r = run([moec, "check" if tag == "value" else "dump", variant(tag, **wd)], ok=False)
        if r.returncode != 1 or says not in r.stderr:
            problems.append("weight_dtype %s: exit %d, %s" % (wd, r.returncode, r.stderr.strip()))
    return problems


def check_misuse(moec, model):
    problems = []
    for args in (["run", model, "--weight-dtype=int3", "--input", "x=x.npy"],
                 ["run", model, "--weight-dtype=bf16", "--mode=train", "--input", "x=x.npy"],
                 ["check", model, "--weight-dtype=bf16"]):
        r = run([moec] + args, ok=False)
        if r.returncode != 2 or "--weight-dtype" not in r.stderr:
            problems.append("moec %s: exit %d, %s" % (" ".join(args), r.returncode, r.stderr.strip()))
    return problems


def main():
    moec, examples = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    failed = total = 0
    with tempfile.TemporaryDirectory() as work:
        for name in sorted(os.listdir(examples)):
            ex = os.path.join(examples, name)
            if not os.path.exists(os.path.join(ex, "model.json")):
                continue
            if "--quick" in sys.argv and name != "mixtral_block":
                continue
            for dt in ("bf16", "f16") if name in ("mixtral_block", "deepseek_moe") else ("bf16",):
                total += 1
                try:
                    problems = check_example(moec, ex, dt, work)
                except RuntimeError as e:
                    problems = [str(e)]
                for p in problems:
                    print("FAIL %s %s: %s" % (name, dt, p))
                failed += bool(problems)
        problems = check_misuse(moec, os.path.join(examples, "mixtral_block", "model.json"))
        try:
            problems += check_stored_bf16(moec, os.path.join(examples, "mixtral_block"), work)
            problems += check_overrides(moec, os.path.join(examples, "mixtral_block"), work)
        except RuntimeError as e:
            problems.append(str(e))
        for p in problems:
            print("FAIL misuse, stored file, overrides: %s" % p)
        failed += bool(problems)
    print("%d checks, %d failed" % (total + 1, failed))  # +1: misuse and the stored file
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
