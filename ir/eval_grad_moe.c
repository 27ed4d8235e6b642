/* ir/eval_grad_moe.c: the interpreter for the gradients of MoE ops (docs/autodiff.md).
 *
 * Router gradients recompute the forward's discrete decisions from the forward inputs
 * with the forward's own code (ev_topk_route, ev_gw_uncertain, or the forward kernel run
 * on the node's forward inputs), then apply the Jacobian of the combine weights with
 * those decisions frozen (ROUTING.md §1.6, §3, §4): no gradient through selections,
 * capacity drops, thresholds or the bias. Dispatch, ExpertMatMul, GatherMatMul and
 * Combine gradients are the adjoints of their forward data movement and products. */
#include "eval.h"

#include <stdlib.h>
#include <string.h>

/* ---- shared: Jacobians of one token's scores ---- */

/* gz += p ⊙ (gp − <gp, p>): the softmax Jacobian (all logits of the token). */
static void softmax_back(const mc_real *p, const mc_real *gp, int64_t E, mc_real *gz) {
    mc_real dot = 0;
    for (int64_t e = 0; e < E; e++)
        dot += gp[e] * p[e];
    for (int64_t e = 0; e < E; e++)
        gz[e] += p[e] * (gp[e] - dot);
}

/* Runs the forward router `op` of gradient node k on the node's forward inputs (its
 * inputs after the cotangent) into out[0] (indices) and out[1] (weights) of
 * [rows, cols]: the forward's decisions, computed by the forward's own kernel. */
static bool run_forward(const mc_kernel_ctx *k, mc_op op, int64_t rows, int64_t cols,
                        mc_tensor out[2]) {
    mc_node f = *k->n;
    f.op = op;
    f.nin = k->n->nin - 1;
    f.in = k->n->in + 1;
    f.nout = 2;
    int64_t dims[2] = {rows, cols};
    if (!mc_tensor_alloc(&out[0], MC_DT_I32, 2, dims, k->d, "routing indices")) return false;
    if (!mc_tensor_alloc(&out[1], MC_DT_F32, 2, dims, k->d, "routing weights"))
        return mc_tensor_free(&out[0]), false;
    mc_kernel_ctx fk = {k->g, &f, k->symvals, k->in + 1, out, k->d};
    bool ok = false;
    switch (op) {
    case MC_OP_MOE_TOPP_ROUTE: ok = mc_interp_MOE_TOPP_ROUTE(&fk); break;
    case MC_OP_MOE_EXPERT_CHOICE_ROUTE: ok = mc_interp_MOE_EXPERT_CHOICE_ROUTE(&fk); break;
    case MC_OP_MOE_RESONANCE_ROUTE: ok = mc_interp_MOE_RESONANCE_ROUTE(&fk); break;
    default: mc_die("run_forward: %s is not a router", mc_op_infos[op].name);
    }
    if (!ok) mc_tensor_free(&out[0]), mc_tensor_free(&out[1]);
    return ok;
}

/* ---- token-choice top-k (TopKRoute, GWRoute's base route) ---- */

/* Scratch of one token's top-k gradient. */
typedef struct {
    mc_real *u, *gu; /* scores u[E] (softmax p, sigmoid s, or the selected-set softmax), du */
    bool *in_set;    /* [E]: expert in the pre-capacity selected set A */
} topk_scratch;

/* Scores of one token: what the weights are made of before normalisation and scale. */
static void topk_scores(const ev_topk *c, const mc_real *z, int64_t E, topk_scratch *w) {
    if (c->score == EV_SOFTMAX) {
        ev_softmax_row(z, E, w->u);
        return;
    }
    if (c->score == EV_SIGMOID) {
        for (int64_t e = 0; e < E; e++)
            w->u[e] = EV_C(1.0) / (EV_C(1.0) + ev_exp(-z[e]));
        return;
    }
    mc_real mx = -INFINITY, sum = 0; /* softmax over the selected logits */
    for (int64_t e = 0; e < E; e++)
        if (w->in_set[e] && ev_gt(z[e], mx)) mx = z[e];
    for (int64_t e = 0; e < E; e++)
        if (w->in_set[e]) sum += ev_exp(z[e] - mx);
    for (int64_t e = 0; e < E; e++)
        w->u[e] = w->in_set[e] ? ev_exp(z[e] - mx) / sum : 0;
}

/* One token: weight[r] = scale * u[ex[r]] / D (D = sum of u over A + 1e-20 when
 * normalising, else 1), 0 where capacity dropped the choice (ex[r] = -1). Adds
 * d(sum_r g[r] weight[r]) / dz into gz[E]. sel[k] are the pre-capacity choices (A). */
