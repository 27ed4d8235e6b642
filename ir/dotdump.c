/* ir/dotdump.c: the Graphviz dump. Nodes are boxes (op and name), graph inputs and
 * initializers ellipses, edges carry the value's name, dtype and shape. */
#include "ir.h"

static void value_source(FILE *f, const mc_graph *g, int v) {
    int p = g->values[v].producer;
    if (p >= 0)
        fprintf(f, "n%d", p);
    else
        fprintf(f, "v%d", v);
}

static void edge(FILE *f, const mc_graph *g, int v, const char *to) {
    char buf[256] = "?";
    const mc_value *val = &g->values[v];
    if (val->has_shape) mc_shape_str(g, &val->shape, buf, sizeof buf);
    fputs("  ", f);
    value_source(f, g, v);
    fprintf(f, " -> %s [label=\"%s\\n%s%s\"];\n", to, val->name,
            val->has_shape ? mc_dtype_name(val->dt) : "", buf);
}

void mc_print_dot(FILE *f, const mc_graph *g) {
    fprintf(f, "digraph \"%s\" {\n  rankdir=TB;\n  node [fontname=\"monospace\"];\n", g->name);
    for (int i = 0; i < g->nvalues; i++) {
        const mc_value *v = &g->values[i];
        if (v->dead || v->kind == MC_VK_TEMP) continue;
        fprintf(f, "  v%d [shape=ellipse, label=\"%s %s\"];\n", i,
                v->kind == MC_VK_INPUT   ? "input"
                : v->kind == MC_VK_PARAM ? "param"
                                         : "const",
                v->name);
    }
    for (int k = 0; k < g->norder; k++) {
        int id = g->order[k];
        const mc_node *n = &g->nodes[id];
        fprintf(f, "  n%d [shape=box, label=\"%s\\n%s\"];\n", id, mc_op_infos[n->op].name, n->name);
        char to[32];
        snprintf(to, sizeof to, "n%d", id);
        for (int i = 0; i < n->nin; i++)
            if (n->in[i] >= 0) edge(f, g, n->in[i], to);
    }
    for (int i = 0; i < g->noutputs; i++) {
        fprintf(f, "  out%d [shape=ellipse, label=\"output %s\"];\n", i,
                g->values[g->outputs[i]].name);
        char to[32];
        snprintf(to, sizeof to, "out%d", i);
        edge(f, g, g->outputs[i], to);
    }
    fputs("}\n", f);
}
