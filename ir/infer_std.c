/* ir/infer_std.c: shape contracts of the standard (ONNX) ops, opset 18+ semantics.
 * Shape-manipulation ops are in infer_tensor.c. */
#include "infer.h"

/* MatMul: [..,m,k] @ [..,k,n] -> [..,m,n]; batch dims broadcast; a 1-D operand is a
 * vector (its dim is removed from the result), as numpy.matmul. */
bool mc_infer_MATMUL(mc_infer_ctx *cx) {
    const mc_value *a = inf_in(cx, 0), *b = inf_in(cx, 1);
    if (!inf_float(cx, 0) || !inf_weight(cx, 0, 1)) return false;
    if (a->shape.rank < 1 || b->shape.rank < 1)
        return inf_fail(cx, NULL, "MatMul needs inputs of rank >= 1");
    mc_shape sa = a->shape, sb = b->shape;
    bool va = sa.rank == 1, vb = sb.rank == 1;
    if (va) sa = (mc_shape){2, {mc_dim_const(1), sa.d[0]}};
    if (vb) sb = (mc_shape){2, {sb.d[0], mc_dim_const(1)}};
    if (!mc_dim_eq(sa.d[sa.rank - 1], sb.d[sb.rank - 2]))
        return inf_fail(
            cx, inf_sub(cx, 1),
            "input 1 (%s) has shape %s but MatMul needs its dim %d to equal the last dim of "
            "input 0 (%s) %s",
            b->name, inf_shape(cx, &b->shape), b->shape.rank == 1 ? 0 : b->shape.rank - 2, a->name,
            inf_shape(cx, &a->shape));
    mc_shape ba = {sa.rank - 2, {{0}}}, bb = {sb.rank - 2, {{0}}}, out;
    for (int i = 0; i < ba.rank; i++)
        ba.d[i] = sa.d[i];
    for (int i = 0; i < bb.rank; i++)
        bb.d[i] = sb.d[i];
    if (!inf_broadcast(cx, &ba, &bb, &out, NULL)) return false;
    if (!va) out.d[out.rank++] = sa.d[sa.rank - 2];
    if (!vb) out.d[out.rank++] = sb.d[sb.rank - 1];
    inf_set(cx, 0, a->dt, &out);
    return true;
}

/* Gemm: alpha * A' @ B' + beta * C, A' = transA ? A^T : A ([M,K]), B' ([K,N]); C
 * broadcasts to [M,N]. */
bool mc_infer_GEMM(mc_infer_ctx *cx) {
    if (!inf_float(cx, 0) || !inf_weight(cx, 0, 1) || !inf_rank(cx, 0, 2) || !inf_rank(cx, 1, 2))
        return false;
    const mc_shape *a = &inf_in(cx, 0)->shape, *b = &inf_in(cx, 1)->shape;
    bool ta = mc_attr_int(cx->n, "transA") != 0, tb = mc_attr_int(cx->n, "transB") != 0;
    if ((ta || tb) && mc_dtype_is_quant(inf_in(cx, 1)->dt))
        return inf_fail(cx, inf_sub(cx, 1),
                        "B is %s, which Gemm takes only with transA = transB = 0",
                        mc_dtype_name(inf_in(cx, 1)->dt));
    mc_dim m = a->d[ta ? 1 : 0], k = a->d[ta ? 0 : 1], kb = b->d[tb ? 1 : 0], n = b->d[tb ? 0 : 1];
    if (!mc_dim_eq(k, kb))
        return inf_fail(cx, inf_sub(cx, 1), "Gemm inner dims differ: A' is %s%s, B' is %s%s",
                        inf_shape(cx, a), ta ? " transposed" : "", inf_shape(cx, b),
                        tb ? " transposed" : "");
    mc_shape out = {2, {m, n}};
    if (inf_in(cx, 2)) {
        mc_shape tmp;
        if (!inf_same_dtype(cx, 0, 2) ||
            !inf_broadcast(cx, &out, &inf_in(cx, 2)->shape, &tmp, inf_sub(cx, 2)))
            return false;
        if (!mc_shape_eq(&tmp, &out))
            return inf_fail(cx, inf_sub(cx, 2), "C has shape %s, which does not broadcast to %s",
                            inf_shape(cx, &inf_in(cx, 2)->shape), inf_shape(cx, &out));
    }
    inf_set(cx, 0, inf_in(cx, 0)->dt, &out);
    return true;
}

