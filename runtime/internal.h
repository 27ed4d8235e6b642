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

#endif
