/* fuse-gate-dispatch: the router's MatMul, the route and the Dispatch become one node,
 * and token rows stop being copied when every reader can read them in place
 * (docs/fusion.md):
 *
 *   z = MatMul(h, W_router); e, w = route(z, bias?); rows, off, tok, rw = Dispatch(x, e, w)
 *     ->  rows, off, tok, rw = moe.Fused<Route>Dispatch(x, h, W_router, bias?)
 *
 * for route = moe.TopKRoute (every variant, without the capacity slot output),
 * moe.TopPRoute and moe.ExpertChoiceRoute (without a mask): moe.GWRoute reaches here as
 * its base TopKRoute in inference, moe.MoE's routing as the ops expand-moe made. z, e and
 * w must have no other reader and be no graph output.
 * Then, for a token-choice Dispatch (plain or fused) whose rows are read only as the rows
 * of moe.ExpertMatMul or moe.FusedUp with its own offsets: materialize becomes 0 (rows
 * [0,D], never written), ExpertMatMul(rows, off, W) becomes GatherMatMul(x, tok, off, W)
 * and FusedUp(rows, ..) reads x through tok: each token row is read where it lies.
 * needs: shapes, expanded    keeps: shapes    breaks: unfused, the memory plan */
#include "passes.h"

static bool private_value(const mc_graph *g, int v, int reader) {
    return v >= 0 && !mc_value_escapes(g, v) && mc_value_single_user(g, v) == reader;
}

static mc_op fused_op(mc_op route) {
    switch (route) {
    case MC_OP_MOE_TOPK_ROUTE: return MC_OP_MOE_FUSED_TOPK_DISPATCH;
    case MC_OP_MOE_TOPP_ROUTE: return MC_OP_MOE_FUSED_TOPP_DISPATCH;
    case MC_OP_MOE_EXPERT_CHOICE_ROUTE: return MC_OP_MOE_FUSED_EXPERT_CHOICE_DISPATCH;
    default: return MC_NUM_OPS;
    }
}

/* The route node feeding Dispatch d that can fuse with it and its router, or -1. */
static int fusable_route(const mc_graph *g, int did) {
    const mc_node *d = mc_nod(g, did);
    int rid = mc_val(g, d->in[1])->producer;
    if (rid < 0 || mc_val(g, d->in[2])->producer != rid) return -1;
    const mc_node *r = mc_nod(g, rid);
    bool by_expert = mc_attr_choice(d, "source") == MC_A_MOE_DISPATCH_source_expert_choice;
    if (fused_op(r->op) == MC_NUM_OPS || r->nout != 2 ||
        by_expert != (r->op == MC_OP_MOE_EXPERT_CHOICE_ROUTE) ||
        (r->op == MC_OP_MOE_EXPERT_CHOICE_ROUTE && r->nin > 1 && r->in[1] >= 0) ||
        !private_value(g, r->out[0], did) || !private_value(g, r->out[1], did) ||
        mc_val(g, d->in[0])->dt != MC_DT_F32)
        return -1;
    int mid = mc_val(g, r->in[0])->producer;
    if (mid < 0 || !private_value(g, r->in[0], rid)) return -1;
    const mc_node *m = mc_nod(g, mid);
    bool f32_matrices = m->op == MC_OP_MATMUL && mc_val(g, m->in[0])->shape.rank == 2 &&
                        mc_val(g, m->in[1])->shape.rank == 2 &&
                        mc_val(g, m->in[0])->dt == MC_DT_F32;
    return f32_matrices ? rid : -1;
}

/* Router, route and Dispatch d -> one fused node writing d's outputs. */
static bool fuse_route(mc_graph *g, int did, int rid, mc_diag *diag) {
    const mc_node *d = mc_nod(g, did), *r = mc_nod(g, rid);
    int mid = mc_val(g, r->in[0])->producer;
    const mc_node *m = mc_nod(g, mid);
    int in[4] = {d->in[0], m->in[0], m->in[1],
                 r->op == MC_OP_MOE_TOPK_ROUTE && r->nin > 1 ? r->in[1] : -1};
    int out[4] = {d->out[0], d->out[1], d->out[2], d->out[3]}, nin = in[3] >= 0 ? 4 : 3;
    const char *name = mc_arena_printf(g->arena, "%s+%s+%s", m->name, r->name, d->name);
    mc_op op = fused_op(r->op);
    int id = mc_graph_add_node_before(g, did, op, name, in, nin, out, 4);
    mc_node *n = mc_nod(g, id);
    for (int i = 0; i < mc_num_attr_schemas; i++) {
        const mc_attr_schema *s = &mc_attr_schemas[i];
        if (s->op != op) continue;
        const mc_node *from =
            mc_attr_get(mc_nod(g, rid), s->name) ? mc_nod(g, rid) : mc_nod(g, did);
        if (mc_attr_get(from, s->name)) mc_node_copy_attr(g, n, from, s->name);
    }
    int dead[3] = {mc_nod(g, mid)->out[0], mc_nod(g, rid)->out[0], mc_nod(g, rid)->out[1]};
    mc_graph_remove_node(g, did);
    mc_graph_remove_node(g, rid);
    mc_graph_remove_node(g, mid);
    for (int i = 0; i < 3; i++)
        mc_val(g, dead[i])->dead = true;
    mc_graph_set_producer(g, id);
    mc_node_fill_defaults(g, n);
    return mc_infer_node(g, id, diag);
}

bool mc_pass_fuse_gate_dispatch(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    int n, *order = mc_graph_order_copy(g, &n); /* fusing removes nodes from g->order */
    for (int k = 0; k < n; k++) {
        int id = order[k], rid;
        if (mc_nod(g, id)->dead || mc_nod(g, id)->op != MC_OP_MOE_DISPATCH) continue;
        if ((rid = fusable_route(g, id)) < 0) continue;
        if (!fuse_route(g, id, rid, cx->d)) return false;
        *changed = true;
    }
    for (int k = 0; k < g->norder; k++)
        if (!mc_rows_in_place(g, g->order[k], changed, cx->d)) return false;
    return mc_infer_shapes(g, cx->d);
}
