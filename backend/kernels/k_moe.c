/* backend/kernels/k_moe.c: moe.Dispatch, moe.Combine and the auxiliary router losses
 * (LoadBalanceLoss, ZLoss, EntropyLoss) as kernels, matching the reference interpreter
 * (ir/eval_moe.c) exactly: the same row order, the same summation order per output
 * element, libm through __builtin_*.
 *
 * Calling convention beyond mk.h: in[] holds the op's maximum number of inputs, p == NULL
 * where an optional one is omitted; scratch (laid out in k_moe_scratch.h) is out[nout].
 * Dispatch's rows and Combine's out/y may be f32, f16 or bf16 (16-bit ones as uint16);
 * Combine accumulates 16-bit outputs in f32 and rounds once at the end, as the
 * interpreter does. Everything else is f32, index tensors i32 (i64 also read). Row moves
 * run on the thread pool when there is enough data. Float contraction is off so that a
 * target with FMA rounds like the interpreter's separate multiply and add. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../runtime/moert.h"
#include "k_moe_scratch.h"
#include "mk.h"

#pragma STDC FP_CONTRACT OFF

/* ---- shared helpers ---- */

/* NaN is smaller than every number: a > b in StableOrderDesc's order. */
static inline bool gt(float a, float b) {
    if (a != a) return false;
    if (b != b) return true;
    return a > b;
}

static inline int64_t get_idx(const mk_tensor *t, int64_t i) {
    return t->dt == MK_I64 ? ((const int64_t *)t->p)[i] : ((const int32_t *)t->p)[i];
}

static inline void put_idx(const mk_tensor *t, int64_t i, int64_t v) {
    if (t->dt == MK_I64)
        ((int64_t *)t->p)[i] = v;
    else
        ((int32_t *)t->p)[i] = (int32_t)v;
}

static inline bool valid(const mk_tensor *m, int64_t t) {
    return !m->p || ((const uint8_t *)m->p)[t] != 0;
}

static inline int64_t elt_size(int64_t dt) {
    return dt == MK_F16 || dt == MK_BF16 ? 2 : 4;
}

static int32_t no_scratch(void) {
    return moert_fail(MOERT_ERR_INTERNAL, "moe kernel: the scratch buffer is too small");
}

/* Rows of this many bytes or more per call go to the thread pool. */
enum { PARALLEL_BYTES = 1 << 16, CHUNK_BYTES = 1 << 15 };

static void run_rows(int64_t n, int64_t row_bytes, moert_task_fn fn, void *ctx) {
    if (n * row_bytes < PARALLEL_BYTES) {
        fn(ctx, 0, n);
        return;
    }
    int64_t grain = CHUNK_BYTES / (row_bytes > 0 ? row_bytes : 1);
    moert_parallel_for(n, grain > 0 ? grain : 1, fn, ctx);
}

/* IEEE half and bfloat16 as in ir/tensor.c (round to nearest even; NaN made quiet). */
static inline float bits_f32(uint32_t u) {
    union {
        uint32_t u;
        float f;
    } v = {u};
    return v.f;
}

static inline uint32_t f32_bits(float f) {
    union {
        float f;
        uint32_t u;
    } v = {f};
    return v.u;
}

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0) return bits_f32(f32_bits((float)man * 0x1p-24f) | sign);
    if (exp == 31) return bits_f32((man ? 0x7fc00000u : 0x7f800000u) | sign);
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

static uint16_t f32_to_f16(float x) {
    uint32_t u = f32_bits(x);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t exp = (u >> 23) & 0xffu, man = u & 0x7fffffu;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)h;
}

static uint16_t f32_to_bf16(float x) {
    uint32_t u = f32_bits(x);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu)) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static inline float load_f(const void *p, int64_t dt, int64_t i) {
    if (dt == MK_F16) return f16_to_f32(((const uint16_t *)p)[i]);
    if (dt == MK_BF16) return bits_f32((uint32_t)((const uint16_t *)p)[i] << 16);
    return ((const float *)p)[i];
}

