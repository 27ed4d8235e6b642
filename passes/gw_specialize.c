/* gw-specialize: GW-MoE's broadcast exists only in the training step (ROUTING.md
 * §3.10).
 *
 * In inference mode every moe.GWRoute becomes the plain moe.TopKRoute of its base
 * router, same name, same outputs, the eight base attributes and the bias; the entropy,
 * the threshold and the mask (which only limits the broadcast) disappear, so the graph,
 * its dump and its compiled code are those of a top-k model.
 *
 *   expert, weight = moe.GWRoute(logits, bias?, mask?) {k, score, ..., threshold, ...}
 *     -> expert, weight = moe.TopKRoute(logits, bias?) {k, score, ..., topk_groups}
 *
 * In training mode the GWRoute stays (the interpreter and the native kernel run the
 * broadcast route), and its broadcast tokens are stored once and read by every expert
 * instead of being copied E times: for each moe.Dispatch routed by a GWRoute whose rows
 * are read only as the rows of moe.ExpertMatMuls over the Dispatch's own offsets,
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

/* A materialised Dispatch routed by a GWRoute whose rows feed only ExpertMatMuls' rows
 * slot, with the Dispatch's offsets, and are not a graph output. */
static bool gatherable(const mc_graph *g, const mc_node *d) {
    int p = mc_val(g, d->in[1])->producer;
    if (p < 0 || mc_nod(g, p)->op != MC_OP_MOE_GW_ROUTE || !mc_attr_int(d, "materialize"))
        return false;
    int rows = d->out[0];
    if (mc_val(g, rows)->is_output) return false;
    int readers = 0;
    for (int pos = 0; pos < g->norder; pos++) {
        const mc_node *n = mc_nod(g, g->order[pos]);
        for (int i = 0; i < n->nin; i++) {
            if (n->in[i] != rows) continue;
            if (n->op != MC_OP_MOE_EXPERT_MATMUL || i != 0 || n->in[1] != d->out[1]) return false;
            readers++;
        }
    }
    for (int i = 0; i < g->nupdates; i++)
        if (g->update_src[i] == rows) return false;
    return readers > 0;
}

/* ExpertMatMul(rows, off, W) -> GatherMatMul(x, row_token, off, W) for every reader of
 * Dispatch d's rows; then d stops writing them. */
static void gather(mc_graph *g, int did) {
    for (int pos = 0; pos < g->norder; pos++) {
        int id = g->order[pos];
        const mc_node *n = mc_nod(g, id), *d = mc_nod(g, did);
        if (n->op != MC_OP_MOE_EXPERT_MATMUL || n->in[0] != d->out[0]) continue;
        int in[4] = {d->in[0], d->out[2], n->in[1], n->in[2]}, out = n->out[0];
        int gm = mc_graph_add_node_before(g, id, MC_OP_MOE_GATHER_MATMUL, n->name, in, 4, &out, 1);
        mc_graph_remove_node(g, id);
        mc_graph_set_producer(g, gm);
    }
    mc_node_set_int(g, mc_nod(g, did), "materialize", 0);
}

bool mc_pass_gw_specialize(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    for (int pos = 0; pos < g->norder; pos++) {
        int id = g->order[pos];
        const mc_node *n = mc_nod(g, id);
        if (!cx->training && n->op == MC_OP_MOE_GW_ROUTE) {
            specialize(g, id);
            *changed = true;
        } else if (cx->training && n->op == MC_OP_MOE_DISPATCH && gatherable(g, n)) {
            gather(g, id);
            *changed = true;
        }
    }
    return mc_infer_shapes(g, cx->d);
}
