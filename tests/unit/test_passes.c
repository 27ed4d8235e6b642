/* Unit tests for the pass manager and the first passes (passes/). Each test builds a
 * graph with the ir.h API, runs a pass, and checks the graph after: node counts and
 * ops, attributes, what became a constant or dead, that the reference interpreter gives
 * the same outputs before and after a rewrite, and that a pass with nothing to do
 * leaves the dump byte-identical. Expected numbers are worked out by hand in comments. */
#include "ir.h"
#include "passes.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- building graphs ---- */

/* "T,768", "T*2,4", "" (a scalar): dims by symbol name or constant. */
static mc_shape shp(const mc_graph *g, const char *spec) {
    mc_shape s = {0};
    for (const char *p = spec; *p;) {
        size_t len = strcspn(p, ",");
        char tok[32];
        memcpy(tok, p, len);
        tok[len] = 0;
        char *star = strchr(tok, '*');
        int64_t c = star ? atoll(star + 1) : 1;
        if (star) *star = 0;
        int sym = mc_graph_find_symbol(g, tok);
        s.d[s.rank++] = sym >= 0 ? mc_dim_sym(sym, c) : mc_dim_const(atoll(tok));
        p += len + (p[len] == ',');
    }
    return s;
}

static void push(mc_graph *g, int **arr, int *n, int id) {
    int *a = mc_arena_alloc(g->arena, sizeof(int) * (size_t)(*n + 1));
    if (*n) memcpy(a, *arr, sizeof(int) * (size_t)*n);
    a[(*n)++] = id;
    *arr = a;
}

static int input(mc_graph *g, const char *name, mc_dtype dt, const char *shape) {
    int id = mc_graph_add_value(g, name, dt, MC_VK_INPUT);
    mc_val(g, id)->shape = shp(g, shape);
    mc_val(g, id)->has_shape = true;
    push(g, &g->inputs, &g->ninputs, id);
    return id;
}

static void output(mc_graph *g, int id) {
    push(g, &g->outputs, &g->noutputs, id);
    mc_val(g, id)->is_output = true;
}

static int param(mc_graph *g, const char *name, mc_dtype dt, const char *shape, const void *bytes) {
    int id = mc_graph_add_value(g, name, dt, MC_VK_PARAM);
    mc_value *v = mc_val(g, id);
    v->shape = shp(g, shape);
    v->has_shape = true;
    v->nbytes = (size_t)mc_shape_numel(&v->shape, NULL) * mc_dtype_size(dt);
    void *copy = mc_arena_alloc(g->arena, v->nbytes + 1);
    memcpy(copy, bytes, v->nbytes);
    v->data = copy;
    v->src = MC_SRC_INLINE;
    return id;
}

static int temp(mc_graph *g, const char *name) {
    return mc_graph_add_value(g, name, MC_DT_F32, MC_VK_TEMP);
}

/* out = op(in...), a new temp named `out`; returns the node id. */
static int op(mc_graph *g, mc_op o, const char *name, const int *in, int nin, int *out) {
    int id = mc_graph_add_node(g, o, name, in, nin, out, 1);
    mc_node_fill_defaults(g, mc_nod(g, id));
    return id;
}

static int op1(mc_graph *g, mc_op o, const char *name, int in, const char *out_name) {
    int out = temp(g, out_name);
    op(g, o, name, &in, 1, &out);
    return out;
}

static int op2(mc_graph *g, mc_op o, const char *name, int a, int b, const char *out_name) {
    int out = temp(g, out_name), in[2] = {a, b};
    op(g, o, name, in, 2, &out);
    return out;
}

/* ---- running passes ---- */

static mc_diag diag;

static char *dump(const mc_graph *g) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    mc_print_graph(f, g);
    fclose(f);
    return buf;
}

static void infer(mc_graph *g) {
    mc_diag_init(&diag, "t.json");
    cr_assert(mc_infer_shapes(g, &diag), "%s", diag.msg);
}

/* Runs pass `name` (shapes inferred first) and checks the graph is valid after it. */
static bool run(mc_graph *g, const char *name) {
    infer(g);
    static const mc_train_opts train = {0};
    mc_pass_ctx cx = {&diag, g->training, &train};
    bool changed = false;
    cr_assert(mc_pass_find(name)->fn(g, &cx, &changed), "%s: %s", name, diag.msg);
    cr_assert(mc_verify(g, &diag), "after %s: %s", name, diag.msg);
    return changed;
}

/* A pass that finds nothing to do reports no change and leaves the dump as it was. */
static void expect_idle(mc_graph *g, const char *name) {
    infer(g);
    char *before = dump(g);
    cr_expect_not(run(g, name), "%s reported a change", name);
    char *after = dump(g);
    cr_expect_str_eq(after, before, "%s changed the dump", name);
    free(before);
    free(after);
}

static int count_ops(const mc_graph *g, mc_op o) {
    int n = 0;
    for (int k = 0; k < g->norder; k++)
        n += g->nodes[g->order[k]].op == o;
    return n;
}

static const mc_node *order_node(const mc_graph *g, int k) {
    return &g->nodes[g->order[k]];
}

/* Interprets g on one f32 input holding `xs` with the given dims; the first output. */
static mc_tensor interp(const mc_graph *g, const float *xs, int rank, const int64_t *dims) {
    mc_tensor x, y;
    cr_assert(mc_tensor_alloc(&x, MC_DT_F32, rank, dims, &diag, "x"));
    memcpy(x.f, xs, sizeof(float) * (size_t)x.numel);
    mc_tensor outs[4];
    cr_assert(g->noutputs <= 4);
    cr_assert(mc_interp_run(g, &x, outs, &diag), "%s", diag.msg);
    y = outs[0];
    for (int i = 1; i < g->noutputs; i++)
        mc_tensor_free(&outs[i]);
    mc_tensor_free(&x);
    return y;
}

static void expect_same(const mc_tensor *a, const mc_tensor *b) {
    cr_assert_eq(a->numel, b->numel);
    for (int64_t i = 0; i < a->numel; i++)
        cr_expect_eq(a->f[i], b->f[i], "element %lld: %g vs %g", (long long)i, (double)a->f[i],
                     (double)b->f[i]);
}

/* ---- the pass manager ---- */

