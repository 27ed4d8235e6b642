/* backend/kernels/k_grad_moe.c: native kernels for the gradients of MoE ops
 * (docs/autodiff.md), matching the interpreter (ir/eval_grad_moe.c).
 *
 * Router gradients recompute the forward's decisions by calling the forward kernel
 * itself (k_route.c, linked into the same module) on the node's forward inputs, so they
 * are bit-identical to the forward's; the Jacobian of the weights is then applied with
 * those decisions frozen. Dispatch, ExpertMatMul, GatherMatMul and Combine gradients
 * are the adjoints of the forward data movement and products.
 *
 * Calling convention beyond mk.h: in[] holds the op's maximum number of inputs, p ==
 * NULL where an optional one is omitted; scratch (laid out in k_grad_moe_scratch.h) is
 * out[nout]. A router gradient's scratch holds its own arrays first, then the forward
 * kernel's scratch (the rest). A gradient's attr[] are its forward op's rows (ir/attrs.def
 * writes them once for both), so it reads them by the forward op's names and hands attr
 * to the forward kernel as it is. Float contraction is off, as in the forward kernels. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../runtime/moert.h"
#include "k_gemm.h"
#include "k_grad_moe_scratch.h"
#include "k_math.h"
#include "mk.h"

#pragma STDC FP_CONTRACT OFF

/* The forward routers (k_route.c). */
int32_t mk_MOE_TOPK_ROUTE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr);
int32_t mk_MOE_TOPP_ROUTE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr);
int32_t mk_MOE_EXPERT_CHOICE_ROUTE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr);
int32_t mk_MOE_RESONANCE_ROUTE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr);

/* ---- shared helpers ---- */

static inline bool gt(float a, float b) {
    if (a != a) return false;
    if (b != b) return true;
    return a > b;
}

static inline int64_t get_idx(const mk_tensor *t, int64_t i) {
    return t->dt == MK_I64 ? ((const int64_t *)t->p)[i] : ((const int32_t *)t->p)[i];
}

static inline bool mask_at(const mk_tensor *m, int64_t t) {
    return !m->p || ((const uint8_t *)m->p)[t] != 0;
}

static mk_tensor matrix(void *p, int64_t dt, int64_t rows, int64_t cols) {
    mk_tensor t = {p, dt, 2, {rows, cols}, MK_PLAIN, 0};
    return t;
}

static int32_t no_scratch(void) {
    return moert_fail(MOERT_ERR_INTERNAL, "moe gradient kernel: the scratch buffer is too small");
}

static void zero_f(float *p, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        p[i] = 0;
}

static void softmax_row(const float *z, int64_t n, float *p) {
    float mx = -__builtin_inff(), sum = 0;
    for (int64_t j = 0; j < n; j++)
        mx = gt(z[j], mx) ? z[j] : mx;
    for (int64_t j = 0; j < n; j++)
        sum += __builtin_expf(z[j] - mx);
    for (int64_t j = 0; j < n; j++)
        p[j] = __builtin_expf(z[j] - mx) / sum;
}

/* gz += p ⊙ (gp − <gp, p>): the softmax Jacobian. */
static void softmax_back(const float *p, const float *gp, int64_t E, float *gz) {
    float dot = 0;
    for (int64_t e = 0; e < E; e++)
        dot += gp[e] * p[e];
    for (int64_t e = 0; e < E; e++)
        gz[e] += p[e] * (gp[e] - dot);
}

/* ---- token-choice top-k (TopKRoute, GWRoute's base route) ---- */

typedef struct {
    int64_t k, score;
    float scale;
    bool normalize;
    int32_t *ex, *sel;  /* post- and pre-capacity choices [T,k] */
    float *wt, *u, *gu; /* forward weights [T,k]; scores and their cotangent [E] */
    bool *in_set;       /* [E] */
} topk_grad;

/* Finds the arrays in scratch and runs the forward TopKRoute (its rows start attr[]) on
 * in[0..1]. */
static int32_t topk_grad_init(const mk_tensor *in, const mk_attr *attr, const mk_tensor *scratch,
                              topk_grad *w) {
    int64_t T = in[0].dims[0], E = in[0].dims[1], k = attr[MC_A_MOE_TOPK_ROUTE_k].i;
    mk_topk_route_grad_scratch l = mk_topk_route_grad_scratch_of(T, E, k);
    if (!mk_scratch_fits(scratch, l.bytes)) return no_scratch();
    w->k = k;
    w->score = attr[MC_A_MOE_TOPK_ROUTE_score].i;
    w->normalize = attr[MC_A_MOE_TOPK_ROUTE_normalize].i != 0;
    w->scale = (float)attr[MC_A_MOE_TOPK_ROUTE_scale].f;
    w->ex = mk_scratch_at(scratch, l.ex);
    w->sel = mk_scratch_at(scratch, l.sel);
    w->wt = mk_scratch_at(scratch, l.wt);
    w->u = mk_scratch_at(scratch, l.u);
    w->gu = mk_scratch_at(scratch, l.gu);
    w->in_set = mk_scratch_at(scratch, l.in_set);
    mk_tensor fo[4] = {matrix(w->ex, MK_I32, T, k), matrix(w->wt, MK_F32, T, k),
                       matrix(w->sel, MK_I32, T, k), mk_scratch_rest(scratch, l.fwd)};
    return mk_MOE_TOPK_ROUTE(in, fo, attr);
}

