/* ir/eval_grad_std.c: the interpreter for the gradients of standard ops (docs/autodiff.md).
 *
 * Plain loops, gradients derived by hand from the forward kernels of eval_std.c and
 * eval_tensor.c: the same formulas (Gelu with erf, GeluTanh with the tanh approximation,
 * the norms' mean, variance and epsilon), the same tie rules (TopK keeps the lower index
 * first, NaN is the smallest value), and sums in mc_real in ascending index order,
 * starting from zero. tests/unit/test_grad_std.c checks every op against central finite
 * differences of its forward op in the f64 build.
 */
#include "eval.h"

#include <string.h>

/* ---- moe.UnaryGrad: gx = gy * f'(x) ---- */

/* The `op` attribute: the index of its choice (ir/attrs.h). */
typedef enum MC_A_MOE_UNARY_GRAD_op_choices gop;

static gop gop_of(const mc_node *n) {
    return (gop)mc_attr_choice(n, "op");
}

static mc_real sigmoid(mc_real x) {
    return EV_C(1.0) / (EV_C(1.0) + ev_exp(-x));
}

/* f'(x) of the forward formulas in eval_std.c. */
static mc_real dunary(gop op, mc_real x) {
    switch (op) {
    case MC_A_MOE_UNARY_GRAD_op_Relu: return x > 0 ? EV_C(1.0) : EV_C(0.0);
    case MC_A_MOE_UNARY_GRAD_op_Gelu: { /* Phi(x) + x phi(x) */
        mc_real cdf = EV_C(0.5) * (EV_C(1.0) + ev_erf(x * EV_C(0.70710678118654752)));
        return cdf + x * EV_C(0.39894228040143268) * ev_exp(EV_C(-0.5) * x * x);
    }
    case MC_A_MOE_UNARY_GRAD_op_GeluTanh: { /* y = x/2 (1 + tanh u), u = c (x + a x^3) */
        mc_real c = EV_C(0.7978845608028654), a = EV_C(0.044715);
        mc_real t = ev_tanh(c * (x + a * x * x * x));
        return EV_C(0.5) * (EV_C(1.0) + t) +
               EV_C(0.5) * x * (EV_C(1.0) - t * t) * c * (EV_C(1.0) + EV_C(3.0) * a * x * x);
    }
    case MC_A_MOE_UNARY_GRAD_op_Sigmoid: {
        mc_real s = sigmoid(x);
        return s * (EV_C(1.0) - s);
    }
    case MC_A_MOE_UNARY_GRAD_op_Tanh: {
        mc_real t = ev_tanh(x);
        return EV_C(1.0) - t * t;
    }
    case MC_A_MOE_UNARY_GRAD_op_Silu: { /* (x s)' = s (1 + x (1 - s)) */
        mc_real s = sigmoid(x);
        return s * (EV_C(1.0) + x * (EV_C(1.0) - s));
    }
    case MC_A_MOE_UNARY_GRAD_op_Exp: return ev_exp(x);
    case MC_A_MOE_UNARY_GRAD_op_Log: return EV_C(1.0) / x;
    case MC_A_MOE_UNARY_GRAD_op_Sqrt: return EV_C(0.5) / ev_sqrt(x);
    }
    return 0;
}

bool mc_interp_MOE_UNARY_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *gy = k->in[0], *x = k->in[1];
    mc_tensor *gx = &k->out[0];
    gop op = gop_of(k->n);
    for (int64_t e = 0; e < gx->numel; e++)
        gx->f[e] = op == MC_A_MOE_UNARY_GRAD_op_Relu ? (x->f[e] > 0 ? gy->f[e] : EV_C(0.0))
                                                     : gy->f[e] * dunary(op, x->f[e]);
    return true;
}

/* ---- moe.SumTo and moe.BroadcastTo: adjoints of each other ---- */

/* Each output element sums the elements of g that broadcast from it, in ascending flat
 * order of g. */
