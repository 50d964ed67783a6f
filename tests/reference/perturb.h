/*
 * perturb.h: the C twin of grpo_ref.perturbation (tests/reference/grpo_ref.py), bit for bit: the
 * fixture's theta1 is theta0 moved by this deterministic pattern, which the C tests recompute
 * instead of reading a second model file. Header-only, libc only (the GPU check includes it).
 */
#ifndef CHUNKGRPO_PERTURB_H
#define CHUNKGRPO_PERTURB_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t splitmix64(uint64_t x)
{
    uint64_t z = x + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* p[j] += scale * (2 u_j - 1), u_j the top 24 bits of splitmix64(seed + j) as a fraction. */
static inline void perturb_params(float *p, size_t n, double scale, uint64_t seed)
{
    for (size_t j = 0; j < n; j++) {
        double u = (double)(splitmix64(seed + j) >> 40) / 16777216.0;
        p[j] = (float)((double)p[j] + scale * (2.0 * u - 1.0));
    }
}

#endif
