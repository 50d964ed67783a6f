/*
 * grpo_runner.c: the GRPO / Chunk-GRPO runner. See grpo_runner.h and spec/algorithm.md
 * sections 3 to 6.
 */
#include "runners/grpo_runner.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adamw.h"
#include "backend.h"
#include "checkpoint.h"
#include "dist.h"
#include "grpo.h"
#include "model.h"
#include "ops.h"
#include "png.h"
#include "rewards/align.h"
#include "rewards/learned.h"
#include "rewards/remote.h"
#include "rewards/reward.h"
#include "runners/eval.h"
#include "runners/runner_util.h"
#include "sampler.h"
#include "tokenizer.h"
#include "world/shapes.h"

/* Everything a run holds, allocated before the first iteration. */
typedef struct {
    const GrpoRunConfig *c;
    Model model, ref; /* ref: the frozen base model, for the KL term or hybrid evaluations */
    int has_ref;
    Policy *base_pol; /* hybrid evaluations: the base model on the backend */
    Vocab vocab;
    AdamW opt;
    Rng rng;
    Policy *pol;            /* the model on the configured backend */
    GrpoConfig objective;   /* the clipped objective's settings, from the config */
    float *ema;             /* [num_params] the average of the weights, or NULL */
    PolicySampler *rollout; /* the SDE rollouts of an iteration (and the profiles) */
    Trajectory *tr;
    AlignWorkspace **align_ws; /* one per thread */
    int threads;
    Chunking chunks;
    int n, trainable; /* n: this rank's trajectories */
    /* data parallel (dist.h): this rank samples and trains the iteration's groups g0 .. g0 +
     * groups - 1 of prompts_per_iter, n_all trajectories in all; one process has them all */
    int rank, ranks, g0, groups, n_all;
    float *all_rewards, *all_comp, *all_adv; /* rank 0 of several: every rank's, for metrics */
    int pool, n_train; /* each trajectory trains n_train of chunks 0 .. pool - 1 */
    PromptList prompt_list;
    const char *const *prompts; /* prompt_list's */
    int num_prompts;
    int *prompt_index;    /* [P] */
    int32_t *tokens;      /* [n, T] */
    float *comp;          /* [n, REWARD_COMPONENTS] every reward component of every image */
    float *rewards, *adv; /* [n] config.rewards' total and its advantages */
    float *chunk_reward, *chunk_adv; /* [chunk_rewards.count, n] with per-chunk rewards */
    float *curve;                    /* [n, trainable] relative L1 per step */
    float *profile_mean;             /* [trainable] the mean curve of the last profile */
    float *weights;                  /* [n, chunks] */
    int *chosen;                     /* [n, n_train] */
    GrpoItem *items;                 /* [G * n_train] */
    int *item_chunk;                 /* [G * n_train] the chunk index of each item */
    GrpoItemStats *stats;            /* [n * n_train] */
    float *ratio_of;          /* [n, chunks]: the ratio of each trained chunk, NAN if untrained */
    EvalScorers scorers;      /* config.pref_model, clip_model, remote_url: rollouts, evaluations */
    float *remote_score;      /* [n] the server's answers, NAN for a failed item */
    float *learned_score;     /* [n] a learned model's */
    const char **item_prompt; /* [n] each rollout's prompt, for the scorers beside align */
} Run;

static void run_free(Run *r)
{
    policy_sampler_free(r->rollout);
    policy_free(r->pol);
    policy_free(r->base_pol);
    trajectory_free(r->tr);
    if (r->align_ws)
        for (int i = 0; i < r->threads; i++) align_workspace_free(r->align_ws[i]);
    free(r->align_ws);
    free(r->prompt_index), free(r->tokens), free(r->rewards), free(r->adv), free(r->curve);
    free(r->comp), free(r->chunk_reward), free(r->chunk_adv);
    free(r->profile_mean);
    free(r->weights), free(r->chosen), free(r->items), free(r->item_chunk), free(r->stats);
    free(r->ratio_of);
    eval_scorers_close(&r->scorers);
    free(r->remote_score), free(r->learned_score), free(r->item_prompt);
    free(r->all_rewards), free(r->all_comp), free(r->all_adv);
    adamw_free(&r->opt);
    vocab_free(&r->vocab);
    prompt_list_free(&r->prompt_list);
    free(r->ema);
    if (r->has_ref) model_free(&r->ref);
    model_free(&r->model);
}

/* Sampler noise for profiling and rollouts come from the run's RNG; the profile of `auto` and
 * `dynamic` samples the current policy on the first prompts with its own stream, so that it
 * does not depend on when it runs. Sets r->chunks from the mean curve of r->n_all trajectories
 * (each rank samples its rows of them). */
static int profile_chunks(Run *r, int iteration, char *err, size_t errlen)
{
    const ModelConfig *mc = &r->model.cfg;
    int T = mc->text_len, first = r->g0 * r->c->group_size;
    for (int i = 0; i < r->n; i++)
        tokenize(&r->vocab, r->prompts[(first + i) % r->num_prompts], T, r->tokens + i * T);
    Rng prof;
    rng_seed(&prof, (uint64_t)r->c->seed * 7919 + (uint64_t)iteration);
    if (policy_sample(r->rollout, r->tokens, &prof, r->tr, 1, err, errlen)) return -1;
    float *mean = r->profile_mean;
    memset(mean, 0, (size_t)r->trainable * sizeof *mean);
    for (int b = 0; b < r->n; b++) {
        trajectory_l1rel(r->tr, b, r->trainable, r->curve + (size_t)b * r->trainable);
        for (int i = 0; i < r->trainable; i++) mean[i] += r->curve[b * r->trainable + i] / r->n_all;
    }
    if (dist_reduce_floats(mean, (size_t)r->trainable, DIST_SUM)) {
        snprintf(err, errlen, "MPI: summing the ranks' profiles failed");
        return -1;
    }
    return chunking_optimal(mean, r->trainable, r->c->chunk_count, &r->chunks, err, errlen);
}

/* Parses cfg->chunks (or the method) into r->chunks; auto and dynamic profile the model. */
static int setup_chunks(Run *r, int iteration, char *err, size_t errlen)
{
    const GrpoRunConfig *c = r->c;
    if (strcmp(c->method, "grpo") == 0) {
        int sizes[SAMPLER_MAX_STEPS];
        for (int i = 0; i < r->trainable; i++) sizes[i] = 1;
        return chunking_from_sizes(sizes, r->trainable, r->trainable, &r->chunks, err, errlen);
    }
    ChunkSpec spec;
    if (chunk_spec_parse(c->chunks, r->trainable, &spec, err, errlen)) return -1;
    switch (spec.kind) {
    case CHUNK_SPEC_AUTO:
    case CHUNK_SPEC_DYNAMIC: return profile_chunks(r, iteration, err, errlen);
    case CHUNK_SPEC_UNIFORM:
        return chunking_uniform(spec.count, r->trainable, &r->chunks, err, errlen);
    case CHUNK_SPEC_SIZES:
        return chunking_from_sizes(spec.size, spec.count, r->trainable, &r->chunks, err, errlen);
    }
    return -1;
}

/* The first of rank k's groups among an iteration's P, of W ranks (k = W: P), so that the ranks'
 * shares differ by one group at most. */
