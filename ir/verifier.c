/* ir/verifier.c: mc_verify checks what every pass must keep true: ids and producers
 * consistent, g->order topological, arity and attributes as the op table says, and
 * recorded shapes equal to what shape inference derives again. */
#include "ir.h"

#include <string.h>

static bool attrs_ok(const mc_graph *g, const mc_node *n, mc_diag *d) {
    for (int i = 0; i < n->nattr; i++) {
        const mc_attr_schema *s = mc_attr_schema_find(n->op, n->attrs[i].name);
        if (!s)
            return mc_node_error(d, g, n, NULL, "verify: unknown attribute %s", n->attrs[i].name);
        if (s->kind != n->attrs[i].kind)
            return mc_node_error(d, g, n, NULL, "verify: attribute %s is not a %s", s->name,
                                 mc_attr_kind_name(s->kind));
    }
    for (int i = 0; i < mc_num_attr_schemas; i++) {
        const mc_attr_schema *s = &mc_attr_schemas[i];
        if (s->op == n->op && s->presence != MC_AP_OPT && !mc_attr_get(n, s->name))
            return mc_node_error(d, g, n, NULL, "verify: attribute %s is missing", s->name);
    }
    return true;
}

static bool inputs_ok(const mc_graph *g, const mc_node *n, const bool *done, mc_diag *d) {
    const mc_op_info *info = &mc_op_infos[n->op];
    if (n->nin < info->min_in || n->nin > info->max_in || n->nout < info->min_out ||
        n->nout > info->max_out)
        return mc_node_error(d, g, n, NULL, "verify: wrong number of inputs or outputs for %s",
                             info->name);
    for (int i = 0; i < n->nin; i++) {
        int v = n->in[i];
        if (v < 0) {
            if (i < info->min_in)
                return mc_node_error(d, g, n, NULL, "verify: required input %d is missing", i);
            continue;
        }
        if (v >= g->nvalues || g->values[v].dead)
            return mc_node_error(d, g, n, NULL, "verify: input %d is not a live value", i);
        const mc_value *val = &g->values[v];
        if (!val->has_shape)
            return mc_node_error(d, g, n, NULL, "verify: input %%%s has no shape", val->name);
        if (val->kind == MC_VK_TEMP && (val->producer < 0 || !done[val->producer]))
            return mc_node_error(d, g, n, NULL, "verify: input %%%s is used before it is produced",
                                 val->name);
    }
    return true;
}

/* Re-infers the node's outputs and compares with what is recorded; restores them. */
static bool shapes_ok(mc_graph *g, int id, mc_diag *d) {
    mc_node *n = &g->nodes[id];
    mc_value saved[64];
    int nout = n->nout < 64 ? n->nout : 64;
    for (int j = 0; j < nout; j++)
        saved[j] = g->values[n->out[j]];
    bool ok = mc_infer_node(g, id, d);
    for (int j = 0; ok && j < nout; j++) {
        mc_value *v = &g->values[n->out[j]];
        if (!saved[j].has_shape || v->dt != saved[j].dt ||
            !mc_shape_eq(&v->shape, &saved[j].shape)) {
            char have[128], want[128];
            mc_shape_str(g, &saved[j].shape, have, sizeof have);
            mc_shape_str(g, &v->shape, want, sizeof want);
            ok = mc_node_error(d, g, n, NULL, "verify: %%%s is %s%s but %s infers %s%s", v->name,
                               mc_dtype_name(saved[j].dt), have, mc_op_infos[n->op].name,
                               mc_dtype_name(v->dt), want);
        }
    }
    for (int j = 0; j < nout; j++)
        g->values[n->out[j]] = saved[j];
    return ok;
}

static bool outputs_ok(const mc_graph *g, int id, mc_diag *d) {
    const mc_node *n = &g->nodes[id];
    for (int j = 0; j < n->nout; j++) {
        int v = n->out[j];
        if (v < 0 || v >= g->nvalues || g->values[v].dead || g->values[v].producer != id ||
            g->values[v].kind != MC_VK_TEMP)
            return mc_node_error(d, g, n, NULL,
                                 "verify: output %d is not a temp produced by this node", j);
    }
    return true;
}

/* Every value's use list names exactly the live node inputs that read it: each entry
 * points at a live node slot holding the value, and the entries add up to all inputs. */
static bool uses_ok(const mc_graph *g, mc_diag *d) {
    int64_t listed = 0, read = 0;
    for (int v = 0; v < g->nvalues; v++) {
        const mc_value *x = &g->values[v];
        for (int i = 0; i < x->nuses; i++) {
            mc_use u = x->uses[i];
            if (u.node < 0 || u.node >= g->nnodes || g->nodes[u.node].dead ||
                u.slot >= g->nodes[u.node].nin || g->nodes[u.node].in[u.slot] != v)
                return mc_error(d, NULL, "verify: the use list of %%%s names a node input "
                                "that does not read it", x->name);
        }
        listed += x->nuses;
    }
    for (int k = 0; k < g->norder; k++) {
        const mc_node *n = &g->nodes[g->order[k]];
        for (int i = 0; i < n->nin; i++)
            read += n->in[i] >= 0;
    }
    if (listed != read)
        return mc_error(d, NULL, "verify: use lists hold %lld reads but nodes make %lld",
                        (long long)listed, (long long)read);
    return true;
}

bool mc_verify(mc_graph *g, mc_diag *d) {
    bool *done = mc_alloc((size_t)g->nnodes + 1);
    if (!done) mc_oom((size_t)g->nnodes);
    memset(done, 0, (size_t)g->nnodes + 1);
    bool ok = true;
    for (int k = 0; ok && k < g->norder; k++) {
        int id = g->order[k];
        const mc_node *n = &g->nodes[id];
        if (id < 0 || id >= g->nnodes || n->dead || done[id]) {
            ok = mc_error(d, NULL, "verify: the node order lists a dead or repeated node");
            break;
        }
        ok = inputs_ok(g, n, done, d) && outputs_ok(g, id, d) && attrs_ok(g, n, d) &&
             shapes_ok(g, id, d);
        done[id] = true;
    }
    ok = ok && uses_ok(g, d);
    for (int i = 0; ok && i < g->noutputs; i++) {
        const mc_value *v = &g->values[g->outputs[i]];
        if (v->dead || (v->kind == MC_VK_TEMP && (v->producer < 0 || !done[v->producer])))
            ok = mc_error(d, NULL, "verify: graph output %%%s is not produced", v->name);
    }
    for (int i = 0; ok && i < g->nupdates; i++) {
        const mc_value *s = mc_val(g, g->update_src[i]), *t = mc_val(g, g->update_dst[i]);
        if (s->dead || t->dead || t->kind != MC_VK_PARAM || s->dt != t->dt ||
            !mc_shape_eq(&s->shape, &t->shape))
            ok = mc_error(d, NULL,
                          "verify: update %%%s <- %%%s needs a live param of the same "
                          "dtype and shape",
                          t->name, s->name);
    }
    mc_free(done);
    return ok;
}
