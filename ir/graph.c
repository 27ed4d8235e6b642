/* ir/graph.c: building and editing graphs. Passes use these calls only, so the
 * invariants (producers set, order topological, attrs in schema order) live here. */
#include "ir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

mc_graph *mc_graph_new(const char *name) {
    mc_arena *a = mc_arena_new();
    mc_graph *g = mc_arena_alloc(a, sizeof *g);
    g->arena = a;
    g->name = mc_arena_strdup(a, name ? name : "model");
    g->file = "moec";
    return g;
}

void mc_graph_free(mc_graph *g) {
    if (g) mc_arena_free(g->arena);
}

/* Grows an arena array of `elem` bytes to hold one more; old copies are left behind. */
static void *grow(mc_arena *a, void *arr, int n, int *cap, size_t elem) {
    if (n < *cap) return arr;
    int ncap = *cap ? *cap * 2 : 16;
    void *p = mc_arena_alloc(a, (size_t)ncap * elem);
    if (n) memcpy(p, arr, (size_t)n * elem);
    *cap = ncap;
    return p;
}

int mc_graph_add_symbol(mc_graph *g, const char *name, int64_t max) {
    if (g->nsyms == MC_MAX_SYMS) return -1;
    g->syms[g->nsyms] = (mc_symbol){mc_arena_strdup(g->arena, name), max};
    return g->nsyms++;
}

int mc_graph_find_symbol(const mc_graph *g, const char *name) {
    for (int i = 0; i < g->nsyms; i++)
        if (strcmp(g->syms[i].name, name) == 0) return i;
    return -1;
}

int mc_graph_add_value(mc_graph *g, const char *name, mc_dtype dt, mc_value_kind kind) {
    g->values = grow(g->arena, g->values, g->nvalues, &g->cap_values, sizeof(mc_value));
    mc_value *v = &g->values[g->nvalues];
    memset(v, 0, sizeof *v);
    v->name = mc_arena_strdup(g->arena, name);
    v->dt = dt;
    v->kind = kind;
    v->producer = -1;
    v->src_index = -1;
    return g->nvalues++;
}

int mc_graph_find_value(const mc_graph *g, const char *name) {
    for (int i = 0; i < g->nvalues; i++)
        if (!g->values[i].dead && strcmp(g->values[i].name, name) == 0) return i;
    return -1;
}

const char *mc_graph_unique_name(mc_graph *g, const char *base) {
    if (mc_graph_find_value(g, base) < 0) return mc_arena_strdup(g->arena, base);
    for (int i = 1;; i++) {
        const char *s = mc_arena_printf(g->arena, "%s.%d", base, i);
        if (mc_graph_find_value(g, s) < 0) return s;
    }
}

/* ---- use lists ---- */

static void use_add(mc_graph *g, int value, int node, int slot) {
    mc_value *v = &g->values[value];
    v->uses = grow(g->arena, v->uses, v->nuses, &v->cap_uses, sizeof(mc_use));
    v->uses[v->nuses++] = (mc_use){node, slot};
}

static void use_drop(mc_graph *g, int value, int node, int slot) {
    mc_value *v = &g->values[value];
    for (int i = 0; i < v->nuses; i++)
        if (v->uses[i].node == node && v->uses[i].slot == slot) {
            v->uses[i] = v->uses[--v->nuses]; /* order of uses carries no meaning */
            return;
        }
    mc_die("value %%%s has no use by node %d input %d", v->name, node, slot);
}

void mc_node_set_input(mc_graph *g, int node, int slot, int value) {
    mc_node *n = &g->nodes[node];
    MC_ASSERT(slot >= 0 && slot < n->nin && value >= -1 && value < g->nvalues);
    if (n->in[slot] == value) return;
    g->plan.valid = false;
    if (n->in[slot] >= 0 && !n->dead) use_drop(g, n->in[slot], node, slot);
    n->in[slot] = value;
    if (value >= 0 && !n->dead) use_add(g, value, node, slot);
}

