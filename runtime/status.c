/* runtime/status.c: status codes, per-thread messages, and the planned arena. */
#include "moert.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static _Thread_local char last_error[512];

const char *moert_last_error(void) {
    return last_error;
}

const char *moert_status_name(moert_status s) {
    switch (s) {
    case MOERT_OK: return "ok";
    case MOERT_ERR_ARGUMENT: return "bad argument";
    case MOERT_ERR_MEMORY: return "out of memory";
    case MOERT_ERR_IO: return "i/o error";
    case MOERT_ERR_FORMAT: return "bad file format";
    case MOERT_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

moert_status moert_fail(moert_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return s;
}

moert_status moert_arena_init(moert_arena *a, size_t size) {
    a->base = NULL;
    a->size = 0;
    if (size == 0) return MOERT_OK;
    size_t rounded = (size + MOERT_ALIGN - 1) / MOERT_ALIGN * MOERT_ALIGN;
    if (rounded < size) return moert_fail(MOERT_ERR_MEMORY, "arena of %zu bytes overflows", size);
    a->base = aligned_alloc(MOERT_ALIGN, rounded);
    if (!a->base)
        return moert_fail(MOERT_ERR_MEMORY, "cannot allocate an arena of %zu bytes", rounded);
    a->size = rounded;
    return MOERT_OK;
}

void moert_arena_release(moert_arena *a) {
    free(a->base);
    a->base = NULL;
    a->size = 0;
}
