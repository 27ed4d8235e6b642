/* backend/target.c: the target machine, and the GEMM micro-kernel's vector width and
 * dot-product instructions on it.
 *
 * Without --target-triple moec compiles for the machine it runs on, CPU and features
 * included (like -march=native); with one it compiles for that triple's generic CPU
 * unless --cpu/--features say more. The vector width and AVX512-BF16 come from the
 * features: given explicitly, read off the host, or looked up for a named x86 CPU (LLVM's
 * C API cannot be asked what a CPU name implies). */
#include "internal.h"

#include <llvm-c/Target.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* '+' or '-' when the comma-separated feature list names f with that sign, else 0; the
 * last mention wins, as in LLVM. */
static char feature_sign(const char *features, const char *f) {
    size_t n = strlen(f);
    char sign = 0;
    for (const char *p = features; (p = strstr(p, f)); p += n)
        if (p > features && (p[-1] == '+' || p[-1] == '-') && (p - 1 == features || p[-2] == ',') &&
            (p[n] == ',' || p[n] == 0))
            sign = p[-1];
    return sign;
}

/* The host's features followed by the given ones, which thus override them. */
static char *host_features_and(const char *host, const char *given) {
    size_t n = strlen(host) + strlen(given) + 2;
    char *s = malloc(n);
    if (!s) mc_oom(n);
    snprintf(s, n, "%s%s%s", host, *host && *given ? "," : "", given);
    return s;
}

static bool cpu_is(const char *cpu, const char *const *names) {
    for (; *names; names++)
        if (strcmp(cpu, *names) == 0) return true;
    return false;
}

static int x86_width(const char *cpu, const char *features) {
    static const char *const avx512_cpus[] = {
        "skylake-avx512", "cascadelake", "cooperlake", "cannonlake",     "icelake-client",
        "icelake-server", "tigerlake",   "rocketlake", "sapphirerapids", "emeraldrapids",
        "graniterapids",  "znver4",      "znver5",     "x86-64-v4",      NULL};
    static const char *const avx2_cpus[] = {
        "haswell",   "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake", "arrowlake",
        "gracemont", "znver1",    "znver2",  "znver3",    "x86-64-v3",  NULL};
    /* Explicit features win over what the CPU name implies. */
    char avx512 = feature_sign(features, "avx512f"), avx = feature_sign(features, "avx");
    char avx2 = feature_sign(features, "avx2");
    bool named512 = cpu_is(cpu, avx512_cpus), named2 = named512 || cpu_is(cpu, avx2_cpus);
    if (avx512 == '+' || (named512 && !avx512)) return 16;
    if (avx == '+' || avx2 == '+' || (named2 && avx != '-' && avx2 != '-')) return 8;
    return 4;
}

/* Whether the features or the named CPU have `feature`: with AVX-512's width only, the
 * dot-product kernels' tile. */
static bool x86_has(const char *cpu, const char *features, int width, const char *feature,
                    const char *const *cpus) {
    char sign = feature_sign(features, feature);
    return width == 16 && (sign == '+' || (cpu_is(cpu, cpus) && !sign));
}

/* AVX512-BF16 (vdpbf16ps). */
static bool x86_bf16_dot(const char *cpu, const char *features, int width) {
    static const char *const cpus[] = {
        "cooperlake", "sapphirerapids", "emeraldrapids", "graniterapids", "znver4", "znver5", NULL};
    return x86_has(cpu, features, width, "avx512bf16", cpus);
}

/* AVX512-VNNI (vpdpbusd). */
static bool x86_int8_dot(const char *cpu, const char *features, int width) {
    static const char *const cpus[] = {"cascadelake",    "cooperlake",    "icelake-client",
                                       "icelake-server", "tigerlake",     "rocketlake",
                                       "sapphirerapids", "emeraldrapids", "graniterapids",
                                       "znver4",         "znver5",        NULL};
    return x86_has(cpu, features, width, "avx512vnni", cpus);
}

/* AArch64's dot product (sdot, FEAT_DotProd): optional in ARMv8.2, in every core since
 * the Cortex-A76 and Neoverse N1 and in Apple's. */
