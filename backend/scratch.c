/* backend/scratch.c: the scratch bytes each node's kernel needs (at the max symbol
 * values), asked of the file that owns the op's kernel. */
#include "scratch.h"

static bool is_moe_kernel(mc_op op) {
    return (mc_op_infos[op].flags & (MC_OPF_ROUTE | MC_OPF_LOSS | MC_OPF_FUSED)) ||
           op == MC_OP_MOE_DISPATCH ||
           op == MC_OP_MOE_COMBINE;
}

int64_t mb_scratch_bytes(const mc_graph *g, const mc_node *n) {
    /* Gradient and optimizer ops: each group's file answers for its own ops, 0 else. */
    if (mc_op_infos[n->op].flags & (MC_OPF_GRAD | MC_OPF_OPTIM))
        return mb_scratch_grad_std(g, n) + mb_scratch_grad_moe(g, n) + mb_scratch_grad_loss(g, n);
    return is_moe_kernel(n->op) ? mb_scratch_moe(g, n) : mb_scratch_std(g, n);
}
