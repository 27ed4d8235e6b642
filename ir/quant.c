/* ir/quant.c: weight storage formats, and int8 / int4 quantized weights.
 *
 * A quantized param [.., K, N] keeps its values in data (int8: signed bytes [.., K, N];
 * int4: [.., K/2, N] bytes, k even in the low nibble, unsigned 0..15), one f32 scale per
 * group of `qgroup` rows of K and column (qscale [.., K/qgroup, N]) and, for int4, an
 * optional zero point per scale (qzero, one byte; 8 when absent). Weight (k, n) is
 * q * scale for int8 and fma(q, scale, -(zero * scale)) for int4 (the offset rounded
 * once, then one rounding: exactly (q - 8) * scale without zero points), in f32: the
 * value every consumer uses (the interpreter, the kernels' widening in registers, one
 * FMA per weight), so all of them see the same weights.
 * The byte layout is runtime/moert.h's (moert_quant_layout), which files use too. */
#include "ir.h"

#include "../runtime/moert.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { INT4_DEFAULT_GROUP = 32 };

bool mc_dtype_is_quant(mc_dtype t) {
    return t == MC_DT_Q8 || t == MC_DT_Q4;
}

bool mc_weight_format_parse(const char *name, mc_weight_format *out) {
    static const mc_dtype plain[] = {MC_DT_F32, MC_DT_F16, MC_DT_BF16, MC_DT_Q8};
    *out = (mc_weight_format){0};
    for (size_t i = 0; i < sizeof plain / sizeof *plain; i++)
        if (strcmp(name, mc_dtype_name(plain[i])) == 0) {
            out->dt = plain[i];
            return true;
        }
    if (strncmp(name, "int4", 4) != 0) return false;
    const char *p = name + 4;
    out->dt = MC_DT_Q4;
    out->group = INT4_DEFAULT_GROUP;
    if (*p == ':' && p[1] >= '1' && p[1] <= '9') {
        char *end;
        long gsize = strtol(p + 1, &end, 10);
        if (gsize < MOERT_Q4_GROUP_ROWS || gsize > 1 << 20 || gsize % MOERT_Q4_GROUP_ROWS)
            return false;
        out->group = (int)gsize;
        p = end;
    }
    if (strcmp(p, ":zp") == 0) {
        out->zero = true;
        p += 3;
    }
    return *p == 0;
}

const char *mc_weight_format_str(mc_graph *g, const mc_weight_format *f) {
    if (f->dt != MC_DT_Q4) return mc_dtype_name(f->dt);
    return mc_arena_printf(g->arena, "int4:%d%s", f->group, f->zero ? ":zp" : "");
}

static int64_t dim_k(const mc_value *v) {
    return v->shape.d[v->shape.rank - 2].c;
}

static int64_t dim_n(const mc_value *v) {
    return v->shape.d[v->shape.rank - 1].c;
}

static int64_t matrices(const mc_value *v) {
    int64_t lead = 1;
    for (int i = 0; i < v->shape.rank - 2; i++)
        lead *= v->shape.d[i].c;
    return lead;
}

const char *mc_weight_format_misfit(mc_graph *g, const mc_value *v, const mc_weight_format *f) {
    if (!mc_dtype_is_quant(f->dt)) return NULL;
    if (v->shape.rank < 2) return "it is not a matrix";
    int64_t K = dim_k(v), group = f->dt == MC_DT_Q8 ? K : f->group;
    if (K == 0 || K % group != 0)
        return mc_arena_printf(g->arena,
                               "its reduction dim K = %lld is not a multiple of the group, %lld",
                               (long long)K, (long long)group);
    const float *w = v->dt == MC_DT_F32 ? v->data : NULL;
    for (int64_t i = 0; w && i < (int64_t)(v->nbytes / 4); i++)
        if (!isfinite(w[i]))
            return mc_arena_printf(g->arena, "element %lld is %g, and scales need finite weights",
                                   (long long)i, (double)w[i]);
    return NULL;
}

mc_shape mc_quant_scale_shape(const mc_value *v) {
    mc_shape s = v->shape;
    s.d[s.rank - 2] = mc_dim_const(dim_k(v) / v->qgroup);
    return s;
}

/* ---- quantizing: per group, the scale (and zero point) of least squared error ---- */

typedef struct {
    int qmin, qmax; /* the integers (q - zero) may take */
    bool zero;      /* a zero point per group (int4:zp): q in [0, 15] */
} grid;

