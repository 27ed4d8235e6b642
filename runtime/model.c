/* runtime/model.c: the model object behind <name>_create/_destroy. It owns the planned
 * arena and, with --weights=external, the mapped weights file and one pointer per param:
 * into the mapping when the bytes can be used as they are, else into a buffer of its own
 * (GEMM panels, or a copy of data the file left misaligned for its dtype). */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct model_impl {
    struct moert_model pub; /* first: generated code sees only this part */
    moert_arena arena;
    moert_st_file *weights;
    const moert_model_desc *desc;
    int64_t num_params;
    void **owned; /* per param: the buffer this model allocated, or NULL */
} model_impl;

void moert_pack_panels(const float *src, int64_t lead, int64_t K, int64_t N, int64_t nr,
                       float *dst) {
    if (nr <= 0) return;
    int64_t panels = (N + nr - 1) / nr;
    for (int64_t l = 0; l < lead; l++)
        for (int64_t p = 0; p < panels; p++)
            for (int64_t k = 0; k < K; k++) {
                const float *row = src + (l * K + k) * N;
                float *d = dst + ((l * panels + p) * K + k) * nr;
                for (int64_t j = 0; j < nr; j++)
                    d[j] = p * nr + j < N ? row[p * nr + j] : 0.0f;
            }
}

/* A 64-byte aligned buffer of at least one line, so even an empty param is non-NULL. */
static void *alloc_aligned(size_t bytes) {
    size_t rounded = (bytes + MOERT_ALIGN - 1) / MOERT_ALIGN * MOERT_ALIGN;
    if (rounded < bytes) return NULL;
    return aligned_alloc(MOERT_ALIGN, rounded ? rounded : MOERT_ALIGN);
}

static const char *model_name(const moert_model_info *info) {
    return info->name ? info->name : "model";
}

static moert_status check_param(const char *path, const moert_tensor_info *p,
                                const moert_st_tensor *t) {
    int64_t dims[8];
    if (p->rank < 0 || p->rank > 8)
        return moert_fail(MOERT_ERR_INTERNAL, "param '%s' has rank %lld", p->name,
                          (long long)p->rank);
    for (int64_t k = 0; k < p->rank; k++) {
        if (p->dims[k].sym >= 0)
            return moert_fail(MOERT_ERR_INTERNAL, "param '%s' has a symbolic dim", p->name);
        dims[k] = p->dims[k].c;
    }
    int same = (int64_t)t->dtype == p->dtype && t->rank == p->rank &&
               memcmp(dims, t->dims, sizeof *dims * (size_t)p->rank) == 0;
    if (same) return MOERT_OK;
    char want[200], have[200];
    moert_format_dims(want, sizeof want, dims, p->rank);
    moert_format_dims(have, sizeof have, t->dims, t->rank);
    return moert_fail(MOERT_ERR_FORMAT, "%s: tensor '%s': expected %s %s, found %s %s", path,
                      p->name, moert_dtype_name((moert_dtype)p->dtype), want,
                      moert_dtype_name(t->dtype), have);
}

/* The file's bytes as floats; a misaligned tensor is copied first, since reading it
 * through a float pointer would be undefined. */
static moert_status pack_param(model_impl *m, int64_t i, const moert_st_tensor *t, int64_t nr) {
    if (t->dtype != MOERT_F32 || t->rank < 2)
        return moert_fail(MOERT_ERR_INTERNAL,
                          "param '%s' is packed into panels but is not an f32 "
                          "matrix",
                          t->name);
    int64_t K = t->dims[t->rank - 2], N = t->dims[t->rank - 1], lead = 1;
    for (int64_t k = 0; k < t->rank - 2; k++)
        lead *= t->dims[k];
    int64_t dims[3] = {lead, (N + nr - 1) / nr, K * nr};
    int ok;
    size_t bytes = moert_nbytes(dims, 3, sizeof(float), &ok);
    float *dst = ok ? alloc_aligned(bytes) : NULL;
    void *copy = (uintptr_t)t->data % sizeof(float) ? malloc(t->nbytes + 1) : NULL;
    if (!dst || (!copy && (uintptr_t)t->data % sizeof(float))) {
        free(dst);
        return moert_fail(MOERT_ERR_MEMORY, "cannot allocate panels for param '%s'", t->name);
    }
    if (copy) memcpy(copy, t->data, t->nbytes);
    moert_pack_panels(copy ? copy : t->data, lead, K, N, nr, dst);
    free(copy);
    m->owned[i] = dst;
    m->pub.params[i] = dst;
    return MOERT_OK;
}

