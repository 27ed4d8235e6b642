/* backend/kernels/k_fused_scratch.h: the scratch layouts of the fused ops of k_fused.c,
 * for the kernels and for the memory plan (mk.h, "Scratch layouts"). A fused op's
 * scratch holds its own arrays, then the scratch of the kernels it calls, from `parts`
 * on. Offsets in bytes. */
#ifndef MK_FUSED_SCRATCH_H
#define MK_FUSED_SCRATCH_H

#include "k_moe_scratch.h"
#include "k_route_scratch.h"
#include "mk.h"

/* FusedDownCombine of N rows into y[T,D]: the down products o[N,D] f32, then Combine's
 * scratch for o (half: y is 16-bit). */
typedef struct {
    int64_t o, parts, bytes;
} mk_fused_down_combine_scratch;

static inline mk_fused_down_combine_scratch mk_fused_down_combine_scratch_of(int64_t T, int64_t N,
                                                                             int64_t D, bool half) {
    mk_fused_down_combine_scratch l;
    int64_t end = 0;
    l.o = mk_place(&end, 4 * N * D);
    l.parts = mk_place(&end, mk_combine_scratch_of(T, N, D, half).bytes);
    l.bytes = end;
    return l;
}

/* Router MatMul + route + Dispatch over logits [T,E], the route's outputs being
 * [rows,width]: logits[T,E] f32, the route's index idx i32 and weight wt f32
 * [rows,width], then the route's scratch (route_bytes), which Dispatch's reuses once the
 * route is done: the larger of the two. */
typedef struct {
    int64_t logits, idx, wt, parts, bytes;
} mk_route_dispatch_scratch;

static inline mk_route_dispatch_scratch mk_route_dispatch_scratch_of(int64_t T, int64_t E,
                                                                     int64_t rows, int64_t width,
                                                                     int64_t route_bytes) {
    mk_route_dispatch_scratch l;
    int64_t end = 0, dispatch_bytes = mk_dispatch_scratch_of(E, width).bytes;
    l.logits = mk_place(&end, 4 * T * E);
    l.idx = mk_place(&end, 4 * rows * width);
    l.wt = mk_place(&end, 4 * rows * width);
    l.parts = mk_place(&end, route_bytes > dispatch_bytes ? route_bytes : dispatch_bytes);
    l.bytes = end;
    return l;
}

/* FusedTopKDispatch: TopKRoute's expert, weight [T,k]. */
static inline mk_route_dispatch_scratch mk_fused_topk_dispatch_scratch_of(int64_t T, int64_t E,
                                                                          int64_t k) {
    return mk_route_dispatch_scratch_of(T, E, T, k, mk_topk_route_scratch_of(T, E, k).bytes);
}

/* FusedTopPDispatch: TopPRoute's expert, weight [T,K] (K = max_k, or E without it). */
static inline mk_route_dispatch_scratch mk_fused_topp_dispatch_scratch_of(int64_t T, int64_t E,
                                                                          int64_t K) {
    return mk_route_dispatch_scratch_of(T, E, T, K, mk_topp_route_scratch_of(E).bytes);
}

/* FusedExpertChoiceDispatch: ExpertChoiceRoute's token, weight [E,C]. */
static inline mk_route_dispatch_scratch
mk_fused_expert_choice_dispatch_scratch_of(int64_t T, int64_t E, int64_t C) {
    return mk_route_dispatch_scratch_of(T, E, E, C, mk_expert_choice_route_scratch_of(T, E).bytes);
}

#endif
