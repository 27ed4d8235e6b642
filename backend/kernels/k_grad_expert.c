/* backend/kernels/k_grad_expert.c: native kernels for the gradients of the grouped expert
 * products, moe.ExpertMatMulGrad and moe.GatherMatMulGrad (docs/autodiff.md), matching
 * the interpreter (ir/eval_grad_moe.c). f32 operands go through the micro-kernel: each
 * expert's operands are rearranged once, then slices of D of every expert run as one
 * parallel loop; 16-bit operands accumulate in f32 (scratch) and are rounded once.
 * Calling convention as k_grad_moe.c's: scratch (k_grad_moe_scratch.h) is out[nout].
 * Float contraction is off, as in the forward kernels. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../runtime/moert.h"
#include "k_gemm.h"
#include "k_grad_moe_scratch.h"
#include "k_math.h"
#include "mk.h"

#pragma STDC FP_CONTRACT OFF

static int32_t no_scratch(void) {
    return moert_fail(MOERT_ERR_INTERNAL, "moe gradient kernel: the scratch buffer is too small");
}

/* ---- moe.ExpertMatMulGrad ---- */

typedef struct {
    const mk_tensor *in, *out;
    float *acc;  /* f32 gW accumulators for 16-bit operands, else NULL */
    float *work; /* f32: the transposes of expert_grads_operands */
    int64_t D, F;
} emm_ctx;

/* <a, b> over n floats. Reassociation lets the vectorizer keep several vector
 * accumulators (strict left-to-right order would run one scalar chain, latency-bound):
 * the order is fixed by the target's vector width, not by the data or the thread. */
static float dot(const float *a, const float *b, int64_t n) {
#pragma clang fp reassociate(on)
    float s = 0;
    for (int64_t f = 0; f < n; f++)
        s += a[f] * b[f];
    return s;
}

/* f32, one expert's n rows, through the micro-kernel:
 *   gW_e    = rows^T g_out      A = rows^T, B = g_out in panels
 *   g_rows  = (W_e g_out^T)^T   A = W_e, B = g_out^T in panels (npad columns)
 * Row i of the expert is src + i*D, or src + tok[r0+i]*D when gathered through tok.
 * Each sum runs over rows (gW) or F (g_rows) in ascending order, like the interpreter.
 * The operands are rearranged once per expert (expert_grads_operands) into `work`, which
 * holds mk_grouped_grad_work_floats(n, 1, D, F) floats; slices of D then only compute. */
typedef struct {
    const float *go, *src, *We; /* g_out's first row of the expert, the rows, W[e] */
    const mk_tensor *tok;       /* NULL: rows are contiguous */
    float *gWe, *gr, *work;     /* gW[e], g_rows of the expert's first row, scratch */
    int64_t r0, n, D, F;
} expert_grads;

static int64_t whole_panels(int64_t n) {
    return (n + mk_gemm_nr() - 1) / mk_gemm_nr() * mk_gemm_nr();
}

/* Where expert_grads_operands puts rows^T [D,n], g_out in panels [n, whole_panels(F)],
 * g_out^T in panels [F, npad], and where the slices put g_rows^T [D, npad]. */
typedef struct {
    float *rT, *goP, *gTP, *cT;
    int64_t npad;
} grads_work;

static grads_work work_of(const expert_grads *x) {
    grads_work w = {.rT = x->work, .npad = whole_panels(x->n)};
    w.goP = w.rT + x->D * x->n;
    w.gTP = w.goP + x->n * whole_panels(x->F);
    w.cT = w.gTP + x->F * w.npad;
    return w;
}

enum { TB = 16 };

/* dst[c * ldd + r] = row r [c] for c < cols; rows in [rows, rows_pad) give 0. Row r is
 * base + r * lds, or base + tok[tok0 + r] * lds. TB columns at a time, so the TB
 * destination lines being filled stay in L1 while r walks (a whole column at a time
 * would touch one line per r, all in the same cache sets when ldd is 4 KiB apart).
 * Scalar on purpose: vectorized, this loop becomes gathers, several times slower. */
static void transpose_rows(const float *base, int64_t lds, const mk_tensor *tok, int64_t tok0,
                           int64_t rows, int64_t rows_pad, int64_t cols, float *dst, int64_t ldd) {
    for (int64_t c0 = 0; c0 < cols; c0 += TB) {
        int64_t c1 = c0 + TB < cols ? c0 + TB : cols;
        for (int64_t r = 0; r < rows_pad; r++) {
            const float *row = r < rows ? base + (tok ? mk_ldi(tok, tok0 + r) : r) * lds : NULL;
#pragma clang loop vectorize(disable)
            for (int64_t c = c0; c < c1; c++)
                dst[c * ldd + r] = row ? row[c] : 0.0f;
        }
    }
}

