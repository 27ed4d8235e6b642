/* Unit tests for the text and Graphviz dumps (ir/printer.c, ir/dotdump.c). Graphs are
 * built with the ir.h API and shapes set by hand, so these test the printer alone; the
 * expected strings are written from the format in docs/ir.md. */
#include "ir.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

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

static int value(mc_graph *g, const char *name, mc_dtype dt, mc_value_kind kind,
                 const char *shape) {
    int id = mc_graph_add_value(g, name, dt, kind);
    if (shape) {
        mc_val(g, id)->shape = shp(g, shape);
        mc_val(g, id)->has_shape = true;
    }
    return id;
}

static void push(mc_graph *g, int **arr, int *n, int id) {
    int *a = mc_arena_alloc(g->arena, sizeof(int) * (size_t)(*n + 1));
    if (*n) memcpy(a, *arr, sizeof(int) * (size_t)*n);
    a[(*n)++] = id;
    *arr = a;
}

static int input(mc_graph *g, const char *name, const char *shape) {
    int id = value(g, name, MC_DT_F32, MC_VK_INPUT, shape);
    push(g, &g->inputs, &g->ninputs, id);
    return id;
}

static void output(mc_graph *g, int id) {
    push(g, &g->outputs, &g->noutputs, id);
    mc_val(g, id)->is_output = true;
}

/* An initializer with inline bytes (kind PARAM, or CONST with src FOLDED). */
static int data_value(mc_graph *g, const char *name, mc_dtype dt, mc_value_kind kind,
                      const char *shape, const void *bytes, size_t nbytes) {
    int id = value(g, name, dt, kind, shape);
    mc_value *v = mc_val(g, id);
    void *copy = mc_arena_alloc(g->arena, nbytes ? nbytes : 1);
    memcpy(copy, bytes, nbytes);
    v->data = copy;
    v->nbytes = nbytes;
    v->src = kind == MC_VK_CONST ? MC_SRC_FOLDED : MC_SRC_INLINE;
    return id;
}

static int node(mc_graph *g, mc_op op, const char *name, const int *in, int nin, const int *out,
                int nout) {
    int id = mc_graph_add_node(g, op, name, in, nin, out, nout);
    mc_node_fill_defaults(g, mc_nod(g, id));
    return id;
}

static char *text_of(const mc_graph *g, bool dot) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    if (dot)
        mc_print_dot(f, g);
    else
        mc_print_graph(f, g);
    fclose(f);
    return buf;
}

static char *node_text(const mc_graph *g, int id) {
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    mc_print_node(f, g, mc_nod(g, id));
    fclose(f);
    return buf;
}

/* The block of DESIGN.md's example: inputs, the three kinds of initializer sources,
 * a two-output routing node with every attribute. */
static mc_graph *mixtral_block(bool with_shapes) {
    mc_graph *g = mc_graph_new("mixtral_block");
    mc_graph_add_symbol(g, "T", 4096);
    int x = input(g, "x", "T,768");
    int wg = value(g, "w_gate", MC_DT_F32, MC_VK_PARAM, "768,8");
    mc_val(g, wg)->src = MC_SRC_INIT;
    mc_val(g, wg)->init = (mc_init_recipe){.dist = "normal", .mean = 0, .std = 0.02, .seed = 7};
    float eps = 1e-5f;
    data_value(g, "eps", MC_DT_F32, MC_VK_PARAM, "", &eps, sizeof eps);
    int w = value(g, "w", MC_DT_F32, MC_VK_PARAM, "8,16");
    mc_val(g, w)->src = MC_SRC_FILE;
    mc_val(g, w)->file_key = "key";
    const char *s = with_shapes ? "T,8" : NULL, *s2 = with_shapes ? "T,2" : NULL;
    int logits = value(g, "logits", MC_DT_F32, MC_VK_TEMP, s);
    int ew[2] = {value(g, "expert", MC_DT_I32, MC_VK_TEMP, s2),
                 value(g, "weight", MC_DT_F32, MC_VK_TEMP, s2)};
    int mm[2] = {x, wg};
    node(g, MC_OP_MATMUL, "gate", mm, 2, &logits, 1);
    int r = node(g, MC_OP_MOE_TOPK_ROUTE, "route", &logits, 1, ew, 2);
    mc_node_set_int(g, mc_nod(g, r), "k", 2);
    mc_node_set_int(g, mc_nod(g, r), "normalize", 1);
    output(g, ew[0]);
    output(g, ew[1]);
    return g;
}

