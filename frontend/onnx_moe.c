/* frontend/onnx_moe.c: ONNX Runtime's contrib op com.microsoft.MoE, into moe.MoE. */
#include "onnx_internal.h"

#include <string.h>

/* ---- com.microsoft.MoE, ONNX Runtime's contrib op, into moe.MoE ----
 * As ONNX Runtime 1.30's CPU kernel computes it (docs/format.md): softmax over all
 * experts of router_probs (logits), top k, weights renormalized with
 * normalize_routing_weights; per expert h = x fc1[e]^T, act, y_e = a fc2[e]^T
 * (nn.Linear's [out, in] layouts); gelu is the tanh form; swiglu (swiglu_fusion=1) is
 * silu(g) * l with g, l fc1's even and odd rows; fc3 gates as act(x fc1^T) * (x fc3^T).
 * The weights become moe.MoE's [E, in, out] initializers, transposed once here. */

static const Onnx__AttributeProto *find_attr(const Onnx__NodeProto *n, const char *name) {
    for (size_t k = 0; k < n->n_attribute; k++)
        if (strcmp(onnx_str(n->attribute[k]->name), name) == 0) return n->attribute[k];
    return NULL;
}

static int64_t attr_int(const Onnx__NodeProto *n, const char *name, int64_t dflt) {
    const Onnx__AttributeProto *a = find_attr(n, name);
    return a ? a->i : dflt;
}

/* Input k of n when given (not omitted). */
static const char *input_at(const Onnx__NodeProto *n, size_t k) {
    return k < n->n_input && *onnx_str(n->input[k]) ? n->input[k] : NULL;
}

/* Rows row0, row0 + step, ... (`rows` of them) of each expert's [out, in] matrix w, as
 * a new [E, in, rows] initializer `name`. */
static void expert_weight(onnx_ctx *c, const mc_st_tensor *w, int64_t row0, int64_t step,
                          int64_t rows, const char *name) {
    int64_t E = w->dims[0], out = w->dims[1], in = w->dims[2];
    size_t el = mc_dtype_size(w->dt);
    unsigned char *dst = mc_arena_alloc(c->arena, (size_t)(E * in * rows) * el + 1);
    const unsigned char *src = w->data;
    for (int64_t e = 0; e < E; e++)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t k = 0; k < in; k++)
                memcpy(dst + ((e * in + k) * rows + r) * el,
                       src + ((e * out + row0 + r * step) * in + k) * el, el);
    mc_st_tensor t = {.name = name,
                      .dt = w->dt,
                      .rank = 3,
                      .dims = {E, in, rows},
                      .data = dst,
                      .nbytes = (size_t)(E * in * rows) * el};
    cJSON *decl = cJSON_CreateObject(), *shape = cJSON_CreateArray();
    for (int d = 0; d < 3; d++)
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t.dims[d]));
    cJSON_AddStringToObject(decl, "name", name);
    cJSON_AddStringToObject(decl, "dtype", mc_dtype_json_name(w->dt));
    cJSON_AddItemToObject(decl, "shape", shape);
    cJSON_AddItemToArray(c->inits, decl);
    onnx_add_table_entry(c, &t);
}

/* An expert weight input: an initializer of rank 3. */
static const mc_st_tensor *expert_input(onnx_ctx *c, const Onnx__NodeProto *n, size_t k,
                                        const char *role, const char *what) {
    const char *name = input_at(n, k);
    const mc_st_tensor *t = name ? mc_st_find(&c->table, name) : NULL;
    if (!t || t->rank != 3)
        mc_error(c->d, NULL, "%s: %s must be an initializer [experts, out, in]", what, role);
    return t && t->rank == 3 ? t : NULL;
}

/* What moec's moe.MoE cannot express, as an error; NULL when the node translates. */
static const char *moe_unsupported(onnx_ctx *c, const Onnx__NodeProto *n, bool swiglu) {
    static const char *const biases[] = {"fc1_experts_bias", "fc2_experts_bias",
                                         "fc3_experts_bias"};
    for (int b = 0; b < 3; b++)
        if (input_at(n, (size_t)(3 + 2 * b)))
            return mc_arena_printf(c->arena, "%s: moe.MoE has no expert biases", biases[b]);
    if (attr_int(n, "use_sparse_mixer", 0)) return "use_sparse_mixer=1 is not supported";
    if (!swiglu) return NULL;
    if (attr_int(n, "swiglu_fusion", 0) != 1)
        return "swiglu needs swiglu_fusion=1 (gate and linear rows interleaved in fc1)";
    const Onnx__AttributeProto *alpha = find_attr(n, "activation_alpha");
    const Onnx__AttributeProto *beta = find_attr(n, "activation_beta");
    if (find_attr(n, "swiglu_limit") || (alpha && alpha->f != 1.0f) || (beta && beta->f != 0.0f))
        return "swiglu takes activation_alpha=1, activation_beta=0 and no swiglu_limit here";
    if (input_at(n, 6)) return "swiglu with fc3_experts_weights is not supported";
    return NULL;
}

