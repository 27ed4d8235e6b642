/* runtime/moert.h: libmoert, what generated code and drivers need at run time and
 * nothing more. The only header generated code includes. Dependency-free C11 plus
 * POSIX threads; never aborts the host program: every failure is a status with a
 * message. */
#ifndef MOERT_H
#define MOERT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum moert_status {
    MOERT_OK = 0,
    MOERT_ERR_ARGUMENT = 1, /* NULL buffer, symbol above its max, bad size */
    MOERT_ERR_MEMORY = 2,   /* allocation failed */
    MOERT_ERR_IO = 3,       /* file missing or unreadable */
    MOERT_ERR_FORMAT = 4,   /* weights or .npy file malformed or not matching */
    MOERT_ERR_INTERNAL = 5
} moert_status;

/* The message of the last failure on this thread ("" after success). */
const char *moert_last_error(void);
const char *moert_status_name(moert_status s);
/* Records a message for the calling thread and returns `s`. */
moert_status moert_fail(moert_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One aligned block sized from the memory plan, allocated once at create time. */
enum { MOERT_ALIGN = 64 };
typedef struct moert_arena {
    unsigned char *base;
    size_t size;
} moert_arena;
moert_status moert_arena_init(moert_arena *a, size_t size);
void moert_arena_release(moert_arena *a);

/* fn(ctx, begin, end) over [0, n) split into contiguous chunks of at least `grain`
 * iterations, run on the pool (MOERT_NUM_THREADS threads, default: all cores). The
 * calling thread works too. Calls may not nest: a nested call runs serially. */
typedef void (*moert_task_fn)(void *ctx, int64_t begin, int64_t end);
void moert_parallel_for(int64_t n, int64_t grain, moert_task_fn fn, void *ctx);
int moert_num_threads(void);

#ifdef __cplusplus
}
#endif
#endif
