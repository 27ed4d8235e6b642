/* ir/printer.c: the text dump of a graph, stable and diff-friendly, one line per
 * declaration or node. Golden tests and `moec dump` compare it byte for byte, so every
 * choice here is part of the format documented in docs/ir.md:
 *
 *   graph NAME mode=infer|train
 *     symbol T max=4096
 *     input %x:f32[T,768]
 *     param %w:f32[768,8] init normal(mean=0, std=0.02, seed=7)
 *     const %c:f32[2] data [0.5, 0.5]
 *     %y:f32[T,8] = MatMul(%x, %w)  # name
 *     output %y
 *
 * A temp whose shape is not inferred yet prints as `%v:?` (its dtype is not known
 * either, so nothing is shown for it). Omitted optional inputs print as `_`. */
#include "ir.h"

#include <stdlib.h>
#include <string.h>

enum { MAX_INLINE_ELEMS = 8 }; /* more than this: "data <N elements>" */

/* "text" with \" \\ and control characters escaped, so a line stays one line. */
static void print_quoted(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(f, "\\x%02x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static void print_ref(FILE *f, const mc_graph *g, int id) {
    if (id < 0)
        fputc('_', f);
    else
        fprintf(f, "%%%s", g->values[id].name);
}

/* %name:dtype[dims], or %name:? before shape inference. */
static void print_typed(FILE *f, const mc_graph *g, int id) {
    const mc_value *v = &g->values[id];
    if (!v->has_shape) {
        fprintf(f, "%%%s:?", v->name);
        return;
    }
    char buf[512];
    fprintf(f, "%%%s:%s%s", v->name, mc_dtype_name(v->dt),
            mc_shape_str(g, &v->shape, buf, sizeof buf));
}

static void print_attr(FILE *f, const mc_attr *a) {
    fprintf(f, "%s=", a->name);
    switch (a->kind) {
    case MC_AK_INT: fprintf(f, "%lld", (long long)a->i); return;
    case MC_AK_FLOAT: fprintf(f, "%.9g", a->f); return;
    case MC_AK_STRING: print_quoted(f, a->s); return;
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
        print_ref(f, g, n->in[i]);
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
    if (n->name && *n->name) fprintf(f, "  # %s", n->name);
    fputc('\n', f);
}

/* The shortest decimal that reads back as the same float: the bytes are floats, and
 * "1e-05" says what the model author wrote where %.9g would say 9.99999975e-06. */
static void print_float_elem(FILE *f, float x) {
    char buf[32];
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)x);
        if (strtof(buf, NULL) == x || x != x) break;
    }
    fputs(buf, f);
}

/* Up to MAX_INLINE_ELEMS elements inline, else a count. */
static void print_data(FILE *f, const mc_value *v) {
    int64_t n = mc_shape_numel(&v->shape, NULL);
    if (n > MAX_INLINE_ELEMS || (n > 0 && !v->data) || mc_dtype_is_quant(v->dt)) {
        fprintf(f, "data <%lld elements>", (long long)n);
        return;
    }
    mc_real fb[MAX_INLINE_ELEMS]; /* initializer bytes: every value is a float */
    int64_t ib[MAX_INLINE_ELEMS];
    bool is_float = mc_dtype_is_float(v->dt);
    mc_tensor t = {.dt = v->dt, .rank = 1, .dims = {n}, .numel = n};
    t.f = is_float ? fb : NULL;
    t.i = is_float ? NULL : ib;
    if (n > 0) mc_tensor_load_bytes(&t, v->data);
    fputs("data [", f);
    for (int64_t i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        if (is_float)
            print_float_elem(f, (float)fb[i]);
        else
            fprintf(f, "%lld", (long long)ib[i]);
    }
    fputc(']', f);
}

