/* backend/kernels/k_grad_moe_scratch.h: the scratch layouts of the gradients of MoE ops
 * (k_grad_moe.c), for the kernels and for the memory plan (mk.h, "Scratch layouts"). A
 * router gradient's scratch holds its own arrays, then, from `fwd` on, the scratch of
 * the forward router it calls to recompute the forward's decisions. Offsets in bytes. */
#ifndef MK_GRAD_MOE_SCRATCH_H
#define MK_GRAD_MOE_SCRATCH_H

#include "k_route_scratch.h"
#include "mk.h"

/* TopKRouteGrad, GWRouteGrad over logits [T,E]: the forward's post- and pre-capacity
 * choices ex, sel i32 and weights wt f32 [T,k]; one token's scores u and cotangents gu
 * [E] f32; in_set[E] bool; then TopKRoute's scratch. */
typedef struct {
    int64_t ex, sel, wt, u, gu, in_set, fwd, bytes;
} mk_topk_route_grad_scratch;

static inline mk_topk_route_grad_scratch mk_topk_route_grad_scratch_of(int64_t T, int64_t E,
                                                                       int64_t k) {
    mk_topk_route_grad_scratch l;
    int64_t end = 0;
    l.ex = mk_place(&end, 4 * T * k);
    l.sel = mk_place(&end, 4 * T * k);
    l.wt = mk_place(&end, 4 * T * k);
    l.u = mk_place(&end, 4 * E);
    l.gu = mk_place(&end, 4 * E);
    l.in_set = mk_place(&end, E);
    l.fwd = mk_place(&end, mk_topk_route_scratch_of(T, E, k).bytes);
    l.bytes = end;
    return l;
}

/* TopPRouteGrad over logits [T,E] with outputs [T,K]: ex i32, wt f32 [T,K]; one
 * token's p, gp [E] f32; then TopPRoute's scratch. */
typedef struct {
    int64_t ex, wt, p, gp, fwd, bytes;
} mk_topp_route_grad_scratch;

static inline mk_topp_route_grad_scratch mk_topp_route_grad_scratch_of(int64_t T, int64_t E,
                                                                       int64_t K) {
    mk_topp_route_grad_scratch l;
    int64_t end = 0;
    l.ex = mk_place(&end, 4 * T * K);
    l.wt = mk_place(&end, 4 * T * K);
    l.p = mk_place(&end, 4 * E);
    l.gp = mk_place(&end, 4 * E);
    l.fwd = mk_place(&end, mk_topp_route_scratch_of(E).bytes);
    l.bytes = end;
    return l;
}

/* ExpertChoiceRouteGrad over logits [T,E] with outputs [E,C]: tok i32, wt f32 [E,C];
 * gp[T,E] f32, the cotangent of the probabilities; one token's p[E] f32; then
 * ExpertChoiceRoute's scratch. */
typedef struct {
    int64_t tok, wt, gp, p, fwd, bytes;
} mk_expert_choice_route_grad_scratch;

static inline mk_expert_choice_route_grad_scratch
mk_expert_choice_route_grad_scratch_of(int64_t T, int64_t E, int64_t C) {
    mk_expert_choice_route_grad_scratch l;
    int64_t end = 0;
    l.tok = mk_place(&end, 4 * E * C);
    l.wt = mk_place(&end, 4 * E * C);
    l.gp = mk_place(&end, 4 * T * E);
    l.p = mk_place(&end, 4 * E);
    l.fwd = mk_place(&end, mk_expert_choice_route_scratch_of(T, E).bytes);
    l.bytes = end;
    return l;
}

/* ResonanceRouteGrad of T tokens over E experts with outputs [T,K]: ex i32, wt f32
 * [T,K]; buf[5E] f32 (S, delta, w, gl, gw of one token); then ResonanceRoute's scratch.
 * Unit weights have no gradient: nothing at all. */
typedef struct {
    int64_t ex, wt, buf, fwd, bytes;
} mk_resonance_route_grad_scratch;

static inline mk_resonance_route_grad_scratch
mk_resonance_route_grad_scratch_of(int64_t T, int64_t E, int64_t K, bool unit) {
    mk_resonance_route_grad_scratch l = {-1, -1, -1, -1, 0};
    if (unit) return l;
    int64_t end = 0;
    l.ex = mk_place(&end, 4 * T * K);
    l.wt = mk_place(&end, 4 * T * K);
    l.buf = mk_place(&end, 5 * 4 * E);
    l.fwd = mk_place(&end, mk_resonance_route_scratch_of(T, E).bytes);
    l.bytes = end;
    return l;
}

