/* ir/ir.h: the graph IR every layer of moec shares.
 *
 * A graph owns one arena; values and nodes live in growable arrays inside it and are
 * named by dense integer ids. Nodes are executed and printed in `g->order`, which every
 * pass keeps topological (insert new nodes before the node that consumes them). Removed
 * nodes and values are flagged dead, never freed one by one.
 *
 * Dims are `c * symbol` (or the constant `c`): the token count T, T*k rows after
 * dispatch, or a plain size. That one form covers every shape MoE routing produces
 * (T*K, T*E, E*C) while staying trivially comparable.
 */
#ifndef MC_IR_H
#define MC_IR_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "attrs.h" /* MC_A_*: names of attribute rows and choices (ir/attrs.def) */

#define MC_MAX_RANK 8
#define MC_MAX_SYMS 8
#define MC_VARIADIC 1024
#define MC_MAX_DIM ((int64_t)1 << 40) /* any dim, and any tensor's element count */

/* ---- allocation: one function, so tests can make the N-th allocation fail ---- */
void *mc_alloc(size_t n);                 /* NULL on failure (or injected failure) */
void *mc_realloc(void *p, size_t n);      /* NULL on failure; p stays valid */
void mc_free(void *p);
void mc_alloc_fail_after(long n);         /* test hook: the n-th next call fails; -1 off */
_Noreturn void mc_oom(size_t n);          /* out of memory for metadata: abort */
_Noreturn void mc_die(const char *fmt, ...); /* broken invariant: a compiler bug */
#define MC_ASSERT(c)                                                                     \
    do {                                                                                 \
        if (!(c)) mc_die("%s:%d: assertion failed: %s", __FILE__, __LINE__, #c);          \
    } while (0)

typedef struct mc_arena mc_arena;
mc_arena *mc_arena_new(void);
void mc_arena_free(mc_arena *a);           /* runs cleanups, frees every chunk */
void *mc_arena_alloc(mc_arena *a, size_t n); /* zeroed, 16-byte aligned; mc_oom on failure */
char *mc_arena_strdup(mc_arena *a, const char *s);
char *mc_arena_printf(mc_arena *a, const char *fmt, ...);
void mc_arena_on_free(mc_arena *a, void (*fn)(void *), void *ctx); /* e.g. munmap */

/* ---- diagnostics ----
 * Library code never exits: it records the first error in an mc_diag and returns
 * false. Text: "FILE: error: PATH (NAME, OP): MESSAGE" for a node, "FILE: error: PATH:
 * MESSAGE" otherwise, PATH a JSON pointer into the model file ("/nodes/3/attrs/k"). */
typedef struct mc_diag {
    const char *file;  /* shown first; "moec" when no file is involved */
    bool failed;
    char msg[2048];    /* the full first error, without trailing newline */
} mc_diag;
void mc_diag_init(mc_diag *d, const char *file);
bool mc_error(mc_diag *d, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4))); /* returns false */
bool mc_verror(mc_diag *d, const char *path, const char *fmt, va_list ap);

/* ---- dtypes ---- */
/* MC_DT_Q8 and MC_DT_Q4 are quantized weights: storage of params only, never declared in
 * the JSON (their values are an I8 or a U8 tensor of a weights file; docs/format.md). */
typedef enum {
    MC_DT_F32,
    MC_DT_F16,
    MC_DT_BF16,
    MC_DT_I32,
    MC_DT_I64,
    MC_DT_BOOL,
    MC_DT_Q8,
    MC_DT_Q4
} mc_dtype;
#define MC_NUM_DTYPES 8
const char *mc_dtype_name(mc_dtype t);      /* "f32" (dump) */
const char *mc_dtype_json_name(mc_dtype t); /* "float32" (JSON, safetensors: "F32") */
bool mc_dtype_from_json(const char *s, mc_dtype *out);
size_t mc_dtype_size(mc_dtype t);
bool mc_dtype_is_float(mc_dtype t);
bool mc_dtype_is_quant(mc_dtype t); /* MC_DT_Q8, MC_DT_Q4 */
int mc_dtype_onnx_code(mc_dtype t);         /* TensorProto code: f32 1, i64 7, ... */
bool mc_dtype_from_onnx(int64_t code, mc_dtype *out);

