/* ir/eval_tensor.c: reference kernels of the shape-manipulation ops and reductions. */
#include "eval.h"

#include <math.h>
#include <string.h>

static void copy_elem(mc_tensor *dst, int64_t di, const mc_tensor *src, int64_t si) {
    if (dst->f)
        dst->f[di] = src->f[si];
    else
        dst->i[di] = src->i[si];
}

/* Flat index -> per-dim index, and back with arbitrary strides. */
void ev_unflatten(const int64_t *dims, int rank, int64_t flat, int64_t *idx) {
    for (int i = rank - 1; i >= 0; i--) {
        idx[i] = flat % dims[i];
        flat /= dims[i];
    }
}

void ev_strides(const mc_tensor *t, int64_t *st) {
    int64_t s = 1;
    for (int i = t->rank - 1; i >= 0; i--) {
        st[i] = s;
        s *= t->dims[i];
    }
}

bool mc_interp_RESHAPE(const mc_kernel_ctx *k) {
    for (int64_t e = 0; e < k->out[0].numel; e++)
        copy_elem(&k->out[0], e, k->in[0], e);
    return true;
}

bool mc_interp_TRANSPOSE(const mc_kernel_ctx *k) {
    const mc_tensor *x = k->in[0];
    mc_tensor *y = &k->out[0];
    const mc_attr *p = mc_attr_get(k->n, "perm");
    int64_t st[MC_MAX_RANK], idx[MC_MAX_RANK];
    ev_strides(x, st);
    for (int64_t e = 0; e < y->numel; e++) {
        ev_unflatten(y->dims, y->rank, e, idx);
        int64_t src = 0;
        for (int i = 0; i < y->rank; i++)
            src += idx[i] * st[p ? p->ints[i] : y->rank - 1 - i];
        copy_elem(y, e, x, src);
    }
    return true;
}

bool mc_interp_CONCAT(const mc_kernel_ctx *k) {
    mc_tensor *y = &k->out[0];
    int axis = ev_axis(mc_attr_int(k->n, "axis"), y->rank);
    int64_t outer, n, inner, at = 0;
    ev_split(y, axis, &outer, &n, &inner);
    for (int i = 0; i < k->n->nin; i++) {
        const mc_tensor *x = k->in[i];
        int64_t xn = x->dims[axis];
        for (int64_t o = 0; o < outer; o++)
            for (int64_t j = 0; j < xn * inner; j++)
                copy_elem(y, (o * n + at) * inner + j, x, o * xn * inner + j);
        at += xn;
    }
    return true;
}

