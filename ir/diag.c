/* ir/diag.c: diagnostics. The first error wins; later ones are dropped so that a
 * message always describes the root cause, and tests can compare it exactly. */
#include "ir.h"

#include <stdio.h>
#include <string.h>

void mc_diag_init(mc_diag *d, const char *file) {
    d->file = file ? file : "moec";
    d->failed = false;
    d->msg[0] = 0;
}

bool mc_verror(mc_diag *d, const char *path, const char *fmt, va_list ap) {
    if (d->failed) return false;
    d->failed = true;
    int n;
    if (path && *path)
        n = snprintf(d->msg, sizeof d->msg, "%s: error: %s: ", d->file, path);
    else
        n = snprintf(d->msg, sizeof d->msg, "%s: error: ", d->file);
    if (n < 0 || (size_t)n >= sizeof d->msg) return false;
    vsnprintf(d->msg + n, sizeof d->msg - (size_t)n, fmt, ap);
    return false;
}

bool mc_error(mc_diag *d, const char *path, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    mc_verror(d, path, fmt, ap);
    va_end(ap);
    return false;
}
