/*
 * experiment.h: the experiment kinds (pretrain, eval, grpo, profile): each kind's config struct,
 * its table of fields (config.h) and its checks across fields; one registry of the kinds; the
 * JSON Schema the tables describe.
 *
 * They live in the common library so that the control server validates a config exactly as the
 * worker does, without linking the engine or the runners. What only a worker can check stays with
 * the runners: that the model and prompt files exist and load, that a preset with its overrides
 * is a valid model shape, that the chosen backend is present.
 */
#ifndef CHUNKGRPO_EXPERIMENT_H
#define CHUNKGRPO_EXPERIMENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* The most sampling steps of any kind: the engine's SAMPLER_MAX_STEPS (the worker asserts that
 * the two agree; common/ cannot include the engine). */
#define EXPERIMENT_MAX_STEPS 1000

/* {"cpu", "cuda", NULL} in the order of BackendKind (worker/backend.h): the choices of every
 * config's "backend" field and of the worker's --backend. */
extern const char *const backend_names[];

/* {"tf32", "fp32", "bf16", NULL} in CudaMath order: the choices of every config's "precision",
 * the CUDA backend's sampling precision (training passes stay fp32). */
extern const char *const precision_names[];

/* kind "pretrain": flow-matching training of a base model (worker/runners/pretrain.h). */
typedef struct {
    char preset[CONFIG_STRING_MAX];
    int dim, depth, heads, mlp_ratio; /* 0 = the preset's */
    char init[CONFIG_STRING_MAX];     /* checkpoint to start from; "" = fresh initialisation */
    int64_t seed;
    int steps, batch_size, warmup_steps;
    double lr, min_lr_ratio, beta1, beta2, eps, weight_decay, grad_clip;
    double prompt_dropout, logit_mean, logit_std, ema_decay;
    int log_every, checkpoint_every, keep_checkpoints;
    int sample_every, sample_prompts, sample_steps;
    double sample_shift;
    int threads;
    char backend[CONFIG_STRING_MAX];
    char precision[CONFIG_STRING_MAX];
} PretrainConfig;

/* The learned rewards a reward_train run makes (worker/rewards/learned.h), in the order of
 * LearnedKind: "pref", "clip". A grpo or eval config names a model of each in its fields
 * "pref_model" and "clip_model" (learned_model[kind]; "" = none). */
#define EXPERIMENT_LEARNED 2
extern const char *const experiment_learned_names[EXPERIMENT_LEARNED + 1];

/* A user's reward server (spec architecture.md, "Rewards"; worker/rewards/remote.h), the
 * config fields remote_url, remote_reward, remote_timeout, remote_retries and remote_batch of the
 * kinds that can ask one (grpo, eval). */
typedef struct {
    char url[CONFIG_STRING_MAX]; /* "" = none */
    char reward[CONFIG_STRING_MAX];
    double timeout_s;
    int retries, batch;
} RemoteSettings;

/* kind "eval": scoring a checkpoint on fixed prompts and seeds (worker/runners/eval.h). */
typedef struct {
    char model[CONFIG_STRING_MAX];
    char prompts[CONFIG_STRING_MAX];
    int max_prompts, ode_seeds, sde_prompts, group_size, same_noise;
    int steps;
    double shift, eta, cfg_scale;
    char sde[CONFIG_STRING_MAX];
    int64_t seed;
    char mode[CONFIG_STRING_MAX];       /* "ode" or "hybrid" */
    char base_model[CONFIG_STRING_MAX]; /* hybrid: the model of the late steps */
    int hybrid_steps;                   /* hybrid: transitions by the model (0 = 60%) */
    int batch, threads, grid_images;
    char backend[CONFIG_STRING_MAX];
    char precision[CONFIG_STRING_MAX];
    /* learned models that score the ODE samples too, by experiment_learned_names; "" = none */
    char learned_model[EXPERIMENT_LEARNED][CONFIG_STRING_MAX];
    RemoteSettings remote; /* and so does a server it names */
} EvalConfig;

