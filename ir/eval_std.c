/* ir/eval_std.c: reference kernels of the standard ops: arithmetic, activations,
 * MatMul/Gemm, normalisations, comparisons, Cast, TopK. Sums run in mc_real in
 * ascending index order. */
#include "eval.h"

#include <math.h>
#include <string.h>

/* MatMul with numpy semantics: batch dims broadcast, 1-D operands are vectors. */
bool mc_interp_MATMUL(const mc_kernel_ctx *k) {
    const mc_tensor *a = k->in[0], *b = k->in[1];
    mc_tensor *y = &k->out[0];
    int64_t M = a->rank == 1 ? 1 : a->dims[a->rank - 2], K = a->dims[a->rank - 1];
    int64_t N = b->rank == 1 ? 1 : b->dims[b->rank - 1];
    /* batch shapes: everything but the matrix dims, broadcast into y's leading dims */
    mc_tensor ya = {.rank = 0}, ta = {.rank = 0}, tb = {.rank = 0};
    int yb = y->rank - (a->rank == 1 ? 0 : 1) - (b->rank == 1 ? 0 : 1);
    ya.rank = yb;
    for (int i = 0; i < yb; i++)
        ya.dims[i] = y->dims[i];
    ta.rank = a->rank > 2 ? a->rank - 2 : 0;
    tb.rank = b->rank > 2 ? b->rank - 2 : 0;
    for (int i = 0; i < ta.rank; i++)
        ta.dims[i] = a->dims[i];
    for (int i = 0; i < tb.rank; i++)
        tb.dims[i] = b->dims[i];
    const mc_tensor *bt[2] = {&ta, &tb};
    ev_bcast bc;
    ev_bcast_init(&bc, &ya, bt, 2);
    int64_t batches = 1;
    for (int i = 0; i < yb; i++)
        batches *= ya.dims[i];
    for (int64_t bi = 0; bi < batches; bi++) {
        int64_t off[2];
        ev_bcast_offsets(&bc, bi, off);
        const mc_real *pa = a->f + off[0] * M * K, *pb = b->f + off[1] * K * N;
        mc_real *py = y->f + bi * M * N;
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                mc_real s = 0;
                for (int64_t q = 0; q < K; q++)
                    s += pa[m * K + q] * pb[q * N + n];
                py[m * N + n] = s;
            }
    }
    return true;
}

bool mc_interp_GEMM(const mc_kernel_ctx *k) {
    const mc_tensor *a = k->in[0], *b = k->in[1], *c = k->n->nin > 2 ? k->in[2] : NULL;
    mc_tensor *y = &k->out[0];
    bool ta = mc_attr_int(k->n, "transA"), tb = mc_attr_int(k->n, "transB");
    mc_real alpha = (mc_real)mc_attr_float(k->n, "alpha"),
            beta = (mc_real)mc_attr_float(k->n, "beta");
    int64_t M = y->dims[0], N = y->dims[1], K = ta ? a->dims[0] : a->dims[1];
    ev_bcast bc;
    if (c) ev_bcast_init(&bc, y, &c, 1);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            mc_real s = 0;
            for (int64_t q = 0; q < K; q++)
                s += a->f[ta ? q * M + m : m * K + q] * b->f[tb ? n * K + q : q * N + n];
            mc_real v = alpha * s;
            if (c) {
                int64_t off;
                ev_bcast_offsets(&bc, m * N + n, &off);
                v += beta * c->f[off];
            }
            y->f[m * N + n] = v;
        }
    return true;
}

typedef enum { B_ADD, B_SUB, B_MUL, B_DIV, B_EQ, B_LT, B_GT, B_LE } binop;

