/* frontend/load_nodes.c: the "nodes" array. Outputs are defined first for every node
 * so that nodes may be listed in any order; then inputs are resolved, attributes are
 * checked against ir/attrs.def (defaults filled in), and the order made topological. */
#include "load.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static bool count_ok(ld_ctx *c, const cJSON *arr, const char *path, const char *what, int lo,
                     int hi, const char *op) {
    int n = cJSON_GetArraySize(arr);
    if (n >= lo && n <= hi) return true;
    if (lo == hi) return ld_fail(c, path, "%s takes %d %s, found %d", op, lo, what, n);
    if (hi >= MC_VARIADIC)
        return ld_fail(c, path, "%s takes at least %d %s, found %d", op, lo, what, n);
    return ld_fail(c, path, "%s takes %d to %d %s, found %d", op, lo, hi, what, n);
}

/* A node's name: its "name", or, as ONNX allows nodes without one, OP_INDEX (the op's
 * name and the node's position in "nodes"). */
static bool node_name(ld_ctx *c, const cJSON *jn, const char *path, int i, const char **out) {
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(jn, "name");
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(jn, "op");
    if (name && !cJSON_IsString(name))
        return ld_fail(c, ld_path(c, "%s/name", path),
                       "a node's \"name\" must be a string, found %s", ld_kind(name));
    if (name && *name->valuestring)
        *out = name->valuestring;
    else
        *out =
            mc_arena_printf(c->g->arena, "%s_%d", cJSON_IsString(op) ? op->valuestring : "node", i);
    return true;
}

/* Phase 1: the node itself and its output values. */
static bool define_node(ld_ctx *c, const cJSON *jn, int i) {
    const char *path = ld_path(c, "/nodes/%d", i), *name = NULL;
    if (!cJSON_IsObject(jn))
        return ld_fail(c, path, "a node must be an object, found %s", ld_kind(jn));
    if (!ld_check_keys(c, jn, path, "name|op|inputs|outputs|attrs|doc")) return false;
    if (!node_name(c, jn, path, i, &name)) return false;
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(jn, "op");
    if (!cJSON_IsString(op))
        return ld_fail(c, ld_path(c, "%s/op", path), "node '%s' needs an \"op\" string, found %s",
                       name, ld_kind(op));
    mc_op o;
    if (!mc_op_from_name(op->valuestring, &o))
        return ld_fail(c, ld_path(c, "%s/op", path), "node '%s': unknown op \"%s\"", name,
                       op->valuestring);
    const char *tag = mc_arena_printf(c->g->arena, "(%s, %s)", name, mc_op_infos[o].name);
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(jn, "inputs");
    const cJSON *outs = cJSON_GetObjectItemCaseSensitive(jn, "outputs");
    const mc_op_info *info = &mc_op_infos[o];
    if (!cJSON_IsArray(ins))
        return ld_fail(c, ld_path(c, "%s/inputs %s", path, tag),
                       "\"inputs\" must be an array, found %s", ld_kind(ins));
    if (!cJSON_IsArray(outs))
        return ld_fail(c, ld_path(c, "%s/outputs %s", path, tag),
                       "\"outputs\" must be an array, found %s", ld_kind(outs));
    if (!count_ok(c, ins, ld_path(c, "%s/inputs %s", path, tag), "inputs", info->min_in,
                  info->max_in, info->name) ||
        !count_ok(c, outs, ld_path(c, "%s/outputs %s", path, tag), "outputs", info->min_out,
                  info->max_out, info->name))
        return false;
    int nout = cJSON_GetArraySize(outs), out[MC_VARIADIC];
    if (nout > MC_VARIADIC) return ld_fail(c, path, "too many outputs");
    int k = 0;
    for (const cJSON *o2 = outs->child; o2; o2 = o2->next, k++) {
        const char *opath = ld_path(c, "%s/outputs/%d %s", path, k, tag);
        if (!cJSON_IsString(o2) || !*o2->valuestring)
            return ld_fail(c, opath, "an output must be a non-empty name, found %s", ld_kind(o2));
        if (mc_graph_find_value(c->g, o2->valuestring) >= 0)
            return ld_fail(c, opath, "name \"%s\" is defined twice", o2->valuestring);
        out[k] = mc_graph_add_value(c->g, o2->valuestring, MC_DT_F32, MC_VK_TEMP);
    }
    int id = mc_graph_add_node(c->g, o, name, NULL, 0, out, nout);
    mc_nod(c->g, id)->src_index = i;
    return true;
}

