/* ir/infer_grad_moe.c: shape inference of the gradients of MoE ops (docs/autodiff.md).
 *
 * A gradient op takes the cotangent(s) of its forward op's output(s) first, then the
 * forward op's inputs. Its forward inputs are validated as the forward op validates
 * them (ir/infer_moe.c), each cotangent must have the forward output's shape, and each
 * gradient output takes the shape and dtype of the forward input it belongs to. */
#include "infer.h"

/* The cotangent at input i must be `dt` with exactly the shape `want` of the forward
 * output it stands for. */
static bool cotangent_ok(mc_infer_ctx *cx, int i, mc_dtype dt, const mc_shape *want,
                         const char *what) {
    if (!inf_dtype(cx, i, dt)) return false;
    const mc_shape *s = &inf_in(cx, i)->shape;
    if (mc_shape_eq(s, want)) return true;
    return inf_fail(cx, inf_sub(cx, i), "%s has shape %s but the forward output is %s", what,
                    inf_shape(cx, s), inf_shape(cx, want));
}

/* Output j takes the dtype and shape of input i. */
static void set_like(mc_infer_ctx *cx, int j, int i) {
    inf_set(cx, j, inf_in(cx, i)->dt, &inf_in(cx, i)->shape);
}

/* g_weight at input 0 must be f32 [rows, cols]; g_logits (output 0) is like input 1. */
static bool route_grad_done(mc_infer_ctx *cx, mc_dim rows, int64_t cols) {
    mc_shape w = {2, {rows, mc_dim_const(cols)}};
    if (!cotangent_ok(cx, 0, MC_DT_F32, &w, "g_weight")) return false;
    set_like(cx, 0, 1);
    return true;
}

/* TopKRouteGrad(g_weight[T,k], logits[T,E], bias[E]?) -> g_logits[T,E] */
bool mc_infer_MOE_TOPK_ROUTE_GRAD(mc_infer_ctx *cx) {
    int64_t E = 0;
    if (!inf_route_logits(cx, 1, &E) || !inf_topk_attrs(cx, E, 2)) return false;
    return route_grad_done(cx, inf_in(cx, 1)->shape.d[0], mc_attr_int(cx->n, "k"));
}

/* TopPRouteGrad(g_weight[T,K], logits[T,E]) -> g_logits[T,E]; K = max_k (0 means E). */
bool mc_infer_MOE_TOPP_ROUTE_GRAD(mc_infer_ctx *cx) {
    int64_t E = 0, K = 0;
    if (!inf_route_logits(cx, 1, &E) || !inf_positive_attr(cx, "max_k", 0, E, &K)) return false;
    double p = mc_attr_float(cx->n, "p");
    if (!(p >= 0 && p <= 1)) return inf_fail(cx, "attrs/p", "p is %g but must be in [0, 1]", p);
    return route_grad_done(cx, inf_in(cx, 1)->shape.d[0], K ? K : E);
}

/* ExpertChoiceRouteGrad(g_weight[E,C], logits[T,E], mask[T]?) -> g_logits[T,E] */
bool mc_infer_MOE_EXPERT_CHOICE_ROUTE_GRAD(mc_infer_ctx *cx) {
    int64_t E = 0, C = 0;
    if (!inf_route_logits(cx, 1, &E) || !inf_mask(cx, 2, &inf_in(cx, 1)->shape) ||
        !inf_positive_attr(cx, "capacity", 1, MC_MAX_DIM, &C))
        return false;
    return route_grad_done(cx, mc_dim_const(E), C);
}

/* ResonanceRouteGrad(g_weight[T,k], x[T,D]) -> gx[T,D]; D divisible by num_experts. */
bool mc_infer_MOE_RESONANCE_ROUTE_GRAD(mc_infer_ctx *cx) {
    int64_t E = 0, k = 0, cap = 0;
    if (!inf_dtype(cx, 1, MC_DT_F32) || !inf_rank(cx, 1, 2)) return false;
    mc_dim D = inf_in(cx, 1)->shape.d[1];
    if (!mc_dim_is_const(D))
        return inf_fail(cx, inf_sub(cx, 1), "the feature dim must be constant");
    if (!inf_positive_attr(cx, "num_experts", 1, D.c, &E) ||
        !inf_positive_attr(cx, "k", 1, E, &k) ||
        !inf_positive_attr(cx, "capacity", 0, MC_MAX_DIM, &cap))
        return false;
    if (D.c % E)
        return inf_fail(cx, "attrs/num_experts",
                        "num_experts is %lld but must divide the feature dim %lld", (long long)E,
                        (long long)D.c);
    return route_grad_done(cx, inf_in(cx, 1)->shape.d[0], k);
}

