/* backend/internal.h: what the backend's files share. One mb_ctx lives for one
 * mb_compile call. */
#ifndef MB_INTERNAL_H
#define MB_INTERNAL_H

#include "backend.h"
#include "scratch.h"

#include <llvm-c/Core.h>
#include <llvm-c/TargetMachine.h>

/* The target: machine, and the vector shape of the GEMM micro-kernel on it. */
typedef struct mb_target {
    LLVMTargetMachineRef tm;
    char *triple;
    const char *arch; /* "x86_64" | "aarch64": which kernel bitcode links in */
    char *cpu, *features;
    int vec_width; /* floats per vector register: 16 AVX-512, 8 AVX2, 4 SSE/NEON */
    int mr, nr;    /* micro-kernel tile: mr rows by nr columns (whole vectors) */
    bool bf16_dot; /* AVX512-BF16: mk_ukernel_bf16 sums with vdpbf16ps */
    bool int8_dot; /* AVX512-VNNI: int8 / int4 weights meet int8 activations (vpdpbusd) */
} mb_target;

bool mb_target_init(mb_target *t, const mb_options *o, mc_diag *d);
void mb_target_free(mb_target *t);

/* How each param is stored: panel width for GEMM B operands, 0 otherwise. */
int mb_param_panel_nr(const mc_graph *g, int value, const mb_target *t);

typedef struct mb_ctx {
    const mc_graph *g;
    const mb_options *o;
    mb_target *t;
    mc_diag *d;
    LLVMContextRef cx;
    LLVMModuleRef mod;
    LLVMBuilderRef b;
    LLVMTypeRef i8, i32, i64, f32, f64, ptr, vd;
    LLVMTypeRef tensor_ty, attr_ty; /* mk_tensor, mk_attr */
    LLVMTypeRef info_ty, tinfo_ty, dim_ty, sinfo_ty, desc_ty;
    LLVMValueRef *param_global;   /* per value id: embedded constant, or NULL */
    LLVMValueRef *initial_global; /* per value id, training: a param's starting bytes */
    int *param_index;             /* per value id: index in info->params, or -1 */
    int *panel_nr;                /* per value id: the GEMM panel width it is stored in, or 0 */
    int nparams;
    LLVMValueRef info, desc; /* the moert_model_info and _desc constants */
    LLVMValueRef run_args;   /* <name>_run_args */
    /* mb_outputs.weights_object: embedded params are only declared in mod, and defined
     * in that object by a thread of their own (consts.c). */
    const char *weights_object;
    struct mb_weights *weights; /* that thread, once started */
} mb_ctx;

static inline LLVMValueRef mb_i64(mb_ctx *c, int64_t v) {
    return LLVMConstInt(c->i64, (unsigned long long)v, 1);
}

/* kernlib.c */
bool mb_link_kernels(mb_ctx *c);
/* gemm.c: mk_ukernel, mk_gemm_mr, mk_gemm_nr for the target. */
void mb_emit_ukernel(mb_ctx *c);
/* consts.c: params as globals, the model info and descriptor. */
bool mb_emit_params(mb_ctx *c);
/* Waits for the weights object's thread, if one started; false (with a message) if it
 * failed. Reports its work through the progress callbacks. */
bool mb_weights_join(mb_ctx *c);
void mb_emit_info(mb_ctx *c);
LLVMValueRef mb_cstr(mb_ctx *c, const char *s);
/* A private read-only global holding `init`. */
LLVMValueRef mb_const_global(mb_ctx *c, LLVMValueRef init, const char *name, unsigned align);
/* attrs.c: "MOE_TOPK_ROUTE" (the kernel is mk_MOE_TOPK_ROUTE), and a node's attributes
 * as a constant mk_attr array (kernels/mk.h). */
const char *mb_op_id_name(mc_op op);
LLVMValueRef mb_node_attrs(mb_ctx *c, const mc_node *n);
/* lower.c: <name>_run_args, the calls to the kernels. */
void mb_emit_run(mb_ctx *c);
/* "<name>_run", or "<name>_train_step" for a training graph: the public entry point. */
const char *mb_entry_name(const mb_ctx *c);
/* emit.c: the public wrappers */
void mb_emit_api(mb_ctx *c);
/* header.c */
/* Writes to `path`, names `shown` in messages (the final name of a staged file). */
bool mb_write_header(const mc_graph *g, const mb_options *o, int64_t peak, const char *path,
                     const char *shown, mc_diag *d);
/* The model name prefixes every generated symbol: an identifier, no keyword, no clash
 * with libmoert or the kernels. */
bool mb_check_model_name(const mc_graph *g, mc_diag *d);
/* A C identifier for a tensor name: non-alphanumerics become '_'. Arena string. */
const char *mb_c_ident(const mc_graph *g, const char *name);

#endif
