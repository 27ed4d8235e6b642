/* ir/eval_grad_loss.c: reference kernels of the loss gradients and the optimizers
 * (docs/autodiff.md), the derivatives of ir/eval_moe.c's and ir/eval_loss.c's losses.
 *
 * Each loss gradient is gy times the derivative of its forward loss with the forward's
 * discrete parts frozen: LoadBalanceLoss's counts, the mask, ignore_index. Rows the
 * forward leaves out (masked tokens, ignored labels, empty scopes) get 0. The native
 * kernels (backend/kernels/k_grad_loss.c) do the same float operations in the same order. */
#include "eval.h"

#include <math.h>
#include <stdlib.h>

/* "reduction": both losses take one choice list (REDUCTION_CHOICES in ir/attrs.def). */
enum {
    RED_MEAN = MC_A_MSE_LOSS_reduction_mean,
    RED_SUM = MC_A_MSE_LOSS_reduction_sum,
    RED_NONE = MC_A_MSE_LOSS_reduction_none
};

static int reduction(const mc_kernel_ctx *k) {
    return mc_attr_choice(k->n, "reduction");
}

static bool valid(const mc_tensor *mask, int64_t t) {
    return !mask || mask->i[t];
}

static const mc_tensor *opt_in(const mc_kernel_ctx *k, int i) {
    return k->n->nin > i ? k->in[i] : NULL;
}

/* ---- router losses (ROUTING.md §2) ---- */

/* Tokens [t0, t1) of one scope: g[t,e] = f * cnt_e / n^2 for its n valid tokens, where
 * f = gy * coef / scopes * scale; cnt holds E counters. */
static void lbl_grad_part(const mc_kernel_ctx *k, int64_t t0, int64_t t1, mc_real f, mc_real *cnt) {
    const mc_tensor *ch = k->in[2], *mask = opt_in(k, 3);
    int64_t E = k->in[1]->dims[1], K = ch->dims[1];
    bool first_only =
        mc_attr_choice(k->n, "count") == MC_A_MOE_LOAD_BALANCE_LOSS_count_first_rank_only;
    int64_t ranks = first_only ? 1 : K;
    mc_real n = 0;
    for (int64_t e = 0; e < E; e++)
        cnt[e] = 0;
    for (int64_t t = t0; t < t1; t++) {
        if (!valid(mask, t)) continue;
        n += 1;
        for (int64_t r = 0; r < ranks; r++) {
            int64_t e = ch->i[t * K + r];
            if (e >= 0 && e < E) cnt[e] += 1;
        }
    }
    if (n == 0) return;
    for (int64_t t = t0; t < t1; t++) {
        if (!valid(mask, t)) continue;
        for (int64_t e = 0; e < E; e++)
            k->out[0].f[t * E + e] = f * ((cnt[e] / n) / n);
    }
}

/* gy[], probs[T,E], choice[T,K], mask[T]? -> g_probs[T,E]. */
bool mc_interp_MOE_LOAD_BALANCE_LOSS_GRAD(const mc_kernel_ctx *k) {
    int64_t T = k->in[1]->dims[0], E = k->in[1]->dims[1], K = k->in[2]->dims[1], len = T;
    if (mc_attr_choice(k->n, "scope") == MC_A_MOE_LOAD_BALANCE_LOSS_scope_sequence) {
        len = mc_attr_int(k->n, "seq_len");
        if (T % len)
            return ev_fail(k, "%lld tokens do not split into sequences of seq_len %lld",
                           (long long)T, (long long)len);
    }
    if (T == 0) return true;
    bool over_k = mc_attr_choice(k->n, "scale") == MC_A_MOE_LOAD_BALANCE_LOSS_scale_E_over_K;
    mc_real scale = over_k ? (mc_real)E / (mc_real)K : (mc_real)E;
    mc_real f = k->in[0]->f[0] * (mc_real)mc_attr_float(k->n, "coef") / (mc_real)(T / len) * scale;
    mc_real *cnt = malloc(sizeof(mc_real) * (size_t)E);
    if (!cnt) return ev_fail(k, "out of memory");
    for (int64_t t0 = 0; t0 < T; t0 += len)
        lbl_grad_part(k, t0, t0 + len, f, cnt);
    free(cnt);
    return true;
}

