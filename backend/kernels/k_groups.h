/* backend/kernels/k_groups.h: an input's elements grouped by the output element they
 * reduce into (Reduce*, SumTo, ReduceMaxGrad). The input's dims split into kept ones
 * (those of the output, in order) and reduced ones, size-1 dims dropped and neighbours
 * merged; reduced element t of a group is number t in ascending flat order. */
#ifndef MK_GROUPS_H
#define MK_GROUPS_H

#include "mk.h"

typedef struct mk_groups {
    int64_t nk, nr; /* kept and reduced dims */
    int64_t kd[MK_MAX_RANK], ks[MK_MAX_RANK], rd[MK_MAX_RANK], rs[MK_MAX_RANK];
    int64_t count; /* input elements per group */
} mk_groups;

/* C-order strides of t. */
static inline void mk_strides(const mk_tensor *t, int64_t *st) {
    int64_t s = 1;
    for (int64_t i = t->rank - 1; i >= 0; i--) {
        st[i] = s;
        s *= t->dims[i];
    }
}

/* red[i]: dim i of x is reduced. */
static inline void mk_groups_build(mk_groups *p, const mk_tensor *x, const bool *red) {
    int64_t st[MK_MAX_RANK];
    mk_strides(x, st);
    p->nk = p->nr = 0;
    p->count = 1;
    for (int64_t i = 0; i < x->rank; i++) {
        if (x->dims[i] == 1) continue;
        int64_t *nn = red[i] ? &p->nr : &p->nk, *d = red[i] ? p->rd : p->kd;
        int64_t *s = red[i] ? p->rs : p->ks;
        if (*nn > 0 && s[*nn - 1] == st[i] * x->dims[i]) { /* merge with the previous dim */
            d[*nn - 1] *= x->dims[i];
            s[*nn - 1] = st[i];
        } else {
            d[*nn] = x->dims[i];
            s[*nn] = st[i];
            (*nn)++;
        }
        if (red[i]) p->count *= x->dims[i];
    }
}

/* Offset of the first input element of group o. */
static inline int64_t mk_groups_base(const mk_groups *p, int64_t o) {
    int64_t base = 0;
    for (int64_t i = p->nk - 1; i >= 0; i--) {
        base += (o % p->kd[i]) * p->ks[i];
        o /= p->kd[i];
    }
    return base;
}

/* Offset of reduced element t from its group's base. */
static inline int64_t mk_groups_off(const mk_groups *p, int64_t t) {
    int64_t off = 0;
    for (int64_t i = p->nr - 1; i >= 0; i--) {
        off += (t % p->rd[i]) * p->rs[i];
        t /= p->rd[i];
    }
    return off;
}

#endif