static bool aarch64_int8_dot(const char *cpu, const char *features) {
    static const char *const cpus[] = {
        "cortex-a76",  "cortex-a77",  "cortex-a78",  "cortex-a710", "cortex-x1", "cortex-x2",
        "neoverse-n1", "neoverse-n2", "neoverse-v1", "neoverse-v2", "apple-m1",  "apple-m2",
        "apple-m3",    "apple-a14",   "apple-a15",   "apple-a16",   "ampere1",   NULL};
    char sign = feature_sign(features, "dotprod");
    return sign == '+' || (cpu_is(cpu, cpus) && !sign);
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

static char *copy_str(const char *s) {
    char *r = strdup(s ? s : "");
    if (!r) mc_oom(strlen(s ? s : "") + 1);
    return r;
}

/* Medium code model on x86-64: globals above the large-data threshold go to .lrodata
 * with 64-bit addressing, so weights beyond 2 GiB still link. */
static LLVMTargetMachineRef make_tm(const mb_target *t, LLVMTargetRef target, int opt_level) {
    bool x86 = strcmp(t->arch, "x86_64") == 0;
    return LLVMCreateTargetMachine(target, t->triple, t->cpu, t->features,
                                   opt_level == 0   ? LLVMCodeGenLevelNone
                                   : opt_level == 1 ? LLVMCodeGenLevelLess
                                   : opt_level == 2 ? LLVMCodeGenLevelDefault
                                                    : LLVMCodeGenLevelAggressive,
                                   LLVMRelocPIC, x86 ? LLVMCodeModelMedium : LLVMCodeModelDefault);
}

/* The child of probe_target: code for an empty function, stderr to `fd`. LLVM reports
 * an unknown CPU or feature only by printing (or, for some, aborting), never through the
 * C API, so this runs where a report can be read and an abort does no harm. */
static _Noreturn void probe_child(const mb_target *t, LLVMTargetRef target, int opt_level, int fd) {
    dup2(fd, STDERR_FILENO);
    LLVMTargetMachineRef tm = make_tm(t, target, opt_level);
    if (!tm) _exit(1);
    LLVMContextRef cx = LLVMContextCreate();
    LLVMModuleRef m = LLVMModuleCreateWithNameInContext("probe", cx);
    LLVMSetTarget(m, t->triple);
    LLVMValueRef fn =
        LLVMAddFunction(m, "f", LLVMFunctionType(LLVMVoidTypeInContext(cx), NULL, 0, 0));
    LLVMBuilderRef b = LLVMCreateBuilderInContext(cx);
    LLVMPositionBuilderAtEnd(b, LLVMAppendBasicBlockInContext(cx, fn, "entry"));
    LLVMBuildRetVoid(b);
    LLVMMemoryBufferRef out = NULL;
    char *err = NULL;
    _exit(LLVMTargetMachineEmitToMemoryBuffer(tm, m, LLVMObjectFile, &err, &out) ? 1 : 0);
}

static bool probe_target(const mb_target *t, const mb_options *o, LLVMTargetRef target,
                         int opt_level, mc_diag *d) {
    int fds[2];
    if (pipe(fds) != 0) return true; /* cannot probe: LLVM's own warnings will show */
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) probe_child(t, target, opt_level, fds[1]);
    close(fds[1]);
    char said[512] = "";
    size_t n = 0;
    for (ssize_t r; n < sizeof said - 1 && (r = read(fds[0], said + n, sizeof said - 1 - n)) > 0;)
        n += (size_t)r;
    said[n] = 0;
    close(fds[0]);
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) < 0) return true;
    said[strcspn(said, "\n")] = 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && !said[0]) return true;
    return mc_error(d, "", "--cpu '%s' / --features '%s' for %s: %s", t->cpu,
                    o->features ? o->features : "", t->triple,
                    said[0] ? said : "LLVM cannot generate code for it");
}

bool mb_target_init(mb_target *t, const mb_options *o, mc_diag *d) {
    memset(t, 0, sizeof *t);
    init_llvm_targets();
    bool host = o->triple == NULL;
    char *host_triple = LLVMGetDefaultTargetTriple();
    t->triple = copy_str(host ? host_triple : o->triple);
    LLVMDisposeMessage(host_triple);
    if (!arch_of(t, d)) return false;
    char *hcpu = host ? LLVMGetHostCPUName() : NULL,
         *hfeat = host ? LLVMGetHostCPUFeatures() : NULL;
    t->cpu = copy_str(o->cpu ? o->cpu : hcpu ? hcpu : "generic");
    /* For the host, --features adjusts its features (--features=-avx512bf16 keeps the
     * widening bf16 kernel); a named CPU or another triple starts from none. */
    if (host && !o->cpu)
        t->features = host_features_and(hfeat ? hfeat : "", o->features ? o->features : "");
    else
        t->features = copy_str(o->features ? o->features : "");
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
    if ((o->cpu || o->features) && !probe_target(t, o, target, o->opt_level, d)) return false;
    t->tm = make_tm(t, target, o->opt_level);
    if (!t->tm)
        return mc_error(d, "",
                        "--cpu %s / --features '%s': LLVM cannot make a target machine for %s",
                        t->cpu, t->features, t->triple);
    t->vec_width = x86 ? x86_width(t->cpu, t->features) : 4;
    t->bf16_dot = x86 && x86_bf16_dot(t->cpu, t->features, t->vec_width);
    t->int8_dot = x86 ? x86_int8_dot(t->cpu, t->features, t->vec_width)
                      : aarch64_int8_dot(t->cpu, t->features);
    /* AVX-512 has 32 vector registers: a 6 x 4-vector tile; 16 elsewhere: 6 x 2. */
    t->mr = 6;
    t->nr = (t->vec_width == 16 ? 4 : 2) * t->vec_width;
    return true;
}

void mb_target_free(mb_target *t) {
    if (t->tm) LLVMDisposeTargetMachine(t->tm);
    free(t->triple);
    free(t->cpu);
    free(t->features);
    memset(t, 0, sizeof *t);
}
