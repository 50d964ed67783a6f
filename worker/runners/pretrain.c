/*
 * pretrain.c: the flow-matching pretraining runner. See pretrain.h.
 */
#include "pretrain.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "adamw.h"
#include "backend.h"
#include "checkpoint.h"
#include "model.h"
#include "ops.h"
#include "png.h"
#include "rng.h"
#include "runner_util.h"
#include "sampler.h"
#include "tokenizer.h"
#include "world/shapes.h"

/* Linear warm-up to lr, then cosine decay to lr * min_lr_ratio at the last step. */
static double lr_at(const PretrainConfig *c, int step)
{
    return warmup_cosine_lr(c->lr, c->warmup_steps, c->steps, c->min_lr_ratio, step);
}

/* Everything a run holds; one allocation set, made before the first step. */
typedef struct {
    Model model;
    Vocab vocab;
    AdamW opt;
    Rng rng;
    Policy *pol;                  /* the model on the configured backend, for the training passes */
    float *ema;                   /* [num_params] or NULL */
    float *x0, *x1, *xt, *v, *dv; /* [B, S, S, C] */
    float *t, *u, *n;             /* [B] */
    int32_t *tokens;              /* [B, T] */
    /* sample grids: held-out prompts, ODE, fixed noise */
    Sampler *sampler;
    Activations *sample_acts;
    Trajectory *samples;
    int32_t *sample_tokens; /* [sample prompts, T] */
} Run;

static void run_free(Run *r)
{
    sampler_free(r->sampler);
    acts_free(r->sample_acts);
    trajectory_free(r->samples);
    free(r->sample_tokens);
    policy_free(r->pol);
    adamw_free(&r->opt);
    free(r->ema);
    free(r->x0), free(r->x1), free(r->xt), free(r->v), free(r->dv);
    free(r->t), free(r->u), free(r->n), free(r->tokens);
    vocab_free(&r->vocab);
    model_free(&r->model);
}

static int same_vocab(const Vocab *a, const Vocab *b)
{
    if (a->size != b->size) return 0;
    for (int i = 0; i < a->size; i++)
        if (strcmp(a->words[i], b->words[i]) != 0) return 0;
    return 1;
}

/* Builds the model (fresh or from cfg->init), optimizer and buffers. */
static int run_setup(Run *r, const PretrainConfig *c, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    int nwords;
    const char *const *words = world_vocab(&nwords);
    if (vocab_from_words(&r->vocab, words, nwords, err, errlen)) return -1;
    if (c->init[0]) {
        Vocab init_vocab;
        if (checkpoint_load(c->init, &r->model, &init_vocab, NULL, err, errlen)) return -1;
        int same = same_vocab(&init_vocab, &r->vocab);
        vocab_free(&init_vocab);
        if (!same) {
            snprintf(err, errlen, "config.init: %s has a vocabulary other than the world's (%s)",
                     c->init, WORLD_VERSION);
            return -1;
        }
    } else {
        ModelConfig mc;
        if (model_config_for(c->preset, c->dim, c->depth, c->heads, c->mlp_ratio, nwords, &mc, err,
                             errlen))
            return -1;
        if (model_init(&r->model, &mc)) goto oom;
        model_init_weights(&r->model, (uint64_t)c->seed);
    }
    const ModelConfig *mc = &r->model.cfg;
    AdamWConfig oc = {.lr = (float)c->lr,
                      .beta1 = (float)c->beta1,
                      .beta2 = (float)c->beta2,
                      .eps = (float)c->eps,
                      .weight_decay = (float)c->weight_decay,
                      .grad_clip = (float)c->grad_clip};
    if (adamw_init(&r->opt, &oc, r->model.num_params)) goto oom;
    /* the data and noise stream; the weights used the seed itself */
    rng_seed(&r->rng, (uint64_t)c->seed ^ 0x5eedda7a5eedda7aull);
    size_t B = (size_t)c->batch_size, img = cfg_image_numel(mc);
    if (!(r->pol = policy_for_config(c->backend, c->precision, &r->model, NULL, c->batch_size, err,
                                     errlen)))
        return -1;
    if (c->ema_decay > 0) {
        r->ema = malloc(r->model.num_params * sizeof(float));
        if (r->ema) memcpy(r->ema, r->model.params, r->model.num_params * sizeof(float));
    }
    r->x0 = malloc(B * img * sizeof(float));
    r->x1 = malloc(B * img * sizeof(float));
    r->xt = malloc(B * img * sizeof(float));
    r->v = malloc(B * img * sizeof(float));
    r->dv = malloc(B * img * sizeof(float));
    r->t = malloc(B * sizeof(float));
    r->u = malloc(B * sizeof(float));
    r->n = malloc(B * sizeof(float));
    r->tokens = malloc(B * mc->text_len * sizeof(int32_t));
    if ((c->ema_decay > 0 && !r->ema) || !r->x0 || !r->x1 || !r->xt || !r->v || !r->dv || !r->t ||
        !r->u || !r->n || !r->tokens)
        goto oom;
    if (c->sample_every > 0) {
        int np, n = c->sample_prompts;
        const char *const *prompts = world_prompts(PROMPTS_HELDOUT, &np);
        if (n > np) n = np;
        SamplerConfig sc;
        sampler_config_default(&sc);
        sc.kind = SAMPLER_ODE;
        sc.steps = c->sample_steps;
        sc.shift = (float)c->sample_shift;
        if (!(r->sampler = sampler_new(mc, &sc, n, n, err, errlen))) return -1;
        r->sample_acts = acts_new(mc, n);
        r->samples = trajectory_new(mc, n, sc.steps);
        r->sample_tokens = malloc((size_t)n * mc->text_len * sizeof(int32_t));
        if (!r->sample_acts || !r->samples || !r->sample_tokens) goto oom;
        for (int i = 0; i < n; i++)
            tokenize(&r->vocab, prompts[i], mc->text_len, r->sample_tokens + i * mc->text_len);
    }
    return 0;
oom:
    snprintf(err, errlen, "out of memory for the model and a batch of %d", c->batch_size);
    return -1;
}

