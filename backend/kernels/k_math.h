/* backend/kernels/k_math.h: float math and element access for the kernels.
 *
 * Everything here is static inline and free of branches on the data (selects only), so
 * that a loop calling these helpers vectorizes: no libm, no calls, no float -> int
 * conversion of values that may be NaN (poison in LLVM), integer exponents come from
 * the bits of a float with a rounding "magic" added.
 *
 * Accuracy against glibc (measured on every 13th float bit pattern): mk_expf, mk_logf
 * and mk_powf <= 1 ulp (pow is computed in double and rounded once), mk_tanhf <= 2
 * ulp, mk_erff <= 3 ulp, mk_sigmoidf <= 4 ulp. The f16/bf16
 * conversions are bit-exact copies of ir/tensor.c's (round to nearest even, NaN made
 * quiet the same way).
 */
#ifndef MK_MATH_H
#define MK_MATH_H

#include <stdbool.h>
#include <stdint.h>

#include "mk.h"

typedef union {
    float f;
    uint32_t u;
    int32_t i;
} mk_fbits;
typedef union {
    double d;
    uint64_t u;
} mk_dbits;

static inline uint32_t mk_f2u(float x) {
    mk_fbits b;
    b.f = x;
    return b.u;
}
static inline float mk_u2f(uint32_t u) {
    mk_fbits b;
    b.u = u;
    return b.f;
}
static inline double mk_u2d(uint64_t u) {
    mk_dbits b;
    b.u = u;
    return b.d;
}
static inline uint64_t mk_d2u(double x) {
    mk_dbits b;
    b.d = x;
    return b.u;
}

/* sqrt without errno: __builtin_sqrtf becomes a libm call under -fmath-errno, which
 * freestanding code cannot count on and which blocks vectorization. */
static inline float mk_sqrtf(float x) {
#if defined(__has_builtin) && __has_builtin(__builtin_elementwise_sqrt)
    return __builtin_elementwise_sqrt(x);
#else
    return __builtin_sqrtf(x);
#endif
}

/* 2^n for n in [-126, 127], from the exponent bits. */
static inline float mk_pow2i(int32_t n) {
    return mk_u2f((uint32_t)(n + 127) << 23);
}

/* e^x: n = round(x / ln2) by the 1.5 * 2^23 trick, r = x - n ln2 in two parts (Cephes),
 * degree-6 polynomial, and 2^n applied in two halves so that results down to the
 * smallest subnormal and up to overflow come out right without a branch. */
static inline float mk_expf(float x) {
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    float xc = x < -104.0f ? -104.0f : x;
    xc = xc > 89.0f ? 89.0f : xc; /* NaN passes both; its bits are discarded below */
    float t = xc * 1.44269504088896341f + magic;
    int32_t n = (int32_t)(mk_f2u(t) - mk_f2u(magic));
    float fn = t - magic;
    float r = xc - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    int32_t n1 = n >> 1; /* n in [-150, 129]: both halves are normal powers of two */
    float y = p * mk_pow2i(n1) * mk_pow2i(n - n1);
    return x != x ? x + x : y;
}

/* log(x): x = m 2^e with m in [sqrt(1/2), sqrt(2)), Cephes polynomial for log(m);
 * subnormals are scaled by 2^23 first; x < 0 gives NaN, 0 gives -inf, inf gives inf. */
static inline float mk_logf(float x) {
    int sub = x < 1.17549435e-38f;
    float xs = sub ? x * 8388608.0f : x;
    uint32_t u = mk_f2u(xs);
    int32_t e = (int32_t)((u >> 23) & 0xff) - 126; /* m in [0.5, 1) */
    float m = mk_u2f((u & 0x007fffffu) | 0x3f000000u);
    int lo = m < 0.707106781186547524f;
    e = e - lo - (sub ? 23 : 0);
    m = lo ? m + m - 1.0f : m - 1.0f;
    float fe = (float)e;
    float z = m * m;
    float y = 7.0376836292e-2f;
    y = y * m - 1.1514610310e-1f;
    y = y * m + 1.1676998740e-1f;
    y = y * m - 1.2420140846e-1f;
    y = y * m + 1.4249322787e-1f;
    y = y * m - 1.6668057665e-1f;
    y = y * m + 2.0000714765e-1f;
    y = y * m - 2.4999993993e-1f;
    y = y * m + 3.3333331174e-1f;
    y = y * m * z;
    y = y + fe * -2.12194440e-4f;
    y = y - 0.5f * z;
    float r = m + y + fe * 0.693359375f;
    r = x == __builtin_inff() ? x : r;
    r = x == 0.0f ? -__builtin_inff() : r;
    return (x < 0.0f || x != x) ? __builtin_nanf("") : r;
}

