/* backend/kernels/k_tensor.c: kernels of the data-movement ops, reductions, Cast,
 * Where, the comparisons and TopK (ir/eval_tensor.c and ir/eval_std.c are the
 * reference).
 *
 * Tolerance against the interpreter:
 *  - Reshape Transpose Concat Split Slice Gather Identity Where: exact (bytes are
 *    copied; the interpreter's f16/bf16 round trip only differs on NaN payloads, which
 *    it makes quiet);
 *  - Equal Less TopK Cast ReduceMax, integer reductions: exact (same comparisons, same
 *    tie rule, same conversions);
 *  - ReduceSum ReduceMean on floats: exact (each output sums its inputs in ascending
 *    flat order, starting from the first element, in float).
 * Run-time errors (Gather index, Cast range, Slice bounds) return moert_fail with the
 * interpreter's message minus the node.
 */
#include <float.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "k_groups.h"
#include "mk.h"
#include "k_math.h"
#include "../../runtime/moert.h"

#pragma STDC FP_CONTRACT OFF

#define GRAIN         16384       /* elements per parallel chunk */
#define COPY_GRAIN    (64 * 1024) /* bytes per parallel chunk of a copy */
#define ALWAYS_INLINE __attribute__((always_inline)) inline

static int64_t row_grain(int64_t n) {
    return n >= GRAIN ? 1 : GRAIN / (n > 0 ? n : 1);
}

static int64_t norm_axis(int64_t axis, int64_t rank) {
    return axis < 0 ? axis + rank : axis;
}

static void split_at(const mk_tensor *t, int64_t axis, int64_t *outer, int64_t *inner) {
    *outer = *inner = 1;
    for (int64_t i = 0; i < axis; i++)
        *outer *= t->dims[i];
    for (int64_t i = axis + 1; i < t->rank; i++)
        *inner *= t->dims[i];
}

