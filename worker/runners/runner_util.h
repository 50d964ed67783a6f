/*
 * runner_util.h: the file handling every experiment runner shares: folders, small atomic
 * files, checkpoint-folder pruning, and the metrics log that stays consistent across resumes.
 */
#ifndef CHUNKGRPO_RUNNER_UTIL_H
#define CHUNKGRPO_RUNNER_UTIL_H

#include <stddef.h>
#include <stdio.h>

#include "adamw.h"
#include "backend.h"
#include "config.h"
#include "rng.h"
#include "sampler.h"
#include "tokenizer.h"

#define PATH_BUF 1024

/* mkdir -p. Returns 0, or -1 with a message naming the path. */
int make_dirs(const char *path, char *err, size_t errlen);

/* Writes len bytes to path.tmp, fsyncs, renames over path. Returns 0 or -1 with a message. */
int write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen);

/* Reads a small text file (trailing whitespace removed) into buf. Returns 0 or -1. */
int read_small_file(const char *path, char *buf, size_t buflen, char *err, size_t errlen);

/* A run's checkpoints are folders out/checkpoints/step-NNNNNNN; out/checkpoints/latest names the
 * newest COMPLETE one, so a crash while writing a folder leaves the previous one in force.
 *   checkpoint_folder_new:     creates the folder of `step`, its path into dir.
 *   checkpoint_folder_publish: after every file is in it, makes it the latest and removes the
 *                              oldest folders until `keep` remain.
 *   checkpoint_folder_latest:  the path of the latest folder into dir.
 *   has_checkpoint:            whether out holds a published checkpoint.
 * Return 0, or -1 with a message in err. */
int checkpoint_folder_new(const char *out, int step, char *dir, size_t dirlen, char *err,
                          size_t errlen);
int checkpoint_folder_publish(const char *out, int step, int keep, char *err, size_t errlen);
int checkpoint_folder_latest(const char *out, char *dir, size_t dirlen, char *err, size_t errlen);
int has_checkpoint(const char *out);

/* What a training run (pretrain, reward_train) checkpoints: the model (on the policy's backend),
 * its vocabulary, the EMA of its weights (or NULL), the optimizer and the data RNG. */
typedef struct {
    Policy *pol;
    Model *model; /* the policy's host copy */
    const Vocab *vocab;
    float *ema; /* [num_params] or NULL */
    AdamW *opt;
    Rng *rng;
    const char *experiment; /* the kind, recorded in the checkpoint's metadata */
} TrainState;

/* Writes the state at `step` as a checkpoint folder (model.safetensors, ema.safetensors when
 * there is an EMA, train_state.safetensors), publishes it and keeps `keep` folders. */
int train_checkpoint_save(const TrainState *s, const char *out, int step, int keep, char *err,
                          size_t errlen);
/* Restores the newest checkpoint folder of out into s (and the policy's device copy). Returns
 * the step it holds, or -1 with a message. */
int train_checkpoint_load(const TrainState *s, const char *out, char *err, size_t errlen);
/* out/model.safetensors (and model_ema.safetensors) of the state after `steps`. */
int train_model_save(const TrainState *s, const char *out, int steps, char *err, size_t errlen);

/* The learning rate of `step` (0-based) of `steps`: a linear warm-up to lr over warmup steps,
 * then a cosine decay to lr * min_ratio at the last step. */
double warmup_cosine_lr(double lr, int warmup, int steps, double min_ratio, int step);

/* The model shape of a preset ("tiny", "small", "base") with the overrides that are not 0, for a
 * vocabulary of vocab_size words. Returns 0, or -1 with a message. */
int model_config_for(const char *preset, int dim, int depth, int heads, int mlp_ratio,
                     int vocab_size, ModelConfig *mc, char *err, size_t errlen);

/* The SDE kind a config names ("flow", "dance" or "cps"; the config table has already checked it).
 */
SdeKind sde_kind_named(const char *name);

/* The sampler settings every experiment kind derives from its config fields: the paper's
 * defaults (sampler_config_default) with these set. */
void sampler_settings(SamplerConfig *sc, SamplerKind kind, int steps, double shift, double eta,
                      const char *sde);

/* A training prompt set: "train" or "heldout" (the world's fixed sets, docs/prompts.md), "all"
 * (both), or the path of a text file with one caption per line (blank lines and lines starting
 * with # skipped), each checked against the world's grammar, since the align reward can only
 * score those. */
typedef struct {
    const char **items; /* [count]; owned, as is the text they point into */
    int count;
    char *text;
} PromptList;

/* Loads spec into *out (free with prompt_list_free). Returns 0, or -1 with a message naming
 * `field`, the file and the line: 'config.prompts: my.txt line 3: "a red dragon": unknown shape
 * "dragon"'. */
int prompt_list_load(const char *spec, const char *field, PromptList *out, char *err,
                     size_t errlen);
void prompt_list_free(PromptList *p);

/* Writes out/config.json (the effective config of `kind`), or on resume checks the config
 * against it: every field but `growable` (the step or iteration count, which may grow) must be
 * what the run started with. A fresh run refuses a folder that already holds one. Returns 0, or
 * -1 with a message naming the field. */
int settle_config(const char *kind, const ConfigField *fields, int count, const void *cfg,
                  const char *growable, const char *out, int resume, char *err, size_t errlen);

/* Opens out/metrics.jsonl for appending. When resuming from `step`, the lines whose `key`
 * ("step", "iteration") is later (written after that checkpoint, before the interruption) are
 * dropped first, so the log never holds a step twice. Returns the stream, or NULL with a
 * message. */
FILE *metrics_open(const char *out, const char *key, int resume, long step, char *err,
                   size_t errlen);

#endif
