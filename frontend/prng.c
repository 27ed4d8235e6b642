/* frontend/prng.c: seeded init recipes, bit-identical on every machine. The generator
 * is splitmix64; normals use the Marsaglia polar method with a logarithm written here
 * from + - * / only (and IEEE sqrt, which is exact), so no libm version can change a
 * weight. This file is compiled with -ffp-contract=off so no FMA changes rounding.
 * docs/format.md states the algorithm so that others can reproduce it.
 * Large tensors are filled in chunks on threads, each chunk from the generator state
 * where the serial definition stands at its first value; a normal pair consumes a
 * variable number of draws, so a cheap serial pass that replays only the rejection test
 * finds those states before the costly logarithms and square roots run in parallel. */
#include "frontend.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* splitmix64 adds this to its state on every draw. */
#define SPLITMIX_STEP 0x9E3779B97F4A7C15ull
/* Values per chunk of a threaded fill. Even, so no normal pair straddles two chunks. */
#define CHUNK_VALUES     ((int64_t)1 << 16)
#define MAX_FILL_THREADS 64

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += SPLITMIX_STEP);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits. */
static double uniform01(uint64_t *state) {
    return (double)(splitmix64(state) >> 11) * 0x1.0p-53;
}

enum { BATCH = 64 }; /* normal pairs whose logarithms are taken together */

/* f[i] = sqrt(-2 ln(s[i]) / s[i]) for n <= BATCH values s[i] in (0, 1): ln from + - * /
 * only. s = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(t), t = (m-1)/(m+1),
 * |t| < 0.172, by its series to t^23. A batch at a time so that the divisions
 * vectorize; each value takes the same operations in the same order as alone. s is a
 * normal double (u and v are multiples of 2^-52, so s >= 2^-104), so its exponent and
 * mantissa are read from its bits as frexp would give them. */
static void polar_factors(const double *s, double *f, int n) {
    double t2[BATCH], term[BATCH], sum[BATCH], e[BATCH];
    for (int i = 0; i < n; i++) {
        uint64_t bits;
        memcpy(&bits, &s[i], sizeof bits);
        int64_t ex = (int64_t)(bits >> 52) - 1022;
        bits = (bits & 0x000FFFFFFFFFFFFFull) | 0x3FE0000000000000ull; /* m in [0.5, 1) */
        double m;
        memcpy(&m, &bits, sizeof m);
        int low = m < 0.70710678118654752440;
        m = low ? m * 2 : m;
        e[i] = (double)(ex - low);
        double t = (m - 1) / (m + 1);
        t2[i] = t * t;
        term[i] = t;
        sum[i] = 0;
    }
    for (int k = 1; k <= 23; k += 2)
        for (int i = 0; i < n; i++) {
            sum[i] += term[i] / k;
            term[i] *= t2[i];
        }
    for (int i = 0; i < n; i++)
        f[i] = sqrt(-2 * (2 * sum[i] + e[i] * 0.69314718055994530942) / s[i]);
}

/* One try of the polar method: a point (u, v) in the square, accepted when inside the
 * unit disc (but not its centre). Normal fills and the serial pass share it, so both
 * make the same decisions. */
static bool polar_try(uint64_t *state, double *u, double *v, double *s) {
    *u = 2 * uniform01(state) - 1;
    *v = 2 * uniform01(state) - 1;
    *s = *u * *u + *v * *v;
    return !(*s >= 1) & (*s != 0); /* & not ||: see skip_normal_pairs */
}

/* Advances the state past `pairs` normal pairs without computing them. This runs
 * serially, so it avoids branching on acceptance (here and in polar_try): such a branch
 * goes one way or the other at random and mispredicts often, which made it 3x slower. */
static void skip_normal_pairs(uint64_t *state, int64_t pairs) {
    double u, v, s;
    while (pairs > 0)
        pairs -= polar_try(state, &u, &v, &s);
}

static void store(mc_dtype dt, void *out, int64_t i, double v) {
    unsigned char *b = out;
    switch (dt) {
    case MC_DT_F32: {
        float f = (float)v;
        memcpy(b + 4 * i, &f, 4);
        return;
    }
    case MC_DT_F16: {
        uint16_t h = mc_f32_to_f16((float)v);
        memcpy(b + 2 * i, &h, 2);
        return;
    }
    case MC_DT_BF16: {
        uint16_t h = mc_f32_to_bf16((float)v);
        memcpy(b + 2 * i, &h, 2);
        return;
    }
    case MC_DT_I32: {
        int32_t x = (int32_t)v;
        memcpy(b + 4 * i, &x, 4);
        return;
    }
    case MC_DT_I64: {
        int64_t x = (int64_t)v;
        memcpy(b + 8 * i, &x, 8);
        return;
    }
    case MC_DT_BOOL: b[i] = v != 0; return;
    case MC_DT_Q8:
    case MC_DT_Q4: return; /* never declared: init recipes fill declared dtypes */
    }
}

/* out[i0 + j] = vals[j] for j < n: f32 directly, other dtypes through store. */
static void store_all(mc_dtype dt, void *out, int64_t i0, const double *vals, int64_t n) {
    if (dt == MC_DT_F32) {
        float *o = (float *)out + i0;
        for (int64_t j = 0; j < n; j++)
            o[j] = (float)vals[j];
        return;
    }
    for (int64_t j = 0; j < n; j++)
        store(dt, out, i0 + j, vals[j]);
}