/* rows x cols (ld lds) into panels of nr columns (mk_gemm_serial_panels' B), 0-padded. */
static void to_panels(const float *src, int64_t lds, int64_t rows, int64_t cols, float *dst) {
    int64_t nr = mk_gemm_nr();
    for (int64_t c0 = 0; c0 < cols; c0 += nr, dst += rows * nr) {
        int64_t nn = cols - c0 < nr ? cols - c0 : nr;
        for (int64_t r = 0; r < rows; r++) {
            __builtin_memcpy(dst + r * nr, src + r * lds + c0, (size_t)nn * sizeof(float));
            for (int64_t j = nn; j < nr; j++)
                dst[r * nr + j] = 0.0f;
        }
    }
}

/* The operands every slice of the expert reads: rows^T, g_out and g_out^T in panels. */
static void expert_grads_operands(const expert_grads *x) {
    grads_work w = work_of(x);
    int64_t nr = mk_gemm_nr(), n = x->n, F = x->F;
    transpose_rows(x->src, x->D, x->tok, x->r0, n, n, x->D, w.rT, n);
    to_panels(x->go, F, n, F, w.goP);
    for (int64_t q = 0; q < w.npad; q += nr) /* panel q/nr holds rows [q, q + nr) of g_out */
        transpose_rows(x->go + q * F, F, NULL, 0, n - q < nr ? n - q : nr, nr, F, w.gTP + q * F,
                       nr);
}

/* How many of the expert's rows get g_rows from the panel product: whole panels, and
 * the last partial panel only when it is more than half full. The few rows past them
 * take dot products instead (about half the micro-kernel's speed), rather than a panel
 * of mostly padding: with 64-column panels, an expert of 70 rows would otherwise pay
 * for 128. */
static int64_t panel_product_rows(int64_t n) {
    int64_t nr = mk_gemm_nr(), full = n / nr * nr;
    return n - full > nr / 2 ? n : full;
}

/* Rows [d0, d1) of gW_e and of g_rows^T, then those columns of g_rows: slices share no
 * output, and each element's sum is the same whatever the slicing. */
static void expert_grads_slice(const expert_grads *x, int64_t d0, int64_t d1) {
    grads_work w = work_of(x);
    int64_t D = x->D, F = x->F, n = x->n, np = panel_product_rows(n);
    mk_gemm_serial_panels(w.rT + d0 * n, n, w.goP, x->gWe + d0 * F, F, d1 - d0, n, F);
    mk_gemm_serial_panels(x->We + d0 * F, F, w.gTP, w.cT + d0 * w.npad, w.npad, d1 - d0, F, np);
    transpose_rows(w.cT + d0 * w.npad, w.npad, NULL, 0, d1 - d0, d1 - d0, np, x->gr + d0, D);
    for (int64_t d = d0; d < d1; d++) /* W's row d stays in L1 across the rows */
        for (int64_t i = np; i < n; i++)
            x->gr[i * D + d] = dot(x->go + i * F, x->We + d * F, F);
}

/* The f32 gradients of E experts as tasks: first each expert's transposes, then slices
 * of GRAD_ROWS rows of D for every expert, so that both cores stay busy to the end
 * however unevenly the rows fell to the experts. */
enum { GRAD_ROWS = MK_ROWS_PER_TASK };

typedef struct grads_job {
    void (*get)(const struct grads_job *j, int64_t e, expert_grads *x);
    const void *ctx;
    int64_t E, D;
} grads_job;

static int64_t slices_of(const grads_job *j) {
    return (j->D + GRAD_ROWS - 1) / GRAD_ROWS;
}

static void operand_tasks(void *ctx, int64_t begin, int64_t end) {
    const grads_job *j = ctx;
    for (int64_t e = begin; e < end; e++) {
        expert_grads x;
        j->get(j, e, &x);
        expert_grads_operands(&x);
    }
}

