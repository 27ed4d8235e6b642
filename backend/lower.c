/* backend/lower.c: <name>_run_args, the body of every generated run function.
 *
 * It checks its arguments (each a status with a message, never an abort), then calls
 * one kernel per node in graph order. A kernel call passes arrays of mk_tensor
 * (kernels/mk.h) built from constants except the buffer pointers and the dims that
 * depend on a symbol; at -O2/-O3 the kernels are inlined and specialised to them. */
#include "internal.h"

#include <string.h>

typedef struct {
    mb_ctx *c;
    LLVMValueRef fn, m, syms, ins, outs;
    LLVMValueRef arena, params;     /* loaded from the model object */
    LLVMValueRef symv[MC_MAX_SYMS]; /* the symbols' values */
    LLVMValueRef *vptr;             /* per value id: its buffer, once known */
    LLVMBuilderRef alloca_b;        /* allocas go to the entry block */
    LLVMBasicBlockRef body;         /* where the entry block continues */
    LLVMTypeRef kernel_ty, fail_ty;
    LLVMValueRef fail_fn;
} lowering;

enum { T_P, T_DT, T_RANK, T_DIMS, T_LAYOUT, T_NR, T_GROUP, T_ZERO };

static LLVMValueRef load_at(lowering *L, LLVMTypeRef ty, LLVMValueRef base, int64_t idx) {
    mb_ctx *c = L->c;
    LLVMValueRef at = LLVMBuildGEP2(c->b, ty, base, (LLVMValueRef[]){mb_i64(c, idx)}, 1, "");
    return LLVMBuildLoad2(c->b, ty, at, "");
}

/* Returns `status` from the function after recording a message, when `bad` holds. */
static void fail_if(lowering *L, LLVMValueRef bad, int status, const char *fmt, LLVMValueRef *args,
                    int nargs) {
    mb_ctx *c = L->c;
    LLVMBasicBlockRef fail = LLVMAppendBasicBlockInContext(c->cx, L->fn, "fail");
    LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(c->cx, L->fn, "ok");
    LLVMBuildCondBr(c->b, bad, fail, ok);
    LLVMPositionBuilderAtEnd(c->b, fail);
    LLVMValueRef all[8] = {LLVMConstInt(c->i32, (unsigned)status, 0), mb_cstr(c, fmt)};
    for (int i = 0; i < nargs; i++)
        all[2 + i] = args[i];
    LLVMValueRef st = LLVMBuildCall2(c->b, L->fail_ty, L->fail_fn, all, (unsigned)(2 + nargs), "");
    LLVMBuildRet(c->b, st);
    LLVMPositionBuilderAtEnd(c->b, ok);
}

static void check_symbols(lowering *L) {
    mb_ctx *c = L->c;
    const mc_graph *g = c->g;
    for (int i = 0; i < g->nsyms; i++) {
        LLVMValueRef v = load_at(L, c->i64, L->syms, i);
        LLVMValueRef bad =
            LLVMBuildOr(c->b, LLVMBuildICmp(c->b, LLVMIntSLT, v, mb_i64(c, 1), ""),
                        LLVMBuildICmp(c->b, LLVMIntSGT, v, mb_i64(c, g->syms[i].max), ""), "");
        /* Names travel as arguments, never inside the format: they may hold '%'. */
        LLVMValueRef args[4] = {mb_cstr(c, mb_entry_name(c)), mb_cstr(c, g->syms[i].name), v,
                                mb_i64(c, g->syms[i].max)};
        fail_if(L, bad, 1, "%s: symbol %s = %lld is outside [1, %lld]", args, 4);
        L->symv[i] = v;
    }
}

static void check_buffers(lowering *L, LLVMValueRef array, const int *ids, int n,
                          const char *what) {
    mb_ctx *c = L->c;
    for (int i = 0; i < n; i++) {
        LLVMValueRef p = load_at(L, c->ptr, array, i);
        LLVMValueRef args[3] = {mb_cstr(c, mb_entry_name(c)), mb_cstr(c, what),
                                mb_cstr(c, mc_val(c->g, ids[i])->name)};
        fail_if(L, LLVMBuildIsNull(c->b, p, ""), 1, "%s: %s '%s' is NULL", args, 3);
        /* Nodes write graph outputs straight into the caller's buffer. */
        if (!L->vptr[ids[i]] && (array == L->ins || mc_val(c->g, ids[i])->producer >= 0))
            L->vptr[ids[i]] = p;
    }
}

