/* fuse-elementwise: elementwise ops that follow a fused op's output join its epilogue
 * instead of making another pass over memory (docs/fusion.md). Today's rule is the
 * residual:
 *
 *   y = moe.FusedDownCombine(..); z = Add(y, r) (or Add(r, y))
 *     ->  z = moe.FusedDownCombine(.., r)
 *
 * with r of y's shape and dtype, and y read by nothing else (and no graph output). The
 * kernel adds r to each token's sum, the order the unfused Add uses.
 * needs: shapes    keeps: shapes    breaks: unfused, the memory plan */
#include "passes.h"

#include <string.h>

/* The operand of Add `id` that a residual-free FusedDownCombine writes for it alone;
 * *other: the Add's other operand. -1 when there is none. */
static int fused_sum(const mc_graph *g, int id, int *other) {
    const mc_node *add = mc_nod(g, id);
    if (add->op != MC_OP_ADD) return -1;
    for (int i = 0; i < 2; i++) {
        int v = add->in[i], r = add->in[1 - i], p = mc_val(g, v)->producer;
        if (p < 0 || mc_nod(g, p)->op != MC_OP_MOE_FUSED_DOWN_COMBINE || mc_nod(g, p)->nin > 6 ||
            mc_value_escapes(g, v) || mc_value_single_user(g, v) != id || v == r)
            continue;
        const mc_value *yv = mc_val(g, v), *rv = mc_val(g, r), *zv = mc_val(g, add->out[0]);
        if (rv->dt != MC_DT_F32 || !mc_shape_eq(&rv->shape, &yv->shape) ||
            !mc_shape_eq(&zv->shape, &yv->shape))
            continue;
        *other = r;
        return p;
    }
    return -1;
}

static bool fuse_residual(mc_graph *g, int add_id, int f_id, int r, mc_diag *d) {
    const mc_node *f = mc_nod(g, f_id), *add = mc_nod(g, add_id);
    int in[7], out = add->out[0], y = f->out[0];
    memcpy(in, f->in, sizeof(int) * 6);
    in[6] = r;
    const char *name = mc_arena_printf(g->arena, "%s+%s", f->name, add->name);
    int id =
        mc_graph_add_node_before(g, add_id, MC_OP_MOE_FUSED_DOWN_COMBINE, name, in, 7, &out, 1);
    mc_graph_remove_node(g, add_id);
    mc_graph_remove_node(g, f_id);
    mc_val(g, y)->dead = true;
    mc_graph_set_producer(g, id);
    return mc_infer_node(g, id, d);
}

bool mc_pass_fuse_elementwise(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    int n, *order = mc_graph_order_copy(g, &n); /* fusing removes nodes from g->order */
    for (int k = 0; k < n; k++) {
        int r = -1, f = mc_nod(g, order[k])->dead ? -1 : fused_sum(g, order[k], &r);
        if (f < 0) continue;
        if (!fuse_residual(g, order[k], f, r, cx->d)) return false;
        *changed = true;
    }
    return true;
}