Test(pipeline, default_order_and_a_why_for_every_pass) {
    static const char *want[] = {
        "infer-shapes",     "verify",   "expand-moe",       "gw-specialize",      "canonicalize",
        "fold-constants",   "autodiff", "optimizer",        "fuse-gate-dispatch", "fuse-expert-ffn",
        "fuse-elementwise", "dce",      "quantize-weights", "plan-memory"};
    int n = 0;
    const mc_pass_info *list = mc_pass_table(&n);
    cr_assert_eq(n, 14);
    for (int i = 0; i < n; i++) {
        cr_expect_str_eq(list[i].name, want[i]);
        cr_expect(list[i].why && *list[i].why, "%s has no 'why'", list[i].name);
        cr_expect_eq(mc_pass_find(want[i]), &list[i]);
    }
    cr_expect_null(mc_pass_find("fold"));
    cr_expect_str_eq(
        mc_default_pipeline,
        "infer-shapes,verify,expand-moe,gw-specialize,{canonicalize,fold-constants},"
        "autodiff,optimizer,{canonicalize,fuse-gate-dispatch,fuse-expert-ffn,fuse-elementwise},"
        "dce,quantize-weights,plan-memory");
}

static mc_graph *relu_graph(void) {
    mc_graph *g = mc_graph_new("m");
    int x = input(g, "x", MC_DT_F32, "4");
    output(g, op1(g, MC_OP_RELU, "r", x, "y"));
    return g;
}

static const char *run_opts(mc_graph *g, mc_pipeline_opts o) {
    mc_diag_init(&diag, "t.json");
    return mc_run_pipeline(g, &o, &diag) ? NULL : diag.msg;
}

Test(pipeline, unknown_pass_lists_the_valid_names) {
    mc_graph *g = relu_graph();
    cr_expect_str_eq(
        run_opts(g, (mc_pipeline_opts){.passes = "infer-shapes,fold"}),
        "t.json: error: unknown pass 'fold'; the passes are: infer-shapes, verify, "
        "expand-moe, gw-specialize, canonicalize, fold-constants, autodiff, optimizer, "
        "fuse-gate-dispatch, fuse-expert-ffn, fuse-elementwise, dce, quantize-weights, "
        "plan-memory");
    cr_expect_str_eq(
        run_opts(g, (mc_pipeline_opts){.passes = "dce,,verify"}),
        "t.json: error: --passes takes a comma-separated list of pass names, with {a,b} for a "
        "group run to a fixed point (infer-shapes, verify, expand-moe, gw-specialize, "
        "canonicalize, fold-constants, autodiff, optimizer, fuse-gate-dispatch, "
        "fuse-expert-ffn, fuse-elementwise, dce, quantize-weights, plan-memory)");
    mc_graph_free(g);
}

Test(pipeline, after_must_name_a_pass_of_the_pipeline) {
    mc_graph *g = relu_graph();
    cr_expect_str_eq(
        run_opts(g, (mc_pipeline_opts){.passes = "verify,dce", .after = "canonicalize"}),
        "t.json: error: --after=canonicalize is not a pass of this pipeline; "
        "expected one of: verify, dce, all");
    mc_graph_free(g);
}

static char *run_to_string(mc_graph *g, mc_pipeline_opts o) {
    char *buf = NULL;
    size_t n = 0;
    o.dump_out = open_memstream(&buf, &n);
    const char *err = run_opts(g, o);
    fclose(o.dump_out);
    cr_assert_null(err, "%s", err);
    return buf;
}

Test(pipeline, after_all_dumps_each_pass_with_a_header) {
    mc_graph *g = relu_graph();
    char *got = run_to_string(g, (mc_pipeline_opts){.passes = "verify,dce", .after = "all"});
    const char *body = "graph m mode=infer\n"
                       "  input %x:f32[4]\n"
                       "  %y:f32[4] = Relu(%x)  # r\n"
                       "  output %y\n";
    char want[512];
    snprintf(want, sizeof want, "# after verify\n%s# after dce\n%s", body, body);
    cr_expect_str_eq(got, want);
    free(got);
    got = run_to_string(
        g, (mc_pipeline_opts){.passes = "verify,dce", .after = "dce", .format = MC_DUMP_DOT});
    cr_expect(strncmp(got, "// after dce\ndigraph \"m\" {\n", 27) == 0, "%s", got);
    cr_expect_null(strstr(got, "after verify"));
    free(got);
    mc_graph_free(g);
}

Test(pipeline, dump_dir_writes_numbered_files) {
    mc_graph *g = relu_graph();
    char dir[] = "/tmp/moec-passes-XXXXXX";
    cr_assert(mkdtemp(dir));
    cr_assert_null(run_opts(g, (mc_pipeline_opts){.passes = "dce,verify,dce", .dump_dir = dir}));
    static const char *files[] = {"01-dce.txt", "02-verify.txt", "03-dce.txt"};
    static const char *heads[] = {"# after dce\n", "# after verify\n", "# after dce\n"};
    for (int i = 0; i < 3; i++) {
        char path[128], line[64] = "";
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        FILE *f = fopen(path, "r");
        cr_assert(f, "%s was not written", path);
        cr_expect(fgets(line, sizeof line, f));
        cr_expect_str_eq(line, heads[i]);
        fclose(f);
        unlink(path);
    }
    rmdir(dir);
    mc_graph_free(g);
}

Test(pipeline, verify_each_names_the_pass_after_which_the_graph_is_invalid) {
    mc_graph *g = relu_graph();
    /* An attribute Relu does not have: no pass looks at it, the verifier rejects it. */
    mc_node_set_int(g, &g->nodes[0], "bogus", 1);
    cr_expect_null(run_opts(g, (mc_pipeline_opts){.passes = "dce"}));
    cr_expect_str_eq(run_opts(g, (mc_pipeline_opts){.passes = "dce", .verify_each = true}),
                     "t.json: error: the graph is invalid after pass dce: (r, Relu): verify: "
                     "unknown attribute bogus");
    mc_graph_free(g);
}

Test(pipeline, groups_must_be_closed_and_not_nested) {
    mc_graph *g = relu_graph();
    static const char *bad[] = {"{dce,verify", "dce}", "{dce,{verify}}", "{}", "{dce},}"};
    for (int i = 0; i < 5; i++) {
        const char *err = run_opts(g, (mc_pipeline_opts){.passes = bad[i]});
        cr_expect_not_null(err, "%s was accepted", bad[i]);
        if (err) cr_expect(strstr(err, "with {a,b} for a group") != NULL, "%s: %s", bad[i], err);
    }
    cr_expect_null(run_opts(g, (mc_pipeline_opts){.passes = "{dce},{verify,dce},dce"}));
    mc_graph_free(g);
}

