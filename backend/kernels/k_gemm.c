/* backend/kernels/k_gemm.c: MatMul, Gemm, moe.ExpertMatMul and moe.GatherMatMul over the
 * backend's register-blocked micro-kernel (mk_ukernel, emitted per target by
 * backend/gemm.c).
 *
 * A product C[M,N] = A[M,K] B[K,N] is cut into tasks of one B panel (nr columns) by up
 * to ROWS_PER_TASK rows; a run of consecutive tasks shares its panel, which stays in
 * cache while the micro-kernel walks down the rows. Tasks of all experts (or batches)
 * form one parallel loop, so uneven expert loads balance across threads.
 * Each output element sums over k in ascending order like the interpreter, with fused
 * multiply-adds: results differ from it by rounding only (relative 1e-5 for K ~ 1e3).
 * GatherMatMul's A rows are rows of x picked by row_token: the micro-kernel takes a
 * table of row pointers, so it reads them in place (the same sums in the same order as
 * ExpertMatMul over Dispatch's rows, without those rows).
 * f16 and bf16 weights (B) next to f32 activations go through the same tiles with
 * micro-kernels that widen B in registers (mk_ukernel_bf16/_f16): the same sums, in the
 * same order, as f32 weights holding the widened values; on targets with AVX512-BF16,
 * mk_ukernel_bf16 rounds A to bf16 and uses the dot-product instruction instead (mk.h).
 * A bf16 B not in panels is widened into a buffer (gather_chunk). int8 and int4 weights
 * (always in panels, with their scales: moert_quant_layout) are widened in registers by
 * mk_ukernel_q8/_q4 for tiles of few rows, one call per group of K rows, and a chunk of
 * a panel that many rows share is dequantized into a buffer once (mk_dequant_q8/_q4)
 * for the f32 micro-kernel; on targets with AVX512-VNNI every tile quantizes its A rows
 * to int8 instead, per block of A_BLOCK rows, for mk_ukernel_q8_dot/_q4_dot (integer
 * sums, quantize_rows). Other dtypes of A, transposed
 * operands and vector (rank-1) operands take a plain loop, which reads B in C order: the
 * backend packs B into panels only for uses that take the fast path (backend/gemm.c,
 * is_panel_use). */
#include "../../runtime/moert.h"
#include "k_math.h"
#include "k_gemm.h"

enum { ROWS_PER_TASK = MK_ROWS_PER_TASK, MAX_TILE = MK_MAX_MR * MK_MAX_NR, KC = 384 };

typedef mk_mat mat;
typedef mk_gemm_job gemm_job;

static int64_t cdiv(int64_t a, int64_t b) {
    return (a + b - 1) / b;
}

static int64_t tasks_of(const mat *m, int64_t nr) {
    return m->M <= 0 ? 0 : cdiv(m->N, nr) * cdiv(m->M, ROWS_PER_TASK);
}

static const float *a_row(const mat *m, int64_t r) {
    return m->A + (m->tok ? (int64_t)m->tok[r] : r) * m->lda;
}

int64_t mk_gemm_panel_cols(const mat *m, int64_t p, int64_t nr) {
    int64_t n0 = p * nr;
    return m->N - n0 < nr ? m->N - n0 : nr;
}

/* B as f32 (bdt MK_F32 only). */
static const float *b_f32(const mat *m) {
    return (const float *)m->B;
}

/* The rows of a quantized B's panel p from K row k to the end of k's group (or `stop`,
 * if sooner): where their values, the group's scales and zero points are. */
typedef struct {
    int64_t end;
    const void *values;
    const float *S;
    const uint8_t *Z;
} quant_rows;

static quant_rows quant_rows_at(const mat *m, int64_t p, int64_t k, int64_t stop, int64_t nr) {
    int64_t g = k / m->group, at = p * (m->K / m->group) + g, end = (g + 1) * m->group;
    int64_t rows = moert_quant_panel_rows((moert_dtype)m->bdt, m->K);
    int64_t row = m->bdt == MK_Q4 ? (p * rows + k) / 2 : p * rows + k; /* int4: 2 rows a byte */
    quant_rows q = {end < stop ? end : stop, (const char *)m->B + row * nr, m->S + at * nr,
                    m->Z ? m->Z + at * nr : NULL};
    return q;
}