typedef struct {
    float scale;
    int zero; /* added to round(w / scale): 0, 8 for symmetric int4, or the zero point */
    double err;
} fit;

static int clampi(long v, int lo, int hi) {
    return v < lo ? lo : v > hi ? hi : (int)v;
}

/* Round half away from zero, inline (lroundf is a call). */
static long round_half_away(float x) {
    return (long)(x + (x >= 0 ? 0.5f : -0.5f));
}

/* Rounds the group w[0..n) (stride apart) with `scale`, then refits the scale by least
 * squares to the integers chosen: the error of that pair. */
static fit try_scale(const float *w, int64_t n, int64_t stride, const grid *gr, float scale,
                     int zero) {
    double wq = 0, qq = 0;
    int lo = gr->zero ? 0 : gr->qmin, hi = gr->zero ? 15 : gr->qmax;
    for (int64_t i = 0; i < n; i++) {
        int q = clampi(round_half_away(w[i * stride] / scale) + (gr->zero ? zero : 0), lo, hi);
        double c = q - (gr->zero ? zero : 0);
        wq += w[i * stride] * c;
        qq += c * c;
    }
    float refit = qq > 0 ? (float)(wq / qq) : 0;
    fit f = {refit != 0 && isfinite(refit) ? refit : scale, zero, 0}; /* a scale divides later */
    for (int64_t i = 0; i < n; i++) {
        int q = clampi(round_half_away(w[i * stride] / scale) + (gr->zero ? zero : 0), lo, hi);
        double e = w[i * stride] - (double)(q - (gr->zero ? zero : 0)) * f.scale;
        f.err += e * e;
    }
    return f;
}

/* Candidates: the largest weight mapped near either end of the grid (symmetric), or the
 * group's range stretched over [0, 15] and shrunk a little (zero point); each refit. */
static fit fit_group(const float *w, int64_t n, int64_t stride, const grid *gr) {
    float lo = w[0], hi = w[0], big = w[0];
    for (int64_t i = 1; i < n; i++) {
        float x = w[i * stride];
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
        big = fabsf(x) > fabsf(big) ? x : big;
    }
    if (big == 0) return (fit){1.0f, gr->zero ? 8 : 0, 0}; /* all zero: any scale is exact */
    fit best = {1.0f, 0, INFINITY};
    for (int step = 0; step < 8; step++) {
        fit f;
        if (gr->zero) {
            float scale = (hi - lo) / 15.0f * (1.0f - 0.03f * (float)step);
            if (scale <= 0) scale = fabsf(big) / 7.0f;
            f = try_scale(w, n, stride, gr, scale, clampi(round_half_away(-lo / scale), 0, 15));
        } else {
            float end = step % 2 ? (float)gr->qmin : (float)gr->qmax; /* big maps near it */
            f = try_scale(w, n, stride, gr, big / (end * (1.0f - 0.04f * (float)(step / 2))), 0);
        }
        if (f.err < best.err) best = f;
    }
    return best;
}

/* Columns [n0, n1) of one matrix. */
static void quantize_columns(const float *w, int64_t K, int64_t N, int64_t n0, int64_t n1,
                             int64_t group, const grid *gr, mc_dtype dt, unsigned char *q,
                             float *scale, uint8_t *zero) {
    for (int64_t gk = 0; gk < K / group; gk++)
        for (int64_t n = n0; n < n1; n++) {
            const float *col = w + gk * group * N + n;
            fit f = fit_group(col, group, N, gr);
            scale[gk * N + n] = f.scale;
            if (zero) zero[gk * N + n] = (uint8_t)f.zero;
            int off = dt == MC_DT_Q4 ? (gr->zero ? f.zero : 8) : 0;
            for (int64_t i = 0; i < group; i++) {
                int64_t k = gk * group + i;
                int v = clampi(round_half_away(col[i * N] / f.scale) + off,
                               gr->zero ? 0 : gr->qmin + off, gr->zero ? 15 : gr->qmax + off);
                if (dt == MC_DT_Q8)
                    q[k * N + n] = (unsigned char)(int8_t)v;
                else
                    q[k / 2 * N + n] |= (unsigned char)(v << (k % 2 * 4));
            }
        }
}

typedef struct {
    const float *w;
    int64_t K, N, group, rows;
    grid gr;
    mc_dtype dt;
    unsigned char *q;
    float *scale;
    uint8_t *zero;
} quant_job;

