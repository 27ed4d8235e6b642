/* tools/cmd_compile.c: `moec compile` (object + header [+ weights]), `moec build` (an
 * executable: the object, libmoert and the .npy driver), and the native path of
 * `moec run` (build into a temporary directory, run, clean up).
 *
 * Linking uses the system C compiler driver (`cc`, or $CC) and the libmoert.a found
 * beside the moec executable (or $MOEC_RUNTIME_LIB), plus the words of $MOEC_LDFLAGS
 * (default: what this build of libmoert needs, e.g. the sanitizer runtimes). */
#include "backend.h"
#include "cli.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* What the backend needs whatever --passes said: no composite ops (expand-moe) and a
 * memory plan of the final graph (plan-memory), each run here when the pipeline left
 * it undone. */
static bool ready_for_backend(mc_graph *g, const cli_args *a, mc_diag *d) {
    for (int pos = 0; pos < g->norder; pos++)
        if (mc_op_infos[g->nodes[g->order[pos]].op].flags & MC_OPF_COMPOSITE) {
            mc_pipeline_opts po = {.passes = "expand-moe", .training = a->training};
            if (!mc_run_pipeline(g, &po, d)) return false;
            break;
        }
    mc_pipeline_opts plan = {.passes = "plan-memory", .training = a->training};
    return g->plan.valid || mc_run_pipeline(g, &plan, d);
}

static mc_graph *load_for_backend(const cli_args *a, mc_diag *d) {
    mc_graph *g = cli_load_and_lower(a, NULL, d);
    if (g && !ready_for_backend(g, a, d)) {
        mc_graph_free(g);
        return NULL;
    }
    return g;
}

/* "out.o" -> "out" + ext */
static char *replace_ext(const char *path, const char *ext) {
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    size_t n = dot && (!slash || dot > slash) ? (size_t)(dot - path) : strlen(path);
    char *s = malloc(n + strlen(ext) + 1);
    if (!s) mc_oom(n + strlen(ext) + 1);
    memcpy(s, path, n);
    strcpy(s + n, ext);
    return s;
}

static mb_options backend_options(const cli_args *a) {
    return (mb_options){.triple = a->triple,
                        .cpu = a->cpu,
                        .features = a->features,
                        .opt_level = a->opt_level,
                        .emit = (mb_emit_kind)a->emit,
                        .external_weights = a->external_weights,
                        .progress = {cli_phase_cb, cli_aside_cb, NULL}};
}

/* Two outputs under one name would overwrite each other. */
static bool distinct_outputs(const mb_outputs *o, bool weights, mc_diag *d) {
    const char *names[3] = {o->object, o->header, weights ? o->weights : NULL};
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            if (names[i] && names[j] && strcmp(names[i], names[j]) == 0)
                return mc_error(
                    d, "", "two outputs would both be written to %s; choose another -o or --header",
                    names[i]);
    return true;
}

int cmd_compile(const cli_args *a) {
    mc_diag d;
    mc_diag_init(&d, a->model);
    mc_graph *g = load_for_backend(a, &d);
    if (!g) return cli_fail(&d);
    mb_options o = backend_options(a);
    char *header = a->header_path ? NULL : replace_ext(a->out_path, ".h");
    char *weights = replace_ext(a->out_path, ".safetensors");
    mb_outputs out = {.object = a->out_path,
                      .header = a->header_path ? a->header_path : header,
                      .weights = weights};
    mc_diag_init(&d, a->model);
    bool ok = distinct_outputs(&out, o.external_weights, &d) && mb_compile(g, &o, &out, &d);
    free(header);
    free(weights);
    mc_graph_free(g);
    return ok ? EXIT_OK : cli_fail(&d);
}

/* libmoert.a: $MOEC_RUNTIME_LIB, else beside the moec executable. */
static bool runtime_lib(char *buf, size_t n, mc_diag *d) {
    const char *env = getenv("MOEC_RUNTIME_LIB");
    if (env && *env) return snprintf(buf, n, "%s", env) < (int)n;
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return mc_error(d, "", "cannot locate the moec executable to find libmoert.a");
    exe[len] = 0;
    snprintf(buf, n, "%s/libmoert.a", dirname(exe));
    if (access(buf, R_OK) == 0) return true;
    return mc_error(d, "", "cannot find libmoert.a beside moec (%s); set MOEC_RUNTIME_LIB", buf);
}

