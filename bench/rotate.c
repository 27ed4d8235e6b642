/* bench/rotate.c: times a compiled moec model on a pool of inputs, each call taking the
 * next batch, so that a decode step reads the weights of the experts its tokens route to
 * rather than finding the same ones in cache (the `moec build` driver's --bench runs one
 * input over and over). Built by bench/mixtral_bench.py against the header of
 * `moec compile model.json -o m.o --header m.h`, for a model with one f32 input [T, D]
 * and one f32 output [T, D]:
 *   cc -O2 -DMODEL=<name> -DMODEL_HEADER='"m.h"' -I. -Iruntime rotate.c m.o libmoert.a
 *      -lpthread -lm
 *
 * usage: rotate POOL.npy CALLS Y.npy
 *   POOL.npy: f32 [P, T, D], P batches of T tokens.
 * One untimed pass over the pool (warm-up; its outputs, [P, T, D], go to Y.npy for the
 * caller to check), then CALLS timed calls, call i on batch i mod P. Prints
 * "times_ms t_0 ... t_{CALLS-1}". Threads: MOERT_NUM_THREADS, as for any moec model. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include MODEL_HEADER

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define CAT2(a, b) a##b
#define CAT(a, b)  CAT2(a, b)
#define FN(suffix) CAT(MODEL, suffix)

static int fail(const char *what) {
    fprintf(stderr, "rotate: %s: %s\n", what, moert_last_error());
    return 1;
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: rotate POOL.npy CALLS Y.npy\n");
        return 2;
    }
    long calls = atol(argv[2]);
    moert_npy pool;
    if (calls < 1 || moert_npy_read(argv[1], &pool) != MOERT_OK) return fail("reading the pool");
    const moert_model_info *info = FN(_info)();
    int64_t P = pool.dims[0], T = pool.dims[1], D = pool.dims[2];
    if (pool.dtype != MOERT_F32 || pool.rank != 3 || info->num_inputs != 1 ||
        info->num_outputs != 1 || info->inputs[0].dims[1].c != D || P < 1)
        return fail("the pool is not f32 [P, T, D] for this model");
    MODEL *m = NULL; /* the model's type has the model's name */
    if (FN(_create)(&m, NULL) != MOERT_OK) return fail("create");
    float *ys = malloc(sizeof(float) * (size_t)(P * T * D) + 1);
    double *ms = malloc(sizeof(double) * (size_t)calls);
    if (!ys || !ms) return fail("allocating outputs");
    const float *x = pool.data;
    for (int64_t p = 0; p < P; p++)
        if (FN(_run)(m, T, x + p * T * D, ys + p * T * D) != MOERT_OK) return fail("run");
    int64_t dims[3] = {P, T, D};
    if (moert_npy_write(argv[3], MOERT_F32, 3, dims, ys) != MOERT_OK) return fail("writing Y");
    for (long i = 0; i < calls; i++) {
        int64_t p = i % P;
        double t0 = now_ms();
        if (FN(_run)(m, T, x + p * T * D, ys + p * T * D) != MOERT_OK) return fail("run");
        ms[i] = now_ms() - t0;
    }
    printf("times_ms");
    for (long i = 0; i < calls; i++)
        printf(" %.4f", ms[i]);
    printf("\n");
    FN(_destroy)(m);
    moert_npy_free(&pool);
    free(ys);
    free(ms);
    return 0;
}
