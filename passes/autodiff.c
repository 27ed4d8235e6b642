/* autodiff: reverse mode over the forward graph of a training model (docs/autodiff.md).
 *
 * The loss is the sum of the scalar graph outputs of loss ops; each is seeded with 1.
 * A graph without one is left as it is (its forward runs in training mode).
 * Walking the forward nodes backwards, every node with a gradient on an output emits
 * the nodes computing the gradients of its float inputs that depend on a trained
 * param, as gradient ops (MC_OPF_GRAD) or compositions of forward ops; gradients
 * reaching one value from several users are summed. Integer and bool values carry no
 * gradient: routing decisions are constants (ROUTING.md §1.6).
 *
 * The gradient of every trained param p the loss reaches becomes the graph output
 * "grad.p" (recorded in g->grad_param/grad_value), which the optimizer pass consumes;
 * run without it, the pipeline computes the gradients.
 * New nodes go to the end of the order and are named "grad.<node>"; values
 * "grad.<value>".
 * needs: shapes, no moe.MoE (expand-moe)    keeps: shapes, verify    breaks: nothing */
#include "autodiff.h"

#include <string.h>

/* ---- building blocks ---- */

mc_op ad_op_named(const char *name) {
    mc_op op;
    if (!mc_op_from_name(name, &op)) mc_die("autodiff: no op %s in the op table", name);
    return op;
}

/* A node after the forward graph; defaults filled and shapes inferred. */
int ad_emit(ad *a, mc_op op, const int *in, int nin, int *out, int nout) {
    const char *base = mc_arena_printf(a->g->arena, "grad.%s", a->fwd ? a->fwd->name : "loss");
    for (int j = 0; j < nout; j++)
        out[j] = mc_graph_add_value(a->g, mc_graph_unique_name(a->g, base), MC_DT_F32, MC_VK_TEMP);
    int id = mc_graph_add_node(a->g, op, mc_graph_unique_name(a->g, base), in, nin, out, nout);
    mc_node_fill_defaults(a->g, mc_nod(a->g, id));
    return id;
}

void ad_infer(ad *a, int id) {
    if (a->ok) a->ok = mc_infer_node(a->g, id, a->d);
}

int ad_op1(ad *a, mc_op op, const int *in, int nin) {
    int out;
    ad_infer(a, ad_emit(a, op, in, nin, &out, 1));
    return out;
}

int ad_op2(ad *a, mc_op op, int x, int y) {
    return ad_op1(a, op, (const int[]){x, y}, 2);
}

/* Copies every attribute of the forward node the gradient op's schema also has. */
void ad_copy_attrs(ad *a, int id) {
    for (int i = 0; i < a->fwd->nattr; i++)
        if (mc_attr_schema_find(mc_nod(a->g, id)->op, a->fwd->attrs[i].name))
            mc_node_copy_attr(a->g, mc_nod(a->g, id), a->fwd, a->fwd->attrs[i].name);
}

/* A gradient op named `name` with the forward attributes; returns its node. */
int ad_grad_op(ad *a, const char *name, const int *in, int nin, int *out, int nout) {
    int id = ad_emit(a, ad_op_named(name), in, nin, out, nout);
    ad_copy_attrs(a, id);
    ad_infer(a, id);
    return id;
}

int ad_const_scalar(ad *a, float v, mc_dtype dt) {
    int id = mc_graph_add_value(a->g, mc_graph_unique_name(a->g, "grad.c"), dt, MC_VK_CONST);
    mc_value *x = mc_val(a->g, id);
    void *data = mc_arena_alloc(a->g->arena, sizeof v);
    if (dt == MC_DT_F32)
        memcpy(data, &v, sizeof v);
    else
        *(uint16_t *)data = dt == MC_DT_F16 ? mc_f32_to_f16(v) : mc_f32_to_bf16(v);
    x->data = data;
    x->nbytes = mc_dtype_size(dt);
    x->src = MC_SRC_INLINE;
    x->has_shape = true;
    x->shape.rank = 0;
    return id;
}

int ad_const_ints(ad *a, const int64_t *v, int n) {
    int id = mc_graph_add_value(a->g, mc_graph_unique_name(a->g, "grad.c"), MC_DT_I64, MC_VK_CONST);
    mc_value *x = mc_val(a->g, id);
    int64_t *data = mc_arena_alloc(a->g->arena, sizeof(int64_t) * (size_t)(n ? n : 1));
    memcpy(data, v, sizeof(int64_t) * (size_t)n);
    x->data = data;
    x->nbytes = sizeof(int64_t) * (size_t)n;
    x->src = MC_SRC_INLINE;
    x->has_shape = true;
    x->shape.rank = 1;
    x->shape.d[0] = mc_dim_const(n);
    return id;
}

