/* quantize-weights: stores the weights of the expert and dense FFN products in the
 * format --weight-dtype names (f16, bf16, int8 with a scale per output channel, int4
 * with a scale per group of K rows and optionally zero points), so that the code reads
 * 2, 4 or about 7 times fewer bytes per weight; activations stay f32 and the products
 * sum in f32 (the kernels widen each weight in registers, docs/backend.md). Without
 * --weight-dtype it changes nothing.
 *
 * A param is narrowed when it is f32 and every node that reads it reads it as an FFN
 * weight: of moe.ExpertMatMul, moe.GatherMatMul, moe.FusedUp (up and gate, of experts or
 * of a dense or shared FFN), moe.FusedDownCombine, or the MatMul / Gemm that takes a
 * dense FFN's hidden activation (FusedUp's output) down. Routers (whose logits decide
 * the routing; inside moe.Fused*Dispatch after fusion), heads, embeddings, norms, biases
 * and anything else stay f32. The pass runs after fusion, whose ops say which product
 * is an FFN's; a pipeline without the fusion passes narrows only expert products. f16 and
 * bf16 round each value to nearest even, as the interpreter's conversion; int8 and int4
 * pick each group's scale by least squares (ir/quant.c).
 * An initializer's "weight_dtype" (docs/format.md) overrides both the option and the
 * rule for its param: "f32" keeps it, another format narrows it (a router, a head) as long
 * as only products read it as their weight, else it is an error naming the reader.
 * Training updates f32 params: --weight-dtype is inference only (the CLI refuses it),
 * and a training graph keeps its params f32 whatever "weight_dtype" says.
 * needs: shapes    keeps: shapes, verify    breaks: plan */
#include "passes.h"

/* Whether value v is the hidden activation of a dense FFN (FusedUp's output). */
static bool is_ffn_hidden(const mc_graph *g, int v) {
    int p = mc_val(g, v)->producer;
    return p >= 0 && mc_nod(g, p)->op == MC_OP_MOE_FUSED_UP;
}

/* A product's weight slot but a router's, and for MatMul / Gemm only a dense FFN's down
 * product. */
static bool is_weight_use(const mc_graph *g, const mc_value *w, mc_use u) {
    const mc_node *n = mc_nod(g, u.node);
    bool router = n->op == MC_OP_MOE_FUSED_TOPK_DISPATCH ||
                  n->op == MC_OP_MOE_FUSED_TOPP_DISPATCH ||
                  n->op == MC_OP_MOE_FUSED_EXPERT_CHOICE_DISPATCH;
    if (router || !mc_weight_slot(n->op, u.slot) || w->shape.rank < 2) return false;
    return (n->op != MC_OP_MATMUL && n->op != MC_OP_GEMM) || is_ffn_hidden(g, n->in[0]);
}

static bool narrowable(const mc_graph *g, const mc_value *v) {
    if (v->dead || v->kind != MC_VK_PARAM || v->is_output || v->dt != MC_DT_F32 || !v->data ||
        v->nuses == 0)
        return false;
    for (int u = 0; u < v->nuses; u++)
        if (!is_weight_use(g, v, v->uses[u])) return false;
    return true;
}

/* A "weight_dtype" other than f32 needs every reader to take v as a product's weight. */
static bool check_override(const mc_graph *g, const mc_value *v, mc_diag *d) {
    for (int u = 0; u < v->nuses; u++) {
        const mc_node *n = mc_nod(g, v->uses[u].node);
        if (!mc_weight_slot(n->op, v->uses[u].slot) || v->shape.rank < 2 || v->is_output)
            return mc_error(d, "",
                            "param '%s' has weight_dtype \"%s\", but node '%s' reads it as input "
                            "%d of %s, which takes it as f32",
                            v->name, mc_dtype_name(v->weight_dtype.dt), n->name, v->uses[u].slot,
                            mc_op_infos[n->op].name);
    }
    return true;
}

/* The format v is stored in: its "weight_dtype", else --weight-dtype where the rule
 * picks it; dt MC_DT_F32 leaves it. */
static bool target_of(const mc_graph *g, const mc_pass_ctx *cx, const mc_value *v,
                      mc_weight_format *f) {
    *f = (mc_weight_format){.dt = MC_DT_F32};
    if (v->dead || v->kind != MC_VK_PARAM || v->dt != MC_DT_F32 || !v->data) return true;
    if (!v->has_weight_dtype) {
        if (cx->weight_dtype.dt != MC_DT_F32 && narrowable(g, v)) *f = cx->weight_dtype;
        return true;
    }
    if (v->weight_dtype.dt != MC_DT_F32 && !check_override(g, v, cx->d)) return false;
    *f = v->weight_dtype;
    return true;
}

/* Stores v in format f; its readers' contracts are checked again (a quantized weight
 * needs f32 matrix activations, and Gemm without transposes). */
static bool store_as(mc_graph *g, mc_pass_ctx *cx, mc_value *v, const mc_weight_format *f) {
    const char *misfit = mc_weight_format_misfit(g, v, f);
    if (misfit)
        return mc_error(cx->d, "", "param '%s' cannot be stored as %s: %s", v->name,
                        mc_weight_format_str(g, f), misfit);
    if (mc_dtype_is_quant(f->dt))
        mc_value_quantize(g, v, f);
    else
        mc_value_convert(g, v, f->dt);
    v->narrowed_from_f32 = true;
    for (int u = 0; u < v->nuses; u++)
        if (!mc_infer_node(g, v->uses[u].node, cx->d)) return false;
    return true;
}

bool mc_pass_quantize_weights(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    if (cx->training) {
        if (cx->weight_dtype.dt == MC_DT_F32) return true;
        return mc_error(cx->d, "",
                        "--weight-dtype applies to inference; training updates f32 "
                        "params");
    }
    for (int i = 0; i < g->nvalues; i++) {
        mc_value *v = mc_val(g, i);
        mc_weight_format f;
        if (!target_of(g, cx, v, &f)) return false;
        if (f.dt == MC_DT_F32) continue;
        if (!store_as(g, cx, v, &f)) return false;
        *changed = true;
    }
    return true;
}