/* ---- moe.Dispatch ---- */

/* Every index in [-1, limit): experts (token_choice) or tokens (expert_choice). */
static int32_t check_indices(const mk_tensor *idx, bool by_expert, int64_t limit) {
    int64_t R = idx->dims[0], K = idx->dims[1];
    for (int64_t q = 0; q < R * K; q++) {
        int64_t v = get_idx(idx, q);
        if (v < -1 || v >= limit)
            return moert_fail(MOERT_ERR_ARGUMENT, "%s %lld at [%lld,%lld] is outside [-1, %lld)",
                              by_expert ? "token" : "expert", (long long)v, (long long)(q / K),
                              (long long)(q % K), (long long)limit);
    }
    return MOERT_OK;
}

/* Token choice: a counting sort by expert over q = t*K + r ascending, so an expert's rows
 * come in ascending (token, rank) order. pos[E+1] is scratch. */
static void place_token_choice(const mk_tensor *idx, const float *w, int64_t E, int64_t *pos,
                               const mk_tensor *off, const mk_tensor *row_tok, float *row_w) {
    int64_t K = idx->dims[1], Q = idx->dims[0] * K;
    for (int64_t e = 0; e <= E; e++)
        pos[e] = 0;
    for (int64_t q = 0; q < Q; q++) {
        int64_t e = get_idx(idx, q);
        if (e >= 0) pos[e + 1]++;
    }
    for (int64_t e = 0; e < E; e++)
        pos[e + 1] += pos[e];
    for (int64_t e = 0; e <= E; e++)
        put_idx(off, e, pos[e]);
    for (int64_t q = 0; q < Q; q++) {
        int64_t e = get_idx(idx, q);
        if (e < 0) continue;
        int64_t i = pos[e]++;
        put_idx(row_tok, i, q / K);
        row_w[i] = w[q];
    }
}

/* c[0..n) stably sorted by token idx[base + c] ascending (merge sort through tmp). */
static void sort_by_token(const mk_tensor *idx, int64_t base, int64_t *c, int64_t *tmp, int64_t n) {
    for (int64_t w = 1; w < n; w *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t a = lo, b = mid, o = lo;
            while (a < mid && b < hi)
                tmp[o++] = get_idx(idx, base + c[b]) < get_idx(idx, base + c[a]) ? c[b++] : c[a++];
            while (a < mid)
                tmp[o++] = c[a++];
            while (b < hi)
                tmp[o++] = c[b++];
        }
        for (int64_t i = 0; i < n; i++)
            c[i] = tmp[i];
    }
}

/* Expert choice: expert e's slots sorted by token (ties by slot), -1 slots skipped. */
static void place_expert_choice(const mk_tensor *idx, const float *w, int64_t E, int64_t *list,
                                int64_t *tmp, const mk_tensor *off, const mk_tensor *row_tok,
                                float *row_w) {
    int64_t C = idx->dims[1], i = 0;
    for (int64_t e = 0; e < E; e++) {
        put_idx(off, e, i);
        int64_t n = 0;
        for (int64_t c = 0; c < C; c++)
            if (get_idx(idx, e * C + c) >= 0) list[n++] = c;
        sort_by_token(idx, e * C, list, tmp, n);
        for (int64_t j = 0; j < n; j++, i++) {
            put_idx(row_tok, i, get_idx(idx, e * C + list[j]));
            row_w[i] = w[e * C + list[j]];
        }
    }
    put_idx(off, E, i);
}

typedef struct {
    const unsigned char *x;
    unsigned char *rows;
    const mk_tensor *row_tok;
    int64_t row_bytes;
} copy_ctx;

/* Row i = x[row_token[i]], or zeros for an unused row. */
static void copy_rows(void *ctx, int64_t begin, int64_t end) {
    const copy_ctx *c = ctx;
    for (int64_t i = begin; i < end; i++) {
        int64_t t = get_idx(c->row_tok, i);
        unsigned char *dst = c->rows + i * c->row_bytes;
        if (t >= 0)
            __builtin_memcpy(dst, c->x + t * c->row_bytes, (size_t)c->row_bytes);
        else
            __builtin_memset(dst, 0, (size_t)c->row_bytes);
    }
}

