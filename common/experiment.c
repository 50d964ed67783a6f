/*
 * experiment.c: the experiment kinds' config tables, their checks across fields, the registry of
 * kinds and the JSON Schema generated from the tables. See experiment.h.
 */
#include "experiment.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"

const char *const backend_names[] = {"cpu", "cuda", NULL};
const char *const precision_names[] = {"tf32", "fp32", "bf16", NULL};

/* The entries of every kind's table that say where it runs: threads, backend and precision (Type
 * has int threads and char backend[], precision[] strings). */
#define RUNTIME_CONFIG_FIELDS(Type)                                                                \
    {"threads", CONFIG_INT, offsetof(Type, threads),     0, 1024,                                  \
     "0",       NULL,       "CPU threads; 0 = all cores"},                                         \
        {"backend",                                                                                \
         CONFIG_STRING,                                                                            \
         offsetof(Type, backend),                                                                  \
         0,                                                                                        \
         0,                                                                                        \
         "\"cpu\"",                                                                                \
         backend_names,                                                                            \
         "cpu, or cuda: the CUDA backend (sampling in TF32, training in fp32), which needs a GPU " \
         "and libchunkgrpo_cuda.so beside the worker"},                                            \
    {                                                                                              \
        "precision", CONFIG_STRING, offsetof(Type, precision), 0, 0, "\"tf32\"", precision_names,  \
            "matrix products of sampling on the cuda backend: tf32 (default), fp32, or bf16 "      \
            "(fp32 "                                                                               \
            "master weights); training passes run in fp32 (see "                                   \
            "worker/engine/cuda/cuda_engine.h); "                                                  \
            "the cpu backend is always fp32"                                                       \
    }

/* The reward server's fields (RemoteSettings) of a kind's table. */
// clang-format off
#define REMOTE_CONFIG_FIELDS(Type)                                                                 \
    {"remote_url", CONFIG_STRING, offsetof(Type, remote.url), 0, 0, "\"\"", NULL,                 \
     "a user's reward server (http:// or https://; deploy/reward-server/ is an example): every "   \
     "image is sent to its POST /v1/score as PNG with its prompt. grpo trains on its score as "    \
     "the reward component remote (at weight 0 it is logged beside the training reward without "   \
     "steering it: a gold reward beside the proxy) and adds eval_remote to each held-out "         \
     "evaluation; eval adds remote_mean to its ODE figures. \"\" = none"},                         \
    {"remote_reward", CONFIG_STRING, offsetof(Type, remote.reward), 0, 0, "\"default\"", NULL,     \
     "the reward name sent with each request (a server may offer several)"},                       \
    {"remote_timeout", CONFIG_FLOAT, offsetof(Type, remote.timeout_s), 0.1, 3600, "60", NULL,      \
     "seconds one request to the reward server may take before it is retried"},                    \
    {"remote_retries", CONFIG_INT, offsetof(Type, remote.retries), 0, 20, "4", NULL,               \
     "retries of a request that failed to connect, timed out or got HTTP 429 or 5xx, after "       \
     "0.5, 1, 2, 4 ... s (at most 30 s); a request the server refuses (other 4xx) is not "         \
     "retried. Images the server answers with an error count as failed (in training each "         \
     "takes its group's mean); a run stops when more than half of a batch of images fail"},       \
    {"remote_batch", CONFIG_INT, offsetof(Type, remote.batch), 1, 4096, "64", NULL,                \
     "images per request to the reward server"}
// clang-format on

static const char *const sde_kinds[] = {"flow", "dance", "cps", NULL};
static const char *const eval_modes[] = {"ode", "hybrid", NULL};

/* ---- pretrain ------------------------------------------------------------------------------ */

#define F(name, type, lo, hi, def, doc)                                                            \
    {                                                                                              \
#name, type, offsetof(PretrainConfig, name), lo, hi, def, NULL, doc                        \
    }
static const char *const presets[] = {"tiny", "small", "base", NULL};

const ConfigField pretrain_fields[] = {
    {"preset", CONFIG_STRING, offsetof(PretrainConfig, preset), 0, 0, "\"small\"", presets,
     "model size (spec/model.md); the overrides below change single dimensions"},
    F(dim, CONFIG_INT, 0, 4096, "0", "hidden width; 0 = the preset's"),
    F(depth, CONFIG_INT, 0, 64, "0", "transformer blocks; 0 = the preset's"),
    F(heads, CONFIG_INT, 0, 64, "0", "attention heads; 0 = the preset's"),
    F(mlp_ratio, CONFIG_INT, 0, 16, "0", "MLP width / dim; 0 = the preset's"),
    {"init", CONFIG_STRING, offsetof(PretrainConfig, init), 0, 0, "\"\"", NULL,
     "checkpoint to continue from (its vocabulary must be the world's); \"\" = fresh weights"},
    F(seed, CONFIG_INT64, 0, 9007199254740991.0, "1", "seeds weights, data, t and noise"),
    F(steps, CONFIG_INT, 1, 100000000, "6000",
      "optimizer steps; a prototype here drew compact objects after ~1000 steps of batch 64 and "
      "clean shapes only after several thousand"),
    F(batch_size, CONFIG_INT, 1, 4096, "64", "images per step"),
    F(warmup_steps, CONFIG_INT, 0, 1000000, "200", "linear learning-rate warm-up"),
    F(lr, CONFIG_FLOAT, 0, 1, "1e-3",
      "peak learning rate; a small DiT trained from scratch at batch 64 tolerates 1e-3 with "
      "warm-up and clipping"),
    F(min_lr_ratio, CONFIG_FLOAT, 0, 1, "0.05", "cosine decay ends at lr * min_lr_ratio"),
    F(beta1, CONFIG_FLOAT, 0, 0.999999, "0.9", "AdamW first-moment decay"),
    F(beta2, CONFIG_FLOAT, 0, 0.999999, "0.99",
      "AdamW second-moment decay; 0.99 adapts faster than 0.999 over short runs"),
    F(eps, CONFIG_FLOAT, 0, 1, "1e-8", "AdamW epsilon"),
    F(weight_decay, CONFIG_FLOAT, 0, 1, "0.01", "decoupled weight decay"),
    F(grad_clip, CONFIG_FLOAT, 0, 1e9, "1.0", "global gradient-norm clip; 0 disables"),
    F(prompt_dropout, CONFIG_FLOAT, 0, 1, "0.1",
      "probability that a caption is replaced by all-PAD, so the model also learns the "
      "unconditional velocity that classifier-free guidance needs (spec/model.md)"),
    F(logit_mean, CONFIG_FLOAT, -10, 10, "0", "t = sigmoid(n), n ~ N(logit_mean, logit_std^2)"),
    F(logit_std, CONFIG_FLOAT, 0.01, 10, "1", "logit-normal spread of t (algorithm.md, 1)"),
    F(ema_decay, CONFIG_FLOAT, 0, 0.999999, "0.995",
      "EMA of the weights, saved beside the raw ones; 0 disables"),
    F(log_every, CONFIG_INT, 1, 1000000, "10", "steps between metric lines"),
    F(checkpoint_every, CONFIG_INT, 1, 100000000, "500", "steps between checkpoints"),
    F(keep_checkpoints, CONFIG_INT, 1, 1000, "2", "checkpoint folders kept (oldest pruned)"),
    F(sample_every, CONFIG_INT, 0, 100000000, "500", "steps between sample grids; 0 = none"),
    F(sample_prompts, CONFIG_INT, 1, 64, "16", "held-out prompts in each sample grid"),
    F(sample_steps, CONFIG_INT, 1, 1000, "17", "ODE steps for the sample grids"),
    F(sample_shift, CONFIG_FLOAT, 0.01, 100, "3", "schedule shift for the sample grids"),
    RUNTIME_CONFIG_FIELDS(PretrainConfig),
};
const int pretrain_field_count = sizeof pretrain_fields / sizeof pretrain_fields[0];
#undef F

