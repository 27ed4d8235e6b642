/* Unit tests for libmoert: status messages, the aligned arena, moert_parallel_for, .npy
 * and safetensors files, panel packing, the model object and the build driver. */
#include "moert.h"

#include <criterion/criterion.h>
#include <criterion/redirect.h>
#include <dirent.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

Test(status, fail_records_message_per_thread) {
    cr_assert_eq(moert_fail(MOERT_ERR_ARGUMENT, "T is %d but must be at most %d", 5000, 4096),
                 MOERT_ERR_ARGUMENT);
    cr_assert_str_eq(moert_last_error(), "T is 5000 but must be at most 4096");
    cr_assert_str_eq(moert_status_name(MOERT_ERR_FORMAT), "bad file format");
}

Test(arena, aligned_and_rounded) {
    moert_arena a;
    cr_assert_eq(moert_arena_init(&a, 100), MOERT_OK);
    cr_assert_eq((uintptr_t)a.base % MOERT_ALIGN, 0);
    cr_assert_eq(a.size, 128);
    moert_arena_release(&a);
    cr_assert_null(a.base);
    cr_assert_eq(moert_arena_init(&a, 0), MOERT_OK);
    cr_assert_null(a.base);
}

Test(arena, impossible_size_is_a_status) {
    moert_arena a;
    cr_assert_eq(moert_arena_init(&a, SIZE_MAX - 8), MOERT_ERR_MEMORY);
    cr_assert_null(a.base);
}

typedef struct {
    atomic_int *hits;
    atomic_long calls;
} cover_ctx;

static void mark(void *p, int64_t begin, int64_t end) {
    cover_ctx *c = p;
    atomic_fetch_add(&c->calls, 1);
    for (int64_t i = begin; i < end; i++)
        atomic_fetch_add(&c->hits[i], 1);
}

static void check_cover(int64_t n, int64_t grain) {
    cover_ctx c = {calloc((size_t)n + 1, sizeof(atomic_int)), 0};
    moert_parallel_for(n, grain, mark, &c);
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(atomic_load(&c.hits[i]), 1, "index %ld", (long)i);
    free(c.hits);
}

Test(pool, every_index_exactly_once) {
    check_cover(1, 1);
    check_cover(7, 1);
    check_cover(1000, 3);
    check_cover(100003, 64);
    moert_parallel_for(0, 1, mark, NULL); /* n = 0 calls nothing */
}

static void nested(void *p, int64_t begin, int64_t end) {
    cover_ctx *c = p;
    for (int64_t i = begin; i < end; i++)
        moert_parallel_for(1, 1, mark, &c[1 + i]);
}

Test(pool, nested_calls_run_serially) {
    cover_ctx cs[9];
    for (int i = 0; i < 9; i++)
        cs[i] = (cover_ctx){calloc(1, sizeof(atomic_int)), 0};
    moert_parallel_for(8, 1, nested, cs);
    for (int i = 1; i < 9; i++) {
        cr_assert_eq(atomic_load(&cs[i].hits[0]), 1);
        free(cs[i].hits);
    }
    free(cs[0].hits);
}

Test(pool, thread_count_from_environment) {
    /* The pool is sized once per process; MOERT_NUM_THREADS is read then. This test
     * runs in its own process (Criterion forks), so setting it here takes effect. */
    setenv("MOERT_NUM_THREADS", "3", 1);
    cr_assert_eq(moert_num_threads(), 3);
    check_cover(10007, 1);
}

/* ---- scratch files: one fresh directory per test ---- */

static char scratch[512];

static void scratch_init(void) {
    const char *base = getenv("TMPDIR");
    int len =
        snprintf(scratch, sizeof scratch - 8, "%s/moert_test.", base && *base ? base : P_tmpdir);
    memset(scratch + len, 'X', 6); /* mkdtemp's template: it replaces the six X */
    scratch[len + 6] = 0;
    cr_assert_not_null(mkdtemp(scratch));
}

