/* backend/gemm.c: the register-blocked GEMM micro-kernel, emitted as explicit vector
 * code for the target (the contract is mk_ukernel in kernels/mk.h), and the panel
 * packing of constant B operands done at compile time.
 *
 * The tile is mr rows by nr = nv vectors: mr*nv accumulators stay in registers across
 * the whole K loop (24 of AVX-512's 32 registers with 6 x 4, 12 of AVX2's and NEON's
 * 16 with 6 x 2), each step loading nv vectors of B and broadcasting one float of A
 * per row into nv FMAs: 24 FMAs for 10 loads on AVX-512, which keeps both FMA ports
 * busy where 8 x 2 (16 FMAs for 10 loads) left them waiting on loads.
 * A comes as a table of row pointers, so gathered rows (moe.GatherMatMul, FusedUp)
 * are read where they lie; a tile of fewer rows than mr runs a loop of its own.
 * mk_ukernel_bf16 and mk_ukernel_f16 are the same kernel over B stored in 16 bits: each
 * B vector is widened exactly to f32 in registers (bf16: a load of a pair of rows, then a
 * shift and a mask; f16: the target's conversion, vcvtph2ps on x86 with F16C, fcvtl on
 * AArch64), so they sum the same products in the same order as mk_ukernel over the
 * widened values. On AVX512-BF16 targets mk_ukernel_bf16 instead rounds each pair of A's
 * floats to bf16 and sums the pair's products with one vdpbf16ps per vector (mk.h). */
#include "internal.h"

#include <string.h>

typedef enum { B_F32, B_BF16, B_F16, B_Q8, B_Q4 } b_kind;
/* What a kernel computes: products of f32 A rows and B; B's rows widened to f32
 * (mk_dequant_*); products of int8 A rows and int8 / int4 B (mk_ukernel_q*_dot). */
typedef enum { U_PRODUCT, U_DEQUANT, U_INT8_DOT } u_kind;

typedef struct {
    mb_ctx *c;
    b_kind bk; /* how B is stored */
    LLVMTypeRef vec;
    LLVMValueRef fma, dot; /* dot: vdpbf16ps (bf16 B, where the target has it), vpdpbusd
                            * or sdot (the int8 dot kernels), or NULL */
    LLVMTypeRef fma_ty, dot_ty;
    LLVMValueRef fn;
    int nv; /* vectors per tile row: nr / vec_width */
    u_kind kind;
    /* quantized B: the group's scales (f32) and zero points (i32) per vector of the tile */
    LLVMValueRef scale[16], zero[16]; /* nv <= 64 / 4 */
} ukernel;

/* Parameters; the float kernels have no S and Z, only the int8 dot kernels SA and ASUM. */
enum { P_K, P_A, P_MR, P_B, P_LDB, P_S, P_Z, P_C, P_LDC, P_ACC, P_SA, P_ASUM, NUM_P };
enum { MAX_ACC = 32 };

static bool is_quant(b_kind bk) {
    return bk == B_Q8 || bk == B_Q4;
}

/* K rows per step: one load of B's vector holds a pair of bf16 rows, a block of 4 int8
 * rows or of 8 int4 rows. */
static int rows_per_step(const ukernel *u) {
    static const int rows[] = {[B_F32] = 1, [B_BF16] = 2, [B_F16] = 1, [B_Q8] = 4, [B_Q4] = 8};
    return rows[u->bk];
}

static LLVMValueRef arg(ukernel *u, int which) {
    /* mk_dequant_*(K, B, ldb, S, Z, out): out takes C's place */
    static const int dequant_params[NUM_P] = {
        [P_K] = 0, [P_B] = 1, [P_LDB] = 2, [P_S] = 3, [P_Z] = 4, [P_C] = 5};
    if (u->kind == U_DEQUANT) return LLVMGetParam(u->fn, (unsigned)dequant_params[which]);
    return LLVMGetParam(u->fn, (unsigned)(!is_quant(u->bk) && which > P_Z ? which - 2 : which));
}

static LLVMValueRef gep_f32(mb_ctx *c, LLVMValueRef base, LLVMValueRef idx) {
    return LLVMBuildGEP2(c->b, c->f32, base, &idx, 1, "");
}

static LLVMValueRef load_vec(ukernel *u, LLVMValueRef base, LLVMValueRef idx) {
    LLVMValueRef v = LLVMBuildLoad2(u->c->b, u->vec, gep_f32(u->c, base, idx), "");
    LLVMSetAlignment(v, 4);
    return v;
}

static LLVMValueRef splat(ukernel *u, LLVMValueRef s) {
    mb_ctx *c = u->c;
    LLVMValueRef one =
        LLVMBuildInsertElement(c->b, LLVMGetUndef(u->vec), s, LLVMConstInt(c->i32, 0, 0), "");
    LLVMValueRef mask = LLVMConstNull(LLVMVectorType(c->i32, (unsigned)c->t->vec_width));
    return LLVMBuildShuffleVector(c->b, one, LLVMGetUndef(u->vec), mask, "");
}

/* Offset of vector j of C's row r. */
static LLVMValueRef c_at(ukernel *u, int r, int j) {
    mb_ctx *c = u->c;
    LLVMValueRef row = LLVMBuildMul(c->b, mb_i64(c, r), arg(u, P_LDC), "");
    return LLVMBuildAdd(c->b, row, mb_i64(c, j * c->t->vec_width), "");
}

/* The rows' pointers, read from the table A[0..mr). */
static void a_rows(ukernel *u, int mr, LLVMValueRef *arow) {
    mb_ctx *c = u->c;
    for (int r = 0; r < mr; r++) {
        LLVMValueRef idx = mb_i64(c, r);
        LLVMValueRef at = LLVMBuildGEP2(c->b, c->ptr, arg(u, P_A), &idx, 1, "");
        arow[r] = LLVMBuildLoad2(c->b, c->ptr, at, "");
    }
}