/* Scores of one token: softmax, sigmoid, or the softmax over the selected set. */
static void topk_scores(const topk_grad *w, const float *z, int64_t E) {
    if (w->score == MC_A_MOE_TOPK_ROUTE_score_softmax) {
        softmax_row(z, E, w->u);
    } else if (w->score == MC_A_MOE_TOPK_ROUTE_score_sigmoid) {
        for (int64_t e = 0; e < E; e++)
            w->u[e] = 1.0f / (1.0f + __builtin_expf(-z[e]));
    } else {
        float mx = -__builtin_inff(), sum = 0;
        for (int64_t e = 0; e < E; e++)
            if (w->in_set[e] && gt(z[e], mx)) mx = z[e];
        for (int64_t e = 0; e < E; e++)
            if (w->in_set[e]) sum += __builtin_expf(z[e] - mx);
        for (int64_t e = 0; e < E; e++)
            w->u[e] = w->in_set[e] ? __builtin_expf(z[e] - mx) / sum : 0.0f;
    }
}

/* Token t: weight[r] = scale * u[ex[r]] / D (D = sum of u over the pre-capacity set +
 * 1e-20 when normalising, else 1); adds d(sum_r g[r] weight[r]) / dz into gz[E]. */
static void topk_token_back(const topk_grad *w, const float *z, int64_t E, int64_t t,
                            const float *g, float *gz) {
    const int32_t *sel = w->sel + t * w->k, *ex = w->ex + t * w->k;
    for (int64_t e = 0; e < E; e++)
        w->in_set[e] = false, w->gu[e] = 0;
    for (int64_t r = 0; r < w->k; r++)
        w->in_set[sel[r]] = true;
    topk_scores(w, z, E);
    float D = 1, acc = 0;
    if (w->normalize) {
        D = 0;
        for (int64_t e = 0; e < E; e++)
            D += w->in_set[e] ? w->u[e] : 0.0f;
        D += 1e-20f;
    }
    for (int64_t r = 0; r < w->k; r++) {
        if (ex[r] < 0) continue;
        w->gu[ex[r]] += w->scale * g[r] / D;
        acc += g[r] * w->u[ex[r]];
    }
    for (int64_t e = 0; w->normalize && e < E; e++)
        if (w->in_set[e]) w->gu[e] -= w->scale * acc / (D * D);
    if (w->score == MC_A_MOE_TOPK_ROUTE_score_sigmoid) {
        for (int64_t e = 0; e < E; e++)
            gz[e] += w->gu[e] * w->u[e] * (1.0f - w->u[e]);
    } else { /* softmax_selected: u is 0 outside the set, so only its logits move */
        softmax_back(w->u, w->gu, E, gz);
    }
}

/* in: g_weight[T,k], logits[T,E], bias[E]?  out: g_logits[T,E], scratch */
int32_t mk_MOE_TOPK_ROUTE_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const float *g = in[0].p, *z = in[1].p;
    int64_t T = in[1].dims[0], E = in[1].dims[1];
    float *gz = out[0].p;
    topk_grad w;
    int32_t st = topk_grad_init(in + 1, attr, &out[1], &w);
    if (st) return st;
    zero_f(gz, T * E);
    for (int64_t t = 0; t < T; t++)
        topk_token_back(&w, z + t * E, E, t, g + t * w.k, gz + t * E);
    return MOERT_OK;
}

/* GW-MoE's uncertainty test of one token, as k_route.c's gw_broadcast computes it. */
static bool gw_uncertain(const float *z, int64_t E, const mk_attr *attr, float *p) {
    float tau = (float)attr[MC_A_MOE_GW_ROUTE_threshold].f,
          eps = (float)attr[MC_A_MOE_GW_ROUTE_eps].f;
    softmax_row(z, E, p);
    float H = 0;
    for (int64_t e = 0; e < E; e++)
        H -= p[e] * __builtin_logf(p[e] + eps);
    if (attr[MC_A_MOE_GW_ROUTE_entropy_unit].i == MC_A_MOE_GW_ROUTE_entropy_unit_normalized)
        H /= __builtin_logf((float)E);
    return H >= tau;
}

/* in: g_weight ([T,k] for mode "infer", [T,E] for "train"), logits[T,E], bias[E]?,
 * mask[T]?  out: g_logits[T,E], scratch. Mode "train": a broadcast token takes the
 * softmax Jacobian of its full row, the others their base route's. */
int32_t mk_MOE_GW_ROUTE_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const float *g = in[0].p, *z = in[1].p;
    int64_t T = in[1].dims[0], E = in[1].dims[1], W = in[0].dims[1],
            M = attr[MC_A_MOE_GW_ROUTE_max_broadcast].i, seen = 0;
    bool training = attr[MC_A_MOE_GW_ROUTE_mode].i == MC_A_MOE_GW_ROUTE_mode_train;
    float *gz = out[0].p;
    topk_grad w;
    int32_t st = topk_grad_init(in + 1, attr, &out[1], &w);
    if (st) return st;
    zero_f(gz, T * E);
    for (int64_t t = 0; t < T; t++) {
        if (training) {
            bool uncertain = gw_uncertain(z + t * E, E, attr, w.u) && mask_at(&in[3], t);
            seen += uncertain;
            if (uncertain && seen <= M) {
                softmax_back(w.u, g + t * W, E, gz + t * E);
                continue;
            }
        }
        topk_token_back(&w, z + t * E, E, t, g + t * W, gz + t * E);
    }
    return MOERT_OK;
}

/* ---- top-p, expert choice, resonance ---- */

/* in: g_weight[T,K], logits[T,E]  out: g_logits[T,E], scratch: softmax Jacobian. */
int32_t mk_MOE_TOPP_ROUTE_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const float *g = in[0].p, *z = in[1].p;
    int64_t T = in[1].dims[0], E = in[1].dims[1], K = in[0].dims[1];
    float *gz = out[0].p;
    mk_topp_route_grad_scratch l = mk_topp_route_grad_scratch_of(T, E, K);
    if (!mk_scratch_fits(&out[1], l.bytes)) return no_scratch();
    int32_t *ex = mk_scratch_at(&out[1], l.ex);
    float *wt = mk_scratch_at(&out[1], l.wt), *p = mk_scratch_at(&out[1], l.p),
          *gp = mk_scratch_at(&out[1], l.gp);
    mk_tensor fo[3] = {matrix(ex, MK_I32, T, K), matrix(wt, MK_F32, T, K),
                       mk_scratch_rest(&out[1], l.fwd)};
    int32_t st = mk_MOE_TOPP_ROUTE(in + 1, fo, attr);
    if (st) return st;
    zero_f(gz, T * E);
    for (int64_t t = 0; t < T; t++) {
        softmax_row(z + t * E, E, p);
        zero_f(gp, E);
        for (int64_t r = 0; r < K; r++)
            if (ex[t * K + r] >= 0) gp[ex[t * K + r]] += g[t * K + r];
        softmax_back(p, gp, E, gz + t * E);
    }
    return MOERT_OK;
}