static moert_status copy_param(model_impl *m, int64_t i, const char *name, const void *data,
                               size_t nbytes) {
    void *buf = alloc_aligned(nbytes ? nbytes : 1);
    if (!buf) return moert_fail(MOERT_ERR_MEMORY, "cannot allocate param '%s'", name);
    memcpy(buf, data, nbytes);
    m->owned[i] = buf;
    m->pub.params[i] = buf;
    return MOERT_OK;
}

/* Training writes its params: they always get a copy of their own. */
static moert_status place_param(model_impl *m, int64_t i, const moert_st_tensor *t) {
    if (m->desc->info->train) return copy_param(m, i, t->name, t->data, t->nbytes);
    if ((uintptr_t)t->data % moert_dtype_size(t->dtype) == 0) {
        m->pub.params[i] = t->data;
        return MOERT_OK;
    }
    void *buf = alloc_aligned(t->nbytes);
    if (!buf) return moert_fail(MOERT_ERR_MEMORY, "cannot allocate param '%s'", t->name);
    memcpy(buf, t->data, t->nbytes);
    m->owned[i] = buf;
    m->pub.params[i] = buf;
    return MOERT_OK;
}

static moert_status load_param(model_impl *m, const char *path, const moert_model_desc *d,
                               int64_t i) {
    const moert_tensor_info *p = &d->info->params[i];
    const moert_st_tensor *t = moert_st_find(m->weights, p->name);
    if (!t)
        return moert_fail(MOERT_ERR_FORMAT, "%s: tensor '%s' is missing; the model needs it", path,
                          p->name);
    moert_status s = check_param(path, p, t);
    if (s != MOERT_OK) return s;
    int64_t nr = d->params ? d->params[i].panel_nr : 0;
    return nr > 0 ? pack_param(m, i, t, nr) : place_param(m, i, t);
}

static moert_status alloc_params(model_impl *m, const moert_model_info *info) {
    if (info->num_params < 0 || (info->num_params > 0 && !info->params))
        return moert_fail(MOERT_ERR_INTERNAL, "%s: the model's param list is broken",
                          model_name(info));
    m->pub.params = calloc((size_t)info->num_params + 1, sizeof *m->pub.params);
    m->owned = calloc((size_t)info->num_params + 1, sizeof *m->owned);
    if (!m->pub.params || !m->owned)
        return moert_fail(MOERT_ERR_MEMORY, "%s: cannot allocate the param table",
                          model_name(info));
    m->num_params = info->num_params;
    return MOERT_OK;
}

static moert_status load_weights(model_impl *m, const moert_model_desc *d, const char *path) {
    moert_status s = alloc_params(m, d->info);
    if (s == MOERT_OK) s = moert_st_open(path, &m->weights);
    for (int64_t i = 0; i < d->info->num_params && s == MOERT_OK; i++)
        s = load_param(m, path, d, i);
    return s;
}

static size_t param_bytes(const moert_tensor_info *p) {
    size_t n = moert_dtype_size((moert_dtype)p->dtype);
    for (int64_t k = 0; k < p->rank; k++)
        n *= (size_t)p->dims[k].c;
    return n;
}

