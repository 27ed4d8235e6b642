/* backend/kernels/k_gemm.h: the GEMM driver of k_gemm.c, shared with the fused kernels
 * (k_fused.c) so that a fused op runs the same tiles, in the same order, as the plain
 * products it replaces, and only its epilogue differs. */
#ifndef K_GEMM_H
#define K_GEMM_H

#include "../../runtime/moert.h"
#include "k_math.h"
#include "mk.h"

/* One product C[M,N] = A[M,K] B[K,N]. */
typedef struct mk_mat {
    const float *A;
    const void *B; /* elements of dtype bdt */
    float *C;
    int64_t M, K, N, lda, ldb, ldc;
    int64_t bdt;        /* MK_F32, or MK_F16 / MK_BF16 / MK_Q8 / MK_Q4 weights */
    bool packed;        /* B in panels: panel p at B + p*K*nr elements */
    const int32_t *tok; /* gathered A: row r at A + tok[r]*lda; NULL: A + r*lda */
    /* MK_Q8 / MK_Q4 (always packed): B holds the values' panels, S the scales', Z the
     * zero points' (NULL: 8), one row of each per `group` rows of K (moert.h). */
    const float *S;
    const uint8_t *Z;
    int64_t group;
} mk_mat;

static inline bool mk_is_quant(int64_t dt) {
    return dt == MK_Q8 || dt == MK_Q4;
}

/* Matrix `index` of weight W ([.., K, N] of any weight dtype, plain or in panels of nr
 * columns) as m's B; m->K and m->N are set. */
static inline void mk_mat_weight(mk_mat *m, const mk_tensor *W, int64_t index, int64_t nr) {
    m->bdt = W->dt;
    m->packed = W->layout == MK_PANELS;
    if (!mk_is_quant(W->dt)) {
        int64_t elems =
            m->packed ? moert_panel_elems((moert_dtype)W->dt, m->K, m->N, nr) : m->K * m->N;
        m->B = (const char *)W->p + index * elems * mk_dtsize(W->dt);
        return;
    }
    moert_quant_sizes q = moert_quant_layout((moert_dtype)W->dt, m->K, m->N, W->group, W->zero, nr);
    const char *base = (const char *)W->p + index * q.matrix;
    m->B = base;
    m->S = (const float *)(base + q.values);
    m->Z = W->zero ? (const uint8_t *)(base + q.values + q.scales) : NULL;
    m->group = W->group;
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
