/* ir/optable.c: the tables generated from ops.def and attrs.def, and dtype facts. */
#include "ir.h"

#include <string.h>

const mc_op_info mc_op_infos[MC_NUM_OPS] = {
#define OP(id, name, min_in, max_in, min_out, max_out, flags)                                      \
    [MC_OP_##id] = {name, min_in, max_in, min_out, max_out, flags},
#include "ops.def"
#undef OP
};

bool mc_op_from_name(const char *name, mc_op *out) {
    for (int i = 0; i < MC_NUM_OPS; i++)
        if (strcmp(mc_op_infos[i].name, name) == 0) {
            *out = (mc_op)i;
            return true;
        }
    return false;
}

/* A row's defaults: only a DEF row's is read, as a literal of its kind. */
#define SCHEMA_DEFAULT_REQ(kind, d) 0, 0, NULL
#define SCHEMA_DEFAULT_OPT(kind, d) 0, 0, NULL
#define SCHEMA_DEFAULT_DEF(kind, d) SCHEMA_DEFAULT_##kind(d)
#define SCHEMA_DEFAULT_INT(d)       (d), 0, NULL
#define SCHEMA_DEFAULT_FLOAT(d)     0, (d), NULL
#define SCHEMA_DEFAULT_STRING(d)    0, 0, (d)
#define SCHEMA_DEFAULT_INTS(d)      0, 0, NULL
#define SCHEMA_DEFAULT_FLOATS(d)    0, 0, NULL
/* CHOICES(a, b, c) -> "a" "|" "b" "|" "c"; NULL for the kinds without choices. */
#define SCHEMA_CHOICES_STRING(c)         c
#define SCHEMA_CHOICES_INT(c)            NULL
#define SCHEMA_CHOICES_FLOAT(c)          NULL
#define SCHEMA_CHOICES_INTS(c)           NULL
#define SCHEMA_CHOICES_FLOATS(c)         NULL
#define SCHEMA_OR_CHOICE(unused, choice) "|" #choice

const mc_attr_schema mc_attr_schemas[] = {
#define ATTRS(op)
#define CHOICES(first, ...) #first MC_PP_MAP(SCHEMA_OR_CHOICE, ~, __VA_ARGS__)
#define ATTR(op, name, kind, presence, dflt, choices)                                              \
    {MC_OP_##op,                                                                                   \
     #name,                                                                                        \
     MC_AK_##kind,                                                                                 \
     MC_AP_##presence,                                                                             \
     SCHEMA_DEFAULT_##presence(kind, dflt),                                                        \
     SCHEMA_CHOICES_##kind(choices)},
#include "attrs.def"
#undef ATTRS
#undef CHOICES
#undef ATTR
};
const int mc_num_attr_schemas = (int)(sizeof mc_attr_schemas / sizeof mc_attr_schemas[0]);

const mc_attr_schema *mc_attr_schema_find(mc_op op, const char *name) {
    for (int i = 0; i < mc_num_attr_schemas; i++)
        if (mc_attr_schemas[i].op == op && strcmp(mc_attr_schemas[i].name, name) == 0)
            return &mc_attr_schemas[i];
    return NULL;
}

int mc_choice_index(const char *choices, const char *s) {
    size_t n = strlen(s);
    int i = 0;
    for (const char *p = choices; p; p = strchr(p, '|'), p = p ? p + 1 : p, i++)
        if (strncmp(p, s, n) == 0 && (p[n] == '|' || p[n] == 0)) return i;
    return -1;
}

int mc_attr_choice(const mc_node *n, const char *name) {
    const mc_attr_schema *s = mc_attr_schema_find(n->op, name);
    const char *v = mc_attr_str(n, name);
    if (!s || !s->choices)
        mc_die("%s has no attribute %s with choices", mc_op_infos[n->op].name, name);
    int i = mc_choice_index(s->choices, v);
    if (i < 0)
        mc_die("node '%s' attribute %s is '%s', not one of '%s'", n->name, name, v, s->choices);
    return i;
}

const char *mc_attr_kind_name(mc_attr_kind k) {
    switch (k) {
    case MC_AK_INT: return "int";
    case MC_AK_FLOAT: return "float";
    case MC_AK_STRING: return "string";
    case MC_AK_INTS: return "list of ints";
    case MC_AK_FLOATS: return "list of floats";
    }
    mc_die("bad attribute kind %d", (int)k);
}

typedef struct {
    const char *dump, *json;
    size_t size;
    int onnx;
} dtype_info;

static const dtype_info dtypes[MC_NUM_DTYPES] = {
    [MC_DT_F32] = {"f32", "float32", 4, 1},
    [MC_DT_F16] = {"f16", "float16", 2, 10},
    [MC_DT_BF16] = {"bf16", "bfloat16", 2, 16},
    [MC_DT_I32] = {"i32", "int32", 4, 6},
    [MC_DT_I64] = {"i64", "int64", 8, 7},
    [MC_DT_BOOL] = {"bool", "bool", 1, 9},
    /* quantized weights: a byte per value (int4: per two), never declared (ir/quant.c) */
    [MC_DT_Q8] = {"int8", "int8", 1, 3},
    [MC_DT_Q4] = {"int4", "int4", 1, 22},
};

const char *mc_dtype_name(mc_dtype t) {
    return dtypes[t].dump;
}
const char *mc_dtype_json_name(mc_dtype t) {
    return dtypes[t].json;
}
size_t mc_dtype_size(mc_dtype t) {
    return dtypes[t].size;
}
int mc_dtype_onnx_code(mc_dtype t) {
    return dtypes[t].onnx;
}

bool mc_dtype_is_float(mc_dtype t) {
    return t == MC_DT_F32 || t == MC_DT_F16 || t == MC_DT_BF16;
}

bool mc_dtype_from_json(const char *s, mc_dtype *out) {
    for (int i = 0; i < MC_NUM_DTYPES && !mc_dtype_is_quant((mc_dtype)i); i++)
        if (strcmp(dtypes[i].json, s) == 0) {
            *out = (mc_dtype)i;
            return true;
        }
    return false;
}

bool mc_dtype_from_onnx(int64_t code, mc_dtype *out) {
    for (int i = 0; i < MC_NUM_DTYPES && !mc_dtype_is_quant((mc_dtype)i); i++)
        if (dtypes[i].onnx == code) {
            *out = (mc_dtype)i;
            return true;
        }
    return false;
}
