/* frontend/load_data.c: where an initializer's bytes come from, in order: inline
 * "data"; the --weights file (when it holds the name); an "init" recipe; the model's
 * "weights" file (tensor "key", default the initializer's name). */
#include "load.h"

#include "../runtime/moert.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static bool store_number(ld_ctx *c, const cJSON *e, const char *path, mc_dtype dt,
                         unsigned char *out, int64_t k) {
    bool is_bool = cJSON_IsBool(e);
    if (!cJSON_IsNumber(e) && !(is_bool && dt == MC_DT_BOOL))
        return ld_fail(c, path, "data[%lld] must be a number, found %s", (long long)k, ld_kind(e));
    double v = is_bool ? (cJSON_IsTrue(e) ? 1 : 0) : e->valuedouble;
    if (!isfinite(v))
        return ld_fail(c, path, "data[%lld] is not finite (NaN and infinities are not allowed)",
                       (long long)k);
    if (!mc_dtype_is_float(dt) && v != floor(v))
        return ld_fail(c, path, "data[%lld] is %g but %s needs an integer", (long long)k, v,
                       mc_dtype_json_name(dt));
    switch (dt) {
    case MC_DT_F32: {
        float f = (float)v;
        memcpy(out + 4 * k, &f, 4);
        return true;
    }
    case MC_DT_F16: {
        uint16_t h = mc_f32_to_f16((float)v);
        memcpy(out + 2 * k, &h, 2);
        return true;
    }
    case MC_DT_BF16: {
        uint16_t h = mc_f32_to_bf16((float)v);
        memcpy(out + 2 * k, &h, 2);
        return true;
    }
    case MC_DT_I32: {
        if (v < -2147483648.0 || v > 2147483647.0)
            return ld_fail(c, path, "data[%lld] is %g, outside int32", (long long)k, v);
        int32_t i = (int32_t)v;
        memcpy(out + 4 * k, &i, 4);
        return true;
    }
    case MC_DT_I64: {
        if (fabs(v) > 9.0e15)
            return ld_fail(c, path, "data[%lld] is %g, too large to be exact", (long long)k, v);
        int64_t i = (int64_t)v;
        memcpy(out + 8 * k, &i, 8);
        return true;
    }
    case MC_DT_BOOL:
        if (v != 0 && v != 1)
            return ld_fail(c, path, "data[%lld] is %g but bool needs 0, 1, true or false",
                           (long long)k, v);
        out[k] = (unsigned char)v;
        return true;
    case MC_DT_Q8:
    case MC_DT_Q4: break; /* never declared: the JSON names no quantized dtype */
    }
    return false;
}

static bool inline_data(ld_ctx *c, const cJSON *data, const char *path, mc_value *v) {
    int64_t numel = mc_shape_numel(&v->shape, NULL);
    if (!cJSON_IsArray(data))
        return ld_fail(c, path, "data must be a flat array of numbers, found %s", ld_kind(data));
    int n = cJSON_GetArraySize(data);
    if (n != numel)
        return ld_fail(c, path, "data has %d elements but shape needs %lld", n, (long long)numel);
    unsigned char *bytes = mc_arena_alloc(c->g->arena, v->nbytes);
    int64_t k = 0;
    for (const cJSON *e = data->child; e; e = e->next, k++)
        if (!store_number(c, e, path, v->dt, bytes, k)) return false;
    v->data = bytes;
    v->src = MC_SRC_INLINE;
    return true;
}

static bool recipe_number(ld_ctx *c, const cJSON *r, const char *path, const char *key,
                          double *out) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(r, key);
    if (!j)
        return ld_fail(c, path, "init recipe \"%s\" needs \"%s\"",
                       cJSON_GetObjectItemCaseSensitive(r, "dist")->valuestring, key);
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble))
        return ld_fail(c, ld_path(c, "%s/%s", path, key), "%s must be a finite number, found %s",
                       key, ld_kind(j));
    *out = j->valuedouble;
    return true;
}

/* The buffer an init recipe fills: allocated apart from the arena so that a declared
 * size the machine cannot hold is a diagnostic, not an abort. */
static void *init_bytes(ld_ctx *c, const char *path, const mc_value *v) {
    int64_t limit = c->opts ? c->opts->max_init_bytes : 0;
    if (limit > 0 && (int64_t)v->nbytes > limit)
        return ld_fail(c, path,
                       "initializer '%s' would generate %zu bytes, above this run's limit of %lld",
                       v->name, v->nbytes, (long long)limit),
               NULL;
    void *bytes = mc_alloc(v->nbytes ? v->nbytes : 1);
    if (!bytes)
        return ld_fail(c, path, "cannot allocate %zu bytes for initializer '%s'", v->nbytes,
                       v->name),
               NULL;
    mc_arena_on_free(c->g->arena, mc_free, bytes);
    return bytes;
}

