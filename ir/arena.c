/* ir/arena.c: the one allocation function, the arena every graph owns, and the
 * always-on invariant check. Everything moec allocates goes through mc_alloc so that a
 * test can make the N-th allocation fail (mc_alloc_fail_after). */
#include "ir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long fail_countdown = -1;

void mc_alloc_fail_after(long n) {
    fail_countdown = n;
}

static bool injected_failure(void) {
    if (fail_countdown < 0) return false;
    if (fail_countdown == 0) {
        fail_countdown = -1;
        return true;
    }
    fail_countdown--;
    return false;
}

void *mc_alloc(size_t n) {
    if (injected_failure()) return NULL;
    return malloc(n ? n : 1);
}

void *mc_realloc(void *p, size_t n) {
    if (injected_failure()) return NULL;
    return realloc(p, n ? n : 1);
}

void mc_free(void *p) {
    free(p);
}

_Noreturn void mc_oom(size_t n) {
    fprintf(stderr, "moec: out of memory allocating %zu bytes\n", n);
    abort();
}

_Noreturn void mc_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("moec: internal error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

/* Chunks are chained; big requests get a chunk of their own. */
typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char mem[];
} chunk;

typedef struct cleanup {
    struct cleanup *next;
    void (*fn)(void *);
    void *ctx;
} cleanup;

struct mc_arena {
    chunk *head;
    cleanup *cleanups;
};

enum { CHUNK_SIZE = 64 * 1024 };

mc_arena *mc_arena_new(void) {
    mc_arena *a = mc_alloc(sizeof *a);
    if (!a) mc_oom(sizeof *a);
    memset(a, 0, sizeof *a);
    return a;
}

void mc_arena_free(mc_arena *a) {
    if (!a) return;
    for (cleanup *c = a->cleanups; c;) {
        cleanup *next = c->next;
        c->fn(c->ctx);
        c = next;
    }
    for (chunk *c = a->head; c;) {
        chunk *next = c->next;
        mc_free(c);
        c = next;
    }
    mc_free(a);
}

static chunk *new_chunk(size_t cap) {
    if (cap > SIZE_MAX - sizeof(chunk)) mc_oom(cap);
    chunk *c = mc_alloc(sizeof(chunk) + cap);
    if (!c) mc_oom(sizeof(chunk) + cap);
    c->next = NULL;
    c->used = 0;
    c->cap = cap;
    return c;
}

void *mc_arena_alloc(mc_arena *a, size_t n) {
    if (n > SIZE_MAX - 15) mc_oom(n);
    n = (n + 15) & ~(size_t)15;
    chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        c = new_chunk(n > CHUNK_SIZE / 4 ? n : CHUNK_SIZE);
        /* A dedicated big chunk goes behind the head so the head keeps filling. */
        if (a->head && n > CHUNK_SIZE / 4) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->mem + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *mc_arena_strdup(mc_arena *a, const char *s) {
    size_t n = strlen(s) + 1;
    char *p = mc_arena_alloc(a, n);
    memcpy(p, s, n);
    return p;
}

char *mc_arena_printf(mc_arena *a, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    MC_ASSERT(n >= 0);
    char *p = mc_arena_alloc(a, (size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}

void mc_arena_on_free(mc_arena *a, void (*fn)(void *), void *ctx) {
    cleanup *c = mc_arena_alloc(a, sizeof *c);
    c->fn = fn;
    c->ctx = ctx;
    c->next = a->cleanups;
    a->cleanups = c;
}
