/* Unit tests for the core IR: arena, allocation failure injection, graph editing,
 * attributes in schema order, toposort, diagnostics, dtype and shape helpers. */
#include "ir.h"

#include <criterion/criterion.h>
#include <string.h>

Test(arena, grows_past_first_chunk_and_zeroes) {
    mc_arena *a = mc_arena_new();
    unsigned char *big = mc_arena_alloc(a, 1 << 20);
    for (int i = 0; i < 1000; i++) {
        unsigned char *p = mc_arena_alloc(a, 100);
        cr_assert_eq(((uintptr_t)p) % 16, 0);
        for (int k = 0; k < 100; k++)
            cr_assert_eq(p[k], 0);
        memset(p, 0xab, 100);
    }
    cr_assert_eq(big[(1 << 20) - 1], 0);
    mc_arena_free(a);
}

static int cleanups_run;
static void count_cleanup(void *ctx) {
    cleanups_run += *(int *)ctx;
}

Test(arena, runs_cleanups_on_free) {
    static int two = 2;
    cleanups_run = 0;
    mc_arena *a = mc_arena_new();
    mc_arena_on_free(a, count_cleanup, &two);
    mc_arena_on_free(a, count_cleanup, &two);
    mc_arena_free(a);
    cr_assert_eq(cleanups_run, 4);
}

Test(arena, printf_formats) {
    mc_arena *a = mc_arena_new();
    cr_assert_str_eq(mc_arena_printf(a, "%s.%d", "route", 3), "route.3");
    mc_arena_free(a);
}

Test(alloc, nth_allocation_fails_on_demand) {
    mc_alloc_fail_after(2);
    void *a = mc_alloc(8), *b = mc_alloc(8), *c = mc_alloc(8), *d = mc_alloc(8);
    cr_assert(a && b && d);
    cr_assert_null(c);
    mc_free(a);
    mc_free(b);
    mc_free(d);
}

Test(alloc, tensor_alloc_failure_is_a_diagnostic) {
    mc_diag d;
    mc_diag_init(&d, "m.json");
    mc_tensor t;
    int64_t dims[2] = {4, 4};
    mc_alloc_fail_after(0);
    cr_assert_not(mc_tensor_alloc(&t, MC_DT_F32, 2, dims, &d, "value 'y'"));
    cr_assert_str_eq(d.msg, "m.json: error: cannot allocate 64 bytes for value 'y'");
}

Test(diag, first_error_wins_and_formats_path) {
    mc_diag d;
    mc_diag_init(&d, "m.json");
    cr_assert_not(mc_error(&d, "/nodes/2/attrs/k", "k is %d but must be positive", 0));
    mc_error(&d, "/nodes/3", "second");
    cr_assert(d.failed);
    cr_assert_str_eq(d.msg, "m.json: error: /nodes/2/attrs/k: k is 0 but must be positive");
}

static mc_graph *chain(int *x, int *y, int *z, int *n1, int *n2) {
    mc_graph *g = mc_graph_new("t");
    *x = mc_graph_add_value(g, "x", MC_DT_F32, MC_VK_INPUT);
    *y = mc_graph_add_value(g, "y", MC_DT_F32, MC_VK_TEMP);
    *z = mc_graph_add_value(g, "z", MC_DT_F32, MC_VK_TEMP);
    *n1 = mc_graph_add_node(g, MC_OP_RELU, "r", x, 1, y, 1);
    *n2 = mc_graph_add_node(g, MC_OP_NEG, "n", y, 1, z, 1);
    return g;
}

Test(graph, producers_and_uses) {
    int x, y, z, n1, n2;
    mc_graph *g = chain(&x, &y, &z, &n1, &n2);
    cr_assert_eq(mc_val(g, y)->producer, n1);
    cr_assert_eq(mc_val(g, z)->producer, n2);
    cr_assert_eq(mc_val(g, x)->producer, -1);
    cr_assert_eq(mc_graph_count_uses(g, y), 1);
    cr_assert_eq(mc_graph_count_uses(g, z), 0);
    mc_graph_free(g);
}

Test(graph, insert_before_and_remove_keep_order) {
    int x, y, z, n1, n2;
    mc_graph *g = chain(&x, &y, &z, &n1, &n2);
    int w = mc_graph_add_value(g, "w", MC_DT_F32, MC_VK_TEMP);
    int n3 = mc_graph_add_node_before(g, n2, MC_OP_EXP, "e", &y, 1, &w, 1);
    cr_assert_eq(g->norder, 3);
    cr_assert_eq(g->order[0], n1);
    cr_assert_eq(g->order[1], n3);
    cr_assert_eq(g->order[2], n2);
    mc_graph_remove_node(g, n3);
    cr_assert_eq(g->norder, 2);
    cr_assert(mc_nod(g, n3)->dead);
    cr_assert_eq(mc_val(g, w)->producer, -1);
    mc_graph_free(g);
}

