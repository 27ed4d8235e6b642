/* frontend/prng.c: seeded init recipes, bit-identical on every machine. The generator
 * is splitmix64; normals use the Marsaglia polar method with a logarithm written here
 * from + - * / only (and IEEE sqrt, which is exact), so no libm version can change a
 * weight. This file is compiled with -ffp-contract=off so no FMA changes rounding.
 * docs/format.md states the algorithm so that others can reproduce it. */
#include "frontend.h"

#include <math.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 53 random bits. */
static double uniform01(uint64_t *state) {
    return (double)(splitmix64(state) >> 11) * 0x1.0p-53;
}

/* ln(x) for x > 0: x = m * 2^e with m in [sqrt(1/2), sqrt(2)), then
 * ln m = 2 atanh(t), t = (m-1)/(m+1), |t| < 0.172, by its series to t^23. */
static double det_log(double x) {
    int e;
    double m = frexp(x, &e);
    if (m < 0.70710678118654752440) {
        m *= 2;
        e--;
    }
    double t = (m - 1) / (m + 1), t2 = t * t, term = t, sum = 0;
    for (int k = 1; k <= 23; k += 2) {
        sum += term / k;
        term *= t2;
    }
    return 2 * sum + e * 0.69314718055994530942;
}

/* Two independent standard normals. */
static void normal_pair(uint64_t *state, double *a, double *b) {
    for (;;) {
        double u = 2 * uniform01(state) - 1, v = 2 * uniform01(state) - 1;
        double s = u * u + v * v;
        if (s >= 1 || s == 0) continue;
        double f = sqrt(-2 * det_log(s) / s);
        *a = u * f;
        *b = v * f;
        return;
    }
}

static void store(mc_dtype dt, void *out, int64_t i, double v) {
    unsigned char *b = out;
    switch (dt) {
    case MC_DT_F32: {
        float f = (float)v;
        memcpy(b + 4 * i, &f, 4);
        return;
    }
    case MC_DT_F16: {
        uint16_t h = mc_f32_to_f16((float)v);
        memcpy(b + 2 * i, &h, 2);
        return;
    }
    case MC_DT_BF16: {
        uint16_t h = mc_f32_to_bf16((float)v);
        memcpy(b + 2 * i, &h, 2);
        return;
    }
    case MC_DT_I32: {
        int32_t x = (int32_t)v;
        memcpy(b + 4 * i, &x, 4);
        return;
    }
    case MC_DT_I64: {
        int64_t x = (int64_t)v;
        memcpy(b + 8 * i, &x, 8);
        return;
    }
    case MC_DT_BOOL: b[i] = v != 0; return;
    }
}

void mc_init_fill(const mc_init_recipe *r, mc_dtype dt, int64_t n, void *out_bytes) {
    uint64_t state = r->seed;
    if (strcmp(r->dist, "zeros") == 0 || strcmp(r->dist, "ones") == 0) {
        double v = r->dist[0] == 'o';
        for (int64_t i = 0; i < n; i++)
            store(dt, out_bytes, i, v);
    } else if (strcmp(r->dist, "uniform") == 0) {
        for (int64_t i = 0; i < n; i++)
            store(dt, out_bytes, i, r->low + (r->high - r->low) * uniform01(&state));
    } else {
        MC_ASSERT(strcmp(r->dist, "normal") == 0);
        for (int64_t i = 0; i < n; i += 2) {
            double a, b;
            normal_pair(&state, &a, &b);
            store(dt, out_bytes, i, r->mean + r->std * a);
            if (i + 1 < n) store(dt, out_bytes, i + 1, r->mean + r->std * b);
        }
    }
}