/* The int8 dot kernels' A: mr rows of n floats each quantized to int8, symmetric, with
 * one scale per row and call (at most A_BLOCK rows of K, within a group), padded with
 * zeros to a multiple of 8. Row r's scale is its largest magnitude over 127, and
 * a = rint(a * (127 / max)) (ties to even), as tests/native/dot_kernels.py models it; a
 * block holding an infinity or NaN gets a NaN scale and zero values, so its products are
 * NaN as the interpreter's would be (or infinite). Blocks of 32 as llama.cpp's Q8_0:
 * measured on the bench's decode, blocks of 256 and 64 gave a relative error against f32
 * of 0.024 and 0.019 (int8 weights), 32 gave 0.018 at the same speed. */
enum { A_BLOCK = 32 };
typedef struct {
    int8_t q[MK_MAX_MR][A_BLOCK] __attribute__((aligned(64)));
    const int8_t *rows[MK_MAX_MR];
    float scale[MK_MAX_MR];
    int32_t sum[MK_MAX_MR];
} quant_a;

/* The largest |a| of a row's n floats, as bits: integer order is float order for
 * magnitudes, and the integer maximum vectorizes (fmaxf's NaN rule keeps it scalar). */
static uint32_t most_bits(const float *a, int64_t n) {
    uint32_t most = 0;
    for (int64_t k = 0; k < n; k++) {
        uint32_t b;
        __builtin_memcpy(&b, &a[k], sizeof b);
        b &= 0x7fffffffu;
        most = b > most ? b : most;
    }
    return most;
}

/* One row's n floats into q (zeros up to A_BLOCK); returns its scale and sets *sum. */
static inline float quantize_row(const float *a, int64_t n, int8_t *q, int32_t *sum) {
    uint32_t bits = most_bits(a, n);
    float most;
    __builtin_memcpy(&most, &bits, sizeof most);
    bool finite = bits < 0x7f800000u;
    float inv = finite && most > 0 ? 127.0f / most : 0.0f;
    int32_t s = 0;
    for (int64_t k = 0; k < n; k++) {
        int32_t v = (int32_t)__builtin_rintf(a[k] * inv);
        q[k] = (int8_t)v;
        s += v;
    }
    for (int64_t k = n; k < A_BLOCK; k++)
        q[k] = 0;
    *sum = s;
    return finite ? most / 127.0f : __builtin_nanf("");
}

static void quantize_rows(const float *const *rows, int64_t mr, int64_t n, quant_a *qa) {
    for (int64_t r = 0; r < mr; r++) {
        /* a whole block (the usual case) with its length known: full-width vectors */
        if (n == A_BLOCK)
            qa->scale[r] = quantize_row(rows[r], A_BLOCK, qa->q[r], &qa->sum[r]);
        else
            qa->scale[r] = quantize_row(rows[r], n, qa->q[r], &qa->sum[r]);
        qa->rows[r] = qa->q[r];
    }
}

/* The quantized blocks of A this thread made last, by block number along K. Consecutive
 * tasks of a thread usually take the same rows in the next panel (decoding: every panel
 * of an expert's few rows), and would quantize them again: at T = 4 that was most of the
 * time (perf). An entry holds when it was made in this GEMM (gemm_generation, which
 * mk_gemm_run advances: A's bytes change only between GEMMs) from the same row starts. */
enum { CACHED_BLOCKS = 128 };
typedef struct {
    int64_t generation, mr, n;
    const float *start[MK_MAX_MR];
    quant_a a;
} cached_block;
static _Thread_local cached_block a_cache[CACHED_BLOCKS];
static int64_t gemm_generation;

static const quant_a *quantized(const float *const *seg, int64_t mr, int64_t n, int64_t k) {
    cached_block *c = &a_cache[(k / A_BLOCK) % CACHED_BLOCKS];
    int64_t generation = __atomic_load_n(&gemm_generation, __ATOMIC_RELAXED);
    bool hit = c->generation == generation && c->mr == mr && c->n == n;
    for (int64_t i = 0; hit && i < mr; i++)
        hit = c->start[i] == seg[i];
    if (hit) return &c->a;
    quantize_rows(seg, mr, n, &c->a);
    c->generation = generation;
    c->mr = mr;
    c->n = n;
    for (int64_t i = 0; i < mr; i++)
        c->start[i] = seg[i];
    return &c->a;
}