Test(graph, replace_uses_moves_graph_outputs) {
    int x, y, z, n1, n2;
    mc_graph *g = chain(&x, &y, &z, &n1, &n2);
    g->outputs = mc_arena_alloc(g->arena, sizeof(int));
    g->outputs[0] = y;
    g->noutputs = 1;
    mc_val(g, y)->is_output = true;
    mc_graph_replace_uses(g, y, x);
    cr_assert_eq(mc_nod(g, n2)->in[0], x);
    cr_assert_eq(g->outputs[0], x);
    cr_assert(mc_val(g, x)->is_output);
    cr_assert_not(mc_val(g, y)->is_output);
    mc_graph_free(g);
}

/* Use lists follow every mutation: add, set input, replace uses, remove. */
Test(graph, use_lists_follow_every_mutation) {
    int x, y, z, n1, n2;
    mc_graph *g = chain(&x, &y, &z, &n1, &n2);
    int w = mc_graph_add_value(g, "w", MC_DT_F32, MC_VK_TEMP);
    int n3 = mc_graph_add_node(g, MC_OP_ADD, "a", (const int[]){y, y}, 2, &w, 1);
    cr_assert_eq(mc_val(g, y)->nuses, 3); /* n2 once, n3 twice */
    cr_assert_eq(mc_value_single_user(g, y), -1);
    cr_assert_eq(mc_value_single_user(g, x), n1);
    mc_node_set_input(g, n3, 1, x);
    cr_assert_eq(mc_val(g, y)->nuses, 2);
    cr_assert_eq(mc_val(g, x)->nuses, 2);
    mc_graph_replace_uses(g, y, x);
    cr_assert_eq(mc_val(g, y)->nuses, 0);
    cr_assert_eq(mc_val(g, x)->nuses, 4);
    cr_assert_eq(mc_nod(g, n2)->in[0], x);
    cr_assert_eq(mc_nod(g, n3)->in[0], x);
    mc_graph_remove_node(g, n3);
    cr_assert_eq(mc_val(g, x)->nuses, 2);
    cr_assert_eq(mc_value_single_user(g, x), -1); /* n1 and n2 */
    mc_graph_remove_node(g, n1);
    cr_assert_eq(mc_value_single_user(g, x), n2);
    mc_graph_free(g);
}

/* A node input written behind the graph's back is a verifier error. */
Test(graph, verifier_catches_stale_use_lists) {
    int x, y, z, n1, n2;
    mc_graph *g = chain(&x, &y, &z, &n1, &n2);
    mc_value *xv = mc_val(g, x);
    xv->has_shape = true;
    xv->shape = (mc_shape){1, {mc_dim_const(4)}};
    mc_diag d;
    mc_diag_init(&d, "t");
    cr_assert(mc_infer_shapes(g, &d), "%s", d.msg);
    cr_assert(mc_verify(g, &d), "%s", d.msg);
    mc_nod(g, n2)->in[0] = x; /* same dtype and shape as y: only the use lists disagree */
    cr_assert_not(mc_verify(g, &d));
    cr_assert(strstr(d.msg, "use list") != NULL, "%s", d.msg);
    mc_graph_free(g);
}

Test(graph, toposort_reorders_and_detects_cycles) {
    mc_graph *g = mc_graph_new("t");
    int x = mc_graph_add_value(g, "x", MC_DT_F32, MC_VK_INPUT);
    int y = mc_graph_add_value(g, "y", MC_DT_F32, MC_VK_TEMP);
    int z = mc_graph_add_value(g, "z", MC_DT_F32, MC_VK_TEMP);
    int b = mc_graph_add_node(g, MC_OP_NEG, "b", &y, 1, &z, 1); /* consumer first */
    int a = mc_graph_add_node(g, MC_OP_RELU, "a", &x, 1, &y, 1);
    cr_assert(mc_graph_toposort(g));
    cr_assert_eq(g->order[0], a);
    cr_assert_eq(g->order[1], b);
    mc_node_set_input(g, a, 0, z); /* a <- b <- a */
    cr_assert_not(mc_graph_toposort(g));
    mc_graph_free(g);
}

