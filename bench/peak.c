/*
 * Arithmetic peak of all cores: independent multiply-add chains per thread, so the measured rate is the units' peak.
 *   peak THREADS ITERS fp32   fp32 FMA (vfmadd), 2 flops a lane
 *   peak THREADS ITERS int8   uint8 x int8 products summed into int32, 2 ops a product: one vpdpbusd with VNNI;
 *                             without it vpmaddubsw (pairs into int16) + vpmaddwd (pairs into int32) + vpaddd,
 *                             the sequence integer GEMM kernels use on such CPUs.
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef __AVX512F__
typedef __m512 vec;
typedef __m512i ivec;
#define LANES 16
#define FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define SET1(x) _mm512_set1_ps(x)
#define SUM(v) _mm512_reduce_add_ps(v)
#define ISET1(x) _mm512_set1_epi8(x)
#define ISUM(v) _mm512_reduce_add_epi32(v)
#define ZERO _mm512_setzero_si512()
#ifdef __AVX512VNNI__
#define DOT(acc, a, b) _mm512_dpbusd_epi32(acc, a, b)
#define INT8_PATH "vpdpbusd (AVX512-VNNI)"
#else
#define DOT(acc, a, b) _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(a, b), _mm512_set1_epi16(1)))
#define INT8_PATH "vpmaddubsw + vpmaddwd + vpaddd (AVX-512, no VNNI)"
#endif
#else
typedef __m256 vec;
typedef __m256i ivec;
#define LANES 8
#define FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define SET1(x) _mm256_set1_ps(x)
static float SUM(__m256 v) { float f[8]; _mm256_storeu_ps(f, v); float s = 0; for (int i = 0; i < 8; i++) s += f[i]; return s; }
#define ISET1(x) _mm256_set1_epi8(x)
static int ISUM(__m256i v) { int f[8]; _mm256_storeu_si256((__m256i *)f, v); int s = 0; for (int i = 0; i < 8; i++) s += f[i]; return s; }
#define ZERO _mm256_setzero_si256()
#ifdef __AVXVNNI__
#define DOT(acc, a, b) _mm256_dpbusd_avx_epi32(acc, a, b)
#define INT8_PATH "vpdpbusd (AVX-VNNI)"
#else
#define DOT(acc, a, b) _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1)))
#define INT8_PATH "vpmaddubsw + vpmaddwd + vpaddd (AVX2, no VNNI)"
#endif
#endif
/* Bytes in a vector: the uint8 x int8 products one DOT makes. */
#define INT8_LANES (LANES * 4)

#define CHAINS 12 /* enough independent accumulators to hide the latency on two pipes */
static long iters;
static volatile float sink[256]; /* volatile: the result must be kept, or the loop is dead code */

static void *fp32(void *arg) {
  long id = (long)arg;
  vec x = SET1(0.999999f), y = SET1(1e-7f);
  /* Twelve named accumulators stay in registers; an array of them may be spilled to memory each round. */
  vec a0 = SET1(0), a1 = SET1(1), a2 = SET1(2), a3 = SET1(3), a4 = SET1(4), a5 = SET1(5);
  vec a6 = SET1(6), a7 = SET1(7), a8 = SET1(8), a9 = SET1(9), a10 = SET1(10), a11 = SET1(11);
  for (long i = 0; i < iters; i++) {
    a0 = FMA(a0, x, y); a1 = FMA(a1, x, y); a2 = FMA(a2, x, y); a3 = FMA(a3, x, y);
    a4 = FMA(a4, x, y); a5 = FMA(a5, x, y); a6 = FMA(a6, x, y); a7 = FMA(a7, x, y);
    a8 = FMA(a8, x, y); a9 = FMA(a9, x, y); a10 = FMA(a10, x, y); a11 = FMA(a11, x, y);
  }
  sink[id] = SUM(a0) + SUM(a1) + SUM(a2) + SUM(a3) + SUM(a4) + SUM(a5) + SUM(a6) + SUM(a7) + SUM(a8) + SUM(a9) + SUM(a10) + SUM(a11);
  return NULL;
}

static void *int8(void *arg) {
  long id = (long)arg;
  /* Each product takes its chain's accumulator as the uint8 operand, as fp32's FMA takes its own: twelve chains of
     distinct products (a shared product would be computed once and reused by every chain). */
  ivec y = ISET1(1);
  ivec a0 = ISET1(1), a1 = ISET1(2), a2 = ISET1(3), a3 = ISET1(4), a4 = ISET1(5), a5 = ISET1(6);
  ivec a6 = ISET1(7), a7 = ISET1(8), a8 = ISET1(9), a9 = ISET1(10), a10 = ISET1(11), a11 = ISET1(12);
  for (long i = 0; i < iters; i++) {
    a0 = DOT(a0, a0, y); a1 = DOT(a1, a1, y); a2 = DOT(a2, a2, y); a3 = DOT(a3, a3, y);
    a4 = DOT(a4, a4, y); a5 = DOT(a5, a5, y); a6 = DOT(a6, a6, y); a7 = DOT(a7, a7, y);
    a8 = DOT(a8, a8, y); a9 = DOT(a9, a9, y); a10 = DOT(a10, a10, y); a11 = DOT(a11, a11, y);
  }
  sink[id] = (float)(ISUM(a0) + ISUM(a1) + ISUM(a2) + ISUM(a3) + ISUM(a4) + ISUM(a5) + ISUM(a6) + ISUM(a7) + ISUM(a8) + ISUM(a9) + ISUM(a10) + ISUM(a11));
  return NULL;
}

int main(int argc, char **argv) {
  int threads = argc > 1 ? atoi(argv[1]) : 1;
  iters = argc > 2 ? atol(argv[2]) : 50000000L;
  int isInt8 = argc > 3 && strcmp(argv[3], "int8") == 0;
  pthread_t t[256];
  struct timespec a, b;
  clock_gettime(CLOCK_MONOTONIC, &a);
  for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, isInt8 ? int8 : fp32, (void *)i);
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  clock_gettime(CLOCK_MONOTONIC, &b);
  double s = (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) * 1e-9;
  if (isInt8) {
    double ops = 2.0 * INT8_LANES * CHAINS * (double)iters * threads;
    printf("{\"gops\": %.1f, \"lanes\": %d, \"threads\": %d, \"seconds\": %.3f, \"path\": \"%s\"}\n", ops / s / 1e9, INT8_LANES, threads, s, INT8_PATH);
  } else {
    double flops = 2.0 * LANES * CHAINS * (double)iters * threads;
    printf("{\"gflops\": %.1f, \"lanes\": %d, \"threads\": %d, \"seconds\": %.3f}\n", flops / s / 1e9, LANES, threads, s);
  }
  return 0;
}
