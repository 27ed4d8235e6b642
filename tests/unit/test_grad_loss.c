/* tests/unit/test_grad_loss.c: gradient ops against central finite differences of their
 * forward ops, in the f64 interpreter (moec_core64).
 *
 * Each check builds one graph: the forward loss node and its gradient node on the same
 * inputs, plus gy (the loss's gradient: a scalar, or the loss's shape for reduction
 * none). The objective is sum_i gy_i loss_i; its central difference (h = 1e-6) w.r.t.
 * every element of the differentiable input must match the gradient op's output to a
 * relative 1e-6. The optimizers are checked against values worked out by hand over three
 * steps. The largest relative error of each op is printed (run the binary to see it). */
#include <criterion/criterion.h>

#include "ir.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IN 8
#define H      1e-6
#define TOL    1e-6

typedef struct {
    mc_graph *g;
    int nin;
    int ids[MAX_IN]; /* graph input value ids */
    mc_tensor in[MAX_IN];
    mc_tensor out[4];
} net;

static net net_new(void) {
    net n;
    memset(&n, 0, sizeof n);
    n.g = mc_graph_new("t");
    return n;
}

/* A graph input of the given dtype and constant dims, zero-filled. */
static int input(net *n, mc_dtype dt, int rank, const int64_t *dims) {
    cr_assert(n->nin < MAX_IN);
    int v = mc_graph_add_value(n->g, mc_arena_printf(n->g->arena, "in%d", n->nin), dt, MC_VK_INPUT);
    mc_value *val = mc_val(n->g, v);
    val->shape.rank = rank;
    for (int i = 0; i < rank; i++)
        val->shape.d[i] = mc_dim_const(dims[i]);
    val->has_shape = true;
    mc_diag d;
    mc_diag_init(&d, "test");
    cr_assert(mc_tensor_alloc(&n->in[n->nin], dt, rank, dims, &d, "input"), "%s", d.msg);
    n->ids[n->nin] = v;
    return n->nin++;
}

/* "name=value;..." with each value parsed by the kind attrs.def gives the name. */
static void set_attrs(mc_graph *g, mc_node *node, const char *spec) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *save = NULL, *kv = strtok_r(buf, ";", &save); kv; kv = strtok_r(NULL, ";", &save)) {
        char *val = strchr(kv, '=');
        cr_assert(val, "bad attribute spec %s", kv);
        *val++ = 0;
        const mc_attr_schema *s = mc_attr_schema_find(node->op, kv);
        cr_assert(s, "no attribute %s", kv);
        if (s->kind == MC_AK_INT) mc_node_set_int(g, node, kv, strtoll(val, NULL, 10));
        if (s->kind == MC_AK_FLOAT) mc_node_set_float(g, node, kv, strtod(val, NULL));
        if (s->kind == MC_AK_STRING) mc_node_set_str(g, node, kv, val);
    }
}

/* A node on values `in` (-1 omitted) with nout new temps; returns its id. */
static int add_node(net *n, mc_op op, const int *in, int nin, int nout, int *outs,
                    const char *attrs) {
    for (int j = 0; j < nout; j++)
        outs[j] = mc_graph_add_value(n->g, mc_arena_printf(n->g->arena, "v%d", n->g->nvalues),
                                     MC_DT_F32, MC_VK_TEMP);
    int id = mc_graph_add_node(n->g, op, mc_arena_printf(n->g->arena, "n%d", n->g->nnodes), in, nin,
                               outs, nout);
    set_attrs(n->g, mc_nod(n->g, id), attrs);
    mc_node_fill_defaults(n->g, mc_nod(n->g, id));
    return id;
}

static void infer(net *n) {
    mc_diag d;
    mc_diag_init(&d, "test");
    cr_assert(mc_infer_shapes(n->g, &d), "%s", d.msg);
}

