/*
 * pretrain.h: `kind: "pretrain"`, flow-matching training of a base model on the shapes world.
 *
 * Each step draws a fresh batch of captioned scenes (scene i of step s is a pure function of the
 * seed and s * batch + i), a logit-normal t per image, prompt dropout, and the noise, from one
 * counter-based RNG; the loss is mean ||v - (x1 - x0)||^2. AdamW with linear warm-up and cosine
 * decay, an EMA of the weights, metrics as JSON lines, periodic checkpoints and sample grids.
 * A run stopped at any point (signal, crash) resumes from its last checkpoint and finishes with
 * the same weights, bit for bit, as a run that was never stopped.
 *
 * Output folder:
 *   config.json           the effective config (every default filled in)
 *   metrics.jsonl         one line per logged step
 *   checkpoints/latest    the name of the newest complete checkpoint folder (written last)
 *   checkpoints/step-NNNNNNN/{model,ema,train_state}.safetensors
 *   samples/step-NNNNNNN.png   held-out prompts, ODE, fixed seeds (raw and EMA weights)
 *   model.safetensors, model_ema.safetensors   the final weights
 */
#ifndef CHUNKGRPO_PRETRAIN_H
#define CHUNKGRPO_PRETRAIN_H

#include <signal.h>
#include <stdint.h>

#include "experiment.h" /* PretrainConfig and its table */

/* How a run reports progress as it goes (the command line draws a bar; the server uplink will
 * stream it). Called after every step with the step's headline value (pretrain: the loss; grpo:
 * the mean reward); may be NULL. */
typedef void (*ProgressFn)(void *ctx, int64_t step, int64_t total, double value, double lr,
                           double sec_per_step);

/*
 * Runs (or, with resume, continues) the pretraining described by cfg in out_dir.
 * stop: when it becomes non-zero (a signal handler sets it), the run saves a checkpoint after
 * the current step and returns 1. Returns 0 when all steps are done, 1 when stopped, -1 with a
 * message in err on failure (bad init checkpoint, resume mismatch, I/O).
 */
int pretrain_run(const PretrainConfig *cfg, const char *out_dir, int resume,
                 volatile sig_atomic_t *stop, ProgressFn progress, void *progress_ctx, char *err,
                 size_t errlen);

#endif