typedef enum { DIST_CONSTANT, DIST_UNIFORM, DIST_NORMAL } dist_kind;

static dist_kind dist_of(const mc_init_recipe *r) {
    if (strcmp(r->dist, "zeros") == 0 || strcmp(r->dist, "ones") == 0) return DIST_CONSTANT;
    if (strcmp(r->dist, "uniform") == 0) return DIST_UNIFORM;
    MC_ASSERT(strcmp(r->dist, "normal") == 0);
    return DIST_NORMAL;
}

/* Values [begin, end) of the serial definition, `state` being the generator state there
 * (begin is even for normals, the start of a pair). */
static void fill_range(const mc_init_recipe *r, mc_dtype dt, void *out, int64_t begin, int64_t end,
                       uint64_t state) {
    switch (dist_of(r)) {
    case DIST_CONSTANT:
        for (int64_t i = begin; i < end; i++)
            store(dt, out, i, r->dist[0] == 'o');
        return;
    case DIST_UNIFORM:
        for (int64_t i = begin; i < end; i++)
            store(dt, out, i, r->low + (r->high - r->low) * uniform01(&state));
        return;
    case DIST_NORMAL:
        for (int64_t i = begin; i < end;) {
            double u[BATCH], v[BATCH], s[BATCH], f[BATCH];
            int n = 0;
            for (; n < BATCH && i + 2 * n < end; n++)
                while (!polar_try(&state, &u[n], &v[n], &s[n])) {
                }
            polar_factors(s, f, n);
            double vals[2 * BATCH];
            for (int p = 0; p < n; p++) {
                vals[2 * p] = r->mean + r->std * (u[p] * f[p]);
                vals[2 * p + 1] = r->mean + r->std * (v[p] * f[p]);
            }
            int64_t count = end - i < 2 * n ? end - i : 2 * n;
            store_all(dt, out, i, vals, count);
            i += count;
        }
        return;
    }
}

/* Where the serial definition's generator stands at the start of each chunk. Uniform
 * draws advance it by a constant, so those states are found directly. */
static void find_chunk_states(const mc_init_recipe *r, int64_t nchunks, uint64_t *states) {
    if (dist_of(r) != DIST_NORMAL) {
        for (int64_t c = 0; c < nchunks; c++)
            states[c] = r->seed + (uint64_t)(c * CHUNK_VALUES) * SPLITMIX_STEP;
        return;
    }
    uint64_t state = r->seed;
    for (int64_t c = 0; c < nchunks; c++) {
        states[c] = state;
        if (c + 1 < nchunks) skip_normal_pairs(&state, CHUNK_VALUES / 2);
    }
}

typedef struct {
    const mc_init_recipe *r;
    mc_dtype dt;
    int64_t n;
    void *out;
    const uint64_t *chunk_states;
    int64_t nchunks;
    atomic_llong next_chunk;
} fill_job;

/* Fills chunks until none is left; run by every thread of the job. */
static void *fill_chunks(void *arg) {
    fill_job *j = arg;
    for (;;) {
        int64_t c = atomic_fetch_add(&j->next_chunk, 1);
        if (c >= j->nchunks) return NULL;
        int64_t begin = c * CHUNK_VALUES;
        int64_t end = j->n - begin < CHUNK_VALUES ? j->n : begin + CHUNK_VALUES;
        fill_range(j->r, j->dt, j->out, begin, end, j->chunk_states[c]);
    }
}

/* The calling thread works too; chunks a helper that failed to start would have taken
 * go to the threads that did, so a failure only makes the fill slower. */
static void run_fill_job(fill_job *j, int nthreads) {
    pthread_t helpers[MAX_FILL_THREADS];
    int started = 0;
    while (started < nthreads - 1 && pthread_create(&helpers[started], NULL, fill_chunks, j) == 0)
        started++;
    fill_chunks(j);
    for (int i = 0; i < started; i++)
        pthread_join(helpers[i], NULL);
}

void mc_init_fill_threads(const mc_init_recipe *r, mc_dtype dt, int64_t n, void *out_bytes,
                          int max_threads) {
    int64_t nchunks = (n + CHUNK_VALUES - 1) / CHUNK_VALUES;
    int64_t nthreads = max_threads < nchunks ? max_threads : nchunks;
    if (nthreads > MAX_FILL_THREADS) nthreads = MAX_FILL_THREADS;
    uint64_t *states = nthreads > 1 ? malloc(sizeof *states * (size_t)nchunks) : NULL;
    if (!states) { /* small, single-threaded, or no memory: the serial definition */
        fill_range(r, dt, out_bytes, 0, n, r->seed);
        return;
    }
    find_chunk_states(r, nchunks, states);
    fill_job j = {
        .r = r, .dt = dt, .n = n, .out = out_bytes, .chunk_states = states, .nchunks = nchunks};
    atomic_init(&j.next_chunk, 0);
    run_fill_job(&j, (int)nthreads);
    free(states);
}

static int online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_FILL_THREADS ? MAX_FILL_THREADS : (int)n;
}

void mc_init_fill(const mc_init_recipe *r, mc_dtype dt, int64_t n, void *out_bytes) {
    mc_init_fill_threads(r, dt, n, out_bytes, online_cpus());
}