/* Rows [k0, k0+kc) of a quantized B's panel p: one micro-kernel call per group they
 * cross, each with that group's scales (rows[] already start at k0); with the int8 dot
 * kernels, one per A_BLOCK rows of a group, A quantized for each. */
static void quant_ukernel(const mat *m, int64_t p, int64_t k0, int64_t kc, const float *const *rows,
                          int64_t mr, int64_t nr, float *C, int64_t ldc, int64_t accumulate) {
    const float *seg[MK_MAX_MR];
    bool dot = mk_gemm_int8_dot();
    for (int64_t k = k0; k < k0 + kc;) {
        int64_t stop = dot && k + A_BLOCK < k0 + kc ? k + A_BLOCK : k0 + kc;
        quant_rows q = quant_rows_at(m, p, k, stop, nr);
        for (int64_t i = 0; i < mr; i++)
            seg[i] = rows[i] + (k - k0);
        int64_t acc = accumulate || k > k0, n = q.end - k;
        if (dot) {
            const quant_a *qa = quantized(seg, mr, n, k);
            int64_t padded = (n + 3) / 4 * 4; /* int4's n is a multiple of 8 already */
            if (m->bdt == MK_Q8)
                mk_ukernel_q8_dot(padded, qa->rows, mr, q.values, nr, q.S, q.Z, C, ldc, acc,
                                  qa->scale, qa->sum);
            else
                mk_ukernel_q4_dot(n, qa->rows, mr, q.values, nr, q.S, q.Z, C, ldc, acc, qa->scale,
                                  qa->sum);
        } else if (m->bdt == MK_Q8) {
            mk_ukernel_q8(n, seg, mr, q.values, nr, q.S, q.Z, C, ldc, acc);
        } else {
            mk_ukernel_q4(n, seg, mr, q.values, nr, q.S, q.Z, C, ldc, acc);
        }
        k = q.end;
    }
}

/* The micro-kernel for B's dtype over rows [k0, k0+kc) of panel p (rows[] start at k0). */
static void ukernel(const mat *m, int64_t p, int64_t k0, int64_t kc, const float *const *rows,
                    int64_t mr, int64_t nr, float *C, int64_t ldc, int64_t accumulate) {
    if (mk_is_quant(m->bdt)) {
        quant_ukernel(m, p, k0, kc, rows, mr, nr, C, ldc, accumulate);
        return;
    }
    int64_t krows = moert_panel_rows((moert_dtype)m->bdt, m->K); /* k0 even: a bf16 pair row */
    int64_t at = m->packed ? (p * krows + k0) * nr : k0 * m->ldb + p * nr;
    int64_t ldb = m->packed ? nr : m->ldb;
    const uint16_t *h = (const uint16_t *)m->B + at;
    switch (m->bdt) {
    case MK_BF16: mk_ukernel_bf16(kc, rows, mr, h, ldb, C, ldc, accumulate); break;
    case MK_F16: mk_ukernel_f16(kc, rows, mr, h, ldb, C, ldc, accumulate); break;
    default: mk_ukernel(kc, rows, mr, b_f32(m) + at, ldb, C, ldc, accumulate); break;
    }
}

/* An unpacked B's panel that is not full: a plain loop, into tile (ld nr). */
static void edge_block(const mat *m, int64_t p, int64_t r, int64_t mr, int64_t nr, float *tile) {
    int64_t n0 = p * nr, nn = mk_gemm_panel_cols(m, p, nr);
    const mk_tensor B = {.p = (void *)m->B, .dt = m->bdt}; /* for mk_ldf's widening */
    for (int64_t i = 0; i < mr; i++) {
        const float *A = a_row(m, r + i);
        for (int64_t n = 0; n < nn; n++) {
            float s = 0;
            for (int64_t k = 0; k < m->K; k++)
                s += A[k] * mk_ldf(&B, k * m->ldb + n0 + n);
            tile[i * nr + n] = s;
        }
    }
}