void mc_node_set_inputs(mc_graph *g, int node, const int *in, int nin) {
    mc_node *n = &g->nodes[node];
    for (int i = 0; i < n->nin; i++)
        mc_node_set_input(g, node, i, -1);
    n->in = mc_arena_alloc(g->arena, sizeof(int) * (size_t)(nin ? nin : 1));
    n->nin = nin;
    for (int i = 0; i < nin; i++) {
        n->in[i] = -1;
        mc_node_set_input(g, node, i, in[i]);
    }
}

int mc_value_single_user(const mc_graph *g, int value) {
    const mc_value *v = &g->values[value];
    int user = v->nuses ? v->uses[0].node : -1;
    for (int i = 1; i < v->nuses; i++)
        if (v->uses[i].node != user) return -1;
    return user;
}

bool mc_value_escapes(const mc_graph *g, int value) {
    if (g->values[value].is_output) return true;
    for (int i = 0; i < g->nupdates; i++)
        if (g->update_src[i] == value || g->update_dst[i] == value) return true;
    return false;
}

bool mc_weight_slot(mc_op op, int slot) {
    switch (op) {
    case MC_OP_MATMUL:
    case MC_OP_GEMM: return slot == 1;
    case MC_OP_MOE_EXPERT_MATMUL:
    case MC_OP_MOE_FUSED_DOWN_COMBINE:
    case MC_OP_MOE_FUSED_TOPK_DISPATCH:
    case MC_OP_MOE_FUSED_TOPP_DISPATCH:
    case MC_OP_MOE_FUSED_EXPERT_CHOICE_DISPATCH: return slot == 2;
    case MC_OP_MOE_GATHER_MATMUL: return slot == 3;
    case MC_OP_MOE_FUSED_UP: return slot == 1 || slot == 2;
    case MC_OP_MOE_MOE: return (slot >= 2 && slot <= 4) || (slot >= 6 && slot <= 8);
    default: return false;
    }
}

void mc_value_convert(mc_graph *g, mc_value *v, mc_dtype to) {
    enum { CHUNK = 1024 }; /* elements converted at a time, through a stack buffer */
    const void *from = v->data;
    mc_dtype from_dt = v->dt;
    int64_t n = mc_shape_numel(&v->shape, NULL);
    if (mc_dtype_is_quant(v->dt)) { /* through its dequantized weights */
        float *f32 = mc_arena_alloc(g->arena, sizeof(float) * (size_t)n + 1);
        mc_value_dequantize(v, f32);
        from = f32;
        from_dt = MC_DT_F32;
        v->qscale = NULL;
        v->qzero = NULL;
        v->qgroup = 0;
    }
    size_t from_size = mc_dtype_size(from_dt), to_size = mc_dtype_size(to);
    unsigned char *out = mc_arena_alloc(g->arena, (size_t)n * to_size + 1);
    mc_real buf[CHUNK];
    for (int64_t k0 = 0; k0 < n; k0 += CHUNK) {
        int64_t m = n - k0 < CHUNK ? n - k0 : CHUNK;
        mc_tensor t = {.dt = from_dt, .rank = 1, .dims = {m}, .numel = m, .f = buf};
        mc_tensor_load_bytes(&t, (const unsigned char *)from + (size_t)k0 * from_size);
        t.dt = to;
        mc_tensor_store_bytes(&t, out + (size_t)k0 * to_size);
    }
    v->data = out;
    v->nbytes = (size_t)n * to_size;
    v->dt = to;
}