static void scratch_fini(void) {
    DIR *d = opendir(scratch);
    char path[1024];
    for (struct dirent *e; d && (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", scratch, e->d_name);
            unlink(path);
        }
    if (d) closedir(d);
    rmdir(scratch);
}

/* A path in the scratch directory; four live at once. */
static const char *at(const char *name) {
    static char bufs[4][1024];
    static int next;
    char *b = bufs[next++ % 4];
    snprintf(b, sizeof bufs[0], "%s/%s", scratch, name);
    return b;
}

static void put_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static size_t get_file(const char *path, unsigned char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "%s", path);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void expect_error(moert_status got, moert_status want, const char *fmt, const char *path) {
    char msg[1024];
    snprintf(msg, sizeof msg, fmt, path);
    cr_assert_eq(got, want, "status %d, message: %s", got, moert_last_error());
    cr_assert_str_eq(moert_last_error(), msg);
}

/* ---- dtypes ---- */

Test(dtype, names_and_sizes) {
    cr_assert_str_eq(moert_dtype_name(MOERT_BF16), "bf16");
    cr_assert_str_eq(moert_dtype_name(MOERT_BOOL), "bool");
    cr_assert_eq(moert_dtype_size(MOERT_F32), 4);
    cr_assert_eq(moert_dtype_size(MOERT_F16), 2);
    cr_assert_eq(moert_dtype_size(MOERT_I64), 8);
    cr_assert_eq(moert_dtype_size(MOERT_BOOL), 1);
    cr_assert_eq(moert_dtype_size((moert_dtype)99), 0);
}

/* ---- .npy ---- */

static void npy_round_trip(moert_dtype dt, int64_t rank, const int64_t *dims, const void *data,
                           size_t bytes) {
    const char *p = at("a.npy");
    cr_assert_eq(moert_npy_write(p, dt, rank, dims, data), MOERT_OK, "%s", moert_last_error());
    unsigned char raw[4096];
    size_t n = get_file(p, raw, sizeof raw);
    cr_assert_eq((10 + (raw[8] | raw[9] << 8)) % 64, 0, "data starts at a multiple of 64");
    cr_assert_eq(n, 10 + (size_t)(raw[8] | raw[9] << 8) + bytes);
    moert_npy a;
    cr_assert_eq(moert_npy_read(p, &a), MOERT_OK, "%s", moert_last_error());
    cr_assert_eq(a.dtype, dt);
    cr_assert_eq(a.rank, rank);
    for (int64_t i = 0; i < rank; i++)
        cr_assert_eq(a.dims[i], dims[i]);
    cr_assert_eq(memcmp(a.data, data, bytes), 0);
    moert_npy_free(&a);
    cr_assert_null(a.data);
}

Test(npy, round_trip_every_dtype, .init = scratch_init, .fini = scratch_fini) {
    const int64_t d23[] = {2, 3}, d6[] = {6};
    const float f[6] = {1.5f, -2, 0, 3.25f, 1e30f, -0.0f};
    const uint16_t h[6] = {0x3C00, 0xC000, 0, 0x7C00, 0x0001, 0x8000};
    const int32_t i4[6] = {1, -2, 3, INT32_MAX, INT32_MIN, 0};
    const int64_t i8[6] = {1, -2, 3, INT64_MAX, INT64_MIN, 0};
    const unsigned char b[6] = {1, 0, 1, 1, 0, 0};
    npy_round_trip(MOERT_F32, 2, d23, f, sizeof f);
    npy_round_trip(MOERT_F16, 2, d23, h, sizeof h);
    npy_round_trip(MOERT_I32, 1, d6, i4, sizeof i4);
    npy_round_trip(MOERT_I64, 2, d23, i8, sizeof i8);
    npy_round_trip(MOERT_BOOL, 1, d6, b, sizeof b);
    npy_round_trip(MOERT_F32, 0, NULL, f, 4);
}

Test(npy, header_text_is_numpys, .init = scratch_init, .fini = scratch_fini) {
    const int64_t d[] = {4};
    const int32_t v[4] = {0};
    cr_assert_eq(moert_npy_write(at("a.npy"), MOERT_I32, 1, d, v), MOERT_OK);
    unsigned char raw[256];
    get_file(at("a.npy"), raw, sizeof raw);
    const char *want = "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }";
    cr_assert_eq(memcmp(raw + 10, want, strlen(want)), 0);
    cr_assert_eq(raw[8] | raw[9] << 8, 118, "57 bytes of text padded to 128 in all");
    cr_assert_eq(raw[127], '\n');
}

Test(npy, bf16_has_no_npy_dtype, .init = scratch_init, .fini = scratch_fini) {
    const int64_t d[] = {1};
    const uint16_t v = 0;
    expect_error(moert_npy_write(at("a.npy"), MOERT_BF16, 1, d, &v), MOERT_ERR_ARGUMENT,
                 "%s: bf16 has no .npy dtype; convert it to f32 first", at("a.npy"));
    cr_assert_neq(access(at("a.npy"), F_OK), 0, "nothing is written");
}

/* A hand-made file: preamble of the given version, header text padded to 16, data. */
static void put_npy(const char *path, int version, const char *dict, const void *data, size_t n) {
    unsigned char buf[1024];
    size_t start = version == 1 ? 10 : 12, hlen = (strlen(dict) + 1 + 15) / 16 * 16;
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)version, buf[7] = 0;
    for (size_t i = 0; i < start - 8; i++)
        buf[8 + i] = (unsigned char)(hlen >> (8 * i));
    memset(buf + start, ' ', hlen);
    memcpy(buf + start, dict, strlen(dict));
    buf[start + hlen - 1] = '\n';
    memcpy(buf + start + hlen, data, n);
    put_file(path, buf, start + hlen + n);
}