/* tanh: odd polynomial below 0.625 (Cephes), 1 - 2 / (e^2|x| + 1) above, where the
 * subtraction no longer cancels; e^2|x| = inf gives exactly +-1. */
static inline float mk_tanhf(float x) {
    float a = __builtin_fabsf(x);
    float z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    float small = p * z * x + x;
    float big = 1.0f - 2.0f / (mk_expf(a + a) + 1.0f);
    big = __builtin_copysignf(big, x);
    return a < 0.625f ? small : big;
}

/* The interpreter's formula, 1 / (1 + e^-x), so results track it to e^x's error. */
static inline float mk_sigmoidf(float x) {
    return 1.0f / (1.0f + mk_expf(-x));
}

/* erf: x P(x^2) below 1; above, 1 - e^-x^2 Q(1/|x|) with Q = erfc(a) e^(a^2) fitted
 * (Chebyshev, rel 1.1e-8) around 1/a = 0.625 on [1, 4]; 1 from 4 on (erf(4) rounds
 * to 1). */
static inline float mk_erff(float x) {
    float a = __builtin_fabsf(x);
    float z = x * x;
    float p = 7.875875063e-5f;
    p = p * z - 8.016864287e-4f;
    p = p * z + 5.189087423e-3f;
    p = p * z - 2.685421201e-2f;
    p = p * z + 1.128359472e-1f;
    p = p * z - 3.761262667e-1f;
    p = p * z + 1.128379166f;
    float small = x * p;
    float ac = a < 1.0f ? 1.0f : (a > 4.0f ? 4.0f : a); /* also maps NaN to 1 */
    float u = 1.0f / ac - 0.625f;
    float q = 2.503254319e-2f;
    q = q * u - 7.090389201e-3f;
    q = q * u - 2.661022416e-2f;
    q = q * u + 4.466035464e-2f;
    q = q * u - 4.697577546e-2f;
    q = q * u + 2.325842892e-2f;
    q = q * u + 4.376821965e-2f;
    q = q * u - 1.723935044e-1f;
    q = q * u + 3.822837582e-1f;
    q = q * u + 3.059529888e-1f;
    float big = 1.0f - mk_expf(-ac * ac) * q;
    big = a >= 4.0f ? 1.0f : big;
    big = __builtin_copysignf(big, x);
    return a < 1.0f || x != x ? small : big;
}

/* ---- pow, in double: ln|a| by atanh series, e^y by a Taylor polynomial ---- */

/* ln(a) for finite a > 0 (subnormals included): a = m 2^e, m in [sqrt(1/2), sqrt(2)),
 * ln m = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172, error < 1e-13. */
static inline double mk_log_d(float a) {
    double d = (double)a;
    uint64_t u = mk_d2u(d);
    int64_t e = (int64_t)((u >> 52) & 0x7ff) - 1023;
    double m = mk_u2d((u & 0x000fffffffffffffull) | 0x3ff0000000000000ull); /* [1, 2) */
    int hi = m > 1.41421356237309505;
    m = hi ? m * 0.5 : m;
    e += hi;
    double s = (m - 1.0) / (m + 1.0), s2 = s * s;
    double p = 1.0 / 15;
    p = p * s2 + 1.0 / 13;
    p = p * s2 + 1.0 / 11;
    p = p * s2 + 1.0 / 9;
    p = p * s2 + 1.0 / 7;
    p = p * s2 + 1.0 / 5;
    p = p * s2 + 1.0 / 3;
    p = p * s2 + 1.0;
    return 2.0 * s * p + (double)e * 0.693147180559945309;
}

