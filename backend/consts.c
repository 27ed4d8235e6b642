/* backend/consts.c: what the module holds besides code. Constants and (unless
 * --weights=external) params become read-only globals aligned for vector loads, GEMM B
 * operands already packed into panels; the model info and descriptor of
 * runtime/moert.h become constant structs. */
#include "internal.h"
#include "moert.h"

#include <stdlib.h>
#include <string.h>

LLVMValueRef mb_cstr(mb_ctx *c, const char *s) {
    LLVMValueRef gv =
        mb_const_global(c, LLVMConstStringInContext2(c->cx, s, strlen(s), 0), ".str", 1);
    LLVMSetUnnamedAddress(gv, LLVMGlobalUnnamedAddr);
    return gv;
}

LLVMValueRef mb_const_global(mb_ctx *c, LLVMValueRef init, const char *name, unsigned align) {
    LLVMValueRef gv = LLVMAddGlobal(c->mod, LLVMTypeOf(init), name);
    LLVMSetInitializer(gv, init);
    LLVMSetGlobalConstant(gv, 1);
    LLVMSetLinkage(gv, LLVMPrivateLinkage);
    LLVMSetAlignment(gv, align);
    return gv;
}

static bool is_used(const mc_graph *g, int v) {
    return !mc_val(g, v)->dead && mc_graph_count_uses(g, v) > 0;
}

static LLVMValueRef embed_value(mb_ctx *c, int v) {
    const mc_value *x = mc_val(c->g, v);
    int nr = c->panel_nr[v];
    const char *name = mc_arena_printf(c->g->arena, "%s.w.%s", c->g->name, x->name);
    if (!nr)
        return mb_const_global(c, LLVMConstStringInContext2(c->cx, x->data, x->nbytes, 1), name,
                               64);
    const mc_shape *s = &x->shape;
    int64_t K = s->d[s->rank - 2].c, N = s->d[s->rank - 1].c, lead = 1;
    for (int i = 0; i < s->rank - 2; i++)
        lead *= s->d[i].c;
    size_t floats = (size_t)(lead * ((N + nr - 1) / nr) * K * nr);
    float *packed = malloc(floats * sizeof(float));
    if (!packed) mc_oom(floats * sizeof(float));
    moert_pack_panels(x->data, lead, K, N, nr, packed); /* the layout _create uses too */
    LLVMValueRef init =
        LLVMConstStringInContext2(c->cx, (const char *)packed, floats * sizeof(float), 1);
    free(packed);
    return mb_const_global(c, init, name, 64);
}

bool mb_emit_params(mb_ctx *c) {
    const mc_graph *g = c->g;
    c->param_global = mc_arena_alloc(g->arena, sizeof(LLVMValueRef) * (size_t)g->nvalues);
    c->param_index = mc_arena_alloc(g->arena, sizeof(int) * (size_t)g->nvalues);
    c->initial_global = mc_arena_alloc(g->arena, sizeof(LLVMValueRef) * (size_t)g->nvalues);
    c->panel_nr = mc_arena_alloc(g->arena, sizeof(int) * (size_t)g->nvalues);
    for (int v = 0; v < g->nvalues; v++) {
        const mc_value *x = mc_val(g, v);
        c->param_index[v] = -1;
        if (!is_used(g, v) || (x->kind != MC_VK_PARAM && x->kind != MC_VK_CONST)) continue;
        if (!x->data)
            return mc_error(c->d, "", "internal error: initializer '%s' has no data", x->name);
        if (x->kind == MC_VK_PARAM) c->param_index[v] = c->nparams++;
        c->panel_nr[v] = mb_param_panel_nr(g, v, c->t);
        bool embedded = x->kind == MC_VK_CONST || !c->o->external_weights;
        /* Training reads params through the model's writable copies; the embedded
         * bytes only start them (moert_model_desc.initial). */
        if (!embedded) continue;
        if (x->kind == MC_VK_PARAM && c->g->training)
            c->initial_global[v] = embed_value(c, v);
        else
            c->param_global[v] = embed_value(c, v);
    }
    return true;
}

/* ---- the model info (moert_model_info and friends) ---- */

static LLVMValueRef dims_array(mb_ctx *c, const mc_shape *s) {
    LLVMValueRef dims[MC_MAX_RANK];
    for (int i = 0; i < s->rank; i++) {
        LLVMValueRef f[2] = {mb_i64(c, s->d[i].c), mb_i64(c, s->d[i].sym)};
        dims[i] = LLVMConstNamedStruct(c->dim_ty, f, 2);
    }
    if (s->rank == 0) return LLVMConstNull(c->ptr);
    return mb_const_global(c, LLVMConstArray2(c->dim_ty, dims, (uint64_t)s->rank), ".dims", 8);
}