/* One optimizer step at `step`; returns the batch's loss and sets *grad_norm. */
static double train_step(Run *r, const PretrainConfig *c, int step, double *grad_norm)
{
    const ModelConfig *mc = &r->model.cfg;
    int B = c->batch_size, T = mc->text_len, S = mc->image_size;
    size_t img = cfg_image_numel(mc), total = (size_t)B * img;

    rng_uniform(&r->rng, r->u, (size_t)B); /* prompt dropout */
    rng_normal(&r->rng, r->n, (size_t)B);  /* logit-normal t */
    rng_normal(&r->rng, r->x1, total);     /* noise */
#pragma omp parallel for schedule(dynamic, 4)
    for (int i = 0; i < B; i++) {
        Scene scene;
        world_sample_scene((uint64_t)c->seed, (uint64_t)step * B + i, WORLD_SPLIT_TRAIN, &scene);
        world_render(&scene, S, r->x0 + i * img);
        if (r->u[i] < c->prompt_dropout)
            memset(r->tokens + i * T, 0, T * sizeof(int32_t));
        else
            tokenize(&r->vocab, scene.caption, T, r->tokens + i * T);
        r->t[i] = (float)(1.0 / (1.0 + exp(-(c->logit_mean + c->logit_std * r->n[i]))));
    }
    for (int i = 0; i < B; i++) {
        float t = r->t[i];
        for (size_t k = (size_t)i * img; k < (size_t)(i + 1) * img; k++)
            r->xt[k] = (1.0f - t) * r->x0[k] + t * r->x1[k];
    }
    policy_forward(r->pol, B, r->xt, r->t, r->tokens, r->v);
    double loss = 0.0;
    float scale = 2.0f / (float)total;
    for (size_t k = 0; k < total; k++) {
        float diff = r->v[k] - (r->x1[k] - r->x0[k]);
        loss += (double)diff * diff;
        r->dv[k] = scale * diff;
    }
    policy_zero_grad(r->pol);
    policy_backward(r->pol, r->dv);
    r->opt.cfg.lr = (float)lr_at(c, step);
    *grad_norm = policy_adamw_step(r->pol, &r->opt);
    if (r->ema) {
        policy_pull(r->pol, NULL); /* the EMA follows the host copy */
        float d = (float)c->ema_decay, *p = r->model.params;
#pragma omp parallel for schedule(static)
        for (size_t k = 0; k < r->model.num_params; k++) r->ema[k] = d * r->ema[k] + (1 - d) * p[k];
    }
    return loss / (double)total;
}