/* ---- eval ---------------------------------------------------------------------------------- */

#define F(name, type, lo, hi, def, doc)                                                            \
    {                                                                                              \
#name, type, offsetof(EvalConfig, name), lo, hi, def, NULL, doc                            \
    }
static const char *const eval_prompt_sets[] = {"heldout", "train", NULL};

const ConfigField eval_fields[] = {
    {"model", CONFIG_STRING, offsetof(EvalConfig, model), 0, 0,
     "\"models/shapes-small.safetensors\"", NULL, "the checkpoint to evaluate"},
    {"prompts", CONFIG_STRING, offsetof(EvalConfig, prompts), 0, 0, "\"heldout\"", eval_prompt_sets,
     "prompt set (docs/prompts.md)"},
    F(max_prompts, CONFIG_INT, 0, 100000, "0",
      "evaluate N prompts taken evenly through the set (it is ordered by template); 0 = all"),
    F(ode_seeds, CONFIG_INT, 0, 64, "4", "ODE samples per prompt (seeds 0..N-1); 0 skips"),
    F(sde_prompts, CONFIG_INT, 0, 100000, "32",
      "prompts in the SDE group pass, taken evenly through the evaluated ones; 0 skips"),
    F(group_size, CONFIG_INT, 2, 64, "8", "SDE samples per prompt (a GRPO group)"),
    F(same_noise, CONFIG_BOOL, 0, 0, "false",
      "SDE groups share their initial noise (init_same_noise; the paper's groups do)"),
    F(steps, CONFIG_INT, 1, EXPERIMENT_MAX_STEPS, "17", "sampling steps (paper 17)"),
    F(shift, CONFIG_FLOAT, 0.01, 100, "3", "schedule shift (paper 3)"),
    F(eta, CONFIG_FLOAT, 0.001, 10, "0.7", "SDE noise strength (paper 0.7; cps: at most 1)"),
    {"sde", CONFIG_STRING, offsetof(EvalConfig, sde), 0, 0, "\"flow\"", sde_kinds,
     "SDE kind of the group pass"},
    F(cfg_scale, CONFIG_FLOAT, 0, 100, "1", "classifier-free guidance scale; 1 = none"),
    {"mode", CONFIG_STRING, offsetof(EvalConfig, mode), 0, 0, "\"ode\"", eval_modes,
     "ode: the model samples every step; hybrid: it samples the first hybrid_steps, base_model "
     "the rest (the paper's hybrid evaluation: 30 of 50 steps by the trained model)"},
    {"base_model", CONFIG_STRING, offsetof(EvalConfig, base_model), 0, 0, "\"\"", NULL,
     "hybrid: the checkpoint of the late steps (the model the evaluated one was tuned from)"},
    F(hybrid_steps, CONFIG_INT, 0, EXPERIMENT_MAX_STEPS, "0",
      "hybrid: transitions sampled by the evaluated model; 0 = 60% of steps"),
    F(seed, CONFIG_INT64, 0, 9007199254740991.0, "0", "noise seed of both passes"),
    F(batch, CONFIG_INT, 1, 4096, "32", "model batch size"),
    RUNTIME_CONFIG_FIELDS(EvalConfig),
    F(grid_images, CONFIG_INT, 0, 1024, "32", "images in ode_grid.png"),
    {"pref_model", CONFIG_STRING, offsetof(EvalConfig, learned_model[0]), 0, 0, "\"\"", NULL,
     "a preference model (kind reward_train, reward pref) that also scores every ODE sample: "
     "pref_mean in eval.json, a pref field per sample. \"\" = none"},
    {"clip_model", CONFIG_STRING, offsetof(EvalConfig, learned_model[1]), 0, 0, "\"\"", NULL,
     "a contrastive model (kind reward_train, reward clip) that also scores every ODE sample: "
     "clip_mean in eval.json, a clip field per sample. \"\" = none"},
    REMOTE_CONFIG_FIELDS(EvalConfig),
};
const int eval_field_count = sizeof eval_fields / sizeof eval_fields[0];
#undef F

/* ---- grpo ---------------------------------------------------------------------------------- */

#define F(name, type, lo, hi, def, doc)                                                            \
    {                                                                                              \
#name, type, offsetof(GrpoRunConfig, name), lo, hi, def, NULL, doc                         \
    }