static void note_error(int64_t *first, int64_t e) {
    int64_t cur = __atomic_load_n(first, __ATOMIC_RELAXED);
    while (e < cur &&
           !__atomic_compare_exchange_n(first, &cur, e, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        ;
}

/* ---- block copies: rows of `blk` bytes between two strided sequences ---- */

typedef struct {
    char *dst;
    const char *src;
    int64_t dst_stride, src_stride, blk;
} blk_ctx;

static void blk_task(void *ctx, int64_t b, int64_t e) {
    const blk_ctx *c = ctx;
    for (int64_t r = b; r < e; r++)
        __builtin_memcpy(c->dst + r * c->dst_stride, c->src + r * c->src_stride, (size_t)c->blk);
}

static void copy_rows(void *dst, int64_t dst_stride, const void *src, int64_t src_stride,
                      int64_t rows, int64_t blk) {
    blk_ctx c = {dst, src, dst_stride, src_stride, blk};
    int64_t grain = blk >= COPY_GRAIN ? 1 : COPY_GRAIN / (blk > 0 ? blk : 1);
    if (rows > 0 && blk > 0) moert_parallel_for(rows, grain, blk_task, &c);
}

/* A contiguous copy, split into parallel chunks when large. */
static void copy_flat(void *dst, const void *src, int64_t bytes) {
    if (dst == src || bytes <= 0) return;
    int64_t rows = (bytes + COPY_GRAIN - 1) / COPY_GRAIN;
    if (rows <= 1) {
        __builtin_memcpy(dst, src, (size_t)bytes);
        return;
    }
    copy_rows(dst, COPY_GRAIN, src, COPY_GRAIN, bytes / COPY_GRAIN, COPY_GRAIN);
    int64_t done = (bytes / COPY_GRAIN) * COPY_GRAIN;
    __builtin_memcpy((char *)dst + done, (const char *)src + done, (size_t)(bytes - done));
}

int32_t mk_RESHAPE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    copy_flat(out[0].p, in[0].p, mk_numel(&out[0]) * mk_dtsize(out[0].dt));
    return MOERT_OK;
}

int32_t mk_IDENTITY(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    copy_flat(out[0].p, in[0].p, mk_numel(&out[0]) * mk_dtsize(out[0].dt));
    return MOERT_OK;
}

/* ---- strided gathers: out (contiguous) <- in at base + plan strides ---- */

typedef struct {
    mk_plan p;
    const mk_tensor *x, *y;
    int64_t base;
} gat_ctx;

#define GATHER_RUN(T)                                                                              \
    do {                                                                                           \
        T *d = (T *)c->y->p + e;                                                                   \
        const T *s = (const T *)c->x->p + off;                                                     \
        for (int64_t i = 0; i < n; i++)                                                            \
            d[i] = s[i * st];                                                                      \
    } while (0)

static void gat_task(void *ctx, int64_t b, int64_t end) {
    const gat_ctx *c = ctx;
    mk_cursor cur;
    mk_seek(&c->p, &cur, b);
    int64_t st = c->p.st[0][c->p.rank - 1], es = mk_dtsize(c->x->dt);
    for (int64_t e = b, n; e < end; e += n) {
        n = mk_run_len(&c->p, &cur, end - e);
        int64_t off = c->base + cur.off[0];
        if (st == 1)
            __builtin_memcpy((char *)c->y->p + e * es, (const char *)c->x->p + off * es,
                             (size_t)(n * es));
        else if (es == 1)
            GATHER_RUN(uint8_t);
        else if (es == 2)
            GATHER_RUN(uint16_t);
        else if (es == 4)
            GATHER_RUN(uint32_t);
        else
            GATHER_RUN(uint64_t);
        mk_advance(&c->p, &cur, n);
    }
}

/* y[idx] = x[base + sum idx[i] * st[i]]; st given per output dim. */
static void strided_gather(const mk_tensor *x, const mk_tensor *y, int64_t base,
                           const int64_t *st) {
    gat_ctx c = {.x = x, .y = y, .base = base};
    c.p.nin = 1;
    c.p.rank = 0;
    for (int64_t i = y->rank - 1; i >= 0; i--)
        mk_plan_push(&c.p, y->dims[i], &st[i]);
    mk_plan_finish(&c.p);
    moert_parallel_for(mk_numel(y), GRAIN, gat_task, &c);
}

/* perm absent: the dims reversed. */
int32_t mk_TRANSPOSE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    int64_t xs[MK_MAX_RANK], st[MK_MAX_RANK];
    int64_t r = out[0].rank;
    const mk_attr *perm = &attr[MC_A_TRANSPOSE_perm];
    mk_strides(&in[0], xs);
    for (int64_t i = 0; i < r; i++) {
        int64_t src = perm->present ? perm->ints[i] : r - 1 - i;
        if (src < 0 || src >= in[0].rank)
            return moert_fail(MOERT_ERR_ARGUMENT, "perm must be a permutation of 0..%lld",
                              (long long)(r - 1));
        st[i] = xs[src];
    }
    strided_gather(&in[0], &out[0], 0, st);
    return MOERT_OK;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* Slice(data, starts, ends, axes?, steps?): starts clamped as ONNX does; the output
 * dims (from shape inference) give the lengths. Every read is checked to lie inside
 * the input, so inconsistent operands fail instead of reading out of bounds. */
int32_t mk_SLICE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    const mk_tensor *x = &in[0], *y = &out[0];
    int64_t start[MK_MAX_RANK] = {0}, step[MK_MAX_RANK], xs[MK_MAX_RANK], st[MK_MAX_RANK];
    int64_t n = mk_numel(&in[1]);
    n = n < MK_MAX_RANK ? n : MK_MAX_RANK;
    for (int64_t i = 0; i < MK_MAX_RANK; i++)
        step[i] = 1;
    for (int64_t i = 0; i < n; i++) {
        int64_t a = norm_axis(in[3].p ? mk_ldi(&in[3], i) : i, x->rank);
        if (a < 0 || a >= x->rank)
            return moert_fail(MOERT_ERR_ARGUMENT, "slice axis %lld is out of range",
                              (long long)(in[3].p ? mk_ldi(&in[3], i) : i));
        int64_t dim = x->dims[a], p = in[4].p ? mk_ldi(&in[4], i) : 1, s0 = mk_ldi(&in[1], i);
        int64_t b = s0 < 0 ? s0 + dim : s0;
        start[a] = p > 0 ? clamp64(b, 0, dim) : clamp64(b, -1, dim - 1);
        step[a] = p;
    }
    mk_strides(x, xs);
    int64_t base = 0;
    for (int64_t i = 0; i < y->rank; i++) {
        int64_t last = start[i] + (y->dims[i] - 1) * step[i];
        if (y->dims[i] > 0 && (i >= x->rank || start[i] < 0 || start[i] >= x->dims[i] || last < 0 ||
                               last >= x->dims[i]))
            return moert_fail(MOERT_ERR_ARGUMENT, "slice of axis %lld reads outside the input",
                              (long long)i);
        base += start[i] * xs[i];
        st[i] = step[i] * xs[i];
    }
    strided_gather(x, y, base, st);
    return MOERT_OK;
}