static bool parse_recipe(ld_ctx *c, const cJSON *r, const char *path, mc_value *v) {
    if (!cJSON_IsObject(r)) return ld_fail(c, path, "init must be an object, found %s", ld_kind(r));
    const cJSON *dist = cJSON_GetObjectItemCaseSensitive(r, "dist");
    if (!cJSON_IsString(dist))
        return ld_fail(c, ld_path(c, "%s/dist", path),
                       "init needs \"dist\": normal, uniform, zeros or ones");
    mc_init_recipe *ir = &v->init;
    const char *d = dist->valuestring;
    bool random = strcmp(d, "normal") == 0 || strcmp(d, "uniform") == 0;
    if (strcmp(d, "normal") == 0) {
        if (!ld_check_keys(c, r, path, "dist|mean|std|seed")) return false;
        if (cJSON_GetObjectItemCaseSensitive(r, "mean") &&
            !recipe_number(c, r, path, "mean", &ir->mean))
            return false;
        if (!recipe_number(c, r, path, "std", &ir->std)) return false;
        if (ir->std <= 0)
            return ld_fail(c, ld_path(c, "%s/std", path), "std is %g but must be positive",
                           ir->std);
    } else if (strcmp(d, "uniform") == 0) {
        if (!ld_check_keys(c, r, path, "dist|low|high|seed") ||
            !recipe_number(c, r, path, "low", &ir->low) ||
            !recipe_number(c, r, path, "high", &ir->high))
            return false;
        if (!(ir->low < ir->high))
            return ld_fail(c, path, "uniform needs low < high, found low %g and high %g", ir->low,
                           ir->high);
    } else if (strcmp(d, "zeros") == 0 || strcmp(d, "ones") == 0) {
        if (!ld_check_keys(c, r, path, "dist")) return false;
    } else {
        return ld_fail(c, ld_path(c, "%s/dist", path),
                       "dist is \"%s\" but must be one of: normal, uniform, zeros, ones", d);
    }
    if (random && !mc_dtype_is_float(v->dt))
        return ld_fail(c, ld_path(c, "%s/dist", path), "a %s recipe needs a float dtype, found %s",
                       d, mc_dtype_json_name(v->dt));
    if (random) {
        int64_t seed;
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(r, "seed");
        if (!s) return ld_fail(c, path, "init recipe \"%s\" needs \"seed\"", d);
        if (!ld_int(c, s, ld_path(c, "%s/seed", path), "seed", &seed)) return false;
        if (seed < 0)
            return ld_fail(c, ld_path(c, "%s/seed", path), "seed is %lld but must be >= 0",
                           (long long)seed);
        ir->seed = (uint64_t)seed;
    }
    ir->dist = mc_arena_strdup(c->g->arena, d);
    void *bytes = init_bytes(c, path, v);
    if (!bytes) return false;
    mc_init_fill(ir, v->dt, mc_shape_numel(&v->shape, NULL), bytes);
    v->data = bytes;
    v->src = MC_SRC_INIT;
    return true;
}

static const char *st_dtype(mc_dtype t) {
    static const char *names[MC_NUM_DTYPES] = {"F32", "F16",  "BF16", "I32",
                                               "I64", "BOOL", "I8",   "U8"};
    return names[t];
}

static const char *dims_str(ld_ctx *c, int rank, const int64_t *dims) {
    const char *s = "[";
    for (int i = 0; i < rank; i++)
        s = mc_arena_printf(c->g->arena, "%s%s%lld", s, i ? "," : "", (long long)dims[i]);
    return mc_arena_printf(c->g->arena, "%s]", s);
}

/* The companion `name`.`what` of a quantized tensor into *out (NULL when the file has
 * none): dtype dt and v's shape with K replaced by `groups` (0: any count that divides K;
 * *groups gets it). False on a mismatch. */
