/* ir/eval_route.c: reference kernels of the routers (ROUTING.md §3, with the choices
 * of docs/semantics-decisions.md). Every top-k, argmax and sort is StableOrderDesc:
 * descending, ties to the lower index, NaN below every number. */
#include "eval.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void ev_softmax_row(const mc_real *z, int64_t n, mc_real *p) {
    mc_real mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < n; j++)
        mx = ev_gt(z[j], mx) ? z[j] : mx;
    for (int64_t j = 0; j < n; j++)
        sum += ev_exp(z[j] - mx);
    for (int64_t j = 0; j < n; j++)
        p[j] = ev_exp(z[j] - mx) / sum;
}

static mc_real sigmoid1(mc_real x) {
    return EV_C(1.0) / (EV_C(1.0) + ev_exp(-x));
}

/* Index of the best allowed, untaken entry of v[0..n) (StableOrderDesc's next). */
static int64_t next_best(const mc_real *v, int64_t n, const bool *allowed, const bool *taken) {
    int64_t best = -1;
    for (int64_t j = 0; j < n; j++) {
        if ((allowed && !allowed[j]) || (taken && taken[j])) continue;
        if (best < 0 || ev_gt(v[j], v[best])) best = j;
    }
    return best;
}

/* TopKRoute, GWRoute, their gradients and MoE take one list of each (ir/attrs.def). */
_Static_assert((int)MC_A_MOE_MOE_score_sigmoid == (int)MC_A_MOE_TOPK_ROUTE_score_sigmoid &&
                   (int)MC_A_MOE_MOE_score_softmax_selected ==
                       (int)MC_A_MOE_TOPK_ROUTE_score_softmax_selected &&
                   (int)MC_A_MOE_MOE_order_priority == (int)MC_A_MOE_TOPK_ROUTE_order_priority,
               "moe.MoE's score and order choices are TopKRoute's");

void ev_topk_config(const mc_node *n, const char *normalize_attr, ev_topk *out) {
    out->k = mc_attr_int(n, "k");
    out->capacity = mc_attr_int(n, "capacity");
    out->groups = mc_attr_int(n, "groups");
    out->topk_groups = mc_attr_int(n, "topk_groups");
    out->scale = mc_attr_float(n, "scale");
    out->normalize = mc_attr_int(n, normalize_attr) != 0;
    out->priority = mc_attr_choice(n, "order") == MC_A_MOE_TOPK_ROUTE_order_priority;
    out->score = (ev_score)mc_attr_choice(n, "score");
}

/* Group limiting: keep the topk_groups best blocks of E/groups experts. A block scores
 * the sum of its two largest q when a bias steers selection, its largest q otherwise. */
static void limit_groups(const ev_topk *c, const mc_real *q, bool has_bias, int64_t E,
                         bool *allowed, mc_real *gs, bool *kept) {
    for (int64_t e = 0; e < E; e++)
        allowed[e] = true;
    if (c->groups <= 1 || c->topk_groups == 0 || c->topk_groups >= c->groups) return;
    int64_t G = c->groups, per = E / G;
    for (int64_t g = 0; g < G; g++) {
        const mc_real *qg = q + g * per;
        int64_t a = next_best(qg, per, NULL, NULL), b = -1;
        for (int64_t j = 0; j < per && has_bias; j++)
            if (j != a && (b < 0 || ev_gt(qg[j], qg[b]))) b = j;
        gs[g] = qg[a] + (b >= 0 ? qg[b] : EV_C(0.0));
        kept[g] = false;
    }
    for (int64_t r = 0; r < c->topk_groups; r++)
        kept[next_best(gs, G, NULL, kept)] = true;
    for (int64_t e = 0; e < E; e++)
        allowed[e] = kept[e / per];
}

