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

#include "experiment.h" /* ProfileConfig and its table */

/* Profiles cfg->model into out_dir; cfg has passed experiment_config_parse (its chunk counts fit
 * the steps). Returns 0, or -1 with a message in err. */
int profile_run(const ProfileConfig *cfg, const char *out_dir, char *err, size_t errlen);

#endif
