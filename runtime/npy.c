/* runtime/npy.c: NumPy .npy arrays for the `moec build` driver. Reads format versions
 * 1, 2 and 3 (they differ only in the header length field and its encoding), little
 * endian and C order; writes version 1 with the data starting at a multiple of 64 bytes,
 * as numpy itself does. bf16 has no .npy dtype, so it is neither read nor written. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const struct {
    const char *descr;
    moert_dtype dt;
} npy_types[] = {
    {"<f4", MOERT_F32}, {"<f2", MOERT_F16},  {"<i4", MOERT_I32},
    {"<i8", MOERT_I64}, {"|b1", MOERT_BOOL},
};
enum { NUM_NPY_TYPES = sizeof npy_types / sizeof npy_types[0], MAX_HEADER = 1 << 20 };

static const char *descr_of(moert_dtype dt) {
    for (int i = 0; i < NUM_NPY_TYPES; i++)
        if (npy_types[i].dt == dt) return npy_types[i].descr;
    return NULL;
}

/* What follows 'key': in the header dict, spaces skipped; NULL when absent. */
static const char *dict_value(const char *h, const char *key) {
    char pat[32];
    snprintf(pat, sizeof pat, "'%s'", key);
    const char *p = strstr(h, pat);
    if (!p) return NULL;
    for (p += strlen(pat); *p == ' ';)
        p++;
    if (*p++ != ':') return NULL;
    while (*p == ' ')
        p++;
    return p;
}

static moert_status parse_descr(const char *path, const char *h, moert_npy *out) {
    const char *p = dict_value(h, "descr");
    if (!p || *p != '\'')
        return moert_fail(MOERT_ERR_FORMAT,
                          "%s: expected a 'descr' string in the header, found none", path);
    char descr[16];
    size_t n = 0;
    for (p++; *p && *p != '\'' && n < sizeof descr - 1; p++)
        descr[n++] = *p;
    descr[n] = 0;
    for (int i = 0; i < NUM_NPY_TYPES; i++)
        if (strcmp(descr, npy_types[i].descr) == 0) {
            out->dtype = npy_types[i].dt;
            return MOERT_OK;
        }
    if (descr[0] == '>')
        return moert_fail(MOERT_ERR_FORMAT, "%s: expected little-endian data, found '%s'", path,
                          descr);
    return moert_fail(MOERT_ERR_FORMAT, "%s: expected dtype <f4, <f2, <i4, <i8 or |b1, found '%s'",
                      path, descr);
}

static moert_status parse_shape(const char *path, const char *h, moert_npy *out) {
    const char *p = dict_value(h, "shape");
    if (!p || *p != '(')
        return moert_fail(MOERT_ERR_FORMAT,
                          "%s: expected a 'shape' tuple in the header, found none", path);
    for (p++, out->rank = 0;;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == ')') return MOERT_OK;
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 0)
            return moert_fail(MOERT_ERR_FORMAT,
                              "%s: expected dims >= 0 in the shape, found '%.20s'", path, p);
        if (out->rank == 8)
            return moert_fail(MOERT_ERR_FORMAT, "%s: expected at most 8 dims, found more", path);
        out->dims[out->rank++] = v;
        p = end;
    }
}

static moert_status parse_dict(const char *path, const char *h, moert_npy *out) {
    moert_status s = parse_descr(path, h, out);
    if (s == MOERT_OK) s = parse_shape(path, h, out);
    if (s != MOERT_OK) return s;
    const char *fo = dict_value(h, "fortran_order");
    if (!fo || strncmp(fo, "False", 5) != 0)
        return moert_fail(MOERT_ERR_FORMAT, "%s: expected C order, found fortran_order %s", path,
                          fo && strncmp(fo, "True", 4) == 0 ? "True" : "missing or malformed");
    return MOERT_OK;
}

/* The preamble: magic, version, then a u16 (v1) or u32 (v2, v3) header length. */
static moert_status read_preamble(FILE *f, const char *path, size_t *out_hlen, size_t *out_start) {
    unsigned char p[12];
    size_t got = fread(p, 1, sizeof p, f);
    if (got < 10 || memcmp(p, "\x93NUMPY", 6) != 0)
        return moert_fail(MOERT_ERR_FORMAT, "%s: expected the .npy magic \\x93NUMPY, found %s",
                          path, got < 10 ? "a shorter file" : "other bytes");
    if (p[6] < 1 || p[6] > 3)
        return moert_fail(MOERT_ERR_FORMAT,
                          "%s: expected .npy format version 1, 2 or 3, found %d.%d", path, p[6],
                          p[7]);
    *out_start = p[6] == 1 ? 10 : 12;
    if (got < *out_start)
        return moert_fail(MOERT_ERR_FORMAT, "%s: expected a header, found a truncated file", path);
    *out_hlen = p[6] == 1
                    ? (size_t)(p[8] | p[9] << 8)
                    : (size_t)p[8] | (size_t)p[9] << 8 | (size_t)p[10] << 16 | (size_t)p[11] << 24;
    return MOERT_OK;
}

