/* Whole-model gradients: the autodiff pass, run in the f64 interpreter (moec_core64),
 * against central finite differences of the model's loss with respect to elements of
 * every param, on MoE models covering each routing kind and loss (docs/autodiff.md).
 *
 * Params are stored as f32 bytes, so steps are powers of two that keep x +- h exact; a
 * difference is only compared when no routing decision changed between x - h and x + h
 * (the loss is piecewise smooth), and every param must get enough compared elements
 * for the check to count. */
#include "frontend.h"
#include "passes.h"

#include <criterion/criterion.h>
#include <math.h>
#include <string.h>

enum { T = 6, CHECKS_PER_PARAM = 5 };

static const char *const FWD = "infer-shapes,verify,expand-moe,gw-specialize";
static const char *const BWD = "infer-shapes,verify,expand-moe,gw-specialize,autodiff";

static mc_graph *load(const char *json, const char *passes) {
    mc_diag d;
    mc_diag_init(&d, "m.json");
    mc_load_opts lo = {.training = true};
    mc_graph *g = mc_load_model_from_memory(json, strlen(json), "m.json", NULL, &lo, &d);
    cr_assert(g, "%s", d.msg);
    mc_pipeline_opts po = {
        .passes = passes,
        .training = true,
        .verify_each = true,
        .train = {
            .lr = -1, .momentum = -1, .weight_decay = -1, .beta1 = -1, .beta2 = -1, .eps = -1}};
    cr_assert(mc_run_pipeline(g, &po, &d), "%s", d.msg);
    return g;
}

/* Inputs: x[T, D] and (when the model has them) int64 labels[T] or a target[T, D]. */
static void make_inputs(const mc_graph *g, mc_tensor *ins, unsigned seed) {
    mc_diag d;
    mc_diag_init(&d, "inputs");
    for (int i = 0; i < g->ninputs; i++) {
        const mc_value *v = mc_val(g, g->inputs[i]);
        int64_t dims[MC_MAX_RANK];
        for (int k = 0; k < v->shape.rank; k++)
            dims[k] = mc_dim_is_const(v->shape.d[k]) ? v->shape.d[k].c : T * v->shape.d[k].c;
        cr_assert(mc_tensor_alloc(&ins[i], v->dt, v->shape.rank, dims, &d, v->name));
        for (int64_t e = 0; e < ins[i].numel; e++) {
            seed = seed * 1103515245u + 12345u;
            double u = (double)(seed >> 8) / (double)(1u << 24);
            if (ins[i].f)
                ins[i].f[e] = 2 * u - 1;
            else
                ins[i].i[e] = (int64_t)(u * 3);
        }
    }
}

static void free_tensors(mc_tensor *t, int n) {
    for (int i = 0; i < n; i++)
        mc_tensor_free(&t[i]);
}

static int output_named(const mc_graph *g, const char *name) {
    for (int i = 0; i < g->noutputs; i++)
        if (strcmp(mc_val(g, g->outputs[i])->name, name) == 0) return i;
    return -1;
}

/* The loss (sum of the scalar outputs) and the routing decision (the int outputs). */
static double forward(mc_graph *g, const mc_tensor *ins, int64_t *decision, int64_t cap) {
    mc_tensor out[8];
    mc_diag d;
    mc_diag_init(&d, "fwd");
    cr_assert(mc_interp_run(g, ins, out, &d), "%s", d.msg);
    double loss = 0;
    int64_t n = 0;
    for (int i = 0; i < g->noutputs; i++) {
        if (out[i].f && out[i].rank == 0) loss += out[i].f[0];
        for (int64_t e = 0; !out[i].f && e < out[i].numel && n < cap; e++)
            decision[n++] = out[i].i[e];
    }
    free_tensors(out, g->noutputs);
    return loss;
}

static float *param_bytes(mc_graph *g, int v) {
    mc_value *p = mc_val(g, v);
    if (!p->rw) {
        p->rw = mc_arena_alloc(g->arena, p->nbytes);
        memcpy(p->rw, p->data, p->nbytes);
        p->data = p->rw;
    }
    return p->rw;
}

