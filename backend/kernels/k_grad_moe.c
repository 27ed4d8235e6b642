/* backend/kernels/k_grad_moe.c: native kernels for the gradients of MoE ops
 * (docs/autodiff.md), matching the interpreter (ir/eval_grad_moe.c).
 *
 * Router gradients recompute the forward's decisions by calling the forward kernel
 * itself (k_route.c, linked into the same module) on the node's forward inputs, so they
 * are bit-identical to the forward's; the Jacobian of the weights is then applied with
 * those decisions frozen. Dispatch and Combine gradients are the adjoints of the forward
 * data movement; ExpertMatMul's and GatherMatMul's are in k_grad_expert.c.
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
    mk_tensor t = {p, dt, 2, {rows, cols}, MK_PLAIN, 0, 0, 0};
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
    int32_t st = mk_check_offsets(&in[4], N);
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
