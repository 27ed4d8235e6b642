/* frontend/onnx.c: ONNX models (.onnx, protobuf) in, through protobuf-c on ONNX's own
 * onnx.proto (frontend/onnx/onnx.proto).
 *
 * A model is translated into the document moec's JSON format would hold for it (a cJSON
 * tree: inputs, outputs, initializers declared by name, dtype and shape, nodes with
 * their attributes) plus a table of the initializers' bytes, and the JSON loader reads
 * both: one loader checks every model, whatever its file format, and `moec import`
 * writes that same document and table (docs/format.md, "ONNX models"). What ONNX has and
 * moec's format cannot say (an op, domain or opset moec lacks, a dtype, an unnamed
 * dynamic dim, a symbol without a maximum) is an error here, naming the node or value. */
#include "onnx_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* proto2 leaves an absent string NULL; moec's names are never empty, so "" is absent. */
const char *onnx_str(const char *s) {
    return s ? s : "";
}

static void *pb_alloc(void *arena, size_t n) {
    return mc_arena_alloc(arena, n ? n : 1);
}

static void pb_free(void *arena, void *p) {
    (void)arena;
    (void)p; /* the arena frees everything at once */
}

/* Whether the bytes are an ONNX model rather than JSON text: a protobuf message starts
 * with a field's tag (ModelProto's ir_version: 0x08), never with text. */
bool mc_onnx_is_model(const void *buf, size_t len) {
    const unsigned char *b = buf;
    return len > 0 && b[0] < 0x20 && b[0] != '\t' && b[0] != '\n' && b[0] != '\r';
}

/* ---- dtypes and shapes ---- */

/* An ONNX TensorProto.DataType as moec's dtype (the codes Cast's "to" takes). */
static bool dtype_of(onnx_ctx *c, int32_t t, const char *what, mc_dtype *out) {
    if (mc_dtype_from_onnx(t, out)) return true;
    return mc_error(c->d, NULL,
                    "%s has ONNX data type %d; moec takes float (1), float16 (10), bfloat16 (16), "
                    "int32 (6), int64 (7) and bool (9)",
                    what, (int)t);
}

/* The largest value --max gives symbol `name`, or -1. */
static int64_t sym_max(const onnx_ctx *c, const char *name) {
    for (int i = 0; c->opts && i < c->opts->nsym_max; i++)
        if (strcmp(c->opts->sym_max[i].name, name) == 0) return c->opts->sym_max[i].max;
    return -1;
}

/* A dynamic dim: its symbol, declared with its --max on first use. */
static bool dim_symbol(onnx_ctx *c, const char *name, const char *what, int k, cJSON *shape) {
    int64_t max = sym_max(c, name);
    if (max < 1)
        return mc_error(c->d, NULL,
                        "%s: dim %d is the dynamic size '%s'; give its largest value with --max "
                        "%s=N",
                        what, k, name, name);
    if (!cJSON_GetObjectItemCaseSensitive(c->symbols, name)) {
        cJSON *s = cJSON_AddObjectToObject(c->symbols, name);
        cJSON_AddNumberToObject(s, "max", (double)max);
    }
    cJSON_AddItemToArray(shape, cJSON_CreateString(name));
    return true;
}

/* {"name", "dtype", "shape"} of a graph input or output. */
static cJSON *value_decl(onnx_ctx *c, const Onnx__ValueInfoProto *v) {
    const char *what = mc_arena_printf(c->arena, "graph input '%s'", onnx_str(v->name));
    const Onnx__TypeProto *t = v->type;
    if (!t || t->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !t->tensor_type->shape) {
        mc_error(c->d, NULL, "%s: moec needs a tensor type with a shape", what);
        return NULL;
    }
    mc_dtype dt;
    if (!dtype_of(c, t->tensor_type->elem_type, what, &dt)) return NULL;
    cJSON *decl = cJSON_CreateObject(), *shape = cJSON_CreateArray();
    cJSON_AddStringToObject(decl, "name", onnx_str(v->name));
    cJSON_AddStringToObject(decl, "dtype", mc_dtype_json_name(dt));
    cJSON_AddItemToObject(decl, "shape", shape);
    const Onnx__TensorShapeProto *s = t->tensor_type->shape;
    for (size_t k = 0; k < s->n_dim; k++) {
        const Onnx__TensorShapeProto__Dimension *dim = s->dim[k];
        bool ok = true;
        if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)dim->dim_value));
        else if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM)
            ok = dim_symbol(c, onnx_str(dim->dim_param), what, (int)k, shape);
        else
            ok = mc_error(c->d, NULL,
                          "%s: dim %d has neither a size nor a name; moec needs one of them", what,
                          (int)k);
        if (!ok) {
            cJSON_Delete(decl);
            return NULL;
        }
    }
    return decl;
}

