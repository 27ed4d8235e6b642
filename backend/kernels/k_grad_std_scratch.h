/* backend/kernels/k_grad_std_scratch.h: the scratch layouts of the gradients of standard
 * ops (k_grad_std.c), for the kernels and for the memory plan (mk.h, "Scratch layouts").
 * Offsets in bytes. */
#ifndef MK_GRAD_STD_SCRATCH_H
#define MK_GRAD_STD_SCRATCH_H

#include "mk.h"

/* LayerNormGrad, RMSNormGrad over `rows` rows: stats[2 rows] f32, each row's mean and inv
 * from the row pass, read back by the column pass that sums gscale and gbias. */
typedef struct {
    int64_t stats, bytes;
} mk_norm_grad_scratch;

static inline mk_norm_grad_scratch mk_norm_grad_scratch_of(int64_t rows) {
    mk_norm_grad_scratch l;
    int64_t end = 0;
    l.stats = mk_place(&end, 2 * 4 * rows);
    l.bytes = end;
    return l;
}

/* GatherGrad into gdata of n elements: for 16-bit gdata (half) f32 accumulators acc[n];
 * f32 gdata accumulates in place and needs none. */
typedef struct {
    int64_t acc, bytes;
} mk_gather_grad_scratch;

static inline mk_gather_grad_scratch mk_gather_grad_scratch_of(int64_t n, bool half) {
    mk_gather_grad_scratch l;
    int64_t end = 0;
    l.acc = half ? mk_place(&end, 4 * n) : -1;
    l.bytes = end;
    return l;
}

/* TopKGrad with gvalues of n elements: sel[n] i64, the forward's recomputed indices (K
 * per row). */
typedef struct {
    int64_t sel, bytes;
} mk_topk_grad_scratch;

static inline mk_topk_grad_scratch mk_topk_grad_scratch_of(int64_t n) {
    mk_topk_grad_scratch l;
    int64_t end = 0;
    l.sel = mk_place(&end, 8 * n);
    l.bytes = end;
    return l;
}

#endif
