/* ir/infer_moe.c: shape contracts of the moe.* ops (docs/semantics-decisions.md). */
#include "infer.h"

#include <math.h>

/* logits[T,E] f32 with a constant E; returns E. */
bool inf_route_logits(mc_infer_ctx *cx, int i, int64_t *E) {
    if (!inf_dtype(cx, i, MC_DT_F32) || !inf_rank(cx, i, 2)) return false;
    mc_dim e = inf_in(cx, i)->shape.d[1];
    if (!mc_dim_is_const(e))
        return inf_fail(cx, inf_sub(cx, i), "the expert dim of %s must be constant",
                        inf_shape(cx, &inf_in(cx, i)->shape));
    *E = e.c;
    return true;
}

/* Optional [T] bool mask at input i matching the token dim of `ref`. */
bool inf_mask(mc_infer_ctx *cx, int i, const mc_shape *ref) {
    const mc_value *m = inf_in(cx, i);
    if (!m) return true;
    if (!inf_dtype(cx, i, MC_DT_BOOL) || !inf_rank(cx, i, 1)) return false;
    return inf_dim_eq(cx, &m->shape, 0, ref, 0, inf_sub(cx, i),
                      "the mask must have one entry per token");
}

static void set_pair(mc_infer_ctx *cx, mc_dim rows, int64_t cols) {
    mc_shape s = {2, {rows, mc_dim_const(cols)}};
    inf_set(cx, 0, MC_DT_I32, &s);
    inf_set(cx, 1, MC_DT_F32, &s);
}

/* The TopKRoute attributes shared by TopKRoute, GWRoute and moe.MoE. */
bool inf_topk_attrs(mc_infer_ctx *cx, int64_t E, int bias_input) {
    int64_t k = mc_attr_int(cx->n, "k"), cap = 0, groups = 1, tg = 0;
    if (k < 1 || k > E)
        return inf_fail(cx, "attrs/k",
                        "k is %lld but must be between 1 and %lld (the number of experts)",
                        (long long)k, (long long)E);
    if (!inf_positive_attr(cx, "capacity", 0, MC_MAX_DIM, &cap) ||
        !inf_positive_attr(cx, "groups", 1, E, &groups))
        return false;
    if (E % groups)
        return inf_fail(cx, "attrs/groups", "groups is %lld but must divide the %lld experts",
                        (long long)groups, (long long)E);
    if (!inf_positive_attr(cx, "topk_groups", 0, groups, &tg)) return false;
    if (tg && k > tg * (E / groups))
        return inf_fail(cx, "attrs/k", "k is %lld but the %lld kept groups hold only %lld experts",
                        (long long)k, (long long)tg, (long long)(tg * (E / groups)));
    double scale = mc_attr_float(cx->n, "scale");
    if (!(scale > 0)) return inf_fail(cx, "attrs/scale", "scale is %g but must be positive", scale);
    const mc_value *b = bias_input >= 0 ? inf_in(cx, bias_input) : NULL;
    if (b) {
        if (!inf_dtype(cx, bias_input, MC_DT_F32) || !inf_rank(cx, bias_input, 1)) return false;
        if (!mc_dim_eq(b->shape.d[0], mc_dim_const(E)))
            return inf_fail(cx, inf_sub(cx, bias_input),
                            "the bias has shape %s but must be [%lld] (one per expert)",
                            inf_shape(cx, &b->shape), (long long)E);
    }
    return true;
}

/* TopKRoute(logits[T,E], bias[E]?) -> expert[T,k] i32, weight[T,k] f32, choice[T,k] i32? */
bool mc_infer_MOE_TOPK_ROUTE(mc_infer_ctx *cx) {
    int64_t E = 0;
    if (!inf_route_logits(cx, 0, &E) || !inf_topk_attrs(cx, E, 1)) return false;
    int64_t k = mc_attr_int(cx->n, "k");
    set_pair(cx, inf_in(cx, 0)->shape.d[0], k);
    if (cx->n->nout == 3) {
        mc_shape s = {2, {inf_in(cx, 0)->shape.d[0], mc_dim_const(k)}};
        inf_set(cx, 2, MC_DT_I32, &s);
    }
    return true;
}

