/* passes/autodiff_rules.c: the gradient of every op of the op table, as the nodes
 * that compute its inputs' gradients from its outputs' (docs/autodiff.md). One case
 * per op, no default: a new op must say here how it differentiates. */
#include "autodiff.h"

/* ---- elementwise ---- */

static int gy(ad *a) {
    return ad_gout(a, 0);
}

static void add_sub(ad *a, bool sub) {
    int g = gy(a);
    ad_add_grad(a, ad_in(a, 0), ad_sum_to(a, g, ad_in(a, 0)));
    if (sub) g = ad_op1(a, MC_OP_NEG, &g, 1);
    ad_add_grad(a, ad_in(a, 1), ad_sum_to(a, g, ad_in(a, 1)));
}

static void mul(ad *a) {
    int x = ad_in(a, 0), y = ad_in(a, 1), g = gy(a);
    if (a->needs[x]) ad_add_grad(a, x, ad_sum_to(a, ad_op2(a, MC_OP_MUL, g, y), x));
    if (a->needs[y]) ad_add_grad(a, y, ad_sum_to(a, ad_op2(a, MC_OP_MUL, g, x), y));
}

/* q = x / y: dx = g / y, dy = -g q / y. */
static void div_(ad *a) {
    int x = ad_in(a, 0), y = ad_in(a, 1), q = a->fwd->out[0], g = gy(a);
    int gx = ad_op2(a, MC_OP_DIV, g, y);
    if (a->needs[x]) ad_add_grad(a, x, ad_sum_to(a, gx, x));
    if (!a->needs[y]) return;
    int gq = ad_op2(a, MC_OP_MUL, gx, q);
    ad_add_grad(a, y, ad_sum_to(a, ad_op1(a, MC_OP_NEG, &gq, 1), y));
}

/* p = x^y: dx = g y x^(y-1), dy = g p ln x. */
static void pow_(ad *a) {
    int x = ad_in(a, 0), y = ad_in(a, 1), p = a->fwd->out[0], g = gy(a);
    if (a->needs[x]) {
        int ym1 = ad_op2(a, MC_OP_SUB, y, ad_const_scalar(a, 1, mc_val(a->g, y)->dt));
        int d = ad_op2(a, MC_OP_MUL, y, ad_op2(a, MC_OP_POW, x, ym1));
        ad_add_grad(a, x, ad_sum_to(a, ad_op2(a, MC_OP_MUL, g, d), x));
    }
    if (a->needs[y]) { /* 0 where x == 0, where p ln x is 0 * -inf (as PyTorch does) */
        int lx = ad_op1(a, MC_OP_LOG, &x, 1);
        int d = ad_op2(a, MC_OP_MUL, p, lx);
        mc_dtype dt = mc_val(a->g, x)->dt;
        int zero = ad_const_scalar(a, 0, dt);
        int at0 = ad_op2(a, MC_OP_EQUAL, x, zero);
        d = ad_op1(a, MC_OP_WHERE, (const int[]){at0, ad_const_scalar(a, 0, dt), d}, 3);
        ad_add_grad(a, y, ad_sum_to(a, ad_op2(a, MC_OP_MUL, g, d), y));
    }
}

static void neg(ad *a) {
    int g = gy(a);
    ad_add_grad(a, ad_in(a, 0), ad_op1(a, MC_OP_NEG, &g, 1));
}

/* Abs: gx = gy where x >= 0, -gy where x < 0. */
static void abs_grad(ad *a) {
    int g = gy(a), x = ad_in(a, 0);
    int below = ad_op2(a, MC_OP_LESS, x, ad_const_scalar(a, 0, mc_val(a->g, x)->dt));
    int neg = ad_op1(a, MC_OP_NEG, &g, 1);
    ad_add_grad(a, x, ad_op1(a, MC_OP_WHERE, (const int[]){below, neg, g}, 3));
}

