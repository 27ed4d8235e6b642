/* tests/unit/test_grad_std.c: gradient ops against central finite differences of their
 * forward ops, in the f64 interpreter (moec_core64).
 *
 * Each check loads one model: the forward op, and the gradient op fed with cotangents c
 * (graph inputs of the forward outputs' shapes). The objective is L = sum_k <y_k, c_k>
 * over the forward outputs y_k; its central difference (h = 1e-6) with respect to every
 * element of every differentiated input must match the gradient op's output to a
 * relative 1e-6 (of max(1, |gradient|)). Inputs are random, away from kinks and ties.
 * SumTo and BroadcastTo are also checked as adjoints of each other, and the tie rules of
 * TopKGrad and ReduceMaxGrad directly. The largest error of each check is printed. */
#include <criterion/criterion.h>

#include "frontend.h"
#include "ir.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_IO 8
#define H      1e-6
#define TOL    1e-6

/* ---- models as JSON ---- */
#define F32(name, shape) "{\"name\":\"" name "\",\"dtype\":\"float32\",\"shape\":" shape "}"
#define I64(name, shape, data)                                                                     \
    "{\"name\":\"" name "\",\"dtype\":\"int64\",\"shape\":" shape ",\"data\":" data "}"
#define NODE(name, op, ins, outs, attrs)                                                           \
    "{\"name\":\"" name "\",\"op\":\"" op "\",\"inputs\":" ins ",\"outputs\":" outs                \
    ",\"attrs\":{" attrs "}}"
#define MODEL(ins, inits, nodes, outs)                                                             \
    "{\"moec\":1,\"name\":\"m\",\"inputs\":[" ins "],\"outputs\":" outs                            \
    ",\"initializers\":[" inits "],\"nodes\":[" nodes "]}"

/* How an input is drawn: normal; normal but |x| >= 0.01 (Relu's kink); in [0.5, 2]
 * (Log, Sqrt); normal with every pair of elements 0.01 apart (TopK, ReduceMax ties). */
typedef enum { G_NORMAL, G_AWAY0, G_POS, G_DISTINCT } gen;

typedef struct {
    const char *json; /* graph outputs: the forward outputs, then the gradients */
    gen gens[MAX_IO]; /* per graph input (all f32) */
    int nfwd;         /* forward outputs */
    int cot[MAX_IO];  /* graph input holding the cotangent of forward output k */
    int ngrad;        /* gradient outputs */
    int wrt[MAX_IO];  /* graph input that gradient output j differentiates */
} gcase;

typedef struct {
    mc_graph *g;
    mc_tensor in[MAX_IO];
    mc_tensor out[MAX_IO];
} rig;

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static double uniform(void) { /* [0, 1) */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717u) >> 11) * 0x1p-53;
}

static double normal(void) {
    double u = uniform(), v = uniform();
    return sqrt(-2 * log(1 - u)) * cos(6.283185307179586 * v);
}

static double draw(gen k, const double *prev, int64_t n) {
    for (;;) {
        double v = k == G_POS ? 0.5 + 1.5 * uniform() : normal();
        bool ok = k != G_AWAY0 || fabs(v) >= 0.01;
        for (int64_t i = 0; k == G_DISTINCT && ok && i < n; i++)
            ok = fabs(v - prev[i]) >= 0.01;
        if (ok) return v;
    }
}

static mc_graph *load(const char *json, mc_diag *d) {
    mc_diag_init(d, "m.json");
    mc_graph *g = mc_load_model_from_memory(json, strlen(json), "m.json", NULL, NULL, d);
    if (g && !(mc_infer_shapes(g, d) && mc_verify(g, d))) {
        mc_graph_free(g);
        g = NULL;
    }
    return g;
}

static void rig_build(rig *r, const gcase *c) {
    mc_diag d;
    memset(r, 0, sizeof *r);
    r->g = load(c->json, &d);
    cr_assert(r->g, "%s", d.msg);
    cr_assert(r->g->ninputs <= MAX_IO && r->g->noutputs == c->nfwd + c->ngrad);
    for (int i = 0; i < r->g->ninputs; i++) {
        const mc_value *v = mc_val(r->g, r->g->inputs[i]);
        int64_t dims[MC_MAX_RANK];
        mc_shape_eval(&v->shape, NULL, dims);
        cr_assert(mc_tensor_alloc(&r->in[i], MC_DT_F32, v->shape.rank, dims, &d, "input"));
        for (int64_t e = 0; e < r->in[i].numel; e++)
            r->in[i].f[e] = draw(c->gens[i], r->in[i].f, e);
    }
}