Test(npy, reads_v2_and_v3_headers, .init = scratch_init, .fini = scratch_fini) {
    const int64_t v[3] = {7, -8, 9};
    for (int version = 2; version <= 3; version++) {
        put_npy(at("v.npy"), version, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }",
                v, sizeof v);
        moert_npy a;
        cr_assert_eq(moert_npy_read(at("v.npy"), &a), MOERT_OK, "%s", moert_last_error());
        cr_assert_eq(a.dtype, MOERT_I64);
        cr_assert_eq(a.rank, 1);
        cr_assert_eq(a.dims[0], 3);
        cr_assert_eq(memcmp(a.data, v, sizeof v), 0);
        moert_npy_free(&a);
    }
}

Test(npy, malformed_files_are_named, .init = scratch_init, .fini = scratch_fini) {
    const float v[6] = {0};
    moert_npy a;
    const char *p = at("x.npy");
    put_file(p, "\x93NUMPZ\x01\x00\x10\x00{}              \n", 26);
    expect_error(moert_npy_read(p, &a), MOERT_ERR_FORMAT,
                 "%s: expected the .npy magic \\x93NUMPY, found other bytes", p);
    cr_assert_null(a.data);
    put_file(p, "\x93NUM", 4);
    expect_error(moert_npy_read(p, &a), MOERT_ERR_FORMAT,
                 "%s: expected the .npy magic \\x93NUMPY, found a shorter file", p);
    put_npy(p, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", v, 20);
    expect_error(moert_npy_read(p, &a), MOERT_ERR_FORMAT,
                 "%s: expected 24 bytes of f32 data for its shape, found 20", p);
    put_npy(p, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", v, 24);
    expect_error(moert_npy_read(p, &a), MOERT_ERR_FORMAT,
                 "%s: expected C order, found fortran_order True", p);
    put_npy(p, 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2, 3), }", v, 24);
    expect_error(moert_npy_read(p, &a), MOERT_ERR_FORMAT,
                 "%s: expected little-endian data, found '>f4'", p);
    put_npy(p, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", v, 24);
    expect_error(moert_npy_read(p, &a), MOERT_ERR_FORMAT,
                 "%s: expected dtype <f4, <f2, <i4, <i8 or |b1, found '<f8'", p);
    put_npy(p, 4, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", v, 24);
    expect_error(moert_npy_read(p, &a), MOERT_ERR_FORMAT,
                 "%s: expected .npy format version 1, 2 or 3, found 4.0", p);
    cr_assert_eq(moert_npy_read(at("missing.npy"), &a), MOERT_ERR_IO);
}

/* ---- safetensors ---- */

static void put_st(const char *path, const char *header, const void *data, size_t n) {
    unsigned char buf[2048];
    size_t hlen = strlen(header);
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    if (n) memcpy(buf + 8 + hlen, data, n);
    put_file(path, buf, 8 + hlen + n);
}

Test(st, write_read_round_trip, .init = scratch_init, .fini = scratch_fini) {
    const float w[6] = {1, 2, 3, 4, 5, 6};
    const int64_t ids[2] = {-1, 1LL << 40};
    const unsigned char mask[3] = {1, 0, 1};
    const uint16_t bf[2] = {0x3F80, 0xC000};
    const moert_st_tensor ts[] = {
        {"mask", MOERT_BOOL, 1, {3}, mask, 3},
        {"layer.0/w", MOERT_F32, 2, {2, 3}, w, 24},
        {"odd \"name\" \\ here", MOERT_BF16, 2, {1, 2}, bf, 4},
        {"ids", MOERT_I64, 1, {2}, ids, 16},
        {"empty", MOERT_F32, 2, {0, 4}, NULL, 0},
    };
    const char *p = at("w.safetensors");
    cr_assert_eq(moert_st_write(p, ts, 5), MOERT_OK, "%s", moert_last_error());
    unsigned char raw[8];
    get_file(p, raw, 8);
    cr_assert_eq(raw[0] % 8, 0, "header padded to 8 bytes");
    moert_st_file *f;
    cr_assert_eq(moert_st_open(p, &f), MOERT_OK, "%s", moert_last_error());
    for (int i = 0; i < 5; i++) {
        const moert_st_tensor *t = moert_st_find(f, ts[i].name);
        cr_assert_not_null(t, "%s", ts[i].name);
        cr_assert_eq(t->dtype, ts[i].dtype);
        cr_assert_eq(t->rank, ts[i].rank);
        for (int k = 0; k < t->rank; k++)
            cr_assert_eq(t->dims[k], ts[i].dims[k]);
        cr_assert_eq(t->nbytes, ts[i].nbytes);
        cr_assert_eq((uintptr_t)t->data % moert_dtype_size(t->dtype), 0, "aligned for its dtype");
        if (t->nbytes) cr_assert_eq(memcmp(t->data, ts[i].data, t->nbytes), 0);
    }
    cr_assert_null(moert_st_find(f, "nope"));
    moert_st_close(f);
    moert_st_close(NULL);
}

Test(st, reads_metadata_escapes_and_unknown_fields, .init = scratch_init, .fini = scratch_fini) {
    const float v[2] = {1, 2};
    put_st(
        at("w.st"),
        "{\"__metadata__\":{\"format\":\"pt\",\"n\":[1,{\"x\":null}]},"
        " \"caf\\u00e9\\ud83d\\ude00\" : {\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],"
        "\"extra\":true}}   ",
        v, sizeof v);
    moert_st_file *f;
    cr_assert_eq(moert_st_open(at("w.st"), &f), MOERT_OK, "%s", moert_last_error());
    const moert_st_tensor *t = moert_st_find(f, "caf\xc3\xa9\xf0\x9f\x98\x80");
    cr_assert_not_null(t);
    float got[2];
    memcpy(got, t->data, sizeof got); /* this header leaves the data misaligned */
    cr_assert_eq(got[1], 2.0f);
    cr_assert_null(moert_st_find(f, "__metadata__"));
    moert_st_close(f);
}

static void expect_st_error(const char *header, size_t data_len, const char *fmt) {
    static const unsigned char zeros[64];
    const char *p = at("bad.safetensors");
    put_st(p, header, zeros, data_len);
    moert_st_file *f = (moert_st_file *)1;
    expect_error(moert_st_open(p, &f), MOERT_ERR_FORMAT, fmt, p);
    cr_assert_null(f);
}

Test(st, lying_headers_are_rejected, .init = scratch_init, .fini = scratch_fini) {
    expect_st_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 20,
                    "%s: tensor 'w' has data_offsets [0, 24] outside the 20 data bytes");
    expect_st_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,40]}}", 40,
                    "%s: tensor 'w' is F32 [2, 3] (24 bytes) but its data_offsets [8, 40] span 32 "
                    "bytes");
    expect_st_error("{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8,
                    "%s: tensor 'w' has dtype F64; expected F32, F16, BF16, I32, I64 or BOOL");
    expect_st_error("{\"a\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                    "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    8, "%s: tensors 'a' and 'b' share data bytes");
    expect_st_error("{\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                    "\"a\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                    8, "%s: tensor 'a' appears twice in the header");
    expect_st_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8,
                    "%s: tensor 'w' needs dtype, shape and data_offsets [begin, end]");
    expect_st_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
                    "%s: tensor 'w' has dim 0 = -2, below 0");
    expect_st_error("{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8,
                    "%s: bad safetensors header at byte 38: expected an integer");
    expect_st_error("{\"w\":{\"dtype\":\"F32\" \"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                    "%s: bad safetensors header at byte 28: expected ',' or '}'");
    expect_st_error("{} x", 0,
                    "%s: bad safetensors header at byte 11: expected only spaces after the header "
                    "object");
}

