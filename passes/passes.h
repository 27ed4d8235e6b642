/* passes/passes.h: graph-to-graph rewrites and the pass manager. One pass per file,
 * one exported function each; manager.c lists them in order with why each runs. */
#ifndef MC_PASSES_H
#define MC_PASSES_H

#include "ir.h"
#include <stdio.h>

/* Training settings (--train-params, --optimizer, --lr, ...; docs/autodiff.md). */
typedef struct mc_train_opts {
    const char *params;    /* comma-separated names of the params to train; NULL: all */
    const char *optimizer; /* "adamw" (default) or "sgd" */
    double lr, momentum, weight_decay, beta1, beta2, eps; /* < 0: the op's default */
} mc_train_opts;

typedef struct mc_pass_ctx {
    mc_diag *d;
    bool training;
    const mc_train_opts *train; /* never NULL */
} mc_pass_ctx;

/* Each returns false on error (with a diagnostic); *changed says whether it rewrote. */
typedef bool (*mc_pass_fn)(mc_graph *g, mc_pass_ctx *cx, bool *changed);

bool mc_pass_infer_shapes(mc_graph *g, mc_pass_ctx *cx, bool *changed);
bool mc_pass_verify(mc_graph *g, mc_pass_ctx *cx, bool *changed);
bool mc_pass_expand_moe(mc_graph *g, mc_pass_ctx *cx, bool *changed);
bool mc_pass_gw_specialize(mc_graph *g, mc_pass_ctx *cx, bool *changed);
bool mc_pass_canonicalize(mc_graph *g, mc_pass_ctx *cx, bool *changed);
bool mc_pass_autodiff(mc_graph *g, mc_pass_ctx *cx, bool *changed);
bool mc_pass_optimizer(mc_graph *g, mc_pass_ctx *cx, bool *changed);
bool mc_pass_fold_constants(mc_graph *g, mc_pass_ctx *cx, bool *changed);
bool mc_pass_dce(mc_graph *g, mc_pass_ctx *cx, bool *changed);

typedef struct mc_pass_info {
    const char *name; /* what --passes= and --after= accept */
    mc_pass_fn fn;
    const char *why;  /* one line: what it needs, keeps, breaks */
} mc_pass_info;
const mc_pass_info *mc_pass_find(const char *name);
const mc_pass_info *mc_pass_list(int *out_n); /* the default pipeline, in order */

typedef enum { MC_DUMP_TEXT, MC_DUMP_DOT } mc_dump_format;
typedef struct mc_pipeline_opts {
    const char *passes;   /* comma-separated names; NULL: the default pipeline */
    const char *after;    /* dump after this pass, "all", or NULL */
    bool verify_each;
    const char *dump_dir; /* write NN-pass.txt (or .dot) per pass, or NULL */
    mc_dump_format format;
    FILE *dump_out;       /* where --after dumps go (stdout for `moec dump`) */
    bool training;
    mc_train_opts train;
} mc_pipeline_opts;
/* Runs the pipeline; unknown pass names are an error listing the valid ones. */
bool mc_run_pipeline(mc_graph *g, const mc_pipeline_opts *o, mc_diag *d);

#endif
