/* frontend/load.c: JSON model -> graph. Top level, symbols, inputs, outputs and
 * initializers; nodes are in load_nodes.c. Every check reports the JSON path of the
 * offending field and what was expected. The rules are documented in docs/format.md. */
#include "load.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool ld_fail(ld_ctx *c, const char *path, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    mc_verror(c->d, path, fmt, ap);
    va_end(ap);
    return false;
}

const char *ld_path(ld_ctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char buf[512];
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return mc_arena_strdup(c->g->arena, buf);
}

const char *ld_kind(const cJSON *j) {
    if (!j) return "nothing";
    if (cJSON_IsString(j)) return j->valuestring[0] ? "a string" : "an empty string";
    if (cJSON_IsNumber(j)) return "a number";
    if (cJSON_IsArray(j)) return "an array";
    if (cJSON_IsObject(j)) return "an object";
    if (cJSON_IsBool(j)) return "a boolean";
    return "null";
}

/* Every key of object `o` must be one of `allowed` ("a|b|c"). */
bool ld_check_keys(ld_ctx *c, const cJSON *o, const char *path, const char *allowed) {
    for (const cJSON *it = o->child; it; it = it->next) {
        size_t n = strlen(it->string);
        const char *p = allowed;
        bool found = false;
        while (*p && !found) {
            const char *bar = strchr(p, '|');
            size_t len = bar ? (size_t)(bar - p) : strlen(p);
            found = len == n && strncmp(p, it->string, n) == 0;
            p = bar ? bar + 1 : p + len;
        }
        if (!found) {
            char list[256];
            snprintf(list, sizeof list, "%s", allowed);
            for (char *q = list; *q; q++)
                if (*q == '|') *q = ',';
            return ld_fail(c, path, "unknown key \"%s\"; expected one of: %s", it->string, list);
        }
    }
    return true;
}

bool ld_int(ld_ctx *c, const cJSON *j, const char *path, const char *what, int64_t *out) {
    if (!cJSON_IsNumber(j))
        return ld_fail(c, path, "%s must be an integer, found %s", what, ld_kind(j));
    double v = j->valuedouble;
    if (v != floor(v) || fabs(v) > 9.0e15)
        return ld_fail(c, path, "%s must be an integer, found %.17g", what, v);
    *out = (int64_t)v;
    return true;
}

static bool is_c_identifier(const char *s) {
    if (!*s || !(isalpha((unsigned char)*s) || *s == '_')) return false;
    for (; *s; s++)
        if (!(isalnum((unsigned char)*s) || *s == '_')) return false;
    return true;
}

static bool load_header(ld_ctx *c, const cJSON *root) {
    if (!cJSON_IsObject(root))
        return ld_fail(c, "/", "the model must be a JSON object, found %s", ld_kind(root));
    if (!ld_check_keys(c, root, "/",
                       "moec|name|symbols|weights|inputs|outputs|initializers|nodes|doc"))
        return false;
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "moec");
    int64_t v = 0;
    if (!ver) return ld_fail(c, "/moec", "missing format version: add \"moec\": 1");
    if (!ld_int(c, ver, "/moec", "the format version", &v)) return false;
    if (v != 1)
        return ld_fail(c, "/moec", "format version is %lld but this moec reads 1", (long long)v);
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(root, "name");
    if (!cJSON_IsString(name))
        return ld_fail(c, "/name", "the model name must be a string, found %s", ld_kind(name));
    if (!is_c_identifier(name->valuestring) || strlen(name->valuestring) > 64)
        return ld_fail(c, "/name",
                       "name \"%s\" must be a C identifier (letters, digits, _; at most 64) since "
                       "it prefixes the generated symbols",
                       name->valuestring);
    c->g->name = mc_arena_strdup(c->g->arena, name->valuestring);
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(root, "weights");
    if (w && !cJSON_IsString(w))
        return ld_fail(c, "/weights", "\"weights\" must be a file name, found %s", ld_kind(w));
    if (w)
        c->weights_file = w->valuestring[0] == '/' || !c->base_dir
                              ? mc_arena_strdup(c->g->arena, w->valuestring)
                              : mc_arena_printf(c->g->arena, "%s/%s", c->base_dir, w->valuestring);
    c->g->weights_path = c->weights_file;
    if (c->opts && c->opts->weights_path)
        c->g->weights_override = mc_arena_strdup(c->g->arena, c->opts->weights_path);
    for (const char *k = "inputs\0outputs\0nodes\0"; *k; k += strlen(k) + 1) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, k);
        if (!arr)
            return ld_fail(c, ld_path(c, "/%s", k),
                           "\"%s\" is missing: the model needs an array of %s", k, k);
        if (!cJSON_IsArray(arr))
            return ld_fail(c, ld_path(c, "/%s", k), "\"%s\" must be an array, found %s", k,
                           ld_kind(arr));
    }
    return true;
}

