/* backend/kernels/k_fused.c: the fused ops of the fusion passes (docs/fusion.md) over the
 * GEMM driver of k_gemm.c.
 *
 * moe.FusedUp runs, per task, the tiles of the gate and up products for the same rows
 * and panel (the A rows, or the gathered x rows, are hot in cache for the second), and
 * writes act(g) * u straight from the two tiles: g, u and act(g) never reach memory. The
 * tiles are the ones ExpertMatMul / GatherMatMul / MatMul make, in the same summation
 * order, and act is the Silu/Gelu/Relu kernels' formula, so the result is the unfused
 * graph's bit for bit, whatever the thread count.
 * moe.FusedDownCombine runs the down products into its scratch and then Combine's
 * token-ordered weighted sum (k_moe.c), which keeps the sum order of each token fixed:
 * scattering from concurrent tiles straight into y would make it depend on scheduling.
 * Scratch (laid out in k_fused_scratch.h): the down products [N,D] f32, then Combine's. */
#include "../../runtime/moert.h"
#include "k_fused_scratch.h"
#include "k_gemm.h"
#include "k_math.h"
#include "../../ir/elementwise.h"

#pragma STDC FP_CONTRACT OFF

enum { UP_A, UP_W, UP_GATE, UP_OFFSETS, UP_TOKEN };
enum { MAX_ROWS = MK_ROWS_PER_TASK * MK_MAX_NR }; /* a task's rows of one panel */

static mk_unop unop_of(int64_t activation) {
    switch ((enum MC_A_MOE_FUSED_UP_activation_choices)activation) {
    case MC_A_MOE_FUSED_UP_activation_relu: return U_RELU;
    case MC_A_MOE_FUSED_UP_activation_gelu: return U_GELU;
    case MC_A_MOE_FUSED_UP_activation_gelu_tanh: return U_GELU_TANH;
    case MC_A_MOE_FUSED_UP_activation_silu: return U_SILU;
    }
    return U_SILU;
}

static int64_t off_at(const mk_tensor *off, int64_t e) {
    return mk_ldi(off, e);
}

/* Product i of FusedUp with weights w (W_up or W_gate): an expert's rows, or the one
 * dense product when there are no offsets. */
static void up_mat(const mk_gemm_job *j, int64_t i, const mk_tensor *w, mk_mat *m) {
    const mk_tensor *a = &j->in[UP_A], *off = &j->in[UP_OFFSETS], *tok = &j->in[UP_TOKEN];
    bool routed = off->p != NULL;
    int64_t D = a->dims[1], F = j->out[0].dims[1], r0 = routed ? off_at(off, i) : 0;
    m->M = routed ? off_at(off, i + 1) - r0 : a->dims[0];
    m->K = D;
    m->N = F;
    m->lda = D;
    m->ldb = F;
    m->ldc = F;
    m->tok = tok->p ? (const int32_t *)tok->p + r0 : NULL;
    m->A = (const float *)a->p + (tok->p ? 0 : r0 * D);
    mk_mat_weight(m, w, i, j->nr);
    m->C = (float *)j->out[0].p + r0 * F;
}

static void up_get(const mk_gemm_job *j, int64_t i, mk_mat *m) {
    up_mat(j, i, &j->in[UP_W], m);
}

typedef struct {
    mk_gemm_job job;
    mk_unop act;
    bool gated;
} up_job;

/* h[c] = act(g[c]) * u[c] (u NULL: act(g[c])) for c < n, one loop per activation with
 * the activation a constant in it, so that each loop is vectorised whole. */
#define ACT_LOOP(op)                                                                               \
    do {                                                                                           \
        if (u)                                                                                     \
            for (int64_t c = 0; c < n; c++)                                                        \
                h[c] = mk_unary(op, g[c]) * u[c];                                                  \
        else                                                                                       \
            for (int64_t c = 0; c < n; c++)                                                        \
                h[c] = mk_unary(op, g[c]);                                                         \
    } while (0)

static void act_rows(mk_unop act, const float *restrict g, const float *restrict u,
                     float *restrict h, int64_t n) {
    switch (act) {
    case U_RELU: ACT_LOOP(U_RELU); break;
    case U_GELU: ACT_LOOP(U_GELU); break;
    case U_GELU_TANH: ACT_LOOP(U_GELU_TANH); break;
    default: ACT_LOOP(U_SILU); break;
    }
}

