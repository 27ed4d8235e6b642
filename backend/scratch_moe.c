/* backend/scratch_moe.c: bytes of scratch the routing and MoE kernels (kernels/k_route.c,
 * kernels/k_moe.c) need for a node, with every symbol at its max. The backend hands the
 * kernel that many bytes, 64-byte aligned, as the tensor after its outputs. Each sum
 * below lists the kernel's scratch arrays in the order the kernel carves them, every one
 * rounded up to 64 bytes: keep the two in step. */
#include "scratch.h"

static int64_t r64(int64_t bytes) {
    return (bytes + 63) & ~(int64_t)63;
}

/* Dim i of value v with its symbol at the max. */
static int64_t dim_max(const mc_graph *g, int v, int i) {
    mc_dim d = g->values[v].shape.d[i];
    return d.sym < 0 ? d.c : d.c * g->syms[d.sym].max;
}

/* TopKRoute and GWRoute: s[E], q[2E], flags[2E], sel[k], key[T], count[E], visit[T],
 * tmp[T]. */
static int64_t topk_bytes_of(int64_t T, int64_t E, int64_t k) {
    return r64(4 * E) + r64(8 * E) + r64(2 * E) + r64(8 * k) + r64(4 * T) + r64(8 * E) +
           2 * r64(8 * T);
}

static int64_t topk_bytes(const mc_graph *g, const mc_node *n) {
    return topk_bytes_of(dim_max(g, n->in[0], 0), dim_max(g, n->in[0], 1), mc_attr_int(n, "k"));
}

/* TopPRoute: p[E], taken[E]. */
static int64_t topp_bytes_of(int64_t E) {
    return r64(4 * E) + r64(E);
}

/* ExpertChoiceRoute: probs[T,E], idx[T], tmp[T]. */
static int64_t expert_choice_bytes_of(int64_t T, int64_t E) {
    return r64(4 * T * E) + 2 * r64(8 * T);
}

/* ResonanceRoute: delta[T,E], grap[E], w[E], taken[E], cand[T], tmp[T]. */
static int64_t resonance_bytes(const mc_graph *g, const mc_node *n) {
    int64_t T = dim_max(g, n->in[0], 0), E = mc_attr_int(n, "num_experts");
    return r64(4 * T * E) + 2 * r64(4 * E) + r64(E) + 2 * r64(8 * T);
}

/* Dispatch: pos[E+1], list[C], tmp[C] (C = the index input's second dim). */
static int64_t dispatch_bytes_of(int64_t E, int64_t C) {
    return r64(8 * (E + 1)) + 2 * r64(8 * C);
}

static int64_t dispatch_bytes(const mc_graph *g, const mc_node *n) {
    return dispatch_bytes_of(mc_attr_int(n, "num_experts"), dim_max(g, n->in[1], 1));
}

/* Combine: end[T+1], rows[N], and f32 accumulators [T,D] for a 16-bit y. */
static int64_t combine_bytes(const mc_graph *g, const mc_node *n) {
    const mc_value *y = &g->values[n->out[0]];
    int64_t T = dim_max(g, n->out[0], 0), D = dim_max(g, n->out[0], 1), N = dim_max(g, n->in[0], 0);
    return r64(8 * (T + 1)) + r64(8 * N) + (y->dt == MC_DT_F32 ? 0 : r64(4 * T * D));
}

/* FusedDownCombine: the down products o[N,D] f32, then Combine's scratch for o. */
static int64_t fused_down_bytes(const mc_graph *g, const mc_node *n) {
    int64_t N = dim_max(g, n->in[0], 0), D = dim_max(g, n->out[0], 1);
    mc_node combine = *n;
    combine.op = MC_OP_MOE_COMBINE;
    return r64(4 * N * D) + combine_bytes(g, &combine);
}

/* Fused router + route + Dispatch: logits[T,E] f32, the route's index i32 and weight f32
 * [rows,width], then the larger of the route's and Dispatch's scratch (one after the
 * other, in the same bytes). */
static int64_t fused_route_bytes(const mc_graph *g, const mc_node *n) {
    int64_t T = dim_max(g, n->in[0], 0), E = dim_max(g, n->in[2], 1), rows = T, width, route;
    switch (n->op) {
    case MC_OP_MOE_FUSED_TOPK_DISPATCH:
        width = mc_attr_int(n, "k");
        route = topk_bytes_of(T, E, width);
        break;
    case MC_OP_MOE_FUSED_TOPP_DISPATCH:
        width = mc_attr_int(n, "max_k") ? mc_attr_int(n, "max_k") : E;
        route = topp_bytes_of(E);
        break;
    default: /* expert choice */
        rows = E;
        width = mc_attr_int(n, "capacity");
        route = expert_choice_bytes_of(T, E);
        break;
    }
    int64_t disp = dispatch_bytes_of(E, width);
    return r64(4 * T * E) + 2 * r64(4 * rows * width) + (route > disp ? route : disp);
}

int64_t mb_scratch_moe(const mc_graph *g, const mc_node *n) {
    switch (n->op) {
    case MC_OP_MOE_TOPK_ROUTE:
    case MC_OP_MOE_GW_ROUTE: return topk_bytes(g, n);
    case MC_OP_MOE_TOPP_ROUTE: return topp_bytes_of(dim_max(g, n->in[0], 1));
    case MC_OP_MOE_EXPERT_CHOICE_ROUTE:
        return expert_choice_bytes_of(dim_max(g, n->in[0], 0), dim_max(g, n->in[0], 1));
    case MC_OP_MOE_FUSED_TOPK_DISPATCH:
    case MC_OP_MOE_FUSED_TOPP_DISPATCH:
    case MC_OP_MOE_FUSED_EXPERT_CHOICE_DISPATCH: return fused_route_bytes(g, n);
    case MC_OP_MOE_RESONANCE_ROUTE: return resonance_bytes(g, n);
    case MC_OP_MOE_DISPATCH: return dispatch_bytes(g, n);
    case MC_OP_MOE_COMBINE: return combine_bytes(g, n);
    case MC_OP_MOE_FUSED_DOWN_COMBINE: return fused_down_bytes(g, n);
    case MC_OP_MOE_LOAD_BALANCE_LOSS: /* P[E], cnt[E] */
        return 2 * r64(4 * dim_max(g, n->in[0], 1));
    default: return 0; /* not a kernel of these files */
    }
}
