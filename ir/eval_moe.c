/* ir/eval_moe.c: reference kernels of dispatch, the grouped expert GEMMs (ExpertMatMul
 * and its gathering form GatherMatMul), combine, the composite moe.MoE, and the auxiliary
 * router losses (ROUTING.md §1.2, §2). */
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* materialize 0: rows is [0,D] and stays unwritten (GatherMatMul reads x instead). */
static void put_row(const mc_kernel_ctx *k, int64_t i, int64_t t, mc_real w) {
    const mc_tensor *x = k->in[0];
    int64_t D = x->dims[1];
    if (mc_attr_int(k->n, "materialize"))
        memcpy(k->out[0].f + i * D, x->f + t * D, sizeof(mc_real) * (size_t)D);
    k->out[2].i[i] = t;
    k->out[3].f[i] = w;
}

/* Expert-major rows; inside an expert, ascending token order. */
bool mc_interp_MOE_DISPATCH(const mc_kernel_ctx *k) {
    const mc_tensor *x = k->in[0], *idx = k->in[1], *w = k->in[2];
    int64_t E = mc_attr_int(k->n, "num_experts"), T = x->dims[0], R = idx->dims[0],
            K = idx->dims[1], i = 0;
    bool by_expert = mc_attr_choice(k->n, "source") == MC_A_MOE_DISPATCH_source_expert_choice;
    int64_t limit = by_expert ? T : E;
    for (int64_t q = 0; q < idx->numel; q++)
        if (idx->i[q] < -1 || idx->i[q] >= limit)
            return ev_fail(k, "%s %lld at [%lld,%lld] is outside [-1, %lld)",
                           by_expert ? "token" : "expert", (long long)idx->i[q], (long long)(q / K),
                           (long long)(q % K), (long long)limit);
    for (int64_t q = 0; q < R * K; q++)
        k->out[2].i[q] = -1;
    for (int64_t e = 0; e < E; e++) {
        k->out[1].i[e] = i;
        if (by_expert) {
            for (int64_t t = 0; t < T; t++)
                for (int64_t c = 0; c < K; c++)
                    if (idx->i[e * K + c] == t) put_row(k, i++, t, w->f[e * K + c]);
        } else {
            for (int64_t t = 0; t < T; t++)
                for (int64_t r = 0; r < K; r++)
                    if (idx->i[t * K + r] == e) put_row(k, i++, t, w->f[t * K + r]);
        }
    }
    k->out[1].i[E] = i;
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

/* out[i] = rows[i] @ W[e] for the expert e whose offset range holds row i. */
bool mc_interp_MOE_EXPERT_MATMUL(const mc_kernel_ctx *k) {
    const mc_tensor *rows = k->in[0], *off = k->in[1], *W = k->in[2];
    int64_t N = rows->dims[0], D = rows->dims[1], F = W->dims[2], E = off->numel - 1;
    if (!offsets_valid(k, off, N)) return false;
    for (int64_t e = 0; e < E; e++)
        for (int64_t i = off->i[e]; i < off->i[e + 1]; i++)
            for (int64_t f = 0; f < F; f++) {
                mc_real s = 0;
                for (int64_t d = 0; d < D; d++)
                    s += rows->f[i * D + d] * W->f[(e * D + d) * F + f];
                k->out[0].f[i * F + f] = s;
            }
    return true;
}

/* out[i] = x[row_token[i]] @ W[e] for the expert e whose offset range holds row i: the
 * ExpertMatMul of Dispatch's rows without the rows. Rows of no expert stay 0. */
bool mc_interp_MOE_GATHER_MATMUL(const mc_kernel_ctx *k) {
    const mc_tensor *x = k->in[0], *tok = k->in[1], *off = k->in[2], *W = k->in[3];
    int64_t T = x->dims[0], D = x->dims[1], N = tok->dims[0], F = W->dims[2], E = off->numel - 1;
    if (!offsets_valid(k, off, N)) return false;
    for (int64_t e = 0; e < E; e++)
        for (int64_t i = off->i[e]; i < off->i[e + 1]; i++) {
            int64_t t = tok->i[i];
            if (t < 0 || t >= T)
                return ev_fail(k, "row %lld reads token %lld but there are %lld tokens",
                               (long long)i, (long long)t, (long long)T);
            for (int64_t f = 0; f < F; f++) {
                mc_real s = 0;
                for (int64_t d = 0; d < D; d++)
                    s += x->f[t * D + d] * W->f[(e * D + d) * F + f];
                k->out[0].f[i * F + f] = s;
            }
        }
    return true;
}

/* y[t] = sum over rows of t, in row (= ascending expert) order, of weight * out. */
bool mc_interp_MOE_COMBINE(const mc_kernel_ctx *k) {
    const mc_tensor *out = k->in[0], *tok = k->in[1], *w = k->in[2], *off = k->in[3];
    mc_tensor *y = &k->out[0];
    int64_t N = out->dims[0], D = out->dims[1], T = y->dims[0];
    if (!offsets_valid(k, off, N)) return false;
    for (int64_t i = 0; i < off->i[off->numel - 1]; i++) {
        int64_t t = tok->i[i];
        if (t < 0) continue;
        if (t >= T)
            return ev_fail(k, "row %lld belongs to token %lld but there are %lld tokens",
                           (long long)i, (long long)t, (long long)T);
        for (int64_t d = 0; d < D; d++)
            y->f[t * D + d] += w->f[i] * out->f[i * D + d];
    }
    return true;
}

/* ---- moe.MoE, computed directly ---- */

typedef enum MC_A_MOE_MOE_activation_type_choices act_kind;

static mc_real act(act_kind a, mc_real x) {
    switch (a) {
    case MC_A_MOE_MOE_activation_type_relu: return x > 0 ? x : 0;
    case MC_A_MOE_MOE_activation_type_gelu:
        return EV_C(0.5) * x * (EV_C(1.0) + ev_erf(x * EV_C(0.70710678118654752)));
    case MC_A_MOE_MOE_activation_type_silu: return x * (EV_C(1.0) / (EV_C(1.0) + ev_exp(-x)));
    case MC_A_MOE_MOE_activation_type_gelu_tanh: /* ONNX Runtime's MoE gelu */
        return EV_C(0.5) * x *
               (EV_C(1.0) + ev_tanh(EV_C(0.7978845608028654) * (x + EV_C(0.044715) * x * x * x)));
    }
    return x;
}

/* One FFN on one token: act(x Wg) * (x Wu) or act(x Wu), then @ Wd; strides let the
 * same code serve routed experts ([D,F] slices) and the shared one. */
static void ffn(const mc_real *x, int64_t D, int64_t F, const mc_real *wu, const mc_real *wg,
                const mc_real *wd, act_kind a, mc_real *h, mc_real *out) {
    for (int64_t f = 0; f < F; f++) {
        mc_real u = 0, g = 0;
        for (int64_t d = 0; d < D; d++)
            u += x[d] * wu[d * F + f];
        if (wg) {
            for (int64_t d = 0; d < D; d++)
                g += x[d] * wg[d * F + f];
            h[f] = act(a, g) * u;
        } else {
            h[f] = act(a, u);
        }
    }
    for (int64_t d = 0; d < D; d++) {
        mc_real s = 0;
        for (int64_t f = 0; f < F; f++)
            s += h[f] * wd[f * D + d];
        out[d] = s;
    }
}

static act_kind act_of(const mc_node *n) {
    return (act_kind)mc_attr_choice(n, "activation_type");
}

static const mc_real *opt_f(const mc_kernel_ctx *k, int i) {
    return k->n->nin > i && k->in[i] ? k->in[i]->f : NULL;
}

bool mc_interp_MOE_MOE(const mc_kernel_ctx *k) {
    const mc_tensor *x = k->in[0], *z = k->in[1], *wu = k->in[2], *wd = k->in[3];
    const mc_real *wg = opt_f(k, 4), *bias = opt_f(k, 5), *su = opt_f(k, 6), *sd = opt_f(k, 7),
                  *sg = opt_f(k, 8);
    int64_t T = x->dims[0], D = x->dims[1], E = z->dims[1], F = wu->dims[2],
            S = su ? k->in[6]->dims[1] : 0;
    ev_topk c;
    ev_topk_config(k->n, "normalize_routing_weights", &c);
    int64_t *ex = malloc(sizeof(int64_t) * (size_t)(T * c.k + 1));
    mc_real *w = malloc(sizeof(mc_real) * (size_t)(T * c.k + 1)),
            *h = malloc(sizeof(mc_real) * (size_t)(F + S + 2 * D + 1));
    bool ok = ex && w && h && ev_topk_route(&c, z->f, bias, T, E, ex, w, NULL);
    for (int64_t t = 0; ok && t < T; t++) {
        mc_real *y = k->out[0].f + t * D, *o = h + F + S, *so = o + D;
        for (int64_t e = 0; e < E; e++)
            for (int64_t r = 0; r < c.k; r++) {
                if (ex[t * c.k + r] != e) continue;
                ffn(x->f + t * D, D, F, wu->f + e * D * F, wg ? wg + e * D * F : NULL,
                    wd->f + e * F * D, act_of(k->n), h, o);
                for (int64_t d = 0; d < D; d++)
                    y[d] += w[t * c.k + r] * o[d];
            }
        if (!su) continue;
        ffn(x->f + t * D, D, S, su, sg, sd, act_of(k->n), h + F, so);
        for (int64_t d = 0; d < D; d++)
            y[d] = y[d] + so[d];
    }
    free(ex);
    free(w);
    free(h);
    return ok || ev_fail(k, "out of memory");
}

/* ---- losses ---- */

static bool valid(const mc_tensor *mask, int64_t t) {
    return !mask || mask->i[t];
}

/* One scope instance (tokens [t0, t1)): scale * sum_e F_e * P_e. */
static mc_real lbl_part(const mc_kernel_ctx *k, int64_t t0, int64_t t1) {
    const mc_tensor *p = k->in[0], *ch = k->in[1], *mask = k->n->nin > 2 ? k->in[2] : NULL;
    int64_t E = p->dims[1], K = ch->dims[1];
    bool first_only =
        mc_attr_choice(k->n, "count") == MC_A_MOE_LOAD_BALANCE_LOSS_count_first_rank_only;
    bool over_k = mc_attr_choice(k->n, "scale") == MC_A_MOE_LOAD_BALANCE_LOSS_scale_E_over_K;
    mc_real scale = over_k ? (mc_real)E / (mc_real)K : (mc_real)E, n = 0, L = 0;
    for (int64_t t = t0; t < t1; t++)
        n += valid(mask, t);
    if (n == 0) return 0;
    for (int64_t e = 0; e < E; e++) {
        mc_real cnt = 0, P = 0;
        for (int64_t t = t0; t < t1; t++) {
            if (!valid(mask, t)) continue;
            P += p->f[t * E + e];
            for (int64_t r = 0; r < (first_only ? 1 : K); r++)
                cnt += ch->i[t * K + r] == e;
        }
        L += (cnt / n) * (P / n);
    }
    return scale * L;
}

bool mc_interp_MOE_LOAD_BALANCE_LOSS(const mc_kernel_ctx *k) {
    int64_t T = k->in[0]->dims[0], len = T;
    if (mc_attr_choice(k->n, "scope") == MC_A_MOE_LOAD_BALANCE_LOSS_scope_sequence) {
        len = mc_attr_int(k->n, "seq_len");
        if (T % len)
            return ev_fail(k, "%lld tokens do not split into sequences of seq_len %lld",
                           (long long)T, (long long)len);
    }
    mc_real sum = 0;
    for (int64_t t0 = 0; t0 < T; t0 += len)
        sum += lbl_part(k, t0, t0 + len);
    k->out[0].f[0] = (mc_real)mc_attr_float(k->n, "coef") * (sum / (mc_real)(T / len));
    return true;
}

bool mc_interp_MOE_Z_LOSS(const mc_kernel_ctx *k) {
    const mc_tensor *z = k->in[0], *mask = k->n->nin > 1 ? k->in[1] : NULL;
    int64_t T = z->dims[0], E = z->dims[1];
    mc_real sum = 0, n = 0;
    for (int64_t t = 0; t < T; t++) {
        if (!valid(mask, t)) continue;
        const mc_real *r = z->f + t * E;
        mc_real mx = -INFINITY, s = 0;
        for (int64_t e = 0; e < E; e++)
            mx = ev_gt(r[e], mx) ? r[e] : mx;
        for (int64_t e = 0; e < E; e++)
            s += ev_exp(r[e] - mx);
        mc_real lse = mx + ev_log(s);
        sum += lse * lse;
        n += 1;
    }
    k->out[0].f[0] = n > 0 ? (mc_real)mc_attr_float(k->n, "coef") * (sum / n) : 0;
    return true;
}

bool mc_interp_MOE_ENTROPY_LOSS(const mc_kernel_ctx *k) {
    const mc_tensor *p = k->in[0], *mask = k->n->nin > 1 ? k->in[1] : NULL;
    int64_t T = p->dims[0], E = p->dims[1];
    mc_real sum = 0, n = 0;
    for (int64_t t = 0; t < T; t++) {
        if (!valid(mask, t)) continue;
        mc_real H = 0;
        for (int64_t e = 0; e < E; e++) {
            mc_real v = p->f[t * E + e];
            if (v > 0) H -= v * ev_log(v);
        }
        sum += H;
        n += 1;
    }
    k->out[0].f[0] = n > 0 ? (mc_real)mc_attr_float(k->n, "coef") * (sum / n) : 0;
    return true;
}
