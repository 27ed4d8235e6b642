/* backend/scratch_grad.c: scratch sizes of the gradient ops whose kernels take scratch
 * (k_grad_std.c, k_grad_moe.c, k_grad_expert.c, k_grad_loss.c), for the memory plan.
 * Each reads the sizes off the node, with every symbol at its max, and asks the kernel's
 * layout (kernels/k_grad_std_scratch.h, k_grad_moe_scratch.h, k_grad_loss_scratch.h). A
 * router gradient's inputs are the cotangent, then the forward router's inputs. */
#include "scratch.h"

#include "kernels/k_grad_loss_scratch.h"
#include "kernels/k_grad_moe_scratch.h"
#include "kernels/k_grad_std_scratch.h"

static bool is_16bit(const mc_graph *g, int v) {
    return g->values[v].dt != MC_DT_F32;
}

/* ---- standard ops ---- */

/* Rows of a norm over x (input 1): the product of x's dims before axis. */
static int64_t norm_rows_max(const mc_graph *g, const mc_node *n) {
    int x = n->in[1], rank = g->values[x].shape.rank;
    int64_t axis = mc_attr_int(n, "axis"), rows = 1;
    axis = axis < 0 ? axis + rank : axis;
    for (int i = 0; i < axis; i++)
        rows *= mb_dim_max(g, x, i);
    return rows;
}

int64_t mb_scratch_MOE_LAYER_NORM_GRAD(const mc_graph *g, const mc_node *n) {
    return mk_norm_grad_scratch_of(norm_rows_max(g, n)).bytes;
}

int64_t mb_scratch_MOE_RMS_NORM_GRAD(const mc_graph *g, const mc_node *n) {
    return mk_norm_grad_scratch_of(norm_rows_max(g, n)).bytes;
}

int64_t mb_scratch_MOE_GATHER_GRAD(const mc_graph *g, const mc_node *n) {
    const mc_value *gdata = &g->values[n->out[0]];
    return mk_gather_grad_scratch_of(mc_shape_numel_max(g, &gdata->shape), is_16bit(g, n->out[0]))
        .bytes;
}

/* gvalues (input 0) has K entries a row. */
int64_t mb_scratch_MOE_TOPK_GRAD(const mc_graph *g, const mc_node *n) {
    return mk_topk_grad_scratch_of(mc_shape_numel_max(g, &g->values[n->in[0]].shape)).bytes;
}

/* ---- routers: g_weight is input 0, the forward's logits (or x) [T,E] input 1 ---- */

int64_t mb_scratch_MOE_TOPK_ROUTE_GRAD(const mc_graph *g, const mc_node *n) {
    return mk_topk_route_grad_scratch_of(mb_dim_max(g, n->in[1], 0), mb_dim_max(g, n->in[1], 1),
                                         mc_attr_int(n, "k"))
        .bytes;
}

/* GWRouteGrad runs TopKRouteGrad's kernel, plus the softmax Jacobian of broadcast
 * tokens in the same arrays. */
int64_t mb_scratch_MOE_GW_ROUTE_GRAD(const mc_graph *g, const mc_node *n) {
    return mb_scratch_MOE_TOPK_ROUTE_GRAD(g, n);
}

/* g_weight[T,K]. */
int64_t mb_scratch_MOE_TOPP_ROUTE_GRAD(const mc_graph *g, const mc_node *n) {
    return mk_topp_route_grad_scratch_of(mb_dim_max(g, n->in[1], 0), mb_dim_max(g, n->in[1], 1),
                                         mb_dim_max(g, n->in[0], 1))
        .bytes;
}

/* g_weight[E,C]. */
int64_t mb_scratch_MOE_EXPERT_CHOICE_ROUTE_GRAD(const mc_graph *g, const mc_node *n) {
    return mk_expert_choice_route_grad_scratch_of(
               mb_dim_max(g, n->in[1], 0), mb_dim_max(g, n->in[1], 1), mb_dim_max(g, n->in[0], 1))
        .bytes;
}

/* g_weight[T,K], x[T,D]; the experts are counted by num_experts. */
int64_t mb_scratch_MOE_RESONANCE_ROUTE_GRAD(const mc_graph *g, const mc_node *n) {
    bool unit = mc_attr_choice(n, "weight_mode") == MC_A_MOE_RESONANCE_ROUTE_GRAD_weight_mode_unit;
    return mk_resonance_route_grad_scratch_of(mb_dim_max(g, n->in[1], 0),
                                              mc_attr_int(n, "num_experts"),
                                              mb_dim_max(g, n->in[0], 1), unit)
        .bytes;
}

/* ---- Dispatch and the grouped GEMMs ---- */

/* g_rows, g_row_weight, x[T,D], the index input [R,C], weight. */
int64_t mb_scratch_MOE_DISPATCH_GRAD(const mc_graph *g, const mc_node *n) {
    int x = n->in[2], idx = n->in[3];
    int64_t C = mb_dim_max(g, idx, 1);
    return mk_dispatch_grad_scratch_of(mc_attr_int(n, "num_experts"), mb_dim_max(g, idx, 0) * C, C,
                                       mb_dim_max(g, x, 0), mb_dim_max(g, x, 1), is_16bit(g, x))
        .bytes;
}

/* g_out[N,F], rows[N,D], offsets[E+1], W[E,D,F]. */
int64_t mb_scratch_MOE_EXPERT_MATMUL_GRAD(const mc_graph *g, const mc_node *n) {
    int rows = n->in[1];
    return mk_expert_matmul_grad_scratch_of(mb_dim_max(g, rows, 0), mb_dim_max(g, n->in[2], 0) - 1,
                                            mb_dim_max(g, rows, 1), mb_dim_max(g, n->in[0], 1),
                                            is_16bit(g, rows))
        .bytes;
}

/* g_out[N,F], x[T,D], row_token[N], offsets[E+1], W[E,D,F]. */
int64_t mb_scratch_MOE_GATHER_MATMUL_GRAD(const mc_graph *g, const mc_node *n) {
    int x = n->in[1];
    return mk_gather_matmul_grad_scratch_of(mb_dim_max(g, x, 0), mb_dim_max(g, n->in[2], 0),
                                            mb_dim_max(g, n->in[3], 0) - 1, mb_dim_max(g, x, 1),
                                            mb_dim_max(g, n->in[0], 1), is_16bit(g, x))
        .bytes;
}

/* ---- losses: gy[], probs[T,E], ... ---- */

int64_t mb_scratch_MOE_LOAD_BALANCE_LOSS_GRAD(const mc_graph *g, const mc_node *n) {
    return mk_load_balance_loss_grad_scratch_of(mb_dim_max(g, n->in[1], 1)).bytes;
}
