/* frontend/st.c: safetensors files. Reading maps the file and checks the header
 * strictly (every offset inside the file, sizes matching dtype x shape, no overlap
 * with the header); writing goes to a temporary file renamed into place. */
#include "frontend.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* I8 and U8 hold quantized weights' values (int8; int4 two per byte: docs/format.md). */
static const char *st_names[MC_NUM_DTYPES] = {"F32", "F16",  "BF16", "I32",
                                              "I64", "BOOL", "I8",   "U8"};

static bool st_dtype(const char *s, mc_dtype *out) {
    for (int i = 0; i < MC_NUM_DTYPES; i++)
        if (strcmp(st_names[i], s) == 0) {
            *out = (mc_dtype)i;
            return true;
        }
    return false;
}

static bool parse_entry(mc_safetensors *st, const cJSON *e, size_t data_len, mc_st_tensor *t,
                        const unsigned char *data, mc_arena *a, mc_diag *d) {
    t->name = mc_arena_strdup(a, e->string);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsObject(e) || !cJSON_IsString(dt) || !cJSON_IsArray(shape) ||
        !cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
        return mc_error(d, NULL,
                        "header entry '%s' must have dtype, shape and data_offsets [begin, end]",
                        t->name);
    if (!st_dtype(dt->valuestring, &t->dt))
        return mc_error(
            d, NULL, "tensor '%s' has dtype %s; supported: F32, F16, BF16, I32, I64, BOOL, I8, U8",
            t->name, dt->valuestring);
    t->rank = cJSON_GetArraySize(shape);
    if (t->rank > MC_MAX_RANK)
        return mc_error(d, NULL, "tensor '%s' has rank %d, more than %d", t->name, t->rank,
                        MC_MAX_RANK);
    double numel = 1;
    int i = 0;
    for (const cJSON *s = shape->child; s; s = s->next, i++) {
        if (!cJSON_IsNumber(s) || s->valuedouble < 0 || s->valuedouble > (double)MC_MAX_DIM ||
            s->valuedouble != (double)(int64_t)s->valuedouble)
            return mc_error(d, NULL, "tensor '%s' has a bad dim %d", t->name, i);
        t->dims[i] = (int64_t)s->valuedouble;
        numel *= s->valuedouble;
    }
    double b = cJSON_GetArrayItem(offs, 0)->valuedouble,
           e2 = cJSON_GetArrayItem(offs, 1)->valuedouble;
    if (!(b >= 0 && e2 >= b && e2 <= (double)data_len) || b != (double)(size_t)b ||
        e2 != (double)(size_t)e2)
        return mc_error(d, NULL,
                        "tensor '%s' has data_offsets [%.0f, %.0f] outside the %zu data bytes",
                        t->name, b, e2, data_len);
    t->nbytes = (size_t)e2 - (size_t)b;
    if (numel * (double)mc_dtype_size(t->dt) != (double)t->nbytes)
        return mc_error(
            d, NULL,
            "tensor '%s' is %s with %.0f elements (%.0f bytes) but its data_offsets span %zu bytes",
            t->name, dt->valuestring, numel, numel * (double)mc_dtype_size(t->dt), t->nbytes);
    t->data = t->nbytes ? data + (size_t)b : NULL;
    (void)st;
    return true;
}

bool mc_st_parse(mc_safetensors *st, const void *buf, size_t len, mc_arena *a, mc_diag *d) {
    const unsigned char *p = buf;
    st->ntensors = 0;
    st->tensors = NULL;
    if (len < 8)
        return mc_error(d, NULL, "file is %zu bytes, too short for a safetensors header", len);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | p[i];
    if (hlen > len - 8)
        return mc_error(d, NULL, "header length %llu runs past the end of the %zu-byte file",
                        (unsigned long long)hlen, len);
    cJSON *h = cJSON_ParseWithLength((const char *)p + 8, (size_t)hlen);
    if (!cJSON_IsObject(h)) {
        cJSON_Delete(h);
        return mc_error(d, NULL, "the header is not a JSON object");
    }
    int n = cJSON_GetArraySize(h);
    st->tensors = mc_arena_alloc(a, sizeof(mc_st_tensor) * (size_t)(n + 1));
    bool ok = true;
    for (const cJSON *e = h->child; e && ok; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        ok = parse_entry(st, e, len - 8 - (size_t)hlen, &st->tensors[st->ntensors], p + 8 + hlen, a,
                         d);
        st->ntensors += ok;
    }
    cJSON_Delete(h);
    return ok;
}