static void rig_run(rig *r) {
    mc_diag d;
    mc_diag_init(&d, "m.json");
    cr_assert(mc_interp_run(r->g, r->in, r->out, &d), "%s", d.msg);
}

static void rig_release_outputs(rig *r) {
    for (int i = 0; i < r->g->noutputs; i++)
        mc_tensor_free(&r->out[i]);
}

static void rig_free(rig *r) {
    for (int i = 0; i < r->g->ninputs; i++)
        mc_tensor_free(&r->in[i]);
    mc_graph_free(r->g);
}

/* L = sum_k <y_k, c_k>. */
static double objective(rig *r, const gcase *c) {
    rig_run(r);
    double sum = 0;
    for (int k = 0; k < c->nfwd; k++) {
        const mc_tensor *y = &r->out[k], *ct = &r->in[c->cot[k]];
        cr_assert_eq(y->numel, ct->numel, "cotangent %d has the wrong size", k);
        for (int64_t e = 0; e < y->numel; e++)
            sum += y->f[e] * ct->f[e];
    }
    rig_release_outputs(r);
    return sum;
}

/* Every gradient output against central differences; returns the largest relative error. */
static double check(const char *label, const gcase *c) {
    rig r;
    rig_build(&r, c);
    rig_run(&r);
    double *grad[MAX_IO], worst = 0;
    int64_t checked = 0;
    for (int j = 0; j < c->ngrad; j++) {
        const mc_tensor *gt = &r.out[c->nfwd + j];
        cr_assert_eq(gt->numel, r.in[c->wrt[j]].numel, "%s: gradient %d has the wrong size", label,
                     j);
        grad[j] = malloc(sizeof(double) * (size_t)gt->numel);
        memcpy(grad[j], gt->f, sizeof(double) * (size_t)gt->numel);
    }
    rig_release_outputs(&r);
    for (int j = 0; j < c->ngrad; j++) {
        mc_tensor *x = &r.in[c->wrt[j]];
        for (int64_t e = 0; e < x->numel; e++) {
            double keep = x->f[e];
            x->f[e] = keep + H;
            double lp = objective(&r, c);
            x->f[e] = keep - H;
            double lm = objective(&r, c);
            x->f[e] = keep;
            double fd = (lp - lm) / (2 * H), an = grad[j][e];
            double err = fabs(fd - an) / fmax(1.0, fabs(an));
            worst = fmax(worst, err);
            checked++;
            cr_expect(err <= TOL,
                      "%s: d/d(input %d)[%lld]: gradient op %.12g, central difference %.12g", label,
                      c->wrt[j], (long long)e, an, fd);
        }
        free(grad[j]);
    }
    rig_free(&r);
    fprintf(stderr, "grad_std %-26s %4lld elements, largest relative error %.2e\n", label,
            (long long)checked, worst);
    return worst;
}

/* ---- moe.UnaryGrad: y = f(x) ---- */

#define UNARY_TEST(test, fwd, fwd_attrs, op, gx)                                                   \
    Test(grad_std, test) {                                                                         \
        gcase c = {                                                                                \
            MODEL(F32("x", "[3,5]") "," F32("c", "[3,5]"), "",                                     \
                  NODE("f", fwd, "[\"x\"]", "[\"y\"]", fwd_attrs) "," NODE(                        \
                      "g", "moe.UnaryGrad", "[\"c\",\"x\"]", "[\"gx\"]", "\"op\":\"" op "\""),     \
                  "[\"y\",\"gx\"]"),                                                               \
            {gx, G_NORMAL},                                                                        \
            1,                                                                                     \
            {1},                                                                                   \
            1,                                                                                     \
            {0}};                                                                                  \
        check("UnaryGrad " op, &c);                                                                \
    }
