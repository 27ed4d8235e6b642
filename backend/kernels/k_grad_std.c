/* backend/kernels/k_grad_std.c: native kernels for the gradients of standard ops
 * (docs/autodiff.md; ir/eval_grad_std.c is the reference).
 *
 * Tolerance against the interpreter (tests/native/cases_grad_std.py):
 *  - SumTo, norm gradients, GatherGrad, ReduceMaxGrad, Softmax's SoftmaxGrad: exact in
 *    f32 (the same expressions, FP contraction off, every sum in ascending index order
 *    from zero), compared at the "arith" tolerance;
 *  - BroadcastTo, SliceGrad, TopKGrad: exact (bytes are copied; TopKGrad recomputes the
 *    forward's selection with its tie rule);
 *  - UnaryGrad, LogSoftmax's SoftmaxGrad: "transc" (k_math.h in place of libm).
 * Scratch (laid out in k_grad_std_scratch.h): the norms' row statistics, GatherGrad's
 * f32 accumulators for f16/bf16 data, TopKGrad's recomputed indices.
 */
#include <float.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "k_grad_std_scratch.h"
#include "k_groups.h"
#include "mk.h"
#include "k_math.h"
#include "../../runtime/moert.h"

#pragma STDC FP_CONTRACT OFF

#define GRAIN         16384 /* elements per parallel chunk: smaller tensors stay serial */
#define COLS_CHUNK    4096  /* columns per task of a column-wise sum */
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

/* Copies element si of src to element di of dst, both of element size es. */
static ALWAYS_INLINE void copy_elem(void *dst, int64_t di, const void *src, int64_t si,
                                    int64_t es) {
    __builtin_memcpy((char *)dst + di * es, (const char *)src + si * es, (size_t)es);
}

/* ---- moe.UnaryGrad ---- */

/* The `op` attribute: the index of its choice (ir/attrs.h). */
typedef enum MC_A_MOE_UNARY_GRAD_op_choices gop;

typedef struct {
    const mk_tensor *gy, *x, *gx;
} ug_ctx;

/* f'(x), the interpreter's formulas with k_math.h in place of libm. */
static ALWAYS_INLINE float dun(gop op, float x) {
    switch (op) {
    case MC_A_MOE_UNARY_GRAD_op_Relu: return x > 0 ? 1.0f : 0.0f;
    case MC_A_MOE_UNARY_GRAD_op_Gelu:
        return 0.5f * (1.0f + mk_erff(x * 0.70710678118654752f)) +
               x * 0.39894228040143268f * mk_expf(-0.5f * x * x);
    case MC_A_MOE_UNARY_GRAD_op_GeluTanh: {
        float c = 0.7978845608028654f, a = 0.044715f;
        float t = mk_tanhf(c * (x + a * x * x * x));
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * c * (1.0f + 3.0f * a * x * x);
    }
    case MC_A_MOE_UNARY_GRAD_op_Sigmoid: {
        float s = mk_sigmoidf(x);
        return s * (1.0f - s);
    }
    case MC_A_MOE_UNARY_GRAD_op_Tanh: {
        float t = mk_tanhf(x);
        return 1.0f - t * t;
    }
    case MC_A_MOE_UNARY_GRAD_op_Silu: {
        float s = mk_sigmoidf(x);
        return s * (1.0f + x * (1.0f - s));
    }
    case MC_A_MOE_UNARY_GRAD_op_Exp: return mk_expf(x);
    case MC_A_MOE_UNARY_GRAD_op_Log: return 1.0f / x;
    case MC_A_MOE_UNARY_GRAD_op_Sqrt: return 0.5f / mk_sqrtf(x);
    }
    return 0.0f;
}

/* Relu selects gy rather than multiplying, as the interpreter does. */
static ALWAYS_INLINE float ug_one(gop op, float g, float x) {
    return op == MC_A_MOE_UNARY_GRAD_op_Relu ? (x > 0 ? g : 0.0f) : g * dun(op, x);
}

static ALWAYS_INLINE void ug_range(const ug_ctx *c, gop op, int64_t b, int64_t e) {
    if (c->x->dt == MK_F32) {
        const float *g = (const float *)c->gy->p, *x = (const float *)c->x->p;
        float *y = (float *)c->gx->p;
        for (int64_t i = b; i < e; i++)
            y[i] = ug_one(op, g[i], x[i]);
    } else {
        for (int64_t i = b; i < e; i++)
            mk_stf(c->gx, i, ug_one(op, mk_ldf(c->gy, i), mk_ldf(c->x, i)));
    }
}