/* Marks outs as the graph outputs and the inputs so far as its inputs; verifies. */
static void finish(net *n, const int *outs, int nout) {
    n->g->outputs = mc_arena_alloc(n->g->arena, sizeof(int) * (size_t)nout);
    memcpy(n->g->outputs, outs, sizeof(int) * (size_t)nout);
    n->g->noutputs = nout;
    n->g->inputs = mc_arena_alloc(n->g->arena, sizeof(int) * (size_t)n->nin);
    memcpy(n->g->inputs, n->ids, sizeof(int) * (size_t)n->nin);
    n->g->ninputs = n->nin;
    mc_diag d;
    mc_diag_init(&d, "test");
    cr_assert(mc_infer_shapes(n->g, &d), "%s", d.msg);
    cr_assert(mc_verify(n->g, &d), "%s", d.msg);
}

static void run(net *n) {
    mc_diag d;
    mc_diag_init(&d, "test");
    cr_assert(mc_interp_run(n->g, n->in, n->out, &d), "%s", d.msg);
}

static void release_out(net *n) {
    for (int i = 0; i < n->g->noutputs; i++)
        mc_tensor_free(&n->out[i]);
}

static void net_free(net *n) {
    for (int i = 0; i < n->nin; i++)
        mc_tensor_free(&n->in[i]);
    mc_graph_free(n->g);
}

/* Deterministic values in [lo, hi). */
static double uniform(uint64_t *s, double lo, double hi) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (double)(*s >> 11) / 9007199254740992.0;
}

/* ---- the finite-difference check ---- */

/* One forward input: dtype, dims, and either float values or integers. */
typedef struct {
    mc_dtype dt;
    int rank;
    int64_t dims[4];
    const double *f;
    const int64_t *i;
} spec;

/* sum_i gy_i loss_i: out[0] is the loss, input `gy` holds gy. */
static double objective(net *n, int gy) {
    run(n);
    double s = 0;
    for (int64_t i = 0; i < n->out[0].numel; i++)
        s += n->in[gy].f[i] * n->out[0].f[i];
    release_out(n);
    return s;
}

/* Builds fwd(ins) and grad(gy, ins) with the same attributes (ins[k].rank < 0: an omitted
 * optional input) and compares the gradient of input `diff` with central differences;
 * returns the largest relative error. A central difference carries a rounding error of
 * about 1e-16 |loss| / h = 1e-10 whatever the entry's size, so an element's error is
 * taken relative to the larger of its own difference quotient and 1% of the largest one:
 * entries far below the largest are not held to digits the difference does not have,
 * and masked entries (quotient exactly 0) must be 0. Elements listed in `skip` (-1
 * ended) are not differenced (0 ln 0): their gradient must be 0. */