#define EXPERIMENT_MAX_EPOCHS 16 /* grpo's passes over one iteration's rollouts */

/* kind "grpo": RL fine-tuning by GRPO or Chunk-GRPO (worker/runners/grpo_runner.h). */
typedef struct {
    char model[CONFIG_STRING_MAX];
    char prompts[CONFIG_STRING_MAX];
    char method[CONFIG_STRING_MAX];
    char chunks[CONFIG_STRING_MAX];
    int chunk_count, profile_every, weighted_sampling;
    double train_fraction;
    int train_leading;
    int64_t seed;
    int iterations, prompts_per_iter, group_size, same_noise;
    int steps;
    double shift, eta, cfg_scale;
    char sde[CONFIG_STRING_MAX];
    double clip_eps, adv_clip, lr;
    char lr_schedule[CONFIG_STRING_MAX];
    double min_lr_ratio, beta1, beta2, eps, weight_decay, grad_clip;
    char optimizer_step[CONFIG_STRING_MAX];
    int epochs;
    double kl_coef, ema_decay;
    ConfigWeights rewards;           /* by experiment_reward_names */
    ConfigWeightsList chunk_rewards; /* [] or one per chunk */
    /* reward_train models, by experiment_learned_names; "" = none */
    char learned_model[EXPERIMENT_LEARNED][CONFIG_STRING_MAX];
    RemoteSettings remote;
    int eval_every, eval_prompts, eval_seeds, eval_steps, eval_train_prompts;
    int64_t eval_seed;
    char eval_mode[CONFIG_STRING_MAX];
    int hybrid_steps, checkpoint_every, keep_checkpoints;
    int batch, threads;
    char backend[CONFIG_STRING_MAX];
    char precision[CONFIG_STRING_MAX];
} GrpoRunConfig;

/* The rewards a grpo config weighs (config.rewards, config.chunk_rewards), NULL-terminated, in
 * the order of ConfigWeights.w: "align" (the graded alignment), "clean" (its cleanliness
 * factor), then align's requirement kinds "object", "size", "position", "relation", "count"
 * (worker/rewards/reward.h computes them), "pref" and "clip", the scores of the learned models
 * at config.pref_model and config.clip_model (worker/rewards/learned.h), and "remote", the score
 * of the reward server at config.remote_url (worker/rewards/remote.h). */
#define EXPERIMENT_REWARDS 10
#define EXPERIMENT_REWARD_PREF 7   /* "pref"'s index; "clip" follows it (learned kind 1) */
#define EXPERIMENT_REWARD_REMOTE 9 /* "remote"'s index */
extern const char *const experiment_reward_names[EXPERIMENT_REWARDS + 1];

/* kind "reward_train": a learned reward model (worker/runners/reward_train.h). */
typedef struct {
    char reward[CONFIG_STRING_MAX]; /* "pref" or "clip" */
    char preset[CONFIG_STRING_MAX];
    int dim, depth, heads, mlp_ratio; /* 0 = the preset's */
    char degradations[CONFIG_STRING_MAX];
    int64_t seed;
    int steps, batch_size, warmup_steps;
    double lr, min_lr_ratio, beta1, beta2, eps, weight_decay, grad_clip;
    double temperature; /* clip's InfoNCE */
    int eval_every, eval_pairs, log_every, checkpoint_every, keep_checkpoints;
    int threads;
    char backend[CONFIG_STRING_MAX];
    char precision[CONFIG_STRING_MAX];
} RewardTrainConfig;

/* The degradations a preference pair may hold, NULL-terminated (reward_train.h says what each
 * does). */
#define REWARD_DEGRADATIONS 5
extern const char *const reward_degradation_names[REWARD_DEGRADATIONS + 1];

/* The distinct degradations a comma-separated list names (config.degradations), as indices into
 * reward_degradation_names in that order, into kinds [REWARD_DEGRADATIONS]. Returns how many, or
 * -1 with a message naming the field (an unknown name, or none). */
int reward_degradations_parse(const char *list, int *kinds, char *err, size_t errlen);