/* Add/Sub/Mul/Div: A, B of one dtype (float or int), numpy broadcasting. */
static bool binary(mc_infer_ctx *cx, bool float_only) {
    if (!inf_same_dtype(cx, 0, 1)) return false;
    if (float_only && !inf_float(cx, 0)) return false;
    if (inf_in(cx, 0)->dt == MC_DT_BOOL)
        return inf_fail(cx, inf_sub(cx, 0), "%s does not take bool inputs",
                        mc_op_infos[cx->n->op].name);
    mc_shape out;
    if (!inf_broadcast(cx, &inf_in(cx, 0)->shape, &inf_in(cx, 1)->shape, &out, NULL)) return false;
    inf_set(cx, 0, inf_in(cx, 0)->dt, &out);
    return true;
}
bool mc_infer_ADD(mc_infer_ctx *cx) {
    return binary(cx, false);
}
bool mc_infer_SUB(mc_infer_ctx *cx) {
    return binary(cx, false);
}
bool mc_infer_MUL(mc_infer_ctx *cx) {
    return binary(cx, false);
}
bool mc_infer_DIV(mc_infer_ctx *cx) {
    return binary(cx, false);
}
/* Pow: base and exponent of any numeric dtypes, not necessarily one (ONNX's T and T1);
 * the result has the base's dtype. */
bool mc_infer_POW(mc_infer_ctx *cx) {
    for (int i = 0; i < 2; i++)
        if (inf_in(cx, i)->dt == MC_DT_BOOL)
            return inf_fail(cx, inf_sub(cx, i), "Pow does not take bool inputs");
    mc_shape out;
    if (!inf_broadcast(cx, &inf_in(cx, 0)->shape, &inf_in(cx, 1)->shape, &out, NULL)) return false;
    inf_set(cx, 0, inf_in(cx, 0)->dt, &out);
    return true;
}

/* Unary float ops: X -> Y of the same dtype and shape. Neg and Abs also take ints. */
static bool unary(mc_infer_ctx *cx, bool ints_ok) {
    const mc_value *x = inf_in(cx, 0);
    bool ok = mc_dtype_is_float(x->dt) || (ints_ok && (x->dt == MC_DT_I32 || x->dt == MC_DT_I64));
    if (!ok) return inf_float(cx, 0);
    inf_set(cx, 0, x->dt, &x->shape);
    return true;
}
bool mc_infer_NEG(mc_infer_ctx *cx) {
    return unary(cx, true);
}
bool mc_infer_ABS(mc_infer_ctx *cx) {
    return unary(cx, true);
}
bool mc_infer_RECIPROCAL(mc_infer_ctx *cx) {
    return unary(cx, false);
}
bool mc_infer_ERF(mc_infer_ctx *cx) {
    return unary(cx, false);
}
bool mc_infer_SQRT(mc_infer_ctx *cx) {
    return unary(cx, false);
}
bool mc_infer_EXP(mc_infer_ctx *cx) {
    return unary(cx, false);
}
bool mc_infer_LOG(mc_infer_ctx *cx) {
    return unary(cx, false);
}
bool mc_infer_RELU(mc_infer_ctx *cx) {
    return unary(cx, false);
}
bool mc_infer_GELU(mc_infer_ctx *cx) {
    return unary(cx, false);
}
bool mc_infer_SIGMOID(mc_infer_ctx *cx) {
    return unary(cx, false);
}
bool mc_infer_TANH(mc_infer_ctx *cx) {
    return unary(cx, false);
}
bool mc_infer_SILU(mc_infer_ctx *cx) {
    return unary(cx, false);
}

/* Softmax/LogSoftmax: X -> same shape, along `axis`. */
static bool softmax(mc_infer_ctx *cx) {
    int axis;
    const mc_value *x = inf_in(cx, 0);
    if (!inf_float(cx, 0) ||
        !inf_axis(cx, "axis", mc_attr_int(cx->n, "axis"), x->shape.rank, &axis))
        return false;
    inf_set(cx, 0, x->dt, &x->shape);
    return true;
}
bool mc_infer_SOFTMAX(mc_infer_ctx *cx) {
    return softmax(cx);
}
bool mc_infer_LOG_SOFTMAX(mc_infer_ctx *cx) {
    return softmax(cx);
}

/* LayerNormalization(X, Scale, B?) / RMSNormalization(X, Scale): normalise over the
 * dims from `axis` to the end; Scale (and B) have exactly those trailing dims. */
bool inf_norm_inputs(mc_infer_ctx *cx, int xi, int nparams, mc_shape *tail) {
    const mc_value *x = inf_in(cx, xi);
    int axis;
    if (!inf_float(cx, xi) ||
        !inf_axis(cx, "axis", mc_attr_int(cx->n, "axis"), x->shape.rank, &axis))
        return false;
    if (mc_attr_float(cx->n, "epsilon") < 0)
        return inf_fail(cx, "attrs/epsilon", "epsilon must be >= 0");
    *tail = (mc_shape){x->shape.rank - axis, {{0}}};
    for (int i = axis; i < x->shape.rank; i++)
        tail->d[i - axis] = x->shape.d[i];
    for (int i = xi + 1; i <= xi + nparams && i < cx->n->nin; i++) {
        const mc_value *p = inf_in(cx, i);
        if (!p) continue;
        if (!inf_same_dtype(cx, xi, i)) return false;
        if (!mc_shape_eq(&p->shape, tail))
            return inf_fail(
                cx, inf_sub(cx, i),
                "input %d (%s) has shape %s but must be %s (the dims of X from axis %d)", i,
                p->name, inf_shape(cx, &p->shape), inf_shape(cx, tail), axis);
    }
    return true;
}

