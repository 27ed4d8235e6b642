"""Independent NumPy oracle for GW-MoE in training mode: the route forward, its analytic
gradient, and a whole GW MoE layer forward + backward. Written from ROUTING.md (§1.4
order, §1.6 gradients, §3.1-3.4 base top-k, §3.10 GW-MoE) and, for the operand layout
only, docs/semantics-decisions.md. Not derived from moec's C code.

Every function keeps the dtype of its float inputs: float32 reproduces moec's routing
decisions (router math in f32, ROUTING §1.3), float64 gives reference values and the
finite differences of check_gw.py.

Layout (ROUTING "How moec's IR carries", GW in training): expert[T,E], weight[T,E]; a
broadcast row lists experts 0..E-1 with the full softmax row; any other row holds the
base route's k ranks (expert -1, weight 0 where capacity dropped a choice) and then
expert -1, weight 0."""
import numpy as np

CFG = {"k": 1, "score": "softmax", "normalize": 0, "capacity": 0, "order": "position",
       "scale": 1.0, "threshold": 1.0, "entropy_unit": "nats", "max_broadcast": 1, "eps": 1e-5}


def config(**kw):
    """GWRoute attributes with the defaults of docs/semantics-decisions.md."""
    unknown = set(kw) - set(CFG)
    if unknown:
        raise KeyError(unknown)
    return dict(CFG, **kw)


def order_desc(v):
    """StableOrderDesc (ROUTING §1.4): descending, ties to the lower index."""
    return np.argsort(-np.asarray(v), kind="stable")