/* samples/step-NNNNNNN.png (raw weights) and ...-ema.png: the first held-out prompts, ODE, the
 * same noise every time (its own RNG stream), so grids compare across steps and runs. */
static int write_samples(Run *r, const char *out, int step, char *err, size_t errlen)
{
    const ModelConfig *mc = &r->model.cfg;
    char path[PATH_BUF + 64];
    snprintf(path, sizeof path, "%s/samples", out);
    if (make_dirs(path, err, errlen)) return -1;
    policy_pull(r->pol, NULL); /* the grids sample the host copy, on the CPU */
    for (int which = 0; which < (r->ema ? 2 : 1); which++) {
        Model view = r->model;
        if (which) view.params = r->ema;
        Rng noise;
        rng_seed(&noise, 1234);
        if (sampler_run(r->sampler, &view, r->sample_acts, r->sample_tokens, &noise, r->samples,
                        err, errlen))
            return -1;
        snprintf(path, sizeof path, "%s/samples/step-%07d%s.png", out, step, which ? "-ema" : "");
        int n = r->samples->n, cols = n < 8 ? n : 8;
        if (png_write_grid(path, r->samples->x0_hat, n, mc->image_size, mc->channels, cols, 2, err,
                           errlen))
            return -1;
    }
    return 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int pretrain_run(const PretrainConfig *c, const char *out, int resume, volatile sig_atomic_t *stop,
                 ProgressFn progress, void *progress_ctx, char *err, size_t errlen)
{
    if (strlen(out) > PATH_BUF - 128) {
        snprintf(err, errlen, "--out: the folder name is too long");
        return -1;
    }
    engine_set_threads(c->threads ? c->threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
    if (make_dirs(out, err, errlen) ||
        settle_config("pretrain", pretrain_fields, pretrain_field_count, c, "steps", out, resume,
                      err, errlen))
        return -1;
    Run r;
    FILE *metrics = NULL;
    int rc = -1, start = 0;
    if (run_setup(&r, c, err, errlen)) goto done;
    TrainState ts = {.pol = r.pol,
                     .model = &r.model,
                     .vocab = &r.vocab,
                     .ema = r.ema,
                     .opt = &r.opt,
                     .rng = &r.rng,
                     .experiment = "pretrain"};
    if (resume && has_checkpoint(out) && (start = train_checkpoint_load(&ts, out, err, errlen)) < 0)
        goto done;
    if (!(metrics = metrics_open(out, "step", resume, start, err, errlen))) goto done;

    double window_loss = 0.0, window_time = 0.0, t_begin = now_s();
    int window = 0;
    for (int step = start; step < c->steps; step++) {
        double t0 = now_s(), grad_norm;
        double loss = train_step(&r, c, step, &grad_norm);
        double dt = now_s() - t0;
        window_loss += loss, window_time += dt, window++;
        int done_steps = step + 1;
        if (done_steps % c->log_every == 0 || done_steps == c->steps) {
            fprintf(metrics,
                    "{\"step\":%d,\"loss\":%.6g,\"lr\":%.6g,\"grad_norm\":%.6g,"
                    "\"sec_per_step\":%.4f,\"images_per_sec\":%.1f,\"elapsed_s\":%.1f}\n",
                    done_steps, window_loss / window, lr_at(c, step), grad_norm,
                    window_time / window, c->batch_size * window / window_time, now_s() - t_begin);
            fflush(metrics);
            window_loss = window_time = 0.0, window = 0;
        }
        if (progress) progress(progress_ctx, done_steps, c->steps, loss, lr_at(c, step), dt);
        int stopping = stop && *stop;
        if (done_steps % c->checkpoint_every == 0 || done_steps == c->steps || stopping)
            if (train_checkpoint_save(&ts, out, done_steps, c->keep_checkpoints, err, errlen))
                goto done;
        if (c->sample_every && done_steps % c->sample_every == 0 &&
            write_samples(&r, out, done_steps, err, errlen))
            goto done;
        if (stopping) {
            rc = 1;
            goto done;
        }
    }
    rc = train_model_save(&ts, out, c->steps, err, errlen);
done:
    if (metrics) fclose(metrics);
    run_free(&r);
    return rc;
}
