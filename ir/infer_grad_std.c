/* ir/infer_grad_std.c: shape contracts of the gradients of standard ops (docs/autodiff.md).
 *
 * Each gradient op takes the gradient of the forward op's output first, then the forward
 * op's inputs as the forward node had them. The forward inputs are checked as the forward
 * op's inference checks them, the incoming gradient against the dtype and shape the
 * forward output has, and every output takes the shape and dtype of the forward input it
 * is the gradient of. Integer inputs carry no gradient, so the differentiated ones must
 * be float.
 */
#include "infer.h"

/* Input g (a gradient) has input x's dtype and the shape `want` of the forward output. */
static bool grad_matches(mc_infer_ctx *cx, int g, int x, const mc_shape *want) {
    const mc_value *gv = inf_in(cx, g);
    if (!inf_float(cx, g) || !inf_same_dtype(cx, x, g)) return false;
    if (mc_shape_eq(&gv->shape, want)) return true;
    return inf_fail(cx, inf_sub(cx, g),
                    "input %d (%s, the gradient of the forward output) has shape %s but the "
                    "forward output has shape %s",
                    g, gv->name, inf_shape(cx, &gv->shape), inf_shape(cx, want));
}

/* Shape `from` (of input `in`) broadcasts to `to` without changing it: right-aligned,
 * each dim equal or a constant 1. */
static bool broadcasts_to(mc_infer_ctx *cx, int in, const mc_shape *from, const mc_shape *to,
                          const char *to_what) {
    bool ok = from->rank <= to->rank;
    for (int i = 1; ok && i <= from->rank; i++) {
        mc_dim f = from->d[from->rank - i], t = to->d[to->rank - i];
        ok = mc_dim_eq(f, t) || (mc_dim_is_const(f) && f.c == 1);
    }
    if (ok) return true;
    return inf_fail(cx, inf_sub(cx, in),
                    "input %d (%s) has shape %s, which does not broadcast to %s %s", in,
                    inf_in(cx, in)->name, inf_shape(cx, from), to_what, inf_shape(cx, to));
}

/* moe.UnaryGrad(gy, x) -> gx: x float, gy of x's dtype and shape. */
bool mc_infer_MOE_UNARY_GRAD(mc_infer_ctx *cx) {
    const mc_value *x = inf_in(cx, 1);
    if (!inf_float(cx, 1) || !grad_matches(cx, 0, 1, &x->shape)) return false;
    inf_set(cx, 0, x->dt, &x->shape);
    return true;
}

/* moe.SumTo(g, like) -> like's shape and dtype: g summed over the dims numpy broadcasting
 * added or stretched to reach g's shape from like's. like must broadcast to g. */
bool mc_infer_MOE_SUM_TO(mc_infer_ctx *cx) {
    const mc_value *g = inf_in(cx, 0), *like = inf_in(cx, 1);
    if (!inf_float(cx, 0) || !inf_float(cx, 1) ||
        !broadcasts_to(cx, 1, &like->shape, &g->shape, "the shape of input 0"))
        return false;
    inf_set(cx, 0, like->dt, &like->shape);
    return true;
}

/* moe.BroadcastTo(g, like) -> like's shape, g's dtype. Without `axes` g broadcasts (numpy)
 * to like; with `axes` g lacks those axes of like (a reduction without keepdims), which
 * count as dims of 1 first. like only gives the shape: any dtype. */
bool mc_infer_MOE_BROADCAST_TO(mc_infer_ctx *cx) {
    const mc_value *g = inf_in(cx, 0), *like = inf_in(cx, 1);
    const mc_attr *ax = mc_attr_get(cx->n, "axes");
    if (!inf_float(cx, 0)) return false;
    mc_shape from = g->shape;
    if (ax && ax->n > 0) {
        int r = like->shape.rank;
        if (g->shape.rank + ax->n != r)
            return inf_fail(cx, "attrs/axes",
                            "axes has %d entries and input 0 (%s) has rank %d, but together they "
                            "must give the rank %d of input 1 (%s)",
                            ax->n, g->name, g->shape.rank, r, like->name);
        bool at[MC_MAX_RANK] = {0};
        for (int i = 0; i < ax->n; i++) {
            int a;
            if (!inf_axis(cx, "axes", ax->ints[i], r, &a)) return false;
            if (at[a]) return inf_fail(cx, "attrs/axes", "axis %d is listed twice", a);
            at[a] = true;
        }
        for (int i = 0, k = 0; i < r; i++)
            from.d[i] = at[i] ? mc_dim_const(1) : g->shape.d[k++];
        from.rank = r;
    }
    if (!broadcasts_to(cx, 0, &from, &like->shape, "the shape of input 1")) return false;
    inf_set(cx, 0, g->dt, &like->shape);
    return true;
}

/* moe.SoftmaxGrad(gy, y) -> gx: y the forward output (log-probabilities when log = 1),
 * gy of its dtype and shape; axis as the forward op's. */
