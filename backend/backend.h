/* backend/backend.h: the LLVM side of moec. This folder is the only place that
 * includes the llvm-c headers.
 *
 * mb_compile turns a lowered graph (after the pass pipeline: shapes inferred, no
 * composite ops left) into one LLVM module: the kernel library of backend/kernels/
 * linked in, one call per node, the memory plan, the generated API of DESIGN.md §7,
 * weights as constants or an external safetensors file. Nothing is written unless
 * everything succeeds (files go to a temporary name and are renamed at the end). */
#ifndef MC_BACKEND_H
#define MC_BACKEND_H

#include "ir.h"

/* "19.1.7": the LLVM moec is linked against (shown by `moec --version`). */
const char *mc_backend_llvm_version(void);

typedef enum { MB_EMIT_OBJ, MB_EMIT_ASM, MB_EMIT_LLVM } mb_emit_kind;

/* What mb_compile is doing, for `moec -v` and its progress line; the backend never
 * prints. `phase`: a phase of the calling thread starts now and lasts until the next
 * call. In order: "pack" (GEMM panels, params as constants), "lower" (the kernel calls,
 * the generated API, the kernel library), "optimize" (LLVM's pipeline), "emit" (the
 * object, assembly or IR), "wait" (for the weights object), "header", "weights" (the
 * external weights file), each only when it happens. `aside`: work that ran on a thread
 * of its own alongside those phases, with its wall time, once it ended: "pack" and
 * "emit-weights" when the weights go to mb_outputs.weights_object. */
typedef struct mb_progress {
    void (*phase)(void *user, const char *name);
    void (*aside)(void *user, const char *name, double seconds);
    void *user;
} mb_progress;

typedef struct mb_options {
    const char *triple;   /* NULL: the host's */
    const char *cpu;      /* NULL: the host's CPU when compiling for the host, else generic */
    const char *features; /* NULL: the host's features when compiling for the host */
    int opt_level;        /* 0..3 */
    mb_emit_kind emit;
    bool external_weights; /* params go to weights_out, mapped by _create */
    bool with_main;        /* also emit main() calling the .npy driver (moec build) */
    mb_progress progress;  /* all NULL: not told */
} mb_options;

typedef struct mb_outputs {
    const char *object;  /* .o / .s / .ll */
    const char *header;  /* generated C header, or NULL */
    const char *weights; /* external weights file (needed iff external_weights) */
    /* Or NULL. The embedded weights go to this second object instead, which a thread of
     * its own packs and writes while the code is compiled; the caller links both
     * (moec build). Only with MB_EMIT_OBJ. */
    const char *weights_object;
} mb_outputs;

bool mb_compile(const mc_graph *g, const mb_options *o, const mb_outputs *out, mc_diag *d);

#endif
