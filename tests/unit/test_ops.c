/* Shape inference and the interpreter on the standard ops, driven through small JSON
 * models; expected values are worked out by hand in the comments. */
#include "frontend.h"
#include "passes.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

/* One-node model: inputs a (and b), output y; returns y after running. */
typedef struct {
    mc_graph *g;
    mc_diag d;
    mc_tensor out[2];
} run_t;

static bool build(run_t *r, const char *json) {
    mc_diag_init(&r->d, "m.json");
    r->g = mc_load_model_from_memory(json, strlen(json), "m.json", NULL, NULL, &r->d);
    return r->g && mc_infer_shapes(r->g, &r->d) && mc_verify(r->g, &r->d);
}

static bool exec(run_t *r, const float *a, const int64_t *adims, int arank) {
    mc_tensor in;
    mc_diag_init(&r->d, "m.json");
    cr_assert(mc_tensor_alloc(&in, MC_DT_F32, arank, adims, &r->d, "a"));
    int64_t n = in.numel;
    memcpy(in.f, a, sizeof(float) * (size_t)n);
    bool ok = mc_interp_run(r->g, &in, r->out, &r->d);
    mc_tensor_free(&in);
    return ok;
}

static void finish(run_t *r) {
    for (int i = 0; i < r->g->noutputs; i++)
        mc_tensor_free(&r->out[i]);
    mc_graph_free(r->g);
}

#define MODEL(inits, node, outs)                                                                   \
    "{\"moec\":1,\"name\":\"m\",\"symbols\":{\"T\":{\"max\":8}},"                                  \
    "\"inputs\":[{\"name\":\"a\",\"dtype\":\"float32\",\"shape\":[\"T\",3]}],\"outputs\":" outs    \
    ",\"initializers\":[" inits "],\"nodes\":[" node "]}"

Test(ops, matmul_shape_and_values) {
    run_t r;
    cr_assert(
        build(
            &r,
            MODEL(
                "{\"name\":\"w\",\"dtype\":\"float32\",\"shape\":[3,2],\"data\":[1,0,0,1,1,1]}",
                "{\"name\":\"mm\",\"op\":\"MatMul\",\"inputs\":[\"a\",\"w\"],\"outputs\":[\"y\"]}",
                "[\"y\"]")),
        "%s", r.d.msg);
    const mc_value *y = mc_val(r.g, r.g->outputs[0]);
    cr_assert_eq(y->shape.d[0].sym, 0);
    cr_assert_eq(y->shape.d[1].c, 2);
    const float a[6] = {1, 2, 3, 4, 5, 6};
    int64_t dims[2] = {2, 3};
    cr_assert(exec(&r, a, dims, 2), "%s", r.d.msg);
    /* [1,2,3]@w = [1+3, 2+3]; [4,5,6]@w = [4+6, 5+6] */
    const float want[4] = {4, 5, 10, 11};
    for (int i = 0; i < 4; i++)
        cr_expect_float_eq(r.out[0].f[i], want[i], 0);
    finish(&r);
}

Test(ops, softmax_rows_sum_to_one_with_max_shift) {
    run_t r;
    cr_assert(build(
        &r, MODEL("", "{\"name\":\"s\",\"op\":\"Softmax\",\"inputs\":[\"a\"],\"outputs\":[\"y\"]}",
                  "[\"y\"]")));
    const float a[3] = {1000, 1000, 999}; /* exp(1000) alone would overflow */
    int64_t dims[2] = {1, 3};
    cr_assert(exec(&r, a, dims, 2), "%s", r.d.msg);
    /* 1, 1, e^-1 over 2 + e^-1 = 2.3678794 */
    cr_expect_float_eq(r.out[0].f[0], 0.42231879f, 1e-6);
    cr_expect_float_eq(r.out[0].f[2], 0.15536241f, 1e-6);
    finish(&r);
}

Test(ops, layer_norm_by_hand) {
    run_t r;
    cr_assert(build(
        &r, MODEL("{\"name\":\"g\",\"dtype\":\"float32\",\"shape\":[3],\"data\":[1,1,2]},"
                  "{\"name\":\"b\",\"dtype\":\"float32\",\"shape\":[3],\"data\":[0,1,0]}",
                  "{\"name\":\"ln\",\"op\":\"LayerNormalization\",\"inputs\":[\"a\",\"g\",\"b\"],"
                  "\"outputs\":[\"y\"],\"attrs\":{\"epsilon\":0}}",
                  "[\"y\"]")));
    const float a[3] = {1, 2, 3};
    int64_t dims[2] = {1, 3};
    cr_assert(exec(&r, a, dims, 2), "%s", r.d.msg);
    /* mean 2, variance 2/3: (x-2)/sqrt(2/3) = -1.2247, 0, 1.2247; then *g + b */
    cr_expect_float_eq(r.out[0].f[0], -1.2247449f, 1e-5);
    cr_expect_float_eq(r.out[0].f[1], 1.0f, 1e-6);
    cr_expect_float_eq(r.out[0].f[2], 2.4494898f, 1e-5);
    finish(&r);
}