/* Tasks write disjoint columns (int4 pairs rows of K, so a byte is one column's). */
enum { COLUMNS_PER_TASK = 64 };

/* Tasks of COLUMNS_PER_TASK columns of one matrix, in parallel on the runtime's pool. */
static void quantize_tasks(void *ctx, int64_t begin, int64_t end) {
    const quant_job *j = ctx;
    int64_t per = (j->N + COLUMNS_PER_TASK - 1) / COLUMNS_PER_TASK, groups = j->K / j->group;
    for (int64_t t = begin; t < end; t++) {
        int64_t l = t / per, n0 = t % per * COLUMNS_PER_TASK;
        int64_t n1 = n0 + COLUMNS_PER_TASK < j->N ? n0 + COLUMNS_PER_TASK : j->N;
        quantize_columns(j->w + l * j->K * j->N, j->K, j->N, n0, n1, j->group, &j->gr, j->dt,
                         j->q + l * j->rows * j->N, j->scale + l * groups * j->N,
                         j->zero ? j->zero + l * groups * j->N : NULL);
    }
}

void mc_value_quantize(mc_graph *g, mc_value *v, const mc_weight_format *f) {
    int64_t K = dim_k(v), N = dim_n(v), lead = matrices(v);
    int64_t group = f->dt == MC_DT_Q8 ? K : f->group, rows = f->dt == MC_DT_Q4 ? K / 2 : K;
    grid gr = f->dt == MC_DT_Q8 ? (grid){-127, 127, false} : (grid){-8, 7, f->zero};
    unsigned char *q = mc_arena_alloc(g->arena, (size_t)(lead * rows * N) + 1);
    float *scale = mc_arena_alloc(g->arena, sizeof(float) * (size_t)(lead * (K / group) * N + 1));
    uint8_t *zero = f->zero ? mc_arena_alloc(g->arena, (size_t)(lead * (K / group) * N) + 1) : NULL;
    memset(q, 0, (size_t)(lead * rows * N));
    /* f32, aligned: the arena's or the mapping's */
    quant_job j = {v->data, K, N, group, rows, gr, f->dt, q, scale, zero};
    moert_parallel_for(lead * ((N + COLUMNS_PER_TASK - 1) / COLUMNS_PER_TASK), 1, quantize_tasks,
                       &j);
    v->dt = f->dt;
    v->data = q;
    v->nbytes = (size_t)(lead * rows * N);
    v->qscale = scale;
    v->qzero = zero;
    v->qgroup = (int)group;
}

/* ---- dequantizing ---- */

static float weight_at(const mc_value *v, int64_t l, int64_t k, int64_t n) {
    int64_t K = dim_k(v), N = dim_n(v), at = (l * (K / v->qgroup) + k / v->qgroup) * N + n;
    const unsigned char *q = v->data;
    float scale = v->qscale[at];
    if (v->dt == MC_DT_Q8) return (float)(int8_t)q[(l * K + k) * N + n] * scale;
    int u = q[(l * K / 2 + k / 2) * N + n] >> (k % 2 * 4) & 15;
    float offset = -((float)(v->qzero ? v->qzero[at] : 8) * scale);
    return fmaf((float)u, scale, offset);
}

/* Every weight of v in C order, into f (floats) or else r (the interpreter's reals). */
static void dequantize_into(const mc_value *v, float *f, mc_real *r) {
    int64_t K = dim_k(v), N = dim_n(v), lead = matrices(v), i = 0;
    for (int64_t l = 0; l < lead; l++)
        for (int64_t k = 0; k < K; k++)
            for (int64_t n = 0; n < N; n++, i++) {
                float w = weight_at(v, l, k, n);
                if (f)
                    f[i] = w;
                else
                    r[i] = w;
            }
}

void mc_value_dequantize(const mc_value *v, float *out) {
    dequantize_into(v, out, NULL);
}

mc_dtype mc_value_held_dtype(const mc_value *v) {
    return mc_dtype_is_quant(v->dt) ? MC_DT_F32 : v->dt;
}

void mc_value_load(const mc_value *v, mc_tensor *t) {
    if (!mc_dtype_is_quant(v->dt)) {
        mc_tensor_load_bytes(t, v->data);
        return;
    }
    dequantize_into(v, NULL, t->f);
}