static int run_child(char *const *argv) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execvp(argv[0], argv);
        fprintf(stderr, "moec: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

#ifdef __linux__
/* Whether `name` is an executable file in a directory of $PATH. */
static bool on_path(const char *name) {
    const char *path = getenv("PATH");
    for (const char *p = path ? path : ""; *p;) {
        size_t len = strcspn(p, ":");
        char file[PATH_MAX];
        if (len > 0 &&
            snprintf(file, sizeof file, "%.*s/%s", (int)len, p, name) < (int)sizeof file &&
            access(file, X_OK) == 0)
            return true;
        p += len + (p[len] == ':');
    }
    return false;
}

/* gold links a model's weights object two to three times faster than BFD ld (0.3 s
 * against 0.75 s for the bench's 150 MB). It is used for native links (cc, no $CC) of
 * weights under 1 GiB when it is on PATH; cross builds keep their compiler's linker,
 * and bigger models BFD ld, with which the medium code model's large sections were
 * tried. */
static bool use_gold(const char *cc, const char *wobj) {
    struct stat st;
    if (strcmp(cc, "cc") != 0 || stat(wobj, &st) != 0) return false;
    return st.st_size < ((off_t)1 << 30) && on_path("ld.gold");
}
#endif

/* The code and weights objects, libmoert and the system libraries, into `exe`. */
static bool link_executable(const char *obj, const char *wobj, const char *exe, mc_diag *d) {
    char lib[PATH_MAX];
    if (!runtime_lib(lib, sizeof lib, d)) return false;
    const char *cc = getenv("CC") && *getenv("CC") ? getenv("CC") : "cc";
    char *argv[64] = {(char *)cc, "-o", (char *)exe, (char *)obj, (char *)wobj, lib};
    int n = 6;
#ifdef __linux__
    /* No build ID: hashing a big model's weights for one took longer than the rest of
     * the link (0.3 s of 0.45 s for 150 MB with BFD ld's default SHA-1). */
    argv[n++] = "-Wl,--build-id=none";
    if (use_gold(cc, wobj)) argv[n++] = "-fuse-ld=gold";
#endif
    /* $MOEC_LDFLAGS: extra words for the link (a sanitized libmoert needs them). */
    const char *env = getenv("MOEC_LDFLAGS");
    char *extra = strdup(env ? env : MOEC_RUNTIME_LDFLAGS);
    if (!extra) mc_oom(1);
    for (char *w = strtok(extra, " "); w && n < 60; w = strtok(NULL, " "))
        argv[n++] = w;
    argv[n++] = "-lpthread";
    argv[n++] = "-lm";
    argv[n] = NULL;
    int st = run_child(argv);
    free(extra);
    if (st == 0) return true;
    remove(exe);
    return mc_error(d, "", "linking %s with %s failed (exit status %d)", exe, cc, st);
}

/* dir/name, malloc'd. */
static char *path_in(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *s = malloc(n);
    if (!s) mc_oom(n);
    snprintf(s, n, "%s/%s", dir, name);
    return s;
}

static bool compile_objects(const cli_args *a, mc_graph *g, const char *obj, const char *wobj,
                            const char *weights, mc_diag *d) {
    if (!ready_for_backend(g, a, d)) return false;
    mb_options o = backend_options(a);
    o.with_main = true;
    o.emit = MB_EMIT_OBJ;
    mb_outputs out = {.object = obj, .weights = weights, .weights_object = wobj};
    mc_diag_init(d, a->model);
    return mb_compile(g, &o, &out, d);
}

/* The code and weights objects in `dir`, linked to `exe`. *g is freed once they are
 * written, before the link: the linker's 150 MB of a big model then reuse the pages of
 * the graph's weights instead of adding to them. */
static bool build_into(const cli_args *a, mc_graph **g, const char *dir, const char *exe,
                       mc_diag *d) {
    char *obj = path_in(dir, "model.o"), *wobj = path_in(dir, "weights.o");
    char *weights = replace_ext(exe, ".safetensors");
    bool ok = true;
    if (a->external_weights && strcmp(exe, weights) == 0)
        ok = mc_error(d, "", "the executable and its weights would both be %s; choose another -o",
                      exe);
    ok = ok && compile_objects(a, *g, obj, wobj, weights, d);
    mc_graph_free(*g);
    *g = NULL;
    cli_phase("link");
    ok = ok && link_executable(obj, wobj, exe, d);
    remove(obj);
    remove(wobj);
    if (!ok && a->external_weights) remove(weights);
    free(obj);
    free(wobj);
    free(weights);
    return ok;
}

/* A fresh directory under $TMPDIR (else the system's P_tmpdir), made by mkdtemp. */
static char *make_temp_dir(void) {
    const char *env = getenv("TMPDIR"), *base = env && *env ? env : P_tmpdir;
    size_t n = strlen(base) + 16;
    char *dir = malloc(n);
    if (!dir) mc_oom(n);
    int len = snprintf(dir, n, "%s/moec.", base);
    memset(dir + len, 'X', 6); /* mkdtemp's template: it replaces the six X */
    dir[len + 6] = 0;
    if (mkdtemp(dir)) return dir;
    free(dir);
    return NULL;
}

int cmd_build(const cli_args *a) {
    mc_diag d;
    mc_diag_init(&d, a->model);
    mc_graph *g = cli_load_and_lower(a, NULL, &d);
    if (!g) return cli_fail(&d);
    char *dir = make_temp_dir();
    bool ok = dir ? build_into(a, &g, dir, a->out_path, &d)
                  : mc_error(&d, "", "cannot create a temporary directory");
    if (dir) rmdir(dir);
    free(dir);
    mc_graph_free(g);
    return ok ? EXIT_OK : cli_fail(&d);
}

/* argv of the driver: "--input name=path" and the like, strings owned by *store. */
static void add_pairs(char **argv, int *n, char **store, int *ns, const char *flag,
                      const cli_binding *b, int count) {
    for (int i = 0; i < count; i++) {
        size_t len = strlen(b[i].name) + strlen(b[i].path) + 2;
        char *s = malloc(len);
        if (!s) mc_oom(len);
        snprintf(s, len, "%s=%s", b[i].name, b[i].path);
        store[(*ns)++] = s;
        argv[(*n)++] = (char *)flag;
        argv[(*n)++] = s;
    }
}

static int run_driver(const cli_args *a, char *exe) {
    int pairs = a->ninputs + a->noutputs + a->nsyms, n = 0, ns = 0;
    char **argv = calloc((size_t)(2 * pairs + 6), sizeof *argv);
    char **store = calloc((size_t)pairs + 1, sizeof *store);
    if (!argv || !store) mc_oom(sizeof *argv * (size_t)(3 * pairs + 3));
    argv[n++] = exe;
    add_pairs(argv, &n, store, &ns, "--input", a->inputs, a->ninputs);
    add_pairs(argv, &n, store, &ns, "--output", a->outputs, a->noutputs);
    add_pairs(argv, &n, store, &ns, "--sym", a->syms, a->nsyms);
    char steps[32];
    if (a->steps) {
        snprintf(steps, sizeof steps, "%ld", a->steps);
        argv[n++] = "--steps";
        argv[n++] = steps;
    }
    if (a->save_weights) {
        argv[n++] = "--save-weights";
        argv[n++] = (char *)a->save_weights;
    }
    int st = run_child(argv);
    for (int i = 0; i < ns; i++)
        free(store[i]);
    free(store);
    free(argv);
    if (st < 0)
        fprintf(stderr, "%s: cannot run the compiled model: %s\n", a->model, strerror(errno));
    if (st > 128)
        fprintf(stderr, "%s: the compiled model died with signal %d\n", a->model, st - 128);
    return st < 0 || st > EXIT_MISUSE ? EXIT_USER : st;
}

/* `moec run` without --interp, once the inputs are checked: the same driver a
 * `moec build` binary has, built in a temporary directory. */
int cli_run_native(const cli_args *a, mc_graph **g) {
    mc_diag d;
    mc_diag_init(&d, a->model);
    char *dir = make_temp_dir();
    if (!dir) return mc_error(&d, "", "cannot create a temporary directory"), cli_fail(&d);
    size_t len = strlen(dir) + 8;
    char *exe = malloc(len);
    if (!exe) mc_oom(len);
    snprintf(exe, len, "%s/model", dir);
    int st;
    if (build_into(a, g, dir, exe, &d)) {
        cli_clock_quiet(); /* the model writes to the terminal now */
        cli_phase("run");
        st = run_driver(a, exe);
    } else {
        st = cli_fail(&d);
    }
    remove(exe);
    rmdir(dir);
    free(exe);
    free(dir);
    return st;
}
