/* optimizer: turns the gradients autodiff exposed (g->grad_param/grad_value, also the
 * "grad.<param>" outputs) into one
 * optimizer step per trained param (docs/autodiff.md):
 *
 *   p', v'     = moe.SGD(p, grad.p, v)              {lr, momentum, weight_decay}
 *   p', m', v' = moe.AdamW(p, grad.p, m, v, step')  {lr, beta1, beta2, epsilon, weight_decay}
 *   step'      = Add(step, 1)                       one counter for the whole model
 *
 * The optimizer state (velocity; m, v; the step counter) becomes zero-initialized
 * params named "opt.<param>.<state>" and "opt.step", saved with the weights; the
 * graph records p <- p' and each state <- state' as its updates, and the gradient
 * outputs are dropped. Hyperparameters come from the compile flags (--optimizer, --lr,
 * ...); those not given take the op's defaults.
 * needs: autodiff    keeps: shapes, verify    breaks: nothing */
#include "frontend.h"
#include "passes.h"

#include <string.h>

typedef struct {
    mc_graph *g;
    mc_diag *d;
    const mc_train_opts *t;
    bool adamw;
    int step; /* opt.step' (AdamW), -1 until made */
    bool ok;
    mc_safetensors *resume; /* the weights file, for a run that continues training */
} opt;

/* Optimizer state saved by an earlier run (--save-weights) continues from the weights
 * file the model was loaded with; a state tensor of another dtype or shape is an error. */
static bool resume_state(opt *o, mc_value *s) {
    const mc_st_tensor *t = o->resume ? mc_st_find(o->resume, s->name) : NULL;
    if (!t) return true;
    int64_t want[MC_MAX_RANK];
    mc_shape_eval(&s->shape, NULL, want);
    bool same = t->dt == s->dt && t->rank == s->shape.rank;
    for (int i = 0; same && i < t->rank; i++)
        same = t->dims[i] == want[i];
    if (!same)
        return mc_error(o->d, NULL, "%s: optimizer state '%s' does not fit the model's %s",
                        o->g->weights_override ? o->g->weights_override : o->g->weights_path,
                        s->name, mc_dtype_name(s->dt));
    s->data = t->data;
    s->src = MC_SRC_FILE;
    s->file_key = s->name;
    return true;
}

static int state_like(opt *o, int p, const char *what) {
    const mc_value *x = mc_val(o->g, p);
    const char *name = mc_arena_printf(o->g->arena, "opt.%s.%s", x->name, what);
    int id = mc_graph_add_value(o->g, mc_graph_unique_name(o->g, name), x->dt, MC_VK_PARAM);
    mc_value *s = mc_val(o->g, id);
    s->shape = mc_val(o->g, p)->shape;
    s->has_shape = true;
    s->nbytes = (size_t)mc_shape_numel(&s->shape, NULL) * mc_dtype_size(s->dt);
    s->data = mc_arena_alloc(o->g->arena, s->nbytes ? s->nbytes : 1); /* zeros */
    s->src = MC_SRC_INIT;
    s->init = (mc_init_recipe){.dist = "zeros"};
    if (o->ok) o->ok = resume_state(o, s);
    return id;
}

static void set_hyper(opt *o, mc_node *n, const char *name, double v) {
    if (v >= 0) mc_node_set_float(o->g, n, name, v);
}

static int node(opt *o, mc_op op, const char *name, const int *in, int nin, int *out, int nout) {
    int id = mc_graph_add_node(o->g, op, mc_graph_unique_name(o->g, name), in, nin, out, nout);
    mc_node *n = mc_nod(o->g, id);
    set_hyper(o, n, "lr", o->t->lr >= 0 ? o->t->lr : 1e-3);
    set_hyper(o, n, "weight_decay", o->t->weight_decay);
    if (o->adamw) {
        set_hyper(o, n, "beta1", o->t->beta1);
        set_hyper(o, n, "beta2", o->t->beta2);
        set_hyper(o, n, "epsilon", o->t->eps);
    } else {
        set_hyper(o, n, "momentum", o->t->momentum);
    }
    mc_node_fill_defaults(o->g, n);
    if (o->ok) o->ok = mc_infer_node(o->g, id, o->d);
    return id;
}

static int temp(opt *o, const char *name) {
    return mc_graph_add_value(o->g, mc_graph_unique_name(o->g, name), MC_DT_F32, MC_VK_TEMP);
}

