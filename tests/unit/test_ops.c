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

/* ---- training losses: SoftmaxCrossEntropyLoss, MSELoss ---- */

/* Scores a[T,3] and labels l[T] (int64, or `ldt`) in; the loss node `node` out as y;
 * an optional class-weight initializer w = [1, 2, 0.5]. */
#define LOSS_MODEL(ldt, inits, node)                                                               \
    "{\"moec\":1,\"name\":\"m\",\"symbols\":{\"T\":{\"max\":8}},"                                  \
    "\"inputs\":[{\"name\":\"a\",\"dtype\":\"float32\",\"shape\":[\"T\",3]},"                      \
    "{\"name\":\"l\",\"dtype\":\"" ldt "\",\"shape\":[\"T\"]}],\"outputs\":[\"y\"],"               \
    "\"initializers\":[" inits "],\"nodes\":[" node "]}"
#define CE_WEIGHTS "{\"name\":\"w\",\"dtype\":\"float32\",\"shape\":[3],\"data\":[1,2,0.5]}"
#define CE_NODE(ins, attrs)                                                                        \
    "{\"name\":\"ce\",\"op\":\"SoftmaxCrossEntropyLoss\",\"inputs\":[" ins "],"                    \
    "\"outputs\":[\"y\"],\"attrs\":{" attrs "}}"

/* Rows of scores whose losses are worked out below. */
static const float ce_scores[12] = {0, 0, 0, 1, 2, 3, 5, 0, 0, 0, 1, -1};

/* Runs the loss model on ce_scores (T = 4) and the given labels. */
static bool run_ce(run_t *r, const char *json, mc_dtype ldt, const int64_t *labels) {
    if (!build(r, json)) return false;
    mc_tensor in[2];
    int64_t sdims[2] = {4, 3}, ldims[1] = {4};
    cr_assert(mc_tensor_alloc(&in[0], MC_DT_F32, 2, sdims, &r->d, "a"));
    cr_assert(mc_tensor_alloc(&in[1], ldt, 1, ldims, &r->d, "l"));
    for (int i = 0; i < 12; i++)
        in[0].f[i] = ce_scores[i];
    for (int i = 0; i < 4; i++)
        in[1].i[i] = labels[i];
    bool ok = mc_interp_run(r->g, in, r->out, &r->d);
    mc_tensor_free(&in[0]);
    mc_tensor_free(&in[1]);
    return ok;
}

/* -log softmax(row)[label] with labels 0, 2, 1, 0:
 *   [0,0,0] -> ln 3                                   = 1.09861229
 *   [1,2,3] -> ln(1 + e^-1 + e^-2)                    = 0.40760596
 *   [5,0,0] -> ln(1 + 2 e^-5) + 5                     = 5.01338590
 *   [0,1,-1] -> ln(1 + e + e^-1)                      = 1.40760596 */
static const int64_t ce_labels[4] = {0, 2, 1, 0};
static const float ce_loss[4] = {1.09861229f, 0.40760596f, 5.01338590f, 1.40760596f};

Test(ops, softmax_cross_entropy_none_sum_mean) {
    run_t r;
    cr_assert(run_ce(&r, LOSS_MODEL("int64", "", CE_NODE("\"a\",\"l\"", "\"reduction\":\"none\"")),
                     MC_DT_I64, ce_labels),
              "%s", r.d.msg);
    cr_assert_eq(r.out[0].rank, 1);
    cr_assert_eq(r.out[0].dims[0], 4);
    for (int i = 0; i < 4; i++)
        cr_expect_float_eq(r.out[0].f[i], ce_loss[i], 2e-6, "loss %d: %g", i, r.out[0].f[i]);
    finish(&r);
    cr_assert(run_ce(&r, LOSS_MODEL("int32", "", CE_NODE("\"a\",\"l\"", "\"reduction\":\"sum\"")),
                     MC_DT_I32, ce_labels),
              "%s", r.d.msg);
    cr_assert_eq(r.out[0].rank, 0);
    cr_expect_float_eq(r.out[0].f[0], 7.92721012f, 4e-6, "%g", r.out[0].f[0]);
    finish(&r);
    /* mean is the default: 7.92721012 / 4 */
    cr_assert(run_ce(&r, LOSS_MODEL("int64", "", CE_NODE("\"a\",\"l\"", "")), MC_DT_I64, ce_labels),
              "%s", r.d.msg);
    cr_expect_float_eq(r.out[0].f[0], 1.98180253f, 2e-6, "%g", r.out[0].f[0]);
    finish(&r);
}