static int new_node(mc_graph *g, mc_op op, const char *name, const int *in, int nin, const int *out,
                    int nout) {
    g->nodes = grow(g->arena, g->nodes, g->nnodes, &g->cap_nodes, sizeof(mc_node));
    int id = g->nnodes++;
    g->plan.valid = false;
    mc_node *n = &g->nodes[id];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->name = mc_arena_strdup(g->arena, name ? name : "");
    n->nin = nin;
    n->nout = nout;
    n->in = mc_arena_alloc(g->arena, sizeof(int) * (size_t)(nin ? nin : 1));
    n->out = mc_arena_alloc(g->arena, sizeof(int) * (size_t)(nout ? nout : 1));
    for (int i = 0; i < nin; i++)
        n->in[i] = -1;
    if (nout) memcpy(n->out, out, sizeof(int) * (size_t)nout);
    n->src_index = -1;
    for (int i = 0; i < nin; i++)
        mc_node_set_input(g, id, i, in[i]);
    mc_graph_set_producer(g, id);
    return id;
}

static void order_insert(mc_graph *g, int pos, int node) {
    g->order = grow(g->arena, g->order, g->norder, &g->cap_order, sizeof(int));
    memmove(&g->order[pos + 1], &g->order[pos], sizeof(int) * (size_t)(g->norder - pos));
    g->order[pos] = node;
    g->norder++;
}

static int order_index(const mc_graph *g, int node) {
    for (int i = 0; i < g->norder; i++)
        if (g->order[i] == node) return i;
    return -1;
}

int mc_graph_add_node(mc_graph *g, mc_op op, const char *name, const int *in, int nin,
                      const int *out, int nout) {
    int id = new_node(g, op, name, in, nin, out, nout);
    order_insert(g, g->norder, id);
    return id;
}

int mc_graph_add_node_before(mc_graph *g, int anchor, mc_op op, const char *name, const int *in,
                             int nin, const int *out, int nout) {
    int pos = order_index(g, anchor);
    MC_ASSERT(pos >= 0);
    int id = new_node(g, op, name, in, nin, out, nout);
    order_insert(g, pos, id);
    g->nodes[id].src_index = g->nodes[anchor].src_index;
    return id;
}

void mc_graph_remove_node(mc_graph *g, int node) {
    g->plan.valid = false;
    int pos = order_index(g, node);
    if (pos >= 0) {
        memmove(&g->order[pos], &g->order[pos + 1], sizeof(int) * (size_t)(g->norder - pos - 1));
        g->norder--;
    }
    mc_node *n = &g->nodes[node];
    for (int i = 0; i < n->nin; i++)
        if (n->in[i] >= 0 && !n->dead) use_drop(g, n->in[i], node, i);
    n->dead = true;
    for (int i = 0; i < n->nout; i++)
        if (g->values[n->out[i]].producer == node) g->values[n->out[i]].producer = -1;
}

/* Output and update lists are short: each change copies them into the arena. */
static int *grown(mc_graph *g, const int *old, int n) {
    int *a = mc_arena_alloc(g->arena, sizeof(int) * (size_t)(n + 1));
    for (int i = 0; i < n; i++)
        a[i] = old[i];
    return a;
}

void mc_graph_add_output(mc_graph *g, int value) {
    g->outputs = grown(g, g->outputs, g->noutputs);
    g->outputs[g->noutputs++] = value;
    g->values[value].is_output = true;
}

void mc_graph_remove_output(mc_graph *g, int index) {
    int v = g->outputs[index];
    for (int i = index; i + 1 < g->noutputs; i++)
        g->outputs[i] = g->outputs[i + 1];
    g->noutputs--;
    bool still = false;
    for (int i = 0; i < g->noutputs; i++)
        still |= g->outputs[i] == v;
    g->values[v].is_output = still;
}

void mc_graph_add_update(mc_graph *g, int src, int dst) {
    g->update_src = grown(g, g->update_src, g->nupdates);
    g->update_dst = grown(g, g->update_dst, g->nupdates);
    g->update_src[g->nupdates] = src;
    g->update_dst[g->nupdates++] = dst;
}

void mc_graph_add_grad(mc_graph *g, int param, int value) {
    g->grad_param = grown(g, g->grad_param, g->ngrads);
    g->grad_value = grown(g, g->grad_value, g->ngrads);
    g->grad_param[g->ngrads] = param;
    g->grad_value[g->ngrads++] = value;
}

