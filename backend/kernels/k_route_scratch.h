/* backend/kernels/k_route_scratch.h: the scratch layouts of the routers (k_route.c), for
 * the kernels and for the memory plan (mk.h, "Scratch layouts"). Offsets in bytes. */
#ifndef MK_ROUTE_SCRATCH_H
#define MK_ROUTE_SCRATCH_H

#include "mk.h"

/* TopKRoute and GWRoute's base route, over logits [T,E]: per token s[E] f32, q[2E] f32
 * (scores, then group scores), flags[2E] bool (allowed, taken), sel[k] i64; for the
 * capacity stage key[T] f32, count[E] i64, visit[T] i64, tmp[T] i64. */
typedef struct {
    int64_t s, q, flags, sel, key, count, visit, tmp, bytes;
} mk_topk_route_scratch;

static inline mk_topk_route_scratch mk_topk_route_scratch_of(int64_t T, int64_t E, int64_t k) {
    mk_topk_route_scratch l;
    int64_t end = 0;
    l.s = mk_place(&end, 4 * E);
    l.q = mk_place(&end, 8 * E);
    l.flags = mk_place(&end, 2 * E);
    l.sel = mk_place(&end, 8 * k);
    l.key = mk_place(&end, 4 * T);
    l.count = mk_place(&end, 8 * E);
    l.visit = mk_place(&end, 8 * T);
    l.tmp = mk_place(&end, 8 * T);
    l.bytes = end;
    return l;
}

/* TopPRoute over [T,E]: one token's p[E] f32 and taken[E] bool. */
typedef struct {
    int64_t p, taken, bytes;
} mk_topp_route_scratch;

static inline mk_topp_route_scratch mk_topp_route_scratch_of(int64_t E) {
    mk_topp_route_scratch l;
    int64_t end = 0;
    l.p = mk_place(&end, 4 * E);
    l.taken = mk_place(&end, E);
    l.bytes = end;
    return l;
}

/* ExpertChoiceRoute over [T,E]: probs[T,E] f32, and idx[T], tmp[T] i64 for the sort of
 * each expert's tokens. */
typedef struct {
    int64_t probs, idx, tmp, bytes;
} mk_expert_choice_route_scratch;

static inline mk_expert_choice_route_scratch mk_expert_choice_route_scratch_of(int64_t T,
                                                                               int64_t E) {
    mk_expert_choice_route_scratch l;
    int64_t end = 0;
    l.probs = mk_place(&end, 4 * T * E);
    l.idx = mk_place(&end, 8 * T);
    l.tmp = mk_place(&end, 8 * T);
    l.bytes = end;
    return l;
}

/* ResonanceRoute of T tokens over E experts: delta[T,E], grap[E], w[E] f32, taken[E]
 * bool, and cand[T], tmp[T] i64 for the expert side's sort. */
typedef struct {
    int64_t delta, grap, w, taken, cand, tmp, bytes;
} mk_resonance_route_scratch;

static inline mk_resonance_route_scratch mk_resonance_route_scratch_of(int64_t T, int64_t E) {
    mk_resonance_route_scratch l;
    int64_t end = 0;
    l.delta = mk_place(&end, 4 * T * E);
    l.grap = mk_place(&end, 4 * E);
    l.w = mk_place(&end, 4 * E);
    l.taken = mk_place(&end, E);
    l.cand = mk_place(&end, 8 * T);
    l.tmp = mk_place(&end, 8 * T);
    l.bytes = end;
    return l;
}

#endif
