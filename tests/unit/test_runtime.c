/* Unit tests for libmoert: status messages, the aligned arena, moert_parallel_for. */
#include "moert.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

Test(status, fail_records_message_per_thread) {
    cr_assert_eq(moert_fail(MOERT_ERR_ARGUMENT, "T is %d but must be at most %d", 5000, 4096),
                 MOERT_ERR_ARGUMENT);
    cr_assert_str_eq(moert_last_error(), "T is 5000 but must be at most 4096");
    cr_assert_str_eq(moert_status_name(MOERT_ERR_FORMAT), "bad file format");
}

Test(arena, aligned_and_rounded) {
    moert_arena a;
    cr_assert_eq(moert_arena_init(&a, 100), MOERT_OK);
    cr_assert_eq((uintptr_t)a.base % MOERT_ALIGN, 0);
    cr_assert_eq(a.size, 128);
    moert_arena_release(&a);
    cr_assert_null(a.base);
    cr_assert_eq(moert_arena_init(&a, 0), MOERT_OK);
    cr_assert_null(a.base);
}

Test(arena, impossible_size_is_a_status) {
    moert_arena a;
    cr_assert_eq(moert_arena_init(&a, SIZE_MAX - 8), MOERT_ERR_MEMORY);
    cr_assert_null(a.base);
}

typedef struct {
    atomic_int *hits;
    atomic_long calls;
} cover_ctx;

static void mark(void *p, int64_t begin, int64_t end) {
    cover_ctx *c = p;
    atomic_fetch_add(&c->calls, 1);
    for (int64_t i = begin; i < end; i++)
        atomic_fetch_add(&c->hits[i], 1);
}

static void check_cover(int64_t n, int64_t grain) {
    cover_ctx c = {calloc((size_t)n + 1, sizeof(atomic_int)), 0};
    moert_parallel_for(n, grain, mark, &c);
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(atomic_load(&c.hits[i]), 1, "index %ld", (long)i);
    free(c.hits);
}

Test(pool, every_index_exactly_once) {
    check_cover(1, 1);
    check_cover(7, 1);
    check_cover(1000, 3);
    check_cover(100003, 64);
    moert_parallel_for(0, 1, mark, NULL); /* n = 0 calls nothing */
}

static void nested(void *p, int64_t begin, int64_t end) {
    cover_ctx *c = p;
    for (int64_t i = begin; i < end; i++)
        moert_parallel_for(1, 1, mark, &c[1 + i]);
}

Test(pool, nested_calls_run_serially) {
    cover_ctx cs[9];
    for (int i = 0; i < 9; i++)
        cs[i] = (cover_ctx){calloc(1, sizeof(atomic_int)), 0};
    moert_parallel_for(8, 1, nested, cs);
    for (int i = 1; i < 9; i++) {
        cr_assert_eq(atomic_load(&cs[i].hits[0]), 1);
        free(cs[i].hits);
    }
    free(cs[0].hits);
}

Test(pool, thread_count_from_environment) {
    /* The pool is sized once per process; MOERT_NUM_THREADS is read then. This test
     * runs in its own process (Criterion forks), so setting it here takes effect. */
    setenv("MOERT_NUM_THREADS", "3", 1);
    cr_assert_eq(moert_num_threads(), 3);
    check_cover(10007, 1);
}