static void print_source(FILE *f, const mc_value *v) {
    const mc_init_recipe *r = &v->init;
    switch (v->src) {
    case MC_SRC_INIT:
        if (strcmp(r->dist, "normal") == 0)
            fprintf(f, "init normal(mean=%.9g, std=%.9g, seed=%llu)", r->mean, r->std,
                    (unsigned long long)r->seed);
        else if (strcmp(r->dist, "uniform") == 0)
            fprintf(f, "init uniform(low=%.9g, high=%.9g, seed=%llu)", r->low, r->high,
                    (unsigned long long)r->seed);
        else
            fprintf(f, "init %s", r->dist);
        return;
    case MC_SRC_FILE:
        fputs("file ", f);
        print_quoted(f, v->file_key ? v->file_key : v->name);
        return;
    case MC_SRC_INLINE:
    case MC_SRC_FOLDED: print_data(f, v); return;
    case MC_SRC_NONE: fputs("no data", f); return;
    }
}

/* A quantized param's group and the scale and zero-point arrays beside its values. */
static void print_quant(FILE *f, const mc_graph *g, const mc_value *v) {
    if (!mc_dtype_is_quant(v->dt)) return;
    char buf[512];
    mc_shape s = mc_quant_scale_shape(v);
    mc_shape_str(g, &s, buf, sizeof buf);
    fprintf(f, " group=%d scale f32%s", v->qgroup, buf);
    if (v->dt == MC_DT_Q4) fprintf(f, v->qzero ? " zero u8%s" : " zero 8", buf);
}

/* Params and consts in value-id order: declaration order first, folded ones after. */
static void print_initializers(FILE *f, const mc_graph *g) {
    for (int i = 0; i < g->nvalues; i++) {
        const mc_value *v = &g->values[i];
        if (v->dead || (v->kind != MC_VK_PARAM && v->kind != MC_VK_CONST)) continue;
        fprintf(f, "  %s ", v->kind == MC_VK_PARAM ? "param" : "const");
        print_typed(f, g, i);
        fputc(' ', f);
        print_source(f, v);
        print_quant(f, g, v);
        if (v->narrowed_from_f32) fputs(" (from f32: quantize-weights)", f);
        if (v->stored_narrow) fputs(" (declared f32, read as the file stores it)", f);
        fputc('\n', f);
    }
}

/* The memory plan, when one matches the graph: the peak, then every arena buffer in
 * node order (each node's outputs, then its kernel's scratch). */
static void print_plan(FILE *f, const mc_graph *g) {
    const mc_plan *p = &g->plan;
    if (!p->valid) return;
    fprintf(f, "  plan peak=%lld\n", (long long)p->peak);
    for (int k = 0; k < g->norder; k++) {
        const mc_node *n = &g->nodes[g->order[k]];
        for (int j = 0; j < n->nout; j++) {
            int v = n->out[j];
            if (p->value_in_place[v] >= 0) {
                fputs("  plan ", f);
                print_ref(f, g, v);
                fputs(" over ", f);
                print_ref(f, g, p->value_in_place[v]);
                fputc('\n', f);
            }
            if (p->value_off[v] < 0) continue;
            fputs("  plan ", f);
            print_ref(f, g, v);
            fprintf(f, " offset=%lld bytes=%lld\n", (long long)p->value_off[v],
                    (long long)p->value_bytes[v]);
        }
        if (p->scratch_off[g->order[k]] >= 0)
            fprintf(f, "  plan scratch of %s offset=%lld bytes=%lld\n", n->name,
                    (long long)p->scratch_off[g->order[k]],
                    (long long)p->scratch_bytes[g->order[k]]);
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
    print_initializers(f, g);
    for (int k = 0; k < g->norder; k++)
        mc_print_node(f, g, &g->nodes[g->order[k]]);
    for (int i = 0; i < g->noutputs; i++) {
        fputs("  output ", f);
        print_ref(f, g, g->outputs[i]);
        fputc('\n', f);
    }
    for (int i = 0; i < g->nupdates; i++) {
        fputs("  update ", f);
        print_ref(f, g, g->update_dst[i]);
        fputs(" <- ", f);
        print_ref(f, g, g->update_src[i]);
        fputc('\n', f);
    }
    print_plan(f, g);
}
