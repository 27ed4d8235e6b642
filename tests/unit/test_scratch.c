/* tests/unit/test_scratch.c: the memory plan reserves for each node exactly the scratch
 * its kernel's layout (backend/kernels/k_*_scratch.h) asks for at the node's max shapes,
 * and none for an op without MC_OPF_SCRATCH. Models are written in JSON with a symbol T
 * (max 32) so that the max shapes are what the plan must size. */
#include <criterion/criterion.h>
#include <string.h>

#include "frontend.h"
#include "ir.h"
#include "passes.h"
#include "scratch.h"

#include "kernels/k_fused_scratch.h"
#include "kernels/k_grad_std_scratch.h"
#include "kernels/k_moe_scratch.h"
#include "kernels/k_route_scratch.h"

enum { TMAX = 32, D = 16, F = 24, E = 4, K = 2 };

#define W(name, shape, seed)                                                                       \
    "{\"name\":\"" name "\",\"dtype\":\"float32\",\"shape\":" shape                                \
    ",\"init\":{\"dist\":\"normal\",\"std\":0.1,\"seed\":" seed "}}"

/* Router, TopKRoute, Dispatch, up projection, FusedDownCombine, and a residual Add. */
static const char MOE_MODEL[] =
    "{\"moec\":1,\"name\":\"m\",\"symbols\":{\"T\":{\"max\":32}},"
    "\"inputs\":[{\"name\":\"x\",\"dtype\":\"float32\",\"shape\":[\"T\",16]}],"
    "\"outputs\":[\"z\"],\"initializers\":[" W("wg", "[16,4]", "1") "," W(
        "w1", "[4,16,24]",
        "2") "," W("wdn", "[4,24,16]",
                   "3") "],\"nodes\":["
                        "{\"name\":\"gate\",\"op\":\"MatMul\",\"inputs\":[\"x\",\"wg\"],"
                        "\"outputs\":[\"logits\"]},"
                        "{\"name\":\"route\",\"op\":\"moe.TopKRoute\",\"inputs\":[\"logits\"],"
                        "\"outputs\":[\"expert\",\"weight\"],\"attrs\":{\"k\":2}},"
                        "{\"name\":\"disp\",\"op\":\"moe.Dispatch\",\"inputs\":[\"x\",\"expert\","
                        "\"weight\"],"
                        "\"outputs\":[\"rows\",\"off\",\"rtok\",\"rw\"],\"attrs\":{\"num_experts\":"
                        "4}},"
                        "{\"name\":\"up\",\"op\":\"moe.ExpertMatMul\",\"inputs\":[\"rows\",\"off\","
                        "\"w1\"],"
                        "\"outputs\":[\"h\"]},"
                        "{\"name\":\"down\",\"op\":\"moe.FusedDownCombine\","
                        "\"inputs\":[\"h\",\"off\",\"wdn\",\"rtok\",\"rw\",\"x\"],\"outputs\":["
                        "\"y\"]},"
                        "{\"name\":\"res\",\"op\":\"Add\",\"inputs\":[\"y\",\"x\"],\"outputs\":["
                        "\"z\"]}]}";

/* The norm gradients over x[T,3,8]: RMSNorm over the last axis (T*3 rows), LayerNorm
 * from axis 1 (T rows). */
static const char NORM_MODEL[] =
    "{\"moec\":1,\"name\":\"m\",\"symbols\":{\"T\":{\"max\":32}},\"inputs\":["
    "{\"name\":\"x\",\"dtype\":\"float32\",\"shape\":[\"T\",3,8]},"
    "{\"name\":\"c\",\"dtype\":\"float32\",\"shape\":[\"T\",3,8]}],"
    "\"outputs\":[\"gx\",\"gs\",\"lx\",\"ls\",\"lb\"],\"initializers\":[" W("s", "[8]", "1") "," W(
        "s2", "[3,8]",
        "2") "," W("b2", "[3,8]",
                   "3") "],\"nodes\":["
                        "{\"name\":\"rms\",\"op\":\"moe.RMSNormGrad\",\"inputs\":[\"c\",\"x\","
                        "\"s\"],"
                        "\"outputs\":[\"gx\",\"gs\"]},"
                        "{\"name\":\"ln\",\"op\":\"moe.LayerNormGrad\",\"inputs\":[\"c\",\"x\","
                        "\"s2\",\"b2\"],"
                        "\"outputs\":[\"lx\",\"ls\",\"lb\"],\"attrs\":{\"axis\":1}}]}";

static mc_graph *planned(const char *json, const char *passes) {
    mc_diag d;
    mc_diag_init(&d, "m.json");
    mc_graph *g = mc_load_model_from_memory(json, strlen(json), "m.json", NULL, NULL, &d);
    cr_assert(g, "%s", d.msg);
    mc_pipeline_opts po = {.passes = passes, .verify_each = true};
    cr_assert(mc_run_pipeline(g, &po, &d), "%s", d.msg);
    cr_assert(g->plan.valid);
    return g;
}