bool ad_same_shape(ad *a, int x, int y) {
    return mc_shape_eq(&mc_val(a->g, x)->shape, &mc_val(a->g, y)->shape);
}

/* g summed down to like's shape (the adjoint of broadcasting). */
int ad_sum_to(ad *a, int g, int like) {
    return ad_same_shape(a, g, like) ? g : ad_op2(a, ad_op_named("moe.SumTo"), g, like);
}

int ad_zeros_like(ad *a, int v) {
    return ad_op2(a, ad_op_named("moe.BroadcastTo"), ad_const_scalar(a, 0, mc_val(a->g, v)->dt), v);
}

void ad_add_grad(ad *a, int v, int gv) {
    if (v < 0 || v >= a->nfwd || !a->needs[v] || gv < 0) return;
    a->grad[v] = a->grad[v] < 0 ? gv : ad_op2(a, MC_OP_ADD, a->grad[v], gv);
}

/* The gradient of forward output j, zeros when nothing reached it. */
int ad_gout(ad *a, int j) {
    int v = a->fwd->out[j];
    return a->grad[v] >= 0 ? a->grad[v] : ad_zeros_like(a, v);
}

int ad_in(const ad *a, int i) {
    return i < a->fwd->nin ? a->fwd->in[i] : -1;
}

bool ad_fail(ad *a, const char *what) {
    a->ok = false;
    return mc_node_error(a->d, a->g, a->fwd, NULL, "autodiff: %s", what);
}

/* ---- the pass ---- */

static bool is_float(const mc_value *v) {
    return mc_dtype_is_float(v->dt);
}

/* Is param `name` in the comma-separated list (NULL: every param trains)? */
static bool selected(const char *list, const char *name) {
    if (!list) return true;
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0) return true;
        p += len + (end != NULL);
    }
    return false;
}

/* Every name in --train-params must be a param of the model. */
static bool check_selection(ad *a, const char *list) {
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *name = mc_arena_printf(a->g->arena, "%.*s", (int)len, p);
        int v = mc_graph_find_value(a->g, name);
        if (v < 0 || mc_val(a->g, v)->kind != MC_VK_PARAM)
            return mc_error(a->d, NULL,
                            "--train-params names '%s', which is not a param of the model", name);
        p += len + (end != NULL);
    }
    return true;
}

/* needs[v]: v is a trained param or computed from one (float values only). */
static void mark_needs(ad *a, const mc_train_opts *t) {
    for (int v = 0; v < a->g->nvalues; v++) {
        const mc_value *x = mc_val(a->g, v);
        a->grad[v] = -1;
        a->needs[v] =
            !x->dead && x->kind == MC_VK_PARAM && is_float(x) && selected(t->params, x->name);
    }
    for (int pos = 0; pos < a->g->norder; pos++) {
        const mc_node *n = mc_nod(a->g, a->g->order[pos]);
        bool any = false;
        for (int i = 0; i < n->nin; i++)
            any |= n->in[i] >= 0 && a->needs[n->in[i]];
        for (int j = 0; j < n->nout && any; j++)
            a->needs[n->out[j]] = is_float(mc_val(a->g, n->out[j]));
    }
}

/* loss[v]: v is a loss op's result or computed from one (e.g. a sum of losses). */
static bool *mark_loss_derived(ad *a) {
    bool *loss = mc_arena_alloc(a->g->arena, (size_t)a->nfwd + 1);
    for (int pos = 0; pos < a->g->norder; pos++) {
        const mc_node *n = mc_nod(a->g, a->g->order[pos]);
        bool from = mc_op_infos[n->op].flags & MC_OPF_LOSS;
        for (int i = 0; i < n->nin && !from; i++)
            from = n->in[i] >= 0 && loss[n->in[i]];
        for (int j = 0; j < n->nout; j++)
            loss[n->out[j]] = from;
    }
    return loss;
}

/* Does value `from` feed the computation of value `to`? One walk back over the order. */
static bool feeds(ad *a, int from, int to) {
    bool *anc = mc_arena_alloc(a->g->arena, (size_t)a->nfwd + 1);
    anc[to] = true;
    for (int k = a->g->norder - 1; k >= 0; k--) {
        const mc_node *n = mc_nod(a->g, a->g->order[k]);
        bool reached = false;
        for (int j = 0; j < n->nout; j++)
            reached |= n->out[j] < a->nfwd && anc[n->out[j]];
        for (int i = 0; i < n->nin && reached; i++)
            if (n->in[i] >= 0 && n->in[i] < a->nfwd) anc[n->in[i]] = true;
    }
    return anc[from];
}

