/* fuse-expert-ffn: an expert FFN's products and the elementwise ops between them become
 * two fused ops whose kernels keep the [N,F] intermediates in registers and cache
 * (docs/fusion.md):
 *
 *   g = P(A, W_gate); u = P(A, W_up); h = Mul(act(g), u)  ->  h = moe.FusedUp(A, W_up, W_gate, ..)
 *   u = P(A, W_up); h = act(u)                            ->  h = moe.FusedUp(A, W_up, _, ..)
 *   o = moe.ExpertMatMul(h, off, W_down); y = moe.Combine(o, tok, w, off, like)
 *                                                         ->  y = moe.FusedDownCombine(..)
 *
 * where P is moe.ExpertMatMul(rows, off, W), moe.GatherMatMul(x, tok, off, W) (FusedUp
 * then reads x through tok) or a rank-2 MatMul (a shared or dense expert), act is Relu,
 * Gelu or moe.Silu, and the two products share their rows and offsets. An intermediate
 * is fused away only when the fused op is its one reader and it is no graph output or
 * state write: in a training graph the gradients read g and u, so those stay. Only f32
 * graphs are rewritten. The fused value keeps the name of the value it replaces.
 * needs: shapes, expanded    keeps: shapes    breaks: unfused, the memory plan */
#include "passes.h"

typedef struct {
    mc_graph *g;
    mc_diag *d;
} fuser;

/* The product that produced v, if v is an f32 value only `reader` reads. */
static const mc_node *private_product(const fuser *f, int v, int reader) {
    const mc_value *x = mc_val(f->g, v);
    if (x->dt != MC_DT_F32 || x->producer < 0 || mc_value_escapes(f->g, v) ||
        mc_value_single_user(f->g, v) != reader)
        return NULL;
    const mc_node *p = mc_nod(f->g, x->producer);
    switch (p->op) {
    case MC_OP_MOE_EXPERT_MATMUL:
    case MC_OP_MOE_GATHER_MATMUL: return p;
    case MC_OP_MATMUL:
        return mc_val(f->g, p->in[0])->shape.rank == 2 && mc_val(f->g, p->in[1])->shape.rank == 2 &&
                       mc_val(f->g, p->in[0])->dt == MC_DT_F32
                   ? p
                   : NULL;
    default: return NULL;
    }
}

/* A product's operands in FusedUp's order: a, W, offsets (or -1), row_token (or -1). */
typedef struct {
    int a, w, off, tok;
} operands;

static operands operands_of(const mc_node *p) {
    switch (p->op) {
    case MC_OP_MOE_EXPERT_MATMUL: return (operands){p->in[0], p->in[2], p->in[1], -1};
    case MC_OP_MOE_GATHER_MATMUL: return (operands){p->in[0], p->in[3], p->in[2], p->in[1]};
    default: return (operands){p->in[0], p->in[1], -1, -1};
    }
}

static bool same_rows(operands a, operands b, mc_op pa, mc_op pb) {
    return pa == pb && a.a == b.a && a.off == b.off && a.tok == b.tok;
}

/* FusedUp's activation for an activation node, or NULL when it is none of them. */
static const char *activation_of(const mc_node *n) {
    switch (n->op) {
    case MC_OP_RELU: return "relu";
    case MC_OP_SILU: return "silu";
    case MC_OP_GELU:
        return mc_attr_choice(n, "approximate") == MC_A_GELU_approximate_tanh ? "gelu_tanh"
                                                                              : "gelu";
    default: return NULL;
    }
}

/* Makes op(in) writing `out` before `anchor`, removes the nodes it replaces (and their
 * outputs but `out`), names it after them: "gate+up+silu+glu". */
