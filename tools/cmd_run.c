/* tools/cmd_run.c: `moec run`: .npy inputs in, checked here; then the compiled model
 * (tools/cmd_compile.c) or, with --interp, the reference interpreter; .npy outputs out
 * (or a short summary of each output on stdout). */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int find_binding(const cli_binding *b, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(b[i].name, name) == 0) return i;
    return -1;
}

/* "x, mask" : the names of a list of value ids, for messages. */
static const char *value_names(const mc_graph *g, const int *ids, int n) {
    const char *s = "";
    for (int i = 0; i < n; i++)
        s = mc_arena_printf(g->arena, "%s%s%s", s, i ? ", " : "", g->values[ids[i]].name);
    return s;
}

static bool names_value_in(const mc_graph *g, const int *ids, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(g->values[ids[i]].name, name) == 0) return true;
    return false;
}

/* Every --input/--output/--sym must name something the model has, once. */
static int check_bindings(const cli_args *a, const mc_graph *g) {
    for (int i = 0; i < a->ninputs; i++) {
        if (!names_value_in(g, g->inputs, g->ninputs, a->inputs[i].name))
            return cli_misuse(a, "--input names '%s' but the model's inputs are: %s",
                              a->inputs[i].name, value_names(g, g->inputs, g->ninputs));
        if (find_binding(a->inputs, i, a->inputs[i].name) >= 0)
            return cli_misuse(a, "--input '%s' is given twice", a->inputs[i].name);
    }
    for (int i = 0; i < g->ninputs; i++)
        if (find_binding(a->inputs, a->ninputs, g->values[g->inputs[i]].name) < 0)
            return cli_misuse(a, "input '%s' is not given: pass --input %s=FILE.npy",
                              g->values[g->inputs[i]].name, g->values[g->inputs[i]].name);
    for (int i = 0; i < a->noutputs; i++)
        if (!names_value_in(g, g->outputs, g->noutputs, a->outputs[i].name))
            return cli_misuse(a, "--output names '%s' but the model's outputs are: %s",
                              a->outputs[i].name, value_names(g, g->outputs, g->noutputs));
    for (int i = 0; i < a->nsyms; i++)
        if (mc_graph_find_symbol(g, a->syms[i].name) < 0)
            return cli_misuse(a, "--sym names '%s' but the model has no such symbol",
                              a->syms[i].name);
    return EXIT_OK;
}

static bool load_inputs(const cli_args *a, const mc_graph *g, mc_tensor *ins, mc_diag *d) {
    for (int i = 0; i < g->ninputs; i++) {
        const mc_value *v = &g->values[g->inputs[i]];
        const cli_binding *b = &a->inputs[find_binding(a->inputs, a->ninputs, v->name)];
        mc_npy arr;
        mc_diag_init(d, b->path);
        if (!mc_npy_load(b->path, &arr, d)) return false;
        const char *what = mc_arena_printf(g->arena, "input '%s'", v->name);
        bool ok = mc_npy_to_tensor(&arr, v->dt, &ins[i], d, what);
        mc_npy_free(&arr);
        if (!ok) return false;
    }
    mc_diag_init(d, a->model);
    return true;
}

/* --sym T=N must agree with what the inputs say. */
static bool check_syms(const cli_args *a, const mc_graph *g, const mc_tensor *ins, mc_diag *d) {
    int64_t symvals[MC_MAX_SYMS];
    if (!mc_bind_symbols(g, ins, symvals, d)) return false;
    for (int i = 0; i < a->nsyms; i++) {
        int s = mc_graph_find_symbol(g, a->syms[i].name);
        char *end;
        errno = 0;
        long long want = strtoll(a->syms[i].path, &end, 10);
        if (errno || *end || want != symvals[s])
            return mc_error(d, NULL, "--sym %s=%s but the inputs give %s=%lld", a->syms[i].name,
                            a->syms[i].path, a->syms[i].name, (long long)symvals[s]);
    }
    return true;
}