/* ---- shapes ---- */
typedef struct { int64_t c; int sym; } mc_dim; /* value: c * (sym < 0 ? 1 : symval[sym]) */
typedef struct { int rank; mc_dim d[MC_MAX_RANK]; } mc_shape;
typedef struct { const char *name; int64_t max; } mc_symbol;

static inline mc_dim mc_dim_const(int64_t c) { return (mc_dim){c, -1}; }
static inline mc_dim mc_dim_sym(int sym, int64_t c) { return (mc_dim){c, sym}; }
static inline bool mc_dim_is_const(mc_dim d) { return d.sym < 0; }
static inline bool mc_dim_eq(mc_dim a, mc_dim b) { return a.c == b.c && a.sym == b.sym; }
bool mc_shape_eq(const mc_shape *a, const mc_shape *b);

/* ---- attributes ---- */
typedef enum { MC_AK_INT, MC_AK_FLOAT, MC_AK_STRING, MC_AK_INTS, MC_AK_FLOATS } mc_attr_kind;
typedef struct mc_attr {
    const char *name;
    mc_attr_kind kind;
    int64_t i;
    double f;
    const char *s;
    int n;         /* list length for INTS/FLOATS */
    int64_t *ints;
    double *floats;
} mc_attr;

/* ---- the op table ---- */
enum {
    MC_OPF_ELEMWISE = 1,
    MC_OPF_ROUTE = 2,
    MC_OPF_COMPOSITE = 4,
    MC_OPF_LOSS = 8,
    MC_OPF_GRAD = 16,  /* a gradient op the autodiff pass emits (docs/autodiff.md) */
    MC_OPF_OPTIM = 32, /* an optimizer step */
    MC_OPF_FUSED = 64, /* made by a fusion pass: no gradient rule, runs after autodiff */
    /* its kernel takes a scratch tensor after its outputs, laid out beside the kernel
     * and sized by mb_scratch_<ID> (backend/scratch.h); no other op gets one */
    MC_OPF_SCRATCH = 128
};
typedef enum {
#define OP(id, name, min_in, max_in, min_out, max_out, flags) MC_OP_##id,
#include "ops.def"
#undef OP
    MC_NUM_OPS
} mc_op;
typedef struct {
    const char *name;
    int min_in, max_in, min_out, max_out;
    unsigned flags;
} mc_op_info;
extern const mc_op_info mc_op_infos[MC_NUM_OPS];
bool mc_op_from_name(const char *name, mc_op *out);

typedef enum { MC_AP_REQ, MC_AP_DEF, MC_AP_OPT } mc_attr_presence;
typedef struct {
    mc_op op;
    const char *name;
    mc_attr_kind kind;
    mc_attr_presence presence;
    int64_t idef;
    double fdef;
    const char *sdef;
    const char *choices; /* "a|b|c" for strings, NULL otherwise */
} mc_attr_schema;
extern const mc_attr_schema mc_attr_schemas[];
extern const int mc_num_attr_schemas;
const mc_attr_schema *mc_attr_schema_find(mc_op op, const char *name);
int mc_choice_index(const char *choices, const char *s); /* in "a|b|c"; -1 if absent */
const char *mc_attr_kind_name(mc_attr_kind k); /* "int", "float", "string", ... */

/* ---- values and nodes ---- */
typedef enum { MC_VK_INPUT, MC_VK_PARAM, MC_VK_CONST, MC_VK_TEMP } mc_value_kind;

/* Where an initializer's bytes came from; shown in dumps, used by init-weights. */
typedef enum { MC_SRC_NONE, MC_SRC_INLINE, MC_SRC_INIT, MC_SRC_FILE, MC_SRC_FOLDED } mc_data_src;
typedef struct {
    const char *dist; /* "normal" "uniform" "zeros" "ones" */
    double mean, std, low, high;
    uint64_t seed;
} mc_init_recipe;

/* One read of a value: input `slot` of node `node`. */
typedef struct mc_use {
    int node, slot;
} mc_use;