#define UG_TASK(name, op)                                                                          \
    static void name(void *ctx, int64_t b, int64_t e) {                                            \
        ug_range(ctx, op, b, e);                                                                   \
    }
UG_TASK(ug_relu, MC_A_MOE_UNARY_GRAD_op_Relu)
UG_TASK(ug_gelu, MC_A_MOE_UNARY_GRAD_op_Gelu)
UG_TASK(ug_gelu_tanh, MC_A_MOE_UNARY_GRAD_op_GeluTanh)
UG_TASK(ug_sigmoid, MC_A_MOE_UNARY_GRAD_op_Sigmoid)
UG_TASK(ug_tanh, MC_A_MOE_UNARY_GRAD_op_Tanh)
UG_TASK(ug_silu, MC_A_MOE_UNARY_GRAD_op_Silu)
UG_TASK(ug_exp, MC_A_MOE_UNARY_GRAD_op_Exp)
UG_TASK(ug_log, MC_A_MOE_UNARY_GRAD_op_Log)
UG_TASK(ug_sqrt, MC_A_MOE_UNARY_GRAD_op_Sqrt)

int32_t mk_MOE_UNARY_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    static const moert_task_fn tasks[] = {[MC_A_MOE_UNARY_GRAD_op_Relu] = ug_relu,
                                          [MC_A_MOE_UNARY_GRAD_op_Gelu] = ug_gelu,
                                          [MC_A_MOE_UNARY_GRAD_op_GeluTanh] = ug_gelu_tanh,
                                          [MC_A_MOE_UNARY_GRAD_op_Sigmoid] = ug_sigmoid,
                                          [MC_A_MOE_UNARY_GRAD_op_Tanh] = ug_tanh,
                                          [MC_A_MOE_UNARY_GRAD_op_Silu] = ug_silu,
                                          [MC_A_MOE_UNARY_GRAD_op_Exp] = ug_exp,
                                          [MC_A_MOE_UNARY_GRAD_op_Log] = ug_log,
                                          [MC_A_MOE_UNARY_GRAD_op_Sqrt] = ug_sqrt};
    int64_t op = attr[MC_A_MOE_UNARY_GRAD_op].i;
    if (op < 0 || op >= (int64_t)(sizeof tasks / sizeof tasks[0]))
        return moert_fail(MOERT_ERR_ARGUMENT, "moe.UnaryGrad: unknown op %lld", (long long)op);
    ug_ctx c = {&in[0], &in[1], &out[0]};
    moert_parallel_for(mk_numel(&out[0]), GRAIN, tasks[op], &c);
    return MOERT_OK;
}

/* ---- groups: the input dims an output element gathers (SumTo, ReduceMaxGrad; see
 * k_groups.h) ---- */

static bool grp_rows(const mk_groups *p) { /* each group one contiguous run */
    return p->nr == 0 || (p->nr == 1 && p->rs[0] == 1);
}

/* ---- moe.SumTo ---- */

typedef struct {
    mk_groups p;
    const mk_tensor *g, *y;
    int64_t R, K2, nch; /* column path: R reduced rows over K2 contiguous columns */
} sum_ctx;

static void sum_task(void *ctx, int64_t b, int64_t e) {
    const sum_ctx *c = ctx;
    for (int64_t o = b; o < e; o++) {
        int64_t base = mk_groups_base(&c->p, o);
        float acc = 0.0f;
        if (c->g->dt == MK_F32 && grp_rows(&c->p)) {
            const float *x = (const float *)c->g->p + base;
            for (int64_t t = 0; t < c->p.count; t++)
                acc += x[t];
        } else {
            for (int64_t t = 0; t < c->p.count; t++)
                acc += mk_ldf(c->g, base + mk_groups_off(&c->p, t));
        }
        mk_stf(c->y, o, acc);
    }
}

/* f32, one reduced block right outside a contiguous kept block of K2 (a bias gradient):
 * y[k1, j] sums x[k1, r, j] over r, a vector loop over j that keeps each output's
 * ascending order. Task t covers leading index t / nch and chunk t % nch of j. */
static void sum_cols_task(void *ctx, int64_t b, int64_t e) {
    const sum_ctx *c = ctx;
    for (int64_t t = b; t < e; t++) {
        int64_t k1 = t / c->nch, lo = (t % c->nch) * COLS_CHUNK;
        int64_t len = c->K2 - lo < COLS_CHUNK ? c->K2 - lo : COLS_CHUNK;
        const float *x = (const float *)c->g->p + k1 * c->R * c->K2 + lo;
        float *y = (float *)c->y->p + k1 * c->K2 + lo;
        for (int64_t j = 0; j < len; j++)
            y[j] = 0.0f;
        for (int64_t r = 0; r < c->R; r++)
            for (int64_t j = 0; j < len; j++)
                y[j] = y[j] + x[r * c->K2 + j];
    }
}

