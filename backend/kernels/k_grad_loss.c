/* backend/kernels/k_grad_loss.c: the loss gradients and the optimizers as kernels
 * (docs/autodiff.md; ir/eval_grad_loss.c is the reference).
 *
 * The same float operations as the interpreter's float build, in its order, with libm
 * through __builtin_* and FP contraction off, so that a target with FMA rounds like the
 * interpreter's separate multiply and add. Every element of every output is written
 * (rows the forward leaves out get 0): output buffers are not zeroed. The router-loss
 * gradients are f32; SoftmaxCrossEntropyLossGrad, MSELossGrad and the optimizers take
 * f32, f16 or bf16 (widened on load, rounded on store) with an f32 fast path for the
 * optimizers' elementwise updates. Large loops run on the thread pool. Scratch:
 * LoadBalanceLossGrad's counters (k_grad_loss_scratch.h), out[1]. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../runtime/moert.h"
#include "k_grad_loss_scratch.h"
#include "k_math.h"
#include "mk.h"

#pragma STDC FP_CONTRACT OFF

/* Loops over at least this many elements go to the pool, in chunks of about GRAIN. */
enum { PARALLEL_MIN = 1 << 15, GRAIN = 1 << 13 };

/* fn over rows [0, rows) of `width` elements each. */
static void run_rows(int64_t rows, int64_t width, moert_task_fn fn, void *ctx) {
    if (rows > 0 && rows * width >= PARALLEL_MIN)
        moert_parallel_for(rows, 1 + GRAIN / (width > 0 ? width : 1), fn, ctx);
    else if (rows > 0)
        fn(ctx, 0, rows);
}

/* NaN is smaller than every number, as the interpreter's ev_gt. */
static inline bool gt(float a, float b) {
    if (a != a) return false;
    if (b != b) return true;
    return a > b;
}

static inline bool valid(const mk_tensor *m, int64_t t) {
    return !m->p || ((const uint8_t *)m->p)[t] != 0;
}

static float valid_count(const mk_tensor *m, int64_t T) {
    float n = 0;
    for (int64_t t = 0; t < T; t++)
        n += valid(m, t);
    return n;
}

/* ---- router losses ---- */

/* Tokens [t0, t1) of one scope: g[t,e] = f * cnt_e / n^2 for the n valid ones, 0 else. */
static void lbl_grad_part(const mk_tensor *in, float *g, float *cnt, int64_t ranks, float f,
                          int64_t t0, int64_t t1) {
    int64_t E = in[1].dims[1], K = in[2].dims[1];
    float n = 0;
    for (int64_t e = 0; e < E; e++)
        cnt[e] = 0;
    for (int64_t t = t0; t < t1; t++) {
        if (!valid(&in[3], t)) continue;
        n += 1;
        for (int64_t r = 0; r < ranks; r++) {
            int64_t e = mk_ldi(&in[2], t * K + r);
            if (e >= 0 && e < E) cnt[e] += 1;
        }
    }
    for (int64_t t = t0; t < t1; t++) {
        bool on = n > 0 && valid(&in[3], t);
        for (int64_t e = 0; e < E; e++)
            g[t * E + e] = on ? f * ((cnt[e] / n) / n) : 0.0f;
    }
}

/* in: gy[], probs[T,E], choice[T,K], mask[T]?  out: g_probs[T,E], scratch cnt[E].
 * attrs: scale (E | E_over_K), count (all_ranks | first_rank_only), scope (batch |
 * sequence), seq_len?, coef. */
