/* tests/native/shared_weights.c: instances of one model created on one weights file
 * share its packed params (runtime/weights.c), from one thread or several; a different
 * file, or the same path rewritten, gets params of its own; destroying instances in any
 * order leaves the others working (the sanitizer build watches this); a file truncated
 * under a live instance neither faults it nor loads: _create on it returns an error.
 * usage: shared_weights x.npy want.npy weights.st other.st want_other.npy other_copy.st
 * (other_copy.st is renamed over weights.st halfway through.) */
#define _POSIX_C_SOURCE 200809L /* truncate */
#include "shared_model.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

enum { THREADS = 4, NUM_PARAMS = 3 };

static moert_npy x, want, want_other;

static void fail(const char *what) {
    fprintf(stderr, "shared_weights: %s (%s)\n", what, moert_last_error());
    exit(1);
}

/* Generated instances are moert_model underneath: params is what the code reads. */
static const void *param(shared_model *m, int i) {
    return ((moert_model *)m)->params[i];
}

static shared_model *create(const char *path) {
    shared_model *m = NULL;
    if (shared_model_create(&m, path) != MOERT_OK) fail("create");
    return m;
}

static void check_run(shared_model *m, const moert_npy *expect) {
    static float y[16 * 256];
    int64_t T = x.dims[0];
    if (shared_model_run(m, T, (const float *)x.data, y) != MOERT_OK) fail("run");
    const float *w = expect->data;
    for (int64_t i = 0; i < T * 256; i++)
        if (fabsf(y[i] - w[i]) > 1e-4f + 1e-4f * fabsf(w[i])) {
            fprintf(stderr, "shared_weights: y[%lld] = %g, interpreter %g\n", (long long)i, y[i],
                    w[i]);
            exit(1);
        }
}

static void check_same(shared_model *a, shared_model *b, int same) {
    for (int i = 0; i < NUM_PARAMS; i++)
        if (!param(a, i) || (param(a, i) == param(b, i)) != same)
            fail(same ? "two instances on one file hold different params"
                      : "instances on different files share params");
}

static long resident_bytes(void) {
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2) fail("reading /proc/self/statm");
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

static void *create_in_thread(void *path) {
    return create(path);
}

static void threads_share(const char *path) {
    pthread_t t[THREADS];
    shared_model *m[THREADS];
    for (int i = 0; i < THREADS; i++)
        if (pthread_create(&t[i], NULL, create_in_thread, (void *)path)) fail("pthread_create");
    for (int i = 0; i < THREADS; i++)
        if (pthread_join(t[i], (void **)&m[i])) fail("pthread_join");
    for (int i = 1; i < THREADS; i++)
        check_same(m[0], m[i], 1);
    for (int i = 0; i < THREADS; i++) {
        check_run(m[i], &want);
        shared_model_destroy(m[i]);
    }
}

int main(int argc, char **argv) {
    if (argc != 7) return 2;
    const char *path = argv[3], *other = argv[4], *other_copy = argv[6];
    if (moert_npy_read(argv[1], &x) || moert_npy_read(argv[2], &want) ||
        moert_npy_read(argv[5], &want_other))
        fail("reading inputs");

    /* Three instances: one packed copy (8 MiB of panels), not three. */
    long none = resident_bytes();
    shared_model *a = create(path);
    long one = resident_bytes();
    shared_model *b = create(path), *c = create(path);
    long three = resident_bytes();
    check_same(a, b, 1);
    check_same(a, c, 1);
    if (three - one > 4L << 20) {
        fprintf(stderr, "shared_weights: two more instances took %ld KiB\n", (three - one) >> 10);
        return 1;
    }
    printf("shared_weights: resident set: the first instance added %ld KiB, two more %ld KiB\n",
           (one - none) >> 10, (three - one) >> 10);
    check_run(b, &want);
    shared_model_destroy(b); /* the others keep working */
    check_run(a, &want);
    check_run(c, &want);
    shared_model_destroy(a);
    shared_model_destroy(c);
    threads_share(path);

    /* Another file has its own params; the same path rewritten too. */
    shared_model *d = create(path), *e = create(other);
    check_same(d, e, 0);
    check_run(e, &want_other);
    if (rename(other_copy, path)) fail("renaming the other weights over the first");
    shared_model *f = create(path);
    check_same(d, f, 0);
    check_run(f, &want_other);
    check_run(d, &want); /* still reads the file as it was when created */
    if (truncate(other, 64)) fail("truncating the other weights file");
    check_run(e, &want_other); /* its params no longer depend on the file */
    shared_model *g = NULL;
    if (shared_model_create(&g, other) == MOERT_OK || g) fail("create on a truncated file");
    fprintf(stderr, "shared_weights: as expected: %s\n", moert_last_error());
    shared_model_destroy(d);
    shared_model_destroy(e);
    shared_model_destroy(f);
    moert_npy_free(&x);
    moert_npy_free(&want);
    moert_npy_free(&want_other);
    printf("shared_weights: ok\n");
    return 0;
}