/* Accumulators start from C when accumulating, from zero otherwise. */
/* C's tile when accumulating, zero otherwise. */
static LLVMValueRef c_or_zero(ukernel *u, int r, int j) {
    mb_ctx *c = u->c;
    LLVMValueRef accum = LLVMBuildICmp(c->b, LLVMIntNE, arg(u, P_ACC), mb_i64(c, 0), "");
    return LLVMBuildSelect(c->b, accum, load_vec(u, arg(u, P_C), c_at(u, r, j)),
                           LLVMConstNull(u->vec), "");
}

/* The quantized micro-kernels sum A * q over their K rows (one group) and scale once at
 * the end: C + scale * sum(A q) (int8), C + scale * sum(A u) + offset * sum(A) (int4,
 * offset = -(zero * scale), with a running sum of each A row). At T = 1 the per-weight
 * multiply or FMA was the widening's largest part. */
static bool scales_at_end(const ukernel *u) {
    return is_quant(u->bk) && u->kind == U_PRODUCT;
}

/* Scalar running sums of the A rows (int4), after the vector accumulators. */
static int row_sums(const ukernel *u, int mr) {
    return u->bk == B_Q4 && scales_at_end(u) ? mr : 0;
}

/* Accumulators start from C when accumulating, from zero otherwise (always from zero
 * when the scale comes last: C is added then); row sums from zero. */
static void init_acc(ukernel *u, int mr, LLVMValueRef *init) {
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < u->nv; j++)
            init[r * u->nv + j] = scales_at_end(u) ? LLVMConstNull(u->vec) : c_or_zero(u, r, j);
    for (int r = 0; r < row_sums(u, mr); r++)
        init[mr * u->nv + r] = LLVMConstReal(u->c->f32, 0);
}

static LLVMValueRef fma3(ukernel *u, LLVMValueRef a, LLVMValueRef b, LLVMValueRef add) {
    LLVMValueRef args[3] = {a, b, add};
    return LLVMBuildCall2(u->c->b, u->fma_ty, u->fma, args, 3, "");
}

/* The scales applied once: acc * scale (+ sum(A) * offset for int4) (+ C). */
static void scale_acc(ukernel *u, int mr, LLVMValueRef *acc) {
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < u->nv; j++) {
            LLVMValueRef base = c_or_zero(u, r, j);
            if (row_sums(u, mr)) base = fma3(u, splat(u, acc[mr * u->nv + r]), u->zero[j], base);
            acc[r * u->nv + j] = fma3(u, acc[r * u->nv + j], u->scale[j], base);
        }
}

static void store_acc(ukernel *u, int mr, LLVMValueRef *acc) {
    mb_ctx *c = u->c;
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < u->nv; j++) {
            LLVMValueRef st =
                LLVMBuildStore(c->b, acc[r * u->nv + j], gep_f32(c, arg(u, P_C), c_at(u, r, j)));
            LLVMSetAlignment(st, 4);
        }
}

/* The f32 vector of B at element idx, widened from f16 when B is stored so. */
static LLVMValueRef load_b(ukernel *u, LLVMValueRef idx) {
    mb_ctx *c = u->c;
    LLVMValueRef base = arg(u, P_B);
    if (u->bk == B_F32) return load_vec(u, base, idx);
    LLVMTypeRef el = LLVMHalfTypeInContext(c->cx);
    LLVMTypeRef vt = LLVMVectorType(el, (unsigned)c->t->vec_width);
    LLVMValueRef v = LLVMBuildLoad2(c->b, vt, LLVMBuildGEP2(c->b, el, base, &idx, 1, ""), "");
    LLVMSetAlignment(v, 2);
    return LLVMBuildFPExt(c->b, v, u->vec, "");
}

static LLVMValueRef splat_i32(mb_ctx *c, int v) {
    LLVMValueRef e[MAX_ACC];
    for (int i = 0; i < c->t->vec_width; i++)
        e[i] = LLVMConstInt(c->i32, (unsigned long long)v, 0);
    return LLVMConstVector(e, (unsigned)c->t->vec_width);
}

/* An i32 value in every lane. */
static LLVMValueRef splat_i32_value(mb_ctx *c, LLVMValueRef v) {
    LLVMTypeRef i32v = LLVMVectorType(c->i32, (unsigned)c->t->vec_width);
    LLVMValueRef one =
        LLVMBuildInsertElement(c->b, LLVMGetUndef(i32v), v, LLVMConstInt(c->i32, 0, 0), "");
    LLVMValueRef mask = LLVMConstNull(i32v);
    return LLVMBuildShuffleVector(c->b, one, LLVMGetUndef(i32v), mask, "");
}

/* Two rows of a bf16 panel from one load of their interleaved pairs (i16 element idx):
 * as bf16 pairs for vdpbf16ps in row[0], or widened to f32, row 2i in row[0] (a bf16 is
 * the high half of its f32) and row 2i+1 in row[1]. */
static void load_bf16_pair(ukernel *u, LLVMValueRef idx, LLVMValueRef row[2]) {
    mb_ctx *c = u->c;
    LLVMTypeRef i16 = LLVMInt16TypeInContext(c->cx);
    LLVMTypeRef i32v = LLVMVectorType(c->i32, (unsigned)c->t->vec_width);
    LLVMValueRef at = LLVMBuildGEP2(c->b, i16, arg(u, P_B), &idx, 1, "");
    LLVMValueRef pairs = LLVMBuildLoad2(c->b, i32v, at, "");
    LLVMSetAlignment(pairs, 2);
    if (u->dot) {
        row[0] = LLVMBuildBitCast(c->b, pairs, LLVMTypeOf(LLVMGetParam(u->dot, 2)), "");
        row[1] = NULL;
        return;
    }
    row[0] = LLVMBuildBitCast(c->b, LLVMBuildShl(c->b, pairs, splat_i32(c, 16), ""), u->vec, "");
    LLVMValueRef high = LLVMBuildAnd(c->b, pairs, splat_i32(c, (int)0xffff0000u), "");
    row[1] = LLVMBuildBitCast(c->b, high, u->vec, "");
}