int32_t mk_MOE_LOAD_BALANCE_LOSS_GRAD(const mk_tensor *in, const mk_tensor *out,
                                      const mk_attr *attr) {
    int64_t T = in[1].dims[0], E = in[1].dims[1], K = in[2].dims[1], len = T;
    if (attr[MC_A_MOE_LOAD_BALANCE_LOSS_scope].i == MC_A_MOE_LOAD_BALANCE_LOSS_scope_sequence) {
        len = attr[MC_A_MOE_LOAD_BALANCE_LOSS_seq_len].i;
        if (T % len)
            return moert_fail(MOERT_ERR_ARGUMENT,
                              "%lld tokens do not split into sequences of seq_len %lld",
                              (long long)T, (long long)len);
    }
    if (T == 0) return MOERT_OK;
    mk_load_balance_loss_grad_scratch l = mk_load_balance_loss_grad_scratch_of(E);
    if (!mk_scratch_fits(&out[1], l.bytes))
        return moert_fail(MOERT_ERR_INTERNAL, "loss gradient kernel: the scratch is too small");
    bool over_k =
        attr[MC_A_MOE_LOAD_BALANCE_LOSS_scale].i == MC_A_MOE_LOAD_BALANCE_LOSS_scale_E_over_K;
    bool first_only = attr[MC_A_MOE_LOAD_BALANCE_LOSS_count].i ==
                      MC_A_MOE_LOAD_BALANCE_LOSS_count_first_rank_only;
    float scale = over_k ? (float)E / (float)K : (float)E;
    float f = *(const float *)in[0].p * (float)attr[MC_A_MOE_LOAD_BALANCE_LOSS_coef].f /
              (float)(T / len) * scale;
    for (int64_t t0 = 0; t0 < T; t0 += len)
        lbl_grad_part(in, out[0].p, mk_scratch_at(&out[1], l.cnt), first_only ? 1 : K, f, t0,
                      t0 + len);
    return MOERT_OK;
}

typedef struct {
    const mk_tensor *in;
    float *g;
    float f; /* gy * coef (* 2 for the z-loss) / valid tokens */
} router_ctx;

static void z_rows(void *ctx, int64_t b, int64_t end) {
    const router_ctx *c = ctx;
    int64_t E = c->in[1].dims[1];
    for (int64_t t = b; t < end; t++) {
        const float *r = (const float *)c->in[1].p + t * E;
        float *g = c->g + t * E;
        if (!valid(&c->in[2], t)) {
            for (int64_t e = 0; e < E; e++)
                g[e] = 0;
            continue;
        }
        float mx = -__builtin_inff(), s = 0;
        for (int64_t e = 0; e < E; e++)
            mx = gt(r[e], mx) ? r[e] : mx;
        for (int64_t e = 0; e < E; e++)
            s += __builtin_expf(r[e] - mx);
        float lse = mx + __builtin_logf(s);
        for (int64_t e = 0; e < E; e++)
            g[e] = c->f * lse * (__builtin_expf(r[e] - mx) / s);
    }
}

static void entropy_rows(void *ctx, int64_t b, int64_t end) {
    const router_ctx *c = ctx;
    int64_t E = c->in[1].dims[1];
    for (int64_t t = b; t < end; t++) {
        const float *p = (const float *)c->in[1].p + t * E;
        bool on = valid(&c->in[2], t);
        for (int64_t e = 0; e < E; e++)
            c->g[t * E + e] = on && p[e] > 0 ? -c->f * (__builtin_logf(p[e]) + 1.0f) : 0.0f;
    }
}

/* Rows of the [T,E] input 1 to the pool; f = gy * coef * mul / valid tokens (when any). */
static int32_t router_grad(const mk_tensor *in, const mk_tensor *out, double coef, float mul,
                           moert_task_fn rows) {
    int64_t T = in[1].dims[0], E = in[1].dims[1];
    float n = valid_count(&in[2], T);
    router_ctx c = {in, out[0].p, n > 0 ? *(const float *)in[0].p * (float)coef * mul / n : 0};
    run_rows(T, E, rows, &c);
    return MOERT_OK;
}

/* in: gy[], logits[T,E], mask[T]?  out: g = gy coef 2/n lse_t softmax_t. attrs: coef. */
int32_t mk_MOE_Z_LOSS_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    return router_grad(in, out, attr[MC_A_MOE_Z_LOSS_coef].f, 2.0f, z_rows);
}

