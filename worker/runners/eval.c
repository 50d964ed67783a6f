/*
 * eval.c: the evaluation runner. See eval.h.
 */
#include "runners/eval.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "checkpoint.h"
#include "model.h"
#include "ops.h"
#include "png.h"
#include "rewards/align.h"
#include "rewards/learned.h"
#include "rewards/remote.h"
#include "runners/runner_util.h"
#include "sampler.h"
#include "tokenizer.h"
#include "world/shapes.h"

typedef struct {
    double sum;
    int count;
} Mean;

/* Mean score per requirement kind ("object", "count", ...), in first-seen order. */
typedef struct {
    const char *kind[ALIGN_MAX_REQUIREMENTS + 4];
    Mean mean[ALIGN_MAX_REQUIREMENTS + 4];
    int n;
} KindMeans;

static void kind_add(KindMeans *k, const AlignResult *r)
{
    for (int i = 0; i < r->num_requirements; i++) {
        int j = 0;
        while (j < k->n && strcmp(k->kind[j], r->req[i].kind) != 0) j++;
        if (j == k->n) {
            if (k->n == (int)(sizeof k->kind / sizeof k->kind[0])) continue;
            k->kind[k->n++] = r->req[i].kind;
        }
        k->mean[j].sum += r->req[i].score;
        k->mean[j].count++;
    }
}

static json_t *kind_json(const KindMeans *k)
{
    json_t *o = json_object();
    for (int i = 0; i < k->n; i++)
        json_object_set_new(o, k->kind[i], json_real(k->mean[i].sum / k->mean[i].count));
    return o;
}

/* Means per caption template (docs/prompts.md) of the prompts that parse: where a model gains
 * and where it does not (single objects, counts, two-object scenes) differ widely. */
typedef struct {
    Mean align[TEMPLATE_KINDS];
    double best_sum[TEMPLATE_KINDS]; /* ODE only: each prompt's best seed */
    int prompts[TEMPLATE_KINDS];
} TemplateMeans;

/* The template of a prompt, or -1 when it is outside the grammar. */
static int prompt_template(const char *prompt)
{
    CaptionSpec spec;
    char err[160];
    return world_parse_caption(prompt, &spec, err, sizeof err) ? -1
                                                               : (int)world_caption_template(&spec);
}

/* {"pair": {"align_mean", "prompts", "best_of_seeds_mean" (with_best)}, ...}, the templates
 * present in the pass. */
static json_t *template_json(const TemplateMeans *t, int with_best)
{
    json_t *o = json_object();
    for (int k = 0; k < TEMPLATE_KINDS; k++) {
        if (!t->prompts[k]) continue;
        json_t *e = json_object();
        json_object_set_new(e, "align_mean", json_real(t->align[k].sum / t->align[k].count));
        if (with_best)
            json_object_set_new(e, "best_of_seeds_mean", json_real(t->best_sum[k] / t->prompts[k]));
        json_object_set_new(e, "prompts", json_integer(t->prompts[k]));
        json_object_set_new(o, world_template_names[k], e);
    }
    return o;
}

/* The world's prompt set the config names, all *np of it. */
static const char *const *eval_prompt_set(const EvalConfig *c, int *np)
{
    return world_prompts(strcmp(c->prompts, "train") == 0 ? PROMPTS_TRAIN : PROMPTS_HELDOUT, np);
}

/* The index of item i of n taken evenly through a list of count (n <= count; n == count takes
 * it whole). The world's sets are ordered by template, so the first n would be one or two
 * templates. */
static int spread_index(int count, int i, int n)
{
    return (int)((int64_t)i * count / n);
}

/* Samples tokens [n, T] through the policy with the given sampler settings (the transitions
 * from late_from on through `late`, when set) and scores every final image. */