static void topk_token_back(const ev_topk *c, const mc_real *z, int64_t E, const int64_t *sel,
                            const int64_t *ex, const mc_real *g, topk_scratch *w, mc_real *gz) {
    memset(w->in_set, 0, (size_t)E);
    for (int64_t r = 0; r < c->k; r++)
        w->in_set[sel[r]] = true;
    topk_scores(c, z, E, w);
    mc_real D = 1, acc = 0, scale = (mc_real)c->scale;
    if (c->normalize) {
        D = 0;
        for (int64_t e = 0; e < E; e++)
            D += w->in_set[e] ? w->u[e] : 0;
        D += EV_C(1e-20);
    }
    for (int64_t e = 0; e < E; e++)
        w->gu[e] = 0;
    for (int64_t r = 0; r < c->k; r++) {
        if (ex[r] < 0) continue;
        w->gu[ex[r]] += scale * g[r] / D;
        acc += g[r] * w->u[ex[r]];
    }
    for (int64_t e = 0; c->normalize && e < E; e++)
        if (w->in_set[e]) w->gu[e] -= scale * acc / (D * D);
    if (c->score == EV_SIGMOID) {
        for (int64_t e = 0; e < E; e++)
            gz[e] += w->gu[e] * w->u[e] * (EV_C(1.0) - w->u[e]);
    } else { /* softmax_selected: u is 0 outside A, so only A's logits get gradient */
        softmax_back(w->u, w->gu, E, gz);
    }
}

/* Top-k routing of z[T,E] (bias or NULL) into ex/sel [T,k], and scratch for the
 * per-token gradient; false when memory cannot be had. */
typedef struct {
    int64_t *ex, *sel;
    mc_real *wt, *u;
    bool *flags;
    topk_scratch w;
} topk_state;

static void topk_state_free(topk_state *s) {
    free(s->ex);
    free(s->wt);
    free(s->u);
    free(s->flags);
}

static bool topk_state_init(const ev_topk *c, const mc_real *z, const mc_real *bias, int64_t T,
                            int64_t E, topk_state *s) {
    s->ex = malloc(sizeof(int64_t) * (size_t)(2 * T * c->k + 1));
    s->wt = malloc(sizeof(mc_real) * (size_t)(T * c->k + 1));
    s->u = malloc(sizeof(mc_real) * (size_t)(2 * E + 1));
    s->flags = malloc((size_t)E + 1);
    if (!s->ex || !s->wt || !s->u || !s->flags) return topk_state_free(s), false;
    s->sel = s->ex + T * c->k;
    s->w = (topk_scratch){s->u, s->u + E, s->flags};
    if (ev_topk_route(c, z, bias, T, E, s->ex, s->wt, s->sel)) return true;
    topk_state_free(s);
    return false;
}

static const mc_real *opt_f(const mc_kernel_ctx *k, int i) {
    return k->n->nin > i && k->in[i] ? k->in[i]->f : NULL;
}

/* in: g_weight[T,k], logits[T,E], bias[E]?  out: g_logits[T,E] */
bool mc_interp_MOE_TOPK_ROUTE_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *g = k->in[0], *z = k->in[1];
    int64_t T = z->dims[0], E = z->dims[1];
    ev_topk c;
    ev_topk_config(k->n, "normalize", &c);
    topk_state s;
    if (!topk_state_init(&c, z->f, opt_f(k, 2), T, E, &s)) return ev_fail(k, "out of memory");
    for (int64_t t = 0; t < T; t++)
        topk_token_back(&c, z->f + t * E, E, s.sel + t * c.k, s.ex + t * c.k, g->f + t * c.k, &s.w,
                        k->out[0].f + t * E);
    topk_state_free(&s);
    return true;
}

/* GW-MoE (ROUTING.md §3.10). Mode "infer": the base route's gradient. Mode "train":
 * g_weight is [T,E]; a broadcast token's row is its full softmax (softmax Jacobian over
 * every logit), any other token's first k entries are its base route's weights. */
