/* The worked examples of ROUTING.md §6, reproduced by the reference interpreter, plus
 * routing edge cases. Expected values are the ones printed in ROUTING.md (4 decimals)
 * or counted by hand from its logits. */
#include "ir.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

static const float Z[6][4] = {{2.0f, 1.0f, 0.5f, -1.0f}, {0.1f, 0.2f, 0.3f, 0.4f},
                              {3.0f, 2.9f, -2.0f, 0.0f}, {1.0f, 1.0f, 1.0f, 1.0f},
                              {2.5f, -0.5f, 0.0f, 0.3f}, {0.0f, 2.0f, 1.9f, -3.0f}};

typedef struct {
    mc_graph *g;
    mc_tensor out[8];
    int nout;
} net;

static int param(net *n, const char *name, mc_dtype dt, int rank, const int64_t *dims,
                 const void *bytes) {
    int v = mc_graph_add_value(n->g, name, dt, MC_VK_PARAM);
    mc_value *val = mc_val(n->g, v);
    val->shape.rank = rank;
    size_t count = 1;
    for (int i = 0; i < rank; i++)
        val->shape.d[i] = mc_dim_const(dims[i]), count *= (size_t)dims[i];
    val->has_shape = true;
    val->nbytes = count * mc_dtype_size(dt);
    val->data = bytes;
    val->src = MC_SRC_INLINE;
    return v;
}

static int logits(net *n, const float *z, int64_t T, int64_t E) {
    int64_t dims[2] = {T, E};
    return param(n, "z", MC_DT_F32, 2, dims, z);
}

static mc_node *add(net *n, mc_op op, const int *in, int nin, int nout, int *outs) {
    for (int j = 0; j < nout; j++)
        outs[j] = mc_graph_add_value(n->g, mc_arena_printf(n->g->arena, "v%d", n->g->nvalues),
                                     MC_DT_F32, MC_VK_TEMP);
    return mc_nod(n->g, mc_graph_add_node(n->g, op, "node", in, nin, outs, nout));
}

/* Runs the graph; outputs are the values listed. */
static void run(net *n, const int *outs, int nout) {
    n->g->outputs = mc_arena_alloc(n->g->arena, sizeof(int) * (size_t)nout);
    memcpy(n->g->outputs, outs, sizeof(int) * (size_t)nout);
    n->g->noutputs = n->nout = nout;
    for (int k = 0; k < n->g->norder; k++)
        mc_node_fill_defaults(n->g, mc_nod(n->g, n->g->order[k]));
    mc_diag d;
    mc_diag_init(&d, "test");
    cr_assert(mc_infer_shapes(n->g, &d), "%s", d.msg);
    cr_assert(mc_verify(n->g, &d), "%s", d.msg);
    cr_assert(mc_interp_run(n->g, NULL, n->out, &d), "%s", d.msg);
}

static void done(net *n) {
    for (int j = 0; j < n->nout; j++)
        mc_tensor_free(&n->out[j]);
    mc_graph_free(n->g);
}

/* expert[T,K] / weight[T,K] -> dense combine[T,E] */
static void dense(const mc_tensor *ex, const mc_tensor *w, int64_t E, float *out) {
    int64_t T = ex->dims[0], K = ex->dims[1];
    memset(out, 0, sizeof(float) * (size_t)(T * E));
    for (int64_t t = 0; t < T; t++)
        for (int64_t r = 0; r < K; r++)
            if (ex->i[t * K + r] >= 0) out[t * E + ex->i[t * K + r]] += w->f[t * K + r];
}

static void expect_row(const float *dense_row, const float *want, int E, int row) {
    for (int e = 0; e < E; e++)
        cr_expect_float_eq(dense_row[e], want[e], 1e-4, "row %d expert %d: %f vs %f", row, e,
                           dense_row[e], want[e]);
}