static bool load_symbols(ld_ctx *c, const cJSON *root) {
    const cJSON *syms = cJSON_GetObjectItemCaseSensitive(root, "symbols");
    if (!syms) return true;
    if (!cJSON_IsObject(syms))
        return ld_fail(c, "/symbols", "\"symbols\" must be an object, found %s", ld_kind(syms));
    for (const cJSON *s = syms->child; s; s = s->next) {
        const char *path = ld_path(c, "/symbols/%s", s->string);
        if (!is_c_identifier(s->string))
            return ld_fail(c, path, "symbol name \"%s\" must be an identifier", s->string);
        if (!cJSON_IsObject(s) || !ld_check_keys(c, s, path, "max"))
            return cJSON_IsObject(s) ? false
                                     : ld_fail(c, path, "a symbol must be an object {\"max\": N}");
        const cJSON *max = cJSON_GetObjectItemCaseSensitive(s, "max");
        int64_t m = 0;
        const char *mpath = ld_path(c, "%s/max", path);
        if (!max) return ld_fail(c, mpath, "symbol %s needs a \"max\"", s->string);
        if (!ld_int(c, max, mpath, "max", &m)) return false;
        if (m < 1 || m > MC_MAX_DIM)
            return ld_fail(c, mpath, "max is %lld but must be between 1 and 2^40", (long long)m);
        for (int i = 0; c->opts && i < c->opts->nsym_max; i++) /* --max NAME=N wins */
            if (strcmp(c->opts->sym_max[i].name, s->string) == 0) m = c->opts->sym_max[i].max;
        if (mc_graph_add_symbol(c->g, s->string, m) < 0)
            return ld_fail(c, path, "too many symbols (at most %d)", MC_MAX_SYMS);
    }
    return true;
}

static bool load_dtype(ld_ctx *c, const cJSON *j, const char *path, mc_dtype *out) {
    if (!cJSON_IsString(j)) return ld_fail(c, path, "dtype must be a string, found %s", ld_kind(j));
    if (!mc_dtype_from_json(j->valuestring, out))
        return ld_fail(c, path,
                       "unknown dtype \"%s\"; expected float32, float16, bfloat16, int32, int64 or "
                       "bool",
                       j->valuestring);
    return true;
}

bool ld_shape(ld_ctx *c, const cJSON *j, const char *path, bool allow_syms, mc_shape *out) {
    if (!cJSON_IsArray(j)) return ld_fail(c, path, "shape must be an array, found %s", ld_kind(j));
    int rank = cJSON_GetArraySize(j);
    if (rank > MC_MAX_RANK)
        return ld_fail(c, path, "rank is %d but must be at most %d", rank, MC_MAX_RANK);
    out->rank = rank;
    int i = 0;
    for (const cJSON *d = j->child; d; d = d->next, i++) {
        const char *dpath = ld_path(c, "%s/%d", path, i);
        if (cJSON_IsString(d)) {
            int s = mc_graph_find_symbol(c->g, d->valuestring);
            if (s < 0) return ld_fail(c, dpath, "\"%s\" is not a declared symbol", d->valuestring);
            if (!allow_syms)
                return ld_fail(c, dpath, "initializers need constant dims, found symbol %s",
                               d->valuestring);
            out->d[i] = mc_dim_sym(s, 1);
            continue;
        }
        int64_t v = 0;
        if (!ld_int(c, d, dpath, "a dim", &v)) return false;
        if (v < 1 || v > MC_MAX_DIM)
            return ld_fail(c, dpath, "dim is %lld but must be between 1 and 2^40", (long long)v);
        out->d[i] = mc_dim_const(v);
    }
    return true;
}

static bool define_name(ld_ctx *c, const cJSON *j, const char *path, const char **out) {
    if (!cJSON_IsString(j) || !*j->valuestring)
        return ld_fail(c, path, "a name must be a non-empty string, found %s", ld_kind(j));
    if (mc_graph_find_value(c->g, j->valuestring) >= 0)
        return ld_fail(c, path, "name \"%s\" is defined twice", j->valuestring);
    *out = j->valuestring;
    return true;
}

