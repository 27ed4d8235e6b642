/* fuse-elementwise: elementwise ops become one loop (docs/fusion.md). Three rules:
 *
 *   y = moe.FusedDownCombine(..); z = Add(y, r) (or Add(r, y))
 *     ->  z = moe.FusedDownCombine(.., r)        r of y's shape: the residual joins the
 *                                                  epilogue, added after each token's sum
 *   v = p(..); z = u(.., v, ..)                  p and u among Add, Sub, Mul, Div, Neg,
 *     ->  z = moe.FusedElementwise(..) {program}  Sqrt, Exp, Log, Relu, Gelu, Sigmoid,
 *                                                  Tanh, moe.Silu, moe.FusedElementwise
 *
 *   v = LayerNormalization or RMSNormalization(x, scale, bias?) (or moe.FusedNorm);
 *   z = u(.., v, ..)                              u a chain link as above
 *     ->  z = moe.FusedNorm(x, scale, bias?, ..) {program}: the chain reads the
 *                                                  normalized x in register 0
 *
 * where the intermediate (y, v) is read by nothing else and is no graph output, v has
 * z's shape (nothing recomputed per broadcast element), everything is f32, and the
 * chain reads at most 3 distinct values (the normalized x counting as one) in at most
 * MC_EW_MAX_STEPS instructions. A norm heads a chain; it never joins one.
 * needs: shapes    keeps: shapes    breaks: unfused, the memory plan */
#include "elementwise.h"
#include "passes.h"

#include <string.h>

/* The operand of Add `id` that a residual-free FusedDownCombine writes for it alone;
 * *other: the Add's other operand. -1 when there is none. */
static int fused_sum(const mc_graph *g, int id, int *other) {
    const mc_node *add = mc_nod(g, id);
    if (add->op != MC_OP_ADD) return -1;
    for (int i = 0; i < 2; i++) {
        int v = add->in[i], r = add->in[1 - i], p = mc_val(g, v)->producer;
        if (p < 0 || mc_nod(g, p)->op != MC_OP_MOE_FUSED_DOWN_COMBINE || mc_nod(g, p)->nin > 6 ||
            mc_value_escapes(g, v) || mc_value_single_user(g, v) != id || v == r)
            continue;
        const mc_value *yv = mc_val(g, v), *rv = mc_val(g, r), *zv = mc_val(g, add->out[0]);
        if (rv->dt != MC_DT_F32 || !mc_shape_eq(&rv->shape, &yv->shape) ||
            !mc_shape_eq(&zv->shape, &yv->shape))
            continue;
        *other = r;
        return p;
    }
    return -1;
}

static bool fuse_residual(mc_graph *g, int add_id, int f_id, int r, mc_diag *d) {
    const mc_node *f = mc_nod(g, f_id), *add = mc_nod(g, add_id);
    int in[7], out = add->out[0], y = f->out[0];
    memcpy(in, f->in, sizeof(int) * 6);
    in[6] = r;
    const char *name = mc_arena_printf(g->arena, "%s+%s", f->name, add->name);
    int id =
        mc_graph_add_node_before(g, add_id, MC_OP_MOE_FUSED_DOWN_COMBINE, name, in, 7, &out, 1);
    mc_graph_remove_node(g, add_id);
    mc_graph_remove_node(g, f_id);
    mc_val(g, y)->dead = true;
    mc_graph_set_producer(g, id);
    return mc_infer_node(g, id, d);
}

/* ---- chains ---- */

/* A chain's inputs are values, except NORMED: the result of the norm that heads it. */
enum { NORMED = -2 };

typedef struct {
    int nin, in[3];
    int steps;
    int64_t prog[3 * MC_EW_MAX_STEPS];
    int head; /* the norm node whose result is NORMED, or -1 */
} chain;

static int opcode_of(const mc_node *n) {
    switch (n->op) {
    case MC_OP_ADD: return MC_EW_ADD;
    case MC_OP_SUB: return MC_EW_SUB;
    case MC_OP_MUL: return MC_EW_MUL;
    case MC_OP_DIV: return MC_EW_DIV;
    case MC_OP_NEG: return MC_EW_NEG;
    case MC_OP_SQRT: return MC_EW_SQRT;
    case MC_OP_EXP: return MC_EW_EXP;
    case MC_OP_LOG: return MC_EW_LOG;
    case MC_OP_RELU: return MC_EW_RELU;
    case MC_OP_GELU:
        return mc_attr_choice(n, "approximate") == MC_A_GELU_approximate_tanh ? MC_EW_GELU_TANH
                                                                              : MC_EW_GELU;
    case MC_OP_SIGMOID: return MC_EW_SIGMOID;
    case MC_OP_TANH: return MC_EW_TANH;
    case MC_OP_SILU: return MC_EW_SILU;
    default: return -1;
    }
}