static double fd_check(const char *what, mc_op fwd, mc_op grad, const char *attrs, int nf,
                       const spec *ins, int diff, const int *skip) {
    net n = net_new();
    int fin[MAX_IN], gin[MAX_IN], loss, gx, slot[MAX_IN];
    for (int k = 0; k < nf; k++) {
        slot[k] = -1;
        fin[k] = -1;
        if (ins[k].rank < 0) continue;
        slot[k] = input(&n, ins[k].dt, ins[k].rank, ins[k].dims);
        fin[k] = n.ids[slot[k]];
        mc_tensor *t = &n.in[slot[k]];
        for (int64_t e = 0; e < t->numel; e++)
            if (ins[k].f)
                t->f[e] = ins[k].f[e];
            else
                t->i[e] = ins[k].i[e];
    }
    add_node(&n, fwd, fin, nf, 1, &loss, attrs);
    infer(&n);
    const mc_value *lv = mc_val(n.g, loss);
    int64_t ldims[MC_MAX_RANK];
    for (int i = 0; i < lv->shape.rank; i++)
        ldims[i] = lv->shape.d[i].c;
    int gy = input(&n, lv->dt, lv->shape.rank, ldims);
    for (int64_t e = 0; e < n.in[gy].numel; e++)
        n.in[gy].f[e] = e % 2 ? 0.7 + 0.1 * (double)e : -0.45 - 0.05 * (double)e;
    gin[0] = n.ids[gy];
    memcpy(gin + 1, fin, sizeof(int) * (size_t)nf);
    add_node(&n, grad, gin, nf + 1, 1, &gx, attrs);
    int outs[2] = {loss, gx};
    finish(&n, outs, 2);

    run(&n);
    mc_tensor *x = &n.in[slot[diff]];
    int64_t N = x->numel;
    double *an = malloc(sizeof(double) * (size_t)N), *fd = malloc(sizeof(double) * (size_t)N);
    cr_assert(an && fd);
    cr_assert_eq(n.out[1].numel, N, "%s: the gradient has %lld elements, want %lld", what,
                 (long long)n.out[1].numel, (long long)N);
    for (int64_t e = 0; e < N; e++)
        an[e] = n.out[1].f[e];
    release_out(&n);
    double big = 0;
    for (int64_t e = 0; e < N; e++) {
        bool skipped = false;
        for (int s = 0; skip && skip[s] >= 0; s++)
            skipped |= skip[s] == e;
        fd[e] = 0;
        if (skipped) continue;
        double x0 = x->f[e];
        x->f[e] = x0 + H;
        double up = objective(&n, gy);
        x->f[e] = x0 - H;
        double down = objective(&n, gy);
        x->f[e] = x0;
        fd[e] = (up - down) / (2 * H);
        big = fabs(fd[e]) > big ? fabs(fd[e]) : big;
    }
    cr_assert(big > 0, "%s: the loss does not depend on the input at all", what);
    double worst = 0;
    for (int64_t e = 0; e < N; e++) {
        double den = fabs(fd[e]) > 1e-2 * big ? fabs(fd[e]) : 1e-2 * big;
        double err = fabs(an[e] - fd[e]) / den;
        cr_expect(err <= TOL, "%s: element %lld: gradient %.12g, finite difference %.12g", what,
                  (long long)e, an[e], fd[e]);
        worst = err > worst ? err : worst;
    }
    free(an);
    free(fd);
    net_free(&n);
    return worst;
}

static void report(const char *op, double worst) {
    fprintf(stderr, "test_grad_loss: %-34s largest relative FD error %.3g\n", op, worst);
}

static double maxd(double a, double b) {
    return a > b ? a : b;
}

/* ---- router losses: T = 8 tokens, E = 4 experts ---- */

enum { T = 8, E = 4, K = 2 };

static double probs[T * E], logits[T * E];
static int64_t choice[T * K], mask[T];

static void router_data(void) {
    uint64_t s = 42;
    for (int t = 0; t < T; t++) {
        double sum = 0;
        for (int e = 0; e < E; e++)
            sum += probs[t * E + e] = uniform(&s, 0.05, 1.0);
        for (int e = 0; e < E; e++)
            probs[t * E + e] /= sum, logits[t * E + e] = uniform(&s, -3, 3);
        choice[t * K] = (t * 3) % E;
        choice[t * K + 1] = t == 5 ? -1 : (t * 3 + 1 + t % 2) % E; /* a dropped choice */
        mask[t] = t != 2 && t != 6;
    }
}

static spec f32_te(const double *v) {
    return (spec){MC_DT_F32, 2, {T, E}, v, NULL};
}

static const spec choice_spec = {MC_DT_I32, 2, {T, K}, NULL, choice};
static const spec mask_spec = {MC_DT_BOOL, 1, {T}, NULL, mask};

