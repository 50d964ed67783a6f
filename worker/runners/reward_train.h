/*
 * reward_train.h: `kind: "reward_train"`, training a learned reward model.
 *
 * reward "pref": a Bradley-Terry preference model (rewards/pref.h) on pairs of one caption's
 * clean rendering (chosen) against a degraded one (rejected), the analogue of HPS / PickScore
 * trained on human choices. Pair i of step s is a pure function of the seed and s * batch + i:
 * a scene of the training split, and a degradation drawn from config.degradations:
 *   noise    Gaussian noise (sd 0.35 on the [-1, 1] scale)
 *   blur     two passes of a 3x3 box blur
 *   ink      two stray strokes in a palette colour
 *   colour   one object in another palette colour than its caption says
 *   missing  one object of a scene of several left out (a colour change for a single object)
 * The last two disagree with the caption, so the model must read the prompt; the first three do
 * not, so it must also judge the image. Evaluations score the same held-out pairs every time
 * (scenes whose captions pretraining never showed): accuracy overall and per degradation.
 * AdamW with warm-up and cosine decay; resumes bit for bit like pretraining.
 *
 * Output folder: config.json, metrics.jsonl (one line per step that logs or evaluates: loss,
 * accuracy, margin, lr, grad_norm over the steps since the last line; eval_accuracy and
 * eval_accuracy_by {"noise": ...}), checkpoints/, model.safetensors.
 */
#ifndef CHUNKGRPO_REWARD_TRAIN_H
#define CHUNKGRPO_REWARD_TRAIN_H

#include <signal.h>

#include "experiment.h"       /* RewardTrainConfig and its table */
#include "runners/pretrain.h" /* ProgressFn */

/* Runs (or with resume continues) the training cfg describes in out_dir. Returns 0 when done, 1
 * when stop was raised (a checkpoint was saved), -1 with a message in err. */
int reward_train_run(const RewardTrainConfig *cfg, const char *out_dir, int resume,
                     volatile sig_atomic_t *stop, ProgressFn progress, void *progress_ctx,
                     char *err, size_t errlen);

#endif