void mc_graph_replace_uses(mc_graph *g, int from, int to) {
    while (g->values[from].nuses > 0) { /* each step drops one use of `from` */
        mc_use u = g->values[from].uses[g->values[from].nuses - 1];
        mc_node_set_input(g, u.node, u.slot, to);
    }
    for (int i = 0; i < g->noutputs; i++)
        if (g->outputs[i] == from) {
            g->outputs[i] = to;
            g->values[from].is_output = false;
            g->values[to].is_output = true;
        }
}

int mc_graph_count_uses(const mc_graph *g, int value) {
    int uses = g->values[value].nuses;
    for (int i = 0; i < g->noutputs; i++)
        uses += g->outputs[i] == value;
    return uses;
}

void mc_graph_set_producer(mc_graph *g, int node) {
    mc_node *n = &g->nodes[node];
    for (int i = 0; i < n->nout; i++)
        g->values[n->out[i]].producer = node;
}

int *mc_graph_order_copy(mc_graph *g, int *out_n) {
    int *order = mc_arena_alloc(g->arena, sizeof(int) * (size_t)(g->norder + 1));
    memcpy(order, g->order, sizeof(int) * (size_t)g->norder);
    *out_n = g->norder;
    return order;
}

/* Kahn's algorithm; among ready nodes the one earliest in the current order goes
 * first, so an already-topological order is kept as it is. */
bool mc_graph_toposort(mc_graph *g) {
    int n = g->norder;
    if (n == 0) return true;
    int *pending = mc_alloc(sizeof(int) * (size_t)n);
    int *out = mc_alloc(sizeof(int) * (size_t)n);
    bool *done = mc_alloc((size_t)g->nnodes);
    if (!pending || !out || !done) mc_oom(sizeof(int) * (size_t)n);
    memset(done, 0, (size_t)g->nnodes);
    for (int k = 0; k < n; k++) {
        const mc_node *nd = &g->nodes[g->order[k]];
        pending[k] = 0;
        for (int i = 0; i < nd->nin; i++) {
            int v = nd->in[i];
            if (v >= 0 && g->values[v].producer >= 0) pending[k]++;
        }
    }
    int emitted = 0;
    while (emitted < n) {
        int pick = -1;
        for (int k = 0; k < n && pick < 0; k++) {
            int id = g->order[k];
            if (done[id]) continue;
            int unresolved = 0;
            const mc_node *nd = &g->nodes[id];
            for (int i = 0; i < nd->nin; i++) {
                int v = nd->in[i];
                int p = v >= 0 ? g->values[v].producer : -1;
                if (p >= 0 && !done[p]) unresolved++;
            }
            if (unresolved == 0) pick = id;
        }
        if (pick < 0) break;
        done[pick] = true;
        out[emitted++] = pick;
    }
    bool ok = emitted == n;
    if (ok) memcpy(g->order, out, sizeof(int) * (size_t)n);
    mc_free(pending);
    mc_free(out);
    mc_free(done);
    return ok;
}

/* ---- attributes ---- */

const mc_attr *mc_attr_get(const mc_node *n, const char *name) {
    for (int i = 0; i < n->nattr; i++)
        if (strcmp(n->attrs[i].name, name) == 0) return &n->attrs[i];
    return NULL;
}

static const mc_attr *must_get(const mc_node *n, const char *name, mc_attr_kind kind) {
    const mc_attr *a = mc_attr_get(n, name);
    if (!a) mc_die("node '%s' (%s) has no attribute %s", n->name, mc_op_infos[n->op].name, name);
    if (a->kind != kind)
        mc_die("node '%s' attribute %s is %s, not %s", n->name, name, mc_attr_kind_name(a->kind),
               mc_attr_kind_name(kind));
    return a;
}

