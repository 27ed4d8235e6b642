/* frontend/load.h: shared by the JSON loader's files (load.c, load_nodes.c,
 * load_data.c); not used outside frontend/. */
#ifndef MC_LOAD_H
#define MC_LOAD_H

#include "frontend.h"

#include <cjson/cJSON.h>

typedef struct ld_ctx {
    mc_graph *g;
    mc_diag *d;
    const char *base_dir; /* resolves a relative "weights" path */
    const mc_load_opts *opts;
    mc_safetensors *weights;  /* opened on first use */
    mc_safetensors *override; /* opts->weights_path, opened on first use */
    const char *weights_file; /* the model's "weights", resolved */
} ld_ctx;

bool ld_fail(ld_ctx *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *ld_path(ld_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
const char *ld_kind(const cJSON *j); /* "a string", "an array", ... for messages */
bool ld_check_keys(ld_ctx *c, const cJSON *o, const char *path, const char *allowed);
bool ld_int(ld_ctx *c, const cJSON *j, const char *path, const char *what, int64_t *out);
bool ld_shape(ld_ctx *c, const cJSON *j, const char *path, bool allow_syms, mc_shape *out);

/* load_nodes.c: nodes, their attributes, and the topological order. */
bool ld_nodes(ld_ctx *c, const cJSON *nodes);
/* load_data.c: an initializer's bytes from inline data, an init recipe or a file. */
bool ld_initializer_data(ld_ctx *c, const cJSON *init, const char *path, int value);
/* After the nodes: f16/bf16 file tensors of params declared f32 stay as stored where
 * only products read them as weights, and are widened to f32 elsewhere. */
void ld_legalize_narrow(ld_ctx *c);

#endif
