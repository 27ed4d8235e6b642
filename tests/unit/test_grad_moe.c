/* tests/unit/test_grad_moe.c: gradient ops against central finite differences of their
 * forward ops, in the f64 interpreter (moec_core64).
 *
 * Each check builds a two-node graph (the forward op and its gradient op, with the same
 * attributes), draws a random cotangent c for every float output of the forward, and
 * compares the gradient op's output with (L(v + h) - L(v - h)) / 2h, L = sum(forward * c),
 * h = 1e-6, for every element v of every differentiable input. Inputs are chosen with
 * well-separated scores, and every check asserts that no integer output (a routing
 * decision) changes under the perturbation, so the function is smooth where it is
 * differentiated. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ir.h"

#define MAXIN  6
#define MAXOUT 4
#define H      1e-6
#define RTOL   1e-6

typedef struct {
    mc_graph *g;
    mc_op op, grad_op;
    int nin;
    int in_ids[MAXIN]; /* -1 where an optional input is omitted */
    mc_tensor in[MAXIN];
    bool diff[MAXIN]; /* carries a gradient */
    const char *attrs;
    int want_broadcast; /* GWRoute in mode "train": broadcast rows expected, -1 unchecked */
} fx;

/* ---- a deterministic generator: xorshift64*, uniform in [-1, 1) ---- */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double urand(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    uint64_t r = rng_state * 0x2545f4914f6cdd1dull;
    return (double)(r >> 11) * 0x1p-52 - 1.0;
}

static void fx_init(fx *f, mc_op op, mc_op grad_op, bool training, const char *attrs) {
    memset(f, 0, sizeof *f);
    f->g = mc_graph_new("m");
    f->g->training = training;
    f->op = op;
    f->grad_op = grad_op;
    f->attrs = attrs;
    f->want_broadcast = -1;
}

static int add_value(fx *f, const char *base, mc_dtype dt, mc_value_kind kind, int rank,
                     const int64_t *dims) {
    int id = mc_graph_add_value(f->g, mc_graph_unique_name(f->g, base), dt, kind);
    mc_value *v = mc_val(f->g, id);
    v->shape.rank = rank;
    for (int i = 0; i < rank; i++)
        v->shape.d[i] = mc_dim_const(dims[i]);
    v->has_shape = true;
    return id;
}

/* A forward input: float values from vals, integer/bool ones from ivals. */
static void fx_input(fx *f, mc_dtype dt, int rank, const int64_t *dims, const double *vals,
                     const int64_t *ivals, bool diff) {
    int i = f->nin++;
    mc_diag d;
    mc_diag_init(&d, "test");
    f->in_ids[i] = add_value(f, "in", dt, MC_VK_INPUT, rank, dims);
    cr_assert(mc_tensor_alloc(&f->in[i], dt, rank, dims, &d, "input"));
    for (int64_t e = 0; e < f->in[i].numel; e++)
        if (mc_dtype_is_float(dt))
            f->in[i].f[e] = vals[e];
        else
            f->in[i].i[e] = ivals[e];
    f->diff[i] = diff;
}

static void fx_omit(fx *f) {
    f->in_ids[f->nin++] = -1;
}

/* "k=2,score=sigmoid,scale=2.5": kinds from the schema of op. */
static void set_attrs(fx *f, mc_node *n, mc_op op) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", f->attrs ? f->attrs : "");
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        char *eq = strchr(tok, '=');
        cr_assert(eq, "bad attribute %s", tok);
        *eq = 0;
        const mc_attr_schema *s = mc_attr_schema_find(op, tok);
        cr_assert(s, "%s has no attribute %s", mc_op_infos[op].name, tok);
        if (s->kind == MC_AK_INT) mc_node_set_int(f->g, n, tok, atoll(eq + 1));
        if (s->kind == MC_AK_FLOAT) mc_node_set_float(f->g, n, tok, atof(eq + 1));
        if (s->kind == MC_AK_STRING) mc_node_set_str(f->g, n, tok, eq + 1);
    }
    mc_node_fill_defaults(f->g, n);
}

