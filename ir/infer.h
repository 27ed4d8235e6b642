/* ir/infer.h: helpers shared by the shape-inference files (infer*.c) and the
 * verifier. Not used outside ir/. Every helper reports its own diagnostic. */
#ifndef MC_INFER_H
#define MC_INFER_H

#include "ir.h"

const mc_value *inf_in(mc_infer_ctx *cx, int i); /* NULL if omitted */
void inf_set(mc_infer_ctx *cx, int out, mc_dtype dt, const mc_shape *s);
const char *inf_shape(mc_infer_ctx *cx, const mc_shape *s); /* "[T,768]" */
const char *inf_sub(mc_infer_ctx *cx, int input);           /* "inputs/1" */
bool inf_fail(mc_infer_ctx *cx, const char *sub, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool inf_float(mc_infer_ctx *cx, int i); /* input i has a float dtype */
bool inf_dtype(mc_infer_ctx *cx, int i, mc_dtype want);
bool inf_int_index(mc_infer_ctx *cx, int i); /* i32 or i64 */
bool inf_rank(mc_infer_ctx *cx, int i, int rank);
bool inf_same_dtype(mc_infer_ctx *cx, int a, int b);
/* A product's weight at w against its activations at a: the same dtype, or f16/bf16
 * storage next to f32 activations (widened exactly, summed in f32). */
bool inf_weight(mc_infer_ctx *cx, int a, int w);
/* numpy broadcasting of two shapes; a symbolic dim only matches itself or 1. */
bool inf_broadcast(mc_infer_ctx *cx, const mc_shape *a, const mc_shape *b, mc_shape *out,
                   const char *sub);
/* Axis attribute in [-rank, rank) normalised to [0, rank). */
bool inf_axis(mc_infer_ctx *cx, const char *attr, int64_t axis, int rank, int *out);
/* Input i must be a constant integer tensor with data: its elements into out. */
bool inf_const_ints(mc_infer_ctx *cx, int i, const char *what, int64_t *out, int *n, int max);
bool inf_dim_eq(mc_infer_ctx *cx, const mc_shape *a, int da, const mc_shape *b, int db,
                const char *sub, const char *what);
bool inf_positive_attr(mc_infer_ctx *cx, const char *attr, int64_t lo, int64_t hi, int64_t *out);

/* X at input xi and its Scale (and B) in the nparams inputs after it, as
 * LayerNormalization and RMSNormalization take them; tail: the normalised dims.
 * (infer_std.c) */
bool inf_norm_inputs(mc_infer_ctx *cx, int xi, int nparams, mc_shape *tail);

/* MoE contracts shared by the moe.* ops and their gradients (infer_moe.c). */
bool inf_route_logits(mc_infer_ctx *cx, int i, int64_t *E);       /* f32 [T,E], E constant */
bool inf_mask(mc_infer_ctx *cx, int i, const mc_shape *ref);      /* optional bool [T] */
bool inf_topk_attrs(mc_infer_ctx *cx, int64_t E, int bias_input); /* TopKRoute's attrs */
bool inf_offsets(mc_infer_ctx *cx, int i, int64_t *E);            /* i32 [E+1] */
/* GWRoute's weight row width (and its gradient's): E when its mode is "train", else k. */
int64_t inf_gw_width(const mc_infer_ctx *cx, int64_t E);
/* W[E,D,F] at `weights` against rows[N,D] at `rows`: out is [N,F]. */
bool inf_expert_weights(mc_infer_ctx *cx, int rows, int weights, int64_t E, mc_shape *out);

#endif
