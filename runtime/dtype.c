/* runtime/dtype.c: element types as the generated header names them, and the
 * file-writing helpers the .npy and safetensors writers share. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Same order as moert_dtype (and mc_dtype in the compiler). */
static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    [MOERT_F32] = {"f32", 4}, [MOERT_F16] = {"f16", 2}, [MOERT_BF16] = {"bf16", 2},
    [MOERT_I32] = {"i32", 4}, [MOERT_I64] = {"i64", 8}, [MOERT_BOOL] = {"bool", 1},
    [MOERT_Q8] = {"int8", 1}, [MOERT_Q4] = {"int4", 1}, /* int4: a byte holds two */
};
enum { NUM_DTYPES = sizeof dtypes / sizeof dtypes[0] };

const char *moert_dtype_name(moert_dtype t) {
    return (unsigned)t < NUM_DTYPES ? dtypes[t].name : "?";
}

size_t moert_dtype_size(moert_dtype t) {
    return (unsigned)t < NUM_DTYPES ? dtypes[t].size : 0;
}

size_t moert_nbytes(const int64_t *dims, int64_t rank, size_t elem, int *ok) {
    size_t n = elem;
    *ok = 1;
    for (int64_t i = 0; i < rank; i++) {
        if (dims[i] < 0 || (dims[i] > 0 && n > SIZE_MAX / (uint64_t)dims[i])) {
            *ok = 0;
            return 0;
        }
        n *= (size_t)dims[i];
    }
    return n;
}

void moert_format_dims(char *buf, size_t cap, const int64_t *dims, int64_t rank) {
    int n = snprintf(buf, cap, "[");
    for (int64_t i = 0; i < rank && n >= 0 && (size_t)n < cap; i++)
        n += snprintf(buf + n, cap - (size_t)n, i ? ", %lld" : "%lld", (long long)dims[i]);
    if (n >= 0 && (size_t)n < cap) snprintf(buf + n, cap - (size_t)n, "]");
}

static int write_fully(int fd, const unsigned char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return 0;
        p += w;
        n -= (size_t)w;
    }
    return 1;
}

/* The temporary name carries the pid and a counter so concurrent writers, in this
 * process or another, never share one; O_EXCL makes sure of it. */
static int open_temp(const char *path, char **out_tmp) {
    static atomic_uint counter;
    size_t len = strlen(path) + 48;
    char *tmp = malloc(len);
    if (!tmp) return -1;
    snprintf(tmp, len, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&counter, 1));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_TRUNC, 0666);
    if (fd < 0) {
        free(tmp);
        return -1;
    }
    *out_tmp = tmp;
    return fd;
}

moert_status moert_write_atomic(const char *path, const moert_piece *pieces, int64_t n) {
    char *tmp = NULL;
    int fd = open_temp(path, &tmp);
    if (fd < 0) return moert_fail(MOERT_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    int ok = 1;
    for (int64_t i = 0; ok && i < n; i++)
        ok = write_fully(fd, pieces[i].p, pieces[i].n);
    int err = ok ? 0 : errno;
    if (close(fd) != 0 && ok) ok = 0, err = errno;
    if (ok && rename(tmp, path) != 0) ok = 0, err = errno;
    if (!ok) unlink(tmp);
    free(tmp);
    if (!ok) return moert_fail(MOERT_ERR_IO, "%s: cannot write: %s", path, strerror(err));
    return MOERT_OK;
}
