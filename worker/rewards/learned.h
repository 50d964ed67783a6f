/*
 * learned.h: the learned rewards (spec architecture.md, "Rewards": pref and clip), models that
 * `kind: "reward_train"` trains (runners/reward_train.h) and that grpo runs, evaluations and
 * `score` use. Both are the engine's own diffusion transformer read at t = 0, one engine and one
 * checkpoint format (metadata experiment "reward_train"):
 *   pref  a pairwise-preference model: given a clean image and its caption, the score is the
 *         mean of the model's output over every pixel and channel, so the final linear layer
 *         learns to write the score into its output (pref_scores, pref_score_grad); trained by
 *         Bradley-Terry (pref_pair_loss).
 *   clip  a contrastive image-text model: the image's embedding is the model's output for the
 *         image under the empty prompt, the caption's its output for a blank canvas (the
 *         world's background) under the caption, both normalised; the score is their cosine
 *         similarity, in [-1, 1]; trained by a symmetric InfoNCE over a batch (clip_batch_loss).
 */
#ifndef CHUNKGRPO_LEARNED_H
#define CHUNKGRPO_LEARNED_H

#include <stddef.h>
#include <stdint.h>

/* In the order of experiment_learned_names (common/experiment.h). */
typedef enum { LEARNED_PREF, LEARNED_CLIP } LearnedKind;

/* pref: the scores of n images from the model's output v [n, img]: score[i] = mean of row i. */
void pref_scores(const float *v, int n, size_t img, float *score);

/* pref: the output gradient of a loss whose gradient on the scores is dscore [n]: every element
 * of row i gets dscore[i] / img (into dv [n, img]). */
void pref_score_grad(const float *dscore, int n, size_t img, float *dv);

/* pref: the Bradley-Terry loss of n preference pairs, mean over pairs of log(1 + exp(-(chosen[i]
 * - rejected[i]))), and its gradient on every score into dchosen, drejected [n]. Returns the
 * loss; *correct counts the pairs whose chosen image scores higher. */
double pref_pair_loss(const float *chosen, const float *rejected, int n, float *dchosen,
                      float *drejected, int *correct);

/* clip: rows v [n, dim] normalised into e [n, dim] (norm[i] = |v_i|, at least 1e-12). */
void clip_normalise(const float *v, int n, size_t dim, float *e, float *norm);

/* clip: the gradient on v [n, dim] of a loss whose gradient on e = v / |v| is de [n, dim]. */
void clip_normalise_grad(const float *e, const float *norm, const float *de, int n, size_t dim,
                         float *dv);

/* clip: the symmetric InfoNCE loss of B images ei [B, dim] and B captions et [B, dim] (unit rows),
 * logits cos / temperature; same[i * B + j] is 1 when image i and caption j belong together
 * (equal captions all count), and every row and column has at least one. The gradients on ei
 * and et into dei, det; work [2 * B * B] is the caller's scratch. Returns the loss; *correct
 * counts the images whose most similar caption is theirs. */
double clip_batch_loss(const float *ei, const float *et, const uint8_t *same, int B, size_t dim,
                       float temperature, double *work, float *dei, float *det, int *correct);

typedef struct LearnedReward LearnedReward;

/* Loads the learned reward model of `kind` at path for scoring up to `batch` images per call on
 * the CPU. Returns NULL with a message naming the file. */
LearnedReward *learned_open(const char *path, LearnedKind kind, int batch, char *err,
                            size_t errlen);
void learned_close(LearnedReward *lr);

/* Scores n images imgs [n, S, S, C] (values in [-1, 1]) against prompts[i] into score [n].
 * Returns 0, or -1 with a message (the images are not the model's size). */
int learned_score_images(LearnedReward *lr, const char *const *prompts, const float *imgs, int n,
                         int S, float *score, char *err, size_t errlen);

/* clip: the blank canvas a caption is embedded on, [S, S, 3] (the world's background). */
void clip_blank_canvas(int S, float *img);

#endif
