/* runtime/model.c: the model object behind <name>_create/_destroy. It owns the planned
 * arena and holds a reference to its params (runtime/weights.c) when they come from a
 * weights file or, in training, are copies of its own. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct model_impl {
    struct moert_model pub; /* first: generated code sees only this part */
    moert_arena arena;
    moert_weight_set *weights; /* NULL: embedded weights, read in place */
    const moert_model_desc *desc;
} model_impl;

void moert_pack_panels(const void *src, size_t elem, int64_t lead, int64_t K, int64_t N, int64_t nr,
                       void *dst) {
    if (nr <= 0) return;
    int64_t panels = (N + nr - 1) / nr;
    for (int64_t l = 0; l < lead; l++)
        for (int64_t p = 0; p < panels; p++)
            for (int64_t k = 0; k < K; k++) {
                const char *row = (const char *)src + ((l * K + k) * N + p * nr) * (int64_t)elem;
                char *d = (char *)dst + (((l * panels + p) * K + k) * nr) * (int64_t)elem;
                size_t have = (size_t)(N - p * nr < nr ? N - p * nr : nr) * elem;
                memcpy(d, row, have);
                memset(d + have, 0, (size_t)nr * elem - have); /* zero bits: 0.0 in each */
            }
}

/* bf16 rows in pairs (moert_pack_weight). */
static void pack_pairs(const uint16_t *src, int64_t lead, int64_t K, int64_t N, int64_t nr,
                       uint16_t *dst) {
    int64_t panels = (N + nr - 1) / nr, rows = moert_panel_rows(MOERT_BF16, K);
    for (int64_t l = 0; l < lead; l++)
        for (int64_t p = 0; p < panels; p++) {
            uint16_t *panel = dst + (l * panels + p) * rows * nr;
            for (int64_t k = 0; k < rows; k++)
                for (int64_t j = 0; j < nr; j++) {
                    int64_t n = p * nr + j;
                    panel[((k & ~(int64_t)1) * nr) + 2 * j + (k & 1)] =
                        k < K && n < N ? src[(l * K + k) * N + n] : 0;
                }
        }
}

void moert_pack_weight(moert_dtype dt, const void *src, int64_t lead, int64_t K, int64_t N,
                       int64_t nr, void *dst) {
    if (nr <= 0) return;
    if (dt == MOERT_BF16)
        pack_pairs(src, lead, K, N, nr, dst);
    else
        moert_pack_panels(src, moert_dtype_size(dt), lead, K, N, nr, dst);
}

/* The 4-bit value of row k, column n of a plain int4 matrix (N columns). */
static unsigned nibble(const uint8_t *v, int64_t N, int64_t k, int64_t n) {
    return (v[(k / 2) * N + n] >> (4 * (k & 1))) & 15u;
}

/* Byte b of column n's 4-byte block i (moert_quant_layout), from a plain matrix. */
static uint8_t block_byte(moert_dtype dt, const uint8_t *v, int64_t K, int64_t N, int64_t i,
                          int64_t n, int b) {
    if (dt == MOERT_Q8) return 4 * i + b < K ? v[(4 * i + b) * N + n] : 0;
    return (uint8_t)(nibble(v, N, 8 * i + b, n) | nibble(v, N, 8 * i + 4 + b, n) << 4);
}

/* A plain [K, N] matrix of int8 / int4 values into its panels of 4-byte blocks. */
static void pack_blocks(moert_dtype dt, const uint8_t *v, int64_t K, int64_t N, int64_t nr,
                        uint8_t *dst) {
    int64_t panels = (N + nr - 1) / nr;
    int64_t blocks = dt == MOERT_Q8 ? moert_quant_panel_rows(dt, K) / 4 : K / 8;
    for (int64_t p = 0; p < panels; p++)
        for (int64_t i = 0; i < blocks; i++)
            for (int64_t j = 0; j < nr; j++) {
                uint8_t *d = dst + ((p * blocks + i) * nr + j) * 4;
                for (int b = 0; b < 4; b++)
                    d[b] = p * nr + j < N ? block_byte(dt, v, K, N, i, p * nr + j, b) : 0;
            }
}

void moert_pack_quant(moert_dtype dt, const void *values, const float *scales, const uint8_t *zeros,
                      int64_t lead, int64_t K, int64_t N, int64_t group, int64_t nr, void *dst) {
    moert_quant_sizes plain = moert_quant_layout(dt, K, N, group, zeros != NULL, 0);
    moert_quant_sizes packed = moert_quant_layout(dt, K, N, group, zeros != NULL, nr);
    int64_t groups = K / group;
    for (int64_t l = 0; l < lead; l++) {
        char *m = (char *)dst + l * packed.matrix;
        pack_blocks(dt, (const uint8_t *)values + l * plain.values, K, N, nr, (uint8_t *)m);
        moert_pack_panels((const char *)scales + l * plain.scales, 4, 1, groups, N, nr,
                          m + packed.values);
        if (zeros)
            moert_pack_panels(zeros + l * plain.zeros, 1, 1, groups, N, nr,
                              m + packed.values + packed.scales);
    }
}

static moert_status check_desc(const moert_model_desc *d, const char *weights_path) {
    if (!d || !d->info)
        return moert_fail(MOERT_ERR_ARGUMENT, "moert_model_create: NULL model description");
    const moert_model_info *info = d->info;
    const char *name = moert_model_name(info);
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
        return moert_fail(MOERT_ERR_MEMORY, "%s: cannot allocate the model",
                          moert_model_name(d->info));
    m->desc = d;
    s = moert_arena_init(&m->arena, (size_t)d->info->arena_bytes);
    m->pub.arena = m->arena.base;
    if (s == MOERT_OK && d->info->external_weights)
        s = moert_weights_acquire(d, weights_path, &m->weights);
    else if (s == MOERT_OK && d->info->train)
        s = moert_weights_copy_initial(d, &m->weights);
    if (m->weights) m->pub.params = moert_weights_params(m->weights);
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
    moert_weights_release(m->weights);
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
                          moert_model_name(info));
    moert_st_tensor *t = calloc((size_t)info->num_params + 1, sizeof *t);
    if (!t)
        return moert_fail(MOERT_ERR_MEMORY, "%s: cannot allocate the tensor list",
                          moert_model_name(info));
    for (int64_t i = 0; i < info->num_params; i++) {
        const moert_tensor_info *p = &info->params[i];
        t[i] = (moert_st_tensor){.name = p->name,
                                 .dtype = (moert_dtype)p->dtype,
                                 .rank = p->rank,
                                 .data = pub->params[i],
                                 .nbytes = moert_param_bytes(p)};
        for (int64_t k = 0; k < p->rank; k++)
            t[i].dims[k] = p->dims[k].c;
    }
    moert_status s = moert_st_write(path, t, info->num_params);
    free(t);
    return s;
}