static const char *const methods[] = {"grpo", "chunk_grpo", NULL};
static const char *const optimizer_steps[] = {"group", "iteration", NULL};
static const char *const lr_schedules[] = {"constant", "cosine", NULL};
const char *const experiment_reward_names[EXPERIMENT_REWARDS + 1] = {
    "align", "clean", "object", "size",   "position", "relation",
    "count", "pref",  "clip",   "remote", NULL};
const char *const experiment_learned_names[EXPERIMENT_LEARNED + 1] = {"pref", "clip", NULL};
_Static_assert(EXPERIMENT_REWARDS <= CONFIG_WEIGHTS_MAX, "ConfigWeights holds every reward");

const ConfigField grpo_fields[] = {
    {"model", CONFIG_STRING, offsetof(GrpoRunConfig, model), 0, 0,
     "\"models/shapes-small.safetensors\"", NULL, "the base model to fine-tune"},
    {"prompts", CONFIG_STRING, offsetof(GrpoRunConfig, prompts), 0, 0, "\"train\"", NULL,
     "training prompts: train (the world's RL set), heldout, all, or a file of captions, one per "
     "line (docs/prompts.md); evaluation always uses the held-out set"},
    {"method", CONFIG_STRING, offsetof(GrpoRunConfig, method), 0, 0, "\"chunk_grpo\"", methods,
     "grpo: step level (every chunk one transition); chunk_grpo: the chunks below"},
    {"chunks", CONFIG_STRING, offsetof(GrpoRunConfig, chunks), 0, 0, "\"auto\"", NULL,
     "chunk_grpo's chunks over the steps-1 trainable transitions, high noise first: sizes "
     "\"2,3,4,7\", \"uniform:K\", \"auto\" (optimal segmentation of the base model's profile "
     "into chunk_count chunks) or \"dynamic\" (re-profiled every profile_every iterations)"},
    F(chunk_count, CONFIG_INT, 1, 1000, "4", "K for auto and dynamic (paper: 4 chunks)"),
    F(profile_every, CONFIG_INT, 1, 1000000, "20", "iterations between profiles (dynamic)"),
    F(weighted_sampling, CONFIG_BOOL, 0, 0, "false",
      "draw the trained chunks with probability proportional to their relative-L1 dynamics "
      "(algorithm.md section 6) instead of uniformly"),
    F(train_fraction, CONFIG_FLOAT, 0.01, 1, "0.5",
      "fraction of a trajectory's chunks (steps for grpo) trained; paper: 2 of 4, 8 of 16"),
    F(train_leading, CONFIG_INT, 0, EXPERIMENT_MAX_STEPS, "0",
      "train only the first N chunks (steps for grpo), the high-noise ones where the layout "
      "is decided, as Flow-GRPO-Fast trains only early steps; train_fraction is then a fraction "
      "of these N. 0: every chunk"),
    F(seed, CONFIG_INT64, 0, 9007199254740991.0, "1", "prompts, noise and chunk choices"),
    F(iterations, CONFIG_INT, 1, 1000000, "100", "rollout + update rounds"),
    F(prompts_per_iter, CONFIG_INT, 1, 4096, "16",
      "prompts per iteration, one group each; with optimizer_step iteration, 16 x 8 = 128 "
      "trajectories per update: at our scale the gradient of fewer is mostly noise"),
    F(group_size, CONFIG_INT, 2, 256, "8", "trajectories per prompt (paper 12)"),
    F(same_noise, CONFIG_BOOL, 0, 0, "true",
      "a group's trajectories share the initial noise (the paper's setting); variety then "
      "comes from the SDE noise alone"),
    F(steps, CONFIG_INT, 2, EXPERIMENT_MAX_STEPS, "17", "sampling steps (paper 17)"),
    F(shift, CONFIG_FLOAT, 0.01, 100, "3", "schedule shift (paper 3)"),
    F(eta, CONFIG_FLOAT, 0.001, 10, "0.7",
      "SDE noise strength of the rollouts (paper 0.7); on our model 1.2 gained more within 180 "
      "iterations (more varied groups; README, the demo)"),
    F(cfg_scale, CONFIG_FLOAT, 0, 100, "1",
      "classifier-free guidance w of the rollouts, the trained policy v_u + w (v_c - v_u) and the "
      "held-out evaluations, as Flow-GRPO trains (at 4.5 on SD3.5); 1 = none, the policy is the "
      "conditional model. Guided, every model call also runs the all-PAD prompt: about twice the "
      "time per iteration"),
    {"sde", CONFIG_STRING, offsetof(GrpoRunConfig, sde), 0, 0, "\"flow\"", sde_kinds,
     "flow (Flow-GRPO), dance (DanceGRPO) or cps (coefficients-preserving: every step's image "
     "holds the noise level of its schedule, no excess noise for the policy to learn to remove; "
     "eta at most 1) SDE. cps replaces part of the noise at every step, which flattens the "
     "relative-L1 profile (about 1.4 at every step at eta 1), so \"auto\" chunks mean little "
     "with it: give sizes"},
    F(clip_eps, CONFIG_FLOAT, 0, 1, "1e-3",
      "ratio clip range; the paper's 5e-5 was set for a 12B model and full-resolution images; at "
      "our scale ratios move more per update (algorithm.md section 3 suggests trying 1e-3)"),
    F(adv_clip, CONFIG_FLOAT, 0, 1000, "5", "advantages are clamped to [-adv_clip, adv_clip]"),
    F(lr, CONFIG_FLOAT, 0, 1, "2e-5",
      "AdamW learning rate; with 128 trajectories per update 2e-5 raised held-out align steadily "
      "(README); 5e-5 and more on 32-trajectory updates damaged the model"),
    {"lr_schedule", CONFIG_STRING, offsetof(GrpoRunConfig, lr_schedule), 0, 0, "\"constant\"",
     lr_schedules,
     "constant (the paper's), or cosine: from lr down to lr * min_lr_ratio at the last iteration, "
     "so a higher early lr gains fast and the late updates no longer undo it"},
    F(min_lr_ratio, CONFIG_FLOAT, 0, 1, "0.1",
      "where the cosine schedule ends, as a fraction of lr"),
    F(beta1, CONFIG_FLOAT, 0, 0.999999, "0.9", "AdamW first-moment decay"),
    F(beta2, CONFIG_FLOAT, 0, 0.999999, "0.999", "AdamW second-moment decay"),
    F(eps, CONFIG_FLOAT, 0, 1, "1e-8", "AdamW epsilon"),
    F(weight_decay, CONFIG_FLOAT, 0, 1, "1e-4", "decoupled weight decay (paper 1e-4)"),
    F(grad_clip, CONFIG_FLOAT, 0, 1e9, "1.0",
      "global gradient-norm clip; the paper's 0.01 is for a 12B model's gradients"),
    {"optimizer_step", CONFIG_STRING, offsetof(GrpoRunConfig, optimizer_step), 0, 0,
     "\"iteration\"", optimizer_steps,
     "iteration: one AdamW step over all groups of an iteration; group: one step per group of G "
     "trajectories (the paper's, for a 12B model): here per-group steps moved the model as much "
     "with the advantages' signs flipped, i.e. by noise alone, and lowered held-out align"},
    F(epochs, CONFIG_INT, 1, EXPERIMENT_MAX_EPOCHS, "1",
      "passes over an iteration's rollouts, each taking the optimizer step(s) above, with the "
      "chunks to train drawn afresh (PPO's epochs, Flow-GRPO's num_inner_epochs). The first pass "
      "is on policy (every ratio 1); later passes weigh each chunk by its ratio to the rollout's "
      "policy, and clip_eps binds there. Each pass costs one optimisation phase"),
    F(kl_coef, CONFIG_FLOAT, 0, 1e6, "0",
      "weight of the KL to the frozen base model (Flow-GRPO style); 0 = off (paper)"),
    F(ema_decay, CONFIG_FLOAT, 0, 0.999999, "0",
      "an exponential moving average of the policy's weights, updated after every optimizer "
      "step (0 = off, as the paper); when on, evaluations score the average and it is saved as "
      "model_ema.safetensors. Flow-GRPO evaluates such an average"),
    {"rewards", CONFIG_WEIGHTS, offsetof(GrpoRunConfig, rewards), 0, 1000, "{\"align\": 1}",
     experiment_reward_names,
     "the training reward, a weighted sum of: align (the graded alignment, docs/prompts.md), "
     "clean (its cleanliness factor alone: ink the prompt did not ask for costs score), and "
     "align's requirement kinds object, size, position, relation, count (each the mean score of "
     "the prompt's requirements of that kind; 1 when it asks none), pref and clip (the scores "
     "of the learned models at pref_model and clip_model) and remote (the score of the reward "
     "server at remote_url). Advantages are normalised per group, so only the "
     "weights' ratios matter. Every component is logged each iteration"},
    {"chunk_rewards", CONFIG_WEIGHTS_LIST, offsetof(GrpoRunConfig, chunk_rewards), 0, 1000, "[]",
     experiment_reward_names,
     "per-chunk reward choice (algorithm.md section 5, beyond the paper): one weights object "
     "per chunk, high noise first (per trainable step for step-level grpo); a chunk's advantages "
     "come from its own reward, normalised within the group. [] = every chunk uses rewards"},
    {"pref_model", CONFIG_STRING, offsetof(GrpoRunConfig, learned_model[0]), 0, 0, "\"\"", NULL,
     "a preference model that kind reward_train made (models/pref-small.safetensors is one): "
     "every rollout image is scored by it with its prompt, the reward component pref (at "
     "weight 0 logged without steering training), and so is every held-out evaluation's sample "
     "(eval_pref). \"\" = none"},
    {"clip_model", CONFIG_STRING, offsetof(GrpoRunConfig, learned_model[1]), 0, 0, "\"\"", NULL,
     "a contrastive image-text model that kind reward_train made with reward clip "
     "(models/clip-small.safetensors is one): the cosine of every rollout image's embedding and "
     "its prompt's, the reward component clip; evaluations log eval_clip. \"\" = none"},
    REMOTE_CONFIG_FIELDS(GrpoRunConfig),
    F(eval_every, CONFIG_INT, 0, 1000000, "10",
      "iterations between held-out evaluations; 0 = end only"),
    F(eval_prompts, CONFIG_INT, 1, 100000, "64",
      "held-out prompts evaluated (ODE), taken evenly through the set; 64 = all of it"),
    F(eval_seeds, CONFIG_INT, 1, 64, "2",
      "seeds per held-out prompt; a gain over the base model measured on 64 x 2 = 128 images has "
      "a standard error of about 0.016, on 64 x 8 about 0.008 (README, the demo)"),
    F(eval_seed, CONFIG_INT64, 0, 9007199254740991.0, "0",
      "noise seed of the held-out evaluations (the eval kind's seed): the same noise at every "
      "evaluation of a run. Report a result on a seed other than the one its settings were "
      "chosen on"),
    F(eval_train_prompts, CONFIG_INT, 0, 100000, "0",
      "at each evaluation also score N of the run's training prompts, evenly spaced through its "
      "list (all, when it has fewer), with the same ODE settings (eval/iter-N/train/, "
      "eval_train_align in the metrics): its gap to the held-out figure is how much of what RL "
      "learns carries over to unseen prompts. 0 = off"),
    F(eval_steps, CONFIG_INT, 0, EXPERIMENT_MAX_STEPS, "0",
      "ODE steps of the held-out evaluations; 0 = steps. Rollouts with fewer steps than the "
      "evaluation are Flow-GRPO's denoising reduction: cheaper iterations, the same evaluation"),
    {"eval_mode", CONFIG_STRING, offsetof(GrpoRunConfig, eval_mode), 0, 0, "\"ode\"", eval_modes,
     "held-out evaluations: ode (the policy samples every step), or hybrid (the policy samples "
     "the first hybrid_steps, the base model the rest: the paper's hybrid evaluation)"},
    F(hybrid_steps, CONFIG_INT, 0, EXPERIMENT_MAX_STEPS, "0",
      "hybrid: transitions sampled by the policy; 0 = 60% of steps (the paper's 30 of 50)"),
    F(checkpoint_every, CONFIG_INT, 1, 1000000, "10", "iterations between checkpoints"),
    F(keep_checkpoints, CONFIG_INT, 1, 1000, "2", "checkpoint folders kept"),
    F(batch, CONFIG_INT, 1, 4096, "32", "model batch size for rollouts and training"),
    RUNTIME_CONFIG_FIELDS(GrpoRunConfig),
};
const int grpo_field_count = sizeof grpo_fields / sizeof grpo_fields[0];
#undef F

