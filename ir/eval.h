/* ir/eval.h: helpers shared by the interpreter's kernel files (eval_*.c). */
#ifndef MC_EVAL_H
#define MC_EVAL_H

#include "ir.h"

#include <math.h>

/* ---- real arithmetic, one spelling for both builds ----
 * EV_C(0.5) is 0.5f in the float build and 0.5 in the f64 one (MC_REAL_DOUBLE); ev_exp
 * and the others call expf or exp, logf or log, and so on. The float build must compute
 * exactly what it always did (the native kernels are tested bit for bit against it), so
 * these are thin wrappers that change no function and no order of operations. */
#ifdef MC_REAL_DOUBLE
#define EV_C(x)     x
#define EV_LIBM(fn) fn
#else
#define EV_C(x)     x##f
#define EV_LIBM(fn) fn##f
#endif
static inline mc_real ev_exp(mc_real x) {
    return EV_LIBM(exp)(x);
}
static inline mc_real ev_log(mc_real x) {
    return EV_LIBM(log)(x);
}
static inline mc_real ev_sqrt(mc_real x) {
    return EV_LIBM(sqrt)(x);
}
static inline mc_real ev_tanh(mc_real x) {
    return EV_LIBM(tanh)(x);
}
static inline mc_real ev_erf(mc_real x) {
    return EV_LIBM(erf)(x);
}
static inline mc_real ev_pow(mc_real x, mc_real y) {
    return EV_LIBM(pow)(x, y);
}
static inline mc_real ev_fabs(mc_real x) {
    return EV_LIBM(fabs)(x);
}

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
static inline bool ev_gt(mc_real a, mc_real b) {
    if (a != a) return false;
    if (b != b) return true;
    return a > b;
}
/* Reads constant integer input i (shape operands) into out; returns the count. */
int ev_ints(const mc_tensor *t, int64_t *out, int max);
/* Outer/axis/inner sizes of a tensor split at `axis`. */
void ev_split(const mc_tensor *t, int axis, int64_t *outer, int64_t *n, int64_t *inner);

/* ---- routing (eval_route.c), shared with the composite moe.MoE kernel ---- */
/* The `score` choices: one list for TopKRoute, GWRoute and MoE (ir/attrs.def). */
typedef enum {
    EV_SOFTMAX = MC_A_MOE_TOPK_ROUTE_score_softmax,
    EV_SOFTMAX_SELECTED = MC_A_MOE_TOPK_ROUTE_score_softmax_selected,
    EV_SIGMOID = MC_A_MOE_TOPK_ROUTE_score_sigmoid
} ev_score;
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
bool ev_topk_route(const ev_topk *c, const mc_real *z, const mc_real *bias, int64_t T, int64_t E,
                   int64_t *expert, mc_real *weight, int64_t *choice);
/* Softmax of one row of n values (max shift, ascending sums). */
void ev_softmax_row(const mc_real *z, int64_t n, mc_real *p);
/* GW-MoE's uncertainty test of one token (ROUTING.md §3.10, before the mask and the
 * max_broadcast limit): p[E] = softmax(z[E]), true when its entropy (nats, or divided by
 * ln E per entropy_unit) reaches the threshold. n carries GWRoute's attributes. */
bool ev_gw_uncertain(const mc_node *n, const mc_real *z, int64_t E, mc_real *p);

/* Flat index -> per-dim index (C order), and a tensor's C-order strides (eval_tensor.c). */
void ev_unflatten(const int64_t *dims, int rank, int64_t flat, int64_t *idx);
void ev_strides(const mc_tensor *t, int64_t *st);

#endif
