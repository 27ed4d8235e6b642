/* ir/infer.c: shape inference driver and shared helpers. Each op's inference lives in
 * infer_std.c / infer_moe.c with its shape contract written above it. */
#include "infer.h"

#include <stdio.h>
#include <string.h>

const mc_value *inf_in(mc_infer_ctx *cx, int i) {
    if (i >= cx->n->nin || cx->n->in[i] < 0) return NULL;
    return mc_val(cx->g, cx->n->in[i]);
}

void inf_set(mc_infer_ctx *cx, int out, mc_dtype dt, const mc_shape *s) {
    mc_value *v = mc_val(cx->g, cx->n->out[out]);
    v->dt = dt;
    v->shape = *s;
    v->has_shape = true;
}

const char *inf_shape(mc_infer_ctx *cx, const mc_shape *s) {
    char buf[256];
    return mc_arena_strdup(cx->g->arena, mc_shape_str(cx->g, s, buf, sizeof buf));
}

const char *inf_sub(mc_infer_ctx *cx, int input) {
    return mc_arena_printf(cx->g->arena, "inputs/%d", input);
}

bool inf_fail(mc_infer_ctx *cx, const char *sub, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mc_node_error(cx->d, cx->g, cx->n, sub, "%s", msg);
}

static const char *in_name(mc_infer_ctx *cx, int i) {
    return inf_in(cx, i)->name;
}

bool inf_float(mc_infer_ctx *cx, int i) {
    const mc_value *v = inf_in(cx, i);
    if (mc_dtype_is_float(v->dt)) return true;
    return inf_fail(cx, inf_sub(cx, i), "input %d (%s) is %s but must be a float tensor", i,
                    v->name, mc_dtype_name(v->dt));
}

bool inf_dtype(mc_infer_ctx *cx, int i, mc_dtype want) {
    const mc_value *v = inf_in(cx, i);
    if (v->dt == want) return true;
    return inf_fail(cx, inf_sub(cx, i), "input %d (%s) is %s but must be %s", i, v->name,
                    mc_dtype_name(v->dt), mc_dtype_name(want));
}

bool inf_int_index(mc_infer_ctx *cx, int i) {
    const mc_value *v = inf_in(cx, i);
    if (v->dt == MC_DT_I32 || v->dt == MC_DT_I64) return true;
    return inf_fail(cx, inf_sub(cx, i), "input %d (%s) is %s but must be i32 or i64", i, v->name,
                    mc_dtype_name(v->dt));
}

bool inf_rank(mc_infer_ctx *cx, int i, int rank) {
    const mc_value *v = inf_in(cx, i);
    if (v->shape.rank == rank) return true;
    return inf_fail(cx, inf_sub(cx, i), "input %d (%s) has shape %s but must have rank %d", i,
                    v->name, inf_shape(cx, &v->shape), rank);
}

bool inf_same_dtype(mc_infer_ctx *cx, int a, int b) {
    if (inf_in(cx, a)->dt == inf_in(cx, b)->dt) return true;
    return inf_fail(cx, inf_sub(cx, b),
                    "input %d (%s) is %s but input %d (%s) is %s; they must match", b,
                    in_name(cx, b), mc_dtype_name(inf_in(cx, b)->dt), a, in_name(cx, a),
                    mc_dtype_name(inf_in(cx, a)->dt));
}

bool inf_weight(mc_infer_ctx *cx, int a, int w) {
    mc_dtype at = inf_in(cx, a)->dt, wt = inf_in(cx, w)->dt;
    if (at == wt || (at == MC_DT_F32 && (wt == MC_DT_F16 || wt == MC_DT_BF16))) return true;
    if (at == MC_DT_F32 && mc_dtype_is_quant(wt)) {
        if (inf_in(cx, w)->shape.rank >= 2 && inf_in(cx, a)->shape.rank >= 2) return true;
        return inf_fail(cx, inf_sub(cx, w),
                        "input %d (%s) is %s, which a product takes only as a matrix next to "
                        "a matrix of f32 activations",
                        w, in_name(cx, w), mc_dtype_name(wt));
    }
    return inf_fail(cx, inf_sub(cx, w),
                    "input %d (%s) is %s but input %d (%s) is %s; a weight must match its "
                    "activations, or be f16, bf16, int8 or int4 next to f32 ones",
                    w, in_name(cx, w), mc_dtype_name(wt), a, in_name(cx, a), mc_dtype_name(at));
}

