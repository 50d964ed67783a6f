/*
 * eval.h: `kind: "eval"`, scoring a checkpoint on a fixed prompt set with fixed seeds.
 *
 * Two passes, both on the same prompts and noise every time they run:
 *   ODE: every prompt with `ode_seeds` seeds, deterministic sampling: the mean align reward (the
 *        paper's evaluation protocol, algorithm.md section 7); mode "hybrid" samples the late
 *        steps with a base model instead (the paper's hybrid evaluation);
 *   SDE: `sde_prompts` prompts, `group_size` samples each, as GRPO samples its groups: the mean
 *        reward, the mean within-group standard deviation and the fraction of groups whose
 *        rewards are all equal (GRPO learns nothing from those).
 * Output folder: eval.json (the figures, per requirement kind and per caption template too:
 * "by_template" {"pair": {"align_mean", "prompts", ...}, ...}), samples.jsonl (every image's
 * prompt, seed, score and breakdown), ode_grid.png, sde_groups.png (a group per row).
 */
#ifndef CHUNKGRPO_EVAL_H
#define CHUNKGRPO_EVAL_H

#include "backend.h"
#include "experiment.h" /* EvalConfig and its table */
#include "model.h"
#include "rewards/learned.h"
#include "rewards/remote.h"
#include "tokenizer.h"
#include "runners/pretrain.h"

/* The scorers beside align that a config names (NULL members: none): the learned models of
 * pref_model and clip_model, and the client of remote_url. A grpo run opens them once and scores
 * its rollouts and every evaluation with them. */
typedef struct {
    LearnedReward *learned[EXPERIMENT_LEARNED];
    RemoteReward *remote; /* asked its health when opened */
} EvalScorers;

/* Opens the scorers of learned_model [EXPERIMENT_LEARNED] and remote (learned models score `batch`
 * images per call). Returns 0, or -1 with a message naming the field; *s is then closed. */
int eval_scorers_open(EvalScorers *s, const char learned_model[][CONFIG_STRING_MAX],
                      const RemoteSettings *remote, int batch, char *err, size_t errlen);
void eval_scorers_close(EvalScorers *s);

/* Loads cfg->model and evaluates it into out_dir; cfg has passed experiment_config_parse (hybrid
 * names a base_model). Returns 0, or -1 with a message in err. */
int eval_run(const EvalConfig *cfg, const char *out_dir, char *err, size_t errlen);

/* Evaluates the model of a policy (on its backend and batch: cfg's batch, threads, backend and
 * precision are not read; cfg->model and cfg->base_model are only reported) on cfg->max_prompts
 * (0: all) prompts taken evenly through `list` [num_prompts], or through cfg->prompts' set when
 * list is NULL (the SDE pass takes its cfg->sde_prompts evenly through those), into out_dir,
 * adding
 * the figures to report (the object also written as out_dir/eval.json): "ode": {"align_mean", ...},
 * "sde": {"align_mean", "within_group_std", "tied_group_fraction", ...}. With cfg->mode "hybrid",
 * the ODE pass hands the late transitions to the policy `base` (algorithm.md section 7); base is
 * unused otherwise. The scorers (which cfg's learned_model and remote name) score the ODE samples
 * too. pol, base, vocab and scorers are borrowed. Returns 0, or -1 with a message in err. */
int eval_model(Policy *pol, Policy *base, const Vocab *vocab, const EvalConfig *cfg,
               const EvalScorers *scorers, const char *const *list, int num_prompts,
               const char *out_dir, json_t *report, char *err, size_t errlen);

/* The transitions a hybrid evaluation samples with the trained model: cfg's hybrid_steps, or
 * 60% of the steps (the paper's 30 of 50) when that is 0. */
int eval_hybrid_steps(int hybrid_steps, int steps);

#endif