bool mc_interp_MOE_SUM_TO(const mc_kernel_ctx *k) {
    const mc_tensor *g = k->in[0];
    mc_tensor *y = &k->out[0];
    const mc_tensor *yt = y;
    ev_bcast bc;
    ev_bcast_init(&bc, g, &yt, 1);
    for (int64_t e = 0; e < g->numel; e++) {
        int64_t off;
        ev_bcast_offsets(&bc, e, &off);
        y->f[off] += g->f[e];
    }
    return true;
}

/* g viewed with like's rank: dims of 1 inserted at `axes`. */
bool mc_interp_MOE_BROADCAST_TO(const mc_kernel_ctx *k) {
    const mc_tensor *g = k->in[0];
    mc_tensor *y = &k->out[0];
    const mc_attr *ax = mc_attr_get(k->n, "axes");
    mc_tensor view = *g;
    if (ax && ax->n > 0) {
        bool at[MC_MAX_RANK] = {0};
        for (int i = 0; i < ax->n; i++)
            at[ev_axis(ax->ints[i], y->rank)] = true;
        view.rank = y->rank;
        for (int i = 0, j = 0; i < y->rank; i++)
            view.dims[i] = at[i] ? 1 : g->dims[j++];
    }
    const mc_tensor *vt = &view;
    ev_bcast bc;
    ev_bcast_init(&bc, y, &vt, 1);
    for (int64_t e = 0; e < y->numel; e++) {
        int64_t off;
        ev_bcast_offsets(&bc, e, &off);
        y->f[e] = g->f[off];
    }
    return true;
}

/* ---- moe.SoftmaxGrad ----
 * Softmax: gx = y (gy - sum_j gy_j y_j). LogSoftmax: gx = gy - e^y sum_j gy_j. */
bool mc_interp_MOE_SOFTMAX_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *gy = k->in[0], *y = k->in[1];
    mc_tensor *gx = &k->out[0];
    bool log_form = mc_attr_int(k->n, "log") != 0;
    int64_t outer, n, inner;
    ev_split(y, ev_axis(mc_attr_int(k->n, "axis"), y->rank), &outer, &n, &inner);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t base = o * n * inner + i;
            const mc_real *g = gy->f + base, *p = y->f + base;
            mc_real s = 0;
            for (int64_t j = 0; j < n; j++)
                s += log_form ? g[j * inner] : g[j * inner] * p[j * inner];
            for (int64_t j = 0; j < n; j++)
                gx->f[base + j * inner] = log_form ? g[j * inner] - ev_exp(p[j * inner]) * s
                                                   : p[j * inner] * (g[j * inner] - s);
        }
    return true;
}

/* ---- moe.LayerNormGrad and moe.RMSNormGrad ----
 * With xhat = (x - mean) inv (mean 0 for RMS) and g = gy scale, per row of n:
 *   gx = inv (g - mean(g) - xhat mean(g xhat))   (RMS: no mean(g) term),
 * and over rows gscale += gy xhat, gbias += gy. mean, var and inv as the forward. */
static bool norm_grad(const mc_kernel_ctx *k, bool rms) {
    const mc_tensor *gy = k->in[0], *x = k->in[1], *scale = k->in[2];
    mc_tensor *gx = &k->out[0], *gs = &k->out[1], *gb = k->n->nout > 2 ? &k->out[2] : NULL;
    int axis = ev_axis(mc_attr_int(k->n, "axis"), x->rank);
    mc_real eps = (mc_real)mc_attr_float(k->n, "epsilon");
    int64_t n = 1;
    for (int i = axis; i < x->rank; i++)
        n *= x->dims[i];
    for (int64_t r = 0; r < x->numel / n; r++) {
        const mc_real *px = x->f + r * n, *pg = gy->f + r * n;
        mc_real mean = 0, var = 0, sg = 0, sgx = 0;
        if (!rms) {
            for (int64_t j = 0; j < n; j++)
                mean += px[j];
            mean /= (mc_real)n;
        }
        for (int64_t j = 0; j < n; j++)
            var += (px[j] - mean) * (px[j] - mean);
        mc_real inv = EV_C(1.0) / ev_sqrt(var / (mc_real)n + eps);
        for (int64_t j = 0; j < n; j++) {
            mc_real g = pg[j] * scale->f[j];
            sg += g;
            sgx += g * ((px[j] - mean) * inv);
        }
        mc_real mg = rms ? EV_C(0.0) : sg / (mc_real)n, mgx = sgx / (mc_real)n;
        for (int64_t j = 0; j < n; j++) {
            mc_real xhat = (px[j] - mean) * inv;
            gx->f[r * n + j] = (pg[j] * scale->f[j] - mg - xhat * mgx) * inv;
            gs->f[j] += pg[j] * xhat;
            if (gb) gb->f[j] += pg[j];
        }
    }
    return true;
}
bool mc_interp_MOE_LAYER_NORM_GRAD(const mc_kernel_ctx *k) {
    return norm_grad(k, false);
}
bool mc_interp_MOE_RMS_NORM_GRAD(const mc_kernel_ctx *k) {
    return norm_grad(k, true);
}

