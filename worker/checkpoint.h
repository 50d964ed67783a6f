/*
 * checkpoint.h: the model's checkpoint files, and the training state saved beside them.
 *
 * A checkpoint is a safetensors file (common/safetensors.h) holding every tensor of the model
 * (spec/model.md's table and names, all F32, in the model's order) and, in __metadata__:
 *   format      "chunkgrpo-dit/1"
 *   config      the ModelConfig as compact JSON: {"image_size":16,"channels":3,"patch":4,
 *               "dim":32,"depth":2,"heads":2,"mlp_ratio":4,"text_len":8,"vocab_size":40}
 *   vocab       the vocabulary, words joined by '\n' (vocab_to_text), word i = token id i
 *   experiment  the experiment id (only when one is given)
 *   step        the training step, decimal (only when a CheckpointInfo is given)
 * so a checkpoint alone is enough to sample from, and the PyTorch reference can load it.
 * Loading is strict: the format, every config key (no unknown or missing keys, integers only),
 * the config's ranges, the vocabulary against vocab_size, and then every tensor's presence,
 * dtype and exact shape, with no unexpected tensors. Other __metadata__ keys are ignored, so
 * tools may annotate a checkpoint.
 *
 * The training state ("so runs resume exactly") is a second safetensors file with tensors
 * adamw.m and adamw.v (F32 [n]) and __metadata__:
 *   format "chunkgrpo-train-state/1", iteration, adamw.step, rng.key, rng.counter (decimal,
 *   exact u64/i64), adamw.lr, adamw.beta1, adamw.beta2, adamw.eps, adamw.weight_decay,
 *   adamw.grad_clip ("%.9g", which round-trips every float exactly).
 *
 * Both writers go through st_writer_save (temporary file, fsync, rename): a crash leaves the old
 * file or the new one. The two files are written separately, so a caller that needs them to
 * agree compares CheckpointInfo.step with the train state's iteration (or adamw.step) on resume.
 * All functions return 0, or -1 with a message in err that names the file and the tensor, key
 * or field at fault. They allocate only what they hand back; any thread may call them on
 * objects it owns.
 */
#ifndef CHUNKGRPO_CHECKPOINT_H
#define CHUNKGRPO_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "adamw.h"
#include "model.h"
#include "rng.h"
#include "tokenizer.h"

#define CHECKPOINT_FORMAT "chunkgrpo-dit/1"
#define TRAIN_STATE_FORMAT "chunkgrpo-train-state/1"
#define CHECKPOINT_EXPERIMENT_MAX 128 /* bytes, including the NUL */

typedef struct {
    char experiment[CHECKPOINT_EXPERIMENT_MAX]; /* "" = none */
    int64_t step;                               /* training steps behind these weights, >= 0 */
} CheckpointInfo;

/*
 * Writes m's parameters, config and vocabulary to path (atomically). info may be NULL (an
 * untrained or exported model: no experiment or step in the metadata). vocab->size must equal
 * m->cfg.vocab_size. Reads m, vocab and info only; they stay owned by the caller.
 */
int checkpoint_save(const char *path, const Model *m, const Vocab *vocab,
                    const CheckpointInfo *info, char *err, size_t errlen);

/*
 * Reads a checkpoint. m and vocab are treated as uninitialised (their previous contents are
 * NOT freed); on success they are filled (model_init'ed with the file's config and weights; the
 * gradient buffer is zero) and the caller owns them (model_free, vocab_free). info may be NULL;
 * otherwise it receives the experiment id ("" when absent) and step (0 when absent).
 * On failure m and vocab are left freed (zeroed), *info is unspecified, nothing leaks, and err
 * says what was wrong,
 * e.g. "<path>: tensor 'blocks.0.qkv.weight' has shape [96, 32], expected [192, 64]".
 */
int checkpoint_load(const char *path, Model *m, Vocab *vocab, CheckpointInfo *info, char *err,
                    size_t errlen);

/*
 * Writes the optimizer moments, step and hyperparameters, the RNG state and the trainer's
 * iteration counter to path (atomically). Reads opt and rng only.
 */
int train_state_save(const char *path, const AdamW *opt, const Rng *rng, int64_t iteration,
                     char *err, size_t errlen);

/*
 * Restores what train_state_save wrote. opt must already be adamw_init'ed for the model's
 * parameter count n; the file must hold moments of exactly that length. On success opt->m,
 * opt->v, opt->step and opt->cfg (the saved hyperparameters: a resumed run continues with what
 * it ran with; override opt->cfg afterwards to change them deliberately), *rng and *iteration
 * are overwritten. On failure none of opt, rng and iteration is changed.
 */
int train_state_load(const char *path, AdamW *opt, Rng *rng, int64_t *iteration, char *err,
                     size_t errlen);

#endif
