/* runtime/driver.c: the main() of `moec build` executables. Reads inputs from .npy
 * files, binds each symbol from the dims it appears in, runs the model once (or warms
 * up and times N runs), and writes or summarises the outputs. f16 inputs take <f2 or
 * <f4 files and bf16 inputs take <f4 (rounded to nearest even); f16 and bf16 outputs
 * are widened to f32 in their files, as `moec run` writes them. */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- the command line ---- */

typedef struct binding {
    const char *name; /* up to '=' in argv, not terminated there */
    size_t len;
    const char *value;
    int64_t number; /* --sym */
} binding;

typedef struct cli {
    binding *inputs, *outputs, *syms;
    int n_inputs, n_outputs, n_syms;
    const char *weights;
    long bench;       /* 0: no --bench */
    long steps;       /* training: steps to take (default 1) */
    const char *save; /* training: --save-weights FILE */
} cli;

enum { F_INPUT, F_OUTPUT, F_SYM, F_WEIGHTS, F_BENCH, F_STEPS, F_SAVE, NUM_FLAGS };
static const char *flag_names[NUM_FLAGS] = {"--input", "--output", "--sym",         "--weights",
                                            "--bench", "--steps",  "--save-weights"};

static void usage(FILE *to, const char *prog, const moert_model_info *info) {
    fprintf(to,
            "usage: %s --input NAME=FILE.npy ... [--output NAME=FILE.npy ...] [--sym S=N]\n"
            "       [--weights FILE] [--bench N]%s\n",
            prog, info->train ? " [--steps N] [--save-weights FILE]" : "");
    for (int64_t i = 0; i < info->num_inputs; i++)
        fprintf(to, "  input  %s\n", info->inputs[i].name);
    for (int64_t i = 0; i < info->num_outputs; i++)
        fprintf(to, "  output %s\n", info->outputs[i].name);
}

static int misuse(const char *prog, const char *what, const char *arg) {
    fprintf(stderr, "%s: %s '%s'\n", prog, what, arg);
    return 2;
}

/* "--flag VALUE" or "--flag=VALUE"; returns the flag or -1. */
static int match_flag(const char *arg, const char **out_value) {
    *out_value = NULL;
    for (int f = 0; f < NUM_FLAGS; f++) {
        size_t n = strlen(flag_names[f]);
        if (strncmp(arg, flag_names[f], n) != 0) continue;
        if (arg[n] == '=') *out_value = arg + n + 1;
        if (arg[n] == '=' || arg[n] == 0) return f;
    }
    return -1;
}

static int parse_count(const char *s, int64_t min, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno || v < min) return 0;
    *out = v;
    return 1;
}

static int add_binding(const char *prog, int flag, const char *value, cli *c) {
    const char *eq = strchr(value, '=');
    if (!eq || eq == value || !eq[1]) return misuse(prog, "expected NAME=VALUE, found", value);
    binding b = {value, (size_t)(eq - value), eq + 1, 0};
    if (flag == F_SYM && !parse_count(b.value, 0, &b.number))
        return misuse(prog, "expected a symbol value >= 0, found", b.value);
    if (flag == F_INPUT) c->inputs[c->n_inputs++] = b;
    if (flag == F_OUTPUT) c->outputs[c->n_outputs++] = b;
    if (flag == F_SYM) c->syms[c->n_syms++] = b;
    return 0;
}

static int add_flag(const char *prog, int flag, const char *value, cli *c) {
    if (flag == F_WEIGHTS) {
        c->weights = value;
        return 0;
    }
    if (flag == F_SAVE) {
        c->save = value;
        return 0;
    }
    if (flag == F_BENCH || flag == F_STEPS) {
        int64_t n;
        if (!parse_count(value, 1, &n) || n > 1000000000)
            return misuse(prog, "expected a count >= 1, found", value);
        *(flag == F_BENCH ? &c->bench : &c->steps) = (long)n;
        return 0;
    }
    return add_binding(prog, flag, value, c);
}

