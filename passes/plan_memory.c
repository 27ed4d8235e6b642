/* plan-memory: the static memory plan. Every temp value that is not a graph output
 * (and every node's kernel scratch) gets a byte offset in one arena, sized with all
 * symbols at their max; the result lives in g->plan, shows in dumps, and is what the
 * backend lays buffers out by. Buffers whose lifetimes (first definition to last use,
 * in node order) overlap never share bytes; placement is first-fit in order of
 * decreasing size, which keeps the peak close to the largest set of simultaneously
 * live buffers on MoE graphs. An optimizer step writes a param's next value over the
 * param itself when nothing reads the param after it (the step is elementwise: element
 * i of its outputs depends on element i of its inputs only), so the training step's
 * updates then cost neither arena bytes nor a copy after the last node. Any later graph
 * edit invalidates the plan.
 * needs: shapes    keeps: everything    breaks: nothing    gives: the plan */
#include "passes.h"
#include "scratch.h"

#include <stdlib.h>

enum { ALIGN = 64 };

static int64_t *filled(mc_graph *g, int n, int64_t v) {
    int64_t *a = mc_arena_alloc(g->arena, sizeof(int64_t) * (size_t)(n + 1));
    for (int i = 0; i < n; i++)
        a[i] = v;
    return a;
}

typedef struct {
    int64_t bytes, first, last; /* lifetime in positions of g->order */
    int64_t *off;               /* where to write the placement */
} buffer;

static int64_t round_up(int64_t n) {
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

static bool in_arena(const mc_graph *g, int v) {
    const mc_value *x = mc_val(g, v);
    return !x->dead && x->kind == MC_VK_TEMP && !x->is_output && x->producer >= 0 &&
           g->plan.value_in_place[v] < 0;
}

static int by_size_desc(const void *a, const void *b) {
    const buffer *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? 1 : -1;
    return x->first < y->first ? -1 : x->first > y->first;
}

static bool overlaps(const buffer *a, const buffer *b) {
    return a->first <= b->last && b->first <= a->last;
}

/* The lowest aligned offset where b fits beside the already placed buffers it meets. */
static int64_t first_fit(const buffer *placed, int n, const buffer *b) {
    int64_t off = 0;
    for (bool moved = true; moved;) {
        moved = false;
        for (int i = 0; i < n; i++)
            if (overlaps(&placed[i], b) && off < *placed[i].off + placed[i].bytes &&
                *placed[i].off < off + b->bytes) {
                off = round_up(*placed[i].off + placed[i].bytes);
                moved = true;
            }
    }
    return off;
}

/* Position in g->order of each value's last reader (the node that defines it if none). */
static int64_t *last_reads(const mc_graph *g) {
    int64_t *last = mc_arena_alloc(g->arena, sizeof(int64_t) * (size_t)(g->nvalues + 1));
    for (int pos = 0; pos < g->norder; pos++) {
        const mc_node *nd = mc_nod(g, g->order[pos]);
        for (int i = 0; i < nd->nin; i++)
            if (nd->in[i] >= 0) last[nd->in[i]] = pos;
    }
    for (int i = 0; i < g->nupdates; i++) /* copied into their params after the last node */
        last[g->update_src[i]] = g->norder;
    return last;
}

/* Whether update i (src <- dst's next value) can be written into dst's storage; pos:
 * each node's position in g->order. */
static bool update_in_place(const mc_graph *g, int i, const int64_t *last, const int64_t *pos) {
    int src = g->update_src[i], dst = g->update_dst[i];
    const mc_value *s = mc_val(g, src), *d = mc_val(g, dst);
    if (s->producer < 0 || s->is_output || d->is_output || d->kind != MC_VK_PARAM) return false;
    if (!(mc_op_infos[mc_nod(g, s->producer)->op].flags & MC_OPF_OPTIM)) return false;
    return last[dst] <= pos[s->producer]; /* the step reads element i before writing it */
}

static void plan_in_place(mc_graph *g, const int64_t *last) {
    int64_t *pos = filled(g, g->nnodes, -1);
    for (int k = 0; k < g->norder; k++)
        pos[g->order[k]] = k;
    for (int i = 0; i < g->nupdates; i++)
        if (update_in_place(g, i, last, pos))
            g->plan.value_in_place[g->update_src[i]] = g->update_dst[i];
}

static int collect(mc_graph *g, buffer *bufs, const int64_t *last) {
    mc_plan *p = &g->plan;
    int n = 0;
    for (int pos = 0; pos < g->norder; pos++) {
        int id = g->order[pos];
        const mc_node *nd = mc_nod(g, id);
        for (int j = 0; j < nd->nout; j++) {
            int v = nd->out[j];
            if (!in_arena(g, v)) continue;
            int64_t bytes = mc_shape_numel_max(g, &mc_val(g, v)->shape) *
                            (int64_t)mc_dtype_size(mc_val(g, v)->dt);
            int64_t end = last[v] > pos ? last[v] : pos;
            p->value_bytes[v] = round_up(bytes > 0 ? bytes : 1);
            bufs[n++] = (buffer){p->value_bytes[v], pos, end, &p->value_off[v]};
        }
        p->scratch_bytes[id] = mb_scratch_bytes(g, nd);
        if (p->scratch_bytes[id] > 0)
            bufs[n++] = (buffer){round_up(p->scratch_bytes[id]), pos, pos, &p->scratch_off[id]};
    }
    return n;
}

bool mc_pass_plan_memory(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    (void)cx;
    mc_plan *p = &g->plan;
    *p = (mc_plan){.value_off = filled(g, g->nvalues, -1),
                   .value_bytes = filled(g, g->nvalues, 0),
                   .scratch_off = filled(g, g->nnodes, -1),
                   .scratch_bytes = filled(g, g->nnodes, 0),
                   .value_in_place =
                       mc_arena_alloc(g->arena, sizeof(int) * (size_t)(g->nvalues + 1))};
    for (int v = 0; v < g->nvalues; v++)
        p->value_in_place[v] = -1;
    const int64_t *last = last_reads(g);
    plan_in_place(g, last);
    buffer *bufs = mc_arena_alloc(g->arena, sizeof(buffer) * (size_t)(g->nvalues + g->nnodes + 1));
    int n = collect(g, bufs, last);
    qsort(bufs, (size_t)n, sizeof *bufs, by_size_desc);
    for (int i = 0; i < n; i++) {
        *bufs[i].off = first_fit(bufs, i, &bufs[i]);
        int64_t end = *bufs[i].off + bufs[i].bytes;
        p->peak = end > p->peak ? end : p->peak;
    }
    p->valid = true;
    *changed = false; /* the graph itself is as it was */
    return true;
}
