/* tools/commands.c: `moec check`, `moec dump`, `moec init-weights`, the shared
 * load-then-lower step every command starts with, and the phase clock behind `-v` and
 * the progress line (docs/cli.md). */
#include "cli.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- the phase clock ----
 * One per process, as there is one stderr. Phases follow each other; -v prints each
 * one's wall time as it ends, then the work reported as done alongside it. On a
 * terminal a ticker thread keeps one line saying what runs, once the command has taken
 * PROGRESS_AFTER seconds; the line is erased before anything else is printed and at
 * the end. */

enum { PROGRESS_TICK_MS = 100, MAX_ASIDE = 8 };
#define PROGRESS_AFTER 1.0

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t ticker;
    bool started, verbose, ticking, stopping;
    double t0, since;  /* the command's start, the current phase's start */
    const char *phase; /* the current phase, or NULL */
    int drawn;         /* width of the progress line now on the terminal, 0: none */
    struct {
        const char *name;
        double seconds;
    } aside[MAX_ASIDE]; /* reported during the current phase, printed after it */
    int naside;
} clk = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Callers hold clk.mu. */
static void erase_line(void) {
    if (!clk.drawn) return;
    fprintf(stderr, "\r%*s\r", clk.drawn, "");
    fflush(stderr);
    clk.drawn = 0;
}

static void draw_line(double t) {
    if (!clk.phase || t - clk.t0 < PROGRESS_AFTER) return;
    char line[96];
    int n = snprintf(line, sizeof line, "moec: %s... %.1f s", clk.phase, t - clk.t0);
    n = n < (int)sizeof line ? n : (int)sizeof line - 1;
    fprintf(stderr, "\r%s%*s", line, clk.drawn > n ? clk.drawn - n : 0, "");
    fflush(stderr);
    clk.drawn = n > clk.drawn ? n : clk.drawn;
}

static void *tick(void *arg) {
    (void)arg;
    pthread_mutex_lock(&clk.mu);
    while (!clk.stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += PROGRESS_TICK_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&clk.cv, &clk.mu, &until);
        if (!clk.stopping) draw_line(now());
    }
    pthread_mutex_unlock(&clk.mu);
    return NULL;
}

void cli_clock_start(bool verbose) {
    clk.started = true;
    clk.verbose = verbose;
    clk.t0 = clk.since = now();
    /* No line when stderr is a file or a pipe, nor for a terminal that cannot take \r. */
    const char *term = getenv("TERM");
    if (isatty(STDERR_FILENO) && !(term && strcmp(term, "dumb") == 0))
        clk.ticking = pthread_create(&clk.ticker, NULL, tick, NULL) == 0;
}

void cli_phase(const char *phase) {
    if (!clk.started) return;
    pthread_mutex_lock(&clk.mu);
    if (!(phase && clk.phase && strcmp(phase, clk.phase) == 0)) {
        double t = now();
        if (clk.verbose && clk.phase) {
            erase_line();
            fprintf(stderr, "moec: %-18s %7.3f s\n", clk.phase, t - clk.since);
        }
        for (int i = 0; clk.verbose && i < clk.naside; i++)
            fprintf(stderr, "moec: %-18s %7.3f s alongside\n", clk.aside[i].name,
                    clk.aside[i].seconds);
        clk.naside = 0;
        clk.phase = phase;
        clk.since = t;
    }
    pthread_mutex_unlock(&clk.mu);
}

void cli_phase_cb(void *user, const char *phase) {
    (void)user;
    cli_phase(phase);
}

void cli_aside_cb(void *user, const char *name, double seconds) {
    (void)user;
    if (!clk.started) return;
    pthread_mutex_lock(&clk.mu);
    if (clk.naside < MAX_ASIDE) {
        clk.aside[clk.naside].name = name;
        clk.aside[clk.naside++].seconds = seconds;
    }
    pthread_mutex_unlock(&clk.mu);
}

