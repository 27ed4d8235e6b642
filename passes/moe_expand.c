/* expand-moe: the composite moe.MoE becomes the fine-grained MoE ops, so that every
 * later pass and the backend see one routing form (docs/semantics-decisions.md):
 *
 *   expert, weight = moe.TopKRoute(logits, bias?)          k, score, normalize, ...
 *   rows, offsets, row_token, row_weight = moe.Dispatch(x, expert, weight)
 *   up   = moe.ExpertMatMul(rows, offsets, w_up)            [N,F]
 *   gate = moe.ExpertMatMul(rows, offsets, w_gate)          only when w_gate is given
 *   h    = act(gate) * up,  or  act(up) without w_gate      Relu | Gelu | moe.Silu
 *   down = moe.ExpertMatMul(h, offsets, w_down)             [N,D]
 *   y    = moe.Combine(down, row_token, row_weight, offsets, x)
 * and with a shared expert (shared_up and shared_down given) the same FFN with plain
 * MatMuls on x, added unweighted: y = Combine(...) + shared_down.
 *
 * New values and nodes are named "<moe node>.<role>" (made unique), inserted just
 * before the MoE node, and shape-inferred one by one; the last one writes the MoE's own
 * output value, so its users and the graph outputs need no rewiring.
 * needs: shapes    keeps: shapes, verify    breaks: nothing */
#include "passes.h"

#include <string.h>

enum { IN_X, IN_LOGITS, IN_UP, IN_DOWN, IN_GATE, IN_BIAS, IN_S_UP, IN_S_DOWN, IN_S_GATE, NUM_IN };

typedef struct {
    mc_graph *g;
    int anchor;       /* the moe.MoE node; new nodes go just before it */
    const char *base; /* prefix of new names */
    mc_op act;        /* the expert activation */
    mc_diag *d;
    bool ok;       /* false once a node failed shape inference */
    bool act_tanh; /* gelu_tanh: the Gelu takes approximate="tanh" */
} expander;

static int new_temp(expander *x, const char *role) {
    const char *want = mc_arena_printf(x->g->arena, "%s.%s", x->base, role);
    return mc_graph_add_value(x->g, mc_graph_unique_name(x->g, want), MC_DT_F32, MC_VK_TEMP);
}

static int emit(expander *x, mc_op op, const char *role, const int *in, int nin, const int *out,
                int nout) {
    const char *name = mc_arena_printf(x->g->arena, "%s.%s", x->base, role);
    return mc_graph_add_node_before(x->g, x->anchor, op, name, in, nin, out, nout);
}

/* Defaults filled, then shapes: the new node is complete and checked. */
static void finish(expander *x, int node) {
    mc_node_fill_defaults(x->g, mc_nod(x->g, node));
    if (x->ok) x->ok = mc_infer_node(x->g, node, x->d);
}

/* One single-output node writing `out` (a new temp named after `role` when out < 0). */
static int op1(expander *x, mc_op op, const char *role, const int *in, int nin, int out) {
    if (out < 0) out = new_temp(x, role);
    finish(x, emit(x, op, role, in, nin, &out, 1));
    return out;
}

static mc_op activation(const mc_node *moe) {
    switch ((enum MC_A_MOE_MOE_activation_type_choices)mc_attr_choice(moe, "activation_type")) {
    case MC_A_MOE_MOE_activation_type_relu: return MC_OP_RELU;
    case MC_A_MOE_MOE_activation_type_gelu:
    case MC_A_MOE_MOE_activation_type_gelu_tanh: return MC_OP_GELU;
    case MC_A_MOE_MOE_activation_type_silu: return MC_OP_SILU;
    }
    mc_die("moe.MoE node '%s': bad activation_type", moe->name);
}

/* act(gate) * up when gated, else act(up). */
static int hidden(expander *x, int up, int gate, const char *prefix) {
    int a = gate >= 0 ? gate : up, h = new_temp(x, mc_arena_printf(x->g->arena, "%sact", prefix));
    int id = emit(x, x->act, mc_arena_printf(x->g->arena, "%sact", prefix), &a, 1, &h, 1);
    if (x->act_tanh) mc_node_set_str(x->g, mc_nod(x->g, id), "approximate", "tanh");
    finish(x, id);
    if (gate < 0) return h;
    int mul[2] = {h, up};
    return op1(x, MC_OP_MUL, mc_arena_printf(x->g->arena, "%sglu", prefix), mul, 2, -1);
}