/* One token: selection and pre-capacity weights; key = its priority score. */
static void route_token(const ev_topk *c, const mc_real *z, const mc_real *bias, int64_t E,
                        mc_real *s, mc_real *q, bool *allowed, bool *taken, int64_t *sel,
                        mc_real *w, mc_real *key) {
    if (c->score == EV_SIGMOID) {
        for (int64_t e = 0; e < E; e++)
            s[e] = sigmoid1(z[e]);
    } else {
        ev_softmax_row(z, E, s);
    }
    for (int64_t e = 0; e < E; e++)
        q[e] = (c->score == EV_SOFTMAX_SELECTED ? z[e] : s[e]) + (bias ? bias[e] : EV_C(0.0));
    limit_groups(c, q, bias != NULL, E, allowed, q + E, taken);
    memset(taken, 0, (size_t)E);
    for (int64_t r = 0; r < c->k; r++) {
        sel[r] = next_best(q, E, allowed, taken);
        taken[sel[r]] = true;
    }
    *key = s[sel[0]];
    if (c->score == EV_SOFTMAX_SELECTED) { /* softmax over the selected logits */
        mc_real mx = -INFINITY, sum = 0;
        for (int64_t e = 0; e < E; e++)
            if (taken[e] && ev_gt(z[e], mx)) mx = z[e];
        for (int64_t e = 0; e < E; e++)
            if (taken[e]) sum += ev_exp(z[e] - mx);
        for (int64_t r = 0; r < c->k; r++)
            w[r] = ev_exp(z[sel[r]] - mx) / sum;
    } else {
        for (int64_t r = 0; r < c->k; r++)
            w[r] = s[sel[r]];
    }
    if (c->normalize) {
        mc_real sum = 0;
        for (int64_t e = 0; e < E; e++)
            for (int64_t r = 0; r < c->k; r++)
                if (sel[r] == e) sum += w[r];
        for (int64_t r = 0; r < c->k; r++)
            w[r] = w[r] / (sum + EV_C(1e-20));
    }
    for (int64_t r = 0; r < c->k; r++)
        w[r] = (mc_real)(w[r] * c->scale);
}

/* Rank-major capacity filling in position or priority order. */
static bool apply_capacity(const ev_topk *c, int64_t T, int64_t E, const mc_real *key,
                           int64_t *expert, mc_real *weight) {
    int64_t *count = calloc((size_t)E, sizeof *count),
            *visit = malloc(sizeof *visit * (size_t)(T + 1));
    bool *used = calloc((size_t)T + 1, 1);
    bool ok = count && visit && used;
    for (int64_t i = 0; ok && i < T; i++) /* StableOrderDesc of key, or position order */
        visit[i] = c->priority ? next_best(key, T, NULL, used) : i, used[visit[i]] = true;
    for (int64_t r = 0; ok && r < c->k; r++)
        for (int64_t i = 0; i < T; i++) {
            int64_t t = visit[i], e = expert[t * c->k + r];
            if (count[e] < c->capacity)
                count[e]++;
            else
                expert[t * c->k + r] = -1, weight[t * c->k + r] = 0;
        }
    free(count);
    free(visit);
    free(used);
    return ok;
}

bool ev_topk_route(const ev_topk *c, const mc_real *z, const mc_real *bias, int64_t T, int64_t E,
                   int64_t *expert, mc_real *weight, int64_t *choice) {
    mc_real *s = malloc(sizeof(mc_real) * (size_t)(3 * E + T + 1)); /* s, q, group scores, keys */
    bool *flags = malloc((size_t)(2 * E + 1));
    if (!s || !flags) {
        free(s);
        free(flags);
        return false;
    }
    mc_real *q = s + E, *key = s + 3 * E;
    for (int64_t t = 0; t < T; t++) {
        route_token(c, z + t * E, bias, E, s, q, flags, flags + E, expert + t * c->k,
                    weight + t * c->k, &key[t]);
        if (choice) memcpy(choice + t * c->k, expert + t * c->k, sizeof(int64_t) * (size_t)c->k);
    }
    bool ok = c->capacity == 0 || apply_capacity(c, T, E, key, expert, weight);
    free(s);
    free(flags);
    return ok;
}

bool mc_interp_MOE_TOPK_ROUTE(const mc_kernel_ctx *k) {
    ev_topk c;
    ev_topk_config(k->n, "normalize", &c);
    const mc_tensor *z = k->in[0], *bias = k->n->nin > 1 ? k->in[1] : NULL;
    if (!ev_topk_route(&c, z->f, bias ? bias->f : NULL, z->dims[0], z->dims[1], k->out[0].i,
                       k->out[1].f, k->n->nout > 2 ? k->out[2].i : NULL))
        return ev_fail(k, "out of memory");
    return true;
}