/* TopPRoute(logits[T,E]) -> expert[T,K], weight[T,K], K = max_k (0 means E). */
bool mc_infer_MOE_TOPP_ROUTE(mc_infer_ctx *cx) {
    int64_t E = 0, K = 0;
    if (!inf_route_logits(cx, 0, &E) || !inf_positive_attr(cx, "max_k", 0, E, &K)) return false;
    double p = mc_attr_float(cx->n, "p");
    if (!(p >= 0 && p <= 1)) return inf_fail(cx, "attrs/p", "p is %g but must be in [0, 1]", p);
    set_pair(cx, inf_in(cx, 0)->shape.d[0], K ? K : E);
    return true;
}

/* ExpertChoiceRoute(logits[T,E], mask[T]?) -> token[E,C] i32, weight[E,C]. */
bool mc_infer_MOE_EXPERT_CHOICE_ROUTE(mc_infer_ctx *cx) {
    int64_t E = 0, C = 0;
    if (!inf_route_logits(cx, 0, &E) || !inf_mask(cx, 1, &inf_in(cx, 0)->shape) ||
        !inf_positive_attr(cx, "capacity", 1, MC_MAX_DIM, &C))
        return false;
    set_pair(cx, mc_dim_const(E), C);
    return true;
}

/* ResonanceRoute(x[T,D]) -> expert[T,k], weight[T,k]; D divisible by num_experts. */
bool mc_infer_MOE_RESONANCE_ROUTE(mc_infer_ctx *cx) {
    int64_t E = 0, k = 0, cap = 0;
    if (!inf_dtype(cx, 0, MC_DT_F32) || !inf_rank(cx, 0, 2)) return false;
    mc_dim D = inf_in(cx, 0)->shape.d[1];
    if (!mc_dim_is_const(D))
        return inf_fail(cx, inf_sub(cx, 0), "the feature dim must be constant");
    if (!inf_positive_attr(cx, "num_experts", 1, D.c, &E) ||
        !inf_positive_attr(cx, "k", 1, E, &k) ||
        !inf_positive_attr(cx, "capacity", 0, MC_MAX_DIM, &cap))
        return false;
    if (D.c % E)
        return inf_fail(cx, "attrs/num_experts",
                        "num_experts is %lld but must divide the feature dim %lld", (long long)E,
                        (long long)D.c);
    set_pair(cx, inf_in(cx, 0)->shape.d[0], k);
    return true;
}

int64_t inf_gw_width(const mc_infer_ctx *cx, int64_t E) {
    bool train = mc_attr_choice(cx->n, "mode") == MC_A_MOE_GW_ROUTE_mode_train;
    return train ? E : mc_attr_int(cx->n, "k");
}

/* GWRoute(logits[T,E], bias[E]?, mask[T]?) -> expert, weight: [T,k] in mode "infer",
 * [T,E] in mode "train" (broadcast rows list every expert). */
bool mc_infer_MOE_GW_ROUTE(mc_infer_ctx *cx) {
    int64_t E = 0, M = 0;
    if (!inf_route_logits(cx, 0, &E) || !inf_topk_attrs(cx, E, 1) ||
        !inf_mask(cx, 2, &inf_in(cx, 0)->shape) ||
        !inf_positive_attr(cx, "max_broadcast", 0, MC_MAX_DIM, &M))
        return false;
    double tau = mc_attr_float(cx->n, "threshold"), eps = mc_attr_float(cx->n, "eps");
    if (!(tau >= 0))
        return inf_fail(cx, "attrs/threshold", "threshold is %g but must be >= 0", tau);
    if (!(eps >= 0 && eps < 1))
        return inf_fail(cx, "attrs/eps", "eps is %g but must be in [0, 1)", eps);
    set_pair(cx, inf_in(cx, 0)->shape.d[0], inf_gw_width(cx, E));
    return true;
}

