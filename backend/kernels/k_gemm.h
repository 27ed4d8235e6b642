/* backend/kernels/k_gemm.h: the GEMM driver of k_gemm.c, shared with the fused kernels
 * (k_fused.c) so that a fused op runs the same tiles, in the same order, as the plain
 * products it replaces, and only its epilogue differs. */
#ifndef K_GEMM_H
#define K_GEMM_H

#include "k_math.h"
#include "mk.h"

/* One product C[M,N] = A[M,K] B[K,N]. */
typedef struct mk_mat {
    const float *A;
    const void *B; /* elements of dtype bdt */
    float *C;
    int64_t M, K, N, lda, ldb, ldc;
    int64_t bdt;        /* MK_F32, or MK_F16 / MK_BF16 weights, widened a chunk at a time */
    bool packed;        /* B in panels: panel p at B + p*K*nr elements */
    const int32_t *tok; /* gathered A: row r at A + tok[r]*lda; NULL: A + r*lda */
} mk_mat;

/* Element i of tensor t's storage (any dtype), as a B operand starts. */
static inline const void *mk_elem_ptr(const mk_tensor *t, int64_t i) {
    return (const char *)t->p + i * mk_dtsize(t->dt);
}

/* A set of products run as one parallel loop over tasks of one B panel (nr columns) by
 * up to MK_ROWS_PER_TASK rows. `rows`, when set, replaces the plain writing of C: it is
 * called once per task with product i, panel p and rows [r0, r1). */
typedef struct mk_gemm_job mk_gemm_job;
struct mk_gemm_job {
    int64_t count;                                             /* products */
    void (*get)(const mk_gemm_job *j, int64_t i, mk_mat *out); /* the i-th product */
    void (*rows)(const mk_gemm_job *j, int64_t i, const mk_mat *m, int64_t p, int64_t r0,
                 int64_t r1);
    const mk_tensor *in, *out;
    int64_t nr;
};
enum { MK_ROWS_PER_TASK = 96 };
void mk_gemm_run(mk_gemm_job *j);

/* Columns of panel p that exist (nr, or fewer in the last panel). */
int64_t mk_gemm_panel_cols(const mk_mat *m, int64_t p, int64_t nr);
/* C[(r-r0)*ldc + j] = (A B)[r, p*nr+j] for r in [r0, r1) (at most MK_ROWS_PER_TASK rows),
 * j < the panel's columns: the sums the micro-kernel makes, in its order, for any A and
 * B layout, in tiles of mk_gemm_mr() rows (K in chunks when the tiles share B). */
void mk_gemm_rows(const mk_mat *m, int64_t p, int64_t r0, int64_t r1, int64_t nr, float *C,
                  int64_t ldc);
/* offsets[E+1] rise from 0 to at most N: MOERT_OK, or a failure with the message. */
int32_t mk_check_offsets(const mk_tensor *off, int64_t N);

#endif