/* ---- initializers: their bytes into the table ---- */

/* The value of external_data's `key`, or NULL. */
static const char *external_key(const Onnx__TensorProto *t, const char *key) {
    for (size_t k = 0; k < t->n_external_data; k++)
        if (strcmp(onnx_str(t->external_data[k]->key), key) == 0)
            return onnx_str(t->external_data[k]->value);
    return NULL;
}

/* A file of external data, mapped once for all the tensors in it. */
static const unsigned char *external_file(onnx_ctx *c, const char *location, size_t *len) {
    for (int i = 0; i < c->nfiles; i++)
        if (strcmp(c->files[i].location, location) == 0) {
            *len = c->files[i].len;
            return c->files[i].data;
        }
    const char *path =
        c->base_dir ? mc_arena_printf(c->arena, "%s/%s", c->base_dir, location) : location;
    const unsigned char *data = mc_map_file(path, "external data file", len, c->arena, c->d);
    if (data && c->nfiles < MAX_EXTERNAL_FILES)
        c->files[c->nfiles++] = (external){location, data, *len};
    return data;
}

/* *out = s as a decimal count; an absent s leaves *out as it is. */
static bool decimal(const char *s, unsigned long long *out) {
    if (!s) return true;
    char *end;
    *out = strtoull(s, &end, 10);
    return *s >= '0' && *s <= '9' && !*end;
}

/* An initializer kept in an external file (models over protobuf's 2 GiB): its bytes
 * where they lie in the mapped file, copied only when misaligned for its dtype. The
 * location must stay in the model's directory, as ONNX Runtime requires. */
static bool external_bytes(onnx_ctx *c, const Onnx__TensorProto *t, mc_st_tensor *out) {
    const char *location = external_key(t, "location"), *off = external_key(t, "offset");
    const char *len_s = external_key(t, "length"), *name = onnx_str(t->name);
    if (!location || !*location || location[0] == '/' || strstr(location, ".."))
        return mc_error(c->d, NULL,
                        "initializer '%s': external data needs a location inside the model's "
                        "directory, found '%s'",
                        name, location ? location : "none");
    unsigned long long offset = 0, length = out->nbytes;
    if (!decimal(off, &offset) || !decimal(len_s, &length))
        return mc_error(c->d, NULL,
                        "initializer '%s': external data's offset and length must be "
                        "decimal byte counts, found '%s' and '%s'",
                        name, off ? off : "", len_s ? len_s : "");
    size_t flen;
    const unsigned char *file = external_file(c, location, &flen);
    if (!file) return false;
    if (length != out->nbytes || offset > flen || flen - offset < out->nbytes)
        return mc_error(c->d, NULL,
                        "initializer '%s': %s holds %llu bytes at offset %llu of its %zu; the "
                        "tensor needs %zu",
                        name, location, length, offset, flen, out->nbytes);
    const unsigned char *at = file + offset;
    if (offset % mc_dtype_size(out->dt)) {
        unsigned char *copy = mc_arena_alloc(c->arena, out->nbytes ? out->nbytes : 1);
        memcpy(copy, at, out->nbytes);
        at = copy;
    }
    out->data = at;
    return true;
}

