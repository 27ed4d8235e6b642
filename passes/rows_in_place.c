/* passes/rows_in_place.c: a token-choice Dispatch (plain or fused with its router)
 * whose rows are read only as the rows of moe.ExpertMatMul or moe.FusedUp with its own
 * offsets stops copying them: materialize becomes 0 (rows [0,D], never written),
 * ExpertMatMul(rows, off, W) becomes GatherMatMul(x, row_token, off, W) and FusedUp reads
 * x through row_token. Shared by fuse-gate-dispatch (every such Dispatch) and
 * gw-specialize (GW-routed ones in training, where a broadcast token is then stored once
 * and read by every expert). Results are the same bits: the GEMM driver runs the same
 * tiles in the same order on gathered rows. */
#include "passes.h"

static bool is_dispatch(const mc_node *n) {
    switch (n->op) {
    case MC_OP_MOE_DISPATCH:
    case MC_OP_MOE_FUSED_TOPK_DISPATCH:
    case MC_OP_MOE_FUSED_TOPP_DISPATCH: return true;
    default: return false; /* expert choice: its row tokens may be -1 */
    }
}

/* Whether use u of Dispatch d's rows reads them as an expert product's rows. */
static bool gatherable_use(const mc_graph *g, const mc_node *d, mc_use u) {
    const mc_node *n = mc_nod(g, u.node);
    if (u.slot != 0) return false;
    if (n->op == MC_OP_MOE_EXPERT_MATMUL) return n->in[1] == d->out[1];
    return n->op == MC_OP_MOE_FUSED_UP && n->nin >= 4 && n->in[3] == d->out[1] &&
           (n->nin < 5 || n->in[4] < 0);
}

static bool rows_in_place(const mc_graph *g, const mc_node *d) {
    if (!is_dispatch(d) || !mc_attr_int(d, "materialize") ||
        mc_attr_choice(d, "source") != MC_A_MOE_DISPATCH_source_token_choice)
        return false;
    const mc_value *rows = mc_val(g, d->out[0]);
    if (rows->nuses == 0 || mc_value_escapes(g, d->out[0])) return false;
    for (int i = 0; i < rows->nuses; i++)
        if (!gatherable_use(g, d, rows->uses[i])) return false;
    return true;
}

/* Every reader of d's rows reads x through row_token instead; d stops writing rows. */
static bool gather_rows(mc_graph *g, int did, mc_diag *diag) {
    int x = mc_nod(g, did)->in[0], tok = mc_nod(g, did)->out[2], rows = mc_nod(g, did)->out[0];
    while (mc_val(g, rows)->nuses > 0) {
        mc_use u = mc_val(g, rows)->uses[0];
        const mc_node *n = mc_nod(g, u.node);
        if (n->op == MC_OP_MOE_FUSED_UP) {
            int in[5] = {x, n->in[1], n->in[2], n->in[3], tok};
            mc_node_set_inputs(g, u.node, in, 5);
            continue;
        }
        int in[4] = {x, tok, n->in[1], n->in[2]}, out = n->out[0];
        int gm =
            mc_graph_add_node_before(g, u.node, MC_OP_MOE_GATHER_MATMUL, n->name, in, 4, &out, 1);
        mc_graph_remove_node(g, u.node);
        mc_graph_set_producer(g, gm);
    }
    mc_node_set_int(g, mc_nod(g, did), "materialize", 0);
    return mc_infer_node(g, did, diag);
}

bool mc_rows_in_place(mc_graph *g, int node, bool *changed, mc_diag *d) {
    if (!rows_in_place(g, mc_nod(g, node))) return true;
    *changed = true;
    return gather_rows(g, node, d);
}