/* in: g_weight[E,C], logits[T,E], mask[T]?  out: g_logits[T,E], scratch. */
int32_t mk_MOE_EXPERT_CHOICE_ROUTE_GRAD(const mk_tensor *in, const mk_tensor *out,
                                        const mk_attr *attr) {
    const float *g = in[0].p, *z = in[1].p;
    int64_t T = in[1].dims[0], E = in[1].dims[1], C = in[0].dims[1];
    float *gz = out[0].p;
    mk_expert_choice_route_grad_scratch l = mk_expert_choice_route_grad_scratch_of(T, E, C);
    if (!mk_scratch_fits(&out[1], l.bytes)) return no_scratch();
    int32_t *tok = mk_scratch_at(&out[1], l.tok);
    float *wt = mk_scratch_at(&out[1], l.wt), *gp = mk_scratch_at(&out[1], l.gp),
          *p = mk_scratch_at(&out[1], l.p);
    mk_tensor fo[3] = {matrix(tok, MK_I32, E, C), matrix(wt, MK_F32, E, C),
                       mk_scratch_rest(&out[1], l.fwd)};
    int32_t st = mk_MOE_EXPERT_CHOICE_ROUTE(in + 1, fo, attr);
    if (st) return st;
    zero_f(gp, T * E);
    zero_f(gz, T * E);
    for (int64_t q = 0; q < E * C; q++)
        if (tok[q] >= 0) gp[tok[q] * E + q / C] += g[q];
    for (int64_t t = 0; t < T; t++) {
        softmax_row(z + t * E, E, p);
        softmax_back(p, gp + t * E, E, gz + t * E);
    }
    return MOERT_OK;
}

/* One token's gx[D] from gw[E], the cotangent of its softmax weights over the cosine
 * affinity (cosine) or the GrAP logits; buf holds 4E floats. */
static void resonance_token_back(const float *x, int64_t D, int64_t E, bool cosine, float *buf,
                                 const float *gw, float *gx) {
    float *S = buf, *delta = S + E, *w = delta + E, *gl = w + E;
    int64_t blk = D / E;
    float norm = 0, rb = __builtin_sqrtf((float)blk), ed = (float)E / (float)D;
    for (int64_t j = 0; j < D; j++)
        norm += x[j] * x[j];
    norm = __builtin_sqrtf(norm);
    for (int64_t i = 0; i < E; i++) {
        float s = 0;
        for (int64_t j = i * blk; j < (i + 1) * blk; j++)
            s += x[j];
        S[i] = s;
        delta[i] = cosine ? (norm == 0 ? 0.0f : s / (norm * rb)) : s * ed;
    }
    softmax_row(delta, E, w);
    zero_f(gl, E);
    softmax_back(w, gw, E, gl);
    if (!cosine) {
        for (int64_t j = 0; j < D; j++)
            gx[j] = gl[j / blk] * ed;
        return;
    }
    if (norm == 0) return; /* delta is the constant 0 there */
    float dot = 0;
    for (int64_t i = 0; i < E; i++)
        dot += gl[i] * delta[i];
    for (int64_t j = 0; j < D; j++)
        gx[j] = gl[j / blk] / (norm * rb) - x[j] * dot / (norm * norm);
}

/* in: g_weight[T,K], x[T,D]  out: gx[T,D], scratch. attrs: num_experts, k, capacity,
 * weight_mode (softmax_cosine | unit | softmax_grap_logits). */
int32_t mk_MOE_RESONANCE_ROUTE_GRAD(const mk_tensor *in, const mk_tensor *out,
                                    const mk_attr *attr) {
    const float *g = in[0].p, *x = in[1].p;
    int64_t T = in[1].dims[0], D = in[1].dims[1], E = attr[MC_A_MOE_RESONANCE_ROUTE_num_experts].i,
            K = in[0].dims[1], mode = attr[MC_A_MOE_RESONANCE_ROUTE_weight_mode].i;
    float *gx = out[0].p;
    zero_f(gx, T * D);
    if (mode == MC_A_MOE_RESONANCE_ROUTE_weight_mode_unit) return MOERT_OK; /* no gradient */
    mk_resonance_route_grad_scratch l = mk_resonance_route_grad_scratch_of(T, E, K, false);
    if (!mk_scratch_fits(&out[1], l.bytes)) return no_scratch();
    int32_t *ex = mk_scratch_at(&out[1], l.ex);
    float *wt = mk_scratch_at(&out[1], l.wt), *buf = mk_scratch_at(&out[1], l.buf);
    mk_tensor fo[3] = {matrix(ex, MK_I32, T, K), matrix(wt, MK_F32, T, K),
                       mk_scratch_rest(&out[1], l.fwd)};
    int32_t st = mk_MOE_RESONANCE_ROUTE(in + 1, fo, attr);
    if (st) return st;
    float *gw = buf + 4 * E;
    for (int64_t t = 0; t < T; t++) {
        zero_f(gw, E);
        for (int64_t r = 0; r < K; r++)
            if (ex[t * K + r] >= 0) gw[ex[t * K + r]] += g[t * K + r];
        resonance_token_back(x + t * D, D, E,
                             mode == MC_A_MOE_RESONANCE_ROUTE_weight_mode_softmax_cosine, buf, gw,
                             gx + t * D);
    }
    return MOERT_OK;
}