/* The bytes of t, from raw_data or from the typed field ONNX keeps its dtype in. */
static bool tensor_bytes(onnx_ctx *c, const Onnx__TensorProto *t, mc_st_tensor *out) {
    int64_t n = 1;
    for (size_t k = 0; k < t->n_dims; k++) {
        if (t->dims[k] < 0 || t->dims[k] > MC_MAX_DIM ||
            (t->dims[k] && n > MC_MAX_DIM / t->dims[k]))
            return mc_error(c->d, NULL, "initializer '%s' has dims past 2^40 elements or below 0",
                            onnx_str(t->name));
        n *= t->dims[k];
    }
    size_t elem = mc_dtype_size(out->dt), bytes = (size_t)n * elem;
    out->nbytes = bytes;
    if (t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
        return external_bytes(c, t, out);
    if (t->has_raw_data) {
        if (t->raw_data.len != bytes)
            return mc_error(c->d, NULL, "initializer '%s' holds %zu bytes of data, expected %zu",
                            onnx_str(t->name), t->raw_data.len, bytes);
        out->data = t->raw_data.data;
        return true;
    }
    size_t have = out->dt == MC_DT_F32   ? t->n_float_data
                  : out->dt == MC_DT_I64 ? t->n_int64_data
                                         : t->n_int32_data;
    if (have != (size_t)n)
        return mc_error(c->d, NULL, "initializer '%s' holds %zu values, expected %lld",
                        onnx_str(t->name), have, (long long)n);
    unsigned char *dst = mc_arena_alloc(c->arena, bytes ? bytes : 1); /* as many as it holds */
    for (int64_t i = 0; i < n; i++) { /* int32_data holds f16, bf16 and bool bits too */
        if (out->dt == MC_DT_F32)
            memcpy(dst + i * 4, &t->float_data[i], 4);
        else if (out->dt == MC_DT_I64)
            memcpy(dst + i * 8, &t->int64_data[i], 8);
        else if (out->dt == MC_DT_I32)
            memcpy(dst + i * 4, &t->int32_data[i], 4);
        else if (out->dt == MC_DT_BOOL)
            dst[i] = t->int32_data[i] != 0;
        else {
            uint16_t bits = (uint16_t)t->int32_data[i];
            memcpy(dst + i * 2, &bits, 2);
        }
    }
    out->data = dst;
    return true;
}

/* Appends t to the initializers' table, which grows by doubling in the arena. */
void onnx_add_table_entry(onnx_ctx *c, const mc_st_tensor *t) {
    if (c->table.ntensors == c->table_cap) {
        int cap = c->table_cap ? 2 * c->table_cap : 16;
        mc_st_tensor *grown = mc_arena_alloc(c->arena, sizeof *grown * (size_t)cap);
        if (c->table.ntensors)
            memcpy(grown, c->table.tensors, sizeof *grown * (size_t)c->table.ntensors);
        c->table.tensors = grown;
        c->table_cap = cap;
    }
    c->table.tensors[c->table.ntensors++] = *t;
}

/* The declaration and table entry of tensor t, named `name` (NULL: its own). */
static cJSON *initializer(onnx_ctx *c, const Onnx__TensorProto *t, const char *name,
                          mc_st_tensor *entry) {
    name = name ? name : onnx_str(t->name);
    const char *what = mc_arena_printf(c->arena, "initializer '%s'", name);
    mc_dtype dt;
    if (!dtype_of(c, t->data_type, what, &dt)) return NULL;
    if (t->n_dims > MC_MAX_RANK) {
        mc_error(c->d, NULL, "%s has %zu dims; moec takes at most %d", what, t->n_dims,
                 MC_MAX_RANK);
        return NULL;
    }
    *entry = (mc_st_tensor){.name = name, .dt = dt, .rank = (int)t->n_dims};
    cJSON *decl = cJSON_CreateObject(), *shape = cJSON_CreateArray();
    for (size_t k = 0; k < t->n_dims; k++) {
        entry->dims[k] = t->dims[k];
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->dims[k]));
    }
    cJSON_AddStringToObject(decl, "name", name);
    cJSON_AddStringToObject(decl, "dtype", mc_dtype_json_name(dt));
    cJSON_AddItemToObject(decl, "shape", shape);
    if (!tensor_bytes(c, t, entry)) {
        cJSON_Delete(decl);
        return NULL;
    }
    return decl;
}

/* ---- nodes ---- */

const char *onnx_node_what(onnx_ctx *c, const Onnx__NodeProto *n, size_t i) {
    return mc_arena_printf(c->arena, "node %zu ('%s', op %s, domain '%s', opset %d)", i,
                           onnx_str(n->name), onnx_str(n->op_type), onnx_str(n->domain), c->opset);
}

static cJSON *attr_value(onnx_ctx *c, const Onnx__AttributeProto *a, const char *what) {
    cJSON *arr;
    switch (a->type) {
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT: return cJSON_CreateNumber((double)a->i);
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT: return cJSON_CreateNumber(a->f);
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING:
        return cJSON_CreateString(
            mc_arena_printf(c->arena, "%.*s", (int)a->s.len, (const char *)a->s.data));
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS:
        arr = cJSON_CreateArray();
        for (size_t k = 0; k < a->n_ints; k++)
            cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)a->ints[k]));
        return arr;
    case ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS:
        arr = cJSON_CreateArray();
        for (size_t k = 0; k < a->n_floats; k++)
            cJSON_AddItemToArray(arr, cJSON_CreateNumber(a->floats[k]));
        return arr;
    default:
        mc_error(c->d, NULL,
                 "%s: attribute '%s' is of ONNX attribute type %d; moec takes int, float, "
                 "string, ints and floats",
                 what, onnx_str(a->name), (int)a->type);
        return NULL;
    }
}