/* A dim of g is summed where like (right-aligned) lacks it or has 1. */
int32_t mk_MOE_SUM_TO(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    const mk_tensor *g = &in[0], *y = &out[0];
    bool red[MK_MAX_RANK] = {0};
    for (int64_t i = 0; i < g->rank; i++) {
        int64_t j = i - (g->rank - y->rank);
        red[i] = j < 0 || y->dims[j] == 1;
    }
    sum_ctx c = {.g = g, .y = y};
    mk_groups_build(&c.p, g, red);
    int64_t ny = mk_numel(y);
    if (ny == 0) return MOERT_OK;
    const mk_groups *p = &c.p;
    if (g->dt == MK_F32 && y->dt == MK_F32 && p->nr == 1 && p->nk >= 1 && p->nk <= 2 &&
        p->ks[p->nk - 1] == 1 && p->rs[0] == p->kd[p->nk - 1] &&
        (p->nk == 1 || p->ks[0] == p->rd[0] * p->rs[0])) {
        c.R = p->rd[0];
        c.K2 = p->kd[p->nk - 1];
        c.nch = (c.K2 + COLS_CHUNK - 1) / COLS_CHUNK;
        int64_t tasks = (ny / c.K2) * c.nch;
        moert_parallel_for(tasks, row_grain(c.R * (c.K2 < COLS_CHUNK ? c.K2 : COLS_CHUNK)),
                           sum_cols_task, &c);
        return MOERT_OK;
    }
    moert_parallel_for(ny, row_grain(p->count), sum_task, &c);
    return MOERT_OK;
}

/* ---- moe.BroadcastTo: a strided read of g for every element of y ---- */

typedef struct {
    mk_plan p;
    const mk_tensor *g, *y;
} bc_ctx;

#define BCAST_RUN(T)                                                                               \
    do {                                                                                           \
        T *d = (T *)c->y->p + e;                                                                   \
        const T *s = (const T *)c->g->p + cur.off[0];                                              \
        for (int64_t i = 0; i < n; i++)                                                            \
            d[i] = s[i * st];                                                                      \
    } while (0)

static void bcast_task(void *ctx, int64_t b, int64_t end) {
    const bc_ctx *c = ctx;
    mk_cursor cur;
    mk_seek(&c->p, &cur, b);
    int64_t st = c->p.st[0][c->p.rank - 1], es = mk_dtsize(c->y->dt);
    for (int64_t e = b, n; e < end; e += n) {
        n = mk_run_len(&c->p, &cur, end - e);
        if (es == 2)
            BCAST_RUN(uint16_t);
        else if (es == 4)
            BCAST_RUN(uint32_t);
        else
            BCAST_RUN(uint64_t);
        mk_advance(&c->p, &cur, n);
    }
}

/* axes (optional): the axes of y that g lacks: g is viewed with dims of 1 there, then
 * broadcast as numpy does. */
int32_t mk_MOE_BROADCAST_TO(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const mk_tensor *y = &out[0];
    const mk_attr *axes = &attr[MC_A_MOE_BROADCAST_TO_axes];
    mk_tensor view = in[0];
    if (axes->present && axes->n > 0) {
        bool at[MK_MAX_RANK] = {0};
        for (int64_t i = 0; i < axes->n; i++) {
            int64_t a = norm_axis(axes->ints[i], y->rank);
            if (a < 0 || a >= y->rank)
                return moert_fail(MOERT_ERR_ARGUMENT, "broadcast axis %lld is out of range",
                                  (long long)axes->ints[i]);
            at[a] = true;
        }
        view.rank = y->rank;
        for (int64_t i = 0, j = 0; i < y->rank; i++)
            view.dims[i] = at[i] ? 1 : in[0].dims[j++];
    }
    bc_ctx c = {.g = &in[0], .y = y};
    mk_bcast_init(&c.p, y, &view, 1);
    moert_parallel_for(mk_numel(y), GRAIN, bcast_task, &c);
    return MOERT_OK;
}

/* ---- moe.SoftmaxGrad ---- */

typedef struct {
    const mk_tensor *gy, *y, *gx;
    int64_t n, inner;
    bool log_form;
} smg_ctx;

