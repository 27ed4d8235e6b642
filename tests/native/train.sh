#!/usr/bin/env bash
# Training: the compiled training step against the interpreter's, step by step and
# weight by weight, with AdamW and with SGD (momentum); then a longer compiled run must
# cut the cross-entropy at least 5-fold on its batch (32 tokens, random labels, which a
# model of 1.5k weights can fit).
# usage: train.sh MOEC [--quick]
# --quick (the sanitizer build, where each compile of the training step takes seconds):
# AdamW only, and resuming checked in the interpreter only.
set -euo pipefail
moec=$(realpath "$1")
here=$(dirname "$(realpath "$0")")
model=$here/train_model.json
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export PYTHONPATH=$here
/usr/bin/python3 -c "
import numpy as np
r = np.random.default_rng(5)
np.save('x.npy', r.standard_normal((32, 12)).astype(np.float32))
np.save('labels.npy', r.integers(0, 3, 32).astype(np.int64))"
data=(--input x=x.npy --input labels=labels.npy)

compare() { # interp.log native.log interp.st native.st
    /usr/bin/python3 - "$@" <<'PY'
import sys
import numpy as np

def losses(path):
    return [[float(kv.split("=")[1]) for kv in line.split()[2:]]
            for line in open(path) if line.startswith("step ")]

from safetensors_np import tensors

a, b = np.array(losses(sys.argv[1])), np.array(losses(sys.argv[2]))
assert a.shape == b.shape and a.size > 0, "step logs differ in length: %s vs %s" % (a.shape, b.shape)
assert np.allclose(a, b, rtol=1e-4, atol=1e-6), "losses differ:\n%s\n%s" % (a, b)
ta, tb = tensors(sys.argv[3]), tensors(sys.argv[4])
assert sorted(ta) == sorted(tb), "saved tensors differ: %s vs %s" % (sorted(ta), sorted(tb))
for k in ta:
    assert np.allclose(ta[k], tb[k], rtol=1e-4, atol=1e-5), "weights %s differ by %g" % (k, np.abs(ta[k] - tb[k]).max())
print("steps %d, tensors %d: compiled = interpreter" % (len(a), len(ta)))
PY
}

quick=${2:-}
optimizers=("--optimizer=adamw --lr 0.01" "--optimizer=sgd --lr 0.05 --momentum 0.9")
engines=(--interp "")
[ "$quick" != --quick ] || { optimizers=("${optimizers[0]}"); engines=(--interp); }
for opt in "${optimizers[@]}"; do
    read -r -a flags <<<"$opt"
    "$moec" run "$model" --mode=train --interp "${flags[@]}" "${data[@]}" --steps 6 \
        --save-weights interp.safetensors >interp.log
    "$moec" run "$model" --mode=train "${flags[@]}" "${data[@]}" --steps 6 \
        --save-weights native.safetensors >native.log
    echo -n "$opt: "
    compare interp.log native.log interp.safetensors native.safetensors
done

# Fine-tuning a subset: only w_cls moves, the other weights stay bit for bit.
"$moec" init-weights "$model" -o init.safetensors
"$moec" run "$model" --mode=train --train-params=w_cls --lr 0.05 "${data[@]}" --steps 3 \
    --save-weights subset.safetensors >/dev/null
/usr/bin/python3 - init.safetensors subset.safetensors <<'PY'
import sys
import numpy as np
from safetensors_np import tensors
a, b = tensors(sys.argv[1], raw=True), tensors(sys.argv[2], raw=True)
for k in ("w_router", "w_up", "w_down"):
    assert np.array_equal(a[k], b[k]), "%s changed although only w_cls trains" % k
assert not np.array_equal(a["w_cls"], b["w_cls"]), "w_cls did not change"
assert not any(k.startswith("opt.w_up") for k in b), "optimizer state for a frozen param"
print("--train-params=w_cls: only w_cls changed")
PY

# Resuming from saved weights continues the optimizer: 3 steps + 2 steps = 5 steps, with
# the same weights and state as 5 steps in one run (interpreter, then compiled).
for engine in "${engines[@]}"; do
    "$moec" run "$model" --mode=train $engine --lr 0.01 "${data[@]}" --steps 3 --save-weights a.st >/dev/null
    "$moec" run "$model" --mode=train $engine --lr 0.01 "${data[@]}" --steps 2 --weights=a.st \
        --save-weights b.st >/dev/null
    "$moec" run "$model" --mode=train $engine --lr 0.01 "${data[@]}" --steps 5 --save-weights c.st >/dev/null
    /usr/bin/python3 - b.st c.st <<'PY'
import sys
import numpy as np
from safetensors_np import tensors
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
assert a["opt.step"][0] == 5, "resumed step counter is %d, expected 5" % a["opt.step"][0]
for k in b:
    assert np.allclose(a[k], b[k], rtol=1e-6, atol=1e-7), "%s differs after resuming" % k
print("resume: 3 + 2 steps = 5 steps")
PY
done

"$moec" run "$model" --mode=train --optimizer=adamw --lr 0.02 "${data[@]}" --steps 300 >long.log
/usr/bin/python3 - long.log <<'PY'
import sys
ce = [float(line.split("ce=")[1].split()[0]) for line in open(sys.argv[1]) if line.startswith("step ")]
assert len(ce) == 300, len(ce)
print("cross-entropy %.4f -> %.4f over %d steps" % (ce[0], ce[-1], len(ce)))
assert ce[-1] <= ce[0] / 5, "training cut the loss only %.2f-fold" % (ce[0] / ce[-1])
PY
