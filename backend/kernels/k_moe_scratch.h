/* backend/kernels/k_moe_scratch.h: the scratch layouts of moe.Dispatch, moe.Combine and
 * moe.LoadBalanceLoss (k_moe.c), for the kernels and for the memory plan (mk.h, "Scratch
 * layouts"). Offsets in bytes. */
#ifndef MK_MOE_SCRATCH_H
#define MK_MOE_SCRATCH_H

#include "mk.h"

/* Dispatch to E experts from an index input [R,C] (expert[T,K] or token[E,C]): pos[E+1]
 * i64 for token choice's counting sort, list[C], tmp[C] i64 for expert choice's sort. */
typedef struct {
    int64_t pos, list, tmp, bytes;
} mk_dispatch_scratch;

static inline mk_dispatch_scratch mk_dispatch_scratch_of(int64_t E, int64_t C) {
    mk_dispatch_scratch l;
    int64_t end = 0;
    l.pos = mk_place(&end, 8 * (E + 1));
    l.list = mk_place(&end, 8 * C);
    l.tmp = mk_place(&end, 8 * C);
    l.bytes = end;
    return l;
}

/* Combine of N rows into y[T,D]: each token's rows as a CSR list, end[T+1] and rows[N]
 * i64; for a 16-bit y (half) f32 accumulators acc[T,D], rounded once at the end. */
typedef struct {
    int64_t end, rows, acc, bytes;
} mk_combine_scratch;

static inline mk_combine_scratch mk_combine_scratch_of(int64_t T, int64_t N, int64_t D, bool half) {
    mk_combine_scratch l;
    int64_t end = 0;
    l.end = mk_place(&end, 8 * (T + 1));
    l.rows = mk_place(&end, 8 * N);
    l.acc = half ? mk_place(&end, 4 * T * D) : -1;
    l.bytes = end;
    return l;
}

/* LoadBalanceLoss over E experts: P[E] and cnt[E] f32, per scope instance. */
typedef struct {
    int64_t P, cnt, bytes;
} mk_load_balance_loss_scratch;

static inline mk_load_balance_loss_scratch mk_load_balance_loss_scratch_of(int64_t E) {
    mk_load_balance_loss_scratch l;
    int64_t end = 0;
    l.P = mk_place(&end, 4 * E);
    l.cnt = mk_place(&end, 4 * E);
    l.bytes = end;
    return l;
}

#endif
