#!/usr/bin/python3
"""compare.py GOT.npy WANT.npy RTOL ATOL: exit 0 if the arrays have the same dtype and
shape and agree elementwise within |got - want| <= atol + rtol * |want| (NaN = NaN)."""
import sys

import numpy as np

got, want = np.load(sys.argv[1]), np.load(sys.argv[2])
rtol, atol = float(sys.argv[3]), float(sys.argv[4])
if got.dtype != want.dtype or got.shape != want.shape:
    sys.exit("%s: %s%s, expected %s%s" % (sys.argv[1], got.dtype, got.shape, want.dtype, want.shape))
ok = np.isclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
if not ok.all():
    i = int(np.argmax(~ok.ravel()))
    sys.exit("%s: %d of %d elements differ; first at %d: %r, expected %r" %
             (sys.argv[1], (~ok).sum(), ok.size, i, got.ravel()[i], want.ravel()[i]))