/* A pass whose needs no earlier pass gives is refused before anything runs. */
Test(pipeline, needs_are_checked_when_the_pipeline_is_built) {
    mc_graph *g = relu_graph();
    g->training = true;
    cr_expect_str_eq(run_opts(g, (mc_pipeline_opts){.passes = "dce,optimizer", .after = "all"}),
                     "t.json: error: pass optimizer needs gradients (autodiff), which no earlier "
                     "pass gives");
    cr_expect_eq(g->norder, 1); /* nothing ran */
    mc_graph_free(g);
}

/* Fusion has no gradient rules: differentiating after it is refused up front. */
Test(pipeline, autodiff_after_fusion_is_refused) {
    mc_graph *g = relu_graph();
    g->training = true;
    cr_expect_str_eq(run_opts(g, (mc_pipeline_opts){.passes = "fuse-expert-ffn,autodiff"}),
                     "t.json: error: pass autodiff needs unfused ops, which pass fuse-expert-ffn "
                     "broke");
    g->training = false; /* autodiff does nothing in inference: nothing to refuse */
    cr_expect_null(run_opts(g, (mc_pipeline_opts){.passes = "fuse-expert-ffn,autodiff"}));
    mc_graph_free(g);
}

/* A group runs until a round changes nothing; later rounds dump only what changed. */
Test(pipeline, a_group_runs_to_a_fixed_point) {
    mc_graph *g = relu_graph();
    op1(g, MC_OP_NEG, "unused", g->inputs[0], "z");
    char *got = run_to_string(g, (mc_pipeline_opts){.passes = "{dce,verify}", .after = "all"});
    cr_expect_eq(g->norder, 1);
    cr_expect(strstr(got, "# after dce\n") != NULL, "%s", got);
    cr_expect(strstr(got, "# after verify\n") != NULL, "%s", got);
    cr_expect_null(strstr(got, "(round 2)"), "%s", got); /* round 2 changed nothing */
    free(got);
    mc_graph_free(g);
}

/* plan-memory's result shows in the dump and goes stale when the graph changes. */
Test(pipeline, the_memory_plan_is_dumped_and_invalidated_by_edits) {
    mc_graph *g = relu_graph();
    int x = g->inputs[0];
    op1(g, MC_OP_NEG, "unused", x, "z");
    output(g, op1(g, MC_OP_EXP, "e", op1(g, MC_OP_TANH, "t", x, "t_out"), "e_out"));
    char *got = run_to_string(g, (mc_pipeline_opts){.passes = "plan-memory", .after = "all"});
    /* z and t_out are never live at once: they share bytes; y and e_out are outputs. */
    cr_expect(strstr(got, "  plan peak=64\n  plan %z offset=0 bytes=64\n"
                          "  plan %t_out offset=0 bytes=64\n  output") == NULL,
              "%s", got);
    cr_expect(strstr(got, "  plan peak=64\n  plan %z offset=0 bytes=64\n"
                          "  plan %t_out offset=0 bytes=64\n") != NULL,
              "%s", got);
    cr_expect(g->plan.valid);
    free(got);
    got = run_to_string(g, (mc_pipeline_opts){.passes = "dce", .after = "dce"});
    cr_expect_not(g->plan.valid);
    cr_expect_null(strstr(got, "plan "), "%s", got);
    free(got);
    mc_graph_free(g);
}

/* An AdamW step over w (and its state m, v), updates w <- w', m <- m', v <- v'. */
static mc_graph *adamw_graph(int *w_next) {
    static const float zeros[4] = {0};
    static const int64_t one = 1;
    mc_graph *g = mc_graph_new("m");
    g->training = true;
    int grad = input(g, "grad", MC_DT_F32, "4");
    int in[5] = {param(g, "w", MC_DT_F32, "4", zeros), grad, param(g, "m", MC_DT_F32, "4", zeros),
                 param(g, "v", MC_DT_F32, "4", zeros), param(g, "step", MC_DT_I64, "1", &one)};
    int out[3] = {temp(g, "w_next"), temp(g, "m_next"), temp(g, "v_next")};
    mc_node *opt = mc_nod(g, mc_graph_add_node(g, MC_OP_MOE_ADAMW, "opt", in, 5, out, 3));
    mc_node_set_float(g, opt, "lr", 0.1);
    mc_node_fill_defaults(g, opt);
    for (int j = 0; j < 3; j++)
        mc_graph_add_update(g, out[j], in[j ? j + 1 : 0]);
    output(g, op1(g, MC_OP_NEG, "n", grad, "y"));
    *w_next = out[0];
    return g;
}

/* The optimizer step writes over its param and state when nothing reads them after it:
 * no arena bytes, and the dump says where each update lives. */
Test(pipeline, an_optimizer_step_updates_its_params_in_place) {
    int w_next;
    mc_graph *g = adamw_graph(&w_next);
    char *got = run_to_string(g, (mc_pipeline_opts){.passes = "plan-memory", .after = "all"});
    cr_expect(strstr(got, "  plan %w_next over %w\n  plan %m_next over %m\n"
                          "  plan %v_next over %v\n") != NULL,
              "%s", got);
    cr_expect_eq(g->plan.value_off[w_next], -1);
    cr_expect_eq(g->plan.peak, 0, "only the updates would need bytes, and they need none");
    free(got);
    mc_graph_free(g);
}

/* A node that reads w after the step needs the old w: that update gets its own buffer
 * (copied into w after the last node); m and v still go in place. */
Test(pipeline, a_param_read_after_its_step_is_not_updated_in_place) {
    int w_next;
    mc_graph *g = adamw_graph(&w_next);
    output(g, op1(g, MC_OP_NEG, "late", g->update_dst[0], "old_w"));
    cr_assert_null(run_opts(g, (mc_pipeline_opts){.passes = "plan-memory"}));
    cr_expect_eq(g->plan.value_in_place[w_next], -1);
    cr_expect_geq(g->plan.value_off[w_next], 0);
    cr_expect_eq(g->plan.value_in_place[g->update_src[1]], g->update_dst[1]);
    cr_expect_eq(g->plan.value_in_place[g->update_src[2]], g->update_dst[2]);
    mc_graph_free(g);
}