Test(grad_loss, load_balance_loss) {
    router_data();
    static const char *const variants[] = {
        "",
        "scale=E_over_K",
        "count=first_rank_only;coef=0.01",
        "scope=sequence;seq_len=4",
        "scope=sequence;seq_len=2;scale=E_over_K;count=first_rank_only;coef=0.3",
    };
    double worst = 0;
    for (size_t v = 0; v < sizeof variants / sizeof *variants; v++)
        for (int masked = 0; masked < 2; masked++) {
            spec in[3] = {f32_te(probs), choice_spec, mask_spec};
            char what[160];
            snprintf(what, sizeof what, "LoadBalanceLoss [%s]%s", variants[v],
                     masked ? " masked" : "");
            worst = maxd(worst, fd_check(what, MC_OP_MOE_LOAD_BALANCE_LOSS,
                                         MC_OP_MOE_LOAD_BALANCE_LOSS_GRAD, variants[v], 2 + masked,
                                         in, 0, NULL));
        }
    report("moe.LoadBalanceLossGrad", worst);
}

/* A sequence whose tokens are all masked contributes nothing, to the loss or the
 * gradient; the other sequence's gradient is as without it. */
Test(grad_loss, load_balance_loss_empty_sequence) {
    router_data();
    int64_t m[T] = {0, 0, 0, 0, 1, 1, 0, 1};
    spec in[3] = {f32_te(probs), choice_spec, {MC_DT_BOOL, 1, {T}, NULL, m}};
    double w =
        fd_check("LoadBalanceLoss empty sequence", MC_OP_MOE_LOAD_BALANCE_LOSS,
                 MC_OP_MOE_LOAD_BALANCE_LOSS_GRAD, "scope=sequence;seq_len=4", 3, in, 0, NULL);
    report("moe.LoadBalanceLossGrad (empty seq)", w);
}

Test(grad_loss, z_loss) {
    router_data();
    double worst = 0;
    for (int masked = 0; masked < 2; masked++) {
        spec in[2] = {f32_te(logits), mask_spec};
        worst = maxd(worst, fd_check(masked ? "ZLoss masked" : "ZLoss", MC_OP_MOE_Z_LOSS,
                                     MC_OP_MOE_Z_LOSS_GRAD, masked ? "coef=0.001" : "", 1 + masked,
                                     in, 0, NULL));
    }
    report("moe.ZLossGrad", worst);
}

Test(grad_loss, entropy_loss) {
    router_data();
    double p[T * E];
    memcpy(p, probs, sizeof p);
    p[9] = 0; /* 0 ln 0 = 0: no term, and gradient 0 by convention */
    int skip[] = {9, -1};
    double worst = 0;
    for (int masked = 0; masked < 2; masked++) {
        spec in[2] = {f32_te(p), mask_spec};
        worst = maxd(worst, fd_check(masked ? "EntropyLoss masked" : "EntropyLoss",
                                     MC_OP_MOE_ENTROPY_LOSS, MC_OP_MOE_ENTROPY_LOSS_GRAD,
                                     masked ? "coef=0.25" : "", 1 + masked, in, 0, skip));
    }
    report("moe.EntropyLossGrad", worst);
}

/* Every token masked: the loss is 0 whatever the input, so is the gradient. */
Test(grad_loss, router_losses_with_no_valid_token) {
    router_data();
    const mc_op ops[3][2] = {{MC_OP_MOE_LOAD_BALANCE_LOSS, MC_OP_MOE_LOAD_BALANCE_LOSS_GRAD},
                             {MC_OP_MOE_Z_LOSS, MC_OP_MOE_Z_LOSS_GRAD},
                             {MC_OP_MOE_ENTROPY_LOSS, MC_OP_MOE_ENTROPY_LOSS_GRAD}};
    for (int o = 0; o < 3; o++) {
        bool lbl = o == 0;
        net n = net_new();
        int a = input(&n, MC_DT_F32, 0, NULL), x = input(&n, MC_DT_F32, 2, (int64_t[]){T, E});
        int c = lbl ? input(&n, MC_DT_I32, 2, (int64_t[]){T, K}) : -1;
        int m = input(&n, MC_DT_BOOL, 1, (int64_t[]){T});
        n.in[a].f[0] = 1;
        for (int i = 0; i < T * E; i++)
            n.in[x].f[i] = probs[i];
        if (lbl) memcpy(n.in[c].i, choice, sizeof choice);
        int in[4] = {n.ids[a], n.ids[x], lbl ? n.ids[c] : n.ids[m], n.ids[m]}, g;
        add_node(&n, ops[o][1], in, lbl ? 4 : 3, 1, &g, "");
        finish(&n, &g, 1);
        run(&n);
        for (int i = 0; i < T * E; i++)
            cr_expect_eq(n.out[0].f[i], 0.0, "op %d element %d", o, i);
        release_out(&n);
        net_free(&n);
    }
}

