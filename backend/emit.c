/* backend/emit.c: mb_compile, from a lowered graph to the files of `moec compile`, and
 * the public functions of the generated API (DESIGN.md §7), which are thin wrappers
 * over libmoert and <name>_run_args. */
#include "frontend.h"
#include "internal.h"

#include <llvm-c/Analysis.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void make_types(mb_ctx *c) {
    c->i8 = LLVMInt8TypeInContext(c->cx);
    c->i32 = LLVMInt32TypeInContext(c->cx);
    c->i64 = LLVMInt64TypeInContext(c->cx);
    c->f32 = LLVMFloatTypeInContext(c->cx);
    c->f64 = LLVMDoubleTypeInContext(c->cx);
    c->ptr = LLVMPointerTypeInContext(c->cx, 0);
    c->vd = LLVMVoidTypeInContext(c->cx);
    LLVMTypeRef i64 = c->i64, p = c->ptr;
    c->tensor_ty = LLVMStructCreateNamed(c->cx, "mk_tensor");
    LLVMStructSetBody(c->tensor_ty,
                      (LLVMTypeRef[]){p, i64, i64, LLVMArrayType2(i64, 8), i64, i64, i64, i64}, 8,
                      0);
    c->attr_ty = LLVMStructCreateNamed(c->cx, "mk_attr");
    LLVMStructSetBody(c->attr_ty, (LLVMTypeRef[]){i64, i64, c->f64, i64, p, p}, 6, 0);
    c->dim_ty = LLVMStructCreateNamed(c->cx, "moert_dim");
    LLVMStructSetBody(c->dim_ty, (LLVMTypeRef[]){i64, i64}, 2, 0);
    c->sinfo_ty = LLVMStructCreateNamed(c->cx, "moert_symbol_info");
    LLVMStructSetBody(c->sinfo_ty, (LLVMTypeRef[]){p, i64}, 2, 0);
    c->tinfo_ty = LLVMStructCreateNamed(c->cx, "moert_tensor_info");
    LLVMStructSetBody(c->tinfo_ty, (LLVMTypeRef[]){p, i64, i64, p}, 4, 0);
    c->info_ty = LLVMStructCreateNamed(c->cx, "moert_model_info");
    LLVMStructSetBody(c->info_ty, (LLVMTypeRef[]){p, i64, p, i64, p, i64, p, i64, p, i64, i64, i64},
                      12, 0);
    c->desc_ty = LLVMStructCreateNamed(c->cx, "moert_model_desc");
    LLVMStructSetBody(c->desc_ty, (LLVMTypeRef[]){p, p, p, p}, 4, 0);
}

static LLVMValueRef api_fn(mb_ctx *c, const char *suffix, LLVMTypeRef ret, LLVMTypeRef *params,
                           int n) {
    const char *name = suffix ? mc_arena_printf(c->g->arena, "%s_%s", c->g->name, suffix) : "main";
    LLVMValueRef fn = LLVMAddFunction(c->mod, name, LLVMFunctionType(ret, params, (unsigned)n, 0));
    LLVMPositionBuilderAtEnd(c->b, LLVMAppendBasicBlockInContext(c->cx, fn, "entry"));
    return fn;
}

static LLVMValueRef call_rt(mb_ctx *c, const char *name, LLVMTypeRef ret, LLVMTypeRef *params,
                            int n, LLVMValueRef *args) {
    LLVMTypeRef ty = LLVMFunctionType(ret, params, (unsigned)n, 0);
    LLVMValueRef fn = LLVMGetNamedFunction(c->mod, name);
    if (!fn) fn = LLVMAddFunction(c->mod, name, ty);
    return LLVMBuildCall2(c->b, ty, fn, args, (unsigned)n, "");
}

const char *mb_entry_name(const mb_ctx *c) {
    return mc_arena_printf(c->g->arena, "%s_%s", c->g->name, c->g->training ? "train_step" : "run");
}

/* <name>_run(m, symbols..., inputs..., outputs...) packs its arguments for _run_args;
 * a training graph's entry is <name>_train_step, with the same arguments. */
