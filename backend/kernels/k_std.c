/* backend/kernels/k_std.c: kernels of the standard arithmetic ops, activations,
 * Softmax/LogSoftmax and the normalisations (ir/eval_std.c is the reference).
 *
 * Tolerance against the interpreter (randomised comparison; f16/bf16 results are
 * rounded from the same float value, so they differ by at most one step of the dtype
 * where the f32 values differ at all):
 *  - Add Sub Mul Div Neg Relu Sqrt, all integer arithmetic: exact (same single op);
 *  - Pow: <= 1 ulp (computed in double and rounded once; glibc is within 1 ulp too);
 *  - Exp Log: <= 1 ulp; Tanh: <= 2 ulp; Sigmoid: <= 4 ulp; Silu: <= 5 ulp (k_math.h);
 *  - Gelu: <= 4 ulp, or absolute 2^-23 |x| where 1 + erf cancels (x < -2);
 *  - Softmax: rel 1e-6 (same max, same ascending sum, only e^x differs);
 *  - LogSoftmax: absolute 2 ulp of max(|x - max|, log(sum)) (x - max - log(sum) cancels);
 *  - LayerNorm RMSNorm: exact (same sums in the same order; FP contraction is off).
 * Sums run sequentially in ascending index order, as in the interpreter; only the
 * element-independent loops are left for the vectorizer.
 */
#include <float.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mk.h"
#include "k_math.h"
#include "../../runtime/moert.h"

/* No a*b+c fusion in the kernels themselves: results then do not depend on whether
 * the target has FMA, and compound formulas round like the interpreter's. */
#pragma STDC FP_CONTRACT OFF

#define GRAIN         16384 /* elements per parallel chunk: smaller tensors stay serial */
#define ALWAYS_INLINE __attribute__((always_inline)) inline

static int64_t row_grain(int64_t n) {
    return n >= GRAIN ? 1 : GRAIN / (n > 0 ? n : 1);
}

static int64_t norm_axis(int64_t axis, int64_t rank) {
    return axis < 0 ? axis + rank : axis;
}