/* d loss / d param[e] by central differences; NAN when a decision changed. */
static double finite_difference(mc_graph *fwd, int v, int64_t e, const mc_tensor *ins) {
    float *w = param_bytes(fwd, v), x = w[e];
    double h = ldexp(1.0, -12), loss[2];
    int64_t dec[2][256];
    for (int s = 0; s < 2; s++) {
        w[e] = (float)(x + (s ? h : -h));
        memset(dec[s], 0, sizeof dec[s]);
        loss[s] = forward(fwd, ins, dec[s], 256);
    }
    w[e] = x;
    if (memcmp(dec[0], dec[1], sizeof dec[0]) != 0) return NAN;
    return (loss[1] - loss[0]) / ((double)(float)(x + h) - (double)(float)(x - h));
}

static void check_model(const char *json) {
    mc_graph *fwd = load(json, FWD), *bwd = load(json, BWD);
    mc_tensor ins[4], grads[32];
    make_inputs(fwd, ins, 7);
    mc_diag d;
    mc_diag_init(&d, "bwd");
    cr_assert(mc_interp_run(bwd, ins, grads, &d), "%s", d.msg);
    int params = 0;
    for (int v = 0; v < fwd->nvalues; v++) {
        const mc_value *p = mc_val(fwd, v);
        if (p->dead || p->kind != MC_VK_PARAM || p->dt != MC_DT_F32) continue;
        /* A param without a gradient output (one that only steers routing decisions)
         * must indeed not move the loss. */
        int o = output_named(bwd, mc_arena_printf(bwd->arena, "grad.%s", p->name));
        int64_t n = (int64_t)(p->nbytes / sizeof(float)), compared = 0;
        for (int64_t k = 0; k < 4 * CHECKS_PER_PARAM && compared < CHECKS_PER_PARAM; k++) {
            int64_t e = (k * 7919 + 13) % n;
            double fd = finite_difference(fwd, v, e, ins), got = o >= 0 ? grads[o].f[e] : 0;
            if (isnan(fd)) continue;
            compared++;
            cr_expect(fabs(got - fd) <= 1e-4 * fmax(1.0, fabs(fd)),
                      "d loss / d %s[%lld]: autodiff %.9g, finite difference %.9g", p->name,
                      (long long)e, got, fd);
        }
        cr_expect(compared >= (n < CHECKS_PER_PARAM ? n : CHECKS_PER_PARAM) - 1,
                  "param %s: only %lld elements away from routing changes", p->name,
                  (long long)compared);
        params++;
    }
    cr_expect(params >= 3, "the model has %d params", params);
    free_tensors(grads, bwd->noutputs);
    free_tensors(ins, fwd->ninputs);
    mc_graph_free(fwd);
    mc_graph_free(bwd);
}

#define W(name, shape, seed)                                                                       \
    "{\"name\":\"" name "\",\"dtype\":\"float32\",\"shape\":" shape                                \
    ",\"init\":{\"dist\":\"normal\",\"std\":0.5,\"seed\":" #seed "}}"
#define NODE(name, op, ins, outs, attrs)                                                           \
    "{\"name\":\"" name "\",\"op\":\"" op "\",\"inputs\":" ins ",\"outputs\":" outs                \
    ",\"attrs\":{" attrs "}}"
#define HEAD(inputs)                                                                               \
    "{\"moec\":1,\"name\":\"m\",\"symbols\":{\"T\":{\"max\":8}},\"inputs\":[" inputs "],"
#define X_IN      "{\"name\":\"x\",\"dtype\":\"float32\",\"shape\":[\"T\",6]}"
#define LABELS_IN "{\"name\":\"labels\",\"dtype\":\"int64\",\"shape\":[\"T\"]}"

/* RMSNorm, router, top-2 over the selected logits, SwiGLU experts, residual, head,
 * cross-entropy + load-balance + z-losses. */