static int add_node(fx *f, mc_op op, const int *in, int nin, int nout, mc_diag *d) {
    int out[MAXOUT];
    for (int j = 0; j < nout; j++)
        out[j] = mc_graph_add_value(f->g, mc_graph_unique_name(f->g, "v"), MC_DT_F32, MC_VK_TEMP);
    int id = mc_graph_add_node(f->g, op, mc_op_infos[op].name, in, nin, out, nout);
    mc_graph_set_producer(f->g, id);
    set_attrs(f, mc_nod(f->g, id), op);
    cr_assert(mc_infer_node(f->g, id, d), "%s", d->msg);
    return id;
}

static void run_node(fx *f, int node, const mc_tensor *const *ins, mc_tensor *outs) {
    mc_diag d;
    mc_diag_init(&d, "test");
    cr_assert(mc_interp_node(f->g, mc_nod(f->g, node), NULL, ins, outs, &d), "%s", d.msg);
}

static void free_outs(mc_tensor *outs, int n) {
    for (int j = 0; j < n; j++)
        mc_tensor_free(&outs[j]);
}

/* L = sum over float outputs of out * c; integer outputs must equal ref's. */
static double loss_of(fx *f, int fwd, const mc_tensor *c, const mc_tensor *ref) {
    const mc_tensor *ins[MAXIN];
    for (int i = 0; i < f->nin; i++)
        ins[i] = f->in_ids[i] < 0 ? NULL : &f->in[i];
    mc_tensor out[MAXOUT];
    int nout = mc_nod(f->g, fwd)->nout;
    run_node(f, fwd, ins, out);
    double L = 0;
    for (int j = 0; j < nout; j++) {
        for (int64_t e = 0; e < out[j].numel; e++) {
            if (mc_dtype_is_float(out[j].dt))
                L += out[j].f[e] * c[j].f[e];
            else
                cr_assert_eq(out[j].i[e], ref[j].i[e],
                             "a routing decision flips under the perturbation (output %d "
                             "element %lld): the test input is too close to a tie",
                             j, (long long)e);
        }
    }
    free_outs(out, nout);
    return L;
}

/* Builds forward + gradient nodes, checks every gradient element by central finite
 * differences; returns the largest relative error. */