bool mc_interp_MOE_TOPP_ROUTE(const mc_kernel_ctx *k) {
    const mc_tensor *z = k->in[0];
    int64_t T = z->dims[0], E = z->dims[1], K = k->out[0].dims[1];
    mc_real p_thr = (mc_real)mc_attr_float(k->n, "p");
    bool inclusive = mc_attr_int(k->n, "inclusive") != 0;
    mc_real *p = malloc(sizeof(mc_real) * (size_t)E);
    bool *taken = malloc((size_t)E);
    if (!p || !taken) return free(p), free(taken), ev_fail(k, "out of memory");
    for (int64_t t = 0; t < T; t++) {
        ev_softmax_row(z->f + t * E, E, p);
        memset(taken, 0, (size_t)E);
        mc_real cum = 0;
        for (int64_t r = 0; r < K; r++)
            k->out[0].i[t * K + r] = -1;
        for (int64_t r = 0; r < E && r < K; r++) {
            int64_t e = next_best(p, E, NULL, taken);
            taken[e] = true;
            k->out[0].i[t * K + r] = e;
            k->out[1].f[t * K + r] = p[e];
            cum += p[e];
            if (inclusive ? cum >= p_thr : cum > p_thr) break;
        }
    }
    free(p);
    free(taken);
    return true;
}

bool mc_interp_MOE_EXPERT_CHOICE_ROUTE(const mc_kernel_ctx *k) {
    const mc_tensor *z = k->in[0], *mask = k->n->nin > 1 ? k->in[1] : NULL;
    int64_t T = z->dims[0], E = z->dims[1], C = k->out[0].dims[1];
    mc_real *p = malloc(sizeof(mc_real) * (size_t)(T * E + T + 1));
    bool *used = malloc((size_t)T + 1);
    if (!p || !used) return free(p), free(used), ev_fail(k, "out of memory");
    mc_real *col = p + T * E;
    for (int64_t t = 0; t < T; t++)
        ev_softmax_row(z->f + t * E, E, p + t * E);
    for (int64_t e = 0; e < E; e++) {
        for (int64_t t = 0; t < T; t++)
            col[t] = p[t * E + e], used[t] = mask && !mask->i[t];
        for (int64_t c = 0; c < C; c++) {
            int64_t t = next_best(col, T, NULL, used);
            k->out[0].i[e * C + c] = t;
            k->out[1].f[e * C + c] = t >= 0 ? col[t] : 0;
            if (t >= 0) used[t] = true;
        }
    }
    free(p);
    free(used);
    return true;
}

/* Expert-Token Resonance (§3.11): cosine affinity to block gating vectors, top-k per
 * token, then each expert keeps its best `capacity` candidates. */
static void resonance_affinity(const mc_real *x, int64_t D, int64_t E, mc_real *delta,
                               mc_real *grap) {
    int64_t blk = D / E;
    mc_real norm = 0;
    for (int64_t j = 0; j < D; j++)
        norm += x[j] * x[j];
    norm = ev_sqrt(norm);
    for (int64_t i = 0; i < E; i++) {
        mc_real sum = 0;
        for (int64_t j = i * blk; j < (i + 1) * blk; j++)
            sum += x[j];
        delta[i] = norm == 0 ? 0 : sum / (norm * ev_sqrt((mc_real)blk));
        grap[i] = sum * ((mc_real)E / (mc_real)D);
    }
}

bool mc_interp_MOE_RESONANCE_ROUTE(const mc_kernel_ctx *k) {
    const mc_tensor *x = k->in[0];
    int64_t T = x->dims[0], D = x->dims[1], E = mc_attr_int(k->n, "num_experts"),
            K = mc_attr_int(k->n, "k");
    int64_t cap = mc_attr_int(k->n, "capacity");
    int mode = mc_attr_choice(k->n, "weight_mode");
    mc_real *delta = malloc(sizeof(mc_real) * (size_t)(2 * T * E + T + E + 1));
    bool *flags = malloc((size_t)(T + E + 1));
    if (!delta || !flags) return free(delta), free(flags), ev_fail(k, "out of memory");
    mc_real *grap = delta + T * E, *col = grap + T * E, *w = col + T;
    int64_t *ex = k->out[0].i;
    for (int64_t t = 0; t < T; t++) {
        resonance_affinity(x->f + t * D, D, E, delta + t * E, grap + t * E);
        memset(flags, 0, (size_t)E);
        for (int64_t r = 0; r < K; r++)
            flags[ex[t * K + r] = next_best(delta + t * E, E, NULL, flags)] = true;
        if (mode == MC_A_MOE_RESONANCE_ROUTE_weight_mode_unit) {
            for (int64_t r = 0; r < K; r++)
                k->out[1].f[t * K + r] = 1;
            continue;
        }
        bool cosine = mode == MC_A_MOE_RESONANCE_ROUTE_weight_mode_softmax_cosine;
        ev_softmax_row((cosine ? delta : grap) + t * E, E, w);
        for (int64_t r = 0; r < K; r++)
            k->out[1].f[t * K + r] = w[ex[t * K + r]];
    }
    for (int64_t i = 0; cap > 0 && i < E; i++) { /* expert side: best `cap` candidates */
        bool *out_of_race = flags;
        for (int64_t t = 0; t < T; t++) {
            col[t] = delta[t * E + i];
            out_of_race[t] = true;
            for (int64_t r = 0; r < K; r++)
                out_of_race[t] &= ex[t * K + r] != i;
        }
        for (int64_t c = 0, t; c < cap && (t = next_best(col, T, NULL, out_of_race)) >= 0; c++)
            out_of_race[t] = true;
        for (int64_t t = 0; t < T; t++)
            for (int64_t r = 0; r < K; r++)
                if (ex[t * K + r] == i && !out_of_race[t])
                    ex[t * K + r] = -1, k->out[1].f[t * K + r] = 0;
    }
    free(delta);
    free(flags);
    return true;
}