/* in: x[T,D], expert[T,K] | token[E,C], weight  out: rows[N,D] ([0,D] and unwritten
 * when materialize is 0), offsets[E+1], row_token[N], row_weight[N], scratch.
 * attrs: num_experts, source, materialize. */
int32_t mk_MOE_DISPATCH(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    int64_t E = attr[MC_A_MOE_DISPATCH_num_experts].i, T = in[0].dims[0], N = out[2].dims[0];
    bool by_expert = attr[MC_A_MOE_DISPATCH_source].i == MC_A_MOE_DISPATCH_source_expert_choice;
    int32_t st = check_indices(&in[1], by_expert, by_expert ? T : E);
    if (st != MOERT_OK) return st;
    mk_dispatch_scratch l = mk_dispatch_scratch_of(E, in[1].dims[1]);
    if (!mk_scratch_fits(&out[4], l.bytes)) return no_scratch();
    int64_t *pos = mk_scratch_at(&out[4], l.pos), *list = mk_scratch_at(&out[4], l.list),
            *tmp = mk_scratch_at(&out[4], l.tmp);
    float *row_w = out[3].p;
    for (int64_t i = 0; i < N; i++)
        put_idx(&out[2], i, -1), row_w[i] = 0;
    if (by_expert)
        place_expert_choice(&in[1], in[2].p, E, list, tmp, &out[1], &out[2], row_w);
    else
        place_token_choice(&in[1], in[2].p, E, pos, &out[1], &out[2], row_w);
    if (!attr[MC_A_MOE_DISPATCH_materialize].i) return MOERT_OK;
    copy_ctx c = {in[0].p, out[0].p, &out[2], in[0].dims[1] * elt_size(in[0].dt)};
    run_rows(N, c.row_bytes, copy_rows, &c);
    return MOERT_OK;
}

/* ---- moe.Combine ---- */

static int32_t check_offsets(const mk_tensor *off, int64_t N) {
    int64_t E = off->dims[0] - 1;
    for (int64_t e = 0; e <= E; e++) {
        int64_t o = get_idx(off, e), lo = e ? get_idx(off, e - 1) : 0;
        if (o < lo || o > N)
            return moert_fail(MOERT_ERR_ARGUMENT,
                              "offsets must rise from 0 to at most %lld, but offsets[%lld] is %lld",
                              (long long)N, (long long)e, (long long)o);
    }
    return MOERT_OK;
}

typedef struct {
    const void *src;           /* out[N,D] */
    const float *w;            /* row_weight[N] */
    void *y;                   /* y[T,D] */
    float *acc;                /* [T,D] f32 accumulators for 16-bit y, else NULL */
    const int64_t *end, *rows; /* rows of token t: rows[end[t-1] (0 for t=0) .. end[t]) */
    int64_t D, dt;
} combine_ctx;

/* y[t] = 0 + w[i] * out[i] for t's rows i, ascending: the interpreter's order. */
static void combine_tokens(void *ctx, int64_t begin, int64_t end) {
    const combine_ctx *c = ctx;
    int64_t D = c->D;
    for (int64_t t = begin; t < end; t++) {
        float *y = c->acc ? c->acc + t * D : (float *)c->y + t * D;
        for (int64_t d = 0; d < D; d++)
            y[d] = 0;
        for (int64_t j = t ? c->end[t - 1] : 0; j < c->end[t]; j++) {
            int64_t i = c->rows[j];
            float w = c->w[i];
            if (c->dt == MK_F32) {
                const float *o = (const float *)c->src + i * D;
                for (int64_t d = 0; d < D; d++)
                    y[d] += w * o[d];
            } else {
                for (int64_t d = 0; d < D; d++)
                    y[d] += w * load_f(c->src, c->dt, i * D + d);
            }
        }
        uint16_t *h = (uint16_t *)c->y + t * D;
        for (int64_t d = 0; c->acc && d < D; d++)
            h[d] = c->dt == MK_F16 ? f32_to_f16(y[d]) : f32_to_bf16(y[d]);
    }
}