bool mc_interp_MOE_GW_ROUTE_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *g = k->in[0], *z = k->in[1], *mask = k->n->nin > 3 ? k->in[3] : NULL;
    int64_t T = z->dims[0], E = z->dims[1], M = mc_attr_int(k->n, "max_broadcast"), seen = 0;
    ev_topk c;
    ev_topk_config(k->n, "normalize", &c);
    bool training = mc_attr_choice(k->n, "mode") == MC_A_MOE_GW_ROUTE_mode_train;
    int64_t W = training ? E : c.k; /* g_weight's row width */
    topk_state s;
    if (!topk_state_init(&c, z->f, opt_f(k, 2), T, E, &s)) return ev_fail(k, "out of memory");
    mc_real *p = s.u; /* reused: the broadcast test runs before the token's top-k work */
    for (int64_t t = 0; t < T; t++) {
        const mc_real *zt = z->f + t * E, *gt = g->f + t * W;
        mc_real *gz = k->out[0].f + t * E;
        if (training) {
            bool uncertain = ev_gw_uncertain(k->n, zt, E, p) && (!mask || mask->i[t]);
            seen += uncertain;
            if (uncertain && seen <= M) {
                softmax_back(p, gt, E, gz);
                continue;
            }
        }
        topk_token_back(&c, zt, E, s.sel + t * c.k, s.ex + t * c.k, gt, &s.w, gz);
    }
    topk_state_free(&s);
    return true;
}

/* ---- top-p, expert choice, resonance ---- */

/* Top-p weights are raw softmax probabilities (§3.9): the softmax Jacobian. */
bool mc_interp_MOE_TOPP_ROUTE_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *g = k->in[0], *z = k->in[1];
    int64_t T = z->dims[0], E = z->dims[1], K = g->dims[1];
    mc_tensor fw[2];
    if (!run_forward(k, MC_OP_MOE_TOPP_ROUTE, T, K, fw)) return false;
    mc_real *p = malloc(sizeof(mc_real) * (size_t)(2 * E + 1));
    if (!p) return mc_tensor_free(&fw[0]), mc_tensor_free(&fw[1]), ev_fail(k, "out of memory");
    mc_real *gp = p + E;
    for (int64_t t = 0; t < T; t++) {
        ev_softmax_row(z->f + t * E, E, p);
        memset(gp, 0, sizeof(mc_real) * (size_t)E);
        for (int64_t r = 0; r < K; r++)
            if (fw[0].i[t * K + r] >= 0) gp[fw[0].i[t * K + r]] += g->f[t * K + r];
        softmax_back(p, gp, E, k->out[0].f + t * E);
    }
    free(p);
    mc_tensor_free(&fw[0]);
    mc_tensor_free(&fw[1]);
    return true;
}

/* Expert choice (§3.8): weight[e,c] = p[token, e], the softmax Jacobian of each token
 * over every expert that took it. */
bool mc_interp_MOE_EXPERT_CHOICE_ROUTE_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *g = k->in[0], *z = k->in[1];
    int64_t T = z->dims[0], E = z->dims[1], C = g->dims[1];
    mc_tensor fw[2];
    if (!run_forward(k, MC_OP_MOE_EXPERT_CHOICE_ROUTE, E, C, fw)) return false;
    mc_real *gp = calloc((size_t)(T * E + E + 1), sizeof(mc_real));
    if (!gp) return mc_tensor_free(&fw[0]), mc_tensor_free(&fw[1]), ev_fail(k, "out of memory");
    mc_real *p = gp + T * E;
    for (int64_t q = 0; q < E * C; q++)
        if (fw[0].i[q] >= 0) gp[fw[0].i[q] * E + q / C] += g->f[q];
    for (int64_t t = 0; t < T; t++) {
        ev_softmax_row(z->f + t * E, E, p);
        softmax_back(p, gp + t * E, E, k->out[0].f + t * E);
    }
    free(gp);
    mc_tensor_free(&fw[0]);
    mc_tensor_free(&fw[1]);
    return true;
}

/* Expert-Token Resonance (§3.11) of one token x[D]: block sums S[E] and the cosine
 * affinity delta[E] = S / (|x| sqrt(D/E)); returns |x|. */
static mc_real resonance_sums(const mc_real *x, int64_t D, int64_t E, mc_real *S, mc_real *delta) {
    int64_t blk = D / E;
    mc_real norm = 0;
    for (int64_t j = 0; j < D; j++)
        norm += x[j] * x[j];
    norm = ev_sqrt(norm);
    for (int64_t i = 0; i < E; i++) {
        S[i] = 0;
        for (int64_t j = i * blk; j < (i + 1) * blk; j++)
            S[i] += x[j];
        delta[i] = norm == 0 ? 0 : S[i] / (norm * ev_sqrt((mc_real)blk));
    }
    return norm;
}

