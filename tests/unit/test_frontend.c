/* Unit tests for the frontend: the JSON loader, seeded init recipes, .npy and
 * safetensors round trips. Bad-input messages are covered by tests/diag. */
#include "frontend.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static mc_graph *load(const char *json, mc_diag *d) {
    mc_diag_init(d, "m.json");
    return mc_load_model_from_memory(json, strlen(json), "m.json", NULL, NULL, d);
}

static const char *VALID =
    "{\"moec\":1,\"name\":\"m\",\"symbols\":{\"T\":{\"max\":8}},"
    "\"inputs\":[{\"name\":\"x\",\"dtype\":\"float32\",\"shape\":[\"T\",4]}],\"outputs\":[\"y\"],"
    "\"initializers\":[{\"name\":\"w\",\"dtype\":\"float32\",\"shape\":[4,2],\"data\":[1,2,3,4,5,6,"
    "7,8]}],"
    "\"nodes\":["
    "{\"name\":\"second\",\"op\":\"moe.TopKRoute\",\"inputs\":[\"l\"],\"outputs\":[\"y\",\"wt\"],"
    "\"attrs\":{\"k\":1,\"order\":\"priority\"}},"
    "{\"name\":\"first\",\"op\":\"MatMul\",\"inputs\":[\"x\",\"w\"],\"outputs\":[\"l\"]}]}";

Test(loader, builds_values_nodes_attrs_and_topological_order) {
    mc_diag d;
    mc_graph *g = load(VALID, &d);
    cr_assert_not_null(g, "%s", d.msg);
    cr_assert_str_eq(g->name, "m");
    cr_assert_eq(g->nsyms, 1);
    cr_assert_eq(g->syms[0].max, 8);
    const mc_value *x = mc_val(g, g->inputs[0]);
    cr_assert_eq(x->kind, MC_VK_INPUT);
    cr_assert_eq(x->shape.d[0].sym, 0);
    const mc_value *w = mc_val(g, mc_graph_find_value(g, "w"));
    cr_assert_eq(w->kind, MC_VK_PARAM);
    cr_assert_eq(w->src, MC_SRC_INLINE);
    cr_assert_float_eq(((const float *)w->data)[7], 8.0f, 0);
    /* listed second-first in JSON; the order puts the producer first */
    cr_assert_str_eq(mc_nod(g, g->order[0])->name, "first");
    const mc_node *route = mc_nod(g, g->order[1]);
    cr_assert_eq(route->nattr, 8); /* every default filled in */
    cr_assert_str_eq(mc_attr_str(route, "order"), "priority");
    cr_assert_str_eq(mc_attr_str(route, "score"), "softmax");
    cr_assert_eq(route->src_index, 0);
    cr_assert(mc_infer_shapes(g, &d), "%s", d.msg);
    cr_assert(mc_verify(g, &d), "%s", d.msg);
    mc_graph_free(g);
}

Test(loader, optional_inputs_are_minus_one) {
    const char *json =
        "{\"moec\":1,\"name\":\"m\",\"inputs\":[{\"name\":\"a\",\"dtype\":\"float32\",\"shape\":[2,"
        "2]},"
        "{\"name\":\"b\",\"dtype\":\"float32\",\"shape\":[2,2]}],\"outputs\":[\"y\"],\"nodes\":["
        "{\"name\":\"g\",\"op\":\"Gemm\",\"inputs\":[\"a\",\"b\",\"\"],\"outputs\":[\"y\"]}]}";
    mc_diag d;
    mc_graph *g = load(json, &d);
    cr_assert_not_null(g, "%s", d.msg);
    cr_assert_eq(mc_nod(g, 0)->in[2], -1);
    mc_graph_free(g);
}