cJSON *mc_onnx_moe_node(onnx_ctx *c, const Onnx__NodeProto *n, size_t i) {
    const char *what = onnx_node_what(c, n, i);
    const Onnx__AttributeProto *act = find_attr(n, "activation_type");
    const char *kind =
        act ? mc_arena_printf(c->arena, "%.*s", (int)act->s.len, (const char *)act->s.data)
            : "relu";
    static const char *const from[] = {"relu", "gelu", "silu", "swiglu"};
    static const char *const to[] = {"relu", "gelu_tanh", "silu", "silu"};
    int a = 0;
    while (a < 4 && strcmp(kind, from[a]) != 0)
        a++;
    const char *bad = a == 4 ? mc_arena_printf(c->arena,
                                               "activation_type '%s' is not supported; "
                                               "moec takes relu, gelu, silu and swiglu",
                                               kind)
                             : moe_unsupported(c, n, a == 3);
    if (bad || n->n_input < 5 || n->n_output != 1) {
        mc_error(c->d, NULL, "%s: %s", what,
                 bad ? bad : "MoE takes at least 5 inputs and 1 output");
        return NULL;
    }
    const mc_st_tensor *fc1 = expert_input(c, n, 2, "fc1_experts_weights", what);
    const mc_st_tensor *fc2 = fc1 ? expert_input(c, n, 4, "fc2_experts_weights", what) : NULL;
    const mc_st_tensor *fc3 =
        fc2 && input_at(n, 6) ? expert_input(c, n, 6, "fc3_experts_weights", what) : NULL;
    if (!fc2 || (input_at(n, 6) && !fc3)) return NULL;
    int64_t inter = fc2->dims[2], f = a == 3 ? 2 : 1;
    if (fc1->dims[0] != fc2->dims[0] || fc1->dims[1] != f * inter || fc1->dims[2] != fc2->dims[1] ||
        (fc3 &&
         (fc3->dims[0] != fc1->dims[0] || fc3->dims[1] != inter || fc3->dims[2] != fc1->dims[2]))) {
        mc_error(c->d, NULL,
                 "%s: expert weight shapes disagree: fc1 [E, %s, H], fc2 [E, H, I], fc3 [E, I, H]",
                 what, f == 2 ? "2I" : "I");
        return NULL;
    }
    const char *base = mc_arena_printf(c->arena, "%s.%zu", *onnx_str(n->name) ? n->name : "MoE", i);
    const char *up = mc_arena_printf(c->arena, "%s.w_up", base);
    const char *down = mc_arena_printf(c->arena, "%s.w_down", base);
    const char *gate = mc_arena_printf(c->arena, "%s.w_gate", base);
    if (a == 3) { /* swiglu: gate on the even rows, linear on the odd ones */
        expert_weight(c, fc1, 0, 2, inter, gate);
        expert_weight(c, fc1, 1, 2, inter, up);
    } else if (fc3) { /* act(x fc1) * (x fc3) */
        expert_weight(c, fc1, 0, 1, inter, gate);
        expert_weight(c, fc3, 0, 1, inter, up);
    } else {
        expert_weight(c, fc1, 0, 1, inter, up);
    }
    expert_weight(c, fc2, 0, 1, fc2->dims[1], down);
    cJSON *j = cJSON_CreateObject(), *ins = cJSON_CreateArray(), *attrs = cJSON_CreateObject();
    if (*onnx_str(n->name)) cJSON_AddStringToObject(j, "name", n->name);
    cJSON_AddStringToObject(j, "op", "moe.MoE");
    const char *names[5] = {n->input[0], n->input[1], up, down, gate};
    for (int k = 0; k < (a == 3 || fc3 ? 5 : 4); k++)
        cJSON_AddItemToArray(ins, cJSON_CreateString(onnx_str(names[k])));
    cJSON_AddItemToObject(j, "inputs", ins);
    cJSON_AddItemToObject(j, "outputs", onnx_name_list(n->output, 1));
    cJSON_AddNumberToObject(attrs, "k", (double)attr_int(n, "k", 1));
    cJSON_AddStringToObject(attrs, "activation_type", to[a]);
    cJSON_AddNumberToObject(attrs, "normalize_routing_weights",
                            (double)(attr_int(n, "normalize_routing_weights", 0) == 1));
    cJSON_AddItemToObject(j, "attrs", attrs);
    return j;
}
