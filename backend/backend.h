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

typedef struct mb_options {
    const char *triple;   /* NULL: the host's */
    const char *cpu;      /* NULL: the host's CPU when compiling for the host, else generic */
    const char *features; /* NULL: the host's features when compiling for the host */
    int opt_level;        /* 0..3 */
    mb_emit_kind emit;
    bool external_weights; /* params go to weights_out, mapped by _create */
    bool with_main;        /* also emit main() calling the .npy driver (moec build) */
} mb_options;

typedef struct mb_outputs {
    const char *object;  /* .o / .s / .ll */
    const char *header;  /* generated C header, or NULL */
    const char *weights; /* external weights file (needed iff external_weights) */
} mb_outputs;

bool mb_compile(const mc_graph *g, const mb_options *o, const mb_outputs *out, mc_diag *d);

#endif