static void slice_tasks(void *ctx, int64_t begin, int64_t end) {
    const grads_job *j = ctx;
    int64_t S = slices_of(j);
    for (int64_t t = begin; t < end; t++) {
        expert_grads x;
        j->get(j, t / S, &x);
        int64_t d0 = t % S * GRAD_ROWS;
        expert_grads_slice(&x, d0, d0 + GRAD_ROWS < j->D ? d0 + GRAD_ROWS : j->D);
    }
}

static void run_grads(const grads_job *j, bool serial) {
    int64_t tasks = j->E * slices_of(j);
    if (serial) {
        operand_tasks((void *)j, 0, j->E);
        slice_tasks((void *)j, 0, tasks);
        return;
    }
    moert_parallel_for(j->E, 1, operand_tasks, (void *)j);
    moert_parallel_for(tasks, 1, slice_tasks, (void *)j);
}

/* Expert e of ExpertMatMulGrad. */
static void emm_f32_expert(const grads_job *j, int64_t e, expert_grads *x) {
    const emm_ctx *c = j->ctx;
    int64_t D = c->D, F = c->F, r0 = mk_ldi(&c->in[2], e);
    *x = (expert_grads){(const float *)c->in[0].p + r0 * F,
                        (const float *)c->in[1].p + r0 * D,
                        (const float *)c->in[3].p + e * D * F,
                        NULL,
                        (float *)c->out[1].p + e * D * F,
                        (float *)c->out[0].p + r0 * D,
                        c->work + mk_grouped_grad_work_floats(r0, e, D, F),
                        r0,
                        mk_ldi(&c->in[2], e + 1) - r0,
                        D,
                        F};
}

/* Experts [begin, end), f16/bf16 operands: the same sums in f32, rounded once. */
static void emm_half(void *ctx, int64_t begin, int64_t end) {
    const emm_ctx *c = ctx;
    int64_t D = c->D, F = c->F;
    const mk_tensor *go = &c->in[0], *rows = &c->in[1], *W = &c->in[3];
    for (int64_t e = begin; e < end; e++) {
        float *acc = c->acc + e * D * F;
        __builtin_memset(acc, 0, sizeof(float) * (size_t)(D * F));
        for (int64_t i = mk_ldi(&c->in[2], e); i < mk_ldi(&c->in[2], e + 1); i++)
            for (int64_t d = 0; d < D; d++) {
                float s = 0, ad = mk_ldf(rows, i * D + d);
                for (int64_t f = 0; f < F; f++) {
                    float g = mk_ldf(go, i * F + f);
                    s += g * mk_ldf(W, (e * D + d) * F + f);
                    acc[d * F + f] += ad * g;
                }
                mk_stf(&c->out[0], i * D + d, s);
            }
        for (int64_t j = 0; j < D * F; j++)
            mk_stf(&c->out[1], e * D * F + j, acc[j]);
    }
}

/* in: g_out[N,F], rows[N,D], offsets[E+1], W[E,D,F] (plain)  out: g_rows[N,D], gW[E,D,F],
 * scratch (f32 gW accumulators, 16-bit operands only). Parallel over experts. */
int32_t mk_MOE_EXPERT_MATMUL_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    int64_t N = in[1].dims[0], D = in[1].dims[1], F = in[3].dims[2], E = in[2].dims[0] - 1;
    int32_t st = mk_check_offsets(&in[2], N);
    if (st) return st;
    if (in[3].layout != MK_PLAIN)
        return moert_fail(MOERT_ERR_INTERNAL, "moe.ExpertMatMulGrad: W must be stored plain");
    mk_expert_matmul_grad_scratch l =
        mk_expert_matmul_grad_scratch_of(N, E, D, F, in[1].dt != MK_F32);
    if (!mk_scratch_fits(&out[2], l.bytes)) return no_scratch();
    emm_ctx c = {in, out, mk_scratch_at(&out[2], l.acc), mk_scratch_at(&out[2], l.work), D, F};
    bool small = N * D * F < (1 << 16);
    if (in[1].dt == MK_F32)
        run_grads(&(grads_job){emm_f32_expert, &c, E, D}, small);
    else if (small)
        emm_half(&c, 0, E);
    else
        moert_parallel_for(E, 1, emm_half, &c);
    /* rows of no expert: zero, like the forward's */
    for (int64_t i = 0; i < mk_ldi(&in[2], 0) * D; i++)
        mk_stf(&out[0], i, 0.0f);
    for (int64_t i = mk_ldi(&in[2], E) * D; i < N * D; i++)
        mk_stf(&out[0], i, 0.0f);
    return MOERT_OK;
}

/* ---- moe.GatherMatMulGrad ---- */