bool mc_interp_SPLIT(const mc_kernel_ctx *k) {
    const mc_tensor *x = k->in[0];
    int axis = ev_axis(mc_attr_int(k->n, "axis"), x->rank);
    int64_t outer, n, inner, at = 0;
    ev_split(x, axis, &outer, &n, &inner);
    for (int j = 0; j < k->n->nout; j++) {
        mc_tensor *y = &k->out[j];
        int64_t yn = y->dims[axis];
        for (int64_t o = 0; o < outer; o++)
            for (int64_t e = 0; e < yn * inner; e++)
                copy_elem(y, o * yn * inner + e, x, (o * n + at) * inner + e);
        at += yn;
    }
    return true;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

bool mc_interp_SLICE(const mc_kernel_ctx *k) {
    const mc_tensor *x = k->in[0];
    mc_tensor *y = &k->out[0];
    int64_t start[MC_MAX_RANK] = {0}, step[MC_MAX_RANK], st[MC_MAX_RANK], idx[MC_MAX_RANK];
    int64_t s[MC_MAX_RANK], e[MC_MAX_RANK], ax[MC_MAX_RANK], sp[MC_MAX_RANK];
    for (int i = 0; i < MC_MAX_RANK; i++)
        step[i] = 1;
    int n = ev_ints(k->in[1], s, MC_MAX_RANK);
    ev_ints(k->in[2], e, MC_MAX_RANK);
    if (k->n->nin > 3 && k->in[3]) ev_ints(k->in[3], ax, MC_MAX_RANK);
    if (k->n->nin > 4 && k->in[4]) ev_ints(k->in[4], sp, MC_MAX_RANK);
    for (int i = 0; i < n; i++) {
        int a = ev_axis(k->n->nin > 3 && k->in[3] ? ax[i] : i, x->rank);
        int64_t dim = x->dims[a], p = k->n->nin > 4 && k->in[4] ? sp[i] : 1,
                b = s[i] < 0 ? s[i] + dim : s[i];
        start[a] = p > 0 ? clamp64(b, 0, dim) : clamp64(b, -1, dim - 1);
        step[a] = p;
    }
    ev_strides(x, st);
    for (int64_t f = 0; f < y->numel; f++) {
        ev_unflatten(y->dims, y->rank, f, idx);
        int64_t src = 0;
        for (int i = 0; i < y->rank; i++)
            src += (start[i] + idx[i] * step[i]) * st[i];
        copy_elem(y, f, x, src);
    }
    return true;
}

bool mc_interp_GATHER(const mc_kernel_ctx *k) {
    const mc_tensor *x = k->in[0], *ind = k->in[1];
    mc_tensor *y = &k->out[0];
    int axis = ev_axis(mc_attr_int(k->n, "axis"), x->rank);
    int64_t outer, n, inner;
    ev_split(x, axis, &outer, &n, &inner);
    for (int64_t q = 0; q < ind->numel; q++) {
        int64_t j = ind->i[q] < 0 ? ind->i[q] + n : ind->i[q];
        if (j < 0 || j >= n)
            return ev_fail(k, "index %lld at position %lld is outside [-%lld, %lld)",
                           (long long)ind->i[q], (long long)q, (long long)n, (long long)n);
    }
    for (int64_t o = 0; o < outer; o++)
        for (int64_t q = 0; q < ind->numel; q++) {
            int64_t j = ind->i[q] < 0 ? ind->i[q] + n : ind->i[q];
            for (int64_t i = 0; i < inner; i++)
                copy_elem(y, (o * ind->numel + q) * inner + i, x, (o * n + j) * inner + i);
        }
    return true;
}

typedef enum { R_SUM, R_MEAN, R_MAX } redop;

/* Each output element accumulates its inputs in ascending flat order. */
static bool reduce(const mc_kernel_ctx *k, redop op) {
    const mc_tensor *x = k->in[0];
    mc_tensor *y = &k->out[0];
    bool red[MC_MAX_RANK] = {0};
    int64_t axes[MC_MAX_RANK];
    int n = k->n->nin > 1 && k->in[1] ? ev_ints(k->in[1], axes, MC_MAX_RANK) : 0;
    if (n == 0 && !mc_attr_int(k->n, "noop_with_empty_axes"))
        for (int i = 0; i < x->rank; i++)
            red[i] = true;
    for (int i = 0; i < n; i++)
        red[ev_axis(axes[i], x->rank)] = true;
    int64_t ost[MC_MAX_RANK], idx[MC_MAX_RANK], s = 1, count = x->numel / (y->numel ? y->numel : 1);
    for (int i = x->rank - 1; i >= 0; i--) {
        ost[i] = red[i] ? 0 : s;
        s *= red[i] ? 1 : x->dims[i];
    }
    bool *seen = mc_alloc((size_t)y->numel + 1);
    if (!seen) return ev_fail(k, "out of memory");
    memset(seen, 0, (size_t)y->numel + 1);
    for (int64_t e = 0; e < x->numel; e++) {
        ev_unflatten(x->dims, x->rank, e, idx);
        int64_t o = 0;
        for (int i = 0; i < x->rank; i++)
            o += idx[i] * ost[i];
        if (y->f) {
            mc_real v = x->f[e];
            y->f[o] = !seen[o] ? v : op == R_MAX ? (ev_gt(v, y->f[o]) ? v : y->f[o]) : y->f[o] + v;
        } else {
            int64_t v = x->i[e];
            y->i[o] = !seen[o] ? v : op == R_MAX ? (v > y->i[o] ? v : y->i[o]) : y->i[o] + v;
        }
        seen[o] = true;
    }
    mc_free(seen);
    if (op == R_MEAN)
        for (int64_t o = 0; o < y->numel; o++)
            y->f[o] /= (mc_real)count;
    return true;
}
bool mc_interp_REDUCE_SUM(const mc_kernel_ctx *k) {
    return reduce(k, R_SUM);
}
bool mc_interp_REDUCE_MEAN(const mc_kernel_ctx *k) {
    return reduce(k, R_MEAN);
}
bool mc_interp_REDUCE_MAX(const mc_kernel_ctx *k) {
    return reduce(k, R_MAX);
}