typedef struct mc_value {
    const char *name;
    mc_dtype dt;
    mc_shape shape;
    bool has_shape;      /* false for temps until infer-shapes */
    mc_value_kind kind;
    bool is_output;      /* listed in the graph outputs */
    bool dead;
    int producer;        /* node id, -1 for inputs/params/consts */
    int src_index;       /* index in the JSON array that declared it, -1 if none */
    /* params and consts: raw little-endian bytes of dtype dt, C order; may point
     * into a mapped weights file (read-only). */
    const void *data;
    size_t nbytes;
    mc_data_src src;
    mc_init_recipe init; /* when src == MC_SRC_INIT */
    const char *file_key; /* when src == MC_SRC_FILE */
    void *rw;             /* a writable copy of data, once a training step updated it */
    bool narrowed_from_f32; /* quantize-weights stored it in dt (--weight-dtype) */
    bool stored_narrow;     /* declared f32, taken as the dtype its weights file holds */
    bool has_weight_dtype;  /* the JSON's "weight_dtype": quantize-weights stores it so */
    struct mc_weight_format {
        mc_dtype dt;
        int group; /* Q8/Q4: rows of K per scale (Q8: K, one scale per output channel) */
        bool zero; /* Q4: zero points (else 8 is every group's) */
    } weight_dtype;
    /* dt Q8/Q4 (ir/quant.c): data holds the values, these the scales [.., K/group, N]
     * and the zero points (or NULL), each plain C order as moert.h lays them out. */
    const float *qscale;
    const uint8_t *qzero;
    int qgroup;
    /* Every live node input that reads this value, kept by the graph calls below (add,
     * remove, set inputs, replace uses): passes find users here, never by a scan. */
    mc_use *uses;
    int nuses, cap_uses;
} mc_value;

typedef struct mc_node {
    mc_op op;
    const char *name;
    int nin, nout;
    int *in;             /* value ids; -1 for an omitted optional input */
    int *out;
    int nattr;
    mc_attr *attrs;      /* schema order (ir/attrs.def) */
    int src_index;       /* /nodes/N of the JSON node it came from; -1 if none */
    bool dead;
} mc_node;

/* The static memory plan (passes/plan_memory.c): every temp that is not a graph output,
 * and every node's kernel scratch, gets a byte range in one arena sized with each symbol
 * at its max. Valid only until the graph changes: every graph edit clears `valid`. */
typedef struct mc_plan {
    bool valid;
    int64_t peak;           /* arena bytes */
    int64_t *value_off;     /* per value id; -1 when the value is not in the arena */
    int64_t *value_bytes;   /* per value id: the bytes reserved */
    int *value_in_place;    /* per value id: the param it is written over, or -1 */
    int64_t *scratch_off;   /* per node id; -1 when the kernel needs no scratch */
    int64_t *scratch_bytes; /* per node id */
} mc_plan;

typedef struct mc_graph {
    mc_arena *arena;
    const char *name;    /* C identifier: the symbol prefix of generated code */
    const char *file;    /* model file, for diagnostics */
    bool training;       /* --mode=train: GWRoute broadcasts, etc. */
    mc_symbol syms[MC_MAX_SYMS];
    int nsyms;
    mc_value *values;
    int nvalues, cap_values;
    mc_node *nodes;
    int nnodes, cap_nodes;
    int *order;          /* live node ids, topological */
    int norder, cap_order;
    int *inputs;         /* value ids, in declaration order */
    int ninputs;
    int *outputs;
    int noutputs;
    /* Training: after a step, value update_src[i] is written into the state value
     * update_dst[i] (a param: a trained weight or an optimizer's state). */
    int *update_src, *update_dst;
    int nupdates;
    /* Training, after autodiff: value grad_value[i] is d loss / d param grad_param[i]. */
    int *grad_param, *grad_value;
    int ngrads;
    const char *weights_path; /* resolved "weights" file, or NULL */
    const char *weights_override; /* --weights FILE of the command line, or NULL */
    mc_plan plan;
} mc_graph;