/* The vec_width bytes of a quantized B at byte offset `at`. */
static LLVMValueRef load_bytes(ukernel *u, LLVMValueRef base, LLVMValueRef at) {
    mb_ctx *c = u->c;
    LLVMTypeRef bt = LLVMVectorType(c->i8, (unsigned)c->t->vec_width);
    LLVMValueRef v = LLVMBuildLoad2(c->b, bt, LLVMBuildGEP2(c->b, c->i8, base, &at, 1, ""), "");
    LLVMSetAlignment(v, 1);
    return v;
}

/* At the kernel's entry: the group's scales, and for int4 the offsets -zero * scale (the
 * zero points 8 without them), so that a weight is one FMA: fma(q, scale, offset). */
static void load_group(ukernel *u) {
    mb_ctx *c = u->c;
    LLVMTypeRef i32v = LLVMVectorType(c->i32, (unsigned)c->t->vec_width);
    LLVMValueRef Z = arg(u, P_Z);
    LLVMValueRef has_zero = LLVMBuildICmp(c->b, LLVMIntNE, Z, LLVMConstNull(c->ptr), "");
    for (int j = 0; j < u->nv; j++) {
        LLVMValueRef at = mb_i64(c, j * c->t->vec_width);
        u->scale[j] = load_vec(u, arg(u, P_S), at);
        if (u->bk != B_Q4) continue;
        /* a load only where Z is given: the branch-free select would read NULL */
        LLVMBasicBlockRef from = LLVMGetInsertBlock(c->b);
        LLVMBasicBlockRef load = LLVMAppendBasicBlockInContext(c->cx, u->fn, "zero");
        LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(c->cx, u->fn, "zeroed");
        LLVMBuildCondBr(c->b, has_zero, load, join);
        LLVMPositionBuilderAtEnd(c->b, load);
        LLVMValueRef z = LLVMBuildZExt(c->b, load_bytes(u, Z, at), i32v, "");
        LLVMBuildBr(c->b, join);
        LLVMPositionBuilderAtEnd(c->b, join);
        LLVMValueRef zero = LLVMBuildPhi(c->b, i32v, "");
        LLVMAddIncoming(zero, (LLVMValueRef[]){splat_i32(c, 8), z},
                        (LLVMBasicBlockRef[]){from, load}, 2);
        LLVMValueRef zs =
            LLVMBuildFMul(c->b, LLVMBuildSIToFP(c->b, zero, u->vec, ""), u->scale[j], "");
        u->zero[j] = LLVMBuildFNeg(c->b, zs, "");
    }
}

/* Widens the quantized values q (i32) of vector j to weights: q * scale for int8,
 * fma(q, scale, -zero * scale) for int4 (mk.h); q alone in the micro-kernels, which
 * scale their sums. */
static LLVMValueRef dequant(ukernel *u, int j, LLVMValueRef q) {
    mb_ctx *c = u->c;
    LLVMValueRef f = LLVMBuildSIToFP(c->b, q, u->vec, "");
    if (scales_at_end(u)) return f;
    if (u->bk == B_Q8) return LLVMBuildFMul(c->b, f, u->scale[j], "");
    LLVMValueRef args[3] = {f, u->scale[j], u->zero[j]};
    return LLVMBuildCall2(c->b, u->fma_ty, u->fma, args, 3, "");
}

enum { MAX_STEP = 8 }; /* K rows a step: one 4-byte block of int4 */

/* Row b (0..3) of int8 4-byte blocks: the sign-extended byte b of each lane. */
static LLVMValueRef q8_row(mb_ctx *c, LLVMValueRef blocks, int b) {
    LLVMValueRef up = b < 3 ? LLVMBuildShl(c->b, blocks, splat_i32(c, 24 - 8 * b), "") : blocks;
    return LLVMBuildAShr(c->b, up, splat_i32(c, 24), "");
}

/* Row b (0..7) of int4 4-byte blocks: rows 0..3 in the low nibbles, 4..7 in the high. */
static LLVMValueRef q4_row(mb_ctx *c, LLVMValueRef blocks, int b) {
    int shift = 8 * (b % 4) + 4 * (b / 4);
    LLVMValueRef down = shift ? LLVMBuildLShr(c->b, blocks, splat_i32(c, shift), "") : blocks;
    return LLVMBuildAnd(c->b, down, splat_i32(c, 15), "");
}

/* Where B's step at K row k starts: element k * ldb (int4: two rows a byte). */
static LLVMValueRef step_start(ukernel *u, LLVMValueRef k) {
    mb_ctx *c = u->c;
    LLVMValueRef row = u->bk == B_Q4 ? LLVMBuildLShr(c->b, k, mb_i64(c, 1), "") : k;
    return LLVMBuildMul(c->b, row, arg(u, P_LDB), "");
}

/* Vector j of 4-byte blocks of a quantized B's step starting at byte `start`. */
static LLVMValueRef load_blocks(ukernel *u, LLVMValueRef start, int j) {
    mb_ctx *c = u->c;
    LLVMTypeRef i32v = LLVMVectorType(c->i32, (unsigned)c->t->vec_width);
    LLVMValueRef at = LLVMBuildAdd(c->b, start, mb_i64(c, j * c->t->vec_width * 4), "");
    LLVMValueRef blocks =
        LLVMBuildLoad2(c->b, i32v, LLVMBuildGEP2(c->b, c->i8, arg(u, P_B), &at, 1, ""), "");
    LLVMSetAlignment(blocks, 1);
    return blocks;
}

/* The B vectors of the step's K rows from k on into bv[row][j]: one load of a pair of
 * bf16 rows, or of a 4-byte block of int8 or int4 rows (moert_quant_layout), per vector. */
