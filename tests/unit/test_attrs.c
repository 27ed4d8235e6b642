/* tests/unit/test_attrs.c: the names ir/attrs.h generates from ir/attrs.def (row
 * positions and choice indices) against the schema table ir/optable.c builds from the
 * same rows, the groups of rows several ops share, and mc_attr_choice. */
#include <criterion/criterion.h>
#include <string.h>

#include "frontend.h"
#include "ir.h"
#include "passes.h"

/* Every row with its generated position constant, in attrs.def order. */
typedef struct {
    mc_op op;
    const char *name;
    int index;
} row_name;
static const row_name rows[] = {
#define ATTRS(op)
#define ATTR(op, name, kind, presence, dflt, choices) {MC_OP_##op, #name, MC_A_##op##_##name},
#include "attrs.def"
#undef ATTRS
#undef ATTR
};

/* Every choice of every STRING row with its generated index constant. */
typedef struct {
    mc_op op;
    const char *name, *choice;
    int index;
} choice_name;
static const choice_name choices[] = {
#define ATTRS(op)
#define CHOICES(...)                                  (__VA_ARGS__)
#define ATTR(op, name, kind, presence, dflt, choices) CHOICES_##kind(op, name, choices)
#define CHOICES_INT(op, name, c)
#define CHOICES_FLOAT(op, name, c)
#define CHOICES_INTS(op, name, c)
#define CHOICES_FLOATS(op, name, c)
#define CHOICES_STRING(op, name, c)  MC_PP_CALL(MC_PP_MAP, CHOICE_OF, (op, name), MC_PP_UNPAREN c)
#define CHOICE_OF(row, choice)       CALL(CHOICE_OF_, MC_PP_UNPAREN row, choice)
#define CALL(m, ...)                 m(__VA_ARGS__) /* not MC_PP_CALL: that one is being expanded */
#define CHOICE_OF_(op, name, choice) {MC_OP_##op, #name, #choice, MC_A_##op##_##name##_##choice},
#include "attrs.def"
#undef ATTRS
#undef CHOICES
#undef ATTR
};

static int position_among_op_rows(int row) {
    int pos = 0;
    for (int i = 0; i < row; i++)
        pos += mc_attr_schemas[i].op == mc_attr_schemas[row].op;
    return pos;
}

Test(attrs, row_constants_are_positions_among_the_ops_rows) {
    cr_assert_eq(sizeof rows / sizeof rows[0], (size_t)mc_num_attr_schemas);
    for (int i = 0; i < mc_num_attr_schemas; i++) {
        cr_assert_eq(rows[i].op, mc_attr_schemas[i].op);
        cr_assert_str_eq(rows[i].name, mc_attr_schemas[i].name);
        cr_assert_eq(rows[i].index, position_among_op_rows(i), "%s %s is %d",
                     mc_op_infos[rows[i].op].name, rows[i].name, rows[i].index);
    }
    cr_assert_eq(MC_A_GEMM_transB, 3);
    cr_assert_eq(MC_A_MOE_GW_ROUTE_mode, 12);
}

Test(attrs, choice_constants_are_indices_in_the_schema_choices) {
    int n = 0;
    for (size_t i = 0; i < sizeof choices / sizeof choices[0]; i++) {
        const choice_name *c = &choices[i];
        const mc_attr_schema *s = mc_attr_schema_find(c->op, c->name);
        cr_assert(s && s->choices);
        cr_assert_eq(mc_choice_index(s->choices, c->choice), c->index, "%s %s %s",
                     mc_op_infos[c->op].name, c->name, c->choice);
    }
    for (int i = 0; i < mc_num_attr_schemas; i++) { /* each choice of each row listed once */
        const char *p = mc_attr_schemas[i].choices;
        for (; p; p = strchr(p, '|'), p = p ? p + 1 : p)
            n++;
    }
    cr_assert_eq((size_t)n, sizeof choices / sizeof choices[0]);
    cr_assert_eq(MC_A_MOE_DISPATCH_source_expert_choice, 1);
    cr_assert_eq(mc_choice_index("token_choice|expert_choice", "expert"), -1);
}

Test(attrs, every_string_row_has_choices_and_a_valid_default) {
    for (int i = 0; i < mc_num_attr_schemas; i++) {
        const mc_attr_schema *s = &mc_attr_schemas[i];
        if (s->kind != MC_AK_STRING) {
            cr_assert_null(s->choices);
            continue;
        }
        cr_assert_not_null(s->choices, "%s", s->name);
        if (s->presence == MC_AP_DEF)
            cr_assert_geq(mc_choice_index(s->choices, s->sdef), 0, "%s %s default %s",
                          mc_op_infos[s->op].name, s->name, s->sdef);
    }
}

/* The rows of `a` and `b` with the same positions agree in name, kind, presence,
 * default and choices, for the first n rows of `a` (n < 0: all, and the counts match). */