UNARY_TEST(unary_relu, "Relu", "", "Relu", G_AWAY0)
UNARY_TEST(unary_gelu, "Gelu", "", "Gelu", G_NORMAL)
UNARY_TEST(unary_gelu_tanh, "Gelu", "\"approximate\":\"tanh\"", "GeluTanh", G_NORMAL)
UNARY_TEST(unary_sigmoid, "Sigmoid", "", "Sigmoid", G_NORMAL)
UNARY_TEST(unary_tanh, "Tanh", "", "Tanh", G_NORMAL)
UNARY_TEST(unary_silu, "moe.Silu", "", "Silu", G_NORMAL)
UNARY_TEST(unary_exp, "Exp", "", "Exp", G_NORMAL)
UNARY_TEST(unary_log, "Log", "", "Log", G_POS)
UNARY_TEST(unary_sqrt, "Sqrt", "", "Sqrt", G_POS)

/* ---- moe.SumTo: the gradient of broadcasting, through Add(a, b) ---- */

#define ADD_TEST(test, ashape, bshape)                                                             \
    Test(grad_std, test) {                                                                         \
        gcase c = {MODEL(F32("a", ashape) "," F32("b", bshape) "," F32("c", "[3,4,6]"), "",        \
                         NODE("f", "Add", "[\"a\",\"b\"]", "[\"y\"]", "") "," NODE(                \
                             "ga", "moe.SumTo", "[\"c\",\"a\"]", "[\"da\"]",                       \
                             "") "," NODE("gb", "moe.SumTo", "[\"c\",\"b\"]", "[\"db\"]", ""),     \
                         "[\"y\",\"da\",\"db\"]"),                                                 \
                   {G_NORMAL, G_NORMAL, G_NORMAL},                                                 \
                   1,                                                                              \
                   {2},                                                                            \
                   2,                                                                              \
                   {0, 1}};                                                                        \
        check("SumTo " ashape " + " bshape, &c);                                                   \
    }
ADD_TEST(sum_to_column, "[3,4,6]", "[4,1]")
ADD_TEST(sum_to_row, "[3,4,6]", "[6]")
ADD_TEST(sum_to_both, "[3,1,6]", "[4,1]")
ADD_TEST(sum_to_scalar, "[3,4,6]", "[1]")
ADD_TEST(sum_to_outer, "[3,4,6]", "[3,1,1]")

/* ---- moe.BroadcastTo: the gradient of ReduceSum, with and without keepdims ---- */

Test(grad_std, broadcast_to_keepdims) {
    gcase c = {MODEL(F32("x", "[3,4,5]") "," F32("c", "[3,1,5]"), I64("ax", "[1]", "[1]"),
                     NODE("f", "ReduceSum", "[\"x\",\"ax\"]", "[\"y\"]",
                          "") "," NODE("g", "moe.BroadcastTo", "[\"c\",\"x\"]", "[\"gx\"]", ""),
                     "[\"y\",\"gx\"]"),
               {G_NORMAL, G_NORMAL},
               1,
               {1},
               1,
               {0}};
    check("BroadcastTo keepdims", &c);
}

Test(grad_std, broadcast_to_axes) {
    gcase c = {MODEL(F32("x", "[3,4,5]") "," F32("c", "[4]"), I64("ax", "[2]", "[0,-1]"),
                     NODE("f", "ReduceSum", "[\"x\",\"ax\"]", "[\"y\"]", "\"keepdims\":0") "," NODE(
                         "g", "moe.BroadcastTo", "[\"c\",\"x\"]", "[\"gx\"]", "\"axes\":[0,-1]"),
                     "[\"y\",\"gx\"]"),
               {G_NORMAL, G_NORMAL},
               1,
               {1},
               1,
               {0}};
    check("BroadcastTo axes", &c);
}