/* ---- reward_train ---------------------------------------------------------------------------- */

#define F(name, type, lo, hi, def, doc)                                                            \
    {                                                                                              \
#name, type, offsetof(RewardTrainConfig, name), lo, hi, def, NULL, doc                     \
    }
static const char *const learned_rewards[] = {"pref", "clip", NULL};
const char *const reward_degradation_names[REWARD_DEGRADATIONS + 1] = {"noise",  "blur",    "ink",
                                                                       "colour", "missing", NULL};

const ConfigField reward_train_fields[] = {
    {"reward", CONFIG_STRING, offsetof(RewardTrainConfig, reward), 0, 0, "\"pref\"",
     learned_rewards,
     "pref: a pairwise-preference model (Bradley-Terry) trained on a clean rendering of a caption "
     "against a degraded one, the analogue of HPS / PickScore; its score is the grpo reward "
     "component pref. clip: a contrastive image-text model (InfoNCE over each batch's "
     "captions), its score the cosine of an image's and a caption's embedding, the component "
     "clip"},
    {"preset", CONFIG_STRING, offsetof(RewardTrainConfig, preset), 0, 0, "\"small\"", presets,
     "model size (spec/model.md): the diffusion transformer read at t = 0 as a scorer, its "
     "score the mean of its output"},
    F(dim, CONFIG_INT, 0, 4096, "64",
      "hidden width; 0 = the preset's (a scorer needs less "
      "than a generator: 64 trains in minutes on 2 cores)"),
    F(depth, CONFIG_INT, 0, 64, "2", "transformer blocks; 0 = the preset's"),
    F(heads, CONFIG_INT, 0, 64, "0", "attention heads; 0 = the preset's"),
    F(mlp_ratio, CONFIG_INT, 0, 16, "0", "MLP width / dim; 0 = the preset's"),
    {"degradations", CONFIG_STRING, offsetof(RewardTrainConfig, degradations), 0, 0,
     "\"noise,blur,ink,colour,missing\"", NULL,
     "what the rejected image of a pair suffers, one drawn per pair from this comma-separated "
     "list: noise (Gaussian), blur, ink (stray strokes of a palette colour), colour (an object "
     "in another colour than its caption says), missing (an object of a two-object scene left "
     "out; a colour change for single objects). pref only"},
    F(seed, CONFIG_INT64, 0, 9007199254740991.0, "1", "seeds weights, scenes and degradations"),
    F(steps, CONFIG_INT, 1, 100000000, "1500", "optimizer steps"),
    F(batch_size, CONFIG_INT, 1, 2048, "32", "preference pairs per step (two images each)"),
    F(warmup_steps, CONFIG_INT, 0, 1000000, "100", "linear learning-rate warm-up"),
    F(lr, CONFIG_FLOAT, 0, 1, "1e-3", "peak learning rate"),
    F(min_lr_ratio, CONFIG_FLOAT, 0, 1, "0.05", "cosine decay ends at lr * min_lr_ratio"),
    F(beta1, CONFIG_FLOAT, 0, 0.999999, "0.9", "AdamW first-moment decay"),
    F(beta2, CONFIG_FLOAT, 0, 0.999999, "0.99", "AdamW second-moment decay"),
    F(eps, CONFIG_FLOAT, 0, 1, "1e-8", "AdamW epsilon"),
    F(weight_decay, CONFIG_FLOAT, 0, 1, "0.01", "decoupled weight decay"),
    F(grad_clip, CONFIG_FLOAT, 0, 1e9, "1.0", "global gradient-norm clip; 0 disables"),
    F(temperature, CONFIG_FLOAT, 0.001, 10, "0.1",
      "clip: the InfoNCE logits are cosines over this (CLIP learns it from 0.07)"),
    F(eval_every, CONFIG_INT, 0, 1000000, "250",
      "steps between evaluations on held-out pairs (captions pretraining never showed); 0 = end "
      "only"),
    F(eval_pairs, CONFIG_INT, 1, 100000, "500",
      "held-out pairs scored at each evaluation (the same pairs every time): pref's accuracy "
      "overall and per degradation; clip's how often an image's own caption is the most similar "
      "of its batch's (of batch_size)"),
    F(log_every, CONFIG_INT, 1, 1000000, "10", "steps per metrics line"),
    F(checkpoint_every, CONFIG_INT, 1, 1000000, "250", "steps between checkpoints"),
    F(keep_checkpoints, CONFIG_INT, 1, 1000, "2", "checkpoint folders kept"),
    RUNTIME_CONFIG_FIELDS(RewardTrainConfig),
};
const int reward_train_field_count = sizeof reward_train_fields / sizeof reward_train_fields[0];
#undef F

