"""Reads and writes safetensors files as NumPy arrays, for the tests; the format is small
enough to need no library."""
import json
import struct

import numpy as np

TYPES = {"F32": np.float32, "I64": np.int64, "I32": np.int32, "I8": np.int8, "U8": np.uint8}


def tensors(path, raw=False):
    """{name: 1-D array}; raw=True gives the bytes (uint8) whatever the dtype."""
    return {name: (np.frombuffer(a.tobytes(), np.uint8) if raw else a.ravel())
            for name, (dt, shape, a) in read(path).items()}


def read(path):
    """{name: (dtype name, shape, array of that shape)}; other dtypes as raw bytes."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        blob = f.read()
    out = {}
    for name, t in head.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        if t["dtype"] in TYPES:
            arr = np.frombuffer(blob[a:b], TYPES[t["dtype"]]).reshape(t["shape"])
        else:
            arr = np.frombuffer(blob[a:b], np.uint8)
        out[name] = (t["dtype"], t["shape"], arr)
    return out


def write(path, tensors):
    """tensors: {name: (dtype name, array)}, written in name order, 8-byte aligned."""
    header, blobs, off = {}, [], 0
    for k in sorted(tensors):
        dt, a = tensors[k]
        b = np.ascontiguousarray(a).tobytes()
        header[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b + b"\0" * ((8 - len(b) % 8) % 8))
        off += len(blobs[-1])
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
