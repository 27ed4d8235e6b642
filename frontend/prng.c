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

/* ln(x) for x > 0: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then
 * ln m = 2 atanh(t), t = (m-1)/(m+1), |t| < 0.172, by its series to t^23. */
static double det_log(double x) {
    int e;
    double m = frexp(x, &e);
    if (m < 0.70710678118654752440) {
        m *= 2;
        e--;
    }
    double t = (m - 1) / (m + 1), t2 = t * t, term = t, sum = 0;
    for (int k = 1; k <= 23; k += 2) {
        sum += term / k;
        term *= t2;
    }
    return 2 * sum + e * 0.69314718055994530942;
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

/* Two independent standard normals. */
static void normal_pair(uint64_t *state, double *a, double *b) {
    double u, v, s;
    while (!polar_try(state, &u, &v, &s)) {
    }
    double f = sqrt(-2 * det_log(s) / s);
    *a = u * f;
    *b = v * f;
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
    }
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
        for (int64_t i = begin; i < end; i += 2) {
            double a, b;
            normal_pair(&state, &a, &b);
            store(dt, out, i, r->mean + r->std * a);
            if (i + 1 < end) store(dt, out, i + 1, r->mean + r->std * b);
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
