/*
 * grpo_runner.h: `kind: "grpo"`, RL fine-tuning of a base model by step-level GRPO or Chunk-GRPO
 * (spec/algorithm.md sections 3 to 6) with the `align` reward.
 *
 * One iteration: draw prompts_per_iter training prompts; sample a group of group_size SDE
 * trajectories for each (recording every x_i and step log-probability); score the final images;
 * group-normalised advantages; for each trajectory train a fraction of its chunks (uniformly or
 * weighted by the trajectory's own relative-L1 dynamics), one AdamW step per iteration (or per
 * group, the paper's schedule, which at our scale lets noise through: README). Chunk sizes
 * all 1 is step-level GRPO; the chunking is a list, uniform:K, auto (a profile of the base model
 * at the start) or dynamic (re-profiled every profile_every iterations).
 *
 * Output folder, as pretrain's (config.json, metrics.jsonl, checkpoints/ with exact resume,
 * model.safetensors, and model_ema.safetensors when ema_decay > 0), plus eval/iter-NNNNNN/
 * (held-out ODE evaluation: eval.json, grid) and groups/iter-NNNNNN.png + .json (one group: its
 * images, rewards, advantages, chunk ratios).
 */
#ifndef CHUNKGRPO_GRPO_RUNNER_H
#define CHUNKGRPO_GRPO_RUNNER_H

#include <signal.h>
#include <stdint.h>

#include "experiment.h" /* GrpoRunConfig and its table */
#include "runners/pretrain.h"

/* Runs (or with resume continues) the fine-tuning; as pretrain_run: returns 0 when done, 1 when
 * stopped by *stop (with a checkpoint), -1 with a message in err. */
int grpo_run(const GrpoRunConfig *cfg, const char *out_dir, int resume, volatile sig_atomic_t *stop,
             ProgressFn progress, void *progress_ctx, char *err, size_t errlen);

#endif