static net topk(int k, int capacity, const char *score, int normalize, const char *order, int nout,
                int *outs) {
    net n = {mc_graph_new("t"), {{0}}, 0};
    int z = logits(&n, &Z[0][0], 6, 4);
    mc_node *r = add(&n, MC_OP_MOE_TOPK_ROUTE, &z, 1, nout, outs);
    mc_node_set_int(n.g, r, "k", k);
    mc_node_set_int(n.g, r, "capacity", capacity);
    mc_node_set_str(n.g, r, "score", score);
    mc_node_set_int(n.g, r, "normalize", normalize);
    mc_node_set_str(n.g, r, "order", order);
    return n;
}

Test(routing_examples, switch_capacity_2_position_order_lbl_and_zloss) {
    int outs[3], p, lbl, zl;
    net n = topk(1, 2, "softmax", 0, "position", 3, outs);
    int z = 0;
    add(&n, MC_OP_SOFTMAX, &z, 1, 1, &p);
    int lin[2] = {p, outs[2]};
    add(&n, MC_OP_MOE_LOAD_BALANCE_LOSS, lin, 2, 1, &lbl);
    add(&n, MC_OP_MOE_Z_LOSS, &z, 1, 1, &zl);
    int res[5] = {outs[0], outs[1], outs[2], lbl, zl};
    run(&n, res, 5);
    const int64_t want_e[6] = {0, 3, 0, -1, -1, 1}, want_c[6] = {0, 3, 0, 0, 0, 1};
    const float want_w[6] = {0.6095f, 0.2887f, 0.5098f, 0, 0, 0.4885f};
    for (int t = 0; t < 6; t++) {
        cr_expect_eq(n.out[0].i[t], want_e[t], "token %d", t);
        cr_expect_eq(n.out[2].i[t], want_c[t], "token %d", t);
        cr_expect_float_eq(n.out[1].f[t], want_w[t], 1e-4);
    }
    cr_expect_float_eq(n.out[3].f[0], 1.355914f, 1e-5);
    cr_expect_float_eq(n.out[4].f[0], 7.14598f, 1e-4);
    done(&n);
}

Test(routing_examples, switch_with_batch_priority_routing) {
    int outs[2];
    net n = topk(1, 2, "softmax", 0, "priority", 2, outs);
    run(&n, outs, 2);
    const int64_t want[6] = {0, 3, -1, -1, 0, 1}; /* tokens 4 and 0 win expert 0 */
    for (int t = 0; t < 6; t++)
        cr_expect_eq(n.out[0].i[t], want[t], "token %d", t);
    done(&n);
}

Test(routing_examples, gshard_top2_capacity_3_legacy_normalization) {
    int outs[2];
    net n = topk(2, 3, "softmax", 1, "position", 2, outs);
    run(&n, outs, 2);
    float c[24];
    dense(&n.out[0], &n.out[1], 4, c);
    const float want[6][4] = {{.7311f, .2689f, 0, 0}, {0, 0, .4750f, .5250f},
                              {.5250f, .4750f, 0, 0}, {.5f, 0, 0, 0},
                              {0, 0, 0, .0998f},      {0, .5250f, .4750f, 0}};
    for (int t = 0; t < 6; t++)
        expect_row(c + 4 * t, want[t], 4, t);
    cr_expect_eq(n.out[0].i[4 * 2 + 0], -1, "token 4 loses its first choice (expert 0 is full)");
    done(&n);
}

Test(routing_examples, st_moe_top2_raw_probs_capacity_3) {
    int outs[2];
    net n = topk(2, 3, "softmax", 0, "position", 2, outs);
    run(&n, outs, 2);
    float c[24];
    dense(&n.out[0], &n.out[1], 4, c);
    const float row0[4] = {.6095f, .2242f, 0, 0}, row3[4] = {.25f, 0, 0, 0};
    expect_row(c, row0, 4, 0);
    expect_row(c + 12, row3, 4, 3);
    done(&n);
}