/* Rows [r0, r1) of panel p: the up (and gate) products, then act(g) * u into h. */
static void up_rows(const mk_gemm_job *j, int64_t i, const mk_mat *mu, int64_t p, int64_t r0,
                    int64_t r1) {
    const up_job *u = (const up_job *)j;
    int64_t nr = j->nr, n0 = p * nr, nn = mk_gemm_panel_cols(mu, p, nr);
    float tu[MAX_ROWS], tg[MAX_ROWS];
    mk_gemm_rows(mu, p, r0, r1, nr, tu, nr);
    if (u->gated) {
        mk_mat mg;
        up_mat(j, i, &j->in[UP_GATE], &mg);
        mk_gemm_rows(&mg, p, r0, r1, nr, tg, nr);
    }
    for (int64_t a = 0; a < r1 - r0; a++) {
        float *h = mu->C + (r0 + a) * mu->ldc + n0;
        act_rows(u->act, u->gated ? tg + a * nr : tu + a * nr, u->gated ? tu + a * nr : NULL, h,
                 nn);
    }
}

static int32_t check_tokens(const mk_tensor *tok, const mk_tensor *off, int64_t T) {
    for (int64_t i = off_at(off, 0); i < off_at(off, off->dims[0] - 1); i++) {
        int64_t t = mk_ldi(tok, i);
        if (t < 0 || t >= T)
            return moert_fail(MOERT_ERR_ARGUMENT,
                              "row %lld reads token %lld but there are %lld tokens", (long long)i,
                              (long long)t, (long long)T);
    }
    return MOERT_OK;
}

/* Rows of no expert (before offsets[0], from offsets[E] on) are 0, as ExpertMatMul's;
 * the activation of 0 is 0 for every activation FusedUp takes. */
static void zero_unrouted(const mk_tensor *off, const mk_tensor *h) {
    int64_t N = h->dims[0], F = h->dims[1], E = off->dims[0] - 1;
    float *y = h->p;
    for (int64_t i = 0; i < off_at(off, 0) * F; i++)
        y[i] = 0;
    for (int64_t i = off_at(off, E) * F; i < N * F; i++)
        y[i] = 0;
}

/* in: a, W_up, W_gate?, offsets?, row_token?  out: h[M,F] */
int32_t mk_MOE_FUSED_UP(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const mk_tensor *off = &in[UP_OFFSETS], *tok = &in[UP_TOKEN], *h = &out[0];
    int64_t rows = h->dims[0];
    if (mk_gemm_nr() > MK_MAX_NR)
        return moert_fail(MOERT_ERR_INTERNAL, "moe.FusedUp: micro-kernel panel too wide");
    int32_t st = off->p ? mk_check_offsets(off, rows) : MOERT_OK;
    if (st == MOERT_OK && tok->p) st = check_tokens(tok, off, in[UP_A].dims[0]);
    if (st != MOERT_OK) return st;
    up_job u = {.job = {.count = off->p ? off->dims[0] - 1 : 1,
                        .get = up_get,
                        .rows = up_rows,
                        .in = in,
                        .out = out,
                        .nr = in[UP_W].layout == MK_PANELS ? in[UP_W].nr : mk_gemm_nr()},
                .act = unop_of(attr[MC_A_MOE_FUSED_UP_activation].i),
                .gated = in[UP_GATE].p != NULL};
    if (rows > 0) mk_gemm_run(&u.job);
    if (off->p) zero_unrouted(off, h);
    return MOERT_OK;
}

/* ---- moe.FusedDownCombine ---- */

int32_t mk_MOE_EXPERT_MATMUL(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr);
int32_t mk_MOE_COMBINE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr);

/* y[i] += r[i]: the residual, added after each token's sum as the unfused Add does. */
static void add_residual(const mk_tensor *res, const mk_tensor *y) {
    int64_t n = mk_numel(y);
    const float *r = res->p;
    float *o = y->p;
    for (int64_t i = 0; i < n; i++)
        o[i] = o[i] + r[i];
}

/* in: h[N,F], offsets[E+1], W_down[E,F,D], row_token[N], row_weight[N], like[T,*],
 * residual[T,D]?  out: y[T,D], scratch */
