/* backend/kernels/k_route.c: the routers (moe.TopKRoute, TopPRoute, ExpertChoiceRoute,
 * ResonanceRoute, GWRoute) as kernels, bit-identical to the reference interpreter
 * (ir/eval_route.c): the same float operations in the same order, libm through
 * __builtin_*, and StableOrderDesc (descending, ties to the lower index, NaN below every
 * number) for every top-k, argmax and sort.
 *
 * Calling convention beyond mk.h:
 *  - in[] holds the op's maximum number of inputs, p == NULL where an optional one is
 *    omitted; logits, bias and x are f32, masks bool bytes (shape inference enforces it);
 *  - scratch (laid out in k_route_scratch.h) follows the outputs. TopKRoute's optional
 *    third output is recognised by its rank: a rank-1 tensor at out[2] is the scratch,
 *    anything else is the choice slot (p may be NULL) and the scratch is out[3];
 *  - attributes by their ir/attrs.h names; GWRoute's base route reads TopKRoute's
 *    names, which attrs.def gives the same positions in both ops. GWRoute's `mode`
 *    attribute says whether it broadcasts: its outputs are then [T,E], else [T,k].
 *
 * The interpreter's quadratic selections over tokens (priority order, expert choice,
 * resonance's expert side) become stable merge sorts: StableOrderDesc is a stable sort
 * under the same comparison, so the order is the same. Float contraction is off so that
 * a target with FMA rounds like the interpreter's separate multiply and add. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../../runtime/moert.h"
#include "k_route_scratch.h"
#include "mk.h"

#pragma STDC FP_CONTRACT OFF

/* ---- shared helpers ---- */

/* NaN is smaller than every number: a > b in StableOrderDesc's order. */
static inline bool gt(float a, float b) {
    if (a != a) return false;
    if (b != b) return true;
    return a > b;
}

static inline void put_idx(const mk_tensor *t, int64_t i, int64_t v) {
    if (t->dt == MK_I64)
        ((int64_t *)t->p)[i] = v;
    else
        ((int32_t *)t->p)[i] = (int32_t)v;
}

static inline int64_t get_idx(const mk_tensor *t, int64_t i) {
    return t->dt == MK_I64 ? ((const int64_t *)t->p)[i] : ((const int32_t *)t->p)[i];
}

static inline bool mask_at(const mk_tensor *m, int64_t t) {
    return !m || !m->p || ((const uint8_t *)m->p)[t] != 0;
}

static int32_t no_scratch(void) {
    return moert_fail(MOERT_ERR_INTERNAL, "routing kernel: the scratch buffer is too small");
}

static void softmax_row(const float *z, int64_t n, float *p) {
    float mx = -__builtin_inff(), sum = 0;
    for (int64_t j = 0; j < n; j++)
        mx = gt(z[j], mx) ? z[j] : mx;
    for (int64_t j = 0; j < n; j++)
        sum += __builtin_expf(z[j] - mx);
    for (int64_t j = 0; j < n; j++)
        p[j] = __builtin_expf(z[j] - mx) / sum;
}

/* Index of the best allowed, untaken entry of v[0..n) (StableOrderDesc's next). */
static int64_t next_best(const float *v, int64_t n, const bool *allowed, const bool *taken) {
    int64_t best = -1;
    for (int64_t j = 0; j < n; j++) {
        if ((allowed && !allowed[j]) || (taken && taken[j])) continue;
        if (best < 0 || gt(v[j], v[best])) best = j;
    }
    return best;
}

/* idx[0..n) stably sorted by key[idx * stride] descending (NaN last): bottom-up merge
 * sort through tmp[n]. Equal keys keep their input order. */
static void sort_desc(const float *key, int64_t stride, int64_t *idx, int64_t *tmp, int64_t n) {
    for (int64_t w = 1; w < n; w *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t a = lo, b = mid, o = lo;
            while (a < mid && b < hi)
                tmp[o++] = gt(key[idx[b] * stride], key[idx[a] * stride]) ? idx[b++] : idx[a++];
            while (a < mid)
                tmp[o++] = idx[a++];
            while (b < hi)
                tmp[o++] = idx[b++];
        }
        for (int64_t i = 0; i < n; i++)
            idx[i] = tmp[i];
    }
}

/* ---- token-choice top-k (TopKRoute, GWRoute's base route) ---- */

typedef struct {
    int64_t k, capacity, groups, topk_groups, score;
    double scale;
    bool normalize, priority;
} topk_cfg;

