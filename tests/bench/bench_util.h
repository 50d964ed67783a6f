/*
 * bench_util.h: what the benchmark programs share: a monotonic clock and the model they time
 * (a preset with random non-zero weights, so no path is skipped as zero, and the PyTorch peers'
 * vocabulary size).
 */
#ifndef CHUNKGRPO_BENCH_UTIL_H
#define CHUNKGRPO_BENCH_UTIL_H

#include <time.h>

#include "model.h"
#include "rng.h"

#define BENCH_VOCAB 64 /* as the PyTorch peers (engine_torch.py, sample_torch.py) */

static inline double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Initialises m for preset with N(0, 0.05^2) weights from r. Returns 0, or -1 (unknown preset,
 * no memory). */
static inline int bench_random_model(Model *m, const char *preset, Rng *r)
{
    ModelConfig cfg;
    if (model_config_preset(preset, &cfg)) return -1;
    cfg.vocab_size = BENCH_VOCAB;
    if (model_init(m, &cfg)) return -1;
    rng_normal(r, m->params, m->num_params);
    for (size_t i = 0; i < m->num_params; i++) m->params[i] *= 0.05f;
    return 0;
}

#endif