/* Rows [r, r+mr) of panel p into C (ldc): the micro-kernel, or the plain edge loop. */
static void block_into(const mat *m, int64_t p, int64_t r, int64_t mr, int64_t nr, float *C,
                       int64_t ldc) {
    if (!m->packed && mk_gemm_panel_cols(m, p, nr) < nr) {
        edge_block(m, p, r, mr, nr, C);
        return;
    }
    const float *rows[MK_MAX_MR];
    for (int64_t i = 0; i < mr; i++)
        rows[i] = a_row(m, r + i);
    ukernel(m, p, 0, m->K, rows, mr, nr, C, ldc, 0);
}

/* Asks for the C lines of the next tile (up to MR rows from C, `rows` of them left)
 * before it is written: a tile of a short K (a weight gradient's K is an expert's row
 * count) spends little time per line of C, and would wait for each line read for
 * ownership. */
static void prefetch_rows(const float *C, int64_t ldc, int64_t rows, int64_t nr) {
    int64_t n = rows < mk_gemm_mr() ? rows : mk_gemm_mr();
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < nr; j += 16)
            __builtin_prefetch(C + r * ldc + j, 1);
}

/* Rows [k0, k0+kc) of a quantized B's panel p into buf as f32, one call per group they
 * cross: the weights the micro-kernels widen to. */
static void dequant_chunk(const mat *m, int64_t p, int64_t k0, int64_t kc, int64_t nr,
                          float *restrict buf) {
    for (int64_t k = k0; k < k0 + kc;) {
        quant_rows q = quant_rows_at(m, p, k, k0 + kc, nr);
        if (m->bdt == MK_Q8)
            mk_dequant_q8(q.end - k, q.values, nr, q.S, q.Z, buf + (k - k0) * nr);
        else
            mk_dequant_q4(q.end - k, q.values, nr, q.S, q.Z, buf + (k - k0) * nr);
        k = q.end;
    }
}

/* Rows [k0, k0+kc) of a plain B's full panel p into buf as f32: its rows are ldb apart,
 * and with ldb a multiple of 4 KiB (as F = 2048 is) they would all fall in the same L1
 * sets. */
static void gather_chunk(const mat *m, int64_t p, int64_t k0, int64_t kc, int64_t nr,
                         float *restrict buf) {
    for (int64_t k = 0; k < kc; k++) {
        int64_t at = (k0 + k) * m->ldb + p * nr;
        const uint16_t *h = (const uint16_t *)m->B + at;
        float *dst = buf + k * nr;
        switch (m->bdt) { /* one loop per dtype, each vectorized */
        case MK_BF16:
            for (int64_t j = 0; j < nr; j++)
                dst[j] = mk_bf16_to_f32(h[j]);
            break;
        case MK_F16:
            for (int64_t j = 0; j < nr; j++)
                dst[j] = mk_f16_to_f32(h[j]);
            break;
        default:
            for (int64_t j = 0; j < nr; j++)
                dst[j] = b_f32(m)[at + j];
            break;
        }
    }
}

/* Rows [r0, r1) of a full panel p, KC rows of B at a time, so that the chunk of the
 * panel the row tiles share stays close while they walk it (a whole panel of K = 2048
 * rows is 512 KiB). Measured on the Mixtral prefill (1 thread): chunks of 128 rows (in
 * L1, but each tile's call then loads and stores C every 128 steps) 29.0 ms; 256 to
 * 1024 rows (in L2) 27.5-28 ms; no chunks 30 ms. A packed panel's chunk is read where it
 * lies (f16/bf16 widened in registers); a plain B's is gathered into a buffer as f32
 * first, and so is a quantized one's, dequantized once for all the row tiles (rather
 * than widened and scaled again in each), unless the int8 dot kernels read it in place.
 * Chunks after the first accumulate into C:
 * each element's FMAs run in the same order, and the bits are those of one unchunked
 * walk. */