Test(ops, topk_ties_keep_lower_index) {
    run_t r;
    cr_assert(build(
        &r,
        MODEL("{\"name\":\"k\",\"dtype\":\"int64\",\"shape\":[1],\"data\":[2]}",
              "{\"name\":\"t\",\"op\":\"TopK\",\"inputs\":[\"a\",\"k\"],\"outputs\":[\"v\",\"i\"]}",
              "[\"v\",\"i\"]")));
    const float a[3] = {5, 7, 7};
    int64_t dims[2] = {1, 3};
    cr_assert(exec(&r, a, dims, 2), "%s", r.d.msg);
    cr_expect_eq(r.out[1].i[0], 1);
    cr_expect_eq(r.out[1].i[1], 2);
    finish(&r);
}

Test(ops, reshape_minus_one_takes_the_symbol) {
    run_t r;
    cr_assert(
        build(
            &r,
            MODEL(
                "{\"name\":\"s\",\"dtype\":\"int64\",\"shape\":[2],\"data\":[-1,1]}",
                "{\"name\":\"r\",\"op\":\"Reshape\",\"inputs\":[\"a\",\"s\"],\"outputs\":[\"y\"]}",
                "[\"y\"]")),
        "%s", r.d.msg);
    const mc_value *y = mc_val(r.g, r.g->outputs[0]);
    cr_assert_eq(y->shape.d[0].sym, 0);
    cr_assert_eq(y->shape.d[0].c, 3); /* [T*3, 1] */
    mc_graph_free(r.g);
}

Test(ops, gather_out_of_range_is_a_diagnostic) {
    run_t r;
    cr_assert(build(
        &r, MODEL("{\"name\":\"i\",\"dtype\":\"int64\",\"shape\":[1],\"data\":[3]}",
                  "{\"name\":\"g\",\"op\":\"Gather\",\"inputs\":[\"a\",\"i\"],\"outputs\":[\"y\"],"
                  "\"attrs\":{\"axis\":1}}",
                  "[\"y\"]")));
    const float a[3] = {1, 2, 3};
    int64_t dims[2] = {1, 3};
    cr_assert_not(exec(&r, a, dims, 2));
    cr_assert_str_eq(
        r.d.msg, "m.json: error: /nodes/0 (g, Gather): index 3 at position 0 is outside [-3, 3)");
    mc_graph_free(r.g);
}

Test(ops, broadcast_mismatch_is_a_shape_error) {
    run_t r;
    cr_assert_not(build(
        &r, MODEL("{\"name\":\"c\",\"dtype\":\"float32\",\"shape\":[2],\"data\":[1,2]}",
                  "{\"name\":\"add\",\"op\":\"Add\",\"inputs\":[\"a\",\"c\"],\"outputs\":[\"y\"]}",
                  "[\"y\"]")));
    cr_assert_str_eq(
        r.d.msg,
        "m.json: error: /nodes/0 (add, Add): shapes [T,3] and [2] do not broadcast (dim 1)");
    mc_graph_free(r.g);
}

Test(passes, expand_and_fold_keep_results_and_idle_passes_change_nothing) {
    const char *path = MOEC_SOURCE_DIR "/tests/golden/composite.json";
    mc_diag d;
    mc_diag_init(&d, path);
    mc_graph *a = mc_load_model(path, NULL, &d), *b = mc_load_model(path, NULL, &d);
    cr_assert(a && b, "%s", d.msg);
    mc_pipeline_opts only_shapes = {.passes = "infer-shapes,verify"},
                     full = {.passes = NULL, .verify_each = true};
    cr_assert(mc_run_pipeline(a, &only_shapes, &d), "%s", d.msg);
    cr_assert(mc_run_pipeline(b, &full, &d), "%s", d.msg);
    mc_tensor x, ya, yb;
    int64_t dims[2] = {5, 4};
    cr_assert(mc_tensor_alloc(&x, MC_DT_F32, 2, dims, &d, "x"));
    for (int i = 0; i < 20; i++)
        x.f[i] = sinf((float)i);
    cr_assert(mc_interp_run(a, &x, &ya, &d), "%s", d.msg);
    cr_assert(mc_interp_run(b, &x, &yb, &d), "%s", d.msg);
    for (int i = 0; i < 20; i++)
        cr_expect_float_eq(ya.f[i], yb.f[i], 0, "element %d", i);
    /* running the pipeline again finds nothing to expand, fold or remove */
    char *before = NULL, *after = NULL;
    size_t nb, na;
    FILE *f = open_memstream(&before, &nb);
    mc_print_graph(f, b);
    fclose(f);
    mc_pipeline_opts again = {.passes = "expand-moe,canonicalize,fold-constants,dce"};
    cr_assert(mc_run_pipeline(b, &again, &d), "%s", d.msg);
    f = open_memstream(&after, &na);
    mc_print_graph(f, b);
    fclose(f);
    cr_expect_str_eq(before, after);
    free(before);
    free(after);
    mc_tensor_free(&x);
    mc_tensor_free(&ya);
    mc_tensor_free(&yb);
    mc_graph_free(a);
    mc_graph_free(b);
}
