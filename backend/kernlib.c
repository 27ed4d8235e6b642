/* backend/kernlib.c: links the embedded kernel library into a model's module: the files
 * that define what the model calls (and what those call). Kernel functions become
 * internal (two models can share a program), the ones the model does not call are
 * dropped at once (before LLVM's pipeline spends time on them), and every function is
 * compiled for the chosen CPU, not for the generic one clang built the bitcode for. */
#include "internal.h"
#include "kernlib.h"

#include <llvm-c/BitReader.h>
#include <llvm-c/Linker.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <string.h>

static const mb_bitcode *kernels_for(const char *arch) {
    return strcmp(arch, "aarch64") == 0 ? mb_kernels_aarch64 : mb_kernels_x86_64;
}

/* A kernel file's module, read lazily: its functions' names and signatures, their
 * bodies only when it is linked. The module owns the buffer from then on. */
static LLVMModuleRef load_lazily(mb_ctx *c, const mb_bitcode *bc) {
    LLVMMemoryBufferRef buf =
        LLVMCreateMemoryBufferWithMemoryRange((const char *)bc->data, bc->size, bc->name, 0);
    LLVMModuleRef km = NULL;
    if (LLVMGetBitcodeModuleInContext2(c->cx, buf, &km)) {
        mc_error(c->d, "", "internal error: kernel bitcode %s does not load", bc->name);
        return NULL;
    }
    LLVMSetTarget(km, LLVMGetTarget(c->mod));
    LLVMSetDataLayout(km, LLVMGetDataLayoutStr(c->mod));
    return km;
}

/* Whether the kernel module defines a function or global the model's module declares
 * without defining. */
static bool defines_needed(mb_ctx *c, LLVMModuleRef km) {
    size_t len;
    for (LLVMValueRef f = LLVMGetFirstFunction(km); f; f = LLVMGetNextFunction(f)) {
        if (LLVMIsDeclaration(f)) continue;
        LLVMValueRef want = LLVMGetNamedFunction(c->mod, LLVMGetValueName2(f, &len));
        if (want && LLVMIsDeclaration(want)) return true;
    }
    for (LLVMValueRef v = LLVMGetFirstGlobal(km); v; v = LLVMGetNextGlobal(v)) {
        if (LLVMIsDeclaration(v)) continue;
        LLVMValueRef want = LLVMGetNamedGlobal(c->mod, LLVMGetValueName2(v, &len));
        if (want && LLVMIsDeclaration(want)) return true;
    }
    return false;
}

/* Links the kernel files the model's calls reach, and only those: a file is linked when
 * it defines something the module still lacks, until no file does (a fused kernel's
 * file brings in the GEMM driver's, and so on). Reading and linking all of them cost a
 * small model's compile a third of its time. */
static bool link_needed(mb_ctx *c, LLVMModuleRef *km, int n) {
    for (bool linked = true; linked;) {
        linked = false;
        for (int i = 0; i < n; i++) {
            if (!km[i] || !defines_needed(c, km[i])) continue;
            LLVMModuleRef src = km[i];
            km[i] = NULL; /* the linker takes it, whatever the outcome */
            if (LLVMLinkModules2(c->mod, src))
                return mc_error(c->d, "", "internal error: kernel bitcode does not link");
            linked = true;
        }
    }
    return true;
}

static bool link_kernel_files(mb_ctx *c) {
    enum { MAX_FILES = 32 };
    const mb_bitcode *files = kernels_for(c->t->arch);
    LLVMModuleRef km[MAX_FILES] = {0};
    int n = 0;
    bool ok = true;
    for (; files[n].name && ok; n++) {
        MC_ASSERT(n < MAX_FILES);
        ok = (km[n] = load_lazily(c, &files[n])) != NULL;
    }
    ok = ok && link_needed(c, km, n);
    for (int i = 0; i < n; i++)
        if (km[i]) LLVMDisposeModule(km[i]);
    return ok;
}

/* Exported names stay external; everything the kernels define becomes internal. */
static bool is_api(const mb_ctx *c, const char *fn) {
    size_t n = strlen(c->g->name);
    return (strncmp(fn, c->g->name, n) == 0 && fn[n] == '_') || strcmp(fn, "main") == 0;
}

static void retarget(mb_ctx *c, LLVMValueRef fn) {
    static const char *drop[] = {"target-cpu", "target-features", "tune-cpu"};
    for (size_t i = 0; i < sizeof drop / sizeof *drop; i++)
        LLVMRemoveStringAttributeAtIndex(fn, LLVMAttributeFunctionIndex, drop[i],
                                         (unsigned)strlen(drop[i]));
    LLVMAddTargetDependentFunctionAttr(fn, "target-cpu", c->t->cpu);
    LLVMAddTargetDependentFunctionAttr(fn, "target-features", c->t->features);
}

bool mb_link_kernels(mb_ctx *c) {
    if (!link_kernel_files(c)) return false;
    for (LLVMValueRef fn = LLVMGetFirstFunction(c->mod); fn; fn = LLVMGetNextFunction(fn)) {
        if (LLVMIsDeclaration(fn)) continue;
        size_t len;
        const char *name = LLVMGetValueName2(fn, &len);
        if (!is_api(c, name)) LLVMSetLinkage(fn, LLVMInternalLinkage);
        retarget(c, fn);
    }
    /* Most of the library is unused by any one model; -O3 would run its early
     * function passes over all of it before dropping it (a fifth of its time). */
    LLVMPassBuilderOptionsRef po = LLVMCreatePassBuilderOptions();
    LLVMErrorRef err = LLVMRunPasses(c->mod, "globaldce", c->t->tm, po);
    LLVMDisposePassBuilderOptions(po);
    if (!err) return true;
    char *msg = LLVMGetErrorMessage(err);
    mc_error(c->d, "", "internal error: dropping unused kernels failed: %s", msg);
    LLVMDisposeErrorMessage(msg);
    return false;
}