/* One declaration {"name", "dtype", "shape", ...}: checks it and adds the value (or
 * returns -1). `what` is "an input" or "an initializer" for messages. */
static int load_decl(ld_ctx *c, const cJSON *j, const char *path, const char *what,
                     const char *keys, mc_value_kind kind, int index) {
    const char *name = NULL;
    mc_dtype dt = MC_DT_F32;
    mc_shape shape;
    if (!cJSON_IsObject(j))
        return ld_fail(c, path, "%s must be an object, found %s", what, ld_kind(j)), -1;
    bool is_input = kind == MC_VK_INPUT;
    if (!ld_check_keys(c, j, path, keys) ||
        !define_name(c, cJSON_GetObjectItemCaseSensitive(j, "name"), ld_path(c, "%s/name", path),
                     &name) ||
        !load_dtype(c, cJSON_GetObjectItemCaseSensitive(j, "dtype"), ld_path(c, "%s/dtype", path),
                    &dt) ||
        !ld_shape(c, cJSON_GetObjectItemCaseSensitive(j, "shape"), ld_path(c, "%s/shape", path),
                  is_input, &shape))
        return -1;
    if (mc_shape_numel_max(c->g, &shape) < 0)
        return ld_fail(c, ld_path(c, "%s/shape", path), "%s '%s' has more than 2^40 elements",
                       is_input ? "input" : "initializer", name),
               -1;
    int v = mc_graph_add_value(c->g, name, dt, kind);
    mc_val(c->g, v)->shape = shape;
    mc_val(c->g, v)->has_shape = true;
    mc_val(c->g, v)->src_index = index;
    return v;
}

static bool load_inputs(ld_ctx *c, const cJSON *root) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "inputs");
    c->g->inputs = mc_arena_alloc(c->g->arena, sizeof(int) * (size_t)(cJSON_GetArraySize(arr) + 1));
    int i = 0;
    for (const cJSON *in = arr->child; in; in = in->next, i++) {
        int v = load_decl(c, in, ld_path(c, "/inputs/%d", i), "an input", "name|dtype|shape",
                          MC_VK_INPUT, i);
        if (v < 0) return false;
        c->g->inputs[c->g->ninputs++] = v;
    }
    return true;
}

/* "weight_dtype": the storage quantize-weights gives this param, whatever
 * --weight-dtype says (docs/format.md). */
static bool weight_dtype(ld_ctx *c, const cJSON *in, const char *path, int value) {
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(in, "weight_dtype");
    if (!w) return true;
    mc_value *v = mc_val(c->g, value);
    mc_weight_format f;
    if (cJSON_IsString(w) && mc_weight_format_parse(w->valuestring, &f)) {
        if (v->dt != MC_DT_F32 || v->stored_narrow)
            return ld_fail(c, ld_path(c, "%s/weight_dtype", path),
                           "weight_dtype applies to float32 params; '%s' is %s", v->name,
                           mc_dtype_json_name(v->dt));
        const char *misfit = mc_weight_format_misfit(c->g, v, &f);
        if (misfit)
            return ld_fail(c, ld_path(c, "%s/weight_dtype", path), "param '%s' cannot be %s: %s",
                           v->name, w->valuestring, misfit);
        v->weight_dtype = f;
        v->has_weight_dtype = true;
        return true;
    }
    return ld_fail(c, ld_path(c, "%s/weight_dtype", path),
                   "weight_dtype must be \"f32\", \"f16\", \"bf16\", \"int8\" or "
                   "\"int4[:GROUP][:zp]\", found %s",
                   cJSON_IsString(w) ? mc_arena_printf(c->g->arena, "\"%s\"", w->valuestring)
                                     : ld_kind(w));
}

static bool load_initializers(ld_ctx *c, const cJSON *root) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "initializers");
    if (!arr) return true;
    if (!cJSON_IsArray(arr))
        return ld_fail(c, "/initializers", "\"initializers\" must be an array, found %s",
                       ld_kind(arr));
    int i = 0;
    for (const cJSON *in = arr->child; in; in = in->next, i++) {
        const char *path = ld_path(c, "/initializers/%d", i);
        int v = load_decl(c, in, path, "an initializer",
                          "name|dtype|shape|data|init|key|weight_dtype", MC_VK_PARAM, i);
        if (v < 0 || !ld_initializer_data(c, in, path, v) || !weight_dtype(c, in, path, v))
            return false;
    }
    return true;
}