/* Dispatch(x[T,D], expert[T,K] | token[E,C], weight) -> rows[N,D], offsets[E+1] i32,
 * row_token[N] i32, row_weight[N] f32; N = T*K or E*C. materialize 0: rows[0,D]. */
bool mc_infer_MOE_DISPATCH(mc_infer_ctx *cx) {
    int64_t E = 0, mat = 1;
    if (!inf_float(cx, 0) || !inf_rank(cx, 0, 2) || !inf_dtype(cx, 1, MC_DT_I32) ||
        !inf_rank(cx, 1, 2) || !inf_dtype(cx, 2, MC_DT_F32) ||
        !inf_positive_attr(cx, "num_experts", 1, 1 << 20, &E) ||
        !inf_positive_attr(cx, "materialize", 0, 1, &mat))
        return false;
    const mc_shape *x = &inf_in(cx, 0)->shape, *idx = &inf_in(cx, 1)->shape;
    if (!mc_shape_eq(idx, &inf_in(cx, 2)->shape))
        return inf_fail(cx, inf_sub(cx, 2), "weight has shape %s but the index input has %s",
                        inf_shape(cx, &inf_in(cx, 2)->shape), inf_shape(cx, idx));
    bool by_expert = mc_attr_choice(cx->n, "source") == MC_A_MOE_DISPATCH_source_expert_choice;
    mc_dim N = idx->d[0];
    if (!mc_dim_is_const(idx->d[1]))
        return inf_fail(cx, inf_sub(cx, 1), "the second dim of %s must be constant",
                        inf_shape(cx, idx));
    N.c *= idx->d[1].c;
    if (by_expert && !mc_dim_eq(idx->d[0], mc_dim_const(E)))
        return inf_fail(
            cx, inf_sub(cx, 1),
            "expert-choice tokens have shape %s but must be [%lld,C] (num_experts rows)",
            inf_shape(cx, idx), (long long)E);
    if (!by_expert &&
        !inf_dim_eq(cx, idx, 0, x, 0, inf_sub(cx, 1), "expert indices need one row per token"))
        return false;
    mc_shape rows = {2, {mat ? N : mc_dim_const(0), x->d[1]}}, offs = {1, {mc_dim_const(E + 1)}},
             flat = {1, {N}};
    inf_set(cx, 0, inf_in(cx, 0)->dt, &rows);
    inf_set(cx, 1, MC_DT_I32, &offs);
    inf_set(cx, 2, MC_DT_I32, &flat);
    inf_set(cx, 3, MC_DT_F32, &flat);
    return true;
}

/* offsets[E+1] i32 at input i; returns E. */
bool inf_offsets(mc_infer_ctx *cx, int i, int64_t *E) {
    if (!inf_dtype(cx, i, MC_DT_I32) || !inf_rank(cx, i, 1)) return false;
    mc_dim d = inf_in(cx, i)->shape.d[0];
    if (!mc_dim_is_const(d) || d.c < 2)
        return inf_fail(cx, inf_sub(cx, i), "offsets must be a constant [E+1] vector");
    *E = d.c - 1;
    return true;
}

bool inf_expert_weights(mc_infer_ctx *cx, int rows, int weights, int64_t E, mc_shape *out) {
    const mc_shape *r = &inf_in(cx, rows)->shape, *w = &inf_in(cx, weights)->shape;
    if (!mc_dim_eq(w->d[0], mc_dim_const(E)))
        return inf_fail(cx, inf_sub(cx, weights),
                        "weights have shape %s but offsets describe %lld experts", inf_shape(cx, w),
                        (long long)E);
    if (!inf_dim_eq(cx, w, 1, r, 1, inf_sub(cx, weights),
                    "the expert weights' input dim must equal the rows' width"))
        return false;
    *out = (mc_shape){2, {r->d[0], w->d[2]}};
    return true;
}

