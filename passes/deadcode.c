/* dce: removes nodes none of whose outputs is used, and params and consts that no
 * remaining node reads (marked dead, so dumps and the backend skip them). Graph inputs
 * stay even when unused: they are the model's calling interface.
 *
 * "Used" is computed backwards from the graph outputs over g->order, which is
 * topological: when a node is visited every reader of its outputs has been visited
 * already, so one reverse walk reaches the fixpoint that repeated "remove unused
 * nodes" sweeps would. A node with one used output of several is kept whole.
 * needs: nothing    keeps: shapes, verify    breaks: nothing */
#include "passes.h"

#include <string.h>

static bool any_output_live(const mc_node *n, const bool *live) {
    for (int j = 0; j < n->nout; j++)
        if (live[n->out[j]]) return true;
    return false;
}

/* Walks the order backwards; returns whether a node was removed. */
static bool remove_dead_nodes(mc_graph *g, bool *live) {
    bool removed = false;
    for (int k = g->norder - 1; k >= 0; k--) {
        int id = g->order[k];
        const mc_node *n = mc_nod(g, id);
        if (!any_output_live(n, live)) {
            for (int j = 0; j < n->nout; j++)
                mc_val(g, n->out[j])->dead = true;
            mc_graph_remove_node(g, id);
            removed = true;
            continue;
        }
        for (int i = 0; i < n->nin; i++)
            if (n->in[i] >= 0) live[n->in[i]] = true;
    }
    return removed;
}

static bool remove_dead_initializers(mc_graph *g, const bool *live) {
    bool removed = false;
    for (int i = 0; i < g->nvalues; i++) {
        mc_value *v = mc_val(g, i);
        if (v->dead || live[i] || (v->kind != MC_VK_PARAM && v->kind != MC_VK_CONST)) continue;
        v->dead = true;
        removed = true;
    }
    return removed;
}

bool mc_pass_dce(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    (void)cx;
    bool *live = mc_alloc((size_t)g->nvalues + 1);
    if (!live) mc_oom((size_t)g->nvalues + 1);
    memset(live, 0, (size_t)g->nvalues + 1);
    for (int i = 0; i < g->noutputs; i++)
        live[g->outputs[i]] = true;
    for (int i = 0; i < g->nupdates; i++) /* a training step's state writes are roots too */
        live[g->update_src[i]] = live[g->update_dst[i]] = true;
    bool nodes = remove_dead_nodes(g, live);
    bool inits = remove_dead_initializers(g, live);
    *changed = nodes || inits;
    mc_free(live);
    return true;
}
