/* backend/scratch_grad_loss.c: scratch bytes of the kernels of k_grad_loss.c. Only
 * moe.LoadBalanceLossGrad has any: one f32 counter per expert (E is constant). */
#include "scratch.h"

int64_t mb_scratch_grad_loss(const mc_graph *g, const mc_node *n) {
    if (n->op != MC_OP_MOE_LOAD_BALANCE_LOSS_GRAD) return 0;
    int64_t E = g->values[n->in[1]].shape.d[1].c;
    return (4 * E + 63) & ~(int64_t)63;
}
