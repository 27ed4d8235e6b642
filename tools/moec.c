/* tools/moec.c: argument parsing and dispatch for `moec check | dump | run | compile |
 * build | import | init-weights`. Options take `--opt=value` or `--opt value`. */
#include "backend.h"
#include "cli.h"

#include <errno.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*fn)(const cli_args *a);
    const char *usage;
    const char *help; /* options, one per line */
} command;

static const command commands[] = {
    {"check", cmd_check, "moec check model.json [--mode=infer|train] [--weights=FILE]",
     "Loads the model, infers shapes, verifies it and prints a one-line summary.\n"},
    {"dump", cmd_dump,
     "moec dump model.json [--after=PASS|all] [--format=text|dot] [--mode=infer|train]\n"
     "          [--passes=a,b,...] [--verify-each] [--dump-dir=DIR] [--weights=FILE]\n"
     "          [--weight-dtype=DTYPE]",
     "Runs the pass pipeline and prints the IR: after PASS, after every pass (all), or\n"
     "once at the end. --dump-dir writes NN-pass.txt (.dot) for every pass.\n"},
    {"run", cmd_run,
     "moec run model.json --input NAME=FILE.npy ... [--output NAME=FILE.npy ...]\n"
     "          [--sym T=N] [--mode=infer|train] [--passes=...] [--weights=FILE] [--interp] "
     "[-O0..-O3]\n"
     "          [--weight-dtype=DTYPE] [--steps N] [--save-weights FILE]\n"
     "          [--optimizer=adamw|sgd] [--lr X] ...",
     "Compiles the model for this machine and runs it on .npy inputs; --interp runs\n"
     "the reference interpreter instead. Outputs named with --output are written as\n"
     ".npy; the others are summarised on stdout. --sym checks a symbol's value.\n"
     "With --mode=train each run is a training step (docs/autodiff.md): --steps N takes\n"
     "N steps on the inputs, --save-weights writes the trained weights. Training flags:\n"
     "--train-params=a,b (default: every param), --optimizer=adamw|sgd, --lr, --momentum,\n"
     "--weight-decay, --beta1, --beta2, --eps.\n"
     "--weight-dtype=bf16|f16|int8|int4[:GROUP][:zp] stores the FFN and expert weights so\n"
     "(inference). -O0..-O3 (default -O3) sets the native code's optimization.\n"
     "-v prints the wall time of each phase to stderr.\n"},
    {"compile", cmd_compile,
     "moec compile model.json -o model.o [--header model.h] [--emit=obj|asm|llvm] [-O0..-O3]\n"
     "          [--weights=embed|external] [--mode=infer|train] [--passes=...]\n"
     "          [--target-triple T] [--cpu C] [--features F] [--weights-file=FILE]\n"
     "          [--weight-dtype=DTYPE]",
     "Writes an object (or assembly / LLVM IR with --emit) and a C header (default: -o\n"
     "with .h). Weights are embedded read-only by default; --weights=external writes\n"
     "them to -o with .safetensors, which <name>_create maps. -O3 is the default.\n"
     "Without --target-triple the code is for this machine's CPU and features.\n"
     "--weight-dtype=bf16|f16|int8|int4[:GROUP][:zp] stores the FFN and expert weights\n"
     "so: 2, 1 or 1/2 bytes a weight plus scales, summed in f32 (routers and norms stay\n"
     "f32; inference only).\n"
     "-v prints the wall time of each phase to stderr.\n"},
    {"build", cmd_build,
     "moec build model.json -o model [-O0..-O3] [--weights=embed|external]\n"
     "          [--weight-dtype=DTYPE] [--cpu C] ...",
     "Compiles and links an executable with libmoert and the .npy driver:\n"
     "  ./model --input x=x.npy [--output y=y.npy] [--sym T=N] [--weights FILE] [--bench N]\n"
     "--bench N prints min/median/max milliseconds over N runs after one warm-up.\n"
     "-v prints the wall time of each phase to stderr.\n"},
    {"import", cmd_import, "moec import model.onnx -o model.json [--max NAME=N ...]",
     "Writes the JSON moec reads an ONNX model as, and its initializers to -o with\n"
     ".safetensors, which that JSON names. Every command also reads .onnx files\n"
     "directly. --max NAME=N gives a dynamic dim's largest value (any command).\n"},
    {"init-weights", cmd_init_weights,
     "moec init-weights model.json -o weights.safetensors [--seed N]",
     "Writes every initializer (inline data, init recipes, weights file) to a\n"
     "safetensors file. --seed N re-seeds every init recipe deterministically.\n"},
};
enum { NUM_COMMANDS = sizeof commands / sizeof commands[0] };