mc_graph *mc_graph_new(const char *name);
void mc_graph_free(mc_graph *g);
int mc_graph_add_symbol(mc_graph *g, const char *name, int64_t max); /* -1 if full */
int mc_graph_find_symbol(const mc_graph *g, const char *name);      /* -1 if none */
int mc_graph_add_value(mc_graph *g, const char *name, mc_dtype dt, mc_value_kind kind);
int mc_graph_find_value(const mc_graph *g, const char *name);       /* -1 if none */
/* A name not used by any value yet: base, or base.1, base.2, ... */
const char *mc_graph_unique_name(mc_graph *g, const char *base);
/* Appends the node at the end of g->order. in/out are copied; attrs start empty. */
int mc_graph_add_node(mc_graph *g, mc_op op, const char *name, const int *in, int nin,
                      const int *out, int nout);
/* Same, placed in g->order just before node `anchor`. */
int mc_graph_add_node_before(mc_graph *g, int anchor, mc_op op, const char *name,
                             const int *in, int nin, const int *out, int nout);
void mc_graph_remove_node(mc_graph *g, int node); /* dead, unlinked from order and uses */
/* Input `slot` of `node` now reads `value` (-1: omitted); the use lists follow. */
void mc_node_set_input(mc_graph *g, int node, int slot, int value);
/* Replaces the node's whole input list (the frontend fills inputs after creating every
 * node, since a node may read a value a later node defines). */
void mc_node_set_inputs(mc_graph *g, int node, const int *in, int nin);
void mc_graph_add_output(mc_graph *g, int value);
void mc_graph_remove_output(mc_graph *g, int index);
void mc_graph_add_update(mc_graph *g, int src, int dst); /* see update_src */
void mc_graph_add_grad(mc_graph *g, int param, int value);  /* see grad_param */
/* Every use of value `from` (node inputs and graph outputs) becomes `to`. */
void mc_graph_replace_uses(mc_graph *g, int from, int to);
int mc_graph_count_uses(const mc_graph *g, int value); /* node inputs + outputs list */
/* The one node that reads `value` (through any number of its slots), or -1 when no
 * node or several nodes read it. Graph outputs and updates do not count here. */
int mc_value_single_user(const mc_graph *g, int value);
/* Whether anything but node inputs reads the value: a graph output or a training
 * step's state write. Fusion must keep such values materialised. */
bool mc_value_escapes(const mc_graph *g, int value);
/* Whether input `slot` of op is a product's weight, which may be f16 or bf16 next to f32
 * activations (MatMul, Gemm B, the expert products, the fused FFN ops and routers,
 * moe.MoE's FFN weights). */
bool mc_weight_slot(mc_op op, int slot);
/* Param or const v's data in float dtype `to` (from its float or quantized dt), in the arena:
 * rounded to nearest even when narrower, exact when wider (the interpreter's own
 * conversions, mc_tensor_load_bytes / mc_tensor_store_bytes). */
void mc_value_convert(mc_graph *g, mc_value *v, mc_dtype to);
/* ---- weight storage formats and quantized weights (ir/quant.c) ---- */
struct mc_tensor;
typedef struct mc_weight_format mc_weight_format;
/* "f32", "f16", "bf16", "int8", "int4[:GROUP][:zp]" (a weight's storage, as the CLI and
 * the JSON's "weight_dtype" name it) into *out; int4's group defaults to 32. */
bool mc_weight_format_parse(const char *name, mc_weight_format *out);
/* The name back (arena string); "int8" or "int4:32[:zp]". */
const char *mc_weight_format_str(mc_graph *g, const mc_weight_format *f);
/* Why f cannot store param v ([.., K, N]: K a multiple of the group, int4's even), or
 * NULL when it can. Arena string. */
const char *mc_weight_format_misfit(mc_graph *g, const mc_value *v, const mc_weight_format *f);
/* Quantizes f32 param v in place (arena copies): per group, the scale (and zero point)
 * that minimize the squared error of the rounded values (docs/backend.md). */