/* e^y for y in [-200, 200] (clamped by the caller); relative error ~1e-15. */
static inline double mk_exp_d(double y) {
    const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
    double t = y * 1.44269504088896341 + magic;
    int64_t n = (int64_t)(mk_d2u(t) - mk_d2u(magic));
    double fn = t - magic;
    double r = y - fn * 0.693147180559945286 - fn * 2.31904681384629956e-17;
    double p = 1.0 / 479001600;
    p = p * r + 1.0 / 39916800;
    p = p * r + 1.0 / 3628800;
    p = p * r + 1.0 / 362880;
    p = p * r + 1.0 / 40320;
    p = p * r + 1.0 / 5040;
    p = p * r + 1.0 / 720;
    p = p * r + 1.0 / 120;
    p = p * r + 1.0 / 24;
    p = p * r + 1.0 / 6;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    return p * mk_u2d((uint64_t)(n + 1023) << 52);
}

/* powf with C99 special cases: x^0 = 1 and 1^y = 1 (even for NaN), (-1)^+-inf = 1,
 * finite negative bases need an integer exponent (odd ones keep the sign), zero and infinite
 * bases and exponents go through ln = -+inf and the clamp. Rounded once, to float. */
__attribute__((always_inline)) static inline float mk_powf(float x, float y) {
    float a = __builtin_fabsf(x), ay = __builtin_fabsf(y);
    int yint = ay >= 16777216.0f || (float)(int32_t)(ay < 16777216.0f ? y : 0.0f) == y;
    int yodd = yint && ay < 16777216.0f && ((int32_t)(ay < 16777216.0f ? y : 0.0f) & 1);
    double l = a == 0.0f ? -1.0 / 0.0 : (a == __builtin_inff() ? 1.0 / 0.0 : mk_log_d(a));
    l = a != a ? 0.0 : l; /* keeps NaN out of the bit tricks; the result is fixed below */
    double t = (double)y * l;
    t = t != t ? 0.0 : t;
    t = t < -200.0 ? -200.0 : (t > 200.0 ? 200.0 : t);
    float r = (float)mk_exp_d(t);
    r = (x < 0.0f && yodd) ? -r : r;
    r = (x < 0.0f && x != -__builtin_inff() && !yint) ? __builtin_nanf("") : r;
    r = (x != x || y != y) ? __builtin_nanf("") : r;
    r = (a == 1.0f && ay == __builtin_inff()) ? 1.0f : r;
    r = (x == 1.0f || y == 0.0f) ? 1.0f : r;
    r = (x == 0.0f && yodd && y > 0.0f) ? x : r; /* (-0)^odd = -0 */
    r = (x == 0.0f && yodd && y < 0.0f) ? __builtin_copysignf(__builtin_inff(), x) : r;
    return r;
}

/* ---- f16 / bf16, bit-exact with ir/tensor.c ---- */

/* Round to nearest even: overflow (>= 65520 after rounding) gives inf, NaN gives the
 * quiet NaN 0x7e00, values below 2^-14 round into subnormals by a float addition. */
static inline uint16_t mk_f32_to_f16(float x) {
    uint32_t u = mk_f2u(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t au = u & 0x7fffffffu;
    uint32_t big = au > 0x7f800000u ? 0x7e00u : 0x7c00u;
    float sf = mk_u2f(au) + 0.5f; /* 0.5 = 2^-1: its ulp is the f16 subnormal step 2^-24 */
    uint32_t subn = mk_f2u(sf) - 0x3f000000u;
    uint32_t norm = (au + ((uint32_t)(15 - 127) << 23) + 0xfffu + ((au >> 13) & 1u)) >> 13;
    uint32_t h = au >= 0x47800000u ? big : (au < 0x38800000u ? subn : norm);
    return (uint16_t)(h | sign);
}

static inline float mk_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    float sub = (float)man * 5.9604644775390625e-8f; /* man * 2^-24, exact */
    uint32_t norm = ((exp + 112u) << 23) | (man << 13);
    uint32_t special = man ? 0x7fc00000u : 0x7f800000u;
    uint32_t u = exp == 0 ? mk_f2u(sub) : (exp == 31 ? special : norm);
    return mk_u2f(u | sign);
}

static inline uint16_t mk_f32_to_bf16(float x) {
    uint32_t u = mk_f2u(x);
    uint32_t nan = (u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)(nan ? (u >> 16) | 0x40u : r);
}