static const command *find_command(const char *name) {
    for (int i = 0; i < NUM_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

static void print_usage(FILE *f) {
    fprintf(f, "usage: moec COMMAND model.json [options]\n\ncommands:\n");
    for (int i = 0; i < NUM_COMMANDS; i++)
        fprintf(f, "  %s\n", commands[i].usage);
    fprintf(f, "\nmoec COMMAND --help describes one command. Exit status: 0 success,\n"
               "1 bad model or data, 2 misuse of the command line.\n");
}

int cli_misuse(const cli_args *a, const char *fmt, ...) {
    cli_clock_stop(); /* the -v report, then the message */
    va_list ap;
    va_start(ap, fmt);
    fputs("moec: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    const command *c = a && a->cmd ? find_command(a->cmd) : NULL;
    if (c)
        fprintf(stderr, "usage: %s\n", c->usage);
    else
        fprintf(stderr, "run 'moec --help' for usage\n");
    return EXIT_MISUSE;
}

int cli_fail(const mc_diag *d) {
    cli_clock_stop(); /* the -v report, then the message */
    fprintf(stderr, "%s\n", d->msg);
    return EXIT_USER;
}

/* "name=path" into a binding; false if there is no '=' or a side is empty. */
static bool parse_binding(const char *s, cli_binding *out) {
    const char *eq = strchr(s, '=');
    if (!eq || eq == s || !eq[1]) return false;
    size_t n = (size_t)(eq - s);
    char *name = malloc(n + 1);
    if (!name) mc_oom(n + 1);
    memcpy(name, s, n);
    name[n] = 0;
    out->name = name;
    out->path = eq + 1;
    return true;
}

static bool parse_u64(const char *s, uint64_t *out) {
    if (!*s || *s == '-') return false;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

/* Splits "--opt=value" / "--opt value". Returns the value or NULL (misuse reported). */
static const char *option_value(cli_args *a, int argc, char **argv, int *i, const char *opt,
                                int *status) {
    const char *arg = argv[*i];
    size_t n = strlen(opt);
    if (arg[n] == '=') return arg + n + 1;
    if (*i + 1 < argc) return argv[++*i];
    *status = cli_misuse(a, "option %s needs a value", opt);
    return NULL;
}

static bool is_opt(const char *arg, const char *opt) {
    size_t n = strlen(opt);
    return strncmp(arg, opt, n) == 0 && (arg[n] == 0 || arg[n] == '=');
}

static int add_binding(cli_args *a, cli_binding *list, int *count, const char *v, const char *opt,
                       int max) {
    if (*count == max) return cli_misuse(a, "too many %s options (at most %d)", opt, max);
    if (!parse_binding(v, &list[*count]))
        return cli_misuse(a, "%s takes NAME=VALUE, got '%s'", opt, v);
    (*count)++;
    return EXIT_OK;
}

/* --max NAME=N: a symbol's largest value (an ONNX model's dynamic dims have none). */
static int parse_max(cli_args *a, const char *v) {
    cli_binding b;
    uint64_t n;
    if (a->nmaxes == MC_MAX_SYMS)
        return cli_misuse(a, "too many --max options (at most %d)", MC_MAX_SYMS);
    bool bound = parse_binding(v, &b);
    if (!bound || !parse_u64(b.path, &n) || n < 1 || n > (uint64_t)MC_MAX_DIM) {
        if (bound) free((char *)b.name);
        return cli_misuse(a, "--max takes NAME=N with N from 1 to 2^40, got '%s'", v);
    }
    a->maxes[a->nmaxes++] = (mc_sym_max){b.name, (int64_t)n};
    return EXIT_OK;
}

static int parse_mode(cli_args *a, const char *v) {
    if (strcmp(v, "infer") == 0)
        a->training = false;
    else if (strcmp(v, "train") == 0)
        a->training = true;
    else
        return cli_misuse(a, "--mode must be infer or train, got '%s'", v);
    a->pipe.training = a->training;
    return EXIT_OK;
}

/* compile/build: --weights=embed|external; elsewhere the model's weights file. */
static int parse_weights(cli_args *a, const char *v) {
    bool backend = strcmp(a->cmd, "compile") == 0 || strcmp(a->cmd, "build") == 0;
    if (!backend) return a->weights = v, EXIT_OK;
    if (strcmp(v, "embed") == 0 || strcmp(v, "external") == 0)
        return a->external_weights = strcmp(v, "external") == 0, EXIT_OK;
    return cli_misuse(a,
                      "--weights must be embed or external, got '%s' (the model's weights "
                      "file is --weights-file=FILE)",
                      v);
}

/* A non-negative number for a training hyperparameter. */
static int parse_hyper(cli_args *a, const char *flag, const char *v, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || !(x >= 0) || x > 1e6)
        return cli_misuse(a, "%s takes a non-negative number, got '%s'", flag, v);
    *out = x;
    return EXIT_OK;
}

static int parse_emit(cli_args *a, const char *v) {
    static const char *const kinds[] = {"obj", "asm", "llvm"};
    for (int i = 0; i < 3; i++)
        if (strcmp(v, kinds[i]) == 0) return a->emit = i, EXIT_OK;
    return cli_misuse(a, "--emit must be obj, asm or llvm, got '%s'", v);
}

static int parse_format(cli_args *a, const char *v) {
    if (strcmp(v, "text") == 0)
        a->pipe.format = MC_DUMP_TEXT;
    else if (strcmp(v, "dot") == 0)
        a->pipe.format = MC_DUMP_DOT;
    else
        return cli_misuse(a, "--format must be text or dot, got '%s'", v);
    return EXIT_OK;
}

/* --weight-dtype=bf16|f16|int8|int4[:GROUP][:zp]: the storage of FFN and expert weights
 * (quantize-weights). */
static int parse_weight_dtype(cli_args *a, const char *v) {
    mc_weight_format f;
    if (!mc_weight_format_parse(v, &f) || f.dt == MC_DT_F32)
        return cli_misuse(
            a,
            "--weight-dtype takes bf16, f16, int8 or int4[:GROUP][:zp] (GROUP a multiple of 8, "
            "32 by default), got '%s'",
            v);
    a->pipe.weight_dtype = f;
    return EXIT_OK;
}

static int parse_option(cli_args *a, int argc, char **argv, int *i) {
    const char *arg = argv[*i];
    int st = EXIT_OK;
    const char *v;
#define VALUE(opt) ((v = option_value(a, argc, argv, i, opt, &st)) != NULL)
    if (is_opt(arg, "-o")) return VALUE("-o") ? (a->out_path = v, EXIT_OK) : st;
    if (is_opt(arg, "--mode")) return VALUE("--mode") ? parse_mode(a, v) : st;
    if (is_opt(arg, "--weights")) return VALUE("--weights") ? parse_weights(a, v) : st;
    if (is_opt(arg, "--weights-file"))
        return VALUE("--weights-file") ? (a->weights = v, EXIT_OK) : st;
    if (is_opt(arg, "--header")) return VALUE("--header") ? (a->header_path = v, EXIT_OK) : st;
    if (is_opt(arg, "--emit")) return VALUE("--emit") ? parse_emit(a, v) : st;
    if (is_opt(arg, "--target-triple"))
        return VALUE("--target-triple") ? (a->triple = v, EXIT_OK) : st;
    if (is_opt(arg, "--cpu")) return VALUE("--cpu") ? (a->cpu = v, EXIT_OK) : st;
    if (is_opt(arg, "--features")) return VALUE("--features") ? (a->features = v, EXIT_OK) : st;
    if (is_opt(arg, "--save-weights"))
        return VALUE("--save-weights") ? (a->save_weights = v, EXIT_OK) : st;
    if (is_opt(arg, "--steps")) {
        uint64_t n;
        if (!VALUE("--steps")) return st;
        if (!parse_u64(v, &n) || n < 1 || n > 1000000000)
            return cli_misuse(a, "--steps takes a count >= 1, got '%s'", v);
        a->steps = (long)n;
        return EXIT_OK;
    }
    if (is_opt(arg, "--train-params"))
        return VALUE("--train-params") ? (a->pipe.train.params = v, EXIT_OK) : st;
    if (is_opt(arg, "--optimizer"))
        return VALUE("--optimizer") ? (a->pipe.train.optimizer = v, EXIT_OK) : st;
    static const struct {
        const char *flag;
        size_t offset;
    } hypers[] = {{"--lr", offsetof(mc_train_opts, lr)},
                  {"--momentum", offsetof(mc_train_opts, momentum)},
                  {"--weight-decay", offsetof(mc_train_opts, weight_decay)},
                  {"--beta1", offsetof(mc_train_opts, beta1)},
                  {"--beta2", offsetof(mc_train_opts, beta2)},
                  {"--eps", offsetof(mc_train_opts, eps)}};
    for (size_t h = 0; h < sizeof hypers / sizeof hypers[0]; h++)
        if (is_opt(arg, hypers[h].flag))
            return VALUE(hypers[h].flag)
                       ? parse_hyper(a, hypers[h].flag, v,
                                     (double *)((char *)&a->pipe.train + hypers[h].offset))
                       : st;
    if (is_opt(arg, "--weight-dtype"))
        return VALUE("--weight-dtype") ? parse_weight_dtype(a, v) : st;
    if (is_opt(arg, "--passes")) return VALUE("--passes") ? (a->pipe.passes = v, EXIT_OK) : st;
    if (is_opt(arg, "--after")) return VALUE("--after") ? (a->pipe.after = v, EXIT_OK) : st;
    if (is_opt(arg, "--dump-dir"))
        return VALUE("--dump-dir") ? (a->pipe.dump_dir = v, EXIT_OK) : st;
    if (is_opt(arg, "--format")) return VALUE("--format") ? parse_format(a, v) : st;
    if (is_opt(arg, "--input"))
        return VALUE("--input")
                   ? add_binding(a, a->inputs, &a->ninputs, v, "--input", CLI_MAX_BINDINGS)
                   : st;
    if (is_opt(arg, "--output"))
        return VALUE("--output")
                   ? add_binding(a, a->outputs, &a->noutputs, v, "--output", CLI_MAX_BINDINGS)
                   : st;
    if (is_opt(arg, "--sym"))
        return VALUE("--sym") ? add_binding(a, a->syms, &a->nsyms, v, "--sym", MC_MAX_SYMS) : st;
    if (is_opt(arg, "--max")) return VALUE("--max") ? parse_max(a, v) : st;
    if (is_opt(arg, "--seed")) {
        if (!VALUE("--seed")) return st;
        if (!parse_u64(v, &a->seed))
            return cli_misuse(a, "--seed takes a non-negative integer, got '%s'", v);
        a->has_seed = true;
        return EXIT_OK;
    }
#undef VALUE
    if (strcmp(arg, "--verify-each") == 0) return a->pipe.verify_each = true, EXIT_OK;
    if (strcmp(arg, "--interp") == 0) return a->interp = true, EXIT_OK;
    if (strcmp(arg, "-v") == 0 || strcmp(arg, "--verbose") == 0) return a->verbose = true, EXIT_OK;
    if (strlen(arg) == 3 && arg[0] == '-' && arg[1] == 'O' && arg[2] >= '0' && arg[2] <= '3')
        return a->opt_level = arg[2] - '0', a->has_opt = true, EXIT_OK;
    return cli_misuse(a, "unknown option '%s'", arg);
}

/* Options a command does not take are misuse, not silently ignored. */
static int check_applicable(const cli_args *a) {
    bool is_run = strcmp(a->cmd, "run") == 0, is_dump = strcmp(a->cmd, "dump") == 0;
    bool is_init = strcmp(a->cmd, "init-weights") == 0;
    if ((a->ninputs || a->noutputs || a->nsyms) && !is_run)
        return cli_misuse(a, "--input, --output and --sym belong to 'moec run'");
    if ((a->pipe.after || a->pipe.dump_dir || a->pipe.format != MC_DUMP_TEXT) && !is_dump)
        return cli_misuse(a, "--after, --dump-dir and --format belong to 'moec dump'");
    bool is_backend = strcmp(a->cmd, "compile") == 0 || strcmp(a->cmd, "build") == 0;
    if (a->has_seed && !is_init) return cli_misuse(a, "--seed belongs to 'moec init-weights'");
    bool is_import = strcmp(a->cmd, "import") == 0;
    if (a->out_path && !is_init && !is_backend && !is_import)
        return cli_misuse(
            a, "-o belongs to 'moec compile', 'moec build', 'moec import' and 'moec init-weights'");
    if ((is_init || is_backend || is_import) && !a->out_path)
        return cli_misuse(a, "%s needs -o FILE", a->cmd);
    bool backend_opts = a->header_path || a->emit || a->triple || a->cpu || a->features;
    if (backend_opts && !is_backend)
        return cli_misuse(a, "--header, --emit, --target-triple, --cpu and --features belong "
                             "to 'moec compile' and 'moec build'");
    if (a->has_opt && !is_backend && !(is_run && !a->interp))
        return cli_misuse(a, "-O belongs to 'moec compile', 'moec build' and native 'moec run'");
    if (strcmp(a->cmd, "build") == 0 && (a->header_path || a->emit))
        return cli_misuse(a, "--header and --emit belong to 'moec compile'");
    if (a->interp && !is_run) return cli_misuse(a, "--interp belongs to 'moec run'");
    if (a->verbose && !is_run && !is_backend)
        return cli_misuse(a, "-v belongs to 'moec run', 'moec compile' and 'moec build'");
    if ((a->steps || a->save_weights) && !(is_run && a->training))
        return cli_misuse(a, "--steps and --save-weights belong to 'moec run --mode=train'");
    if (a->pipe.weight_dtype.dt != MC_DT_F32 && !(is_run || is_dump || is_backend))
        return cli_misuse(a, "--weight-dtype belongs to 'moec run', 'dump', 'compile' and 'build'");
    if (a->pipe.weight_dtype.dt != MC_DT_F32 && a->training)
        return cli_misuse(a, "--weight-dtype applies to inference; training updates f32 params");
    const mc_train_opts *t = &a->pipe.train;
    bool hyper = t->params || t->optimizer || t->lr >= 0 || t->momentum >= 0 ||
                 t->weight_decay >= 0 || t->beta1 >= 0 || t->beta2 >= 0 || t->eps >= 0;
    if (hyper && !a->training)
        return cli_misuse(a,
                          "--train-params, --optimizer and the hyperparameters need --mode=train");
    return EXIT_OK;
}

static void free_args(cli_args *a) {
    for (int i = 0; i < a->ninputs; i++)
        free((char *)a->inputs[i].name);
    for (int i = 0; i < a->noutputs; i++)
        free((char *)a->outputs[i].name);
    for (int i = 0; i < a->nsyms; i++)
        free((char *)a->syms[i].name);
    for (int i = 0; i < a->nmaxes; i++)
        free((char *)a->maxes[i].name);
}

static int run_command(const command *c, int argc, char **argv) {
    cli_args a;
    memset(&a, 0, sizeof a);
    a.cmd = c->name;
    a.pipe.dump_out = stdout;
    a.opt_level = 3;
    a.pipe.train = (mc_train_opts){
        .lr = -1, .momentum = -1, .weight_decay = -1, .beta1 = -1, .beta2 = -1, .eps = -1};
    int st = EXIT_OK;
    for (int i = 2; i < argc && st == EXIT_OK; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: %s\n\n%s", c->usage, c->help);
            free_args(&a);
            return EXIT_OK;
        }
        if (argv[i][0] == '-' && argv[i][1])
            st = parse_option(&a, argc, argv, &i);
        else if (a.model)
            st = cli_misuse(&a, "more than one model file given ('%s' and '%s')", a.model, argv[i]);
        else
            a.model = argv[i];
    }
    if (st == EXIT_OK && !a.model) st = cli_misuse(&a, "no model file given");
    if (st == EXIT_OK) st = check_applicable(&a);
    bool timed = strcmp(c->name, "run") == 0 || strcmp(c->name, "compile") == 0 ||
                 strcmp(c->name, "build") == 0;
    if (st == EXIT_OK && timed) cli_clock_start(a.verbose);
    if (st == EXIT_OK) st = c->fn(&a);
    cli_clock_stop();
    free_args(&a);
    return st;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_usage(stderr);
        return EXIT_MISUSE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        print_usage(stdout);
        return EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("moec 0.1 (LLVM %s)\n", mc_backend_llvm_version());
        return EXIT_OK;
    }
    const command *c = find_command(argv[1]);
    if (!c) return cli_misuse(NULL, "unknown command '%s'", argv[1]);
    return run_command(c, argc, argv);
}