bool mc_infer_MOE_SOFTMAX_GRAD(mc_infer_ctx *cx) {
    const mc_value *y = inf_in(cx, 1);
    int axis;
    int64_t log_form = mc_attr_int(cx->n, "log");
    if (!inf_float(cx, 1) ||
        !inf_axis(cx, "axis", mc_attr_int(cx->n, "axis"), y->shape.rank, &axis))
        return false;
    if (log_form != 0 && log_form != 1)
        return inf_fail(cx, "attrs/log", "log is %lld but must be 0 (Softmax) or 1 (LogSoftmax)",
                        (long long)log_form);
    if (!grad_matches(cx, 0, 1, &y->shape)) return false;
    inf_set(cx, 0, y->dt, &y->shape);
    return true;
}

/* moe.LayerNormGrad(gy, x, scale, bias?) -> gx, gscale, gbias and moe.RMSNormGrad(gy, x,
 * scale) -> gx, gscale: x, scale and bias as the forward op's (scale and bias have the
 * dims of x from axis on), gy of x's shape. gbias is there exactly when bias is. */
static bool norm_grad(mc_infer_ctx *cx, bool layer) {
    const mc_value *x = inf_in(cx, 1);
    mc_shape tail;
    if (!inf_norm_inputs(cx, 1, 2, &tail)) return false;
    if (!grad_matches(cx, 0, 1, &x->shape)) return false;
    int nout = layer && inf_in(cx, 3) ? 3 : 2;
    if (cx->n->nout != nout)
        return inf_fail(cx, NULL,
                        "the node has %d outputs but must have %d: gx, gscale%s (gbias exactly "
                        "when the bias input is given)",
                        cx->n->nout, nout, nout == 3 ? ", gbias" : "");
    inf_set(cx, 0, x->dt, &x->shape);
    for (int j = 1; j < nout; j++)
        inf_set(cx, j, x->dt, &tail);
    return true;
}
bool mc_infer_MOE_LAYER_NORM_GRAD(mc_infer_ctx *cx) {
    return norm_grad(cx, true);
}
bool mc_infer_MOE_RMS_NORM_GRAD(mc_infer_ctx *cx) {
    return norm_grad(cx, false);
}

/* moe.GatherGrad(gy, data, indices) -> gdata of data's shape and dtype (a scatter-add);
 * gy has Gather's output shape data[:axis] + indices.shape + data[axis+1:]. */
