/* ir/infer_tensor.c: shape contracts of the shape-manipulation ops (Reshape,
 * Transpose, Concat, Split, Slice, Gather, Reduce*). Shape operands (Reshape's shape,
 * Split's split, Slice's starts/ends/axes/steps, Reduce's axes) must be constant
 * initializers: every shape in moec is known at compile time up to symbols. */
#include "infer.h"

#include <limits.h>

/* Reshape(data, shape const): 0 copies the input dim (allowzero=0), one -1 takes
 * what is left, including a symbolic factor: [T,8] -> [-1,2,4] gives [T,2,4]. */
bool mc_infer_RESHAPE(mc_infer_ctx *cx) {
    const mc_value *x = inf_in(cx, 0);
    int64_t t[MC_MAX_RANK];
    int n;
    if (!inf_const_ints(cx, 1, "target shape", t, &n, MC_MAX_RANK)) return false;
    bool allowzero = mc_attr_int(cx->n, "allowzero") != 0;
    bool copied[MC_MAX_RANK] = {0};
    mc_shape out = {n, {{0}}};
    int infer_at = -1;
    int64_t known = 1;
    for (int i = 0; i < n; i++) {
        if (t[i] == 0 && !allowzero) {
            if (i >= x->shape.rank)
                return inf_fail(cx, inf_sub(cx, 1), "shape[%d] is 0 but the input has rank %d", i,
                                x->shape.rank);
            out.d[i] = x->shape.d[i];
            copied[i] = true;
        } else if (t[i] == -1) {
            if (infer_at >= 0) return inf_fail(cx, inf_sub(cx, 1), "shape has more than one -1");
            infer_at = i;
        } else if (t[i] < 1) {
            return inf_fail(cx, inf_sub(cx, 1), "shape[%d] is %lld but must be positive, 0 or -1",
                            i, (long long)t[i]);
        } else {
            out.d[i] = mc_dim_const(t[i]);
            known *= t[i];
        }
    }
    int64_t rem_c = 1;
    int rem_sym = -1;
    for (int i = 0; i < x->shape.rank; i++) {
        if (copied[i]) continue;
        rem_c *= x->shape.d[i].c;
        if (x->shape.d[i].sym < 0) continue;
        if (rem_sym >= 0)
            return inf_fail(cx, inf_sub(cx, 1), "cannot merge two symbolic dims of %s",
                            inf_shape(cx, &x->shape));
        rem_sym = x->shape.d[i].sym;
    }
    if (infer_at >= 0) {
        if (rem_c % known) goto mismatch;
        out.d[infer_at] =
            rem_sym >= 0 ? mc_dim_sym(rem_sym, rem_c / known) : mc_dim_const(rem_c / known);
    } else if (rem_sym >= 0 || rem_c != known) {
        goto mismatch;
    }
    inf_set(cx, 0, x->dt, &out);
    return true;
mismatch:
    return inf_fail(cx, inf_sub(cx, 1), "cannot reshape %s into %d dims with these sizes",
                    inf_shape(cx, &x->shape), n);
}

/* Transpose: out dim i = in dim perm[i]; perm defaults to reversing the dims. */
bool mc_infer_TRANSPOSE(mc_infer_ctx *cx) {
    const mc_value *x = inf_in(cx, 0);
    const mc_attr *p = mc_attr_get(cx->n, "perm");
    int r = x->shape.rank;
    bool seen[MC_MAX_RANK] = {0};
    mc_shape out = {r, {{0}}};
    if (p && p->n != r)
        return inf_fail(cx, "attrs/perm", "perm has %d entries but the input has rank %d", p->n, r);
    for (int i = 0; i < r; i++) {
        int64_t src = p ? p->ints[i] : r - 1 - i;
        if (src < 0 || src >= r || seen[src])
            return inf_fail(cx, "attrs/perm", "perm must be a permutation of 0..%d", r - 1);
        seen[src] = true;
        out.d[i] = x->shape.d[src];
    }
    inf_set(cx, 0, x->dt, &out);
    return true;
}

/* Concat(x0, x1, ...) along axis: other dims equal; the axis dims add up (all constant,
 * or all multiples of the same symbol). */
