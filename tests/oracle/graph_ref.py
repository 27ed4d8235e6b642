"""Evaluates a moec JSON model in NumPy: the standard ops the examples use and every
moe.* op through moe_ref. Attribute defaults are read from ir/attrs.def."""
import json, os, re, struct
import numpy as np
import moe_ref as R

F = np.float32
HERE = os.path.dirname(os.path.abspath(__file__))
ST_DTYPES = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64, "BOOL": np.bool_}


def attr_defaults():
    """{op name: {attr: default}} of the DEF rows of ir/attrs.def: its comments dropped,
    its *_ROWS(OP) groups applied where an op takes them (the C preprocessor's reading of
    the same rows, for the forms attrs.def uses)."""
    ops = {}
    for line in open(os.path.join(HERE, "..", "..", "ir", "ops.def")):
        m = re.match(r'OP\((\w+),\s*"([^"]+)"', line)
        if m:
            ops[m.group(1)] = m.group(2)
    text = open(os.path.join(HERE, "..", "..", "ir", "attrs.def")).read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S).replace("\\\n", " ")
    groups, body = {}, []
    for line in text.split("\n"):
        m = re.match(r"\s*#define\s+(\w+)\((\w+)\)\s+(.*)", line)
        if m:
            groups[m.group(1)] = (m.group(2), m.group(3))
        elif not line.lstrip().startswith("#"):
            body.append(line)
    body = "\n".join(body)
    for name, (param, rows) in groups.items():
        body = re.sub(r"\b%s\((\w+)\)" % name,
                      lambda m: re.sub(r"\b%s\b" % param, m.group(1), rows), body)
    out = {}
    for m in re.finditer(r'ATTR\((\w+),\s*(\w+),\s*(\w+),\s*(\w+),\s*("[^"]*"|[-+\w.]+)', body):
        op, name, kind, presence, dflt = m.groups()
        if presence != "DEF":
            continue
        val = int(dflt) if kind == "INT" else float(dflt) if kind == "FLOAT" else dflt.strip('"')
        out.setdefault(ops[op], {})[name] = val
    return out


DEFAULTS = attr_defaults()


def read_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        b, e = h["data_offsets"]
        out[name] = np.frombuffer(data[b:e], dtype=ST_DTYPES[h["dtype"]]).reshape(h["shape"])
    return out


def run_node(op, a, ins, training):
    g = lambda i: ins[i] if i < len(ins) else None
    if op == "MatMul":
        return [(g(0) @ g(1)).astype(F)]
    if op == "Add":
        return [(g(0) + g(1)).astype(F)]
    if op == "Mul":
        return [(g(0) * g(1)).astype(F)]
    if op == "Relu":
        return [R.act("relu", g(0))]
    if op == "Gelu":
        return [R.act("gelu", g(0))]
    if op == "moe.Silu":
        return [R.act("silu", g(0))]
    if op == "Softmax":
        return [R.softmax(g(0), axis=a["axis"])]
    if op == "RMSNormalization":
        x = g(0)
        ms = np.mean(x * x, axis=-1, keepdims=True, dtype=F)
        return [(x / np.sqrt(ms + F(a["epsilon"])) * g(1)).astype(F)]
    base = {k: a[k] for k in ("score", "capacity", "order", "scale", "groups", "topk_groups") if k in a}
    if op == "moe.TopKRoute":
        e, w, ch = R.topk_route(g(0), a["k"], bias=g(1), normalize=a["normalize"], **base)
        return [e, w, ch]
    if op == "moe.TopPRoute":
        return list(R.topp_route(g(0), a["p"], a["max_k"], a["inclusive"]))
    if op == "moe.ExpertChoiceRoute":
        return list(R.expert_choice(g(0), a["capacity"], g(1)))
    if op == "moe.ResonanceRoute":
        return list(R.resonance(g(0), a["num_experts"], a["k"], a["capacity"], a["weight_mode"]))
    if op == "moe.GWRoute":
        return list(R.gw_route(g(0), training, a["k"], a["threshold"], a["max_broadcast"], bias=g(1),
                               mask=g(2), entropy_unit=a["entropy_unit"], eps=a["eps"],
                               normalize=a["normalize"], **base))
    if op == "moe.MoE":
        e, w, _ = R.topk_route(g(1), a["k"], bias=g(5), normalize=a["normalize_routing_weights"], **base)
        y = R.moe_layer(g(0), e, w, g(2), g(3), g(4), a["activation_type"])
        if g(6) is not None:
            y = (y + R.ffn(g(0), g(6), g(7), g(8), a["activation_type"])).astype(F)
        return [y]
    if op == "moe.LoadBalanceLoss":
        return [R.load_balance_loss(g(0), g(1), g(2), a["scale"], a["count"], a["scope"], a.get("seq_len"), a["coef"])]
    if op == "moe.ZLoss":
        return [R.z_loss(g(0), g(1), a["coef"])]
    if op == "moe.EntropyLoss":
        return [R.entropy_loss(g(0), g(1), a["coef"])]
    raise NotImplementedError(op)


