/* ir/infer_fused.c: shape contracts of the fused ops the fusion passes make
 * (docs/fusion.md). Fusion only rewrites f32 graphs, so every float operand is f32.
 *
 *   moe.FusedUp(a, W_up, W_gate?, offsets?, row_token?) -> h[M,F]
 *     routed:  a rows[N,D] (or x[T,D] read through row_token[N] i32), offsets[E+1],
 *              W_up and W_gate [E,D,F]; M = N
 *     dense:   a[T,D], W_up and W_gate [D,F], no offsets, no row_token; M = T
 *     h = act(a W_gate) * (a W_up), or act(a W_up) without a gate
 *   moe.FusedDownCombine(h[N,F], offsets[E+1], W_down[E,F,D], row_token[N] i32,
 *                        row_weight[N] f32, like[T,*], residual[T,D]?) -> y[T,D]
 *     y = Combine(ExpertMatMul(h, offsets, W_down), row_token, row_weight, offsets, like)
 *         (+ residual, added last)
 */
#include "infer.h"
#include "elementwise.h"

enum { UP_A, UP_W, UP_GATE, UP_OFFSETS, UP_TOKEN };

/* Weight input i, if given, suits f32 activations at UP_A. */
static bool weight_or_absent(mc_infer_ctx *cx, int i) {
    return !inf_in(cx, i) || inf_weight(cx, UP_A, i);
}

/* The rows FusedUp computes: a's rows, or one per row_token entry. */
static bool up_rows(mc_infer_ctx *cx, mc_dim *rows) {
    const mc_value *tok = inf_in(cx, UP_TOKEN);
    if (!tok) {
        *rows = inf_in(cx, UP_A)->shape.d[0];
        return true;
    }
    if (!inf_in(cx, UP_OFFSETS))
        return inf_fail(cx, inf_sub(cx, UP_TOKEN), "row_token needs offsets (input 3)");
    if (!inf_dtype(cx, UP_TOKEN, MC_DT_I32) || !inf_rank(cx, UP_TOKEN, 1)) return false;
    *rows = tok->shape.d[0];
    return true;
}

/* W_up against a (and offsets); out: [rows, F]. */
static bool up_weights(mc_infer_ctx *cx, mc_dim rows, mc_shape *out) {
    const mc_shape *a = &inf_in(cx, UP_A)->shape, *w = &inf_in(cx, UP_W)->shape;
    int64_t E = 0;
    bool routed = inf_in(cx, UP_OFFSETS) != NULL;
    if (routed && !inf_offsets(cx, UP_OFFSETS, &E)) return false;
    if (!inf_rank(cx, UP_W, routed ? 3 : 2)) return false;
    if (routed && !mc_dim_eq(w->d[0], mc_dim_const(E)))
        return inf_fail(cx, inf_sub(cx, UP_W),
                        "weights have shape %s but offsets describe %lld experts", inf_shape(cx, w),
                        (long long)E);
    int din = routed ? 1 : 0;
    if (!inf_dim_eq(cx, w, din, a, 1, inf_sub(cx, UP_W),
                    "the weights' input dim must equal a's width"))
        return false;
    *out = (mc_shape){2, {rows, w->d[din + 1]}};
    return true;
}

bool mc_infer_MOE_FUSED_UP(mc_infer_ctx *cx) {
    if (!inf_dtype(cx, UP_A, MC_DT_F32) || !inf_rank(cx, UP_A, 2) || !inf_weight(cx, UP_A, UP_W) ||
        !weight_or_absent(cx, UP_GATE))
        return false;
    mc_dim rows = mc_dim_const(0);
    mc_shape out;
    if (!up_rows(cx, &rows) || !up_weights(cx, rows, &out)) return false;
    const mc_value *gate = inf_in(cx, UP_GATE);
    if (gate && !mc_shape_eq(&gate->shape, &inf_in(cx, UP_W)->shape))
        return inf_fail(cx, inf_sub(cx, UP_GATE), "the gate weights have shape %s but W_up has %s",
                        inf_shape(cx, &gate->shape), inf_shape(cx, &inf_in(cx, UP_W)->shape));
    inf_set(cx, 0, MC_DT_F32, &out);
    return true;
}