static LLVMValueRef tensor_info(mb_ctx *c, int v) {
    const mc_value *x = mc_val(c->g, v);
    LLVMValueRef f[4] = {mb_cstr(c, x->name), mb_i64(c, x->dt), mb_i64(c, x->shape.rank),
                         dims_array(c, &x->shape)};
    return LLVMConstNamedStruct(c->tinfo_ty, f, 4);
}

static LLVMValueRef tensor_infos(mb_ctx *c, const int *ids, int n) {
    if (n == 0) return LLVMConstNull(c->ptr);
    LLVMValueRef *e = mc_arena_alloc(c->g->arena, sizeof(LLVMValueRef) * (size_t)n);
    for (int i = 0; i < n; i++)
        e[i] = tensor_info(c, ids[i]);
    return mb_const_global(c, LLVMConstArray2(c->tinfo_ty, e, (uint64_t)n), ".tensors", 8);
}

static LLVMValueRef symbol_infos(mb_ctx *c) {
    const mc_graph *g = c->g;
    if (g->nsyms == 0) return LLVMConstNull(c->ptr);
    LLVMValueRef e[MC_MAX_SYMS];
    for (int i = 0; i < g->nsyms; i++) {
        LLVMValueRef f[2] = {mb_cstr(c, g->syms[i].name), mb_i64(c, g->syms[i].max)};
        e[i] = LLVMConstNamedStruct(c->sinfo_ty, f, 2);
    }
    return mb_const_global(c, LLVMConstArray2(c->sinfo_ty, e, (uint64_t)g->nsyms), ".syms", 8);
}

/* Params in info order, and the panel width each is stored with. */
static int *param_ids(mb_ctx *c) {
    int *ids = mc_arena_alloc(c->g->arena, sizeof(int) * (size_t)(c->nparams + 1));
    for (int v = 0; v < c->g->nvalues; v++)
        if (c->param_index[v] >= 0) ids[c->param_index[v]] = v;
    return ids;
}

static LLVMValueRef param_descs(mb_ctx *c, const int *ids) {
    if (c->nparams == 0) return LLVMConstNull(c->ptr);
    LLVMValueRef *e = mc_arena_alloc(c->g->arena, sizeof(LLVMValueRef) * (size_t)c->nparams);
    for (int i = 0; i < c->nparams; i++)
        e[i] = mb_i64(c, c->panel_nr[ids[i]]);
    return mb_const_global(c, LLVMConstArray2(c->i64, e, (uint64_t)c->nparams), ".pdesc", 8);
}

/* Training with embedded weights: where each param's starting bytes are. */
static LLVMValueRef initial_table(mb_ctx *c, const int *ids) {
    if (!c->g->training || c->o->external_weights || c->nparams == 0) return LLVMConstNull(c->ptr);
    LLVMValueRef *e = mc_arena_alloc(c->g->arena, sizeof(LLVMValueRef) * (size_t)c->nparams);
    for (int i = 0; i < c->nparams; i++)
        e[i] = c->initial_global[ids[i]];
    return mb_const_global(c, LLVMConstArray2(c->ptr, e, (uint64_t)c->nparams), ".initial", 8);
}

void mb_emit_info(mb_ctx *c) {
    const mc_graph *g = c->g;
    int *pids = param_ids(c);
    LLVMValueRef f[12] = {mb_cstr(c, g->name),
                          mb_i64(c, g->nsyms),
                          symbol_infos(c),
                          mb_i64(c, g->ninputs),
                          tensor_infos(c, g->inputs, g->ninputs),
                          mb_i64(c, g->noutputs),
                          tensor_infos(c, g->outputs, g->noutputs),
                          mb_i64(c, c->nparams),
                          tensor_infos(c, pids, c->nparams),
                          mb_i64(c, c->g->plan.peak),
                          mb_i64(c, c->o->external_weights),
                          mb_i64(c, g->training)};
    LLVMValueRef info = mb_const_global(c, LLVMConstNamedStruct(c->info_ty, f, 12),
                                        mc_arena_printf(g->arena, "%s.info", g->name), 8);
    c->info = info;
    LLVMValueRef d[4] = {info, param_descs(c, pids), c->run_args, initial_table(c, pids)};
    c->desc = mb_const_global(c, LLVMConstNamedStruct(c->desc_ty, d, 4),
                              mc_arena_printf(g->arena, "%s.desc", g->name), 8);
}