/* ---- training losses ---- */

enum { N = 6, C = 5, D = 3 };

static double scores[N * C * D], weights[C], pred[N * D * 2], target[N * D * 2];
static int64_t labels[N], labels_ig[N], labels_sp[2 * D];

static void loss_data(void) {
    uint64_t s = 7;
    for (int i = 0; i < N * C * D; i++)
        scores[i] = uniform(&s, -3, 3);
    for (int c = 0; c < C; c++)
        weights[c] = uniform(&s, 0.25, 2.0);
    for (int i = 0; i < N * D * 2; i++)
        pred[i] = uniform(&s, -2, 2), target[i] = uniform(&s, -2, 2);
    const int64_t l[N] = {0, 3, 2, 4, 2, 1}, li[N] = {0, -1, 2, 4, -1, 1};
    memcpy(labels, l, sizeof l);
    memcpy(labels_ig, li, sizeof li);
    for (int i = 0; i < 2 * D; i++)
        labels_sp[i] = (i * 7 + 1) % C;
    labels_sp[4] = 2; /* ignored with ignore_index=2 */
}

Test(grad_loss, softmax_cross_entropy_loss) {
    loss_data();
    const spec sc = {MC_DT_F32, 2, {N, C}, scores, NULL};
    /* Spatial: 2 x D positions, few enough that a mean's gradient entries stay far above
     * the rounding error of a difference. */
    const spec sc_sp = {MC_DT_F32, 3, {2, C, D}, scores, NULL};
    const spec w = {MC_DT_F32, 1, {C}, weights, NULL}, none = {.rank = -1};
    const spec lab = {MC_DT_I64, 1, {N}, NULL, labels};
    const spec lab_ig = {MC_DT_I64, 1, {N}, NULL, labels_ig};
    const spec lab32 = {MC_DT_I32, 1, {N}, NULL, labels};
    const spec lab_sp = {MC_DT_I32, 2, {2, D}, NULL, labels_sp};
    struct {
        const char *attrs;
        spec in[3];
    } v[] = {
        {"", {sc, lab, none}},
        {"reduction=sum", {sc, lab32, none}},
        {"reduction=none", {sc, lab, none}},
        {"ignore_index=-1", {sc, lab_ig, none}},
        {"reduction=sum;ignore_index=-1", {sc, lab_ig, none}},
        {"reduction=none;ignore_index=-1", {sc, lab_ig, none}},
        {"", {sc, lab, w}},
        {"reduction=sum", {sc, lab, w}},
        {"reduction=none", {sc, lab32, w}},
        {"ignore_index=2", {sc, lab, w}}, /* an in-range class ignored */
        {"ignore_index=-1", {sc, lab_ig, w}},
        {"reduction=none;ignore_index=-1", {sc, lab_ig, w}},
        {"", {sc_sp, lab_sp, none}},
        {"reduction=none;ignore_index=2", {sc_sp, lab_sp, w}},
        {"ignore_index=2", {sc_sp, lab_sp, w}},
    };
    double worst = 0;
    for (size_t k = 0; k < sizeof v / sizeof *v; k++) {
        char what[128];
        snprintf(what, sizeof what, "SoftmaxCrossEntropyLoss #%zu [%s]", k, v[k].attrs);
        worst = maxd(worst, fd_check(what, MC_OP_SOFTMAX_CROSS_ENTROPY_LOSS,
                                     MC_OP_MOE_SOFTMAX_CROSS_ENTROPY_LOSS_GRAD, v[k].attrs,
                                     v[k].in[2].rank < 0 ? 2 : 3, v[k].in, 0, NULL));
    }
    report("moe.SoftmaxCrossEntropyLossGrad", worst);
}