Test(graph, unique_names) {
    mc_graph *g = mc_graph_new("t");
    mc_graph_add_value(g, "route.expert", MC_DT_I32, MC_VK_TEMP);
    cr_assert_str_eq(mc_graph_unique_name(g, "route.weight"), "route.weight");
    cr_assert_str_eq(mc_graph_unique_name(g, "route.expert"), "route.expert.1");
    mc_graph_free(g);
}

Test(attrs, defaults_fill_in_schema_order) {
    mc_graph *g = mc_graph_new("t");
    int l = mc_graph_add_value(g, "l", MC_DT_F32, MC_VK_INPUT);
    int outs[2] = {mc_graph_add_value(g, "e", MC_DT_I32, MC_VK_TEMP),
                   mc_graph_add_value(g, "w", MC_DT_F32, MC_VK_TEMP)};
    int n = mc_graph_add_node(g, MC_OP_MOE_TOPK_ROUTE, "route", &l, 1, outs, 2);
    mc_node *nd = mc_nod(g, n);
    mc_node_set_str(g, nd, "order", "priority");
    mc_node_set_int(g, nd, "k", 2);
    mc_node_fill_defaults(g, nd);
    const char *want[] = {"k",     "score", "normalize", "capacity",
                          "order", "scale", "groups",    "topk_groups"};
    cr_assert_eq(nd->nattr, 8);
    for (int i = 0; i < 8; i++)
        cr_assert_str_eq(nd->attrs[i].name, want[i]);
    cr_assert_eq(mc_attr_int(nd, "k"), 2);
    cr_assert_str_eq(mc_attr_str(nd, "order"), "priority");
    cr_assert_str_eq(mc_attr_str(nd, "score"), "softmax");
    cr_assert_float_eq(mc_attr_float(nd, "scale"), 1.0, 0);
    cr_assert_null(mc_attr_get(nd, "nonsense"));
    mc_graph_free(g);
}

Test(attrs, node_error_names_path_name_and_op) {
    mc_graph *g = mc_graph_new("t");
    int l = mc_graph_add_value(g, "l", MC_DT_F32, MC_VK_INPUT);
    int o = mc_graph_add_value(g, "o", MC_DT_F32, MC_VK_TEMP);
    int n = mc_graph_add_node(g, MC_OP_SOFTMAX, "sm", &l, 1, &o, 1);
    mc_nod(g, n)->src_index = 3;
    mc_diag d;
    mc_diag_init(&d, "m.json");
    mc_node_error(&d, g, mc_nod(g, n), "attrs/axis", "axis is %d but must be in [-2, 1]", 5);
    cr_assert_str_eq(d.msg,
                     "m.json: error: /nodes/3/attrs/axis (sm, Softmax): axis is 5 but must be in "
                     "[-2, 1]");
    mc_graph_free(g);
}

Test(optable, names_round_trip_and_schema_kinds) {
    for (int i = 0; i < MC_NUM_OPS; i++) {
        mc_op op;
        cr_assert(mc_op_from_name(mc_op_infos[i].name, &op));
        cr_assert_eq(op, (mc_op)i);
        cr_assert_leq(mc_op_infos[i].min_in, mc_op_infos[i].max_in);
    }
    mc_op op;
    cr_assert_not(mc_op_from_name("Swish", &op));
    const mc_attr_schema *s = mc_attr_schema_find(MC_OP_MOE_GW_ROUTE, "entropy_unit");
    cr_assert_not_null(s);
    cr_assert_str_eq(s->choices, "nats|normalized");
    /* GWRoute's first eight attributes are TopKRoute's, in the same order, so that
     * gw-specialize can turn one into the other attribute by attribute. */
    int gw = 0, tk = 0;
    const mc_attr_schema *gws[8], *tks[8];
    for (int i = 0; i < mc_num_attr_schemas; i++) {
        if (mc_attr_schemas[i].op == MC_OP_MOE_GW_ROUTE && gw < 8) gws[gw++] = &mc_attr_schemas[i];
        if (mc_attr_schemas[i].op == MC_OP_MOE_TOPK_ROUTE && tk < 8)
            tks[tk++] = &mc_attr_schemas[i];
    }
    cr_assert_eq(tk, 8);
    for (int i = 0; i < 8; i++)
        cr_assert_str_eq(gws[i]->name, tks[i]->name);
}

