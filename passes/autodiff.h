/* passes/autodiff.h: what the autodiff pass's two files share (private to passes/). */
#ifndef MC_AUTODIFF_H
#define MC_AUTODIFF_H

#include "passes.h"

typedef struct ad {
    mc_graph *g;
    mc_diag *d;
    const mc_node *fwd; /* the node being differentiated */
    int nfwd;           /* values of the forward graph: ids below this */
    int *grad;          /* per forward value: its gradient value, -1 while it has none */
    bool *needs;        /* per forward value: depends on a trained param */
    bool ok;            /* false once an error is reported */
} ad;

/* autodiff.c: building blocks. New nodes go after the forward graph, shape-inferred. */
mc_op ad_op_named(const char *name);
int ad_emit(ad *a, mc_op op, const int *in, int nin, int *out, int nout);
void ad_infer(ad *a, int id);
int ad_op1(ad *a, mc_op op, const int *in, int nin);
int ad_op2(ad *a, mc_op op, int x, int y);
void ad_copy_attrs(ad *a, int id);
/* The gradient op `name` (docs/autodiff.md) with the forward node's attributes. */
int ad_grad_op(ad *a, const char *name, const int *in, int nin, int *out, int nout);
int ad_const_scalar(ad *a, float v, mc_dtype dt); /* a [] constant of dtype dt */
int ad_const_ints(ad *a, const int64_t *v, int n);
bool ad_same_shape(ad *a, int x, int y);
int ad_sum_to(ad *a, int g, int like);
int ad_zeros_like(ad *a, int v);
void ad_add_grad(ad *a, int v, int gv);
int ad_gout(ad *a, int j);     /* gradient of forward output j (zeros if none reached it) */
int ad_in(const ad *a, int i); /* forward input i, -1 when omitted */
bool ad_fail(ad *a, const char *what);

/* autodiff_rules.c: the gradients of one forward node's inputs. */
void ad_backprop(ad *a);

#endif
