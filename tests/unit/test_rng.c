/*
 * test_rng.c: Philox 4x32-10 against the known-answer vectors of its authors (Random123's
 * kat_vectors), the statistics of the uniform and normal fills, and the property the engine
 * relies on: a draw depends only on (seed, counter), never on the thread count.
 */
#include <omp.h>
#include <stdlib.h>

#include "rng.h"
#include "test.h"

static void test_philox_known_answers(void)
{
    static const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t out[4];
        uint64_t key = kat[i].key[0] | (uint64_t)kat[i].key[1] << 32;
        uint64_t lo = kat[i].ctr[0] | (uint64_t)kat[i].ctr[1] << 32;
        uint64_t hi = kat[i].ctr[2] | (uint64_t)kat[i].ctr[3] << 32;
        philox4x32(key, lo, hi, out);
        for (int j = 0; j < 4; j++)
            CHECK_MSG(out[j] == kat[i].out[j], "vector %zu word %d: %08x, expected %08x", i, j,
                      out[j], kat[i].out[j]);
    }
}

static void test_normal_statistics(void)
{
    enum { N = 1 << 20 };
    float *z = malloc(N * sizeof *z);
    Rng r;
    rng_seed(&r, 42);
    rng_normal(&r, z, N);
    double s1 = 0, s2 = 0, s4 = 0;
    int beyond3 = 0;
    for (int i = 0; i < N; i++) {
        s1 += z[i], s2 += (double)z[i] * z[i], s4 += (double)z[i] * z[i] * z[i] * z[i];
        beyond3 += fabsf(z[i]) > 3.0f;
    }
    double mean = s1 / N, var = s2 / N - mean * mean, kurt = s4 / N / (var * var);
    /* standard errors at N = 2^20: mean 1e-3, variance 1.4e-3, kurtosis 5e-3 */
    CHECK_MSG(fabs(mean) < 5e-3, "mean %g", mean);
    CHECK_MSG(fabs(var - 1.0) < 7e-3, "variance %g", var);
    CHECK_MSG(fabs(kurt - 3.0) < 3e-2, "kurtosis %g", kurt);
    CHECK_MSG(fabs(beyond3 / (double)N - 0.0027) < 4e-4, "P(|z| > 3) = %g", beyond3 / (double)N);
    CHECK(r.counter == N / 4);
    free(z);
}

static void test_uniform_range(void)
{
    enum { N = 1 << 18 };
    float *u = malloc(N * sizeof *u);
    Rng r;
    rng_seed(&r, 7);
    rng_uniform(&r, u, N);
    double s = 0;
    int ok = 1, bins[10] = {0};
    for (int i = 0; i < N; i++) {
        ok &= u[i] >= 0.0f && u[i] < 1.0f;
        s += u[i];
        bins[(int)(u[i] * 10)]++;
    }
    CHECK(ok);
    CHECK_MSG(fabs(s / N - 0.5) < 3e-3, "mean %g", s / N);
    for (int b = 0; b < 10; b++) CHECK_MSG(abs(bins[b] - N / 10) < 600, "bin %d: %d", b, bins[b]);
    free(u);
}

/* Element i of a fill comes from block counter + i/4, so: any thread count gives the same
 * numbers; a fill of n continues exactly where the previous one's blocks ended; and a saved
 * (key, counter) resumes the stream. */
static void test_counter_semantics(void)
{
    enum { N = 10007 };
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    int saved = omp_get_max_threads();
    Rng r;
    omp_set_num_threads(1);
    rng_seed(&r, 99);
    rng_normal(&r, a, N);
    omp_set_num_threads(2);
    rng_seed(&r, 99);
    rng_normal(&r, b, N);
    omp_set_num_threads(saved);
    CHECK(memcmp(a, b, sizeof(float) * N) == 0);

    rng_seed(&r, 5);
    rng_normal(&r, a, 8);
    Rng resumed = r; /* what a checkpoint stores */
    rng_normal(&r, a, 100);
    rng_normal(&resumed, b, 100);
    CHECK(memcmp(a, b, sizeof(float) * 100) == 0);
    CHECK(r.counter == 2 + 25);

    rng_seed(&r, 5);
    rng_normal(&r, a, 16);
    rng_seed(&r, 5);
    rng_normal(&r, b, 8);
    rng_normal(&r, b + 8, 8);
    CHECK(memcmp(a, b, sizeof(float) * 16) == 0);

    Rng other;
    rng_seed(&other, 6);
    rng_normal(&other, b, 16);
    CHECK(memcmp(a, b, sizeof(float) * 16) != 0);
    free(a);
    free(b);
}

int main(void)
{
    TEST_RUN(test_philox_known_answers);
    TEST_RUN(test_normal_statistics);
    TEST_RUN(test_uniform_range);
    TEST_RUN(test_counter_semantics);
    return test_summary("rng");
}