static mc_real valid_count(const mc_tensor *mask, int64_t T) {
    mc_real n = 0;
    for (int64_t t = 0; t < T; t++)
        n += valid(mask, t);
    return n;
}

/* gy[], logits[T,E], mask[T]? -> g[t,e] = gy * coef * 2 / n * lse_t * softmax_t[e]. */
bool mc_interp_MOE_Z_LOSS_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *z = k->in[1], *mask = opt_in(k, 2);
    int64_t T = z->dims[0], E = z->dims[1];
    mc_real n = valid_count(mask, T);
    if (n == 0) return true;
    mc_real f = k->in[0]->f[0] * (mc_real)mc_attr_float(k->n, "coef") * 2 / n;
    for (int64_t t = 0; t < T; t++) {
        if (!valid(mask, t)) continue;
        const mc_real *r = z->f + t * E;
        mc_real mx = -INFINITY, s = 0;
        for (int64_t e = 0; e < E; e++)
            mx = ev_gt(r[e], mx) ? r[e] : mx;
        for (int64_t e = 0; e < E; e++)
            s += ev_exp(r[e] - mx);
        mc_real lse = mx + ev_log(s);
        for (int64_t e = 0; e < E; e++)
            k->out[0].f[t * E + e] = f * lse * (ev_exp(r[e] - mx) / s);
    }
    return true;
}

/* gy[], p[T,E], mask[T]? -> g[t,e] = -gy * coef / n * (ln p + 1) where p > 0; 0 where
 * p <= 0, whose term 0 ln 0 the forward leaves out. */
bool mc_interp_MOE_ENTROPY_LOSS_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *p = k->in[1], *mask = opt_in(k, 2);
    int64_t T = p->dims[0], E = p->dims[1];
    mc_real n = valid_count(mask, T);
    if (n == 0) return true;
    mc_real f = k->in[0]->f[0] * (mc_real)mc_attr_float(k->n, "coef") / n;
    for (int64_t t = 0; t < T; t++) {
        if (!valid(mask, t)) continue;
        for (int64_t e = 0; e < E; e++) {
            mc_real v = p->f[t * E + e];
            if (v > 0) k->out[0].f[t * E + e] = -f * (ev_log(v) + 1);
        }
    }
    return true;
}

/* ---- training losses (docs/format.md) ---- */

static bool bad_label(const mc_kernel_ctx *k, int64_t l, int64_t i, int64_t C) {
    const mc_attr *ig = mc_attr_get(k->n, "ignore_index");
    if (ig)
        return ev_fail(k,
                       "label %lld at position %lld is outside [0, %lld) and is not "
                       "ignore_index %lld",
                       (long long)l, (long long)i, (long long)C, (long long)ig->i);
    return ev_fail(k, "label %lld at position %lld is outside [0, %lld)", (long long)l,
                   (long long)i, (long long)C);
}

/* Label position i takes part (not ignore_index); its label must then be in [0, C). */
static bool counted(const mc_kernel_ctx *k, int64_t i, int64_t C, bool *out) {
    const mc_attr *ig = mc_attr_get(k->n, "ignore_index");
    int64_t l = k->in[2]->i[i];
    *out = !ig || l != ig->i;
    return !*out || (l >= 0 && l < C) || bad_label(k, l, i, C);
}

/* gy, scores[N,C,d...], labels[N,d...], weights[C]? -> g_scores. Position i (row
 * (i / inner, :, i % inner)) not ignored: g_row = s_i * w[l] * (softmax(row) - onehot(l)),
 * s_i = gy / den (mean; den the sum of w[l] not ignored), gy (sum) or gy[i] (none). */