Test(loader, nodes_may_be_nameless_and_flags_boolean) {
    /* ONNX's conventions: a node without a name (or with "") is named OP_INDEX; JSON's
     * true and false are the integer flags 1 and 0. */
    const char *json =
        "{\"moec\":1,\"name\":\"m\",\"inputs\":[{\"name\":\"z\",\"dtype\":\"float32\",\"shape\":["
        "3,4]}],\"outputs\":[\"e\"],\"nodes\":["
        "{\"op\":\"moe.TopKRoute\",\"inputs\":[\"z\"],\"outputs\":[\"e\",\"w\"],"
        "\"attrs\":{\"k\":2,\"normalize\":true}},"
        "{\"name\":\"\",\"op\":\"Relu\",\"inputs\":[\"w\"],\"outputs\":[\"r\"]},"
        "{\"name\":\"t\",\"op\":\"Gemm\",\"inputs\":[\"z\",\"z\"],\"outputs\":[\"g\"],"
        "\"attrs\":{\"transB\":true,\"transA\":false}}]}";
    mc_diag d;
    mc_graph *g = load(json, &d);
    cr_assert_not_null(g, "%s", d.msg);
    const mc_node *route = mc_nod(g, mc_val(g, mc_graph_find_value(g, "e"))->producer);
    cr_assert_str_eq(route->name, "moe.TopKRoute_0");
    cr_assert_eq(mc_attr_int(route, "normalize"), 1);
    cr_assert_str_eq(mc_nod(g, mc_val(g, mc_graph_find_value(g, "r"))->producer)->name, "Relu_1");
    const mc_node *gemm = mc_nod(g, mc_val(g, mc_graph_find_value(g, "g"))->producer);
    cr_assert_eq(mc_attr_int(gemm, "transB"), 1);
    cr_assert_eq(mc_attr_int(gemm, "transA"), 0);
    mc_graph_free(g);
}

Test(init, normal_matches_an_independent_reimplementation) {
    /* First values of seed 7, std 0.02 from a separate Python implementation of the
     * algorithm in docs/format.md (splitmix64, polar method). */
    mc_init_recipe r = {.dist = "normal", .std = 0.02, .seed = 7};
    float v[6];
    mc_init_fill(&r, MC_DT_F32, 6, v);
    const float want[6] = {-0.0008348304545506835f, -0.003661604132503271f, 0.017529629170894623f,
                           0.003627444850280881f,   -0.006119823548942804f, -0.03224339708685875f};
    for (int i = 0; i < 6; i++)
        cr_assert_eq(v[i], want[i], "element %d: %.9g vs %.9g", i, v[i], want[i]);
    mc_init_recipe u = {.dist = "uniform", .low = -1, .high = 1, .seed = 5};
    const float wantu[4] = {-0.2264639139175415f, 0.5046140551567078f, -0.5345816612243652f,
                            -0.8013211488723755f};
    mc_init_fill(&u, MC_DT_F32, 4, v);
    for (int i = 0; i < 4; i++)
        cr_assert_eq(v[i], wantu[i], "uniform element %d", i);
}

Test(init, normal_statistics) {
    enum { N = 100000 };
    float *v = malloc(sizeof(float) * N);
    mc_init_recipe r = {.dist = "normal", .mean = 1.0, .std = 2.0, .seed = 123};
    mc_init_fill(&r, MC_DT_F32, N, v);
    double s = 0, s2 = 0;
    for (int i = 0; i < N; i++)
        s += v[i], s2 += (double)v[i] * v[i];
    double mean = s / N, sd = sqrt(s2 / N - mean * mean);
    cr_expect(fabs(mean - 1.0) < 0.03, "mean %f", mean);
    cr_expect(fabs(sd - 2.0) < 0.03, "std %f", sd);
    free(v);
}

/* ---- a serial reference of the recipes in docs/format.md, sharing no code with
 * frontend/prng.c, so that its threaded fills are checked against the definition ---- */