void cli_clock_quiet(void) {
    if (!clk.ticking) return;
    pthread_mutex_lock(&clk.mu);
    clk.stopping = true;
    pthread_cond_signal(&clk.cv);
    pthread_mutex_unlock(&clk.mu);
    pthread_join(clk.ticker, NULL);
    clk.ticking = false;
    pthread_mutex_lock(&clk.mu);
    erase_line();
    pthread_mutex_unlock(&clk.mu);
}

void cli_clock_stop(void) {
    if (!clk.started) return;
    cli_clock_quiet();
    cli_phase(NULL);
    if (clk.verbose) fprintf(stderr, "moec: %-18s %7.3f s\n", "total", now() - clk.t0);
    clk.started = false;
}

/* ---- load and lower ---- */

/* Every --max names a symbol of the model. */
static bool maxes_used(const cli_args *a, const mc_graph *g, mc_diag *d) {
    for (int i = 0; i < a->nmaxes; i++) {
        bool found = false;
        for (int s = 0; s < g->nsyms; s++)
            found |= strcmp(g->syms[s].name, a->maxes[i].name) == 0;
        if (!found)
            return mc_error(d, NULL, "--max names '%s' but the model has no such symbol",
                            a->maxes[i].name);
    }
    return true;
}

static mc_load_opts load_opts(const cli_args *a) {
    return (mc_load_opts){.training = a->training,
                          .weights_path = a->weights,
                          .sym_max = a->maxes,
                          .nsym_max = a->nmaxes};
}

/* cli_load_and_lower with load options of the caller's. */
static mc_graph *load_and_lower(const cli_args *a, const mc_load_opts *lo,
                                const char *default_passes, mc_diag *d) {
    cli_phase("load");
    mc_graph *g = mc_load_model(a->model, lo, d);
    if (!g || !maxes_used(a, g, d)) {
        mc_graph_free(g);
        return NULL;
    }
    cli_phase("infer-shapes"); /* the manager's own inference, before its first pass */
    mc_pipeline_opts po = a->pipe;
    if (!po.passes) po.passes = default_passes;
    po.training = a->training;
    po.on_pass = cli_phase_cb; /* one phase per pass, named after it */
    if (!mc_run_pipeline(g, &po, d)) {
        mc_graph_free(g);
        return NULL;
    }
    return g;
}

mc_graph *cli_load_and_lower(const cli_args *a, const char *default_passes, mc_diag *d) {
    mc_load_opts lo = load_opts(a);
    return load_and_lower(a, &lo, default_passes, d);
}

static void print_summary(const mc_graph *g, const char *path) {
    int moe_nodes = 0, params = 0;
    int64_t weights = 0, bytes = 0;
    for (int k = 0; k < g->norder; k++)
        moe_nodes += strncmp(mc_op_infos[g->nodes[g->order[k]].op].name, "moe.", 4) == 0;
    for (int i = 0; i < g->nvalues; i++) {
        const mc_value *v = &g->values[i];
        if (v->dead || (v->kind != MC_VK_PARAM && v->kind != MC_VK_CONST)) continue;
        params++;
        weights += mc_shape_numel(&v->shape, NULL);
        bytes += (int64_t)v->nbytes;
    }
    printf("%s: ok: %s (%s), %d input%s, %d output%s, %d nodes (%d MoE), %d initializers "
           "(%lld elements, %lld bytes)",
           path, g->name, g->training ? "train" : "infer", g->ninputs, g->ninputs == 1 ? "" : "s",
           g->noutputs, g->noutputs == 1 ? "" : "s", g->norder, moe_nodes, params,
           (long long)weights, (long long)bytes);
    for (int s = 0; s < g->nsyms; s++)
        printf("%s %s<=%lld", s ? "," : ", symbols", g->syms[s].name, (long long)g->syms[s].max);
    printf("\n");
}