/* Training with embedded weights: writable copies of the compiled-in starting values. */
static moert_status copy_initial(model_impl *m, const moert_model_desc *d) {
    moert_status s = alloc_params(m, d->info);
    if (s == MOERT_OK && d->info->num_params > 0 && !d->initial)
        return moert_fail(MOERT_ERR_INTERNAL, "%s: no initial weights", model_name(d->info));
    for (int64_t i = 0; i < d->info->num_params && s == MOERT_OK; i++) {
        const moert_tensor_info *p = &d->info->params[i];
        s = copy_param(m, i, p->name, d->initial[i], param_bytes(p));
    }
    return s;
}

static moert_status check_desc(const moert_model_desc *d, const char *weights_path) {
    if (!d || !d->info)
        return moert_fail(MOERT_ERR_ARGUMENT, "moert_model_create: NULL model description");
    const moert_model_info *info = d->info;
    const char *name = model_name(info);
    if (info->external_weights && !weights_path)
        return moert_fail(MOERT_ERR_ARGUMENT,
                          "%s: compiled with --weights=external; _create needs the weights file",
                          name);
    if (!info->external_weights && weights_path)
        return moert_fail(MOERT_ERR_ARGUMENT, "%s: weights are embedded; pass NULL", name);
    if (info->arena_bytes < 0)
        return moert_fail(MOERT_ERR_INTERNAL, "%s: arena_bytes is negative", name);
    return MOERT_OK;
}

moert_status moert_model_create(const moert_model_desc *d, const char *weights_path,
                                moert_model **out) {
    if (!out) return moert_fail(MOERT_ERR_ARGUMENT, "moert_model_create: NULL out");
    *out = NULL;
    moert_status s = check_desc(d, weights_path);
    if (s != MOERT_OK) return s;
    model_impl *m = calloc(1, sizeof *m);
    if (!m)
        return moert_fail(MOERT_ERR_MEMORY, "%s: cannot allocate the model", model_name(d->info));
    m->desc = d;
    s = moert_arena_init(&m->arena, (size_t)d->info->arena_bytes);
    m->pub.arena = m->arena.base;
    if (s == MOERT_OK && d->info->external_weights)
        s = load_weights(m, d, weights_path);
    else if (s == MOERT_OK && d->info->train)
        s = copy_initial(m, d);
    if (s != MOERT_OK) {
        moert_model_destroy(&m->pub);
        return s;
    }
    *out = &m->pub;
    return MOERT_OK;
}

void moert_model_destroy(moert_model *pub) {
    if (!pub) return;
    model_impl *m = (model_impl *)pub;
    for (int64_t i = 0; m->owned && i < m->num_params; i++)
        free(m->owned[i]);
    free(m->owned);
    free((void *)pub->params);
    moert_st_close(m->weights);
    moert_arena_release(&m->arena);
    free(m);
}

moert_status moert_model_save_weights(moert_model *pub, const char *path) {
    if (!pub) return moert_fail(MOERT_ERR_ARGUMENT, "save_weights: the model is NULL");
    model_impl *m = (model_impl *)pub;
    const moert_model_info *info = m->desc->info;
    if (!info->train)
        return moert_fail(MOERT_ERR_ARGUMENT,
                          "%s: save_weights needs a model compiled with --mode=train",
                          model_name(info));
    moert_st_tensor *t = calloc((size_t)info->num_params + 1, sizeof *t);
    if (!t)
        return moert_fail(MOERT_ERR_MEMORY, "%s: cannot allocate the tensor list",
                          model_name(info));
    for (int64_t i = 0; i < info->num_params; i++) {
        const moert_tensor_info *p = &info->params[i];
        t[i] = (moert_st_tensor){.name = p->name,
                                 .dtype = (moert_dtype)p->dtype,
                                 .rank = p->rank,
                                 .data = pub->params[i],
                                 .nbytes = param_bytes(p)};
        for (int64_t k = 0; k < p->rank; k++)
            t[i].dims[k] = p->dims[k].c;
    }
    moert_status s = moert_st_write(path, t, info->num_params);
    free(t);
    return s;
}
