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
    const mc_train_opts *train;    /* never NULL */
    mc_weight_format weight_dtype; /* --weight-dtype; dt MC_DT_F32: weights stay as they are */
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
bool mc_pass_fuse_gate_dispatch(mc_graph *g, mc_pass_ctx *cx, bool *changed);
bool mc_pass_fuse_expert_ffn(mc_graph *g, mc_pass_ctx *cx, bool *changed);
bool mc_pass_fuse_elementwise(mc_graph *g, mc_pass_ctx *cx, bool *changed);
bool mc_pass_quantize_weights(mc_graph *g, mc_pass_ctx *cx, bool *changed);
bool mc_pass_plan_memory(mc_graph *g, mc_pass_ctx *cx, bool *changed);

/* Dispatch `node` stops copying its rows when every reader can read them in place
 * (passes/rows_in_place.c); sets *changed when it rewrote. */
bool mc_rows_in_place(mc_graph *g, int node, bool *changed, mc_diag *d);

/* Properties of a graph that passes need, give and break. The manager tracks them when
 * it builds a pipeline: a pass whose needs some earlier pass broke (or none gave) is an
 * error before anything runs. A pass keeps every property it does not break. */
enum {
    MC_PROP_SHAPES = 1,   /* every value has its dtype and shape */
    MC_PROP_EXPANDED = 2, /* no composite op (moe.MoE) is left */
    MC_PROP_UNFUSED = 4,  /* no fused op yet: autodiff has a rule for every op */
    MC_PROP_GRADS = 8,    /* autodiff ran: the loss's gradients are in the graph */
    MC_PROP_PLAN = 16     /* g->plan matches the graph */
};
#define MC_NUM_PROPS 5
const char *mc_prop_name(unsigned prop); /* one bit: "shapes", ... */

typedef struct mc_pass_info {
    const char *name; /* what --passes= and --after= accept */
    mc_pass_fn fn;
    unsigned needs, gives, breaks; /* MC_PROP_* */
    bool training_only;            /* does nothing in inference: needs checked in training */
    const char *why;               /* one line: what it does and why it sits where it is */
} mc_pass_info;
const mc_pass_info *mc_pass_find(const char *name);
const mc_pass_info *mc_pass_table(int *out_n); /* every pass, in default-pipeline order */
/* The default pipeline as --passes would spell it; `{a,b}` is a group that runs again
 * and again until none of its passes changes the graph (at most MC_MAX_ROUNDS). */
extern const char mc_default_pipeline[];
#define MC_MAX_ROUNDS 8

typedef enum { MC_DUMP_TEXT, MC_DUMP_DOT } mc_dump_format;
typedef struct mc_pipeline_opts {
    const char *passes; /* comma-separated names, {groups}; NULL: the default pipeline */
    const char *after;  /* dump after this pass, "all", or NULL */
    bool verify_each;
    const char *dump_dir; /* write NN-pass.txt (or .dot) per pass, or NULL */
    mc_dump_format format;
    FILE *dump_out; /* where --after dumps go (stdout for `moec dump`) */
    bool training;
    mc_train_opts train;
    mc_weight_format weight_dtype; /* --weight-dtype (quantize-weights); dt MC_DT_F32: none */
    /* Told the name of each pass as it starts (for `moec -v`); NULL: not told. */
    void (*on_pass)(void *user, const char *pass);
    void *on_pass_user;
} mc_pipeline_opts;
/* Runs the pipeline; unknown pass names are an error listing the valid ones. */
bool mc_run_pipeline(mc_graph *g, const mc_pipeline_opts *o, mc_diag *d);

#endif