int64_t mc_attr_int(const mc_node *n, const char *name) {
    return must_get(n, name, MC_AK_INT)->i;
}
double mc_attr_float(const mc_node *n, const char *name) {
    return must_get(n, name, MC_AK_FLOAT)->f;
}
const char *mc_attr_str(const mc_node *n, const char *name) {
    return must_get(n, name, MC_AK_STRING)->s;
}

static int schema_rank(mc_op op, const char *name) {
    for (int i = 0; i < mc_num_attr_schemas; i++)
        if (mc_attr_schemas[i].op == op && strcmp(mc_attr_schemas[i].name, name) == 0) return i;
    return mc_num_attr_schemas;
}

/* Returns the slot for `name`, adding it in schema order if absent. */
static mc_attr *attr_slot(mc_graph *g, mc_node *n, const char *name, mc_attr_kind kind) {
    for (int i = 0; i < n->nattr; i++)
        if (strcmp(n->attrs[i].name, name) == 0) {
            n->attrs[i].kind = kind;
            return &n->attrs[i];
        }
    mc_attr *a = mc_arena_alloc(g->arena, sizeof(mc_attr) * (size_t)(n->nattr + 1));
    int rank = schema_rank(n->op, name), pos = 0;
    while (pos < n->nattr && schema_rank(n->op, n->attrs[pos].name) <= rank)
        pos++;
    if (n->nattr) {
        memcpy(a, n->attrs, sizeof(mc_attr) * (size_t)pos);
        memcpy(a + pos + 1, n->attrs + pos, sizeof(mc_attr) * (size_t)(n->nattr - pos));
    }
    n->attrs = a;
    n->nattr++;
    memset(&a[pos], 0, sizeof a[pos]);
    a[pos].name = mc_arena_strdup(g->arena, name);
    a[pos].kind = kind;
    return &a[pos];
}

void mc_node_set_int(mc_graph *g, mc_node *n, const char *name, int64_t v) {
    attr_slot(g, n, name, MC_AK_INT)->i = v;
}
void mc_node_set_float(mc_graph *g, mc_node *n, const char *name, double v) {
    attr_slot(g, n, name, MC_AK_FLOAT)->f = v;
}
void mc_node_set_str(mc_graph *g, mc_node *n, const char *name, const char *v) {
    attr_slot(g, n, name, MC_AK_STRING)->s = mc_arena_strdup(g->arena, v);
}
void mc_node_set_ints(mc_graph *g, mc_node *n, const char *name, const int64_t *v, int len) {
    mc_attr *a = attr_slot(g, n, name, MC_AK_INTS);
    a->n = len;
    a->ints = mc_arena_alloc(g->arena, sizeof(int64_t) * (size_t)(len ? len : 1));
    if (len) memcpy(a->ints, v, sizeof(int64_t) * (size_t)len);
}
void mc_node_set_floats(mc_graph *g, mc_node *n, const char *name, const double *v, int len) {
    mc_attr *a = attr_slot(g, n, name, MC_AK_FLOATS);
    a->n = len;
    a->floats = mc_arena_alloc(g->arena, sizeof(double) * (size_t)(len ? len : 1));
    if (len) memcpy(a->floats, v, sizeof(double) * (size_t)len);
}

void mc_node_fill_defaults(mc_graph *g, mc_node *n) {
    for (int i = 0; i < mc_num_attr_schemas; i++) {
        const mc_attr_schema *s = &mc_attr_schemas[i];
        if (s->op != n->op || s->presence != MC_AP_DEF || mc_attr_get(n, s->name)) continue;
        switch (s->kind) {
        case MC_AK_INT: mc_node_set_int(g, n, s->name, s->idef); break;
        case MC_AK_FLOAT: mc_node_set_float(g, n, s->name, s->fdef); break;
        case MC_AK_STRING: mc_node_set_str(g, n, s->name, s->sdef); break;
        case MC_AK_INTS: mc_node_set_ints(g, n, s->name, NULL, 0); break;
        case MC_AK_FLOATS: mc_node_set_floats(g, n, s->name, NULL, 0); break;
        }
    }
}

