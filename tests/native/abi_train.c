/* tests/native/abi_train.c: a training model's generated API from C: create, take
 * training steps (the loss must fall), save the weights and read them back.
 * usage: abi_train x.npy labels.npy out.safetensors */
#include "train_model.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    moert_npy x, labels;
    if (moert_npy_read(argv[1], &x) || moert_npy_read(argv[2], &labels)) return 2;
    train_model *m = NULL;
    if (train_model_create(&m, NULL) != MOERT_OK) {
        fprintf(stderr, "abi_train: create: %s\n", moert_last_error());
        return 1;
    }
    float ce[20], lbl;
    for (int step = 0; step < 20; step++)
        if (train_model_train_step(m, x.dims[0], (const float *)x.data, (const int64_t *)labels.data,
                                   &ce[step], &lbl) != MOERT_OK) {
            fprintf(stderr, "abi_train: step %d: %s\n", step, moert_last_error());
            return 1;
        }
    if (!(ce[19] < ce[0] * 0.9f)) {
        fprintf(stderr, "abi_train: loss %g -> %g did not fall\n", ce[0], ce[19]);
        return 1;
    }
    if (train_model_save_weights(m, argv[3]) != MOERT_OK) {
        fprintf(stderr, "abi_train: save: %s\n", moert_last_error());
        return 1;
    }
    moert_st_file *f;
    if (moert_st_open(argv[3], &f) != MOERT_OK) return 1;
    const moert_st_tensor *w = moert_st_find(f, "w_cls");
    int ok = w && w->rank == 2 && w->dims[0] == 12 && w->dims[1] == 3 && moert_st_find(f, "opt.step");
    moert_st_close(f);
    train_model_destroy(m);
    moert_npy_free(&x);
    moert_npy_free(&labels);
    if (!ok) return fprintf(stderr, "abi_train: the saved weights lack w_cls or opt.step\n"), 1;
    printf("abi_train: ok, loss %.4f -> %.4f\n", ce[0], ce[19]);
    return 0;
}