/* ---- profile ------------------------------------------------------------------------------- */

#define F(name, type, lo, hi, def, doc)                                                            \
    {                                                                                              \
#name, type, offsetof(ProfileConfig, name), lo, hi, def, NULL, doc                         \
    }
static const char *const profile_prompt_sets[] = {"train", "heldout", NULL};

const ConfigField profile_fields[] = {
    {"model", CONFIG_STRING, offsetof(ProfileConfig, model), 0, 0,
     "\"models/shapes-small.safetensors\"", NULL, "the checkpoint to profile"},
    {"prompts", CONFIG_STRING, offsetof(ProfileConfig, prompts), 0, 0, "\"train\"",
     profile_prompt_sets, "prompt set (docs/prompts.md)"},
    F(num_prompts, CONFIG_INT, 1, 100000, "64", "prompts profiled (the first N of the set)"),
    F(seeds, CONFIG_INT, 1, 64, "2", "SDE rollouts per prompt"),
    F(steps, CONFIG_INT, 2, EXPERIMENT_MAX_STEPS, "17", "sampling steps (paper 17)"),
    F(shift, CONFIG_FLOAT, 0.01, 100, "3", "schedule shift (paper 3)"),
    F(eta, CONFIG_FLOAT, 0.001, 10, "0.7", "SDE noise strength (paper 0.7; cps: at most 1)"),
    {"sde", CONFIG_STRING, offsetof(ProfileConfig, sde), 0, 0, "\"flow\"", sde_kinds,
     "SDE kind of the rollouts"},
    F(chunk_count, CONFIG_INT, 1, EXPERIMENT_MAX_STEPS, "4",
      "K of the proposed chunking (paper 4)"),
    F(max_chunks, CONFIG_INT, 1, EXPERIMENT_MAX_STEPS, "6", "also propose every K up to this"),
    F(seed, CONFIG_INT64, 0, 9007199254740991.0, "0", "rollout noise"),
    F(batch, CONFIG_INT, 1, 4096, "32", "model batch size"),
    RUNTIME_CONFIG_FIELDS(ProfileConfig),
};
const int profile_field_count = sizeof profile_fields / sizeof profile_fields[0];
#undef F