int32_t mk_MOE_FUSED_DOWN_COMBINE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    int64_t N = in[0].dims[0], T = out[0].dims[0], D = out[0].dims[1];
    mk_fused_down_combine_scratch l =
        mk_fused_down_combine_scratch_of(T, N, D, out[0].dt != MK_F32);
    if (!mk_scratch_fits(&out[1], l.bytes))
        return moert_fail(MOERT_ERR_INTERNAL, "moe.FusedDownCombine: scratch too small");
    mk_tensor prod[2] = {
        {.p = mk_scratch_at(&out[1], l.o), .dt = MK_F32, .rank = 2, .dims = {N, D}}};
    int32_t st = mk_MOE_EXPERT_MATMUL(in, prod, attr);
    if (st != MOERT_OK) return st;
    mk_tensor comb_in[5] = {prod[0], in[3], in[4], in[1], in[5]},
              comb_out[2] = {out[0], mk_scratch_rest(&out[1], l.parts)};
    st = mk_MOE_COMBINE(comb_in, comb_out, attr);
    if (st == MOERT_OK && in[6].p) add_residual(&in[6], &out[0]);
    return st;
}

/* ---- router, route and Dispatch in one op ---- */

int32_t mk_MATMUL(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr);
int32_t mk_MOE_TOPK_ROUTE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr);
int32_t mk_MOE_TOPP_ROUTE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr);
int32_t mk_MOE_EXPERT_CHOICE_ROUTE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr);
int32_t mk_MOE_DISPATCH(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr);

typedef struct {
    mk_kernel_fn route;
    const mk_attr *route_attr, *dispatch_attr;
    int64_t rows, width; /* the route's outputs: [T,k], [T,K] or [E,C] */
    bool bias;           /* in[3] is the route's bias */
    mk_route_dispatch_scratch scratch;
} route_step;

/* in: x[T,D], router_in[T,R], W_router[R,E], bias[E]?  out: rows, offsets, row_token,
 * row_weight, scratch: logits[T,E], the route's index and weight, then the route's
 * scratch, which Dispatch's reuses. x and router_in are each read once. */
static int32_t route_dispatch(const mk_tensor *in, const mk_tensor *out, const route_step *s) {
    int64_t T = in[0].dims[0], E = in[2].dims[1];
    const mk_route_dispatch_scratch *l = &s->scratch;
    if (!mk_scratch_fits(&out[4], l->bytes))
        return moert_fail(MOERT_ERR_INTERNAL, "fused route: the scratch buffer is too small");
    int32_t *idx = mk_scratch_at(&out[4], l->idx);
    float *wt = mk_scratch_at(&out[4], l->wt);
    mk_tensor rest = mk_scratch_rest(&out[4], l->parts);
    mk_tensor z = {.p = mk_scratch_at(&out[4], l->logits), .dt = MK_F32, .rank = 2, .dims = {T, E}};
    mk_tensor pair[3] = {{.p = idx, .dt = MK_I32, .rank = 2, .dims = {s->rows, s->width}},
                         {.p = wt, .dt = MK_F32, .rank = 2, .dims = {s->rows, s->width}},
                         rest};
    mk_tensor router[2] = {in[1], in[2]}, route_in[2] = {z, s->bias ? in[3] : (mk_tensor){0}};
    int32_t st = mk_MATMUL(router, &z, s->route_attr);
    if (st == MOERT_OK) st = s->route(route_in, pair, s->route_attr);
    if (st != MOERT_OK) return st;
    mk_tensor disp_in[3] = {in[0], pair[0], pair[1]};
    mk_tensor disp_out[5] = {out[0], out[1], out[2], out[3], rest};
    return mk_MOE_DISPATCH(disp_in, disp_out, s->dispatch_attr);
}

int32_t mk_MOE_FUSED_TOPK_DISPATCH(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    int64_t T = in[0].dims[0], E = in[2].dims[1], k = attr[MC_A_MOE_FUSED_TOPK_DISPATCH_k].i;
    route_step s = {mk_MOE_TOPK_ROUTE,
                    attr,
                    attr + MC_A_MOE_FUSED_TOPK_DISPATCH_num_experts,
                    T,
                    k,
                    in[3].p != NULL,
                    mk_fused_topk_dispatch_scratch_of(T, E, k)};
    return route_dispatch(in, out, &s);
}

