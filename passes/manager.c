/* passes/manager.c: the pass list and the pass manager, plus the two passes that only
 * wrap an ir/ entry point (infer-shapes, verify).
 *
 * The table below is the default pipeline, in order, with one line per pass saying
 * what it needs, what it keeps and what it breaks (docs/ir.md repeats it). Adding a
 * pass is one row here plus its file. The manager parses `--passes`, runs each pass,
 * optionally verifies after each one (naming the pass that broke the graph) and dumps
 * after the requested ones, to a stream or to numbered files in a directory. */
#include "passes.h"

#include <errno.h>
#include <string.h>

/* ---- infer-shapes ----
 * infer-shapes: gives every value its dtype and shape by running each node's shape
 * inference in order (mc_infer_shapes in ir/). This is the pass that reports shape errors: a
 * model that loads but does not type-check fails here with the node and the field.
 * It reports a change only when some value's dtype or shape is new or different, so a
 * second run (or a run on an already inferred graph) changes nothing.
 * needs: a loaded graph    keeps: everything    breaks: nothing */
typedef struct {
    bool has_shape;
    mc_dtype dt;
    mc_shape shape;
} typing;

static bool same_typing(const typing *t, const mc_value *v) {
    return t->has_shape == v->has_shape &&
           (!v->has_shape || (t->dt == v->dt && mc_shape_eq(&t->shape, &v->shape)));
}

bool mc_pass_infer_shapes(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    typing *before = mc_alloc(sizeof(typing) * (size_t)(g->nvalues + 1));
    if (!before) mc_oom(sizeof(typing) * (size_t)(g->nvalues + 1));
    for (int i = 0; i < g->nvalues; i++)
        before[i] = (typing){g->values[i].has_shape, g->values[i].dt, g->values[i].shape};
    bool ok = mc_infer_shapes(g, cx->d);
    for (int i = 0; ok && i < g->nvalues && !*changed; i++)
        *changed = !same_typing(&before[i], &g->values[i]);
    mc_free(before);
    return ok;
}

/* ---- verify ----
 * verify: checks what every pass must keep true (mc_verify in ir/: ids and producers
 * consistent, order topological, arity and attributes as the op table says, recorded
 * shapes equal to re-inferred ones). As a pipeline step it lets `--after=verify` show
 * the graph a model really starts from; `--verify-each` runs the same check after every
 * pass instead.
 * needs: shapes    keeps: everything    breaks: nothing */
bool mc_pass_verify(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    return mc_verify(g, cx->d);
}

/* ---- the pipeline ---- */

static const mc_pass_info pipeline[] = {
    {"infer-shapes", mc_pass_infer_shapes,
     "needs: a loaded graph; gives every value a dtype and shape, reports shape errors"},
    {"verify", mc_pass_verify,
     "needs: shapes; checks ids, order, arity, attributes and shapes; changes nothing"},
    {"expand-moe", mc_pass_expand_moe,
     "needs: shapes; moe.MoE -> route, dispatch, expert GEMMs, combine; keeps: shapes"},
    {"gw-specialize", mc_pass_gw_specialize,
     "needs: shapes; in inference moe.GWRoute -> its base moe.TopKRoute; in training the "
     "GW Dispatch's rows are not materialised (its ExpertMatMuls over them -> "
     "moe.GatherMatMul of x); keeps: shapes"},
    {"canonicalize", mc_pass_canonicalize,
     "needs: shapes; drops no-op Identity/Reshape/Transpose/Cast, merges Transposes; "
     "keeps: shapes, output names"},
    {"fold-constants", mc_pass_fold_constants,
     "needs: shapes; runs nodes of constants (and params, in inference) once; keeps: shapes"},
    {"autodiff", mc_pass_autodiff,
     "needs: shapes, training; appends the loss's gradient w.r.t. every trained param "
     "(grad.<param> outputs); inference: nothing"},
    {"optimizer", mc_pass_optimizer,
     "needs: autodiff; one SGD/AdamW step per trained param, state as params, updates; "
     "inference: nothing"},
    {"dce", mc_pass_dce,
     "needs: nothing; removes nodes and initializers no output depends on; keeps: inputs"},
};
enum { NUM_PASSES = sizeof pipeline / sizeof pipeline[0] };
enum { MAX_PASS_NAME = 64 };

const mc_pass_info *mc_pass_find(const char *name) {
    for (int i = 0; i < NUM_PASSES; i++)
        if (strcmp(pipeline[i].name, name) == 0) return &pipeline[i];
    return NULL;
}

const mc_pass_info *mc_pass_list(int *out_n) {
    *out_n = NUM_PASSES;
    return pipeline;
}

/* "infer-shapes, verify, ..." for messages. */
static const char *pass_names(mc_graph *g) {
    const char *s = "";
    for (int i = 0; i < NUM_PASSES; i++)
        s = mc_arena_printf(g->arena, "%s%s%s", s, i ? ", " : "", pipeline[i].name);
    return s;
}