Test(autodiff, mixtral_block_with_aux_losses) {
    check_model(HEAD(
        X_IN
        "," LABELS_IN) "\"outputs\":[\"ce\",\"lbl\",\"zl\",\"expert\"],"
                       "\"initializers\":[" W("norm", "[6]", 1) "," W("wr", "[6,4]", 2) "," W("wg", "[4,6,5]", 3) "," W(
                           "wu", "[4,6,5]",
                           4) "," W("wd", "[4,5,6]",
                                    5) "," W("wc", "[6,3]",
                                             6) "],\"nodes\":[" NODE("n", "RMSNormalization",
                                                                     "[\"x\",\"norm\"]", "[\"h\"]",
                                                                     "") "," NODE("r", "MatMul",
                                                                                  "[\"h\",\"wr\"]",
                                                                                  "[\"z\"]",
                                                                                  "") "," NODE("rt", "moe.TopKRoute", "[\"z\"]", "[\"expert\",\"w\"]", "\"k\":2,\"score\":\"softmax_selected\"") "," NODE("p", "Softmax", "[\"z\"]", "[\"probs\"]", "") "," NODE("d",
                                                                                                                                                                                                                                                                 "moe.Dispatch", "[\"h\",\"expert\",\"w\"]", "[\"rows\",\"off\",\"tok\",\"rw\"]", "\"num_experts\":4") "," NODE("g",
                                                                                                                                                                                                                                                                                                                                                                                "moe.ExpertMatMul",
                                                                                                                                                                                                                                                                                                                                                                                "[\"rows\",\"off\",\"wg\"]", "[\"gg\"]", "") "," NODE("u",
                                                                                                                                                                                                                                                                                                                                                                                                                                      "moe.ExpertMatMul",
                                                                                                                                                                                                                                                                                                                                                                                                                                      "[\"rows\",\"off\",\"wu\"]",
                                                                                                                                                                                                                                                                                                                                                                                                                                      "[\"uu\"]",
                                                                                                                                                                                                                                                                                                                                                                                                                                      "") "," NODE("s", "moe.Silu", "[\"gg\"]", "[\"sg\"]", "") "," NODE("m",
                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                         "Mul",
                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                         "[\"sg\",\"uu\"]",
                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                         "[\"hh\"]", "") "," NODE("dn", "moe.ExpertMatMul", "[\"hh\",\"off\",\"wd\"]",
                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                  "[\"oo\"]", "") "," NODE("c",
                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                           "moe.Combine", "[\"oo\",\"tok\",\"rw\",\"off\",\"h\"]", "[\"y\"]", "") "," NODE("res",
                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                           "Add",
                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                           "[\"x\",\"y\"]",
                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                           "[\"xr\"]",
                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                           "") "," NODE("cls",
                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                        "MatMul", "[\"xr\",\"wc\"]", "[\"logits\"]", "") "," NODE("ce",
                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                  "SoftmaxCrossEntropyLoss", "[\"logits\",\"labels\"]", "[\"ce\"]", "") "," NODE("lb", "moe.LoadBalanceLoss", "[\"probs\",\"expert\"]", "[\"lbl\"]", "\"coef\":0.1") "," NODE("zz",
                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                              "moe.ZLoss", "[\"z\"]", "[\"zl\"]",
                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                              "\"coef\":0.01") "]}");
}

