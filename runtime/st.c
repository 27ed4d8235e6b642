/* runtime/st.c: safetensors weights, mapped read-only. The header is read by a small
 * JSON parser that knows the one shape a safetensors header has (an object of tensor
 * entries plus an optional "__metadata__" it skips), and every entry is checked before
 * anything points into the file: known dtype, dims >= 0, data_offsets inside the data
 * and spanning exactly dtype size x numel bytes, no two tensors sharing bytes. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *st_names[] = {
    [MOERT_F32] = "F32", [MOERT_F16] = "F16", [MOERT_BF16] = "BF16",
    [MOERT_I32] = "I32", [MOERT_I64] = "I64", [MOERT_BOOL] = "BOOL",
    [MOERT_Q8] = "I8",   [MOERT_Q4] = "U8", /* a quantized weight's values (moert.h) */
};
enum { NUM_ST_DTYPES = sizeof st_names / sizeof st_names[0], MAX_DEPTH = 64 };

struct moert_st_file {
    char *path;
    unsigned char *map;
    size_t len;
    const unsigned char *data; /* after the header */
    size_t data_len;
    int64_t n, cap;
    moert_st_tensor *tensors; /* names malloc'ed */
};

/* ---- the JSON reader: each function returns 1, or 0 with the status in ps->st ---- */

typedef struct parser {
    const char *begin, *p, *end;
    const char *path;
    moert_status st;
} parser;

static int syntax(parser *ps, const char *what) {
    ps->st = moert_fail(MOERT_ERR_FORMAT, "%s: bad safetensors header at byte %zu: expected %s",
                        ps->path, (size_t)(ps->p - ps->begin) + 8, what);
    return 0;
}

static int out_of_memory(parser *ps) {
    ps->st = moert_fail(MOERT_ERR_MEMORY, "%s: out of memory reading the header", ps->path);
    return 0;
}

static char peek(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t'))
        ps->p++;
    return ps->p < ps->end ? *ps->p : 0;
}

static int expect(parser *ps, char c) {
    if (peek(ps) == c) {
        ps->p++;
        return 1;
    }
    char what[] = {'\'', c, '\'', 0};
    return syntax(ps, what);
}

/* After a member or element: 1 when another follows, 0 at `close` or on an error. */
static int another(parser *ps, char close) {
    char c = peek(ps);
    if (c == ',' || c == close) ps->p++;
    if (c == ',') return 1;
    if (c != close) syntax(ps, close == '}' ? "',' or '}'" : "',' or ']'");
    return 0;
}