Test(st, truncated_files_are_rejected, .init = scratch_init, .fini = scratch_fini) {
    const char *p = at("t.safetensors");
    moert_st_file *f;
    put_file(p, "\x10\0\0", 3);
    expect_error(moert_st_open(p, &f), MOERT_ERR_FORMAT,
                 "%s: the file is 3 bytes, too short for a safetensors header", p);
    put_file(p, "\x40\0\0\0\0\0\0\0{\"w\":", 13);
    expect_error(moert_st_open(p, &f), MOERT_ERR_FORMAT,
                 "%s: header length 64 runs past the end of the 13-byte file", p);
    put_st(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_", NULL, 0);
    expect_error(moert_st_open(p, &f), MOERT_ERR_FORMAT,
                 "%s: bad safetensors header at byte 41: expected the end of a string", p);
    expect_error(moert_st_open(at("none"), &f), MOERT_ERR_IO,
                 "%s: cannot open: No such file or directory", at("none"));
}

Test(st, writer_checks_its_tensors, .init = scratch_init, .fini = scratch_fini) {
    const float w[2] = {0};
    moert_st_tensor ts[2] = {{"w", MOERT_F32, 1, {2}, w, 4}, {"w", MOERT_F32, 1, {1}, w, 4}};
    const char *p = at("w.st");
    expect_error(moert_st_write(p, ts, 1), MOERT_ERR_ARGUMENT,
                 "%s: tensor 'w' has nbytes 4 but its dtype and shape need 8", p);
    ts[0].nbytes = 8;
    expect_error(moert_st_write(p, ts, 2), MOERT_ERR_ARGUMENT, "%s: tensor 'w' is given twice", p);
    cr_assert_neq(access(p, F_OK), 0, "nothing is written");
}

/* ---- panels ---- */

Test(pack, panels_of_four_over_five_columns) {
    /* B[k][n] = 10k + n, K = 3, N = 5, nr = 4: two panels, the second with one real column. */
    float b[15];
    for (int k = 0; k < 3; k++)
        for (int n = 0; n < 5; n++)
            b[k * 5 + n] = (float)(10 * k + n);
    const float want[24] = {0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23,
                            4, 0, 0, 0, 14, 0,  0,  0,  24, 0,  0,  0};
    float got[24];
    memset(got, 0xFF, sizeof got);
    moert_pack_panels(b, sizeof(float), 1, 3, 5, 4, got);
    for (int i = 0; i < 24; i++)
        cr_assert_eq(got[i], want[i], "element %d: %g != %g", i, got[i], want[i]);
    /* Two experts: the second's panels follow the first's. */
    float b2[30], got2[48];
    memcpy(b2, b, sizeof b);
    for (int i = 0; i < 15; i++)
        b2[15 + i] = b[i] + 100;
    moert_pack_panels(b2, sizeof(float), 2, 3, 5, 4, got2);
    for (int i = 0; i < 24; i++) {
        int real = i < 12 || i % 4 == 0;
        cr_assert_eq(got2[i], want[i]);
        cr_assert_eq(got2[24 + i], real ? want[i] + 100 : 0, "element %d", 24 + i);
    }
}

Test(pack, bf16_rows_in_pairs_with_an_odd_k) {
    /* B[k][n] = 10k + n + 1 as bits, K = 3 (a zero fourth row), N = 5, nr = 4: panel p holds
     * pair row i at [p][i][j][2] = B[2i][p*4+j], B[2i+1][p*4+j]. */
    uint16_t b[15], got[2 * 4 * 4];
    for (int k = 0; k < 3; k++)
        for (int n = 0; n < 5; n++)
            b[k * 5 + n] = (uint16_t)(10 * k + n + 1);
    memset(got, 0xFF, sizeof got);
    cr_assert_eq(moert_panel_rows(MOERT_BF16, 3), 4);
    cr_assert_eq(moert_panel_elems(MOERT_BF16, 3, 5, 4), 32);
    cr_assert_eq(moert_panel_elems(MOERT_F16, 3, 5, 4), 24);
    moert_pack_weight(MOERT_BF16, b, 1, 3, 5, 4, got);
    for (int p = 0; p < 2; p++)
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < 4; j++) {
                int n = p * 4 + j;
                uint16_t want = k < 3 && n < 5 ? (uint16_t)(10 * k + n + 1) : 0;
                int at = p * 16 + (k / 2) * 8 + 2 * j + k % 2;
                cr_assert_eq(got[at], want, "panel %d row %d column %d: %d != %d", p, k, j, got[at],
                             want);
            }
    /* f16 keeps plain rows (moert_pack_panels'). */
    uint16_t plain[24];
    moert_pack_weight(MOERT_F16, b, 1, 3, 5, 4, plain);
    cr_assert_eq(plain[4], b[5]); /* panel 0, row 1, column 0 */
}