/* 0: parsed; 2: misuse (reported); -1: --help. */
static int parse_cli(int argc, char **argv, const char *prog, cli *c) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return -1;
        const char *value;
        int f = match_flag(argv[i], &value);
        if (f < 0) return misuse(prog, "unknown argument", argv[i]);
        if (!value && i + 1 >= argc) return misuse(prog, "missing the value of", argv[i]);
        if (!value) value = argv[++i];
        int rc = add_flag(prog, f, value, c);
        if (rc) return rc;
    }
    return 0;
}

/* ---- the run ---- */

typedef struct run_state {
    const moert_model_info *info;
    int64_t *syms;
    moert_npy *files;  /* per input */
    void **in;         /* per input: the file's data or `converted` */
    void **converted;  /* per input: a buffer in the model's dtype, or NULL */
    void **out;        /* per output */
    int64_t *out_dims; /* per output: 8 dims */
    moert_model *m;
} run_state;

static int name_is(const binding *b, const char *name) {
    return strlen(name) == b->len && strncmp(b->name, name, b->len) == 0;
}

static int same_name(const binding *a, const binding *b) {
    return a->len == b->len && strncmp(a->name, b->name, a->len) == 0;
}

static int64_t find_tensor(const moert_tensor_info *ts, int64_t n, const binding *b) {
    for (int64_t i = 0; i < n; i++)
        if (name_is(b, ts[i].name)) return i;
    return -1;
}

/* "[T, 2*T, 8]": the info's dims with their symbols. */
static void format_info_dims(const moert_model_info *info, const moert_tensor_info *t, char *buf,
                             size_t cap) {
    int n = snprintf(buf, cap, "[");
    for (int64_t k = 0; k < t->rank && n >= 0 && (size_t)n < cap; k++) {
        const moert_dim *d = &t->dims[k];
        const char *sep = k ? ", " : "";
        if (d->sym < 0)
            n += snprintf(buf + n, cap - (size_t)n, "%s%lld", sep, (long long)d->c);
        else if (d->c == 1)
            n += snprintf(buf + n, cap - (size_t)n, "%s%s", sep, info->symbols[d->sym].name);
        else
            n += snprintf(buf + n, cap - (size_t)n, "%s%lld*%s", sep, (long long)d->c,
                          info->symbols[d->sym].name);
    }
    if (n >= 0 && (size_t)n < cap) snprintf(buf + n, cap - (size_t)n, "]");
}

static moert_status bad_shape(const run_state *st, const moert_tensor_info *t, const char *file,
                              const moert_npy *a) {
    char want[256], have[256];
    format_info_dims(st->info, t, want, sizeof want);
    moert_format_dims(have, sizeof have, a->dims, a->rank);
    return moert_fail(MOERT_ERR_ARGUMENT, "%s: expected input '%s' as %s %s, found %s %s", file,
                      t->name, moert_dtype_name((moert_dtype)t->dtype), want,
                      moert_dtype_name(a->dtype), have);
}

static moert_status bind_symbol(run_state *st, const moert_tensor_info *t, const char *file,
                                int64_t sym, int64_t value) {
    const moert_symbol_info *s = &st->info->symbols[sym];
    if (value > s->max)
        return moert_fail(MOERT_ERR_ARGUMENT, "%s: input '%s' gives %s = %lld, above its max %lld",
                          file, t->name, s->name, (long long)value, (long long)s->max);
    if (st->syms[sym] >= 0 && st->syms[sym] != value)
        return moert_fail(MOERT_ERR_ARGUMENT,
                          "%s: input '%s' gives %s = %lld, but %s is already %lld", file, t->name,
                          s->name, (long long)value, s->name, (long long)st->syms[sym]);
    st->syms[sym] = value;
    return MOERT_OK;
}

static moert_status bind_dims(run_state *st, const moert_tensor_info *t, const char *file,
                              const moert_npy *a) {
    if (a->rank != t->rank) return bad_shape(st, t, file, a);
    for (int64_t k = 0; k < t->rank; k++) {
        const moert_dim *d = &t->dims[k];
        int64_t v = a->dims[k];
        if (d->sym >= st->info->num_symbols)
            return moert_fail(MOERT_ERR_INTERNAL, "input '%s' names symbol %lld of %lld", t->name,
                              (long long)d->sym, (long long)st->info->num_symbols);
        if (d->sym < 0 || d->c == 0) {
            if (v != (d->sym < 0 ? d->c : 0)) return bad_shape(st, t, file, a);
            continue;
        }
        if (v % d->c != 0) return bad_shape(st, t, file, a);
        moert_status s = bind_symbol(st, t, file, d->sym, v / d->c);
        if (s != MOERT_OK) return s;
    }
    return MOERT_OK;
}

