/* backend/scratch_grad_loss.c: scratch bytes of the kernels of k_grad_loss.c. */
#include "internal.h"

int64_t mb_scratch_grad_loss(const mc_graph *g, const mc_node *n) {
    (void)g;
    (void)n;
    return 0;
}