Test(pack, int8_rows_in_blocks_of_four) {
    /* q[k][n] = 10k + n, K = 5 (three zero rows), N = 3, nr = 2: column j of block i holds
     * rows 4i..4i+3; one group, its scales after the values. */
    int8_t q[15];
    float s[3] = {1, 2, 3};
    for (int k = 0; k < 5; k++)
        for (int n = 0; n < 3; n++)
            q[k * 3 + n] = (int8_t)(10 * k + n);
    moert_quant_sizes m = moert_quant_layout(MOERT_Q8, 5, 3, 5, 0, 2);
    cr_assert_eq(m.values, 8 * 4, "two panels of two blocks of 2 columns x 4 bytes");
    uint8_t got[64];
    memset(got, 0xEE, sizeof got);
    moert_pack_quant(MOERT_Q8, q, s, NULL, 1, 5, 3, 5, 2, got);
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++)
                for (int b = 0; b < 4; b++) {
                    int k = 4 * i + b, n = 2 * p + j;
                    int want = k < 5 && n < 3 ? 10 * k + n : 0;
                    int at = ((p * 2 + i) * 2 + j) * 4 + b;
                    cr_assert_eq(got[at], want, "panel %d row %d column %d", p, k, j);
                }
    float scale[4];
    memcpy(scale, got + m.values, sizeof scale);
    cr_assert(scale[0] == 1 && scale[1] == 2 && scale[2] == 3 && scale[3] == 0);
}

