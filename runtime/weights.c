/* runtime/weights.c: a model's params, loaded from a weights file (--weights=external)
 * or copied from its compiled-in starting values (training): one pointer per param, into
 * a buffer of the set's own (GEMM panels, or a copy of the file's bytes). The file is
 * mapped only while the set loads: once _create returns, nothing reads it, so a file
 * truncated or replaced under a live instance cannot fault it (a later _create on the
 * changed file checks it again).
 *
 * Inference sets are shared: every instance of one model created on the same file
 * (same device, inode, size and modification time) reads one packed copy, kept until
 * its last instance is destroyed (DESIGN.md §12: packed weights exist once per
 * process). Training writes its params, so each training instance has a set of its
 * own. Loading happens under the registry's lock, so concurrent creates of one model
 * pack it once. */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

typedef struct file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} file_id;

struct moert_weight_set {
    moert_weight_set *next; /* the registry's list, for shared sets */
    const moert_model_desc *desc;
    file_id id;
    bool shared;
    int64_t refs;
    moert_st_file *file;
    int64_t num_params;
    const void **params; /* what the generated code reads */
    void **owned;        /* per param: a buffer of the set's own, or NULL */
};

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static moert_weight_set *registry;

/* A 64-byte aligned buffer of at least one line, so even an empty param is non-NULL. */
static void *alloc_aligned(size_t bytes) {
    size_t rounded = (bytes + MOERT_ALIGN - 1) / MOERT_ALIGN * MOERT_ALIGN;
    if (rounded < bytes) return NULL;
    return aligned_alloc(MOERT_ALIGN, rounded ? rounded : MOERT_ALIGN);
}

const char *moert_model_name(const moert_model_info *info) {
    return info->name ? info->name : "model";
}

/* Tensor `name` of the file must be dtype dt with param p's dims, K (the next to last)
 * replaced by k_rows unless it is negative. */
static moert_status check_tensor(const char *path, const moert_tensor_info *p, const char *name,
                                 const moert_st_tensor *t, moert_dtype dt, int64_t k_rows) {
    int64_t dims[8];
    if (p->rank < 0 || p->rank > 8)
        return moert_fail(MOERT_ERR_INTERNAL, "param '%s' has rank %lld", p->name,
                          (long long)p->rank);
    for (int64_t k = 0; k < p->rank; k++) {
        if (p->dims[k].sym >= 0)
            return moert_fail(MOERT_ERR_INTERNAL, "param '%s' has a symbolic dim", p->name);
        dims[k] = p->dims[k].c;
    }
    if (k_rows >= 0 && p->rank >= 2) dims[p->rank - 2] = k_rows;
    if (!t)
        return moert_fail(MOERT_ERR_FORMAT, "%s: tensor '%s' is missing; the model needs it", path,
                          name);
    int same = t->dtype == dt && t->rank == p->rank &&
               memcmp(dims, t->dims, sizeof *dims * (size_t)p->rank) == 0;
    if (same) return MOERT_OK;
    char want[200], have[200];
    moert_format_dims(want, sizeof want, dims, p->rank);
    moert_format_dims(have, sizeof have, t->dims, t->rank);
    return moert_fail(MOERT_ERR_FORMAT, "%s: tensor '%s': expected %s %s, found %s %s", path, name,
                      moert_dtype_name(dt), want, moert_dtype_name(t->dtype), have);
}

static moert_status check_param(const char *path, const moert_tensor_info *p,
                                const moert_st_tensor *t) {
    return check_tensor(path, p, p->name, t, (moert_dtype)p->dtype, -1);
}

/* The file's matrix in GEMM panels (f32, f16 or bf16; packing copies bytes, so a
 * tensor the file left misaligned needs no copy first). */
static moert_status pack_param(moert_weight_set *w, int64_t i, const moert_st_tensor *t,
                               int64_t nr) {
    bool packable = t->dtype == MOERT_F32 || t->dtype == MOERT_F16 || t->dtype == MOERT_BF16;
    if (!packable || t->rank < 2)
        return moert_fail(MOERT_ERR_INTERNAL,
                          "param '%s' is packed into panels but is not a float matrix", t->name);
    int64_t K = t->dims[t->rank - 2], N = t->dims[t->rank - 1], lead = 1;
    for (int64_t k = 0; k < t->rank - 2; k++)
        lead *= t->dims[k];
    int64_t dims[3] = {lead, (N + nr - 1) / nr, moert_panel_rows(t->dtype, K) * nr};
    int ok;
    size_t elem = moert_dtype_size(t->dtype), bytes = moert_nbytes(dims, 3, elem, &ok);
    void *dst = ok ? alloc_aligned(bytes) : NULL;
    if (!dst) return moert_fail(MOERT_ERR_MEMORY, "cannot allocate panels for param '%s'", t->name);
    moert_pack_weight(t->dtype, t->data, lead, K, N, nr, dst);
    w->owned[i] = dst;
    w->params[i] = dst;
    return MOERT_OK;
}