static void chunked_rows(const mat *m, int64_t p, int64_t r0, int64_t r1, int64_t nr, float *C,
                         int64_t ldc) {
    int64_t MR = mk_gemm_mr();
    float buf[KC * MK_MAX_NR] __attribute__((aligned(64)));
    const float *rows[MK_MAX_MR];
    for (int64_t k0 = 0; k0 < m->K; k0 += KC) {
        int64_t kc = m->K - k0 < KC ? m->K - k0 : KC;
        bool dequant = mk_is_quant(m->bdt) && !mk_gemm_int8_dot();
        bool buffered = !m->packed || dequant;
        if (dequant)
            dequant_chunk(m, p, k0, kc, nr, buf);
        else if (!m->packed)
            gather_chunk(m, p, k0, kc, nr, buf);
        for (int64_t r = r0; r < r1; r += MR) {
            int64_t mr = r1 - r < MR ? r1 - r : MR;
            if (k0 == 0) prefetch_rows(C + (r - r0 + MR) * ldc, ldc, r1 - r - MR, nr);
            for (int64_t i = 0; i < mr; i++)
                rows[i] = a_row(m, r + i) + k0;
            if (buffered)
                mk_ukernel(kc, rows, mr, buf, nr, C + (r - r0) * ldc, ldc, k0 > 0);
            else
                ukernel(m, p, k0, kc, rows, mr, nr, C + (r - r0) * ldc, ldc, k0 > 0);
        }
    }
}

void mk_gemm_rows(const mat *m, int64_t p, int64_t r0, int64_t r1, int64_t nr, float *C,
                  int64_t ldc) {
    int64_t MR = mk_gemm_mr(), nn = mk_gemm_panel_cols(m, p, nr);
    /* Chunks pay when the panel serves more than one tile of rows, and a packed float
     * panel's only when it is longer than a chunk. A plain bf16 B always takes them:
     * mk_ukernel_bf16 reads panels' pairs only, and the chunk is gathered as f32. */
    bool read_in_place = m->packed && !mk_is_quant(m->bdt);
    bool must_gather = !m->packed && m->bdt == MK_BF16;
    bool chunks = m->K > (read_in_place ? KC : 0) && r1 - r0 > MR;
    if (nn == nr && nr <= MK_MAX_NR && (chunks || must_gather)) {
        chunked_rows(m, p, r0, r1, nr, C, ldc);
        return;
    }
    float tile[MAX_TILE];
    for (int64_t r = r0; r < r1; r += MR) {
        int64_t mr = r1 - r < MR ? r1 - r : MR;
        float *Cr = C + (r - r0) * ldc;
        if (nn == nr) {
            prefetch_rows(Cr + MR * ldc, ldc, r1 - r - MR, nr);
            block_into(m, p, r, mr, nr, Cr, ldc);
            continue;
        }
        block_into(m, p, r, mr, nr, tile, nr);
        for (int64_t i = 0; i < mr; i++)
            for (int64_t j = 0; j < nn; j++)
                Cr[i * ldc + j] = tile[i * nr + j];
    }
}

static void panel_rows(const mat *m, int64_t p, int64_t r0, int64_t r1, int64_t nr) {
    mk_gemm_rows(m, p, r0, r1, nr, m->C + r0 * m->ldc + p * nr, m->ldc);
}

static void run_task(const gemm_job *j, int64_t t) {
    mat m;
    for (int64_t i = 0; i < j->count; i++) {
        j->get(j, i, &m);
        int64_t n = tasks_of(&m, j->nr);
        if (t >= n) {
            t -= n;
            continue;
        }
        int64_t row_blocks = cdiv(m.M, ROWS_PER_TASK), p = t / row_blocks;
        int64_t r0 = (t % row_blocks) * ROWS_PER_TASK;
        int64_t r1 = r0 + ROWS_PER_TASK < m.M ? r0 + ROWS_PER_TASK : m.M;
        if (j->rows)
            j->rows(j, i, &m, p, r0, r1);
        else
            panel_rows(&m, p, r0, r1, j->nr);
        return;
    }
}

static void gemm_tasks(void *ctx, int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; t++)
        run_task(ctx, t);
}

void mk_gemm_run(gemm_job *j) {
    int64_t total = 0;
    mat m;
    for (int64_t i = 0; i < j->count; i++) {
        j->get(j, i, &m);
        total += tasks_of(&m, j->nr);
    }
    __atomic_add_fetch(&gemm_generation, 1, __ATOMIC_RELAXED); /* before any task reads */
    moert_parallel_for(total, 1, gemm_tasks, j);
}

