/* ir/eval.c: the reference interpreter's driver. Binds symbols from the inputs, loads
 * initializers, runs nodes in g->order, frees each temporary after its last use, and
 * hands the outputs back. Kernels are in eval_std.c, eval_tensor.c, eval_route.c and
 * eval_moe.c. */
#include "eval.h"

#include <stdio.h>
#include <string.h>

bool ev_fail(const mc_kernel_ctx *k, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return mc_node_error(k->d, k->g, k->n, NULL, "%s", msg);
}

int ev_axis(int64_t axis, int rank) {
    return (int)(axis < 0 ? axis + rank : axis);
}

int ev_ints(const mc_tensor *t, int64_t *out, int max) {
    int n = (int)(t->numel < max ? t->numel : max);
    for (int i = 0; i < n; i++)
        out[i] = t->i[i];
    return n;
}

void ev_split(const mc_tensor *t, int axis, int64_t *outer, int64_t *n, int64_t *inner) {
    *outer = *inner = 1;
    for (int i = 0; i < axis; i++)
        *outer *= t->dims[i];
    *n = t->dims[axis];
    for (int i = axis + 1; i < t->rank; i++)
        *inner *= t->dims[i];
}

void ev_bcast_init(ev_bcast *b, const mc_tensor *out, const mc_tensor *const *ins, int nin) {
    b->rank = out->rank;
    b->nin = nin;
    memcpy(b->dims, out->dims, sizeof b->dims);
    for (int k = 0; k < nin; k++) {
        int64_t stride = 1;
        for (int i = out->rank - 1; i >= 0; i--) {
            int j = i - (out->rank - ins[k]->rank);
            int64_t d = j >= 0 ? ins[k]->dims[j] : 1;
            b->strides[k][i] = d == 1 ? 0 : stride;
            stride *= d;
        }
    }
}

void ev_bcast_offsets(const ev_bcast *b, int64_t flat, int64_t *off) {
    for (int k = 0; k < b->nin; k++)
        off[k] = 0;
    for (int i = b->rank - 1; i >= 0; i--) {
        int64_t idx = flat % b->dims[i];
        flat /= b->dims[i];
        for (int k = 0; k < b->nin; k++)
            off[k] += idx * b->strides[k][i];
    }
}

/* ---- symbols ---- */

static bool bind_input(const mc_graph *g, const mc_value *v, const mc_tensor *t, int64_t *sv,
                       mc_diag *d) {
    char want[128];
    mc_shape_str(g, &v->shape, want, sizeof want);
    if (t->dt != v->dt)
        return mc_error(d, NULL, "input '%s' is %s but the model expects %s", v->name,
                        mc_dtype_name(t->dt), mc_dtype_name(v->dt));
    bool ok = t->rank == v->shape.rank;
    for (int i = 0; ok && i < t->rank; i++) {
        mc_dim dim = v->shape.d[i];
        if (dim.sym < 0) {
            ok = t->dims[i] == dim.c;
            continue;
        }
        const mc_symbol *s = &g->syms[dim.sym];
        int64_t val = t->dims[i] / dim.c;
        if (t->dims[i] % dim.c || val < 1)
            return mc_error(d, NULL,
                            "input '%s' dim %d is %lld, not a positive multiple of %lld (%s)",
                            v->name, i, (long long)t->dims[i], (long long)dim.c, want);
        if (val > s->max)
            return mc_error(d, NULL, "input '%s' dim %d gives %s = %lld but symbol %s has max %lld",
                            v->name, i, s->name, (long long)val, s->name, (long long)s->max);
        if (sv[dim.sym] >= 0 && sv[dim.sym] != val)
            return mc_error(d, NULL,
                            "input '%s' dim %d gives %s = %lld but an earlier input gave %lld",
                            v->name, i, s->name, (long long)val, (long long)sv[dim.sym]);
        sv[dim.sym] = val;
    }
    if (!ok) {
        char have[128] = "[";
        for (int i = 0; i < t->rank; i++)
            snprintf(have + strlen(have), sizeof have - strlen(have), "%s%lld", i ? "," : "",
                     (long long)t->dims[i]);
        strncat(have, "]", sizeof have - strlen(have) - 1);
        return mc_error(d, NULL, "input '%s' has shape %s but the model expects %s", v->name, have,
                        want);
    }
    return true;
}