cJSON *onnx_name_list(char **names, size_t n) {
    cJSON *arr = cJSON_CreateArray();
    for (size_t k = 0; k < n; k++)
        cJSON_AddItemToArray(arr, cJSON_CreateString(onnx_str(names[k])));
    return arr;
}

/* The standard ops moec has, for the message about one it lacks. */
static const char *standard_ops(onnx_ctx *c) {
    const char *s = "";
    for (int o = 0; o < MC_NUM_OPS; o++) {
        const char *name = mc_op_infos[o].name;
        if (!strchr(name, '.')) s = mc_arena_printf(c->arena, "%s%s%s", s, *s ? ", " : "", name);
    }
    return s;
}

/* ---- versions of ops: each opset's form into the one moec's IR takes ---- */

/* Before opset 18, ReduceMean and ReduceMax (ReduceSum since 13 takes an input) take
 * their axes as an attribute: moved into an int64 initializer given as input 1. */
static bool attr_axes_to_input(onnx_ctx *c, const Onnx__NodeProto *n, size_t i, cJSON *j) {
    bool old_form = c->opset < 18 &&
                    (strcmp(n->op_type, "ReduceMean") == 0 || strcmp(n->op_type, "ReduceMax") == 0);
    cJSON *attrs = cJSON_GetObjectItemCaseSensitive(j, "attrs");
    cJSON *axes = old_form && attrs ? cJSON_DetachItemFromObject(attrs, "axes") : NULL;
    if (!axes) return true;
    int count = cJSON_GetArraySize(axes);
    const char *name = mc_arena_printf(c->arena, "%s.axes.%zu", n->op_type, i);
    int64_t *v = mc_arena_alloc(c->arena, sizeof(int64_t) * (size_t)(count + 1));
    int k = 0;
    for (const cJSON *a = axes->child; a; a = a->next)
        v[k++] = (int64_t)a->valuedouble;
    cJSON_Delete(axes);
    cJSON *decl = cJSON_CreateObject(), *shape = cJSON_CreateArray();
    cJSON_AddStringToObject(decl, "name", name);
    cJSON_AddStringToObject(decl, "dtype", "int64");
    cJSON_AddItemToArray(shape, cJSON_CreateNumber(count));
    cJSON_AddItemToObject(decl, "shape", shape);
    cJSON_AddItemToArray(c->inits, decl);
    cJSON *ins = cJSON_GetObjectItemCaseSensitive(j, "inputs");
    cJSON_AddItemToArray(ins, cJSON_CreateString(name));
    mc_st_tensor t = {.name = name,
                      .dt = MC_DT_I64,
                      .rank = 1,
                      .dims = {count},
                      .data = v,
                      .nbytes = sizeof(int64_t) * (size_t)count};
    onnx_add_table_entry(c, &t);
    return true;
}