/* ---- moe.DispatchGrad ---- */

static int32_t check_indices(const mk_tensor *idx, bool by_expert, int64_t limit) {
    int64_t R = idx->dims[0], K = idx->dims[1];
    for (int64_t q = 0; q < R * K; q++) {
        int64_t v = get_idx(idx, q);
        if (v < -1 || v >= limit)
            return moert_fail(MOERT_ERR_ARGUMENT, "%s %lld at [%lld,%lld] is outside [-1, %lld)",
                              by_expert ? "token" : "expert", (long long)v, (long long)(q / K),
                              (long long)(q % K), (long long)limit);
    }
    return MOERT_OK;
}

/* Token choice: the row of q = t*K + r is offsets[e] + (how many q' < q chose e), as
 * moe.Dispatch's counting sort places it. pos[E+1] is scratch. */
static void rows_token_choice(const mk_tensor *idx, int64_t E, int64_t *pos, int64_t *row_of) {
    int64_t Q = idx->dims[0] * idx->dims[1];
    for (int64_t e = 0; e <= E; e++)
        pos[e] = 0;
    for (int64_t q = 0; q < Q; q++)
        if (get_idx(idx, q) >= 0) pos[get_idx(idx, q) + 1]++;
    for (int64_t e = 0; e < E; e++)
        pos[e + 1] += pos[e];
    for (int64_t q = 0; q < Q; q++)
        row_of[q] = get_idx(idx, q) >= 0 ? pos[get_idx(idx, q)]++ : -1;
}

/* c[0..n) stably sorted by token idx[base + c] ascending (merge sort through tmp). */
static void sort_by_token(const mk_tensor *idx, int64_t base, int64_t *c, int64_t *tmp, int64_t n) {
    for (int64_t w = 1; w < n; w *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t a = lo, b = mid, o = lo;
            while (a < mid && b < hi)
                tmp[o++] = get_idx(idx, base + c[b]) < get_idx(idx, base + c[a]) ? c[b++] : c[a++];
            while (a < mid)
                tmp[o++] = c[a++];
            while (b < hi)
                tmp[o++] = c[b++];
        }
        for (int64_t i = 0; i < n; i++)
            c[i] = tmp[i];
    }
}

/* Expert choice: expert e's used slots in ascending token order (ties by slot). */
static void rows_expert_choice(const mk_tensor *idx, int64_t E, int64_t *list, int64_t *tmp,
                               int64_t *row_of) {
    int64_t C = idx->dims[1], i = 0;
    for (int64_t e = 0; e < E; e++) {
        int64_t n = 0;
        for (int64_t c = 0; c < C; c++) {
            row_of[e * C + c] = -1;
            if (get_idx(idx, e * C + c) >= 0) list[n++] = c;
        }
        sort_by_token(idx, e * C, list, tmp, n);
        for (int64_t j = 0; j < n; j++)
            row_of[e * C + list[j]] = i++;
    }
}

/* in: g_rows[N,D], g_row_weight[N], x[T,D], expert[T,K] | token[E,C], weight
 * out: gx[T,D], gweight, scratch. attrs: num_experts, source, materialize. gx[t] sums
 * g_rows over t's rows in ascending row order (f32 accumulators for a 16-bit x); with
 * materialize 0 g_rows is [0,D] and gx is 0. */
int32_t mk_MOE_DISPATCH_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    int64_t E = attr[MC_A_MOE_DISPATCH_num_experts].i, T = in[2].dims[0], D = in[2].dims[1],
            Q = in[3].dims[0] * in[3].dims[1], C = in[3].dims[1];
    bool by_expert = attr[MC_A_MOE_DISPATCH_source].i == MC_A_MOE_DISPATCH_source_expert_choice;
    int32_t st = check_indices(&in[3], by_expert, by_expert ? T : E);
    if (st != MOERT_OK) return st;
    const mk_tensor *scratch = &out[2];
    mk_dispatch_grad_scratch l = mk_dispatch_grad_scratch_of(E, Q, C, T, D, in[2].dt != MK_F32);
    if (!mk_scratch_fits(scratch, l.bytes)) return no_scratch();
    int64_t *row_of = mk_scratch_at(scratch, l.row_of),
            *row_tok = mk_scratch_at(scratch, l.row_tok), *pos = mk_scratch_at(scratch, l.pos),
            *list = mk_scratch_at(scratch, l.list), *tmp = mk_scratch_at(scratch, l.tmp);
    float *acc = in[2].dt == MK_F32 ? out[0].p : mk_scratch_at(scratch, l.acc);
    if (by_expert)
        rows_expert_choice(&in[3], E, list, tmp, row_of);
    else
        rows_token_choice(&in[3], E, pos, row_of);
    const float *gw = in[1].p;
    float *gweight = out[1].p;
    for (int64_t i = 0; i < Q; i++)
        row_tok[i] = -1;
    for (int64_t q = 0; q < Q; q++) {
        gweight[q] = row_of[q] >= 0 ? gw[row_of[q]] : 0.0f;
        if (row_of[q] >= 0) row_tok[row_of[q]] = by_expert ? get_idx(&in[3], q) : q / C;
    }
    zero_f(acc, T * D);
    for (int64_t i = 0; attr[MC_A_MOE_DISPATCH_materialize].i && i < Q; i++) {
        if (row_tok[i] < 0) continue;
        float *y = acc + row_tok[i] * D;
        if (in[0].dt == MK_F32) {
            const float *gr = (const float *)in[0].p + i * D;
            for (int64_t d = 0; d < D; d++)
                y[d] += gr[d];
        } else {
            for (int64_t d = 0; d < D; d++)
                y[d] += mk_ldf(&in[0], i * D + d);
        }
    }
    for (int64_t e = 0; in[2].dt != MK_F32 && e < T * D; e++)
        mk_stf(&out[0], e, acc[e]);
    return MOERT_OK;
}

