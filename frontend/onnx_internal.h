/* frontend/onnx_internal.h: shared by the ONNX reader's files (onnx.c, onnx_moe.c); not
 * used outside frontend/. */
#ifndef MC_ONNX_INTERNAL_H
#define MC_ONNX_INTERNAL_H

#include "load.h"
#include "onnx.pb-c.h"

enum { OPSET_MIN = 13, OPSET_MAX = 21, MAX_EXTERNAL_FILES = 64 };

typedef struct {
    const char *location;
    const unsigned char *data;
    size_t len;
} external;

typedef struct {
    mc_arena *arena; /* the parse and the tensor bytes: freed with the graph */
    mc_diag *d;
    const char *file;
    const mc_load_opts *opts;
    cJSON *symbols;       /* the symbols the inputs name, with their --max */
    mc_safetensors table; /* the initializers' bytes */
    int opset;            /* the default domain's */
    cJSON *inits;         /* the document's initializers, which versions of ops add to */
    int table_cap;        /* entries c->table.tensors has room for */
    const char *base_dir; /* the model's directory: external data lies there */
    external files[MAX_EXTERNAL_FILES];
    int nfiles;
} onnx_ctx;

/* proto2 leaves an absent string NULL; moec's names are never empty, so "" is absent. */
const char *onnx_str(const char *s);
/* Appends t to the initializers' table. */
void onnx_add_table_entry(onnx_ctx *c, const mc_st_tensor *t);
/* "node I ('NAME', op OP, domain 'D', opset V)", for messages. */
const char *onnx_node_what(onnx_ctx *c, const Onnx__NodeProto *n, size_t i);
/* names as a JSON array of strings. */
cJSON *onnx_name_list(char **names, size_t n);

/* onnx_moe.c: a com.microsoft.MoE node as the JSON of a moe.MoE node (its weights added
 * to the document's initializers and the table); NULL after an error. */
cJSON *mc_onnx_moe_node(onnx_ctx *c, const Onnx__NodeProto *n, size_t i);

#endif
