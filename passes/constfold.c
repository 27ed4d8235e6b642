/* fold-constants: a node whose inputs are all known at compile time (constants, and
 * in inference also parameters, which are fixed then) is run once by the reference
 * interpreter and its outputs become constants. Results above 16 MiB stay computed at
 * run time, so folding never trades a small model for a huge one.
 * needs: shapes    keeps: shapes, verify    breaks: nothing */
#include "passes.h"

#include <string.h>

enum { FOLD_LIMIT = 16 << 20 };

static bool known(const mc_value *v, bool training) {
    return v->data && (v->kind == MC_VK_CONST || (v->kind == MC_VK_PARAM && !training));
}

static bool foldable(const mc_graph *g, const mc_node *n, bool training) {
    int inputs = 0;
    for (int i = 0; i < n->nin; i++) {
        if (n->in[i] < 0) continue;
        if (!known(mc_val(g, n->in[i]), training)) return false;
        inputs++;
    }
    size_t bytes = 0;
    for (int j = 0; j < n->nout; j++) {
        const mc_value *v = mc_val(g, n->out[j]);
        for (int d = 0; d < v->shape.rank; d++)
            if (v->shape.d[d].sym >= 0) return false;
        bytes += (size_t)mc_shape_numel(&v->shape, NULL) * mc_dtype_size(v->dt);
    }
    return inputs > 0 && bytes <= FOLD_LIMIT;
}

static bool load(const mc_graph *g, int id, mc_tensor *t, mc_diag *d) {
    const mc_value *v = mc_val(g, id);
    int64_t dims[MC_MAX_RANK];
    mc_shape_eval(&v->shape, NULL, dims);
    if (!mc_tensor_alloc(t, v->dt, v->shape.rank, dims, d, v->name)) return false;
    mc_tensor_load_bytes(t, v->data);
    return true;
}

/* The output values become constants in place, keeping their names. */
static bool fold(mc_graph *g, int id, mc_diag *d) {
    mc_node *n = &g->nodes[id];
    mc_tensor ins[MC_MAX_RANK + 8], outs[64];
    const mc_tensor *inp[MC_MAX_RANK + 8];
    bool ok = n->nin <= MC_MAX_RANK + 8 && n->nout <= 64;
    int loaded = 0;
    for (int i = 0; ok && i < n->nin; i++, loaded++) {
        inp[i] = NULL;
        if (n->in[i] >= 0) ok = load(g, n->in[i], &ins[i], d), inp[i] = &ins[i];
    }
    ok = ok && mc_interp_node(g, n, NULL, inp, outs, d);
    for (int j = 0; ok && j < n->nout; j++) {
        mc_value *v = mc_val(g, n->out[j]);
        v->nbytes = (size_t)outs[j].numel * mc_dtype_size(v->dt);
        void *bytes = mc_arena_alloc(g->arena, v->nbytes);
        mc_tensor_store_bytes(&outs[j], bytes);
        mc_tensor_free(&outs[j]);
        v->data = bytes;
        v->kind = MC_VK_CONST;
        v->src = MC_SRC_FOLDED;
    }
    for (int i = 0; i < loaded; i++)
        if (inp[i]) mc_tensor_free(&ins[i]);
    if (ok) mc_graph_remove_node(g, id);
    return ok;
}

bool mc_pass_fold_constants(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    for (int k = 0; k < g->norder;) {
        int id = g->order[k];
        if (!foldable(g, &g->nodes[id], cx->training)) {
            k++;
            continue;
        }
        if (!fold(g, id, cx->d)) return false;
        *changed = true; /* the node left g->order: k now names the next one */
    }
    return true;
}