# Dispatch -> ExpertMatMul -> ... -> Combine chains are evaluated as one MoE layer:
# the oracle checks the meaning (ROUTING §1.2), not moec's buffer layout.
def evaluate(model, inputs, weights, training=False):
    env = dict(inputs)
    for init in model.get("initializers", []):
        if "data" in init:
            env[init["name"]] = np.array(init["data"], dtype=init["dtype"]).reshape(init["shape"])
        else:
            env[init["name"]] = weights[init.get("key", init["name"])]
    routes = {}  # dispatch rows value -> (x, expert/token, weight, source)
    pending = list(model["nodes"])
    while pending:
        for n in pending:
            if all(i == "" or i in env or i in routes for i in n["inputs"]):
                break
        else:
            raise ValueError("cannot order nodes")
        pending.remove(n)
        a = dict(DEFAULTS.get(n["op"], {}), **n.get("attrs", {}))
        ins = [env.get(i) if i else None for i in n["inputs"]]
        if n["op"] == "moe.Dispatch":
            routes[n["outputs"][0]] = {"x": ins[0], "idx": ins[1], "w": ins[2], "src": a["source"],
                                       "E": a["num_experts"], "chain": []}
            for o in n["outputs"][1:]:
                routes[o] = routes[n["outputs"][0]]
            continue
        if n["op"] in ("moe.ExpertMatMul", "Relu", "Gelu", "moe.Silu", "Mul") and any(i in routes for i in n["inputs"]):
            r = next(routes[i] for i in n["inputs"] if i in routes)
            r["chain"].append((n["op"], n["inputs"], n["outputs"][0]))
            routes[n["outputs"][0]] = r
            continue
        if n["op"] == "moe.Combine":
            env[n["outputs"][0]] = combine_chain(routes[n["inputs"][0]], n["inputs"][0], env)
            continue
        for name, val in zip(n["outputs"], run_node(n["op"], a, ins, training)):
            env[name] = val
    return env


def combine_chain(r, last, env):
    """Applies the recorded per-row chain to every token routed to each expert."""
    x = r["x"]
    T = x.shape[0]
    if r["src"] == "expert_choice":
        E, C = r["idx"].shape
        pairs = [(e, r["idx"][e, c], r["w"][e, c]) for e in range(E) for c in range(C) if r["idx"][e, c] >= 0]
    else:
        K = r["idx"].shape[1]
        pairs = [(r["idx"][t, k], t, r["w"][t, k]) for t in range(T) for k in range(K) if r["idx"][t, k] >= 0]
    rows = {}
    for e, t, w in sorted(pairs, key=lambda p: (p[0], p[1])):
        vals = {}
        for op, ins, out in r["chain"]:
            if op == "moe.ExpertMatMul":
                vals[out] = (vals.get(ins[0], x[t]) @ env[ins[2]][e]).astype(F)
            elif op == "Mul":
                vals[out] = (vals[ins[0]] * vals[ins[1]]).astype(F)
            else:
                vals[out] = R.act({"Relu": "relu", "Gelu": "gelu", "moe.Silu": "silu"}[op], vals[ins[0]])
        rows.setdefault(t, []).append((e, F(w) * vals[last]))
    D = next(iter(rows.values()))[0][1].shape[0] if rows else x.shape[1]
    y = np.zeros((T, D), F)
    for t, contribs in rows.items():
        for _, v in sorted(contribs, key=lambda c: c[0]):
            y[t] += v
    return y

