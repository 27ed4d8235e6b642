/* backend/scratch_moe.c: scratch sizes of the routers, Dispatch, Combine, LoadBalanceLoss
 * and the fused routing ops, for the memory plan. Each reads the sizes off the node, with
 * every symbol at its max, and asks the kernel's layout (kernels/k_route_scratch.h,
 * k_moe_scratch.h, k_fused_scratch.h) for the bytes. */
#include "scratch.h"

#include "kernels/k_fused_scratch.h"
#include "kernels/k_moe_scratch.h"
#include "kernels/k_route_scratch.h"

static bool is_16bit(const mc_graph *g, int v) {
    return g->values[v].dt != MC_DT_F32;
}

/* ---- routers: logits (or x) [T,E] is input 0 ---- */

int64_t mb_scratch_MOE_TOPK_ROUTE(const mc_graph *g, const mc_node *n) {
    return mk_topk_route_scratch_of(mb_dim_max(g, n->in[0], 0), mb_dim_max(g, n->in[0], 1),
                                    mc_attr_int(n, "k"))
        .bytes;
}

/* GWRoute's base route is TopKRoute's kernel; its broadcast needs nothing more. */
int64_t mb_scratch_MOE_GW_ROUTE(const mc_graph *g, const mc_node *n) {
    return mb_scratch_MOE_TOPK_ROUTE(g, n);
}

int64_t mb_scratch_MOE_TOPP_ROUTE(const mc_graph *g, const mc_node *n) {
    return mk_topp_route_scratch_of(mb_dim_max(g, n->in[0], 1)).bytes;
}

int64_t mb_scratch_MOE_EXPERT_CHOICE_ROUTE(const mc_graph *g, const mc_node *n) {
    return mk_expert_choice_route_scratch_of(mb_dim_max(g, n->in[0], 0), mb_dim_max(g, n->in[0], 1))
        .bytes;
}

/* Input 0 is x[T,D]; the experts are counted by num_experts. */
int64_t mb_scratch_MOE_RESONANCE_ROUTE(const mc_graph *g, const mc_node *n) {
    return mk_resonance_route_scratch_of(mb_dim_max(g, n->in[0], 0), mc_attr_int(n, "num_experts"))
        .bytes;
}

/* ---- Dispatch, Combine, LoadBalanceLoss ---- */

/* The index input (1) is expert[T,K] or token[E,C]: its second dim. */
int64_t mb_scratch_MOE_DISPATCH(const mc_graph *g, const mc_node *n) {
    return mk_dispatch_scratch_of(mc_attr_int(n, "num_experts"), mb_dim_max(g, n->in[1], 1)).bytes;
}

/* out[N,D] in, y[T,D] out. */
int64_t mb_scratch_MOE_COMBINE(const mc_graph *g, const mc_node *n) {
    int y = n->out[0];
    return mk_combine_scratch_of(mb_dim_max(g, y, 0), mb_dim_max(g, n->in[0], 0),
                                 mb_dim_max(g, y, 1), is_16bit(g, y))
        .bytes;
}

/* probs[T,E]. */
int64_t mb_scratch_MOE_LOAD_BALANCE_LOSS(const mc_graph *g, const mc_node *n) {
    return mk_load_balance_loss_scratch_of(mb_dim_max(g, n->in[0], 1)).bytes;
}

/* ---- fused ops ---- */

/* h[N,F] in, y[T,D] out. */
int64_t mb_scratch_MOE_FUSED_DOWN_COMBINE(const mc_graph *g, const mc_node *n) {
    int y = n->out[0];
    return mk_fused_down_combine_scratch_of(mb_dim_max(g, y, 0), mb_dim_max(g, n->in[0], 0),
                                            mb_dim_max(g, y, 1), is_16bit(g, y))
        .bytes;
}

/* The fused routing ops: x[T,D] is input 0, W_router[R,E] input 2. */
int64_t mb_scratch_MOE_FUSED_TOPK_DISPATCH(const mc_graph *g, const mc_node *n) {
    return mk_fused_topk_dispatch_scratch_of(mb_dim_max(g, n->in[0], 0), mb_dim_max(g, n->in[2], 1),
                                             mc_attr_int(n, "k"))
        .bytes;
}

/* max_k 0 means E. */
int64_t mb_scratch_MOE_FUSED_TOPP_DISPATCH(const mc_graph *g, const mc_node *n) {
    int64_t E = mb_dim_max(g, n->in[2], 1), K = mc_attr_int(n, "max_k");
    return mk_fused_topp_dispatch_scratch_of(mb_dim_max(g, n->in[0], 0), E, K ? K : E).bytes;
}

int64_t mb_scratch_MOE_FUSED_EXPERT_CHOICE_DISPATCH(const mc_graph *g, const mc_node *n) {
    return mk_fused_expert_choice_dispatch_scratch_of(
               mb_dim_max(g, n->in[0], 0), mb_dim_max(g, n->in[2], 1), mc_attr_int(n, "capacity"))
        .bytes;
}
