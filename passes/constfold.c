/* fold-constants: a node whose inputs are all known at compile time is run once by the
 * reference interpreter (mc_interp_node) and its outputs become constants
 * (MC_VK_CONST, src MC_SRC_FOLDED, bytes in the graph arena), keeping their names and
 * ids so that users and graph outputs need no rewiring. Known means a const, or in
 * inference a param too (weights are fixed then); in training params change every step
 * and are never folded. Nodes without any data input are left alone, and so are results
 * above 16 MiB, so folding never trades a small model for a huge one. One walk in
 * order suffices: a folded output is a const for the nodes after it.
 * needs: shapes    keeps: shapes, verify    breaks: nothing */
#include "passes.h"

#include <string.h>

#define FOLD_LIMIT_BYTES ((int64_t)16 << 20)

static bool fixed_shape(const mc_shape *s) {
    for (int i = 0; i < s->rank; i++)
        if (s->d[i].sym >= 0) return false;
    return true;
}

static bool known(const mc_value *v, bool training) {
    bool kind_ok = v->kind == MC_VK_CONST || (v->kind == MC_VK_PARAM && !training);
    return kind_ok && v->has_shape && fixed_shape(&v->shape) && (v->data || v->nbytes == 0);
}

static bool foldable(const mc_graph *g, const mc_node *n, bool training) {
    int present = 0;
    for (int i = 0; i < n->nin; i++) {
        if (n->in[i] < 0) continue;
        if (!known(mc_val(g, n->in[i]), training)) return false;
        present++;
    }
    if (present == 0) return false;
    int64_t bytes = 0;
    for (int j = 0; j < n->nout; j++) {
        const mc_value *v = mc_val(g, n->out[j]);
        if (!v->has_shape || !fixed_shape(&v->shape)) return false;
        int64_t numel = mc_shape_numel(&v->shape, NULL);
        if (numel < 0) return false;
        bytes += numel * (int64_t)mc_dtype_size(v->dt);
        if (bytes > FOLD_LIMIT_BYTES) return false;
    }
    return true;
}

static bool load(const mc_graph *g, int id, mc_tensor *t, mc_diag *d) {
    const mc_value *v = mc_val(g, id);
    int64_t dims[MC_MAX_RANK];
    mc_shape_eval(&v->shape, NULL, dims);
    if (!mc_tensor_alloc(t, v->dt, v->shape.rank, dims, d, v->name)) return false;
    if (t->numel > 0) mc_tensor_load_bytes(t, v->data);
    return true;
}

/* Output value `id` becomes a folded const holding tensor t. */
static void make_const(mc_graph *g, int id, const mc_tensor *t) {
    mc_value *v = mc_val(g, id);
    v->nbytes = (size_t)t->numel * mc_dtype_size(v->dt);
    void *bytes = mc_arena_alloc(g->arena, v->nbytes ? v->nbytes : 1);
    mc_tensor_store_bytes(t, bytes);
    v->data = bytes;
    v->kind = MC_VK_CONST;
    v->src = MC_SRC_FOLDED;
    v->producer = -1;
}

/* Runs node `id` on its known inputs; on success its outputs are consts and it is gone.
 * An error here (say an index out of range) is certain to happen at run time too. */
static bool fold(mc_graph *g, int id, mc_diag *d) {
    const mc_node *n = mc_nod(g, id);
    size_t nin = (size_t)n->nin + 1, nout = (size_t)n->nout + 1;
    mc_tensor *ins = mc_alloc(sizeof(mc_tensor) * nin), *outs = mc_alloc(sizeof(mc_tensor) * nout);
    const mc_tensor **inp = mc_alloc(sizeof(mc_tensor *) * nin);
    if (!ins || !outs || !inp) mc_oom(sizeof(mc_tensor) * (nin + nout));
    memset(ins, 0, sizeof(mc_tensor) * nin);
    int64_t symvals[MC_MAX_SYMS] = {0}; /* no dim here uses a symbol */
    bool ok = true;
    for (int i = 0; i < n->nin; i++) {
        inp[i] = NULL;
        if (ok && n->in[i] >= 0) {
            ok = load(g, n->in[i], &ins[i], d);
            inp[i] = &ins[i];
        }
    }
    ok = ok && mc_interp_node(g, n, symvals, inp, outs, d);
    for (int j = 0; ok && j < n->nout; j++) {
        make_const(g, n->out[j], &outs[j]);
        mc_tensor_free(&outs[j]);
    }
    for (int i = 0; i < n->nin; i++)
        mc_tensor_free(&ins[i]);
    mc_free(ins);
    mc_free(outs);
    mc_free(inp);
    if (ok) mc_graph_remove_node(g, id);
    return ok;
}

bool mc_pass_fold_constants(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    for (int k = 0; k < g->norder;) {
        int id = g->order[k];
        if (!foldable(g, mc_nod(g, id), cx->training)) {
            k++;
            continue;
        }
        if (!fold(g, id, cx->d)) return false;
        *changed = true; /* the node left g->order: position k now holds the next one */
    }
    return true;
}