static int sample_and_score(Policy *pol, Policy *late, int late_from, const SamplerConfig *sc,
                            const int32_t *tokens, const char *const *prompt_of, int n,
                            uint64_t seed, Trajectory **out_tr, AlignResult *results, char *err,
                            size_t errlen)
{
    const ModelConfig *mc = &policy_model(pol)->cfg;
    PolicySampler *s = policy_sampler_new(pol, sc, n, err, errlen);
    Trajectory *tr = trajectory_new(mc, n, sc->steps);
    int rc = -1;
    if (!s || !tr) {
        if (s) snprintf(err, errlen, "out of memory for %d samples", n);
        goto done;
    }
    if (late && policy_sampler_set_late(s, late, late_from, err, errlen)) goto done;
    Rng rng;
    rng_seed(&rng, seed);
    if (policy_sample(s, tokens, &rng, tr, 0, err, errlen)) goto done;
    int failed = 0;
#pragma omp parallel
    {
        AlignWorkspace *ws = align_workspace_new(mc->image_size);
        char e[256];
#pragma omp for schedule(dynamic, 4)
        for (int i = 0; i < n; i++) {
            if (!ws || align_score(ws, prompt_of[i], tr->x0_hat + i * tr->img, mc->image_size,
                                   &results[i], e, sizeof e)) {
#pragma omp atomic write
                failed = 1;
            }
        }
        align_workspace_free(ws);
    }
    if (failed) {
        snprintf(err, errlen, "scoring failed (a prompt outside the shapes grammar, or no memory)");
        goto done;
    }
    rc = 0;
    *out_tr = tr;
    tr = NULL;
done:
    trajectory_free(tr);
    policy_sampler_free(s);
    return rc;
}

/* One line of samples.jsonl; learned [EXPERIMENT_LEARNED] (or NULL) and remote are the learned
 * models' and the reward server's scores, NAN when there is none. */
static void log_sample(FILE *f, const char *pass, const char *prompt, int seed_or_member,
                       const AlignResult *r, const float *learned, float remote)
{
    json_t *o = json_object(), *reqs = json_array();
    json_object_set_new(o, "pass", json_string(pass));
    json_object_set_new(o, "prompt", json_string(prompt));
    json_object_set_new(o, strcmp(pass, "ode") ? "member" : "seed", json_integer(seed_or_member));
    json_object_set_new(o, "align", json_real(r->score));
    for (int i = 0; i < r->num_requirements; i++) {
        json_t *q = json_object();
        json_object_set_new(q, "kind", json_string(r->req[i].kind));
        json_object_set_new(q, "target", json_string(r->req[i].target));
        json_object_set_new(q, "score", json_real(r->req[i].score));
        json_array_append_new(reqs, q);
    }
    json_object_set_new(o, "requirements", reqs);
    for (int k = 0; learned && k < EXPERIMENT_LEARNED; k++)
        if (!isnan(learned[k]))
            json_object_set_new(o, experiment_learned_names[k], json_real(learned[k]));
    if (!isnan(remote)) json_object_set_new(o, "remote", json_real(remote));
    char *line = json_dumps(o, JSON_COMPACT);
    fprintf(f, "%s\n", line);
    free(line);
    json_decref(o);
}

/* The reward server's scores of ODE seed k's np images into scores [np] (NAN for an image it
 * failed on, counted into *errors). */
static int remote_pass(RemoteReward *remote, int k, int np, const char *const *prompts,
                       const Trajectory *tr, const ModelConfig *mc, float *scores, int *errors,
                       char *err, size_t errlen)
{
    char tag[32], what[32];
    snprintf(tag, sizeof tag, "ode-s%d", k);
    snprintf(what, sizeof what, "seed %d", k);
    RemoteScoreStats rs;
    if (remote_reward_score(remote, tag, what, np, prompts, tr->x0_hat, mc->image_size,
                            mc->channels, scores, &rs, err, errlen))
        return -1;
    *errors += rs.item_errors;
    return 0;
}

int eval_hybrid_steps(int hybrid_steps, int steps)
{
    return hybrid_steps ? hybrid_steps : (int)lround(0.6 * steps);
}

int eval_scorers_open(EvalScorers *s, const char learned_model[][CONFIG_STRING_MAX],
                      const RemoteSettings *remote, int batch, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    for (int k = 0; k < EXPERIMENT_LEARNED; k++) {
        char why[1024];
        if (learned_model[k][0] && !(s->learned[k] = learned_open(learned_model[k], (LearnedKind)k,
                                                                  batch, why, sizeof why))) {
            snprintf(err, errlen, "config.%s_model: %s", experiment_learned_names[k], why);
            eval_scorers_close(s);
            return -1;
        }
    }
    if (remote->url[0] && !(s->remote = remote_reward_open(remote, err, errlen))) {
        eval_scorers_close(s);
        return -1;
    }
    return 0;
}

void eval_scorers_close(EvalScorers *s)
{
    for (int k = 0; k < EXPERIMENT_LEARNED; k++) learned_close(s->learned[k]);
    remote_reward_close(s->remote);
    memset(s, 0, sizeof *s);
}

