/* backend/scratch_moe.c: bytes of scratch the routing and MoE kernels (kernels/k_route.c,
 * kernels/k_moe.c) need for a node, with every symbol at its max. The backend hands the
 * kernel that many bytes, 64-byte aligned, as the tensor after its outputs. Each sum
 * below lists the kernel's scratch arrays in the order the kernel carves them, every one
 * rounded up to 64 bytes: keep the two in step. */
#include "ir.h"

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
static int64_t topk_bytes(const mc_graph *g, const mc_node *n) {
    int64_t T = dim_max(g, n->in[0], 0), E = dim_max(g, n->in[0], 1), k = mc_attr_int(n, "k");
    return r64(4 * E) + r64(8 * E) + r64(2 * E) + r64(8 * k) + r64(4 * T) + r64(8 * E) +
           2 * r64(8 * T);
}

/* ExpertChoiceRoute: probs[T,E], idx[T], tmp[T]. */
static int64_t expert_choice_bytes(const mc_graph *g, const mc_node *n) {
    int64_t T = dim_max(g, n->in[0], 0), E = dim_max(g, n->in[0], 1);
    return r64(4 * T * E) + 2 * r64(8 * T);
}

/* ResonanceRoute: delta[T,E], grap[E], w[E], taken[E], cand[T], tmp[T]. */
static int64_t resonance_bytes(const mc_graph *g, const mc_node *n) {
    int64_t T = dim_max(g, n->in[0], 0), E = mc_attr_int(n, "num_experts");
    return r64(4 * T * E) + 2 * r64(4 * E) + r64(E) + 2 * r64(8 * T);
}

/* Dispatch: pos[E+1], list[C], tmp[C] (C = the index input's second dim). */
static int64_t dispatch_bytes(const mc_graph *g, const mc_node *n) {
    int64_t E = mc_attr_int(n, "num_experts"), C = dim_max(g, n->in[1], 1);
    return r64(8 * (E + 1)) + 2 * r64(8 * C);
}

/* Combine: end[T+1], rows[N], and f32 accumulators [T,D] for a 16-bit y. */
static int64_t combine_bytes(const mc_graph *g, const mc_node *n) {
    const mc_value *y = &g->values[n->out[0]];
    int64_t T = dim_max(g, n->out[0], 0), D = dim_max(g, n->out[0], 1), N = dim_max(g, n->in[0], 0);
    return r64(8 * (T + 1)) + r64(8 * N) + (y->dt == MC_DT_F32 ? 0 : r64(4 * T * D));
}

int64_t mb_scratch_moe(const mc_graph *g, const mc_node *n) {
    switch (n->op) {
    case MC_OP_MOE_TOPK_ROUTE:
    case MC_OP_MOE_GW_ROUTE: return topk_bytes(g, n);
    case MC_OP_MOE_TOPP_ROUTE: /* p[E], taken[E] */
        return r64(4 * dim_max(g, n->in[0], 1)) + r64(dim_max(g, n->in[0], 1));
    case MC_OP_MOE_EXPERT_CHOICE_ROUTE: return expert_choice_bytes(g, n);
    case MC_OP_MOE_RESONANCE_ROUTE: return resonance_bytes(g, n);
    case MC_OP_MOE_DISPATCH: return dispatch_bytes(g, n);
    case MC_OP_MOE_COMBINE: return combine_bytes(g, n);
    case MC_OP_MOE_LOAD_BALANCE_LOSS: /* P[E], cnt[E] */
        return 2 * r64(4 * dim_max(g, n->in[0], 1));
    default: return 0; /* not a kernel of these files */
    }
}
