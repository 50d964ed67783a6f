/*
 * profile.c: the temporal-dynamics profile runner. See profile.h.
 */
#include "runners/profile.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "chart.h"
#include "checkpoint.h"
#include "grpo.h"
#include "ops.h"
#include "runners/runner_util.h"
#include "sampler.h"
#include "tokenizer.h"
#include "world/shapes.h"

static json_t *float_array(const float *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_real(v[i]));
    return a;
}

static json_t *sizes_json(const Chunking *ch)
{
    json_t *a = json_array();
    for (int i = 0; i < ch->count; i++) json_array_append_new(a, json_integer(ch->size[i]));
    return a;
}

int profile_run(const ProfileConfig *c, const char *out, char *err, size_t errlen)
{
    engine_set_threads(c->threads ? c->threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
    int trainable = c->steps - 1;
    if (make_dirs(out, err, errlen)) return -1;
    Model m;
    Vocab vocab;
    if (checkpoint_load(c->model, &m, &vocab, NULL, err, errlen)) return -1;
    const ModelConfig *mc = &m.cfg;
    int np;
    const char *const *prompts =
        world_prompts(strcmp(c->prompts, "heldout") == 0 ? PROMPTS_HELDOUT : PROMPTS_TRAIN, &np);
    if (c->num_prompts < np) np = c->num_prompts;
    int n = np * c->seeds, T = mc->text_len, batch = c->batch < n ? c->batch : n;
    SamplerConfig sc;
    sampler_settings(&sc, SAMPLER_SDE, c->steps, c->shift, c->eta, c->sde);
    Policy *pol = policy_for_config(c->backend, c->precision, &m, NULL, batch, err, errlen);
    PolicySampler *s = pol ? policy_sampler_new(pol, &sc, n, err, errlen) : NULL;
    Trajectory *tr = trajectory_new(mc, n, c->steps);
    int32_t *tokens = malloc((size_t)n * T * sizeof *tokens);
    float *curves = malloc((size_t)n * trainable * sizeof *curves);
    float *mean = calloc((size_t)trainable, sizeof *mean),
          *sd = calloc((size_t)trainable, sizeof *sd);
    float *lo = malloc((size_t)trainable * sizeof *lo),
          *hi = malloc((size_t)trainable * sizeof *hi);
    float *prompt_sd = calloc((size_t)trainable, sizeof *prompt_sd);
    json_t *report = NULL;
    int rc = -1;
    if (!s || !tr || !tokens || !curves || !mean || !sd || !lo || !hi || !prompt_sd) {
        if (s) snprintf(err, errlen, "out of memory for %d rollouts", n);
        goto done;
    }
    for (int i = 0; i < n; i++) tokenize(&vocab, prompts[i % np], T, tokens + i * T);
    Rng rng;
    rng_seed(&rng, (uint64_t)c->seed);
    if (policy_sample(s, tokens, &rng, tr, 1, err, errlen)) goto done;
    for (int b = 0; b < n; b++) trajectory_l1rel(tr, b, trainable, curves + (size_t)b * trainable);
    for (int i = 0; i < trainable; i++) {
        double sum = 0, sq = 0;
        for (int b = 0; b < n; b++) sum += curves[b * trainable + i];
        mean[i] = (float)(sum / n);
        for (int b = 0; b < n; b++) sq += pow(curves[b * trainable + i] - mean[i], 2);
        sd[i] = (float)sqrt(sq / (n > 1 ? n - 1 : 1));
        lo[i] = mean[i] - sd[i], hi[i] = mean[i] + sd[i];
        /* spread across prompts: the std of the per-prompt means (rollouts p, p+np, ...) */
        double pm_sum = 0, pm_sq = 0;
        for (int p = 0; p < np; p++) {
            double pm = 0;
            for (int k = 0; k < c->seeds; k++) pm += curves[(k * np + p) * trainable + i];
            pm /= c->seeds;
            pm_sum += pm, pm_sq += pm * pm;
        }
        double pmean = pm_sum / np;
        prompt_sd[i] = (float)sqrt(fmax(0, pm_sq / np - pmean * pmean));
    }
    report = json_object();
    json_object_set_new(report, "model", json_string(c->model));
    json_object_set_new(report, "rollouts", json_integer(n));
    json_object_set_new(report, "prompts", json_integer(np));
    json_object_set_new(report, "l1rel_mean", float_array(mean, trainable));
    json_object_set_new(report, "l1rel_std", float_array(sd, trainable));
    json_object_set_new(report, "l1rel_std_across_prompts", float_array(prompt_sd, trainable));
    json_t *proposals = json_object();
    Chunking chosen;
    for (int k = 1; k <= c->max_chunks || k <= c->chunk_count; k++) {
        Chunking ch;
        if (chunking_optimal(mean, trainable, k, &ch, err, errlen)) goto done;
        char key[16];
        snprintf(key, sizeof key, "%d", k);
        json_object_set_new(proposals, key, sizes_json(&ch));
        if (k == c->chunk_count) chosen = ch;
    }
    json_object_set_new(report, "proposals", proposals);
    json_object_set_new(report, "chunks", sizes_json(&chosen));
    char path[PATH_BUF + 64];
    snprintf(path, sizeof path, "%s/profile.json", out);
    char *text = json_dumps(report, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
    rc = write_file_atomic(path, text, strlen(text), err, errlen);
    free(text);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/profile.png", out);
        rc = chart_png(path, 640, 320, mean, lo, hi, trainable, chosen.start + 1, chosen.count - 1,
                       err, errlen);
    }
done:
    json_decref(report);
    free(tokens), free(curves), free(mean), free(sd), free(lo), free(hi), free(prompt_sd);
    trajectory_free(tr);
    policy_sampler_free(s);
    policy_free(pol);
    vocab_free(&vocab);
    model_free(&m);
    return rc;
}
