#!/usr/bin/python3
"""Writes the inputs of the bad-input corpus into tests/diag/cases/.

Each case is a small mutation of one valid model, so the message it must produce is
about exactly one thing. The expected messages (NAME.err) are written by hand and
reviewed; this script only writes the inputs (.json, .args, binary .npy/.safetensors).
Run with /usr/bin/python3 (Debian's numpy)."""
import copy, json, os, struct
import numpy as np

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cases")

BASE = {
    "moec": 1,
    "name": "diag",
    "symbols": {"T": {"max": 64}},
    "inputs": [{"name": "x", "dtype": "float32", "shape": ["T", 16]}],
    "outputs": ["y"],
    "initializers": [
        {"name": "w_gate", "dtype": "float32", "shape": [16, 4],
         "init": {"dist": "normal", "std": 0.1, "seed": 1}},
        {"name": "w_up", "dtype": "float32", "shape": [4, 16, 8],
         "init": {"dist": "normal", "std": 0.1, "seed": 2}},
        {"name": "w_down", "dtype": "float32", "shape": [4, 8, 16],
         "init": {"dist": "normal", "std": 0.1, "seed": 3}},
    ],
    "nodes": [
        {"name": "gate", "op": "MatMul", "inputs": ["x", "w_gate"], "outputs": ["logits"]},
        {"name": "route", "op": "moe.TopKRoute", "inputs": ["logits"],
         "outputs": ["expert", "weight"], "attrs": {"k": 2}},
        {"name": "dispatch", "op": "moe.Dispatch", "inputs": ["x", "expert", "weight"],
         "outputs": ["rows", "offsets", "row_token", "row_weight"],
         "attrs": {"num_experts": 4}},
        {"name": "up", "op": "moe.ExpertMatMul", "inputs": ["rows", "offsets", "w_up"],
         "outputs": ["h"]},
        {"name": "act", "op": "Relu", "inputs": ["h"], "outputs": ["a"]},
        {"name": "down", "op": "moe.ExpertMatMul", "inputs": ["a", "offsets", "w_down"],
         "outputs": ["o"]},
        {"name": "combine", "op": "moe.Combine",
         "inputs": ["o", "row_token", "row_weight", "offsets", "x"], "outputs": ["y"]},
    ],
}


def base():
    return copy.deepcopy(BASE)


def node(m, name):
    return next(n for n in m["nodes"] if n["name"] == name)


def init(m, name):
    return next(i for i in m["initializers"] if i["name"] == name)


def write(name, model=None, text=None, args=None, status=None):
    if model is not None:
        text = json.dumps(model, indent=1) + "\n"
    if text is not None:
        with open(os.path.join(HERE, name + ".json"), "w") as f:
            f.write(text)
    if args is not None:
        with open(os.path.join(HERE, name + ".args"), "w") as f:
            f.write(args + "\n")
    if status is not None:
        with open(os.path.join(HERE, name + ".status"), "w") as f:
            f.write(f"{status}\n")


def mutate(name, fn, **kw):
    m = base()
    fn(m)
    write(name, m, **kw)