/* ---- moe.ExpertMatMulGrad ---- */

static int32_t check_offsets(const mk_tensor *off, int64_t N) {
    int64_t E = off->dims[0] - 1;
    for (int64_t e = 0; e <= E; e++) {
        int64_t o = get_idx(off, e), lo = e ? get_idx(off, e - 1) : 0;
        if (o < lo || o > N)
            return moert_fail(MOERT_ERR_ARGUMENT,
                              "offsets must rise from 0 to at most %lld, but offsets[%lld] is %lld",
                              (long long)N, (long long)e, (long long)o);
    }
    return MOERT_OK;
}

typedef struct {
    const mk_tensor *in, *out;
    float *acc;  /* f32 gW accumulators for 16-bit operands, else NULL */
    float *work; /* f32: the transposes of expert_grads_operands */
    int64_t D, F;
} emm_ctx;

/* <a, b> over n floats. Reassociation lets the vectorizer keep several vector
 * accumulators (strict left-to-right order would run one scalar chain, latency-bound):
 * the order is fixed by the target's vector width, not by the data or the thread. */
static float dot(const float *a, const float *b, int64_t n) {
#pragma clang fp reassociate(on)
    float s = 0;
    for (int64_t f = 0; f < n; f++)
        s += a[f] * b[f];
    return s;
}

/* f32, one expert's n rows, through the micro-kernel:
 *   gW_e    = rows^T g_out      A = rows^T, B = g_out in panels
 *   g_rows  = (W_e g_out^T)^T   A = W_e, B = g_out^T in panels (npad columns)
 * Row i of the expert is src + i*D, or src + tok[r0+i]*D when gathered through tok.
 * Each sum runs over rows (gW) or F (g_rows) in ascending order, like the interpreter.
 * The operands are rearranged once per expert (expert_grads_operands) into `work`, which
 * holds mk_grouped_grad_work_floats(n, 1, D, F) floats; slices of D then only compute. */
typedef struct {
    const float *go, *src, *We; /* g_out's first row of the expert, the rows, W[e] */
    const mk_tensor *tok;       /* NULL: rows are contiguous */
    float *gWe, *gr, *work;     /* gW[e], g_rows of the expert's first row, scratch */
    int64_t r0, n, D, F;
} expert_grads;

static int64_t whole_panels(int64_t n) {
    return (n + mk_gemm_nr() - 1) / mk_gemm_nr() * mk_gemm_nr();
}

/* Where expert_grads_operands puts rows^T [D,n], g_out in panels [n, whole_panels(F)],
 * g_out^T in panels [F, npad], and where the slices put g_rows^T [D, npad]. */
typedef struct {
    float *rT, *goP, *gTP, *cT;
    int64_t npad;
} grads_work;

static grads_work work_of(const expert_grads *x) {
    grads_work w = {.rT = x->work, .npad = whole_panels(x->n)};
    w.goP = w.rT + x->D * x->n;
    w.gTP = w.goP + x->n * whole_panels(x->F);
    w.cT = w.gTP + x->F * w.npad;
    return w;
}

enum { TB = 16 };

/* dst[c * ldd + r] = row r [c] for c < cols; rows in [rows, rows_pad) give 0. Row r is
 * base + r * lds, or base + tok[tok0 + r] * lds. TB columns at a time, so the TB
 * destination lines being filled stay in L1 while r walks (a whole column at a time
 * would touch one line per r, all in the same cache sets when ldd is 4 KiB apart).
 * Scalar on purpose: vectorized, this loop becomes gathers, several times slower. */
static void transpose_rows(const float *base, int64_t lds, const mk_tensor *tok, int64_t tok0,
                           int64_t rows, int64_t rows_pad, int64_t cols, float *dst, int64_t ldd) {
    for (int64_t c0 = 0; c0 < cols; c0 += TB) {
        int64_t c1 = c0 + TB < cols ? c0 + TB : cols;
        for (int64_t r = 0; r < rows_pad; r++) {
            const float *row = r < rows ? base + (tok ? get_idx(tok, tok0 + r) : r) * lds : NULL;
#pragma clang loop vectorize(disable)
            for (int64_t c = c0; c < c1; c++)
                dst[c * ldd + r] = row ? row[c] : 0.0f;
        }
    }
}

/* rows x cols (ld lds) into panels of nr columns (mk_gemm_serial_panels' B), 0-padded. */
static void to_panels(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst) {
    int64_t nr = mk_gemm_nr();
    for (int64_t c0 = 0; c0 < cols; c0 += nr, dst += rows * nr) {
        int64_t nn = cols - c0 < nr ? cols - c0 : nr;
        for (int64_t r = 0; r < rows; r++) {
            __builtin_memcpy(dst + r * nr, src + r * lds + c0, (size_t)nn * sizeof(float));
            for (int64_t j = nn; j < nr; j++)
                dst[r * nr + j] = 0.0f;
        }
    }
}

/* The operands every slice of the expert reads: rows^T, g_out and g_out^T in panels. */
static void expert_grads_operands(const expert_grads *x) {
    grads_work w = work_of(x);
    int64_t nr = mk_gemm_nr(), n = x->n, F = x->F;
    transpose_rows(x->src, x->D, x->tok, x->r0, n, n, x->D, w.rT, n);
    to_panels(x->go, F, n, F, w.goP);
    for (int64_t q = 0; q < w.npad; q += nr) /* panel q/nr holds rows [q, q + nr) of g_out */
        transpose_rows(x->go + q * F, F, NULL, 0, n - q < nr ? n - q : nr, nr, F, w.gTP + q * F,
                       nr);
}