/* ---- checks across fields ------------------------------------------------------------------ */

int chunk_spec_parse(const char *spec, int trainable, ChunkSpec *out, char *err, size_t errlen)
{
    out->count = 0;
    if (strcmp(spec, "auto") == 0 || strcmp(spec, "dynamic") == 0) {
        out->kind = spec[0] == 'a' ? CHUNK_SPEC_AUTO : CHUNK_SPEC_DYNAMIC;
        return 0;
    }
    if (strncmp(spec, "uniform:", 8) == 0) {
        char *end;
        long k = strtol(spec + 8, &end, 10);
        if (*end || k < 1 || k > trainable) {
            snprintf(err, errlen, "config.chunks: \"%s\": K must be 1..%d", spec, trainable);
            return -1;
        }
        out->kind = CHUNK_SPEC_UNIFORM;
        out->count = (int)k;
        return 0;
    }
    out->kind = CHUNK_SPEC_SIZES;
    long sum = 0;
    const char *p = spec;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > EXPERIMENT_MAX_STEPS || out->count == EXPERIMENT_MAX_STEPS ||
            (*end && *end != ','))
            break;
        out->size[out->count++] = (int)v;
        sum += v;
        p = *end ? end + 1 : end;
    }
    if (*p || out->count == 0) {
        snprintf(err, errlen,
                 "config.chunks: \"%s\" is not sizes like \"2,3,4,7\", \"uniform:K\", \"auto\" or "
                 "\"dynamic\"",
                 spec);
        return -1;
    }
    if (sum != trainable) {
        snprintf(err, errlen,
                 "config.chunks: chunk sizes sum to %ld, but there are %d trainable steps", sum,
                 trainable);
        return -1;
    }
    return 0;
}

/* cps's eta is the fraction of a quarter turn from the predicted noise to fresh noise, so it
 * cannot pass 1; flow and dance take any eta the field's range allows. */
static int sde_eta_check(const char *sde, double eta, char *err, size_t errlen)
{
    if (strcmp(sde, "cps") == 0 && eta > 1.0) {
        snprintf(err, errlen,
                 "config.eta: %g, but the cps SDE takes eta in (0, 1] (1: all of the predicted "
                 "noise replaced by fresh noise)",
                 eta);
        return -1;
    }
    return 0;
}

/* A reward server is named by an http(s) URL. */
static int remote_url_check(const RemoteSettings *r, char *err, size_t errlen)
{
    if (r->url[0] && strncmp(r->url, "http://", 7) != 0 && strncmp(r->url, "https://", 8) != 0) {
        snprintf(err, errlen, "config.remote_url: \"%s\" is not an http:// or https:// URL",
                 r->url);
        return -1;
    }
    return 0;
}

static int eval_check(const void *cfg, char *err, size_t errlen)
{
    const EvalConfig *c = cfg;
    if (sde_eta_check(c->sde, c->eta, err, errlen) || remote_url_check(&c->remote, err, errlen))
        return -1;
    if (strcmp(c->mode, "hybrid") == 0 && !c->base_model[0]) {
        snprintf(err, errlen, "config.base_model: hybrid evaluation needs the base checkpoint");
        return -1;
    }
    return 0;
}

/* The weights field (rewards or chunk_rewards) that weighs component k, or NULL. */
static const char *weighing_field(const GrpoRunConfig *c, int k)
{
    if (c->rewards.w[k] != 0) return "rewards";
    for (int i = 0; i < c->chunk_rewards.count; i++)
        if (c->chunk_rewards.item[i].w[k] != 0) return "chunk_rewards";
    return NULL;
}

/* A remote weight needs a server to ask, a pref or clip weight a model to score with. */
static int grpo_reward_sources_check(const GrpoRunConfig *c, char *err, size_t errlen)
{
    if (remote_url_check(&c->remote, err, errlen)) return -1;
    const char *field;
    if (!c->remote.url[0] && (field = weighing_field(c, EXPERIMENT_REWARD_REMOTE))) {
        snprintf(err, errlen,
                 "config.%s: weighs the remote reward, but config.remote_url names no reward "
                 "server",
                 field);
        return -1;
    }
    for (int k = 0; k < EXPERIMENT_LEARNED; k++)
        if (!c->learned_model[k][0] && (field = weighing_field(c, EXPERIMENT_REWARD_PREF + k))) {
            snprintf(err, errlen,
                     "config.%s: weighs the %s reward, but config.%s_model names no %s model",
                     field, experiment_learned_names[k], experiment_learned_names[k],
                     k == 0 ? "preference" : "contrastive");
            return -1;
        }
    return 0;
}