/* Phase 2: inputs by name; "" marks an omitted optional input. */
static bool resolve_inputs(ld_ctx *c, const cJSON *jn, int id) {
    const mc_node *n = mc_nod(c->g, id);
    const cJSON *ins = cJSON_GetObjectItemCaseSensitive(jn, "inputs");
    int nin = cJSON_GetArraySize(ins), k = 0;
    int *in_ids = mc_arena_alloc(c->g->arena, sizeof(int) * (size_t)(nin ? nin : 1));
    for (const cJSON *in = ins->child; in; in = in->next, k++) {
        const char *sub = mc_arena_printf(c->g->arena, "inputs/%d", k);
        if (!cJSON_IsString(in))
            return mc_node_error(c->d, c->g, n, sub, "an input must be a value name, found %s",
                                 ld_kind(in));
        if (!*in->valuestring) {
            if (k < mc_op_infos[n->op].min_in)
                return mc_node_error(c->d, c->g, n, sub,
                                     "input %d is required and cannot be omitted", k);
            in_ids[k] = -1;
            continue;
        }
        int v = mc_graph_find_value(c->g, in->valuestring);
        if (v < 0)
            return mc_node_error(c->d, c->g, n, sub,
                                 "input \"%s\" is not defined by any node, input or initializer",
                                 in->valuestring);
        in_ids[k] = v;
    }
    mc_node_set_inputs(c->g, id, in_ids, nin);
    return true;
}

static const char *schema_names(ld_ctx *c, mc_op op) {
    const char *s = NULL;
    for (int i = 0; i < mc_num_attr_schemas; i++)
        if (mc_attr_schemas[i].op == op)
            s = s ? mc_arena_printf(c->g->arena, "%s, %s", s, mc_attr_schemas[i].name)
                  : mc_attr_schemas[i].name;
    return s ? s : "(none)";
}

static bool choice_ok(const char *choices, const char *v) {
    size_t n = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, v, n) == 0) return true;
        p = bar ? bar + 1 : p + len;
    }
    return false;
}

static bool number_list(ld_ctx *c, mc_node *n, const cJSON *j, const char *sub, bool ints,
                        const char *name) {
    if (!cJSON_IsArray(j))
        return mc_node_error(c->d, c->g, n, sub, "attribute %s must be a list of %s, found %s",
                             name, ints ? "integers" : "numbers", ld_kind(j));
    int len = cJSON_GetArraySize(j), k = 0;
    int64_t *iv = mc_arena_alloc(c->g->arena, sizeof(int64_t) * (size_t)(len + 1));
    double *fv = mc_arena_alloc(c->g->arena, sizeof(double) * (size_t)(len + 1));
    for (const cJSON *e = j->child; e; e = e->next, k++) {
        if (!cJSON_IsNumber(e) || (ints && e->valuedouble != floor(e->valuedouble)) ||
            !isfinite(e->valuedouble) || (ints && fabs(e->valuedouble) > 9.0e15))
            return mc_node_error(c->d, c->g, n, sub, "attribute %s element %d must be %s, found %s",
                                 name, k, ints ? "an integer" : "a finite number",
                                 cJSON_IsNumber(e) ? "a fraction" : ld_kind(e));
        iv[k] = (int64_t)e->valuedouble;
        fv[k] = e->valuedouble;
    }
    if (ints)
        mc_node_set_ints(c->g, n, name, iv, len);
    else
        mc_node_set_floats(c->g, n, name, fv, len);
    return true;
}

static bool load_attr(ld_ctx *c, mc_node *n, const cJSON *a) {
    const char *sub = mc_arena_printf(c->g->arena, "attrs/%s", a->string);
    const mc_attr_schema *s = mc_attr_schema_find(n->op, a->string);
    if (!s)
        return mc_node_error(c->d, c->g, n, sub, "unknown attribute \"%s\"; %s takes: %s",
                             a->string, mc_op_infos[n->op].name, schema_names(c, n->op));
    switch (s->kind) {
    case MC_AK_INT:
        if (cJSON_IsBool(a)) { /* ONNX's flags are integers; JSON's true and false read as 1, 0 */
            mc_node_set_int(c->g, n, a->string, cJSON_IsTrue(a) ? 1 : 0);
            return true;
        }
        if (!cJSON_IsNumber(a) || a->valuedouble != floor(a->valuedouble) ||
            fabs(a->valuedouble) > 9.0e15)
            return mc_node_error(
                c->d, c->g, n, sub, "attribute %s must be an integer, found %s", a->string,
                cJSON_IsNumber(a) ? mc_arena_printf(c->g->arena, "%g", a->valuedouble)
                                  : ld_kind(a));
        mc_node_set_int(c->g, n, a->string, (int64_t)a->valuedouble);
        return true;
    case MC_AK_FLOAT:
        if (!cJSON_IsNumber(a) || !isfinite(a->valuedouble))
            return mc_node_error(c->d, c->g, n, sub,
                                 "attribute %s must be a finite number, found %s", a->string,
                                 cJSON_IsNumber(a) ? "an infinite number" : ld_kind(a));
        mc_node_set_float(c->g, n, a->string, a->valuedouble);
        return true;
    case MC_AK_STRING:
        if (!cJSON_IsString(a))
            return mc_node_error(c->d, c->g, n, sub, "attribute %s must be a string, found %s",
                                 a->string, ld_kind(a));
        if (s->choices && !choice_ok(s->choices, a->valuestring)) {
            const char *list = "";
            for (const char *p = s->choices; *p;) {
                size_t len = strcspn(p, "|");
                list =
                    mc_arena_printf(c->g->arena, "%s%s%.*s", list, *list ? ", " : "", (int)len, p);
                p += len + (p[len] == '|');
            }
            return mc_node_error(c->d, c->g, n, sub, "%s is \"%s\" but must be one of: %s",
                                 a->string, a->valuestring, list);
        }
        mc_node_set_str(c->g, n, a->string, a->valuestring);
        return true;
    case MC_AK_INTS: return number_list(c, n, a, sub, true, a->string);
    case MC_AK_FLOATS: return number_list(c, n, a, sub, false, a->string);
    }
    return false;
}

