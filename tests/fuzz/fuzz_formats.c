/* libFuzzer target: arbitrary bytes as a .npy array, a safetensors file and an ONNX
 * model. */
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
    static const mc_sym_max maxes[] = {{"batch", 4}, {"sequence", 8}, {"N", 3}};
    mc_load_opts opts = {.sym_max = maxes, .nsym_max = 3, .max_init_bytes = 1 << 20};
    mc_diag_init(&d, "fuzz");
    mc_graph_free(mc_load_onnx(data, size, "fuzz.onnx", NULL, &opts, &d));
    return 0;
}