static double fx_check(fx *f, int nout) {
    mc_diag d;
    mc_diag_init(&d, "test");
    int fwd = add_node(f, f->op, f->in_ids, f->nin, nout, &d);
    const mc_tensor *ins[MAXIN];
    for (int i = 0; i < f->nin; i++)
        ins[i] = f->in_ids[i] < 0 ? NULL : &f->in[i];
    mc_tensor ref[MAXOUT], c[MAXOUT];
    run_node(f, fwd, ins, ref);
    if (f->want_broadcast >= 0) { /* a broadcast row has an entry past rank k */
        int64_t rows = ref[0].dims[0], w = ref[0].dims[1], k = mc_attr_int(mc_nod(f->g, fwd), "k");
        int n = 0;
        for (int64_t t = 0; t < rows; t++)
            n += w > k && ref[0].i[t * w + k] >= 0; /* mode "infer": w == k, none */
        cr_assert_eq(n, f->want_broadcast, "%d rows broadcast, %d expected", n, f->want_broadcast);
    }
    if ((f->op == MC_OP_MOE_TOPK_ROUTE || f->op == MC_OP_MOE_RESONANCE_ROUTE) && f->attrs &&
        strstr(f->attrs, "capacity=")) { /* the capacity cases must drop something */
        int64_t dropped = 0;
        for (int64_t e = 0; e < ref[0].numel; e++)
            dropped += ref[0].i[e] < 0;
        cr_assert(dropped > 0, "%s: capacity drops nothing", f->attrs);
    }
    /* cotangents for the float outputs, as inputs of the gradient node */
    int gin[MAXIN + MAXOUT], ng = 0;
    const mc_tensor *gins[MAXIN + MAXOUT];
    for (int j = 0; j < nout; j++) {
        memset(&c[j], 0, sizeof c[j]);
        if (!mc_dtype_is_float(ref[j].dt)) continue;
        cr_assert(mc_tensor_alloc(&c[j], ref[j].dt, ref[j].rank, ref[j].dims, &d, "c"));
        for (int64_t e = 0; e < c[j].numel; e++)
            c[j].f[e] = urand();
        gin[ng] = add_value(f, "c", ref[j].dt, MC_VK_INPUT, ref[j].rank, ref[j].dims);
        gins[ng++] = &c[j];
    }
    for (int i = 0; i < f->nin; i++)
        gin[ng] = f->in_ids[i], gins[ng++] = ins[i];
    int ndiff = 0;
    for (int i = 0; i < f->nin; i++)
        ndiff += f->diff[i];
    int grad = add_node(f, f->grad_op, gin, ng, ndiff, &d);
    mc_tensor gout[MAXOUT];
    run_node(f, grad, gins, gout);

    double worst = 0;
    for (int i = 0, o = 0; i < f->nin; i++) {
        if (!f->diff[i]) continue;
        mc_tensor *x = &f->in[i], *gx = &gout[o++];
        cr_assert_eq(gx->numel, x->numel);
        double gmax = 0;
        for (int64_t e = 0; e < x->numel; e++)
            gmax = fmax(gmax, fabs(gx->f[e]));
        for (int64_t e = 0; e < x->numel; e++) {
            double v = x->f[e];
            x->f[e] = v + H;
            double Lp = loss_of(f, fwd, c, ref);
            x->f[e] = v - H;
            double Lm = loss_of(f, fwd, c, ref);
            x->f[e] = v;
            double fd = (Lp - Lm) / (2 * H), an = gx->f[e];
            double den = fmax(fmax(fabs(fd), fabs(an)), 1e-2 * gmax);
            double rel = den > 0 ? fabs(fd - an) / den : 0;
            worst = fmax(worst, rel);
            cr_expect(rel <= RTOL,
                      "%s: d/d input %d [%lld]: gradient op %.12g, finite difference %.12g",
                      mc_op_infos[f->grad_op].name, i, (long long)e, an, fd);
        }
    }
    free_outs(ref, nout);
    free_outs(c, nout);
    free_outs(gout, ndiff);
    for (int i = 0; i < f->nin; i++)
        if (f->in_ids[i] >= 0) mc_tensor_free(&f->in[i]);
    mc_graph_free(f->g);
    fprintf(stderr, "%-28s %-60s max rel error %.3g\n", mc_op_infos[f->grad_op].name,
            f->attrs ? f->attrs : "", worst);
    return worst;
}

/* Random values in [-scale, scale). */
static void fill(double *v, int64_t n, double scale) {
    for (int64_t i = 0; i < n; i++)
        v[i] = scale * urand();
}

/* ---- routers ---- */

enum { T = 8, E = 6 };

static double topk_case(const char *attrs, bool bias, int nout) {
    fx f;
    double z[T * E], b[E];
    fill(z, T * E, 2.0);
    fill(b, E, 0.3);
    fx_init(&f, MC_OP_MOE_TOPK_ROUTE, MC_OP_MOE_TOPK_ROUTE_GRAD, false, attrs);
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){T, E}, z, NULL, true);
    if (bias) fx_input(&f, MC_DT_F32, 1, (int64_t[]){E}, b, NULL, false);
    return fx_check(&f, nout);
}

Test(grad_moe, topk_softmax) {
    topk_case("k=2", false, 2);
    topk_case("k=1,scale=1.5", false, 2);
    topk_case("k=6", false, 2);
}

