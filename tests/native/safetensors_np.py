"""Reads a safetensors file into NumPy arrays (F32, I64 and raw bytes), for the
training tests; the format's reader is small enough to need no library."""
import json
import struct

import numpy as np

TYPES = {"F32": np.float32, "I64": np.int64, "I32": np.int32}


def tensors(path, raw=False):
    """{name: 1-D array}; raw=True gives the bytes (uint8) whatever the dtype."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        blob = f.read()
    out = {}
    for name, t in head.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(blob[a:b], np.uint8 if raw else TYPES[t["dtype"]])
    return out