static LLVMValueRef value_ptr(lowering *L, int v) {
    mb_ctx *c = L->c;
    if (v < 0) return LLVMConstNull(c->ptr);
    if (L->vptr[v]) return L->vptr[v];
    if (c->param_global[v]) return c->param_global[v];
    if (c->param_index[v] >= 0) return load_at(L, c->ptr, L->params, c->param_index[v]);
    if (c->g->plan.value_in_place[v] >= 0) return value_ptr(L, c->g->plan.value_in_place[v]);
    int64_t off = c->g->plan.value_off[v];
    MC_ASSERT(off >= 0);
    return LLVMBuildGEP2(c->b, c->i8, L->arena, (LLVMValueRef[]){mb_i64(c, off)}, 1, "");
}

static LLVMValueRef dim_value(lowering *L, mc_dim d) {
    mb_ctx *c = L->c;
    if (mc_dim_is_const(d)) return mb_i64(c, d.c);
    return LLVMBuildMul(c->b, mb_i64(c, d.c), L->symv[d.sym], "");
}

static void store_field(lowering *L, LLVMValueRef t, int field, int sub, LLVMValueRef v) {
    mb_ctx *c = L->c;
    LLVMValueRef idx[3] = {mb_i64(c, 0), LLVMConstInt(c->i32, (unsigned)field, 0), mb_i64(c, sub)};
    LLVMValueRef at = LLVMBuildGEP2(c->b, c->tensor_ty, t, idx, field == T_DIMS ? 3 : 2, "");
    LLVMBuildStore(c->b, v, at);
}

static void fill_tensor(lowering *L, LLVMValueRef t, int v) {
    mb_ctx *c = L->c;
    store_field(L, t, T_P, 0, value_ptr(L, v));
    if (v < 0) { /* omitted optional: p = NULL, rank 0 */
        store_field(L, t, T_DT, 0, mb_i64(c, 0));
        store_field(L, t, T_RANK, 0, mb_i64(c, 0));
        store_field(L, t, T_LAYOUT, 0, mb_i64(c, 0));
        store_field(L, t, T_NR, 0, mb_i64(c, 0));
        store_field(L, t, T_GROUP, 0, mb_i64(c, 0));
        store_field(L, t, T_ZERO, 0, mb_i64(c, 0));
        return;
    }
    const mc_value *x = mc_val(c->g, v);
    int nr = c->panel_nr[v];
    store_field(L, t, T_DT, 0, mb_i64(c, x->dt));
    store_field(L, t, T_RANK, 0, mb_i64(c, x->shape.rank));
    for (int i = 0; i < x->shape.rank; i++)
        store_field(L, t, T_DIMS, i, dim_value(L, x->shape.d[i]));
    store_field(L, t, T_LAYOUT, 0, mb_i64(c, nr ? 1 : 0));
    store_field(L, t, T_NR, 0, mb_i64(c, nr));
    store_field(L, t, T_GROUP, 0, mb_i64(c, x->qgroup));
    store_field(L, t, T_ZERO, 0, mb_i64(c, x->qzero != NULL));
}

/* A node's scratch: p = NULL and 0 bytes where its layout is empty for these shapes. */
static void fill_scratch(lowering *L, LLVMValueRef t, int node) {
    mb_ctx *c = L->c;
    int64_t off = c->g->plan.scratch_off[node];
    LLVMValueRef p =
        off < 0 ? LLVMConstNull(c->ptr)
                : LLVMBuildGEP2(c->b, c->i8, L->arena, (LLVMValueRef[]){mb_i64(c, off)}, 1, "");
    store_field(L, t, T_P, 0, p);
    store_field(L, t, T_DT, 0, mb_i64(c, MC_DT_I64));
    store_field(L, t, T_RANK, 0, mb_i64(c, 1));
    store_field(L, t, T_DIMS, 0, mb_i64(c, c->g->plan.scratch_bytes[node]));
    store_field(L, t, T_LAYOUT, 0, mb_i64(c, 0));
    store_field(L, t, T_NR, 0, mb_i64(c, 0));
    store_field(L, t, T_GROUP, 0, mb_i64(c, 0));
    store_field(L, t, T_ZERO, 0, mb_i64(c, 0));
}

