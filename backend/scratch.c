/* backend/scratch.c: from an op to its scratch size function, generated from the op
 * table. */
#include "scratch.h"

typedef int64_t scratch_fn(const mc_graph *g, const mc_node *n);

/* mb_scratch_<ID> for each op with MC_OPF_SCRATCH, NULL for the others. The condition is
 * a constant, so an op without the flag names no function, and one with it names a
 * function that must exist: a flagged op nobody sized is a link error, not 0 bytes. */
static scratch_fn *const scratch_of[MC_NUM_OPS] = {
#define OP(id, name, min_in, max_in, min_out, max_out, flags)                                      \
    [MC_OP_##id] = (MC_OPF_SCRATCH & (flags)) ? mb_scratch_##id : NULL,
#include "ops.def"
#undef OP
};

int64_t mb_scratch_bytes(const mc_graph *g, const mc_node *n) {
    scratch_fn *fn = scratch_of[n->op];
    if (!fn) return 0;
    int64_t bytes = fn(g, n);
    MC_ASSERT(bytes >= 0);
    return bytes;
}

int64_t mb_dim_max(const mc_graph *g, int v, int i) {
    mc_dim d = g->values[v].shape.d[i];
    return d.sym < 0 ? d.c : d.c * g->syms[d.sym].max;
}