/* Ignored positions' score rows get exactly 0 (checked by fd_check too, as masked zeros:
 * here directly, on a row that would otherwise have a large gradient). */
Test(grad_loss, softmax_cross_entropy_ignored_rows_are_zero) {
    loss_data();
    net n = net_new();
    int gy = input(&n, MC_DT_F32, 0, NULL), x = input(&n, MC_DT_F32, 2, (int64_t[]){N, C});
    int l = input(&n, MC_DT_I64, 1, (int64_t[]){N});
    n.in[gy].f[0] = 3;
    memcpy(n.in[x].f, scores, sizeof(double) * N * C);
    memcpy(n.in[l].i, labels_ig, sizeof labels_ig);
    int in[3] = {n.ids[gy], n.ids[x], n.ids[l]}, g;
    add_node(&n, MC_OP_MOE_SOFTMAX_CROSS_ENTROPY_LOSS_GRAD, in, 3, 1, &g, "ignore_index=-1");
    finish(&n, &g, 1);
    run(&n);
    for (int i = 0; i < N; i++)
        for (int c = 0; c < C; c++)
            if (labels_ig[i] == -1)
                cr_expect_eq(n.out[0].f[i * C + c], 0.0, "row %d class %d", i, c);
            else
                cr_expect_neq(n.out[0].f[i * C + c], 0.0, "row %d class %d", i, c);
    release_out(&n);
    net_free(&n);
}

Test(grad_loss, mse_loss) {
    loss_data();
    const spec p = {MC_DT_F32, 3, {N, D, 2}, pred, NULL},
               t = {MC_DT_F32, 3, {N, D, 2}, target, NULL};
    static const char *const red[] = {"", "reduction=sum", "reduction=none"};
    double worst = 0;
    for (int r = 0; r < 3; r++) {
        spec in[2] = {p, t};
        char what[64];
        snprintf(what, sizeof what, "MSELoss [%s]", red[r]);
        worst = maxd(
            worst, fd_check(what, MC_OP_MSE_LOSS, MC_OP_MOE_MSE_LOSS_GRAD, red[r], 2, in, 0, NULL));
    }
    report("moe.MSELossGrad", worst);
}

/* ---- optimizers: p0 = [1, -2], gradients g1 = [0.5, -1], g2 = [0.25, 0.5],
 * g3 = [-0.5, 2], state zero at first ---- */

static const double P0[2] = {1.0, -2.0}, G[3][2] = {{0.5, -1.0}, {0.25, 0.5}, {-0.5, 2.0}};

static void expect_rel(double got, double want, const char *what, int step, int i) {
    cr_expect(fabs(got - want) <= 1e-12 * fabs(want), "%s step %d [%d]: %.17g, want %.17g", what,
              step, i, got, want);
}

/* param, grad and nstate state tensors of 2 elements (then step for AdamW) -> param' and
 * the state'; returns the net with its node. */
static net optimizer(mc_op op, int nstate, const char *attrs, bool step) {
    net n = net_new();
    int in[5];
    for (int k = 0; k < 2 + nstate; k++)
        in[k] = n.ids[input(&n, MC_DT_F32, 1, (int64_t[]){2})];
    if (step) in[2 + nstate] = n.ids[input(&n, MC_DT_I64, 1, (int64_t[]){1})];
    int outs[3];
    add_node(&n, op, in, 2 + nstate + step, 1 + nstate, outs, attrs);
    finish(&n, outs, 1 + nstate);
    return n;
}