/* GWRouteGrad(g_weight, logits[T,E], bias[E]?, mask[T]?) -> g_logits[T,E]; g_weight is
 * [T,k] in mode "infer" and [T,E] in mode "train", like GWRoute's weight. */
bool mc_infer_MOE_GW_ROUTE_GRAD(mc_infer_ctx *cx) {
    int64_t E = 0, M = 0;
    if (!inf_route_logits(cx, 1, &E) || !inf_topk_attrs(cx, E, 2) ||
        !inf_mask(cx, 3, &inf_in(cx, 1)->shape) ||
        !inf_positive_attr(cx, "max_broadcast", 0, MC_MAX_DIM, &M))
        return false;
    double tau = mc_attr_float(cx->n, "threshold"), eps = mc_attr_float(cx->n, "eps");
    if (!(tau >= 0))
        return inf_fail(cx, "attrs/threshold", "threshold is %g but must be >= 0", tau);
    if (!(eps >= 0 && eps < 1))
        return inf_fail(cx, "attrs/eps", "eps is %g but must be in [0, 1)", eps);
    return route_grad_done(cx, inf_in(cx, 1)->shape.d[0], inf_gw_width(cx, E));
}

/* DispatchGrad(g_rows[N,D], g_row_weight[N], x[T,D], expert[T,K] | token[E,C], weight)
 * -> gx[T,D], gweight (weight's shape); N = T*K or E*C. materialize 0: g_rows[0,D]. */
bool mc_infer_MOE_DISPATCH_GRAD(mc_infer_ctx *cx) {
    int64_t E = 0, mat = 1;
    if (!inf_float(cx, 2) || !inf_rank(cx, 2, 2) || !inf_dtype(cx, 3, MC_DT_I32) ||
        !inf_rank(cx, 3, 2) || !inf_dtype(cx, 4, MC_DT_F32) ||
        !inf_positive_attr(cx, "num_experts", 1, 1 << 20, &E) ||
        !inf_positive_attr(cx, "materialize", 0, 1, &mat))
        return false;
    const mc_shape *x = &inf_in(cx, 2)->shape, *idx = &inf_in(cx, 3)->shape;
    if (!mc_shape_eq(idx, &inf_in(cx, 4)->shape))
        return inf_fail(cx, inf_sub(cx, 4), "weight has shape %s but the index input has %s",
                        inf_shape(cx, &inf_in(cx, 4)->shape), inf_shape(cx, idx));
    if (!mc_dim_is_const(idx->d[1]))
        return inf_fail(cx, inf_sub(cx, 3), "the second dim of %s must be constant",
                        inf_shape(cx, idx));
    bool by_expert = mc_attr_choice(cx->n, "source") == MC_A_MOE_DISPATCH_source_expert_choice;
    if (by_expert && !mc_dim_eq(idx->d[0], mc_dim_const(E)))
        return inf_fail(
            cx, inf_sub(cx, 3),
            "expert-choice tokens have shape %s but must be [%lld,C] (num_experts rows)",
            inf_shape(cx, idx), (long long)E);
    if (!by_expert &&
        !inf_dim_eq(cx, idx, 0, x, 0, inf_sub(cx, 3), "expert indices need one row per token"))
        return false;
    mc_dim N = idx->d[0];
    N.c *= idx->d[1].c;
    mc_shape rows = {2, {mat ? N : mc_dim_const(0), x->d[1]}}, flat = {1, {N}};
    if (!cotangent_ok(cx, 0, inf_in(cx, 2)->dt, &rows, "g_rows") ||
        !cotangent_ok(cx, 1, MC_DT_F32, &flat, "g_row_weight"))
        return false;
    set_like(cx, 0, 2);
    set_like(cx, 1, 4);
    return true;
}