static int rank_first_group(int k, int P, int W)
{
    return (int)((int64_t)k * P / W);
}

/* This rank's share of an iteration's groups: a contiguous run, so that its trajectories' noise
 * is a contiguous run of the whole iteration's (SamplerConfig.noise_first). Several ranks sum
 * their gradients on the host before one AdamW step per iteration. */
static int ranks_setup(Run *r, char *err, size_t errlen)
{
    const GrpoRunConfig *c = r->c;
    int P = c->prompts_per_iter, W = dist_size();
    r->rank = dist_rank(), r->ranks = W;
    r->g0 = rank_first_group(r->rank, P, W);
    r->groups = rank_first_group(r->rank + 1, P, W) - r->g0;
    r->n = r->groups * c->group_size;
    r->n_all = P * c->group_size;
    if (W == 1) return 0;
    if (W > DIST_MAX_RANKS)
        snprintf(err, errlen, "MPI: %d ranks, at most %d", W, DIST_MAX_RANKS);
    else if (P < W)
        snprintf(err, errlen,
                 "config.prompts_per_iter: %d prompts for %d ranks (each needs a group)", P, W);
    else if (strcmp(c->optimizer_step, "iteration") != 0)
        snprintf(err, errlen,
                 "config.optimizer_step: \"%s\" with %d ranks; data parallel runs take one step "
                 "per iteration over every rank's groups",
                 c->optimizer_step, W);
    else if (strcmp(c->backend, "cpu") != 0)
        snprintf(err, errlen,
                 "config.backend: \"%s\" with %d ranks; data parallel runs use the cpu "
                 "backend (summing gradients on the GPU with NCCL is not built yet)",
                 c->backend, W);
    else
        return 0;
    return -1;
}

/* Opens the scorers beside align that the config names (the learned models, the reward server's
 * client) and the buffers scoring with them needs. */
static int scorers_setup(Run *r, char *err, size_t errlen)
{
    const GrpoRunConfig *c = r->c;
    if (eval_scorers_open(&r->scorers, c->learned_model, &c->remote, c->batch, err, errlen))
        return -1;
    r->remote_score = malloc((size_t)r->n * sizeof(float));
    r->learned_score = malloc((size_t)r->n * sizeof(float));
    r->item_prompt = malloc((size_t)r->n * sizeof(char *));
    if (!r->remote_score || !r->learned_score || !r->item_prompt) {
        snprintf(err, errlen, "out of memory for the rewards' scores");
        return -1;
    }
    return 0;
}

static int run_setup(Run *r, const GrpoRunConfig *c, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    r->c = c;
    if (checkpoint_load(c->model, &r->model, &r->vocab, NULL, err, errlen)) return -1;
    const ModelConfig *mc = &r->model.cfg;
    int hybrid = strcmp(c->eval_mode, "hybrid") == 0;
    if (c->kl_coef > 0 || hybrid) {
        Vocab v2;
        if (checkpoint_load(c->model, &r->ref, &v2, NULL, err, errlen)) return -1;
        vocab_free(&v2);
        r->has_ref = 1;
    }
    if (prompt_list_load(c->prompts, "prompts", &r->prompt_list, err, errlen)) return -1;
    r->prompts = r->prompt_list.items;
    r->num_prompts = r->prompt_list.count;
    int G = c->group_size;
    if (ranks_setup(r, err, errlen)) return -1;
    r->trainable = c->steps - 1;
    AdamWConfig oc = {.lr = (float)c->lr,
                      .beta1 = (float)c->beta1,
                      .beta2 = (float)c->beta2,
                      .eps = (float)c->eps,
                      .weight_decay = (float)c->weight_decay,
                      .grad_clip = (float)c->grad_clip};
    rng_seed(&r->rng, (uint64_t)c->seed);
    r->objective = (GrpoConfig){.clip_eps = (float)c->clip_eps,
                                .sde = sde_kind_named(c->sde),
                                .eta = (float)c->eta,
                                .kl_coef = (float)c->kl_coef,
                                .guidance = c->cfg_scale != 1.0,
                                .cfg_scale = (float)c->cfg_scale};
    SamplerConfig sc; /* the rollouts sample the policy the objective trains */
    sampler_settings(&sc, SAMPLER_SDE, c->steps, c->shift, c->eta, c->sde);
    sc.noise_group = c->same_noise ? G : 0;
    if (r->ranks > 1) sc.noise_first = r->g0 * G, sc.noise_total = r->n_all;
    sc.guidance = r->objective.guidance;
    sc.cfg_scale = r->objective.cfg_scale;
    int batch = c->batch < r->n ? c->batch : r->n;
    /* the largest chunk must fit one call, its unconditional rows too when guided */
    int floor_rows = r->trainable * grpo_rows_per_transition(&r->objective);
    if (batch < floor_rows) batch = floor_rows;
    if (!(r->pol = policy_for_config(c->backend, c->precision, &r->model,
                                     c->kl_coef > 0 ? &r->ref : NULL, batch, err, errlen)) ||
        (hybrid && !(r->base_pol = policy_for_config(c->backend, c->precision, &r->ref, NULL, batch,
                                                     err, errlen))) ||
        !(r->rollout = policy_sampler_new(r->pol, &sc, r->n, err, errlen)))
        return -1;
    r->threads = omp_get_max_threads();
    int T = mc->text_len, K = r->trainable; /* at most `trainable` chunks */
    r->tr = trajectory_new(mc, r->n, c->steps);
    r->align_ws = calloc((size_t)r->threads, sizeof *r->align_ws);
    r->prompt_index = malloc((size_t)r->groups * sizeof(int));
    r->tokens = malloc((size_t)r->n * T * sizeof(int32_t));
    r->rewards = malloc((size_t)r->n * sizeof(float));
    r->adv = malloc((size_t)r->n * sizeof(float));
    r->comp = malloc((size_t)r->n * REWARD_COMPONENTS * sizeof(float));
    int per_chunk = c->chunk_rewards.count; /* 0: no per-chunk buffers */
    if (per_chunk) {
        r->chunk_reward = malloc((size_t)r->n * per_chunk * sizeof(float));
        r->chunk_adv = malloc((size_t)r->n * per_chunk * sizeof(float));
    }
    r->curve = malloc((size_t)r->n * K * sizeof(float));
    r->profile_mean = malloc((size_t)K * sizeof(float));
    r->weights = malloc((size_t)r->n * K * sizeof(float));
    r->chosen = malloc((size_t)r->n * K * sizeof(int));
    r->items = malloc((size_t)G * K * sizeof(GrpoItem));
    r->item_chunk = malloc((size_t)G * K * sizeof(int));
    r->stats = malloc((size_t)r->n * K * sizeof(GrpoItemStats));
    r->ratio_of = malloc((size_t)r->n * K * sizeof(float));
    if (c->ema_decay > 0 && (r->ema = malloc(r->model.num_params * sizeof(float))))
        memcpy(r->ema, r->model.params, r->model.num_params * sizeof(float));
    if (adamw_init(&r->opt, &oc, r->model.num_params) || !r->tr || (c->ema_decay > 0 && !r->ema) ||
        !r->align_ws || !r->prompt_index || !r->tokens || !r->rewards || !r->adv || !r->comp ||
        (per_chunk && (!r->chunk_reward || !r->chunk_adv)) || !r->curve || !r->profile_mean ||
        !r->weights || !r->chosen || !r->items || !r->stats || !r->ratio_of)
        goto oom;
    for (int i = 0; i < r->threads; i++)
        if (!(r->align_ws[i] = align_workspace_new(mc->image_size))) goto oom;
    if (r->ranks > 1 && r->rank == 0) {
        size_t sources = per_chunk ? (size_t)per_chunk : 1;
        if (!(r->all_rewards = malloc((size_t)r->n_all * sizeof(float))) ||
            !(r->all_comp = malloc((size_t)r->n_all * REWARD_COMPONENTS * sizeof(float))) ||
            !(r->all_adv = malloc((size_t)r->n_all * sources * sizeof(float))))
            goto oom;
    }
    return scorers_setup(r, err, errlen);
oom:
    snprintf(err, errlen, "out of memory for %d trajectories of %d steps", r->n, c->steps);
    return -1;
}

