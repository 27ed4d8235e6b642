/* gw-specialize: GW-MoE's broadcast exists only in the training step (ROUTING.md
 * §3.10). In inference mode every moe.GWRoute becomes the plain moe.TopKRoute of its
 * base router, same name, same outputs, the eight base attributes and the bias; the
 * entropy, the threshold and the mask (which only limits the broadcast) disappear, so
 * the graph, its dump and its compiled code are those of a top-k model.
 *
 *   expert, weight = moe.GWRoute(logits, bias?, mask?) {k, score, ..., threshold, ...}
 *     -> expert, weight = moe.TopKRoute(logits, bias?) {k, score, ..., topk_groups}
 *
 * In training mode the node is left as it is: the interpreter and the native kernel
 * run the broadcast route (docs/semantics-decisions.md).
 * needs: shapes    keeps: shapes, verify    breaks: nothing */
#include "passes.h"

/* The base router's attributes: the first eight rows of GWRoute's schema. */
static const char *const base_attrs[] = {"k",     "score", "normalize", "capacity",
                                         "order", "scale", "groups",    "topk_groups"};

static void specialize(mc_graph *g, int id) {
    const mc_node *gw = mc_nod(g, id);
    int in[2] = {gw->in[0], gw->nin > 1 ? gw->in[1] : -1};
    int nin = in[1] >= 0 ? 2 : 1;
    int out[2] = {gw->out[0], gw->out[1]};
    const char *name = gw->name;
    int tk = mc_graph_add_node_before(g, id, MC_OP_MOE_TOPK_ROUTE, name, in, nin, out, 2);
    for (size_t i = 0; i < sizeof base_attrs / sizeof *base_attrs; i++)
        mc_node_copy_attr(g, mc_nod(g, tk), mc_nod(g, id), base_attrs[i]);
    mc_graph_remove_node(g, id);
    mc_graph_set_producer(g, tk);
}

bool mc_pass_gw_specialize(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    if (cx->training) return true;
    for (int pos = 0; pos < g->norder; pos++) {
        int id = g->order[pos];
        if (mc_nod(g, id)->op != MC_OP_MOE_GW_ROUTE) continue;
        specialize(g, id);
        *changed = true;
    }
    return mc_infer_shapes(g, cx->d);
}