/* ---- moe.GatherGrad: scatter-add of gy rows into the rows Gather read ---- */
bool mc_interp_MOE_GATHER_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *gy = k->in[0], *x = k->in[1], *ind = k->in[2];
    mc_tensor *gd = &k->out[0];
    int64_t outer, n, inner;
    ev_split(x, ev_axis(mc_attr_int(k->n, "axis"), x->rank), &outer, &n, &inner);
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
                gd->f[(o * n + j) * inner + i] += gy->f[(o * ind->numel + q) * inner + i];
        }
    return true;
}

/* ---- moe.SliceGrad: gy written where Slice read, zeros elsewhere ---- */

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

bool mc_interp_MOE_SLICE_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *gy = k->in[0], *x = k->in[1];
    const mc_tensor *axes = k->n->nin > 4 ? k->in[4] : NULL,
                    *steps = k->n->nin > 5 ? k->in[5] : NULL;
    mc_tensor *gd = &k->out[0];
    int64_t start[MC_MAX_RANK] = {0}, step[MC_MAX_RANK], st[MC_MAX_RANK], idx[MC_MAX_RANK];
    int64_t s[MC_MAX_RANK], ax[MC_MAX_RANK], sp[MC_MAX_RANK];
    for (int i = 0; i < MC_MAX_RANK; i++)
        step[i] = 1;
    int n = ev_ints(k->in[2], s, MC_MAX_RANK);
    if (axes) ev_ints(axes, ax, MC_MAX_RANK);
    if (steps) ev_ints(steps, sp, MC_MAX_RANK);
    for (int i = 0; i < n; i++) { /* as Slice: only the start and step matter */
        int a = ev_axis(axes ? ax[i] : i, x->rank);
        int64_t dim = x->dims[a], p = steps ? sp[i] : 1, b = s[i] < 0 ? s[i] + dim : s[i];
        start[a] = p > 0 ? clamp64(b, 0, dim) : clamp64(b, -1, dim - 1);
        step[a] = p;
    }
    ev_strides(x, st);
    for (int64_t f = 0; f < gy->numel; f++) {
        ev_unflatten(gy->dims, gy->rank, f, idx);
        int64_t dst = 0;
        for (int i = 0; i < gy->rank; i++)
            dst += (start[i] + idx[i] * step[i]) * st[i];
        gd->f[dst] = gy->f[f];
    }
    return true;
}

/* ---- moe.TopKGrad: gvalues scattered to the forward's top-k positions ---- */

/* The forward's selection (mc_interp_TOPK): K times the best element not taken yet,
 * the lower index on ties, NaN the smallest. */
static void topk_row(const mc_real *x, int64_t n, int64_t inner, int64_t K, bool largest,
                     int64_t *sel) {
    for (int64_t r = 0; r < K; r++) {
        int64_t best = -1;
        for (int64_t j = 0; j < n; j++) {
            bool taken = false;
            for (int64_t q = 0; q < r && !taken; q++)
                taken = sel[q] == j;
            if (taken) continue;
            mc_real v = x[j * inner], bv = best < 0 ? 0 : x[best * inner];
            if (best < 0 || (largest ? ev_gt(v, bv) : ev_gt(bv, v))) best = j;
        }
        sel[r] = best;
    }
}