static bool load_attrs(ld_ctx *c, const cJSON *jn, mc_node *n) {
    const cJSON *attrs = cJSON_GetObjectItemCaseSensitive(jn, "attrs");
    if (attrs && !cJSON_IsObject(attrs))
        return mc_node_error(c->d, c->g, n, "attrs", "\"attrs\" must be an object, found %s",
                             ld_kind(attrs));
    for (const cJSON *a = attrs ? attrs->child : NULL; a; a = a->next)
        if (!load_attr(c, n, a)) return false;
    for (int i = 0; i < mc_num_attr_schemas; i++) {
        const mc_attr_schema *s = &mc_attr_schemas[i];
        if (s->op == n->op && s->presence == MC_AP_REQ && !mc_attr_get(n, s->name))
            return mc_node_error(c->d, c->g, n, "attrs", "missing required attribute %s (%s)",
                                 s->name, mc_attr_kind_name(s->kind));
    }
    /* GW-MoE's mode left out: the compile mode's, so that the model type-checks as it
     * is compiled from the first pass on (docs/format.md). */
    bool gw = n->op == MC_OP_MOE_GW_ROUTE || n->op == MC_OP_MOE_GW_ROUTE_GRAD;
    if (gw && !mc_attr_get(n, "mode"))
        mc_node_set_str(c->g, n, "mode", c->g->training ? "train" : "infer");
    mc_node_fill_defaults(c->g, n);
    return true;
}

/* Follows unresolved producers from `start` until a node repeats: that node is on a
 * cycle. Returns "a -> b -> a". */
static const char *find_cycle(ld_ctx *c, int start, const bool *emitted, int *out_node) {
    int steps[64], nsteps = 0, cur = start;
    for (int guard = 0; guard < 4 * c->g->nnodes + 4; guard++) {
        for (int k = 0; k < nsteps; k++)
            if (steps[k] == cur) {
                const char *s = c->g->nodes[cur].name;
                for (int j = k + 1; j < nsteps; j++)
                    s = mc_arena_printf(c->g->arena, "%s <- %s", s, c->g->nodes[steps[j]].name);
                *out_node = cur;
                return mc_arena_printf(c->g->arena, "%s <- %s", s, c->g->nodes[cur].name);
            }
        if (nsteps == 64) memmove(steps, steps + 1, sizeof(int) * (size_t)--nsteps);
        steps[nsteps++] = cur;
        const mc_node *n = &c->g->nodes[cur];
        int next = -1;
        for (int i = 0; i < n->nin && next < 0; i++) {
            int p = n->in[i] >= 0 ? c->g->values[n->in[i]].producer : -1;
            if (p >= 0 && !emitted[p]) next = p;
        }
        if (next < 0) break;
        cur = next;
    }
    *out_node = start;
    return c->g->nodes[start].name;
}

static bool order_nodes(ld_ctx *c) {
    if (mc_graph_toposort(c->g)) return true;
    /* Kahn again to learn which nodes are stuck. */
    bool *emitted = mc_arena_alloc(c->g->arena, (size_t)c->g->nnodes + 1);
    for (bool progress = true; progress;) {
        progress = false;
        for (int k = 0; k < c->g->nnodes; k++) {
            if (emitted[k]) continue;
            const mc_node *n = &c->g->nodes[k];
            bool ready = true;
            for (int i = 0; i < n->nin; i++) {
                int p = n->in[i] >= 0 ? c->g->values[n->in[i]].producer : -1;
                ready &= p < 0 || emitted[p];
            }
            if (ready) emitted[k] = progress = true;
        }
    }
    for (int k = 0; k < c->g->nnodes; k++)
        if (!emitted[k]) {
            int on;
            const char *cyc = find_cycle(c, k, emitted, &on);
            return mc_node_error(c->d, c->g, &c->g->nodes[on], NULL,
                                 "the graph has a cycle: %s (each reads the output of the next)",
                                 cyc);
        }
    mc_die("toposort failed without a stuck node");
}

bool ld_nodes(ld_ctx *c, const cJSON *nodes) {
    int i = 0;
    for (const cJSON *jn = nodes->child; jn; jn = jn->next, i++)
        if (!define_node(c, jn, i)) return false;
    i = 0;
    for (const cJSON *jn = nodes->child; jn; jn = jn->next, i++) {
        mc_node *n = &c->g->nodes[i];
        if (!resolve_inputs(c, jn, i) || !load_attrs(c, jn, n)) return false;
    }
    return order_nodes(c);
}
