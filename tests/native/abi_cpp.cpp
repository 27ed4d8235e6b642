// tests/native/abi_cpp.cpp: the generated header from C++17: create, run, compare with
// the interpreter's output, destroy (through a unique_ptr, as C++ users would).
// usage: abi_cpp x.npy want_y.npy want_expert.npy
#include "abi_model.h"

#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

namespace {
struct npy {
    moert_npy a{};
    bool ok = false;
    explicit npy(const char *path) : ok(moert_npy_read(path, &a) == MOERT_OK) {}
    ~npy() {
        if (ok) moert_npy_free(&a);
    }
};
} // namespace

int main(int argc, char **argv) {
    if (argc < 4) return 2;
    npy x(argv[1]), want_y(argv[2]), want_e(argv[3]);
    if (!x.ok || !want_y.ok || !want_e.ok) {
        std::fprintf(stderr, "abi_cpp: %s\n", moert_last_error());
        return 1;
    }
    abi_model *raw = nullptr;
    if (abi_model_create(&raw, nullptr) != MOERT_OK) return 1;
    std::unique_ptr<abi_model, void (*)(abi_model *)> m(raw, abi_model_destroy);
    const int64_t T = x.a.dims[0];
    std::vector<float> y(static_cast<size_t>(T * 48));
    std::vector<int32_t> expert(static_cast<size_t>(T * 2));
    if (abi_model_run(m.get(), T, static_cast<const float *>(x.a.data), y.data(), expert.data()) !=
        MOERT_OK) {
        std::fprintf(stderr, "abi_cpp: run: %s\n", moert_last_error());
        return 1;
    }
    const float *wy = static_cast<const float *>(want_y.a.data);
    const int32_t *we = static_cast<const int32_t *>(want_e.a.data);
    for (size_t i = 0; i < y.size(); i++)
        if (std::fabs(y[i] - wy[i]) > 1e-5f + 1e-5f * std::fabs(wy[i])) return 1;
    for (size_t i = 0; i < expert.size(); i++)
        if (expert[i] != we[i]) return 1;
    std::printf("abi_cpp: ok, T=%lld\n", static_cast<long long>(T));
    return 0;
}