static bool norm(mc_infer_ctx *cx) {
    mc_shape tail;
    if (!inf_norm_inputs(cx, 0, 2, &tail)) return false;
    inf_set(cx, 0, inf_in(cx, 0)->dt, &inf_in(cx, 0)->shape);
    return true;
}
/* And the optional Mean and InvStdDev: f32, X's shape with the normalized dims 1. */
bool mc_infer_LAYER_NORM(mc_infer_ctx *cx) {
    if (!norm(cx)) return false;
    mc_shape stats = inf_in(cx, 0)->shape;
    int axis = (int)mc_attr_int(cx->n, "axis");
    axis = axis < 0 ? axis + stats.rank : axis;
    for (int i = axis; i < stats.rank; i++)
        stats.d[i] = mc_dim_const(1);
    for (int k = 1; k < cx->n->nout; k++)
        inf_set(cx, k, MC_DT_F32, &stats);
    return true;
}
bool mc_infer_RMS_NORM(mc_infer_ctx *cx) {
    return norm(cx);
}

/* Cast: X -> Y of dtype `to` (an ONNX TensorProto code), same shape. */
bool mc_infer_CAST(mc_infer_ctx *cx) {
    mc_dtype to;
    int64_t code = mc_attr_int(cx->n, "to");
    if (!mc_dtype_from_onnx(code, &to))
        return inf_fail(
            cx, "attrs/to",
            "to is %lld but must be a supported TensorProto code: 1 (float32), 10 (float16), 16 "
            "(bfloat16), 6 (int32), 7 (int64), 9 (bool)",
            (long long)code);
    inf_set(cx, 0, to, &inf_in(cx, 0)->shape);
    return true;
}

/* Identity: X -> X. */
bool mc_infer_IDENTITY(mc_infer_ctx *cx) {
    inf_set(cx, 0, inf_in(cx, 0)->dt, &inf_in(cx, 0)->shape);
    return true;
}

/* Where(cond bool, X, Y): three-way broadcasting; X and Y share a dtype. */
bool mc_infer_WHERE(mc_infer_ctx *cx) {
    mc_shape t, out;
    if (!inf_dtype(cx, 0, MC_DT_BOOL) || !inf_same_dtype(cx, 1, 2) ||
        !inf_broadcast(cx, &inf_in(cx, 0)->shape, &inf_in(cx, 1)->shape, &t, NULL) ||
        !inf_broadcast(cx, &t, &inf_in(cx, 2)->shape, &out, NULL))
        return false;
    inf_set(cx, 0, inf_in(cx, 1)->dt, &out);
    return true;
}

/* Equal/Less/Greater/LessOrEqual(A, B) -> bool, broadcasting. */
static bool compare(mc_infer_ctx *cx) {
    mc_shape out;
    if (!inf_same_dtype(cx, 0, 1) ||
        !inf_broadcast(cx, &inf_in(cx, 0)->shape, &inf_in(cx, 1)->shape, &out, NULL))
        return false;
    inf_set(cx, 0, MC_DT_BOOL, &out);
    return true;
}
bool mc_infer_EQUAL(mc_infer_ctx *cx) {
    return compare(cx);
}
bool mc_infer_LESS(mc_infer_ctx *cx) {
    return compare(cx);
}
bool mc_infer_GREATER(mc_infer_ctx *cx) {
    return compare(cx);
}
bool mc_infer_LESS_OR_EQUAL(mc_infer_ctx *cx) {
    return compare(cx);
}

/* TopK(X, K[1] const): Values (X's dtype), Indices (i64), X's shape with K along axis;
 * the axis must be a constant dim >= K. */
bool mc_infer_TOPK(mc_infer_ctx *cx) {
    const mc_value *x = inf_in(cx, 0);
    int axis, n;
    int64_t k[1];
    if (!inf_axis(cx, "axis", mc_attr_int(cx->n, "axis"), x->shape.rank, &axis) ||
        !inf_const_ints(cx, 1, "K", k, &n, 1))
        return false;
    if (n != 1) return inf_fail(cx, inf_sub(cx, 1), "K must hold exactly one value");
    mc_dim d = x->shape.d[axis];
    if (!mc_dim_is_const(d))
        return inf_fail(cx, "attrs/axis", "TopK along a symbolic dim is not supported");
    if (k[0] < 1 || k[0] > d.c)
        return inf_fail(cx, inf_sub(cx, 1),
                        "K is %lld but must be between 1 and %lld (the axis size)", (long long)k[0],
                        (long long)d.c);
    mc_shape out = x->shape;
    out.d[axis] = mc_dim_const(k[0]);
    inf_set(cx, 0, x->dt, &out);
    inf_set(cx, 1, MC_DT_I64, &out);
    return true;
}
