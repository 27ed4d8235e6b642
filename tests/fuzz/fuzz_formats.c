/* libFuzzer target: arbitrary bytes as a .npy array and as a safetensors file. */
#include "frontend.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mc_diag d;
    mc_diag_init(&d, "fuzz");
    mc_npy a;
    if (mc_npy_parse(data, size, &a, &d)) mc_npy_free(&a);
    mc_arena *arena = mc_arena_new();
    mc_safetensors st;
    mc_diag_init(&d, "fuzz");
    mc_st_parse(&st, data, size, arena, &d);
    mc_arena_free(arena);
    return 0;
}