/* ExpertMatMul(rows[N,D], offsets[E+1], W[E,D,F]) -> out[N,F]. */
bool mc_infer_MOE_EXPERT_MATMUL(mc_infer_ctx *cx) {
    int64_t E = 0;
    if (!inf_float(cx, 0) || !inf_rank(cx, 0, 2) || !inf_offsets(cx, 1, &E) ||
        !inf_weight(cx, 0, 2) || !inf_rank(cx, 2, 3))
        return false;
    mc_shape out;
    if (!inf_expert_weights(cx, 0, 2, E, &out)) return false;
    inf_set(cx, 0, inf_in(cx, 0)->dt, &out);
    return true;
}

/* GatherMatMul(x[T,D], row_token[N] i32, offsets[E+1], W[E,D,F]) -> out[N,F]: ExpertMatMul
 * whose row i is x[row_token[i]] (a Dispatch with materialize 0 supplies row_token). */
bool mc_infer_MOE_GATHER_MATMUL(mc_infer_ctx *cx) {
    int64_t E = 0;
    if (!inf_float(cx, 0) || !inf_rank(cx, 0, 2) || !inf_dtype(cx, 1, MC_DT_I32) ||
        !inf_rank(cx, 1, 1) || !inf_offsets(cx, 2, &E) || !inf_weight(cx, 0, 3) ||
        !inf_rank(cx, 3, 3))
        return false;
    const mc_shape *x = &inf_in(cx, 0)->shape, *w = &inf_in(cx, 3)->shape;
    if (!mc_dim_eq(w->d[0], mc_dim_const(E)))
        return inf_fail(cx, inf_sub(cx, 3),
                        "weights have shape %s but offsets describe %lld experts", inf_shape(cx, w),
                        (long long)E);
    if (!inf_dim_eq(cx, w, 1, x, 1, inf_sub(cx, 3),
                    "the expert weights' input dim must equal x's width"))
        return false;
    mc_shape out = {2, {inf_in(cx, 1)->shape.d[0], w->d[2]}};
    inf_set(cx, 0, inf_in(cx, 0)->dt, &out);
    return true;
}

/* Combine(out[N,D], row_token[N] i32, row_weight[N] f32, offsets[E+1], x[T,*]) -> y[T,D]. */
bool mc_infer_MOE_COMBINE(mc_infer_ctx *cx) {
    int64_t E = 0;
    if (!inf_float(cx, 0) || !inf_rank(cx, 0, 2) || !inf_dtype(cx, 1, MC_DT_I32) ||
        !inf_rank(cx, 1, 1) || !inf_dtype(cx, 2, MC_DT_F32) || !inf_rank(cx, 2, 1) ||
        !inf_offsets(cx, 3, &E))
        return false;
    const mc_shape *o = &inf_in(cx, 0)->shape, *x = &inf_in(cx, 4)->shape;
    if (!inf_dim_eq(cx, &inf_in(cx, 1)->shape, 0, o, 0, inf_sub(cx, 1),
                    "row_token needs one entry per row") ||
        !inf_dim_eq(cx, &inf_in(cx, 2)->shape, 0, o, 0, inf_sub(cx, 2),
                    "row_weight needs one entry per row"))
        return false;
    if (x->rank < 1) return inf_fail(cx, inf_sub(cx, 4), "x must have a token dim");
    mc_shape y = {2, {x->d[0], o->d[1]}};
    inf_set(cx, 0, inf_in(cx, 0)->dt, &y);
    return true;
}

/* A weight input of moe.MoE with an exact expected shape. */
static bool weight_is(mc_infer_ctx *cx, int i, const mc_shape *want, const char *role) {
    const mc_value *w = inf_in(cx, i);
    if (!w) return true;
    if (!inf_weight(cx, 0, i)) return false;
    if (mc_shape_eq(&w->shape, want)) return true;
    return inf_fail(cx, inf_sub(cx, i), "%s (%s) has shape %s but must be %s", role, w->name,
                    inf_shape(cx, &w->shape), inf_shape(cx, want));
}

/* MoE(x[T,D], logits[T,E], w_up[E,D,F], w_down[E,F,D], w_gate[E,D,F]?, bias[E]?,
 * shared_up[D,S]?, shared_down[S,D]?, shared_gate[D,S]?) -> y[T,D]. */