/* Chunk-GRPO splits the steps - 1 trainable transitions; step-level grpo ignores chunks (its
 * chunks are the steps). chunk_rewards, when given, has one entry per chunk. */
static int grpo_check(const void *cfg, char *err, size_t errlen)
{
    const GrpoRunConfig *c = cfg;
    int trainable = c->steps - 1, chunks = trainable;
    if (sde_eta_check(c->sde, c->eta, err, errlen)) return -1;
    if (strcmp(c->method, "chunk_grpo") == 0) {
        ChunkSpec spec;
        if (chunk_spec_parse(c->chunks, trainable, &spec, err, errlen)) return -1;
        int profiled = spec.kind == CHUNK_SPEC_AUTO || spec.kind == CHUNK_SPEC_DYNAMIC;
        if (profiled && c->chunk_count > trainable) {
            snprintf(err, errlen, "config.chunk_count: at most steps - 1 = %d chunks", trainable);
            return -1;
        }
        chunks = profiled ? c->chunk_count : spec.count;
    }
    if (c->train_leading > chunks) {
        snprintf(err, errlen, "config.train_leading: %d, but the run has only %d %s",
                 c->train_leading, chunks,
                 strcmp(c->method, "grpo") == 0 ? "steps (step level)" : "chunks");
        return -1;
    }
    if (grpo_reward_sources_check(c, err, errlen)) return -1;
    if (c->chunk_rewards.count && c->chunk_rewards.count != chunks) {
        snprintf(err, errlen,
                 "config.chunk_rewards: %d entries, but the run trains %d %s (one reward each, "
                 "high noise first)",
                 c->chunk_rewards.count, chunks,
                 strcmp(c->method, "grpo") == 0 ? "steps (step level)" : "chunks");
        return -1;
    }
    return 0;
}

/* Every name of config.degradations is a degradation, and at least one is given. */
int reward_degradations_parse(const char *list, int *kinds, char *err, size_t errlen)
{
    char buf[CONFIG_STRING_MAX];
    snprintf(buf, sizeof buf, "%s", list);
    int named[REWARD_DEGRADATIONS] = {0}, count = 0;
    for (char *save = NULL, *name = strtok_r(buf, ",", &save); name;
         name = strtok_r(NULL, ",", &save)) {
        while (*name == ' ') name++;
        int k = 0;
        while (k < REWARD_DEGRADATIONS && strcmp(name, reward_degradation_names[k]) != 0) k++;
        if (k == REWARD_DEGRADATIONS) {
            snprintf(err, errlen,
                     "config.degradations: \"%s\" is not one of noise, blur, ink, colour, missing",
                     name);
            return -1;
        }
        named[k] = 1;
    }
    for (int k = 0; k < REWARD_DEGRADATIONS; k++)
        if (named[k]) kinds[count++] = k;
    if (!count)
        snprintf(err, errlen,
                 "config.degradations: name at least one of noise, blur, ink, colour, missing");
    return count ? count : -1;
}

static int reward_train_check(const void *cfg, char *err, size_t errlen)
{
    int kinds[REWARD_DEGRADATIONS];
    return reward_degradations_parse(((const RewardTrainConfig *)cfg)->degradations, kinds, err,
                                     errlen) < 0
               ? -1
               : 0;
}

static int profile_check(const void *cfg, char *err, size_t errlen)
{
    const ProfileConfig *c = cfg;
    int trainable = c->steps - 1;
    if (sde_eta_check(c->sde, c->eta, err, errlen)) return -1;
    if (c->chunk_count > trainable || c->max_chunks > trainable) {
        snprintf(err, errlen, "config.%s: at most steps - 1 = %d chunks",
                 c->chunk_count > trainable ? "chunk_count" : "max_chunks", trainable);
        return -1;
    }
    return 0;
}

/* ---- the registry -------------------------------------------------------------------------- */

#define COUNT(a) ((int)(sizeof(a) / sizeof(a)[0]))

const ExperimentKind experiment_kinds[] = {
    {"pretrain", pretrain_fields, COUNT(pretrain_fields), sizeof(PretrainConfig),
     "flow-matching training of a base model on the shapes world", NULL, "step", "steps"},
    {"eval", eval_fields, COUNT(eval_fields), sizeof(EvalConfig),
     "scores a checkpoint on fixed prompts and seeds: ODE mean align, SDE within-group spread",
     eval_check, "iteration", NULL},
    {"grpo", grpo_fields, COUNT(grpo_fields), sizeof(GrpoRunConfig),
     "RL fine-tuning of a base model by step-level GRPO or Chunk-GRPO on weighted rewards",
     grpo_check, "iteration", "iterations"},
    {"reward_train", reward_train_fields, COUNT(reward_train_fields), sizeof(RewardTrainConfig),
     "a learned reward model: pref (Bradley-Terry on clean against degraded renderings) or clip "
     "(contrastive image-text)",
     reward_train_check, "step", "steps"},
    {"profile", profile_fields, COUNT(profile_fields), sizeof(ProfileConfig),
     "the relative-L1 dynamics of a model's sampling steps and the chunkings they suggest",
     profile_check, "iteration", NULL},
};
const int experiment_kind_count = COUNT(experiment_kinds);

const ExperimentKind *experiment_kind_find(const char *name)
{
    for (int i = 0; name && i < experiment_kind_count; i++)
        if (strcmp(experiment_kinds[i].name, name) == 0) return &experiment_kinds[i];
    return NULL;
}

const ExperimentKind *experiment_kind_of(const json_t *obj, char *err, size_t errlen)
{
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "config: expected a JSON object, got %s", json_type_name(obj));
        return NULL;
    }
    const json_t *v = json_object_get(obj, "kind");
    const ExperimentKind *k = experiment_kind_find(json_string_value(v));
    if (k) return k;
    int n;
    if (!v)
        n = snprintf(err, errlen, "config.kind: missing; expected one of");
    else if (json_is_string(v))
        n = snprintf(err, errlen, "config.kind: \"%.40s\" is not one of", json_string_value(v));
    else
        n = snprintf(err, errlen, "config.kind: %s is not one of", json_type_name(v));
    for (int i = 0; i < experiment_kind_count && n >= 0 && (size_t)n < errlen; i++)
        n += snprintf(err + n, errlen - (size_t)n, " \"%s\"", experiment_kinds[i].name);
    return NULL;
}