int eval_model(Policy *pol, Policy *base, const Vocab *vocab, const EvalConfig *c,
               const EvalScorers *scorers, const char *const *list, int num_prompts,
               const char *out, json_t *report, char *err, size_t errlen)
{
    int hybrid = strcmp(c->mode, "hybrid") == 0;
    if (hybrid && !base) {
        snprintf(err, errlen, "config.mode: hybrid evaluation needs a base model");
        return -1;
    }
    if (make_dirs(out, err, errlen)) return -1;
    const ModelConfig *mc = &policy_model(pol)->cfg;
    int T = mc->text_len, listed = num_prompts;
    if (!list) list = eval_prompt_set(c, &listed);
    int np = c->max_prompts && c->max_prompts < listed ? c->max_prompts : listed;

    char path[PATH_BUF + 64];
    snprintf(path, sizeof path, "%s/samples.jsonl", out);
    FILE *log = fopen(path, "w");
    int rc = -1;
    int n_ode = np * c->ode_seeds;
    int n_sde = (c->sde_prompts < np ? c->sde_prompts : np) * c->group_size;
    int n_max = n_ode > n_sde ? n_ode : n_sde;
    int32_t *tokens = malloc((size_t)(n_max ? n_max : 1) * T * sizeof *tokens);
    const char **prompt_of = malloc((size_t)(n_max ? n_max : 1) * sizeof *prompt_of);
    const char **prompts = malloc((size_t)(np ? np : 1) * sizeof *prompts); /* the np evaluated */
    AlignResult *res = malloc((size_t)(n_max ? n_max : 1) * sizeof *res);
    double *best = malloc((size_t)(np ? np : 1) * sizeof *best); /* [np] over the ODE seeds */
    int *tpl = malloc((size_t)(np ? np : 1) * sizeof *tpl);      /* [np], -1 outside the grammar */
    float *remote_score = malloc((size_t)(np ? np : 1) * sizeof *remote_score); /* [np] a seed's */
    /* [EXPERIMENT_LEARNED, np] a seed's, learned model by model */
    float *learned_score = malloc((size_t)EXPERIMENT_LEARNED * (np ? np : 1) * sizeof(float));
    LearnedReward *const *learned = scorers->learned;
    RemoteReward *remote = scorers->remote;
    Trajectory *tr = NULL;
    if (!log || !tokens || !prompt_of || !prompts || !res || !best || !tpl || !remote_score ||
        !learned_score) {
        snprintf(err, errlen, "%s: cannot write, or out of memory", path);
        goto done;
    }
    for (int i = 0; i < np; i++) remote_score[i] = NAN;
    for (int i = 0; i < EXPERIMENT_LEARNED * np; i++) learned_score[i] = NAN;
    for (int i = 0; i < np; i++) {
        prompts[i] = list[spread_index(listed, i, np)];
        tpl[i] = prompt_template(prompts[i]);
    }
    json_object_set_new(report, "model", json_string(c->model));
    json_object_set_new(report, "prompt_set", json_string(c->prompts));
    json_object_set_new(report, "world", json_string(WORLD_VERSION));
    json_object_set_new(report, "prompts", json_integer(np));
    json_object_set_new(report, "steps", json_integer(c->steps));
    json_object_set_new(report, "shift", json_real(c->shift));
    json_object_set_new(report, "cfg_scale", json_real(c->cfg_scale));

    SamplerConfig sc; /* kind set per pass below */
    sampler_settings(&sc, SAMPLER_ODE, c->steps, c->shift, c->eta, c->sde);
    sc.guidance = c->cfg_scale != 1.0;
    sc.cfg_scale = (float)c->cfg_scale;

    if (n_ode) { /* seed-major, so seed k is one sampler run over all prompts */
        sc.kind = SAMPLER_ODE;
        KindMeans kinds = {0};
        TemplateMeans by_tpl = {0};
        double sum = 0, remote_sum = 0, learned_sum[EXPERIMENT_LEARNED] = {0};
        int remote_scored = 0, remote_errors = 0;
        for (int i = 0; i < np; i++) best[i] = -INFINITY;
        for (int i = 0; i < np; i++) tokenize(vocab, prompts[i], T, tokens + i * T);
        for (int k = 0; k < c->ode_seeds; k++) {
            if (sample_and_score(pol, hybrid ? base : NULL,
                                 eval_hybrid_steps(c->hybrid_steps, c->steps), &sc, tokens, prompts,
                                 np, (uint64_t)c->seed * 1000 + k, &tr, res, err, errlen))
                goto done;
            for (int m = 0; m < EXPERIMENT_LEARNED; m++)
                if (learned[m] &&
                    learned_score_images(learned[m], prompts, tr->x0_hat, np, mc->image_size,
                                         learned_score + m * np, err, errlen))
                    goto done;
            if (remote && remote_pass(remote, k, np, prompts, tr, mc, remote_score, &remote_errors,
                                      err, errlen))
                goto done;
            for (int i = 0; i < np; i++) {
                if (!isnan(remote_score[i])) remote_sum += remote_score[i], remote_scored++;
                float scored[EXPERIMENT_LEARNED];
                for (int m = 0; m < EXPERIMENT_LEARNED; m++) {
                    scored[m] = learned_score[m * np + i];
                    if (learned[m]) learned_sum[m] += scored[m];
                }
                sum += res[i].score;
                best[i] = fmax(best[i], res[i].score);
                kind_add(&kinds, &res[i]);
                if (tpl[i] >= 0) {
                    by_tpl.align[tpl[i]].sum += res[i].score;
                    by_tpl.align[tpl[i]].count++;
                }
                log_sample(log, "ode", prompts[i], k, &res[i], scored, remote_score[i]);
            }
            if (k == 0 && c->grid_images) {
                snprintf(path, sizeof path, "%s/ode_grid.png", out);
                int g = c->grid_images < np ? c->grid_images : np;
                if (png_write_grid(path, tr->x0_hat, g, mc->image_size, mc->channels, 8, 2, err,
                                   errlen))
                    goto done;
            }
            trajectory_free(tr);
            tr = NULL;
        }
        json_t *o = json_object();
        json_object_set_new(o, "align_mean", json_real(sum / n_ode));
        /* the mean over prompts of each prompt's best seed: what the model already draws for a
         * prompt in one of `seeds` tries, the headroom that RL concentrates the samples on */
        double best_sum = 0;
        for (int i = 0; i < np; i++) {
            best_sum += best[i];
            if (tpl[i] >= 0) {
                by_tpl.best_sum[tpl[i]] += best[i];
                by_tpl.prompts[tpl[i]]++;
            }
        }
        json_object_set_new(o, "best_of_seeds_mean", json_real(best_sum / np));
        json_object_set_new(o, "samples", json_integer(n_ode));
        json_object_set_new(o, "seeds", json_integer(c->ode_seeds));
        json_object_set_new(o, "noise_seed", json_integer((json_int_t)c->seed));
        json_object_set_new(o, "mode", json_string(c->mode));
        if (hybrid) {
            json_object_set_new(o, "hybrid_steps",
                                json_integer(eval_hybrid_steps(c->hybrid_steps, c->steps)));
            json_object_set_new(o, "base_model", json_string(c->base_model));
        }
        json_object_set_new(o, "by_requirement", kind_json(&kinds));
        json_object_set_new(o, "by_template", template_json(&by_tpl, 1));
        for (int m = 0; m < EXPERIMENT_LEARNED; m++) {
            if (!learned[m]) continue;
            char key[64];
            snprintf(key, sizeof key, "%s_model", experiment_learned_names[m]);
            json_object_set_new(o, key, json_string(c->learned_model[m]));
            snprintf(key, sizeof key, "%s_mean", experiment_learned_names[m]);
            json_object_set_new(o, key, json_real(learned_sum[m] / n_ode));
        }
        if (remote) {
            json_object_set_new(o, "remote_reward", json_string(c->remote.reward));
            json_object_set_new(o, "remote_mean", json_real(remote_sum / remote_scored));
            json_object_set_new(o, "remote_samples", json_integer(remote_scored));
            json_object_set_new(o, "remote_item_errors", json_integer(remote_errors));
        }
        json_object_set_new(report, "ode", o);
    }
    if (n_sde) {
        int G = c->group_size, groups = n_sde / G;
        sc.kind = SAMPLER_SDE;
        sc.noise_group = c->same_noise ? G : 0;
        for (int i = 0; i < n_sde; i++) {
            prompt_of[i] = prompts[spread_index(np, i / G, groups)];
            tokenize(vocab, prompt_of[i], T, tokens + i * T);
        }
        if (sample_and_score(pol, NULL, 0, &sc, tokens, prompt_of, n_sde,
                             (uint64_t)c->seed * 1000 + 999, &tr, res, err, errlen))
            goto done;
        double sum = 0, std_sum = 0;
        int tied = 0;
        KindMeans kinds = {0};
        TemplateMeans by_tpl = {0};
        for (int g = 0; g < groups; g++) {
            int t = tpl[spread_index(np, g, groups)]; /* the group's prompt's template */
            double mean = 0, var = 0, lo = 1e9, hi = -1e9;
            for (int j = 0; j < G; j++) {
                const AlignResult *r = &res[g * G + j];
                mean += r->score;
                lo = fmin(lo, r->score), hi = fmax(hi, r->score);
                kind_add(&kinds, r);
                log_sample(log, "sde", prompt_of[g * G], j, r, NULL, NAN);
            }
            mean /= G;
            if (t >= 0) {
                by_tpl.align[t].sum += mean;
                by_tpl.align[t].count++;
                by_tpl.prompts[t]++;
            }
            for (int j = 0; j < G; j++) var += pow(res[g * G + j].score - mean, 2);
            std_sum += sqrt(var / (G - 1)); /* unbiased, as GRPO's advantage uses */
            sum += mean;
            tied += hi - lo < 1e-6;
        }
        snprintf(path, sizeof path, "%s/sde_groups.png", out);
        int rows = groups < 8 ? groups : 8;
        if (png_write_grid(path, tr->x0_hat, rows * G, mc->image_size, mc->channels, G, 2, err,
                           errlen))
            goto done;
        json_t *o = json_object();
        json_object_set_new(o, "align_mean", json_real(sum / groups));
        json_object_set_new(o, "within_group_std", json_real(std_sum / groups));
        json_object_set_new(o, "tied_group_fraction", json_real((double)tied / groups));
        json_object_set_new(o, "groups", json_integer(groups));
        json_object_set_new(o, "group_size", json_integer(G));
        json_object_set_new(o, "sde", json_string(c->sde));
        json_object_set_new(o, "eta", json_real(c->eta));
        json_object_set_new(o, "by_requirement", kind_json(&kinds));
        json_object_set_new(o, "by_template", template_json(&by_tpl, 0));
        json_object_set_new(report, "sde", o);
    }
    snprintf(path, sizeof path, "%s/eval.json", out);
    char *text = json_dumps(report, JSON_INDENT(2));
    rc = write_file_atomic(path, text, strlen(text), err, errlen);
    free(text);
done:
    if (log) fclose(log);
    trajectory_free(tr);
    free(tokens);
    free(prompt_of);
    free(prompts);
    free(res);
    free(best);
    free(tpl);
    free(remote_score), free(learned_score);
    return rc;
}