/* kind "profile": the temporal-dynamics profile of a model (worker/runners/profile.h). */
typedef struct {
    char model[CONFIG_STRING_MAX];
    char prompts[CONFIG_STRING_MAX];
    char sde[CONFIG_STRING_MAX];
    int num_prompts, seeds, steps, chunk_count, max_chunks, batch, threads;
    char backend[CONFIG_STRING_MAX];
    char precision[CONFIG_STRING_MAX];
    double shift, eta;
    int64_t seed;
} ProfileConfig;

extern const ConfigField pretrain_fields[];
extern const int pretrain_field_count;
extern const ConfigField eval_fields[];
extern const int eval_field_count;
extern const ConfigField grpo_fields[];
extern const int grpo_field_count;
extern const ConfigField reward_train_fields[];
extern const int reward_train_field_count;
extern const ConfigField profile_fields[];
extern const int profile_field_count;

typedef struct {
    const char *name;          /* the config's "kind" */
    const ConfigField *fields; /* [field_count] */
    int field_count;
    size_t config_size;      /* sizeof the struct the table fills */
    const char *description; /* one line */
    /* The checks across fields of a config that config_parse filled, or NULL when the kind has
     * none. Returns 0, or -1 with a message naming a field. */
    int (*check)(const void *cfg, char *err, size_t errlen);
    /* What a run of the kind counts: the metrics lines' numbering field ("step", "iteration"),
     * and the config field it counts to ("steps", "iterations"; NULL for a one-shot kind). */
    const char *metrics_key, *count_field;
} ExperimentKind;

/* Every kind, [experiment_kind_count], in the order help texts and the schema list them. */
extern const ExperimentKind experiment_kinds[];
extern const int experiment_kind_count;

/* The kind called name, or NULL. */
const ExperimentKind *experiment_kind_find(const char *name);

/* The kind that obj's "kind" field names; NULL with a message naming config.kind and listing the
 * kinds when obj is not an object or the field is missing, not a string or unknown. */
const ExperimentKind *experiment_kind_of(const json_t *obj, char *err, size_t errlen);

/* config_parse of obj by k's table into out (a struct of k->config_size bytes), then k's checks
 * across fields. obj is borrowed. Returns 0, or -1 with a message naming the field. */
int experiment_config_parse(const ExperimentKind *k, const json_t *obj, void *out, char *err,
                            size_t errlen);

/* Whether obj (borrowed) is a valid experiment config: experiment_kind_of, then
 * experiment_config_parse into a scratch struct; the same checks the worker's `run` makes before
 * it opens a file. Safe from any thread. Returns 0, or -1 with a message naming the field
 * ("config.lr: 2 is out of range [0, 1]"). */
int experiment_config_validate(const json_t *obj, char *err, size_t errlen);

/* A grpo config's "chunks": sizes "2,3,4,7" (high noise first), "uniform:K", "auto" or
 * "dynamic". */
typedef enum {
    CHUNK_SPEC_SIZES,
    CHUNK_SPEC_UNIFORM,
    CHUNK_SPEC_AUTO,
    CHUNK_SPEC_DYNAMIC
} ChunkSpecKind;

typedef struct {
    ChunkSpecKind kind;
    int count;                      /* sizes: how many; uniform: K; 0 for auto and dynamic */
    int size[EXPERIMENT_MAX_STEPS]; /* sizes: [count], summing to the trainable transitions */
} ChunkSpec;

/* Parses spec for `trainable` (1 .. EXPERIMENT_MAX_STEPS) transitions into *out: sizes must sum
 * to trainable, K must be 1 .. trainable. Returns 0, or -1 with a message naming config.chunks. */
int chunk_spec_parse(const char *spec, int trainable, ChunkSpec *out, char *err, size_t errlen);

/* The JSON Schema (draft 2020-12) of an experiment config, generated from the tables: one
 * subschema per kind under oneOf, each field with its type, bounds, choices, default and doc,
 * no other fields allowed. The checks across fields are not in it. Returns the text, ending
 * with a newline, that the caller frees; NULL when out of memory. */
char *experiment_schema_json(void);

#endif
