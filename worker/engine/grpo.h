/*
 * grpo.h: the optimisation side of step-level GRPO and Chunk-GRPO (spec/algorithm.md sections 3
 * to 6): group-relative advantages, the split of a trajectory's trainable transitions into
 * consecutive chunks (given, uniform, or the optimal segmentation of a per-step curve), the
 * choice of the chunks to train (uniform or weighted, without replacement), the clipped chunk
 * objective with its exact derivative, and the model-level function that recomputes the policy's
 * log-probabilities for a set of chunks and back-propagates the clipped objective (plus an
 * optional KL term to a frozen reference) into the model's gradient buffer.
 *
 * Notation: a trajectory of N transitions has T = N - 1 trainable ones (sampler.h explains why
 * the last is not), index 0 = highest noise. A chunk is a run [start, start + size) of them. The
 * chunk's log-probability is the MEAN of its steps' log-probabilities, so the chunk ratio
 * r = exp(mean_new - mean_old) is the geometric mean of the step ratios; chunks of size 1 are
 * step-level GRPO exactly, one chunk of size T is a sequence-level (GSPO-like) ratio.
 *
 * The PyTorch definition these functions are tested against is tests/reference/grpo_ref.py
 * (fixtures by tests/reference/make_grpo_fixtures.py; tests in tests/unit/test_grpo.c).
 *
 * Memory: grpo_workspace_new plans every buffer of the model-level step; nothing in this file
 * allocates during training (chunking_optimal allocates its tables, but it plans, not trains).
 * The engine knows nothing of JSON or files. Every function may be called from any thread on
 * objects that thread owns; the model-level one uses OpenMP inside and gives bit-identical
 * results for any thread count.
 */
#ifndef CHUNKGRPO_GRPO_H
#define CHUNKGRPO_GRPO_H

#include <stddef.h>

#include "model.h"
#include "rng.h"
#include "sampler.h"

/* ------------------------------------------------------------------------------------------ */
/* Advantages                                                                                  */

#define GRPO_STD_EPS 1e-8 /* added to the group's std before dividing */

/*
 * Group-relative advantages: rewards [groups, group_size] (group-major: trajectory g * G + j is
 * member j of group g), for every group
 *   adv = (r - mean) / (std + 1e-8),  std the UNBIASED standard deviation (divisor G - 1),
 * clamped to [-adv_clip, adv_clip] (pass INFINITY for no clamp; adv_clip must not be negative
 * or NaN). Computed in double, written as float into adv [groups * group_size] (may alias
 * rewards). Rewards must be finite.
 * A group whose rewards are all equal carries no signal: its advantages are exactly 0. So are
 * those of a group of size 1 (its std is undefined), which counts as all-equal.
 * Returns the number of all-equal groups (for the metric "fraction of groups with equal
 * rewards"). groups >= 0, group_size >= 1.
 */
int grpo_advantages(const float *rewards, int groups, int group_size, float adv_clip, float *adv);

/* ------------------------------------------------------------------------------------------ */
/* Chunking                                                                                    */

#define GRPO_MAX_CHUNKS SAMPLER_MAX_STEPS /* enough for step level (every chunk of size 1) */

/* A split of the `trainable` transitions into `count` consecutive chunks: chunk j covers
 * transitions start[j] .. start[j] + size[j] - 1, start[0] = 0, chunks in order, no gaps. */
typedef struct {
    int count;
    int start[GRPO_MAX_CHUNKS];
    int size[GRPO_MAX_CHUNKS];
} Chunking;

/*
 * Builds a chunking from k explicit sizes (high noise first, e.g. the paper's {2, 3, 4, 7} for
 * 16 trainable transitions). Every size must be >= 1 and they must sum to trainable;
 * 1 <= k <= GRPO_MAX_CHUNKS. Returns 0, or -1 with a message that names the problem ("chunk 2
 * has size 0", "chunk sizes sum to 15, but there are 16 trainable steps") and *out unspecified.
 */
