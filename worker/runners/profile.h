/*
 * profile.h: `kind: "profile"`, the temporal-dynamics profile of a model (algorithm.md section 5):
 * the relative L1 distance of every transition, mean and spread over many prompts and seeds of SDE
 * rollouts, and the chunk boundaries that segment it optimally into K chunks (and into every K
 * from 2 to max_chunks, for comparison). `chunks: "auto"` in a grpo config runs the same
 * measurement on its base model.
 * Output folder: profile.json (the curve, its spread, the proposals) and profile.png (the curve
 * with a band of one standard deviation across prompts and the proposed boundaries).
 */
#ifndef CHUNKGRPO_PROFILE_H
#define CHUNKGRPO_PROFILE_H

#include <stdint.h>

#include "config.h"

typedef struct {
    char model[CONFIG_STRING_MAX];
    char prompts[CONFIG_STRING_MAX];
    char sde[CONFIG_STRING_MAX];
    int num_prompts, seeds, steps, chunk_count, max_chunks, batch, threads;
    char backend[CONFIG_STRING_MAX];
    char precision[CONFIG_STRING_MAX];
    double shift, eta;
    int64_t seed;
} ProfileConfig;

extern const ConfigField profile_fields[];
extern const int profile_field_count;

/* Profiles cfg->model into out_dir. Returns 0, or -1 with a message in err. */
int profile_run(const ProfileConfig *cfg, const char *out_dir, char *err, size_t errlen);

#endif
