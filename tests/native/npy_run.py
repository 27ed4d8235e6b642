"""Runs moec, and the models it compiles, on NumPy arrays: the native tests' one way to
do it (inputs and outputs through .npy files)."""
import os
import subprocess

import numpy as np


def run(cmd):
    """The command's stdout; RuntimeError with its stderr when it fails."""
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd[:3]), r.returncode, r.stderr.strip()))
    return r.stdout


def run_model(cmd, feeds, d, tag, out="y"):
    """Output `out` of `cmd` (moec run ..., or a built model) on the arrays `feeds`
    ({input name: array}), its files in d named after tag."""
    args = []
    for name, a in feeds.items():
        p = os.path.join(d, "%s_%s.npy" % (tag, name))
        np.save(p, a)
        args += ["--input", "%s=%s" % (name, p)]
    path = os.path.join(d, "%s_%s.npy" % (tag, out))
    run(cmd + args + ["--output", "%s=%s" % (out, path)])
    return np.load(path)