/* A norm a chain can start from: not a LayerNormalization whose Mean and InvStdDev
 * outputs are asked for (the fused norm has only Y). */
static bool is_norm(const mc_node *n) {
    return (n->op == MC_OP_LAYER_NORM && n->nout == 1) || n->op == MC_OP_RMS_NORM ||
           n->op == MC_OP_MOE_FUSED_NORM;
}

/* A norm (plain, or fused with the chain it already heads) as the head of a chain. */
static bool as_norm_chain(const mc_graph *g, int id, chain *c) {
    const mc_node *n = mc_nod(g, id);
    for (int i = 0; i < n->nin; i++)
        if (n->in[i] >= 0 && mc_val(g, n->in[i])->dt != MC_DT_F32) return false;
    *c = (chain){.nin = 1, .in = {NORMED, -1, -1}, .head = id};
    if (n->op != MC_OP_MOE_FUSED_NORM) return true;
    const mc_attr *p = mc_attr_get(n, "program");
    c->steps = p->n / 3;
    memcpy(c->prog, p->ints, sizeof(int64_t) * (size_t)p->n);
    for (int i = 3; i < n->nin; i++)
        c->in[c->nin++] = n->in[i];
    return true;
}

/* Node n as a program over its inputs, or false when it is not a chain link. */
static bool as_chain(const mc_graph *g, const mc_node *n, chain *c) {
    if (mc_val(g, n->out[0])->dt != MC_DT_F32 || is_norm(n)) return false;
    for (int i = 0; i < n->nin; i++)
        if (n->in[i] < 0 || mc_val(g, n->in[i])->dt != MC_DT_F32) return false;
    if (n->op == MC_OP_MOE_FUSED_ELEMENTWISE) {
        const mc_attr *p = mc_attr_get(n, "program");
        *c = (chain){.nin = n->nin, .steps = p->n / 3, .head = -1};
        memcpy(c->in, n->in, sizeof(int) * (size_t)n->nin);
        memcpy(c->prog, p->ints, sizeof(int64_t) * (size_t)p->n);
        return true;
    }
    int op = opcode_of(n);
    if (op < 0) return false;
    *c = (chain){.nin = n->nin,
                 .in = {n->in[0], n->nin > 1 ? n->in[1] : -1},
                 .steps = 1,
                 .prog = {op, 0, n->nin > 1 ? 1 : -1},
                 .head = -1};
    return true;
}

/* Register r of chain `from` in the merged chain: its inputs by value, its results
 * after `base`. */
static int64_t remap(const chain *from, const chain *to, int64_t r, int base) {
    if (r < 0) return -1;
    if (r >= from->nin) return base + (r - from->nin);
    for (int i = 0; i < to->nin; i++)
        if (to->in[i] == from->in[r]) return i;
    MC_ASSERT(0);
    return -1;
}

/* p's chain then u's, where u reads p's result v: false when it does not fit. */
static bool merge(const chain *p, const chain *u, int v, chain *out) {
    *out = (chain){0};
    for (int k = 0; k < 2; k++) {
        const chain *c = k ? u : p;
        for (int i = 0; i < c->nin; i++) {
            bool seen = c->in[i] == v;
            for (int j = 0; j < out->nin && !seen; j++)
                seen = out->in[j] == c->in[i];
            if (seen) continue;
            if (out->nin == 3) return false;
            out->in[out->nin++] = c->in[i];
        }
    }
    if (p->steps + u->steps > MC_EW_MAX_STEPS) return false;
    int64_t *q = out->prog;
    for (int s = 0; s < p->steps; s++, q += 3) {
        q[0] = p->prog[3 * s];
        q[1] = remap(p, out, p->prog[3 * s + 1], out->nin);
        q[2] = remap(p, out, p->prog[3 * s + 2], out->nin);
    }
    /* v is p's last register, or the normalized value when p is a bare norm */
    int64_t vreg = p->steps ? out->nin + p->steps - 1 : 0;
    for (int s = 0; s < u->steps; s++, q += 3) {
        q[0] = u->prog[3 * s];
        for (int j = 1; j < 3; j++) {
            int64_t r = u->prog[3 * s + j];
            q[j] = r >= 0 && r < u->nin && u->in[r] == v ? vreg
                                                         : remap(u, out, r, out->nin + p->steps);
        }
    }
    out->steps = p->steps + u->steps;
    out->head = p->head;
    return true;
}