Test(grad_moe, topk_softmax_normalize_capacity) {
    topk_case("k=2,normalize=1,capacity=2", false, 3);
    topk_case("k=3,normalize=1,capacity=2,order=priority,scale=2", false, 2);
    topk_case("k=2,capacity=2,order=priority", true, 3);
}

Test(grad_moe, topk_softmax_selected) {
    topk_case("k=2,score=softmax_selected", false, 2);
    topk_case("k=3,score=softmax_selected,normalize=1,scale=0.5", true, 2);
    topk_case("k=2,score=softmax_selected,capacity=3", false, 2);
}

Test(grad_moe, topk_sigmoid_bias_groups) {
    topk_case("k=2,score=sigmoid,normalize=1,scale=2.5", true, 2);
    topk_case("k=2,score=sigmoid,normalize=1,scale=2.5,groups=3,topk_groups=2", true, 2);
    topk_case("k=3,score=sigmoid,groups=3,topk_groups=2,capacity=3", false, 3);
    topk_case("k=2,score=sigmoid,normalize=1,groups=2,topk_groups=1,capacity=3,order=priority",
              true, 2);
}

static double topp_case(const char *attrs) {
    fx f;
    double z[T * E];
    fill(z, T * E, 2.0);
    fx_init(&f, MC_OP_MOE_TOPP_ROUTE, MC_OP_MOE_TOPP_ROUTE_GRAD, false, attrs);
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){T, E}, z, NULL, true);
    return fx_check(&f, 2);
}

Test(grad_moe, topp) {
    topp_case("p=0.6");
    topp_case("p=0.8,max_k=3");
    topp_case("p=0.5,max_k=2,inclusive=0");
}

static double expert_choice_case(const char *attrs, bool mask) {
    fx f;
    double z[T * E];
    int64_t m[T] = {1, 0, 1, 1, 1, 0, 1, 1};
    fill(z, T * E, 2.0);
    fx_init(&f, MC_OP_MOE_EXPERT_CHOICE_ROUTE, MC_OP_MOE_EXPERT_CHOICE_ROUTE_GRAD, false, attrs);
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){T, E}, z, NULL, true);
    if (mask) fx_input(&f, MC_DT_BOOL, 1, (int64_t[]){T}, NULL, m, false);
    return fx_check(&f, 2);
}

Test(grad_moe, expert_choice) {
    expert_choice_case("capacity=3", false);
    expert_choice_case("capacity=4", true);
    expert_choice_case("capacity=7", true); /* more slots than valid tokens */
}

static double resonance_case(const char *attrs) {
    enum { D = 12 };
    fx f;
    double x[T * D];
    fill(x, T * D, 1.0);
    fx_init(&f, MC_OP_MOE_RESONANCE_ROUTE, MC_OP_MOE_RESONANCE_ROUTE_GRAD, false, attrs);
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){T, D}, x, NULL, true);
    return fx_check(&f, 2);
}

Test(grad_moe, resonance) {
    resonance_case("num_experts=4");
    resonance_case("num_experts=4,k=2,capacity=3");
    resonance_case("num_experts=3,k=2,capacity=4,weight_mode=softmax_grap_logits");
    resonance_case("num_experts=6,k=1,weight_mode=softmax_grap_logits");
    resonance_case("num_experts=4,k=2,capacity=3,weight_mode=unit");
}

/* GW: rows 0, 2, 3, 5, 6 have near-uniform logits (entropy near ln E, above the
 * threshold), the others are peaked. With the mask dropping row 2 and max_broadcast 2,
 * rows 0 and 3 are broadcast and rows 5, 6 keep their base route; `broadcast` is the
 * number of broadcast rows the forward must produce (checked). */