/* GW-MoE in training: low threshold, so tokens are broadcast to every expert. */
Test(autodiff, gw_route_broadcast_in_training) {
    check_model(
        HEAD(
            X_IN
            "," LABELS_IN) "\"outputs\":[\"ce\",\"expert\"],"
                           "\"initializers\":[" W("wr", "[6,4]", 2) "," W("wu", "[4,6,5]", 4) "," W("wd", "[4,5,6]", 5) "," W("wc", "[6,3]", 6) "],\"nodes\":[" NODE(
                               "r", "MatMul", "[\"x\",\"wr\"]", "[\"z\"]",
                               "") "," NODE("rt", "moe.GWRoute", "[\"z\"]", "[\"expert\",\"w\"]",
                                            "\"k\":1,\"threshold\":0.9,\"max_"
                                            "broadcast\":3") "," NODE("d", "moe.Dispatch",
                                                                      "[\"x\","
                                                                      "\"expert\","
                                                                      "\"w\"]",
                                                                      "[\"rows\","
                                                                      "\"off\",\"tok\","
                                                                      "\"rw\"]",
                                                                      "\"num_experts\":"
                                                                      "4") "," NODE("u",
                                                                                    "moe"
                                                                                    ".Ex"
                                                                                    "per"
                                                                                    "tMa"
                                                                                    "tMu"
                                                                                    "l",
                                                                                    "[\""
                                                                                    "row"
                                                                                    "s\""
                                                                                    ",\""
                                                                                    "off"
                                                                                    "\","
                                                                                    "\"w"
                                                                                    "u\""
                                                                                    "]",
                                                                                    "[\""
                                                                                    "uu"
                                                                                    "\""
                                                                                    "]",
                                                                                    "") "," NODE("a",
                                                                                                 "T"
                                                                                                 "a"
                                                                                                 "n"
                                                                                                 "h",
                                                                                                 "["
                                                                                                 "\"uu\"]",
                                                                                                 "["
                                                                                                 "\"hh\"]",
                                                                                                 "") "," NODE("dn",
                                                                                                              "moe.ExpertMatMul",
                                                                                                              "[\"hh\",\"off\",\"wd\"]",
                                                                                                              "[\"oo\"]",
                                                                                                              "") "," NODE("c",
                                                                                                                           "moe.Combine",
                                                                                                                           "[\"oo\",\"tok\",\"rw\",\"off\",\"x\"]",
                                                                                                                           "[\"y\"]",
                                                                                                                           "") "," NODE("cls",
                                                                                                                                        "MatMul",
                                                                                                                                        "[\"y\",\"wc\"]",
                                                                                                                                        "[\"logits\"]",
                                                                                                                                        "") "," NODE("ce",
                                                                                                                                                     "SoftmaxCrossEntropyLoss",
                                                                                                                                                     "[\"logits\",\"labels\"]",
                                                                                                                                                     "[\"ce\"]",
                                                                                                                                                     "") "]}");
}

/* Switch-style top-1 with a capacity bound, sigmoid scores with a bias and groups,
 * GELU experts, and an MSE regression loss. */
Test(autodiff, capacity_sigmoid_bias_mse) {
    check_model(HEAD(
        X_IN
        ",{\"name\":\"target\",\"dtype\":\"float32\",\"shape\":[\"T\",6]}") "\"outputs\":["
                                                                            "\"mse\","
                                                                            "\"expert\"],"
                                                                            "\"initializers\":"
                                                                            "[" W("wr", "[6,4]", 2) "," W(
                                                                                "bias", "[4]",
                                                                                3) "," W("wu",
                                                                                         "[4,6,5]",
                                                                                         4) "," W("wd",
                                                                                                  "[4,5,"
                                                                                                  "6]",
                                                                                                  5) "],"
                                                                                                     "\""
                                                                                                     "no"
                                                                                                     "de"
                                                                                                     "s"
                                                                                                     "\""
                                                                                                     ":"
                                                                                                     "[" NODE("r",
                                                                                                              "MatMul",
                                                                                                              "[\"x\",\"wr\"]",
                                                                                                              "[\"z\"]", "") "," NODE("rt",
                                                                                                                                      "moe.TopKRoute",
                                                                                                                                      "[\"z\",\"bias\"]", "[\"expert\",\"w\"]", "\"k\":1,\"score\":\"sigmoid\",\"normalize\":1,\"capacity\":2,\"groups\":2,\"topk_groups\":1") "," NODE("d", "moe.Dispatch", "[\"x\",\"expert\",\"w\"]", "[\"rows\",\"off\",\"tok\",\"rw\"]", "\"num_experts\":4") "," NODE("u", "moe.ExpertMatMul", "[\"rows\",\"off\",\"wu\"]", "[\"uu\"]", "") "," NODE("a",
                                                                                                                                                                                                                                                                                                                                                                                                                                                                                           "Gelu", "[\"uu\"]", "[\"hh\"]", "") "," NODE("dn",
                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                                        "moe.ExpertMatMul", "[\"hh\",\"off\",\"wd\"]", "[\"oo\"]", "") "," NODE("c", "moe.Combine", "[\"oo\",\"tok\",\"rw\",\"off\",\"x\"]", "[\"y\"]", "") "," NODE("mse", "MSELoss", "[\"y\",\"target\"]", "[\"mse\"]", "") "]}");
}

/* Names and shapes that once fooled the pass: params named like its own values ("c",
 * "c.1"), a trained MSE target, a ReduceMean that is the identity (no axes,
 * noop_with_empty_axes), a loss written as a sum of losses, and Pow at a zero base. */