/* in: gy[], p[T,E], mask[T]?  out: g = -gy coef/n (ln p + 1), 0 where p <= 0. attrs: coef. */
int32_t mk_MOE_ENTROPY_LOSS_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    return router_grad(in, out, attr[MC_A_MOE_ENTROPY_LOSS_coef].f, 1.0f, entropy_rows);
}

/* ---- training losses ---- */

static int32_t bad_label(int64_t l, int64_t i, int64_t C, const mk_attr *ig) {
    if (ig->present)
        return moert_fail(MOERT_ERR_ARGUMENT,
                          "label %lld at position %lld is outside [0, %lld) and is not "
                          "ignore_index %lld",
                          (long long)l, (long long)i, (long long)C, (long long)ig->i);
    return moert_fail(MOERT_ERR_ARGUMENT, "label %lld at position %lld is outside [0, %lld)",
                      (long long)l, (long long)i, (long long)C);
}

typedef struct {
    const mk_tensor *in, *g;
    const mk_attr *attr;
    int64_t C, inner;
    float den;
} ce_ctx;

/* Label positions [b, end): their score rows get s w[l] (softmax - onehot(l)), or 0. */
static void ce_rows(void *ctx, int64_t b, int64_t end) {
    const ce_ctx *c = ctx;
    const mk_tensor *x = &c->in[1], *w = &c->in[3];
    const mk_attr *ignore = &c->attr[MC_A_SOFTMAX_CROSS_ENTROPY_LOSS_ignore_index];
    int64_t C = c->C, in_ = c->inner, red = c->attr[MC_A_SOFTMAX_CROSS_ENTROPY_LOSS_reduction].i;
    for (int64_t i = b; i < end; i++) {
        int64_t l = mk_ldi(&c->in[2], i), base = (i / in_) * C * in_ + i % in_;
        if (ignore->present && l == ignore->i) {
            for (int64_t k = 0; k < C; k++)
                mk_stf(c->g, base + k * in_, 0.0f);
            continue;
        }
        float gy = mk_ldf(&c->in[0], red == MC_A_SOFTMAX_CROSS_ENTROPY_LOSS_reduction_none ? i : 0);
        float s = red == MC_A_SOFTMAX_CROSS_ENTROPY_LOSS_reduction_mean ? gy / c->den : gy;
        float f = s * (w->p ? mk_ldf(w, l) : 1.0f), mx = -__builtin_inff(), sum = 0;
        for (int64_t k = 0; k < C; k++) {
            float v = mk_ldf(x, base + k * in_);
            mx = gt(v, mx) ? v : mx;
        }
        for (int64_t k = 0; k < C; k++)
            sum += __builtin_expf(mk_ldf(x, base + k * in_) - mx);
        for (int64_t k = 0; k < C; k++) {
            float p = __builtin_expf(mk_ldf(x, base + k * in_) - mx) / sum;
            mk_stf(c->g, base + k * in_, f * (p - (float)(k == l)));
        }
    }
}

/* in: gy, scores[N,C,d...], labels[N,d...], weights[C]?  out: g_scores. attrs:
 * ignore_index?, reduction. Labels are checked (and the mean's denominator summed in
 * ascending order) before any row is written. */
int32_t mk_MOE_SOFTMAX_CROSS_ENTROPY_LOSS_GRAD(const mk_tensor *in, const mk_tensor *out,
                                               const mk_attr *attr) {
    int64_t C = in[1].dims[1], P = mk_numel(&in[2]);
    const mk_attr *ignore = &attr[MC_A_SOFTMAX_CROSS_ENTROPY_LOSS_ignore_index];
    ce_ctx c = {in, &out[0], attr, C, in[1].dims[0] ? P / in[1].dims[0] : 1, 0};
    for (int64_t i = 0; i < P; i++) {
        int64_t l = mk_ldi(&in[2], i);
        if (ignore->present && l == ignore->i) continue;
        if (l < 0 || l >= C) return bad_label(l, i, C, ignore);
        c.den += in[3].p ? mk_ldf(&in[3], l) : 1.0f;
    }
    run_rows(P, C, ce_rows, &c);
    return MOERT_OK;
}

