/* backend/plan.c: the static memory plan. Every temp value (and every node's scratch)
 * gets a byte offset in one arena, sized with all symbols at their max. Buffers whose
 * lifetimes (first definition to last use, in node order) overlap never share bytes;
 * placement is first-fit in order of decreasing size, which keeps the peak close to the
 * largest set of simultaneously live buffers on MoE graphs. */
#include "internal.h"

#include <stdlib.h>

enum { ALIGN = 64 };

typedef struct {
    int64_t bytes, first, last; /* lifetime in positions of g->order */
    int64_t *off;               /* where to write the placement */
} buffer;

static int64_t round_up(int64_t n) {
    return (n + ALIGN - 1) / ALIGN * ALIGN;
}

static bool in_arena(const mc_graph *g, int v) {
    const mc_value *x = mc_val(g, v);
    return !x->dead && x->kind == MC_VK_TEMP && !x->is_output && x->producer >= 0;
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

static int collect(const mc_graph *g, mb_plan *p, buffer *bufs) {
    int n = 0;
    int64_t *last = mc_arena_alloc(g->arena, sizeof(int64_t) * (size_t)g->nvalues);
    for (int pos = 0; pos < g->norder; pos++) {
        const mc_node *nd = mc_nod(g, g->order[pos]);
        for (int i = 0; i < nd->nin; i++)
            if (nd->in[i] >= 0) last[nd->in[i]] = pos;
    }
    for (int i = 0; i < g->nupdates; i++) /* copied into their params after the last node */
        last[g->update_src[i]] = g->norder;
    for (int pos = 0; pos < g->norder; pos++) {
        int id = g->order[pos];
        const mc_node *nd = mc_nod(g, id);
        for (int j = 0; j < nd->nout; j++) {
            int v = nd->out[j];
            if (!in_arena(g, v)) continue;
            int64_t bytes = mc_shape_numel_max(g, &mc_val(g, v)->shape) *
                            (int64_t)mc_dtype_size(mc_val(g, v)->dt);
            int64_t end = last[v] > pos ? last[v] : pos;
            bufs[n++] = (buffer){round_up(bytes > 0 ? bytes : 1), pos, end, &p->value_off[v]};
        }
        p->scratch_bytes[id] = mb_scratch_bytes(g, nd);
        if (p->scratch_bytes[id] > 0)
            bufs[n++] = (buffer){round_up(p->scratch_bytes[id]), pos, pos, &p->scratch_off[id]};
    }
    return n;
}

void mb_plan_build(const mc_graph *g, mb_plan *p) {
    p->value_off = mc_arena_alloc(g->arena, sizeof(int64_t) * (size_t)g->nvalues);
    p->scratch_off = mc_arena_alloc(g->arena, sizeof(int64_t) * (size_t)g->nnodes);
    p->scratch_bytes = mc_arena_alloc(g->arena, sizeof(int64_t) * (size_t)g->nnodes);
    for (int v = 0; v < g->nvalues; v++)
        p->value_off[v] = -1;
    for (int i = 0; i < g->nnodes; i++)
        p->scratch_off[i] = -1;
    size_t cap = (size_t)g->nvalues + (size_t)g->nnodes + 1;
    buffer *bufs = mc_arena_alloc(g->arena, sizeof(buffer) * cap);
    int n = collect(g, p, bufs);
    qsort(bufs, (size_t)n, sizeof *bufs, by_size_desc);
    p->peak = 0;
    for (int i = 0; i < n; i++) {
        *bufs[i].off = first_fit(bufs, i, &bufs[i]);
        int64_t end = *bufs[i].off + bufs[i].bytes;
        p->peak = end > p->peak ? end : p->peak;
    }
}