void mk_gemm_serial_panels(const float *A, int64_t lda, const float *Bp, float *C, int64_t ldc,
                           int64_t M, int64_t K, int64_t N) {
    int64_t nr = mk_gemm_nr();
    mat m = {.A = A,
             .B = Bp,
             .C = C,
             .M = M,
             .K = K,
             .N = N,
             .lda = lda,
             .ldb = nr,
             .ldc = ldc,
             .packed = true};
    for (int64_t p = 0; M > 0 && p < cdiv(N, nr); p++)
        panel_rows(&m, p, 0, M, nr);
}

/* ---- MatMul: batched, with numpy broadcasting of the batch dims ---- */

/* Offset, in matrices, of batch bi of operand t (batch dims right-aligned to y's). */
static int64_t batch_offset(const mk_tensor *t, const mk_tensor *y, int64_t yb, int64_t bi) {
    int64_t tb = t->rank - 2, off = 0, stride = 1;
    for (int64_t i = yb - 1; i >= 0; i--) {
        int64_t idx = bi % y->dims[i];
        bi /= y->dims[i];
        int64_t ti = i - (yb - tb);
        if (ti < 0) continue;
        if (t->dims[ti] != 1) off += idx * stride;
        stride *= t->dims[ti];
    }
    return off;
}

static void matmul_get(const gemm_job *j, int64_t bi, mat *m) {
    const mk_tensor *a = &j->in[0], *b = &j->in[1], *y = &j->out[0];
    int64_t yb = y->rank - 2, K = a->dims[a->rank - 1];
    m->M = y->dims[y->rank - 2];
    m->N = y->dims[y->rank - 1];
    m->K = K;
    m->lda = K;
    m->ldb = m->N;
    m->ldc = m->N;
    m->tok = NULL;
    m->A = (const float *)a->p + batch_offset(a, y, yb, bi) * m->M * K;
    mk_mat_weight(m, b, batch_offset(b, y, yb, bi), j->nr);
    m->C = (float *)y->p + bi * m->M * m->N;
}

/* Plain loop for vectors (rank 1 operands) and non-f32 dtypes. */
static void matmul_plain(const mk_tensor *a, const mk_tensor *b, const mk_tensor *y) {
    int64_t M = a->rank == 1 ? 1 : a->dims[a->rank - 2], K = a->dims[a->rank - 1];
    int64_t N = b->rank == 1 ? 1 : b->dims[b->rank - 1], batches = mk_numel(y) / (M * N);
    mk_tensor ya = *y, ta = *a, tb = *b; /* batch views: matrix dims dropped */
    ya.rank = y->rank - (a->rank == 1 ? 0 : 1) - (b->rank == 1 ? 0 : 1) + 2;
    ta.rank = a->rank < 2 ? 2 : a->rank;
    tb.rank = b->rank < 2 ? 2 : b->rank;
    for (int64_t bi = 0; bi < batches; bi++) {
        int64_t oa = a->rank > 2 ? batch_offset(&ta, &ya, ya.rank - 2, bi) : 0;
        int64_t ob = b->rank > 2 ? batch_offset(&tb, &ya, ya.rank - 2, bi) : 0;
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                float s = 0;
                for (int64_t q = 0; q < K; q++)
                    s += mk_ldf(a, oa * M * K + m * K + q) * mk_ldf(b, ob * K * N + q * N + n);
                mk_stf(y, bi * M * N + m * N + n, s);
            }
    }
}

int32_t mk_MATMUL(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    const mk_tensor *a = &in[0], *b = &in[1], *y = &out[0];
    if (a->dt != MK_F32 || a->rank < 2 || b->rank < 2) {
        matmul_plain(a, b, y);
        return 0;
    }
    gemm_job j = {.count = mk_numel(y) / (y->dims[y->rank - 2] * y->dims[y->rank - 1]),
                  .get = matmul_get,
                  .in = in,
                  .out = out,
                  .nr = b->layout == MK_PANELS ? b->nr : mk_gemm_nr()};
    if (j.count > 0) mk_gemm_run(&j);
    return 0;
}

/* ---- Gemm: alpha * A' B' + beta * C ---- */