typedef struct {
    const mk_tensor *in, *g;
    int64_t red;
    float n;
} mse_ctx;

static void mse_range(void *ctx, int64_t b, int64_t end) {
    const mse_ctx *c = ctx;
    for (int64_t i = b; i < end; i++) {
        float gy = mk_ldf(&c->in[0], c->red == MC_A_MSE_LOSS_reduction_none ? i : 0);
        float s = c->red == MC_A_MSE_LOSS_reduction_mean ? gy / c->n : gy;
        mk_stf(c->g, i, 2.0f * (mk_ldf(&c->in[1], i) - mk_ldf(&c->in[2], i)) * s);
    }
}

/* in: gy, pred, target  out: g = 2 (pred - target) s, s = gy / numel (mean), gy (sum),
 * gy[i] (none). attrs: reduction. */
int32_t mk_MOE_MSE_LOSS_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    int64_t n = mk_numel(&in[1]);
    mse_ctx c = {in, &out[0], attr[MC_A_MSE_LOSS_reduction].i, (float)n};
    run_rows(n, 1, mse_range, &c);
    return MOERT_OK;
}

/* ---- optimizers: elementwise, an f32 loop the vectorizer takes, else by dtype ---- */

typedef struct {
    const mk_tensor *in, *out;
    float lr, a, b, eps, wd, c1, c2; /* SGD: a = momentum; AdamW: a, b = beta1, beta2 */
} opt_ctx;

/* Whether the step writes its outputs over its param and state inputs (plan-memory's
 * in-place updates): out[0] over in[0], out[j] over in[j + 1]. Written over wholly or
 * not at all, so the loops below can tell the vectorizer nothing else overlaps. */
static bool in_place(const mk_tensor *in, const mk_tensor *out, int nout) {
    for (int j = 0; j < nout; j++)
        if (out[j].p != in[j ? j + 1 : 0].p) return false;
    return true;
}

static void sgd_in_place(const opt_ctx *c, int64_t b, int64_t end, float *restrict p,
                         const float *restrict g, float *restrict v) {
    float lr = c->lr, mom = c->a, wd = c->wd;
    for (int64_t i = b; i < end; i++) {
        float vn = mom * v[i] + g[i] + wd * p[i];
        v[i] = vn;
        p[i] -= lr * vn;
    }
}

/* v' = momentum v + g + wd p, p' = p - lr v'. */
static void sgd_range(void *ctx, int64_t b, int64_t end) {
    const opt_ctx *c = ctx;
    const mk_tensor *in = c->in, *out = c->out;
    float lr = c->lr, mom = c->a, wd = c->wd;
    if (in[0].dt == MK_F32 && in_place(in, out, 2)) {
        sgd_in_place(c, b, end, out[0].p, in[1].p, out[1].p);
        return;
    }
    if (in[0].dt == MK_F32) {
        const float *p = in[0].p, *g = in[1].p, *v = in[2].p;
        float *po = out[0].p, *vo = out[1].p;
        for (int64_t i = b; i < end; i++) {
            float pi = p[i], vn = mom * v[i] + g[i] + wd * pi;
            vo[i] = vn;
            po[i] = pi - lr * vn;
        }
        return;
    }
    for (int64_t i = b; i < end; i++) {
        float pi = mk_ldf(&in[0], i);
        float vn = mom * mk_ldf(&in[2], i) + mk_ldf(&in[1], i) + wd * pi;
        mk_stf(&out[1], i, vn);
        mk_stf(&out[0], i, pi - lr * vn);
    }
}