Test(dtype, names_sizes_and_onnx_codes) {
    mc_dtype t;
    cr_assert(mc_dtype_from_json("bfloat16", &t));
    cr_assert_eq(t, MC_DT_BF16);
    cr_assert_eq(mc_dtype_size(MC_DT_I64), 8);
    cr_assert(mc_dtype_from_onnx(7, &t));
    cr_assert_eq(t, MC_DT_I64);
    cr_assert_not(mc_dtype_from_onnx(11, &t)); /* double is not an IR dtype */
    cr_assert_not(mc_dtype_from_json("float64", &t));
}

Test(shape, numel_overflow_and_printing) {
    mc_graph *g = mc_graph_new("t");
    int T = mc_graph_add_symbol(g, "T", 4096);
    mc_shape s = {2, {mc_dim_sym(T, 2), mc_dim_const(768)}};
    char buf[64];
    cr_assert_str_eq(mc_shape_str(g, &s, buf, sizeof buf), "[T*2,768]");
    cr_assert_eq(mc_shape_numel_max(g, &s), 2 * 4096 * 768);
    int64_t sv[1] = {3};
    cr_assert_eq(mc_shape_numel(&s, sv), 6 * 768);
    mc_shape huge = {3, {mc_dim_const(1 << 20), mc_dim_const(1 << 20), mc_dim_const(2)}};
    cr_assert_eq(mc_shape_numel(&huge, NULL), -1);
    mc_graph_free(g);
}

Test(half, f16_and_bf16_round_to_nearest_even) {
    cr_assert_eq(mc_f32_to_f16(1.0f), 0x3c00);
    cr_assert_eq(mc_f32_to_f16(-2.0f), 0xc000);
    cr_assert_eq(mc_f32_to_f16(65504.0f), 0x7bff);
    cr_assert_eq(mc_f32_to_f16(1e6f), 0x7c00);                   /* overflow to inf */
    cr_assert_eq(mc_f32_to_f16(5.960464477539063e-08f), 0x0001); /* smallest subnormal */
    cr_assert_eq(mc_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);     /* tie to even: down */
    cr_assert_eq(mc_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);     /* tie to even: up */
    cr_assert_float_eq(mc_f16_to_f32(0x3555), 0.333251953125f, 0);
    cr_assert_eq(mc_f32_to_bf16(1.0f), 0x3f80);
    cr_assert_float_eq(mc_bf16_to_f32(0x4049), 3.140625f, 0);
    cr_assert_float_eq(mc_round_to_dtype(0.1f, MC_DT_BF16), 0.10009765625f, 0);
}

/* x -> Relu -> Neg, shapes inferred and verified. */
static mc_graph *verified_chain(void) {
    int x, y, z, n1, n2;
    mc_graph *g = chain(&x, &y, &z, &n1, &n2);
    mc_val(g, x)->shape = (mc_shape){1, {mc_dim_const(3)}};
    mc_val(g, x)->has_shape = true;
    mc_diag d;
    mc_diag_init(&d, "m.json");
    cr_assert(mc_infer_shapes(g, &d), "%s", d.msg);
    cr_assert(mc_verify(g, &d), "%s", d.msg);
    return g;
}

Test(verify, catches_a_use_before_its_producer) {
    mc_graph *g = verified_chain();
    int first = g->order[0];
    g->order[0] = g->order[1]; /* Neg now runs before the Relu that feeds it */
    g->order[1] = first;
    mc_diag d;
    mc_diag_init(&d, "m.json");
    cr_assert_not(mc_verify(g, &d));
    cr_assert_str_eq(d.msg,
                     "m.json: error: (n, Neg): verify: input %y is used before it is produced");
    mc_graph_free(g);
}

Test(verify, catches_a_recorded_shape_that_inference_disagrees_with) {
    mc_graph *g = verified_chain();
    mc_val(g, 2)->shape.d[0] = mc_dim_const(4); /* %z claims [4] */
    mc_diag d;
    mc_diag_init(&d, "m.json");
    cr_assert_not(mc_verify(g, &d));
    cr_assert_str_eq(d.msg, "m.json: error: (n, Neg): verify: %z is f32[4] but Neg infers f32[3]");
    mc_graph_free(g);
}

Test(verify, catches_a_missing_attribute) {
    mc_graph *g = verified_chain();
    mc_node *n = mc_nod(g, g->order[0]);
    n->op = MC_OP_SOFTMAX; /* Softmax needs its axis attribute */
    mc_diag d;
    mc_diag_init(&d, "m.json");
    cr_assert_not(mc_verify(g, &d));
    cr_assert_str_eq(d.msg, "m.json: error: (r, Softmax): verify: attribute axis is missing");
    mc_graph_free(g);
}