/* One token's gx from its weights' cotangent gw[E] (per expert, kept choices only):
 * softmax over delta (cosine Jacobian into x) or over the GrAP logits S*E/D. */
static void resonance_token_back(const mc_real *x, int64_t D, int64_t E, bool cosine, mc_real *buf,
                                 const mc_real *gw, mc_real *gx) {
    mc_real *S = buf, *delta = S + E, *w = delta + E, *gl = w + E;
    int64_t blk = D / E;
    mc_real norm = resonance_sums(x, D, E, S, delta);
    if (!cosine)
        for (int64_t i = 0; i < E; i++)
            delta[i] = S[i] * ((mc_real)E / (mc_real)D);
    ev_softmax_row(delta, E, w);
    memset(gl, 0, sizeof(mc_real) * (size_t)E);
    softmax_back(w, gw, E, gl);
    if (!cosine) {
        for (int64_t j = 0; j < D; j++)
            gx[j] = gl[j / blk] * ((mc_real)E / (mc_real)D);
        return;
    }
    if (norm == 0) return; /* delta is the constant 0 there */
    mc_real dot = 0, rb = ev_sqrt((mc_real)blk);
    for (int64_t i = 0; i < E; i++)
        dot += gl[i] * delta[i];
    for (int64_t j = 0; j < D; j++)
        gx[j] = gl[j / blk] / (norm * rb) - x[j] * dot / (norm * norm);
}

/* in: g_weight[T,k], x[T,D]  out: gx[T,D]. weight_mode "unit" has no gradient. */
bool mc_interp_MOE_RESONANCE_ROUTE_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *g = k->in[0], *x = k->in[1];
    int64_t T = x->dims[0], D = x->dims[1], E = mc_attr_int(k->n, "num_experts"), K = g->dims[1];
    int mode = mc_attr_choice(k->n, "weight_mode");
    if (mode == MC_A_MOE_RESONANCE_ROUTE_weight_mode_unit) return true;
    mc_tensor fw[2];
    if (!run_forward(k, MC_OP_MOE_RESONANCE_ROUTE, T, K, fw)) return false;
    mc_real *buf = malloc(sizeof(mc_real) * (size_t)(5 * E + 1));
    if (!buf) return mc_tensor_free(&fw[0]), mc_tensor_free(&fw[1]), ev_fail(k, "out of memory");
    mc_real *gw = buf + 4 * E;
    for (int64_t t = 0; t < T; t++) {
        memset(gw, 0, sizeof(mc_real) * (size_t)E);
        for (int64_t r = 0; r < K; r++)
            if (fw[0].i[t * K + r] >= 0) gw[fw[0].i[t * K + r]] += g->f[t * K + r];
        bool cosine = mode == MC_A_MOE_RESONANCE_ROUTE_weight_mode_softmax_cosine;
        resonance_token_back(x->f + t * D, D, E, cosine, buf, gw, k->out[0].f + t * D);
    }
    free(buf);
    mc_tensor_free(&fw[0]);
    mc_tensor_free(&fw[1]);
    return true;
}

/* ---- dispatch, expert GEMM, combine ---- */

/* Dispatch's adjoint: row i copied x[t] and weight[q] (q its (token, rank) or (expert,
 * slot) position), so gx[t] sums g_rows over t's rows in row order and gweight[q] =
 * g_row_weight[i]. Rows are recomputed exactly as moe.Dispatch places them. With
 * materialize 0 there were no rows (g_rows is [0,D]): that term of gx is 0. */
bool mc_interp_MOE_DISPATCH_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *gr = k->in[0], *gw = k->in[1], *x = k->in[2], *idx = k->in[3];
    int64_t E = mc_attr_int(k->n, "num_experts"), T = x->dims[0], R = idx->dims[0],
            K = idx->dims[1], i = 0, D = mc_attr_int(k->n, "materialize") ? x->dims[1] : 0;
    bool by_expert = mc_attr_choice(k->n, "source") == MC_A_MOE_DISPATCH_source_expert_choice;
    int64_t limit = by_expert ? T : E;
    for (int64_t q = 0; q < R * K; q++)
        if (idx->i[q] < -1 || idx->i[q] >= limit)
            return ev_fail(k, "%s %lld at [%lld,%lld] is outside [-1, %lld)",
                           by_expert ? "token" : "expert", (long long)idx->i[q], (long long)(q / K),
                           (long long)(q % K), (long long)limit);
    for (int64_t e = 0; e < E; e++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t c = 0; c < K; c++) {
                int64_t q = by_expert ? e * K + c : t * K + c;
                if (idx->i[q] != (by_expert ? t : e)) continue;
                for (int64_t d = 0; d < D; d++)
                    k->out[0].f[t * D + d] += gr->f[i * D + d];
                k->out[1].f[q] = gw->f[i++];
            }
    return true;
}

