/* backend/kernels/mk.h: the contract between the code the backend emits and the kernel
 * library (backend/kernels/k_*.c).
 *
 * The kernel library is plain C compiled by clang-19 to LLVM bitcode when moec is
 * built, once per target architecture, and embedded in moec. At compile time the
 * backend links it into the model's module and emits, for every node, one call
 *
 *     int32_t mk_<OP_ID>(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr);
 *
 * (mk_MATMUL, mk_MOE_TOPK_ROUTE, ... : the IDs of ir/ops.def). Every argument is built
 * from constants except buffer pointers and dims that depend on a symbol, so after
 * inlining at -O2/-O3 each call is specialised to its node's shapes and attributes.
 *
 * Rules for kernel code:
 *  - freestanding C11: only <stdint.h>, <stddef.h>, <stdbool.h>, <float.h>, this header
 *    (which includes ../../ir/attrs.h, the names of attribute rows and choices) and
 *    ../../runtime/moert.h; math through __builtin_* or the mk_* helpers below;
 *  - never allocate, never abort: an op marked MC_OPF_SCRATCH in ir/ops.def gets
 *    scratch memory as an extra output, laid out as its k_<group>_scratch.h says (see
 *    "Scratch layouts" below); errors return a moert_status after moert_fail;
 *  - semantics are those of the reference interpreter (ir/eval_*.c, ROUTING.md), with
 *    the same tie rules and summation order wherever a routing decision depends on it.
 */
#ifndef MK_H
#define MK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../ir/attrs.h"

#define MK_MAX_RANK 8

/* Same order as mc_dtype (ir/ir.h) and moert_dtype (runtime/moert.h). MK_Q8 / MK_Q4:
 * quantized weights, always GEMM B operands in panels (moert_quant_layout). */
enum { MK_F32, MK_F16, MK_BF16, MK_I32, MK_I64, MK_BOOL, MK_Q8, MK_Q4 };

/* Storage layouts of a tensor's bytes. */
enum {
    MK_PLAIN = 0, /* C order */
    MK_PANELS = 1 /* GEMM B operand pre-packed: see mk_gemm_panel_layout below */
};

typedef struct mk_tensor {
    void *p;    /* NULL for an omitted optional input */
    int64_t dt; /* MK_F32 ... : f16/bf16 stored as uint16, bool as one byte 0/1 */
    int64_t rank;
    int64_t dims[MK_MAX_RANK];
    int64_t layout; /* MK_PLAIN or MK_PANELS */
    int64_t nr;     /* MK_PANELS: columns per panel */
    int64_t group;  /* MK_Q8 / MK_Q4: rows of K per scale */
    int64_t zero;   /* MK_Q4: 1 with zero points, 0 when every group's is 8 */
} mk_tensor;

/* One attribute of the node: attr[] has one entry per row of the op in ir/attrs.def, in
 * that order, and a kernel reads them by name, attr[MC_A_<OP>_<name>] (ir/attrs.h; an op
 * without attributes gets NULL). INT: i. FLOAT: f. STRING: i = index of the value in the
 * row's choices, MC_A_<OP>_<name>_<choice>. INTS/FLOATS: n entries at ints/floats. An
 * absent OPT attribute has present = 0. Nothing else comes in attr[]: a kernel's mode
 * (GW-MoE's broadcast) is an attribute of its node, never the compile mode. */
typedef struct mk_attr {
    int64_t present;
    int64_t i;
    double f;
    int64_t n;
    const int64_t *ints;
    const double *floats;
} mk_attr;

typedef int32_t (*mk_kernel_fn)(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr);

/* Element count. */
static inline int64_t mk_numel(const mk_tensor *t) {
    int64_t n = 1;
    for (int64_t i = 0; i < t->rank; i++)
        n *= t->dims[i];
    return n;
}