static size_t put_utf8(char *w, uint32_t cp) {
    if (cp < 0x80) return (size_t)(w[0] = (char)cp, 1);
    if (cp < 0x800) {
        w[0] = (char)(0xC0 | cp >> 6), w[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        w[0] = (char)(0xE0 | cp >> 12), w[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        w[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    w[0] = (char)(0xF0 | cp >> 18), w[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    w[2] = (char)(0x80 | (cp >> 6 & 0x3F)), w[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int hex4(const char *q, const char *end, uint32_t *out) {
    *out = 0;
    for (int i = 0; i < 4; i++, q++) {
        if (q >= end) return 0;
        int d = *q >= '0' && *q <= '9'   ? *q - '0'
                : *q >= 'a' && *q <= 'f' ? *q - 'a' + 10
                : *q >= 'A' && *q <= 'F' ? *q - 'A' + 10
                                         : -1;
        if (d < 0) return 0;
        *out = *out << 4 | (uint32_t)d;
    }
    return 1;
}

/* A \u escape (four hex digits), a surrogate pair read as one code point; q is just
 * past the 'u'. */
static int unicode_escape(const char **q, const char *end, uint32_t *cp) {
    if (!hex4(*q, end, cp)) return 0;
    *q += 4;
    if (*cp >= 0xDC00 && *cp < 0xE000) return 0;
    if (*cp < 0xD800 || *cp >= 0xDC00) return 1;
    uint32_t lo;
    if (end - *q < 6 || (*q)[0] != '\\' || (*q)[1] != 'u' || !hex4(*q + 2, end, &lo) ||
        lo < 0xDC00 || lo >= 0xE000)
        return 0;
    *q += 6;
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (lo - 0xDC00);
    return 1;
}

static int escape(const char **q, const char *end, char **w) {
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    char c = *(*q)++;
    const char *k = c ? strchr(from, c) : NULL;
    if (k) {
        *(*w)++ = to[k - from];
        return 1;
    }
    uint32_t cp;
    if (c != 'u' || !unicode_escape(q, end, &cp)) return 0;
    *w += put_utf8(*w, cp);
    return 1;
}

/* A decoded string never grows: every escape is at least as long as its UTF-8. */
static int parse_string(parser *ps, char **out) {
    if (peek(ps) != '"') return syntax(ps, "a string");
    const char *q = ++ps->p;
    while (q < ps->end && *q != '"')
        q += *q == '\\' ? 2 : 1;
    if (q >= ps->end) return syntax(ps, "the end of a string");
    char *s = malloc((size_t)(q - ps->p) + 1), *w = s;
    if (!s) return out_of_memory(ps);
    for (q = ps->p; *q != '"';) {
        unsigned char c = (unsigned char)*q++;
        if (c < 0x20 || (c == '\\' && !escape(&q, ps->end, &w))) {
            free(s);
            ps->p = q - 1;
            return syntax(ps, "a valid string character or escape");
        }
        if (c != '\\') *w++ = (char)c;
    }
    *w = 0;
    ps->p = q + 1;
    *out = s;
    return 1;
}

static int parse_int(parser *ps, int64_t *out) {
    char c = peek(ps);
    int neg = c == '-';
    const char *q = ps->p + neg;
    uint64_t v = 0;
    if (q >= ps->end || *q < '0' || *q > '9') return syntax(ps, "an integer");
    for (; q < ps->end && *q >= '0' && *q <= '9'; q++) {
        if (v > ((uint64_t)INT64_MAX - (uint64_t)(*q - '0')) / 10)
            return syntax(ps, "an integer that fits in 64 bits");
        v = v * 10 + (uint64_t)(*q - '0');
    }
    ps->p = q;
    if (q < ps->end && (*q == '.' || *q == 'e' || *q == 'E')) return syntax(ps, "an integer");
    *out = neg ? -(int64_t)v : (int64_t)v;
    return 1;
}

/* [int, ...]: stores the first `max`, counts them all so the caller can say how many. */
static int parse_ints(parser *ps, int64_t *vals, int64_t max, int64_t *out_n) {
    *out_n = 0;
    if (!expect(ps, '[')) return 0;
    if (peek(ps) == ']') return ps->p++, 1;
    do {
        int64_t v;
        if (!parse_int(ps, &v)) return 0;
        if (*out_n < max) vals[*out_n] = v;
        ++*out_n;
    } while (another(ps, ']'));
    return ps->st == MOERT_OK;
}

static int skip_value(parser *ps, int depth);

/* Objects and arrays whose contents nobody reads (metadata, unknown fields). */
static int skip_container(parser *ps, char close, int depth) {
    ps->p++;
    if (peek(ps) == close) return ps->p++, 1;
    do {
        if (close == '}') {
            char *key;
            if (!parse_string(ps, &key)) return 0;
            free(key);
            if (!expect(ps, ':')) return 0;
        }
        if (!skip_value(ps, depth + 1)) return 0;
    } while (another(ps, close));
    return ps->st == MOERT_OK;
}

static int skip_literal(parser *ps) {
    static const char *words[] = {"true", "false", "null"};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(words[i]);
        if ((size_t)(ps->end - ps->p) >= n && memcmp(ps->p, words[i], n) == 0) {
            ps->p += n;
            return 1;
        }
    }
    const char *q = ps->p;
    while (q < ps->end && *q && strchr("+-.eE0123456789", *q))
        q++;
    if (q == ps->p) return syntax(ps, "a JSON value");
    ps->p = q;
    return 1;
}

static int skip_value(parser *ps, int depth) {
    if (depth > MAX_DEPTH) return syntax(ps, "values nested at most 64 deep");
    char c = peek(ps);
    if (c == '{' || c == '[') return skip_container(ps, c == '{' ? '}' : ']', depth);
    if (c == '"') {
        char *s;
        if (!parse_string(ps, &s)) return 0;
        free(s);
        return 1;
    }
    return skip_literal(ps);
}

/* ---- tensor entries ---- */

typedef struct raw_entry {
    char *dtype;
    int64_t rank, dims[8];
    int64_t noffs, offs[2];
    int have_shape;
} raw_entry;

static int entry_field(parser *ps, const char *key, raw_entry *e) {
    if (strcmp(key, "dtype") == 0) {
        free(e->dtype);
        e->dtype = NULL;
        return parse_string(ps, &e->dtype);
    }
    if (strcmp(key, "shape") == 0) return e->have_shape = 1, parse_ints(ps, e->dims, 8, &e->rank);
    if (strcmp(key, "data_offsets") == 0) return parse_ints(ps, e->offs, 2, &e->noffs);
    return skip_value(ps, 1);
}

static int parse_entry(parser *ps, raw_entry *e) {
    if (!expect(ps, '{')) return 0;
    if (peek(ps) == '}') return ps->p++, 1;
    do {
        char *key;
        if (!parse_string(ps, &key)) return 0;
        int ok = expect(ps, ':') && entry_field(ps, key, e);
        free(key);
        if (!ok) return 0;
    } while (another(ps, '}'));
    return ps->st == MOERT_OK;
}

static int entry_dtype(parser *ps, const char *name, const raw_entry *e, moert_dtype *out) {
    for (int i = 0; i < NUM_ST_DTYPES; i++)
        if (strcmp(e->dtype, st_names[i]) == 0) {
            *out = (moert_dtype)i;
            return 1;
        }
    ps->st = moert_fail(MOERT_ERR_FORMAT,
                        "%s: tensor '%s' has dtype %s; expected F32, F16, BF16, I32, I64 or BOOL",
                        ps->path, name, e->dtype);
    return 0;
}

static int entry_shape(parser *ps, const char *name, const raw_entry *e) {
    if (e->rank > 8) {
        ps->st =
            moert_fail(MOERT_ERR_FORMAT, "%s: tensor '%s' has %lld dims; at most 8 are supported",
                       ps->path, name, (long long)e->rank);
        return 0;
    }
    for (int64_t i = 0; i < e->rank; i++)
        if (e->dims[i] < 0) {
            ps->st = moert_fail(MOERT_ERR_FORMAT, "%s: tensor '%s' has dim %lld = %lld, below 0",
                                ps->path, name, (long long)i, (long long)e->dims[i]);
            return 0;
        }
    return 1;
}

/* The lying-header checks: offsets inside the data and a span matching dtype x shape. */
static int entry_span(parser *ps, const moert_st_file *f, const char *name, const raw_entry *e,
                      moert_st_tensor *t) {
    int ok;
    size_t need = moert_nbytes(t->dims, t->rank, moert_dtype_size(t->dtype), &ok);
    int64_t b = e->offs[0], end = e->offs[1];
    if (b < 0 || end < b || (uint64_t)end > f->data_len) {
        ps->st =
            moert_fail(MOERT_ERR_FORMAT,
                       "%s: tensor '%s' has data_offsets [%lld, %lld] outside the %zu data bytes",
                       ps->path, name, (long long)b, (long long)end, f->data_len);
        return 0;
    }
    if (!ok || need != (uint64_t)(end - b)) {
        char dims[200];
        moert_format_dims(dims, sizeof dims, t->dims, t->rank);
        ps->st =
            moert_fail(MOERT_ERR_FORMAT,
                       "%s: tensor '%s' is %s %s (%zu bytes) but its data_offsets [%lld, %lld] "
                       "span %lld bytes",
                       ps->path, name, st_names[t->dtype], dims, need, (long long)b, (long long)end,
                       (long long)(end - b));
        return 0;
    }
    t->data = f->data + b;
    t->nbytes = need;
    return 1;
}

static int check_entry(parser *ps, const moert_st_file *f, const char *name, const raw_entry *e,
                       moert_st_tensor *t) {
    if (!e->dtype || !e->have_shape || e->noffs != 2) {
        ps->st = moert_fail(MOERT_ERR_FORMAT,
                            "%s: tensor '%s' needs dtype, shape and data_offsets [begin, end]",
                            ps->path, name);
        return 0;
    }
    if (!entry_dtype(ps, name, e, &t->dtype) || !entry_shape(ps, name, e)) return 0;
    t->rank = e->rank;
    memcpy(t->dims, e->dims, sizeof e->dims);
    return entry_span(ps, f, name, e, t);
}

static int grow(parser *ps, moert_st_file *f) {
    if (f->n < f->cap) return 1;
    int64_t cap = f->cap ? 2 * f->cap : 16;
    moert_st_tensor *t = realloc(f->tensors, sizeof *t * (size_t)cap);
    if (!t) return out_of_memory(ps);
    f->tensors = t;
    f->cap = cap;
    return 1;
}

/* Takes `name`: it ends up in the table or freed. */
static int add_tensor(parser *ps, moert_st_file *f, char *name) {
    raw_entry e = {0};
    moert_st_tensor t = {.name = name};
    int ok = 1;
    if (moert_st_find(f, name)) {
        ps->st = moert_fail(MOERT_ERR_FORMAT, "%s: tensor '%s' appears twice in the header",
                            ps->path, name);
        ok = 0;
    }
    ok = ok && parse_entry(ps, &e) && check_entry(ps, f, name, &e, &t) && grow(ps, f);
    free(e.dtype);
    if (!ok) {
        free(name);
        return 0;
    }
    f->tensors[f->n++] = t;
    return 1;
}

static int member(parser *ps, moert_st_file *f) {
    char *name;
    if (!parse_string(ps, &name)) return 0;
    if (!expect(ps, ':')) {
        free(name);
        return 0;
    }
    if (strcmp(name, "__metadata__") == 0) {
        free(name);
        return skip_value(ps, 1);
    }
    return add_tensor(ps, f, name);
}

static int parse_top(parser *ps, moert_st_file *f) {
    if (!expect(ps, '{')) return 0;
    if (peek(ps) == '}') {
        ps->p++;
    } else {
        do {
            if (!member(ps, f)) return 0;
        } while (another(ps, '}'));
        if (ps->st != MOERT_OK) return 0;
    }
    if (peek(ps) != 0) return syntax(ps, "only spaces after the header object");
    return 1;
}

static int by_offset(const void *a, const void *b) {
    const moert_st_tensor *const *x = a, *const *y = b;
    const unsigned char *p = (*x)->data, *q = (*y)->data;
    return p < q ? -1 : p > q;
}

/* Two tensors sharing bytes would let writing one (after a copy) change the other. */
static moert_status check_overlaps(const moert_st_file *f) {
    if (f->n < 2) return MOERT_OK;
    const moert_st_tensor **order = malloc(sizeof *order * (size_t)f->n);
    if (!order) return moert_fail(MOERT_ERR_MEMORY, "%s: out of memory", f->path);
    for (int64_t i = 0; i < f->n; i++)
        order[i] = &f->tensors[i];
    qsort(order, (size_t)f->n, sizeof *order, by_offset);
    moert_status s = MOERT_OK;
    const moert_st_tensor *prev = NULL;
    for (int64_t i = 0; i < f->n && s == MOERT_OK; i++) {
        if (order[i]->nbytes == 0) continue;
        if (prev && (const unsigned char *)order[i]->data <
                        (const unsigned char *)prev->data + prev->nbytes)
            s = moert_fail(MOERT_ERR_FORMAT, "%s: tensors '%s' and '%s' share data bytes", f->path,
                           prev->name, order[i]->name);
        prev = order[i];
    }
    free(order);
    return s;
}

/* ---- the file ---- */

static moert_status map_file(moert_st_file *f) {
    int fd = open(f->path, O_RDONLY);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        moert_status s = moert_fail(MOERT_ERR_IO, "%s: cannot open: %s", f->path, strerror(errno));
        if (fd >= 0) close(fd);
        return s;
    }
    moert_status s = MOERT_OK;
    if (sb.st_size < 8) {
        s = moert_fail(MOERT_ERR_FORMAT,
                       "%s: the file is %lld bytes, too short for a safetensors "
                       "header",
                       f->path, (long long)sb.st_size);
    } else {
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED)
            s = moert_fail(MOERT_ERR_IO, "%s: cannot map: %s", f->path, strerror(errno));
        else
            f->map = m, f->len = (size_t)sb.st_size;
    }
    close(fd);
    return s;
}

static moert_status parse_file(moert_st_file *f) {
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | f->map[i];
    if (hlen > f->len - 8)
        return moert_fail(MOERT_ERR_FORMAT,
                          "%s: header length %llu runs past the end of the %zu-byte file", f->path,
                          (unsigned long long)hlen, f->len);
    const char *h = (const char *)f->map + 8;
    f->data = f->map + 8 + hlen;
    f->data_len = f->len - 8 - (size_t)hlen;
    parser ps = {h, h, h + hlen, f->path, MOERT_OK};
    if (!parse_top(&ps, f)) return ps.st;
    return check_overlaps(f);
}

moert_status moert_st_open(const char *path, moert_st_file **out) {
    if (!path || !out) return moert_fail(MOERT_ERR_ARGUMENT, "moert_st_open: NULL argument");
    *out = NULL;
    moert_st_file *f = calloc(1, sizeof *f);
    if (f) f->path = strdup(path);
    if (!f || !f->path) {
        moert_st_close(f);
        return moert_fail(MOERT_ERR_MEMORY, "%s: out of memory", path);
    }
    moert_status s = map_file(f);
    if (s == MOERT_OK) s = parse_file(f);
    if (s != MOERT_OK) {
        moert_st_close(f);
        return s;
    }
    *out = f;
    return MOERT_OK;
}

const moert_st_tensor *moert_st_find(const moert_st_file *f, const char *name) {
    if (!f || !name) return NULL;
    for (int64_t i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

void moert_st_close(moert_st_file *f) {
    if (!f) return;
    for (int64_t i = 0; i < f->n; i++)
        free((char *)f->tensors[i].name);
    free(f->tensors);
    if (f->map) munmap(f->map, f->len);
    free(f->path);
    free(f);
}

/* ---- writing ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->n + n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

static void sb_str(sbuf *b, const char *s) {
    sb_put(b, s, strlen(s));
}

static void sb_int(sbuf *b, int64_t v) {
    char tmp[24];
    sb_put(b, tmp, (size_t)snprintf(tmp, sizeof tmp, "%lld", (long long)v));
}

/* A tensor name as a JSON string: quotes, backslashes and control characters escaped. */
static void sb_json_string(sbuf *b, const char *s) {
    sb_str(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\')
            esc[0] = '\\', esc[1] = (char)c, esc[2] = 0;
        else if (c < 0x20)
            snprintf(esc, sizeof esc, "\\u%04x", c);
        else
            esc[0] = (char)c, esc[1] = 0;
        sb_str(b, esc);
    }
    sb_str(b, "\"");
}

static void sb_entry(sbuf *b, const moert_st_tensor *t, size_t off) {
    sb_json_string(b, t->name);
    sb_str(b, ":{\"dtype\":\"");
    sb_str(b, st_names[t->dtype]);
    sb_str(b, "\",\"shape\":[");
    for (int64_t k = 0; k < t->rank; k++) {
        if (k) sb_str(b, ",");
        sb_int(b, t->dims[k]);
    }
    sb_str(b, "],\"data_offsets\":[");
    sb_int(b, (int64_t)off);
    sb_str(b, ",");
    sb_int(b, (int64_t)(off + t->nbytes));
    sb_str(b, "]}");
}

static moert_status check_tensor(const char *path, const moert_st_tensor *ts, int64_t i) {
    const moert_st_tensor *t = &ts[i];
    if (!t->name || strcmp(t->name, "__metadata__") == 0)
        return moert_fail(MOERT_ERR_ARGUMENT,
                          "%s: tensor %lld needs a name other than __metadata__", path,
                          (long long)i);
    if ((unsigned)t->dtype >= NUM_ST_DTYPES || t->rank < 0 || t->rank > 8)
        return moert_fail(MOERT_ERR_ARGUMENT, "%s: tensor '%s' has a bad dtype or rank", path,
                          t->name);
    int ok;
    size_t need = moert_nbytes(t->dims, t->rank, moert_dtype_size(t->dtype), &ok);
    if (!ok || need != t->nbytes || (need && !t->data))
        return moert_fail(MOERT_ERR_ARGUMENT,
                          "%s: tensor '%s' has nbytes %zu but its dtype and shape need %zu", path,
                          t->name, t->nbytes, need);
    for (int64_t j = 0; j < i; j++)
        if (strcmp(ts[j].name, t->name) == 0)
            return moert_fail(MOERT_ERR_ARGUMENT, "%s: tensor '%s' is given twice", path, t->name);
    return MOERT_OK;
}

typedef struct order_key {
    size_t size;
    int64_t index;
} order_key;

static int by_size_desc(const void *a, const void *b) {
    const order_key *x = a, *y = b;
    if (x->size != y->size) return x->size > y->size ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

/* Data goes in order of decreasing element size with no gaps: every tensor then starts
 * at a multiple of its own element size (the header is padded to 8), and the layout is
 * the contiguous one the reference safetensors implementation insists on. */
static moert_status build(const moert_st_tensor *ts, int64_t n, order_key *order, sbuf *b) {
    for (int64_t i = 0; i < n; i++)
        order[i] = (order_key){moert_dtype_size(ts[i].dtype), i};
    qsort(order, (size_t)n, sizeof *order, by_size_desc);
    sb_str(b, "{");
    size_t off = 0;
    for (int64_t i = 0; i < n; i++) {
        const moert_st_tensor *t = &ts[order[i].index];
        if (i) sb_str(b, ",");
        sb_entry(b, t, off);
        off += t->nbytes;
    }
    sb_str(b, "}");
    while (b->n % 8)
        sb_str(b, " ");
    return b->oom ? moert_fail(MOERT_ERR_MEMORY, "out of memory building a safetensors header")
                  : MOERT_OK;
}

static moert_status write_pieces(const char *path, const moert_st_tensor *ts, int64_t n,
                                 const order_key *order, const sbuf *b) {
    moert_piece *pieces = malloc(sizeof *pieces * (size_t)(n + 2));
    if (!pieces) return moert_fail(MOERT_ERR_MEMORY, "%s: out of memory", path);
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)b->n >> (8 * i));
    pieces[0] = (moert_piece){len8, 8};
    pieces[1] = (moert_piece){b->p, b->n};
    for (int64_t i = 0; i < n; i++)
        pieces[2 + i] = (moert_piece){ts[order[i].index].data, ts[order[i].index].nbytes};
    moert_status s = moert_write_atomic(path, pieces, n + 2);
    free(pieces);
    return s;
}

moert_status moert_st_write(const char *path, const moert_st_tensor *tensors, int64_t n) {
    if (!path || n < 0 || (n > 0 && !tensors))
        return moert_fail(MOERT_ERR_ARGUMENT, "moert_st_write: NULL path or tensors");
    for (int64_t i = 0; i < n; i++) {
        moert_status s = check_tensor(path, tensors, i);
        if (s != MOERT_OK) return s;
    }
    order_key *order = malloc(sizeof *order * (size_t)(n + 1));
    if (!order) return moert_fail(MOERT_ERR_MEMORY, "%s: out of memory", path);
    sbuf b = {0};
    moert_status s = build(tensors, n, order, &b);
    if (s == MOERT_OK) s = write_pieces(path, tensors, n, order, &b);
    free(b.p);
    free(order);
    return s;
}