/* ---- Concat / Split / Gather: block copies ---- */

/* The inputs are counted by their axis dims adding up to the output's. */
int32_t mk_CONCAT(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const mk_tensor *y = &out[0];
    int64_t axis = norm_axis(attr[MC_A_CONCAT_axis].i, y->rank), outer, inner,
            es = mk_dtsize(y->dt);
    split_at(y, axis, &outer, &inner);
    int64_t n = y->dims[axis];
    for (int64_t k = 0, at = 0; at < n; k++) {
        int64_t xn = in[k].dims[axis];
        if (xn <= 0) break;
        copy_rows((char *)y->p + at * inner * es, n * inner * es, in[k].p, xn * inner * es, outer,
                  xn * inner * es);
        at += xn;
    }
    return MOERT_OK;
}

/* The outputs are counted by their axis dims adding up to the input's. */
int32_t mk_SPLIT(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const mk_tensor *x = &in[0];
    int64_t axis = norm_axis(attr[MC_A_SPLIT_axis].i, x->rank), outer, inner, es = mk_dtsize(x->dt);
    split_at(x, axis, &outer, &inner);
    int64_t n = x->dims[axis];
    for (int64_t j = 0, at = 0; at < n; j++) {
        int64_t yn = out[j].dims[axis];
        if (yn <= 0) break;
        copy_rows(out[j].p, yn * inner * es, (const char *)x->p + at * inner * es, n * inner * es,
                  outer, yn * inner * es);
        at += yn;
    }
    return MOERT_OK;
}

typedef struct {
    const mk_tensor *x, *ind, *y;
    int64_t n, nind, inner, es;
} gather_ctx;

/* Row r = (o, q) of the output is row (o, index q) of the input. */
static void gather_task(void *ctx, int64_t b, int64_t e) {
    const gather_ctx *c = ctx;
    int64_t blk = c->inner * c->es;
    for (int64_t r = b; r < e; r++) {
        int64_t o = r / c->nind, j = mk_ldi(c->ind, r % c->nind);
        j = j < 0 ? j + c->n : j;
        __builtin_memcpy((char *)c->y->p + r * blk, (const char *)c->x->p + (o * c->n + j) * blk,
                         (size_t)blk);
    }
}

int32_t mk_GATHER(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const mk_tensor *x = &in[0], *ind = &in[1];
    int64_t axis = norm_axis(attr[MC_A_GATHER_axis].i, x->rank), outer, inner, n = x->dims[axis];
    int64_t nind = mk_numel(ind);
    split_at(x, axis, &outer, &inner);
    for (int64_t q = 0; q < nind; q++) {
        int64_t v = mk_ldi(ind, q), j = v < 0 ? v + n : v;
        if (j < 0 || j >= n)
            return moert_fail(MOERT_ERR_ARGUMENT,
                              "index %lld at position %lld is outside [-%lld, %lld)", (long long)v,
                              (long long)q, (long long)n, (long long)n);
    }
    gather_ctx c = {x, ind, &out[0], n, nind, inner, mk_dtsize(x->dt)};
    if (outer * nind > 0) moert_parallel_for(outer * nind, row_grain(inner), gather_task, &c);
    return MOERT_OK;
}

/* ---- reductions ---- */

typedef enum { R_SUM, R_MEAN, R_MAX } redop;

/* The interpreter's ev_gt: NaN is smaller than every number. */
static ALWAYS_INLINE bool gt_nan_low(float a, float b) {
    return a == a && (b != b || a > b);
}