enum { DN_H, DN_OFFSETS, DN_W, DN_TOKEN, DN_WEIGHT, DN_LIKE, DN_RESIDUAL };

bool mc_infer_MOE_FUSED_DOWN_COMBINE(mc_infer_ctx *cx) {
    int64_t E = 0;
    if (!inf_dtype(cx, DN_H, MC_DT_F32) || !inf_rank(cx, DN_H, 2) ||
        !inf_offsets(cx, DN_OFFSETS, &E) || !inf_weight(cx, DN_H, DN_W) || !inf_rank(cx, DN_W, 3) ||
        !inf_dtype(cx, DN_TOKEN, MC_DT_I32) || !inf_rank(cx, DN_TOKEN, 1) ||
        !inf_dtype(cx, DN_WEIGHT, MC_DT_F32) || !inf_rank(cx, DN_WEIGHT, 1))
        return false;
    mc_shape o;
    if (!inf_expert_weights(cx, DN_H, DN_W, E, &o)) return false;
    const mc_shape *h = &inf_in(cx, DN_H)->shape, *like = &inf_in(cx, DN_LIKE)->shape;
    if (!inf_dim_eq(cx, &inf_in(cx, DN_TOKEN)->shape, 0, h, 0, inf_sub(cx, DN_TOKEN),
                    "row_token needs one entry per row") ||
        !inf_dim_eq(cx, &inf_in(cx, DN_WEIGHT)->shape, 0, h, 0, inf_sub(cx, DN_WEIGHT),
                    "row_weight needs one entry per row"))
        return false;
    if (like->rank < 1) return inf_fail(cx, inf_sub(cx, DN_LIKE), "like must have a token dim");
    mc_shape y = {2, {like->d[0], o.d[1]}};
    const mc_value *res = inf_in(cx, DN_RESIDUAL);
    if (res && (!inf_dtype(cx, DN_RESIDUAL, MC_DT_F32) || !mc_shape_eq(&res->shape, &y)))
        return inf_fail(cx, inf_sub(cx, DN_RESIDUAL), "the residual has shape %s but y has %s",
                        inf_shape(cx, &res->shape), inf_shape(cx, &y));
    inf_set(cx, 0, MC_DT_F32, &y);
    return true;
}

/* ---- router, route and Dispatch in one op ----
 *   moe.FusedTopKDispatch(x[T,D], router_in[T,R], W_router[R,E], bias[E]?)
 *   moe.FusedTopPDispatch(x, router_in, W_router)
 *   moe.FusedExpertChoiceDispatch(x, router_in, W_router)
 *     -> rows[N,D] ([0,D] with materialize 0), offsets[E+1] i32, row_token[N] i32,
 *        row_weight[N] f32: Dispatch(x, route(router_in @ W_router, bias?)), with the
 *        route's and Dispatch's attributes; N = T*k, T*K (K = max_k or E) or E*C. */
enum { RD_X, RD_ROUTER_IN, RD_W, RD_BIAS };

