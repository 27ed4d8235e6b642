/* backend/kernels/k_loss.c: the training losses SoftmaxCrossEntropyLoss and MSELoss as
 * kernels (ir/eval_loss.c is the reference; docs/format.md has the semantics).
 *
 * The same float operations as the interpreter's float build, in its order: losses are
 * summed sequentially in ascending flat index order, log-softmax is the max-shifted
 * log-sum-exp with libm's expf/logf (through __builtin_*), and FP contraction is off, so
 * that a target with FMA rounds like the interpreter's separate multiply and add.
 * Scores, weights and the loss may be f32, f16 or bf16 (widened to float on load, the
 * loss rounded on store); labels i32 or i64. No scratch (no MC_OPF_SCRATCH in ops.def). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mk.h"
#include "k_math.h"
#include "../../runtime/moert.h"

#pragma STDC FP_CONTRACT OFF

/* NaN is smaller than every number, as the interpreter's ev_gt. */
static inline bool gt(float a, float b) {
    if (a != a) return false;
    if (b != b) return true;
    return a > b;
}

/* red: the `reduction` choice, one list for both losses (REDUCTION_CHOICES in attrs.def). */
static void reduce_out(const mk_tensor *y, int64_t red, float sum, float den) {
    if (red == MC_A_MSE_LOSS_reduction_mean) mk_stf(y, 0, sum / den);
    if (red == MC_A_MSE_LOSS_reduction_sum) mk_stf(y, 0, sum);
}

/* The max of the row starting at element `base` of x with `stride`, and log sum e^(x-max). */
static float row_log_sum_exp(const mk_tensor *x, int64_t base, int64_t C, int64_t stride,
                             float *mx_out) {
    float mx = -__builtin_inff(), s = 0;
    for (int64_t c = 0; c < C; c++) {
        float v = mk_ldf(x, base + c * stride);
        mx = gt(v, mx) ? v : mx;
    }
    for (int64_t c = 0; c < C; c++)
        s += __builtin_expf(mk_ldf(x, base + c * stride) - mx);
    *mx_out = mx;
    return __builtin_logf(s);
}

/* -log softmax(row)[label] of that row. */
static float neg_log_softmax(const mk_tensor *x, int64_t base, int64_t C, int64_t stride,
                             int64_t label) {
    float mx, lse = row_log_sum_exp(x, base, C, stride, &mx);
    return lse - (mk_ldf(x, base + label * stride) - mx);
}

/* The optional log_prob output (out[1], p NULL when not asked for): the interpreter's
 * log_prob, in its order. */
static void log_prob(const mk_tensor *x, int64_t C, int64_t inner, const mk_tensor *y) {
    for (int64_t r = 0; r < mk_numel(x) / C; r++) {
        int64_t base = (r / inner) * C * inner + r % inner;
        float mx, lse = row_log_sum_exp(x, base, C, inner, &mx);
        for (int64_t c = 0; c < C; c++)
            mk_stf(y, base + c * inner, (mk_ldf(x, base + c * inner) - mx) - lse);
    }
}

static int32_t bad_label(int64_t l, int64_t i, int64_t C, const mk_attr *ig) {
    if (ig->present)
        return moert_fail(MOERT_ERR_ARGUMENT,
                          "label %lld at position %lld is outside [0, %lld) and is not "
                          "ignore_index %lld",
                          (long long)l, (long long)i, (long long)C, (long long)ig->i);
    return moert_fail(MOERT_ERR_ARGUMENT, "label %lld at position %lld is outside [0, %lld)",
                      (long long)l, (long long)i, (long long)C);
}

/* in: scores[N,C,d...], labels[N,d...], weights[C]?  out: loss[] or loss[N,d...].
 * attrs: ignore_index?, reduction. Label position i reads the scores' row
 * (i / inner, :, i % inner), inner = prod(d...); mean divides by the sum of the weights
 * of the labels not ignored (0/0 = NaN when all are). */
int32_t mk_SOFTMAX_CROSS_ENTROPY_LOSS(const mk_tensor *in, const mk_tensor *out,
                                      const mk_attr *attr) {
    const mk_tensor *x = &in[0], *lab = &in[1], *w = &in[2];
    const mk_attr *ignore = &attr[MC_A_SOFTMAX_CROSS_ENTROPY_LOSS_ignore_index];
    int64_t red = attr[MC_A_SOFTMAX_CROSS_ENTROPY_LOSS_reduction].i, C = x->dims[1],
            P = mk_numel(lab), inner = P / x->dims[0];
    float sum = 0, den = 0;
    for (int64_t i = 0; i < P; i++) {
        int64_t l = mk_ldi(lab, i);
        float li = 0;
        if (!ignore->present || l != ignore->i) {
            if (l < 0 || l >= C) return bad_label(l, i, C, ignore);
            float wl = w->p ? mk_ldf(w, l) : 1.0f;
            li = wl * neg_log_softmax(x, (i / inner) * C * inner + i % inner, C, inner, l);
            den += wl;
        }
        if (red == MC_A_SOFTMAX_CROSS_ENTROPY_LOSS_reduction_none) mk_stf(&out[0], i, li);
        sum += li;
    }
    reduce_out(&out[0], red, sum, den);
    if (out[1].p) log_prob(x, C, inner, &out[1]);
    return MOERT_OK;
}

/* in: pred, target (one shape)  out: loss[] or loss of pred's shape. attrs: reduction.
 * loss_i = (pred_i - target_i)^2; mean divides by the element count. */
int32_t mk_MSE_LOSS(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    int64_t red = attr[MC_A_MSE_LOSS_reduction].i, n = mk_numel(&in[0]);
    float sum = 0;
    for (int64_t i = 0; i < n; i++) {
        float d = mk_ldf(&in[0], i) - mk_ldf(&in[1], i), li = d * d;
        if (red == MC_A_MSE_LOSS_reduction_none) mk_stf(&out[0], i, li);
        sum += li;
    }
    reduce_out(&out[0], red, sum, (float)n);
    return MOERT_OK;
}
