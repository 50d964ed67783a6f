/*
 * rng.h: a counter-based random number generator (Philox 4x32-10, Salmon et al., SC'11).
 *
 * Every draw is a pure function of (key, counter), so the noise for element i of a request does
 * not depend on how many threads fill the buffer, or on the backend (the CUDA backend computes
 * the same function). Rng holds a key (the seed) and the next unused counter; each fill consumes
 * a counter range and advances it, which is all the state a resumed run needs.
 */
#ifndef CHUNKGRPO_RNG_H
#define CHUNKGRPO_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t key;     /* seed */
    uint64_t counter; /* next unused 128-bit block index (upper half of the counter is 0) */
} Rng;

void rng_seed(Rng *r, uint64_t seed);

/* One Philox 4x32-10 block: four 32-bit words from a 64-bit key and 128-bit counter. */
void philox4x32(uint64_t key, uint64_t ctr_lo, uint64_t ctr_hi, uint32_t out[4]);

/* n draws from U[0,1) (24-bit floats) or N(0,1) (Box-Muller on two 24-bit uniforms); element
 * i comes from block counter + i/4 either way. Advance r->counter past the blocks used. */
void rng_uniform(Rng *r, float *out, size_t n);
void rng_normal(Rng *r, float *out, size_t n);

#endif