bool mc_interp_MOE_SOFTMAX_CROSS_ENTROPY_LOSS_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *gy = k->in[0], *x = k->in[1], *lab = k->in[2], *w = opt_in(k, 3);
    int red = reduction(k);
    int64_t C = x->dims[1], inner = lab->numel / x->dims[0];
    mc_real den = 0;
    bool on;
    for (int64_t i = 0; i < lab->numel; i++) {
        if (!counted(k, i, C, &on)) return false;
        if (on) den += w ? w->f[lab->i[i]] : 1;
    }
    for (int64_t i = 0; i < lab->numel; i++) {
        if (!counted(k, i, C, &on) || !on) continue;
        int64_t l = lab->i[i], base = (i / inner) * C * inner + i % inner;
        mc_real s = red == RED_NONE ? gy->f[i] : red == RED_SUM ? gy->f[0] : gy->f[0] / den;
        mc_real f = s * (w ? w->f[l] : 1), mx = -INFINITY, sum = 0;
        const mc_real *row = x->f + base;
        for (int64_t c = 0; c < C; c++)
            mx = ev_gt(row[c * inner], mx) ? row[c * inner] : mx;
        for (int64_t c = 0; c < C; c++)
            sum += ev_exp(row[c * inner] - mx);
        for (int64_t c = 0; c < C; c++)
            k->out[0].f[base + c * inner] = f * (ev_exp(row[c * inner] - mx) / sum - (c == l));
    }
    return true;
}

/* gy, pred, target -> g_i = 2 (pred_i - target_i) s_i, s_i = gy / numel (mean), gy (sum)
 * or gy[i] (none). */
bool mc_interp_MOE_MSE_LOSS_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *gy = k->in[0], *p = k->in[1], *t = k->in[2];
    int red = reduction(k);
    for (int64_t i = 0; i < p->numel; i++) {
        mc_real s = red == RED_NONE  ? gy->f[i]
                    : red == RED_SUM ? gy->f[0]
                                     : gy->f[0] / (mc_real)p->numel;
        k->out[0].f[i] = 2 * (p->f[i] - t->f[i]) * s;
    }
    return true;
}

/* ---- optimizers ---- */

/* param, grad, velocity -> param', velocity':
 * v' = momentum v + g + wd p, p' = p - lr v'. */
bool mc_interp_MOE_SGD(const mc_kernel_ctx *k) {
    const mc_tensor *p = k->in[0], *g = k->in[1], *v = k->in[2];
    mc_real lr = (mc_real)mc_attr_float(k->n, "lr");
    mc_real mom = (mc_real)mc_attr_float(k->n, "momentum");
    mc_real wd = (mc_real)mc_attr_float(k->n, "weight_decay");
    for (int64_t i = 0; i < p->numel; i++) {
        mc_real vn = mom * v->f[i] + g->f[i] + wd * p->f[i];
        k->out[1].f[i] = vn;
        k->out[0].f[i] = p->f[i] - lr * vn;
    }
    return true;
}

/* param, grad, m, v, step[1] -> param', m', v' (docs/autodiff.md): m' = b1 m + (1-b1) g,
 * v' = b2 v + (1-b2) g^2, p' = p - lr (m'/c1 / (sqrt(v'/c2) + eps) + wd p), with the bias
 * corrections c1 = 1 - b1^t, c2 = 1 - b2^t of step t >= 1. Weight decay is decoupled: it
 * never enters m or v. */
bool mc_interp_MOE_ADAMW(const mc_kernel_ctx *k) {
    const mc_tensor *p = k->in[0], *g = k->in[1], *m = k->in[2], *v = k->in[3];
    int64_t t = k->in[4]->i[0];
    if (t < 1)
        return ev_fail(k, "step is %lld but must be >= 1 (the count after this update)",
                       (long long)t);
    mc_real lr = (mc_real)mc_attr_float(k->n, "lr"), eps = (mc_real)mc_attr_float(k->n, "epsilon");
    mc_real b1 = (mc_real)mc_attr_float(k->n, "beta1"), b2 = (mc_real)mc_attr_float(k->n, "beta2");
    mc_real wd = (mc_real)mc_attr_float(k->n, "weight_decay");
    mc_real c1 = 1 - ev_pow(b1, (mc_real)t), c2 = 1 - ev_pow(b2, (mc_real)t);
    for (int64_t i = 0; i < p->numel; i++) {
        mc_real gi = g->f[i];
        mc_real mn = b1 * m->f[i] + (1 - b1) * gi, vn = b2 * v->f[i] + (1 - b2) * (gi * gi);
        k->out[1].f[i] = mn;
        k->out[2].f[i] = vn;
        k->out[0].f[i] = p->f[i] - lr * ((mn / c1) / (ev_sqrt(vn / c2) + eps) + wd * p->f[i]);
    }
    return true;
}