/* How many of the expert's rows get g_rows from the panel product: whole panels, and
 * the last partial panel only when it is more than half full. The few rows past them
 * take dot products instead (about half the micro-kernel's speed), rather than a panel
 * of mostly padding: with 64-column panels, an expert of 70 rows would otherwise pay
 * for 128. */
static int64_t panel_product_rows(int64_t n) {
    int64_t nr = mk_gemm_nr(), full = n / nr * nr;
    return n - full > nr / 2 ? n : full;
}

/* Rows [d0, d1) of gW_e and of g_rows^T, then those columns of g_rows: slices share no
 * output, and each element's sum is the same whatever the slicing. */
static void expert_grads_slice(const expert_grads *x, int64_t d0, int64_t d1) {
    grads_work w = work_of(x);
    int64_t D = x->D, F = x->F, n = x->n, np = panel_product_rows(n);
    mk_gemm_serial_panels(w.rT + d0 * n, n, w.goP, x->gWe + d0 * F, F, d1 - d0, n, F);
    mk_gemm_serial_panels(x->We + d0 * F, F, w.gTP, w.cT + d0 * w.npad, w.npad, d1 - d0, F, np);
    transpose_rows(w.cT + d0 * w.npad, w.npad, NULL, 0, d1 - d0, d1 - d0, np, x->gr + d0, D);
    for (int64_t d = d0; d < d1; d++) /* W's row d stays in L1 across the rows */
        for (int64_t i = np; i < n; i++)
            x->gr[i * D + d] = dot(x->go + i * F, x->We + d * F, F);
}

/* The f32 gradients of E experts as tasks: first each expert's transposes, then slices
 * of GRAD_ROWS rows of D for every expert, so that both cores stay busy to the end
 * however unevenly the rows fell to the experts. */
enum { GRAD_ROWS = MK_ROWS_PER_TASK };

typedef struct grads_job {
    void (*get)(const struct grads_job *j, int64_t e, expert_grads *x);
    const void *ctx;
    int64_t E, D;
} grads_job;

static int64_t slices_of(const grads_job *j) {
    return (j->D + GRAD_ROWS - 1) / GRAD_ROWS;
}

static void operand_tasks(void *ctx, int64_t begin, int64_t end) {
    const grads_job *j = ctx;
    for (int64_t e = begin; e < end; e++) {
        expert_grads x;
        j->get(j, e, &x);
        expert_grads_operands(&x);
    }
}

static void slice_tasks(void *ctx, int64_t begin, int64_t end) {
    const grads_job *j = ctx;
    int64_t S = slices_of(j);
    for (int64_t t = begin; t < end; t++) {
        expert_grads x;
        j->get(j, t / S, &x);
        int64_t d0 = t % S * GRAD_ROWS;
        expert_grads_slice(&x, d0, d0 + GRAD_ROWS < j->D ? d0 + GRAD_ROWS : j->D);
    }
}

static void run_grads(const grads_job *j, bool serial) {
    int64_t tasks = j->E * slices_of(j);
    if (serial) {
        operand_tasks((void *)j, 0, j->E);
        slice_tasks((void *)j, 0, tasks);
        return;
    }
    moert_parallel_for(j->E, 1, operand_tasks, (void *)j);
    moert_parallel_for(tasks, 1, slice_tasks, (void *)j);
}

/* Expert e of ExpertMatMulGrad. */
static void emm_f32_expert(const grads_job *j, int64_t e, expert_grads *x) {
    const emm_ctx *c = j->ctx;
    int64_t D = c->D, F = c->F, r0 = get_idx(&c->in[2], e);
    *x = (expert_grads){(const float *)c->in[0].p + r0 * F,
                        (const float *)c->in[1].p + r0 * D,
                        (const float *)c->in[3].p + e * D * F,
                        NULL,
                        (float *)c->out[1].p + e * D * F,
                        (float *)c->out[0].p + r0 * D,
                        c->work + mk_grouped_grad_work_floats(r0, e, D, F),
                        r0,
                        get_idx(&c->in[2], e + 1) - r0,
                        D,
                        F};
}

/* Experts [begin, end), f16/bf16 operands: the same sums in f32, rounded once. */
static void emm_half(void *ctx, int64_t begin, int64_t end) {
    const emm_ctx *c = ctx;
    int64_t D = c->D, F = c->F;
    const mk_tensor *go = &c->in[0], *rows = &c->in[1], *W = &c->in[3];
    for (int64_t e = begin; e < end; e++) {
        float *acc = c->acc + e * D * F;
        zero_f(acc, D * F);
        for (int64_t i = get_idx(&c->in[2], e); i < get_idx(&c->in[2], e + 1); i++)
            for (int64_t d = 0; d < D; d++) {
                float s = 0, ad = mk_ldf(rows, i * D + d);
                for (int64_t f = 0; f < F; f++) {
                    float g = mk_ldf(go, i * F + f);
                    s += g * mk_ldf(W, (e * D + d) * F + f);
                    acc[d * F + f] += ad * g;
                }
                mk_stf(&c->out[0], i * D + d, s);
            }
        for (int64_t j = 0; j < D * F; j++)
            mk_stf(&c->out[1], e * D * F + j, acc[j]);
    }
}

/* in: g_out[N,F], rows[N,D], offsets[E+1], W[E,D,F] (plain)  out: g_rows[N,D], gW[E,D,F],
 * scratch (f32 gW accumulators, 16-bit operands only). Parallel over experts. */
