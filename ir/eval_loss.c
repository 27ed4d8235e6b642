/* ir/eval_loss.c: reference kernels of the training losses, SoftmaxCrossEntropyLoss
 * (ONNX semantics) and MSELoss (docs/format.md).
 *
 * Values and sums are mc_real, so the f64 interpreter that gradient checks use computes
 * them in double. Losses are summed in ascending flat index order; the native kernels
 * (backend/kernels/k_loss.c) do the same operations in the same order. */
#include "eval.h"

#include <math.h>

/* "reduction": both losses take one choice list (REDUCTION_CHOICES in ir/attrs.def). */
enum {
    RED_MEAN = MC_A_MSE_LOSS_reduction_mean,
    RED_SUM = MC_A_MSE_LOSS_reduction_sum,
    RED_NONE = MC_A_MSE_LOSS_reduction_none
};

static int reduction(const mc_kernel_ctx *k) {
    return mc_attr_choice(k->n, "reduction");
}

/* Writes the per-element losses' reduction (mean: sum / den) or, for none, nothing:
 * those were stored one by one. */
static void reduce_out(const mc_kernel_ctx *k, int red, mc_real sum, mc_real den) {
    if (red == RED_MEAN) k->out[0].f[0] = sum / den;
    if (red == RED_SUM) k->out[0].f[0] = sum;
}

/* The max of the row x[0], x[stride], ..., x[(C-1)*stride], and log(sum e^(x[c]-max)),
 * sums in ascending c. */
static mc_real row_log_sum_exp(const mc_real *x, int64_t C, int64_t stride, mc_real *mx_out) {
    mc_real mx = -INFINITY, s = 0;
    for (int64_t c = 0; c < C; c++)
        mx = ev_gt(x[c * stride], mx) ? x[c * stride] : mx;
    for (int64_t c = 0; c < C; c++)
        s += ev_exp(x[c * stride] - mx);
    *mx_out = mx;
    return ev_log(s);
}

/* -log softmax(x)[label] of that row: the max-shifted log-sum-exp minus (x[label]-max). */
static mc_real neg_log_softmax(const mc_real *x, int64_t C, int64_t stride, int64_t label) {
    mc_real mx, lse = row_log_sum_exp(x, C, stride, &mx);
    return lse - (x[label * stride] - mx);
}

/* The optional log_prob output: log softmax of every row of x over its C classes, each
 * x[c] - max - log(sum e^(x[c]-max)), the loss's operations. */
static void log_prob(const mc_tensor *x, int64_t C, int64_t inner, mc_real *out) {
    for (int64_t r = 0; r < x->numel / C; r++) {
        int64_t base = (r / inner) * C * inner + r % inner;
        const mc_real *row = x->f + base;
        mc_real mx, lse = row_log_sum_exp(row, C, inner, &mx);
        for (int64_t c = 0; c < C; c++)
            out[base + c * inner] = (row[c * inner] - mx) - lse;
    }
}

/* scores[N,C,d...], labels[N,d...], weights[C]? -> loss. Position i of the labels is
 * row (i / inner, :, i % inner) of the scores, inner = prod(d...). loss_i = w[label_i] *
 * -log softmax(row_i)[label_i] (w = 1 without weights), 0 where label_i == ignore_index.
 * mean divides the sum by the sum of w[label_i] over positions not ignored: 0/0 = NaN
 * when every label is ignored, as in ONNX's reference. */
bool mc_interp_SOFTMAX_CROSS_ENTROPY_LOSS(const mc_kernel_ctx *k) {
    const mc_tensor *x = k->in[0], *lab = k->in[1], *w = k->n->nin > 2 ? k->in[2] : NULL;
    const mc_attr *ig = mc_attr_get(k->n, "ignore_index");
    int red = reduction(k);
    int64_t C = x->dims[1], inner = lab->numel / x->dims[0];
    mc_real sum = 0, den = 0;
    for (int64_t i = 0; i < lab->numel; i++) {
        int64_t l = lab->i[i];
        mc_real li = 0;
        if (!ig || l != ig->i) {
            if (l < 0 || l >= C) {
                if (ig)
                    return ev_fail(k,
                                   "label %lld at position %lld is outside [0, %lld) and is not "
                                   "ignore_index %lld",
                                   (long long)l, (long long)i, (long long)C, (long long)ig->i);
                return ev_fail(k, "label %lld at position %lld is outside [0, %lld)", (long long)l,
                               (long long)i, (long long)C);
            }
            mc_real wl = w ? w->f[l] : 1;
            const mc_real *row = x->f + (i / inner) * C * inner + i % inner;
            li = wl * neg_log_softmax(row, C, inner, l);
            den += wl;
        }
        if (red == RED_NONE) k->out[0].f[i] = li;
        sum += li;
    }
    reduce_out(k, red, sum, den);
    if (k->n->nout > 1) log_prob(x, C, inner, k->out[1].f);
    return true;
}

/* pred, target of one shape -> loss_i = (pred_i - target_i)^2, mean over all elements. */
bool mc_interp_MSE_LOSS(const mc_kernel_ctx *k) {
    const mc_tensor *p = k->in[0], *t = k->in[1];
    int red = reduction(k);
    mc_real sum = 0;
    for (int64_t i = 0; i < p->numel; i++) {
        mc_real d = p->f[i] - t->f[i], li = d * d;
        if (red == RED_NONE) k->out[0].f[i] = li;
        sum += li;
    }
    reduce_out(k, red, sum, (mc_real)p->numel);
    return true;
}
