/* ir/eval_fused.c: the reference semantics of the fused ops (docs/fusion.md), computed
 * by running the ops each one replaces on temporaries, through those ops' own reference
 * kernels. Fused and unfused graphs therefore agree exactly in the interpreter, and the
 * native fused kernels are checked against the same numbers the unfused ones are. */
#include "elementwise.h"
#include "eval.h"

/* Runs `fn` as if it were node `n` (its name shows in run-time errors) on ins -> *out. */
static bool run_as(const mc_kernel_ctx *k, const mc_node *n, bool (*fn)(const mc_kernel_ctx *),
                   const mc_tensor *const *ins, mc_tensor *out) {
    mc_kernel_ctx sub = {k->g, n, k->symvals, ins, out, k->d};
    return fn(&sub);
}

static bool temp_like(const mc_kernel_ctx *k, const mc_tensor *shape_of, mc_tensor *t) {
    return mc_tensor_alloc(t, MC_DT_F32, shape_of->rank, shape_of->dims, k->d,
                           "a fused op's intermediate");
}

/* Input i, or NULL when it is omitted or past the node's inputs. */
static const mc_tensor *opt_in(const mc_kernel_ctx *k, int i) {
    return i < k->n->nin ? k->in[i] : NULL;
}

/* a @ w for FusedUp: ExpertMatMul, GatherMatMul (row_token given) or MatMul (dense). */
static bool up_product(const mc_kernel_ctx *k, const mc_tensor *w, mc_tensor *out) {
    const mc_tensor *a = k->in[0], *off = opt_in(k, 3), *tok = opt_in(k, 4);
    if (!off) return run_as(k, k->n, mc_interp_MATMUL, (const mc_tensor *[]){a, w}, out);
    if (tok)
        return run_as(k, k->n, mc_interp_MOE_GATHER_MATMUL, (const mc_tensor *[]){a, tok, off, w},
                      out);
    return run_as(k, k->n, mc_interp_MOE_EXPERT_MATMUL, (const mc_tensor *[]){a, off, w}, out);
}

/* The unary op FusedUp's activation stands for, applied to x -> *y. */
static bool activation(const mc_kernel_ctx *k, const mc_tensor *x, mc_tensor *y) {
    const mc_tensor *ins[1] = {x};
    switch ((enum MC_A_MOE_FUSED_UP_activation_choices)mc_attr_choice(k->n, "activation")) {
    case MC_A_MOE_FUSED_UP_activation_relu: return run_as(k, k->n, mc_interp_RELU, ins, y);
    case MC_A_MOE_FUSED_UP_activation_silu: return run_as(k, k->n, mc_interp_SILU, ins, y);
    case MC_A_MOE_FUSED_UP_activation_gelu:
    case MC_A_MOE_FUSED_UP_activation_gelu_tanh: {
        bool tanh_form =
            mc_attr_choice(k->n, "activation") == MC_A_MOE_FUSED_UP_activation_gelu_tanh;
        mc_attr approx = {
            .name = "approximate", .kind = MC_AK_STRING, .s = tanh_form ? "tanh" : "none"};
        mc_node gelu = *k->n;
        gelu.op = MC_OP_GELU;
        gelu.nattr = 1;
        gelu.attrs = &approx;
        return run_as(k, &gelu, mc_interp_GELU, ins, y);
    }
    }
    mc_die("moe.FusedUp: unknown activation");
}

/* h = act(a W_gate) * (a W_up), or act(a W_up). */
bool mc_interp_MOE_FUSED_UP(const mc_kernel_ctx *k) {
    mc_tensor *h = &k->out[0], u = {0}, g = {0}, ag = {0};
    bool gated = opt_in(k, 2) != NULL;
    bool ok = temp_like(k, h, &u) && up_product(k, k->in[1], &u);
    if (ok && !gated) ok = activation(k, &u, h);
    if (ok && gated)
        ok = temp_like(k, h, &g) && temp_like(k, h, &ag) && up_product(k, k->in[2], &g) &&
             activation(k, &g, &ag) &&
             run_as(k, k->n, mc_interp_MUL, (const mc_tensor *[]){&ag, &u}, h);
    mc_tensor_free(&u);
    mc_tensor_free(&g);
    mc_tensor_free(&ag);
    return ok;
}

/* y = Combine(ExpertMatMul(h, offsets, W_down), row_token, row_weight, offsets, like),
 * then y = Add(y, residual) when a residual is given. */