int32_t mk_MOE_FUSED_TOPP_DISPATCH(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    int64_t T = in[0].dims[0], E = in[2].dims[1], K = attr[MC_A_MOE_FUSED_TOPP_DISPATCH_max_k].i;
    K = K ? K : E;
    route_step s = {mk_MOE_TOPP_ROUTE,
                    attr,
                    attr + MC_A_MOE_FUSED_TOPP_DISPATCH_num_experts,
                    T,
                    K,
                    false,
                    mk_fused_topp_dispatch_scratch_of(T, E, K)};
    return route_dispatch(in, out, &s);
}

int32_t mk_MOE_FUSED_EXPERT_CHOICE_DISPATCH(const mk_tensor *in, const mk_tensor *out,
                                            const mk_attr *attr) {
    int64_t T = in[0].dims[0], E = in[2].dims[1],
            C = attr[MC_A_MOE_FUSED_EXPERT_CHOICE_DISPATCH_capacity].i;
    route_step s = {mk_MOE_EXPERT_CHOICE_ROUTE,
                    attr,
                    attr + MC_A_MOE_FUSED_EXPERT_CHOICE_DISPATCH_num_experts,
                    E,
                    C,
                    false,
                    mk_fused_expert_choice_dispatch_scratch_of(T, E, C)};
    return route_dispatch(in, out, &s);
}

/* ---- moe.FusedElementwise: one pass over y, the program per element ---- */

static inline __attribute__((always_inline)) float ew_binary(int64_t op, float a, float b) {
    switch (op) {
    case MC_EW_ADD: return a + b;
    case MC_EW_SUB: return a - b;
    case MC_EW_MUL: return a * b;
    default: return a / b;
    }
}

static const mk_unop ew_unop[MC_EW_NUM_OPCODES] = {[MC_EW_NEG] = U_NEG,
                                                   [MC_EW_SQRT] = U_SQRT,
                                                   [MC_EW_EXP] = U_EXP,
                                                   [MC_EW_LOG] = U_LOG,
                                                   [MC_EW_RELU] = U_RELU,
                                                   [MC_EW_GELU] = U_GELU,
                                                   [MC_EW_GELU_TANH] = U_GELU_TANH,
                                                   [MC_EW_SIGMOID] = U_SIGMOID,
                                                   [MC_EW_TANH] = U_TANH,
                                                   [MC_EW_SILU] = U_SILU};

typedef struct {
    const mk_tensor *in, *y;
    const int64_t *prog;
    int64_t steps, nin;
    mk_plan plan;
} ew_ctx;

/* The program on one element: registers 0..nin-1 are the inputs' elements. */
static float ew_element(const ew_ctx *c, const float *x) {
    float r[3 + MC_EW_MAX_STEPS];
    for (int64_t i = 0; i < c->nin; i++)
        r[i] = x[i];
    for (int64_t s = 0; s < c->steps; s++) {
        const int64_t *p = c->prog + 3 * s;
        r[c->nin + s] =
            p[0] < MC_EW_NEG ? ew_binary(p[0], r[p[1]], r[p[2]]) : mk_unary(ew_unop[p[0]], r[p[1]]);
    }
    return r[c->nin + c->steps - 1];
}

static void ew_task(void *ctx, int64_t begin, int64_t end) {
    const ew_ctx *c = ctx;
    mk_cursor cur;
    mk_seek(&c->plan, &cur, begin);
    float *y = c->y->p;
    for (int64_t i = begin; i < end;) {
        int64_t n = mk_run_len(&c->plan, &cur, end - i);
        for (int64_t j = 0; j < n; j++) {
            float x[3];
            for (int64_t k = 0; k < c->nin; k++)
                x[k] =
                    ((const float *)c->in[k].p)[cur.off[k] + j * c->plan.st[k][c->plan.rank - 1]];
            y[i + j] = ew_element(c, x);
        }
        mk_advance(&c->plan, &cur, n);
        i += n;
    }
}

