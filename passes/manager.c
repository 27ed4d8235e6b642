/* passes/manager.c: the pass list and the pass manager. The default pipeline, in
 * order, with what each pass needs, keeps and breaks; infer-shapes and verify are
 * small enough to live here. */
#include "passes.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

bool mc_pass_infer_shapes(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = true;
    return mc_infer_shapes(g, cx->d);
}

bool mc_pass_verify(mc_graph *g, mc_pass_ctx *cx, bool *changed) {
    *changed = false;
    return mc_verify(g, cx->d);
}

static const mc_pass_info pipeline[] = {
    {"infer-shapes", mc_pass_infer_shapes,
     "needs: a loaded graph; gives every value its dtype and shape"},
    {"verify", mc_pass_verify,
     "needs: shapes; checks structure, attributes and shapes, changes nothing"},
    {"expand-moe", mc_pass_expand_moe,
     "needs: shapes; moe.MoE -> route, dispatch, expert GEMMs, combine; keeps: shapes"},
    {"canonicalize", mc_pass_canonicalize,
     "needs: shapes; drops no-op Identity/Reshape/Transpose/Cast, merges Transposes"},
    {"fold-constants", mc_pass_fold_constants,
     "needs: shapes; evaluates nodes whose inputs are all known (params too, in inference)"},
    {"dce", mc_pass_dce, "needs: nothing; removes nodes and initializers no output depends on"},
};
enum { NUM_PASSES = sizeof pipeline / sizeof pipeline[0] };

const mc_pass_info *mc_pass_find(const char *name) {
    for (int i = 0; i < NUM_PASSES; i++)
        if (strcmp(pipeline[i].name, name) == 0) return &pipeline[i];
    return NULL;
}

const mc_pass_info *mc_pass_list(int *out_n) {
    *out_n = NUM_PASSES;
    return pipeline;
}

static const char *pass_names(void) {
    static char buf[256];
    buf[0] = 0;
    for (int i = 0; i < NUM_PASSES; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%s", i ? ", " : "",
                 pipeline[i].name);
    return buf;
}

/* "a,b,c" -> pass list; false with a diagnostic on an unknown name. */
static bool parse_passes(const char *spec, const mc_pass_info **out, int *n, mc_diag *d) {
    *n = 0;
    if (!spec) {
        for (int i = 0; i < NUM_PASSES; i++)
            out[(*n)++] = &pipeline[i];
        return true;
    }
    char name[64];
    for (const char *p = spec; *p;) {
        size_t len = strcspn(p, ",");
        if (len == 0 || len >= sizeof name || *n == 64)
            return mc_error(d, NULL, "--passes takes a comma-separated list of: %s", pass_names());
        memcpy(name, p, len);
        name[len] = 0;
        const mc_pass_info *pi = mc_pass_find(name);
        if (!pi)
            return mc_error(d, NULL, "unknown pass '%s'; the passes are: %s", name, pass_names());
        out[(*n)++] = pi;
        p += len + (p[len] == ',');
    }
    return true;
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

static bool dump_to_dir(const mc_pipeline_opts *o, const mc_graph *g, int index, const char *pass,
                        mc_diag *d) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%02d-%s.%s", o->dump_dir, index, pass,
             o->format == MC_DUMP_DOT ? "dot" : "txt");
    FILE *f = fopen(path, "w");
    if (!f) return mc_error(d, NULL, "cannot write %s: %s", path, strerror(errno));
    dump(f, g, pass, o->format);
    return fclose(f) == 0 || mc_error(d, NULL, "cannot write %s: %s", path, strerror(errno));
}

/* A verifier failure after a pass is a compiler bug in that pass: say which. */
static bool verify_after(mc_graph *g, const char *pass, mc_diag *d) {
    mc_diag vd;
    mc_diag_init(&vd, d->file);
    if (mc_verify(g, &vd)) return true;
    const char *msg = strstr(vd.msg, "error: ");
    return mc_error(d, NULL, "after pass %s: %s", pass, msg ? msg + 7 : vd.msg);
}

bool mc_run_pipeline(mc_graph *g, const mc_pipeline_opts *o, mc_diag *d) {
    const mc_pass_info *list[64];
    int n;
    if (!parse_passes(o->passes, list, &n, d)) return false;
    if (o->after && strcmp(o->after, "all") != 0) {
        bool found = false;
        for (int i = 0; i < n; i++)
            found |= strcmp(list[i]->name, o->after) == 0;
        if (!found)
            return mc_error(d, NULL, "--after=%s names no pass of the pipeline (%s, or all)",
                            o->after, pass_names());
    }
    mc_pass_ctx cx = {d, o->training};
    bool changed;
    /* Every pass needs shapes: infer them first unless the list starts there. */
    if ((n == 0 || list[0]->fn != mc_pass_infer_shapes) && !mc_infer_shapes(g, d)) return false;
    for (int i = 0; i < n; i++) {
        if (!list[i]->fn(g, &cx, &changed)) return false;
        if (o->verify_each && !verify_after(g, list[i]->name, d)) return false;
        if (o->after && (strcmp(o->after, "all") == 0 || strcmp(o->after, list[i]->name) == 0))
            dump(o->dump_out ? o->dump_out : stdout, g, list[i]->name, o->format);
        if (o->dump_dir && !dump_to_dir(o, g, i + 1, list[i]->name, d)) return false;
    }
    return true;
}
