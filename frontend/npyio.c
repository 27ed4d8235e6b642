/* frontend/npyio.c: NumPy .npy arrays (format versions 1, 2 and 3), little-endian and
 * C order only; float32, float64, int32, int64 and bool. */
#include "frontend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const struct {
    const char *descr, *name;
    size_t size;
} npy_types[] = {
    [MC_NPY_F32] = {"<f4", "float32", 4}, [MC_NPY_F64] = {"<f8", "float64", 8},
    [MC_NPY_I32] = {"<i4", "int32", 4},   [MC_NPY_I64] = {"<i8", "int64", 8},
    [MC_NPY_BOOL] = {"|b1", "bool", 1},
};
enum { NUM_NPY_TYPES = sizeof npy_types / sizeof npy_types[0] };

const char *mc_npy_dtype_name(mc_npy_dtype t) {
    return npy_types[t].name;
}

/* Finds 'key': in the header dict and returns what follows (spaces skipped). */
static const char *dict_value(const char *h, const char *key) {
    char pat[32];
    snprintf(pat, sizeof pat, "'%s':", key);
    const char *p = strstr(h, pat);
    if (!p) return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    return p;
}

static bool parse_descr(const char *h, mc_npy *out, mc_diag *d) {
    const char *p = dict_value(h, "descr");
    if (!p || *p != '\'') return mc_error(d, NULL, "the .npy header has no 'descr'");
    char descr[16];
    size_t n = 0;
    for (p++; *p && *p != '\'' && n < sizeof descr - 1; p++)
        descr[n++] = *p;
    descr[n] = 0;
    for (int i = 0; i < NUM_NPY_TYPES; i++)
        if (strcmp(descr, npy_types[i].descr) == 0) {
            out->dt = (mc_npy_dtype)i;
            return true;
        }
    if (descr[0] == '>')
        return mc_error(d, NULL, "big-endian data ('%s') is not supported; save it little-endian",
                        descr);
    return mc_error(d, NULL,
                    "dtype '%s' is not supported; expected float32, float64, int32, int64 or bool",
                    descr);
}

static bool parse_shape(const char *h, mc_npy *out, mc_diag *d) {
    const char *p = dict_value(h, "shape");
    if (!p || *p != '(') return mc_error(d, NULL, "the .npy header has no 'shape' tuple");
    p++;
    out->rank = 0;
    out->numel = 1;
    for (;;) {
        while (*p == ' ' || *p == ',')
            p++;
        if (*p == ')') break;
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || errno || v < 0 || v > MC_MAX_DIM)
            return mc_error(d, NULL, "the .npy shape is malformed");
        if (out->rank == MC_MAX_RANK)
            return mc_error(d, NULL, "the array has more than %d dims", MC_MAX_RANK);
        out->dims[out->rank++] = v;
        if (v && out->numel > MC_MAX_DIM / v)
            return mc_error(d, NULL, "the array has more than 2^40 elements");
        out->numel *= v;
        p = end;
    }
    return true;
}

static bool parse_header(const unsigned char *p, size_t len, mc_npy *out, size_t *data_off,
                         mc_diag *d) {
    if (len < 10 || memcmp(p, "\x93NUMPY", 6) != 0)
        return mc_error(d, NULL, "not a .npy file (bad magic)");
    int major = p[6];
    if (major < 1 || major > 3)
        return mc_error(d, NULL, ".npy format version %d is not supported", major);
    size_t hlen, start = major == 1 ? 10 : 12;
    if (len < start) return mc_error(d, NULL, "the .npy header is truncated");
    hlen = major == 1
               ? (size_t)(p[8] | p[9] << 8)
               : (size_t)p[8] | (size_t)p[9] << 8 | (size_t)p[10] << 16 | (size_t)p[11] << 24;
    if (hlen > len - start) return mc_error(d, NULL, "the .npy header is truncated");
    char *h = mc_alloc(hlen + 1);
    if (!h) return mc_error(d, NULL, "out of memory reading the .npy header");
    memcpy(h, p + start, hlen);
    h[hlen] = 0;
    const char *fo = dict_value(h, "fortran_order");
    bool ok = parse_descr(h, out, d) && parse_shape(h, out, d);
    if (ok && (!fo || strncmp(fo, "False", 5) != 0))
        ok = mc_error(d, NULL, "Fortran-order arrays are not supported; save with C order");
    mc_free(h);
    *data_off = start + hlen;
    return ok;
}

bool mc_npy_parse(const void *buf, size_t len, mc_npy *out, mc_diag *d) {
    memset(out, 0, sizeof *out);
    size_t off = 0;
    if (!parse_header(buf, len, out, &off, d)) return false;
    size_t need = (size_t)out->numel * npy_types[out->dt].size;
    if (len - off != need)
        return mc_error(d, NULL, "%lld %s elements need %zu bytes of data but the file has %zu",
                        (long long)out->numel, npy_types[out->dt].name, need, len - off);
    out->data = mc_alloc(need);
    if (!out->data) return mc_error(d, NULL, "cannot allocate %zu bytes for the array", need);
    memcpy(out->data, (const unsigned char *)buf + off, need);
    return true;
}

