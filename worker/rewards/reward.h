/*
 * reward.h: the rewards a grpo run trains on, as components of one align analysis, and their
 * weighted sums. The components, in the order of experiment_reward_names (common/experiment.h):
 *   align     the graded alignment score (align.h)
 *   clean     align's cleanliness factor alone
 *   object, size, position, relation, count
 *             the mean score of the prompt's requirements of that kind; 1 when it asks none
 *             (a kind the prompt does not ask for cannot be failed, and being the same for a
 *             whole group it adds nothing to that group's advantages)
 *   pref, clip the scores of the learned models (rewards/learned.h), filled in by the runner
 *   remote    the score of a user's reward server (rewards/remote.h), filled in by the runner
 * A config's weights (config.rewards, one entry of config.chunk_rewards) combine them as
 * sum_k w_k c_k, not normalised: advantages are normalised per group, so only the ratios of the
 * weights matter to training, while the logged total keeps the components' scale.
 */
#ifndef CHUNKGRPO_REWARD_H
#define CHUNKGRPO_REWARD_H

#include "config.h"
#include "rewards/align.h"

enum {
    REWARD_ALIGN,
    REWARD_CLEAN,
    REWARD_OBJECT,
    REWARD_SIZE,
    REWARD_POSITION,
    REWARD_RELATION,
    REWARD_COUNT_KIND,
    REWARD_PREF, /* not from the analysis: the runner asks the learned models (learned.h) */
    REWARD_CLIP,
    REWARD_REMOTE, /* nor this: the runner asks the reward server (remote.h) */
    REWARD_COMPONENTS
};

/* The components of one scored image into comp [REWARD_COMPONENTS]; pref, clip and remote are
 * left 0. */
void reward_components(const AlignResult *res, float *comp);

/* sum_k w->w[k] comp[k] over the components. */
float reward_weighted(const ConfigWeights *w, const float *comp);

#endif
