/* backend/scratch.c: the scratch bytes each node's kernel needs (at the max symbol
 * values), asked of the file that owns the op's kernel. */
#include "internal.h"

static bool is_moe_kernel(mc_op op) {
    return (mc_op_infos[op].flags & (MC_OPF_ROUTE | MC_OPF_LOSS)) || op == MC_OP_MOE_DISPATCH ||
           op == MC_OP_MOE_COMBINE;
}

int64_t mb_scratch_bytes(const mc_graph *g, const mc_node *n) {
    return is_moe_kernel(n->op) ? mb_scratch_moe(g, n) : mb_scratch_std(g, n);
}
