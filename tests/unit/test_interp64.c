/* The f64 interpreter (moec_core built with MC_REAL_DOUBLE): float dtypes are computed
 * and held in double, f16/bf16 still rounded, and central finite differences through
 * it are accurate enough for gradient checks. Expected values come from double libm. */
#include "frontend.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

typedef struct {
    mc_graph *g;
    mc_diag d;
    mc_tensor out[4];
} run_t;

static void build(run_t *r, const char *json) {
    mc_diag_init(&r->d, "m.json");
    r->g = mc_load_model_from_memory(json, strlen(json), "m.json", NULL, NULL, &r->d);
    cr_assert(r->g && mc_infer_shapes(r->g, &r->d) && mc_verify(r->g, &r->d), "%s", r->d.msg);
}

/* Runs the graph on one f32 input a[rows, cols] given in double. */
static void exec(run_t *r, const double *a, int64_t rows, int64_t cols) {
    mc_tensor in;
    int64_t dims[2] = {rows, cols};
    mc_diag_init(&r->d, "m.json");
    cr_assert(mc_tensor_alloc(&in, MC_DT_F32, 2, dims, &r->d, "a"));
    for (int64_t i = 0; i < rows * cols; i++)
        in.f[i] = a[i];
    bool ok = mc_interp_run(r->g, &in, r->out, &r->d);
    mc_tensor_free(&in);
    cr_assert(ok, "%s", r->d.msg);
}

static void release(run_t *r) {
    for (int i = 0; i < r->g->noutputs; i++)
        mc_tensor_free(&r->out[i]);
    mc_graph_free(r->g);
}

#define MODEL(cols, inits, nodes, outs)                                                            \
    "{\"moec\":1,\"name\":\"m\",\"symbols\":{\"T\":{\"max\":8}},"                                  \
    "\"inputs\":[{\"name\":\"a\",\"dtype\":\"float32\",\"shape\":[\"T\"," cols "]}],"              \
    "\"outputs\":" outs ",\"initializers\":[" inits "],\"nodes\":[" nodes "]}"

/* |got - want| within 1e-12, relative to the size of want when it is above 1. */
static void expect_close(double got, double want, const char *what, int i) {
    double tol = 1e-12 * (fabs(want) > 1 ? fabs(want) : 1);
    cr_expect(fabs(got - want) <= tol, "%s[%d] is %.17g but double libm gives %.17g", what, i, got,
              want);
}

Test(interp64, real_is_double) {
    cr_assert_eq(sizeof(mc_real), 8);
    mc_tensor t;
    mc_diag d;
    mc_diag_init(&d, "t");
    int64_t n = 1;
    cr_assert(mc_tensor_alloc(&t, MC_DT_F32, 1, &n, &d, "t"));
    t.f[0] = 0.1;
    cr_expect_eq(t.f[0], 0.1); /* not rounded to the float 0.100000001490116 */
    mc_tensor_free(&t);
}

/* The inputs are not floats, and every result differs from its float counterpart by far
 * more than the 1e-12 tolerance, so only double arithmetic passes. */
Test(interp64, exp_softmax_matmul_in_double) {
    run_t r;
    build(&r,
          MODEL("3",
                "{\"name\":\"w\",\"dtype\":\"float32\",\"shape\":[3,2],"
                "\"data\":[0.5,-1.25,2,0.75,-3,1.5]}",
                "{\"name\":\"e\",\"op\":\"Exp\",\"inputs\":[\"a\"],\"outputs\":[\"ye\"]},"
                "{\"name\":\"s\",\"op\":\"Softmax\",\"inputs\":[\"a\"],\"outputs\":[\"ys\"]},"
                "{\"name\":\"mm\",\"op\":\"MatMul\",\"inputs\":[\"a\",\"w\"],\"outputs\":[\"ym\"]}",
                "[\"ye\",\"ys\",\"ym\"]"));
    const double a[6] = {0.1, 1.0 / 3, -2.7182818284590452, 1e-3 + 1e-11, 4.4, -0.7};
    const double w[6] = {0.5, -1.25, 2, 0.75, -3, 1.5};
    exec(&r, a, 2, 3);
    for (int i = 0; i < 6; i++) {
        expect_close(r.out[0].f[i], exp(a[i]), "Exp", i);
        cr_expect(fabs(expf((float)a[i]) - exp(a[i])) > 1e-10, "input %d is too easy", i);
    }
    for (int row = 0; row < 2; row++) {
        const double *x = a + 3 * row;
        double mx = fmax(fmax(x[0], x[1]), x[2]), sum = 0;
        for (int j = 0; j < 3; j++)
            sum += exp(x[j] - mx);
        for (int j = 0; j < 3; j++)
            expect_close(r.out[1].f[3 * row + j], exp(x[j] - mx) / sum, "Softmax", 3 * row + j);
        for (int n = 0; n < 2; n++) {
            double s = 0;
            for (int q = 0; q < 3; q++)
                s += x[q] * w[2 * q + n];
            expect_close(r.out[2].f[2 * row + n], s, "MatMul", 2 * row + n);
            cr_expect(fabs((double)(float)s - s) > 1e-10, "MatMul %d is exact in float", n);
        }
    }
    release(&r);
}

