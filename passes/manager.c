/* passes/manager.c: the pass manager. It parses a pipeline (`--passes`, or the default
 * one of pipeline.c), checks before anything runs that every pass's needs hold where it
 * sits (tracking the properties each pass gives and breaks), runs the passes (a `{...}`
 * group again and again until none of its passes reports a change), optionally
 * verifies after each one (naming the pass that broke the graph) and dumps after the
 * requested ones, to a stream or to numbered files in a directory. */
#include "passes.h"

#include <errno.h>
#include <string.h>

enum { MAX_PASS_NAME = 64 };

typedef struct {
    const mc_pass_info *pass;
    int group; /* 0: runs once; n > 0: the steps with this number form one group */
} step;

typedef struct {
    step *steps;
    int n;
} pipeline;

/* "infer-shapes, verify, ..." for messages. */
static const char *pass_names(mc_graph *g) {
    int n;
    const mc_pass_info *table = mc_pass_table(&n);
    const char *s = "";
    for (int i = 0; i < n; i++)
        s = mc_arena_printf(g->arena, "%s%s%s", s, i ? ", " : "", table[i].name);
    return s;
}

static bool bad_list(mc_graph *g, mc_diag *d) {
    return mc_error(d, NULL,
                    "--passes takes a comma-separated list of pass names, with {a,b} for a "
                    "group run to a fixed point (%s)",
                    pass_names(g));
}

/* One list entry: an optional '{' opening a group, a name, an optional '}' closing it. */
static bool parse_step(mc_graph *g, const char *tok, size_t len, int *group, int *ngroups,
                       step *out, mc_diag *d) {
    bool opens = len > 0 && tok[0] == '{', closes = len > 0 && tok[len - 1] == '}';
    tok += opens;
    len -= (size_t)opens + (size_t)(closes && len > (size_t)opens);
    if ((opens && *group) || (closes && !*group && !opens)) return bad_list(g, d);
    if (opens) *group = ++*ngroups;
    char name[MAX_PASS_NAME];
    if (len == 0 || len >= sizeof name) return bad_list(g, d);
    memcpy(name, tok, len);
    name[len] = 0;
    *out = (step){mc_pass_find(name), *group};
    if (!out->pass)
        return mc_error(d, NULL, "unknown pass '%s'; the passes are: %s", name, pass_names(g));
    if (closes) *group = 0;
    return true;
}

static bool parse_pipeline(mc_graph *g, const char *spec, pipeline *p, mc_diag *d) {
    int cap = 1, group = 0, ngroups = 0;
    for (const char *c = spec; *c; c++)
        cap += *c == ',';
    p->steps = mc_arena_alloc(g->arena, sizeof(step) * (size_t)cap);
    p->n = 0;
    for (const char *c = spec;; c++) {
        size_t len = strcspn(c, ",");
        if (!parse_step(g, c, len, &group, &ngroups, &p->steps[p->n++], d)) return false;
        c += len;
        if (!*c) break;
    }
    return group == 0 || bad_list(g, d);
}

/* ---- properties ---- */

static unsigned props_of(const mc_graph *g) {
    unsigned p = MC_PROP_EXPANDED | MC_PROP_UNFUSED | MC_PROP_SHAPES;
    for (int k = 0; k < g->norder; k++) {
        unsigned f = mc_op_infos[g->nodes[g->order[k]].op].flags;
        if (f & MC_OPF_COMPOSITE) p &= ~(unsigned)MC_PROP_EXPANDED;
        if (f & MC_OPF_FUSED) p &= ~(unsigned)MC_PROP_UNFUSED;
    }
    for (int i = 0; i < g->nvalues; i++)
        if (!g->values[i].dead && !g->values[i].has_shape) p &= ~(unsigned)MC_PROP_SHAPES;
    if (g->ngrads > 0) p |= MC_PROP_GRADS;
    if (g->plan.valid) p |= MC_PROP_PLAN;
    return p;
}

/* Walks the steps from properties `have`; a group is walked twice, as its second round
 * starts from what its first left. breaker[b]: the pass that last broke property b. */
static bool check_needs(mc_graph *g, const pipeline *p, unsigned have, bool training, mc_diag *d) {
    const char *breaker[MC_NUM_PROPS] = {0};
    for (int i = 0; i < p->n; i++) {
        int end = i;
        while (p->steps[i].group && end + 1 < p->n && p->steps[end + 1].group == p->steps[i].group)
            end++;
        for (int round = 0; round < (p->steps[i].group ? 2 : 1); round++)
            for (int k = i; k <= end; k++) {
                const mc_pass_info *s = p->steps[k].pass;
                if (s->training_only && !training) continue; /* it will change nothing */
                for (int b = 0; b < MC_NUM_PROPS; b++) {
                    unsigned bit = 1u << b;
                    if ((s->needs & bit) && !(have & bit))
                        return mc_error(d, NULL, "pass %s needs %s, which %s%s", s->name,
                                        mc_prop_name(bit), breaker[b] ? "pass " : "",
                                        breaker[b]
                                            ? mc_arena_printf(g->arena, "%s broke", breaker[b])
                                            : "no earlier pass gives");
                    if (s->breaks & bit) breaker[b] = s->name;
                }
                have = (have & ~s->breaks) | s->gives;
            }
        i = end;
    }
    return true;
}