/* TopKRoute's rows, which GWRoute and both gradients start with (ir/attrs.def). */
static topk_cfg topk_config(const mk_attr *a) {
    topk_cfg c = {.k = a[MC_A_MOE_TOPK_ROUTE_k].i,
                  .capacity = a[MC_A_MOE_TOPK_ROUTE_capacity].i,
                  .groups = a[MC_A_MOE_TOPK_ROUTE_groups].i,
                  .topk_groups = a[MC_A_MOE_TOPK_ROUTE_topk_groups].i,
                  .score = a[MC_A_MOE_TOPK_ROUTE_score].i,
                  .scale = a[MC_A_MOE_TOPK_ROUTE_scale].f,
                  .normalize = a[MC_A_MOE_TOPK_ROUTE_normalize].i != 0,
                  .priority = a[MC_A_MOE_TOPK_ROUTE_order].i == MC_A_MOE_TOPK_ROUTE_order_priority};
    return c;
}

/* Per-token work arrays and the capacity stage's, carved from scratch. */
typedef struct {
    float *s, *q, *key;                 /* s[E], q[2E] (q, group scores), key[T] */
    bool *allowed, *taken;              /* [E] each; taken doubles as the kept-group flags */
    int64_t *sel, *count, *visit, *tmp; /* sel[k], count[E], visit[T], tmp[T] */
} topk_work;

static bool topk_work_init(const mk_tensor *scratch, int64_t T, int64_t E, int64_t k,
                           topk_work *w) {
    mk_topk_route_scratch l = mk_topk_route_scratch_of(T, E, k);
    if (!mk_scratch_fits(scratch, l.bytes)) return false;
    w->s = mk_scratch_at(scratch, l.s);
    w->q = mk_scratch_at(scratch, l.q);
    w->allowed = mk_scratch_at(scratch, l.flags);
    w->taken = w->allowed + E;
    w->sel = mk_scratch_at(scratch, l.sel);
    w->key = mk_scratch_at(scratch, l.key);
    w->count = mk_scratch_at(scratch, l.count);
    w->visit = mk_scratch_at(scratch, l.visit);
    w->tmp = mk_scratch_at(scratch, l.tmp);
    return true;
}

/* Group limiting: keep the topk_groups best blocks of E/groups experts. A block scores
 * the sum of its two largest q when a bias steers selection, its largest q otherwise. */
static void limit_groups(const topk_cfg *c, const float *q, bool has_bias, int64_t E, bool *allowed,
                         float *gs, bool *kept) {
    for (int64_t e = 0; e < E; e++)
        allowed[e] = true;
    if (c->groups <= 1 || c->topk_groups == 0 || c->topk_groups >= c->groups) return;
    int64_t G = c->groups, per = E / G;
    for (int64_t g = 0; g < G; g++) {
        const float *qg = q + g * per;
        int64_t a = next_best(qg, per, NULL, NULL), b = -1;
        for (int64_t j = 0; j < per && has_bias; j++)
            if (j != a && (b < 0 || gt(qg[j], qg[b]))) b = j;
        gs[g] = qg[a] + (b >= 0 ? qg[b] : 0.0f);
        kept[g] = false;
    }
    for (int64_t r = 0; r < c->topk_groups; r++)
        kept[next_best(gs, G, NULL, kept)] = true;
    for (int64_t e = 0; e < E; e++)
        allowed[e] = kept[e / per];
}

/* Selection scores q and the selected experts sel[0..k) of one token; leaves s. */
static void select_token(const topk_cfg *c, const float *z, const float *bias, int64_t E,
                         topk_work *w) {
    if (c->score == MC_A_MOE_TOPK_ROUTE_score_sigmoid) {
        for (int64_t e = 0; e < E; e++)
            w->s[e] = 1.0f / (1.0f + __builtin_expf(-z[e]));
    } else {
        softmax_row(z, E, w->s);
    }
    for (int64_t e = 0; e < E; e++)
        w->q[e] = (c->score == MC_A_MOE_TOPK_ROUTE_score_softmax_selected ? z[e] : w->s[e]) +
                  (bias ? bias[e] : 0.0f);
    limit_groups(c, w->q, bias != NULL, E, w->allowed, w->q + E, w->taken);
    for (int64_t e = 0; e < E; e++)
        w->taken[e] = false;
    for (int64_t r = 0; r < c->k; r++) {
        w->sel[r] = next_best(w->q, E, w->allowed, w->taken);
        w->taken[w->sel[r]] = true;
    }
}

