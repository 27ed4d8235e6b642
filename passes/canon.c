/* canonicalize: removes nodes that compute nothing (Identity, a Reshape to the same
 * shape, a Transpose with the identity permutation, a Cast to the same dtype) and
 * merges a Transpose of a Transpose into one. A value the graph returns keeps its
 * name, so a no-op that produces a graph output stays.
 * needs: shapes    keeps: shapes, verify    breaks: nothing */
#include "passes.h"

static bool identity_perm(const mc_node *n, int rank) {
    const mc_attr *p = mc_attr_get(n, "perm");
    if (!p) return rank <= 1;
    for (int i = 0; i < p->n; i++)
        if (p->ints[i] != i) return false;
    return true;
}

static bool is_noop(const mc_graph *g, const mc_node *n) {
    const mc_value *in = n->nin ? mc_val(g, n->in[0]) : NULL, *out = mc_val(g, n->out[0]);
    switch (n->op) {
    case MC_OP_IDENTITY: return true;
    case MC_OP_RESHAPE: return mc_shape_eq(&in->shape, &out->shape);
    case MC_OP_TRANSPOSE: return identity_perm(n, in->shape.rank);
    case MC_OP_CAST: return in->dt == out->dt;
    default: return false;
    }
}

/* Transpose(Transpose(x, p1), p2) == Transpose(x, p1[p2[i]]). */
static bool merge_transposes(mc_graph *g, mc_node *outer) {
    if (outer->op != MC_OP_TRANSPOSE) return false;
    int p = mc_val(g, outer->in[0])->producer;
    if (p < 0 || g->nodes[p].op != MC_OP_TRANSPOSE) return false;
    const mc_node *inner = &g->nodes[p];
    int rank = mc_val(g, inner->in[0])->shape.rank;
    const mc_attr *p1 = mc_attr_get(inner, "perm"), *p2 = mc_attr_get(outer, "perm");
    int64_t perm[MC_MAX_RANK];
    for (int i = 0; i < rank; i++) {
        int64_t j = p2 ? p2->ints[i] : rank - 1 - i;
        perm[i] = p1 ? p1->ints[j] : rank - 1 - j;
    }
    outer->in[0] = inner->in[0];
    mc_node_set_ints(g, outer, "perm", perm, rank);
    return true;
}

bool mc_pass_canonicalize(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    (void)cx;
    *changed = false;
    for (bool again = true; again;) {
        again = false;
        for (int k = 0; k < g->norder; k++) {
            int id = g->order[k];
            mc_node *n = &g->nodes[id];
            if (merge_transposes(g, n)) {
                again = *changed = true;
                continue;
            }
            if (!is_noop(g, n) || mc_val(g, n->out[0])->is_output) continue;
            mc_graph_replace_uses(g, n->out[0], n->in[0]);
            mc_val(g, n->out[0])->dead = true;
            mc_graph_remove_node(g, id);
            again = *changed = true;
            break;
        }
    }
    return true;
}