/* Rows of each token, ascending, as a CSR list: t's rows are rows[end[t-1] (0 for t = 0)
 * .. end[t]); end has T+1 entries. Fails on a row whose token is past T (the first such
 * row, as the interpreter reports it). */
static int32_t group_rows(const mk_tensor *tok, int64_t nrows, int64_t T, int64_t *end,
                          int64_t *rows) {
    for (int64_t t = 0; t <= T; t++)
        end[t] = 0;
    for (int64_t i = 0; i < nrows; i++) {
        int64_t t = get_idx(tok, i);
        if (t >= T)
            return moert_fail(MOERT_ERR_ARGUMENT,
                              "row %lld belongs to token %lld but there are %lld tokens",
                              (long long)i, (long long)t, (long long)T);
        if (t >= 0) end[t + 1]++;
    }
    for (int64_t t = 1; t <= T; t++) /* end[t] = start of t */
        end[t] += end[t - 1];
    for (int64_t i = 0; i < nrows; i++) { /* ascending; afterwards end[t] = end of t */
        int64_t t = get_idx(tok, i);
        if (t >= 0) rows[end[t]++] = i;
    }
    return MOERT_OK;
}

/* in: out[N,D], row_token[N], row_weight[N], offsets[E+1], x[T,*]  out: y[T,D], scratch */
int32_t mk_MOE_COMBINE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    int64_t N = in[0].dims[0], D = in[0].dims[1], T = out[0].dims[0], dt = out[0].dt;
    int32_t st = check_offsets(&in[3], N);
    if (st != MOERT_OK) return st;
    mk_combine_scratch l = mk_combine_scratch_of(T, N, D, dt != MK_F32);
    if (!mk_scratch_fits(&out[1], l.bytes)) return no_scratch();
    int64_t *end = mk_scratch_at(&out[1], l.end), *rows = mk_scratch_at(&out[1], l.rows);
    float *acc = mk_scratch_at(&out[1], l.acc); /* NULL for an f32 y */
    st = group_rows(&in[1], get_idx(&in[3], in[3].dims[0] - 1), T, end, rows);
    if (st != MOERT_OK) return st;
    combine_ctx c = {in[0].p, in[2].p, out[0].p, acc, end, rows, D, dt};
    run_rows(T, D * 4 * (N / T + 1), combine_tokens, &c);
    return MOERT_OK;
}

/* ---- losses ---- */

typedef struct {
    const float *p;      /* probs[T,E] */
    const mk_tensor *ch; /* choice[T,K] */
    const mk_tensor *mask;
    int64_t E, K, ranks; /* ranks: K, or 1 for count = first_rank_only */
    float scale;
    float *P, *cnt; /* [E] scratch */
} lbl_ctx;

/* One scope instance (tokens [t0, t1)): scale * sum_e F_e * P_e. Per expert the sums run
 * over tokens in ascending order, as in the interpreter's expert-outer loops; counts are
 * float sums of ones so they round (past 2^24) as the interpreter's do. */
static float lbl_part(const lbl_ctx *c, int64_t t0, int64_t t1) {
    float n = 0, L = 0;
    for (int64_t t = t0; t < t1; t++)
        n += valid(c->mask, t);
    if (n == 0) return 0;
    for (int64_t e = 0; e < c->E; e++)
        c->P[e] = 0, c->cnt[e] = 0;
    for (int64_t t = t0; t < t1; t++) {
        if (!valid(c->mask, t)) continue;
        for (int64_t e = 0; e < c->E; e++)
            c->P[e] += c->p[t * c->E + e];
        for (int64_t r = 0; r < c->ranks; r++) {
            int64_t e = get_idx(c->ch, t * c->K + r);
            if (e >= 0 && e < c->E) c->cnt[e] += 1;
        }
    }
    for (int64_t e = 0; e < c->E; e++)
        L += (c->cnt[e] / n) * (c->P[e] / n);
    return c->scale * L;
}