static bool replace(fuser *f, mc_op op, const int *in, int nin, int out, const int *old, int nold,
                    int anchor, mc_node **made) {
    const char *name = "";
    for (int i = 0; i < nold; i++)
        name =
            mc_arena_printf(f->g->arena, "%s%s%s", name, i ? "+" : "", mc_nod(f->g, old[i])->name);
    int id = mc_graph_add_node_before(f->g, anchor, op, name, in, nin, &out, 1);
    for (int i = 0; i < nold; i++) {
        int o = mc_nod(f->g, old[i])->out[0];
        mc_graph_remove_node(f->g, old[i]);
        if (o != out) mc_val(f->g, o)->dead = true;
    }
    mc_graph_set_producer(f->g, id);
    *made = mc_nod(f->g, id);
    mc_node_fill_defaults(f->g, *made);
    return mc_infer_node(f->g, id, f->d);
}

/* Mul(act(g), u) or Mul(u, act(g)) reading act's output: the other operand's product. */
static const mc_node *glu_partner(const fuser *f, const mc_node *act, int *mul) {
    int a = act->out[0];
    *mul = mc_value_single_user(f->g, a);
    if (*mul < 0 || mc_value_escapes(f->g, a)) return NULL;
    const mc_node *m = mc_nod(f->g, *mul);
    if (m->op != MC_OP_MUL || m->in[0] == m->in[1]) return NULL;
    int u = m->in[0] == a ? m->in[1] : m->in[0];
    const mc_value *mv = mc_val(f->g, m->out[0]), *uv = mc_val(f->g, u);
    if (!mc_shape_eq(&mv->shape, &uv->shape) || !mc_shape_eq(&mv->shape, &mc_val(f->g, a)->shape))
        return NULL;
    return private_product(f, u, *mul);
}

/* An activation node over a private product: FusedUp, with its gate when a Mul pairs
 * it with a product of the same rows. */
static bool fuse_up(fuser *f, int act_id, bool *changed) {
    const mc_node *act = mc_nod(f->g, act_id);
    const char *name = activation_of(act);
    const mc_node *gate = name ? private_product(f, act->in[0], act_id) : NULL;
    if (!gate) return true;
    int mul = -1;
    const mc_node *up = glu_partner(f, act, &mul);
    operands go = operands_of(gate), uo = up ? operands_of(up) : go;
    if (up && !same_rows(go, uo, gate->op, up->op)) up = NULL;
    int old[4] = {(int)(gate - f->g->nodes), act_id, -1, -1}, nold = 2;
    if (up) {
        old[2] = (int)(up - f->g->nodes);
        old[3] = mul;
        nold = 4;
    }
    int in[5] = {uo.a, uo.w, up ? go.w : -1, uo.off, uo.tok};
    int out = up ? mc_nod(f->g, mul)->out[0] : act->out[0], anchor = up ? mul : act_id;
    mc_node *n;
    if (!replace(f, MC_OP_MOE_FUSED_UP, in, 5, out, old, nold, anchor, &n)) return false;
    mc_node_set_str(f->g, n, "activation", name);
    *changed = true;
    return true;
}

/* Combine over a private ExpertMatMul with the same offsets: FusedDownCombine. */
static bool fuse_down(fuser *f, int comb_id, bool *changed) {
    const mc_node *c = mc_nod(f->g, comb_id);
    if (c->op != MC_OP_MOE_COMBINE || mc_val(f->g, c->out[0])->dt != MC_DT_F32) return true;
    const mc_node *d = private_product(f, c->in[0], comb_id);
    if (!d || d->op != MC_OP_MOE_EXPERT_MATMUL || d->in[1] != c->in[3]) return true;
    int in[6] = {d->in[0], d->in[1], d->in[2], c->in[1], c->in[2], c->in[4]};
    int old[2] = {(int)(d - f->g->nodes), comb_id};
    mc_node *n;
    if (!replace(f, MC_OP_MOE_FUSED_DOWN_COMBINE, in, 6, c->out[0], old, 2, comb_id, &n))
        return false;
    *changed = true;
    return true;
}

bool mc_pass_fuse_expert_ffn(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    fuser f = {g, cx->d};
    *changed = false;
    int n, *order = mc_graph_order_copy(g, &n); /* fusing removes nodes from g->order */
    for (int k = 0; k < n; k++) {
        if (mc_nod(g, order[k])->dead) continue;
        if (!fuse_up(&f, order[k], changed) || !fuse_down(&f, order[k], changed)) return false;
    }
    return true;
}