/* ---- infer-shapes and verify ---- */

Test(infer_shapes, reports_a_change_only_the_first_time) {
    mc_graph *g = relu_graph();
    static const mc_train_opts train = {0};
    mc_pass_ctx cx = {&diag, false, &train};
    bool changed = false;
    mc_diag_init(&diag, "t.json");
    cr_assert(mc_pass_infer_shapes(g, &cx, &changed), "%s", diag.msg);
    cr_expect(changed);
    cr_expect(mc_val(g, 1)->has_shape);
    expect_idle(g, "infer-shapes");
    expect_idle(g, "verify");
    mc_graph_free(g);
}

Test(infer_shapes, reports_shape_errors) {
    mc_graph *g = mc_graph_new("m");
    int a = input(g, "a", MC_DT_F32, "2,3"), b = input(g, "b", MC_DT_F32, "4,5");
    output(g, op2(g, MC_OP_MATMUL, "mm", a, b, "y"));
    cr_expect_not_null(run_opts(g, (mc_pipeline_opts){.passes = "infer-shapes"}));
    cr_expect(strstr(diag.msg, "(mm, MatMul)") != NULL, "%s", diag.msg);
    mc_graph_free(g);
}

/* ---- expand-moe ---- */

/* x[T,2], logits[T,3] (inputs) -> moe.MoE with E=3, D=2, F=2; gated and with a shared
 * expert when `full`, else a plain relu FFN. */
static mc_graph *moe_graph(bool full) {
    mc_graph *g = mc_graph_new("m");
    mc_graph_add_symbol(g, "T", 8);
    int x = input(g, "x", MC_DT_F32, "T,2"), logits = input(g, "logits", MC_DT_F32, "T,3");
    float w[12], s[4];
    for (int i = 0; i < 12; i++)
        w[i] = (float)(i % 5) * 0.25f - 0.5f;
    for (int i = 0; i < 4; i++)
        s[i] = 0.5f + (float)i * 0.125f;
    int up = param(g, "w_up", MC_DT_F32, "3,2,2", w),
        down = param(g, "w_down", MC_DT_F32, "3,2,2", w);
    int in[9] = {x, logits, up, down, -1, -1, -1, -1, -1};
    if (full) {
        in[4] = param(g, "w_gate", MC_DT_F32, "3,2,2", w);
        in[6] = param(g, "s_up", MC_DT_F32, "2,2", s);
        in[7] = param(g, "s_down", MC_DT_F32, "2,2", s);
        in[8] = param(g, "s_gate", MC_DT_F32, "2,2", s);
    }
    int y = temp(g, "y");
    int id = op(g, MC_OP_MOE_MOE, "moe", in, full ? 9 : 4, &y);
    mc_node *n = mc_nod(g, id);
    mc_node_set_int(g, n, "k", full ? 2 : 1);
    mc_node_set_int(g, n, "normalize_routing_weights", 1);
    mc_node_set_str(g, n, "activation_type", full ? "silu" : "relu");
    output(g, y);
    return g;
}

static mc_tensor moe_interp(const mc_graph *g, const float *xs, const float *ls, int64_t T) {
    mc_tensor in[2];
    int64_t dx[2] = {T, 2}, dl[2] = {T, 3};
    cr_assert(mc_tensor_alloc(&in[0], MC_DT_F32, 2, dx, &diag, "x"));
    cr_assert(mc_tensor_alloc(&in[1], MC_DT_F32, 2, dl, &diag, "logits"));
    memcpy(in[0].f, xs, sizeof(float) * (size_t)(T * 2));
    memcpy(in[1].f, ls, sizeof(float) * (size_t)(T * 3));
    mc_tensor y;
    cr_assert(mc_interp_run(g, in, &y, &diag), "%s", diag.msg);
    mc_tensor_free(&in[0]);
    mc_tensor_free(&in[1]);
    return y;
}

Test(expand_moe, gated_with_shared_expert_becomes_the_fine_grained_ops) {
    mc_graph *g = moe_graph(true);
    cr_expect(run(g, "expand-moe"));
    static const mc_op want[] = {MC_OP_MOE_TOPK_ROUTE,
                                 MC_OP_MOE_DISPATCH,
                                 MC_OP_MOE_EXPERT_MATMUL,
                                 MC_OP_MOE_EXPERT_MATMUL,
                                 MC_OP_SILU,
                                 MC_OP_MUL,
                                 MC_OP_MOE_EXPERT_MATMUL,
                                 MC_OP_MOE_COMBINE,
                                 MC_OP_MATMUL,
                                 MC_OP_MATMUL,
                                 MC_OP_SILU,
                                 MC_OP_MUL,
                                 MC_OP_MATMUL,
                                 MC_OP_ADD};
    cr_assert_eq(g->norder, 14);
    for (int k = 0; k < 14; k++)
        cr_expect_eq(order_node(g, k)->op, want[k], "node %d is %s", k,
                     mc_op_infos[order_node(g, k)->op].name);
    const mc_node *route = order_node(g, 0), *disp = order_node(g, 1), *last = order_node(g, 13);
    cr_expect_str_eq(route->name, "moe.route");
    cr_expect_eq(mc_attr_int(route, "k"), 2);
    cr_expect_eq(mc_attr_int(route, "normalize"), 1);
    cr_expect_str_eq(mc_attr_str(route, "score"), "softmax");
    cr_expect_eq(mc_attr_int(disp, "num_experts"), 3);
    cr_expect_str_eq(mc_val(g, route->out[0])->name, "moe.expert");
    cr_expect_str_eq(mc_val(g, last->out[0])->name, "y", "the last node writes the MoE's output");
    cr_expect_eq(count_ops(g, MC_OP_MOE_MOE), 0);
    /* the gated product is act(gate) * up */
    const mc_node *glu = order_node(g, 5);
    cr_expect_str_eq(mc_val(g, glu->in[0])->name, "moe.act");
    cr_expect_str_eq(mc_val(g, glu->in[1])->name, "moe.up");
    expect_idle(g, "expand-moe");
    mc_graph_free(g);
}