/* <BroadcastTo(a, like b), b> == <a, SumTo(b, like a)> for random a and b. */
static void adjoint(const char *json, const char *label) {
    rig r;
    gcase c = {json, {G_NORMAL, G_NORMAL}, 2, {0}, 0, {0}};
    rig_build(&r, &c);
    rig_run(&r);
    const mc_tensor *a = &r.in[0], *b = &r.in[1], *ba = &r.out[0], *sb = &r.out[1];
    cr_assert(ba->numel == b->numel && sb->numel == a->numel);
    double lhs = 0, rhs = 0;
    for (int64_t e = 0; e < b->numel; e++)
        lhs += ba->f[e] * b->f[e];
    for (int64_t e = 0; e < a->numel; e++)
        rhs += a->f[e] * sb->f[e];
    double err = fabs(lhs - rhs) / fmax(1.0, fabs(lhs));
    cr_expect(err <= 1e-12, "%s: <BroadcastTo(a), b> = %.17g but <a, SumTo(b)> = %.17g", label, lhs,
              rhs);
    fprintf(stderr, "grad_std %-26s <Ba,b> %.6f, relative error %.2e\n", label, lhs, err);
    rig_release_outputs(&r);
    rig_free(&r);
}

#define ADJOINT_MODEL(ashape)                                                                      \
    MODEL(F32("a", ashape) "," F32("b", "[3,4,6]"), "",                                            \
          NODE("bt", "moe.BroadcastTo", "[\"a\",\"b\"]", "[\"ba\"]",                               \
               "") "," NODE("st", "moe.SumTo", "[\"b\",\"a\"]", "[\"sb\"]", ""),                   \
          "[\"ba\",\"sb\"]")

Test(grad_std, sum_to_and_broadcast_to_are_adjoint) {
    adjoint(ADJOINT_MODEL("[4,1]"), "adjoint [4,1]");
    adjoint(ADJOINT_MODEL("[6]"), "adjoint [6]");
    adjoint(ADJOINT_MODEL("[3,1,6]"), "adjoint [3,1,6]");
    adjoint(ADJOINT_MODEL("[1,1]"), "adjoint [1,1]");
    adjoint(ADJOINT_MODEL("[3,4,6]"), "adjoint [3,4,6]");
}

/* ---- moe.SoftmaxGrad: fed the forward's output ---- */