/* What one iteration measured. */
typedef struct {
    double t_sample, t_reward, t_opt;
    double t_remote; /* of t_reward, the reward server's part */
    int remote_errors, remote_retries;
    double reward_mean, reward_std, reward_min, reward_max;
    double comp_mean[REWARD_COMPONENTS], comp_std[REWARD_COMPONENTS];
    double adv_mean, adv_std, adv_abs_max;
    double tied_fraction; /* of the groups, averaged over the rewards advantages came from */
    int items, clipped;
    double loss_sum, ratio_sum, ratio_min, ratio_max, k3_sum, kl_sum;
    double grad_norm_sum;
    int opt_steps;
    double chunk_ratio_sum[GRPO_MAX_CHUNKS], chunk_ratio_min[GRPO_MAX_CHUNKS],
        chunk_ratio_max[GRPO_MAX_CHUNKS];
    int chunk_items[GRPO_MAX_CHUNKS];
    int epoch_items[EXPERIMENT_MAX_EPOCHS], epoch_clipped[EXPERIMENT_MAX_EPOCHS];
} IterStats;

/* What an evaluation reports into the metrics: the held-out ODE pass's mean, best-of-seeds mean
 * and mean per caption template, and the same means for the training prompts (NAN when not
 * scored, or a template absent from the prompts). */
typedef struct {
    double align, best_of_seeds, train_align;
    double remote, train_remote; /* the reward server's means, NAN without one */
    /* the learned models' means, NAN without one */
    double learned[EXPERIMENT_LEARNED], train_learned[EXPERIMENT_LEARNED];
    double by_template[TEMPLATE_KINDS], train_by_template[TEMPLATE_KINDS];
} EvalScores;

/* The advantage of trajectory b's chunk ch: from the chunk's own reward when the config gives
 * per-chunk rewards, else from config.rewards. */
static float advantage_of(const Run *r, int b, int ch)
{
    return r->c->chunk_rewards.count ? r->chunk_adv[(size_t)ch * r->n + b] : r->adv[b];
}

/* Mean and population std of x [n] into *mean, *std (in double). */
static void mean_std(const float *x, size_t n, size_t stride, double *mean, double *std)
{
    double sum = 0, sq = 0;
    for (size_t i = 0; i < n; i++)
        sum += x[i * stride], sq += (double)x[i * stride] * x[i * stride];
    *mean = sum / n;
    *std = sqrt(fmax(0, sq / n - *mean * *mean));
}

static void add_item_stats(IterStats *st, int chunk, const GrpoItemStats *s)
{
    double r = s->ratio;
    st->items++;
    st->clipped += s->clipped;
    st->loss_sum += s->loss;
    st->ratio_sum += r;
    st->ratio_min = fmin(st->ratio_min, r);
    st->ratio_max = fmax(st->ratio_max, r);
    st->k3_sum += (r - 1.0) - log(r); /* approximate KL(old || new), never negative */
    st->kl_sum += s->kl;
    st->chunk_ratio_sum[chunk] += r;
    st->chunk_ratio_min[chunk] = st->chunk_items[chunk] ? fmin(st->chunk_ratio_min[chunk], r) : r;
    st->chunk_ratio_max[chunk] = st->chunk_items[chunk] ? fmax(st->chunk_ratio_max[chunk], r) : r;
    st->chunk_items[chunk]++;
}

/* 1 when chunk ch is among those chosen to train for trajectory b. */
static int chunk_chosen(const Run *r, int b, int ch)
{
    for (int k = 0; k < r->n_train; k++)
        if (r->chosen[b * r->trainable + k] == ch) return 1;
    return 0;
}

/* Trains the chosen chunks of group g's trajectories and takes one AdamW step. Items are packed
 * into model calls of at most `batch` rows, chunk by chunk, so that the first chunks of the
 * group's trajectories share a call: from shared noise their first transitions are one model
 * input, which the step computes once. Items with advantage 0 carry no policy gradient and are
 * skipped unless the KL term needs them. */
static int train_group(Run *r, int g, IterStats *st, char *err, size_t errlen)
{
    const GrpoRunConfig *c = r->c;
    int G = c->group_size, batch = policy_batch(r->pol), n_items = 0;
    for (int ch = 0; ch < r->chunks.count; ch++) {
        for (int j = 0; j < G; j++) {
            int b = g * G + j;
            if (!chunk_chosen(r, b, ch)) continue;
            r->ratio_of[b * r->trainable + ch] = NAN;
            float adv = advantage_of(r, b, ch);
            if (adv == 0.0f && c->kl_coef == 0) continue;
            r->items[n_items] = (GrpoItem){.traj = b,
                                           .start = r->chunks.start[ch],
                                           .size = r->chunks.size[ch],
                                           .advantage = adv};
            r->item_chunk[n_items] = ch;
            n_items++;
        }
    }
    batch /= grpo_rows_per_transition(&r->objective); /* transitions per call */
    /* every trained chunk counts equally: the objective's 1 / (trajectories x chunks trained),
     * over the trajectories one optimizer step accumulates */
    int per_iteration = strcmp(c->optimizer_step, "iteration") == 0;
    float scale = 1.0f / (float)((per_iteration ? c->prompts_per_iter : 1) * G * r->n_train);
    if (!per_iteration || g == 0) policy_zero_grad(r->pol);
    for (int first = 0; first < n_items;) {
        int last = first, rows = 0;
        while (last < n_items && rows + r->items[last].size <= batch) rows += r->items[last++].size;
        if (policy_items_backward(r->pol, r->rollout, r->tr, &r->objective, r->items + first,
                                  last - first, scale, r->stats + first, err, errlen))
            return -1;
        first = last;
    }
    for (int i = 0; i < n_items; i++) {
        int ch = r->item_chunk[i];
        add_item_stats(st, ch, &r->stats[i]);
        r->ratio_of[r->items[i].traj * r->trainable + ch] = r->stats[i].ratio;
    }
    if (!per_iteration || g == r->groups - 1) {
        if (dist_reduce_floats(r->model.grads, r->model.num_params, DIST_SUM)) {
            snprintf(err, errlen, "MPI: summing the ranks' gradients failed");
            return -1;
        }
        st->grad_norm_sum += policy_adamw_step(r->pol, &r->opt);
        st->opt_steps++;
        if (r->ema) {
            float d = (float)c->ema_decay, *p = r->model.params;
            policy_pull(r->pol, NULL); /* the average follows the host copy */
            for (size_t k = 0; k < r->model.num_params; k++)
                r->ema[k] = d * r->ema[k] + (1 - d) * p[k];
        }
    }
    return 0;
}