/* A [1] i64 value: the step counter (a zero param) or the constant 1. */
static int i64_one_elem(opt *o, const char *name, mc_value_kind kind, int64_t value) {
    int id = mc_graph_add_value(o->g, mc_graph_unique_name(o->g, name), MC_DT_I64, kind);
    mc_value *v = mc_val(o->g, id);
    v->shape.rank = 1;
    v->shape.d[0] = mc_dim_const(1);
    v->has_shape = true;
    v->nbytes = sizeof(int64_t);
    int64_t *data = mc_arena_alloc(o->g->arena, sizeof(int64_t));
    *data = value;
    v->data = data;
    v->src = kind == MC_VK_PARAM ? MC_SRC_INIT : MC_SRC_INLINE;
    if (kind == MC_VK_PARAM) v->init = (mc_init_recipe){.dist = "zeros"};
    if (kind == MC_VK_PARAM && o->ok) o->ok = resume_state(o, v);
    return id;
}

/* opt.step' = opt.step + 1, made once for the whole model. */
static int step_counter(opt *o) {
    if (o->step >= 0) return o->step;
    int s = i64_one_elem(o, "opt.step", MC_VK_PARAM, 0);
    int one = i64_one_elem(o, "opt.one", MC_VK_CONST, 1);
    int next = temp(o, "opt.step.next");
    int id = mc_graph_add_node(o->g, MC_OP_ADD, "opt.step", (const int[]){s, one}, 2, &next, 1);
    if (o->ok) o->ok = mc_infer_node(o->g, id, o->d);
    mc_graph_add_update(o->g, next, s);
    o->step = next;
    return next;
}

static void step_param(opt *o, int p, int grad) {
    const char *pn = mc_val(o->g, p)->name;
    int out[3] = {temp(o, mc_arena_printf(o->g->arena, "%s.next", pn)), -1, -1};
    if (o->adamw) {
        int m = state_like(o, p, "m"), v = state_like(o, p, "v");
        out[1] = temp(o, mc_arena_printf(o->g->arena, "opt.%s.m.next", pn));
        out[2] = temp(o, mc_arena_printf(o->g->arena, "opt.%s.v.next", pn));
        int in[5] = {p, grad, m, v, step_counter(o)};
        mc_op op;
        MC_ASSERT(mc_op_from_name("moe.AdamW", &op));
        node(o, op, mc_arena_printf(o->g->arena, "opt.%s", pn), in, 5, out, 3);
        mc_graph_add_update(o->g, out[1], m);
        mc_graph_add_update(o->g, out[2], v);
    } else {
        int vel = state_like(o, p, "velocity");
        out[1] = temp(o, mc_arena_printf(o->g->arena, "opt.%s.velocity.next", pn));
        int in[3] = {p, grad, vel};
        mc_op op;
        MC_ASSERT(mc_op_from_name("moe.SGD", &op));
        node(o, op, mc_arena_printf(o->g->arena, "opt.%s", pn), in, 3, out, 2);
        mc_graph_add_update(o->g, out[1], vel);
    }
    mc_graph_add_update(o->g, out[0], p);
}

static int output_index(const mc_graph *g, int value) {
    for (int i = 0; i < g->noutputs; i++)
        if (g->outputs[i] == value) return i;
    return -1;
}

bool mc_pass_optimizer(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    if (!cx->training) return true;
    const char *which = cx->train->optimizer ? cx->train->optimizer : "adamw";
    if (strcmp(which, "adamw") != 0 && strcmp(which, "sgd") != 0)
        return mc_error(cx->d, NULL, "--optimizer must be adamw or sgd, got '%s'", which);
    opt o = {.g = g,
             .d = cx->d,
             .t = cx->train,
             .adamw = strcmp(which, "adamw") == 0,
             .step = -1,
             .ok = true};
    const char *file = g->weights_override ? g->weights_override : g->weights_path;
    if (file && g->ngrads) {
        o.resume = mc_arena_alloc(g->arena, sizeof *o.resume);
        if (!mc_st_open(o.resume, file, g->arena, cx->d)) return false;
    }
    for (int i = 0; i < g->ngrads && o.ok; i++) {
        step_param(&o, g->grad_param[i], g->grad_value[i]);
        int at = output_index(g, g->grad_value[i]);
        if (at >= 0) mc_graph_remove_output(g, at);
        *changed = true;
    }
    g->ngrads = 0; /* consumed */
    return o.ok;
}
