"""NumPy reference for moec's MoE ops, written from ROUTING.md and
docs/semantics-decisions.md (not from the C code). Router math in float32.

Orders: StableOrderDesc = np.argsort(-v, kind="stable"); NumPy sorts NaN last, which
is ROUTING.md §1.3's "NaN is smaller than every number"."""
import numpy as np

F = np.float32


def order_desc(v):
    return np.argsort(-np.asarray(v, F), kind="stable")


def softmax(z, axis=-1):
    z = np.asarray(z, F)
    m = np.max(np.where(np.isnan(z), -np.inf, z), axis=axis, keepdims=True)
    e = np.exp(z - m)
    return (e / np.sum(e, axis=axis, keepdims=True)).astype(F)


def sigmoid(z):
    return (F(1) / (F(1) + np.exp(-np.asarray(z, F)))).astype(F)


def _group_mask(q, has_bias, groups, topk_groups):
    """Experts allowed after group limiting (ROUTING §3.6 step 2, §3.7 step 3)."""
    E = q.shape[0]
    if groups <= 1 or topk_groups == 0 or topk_groups >= groups:
        return np.ones(E, bool)
    blocks = q.reshape(groups, E // groups)
    top = -np.sort(-blocks, axis=1, kind="stable")
    score = top[:, 0] + (top[:, 1] if has_bias and blocks.shape[1] > 1 else F(0))
    keep = order_desc(score)[:topk_groups]
    allowed = np.zeros(groups, bool)
    allowed[keep] = True
    return np.repeat(allowed, E // groups)


def topk_route(z, k, bias=None, score="softmax", normalize=0, capacity=0, order="position",
               scale=1.0, groups=1, topk_groups=0):
    """-> expert[T,k] (int, -1 dropped), weight[T,k], choice[T,k] (pre-capacity)."""
    z = np.asarray(z, F)
    T, E = z.shape
    s = sigmoid(z) if score == "sigmoid" else softmax(z)
    q = (z if score == "softmax_selected" else s) + (np.asarray(bias, F) if bias is not None else F(0))
    choice = np.zeros((T, k), np.int64)
    w = np.zeros((T, k), F)
    for t in range(T):
        allowed = _group_mask(q[t], bias is not None, groups, topk_groups)
        cand = np.where(allowed, q[t], -np.inf).astype(F)
        cand[~allowed] = np.nan  # excluded experts rank below everything
        choice[t] = order_desc(cand)[:k]
        if score == "softmax_selected":
            w[t] = softmax(z[t, choice[t]])
        else:
            w[t] = s[t, choice[t]]
    if normalize:
        w = (w / (np.sum(w, axis=1, keepdims=True) + F(1e-20))).astype(F)
    w = (w * F(scale)).astype(F)
    expert = choice.copy()
    if capacity > 0:
        key = np.take_along_axis(softmax(z) if score != "sigmoid" else s, choice[:, :1], axis=1)[:, 0]
        visit = order_desc(key) if order == "priority" else np.arange(T)
        fill = np.zeros(E, int)
        for r in range(k):
            for t in visit:
                e = expert[t, r]
                if fill[e] < capacity:
                    fill[e] += 1
                else:
                    expert[t, r], w[t, r] = -1, 0
    return expert, w, choice


def topp_route(z, p, max_k=0, inclusive=1):
    z = np.asarray(z, F)
    T, E = z.shape
    K = max_k or E
    P = softmax(z)
    expert = -np.ones((T, K), np.int64)
    w = np.zeros((T, K), F)
    for t in range(T):
        o = order_desc(P[t])
        c = np.cumsum(P[t, o], dtype=F)  # sequential f32 sums
        hit = np.nonzero(c >= F(p) if inclusive else c > F(p))[0]
        kt = min((hit[0] + 1) if len(hit) else E, K)
        expert[t, :kt] = o[:kt]
        w[t, :kt] = P[t, o[:kt]]
    return expert, w


def expert_choice(z, C, mask=None):
    P = softmax(z)
    T, E = P.shape
    tok = -np.ones((E, C), np.int64)
    w = np.zeros((E, C), F)
    for e in range(E):
        col = P[:, e].copy()
        if mask is not None:
            col[~mask.astype(bool)] = np.nan
        o = [t for t in order_desc(col) if not np.isnan(col[t])][:C]
        tok[e, :len(o)] = o
        w[e, :len(o)] = P[o, e]
    return tok, w


def resonance(x, E, k=1, capacity=0, weight_mode="softmax_cosine"):
    x = np.asarray(x, F)
    T, D = x.shape
    blocks = x.reshape(T, E, D // E).sum(axis=2, dtype=F)
    norm = np.sqrt(np.sum(x * x, axis=1, dtype=F))
    delta = np.where(norm[:, None] > 0, blocks / (norm[:, None] * np.sqrt(F(D // E))), F(0)).astype(F)
    expert = np.stack([order_desc(delta[t])[:k] for t in range(T)])
    if weight_mode == "unit":
        omega = np.ones((T, E), F)
    elif weight_mode == "softmax_cosine":
        omega = softmax(delta)
    else:
        omega = softmax(blocks * F(E / D))
    w = np.take_along_axis(omega, expert, axis=1).astype(F)
    if capacity > 0:
        for i in range(E):
            cand = [t for t in range(T) if i in expert[t]]
            kept = set(sorted(cand, key=lambda t: (-delta[t, i], t))[:capacity])
            for t in cand:
                if t not in kept:
                    r = list(expert[t]).index(i)
                    expert[t, r], w[t, r] = -1, 0
    return expert, w


def gw_route(z, training, k, threshold, max_broadcast, bias=None, mask=None,
             entropy_unit="nats", eps=1e-5, **base):
    e0, w0, _ = topk_route(z, k, bias=bias, **base)
    if not training:
        return e0, w0
    z = np.asarray(z, F)
    T, E = z.shape
    p = softmax(z)
    H = -np.sum(p * np.log(p + F(eps)), axis=1, dtype=F)
    if entropy_unit == "normalized":
        H = H / np.log(F(E))
    U = H >= F(threshold)
    if mask is not None:
        U &= mask.astype(bool)
    B = U & (np.cumsum(U) <= max_broadcast)
    expert = -np.ones((T, E), np.int64)
    w = np.zeros((T, E), F)
    expert[:, :k], w[:, :k] = e0, w0
    expert[B] = np.arange(E)
    w[B] = p[B]
    return expert, w


def dense_combine(expert, weight, E):
    T = expert.shape[0]
    c = np.zeros((T, E), F)
    for t in range(T):
        for e, wt in zip(expert[t], weight[t]):
            if e >= 0:
                c[t, e] += wt
    return c


def act(name, x):
    x = np.asarray(x, F)
    if name == "relu":
        return np.maximum(x, F(0))
    if name == "gelu":
        from math import erf
        return (F(0.5) * x * (F(1) + np.vectorize(erf)(x / np.sqrt(F(2))).astype(F))).astype(F)
    return (x * sigmoid(x)).astype(F)


def ffn(x, w_up, w_down, w_gate, activation):
    """act(x Wg) * (x Wu) @ Wd, or act(x Wu) @ Wd."""
    h = act(activation, x @ w_gate) * (x @ w_up) if w_gate is not None else act(activation, x @ w_up)
    return (h @ w_down).astype(F)


def moe_layer(x, expert, weight, w_up, w_down, w_gate=None, activation="relu"):
    """y_t = sum over its experts, ascending index, of weight * Expert_e(x_t)."""
    T, D = x.shape
    y = np.zeros((T, D), F)
    for e in range(w_up.shape[0]):
        rows = [(t, weight[t, r]) for t in range(T) for r in range(expert.shape[1]) if expert[t, r] == e]
        if not rows:
            continue
        ts = np.array([t for t, _ in rows])
        out = ffn(x[ts], w_up[e], w_down[e], None if w_gate is None else w_gate[e], activation)
        for (t, wt), o in zip(rows, out):
            y[t] += F(wt) * o
    return y


def expert_choice_layer(x, token, weight, w_up, w_down, activation):
    T = x.shape[0]
    E, C = token.shape
    expert = -np.ones((T, E), np.int64)
    w = np.zeros((T, E), F)
    for e in range(E):
        for c in range(C):
            if token[e, c] >= 0:
                expert[token[e, c], e], w[token[e, c], e] = e, weight[e, c]
    return moe_layer(x, expert, w, w_up, w_down, None, activation)


def load_balance_loss(probs, choice, mask=None, scale="E", count="all_ranks", scope="batch",
                      seq_len=None, coef=1.0):
    probs = np.asarray(probs, F)
    T, E = probs.shape
    K = choice.shape[1]
    m = np.ones(T, bool) if mask is None else mask.astype(bool)
    L = seq_len if scope == "sequence" else T
    parts = []
    for t0 in range(0, T, L):
        sl = slice(t0, t0 + L)
        n = m[sl].sum()
        if n == 0:
            parts.append(0.0)
            continue
        ch = choice[sl][m[sl]][:, :1 if count == "first_rank_only" else K]
        c = np.array([(ch == e).sum() for e in range(E)], F)
        P = probs[sl][m[sl]].sum(axis=0) / n
        s = E / K if scale == "E_over_K" else E
        parts.append(s * np.sum((c / n) * P))
    return F(coef) * F(np.mean(parts))


def z_loss(z, mask=None, coef=1.0):
    z = np.asarray(z, np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]
    keep = np.ones(len(z), bool) if mask is None else mask.astype(bool)
    return F(coef * np.mean(lse[keep] ** 2))


def entropy_loss(p, mask=None, coef=1.0):
    p = np.asarray(p, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        H = -np.where(p > 0, p * np.log(p), 0).sum(axis=1)
    keep = np.ones(len(p), bool) if mask is None else mask.astype(bool)
    return F(coef * np.mean(H[keep]))