/* Softmax: gx = y (gy - sum gy y). LogSoftmax: gx = gy - e^y sum gy. */
static void smg_row_f32(const float *g, const float *y, float *gx, int64_t n, bool log_form) {
    float s = 0.0f;
    if (log_form) {
        for (int64_t j = 0; j < n; j++)
            s += g[j];
        for (int64_t j = 0; j < n; j++)
            gx[j] = g[j] - mk_expf(y[j]) * s;
    } else {
        for (int64_t j = 0; j < n; j++)
            s += g[j] * y[j];
        for (int64_t j = 0; j < n; j++)
            gx[j] = y[j] * (g[j] - s);
    }
}

static void smg_row_any(const smg_ctx *c, int64_t base) {
    int64_t st = c->inner;
    float s = 0.0f;
    for (int64_t j = 0; j < c->n; j++) {
        float g = mk_ldf(c->gy, base + j * st);
        s += c->log_form ? g : g * mk_ldf(c->y, base + j * st);
    }
    for (int64_t j = 0; j < c->n; j++) {
        float g = mk_ldf(c->gy, base + j * st), y = mk_ldf(c->y, base + j * st);
        mk_stf(c->gx, base + j * st, c->log_form ? g - mk_expf(y) * s : y * (g - s));
    }
}

/* Rows are (outer, inner) pairs, r = o * inner + i. */
static void smg_task(void *ctx, int64_t b, int64_t e) {
    const smg_ctx *c = ctx;
    for (int64_t r = b; r < e; r++) {
        int64_t base = (r / c->inner) * c->n * c->inner + r % c->inner;
        if (c->y->dt == MK_F32 && c->inner == 1)
            smg_row_f32((const float *)c->gy->p + base, (const float *)c->y->p + base,
                        (float *)c->gx->p + base, c->n, c->log_form);
        else
            smg_row_any(c, base);
    }
}

int32_t mk_MOE_SOFTMAX_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    int64_t axis = norm_axis(attr[MC_A_MOE_SOFTMAX_GRAD_axis].i, in[1].rank), outer, inner;
    split_at(&in[1], axis, &outer, &inner);
    smg_ctx c = {&in[0],           &in[1], &out[0],
                 in[1].dims[axis], inner,  attr[MC_A_MOE_SOFTMAX_GRAD_log].i != 0};
    if (c.n > 0) moert_parallel_for(outer * inner, row_grain(c.n), smg_task, &c);
    return MOERT_OK;
}

static int32_t no_scratch(void) {
    return moert_fail(MOERT_ERR_INTERNAL, "gradient kernel: the scratch buffer is too small");
}

/* ---- moe.LayerNormGrad / moe.RMSNormGrad ----
 * Pass 1, parallel over rows: the forward's mean and inv (kept in scratch) and
 * gx = (gy scale - mean(gy scale) - xhat mean(gy scale xhat)) inv. Pass 2, parallel over
 * columns: gscale and gbias sum gy xhat and gy over the rows in ascending order. */

typedef struct {
    const mk_tensor *gy, *x, *scale, *gx, *gs, *gb;
    float *stats; /* scratch: mean and inv of row r at 2r, 2r + 1 */
    int64_t n, rows;
    float eps;
    bool rms;
} ng_ctx;

static void ng_row_f32(const ng_ctx *c, int64_t base, float mean, float inv) {
    const float *x = (const float *)c->x->p + base, *gy = (const float *)c->gy->p + base;
    const float *s = (const float *)c->scale->p;
    float *gx = (float *)c->gx->p + base;
    float sg = 0, sgx = 0;
    for (int64_t j = 0; j < c->n; j++) {
        float g = gy[j] * s[j];
        sg += g;
        sgx += g * ((x[j] - mean) * inv);
    }
    float mg = c->rms ? 0.0f : sg / (float)c->n, mgx = sgx / (float)c->n;
    for (int64_t j = 0; j < c->n; j++)
        gx[j] = (gy[j] * s[j] - mg - ((x[j] - mean) * inv) * mgx) * inv;
}

static void ng_row_any(const ng_ctx *c, int64_t base, float mean, float inv) {
    float sg = 0, sgx = 0;
    for (int64_t j = 0; j < c->n; j++) {
        float g = mk_ldf(c->gy, base + j) * mk_ldf(c->scale, j);
        sg += g;
        sgx += g * ((mk_ldf(c->x, base + j) - mean) * inv);
    }
    float mg = c->rms ? 0.0f : sg / (float)c->n, mgx = sgx / (float)c->n;
    for (int64_t j = 0; j < c->n; j++) {
        float xhat = (mk_ldf(c->x, base + j) - mean) * inv;
        mk_stf(c->gx, base + j,
               (mk_ldf(c->gy, base + j) * mk_ldf(c->scale, j) - mg - xhat * mgx) * inv);
    }
}