typedef struct {
    const mk_tensor *in, *out;
    const int64_t *end, *rows, *row_e; /* t's rows: rows[end[t] .. end[t+1]); row i's expert */
    float *acc_w, *acc_x;              /* f32 accumulators (gW, gx) for 16-bit operands */
    float *work, *grows;               /* f32: GEMM scratch, and each row's g_out W^T [N,D] */
    int64_t D, F;
} gmm_ctx;

/* Expert e of GatherMatMulGrad (f32): gW[e] and its rows' g_out W^T into grows. */
static void gmm_f32_expert(const grads_job *j, int64_t e, expert_grads *x) {
    const gmm_ctx *c = j->ctx;
    int64_t D = c->D, F = c->F, r0 = mk_ldi(&c->in[3], e);
    *x = (expert_grads){(const float *)c->in[0].p + r0 * F,
                        c->in[1].p,
                        (const float *)c->in[4].p + e * D * F,
                        &c->in[2],
                        (float *)c->out[1].p + e * D * F,
                        c->grows + r0 * D,
                        c->work + mk_grouped_grad_work_floats(r0, e, D, F),
                        r0,
                        mk_ldi(&c->in[3], e + 1) - r0,
                        D,
                        F};
}

/* f32 tokens [begin, end): gx[t] = sum over t's rows, ascending, of their g_out W^T. */
static void gmm_tokens_f32(void *ctx, int64_t begin, int64_t end) {
    const gmm_ctx *c = ctx;
    for (int64_t t = begin; t < end; t++) {
        float *y = (float *)c->out[0].p + t * c->D;
        __builtin_memset(y, 0, sizeof(float) * (size_t)(c->D));
        for (int64_t j = c->end[t]; j < c->end[t + 1]; j++) {
            const float *g = c->grows + c->rows[j] * c->D;
            for (int64_t d = 0; d < c->D; d++)
                y[d] += g[d];
        }
    }
}

/* Rows go in blocks of EMM_BLOCK: gW[e] streams through the cache once per block
 * rather than once per row; per element the rows still add in ascending order. */
enum { EMM_BLOCK = 16 };

/* Rows [i0, i1) of expert e into gWe (f32 accumulators of 16-bit operands). */
static void gmm_weights_block(const gmm_ctx *c, float *gWe, int64_t i0, int64_t i1) {
    int64_t D = c->D, F = c->F;
    const mk_tensor *go = &c->in[0], *x = &c->in[1], *tok = &c->in[2];
    for (int64_t d = 0; d < D; d++) {
        float *gw = gWe + d * F;
        for (int64_t i = i0; i < i1; i++) {
            float ad = mk_ldf(x, mk_ldi(tok, i) * D + d);
            for (int64_t f = 0; f < F; f++)
                gw[f] += ad * mk_ldf(go, i * F + f);
        }
    }
}

/* Experts [begin, end), 16-bit operands (f32 ones go through run_grads): gW[e,d,:] = sum
 * over e's rows i, ascending, of x[t,d] * g_out[i] (t = row_token[i]), rounded once. */
static void gmm_weights(void *ctx, int64_t begin, int64_t end) {
    const gmm_ctx *c = ctx;
    int64_t D = c->D, F = c->F;
    const mk_tensor *off = &c->in[3];
    for (int64_t e = begin; e < end; e++) {
        float *gWe = c->acc_w + e * D * F;
        __builtin_memset(gWe, 0, sizeof(float) * (size_t)(D * F));
        int64_t i1 = mk_ldi(off, e + 1);
        for (int64_t i = mk_ldi(off, e); i < i1; i += EMM_BLOCK)
            gmm_weights_block(c, gWe, i, i + EMM_BLOCK < i1 ? i + EMM_BLOCK : i1);
        for (int64_t j = 0; j < D * F; j++)
            mk_stf(&c->out[1], e * D * F + j, gWe[j]);
    }
}

/* Tokens [begin, end), 16-bit operands: gx[t] = sum over t's rows i, ascending, of
 * g_out[i] @ W[e_i]^T, in f32, rounded once. */