static void gemm_get(const gemm_job *j, int64_t i, mat *m) {
    (void)i;
    const mk_tensor *a = &j->in[0], *y = &j->out[0];
    m->M = y->dims[0];
    m->N = y->dims[1];
    m->K = a->dims[1];
    m->lda = m->K;
    m->ldb = m->N;
    m->ldc = m->N;
    m->tok = NULL;
    m->A = a->p;
    mk_mat_weight(m, &j->in[1], 0, j->nr);
    m->C = y->p;
}

static float bias_at(const mk_tensor *c, int64_t M, int64_t N, int64_t m, int64_t n) {
    int64_t r = c->rank >= 2 && c->dims[c->rank - 2] != 1 ? m : 0;
    int64_t col = c->rank >= 1 && c->dims[c->rank - 1] != 1 ? n : 0;
    int64_t ldc = c->rank >= 1 ? c->dims[c->rank - 1] : 1;
    (void)M;
    (void)N;
    return mk_ldf(c, r * ldc + col);
}

int32_t mk_GEMM(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const mk_tensor *a = &in[0], *b = &in[1], *c = &in[2], *y = &out[0];
    float alpha = (float)attr[MC_A_GEMM_alpha].f, beta = (float)attr[MC_A_GEMM_beta].f;
    int64_t ta = attr[MC_A_GEMM_transA].i, tb = attr[MC_A_GEMM_transB].i, M = y->dims[0],
            N = y->dims[1];
    int64_t K = ta ? a->dims[0] : a->dims[1];
    bool fast = a->dt == MK_F32 && !ta && (!tb || b->layout == MK_PANELS);
    if (fast && M > 0) {
        gemm_job j = {.count = 1,
                      .get = gemm_get,
                      .in = in,
                      .out = out,
                      .nr = b->layout == MK_PANELS ? b->nr : mk_gemm_nr()};
        mk_gemm_run(&j);
    }
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            float s = 0;
            if (fast)
                s = ((const float *)y->p)[m * N + n];
            else
                for (int64_t q = 0; q < K; q++)
                    s += mk_ldf(a, ta ? q * M + m : m * K + q) *
                         mk_ldf(b, tb ? n * K + q : q * N + n);
            float v = alpha * s;
            if (c->p) v += beta * bias_at(c, M, N, m, n);
            mk_stf(y, m * N + n, v);
        }
    return 0;
}

/* ---- moe.ExpertMatMul: rows of expert e (offsets[e] .. offsets[e+1]) times W[e] ---- */

static int64_t offset_at(const mk_tensor *off, int64_t e) {
    return mk_ldi(off, e);
}

static void expert_get(const gemm_job *j, int64_t e, mat *m) {
    const mk_tensor *rows = &j->in[0], *off = &j->in[1], *W = &j->in[2];
    int64_t D = rows->dims[1], F = W->dims[2], r0 = offset_at(off, e);
    m->M = offset_at(off, e + 1) - r0;
    m->K = D;
    m->N = F;
    m->lda = D;
    m->ldb = F;
    m->ldc = F;
    m->tok = NULL;
    m->A = (const float *)rows->p + r0 * D;
    mk_mat_weight(m, W, e, j->nr);
    m->C = (float *)j->out[0].p + r0 * F;
}

int32_t mk_check_offsets(const mk_tensor *off, int64_t N) {
    int64_t E = off->dims[0] - 1;
    for (int64_t e = 0; e <= E; e++) {
        int64_t o = offset_at(off, e);
        if (o < (e ? offset_at(off, e - 1) : 0) || o > N)
            return moert_fail(MOERT_ERR_ARGUMENT,
                              "offsets must rise from 0 to at most %lld, but offsets[%lld] is %lld",
                              (long long)N, (long long)e, (long long)o);
    }
    return 0;
}

static void expert_plain(const mk_tensor *in, const mk_tensor *y, int64_t E) {
    const mk_tensor *rows = &in[0], *off = &in[1], *W = &in[2];
    int64_t D = rows->dims[1], F = W->dims[2];
    for (int64_t e = 0; e < E; e++)
        for (int64_t i = offset_at(off, e); i < offset_at(off, e + 1); i++)
            for (int64_t f = 0; f < F; f++) {
                float s = 0;
                for (int64_t d = 0; d < D; d++)
                    s += mk_ldf(rows, i * D + d) * mk_ldf(W, (e * D + d) * F + f);
                mk_stf(y, i * F + f, s);
            }
}

