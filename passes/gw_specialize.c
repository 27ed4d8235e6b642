/* gw-specialize: GW-MoE's broadcast exists only in the training step (ROUTING.md
 * §3.10).
 *
 * In inference mode every moe.GWRoute, whatever its mode, becomes the plain
 * moe.TopKRoute of its base router, same name, same outputs, the eight base attributes
 * and the bias; the entropy, the threshold, the mode and the mask (which only limits the
 * broadcast) disappear, so the graph, its dump and its compiled code are those of a
 * top-k model.
 *
 *   expert, weight = moe.GWRoute(logits, bias?, mask?) {k, score, ..., threshold, ...}
 *     -> expert, weight = moe.TopKRoute(logits, bias?) {k, score, ..., topk_groups}
 *
 * In training mode the GWRoute stays and gets mode="train" (the frontend already gives
 * it that mode when the model leaves it out; autodiff copies it onto the GWRouteGrad):
 * the interpreter, shape inference and the native kernel read the broadcast from that
 * attribute, never from the compile mode. Its broadcast tokens are stored once and read
 * by every expert instead of being copied E times: for each moe.Dispatch routed by a
 * GWRoute whose rows are read only as the rows of moe.ExpertMatMuls over the Dispatch's
 * own offsets,
 *
 *   rows, off, tok, w = moe.Dispatch(x, expert, weight) {...}
 *   h = moe.ExpertMatMul(rows, off, W)
 *     -> rows[0,D], off, tok, w = moe.Dispatch(x, expert, weight) {..., materialize=0}
 *        h = moe.GatherMatMul(x, tok, off, W)
 *
 * (same node names, same output values). Later GEMMs of the chain read activations,
 * not x, and stay ExpertMatMuls.
 * needs: shapes    keeps: shapes, verify, output values    breaks: nothing */
#include "passes.h"

static void specialize(mc_graph *g, int id) {
    const mc_node *gw = mc_nod(g, id);
    int in[2] = {gw->in[0], gw->nin > 1 ? gw->in[1] : -1};
    int nin = in[1] >= 0 ? 2 : 1;
    int out[2] = {gw->out[0], gw->out[1]};
    const char *name = gw->name;
    int tk = mc_graph_add_node_before(g, id, MC_OP_MOE_TOPK_ROUTE, name, in, nin, out, 2);
    gw = mc_nod(g, id);                 /* adding a node may move the node array */
    for (int i = 0; i < gw->nattr; i++) /* the base router's: TopKRoute's rows */
        if (mc_attr_schema_find(MC_OP_MOE_TOPK_ROUTE, gw->attrs[i].name))
            mc_node_copy_attr(g, mc_nod(g, tk), gw, gw->attrs[i].name);
    mc_graph_remove_node(g, id);
    mc_graph_set_producer(g, tk);
}

/* Whether Dispatch d is routed by a GWRoute. */
static bool gw_routed(const mc_graph *g, const mc_node *d) {
    int p = mc_val(g, d->in[1])->producer;
    return p >= 0 && mc_nod(g, p)->op == MC_OP_MOE_GW_ROUTE;
}

/* mode="train" on a GWRoute; true if it was not set already. */
static bool set_train(mc_graph *g, mc_node *n) {
    if (mc_attr_choice(n, "mode") == MC_A_MOE_GW_ROUTE_mode_train) return false;
    mc_node_set_str(g, n, "mode", "train");
    return true;
}

bool mc_pass_gw_specialize(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    for (int pos = 0; pos < g->norder; pos++) {
        int id = g->order[pos];
        mc_node *n = mc_nod(g, id);
        if (!cx->training && n->op == MC_OP_MOE_GW_ROUTE) {
            specialize(g, id);
            *changed = true;
        } else if (cx->training && n->op == MC_OP_MOE_GW_ROUTE) {
            *changed |= set_train(g, n);
        } else if (cx->training && n->op == MC_OP_MOE_DISPATCH && gw_routed(g, n)) {
            if (!mc_rows_in_place(g, id, changed, cx->d)) return false;
        }
    }
    return mc_infer_shapes(g, cx->d);
}