int eval_run(const EvalConfig *c, const char *out, char *err, size_t errlen)
{
    engine_set_threads(c->threads ? c->threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
    Model m;
    Vocab vocab;
    if (checkpoint_load(c->model, &m, &vocab, NULL, err, errlen)) return -1;
    /* no larger than the largest sampler run: the CPU sampler pads a short batch */
    int np;
    eval_prompt_set(c, &np);
    int n_sde = (c->sde_prompts < np ? c->sde_prompts : np) * c->group_size;
    int rows = np > n_sde ? np : n_sde, batch = c->batch < rows ? c->batch : rows;
    if (batch < 1) batch = 1;
    int hybrid = strcmp(c->mode, "hybrid") == 0, rc = -1;
    Model base;
    Vocab base_vocab;
    Policy *pol = NULL, *base_pol = NULL;
    memset(&base, 0, sizeof base), memset(&base_vocab, 0, sizeof base_vocab);
    if (hybrid && checkpoint_load(c->base_model, &base, &base_vocab, NULL, err, errlen)) goto done;
    if (hybrid && base.num_params != m.num_params) {
        snprintf(err, errlen, "config.base_model: %s is not the size of config.model",
                 c->base_model);
        goto done;
    }
    if (!(pol = policy_for_config(c->backend, c->precision, &m, NULL, batch, err, errlen)) ||
        (hybrid && !(base_pol = policy_for_config(c->backend, c->precision, &base, NULL, batch, err,
                                                  errlen))))
        goto done;
    EvalScorers scorers;
    if (eval_scorers_open(&scorers, c->learned_model, &c->remote, batch, err, errlen)) goto done;
    json_t *report = json_object();
    rc = eval_model(pol, base_pol, &vocab, c, &scorers, NULL, 0, out, report, err, errlen);
    json_decref(report);
    eval_scorers_close(&scorers);
done:
    policy_free(base_pol);
    policy_free(pol);
    if (hybrid) vocab_free(&base_vocab), model_free(&base);
    vocab_free(&vocab);
    model_free(&m);
    return rc;
}