/* Pre-capacity weights of one token into wt[0..k). */
static void weigh_token(const topk_cfg *c, const float *z, int64_t E, const topk_work *w,
                        float *wt) {
    if (c->score == MC_A_MOE_TOPK_ROUTE_score_softmax_selected) { /* over the selected logits */
        float mx = -__builtin_inff(), sum = 0;
        for (int64_t e = 0; e < E; e++)
            if (w->taken[e] && gt(z[e], mx)) mx = z[e];
        for (int64_t e = 0; e < E; e++)
            if (w->taken[e]) sum += __builtin_expf(z[e] - mx);
        for (int64_t r = 0; r < c->k; r++)
            wt[r] = __builtin_expf(z[w->sel[r]] - mx) / sum;
    } else {
        for (int64_t r = 0; r < c->k; r++)
            wt[r] = w->s[w->sel[r]];
    }
    if (c->normalize) { /* summed in ascending expert order, as the interpreter does */
        float sum = 0;
        for (int64_t e = 0; e < E; e++)
            for (int64_t r = 0; r < c->k; r++)
                if (w->sel[r] == e) sum += wt[r];
        for (int64_t r = 0; r < c->k; r++)
            wt[r] = wt[r] / (sum + 1e-20f);
    }
    for (int64_t r = 0; r < c->k; r++)
        wt[r] = (float)((double)wt[r] * c->scale);
}

/* Rank-major capacity filling in position or priority order. Entries of token t live at
 * [t * ld + r] of ex and wt. */
static void apply_capacity(const topk_cfg *c, int64_t T, int64_t E, int64_t ld, topk_work *w,
                           const mk_tensor *ex, float *wt) {
    for (int64_t e = 0; e < E; e++)
        w->count[e] = 0;
    for (int64_t t = 0; t < T; t++)
        w->visit[t] = t;
    if (c->priority) sort_desc(w->key, 1, w->visit, w->tmp, T);
    for (int64_t r = 0; r < c->k; r++)
        for (int64_t i = 0; i < T; i++) {
            int64_t t = w->visit[i], e = get_idx(ex, t * ld + r);
            if (w->count[e] < c->capacity)
                w->count[e]++;
            else
                put_idx(ex, t * ld + r, -1), wt[t * ld + r] = 0;
        }
}

/* Routes logits z[T,E] into ex/wt (row stride ld) and, if given, choice[T,k]. */
static void topk_route(const topk_cfg *c, const float *z, const float *bias, int64_t T, int64_t E,
                       int64_t ld, topk_work *w, const mk_tensor *ex, float *wt,
                       const mk_tensor *choice) {
    for (int64_t t = 0; t < T; t++) {
        const float *zt = z + t * E;
        select_token(c, zt, bias, E, w);
        w->key[t] = w->s[w->sel[0]];
        weigh_token(c, zt, E, w, wt + t * ld);
        for (int64_t r = 0; r < c->k; r++) {
            put_idx(ex, t * ld + r, w->sel[r]);
            if (choice) put_idx(choice, t * c->k + r, w->sel[r]);
        }
    }
    if (c->capacity > 0) apply_capacity(c, T, E, ld, w, ex, wt);
}

/* in: logits[T,E], bias[E]?  out: expert[T,k], weight[T,k], choice[T,k]?, scratch */
int32_t mk_MOE_TOPK_ROUTE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    topk_cfg c = topk_config(attr);
    int64_t T = in[0].dims[0], E = in[0].dims[1];
    bool has_slot = out[2].rank != 1;
    const mk_tensor *choice = has_slot && out[2].p ? &out[2] : NULL;
    topk_work w;
    if (!topk_work_init(&out[has_slot ? 3 : 2], T, E, c.k, &w)) return no_scratch();
    topk_route(&c, in[0].p, in[1].p, T, E, c.k, &w, &out[0], out[1].p, choice);
    return MOERT_OK;
}

/* ---- GW-MoE ---- */

static bool gw_training(const mk_attr *attr) {
    return attr[MC_A_MOE_GW_ROUTE_mode].i == MC_A_MOE_GW_ROUTE_mode_train;
}

/* Tokens whose routing entropy reaches the threshold (the first max_broadcast valid
 * ones) list every expert with the full softmax row; the others keep their base route
 * in ranks 0..k-1 and -1 / 0 after. Rows of ex/wt are E wide. */