int chunking_from_sizes(const int *sizes, int k, int trainable, Chunking *out, char *err,
                        size_t errlen);

/*
 * k chunks as equal as possible: sizes trainable / k, and the trainable % k larger ones (one
 * more step each) go LAST, at low noise, where the paper puts its large chunks (16 / 3 ->
 * {5, 5, 6}). 1 <= k <= trainable. Returns 0, or -1 with a message.
 */
int chunking_uniform(int k, int trainable, Chunking *out, char *err, size_t errlen);

/*
 * The optimal segmentation of a per-step curve (e.g. the relative L1 distance of algorithm.md
 * section 5, curve [trainable]) into k consecutive chunks: the split that minimises the total
 * within-chunk sum of squared deviations from the chunk mean, found exactly by dynamic
 * programming (O(k trainable^2) time, O(k trainable) memory, the costs summed in double with a
 * stable running variance). Ties are broken deterministically: among splits of equal cost, the
 * one with the smaller sum of squared chunk sizes (the more even one), then the one whose later
 * chunks are larger; so a flat curve gives chunking_uniform's answer.
 * Example (the prototype's curve of algorithm.md section 5, 16 steps, checked in the test):
 *   0.75 0.77 | 0.54 | 0.45 0.41 | 0.38 0.36 0.35 x 9   with k = 4 gives {2, 1, 2, 11}
 * (cost 0.00185): the two steps near 0.76, then 0.54 alone, then 0.45-0.41, then the slow tail.
 * The paper's {2, 3, 4, 7}, set by eye, costs 0.0097 under this criterion: it puts 0.54 with
 * 0.45 and 0.41, and its last boundary cuts a flat run, which no variance criterion can see
 * (k = 2: {2, 14}; k = 3: {2, 2, 12}; k = 5: {2, 1, 1, 2, 10}).
 * 1 <= k <= trainable <= GRPO_MAX_CHUNKS, every value finite. Allocates its tables (freed before
 * it returns). Returns 0, or -1 with a message (bad argument or no memory).
 */
int chunking_optimal(const float *curve, int trainable, int k, Chunking *out, char *err,
                     size_t errlen);

/*
 * Weights for weighted chunk sampling (algorithm.md section 6): weight of chunk j = the mean of
 * curve over the chunk's steps + 1e-8, normalised to sum 1, into weights [ch->count].
 * curve [trainable] must be finite and >= 0 (a relative L1 distance).
 */
void chunk_weights_from_curve(const Chunking *ch, const float *curve, float *weights);

/*
 * Chooses n_train distinct chunks among chunks 0 .. count - 1 (all of a Chunking, or the first
 * few) to train for one trajectory, into chosen [n_train] (chunk indices, sorted ascending).
 * weights NULL: uniformly among all subsets of size n_train;
 * else weights [count] (>= 0, finite, any positive total; need not be normalised) drive
 * successive sampling without replacement: each pick takes chunk j with probability weight_j /
 * (sum of the weights still in play), the way torch.multinomial(replacement=False) does.
 * Chunks of weight 0 are picked only when the positive ones have run out.
 * Randomness: exactly ceil(n_train / 4) Philox blocks of rng (one uniform per pick), so the
 * choice is a pure function of the rng state and the caller can account for the counter.
 * 0 <= n_train <= count <= GRPO_MAX_CHUNKS. Returns 0, or -1 (nothing drawn) when n_train is out of
 * range or a weight is negative or not finite, or all are zero.
 */
int chunk_select(int count, int n_train, const float *weights, Rng *rng, int *chosen);

/* ------------------------------------------------------------------------------------------ */
/* The clipped chunk objective                                                                 */