/* Runs step t (1-based) with gradient G[t-1], then feeds the outputs back. */
static void opt_step(net *n, int nstate, int t, bool step) {
    memcpy(n->in[1].f, G[t - 1], sizeof G[0]);
    if (step) n->in[2 + nstate].i[0] = t;
    run(n);
}

static void feed_back(net *n, int nstate) {
    for (int s = 0; s < 1 + nstate; s++)
        memcpy(n->in[s == 0 ? 0 : 1 + s].f, n->out[s].f, sizeof(double) * 2);
    release_out(n);
}

/* lr 0.1, momentum 0.9, weight decay 0.01; v' = 0.9 v + g + 0.01 p, p' = p - 0.1 v':
 *   t=1: v = [0.5 + 0.01, -1 - 0.02] = [0.51, -1.02], p = [0.949, -1.898]
 *   t=2: v = [0.459 + 0.25 + 0.00949, -0.918 + 0.5 - 0.01898] = [0.71849, -0.43698],
 *        p = [0.877151, -1.854302]
 *   t=3: v = [0.646641 - 0.5 + 0.00877151, -0.393282 + 2 - 0.01854302]
 *          = [0.15541251, 1.58817498], p = [0.861609749, -2.013119498] */
Test(grad_loss, sgd_three_steps) {
    const double want_p[3][2] = {
        {0.949, -1.898}, {0.877151, -1.854302}, {0.861609749, -2.013119498}};
    const double want_v[3][2] = {{0.51, -1.02}, {0.71849, -0.43698}, {0.15541251, 1.58817498}};
    net n = optimizer(MC_OP_MOE_SGD, 1, "lr=0.1;momentum=0.9;weight_decay=0.01", false);
    memcpy(n.in[0].f, P0, sizeof P0);
    for (int t = 1; t <= 3; t++) {
        opt_step(&n, 1, t, false);
        for (int i = 0; i < 2; i++) {
            expect_rel(n.out[0].f[i], want_p[t - 1][i], "SGD param", t, i);
            expect_rel(n.out[1].f[i], want_v[t - 1][i], "SGD velocity", t, i);
        }
        feed_back(&n, 1);
    }
    net_free(&n);
}

/* Plain SGD (the defaults: no momentum, no decay) is p - lr g. */
Test(grad_loss, sgd_defaults) {
    net n = optimizer(MC_OP_MOE_SGD, 1, "lr=0.5", false);
    memcpy(n.in[0].f, P0, sizeof P0);
    n.in[2].f[0] = 100, n.in[2].f[1] = -100; /* velocity ignored with momentum 0 */
    opt_step(&n, 1, 1, false);
    expect_rel(n.out[0].f[0], 0.75, "SGD param", 1, 0);
    expect_rel(n.out[0].f[1], -1.5, "SGD param", 1, 1);
    release_out(&n);
    net_free(&n);
}

/* lr 0.01, beta1 0.9, beta2 0.999, eps 1e-8, weight decay 0.1.
 *   t=1: m = 0.1 g = [0.05, -0.1], v = 0.001 g^2 = [0.00025, 0.001]; m/(1-0.9) = g and
 *        v/(1-0.999) = g^2, so p = p0 - 0.01 (g/(|g| + 1e-8) + 0.1 p0):
 *        1 - 0.01 (0.5/0.50000001 + 0.1) = 0.9890000002, -2 - 0.01 (-1/1.00000001 - 0.2)
 *        = -1.9880000001
 *   t=2: m = [0.045 + 0.025, -0.09 + 0.05] = [0.07, -0.04], v = [0.00024975 + 0.0000625,
 *        0.000999 + 0.00025] = [0.00031225, 0.001249], corrections 0.19 and 0.001999:
 *        p0 = 0.9890000002 - 0.01 (0.368421.../(0.395225... + 1e-8) + 0.09890000002)
 *        = 0.97868920404754622
 *   t=3: likewise (corrections 0.271 and 0.002997001). */