/* Input dims split into kept and reduced lists (size-1 dims dropped), with strides. */
typedef struct {
    const mk_tensor *x, *y;
    redop op;
    mk_groups g; /* the inputs each output folds */
} red_ctx;

/* One output: the first input sets it, the rest fold in ascending order. */
static void red_one_float(const red_ctx *c, int64_t o, int64_t base) {
    float acc = mk_ldf(c->x, base);
    bool rows = c->g.nr == 1 && c->g.rs[0] == 1;
    if (rows && c->x->dt == MK_F32) {
        const float *x = (const float *)c->x->p + base;
        for (int64_t t = 1; t < c->g.count; t++)
            acc = c->op == R_MAX ? (gt_nan_low(x[t], acc) ? x[t] : acc) : acc + x[t];
    } else {
        for (int64_t t = 1; t < c->g.count; t++) {
            float v = mk_ldf(c->x, base + mk_groups_off(&c->g, t));
            acc = c->op == R_MAX ? (gt_nan_low(v, acc) ? v : acc) : acc + v;
        }
    }
    mk_stf(c->y, o, c->op == R_MEAN ? acc / (float)c->g.count : acc);
}

static void red_one_int(const red_ctx *c, int64_t o, int64_t base) {
    int64_t acc = mk_ldi(c->x, base);
    for (int64_t t = 1; t < c->g.count; t++) {
        int64_t v = mk_ldi(c->x, base + mk_groups_off(&c->g, t));
        acc = c->op == R_MAX ? (v > acc ? v : acc) : (int64_t)((uint64_t)acc + (uint64_t)v);
    }
    mk_sti(c->y, o, c->op == R_MEAN ? acc / c->g.count : acc);
}

static void red_task(void *ctx, int64_t b, int64_t e) {
    const red_ctx *c = ctx;
    for (int64_t o = b; o < e; o++) {
        int64_t base = mk_groups_base(&c->g, o);
        if (mk_isfloat(c->x->dt))
            red_one_float(c, o, base);
        else
            red_one_int(c, o, base);
    }
}

/* f32, one reduced block in front of a kept block of K2: y[k2] folds x[r][k2] over r,
 * a vector loop over k2 that keeps each output's ascending order. Task t covers
 * leading index t / nch and chunk t % nch of k2. */
typedef struct {
    const red_ctx *rc;
    int64_t R, K2, nch;
} red_cols_ctx;

#define COLS_CHUNK 4096

static void red_cols_task(void *ctx, int64_t b, int64_t e) {
    const red_cols_ctx *c = ctx;
    for (int64_t t = b; t < e; t++) {
        int64_t k1 = t / c->nch, lo = (t % c->nch) * COLS_CHUNK;
        int64_t len = c->K2 - lo < COLS_CHUNK ? c->K2 - lo : COLS_CHUNK;
        const float *x = (const float *)c->rc->x->p + k1 * c->R * c->K2 + lo;
        float *y = (float *)c->rc->y->p + k1 * c->K2 + lo;
        for (int64_t j = 0; j < len; j++)
            y[j] = x[j];
        for (int64_t r = 1; r < c->R; r++) {
            const float *xr = x + r * c->K2;
            if (c->rc->op == R_MAX)
                for (int64_t j = 0; j < len; j++)
                    y[j] = gt_nan_low(xr[j], y[j]) ? xr[j] : y[j];
            else
                for (int64_t j = 0; j < len; j++)
                    y[j] = y[j] + xr[j];
        }
        if (c->rc->op == R_MEAN)
            for (int64_t j = 0; j < len; j++)
                y[j] = y[j] / (float)c->rc->g.count;
    }
}

/* Fills kept/reduced lists; false when an axis is out of range. attr: the REDUCE_ROWS of
 * attrs.def, at the same positions in every reduction. */
static bool red_plan(red_ctx *c, const mk_tensor *in, const mk_attr *attr) {
    const mk_tensor *x = &in[0];
    bool red[MK_MAX_RANK] = {0};
    int64_t n = in[1].p ? mk_numel(&in[1]) : 0;
    if (n == 0 && !attr[MC_A_REDUCE_SUM_noop_with_empty_axes].i)
        for (int64_t i = 0; i < x->rank; i++)
            red[i] = true;
    for (int64_t i = 0; i < n; i++) {
        int64_t a = norm_axis(mk_ldi(&in[1], i), x->rank);
        if (a < 0 || a >= x->rank) return false;
        red[a] = true;
    }
    mk_groups_build(&c->g, x, red);
    return true;
}