bool mc_bind_symbols(const mc_graph *g, const mc_tensor *inputs, int64_t *out_symvals, mc_diag *d) {
    for (int s = 0; s < g->nsyms; s++)
        out_symvals[s] = -1;
    for (int i = 0; i < g->ninputs; i++)
        if (!bind_input(g, &g->values[g->inputs[i]], &inputs[i], out_symvals, d)) return false;
    for (int s = 0; s < g->nsyms; s++)
        if (out_symvals[s] < 0)
            return mc_error(d, NULL,
                            "symbol %s is not the dim of any input, so its value is unknown",
                            g->syms[s].name);
    return true;
}

/* ---- nodes ---- */

static bool run_kernel(const mc_kernel_ctx *k) {
    switch (k->n->op) {
#define OP(id, name, min_in, max_in, min_out, max_out, flags)                                      \
    case MC_OP_##id:                                                                               \
        return mc_interp_##id(k);
#include "ops.def"
#undef OP
    case MC_NUM_OPS: break;
    }
    mc_die("bad op %d", (int)k->n->op);
}

bool mc_interp_node(const mc_graph *g, const mc_node *n, const int64_t *symvals,
                    const mc_tensor *const *ins, mc_tensor *outs, mc_diag *d) {
    for (int j = 0; j < n->nout; j++) {
        const mc_value *v = &g->values[n->out[j]];
        MC_ASSERT(v->has_shape);
        int64_t dims[MC_MAX_RANK];
        mc_shape_eval(&v->shape, symvals, dims);
        const char *what = mc_arena_printf(g->arena, "value '%s'", v->name);
        if (!mc_tensor_alloc(&outs[j], v->dt, v->shape.rank, dims, d, what)) {
            for (int i = 0; i < j; i++)
                mc_tensor_free(&outs[i]);
            return false;
        }
    }
    mc_kernel_ctx k = {g, n, symvals, ins, outs, d};
    if (!run_kernel(&k)) {
        for (int j = 0; j < n->nout; j++)
            mc_tensor_free(&outs[j]);
        return false;
    }
    for (int j = 0; j < n->nout; j++)
        if (outs[j].dt == MC_DT_F16 || outs[j].dt == MC_DT_BF16)
            for (int64_t e = 0; e < outs[j].numel; e++)
                outs[j].f[e] = mc_round_to_dtype(outs[j].f[e], outs[j].dt);
    return true;
}

/* ---- the whole graph ---- */

typedef struct {
    mc_tensor *vals; /* by value id */
    bool *owned;     /* vals[i] is ours to free */
    int *last_use;   /* position in g->order of the last reader, -1 if none */
} run_state;

static bool load_initializer(const mc_graph *g, int id, run_state *st, mc_diag *d) {
    const mc_value *v = &g->values[id];
    int64_t dims[MC_MAX_RANK];
    mc_shape_eval(&v->shape, NULL, dims);
    if (!mc_tensor_alloc(&st->vals[id], mc_value_held_dtype(v), v->shape.rank, dims, d,
                         mc_arena_printf(g->arena, "initializer '%s'", v->name)))
        return false;
    st->owned[id] = true;
    mc_value_load(v, &st->vals[id]);
    return true;
}

static bool step(const mc_graph *g, int pos, const int64_t *sv, run_state *st, mc_diag *d) {
    const mc_node *n = &g->nodes[g->order[pos]];
    const mc_tensor *ins[MC_VARIADIC];
    mc_tensor outs[64];
    MC_ASSERT(n->nout <= 64 && n->nin <= MC_VARIADIC);
    for (int i = 0; i < n->nin; i++)
        ins[i] = n->in[i] >= 0 ? &st->vals[n->in[i]] : NULL;
    if (!mc_interp_node(g, n, sv, ins, outs, d)) return false;
    for (int j = 0; j < n->nout; j++) {
        st->vals[n->out[j]] = outs[j];
        st->owned[n->out[j]] = true;
    }
    for (int i = 0; i < n->nin; i++) {
        int v = n->in[i];
        if (v >= 0 && st->last_use[v] == pos && st->owned[v] && g->values[v].kind == MC_VK_TEMP) {
            mc_tensor_free(&st->vals[v]);
            st->owned[v] = false;
        }
    }
    return true;
}