/* n tensors from ids, then omitted ones up to `pad` (kernels index optional inputs by
 * position), then the scratch when the node's op has one (MC_OPF_SCRATCH: always, even
 * when its layout is empty for these shapes, so the kernel finds it where it looks). */
static LLVMValueRef tensor_array(lowering *L, int n, int pad, int node, const int *ids,
                                 bool scratch) {
    mb_ctx *c = L->c;
    int given = n;
    n = n > pad ? n : pad;
    int total = n + (scratch ? 1 : 0);
    LLVMTypeRef ty = LLVMArrayType2(c->tensor_ty, (uint64_t)(total ? total : 1));
    LLVMValueRef arr = LLVMBuildAlloca(L->alloca_b, ty, "");
    LLVMSetAlignment(arr, 8);
    for (int i = 0; i < total; i++) {
        LLVMValueRef t =
            LLVMBuildGEP2(c->b, c->tensor_ty, arr, (LLVMValueRef[]){mb_i64(c, i)}, 1, "");
        if (i < n)
            fill_tensor(L, t, i < given ? ids[i] : -1);
        else
            fill_scratch(L, t, node);
    }
    return arr;
}

static void lower_node(lowering *L, int id) {
    mb_ctx *c = L->c;
    const mc_node *n = mc_nod(c->g, id);
    int max_in = mc_op_infos[n->op].max_in;
    LLVMValueRef in = tensor_array(L, n->nin, max_in == MC_VARIADIC ? 0 : max_in, id, n->in, false);
    bool scratch = mc_op_infos[n->op].flags & MC_OPF_SCRATCH;
    /* Optional outputs past the node's are there with p NULL, as optional inputs are
     * (the scratch, when there is one, comes right after the node's own). */
    int max_out =
        scratch || mc_op_infos[n->op].max_out == MC_VARIADIC ? 0 : mc_op_infos[n->op].max_out;
    LLVMValueRef out = tensor_array(L, n->nout, max_out, id, n->out, scratch);
    const char *kname = mc_arena_printf(c->g->arena, "mk_%s", mb_op_id_name(n->op));
    /* A kernel the library lacks stays a declaration; mb_compile reports it. */
    LLVMValueRef fn = LLVMGetNamedFunction(c->mod, kname);
    if (!fn) fn = LLVMAddFunction(c->mod, kname, L->kernel_ty);
    LLVMValueRef args[3] = {in, out, mb_node_attrs(c, n)};
    LLVMValueRef st = LLVMBuildCall2(c->b, L->kernel_ty, fn, args, 3, "");
    LLVMBasicBlockRef fail = LLVMAppendBasicBlockInContext(c->cx, L->fn, "kernel_failed");
    LLVMBasicBlockRef ok = LLVMAppendBasicBlockInContext(c->cx, L->fn, "ok");
    LLVMBuildCondBr(c->b, LLVMBuildICmp(c->b, LLVMIntNE, st, LLVMConstInt(c->i32, 0, 0), ""), fail,
                    ok);
    LLVMPositionBuilderAtEnd(c->b, fail);
    LLVMBuildRet(c->b, st);
    LLVMPositionBuilderAtEnd(c->b, ok);
}

/* Graph outputs no node writes into the caller's buffer: inputs, params and constants
 * passed through (and a value listed twice, should a pass ever make one). */
static void copy_outputs(lowering *L) {
    mb_ctx *c = L->c;
    const mc_graph *g = c->g;
    for (int i = 0; i < g->noutputs; i++) {
        int v = g->outputs[i];
        LLVMValueRef dst = load_at(L, c->ptr, L->outs, i);
        LLVMValueRef src = value_ptr(L, v);
        if (src == dst) continue;
        const mc_value *x = mc_val(g, v);
        LLVMValueRef bytes = mb_i64(c, (int64_t)mc_dtype_size(x->dt));
        for (int d = 0; d < x->shape.rank; d++)
            bytes = LLVMBuildMul(c->b, bytes, dim_value(L, x->shape.d[d]), "");
        LLVMBuildMemCpy(c->b, dst, 1, src, 1, bytes);
    }
}