/* f32 stays double; f16 still rounds, and straight from double: 1 + 2^-11 + 2^-40 lies
 * just above the f16 tie between 1 and 1 + 2^-10, which a detour through float would
 * turn into an exact tie and round down to even. */
Test(interp64, f16_and_bf16_round_from_double) {
    cr_expect_eq(mc_round_to_dtype(0.1, MC_DT_F32), 0.1);
    cr_expect_eq(mc_round_to_dtype(1 + 0x1p-11 + 0x1p-40, MC_DT_F16), 1 + 0x1p-10);
    cr_expect_eq(mc_round_to_dtype(1 + 0x1p-11 - 0x1p-40, MC_DT_F16), 1.0);
    cr_expect_eq(mc_round_to_dtype(1 + 0x1p-11, MC_DT_F16), 1.0); /* a real tie: even */
    cr_expect_eq(mc_round_to_dtype(1 + 0x1p-8 + 0x1p-40, MC_DT_BF16), 1 + 0x1p-7);
    cr_expect_eq(mc_round_to_dtype(-(1 + 0x1p-8 + 0x1p-40), MC_DT_BF16), -(1 + 0x1p-7));
    cr_expect_eq(mc_round_to_dtype(1e300, MC_DT_F16), INFINITY);
    cr_expect_eq(mc_round_to_dtype(1e-300, MC_DT_BF16), 0.0);

    run_t r; /* Cast to float16 (ONNX code 10) rounds the interpreter's output */
    build(&r, MODEL("2", "",
                    "{\"name\":\"c\",\"op\":\"Cast\",\"inputs\":[\"a\"],\"outputs\":[\"h\"],"
                    "\"attrs\":{\"to\":10}}",
                    "[\"h\"]"));
    const double a[2] = {0.1, 1 + 0x1p-11 + 0x1p-40};
    exec(&r, a, 1, 2);
    cr_expect_eq(r.out[0].f[0], 0.0999755859375);
    cr_expect_eq(r.out[0].f[1], 1 + 0x1p-10);
    release(&r);
}

/* f(x) = ReduceSum(Softmax(x) * c) over one row; df/dx_i = s_i (c_i - sum_j s_j c_j). */
static double loss(run_t *r, const double *x, int64_t cols) {
    exec(r, x, 1, cols);
    double v = r->out[0].f[0];
    mc_tensor_free(&r->out[0]);
    return v;
}

Test(interp64, finite_differences_match_the_softmax_gradient) {
    run_t r;
    build(&r, MODEL("4",
                    "{\"name\":\"c\",\"dtype\":\"float32\",\"shape\":[4],"
                    "\"data\":[0.5,-1.25,2,0.75]}",
                    "{\"name\":\"s\",\"op\":\"Softmax\",\"inputs\":[\"a\"],\"outputs\":[\"p\"]},"
                    "{\"name\":\"m\",\"op\":\"Mul\",\"inputs\":[\"p\",\"c\"],\"outputs\":[\"pc\"]},"
                    "{\"name\":\"r\",\"op\":\"ReduceSum\",\"inputs\":[\"pc\"],\"outputs\":[\"y\"],"
                    "\"attrs\":{\"keepdims\":0}}",
                    "[\"y\"]"));
    const double x[4] = {0.3, -1.1, 0.77, 2.05}, c[4] = {0.5, -1.25, 2, 0.75}, h = 1e-6;
    double s[4], sum = 0, sc = 0;
    for (int j = 0; j < 4; j++)
        sum += exp(x[j] - 2.05);
    for (int j = 0; j < 4; j++)
        s[j] = exp(x[j] - 2.05) / sum, sc += s[j] * c[j];
    for (int i = 0; i < 4; i++) {
        double xp[4], xm[4];
        memcpy(xp, x, sizeof xp);
        memcpy(xm, x, sizeof xm);
        xp[i] += h;
        xm[i] -= h;
        double fd = (loss(&r, xp, 4) - loss(&r, xm, 4)) / (2 * h);
        double exact = s[i] * (c[i] - sc);
        cr_expect(fabs(fd - exact) <= 1e-8, "d/dx%d: central difference %.12g, analytic %.12g", i,
                  fd, exact);
    }
    mc_graph_free(r.g);
}