/* The loss: every scalar float graph output computed from a loss op, except those that
 * another such output already includes (outputs ce and ce + lbl count ce once).
 * Each is seeded with 1; returns how many. */
static int seed_losses(ad *a) {
    bool *loss = mark_loss_derived(a);
    int seeded = 0, *outs = a->g->outputs, n = a->g->noutputs;
    for (int i = 0; i < n; i++) {
        const mc_value *v = mc_val(a->g, outs[i]);
        bool candidate = loss[outs[i]] && v->shape.rank == 0 && mc_dtype_is_float(v->dt);
        for (int j = 0; j < n && candidate; j++)
            candidate = j == i || outs[j] == outs[i] || !loss[outs[j]] ||
                        mc_val(a->g, outs[j])->shape.rank != 0 || !feeds(a, outs[i], outs[j]);
        if (!candidate || a->grad[outs[i]] >= 0) continue;
        a->grad[outs[i]] = ad_const_scalar(a, 1.0f, v->dt);
        seeded++;
    }
    return seeded;
}

static void walk_backwards(ad *a, const int *order, int n) {
    for (int k = n - 1; k >= 0 && a->ok; k--) {
        mc_node copy = *mc_nod(a->g, order[k]); /* the node array may grow meanwhile */
        bool reached = false;
        for (int j = 0; j < copy.nout; j++)
            reached |= a->grad[copy.out[j]] >= 0;
        if (!reached) continue;
        a->fwd = &copy;
        ad_backprop(a);
    }
    a->fwd = NULL;
}

/* The output "grad.<param>" of every trained param, made before any other value so the
 * name is free; recorded in the graph for the optimizer pass. */
static int *reserve_grad_outputs(ad *a) {
    int *out = mc_arena_alloc(a->g->arena, sizeof(int) * (size_t)(a->nfwd + 1));
    for (int v = 0; v < a->nfwd; v++) {
        const mc_value *x = mc_val(a->g, v);
        out[v] = -1;
        if (x->kind != MC_VK_PARAM || !a->needs[v] || x->dead) continue;
        const char *name = mc_arena_printf(a->g->arena, "grad.%s", x->name);
        out[v] = mc_graph_add_value(a->g, mc_graph_unique_name(a->g, name), x->dt, MC_VK_TEMP);
    }
    return out;
}

/* A trained param the loss reaches gets its gradient as an output; one it does not
 * reach trains nothing (no zero gradient to decay it), and naming it in --train-params
 * is an error. */
static bool expose_grads(ad *a, const int *out, const char *selected) {
    for (int v = 0; v < a->nfwd && a->ok; v++) {
        if (out[v] < 0) continue;
        const mc_value *x = mc_val(a->g, v);
        if (a->grad[v] < 0) {
            mc_val(a->g, out[v])->dead = true;
            if (selected)
                return mc_error(a->d, NULL,
                                "--train-params names '%s', but the loss does not depend "
                                "on it (only through routing decisions, or not at all)",
                                x->name);
            continue;
        }
        a->fwd = NULL;
        int id = mc_graph_add_node(a->g, MC_OP_IDENTITY, mc_val(a->g, out[v])->name, &a->grad[v], 1,
                                   &out[v], 1);
        ad_infer(a, id);
        mc_graph_add_output(a->g, out[v]);
        mc_graph_add_grad(a->g, v, out[v]);
    }
    return a->ok;
}

bool mc_pass_autodiff(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    if (!cx->training) return true;
    ad a = {.g = g, .d = cx->d, .ok = true};
    int nvalues = g->nvalues, norder = g->norder;
    a.nfwd = nvalues;
    a.grad = mc_arena_alloc(g->arena, sizeof(int) * (size_t)(nvalues + 1));
    a.needs = mc_arena_alloc(g->arena, sizeof(bool) * (size_t)(nvalues + 1));
    if (!check_selection(&a, cx->train->params)) return false;
    mark_needs(&a, cx->train);
    int *outs = reserve_grad_outputs(&a);
    /* Without a loss output there is nothing to train: the graph stays the forward
     * pass in training mode (e.g. to look at GW-MoE's broadcast). */
    if (seed_losses(&a) == 0) {
        for (int v = 0; v < nvalues; v++)
            if (outs[v] >= 0) mc_val(g, outs[v])->dead = true;
        return true;
    }
    int *order = mc_arena_alloc(g->arena, sizeof(int) * (size_t)(norder + 1));
    memcpy(order, g->order, sizeof(int) * (size_t)norder);
    walk_backwards(&a, order, norder);
    *changed = true;
    return a.ok && expose_grads(&a, outs, cx->train->params);
}