bool mc_interp_MOE_TOPK_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *gv = k->in[0], *x = k->in[1];
    mc_tensor *gx = &k->out[0];
    int axis = ev_axis(mc_attr_int(k->n, "axis"), x->rank);
    bool largest = mc_attr_int(k->n, "largest") != 0;
    int64_t outer, n, inner, K = gv->dims[axis];
    ev_split(x, axis, &outer, &n, &inner);
    int64_t *sel = mc_alloc(sizeof(int64_t) * (size_t)(K > 0 ? K : 1));
    if (!sel) return ev_fail(k, "out of memory");
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t xb = o * n * inner + i, vb = o * K * inner + i;
            topk_row(x->f + xb, n, inner, K, largest, sel);
            for (int64_t r = 0; r < K; r++)
                gx->f[xb + sel[r] * inner] = gv->f[vb + r * inner];
        }
    mc_free(sel);
    return true;
}

/* ---- moe.ReduceMaxGrad: gy split evenly among the tied maxima of each group ---- */

/* Ties of the maximum: equal, or both NaN (the maximum of an all-NaN group). */
static bool same(mc_real a, mc_real b) {
    return a == b || (a != a && b != b);
}

/* Output (group) index of input element e: ost holds the output strides, 0 on reduced
 * dims. */
static int64_t group_of(const mc_tensor *x, const int64_t *ost, int64_t e) {
    int64_t idx[MC_MAX_RANK], o = 0;
    ev_unflatten(x->dims, x->rank, e, idx);
    for (int i = 0; i < x->rank; i++)
        o += idx[i] * ost[i];
    return o;
}

bool mc_interp_MOE_REDUCE_MAX_GRAD(const mc_kernel_ctx *k) {
    const mc_tensor *gy = k->in[0], *x = k->in[1];
    mc_tensor *gx = &k->out[0];
    bool red[MC_MAX_RANK] = {0};
    int64_t axes[MC_MAX_RANK];
    int n = k->n->nin > 2 && k->in[2] ? ev_ints(k->in[2], axes, MC_MAX_RANK) : 0;
    if (n == 0 && !mc_attr_int(k->n, "noop_with_empty_axes"))
        for (int i = 0; i < x->rank; i++)
            red[i] = true;
    for (int i = 0; i < n; i++)
        red[ev_axis(axes[i], x->rank)] = true;
    int64_t ost[MC_MAX_RANK], s = 1;
    for (int i = x->rank - 1; i >= 0; i--) {
        ost[i] = red[i] ? 0 : s;
        s *= red[i] ? 1 : x->dims[i];
    }
    size_t ny = (size_t)gy->numel + 1;
    mc_real *mx = mc_alloc(sizeof(mc_real) * ny);
    int64_t *count = mc_alloc(sizeof(int64_t) * ny);
    if (!mx || !count) {
        mc_free(mx);
        mc_free(count);
        return ev_fail(k, "out of memory");
    }
    memset(count, 0, sizeof(int64_t) * ny);
    for (int64_t e = 0; e < x->numel; e++) { /* the maxima, as ReduceMax folds them */
        int64_t o = group_of(x, ost, e);
        mx[o] = count[o]++ == 0 || ev_gt(x->f[e], mx[o]) ? x->f[e] : mx[o];
    }
    memset(count, 0, sizeof(int64_t) * ny);
    for (int64_t e = 0; e < x->numel; e++) { /* their ties */
        int64_t o = group_of(x, ost, e);
        count[o] += same(x->f[e], mx[o]);
    }
    for (int64_t e = 0; e < x->numel; e++) {
        int64_t o = group_of(x, ost, e);
        gx->f[e] = same(x->f[e], mx[o]) ? gy->f[o] / (mc_real)count[o] : EV_C(0.0);
    }
    mc_free(mx);
    mc_free(count);
    return true;
}