static bool check_after(mc_graph *g, const char *after, const pipeline *p, mc_diag *d) {
    if (!after || strcmp(after, "all") == 0) return true;
    const char *names = "";
    for (int i = 0; i < p->n; i++) {
        if (strcmp(p->steps[i].pass->name, after) == 0) return true;
        names = mc_arena_printf(g->arena, "%s%s, ", names, p->steps[i].pass->name);
    }
    return mc_error(d, NULL, "--after=%s is not a pass of this pipeline; expected one of: %sall",
                    after, names);
}

/* ---- running ---- */

typedef struct {
    mc_graph *g;
    const mc_pipeline_opts *o;
    mc_pass_ctx cx;
    int dumps; /* files written to dump_dir so far */
} runner;

/* "dce", or "dce (round 2)" for a group's later rounds. */
static const char *label(mc_graph *g, const char *pass, int round) {
    return round > 1 ? mc_arena_printf(g->arena, "%s (round %d)", pass, round) : pass;
}

static void dump(FILE *f, const mc_graph *g, const char *what, mc_dump_format fmt) {
    fprintf(f, fmt == MC_DUMP_DOT ? "// after %s\n" : "# after %s\n", what);
    if (fmt == MC_DUMP_DOT)
        mc_print_dot(f, g);
    else
        mc_print_graph(f, g);
}

/* DIR/NN-pass.txt (or .dot), NN counting dumps from 01. */
static bool dump_to_dir(runner *r, const char *pass, const char *what, mc_diag *d) {
    const mc_pipeline_opts *o = r->o;
    const char *path = mc_arena_printf(r->g->arena, "%s/%02d-%s.%s", o->dump_dir, ++r->dumps, pass,
                                       o->format == MC_DUMP_DOT ? "dot" : "txt");
    FILE *f = fopen(path, "w");
    if (!f) return mc_error(d, NULL, "cannot write %s: %s", path, strerror(errno));
    dump(f, r->g, what, o->format);
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

/* Runs one pass; a group's later rounds dump only the passes that changed something. */
static bool run_step(runner *r, const mc_pass_info *s, int round, bool *changed) {
    mc_graph *g = r->g;
    mc_diag *d = r->cx.d;
    *changed = false;
    if (r->o->on_pass) r->o->on_pass(r->o->on_pass_user, s->name);
    if (!s->fn(g, &r->cx, changed)) return false;
    if (*changed && (s->breaks & MC_PROP_PLAN)) g->plan.valid = false;
    if (r->o->verify_each && !verify_after(g, s->name, d)) return false;
    if (round > 1 && !*changed) return true;
    const char *after = r->o->after, *what = label(g, s->name, round);
    if (after && (strcmp(after, "all") == 0 || strcmp(after, s->name) == 0))
        dump(r->o->dump_out ? r->o->dump_out : stdout, g, what, r->o->format);
    return !r->o->dump_dir || dump_to_dir(r, s->name, what, d);
}

/* Steps first..last: once, or for a group again and again until a round changes
 * nothing. */
static bool run_steps(runner *r, const step *steps, int first, int last) {
    int rounds = steps[first].group ? MC_MAX_ROUNDS : 1;
    for (int round = 1; round <= rounds; round++) {
        bool any = false;
        for (int k = first; k <= last; k++) {
            bool changed;
            if (!run_step(r, steps[k].pass, round, &changed)) return false;
            any |= changed;
        }
        if (!any || rounds == 1) return true;
    }
    mc_die("passes %s..%s still change the graph after %d rounds", steps[first].pass->name,
           steps[last].pass->name, MC_MAX_ROUNDS);
}

bool mc_run_pipeline(mc_graph *g, const mc_pipeline_opts *o, mc_diag *d) {
    pipeline p;
    if (!parse_pipeline(g, o->passes ? o->passes : mc_default_pipeline, &p, d) ||
        !check_after(g, o->after, &p, d))
        return false;
    /* Shapes come first (inferred, not dumped) unless the list starts with infer-shapes.
     * Inference is idempotent, so this never changes a graph that already has them. */
    if (p.steps[0].pass->fn != mc_pass_infer_shapes && !mc_infer_shapes(g, d)) return false;
    bool training = o->training || g->training;
    if (!check_needs(g, &p, props_of(g), training, d)) return false;
    runner r = {g, o, {d, training, &o->train, o->weight_dtype}, 0};
    for (int i = 0; i < p.n;) {
        int end = i;
        while (p.steps[i].group && end + 1 < p.n && p.steps[end + 1].group == p.steps[i].group)
            end++;
        if (!run_steps(&r, p.steps, i, end)) return false;
        i = end + 1;
    }
    return true;
}