void mc_node_copy_attr(mc_graph *g, mc_node *dst, const mc_node *src, const char *name) {
    const mc_attr *a = mc_attr_get(src, name);
    MC_ASSERT(a);
    switch (a->kind) {
    case MC_AK_INT: mc_node_set_int(g, dst, name, a->i); break;
    case MC_AK_FLOAT: mc_node_set_float(g, dst, name, a->f); break;
    case MC_AK_STRING: mc_node_set_str(g, dst, name, a->s); break;
    case MC_AK_INTS: mc_node_set_ints(g, dst, name, a->ints, a->n); break;
    case MC_AK_FLOATS: mc_node_set_floats(g, dst, name, a->floats, a->n); break;
    }
}

/* ---- paths and node diagnostics ---- */

const char *mc_node_path(const mc_graph *g, const mc_node *n, const char *sub) {
    const char *tag = mc_arena_printf(g->arena, "(%s, %s)", n->name, mc_op_infos[n->op].name);
    if (n->src_index < 0) return tag;
    if (sub && *sub) return mc_arena_printf(g->arena, "/nodes/%d/%s %s", n->src_index, sub, tag);
    return mc_arena_printf(g->arena, "/nodes/%d %s", n->src_index, tag);
}

bool mc_node_error(mc_diag *d, const mc_graph *g, const mc_node *n, const char *sub,
                   const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    mc_verror(d, mc_node_path(g, n, sub), fmt, ap);
    va_end(ap);
    return false;
}

/* ---- shapes ---- */

bool mc_shape_eq(const mc_shape *a, const mc_shape *b) {
    if (a->rank != b->rank) return false;
    for (int i = 0; i < a->rank; i++)
        if (!mc_dim_eq(a->d[i], b->d[i])) return false;
    return true;
}

static int64_t numel_with(const mc_shape *s, const int64_t *symvals, const mc_graph *g) {
    int64_t n = 1;
    for (int i = 0; i < s->rank; i++) {
        int64_t v = s->d[i].c;
        if (s->d[i].sym >= 0) {
            int64_t sv = symvals ? symvals[s->d[i].sym] : g->syms[s->d[i].sym].max;
            if (sv != 0 && v > MC_MAX_DIM / sv) return -1;
            v *= sv;
        }
        if (v != 0 && n > MC_MAX_DIM / v) return -1;
        n *= v;
    }
    return n;
}

int64_t mc_shape_numel(const mc_shape *s, const int64_t *symvals) {
    return numel_with(s, symvals, NULL);
}

int64_t mc_shape_numel_max(const mc_graph *g, const mc_shape *s) {
    return numel_with(s, NULL, g);
}

void mc_shape_eval(const mc_shape *s, const int64_t *symvals, int64_t *out_dims) {
    for (int i = 0; i < s->rank; i++)
        out_dims[i] = s->d[i].c * (s->d[i].sym >= 0 ? symvals[s->d[i].sym] : 1);
}

const char *mc_shape_str(const mc_graph *g, const mc_shape *s, char *buf, size_t n) {
    size_t used = 0;
    used += (size_t)snprintf(buf + used, n - used, "[");
    for (int i = 0; i < s->rank && used < n; i++) {
        const mc_dim d = s->d[i];
        const char *sep = i ? "," : "";
        if (d.sym < 0)
            used += (size_t)snprintf(buf + used, n - used, "%s%lld", sep, (long long)d.c);
        else if (d.c == 1)
            used += (size_t)snprintf(buf + used, n - used, "%s%s", sep, g->syms[d.sym].name);
        else
            used += (size_t)snprintf(buf + used, n - used, "%s%s*%lld", sep, g->syms[d.sym].name,
                                     (long long)d.c);
    }
    if (used < n) snprintf(buf + used, n - used, "]");
    return buf;
}