static void ng_rows_task(void *ctx, int64_t b, int64_t e) {
    const ng_ctx *c = ctx;
    for (int64_t r = b; r < e; r++) {
        float mean, inv = mk_norm_row_stats(c->x, r * c->n, c->n, c->eps, c->rms, &mean);
        c->stats[2 * r] = mean;
        c->stats[2 * r + 1] = inv;
        if (c->x->dt == MK_F32)
            ng_row_f32(c, r * c->n, mean, inv);
        else
            ng_row_any(c, r * c->n, mean, inv);
    }
}

/* Columns [lo, lo + len) of gscale (and gbias): accumulated in place for f32, in a
 * register per column otherwise. */
static void ng_cols(const ng_ctx *c, int64_t lo, int64_t len) {
    if (c->x->dt == MK_F32) {
        float *gs = (float *)c->gs->p + lo, *gb = c->gb ? (float *)c->gb->p + lo : NULL;
        for (int64_t j = 0; j < len; j++)
            gs[j] = 0.0f;
        for (int64_t r = 0; r < c->rows; r++) {
            const float *x = (const float *)c->x->p + r * c->n + lo;
            const float *gy = (const float *)c->gy->p + r * c->n + lo;
            float mean = c->stats[2 * r], inv = c->stats[2 * r + 1];
            for (int64_t j = 0; j < len; j++)
                gs[j] = gs[j] + gy[j] * ((x[j] - mean) * inv);
        }
        if (gb) {
            for (int64_t j = 0; j < len; j++)
                gb[j] = 0.0f;
            for (int64_t r = 0; r < c->rows; r++)
                for (int64_t j = 0; j < len; j++)
                    gb[j] = gb[j] + ((const float *)c->gy->p)[r * c->n + lo + j];
        }
        return;
    }
    for (int64_t j = lo; j < lo + len; j++) {
        float s = 0, sb = 0;
        for (int64_t r = 0; r < c->rows; r++) {
            float gy = mk_ldf(c->gy, r * c->n + j);
            s += gy * ((mk_ldf(c->x, r * c->n + j) - c->stats[2 * r]) * c->stats[2 * r + 1]);
            sb += gy;
        }
        mk_stf(c->gs, j, s);
        if (c->gb) mk_stf(c->gb, j, sb);
    }
}

static void ng_cols_task(void *ctx, int64_t b, int64_t e) {
    const ng_ctx *c = ctx;
    for (int64_t t = b; t < e; t++) {
        int64_t lo = t * COLS_CHUNK;
        ng_cols(c, lo, c->n - lo < COLS_CHUNK ? c->n - lo : COLS_CHUNK);
    }
}

/* in: gy, x, scale[, bias]; out: gx, gscale[, gbias], then the scratch. attr: the
 * forward norm's rows (NORM_ROWS of attrs.def, the same in both norms). */
static int32_t norm_grad(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr, int nout,
                         bool rms) {
    int64_t axis = norm_axis(attr[MC_A_LAYER_NORM_axis].i, in[1].rank), n = 1;
    for (int64_t i = axis; i < in[1].rank; i++)
        n *= in[1].dims[i];
    if (n <= 0) return MOERT_OK;
    int64_t rows = mk_numel(&in[1]) / n;
    mk_norm_grad_scratch l = mk_norm_grad_scratch_of(rows);
    if (!mk_scratch_fits(&out[nout], l.bytes)) return no_scratch();
    ng_ctx c = {&in[0],
                &in[1],
                &in[2],
                &out[0],
                &out[1],
                nout > 2 ? &out[2] : NULL,
                mk_scratch_at(&out[nout], l.stats),
                n,
                rows,
                (float)attr[MC_A_LAYER_NORM_epsilon].f,
                rms};
    moert_parallel_for(c.rows, row_grain(n), ng_rows_task, &c);
    int64_t nch = (n + COLS_CHUNK - 1) / COLS_CHUNK;
    moert_parallel_for(nch, row_grain(c.rows * (n < COLS_CHUNK ? n : COLS_CHUNK)), ng_cols_task,
                       &c);
    return MOERT_OK;
}