static int node_of(const mc_graph *g, mc_op op) {
    for (int k = 0; k < g->norder; k++)
        if (mc_nod(g, g->order[k])->op == op) return g->order[k];
    cr_assert_fail("no %s node left", mc_op_infos[op].name);
    return -1;
}

/* The node of op `op` has `want` > 0 bytes of scratch, with an arena offset. */
static void expect_scratch(const mc_graph *g, mc_op op, int64_t want) {
    int id = node_of(g, op);
    cr_expect_gt(want, 0, "%s: its layout is empty", mc_op_infos[op].name);
    cr_expect_eq(g->plan.scratch_bytes[id], want, "%s: planned %lld bytes, layout %lld",
                 mc_op_infos[op].name, (long long)g->plan.scratch_bytes[id], (long long)want);
    cr_expect_geq(g->plan.scratch_off[id], 0, "%s has no place in the arena", mc_op_infos[op].name);
}

/* Every node of an op without the flag: no bytes, no place. */
static void expect_none_unflagged(const mc_graph *g) {
    for (int k = 0; k < g->norder; k++) {
        const mc_node *n = mc_nod(g, g->order[k]);
        if (mc_op_infos[n->op].flags & MC_OPF_SCRATCH) continue;
        cr_expect_eq(g->plan.scratch_bytes[g->order[k]], 0, "%s", n->name);
        cr_expect_eq(g->plan.scratch_off[g->order[k]], -1, "%s", n->name);
    }
}

Test(scratch, routing_dispatch_and_fused_down_combine_get_their_layouts) {
    mc_graph *g = planned(MOE_MODEL, "infer-shapes,verify,plan-memory");
    int64_t N = TMAX * K; /* Dispatch's rows at the max */
    expect_scratch(g, MC_OP_MOE_TOPK_ROUTE, mk_topk_route_scratch_of(TMAX, E, K).bytes);
    expect_scratch(g, MC_OP_MOE_DISPATCH, mk_dispatch_scratch_of(E, K).bytes);
    expect_scratch(g, MC_OP_MOE_FUSED_DOWN_COMBINE,
                   mk_fused_down_combine_scratch_of(TMAX, N, D, false).bytes);
    cr_expect_eq(g->plan.scratch_bytes[node_of(g, MC_OP_ADD)], 0);
    expect_none_unflagged(g);
    mc_graph_free(g);
}

Test(scratch, the_fused_router_gets_its_layout) {
    mc_graph *g = planned(MOE_MODEL, "infer-shapes,verify,fuse-gate-dispatch,dce,plan-memory");
    expect_scratch(g, MC_OP_MOE_FUSED_TOPK_DISPATCH,
                   mk_fused_topk_dispatch_scratch_of(TMAX, E, K).bytes);
    expect_none_unflagged(g);
    mc_graph_free(g);
}

Test(scratch, norm_gradients_get_one_row_of_statistics_per_row) {
    mc_graph *g = planned(NORM_MODEL, "infer-shapes,verify,plan-memory");
    expect_scratch(g, MC_OP_MOE_RMS_NORM_GRAD, mk_norm_grad_scratch_of(TMAX * 3).bytes);
    expect_scratch(g, MC_OP_MOE_LAYER_NORM_GRAD, mk_norm_grad_scratch_of(TMAX).bytes);
    mc_graph_free(g);
}

/* The layouts round every array to 64 bytes and add them in order. */
Test(scratch, layouts_round_each_array_to_64_bytes) {
    mk_combine_scratch f32 = mk_combine_scratch_of(3, 5, 7, false);
    cr_expect_eq(f32.end, 0);
    cr_expect_eq(f32.rows, 64);   /* 8 * 4 = 32 bytes, rounded */
    cr_expect_eq(f32.acc, -1);    /* an f32 y needs no accumulators */
    cr_expect_eq(f32.bytes, 128); /* 8 * 5 = 40 bytes, rounded */
    mk_combine_scratch half = mk_combine_scratch_of(3, 5, 7, true);
    cr_expect_eq(half.acc, 128);
    cr_expect_eq(half.bytes, 256); /* 4 * 3 * 7 = 84 bytes, rounded */
}

/* No op without the flag has scratch, whatever its node holds: the table generated from
 * ops.def has no function for it (the node is never looked at). */
Test(scratch, ops_without_the_flag_never_get_scratch) {
    mc_graph *g = mc_graph_new("m");
    for (int op = 0; op < MC_NUM_OPS; op++) {
        if (mc_op_infos[op].flags & MC_OPF_SCRATCH) continue;
        mc_node n = {.op = (mc_op)op, .name = "n"};
        cr_expect_eq(mb_scratch_bytes(g, &n), 0, "%s", mc_op_infos[op].name);
    }
    mc_graph_free(g);
}
