"""ONNX Runtime's own low-precision weights for the bench: rewrites the f32 export of the
block so that each expert MatMul is a com.microsoft MatMulNBits (ONNX Runtime's
block-quantized weight op, the one its CPU build has kernels for), its weights
quantized here in NumPy by the rules of ONNX Runtime's own quantizer (MLAS's blockwise
quantizer, behind its MatMulNBitsQuantizer): what a user deploying with ONNX Runtime
would get for --weight-dtype int8 and int4[:G][:zp].

MatMulNBits (ONNX Runtime's docs/ContribOperators.md): Y = A @ dequant(B) with
dequant(q) = (q - zero_point) * scale per block of block_size values along K.
  B            uint8 [N, k_blocks, blob_size], blob_size = block_size * bits / 8: column n's
               K values block by block; at 4 bits two a byte, the lower K index in the
               low nibble
  scales       A's float type, [N, k_blocks]
  zero_points  optional, uint8 [N, ceil(k_blocks * bits / 8)], packed as B; without
               it the zero point is 2^(bits - 1) (8 for 4 bits, 128 for 8)
  attributes   K, N, bits, block_size (a power of 2, >= 16), accuracy_level (0: A stays
               f32; 4: A quantized to int8 per block, the integer dot-product kernels)
onnxruntime-node 1.30's CPU build runs bits 4 and 8 at both levels and block sizes 16 to
256; at accuracy_level 0 it matches A @ dequant(B) in NumPy to 1e-6 (packing checked)."""
import numpy as np
import onnx
from onnx import helper, numpy_helper

MS_DOMAIN = "com.microsoft"


def scheme(weight_dtype):
    """(bits, block_size, zero points?) for a --weight-dtype, or None when ONNX Runtime's
    MatMulNBits has no counterpart (bf16, f16). int8 uses blocks of 32 along K: moec's
    int8 has one scale per column, but MatMulNBits' block size must be a power of 2 and
    D = 768 is not."""
    parts = (weight_dtype or "").split(":")
    if parts[0] == "int8":
        return 8, 32, False
    if parts[0] == "int4":
        group = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 32
        return 4, group, "zp" in parts
    return None


def quantize(w, bits, block, zp):
    """w [K, N] (a MatMul's B) -> q uint8 [N, k_blocks, block], scales f32 [N, k_blocks],
    zero points uint8 [N, k_blocks] or None. Symmetric, around the default zero point
    2^(bits-1): scale = -w_ext / 2^(bits-1), w_ext the block's weight of largest
    magnitude, which so lands on q = 0, the wider end of the signed range (-8 of -8..7
    at 4 bits; the sign of the scale follows). max |w| / 7 would leave that end unused:
    the bench's int4 output error is then 0.17 instead of 0.15. Asymmetric: the block's
    range (0 included, so that the zero point is in range) over 0 .. 2^bits - 1."""
    k, n = w.shape
    kb = -(-k // block)
    wt = np.zeros((n, kb * block), np.float32)
    wt[:, :k] = w.T  # padding rows are 0: they dequantize to 0 and add nothing
    wt = wt.reshape(n, kb, block)
    top = (1 << bits) - 1
    if zp:
        lo, hi = np.minimum(wt.min(-1), 0), np.maximum(wt.max(-1), 0)
        scale = (hi - lo) / top
        scale[scale == 0] = 1
        zero = np.clip(np.round(-lo / scale), 0, top)
    else:
        ext = np.take_along_axis(wt, np.abs(wt).argmax(-1)[..., None], -1)[..., 0]
        scale = -ext / (1 << (bits - 1))
        scale[scale == 0] = 1
        zero = np.full(scale.shape, 1 << (bits - 1))
    q = np.clip(np.round(wt / scale[..., None]) + zero[..., None], 0, top).astype(np.uint8)
    return q, scale.astype(np.float32), zero.astype(np.uint8) if zp else None


def pack(q, bits):
    """Packs the last axis of q (values < 2^bits) into bytes: at 4 bits, element 2i in
    the low nibble and 2i + 1 in the high one (an odd count padded with a 0)."""
    if bits == 8:
        return q
    if q.shape[-1] % 2:
        q = np.concatenate([q, np.zeros(q.shape[:-1] + (1,), np.uint8)], -1)
    return q[..., 0::2] | (q[..., 1::2] << 4)


def is_expert_weight(init):
    """An expert's [D, F] or [F, D] matrix, not the router's [D, E]: MatMulNBits needs
    blocks of at least 16 along K, and the router is too small to matter."""
    return len(init.dims) == 2 and min(init.dims) >= 16


def nbits_node(mm, w, bits, block, zp):
    """The MatMulNBits node replacing MatMul `mm` (B = w [K, N]) and its new
    initializers (accuracy_level 0 until set_accuracy_level)."""
    k, n = w.shape
    q, scale, zero = quantize(w, bits, block, zp)
    b = mm.input[1]
    inits = [numpy_helper.from_array(pack(q, bits), b + "_q"), numpy_helper.from_array(scale, b + "_scales")]
    if zero is not None:
        inits.append(numpy_helper.from_array(pack(zero, bits), b + "_zp"))
    node = helper.make_node("MatMulNBits", [mm.input[0]] + [i.name for i in inits], list(mm.output),
                            name=mm.name + "_nbits", domain=MS_DOMAIN, K=k, N=n, bits=bits,
                            block_size=block, accuracy_level=0)
    return node, inits


def nbits_model(f32_path, weight_dtype):
    """The model at f32_path with each expert MatMul a MatMulNBits for weight_dtype
    (scheme()); its f32 expert weights dropped."""
    bits, block, zp = scheme(weight_dtype)
    model = onnx.load(f32_path)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes, replaced = [], set()
    for node in g.node:
        b = inits.get(node.input[1]) if node.op_type == "MatMul" else None
        if b is None or not is_expert_weight(b):
            nodes.append(node)
            continue
        new, new_inits = nbits_node(node, numpy_helper.to_array(b), bits, block, zp)
        nodes.append(new)
        g.initializer.extend(new_inits)
        replaced.add(b.name)
    del g.node[:]
    g.node.extend(nodes)
    kept = [i for i in g.initializer if i.name not in replaced]
    del g.initializer[:]
    g.initializer.extend(kept)
    model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    return model


def set_accuracy_level(model, level):
    """Sets every MatMulNBits' accuracy_level: one quantized model serves both levels."""
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for attr in node.attribute:
                if attr.name == "accuracy_level":
                    attr.i = level