/* Bias (input 3) optional: gbias is an output exactly when it is given. */
int32_t mk_MOE_LAYER_NORM_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    return norm_grad(in, out, attr, in[3].p ? 3 : 2, false);
}
int32_t mk_MOE_RMS_NORM_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    return norm_grad(in, out, attr, 2, true);
}

/* ---- moe.GatherGrad: scatter-add ----
 * Task t owns leading index o = t / nch and column chunk t % nch of every row of gdata:
 * it zeroes them and adds the gy rows in ascending index order, so each element sums as
 * the interpreter's does and no two tasks write the same element. f16/bf16 data sums in
 * f32 scratch, rounded once at the end. */
typedef struct {
    const mk_tensor *gy, *ind, *gd;
    float *acc; /* gdata itself for f32, else the scratch */
    int64_t n, nind, inner, nch;
} gg_ctx;

static void gg_task(void *ctx, int64_t b, int64_t e) {
    const gg_ctx *c = ctx;
    for (int64_t t = b; t < e; t++) {
        int64_t o = t / c->nch, lo = (t % c->nch) * COLS_CHUNK;
        int64_t len = c->inner - lo < COLS_CHUNK ? c->inner - lo : COLS_CHUNK;
        float *acc = c->acc + o * c->n * c->inner + lo;
        for (int64_t j = 0; j < c->n; j++)
            for (int64_t i = 0; i < len; i++)
                acc[j * c->inner + i] = 0.0f;
        for (int64_t q = 0; q < c->nind; q++) {
            int64_t j = mk_ldi(c->ind, q), src = (o * c->nind + q) * c->inner + lo;
            float *a = acc + (j < 0 ? j + c->n : j) * c->inner;
            if (c->gy->dt == MK_F32)
                for (int64_t i = 0; i < len; i++)
                    a[i] = a[i] + ((const float *)c->gy->p)[src + i];
            else
                for (int64_t i = 0; i < len; i++)
                    a[i] = a[i] + mk_ldf(c->gy, src + i);
        }
        if (c->gd->dt != MK_F32)
            for (int64_t j = 0; j < c->n; j++)
                for (int64_t i = 0; i < len; i++)
                    mk_stf(c->gd, (o * c->n + j) * c->inner + lo + i, acc[j * c->inner + i]);
    }
}

/* in: gy, data, indices; attr: Gather's axis. Indices are checked as Gather checks them. */
int32_t mk_MOE_GATHER_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const mk_tensor *x = &in[1], *ind = &in[2], *gd = &out[0];
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
    if (outer * n * inner == 0) return MOERT_OK;
    mk_gather_grad_scratch l = mk_gather_grad_scratch_of(mk_numel(gd), gd->dt != MK_F32);
    if (!mk_scratch_fits(&out[1], l.bytes)) return no_scratch();
    gg_ctx c = {
        &in[0], ind,  gd,    gd->dt == MK_F32 ? (float *)gd->p : mk_scratch_at(&out[1], l.acc),
        n,      nind, inner, (inner + COLS_CHUNK - 1) / COLS_CHUNK};
    int64_t len = inner < COLS_CHUNK ? inner : COLS_CHUNK;
    moert_parallel_for(outer * c.nch, row_grain((n + nind) * len), gg_task, &c);
    return MOERT_OK;
}

/* ---- moe.SliceGrad: zeros, then gy written where Slice read ---- */

typedef struct {
    mk_plan p;
    const mk_tensor *gy, *gd;
    int64_t base;
} sg_ctx;

static void zero_task(void *ctx, int64_t b, int64_t e) {
    __builtin_memset((char *)ctx + b, 0, (size_t)(e - b));
}

#define SCATTER_RUN(T)                                                                             \
    do {                                                                                           \
        T *d = (T *)c->gd->p + c->base + cur.off[0];                                               \
        const T *s = (const T *)c->gy->p + e;                                                      \
        for (int64_t i = 0; i < n; i++)                                                            \
            d[i * st] = s[i];                                                                      \
    } while (0)

