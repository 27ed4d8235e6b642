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

const mc_attr_schema mc_attr_schemas[] = {
#define ATTR(op, name, kind, presence, idef, fdef, sdef, choices)                                  \
    {MC_OP_##op, name, MC_AK_##kind, MC_AP_##presence, idef, fdef, sdef, choices},
#include "attrs.def"
#undef ATTR
};
const int mc_num_attr_schemas = (int)(sizeof mc_attr_schemas / sizeof mc_attr_schemas[0]);

const mc_attr_schema *mc_attr_schema_find(mc_op op, const char *name) {
    for (int i = 0; i < mc_num_attr_schemas; i++)
        if (mc_attr_schemas[i].op == op && strcmp(mc_attr_schemas[i].name, name) == 0)
            return &mc_attr_schemas[i];
    return NULL;
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
    [MC_DT_F32] = {"f32", "float32", 4, 1},     [MC_DT_F16] = {"f16", "float16", 2, 10},
    [MC_DT_BF16] = {"bf16", "bfloat16", 2, 16}, [MC_DT_I32] = {"i32", "int32", 4, 6},
    [MC_DT_I64] = {"i64", "int64", 8, 7},       [MC_DT_BOOL] = {"bool", "bool", 1, 9},
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
    for (int i = 0; i < MC_NUM_DTYPES; i++)
        if (strcmp(dtypes[i].json, s) == 0) {
            *out = (mc_dtype)i;
            return true;
        }
    return false;
}

bool mc_dtype_from_onnx(int64_t code, mc_dtype *out) {
    for (int i = 0; i < MC_NUM_DTYPES; i++)
        if (dtypes[i].onnx == code) {
            *out = (mc_dtype)i;
            return true;
        }
    return false;
}