/*
 * One chunk's clipped surrogate (PPO/GRPO) and its derivative:
 *   mean_new = mean(logp_new[0..size)), mean_old = mean(logp_old[0..size)),
 *   r = exp(mean_new - mean_old),
 *   loss = max(-A r, -A clamp(r, 1 - eps, 1 + eps)),
 * evaluated in double. Writes dlogp_new[k] = d loss / d logp_new[k] for every k < size, with
 * the autograd semantics of torch.maximum and torch.clamp exactly: the unclipped branch passes
 * -A r / size; the clipped branch passes it only when r is inside [1 - eps, 1 + eps] (bounds
 * inclusive) and 0 otherwise; on a tie of the two branches each gets half. So when the clipped
 * branch is strictly the larger (the clip binds: A > 0 and r > 1 + eps, or A < 0 and
 * r < 1 - eps) every step of the chunk gets 0, and *clipped is set to 1 (else 0).
 * *ratio receives r. size >= 1, eps >= 0. Returns the loss. clipped and ratio may be NULL.
 */
float grpo_chunk_loss(const float *logp_new, const float *logp_old, int size, float advantage,
                      float clip_eps, float *dlogp_new, int *clipped, float *ratio);

/* ------------------------------------------------------------------------------------------ */
/* The model-level training function                                                           */

/* One chunk to train: transitions [start, start + size) of trajectory traj, with its
 * trajectory's advantage. */
typedef struct {
    int traj, start, size;
    float advantage;
} GrpoItem;

/* The settings of the objective. sde, eta and the guidance must be those the trajectories were
 * sampled with. Guided, the policy's velocity is the classifier-free combination
 * v = v_u + w (v_c - v_u) of the conditional and the unconditional (all-PAD prompt) velocity of
 * the same model (as Flow-GRPO trains), so the gradient reaches the weights through both: w dv
 * through the conditional pass and (1 - w) dv through the unconditional one; the reference of
 * the KL term is guided the same way. Zero-initialised, a GrpoConfig is unguided. */
typedef struct {
    float clip_eps;  /* >= 0: ratio range [1 - eps, 1 + eps] (paper 5e-5, DanceGRPO 1e-4) */
    SdeKind sde;     /* SDE_FLOW, SDE_DANCE or SDE_CPS */
    float eta;       /* > 0 */
    float kl_coef;   /* >= 0; > 0 needs the reference model */
    int guidance;    /* 1: classifier-free guidance with cfg_scale; 0: conditional only */
    float cfg_scale; /* w, finite; read only when guidance is set */
} GrpoConfig;

/* Model rows one trained transition takes: 2 when guided (conditional and unconditional). */
static inline int grpo_rows_per_transition(const GrpoConfig *c)
{
    return c->guidance ? 2 : 1;
}

/* What one item came to (all before `scale`). kl is the mean over the chunk's steps of
 * mean((mu - mu_ref)^2) / (2 std^2), 0 without a reference. */
typedef struct {
    float ratio;    /* chunk ratio r */
    float loss;     /* clipped surrogate + kl_coef * kl */
    float kl;       /* see above */
    float logp_new; /* chunk mean of the recomputed log-probabilities */
    float logp_old; /* chunk mean of the recorded ones */
    int clipped;    /* 1 when the clip binds (no policy gradient for this chunk) */
} GrpoItemStats;

/*
 * The checks every backend's model-level step makes before anything runs: the settings (clip_eps,
 * sde, eta, kl_coef finite and in range, scale finite), the trajectory (at least 2 steps), every
 * item (trajectory, transitions inside the trainable ones, finite advantage, its prompt's token
 * ids inside the vocabulary of mc) and the rows they hold (at most batch, counting two rows per
 * transition when guided). Returns 0, or -1 with
 * a message naming the setting or the item.
 */
int grpo_items_validate(const ModelConfig *mc, const Trajectory *tr, const GrpoConfig *c,
                        const GrpoItem *items, int n_items, float scale, int batch, char *err,
                        size_t errlen);

typedef struct GrpoWorkspace GrpoWorkspace;