int32_t mk_MOE_EXPERT_MATMUL_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    int64_t N = in[1].dims[0], D = in[1].dims[1], F = in[3].dims[2], E = in[2].dims[0] - 1;
    int32_t st = check_offsets(&in[2], N);
    if (st) return st;
    if (in[3].layout != MK_PLAIN)
        return moert_fail(MOERT_ERR_INTERNAL, "moe.ExpertMatMulGrad: W must be stored plain");
    mk_expert_matmul_grad_scratch l =
        mk_expert_matmul_grad_scratch_of(N, E, D, F, in[1].dt != MK_F32);
    if (!mk_scratch_fits(&out[2], l.bytes)) return no_scratch();
    emm_ctx c = {in, out, mk_scratch_at(&out[2], l.acc), mk_scratch_at(&out[2], l.work), D, F};
    bool small = N * D * F < (1 << 16);
    if (in[1].dt == MK_F32)
        run_grads(&(grads_job){emm_f32_expert, &c, E, D}, small);
    else if (small)
        emm_half(&c, 0, E);
    else
        moert_parallel_for(E, 1, emm_half, &c);
    /* rows of no expert: zero, like the forward's */
    for (int64_t i = 0; i < get_idx(&in[2], 0) * D; i++)
        mk_stf(&out[0], i, 0.0f);
    for (int64_t i = get_idx(&in[2], E) * D; i < N * D; i++)
        mk_stf(&out[0], i, 0.0f);
    return MOERT_OK;
}

/* ---- moe.GatherMatMulGrad ---- */

typedef struct {
    const mk_tensor *in, *out;
    const int64_t *end, *rows, *row_e; /* t's rows: rows[end[t] .. end[t+1]); row i's expert */
    float *acc_w, *acc_x;              /* f32 accumulators (gW, gx) for 16-bit operands */
    float *work, *grows;               /* f32: GEMM scratch, and each row's g_out W^T [N,D] */
    int64_t D, F;
} gmm_ctx;

/* Expert e of GatherMatMulGrad (f32): gW[e] and its rows' g_out W^T into grows. */
static void gmm_f32_expert(const grads_job *j, int64_t e, expert_grads *x) {
    const gmm_ctx *c = j->ctx;
    int64_t D = c->D, F = c->F, r0 = get_idx(&c->in[3], e);
    *x = (expert_grads){(const float *)c->in[0].p + r0 * F,
                        c->in[1].p,
                        (const float *)c->in[4].p + e * D * F,
                        &c->in[2],
                        (float *)c->out[1].p + e * D * F,
                        c->grows + r0 * D,
                        c->work + mk_grouped_grad_work_floats(r0, e, D, F),
                        r0,
                        get_idx(&c->in[3], e + 1) - r0,
                        D,
                        F};
}

/* f32 tokens [begin, end): gx[t] = sum over t's rows, ascending, of their g_out W^T. */
static void gmm_tokens_f32(void *ctx, int64_t begin, int64_t end) {
    const gmm_ctx *c = ctx;
    for (int64_t t = begin; t < end; t++) {
        float *y = (float *)c->out[0].p + t * c->D;
        zero_f(y, c->D);
        for (int64_t j = c->end[t]; j < c->end[t + 1]; j++) {
            const float *g = c->grows + c->rows[j] * c->D;
            for (int64_t d = 0; d < c->D; d++)
                y[d] += g[d];
        }
    }
}

/* Rows go in blocks of EMM_BLOCK: gW[e] streams through the cache once per block
 * rather than once per row; per element the rows still add in ascending order. */
enum { EMM_BLOCK = 16 };

/* Rows [i0, i1) of expert e into gWe (f32 accumulators of 16-bit operands). */
static void gmm_weights_block(const gmm_ctx *c, float *gWe, int64_t i0, int64_t i1) {
    int64_t D = c->D, F = c->F;
    const mk_tensor *go = &c->in[0], *x = &c->in[1], *tok = &c->in[2];
    for (int64_t d = 0; d < D; d++) {
        float *gw = gWe + d * F;
        for (int64_t i = i0; i < i1; i++) {
            float ad = mk_ldf(x, get_idx(tok, i) * D + d);
            for (int64_t f = 0; f < F; f++)
                gw[f] += ad * mk_ldf(go, i * F + f);
        }
    }
}

/* Experts [begin, end), 16-bit operands (f32 ones go through run_grads): gW[e,d,:] = sum
 * over e's rows i, ascending, of x[t,d] * g_out[i] (t = row_token[i]), rounded once. */
static void gmm_weights(void *ctx, int64_t begin, int64_t end) {
    const gmm_ctx *c = ctx;
    int64_t D = c->D, F = c->F;
    const mk_tensor *off = &c->in[3];
    for (int64_t e = begin; e < end; e++) {
        float *gWe = c->acc_w + e * D * F;
        zero_f(gWe, D * F);
        int64_t i1 = get_idx(off, e + 1);
        for (int64_t i = get_idx(off, e); i < i1; i += EMM_BLOCK)
            gmm_weights_block(c, gWe, i, i + EMM_BLOCK < i1 ? i + EMM_BLOCK : i1);
        for (int64_t j = 0; j < D * F; j++)
            mk_stf(&c->out[1], e * D * F + j, gWe[j]);
    }
}

/* Tokens [begin, end), 16-bit operands: gx[t] = sum over t's rows i, ascending, of
 * g_out[i] @ W[e_i]^T, in f32, rounded once. */
static void gmm_inputs(void *ctx, int64_t begin, int64_t end) {
    const gmm_ctx *c = ctx;
    int64_t D = c->D, F = c->F;
    const mk_tensor *go = &c->in[0], *W = &c->in[4];
    for (int64_t t = begin; t < end; t++) {
        float *y = c->acc_x + t * D;
        zero_f(y, D);
        for (int64_t j = c->end[t]; j < c->end[t + 1]; j++) {
            int64_t i = c->rows[j], e = c->row_e[i];
            for (int64_t d = 0; d < D; d++) {
                float s = 0;
                for (int64_t f = 0; f < F; f++)
                    s += mk_ldf(go, i * F + f) * mk_ldf(W, (e * D + d) * F + f);
                y[d] += s;
            }
        }
        for (int64_t d = 0; d < D; d++)
            mk_stf(&c->out[0], t * D + d, y[d]);
    }
}