Test(print, graph_with_every_declaration_kind) {
    mc_graph *g = mixtral_block(true);
    char *got = text_of(g, false);
    cr_expect_str_eq(got,
                     "graph mixtral_block mode=infer\n"
                     "  symbol T max=4096\n"
                     "  input %x:f32[T,768]\n"
                     "  param %w_gate:f32[768,8] init normal(mean=0, std=0.02, seed=7)\n"
                     "  param %eps:f32[] data [1e-05]\n"
                     "  param %w:f32[8,16] file \"key\"\n"
                     "  %logits:f32[T,8] = MatMul(%x, %w_gate)  # gate\n"
                     "  %expert:i32[T,2], %weight:f32[T,2] = moe.TopKRoute(%logits) {k=2, "
                     "score=\"softmax\", normalize=1, capacity=0, order=\"position\", scale=1, "
                     "groups=1, topk_groups=0}  # route\n"
                     "  output %expert\n"
                     "  output %weight\n");
    free(got);
    mc_graph_free(g);
}

Test(print, temps_before_shape_inference_print_a_question_mark) {
    mc_graph *g = mixtral_block(false);
    char *got = node_text(g, g->order[0]);
    cr_expect_str_eq(got, "  %logits:? = MatMul(%x, %w_gate)  # gate\n");
    free(got);
    mc_graph_free(g);
}

Test(print, train_mode_and_omitted_optional_input) {
    mc_graph *g = mc_graph_new("m");
    g->training = true;
    int a = input(g, "a", "2,3"), b = input(g, "b", "3,4");
    int y = value(g, "y", MC_DT_F32, MC_VK_TEMP, "2,4");
    int in[3] = {a, b, -1};
    node(g, MC_OP_GEMM, "", in, 3, &y, 1);
    output(g, y);
    char *got = text_of(g, false);
    /* no name: no "# name" comment */
    cr_expect_str_eq(got, "graph m mode=train\n"
                          "  input %a:f32[2,3]\n"
                          "  input %b:f32[3,4]\n"
                          "  %y:f32[2,4] = Gemm(%a, %b, _) {alpha=1, beta=1, transA=0, transB=0}\n"
                          "  output %y\n");
    free(got);
    mc_graph_free(g);
}

Test(print, attribute_kinds_and_float_precision) {
    mc_graph *g = mc_graph_new("m");
    int x = input(g, "x", "2,3");
    int y = value(g, "y", MC_DT_F32, MC_VK_TEMP, "3,2");
    int id = node(g, MC_OP_TRANSPOSE, "t", &x, 1, &y, 1);
    mc_node *n = mc_nod(g, id);
    int64_t perm[2] = {1, 0};
    mc_node_set_ints(g, n, "perm", perm, 2);
    /* Not in Transpose's schema, but the printer shows whatever a node carries. */
    double fl[3] = {0.5, 1.0 / 3.0, -2e-7};
    mc_node_set_floats(g, n, "weights", fl, 3);
    mc_node_set_float(g, n, "third", 1.0 / 3.0);
    mc_node_set_str(g, n, "note", "say \"hi\"\\now");
    char *got = node_text(g, id);
    cr_expect_str_eq(got, "  %y:f32[3,2] = Transpose(%x) {perm=[1, 0], weights=[0.5, 0.333333333, "
                          "-2e-07], third=0.333333333, note=\"say \\\"hi\\\"\\\\now\"}  # t\n");
    free(got);
    mc_graph_free(g);
}

Test(print, data_up_to_eight_elements_else_a_count) {
    mc_graph *g = mc_graph_new("m");
    int64_t i8[8] = {-1, 0, 1, 2, 3, 4, 5, 1099511627776};
    float f9[9] = {0};
    uint8_t flags[3] = {1, 0, 1};
    int32_t none[1] = {0};
    uint16_t halves[2] = {0x3c00, 0xc000}; /* 1.0 and -2.0 in IEEE half */
    data_value(g, "i", MC_DT_I64, MC_VK_PARAM, "8", i8, sizeof i8);
    data_value(g, "f", MC_DT_F32, MC_VK_PARAM, "3,3", f9, sizeof f9);
    data_value(g, "b", MC_DT_BOOL, MC_VK_PARAM, "3", flags, sizeof flags);
    data_value(g, "e", MC_DT_I32, MC_VK_PARAM, "0", none, 0);
    data_value(g, "h", MC_DT_F16, MC_VK_PARAM, "2", halves, sizeof halves);
    float folded[4] = {0.1f, 2.5f, -3.0f, 1e30f};
    data_value(g, "c", MC_DT_F32, MC_VK_CONST, "4", folded, sizeof folded);
    int gone = data_value(g, "gone", MC_DT_F32, MC_VK_PARAM, "4", folded, sizeof folded);
    mc_val(g, gone)->dead = true;
    char *got = text_of(g, false);
    cr_expect_str_eq(got, "graph m mode=infer\n"
                          "  param %i:i64[8] data [-1, 0, 1, 2, 3, 4, 5, 1099511627776]\n"
                          "  param %f:f32[3,3] data <9 elements>\n"
                          "  param %b:bool[3] data [1, 0, 1]\n"
                          "  param %e:i32[0] data []\n"
                          "  param %h:f16[2] data [1, -2]\n"
                          "  const %c:f32[4] data [0.1, 2.5, -3, 1e+30]\n");
    free(got);
    mc_graph_free(g);
}