bool mc_infer_MOE_GATHER_GRAD(mc_infer_ctx *cx) {
    const mc_value *x = inf_in(cx, 1), *idx = inf_in(cx, 2);
    int axis;
    if (!inf_float(cx, 1) || !inf_int_index(cx, 2) ||
        !inf_axis(cx, "axis", mc_attr_int(cx->n, "axis"), x->shape.rank, &axis))
        return false;
    if (x->shape.rank - 1 + idx->shape.rank > MC_MAX_RANK)
        return inf_fail(cx, NULL, "Gather's result rank would exceed %d", MC_MAX_RANK);
    mc_shape fwd = {0, {{0}}};
    for (int i = 0; i < axis; i++)
        fwd.d[fwd.rank++] = x->shape.d[i];
    for (int i = 0; i < idx->shape.rank; i++)
        fwd.d[fwd.rank++] = idx->shape.d[i];
    for (int i = axis + 1; i < x->shape.rank; i++)
        fwd.d[fwd.rank++] = x->shape.d[i];
    if (!grad_matches(cx, 0, 1, &fwd)) return false;
    inf_set(cx, 0, x->dt, &x->shape);
    return true;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* Length of one sliced constant axis of size dim (ONNX clamping, as Slice's). */
static int64_t slice_len(int64_t dim, int64_t start, int64_t end, int64_t step) {
    int64_t s = start < 0 ? start + dim : start, e = end < 0 ? end + dim : end;
    if (step > 0) {
        s = clamp64(s, 0, dim);
        e = clamp64(e, 0, dim);
        return e > s ? (e - s + step - 1) / step : 0;
    }
    s = clamp64(s, -1, dim - 1);
    e = clamp64(e, -1, dim - 1);
    return s > e ? (s - e - step - 1) / -step : 0;
}

/* moe.SliceGrad(gy, data, starts, ends, axes?, steps?) -> gdata of data's shape and dtype,
 * gy where Slice read and zeros elsewhere. The slice operands are Slice's (constants; a
 * symbolic axis only taken whole); gy has the slice's shape. */
bool mc_infer_MOE_SLICE_GRAD(mc_infer_ctx *cx) {
    const mc_value *x = inf_in(cx, 1);
    int64_t st[MC_MAX_RANK], en[MC_MAX_RANK], ax[MC_MAX_RANK], sp[MC_MAX_RANK];
    int n, ne, na = 0, ns = 0;
    bool has_ax = inf_in(cx, 4) != NULL, has_sp = inf_in(cx, 5) != NULL;
    if (!inf_float(cx, 1) || !inf_const_ints(cx, 2, "starts", st, &n, MC_MAX_RANK) ||
        !inf_const_ints(cx, 3, "ends", en, &ne, MC_MAX_RANK) ||
        (has_ax && !inf_const_ints(cx, 4, "axes", ax, &na, MC_MAX_RANK)) ||
        (has_sp && !inf_const_ints(cx, 5, "steps", sp, &ns, MC_MAX_RANK)))
        return false;
    if (ne != n || (has_ax && na != n) || (has_sp && ns != n))
        return inf_fail(cx, inf_sub(cx, 3),
                        "starts, ends, axes and steps must have the same length");
    mc_shape fwd = x->shape;
    bool seen[MC_MAX_RANK] = {0};
    for (int i = 0; i < n; i++) {
        int a;
        if (!inf_axis(cx, "axes", has_ax ? ax[i] : i, x->shape.rank, &a)) return false;
        if (seen[a]) return inf_fail(cx, inf_sub(cx, 4), "axis %d is sliced twice", a);
        seen[a] = true;
        int64_t step = has_sp ? sp[i] : 1;
        if (step == 0) return inf_fail(cx, inf_sub(cx, 5), "steps[%d] is 0", i);
        mc_dim d = x->shape.d[a];
        if (d.sym >= 0) {
            if (st[i] != 0 || step != 1 || en[i] < d.c * cx->g->syms[d.sym].max)
                return inf_fail(cx, inf_sub(cx, 2),
                                "axis %d is symbolic (%s): it can only be sliced whole", a,
                                inf_shape(cx, &x->shape));
            continue;
        }
        int64_t len = slice_len(d.c, st[i], en[i], step);
        if (len < 1) return inf_fail(cx, inf_sub(cx, 2), "slice of axis %d is empty", a);
        fwd.d[a] = mc_dim_const(len);
    }
    if (!grad_matches(cx, 0, 1, &fwd)) return false;
    inf_set(cx, 0, x->dt, &x->shape);
    return true;
}

/* moe.TopKGrad(gvalues, x, K[1] const) -> gx of x's shape and dtype: gvalues scattered to
 * the forward top-k positions. x, K and the attributes as TopK's; gvalues has TopK's
 * values shape (x's with K along axis). */
bool mc_infer_MOE_TOPK_GRAD(mc_infer_ctx *cx) {
    const mc_value *x = inf_in(cx, 1);
    int axis, n;
    int64_t k[1];
    if (!inf_float(cx, 1) ||
        !inf_axis(cx, "axis", mc_attr_int(cx->n, "axis"), x->shape.rank, &axis) ||
        !inf_const_ints(cx, 2, "K", k, &n, 1))
        return false;
    if (n != 1) return inf_fail(cx, inf_sub(cx, 2), "K must hold exactly one value");
    mc_dim d = x->shape.d[axis];
    if (!mc_dim_is_const(d))
        return inf_fail(cx, "attrs/axis", "TopK along a symbolic dim is not supported");
    if (k[0] < 1 || k[0] > d.c)
        return inf_fail(cx, inf_sub(cx, 2),
                        "K is %lld but must be between 1 and %lld (the axis size)", (long long)k[0],
                        (long long)d.c);
    mc_shape fwd = x->shape;
    fwd.d[axis] = mc_dim_const(k[0]);
    if (!grad_matches(cx, 0, 1, &fwd)) return false;
    inf_set(cx, 0, x->dt, &x->shape);
    return true;
}

/* moe.ReduceMaxGrad(gy, x, axes?) -> gx of x's shape and dtype: gy split evenly among the
 * tied maxima of each reduced group. axes (constant) and the attributes as ReduceMax's;
 * gy has ReduceMax's output shape. */
bool mc_infer_MOE_REDUCE_MAX_GRAD(mc_infer_ctx *cx) {
    const mc_value *x = inf_in(cx, 1);
    int64_t axes[MC_MAX_RANK];
    int n = 0;
    if (!inf_float(cx, 1) ||
        (inf_in(cx, 2) && !inf_const_ints(cx, 2, "axes", axes, &n, MC_MAX_RANK)))
        return false;
    bool red[MC_MAX_RANK] = {0};
    if (n == 0 && !mc_attr_int(cx->n, "noop_with_empty_axes"))
        for (int i = 0; i < x->shape.rank; i++)
            red[i] = true;
    for (int i = 0; i < n; i++) {
        int a;
        if (!inf_axis(cx, "axes", axes[i], x->shape.rank, &a)) return false;
        red[a] = true;
    }
    bool keep = mc_attr_int(cx->n, "keepdims") != 0;
    mc_shape fwd = {0, {{0}}};
    for (int i = 0; i < x->shape.rank; i++)
        if (!red[i])
            fwd.d[fwd.rank++] = x->shape.d[i];
        else if (keep)
            fwd.d[fwd.rank++] = mc_dim_const(1);
    if (!grad_matches(cx, 0, 1, &fwd)) return false;
    inf_set(cx, 0, x->dt, &x->shape);
    return true;
}
