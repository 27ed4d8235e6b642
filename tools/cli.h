/* tools/cli.h: the moec command line. main() is the only place that turns diagnostics
 * into exit codes: 0 success, 1 user error (bad model or data), 2 misuse. */
#ifndef MC_CLI_H
#define MC_CLI_H

#include "frontend.h"
#include "passes.h"

enum { EXIT_OK = 0, EXIT_USER = 1, EXIT_MISUSE = 2 };
enum { CLI_MAX_BINDINGS = 64 };

typedef struct {
    const char *name, *path;
} cli_binding; /* name=path from --input / --output */

typedef struct cli_args {
    const char *cmd;
    const char *model;
    const char *out_path;  /* -o */
    const char *weights;   /* --weights */
    bool training;         /* --mode=train */
    bool verbose;          /* -v: wall time per phase (build, compile, run) */
    mc_pipeline_opts pipe; /* --passes --after --verify-each --format --dump-dir */
    cli_binding inputs[CLI_MAX_BINDINGS], outputs[CLI_MAX_BINDINGS];
    int ninputs, noutputs;
    cli_binding syms[MC_MAX_SYMS];
    int nsyms;
    mc_sym_max maxes[MC_MAX_SYMS]; /* --max NAME=N */
    int nmaxes;
    bool has_seed;
    uint64_t seed;            /* --seed */
    bool interp;              /* run: --interp */
    long steps;               /* run --mode=train: --steps N (default 1) */
    const char *save_weights; /* run --mode=train: --save-weights FILE */
    /* compile / build */
    const char *header_path; /* --header */
    int emit;                /* --emit: mb_emit_kind */
    int opt_level;           /* -O0..-O3, default 3 */
    bool has_opt;
    bool external_weights; /* --weights=external */
    const char *triple, *cpu, *features;
} cli_args;

/* Prints "moec: MESSAGE" and the command's usage hint to stderr; returns EXIT_MISUSE.
 * This and cli_fail stop the phase clock first: its -v report comes before the message. */
int cli_misuse(const cli_args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the diagnostic; returns EXIT_USER. */
int cli_fail(const mc_diag *d);
/* Loads the model and runs the pipeline given by the options (NULL on error). */
mc_graph *cli_load_and_lower(const cli_args *a, const char *default_passes, mc_diag *d);

/* The phase clock (docs/cli.md): cli_phase names the phase that starts now, ending the
 * one before (the same name again continues it; NULL ends it). With -v each phase's wall
 * time goes to stderr as it ends; on a terminal a progress line names the phase while a
 * compile runs. Everything is a no-op until cli_clock_start. */
void cli_clock_start(bool verbose);
void cli_phase(const char *phase);
/* For mb_progress: cli_phase, and work done alongside the current phase (printed after
 * it with -v). `name` must outlive the command. */
void cli_phase_cb(void *user, const char *phase);
void cli_aside_cb(void *user, const char *name, double seconds);
/* Erases the progress line for good: before the model runs and writes to the terminal. */
void cli_clock_quiet(void);
/* Ends the last phase; with -v prints the total. Once; later calls do nothing. */
void cli_clock_stop(void);

int cmd_check(const cli_args *a);
int cmd_import(const cli_args *a);
int cmd_dump(const cli_args *a);
int cmd_run(const cli_args *a);
int cmd_init_weights(const cli_args *a);
int cmd_compile(const cli_args *a);
int cmd_build(const cli_args *a);
/* Builds *g natively in a temporary directory (freeing *g once compiled) and runs it on
 * the inputs of `a`. */
int cli_run_native(const cli_args *a, mc_graph **g);

#endif
