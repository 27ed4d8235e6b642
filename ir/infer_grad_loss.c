/* ir/infer_grad_loss.c: shape contracts of the gradients of the losses and of the
 * optimizers (docs/autodiff.md). A loss gradient takes gy (the loss's gradient: a scalar
 * for mean and sum, the loss's shape for reduction none) and then its forward op's inputs,
 * checked as the forward op checks them; its one output is the gradient of the
 * differentiable input (probs, logits, p, scores or pred), of that input's shape and
 * dtype. An optimizer's outputs are the new param and state, of their shapes and dtypes. */
#include "infer.h"

#include <math.h>

/* Input i is a scalar of dtype dt (the gradient of a reduced loss). */
static bool scalar_of(mc_infer_ctx *cx, int i, mc_dtype dt) {
    return inf_dtype(cx, i, dt) && inf_rank(cx, i, 0);
}

/* Input i has the shape `want` and dtype dt (gy of an unreduced loss, or a state). */
static bool same_as(mc_infer_ctx *cx, int i, mc_dtype dt, const mc_shape *want, const char *what) {
    if (!inf_dtype(cx, i, dt)) return false;
    const mc_shape *s = &inf_in(cx, i)->shape;
    if (mc_shape_eq(s, want)) return true;
    return inf_fail(cx, inf_sub(cx, i), "%s has shape %s but must be %s", what, inf_shape(cx, s),
                    inf_shape(cx, want));
}

/* The [T,E] f32 router input at i, E constant. */
static bool router_input(mc_infer_ctx *cx, int i) {
    if (!inf_dtype(cx, i, MC_DT_F32) || !inf_rank(cx, i, 2)) return false;
    const mc_shape *s = &inf_in(cx, i)->shape;
    if (mc_dim_is_const(s->d[1])) return true;
    return inf_fail(cx, inf_sub(cx, i), "the expert dim of %s must be constant", inf_shape(cx, s));
}

/* Optional [T] bool mask at i, one entry per row of input `ref`. */
static bool mask_ok(mc_infer_ctx *cx, int i, int ref) {
    const mc_value *m = inf_in(cx, i);
    if (!m) return true;
    if (!inf_dtype(cx, i, MC_DT_BOOL) || !inf_rank(cx, i, 1)) return false;
    return inf_dim_eq(cx, &m->shape, 0, &inf_in(cx, ref)->shape, 0, inf_sub(cx, i),
                      "the mask must have one entry per token");
}

static void set_like(mc_infer_ctx *cx, int out, int in) {
    inf_set(cx, out, inf_in(cx, in)->dt, &inf_in(cx, in)->shape);
}

/* LoadBalanceLossGrad(gy[] f32, probs[T,E] f32, choice[T,K] i32, mask[T]?)
 *   -> g_probs[T,E] f32. The counts are constants (ROUTING.md §1.6). */
bool mc_infer_MOE_LOAD_BALANCE_LOSS_GRAD(mc_infer_ctx *cx) {
    if (!scalar_of(cx, 0, MC_DT_F32) || !router_input(cx, 1) || !inf_dtype(cx, 2, MC_DT_I32) ||
        !inf_rank(cx, 2, 2) ||
        !inf_dim_eq(cx, &inf_in(cx, 2)->shape, 0, &inf_in(cx, 1)->shape, 0, inf_sub(cx, 2),
                    "choices need one row per token") ||
        !mask_ok(cx, 3, 1))
        return false;
    bool seq = mc_attr_choice(cx->n, "scope") == MC_A_MOE_LOAD_BALANCE_LOSS_scope_sequence;
    const mc_attr *sl = mc_attr_get(cx->n, "seq_len");
    if (seq && (!sl || sl->i < 1))
        return inf_fail(cx, "attrs/seq_len", "scope \"sequence\" needs seq_len >= 1");
    if (!seq && sl)
        return inf_fail(cx, "attrs/seq_len", "seq_len is only meaningful with scope \"sequence\"");
    set_like(cx, 0, 1);
    return true;
}

/* ZLossGrad(gy[] f32, logits[T,E] f32, mask[T]?) -> g_logits[T,E] f32;
 * EntropyLossGrad(gy[] f32, p[T,E] f32, mask[T]?) -> g_p[T,E] f32. */
static bool router_loss_grad(mc_infer_ctx *cx) {
    if (!scalar_of(cx, 0, MC_DT_F32) || !router_input(cx, 1) || !mask_ok(cx, 2, 1)) return false;
    set_like(cx, 0, 1);
    return true;
}
bool mc_infer_MOE_Z_LOSS_GRAD(mc_infer_ctx *cx) {
    return router_loss_grad(cx);
}
bool mc_infer_MOE_ENTROPY_LOSS_GRAD(mc_infer_ctx *cx) {
    return router_loss_grad(cx);
}

/* gy at input 0 for a loss of dtype dt whose unreduced shape is `elem` (both losses take
 * REDUCTION_CHOICES). */