/*
 * Plans the buffers of grpo_items_backward for model config cfg and `batch` rows (the batch
 * size of the Activations it will be given; one row per transition trained in one call).
 * Returns the workspace (free with grpo_workspace_free), or NULL when batch < 1 or memory runs
 * out.
 */
GrpoWorkspace *grpo_workspace_new(const ModelConfig *cfg, int batch);
void grpo_workspace_free(GrpoWorkspace *ws);

/*
 * One training micro-step: recomputes the policy on every transition of the items and ADDS
 * d (scale * sum_i loss_i) / d theta into m->grads (the caller zeroes them, and steps AdamW
 * when it has accumulated what it wants, e.g. every G trajectories).
 *
 * For every transition k of every item (b = item.traj), one row of ONE batched forward of m at
 * (x_k of trajectory b from tr->x, sigma_k = tr->sigmas[k], the prompt tr->tokens[b]); then with
 * the step's constants (sde_step_coeffs on tr->sigmas with c->sde, c->eta)
 *   mu_k = cx x_k + cv v_k,  logp_new_k = sde_logp(x_{k+1} recorded, mu_k, std_k),
 * logp_old_k = tr->logp[k, b]; the item's loss is grpo_chunk_loss over its steps plus, when
 * c->kl_coef > 0, kl_coef * mean_k KL_k with KL_k = mean((mu_k - mu_ref_k)^2) / (2 std_k^2)
 * (mu_ref_k from a forward of ref on the same rows; no gradient flows into ref). The velocity
 * gradient of each row is
 *   dv = scale * cv / (std^2 numel) * (dloss/dlogp_k (x_{k+1} - mu) + kl_coef/size (mu - mu_ref))
 * and ONE model_backward(m, a, dv) adds the parameter gradient. The backward is skipped when
 * the gradient is exactly zero: the clip binds for every item and there is no KL term, or
 * scale == 0 (which is how to get the stats alone, e.g. ratios after an update).
 *
 * Transitions whose model input is the same (transition k, prompt and x_k all equal: the first
 * transition of the trajectories of a group sampled from shared noise) share one row of the
 * forward and of the backward, which then takes the sum of their velocity gradients (the same
 * result but for the order of float sums; the CPU backend does this, the CUDA one runs a row per
 * transition). The passes run only these rows (acts_set_batch; the batch is restored). Every item
 * counts once in the sum whatever its size: scale is where the caller puts 1 / (G x chunks
 * trained) of the objective.
 *
 * Arguments: ws planned for m's config with batch == acts_batch(a); a is overwritten (it holds
 * m's forward for the backward). ref: the frozen reference model (same config as m), or NULL
 * when kl_coef == 0 (it is then not run). ref_acts: activations for ref's forward (batch as a),
 * or NULL to run it on a before m's forward. tr: the recorded trajectories (tr->steps >= 2,
 * image size and text length of m); items [n_items] with 0 <= traj < tr->n, start >= 0,
 * size >= 1, start + size <= tr->steps - 1 (the trainable transitions), finite advantages, and
 * the sum of sizes <= the batch (half the batch when guided: each transition then takes a
 * conditional row and an unconditional one, run in the same forward and backward).
 * stats [n_items] receives each item's figures, or NULL. Everything but m->grads, a, ref_acts, ws
 * and stats is read only.
 *
 * Logp precision: recomputing with the parameters that sampled tr reproduces tr->logp to float
 * rounding (a model row's output may depend on the batch it runs in, at the 1e-7 level); on the
 * tiny model every recomputed ratio came out exactly 1.0f, whatever the sampler's batch size.
 * Returns 0, or -1 with a message naming the offending argument (and item) in err; m->grads is
 * untouched on error (everything is checked before anything runs).
 */
int grpo_items_backward(GrpoWorkspace *ws, Model *m, Activations *a, const Model *ref,
                        Activations *ref_acts, const Trajectory *tr, const GrpoConfig *c,
                        const GrpoItem *items, int n_items, float scale, GrpoItemStats *stats,
                        char *err, size_t errlen);

#endif