/* Scratch layouts. A kernel's scratch is a run of arrays, each starting on a 64-byte
 * boundary. The layout of each kernel's scratch is written once, beside the kernel, in
 * k_<group>_scratch.h: a struct with the byte offset of every array (-1 for one the
 * node's dtypes leave out) and `bytes`, the total, computed by a function of plain sizes
 * (T, E, k, ...). The kernel finds its arrays at those offsets; the memory plan reserves
 * `bytes` for the node's max shapes (mb_scratch_<ID> in backend/scratch*.c calls the
 * same function), so the two cannot disagree. */

/* Places an array of `bytes` at the layout's end; returns its offset. */
static inline int64_t mk_place(int64_t *end, int64_t bytes) {
    int64_t at = *end;
    *end += (bytes + 63) & ~(int64_t)63;
    return at;
}

/* Whether the scratch tensor holds a layout of `bytes`. */
static inline bool mk_scratch_fits(const mk_tensor *scratch, int64_t bytes) {
    return scratch->dims[0] >= bytes;
}

/* The array at offset `at` of the scratch tensor; NULL for an absent one (at < 0). */
static inline void *mk_scratch_at(const mk_tensor *scratch, int64_t at) {
    return at < 0 ? NULL : (unsigned char *)scratch->p + at;
}

/* The scratch tensor's bytes from `at` on, as the scratch tensor of a kernel this one
 * calls (a router gradient's forward router, a fused op's parts). */
static inline mk_tensor mk_scratch_rest(const mk_tensor *scratch, int64_t at) {
    mk_tensor t = {
        (unsigned char *)scratch->p + at, MK_I64, 1, {scratch->dims[0] - at}, 0, 0, 0, 0};
    return t;
}

/* GEMM panel layout (MK_PANELS) of a B operand [.., K, N] (f32, f16 or bf16 elements):
 * for each leading index (an expert), ceil(N / nr) panels of moert_panel_rows rows of nr
 * elements (moert_panel_elems in all; bf16 rows in interleaved pairs), as
 * moert_pack_weight writes them: the backend packs constant weights at compile time and
 * the runtime packs external weights at create time. */

/* The register-blocked micro-kernel, emitted by the backend as explicit vector code for
 * the target (backend/gemm.c): C[0..mr)[0..NR) (+)= A[0..mr)[0..K) * B[0..K)[0..NR), where
 * A is a table of mr row pointers (1 <= mr <= MR: gathered rows are read in place), B
 * row k is B + k * ldb, and C row r is C + r * ldc (all NR columns are written: a
 * caller with fewer columns passes a scratch tile). accumulate = 0 overwrites C. MR and
 * NR come from mk_gemm_mr() (at most MK_MAX_MR) and mk_gemm_nr() (at most MK_MAX_NR: 4
 * AVX-512 vectors), also emitted by the backend, as constants for the target. */
enum { MK_MAX_MR = 16, MK_MAX_NR = 64 };
void mk_ukernel(int64_t K, const float *const *A, int64_t mr, const float *B, int64_t ldb, float *C,
                int64_t ldc, int64_t accumulate);
/* The same over B stored as f16 (ldb in elements), widened exactly in registers: the
 * sums of mk_ukernel over the widened values, in its order. */
void mk_ukernel_f16(int64_t K, const float *const *A, int64_t mr, const uint16_t *B, int64_t ldb,
                    float *C, int64_t ldc, int64_t accumulate);
/* The same over a bf16 panel (rows in pairs, moert_pack_weight: rows 2i and 2i+1 at
 * B + 2i * ldb; any K, the zero row of an odd K's last pair unread). Where the target has
 * bf16 dot products (mb_target.bf16_dot), each pair of A's floats is rounded to bf16
 * (to nearest even) and vdpbf16ps sums a[2i] b[2i] + a[2i+1] b[2i+1] into C: products
 * of the rounded activations, a relative error near 2^-9 per product; elsewhere B is
 * widened exactly in registers, the sums of mk_ukernel over the widened values. */
void mk_ukernel_bf16(int64_t K, const float *const *A, int64_t mr, const uint16_t *B, int64_t ldb,
                     float *C, int64_t ldc, int64_t accumulate);
