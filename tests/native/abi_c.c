/* tests/native/abi_c.c: a C11 program using a generated header the way a user would:
 * create, run on a .npy input, compare with the interpreter's output, destroy.
 * usage: abi_c x.npy want_y.npy want_expert.npy [weights.safetensors] */
#include "abi_model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static int fail(const char *what) {
    fprintf(stderr, "abi_c: %s: %s\n", what, moert_last_error());
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    moert_npy x, want_y, want_e;
    if (moert_npy_read(argv[1], &x) || moert_npy_read(argv[2], &want_y) ||
        moert_npy_read(argv[3], &want_e))
        return fail("reading inputs");
    const moert_model_info *info = abi_model_info();
    if (strcmp(info->name, "abi_model") != 0 || info->num_inputs != 1 || info->num_outputs != 2 ||
        info->arena_bytes != ABI_MODEL_ARENA_BYTES || info->symbols[0].max != ABI_MODEL_T_MAX)
        return fail("model info disagrees with the header");
    abi_model *m = NULL;
    if (abi_model_create(&m, argc > 4 ? argv[4] : NULL) != MOERT_OK) return fail("create");
    int64_t T = x.dims[0];
    static float y[64 * 48];
    static int32_t expert[64 * 2];
    if (abi_model_run(m, T, (const float *)x.data, y, expert) != MOERT_OK) return fail("run");
    const float *wy = want_y.data;
    const int32_t *we = want_e.data;
    for (int64_t i = 0; i < T * 48; i++)
        if (fabsf(y[i] - wy[i]) > 1e-5f + 1e-5f * fabsf(wy[i])) {
            fprintf(stderr, "abi_c: y[%lld] = %g, interpreter %g\n", (long long)i, y[i], wy[i]);
            return 1;
        }
    for (int64_t i = 0; i < T * 2; i++)
        if (expert[i] != we[i]) return fail("expert differs from the interpreter's");
    abi_model_destroy(m);
    moert_npy_free(&x);
    moert_npy_free(&want_y);
    moert_npy_free(&want_e);
    printf("abi_c: ok, T=%lld\n", (long long)T);
    return 0;
}