Test(expand_moe, same_outputs_as_the_composite) {
    mc_graph *a = moe_graph(true), *b = moe_graph(true);
    infer(a);
    run(b, "expand-moe");
    float xs[10], ls[15];
    for (int i = 0; i < 10; i++)
        xs[i] = sinf((float)i + 0.5f);
    for (int i = 0; i < 15; i++)
        ls[i] = cosf((float)i * 1.7f);
    mc_tensor ya = moe_interp(a, xs, ls, 5), yb = moe_interp(b, xs, ls, 5);
    expect_same(&ya, &yb);
    mc_tensor_free(&ya);
    mc_tensor_free(&yb);
    mc_graph_free(a);
    mc_graph_free(b);
}

/* k=1 with renormalisation: weight 1 on the arg-max expert, so y_t =
 * relu(x_t W_up[e]) W_down[e] by hand. w = (i%5)*0.25-0.5 gives
 * W[0] = [[-.5,-.25],[0,.25]], W[1] = [[.5,-.5],[-.25,0]], W[2] = [[.25,.5],[-.5,-.25]]. */
Test(expand_moe, plain_relu_experts_match_a_hand_computation) {
    mc_graph *g = moe_graph(false);
    run(g, "expand-moe");
    static const mc_op want[] = {MC_OP_MOE_TOPK_ROUTE,    MC_OP_MOE_DISPATCH,
                                 MC_OP_MOE_EXPERT_MATMUL, MC_OP_RELU,
                                 MC_OP_MOE_EXPERT_MATMUL, MC_OP_MOE_COMBINE};
    cr_assert_eq(g->norder, 6);
    for (int k = 0; k < 6; k++)
        cr_expect_eq(order_node(g, k)->op, want[k]);
    /* token 0 -> expert 1, x=[1,2]: h = relu([.5-.5, -.5+0]) = [0,0] -> y = [0,0]
     * token 1 -> expert 2, x=[1,-1]: h = relu([.25+.5, .5+.25]) = [.75,.75]
     *   y = [.75*.25 + .75*(-.5), .75*.5 + .75*(-.25)] = [-.1875, .1875]
     * token 2 -> expert 0, x=[-2,0]: h = relu([1, .5]) = [1,.5] -> y = [-.5, -.125] */
    float xs[6] = {1, 2, 1, -1, -2, 0}, ls[9] = {0, 3, 1, 0, 0, 2, 5, 1, 1};
    mc_tensor y = moe_interp(g, xs, ls, 3);
    float want_y[6] = {0, 0, -0.1875f, 0.1875f, -0.5f, -0.125f};
    for (int i = 0; i < 6; i++)
        cr_expect_float_eq(y.f[i], want_y[i], 1e-6f, "y[%d] = %g", i, (double)y.f[i]);
    mc_tensor_free(&y);
    mc_graph_free(g);
}

/* ---- canonicalize ---- */

Test(canonicalize, removes_no_ops_inside_the_graph) {
    mc_graph *g = mc_graph_new("m");
    mc_graph_add_symbol(g, "T", 8);
    int x = input(g, "x", MC_DT_F32, "T,6");
    int64_t same[2] = {0, 6}, other[3] = {0, 2, 3};
    int a = op1(g, MC_OP_IDENTITY, "id", x, "a");
    int b = op2(g, MC_OP_RESHAPE, "rs", a, param(g, "same", MC_DT_I64, "2", same), "b");
    int c = op1(g, MC_OP_CAST, "cast", b, "c");
    mc_node_set_int(g, &g->nodes[2], "to", 1); /* f32 -> f32 */
    int d = op1(g, MC_OP_TRANSPOSE, "tid", c, "d");
    int64_t ident[2] = {0, 1};
    mc_node_set_ints(g, &g->nodes[3], "perm", ident, 2);
    int e = op2(g, MC_OP_RESHAPE, "rs2", d, param(g, "other", MC_DT_I64, "3", other), "e");
    output(g, op1(g, MC_OP_RELU, "relu", e, "y"));
    cr_expect(run(g, "canonicalize"));
    cr_assert_eq(g->norder, 2, "only the real Reshape and the Relu stay");
    cr_expect_eq(order_node(g, 0)->op, MC_OP_RESHAPE);
    cr_expect_eq(order_node(g, 0)->in[0], x);
    cr_expect(mc_val(g, a)->dead && mc_val(g, b)->dead && mc_val(g, c)->dead && mc_val(g, d)->dead);
    expect_idle(g, "canonicalize");
    mc_graph_free(g);
}

Test(canonicalize, keeps_casts_and_transposes_that_do_something) {
    mc_graph *g = mc_graph_new("m");
    int x = input(g, "x", MC_DT_F32, "2,3");
    int c = op1(g, MC_OP_CAST, "cast", x, "c");
    mc_node_set_int(g, &g->nodes[0], "to", 6); /* f32 -> i32 */
    output(g, c);
    int t = op1(g, MC_OP_TRANSPOSE, "t", x, "t"); /* no perm: reverses, [3,2] */
    output(g, t);
    expect_idle(g, "canonicalize");
    cr_expect_eq(g->norder, 2);
    mc_graph_free(g);
}

Test(canonicalize, a_no_op_writing_a_graph_output_hands_its_name_to_the_producer) {
    mc_graph *g = mc_graph_new("m");
    int x = input(g, "x", MC_DT_F32, "4");
    int a = op1(g, MC_OP_RELU, "relu", x, "a");
    int y = op1(g, MC_OP_IDENTITY, "id", a, "y");
    int z = op1(g, MC_OP_EXP, "exp", a, "z");
    output(g, y);
    output(g, z);
    cr_expect(run(g, "canonicalize"));
    char *got = dump(g);
    cr_expect_str_eq(got, "graph m mode=infer\n"
                          "  input %x:f32[4]\n"
                          "  %y:f32[4] = Relu(%x)  # relu\n"
                          "  %z:f32[4] = Exp(%y)  # exp\n"
                          "  output %y\n"
                          "  output %z\n");
    free(got);
    cr_expect(mc_val(g, a)->dead);
    mc_graph_free(g);
}

Test(canonicalize, an_identity_from_an_input_or_another_output_stays) {
    mc_graph *g = mc_graph_new("m");
    int x = input(g, "x", MC_DT_F32, "4");
    int y = op1(g, MC_OP_IDENTITY, "copy_in", x, "y");
    int r = op1(g, MC_OP_RELU, "relu", x, "r");
    int z = op1(g, MC_OP_IDENTITY, "copy_out", r, "z");
    output(g, y);
    output(g, r);
    output(g, z);
    expect_idle(g, "canonicalize");
    cr_expect_eq(g->norder, 3);
    mc_graph_free(g);
}