/* ---- half-precision conversions (round to nearest even, NaN stays NaN) ---- */

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float float_of(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint16_t f32_to_bf16(float f) {
    uint32_t u = bits_of(f);
    if ((u & 0x7FFFFFFF) > 0x7F800000) return (uint16_t)(u >> 16 | 0x40);
    return (uint16_t)((u + 0x7FFF + (u >> 16 & 1)) >> 16);
}

static uint16_t f32_to_f16(float f) {
    uint32_t u = bits_of(f), a = u & 0x7FFFFFFF;
    uint16_t sign = (uint16_t)(u >> 16 & 0x8000);
    if (a > 0x7F800000) return sign | 0x7E00;
    if (a >= 0x477FF000) return sign | 0x7C00; /* 65520 and up round to infinity */
    if (a < 0x38800000) {                      /* below 2^-14: an f16 subnormal */
        /* Adding 2^23 rounds to an integer in the current (nearest-even) mode. */
        float units = float_of(a) * 16777216.0f;
        return sign | (uint16_t)((units + 8388608.0f) - 8388608.0f);
    }
    return sign | (uint16_t)((a + 0xFFF + (a >> 13 & 1) - 0x38000000) >> 13);
}

static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = h >> 10 & 0x1F, mant = h & 0x3FF;
    if (e == 0) {
        float v = (float)mant / 16777216.0f;
        return sign ? -v : v;
    }
    if (e == 31) return float_of(sign | 0x7F800000 | mant << 13);
    return float_of(sign | (e + 112) << 23 | mant << 13);
}

static float bf16_to_f32(uint16_t h) {
    return float_of((uint32_t)h << 16);
}

/* ---- inputs ---- */

static moert_status convert_input(run_state *st, int64_t i, const char *file) {
    const moert_tensor_info *t = &st->info->inputs[i];
    moert_npy *a = &st->files[i];
    moert_dtype want = (moert_dtype)t->dtype;
    int widened = a->dtype == MOERT_F32 && (want == MOERT_F16 || want == MOERT_BF16);
    if (a->dtype == want) {
        st->in[i] = a->data;
        return MOERT_OK;
    }
    if (!widened)
        return moert_fail(MOERT_ERR_ARGUMENT, "%s: expected %s data for input '%s', found %s", file,
                          moert_dtype_name(want), t->name, moert_dtype_name(a->dtype));
    int ok;
    size_t n = moert_nbytes(a->dims, a->rank, 1, &ok);
    uint16_t *h = malloc(n * 2 + 2);
    if (!h) return moert_fail(MOERT_ERR_MEMORY, "%s: cannot allocate the converted input", file);
    const float *f = a->data;
    for (size_t k = 0; k < n; k++)
        h[k] = want == MOERT_F16 ? f32_to_f16(f[k]) : f32_to_bf16(f[k]);
    st->converted[i] = h;
    st->in[i] = h;
    return MOERT_OK;
}

static moert_status load_inputs(run_state *st, const cli *c) {
    for (int64_t i = 0; i < st->info->num_inputs; i++) {
        const binding *b = NULL;
        for (int k = 0; k < c->n_inputs; k++)
            if (name_is(&c->inputs[k], st->info->inputs[i].name)) b = &c->inputs[k];
        if (!b)
            return moert_fail(MOERT_ERR_ARGUMENT, "missing --input %s=FILE.npy",
                              st->info->inputs[i].name);
        moert_status s = moert_npy_read(b->value, &st->files[i]);
        if (s == MOERT_OK) s = convert_input(st, i, b->value);
        if (s == MOERT_OK) s = bind_dims(st, &st->info->inputs[i], b->value, &st->files[i]);
        if (s != MOERT_OK) return s;
    }
    return MOERT_OK;
}