static void load_b_rows(ukernel *u, LLVMValueRef k, LLVMValueRef bv[MAX_STEP][MAX_ACC]) {
    mb_ctx *c = u->c;
    LLVMValueRef start = step_start(u, k);
    for (int j = 0; j < u->nv; j++) {
        if (is_quant(u->bk)) {
            LLVMValueRef blocks = load_blocks(u, start, j);
            for (int b = 0; b < rows_per_step(u); b++)
                bv[b][j] =
                    dequant(u, j, u->bk == B_Q8 ? q8_row(c, blocks, b) : q4_row(c, blocks, b));
            continue;
        }
        int per_lane = u->bk == B_BF16 ? 2 : 1; /* elements: a bf16 pair per lane */
        LLVMValueRef at = LLVMBuildAdd(c->b, start, mb_i64(c, j * c->t->vec_width * per_lane), "");
        if (u->bk != B_BF16) {
            bv[0][j] = load_b(u, at);
            continue;
        }
        LLVMValueRef two[2];
        load_bf16_pair(u, at, two);
        bv[0][j] = two[0];
        bv[1][j] = two[1];
    }
}

/* A[k] of one row; in a partial step (the last, past K's last whole step) 0 from K on,
 * never loaded: the rows there are B's zero padding. */
static LLVMValueRef load_a(ukernel *u, LLVMValueRef arow, LLVMValueRef k, bool partial) {
    mb_ctx *c = u->c;
    if (!partial) return LLVMBuildLoad2(c->b, c->f32, gep_f32(c, arow, k), "");
    LLVMValueRef last = LLVMBuildSub(c->b, arg(u, P_K), mb_i64(c, 1), "");
    LLVMValueRef inside = LLVMBuildICmp(c->b, LLVMIntSLE, k, last, "");
    LLVMValueRef at = LLVMBuildSelect(c->b, inside, k, last, "");
    LLVMValueRef a = LLVMBuildLoad2(c->b, c->f32, gep_f32(c, arow, at), "");
    return LLVMBuildSelect(c->b, inside, a, LLVMConstReal(c->f32, 0), "");
}

/* A's floats k and k+1 of one row rounded to a bf16 pair (nearest even), broadcast to
 * every pair of a vector: vdpbf16ps's A operand. */
static LLVMValueRef a_pair(ukernel *u, LLVMValueRef arow, LLVMValueRef k, bool partial) {
    mb_ctx *c = u->c;
    LLVMTypeRef f2 = LLVMVectorType(c->f32, 2);
    LLVMValueRef two;
    if (partial) {
        LLVMValueRef k1 = LLVMBuildAdd(c->b, k, mb_i64(c, 1), "");
        LLVMValueRef a0 = load_a(u, arow, k, true), a1 = load_a(u, arow, k1, true);
        two = LLVMBuildInsertElement(c->b, LLVMGetUndef(f2), a0, LLVMConstInt(c->i32, 0, 0), "");
        two = LLVMBuildInsertElement(c->b, two, a1, LLVMConstInt(c->i32, 1, 0), "");
    } else {
        two = LLVMBuildLoad2(c->b, f2, gep_f32(c, arow, k), "");
        LLVMSetAlignment(two, 4);
    }
    LLVMTypeRef bf2 = LLVMVectorType(LLVMBFloatTypeInContext(c->cx), 2);
    LLVMValueRef bits = LLVMBuildBitCast(c->b, LLVMBuildFPTrunc(c->b, two, bf2, ""), c->i32, "");
    LLVMValueRef all = splat(u, LLVMBuildBitCast(c->b, bits, c->f32, ""));
    return LLVMBuildBitCast(c->b, all, LLVMTypeOf(LLVMGetParam(u->dot, 1)), "");
}

/* The dot-product step: one vdpbf16ps per row and vector sums A's pair into the tile. */
static void dot_step(ukernel *u, int mr, LLVMValueRef k, bool partial, LLVMValueRef *arow,
                     LLVMValueRef bv[MAX_STEP][MAX_ACC], LLVMValueRef *cur) {
    for (int r = 0; r < mr; r++) {
        LLVMValueRef a = a_pair(u, arow[r], k, partial);
        for (int j = 0; j < u->nv; j++) {
            LLVMValueRef args[3] = {cur[r * u->nv + j], a, bv[0][j]};
            cur[r * u->nv + j] = LLVMBuildCall2(u->c->b, u->dot_ty, u->dot, args, 3, "");
        }
    }
}

/* One step of K: nv B vectors per row, one broadcast of A per row of the tile and K row,
 * mr*nv FMAs per K row, in ascending k. `partial`: the last step, which K ends inside. */
static void k_step(ukernel *u, int mr, LLVMValueRef k, bool partial, LLVMValueRef *arow,
                   LLVMValueRef *acc, LLVMValueRef *next) {
    mb_ctx *c = u->c;
    LLVMValueRef bv[MAX_STEP][MAX_ACC], cur[MAX_ACC];
    int nacc = mr * u->nv, nall = nacc + row_sums(u, mr);
    load_b_rows(u, k, bv);
    memcpy(cur, acc, sizeof(LLVMValueRef) * (size_t)nall);
    if (u->dot) {
        dot_step(u, mr, k, partial, arow, bv, cur);
        memcpy(next, cur, sizeof(LLVMValueRef) * (size_t)nall);
        return;
    }
    for (int s = 0; s < rows_per_step(u); s++) {
        LLVMValueRef ks = s ? LLVMBuildAdd(c->b, k, mb_i64(c, s), "") : k;
        for (int r = 0; r < mr; r++) {
            LLVMValueRef a = load_a(u, arow[r], ks, partial);
            if (nall > nacc) cur[nacc + r] = LLVMBuildFAdd(c->b, cur[nacc + r], a, "");
            LLVMValueRef av = splat(u, a);
            for (int j = 0; j < u->nv; j++)
                cur[r * u->nv + j] = fma3(u, av, bv[s][j], cur[r * u->nv + j]);
        }
    }
    memcpy(next, cur, sizeof(LLVMValueRef) * (size_t)nall);
}

/* The rows of K past its last whole step (bf16: an odd K's last; int8: up to 3; int4 has
 * none, its groups being multiples of 8), read as a partial step: acc updated in place. */