/* x[2,3,4] -> perm [1,2,0] -> [3,4,2] -> perm [1,0,2] -> [4,3,2]: one Transpose with
 * perm [2,1,0] (p[i] = p1[p2[i]]). */
Test(canonicalize, transpose_of_transpose_becomes_one) {
    mc_graph *mk[2];
    for (int i = 0; i < 2; i++) {
        mc_graph *g = mk[i] = mc_graph_new("m");
        int x = input(g, "x", MC_DT_F32, "2,3,4");
        int64_t p1[3] = {1, 2, 0}, p2[3] = {1, 0, 2};
        int a = op1(g, MC_OP_TRANSPOSE, "t1", x, "a");
        mc_node_set_ints(g, &g->nodes[0], "perm", p1, 3);
        int b = op1(g, MC_OP_TRANSPOSE, "t2", a, "b");
        mc_node_set_ints(g, &g->nodes[1], "perm", p2, 3);
        output(g, op1(g, MC_OP_NEG, "neg", b, "y"));
        infer(g);
    }
    cr_expect(run(mk[1], "canonicalize"));
    mc_graph *g = mk[1];
    cr_assert_eq(g->norder, 2);
    const mc_node *t = order_node(g, 0);
    cr_expect_str_eq(t->name, "t2");
    cr_expect_eq(t->in[0], 0, "reads x directly");
    const mc_attr *perm = mc_attr_get(t, "perm");
    cr_assert_eq(perm->n, 3);
    cr_expect(perm->ints[0] == 2 && perm->ints[1] == 1 && perm->ints[2] == 0);
    float xs[24];
    for (int i = 0; i < 24; i++)
        xs[i] = (float)i;
    int64_t dims[3] = {2, 3, 4};
    mc_tensor ya = interp(mk[0], xs, 3, dims), yb = interp(mk[1], xs, 3, dims);
    expect_same(&ya, &yb);
    /* y[i,j,k] = -x[k,j,i]: y[1,2,0] = -x[0,2,1] = -(0*12 + 2*4 + 1) = -9 */
    cr_expect_eq(yb.f[1 * 6 + 2 * 2 + 0], -9.0f);
    mc_tensor_free(&ya);
    mc_tensor_free(&yb);
    mc_graph_free(mk[0]);
    mc_graph_free(mk[1]);
}

Test(canonicalize, inverse_transposes_vanish) {
    mc_graph *g = mc_graph_new("m");
    int x = input(g, "x", MC_DT_F32, "2,3");
    int a = op1(g, MC_OP_TRANSPOSE, "t1", x, "a"); /* default perm: reverse */
    int b = op1(g, MC_OP_TRANSPOSE, "t2", a, "b");
    output(g, op1(g, MC_OP_EXP, "exp", b, "y"));
    cr_expect(run(g, "canonicalize"));
    cr_assert_eq(g->norder, 1);
    cr_expect_eq(order_node(g, 0)->in[0], x);
    mc_graph_free(g);
}

/* ---- fold-constants ---- */

/* y = (x + a*b) @ transpose(w), a = [1,2], b = [.5,.25], w = [[1,2],[3,4],[5,6]]. */
static mc_graph *fold_graph(bool training) {
    mc_graph *g = mc_graph_new("m");
    g->training = training;
    mc_graph_add_symbol(g, "T", 8);
    float a[2] = {1, 2}, b[2] = {0.5f, 0.25f}, w[6] = {1, 2, 3, 4, 5, 6};
    int x = input(g, "x", MC_DT_F32, "T,2");
    int ab = op2(g, MC_OP_MUL, "ab", param(g, "a", MC_DT_F32, "2", a),
                 param(g, "b", MC_DT_F32, "2", b), "ab");
    int s = op2(g, MC_OP_ADD, "shift", x, ab, "s");
    int wt = op1(g, MC_OP_TRANSPOSE, "wt", param(g, "w", MC_DT_F32, "3,2", w), "wt");
    output(g, op2(g, MC_OP_MATMUL, "proj", s, wt, "y"));
    return g;
}

static void expect_floats(const mc_value *v, const float *want, int n) {
    cr_assert_eq(v->nbytes, sizeof(float) * (size_t)n);
    const float *got = v->data;
    for (int i = 0; i < n; i++)
        cr_expect_eq(got[i], want[i], "%s[%d] = %g", v->name, i, (double)got[i]);
}

Test(fold_constants, params_fold_in_inference) {
    mc_graph *a = fold_graph(false), *b = fold_graph(false);
    infer(a);
    cr_expect(run(b, "fold-constants"));
    cr_assert_eq(b->norder, 2, "Add and MatMul stay: they read x");
    cr_expect_eq(count_ops(b, MC_OP_MUL) + count_ops(b, MC_OP_TRANSPOSE), 0);
    const mc_value *ab = mc_val(b, mc_graph_find_value(b, "ab"));
    const mc_value *wt = mc_val(b, mc_graph_find_value(b, "wt"));
    cr_expect(ab->kind == MC_VK_CONST && ab->src == MC_SRC_FOLDED && ab->producer < 0);
    cr_expect(wt->kind == MC_VK_CONST && wt->src == MC_SRC_FOLDED);
    expect_floats(ab, (float[]){0.5f, 0.5f}, 2);
    expect_floats(wt, (float[]){1, 3, 5, 2, 4, 6}, 6);
    float xs[6] = {1, 0, 0, 1, -1, 2};
    int64_t dims[2] = {3, 2};
    mc_tensor ya = interp(a, xs, 2, dims), yb = interp(b, xs, 2, dims);
    expect_same(&ya, &yb);
    /* row 0: s = [1.5, .5] -> [1.5+1, 4.5+2, 7.5+3] = [2.5, 6.5, 10.5] */
    cr_expect(yb.f[0] == 2.5f && yb.f[1] == 6.5f && yb.f[2] == 10.5f);
    mc_tensor_free(&ya);
    mc_tensor_free(&yb);
    expect_idle(b, "fold-constants");
    mc_graph_free(a);
    mc_graph_free(b);
}

Test(fold_constants, params_never_fold_in_training) {
    mc_graph *g = fold_graph(true);
    expect_idle(g, "fold-constants");
    cr_expect_eq(g->norder, 4);
    mc_graph_free(g);
}