/* Reciprocal: gx = -gy / (x x). */
static void reciprocal_grad(ad *a) {
    int x = ad_in(a, 0), q = ad_op2(a, MC_OP_DIV, gy(a), ad_op2(a, MC_OP_MUL, x, x));
    ad_add_grad(a, x, ad_op1(a, MC_OP_NEG, &q, 1));
}

/* Erf: gx = gy 2/sqrt(pi) e^(-x x). */
static void erf_grad(ad *a) {
    int x = ad_in(a, 0), xx = ad_op2(a, MC_OP_MUL, x, x);
    int e = ad_op1(a, MC_OP_EXP, (const int[]){ad_op1(a, MC_OP_NEG, &xx, 1)}, 1);
    int d = ad_op2(a, MC_OP_MUL, e, ad_const_scalar(a, 1.1283791670955126f, mc_val(a->g, x)->dt));
    ad_add_grad(a, x, ad_op2(a, MC_OP_MUL, gy(a), d));
}

/* gx = UnaryGrad(gy, x) {op = which}. */
static void unary(ad *a, const char *which) {
    int out, in[2] = {gy(a), ad_in(a, 0)};
    int id = ad_emit(a, ad_op_named("moe.UnaryGrad"), in, 2, &out, 1);
    mc_node_set_str(a->g, mc_nod(a->g, id), "op", which);
    ad_infer(a, id);
    ad_add_grad(a, ad_in(a, 0), out);
}

static void gelu(ad *a) {
    bool tanh_form = mc_attr_choice(a->fwd, "approximate") == MC_A_GELU_approximate_tanh;
    unary(a, tanh_form ? "GeluTanh" : "Gelu");
}

/* ---- normalisation and softmax ---- */

static void softmax(ad *a, bool log) {
    int out, in[2] = {gy(a), a->fwd->out[0]};
    int id = ad_emit(a, ad_op_named("moe.SoftmaxGrad"), in, 2, &out, 1);
    ad_copy_attrs(a, id);
    mc_node_set_int(a->g, mc_nod(a->g, id), "log", log);
    ad_infer(a, id);
    ad_add_grad(a, ad_in(a, 0), out);
}

static void layer_norm(ad *a) {
    int out[3], in[4] = {gy(a), ad_in(a, 0), ad_in(a, 1), ad_in(a, 2)};
    ad_grad_op(a, "moe.LayerNormGrad", in, 4, out, 3);
    for (int i = 0; i < 3; i++)
        ad_add_grad(a, ad_in(a, i), out[i]);
}

static void rms_norm(ad *a) {
    int out[2], in[3] = {gy(a), ad_in(a, 0), ad_in(a, 1)};
    ad_grad_op(a, "moe.RMSNormGrad", in, 3, out, 2);
    for (int i = 0; i < 2; i++)
        ad_add_grad(a, ad_in(a, i), out[i]);
}

/* ---- products ---- */

static int transpose_last2(ad *a, int v) {
    int rank = mc_val(a->g, v)->shape.rank;
    int64_t perm[MC_MAX_RANK];
    for (int i = 0; i < rank; i++)
        perm[i] = i;
    perm[rank - 2] = rank - 1;
    perm[rank - 1] = rank - 2;
    int out;
    int id = ad_emit(a, MC_OP_TRANSPOSE, &v, 1, &out, 1);
    mc_node_set_ints(a->g, mc_nod(a->g, id), "perm", perm, rank);
    ad_infer(a, id);
    return out;
}

/* Y = A B (matrices or batches of them): dA = dY B^T, dB = A^T dY, each summed over
 * the batch dims its operand was broadcast along. */
static void matmul(ad *a) {
    int x = ad_in(a, 0), w = ad_in(a, 1), g = gy(a);
    if (mc_val(a->g, x)->shape.rank < 2 || mc_val(a->g, w)->shape.rank < 2) {
        ad_fail(a, "MatMul with a rank-1 operand has no gradient rule yet; reshape it to a matrix");
        return;
    }
    if (a->needs[x])
        ad_add_grad(a, x, ad_sum_to(a, ad_op2(a, MC_OP_MATMUL, g, transpose_last2(a, w)), x));
    if (a->needs[w])
        ad_add_grad(a, w, ad_sum_to(a, ad_op2(a, MC_OP_MATMUL, transpose_last2(a, x), g), w));
}