int32_t mk_MOE_EXPERT_MATMUL(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    const mk_tensor *rows = &in[0], *off = &in[1], *y = &out[0];
    int64_t N = rows->dims[0], F = y->dims[1], E = off->dims[0] - 1;
    int32_t st = mk_check_offsets(off, N);
    if (st) return st;
    if (rows->dt != MK_F32) {
        expert_plain(in, y, E);
    } else {
        gemm_job j = {.count = E,
                      .get = expert_get,
                      .in = in,
                      .out = out,
                      .nr = in[2].layout == MK_PANELS ? in[2].nr : mk_gemm_nr()};
        mk_gemm_run(&j);
    }
    /* Rows outside [offsets[0], offsets[E]) belong to no expert (past the last one: the
     * padding of the static bound): zero, as in the interpreter. */
    for (int64_t i = 0; i < offset_at(off, 0) * F; i++)
        mk_stf(y, i, 0.0f);
    for (int64_t i = offset_at(off, E) * F; i < N * F; i++)
        mk_stf(y, i, 0.0f);
    return 0;
}

/* ---- moe.GatherMatMul: ExpertMatMul whose row i is x[row_token[i]] ---- */

static void gather_get(const gemm_job *j, int64_t e, mat *m) {
    const mk_tensor *x = &j->in[0], *off = &j->in[2], *W = &j->in[3];
    int64_t D = x->dims[1], F = W->dims[2], r0 = offset_at(off, e);
    m->M = offset_at(off, e + 1) - r0;
    m->K = D;
    m->N = F;
    m->lda = D;
    m->ldb = F;
    m->ldc = F;
    m->tok = (const int32_t *)j->in[1].p + r0;
    m->A = x->p;
    mk_mat_weight(m, W, e, j->nr);
    m->C = (float *)j->out[0].p + r0 * F;
}

static void gather_plain(const mk_tensor *in, const mk_tensor *y, int64_t E) {
    const mk_tensor *x = &in[0], *tok = &in[1], *off = &in[2], *W = &in[3];
    int64_t D = x->dims[1], F = W->dims[2];
    for (int64_t e = 0; e < E; e++)
        for (int64_t i = offset_at(off, e); i < offset_at(off, e + 1); i++) {
            int64_t t = mk_ldi(tok, i);
            for (int64_t f = 0; f < F; f++) {
                float s = 0;
                for (int64_t d = 0; d < D; d++)
                    s += mk_ldf(x, t * D + d) * mk_ldf(W, (e * D + d) * F + f);
                mk_stf(y, i * F + f, s);
            }
        }
}

/* in: x[T,D], row_token[N] i32, offsets[E+1], W[E,D,F] (plain or panels)  out: out[N,F]. */
int32_t mk_MOE_GATHER_MATMUL(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    const mk_tensor *x = &in[0], *tok = &in[1], *off = &in[2], *y = &out[0];
    int64_t T = x->dims[0], N = tok->dims[0], F = y->dims[1], E = off->dims[0] - 1;
    int32_t st = mk_check_offsets(off, N);
    if (st) return st;
    for (int64_t i = offset_at(off, 0); i < offset_at(off, E); i++) {
        int64_t t = mk_ldi(tok, i);
        if (t < 0 || t >= T)
            return moert_fail(MOERT_ERR_ARGUMENT,
                              "row %lld reads token %lld but there are %lld tokens", (long long)i,
                              (long long)t, (long long)T);
    }
    if (x->dt != MK_F32) {
        gather_plain(in, y, E);
    } else {
        gemm_job j = {.count = E,
                      .get = gather_get,
                      .in = in,
                      .out = out,
                      .nr = in[3].layout == MK_PANELS ? in[3].nr : mk_gemm_nr()};
        mk_gemm_run(&j);
    }
    /* rows of no expert: zero, as in the interpreter */
    for (int64_t i = 0; i < offset_at(off, 0) * F; i++)
        mk_stf(y, i, 0.0f);
    for (int64_t i = offset_at(off, E) * F; i < N * F; i++)
        mk_stf(y, i, 0.0f);
    return 0;
}