/* in: up to 3 f32 inputs  out: y. attr: program (ir/elementwise.h). */
int32_t mk_MOE_FUSED_ELEMENTWISE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const mk_attr *prog = &attr[MC_A_MOE_FUSED_ELEMENTWISE_program];
    int64_t nin = 0;
    while (nin < 3 && in[nin].p)
        nin++;
    ew_ctx c = {in, &out[0], prog->ints, prog->n / 3, nin, {0}};
    mk_bcast_init(&c.plan, &out[0], in, (int)nin);
    int64_t n = mk_numel(&out[0]);
    if (n > 0) moert_parallel_for(n, 4096, ew_task, &c);
    return MOERT_OK;
}

/* ---- moe.FusedNorm: per row the norm's statistics, then per element the normalized
 * value (the norm kernel's formula) through the program ---- */

enum { FN_X, FN_SCALE, FN_BIAS, FN_EXTRA };

typedef struct {
    ew_ctx ew; /* registers: the normalized value, then the extras (ew.in), planned */
    const mk_tensor *x;
    const float *scale, *bias;
    int64_t n, nextra;
    float eps;
    bool rms;
} fnorm_ctx;

/* Elements [j, j+len) of row `base`, the extras' offsets at cur. */
static void fnorm_run(const fnorm_ctx *c, int64_t base, int64_t j, int64_t len, float mean,
                      float inv, const mk_cursor *cur) {
    const float *x = (const float *)c->x->p + base;
    float *y = (float *)c->ew.y->p + base;
    const mk_plan *p = &c->ew.plan;
    for (int64_t q = j; q < j + len; q++) {
        float r[3];
        r[0] = (x[q] - mean) * inv * c->scale[q] + (c->bias ? c->bias[q] : 0.0f);
        for (int64_t k = 0; k < c->nextra; k++)
            r[1 + k] =
                ((const float *)c->ew.in[k].p)[cur->off[k] + (q - j) * p->st[k][p->rank - 1]];
        y[q] = ew_element(&c->ew, r);
    }
}

static void fnorm_task(void *ctx, int64_t b, int64_t e) {
    const fnorm_ctx *c = ctx;
    for (int64_t row = b; row < e; row++) {
        int64_t base = row * c->n;
        float mean, inv = mk_norm_row_stats(c->x, base, c->n, c->eps, c->rms, &mean);
        mk_cursor cur;
        mk_seek(&c->ew.plan, &cur, base);
        for (int64_t j = 0; j < c->n;) {
            int64_t len = mk_run_len(&c->ew.plan, &cur, c->n - j);
            fnorm_run(c, base, j, len, mean, inv, &cur);
            mk_advance(&c->ew.plan, &cur, len);
            j += len;
        }
    }
}

/* in: x, scale, bias?, e1?, e2? (f32)  out: y[x's shape]. */
int32_t mk_MOE_FUSED_NORM(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const mk_attr *prog = &attr[MC_A_MOE_FUSED_NORM_program];
    const mk_tensor *x = &in[FN_X];
    int64_t nextra = 0, n = 1;
    while (nextra < 2 && in[FN_EXTRA + nextra].p)
        nextra++;
    int64_t axis = attr[MC_A_MOE_FUSED_NORM_axis].i;
    for (int64_t i = axis < 0 ? axis + x->rank : axis; i < x->rank; i++)
        n *= x->dims[i];
    fnorm_ctx c = {.ew = {&in[FN_EXTRA], &out[0], prog->ints, prog->n / 3, 1 + nextra, {0}},
                   .x = x,
                   .scale = in[FN_SCALE].p,
                   .bias = in[FN_BIAS].p,
                   .n = n,
                   .nextra = nextra,
                   .eps = (float)attr[MC_A_MOE_FUSED_NORM_epsilon].f,
                   .rms = attr[MC_A_MOE_FUSED_NORM_kind].i == MC_A_MOE_FUSED_NORM_kind_rms};
    mk_bcast_init(&c.ew.plan, &out[0], &in[FN_EXTRA], (int)nextra);
    /* Rows in chunks of at least 16384 elements, as the norm kernels do. */
    int64_t grain = n >= 16384 ? 1 : 16384 / (n > 0 ? n : 1);
    if (n > 0 && mk_numel(x) > 0) moert_parallel_for(mk_numel(x) / n, grain, fnorm_task, &c);
    return MOERT_OK;
}