static int scaled(ad *a, int v, double s) {
    return s == 1.0 ? v
                    : ad_op2(a, MC_OP_MUL, v, ad_const_scalar(a, (float)s, mc_val(a->g, v)->dt));
}

/* Y = alpha op(A) op(B) + beta C. */
static void gemm(ad *a) {
    int x = ad_in(a, 0), w = ad_in(a, 1), c = ad_in(a, 2), g = gy(a);
    bool ta = mc_attr_int(a->fwd, "transA"), tb = mc_attr_int(a->fwd, "transB");
    double alpha = mc_attr_float(a->fwd, "alpha"), beta = mc_attr_float(a->fwd, "beta");
    int ga = scaled(a, g, alpha);
    if (a->needs[x]) { /* d op(A) = g op(B)^T */
        int opb = tb ? w : transpose_last2(a, w);
        int d = ad_op2(a, MC_OP_MATMUL, ga, opb);
        ad_add_grad(a, x, ta ? transpose_last2(a, d) : d);
    }
    if (a->needs[w]) { /* d op(B) = op(A)^T g */
        int opa = ta ? x : transpose_last2(a, x);
        int d = ad_op2(a, MC_OP_MATMUL, opa, ga);
        ad_add_grad(a, w, tb ? transpose_last2(a, d) : d);
    }
    if (c >= 0 && a->needs[c]) ad_add_grad(a, c, ad_sum_to(a, scaled(a, g, beta), c));
}

/* ---- data movement ---- */

/* The shape of v as a Reshape target: its one symbolic dim (if any) becomes -1. */
static int shape_const(ad *a, int v) {
    const mc_shape *s = &mc_val(a->g, v)->shape;
    int64_t dims[MC_MAX_RANK];
    int symbolic = 0;
    for (int i = 0; i < s->rank; i++) {
        symbolic += !mc_dim_is_const(s->d[i]);
        dims[i] = mc_dim_is_const(s->d[i]) ? s->d[i].c : -1;
    }
    if (symbolic > 1) return -1;
    return ad_const_ints(a, dims, s->rank);
}

static void reshape(ad *a) {
    int x = ad_in(a, 0), shape = shape_const(a, x);
    if (shape < 0) {
        ad_fail(a, "the gradient of a Reshape whose input has two symbolic dims is not supported");
        return;
    }
    ad_add_grad(a, x, ad_op2(a, MC_OP_RESHAPE, gy(a), shape));
}

static void transpose(ad *a) {
    int x = ad_in(a, 0), rank = mc_val(a->g, x)->shape.rank, out, g = gy(a);
    const mc_attr *p = mc_attr_get(a->fwd, "perm");
    int64_t inv[MC_MAX_RANK];
    for (int i = 0; i < rank; i++)
        inv[p ? p->ints[i] : rank - 1 - i] = i;
    int id = ad_emit(a, MC_OP_TRANSPOSE, &g, 1, &out, 1);
    mc_node_set_ints(a->g, mc_nod(a->g, id), "perm", inv, rank);
    ad_infer(a, id);
    ad_add_grad(a, x, out);
}

static int norm_axis(int64_t axis, int rank) {
    return (int)(axis < 0 ? axis + rank : axis);
}

/* Concat's gradient: Split of gy into the inputs' sizes along the axis. */
static void concat(ad *a) {
    int rank = mc_val(a->g, a->fwd->out[0])->shape.rank;
    int axis = norm_axis(mc_attr_int(a->fwd, "axis"), rank), n = a->fwd->nin;
    int64_t sizes[64];
    int out[64];
    if (n > 64) return (void)ad_fail(a, "the gradient of a Concat of more than 64 inputs");
    for (int i = 0; i < n; i++) {
        mc_dim d = mc_val(a->g, a->fwd->in[i])->shape.d[axis];
        if (!mc_dim_is_const(d))
            return (void)ad_fail(a, "the gradient of a Concat along a symbolic dim");
        sizes[i] = d.c;
    }
    int in[2] = {gy(a), ad_const_ints(a, sizes, n)};
    int id = ad_emit(a, MC_OP_SPLIT, in, 2, out, n);
    mc_node_set_int(a->g, mc_nod(a->g, id), "axis", axis);
    ad_infer(a, id);
    for (int i = 0; i < n; i++)
        ad_add_grad(a, a->fwd->in[i], out[i]);
}