static void gw_broadcast(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr, float *p) {
    const float *z = in[0].p;
    const mk_tensor *mask = &in[2];
    int64_t T = in[0].dims[0], E = in[0].dims[1], K = attr[MC_A_MOE_GW_ROUTE_k].i,
            M = attr[MC_A_MOE_GW_ROUTE_max_broadcast].i, seen = 0;
    float tau = (float)attr[MC_A_MOE_GW_ROUTE_threshold].f,
          eps = (float)attr[MC_A_MOE_GW_ROUTE_eps].f, *wt = out[1].p;
    bool normalized =
        attr[MC_A_MOE_GW_ROUTE_entropy_unit].i == MC_A_MOE_GW_ROUTE_entropy_unit_normalized;
    for (int64_t t = 0; t < T; t++) {
        softmax_row(z + t * E, E, p);
        float H = 0;
        for (int64_t e = 0; e < E; e++)
            H -= p[e] * __builtin_logf(p[e] + eps);
        if (normalized) H /= __builtin_logf((float)E);
        bool uncertain = mask_at(mask, t) && H >= tau;
        seen += uncertain;
        bool broadcast = uncertain && seen <= M;
        for (int64_t r = broadcast ? 0 : K; r < E; r++) {
            put_idx(&out[0], t * E + r, broadcast ? r : -1);
            wt[t * E + r] = broadcast ? p[r] : 0;
        }
    }
}

/* in: logits[T,E], bias[E]?, mask[T]?  out: expert, weight ([T,k] for mode "infer",
 * [T,E] for "train"), scratch */
int32_t mk_MOE_GW_ROUTE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    topk_cfg c = topk_config(attr);
    int64_t T = in[0].dims[0], E = in[0].dims[1];
    topk_work w;
    if (!topk_work_init(&out[2], T, E, c.k, &w)) return no_scratch();
    bool training = gw_training(attr);
    topk_route(&c, in[0].p, in[1].p, T, E, training ? E : c.k, &w, &out[0], out[1].p, NULL);
    if (training) gw_broadcast(in, out, attr, w.s);
    return MOERT_OK;
}

/* ---- top-p ---- */

/* in: logits[T,E]  out: expert[T,K], weight[T,K] (K = max_k or E), scratch */
int32_t mk_MOE_TOPP_ROUTE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const float *z = in[0].p;
    int64_t T = in[0].dims[0], E = in[0].dims[1], K = out[0].dims[1];
    float p_thr = (float)attr[MC_A_MOE_TOPP_ROUTE_p].f, *wt = out[1].p;
    bool inclusive = attr[MC_A_MOE_TOPP_ROUTE_inclusive].i != 0;
    mk_topp_route_scratch l = mk_topp_route_scratch_of(E);
    if (!mk_scratch_fits(&out[2], l.bytes)) return no_scratch();
    float *p = mk_scratch_at(&out[2], l.p);
    bool *taken = mk_scratch_at(&out[2], l.taken);
    for (int64_t t = 0; t < T; t++) {
        softmax_row(z + t * E, E, p);
        for (int64_t e = 0; e < E; e++)
            taken[e] = false;
        for (int64_t r = 0; r < K; r++)
            put_idx(&out[0], t * K + r, -1), wt[t * K + r] = 0;
        float cum = 0;
        for (int64_t r = 0; r < E && r < K; r++) {
            int64_t e = next_best(p, E, NULL, taken);
            taken[e] = true;
            put_idx(&out[0], t * K + r, e);
            wt[t * K + r] = p[e];
            cum += p[e];
            if (inclusive ? cum >= p_thr : cum > p_thr) break;
        }
    }
    return MOERT_OK;
}

/* ---- expert choice ---- */

/* in: logits[T,E], mask[T]?  out: token[E,C], weight[E,C], scratch. Each expert takes
 * its C best valid tokens by softmax probability; -1 / 0 when fewer are valid. */
int32_t mk_MOE_EXPERT_CHOICE_ROUTE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    (void)attr;
    const float *z = in[0].p;
    int64_t T = in[0].dims[0], E = in[0].dims[1], C = out[0].dims[1];
    float *wt = out[1].p;
    mk_expert_choice_route_scratch l = mk_expert_choice_route_scratch_of(T, E);
    if (!mk_scratch_fits(&out[2], l.bytes)) return no_scratch();
    float *p = mk_scratch_at(&out[2], l.probs);
    int64_t *idx = mk_scratch_at(&out[2], l.idx), *tmp = mk_scratch_at(&out[2], l.tmp);
    for (int64_t t = 0; t < T; t++)
        softmax_row(z + t * E, E, p + t * E);
    for (int64_t e = 0; e < E; e++) {
        int64_t n = 0;
        for (int64_t t = 0; t < T; t++)
            if (mask_at(&in[1], t)) idx[n++] = t;
        sort_desc(p + e, E, idx, tmp, n);
        for (int64_t c = 0; c < C; c++) {
            int64_t t = c < n ? idx[c] : -1;
            put_idx(&out[0], e * C + c, t);
            wt[e * C + c] = t >= 0 ? p[t * E + e] : 0;
        }
    }
    return MOERT_OK;
}