/* The remote component of every rollout of iteration it (1-based), from the reward server. An
 * image the server failed on takes the mean of its group's other scores, so that it moves no
 * advantage; when more than half of the iteration's images fail, the run stops. */
static int remote_component(Run *r, int it, IterStats *st, char *err, size_t errlen)
{
    const ModelConfig *mc = &r->model.cfg;
    int n = r->n, G = r->c->group_size;
    char tag[16], what[32];
    snprintf(tag, sizeof tag, "%d", it);
    snprintf(what, sizeof what, "iteration %d", it);
    RemoteScoreStats rs;
    if (remote_reward_score(r->scorers.remote, tag, what, n, r->item_prompt, r->tr->x0_hat,
                            mc->image_size, mc->channels, r->remote_score, &rs, err, errlen))
        return -1;
    st->remote_errors = rs.item_errors, st->remote_retries = rs.retries;
    for (int g = 0; g < n / G; g++) {
        double sum = 0;
        int valid = 0;
        for (int b = g * G; b < (g + 1) * G; b++)
            if (!isnan(r->remote_score[b])) sum += r->remote_score[b], valid++;
        for (int b = g * G; b < (g + 1) * G; b++)
            r->comp[(size_t)b * REWARD_COMPONENTS + REWARD_REMOTE] =
                isnan(r->remote_score[b]) ? (valid ? (float)(sum / valid) : 0.0f)
                                          : r->remote_score[b];
    }
    return 0;
}

/* The reward and advantage figures of the iteration into st: over this process's trajectories,
 * or on rank 0 over every rank's, gathered. adv [sources, n] are the advantages training uses;
 * tied counts this rank's groups whose rewards are all equal. */
static int reward_stats(Run *r, IterStats *st, const float *adv, int sources, int tied, char *err,
                        size_t errlen)
{
    int n = r->n_all;
    const float *rewards = r->rewards, *comp = r->comp;
    double tied_all = tied;
    if (r->ranks > 1) {
        int counts[DIST_MAX_RANKS], displs[DIST_MAX_RANKS], G = r->c->group_size;
        for (int k = 0; k < r->ranks; k++) {
            int g0 = rank_first_group(k, r->c->prompts_per_iter, r->ranks);
            int g1 = rank_first_group(k + 1, r->c->prompts_per_iter, r->ranks);
            counts[k] = (g1 - g0) * G, displs[k] = g0 * G;
        }
        int rc = dist_gather_floats(r->rewards, r->all_rewards, counts, displs) ||
                 dist_reduce_doubles(&tied_all, 1, DIST_SUM);
        for (int s = 0; !rc && s < sources; s++)
            rc = dist_gather_floats(adv + (size_t)s * r->n, r->all_adv + (size_t)s * n, counts,
                                    displs);
        for (int k = 0; k < r->ranks; k++)
            counts[k] *= REWARD_COMPONENTS, displs[k] *= REWARD_COMPONENTS;
        if (rc || dist_gather_floats(r->comp, r->all_comp, counts, displs)) {
            snprintf(err, errlen, "MPI: gathering the ranks' rewards failed");
            return -1;
        }
        if (r->rank != 0) return 0; /* rank 0 reports */
        rewards = r->all_rewards, comp = r->all_comp, adv = r->all_adv;
    }
    mean_std(rewards, n, 1, &st->reward_mean, &st->reward_std);
    st->reward_min = INFINITY, st->reward_max = -INFINITY;
    for (int b = 0; b < n; b++) {
        st->reward_min = fmin(st->reward_min, rewards[b]);
        st->reward_max = fmax(st->reward_max, rewards[b]);
    }
    for (int k = 0; k < REWARD_COMPONENTS; k++)
        mean_std(comp + k, n, REWARD_COMPONENTS, &st->comp_mean[k], &st->comp_std[k]);
    st->tied_fraction = tied_all / ((double)r->c->prompts_per_iter * sources);
    mean_std(adv, (size_t)n * sources, 1, &st->adv_mean, &st->adv_std);
    for (int i = 0; i < n * sources; i++) st->adv_abs_max = fmax(st->adv_abs_max, fabsf(adv[i]));
    return 0;
}

/* The training figures of every rank into st (sums, minima, maxima; the slowest rank's times). */
static int training_stats(Run *r, IterStats *st, char *err, size_t errlen)
{
    if (r->ranks == 1) return 0;
    enum { K = GRPO_MAX_CHUNKS, E = EXPERIMENT_MAX_EPOCHS };
    double sum[8 + 2 * K + 2 * E], lo[1 + K], hi[4 + K];
    double *s = sum;
    *s++ = st->items, *s++ = st->clipped, *s++ = st->loss_sum, *s++ = st->ratio_sum;
    *s++ = st->k3_sum, *s++ = st->kl_sum, *s++ = st->remote_errors, *s++ = st->remote_retries;
    for (int j = 0; j < K; j++) *s++ = st->chunk_ratio_sum[j], *s++ = st->chunk_items[j];
    for (int e = 0; e < E; e++) *s++ = st->epoch_items[e], *s++ = st->epoch_clipped[e];
    lo[0] = st->ratio_min, hi[0] = st->ratio_max;
    hi[1] = st->t_sample, hi[2] = st->t_reward, hi[3] = st->t_opt;
    for (int j = 0; j < K; j++) { /* a chunk this rank did not train has no extremes */
        lo[1 + j] = st->chunk_items[j] ? st->chunk_ratio_min[j] : INFINITY;
        hi[4 + j] = st->chunk_items[j] ? st->chunk_ratio_max[j] : -INFINITY;
    }
    if (dist_reduce_doubles(sum, sizeof sum / sizeof *sum, DIST_SUM) ||
        dist_reduce_doubles(lo, sizeof lo / sizeof *lo, DIST_MIN) ||
        dist_reduce_doubles(hi, sizeof hi / sizeof *hi, DIST_MAX)) {
        snprintf(err, errlen, "MPI: reducing the ranks' training figures failed");
        return -1;
    }
    s = sum;
    st->items = (int)*s++, st->clipped = (int)*s++, st->loss_sum = *s++, st->ratio_sum = *s++;
    st->k3_sum = *s++, st->kl_sum = *s++, st->remote_errors = (int)*s++;
    st->remote_retries = (int)*s++;
    for (int j = 0; j < K; j++) st->chunk_ratio_sum[j] = *s++, st->chunk_items[j] = (int)*s++;
    for (int e = 0; e < E; e++) st->epoch_items[e] = (int)*s++, st->epoch_clipped[e] = (int)*s++;
    st->ratio_min = lo[0], st->ratio_max = hi[0];
    st->t_sample = hi[1], st->t_reward = hi[2], st->t_opt = hi[3];
    for (int j = 0; j < K; j++)
        st->chunk_ratio_min[j] = lo[1 + j], st->chunk_ratio_max[j] = hi[4 + j];
    return 0;
}