static void emit_run_wrapper(mb_ctx *c) {
    const mc_graph *g = c->g;
    int n = 1 + g->nsyms + g->ninputs + g->noutputs;
    LLVMTypeRef *params = mc_arena_alloc(g->arena, sizeof(LLVMTypeRef) * (size_t)n);
    params[0] = c->ptr;
    for (int i = 1; i < n; i++)
        params[i] = i <= g->nsyms ? c->i64 : c->ptr;
    LLVMValueRef fn = api_fn(c, c->g->training ? "train_step" : "run", c->i32, params, n);
    LLVMValueRef arrays[3];
    int counts[3] = {g->nsyms, g->ninputs, g->noutputs}, next = 1;
    for (int a = 0; a < 3; a++) {
        LLVMTypeRef ety = a == 0 ? c->i64 : c->ptr;
        arrays[a] =
            LLVMBuildAlloca(c->b, LLVMArrayType2(ety, (uint64_t)(counts[a] ? counts[a] : 1)), "");
        for (int i = 0; i < counts[a]; i++, next++) {
            LLVMValueRef idx = LLVMConstInt(c->i64, (unsigned long long)i, 0);
            LLVMBuildStore(c->b, LLVMGetParam(fn, (unsigned)next),
                           LLVMBuildGEP2(c->b, ety, arrays[a], &idx, 1, ""));
        }
    }
    LLVMValueRef args[4] = {LLVMGetParam(fn, 0), arrays[0], arrays[1], arrays[2]};
    LLVMTypeRef rty =
        LLVMFunctionType(c->i32, (LLVMTypeRef[]){c->ptr, c->ptr, c->ptr, c->ptr}, 4, 0);
    LLVMBuildRet(c->b, LLVMBuildCall2(c->b, rty, c->run_args, args, 4, ""));
}

void mb_emit_api(mb_ctx *c) {
    LLVMTypeRef p = c->ptr;
    LLVMValueRef fn = api_fn(c, "create", c->i32, (LLVMTypeRef[]){p, p}, 2);
    LLVMValueRef args[3] = {c->desc, LLVMGetParam(fn, 1), LLVMGetParam(fn, 0)};
    LLVMBuildRet(c->b, call_rt(c, "moert_model_create", c->i32, (LLVMTypeRef[]){p, p, p}, 3, args));
    fn = api_fn(c, "destroy", c->vd, &p, 1);
    LLVMValueRef m = LLVMGetParam(fn, 0);
    call_rt(c, "moert_model_destroy", c->vd, &p, 1, &m);
    LLVMBuildRetVoid(c->b);
    api_fn(c, "info", p, NULL, 0);
    LLVMBuildRet(c->b, c->info);
    if (c->g->training) {
        fn = api_fn(c, "save_weights", c->i32, (LLVMTypeRef[]){p, p}, 2);
        LLVMValueRef sargs[2] = {LLVMGetParam(fn, 0), LLVMGetParam(fn, 1)};
        LLVMBuildRet(
            c->b, call_rt(c, "moert_model_save_weights", c->i32, (LLVMTypeRef[]){p, p}, 2, sargs));
    }
    emit_run_wrapper(c);
    if (!c->o->with_main) return;
    fn = api_fn(c, NULL, c->i32, (LLVMTypeRef[]){c->i32, p}, 2);
    LLVMValueRef margs[3] = {LLVMGetParam(fn, 0), LLVMGetParam(fn, 1), c->desc};
    LLVMBuildRet(c->b,
                 call_rt(c, "moert_driver_main", c->i32, (LLVMTypeRef[]){c->i32, p, p}, 3, margs));
}

/* Every op whose kernel the library lacks, in one diagnostic. */
static bool check_kernels(mb_ctx *c) {
    char list[1024] = "";
    bool seen[MC_NUM_OPS] = {0};
    for (int pos = 0; pos < c->g->norder; pos++) {
        const mc_node *n = mc_nod(c->g, c->g->order[pos]);
        const char *k = mc_arena_printf(c->g->arena, "mk_%s", mb_op_id_name(n->op));
        LLVMValueRef fn = LLVMGetNamedFunction(c->mod, k);
        if (seen[n->op] || (fn && !LLVMIsDeclaration(fn))) continue;
        seen[n->op] = true;
        size_t len = strlen(list);
        snprintf(list + len, sizeof list - len, "%s%s (node '%s')", len ? ", " : "",
                 mc_op_infos[n->op].name, n->name);
    }
    if (!list[0]) return true;
    return mc_error(c->d, "", "the native backend cannot lower: %s", list);
}

static bool optimize(mb_ctx *c) {
    char *msg = NULL;
    if (LLVMVerifyModule(c->mod, LLVMReturnStatusAction, &msg)) {
        mc_error(c->d, "", "internal error: invalid LLVM module: %.1500s", msg);
        LLVMDisposeMessage(msg);
        return false;
    }
    LLVMDisposeMessage(msg);
    char passes[32];
    snprintf(passes, sizeof passes, "default<O%d>", c->o->opt_level);
    LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
    LLVMErrorRef err = LLVMRunPasses(c->mod, passes, c->t->tm, po);
    LLVMDisposePassBuilderOptions(po);
    if (!err) return true;
    char *e = LLVMGetErrorMessage(err);
    mc_error(c->d, "", "internal error: LLVM passes failed: %s", e);
    LLVMDisposeErrorMessage(e);
    return false;
}