bool mc_interp_MOE_FUSED_DOWN_COMBINE(const mc_kernel_ctx *k) {
    const mc_tensor *h = k->in[0], *off = k->in[1], *w = k->in[2], *res = opt_in(k, 6);
    int64_t dims[2] = {h->dims[0], w->dims[2]};
    mc_tensor o = {0}, sum = {0};
    mc_tensor *y = res ? &sum : &k->out[0];
    bool ok = mc_tensor_alloc(&o, MC_DT_F32, 2, dims, k->d, "a fused op's intermediate") &&
              (!res || temp_like(k, &k->out[0], &sum)) &&
              run_as(k, k->n, mc_interp_MOE_EXPERT_MATMUL, (const mc_tensor *[]){h, off, w}, &o) &&
              run_as(k, k->n, mc_interp_MOE_COMBINE,
                     (const mc_tensor *[]){&o, k->in[3], k->in[4], off, k->in[5]}, y);
    if (ok && res)
        ok = run_as(k, k->n, mc_interp_ADD, (const mc_tensor *[]){&sum, res}, &k->out[0]);
    mc_tensor_free(&o);
    mc_tensor_free(&sum);
    return ok;
}

/* ---- router, route and Dispatch ----
 * logits = router_in @ W_router; (idx, weight) = route(logits, bias?); Dispatch(x, idx,
 * weight) into the op's outputs. Each step runs as the op it stands for (the fused node
 * carries the route's and Dispatch's attributes under their own names). */
static bool route_dispatch(const mc_kernel_ctx *k, mc_op route, int route_nin, int64_t rows,
                           int64_t width) {
    const mc_tensor *x = k->in[0];
    int64_t T = x->dims[0], E = k->in[2]->dims[1], ld[2] = {T, E}, rd[2] = {rows, width};
    mc_tensor logits = {0}, pair[2] = {{0}, {0}};
    mc_node r = *k->n, d = *k->n;
    r.op = route;
    r.nin = route_nin;
    r.nout = 2;
    d.op = MC_OP_MOE_DISPATCH;
    d.nin = 3;
    bool ok = mc_tensor_alloc(&logits, MC_DT_F32, 2, ld, k->d, "a fused op's intermediate") &&
              mc_tensor_alloc(&pair[0], MC_DT_I32, 2, rd, k->d, "a fused op's intermediate") &&
              mc_tensor_alloc(&pair[1], MC_DT_F32, 2, rd, k->d, "a fused op's intermediate") &&
              run_as(k, k->n, mc_interp_MATMUL, (const mc_tensor *[]){k->in[1], k->in[2]}, &logits);
    if (ok) {
        mc_kernel_ctx sub = {k->g, &r,  k->symvals, (const mc_tensor *[]){&logits, opt_in(k, 3)},
                             pair, k->d};
        ok = route == MC_OP_MOE_TOPK_ROUTE   ? mc_interp_MOE_TOPK_ROUTE(&sub)
             : route == MC_OP_MOE_TOPP_ROUTE ? mc_interp_MOE_TOPP_ROUTE(&sub)
                                             : mc_interp_MOE_EXPERT_CHOICE_ROUTE(&sub);
    }
    if (ok) {
        mc_kernel_ctx sub = {k->g,   &d,  k->symvals, (const mc_tensor *[]){x, &pair[0], &pair[1]},
                             k->out, k->d};
        ok = mc_interp_MOE_DISPATCH(&sub);
    }
    mc_tensor_free(&logits);
    mc_tensor_free(&pair[0]);
    mc_tensor_free(&pair[1]);
    return ok;
}

bool mc_interp_MOE_FUSED_TOPK_DISPATCH(const mc_kernel_ctx *k) {
    return route_dispatch(k, MC_OP_MOE_TOPK_ROUTE, 2, k->in[0]->dims[0], mc_attr_int(k->n, "k"));
}

bool mc_interp_MOE_FUSED_TOPP_DISPATCH(const mc_kernel_ctx *k) {
    int64_t K = mc_attr_int(k->n, "max_k");
    return route_dispatch(k, MC_OP_MOE_TOPP_ROUTE, 1, k->in[0]->dims[0], K ? K : k->in[2]->dims[1]);
}

bool mc_interp_MOE_FUSED_EXPERT_CHOICE_DISPATCH(const mc_kernel_ctx *k) {
    return route_dispatch(k, MC_OP_MOE_EXPERT_CHOICE_ROUTE, 1, k->in[2]->dims[1],
                          mc_attr_int(k->n, "capacity"));
}

/* ---- moe.FusedElementwise: each instruction as the op it stands for ---- */