static void sg_task(void *ctx, int64_t b, int64_t end) {
    const sg_ctx *c = ctx;
    mk_cursor cur;
    mk_seek(&c->p, &cur, b);
    int64_t st = c->p.st[0][c->p.rank - 1], es = mk_dtsize(c->gd->dt);
    for (int64_t e = b, n; e < end; e += n) {
        n = mk_run_len(&c->p, &cur, end - e);
        if (es == 2)
            SCATTER_RUN(uint16_t);
        else if (es == 4)
            SCATTER_RUN(uint32_t);
        else
            SCATTER_RUN(uint64_t);
        mk_advance(&c->p, &cur, n);
    }
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* in: gy, data, starts, ends, axes?, steps?: starts clamped as Slice does, lengths from
 * gy's dims; every write is checked to lie inside gdata. */
int32_t mk_MOE_SLICE_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    const mk_tensor *gy = &in[0], *x = &in[1], *gd = &out[0];
    int64_t start[MK_MAX_RANK] = {0}, step[MK_MAX_RANK], xs[MK_MAX_RANK], st[MK_MAX_RANK];
    int64_t n = mk_numel(&in[2]);
    n = n < MK_MAX_RANK ? n : MK_MAX_RANK;
    for (int64_t i = 0; i < MK_MAX_RANK; i++)
        step[i] = 1;
    for (int64_t i = 0; i < n; i++) {
        int64_t a = norm_axis(in[4].p ? mk_ldi(&in[4], i) : i, x->rank);
        if (a < 0 || a >= x->rank)
            return moert_fail(MOERT_ERR_ARGUMENT, "slice axis %lld is out of range",
                              (long long)(in[4].p ? mk_ldi(&in[4], i) : i));
        int64_t dim = x->dims[a], p = in[5].p ? mk_ldi(&in[5], i) : 1, s0 = mk_ldi(&in[2], i);
        int64_t b = s0 < 0 ? s0 + dim : s0;
        start[a] = p > 0 ? clamp64(b, 0, dim) : clamp64(b, -1, dim - 1);
        step[a] = p;
    }
    mk_strides(x, xs);
    sg_ctx c = {.gy = gy, .gd = gd, .base = 0};
    for (int64_t i = 0; i < gy->rank; i++) {
        int64_t last = start[i] + (gy->dims[i] - 1) * step[i];
        if (gy->dims[i] > 0 && (i >= x->rank || start[i] < 0 || start[i] >= x->dims[i] ||
                                last < 0 || last >= x->dims[i]))
            return moert_fail(MOERT_ERR_ARGUMENT, "slice of axis %lld writes outside the input",
                              (long long)i);
        c.base += start[i] * xs[i];
        st[i] = step[i] * xs[i];
    }
    int64_t bytes = mk_numel(gd) * mk_dtsize(gd->dt);
    if (bytes > 0) moert_parallel_for(bytes, 4 * GRAIN, zero_task, gd->p);
    c.p.nin = 1;
    c.p.rank = 0;
    for (int64_t i = gy->rank - 1; i >= 0; i--)
        mk_plan_push(&c.p, gy->dims[i], &st[i]);
    mk_plan_finish(&c.p);
    if (mk_numel(gy) > 0) moert_parallel_for(mk_numel(gy), GRAIN, sg_task, &c);
    return MOERT_OK;
}

/* ---- moe.TopKGrad ----
 * Each row recomputes the forward's indices into its K scratch slots (TopK's insertion,
 * k_tensor.c: a later element moves ahead only when strictly better, so ties keep the
 * lower index first; NaN is the smallest), zeroes its gx row and scatters gvalues. */
typedef struct {
    const mk_tensor *gv, *x, *gx;
    int64_t *sel; /* scratch: K per row */
    int64_t n, inner, K;
    bool largest;
} tg_ctx;

static ALWAYS_INLINE bool gt_nan_low(float a, float b) {
    return a == a && (b != b || a > b);
}

static void tg_row(const tg_ctx *c, int64_t o, int64_t i) {
    int64_t xb = o * c->n * c->inner + i, vb = o * c->K * c->inner + i, s = c->inner;
    int64_t *sel = c->sel + (o * c->inner + i) * c->K, cnt = 0;
    for (int64_t j = 0; j < c->n; j++) {
        float v = mk_ldf(c->x, xb + j * s);
        int64_t pos;
        if (cnt < c->K) {
            pos = cnt++;
        } else {
            float w = mk_ldf(c->x, xb + sel[c->K - 1] * s);
            if (!(c->largest ? gt_nan_low(v, w) : gt_nan_low(w, v))) continue;
            pos = c->K - 1;
        }
        for (; pos > 0; pos--) {
            float w = mk_ldf(c->x, xb + sel[pos - 1] * s);
            if (!(c->largest ? gt_nan_low(v, w) : gt_nan_low(w, v))) break;
            sel[pos] = sel[pos - 1];
        }
        sel[pos] = j;
    }
    for (int64_t j = 0; j < c->n; j++)
        mk_stf(c->gx, xb + j * s, 0.0f);
    int64_t es = mk_dtsize(c->gx->dt);
    for (int64_t r = 0; r < c->K; r++)
        copy_elem(c->gx->p, xb + sel[r] * s, c->gv->p, vb + r * s, es);
}