/* ExpertMatMulGrad(g_out[N,F], rows[N,D], offsets[E+1], W[E,D,F]) -> g_rows[N,D],
 * gW[E,D,F]. */
bool mc_infer_MOE_EXPERT_MATMUL_GRAD(mc_infer_ctx *cx) {
    int64_t E = 0;
    if (!inf_float(cx, 1) || !inf_rank(cx, 1, 2) || !inf_offsets(cx, 2, &E) ||
        !inf_same_dtype(cx, 1, 3) || !inf_rank(cx, 3, 3))
        return false;
    mc_shape out;
    if (!inf_expert_weights(cx, 1, 3, E, &out)) return false;
    if (!cotangent_ok(cx, 0, inf_in(cx, 1)->dt, &out, "g_out")) return false;
    set_like(cx, 0, 1);
    set_like(cx, 1, 3);
    return true;
}

/* GatherMatMulGrad(g_out[N,F], x[T,D], row_token[N] i32, offsets[E+1], W[E,D,F])
 * -> gx[T,D], gW[E,D,F]. */
bool mc_infer_MOE_GATHER_MATMUL_GRAD(mc_infer_ctx *cx) {
    int64_t E = 0;
    if (!inf_float(cx, 1) || !inf_rank(cx, 1, 2) || !inf_dtype(cx, 2, MC_DT_I32) ||
        !inf_rank(cx, 2, 1) || !inf_offsets(cx, 3, &E) || !inf_same_dtype(cx, 1, 4) ||
        !inf_rank(cx, 4, 3))
        return false;
    const mc_shape *x = &inf_in(cx, 1)->shape, *w = &inf_in(cx, 4)->shape;
    if (!mc_dim_eq(w->d[0], mc_dim_const(E)))
        return inf_fail(cx, inf_sub(cx, 4),
                        "weights have shape %s but offsets describe %lld experts", inf_shape(cx, w),
                        (long long)E);
    if (!inf_dim_eq(cx, w, 1, x, 1, inf_sub(cx, 4),
                    "the expert weights' input dim must equal x's width"))
        return false;
    mc_shape out = {2, {inf_in(cx, 2)->shape.d[0], w->d[2]}};
    if (!cotangent_ok(cx, 0, inf_in(cx, 1)->dt, &out, "g_out")) return false;
    set_like(cx, 0, 1);
    set_like(cx, 1, 4);
    return true;
}

/* CombineGrad(gy[T,D], out[N,D], row_token[N], row_weight[N], offsets[E+1], x[T,*])
 * -> g_out[N,D], g_row_weight[N]. */
bool mc_infer_MOE_COMBINE_GRAD(mc_infer_ctx *cx) {
    int64_t E = 0;
    if (!inf_float(cx, 1) || !inf_rank(cx, 1, 2) || !inf_dtype(cx, 2, MC_DT_I32) ||
        !inf_rank(cx, 2, 1) || !inf_dtype(cx, 3, MC_DT_F32) || !inf_rank(cx, 3, 1) ||
        !inf_offsets(cx, 4, &E))
        return false;
    const mc_shape *o = &inf_in(cx, 1)->shape, *x = &inf_in(cx, 5)->shape;
    if (!inf_dim_eq(cx, &inf_in(cx, 2)->shape, 0, o, 0, inf_sub(cx, 2),
                    "row_token needs one entry per row") ||
        !inf_dim_eq(cx, &inf_in(cx, 3)->shape, 0, o, 0, inf_sub(cx, 3),
                    "row_weight needs one entry per row"))
        return false;
    if (x->rank < 1) return inf_fail(cx, inf_sub(cx, 5), "x must have a token dim");
    mc_shape y = {2, {x->d[0], o->d[1]}};
    if (!cotangent_ok(cx, 0, inf_in(cx, 1)->dt, &y, "gy")) return false;
    set_like(cx, 0, 1);
    set_like(cx, 1, 3);
    return true;
}