bool ev_gw_uncertain(const mc_node *n, const mc_real *z, int64_t E, mc_real *p) {
    mc_real tau = (mc_real)mc_attr_float(n, "threshold"), eps = (mc_real)mc_attr_float(n, "eps");
    bool normalized =
        mc_attr_choice(n, "entropy_unit") == MC_A_MOE_GW_ROUTE_entropy_unit_normalized;
    ev_softmax_row(z, E, p);
    mc_real H = 0;
    for (int64_t e = 0; e < E; e++)
        H -= p[e] * ev_log(p[e] + eps);
    if (normalized) H /= ev_log((mc_real)E);
    return H >= tau;
}

/* GW-MoE (§3.10): the base top-k result; in mode "train", tokens whose routing entropy
 * reaches the threshold (the first max_broadcast of them, valid tokens only) are
 * listed with every expert and the full softmax row instead. */
static bool gw_broadcast(const mc_kernel_ctx *k, const int64_t *base_e, const mc_real *base_w,
                         int64_t K) {
    const mc_tensor *z = k->in[0], *mask = k->n->nin > 2 ? k->in[2] : NULL;
    int64_t T = z->dims[0], E = z->dims[1], M = mc_attr_int(k->n, "max_broadcast"), seen = 0;
    mc_real *p = malloc(sizeof(mc_real) * (size_t)E);
    if (!p) return ev_fail(k, "out of memory");
    for (int64_t t = 0; t < T; t++) {
        bool uncertain = ev_gw_uncertain(k->n, z->f + t * E, E, p) && (!mask || mask->i[t]);
        seen += uncertain;
        bool broadcast = uncertain && seen <= M;
        for (int64_t r = 0; r < E; r++) {
            bool base = r < K;
            k->out[0].i[t * E + r] = broadcast ? r : base ? base_e[t * K + r] : -1;
            k->out[1].f[t * E + r] = broadcast ? p[r] : base ? base_w[t * K + r] : 0;
        }
    }
    free(p);
    return true;
}

bool mc_interp_MOE_GW_ROUTE(const mc_kernel_ctx *k) {
    ev_topk c;
    ev_topk_config(k->n, "normalize", &c);
    const mc_tensor *z = k->in[0], *bias = k->n->nin > 1 ? k->in[1] : NULL;
    int64_t T = z->dims[0], E = z->dims[1];
    if (mc_attr_choice(k->n, "mode") != MC_A_MOE_GW_ROUTE_mode_train)
        return ev_topk_route(&c, z->f, bias ? bias->f : NULL, T, E, k->out[0].i, k->out[1].f,
                             NULL) ||
               ev_fail(k, "out of memory");
    int64_t *be = malloc(sizeof(int64_t) * (size_t)(T * c.k + 1));
    mc_real *bw = malloc(sizeof(mc_real) * (size_t)(T * c.k + 1));
    bool ok = be && bw && ev_topk_route(&c, z->f, bias ? bias->f : NULL, T, E, be, bw, NULL);
    ok = ok ? gw_broadcast(k, be, bw, c.k) : ev_fail(k, "out of memory");
    free(be);
    free(bw);
    return ok;
}
