"""The synthetic task of the GW-MoE demo (examples/gw_finetune/demo.py).

Tokens are 32-dim vectors of three classes. Each class is a mixture of four
sub-clusters ("skills"); an expert can specialise in a skill. Pre-training data comes
from one placement of the skills; fine-tuning and test data from a shifted placement
where some skills of different classes come close, so the router grows uncertain
about exactly the tokens that are hard to classify. Everything is seeded: the same
arrays on every machine."""
import numpy as np

D, CLASSES, SKILLS, NOISE = 32, 3, 4, 1.6


def _centres(rng, shift):
    base = rng.standard_normal((CLASSES, SKILLS, D)).astype(np.float64) * 1.6
    if shift:
        # move skill 0 of every class halfway to the mean of skill 0 across classes
        mean = base[:, 0, :].mean(axis=0)
        base[:, 0, :] = 0.5 * base[:, 0, :] + 0.5 * mean
        base += rng.standard_normal(base.shape) * 0.4
    return base


def sample(n, shift, seed):
    """n tokens (float32 [n, D]) and their labels (int64 [n])."""
    centres = _centres(np.random.default_rng(2026), shift)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    skills = rng.integers(0, SKILLS, n)
    x = centres[labels, skills] + rng.standard_normal((n, D)) * NOISE
    return x.astype(np.float32), labels.astype(np.int64)