Test(grad_loss, adamw_three_steps) {
    const double want_p[3][2] = {{0.98900000020000001, -1.9880000001},
                                 {0.97868920404754622, -1.9833486297369902},
                                 {0.97660268415586182, -1.9859385989727654}};
    const double want_m[3][2] = {{0.05, -0.1}, {0.07, -0.04}, {0.013, 0.164}};
    const double want_v[3][2] = {
        {0.00025, 0.001}, {0.00031225, 0.001249}, {0.00056193775, 0.005247751}};
    net n = optimizer(MC_OP_MOE_ADAMW, 2, "lr=0.01;weight_decay=0.1", true);
    memcpy(n.in[0].f, P0, sizeof P0);
    for (int t = 1; t <= 3; t++) {
        opt_step(&n, 2, t, true);
        for (int i = 0; i < 2; i++) {
            expect_rel(n.out[0].f[i], want_p[t - 1][i], "AdamW param", t, i);
            expect_rel(n.out[1].f[i], want_m[t - 1][i], "AdamW m", t, i);
            expect_rel(n.out[2].f[i], want_v[t - 1][i], "AdamW v", t, i);
        }
        feed_back(&n, 2);
    }
    net_free(&n);
}

/* Decoupled weight decay: with a zero gradient the moments stay exactly zero (coupled
 * decay, L2 in the gradient, would make them 0.1 wd p and 0.001 (wd p)^2) and the param
 * only shrinks by lr wd p; with a gradient, the moments do not depend on wd at all. */
Test(grad_loss, adamw_weight_decay_stays_out_of_the_moments) {
    net n = optimizer(MC_OP_MOE_ADAMW, 2, "lr=0.01;weight_decay=0.5", true);
    memcpy(n.in[0].f, P0, sizeof P0);
    n.in[1].f[0] = n.in[1].f[1] = 0;
    n.in[4].i[0] = 1;
    run(&n);
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(n.out[1].f[i], 0.0, "m[%d] is %g", i, n.out[1].f[i]);
        cr_expect_eq(n.out[2].f[i], 0.0, "v[%d] is %g", i, n.out[2].f[i]);
        expect_rel(n.out[0].f[i], P0[i] * (1 - 0.01 * 0.5), "AdamW decayed param", 1, i);
    }
    release_out(&n);
    net_free(&n);

    double m[2][2], v[2][2];
    for (int k = 0; k < 2; k++) {
        net a = optimizer(MC_OP_MOE_ADAMW, 2,
                          k ? "lr=0.01;weight_decay=0.9" : "lr=0.01;weight_decay=0", true);
        memcpy(a.in[0].f, P0, sizeof P0);
        a.in[2].f[0] = 0.3, a.in[2].f[1] = -0.2, a.in[3].f[0] = 0.01, a.in[3].f[1] = 0.02;
        opt_step(&a, 2, 2, true);
        for (int i = 0; i < 2; i++)
            m[k][i] = a.out[1].f[i], v[k][i] = a.out[2].f[i];
        release_out(&a);
        net_free(&a);
    }
    for (int i = 0; i < 2; i++) {
        cr_expect_eq(m[0][i], m[1][i], "m[%d] depends on weight_decay", i);
        cr_expect_eq(v[0][i], v[1][i], "v[%d] depends on weight_decay", i);
    }
}

/* step 0 would divide by 1 - beta^0 = 0: a run-time error. */
Test(grad_loss, adamw_step_zero_is_an_error) {
    net n = optimizer(MC_OP_MOE_ADAMW, 2, "lr=0.01", true);
    mc_diag d;
    mc_diag_init(&d, "test");
    cr_expect(!mc_interp_run(n.g, n.in, n.out, &d));
    cr_expect(strstr(d.msg, "step is 0 but must be >= 1"), "%s", d.msg);
    net_free(&n);
}