static void partial_tail(ukernel *u, int mr, LLVMValueRef *arow, LLVMValueRef *acc, int nacc) {
    mb_ctx *c = u->c;
    LLVMValueRef K = arg(u, P_K), next[MAX_ACC];
    LLVMBasicBlockRef from = LLVMGetInsertBlock(c->b);
    LLVMBasicBlockRef tail = LLVMAppendBasicBlockInContext(c->cx, u->fn, "partial");
    LLVMBasicBlockRef join = LLVMAppendBasicBlockInContext(c->cx, u->fn, "whole");
    int step = rows_per_step(u);
    LLVMValueRef rest = LLVMBuildAnd(c->b, K, mb_i64(c, step - 1), "");
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntNE, rest, mb_i64(c, 0), ""), tail, join);
    LLVMPositionBuilderAtEnd(c->b, tail);
    k_step(u, mr, LLVMBuildAnd(c->b, K, mb_i64(c, -step), ""), true, arow, acc, next);
    LLVMBasicBlockRef tail_end = LLVMGetInsertBlock(c->b);
    LLVMBuildBr(c->b, join);
    LLVMPositionBuilderAtEnd(c->b, join);
    for (int i = 0; i < nacc; i++) {
        LLVMValueRef phi = LLVMBuildPhi(c->b, LLVMTypeOf(acc[i]), "");
        LLVMAddIncoming(phi, (LLVMValueRef[]){acc[i], next[i]},
                        (LLVMBasicBlockRef[]){from, tail_end}, 2);
        acc[i] = phi;
    }
}

/* The whole tile for exactly mr rows, from block `entry` (which it fills) to a return:
 * a partial tile runs only the FMAs of its rows, and stores only them. The loop takes K
 * rows a step (rows_per_step: K rounded down to whole steps, the rest after). */
static void emit_rows(ukernel *u, int mr, LLVMBasicBlockRef entry) {
    mb_ctx *c = u->c;
    int nacc = mr * u->nv + row_sums(u, mr); /* vector accumulators, then row sums */
    LLVMValueRef arow[MAX_ACC], init[MAX_ACC], acc[MAX_ACC], next[MAX_ACC], out[MAX_ACC];
    LLVMBasicBlockRef loop = LLVMAppendBasicBlockInContext(c->cx, u->fn, "loop");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->cx, u->fn, "done");
    LLVMPositionBuilderAtEnd(c->b, entry);
    a_rows(u, mr, arow);
    init_acc(u, mr, init);
    if (is_quant(u->bk)) load_group(u);
    entry = LLVMGetInsertBlock(c->b); /* load_group may have branched */
    int step = rows_per_step(u);
    LLVMValueRef K = LLVMBuildAnd(c->b, arg(u, P_K), mb_i64(c, -step), "");
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSGT, K, mb_i64(c, 0), ""), loop, done);

    LLVMPositionBuilderAtEnd(c->b, loop);
    LLVMValueRef k = LLVMBuildPhi(c->b, c->i64, "k");
    for (int i = 0; i < nacc; i++)
        acc[i] = LLVMBuildPhi(c->b, i < mr * u->nv ? u->vec : c->f32, "");
    k_step(u, mr, k, false, arow, acc, next);
    LLVMValueRef k1 = LLVMBuildAdd(c->b, k, mb_i64(c, step), "");
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, k1, K, ""), loop, done);
    LLVMValueRef zero = mb_i64(c, 0);
    LLVMAddIncoming(k, (LLVMValueRef[]){zero, k1}, (LLVMBasicBlockRef[]){entry, loop}, 2);
    for (int i = 0; i < nacc; i++)
        LLVMAddIncoming(acc[i], (LLVMValueRef[]){init[i], next[i]},
                        (LLVMBasicBlockRef[]){entry, loop}, 2);

    LLVMPositionBuilderAtEnd(c->b, done);
    for (int i = 0; i < nacc; i++) {
        out[i] = LLVMBuildPhi(c->b, i < mr * u->nv ? u->vec : c->f32, "");
        LLVMAddIncoming(out[i], (LLVMValueRef[]){init[i], next[i]},
                        (LLVMBasicBlockRef[]){entry, loop}, 2);
    }
    if (u->bk == B_BF16 || u->bk == B_Q8) partial_tail(u, mr, arow, out, nacc);
    if (scales_at_end(u)) scale_acc(u, mr, out);
    store_acc(u, mr, out);
    LLVMBuildRetVoid(c->b);
}

/* mk_dequant_*: the loop over K storing each widened row of B to out (nr floats a row). */
static void emit_dequant(ukernel *u) {
    mb_ctx *c = u->c;
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(c->cx, u->fn, "entry");
    LLVMBasicBlockRef loop = LLVMAppendBasicBlockInContext(c->cx, u->fn, "loop");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->cx, u->fn, "done");
    LLVMPositionBuilderAtEnd(c->b, entry);
    load_group(u);
    entry = LLVMGetInsertBlock(c->b);
    LLVMValueRef K = arg(u, P_K);
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSGT, K, mb_i64(c, 0), ""), loop, done);
    LLVMPositionBuilderAtEnd(c->b, loop);
    LLVMValueRef k = LLVMBuildPhi(c->b, c->i64, "k"), bv[MAX_STEP][MAX_ACC];
    load_b_rows(u, k, bv);
    for (int s = 0; s < rows_per_step(u); s++) {
        LLVMValueRef row =
            LLVMBuildMul(c->b, LLVMBuildAdd(c->b, k, mb_i64(c, s), ""), mb_i64(c, c->t->nr), "");
        for (int j = 0; j < u->nv; j++) {
            LLVMValueRef at = LLVMBuildAdd(c->b, row, mb_i64(c, j * c->t->vec_width), "");
            LLVMSetAlignment(LLVMBuildStore(c->b, bv[s][j], gep_f32(c, arg(u, P_C), at)), 4);
        }
    }
    LLVMValueRef k1 = LLVMBuildAdd(c->b, k, mb_i64(c, rows_per_step(u)), "");
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, k1, K, ""), loop, done);
    LLVMAddIncoming(k, (LLVMValueRef[]){mb_i64(c, 0), k1}, (LLVMBasicBlockRef[]){entry, loop}, 2);
    LLVMPositionBuilderAtEnd(c->b, done);
    LLVMBuildRetVoid(c->b);
}