/* DispatchGrad to E experts from an index input of Q = R*C entries ([T,K] or [E,C])
 * and x[T,D]: row_of, row_tok [Q] i64; pos[E+1] i64; list, tmp [C] i64; for a 16-bit x
 * (half) f32 accumulators acc[T,D]. */
typedef struct {
    int64_t row_of, row_tok, pos, list, tmp, acc, bytes;
} mk_dispatch_grad_scratch;

static inline mk_dispatch_grad_scratch
mk_dispatch_grad_scratch_of(int64_t E, int64_t Q, int64_t C, int64_t T, int64_t D, bool half) {
    mk_dispatch_grad_scratch l;
    int64_t end = 0;
    l.row_of = mk_place(&end, 8 * Q);
    l.row_tok = mk_place(&end, 8 * Q);
    l.pos = mk_place(&end, 8 * (E + 1));
    l.list = mk_place(&end, 8 * C);
    l.tmp = mk_place(&end, 8 * C);
    l.acc = half ? mk_place(&end, 4 * T * D) : -1;
    l.bytes = end;
    return l;
}

/* The f32 floats the micro-kernel GEMMs of a grouped-GEMM gradient need for N rows over
 * E experts: per expert of n rows, rows^T [D,n], g_out in panels [n, F rounded up to a
 * whole panel], g_out^T in panels [F,npad] and g_rows^T [D,npad], npad = n rounded up to
 * a whole panel. Panels are at most MK_MAX_NR columns, so (n + MK_MAX_NR)(2D + 2F +
 * MK_MAX_NR) floats hold an expert's; expert e's start at mk_grouped_grad_work_floats(r0, e, D, F), r0 its first
 * row. */
static inline int64_t mk_grouped_grad_work_floats(int64_t N, int64_t E, int64_t D, int64_t F) {
    return (N + MK_MAX_NR * E) * (2 * D + 2 * F + MK_MAX_NR);
}

/* ExpertMatMulGrad of N rows [N,D] over E experts W[E,D,F]: for 16-bit operands (half)
 * f32 accumulators acc[E,D,F]; for f32 the GEMMs' work (mk_grouped_grad_work_floats). */
typedef struct {
    int64_t acc, work, bytes;
} mk_expert_matmul_grad_scratch;

static inline mk_expert_matmul_grad_scratch
mk_expert_matmul_grad_scratch_of(int64_t N, int64_t E, int64_t D, int64_t F, bool half) {
    mk_expert_matmul_grad_scratch l;
    int64_t end = 0;
    l.acc = half ? mk_place(&end, 4 * E * D * F) : -1;
    l.work = half ? -1 : mk_place(&end, 4 * mk_grouped_grad_work_floats(N, E, D, F));
    l.bytes = end;
    return l;
}

/* GatherMatMulGrad of N rows gathered from x[T,D] over E experts W[E,D,F]: each token's
 * rows as a CSR list end[T+1], rows[N] i64, and each row's expert row_e[N] i64; then for
 * 16-bit operands (half) f32 accumulators acc_w[E,D,F] and acc_x[T,D], for f32 the
 * GEMMs' work (mk_grouped_grad_work_floats) and each row's g_out W^T, grows[N,D]. */
typedef struct {
    int64_t end, rows, row_e, acc_w, acc_x, work, grows, bytes;
} mk_gather_matmul_grad_scratch;

static inline mk_gather_matmul_grad_scratch
mk_gather_matmul_grad_scratch_of(int64_t T, int64_t N, int64_t E, int64_t D, int64_t F, bool half) {
    mk_gather_matmul_grad_scratch l;
    int64_t end = 0;
    l.end = mk_place(&end, 8 * (T + 1));
    l.rows = mk_place(&end, 8 * N);
    l.row_e = mk_place(&end, 8 * N);
    l.acc_w = half ? mk_place(&end, 4 * E * D * F) : -1;
    l.acc_x = half ? mk_place(&end, 4 * T * D) : -1;
    l.work = half ? -1 : mk_place(&end, 4 * mk_grouped_grad_work_floats(N, E, D, F));
    l.grows = half ? -1 : mk_place(&end, 4 * N * D);
    l.bytes = end;
    return l;
}

#endif