static inline float mk_bf16_to_f32(uint16_t h) {
    return mk_u2f((uint32_t)h << 16);
}

/* ---- element access by dtype; with a constant dt the switch folds away ---- */

static inline int64_t mk_dtsize(int64_t dt) {
    switch (dt) {
    case MK_F16:
    case MK_BF16: return 2;
    case MK_I64: return 8;
    case MK_BOOL:
    case MK_Q8:
    case MK_Q4: return 1; /* a quantized weight's values (int4: two a byte) */
    default: return 4;
    }
}

static inline int mk_isfloat(int64_t dt) {
    return dt == MK_F32 || dt == MK_F16 || dt == MK_BF16;
}

/* Element i as float: f16/bf16 widened, integers converted (as the interpreter's
 * TopK compares them). */
static inline float mk_ldf(const mk_tensor *t, int64_t i) {
    switch (t->dt) {
    case MK_F32: return ((const float *)t->p)[i];
    case MK_F16: return mk_f16_to_f32(((const uint16_t *)t->p)[i]);
    case MK_BF16: return mk_bf16_to_f32(((const uint16_t *)t->p)[i]);
    case MK_I32: return (float)((const int32_t *)t->p)[i];
    case MK_I64: return (float)((const int64_t *)t->p)[i];
    case MK_BOOL: return ((const uint8_t *)t->p)[i] != 0;
    default: return 0.0f;
    }
}

/* Stores a float, rounding to f16/bf16 like the interpreter does after every op. */
static inline void mk_stf(const mk_tensor *t, int64_t i, float v) {
    switch (t->dt) {
    case MK_F32: ((float *)t->p)[i] = v; break;
    case MK_F16: ((uint16_t *)t->p)[i] = mk_f32_to_f16(v); break;
    case MK_BF16: ((uint16_t *)t->p)[i] = mk_f32_to_bf16(v); break;
    default: break;
    }
}

/* Integer and bool elements as int64_t (bool: any non-zero byte is 1). */
static inline int64_t mk_ldi(const mk_tensor *t, int64_t i) {
    switch (t->dt) {
    case MK_I32: return ((const int32_t *)t->p)[i];
    case MK_I64: return ((const int64_t *)t->p)[i];
    case MK_BOOL: return ((const uint8_t *)t->p)[i] != 0;
    default: return 0;
    }
}

/* i32 keeps the low 32 bits, bool stores v != 0. */
static inline void mk_sti(const mk_tensor *t, int64_t i, int64_t v) {
    switch (t->dt) {
    case MK_I32: ((int32_t *)t->p)[i] = (int32_t)(uint32_t)(uint64_t)v; break;
    case MK_I64: ((int64_t *)t->p)[i] = v; break;
    case MK_BOOL: ((uint8_t *)t->p)[i] = v != 0; break;
    default: break;
    }
}

/* ---- walking an output in C order with up to three strided inputs ----
 * A plan holds the output's dims after merging and each input's element strides;
 * a cursor holds the position and the inputs' offsets. Loops take one innermost run
 * at a time (mk_run_len), so the inner loop is a plain strided loop. */

typedef struct {
    int nin;
    int64_t rank; /* >= 1 */
    int64_t dims[MK_MAX_RANK];
    int64_t st[3][MK_MAX_RANK]; /* element strides per input, 0 on broadcast dims */
} mk_plan;

typedef struct {
    int64_t idx[MK_MAX_RANK];
    int64_t off[3];
} mk_cursor;

/* Adds a dim in front of those pushed so far (plans are built innermost first):
 * size-1 dims vanish, and a dim every input walks contiguously with the previous one
 * merges into it. */
static inline void mk_plan_push(mk_plan *p, int64_t dim, const int64_t *st) {
    if (dim == 1) return;
    bool merge = p->rank > 0;
    for (int k = 0; k < p->nin && merge; k++)
        merge = p->st[k][p->rank - 1] * p->dims[p->rank - 1] == st[k];
    if (merge) {
        p->dims[p->rank - 1] *= dim;
        return;
    }
    p->dims[p->rank] = dim;
    for (int k = 0; k < p->nin; k++)
        p->st[k][p->rank] = st[k];
    p->rank++;
}