/* ---- the int8 dot-product kernels (AVX512-VNNI vpdpbusd, AArch64 sdot) ---- */

/* AArch64's sdot multiplies signed bytes by signed bytes, x86's vpdpbusd unsigned by
 * signed: int8 weights are flipped to unsigned there. */
static bool signed_dot(const ukernel *u) {
    return strcmp(u->c->t->arch, "aarch64") == 0;
}

/* acc + the sums of four byte products per lane: b (B's bytes), a (A's, signed). */
static LLVMValueRef int8_dot(ukernel *u, LLVMValueRef acc, LLVMValueRef b, LLVMValueRef a) {
    mb_ctx *c = u->c;
    if (signed_dot(u)) { /* sdot takes the bytes as <16 x i8> */
        LLVMTypeRef bytes = LLVMVectorType(c->i8, (unsigned)c->t->vec_width * 4);
        b = LLVMBuildBitCast(c->b, b, bytes, "");
        a = LLVMBuildBitCast(c->b, a, bytes, "");
    }
    LLVMValueRef args[3] = {acc, b, a};
    return LLVMBuildCall2(c->b, u->dot_ty, u->dot, args, 3, "");
}

/* Four int8 of A's row at byte k, as one i32 broadcast to every lane. */
static LLVMValueRef a_quad(ukernel *u, LLVMValueRef arow, LLVMValueRef k) {
    mb_ctx *c = u->c;
    LLVMValueRef at = LLVMBuildGEP2(c->b, c->i8, arow, &k, 1, "");
    LLVMValueRef four = LLVMBuildLoad2(c->b, c->i32, at, "");
    LLVMSetAlignment(four, 1);
    return splat_i32_value(c, four);
}

/* B's blocks at step k as the dot product's B operands, ub[0] (and int4's ub[1], rows
 * 4..7): int8 values as they are for sdot, flipped to q + 128 for vpdpbusd's unsigned
 * bytes (dot_scale_store takes 128 sum(a) back out), int4 nibbles 0..15 as they are. */
static void dot_b_blocks(ukernel *u, LLVMValueRef k, LLVMValueRef ub[2][MAX_ACC]) {
    mb_ctx *c = u->c;
    LLVMValueRef start = step_start(u, k);
    for (int j = 0; j < u->nv; j++) {
        LLVMValueRef blocks = load_blocks(u, start, j);
        if (u->bk == B_Q8) {
            ub[0][j] = signed_dot(u)
                           ? blocks
                           : LLVMBuildXor(c->b, blocks, splat_i32(c, (int)0x80808080u), "");
            continue;
        }
        LLVMValueRef low = splat_i32(c, 0x0f0f0f0f);
        ub[0][j] = LLVMBuildAnd(c->b, blocks, low, "");
        ub[1][j] = LLVMBuildAnd(c->b, LLVMBuildLShr(c->b, blocks, splat_i32(c, 4), ""), low, "");
    }
}

/* One step: 4 K rows (int8) or 8 (int4) of every row and vector, in i32 sums. */
static void dot_k_step(ukernel *u, int mr, LLVMValueRef k, LLVMValueRef *arow, LLVMValueRef *acc) {
    mb_ctx *c = u->c;
    LLVMValueRef ub[2][MAX_ACC];
    dot_b_blocks(u, k, ub);
    for (int r = 0; r < mr; r++)
        for (int h = 0; h < (u->bk == B_Q4 ? 2 : 1); h++) {
            LLVMValueRef kh = h ? LLVMBuildAdd(c->b, k, mb_i64(c, 4), "") : k;
            LLVMValueRef a = a_quad(u, arow[r], kh);
            for (int j = 0; j < u->nv; j++)
                acc[r * u->nv + j] = int8_dot(u, acc[r * u->nv + j], ub[h][j], a);
        }
}

/* The i32 sums to C: C (+)= S (SA[r] (sum - 128 ASUM[r])) for int8, and
 * C (+)= S (SA[r] sum) + O (SA[r] ASUM[r]) for int4 (O = -zero * S, load_group's). */
static void dot_scale_store(ukernel *u, int mr, LLVMValueRef *acc) {
    mb_ctx *c = u->c;
    LLVMValueRef out[MAX_ACC];
    for (int r = 0; r < mr; r++) {
        LLVMValueRef idx = mb_i64(c, r);
        LLVMValueRef sa = LLVMBuildLoad2(c->b, c->f32, gep_f32(c, arg(u, P_SA), idx), "");
        LLVMValueRef asum_at = LLVMBuildGEP2(c->b, c->i32, arg(u, P_ASUM), &idx, 1, "");
        LLVMValueRef asum = LLVMBuildLoad2(c->b, c->i32, asum_at, "");
        LLVMValueRef a_scale = splat(u, sa);
        for (int j = 0; j < u->nv; j++) {
            LLVMValueRef sum = acc[r * u->nv + j], base = c_or_zero(u, r, j);
            if (u->bk == B_Q8 && !signed_dot(u)) {
                LLVMValueRef bias = LLVMBuildShl(c->b, asum, LLVMConstInt(c->i32, 7, 0), "");
                sum = LLVMBuildSub(c->b, sum, splat_i32_value(c, bias), "");
            } else if (u->bk == B_Q4) {
                LLVMValueRef a_sum =
                    LLVMBuildFMul(c->b, sa, LLVMBuildSIToFP(c->b, asum, c->f32, ""), "");
                base = fma3(u, splat(u, a_sum), u->zero[j], base);
            }
            LLVMValueRef f =
                LLVMBuildFMul(c->b, LLVMBuildSIToFP(c->b, sum, u->vec, ""), a_scale, "");
            out[r * u->nv + j] = fma3(u, f, u->scale[j], base);
        }
    }
    store_acc(u, mr, out);
}