Test(ops, softmax_cross_entropy_class_weights) {
    /* w[label] = 1, 0.5, 2, 1: losses 1.09861229, 0.20380298, 10.0267718, 1.40760596;
     * mean divides their sum 12.73679304 by the weights' sum 4.5 = 2.83039845 */
    run_t r;
    cr_assert(run_ce(&r,
                     LOSS_MODEL("int64", CE_WEIGHTS,
                                CE_NODE("\"a\",\"l\",\"w\"", "\"reduction\":\"none\"")),
                     MC_DT_I64, ce_labels),
              "%s", r.d.msg);
    const float want[4] = {1.09861229f, 0.20380298f, 10.0267718f, 1.40760596f};
    for (int i = 0; i < 4; i++)
        cr_expect_float_eq(r.out[0].f[i], want[i], 4e-6, "loss %d: %g", i, r.out[0].f[i]);
    finish(&r);
    cr_assert(run_ce(&r, LOSS_MODEL("int64", CE_WEIGHTS, CE_NODE("\"a\",\"l\",\"w\"", "")),
                     MC_DT_I64, ce_labels),
              "%s", r.d.msg);
    cr_expect_float_eq(r.out[0].f[0], 2.83039845f, 2e-6, "%g", r.out[0].f[0]);
    finish(&r);
}

Test(ops, softmax_cross_entropy_ignore_index) {
    /* label -100 at row 2 is ignored: loss 0 there, and mean divides by 3 rows (or by the
     * weights 1 + 0.5 + 1 of the rest): (1.09861229 + 0.40760596 + 1.40760596) / 3 and
     * (1.09861229 + 0.20380298 + 1.40760596) / 2.5 */
    const int64_t labels[4] = {0, 2, -100, 0};
    run_t r;
    cr_assert(run_ce(&r,
                     LOSS_MODEL("int64", "",
                                CE_NODE("\"a\",\"l\"", "\"ignore_index\":-100,"
                                                       "\"reduction\":\"none\"")),
                     MC_DT_I64, labels),
              "%s", r.d.msg);
    cr_expect_float_eq(r.out[0].f[2], 0.0f, 0);
    cr_expect_float_eq(r.out[0].f[3], ce_loss[3], 2e-6);
    finish(&r);
    cr_assert(run_ce(&r, LOSS_MODEL("int64", "", CE_NODE("\"a\",\"l\"", "\"ignore_index\":-100")),
                     MC_DT_I64, labels),
              "%s", r.d.msg);
    cr_expect_float_eq(r.out[0].f[0], 0.97127474f, 2e-6, "%g", r.out[0].f[0]);
    finish(&r);
    cr_assert(run_ce(&r,
                     LOSS_MODEL("int64", CE_WEIGHTS,
                                CE_NODE("\"a\",\"l\",\"w\"", "\"ignore_index\":-100")),
                     MC_DT_I64, labels),
              "%s", r.d.msg);
    cr_expect_float_eq(r.out[0].f[0], 1.08400849f, 2e-6, "%g", r.out[0].f[0]);
    finish(&r);
    /* an ignore_index inside [0, C) ignores that class: labels 0 2 1 0, ignore 1 */
    cr_assert(run_ce(&r,
                     LOSS_MODEL("int64", "",
                                CE_NODE("\"a\",\"l\"", "\"ignore_index\":1,\"reduction\":\"sum\"")),
                     MC_DT_I64, ce_labels),
              "%s", r.d.msg);
    cr_expect_float_eq(r.out[0].f[0], 2.91382422f, 2e-6, "%g", r.out[0].f[0]);
    finish(&r);
}

Test(ops, softmax_cross_entropy_label_out_of_range_is_a_diagnostic) {
    const int64_t high[4] = {0, 3, 1, 0}, low[4] = {0, 2, 1, -1};
    run_t r;
    cr_assert_not(run_ce(&r, LOSS_MODEL("int64", "", CE_NODE("\"a\",\"l\"", "")), MC_DT_I64, high));
    cr_assert_str_eq(r.d.msg, "m.json: error: /nodes/0 (ce, SoftmaxCrossEntropyLoss): label 3 at "
                              "position 1 is outside [0, 3)");
    mc_graph_free(r.g);
    cr_assert_not(run_ce(&r,
                         LOSS_MODEL("int32", "", CE_NODE("\"a\",\"l\"", "\"ignore_index\":-100")),
                         MC_DT_I32, low));
    cr_assert_str_eq(r.d.msg, "m.json: error: /nodes/0 (ce, SoftmaxCrossEntropyLoss): label -1 at "
                              "position 3 is outside [0, 3) and is not ignore_index -100");
    mc_graph_free(r.g);
}

Test(ops, softmax_cross_entropy_spatial_dims) {
    /* scores [N=1, C=2, d=2] = [[[0, 2], [0, 0]]], labels [[1, 0]]: position 0 reads the
     * row (0, 0) -> ln 2, position 1 the row (2, 0) -> ln(1 + e^-2) = 0.12692801 */
    run_t r;
    cr_assert(build(&r, "{\"moec\":1,\"name\":\"m\",\"inputs\":[{\"name\":\"a\",\"dtype\":"
                        "\"float32\",\"shape\":[1,2,2]}],\"outputs\":[\"y\"],\"initializers\":[{"
                        "\"name\":\"l\",\"dtype\":\"int64\",\"shape\":[1,2],\"data\":[1,0]}],"
                        "\"nodes\":[" CE_NODE("\"a\",\"l\"", "\"reduction\":\"none\"") "]}"),
              "%s", r.d.msg);
    const mc_value *y = mc_val(r.g, r.g->outputs[0]);
    cr_assert_eq(y->shape.rank, 2);
    cr_assert_eq(y->shape.d[1].c, 2);
    const float a[4] = {0, 2, 0, 0};
    int64_t dims[3] = {1, 2, 2};
    cr_assert(exec(&r, a, dims, 3), "%s", r.d.msg);
    cr_expect_float_eq(r.out[0].f[0], 0.69314718f, 1e-6);
    cr_expect_float_eq(r.out[0].f[1], 0.12692801f, 1e-6);
    finish(&r);
}