/* ---- expert-token resonance ---- */

/* Cosine affinity delta[E] of token x[D] to the block gating vectors, and the GrAP
 * logits grap[E]. */
static void resonance_affinity(const float *x, int64_t D, int64_t E, float *delta, float *grap) {
    int64_t blk = D / E;
    float norm = 0;
    for (int64_t j = 0; j < D; j++)
        norm += x[j] * x[j];
    norm = __builtin_sqrtf(norm);
    for (int64_t i = 0; i < E; i++) {
        float sum = 0;
        for (int64_t j = i * blk; j < (i + 1) * blk; j++)
            sum += x[j];
        delta[i] = norm == 0 ? 0 : sum / (norm * __builtin_sqrtf((float)blk));
        grap[i] = sum * ((float)E / (float)D);
    }
}

/* Expert side: expert i keeps its `cap` best candidates by delta[., i]; the others lose
 * their choice of i (expert -1, weight 0). */
static void resonance_capacity(const float *delta, int64_t T, int64_t E, int64_t K, int64_t cap,
                               int64_t *cand, int64_t *tmp, const mk_tensor *ex, float *wt) {
    for (int64_t i = 0; i < E; i++) {
        int64_t n = 0;
        for (int64_t t = 0; t < T; t++)
            for (int64_t r = 0; r < K; r++)
                if (get_idx(ex, t * K + r) == i) {
                    cand[n++] = t;
                    break;
                }
        if (n <= cap) continue;
        sort_desc(delta + i, E, cand, tmp, n);
        for (int64_t c = cap; c < n; c++)
            for (int64_t r = 0, t = cand[c]; r < K; r++)
                if (get_idx(ex, t * K + r) == i) put_idx(ex, t * K + r, -1), wt[t * K + r] = 0;
    }
}

/* in: x[T,D]  out: expert[T,k], weight[T,k], scratch. attrs: num_experts, k, capacity,
 * weight_mode (softmax_cosine | unit | softmax_grap_logits). */
int32_t mk_MOE_RESONANCE_ROUTE(const mk_tensor *in, const mk_tensor *out, const mk_attr *attr) {
    const float *x = in[0].p;
    int64_t T = in[0].dims[0], D = in[0].dims[1], E = attr[MC_A_MOE_RESONANCE_ROUTE_num_experts].i,
            K = attr[MC_A_MOE_RESONANCE_ROUTE_k].i, cap = attr[MC_A_MOE_RESONANCE_ROUTE_capacity].i,
            mode = attr[MC_A_MOE_RESONANCE_ROUTE_weight_mode].i;
    float *wt = out[1].p;
    const mk_tensor *scratch = &out[2];
    mk_resonance_route_scratch l = mk_resonance_route_scratch_of(T, E);
    if (!mk_scratch_fits(scratch, l.bytes)) return no_scratch();
    float *delta = mk_scratch_at(scratch, l.delta), *grap = mk_scratch_at(scratch, l.grap),
          *w = mk_scratch_at(scratch, l.w);
    bool *taken = mk_scratch_at(scratch, l.taken);
    int64_t *cand = mk_scratch_at(scratch, l.cand), *tmp = mk_scratch_at(scratch, l.tmp);
    for (int64_t t = 0; t < T; t++) {
        float *dt = delta + t * E;
        resonance_affinity(x + t * D, D, E, dt, grap);
        for (int64_t e = 0; e < E; e++)
            taken[e] = false;
        for (int64_t r = 0; r < K; r++) {
            int64_t e = next_best(dt, E, NULL, taken);
            taken[e] = true;
            put_idx(&out[0], t * K + r, e);
        }
        bool unit = mode == MC_A_MOE_RESONANCE_ROUTE_weight_mode_unit;
        if (!unit)
            softmax_row(mode == MC_A_MOE_RESONANCE_ROUTE_weight_mode_softmax_cosine ? dt : grap, E,
                        w);
        for (int64_t r = 0; r < K; r++)
            wt[t * K + r] = unit ? 1 : w[get_idx(&out[0], t * K + r)];
    }
    if (cap > 0) resonance_capacity(delta, T, E, K, cap, cand, tmp, &out[0], wt);
    return MOERT_OK;
}