/* The dot kernel's tile for exactly mr rows (K a multiple of the step, rows of A padded). */
static void emit_dot_rows(ukernel *u, int mr, LLVMBasicBlockRef entry) {
    mb_ctx *c = u->c;
    int nacc = mr * u->nv, step = rows_per_step(u);
    LLVMTypeRef i32v = LLVMVectorType(c->i32, (unsigned)c->t->vec_width);
    LLVMValueRef arow[MAX_ACC], acc[MAX_ACC], next[MAX_ACC], out[MAX_ACC];
    LLVMBasicBlockRef loop = LLVMAppendBasicBlockInContext(c->cx, u->fn, "loop");
    LLVMBasicBlockRef done = LLVMAppendBasicBlockInContext(c->cx, u->fn, "done");
    LLVMPositionBuilderAtEnd(c->b, entry);
    a_rows(u, mr, arow);
    load_group(u);
    entry = LLVMGetInsertBlock(c->b);
    LLVMValueRef K = arg(u, P_K), zero = LLVMConstNull(i32v);
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSGT, K, mb_i64(c, 0), ""), loop, done);
    LLVMPositionBuilderAtEnd(c->b, loop);
    LLVMValueRef k = LLVMBuildPhi(c->b, c->i64, "k");
    for (int i = 0; i < nacc; i++)
        next[i] = acc[i] = LLVMBuildPhi(c->b, i32v, "");
    dot_k_step(u, mr, k, arow, next);
    LLVMValueRef k1 = LLVMBuildAdd(c->b, k, mb_i64(c, step), "");
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, k1, K, ""), loop, done);
    LLVMAddIncoming(k, (LLVMValueRef[]){mb_i64(c, 0), k1}, (LLVMBasicBlockRef[]){entry, loop}, 2);
    for (int i = 0; i < nacc; i++)
        LLVMAddIncoming(acc[i], (LLVMValueRef[]){zero, next[i]}, (LLVMBasicBlockRef[]){entry, loop},
                        2);
    LLVMPositionBuilderAtEnd(c->b, done);
    for (int i = 0; i < nacc; i++) {
        out[i] = LLVMBuildPhi(c->b, i32v, "");
        LLVMAddIncoming(out[i], (LLVMValueRef[]){zero, next[i]}, (LLVMBasicBlockRef[]){entry, loop},
                        2);
    }
    dot_scale_store(u, mr, out);
    LLVMBuildRetVoid(c->b);
}

/* A switch on mr to one loop per row count 1..MR. */
static void emit_body(ukernel *u) {
    mb_ctx *c = u->c;
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(c->cx, u->fn, "entry");
    LLVMBasicBlockRef none = LLVMAppendBasicBlockInContext(c->cx, u->fn, "none");
    LLVMPositionBuilderAtEnd(c->b, entry);
    LLVMValueRef sw = LLVMBuildSwitch(c->b, arg(u, P_MR), none, (unsigned)c->t->mr);
    for (int mr = 1; mr <= c->t->mr; mr++) {
        LLVMBasicBlockRef rows = LLVMAppendBasicBlockInContext(c->cx, u->fn, "rows");
        LLVMAddCase(sw, mb_i64(c, mr), rows);
        if (u->kind == U_INT8_DOT)
            emit_dot_rows(u, mr, rows);
        else
            emit_rows(u, mr, rows);
    }
    LLVMPositionBuilderAtEnd(c->b, none);
    LLVMBuildRetVoid(c->b);
}

static void emit_const_fn(mb_ctx *c, const char *name, int64_t v) {
    /* External until the kernels are linked (they refer to it), internal after. */
    LLVMValueRef fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(c->i64, NULL, 0, 0));
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->cx, fn, "entry"));
    LLVMBuildRet(c->b, mb_i64(c, v));
}

/* The body of a kernel for a dtype no value of the model has: the GEMM driver picks
 * kernels by B's dtype, so it cannot reach it; a trap, should that ever be wrong. Each
 * full micro-kernel costs about 0.05 s of optimization and code generation per compile. */
static void emit_trap(ukernel *u) {
    mb_ctx *c = u->c;
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->cx, u->fn, "entry"));
    unsigned id = LLVMLookupIntrinsicID("llvm.trap", 9);
    LLVMBuildCall2(c->b, LLVMIntrinsicGetType(c->cx, id, NULL, 0),
                   LLVMGetIntrinsicDeclaration(c->mod, id, NULL, 0), NULL, 0, "");
    LLVMBuildUnreachable(c->b);
}

/* The target's dot-product intrinsic for the kernel, if it uses one. */
static void find_dot(ukernel *u) {
    mb_ctx *c = u->c;
    const char *name = NULL;
    LLVMTypeRef overload[2] = {LLVMVectorType(c->i32, 4), LLVMVectorType(c->i8, 16)};
    if (u->bk == B_BF16 && u->kind == U_PRODUCT && c->t->bf16_dot)
        name = "llvm.x86.avx512bf16.dpbf16ps.512"; /* x86's need 16 floats a vector */
    if (u->kind == U_INT8_DOT)
        name = signed_dot(u) ? "llvm.aarch64.neon.sdot" : "llvm.x86.avx512.vpdpbusd.512";
    if (!name) return;
    unsigned id = LLVMLookupIntrinsicID(name, strlen(name)), n = signed_dot(u) ? 2 : 0;
    u->dot = LLVMGetIntrinsicDeclaration(c->mod, id, n ? overload : NULL, n);
    u->dot_ty = LLVMIntrinsicGetType(c->cx, id, n ? overload : NULL, n);
}

/* full: the model has values of the kernel's dtype, and the target its instructions
 * (else its body is a trap). */