static double gw_case(const char *attrs, bool bias, bool mask, int broadcast) {
    fx f;
    double z[T * E], b[E];
    int64_t m[T] = {1, 1, 0, 1, 1, 1, 1, 1};
    static const bool flat[T] = {1, 0, 1, 1, 0, 1, 1, 0};
    fill(z, T * E, 1.0);
    for (int t = 0; t < T; t++)
        for (int e = 0; e < E; e++)
            z[t * E + e] *= flat[t] ? 0.3 : 3.0;
    fill(b, E, 0.3);
    fx_init(&f, MC_OP_MOE_GW_ROUTE, MC_OP_MOE_GW_ROUTE_GRAD, false, attrs); /* mode decides */
    f.want_broadcast = broadcast;
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){T, E}, z, NULL, true);
    if (bias || mask)
        bias ? fx_input(&f, MC_DT_F32, 1, (int64_t[]){E}, b, NULL, false) : fx_omit(&f);
    if (mask) fx_input(&f, MC_DT_BOOL, 1, (int64_t[]){T}, NULL, m, false);
    return fx_check(&f, 2);
}

Test(grad_moe, gw_inference) {
    gw_case("k=2,threshold=1.6,max_broadcast=2", false, false, -1);
    gw_case("k=2,threshold=1.6,max_broadcast=2,score=sigmoid,normalize=1", true, true, -1);
    gw_case("k=2,threshold=1.6,max_broadcast=2,mode=infer", false, true, 0);
}

Test(grad_moe, gw_training_broadcast) {
    gw_case("k=2,threshold=1.6,max_broadcast=2,mode=train", false, true, 2);
    gw_case("k=2,threshold=1.6,max_broadcast=8,capacity=3,normalize=1,mode=train", true, false, 5);
    gw_case("k=2,threshold=0.9,max_broadcast=3,entropy_unit=normalized,score=softmax_selected,"
            "mode=train",
            false, true, 3);
    gw_case("k=1,threshold=1.6,max_broadcast=2,score=sigmoid,scale=2,mode=train", true, true, 2);
}

/* ---- dispatch, expert GEMM, combine ---- */

Test(grad_moe, dispatch_token_choice) {
    enum { TT = 5, K = 2, D = 3, EE = 4 };
    double x[TT * D], w[TT * K];
    int64_t ex[TT * K] = {1, 3, 0, -1, 3, 1, 2, 0, -1, -1};
    fill(x, TT * D, 1.0);
    fill(w, TT * K, 1.0);
    fx f;
    fx_init(&f, MC_OP_MOE_DISPATCH, MC_OP_MOE_DISPATCH_GRAD, false, "num_experts=4");
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){TT, D}, x, NULL, true);
    fx_input(&f, MC_DT_I32, 2, (int64_t[]){TT, K}, NULL, ex, false);
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){TT, K}, w, NULL, true);
    fx_check(&f, 4);
    (void)EE;
}

Test(grad_moe, dispatch_expert_choice) {
    enum { TT = 5, C = 3, D = 2, EE = 3 };
    double x[TT * D], w[EE * C];
    int64_t tok[EE * C] = {4, 0, 2, 1, -1, 3, 2, 4, 0};
    fill(x, TT * D, 1.0);
    fill(w, EE * C, 1.0);
    fx f;
    fx_init(&f, MC_OP_MOE_DISPATCH, MC_OP_MOE_DISPATCH_GRAD, false,
            "num_experts=3,source=expert_choice");
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){TT, D}, x, NULL, true);
    fx_input(&f, MC_DT_I32, 2, (int64_t[]){EE, C}, NULL, tok, false);
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){EE, C}, w, NULL, true);
    fx_check(&f, 4);
}

Test(grad_moe, expert_matmul) {
    enum { N = 7, D = 4, F = 5, EE = 3 };
    double rows[N * D], W[EE * D * F];
    int64_t off[EE + 1] = {0, 2, 2, 5}; /* expert 1 empty, rows 5 and 6 past the end */
    fill(rows, N * D, 1.0);
    fill(W, EE * D * F, 1.0);
    fx f;
    fx_init(&f, MC_OP_MOE_EXPERT_MATMUL, MC_OP_MOE_EXPERT_MATMUL_GRAD, false, NULL);
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){N, D}, rows, NULL, true);
    fx_input(&f, MC_DT_I32, 1, (int64_t[]){EE + 1}, NULL, off, false);
    fx_input(&f, MC_DT_F32, 3, (int64_t[]){EE, D, F}, W, NULL, true);
    fx_check(&f, 1);
}

