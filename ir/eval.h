/* ir/eval.h: helpers shared by the interpreter's kernel files (eval_*.c). */
#ifndef MC_EVAL_H
#define MC_EVAL_H

#include "ir.h"

/* Walks the elements of an output shape and yields, for each, the flat offsets of
 * up to three inputs under numpy broadcasting. */
typedef struct ev_bcast {
    int rank, nin;
    int64_t dims[MC_MAX_RANK];
    int64_t strides[3][MC_MAX_RANK]; /* 0 on broadcast dims */
} ev_bcast;
void ev_bcast_init(ev_bcast *b, const mc_tensor *out, const mc_tensor *const *ins, int nin);
/* offsets of element `flat` of the output */
void ev_bcast_offsets(const ev_bcast *b, int64_t flat, int64_t *off);

bool ev_fail(const mc_kernel_ctx *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int ev_axis(int64_t axis, int rank); /* normalised; shape inference checked the range */
/* NaN is smaller than every number (ROUTING.md §1.3): a > b in that order. */
static inline bool ev_gt(float a, float b) {
    if (a != a) return false;
    if (b != b) return true;
    return a > b;
}
/* Reads constant integer input i (shape operands) into out; returns the count. */
int ev_ints(const mc_tensor *t, int64_t *out, int max);
/* Outer/axis/inner sizes of a tensor split at `axis`. */
void ev_split(const mc_tensor *t, int axis, int64_t *outer, int64_t *n, int64_t *inner);

#endif

/* ---- routing (eval_route.c), shared with the composite moe.MoE kernel ---- */
typedef enum { EV_SOFTMAX, EV_SOFTMAX_SELECTED, EV_SIGMOID } ev_score;
typedef struct ev_topk {
    int64_t k, capacity, groups, topk_groups;
    double scale;
    ev_score score;
    bool normalize, priority;
} ev_topk;
/* Reads the TopKRoute attributes of n (`normalize_attr` names the normalise flag). */
void ev_topk_config(const mc_node *n, const char *normalize_attr, ev_topk *out);
/* Token-choice top-k routing of z[T,E] (bias[E] or NULL) into expert[T,k] and
 * weight[T,k] (-1 / 0 where capacity drops a choice); choice[T,k] (or NULL) gets the
 * pre-capacity choices. False only when scratch memory cannot be had. */
bool ev_topk_route(const ev_topk *c, const float *z, const float *bias, int64_t T, int64_t E,
                   int64_t *expert, float *weight, int64_t *choice);
/* Softmax of one row of n floats (max shift, ascending sums). */
void ev_softmax_row(const float *z, int64_t n, float *p);