def safetensors_bytes(tensors, header_len_override=None, header_override=None):
    header, blobs, off = {}, [], 0
    for tname, (dtype, arr) in tensors.items():
        raw = arr.tobytes()
        header[tname] = {"dtype": dtype, "shape": list(arr.shape),
                         "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if header_override:
        header_override(header)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    n = len(h) if header_len_override is None else header_len_override
    return struct.pack("<Q", n) + h + b"".join(blobs)


def file_weights_model():
    """The base model with w_gate taken from a weights file."""
    m = base()
    init(m, "w_gate").pop("init")
    return m


def write_bin(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


def npy_bytes(arr, fortran=False, magic=b"\x93NUMPY", version=(1, 0)):
    descr = np.lib.format.dtype_to_descr(arr.dtype)
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (
        descr, "True" if fortran else "False", repr(tuple(arr.shape)))
    hdr = d.encode() + b" " * (-(len(d) + 11) % 64) + b"\n"
    body = (np.asfortranarray(arr) if fortran else arr).tobytes(order="F" if fortran else "C")
    return magic + bytes(version) + struct.pack("<H", len(hdr)) + hdr + body


def json_cases():
    write("01-json-syntax", text='{"moec": 1, "name": "diag"\n "symbols": {}}\n')
    write("02-json-truncated", text='{"moec": 1, "name": "diag", "inputs": [\n')
    write("03-json-not-object", text="[1, 2, 3]\n")
    mutate("04-missing-version", lambda m: m.pop("moec"))
    mutate("05-wrong-version", lambda m: m.update(moec=2))
    mutate("06-bad-name", lambda m: m.update(name="2-bad name"))
    mutate("07-unknown-top-key", lambda m: m.update(nodez=[]))
    mutate("08-unknown-op", lambda m: node(m, "act").update(op="Swish"))
    mutate("09-too-few-inputs", lambda m: node(m, "gate").update(inputs=["x"]))
    mutate("10-too-few-outputs", lambda m: node(m, "route").update(outputs=["expert"]))
    mutate("11-attr-wrong-type", lambda m: node(m, "route").update(attrs={"k": "two"}))
    mutate("12-attr-float-for-int", lambda m: node(m, "route").update(attrs={"k": 2.5}))
    mutate("13-attr-unknown", lambda m: node(m, "route").update(attrs={"k": 2, "topk": 2}))
    mutate("14-attr-missing", lambda m: node(m, "route").update(attrs={}))
    mutate("15-attr-bad-choice",
           lambda m: node(m, "route").update(attrs={"k": 2, "score": "softmaxx"}))
    mutate("16-undefined-input", lambda m: node(m, "act").update(inputs=["hh"]))
    mutate("17-duplicate-output", lambda m: node(m, "act").update(outputs=["h"]))
    mutate("18-initializer-shadows-input",
           lambda m: m["initializers"].append({"name": "x", "dtype": "float32", "shape": [1],
                                               "data": [0]}))
    def cycle(m):
        node(m, "act").update(inputs=["o"])
    mutate("19-cycle", cycle)
    mutate("20-undefined-graph-output", lambda m: m.update(outputs=["yy"]))
    mutate("21-matmul-shape-mismatch", lambda m: init(m, "w_gate").update(shape=[8, 4]))
    mutate("22-k-above-experts", lambda m: node(m, "route").update(attrs={"k": 5}))
    mutate("23-undeclared-symbol",
           lambda m: m["inputs"][0].update(shape=["N", 16]))
    mutate("24-symbol-max-zero", lambda m: m.update(symbols={"T": {"max": 0}}))
    mutate("25-negative-dim", lambda m: init(m, "w_gate").update(shape=[16, -4]))
    mutate("26-huge-dims",
           lambda m: init(m, "w_up").update(shape=[4, 1000000000, 1000000000]))
    mutate("27-unknown-dtype", lambda m: m["inputs"][0].update(dtype="float33"))
    mutate("28-inline-data-count",
           lambda m: m["initializers"].append({"name": "c", "dtype": "float32", "shape": [3],
                                               "data": [1, 2]}))
    write("29-inline-data-infinite", text=json.dumps(base())[:-1].replace(
        '"initializers": [', '"initializers": [{"name": "c", "dtype": "float32", '
        '"shape": [2], "data": [1.0, 1e999]}, ', 1) + "}\n")
    mutate("30-init-unknown-dist",
           lambda m: init(m, "w_gate").update(init={"dist": "gauss", "std": 1, "seed": 1}))
    mutate("31-init-missing-std",
           lambda m: init(m, "w_gate").update(init={"dist": "normal", "seed": 1}))
    mutate("44-capacity-negative",
           lambda m: node(m, "route").update(attrs={"k": 2, "capacity": -1}))
    mutate("45-expert-count-mismatch",
           lambda m: node(m, "dispatch").update(attrs={"num_experts": 8}))
    mutate("46-groups-not-dividing",
           lambda m: node(m, "route").update(attrs={"k": 2, "groups": 3}))
    mutate("47-int-data-not-integral",
           lambda m: m["initializers"].append({"name": "c", "dtype": "int64", "shape": [2],
                                               "data": [1, 2.5]}))
    mutate("48-data-and-init",
           lambda m: init(m, "w_gate").update(data=[0.0] * 64))
    mutate("49-missing-nodes", lambda m: m.pop("nodes"))
    mutate("50-node-name-not-string", lambda m: node(m, "act").update(name=7))


def weights_cases():
    good = np.arange(64, dtype=np.float32).reshape(16, 4) / 64
    m = file_weights_model()
    m["weights"] = "missing.safetensors"
    write("32-weights-file-missing", m)
    cases = {
        "33-st-header-too-long": safetensors_bytes({"w_gate": ("F32", good)},
                                                   header_len_override=1 << 20),
        "34-st-offsets-outside": safetensors_bytes(
            {"w_gate": ("F32", good)},
            header_override=lambda h: h["w_gate"].update(data_offsets=[0, 4096])),
        "35-st-dtype-mismatch": safetensors_bytes({"w_gate": ("I32", (good * 64).astype(np.int32))}),
        "36-st-shape-mismatch": safetensors_bytes({"w_gate": ("F32", good.reshape(8, 8))}),
        "37-st-tensor-missing": safetensors_bytes({"w_other": ("F32", good)}),
        "38-st-size-lies": safetensors_bytes(
            {"w_gate": ("F32", good)},
            header_override=lambda h: h["w_gate"].update(shape=[16, 5])),
        "39-st-not-json": struct.pack("<Q", 8) + b"not json",
        "40-st-too-short": b"\x10\x00",
    }
    for name, data in cases.items():
        write_bin(name + ".safetensors", data)
        m = file_weights_model()
        m["weights"] = name + ".safetensors"
        write(name, m)


def run_cases():
    write("60-run", base())  # the valid model every run case uses
    x = np.linspace(-1, 1, 8 * 16, dtype=np.float32).reshape(8, 16)
    bins = {
        "61-npy-bad-magic.npy": npy_bytes(x, magic=b"\x93NUMPX"),
        "62-npy-truncated.npy": npy_bytes(x)[:-10],
        "63-npy-float64.npy": npy_bytes(x.astype(np.float64)),
        "64-npy-fortran.npy": npy_bytes(x, fortran=True),
        "65-npy-big-endian.npy": npy_bytes(x.astype(">f4")),
        "66-symbol-above-max.npy": npy_bytes(np.zeros((65, 16), np.float32)),
        "67-input-shape.npy": npy_bytes(np.zeros((8, 12), np.float32)),
        "68-npy-rank.npy": npy_bytes(np.zeros((16,), np.float32)),
        "x.npy": npy_bytes(x),
    }
    for name, data in bins.items():
        write_bin(name, data)
    for name in [n[:-4] for n in bins if n != "x.npy"]:
        write(name, args=f"run 60-run.json --input x={name}.npy --output y=OUT.npy")
    write("69-sym-disagrees", args="run 60-run.json --input x=x.npy --sym T=7 --output y=OUT.npy")
    write("70-init-weights-bad-model", args="init-weights 21-matmul-shape-mismatch.json -o OUT")
    write("71-misuse-unknown-option", args="check 60-run.json --fast", status=2)
    write("72-misuse-unknown-input", args="run 60-run.json --input z=x.npy", status=2)
    write("73-misuse-missing-input", args="run 60-run.json", status=2)
    write("74-model-file-missing", args="check no-such-model.json")


def loss_cases():
    """SoftmaxCrossEntropyLoss: a shape error, and a label outside [0, C) at run time in the
    interpreter and in native code."""
    def ce_weights(m):
        m["inputs"].append({"name": "label", "dtype": "int64", "shape": ["T"]})
        m["initializers"].append({"name": "cw", "dtype": "float32", "shape": [3],
                                  "data": [1, 1, 1]})
        m["nodes"].append({"name": "ce", "op": "SoftmaxCrossEntropyLoss",
                           "inputs": ["logits", "label", "cw"], "outputs": ["loss"]})
        m["outputs"].append("loss")
    mutate("51-ce-weights-shape", ce_weights)
    write("75-ce-label", {
        "moec": 1, "name": "ce", "symbols": {"T": {"max": 8}},
        "inputs": [{"name": "s", "dtype": "float32", "shape": ["T", 4]},
                   {"name": "l", "dtype": "int64", "shape": ["T"]}],
        "outputs": ["loss"],
        "nodes": [{"name": "ce", "op": "SoftmaxCrossEntropyLoss", "inputs": ["s", "l"],
                   "outputs": ["loss"], "attrs": {"ignore_index": -100}}]})
    write_bin("75-ce-label-s.npy", npy_bytes(np.zeros((3, 4), np.float32)))
    write_bin("75-ce-label-l.npy", npy_bytes(np.array([0, -100, 4], np.int64)))
    inputs = "--input s=75-ce-label-s.npy --input l=75-ce-label-l.npy --output loss=OUT.npy"
    write("75-ce-label", args="run 75-ce-label.json --interp " + inputs)
    write("76-ce-label-native", args="run 75-ce-label.json " + inputs)


def fused_norm_cases():
    """moe.FusedNorm written by hand: an RMS norm given a bias, and a program whose
    result is not x's shape."""
    def model(inputs, attrs, extra):
        return {"moec": 1, "name": "fn", "symbols": {"T": {"max": 8}},
                "inputs": [{"name": "x", "dtype": "float32", "shape": ["T", 4]},
                           {"name": "g", "dtype": "float32", "shape": [4]},
                           {"name": "e", "dtype": "float32", "shape": extra}],
                "outputs": ["y"],
                "nodes": [{"name": "fn", "op": "moe.FusedNorm", "inputs": inputs,
                           "outputs": ["y"], "attrs": attrs}]}
    write("78-fused-norm-rms-bias", model(["x", "g", "g"], {"kind": "rms", "program": [13, 0, -1]}, [4]))
    write("79-fused-norm-program-shape",
          model(["x", "g", "", "e"], {"kind": "layer", "program": [0, 0, 1]}, [3, "T", 4]))


def onnx_model(nodes=None, opset=17, x_type=None, x_shape=("batch", 4), inits=None, domain=None):
    """A small ONNX model (python3-onnx): y = Relu(x @ W), or the nodes given."""
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    nodes = nodes or [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", x_type or TensorProto.FLOAT,
                                                                     list(x_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          inits if inits is not None else [w])
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(g, opset_imports=opsets).SerializeToString()


def moe_onnx(inputs=("x", "r", "fc1", "", "fc2"), **attrs):
    """A com.microsoft.MoE node (E = 2, H = 4, I = 3) with the inputs and attributes given."""
    from onnx import TensorProto, helper, numpy_helper
    f = 2 if attrs.get("activation_type") == "swiglu" else 1
    inits = [numpy_helper.from_array(np.ones((2, 3 * f, 4), np.float32), "fc1"),
             numpy_helper.from_array(np.ones((2, 4, 3), np.float32), "fc2"),
             numpy_helper.from_array(np.ones((2, 3 * f), np.float32), "b1")]
    node = helper.make_node("MoE", list(inputs), ["y"], domain="com.microsoft", **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
                                        helper.make_tensor_value_info("r", TensorProto.FLOAT, ["batch", 2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(g, opset_imports=opsets).SerializeToString()


def onnx_cases():
    """ONNX models moec cannot read, each for one reason; `moec check` names it."""
    from onnx import TensorProto, helper, numpy_helper
    ext = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    ext.ClearField("raw_data")
    ext.data_location = TensorProto.EXTERNAL
    ext.external_data.add(key="location", value="w.bin")  # not there
    escape = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    escape.ClearField("raw_data")
    escape.data_location = TensorProto.EXTERNAL
    escape.external_data.add(key="location", value="../w.bin")
    cases = {
        "90-onnx-unknown-op": onnx_model([helper.make_node("NonMaxSuppression", ["x", "W"], ["y"], name="nms")]),
        "91-onnx-domain": onnx_model([helper.make_node("FusedGemm", ["x", "W"], ["y"], domain="com.example")],
                                     domain="com.example"),
        "92-onnx-opset": onnx_model(opset=11),
        "93-onnx-dtype": onnx_model(x_type=TensorProto.DOUBLE),
        "94-onnx-no-max": onnx_model(),
        "95-onnx-unnamed-dim": onnx_model(x_shape=(None, 4)),
        "96-onnx-truncated": onnx_model()[:-7],
        "97-onnx-external-data": onnx_model(inits=[ext]),
        "89-onnx-external-escape": onnx_model(inits=[escape]),
        "88-onnx-constant-string": onnx_model([helper.make_node("Constant", [], ["y"], value_string="s")]),
    }
    for name, data in cases.items():
        write_bin(name + ".onnx", data)
        more = "" if name == "94-onnx-no-max" else " --max batch=4"
        write(name, args="check %s.onnx%s" % (name, more))
    moe_cases = {
        "80-onnx-moe-bias": moe_onnx(["x", "r", "fc1", "b1", "fc2"]),
        "81-onnx-moe-sparse-mixer": moe_onnx(use_sparse_mixer=1, k=2),
        "82-onnx-moe-swiglu-fusion": moe_onnx(activation_type="swiglu"),
        "83-onnx-moe-identity": moe_onnx(activation_type="identity"),
        "84-onnx-moe-weights-not-initializers": moe_onnx(["x", "r", "x", "", "fc2"]),
    }
    for name, data in moe_cases.items():
        write_bin(name + ".onnx", data)
        write(name, args="check %s.onnx --max batch=4" % name)
    write("98-onnx-max-unused", args="check 60-run.json --max B=4")
    write("85-max-bad-value", args="check 60-run.json --max T=0", status=2)
    write("99-onnx-import-bad", args="import 90-onnx-unknown-op.onnx --max batch=4 -o OUT.json")


if __name__ == "__main__":
    os.makedirs(HERE, exist_ok=True)
    json_cases()
    weights_cases()
    run_cases()
    loss_cases()
    fused_norm_cases()
    onnx_cases()