static bool binary(const mc_kernel_ctx *k, binop op) {
    const mc_tensor *a = k->in[0], *b = k->in[1];
    mc_tensor *y = &k->out[0];
    ev_bcast bc;
    ev_bcast_init(&bc, y, k->in, 2);
    for (int64_t e = 0; e < y->numel; e++) {
        int64_t o[2];
        ev_bcast_offsets(&bc, e, o);
        if (a->f) {
            mc_real x = a->f[o[0]], z = b->f[o[1]];
            switch (op) {
            case B_ADD: y->f[e] = x + z; break;
            case B_SUB: y->f[e] = x - z; break;
            case B_MUL: y->f[e] = x * z; break;
            case B_DIV: y->f[e] = x / z; break;
            case B_EQ: y->i[e] = x == z; break;
            case B_LT: y->i[e] = x < z; break;
            case B_GT: y->i[e] = x > z; break;
            case B_LE: y->i[e] = x <= z; break;
            }
            continue;
        }
        int64_t x = a->i[o[0]], z = b->i[o[1]];
        switch (op) {
        case B_ADD: y->i[e] = (int64_t)((uint64_t)x + (uint64_t)z); break;
        case B_SUB: y->i[e] = (int64_t)((uint64_t)x - (uint64_t)z); break;
        case B_MUL: y->i[e] = (int64_t)((uint64_t)x * (uint64_t)z); break;
        case B_DIV:
            if (z == 0) return ev_fail(k, "integer division by zero at element %lld", (long long)e);
            if (x == INT64_MIN && z == -1)
                return ev_fail(k, "integer division overflows at element %lld", (long long)e);
            y->i[e] = x / z;
            break;
        case B_EQ: y->i[e] = x == z; break;
        case B_LT: y->i[e] = x < z; break;
        case B_GT: y->i[e] = x > z; break;
        case B_LE: y->i[e] = x <= z; break;
        }
        if (y->dt == MC_DT_I32) y->i[e] = (int32_t)y->i[e];
    }
    return true;
}
bool mc_interp_ADD(const mc_kernel_ctx *k) {
    return binary(k, B_ADD);
}
bool mc_interp_SUB(const mc_kernel_ctx *k) {
    return binary(k, B_SUB);
}
bool mc_interp_MUL(const mc_kernel_ctx *k) {
    return binary(k, B_MUL);
}
bool mc_interp_DIV(const mc_kernel_ctx *k) {
    return binary(k, B_DIV);
}
static mc_real real_at(const mc_tensor *t, int64_t i) {
    return t->f ? t->f[i] : (mc_real)t->i[i];
}

/* Pow over any numeric base and exponent: the real power, stored in the base's dtype; an
 * integer one truncated toward zero and saturated (NaN: 0), as the kernel does. */
bool mc_interp_POW(const mc_kernel_ctx *k) {
    const mc_tensor *a = k->in[0], *b = k->in[1];
    mc_tensor *y = &k->out[0];
    ev_bcast bc;
    ev_bcast_init(&bc, y, k->in, 2);
    for (int64_t e = 0; e < y->numel; e++) {
        int64_t o[2];
        ev_bcast_offsets(&bc, e, o);
        mc_real v = ev_pow(real_at(a, o[0]), real_at(b, o[1]));
        if (y->f) {
            y->f[e] = v;
            continue;
        }
        double lim = y->dt == MC_DT_I32 ? 2147483647.0 : 9223372036854775807.0;
        y->i[e] = v != v ? 0 : v >= lim ? (int64_t)lim : v <= -lim ? -(int64_t)lim - 1 : (int64_t)v;
    }
    return true;
}
bool mc_interp_EQUAL(const mc_kernel_ctx *k) {
    return binary(k, B_EQ);
}
bool mc_interp_LESS(const mc_kernel_ctx *k) {
    return binary(k, B_LT);
}
bool mc_interp_GREATER(const mc_kernel_ctx *k) {
    return binary(k, B_GT);
}
bool mc_interp_LESS_OR_EQUAL(const mc_kernel_ctx *k) {
    return binary(k, B_LE);
}

static mc_real sigmoid(mc_real x) {
    return EV_C(1.0) / (EV_C(1.0) + ev_exp(-x));
}

typedef enum {
    U_NEG,
    U_SQRT,
    U_EXP,
    U_LOG,
    U_RELU,
    U_GELU,
    U_GELU_TANH,
    U_SIGMOID,
    U_TANH,
    U_SILU,
    U_ABS,
    U_RECIPROCAL,
    U_ERF
} unop;

static mc_real apply_unary(unop op, mc_real x) {
    switch (op) {
    case U_NEG: return -x;
    case U_SQRT: return ev_sqrt(x);
    case U_EXP: return ev_exp(x);
    case U_LOG: return ev_log(x);
    case U_RELU: return x > 0 ? x : 0;
    case U_GELU: return EV_C(0.5) * x * (EV_C(1.0) + ev_erf(x * EV_C(0.70710678118654752)));
    case U_GELU_TANH:
        return EV_C(0.5) * x *
               (EV_C(1.0) + ev_tanh(EV_C(0.7978845608028654) * (x + EV_C(0.044715) * x * x * x)));
    case U_SIGMOID: return sigmoid(x);
    case U_TANH: return ev_tanh(x);
    case U_SILU: return x * sigmoid(x);
    case U_ABS: return x < 0 ? -x : x;
    case U_RECIPROCAL: return EV_C(1.0) / x;
    case U_ERF: return ev_erf(x);
    }
    return x;
}