/* Iteration it (1-based): rollouts, rewards, advantages, updates. */
static int iteration(Run *r, int it, IterStats *st, char *err, size_t errlen)
{
    const GrpoRunConfig *c = r->c;
    const ModelConfig *mc = &r->model.cfg;
    int P = r->groups, G = c->group_size, T = mc->text_len, n = r->n;
    memset(st, 0, sizeof *st);
    st->ratio_min = INFINITY, st->ratio_max = -INFINITY;

    double t0 = omp_get_wtime();
    float u[4096]; /* every rank draws every prompt, and keeps its own groups' */
    rng_uniform(&r->rng, u, (size_t)c->prompts_per_iter);
    for (int p = 0; p < P; p++) {
        r->prompt_index[p] = (int)(u[r->g0 + p] * r->num_prompts) % r->num_prompts;
        for (int j = 0; j < G; j++)
            tokenize(&r->vocab, r->prompts[r->prompt_index[p]], T, r->tokens + (p * G + j) * T);
    }
    /* the whole trajectory is needed on the host only for weighted sampling's dynamics */
    if (policy_sample(r->rollout, r->tokens, &r->rng, r->tr, c->weighted_sampling, err, errlen))
        return -1;
    double t1 = omp_get_wtime();

    int failed = 0;
#pragma omp parallel for schedule(dynamic, 2)
    for (int b = 0; b < n; b++) {
        AlignResult res;
        char e[256];
        if (align_score(r->align_ws[omp_get_thread_num()], r->prompts[r->prompt_index[b / G]],
                        r->tr->x0_hat + (size_t)b * r->tr->img, mc->image_size, &res, e,
                        sizeof e)) {
#pragma omp atomic write
            failed = 1;
        } else {
            reward_components(&res, r->comp + (size_t)b * REWARD_COMPONENTS);
        }
    }
    if (failed) {
        snprintf(err, errlen, "the align reward failed on a rollout image");
        return -1;
    }
    for (int b = 0; b < n; b++) /* for the scorers beside align */
        r->item_prompt[b] = r->prompts[r->prompt_index[b / G]];
    for (int k = 0; k < EXPERIMENT_LEARNED; k++) {
        if (!r->scorers.learned[k]) continue;
        if (learned_score_images(r->scorers.learned[k], r->item_prompt, r->tr->x0_hat, n,
                                 mc->image_size, r->learned_score, err, errlen))
            return -1;
        for (int b = 0; b < n; b++)
            r->comp[(size_t)b * REWARD_COMPONENTS + REWARD_PREF + k] = r->learned_score[b];
    }
    if (r->scorers.remote) {
        double t = omp_get_wtime();
        if (remote_component(r, it, st, err, errlen)) return -1;
        st->t_remote = omp_get_wtime() - t;
    }
    for (int b = 0; b < n; b++) {
        const float *comp = r->comp + (size_t)b * REWARD_COMPONENTS;
        r->rewards[b] = reward_weighted(&c->rewards, comp);
        for (int k = 0; k < c->chunk_rewards.count; k++)
            r->chunk_reward[(size_t)k * n + b] = reward_weighted(&c->chunk_rewards.item[k], comp);
    }
    double t2 = omp_get_wtime();

    /* the advantages training uses: config.rewards' (also the group view's, in either case), or
     * every chunk's from its own reward */
    int tied = grpo_advantages(r->rewards, P, G, (float)c->adv_clip, r->adv), sources = 1;
    const float *adv = r->adv;
    if (c->chunk_rewards.count) {
        tied = 0, sources = c->chunk_rewards.count, adv = r->chunk_adv;
        for (int k = 0; k < sources; k++)
            tied += grpo_advantages(r->chunk_reward + (size_t)k * n, P, G, (float)c->adv_clip,
                                    r->chunk_adv + (size_t)k * n);
    }
    if (reward_stats(r, st, adv, sources, tied, err, errlen)) return -1;

    if (c->weighted_sampling)
        for (int b = 0; b < n; b++) {
            float *curve = r->curve + (size_t)b * r->trainable;
            trajectory_l1rel(r->tr, b, r->trainable, curve);
            chunk_weights_from_curve(&r->chunks, curve, r->weights + (size_t)b * r->trainable);
        }
    for (int epoch = 0; epoch < c->epochs; epoch++) {
        /* chunks to train, per trajectory and pass, among the first r->pool: uniform, or
         * weighted by the trajectory's own dynamics */
        uint64_t base = r->rng.counter, blocks = ((uint64_t)r->n_train + 3) / 4;
        r->rng.counter = base + (uint64_t)r->g0 * G * blocks; /* this rank's draws of the pass */
        for (int b = 0; b < n; b++) {
            const float *w = c->weighted_sampling ? r->weights + (size_t)b * r->trainable : NULL;
            if (chunk_select(r->pool, r->n_train, w, &r->rng,
                             r->chosen + (size_t)b * r->trainable)) {
                snprintf(err, errlen, "chunk selection failed for trajectory %d", b);
                return -1;
            }
        }
        r->rng.counter = base + (uint64_t)r->n_all * blocks;
        int items_before = st->items, clipped_before = st->clipped;
        for (int g = 0; g < P; g++)
            if (train_group(r, g, st, err, errlen)) return -1;
        st->epoch_items[epoch] = st->items - items_before;
        st->epoch_clipped[epoch] = st->clipped - clipped_before;
    }
    double t3 = omp_get_wtime();
    st->t_sample = t1 - t0, st->t_reward = t2 - t1, st->t_opt = t3 - t2;
    return training_stats(r, st, err, errlen);
}

static json_t *chunk_sizes_json(const Chunking *ch)
{
    json_t *a = json_array();
    for (int i = 0; i < ch->count; i++) json_array_append_new(a, json_integer(ch->size[i]));
    return a;
}

/* {"pair": mean, ...} of the templates scored, or NULL when none was */
static json_t *template_means_json(const double *mean)
{
    json_t *o = NULL;
    for (int k = 0; k < TEMPLATE_KINDS; k++) {
        if (isnan(mean[k])) continue;
        if (!o) o = json_object();
        json_object_set_new(o, world_template_names[k], json_real(mean[k]));
    }
    return o;
}

static void set_eval_scores(json_t *o, const EvalScores *e)
{
    json_object_set_new(o, "eval_align", json_real(e->align));
    json_object_set_new(o, "eval_best_of_seeds", json_real(e->best_of_seeds));
    if (!isnan(e->train_align))
        json_object_set_new(o, "eval_train_align", json_real(e->train_align));
    for (int k = 0; k < EXPERIMENT_LEARNED; k++) {
        char key[64];
        snprintf(key, sizeof key, "eval_%s", experiment_learned_names[k]);
        if (!isnan(e->learned[k])) json_object_set_new(o, key, json_real(e->learned[k]));
        snprintf(key, sizeof key, "eval_train_%s", experiment_learned_names[k]);
        if (!isnan(e->train_learned[k]))
            json_object_set_new(o, key, json_real(e->train_learned[k]));
    }
    if (!isnan(e->remote)) json_object_set_new(o, "eval_remote", json_real(e->remote));
    if (!isnan(e->train_remote))
        json_object_set_new(o, "eval_train_remote", json_real(e->train_remote));
    json_t *t = template_means_json(e->by_template);
    if (t) json_object_set_new(o, "eval_template", t);
    if ((t = template_means_json(e->train_by_template)))
        json_object_set_new(o, "eval_train_template", t);
}