static bool copy_tensor(const mc_tensor *src, mc_tensor *dst, mc_diag *d, const char *what) {
    if (!mc_tensor_alloc(dst, src->dt, src->rank, src->dims, d, what)) return false;
    if (src->f)
        memcpy(dst->f, src->f, sizeof(mc_real) * (size_t)src->numel);
    else
        memcpy(dst->i, src->i, sizeof(int64_t) * (size_t)src->numel);
    return true;
}

static bool run_all(const mc_graph *g, const mc_tensor *inputs, mc_tensor *outputs, run_state *st,
                    mc_diag *d) {
    int64_t sv[MC_MAX_SYMS];
    if (!mc_bind_symbols(g, inputs, sv, d)) return false;
    for (int i = 0; i < g->ninputs; i++)
        st->vals[g->inputs[i]] = inputs[i];
    for (int i = 0; i < g->nvalues; i++) {
        const mc_value *v = &g->values[i];
        if (!v->dead && (v->kind == MC_VK_PARAM || v->kind == MC_VK_CONST) &&
            !load_initializer(g, i, st, d))
            return false;
    }
    for (int k = 0; k < g->norder; k++) {
        const mc_node *n = &g->nodes[g->order[k]];
        for (int i = 0; i < n->nin; i++)
            if (n->in[i] >= 0) st->last_use[n->in[i]] = k;
    }
    for (int i = 0; i < g->noutputs; i++)
        st->last_use[g->outputs[i]] = g->norder; /* kept */
    for (int i = 0; i < g->nupdates; i++)
        st->last_use[g->update_src[i]] = g->norder; /* written back after the step */
    for (int k = 0; k < g->norder; k++)
        if (!step(g, k, sv, st, d)) return false;
    for (int i = 0; i < g->noutputs; i++)
        if (!copy_tensor(&st->vals[g->outputs[i]], &outputs[i], d, "an output")) {
            for (int j = 0; j < i; j++)
                mc_tensor_free(&outputs[j]);
            return false;
        }
    return true;
}

/* A training step's state writes: each updated param gets a writable copy of its bytes
 * (once) that the new value overwrites. */
static void apply_updates(mc_graph *g, const run_state *st) {
    for (int i = 0; i < g->nupdates; i++) {
        mc_value *p = &g->values[g->update_dst[i]];
        if (!p->rw) {
            p->rw = mc_arena_alloc(g->arena, p->nbytes ? p->nbytes : 1);
            memcpy(p->rw, p->data, p->nbytes);
            p->data = p->rw;
        }
        mc_tensor_store_bytes(&st->vals[g->update_src[i]], p->rw);
    }
}

static bool interp(const mc_graph *g, mc_graph *updated, const mc_tensor *inputs,
                   mc_tensor *outputs, mc_diag *d) {
    run_state st;
    size_t n = (size_t)g->nvalues + 1;
    st.vals = mc_alloc(n * sizeof *st.vals);
    st.owned = mc_alloc(n * sizeof *st.owned);
    st.last_use = mc_alloc(n * sizeof *st.last_use);
    bool ok = st.vals && st.owned && st.last_use;
    if (ok) {
        memset(st.vals, 0, n * sizeof *st.vals);
        memset(st.owned, 0, n * sizeof *st.owned);
        for (size_t i = 0; i < n; i++)
            st.last_use[i] = -1;
        ok = run_all(g, inputs, outputs, &st, d);
        if (ok && updated) apply_updates(updated, &st);
    } else {
        mc_error(d, NULL, "out of memory starting the interpreter");
    }
    for (int i = 0; st.owned && i < g->nvalues; i++)
        if (st.owned[i]) mc_tensor_free(&st.vals[i]);
    mc_free(st.vals);
    mc_free(st.owned);
    mc_free(st.last_use);
    return ok;
}

bool mc_interp_run(const mc_graph *g, const mc_tensor *inputs, mc_tensor *outputs, mc_diag *d) {
    return interp(g, NULL, inputs, outputs, d);
}

bool mc_interp_step(mc_graph *g, const mc_tensor *inputs, mc_tensor *outputs, mc_diag *d) {
    return interp(g, g, inputs, outputs, d);
}