static bool load_outputs(ld_ctx *c, const cJSON *root) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "outputs");
    int n = cJSON_GetArraySize(arr);
    if (n == 0) return ld_fail(c, "/outputs", "the model needs at least one output");
    c->g->outputs = mc_arena_alloc(c->g->arena, sizeof(int) * (size_t)n);
    int i = 0;
    for (const cJSON *o = arr->child; o; o = o->next, i++) {
        const char *path = ld_path(c, "/outputs/%d", i);
        if (!cJSON_IsString(o))
            return ld_fail(c, path, "an output must be a value name, found %s", ld_kind(o));
        int v = mc_graph_find_value(c->g, o->valuestring);
        if (v < 0)
            return ld_fail(c, path,
                           "output \"%s\" is not defined by any node, input or initializer",
                           o->valuestring);
        for (int k = 0; k < c->g->noutputs; k++)
            if (c->g->outputs[k] == v)
                return ld_fail(c, path, "output \"%s\" is listed twice", o->valuestring);
        c->g->outputs[c->g->noutputs++] = v;
        mc_val(c->g, v)->is_output = true;
    }
    return true;
}

/* "line 3, column 7: invalid JSON near '...'" from cJSON's error position. */
static bool syntax_error(ld_ctx *c, const char *json, size_t len) {
    const char *at = cJSON_GetErrorPtr();
    size_t off = at && at >= json && at <= json + len ? (size_t)(at - json) : len;
    int line = 1, col = 1;
    for (size_t i = 0; i < off; i++) {
        if (json[i] == '\n')
            line++, col = 1;
        else
            col++;
    }
    char near[20] = "";
    size_t k = 0;
    for (size_t i = off; i < len && k < 16 && json[i] != '\n'; i++)
        near[k++] = isprint((unsigned char)json[i]) ? json[i] : '?';
    near[k] = 0;
    if (off >= len || k == 0)
        return ld_fail(c, NULL, "line %d, column %d: invalid JSON: the text ends too early", line,
                       col);
    return ld_fail(c, NULL, "line %d, column %d: invalid JSON near '%s'", line, col, near);
}

static bool load_all(ld_ctx *c, const cJSON *root) {
    bool ok = load_header(c, root) && load_symbols(c, root) && load_inputs(c, root) &&
              load_initializers(c, root) &&
              ld_nodes(c, cJSON_GetObjectItemCaseSensitive(root, "nodes")) && load_outputs(c, root);
    if (ok) ld_legalize_narrow(c);
    return ok;
}

mc_graph *mc_load_model_from_memory(const char *json, size_t len, const char *file,
                                    const char *base_dir, const mc_load_opts *opts, mc_diag *d) {
    mc_graph *g = mc_graph_new("model");
    g->file = mc_arena_strdup(g->arena, file ? file : "model.json");
    g->training = opts && opts->training;
    ld_ctx c = {.g = g, .d = d, .base_dir = base_dir, .opts = opts};
    cJSON *root = cJSON_ParseWithLength(json, len);
    bool ok = root ? load_all(&c, root) : syntax_error(&c, json, len);
    cJSON_Delete(root);
    if (!ok) {
        mc_graph_free(g);
        return NULL;
    }
    return g;
}

static char *read_file(const char *path, size_t *out_len, mc_diag *d) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        mc_error(d, NULL, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 65536;
            char *nb = mc_realloc(buf, cap + 1);
            if (!nb) {
                mc_free(buf);
                fclose(f);
                mc_error(d, NULL, "cannot read %s: out of memory", path);
                return NULL;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0) break;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        mc_free(buf);
        mc_error(d, NULL, "cannot read %s: i/o error", path);
        return NULL;
    }
    buf[len] = 0;
    *out_len = len;
    return buf;
}

mc_graph *mc_load_model(const char *path, const mc_load_opts *opts, mc_diag *d) {
    size_t len;
    char *json = read_file(path, &len, d);
    if (!json) return NULL;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    mc_graph *g = mc_onnx_is_model(json, len)
                      ? mc_load_onnx(json, len, path, slash ? dir : NULL, opts, d)
                      : mc_load_model_from_memory(json, len, path, slash ? dir : NULL, opts, d);
    mc_free(json);
    return g;
}