static bool unary(const mc_kernel_ctx *k, unop op) {
    const mc_tensor *x = k->in[0];
    mc_tensor *y = &k->out[0];
    if (!x->f) { /* Neg or Abs of an integer tensor: wraps at the dtype's minimum */
        for (int64_t e = 0; e < y->numel; e++) {
            int64_t v = op == U_ABS && x->i[e] >= 0 ? x->i[e] : (int64_t)(0 - (uint64_t)x->i[e]);
            y->i[e] = y->dt == MC_DT_I32 ? (int32_t)v : v;
        }
        return true;
    }
    for (int64_t e = 0; e < y->numel; e++)
        y->f[e] = apply_unary(op, x->f[e]);
    return true;
}
bool mc_interp_NEG(const mc_kernel_ctx *k) {
    return unary(k, U_NEG);
}
bool mc_interp_SQRT(const mc_kernel_ctx *k) {
    return unary(k, U_SQRT);
}
bool mc_interp_ABS(const mc_kernel_ctx *k) {
    return unary(k, U_ABS);
}
bool mc_interp_RECIPROCAL(const mc_kernel_ctx *k) {
    return unary(k, U_RECIPROCAL);
}
bool mc_interp_ERF(const mc_kernel_ctx *k) {
    return unary(k, U_ERF);
}
bool mc_interp_EXP(const mc_kernel_ctx *k) {
    return unary(k, U_EXP);
}
bool mc_interp_LOG(const mc_kernel_ctx *k) {
    return unary(k, U_LOG);
}
bool mc_interp_RELU(const mc_kernel_ctx *k) {
    return unary(k, U_RELU);
}
bool mc_interp_SIGMOID(const mc_kernel_ctx *k) {
    return unary(k, U_SIGMOID);
}
bool mc_interp_TANH(const mc_kernel_ctx *k) {
    return unary(k, U_TANH);
}
bool mc_interp_SILU(const mc_kernel_ctx *k) {
    return unary(k, U_SILU);
}
bool mc_interp_GELU(const mc_kernel_ctx *k) {
    bool tanh_form = mc_attr_choice(k->n, "approximate") == MC_A_GELU_approximate_tanh;
    return unary(k, tanh_form ? U_GELU_TANH : U_GELU);
}

/* Softmax along an axis: max shift, exp, sum in ascending order. */
static bool softmax(const mc_kernel_ctx *k, bool log_form) {
    const mc_tensor *x = k->in[0];
    mc_tensor *y = &k->out[0];
    int64_t outer, n, inner;
    ev_split(x, ev_axis(mc_attr_int(k->n, "axis"), x->rank), &outer, &n, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            const mc_real *px = x->f + o * n * inner + i;
            mc_real *py = y->f + o * n * inner + i;
            mc_real mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < n; j++)
                mx = px[j * inner] > mx ? px[j * inner] : mx;
            for (int64_t j = 0; j < n; j++)
                sum += ev_exp(px[j * inner] - mx);
            for (int64_t j = 0; j < n; j++)
                py[j * inner] =
                    log_form ? px[j * inner] - mx - ev_log(sum) : ev_exp(px[j * inner] - mx) / sum;
        }
    return true;
}
bool mc_interp_SOFTMAX(const mc_kernel_ctx *k) {
    return softmax(k, false);
}
bool mc_interp_LOG_SOFTMAX(const mc_kernel_ctx *k) {
    return softmax(k, true);
}

/* LayerNormalization / RMSNormalization over the dims from `axis` to the end. */
static bool norm(const mc_kernel_ctx *k, bool rms) {
    const mc_tensor *x = k->in[0], *scale = k->in[1],
                    *bias = rms || k->n->nin < 3 ? NULL : k->in[2];
    mc_tensor *y = &k->out[0];
    int axis = ev_axis(mc_attr_int(k->n, "axis"), x->rank);
    mc_real eps = (mc_real)mc_attr_float(k->n, "epsilon");
    int64_t n = 1;
    for (int i = axis; i < x->rank; i++)
        n *= x->dims[i];
    for (int64_t r = 0; r < x->numel / n; r++) {
        const mc_real *px = x->f + r * n;
        mc_real mean = 0, var = 0;
        if (!rms) {
            for (int64_t j = 0; j < n; j++)
                mean += px[j];
            mean /= (mc_real)n;
        }
        for (int64_t j = 0; j < n; j++)
            var += (px[j] - mean) * (px[j] - mean);
        mc_real inv = EV_C(1.0) / ev_sqrt(var / (mc_real)n + eps);
        for (int64_t j = 0; j < n; j++)
            y->f[r * n + j] = (px[j] - mean) * inv * scale->f[j] + (bias ? bias->f[j] : EV_C(0.0));
        if (k->n->nout > 1) k->out[1].f[r] = mean; /* LayerNormalization's optional outputs */
        if (k->n->nout > 2) k->out[2].f[r] = inv;
    }
    return true;
}
bool mc_interp_LAYER_NORM(const mc_kernel_ctx *k) {
    return norm(k, false);
}
bool mc_interp_RMS_NORM(const mc_kernel_ctx *k) {
    return norm(k, true);
}