Test(routing_examples, mixtral_softmax_over_selected) {
    int outs[2];
    net n = topk(2, 0, "softmax_selected", 0, "position", 2, outs);
    run(&n, outs, 2);
    float c[24];
    dense(&n.out[0], &n.out[1], 4, c);
    const float row3[4] = {.5f, .5f, 0, 0}, row4[4] = {.9002f, 0, 0, .0998f};
    expect_row(c + 12, row3, 4, 3);
    expect_row(c + 16, row4, 4, 4);
    cr_expect_eq(n.out[0].i[6], 0); /* the exact four-way tie picks experts 0 then 1 */
    cr_expect_eq(n.out[0].i[7], 1);
    done(&n);
}

Test(routing_examples, expert_choice_capacity_3) {
    net n = {mc_graph_new("t"), {{0}}, 0};
    int z = logits(&n, &Z[0][0], 6, 4), outs[2];
    mc_node *r = add(&n, MC_OP_MOE_EXPERT_CHOICE_ROUTE, &z, 1, 2, outs);
    mc_node_set_int(n.g, r, "capacity", 3);
    run(&n, outs, 2);
    const int64_t want[4][3] = {{4, 0, 2}, {5, 2, 3}, {5, 1, 3}, {1, 3, 4}};
    int per_token[6] = {0};
    for (int e = 0; e < 4; e++)
        for (int c = 0; c < 3; c++) {
            cr_expect_eq(n.out[0].i[e * 3 + c], want[e][c], "expert %d slot %d", e, c);
            per_token[n.out[0].i[e * 3 + c]]++;
        }
    const int want_per_token[6] = {1, 2, 2, 3, 2, 2};
    for (int t = 0; t < 6; t++)
        cr_expect_eq(per_token[t], want_per_token[t], "token %d", t);
    done(&n);
}

static int count_experts(const mc_tensor *ex, int64_t t) {
    int c = 0;
    for (int64_t r = 0; r < ex->dims[1]; r++)
        c += ex->i[t * ex->dims[1] + r] >= 0;
    return c;
}

Test(routing_examples, top_p_04_and_entropy_loss) {
    net n = {mc_graph_new("t"), {{0}}, 0};
    int z = logits(&n, &Z[0][0], 6, 4), outs[2], p, h;
    mc_node *r = add(&n, MC_OP_MOE_TOPP_ROUTE, &z, 1, 2, outs);
    mc_node_set_float(n.g, r, "p", 0.4);
    add(&n, MC_OP_SOFTMAX, &z, 1, 1, &p);
    add(&n, MC_OP_MOE_ENTROPY_LOSS, &p, 1, 1, &h);
    int res[3] = {outs[0], outs[1], h};
    run(&n, res, 3);
    const int want[6] = {1, 2, 1, 2, 1, 1};
    for (int t = 0; t < 6; t++)
        cr_expect_eq(count_experts(&n.out[0], t), want[t], "token %d", t);
    cr_expect_eq(n.out[0].i[3 * 4 + 0], 0); /* the tie row takes experts 0, 1 */
    cr_expect_eq(n.out[0].i[3 * 4 + 1], 1);
    cr_expect_float_eq(n.out[2].f[0], 1.033643f, 1e-5);
    done(&n);
}

Test(routing_examples, top_p_boundary_inclusive_vs_strict) {
    /* probs exactly [0.5, 0.25, 0.25, ~0] */
    static const float zb[4] = {0.69314718f, 0.0f, 0.0f, -100.0f};
    for (int inclusive = 0; inclusive <= 1; inclusive++) {
        net n = {mc_graph_new("t"), {{0}}, 0};
        int z = logits(&n, zb, 1, 4), outs[2];
        mc_node *r = add(&n, MC_OP_MOE_TOPP_ROUTE, &z, 1, 2, outs);
        mc_node_set_float(n.g, r, "p", 0.5);
        mc_node_set_int(n.g, r, "inclusive", inclusive);
        run(&n, outs, 2);
        cr_expect_eq(count_experts(&n.out[0], 0), inclusive ? 1 : 2, "inclusive=%d", inclusive);
        done(&n);
    }
}