/* The producer of u's input v as a chain: a chain link or a norm. */
static bool producer_chain(const mc_graph *g, int pid, chain *c) {
    return is_norm(mc_nod(g, pid)) ? as_norm_chain(g, pid, c) : as_chain(g, mc_nod(g, pid), c);
}

/* moe.FusedNorm for chain m headed by a norm, before node uid, writing out. */
static int add_fused_norm(mc_graph *g, int uid, const chain *m, const char *name, int out) {
    const mc_node *h = mc_nod(g, m->head);
    bool rms =
        h->op == MC_OP_RMS_NORM || (h->op == MC_OP_MOE_FUSED_NORM &&
                                    mc_attr_choice(h, "kind") == MC_A_MOE_FUSED_NORM_kind_rms);
    int in[5] = {h->in[0], h->in[1], h->nin > 2 ? h->in[2] : -1, -1, -1}, nin = 3;
    for (int i = 1; i < m->nin; i++)
        in[nin++] = m->in[i];
    int id = mc_graph_add_node_before(g, uid, MC_OP_MOE_FUSED_NORM, name, in, nin, &out, 1);
    mc_node *f = mc_nod(g, id);
    mc_node_set_int(g, f, "axis", mc_attr_int(h, "axis"));
    mc_node_set_float(g, f, "epsilon", mc_attr_float(h, "epsilon"));
    mc_node_set_str(g, f, "kind", rms ? "rms" : "layer");
    mc_node_set_ints(g, f, "program", m->prog, 3 * m->steps);
    return id;
}

/* The fused node for chain m in place of node uid (whose output it writes). */
static int add_fused(mc_graph *g, int uid, const chain *m, const char *name) {
    int out = mc_nod(g, uid)->out[0];
    if (m->head >= 0) return add_fused_norm(g, uid, m, name, out);
    int id =
        mc_graph_add_node_before(g, uid, MC_OP_MOE_FUSED_ELEMENTWISE, name, m->in, m->nin, &out, 1);
    mc_node_set_ints(g, mc_nod(g, id), "program", m->prog, 3 * m->steps);
    return id;
}

/* Merges the producer of one of u's inputs into u; true (and *done) when it did. */
static bool fuse_chain(mc_graph *g, int uid, bool *done, mc_diag *d) {
    const mc_node *u = mc_nod(g, uid);
    chain cu, cp, m;
    *done = false;
    if (!as_chain(g, u, &cu)) return true;
    for (int i = 0; i < u->nin; i++) {
        int v = u->in[i], pid = mc_val(g, v)->producer;
        if (pid < 0 || mc_value_escapes(g, v) || mc_value_single_user(g, v) != uid ||
            !mc_shape_eq(&mc_val(g, v)->shape, &mc_val(g, u->out[0])->shape) ||
            !producer_chain(g, pid, &cp) || !merge(&cp, &cu, v, &m))
            continue;
        const char *name = mc_arena_printf(g->arena, "%s+%s", mc_nod(g, pid)->name, u->name);
        int id = add_fused(g, uid, &m, name);
        mc_graph_remove_node(g, uid);
        mc_graph_remove_node(g, pid);
        mc_val(g, v)->dead = true;
        mc_graph_set_producer(g, id);
        *done = true;
        return mc_infer_node(g, id, d);
    }
    return true;
}

bool mc_pass_fuse_elementwise(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    int n, *order = mc_graph_order_copy(g, &n); /* fusing removes nodes from g->order */
    for (int k = 0; k < n; k++) {
        if (mc_nod(g, order[k])->dead) continue;
        int r = -1, f = fused_sum(g, order[k], &r);
        bool done = false;
        if (f >= 0 && !fuse_residual(g, order[k], f, r, cx->d)) return false;
        if (f < 0 && !fuse_chain(g, order[k], &done, cx->d)) return false;
        *changed |= f >= 0 || done;
    }
    return true;
}