static uint64_t ref_splitmix64(uint64_t *state) {
    *state += 0x9E3779B97F4A7C15ull;
    uint64_t z = *state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double ref_uniform01(uint64_t *state) {
    return (double)(ref_splitmix64(state) >> 11) * 0x1.0p-53;
}

/* The logarithm as frontend/prng.c states it: x = m * 2^e with m in [sqrt(1/2),
 * sqrt(2)), ln m = 2 atanh(t), t = (m-1)/(m+1), the series t^k/k for odd k up to 23
 * summed from k = 1, plus e ln 2. (This file is compiled with -ffp-contract=off.) */
static double ref_ln(double x) {
    int e;
    double m = frexp(x, &e);
    if (m < 0.70710678118654752440) {
        m = 2 * m;
        e = e - 1;
    }
    double t = (m - 1) / (m + 1), power = t, series = 0;
    for (int k = 1; k <= 23; k += 2) {
        series = series + power / k;
        power = power * (t * t);
    }
    return 2 * series + e * 0.69314718055994530942;
}

/* Element values in double, before rounding to the dtype. */
static void ref_fill(const mc_init_recipe *r, int64_t n, double *out) {
    uint64_t state = r->seed;
    if (strcmp(r->dist, "uniform") == 0) {
        for (int64_t i = 0; i < n; i++)
            out[i] = r->low + (r->high - r->low) * ref_uniform01(&state);
        return;
    }
    for (int64_t i = 0; i < n; i += 2) {
        double u, v, s;
        do {
            u = 2 * ref_uniform01(&state) - 1;
            v = 2 * ref_uniform01(&state) - 1;
            s = u * u + v * v;
        } while (s >= 1 || s == 0);
        double f = sqrt(-2 * ref_ln(s) / s);
        out[i] = r->mean + r->std * (u * f);
        if (i + 1 < n) out[i + 1] = r->mean + r->std * (v * f);
    }
}

/* float32 -> bfloat16 bits, round to nearest even (no NaN comes up here). */
static uint16_t ref_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1)) >> 16);
}

/* mc_init_fill (and with three threads, whatever the machine) against the reference,
 * bit for bit, in float32 and bfloat16. */
static void expect_fill_matches_reference(const mc_init_recipe *r, int64_t n) {
    double *want = malloc(sizeof(double) * (size_t)n);
    float *f32 = malloc(sizeof(float) * (size_t)n);
    uint16_t *bf16 = malloc(sizeof(uint16_t) * (size_t)n);
    ref_fill(r, n, want);
    for (int threads = 0; threads <= 3; threads += 3) {
        if (threads) {
            mc_init_fill_threads(r, MC_DT_F32, n, f32, threads);
            mc_init_fill_threads(r, MC_DT_BF16, n, bf16, threads);
        } else {
            mc_init_fill(r, MC_DT_F32, n, f32);
            mc_init_fill(r, MC_DT_BF16, n, bf16);
        }
        for (int64_t i = 0; i < n; i++) {
            float w = (float)want[i];
            cr_assert(memcmp(&f32[i], &w, 4) == 0,
                      "%s n=%lld threads=%d f32 element %lld: %a vs %a", r->dist, (long long)n,
                      threads, (long long)i, f32[i], w);
            cr_assert_eq(bf16[i], ref_bf16(w),
                         "%s n=%lld threads=%d bf16 element %lld: %04x vs %04x", r->dist,
                         (long long)n, threads, (long long)i, bf16[i], ref_bf16(w));
        }
    }
    free(want);
    free(f32);
    free(bf16);
}

/* Odd sizes spanning several 2^16-value chunks of the threaded fill, the last pair split. */
static const int64_t MULTI_CHUNK_SIZES[] = {(5 << 16) + 12345, (2 << 16) + 1};

Test(init, threaded_normal_fill_is_the_serial_definition) {
    mc_init_recipe r = {.dist = "normal", .mean = 0.25, .std = 0.02, .seed = 11};
    for (size_t k = 0; k < sizeof MULTI_CHUNK_SIZES / sizeof *MULTI_CHUNK_SIZES; k++)
        expect_fill_matches_reference(&r, MULTI_CHUNK_SIZES[k]);
}