const mc_st_tensor *mc_st_find(const mc_safetensors *st, const char *name) {
    for (int i = 0; i < st->ntensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

typedef struct {
    void *addr;
    size_t len;
} mapping;

static void unmap(void *ctx) {
    mapping *m = ctx;
    munmap(m->addr, m->len);
}

const void *mc_map_file(const char *path, const char *what, size_t *len, mc_arena *a, mc_diag *d) {
    int fd = open(path, O_RDONLY);
    struct stat sb;
    const void *data = NULL;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        mc_error(d, NULL, "cannot open %s %s: %s", what, path, strerror(errno));
    } else if (sb.st_size == 0) {
        data = "";
    } else {
        void *addr = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (addr == MAP_FAILED) {
            mc_error(d, NULL, "cannot map %s %s: %s", what, path, strerror(errno));
        } else {
            mapping *m = mc_arena_alloc(a, sizeof *m);
            *m = (mapping){addr, (size_t)sb.st_size};
            mc_arena_on_free(a, unmap, m);
            data = addr;
        }
    }
    if (fd >= 0) close(fd);
    *len = data ? (size_t)sb.st_size : 0;
    return data;
}

bool mc_st_open(mc_safetensors *st, const char *path, mc_arena *a, mc_diag *d) {
    st->path = mc_arena_strdup(a, path);
    size_t len;
    /* the model names the file: a failure to open it is reported there */
    const void *data = mc_map_file(path, "weights file", &len, a, d);
    if (!data) return false;
    const char *saved = d->file;
    d->file = path;
    bool ok = mc_st_parse(st, data, len, a, d);
    if (ok) d->file = saved;
    return ok;
}

/* One tensor of the file: a value's bytes, or a quantized value's scales or zeros. */
typedef struct {
    const char *name;
    mc_dtype dt;
    mc_shape shape;
    const void *data;
    size_t nbytes;
} entry;

static int by_name(const void *a, const void *b) {
    return strcmp(((const entry *)a)->name, ((const entry *)b)->name);
}

/* v's tensors: its values, and a quantized one's NAME.scale and NAME.zero. */
static int entries_of(const mc_graph *g, const mc_value *v, entry *out) {
    out[0] = (entry){v->name, v->dt, v->shape, v->data, v->nbytes};
    if (!mc_dtype_is_quant(v->dt)) return 1;
    if (v->dt == MC_DT_Q4) out[0].shape.d[v->shape.rank - 2].c /= 2; /* two values a byte */
    mc_shape s = mc_quant_scale_shape(v);
    size_t n = (size_t)mc_shape_numel(&s, NULL);
    out[1] =
        (entry){mc_arena_printf(g->arena, "%s.scale", v->name), MC_DT_F32, s, v->qscale, n * 4};
    if (!v->qzero) return 2;
    out[2] = (entry){mc_arena_printf(g->arena, "%s.zero", v->name), MC_DT_Q4, s, v->qzero, n};
    return 3;
}

/* Header JSON with 8-byte aligned offsets, padded with spaces to a multiple of 8. */
static char *build_header(const entry *es, int n, size_t *out_len) {
    cJSON *h = cJSON_CreateObject();
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(h, es[i].name);
        cJSON_AddStringToObject(e, "dtype", st_names[es[i].dt]);
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int k = 0; k < es[i].shape.rank; k++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)es[i].shape.d[k].c));
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + es[i].nbytes)));
        off += (es[i].nbytes + 7) & ~(size_t)7;
    }
    char *text = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    if (!text) mc_oom(0);
    size_t len = strlen(text), padded = (len + 7) & ~(size_t)7;
    char *out = mc_alloc(padded + 1);
    if (!out) mc_oom(padded);
    memcpy(out, text, len);
    memset(out + len, ' ', padded - len);
    free(text);
    *out_len = padded;
    return out;
}

static bool write_all(FILE *f, const entry *es, int n, const char *header, size_t hlen) {
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    bool ok = fwrite(len8, 1, 8, f) == 8 && fwrite(header, 1, hlen, f) == hlen;
    static const unsigned char zeros[8];
    for (int i = 0; ok && i < n; i++) {
        size_t pad = ((es[i].nbytes + 7) & ~(size_t)7) - es[i].nbytes;
        ok = (es[i].nbytes == 0 || fwrite(es[i].data, 1, es[i].nbytes, f) == es[i].nbytes) &&
             fwrite(zeros, 1, pad, f) == pad;
    }
    return ok;
}

bool mc_st_write_params(const char *path, const mc_graph *g, mc_diag *d) {
    return mc_st_write_values(path, g, true, d);
}

bool mc_st_write_values(const char *path, const mc_graph *g, bool consts, mc_diag *d) {
    entry *es = mc_alloc(sizeof *es * (size_t)(3 * g->nvalues + 1));
    if (!es) mc_oom(sizeof *es * (size_t)(3 * g->nvalues + 1));
    int n = 0;
    for (int i = 0; i < g->nvalues; i++) {
        const mc_value *v = &g->values[i];
        if (!v->dead && (v->kind == MC_VK_PARAM || (consts && v->kind == MC_VK_CONST)) && v->data)
            n += entries_of(g, v, es + n);
    }
    qsort(es, (size_t)n, sizeof *es, by_name);
    size_t hlen;
    char *header = build_header(es, n, &hlen);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "wb");
    bool ok = f && write_all(f, es, n, header, hlen);
    if (f && fclose(f) != 0) ok = false;
    if (ok && rename(tmp, path) != 0) ok = false;
    if (!ok) {
        mc_error(d, NULL, "cannot write %s: %s", path, strerror(errno));
        remove(tmp);
    }
    mc_free(header);
    mc_free(es);
    return ok;
}
