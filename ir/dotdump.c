/* ir/dotdump.c: the Graphviz dump (`moec dump --format=dot`). One box per node (op and
 * node name), one ellipse per graph input, param and const, one ellipse per graph
 * output; an edge per use, labelled with the value's name, dtype and shape. Ids come
 * from value and node ids and everything is emitted in id / order sequence, so the same
 * graph always prints the same bytes (dot files are diffed like text dumps). */
#include "ir.h"

/* A DOT string body: quotes and backslashes escaped. */
static void put_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
}

static const char *kind_word(mc_value_kind k) {
    switch (k) {
    case MC_VK_INPUT: return "input";
    case MC_VK_PARAM: return "param";
    case MC_VK_CONST: return "const";
    case MC_VK_TEMP: return "temp";
    }
    return "?";
}

/* Where an edge for value v starts: its producer's box, or its own ellipse. */
static void edge_source(FILE *f, const mc_graph *g, int v) {
    int p = g->values[v].producer;
    if (p >= 0)
        fprintf(f, "n%d", p);
    else
        fprintf(f, "v%d", v);
}

static void edge(FILE *f, const mc_graph *g, int v, const char *to) {
    const mc_value *val = &g->values[v];
    fputs("  ", f);
    edge_source(f, g, v);
    fprintf(f, " -> %s [label=\"", to);
    put_escaped(f, val->name);
    if (val->has_shape) {
        char buf[512];
        fprintf(f, "\\n%s", mc_dtype_name(val->dt));
        put_escaped(f, mc_shape_str(g, &val->shape, buf, sizeof buf));
    } else {
        fputs("\\n?", f);
    }
    fputs("\"];\n", f);
}

/* Ellipses for every live value that no node produces. */
static void print_sources(FILE *f, const mc_graph *g) {
    for (int i = 0; i < g->nvalues; i++) {
        const mc_value *v = &g->values[i];
        if (v->dead || v->producer >= 0 || v->kind == MC_VK_TEMP) continue;
        fprintf(f, "  v%d [shape=ellipse, label=\"%s ", i, kind_word(v->kind));
        put_escaped(f, v->name);
        fputs("\"];\n", f);
    }
}

static void print_nodes(FILE *f, const mc_graph *g) {
    for (int k = 0; k < g->norder; k++) {
        int id = g->order[k];
        const mc_node *n = &g->nodes[id];
        fprintf(f, "  n%d [shape=box, label=\"", id);
        put_escaped(f, mc_op_infos[n->op].name);
        fputs("\\n", f);
        put_escaped(f, n->name);
        fputs("\"];\n", f);
        char to[32];
        snprintf(to, sizeof to, "n%d", id);
        for (int i = 0; i < n->nin; i++)
            if (n->in[i] >= 0) edge(f, g, n->in[i], to);
    }
}

void mc_print_dot(FILE *f, const mc_graph *g) {
    fputs("digraph \"", f);
    put_escaped(f, g->name);
    fputs("\" {\n  rankdir=TB;\n  node [fontname=\"monospace\"];\n", f);
    print_sources(f, g);
    print_nodes(f, g);
    for (int i = 0; i < g->noutputs; i++) {
        fprintf(f, "  out%d [shape=ellipse, label=\"output ", i);
        put_escaped(f, g->values[g->outputs[i]].name);
        fputs("\"];\n", f);
        char to[32];
        snprintf(to, sizeof to, "out%d", i);
        edge(f, g, g->outputs[i], to);
    }
    fputs("}\n", f);
}