static bool write_module(mb_ctx *c, const char *path, const char *shown) {
    char *err = NULL;
    bool bad = c->o->emit == MB_EMIT_LLVM
                   ? LLVMPrintModuleToFile(c->mod, path, &err)
                   : LLVMTargetMachineEmitToFile(
                         c->t->tm, c->mod, (char *)path,
                         c->o->emit == MB_EMIT_ASM ? LLVMAssemblyFile : LLVMObjectFile, &err);
    if (!bad) return true;
    mc_error(c->d, "", "cannot write %s: %s", shown, err ? err : "unknown error");
    LLVMDisposeMessage(err);
    return false;
}

static void phase(const mb_options *o, const char *name) {
    if (o->progress.phase) o->progress.phase(o->progress.user, name);
}

static bool build_module(mb_ctx *c) {
    const mc_graph *g = c->g;
    c->mod = LLVMModuleCreateWithNameInContext(g->name, c->cx);
    LLVMSetTarget(c->mod, c->t->triple);
    LLVMTargetDataRef dl = LLVMCreateTargetDataLayout(c->t->tm);
    LLVMSetModuleDataLayout(c->mod, dl);
    LLVMDisposeTargetData(dl);
    MC_ASSERT(g->plan.valid); /* the pipeline's plan-memory, or cli's ready_for_backend */
    if (!mb_emit_params(c)) return false;
    phase(c->o, "lower");
    mb_emit_ukernel(c);
    mb_emit_run(c);
    mb_emit_info(c);
    mb_emit_api(c);
    if (!mb_link_kernels(c) || !check_kernels(c)) return false;
    phase(c->o, "optimize");
    return optimize(c);
}

/* Files are written under temporary names and renamed only when all succeeded: the
 * object, the header, the external weights, the weights object. */
enum { NUM_STAGED = 4 };
typedef struct {
    const char *final[NUM_STAGED];
    char *tmp[NUM_STAGED];
} staged;

static const char *stage(staged *s, int i, const char *path) {
    s->final[i] = path;
    size_t n = strlen(path) + 32;
    s->tmp[i] = malloc(n);
    if (!s->tmp[i]) mc_oom(n);
    snprintf(s->tmp[i], n, "%s.tmp%ld.%d", path, (long)getpid(), i);
    return s->tmp[i];
}

static bool finish(staged *s, bool ok, mc_diag *d) {
    int renamed = 0; /* outputs [0, renamed) are in place */
    for (; ok && renamed < NUM_STAGED; renamed++)
        if (s->tmp[renamed] && rename(s->tmp[renamed], s->final[renamed]) != 0)
            ok = mc_error(d, "", "cannot write %s", s->final[renamed]);
    for (int i = 0; i < NUM_STAGED; i++) {
        /* All or nothing: on failure the outputs already renamed go too. */
        if (s->tmp[i] && !ok) remove(i < renamed - 1 ? s->final[i] : s->tmp[i]);
        free(s->tmp[i]);
    }
    return ok;
}

bool mb_compile(const mc_graph *g, const mb_options *o, const mb_outputs *out, mc_diag *d) {
    mb_target t;
    mb_ctx c = {.g = g, .o = o, .t = &t, .d = d};
    MC_ASSERT(!out->weights_object || o->emit == MB_EMIT_OBJ);
    phase(o, out->weights_object ? "lower" : "pack");
    if (!mb_check_model_name(g, d)) return false;
    if (!mb_target_init(&t, o, d)) {
        mb_target_free(&t);
        return false;
    }
    c.cx = LLVMContextCreate();
    c.b = LLVMCreateBuilderInContext(c.cx);
    make_types(&c);
    staged s = {{0}, {0}};
    if (out->weights_object) c.weights_object = stage(&s, 3, out->weights_object);
    bool ok = build_module(&c);
    if (ok) phase(o, "emit");
    ok = ok && write_module(&c, stage(&s, 0, out->object), out->object);
    if (c.weights) {
        if (ok) phase(o, "wait");
        bool joined = mb_weights_join(&c); /* whatever happened: the thread must end */
        ok = ok && joined;
    }
    if (ok && out->header) {
        phase(o, "header");
        ok = mb_write_header(g, o, g->plan.peak, stage(&s, 1, out->header), out->header, d);
    }
    if (ok && o->external_weights) {
        phase(o, "weights");
        ok = mc_st_write_params(stage(&s, 2, out->weights), g, d);
    }
    ok = finish(&s, ok, d);
    LLVMDisposeBuilder(c.b);
    if (c.mod) LLVMDisposeModule(c.mod);
    LLVMContextDispose(c.cx);
    mb_target_free(&t);
    return ok;
}