Test(pack, int4_rows_in_blocks_of_eight) {
    /* u[k][n] = (k + 3n) % 16, K = 16 (two blocks), N = 1, nr = 1: byte b of block i holds
     * row 8i+b in its low nibble and row 8i+4+b in its high one. */
    uint8_t plain[8 * 2] = {0}, got[16 + 2 * 2 * 4]; /* values, then 2 groups x 2 scales */
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < 2; n++)
            plain[(k / 2) * 2 + n] |= (uint8_t)(((k + 3 * n) % 16) << (4 * (k % 2)));
    float s[4] = {1, 1, 1, 1};
    cr_assert_eq(moert_quant_layout(MOERT_Q4, 16, 2, 8, 0, 1).matrix, (int64_t)sizeof got);
    moert_pack_quant(MOERT_Q4, plain, s, NULL, 1, 16, 2, 8, 1, got);
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < 2; i++)
            for (int b = 0; b < 4; b++) {
                uint8_t byte = got[(p * 2 + i) * 4 + b];
                cr_assert_eq(byte & 15, (8 * i + b + 3 * p) % 16, "column %d row %d", p, 8 * i + b);
                cr_assert_eq(byte >> 4, (8 * i + 4 + b + 3 * p) % 16, "column %d row %d", p,
                             8 * i + 4 + b);
            }
}

/* ---- the model object ---- */

static const moert_dim w_dims[] = {{3, -1}, {5, -1}}, b_dims[] = {{5, -1}};
static const moert_tensor_info toy_params[] = {{"w", MOERT_F32, 2, w_dims},
                                               {"b", MOERT_F32, 1, b_dims}};
static const moert_param_desc toy_packing[] = {{4}, {0}};
static const moert_model_info toy_external = {.name = "toy",
                                              .num_params = 2,
                                              .params = toy_params,
                                              .arena_bytes = 100,
                                              .external_weights = 1};
static const moert_model_desc toy_desc = {&toy_external, toy_packing, NULL};

static float toy_w[15], toy_b[5];

static void toy_values(void) {
    for (int k = 0; k < 3; k++)
        for (int n = 0; n < 5; n++)
            toy_w[k * 5 + n] = (float)(10 * k + n);
    for (int n = 0; n < 5; n++)
        toy_b[n] = (float)n + 0.5f;
}

static void check_toy(const moert_model *m) {
    cr_assert_not_null(m->arena);
    cr_assert_eq((uintptr_t)m->arena % MOERT_ALIGN, 0);
    const float *panels = m->params[0], *b = m->params[1];
    cr_assert_eq((uintptr_t)panels % MOERT_ALIGN, 0, "panels are 64-byte aligned");
    float want[24];
    moert_pack_panels(toy_w, sizeof(float), 1, 3, 5, 4, want);
    cr_assert_eq(memcmp(panels, want, sizeof want), 0);
    cr_assert_eq(panels[4], 10.0f); /* row 1 of panel 0, hand-checked */
    cr_assert_eq((uintptr_t)b % 4, 0);
    cr_assert_eq(memcmp(b, toy_b, sizeof toy_b), 0);
}

Test(model, external_weights_are_checked_and_packed, .init = scratch_init, .fini = scratch_fini) {
    toy_values();
    const moert_st_tensor ts[] = {{"b", MOERT_F32, 1, {5}, toy_b, 20},
                                  {"w", MOERT_F32, 2, {3, 5}, toy_w, 60},
                                  {"unused", MOERT_I32, 1, {1}, toy_b, 4}};
    cr_assert_eq(moert_st_write(at("w.st"), ts, 3), MOERT_OK, "%s", moert_last_error());
    moert_model *m = NULL;
    cr_assert_eq(moert_model_create(&toy_desc, at("w.st"), &m), MOERT_OK, "%s", moert_last_error());
    check_toy(m);
    moert_model_destroy(m);
    moert_model_destroy(NULL);
}

/* bool "pad" first puts w at offset 1 and b at 61: both misaligned for f32. */
Test(model, misaligned_weights_are_copied, .init = scratch_init, .fini = scratch_fini) {
    toy_values();
    unsigned char data[81] = {1};
    memcpy(data + 1, toy_w, 60);
    memcpy(data + 61, toy_b, 20);
    const char *text = "{\"pad\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[0,1]},"
                       "\"w\":{\"dtype\":\"F32\",\"shape\":[3,5],\"data_offsets\":[1,61]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[5],\"data_offsets\":[61,81]}}";
    char header[256];
    /* Spaces up to a multiple of 8, so the data region itself starts aligned. */
    snprintf(header, sizeof header, "%-*s", (int)(strlen(text) + 7) / 8 * 8, text);
    put_st(at("w.st"), header, data, sizeof data);
    moert_model *m = NULL;
    cr_assert_eq(moert_model_create(&toy_desc, at("w.st"), &m), MOERT_OK, "%s", moert_last_error());
    check_toy(m);
    moert_model_destroy(m);
}