bool mc_npy_load(const char *path, mc_npy *out, mc_diag *d) {
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) return mc_error(d, NULL, "cannot read: %s", strerror(errno));
    bool ok = fseek(f, 0, SEEK_END) == 0;
    long size = ok ? ftell(f) : -1;
    ok = ok && size >= 0 && fseek(f, 0, SEEK_SET) == 0;
    unsigned char *buf = ok ? mc_alloc((size_t)size + 1) : NULL;
    ok = buf && fread(buf, 1, (size_t)size, f) == (size_t)size;
    fclose(f);
    if (!ok) {
        mc_free(buf);
        return mc_error(d, NULL, "cannot read the file");
    }
    ok = mc_npy_parse(buf, (size_t)size, out, d);
    mc_free(buf);
    return ok;
}

void mc_npy_free(mc_npy *a) {
    mc_free(a->data);
    a->data = NULL;
}

static size_t header_text(const mc_npy *a, char *h, size_t cap) {
    int n = snprintf(h, cap, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     npy_types[a->dt].descr);
    for (int i = 0; i < a->rank; i++)
        n += snprintf(h + n, cap - (size_t)n, "%lld%s", (long long)a->dims[i],
                      a->rank == 1      ? ","
                      : i + 1 < a->rank ? ", "
                                        : "");
    n += snprintf(h + n, cap - (size_t)n, "), }");
    return (size_t)n;
}

bool mc_npy_save(const char *path, const mc_npy *a, mc_diag *d) {
    char h[512];
    size_t n = header_text(a, h, sizeof h - 80);
    size_t total = (10 + n + 1 + 63) / 64 * 64; /* magic, version, u16 length, text, '\n' */
    memset(h + n, ' ', total - 10 - n - 1);
    h[total - 10 - 1] = '\n';
    size_t hlen = total - 10;
    unsigned char pre[10] = {
        0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)hlen, (unsigned char)(hlen >> 8)};
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    size_t bytes = (size_t)a->numel * npy_types[a->dt].size;
    bool ok = f && fwrite(pre, 1, 10, f) == 10 && fwrite(h, 1, hlen, f) == hlen &&
              (bytes == 0 || fwrite(a->data, 1, bytes, f) == bytes);
    if (f && fclose(f) != 0) ok = false;
    if (ok && rename(tmp, path) != 0) ok = false;
    if (!ok) {
        mc_error(d, NULL, "cannot write: %s", strerror(errno));
        remove(tmp);
    }
    return ok;
}

static bool npy_matches(mc_npy_dtype have, mc_dtype want) {
    switch (want) {
    case MC_DT_F32:
    case MC_DT_F16:
    case MC_DT_BF16: return have == MC_NPY_F32;
    case MC_DT_I32: return have == MC_NPY_I32;
    case MC_DT_I64: return have == MC_NPY_I64;
    case MC_DT_BOOL: return have == MC_NPY_BOOL;
    case MC_DT_Q8:
    case MC_DT_Q4: break; /* params only: never an input */
    }
    return false;
}

bool mc_npy_to_tensor(const mc_npy *a, mc_dtype want, mc_tensor *out, mc_diag *d,
                      const char *what) {
    memset(out, 0, sizeof *out);
    if (!npy_matches(a->dt, want))
        return mc_error(d, NULL, "%s must be %s but the file holds %s", what,
                        mc_dtype_is_float(want) ? "float32" : mc_dtype_json_name(want),
                        npy_types[a->dt].name);
    if (!mc_tensor_alloc(out, want, a->rank, a->dims, d, what)) return false;
    if (want == MC_DT_F16 || want == MC_DT_BF16) {
        for (int64_t k = 0; k < a->numel; k++)
            out->f[k] = mc_round_to_dtype(((const float *)a->data)[k], want);
        return true;
    }
    mc_tensor_load_bytes(out, a->data);
    return true;
}

bool mc_npy_from_tensor(const mc_tensor *t, mc_npy *out, mc_diag *d) {
    memset(out, 0, sizeof *out);
    out->rank = t->rank;
    memcpy(out->dims, t->dims, sizeof t->dims);
    out->numel = t->numel;
    mc_dtype store = t->dt;
    switch (t->dt) {
    case MC_DT_F32:
    case MC_DT_F16:
    case MC_DT_BF16: out->dt = MC_NPY_F32, store = MC_DT_F32; break;
    case MC_DT_I32: out->dt = MC_NPY_I32; break;
    case MC_DT_I64: out->dt = MC_NPY_I64; break;
    case MC_DT_BOOL:
    case MC_DT_Q8: /* params only, never an output: bytes at most */
    case MC_DT_Q4: out->dt = MC_NPY_BOOL; break;
    }
    out->data = mc_alloc((size_t)t->numel * npy_types[out->dt].size + 1);
    if (!out->data) return mc_error(d, NULL, "cannot allocate the output array");
    mc_tensor view = *t;
    view.dt = store;
    mc_tensor_store_bytes(&view, out->data);
    return true;
}