static bool loss_gy(mc_infer_ctx *cx, mc_dtype dt, const mc_shape *elem) {
    if (mc_attr_choice(cx->n, "reduction") != MC_A_MSE_LOSS_reduction_none)
        return scalar_of(cx, 0, dt);
    return same_as(cx, 0, dt, elem, "gy (reduction \"none\")");
}

/* SoftmaxCrossEntropyLossGrad(gy, scores[N,C,d...] float, labels[N,d...] i32|i64,
 *   weights[C]?) -> g_scores[N,C,d...]; gy of the scores' dtype, [] for mean and sum,
 *   [N,d...] for none. */
bool mc_infer_MOE_SOFTMAX_CROSS_ENTROPY_LOSS_GRAD(mc_infer_ctx *cx) {
    if (!inf_float(cx, 1) || !inf_int_index(cx, 2)) return false;
    const mc_shape *x = &inf_in(cx, 1)->shape, *lab = &inf_in(cx, 2)->shape;
    if (x->rank < 2)
        return inf_fail(cx, inf_sub(cx, 1), "scores have shape %s but must be [N,C] or [N,C,d...]",
                        inf_shape(cx, x));
    mc_shape per = {x->rank - 1, {x->d[0]}}; /* [N,d...] */
    for (int i = 2; i < x->rank; i++)
        per.d[i - 1] = x->d[i];
    if (!mc_shape_eq(lab, &per))
        return inf_fail(cx, inf_sub(cx, 2),
                        "labels have shape %s but scores %s need %s (one label per row)",
                        inf_shape(cx, lab), inf_shape(cx, x), inf_shape(cx, &per));
    if (inf_in(cx, 3)) {
        mc_shape want = {1, {x->d[1]}};
        if (!same_as(cx, 3, inf_in(cx, 1)->dt, &want, "weights (one per class)")) return false;
    }
    if (!loss_gy(cx, inf_in(cx, 1)->dt, &per)) return false;
    set_like(cx, 0, 1);
    return true;
}

/* MSELossGrad(gy, pred, target) -> g_pred of pred's shape and dtype; gy of that dtype, []
 * for mean and sum, pred's shape for none. */
bool mc_infer_MOE_MSE_LOSS_GRAD(mc_infer_ctx *cx) {
    if (!inf_float(cx, 1)) return false;
    const mc_value *p = inf_in(cx, 1);
    if (!same_as(cx, 2, p->dt, &p->shape, "target (pred's shape)") ||
        !loss_gy(cx, p->dt, &p->shape))
        return false;
    set_like(cx, 0, 1);
    return true;
}

/* Float attribute `name` in [lo, hi) (hi_open) or [lo, hi]. */
static bool attr_in(mc_infer_ctx *cx, const char *name, double lo, double hi, bool hi_open) {
    double v = mc_attr_float(cx->n, name);
    if (v >= lo && (hi_open ? v < hi : v <= hi)) return true;
    return inf_fail(cx, mc_arena_printf(cx->g->arena, "attrs/%s", name),
                    "%s is %g but must be in [%g, %g%c", name, v, lo, hi, hi_open ? ')' : ']');
}

/* param float; inputs first..last of param's dtype and shape. */
static bool param_and_state(mc_infer_ctx *cx, int last, const char *const *what) {
    if (!inf_float(cx, 0)) return false;
    const mc_value *p = inf_in(cx, 0);
    for (int i = 1; i <= last; i++)
        if (!same_as(cx, i, p->dt, &p->shape, what[i - 1])) return false;
    return true;
}

/* SGD(param, grad, velocity) -> param', velocity' (param's shape and dtype).
 * v' = momentum v + g + wd p,  p' = p - lr v'. */
bool mc_infer_MOE_SGD(mc_infer_ctx *cx) {
    static const char *const what[] = {"grad (param's shape)", "velocity (param's shape)"};
    if (!param_and_state(cx, 2, what) || !attr_in(cx, "lr", 0, INFINITY, true) ||
        !attr_in(cx, "momentum", 0, INFINITY, true) ||
        !attr_in(cx, "weight_decay", 0, INFINITY, true))
        return false;
    set_like(cx, 0, 0);
    set_like(cx, 1, 2);
    return true;
}

/* AdamW(param, grad, m, v, step[1] i64) -> param', m', v' (param's shape and dtype);
 * step is the already incremented step count t >= 1 (checked when run). */
bool mc_infer_MOE_ADAMW(mc_infer_ctx *cx) {
    static const char *const what[] = {"grad (param's shape)", "m (param's shape)",
                                       "v (param's shape)"};
    mc_shape one = {1, {{1, -1}}};
    if (!param_and_state(cx, 3, what) || !same_as(cx, 4, MC_DT_I64, &one, "step") ||
        !attr_in(cx, "lr", 0, INFINITY, true) || !attr_in(cx, "beta1", 0, 1, true) ||
        !attr_in(cx, "beta2", 0, 1, true) || !attr_in(cx, "epsilon", 0, INFINITY, true) ||
        !attr_in(cx, "weight_decay", 0, INFINITY, true))
        return false;
    set_like(cx, 0, 0);
    set_like(cx, 1, 2);
    set_like(cx, 2, 3);
    return true;
}