static cJSON *node(onnx_ctx *c, const Onnx__NodeProto *n, size_t i) {
    const char *what = onnx_node_what(c, n, i);
    bool standard = !n->domain || !*n->domain || strcmp(n->domain, "ai.onnx") == 0;
    mc_op op;
    if (n->domain && strcmp(n->domain, "com.microsoft") == 0 &&
        strcmp(onnx_str(n->op_type), "MoE") == 0)
        return mc_onnx_moe_node(c, n, i);
    if (!standard) {
        mc_error(c->d, NULL,
                 "%s: moec reads ops of the default ONNX domain, and com.microsoft's MoE", what);
        return NULL;
    }
    if (!n->op_type || strchr(n->op_type, '.') || !mc_op_from_name(n->op_type, &op)) {
        mc_error(c->d, NULL, "%s: moec has no such op; it has %s", what, standard_ops(c));
        return NULL;
    }
    cJSON *j = cJSON_CreateObject(), *attrs = cJSON_CreateObject();
    if (n->name && *n->name) cJSON_AddStringToObject(j, "name", n->name);
    cJSON_AddStringToObject(j, "op", n->op_type);
    cJSON_AddItemToObject(j, "inputs", onnx_name_list(n->input, n->n_input));
    cJSON_AddItemToObject(j, "outputs", onnx_name_list(n->output, n->n_output));
    if (n->n_attribute)
        cJSON_AddItemToObject(j, "attrs", attrs);
    else
        cJSON_Delete(attrs);
    for (size_t k = 0; k < n->n_attribute; k++) {
        cJSON *v = attr_value(c, n->attribute[k], what);
        if (!v) {
            cJSON_Delete(j);
            return NULL;
        }
        cJSON_AddItemToObject(attrs, onnx_str(n->attribute[k]->name), v);
    }
    if (!attr_axes_to_input(c, n, i, j)) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

/* ---- the model ---- */

/* The default domain's opset, which must be one moec reads. */
static bool check_opsets(onnx_ctx *c, const Onnx__ModelProto *m) {
    c->opset = -1;
    for (size_t k = 0; k < m->n_opset_import; k++) {
        const Onnx__OperatorSetIdProto *o = m->opset_import[k];
        if (!o->domain || !*o->domain || strcmp(o->domain, "ai.onnx") == 0)
            c->opset = (int)o->version;
    }
    if (c->opset < 0)
        return mc_error(c->d, NULL, "the model imports no opset of the default ONNX domain");
    if (c->opset < OPSET_MIN || c->opset > OPSET_MAX)
        return mc_error(c->d, NULL,
                        "the model uses opset %d of the default domain; moec reads "
                        "opsets %d to %d",
                        c->opset, OPSET_MIN, OPSET_MAX);
    return true;
}

/* The file's name without directory and extension, as a C identifier: the model's name,
 * which prefixes the generated API (ONNX graph names such as "torch_jit" say little). */
static const char *model_name(onnx_ctx *c) {
    const char *base = strrchr(c->file, '/');
    char *s = mc_arena_strdup(c->arena, base ? base + 1 : c->file);
    char *dot = strchr(s, '.');
    if (dot && dot != s) *dot = 0;
    for (char *p = s; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_') *p = '_';
    if (!*s || isdigit((unsigned char)*s) || strlen(s) > 60)
        s = mc_arena_printf(c->arena, "m_%.60s", s);
    return s;
}

static bool is_initializer(const Onnx__GraphProto *g, const char *name) {
    for (size_t k = 0; k < g->n_initializer; k++)
        if (strcmp(onnx_str(g->initializer[k]->name), name) == 0) return true;
    return false;
}

static bool add_values(onnx_ctx *c, const Onnx__GraphProto *g, cJSON *doc) {
    cJSON *ins = cJSON_AddArrayToObject(doc, "inputs"),
          *outs = cJSON_AddArrayToObject(doc, "outputs");
    for (size_t k = 0; k < g->n_input; k++) { /* before IR 4, initializers are inputs too */
        if (is_initializer(g, onnx_str(g->input[k]->name))) continue;
        cJSON *decl = value_decl(c, g->input[k]);
        if (!decl) return false;
        cJSON_AddItemToArray(ins, decl);
    }
    for (size_t k = 0; k < g->n_output; k++)
        cJSON_AddItemToArray(outs, cJSON_CreateString(onnx_str(g->output[k]->name)));
    c->inits = cJSON_AddArrayToObject(doc, "initializers");
    for (size_t k = 0; k < g->n_initializer; k++) {
        mc_st_tensor t;
        cJSON *decl = initializer(c, g->initializer[k], NULL, &t);
        if (!decl) return false;
        cJSON_AddItemToArray(c->inits, decl);
        onnx_add_table_entry(c, &t);
    }
    return true;
}

/* A Constant's value as an initializer named after its output: exports hold many. */
static bool constant(onnx_ctx *c, const Onnx__NodeProto *n, size_t i) {
    const char *what = onnx_node_what(c, n, i);
    if (n->n_output != 1 || n->n_attribute != 1)
        return mc_error(c->d, NULL, "%s: a Constant has one output and one value attribute", what);
    const Onnx__AttributeProto *a = n->attribute[0];
    const char *name = onnx_str(n->output[0]);
    Onnx__TensorProto t = ONNX__TENSOR_PROTO__INIT; /* the other forms, as a tensor */
    int64_t count[1];
    if (strcmp(onnx_str(a->name), "value") == 0 && a->t) {
        t = *a->t;
    } else if (strcmp(onnx_str(a->name), "value_float") == 0 ||
               strcmp(onnx_str(a->name), "value_floats") == 0) {
        bool one = a->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
        t.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
        t.n_float_data = one ? 1 : a->n_floats;
        t.float_data = one ? (float *)&a->f : a->floats;
    } else if (strcmp(onnx_str(a->name), "value_int") == 0 ||
               strcmp(onnx_str(a->name), "value_ints") == 0) {
        bool one = a->type == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
        t.data_type = ONNX__TENSOR_PROTO__DATA_TYPE__INT64;
        t.n_int64_data = one ? 1 : a->n_ints;
        t.int64_data = one ? (int64_t *)&a->i : a->ints;
    } else {
        return mc_error(c->d, NULL,
                        "%s: a Constant's '%s' is not read; moec reads value (a tensor), "
                        "value_float(s) and value_int(s)",
                        what, onnx_str(a->name));
    }
    bool list = strcmp(onnx_str(a->name), "value_floats") == 0 ||
                strcmp(onnx_str(a->name), "value_ints") == 0;
    if (list) { /* a 1-D tensor; the single forms are scalars */
        count[0] = (int64_t)(t.n_float_data + t.n_int64_data);
        t.n_dims = 1;
        t.dims = count;
    }
    mc_st_tensor entry;
    cJSON *decl = initializer(c, &t, name, &entry);
    if (!decl) return false;
    cJSON_AddItemToArray(c->inits, decl);
    onnx_add_table_entry(c, &entry);
    return true;
}

static bool is_constant(const Onnx__NodeProto *n) {
    bool standard = !n->domain || !*n->domain || strcmp(n->domain, "ai.onnx") == 0;
    return standard && strcmp(onnx_str(n->op_type), "Constant") == 0;
}

static bool add_nodes(onnx_ctx *c, const Onnx__GraphProto *g, cJSON *doc) {
    cJSON *nodes = cJSON_AddArrayToObject(doc, "nodes");
    for (size_t k = 0; k < g->n_node; k++) {
        if (is_constant(g->node[k])) {
            if (!constant(c, g->node[k], k)) return false;
            continue;
        }
        cJSON *n = node(c, g->node[k], k);
        if (!n) return false;
        cJSON_AddItemToArray(nodes, n);
    }
    return true;
}

/* The JSON document of the model; NULL after an error. */
static cJSON *translate(onnx_ctx *c, const Onnx__ModelProto *m) {
    if (!m->graph) {
        mc_error(c->d, NULL, "the model has no graph");
        return NULL;
    }
    if (!check_opsets(c, m)) return NULL;
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddNumberToObject(doc, "moec", 1);
    cJSON_AddStringToObject(doc, "name", model_name(c));
    c->symbols = cJSON_AddObjectToObject(doc, "symbols");
    if (!add_values(c, m->graph, doc) || !add_nodes(c, m->graph, doc)) {
        cJSON_Delete(doc);
        return NULL;
    }
    return doc;
}

static void free_arena(void *arena) {
    mc_arena_free(arena);
}

/* The model's JSON document (its bytes in c->table); NULL after an error. */
static cJSON *read_model(onnx_ctx *c, const void *buf, size_t len) {
    ProtobufCAllocator alloc = {pb_alloc, pb_free, c->arena};
    Onnx__ModelProto *m = onnx__model_proto__unpack(&alloc, len, buf);
    if (!m) {
        mc_error(c->d, NULL, "not a valid ONNX model: its protobuf encoding does not parse");
        return NULL;
    }
    c->table.path = c->file;
    return translate(c, m);
}

mc_graph *mc_load_onnx(const void *buf, size_t len, const char *file, const char *base_dir,
                       const mc_load_opts *opts, mc_diag *d) {
    onnx_ctx c = {.arena = mc_arena_new(),
                  .d = d,
                  .file = file ? file : "model.onnx",
                  .opts = opts,
                  .base_dir = base_dir};
    cJSON *doc = read_model(&c, buf, len);
    char *json = doc ? cJSON_PrintUnformatted(doc) : NULL;
    if (json && opts && opts->onnx_json) { /* moec import's file, which names its weights */
        cJSON_AddStringToObject(doc, "weights", opts->onnx_json_weights);
        *opts->onnx_json = cJSON_Print(doc);
    }
    cJSON_Delete(doc);
    mc_graph *g = NULL;
    if (json) {
        mc_load_opts o = opts ? *opts : (mc_load_opts){0};
        o.weights_table = &c.table;
        g = mc_load_model_from_memory(json, strlen(json), c.file, base_dir, &o, d);
        cJSON_free(json);
    }
    if (g) /* the params' bytes stay in c.arena */
        mc_arena_on_free(g->arena, free_arena, c.arena);
    else
        mc_arena_free(c.arena);
    return g;
}
