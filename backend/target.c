/* backend/target.c: the target machine, and the GEMM micro-kernel's vector width on it.
 *
 * Without --target-triple moec compiles for the machine it runs on, CPU and features
 * included (like -march=native); with one it compiles for that triple's generic CPU
 * unless --cpu/--features say more. The vector width comes from the features: given
 * explicitly, read off the host, or looked up for a named x86 CPU (LLVM's C API cannot
 * be asked what a CPU name implies). */
#include "internal.h"

#include <llvm-c/Target.h>
#include <stdlib.h>
#include <string.h>

static void init_llvm_targets(void) {
    static bool done;
    if (done) return;
    LLVMInitializeX86TargetInfo();
    LLVMInitializeX86Target();
    LLVMInitializeX86TargetMC();
    LLVMInitializeX86AsmPrinter();
    LLVMInitializeAArch64TargetInfo();
    LLVMInitializeAArch64Target();
    LLVMInitializeAArch64TargetMC();
    LLVMInitializeAArch64AsmPrinter();
    done = true;
}

static bool has_feature(const char *features, const char *f) {
    size_t n = strlen(f);
    for (const char *p = features; (p = strstr(p, f)); p += n)
        if ((p == features || p[-1] == ',') && p[0] == '+' && (p[n] == ',' || p[n] == 0))
            return true;
    return false;
}

static bool cpu_is(const char *cpu, const char *const *names) {
    for (; *names; names++)
        if (strcmp(cpu, *names) == 0) return true;
    return false;
}

static int x86_width(const char *cpu, const char *features) {
    static const char *const avx512[] = {
        "skylake-avx512", "cascadelake", "cooperlake", "cannonlake",     "icelake-client",
        "icelake-server", "tigerlake",   "rocketlake", "sapphirerapids", "emeraldrapids",
        "graniterapids",  "znver4",      "znver5",     "x86-64-v4",      NULL};
    static const char *const avx2[] = {
        "haswell",   "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake", "arrowlake",
        "gracemont", "znver1",    "znver2",  "znver3",    "x86-64-v3",  NULL};
    if (has_feature(features, "avx512f") || cpu_is(cpu, avx512)) return 16;
    if (has_feature(features, "avx") || cpu_is(cpu, avx2)) return 8;
    return 4;
}

static bool arch_of(mb_target *t, mc_diag *d) {
    if (strncmp(t->triple, "x86_64", 6) == 0)
        t->arch = "x86_64";
    else if (strncmp(t->triple, "aarch64", 7) == 0 || strncmp(t->triple, "arm64", 5) == 0)
        t->arch = "aarch64";
    else
        return mc_error(d, "",
                        "--target-triple %s: unsupported architecture; expected "
                        "x86_64-* or aarch64-*",
                        t->triple);
    return true;
}

static char *dup(const char *s) {
    char *r = strdup(s ? s : "");
    if (!r) mc_oom(strlen(s ? s : "") + 1);
    return r;
}

bool mb_target_init(mb_target *t, const mb_options *o, mc_diag *d) {
    memset(t, 0, sizeof *t);
    init_llvm_targets();
    bool host = o->triple == NULL;
    char *host_triple = LLVMGetDefaultTargetTriple();
    t->triple = dup(host ? host_triple : o->triple);
    LLVMDisposeMessage(host_triple);
    if (!arch_of(t, d)) return false;
    char *hcpu = host ? LLVMGetHostCPUName() : NULL,
         *hfeat = host ? LLVMGetHostCPUFeatures() : NULL;
    t->cpu = dup(o->cpu ? o->cpu : hcpu ? hcpu : "generic");
    t->features = dup(o->features ? o->features : (host && !o->cpu) ? hfeat : "");
    LLVMDisposeMessage(hcpu);
    LLVMDisposeMessage(hfeat);
    LLVMTargetRef target;
    char *err = NULL;
    if (LLVMGetTargetFromTriple(t->triple, &target, &err)) {
        mc_error(d, "", "--target-triple %s: %s", t->triple, err);
        LLVMDisposeMessage(err);
        return false;
    }
    bool x86 = strcmp(t->arch, "x86_64") == 0;
    /* Medium code model on x86-64: globals above the large-data threshold go to .lrodata
     * with 64-bit addressing, so weights beyond 2 GiB still link. */
    t->tm = LLVMCreateTargetMachine(target, t->triple, t->cpu, t->features,
                                    o->opt_level == 0   ? LLVMCodeGenLevelNone
                                    : o->opt_level == 1 ? LLVMCodeGenLevelLess
                                    : o->opt_level == 2 ? LLVMCodeGenLevelDefault
                                                        : LLVMCodeGenLevelAggressive,
                                    LLVMRelocPIC, x86 ? LLVMCodeModelMedium : LLVMCodeModelDefault);
    if (!t->tm)
        return mc_error(d, "",
                        "--cpu %s / --features '%s': LLVM cannot make a target "
                        "machine for %s",
                        t->cpu, t->features, t->triple);
    t->vec_width = x86 ? x86_width(t->cpu, t->features) : 4;
    t->mr = t->vec_width == 16 ? 8 : 6;
    t->nr = 2 * t->vec_width;
    return true;
}

void mb_target_free(mb_target *t) {
    if (t->tm) LLVMDisposeTargetMachine(t->tm);
    free(t->triple);
    free(t->cpu);
    free(t->features);
    memset(t, 0, sizeof *t);
}