static void expect_create_error(const moert_st_tensor *ts, int64_t n, moert_status want,
                                const char *fmt) {
    const char *p = at("w.st");
    cr_assert_eq(moert_st_write(p, ts, n), MOERT_OK, "%s", moert_last_error());
    moert_model *m = (moert_model *)1;
    expect_error(moert_model_create(&toy_desc, p, &m), want, fmt, p);
    cr_assert_null(m);
}

Test(model, mismatched_weights_are_named, .init = scratch_init, .fini = scratch_fini) {
    toy_values();
    const moert_st_tensor b = {"b", MOERT_F32, 1, {5}, toy_b, 20};
    const moert_st_tensor wrong_dtype[] = {b, {"w", MOERT_I32, 2, {3, 5}, toy_w, 60}};
    expect_create_error(wrong_dtype, 2, MOERT_ERR_FORMAT,
                        "%s: tensor 'w': expected f32 [3, 5], found i32 [3, 5]");
    const moert_st_tensor wrong_shape[] = {b, {"w", MOERT_F32, 2, {5, 3}, toy_w, 60}};
    expect_create_error(wrong_shape, 2, MOERT_ERR_FORMAT,
                        "%s: tensor 'w': expected f32 [3, 5], found f32 [5, 3]");
    const moert_st_tensor wrong_rank[] = {b, {"w", MOERT_F32, 1, {15}, toy_w, 60}};
    expect_create_error(wrong_rank, 2, MOERT_ERR_FORMAT,
                        "%s: tensor 'w': expected f32 [3, 5], found f32 [15]");
    expect_create_error(&b, 1, MOERT_ERR_FORMAT, "%s: tensor 'w' is missing; the model needs it");
    moert_model *m = (moert_model *)1;
    expect_error(moert_model_create(&toy_desc, at("none.st"), &m), MOERT_ERR_IO,
                 "%s: cannot open: No such file or directory", at("none.st"));
    cr_assert_null(m);
}

Test(model, weights_path_must_match_the_build) {
    moert_model *m = (moert_model *)1;
    cr_assert_eq(moert_model_create(&toy_desc, NULL, &m), MOERT_ERR_ARGUMENT);
    cr_assert_str_eq(moert_last_error(),
                     "toy: compiled with --weights=external; _create needs the weights file");
    cr_assert_null(m);
    const moert_model_info embedded = {.name = "toy", .arena_bytes = 0};
    const moert_model_desc d = {&embedded, NULL, NULL};
    cr_assert_eq(moert_model_create(&d, "w.safetensors", &m), MOERT_ERR_ARGUMENT);
    cr_assert_str_eq(moert_last_error(), "toy: weights are embedded; pass NULL");
    cr_assert_eq(moert_model_create(&d, NULL, &m), MOERT_OK);
    cr_assert_null(m->arena, "arena_bytes 0 allocates nothing");
    cr_assert_null(m->params);
    moert_model_destroy(m);
    cr_assert_eq(moert_model_create(NULL, NULL, &m), MOERT_ERR_ARGUMENT);
}

/* ---- the build driver ---- */

static const moert_symbol_info add_syms[] = {{"T", 8}};
static const moert_dim td2[] = {{1, 0}, {2, -1}};
static const moert_tensor_info add_in[] = {{"x", MOERT_F32, 2, td2}};
static const moert_tensor_info add_out[] = {{"y", MOERT_F32, 2, td2}};
static const moert_model_info add_info = {.name = "add1",
                                          .num_symbols = 1,
                                          .symbols = add_syms,
                                          .num_inputs = 1,
                                          .inputs = add_in,
                                          .num_outputs = 1,
                                          .outputs = add_out,
                                          .arena_bytes = 64};

/* y = x + 1 over [T, 2]. */
static moert_status add_one(moert_model *m, const int64_t *syms, const void *const *in,
                            void *const *out) {
    if (!m || !m->arena) return moert_fail(MOERT_ERR_INTERNAL, "no model");
    const float *x = in[0];
    float *y = out[0];
    for (int64_t i = 0; i < syms[0] * 2; i++)
        y[i] = x[i] + 1;
    return MOERT_OK;
}

static const moert_model_desc add_desc = {&add_info, NULL, add_one};

static int drive(int argc, const char **argv) {
    return moert_driver_main(argc, (char **)argv, &add_desc);
}

static void put_x(int64_t t) {
    float x[18];
    for (int i = 0; i < 18; i++)
        x[i] = (float)i;
    const int64_t dims[] = {t, 2};
    cr_assert_eq(moert_npy_write(at("x.npy"), MOERT_F32, 2, dims, x), MOERT_OK);
}

static void driver_init(void) {
    scratch_init();
    cr_redirect_stdout();
    cr_redirect_stderr();
}