void mc_value_quantize(mc_graph *g, mc_value *v, const mc_weight_format *f);
/* Q8/Q4 value v's weights as f32 (numel floats): (q - zero) * scale, the products' own. */
void mc_value_dequantize(const mc_value *v, float *out);
/* Shape of v's scales (and zero points): v's with K replaced by K / group. */
mc_shape mc_quant_scale_shape(const mc_value *v);
/* Param or const v as the interpreter holds it (t allocated by the caller for v's dims,
 * as f32 when v is quantized: its dequantized weights). */
void mc_value_load(const mc_value *v, struct mc_tensor *t);
mc_dtype mc_value_held_dtype(const mc_value *v);
void mc_graph_set_producer(mc_graph *g, int node);     /* out values' producer = node */
/* A copy of g->order (in the arena) for passes that remove nodes while they walk it. */
int *mc_graph_order_copy(mc_graph *g, int *out_n);
/* Reorders g->order topologically, stable (keeps the current relative order where
 * allowed); false if there is a cycle (then order is unchanged). */
bool mc_graph_toposort(mc_graph *g);

static inline mc_value *mc_val(const mc_graph *g, int id) { return &g->values[id]; }
static inline mc_node *mc_nod(const mc_graph *g, int id) { return &g->nodes[id]; }

/* Attributes. Getters take a name from the op's schema and die on a missing REQ/DEF
 * attribute (the frontend guarantees presence). */
const mc_attr *mc_attr_get(const mc_node *n, const char *name); /* NULL if absent */
int64_t mc_attr_int(const mc_node *n, const char *name);
double mc_attr_float(const mc_node *n, const char *name);
const char *mc_attr_str(const mc_node *n, const char *name);
/* A STRING attribute as the index of its value among the row's choices, to compare with
 * the MC_A_<OP>_<name>_<choice> names of ir/attrs.h. */
int mc_attr_choice(const mc_node *n, const char *name);
void mc_node_set_int(mc_graph *g, mc_node *n, const char *name, int64_t v);
void mc_node_set_float(mc_graph *g, mc_node *n, const char *name, double v);
void mc_node_set_str(mc_graph *g, mc_node *n, const char *name, const char *v);
void mc_node_set_ints(mc_graph *g, mc_node *n, const char *name, const int64_t *v, int len);
void mc_node_set_floats(mc_graph *g, mc_node *n, const char *name, const double *v, int len);
/* Adds every DEF attribute the node lacks and sorts attrs into schema order. */
void mc_node_fill_defaults(mc_graph *g, mc_node *n);
/* Copies the attribute of node `src` named `name` (must exist) onto `dst`. */
void mc_node_copy_attr(mc_graph *g, mc_node *dst, const mc_node *src, const char *name);

/* JSON path of a node ("/nodes/3") or value ("/initializers/2", "/inputs/0"), and the
 * "(name, op)" tag used in diagnostics. Arena strings. */