/* Split's gradient: Concat of the outputs' gradients (zeros where none arrived). */
static void split(ad *a) {
    int in[64], out, n = a->fwd->nout;
    if (n > 64) return (void)ad_fail(a, "the gradient of a Split into more than 64 outputs");
    for (int j = 0; j < n; j++)
        in[j] = ad_gout(a, j);
    int id = ad_emit(a, MC_OP_CONCAT, in, n, &out, 1);
    mc_node_set_int(a->g, mc_nod(a->g, id), "axis", mc_attr_int(a->fwd, "axis"));
    ad_infer(a, id);
    ad_add_grad(a, ad_in(a, 0), out);
}

/* Ops whose gradient op takes (gy, every forward input) and returns the first input's;
 * a gradient wanted for another input is an error, never a silent zero. */
static void first_input_grad(ad *a, const char *name) {
    for (int i = 1; i < a->fwd->nin; i++)
        if (ad_in(a, i) >= 0 && ad_in(a, i) < a->nfwd && a->needs[ad_in(a, i)])
            return (void)ad_fail(a, mc_arena_printf(a->g->arena,
                                                    "no gradient with respect to input %d (%%%s); "
                                                    "make it a constant or leave it out of "
                                                    "--train-params",
                                                    i, mc_val(a->g, ad_in(a, i))->name));
    int in[16], out;
    in[0] = gy(a);
    for (int i = 0; i < a->fwd->nin && i < 15; i++)
        in[1 + i] = a->fwd->in[i];
    ad_grad_op(a, name, in, 1 + a->fwd->nin, &out, 1);
    ad_add_grad(a, ad_in(a, 0), out);
}

static void where(ad *a) {
    int c = ad_in(a, 0), x = ad_in(a, 1), y = ad_in(a, 2), g = gy(a);
    int zero = ad_const_scalar(a, 0, mc_val(a->g, g)->dt);
    if (a->needs[x])
        ad_add_grad(a, x, ad_sum_to(a, ad_op1(a, MC_OP_WHERE, (int[]){c, g, zero}, 3), x));
    if (a->needs[y])
        ad_add_grad(a, y, ad_sum_to(a, ad_op1(a, MC_OP_WHERE, (int[]){c, zero, g}, 3), y));
}

static void cast(ad *a) {
    int x = ad_in(a, 0), out, g = gy(a);
    int id = ad_emit(a, MC_OP_CAST, &g, 1, &out, 1);
    mc_node_set_int(a->g, mc_nod(a->g, id), "to", mc_dtype_onnx_code(mc_val(a->g, x)->dt));
    ad_infer(a, id);
    ad_add_grad(a, x, out);
}

/* ---- reductions ---- */

/* The reduced axes (from the constant second input), or every axis. */
static int reduced_axes(ad *a, int64_t *axes) {
    int rank = mc_val(a->g, ad_in(a, 0))->shape.rank, ax = ad_in(a, 1);
    if (ax < 0 || mc_val(a->g, ax)->nbytes == 0) {
        for (int i = 0; i < rank; i++)
            axes[i] = i;
        return rank;
    }
    const mc_value *v = mc_val(a->g, ax);
    int n = (int)(v->nbytes / sizeof(int64_t));
    for (int i = 0; i < n; i++)
        axes[i] = norm_axis(((const int64_t *)v->data)[i], rank);
    return n;
}