Test(driver, runs_and_writes_the_output, .init = driver_init, .fini = scratch_fini) {
    put_x(3);
    char in[1100], out[1100];
    snprintf(in, sizeof in, "x=%s", at("x.npy"));
    snprintf(out, sizeof out, "y=%s", at("y.npy"));
    const char *argv[] = {"./add1", "--input", in, "--output", out};
    cr_assert_eq(drive(5, argv), 0);
    moert_npy y;
    cr_assert_eq(moert_npy_read(at("y.npy"), &y), MOERT_OK, "%s", moert_last_error());
    cr_assert_eq(y.dtype, MOERT_F32);
    cr_assert_eq(y.rank, 2);
    cr_assert_eq(y.dims[0], 3);
    cr_assert_eq(y.dims[1], 2);
    for (int i = 0; i < 6; i++)
        cr_assert_eq(((float *)y.data)[i], (float)i + 1);
    moert_npy_free(&y);
}

Test(driver, summary_without_outputs, .init = driver_init, .fini = scratch_fini) {
    put_x(2);
    char in[1100];
    snprintf(in, sizeof in, "--input=x=%s", at("x.npy"));
    const char *argv[] = {"/some/dir/add1", in};
    cr_assert_eq(drive(2, argv), 0);
    fflush(stdout);
    cr_assert_stdout_eq_str("y: f32[2,2] mean=2.5 min=1 max=4 first=[1, 2, 3, 4]\n");
}

Test(driver, bench_prints_timings, .init = driver_init, .fini = scratch_fini) {
    put_x(4);
    char in[1100];
    snprintf(in, sizeof in, "x=%s", at("x.npy"));
    const char *argv[] = {"add1", "--input", in, "--bench", "3"};
    cr_assert_eq(drive(5, argv), 0);
    fflush(stdout);
    FILE *f = cr_get_redirected_stdout();
    char line[256] = "";
    cr_assert_not_null(fgets(line, sizeof line, f));
    double lo, med, hi;
    cr_assert_eq(
        sscanf(line, "bench: 3 runs, min %lf ms, median %lf ms, max %lf ms", &lo, &med, &hi), 3,
        "%s", line);
    cr_assert(lo <= med && med <= hi);
}

Test(driver, misuse_exits_2, .init = driver_init, .fini = scratch_fini) {
    const char *bad_flag[] = {"add1", "--frobnicate"};
    cr_assert_eq(drive(2, bad_flag), 2);
    const char *no_value[] = {"add1", "--input"};
    cr_assert_eq(drive(2, no_value), 2);
    const char *no_eq[] = {"add1", "--input", "x"};
    cr_assert_eq(drive(3, no_eq), 2);
    const char *bad_bench[] = {"add1", "--bench", "0"};
    cr_assert_eq(drive(3, bad_bench), 2);
    fflush(stderr);
    FILE *f = cr_get_redirected_stderr();
    char line[256] = "";
    cr_assert_not_null(fgets(line, sizeof line, f));
    cr_assert_str_eq(line, "add1: unknown argument '--frobnicate'\n");
}

Test(driver, missing_input_exits_1, .init = driver_init, .fini = scratch_fini) {
    const char *argv[] = {"add1"};
    cr_assert_eq(drive(1, argv), 1);
    fflush(stderr);
    cr_assert_stderr_eq_str("add1: missing --input x=FILE.npy\n");
}

static void expect_bad_input(const char *sym, const char *fmt) {
    char in[1100], want[1200];
    snprintf(in, sizeof in, "x=%s", at("x.npy"));
    snprintf(want, sizeof want, fmt, at("x.npy"));
    const char *argv[] = {"add1", "--input", in, "--sym", sym};
    cr_assert_eq(drive(sym ? 5 : 3, argv), 1);
    cr_assert_str_eq(moert_last_error(), want);
}

Test(driver, bad_inputs_exit_1, .init = driver_init, .fini = scratch_fini) {
    put_x(9);
    expect_bad_input(NULL, "%s: input 'x' gives T = 9, above its max 8");
    put_x(3);
    expect_bad_input("T=2", "%s: input 'x' gives T = 3, but T is already 2");
    expect_bad_input("T=9", "--sym T=9 is above its max 8");
    expect_bad_input("U=1", "the model has no symbol named 'U'");
    const int32_t xi[4] = {0};
    const int64_t dims[] = {2, 2};
    cr_assert_eq(moert_npy_write(at("x.npy"), MOERT_I32, 2, dims, xi), MOERT_OK);
    expect_bad_input(NULL, "%s: expected f32 data for input 'x', found i32");
    const float x3[6] = {0};
    const int64_t d3[] = {2, 3};
    cr_assert_eq(moert_npy_write(at("x.npy"), MOERT_F32, 2, d3, x3), MOERT_OK);
    expect_bad_input(NULL, "%s: expected input 'x' as f32 [T, 2], found f32 [2, 3]");
}