Test(routing_examples, deepseekmoe_top2_and_sequence_balance_loss) {
    int outs[3], p, l;
    net n = topk(2, 0, "softmax", 0, "position", 3, outs);
    int z = 0;
    add(&n, MC_OP_SOFTMAX, &z, 1, 1, &p);
    int lin[2] = {p, outs[2]};
    mc_node *ln = add(&n, MC_OP_MOE_LOAD_BALANCE_LOSS, lin, 2, 1, &l);
    mc_node_set_str(n.g, ln, "scale", "E_over_K");
    int res[3] = {outs[0], outs[1], l};
    run(&n, res, 3);
    float c[24];
    dense(&n.out[0], &n.out[1], 4, c);
    const float row0[4] = {.6095f, .2242f, 0, 0};
    expect_row(c, row0, 4, 0);
    cr_expect_float_eq(n.out[2].f[0], 1.128272f, 1e-5);
    done(&n);
}

Test(routing_examples, deepseek_v3_sigmoid_bias_groups) {
    static const float bias[4] = {0, 0, 0.3f, 0};
    int64_t bd[1] = {4};
    int outs[2];
    net n = topk(2, 0, "sigmoid", 1, "position", 2, outs);
    int b = param(&n, "bias", MC_DT_F32, 1, bd, bias);
    mc_node *r = mc_nod(n.g, n.g->order[0]);
    mc_node_set_inputs(n.g, n.g->order[0], (const int[]){0, b}, 2);
    mc_node_set_int(n.g, r, "groups", 2);
    mc_node_set_int(n.g, r, "topk_groups", 1);
    mc_node_set_float(n.g, r, "scale", 2.5);
    run(&n, outs, 2);
    float c[24];
    dense(&n.out[0], &n.out[1], 4, c);
    const float row0[4] = {1.3661f, 1.1339f, 0, 0}, row3[4] = {0, 0, 1.25f, 1.25f};
    expect_row(c, row0, 4, 0);
    expect_row(c + 12, row3, 4, 3);
    done(&n);
}

/* The node's mode decides, not the graph's: the graph stays an inference graph. */
Test(routing_examples, gw_moe_broadcast_in_training_only) {
    for (int training = 0; training <= 1; training++) {
        net n = {mc_graph_new("t"), {{0}}, 0};
        int z = logits(&n, &Z[0][0], 6, 4), outs[2];
        mc_node *r = add(&n, MC_OP_MOE_GW_ROUTE, &z, 1, 2, outs);
        mc_node_set_str(n.g, r, "mode", training ? "train" : "infer");
        mc_node_set_int(n.g, r, "k", 1);
        mc_node_set_int(n.g, r, "capacity", 2);
        mc_node_set_float(n.g, r, "threshold", 1.3);
        mc_node_set_int(n.g, r, "max_broadcast", 1);
        run(&n, outs, 2);
        float c[24];
        dense(&n.out[0], &n.out[1], 4, c);
        const float row1[4] = {.2138f, .2363f, .2612f, .2887f}, zero[4] = {0},
                    top1[4] = {0, 0, 0, .2887f};
        cr_expect_eq(n.out[0].dims[1], training ? 4 : 1);
        expect_row(c + 4, training ? row1 : top1, 4, 1); /* token 1 (H = 1.3800) is broadcast */
        expect_row(c + 12, zero, 4, 3); /* token 3 is uncertain, over the limit, and dropped */
        const float row0[4] = {.6095f, 0, 0, 0};
        expect_row(c, row0, 4, 0); /* certain tokens keep their top-1 */
        done(&n);
    }
}

/* ---- edge cases ---- */