/* The live rows [offsets[0], offsets[E]) grouped by token, ascending, as a CSR list (t's
 * rows are rows[end[t] .. end[t+1])), and the expert of each row; fails on a row whose
 * token is outside [0, T). */
static int32_t gmm_group(const mk_tensor *tok, const mk_tensor *off, int64_t T, int64_t *end,
                         int64_t *rows, int64_t *row_e) {
    int64_t E = off->dims[0] - 1;
    for (int64_t t = 0; t <= T; t++)
        end[t] = 0;
    for (int64_t e = 0; e < E; e++)
        for (int64_t i = get_idx(off, e); i < get_idx(off, e + 1); i++) {
            int64_t t = get_idx(tok, i);
            if (t < 0 || t >= T)
                return moert_fail(MOERT_ERR_ARGUMENT,
                                  "row %lld reads token %lld but there are %lld tokens",
                                  (long long)i, (long long)t, (long long)T);
            row_e[i] = e;
            end[t + 1]++;
        }
    for (int64_t t = 0; t < T; t++)
        end[t + 1] += end[t];
    /* end[t] is now where t's rows start; filling moves it to where they end */
    for (int64_t i = get_idx(off, 0); i < get_idx(off, E); i++)
        rows[end[get_idx(tok, i)]++] = i;
    for (int64_t t = T; t > 0; t--)
        end[t] = end[t - 1];
    end[0] = 0;
    return MOERT_OK;
}

/* in: g_out[N,F], x[T,D], row_token[N], offsets[E+1], W[E,D,F] (plain)  out: gx[T,D],
 * gW[E,D,F], scratch: end[T+1], rows[N], row_e[N], and f32 accumulators for gW and gx
 * with 16-bit operands. gW parallel over experts, gx over tokens (each token's rows in
 * ascending order, so the sums do not depend on the thread count). */
int32_t mk_MOE_GATHER_MATMUL_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    int64_t T = in[1].dims[0], D = in[1].dims[1], N = in[2].dims[0], F = in[4].dims[2],
            E = in[3].dims[0] - 1;
    int32_t st = check_offsets(&in[3], N);
    if (st) return st;
    if (in[4].layout != MK_PLAIN)
        return moert_fail(MOERT_ERR_INTERNAL, "moe.GatherMatMulGrad: W must be stored plain");
    const mk_tensor *scratch = &out[2];
    bool f32 = in[1].dt == MK_F32;
    mk_gather_matmul_grad_scratch l = mk_gather_matmul_grad_scratch_of(T, N, E, D, F, !f32);
    if (!mk_scratch_fits(scratch, l.bytes)) return no_scratch();
    int64_t *end = mk_scratch_at(scratch, l.end), *rows = mk_scratch_at(scratch, l.rows),
            *row_e = mk_scratch_at(scratch, l.row_e);
    gmm_ctx c = {in,
                 out,
                 end,
                 rows,
                 row_e,
                 mk_scratch_at(scratch, l.acc_w),
                 mk_scratch_at(scratch, l.acc_x),
                 mk_scratch_at(scratch, l.work),
                 mk_scratch_at(scratch, l.grows),
                 D,
                 F};
    if ((st = gmm_group(&in[2], &in[3], T, end, rows, row_e))) return st;
    moert_task_fn tokens = f32 ? gmm_tokens_f32 : gmm_inputs;
    bool small = N * D * F < (1 << 16);
    if (f32)
        run_grads(&(grads_job){gmm_f32_expert, &c, E, D}, small);
    else if (small)
        gmm_weights(&c, 0, E);
    else
        moert_parallel_for(E, 1, gmm_weights, &c);
    if (small)
        tokens(&c, 0, T);
    else
        moert_parallel_for(T, 1, tokens, &c);
    return MOERT_OK;
}

/* ---- moe.CombineGrad ---- */

typedef struct {
    const mk_tensor *in, *out;
    int64_t D, live;
} comb_ctx;

/* Rows [begin, end): g_out[i] = w[i] * gy[t], g_row_weight[i] = <gy[t], out[i]> (d
 * ascending), t = row_token[i]; 0 for rows of no token or past offsets[E]. */
static void combine_rows(void *ctx, int64_t begin, int64_t end) {
    const comb_ctx *c = ctx;
    int64_t D = c->D;
    const mk_tensor *gy = &c->in[0], *o = &c->in[1];
    const float *w = c->in[3].p;
    float *gw = c->out[1].p;
    for (int64_t i = begin; i < end; i++) {
        int64_t t = i < c->live ? get_idx(&c->in[2], i) : -1;
        float s = 0;
        for (int64_t d = 0; d < D; d++) {
            float g = t >= 0 ? mk_ldf(gy, t * D + d) : 0.0f;
            mk_stf(&c->out[0], i * D + d, t >= 0 ? w[i] * g : 0.0f);
            s += t >= 0 ? g * mk_ldf(o, i * D + d) : 0.0f;
        }
        gw[i] = s;
    }
}

/* in: gy[T,D], out[N,D], row_token[N], row_weight[N], offsets[E+1], x[T,*]
 * out: g_out[N,D], g_row_weight[N]. */
int32_t mk_MOE_COMBINE_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    int64_t N = in[1].dims[0], D = in[1].dims[1], T = in[0].dims[0], E = in[4].dims[0] - 1;
    int32_t st = check_offsets(&in[4], N);
    if (st) return st;
    comb_ctx c = {in, out, D, get_idx(&in[4], E)};
    for (int64_t i = 0; i < c.live; i++)
        if (get_idx(&in[2], i) >= T)
            return moert_fail(MOERT_ERR_ARGUMENT,
                              "row %lld belongs to token %lld but there are %lld tokens",
                              (long long)i, (long long)get_idx(&in[2], i), (long long)T);
    if (N * D < (1 << 14))
        combine_rows(&c, 0, N);
    else
        moert_parallel_for(N, 256, combine_rows, &c);
    return MOERT_OK;
}
