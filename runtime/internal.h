/* runtime/internal.h: what libmoert's files share and nothing outside needs. */
#ifndef MOERT_INTERNAL_H
#define MOERT_INTERNAL_H

#include "moert.h"

/* One contiguous piece of a file being written. */
typedef struct moert_piece {
    const void *p;
    size_t n;
} moert_piece;

/* Writes the pieces in order to a temporary file next to `path` and renames it into
 * place, so a reader never sees a half-written file and a failure leaves the old one. */
moert_status moert_write_atomic(const char *path, const moert_piece *pieces, int64_t n);

/* Product of dims as a byte count of `elem`-byte elements; 0 when it overflows or a
 * dim is negative (callers distinguish with `ok`). */
size_t moert_nbytes(const int64_t *dims, int64_t rank, size_t elem, int *ok);

/* "[2, 3]" into buf, truncated to cap. */
void moert_format_dims(char *buf, size_t cap, const int64_t *dims, int64_t rank);

/* A model's params (runtime/weights.c): from its weights file, shared by every inference
 * instance of the model on that unchanged file, or private to a training instance; or
 * (training with embedded weights) copies of the compiled-in starting values. */
typedef struct moert_weight_set moert_weight_set;
moert_status moert_weights_acquire(const moert_model_desc *d, const char *path,
                                   moert_weight_set **out);
moert_status moert_weights_copy_initial(const moert_model_desc *d, moert_weight_set **out);
const void **moert_weights_params(moert_weight_set *w);
void moert_weights_release(moert_weight_set *w); /* NULL: nothing */
const char *moert_model_name(const moert_model_info *info); /* "model" when unnamed */
size_t moert_param_bytes(const moert_tensor_info *p);      /* a param's plain bytes */

#endif
