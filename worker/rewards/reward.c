/*
 * reward.c: reward components and their weighted sums. See reward.h.
 */
#include "rewards/reward.h"

#include <string.h>

#include "experiment.h"

_Static_assert(REWARD_COMPONENTS == EXPERIMENT_REWARDS && REWARD_PREF == EXPERIMENT_REWARD_PREF &&
                   REWARD_CLIP == REWARD_PREF + 1 && REWARD_REMOTE == EXPERIMENT_REWARD_REMOTE,
               "one component per name of experiment_reward_names");

void reward_components(const AlignResult *res, float *comp)
{
    float sum[REWARD_COMPONENTS] = {0};
    int n[REWARD_COMPONENTS] = {0};
    for (int i = 0; i < res->num_requirements; i++)
        for (int k = REWARD_CLEAN; k < REWARD_PREF; k++)
            if (strcmp(res->req[i].kind, experiment_reward_names[k]) == 0) {
                sum[k] += res->req[i].score;
                n[k]++;
            }
    comp[REWARD_ALIGN] = res->score;
    comp[REWARD_CLEAN] = res->clean;
    for (int k = REWARD_OBJECT; k < REWARD_PREF; k++) comp[k] = n[k] ? sum[k] / n[k] : 1.0f;
    comp[REWARD_PREF] = comp[REWARD_CLIP] = comp[REWARD_REMOTE] = 0;
}

float reward_weighted(const ConfigWeights *w, const float *comp)
{
    double r = 0;
    for (int k = 0; k < REWARD_COMPONENTS; k++) r += w->w[k] * comp[k];
    return (float)r;
}