static int32_t reduce(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr, redop op) {
    red_ctx c = {.x = &in[0], .y = &out[0], .op = op};
    if (!red_plan(&c, in, attr))
        return moert_fail(MOERT_ERR_ARGUMENT, "reduce axis out of range for rank %lld",
                          (long long)in[0].rank);
    int64_t ny = mk_numel(&out[0]);
    if (ny == 0 || mk_numel(&in[0]) == 0) return MOERT_OK;
    /* f32 with one reduced block followed by one contiguous kept block */
    if (c.x->dt == MK_F32 && c.g.nr == 1 && c.g.nk >= 1 && c.g.ks[c.g.nk - 1] == 1 &&
        c.g.rs[0] == c.g.kd[c.g.nk - 1] && (c.g.nk == 1 || c.g.ks[0] == c.g.rd[0] * c.g.rs[0]) &&
        c.g.nk <= 2) {
        red_cols_ctx cc = {&c, c.g.rd[0], c.g.kd[c.g.nk - 1], 0};
        cc.nch = (cc.K2 + COLS_CHUNK - 1) / COLS_CHUNK;
        int64_t tasks = (ny / cc.K2) * cc.nch;
        moert_parallel_for(tasks, row_grain(c.g.count * (cc.K2 < COLS_CHUNK ? cc.K2 : COLS_CHUNK)),
                           red_cols_task, &cc);
        return MOERT_OK;
    }
    moert_parallel_for(ny, row_grain(c.g.count), red_task, &c);
    return MOERT_OK;
}

/* Attributes: keepdims (shape only), noop_with_empty_axes. */
int32_t mk_REDUCE_SUM(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    return reduce(in, out, attr, R_SUM);
}
int32_t mk_REDUCE_MEAN(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    return reduce(in, out, attr, R_MEAN);
}
int32_t mk_REDUCE_MAX(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    return reduce(in, out, attr, R_MAX);
}

/* ---- Cast ---- */

typedef struct {
    const mk_tensor *x, *y;
    int64_t first_err;
} cast_ctx;

/* float -> int truncates toward zero after a range check (NaN fails it), -> bool is
 * != 0, -> f16/bf16 rounds on store, int -> int keeps the low bits. */
static ALWAYS_INLINE void cast_range(cast_ctx *c, int64_t xdt, int64_t ydt, int64_t b, int64_t e) {
    mk_tensor x = *c->x, y = *c->y;
    x.dt = xdt;
    y.dt = ydt;
    for (int64_t i = b; i < e; i++) {
        if (mk_isfloat(ydt)) {
            mk_stf(&y, i, mk_ldf(&x, i));
        } else if (ydt == MK_BOOL) {
            mk_sti(&y, i, mk_isfloat(xdt) ? mk_ldf(&x, i) != 0 : mk_ldi(&x, i) != 0);
        } else if (mk_isfloat(xdt)) {
            float v = mk_ldf(&x, i);
            double lim = ydt == MK_I32 ? 2147483648.0 : 9.2233720368547758e18;
            if (!(v > -lim && v < lim)) {
                note_error(&c->first_err, i);
                return;
            }
            mk_sti(&y, i, (int64_t)v);
        } else {
            mk_sti(&y, i, mk_ldi(&x, i));
        }
    }
}

/* The float pairs get loops specialised on both dtypes. */
static void cast_task(void *ctx, int64_t b, int64_t e) {
    cast_ctx *c = ctx;
    int64_t xd = c->x->dt, yd = c->y->dt;
    if (xd == MK_F32 && yd == MK_F16)
        cast_range(c, MK_F32, MK_F16, b, e);
    else if (xd == MK_F16 && yd == MK_F32)
        cast_range(c, MK_F16, MK_F32, b, e);
    else if (xd == MK_F32 && yd == MK_BF16)
        cast_range(c, MK_F32, MK_BF16, b, e);
    else if (xd == MK_BF16 && yd == MK_F32)
        cast_range(c, MK_BF16, MK_F32, b, e);
    else
        cast_range(c, xd, yd, b, e);
}