/* Whether reward component k has a scorer in this run (pref, clip and remote need the
 * config's). */
static int component_scored(const Run *r, int k)
{
    if (k == REWARD_PREF || k == REWARD_CLIP) return r->scorers.learned[k - REWARD_PREF] != NULL;
    return k == REWARD_REMOTE ? r->scorers.remote != NULL : 1;
}

static void write_metrics(FILE *f, const Run *r, int iter, const IterStats *st,
                          const EvalScores *eval)
{
    const GrpoRunConfig *c = r->c;
    json_t *o = json_object();
    int items = st->items ? st->items : 1;
    json_object_set_new(o, "iteration", json_integer(iter));
    json_object_set_new(o, "reward_mean", json_real(st->reward_mean));
    json_object_set_new(o, "reward_std", json_real(st->reward_std));
    json_object_set_new(o, "reward_min", json_real(st->reward_min));
    json_object_set_new(o, "reward_max", json_real(st->reward_max));
    for (int k = 0; k < REWARD_COMPONENTS; k++) {
        char key[64];
        if (!component_scored(r, k)) continue;
        snprintf(key, sizeof key, "reward_%s_mean", experiment_reward_names[k]);
        json_object_set_new(o, key, json_real(st->comp_mean[k]));
        snprintf(key, sizeof key, "reward_%s_std", experiment_reward_names[k]);
        json_object_set_new(o, key, json_real(st->comp_std[k]));
    }
    json_object_set_new(o, "advantage_mean", json_real(st->adv_mean));
    json_object_set_new(o, "advantage_std", json_real(st->adv_std));
    json_object_set_new(o, "advantage_abs_max", json_real(st->adv_abs_max));
    json_object_set_new(o, "tied_group_fraction", json_real(st->tied_fraction));
    json_object_set_new(o, "loss", json_real(st->loss_sum / items));
    json_object_set_new(o, "clip_fraction", json_real((double)st->clipped / items));
    json_object_set_new(o, "ratio_mean", json_real(st->items ? st->ratio_sum / items : 1.0));
    json_object_set_new(o, "ratio_min", json_real(st->items ? st->ratio_min : 1.0));
    json_object_set_new(o, "ratio_max", json_real(st->items ? st->ratio_max : 1.0));
    json_t *per = json_array();
    for (int j = 0; j < r->chunks.count; j++) {
        json_t *e = json_object();
        int k = st->chunk_items[j];
        json_object_set_new(e, "count", json_integer(k));
        if (k) {
            json_object_set_new(e, "mean", json_real(st->chunk_ratio_sum[j] / k));
            json_object_set_new(e, "min", json_real(st->chunk_ratio_min[j]));
            json_object_set_new(e, "max", json_real(st->chunk_ratio_max[j]));
        }
        json_array_append_new(per, e);
    }
    json_object_set_new(o, "chunk_ratio", per);
    json_object_set_new(o, "chunks", chunk_sizes_json(&r->chunks));
    json_object_set_new(o, "approx_kl", json_real(st->k3_sum / items));
    json_object_set_new(o, "kl_ref", json_real(st->kl_sum / items));
    json_t *by_epoch = json_array();
    for (int e = 0; e < c->epochs; e++)
        json_array_append_new(by_epoch,
                              json_real(st->epoch_items[e]
                                            ? (double)st->epoch_clipped[e] / st->epoch_items[e]
                                            : 0.0));
    json_object_set_new(o, "clip_fraction_by_epoch", by_epoch);
    json_object_set_new(o, "grad_norm",
                        json_real(st->opt_steps ? st->grad_norm_sum / st->opt_steps : 0.0));
    json_object_set_new(o, "lr", json_real(r->opt.cfg.lr));
    json_object_set_new(o, "sec_sampling", json_real(st->t_sample));
    json_object_set_new(o, "sec_reward", json_real(st->t_reward));
    json_object_set_new(o, "sec_optimize", json_real(st->t_opt));
    if (r->scorers.remote) {
        json_object_set_new(o, "sec_remote_reward", json_real(st->t_remote));
        json_object_set_new(o, "remote_item_errors", json_integer(st->remote_errors));
        json_object_set_new(o, "remote_retries", json_integer(st->remote_retries));
    }
    double total = st->t_sample + st->t_reward + st->t_opt;
    json_object_set_new(o, "images_per_sec", json_real(total > 0 ? r->n_all / total : 0));
    if (r->ranks > 1) json_object_set_new(o, "ranks", json_integer(r->ranks));
    if (eval) set_eval_scores(o, eval);
    char *line = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(7));
    fprintf(f, "%s\n", line);
    fflush(f);
    free(line);
    json_decref(o);
}

/* groups/iter-NNNNNNN.png and .json: group 0's images, rewards, advantages, chunk ratios. */
static int write_group_view(const Run *r, const char *out, int iter, char *err, size_t errlen)
{
    const ModelConfig *mc = &r->model.cfg;
    int G = r->c->group_size;
    char path[PATH_BUF + 64];
    snprintf(path, sizeof path, "%s/groups", out);
    if (make_dirs(path, err, errlen)) return -1;
    snprintf(path, sizeof path, "%s/groups/iter-%07d.png", out, iter);
    if (png_write_grid(path, r->tr->x0_hat, G, mc->image_size, mc->channels, G, 2, err, errlen))
        return -1;
    json_t *o = json_object(), *members = json_array();
    json_object_set_new(o, "iteration", json_integer(iter));
    json_object_set_new(o, "prompt", json_string(r->prompts[r->prompt_index[0]]));
    json_object_set_new(o, "chunks", chunk_sizes_json(&r->chunks));
    for (int j = 0; j < G; j++) {
        json_t *m = json_object(), *ratios = json_array();
        json_object_set_new(m, "reward", json_real(r->rewards[j]));
        json_object_set_new(m, "advantage", json_real(r->adv[j]));
        json_t *comp = json_object();
        for (int k = 0; k < REWARD_COMPONENTS; k++)
            if (component_scored(r, k))
                json_object_set_new(comp, experiment_reward_names[k],
                                    json_real(r->comp[j * REWARD_COMPONENTS + k]));
        json_object_set_new(m, "components", comp);
        if (r->c->chunk_rewards.count) {
            json_t *ca = json_array();
            for (int ch = 0; ch < r->chunks.count; ch++)
                json_array_append_new(ca, json_real(advantage_of(r, j, ch)));
            json_object_set_new(m, "chunk_advantage", ca);
        }
        for (int ch = 0; ch < r->chunks.count; ch++) {
            float v = r->ratio_of[j * r->trainable + ch];
            int trained = 0;
            for (int k = 0; k < r->n_train; k++) trained |= r->chosen[j * r->trainable + k] == ch;
            json_array_append_new(ratios, trained && !isnan(v) ? json_real(v) : json_null());
        }
        json_object_set_new(m, "chunk_ratio", ratios);
        json_array_append_new(members, m);
    }
    json_object_set_new(o, "members", members);
    int all_equal = 1;
    for (int j = 1; j < G; j++) all_equal &= r->rewards[j] == r->rewards[0];
    json_object_set_new(o, "rewards_all_equal", json_boolean(all_equal));
    char *text = json_dumps(o, JSON_INDENT(1) | JSON_REAL_PRECISION(7));
    snprintf(path, sizeof path, "%s/groups/iter-%07d.json", out, iter);
    int rc = write_file_atomic(path, text, strlen(text), err, errlen);
    free(text);
    json_decref(o);
    return rc;
}