/* The same over quantized B rows that share one group: the NR scales S and (int4) zero
 * points Z (NULL: 8) of that group. The values (moert_quant_layout's 4-byte blocks: the
 * block of rows 4i.. (int8) or 8i.. (int4) of column j at B + 4 (i ldb + j), ldb = NR)
 * are widened in registers and summed against A,
 * and the scales applied once: C (+)= S[j] * sum_k A[k] q[k][j] for int8 (any K: the rows
 * past it are the block's zero padding, and A is not read there), C (+)= S[j] * sum_k
 * A[k] u[k][j] + O[j] * sum_k A[k] for int4 (O[j] = -(Z[j] * S[j]); K a multiple of 8).
 * That is the product with ir/quant.c's weights up to rounding (within the GEMM
 * tolerance), not the same bits. */
void mk_ukernel_q8(int64_t K, const float *const *A, int64_t mr, const int8_t *B, int64_t ldb,
                   const float *S, const uint8_t *Z, float *C, int64_t ldc, int64_t accumulate);
void mk_ukernel_q4(int64_t K, const float *const *A, int64_t mr, const uint8_t *B, int64_t ldb,
                   const float *S, const uint8_t *Z, float *C, int64_t ldc, int64_t accumulate);
/* Those weights of K rows of one group into out (NR floats a row; int8 writes whole
 * blocks: K rounded up to a multiple of 4 rows, the extra ones zero). */
void mk_dequant_q8(int64_t K, const int8_t *B, int64_t ldb, const float *S, const uint8_t *Z,
                   float *out);
void mk_dequant_q4(int64_t K, const uint8_t *B, int64_t ldb, const float *S, const uint8_t *Z,
                   float *out);
/* The int8 dot-product kernels (AVX512-VNNI), where mk_gemm_int8_dot() is 1, for every
 * tile: the same sums over A rows quantized to int8 (k_gemm.c, quantize_rows), each row r with its
 * scale SA[r] and the sum ASUM[r] of its int8 values; K a multiple of 4 (int8) or 8
 * (int4), the rows of A padded with zeros to it. C (+)= S[j] * (SA[r] * sum_k a[k] q[k][j])
 * for int8, C (+)= S[j] * (SA[r] * sum_k a[k] u[k][j]) + O[j] * (SA[r] * ASUM[r]) for
 * int4, the sums exact in i32. */
void mk_ukernel_q8_dot(int64_t K, const int8_t *const *A, int64_t mr, const int8_t *B, int64_t ldb,
                       const float *S, const uint8_t *Z, float *C, int64_t ldc, int64_t accumulate,
                       const float *SA, const int32_t *ASUM);
void mk_ukernel_q4_dot(int64_t K, const int8_t *const *A, int64_t mr, const uint8_t *B, int64_t ldb,
                       const float *S, const uint8_t *Z, float *C, int64_t ldc, int64_t accumulate,
                       const float *SA, const int32_t *ASUM);
int64_t mk_gemm_mr(void);
int64_t mk_gemm_nr(void);
int64_t mk_gemm_int8_dot(void);

/* C[M,N] = A[M,K] B[K,N] in f32 through the micro-kernel, with B in panels of
 * mk_gemm_nr() columns (moert_panel_elems(MOERT_F32, K, N, nr) floats: panel p's row k at
 * Bp + (p K + k) nr, columns past N zero), as packed weights are; on the calling thread,
 * for kernels already parallel at a coarser grain. Each element sums over k in ascending
 * order. (backend/kernels/k_gemm.c) */
void mk_gemm_serial_panels(const float *A, int64_t lda, const float *Bp, float *C, int64_t ldc,
                           int64_t M, int64_t K, int64_t N);

/* The statistics of one row of a LayerNorm (mean, then squared deviations) or RMSNorm:
 * returns 1 / sqrt(var + eps) and sets *mean_out (0 for RMS). The norm kernels' and
 * moe.FusedNorm's, so that both give the same bits. (backend/kernels/k_std.c) */
float mk_norm_row_stats(const mk_tensor *xt, int64_t base, int64_t n, float eps, bool rms,
                        float *mean_out);

#endif