Test(grad_moe, combine) {
    enum { N = 8, D = 3, TT = 4, EE = 3 };
    double out[N * D], w[N], x[TT * 2];
    int64_t tok[N] = {0, 2, 3, 1, 3, 0, 2, -1}, off[EE + 1] = {0, 3, 5, 7};
    fill(out, N * D, 1.0);
    fill(w, N, 1.0);
    fill(x, TT * 2, 1.0);
    fx f;
    fx_init(&f, MC_OP_MOE_COMBINE, MC_OP_MOE_COMBINE_GRAD, false, NULL);
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){N, D}, out, NULL, true);
    fx_input(&f, MC_DT_I32, 1, (int64_t[]){N}, NULL, tok, false);
    fx_input(&f, MC_DT_F32, 1, (int64_t[]){N}, w, NULL, true);
    fx_input(&f, MC_DT_I32, 1, (int64_t[]){EE + 1}, NULL, off, false);
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){TT, 2}, x, NULL, false);
    fx_check(&f, 1);
}

/* ---- GW training's gathered GEMM (gw-specialize) ---- */

/* Expert 1 empty, rows 7 and 8 past the end; token 2 is read by every expert (a GW
 * broadcast row), token 4 by none. */
Test(grad_moe, gather_matmul) {
    enum { TT = 5, N = 9, D = 4, F = 3, EE = 3 };
    double x[TT * D], W[EE * D * F];
    int64_t tok[N] = {2, 0, 2, 3, 1, 2, 3, 4, 0}, off[EE + 1] = {0, 2, 2, 7};
    fill(x, TT * D, 1.0);
    fill(W, EE * D * F, 1.0);
    fx f;
    fx_init(&f, MC_OP_MOE_GATHER_MATMUL, MC_OP_MOE_GATHER_MATMUL_GRAD, true, NULL);
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){TT, D}, x, NULL, true);
    fx_input(&f, MC_DT_I32, 1, (int64_t[]){N}, NULL, tok, false);
    fx_input(&f, MC_DT_I32, 1, (int64_t[]){EE + 1}, NULL, off, false);
    fx_input(&f, MC_DT_F32, 3, (int64_t[]){EE, D, F}, W, NULL, true);
    fx_check(&f, 1);
}

/* materialize 0: rows is [0,D], so x gets no gradient through Dispatch (only weight). */
Test(grad_moe, dispatch_unmaterialized) {
    enum { TT = 5, K = 2, D = 3 };
    double x[TT * D], w[TT * K];
    int64_t ex[TT * K] = {1, 3, 0, -1, 3, 1, 2, 0, -1, -1};
    fill(x, TT * D, 1.0);
    fill(w, TT * K, 1.0);
    fx f;
    fx_init(&f, MC_OP_MOE_DISPATCH, MC_OP_MOE_DISPATCH_GRAD, true, "num_experts=4,materialize=0");
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){TT, D}, x, NULL, true);
    fx_input(&f, MC_DT_I32, 2, (int64_t[]){TT, K}, NULL, ex, false);
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){TT, K}, w, NULL, true);
    fx_check(&f, 4);
}

static void expect_same(const mc_tensor *a, const mc_tensor *b, const char *what) {
    cr_assert_eq(a->numel, b->numel, "%s: %lld vs %lld elements", what, (long long)a->numel,
                 (long long)b->numel);
    for (int64_t e = 0; e < a->numel; e++)
        if (mc_dtype_is_float(a->dt))
            cr_assert_eq(a->f[e], b->f[e], "%s [%lld]: %.17g vs %.17g", what, (long long)e, a->f[e],
                         b->f[e]);
        else
            cr_assert_eq(a->i[e], b->i[e], "%s [%lld]", what, (long long)e);
}