bool mc_infer_CONCAT(mc_infer_ctx *cx) {
    const mc_value *x0 = inf_in(cx, 0);
    int axis;
    if (!inf_axis(cx, "axis", mc_attr_int(cx->n, "axis"), x0->shape.rank, &axis)) return false;
    mc_shape out = x0->shape;
    for (int i = 1; i < cx->n->nin; i++) {
        const mc_value *xi = inf_in(cx, i);
        if (!xi) return inf_fail(cx, inf_sub(cx, i), "Concat inputs cannot be omitted");
        if (!inf_same_dtype(cx, 0, i)) return false;
        if (xi->shape.rank != out.rank)
            return inf_fail(cx, inf_sub(cx, i), "input %d has rank %d but input 0 has %d", i,
                            xi->shape.rank, out.rank);
        for (int k = 0; k < out.rank; k++)
            if (k != axis && !inf_dim_eq(cx, &xi->shape, k, &x0->shape, k, inf_sub(cx, i),
                                         "Concat dims off the axis must match"))
                return false;
        if (xi->shape.d[axis].sym != out.d[axis].sym)
            return inf_fail(cx, inf_sub(cx, i),
                            "cannot concatenate a symbolic and a constant dim along axis %d", axis);
        out.d[axis].c += xi->shape.d[axis].c;
    }
    inf_set(cx, 0, x0->dt, &out);
    return true;
}

/* Split(X, split?) into n outputs along axis: by the constant `split` sizes, or equal
 * parts (ONNX 18: ceil(d/n) each, the last one smaller when d % n != 0). */