#define SOFTMAX_TEST(test, fwd, fwd_attrs, grad_attrs)                                             \
    Test(grad_std, test) {                                                                         \
        gcase c = {MODEL(F32("x", "[2,5,3]") "," F32("c", "[2,5,3]"), "",                          \
                         NODE("f", fwd, "[\"x\"]", "[\"y\"]", fwd_attrs) "," NODE(                 \
                             "g", "moe.SoftmaxGrad", "[\"c\",\"y\"]", "[\"gx\"]", grad_attrs),     \
                         "[\"y\",\"gx\"]"),                                                        \
                   {G_NORMAL, G_NORMAL},                                                           \
                   1,                                                                              \
                   {1},                                                                            \
                   1,                                                                              \
                   {0}};                                                                           \
        check(#test, &c);                                                                          \
    }
SOFTMAX_TEST(softmax, "Softmax", "", "")
SOFTMAX_TEST(softmax_axis1, "Softmax", "\"axis\":1", "\"axis\":1")
SOFTMAX_TEST(log_softmax, "LogSoftmax", "", "\"log\":1")
SOFTMAX_TEST(log_softmax_axis0, "LogSoftmax", "\"axis\":0", "\"axis\":0,\"log\":1")

/* ---- moe.LayerNormGrad and moe.RMSNormGrad ---- */

Test(grad_std, layer_norm) {
    gcase c = {
        MODEL(F32("x", "[3,8]") "," F32("s", "[8]") "," F32("b", "[8]") "," F32("c", "[3,8]"), "",
              NODE("f", "LayerNormalization", "[\"x\",\"s\",\"b\"]", "[\"y\"]",
                   "") "," NODE("g", "moe.LayerNormGrad", "[\"c\",\"x\",\"s\",\"b\"]",
                                "[\"gx\",\"gs\",\"gb\"]", ""),
              "[\"y\",\"gx\",\"gs\",\"gb\"]"),
        {G_NORMAL, G_NORMAL, G_NORMAL, G_NORMAL},
        1,
        {3},
        3,
        {0, 1, 2}};
    check("LayerNormGrad", &c);
}

Test(grad_std, layer_norm_no_bias_axis1) {
    gcase c = {MODEL(F32("x", "[2,3,4]") "," F32("s", "[3,4]") "," F32("c", "[2,3,4]"), "",
                     NODE("f", "LayerNormalization", "[\"x\",\"s\"]", "[\"y\"]",
                          "\"axis\":1,\"epsilon\":0.01") "," NODE("g", "moe.LayerNormGrad",
                                                                  "[\"c\",\"x\",\"s\",\"\"]",
                                                                  "[\"gx\",\"gs\"]",
                                                                  "\"axis\":1,\"epsilon\":0.01"),
                     "[\"y\",\"gx\",\"gs\"]"),
               {G_NORMAL, G_NORMAL, G_NORMAL},
               1,
               {2},
               2,
               {0, 1}};
    check("LayerNormGrad no bias", &c);
}

Test(grad_std, rms_norm) {
    gcase c = {MODEL(F32("x", "[3,8]") "," F32("s", "[8]") "," F32("c", "[3,8]"), "",
                     NODE("f", "RMSNormalization", "[\"x\",\"s\"]", "[\"y\"]", "") "," NODE(
                         "g", "moe.RMSNormGrad", "[\"c\",\"x\",\"s\"]", "[\"gx\",\"gs\"]", ""),
                     "[\"y\",\"gx\",\"gs\"]"),
               {G_NORMAL, G_NORMAL, G_NORMAL},
               1,
               {2},
               2,
               {0, 1}};
    check("RMSNormGrad", &c);
}

Test(grad_std, rms_norm_axis0) {
    gcase c = {
        MODEL(F32("x", "[2,3]") "," F32("s", "[2,3]") "," F32("c", "[2,3]"), "",
              NODE("f", "RMSNormalization", "[\"x\",\"s\"]", "[\"y\"]",
                   "\"axis\":0,\"epsilon\":0.1") "," NODE("g", "moe.RMSNormGrad",
                                                          "[\"c\",\"x\",\"s\"]", "[\"gx\",\"gs\"]",
                                                          "\"axis\":0,\"epsilon\":0.1"),
              "[\"y\",\"gx\",\"gs\"]"),
        {G_NORMAL, G_NORMAL, G_NORMAL},
        1,
        {2},
        2,
        {0, 1}};
    check("RMSNormGrad axis 0", &c);
}

/* ---- moe.GatherGrad: repeated and negative indices add up ---- */

Test(grad_std, gather) {
    gcase c = {MODEL(F32("x", "[5,3]") "," F32("c", "[6,3]"), I64("i", "[6]", "[1,4,1,-1,0,1]"),
                     NODE("f", "Gather", "[\"x\",\"i\"]", "[\"y\"]", "") "," NODE(
                         "g", "moe.GatherGrad", "[\"c\",\"x\",\"i\"]", "[\"gx\"]", ""),
                     "[\"y\",\"gx\"]"),
               {G_NORMAL, G_NORMAL},
               1,
               {1},
               1,
               {0}};
    check("GatherGrad", &c);
}

Test(grad_std, gather_axis1) {
    gcase c = {MODEL(F32("x", "[2,4,3]") "," F32("c", "[2,2,2,3]"), I64("i", "[2,2]", "[3,0,3,3]"),
                     NODE("f", "Gather", "[\"x\",\"i\"]", "[\"y\"]", "\"axis\":1") "," NODE(
                         "g", "moe.GatherGrad", "[\"c\",\"x\",\"i\"]", "[\"gx\"]", "\"axis\":1"),
                     "[\"y\",\"gx\"]"),
               {G_NORMAL, G_NORMAL},
               1,
               {1},
               1,
               {0}};
    check("GatherGrad axis 1", &c);
}

/* ---- moe.SliceGrad ---- */

#define SLICE_INITS                                                                                \
    I64("st", "[2]", "[5,1]")                                                                      \
    "," I64("en", "[2]", "[-7,4]") "," I64("ax", "[2]", "[2,1]") "," I64("sp", "[2]", "[-2,2]")

Test(grad_std, slice_steps) {
    gcase c = {MODEL(F32("x", "[2,4,6]") "," F32("c", "[2,2,3]"), SLICE_INITS,
                     NODE("f", "Slice", "[\"x\",\"st\",\"en\",\"ax\",\"sp\"]", "[\"y\"]",
                          "") "," NODE("g", "moe.SliceGrad",
                                       "[\"c\",\"x\",\"st\",\"en\",\"ax\",\"sp\"]", "[\"gx\"]", ""),
                     "[\"y\",\"gx\"]"),
               {G_NORMAL, G_NORMAL},
               1,
               {1},
               1,
               {0}};
    check("SliceGrad steps", &c);
}

Test(grad_std, slice_defaults) {
    gcase c = {MODEL(F32("x", "[5,3]") "," F32("c", "[2,3]"),
                     I64("st", "[1]", "[-4]") "," I64("en", "[1]", "[3]"),
                     NODE("f", "Slice", "[\"x\",\"st\",\"en\"]", "[\"y\"]", "") "," NODE(
                         "g", "moe.SliceGrad", "[\"c\",\"x\",\"st\",\"en\"]", "[\"gx\"]", ""),
                     "[\"y\",\"gx\"]"),
               {G_NORMAL, G_NORMAL},
               1,
               {1},
               1,
               {0}};
    check("SliceGrad defaults", &c);
}

/* ---- moe.TopKGrad: the values output carries the gradient, the indices none ---- */

Test(grad_std, topk) {
    gcase c = {MODEL(F32("x", "[3,7]") "," F32("c", "[3,3]"), I64("k", "[1]", "[3]"),
                     NODE("f", "TopK", "[\"x\",\"k\"]", "[\"v\",\"i\"]",
                          "") "," NODE("g", "moe.TopKGrad", "[\"c\",\"x\",\"k\"]", "[\"gx\"]", ""),
                     "[\"v\",\"gx\"]"),
               {G_DISTINCT, G_NORMAL},
               1,
               {1},
               1,
               {0}};
    check("TopKGrad", &c);
}

Test(grad_std, topk_smallest_axis0) {
    gcase c = {
        MODEL(F32("x", "[6,2]") "," F32("c", "[4,2]"), I64("k", "[1]", "[4]"),
              NODE("f", "TopK", "[\"x\",\"k\"]", "[\"v\",\"i\"]",
                   "\"axis\":0,\"largest\":0") "," NODE("g", "moe.TopKGrad", "[\"c\",\"x\",\"k\"]",
                                                        "[\"gx\"]", "\"axis\":0,\"largest\":0"),
              "[\"v\",\"gx\"]"),
        {G_DISTINCT, G_NORMAL},
        1,
        {1},
        1,
        {0}};
    check("TopKGrad smallest axis 0", &c);
}

/* ---- moe.ReduceMaxGrad ---- */

Test(grad_std, reduce_max) {
    gcase c = {MODEL(F32("x", "[3,4,5]") "," F32("c", "[3,1,5]"), I64("ax", "[1]", "[1]"),
                     NODE("f", "ReduceMax", "[\"x\",\"ax\"]", "[\"y\"]", "") "," NODE(
                         "g", "moe.ReduceMaxGrad", "[\"c\",\"x\",\"ax\"]", "[\"gx\"]", ""),
                     "[\"y\",\"gx\"]"),
               {G_DISTINCT, G_NORMAL},
               1,
               {1},
               1,
               {0}};
    check("ReduceMaxGrad", &c);
}

Test(grad_std, reduce_max_all) {
    gcase c = {MODEL(F32("x", "[3,4]") "," F32("c", "[]"), "",
                     NODE("f", "ReduceMax", "[\"x\"]", "[\"y\"]", "\"keepdims\":0") "," NODE(
                         "g", "moe.ReduceMaxGrad", "[\"c\",\"x\"]", "[\"gx\"]", "\"keepdims\":0"),
                     "[\"y\",\"gx\"]"),
               {G_DISTINCT, G_NORMAL},
               1,
               {1},
               1,
               {0}};
    check("ReduceMaxGrad all", &c);
}

/* ---- tie rules, where finite differences do not apply ---- */

/* Runs a model on given inputs; the outputs stay in r->out. */
static void run_with(rig *r, const char *json, const double *const *vals) {
    gcase c = {json, {G_NORMAL}, 0, {0}, 1, {0}};
    rig_build(r, &c);
    for (int i = 0; i < r->g->ninputs; i++)
        for (int64_t e = 0; e < r->in[i].numel; e++)
            r->in[i].f[e] = vals[i][e];
    rig_run(r);
}

/* Row 0's maximum 2 appears three times: each gets a third of its gy; row 1's once. */
Test(grad_std, reduce_max_splits_ties_evenly) {
    const double x[8] = {2, -1, 2, 2, 0, 2, 1, -3}, gy[2] = {0.9, 3};
    const double *vals[2] = {gy, x};
    rig r;
    run_with(&r,
             MODEL(F32("gy", "[2,1]") "," F32("x", "[2,4]"), I64("ax", "[1]", "[1]"),
                   NODE("g", "moe.ReduceMaxGrad", "[\"gy\",\"x\",\"ax\"]", "[\"gx\"]", ""),
                   "[\"gx\"]"),
             vals);
    const double want[8] = {0.3, 0, 0.3, 0.3, 0, 3, 0, 0};
    for (int e = 0; e < 8; e++)
        cr_expect(fabs(r.out[0].f[e] - want[e]) < 1e-15, "gx[%d] is %g, want %g", e, r.out[0].f[e],
                  want[e]);
    rig_release_outputs(&r);
    rig_free(&r);
}

/* Ties keep the lower index first, as TopK: of the three 5s the first two are taken. */
Test(grad_std, topk_ties_take_the_lower_index) {
    const double x[5] = {5, 1, 5, 7, 5}, gv[3] = {10, 20, 30};
    const double *vals[2] = {gv, x};
    rig r;
    run_with(&r,
             MODEL(F32("gv", "[1,3]") "," F32("x", "[1,5]"), I64("k", "[1]", "[3]"),
                   NODE("g", "moe.TopKGrad", "[\"gv\",\"x\",\"k\"]", "[\"gx\"]", ""), "[\"gx\"]"),
             vals);
    const double want[5] = {20, 0, 30, 10, 0};
    for (int e = 0; e < 5; e++)
        cr_expect_eq(r.out[0].f[e], want[e], "gx[%d] is %g, want %g", e, r.out[0].f[e], want[e]);
    rig_release_outputs(&r);
    rig_free(&r);
}

/* ---- shape inference: bad inputs are diagnostics ---- */

static void expect_error(const char *json, const char *want) {
    mc_diag d;
    mc_graph *g = load(json, &d);
    cr_expect(!g, "the model was accepted; expected: %s", want);
    if (g) mc_graph_free(g);
    cr_expect(strstr(d.msg, want), "message \"%s\" lacks \"%s\"", d.msg, want);
}

Test(grad_std, inference_rejects_mismatches) {
    expect_error(MODEL(F32("g", "[3,4]") "," F32("like", "[5]"), "",
                       NODE("s", "moe.SumTo", "[\"g\",\"like\"]", "[\"y\"]", ""), "[\"y\"]"),
                 "input 1 (like) has shape [5], which does not broadcast to the shape of input 0 "
                 "[3,4]");
    expect_error(MODEL(F32("gy", "[3,5]") "," F32("x", "[3,4]"), "",
                       NODE("u", "moe.UnaryGrad", "[\"gy\",\"x\"]", "[\"y\"]", "\"op\":\"Tanh\""),
                       "[\"y\"]"),
                 "input 0 (gy, the gradient of the forward output) has shape [3,5] but the forward "
                 "output has shape [3,4]");
    expect_error(
        MODEL(F32("g", "[3]") "," F32("like", "[3,4]"), "",
              NODE("b", "moe.BroadcastTo", "[\"g\",\"like\"]", "[\"y\"]", "\"axes\":[0,1]"),
              "[\"y\"]"),
        "axes has 2 entries and input 0 (g) has rank 1, but together they must give the "
        "rank 2 of input 1 (like)");
    expect_error(
        MODEL(F32("gy", "[3,4]") "," F32("x", "[3,4]") "," F32("s", "[4]"), "",
              NODE("n", "moe.LayerNormGrad", "[\"gy\",\"x\",\"s\"]", "[\"gx\",\"gs\",\"gb\"]", ""),
              "[\"gx\"]"),
        "the node has 3 outputs but must have 2");
    expect_error(MODEL(F32("gv", "[2,3]") "," F32("x", "[2,5]"), I64("k", "[1]", "[2]"),
                       NODE("t", "moe.TopKGrad", "[\"gv\",\"x\",\"k\"]", "[\"gx\"]", ""),
                       "[\"gx\"]"),
                 "has shape [2,3] but the forward output has shape [2,2]");
}
