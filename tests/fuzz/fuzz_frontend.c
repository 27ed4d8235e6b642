/* libFuzzer target: arbitrary bytes as a model file. Loading, shape inference and the
 * verifier must reject bad input with a diagnostic: never crash, hang or leak. */
#include "frontend.h"

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    mc_diag d;
    mc_diag_init(&d, "fuzz.json");
    /* Declared sizes are legal up to what the machine holds; a limit keeps the fuzzer's
     * memory and time bounded while the limit's own diagnostic path gets exercised (64 MiB
     * of seeded normal weights took over the 10 s timeout under the sanitizers). */
    mc_load_opts lo = {.max_init_bytes = 4 << 20};
    mc_graph *g = mc_load_model_from_memory((const char *)data, size, "fuzz.json", NULL, &lo, &d);
    if (g && mc_infer_shapes(g, &d)) mc_verify(g, &d);
    mc_graph_free(g);
    return 0;
}