bool mc_infer_SPLIT(mc_infer_ctx *cx) {
    const mc_value *x = inf_in(cx, 0);
    int axis, nout = cx->n->nout;
    if (!inf_axis(cx, "axis", mc_attr_int(cx->n, "axis"), x->shape.rank, &axis)) return false;
    const mc_attr *no = mc_attr_get(cx->n, "num_outputs");
    if (no && no->i != nout)
        return inf_fail(cx, "attrs/num_outputs", "num_outputs is %lld but the node has %d outputs",
                        (long long)no->i, nout);
    mc_dim d = x->shape.d[axis];
    if (inf_in(cx, 1)) {
        int64_t sz[MC_VARIADIC];
        int n;
        if (!inf_const_ints(cx, 1, "split sizes", sz, &n, MC_VARIADIC)) return false;
        int64_t sum = 0;
        for (int i = 0; i < n; i++)
            sum += sz[i] > 0 ? sz[i] : 0;
        if (n != nout || !mc_dim_is_const(d) || sum != d.c)
            return inf_fail(cx, inf_sub(cx, 1),
                            "split must give %d positive sizes adding up to the axis size %s", nout,
                            inf_shape(cx, &x->shape));
        for (int i = 0; i < nout; i++) {
            if (sz[i] < 1)
                return inf_fail(cx, inf_sub(cx, 1), "split[%d] is %lld but must be positive", i,
                                (long long)sz[i]);
            mc_shape s = x->shape;
            s.d[axis] = mc_dim_const(sz[i]);
            inf_set(cx, i, x->dt, &s);
        }
        return true;
    }
    if (d.sym >= 0 && d.c % nout)
        return inf_fail(cx, inf_sub(cx, 0),
                        "cannot split the symbolic dim of %s into %d equal parts",
                        inf_shape(cx, &x->shape), nout);
    if (d.sym < 0 && d.c < nout)
        return inf_fail(cx, inf_sub(cx, 0), "axis size %lld is smaller than %d outputs",
                        (long long)d.c, nout);
    int64_t part = (d.c + nout - 1) / nout;
    for (int i = 0; i < nout; i++) {
        mc_shape s = x->shape;
        s.d[axis] = d.sym >= 0 ? mc_dim_sym(d.sym, d.c / nout)
                               : mc_dim_const(i + 1 < nout ? part : d.c - part * (nout - 1));
        if (s.d[axis].c < 1)
            return inf_fail(cx, inf_sub(cx, 0),
                            "axis size %lld does not split into %d non-empty parts", (long long)d.c,
                            nout);
        inf_set(cx, i, x->dt, &s);
    }
    return true;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* Slice(data, starts, ends, axes?, steps?) with ONNX clamping; a symbolic axis may only
 * be taken whole (start 0, end past its max, step 1). */
bool mc_infer_SLICE(mc_infer_ctx *cx) {
    const mc_value *x = inf_in(cx, 0);
    int64_t st[MC_MAX_RANK], en[MC_MAX_RANK], ax[MC_MAX_RANK], sp[MC_MAX_RANK];
    int n, ne, na, ns;
    if (!inf_const_ints(cx, 1, "starts", st, &n, MC_MAX_RANK) ||
        !inf_const_ints(cx, 2, "ends", en, &ne, MC_MAX_RANK))
        return false;
    if (inf_in(cx, 3) && !inf_const_ints(cx, 3, "axes", ax, &na, MC_MAX_RANK)) return false;
    if (inf_in(cx, 4) && !inf_const_ints(cx, 4, "steps", sp, &ns, MC_MAX_RANK)) return false;
    if (ne != n || (inf_in(cx, 3) && na != n) || (inf_in(cx, 4) && ns != n))
        return inf_fail(cx, inf_sub(cx, 2),
                        "starts, ends, axes and steps must have the same length");
    mc_shape out = x->shape;
    bool seen[MC_MAX_RANK] = {0};
    for (int i = 0; i < n; i++) {
        int a;
        if (!inf_axis(cx, "axes", inf_in(cx, 3) ? ax[i] : i, x->shape.rank, &a)) return false;
        if (seen[a]) return inf_fail(cx, inf_sub(cx, 3), "axis %d is sliced twice", a);
        seen[a] = true;
        int64_t step = inf_in(cx, 4) ? sp[i] : 1;
        if (step == 0) return inf_fail(cx, inf_sub(cx, 4), "steps[%d] is 0", i);
        mc_dim d = x->shape.d[a];
        if (d.sym >= 0) {
            if (st[i] != 0 || step != 1 || en[i] < d.c * cx->g->syms[d.sym].max)
                return inf_fail(cx, inf_sub(cx, 1),
                                "axis %d is symbolic (%s): it can only be sliced whole", a,
                                inf_shape(cx, &x->shape));
            continue;
        }
        int64_t dim = d.c, s = st[i] < 0 ? st[i] + dim : st[i], e = en[i] < 0 ? en[i] + dim : en[i];
        int64_t len;
        if (step > 0) {
            s = clamp64(s, 0, dim);
            e = clamp64(e, 0, dim);
            len = e > s ? (e - s + step - 1) / step : 0;
        } else {
            s = clamp64(s, -1, dim - 1);
            e = clamp64(e, -1, dim - 1);
            len = s > e ? (s - e - step - 1) / -step : 0;
        }
        if (len < 1) return inf_fail(cx, inf_sub(cx, 1), "slice of axis %d is empty", a);
        out.d[a] = mc_dim_const(len);
    }
    inf_set(cx, 0, x->dt, &out);
    return true;
}

/* Gather(data, indices) along axis: data[:axis] + indices.shape + data[axis+1:]. */
bool mc_infer_GATHER(mc_infer_ctx *cx) {
    const mc_value *x = inf_in(cx, 0), *idx = inf_in(cx, 1);
    int axis;
    if (!inf_int_index(cx, 1) ||
        !inf_axis(cx, "axis", mc_attr_int(cx->n, "axis"), x->shape.rank, &axis))
        return false;
    if (x->shape.rank - 1 + idx->shape.rank > MC_MAX_RANK)
        return inf_fail(cx, NULL, "result rank exceeds %d", MC_MAX_RANK);
    mc_shape out = {0, {{0}}};
    for (int i = 0; i < axis; i++)
        out.d[out.rank++] = x->shape.d[i];
    for (int i = 0; i < idx->shape.rank; i++)
        out.d[out.rank++] = idx->shape.d[i];
    for (int i = axis + 1; i < x->shape.rank; i++)
        out.d[out.rank++] = x->shape.d[i];
    inf_set(cx, 0, x->dt, &out);
    return true;
}

/* Reduce*(data, axes?): reduce the given axes (all when absent, unless
 * noop_with_empty_axes), keeping them as 1 when keepdims. */
static bool reduce(mc_infer_ctx *cx, bool float_only) {
    const mc_value *x = inf_in(cx, 0);
    if (float_only && !inf_float(cx, 0)) return false;
    if (x->dt == MC_DT_BOOL) return inf_fail(cx, inf_sub(cx, 0), "cannot reduce a bool tensor");
    int64_t axes[MC_MAX_RANK];
    int n = 0;
    if (inf_in(cx, 1) && !inf_const_ints(cx, 1, "axes", axes, &n, MC_MAX_RANK)) return false;
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
    mc_shape out = {0, {{0}}};
    for (int i = 0; i < x->shape.rank; i++)
        if (!red[i])
            out.d[out.rank++] = x->shape.d[i];
        else if (keep)
            out.d[out.rank++] = mc_dim_const(1);
    inf_set(cx, 0, x->dt, &out);
    return true;
}
bool mc_infer_REDUCE_SUM(mc_infer_ctx *cx) {
    return reduce(cx, false);
}
bool mc_infer_REDUCE_MEAN(mc_infer_ctx *cx) {
    return reduce(cx, true);
}
bool mc_infer_REDUCE_MAX(mc_infer_ctx *cx) {
    return reduce(cx, false);
}