int experiment_config_parse(const ExperimentKind *k, const json_t *obj, void *out, char *err,
                            size_t errlen)
{
    if (config_parse(obj, k->name, k->fields, k->field_count, out, err, errlen)) return -1;
    return k->check ? k->check(out, err, errlen) : 0;
}

int experiment_config_validate(const json_t *obj, char *err, size_t errlen)
{
    const ExperimentKind *k = experiment_kind_of(obj, err, errlen);
    if (!k) return -1;
    void *scratch = malloc(k->config_size);
    if (!scratch) {
        snprintf(err, errlen, "config: out of memory");
        return -1;
    }
    int rc = experiment_config_parse(k, obj, scratch, err, errlen);
    free(scratch);
    return rc;
}

/* ---- the JSON Schema ----------------------------------------------------------------------- */

/* json_object_set_new that remembers a failure (out of memory) in *bad. */
static void put(json_t *o, const char *key, json_t *v, int *bad)
{
    if (json_object_set_new(o, key, v)) *bad = 1;
}

static json_t *field_schema(const ConfigField *f, int *bad)
{
    static const char *const types[] = {
        [CONFIG_INT] = "integer",       [CONFIG_INT64] = "integer", [CONFIG_FLOAT] = "number",
        [CONFIG_BOOL] = "boolean",      [CONFIG_STRING] = "string", [CONFIG_WEIGHTS] = "object",
        [CONFIG_WEIGHTS_LIST] = "array"};
    json_t *s = json_object();
    put(s, "type", json_string(types[f->type]), bad);
    if (f->type == CONFIG_WEIGHTS || f->type == CONFIG_WEIGHTS_LIST) {
        json_t *w = json_object(), *names = json_array();
        for (const char *const *c = f->choices; *c; c++)
            if (json_array_append_new(names, json_string(*c))) *bad = 1;
        put(w, "type", json_string("object"), bad);
        put(w, "propertyNames", json_pack("{s:o}", "enum", names), bad);
        put(w, "additionalProperties",
            json_pack("{s:s,s:f,s:f}", "type", "number", "minimum", f->lo, "maximum", f->hi), bad);
        put(w, "minProperties", json_integer(1), bad);
        if (f->type == CONFIG_WEIGHTS) {
            json_decref(s);
            s = w;
        } else {
            put(s, "items", w, bad);
            put(s, "maxItems", json_integer(CONFIG_LIST_MAX), bad);
        }
    }
    if (f->type == CONFIG_INT || f->type == CONFIG_INT64) {
        put(s, "minimum", json_integer((json_int_t)f->lo), bad);
        put(s, "maximum", json_integer((json_int_t)f->hi), bad);
    } else if (f->type == CONFIG_FLOAT) {
        put(s, "minimum", json_real(f->lo), bad);
        put(s, "maximum", json_real(f->hi), bad);
    } else if (f->type == CONFIG_STRING) {
        /* config_parse counts bytes; the schema counts characters, the same for ASCII */
        put(s, "maxLength", json_integer(CONFIG_STRING_MAX - 1), bad);
        if (f->choices) {
            json_t *e = json_array();
            for (const char *const *c = f->choices; *c; c++)
                if (json_array_append_new(e, json_string(*c))) *bad = 1;
            put(s, "enum", e, bad);
        }
    }
    put(s, "default", json_loads(f->def, JSON_DECODE_ANY, NULL), bad);
    put(s, "description", json_string(f->doc), bad);
    return s;
}

static json_t *kind_schema(const ExperimentKind *k, int *bad)
{
    json_t *s = json_object(), *props = json_object(), *kind = json_object();
    put(s, "title", json_string(k->name), bad);
    put(s, "description", json_string(k->description), bad);
    put(s, "type", json_string("object"), bad);
    put(kind, "const", json_string(k->name), bad);
    put(props, "kind", kind, bad);
    for (int i = 0; i < k->field_count; i++)
        put(props, k->fields[i].name, field_schema(&k->fields[i], bad), bad);
    put(s, "properties", props, bad);
    put(s, "required", json_pack("[s]", "kind"), bad);
    put(s, "additionalProperties", json_false(), bad);
    return s;
}

char *experiment_schema_json(void)
{
    int bad = 0;
    json_t *root = json_object(), *names = json_array(), *kinds = json_array();
    for (int i = 0; i < experiment_kind_count; i++) {
        if (json_array_append_new(names, json_string(experiment_kinds[i].name))) bad = 1;
        if (json_array_append_new(kinds, kind_schema(&experiment_kinds[i], &bad))) bad = 1;
    }
    put(root, "$schema", json_string("https://json-schema.org/draft/2020-12/schema"), &bad);
    put(root, "$comment",
        json_string("generated from the tables of common/experiment.c by `chunkgrpo-worker "
                    "schema`; do not edit"),
        &bad);
    put(root, "title", json_string("chunkgrpo experiment config"), &bad);
    put(root, "description",
        json_string("The config of an experiment (chunkgrpo-worker run CONFIG.json). Checks "
                    "across fields (a grpo config's chunks against its steps, a hybrid "
                    "evaluation's base_model) are experiment_config_validate's, not the "
                    "schema's."),
        &bad);
    put(root, "type", json_string("object"), &bad);
    put(root, "required", json_pack("[s]", "kind"), &bad);
    put(root, "properties",
        json_pack("{s:{s:s,s:o}}", "kind", "description", "the experiment kind", "enum", names),
        &bad);
    put(root, "oneOf", kinds, &bad);
    /* 15 significant digits print every bound and default of the tables as written (each has
     * fewer) and read back exactly; jansson's 17 would print 3e-4 as 0.00029999999999999997 */
    char *text = bad ? NULL : json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(15));
    json_decref(root);
    char *out = NULL;
    if (text && asprintf(&out, "%s\n", text) < 0) out = NULL;
    free(text);
    return out;
}
