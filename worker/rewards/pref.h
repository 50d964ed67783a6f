/*
 * pref.h: the learned preference reward (spec architecture.md, "Rewards": pref), a model that
 * `kind: "reward_train"` trains (runners/reward_train.h) and a grpo run scores its rollouts with
 * (the reward component pref).
 *
 * The scorer is the engine's own diffusion transformer read at t = 0: given a clean image and
 * its caption, the score is the mean of the model's output over every pixel and channel, so the
 * final linear layer learns to write the score into its output, and the gradient of a loss on
 * the score is an equal share of it on every output element (pref_score_grad). One engine, one
 * checkpoint format: a pref model is a safetensors checkpoint like any other, its metadata's
 * experiment "reward_train".
 */
#ifndef CHUNKGRPO_PREF_H
#define CHUNKGRPO_PREF_H

#include <stddef.h>
#include <stdint.h>

/* The scores of n images from the model's output v [n, img]: score[i] = mean of row i. */
void pref_scores(const float *v, int n, size_t img, float *score);

/* The output gradient of a loss whose gradient on the scores is dscore [n]: every element of
 * row i gets dscore[i] / img (into dv [n, img]). */
void pref_score_grad(const float *dscore, int n, size_t img, float *dv);

/* The Bradley-Terry loss of n preference pairs, mean over pairs of log(1 + exp(-(chosen[i] -
 * rejected[i]))), and its gradient on every score into dchosen, drejected [n]. Returns the loss;
 * *correct counts the pairs whose chosen image scores higher. */
double pref_pair_loss(const float *chosen, const float *rejected, int n, float *dchosen,
                      float *drejected, int *correct);

typedef struct PrefModel PrefModel;

/* Loads the pref model at path for scoring up to `batch` images per model call on the CPU.
 * Returns NULL with a message naming the file. */
PrefModel *pref_open(const char *path, int batch, char *err, size_t errlen);
void pref_close(PrefModel *pm);

/* Scores n images imgs [n, S, S, C] (values in [-1, 1]) against prompts[i] into score [n].
 * Returns 0, or -1 with a message (the images are not the model's size). */
int pref_score_images(PrefModel *pm, const char *const *prompts, const float *imgs, int n, int S,
                      float *score, char *err, size_t errlen);

#endif