Test(init, threaded_uniform_fill_is_the_serial_definition) {
    mc_init_recipe r = {.dist = "uniform", .low = -0.3, .high = 0.7, .seed = 12};
    for (size_t k = 0; k < sizeof MULTI_CHUNK_SIZES / sizeof *MULTI_CHUNK_SIZES; k++)
        expect_fill_matches_reference(&r, MULTI_CHUNK_SIZES[k]);
}

static const char *tmp_path(const char *name) {
    static char buf[256];
    snprintf(buf, sizeof buf, "/tmp/moec-test-%d-%s", (int)getpid(), name);
    return buf;
}

Test(npy, round_trip_every_dtype) {
    mc_diag d;
    mc_diag_init(&d, "t");
    const mc_npy_dtype types[5] = {MC_NPY_F32, MC_NPY_F64, MC_NPY_I32, MC_NPY_I64, MC_NPY_BOOL};
    const size_t sizes[5] = {4, 8, 4, 8, 1};
    for (int k = 0; k < 5; k++) {
        unsigned char data[48];
        for (int i = 0; i < 24; i++)
            data[i] = (unsigned char)(types[k] == MC_NPY_BOOL ? i % 2 : i * 7);
        mc_npy a = {.dt = types[k], .rank = 2, .dims = {2, 3}, .numel = 6, .data = data}, b;
        const char *p = tmp_path("a.npy");
        cr_assert(mc_npy_save(p, &a, &d), "%s", d.msg);
        cr_assert(mc_npy_load(p, &b, &d), "%s", d.msg);
        cr_assert_eq(b.dt, types[k]);
        cr_assert_eq(b.rank, 2);
        cr_assert_eq(b.dims[1], 3);
        cr_assert_eq(memcmp(b.data, data, 6 * sizes[k]), 0);
        mc_npy_free(&b);
        remove(p);
    }
}

Test(npy, reads_version_2_headers) {
    /* \x93NUMPY v2.0, 4-byte header length */
    const char hdr[] = "{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }";
    unsigned char buf[256] = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0};
    uint32_t hl = (uint32_t)strlen(hdr);
    memcpy(buf + 8, &hl, 4);
    memcpy(buf + 12, hdr, hl);
    int32_t v[2] = {7, -9};
    memcpy(buf + 12 + hl, v, 8);
    mc_npy a;
    mc_diag d;
    mc_diag_init(&d, "t");
    cr_assert(mc_npy_parse(buf, 12 + hl + 8, &a, &d), "%s", d.msg);
    cr_assert_eq(((int32_t *)a.data)[1], -9);
    mc_npy_free(&a);
}

Test(safetensors, write_then_map_round_trip) {
    mc_diag d;
    mc_graph *g = load(VALID, &d);
    cr_assert_not_null(g);
    const char *p = tmp_path("w.safetensors");
    cr_assert(mc_st_write_params(p, g, &d), "%s", d.msg);
    mc_arena *a = mc_arena_new();
    mc_safetensors st;
    cr_assert(mc_st_open(&st, p, a, &d), "%s", d.msg);
    const mc_st_tensor *t = mc_st_find(&st, "w");
    cr_assert_not_null(t);
    cr_assert_eq(t->dt, MC_DT_F32);
    cr_assert_eq(t->dims[0], 4);
    cr_assert_eq(((uintptr_t)t->data) % 8, 0);
    cr_assert_float_eq(((const float *)t->data)[3], 4.0f, 0);
    mc_arena_free(a);
    mc_graph_free(g);
    remove(p);
}

Test(safetensors, header_running_past_the_file_is_rejected) {
    unsigned char buf[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    mc_arena *a = mc_arena_new();
    mc_safetensors st;
    mc_diag d;
    mc_diag_init(&d, "w.st");
    cr_assert_not(mc_st_parse(&st, buf, 10, a, &d));
    cr_assert_str_eq(d.msg,
                     "w.st: error: header length 65535 runs past the end of the 10-byte file");
    mc_arena_free(a);
}