Test(print, init_recipes) {
    mc_graph *g = mc_graph_new("m");
    const char *dists[3] = {"uniform", "zeros", "ones"};
    for (int i = 0; i < 3; i++) {
        int v = value(g, dists[i], MC_DT_F32, MC_VK_PARAM, "2");
        mc_val(g, v)->src = MC_SRC_INIT;
        mc_val(g, v)->init =
            (mc_init_recipe){.dist = dists[i], .low = -0.25, .high = 0.75, .seed = 42};
    }
    char *got = text_of(g, false);
    cr_expect_str_eq(got, "graph m mode=infer\n"
                          "  param %uniform:f32[2] init uniform(low=-0.25, high=0.75, seed=42)\n"
                          "  param %zeros:f32[2] init zeros\n"
                          "  param %ones:f32[2] init ones\n");
    free(got);
    mc_graph_free(g);
}

Test(print, removed_nodes_and_values_are_not_shown) {
    mc_graph *g = mc_graph_new("m");
    int x = input(g, "x", "4");
    int a = value(g, "a", MC_DT_F32, MC_VK_TEMP, "4"),
        b = value(g, "b", MC_DT_F32, MC_VK_TEMP, "4");
    node(g, MC_OP_RELU, "r", &x, 1, &a, 1);
    int e = node(g, MC_OP_EXP, "e", &x, 1, &b, 1);
    output(g, a);
    mc_graph_remove_node(g, e);
    mc_val(g, b)->dead = true;
    char *got = text_of(g, false);
    cr_expect_str_eq(got, "graph m mode=infer\n"
                          "  input %x:f32[4]\n"
                          "  %a:f32[4] = Relu(%x)  # r\n"
                          "  output %a\n");
    free(got);
    mc_graph_free(g);
}

Test(dot, boxes_ellipses_and_labelled_edges) {
    mc_graph *g = mc_graph_new("m");
    mc_graph_add_symbol(g, "T", 8);
    int x = input(g, "x", "T,2");
    float w[4] = {1, 2, 3, 4};
    int wv = data_value(g, "w", MC_DT_F32, MC_VK_PARAM, "2,2", w, sizeof w);
    int h = value(g, "h", MC_DT_F32, MC_VK_TEMP, "T,2"),
        y = value(g, "y", MC_DT_F32, MC_VK_TEMP, NULL);
    int mm[2] = {x, wv};
    node(g, MC_OP_MATMUL, "proj", mm, 2, &h, 1);
    node(g, MC_OP_RELU, "act\"1\"", &h, 1, &y, 1);
    output(g, y);
    char *got = text_of(g, true);
    cr_expect_str_eq(got, "digraph \"m\" {\n"
                          "  rankdir=TB;\n"
                          "  node [fontname=\"monospace\"];\n"
                          "  v0 [shape=ellipse, label=\"input x\"];\n"
                          "  v1 [shape=ellipse, label=\"param w\"];\n"
                          "  n0 [shape=box, label=\"MatMul\\nproj\"];\n"
                          "  v0 -> n0 [label=\"x\\nf32[T,2]\"];\n"
                          "  v1 -> n0 [label=\"w\\nf32[2,2]\"];\n"
                          "  n1 [shape=box, label=\"Relu\\nact\\\"1\\\"\"];\n"
                          "  n0 -> n1 [label=\"h\\nf32[T,2]\"];\n"
                          "  out0 [shape=ellipse, label=\"output y\"];\n"
                          "  n1 -> out0 [label=\"y\\n?\"];\n"
                          "}\n");
    char *again = text_of(g, true);
    cr_expect_str_eq(got, again, "the dot dump is deterministic");
    free(got);
    free(again);
    mc_graph_free(g);
}
