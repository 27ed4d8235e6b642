#!/usr/bin/python3
"""GW-MoE fine-tuning demo (ROUTING.md §3.10), run end to end with moec.

1. pre-train a small MoE classifier (top-1 routing, E=4) on the task of task.py;
2. fine-tune it twice on shifted data: with plain top-1, and with GW-MoE (uncertain
   tokens broadcast to every expert during training);
3. evaluate all three on held-out shifted data: accuracy, and the share of uncertain
   tokens (routing entropy >= tau);
4. print the table and draw it (gnuplot) as gw_finetune.png.

Both fine-tuned models run inference as plain top-1: GW costs nothing at inference.
usage: demo.py [--moec build/moec] [--out DIR]"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import task  # noqa: E402

E, F, TAU, MAX_BROADCAST, BATCH = 4, 32, 1.0, 256, 2048
STEPS_PRE, STEPS_FT, LR, FT_TOKENS = 200, 40, 3e-3, 256


def model(name, router, training):
    """The classifier: router, MoE FFN (ReLU), residual, linear head; in training the
    cross-entropy loss against `labels` is the output."""
    def w(n, shape, std, seed):
        return {"name": n, "dtype": "float32", "shape": shape,
                "init": {"dist": "normal", "std": std, "seed": seed}}
    route = {"name": "route", "op": router, "inputs": ["logits"], "outputs": ["expert", "weight"],
             "attrs": {"k": 1}}
    if router == "moe.GWRoute":
        route["attrs"].update({"threshold": TAU, "max_broadcast": MAX_BROADCAST})
    nodes = [
        {"name": "router", "op": "MatMul", "inputs": ["x", "w_router"], "outputs": ["logits"]},
        route,
        {"name": "dispatch", "op": "moe.Dispatch", "inputs": ["x", "expert", "weight"],
         "outputs": ["rows", "offsets", "row_token", "row_weight"], "attrs": {"num_experts": E}},
        {"name": "up", "op": "moe.ExpertMatMul", "inputs": ["rows", "offsets", "w_up"], "outputs": ["u"]},
        {"name": "relu", "op": "Relu", "inputs": ["u"], "outputs": ["a"]},
        {"name": "down", "op": "moe.ExpertMatMul", "inputs": ["a", "offsets", "w_down"], "outputs": ["o"]},
        {"name": "combine", "op": "moe.Combine", "inputs": ["o", "row_token", "row_weight", "offsets", "x"],
         "outputs": ["moe_out"]},
        {"name": "residual", "op": "Add", "inputs": ["x", "moe_out"], "outputs": ["h"]},
        {"name": "classify", "op": "MatMul", "inputs": ["h", "w_cls"], "outputs": ["y"]}]
    inputs = [{"name": "x", "dtype": "float32", "shape": ["T", task.D]}]
    outputs = ["y", "logits"]
    if training:
        inputs.append({"name": "labels", "dtype": "int64", "shape": ["T"]})
        nodes.append({"name": "ce", "op": "SoftmaxCrossEntropyLoss", "inputs": ["y", "labels"],
                      "outputs": ["loss"]})
        outputs = ["loss"]
    return {"moec": 1, "name": name, "symbols": {"T": {"max": BATCH}}, "inputs": inputs,
            "outputs": outputs,
            "initializers": [w("w_router", [task.D, E], 0.3, 1), w("w_up", [E, task.D, F], 0.2, 2),
                             w("w_down", [E, F, task.D], 0.2, 3), w("w_cls", [task.D, task.CLASSES], 0.3, 4)],
            "nodes": nodes}


def sh(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("%s failed:\n%s" % (" ".join(cmd[:2]), p.stderr.strip()))
    return p.stdout


def train(a, name, router, data, steps, weights_in, weights_out):
    path = os.path.join(a.out, name + ".json")
    with open(path, "w") as f:
        json.dump(model(name, router, True), f)
    exe = os.path.join(a.out, name)
    extra = ["--weights-file=" + weights_in] if weights_in else []
    sh([a.moec, "build", path, "-o", exe, "--mode=train", "--lr", str(LR)] + extra)
    log = sh([exe, "--input", "x=" + data[0], "--input", "labels=" + data[1], "--steps", str(steps),
              "--save-weights", weights_out])
    losses = [float(line.split("loss=")[1]) for line in log.splitlines() if "loss=" in line]
    return losses[0], losses[-1]


def evaluate(a, weights, data):
    path = os.path.join(a.out, "eval.json")
    with open(path, "w") as f:
        json.dump(model("eval", "moe.TopKRoute", False), f)
    y, logits = os.path.join(a.out, "y.npy"), os.path.join(a.out, "router.npy")
    sh([a.moec, "run", path, "--weights-file=" + weights, "--input", "x=" + data[0],
        "--output", "y=" + y, "--output", "logits=" + logits])
    labels = np.load(data[1])
    acc = float((np.load(y).argmax(axis=1) == labels).mean())
    z = np.load(logits).astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    entropy = -(p * np.log(p + 1e-5)).sum(axis=1)
    return acc, float((entropy >= TAU).mean())


def save(a, name, xy):
    paths = (os.path.join(a.out, name + "_x.npy"), os.path.join(a.out, name + "_y.npy"))
    np.save(paths[0], xy[0])
    np.save(paths[1], xy[1])
    return paths


def plot(a, rows):
    dat = os.path.join(a.out, "results.dat")
    with open(dat, "w") as f:
        for name, acc, unc in rows:
            f.write('"%s" %.4f %.4f\n' % (name, acc, unc))
    png = os.path.join(a.out, "gw_finetune.png")
    script = ("set terminal pngcairo size 800,480; set output '%s'; set style data histograms;"
              "set style fill solid 0.8; set yrange [0:1.25]; set grid ytics;"
              "set title 'GW-MoE fine-tuning (moec)'; set key top center horizontal;"
              "plot '%s' using 2:xtic(1) title 'test accuracy', '' using 3 title 'uncertain tokens (H >= %.2f)'"
              % (png, dat, TAU))
    subprocess.run(["gnuplot", "-e", script], check=True)
    return png


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--moec", default=os.path.join(here, "..", "..", "build", "moec"))
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "build", "gw_demo"))
    a = ap.parse_args()
    a.moec = os.path.abspath(a.moec)
    os.makedirs(a.out, exist_ok=True)
    pre = save(a, "pre", task.sample(BATCH, shift=False, seed=1))
    ft = save(a, "ft", task.sample(FT_TOKENS, shift=True, seed=2))
    test = save(a, "test", task.sample(BATCH, shift=True, seed=3))
    wpre = os.path.join(a.out, "pretrained.safetensors")
    l0, l1 = train(a, "pretrain", "moe.TopKRoute", pre, STEPS_PRE, None, wpre)
    print("pre-training: loss %.4f -> %.4f (%d AdamW steps)" % (l0, l1, STEPS_PRE))
    rows = [("pre-trained",) + evaluate(a, wpre, test)]
    for label, router in (("fine-tuned top-1", "moe.TopKRoute"), ("fine-tuned GW", "moe.GWRoute")):
        w = os.path.join(a.out, label.split()[-1].replace("-", "") + ".safetensors")
        l0, l1 = train(a, "ft_" + router.split(".")[1].lower(), router, ft, STEPS_FT, wpre, w)
        print("%s: loss %.4f -> %.4f (%d steps)" % (label, l0, l1, STEPS_FT))
        rows.append((label,) + evaluate(a, w, test))
    print("\n%-18s %10s %18s" % ("model", "accuracy", "uncertain share"))
    for name, acc, unc in rows:
        print("%-18s %10.3f %18.3f" % (name, acc, unc))
    print("\nplot: %s" % plot(a, rows))
    # A demo that trained nothing must not look like a result.
    if l1 > l0 / 5 or min(acc for _, acc, _ in rows) < 0.6:
        sys.exit("training did not work: losses or accuracies are off")


if __name__ == "__main__":
    main()