static bool companion(ld_ctx *c, const mc_safetensors *st, const char *file, const char *path,
                      const mc_st_tensor *t, const char *what, mc_dtype dt, const mc_value *v,
                      int64_t *groups, const mc_st_tensor **out) {
    const char *name = mc_arena_printf(c->g->arena, "%s.%s", t->name, what);
    const mc_st_tensor *q = *out = mc_st_find(st, name);
    if (!q) return true;
    int64_t want[MC_MAX_RANK], r = v->shape.rank;
    mc_shape_eval(&v->shape, NULL, want);
    int64_t K = want[r - 2];
    if (*groups == 0 && q->rank == r && q->dims[r - 2] > 0 && K % q->dims[r - 2] == 0)
        *groups = q->dims[r - 2];
    want[r - 2] = *groups ? *groups : K;
    bool same = q->dt == dt && q->rank == r;
    for (int i = 0; same && i < r; i++)
        same = q->dims[i] == want[i];
    if (same) return true;
    return ld_fail(c, path, "%s holds '%s' as %s %s but the %s of %s %s weights must be %s %s (%s)",
                   file, name, st_dtype(q->dt), dims_str(c, q->rank, q->dims), what,
                   st_dtype(t->dt), dims_str(c, t->rank, t->dims), st_dtype(dt),
                   dims_str(c, (int)r, want),
                   *groups ? "one row per group of K" : "K a multiple of the row count");
}

/* An int8 (I8 [.., K, N]) or int4 (U8 [.., K/2, N]) tensor for f32 param v, with its
 * scales NAME.scale (F32 [.., K/group, N]) and, for int4, zero points NAME.zero (U8, the
 * same shape), if any (docs/format.md): taken as stored. */
static bool from_quantized(ld_ctx *c, const mc_safetensors *st, const mc_st_tensor *t,
                           const char *file, const char *path, mc_value *v) {
    int64_t want[MC_MAX_RANK], r = v->shape.rank, groups = 0;
    mc_shape_eval(&v->shape, NULL, want);
    bool same =
        r >= 2 && t->rank == r && want[r - 2] > 0 && (t->dt == MC_DT_Q8 || want[r - 2] % 2 == 0);
    if (r >= 2 && t->dt == MC_DT_Q4) want[r - 2] /= 2;
    for (int i = 0; same && i < r; i++)
        same = t->dims[i] == want[i];
    if (!same)
        return ld_fail(c, path,
                       "%s holds '%s' as %s %s: as the %s values of param '%s' (f32 %s) it must "
                       "be %s %s",
                       file, t->name, st_dtype(t->dt), dims_str(c, t->rank, t->dims),
                       t->dt == MC_DT_Q8 ? "int8" : "int4 (two per byte along K)", v->name,
                       mc_shape_str(c->g, &v->shape, (char[256]){0}, 256), st_dtype(t->dt),
                       dims_str(c, (int)r, want));
    const mc_st_tensor *scale, *zero = NULL;
    if (!companion(c, st, file, path, t, "scale", MC_DT_F32, v, &groups, &scale)) return false;
    if (!scale)
        return ld_fail(c, path, "%s holds '%s' as %s but no '%s.scale' (F32) beside it", file,
                       t->name, st_dtype(t->dt), t->name);
    int64_t K = v->shape.d[r - 2].c, group = K / groups;
    if (t->dt == MC_DT_Q8 && groups != 1)
        return ld_fail(c, path, "%s: int8 '%s' has %lld scales per column; moec's int8 has one",
                       file, t->name, (long long)groups);
    if (t->dt == MC_DT_Q4 && group % MOERT_Q4_GROUP_ROWS != 0)
        return ld_fail(c, path,
                       "%s: int4 '%s' has groups of %lld rows; they must be a multiple of %d", file,
                       t->name, (long long)group, MOERT_Q4_GROUP_ROWS);
    if (t->dt == MC_DT_Q4 && !companion(c, st, file, path, t, "zero", MC_DT_Q4, v, &groups, &zero))
        return false;
    if ((uintptr_t)scale->data % 4 != 0)
        return ld_fail(c, path, "%s: '%s.scale' is not 4-byte aligned", file, t->name);
    v->dt = t->dt;
    v->data = t->data;
    v->nbytes = t->nbytes;
    v->qscale = scale->data;
    v->qzero = zero ? zero->data : NULL;
    v->qgroup = (int)group;
    v->stored_narrow = true;
    v->src = MC_SRC_FILE;
    v->file_key = mc_arena_strdup(c->g->arena, t->name);
    return true;
}

/* Takes the bytes from tensor `t` of `file` after checking dtype and shape. An f16, bf16,
 * int8 or int4 tensor for a param the model declares f32 is taken as stored
 * (ld_legalize_narrow widens it after the nodes are loaded if something other than a
 * product reads it). */