/* Every name on the command line must be the model's, and named once. */
static moert_status check_names(const moert_model_info *info, const cli *c) {
    const struct {
        const binding *b;
        int n;
        const char *what;
        const moert_tensor_info *ts;
        int64_t nts;
    } lists[2] = {{c->inputs, c->n_inputs, "input", info->inputs, info->num_inputs},
                  {c->outputs, c->n_outputs, "output", info->outputs, info->num_outputs}};
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < lists[l].n; k++) {
            const binding *b = &lists[l].b[k];
            if (find_tensor(lists[l].ts, lists[l].nts, b) < 0)
                return moert_fail(MOERT_ERR_ARGUMENT, "the model has no %s named '%.*s'",
                                  lists[l].what, (int)b->len, b->name);
            for (int j = 0; j < k; j++)
                if (same_name(&lists[l].b[j], b))
                    return moert_fail(MOERT_ERR_ARGUMENT, "%s '%.*s' is given twice", lists[l].what,
                                      (int)b->len, b->name);
        }
    return MOERT_OK;
}

static moert_status apply_syms(run_state *st, const cli *c) {
    for (int k = 0; k < c->n_syms; k++) {
        const binding *b = &c->syms[k];
        int64_t s = -1;
        for (int64_t j = 0; j < st->info->num_symbols; j++)
            if (name_is(b, st->info->symbols[j].name)) s = j;
        if (s < 0)
            return moert_fail(MOERT_ERR_ARGUMENT, "the model has no symbol named '%.*s'",
                              (int)b->len, b->name);
        if (b->number > st->info->symbols[s].max)
            return moert_fail(MOERT_ERR_ARGUMENT, "--sym %s=%lld is above its max %lld",
                              st->info->symbols[s].name, (long long)b->number,
                              (long long)st->info->symbols[s].max);
        st->syms[s] = b->number;
    }
    return MOERT_OK;
}

/* ---- outputs ---- */

static moert_status alloc_outputs(run_state *st) {
    const moert_model_info *info = st->info;
    for (int64_t s = 0; s < info->num_symbols; s++)
        if (st->syms[s] < 0)
            return moert_fail(MOERT_ERR_ARGUMENT, "no input sets %s; pass --sym %s=N",
                              info->symbols[s].name, info->symbols[s].name);
    for (int64_t i = 0; i < info->num_outputs; i++) {
        const moert_tensor_info *t = &info->outputs[i];
        int64_t *dims = &st->out_dims[8 * i];
        if (t->rank < 0 || t->rank > 8)
            return moert_fail(MOERT_ERR_INTERNAL, "output '%s' has rank %lld", t->name,
                              (long long)t->rank);
        for (int64_t k = 0; k < t->rank; k++)
            dims[k] = t->dims[k].c * (t->dims[k].sym >= 0 ? st->syms[t->dims[k].sym] : 1);
        int ok;
        size_t bytes = moert_nbytes(dims, t->rank, moert_dtype_size((moert_dtype)t->dtype), &ok);
        st->out[i] = ok ? calloc(1, bytes + 1) : NULL;
        if (!st->out[i])
            return moert_fail(MOERT_ERR_MEMORY, "cannot allocate output '%s'", t->name);
    }
    return MOERT_OK;
}

/* Element k of an output as a double, halves widened. */
static double element(const void *p, moert_dtype dt, size_t k) {
    switch (dt) {
    case MOERT_F32: return ((const float *)p)[k];
    case MOERT_F16: return f16_to_f32(((const uint16_t *)p)[k]);
    case MOERT_BF16: return bf16_to_f32(((const uint16_t *)p)[k]);
    case MOERT_I32: return ((const int32_t *)p)[k];
    case MOERT_I64: return (double)((const int64_t *)p)[k];
    case MOERT_BOOL: return ((const unsigned char *)p)[k] != 0;
    case MOERT_Q8:
    case MOERT_Q4: break; /* quantized: params only, never an output */
    }
    return 0;
}