/* gy broadcast back over the reduced axes. */
static int broadcast_back(ad *a, int g) {
    int x = ad_in(a, 0), out;
    int64_t axes[MC_MAX_RANK];
    int n = reduced_axes(a, axes);
    int id = ad_emit(a, ad_op_named("moe.BroadcastTo"), (const int[]){g, x}, 2, &out, 1);
    if (!mc_attr_int(a->fwd, "keepdims")) mc_node_set_ints(a->g, mc_nod(a->g, id), "axes", axes, n);
    ad_infer(a, id);
    return out;
}

static bool reduce_axes_known(ad *a) {
    int ax = ad_in(a, 1);
    if (ax < 0 || mc_val(a->g, ax)->data) return true;
    return !ad_fail(a, "the gradient of a reduction needs its axes as a constant");
}

/* noop_with_empty_axes=1 and no axes: the reduction is the identity. */
static bool reduce_is_identity(ad *a) {
    int ax = ad_in(a, 1);
    bool empty = ax < 0 || mc_val(a->g, ax)->nbytes == 0;
    return empty && mc_attr_int(a->fwd, "noop_with_empty_axes");
}

static void reduce_sum(ad *a) {
    if (reduce_is_identity(a)) return ad_add_grad(a, ad_in(a, 0), gy(a));
    if (reduce_axes_known(a)) ad_add_grad(a, ad_in(a, 0), broadcast_back(a, gy(a)));
}

static void reduce_mean(ad *a) {
    if (reduce_is_identity(a)) return ad_add_grad(a, ad_in(a, 0), gy(a));
    if (!reduce_axes_known(a)) return;
    int64_t axes[MC_MAX_RANK], count = 1;
    int n = reduced_axes(a, axes);
    const mc_shape *s = &mc_val(a->g, ad_in(a, 0))->shape;
    for (int i = 0; i < n; i++) {
        if (!mc_dim_is_const(s->d[axes[i]]))
            return (void)ad_fail(
                a, "the gradient of a ReduceMean over a symbolic dim is not supported");
        count *= s->d[axes[i]].c;
    }
    ad_add_grad(a, ad_in(a, 0), broadcast_back(a, scaled(a, gy(a), 1.0 / (double)count)));
}

/* ---- MoE ---- */

/* Routers: the gradient of the weights output flows to the logits (or x). */
static void route(ad *a, const char *name) {
    int w = a->fwd->out[1];
    if (a->grad[w] < 0) return;
    int in[8], out;
    in[0] = a->grad[w];
    for (int i = 0; i < a->fwd->nin; i++)
        in[1 + i] = a->fwd->in[i];
    ad_grad_op(a, name, in, 1 + a->fwd->nin, &out, 1);
    ad_add_grad(a, ad_in(a, 0), out);
}

/* With materialize 0 there are no rows: g_rows is [0,D] and x's part is 0 (x gets its
 * gradient from the GatherMatMuls that read it). */
static void dispatch(ad *a) {
    int out[2], in[5] = {ad_gout(a, 0), ad_gout(a, 3), ad_in(a, 0), ad_in(a, 1), ad_in(a, 2)};
    ad_grad_op(a, "moe.DispatchGrad", in, 5, out, 2);
    if (mc_attr_int(a->fwd, "materialize")) ad_add_grad(a, ad_in(a, 0), out[0]);
    ad_add_grad(a, ad_in(a, 2), out[1]);
}

static void expert_matmul(ad *a) {
    int out[2], in[4] = {gy(a), ad_in(a, 0), ad_in(a, 1), ad_in(a, 2)};
    ad_grad_op(a, "moe.ExpertMatMulGrad", in, 4, out, 2);
    ad_add_grad(a, ad_in(a, 0), out[0]);
    ad_add_grad(a, ad_in(a, 2), out[1]);
}

static void gather_matmul(ad *a) {
    int out[2], in[5] = {gy(a), ad_in(a, 0), ad_in(a, 1), ad_in(a, 2), ad_in(a, 3)};
    ad_grad_op(a, "moe.GatherMatMulGrad", in, 5, out, 2);
    ad_add_grad(a, ad_in(a, 0), out[0]);
    ad_add_grad(a, ad_in(a, 3), out[1]);
}