static bool from_tensor(ld_ctx *c, const mc_safetensors *st, const mc_st_tensor *t,
                        const char *file, const char *path, mc_value *v) {
    if (v->dt == MC_DT_F32 && v->kind == MC_VK_PARAM && mc_dtype_is_quant(t->dt))
        return from_quantized(c, st, t, file, path, v);
    int64_t want[MC_MAX_RANK];
    mc_shape_eval(&v->shape, NULL, want);
    bool narrow =
        v->dt == MC_DT_F32 && (t->dt == MC_DT_F16 || t->dt == MC_DT_BF16) && v->kind == MC_VK_PARAM;
    bool same = (t->dt == v->dt || narrow) && t->rank == v->shape.rank;
    for (int i = 0; same && i < t->rank; i++)
        same = t->dims[i] == want[i];
    if (!same)
        return ld_fail(c, path, "%s holds '%s' as %s %s but the model declares %s %s", file,
                       t->name, st_dtype(t->dt), dims_str(c, t->rank, t->dims), st_dtype(v->dt),
                       dims_str(c, v->shape.rank, want));
    if (narrow) {
        v->dt = t->dt;
        v->nbytes = t->nbytes;
        v->stored_narrow = true;
    }
    v->data = t->data;
    v->src = MC_SRC_FILE;
    v->file_key = mc_arena_strdup(c->g->arena, t->name);
    return true;
}

static mc_safetensors *open_once(ld_ctx *c, mc_safetensors **slot, const char *file) {
    if (*slot) return *slot;
    mc_safetensors *st = mc_arena_alloc(c->g->arena, sizeof *st);
    if (!mc_st_open(st, file, c->g->arena, c->d)) return NULL;
    return *slot = st;
}

bool ld_initializer_data(ld_ctx *c, const cJSON *init, const char *path, int value) {
    mc_value *v = mc_val(c->g, value);
    v->nbytes = (size_t)mc_shape_numel(&v->shape, NULL) * mc_dtype_size(v->dt);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(init, "data");
    const cJSON *recipe = cJSON_GetObjectItemCaseSensitive(init, "init");
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(init, "key");
    if (key && !cJSON_IsString(key))
        return ld_fail(c, ld_path(c, "%s/key", path), "key must be a string, found %s",
                       ld_kind(key));
    if ((data != NULL) + (recipe != NULL) + (key != NULL) > 1)
        return ld_fail(c, path, "initializer '%s' gives more than one of data, init and key",
                       v->name);
    if (data) return inline_data(c, data, ld_path(c, "%s/data", path), v);
    const char *name = key ? key->valuestring : v->name;
    if (c->opts && c->opts->weights_path) {
        mc_safetensors *st = open_once(c, &c->override, c->opts->weights_path);
        if (!st) return false;
        const mc_st_tensor *t = mc_st_find(st, name);
        if (t) return from_tensor(c, st, t, c->opts->weights_path, path, v);
    }
    const mc_safetensors *table = c->opts ? c->opts->weights_table : NULL;
    const mc_st_tensor *in_table = table ? mc_st_find(table, name) : NULL;
    if (in_table) return from_tensor(c, table, in_table, table->path, path, v);
    if (recipe) return parse_recipe(c, recipe, ld_path(c, "%s/init", path), v);
    if (!c->weights_file)
        return ld_fail(
            c, path,
            "initializer '%s' has no data, no init recipe, and the model names no \"weights\" file",
            v->name);
    mc_safetensors *st = open_once(c, &c->weights, c->weights_file);
    if (!st) return false;
    const mc_st_tensor *t = mc_st_find(st, name);
    if (!t) return ld_fail(c, path, "tensor '%s' is not in %s", name, c->weights_file);
    return from_tensor(c, st, t, c->weights_file, path, v);
}

/* Whether every node reading param v reads it as a product's weight (in inference:
 * training updates f32 params). */
static bool only_weight_uses(const ld_ctx *c, const mc_value *v) {
    if (c->g->training || v->is_output || v->shape.rank < 2) return false;
    for (int u = 0; u < v->nuses; u++)
        if (!mc_weight_slot(mc_nod(c->g, v->uses[u].node)->op, v->uses[u].slot)) return false;
    return true;
}

void ld_legalize_narrow(ld_ctx *c) {
    for (int i = 0; i < c->g->nvalues; i++) {
        mc_value *v = mc_val(c->g, i);
        if (!v->stored_narrow || only_weight_uses(c, v)) continue;
        mc_value_convert(c->g, v, MC_DT_F32);
        v->stored_narrow = false;
    }
}
