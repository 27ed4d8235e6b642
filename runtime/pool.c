/* runtime/pool.c: the thread pool behind moert_parallel_for. Workers start on first
 * use and live for the process; each call hands out chunks through an atomic counter,
 * guided: each grab takes a share of what is left, so the first chunks are large and
 * the last ones small, and threads finish together however uneven the tasks are.
 * Between calls workers poll for a while before they sleep, and so does the caller
 * waiting for them: a model runs several calls back to back, and a condition
 * variable's wake-up costs tens of microseconds each time (a decode step is ~1 ms).
 * Concurrent calls from different host threads take turns; a call from inside a task
 * runs serially instead of deadlocking. */
#include "moert.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

enum { MAX_THREADS = 256, SPINS = 20000 };

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

typedef struct job {
    moert_task_fn fn;
    void *ctx;
    int64_t n, grain, threads;
    atomic_int_fast64_t next;
    atomic_int active; /* workers still inside this job */
} job;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t call_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static _Atomic(job *) current;
static atomic_uint_fast64_t generation; /* written under mu, read by polling too */
static int num_threads = 1;             /* including the caller */
static _Thread_local int inside_task;

/* The next chunk: half of an even share of what is left, at least grain. */
static bool grab(job *j, int64_t *begin, int64_t *end) {
    int_fast64_t b = atomic_load(&j->next), size;
    do {
        if (b >= j->n) return false;
        size = (j->n - b) / (2 * j->threads);
        if (size < j->grain) size = j->grain;
        if (size > j->n - b) size = j->n - b;
    } while (!atomic_compare_exchange_weak(&j->next, &b, b + size));
    *begin = b;
    *end = b + size;
    return true;
}

static void run_chunks(job *j) {
    int64_t begin, end;
    while (grab(j, &begin, &end))
        j->fn(j->ctx, begin, end);
}

/* Polls `done(arg)` for a while; true if it came true. */
static bool poll_for(bool (*done)(const void *), const void *arg) {
    for (int i = 0; i < SPINS; i++) {
        if (done(arg)) return true;
        CPU_RELAX();
    }
    return done(arg);
}

static bool new_generation(const void *seen) {
    return atomic_load(&generation) != *(const uint64_t *)seen;
}

static bool job_finished(const void *j) {
    return atomic_load(&((job *)j)->active) == 0;
}

static void *worker(void *arg) {
    (void)arg;
    inside_task = 1;
    uint64_t seen = 0;
    for (;;) {
        if (!poll_for(new_generation, &seen)) {
            pthread_mutex_lock(&mu);
            while (!new_generation(&seen))
                pthread_cond_wait(&work_cv, &mu);
            pthread_mutex_unlock(&mu);
        }
        /* The job stays current until this worker leaves it (active counts it). */
        seen = atomic_load(&generation);
        job *j = atomic_load(&current);
        run_chunks(j);
        if (atomic_fetch_sub(&j->active, 1) == 1) {
            pthread_mutex_lock(&mu);
            pthread_cond_signal(&done_cv);
            pthread_mutex_unlock(&mu);
        }
    }
    return NULL;
}

static int wanted_threads(void) {
    const char *env = getenv("MOERT_NUM_THREADS");
    long n = env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    return n > MAX_THREADS ? MAX_THREADS : (int)n;
}

/* A worker that fails to start just means a smaller pool. */
static void start_pool(void) {
    int want = wanted_threads();
    for (int i = 1; i < want; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, worker, NULL) != 0) break;
        pthread_detach(t);
        num_threads++;
    }
}

int moert_num_threads(void) {
    pthread_once(&once, start_pool);
    return num_threads;
}

void moert_parallel_for(int64_t n, int64_t grain, moert_task_fn fn, void *ctx) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    int threads = moert_num_threads();
    if (inside_task || threads == 1 || n <= grain) {
        fn(ctx, 0, n);
        return;
    }
    job j = {.fn = fn, .ctx = ctx, .n = n, .grain = grain, .threads = threads};
    atomic_init(&j.next, 0);
    atomic_init(&j.active, threads - 1);
    pthread_mutex_lock(&call_mu);
    pthread_mutex_lock(&mu);
    atomic_store(&current, &j);
    atomic_fetch_add(&generation, 1);
    pthread_cond_broadcast(&work_cv);
    pthread_mutex_unlock(&mu);
    inside_task = 1;
    run_chunks(&j);
    inside_task = 0;
    if (!poll_for(job_finished, &j)) {
        pthread_mutex_lock(&mu);
        while (!job_finished(&j))
            pthread_cond_wait(&done_cv, &mu);
        pthread_mutex_unlock(&mu);
    }
    pthread_mutex_unlock(&call_mu);
}
