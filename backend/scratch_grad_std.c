/* backend/scratch_grad_std.c: scratch bytes of the kernels of k_grad_std.c, with every
 * symbol at its max; 0 for every other op (mb_scratch_bytes asks each gradient group).
 *  - LayerNormGrad, RMSNormGrad: the mean and inv of every row (2 floats a row), which
 *    the column pass that sums gscale and gbias reads back;
 *  - GatherGrad on f16/bf16 data: f32 accumulators for all of gdata;
 *  - TopKGrad: the recomputed forward indices, K int64 a row.
 */
#include "scratch.h"

/* Dim i of value v with its symbol at the max. */
static int64_t dim_max(const mc_graph *g, int v, int i) {
    mc_dim d = g->values[v].shape.d[i];
    return d.sym < 0 ? d.c : d.c * g->syms[d.sym].max;
}

/* Rows of the norms: the product of x's dims before axis. */
static int64_t norm_rows_max(const mc_graph *g, const mc_node *n) {
    int x = n->in[1], rank = g->values[x].shape.rank;
    int64_t axis = mc_attr_int(n, "axis"), rows = 1;
    axis = axis < 0 ? axis + rank : axis;
    for (int i = 0; i < axis; i++)
        rows *= dim_max(g, x, i);
    return rows;
}

int64_t mb_scratch_grad_std(const mc_graph *g, const mc_node *n) {
    if (n->op == MC_OP_MOE_LAYER_NORM_GRAD || n->op == MC_OP_MOE_RMS_NORM_GRAD)
        return 2 * (int64_t)sizeof(float) * norm_rows_max(g, n);
    if (n->op == MC_OP_MOE_GATHER_GRAD && g->values[n->out[0]].dt != MC_DT_F32)
        return (int64_t)sizeof(float) * mc_shape_numel_max(g, &g->values[n->out[0]].shape);
    if (n->op == MC_OP_MOE_TOPK_GRAD)
        return (int64_t)sizeof(int64_t) * mc_shape_numel_max(g, &g->values[n->in[0]].shape);
    return 0;
}