static moert_status write_output(const run_state *st, int64_t i, const char *file) {
    const moert_tensor_info *t = &st->info->outputs[i];
    moert_dtype dt = (moert_dtype)t->dtype;
    const int64_t *dims = &st->out_dims[8 * i];
    if (dt != MOERT_F16 && dt != MOERT_BF16)
        return moert_npy_write(file, dt, t->rank, dims, st->out[i]);
    int ok;
    size_t n = moert_nbytes(dims, t->rank, 1, &ok);
    float *wide = malloc(n * sizeof *wide + 1);
    if (!wide) return moert_fail(MOERT_ERR_MEMORY, "%s: cannot allocate the widened output", file);
    for (size_t k = 0; k < n; k++)
        wide[k] = (float)element(st->out[i], dt, k);
    moert_status s = moert_npy_write(file, MOERT_F32, t->rank, dims, wide);
    free(wide);
    return s;
}

static moert_status write_outputs(const run_state *st, const cli *c) {
    for (int k = 0; k < c->n_outputs; k++) {
        int64_t i = find_tensor(st->info->outputs, st->info->num_outputs, &c->outputs[k]);
        moert_status s = write_output(st, i, c->outputs[k].value);
        if (s != MOERT_OK) return s;
    }
    return MOERT_OK;
}