/* Lowest flat index of a run-time error, shared by the chunks of a parallel loop. */
static void note_error(int64_t *first, int64_t e) {
    int64_t cur = __atomic_load_n(first, __ATOMIC_RELAXED);
    while (e < cur &&
           !__atomic_compare_exchange_n(first, &cur, e, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

/* ---- binary ops ---- */

typedef enum { B_ADD, B_SUB, B_MUL, B_DIV, B_POW } binop;

typedef struct {
    mk_plan p;
    const mk_tensor *a, *b, *y;
    int64_t first_err; /* integer Div: lowest failing element */
} bin_ctx;

static ALWAYS_INLINE float fop(binop op, float x, float z) {
    switch (op) {
    case B_ADD: return x + z;
    case B_SUB: return x - z;
    case B_MUL: return x * z;
    case B_DIV: return x / z;
    case B_POW: return mk_powf(x, z);
    }
    return 0.0f;
}

/* The f32 inner loop, split on the broadcast pattern so each case vectorizes. */
static ALWAYS_INLINE void fbin_f32(binop op, float *y, const float *a, int64_t sa, const float *b,
                                   int64_t sb, int64_t n) {
    if (sa == 1 && sb == 1) {
        for (int64_t i = 0; i < n; i++)
            y[i] = fop(op, a[i], b[i]);
    } else if (sa == 1 && sb == 0) {
        float z = b[0];
        for (int64_t i = 0; i < n; i++)
            y[i] = fop(op, a[i], z);
    } else if (sa == 0 && sb == 1) {
        float x = a[0];
        for (int64_t i = 0; i < n; i++)
            y[i] = fop(op, x, b[i]);
    } else {
        for (int64_t i = 0; i < n; i++)
            y[i] = fop(op, a[i * sa], b[i * sb]);
    }
}

static ALWAYS_INLINE void fbin_range(bin_ctx *c, binop op, int64_t begin, int64_t end) {
    mk_cursor cur;
    mk_seek(&c->p, &cur, begin);
    int64_t r = c->p.rank - 1, sa = c->p.st[0][r], sb = c->p.st[1][r];
    for (int64_t e = begin, n; e < end; e += n) {
        n = mk_run_len(&c->p, &cur, end - e);
        int64_t oa = cur.off[0], ob = cur.off[1];
        if (c->y->dt == MK_F32 && c->a->dt == MK_F32 && c->b->dt == MK_F32) {
            fbin_f32(op, (float *)c->y->p + e, (const float *)c->a->p + oa, sa,
                     (const float *)c->b->p + ob, sb, n);
        } else {
            for (int64_t i = 0; i < n; i++)
                mk_stf(c->y, e + i, fop(op, mk_ldf(c->a, oa + i * sa), mk_ldf(c->b, ob + i * sb)));
        }
        mk_advance(&c->p, &cur, n);
    }
}

/* An integer Pow's element: the real power of the operands (of any numeric dtypes)
 * truncated toward zero and saturated to y's dtype (NaN: 0), as the interpreter's. */
static int64_t int_pow(const mk_tensor *y, float x, float z) {
    float v = mk_powf(x, z);
    double lim = y->dt == MK_I32 ? 2147483647.0 : 9223372036854775807.0;
    return v != v ? 0 : v >= lim ? (int64_t)lim : v <= -lim ? -(int64_t)lim - 1 : (int64_t)v;
}

/* Integer arithmetic wraps (computed in 64 bits, i32 keeps the low half like the
 * interpreter); Div reports zero divisors and INT64_MIN / -1; Pow goes through floats
 * (int_pow). */
static void ibin_range(bin_ctx *c, binop op, int64_t begin, int64_t end) {
    mk_cursor cur;
    mk_seek(&c->p, &cur, begin);
    int64_t r = c->p.rank - 1, sa = c->p.st[0][r], sb = c->p.st[1][r];
    for (int64_t e = begin, n; e < end; e += n) {
        n = mk_run_len(&c->p, &cur, end - e);
        for (int64_t i = 0; i < n; i++) {
            uint64_t x = (uint64_t)mk_ldi(c->a, cur.off[0] + i * sa);
            uint64_t z = (uint64_t)mk_ldi(c->b, cur.off[1] + i * sb);
            uint64_t v = 0;
            switch (op) {
            case B_ADD: v = x + z; break;
            case B_SUB: v = x - z; break;
            case B_MUL: v = x * z; break;
            case B_DIV:
                if (z == 0 || (x == (uint64_t)INT64_MIN && z == (uint64_t)-1)) {
                    note_error(&c->first_err, e + i);
                    return;
                }
                v = (uint64_t)((int64_t)x / (int64_t)z);
                break;
            case B_POW:
                v = (uint64_t)int_pow(c->y, mk_ldf(c->a, cur.off[0] + i * sa),
                                      mk_ldf(c->b, cur.off[1] + i * sb));
                break;
            }
            mk_sti(c->y, e + i, (int64_t)v);
        }
        mk_advance(&c->p, &cur, n);
    }
}

#define BIN_TASK(name, op)                                                                         \
    static void name(void *ctx, int64_t b, int64_t e) {                                            \
        bin_ctx *c = ctx;                                                                          \
        if (mk_isfloat(c->y->dt))                                                                  \
            fbin_range(c, op, b, e);                                                               \
        else                                                                                       \
            ibin_range(c, op, b, e);                                                               \
    }
BIN_TASK(task_add, B_ADD)
BIN_TASK(task_sub, B_SUB)
BIN_TASK(task_mul, B_MUL)
BIN_TASK(task_div, B_DIV)
BIN_TASK(task_pow, B_POW)

static int32_t binary(const mk_tensor *in, const mk_tensor *out, moert_task_fn task) {
    bin_ctx c = {.a = &in[0], .b = &in[1], .y = &out[0], .first_err = INT64_MAX};
    mk_bcast_init(&c.p, out, in, 2);
    moert_parallel_for(mk_numel(out), GRAIN, task, &c);
    if (c.first_err == INT64_MAX) return MOERT_OK;
    mk_cursor cur;
    mk_seek(&c.p, &cur, c.first_err);
    if (mk_ldi(c.b, cur.off[1]) == 0)
        return moert_fail(MOERT_ERR_ARGUMENT, "integer division by zero at element %lld",
                          (long long)c.first_err);
    return moert_fail(MOERT_ERR_ARGUMENT, "integer division overflows at element %lld",
                      (long long)c.first_err);
}

int32_t mk_ADD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return binary(in, out, task_add);
}
int32_t mk_SUB(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return binary(in, out, task_sub);
}
int32_t mk_MUL(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return binary(in, out, task_mul);
}
int32_t mk_DIV(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return binary(in, out, task_div);
}
int32_t mk_POW(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return binary(in, out, task_pow);
}

/* ---- unary ops ---- */

typedef struct {
    const mk_tensor *x, *y;
} un_ctx;

static ALWAYS_INLINE void un_range(const un_ctx *c, mk_unop op, int64_t b, int64_t e) {
    if (c->x->dt == MK_F32) {
        const float *x = (const float *)c->x->p;
        float *y = (float *)c->y->p;
        for (int64_t i = b; i < e; i++)
            y[i] = mk_unary(op, x[i]);
    } else if (mk_isfloat(c->x->dt)) {
        for (int64_t i = b; i < e; i++)
            mk_stf(c->y, i, mk_unary(op, mk_ldf(c->x, i)));
    } else { /* Neg or Abs of i32/i64: wraps at the dtype's minimum */
        for (int64_t i = b; i < e; i++) {
            int64_t v = mk_ldi(c->x, i);
            mk_sti(c->y, i, op == U_ABS && v >= 0 ? v : (int64_t)(0 - (uint64_t)v));
        }
    }
}

#define UN_TASK(name, op)                                                                          \
    static void name(void *ctx, int64_t b, int64_t e) {                                            \
        un_range(ctx, op, b, e);                                                                   \
    }
UN_TASK(task_neg, U_NEG)
UN_TASK(task_sqrt, U_SQRT)
UN_TASK(task_exp, U_EXP)
UN_TASK(task_log, U_LOG)
UN_TASK(task_relu, U_RELU)
UN_TASK(task_gelu, U_GELU)
UN_TASK(task_gelu_tanh, U_GELU_TANH)
UN_TASK(task_sigmoid, U_SIGMOID)
UN_TASK(task_tanh, U_TANH)
UN_TASK(task_silu, U_SILU)
UN_TASK(task_abs, U_ABS)
UN_TASK(task_reciprocal, U_RECIPROCAL)
UN_TASK(task_erf, U_ERF)

static int32_t unary(const mk_tensor *in, const mk_tensor *out, moert_task_fn task) {
    un_ctx c = {&in[0], &out[0]};
    moert_parallel_for(mk_numel(out), GRAIN, task, &c);
    return MOERT_OK;
}

int32_t mk_NEG(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return unary(in, out, task_neg);
}
int32_t mk_ABS(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return unary(in, out, task_abs);
}
int32_t mk_RECIPROCAL(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return unary(in, out, task_reciprocal);
}
int32_t mk_ERF(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return unary(in, out, task_erf);
}
int32_t mk_SQRT(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return unary(in, out, task_sqrt);
}
int32_t mk_EXP(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return unary(in, out, task_exp);
}
int32_t mk_LOG(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return unary(in, out, task_log);
}
int32_t mk_RELU(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return unary(in, out, task_relu);
}
/* approximate: 0 "none" (erf), 1 "tanh". */
int32_t mk_GELU(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    bool tanh_form = attr[MC_A_GELU_approximate].i == MC_A_GELU_approximate_tanh;
    return unary(in, out, tanh_form ? task_gelu_tanh : task_gelu);
}
int32_t mk_SIGMOID(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return unary(in, out, task_sigmoid);
}
int32_t mk_TANH(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return unary(in, out, task_tanh);
}
int32_t mk_SILU(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return unary(in, out, task_silu);
}

/* ---- Softmax / LogSoftmax ---- */

typedef struct {
    const mk_tensor *x, *y;
    int64_t n, inner;
    bool log_form;
} sm_ctx;

/* A contiguous f32 row: exps go through y (a vector loop) when y does not alias x;
 * the sum stays sequential, so y = e / sum is the interpreter's value. */
static void softmax_row_f32(const float *x, float *y, int64_t n, bool log_form) {
    float mx = -__builtin_inff(), sum = 0;
    for (int64_t j = 0; j < n; j++)
        mx = x[j] > mx ? x[j] : mx;
    if (!log_form || x != y) {
        for (int64_t j = 0; j < n; j++)
            y[j] = mk_expf(x[j] - mx);
        for (int64_t j = 0; j < n; j++)
            sum += y[j];
    } else {
        for (int64_t j = 0; j < n; j++)
            sum += mk_expf(x[j] - mx);
    }
    if (log_form) {
        float ls = mk_logf(sum);
        for (int64_t j = 0; j < n; j++)
            y[j] = x[j] - mx - ls;
    } else {
        for (int64_t j = 0; j < n; j++)
            y[j] = y[j] / sum;
    }
}

/* Any dtype and stride: e^x is computed twice instead of kept (no scratch). */
static void softmax_row_any(const sm_ctx *c, int64_t base) {
    int64_t s = c->inner;
    float mx = -__builtin_inff(), sum = 0;
    for (int64_t j = 0; j < c->n; j++) {
        float v = mk_ldf(c->x, base + j * s);
        mx = v > mx ? v : mx;
    }
    for (int64_t j = 0; j < c->n; j++)
        sum += mk_expf(mk_ldf(c->x, base + j * s) - mx);
    float ls = mk_logf(sum);
    for (int64_t j = 0; j < c->n; j++) {
        float v = mk_ldf(c->x, base + j * s);
        mk_stf(c->y, base + j * s, c->log_form ? v - mx - ls : mk_expf(v - mx) / sum);
    }
}

/* Rows are (outer, inner) pairs, r = o * inner + i. */
static void softmax_task(void *ctx, int64_t b, int64_t e) {
    const sm_ctx *c = ctx;
    for (int64_t r = b; r < e; r++) {
        int64_t base = (r / c->inner) * c->n * c->inner + r % c->inner;
        if (c->x->dt == MK_F32 && c->inner == 1)
            softmax_row_f32((const float *)c->x->p + base, (float *)c->y->p + base, c->n,
                            c->log_form);
        else
            softmax_row_any(c, base);
    }
}

static int32_t softmax(const mk_tensor *in, const mk_tensor *out, int64_t axis_attr,
                       bool log_form) {
    int64_t axis = norm_axis(axis_attr, in[0].rank), outer = 1, inner = 1;
    for (int64_t i = 0; i < axis; i++)
        outer *= in[0].dims[i];
    for (int64_t i = axis + 1; i < in[0].rank; i++)
        inner *= in[0].dims[i];
    sm_ctx c = {&in[0], &out[0], in[0].dims[axis], inner, log_form};
    if (c.n > 0) moert_parallel_for(outer * inner, row_grain(c.n), softmax_task, &c);
    return MOERT_OK;
}

int32_t mk_SOFTMAX(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    return softmax(in, out, attr[MC_A_SOFTMAX_axis].i, false);
}
int32_t mk_LOG_SOFTMAX(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    return softmax(in, out, attr[MC_A_LOG_SOFTMAX_axis].i, true);
}

/* ---- LayerNormalization / RMSNormalization ---- */

typedef struct {
    const mk_tensor *x, *scale, *bias, *y;
    const mk_tensor *mean, *inv; /* LayerNormalization's optional outputs, or NULL */
    int64_t n;
    float eps;
    bool rms;
} norm_ctx;

/* mean (LayerNorm only), then the sum of squared deviations, both ascending (mk.h). */
float mk_norm_row_stats(const mk_tensor *xt, int64_t base, int64_t n, float eps, bool rms,
                        float *mean_out) {
    float mean = 0, var = 0;
    if (xt->dt == MK_F32) {
        const float *x = (const float *)xt->p + base;
        if (!rms) {
            for (int64_t j = 0; j < n; j++)
                mean += x[j];
            mean /= (float)n;
        }
        for (int64_t j = 0; j < n; j++)
            var += (x[j] - mean) * (x[j] - mean);
    } else {
        if (!rms) {
            for (int64_t j = 0; j < n; j++)
                mean += mk_ldf(xt, base + j);
            mean /= (float)n;
        }
        for (int64_t j = 0; j < n; j++) {
            float d = mk_ldf(xt, base + j) - mean;
            var += d * d;
        }
    }
    *mean_out = mean;
    return 1.0f / mk_sqrtf(var / (float)n + eps);
}

static void norm_task(void *ctx, int64_t b, int64_t e) {
    const norm_ctx *c = ctx;
    for (int64_t r = b; r < e; r++) {
        int64_t base = r * c->n;
        float mean, inv = mk_norm_row_stats(c->x, base, c->n, c->eps, c->rms, &mean);
        if (c->mean) mk_stf(c->mean, r, mean);
        if (c->inv) mk_stf(c->inv, r, inv);
        if (c->x->dt == MK_F32) {
            const float *x = (const float *)c->x->p + base, *s = (const float *)c->scale->p;
            const float *bs = c->bias ? (const float *)c->bias->p : NULL;
            float *y = (float *)c->y->p + base;
            if (bs)
                for (int64_t j = 0; j < c->n; j++)
                    y[j] = (x[j] - mean) * inv * s[j] + bs[j];
            else
                for (int64_t j = 0; j < c->n; j++)
                    y[j] = (x[j] - mean) * inv * s[j] + 0.0f;
        } else {
            for (int64_t j = 0; j < c->n; j++) {
                float v = (mk_ldf(c->x, base + j) - mean) * inv * mk_ldf(c->scale, j) +
                          (c->bias ? mk_ldf(c->bias, j) : 0.0f);
                mk_stf(c->y, base + j, v);
            }
        }
    }
}

/* attr: the NORM_ROWS of attrs.def, at the same positions in both norms. */
static int32_t norm(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr,
                    const mk_tensor *bias, bool rms) {
    int64_t axis = norm_axis(attr[MC_A_LAYER_NORM_axis].i, in[0].rank), n = 1;
    for (int64_t i = axis; i < in[0].rank; i++)
        n *= in[0].dims[i];
    norm_ctx c = {
        &in[0], &in[1], bias, &out[0], NULL, NULL, n, (float)attr[MC_A_LAYER_NORM_epsilon].f, rms};
    if (!rms) { /* out[1] and out[2] are there, p NULL when not asked for */
        c.mean = out[1].p ? &out[1] : NULL;
        c.inv = out[2].p ? &out[2] : NULL;
    }
    if (n > 0) moert_parallel_for(mk_numel(&in[0]) / n, row_grain(n), norm_task, &c);
    return MOERT_OK;
}

/* Bias (input 2) is optional: p == NULL when omitted. */
int32_t mk_LAYER_NORM(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    return norm(in, out, attr, in[2].p ? &in[2] : NULL, false);
}

/* RMSNormalization has two inputs: in[2] is not read. */
int32_t mk_RMS_NORM(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    return norm(in, out, attr, NULL, true);
}