static void gmm_inputs(void *ctx, int64_t begin, int64_t end) {
    const gmm_ctx *c = ctx;
    int64_t D = c->D, F = c->F;
    const mk_tensor *go = &c->in[0], *W = &c->in[4];
    for (int64_t t = begin; t < end; t++) {
        float *y = c->acc_x + t * D;
        __builtin_memset(y, 0, sizeof(float) * (size_t)(D));
        for (int64_t j = c->end[t]; j < c->end[t + 1]; j++) {
            int64_t i = c->rows[j], e = c->row_e[i];
            for (int64_t d = 0; d < D; d++) {
                float s = 0;
                for (int64_t f = 0; f < F; f++)
                    s += mk_ldf(go, i * F + f) * mk_ldf(W, (e * D + d) * F + f);
                y[d] += s;
            }
        }
        for (int64_t d = 0; d < D; d++)
            mk_stf(&c->out[0], t * D + d, y[d]);
    }
}

/* The live rows [offsets[0], offsets[E]) grouped by token, ascending, as a CSR list (t's
 * rows are rows[end[t] .. end[t+1])), and the expert of each row; fails on a row whose
 * token is outside [0, T). */
static int32_t gmm_group(const mk_tensor *tok, const mk_tensor *off, int64_t T, int64_t *end,
                         int64_t *rows, int64_t *row_e) {
    int64_t E = off->dims[0] - 1;
    for (int64_t t = 0; t <= T; t++)
        end[t] = 0;
    for (int64_t e = 0; e < E; e++)
        for (int64_t i = mk_ldi(off, e); i < mk_ldi(off, e + 1); i++) {
            int64_t t = mk_ldi(tok, i);
            if (t < 0 || t >= T)
                return moert_fail(MOERT_ERR_ARGUMENT,
                                  "row %lld reads token %lld but there are %lld tokens",
                                  (long long)i, (long long)t, (long long)T);
            row_e[i] = e;
            end[t + 1]++;
        }
    for (int64_t t = 0; t < T; t++)
        end[t + 1] += end[t];
    /* end[t] is now where t's rows start; filling moves it to where they end */
    for (int64_t i = mk_ldi(off, 0); i < mk_ldi(off, E); i++)
        rows[end[mk_ldi(tok, i)]++] = i;
    for (int64_t t = T; t > 0; t--)
        end[t] = end[t - 1];
    end[0] = 0;
    return MOERT_OK;
}

/* in: g_out[N,F], x[T,D], row_token[N], offsets[E+1], W[E,D,F] (plain)  out: gx[T,D],
 * gW[E,D,F], scratch: end[T+1], rows[N], row_e[N], and f32 accumulators for gW and gx
 * with 16-bit operands. gW parallel over experts, gx over tokens (each token's rows in
 * ascending order, so the sums do not depend on the thread count). */
int32_t mk_MOE_GATHER_MATMUL_GRAD(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    int64_t T = in[1].dims[0], D = in[1].dims[1], N = in[2].dims[0], F = in[4].dims[2],
            E = in[3].dims[0] - 1;
    int32_t st = mk_check_offsets(&in[3], N);
    if (st) return st;
    if (in[4].layout != MK_PLAIN)
        return moert_fail(MOERT_ERR_INTERNAL, "moe.GatherMatMulGrad: W must be stored plain");
    const mk_tensor *scratch = &out[2];
    bool f32 = in[1].dt == MK_F32;
    mk_gather_matmul_grad_scratch l = mk_gather_matmul_grad_scratch_of(T, N, E, D, F, !f32);
    if (!mk_scratch_fits(scratch, l.bytes)) return no_scratch();
    int64_t *end = mk_scratch_at(scratch, l.end), *rows = mk_scratch_at(scratch, l.rows),
            *row_e = mk_scratch_at(scratch, l.row_e);
    gmm_ctx c = {in,
                 out,
                 end,
                 rows,
                 row_e,
                 mk_scratch_at(scratch, l.acc_w),
                 mk_scratch_at(scratch, l.acc_x),
                 mk_scratch_at(scratch, l.work),
                 mk_scratch_at(scratch, l.grows),
                 D,
                 F};
    if ((st = gmm_group(&in[2], &in[3], T, end, rows, row_e))) return st;
    moert_task_fn tokens = f32 ? gmm_tokens_f32 : gmm_inputs;
    bool small = N * D * F < (1 << 16);
    if (f32)
        run_grads(&(grads_job){gmm_f32_expert, &c, E, D}, small);
    else if (small)
        gmm_weights(&c, 0, E);
    else
        moert_parallel_for(E, 1, gmm_weights, &c);
    if (small)
        tokens(&c, 0, T);
    else
        moert_parallel_for(T, 1, tokens, &c);
    return MOERT_OK;
}
