/* ir/tensor.c: host tensors for the interpreter and constant folding, and the
 * conversions between raw little-endian bytes and the interpreter's storage. */
#include "ir.h"

#include <math.h>
#include <string.h>

bool mc_tensor_alloc(mc_tensor *t, mc_dtype dt, int rank, const int64_t *dims, mc_diag *d,
                     const char *what) {
    memset(t, 0, sizeof *t);
    t->dt = dt;
    t->rank = rank;
    int64_t n = 1;
    for (int i = 0; i < rank; i++) {
        t->dims[i] = dims[i];
        if (dims[i] < 0 || (dims[i] && n > MC_MAX_DIM / dims[i]))
            return mc_error(d, NULL, "%s: tensor size overflows (more than 2^40 elements)", what);
        n *= dims[i];
    }
    t->numel = n;
    size_t elem = mc_dtype_is_float(dt) ? sizeof(mc_real) : sizeof(int64_t);
    void *p = mc_alloc((size_t)n * elem);
    if (!p)
        return mc_error(d, NULL, "cannot allocate %lld bytes for %s", (long long)((size_t)n * elem),
                        what);
    memset(p, 0, (size_t)n * elem);
    if (mc_dtype_is_float(dt))
        t->f = p;
    else
        t->i = p;
    return true;
}

void mc_tensor_free(mc_tensor *t) {
    mc_free(t->f);
    mc_free(t->i);
    t->f = NULL;
    t->i = NULL;
}

/* IEEE half and bfloat16, round to nearest even. */
uint16_t mc_f32_to_f16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t exp = (u >> 23) & 0xffu, man = u & 0x7fffffu;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    int32_t e = (int32_t)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10) return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;
    return (uint16_t)h;
}

float mc_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    float f;
    if (exp == 0)
        f = ldexpf((float)man, -24);
    else if (exp == 31)
        f = man ? NAN : INFINITY;
    else
        f = ldexpf((float)(man | 0x400u), (int)exp - 25);
    uint32_t u;
    memcpy(&u, &f, 4);
    u |= sign;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t mc_f32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x7fffffu)) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

float mc_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* mc_real to float on the way to f16 or bf16. In the f64 build a plain (float) cast
 * would round twice, which can land on the wrong side of a tie; rounding to odd first
 * keeps the second rounding exact, as float carries more than two bits beyond f16 and
 * bf16 at every magnitude either can hold. In the float build it is the identity. */
static float narrow(mc_real x) {
#ifdef MC_REAL_DOUBLE
    float f = (float)x;
    if ((double)f == x || x != x) return f;
    if (fabs((double)f) > fabs(x)) f = nextafterf(f, 0.0f); /* truncate toward zero */
    uint32_t u;
    memcpy(&u, &f, 4);
    u |= 1; /* sticky bit: inexact */
    memcpy(&f, &u, 4);
    return f;
#else
    return x;
#endif
}

mc_real mc_round_to_dtype(mc_real x, mc_dtype dt) {
    switch (dt) {
    case MC_DT_F16: return mc_f16_to_f32(mc_f32_to_f16(narrow(x)));
    case MC_DT_BF16: return mc_bf16_to_f32(mc_f32_to_bf16(narrow(x)));
    case MC_DT_F32:
    case MC_DT_I32:
    case MC_DT_I64:
    case MC_DT_BOOL:
    case MC_DT_Q8:
    case MC_DT_Q4: return x;
    }
    return x;
}

void mc_tensor_load_bytes(mc_tensor *t, const void *bytes) {
    const unsigned char *b = bytes;
    for (int64_t k = 0; k < t->numel; k++) {
        switch (t->dt) {
        case MC_DT_F32: {
            float v;
            memcpy(&v, b + 4 * k, 4);
            t->f[k] = v;
            break;
        }
        case MC_DT_F16: {
            uint16_t h;
            memcpy(&h, b + 2 * k, 2);
            t->f[k] = mc_f16_to_f32(h);
            break;
        }
        case MC_DT_BF16: {
            uint16_t h;
            memcpy(&h, b + 2 * k, 2);
            t->f[k] = mc_bf16_to_f32(h);
            break;
        }
        case MC_DT_I32: {
            int32_t v;
            memcpy(&v, b + 4 * k, 4);
            t->i[k] = v;
            break;
        }
        case MC_DT_I64: memcpy(&t->i[k], b + 8 * k, 8); break;
        case MC_DT_BOOL: t->i[k] = b[k] != 0; break;
        case MC_DT_Q8: t->i[k] = (int8_t)b[k]; break; /* raw values (mc_value_load dequantizes) */
        case MC_DT_Q4: t->i[k] = b[k]; break;
        }
    }
}

void mc_tensor_store_bytes(const mc_tensor *t, void *out) {
    unsigned char *b = out;
    for (int64_t k = 0; k < t->numel; k++) {
        switch (t->dt) {
        case MC_DT_F32: {
            float v = (float)t->f[k];
            memcpy(b + 4 * k, &v, 4);
            break;
        }
        case MC_DT_F16: {
            uint16_t h = mc_f32_to_f16(narrow(t->f[k]));
            memcpy(b + 2 * k, &h, 2);
            break;
        }
        case MC_DT_BF16: {
            uint16_t h = mc_f32_to_bf16(narrow(t->f[k]));
            memcpy(b + 2 * k, &h, 2);
            break;
        }
        case MC_DT_I32: {
            int32_t v = (int32_t)t->i[k];
            memcpy(b + 4 * k, &v, 4);
            break;
        }
        case MC_DT_I64: memcpy(b + 8 * k, &t->i[k], 8); break;
        case MC_DT_BOOL: b[k] = t->i[k] != 0; break;
        case MC_DT_Q8:
        case MC_DT_Q4: b[k] = (unsigned char)t->i[k]; break;
        }
    }
}
