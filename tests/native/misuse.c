/* tests/native/misuse.c: run-time misuse of a generated API must come back as a status
 * with a message, never a crash: external weights missing, mismatched or not given,
 * a symbol above its max, NULL buffers and a NULL model.
 * usage: misuse x.npy weights.safetensors bad_weights.safetensors */
#include "abi_model.h"

#include <stdio.h>
#include <string.h>

static int failures;

static void expect(moert_status got, moert_status want, const char *msg, const char *what) {
    if (got == want && strcmp(moert_last_error(), msg) == 0) return;
    fprintf(stderr, "misuse: %s: got status %d \"%s\", want %d \"%s\"\n", what, got,
            moert_last_error(), want, msg);
    failures++;
}

static void check_create(const char *good, const char *bad) {
    abi_model *m = NULL;
    char msg[1024];
    expect(abi_model_create(&m, NULL), MOERT_ERR_ARGUMENT,
           "abi_model: compiled with --weights=external; _create needs the weights file",
           "create without a weights file");
    snprintf(msg, sizeof msg, "%s.missing: cannot open: No such file or directory", good);
    char missing[1024];
    snprintf(missing, sizeof missing, "%s.missing", good);
    expect(abi_model_create(&m, missing), MOERT_ERR_IO, msg, "create with a missing file");
    snprintf(msg, sizeof msg, "%s: tensor 'w1': expected f32 [6, 48, 70], found f32 [6, 48, 69]",
             bad);
    expect(abi_model_create(&m, bad), MOERT_ERR_FORMAT, msg, "create with a mismatched file");
    if (m) failures++, fprintf(stderr, "misuse: a failed create left a model behind\n");
}

static void check_run(abi_model *m, const float *x) {
    static float y[64 * 48];
    static int32_t e[64 * 2];
    expect(abi_model_run(m, 41, x, y, e), MOERT_ERR_ARGUMENT,
           "abi_model_run: symbol T = 41 is outside [1, 40]", "T above max");
    expect(abi_model_run(m, 0, x, y, e), MOERT_ERR_ARGUMENT,
           "abi_model_run: symbol T = 0 is outside [1, 40]", "T = 0");
    expect(abi_model_run(m, 8, NULL, y, e), MOERT_ERR_ARGUMENT, "abi_model_run: input 'x' is NULL",
           "NULL input");
    expect(abi_model_run(m, 8, x, y, NULL), MOERT_ERR_ARGUMENT,
           "abi_model_run: output 'expert' is NULL", "NULL output");
    expect(abi_model_run(NULL, 8, x, y, e), MOERT_ERR_ARGUMENT, "abi_model_run: the model is NULL",
           "NULL model");
    if (abi_model_run(m, 8, x, y, e) != MOERT_OK) {
        fprintf(stderr, "misuse: a good run after misuse failed: %s\n", moert_last_error());
        failures++;
    }
}

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    moert_npy x;
    if (moert_npy_read(argv[1], &x) != MOERT_OK) return 2;
    check_create(argv[2], argv[3]);
    abi_model *m = NULL;
    if (abi_model_create(&m, argv[2]) != MOERT_OK) {
        fprintf(stderr, "misuse: create with the right file: %s\n", moert_last_error());
        return 1;
    }
    check_run(m, x.data);
    abi_model_destroy(m);
    abi_model_destroy(NULL);
    moert_npy_free(&x);
    if (failures == 0) printf("misuse: ok\n");
    return failures != 0;
}
