/* ir/printer.c: the stable text dump, one line per value declaration or node:
 *   %expert:i32[T,2], %weight:f32[T,2] = moe.TopKRoute(%logits) {k=2, ...}  # route
 * Attributes appear in schema order, every one of them; floats with %.9g. A temp
 * whose shape is not inferred yet prints as %v:?. docs/ir.md describes the format. */
#include "ir.h"

#include <string.h>

static void print_value_ref(FILE *f, const mc_graph *g, int id) {
    if (id < 0) {
        fputs("_", f);
        return;
    }
    fprintf(f, "%%%s", g->values[id].name);
}

static void print_typed(FILE *f, const mc_graph *g, int id) {
    const mc_value *v = &g->values[id];
    char buf[256];
    if (!v->has_shape)
        fprintf(f, "%%%s:?", v->name);
    else
        fprintf(f, "%%%s:%s%s", v->name, mc_dtype_name(v->dt),
                mc_shape_str(g, &v->shape, buf, sizeof buf));
}

static void print_attr(FILE *f, const mc_attr *a) {
    fprintf(f, "%s=", a->name);
    switch (a->kind) {
    case MC_AK_INT: fprintf(f, "%lld", (long long)a->i); return;
    case MC_AK_FLOAT: fprintf(f, "%.9g", a->f); return;
    case MC_AK_STRING: fprintf(f, "\"%s\"", a->s); return;
    case MC_AK_INTS:
        fputc('[', f);
        for (int i = 0; i < a->n; i++)
            fprintf(f, "%s%lld", i ? ", " : "", (long long)a->ints[i]);
        fputc(']', f);
        return;
    case MC_AK_FLOATS:
        fputc('[', f);
        for (int i = 0; i < a->n; i++)
            fprintf(f, "%s%.9g", i ? ", " : "", a->floats[i]);
        fputc(']', f);
        return;
    }
}

void mc_print_node(FILE *f, const mc_graph *g, const mc_node *n) {
    fputs("  ", f);
    for (int j = 0; j < n->nout; j++) {
        if (j) fputs(", ", f);
        print_typed(f, g, n->out[j]);
    }
    fprintf(f, " = %s(", mc_op_infos[n->op].name);
    for (int i = 0; i < n->nin; i++) {
        if (i) fputs(", ", f);
        print_value_ref(f, g, n->in[i]);
    }
    fputc(')', f);
    if (n->nattr) {
        fputs(" {", f);
        for (int i = 0; i < n->nattr; i++) {
            if (i) fputs(", ", f);
            print_attr(f, &n->attrs[i]);
        }
        fputc('}', f);
    }
    fprintf(f, "  # %s\n", n->name);
}

/* Up to 8 elements inline, else a count. */
static void print_data(FILE *f, const mc_value *v) {
    int64_t n = (int64_t)(v->nbytes / mc_dtype_size(v->dt));
    if (n > 8) {
        fprintf(f, "data <%lld elements>", (long long)n);
        return;
    }
    mc_tensor t = {.dt = v->dt, .numel = n};
    float fb[8];
    int64_t ib[8];
    t.f = mc_dtype_is_float(v->dt) ? fb : NULL;
    t.i = mc_dtype_is_float(v->dt) ? NULL : ib;
    mc_tensor_load_bytes(&t, v->data);
    fputs("data [", f);
    for (int64_t i = 0; i < n; i++)
        if (t.f)
            fprintf(f, "%s%.9g", i ? ", " : "", (double)fb[i]);
        else
            fprintf(f, "%s%lld", i ? ", " : "", (long long)ib[i]);
    fputc(']', f);
}

static void print_source(FILE *f, const mc_value *v) {
    switch (v->src) {
    case MC_SRC_INIT:
        if (strcmp(v->init.dist, "normal") == 0)
            fprintf(f, "init normal(mean=%.9g, std=%.9g, seed=%llu)", v->init.mean, v->init.std,
                    (unsigned long long)v->init.seed);
        else if (strcmp(v->init.dist, "uniform") == 0)
            fprintf(f, "init uniform(low=%.9g, high=%.9g, seed=%llu)", v->init.low, v->init.high,
                    (unsigned long long)v->init.seed);
        else
            fprintf(f, "init %s", v->init.dist);
        return;
    case MC_SRC_FILE: fprintf(f, "file \"%s\"", v->file_key); return;
    case MC_SRC_INLINE:
    case MC_SRC_FOLDED: print_data(f, v); return;
    case MC_SRC_NONE: fputs("no data", f); return;
    }
}

void mc_print_graph(FILE *f, const mc_graph *g) {
    fprintf(f, "graph %s mode=%s\n", g->name, g->training ? "train" : "infer");
    for (int s = 0; s < g->nsyms; s++)
        fprintf(f, "  symbol %s max=%lld\n", g->syms[s].name, (long long)g->syms[s].max);
    for (int i = 0; i < g->ninputs; i++) {
        fputs("  input ", f);
        print_typed(f, g, g->inputs[i]);
        fputc('\n', f);
    }
    for (int i = 0; i < g->nvalues; i++) {
        const mc_value *v = &g->values[i];
        if (v->dead || (v->kind != MC_VK_PARAM && v->kind != MC_VK_CONST)) continue;
        fprintf(f, "  %s ", v->kind == MC_VK_PARAM ? "param" : "const");
        print_typed(f, g, i);
        fputc(' ', f);
        print_source(f, v);
        fputc('\n', f);
    }
    for (int k = 0; k < g->norder; k++)
        mc_print_node(f, g, &g->nodes[g->order[k]]);
    for (int i = 0; i < g->noutputs; i++) {
        fputs("  output ", f);
        print_value_ref(f, g, g->outputs[i]);
        fputc('\n', f);
    }
}
