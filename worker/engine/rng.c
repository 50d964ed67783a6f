/*
 * rng.c: Philox 4x32-10 and the uniform/normal fills built on it. See rng.h.
 */
#include "rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

/* Below this many blocks a fill runs on the calling thread: an OpenMP region costs more than
 * the work (a few draws for chunk selection or dropout). Each element is the same either way. */
#define RNG_PARALLEL_BLOCKS 256

void rng_seed(Rng *r, uint64_t seed)
{
    r->key = seed;
    r->counter = 0;
}

void philox4x32(uint64_t key, uint64_t ctr_lo, uint64_t ctr_hi, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)ctr_lo, c1 = (uint32_t)(ctr_lo >> 32);
    uint32_t c2 = (uint32_t)ctr_hi, c3 = (uint32_t)(ctr_hi >> 32);
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
        uint32_t n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        uint32_t n3 = (uint32_t)p0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* 24 high bits -> [0, 1): exactly representable in float, never 1. */
static inline float u32_to_unit(uint32_t u)
{
    return (float)(u >> 8) * (1.0f / 16777216.0f);
}

void rng_uniform(Rng *r, float *out, size_t n)
{
    size_t blocks = (n + 3) / 4;
    uint64_t base = r->counter;
#pragma omp parallel for schedule(static) if (blocks >= RNG_PARALLEL_BLOCKS)
    for (size_t b = 0; b < blocks; b++) {
        uint32_t w[4];
        philox4x32(r->key, base + b, 0, w);
        for (size_t j = 0; j < 4 && 4 * b + j < n; j++) out[4 * b + j] = u32_to_unit(w[j]);
    }
    r->counter += blocks;
}

void rng_normal(Rng *r, float *out, size_t n)
{
    /* One block of four words gives two Box-Muller pairs, so element i depends only on
     * (key, counter + i/4), whatever the thread count. */
    size_t blocks = (n + 3) / 4;
    uint64_t base = r->counter;
#pragma omp parallel for schedule(static) if (blocks >= RNG_PARALLEL_BLOCKS)
    for (size_t b = 0; b < blocks; b++) {
        uint32_t w[4];
        philox4x32(r->key, base + b, 0, w);
        for (int pair = 0; pair < 2; pair++) {
            /* u1 in (0, 1] so the log is finite; double for the transform keeps the tails exact. */
            double u1 = ((double)(w[2 * pair] >> 8) + 1.0) / 16777216.0;
            double u2 = (double)(w[2 * pair + 1] >> 8) / 16777216.0;
            double rad = sqrt(-2.0 * log(u1));
            double ang = 2.0 * M_PI * u2;
            size_t i0 = 4 * b + 2 * pair;
            if (i0 < n) out[i0] = (float)(rad * cos(ang));
            if (i0 + 1 < n) out[i0 + 1] = (float)(rad * sin(ang));
        }
    }
    r->counter += blocks;
}