int32_t mk_CAST(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    if (in[0].dt == out[0].dt) {
        copy_flat(out[0].p, in[0].p, mk_numel(&out[0]) * mk_dtsize(out[0].dt));
        return MOERT_OK;
    }
    cast_ctx c = {&in[0], &out[0], INT64_MAX};
    moert_parallel_for(mk_numel(&out[0]), GRAIN, cast_task, &c);
    if (c.first_err == INT64_MAX) return MOERT_OK;
    return moert_fail(MOERT_ERR_ARGUMENT, "Cast of %g at element %lld does not fit %s",
                      (double)mk_ldf(&in[0], c.first_err), (long long)c.first_err,
                      out[0].dt == MK_I32 ? "i32" : "i64");
}

/* ---- Where, Equal, Less: broadcasting ---- */

typedef enum { CMP_EQ, CMP_LT, CMP_GT, CMP_LE } cmp_op;

typedef struct {
    mk_plan p;
    const mk_tensor *in, *y;
    cmp_op cmp; /* Equal, Less, Greater, LessOrEqual */
} bc_ctx;

/* One comparison; NaN is unordered and unequal, so every one of them is false for it. */
#define CMP(op, x, z)                                                                              \
    ((op) == CMP_EQ   ? (x) == (z)                                                                 \
     : (op) == CMP_LT ? (x) < (z)                                                                  \
     : (op) == CMP_GT ? (x) > (z)                                                                  \
                      : (x) <= (z))

#define WHERE_RUN(T)                                                                               \
    do {                                                                                           \
        T *d = (T *)c->y->p + e;                                                                   \
        const T *a = (const T *)c->in[1].p + cur.off[1], *b2 = (const T *)c->in[2].p + cur.off[2]; \
        for (int64_t i = 0; i < n; i++)                                                            \
            d[i] = cond[i * sc] ? a[i * sa] : b2[i * sb];                                          \
    } while (0)

static void where_task(void *ctx, int64_t b, int64_t end) {
    const bc_ctx *c = ctx;
    mk_cursor cur;
    mk_seek(&c->p, &cur, b);
    int64_t r = c->p.rank - 1, es = mk_dtsize(c->y->dt);
    int64_t sc = c->p.st[0][r], sa = c->p.st[1][r], sb = c->p.st[2][r];
    for (int64_t e = b, n; e < end; e += n) {
        n = mk_run_len(&c->p, &cur, end - e);
        const uint8_t *cond = (const uint8_t *)c->in[0].p + cur.off[0];
        if (es == 1)
            WHERE_RUN(uint8_t);
        else if (es == 2)
            WHERE_RUN(uint16_t);
        else if (es == 4)
            WHERE_RUN(uint32_t);
        else
            WHERE_RUN(uint64_t);
        mk_advance(&c->p, &cur, n);
    }
}

int32_t mk_WHERE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    bc_ctx c = {.in = in, .y = &out[0]};
    mk_bcast_init(&c.p, &out[0], in, 3);
    moert_parallel_for(mk_numel(&out[0]), GRAIN, where_task, &c);
    return MOERT_OK;
}

/* Floats compare as floats (NaN unequal, unordered), integers and bools as int64. */
static void cmp_task(void *ctx, int64_t b, int64_t end) {
    const bc_ctx *c = ctx;
    mk_cursor cur;
    mk_seek(&c->p, &cur, b);
    int64_t r = c->p.rank - 1, sa = c->p.st[0][r], sb = c->p.st[1][r];
    const mk_tensor *A = &c->in[0], *B = &c->in[1];
    uint8_t *y = c->y->p;
    for (int64_t e = b, n; e < end; e += n) {
        n = mk_run_len(&c->p, &cur, end - e);
        int64_t oa = cur.off[0], ob = cur.off[1];
        if (A->dt == MK_F32) {
            const float *a = (const float *)A->p + oa, *bb = (const float *)B->p + ob;
            for (int64_t i = 0; i < n; i++)
                y[e + i] = CMP(c->cmp, a[i * sa], bb[i * sb]);
        } else if (mk_isfloat(A->dt)) {
            for (int64_t i = 0; i < n; i++) {
                float x = mk_ldf(A, oa + i * sa), z = mk_ldf(B, ob + i * sb);
                y[e + i] = CMP(c->cmp, x, z);
            }
        } else {
            for (int64_t i = 0; i < n; i++) {
                int64_t x = mk_ldi(A, oa + i * sa), z = mk_ldi(B, ob + i * sb);
                y[e + i] = CMP(c->cmp, x, z);
            }
        }
        mk_advance(&c->p, &cur, n);
    }
}

