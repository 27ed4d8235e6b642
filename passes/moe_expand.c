/* expand-moe: the composite moe.MoE becomes the fine-grained MoE ops, so later passes
 * and the backend see one routing form:
 *   TopKRoute -> Dispatch -> ExpertMatMul(up) [-> ExpertMatMul(gate) -> act -> Mul | -> act]
 *   -> ExpertMatMul(down) -> Combine [-> + shared FFN (MatMul, act, [Mul], MatMul) via Add]
 * needs: shapes    keeps: shapes, verify    breaks: nothing */
#include "passes.h"

#include <string.h>

typedef struct {
    mc_graph *g;
    int anchor;       /* the moe.MoE node */
    const char *base; /* its name: new names are base.suffix */
    mc_diag *d;
    bool ok;
} expander;

static int temp(expander *x, const char *suffix) {
    const char *name =
        mc_graph_unique_name(x->g, mc_arena_printf(x->g->arena, "%s.%s", x->base, suffix));
    return mc_graph_add_value(x->g, name, MC_DT_F32, MC_VK_TEMP);
}

/* Adds op(ins) -> outs before the anchor, fills defaults and infers its shapes. */
static mc_node *emit(expander *x, mc_op op, const char *suffix, const int *ins, int nin,
                     const int *outs, int nout) {
    int id = mc_graph_add_node_before(x->g, x->anchor, op,
                                      mc_arena_printf(x->g->arena, "%s.%s", x->base, suffix), ins,
                                      nin, outs, nout);
    return mc_nod(x->g, id);
}

static void finish(expander *x, mc_node *n) {
    mc_node_fill_defaults(x->g, n);
    if (x->ok) x->ok = mc_infer_node(x->g, (int)(n - x->g->nodes), x->d);
}

static mc_op act_op(const mc_node *moe) {
    const char *a = mc_attr_str(moe, "activation_type");
    return a[0] == 'r' ? MC_OP_RELU : a[0] == 'g' ? MC_OP_GELU : MC_OP_SILU;
}

/* act(x @ gate) * (x @ up), or act(x @ up); `mm` makes the products. */
static int ffn_hidden(expander *x, mc_op act, int up, int gate, const char *pfx) {
    int a = temp(x, mc_arena_printf(x->g->arena, "%sact", pfx));
    int src = gate >= 0 ? gate : up;
    finish(x, emit(x, act, mc_arena_printf(x->g->arena, "%sact", pfx), &src, 1, &a, 1));
    if (gate < 0) return a;
    int h = temp(x, mc_arena_printf(x->g->arena, "%sglu", pfx)), in[2] = {a, up};
    finish(x, emit(x, MC_OP_MUL, mc_arena_printf(x->g->arena, "%sglu", pfx), in, 2, &h, 1));
    return h;
}

static int expert_mm(expander *x, int rows, int offsets, int w, const char *suffix) {
    int out = temp(x, suffix), in[3] = {rows, offsets, w};
    finish(x, emit(x, MC_OP_MOE_EXPERT_MATMUL, suffix, in, 3, &out, 1));
    return out;
}

static int matmul(expander *x, int a, int w, const char *suffix) {
    int out = temp(x, suffix), in[2] = {a, w};
    finish(x, emit(x, MC_OP_MATMUL, suffix, in, 2, &out, 1));
    return out;
}

static int route(expander *x, const mc_node *moe, int *expert, int *weight) {
    int in_route[2] = {moe->in[1], moe->nin > 5 ? moe->in[5] : -1};
    int outs[2] = {temp(x, "expert"), temp(x, "weight")};
    mc_node *r =
        emit(x, MC_OP_MOE_TOPK_ROUTE, "route", in_route, in_route[1] >= 0 ? 2 : 1, outs, 2);
    static const char *same[] = {"k",     "score",  "capacity",   "order",
                                 "scale", "groups", "topk_groups"};
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        mc_node_copy_attr(x->g, r, moe, same[i]);
    mc_node_set_int(x->g, r, "normalize", mc_attr_int(moe, "normalize_routing_weights"));
    finish(x, r);
    *expert = outs[0];
    *weight = outs[1];
    return (int)mc_val(x->g, moe->in[1])->shape.d[1].c;
}

static void expand_one(expander *x) {
    /* A copy: adding nodes may move the node array (the attrs stay in the arena). */
    const mc_node moe_node = *mc_nod(x->g, x->anchor), *moe = &moe_node;
    int y = moe->out[0], xin = moe->in[0], expert, weight;
    int opt[9];
    for (int i = 0; i < 9; i++)
        opt[i] = i < moe->nin ? moe->in[i] : -1;
    int E = route(x, moe, &expert, &weight);
    int d_out[4] = {temp(x, "rows"), temp(x, "offsets"), temp(x, "row_token"),
                    temp(x, "row_weight")};
    int d_in[3] = {xin, expert, weight};
    mc_node *dn = emit(x, MC_OP_MOE_DISPATCH, "dispatch", d_in, 3, d_out, 4);
    mc_node_set_int(x->g, dn, "num_experts", E);
    finish(x, dn);
    int up = expert_mm(x, d_out[0], d_out[1], opt[2], "up");
    int gate = opt[4] >= 0 ? expert_mm(x, d_out[0], d_out[1], opt[4], "gate") : -1;
    int h = ffn_hidden(x, act_op(moe), up, gate, "");
    int down = expert_mm(x, h, d_out[1], opt[3], "down");
    bool shared = opt[6] >= 0 && opt[7] >= 0;
    int routed = shared ? temp(x, "routed") : y;
    int c_in[5] = {down, d_out[2], d_out[3], d_out[1], xin};
    finish(x, emit(x, MC_OP_MOE_COMBINE, "combine", c_in, 5, &routed, 1));
    if (!shared) return;
    int s_up = matmul(x, xin, opt[6], "shared_up");
    int s_gate = opt[8] >= 0 ? matmul(x, xin, opt[8], "shared_gate") : -1;
    int s_h = ffn_hidden(x, act_op(moe), s_up, s_gate, "shared_");
    int s_out = matmul(x, s_h, opt[7], "shared_down");
    int a_in[2] = {routed, s_out};
    finish(x, emit(x, MC_OP_ADD, "add_shared", a_in, 2, &y, 1));
}

bool mc_pass_expand_moe(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    int n = g->norder;
    int *snapshot = mc_arena_alloc(g->arena, sizeof(int) * (size_t)(n + 1));
    memcpy(snapshot, g->order, sizeof(int) * (size_t)n);
    for (int k = 0; k < n; k++) {
        if (g->nodes[snapshot[k]].op != MC_OP_MOE_MOE) continue;
        expander x = {g, snapshot[k], g->nodes[snapshot[k]].name, cx->d, true};
        expand_one(&x);
        if (!x.ok) return false;
        mc_graph_remove_node(g, snapshot[k]);
        *changed = true;
    }
    return true;
}
