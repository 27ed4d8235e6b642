/* bench/probe.c: what this machine can do at most, so the benches can say how close moec
 * comes: the FP32 FMA peak (GFLOP/s) and the memory read bandwidth (GB/s, on a buffer far
 * larger than the caches), each at 1 thread and at N threads (2 by default, the benches'
 * count). Built and run by bench/probe.py: cc -O2 -march=native -fopenmp probe.c.
 *
 * Peak: each thread runs CHAINS independent FMA chains (acc = acc * a + b) on full-width
 * vectors (AVX-512 __m512 when the compiler targets it, else AVX2 __m256): enough chains
 * to cover the FMA latency on every FMA unit (latency 4 x 2 units needs 8; 16 with
 * AVX-512's 32 registers, 12 with AVX2's 16, leave a margin and no spills), so the loop
 * runs at FMA throughput.
 * Bandwidth: each thread sums its share of the buffer with vector loads into several
 * accumulators; the buffer is written once beforehand so no page faults are timed.
 * Each figure is the best of several repetitions (the least disturbed by other work).
 *
 * usage: probe [BUFFER_MIB [THREADS]]   (512, 2) prints one line of key=value pairs; the
 * figures at THREADS threads are named *_n. */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__AVX512F__)
typedef __m512 vec;
#define LANES  16
#define ISA    "avx512"
#define CHAINS 16
#define set1   _mm512_set1_ps
#define fmadd  _mm512_fmadd_ps
#define add    _mm512_add_ps
#define load   _mm512_load_ps
#define reduce _mm512_reduce_add_ps
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 vec;
#define LANES  8
#define ISA    "avx2"
#define CHAINS 12
#define set1   _mm256_set1_ps
#define fmadd  _mm256_fmadd_ps
#define add    _mm256_add_ps
#define load   _mm256_load_ps
static float reduce(__m256 v) {
    float f[8];
    _mm256_storeu_ps(f, v);
    return f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7];
}
#else
#error "probe.c needs AVX-512 or AVX2 with FMA (-march=native on such a machine)"
#endif

/* A peak repetition is short (~20 ms) and cheap, so take many: on a shared machine the
 * best of them is the one that ran alone. */
enum { FMA_REPS = 25, READ_REPS = 20, FMA_ITERS = 4 << 20 };

/* FMA_ITERS rounds of CHAINS independent FMAs; returns a sum so nothing is dead. */
static float fma_chains(float seed) {
    vec acc[CHAINS];
#pragma GCC unroll 16
    for (int c = 0; c < CHAINS; c++)
        acc[c] = set1(seed + (float)c);
    const vec a = set1(0.999999f), b = set1(1e-6f); /* acc tends to 1: no overflow */
    for (long i = 0; i < FMA_ITERS; i++)
#pragma GCC unroll 16 /* the chains must stay in registers, not in memory */
        for (int c = 0; c < CHAINS; c++)
            acc[c] = fmadd(acc[c], a, b);
    vec s = acc[0];
#pragma GCC unroll 16
    for (int c = 1; c < CHAINS; c++)
        s = add(s, acc[c]);
    return reduce(s);
}

/* GFLOP/s of `threads` threads each running fma_chains, best of FMA_REPS. */
static double fma_peak(int threads, float *sink) {
    double best = 0;
    for (int r = 0; r < FMA_REPS; r++) {
        double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads)
        {
            float v = fma_chains((float)omp_get_thread_num());
#pragma omp atomic
            *sink += v;
        }
        double flops = 2.0 * LANES * CHAINS * (double)FMA_ITERS * threads;
        double g = flops / (omp_get_wtime() - t0) / 1e9;
        best = g > best ? g : best;
    }
    return best;
}

/* Sums floats [begin, end) (multiples of 4 * LANES) with four accumulators. */
static float sum_range(const float *p, size_t begin, size_t end) {
    vec s0 = set1(0), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = begin; i < end; i += 4 * LANES) {
        s0 = add(s0, load(p + i));
        s1 = add(s1, load(p + i + LANES));
        s2 = add(s2, load(p + i + 2 * LANES));
        s3 = add(s3, load(p + i + 3 * LANES));
    }
    return reduce(add(add(s0, s1), add(s2, s3)));
}

/* GB/s of `threads` threads reading n floats, each its contiguous share, best of READ_REPS. */
static double read_bandwidth(const float *p, size_t n, int threads, float *sink) {
    double best = 0;
    size_t share = n / (size_t)threads / (4 * LANES) * (4 * LANES);
    for (int r = 0; r < READ_REPS; r++) {
        double t0 = omp_get_wtime();
#pragma omp parallel num_threads(threads)
        {
            size_t begin = share * (size_t)omp_get_thread_num();
            float v = sum_range(p, begin, begin + share);
#pragma omp atomic
            *sink += v;
        }
        double g = (double)(share * (size_t)threads * sizeof(float)) / (omp_get_wtime() - t0) / 1e9;
        best = g > best ? g : best;
    }
    return best;
}

int main(int argc, char **argv) {
    long mib = argc > 1 ? atol(argv[1]) : 512; /* 16x a 32 MiB L3 */
    int threads = argc > 2 ? atoi(argv[2]) : 2;
    if (mib < 1 || threads < 1 || argc > 3) {
        fprintf(stderr, "usage: probe [BUFFER_MIB >= 1 [THREADS >= 1]]\n");
        return 2;
    }
    size_t n = (size_t)mib << 18; /* floats */
    float *buf = aligned_alloc(64, n * sizeof(float));
    if (!buf) {
        fprintf(stderr, "probe: cannot allocate %ld MiB\n", mib);
        return 1;
    }
#pragma omp parallel for num_threads(threads) schedule(static)
    for (size_t i = 0; i < n; i++)
        buf[i] = (float)(i & 1023) * 1e-3f;
    float sink = 0;
    double fma1 = fma_peak(1, &sink), fman = fma_peak(threads, &sink);
    double bw1 = read_bandwidth(buf, n, 1, &sink), bwn = read_bandwidth(buf, n, threads, &sink);
    printf("isa=%s chains=%d fma_reps=%d read_reps=%d buffer_mib=%ld threads=%d fma_gflops_1=%.1f "
           "fma_gflops_n=%.1f read_gbs_1=%.2f read_gbs_n=%.2f checksum=%g\n",
           ISA, CHAINS, FMA_REPS, READ_REPS, mib, threads, fma1, fman, bw1, bwn, (double)sink);
    free(buf);
    return 0;
}