static void combine(ad *a) {
    int out[2], in[6] = {gy(a), ad_in(a, 0), ad_in(a, 1), ad_in(a, 2), ad_in(a, 3), ad_in(a, 4)};
    ad_grad_op(a, "moe.CombineGrad", in, 6, out, 2);
    ad_add_grad(a, ad_in(a, 0), out[0]);
    ad_add_grad(a, ad_in(a, 2), out[1]);
}

/* MSELoss(pred, target): d/d target = -(d/d pred). */
static void mse(ad *a) {
    int out, in[3] = {gy(a), ad_in(a, 0), ad_in(a, 1)};
    ad_grad_op(a, "moe.MSELossGrad", in, 3, &out, 1);
    ad_add_grad(a, ad_in(a, 0), out);
    if (a->needs[ad_in(a, 1)]) ad_add_grad(a, ad_in(a, 1), ad_op1(a, MC_OP_NEG, &out, 1));
}

void ad_backprop(ad *a) {
    switch (a->fwd->op) {
    case MC_OP_ADD: add_sub(a, false); break;
    case MC_OP_SUB: add_sub(a, true); break;
    case MC_OP_MUL: mul(a); break;
    case MC_OP_DIV: div_(a); break;
    case MC_OP_POW: pow_(a); break;
    case MC_OP_NEG: neg(a); break;
    case MC_OP_SQRT: unary(a, "Sqrt"); break;
    case MC_OP_EXP: unary(a, "Exp"); break;
    case MC_OP_LOG: unary(a, "Log"); break;
    case MC_OP_RELU: unary(a, "Relu"); break;
    case MC_OP_GELU: gelu(a); break;
    case MC_OP_SIGMOID: unary(a, "Sigmoid"); break;
    case MC_OP_TANH: unary(a, "Tanh"); break;
    case MC_OP_ABS: abs_grad(a); break;
    case MC_OP_RECIPROCAL: reciprocal_grad(a); break;
    case MC_OP_ERF: erf_grad(a); break;
    case MC_OP_SILU: unary(a, "Silu"); break;
    case MC_OP_SOFTMAX: softmax(a, false); break;
    case MC_OP_LOG_SOFTMAX: softmax(a, true); break;
    case MC_OP_LAYER_NORM: layer_norm(a); break;
    case MC_OP_RMS_NORM: rms_norm(a); break;
    case MC_OP_MATMUL: matmul(a); break;
    case MC_OP_GEMM: gemm(a); break;
    case MC_OP_RESHAPE: reshape(a); break;
    case MC_OP_TRANSPOSE: transpose(a); break;
    case MC_OP_CONCAT: concat(a); break;
    case MC_OP_SPLIT: split(a); break;
    case MC_OP_SLICE: first_input_grad(a, "moe.SliceGrad"); break;
    case MC_OP_GATHER: first_input_grad(a, "moe.GatherGrad"); break;
    case MC_OP_REDUCE_SUM: reduce_sum(a); break;
    case MC_OP_REDUCE_MEAN: reduce_mean(a); break;
    case MC_OP_REDUCE_MAX: first_input_grad(a, "moe.ReduceMaxGrad"); break;
    case MC_OP_CAST: cast(a); break;
    case MC_OP_IDENTITY: ad_add_grad(a, ad_in(a, 0), gy(a)); break;
    case MC_OP_WHERE: where(a); break;
    case MC_OP_TOPK: first_input_grad(a, "moe.TopKGrad"); break;
    case MC_OP_EQUAL:
    case MC_OP_LESS:
    case MC_OP_GREATER:
    case MC_OP_LESS_OR_EQUAL: break; /* bool results: no gradient */
    case MC_OP_MOE_TOPK_ROUTE: route(a, "moe.TopKRouteGrad"); break;
    case MC_OP_MOE_TOPP_ROUTE: route(a, "moe.TopPRouteGrad"); break;
    case MC_OP_MOE_EXPERT_CHOICE_ROUTE: route(a, "moe.ExpertChoiceRouteGrad"); break;
    case MC_OP_MOE_RESONANCE_ROUTE: route(a, "moe.ResonanceRouteGrad"); break;
    case MC_OP_MOE_GW_ROUTE: route(a, "moe.GWRouteGrad"); break; /* its mode copied too */
    case MC_OP_MOE_DISPATCH: dispatch(a); break;
    case MC_OP_MOE_EXPERT_MATMUL: expert_matmul(a); break;
    case MC_OP_MOE_GATHER_MATMUL: gather_matmul(a); break;
    case MC_OP_MOE_COMBINE: combine(a); break;
    case MC_OP_MOE_MOE:
        ad_fail(a, "moe.MoE must be expanded first (run expand-moe before autodiff)");
        break;
    case MC_OP_MOE_LOAD_BALANCE_LOSS: first_input_grad(a, "moe.LoadBalanceLossGrad"); break;
    case MC_OP_MOE_Z_LOSS: first_input_grad(a, "moe.ZLossGrad"); break;
    case MC_OP_MOE_ENTROPY_LOSS: first_input_grad(a, "moe.EntropyLossGrad"); break;
    case MC_OP_SOFTMAX_CROSS_ENTROPY_LOSS:
        first_input_grad(a, "moe.SoftmaxCrossEntropyLossGrad");
        break;
    case MC_OP_MSE_LOSS: mse(a); break;
    case MC_OP_MOE_UNARY_GRAD:
    case MC_OP_MOE_SUM_TO:
    case MC_OP_MOE_BROADCAST_TO:
    case MC_OP_MOE_SOFTMAX_GRAD:
    case MC_OP_MOE_LAYER_NORM_GRAD:
    case MC_OP_MOE_RMS_NORM_GRAD:
    case MC_OP_MOE_GATHER_GRAD:
    case MC_OP_MOE_SLICE_GRAD:
    case MC_OP_MOE_TOPK_GRAD:
    case MC_OP_MOE_REDUCE_MAX_GRAD:
    case MC_OP_MOE_TOPK_ROUTE_GRAD:
    case MC_OP_MOE_TOPP_ROUTE_GRAD:
    case MC_OP_MOE_EXPERT_CHOICE_ROUTE_GRAD:
    case MC_OP_MOE_RESONANCE_ROUTE_GRAD:
    case MC_OP_MOE_GW_ROUTE_GRAD:
    case MC_OP_MOE_DISPATCH_GRAD:
    case MC_OP_MOE_EXPERT_MATMUL_GRAD:
    case MC_OP_MOE_GATHER_MATMUL_GRAD:
    case MC_OP_MOE_COMBINE_GRAD:
    case MC_OP_MOE_LOAD_BALANCE_LOSS_GRAD:
    case MC_OP_MOE_Z_LOSS_GRAD:
    case MC_OP_MOE_ENTROPY_LOSS_GRAD:
    case MC_OP_MOE_SOFTMAX_CROSS_ENTROPY_LOSS_GRAD:
    case MC_OP_MOE_MSE_LOSS_GRAD:
    case MC_OP_MOE_SGD:
    case MC_OP_MOE_ADAMW:
        ad_fail(a, "gradient and optimizer ops are not differentiated again");
        break;
    case MC_OP_MOE_FUSED_UP:
    case MC_OP_MOE_FUSED_DOWN_COMBINE:
    case MC_OP_MOE_FUSED_TOPK_DISPATCH:
    case MC_OP_MOE_FUSED_TOPP_DISPATCH:
    case MC_OP_MOE_FUSED_EXPERT_CHOICE_DISPATCH:
    case MC_OP_MOE_FUSED_ELEMENTWISE:
    case MC_OP_MOE_FUSED_NORM: /* the manager refuses autodiff after fusion */
        ad_fail(a, "fused ops have no gradient rule: fusion runs after autodiff");
        break;
    case MC_NUM_OPS: break;
    }
}