bool mc_infer_MOE_MOE(mc_infer_ctx *cx) {
    int64_t E = 0;
    if (!inf_float(cx, 0) || !inf_rank(cx, 0, 2) || !inf_route_logits(cx, 1, &E) ||
        !inf_topk_attrs(cx, E, 5) || !inf_rank(cx, 2, 3))
        return false;
    const mc_shape *x = &inf_in(cx, 0)->shape, *up = &inf_in(cx, 2)->shape;
    if (!inf_dim_eq(cx, &inf_in(cx, 1)->shape, 0, x, 0, inf_sub(cx, 1),
                    "logits need one row per token"))
        return false;
    mc_shape w_up = {3, {mc_dim_const(E), x->d[1], up->d[2]}},
             w_down = {3, {mc_dim_const(E), up->d[2], x->d[1]}};
    if (!weight_is(cx, 2, &w_up, "w_up") || !weight_is(cx, 3, &w_down, "w_down") ||
        !weight_is(cx, 4, &w_up, "w_gate"))
        return false;
    bool su = inf_in(cx, 6), sd = inf_in(cx, 7);
    if (su != sd || (inf_in(cx, 8) && !su))
        return inf_fail(
            cx, inf_sub(cx, 6),
            "a shared expert needs both shared_up and shared_down (shared_gate is optional)");
    if (su) {
        if (!inf_rank(cx, 6, 2)) return false;
        mc_dim S = inf_in(cx, 6)->shape.d[1];
        mc_shape s_up = {2, {x->d[1], S}}, s_down = {2, {S, x->d[1]}};
        if (!weight_is(cx, 6, &s_up, "shared_up") || !weight_is(cx, 7, &s_down, "shared_down") ||
            !weight_is(cx, 8, &s_up, "shared_gate"))
            return false;
    }
    inf_set(cx, 0, inf_in(cx, 0)->dt, x);
    return true;
}

/* LoadBalanceLoss(probs[T,E], choice[T,K] i32, mask[T]?) -> loss[] f32. */
bool mc_infer_MOE_LOAD_BALANCE_LOSS(mc_infer_ctx *cx) {
    int64_t E = 0;
    if (!inf_route_logits(cx, 0, &E) || !inf_dtype(cx, 1, MC_DT_I32) || !inf_rank(cx, 1, 2) ||
        !inf_dim_eq(cx, &inf_in(cx, 1)->shape, 0, &inf_in(cx, 0)->shape, 0, inf_sub(cx, 1),
                    "choices need one row per token") ||
        !inf_mask(cx, 2, &inf_in(cx, 0)->shape))
        return false;
    bool seq = mc_attr_choice(cx->n, "scope") == MC_A_MOE_LOAD_BALANCE_LOSS_scope_sequence;
    const mc_attr *sl = mc_attr_get(cx->n, "seq_len");
    if (seq && (!sl || sl->i < 1))
        return inf_fail(cx, "attrs/seq_len", "scope \"sequence\" needs seq_len >= 1");
    if (!seq && sl)
        return inf_fail(cx, "attrs/seq_len", "seq_len is only meaningful with scope \"sequence\"");
    mc_shape s = {0, {{0}}};
    inf_set(cx, 0, MC_DT_F32, &s);
    return true;
}

/* ZLoss(logits[T,E], mask?) / EntropyLoss(probs[T,E], mask?) -> loss[] f32. */
static bool simple_loss(mc_infer_ctx *cx) {
    int64_t E = 0;
    if (!inf_route_logits(cx, 0, &E) || !inf_mask(cx, 1, &inf_in(cx, 0)->shape)) return false;
    mc_shape s = {0, {{0}}};
    inf_set(cx, 0, MC_DT_F32, &s);
    return true;
}
bool mc_infer_MOE_Z_LOSS(mc_infer_ctx *cx) {
    return simple_loss(cx);
}
bool mc_infer_MOE_ENTROPY_LOSS(mc_infer_ctx *cx) {
    return simple_loss(cx);
}