def softmax(z):
    """Max-shifted softmax over the last axis (ROUTING §1.3)."""
    e = np.exp(z - np.max(z, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def scores(z, score):
    """Base router scores s: the softmax prob, or the sigmoid for score="sigmoid"."""
    return sigmoid(z) if score == "sigmoid" else softmax(z)


# ---------------------------------------------------------------- base top-k route

def select(z, cfg, bias=None):
    """choice[T,k] in rank order: StableOrderDesc of q = s + bias (z + bias for
    softmax_selected, Mixtral §3.4), ROUTING §3.1-3.4 / semantics-decisions."""
    q = z if cfg["score"] == "softmax_selected" else scores(z, cfg["score"])
    if bias is not None:
        q = q + bias
    return np.stack([order_desc(row)[:cfg["k"]] for row in q]), q


def selected_values(z_row, choice_row, score):
    """u over the selected set A: softmax probs or sigmoids of A, or the softmax over
    the selected logits (softmax_selected, §3.4)."""
    if score == "softmax_selected":
        return softmax(z_row[choice_row])
    return scores(z_row, score)[choice_row]


def base_weights(z_row, choice_row, cfg):
    """w = scale * u, or scale * u / (sum u + 1e-20) with normalize=1 (before capacity)."""
    u = selected_values(z_row, choice_row, cfg["score"])
    if cfg["normalize"]:
        u = u / (np.sum(u) + 1e-20)
    return u * cfg["scale"]


def capacity_keep(z, choice, cfg):
    """kept[T,k]: rank-major slot filling with per-expert counters (ROUTING §3.3 step
    2-3); inside a rank position order, or StableOrderDesc of the rank-0 choice's
    unnormalised score (full softmax prob for softmax_selected) for order="priority"."""
    T, k = choice.shape
    kept = np.ones((T, k), bool)
    if cfg["capacity"] <= 0:
        return kept
    s = scores(z, "sigmoid" if cfg["score"] == "sigmoid" else "softmax")
    key = s[np.arange(T), choice[:, 0]]
    visit = order_desc(key) if cfg["order"] == "priority" else np.arange(T)
    fill = np.zeros(z.shape[1], int)
    for r in range(k):
        for t in visit:
            e = choice[t, r]
            kept[t, r] = fill[e] < cfg["capacity"]
            fill[e] += kept[t, r]
    return kept


# ---------------------------------------------------------------- GW decisions

def entropy(p, eps, unit):
    """H = -sum_e p ln(p + eps) in nats, divided by ln E when unit="normalized"
    (ROUTING §3.10 step 2)."""
    H = -np.sum(p * np.log(p + p.dtype.type(eps)), axis=-1)
    return H / np.log(p.dtype.type(p.shape[-1])) if unit == "normalized" else H


def broadcast_rows(H, threshold, max_broadcast, mask=None):
    """Bc = U and (inclusive running count of U <= M), U = m and H >= tau: the first M
    uncertain valid tokens in position order (§3.10 steps 3-4)."""
    U = H >= H.dtype.type(threshold)
    if mask is not None:
        U &= np.asarray(mask, bool)
    return U & (np.cumsum(U) <= max_broadcast)


def decide(z, cfg, mask=None, bias=None):
    """Every discrete decision of the GW route (no gradient, ROUTING §1.6): the base
    choices, which of them kept a slot, and the broadcast tokens. Computed in z's dtype."""
    choice, q = select(z, cfg, bias)
    H = entropy(softmax(z), cfg["eps"], cfg["entropy_unit"])
    bc = broadcast_rows(H, cfg["threshold"], cfg["max_broadcast"], mask)
    return {"choice": choice, "kept": capacity_keep(z, choice, cfg), "bc": bc, "H": H, "q": q}


# ---------------------------------------------------------------- GW forward / backward

def forward(z, cfg, dec):
    """expert[T,E], weight[T,E] for frozen decisions (§3.10 step 5: a broadcast row is
    the full softmax row, replacing the base output; other rows keep the base result)."""
    T, E = z.shape
    k = cfg["k"]
    p = softmax(z)
    expert = -np.ones((T, E), np.int64)
    weight = np.zeros((T, E), z.dtype)
    for t in range(T):
        if dec["bc"][t]:
            expert[t], weight[t] = np.arange(E), p[t]
            continue
        w = base_weights(z[t], dec["choice"][t], cfg)
        kept = dec["kept"][t]
        expert[t, :k] = np.where(kept, dec["choice"][t], -1)
        weight[t, :k] = np.where(kept, w, 0)
    return expert, weight


def route(z, cfg, mask=None, bias=None):
    """The GW route in training (decisions and values in z's dtype)."""
    return forward(z, cfg, decide(z, cfg, mask, bias))


def softmax_vjp(p, g):
    """sum_e g_e dp_e/dz_j with dp_e/dz_j = p_e(delta_ej - p_j) (ROUTING §1.6)."""
    return p * (g - np.sum(g * p, axis=-1, keepdims=True))


def base_vjp(z_row, choice_row, kept_row, c_row, cfg):
    """d(sum_r c_r w_r)/dz for a certain token: dropped ranks carry no gradient; the
    softmax-prob Jacobian (all logits), the restricted softmax (softmax_selected, selected
    logits only), or the sigmoid s(1-s); normalize=1 adds g = u/S's Jacobian
    (delta - g)/S (ROUTING §1.6, §3.1-3.4; semantics-decisions for normalize/scale)."""
    c = np.where(kept_row, c_row, 0) * cfg["scale"]
    u = selected_values(z_row, choice_row, cfg["score"])
    if cfg["normalize"]:
        S = np.sum(u) + 1e-20
        c = c / S - np.sum(c * u) / S**2
    g = np.zeros_like(z_row)
    if cfg["score"] == "softmax_selected":
        g[choice_row] = softmax_vjp(u, c)
    elif cfg["score"] == "sigmoid":
        g[choice_row] = c * u * (1 - u)
    else:
        full = np.zeros_like(z_row)
        full[choice_row] = c
        g = softmax_vjp(softmax(z_row), full)
    return g


def vjp(z, cfg, dec, C):
    """d(sum weight * C)/dz for the [T,E] training layout: full softmax Jacobian on
    broadcast rows, the base top-k Jacobian on the first k columns of the others, zero
    through every decision (ROUTING §3.10 Gradient)."""
    g = np.zeros_like(z)
    p = softmax(z)
    k = cfg["k"]
    for t in range(z.shape[0]):
        if dec["bc"][t]:
            g[t] = softmax_vjp(p[t], C[t])
        else:
            g[t] = base_vjp(z[t], dec["choice"][t], dec["kept"][t], C[t, :k], cfg)
    return g


# ---------------------------------------------------------------- whole GW MoE layer

def loss_value(y, target, loss):
    """("mse") mean squared error over every element; ("ce") mean over tokens of
    -log softmax(y_t)[label_t] (docs/format.md training losses)."""
    if loss == "mse":
        return np.mean((y - target) ** 2)
    lse = np.log(np.sum(np.exp(y - y.max(axis=1, keepdims=True)), axis=1)) + y.max(axis=1)
    return np.mean(lse - y[np.arange(len(y)), target])


def loss_grad(y, target, loss):
    if loss == "mse":
        return 2 * (y - target) / y.size
    g = softmax(y)
    g[np.arange(len(y)), target] -= 1
    return g / len(y)


def layer_forward(params, x, target, cfg, loss="mse", mask=None, dec=None):
    """x -> z = x W_r -> GW route -> Expert_e(x_t) = relu(x_t W_up[e]) W_down[e] for each
    dispatched (t, e) -> y_t = sum_e weight * Expert_e(x_t) (ROUTING §1.2) -> loss.
    dec: frozen decisions (default: computed from z in its own dtype)."""
    z = x @ params["w_router"]
    dec = decide(z, cfg, mask) if dec is None else dec
    expert, weight = forward(z, cfg, dec)
    y = np.zeros((x.shape[0], params["w_down"].shape[2]), x.dtype)
    pairs = []
    for t, r in zip(*np.nonzero(expert >= 0)):
        e = expert[t, r]
        u = x[t] @ params["w_up"][e]
        o = np.maximum(u, 0) @ params["w_down"][e]
        y[t] += weight[t, r] * o
        pairs.append((t, r, e, u, o))
    return {"z": z, "dec": dec, "expert": expert, "weight": weight, "y": y, "pairs": pairs,
            "loss": loss_value(y, target, loss)}


def layer_backward(params, x, target, cfg, fwd, loss="mse"):
    """d loss / d every weight: expert weights only through dispatched pairs scaled by the
    combine weight, the router through the GW route's vjp (ROUTING §1.6)."""
    gy = loss_grad(fwd["y"], target, loss)
    g = {n: np.zeros_like(v) for n, v in params.items()}
    C = np.zeros_like(fwd["weight"])
    for t, r, e, u, o in fwd["pairs"]:
        C[t, r] = gy[t] @ o
        go = fwd["weight"][t, r] * gy[t]
        a = np.maximum(u, 0)
        g["w_down"][e] += np.outer(a, go)
        g["w_up"][e] += np.outer(x[t], (params["w_down"][e] @ go) * (u > 0))
    g["w_router"] = x.T @ vjp(fwd["z"], cfg, fwd["dec"], C)
    return g