static void tg_task(void *ctx, int64_t b, int64_t e) {
    const tg_ctx *c = ctx;
    for (int64_t r = b; r < e; r++)
        tg_row(c, r / c->inner, r % c->inner);
}

/* in: gvalues, x, K; attr: TopK's axis, largest, sorted. K is gvalues' axis dim. */
int32_t mk_MOE_TOPK_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    int64_t axis = norm_axis(attr[MC_A_TOPK_axis].i, in[1].rank), outer, inner;
    split_at(&in[1], axis, &outer, &inner);
    mk_topk_grad_scratch l = mk_topk_grad_scratch_of(mk_numel(&in[0]));
    if (!mk_scratch_fits(&out[1], l.bytes)) return no_scratch();
    tg_ctx c = {&in[0],           &in[1], &out[0],          mk_scratch_at(&out[1], l.sel),
                in[1].dims[axis], inner,  in[0].dims[axis], attr[MC_A_TOPK_largest].i != 0};
    if (c.K > c.n)
        return moert_fail(MOERT_ERR_ARGUMENT, "K is %lld but the axis has %lld elements",
                          (long long)c.K, (long long)c.n);
    if (c.K > 0 && outer * inner > 0)
        moert_parallel_for(outer * inner, row_grain(c.n * (c.K < 8 ? 1 : c.K / 8)), tg_task, &c);
    return MOERT_OK;
}

/* ---- moe.ReduceMaxGrad ----
 * Per group: the maximum as ReduceMax folds it (first element, then strictly greater,
 * NaN smallest), the count of its ties (equal, or both NaN), and gx = gy / count at the
 * ties, 0 elsewhere. */
typedef struct {
    mk_groups p;
    const mk_tensor *gy, *x, *gx;
} rg_ctx;

static ALWAYS_INLINE bool same(float a, float b) {
    return a == b || (a != a && b != b);
}

static void rg_group(const rg_ctx *c, int64_t o) {
    int64_t base = mk_groups_base(&c->p, o), cnt = 0;
    bool rows = grp_rows(&c->p);
    float mx = mk_ldf(c->x, base);
    for (int64_t t = 1; t < c->p.count; t++) {
        float v = mk_ldf(c->x, base + (rows ? t : mk_groups_off(&c->p, t)));
        mx = gt_nan_low(v, mx) ? v : mx;
    }
    for (int64_t t = 0; t < c->p.count; t++)
        cnt += same(mk_ldf(c->x, base + (rows ? t : mk_groups_off(&c->p, t))), mx);
    float g = mk_ldf(c->gy, o) / (float)cnt;
    for (int64_t t = 0; t < c->p.count; t++) {
        int64_t at = base + (rows ? t : mk_groups_off(&c->p, t));
        mk_stf(c->gx, at, same(mk_ldf(c->x, at), mx) ? g : 0.0f);
    }
}

static void rg_task(void *ctx, int64_t b, int64_t e) {
    const rg_ctx *c = ctx;
    for (int64_t o = b; o < e; o++)
        rg_group(c, o);
}

/* in: gy, x, axes?; attr: ReduceMax's keepdims (shape only), noop_with_empty_axes. */
int32_t mk_MOE_REDUCE_MAX_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const mk_tensor *x = &in[1];
    bool red[MK_MAX_RANK] = {0};
    int64_t n = in[2].p ? mk_numel(&in[2]) : 0;
    if (n == 0 && !attr[MC_A_REDUCE_MAX_noop_with_empty_axes].i)
        for (int64_t i = 0; i < x->rank; i++)
            red[i] = true;
    for (int64_t i = 0; i < n; i++) {
        int64_t a = norm_axis(mk_ldi(&in[2], i), x->rank);
        if (a < 0 || a >= x->rank)
            return moert_fail(MOERT_ERR_ARGUMENT, "reduce axis out of range for rank %lld",
                              (long long)x->rank);
        red[a] = true;
    }
    rg_ctx c = {.gy = &in[0], .x = x, .gx = &out[0]};
    mk_groups_build(&c.p, x, red);
    int64_t ny = mk_numel(&in[0]);
    if (ny == 0 || mk_numel(x) == 0) return MOERT_OK;
    moert_parallel_for(ny, row_grain(3 * c.p.count), rg_task, &c);
    return MOERT_OK;
}
