/* runtime/moert.h: libmoert, what generated code and drivers need at run time and
 * nothing more. The only header generated code includes. Dependency-free C11 plus
 * POSIX threads; never aborts the host program: every failure is a status with a
 * message. */
#ifndef MOERT_H
#define MOERT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum moert_status {
    MOERT_OK = 0,
    MOERT_ERR_ARGUMENT = 1, /* NULL buffer, symbol above its max, bad size */
    MOERT_ERR_MEMORY = 2,   /* allocation failed */
    MOERT_ERR_IO = 3,       /* file missing or unreadable */
    MOERT_ERR_FORMAT = 4,   /* weights or .npy file malformed or not matching */
    MOERT_ERR_INTERNAL = 5
} moert_status;

/* The message of the last failure on this thread ("" after success). */
const char *moert_last_error(void);
const char *moert_status_name(moert_status s);
/* Records a message for the calling thread and returns `s`. */
moert_status moert_fail(moert_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One aligned block sized from the memory plan, allocated once at create time. */
enum { MOERT_ALIGN = 64 };
typedef struct moert_arena {
    unsigned char *base;
    size_t size;
} moert_arena;
moert_status moert_arena_init(moert_arena *a, size_t size);
void moert_arena_release(moert_arena *a);

/* fn(ctx, begin, end) over [0, n) split into contiguous chunks of at least `grain`
 * iterations, run on the pool (MOERT_NUM_THREADS threads, default: all cores). The
 * calling thread works too. Calls may not nest: a nested call runs serially. */
typedef void (*moert_task_fn)(void *ctx, int64_t begin, int64_t end);
void moert_parallel_for(int64_t n, int64_t grain, moert_task_fn fn, void *ctx);
int moert_num_threads(void);

/* ---- what the generated header describes ---- */
typedef enum moert_dtype {
    MOERT_F32,
    MOERT_F16,
    MOERT_BF16,
    MOERT_I32,
    MOERT_I64,
    MOERT_BOOL, /* bool: 1 byte */
    /* Quantized weights (params only; docs/format.md "Quantized weights"): a matrix
     * [.., K, N] of int8 (signed, one byte each) or int4 (two K-consecutive values per
     * byte, low nibble first, unsigned 0..15) with f32 scales per group of K rows. In a
     * safetensors file their values are an I8 or a U8 tensor. */
    MOERT_Q8,
    MOERT_Q4
} moert_dtype;
const char *moert_dtype_name(moert_dtype t); /* "f32" ... */
size_t moert_dtype_size(moert_dtype t);

typedef struct moert_dim {
    int64_t c; /* the dim is c * (value of symbol `sym`), or c when sym < 0 */
    int64_t sym;
} moert_dim;
typedef struct moert_symbol_info {
    const char *name;
    int64_t max;
} moert_symbol_info;
typedef struct moert_tensor_info {
    const char *name;
    int64_t dtype; /* moert_dtype */
    int64_t rank;
    const moert_dim *dims;
} moert_tensor_info;
typedef struct moert_model_info {
    const char *name;
    int64_t num_symbols;
    const moert_symbol_info *symbols;
    int64_t num_inputs;
    const moert_tensor_info *inputs;
    int64_t num_outputs;
    const moert_tensor_info *outputs;
    int64_t num_params; /* weights, in the order of the weights file */
    const moert_tensor_info *params;
    int64_t arena_bytes;      /* peak of the memory plan, all symbols at their max */
    int64_t external_weights; /* 1: _create needs a safetensors file */
    int64_t train;            /* 1: a training step; params are writable copies */
} moert_model_info;

/* ---- the model object behind <name>_create/_run/_destroy ----
 * Generated code reads the first two fields directly; the rest is private. */
typedef struct moert_model moert_model;
struct moert_model {
    unsigned char *arena; /* arena_bytes, MOERT_ALIGN-aligned */
    const void **params;  /* external weights: one pointer per param, in info order */
};
/* How a param is stored for the generated code (external weights only). */
typedef struct moert_param_desc {
    int64_t panel_nr; /* 0: as in the file; else GEMM panels of this width (mk.h) */
    int64_t group;    /* MOERT_Q8 / MOERT_Q4: rows of K per scale; 0 otherwise */
    int64_t zero;     /* MOERT_Q4: 1 when it has zero points (NAME.zero), else 8 is */
} moert_param_desc;
/* Uniform entry: symbol values, then input and output buffers in info order. */
typedef moert_status (*moert_run_fn)(moert_model *m, const int64_t *syms, const void *const *inputs,
                                     void *const *outputs);
typedef struct moert_model_desc {
    const moert_model_info *info;
    const moert_param_desc *params; /* info->num_params entries */
    moert_run_fn run;               /* inference: the run; training: one training step */
    const void *const *initial;     /* training with embedded weights: each param's start */
} moert_model_desc;
/* Allocates the arena; with external weights maps `weights_path` (safetensors), checks
 * every param's name, dtype and shape against info, and packs panels. */
moert_status moert_model_create(const moert_model_desc *d, const char *weights_path,
                                moert_model **out);
void moert_model_destroy(moert_model *m);
/* Training: every param (weights and optimizer state) as a safetensors file. */
moert_status moert_model_save_weights(moert_model *m, const char *path);

/* B[.., K, N] of elem-byte elements (lead = product of leading dims) into GEMM panels of
 * width nr: for each matrix, ceil(N/nr) panels, panel p holding B[k][p*nr + j] at
 * [p][k][j] (zero past N); dst holds lead * ceil(N/nr) * K * nr elements. */
void moert_pack_panels(const void *src, size_t elem, int64_t lead, int64_t K, int64_t N, int64_t nr,
                       void *dst);

/* A float weight (f32, f16 or bf16) in the panels the GEMM micro-kernels read. f32 and f16
 * panels are moert_pack_panels'. bf16 panels hold their rows in pairs, rows 2i and 2i+1
 * interleaved element by element ([p][i][j][2]; K rounded up to even with a zero row):
 * the operand layout of the bf16 dot-product instructions (AVX512-BF16 vdpbf16ps), and
 * one load of two rows for the kernels that widen instead. */
static inline int64_t moert_panel_rows(moert_dtype dt, int64_t K) {
    return dt == MOERT_BF16 ? K + (K & 1) : K;
}
static inline int64_t moert_panel_elems(moert_dtype dt, int64_t K, int64_t N, int64_t nr) {
    return (N + nr - 1) / nr * nr * moert_panel_rows(dt, K);
}
void moert_pack_weight(moert_dtype dt, const void *src, int64_t lead, int64_t K, int64_t N,
                       int64_t nr, void *dst);

/* A quantized matrix [K, N] (MOERT_Q8 or MOERT_Q4, scales per `group` rows of K) in
 * GEMM panels of width nr: the values' panels, then the scales' (f32), then the zero
 * points' (one byte each, only with zero points), panel p of each at p times its size;
 * columns past N are zero. The values' panels hold K in blocks, the operand layout of the
 * int8 dot-product instructions (vpdpbusd): column j of a block is 4 bytes, int8 rows
 * 4i..4i+3 (K rounded up to a multiple of 4 with zero rows), int4 rows 8i..8i+3 in the
 * low nibbles and 8i+4..8i+7 in the high ones (int4 groups are multiples of
 * MOERT_Q4_GROUP_ROWS, so K is too). With nr = 0 (as in a file) each array is plain C
 * order: values [K, N] (int4: [K/2, N] bytes, rows 2i and 2i+1 in the low and high
 * nibbles of byte row i), scales [K/group, N], zeros [K/group, N]. */
enum { MOERT_Q4_GROUP_ROWS = 8 };
typedef struct moert_quant_sizes {
    int64_t values, scales, zeros; /* bytes of each array, per matrix */
    int64_t matrix;                /* their sum: matrix l of a batch at l * matrix */
} moert_quant_sizes;
/* K rows of a quantized panel: int8's rounded up to a multiple of 4. */
static inline int64_t moert_quant_panel_rows(moert_dtype dt, int64_t K) {
    return dt == MOERT_Q8 ? (K + 3) / 4 * 4 : K;
}
static inline moert_quant_sizes moert_quant_layout(moert_dtype dt, int64_t K, int64_t N,
                                                   int64_t group, int64_t zero, int64_t nr) {
    int64_t cols = nr > 0 ? (N + nr - 1) / nr * nr : N, groups = group > 0 ? K / group : 0;
    int64_t rows = nr > 0 ? moert_quant_panel_rows(dt, K) : K;
    moert_quant_sizes s;
    s.values = (dt == MOERT_Q4 ? rows / 2 : rows) * cols;
    s.scales = groups * cols * 4;
    s.zeros = zero ? groups * cols : 0;
    s.matrix = s.values + s.scales + s.zeros;
    return s;
}
/* lead matrices given as the three plain arrays into panels (dst: lead times the packed
 * matrix size). zeros is NULL without zero points. */
void moert_pack_quant(moert_dtype dt, const void *values, const float *scales, const uint8_t *zeros,
                      int64_t lead, int64_t K, int64_t N, int64_t group, int64_t nr, void *dst);

/* ---- safetensors, read-only, mapped ---- */
typedef struct moert_st_tensor {
    const char *name;
    moert_dtype dtype;
    int64_t rank;
    int64_t dims[8];
    const void *data;
    size_t nbytes;
} moert_st_tensor;
typedef struct moert_st_file moert_st_file;
moert_status moert_st_open(const char *path, moert_st_file **out);
const moert_st_tensor *moert_st_find(const moert_st_file *f, const char *name); /* NULL */
void moert_st_close(moert_st_file *f);
/* Writes tensors (data in host order) as a safetensors file, atomically (temp+rename). */
moert_status moert_st_write(const char *path, const moert_st_tensor *tensors, int64_t n);

/* ---- .npy for drivers (v1/v2 headers, little-endian, C order) ---- */
typedef struct moert_npy {
    moert_dtype dtype;
    int64_t rank;
    int64_t dims[8];
    void *data; /* malloc'ed, numel * dtype size */
} moert_npy;
moert_status moert_npy_read(const char *path, moert_npy *out);
moert_status moert_npy_write(const char *path, moert_dtype dtype, int64_t rank, const int64_t *dims,
                             const void *data); /* atomically */
void moert_npy_free(moert_npy *a);

/* The `moec build` driver: ./model --input x=x.npy --output y=y.npy [--sym T=N]
 * [--bench N]. Returns the process exit status (0 ok, 1 bad input, 2 misuse). */
int moert_driver_main(int argc, char **argv, const moert_model_desc *d);

#ifdef __cplusplus
}
#endif
#endif