/* x, router_in and W_router; E from W_router, which must match num_experts. */
static bool route_operands(mc_infer_ctx *cx, int64_t *E) {
    if (!inf_dtype(cx, RD_X, MC_DT_F32) || !inf_rank(cx, RD_X, 2) ||
        !inf_dtype(cx, RD_ROUTER_IN, MC_DT_F32) || !inf_rank(cx, RD_ROUTER_IN, 2) ||
        !inf_weight(cx, RD_ROUTER_IN, RD_W) || !inf_rank(cx, RD_W, 2))
        return false;
    const mc_shape *x = &inf_in(cx, RD_X)->shape, *r = &inf_in(cx, RD_ROUTER_IN)->shape,
                   *w = &inf_in(cx, RD_W)->shape;
    if (!inf_dim_eq(cx, r, 0, x, 0, inf_sub(cx, RD_ROUTER_IN),
                    "the router reads one row per token") ||
        !inf_dim_eq(cx, w, 0, r, 1, inf_sub(cx, RD_W),
                    "the router weights' input dim must equal router_in's width"))
        return false;
    if (!mc_dim_is_const(w->d[1]))
        return inf_fail(cx, inf_sub(cx, RD_W), "the expert dim of %s must be constant",
                        inf_shape(cx, w));
    *E = w->d[1].c;
    int64_t n = 0;
    if (!inf_positive_attr(cx, "num_experts", 1, 1 << 20, &n) ||
        !inf_positive_attr(cx, "materialize", 0, 1, &n))
        return false;
    if (mc_attr_int(cx->n, "num_experts") != *E)
        return inf_fail(cx, "attrs/num_experts",
                        "num_experts is %lld but the router scores %lld experts",
                        (long long)mc_attr_int(cx->n, "num_experts"), (long long)*E);
    return true;
}

/* Dispatch's outputs for N rows. */
static bool dispatch_outputs(mc_infer_ctx *cx, mc_dim N, int64_t E) {
    bool mat = mc_attr_int(cx->n, "materialize") != 0;
    mc_shape rows = {2, {mat ? N : mc_dim_const(0), inf_in(cx, RD_X)->shape.d[1]}},
             offs = {1, {mc_dim_const(E + 1)}}, flat = {1, {N}};
    inf_set(cx, 0, MC_DT_F32, &rows);
    inf_set(cx, 1, MC_DT_I32, &offs);
    inf_set(cx, 2, MC_DT_I32, &flat);
    inf_set(cx, 3, MC_DT_F32, &flat);
    return true;
}

/* N = T * width for a token-choice route. */
static bool token_choice(mc_infer_ctx *cx, int64_t width, int64_t E) {
    if (mc_attr_choice(cx->n, "source") != MC_A_MOE_DISPATCH_source_token_choice)
        return inf_fail(cx, "attrs/source",
                        "a token-choice route dispatches with source \"token_choice\"");
    mc_dim N = inf_in(cx, RD_X)->shape.d[0];
    N.c *= width;
    return dispatch_outputs(cx, N, E);
}

bool mc_infer_MOE_FUSED_TOPK_DISPATCH(mc_infer_ctx *cx) {
    int64_t E = 0;
    return route_operands(cx, &E) && inf_topk_attrs(cx, E, RD_BIAS) &&
           token_choice(cx, mc_attr_int(cx->n, "k"), E);
}

bool mc_infer_MOE_FUSED_TOPP_DISPATCH(mc_infer_ctx *cx) {
    int64_t E = 0, K = 0;
    if (!route_operands(cx, &E) || !inf_positive_attr(cx, "max_k", 0, E, &K)) return false;
    double p = mc_attr_float(cx->n, "p");
    if (!(p >= 0 && p <= 1)) return inf_fail(cx, "attrs/p", "p is %g but must be in [0, 1]", p);
    return token_choice(cx, K ? K : E, E);
}

bool mc_infer_MOE_FUSED_EXPERT_CHOICE_DISPATCH(mc_infer_ctx *cx) {
    int64_t E = 0, C = 0;
    if (!route_operands(cx, &E) || !inf_positive_attr(cx, "capacity", 1, MC_MAX_DIM, &C))
        return false;
    if (mc_attr_choice(cx->n, "source") != MC_A_MOE_DISPATCH_source_expert_choice)
        return inf_fail(cx, "attrs/source",
                        "an expert-choice route dispatches with source \"expert_choice\"");
    return dispatch_outputs(cx, mc_dim_const(E * C), E);
}

/* ---- moe.FusedElementwise(in0, in1?, in2?) {program} -> y ----
 * Each instruction's operands are registers written before it; binary ones broadcast
 * as numpy does; y takes the last register's shape. All f32. */
