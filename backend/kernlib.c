/* backend/kernlib.c: links the embedded kernel library into a model's module. Kernel
 * functions become internal (two models can share a program), the ones the model does
 * not call are dropped at once (before LLVM's pipeline spends time on them), and every
 * function is compiled for the chosen CPU, not for the generic one clang built the
 * bitcode for. */
#include "internal.h"
#include "kernlib.h"

#include <llvm-c/BitReader.h>
#include <llvm-c/Linker.h>
#include <llvm-c/Transforms/PassBuilder.h>
#include <string.h>

static const mb_bitcode *kernels_for(const char *arch) {
    return strcmp(arch, "aarch64") == 0 ? mb_kernels_aarch64 : mb_kernels_x86_64;
}

static bool link_one(mb_ctx *c, const mb_bitcode *bc) {
    LLVMMemoryBufferRef buf =
        LLVMCreateMemoryBufferWithMemoryRange((const char *)bc->data, bc->size, bc->name, 0);
    LLVMModuleRef km = NULL;
    bool bad = LLVMParseBitcodeInContext2(c->cx, buf, &km);
    LLVMDisposeMemoryBuffer(buf);
    if (bad) return mc_error(c->d, "", "internal error: kernel bitcode %s does not load", bc->name);
    LLVMSetTarget(km, LLVMGetTarget(c->mod));
    LLVMSetDataLayout(km, LLVMGetDataLayoutStr(c->mod));
    if (LLVMLinkModules2(c->mod, km))
        return mc_error(c->d, "", "internal error: kernel bitcode %s does not link", bc->name);
    return true;
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
    for (const mb_bitcode *bc = kernels_for(c->t->arch); bc->name; bc++)
        if (!link_one(c, bc)) return false;
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