static int32_t compare(const mk_tensor *in, const mk_tensor *out, cmp_op cmp) {
    bc_ctx c = {.in = in, .y = &out[0], .cmp = cmp};
    mk_bcast_init(&c.p, &out[0], in, 2);
    moert_parallel_for(mk_numel(&out[0]), GRAIN, cmp_task, &c);
    return MOERT_OK;
}

int32_t mk_EQUAL(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return compare(in, out, CMP_EQ);
}
int32_t mk_LESS(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return compare(in, out, CMP_LT);
}
int32_t mk_GREATER(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return compare(in, out, CMP_GT);
}
int32_t mk_LESS_OR_EQUAL(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    return compare(in, out, CMP_LE);
}

/* ---- TopK ---- */

typedef struct {
    const mk_tensor *x, *vals, *idx;
    int64_t n, inner, K;
    bool largest;
} topk_ctx;

/* The interpreter picks, K times, the best element not yet taken, lowest index on
 * ties, NaN smallest: the first K of a stable sort. Here an insertion into the index
 * output as the row is scanned once: a later element moves ahead only when strictly
 * better, which keeps the lower index first on ties. Integers compare as floats, as
 * in the interpreter. */
static void topk_row(const topk_ctx *c, int64_t o, int64_t i) {
    int64_t xb = o * c->n * c->inner + i, yb = o * c->K * c->inner + i, s = c->inner;
    int64_t *idx = (int64_t *)c->idx->p, cnt = 0;
    for (int64_t j = 0; j < c->n; j++) {
        float v = mk_ldf(c->x, xb + j * s);
        int64_t pos;
        if (cnt < c->K) {
            pos = cnt++;
        } else {
            float w = mk_ldf(c->x, xb + idx[yb + (c->K - 1) * s] * s);
            if (!(c->largest ? gt_nan_low(v, w) : gt_nan_low(w, v))) continue;
            pos = c->K - 1;
        }
        for (; pos > 0; pos--) {
            int64_t prev = idx[yb + (pos - 1) * s];
            float w = mk_ldf(c->x, xb + prev * s);
            if (!(c->largest ? gt_nan_low(v, w) : gt_nan_low(w, v))) break;
            idx[yb + pos * s] = prev;
        }
        idx[yb + pos * s] = j;
    }
    int64_t es = mk_dtsize(c->x->dt);
    for (int64_t r = 0; r < c->K; r++)
        __builtin_memcpy((char *)c->vals->p + (yb + r * s) * es,
                         (const char *)c->x->p + (xb + idx[yb + r * s] * s) * es, (size_t)es);
}

static void topk_task(void *ctx, int64_t b, int64_t e) {
    const topk_ctx *c = ctx;
    for (int64_t r = b; r < e; r++)
        topk_row(c, r / c->inner, r % c->inner);
}

/* Attributes: axis, largest, sorted (results are always sorted, as in the
 * interpreter). K is the output's axis dim. */
int32_t mk_TOPK(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    int64_t axis = norm_axis(attr[MC_A_TOPK_axis].i, in[0].rank), outer, inner;
    split_at(&in[0], axis, &outer, &inner);
    topk_ctx c = {&in[0],
                  &out[0],
                  &out[1],
                  in[0].dims[axis],
                  inner,
                  out[0].dims[axis],
                  attr[MC_A_TOPK_largest].i != 0};
    if (c.K > c.n)
        return moert_fail(MOERT_ERR_ARGUMENT, "K is %lld but the axis has %lld elements",
                          (long long)c.K, (long long)c.n);
    if (c.K > 0 && outer * inner > 0)
        moert_parallel_for(outer * inner, row_grain(c.n * (c.K < 8 ? 1 : c.K / 8)), topk_task, &c);
    return MOERT_OK;
}