/* in: probs[T,E], choice[T,K], mask[T]?  out: loss[], scratch. attrs: scale (E |
 * E_over_K), count (all_ranks | first_rank_only), scope (batch | sequence), seq_len?,
 * coef. */
int32_t mk_MOE_LOAD_BALANCE_LOSS(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    int64_t T = in[0].dims[0], E = in[0].dims[1], K = in[1].dims[1], len = T;
    if (attr[MC_A_MOE_LOAD_BALANCE_LOSS_scope].i == MC_A_MOE_LOAD_BALANCE_LOSS_scope_sequence) {
        len = attr[MC_A_MOE_LOAD_BALANCE_LOSS_seq_len].i;
        if (T % len)
            return moert_fail(MOERT_ERR_ARGUMENT,
                              "%lld tokens do not split into sequences of seq_len %lld",
                              (long long)T, (long long)len);
    }
    mk_load_balance_loss_scratch l = mk_load_balance_loss_scratch_of(E);
    if (!mk_scratch_fits(&out[1], l.bytes)) return no_scratch();
    float *P = mk_scratch_at(&out[1], l.P), *cnt = mk_scratch_at(&out[1], l.cnt);
    bool first_only = attr[MC_A_MOE_LOAD_BALANCE_LOSS_count].i ==
                      MC_A_MOE_LOAD_BALANCE_LOSS_count_first_rank_only;
    bool over_k =
        attr[MC_A_MOE_LOAD_BALANCE_LOSS_scale].i == MC_A_MOE_LOAD_BALANCE_LOSS_scale_E_over_K;
    float scale = over_k ? (float)E / (float)K : (float)E;
    lbl_ctx c = {in[0].p, &in[1], &in[2], E, K, first_only ? 1 : K, scale, P, cnt};
    float sum = 0;
    for (int64_t t0 = 0; t0 < T; t0 += len)
        sum += lbl_part(&c, t0, t0 + len);
    *(float *)out[0].p = (float)attr[MC_A_MOE_LOAD_BALANCE_LOSS_coef].f * (sum / (float)(T / len));
    return MOERT_OK;
}

/* in: logits[T,E], mask[T]?  out: loss[] = coef * mean over valid tokens of lse^2. */
int32_t mk_MOE_Z_LOSS(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const float *z = in[0].p;
    int64_t T = in[0].dims[0], E = in[0].dims[1];
    float sum = 0, n = 0;
    for (int64_t t = 0; t < T; t++) {
        if (!valid(&in[1], t)) continue;
        const float *r = z + t * E;
        float mx = -__builtin_inff(), s = 0;
        for (int64_t e = 0; e < E; e++)
            mx = gt(r[e], mx) ? r[e] : mx;
        for (int64_t e = 0; e < E; e++)
            s += __builtin_expf(r[e] - mx);
        float lse = mx + __builtin_logf(s);
        sum += lse * lse;
        n += 1;
    }
    *(float *)out[0].p = n > 0 ? (float)attr[MC_A_MOE_Z_LOSS_coef].f * (sum / n) : 0;
    return MOERT_OK;
}

/* in: probs[T,E], mask[T]?  out: loss[] = coef * mean over valid tokens of the entropy
 * (0 ln 0 = 0). */
int32_t mk_MOE_ENTROPY_LOSS(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const float *p = in[0].p;
    int64_t T = in[0].dims[0], E = in[0].dims[1];
    float sum = 0, n = 0;
    for (int64_t t = 0; t < T; t++) {
        if (!valid(&in[1], t)) continue;
        float H = 0;
        for (int64_t e = 0; e < E; e++) {
            float v = p[t * E + e];
            if (v > 0) H -= v * __builtin_logf(v);
        }
        sum += H;
        n += 1;
    }
    *(float *)out[0].p = n > 0 ? (float)attr[MC_A_MOE_ENTROPY_LOSS_coef].f * (sum / n) : 0;
    return MOERT_OK;
}