static moert_status copy_param(moert_weight_set *w, int64_t i, const char *name, const void *data,
                               size_t nbytes) {
    void *buf = alloc_aligned(nbytes ? nbytes : 1);
    if (!buf) return moert_fail(MOERT_ERR_MEMORY, "cannot allocate param '%s'", name);
    memcpy(buf, data, nbytes);
    w->owned[i] = buf;
    w->params[i] = buf;
    return MOERT_OK;
}

/* A copy, aligned: the mapping does not outlive the load. */
static moert_status place_param(moert_weight_set *w, int64_t i, const moert_st_tensor *t) {
    return copy_param(w, i, t->name, t->data, t->nbytes);
}

/* The companion NAME.what of quantized param p (dt, K replaced by its group count). */
static moert_status find_companion(moert_weight_set *w, const char *path,
                                   const moert_tensor_info *p, const char *what, moert_dtype dt,
                                   int64_t groups, const moert_st_tensor **out) {
    char name[512];
    snprintf(name, sizeof name, "%s.%s", p->name, what);
    *out = moert_st_find(w->file, name);
    return check_tensor(path, p, name, *out, dt, groups);
}

/* An int8 / int4 param: its values, scales and zero points, packed into panels. */
static moert_status load_quant(moert_weight_set *w, const char *path, int64_t i) {
    const moert_tensor_info *p = &w->desc->info->params[i];
    const moert_param_desc *q = w->desc->params ? &w->desc->params[i] : NULL;
    moert_dtype dt = (moert_dtype)p->dtype;
    if (!q || q->panel_nr <= 0 || q->group <= 0 || p->rank < 2)
        return moert_fail(MOERT_ERR_INTERNAL, "quantized param '%s' has no panel layout", p->name);
    int64_t K = p->dims[p->rank - 2].c, N = p->dims[p->rank - 1].c, lead = 1;
    for (int64_t k = 0; k < p->rank - 2; k++)
        lead *= p->dims[k].c;
    const moert_st_tensor *values = moert_st_find(w->file, p->name), *scales, *zeros = NULL;
    moert_status s = check_tensor(path, p, p->name, values, dt, dt == MOERT_Q4 ? K / 2 : K);
    if (s == MOERT_OK) s = find_companion(w, path, p, "scale", MOERT_F32, K / q->group, &scales);
    if (s == MOERT_OK && q->zero)
        s = find_companion(w, path, p, "zero", MOERT_Q4, K / q->group, &zeros);
    if (s != MOERT_OK) return s;
    moert_quant_sizes m = moert_quant_layout(dt, K, N, q->group, q->zero, q->panel_nr);
    void *dst = alloc_aligned((size_t)(lead * m.matrix));
    if (!dst) return moert_fail(MOERT_ERR_MEMORY, "cannot allocate panels for param '%s'", p->name);
    moert_pack_quant(dt, values->data, scales->data, zeros ? zeros->data : NULL, lead, K, N,
                     q->group, q->panel_nr, dst);
    w->owned[i] = dst;
    w->params[i] = dst;
    return MOERT_OK;
}

static moert_status load_param(moert_weight_set *w, const char *path, int64_t i) {
    const moert_model_desc *d = w->desc;
    const moert_tensor_info *p = &d->info->params[i];
    if (p->dtype == MOERT_Q8 || p->dtype == MOERT_Q4) return load_quant(w, path, i);
    const moert_st_tensor *t = moert_st_find(w->file, p->name);
    moert_status s = check_param(path, p, t);
    if (s != MOERT_OK) return s;
    int64_t nr = d->params ? d->params[i].panel_nr : 0;
    return nr > 0 ? pack_param(w, i, t, nr) : place_param(w, i, t);
}

size_t moert_param_bytes(const moert_tensor_info *p) {
    size_t n = moert_dtype_size((moert_dtype)p->dtype);
    for (int64_t k = 0; k < p->rank; k++)
        n *= (size_t)p->dims[k].c;
    return n;
}