/* GatherMatMul(x, row_token, offsets, W) of an unmaterialised Dispatch computes exactly
 * ExpertMatMul(rows, offsets, W) of a materialised one, on a GW-like routing (tokens 1
 * and 4 broadcast to every expert, token 5 dropped) with random data. */
Test(grad_moe, gather_matmul_equals_dispatch_expert_matmul) {
    enum { TT = 6, K = 4, D = 7, F = 5, EE = 4 };
    double x[TT * D], w[TT * K], W[EE * D * F];
    int64_t ex[TT * K] = {1, 3, -1, -1, 0, 1, 2, 3, 2,  -1, -1, -1,
                          3, 0, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1};
    fill(x, TT * D, 1.0);
    fill(w, TT * K, 1.0);
    fill(W, EE * D * F, 1.0);
    fx f;
    mc_diag d;
    mc_diag_init(&d, "test");
    fx_init(&f, MC_OP_MOE_DISPATCH, MC_OP_MOE_DISPATCH_GRAD, true, "num_experts=4");
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){TT, D}, x, NULL, false);
    fx_input(&f, MC_DT_I32, 2, (int64_t[]){TT, K}, NULL, ex, false);
    fx_input(&f, MC_DT_F32, 2, (int64_t[]){TT, K}, w, NULL, false);
    fx_input(&f, MC_DT_F32, 3, (int64_t[]){EE, D, F}, W, NULL, false);
    const mc_tensor *ins[4] = {&f.in[0], &f.in[1], &f.in[2], &f.in[3]};
    int disp = add_node(&f, MC_OP_MOE_DISPATCH, f.in_ids, 3, 4, &d);
    f.attrs = "num_experts=4,materialize=0";
    int lean = add_node(&f, MC_OP_MOE_DISPATCH, f.in_ids, 3, 4, &d);
    int dout[4], lout[4];
    memcpy(dout, mc_nod(f.g, disp)->out, sizeof dout);
    memcpy(lout, mc_nod(f.g, lean)->out, sizeof lout);
    f.attrs = NULL;
    int em =
        add_node(&f, MC_OP_MOE_EXPERT_MATMUL, (int[]){dout[0], dout[1], f.in_ids[3]}, 3, 1, &d);
    int gm = add_node(&f, MC_OP_MOE_GATHER_MATMUL,
                      (int[]){f.in_ids[0], lout[2], lout[1], f.in_ids[3]}, 4, 1, &d);
    cr_assert_eq(mc_val(f.g, lout[0])->shape.d[0].c, 0, "materialize=0: rows must be [0,D]");

    mc_tensor r[4], l[4], y1, y2;
    run_node(&f, disp, ins, r);
    run_node(&f, lean, ins, l);
    cr_assert_eq(l[0].numel, 0);
    for (int j = 1; j < 4; j++)
        expect_same(&r[j], &l[j], "Dispatch outputs with and without rows");
    run_node(&f, em, (const mc_tensor *[]){&r[0], &r[1], &f.in[3]}, &y1);
    run_node(&f, gm, (const mc_tensor *[]){&f.in[0], &l[2], &l[1], &f.in[3]}, &y2);
    int64_t live = r[1].i[EE];
    cr_assert_eq(live, 13, "the routing fills %lld rows, 13 expected", (long long)live);
    expect_same(&y1, &y2, "ExpertMatMul vs GatherMatMul");
    free_outs(r, 4);
    free_outs(l, 4);
    free_outs(&y1, 1);
    free_outs(&y2, 1);
    for (int i = 0; i < 4; i++)
        mc_tensor_free(&f.in[i]);
    mc_graph_free(f.g);
}