static bool offsets_valid(const mc_kernel_ctx *k, const mc_tensor *off, int64_t N) {
    int64_t E = off->numel - 1;
    for (int64_t e = 0; e <= E; e++)
        if (off->i[e] < (e ? off->i[e - 1] : 0) || off->i[e] > N)
            return ev_fail(k, "offsets must rise from 0 to at most %lld, but offsets[%lld] is %lld",
                           (long long)N, (long long)e, (long long)off->i[e]);
    return true;
}

/* out[i] = rows[i] @ W[e]: g_rows[i] = g_out[i] @ W[e]^T, gW[e] = sum over e's rows of
 * rows[i]^T g_out[i] (ascending rows). Rows of no expert get 0. */
bool mc_interp_MOE_EXPERT_MATMUL_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *go = k->in[0], *rows = k->in[1], *off = k->in[2], *W = k->in[3];
    int64_t N = rows->dims[0], D = rows->dims[1], F = W->dims[2], E = off->numel - 1;
    if (!offsets_valid(k, off, N)) return false;
    mc_real *gr = k->out[0].f, *gW = k->out[1].f;
    for (int64_t e = 0; e < E; e++)
        for (int64_t i = off->i[e]; i < off->i[e + 1]; i++)
            for (int64_t d = 0; d < D; d++) {
                const mc_real *w = W->f + (e * D + d) * F, *g = go->f + i * F;
                mc_real s = 0, a = rows->f[i * D + d];
                for (int64_t f = 0; f < F; f++) {
                    s += g[f] * w[f];
                    gW[(e * D + d) * F + f] += a * g[f];
                }
                gr[i * D + d] = s;
            }
    return true;
}

/* out[i] = x[t] @ W[e], t = row_token[i]: gx[t] sums g_out[i] @ W[e]^T over t's rows in
 * ascending row order, gW[e] = sum over e's rows of x[t]^T g_out[i] (ascending rows). */
bool mc_interp_MOE_GATHER_MATMUL_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *go = k->in[0], *x = k->in[1], *tok = k->in[2], *off = k->in[3], *W = k->in[4];
    int64_t T = x->dims[0], D = x->dims[1], N = tok->dims[0], F = W->dims[2], E = off->numel - 1;
    if (!offsets_valid(k, off, N)) return false;
    mc_real *gx = k->out[0].f, *gW = k->out[1].f;
    for (int64_t e = 0; e < E; e++)
        for (int64_t i = off->i[e]; i < off->i[e + 1]; i++) {
            int64_t t = tok->i[i];
            if (t < 0 || t >= T)
                return ev_fail(k, "row %lld reads token %lld but there are %lld tokens",
                               (long long)i, (long long)t, (long long)T);
            for (int64_t d = 0; d < D; d++) {
                const mc_real *w = W->f + (e * D + d) * F, *g = go->f + i * F;
                mc_real s = 0, a = x->f[t * D + d];
                for (int64_t f = 0; f < F; f++) {
                    s += g[f] * w[f];
                    gW[(e * D + d) * F + f] += a * g[f];
                }
                gx[t * D + d] += s;
            }
        }
    return true;
}

/* y[t] = sum of row_weight[i] * out[i] over t's live rows: g_out[i] = row_weight[i] *
 * gy[t], g_row_weight[i] = <gy[t], out[i]>; 0 for rows of no token. */
bool mc_interp_MOE_COMBINE_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *gy = k->in[0], *out = k->in[1], *tok = k->in[2], *w = k->in[3],
                    *off = k->in[4];
    int64_t N = out->dims[0], D = out->dims[1], T = gy->dims[0];
    if (!offsets_valid(k, off, N)) return false;
    for (int64_t i = 0; i < off->i[off->numel - 1]; i++) {
        int64_t t = tok->i[i];
        if (t < 0) continue;
        if (t >= T)
            return ev_fail(k, "row %lld belongs to token %lld but there are %lld tokens",
                           (long long)i, (long long)t, (long long)T);
        mc_real s = 0;
        for (int64_t d = 0; d < D; d++) {
            k->out[0].f[i * D + d] = w->f[i] * gy->f[t * D + d];
            s += gy->f[t * D + d] * out->f[i * D + d];
        }
        k->out[1].f[i] = s;
    }
    return true;
}