Test(routing_edges, all_tokens_to_one_expert_and_an_idle_expert) {
    static const float z[3][3] = {{5, 0, 0}, {4, 1, 0}, {6, 0, 1}};
    net n = {mc_graph_new("t"), {{0}}, 0};
    int zi = logits(&n, &z[0][0], 3, 3), outs[2], d[4];
    mc_node *r = add(&n, MC_OP_MOE_TOPK_ROUTE, &zi, 1, 2, outs);
    mc_node_set_int(n.g, r, "k", 1);
    int64_t xd[2] = {3, 2};
    static const float x[6] = {1, 2, 3, 4, 5, 6};
    int xv = param(&n, "x", MC_DT_F32, 2, xd, x);
    int din[3] = {xv, outs[0], outs[1]};
    mc_node *dn = add(&n, MC_OP_MOE_DISPATCH, din, 3, 4, d);
    mc_node_set_int(n.g, dn, "num_experts", 3);
    run(&n, d, 4);
    const int64_t want_off[4] = {0, 3, 3, 3}; /* expert 0 takes all, 1 and 2 none */
    for (int e = 0; e < 4; e++)
        cr_expect_eq(n.out[1].i[e], want_off[e]);
    for (int t = 0; t < 3; t++)
        cr_expect_eq(n.out[2].i[t], t);
    cr_expect_float_eq(n.out[0].f[2 * 2 + 1], 6.0f, 0);
    done(&n);
}

Test(routing_edges, k_equals_e_lists_every_expert_by_rank) {
    int outs[2];
    net n = topk(4, 0, "softmax", 0, "position", 2, outs);
    run(&n, outs, 2);
    const int64_t row2[4] = {0, 1, 3, 2}; /* 3.0, 2.9, 0.0, -2.0 */
    for (int r = 0; r < 4; r++)
        cr_expect_eq(n.out[0].i[2 * 4 + r], row2[r]);
    float sum = 0;
    for (int r = 0; r < 4; r++)
        sum += n.out[1].f[2 * 4 + r];
    cr_expect_float_eq(sum, 1.0f, 1e-6);
    done(&n);
}

Test(routing_edges, nan_logit_is_never_preferred) {
    static const float z[1][3] = {{NAN, -5.0f, -6.0f}};
    net n = {mc_graph_new("t"), {{0}}, 0};
    int zi = logits(&n, &z[0][0], 1, 3), outs[2];
    mc_node *r = add(&n, MC_OP_MOE_TOPK_ROUTE, &zi, 1, 2, outs);
    mc_node_set_int(n.g, r, "k", 2);
    mc_node_set_str(n.g, r, "score", "softmax_selected");
    run(&n, outs, 2);
    cr_expect_eq(n.out[0].i[0], 1);
    cr_expect_eq(n.out[0].i[1], 2);
    done(&n);
}

Test(moe_ops, dispatch_expertmatmul_combine_by_hand) {
    /* T=2, D=2, E=2, k=1: token 0 -> expert 1 (w .5), token 1 -> expert 0 (w 2). */
    static const int32_t ex[2] = {1, 0};
    static const float w[2] = {0.5f, 2.0f}, x[4] = {1, 2, 3, 4};
    static const float W[2][2][2] = {{{1, 0}, {0, 1}}, {{2, 1}, {0, 1}}};
    net n = {mc_graph_new("t"), {{0}}, 0};
    int64_t d2[2] = {2, 2}, d21[2] = {2, 1}, d3[3] = {2, 2, 2};
    int xv = param(&n, "x", MC_DT_F32, 2, d2, x), ev = param(&n, "e", MC_DT_I32, 2, d21, ex);
    int wv = param(&n, "w", MC_DT_F32, 2, d21, w), Wv = param(&n, "W", MC_DT_F32, 3, d3, W);
    int d[4], o, y;
    int din[3] = {xv, ev, wv};
    mc_node_set_int(n.g, add(&n, MC_OP_MOE_DISPATCH, din, 3, 4, d), "num_experts", 2);
    int min[3] = {d[0], d[1], Wv};
    add(&n, MC_OP_MOE_EXPERT_MATMUL, min, 3, 1, &o);
    int cin[5] = {o, d[2], d[3], d[1], xv};
    add(&n, MC_OP_MOE_COMBINE, cin, 5, 1, &y);
    run(&n, &y, 1);
    /* token 0: 0.5 * [1,2]@[[2,1],[0,1]] = 0.5*[2,3]; token 1: 2 * [3,4]@I = [6,8] */
    const float want[4] = {1.0f, 1.5f, 6.0f, 8.0f};
    for (int i = 0; i < 4; i++)
        cr_expect_float_eq(n.out[0].f[i], want[i], 1e-6);
    done(&n);
}