static void expect_same_rows(mc_op a, mc_op b, int n) {
    const mc_attr_schema *ra[64], *rb[64];
    int na = 0, nb = 0;
    for (int i = 0; i < mc_num_attr_schemas; i++) {
        if (mc_attr_schemas[i].op == a) ra[na++] = &mc_attr_schemas[i];
        if (mc_attr_schemas[i].op == b) rb[nb++] = &mc_attr_schemas[i];
    }
    if (n < 0) {
        cr_assert_eq(na, nb, "%s, %s", mc_op_infos[a].name, mc_op_infos[b].name);
        n = na;
    }
    cr_assert(n > 0 && n <= na && n <= nb);
    for (int i = 0; i < n; i++) {
        cr_assert_str_eq(ra[i]->name, rb[i]->name);
        cr_assert_eq(ra[i]->kind, rb[i]->kind);
        cr_assert_eq(ra[i]->presence, rb[i]->presence);
        cr_assert_eq(ra[i]->idef, rb[i]->idef);
        cr_assert_eq(ra[i]->fdef, rb[i]->fdef);
        cr_assert(ra[i]->sdef == rb[i]->sdef || strcmp(ra[i]->sdef, rb[i]->sdef) == 0);
        cr_assert(ra[i]->choices == rb[i]->choices || strcmp(ra[i]->choices, rb[i]->choices) == 0);
    }
}

/* A kernel shared by the ops of a group reads them by one op's names. */
Test(attrs, shared_rows_have_the_same_positions) {
    static const mc_op same[][2] = {
        {MC_OP_MOE_TOPK_ROUTE, MC_OP_MOE_TOPK_ROUTE_GRAD},
        {MC_OP_MOE_TOPP_ROUTE, MC_OP_MOE_TOPP_ROUTE_GRAD},
        {MC_OP_MOE_EXPERT_CHOICE_ROUTE, MC_OP_MOE_EXPERT_CHOICE_ROUTE_GRAD},
        {MC_OP_MOE_RESONANCE_ROUTE, MC_OP_MOE_RESONANCE_ROUTE_GRAD},
        {MC_OP_MOE_GW_ROUTE, MC_OP_MOE_GW_ROUTE_GRAD},
        {MC_OP_MOE_DISPATCH, MC_OP_MOE_DISPATCH_GRAD},
        {MC_OP_MOE_LOAD_BALANCE_LOSS, MC_OP_MOE_LOAD_BALANCE_LOSS_GRAD},
        {MC_OP_MOE_Z_LOSS, MC_OP_MOE_Z_LOSS_GRAD},
        {MC_OP_MOE_ENTROPY_LOSS, MC_OP_MOE_ENTROPY_LOSS_GRAD},
        {MC_OP_SOFTMAX_CROSS_ENTROPY_LOSS, MC_OP_MOE_SOFTMAX_CROSS_ENTROPY_LOSS_GRAD},
        {MC_OP_MSE_LOSS, MC_OP_MOE_MSE_LOSS_GRAD},
        {MC_OP_LAYER_NORM, MC_OP_RMS_NORM},
        {MC_OP_LAYER_NORM, MC_OP_MOE_LAYER_NORM_GRAD},
        {MC_OP_RMS_NORM, MC_OP_MOE_RMS_NORM_GRAD},
        {MC_OP_GATHER, MC_OP_MOE_GATHER_GRAD},
        {MC_OP_TOPK, MC_OP_MOE_TOPK_GRAD},
        {MC_OP_REDUCE_SUM, MC_OP_REDUCE_MEAN},
        {MC_OP_REDUCE_SUM, MC_OP_REDUCE_MAX},
        {MC_OP_REDUCE_MAX, MC_OP_MOE_REDUCE_MAX_GRAD},
    };
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++)
        expect_same_rows(same[i][0], same[i][1], -1);
    expect_same_rows(MC_OP_MOE_TOPK_ROUTE, MC_OP_MOE_GW_ROUTE, 8); /* GW's base route */
    cr_assert_eq(MC_A_MOE_GW_ROUTE_scale, MC_A_MOE_TOPK_ROUTE_scale);
    cr_assert_eq(MC_A_MOE_GW_ROUTE_GRAD_eps, MC_A_MOE_GW_ROUTE_eps);
    cr_assert_eq(MC_A_MOE_DISPATCH_GRAD_materialize, MC_A_MOE_DISPATCH_materialize);
}