const char *mc_node_path(const mc_graph *g, const mc_node *n, const char *sub);
bool mc_node_error(mc_diag *d, const mc_graph *g, const mc_node *n, const char *sub,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Element count of a shape for given symbol values; -1 if it would exceed MC_MAX_DIM. */
int64_t mc_shape_numel(const mc_shape *s, const int64_t *symvals);
/* Same with every symbol at its max (what buffers are planned for). */
int64_t mc_shape_numel_max(const mc_graph *g, const mc_shape *s);
/* "[T,768]" into buf. */
const char *mc_shape_str(const mc_graph *g, const mc_shape *s, char *buf, size_t n);

/* ---- shape inference and verification (ir/shape*.c, ir/verify.c) ----
 * mc_infer_node checks a node's inputs and attributes against its contract and sets
 * the dtype and shape of its outputs. */
bool mc_infer_node(mc_graph *g, int node, mc_diag *d);
bool mc_infer_shapes(mc_graph *g, mc_diag *d); /* every node, in order */
/* Structure (ids, producers, order, arity, schema) and re-inferred shapes match. */
bool mc_verify(mc_graph *g, mc_diag *d);

/* ---- text and dot dumps (ir/print.c, ir/dot.c) ---- */
#include <stdio.h>
void mc_print_graph(FILE *f, const mc_graph *g);
void mc_print_node(FILE *f, const mc_graph *g, const mc_node *n);
void mc_print_dot(FILE *f, const mc_graph *g);

/* ---- tensors for the interpreter and constant folding (ir/tensor.c) ----
 * Float dtypes are held as mc_real (f16/bf16 values rounded to their dtype after every
 * op); integer and bool dtypes as int64_t. Raw bytes are little-endian, C order. */
/* The interpreter's real number: float, or double in the f64 build of the interpreter
 * that gradient checks use (MC_REAL_DOUBLE; every float dtype is then computed and held
 * in double, rounding only f16/bf16). */
#ifdef MC_REAL_DOUBLE
typedef double mc_real;
#else
typedef float mc_real;
#endif
typedef struct mc_tensor {
    mc_dtype dt;
    int rank;
    int64_t dims[MC_MAX_RANK];
    int64_t numel;
    mc_real *f; /* float dtypes */
    int64_t *i; /* integer and bool dtypes */
} mc_tensor;
/* Zeroed storage; false with "cannot allocate N bytes for WHAT" on failure. */
bool mc_tensor_alloc(mc_tensor *t, mc_dtype dt, int rank, const int64_t *dims, mc_diag *d,
                     const char *what);
void mc_tensor_free(mc_tensor *t);
/* Reads numel elements of dtype dt from raw bytes (t already allocated). */
void mc_tensor_load_bytes(mc_tensor *t, const void *bytes);
void mc_tensor_store_bytes(const mc_tensor *t, void *out); /* numel * dtype size */
/* Dims of a value's shape under symbol values. */
void mc_shape_eval(const mc_shape *s, const int64_t *symvals, int64_t *out_dims);
/* f16/bf16: the nearest value of that dtype (round to nearest even, straight from
 * mc_real); identity for f32, so the f64 build keeps f32 values in double. */
mc_real mc_round_to_dtype(mc_real x, mc_dtype dt);
uint16_t mc_f32_to_f16(float x);
float mc_f16_to_f32(uint16_t h);
uint16_t mc_f32_to_bf16(float x);
float mc_bf16_to_f32(uint16_t h);

/* ---- the reference interpreter (ir/interp*.c) ----
 * Plain, obviously correct C following ROUTING.md's tie rules and summation orders.
 * Symbols are bound from the input tensors' dims (and checked against their max). */
bool mc_bind_symbols(const mc_graph *g, const mc_tensor *inputs, int64_t *out_symvals,
                     mc_diag *d);
/* inputs: g->ninputs tensors in declaration order. outputs: g->noutputs tensors that
 * this allocates (the caller frees them with mc_tensor_free). */
bool mc_interp_run(const mc_graph *g, const mc_tensor *inputs, mc_tensor *outputs,
                   mc_diag *d);
/* A training step: like mc_interp_run, then every update of the graph (update_src) is
 * written into its param, so the next step sees the new weights and optimizer state. */
bool mc_interp_step(mc_graph *g, const mc_tensor *inputs, mc_tensor *outputs, mc_diag *d);
/* One node: ins[i] is NULL for an omitted optional input; outs are allocated here from
 * the output values' shapes. Used by the driver and by fold-constants. */
bool mc_interp_node(const mc_graph *g, const mc_node *n, const int64_t *symvals,
                    const mc_tensor *const *ins, mc_tensor *outs, mc_diag *d);

/* ---- per-op hooks, generated from the op table so that a missing one fails to link ---- */
typedef struct mc_infer_ctx {
    mc_graph *g;
    mc_node *n;
    mc_diag *d;
} mc_infer_ctx;
typedef struct mc_kernel_ctx {
    const mc_graph *g;
    const mc_node *n;
    const int64_t *symvals;
    const mc_tensor *const *in; /* n->nin entries, NULL where omitted */
    mc_tensor *out;             /* n->nout entries, allocated and zeroed */
    mc_diag *d;                 /* run-time errors (index out of range, ...) */
} mc_kernel_ctx;
#define OP(id, name, min_in, max_in, min_out, max_out, flags)                              \
    bool mc_infer_##id(mc_infer_ctx *cx);                                                  \
    bool mc_interp_##id(const mc_kernel_ctx *k);
#include "ops.def"
#undef OP

#endif