bool inf_broadcast(mc_infer_ctx *cx, const mc_shape *a, const mc_shape *b, mc_shape *out,
                   const char *sub) {
    int r = a->rank > b->rank ? a->rank : b->rank;
    out->rank = r;
    for (int i = 0; i < r; i++) {
        int ia = i - (r - a->rank), ib = i - (r - b->rank);
        mc_dim da = ia >= 0 ? a->d[ia] : mc_dim_const(1);
        mc_dim db = ib >= 0 ? b->d[ib] : mc_dim_const(1);
        if (mc_dim_eq(da, db) || (mc_dim_is_const(db) && db.c == 1))
            out->d[i] = da;
        else if (mc_dim_is_const(da) && da.c == 1)
            out->d[i] = db;
        else
            return inf_fail(cx, sub, "shapes %s and %s do not broadcast (dim %d)", inf_shape(cx, a),
                            inf_shape(cx, b), i);
    }
    return true;
}

bool inf_axis(mc_infer_ctx *cx, const char *attr, int64_t axis, int rank, int *out) {
    if (axis < -rank || axis >= rank || rank == 0)
        return inf_fail(cx, mc_arena_printf(cx->g->arena, "attrs/%s", attr),
                        "%s is %lld but must be in [%d, %d] for rank %d", attr, (long long)axis,
                        -rank, rank - 1, rank);
    *out = (int)(axis < 0 ? axis + rank : axis);
    return true;
}

bool inf_const_ints(mc_infer_ctx *cx, int i, const char *what, int64_t *out, int *n, int max) {
    const mc_value *v = inf_in(cx, i);
    if (!v->data || (v->dt != MC_DT_I64 && v->dt != MC_DT_I32) || v->shape.rank > 1)
        return inf_fail(cx, inf_sub(cx, i),
                        "input %d (%s, the %s) must be a constant 1-D int64 initializer", i,
                        v->name, what);
    int64_t count = mc_shape_numel(&v->shape, NULL);
    if (count > max)
        return inf_fail(cx, inf_sub(cx, i), "input %d (%s) has %lld elements, at most %d allowed",
                        i, v->name, (long long)count, max);
    for (int64_t k = 0; k < count; k++) {
        if (v->dt == MC_DT_I64)
            memcpy(&out[k], (const char *)v->data + 8 * k, 8);
        else {
            int32_t x;
            memcpy(&x, (const char *)v->data + 4 * k, 4);
            out[k] = x;
        }
    }
    *n = (int)count;
    return true;
}

bool inf_dim_eq(mc_infer_ctx *cx, const mc_shape *a, int da, const mc_shape *b, int db,
                const char *sub, const char *what) {
    if (mc_dim_eq(a->d[da], b->d[db])) return true;
    return inf_fail(cx, sub, "%s: shapes %s and %s disagree (dim %d vs dim %d)", what,
                    inf_shape(cx, a), inf_shape(cx, b), da, db);
}

bool inf_positive_attr(mc_infer_ctx *cx, const char *attr, int64_t lo, int64_t hi, int64_t *out) {
    int64_t v = mc_attr_int(cx->n, attr);
    const char *sub = mc_arena_printf(cx->g->arena, "attrs/%s", attr);
    if (hi >= MC_MAX_DIM && v < lo)
        return inf_fail(cx, sub, "%s is %lld but must be at least %lld", attr, (long long)v,
                        (long long)lo);
    if (v < lo || v > hi)
        return inf_fail(cx, sub, "%s is %lld but must be between %lld and %lld", attr, (long long)v,
                        (long long)lo, (long long)hi);
    *out = v;
    return true;
}

/* Inputs must have shapes before a node can be inferred. */
static bool inputs_ready(mc_infer_ctx *cx) {
    for (int i = 0; i < cx->n->nin; i++) {
        const mc_value *v = inf_in(cx, i);
        if (v && !v->has_shape)
            return inf_fail(cx, inf_sub(cx, i),
                            "input %d (%s) has no shape yet (its producer comes later?)", i,
                            v->name);
    }
    return true;
}

static bool check_sizes(mc_infer_ctx *cx) {
    for (int j = 0; j < cx->n->nout; j++) {
        const mc_value *v = mc_val(cx->g, cx->n->out[j]);
        if (mc_shape_numel_max(cx->g, &v->shape) < 0)
            return inf_fail(cx, NULL, "output %s would have shape %s, more than 2^40 elements",
                            v->name, inf_shape(cx, &v->shape));
    }
    return true;
}

static bool dispatch(mc_infer_ctx *cx) {
    switch (cx->n->op) {
#define OP(id, name, min_in, max_in, min_out, max_out, flags)                                      \
    case MC_OP_##id:                                                                               \
        return mc_infer_##id(cx);
#include "ops.def"
#undef OP
    case MC_NUM_OPS: break;
    }
    mc_die("bad op %d", (int)cx->n->op);
}

bool mc_infer_node(mc_graph *g, int node, mc_diag *d) {
    mc_infer_ctx cx = {g, mc_nod(g, node), d};
    return inputs_ready(&cx) && dispatch(&cx) && check_sizes(&cx);
}

bool mc_infer_shapes(mc_graph *g, mc_diag *d) {
    for (int k = 0; k < g->norder; k++)
        if (!mc_infer_node(g, g->order[k], d)) return false;
    return true;
}
