/* canonicalize: removes nodes that compute nothing and merges Transpose chains, so
 * that later pattern-matching passes (fusions) see one form:
 *   Identity(x)                          -> x
 *   Reshape(x, s) with out shape == x's  -> x
 *   Transpose(x) with the identity perm  -> x
 *   Cast(x) to x's own dtype             -> x
 *   Transpose(Transpose(x, p1), p2)      -> Transpose(x, p1[p2[i]]) (then maybe -> x)
 * Graph outputs keep their names: when a removed no-op writes a graph output, the node
 * producing its input is made to write the output value instead. When there is no
 * such node (the input is a graph input, a param or a const) or the input is itself a
 * graph output, the no-op stays: it is what gives the output its own name.
 * needs: shapes    keeps: shapes, verify    breaks: nothing */
#include "passes.h"

/* ONNX: no perm attribute means reversing the axes. */
static int64_t perm_at(const mc_node *n, int rank, int i) {
    const mc_attr *p = mc_attr_get(n, "perm");
    return p ? p->ints[i] : rank - 1 - i;
}

static bool is_identity_perm(const mc_node *n, int rank) {
    for (int i = 0; i < rank; i++)
        if (perm_at(n, rank, i) != i) return false;
    return true;
}

/* The four ops that can be no-ops; every other op computes something. */
static bool is_noop(const mc_graph *g, const mc_node *n) {
    if (n->op != MC_OP_IDENTITY && n->op != MC_OP_RESHAPE && n->op != MC_OP_CAST &&
        n->op != MC_OP_TRANSPOSE)
        return false;
    const mc_value *in = mc_val(g, n->in[0]), *out = mc_val(g, n->out[0]);
    if (in->dt != out->dt) return false;
    if (n->op == MC_OP_TRANSPOSE) return is_identity_perm(n, in->shape.rank);
    return mc_shape_eq(&in->shape, &out->shape);
}

/* Redirects the producer of `in` to write `out` directly; false if it cannot. */
static bool take_over_output(mc_graph *g, int in, int out) {
    mc_value *src = mc_val(g, in);
    if (src->producer < 0 || src->is_output) return false;
    mc_node *p = mc_nod(g, src->producer);
    for (int j = 0; j < p->nout; j++)
        if (p->out[j] == in) p->out[j] = out;
    mc_val(g, out)->producer = src->producer;
    mc_graph_replace_uses(g, in, out);
    src->dead = true;
    src->producer = -1;
    return true;
}

/* Removes no-op node `id`; false (graph untouched) when it must stay. */
static bool remove_noop(mc_graph *g, int id) {
    mc_node *n = mc_nod(g, id);
    int in = n->in[0], out = n->out[0];
    if (mc_val(g, out)->is_output) {
        /* The no-op must not read its own (renamed) output once it is gone. */
        if (!take_over_output(g, in, out)) return false;
    } else {
        mc_graph_replace_uses(g, out, in);
        mc_val(g, out)->dead = true;
    }
    mc_graph_remove_node(g, id);
    return true;
}

/* Transpose(Transpose(x, p1), p2) -> Transpose(x, p) with p[i] = p1[p2[i]]; the inner
 * Transpose goes when nothing else reads it. */
static bool merge_transposes(mc_graph *g, int id) {
    mc_node *outer = mc_nod(g, id);
    if (outer->op != MC_OP_TRANSPOSE) return false;
    int mid = outer->in[0], p = mc_val(g, mid)->producer;
    if (p < 0 || mc_nod(g, p)->op != MC_OP_TRANSPOSE) return false;
    const mc_node *inner = mc_nod(g, p);
    int rank = mc_val(g, inner->in[0])->shape.rank;
    int64_t perm[MC_MAX_RANK];
    for (int i = 0; i < rank; i++)
        perm[i] = perm_at(inner, rank, (int)perm_at(outer, rank, i));
    mc_node_set_input(g, id, 0, inner->in[0]);
    mc_node_set_ints(g, outer, "perm", perm, rank);
    if (mc_graph_count_uses(g, mid) == 0) {
        mc_val(g, mid)->dead = true;
        mc_graph_remove_node(g, p);
    }
    return true;
}

/* One rewrite anywhere in the graph; false when there is none left. */
static bool rewrite_once(mc_graph *g) {
    for (int k = 0; k < g->norder; k++) {
        int id = g->order[k];
        if (merge_transposes(g, id)) return true;
        if (is_noop(g, mc_nod(g, id)) && remove_noop(g, id)) return true;
    }
    return false;
}

bool mc_pass_canonicalize(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    (void)cx;
    *changed = false;
    while (rewrite_once(g))
        *changed = true;
    return true;
}