/* in: param, grad, velocity  out: param', velocity'. attrs: lr, momentum, weight_decay. */
int32_t mk_MOE_SGD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    opt_ctx c = {.in = in,
                 .out = out,
                 .lr = (float)attr[MC_A_MOE_SGD_lr].f,
                 .a = (float)attr[MC_A_MOE_SGD_momentum].f,
                 .wd = (float)attr[MC_A_MOE_SGD_weight_decay].f};
    run_rows(mk_numel(&in[0]), 1, sgd_range, &c);
    return MOERT_OK;
}

/* One AdamW element: writes m', v' and returns p'. */
static inline float adamw_one(const opt_ctx *c, float p, float g, float m, float v, float *mo,
                              float *vo) {
    float mn = c->a * m + (1.0f - c->a) * g, vn = c->b * v + (1.0f - c->b) * (g * g);
    *mo = mn;
    *vo = vn;
    return p - c->lr * ((mn / c->c1) / (mk_sqrtf(vn / c->c2) + c->eps) + c->wd * p);
}

static void adamw_in_place(const opt_ctx *c, int64_t b, int64_t end, float *restrict p,
                           const float *restrict g, float *restrict m, float *restrict v) {
    for (int64_t i = b; i < end; i++)
        p[i] = adamw_one(c, p[i], g[i], m[i], v[i], &m[i], &v[i]);
}

static void adamw_range(void *ctx, int64_t b, int64_t end) {
    const opt_ctx *c = ctx;
    const mk_tensor *in = c->in, *out = c->out;
    if (in[0].dt == MK_F32 && in_place(in, out, 3)) {
        adamw_in_place(c, b, end, out[0].p, in[1].p, out[1].p, out[2].p);
        return;
    }
    if (in[0].dt == MK_F32) {
        const float *p = in[0].p, *g = in[1].p, *m = in[2].p, *v = in[3].p;
        float *po = out[0].p, *mo = out[1].p, *vo = out[2].p;
        for (int64_t i = b; i < end; i++)
            po[i] = adamw_one(c, p[i], g[i], m[i], v[i], &mo[i], &vo[i]);
        return;
    }
    for (int64_t i = b; i < end; i++) {
        float mn, vn;
        float pn = adamw_one(c, mk_ldf(&in[0], i), mk_ldf(&in[1], i), mk_ldf(&in[2], i),
                             mk_ldf(&in[3], i), &mn, &vn);
        mk_stf(&out[1], i, mn);
        mk_stf(&out[2], i, vn);
        mk_stf(&out[0], i, pn);
    }
}

/* in: param, grad, m, v, step[1] i64 (t >= 1, already incremented)  out: param', m', v'.
 * attrs: lr, beta1, beta2, epsilon, weight_decay. Bias corrections 1 - beta^t. */
int32_t mk_MOE_ADAMW(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    int64_t t = *(const int64_t *)in[4].p;
    if (t < 1)
        return moert_fail(MOERT_ERR_ARGUMENT,
                          "step is %lld but must be >= 1 (the count after this update)",
                          (long long)t);
    float b1 = (float)attr[MC_A_MOE_ADAMW_beta1].f, b2 = (float)attr[MC_A_MOE_ADAMW_beta2].f;
    opt_ctx c = {.in = in,
                 .out = out,
                 .lr = (float)attr[MC_A_MOE_ADAMW_lr].f,
                 .a = b1,
                 .b = b2,
                 .eps = (float)attr[MC_A_MOE_ADAMW_epsilon].f,
                 .wd = (float)attr[MC_A_MOE_ADAMW_weight_decay].f,
                 .c1 = 1.0f - mk_powf(b1, (float)t),
                 .c2 = 1.0f - mk_powf(b2, (float)t)};
    run_rows(mk_numel(&in[0]), 1, adamw_range, &c);
    return MOERT_OK;
}