/* Exchanges the policy's weights and their average, on the host and the backend. */
static void swap_ema(Run *r)
{
    policy_pull(r->pol, NULL);
    float *p = r->model.params;
    for (size_t k = 0; k < r->model.num_params; k++) {
        float t = p[k];
        p[k] = r->ema[k];
        r->ema[k] = t;
    }
    policy_push(r->pol, NULL);
}

/* One ODE evaluation of the policy on list [n] (NULL: ec's set) into dir: its mean into *mean,
 * its mean per template into by_template [TEMPLATE_KINDS] (NAN where none was scored), when best
 * is set its best-of-seeds mean into *best, and the learned models' and reward server's means
 * into learned [EXPERIMENT_LEARNED] and *remote (NAN without them). */
static int score_pass(Run *r, const EvalConfig *ec, const char *const *list, int n, const char *dir,
                      double *mean, double *by_template, double *best, double *learned,
                      double *remote, char *err, size_t errlen)
{
    json_t *report = json_object();
    int rc = eval_model(r->pol, r->base_pol, &r->vocab, ec, &r->scorers, list, n, dir, report, err,
                        errlen);
    if (rc == 0) {
        json_t *ode = json_object_get(report, "ode");
        *mean = json_real_value(json_object_get(ode, "align_mean"));
        json_t *tpl = json_object_get(ode, "by_template");
        for (int k = 0; k < TEMPLATE_KINDS; k++) {
            json_t *e = json_object_get(tpl, world_template_names[k]);
            by_template[k] = e ? json_real_value(json_object_get(e, "align_mean")) : NAN;
        }
        if (best) *best = json_real_value(json_object_get(ode, "best_of_seeds_mean"));
        json_t *rm = json_object_get(ode, "remote_mean");
        *remote = rm ? json_real_value(rm) : NAN;
        for (int k = 0; k < EXPERIMENT_LEARNED; k++) {
            char key[64];
            snprintf(key, sizeof key, "%s_mean", experiment_learned_names[k]);
            json_t *m = json_object_get(ode, key);
            learned[k] = m ? json_real_value(m) : NAN;
        }
    }
    json_decref(report);
    return rc;
}

/* Held-out ODE evaluation of the current policy into eval/iter-NNNNNNN, and of eval_train_prompts
 * training prompts into its train/; their scores into *s. */
static int evaluate(Run *r, const char *out, int iter, EvalScores *s, char *err, size_t errlen)
{
    const GrpoRunConfig *c = r->c;
    EvalConfig ec;
    memset(&ec, 0, sizeof ec);
    snprintf(ec.model, sizeof ec.model, "%.200s (iteration %d)", c->model, iter);
    snprintf(ec.prompts, sizeof ec.prompts, "heldout");
    snprintf(ec.sde, sizeof ec.sde, "flow");
    ec.max_prompts = c->eval_prompts;
    ec.ode_seeds = c->eval_seeds;
    ec.seed = c->eval_seed;
    ec.steps = c->eval_steps ? c->eval_steps : c->steps;
    ec.shift = c->shift;
    ec.eta = c->eta;
    ec.cfg_scale = c->cfg_scale;
    ec.group_size = 2;
    ec.grid_images = 32;
    snprintf(ec.mode, sizeof ec.mode, "%s", c->eval_mode);
    snprintf(ec.base_model, sizeof ec.base_model, "%.200s", c->model);
    ec.hybrid_steps = c->hybrid_steps;
    ec.remote = c->remote;
    memcpy(ec.learned_model, c->learned_model, sizeof ec.learned_model);
    char dir[PATH_BUF + 80]; /* room for /train after it */
    snprintf(dir, sizeof dir, "%s/eval/iter-%07d", out, iter);
    /* the held-out pass fills the rest */
    *s = (EvalScores){.train_align = NAN, .train_remote = NAN};
    for (int k = 0; k < EXPERIMENT_LEARNED; k++) s->train_learned[k] = NAN;
    for (int k = 0; k < TEMPLATE_KINDS; k++) s->train_by_template[k] = NAN;
    if (r->ema) { /* score the average: swap it in (host and device), then back */
        snprintf(ec.model, sizeof ec.model, "%.200s (iteration %d, EMA %g)", c->model, iter,
                 c->ema_decay);
        swap_ema(r);
    }
    int rc = score_pass(r, &ec, NULL, 0, dir, &s->align, s->by_template, &s->best_of_seeds,
                        s->learned, &s->remote, err, errlen);
    if (rc == 0 && c->eval_train_prompts) {
        snprintf(ec.prompts, sizeof ec.prompts, "%s", c->prompts);
        ec.max_prompts = c->eval_train_prompts;
        size_t used = strlen(dir);
        snprintf(dir + used, sizeof dir - used, "/train");
        rc =
            score_pass(r, &ec, r->prompts, r->num_prompts, dir, &s->train_align,
                       s->train_by_template, NULL, s->train_learned, &s->train_remote, err, errlen);
    }
    if (r->ema) swap_ema(r);
    return rc;
}

/* DIR/NAME: the EMA weights as a checkpoint of the same model. */
static int save_ema(Run *r, const char *dir, const char *name, int iter, char *err, size_t errlen)
{
    char path[PATH_BUF + 64];
    CheckpointInfo info = {.step = iter};
    snprintf(info.experiment, sizeof info.experiment, "grpo");
    snprintf(path, sizeof path, "%s/%s", dir, name);
    Model view = r->model; /* same layout, the average's weights */
    view.params = r->ema;
    return checkpoint_save(path, &view, &r->vocab, &info, err, errlen);
}

static int save_checkpoint(Run *r, const char *out, int iter, char *err, size_t errlen)
{
    char dir[PATH_BUF], path[PATH_BUF + 64];
    if (checkpoint_folder_new(out, iter, dir, sizeof dir, err, errlen)) return -1;
    CheckpointInfo info = {.step = iter};
    snprintf(info.experiment, sizeof info.experiment, "grpo");
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    policy_pull(r->pol, &r->opt); /* the device's parameters and moments, on the CUDA backend */
    if (checkpoint_save(path, &r->model, &r->vocab, &info, err, errlen)) return -1;
    if (r->ema && save_ema(r, dir, "ema.safetensors", iter, err, errlen)) return -1;
    snprintf(path, sizeof path, "%s/train_state.safetensors", dir);
    if (train_state_save(path, &r->opt, &r->rng, iter, err, errlen)) return -1;
    char sizes[4 * GRPO_MAX_CHUNKS + 8];
    size_t used = 0;
    for (int i = 0; i < r->chunks.count; i++)
        used += (size_t)snprintf(sizes + used, sizeof sizes - used, "%s%d", i ? "," : "",
                                 r->chunks.size[i]);
    snprintf(path, sizeof path, "%s/chunks.txt", dir);
    if (write_file_atomic(path, sizes, used, err, errlen)) return -1;
    return checkpoint_folder_publish(out, iter, r->c->keep_checkpoints, err, errlen);
}