/* TopKRoute with the MoE's routing attributes; returns the expert count E. */
static int64_t route(expander *x, const mc_node *moe, const int *in, int out[2]) {
    static const char *const same[] = {"k",     "score",  "capacity",   "order",
                                       "scale", "groups", "topk_groups"};
    int rin[2] = {in[IN_LOGITS], in[IN_BIAS]};
    out[0] = new_temp(x, "expert");
    out[1] = new_temp(x, "weight");
    int id = emit(x, MC_OP_MOE_TOPK_ROUTE, "route", rin, rin[1] >= 0 ? 2 : 1, out, 2);
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        mc_node_copy_attr(x->g, mc_nod(x->g, id), moe, same[i]);
    mc_node_set_int(x->g, mc_nod(x->g, id), "normalize",
                    mc_attr_int(moe, "normalize_routing_weights"));
    finish(x, id);
    return mc_val(x->g, in[IN_LOGITS])->shape.d[1].c;
}

/* rows, offsets, row_token, row_weight = Dispatch(x, expert, weight). */
static void dispatch(expander *x, int xin, const int rw[2], int64_t experts, int out[4]) {
    static const char *const roles[4] = {"rows", "offsets", "row_token", "row_weight"};
    for (int i = 0; i < 4; i++)
        out[i] = new_temp(x, roles[i]);
    int in[3] = {xin, rw[0], rw[1]};
    int id = emit(x, MC_OP_MOE_DISPATCH, "dispatch", in, 3, out, 4);
    mc_node_set_int(x->g, mc_nod(x->g, id), "num_experts", experts);
    finish(x, id);
}

/* The routed experts: up/gate, activation, down, combine into `y`. */
static void routed(expander *x, const int *in, const int disp[4], int y) {
    int up_in[3] = {disp[0], disp[1], in[IN_UP]};
    int up = op1(x, MC_OP_MOE_EXPERT_MATMUL, "up", up_in, 3, -1);
    int gate = -1;
    if (in[IN_GATE] >= 0) {
        int gate_in[3] = {disp[0], disp[1], in[IN_GATE]};
        gate = op1(x, MC_OP_MOE_EXPERT_MATMUL, "gate", gate_in, 3, -1);
    }
    int down_in[3] = {hidden(x, up, gate, ""), disp[1], in[IN_DOWN]};
    int down = op1(x, MC_OP_MOE_EXPERT_MATMUL, "down", down_in, 3, -1);
    int comb[5] = {down, disp[2], disp[3], disp[1], in[IN_X]};
    op1(x, MC_OP_MOE_COMBINE, "combine", comb, 5, y);
}

/* The shared expert on every token: MatMuls on x, same FFN form. */
static int shared(expander *x, const int *in) {
    int up_in[2] = {in[IN_X], in[IN_S_UP]};
    int up = op1(x, MC_OP_MATMUL, "shared_up", up_in, 2, -1);
    int gate = -1;
    if (in[IN_S_GATE] >= 0) {
        int gate_in[2] = {in[IN_X], in[IN_S_GATE]};
        gate = op1(x, MC_OP_MATMUL, "shared_gate", gate_in, 2, -1);
    }
    int down_in[2] = {hidden(x, up, gate, "shared_"), in[IN_S_DOWN]};
    return op1(x, MC_OP_MATMUL, "shared_down", down_in, 2, -1);
}

static bool expand_one(mc_graph *g, int node, mc_diag *d) {
    /* A copy: adding nodes may move g->nodes (in/attrs stay put in the arena). */
    const mc_node moe = *mc_nod(g, node);
    int y = moe.out[0], in[NUM_IN];
    for (int i = 0; i < NUM_IN; i++)
        in[i] = i < moe.nin ? moe.in[i] : -1;
    bool tanh_gelu =
        mc_attr_choice(&moe, "activation_type") == MC_A_MOE_MOE_activation_type_gelu_tanh;
    expander x = {g,    node,     *moe.name ? moe.name : mc_val(g, y)->name, activation(&moe), d,
                  true, tanh_gelu};
    int rw[2], disp[4];
    int64_t experts = route(&x, &moe, in, rw);
    dispatch(&x, in[IN_X], rw, experts, disp);
    bool has_shared = in[IN_S_UP] >= 0 && in[IN_S_DOWN] >= 0;
    int routed_y = has_shared ? new_temp(&x, "routed") : y;
    routed(&x, in, disp, routed_y);
    if (has_shared) {
        int add[2] = {routed_y, shared(&x, in)};
        op1(&x, MC_OP_ADD, "add_shared", add, 2, y);
    }
    if (!x.ok) return false;
    mc_graph_remove_node(g, node);
    return true;
}

bool mc_pass_expand_moe(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    /* Expansion edits g->order: walk a snapshot of it. */
    int n = g->norder;
    int *snapshot = mc_arena_alloc(g->arena, sizeof(int) * (size_t)(n + 1));
    memcpy(snapshot, g->order, sizeof(int) * (size_t)n);
    for (int k = 0; k < n; k++) {
        if (g->nodes[snapshot[k]].op != MC_OP_MOE_MOE) continue;
        if (!expand_one(g, snapshot[k], cx->d)) return false;
        *changed = true;
    }
    return true;
}