Test(ops, softmax_cross_entropy_shape_errors) {
    run_t r;
    cr_assert_not(
        build(&r, LOSS_MODEL("int64",
                             "{\"name\":\"w\",\"dtype\":\"float32\",\"shape\":[2],\"data\":[1,2]}",
                             CE_NODE("\"a\",\"l\",\"w\"", ""))));
    cr_assert_str_eq(r.d.msg, "m.json: error: /nodes/0/inputs/2 (ce, SoftmaxCrossEntropyLoss): "
                              "weights have shape [2] but must be [3] (one per class)");
    mc_graph_free(r.g);
    cr_assert_not(build(&r, LOSS_MODEL("float32", "", CE_NODE("\"a\",\"l\"", ""))));
    cr_assert_str_eq(r.d.msg, "m.json: error: /nodes/0/inputs/1 (ce, SoftmaxCrossEntropyLoss): "
                              "input 1 (l) is f32 but must be i32 or i64");
    mc_graph_free(r.g);
    cr_assert_not(build(&r, MODEL("{\"name\":\"l\",\"dtype\":\"int64\",\"shape\":[3],"
                                  "\"data\":[0,1,2]}",
                                  CE_NODE("\"a\",\"l\"", ""), "[\"y\"]")));
    cr_assert_str_eq(r.d.msg,
                     "m.json: error: /nodes/0/inputs/1 (ce, SoftmaxCrossEntropyLoss): labels have "
                     "shape [3] but scores [T,3] need [T] (one label per row)");
    mc_graph_free(r.g);
}

/* MSELoss of a = [[1,2,3],[4,5,6]] against t = [[1,0,3],[0,5,7]]: squared differences
 * 0 4 0 16 0 1, sum 21, mean 3.5. */
#define MSE_INIT "{\"name\":\"t\",\"dtype\":\"float32\",\"shape\":[2,3],\"data\":[1,0,3,0,5,7]}"

static void check_mse(const char *attrs, int rank, const float *want, int n) {
    char node[256];
    snprintf(node, sizeof node,
             "{\"name\":\"mse\",\"op\":\"MSELoss\",\"inputs\":[\"a\",\"t\"],\"outputs\":[\"y\"],"
             "\"attrs\":{%s}}",
             attrs);
    char json[1024];
    snprintf(json, sizeof json,
             "{\"moec\":1,\"name\":\"m\",\"inputs\":[{\"name\":\"a\",\"dtype\":\"float32\","
             "\"shape\":[2,3]}],\"outputs\":[\"y\"],\"initializers\":[" MSE_INIT "],"
             "\"nodes\":[%s]}",
             node);
    run_t r;
    cr_assert(build(&r, json), "%s", r.d.msg);
    const float a[6] = {1, 2, 3, 4, 5, 6};
    int64_t dims[2] = {2, 3};
    cr_assert(exec(&r, a, dims, 2), "%s", r.d.msg);
    cr_assert_eq(r.out[0].rank, rank, "%s", attrs);
    for (int i = 0; i < n; i++)
        cr_expect_float_eq(r.out[0].f[i], want[i], 0, "%s: loss %d is %g", attrs, i, r.out[0].f[i]);
    finish(&r);
}

Test(ops, mse_loss_each_reduction) {
    const float none[6] = {0, 4, 0, 16, 0, 1}, sum = 21, mean = 3.5f;
    check_mse("\"reduction\":\"none\"", 2, none, 6);
    check_mse("\"reduction\":\"sum\"", 0, &sum, 1);
    check_mse("", 0, &mean, 1);
}

Test(ops, mse_loss_shape_mismatch_is_an_error) {
    run_t r;
    cr_assert_not(build(&r, MODEL("{\"name\":\"t\",\"dtype\":\"float32\",\"shape\":[3],"
                                  "\"data\":[1,2,3]}",
                                  "{\"name\":\"mse\",\"op\":\"MSELoss\",\"inputs\":[\"a\",\"t\"],"
                                  "\"outputs\":[\"y\"]}",
                                  "[\"y\"]")));
    cr_assert_str_eq(r.d.msg, "m.json: error: /nodes/0/inputs/1 (mse, MSELoss): target has shape "
                              "[3] but pred has [T,3]; they must match");
    mc_graph_free(r.g);
}