static bool (*const ew_interp[MC_EW_NUM_OPCODES])(const mc_kernel_ctx *) = {
    [MC_EW_ADD] = mc_interp_ADD,        [MC_EW_SUB] = mc_interp_SUB,
    [MC_EW_MUL] = mc_interp_MUL,        [MC_EW_DIV] = mc_interp_DIV,
    [MC_EW_NEG] = mc_interp_NEG,        [MC_EW_SQRT] = mc_interp_SQRT,
    [MC_EW_EXP] = mc_interp_EXP,        [MC_EW_LOG] = mc_interp_LOG,
    [MC_EW_RELU] = mc_interp_RELU,      [MC_EW_GELU] = mc_interp_GELU,
    [MC_EW_GELU_TANH] = mc_interp_GELU, [MC_EW_SIGMOID] = mc_interp_SIGMOID,
    [MC_EW_TANH] = mc_interp_TANH,      [MC_EW_SILU] = mc_interp_SILU};

/* numpy broadcasting of a and b's dims into *out (shape inference checked them). */
static void bcast_dims(const mc_tensor *a, const mc_tensor *b, int *rank, int64_t *dims) {
    *rank = a->rank > b->rank ? a->rank : b->rank;
    for (int i = 0; i < *rank; i++) {
        int ia = i - (*rank - a->rank), ib = i - (*rank - b->rank);
        int64_t da = ia >= 0 ? a->dims[ia] : 1, db = ib >= 0 ? b->dims[ib] : 1;
        dims[i] = da == 1 ? db : da;
    }
}

/* Instruction (op, a, b) on the registers into *out (allocated here unless it is y). */
static bool ew_run(const mc_kernel_ctx *k, const int64_t *p, mc_tensor *const *regs, mc_tensor *out,
                   bool alloc) {
    const mc_tensor *a = regs[p[1]], *b = p[2] >= 0 ? regs[p[2]] : a;
    int rank;
    int64_t dims[MC_MAX_RANK];
    bcast_dims(a, b, &rank, dims);
    if (alloc && !mc_tensor_alloc(out, MC_DT_F32, rank, dims, k->d, "a fused op's intermediate"))
        return false;
    mc_attr approx = {.name = "approximate",
                      .kind = MC_AK_STRING,
                      .s = p[0] == MC_EW_GELU_TANH ? "tanh" : "none"};
    mc_node n = *k->n;
    n.nin = p[2] >= 0 ? 2 : 1;
    if (p[0] == MC_EW_GELU || p[0] == MC_EW_GELU_TANH) { /* the one op with an attribute */
        n.op = MC_OP_GELU;
        n.nattr = 1;
        n.attrs = &approx;
    }
    return run_as(k, &n, ew_interp[p[0]], (const mc_tensor *[]){a, b}, out);
}

/* The node's program over regs[0..nin), its last instruction into out[0]. */
static bool ew_program(const mc_kernel_ctx *k, mc_tensor **regs, int nin) {
    const mc_attr *prog = mc_attr_get(k->n, "program");
    int steps = prog->n / 3;
    mc_tensor tmp[MC_EW_MAX_STEPS] = {{0}};
    bool ok = true;
    for (int s = 0; ok && s < steps; s++) {
        bool last = s == steps - 1;
        regs[nin + s] = last ? &k->out[0] : &tmp[s];
        ok = ew_run(k, prog->ints + 3 * s, regs, regs[nin + s], !last);
    }
    for (int s = 0; s < steps; s++)
        mc_tensor_free(&tmp[s]);
    return ok;
}

bool mc_interp_MOE_FUSED_ELEMENTWISE(const mc_kernel_ctx *k) {
    mc_tensor *regs[3 + MC_EW_MAX_STEPS];
    for (int i = 0; i < k->n->nin; i++)
        regs[i] = (mc_tensor *)k->in[i];
    return ew_program(k, regs, k->n->nin);
}

/* ---- moe.FusedNorm: the normalization into a temporary, then the program ---- */

bool mc_interp_MOE_FUSED_NORM(const mc_kernel_ctx *k) {
    bool rms = mc_attr_choice(k->n, "kind") == MC_A_MOE_FUSED_NORM_kind_rms;
    mc_tensor normed = {0};
    mc_tensor *regs[3 + MC_EW_MAX_STEPS] = {&normed};
    mc_node n = *k->n;
    n.op = rms ? MC_OP_RMS_NORM : MC_OP_LAYER_NORM;
    n.nin = rms ? 2 : 3;
    const mc_tensor *ins[3] = {k->in[0], k->in[1], opt_in(k, 2)};
    bool ok = temp_like(k, k->in[0], &normed) &&
              run_as(k, &n, rms ? mc_interp_RMS_NORM : mc_interp_LAYER_NORM, ins, &normed);
    int nin = 1;
    for (int i = 3; i < k->n->nin; i++)
        regs[nin++] = (mc_tensor *)k->in[i];
    ok = ok && ew_program(k, regs, nin);
    mc_tensor_free(&normed);
    return ok;
}