Test(fold_constants, chains_fold_in_one_run) {
    mc_graph *g = mc_graph_new("m");
    float a[3] = {1, 4, 9};
    int s = op1(g, MC_OP_SQRT, "sqrt", param(g, "a", MC_DT_F32, "3", a), "s");
    int n = op1(g, MC_OP_NEG, "neg", s, "n");
    output(g, op2(g, MC_OP_MUL, "sq", n, n, "y"));
    cr_expect(run(g, "fold-constants"));
    cr_expect_eq(g->norder, 0);
    const mc_value *y = mc_val(g, g->outputs[0]);
    cr_expect_str_eq(y->name, "y");
    cr_expect_eq(y->kind, MC_VK_CONST);
    expect_floats(y, (float[]){1, 4, 9}, 3);
    mc_graph_free(g);
}

/* [n,1] @ [1,n] makes n*n floats: 2048^2 * 4 bytes is exactly 16 MiB (folded), 2049^2 *
 * 4 bytes is over (left to run time). */
static mc_graph *outer_product(int n) {
    mc_graph *g = mc_graph_new("m");
    float *ones = calloc((size_t)n, sizeof(float));
    for (int i = 0; i < n; i++)
        ones[i] = 1;
    char col[32], row[32];
    snprintf(col, sizeof col, "%d,1", n);
    snprintf(row, sizeof row, "1,%d", n);
    int a = param(g, "a", MC_DT_F32, col, ones), b = param(g, "b", MC_DT_F32, row, ones);
    free(ones);
    output(g, op2(g, MC_OP_MATMUL, "outer", a, b, "y"));
    return g;
}

Test(fold_constants, results_over_16_mib_stay) {
    mc_graph *small = outer_product(2048), *big = outer_product(2049);
    cr_expect(run(small, "fold-constants"));
    cr_expect_eq(small->norder, 0);
    expect_idle(big, "fold-constants");
    cr_expect_eq(big->norder, 1);
    mc_graph_free(small);
    mc_graph_free(big);
}

Test(fold_constants, symbolic_inputs_do_not_fold) {
    mc_graph *g = relu_graph();
    expect_idle(g, "fold-constants");
    mc_graph_free(g);
}

/* An error while folding is one the model would hit on every run: it is reported. */
Test(fold_constants, a_run_time_error_in_constants_is_reported) {
    mc_graph *g = mc_graph_new("m");
    float data[3] = {1, 2, 3};
    int64_t index[1] = {5};
    int d = param(g, "d", MC_DT_F32, "3", data), i = param(g, "i", MC_DT_I64, "1", index);
    output(g, op2(g, MC_OP_GATHER, "g", d, i, "y"));
    infer(g);
    static const mc_train_opts train = {0};
    mc_pass_ctx cx = {&diag, false, &train};
    bool changed = false;
    cr_expect_not(mc_pass_fold_constants(g, &cx, &changed));
    cr_expect(strstr(diag.msg, "(g, Gather): index 5") != NULL, "%s", diag.msg);
    mc_graph_free(g);
}

/* ---- dce ---- */

Test(dce, removes_unused_chains_and_initializers_but_keeps_inputs) {
    mc_graph *g = mc_graph_new("m");
    float w[4] = {1, 2, 3, 4};
    int x = input(g, "x", MC_DT_F32, "4"), unused_in = input(g, "spare", MC_DT_F32, "4");
    int p = param(g, "w", MC_DT_F32, "4", w), dead_p = param(g, "dead_w", MC_DT_F32, "4", w);
    int e = op2(g, MC_OP_ADD, "e", x, dead_p, "e");
    op1(g, MC_OP_LOG, "l", e, "l"); /* l unused -> e unused too */
    output(g, op2(g, MC_OP_MUL, "y", x, p, "y"));
    cr_expect(run(g, "dce"));
    cr_assert_eq(g->norder, 1);
    cr_expect_eq(order_node(g, 0)->op, MC_OP_MUL);
    cr_expect(mc_val(g, dead_p)->dead && mc_val(g, e)->dead);
    cr_expect_not(mc_val(g, p)->dead);
    cr_expect_not(mc_val(g, unused_in)->dead, "graph inputs stay");
    char *got = dump(g);
    cr_expect_str_eq(got, "graph m mode=infer\n"
                          "  input %x:f32[4]\n"
                          "  input %spare:f32[4]\n"
                          "  param %w:f32[4] data [1, 2, 3, 4]\n"
                          "  %y:f32[4] = Mul(%x, %w)  # y\n"
                          "  output %y\n");
    free(got);
    expect_idle(g, "dce");
    mc_graph_free(g);
}

Test(dce, a_node_with_one_used_output_stays) {
    mc_graph *g = mc_graph_new("m");
    int x = input(g, "x", MC_DT_F32, "3,4");
    int outs[2] = {temp(g, "a"), temp(g, "b")};
    int id = mc_graph_add_node(g, MC_OP_SPLIT, "split", &x, 1, outs, 2);
    mc_node_fill_defaults(g, mc_nod(g, id));
    mc_node_set_int(g, mc_nod(g, id), "num_outputs", 2);
    mc_node_set_int(g, mc_nod(g, id), "axis", 1);
    output(g, outs[1]);
    expect_idle(g, "dce");
    cr_expect_eq(g->norder, 1);
    mc_graph_free(g);
}

/* ---- the whole pipeline ---- */

Test(pipeline, a_second_run_finds_nothing_to_do) {
    mc_graph *g = moe_graph(true);
    cr_assert_null(run_opts(g, (mc_pipeline_opts){.verify_each = true}));
    int n = 0;
    const mc_pass_info *list = mc_pass_table(&n);
    for (int i = 0; i < n; i++)
        expect_idle(g, list[i].name);
    mc_graph_free(g);
}

/* ---- quantize-weights ---- */

static mc_dtype dtype_of(const mc_graph *g, const char *name) {
    return mc_val(g, mc_graph_find_value(g, name))->dt;
}

/* x[T,2] -> MatMul(x, w_head[2,3]): a head, not an FFN weight. */
static mc_graph *head_graph(void) {
    mc_graph *g = mc_graph_new("m");
    mc_graph_add_symbol(g, "T", 8);
    float w[6] = {1, 2, 3, 4, 5, 6};
    int x = input(g, "x", MC_DT_F32, "T,2");
    output(g, op2(g, MC_OP_MATMUL, "head", x, param(g, "w_head", MC_DT_F32, "2,3", w), "y"));
    return g;
}