/* "a,b,c" -> passes in the graph arena; false with a diagnostic on a bad name. */
static bool parse_passes(mc_graph *g, const char *spec, const mc_pass_info ***out, int *n,
                         mc_diag *d) {
    int cap = NUM_PASSES;
    for (const char *p = spec; p && *p; p++)
        cap += *p == ',';
    const mc_pass_info **list = mc_arena_alloc(g->arena, sizeof *list * (size_t)cap);
    *out = list;
    *n = 0;
    if (!spec) { /* the default pipeline: the whole table */
        for (int i = 0; i < NUM_PASSES; i++)
            list[(*n)++] = &pipeline[i];
        return true;
    }
    for (const char *p = spec;; p++) {
        size_t len = strcspn(p, ",");
        char name[MAX_PASS_NAME];
        if (len == 0 || len >= sizeof name)
            return mc_error(d, NULL, "--passes takes a comma-separated list of pass names (%s)",
                            pass_names(g));
        memcpy(name, p, len);
        name[len] = 0;
        if (!(list[(*n)++] = mc_pass_find(name)))
            return mc_error(d, NULL, "unknown pass '%s'; the passes are: %s", name, pass_names(g));
        p += len;
        if (!*p) break;
    }
    return true;
}

static bool check_after(mc_graph *g, const char *after, const mc_pass_info **list, int n,
                        mc_diag *d) {
    if (!after || strcmp(after, "all") == 0) return true;
    for (int i = 0; i < n; i++)
        if (strcmp(list[i]->name, after) == 0) return true;
    const char *names = "";
    for (int i = 0; i < n; i++)
        names = mc_arena_printf(g->arena, "%s%s, ", names, list[i]->name);
    return mc_error(d, NULL, "--after=%s is not a pass of this pipeline; expected one of: %sall",
                    after, names);
}

static void dump(FILE *f, const mc_graph *g, const char *pass, mc_dump_format fmt) {
    if (fmt == MC_DUMP_DOT) {
        fprintf(f, "// after %s\n", pass);
        mc_print_dot(f, g);
    } else {
        fprintf(f, "# after %s\n", pass);
        mc_print_graph(f, g);
    }
}

/* DIR/NN-pass.txt (or .dot), NN counting passes from 01. */
static bool dump_to_dir(const mc_pipeline_opts *o, mc_graph *g, int index, const char *pass,
                        mc_diag *d) {
    const char *path = mc_arena_printf(g->arena, "%s/%02d-%s.%s", o->dump_dir, index, pass,
                                       o->format == MC_DUMP_DOT ? "dot" : "txt");
    FILE *f = fopen(path, "w");
    if (!f) return mc_error(d, NULL, "cannot write %s: %s", path, strerror(errno));
    dump(f, g, pass, o->format);
    bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad)
        return mc_error(d, NULL, "cannot write %s: %s", path, strerror(errno));
    return true;
}

/* A verifier failure after a pass is that pass's bug: the message names it. */
static bool verify_after(mc_graph *g, const char *pass, mc_diag *d) {
    mc_diag vd;
    mc_diag_init(&vd, d->file);
    if (mc_verify(g, &vd)) return true;
    const char *msg = strstr(vd.msg, "error: ");
    return mc_error(d, NULL, "the graph is invalid after pass %s: %s", pass,
                    msg ? msg + strlen("error: ") : vd.msg);
}

static bool after_step(mc_graph *g, const mc_pipeline_opts *o, int index, const char *pass,
                       mc_diag *d) {
    if (o->verify_each && !verify_after(g, pass, d)) return false;
    if (o->after && (strcmp(o->after, "all") == 0 || strcmp(o->after, pass) == 0))
        dump(o->dump_out ? o->dump_out : stdout, g, pass, o->format);
    return !o->dump_dir || dump_to_dir(o, g, index, pass, d);
}

bool mc_run_pipeline(mc_graph *g, const mc_pipeline_opts *o, mc_diag *d) {
    const mc_pass_info **list;
    int n;
    if (!parse_passes(g, o->passes, &list, &n, d) || !check_after(g, o->after, list, n, d))
        return false;
    mc_pass_ctx cx = {d, o->training || g->training, &o->train};
    /* Every pass but infer-shapes needs shapes: infer them first (not dumped) unless
     * the list starts there. Inference is idempotent, so this never changes a graph
     * that already has them. */
    if (list[0]->fn != mc_pass_infer_shapes && !mc_infer_shapes(g, d)) return false;
    for (int i = 0; i < n; i++) {
        bool changed = false;
        if (!list[i]->fn(g, &cx, &changed)) return false;
        if (!after_step(g, o, i + 1, list[i]->name, d)) return false;
    }
    return true;
}
