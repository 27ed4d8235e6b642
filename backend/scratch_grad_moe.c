/* backend/scratch_grad_moe.c: scratch bytes of the kernels of k_grad_moe.c, with every
 * symbol at its max. Each sum lists the kernel's scratch arrays in the order the kernel
 * carves them, every one rounded up to 64 bytes: keep the two in step. A router
 * gradient's own arrays come first, then the scratch of the forward router it calls
 * (backend/scratch_moe.c, asked about the node's forward inputs). */
#include "scratch.h"

static int64_t r64(int64_t bytes) {
    return (bytes + 63) & ~(int64_t)63;
}

/* Dim i of value v with its symbol at the max. */
static int64_t dim_max(const mc_graph *g, int v, int i) {
    mc_dim d = g->values[v].shape.d[i];
    return d.sym < 0 ? d.c : d.c * g->syms[d.sym].max;
}

/* The scratch of forward router `op` run on n's forward inputs (n's inputs after the
 * cotangent), with n's attributes (the forward's rows). */
static int64_t forward_bytes(const mc_graph *g, const mc_node *n, mc_op op) {
    mc_node f = *n;
    f.op = op;
    f.nin = n->nin - 1;
    f.in = n->in + 1;
    return mb_scratch_moe(g, &f);
}

/* TopKRouteGrad, GWRouteGrad: ex, sel, wt [T,k]; u, gu [E]; in_set [E]. */
static int64_t topk_grad_bytes(const mc_graph *g, const mc_node *n) {
    int64_t T = dim_max(g, n->in[1], 0), E = dim_max(g, n->in[1], 1), k = mc_attr_int(n, "k");
    return 3 * r64(4 * T * k) + 2 * r64(4 * E) + r64(E) + forward_bytes(g, n, MC_OP_MOE_TOPK_ROUTE);
}

/* TopPRouteGrad: ex, wt [T,K]; p, gp [E]. */
static int64_t topp_grad_bytes(const mc_graph *g, const mc_node *n) {
    int64_t T = dim_max(g, n->in[1], 0), E = dim_max(g, n->in[1], 1), K = dim_max(g, n->in[0], 1);
    return 2 * r64(4 * T * K) + 2 * r64(4 * E) + forward_bytes(g, n, MC_OP_MOE_TOPP_ROUTE);
}

/* ExpertChoiceRouteGrad: tok, wt [E,C]; gp [T,E]; p [E]. */
static int64_t expert_choice_grad_bytes(const mc_graph *g, const mc_node *n) {
    int64_t T = dim_max(g, n->in[1], 0), E = dim_max(g, n->in[1], 1), C = dim_max(g, n->in[0], 1);
    return 2 * r64(4 * E * C) + r64(4 * T * E) + r64(4 * E) +
           forward_bytes(g, n, MC_OP_MOE_EXPERT_CHOICE_ROUTE);
}

/* ResonanceRouteGrad: ex, wt [T,K]; buf [5E] (none for unit weights). */
static int64_t resonance_grad_bytes(const mc_graph *g, const mc_node *n) {
    int64_t T = dim_max(g, n->in[1], 0), K = dim_max(g, n->in[0], 1),
            E = mc_attr_int(n, "num_experts");
    if (mc_attr_choice(n, "weight_mode") == MC_A_MOE_RESONANCE_ROUTE_weight_mode_unit) return 0;
    return 2 * r64(4 * T * K) + r64(5 * 4 * E) + forward_bytes(g, n, MC_OP_MOE_RESONANCE_ROUTE);
}

/* DispatchGrad: row_of, row_tok [Q]; pos [E+1]; list, tmp [C]; f32 accumulators [T,D]
 * for a 16-bit x. Q = the index input's element count, C its second dim. */
static int64_t dispatch_grad_bytes(const mc_graph *g, const mc_node *n) {
    int64_t E = mc_attr_int(n, "num_experts"), R = dim_max(g, n->in[3], 0),
            C = dim_max(g, n->in[3], 1), T = dim_max(g, n->in[2], 0), D = dim_max(g, n->in[2], 1);
    bool f32 = g->values[n->in[2]].dt == MC_DT_F32;
    return 2 * r64(8 * R * C) + r64(8 * (E + 1)) + 2 * r64(8 * C) + (f32 ? 0 : r64(4 * T * D));
}

/* ExpertMatMulGrad: f32 gW accumulators [E,D,F] for 16-bit operands only. */
static int64_t expert_matmul_grad_bytes(const mc_graph *g, const mc_node *n) {
    /* f32: per expert, rows^T [D, n], g_out^T [F, npad] and g_rows^T [D, npad] for the
     * micro-kernel GEMMs, npad = n rounded up to a panel (at most 64 columns). */
    int64_t N = dim_max(g, n->in[1], 0), D = dim_max(g, n->in[1], 1), F = dim_max(g, n->in[0], 1);
    int64_t E = dim_max(g, n->in[2], 0) - 1;
    if (g->values[n->in[1]].dt == MC_DT_F32) return r64(4 * (N + 64 * E) * (2 * D + F));
    return r64(4 * dim_max(g, n->in[3], 0) * dim_max(g, n->in[3], 1) * dim_max(g, n->in[3], 2));
}

/* GatherMatMulGrad: end [T+1], rows, row_e [N]; f32 accumulators gW [E,D,F] and gx [T,D]
 * for 16-bit operands. */
static int64_t gather_matmul_grad_bytes(const mc_graph *g, const mc_node *n) {
    int64_t T = dim_max(g, n->in[1], 0), D = dim_max(g, n->in[1], 1), N = dim_max(g, n->in[2], 0);
    int64_t bytes = r64(8 * (T + 1)) + 2 * r64(8 * N);
    int64_t F = dim_max(g, n->in[0], 1), E = dim_max(g, n->in[3], 0) - 1;
    if (g->values[n->in[1]].dt == MC_DT_F32) /* GEMM transposes, and each row's g_out W^T */
        return bytes + r64(4 * (N + 64 * E) * (2 * D + F)) + r64(4 * N * D);
    return bytes +
           r64(4 * dim_max(g, n->in[4], 0) * dim_max(g, n->in[4], 1) * dim_max(g, n->in[4], 2)) +
           r64(4 * T * D);
}

int64_t mb_scratch_grad_moe(const mc_graph *g, const mc_node *n) {
    switch (n->op) {
    case MC_OP_MOE_TOPK_ROUTE_GRAD:
    case MC_OP_MOE_GW_ROUTE_GRAD: return topk_grad_bytes(g, n);
    case MC_OP_MOE_TOPP_ROUTE_GRAD: return topp_grad_bytes(g, n);
    case MC_OP_MOE_EXPERT_CHOICE_ROUTE_GRAD: return expert_choice_grad_bytes(g, n);
    case MC_OP_MOE_RESONANCE_ROUTE_GRAD: return resonance_grad_bytes(g, n);
    case MC_OP_MOE_DISPATCH_GRAD: return dispatch_grad_bytes(g, n);
    case MC_OP_MOE_EXPERT_MATMUL_GRAD: return expert_matmul_grad_bytes(g, n);
    case MC_OP_MOE_GATHER_MATMUL_GRAD: return gather_matmul_grad_bytes(g, n);
    default: return 0; /* not a kernel of k_grad_moe.c */
    }
}