static void emit_ukernel(mb_ctx *c, const char *name, b_kind bk, u_kind kind, bool full) {
    ukernel u = {.c = c,
                 .bk = bk,
                 .kind = kind,
                 .vec = LLVMVectorType(c->f32, (unsigned)c->t->vec_width),
                 .nv = c->t->nr / c->t->vec_width};
    LLVMTypeRef i64 = c->i64, p = c->ptr;
    LLVMTypeRef floats[] = {i64, p, i64, p, i64, p, i64, i64};          /* K A mr B ldb C ldc acc */
    LLVMTypeRef quant[] = {i64, p, i64, p, i64, p, p, p, i64, i64};     /* ... B ldb S Z C ... */
    LLVMTypeRef dot[] = {i64, p, i64, p, i64, p, p, p, i64, i64, p, p}; /* ... acc SA ASUM */
    LLVMTypeRef dequant[] = {i64, p, i64, p, p, p};                     /* K B ldb S Z out */
    LLVMTypeRef *params = kind == U_DEQUANT    ? dequant
                          : kind == U_INT8_DOT ? dot
                          : is_quant(bk)       ? quant
                                               : floats;
    unsigned nparams = kind == U_DEQUANT    ? 6
                       : kind == U_INT8_DOT ? NUM_P
                       : is_quant(bk)       ? P_SA
                                            : P_SA - 2;
    u.fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(c->vd, params, nparams, 0));
    char width[16];
    snprintf(width, sizeof width, "%d", 32 * c->t->vec_width);
    /* Without this the x86 backend may split 512-bit vectors on CPUs that prefer 256. */
    LLVMAddTargetDependentFunctionAttr(u.fn, "min-legal-vector-width", width);
    unsigned id = LLVMLookupIntrinsicID("llvm.fma", 8);
    u.fma = LLVMGetIntrinsicDeclaration(c->mod, id, &u.vec, 1);
    u.fma_ty = LLVMIntrinsicGetType(c->cx, id, &u.vec, 1);
    if (!full) {
        emit_trap(&u);
        return;
    }
    find_dot(&u);
    if (kind == U_DEQUANT)
        emit_dequant(&u);
    else
        emit_body(&u);
}

/* The micro-kernels (one per storage dtype of B) and their tile. */
void mb_emit_ukernel(mb_ctx *c) {
    static const struct {
        const char *name;
        b_kind bk;
        mc_dtype dt;
        u_kind kind;
    } kernels[] = {
        {"mk_ukernel", B_F32, MC_DT_F32, U_PRODUCT},
        {"mk_ukernel_bf16", B_BF16, MC_DT_BF16, U_PRODUCT},
        {"mk_ukernel_f16", B_F16, MC_DT_F16, U_PRODUCT},
        {"mk_ukernel_q8", B_Q8, MC_DT_Q8, U_PRODUCT},
        {"mk_ukernel_q4", B_Q4, MC_DT_Q4, U_PRODUCT},
        {"mk_dequant_q8", B_Q8, MC_DT_Q8, U_DEQUANT},
        {"mk_dequant_q4", B_Q4, MC_DT_Q4, U_DEQUANT},
        {"mk_ukernel_q8_dot", B_Q8, MC_DT_Q8, U_INT8_DOT},
        {"mk_ukernel_q4_dot", B_Q4, MC_DT_Q4, U_INT8_DOT},
    };
    bool present[MC_NUM_DTYPES] = {false}; /* the dtypes the model's values have */
    for (int v = 0; v < c->g->nvalues; v++)
        if (!mc_val(c->g, v)->dead) present[mc_val(c->g, v)->dt] = true;
    for (size_t i = 0; i < sizeof kernels / sizeof *kernels; i++) {
        /* On an int8-dot target the driver reaches the quantized kernels' dot variants only. */
        bool used = !is_quant(kernels[i].bk) || (kernels[i].kind == U_INT8_DOT) == c->t->int8_dot;
        bool full = present[kernels[i].dt] && used;
        emit_ukernel(c, kernels[i].name, kernels[i].bk, kernels[i].kind, full);
    }
    emit_const_fn(c, "mk_gemm_mr", c->t->mr);
    emit_const_fn(c, "mk_gemm_nr", c->t->nr);
    emit_const_fn(c, "mk_gemm_int8_dot", c->t->int8_dot);
}

/* A param is stored as panels when every use is the B operand of a GEMM the kernels
 * run through the micro-kernel: exactly the fast paths of kernels/k_gemm.c (A f32, a
 * matrix or a batch of them, neither operand transposed; B f32, f16 or bf16). Any other
 * use reads B plain. */
static bool is_panel_use(const mc_graph *g, const mc_node *n, int slot, int v) {
    const mc_value *a = mc_val(g, n->in[0]), *w = mc_val(g, v);
    bool f32_matrix_a = a->dt == MC_DT_F32 && a->shape.rank >= 2;
    if (n->op == MC_OP_MATMUL)
        return slot == 1 && (w->shape.rank == 2 || mc_dtype_is_quant(w->dt)) && f32_matrix_a;
    if (n->op == MC_OP_GEMM)
        return slot == 1 && mc_attr_int(n, "transA") == 0 && mc_attr_int(n, "transB") == 0 &&
               a->dt == MC_DT_F32;
    if (n->op == MC_OP_MOE_GATHER_MATMUL) return slot == 3 && f32_matrix_a; /* A: x */
    if (n->op == MC_OP_MOE_FUSED_UP) return (slot == 1 || slot == 2) && f32_matrix_a;
    if (n->op == MC_OP_MOE_FUSED_DOWN_COMBINE) return slot == 2 && f32_matrix_a;
    if (n->op == MC_OP_MOE_FUSED_TOPK_DISPATCH || n->op == MC_OP_MOE_FUSED_TOPP_DISPATCH ||
        n->op == MC_OP_MOE_FUSED_EXPERT_CHOICE_DISPATCH) /* W_router, read by MatMul */
        return slot == 2 && mc_val(g, n->in[1])->dt == MC_DT_F32;
    return n->op == MC_OP_MOE_EXPERT_MATMUL && slot == 2 && f32_matrix_a;
}

int mb_param_panel_nr(const mc_graph *g, int v, const mb_target *t) {
    const mc_value *x = mc_val(g, v);
    /* Training rewrites params every step: they stay plain. */
    bool weight_dt = mc_dtype_is_float(x->dt) || mc_dtype_is_quant(x->dt);
    if (g->training || !weight_dt || x->is_output || x->shape.rank < 2) return 0;
    for (int i = 0; i < x->nuses; i++)
        if (!is_panel_use(g, mc_nod(g, x->uses[i].node), x->uses[i].slot, v)) return 0;
    return x->nuses > 0 ? t->nr : 0;
}