Test(attrs, choice_of_a_node_and_the_gw_mode_default) {
    mc_graph *g = mc_graph_new("t");
    int l = mc_graph_add_value(g, "l", MC_DT_F32, MC_VK_INPUT);
    int outs[2] = {mc_graph_add_value(g, "e", MC_DT_I32, MC_VK_TEMP),
                   mc_graph_add_value(g, "w", MC_DT_F32, MC_VK_TEMP)};
    mc_node *n = mc_nod(g, mc_graph_add_node(g, MC_OP_MOE_GW_ROUTE, "gw", &l, 1, outs, 2));
    mc_node_set_str(g, n, "score", "sigmoid");
    mc_node_set_int(g, n, "k", 1);
    mc_node_set_float(g, n, "threshold", 1.0);
    mc_node_set_int(g, n, "max_broadcast", 2);
    mc_node_fill_defaults(g, n);
    cr_assert_eq(mc_attr_choice(n, "score"), MC_A_MOE_GW_ROUTE_score_sigmoid);
    cr_assert_eq(mc_attr_choice(n, "order"), MC_A_MOE_GW_ROUTE_order_position);
    /* a GWRoute no pass has specialised routes as its base router */
    cr_assert_str_eq(mc_attr_str(n, "mode"), "infer");
    cr_assert_eq(mc_attr_choice(n, "mode"), MC_A_MOE_GW_ROUTE_mode_infer);
    mc_node_set_str(g, n, "mode", "train");
    cr_assert_eq(mc_attr_choice(n, "mode"), MC_A_MOE_GW_ROUTE_mode_train);
    cr_assert_str_eq(n->attrs[MC_A_MOE_GW_ROUTE_mode].name, "mode"); /* every row present */
    mc_graph_free(g);
}

/* A GWRoute (and a GWRouteGrad) that the model leaves without a mode gets the compile
 * mode's from the frontend, so the model type-checks as compiled from the first pass;
 * one the model gives is kept. gw-specialize then makes every GWRoute of a training
 * compile mode "train". */
static const char *GW_MODEL =
    "{\"moec\":1,\"name\":\"m\",\"symbols\":{\"T\":{\"max\":4}},"
    "\"inputs\":[{\"name\":\"z\",\"dtype\":\"float32\",\"shape\":[\"T\",4]}],"
    "\"outputs\":[\"w\",\"v\"],\"nodes\":["
    "{\"name\":\"a\",\"op\":\"moe.GWRoute\",\"inputs\":[\"z\"],\"outputs\":[\"e\",\"w\"],"
    "\"attrs\":{\"k\":1,\"threshold\":1,\"max_broadcast\":2}},"
    "{\"name\":\"b\",\"op\":\"moe.GWRoute\",\"inputs\":[\"z\"],\"outputs\":[\"f\",\"v\"],"
    "\"attrs\":{\"k\":1,\"threshold\":1,\"max_broadcast\":2,\"mode\":\"%s\"}}]}";

static mc_graph *load_gw(bool training, const char *b_mode, const char *passes) {
    char json[1024];
    snprintf(json, sizeof json, GW_MODEL, b_mode);
    mc_diag d;
    mc_diag_init(&d, "m.json");
    mc_load_opts lo = {.training = training};
    mc_graph *g = mc_load_model_from_memory(json, strlen(json), "m.json", NULL, &lo, &d);
    cr_assert(g, "%s", d.msg);
    mc_pipeline_opts po = {.passes = passes, .training = training, .verify_each = true};
    cr_assert(mc_run_pipeline(g, &po, &d), "%s", d.msg);
    return g;
}

static int64_t width(const mc_graph *g, const char *value) {
    return mc_val(g, mc_graph_find_value(g, value))->shape.d[1].c;
}

Test(attrs, gw_mode_defaults_to_the_compile_mode) {
    mc_graph *g = load_gw(false, "train", "infer-shapes");
    cr_assert_str_eq(mc_attr_str(mc_nod(g, 0), "mode"), "infer");
    cr_assert_str_eq(mc_attr_str(mc_nod(g, 1), "mode"), "train"); /* as written */
    cr_assert_eq(width(g, "w"), 1);
    cr_assert_eq(width(g, "v"), 4);
    mc_graph_free(g);
    g = load_gw(true, "infer", "infer-shapes");
    cr_assert_str_eq(mc_attr_str(mc_nod(g, 0), "mode"), "train");
    cr_assert_str_eq(mc_attr_str(mc_nod(g, 1), "mode"), "infer");
    cr_assert_eq(width(g, "w"), 4);
    cr_assert_eq(width(g, "v"), 1);
    mc_graph_free(g);
    g = load_gw(true, "infer", "infer-shapes,gw-specialize"); /* training: all broadcast */
    cr_assert_str_eq(mc_attr_str(mc_nod(g, 1), "mode"), "train");
    cr_assert_eq(width(g, "v"), 4);
    mc_graph_free(g);
    g = load_gw(false, "train", "infer-shapes,gw-specialize"); /* inference: base routes */
    for (int k = 0; k < g->norder; k++)
        cr_assert_eq(mc_nod(g, g->order[k])->op, MC_OP_MOE_TOPK_ROUTE);
    cr_assert_eq(width(g, "v"), 1);
    mc_graph_free(g);
}