/* Restores the newest checkpoint; returns its iteration, or -1. */
static int load_checkpoint(Run *r, const char *out, char *err, size_t errlen)
{
    char path[PATH_BUF + 64], dir[PATH_BUF], sizes[4 * GRPO_MAX_CHUNKS + 8];
    if (checkpoint_folder_latest(out, dir, sizeof dir, err, errlen)) return -1;
    Model m;
    Vocab v;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (checkpoint_load(path, &m, &v, NULL, err, errlen)) return -1;
    int ok = m.num_params == r->model.num_params;
    if (ok) memcpy(r->model.params, m.params, m.num_params * sizeof(float));
    vocab_free(&v);
    model_free(&m);
    if (!ok) {
        snprintf(err, errlen, "%s: not the size of config.model", path);
        return -1;
    }
    if (r->ema) {
        snprintf(path, sizeof path, "%s/ema.safetensors", dir);
        if (checkpoint_load(path, &m, &v, NULL, err, errlen)) return -1;
        ok = m.num_params == r->model.num_params;
        if (ok) memcpy(r->ema, m.params, m.num_params * sizeof(float));
        vocab_free(&v);
        model_free(&m);
        if (!ok) {
            snprintf(err, errlen, "%s: not the size of config.model", path);
            return -1;
        }
    }
    int64_t iter;
    snprintf(path, sizeof path, "%s/train_state.safetensors", dir);
    if (train_state_load(path, &r->opt, &r->rng, &iter, err, errlen)) return -1;
    snprintf(path, sizeof path, "%s/chunks.txt", dir);
    if (read_small_file(path, sizes, sizeof sizes, err, errlen)) return -1;
    int list[GRPO_MAX_CHUNKS], k = 0;
    for (char *p = sizes; *p && k < GRPO_MAX_CHUNKS;) {
        list[k++] = (int)strtol(p, &p, 10);
        if (*p == ',') p++;
    }
    if (chunking_from_sizes(list, k, r->trainable, &r->chunks, err, errlen)) return -1;
    policy_push(r->pol, &r->opt);
    return (int)iter;
}

/* The chunks training draws from (every one, or the first train_leading) and how many of them
 * each trajectory trains; again whenever the chunks change. */
static void set_training_pool(Run *r)
{
    const GrpoRunConfig *c = r->c;
    r->pool = c->train_leading ? c->train_leading : r->chunks.count;
    r->n_train = (int)lround(c->train_fraction * r->pool);
    if (r->n_train < 1) r->n_train = 1;
}

/* The learning rate of iteration it (0-based): constant, or cosine from lr to lr * min_lr_ratio. */
static double lr_at(const GrpoRunConfig *c, int it)
{
    if (strcmp(c->lr_schedule, "cosine") != 0 || c->iterations < 2) return c->lr;
    double cosine = 0.5 * (1.0 + cos(M_PI * it / (c->iterations - 1)));
    return c->lr * (c->min_lr_ratio + (1.0 - c->min_lr_ratio) * cosine);
}

int grpo_run(const GrpoRunConfig *c, const char *out, int resume, volatile sig_atomic_t *stop,
             ProgressFn progress, void *progress_ctx, char *err, size_t errlen)
{
    if (strlen(out) > PATH_BUF - 128) {
        snprintf(err, errlen, "--out: the folder name is too long");
        return -1;
    }
    engine_set_threads(c->threads ? c->threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
    /* with several ranks, rank 0 keeps the folder: config, metrics, evaluations, checkpoints */
    int lead = dist_rank() == 0;
    if (lead &&
        (make_dirs(out, err, errlen) || settle_config("grpo", grpo_fields, grpo_field_count, c,
                                                      "iterations", out, resume, err, errlen)))
        return -1;
    if (dist_barrier()) {
        snprintf(err, errlen, "MPI: the ranks failed to meet");
        return -1;
    }
    Run r;
    FILE *metrics = NULL;
    int rc = -1, start = 0;
    if (run_setup(&r, c, err, errlen)) goto done;
    if (resume && has_checkpoint(out)) {
        if ((start = load_checkpoint(&r, out, err, errlen)) < 0) goto done;
    } else if (setup_chunks(&r, 0, err, errlen)) {
        goto done;
    }
    set_training_pool(&r);
    if (lead && !(metrics = metrics_open(out, "iteration", resume, start, err, errlen))) goto done;
    if (lead && start == 0 && c->eval_every > 0) {
        EvalScores base;
        if (evaluate(&r, out, 0, &base, err, errlen)) goto done;
        json_t *o = json_object();
        json_object_set_new(o, "iteration", json_integer(0));
        set_eval_scores(o, &base);
        json_object_set_new(o, "chunks", chunk_sizes_json(&r.chunks));
        char *line = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(7));
        fprintf(metrics, "%s\n", line);
        fflush(metrics);
        free(line);
        json_decref(o);
    }
    for (int it = start; it < c->iterations; it++) {
        int dynamic = strcmp(c->method, "chunk_grpo") == 0 && strcmp(c->chunks, "dynamic") == 0;
        if (dynamic && it > 0 && it % c->profile_every == 0) {
            if (profile_chunks(&r, it, err, errlen)) goto done;
            set_training_pool(&r);
        }
        r.opt.cfg.lr = (float)lr_at(c, it);
        IterStats st;
        if (iteration(&r, it + 1, &st, err, errlen)) goto done;
        int done_iters = it + 1;
        EvalScores eval;
        int evaluating =
            (c->eval_every > 0 && done_iters % c->eval_every == 0) || done_iters == c->iterations;
        if (lead) {
            if (evaluating && evaluate(&r, out, done_iters, &eval, err, errlen)) goto done;
            write_metrics(metrics, &r, done_iters, &st, evaluating ? &eval : NULL);
            if (write_group_view(&r, out, done_iters, err, errlen)) goto done;
            if (progress)
                progress(progress_ctx, done_iters, c->iterations, st.reward_mean, r.opt.cfg.lr,
                         st.t_sample + st.t_reward + st.t_opt);
        }
        /* a stop asked of any rank stops them all after the same iteration */
        double stop_asked = stop && *stop;
        if (dist_reduce_doubles(&stop_asked, 1, DIST_MAX)) {
            snprintf(err, errlen, "MPI: the ranks failed to agree on stopping");
            goto done;
        }
        int stopping = stop_asked > 0;
        if (lead &&
            (done_iters % c->checkpoint_every == 0 || done_iters == c->iterations || stopping))
            if (save_checkpoint(&r, out, done_iters, err, errlen)) goto done;
        if (stopping) {
            rc = 1;
            goto done;
        }
    }
    if (lead) {
        char path[PATH_BUF + 64];
        CheckpointInfo info = {.step = c->iterations};
        snprintf(info.experiment, sizeof info.experiment, "grpo");
        snprintf(path, sizeof path, "%s/model.safetensors", out);
        policy_pull(r.pol, NULL);
        rc = checkpoint_save(path, &r.model, &r.vocab, &info, err, errlen);
        if (rc == 0 && r.ema)
            rc = save_ema(&r, out, "model_ema.safetensors", c->iterations, err, errlen);
    } else {
        rc = 0;
    }
done:
    if (metrics) fclose(metrics);
    run_free(&r);
    return rc;
}