/* Reverses the pushed dims into C order; a scalar becomes one dim of 1. */
static inline void mk_plan_finish(mk_plan *p) {
    if (p->rank == 0) {
        p->dims[0] = 1;
        for (int k = 0; k < p->nin; k++)
            p->st[k][0] = 0;
        p->rank = 1;
    }
    for (int64_t a = 0, b = p->rank - 1; a < b; a++, b--) {
        int64_t t = p->dims[a];
        p->dims[a] = p->dims[b];
        p->dims[b] = t;
        for (int k = 0; k < p->nin; k++) {
            t = p->st[k][a];
            p->st[k][a] = p->st[k][b];
            p->st[k][b] = t;
        }
    }
}

/* numpy broadcasting of nin <= 3 inputs to y: inputs right-aligned, stride 0 where
 * an input's dim is 1. Same shapes, a scalar or a trailing row end up as one or two
 * dims with inner strides 0 or 1. */
static inline void mk_bcast_init(mk_plan *p, const mk_tensor *y, const mk_tensor *in, int nin) {
    int64_t run[3] = {1, 1, 1};
    p->nin = nin;
    p->rank = 0;
    for (int64_t i = y->rank - 1; i >= 0; i--) {
        int64_t st[3] = {0, 0, 0};
        for (int k = 0; k < nin; k++) {
            int64_t j = i - (y->rank - in[k].rank);
            int64_t d = j >= 0 ? in[k].dims[j] : 1;
            st[k] = d == 1 ? 0 : run[k];
            run[k] *= d;
        }
        mk_plan_push(p, y->dims[i], st);
    }
    mk_plan_finish(p);
}

static inline void mk_seek(const mk_plan *p, mk_cursor *c, int64_t flat) {
    for (int k = 0; k < p->nin; k++)
        c->off[k] = 0;
    for (int64_t i = p->rank - 1; i >= 0; i--) {
        c->idx[i] = flat % p->dims[i];
        flat /= p->dims[i];
        for (int k = 0; k < p->nin; k++)
            c->off[k] += c->idx[i] * p->st[k][i];
    }
}

/* Elements left in the current innermost row, at most `left`. */
static inline int64_t mk_run_len(const mk_plan *p, const mk_cursor *c, int64_t left) {
    int64_t n = p->dims[p->rank - 1] - c->idx[p->rank - 1];
    return n < left ? n : left;
}

static inline void mk_advance(const mk_plan *p, mk_cursor *c, int64_t n) {
    int64_t i = p->rank - 1;
    c->idx[i] += n;
    for (int k = 0; k < p->nin; k++)
        c->off[k] += n * p->st[k][i];
    for (; i > 0 && c->idx[i] == p->dims[i]; i--) {
        c->idx[i] = 0;
        c->idx[i - 1]++;
        for (int k = 0; k < p->nin; k++)
            c->off[k] += p->st[k][i - 1] - p->dims[i] * p->st[k][i];
    }
}

/* ---- the unary ops of k_std.c, shared with the fused kernels ---- */
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
} mk_unop;

/* The interpreter's formulas, with the helpers above in place of libm; contraction off so
 * that a target with FMA rounds like the interpreter's separate multiply and add. */
static inline __attribute__((always_inline)) float mk_unary(mk_unop op, float x) {
#pragma STDC FP_CONTRACT OFF
    switch (op) {
    case U_NEG: return -x;
    case U_SQRT: return mk_sqrtf(x);
    case U_EXP: return mk_expf(x);
    case U_LOG: return mk_logf(x);
    case U_RELU: return x > 0 ? x : 0;
    case U_GELU: return 0.5f * x * (1.0f + mk_erff(x * 0.70710678118654752f));
    case U_GELU_TANH:
        return 0.5f * x * (1.0f + mk_tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case U_SIGMOID: return mk_sigmoidf(x);
    case U_TANH: return mk_tanhf(x);
    case U_SILU: return x * mk_sigmoidf(x);
    case U_ABS: return x < 0 ? -x : x;
    case U_RECIPROCAL: return 1.0f / x;
    case U_ERF: return mk_erff(x);
    }
    return x;
}

#endif
