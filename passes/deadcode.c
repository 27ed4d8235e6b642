/* dce: removes nodes none of whose outputs reach a graph output, and initializers no
 * remaining node reads. Graph inputs stay: they are the model's interface.
 * needs: nothing    keeps: shapes, verify    breaks: nothing */
#include "passes.h"

#include <string.h>

bool mc_pass_dce(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    (void)cx;
    *changed = false;
    bool *live = mc_alloc((size_t)g->nvalues + 1);
    if (!live) mc_oom((size_t)g->nvalues);
    memset(live, 0, (size_t)g->nvalues + 1);
    for (int i = 0; i < g->noutputs; i++)
        live[g->outputs[i]] = true;
    for (int k = g->norder - 1; k >= 0; k--) {
        int id = g->order[k];
        mc_node *n = &g->nodes[id];
        bool used = false;
        for (int j = 0; j < n->nout; j++)
            used |= live[n->out[j]];
        if (!used) {
            for (int j = 0; j < n->nout; j++)
                g->values[n->out[j]].dead = true;
            mc_graph_remove_node(g, id);
            *changed = true;
            continue;
        }
        for (int i = 0; i < n->nin; i++)
            if (n->in[i] >= 0) live[n->in[i]] = true;
    }
    for (int i = 0; i < g->nvalues; i++) {
        mc_value *v = &g->values[i];
        if (!v->dead && !live[i] && (v->kind == MC_VK_PARAM || v->kind == MC_VK_CONST)) {
            v->dead = true;
            *changed = true;
        }
    }
    mc_free(live);
    return true;
}