Test(autodiff, names_targets_identity_reductions_summed_loss) {
    check_model(HEAD(
        X_IN) "\"outputs\":[\"total\"],"
              "\"initializers\":[" W("c", "[6]", 1) "," W("c.1", "[6]", 2) "," W(
                  "target", "[6]",
                  3) ","
                     "{\"name\":\"e\",\"dtype\":\"float32\",\"shape\":[6],\"data\":[1.5,2,"
                     "1.25,1.75,2.5,1.125]},"
                     "{\"name\":\"w\",\"dtype\":\"float32\",\"shape\":[6],\"data\":[1,2,3,"
                     "1,2,3]}],"
                     "\"nodes\":[" NODE("m1", "Mul", "[\"x\",\"c\"]", "[\"a\"]", "") "," NODE("m2", "Mul", "[\"a\",\"c.1\"]", "[\"b\"]", "") "," NODE(
                         "r", "Relu",
                         "[\"b\"]", "[\"rb\"]",
                         "") "," NODE("p", "Pow", "[\"rb\",\"e\"]", "[\"pb\"]",
                                      "") "," NODE("rm", "ReduceMean", "[\"pb\"]", "[\"id\"]",
                                                   "\"noop_with_empty_axes\":"
                                                   "1") "," NODE("tt", "Add",
                                                                 "[\"x\","
                                                                 "\"target\""
                                                                 "]",
                                                                 "[\"tx\"]",
                                                                 "") "," NODE("l1", "MSELoss",
                                                                              "[\"id\",\"tx\"]",
                                                                              "[\"l1\"]",
                                                                              "") "," NODE("ww",
                                                                                           "Mul",
                                                                                           "[\"x\","
                                                                                           "\"w\"]",
                                                                                           "[\"wx\""
                                                                                           "]",
                                                                                           "") "," NODE("l2",
                                                                                                        "MSELoss",
                                                                                                        "[\"b\",\"wx\"]",
                                                                                                        "[\"l2\"]",
                                                                                                        "\"reduction\":\"sum\"") "," NODE("t",
                                                                                                                                          "Add",
                                                                                                                                          "[\"l1\",\"l2\"]",
                                                                                                                                          "[\"total\"]",
                                                                                                                                          "") "]}");
}

/* Abs, Reciprocal and Erf (composed gradients: sign, -1/x^2, 2/sqrt(pi) e^(-x^2)) on an
 * affine map h = x w + b: mse(Erf(h) * Reciprocal(Abs(h) + one), target). */
static const char
    *const
        ABS_RECIPROCAL_ERF = HEAD(X_IN ",{\"name\":\"target\",\"dtype\":\"float32\",\"shape\":["
                                       "\"T\",5]}") "\"outputs\":[\"mse\"],\"initializers\":[" W("w", "[6,5]", 6) "," W(
            "b", "[5]",
            7) ",{\"name\":\"one\",\"dtype\":\"float32\",\"shape\":[1],\"data\":[1]}],\"nodes\":"
               "[" NODE("xw", "MatMul", "[\"x\",\"w\"]", "[\"xw\"]",
                        "") "," NODE("h", "Add", "[\"xw\",\"b\"]", "[\"h\"]",
                                     "") "," NODE("a", "Abs", "[\"h\"]", "[\"a\"]",
                                                  "") "," NODE("s", "Add", "[\"a\",\"one\"]",
                                                               "[\"s\"]",
                                                               "") "," NODE("r", "Reciprocal",
                                                                            "[\"s\"]", "[\"r\"]",
                                                                            "") "," NODE("e", "Erf",
                                                                                         "[\"h\"]",
                                                                                         "[\"e\"]",
                                                                                         "") "," NODE("p",
                                                                                                      "Mul",
                                                                                                      "[\"e\",\"r\"]",
                                                                                                      "[\"p\"]",
                                                                                                      "") "," NODE("mse",
                                                                                                                   "MSELoss",
                                                                                                                   "[\"p\",\"target\"]",
                                                                                                                   "[\"mse\"]",
                                                                                                                   "") "]}";

Test(autodiff, abs_reciprocal_erf) {
    check_model(ABS_RECIPROCAL_ERF);
}