static void summarize(const mc_graph *g, const mc_value *v, const mc_tensor *t) {
    char dims[128] = "[";
    for (int i = 0; i < t->rank; i++)
        snprintf(dims + strlen(dims), sizeof dims - strlen(dims), "%s%lld", i ? "," : "",
                 (long long)t->dims[i]);
    strncat(dims, "]", sizeof dims - strlen(dims) - 1);
    printf("%s: %s%s", v->name, mc_dtype_name(t->dt), dims);
    (void)g;
    if (t->numel == 0) {
        printf(" (empty)\n");
        return;
    }
    double sum = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t k = 0; k < t->numel; k++) {
        double x = t->f ? (double)t->f[k] : (double)t->i[k];
        sum += x;
        lo = x < lo ? x : lo;
        hi = x > hi ? x : hi;
    }
    printf(" mean=%.6g min=%.6g max=%.6g first=[", sum / (double)t->numel, lo, hi);
    for (int64_t k = 0; k < t->numel && k < 4; k++)
        printf("%s%.6g", k ? ", " : "", t->f ? (double)t->f[k] : (double)t->i[k]);
    printf("%s]\n", t->numel > 4 ? ", ..." : "");
}

static bool emit_outputs(const cli_args *a, const mc_graph *g, const mc_tensor *outs, mc_diag *d) {
    for (int i = 0; i < g->noutputs; i++) {
        const mc_value *v = &g->values[g->outputs[i]];
        int b = find_binding(a->outputs, a->noutputs, v->name);
        if (b < 0) {
            summarize(g, v, &outs[i]);
            continue;
        }
        mc_npy arr;
        mc_diag_init(d, a->outputs[b].path);
        if (!mc_npy_from_tensor(&outs[i], &arr, d)) return false;
        bool ok = mc_npy_save(a->outputs[b].path, &arr, d);
        mc_npy_free(&arr);
        if (!ok) return false;
    }
    return true;
}

/* Inference: one run. Training: --steps steps, each updating the weights, printing the
 * scalar outputs (the losses) per step when there are several; `outs` holds the last. */
static bool interp_steps(const cli_args *a, mc_graph *g, const mc_tensor *ins, mc_tensor *outs,
                         mc_diag *d) {
    if (!a->training) return mc_interp_run(g, ins, outs, d);
    long steps = a->steps ? a->steps : 1;
    for (long k = 1; k <= steps; k++) {
        if (k > 1)
            for (int i = 0; i < g->noutputs; i++)
                mc_tensor_free(&outs[i]);
        if (!mc_interp_step(g, ins, outs, d)) return false;
        if (steps == 1) continue;
        printf("step %ld:", k);
        for (int i = 0; i < g->noutputs; i++)
            if (outs[i].rank == 0 && outs[i].f)
                printf(" %s=%.6g", g->values[g->outputs[i]].name, (double)outs[i].f[0]);
        printf("\n");
    }
    return true;
}

static bool save_weights(const cli_args *a, const mc_graph *g, mc_diag *d) {
    if (!a->save_weights) return true;
    mc_diag_init(d, a->save_weights);
    return mc_st_write_values(a->save_weights, g, false, d);
}

int cmd_run(const cli_args *a) {
    mc_diag d;
    mc_diag_init(&d, a->model);
    mc_graph *g = cli_load_and_lower(a, NULL, &d);
    if (!g) return cli_fail(&d);
    int st = check_bindings(a, g);
    if (st != EXIT_OK) {
        mc_graph_free(g);
        return st;
    }
    int nin = g->ninputs, nout = g->noutputs;
    mc_tensor *ins = calloc((size_t)nin + 1, sizeof *ins);
    mc_tensor *outs = calloc((size_t)nout + 1, sizeof *outs);
    if (!ins || !outs) mc_oom(sizeof *ins * (size_t)(nin + nout + 2));
    cli_phase("inputs");
    bool ok = load_inputs(a, g, ins, &d) && check_syms(a, g, ins, &d);
    int native = EXIT_OK;
    if (ok && !a->interp) {
        native = cli_run_native(a, &g); /* frees g */
    } else if (ok) {
        cli_clock_quiet(); /* the summaries go to the terminal now */
        cli_phase("run");
        ok = interp_steps(a, g, ins, outs, &d) && emit_outputs(a, g, outs, &d) &&
             save_weights(a, g, &d);
    }
    for (int i = 0; i < nin; i++)
        mc_tensor_free(&ins[i]);
    for (int i = 0; i < nout; i++)
        mc_tensor_free(&outs[i]);
    free(ins);
    free(outs);
    mc_graph_free(g);
    if (ok && !a->interp) return native;
    return ok ? EXIT_OK : cli_fail(&d);
}