static moert_status read_header(FILE *f, const char *path, size_t fsize, moert_npy *out,
                                size_t *out_data_off) {
    size_t hlen = 0, start = 0;
    moert_status s = read_preamble(f, path, &hlen, &start);
    if (s != MOERT_OK) return s;
    if (hlen > fsize - start || hlen > MAX_HEADER)
        return moert_fail(MOERT_ERR_FORMAT, "%s: expected a %zu-byte header, found %zu bytes", path,
                          hlen, fsize - start);
    char *h = malloc(hlen + 1);
    if (!h) return moert_fail(MOERT_ERR_MEMORY, "%s: cannot allocate the header", path);
    if (fseek(f, (long)start, SEEK_SET) != 0 || fread(h, 1, hlen, f) != hlen)
        s = moert_fail(MOERT_ERR_IO, "%s: cannot read the header", path);
    h[hlen] = 0;
    if (s == MOERT_OK) s = parse_dict(path, h, out);
    free(h);
    *out_data_off = start + hlen;
    return s;
}

static moert_status read_data(FILE *f, const char *path, size_t avail, moert_npy *out) {
    int ok;
    size_t need = moert_nbytes(out->dims, out->rank, moert_dtype_size(out->dtype), &ok);
    if (!ok || need != avail)
        return moert_fail(MOERT_ERR_FORMAT,
                          "%s: expected %zu bytes of %s data for its shape, found %zu", path, need,
                          moert_dtype_name(out->dtype), avail);
    out->data = malloc(need ? need : 1);
    if (!out->data)
        return moert_fail(MOERT_ERR_MEMORY, "%s: cannot allocate %zu bytes for the array", path,
                          need);
    if (fread(out->data, 1, need, f) != need)
        return moert_fail(MOERT_ERR_IO, "%s: cannot read the data", path);
    return MOERT_OK;
}

moert_status moert_npy_read(const char *path, moert_npy *out) {
    if (!out || !path) return moert_fail(MOERT_ERR_ARGUMENT, "moert_npy_read: NULL argument");
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return moert_fail(MOERT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    size_t off = 0;
    moert_status s = fstat(fileno(f), &sb) == 0
                         ? MOERT_OK
                         : moert_fail(MOERT_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    if (s == MOERT_OK) s = read_header(f, path, (size_t)sb.st_size, out, &off);
    if (s == MOERT_OK) s = read_data(f, path, (size_t)sb.st_size - off, out);
    fclose(f);
    if (s != MOERT_OK) moert_npy_free(out);
    return s;
}

void moert_npy_free(moert_npy *a) {
    if (!a) return;
    free(a->data);
    a->data = NULL;
}

/* The header dict in numpy's own spelling: (n,) for one dim, () for a scalar. */
static size_t header_text(const char *descr, int64_t rank, const int64_t *dims, char *h,
                          size_t cap) {
    int n = snprintf(h, cap, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    for (int64_t i = 0; i < rank; i++)
        n += snprintf(h + n, cap - (size_t)n, "%lld%s", (long long)dims[i],
                      rank == 1      ? ","
                      : i + 1 < rank ? ", "
                                     : "");
    n += snprintf(h + n, cap - (size_t)n, "), }");
    return (size_t)n;
}

static moert_status check_write_args(const char *path, moert_dtype dtype, int64_t rank,
                                     const int64_t *dims, const void *data, size_t *out_bytes) {
    if (!path) return moert_fail(MOERT_ERR_ARGUMENT, "moert_npy_write: NULL path");
    if (!descr_of(dtype))
        return moert_fail(MOERT_ERR_ARGUMENT, "%s: %s has no .npy dtype; convert it to f32 first",
                          path, moert_dtype_name(dtype));
    if (rank < 0 || rank > 8 || (rank > 0 && !dims))
        return moert_fail(MOERT_ERR_ARGUMENT, "%s: rank %lld must be 0..8 with dims", path,
                          (long long)rank);
    int ok;
    *out_bytes = moert_nbytes(dims, rank, moert_dtype_size(dtype), &ok);
    if (!ok) return moert_fail(MOERT_ERR_ARGUMENT, "%s: a dim is negative or too large", path);
    if (*out_bytes > 0 && !data) return moert_fail(MOERT_ERR_ARGUMENT, "%s: NULL data", path);
    return MOERT_OK;
}

moert_status moert_npy_write(const char *path, moert_dtype dtype, int64_t rank, const int64_t *dims,
                             const void *data) {
    size_t bytes = 0;
    moert_status s = check_write_args(path, dtype, rank, dims, data, &bytes);
    if (s != MOERT_OK) return s;
    char h[512];
    size_t n = header_text(descr_of(dtype), rank, dims, h, sizeof h - 80);
    size_t total = (10 + n + 1 + 63) / 64 * 64; /* preamble, dict, '\n' */
    size_t hlen = total - 10;
    memset(h + n, ' ', hlen - n - 1);
    h[hlen - 1] = '\n';
    unsigned char pre[10] = {
        0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)hlen, (unsigned char)(hlen >> 8)};
    moert_piece pieces[3] = {{pre, sizeof pre}, {h, hlen}, {data, bytes}};
    return moert_write_atomic(path, pieces, 3);
}