static bool ew_step(mc_infer_ctx *cx, const int64_t *p, int step, mc_shape *regs, int nregs) {
    int64_t op = p[0], a = p[1], b = p[2];
    const char *sub = "attrs/program";
    if (op < 0 || op >= MC_EW_NUM_OPCODES)
        return inf_fail(cx, sub, "instruction %d has opcode %lld; opcodes are 0 to %d", step,
                        (long long)op, MC_EW_NUM_OPCODES - 1);
    bool unary = op >= MC_EW_NEG;
    if (a < 0 || a >= nregs || (unary ? b != -1 : (b < 0 || b >= nregs)))
        return inf_fail(cx, sub, "instruction %d reads registers %lld, %lld; it may read 0 to %d%s",
                        step, (long long)a, (long long)b, nregs - 1,
                        unary ? " and -1 (none) second" : "");
    if (unary) {
        regs[nregs] = regs[a];
        return true;
    }
    return inf_broadcast(cx, &regs[a], &regs[b], &regs[nregs], sub);
}

/* The program over registers regs[0..nin): *out is its last register's shape. */
static bool ew_program(mc_infer_ctx *cx, mc_shape *regs, int nin, mc_shape *out) {
    const mc_attr *prog = mc_attr_get(cx->n, "program");
    int steps = prog->n / 3;
    if (prog->n % 3 || steps < 1 || steps > MC_EW_MAX_STEPS)
        return inf_fail(cx, "attrs/program", "program has %d entries; it must be 1 to %d triples",
                        prog->n, MC_EW_MAX_STEPS);
    for (int s = 0; s < steps; s++)
        if (!ew_step(cx, prog->ints + 3 * s, s, regs, nin + s)) return false;
    *out = regs[nin + steps - 1];
    return true;
}

bool mc_infer_MOE_FUSED_ELEMENTWISE(mc_infer_ctx *cx) {
    int nin = cx->n->nin;
    mc_shape regs[3 + MC_EW_MAX_STEPS], y;
    for (int i = 0; i < nin; i++) {
        if (!inf_dtype(cx, i, MC_DT_F32)) return false;
        regs[i] = inf_in(cx, i)->shape;
    }
    if (!ew_program(cx, regs, nin, &y)) return false;
    inf_set(cx, 0, MC_DT_F32, &y);
    return true;
}

/* ---- moe.FusedNorm(x, scale, bias?, e1?, e2?) {axis, epsilon, kind, program} -> y ----
 * LayerNormalization (kind layer, with bias if given) or RMSNormalization (kind rms, no
 * bias) of x, then the program with the normalized x in register 0 and e1, e2 in
 * registers 1 and 2. y has x's shape: the program may broadcast e1 and e2 into it,
 * never it into them. All f32. */
bool mc_infer_MOE_FUSED_NORM(mc_infer_ctx *cx) {
    const mc_value *x = inf_in(cx, 0);
    int nin = 1;
    mc_shape tail, regs[3 + MC_EW_MAX_STEPS], y;
    bool rms = mc_attr_choice(cx->n, "kind") == MC_A_MOE_FUSED_NORM_kind_rms;
    if (!inf_dtype(cx, 0, MC_DT_F32) || !inf_norm_inputs(cx, 0, 2, &tail)) return false;
    if (rms && inf_in(cx, 2))
        return inf_fail(cx, inf_sub(cx, 2), "kind rms takes no bias; omit input 2");
    regs[0] = x->shape;
    for (int i = 3; i < cx->n->nin; i++) {
        if (!inf_in(cx, i))
            return inf_fail(cx, inf_sub(cx, i), "the program's inputs (3 and 4) cannot be omitted");
        if (!inf_dtype(cx, i, MC_DT_F32)) return false;
        regs[nin++] = inf_in(cx, i)->shape;
    }
    if (!ew_program(cx, regs, nin, &y)) return false;
    if (!mc_shape_eq(&y, &x->shape))
        return inf_fail(cx, "attrs/program", "the program gives %s but must give x's shape %s",
                        inf_shape(cx, &y), inf_shape(cx, &x->shape));
    inf_set(cx, 0, MC_DT_F32, &y);
    return true;
}
