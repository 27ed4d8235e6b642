/* ir/infer_loss.c: shape contracts of the training losses (docs/format.md):
 * SoftmaxCrossEntropyLoss with ONNX's inputs and attributes (opset 13+, without the
 * optional log_prob output) and moec's MSELoss. Both have MC_OPF_LOSS; the loss has the
 * dtype of the scores (pred), a scalar for reduction "mean" and "sum". */
#include "infer.h"

/* The loss for `none` has shape `elem`; otherwise it is a scalar. Both losses take one
 * list of reduction choices (REDUCTION_CHOICES in ir/attrs.def). */
static void set_loss(mc_infer_ctx *cx, mc_dtype dt, const mc_shape *elem) {
    mc_shape scalar = {0, {{0}}};
    bool none = mc_attr_choice(cx->n, "reduction") == MC_A_MSE_LOSS_reduction_none;
    inf_set(cx, 0, dt, none ? elem : &scalar);
}

/* SoftmaxCrossEntropyLoss(scores[N,C,d...] float, labels[N,d...] i32|i64, weights[C]?)
 *   -> loss[] (mean, sum) or loss[N,d...] (none), and the optional log_prob of the
 *   scores' shape; dtype of scores. */
bool mc_infer_SOFTMAX_CROSS_ENTROPY_LOSS(mc_infer_ctx *cx) {
    if (!inf_float(cx, 0) || !inf_int_index(cx, 1)) return false;
    const mc_shape *x = &inf_in(cx, 0)->shape, *lab = &inf_in(cx, 1)->shape;
    if (x->rank < 2)
        return inf_fail(cx, inf_sub(cx, 0), "scores have shape %s but must be [N,C] or [N,C,d...]",
                        inf_shape(cx, x));
    mc_shape per = {x->rank - 1, {x->d[0]}}; /* [N,d...]: the labels' and none-loss's shape */
    for (int i = 2; i < x->rank; i++)
        per.d[i - 1] = x->d[i];
    if (!mc_shape_eq(lab, &per))
        return inf_fail(cx, inf_sub(cx, 1),
                        "labels have shape %s but scores %s need %s (one label per row)",
                        inf_shape(cx, lab), inf_shape(cx, x), inf_shape(cx, &per));
    const mc_value *w = inf_in(cx, 2);
    if (w) {
        mc_shape want = {1, {x->d[1]}};
        if (!inf_same_dtype(cx, 0, 2)) return false;
        if (!mc_shape_eq(&w->shape, &want))
            return inf_fail(cx, inf_sub(cx, 2),
                            "weights have shape %s but must be %s (one per class)",
                            inf_shape(cx, &w->shape), inf_shape(cx, &want));
    }
    set_loss(cx, inf_in(cx, 0)->dt, &per);
    if (cx->n->nout > 1) inf_set(cx, 1, inf_in(cx, 0)->dt, x);
    return true;
}

/* MSELoss(pred, target) -> loss[] (mean, sum) or loss of pred's shape (none); pred and
 * target float of one dtype and one shape (no broadcasting). */
bool mc_infer_MSE_LOSS(mc_infer_ctx *cx) {
    if (!inf_float(cx, 0) || !inf_same_dtype(cx, 0, 1)) return false;
    const mc_shape *p = &inf_in(cx, 0)->shape, *t = &inf_in(cx, 1)->shape;
    if (!mc_shape_eq(p, t))
        return inf_fail(cx, inf_sub(cx, 1), "target has shape %s but pred has %s; they must match",
                        inf_shape(cx, t), inf_shape(cx, p));
    set_loss(cx, inf_in(cx, 0)->dt, p);
    return true;
}