Test(quantize_weights, ffn_weights_narrow_to_bf16_rounded_to_nearest_even) {
    static const char *ffn[] = {"w_up", "w_down", "w_gate", "s_up", "s_down", "s_gate"};
    mc_graph *g = moe_graph(true);
    float before[12];
    memcpy(before, mc_val(g, mc_graph_find_value(g, "w_up"))->data, sizeof before);
    cr_assert_null(run_opts(g, (mc_pipeline_opts){.weight_dtype = {.dt = MC_DT_BF16}}));
    for (size_t i = 0; i < sizeof ffn / sizeof *ffn; i++)
        cr_expect_eq(dtype_of(g, ffn[i]), MC_DT_BF16, "%s", ffn[i]);
    const mc_value *up = mc_val(g, mc_graph_find_value(g, "w_up"));
    cr_assert_eq(up->nbytes, 12 * sizeof(uint16_t));
    cr_expect(up->narrowed_from_f32);
    for (int i = 0; i < 12; i++)
        cr_expect_eq(((const uint16_t *)up->data)[i], mc_f32_to_bf16(before[i]), "w_up[%d]", i);
    char *d = dump(g);
    cr_expect(strstr(d, "param %w_up:bf16[3,2,2] data <12 elements> (from f32: quantize-weights)"),
              "%s", d);
    free(d);
    mc_graph_free(g);
}

Test(quantize_weights, heads_stay_f32_and_nothing_changes_without_the_option) {
    mc_graph *g = head_graph();
    cr_assert_null(run_opts(g, (mc_pipeline_opts){.weight_dtype = {.dt = MC_DT_F16}}));
    cr_expect_eq(dtype_of(g, "w_head"), MC_DT_F32);
    mc_graph *a = moe_graph(true), *b = moe_graph(true);
    infer(a);
    cr_expect_not(run(a, "quantize-weights"), "no --weight-dtype: no change");
    cr_assert_null(run_opts(b, (mc_pipeline_opts){0}));
    cr_expect_eq(dtype_of(b, "w_up"), MC_DT_F32);
    mc_graph_free(g);
    mc_graph_free(a);
    mc_graph_free(b);
}

Test(quantize_weights, training_is_refused) {
    mc_graph *g = moe_graph(true);
    infer(g);
    static const mc_train_opts train = {0};
    mc_pass_ctx cx = {&diag, true, &train, {.dt = MC_DT_BF16}};
    bool changed = false;
    mc_diag_init(&diag, "t.json");
    cr_expect_not(mc_pass_quantize_weights(g, &cx, &changed));
    cr_expect(strstr(diag.msg, "--weight-dtype applies to inference"), "%s", diag.msg);
    mc_graph_free(g);
}

Test(weight_format, names_parse_and_print_back) {
    static const struct {
        const char *name;
        mc_dtype dt;
        int group;
        bool zero;
    } ok[] = {{"bf16", MC_DT_BF16, 0, false},       {"int8", MC_DT_Q8, 0, false},
              {"int4", MC_DT_Q4, 32, false},        {"int4:64", MC_DT_Q4, 64, false},
              {"int4:128:zp", MC_DT_Q4, 128, true}, {"int4:zp", MC_DT_Q4, 32, true}};
    mc_graph *g = mc_graph_new("m");
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        mc_weight_format f;
        cr_assert(mc_weight_format_parse(ok[i].name, &f), "%s", ok[i].name);
        cr_expect(f.dt == ok[i].dt && f.group == ok[i].group && f.zero == ok[i].zero, "%s",
                  ok[i].name);
    }
    mc_weight_format f = {MC_DT_Q4, 64, true};
    cr_expect_str_eq(mc_weight_format_str(g, &f), "int4:64:zp");
    static const char *bad[] = {
        "int4:7", "int4:4", "int4:12", "int4:0", "int4:", "int4:32:z", "int3", "int8:32", "F32"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        cr_expect_not(mc_weight_format_parse(bad[i], &f), "%s", bad[i]);
    mc_graph_free(g);
}

/* Squared error of v's dequantized weights against w. */
static double quant_error(const mc_value *v, const float *w, int n) {
    float back[256];
    mc_value_dequantize(v, back);
    double e = 0;
    for (int i = 0; i < n; i++)
        e += ((double)back[i] - w[i]) * ((double)back[i] - w[i]);
    return e;
}

/* Round to nearest with the plain absmax scale, per group of `group` rows of a [K, N]. */
static double rtn_error(const float *w, int K, int N, int group, int qmax) {
    double e = 0;
    for (int g0 = 0; g0 < K; g0 += group)
        for (int n = 0; n < N; n++) {
            float amax = 0;
            for (int k = g0; k < g0 + group; k++)
                amax = fabsf(w[k * N + n]) > amax ? fabsf(w[k * N + n]) : amax;
            float s = amax / (float)qmax;
            for (int k = g0; k < g0 + group; k++) {
                double d = roundf(w[k * N + n] / s) * s - w[k * N + n];
                e += d * d;
            }
        }
    return e;
}

Test(quantize_weights, least_squares_scales_beat_round_to_nearest) {
    enum { K = 64, N = 4 };
    float w[K * N];
    uint32_t state = 12345;
    for (int i = 0; i < K * N; i++) { /* a heavy-tailed spread: cubes of uniforms */
        state = state * 1664525u + 1013904223u;
        float u = (float)(state >> 8) / (float)(1 << 24) * 2 - 1;
        w[i] = u * u * u;
    }
    static const struct {
        const char *fmt;
        int group, qmax;
    } cases[] = {{"int8", K, 127}, {"int4:32", 32, 7}, {"int4:16:zp", 16, 7}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        mc_graph *g = mc_graph_new("m");
        mc_value *v = mc_val(g, param(g, "w", MC_DT_F32, "64,4", w));
        mc_weight_format f;
        cr_assert(mc_weight_format_parse(cases[c].fmt, &f));
        cr_assert_null(mc_weight_format_misfit(g, v, &f));
        mc_value_quantize(g, v, &f);
        cr_expect_eq(v->qgroup, cases[c].group, "%s", cases[c].fmt);
        double mine = quant_error(v, w, K * N),
               rtn = rtn_error(w, K, N, cases[c].group, cases[c].qmax);
        cr_expect(mine < rtn, "%s: error %g, round to nearest %g", cases[c].fmt, mine, rtn);
        mc_graph_free(g);
    }
}
