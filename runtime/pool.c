/* runtime/pool.c: the thread pool behind moert_parallel_for. Workers start on first
 * use and live for the process; each call hands out chunks through an atomic counter
 * so uneven chunks balance themselves. Concurrent calls from different host threads
 * take turns; a call from inside a task runs serially instead of deadlocking. */
#include "moert.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

enum { MAX_THREADS = 256 };

typedef struct job {
    moert_task_fn fn;
    void *ctx;
    int64_t n, chunk;
    atomic_int_fast64_t next;
    atomic_int active; /* workers still inside this job */
} job;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t call_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER;
static job *current;
static uint64_t generation;
static int num_threads = 1; /* including the caller */
static _Thread_local int inside_task;

static void run_chunks(job *j) {
    for (;;) {
        int64_t begin = atomic_fetch_add(&j->next, j->chunk);
        if (begin >= j->n) return;
        int64_t end = begin + j->chunk < j->n ? begin + j->chunk : j->n;
        j->fn(j->ctx, begin, end);
    }
}

static void *worker(void *arg) {
    (void)arg;
    inside_task = 1;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&mu);
        while (generation == seen)
            pthread_cond_wait(&work_cv, &mu);
        seen = generation;
        job *j = current;
        pthread_mutex_unlock(&mu);
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
    int64_t chunk = (n + (int64_t)threads * 4 - 1) / ((int64_t)threads * 4);
    job j = {.fn = fn, .ctx = ctx, .n = n, .chunk = chunk < grain ? grain : chunk};
    atomic_init(&j.next, 0);
    atomic_init(&j.active, threads - 1);
    pthread_mutex_lock(&call_mu);
    pthread_mutex_lock(&mu);
    current = &j;
    generation++;
    pthread_cond_broadcast(&work_cv);
    pthread_mutex_unlock(&mu);
    inside_task = 1;
    run_chunks(&j);
    inside_task = 0;
    pthread_mutex_lock(&mu);
    while (atomic_load(&j.active) > 0)
        pthread_cond_wait(&done_cv, &mu);
    pthread_mutex_unlock(&mu);
    pthread_mutex_unlock(&call_mu);
}