static void free_set(moert_weight_set *w) {
    if (!w) return;
    for (int64_t i = 0; w->owned && i < w->num_params; i++)
        free(w->owned[i]);
    free(w->owned);
    free((void *)w->params);
    moert_st_close(w->file);
    free(w);
}

static moert_status new_set(const moert_model_desc *d, bool shared, moert_weight_set **out) {
    const moert_model_info *info = d->info;
    *out = NULL;
    if (info->num_params < 0 || (info->num_params > 0 && !info->params))
        return moert_fail(MOERT_ERR_INTERNAL, "%s: the model's param list is broken",
                          moert_model_name(info));
    moert_weight_set *w = calloc(1, sizeof *w);
    if (w) {
        w->params = calloc((size_t)info->num_params + 1, sizeof *w->params);
        w->owned = calloc((size_t)info->num_params + 1, sizeof *w->owned);
    }
    if (!w || !w->params || !w->owned) {
        free_set(w);
        return moert_fail(MOERT_ERR_MEMORY, "%s: cannot allocate the param table",
                          moert_model_name(info));
    }
    w->desc = d;
    w->shared = shared;
    w->refs = 1;
    w->num_params = info->num_params;
    *out = w;
    return MOERT_OK;
}

static moert_status load_file(moert_weight_set *w, const char *path) {
    moert_status s = moert_st_open(path, &w->file);
    for (int64_t i = 0; i < w->num_params && s == MOERT_OK; i++)
        s = load_param(w, path, i);
    moert_st_close(w->file); /* every param is a copy or panels now */
    w->file = NULL;
    return s;
}

static bool same_id(const file_id *a, const file_id *b) {
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static moert_status shared_set(const moert_model_desc *d, const char *path,
                               moert_weight_set **out) {
    struct stat st;
    if (stat(path, &st) != 0)
        return moert_fail(MOERT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    file_id id = {st.st_dev, st.st_ino, st.st_size, st.st_mtim};
    pthread_mutex_lock(&registry_mu);
    moert_weight_set *w = registry;
    while (w && !(w->desc == d && same_id(&w->id, &id)))
        w = w->next;
    moert_status s = MOERT_OK;
    if (w)
        w->refs++;
    else if ((s = new_set(d, true, &w)) == MOERT_OK) {
        w->id = id;
        if ((s = load_file(w, path)) == MOERT_OK) {
            w->next = registry;
            registry = w;
        }
    }
    pthread_mutex_unlock(&registry_mu);
    if (s != MOERT_OK) {
        free_set(w);
        w = NULL;
    }
    *out = w;
    return s;
}

moert_status moert_weights_acquire(const moert_model_desc *d, const char *path,
                                   moert_weight_set **out) {
    *out = NULL;
    if (!d->info->train) return shared_set(d, path, out);
    moert_status s = new_set(d, false, out);
    if (s == MOERT_OK) s = load_file(*out, path);
    if (s != MOERT_OK) {
        free_set(*out);
        *out = NULL;
    }
    return s;
}

/* Training with embedded weights: writable copies of the compiled-in starting values. */
moert_status moert_weights_copy_initial(const moert_model_desc *d, moert_weight_set **out) {
    moert_status s = new_set(d, false, out);
    if (s == MOERT_OK && d->info->num_params > 0 && !d->initial)
        s = moert_fail(MOERT_ERR_INTERNAL, "%s: no initial weights", moert_model_name(d->info));
    for (int64_t i = 0; i < d->info->num_params && s == MOERT_OK; i++) {
        const moert_tensor_info *p = &d->info->params[i];
        s = copy_param(*out, i, p->name, d->initial[i], moert_param_bytes(p));
    }
    if (s != MOERT_OK) {
        free_set(*out);
        *out = NULL;
    }
    return s;
}

const void **moert_weights_params(moert_weight_set *w) {
    return w->params;
}

void moert_weights_release(moert_weight_set *w) {
    if (!w) return;
    if (!w->shared) {
        free_set(w);
        return;
    }
    pthread_mutex_lock(&registry_mu);
    bool last = --w->refs == 0;
    if (last) {
        moert_weight_set **at = &registry;
        while (*at != w)
            at = &(*at)->next;
        *at = w->next;
    }
    pthread_mutex_unlock(&registry_mu);
    if (last) free_set(w);
}