/* A training step ends by writing each updated value into its param's storage (the
 * model's writable copy), after every node has read the old one; an update the plan
 * placed in its param's storage is there already. */
static void write_updates(lowering *L) {
    mb_ctx *c = L->c;
    const mc_graph *g = c->g;
    for (int i = 0; i < g->nupdates; i++) {
        int dst = g->update_dst[i];
        if (g->plan.value_in_place[g->update_src[i]] == dst) continue;
        MC_ASSERT(c->param_index[dst] >= 0);
        const mc_value *x = mc_val(g, dst);
        int64_t bytes = mc_shape_numel(&x->shape, NULL) * (int64_t)mc_dtype_size(x->dt);
        LLVMValueRef to = load_at(L, c->ptr, L->params, c->param_index[dst]);
        LLVMBuildMemCpy(c->b, to, 1, value_ptr(L, g->update_src[i]), 1, mb_i64(c, bytes));
    }
}

static void begin(lowering *L) {
    mb_ctx *c = L->c;
    LLVMTypeRef params[4] = {c->ptr, c->ptr, c->ptr, c->ptr};
    L->fn = LLVMAddFunction(c->mod, mc_arena_printf(c->g->arena, "%s_run_args", c->g->name),
                            LLVMFunctionType(c->i32, params, 4, 0));
    LLVMSetLinkage(L->fn, LLVMInternalLinkage);
    c->run_args = L->fn;
    L->m = LLVMGetParam(L->fn, 0);
    L->syms = LLVMGetParam(L->fn, 1);
    L->ins = LLVMGetParam(L->fn, 2);
    L->outs = LLVMGetParam(L->fn, 3);
    LLVMBasicBlockRef entry = LLVMAppendBasicBlockInContext(c->cx, L->fn, "entry");
    L->alloca_b = LLVMCreateBuilderInContext(c->cx);
    LLVMPositionBuilderAtEnd(L->alloca_b, entry);
    L->body = LLVMAppendBasicBlockInContext(c->cx, L->fn, "checks");
    LLVMPositionBuilderAtEnd(c->b, L->body);
    L->kernel_ty = LLVMFunctionType(c->i32, (LLVMTypeRef[]){c->ptr, c->ptr, c->ptr}, 3, 0);
    L->fail_ty = LLVMFunctionType(c->i32, (LLVMTypeRef[]){c->i32, c->ptr}, 2, 1);
    L->fail_fn = LLVMGetNamedFunction(c->mod, "moert_fail");
    if (!L->fail_fn) L->fail_fn = LLVMAddFunction(c->mod, "moert_fail", L->fail_ty);
    L->vptr = mc_arena_alloc(c->g->arena, sizeof(LLVMValueRef) * (size_t)c->g->nvalues);
}

void mb_emit_run(mb_ctx *c) {
    lowering L = {.c = c};
    const mc_graph *g = c->g;
    begin(&L);
    LLVMValueRef name = mb_cstr(c, mb_entry_name(c));
    fail_if(&L, LLVMBuildIsNull(c->b, L.m, ""), 1, "%s: the model is NULL", &name, 1);
    check_symbols(&L);
    check_buffers(&L, L.ins, g->inputs, g->ninputs, "input");
    check_buffers(&L, L.outs, g->outputs, g->noutputs, "output");
    L.arena = LLVMBuildLoad2(c->b, c->ptr, L.m, "arena");
    L.params = load_at(&L, c->ptr, L.m, 1);
    for (int pos = 0; pos < g->norder; pos++)
        lower_node(&L, g->order[pos]);
    copy_outputs(&L);
    write_updates(&L);
    LLVMBuildRet(c->b, LLVMConstInt(c->i32, 0, 0));
    LLVMBuildBr(L.alloca_b, L.body);
    LLVMDisposeBuilder(L.alloca_b);
}