/* The same line `moec run --interp` prints, so the two engines read alike. */
static void summarize(const run_state *st) {
    for (int64_t i = 0; i < st->info->num_outputs; i++) {
        const moert_tensor_info *t = &st->info->outputs[i];
        const int64_t *dims = &st->out_dims[8 * i];
        int ok;
        size_t n = moert_nbytes(dims, t->rank, 1, &ok);
        printf("%s: %s[", t->name, moert_dtype_name((moert_dtype)t->dtype));
        for (int64_t d = 0; d < t->rank; d++)
            printf("%s%lld", d ? "," : "", (long long)dims[d]);
        printf("]");
        if (n == 0) {
            printf(" (empty)\n");
            continue;
        }
        double sum = 0, lo = element(st->out[i], (moert_dtype)t->dtype, 0), hi = lo;
        for (size_t k = 0; k < n; k++) {
            double v = element(st->out[i], (moert_dtype)t->dtype, k);
            sum += v;
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        printf(" mean=%.6g min=%.6g max=%.6g first=[", sum / (double)n, lo, hi);
        for (size_t k = 0; k < n && k < 4; k++)
            printf("%s%.6g", k ? ", " : "", element(st->out[i], (moert_dtype)t->dtype, k));
        printf("%s]\n", n > 4 ? ", ..." : "");
    }
}

/* ---- running ---- */

static moert_status run_once(const run_state *st, const moert_model_desc *d) {
    return d->run(st->m, st->syms, (const void *const *)st->in, (void *const *)st->out);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One untimed warm-up (page faults, pool start-up), then n timed runs. */
static moert_status bench(const run_state *st, const moert_model_desc *d, long n) {
    double *ms = malloc(sizeof *ms * (size_t)n);
    if (!ms) return moert_fail(MOERT_ERR_MEMORY, "cannot allocate %ld timings", n);
    moert_status s = run_once(st, d);
    for (long i = 0; i < n && s == MOERT_OK; i++) {
        double t0 = now_ms();
        s = run_once(st, d);
        ms[i] = now_ms() - t0;
    }
    if (s == MOERT_OK) {
        qsort(ms, (size_t)n, sizeof *ms, by_value);
        double median = n % 2 ? ms[n / 2] : (ms[n / 2 - 1] + ms[n / 2]) / 2;
        printf("bench: %ld runs, min %.3f ms, median %.3f ms, max %.3f ms\n", n, ms[0], median,
               ms[n - 1]);
    }
    free(ms);
    return s;
}

static moert_status alloc_state(run_state *st, const moert_model_info *info) {
    size_t ni = (size_t)info->num_inputs + 1, no = (size_t)info->num_outputs + 1;
    st->info = info;
    st->syms = malloc(sizeof *st->syms * ((size_t)info->num_symbols + 1));
    st->files = calloc(ni, sizeof *st->files);
    st->in = calloc(ni, sizeof *st->in);
    st->converted = calloc(ni, sizeof *st->converted);
    st->out = calloc(no, sizeof *st->out);
    st->out_dims = calloc(no * 8, sizeof *st->out_dims);
    if (!st->syms || !st->files || !st->in || !st->converted || !st->out || !st->out_dims)
        return moert_fail(MOERT_ERR_MEMORY, "out of memory");
    for (int64_t s = 0; s < info->num_symbols; s++)
        st->syms[s] = -1;
    return MOERT_OK;
}

static void free_state(run_state *st) {
    for (int64_t i = 0; st->files && i < st->info->num_inputs; i++) {
        moert_npy_free(&st->files[i]);
        if (st->converted) free(st->converted[i]);
    }
    for (int64_t i = 0; st->out && i < st->info->num_outputs; i++)
        free(st->out[i]);
    free(st->syms), free(st->files), free(st->in), free(st->converted);
    free(st->out), free(st->out_dims);
    moert_model_destroy(st->m);
}

/* Training: `steps` steps on the same inputs, each scalar output printed per step, then
 * the weights written if asked. */
static moert_status train(const run_state *st, const moert_model_desc *d, const cli *c) {
    moert_status s = MOERT_OK;
    long steps = c->steps ? c->steps : 1;
    for (long k = 1; k <= steps && s == MOERT_OK; k++) {
        s = run_once(st, d);
        if (s != MOERT_OK || steps == 1) continue;
        printf("step %ld:", k);
        for (int64_t i = 0; i < st->info->num_outputs; i++)
            if (st->info->outputs[i].rank == 0)
                printf(" %s=%.6g", st->info->outputs[i].name,
                       element(st->out[i], (moert_dtype)st->info->outputs[i].dtype, 0));
        printf("\n");
    }
    if (s == MOERT_OK && c->save) s = moert_model_save_weights(st->m, c->save);
    return s;
}

static moert_status check_train_flags(const moert_model_info *info, const cli *c) {
    if (!info->train && (c->steps || c->save))
        return moert_fail(MOERT_ERR_ARGUMENT,
                          "--steps and --save-weights need a model built with --mode=train");
    return MOERT_OK;
}

static moert_status drive(run_state *st, const moert_model_desc *d, const cli *c) {
    moert_status s = alloc_state(st, d->info);
    if (s == MOERT_OK) s = check_train_flags(d->info, c);
    if (s == MOERT_OK) s = check_names(d->info, c);
    if (s == MOERT_OK) s = apply_syms(st, c);
    if (s == MOERT_OK) s = load_inputs(st, c);
    if (s == MOERT_OK) s = alloc_outputs(st);
    if (s == MOERT_OK) s = moert_model_create(d, c->weights, &st->m);
    if (s == MOERT_OK)
        s = c->bench ? bench(st, d, c->bench) : d->info->train ? train(st, d, c) : run_once(st, d);
    if (s == MOERT_OK && c->bench && c->save) s = moert_model_save_weights(st->m, c->save);
    if (s == MOERT_OK) s = write_outputs(st, c);
    if (s == MOERT_OK && !c->n_outputs && !c->bench) summarize(st);
    return s;
}

static const char *base_name(const char *path) {
    const char *slash = path ? strrchr(path, '/') : NULL;
    return slash ? slash + 1 : path ? path : "model";
}

int moert_driver_main(int argc, char **argv, const moert_model_desc *d) {
    const char *prog = base_name(argc > 0 ? argv[0] : NULL);
    if (!d || !d->info || !d->run) {
        fprintf(stderr, "%s: no model description\n", prog);
        return 1;
    }
    size_t cap = argc > 0 ? (size_t)argc : 1;
    cli c = {calloc(cap, sizeof(binding)), calloc(cap, sizeof(binding)),
             calloc(cap, sizeof(binding))};
    int rc = c.inputs && c.outputs && c.syms ? parse_cli(argc, argv, prog, &c) : 1;
    if (rc == 1) fprintf(stderr, "%s: out of memory\n", prog);
    if (rc == 2 || rc == -1) usage(rc == 2 ? stderr : stdout, prog, d->info);
    if (rc == 0) {
        run_state st = {0};
        if (drive(&st, d, &c) != MOERT_OK) {
            fprintf(stderr, "%s: %s\n", prog, moert_last_error());
            rc = 1;
        }
        free_state(&st);
    }
    free(c.inputs), free(c.outputs), free(c.syms);
    return rc < 0 ? 0 : rc;
}