/* Cast: float -> int truncates toward zero (NaN and out-of-range are errors); -> bool
 * is != 0; to f16/bf16 rounds (done by the driver). */
bool mc_interp_CAST(const mc_kernel_ctx *k) {
    const mc_tensor *x = k->in[0];
    mc_tensor *y = &k->out[0];
    for (int64_t e = 0; e < y->numel; e++) {
        if (y->f) {
            y->f[e] = x->f ? x->f[e] : (mc_real)x->i[e];
        } else if (y->dt == MC_DT_BOOL) {
            y->i[e] = x->f ? x->f[e] != 0 : x->i[e] != 0;
        } else if (x->f) {
            mc_real v = x->f[e];
            double lim = y->dt == MC_DT_I32 ? 2147483648.0 : 9.2233720368547758e18;
            if (!(v > -lim && v < lim))
                return ev_fail(k, "Cast of %g at element %lld does not fit %s", v, (long long)e,
                               mc_dtype_name(y->dt));
            y->i[e] = (int64_t)v;
        } else {
            y->i[e] = y->dt == MC_DT_I32 ? (int32_t)x->i[e] : x->i[e];
        }
    }
    return true;
}

bool mc_interp_IDENTITY(const mc_kernel_ctx *k) {
    const mc_tensor *x = k->in[0];
    mc_tensor *y = &k->out[0];
    if (x->f)
        memcpy(y->f, x->f, sizeof(mc_real) * (size_t)x->numel);
    else
        memcpy(y->i, x->i, sizeof(int64_t) * (size_t)x->numel);
    return true;
}

bool mc_interp_WHERE(const mc_kernel_ctx *k) {
    mc_tensor *y = &k->out[0];
    ev_bcast bc;
    ev_bcast_init(&bc, y, k->in, 3);
    for (int64_t e = 0; e < y->numel; e++) {
        int64_t o[3];
        ev_bcast_offsets(&bc, e, o);
        const mc_tensor *src = k->in[0]->i[o[0]] ? k->in[1] : k->in[2];
        int64_t off = k->in[0]->i[o[0]] ? o[1] : o[2];
        if (y->f)
            y->f[e] = src->f[off];
        else
            y->i[e] = src->i[off];
    }
    return true;
}

static mc_real elem(const mc_tensor *t, int64_t i) {
    return t->f ? t->f[i] : (mc_real)t->i[i];
}

/* TopK along an axis; ties keep the lower index first; NaN is the smallest value. */
bool mc_interp_TOPK(const mc_kernel_ctx *k) {
    const mc_tensor *x = k->in[0];
    mc_tensor *vals = &k->out[0], *idx = &k->out[1];
    int axis = ev_axis(mc_attr_int(k->n, "axis"), x->rank);
    bool largest = mc_attr_int(k->n, "largest") != 0;
    int64_t outer, n, inner, K = vals->dims[axis];
    ev_split(x, axis, &outer, &n, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t base = o * n * inner + i;
            for (int64_t r = 0; r < K; r++) {
                int64_t best = -1;
                for (int64_t j = 0; j < n; j++) {
                    bool taken = false;
                    for (int64_t q = 0; q < r && !taken; q++)
                        taken = idx->i[o * K * inner + q * inner + i] == j;
                    if (taken) continue;
                    mc_real v = elem(x, base + j * inner),
                            bv = best < 0 ? 0 : elem(x, base + best * inner);
                    if (best < 0 || (largest ? ev_gt(v, bv) : ev_gt(bv, v))) best = j;
                }
                int64_t out = o * K * inner + r * inner + i;
                idx->i[out] = best;
                if (vals->f)
                    vals->f[out] = x->f[base + best * inner];
                else
                    vals->i[out] = x->i[base + best * inner];
            }
        }
    return true;
}
