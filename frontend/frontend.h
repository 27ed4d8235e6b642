/* frontend/frontend.h: from files to graphs. JSON model (cJSON), safetensors (mmap),
 * .npy arrays, and the seeded init recipes. Every error names the file, the JSON path
 * and what was expected versus found (docs/format.md lists the rules). */
#ifndef MC_FRONTEND_H
#define MC_FRONTEND_H

#include "ir.h"

/* A symbol's largest value given on the command line (--max NAME=N): ONNX's dynamic
 * dims have names but no maximum. */
typedef struct mc_sym_max {
    const char *name;
    int64_t max;
} mc_sym_max;

typedef struct mc_safetensors mc_safetensors;

typedef struct mc_load_opts {
    bool training; /* --mode=train */
    /* When set, every initializer found in this safetensors file takes its bytes from
     * it (before any init recipe; inline data still wins). NULL: the model's "weights". */
    const char *weights_path;
    /* Most bytes an init recipe may generate for one initializer; 0: no limit. The fuzz
     * target sets one so that declared sizes stay testable. */
    int64_t max_init_bytes;
    /* Initializers' bytes by name, read before anything else (an ONNX model's). */
    const mc_safetensors *weights_table;
    const mc_sym_max *sym_max; /* symbols' maxima for ONNX models */
    int nsym_max;
    /* moec import: when set and the model is ONNX, the JSON it was read as (free with
     * free()), naming onnx_json_weights as its weights file. */
    char **onnx_json;
    const char *onnx_json_weights;
} mc_load_opts;

/* Reads, checks and builds the graph: names resolved, arity and attributes checked
 * against the op table (defaults filled in), no cycles, nodes in topological order,
 * initializer bytes resolved. Shapes of temps are left to infer-shapes. */
mc_graph *mc_load_model(const char *path, const mc_load_opts *opts, mc_diag *d);
/* Same from memory (fuzzing, tests); `file` is only used in messages and `base_dir` to
 * resolve a relative "weights" path (NULL: the current directory). */
mc_graph *mc_load_model_from_memory(const char *json, size_t len, const char *file,
                                    const char *base_dir, const mc_load_opts *opts, mc_diag *d);

/* ---- ONNX (frontend/onnx.c) ---- */
/* Whether a model file's bytes are ONNX (protobuf) rather than JSON text: every command
 * reads both, recognizing the format by content. */
bool mc_onnx_is_model(const void *buf, size_t len);
/* An ONNX model read into a graph through moec's JSON loader (docs/format.md, "ONNX
 * models"); `file` names it in messages and gives the model's name. */
mc_graph *mc_load_onnx(const void *buf, size_t len, const char *file, const char *base_dir,
                       const mc_load_opts *opts, mc_diag *d);

/* ---- safetensors ---- */
typedef struct mc_st_tensor {
    const char *name;
    mc_dtype dt;
    int rank;
    int64_t dims[MC_MAX_RANK];
    const void *data; /* into the mapping; 0-byte tensors have data == NULL */
    size_t nbytes;
} mc_st_tensor;
struct mc_safetensors {
    const char *path;
    int ntensors;
    mc_st_tensor *tensors;
};
/* Maps the file read-only (unmapped when the arena is freed) and checks the header:
 * JSON, dtypes, shapes, offsets in order, inside the file, sizes matching. */
bool mc_st_open(mc_safetensors *st, const char *path, mc_arena *a, mc_diag *d);
/* A whole file mapped read-only until the arena is freed ("" for an empty file); NULL
 * after an error naming it as `what` ("weights file"). */
const void *mc_map_file(const char *path, const char *what, size_t *len, mc_arena *a, mc_diag *d);
bool mc_st_parse(mc_safetensors *st, const void *buf, size_t len, mc_arena *a, mc_diag *d);
const mc_st_tensor *mc_st_find(const mc_safetensors *st, const char *name);
/* Writes every param (and const) of g that has data, sorted by name, 8-byte aligned
 * offsets; to a temporary file renamed into place, so nothing is half-written. */
bool mc_st_write_params(const char *path, const mc_graph *g, mc_diag *d);
/* Same, params only unless `consts`: what a training run saves (weights and state). */
bool mc_st_write_values(const char *path, const mc_graph *g, bool consts, mc_diag *d);

/* ---- .npy (v1/v2 headers, little-endian, C order) ---- */
typedef enum { MC_NPY_F32, MC_NPY_F64, MC_NPY_I32, MC_NPY_I64, MC_NPY_BOOL } mc_npy_dtype;
typedef struct mc_npy {
    mc_npy_dtype dt;
    int rank;
    int64_t dims[MC_MAX_RANK];
    int64_t numel;
    void *data; /* mc_alloc'd, numel elements */
} mc_npy;
const char *mc_npy_dtype_name(mc_npy_dtype t); /* "float32", ... */
bool mc_npy_parse(const void *buf, size_t len, mc_npy *out, mc_diag *d);
bool mc_npy_load(const char *path, mc_npy *out, mc_diag *d);
bool mc_npy_save(const char *path, const mc_npy *a, mc_diag *d); /* temp + rename */
void mc_npy_free(mc_npy *a);
/* Converts to an interpreter tensor; the dtype must be exactly `want` (float32 for f32,
 * ...), otherwise an error naming `what`. */
bool mc_npy_to_tensor(const mc_npy *a, mc_dtype want, mc_tensor *out, mc_diag *d, const char *what);
/* f32 -> float32, i32 -> int32, i64 -> int64, bool -> bool; f16/bf16 -> float32. */
bool mc_npy_from_tensor(const mc_tensor *t, mc_npy *out, mc_diag *d);

/* ---- seeded init recipes: bit-identical on every machine (own PRNG, no libm) ---- */
/* Uses up to as many threads as CPUs are online; the bytes never depend on it. */
void mc_init_fill(const mc_init_recipe *r, mc_dtype dt, int64_t n, void *out_bytes);
/* The same with at most max_threads threads (tests force the threaded path with it). */
void mc_init_fill_threads(const mc_init_recipe *r, mc_dtype dt, int64_t n, void *out_bytes,
                          int max_threads);

#endif