int cmd_check(const cli_args *a) {
    mc_diag d;
    mc_diag_init(&d, a->model);
    mc_graph *g = cli_load_and_lower(a, "infer-shapes,verify", &d);
    if (!g) return cli_fail(&d);
    print_summary(g, a->model);
    mc_graph_free(g);
    return EXIT_OK;
}

int cmd_dump(const cli_args *a) {
    mc_diag d;
    mc_diag_init(&d, a->model);
    mc_graph *g = cli_load_and_lower(a, NULL, &d);
    if (!g) return cli_fail(&d);
    if (!a->pipe.after) {
        if (a->pipe.format == MC_DUMP_DOT)
            mc_print_dot(stdout, g);
        else
            mc_print_graph(stdout, g);
    }
    mc_graph_free(g);
    return EXIT_OK;
}

/* --seed N: each recipe's own seed is mixed with N, so one N gives one reproducible
 * set of weights and different tensors stay independent. */
static void reseed_recipes(mc_graph *g, uint64_t seed) {
    for (int i = 0; i < g->nvalues; i++) {
        mc_value *v = &g->values[i];
        if (v->dead || v->src != MC_SRC_INIT) continue;
        v->init.seed ^= (seed + 1) * 0x9E3779B97F4A7C15ull;
        void *bytes = mc_arena_alloc(g->arena, v->nbytes);
        mc_init_fill(&v->init, v->dt, mc_shape_numel(&v->shape, NULL), bytes);
        v->data = bytes;
    }
}

int cmd_init_weights(const cli_args *a) {
    mc_diag d;
    mc_diag_init(&d, a->model);
    mc_graph *g = cli_load_and_lower(a, "infer-shapes,verify", &d); /* no weights for a bad model */
    if (!g) return cli_fail(&d);
    if (a->has_seed) reseed_recipes(g, a->seed);
    bool ok = mc_st_write_params(a->out_path, g, &d);
    mc_graph_free(g);
    return ok ? EXIT_OK : cli_fail(&d);
}

/* -o's path with ".json" (if there) replaced by ".safetensors". */
static char *weights_beside(const char *json_path) {
    size_t n = strlen(json_path);
    if (n > 5 && strcmp(json_path + n - 5, ".json") == 0) n -= 5;
    char *s = malloc(n + 13);
    if (!s) mc_oom(n + 13);
    snprintf(s, n + 13, "%.*s.safetensors", (int)n, json_path);
    return s;
}

/* The JSON text to `path`, through a temporary file renamed into place. */
static bool write_text(const char *path, const char *text, mc_diag *d) {
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    bool ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0) ok = false;
    if (ok && rename(tmp, path) == 0) return true;
    remove(tmp);
    return mc_error(d, NULL, "cannot write %s: %s", path, strerror(errno));
}

/* moec import model.onnx -o model.json: the JSON moec reads the model as, and its
 * initializers in model.safetensors beside it, which that JSON names. The model is
 * checked whole first, so nothing is written for a model moec cannot read. */
int cmd_import(const cli_args *a) {
    mc_diag d;
    mc_diag_init(&d, a->model);
    char *wpath = weights_beside(a->out_path), *json = NULL;
    const char *slash = strrchr(wpath, '/');
    mc_load_opts lo = load_opts(a);
    lo.onnx_json = &json; /* the model read once, its JSON kept */
    lo.onnx_json_weights = slash ? slash + 1 : wpath;
    mc_graph *g = load_and_lower(a, &lo, "infer-shapes,verify", &d);
    if (g && !json) mc_error(&d, NULL, "import reads ONNX models; this is moec's JSON already");
    bool ok = g && json && mc_st_write_params(wpath, g, &d) && write_text(a->out_path, json, &d);
    if (g && json && !ok) remove(wpath);
    free(json);
    free(wpath);
    mc_graph_free(g);
    return ok ? EXIT_OK : cli_fail(&d);
}
