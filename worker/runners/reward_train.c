/*
 * reward_train.c: the learned reward's training runner. See reward_train.h.
 */
#include "runners/reward_train.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "adamw.h"
#include "backend.h"
#include "model.h"
#include "ops.h"
#include "rewards/learned.h"
#include "rng.h"
#include "runners/runner_util.h"
#include "tokenizer.h"
#include "world/shapes.h"

#define EVAL_SEED 0x5ca1ab1eull /* the held-out pairs: the same scenes in every run */

typedef struct {
    Model model;
    Vocab vocab;
    AdamW opt;
    Rng rng; /* kept in checkpoints with the optimizer; pairs draw from their own streams */
    Policy *pol;
    int kinds[REWARD_DEGRADATIONS], num_kinds; /* config.degradations, as indices */
    float *x, *v, *dv, *t;                     /* [2B, img] (chosen rows, then rejected), [2B] */
    float *score, *dscore;                     /* [2B] */
    int32_t *tokens;                           /* [2B, T] */
    int *kind_of;                              /* [B] each pair's degradation */
    int clip;                                  /* config.reward "clip" (else "pref") */
    float *blur;                               /* pref: [B, img] each pair's blur scratch */
    float *e, *norm, *de;                      /* clip: [2B, img], [2B], [2B, img] */
    double *clip_work;                         /* clip: [2B * B] the loss's scratch */
    uint8_t *same;                             /* clip: [B, B] image i and caption j agree */
    char (*caption)[WORLD_CAPTION_MAX];        /* clip: [B] */
} Run;

static void run_free(Run *r)
{
    policy_free(r->pol);
    adamw_free(&r->opt);
    free(r->x), free(r->v), free(r->dv), free(r->t), free(r->score), free(r->dscore);
    free(r->tokens), free(r->kind_of);
    free(r->blur), free(r->e), free(r->norm), free(r->de), free(r->same), free(r->caption);
    free(r->clip_work);
    vocab_free(&r->vocab);
    model_free(&r->model);
}

static double lr_at(const RewardTrainConfig *c, int step)
{
    return warmup_cosine_lr(c->lr, c->warmup_steps, c->steps, c->min_lr_ratio, step);
}

static int run_setup(Run *r, const RewardTrainConfig *c, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    int nwords;
    const char *const *words = world_vocab(&nwords);
    ModelConfig mc;
    if (vocab_from_words(&r->vocab, words, nwords, err, errlen) ||
        model_config_for(c->preset, c->dim, c->depth, c->heads, c->mlp_ratio, nwords, &mc, err,
                         errlen))
        return -1;
    if (model_init(&r->model, &mc)) goto oom;
    model_init_weights(&r->model, (uint64_t)c->seed);
    if (strcmp(c->reward, "clip") == 0) {
        /* adaLN-Zero starts every output at 0, and two zero embeddings have no gradient to
         * leave it by: clip starts its output layer small and random instead */
        Rng init;
        size_t count = (size_t)mc.patch * mc.patch * mc.channels * mc.dim; /* [P, d] */
        rng_seed(&init, (uint64_t)c->seed ^ 0xc11bull);
        rng_normal(&init, r->model.p.fin_w, count);
        for (size_t k = 0; k < count; k++) r->model.p.fin_w[k] *= 0.02f;
    }
    AdamWConfig oc = {.lr = (float)c->lr,
                      .beta1 = (float)c->beta1,
                      .beta2 = (float)c->beta2,
                      .eps = (float)c->eps,
                      .weight_decay = (float)c->weight_decay,
                      .grad_clip = (float)c->grad_clip};
    if (adamw_init(&r->opt, &oc, r->model.num_params)) goto oom;
    rng_seed(&r->rng, (uint64_t)c->seed);
    /* the config table checked the list */
    r->num_kinds = reward_degradations_parse(c->degradations, r->kinds, err, errlen);
    if (r->num_kinds < 0) return -1;
    int rows = 2 * c->batch_size;
    size_t img = cfg_image_numel(&mc);
    if (!(r->pol = policy_for_config(c->backend, c->precision, &r->model, NULL, rows, err, errlen)))
        return -1;
    r->x = malloc((size_t)rows * img * sizeof(float));
    r->v = malloc((size_t)rows * img * sizeof(float));
    r->dv = malloc((size_t)rows * img * sizeof(float));
    r->t = calloc((size_t)rows, sizeof(float)); /* the clean end of the schedule */
    r->score = malloc((size_t)rows * sizeof(float));
    r->dscore = malloc((size_t)rows * sizeof(float));
    r->tokens = malloc((size_t)rows * mc.text_len * sizeof(int32_t));
    r->kind_of = malloc((size_t)c->batch_size * sizeof(int));
    if ((r->clip = strcmp(c->reward, "clip") == 0)) {
        r->e = malloc((size_t)rows * img * sizeof(float));
        r->de = malloc((size_t)rows * img * sizeof(float));
        r->norm = malloc((size_t)rows * sizeof(float));
        r->same = malloc((size_t)c->batch_size * c->batch_size);
        r->caption = malloc((size_t)c->batch_size * sizeof *r->caption);
        r->clip_work = malloc((size_t)2 * c->batch_size * c->batch_size * sizeof(double));
        if (!r->e || !r->de || !r->norm || !r->same || !r->caption || !r->clip_work) goto oom;
    } else if (!(r->blur = malloc((size_t)c->batch_size * img * sizeof(float)))) {
        goto oom;
    }
    if (r->x && r->v && r->dv && r->t && r->score && r->dscore && r->tokens && r->kind_of) return 0;
oom:
    snprintf(err, errlen, "out of memory for the model and a batch of %d pairs", c->batch_size);
    return -1;
}

/* A stroke of `len` pixels from (x, y) in direction (dx, dy), in palette colour `color`. */
static void stroke(float *img, int S, float x, float y, float dx, float dy, int len, int color)
{
    for (int k = 0; k < len; k++, x += dx, y += dy) {
        int px = (int)x, py = (int)y;
        if (px < 0 || py < 0 || px >= S || py >= S) break;
        for (int c = 0; c < 3; c++)
            img[((size_t)py * S + px) * 3 + c] = 2.0f * world_palette[color].rgb[c] - 1.0f;
    }
}

/* dst [S, S, 3]: each pixel the mean of src's 3x3 neighbourhood (inside the image). */
static void box_blur(const float *src, int S, float *dst)
{
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++)
            for (int c = 0; c < 3; c++) {
                float sum = 0;
                int n = 0;
                for (int yy = y - 1; yy <= y + 1; yy++)
                    for (int xx = x - 1; xx <= x + 1; xx++)
                        if (yy >= 0 && xx >= 0 && yy < S && xx < S)
                            sum += src[((size_t)yy * S + xx) * 3 + c], n++;
                dst[((size_t)y * S + x) * 3 + c] = sum / n;
            }
}

/* Renders scene into chosen and the degradation `kind` of it into rejected ([S, S, 3] each),
 * the degradation's randomness from rng; scratch [S, S, 3] is the blur's. */
static void make_pair(const Scene *scene, int kind, Rng *rng, int S, float *chosen, float *rejected,
                      float *scratch)
{
    size_t img = (size_t)S * S * 3;
    world_render(scene, S, chosen);
    float u[12]; /* u[0] the object; per stroke of ink four: angle, colour, x, y */
    rng_uniform(rng, u, 12);
    Scene other = *scene;
    int o = (int)(u[0] * scene->num_objects) % scene->num_objects;
    if (kind == 4 && scene->num_objects < 2) kind = 3; /* nothing to leave out */
    switch (kind) {
    case 0: /* noise */
        rng_normal(rng, rejected, img);
        for (size_t k = 0; k < img; k++) {
            float v = chosen[k] + 0.35f * rejected[k];
            rejected[k] = v < -1 ? -1 : v > 1 ? 1 : v;
        }
        return;
    case 1: /* blur: two passes of a 3x3 box */
        box_blur(chosen, S, scratch);
        box_blur(scratch, S, rejected);
        return;
    case 2: /* ink: two stray strokes */
        memcpy(rejected, chosen, img * sizeof(float));
        for (int s = 0; s < 2; s++) {
            const float *q = u + 1 + 4 * s;
            float angle = 2.0f * (float)M_PI * q[0];
            int color = (int)(q[1] * world_palette_size) % world_palette_size;
            stroke(rejected, S, q[2] * S, q[3] * S, cosf(angle), sinf(angle), S / 3, color);
        }
        return;
    case 3: { /* colour: one object in another palette colour */
        int shift = 1 + (int)(u[1] * (world_palette_size - 1)) % (world_palette_size - 1);
        other.objects[o].color = (scene->objects[o].color + shift) % world_palette_size;
        break;
    }
    default: /* missing: object o left out */
        for (int k = o; k < other.num_objects - 1; k++) other.objects[k] = other.objects[k + 1];
        other.num_objects--;
        break;
    }
    world_render(&other, S, rejected);
}

/* Fills the batch with pairs index0 .. index0 + B - 1 of the (seed, split) stream: chosen images
 * in rows 0 .. B-1, rejected ones in rows B .. 2B-1, the same caption's tokens on both. */
static void fill_pairs(Run *r, uint64_t seed, WorldSplit split, uint64_t index0, int B)
{
    const ModelConfig *mc = &r->model.cfg;
    int S = mc->image_size, T = mc->text_len;
    size_t img = cfg_image_numel(mc);
#pragma omp parallel for schedule(dynamic, 2)
    for (int i = 0; i < B; i++) {
        Scene scene;
        world_sample_scene(seed, index0 + i, split, &scene);
        Rng pr; /* the pair's own stream: the same pair at any thread count */
        rng_seed(&pr, seed * 0x9e3779b97f4a7c15ull + index0 + i + 1);
        float u;
        rng_uniform(&pr, &u, 1);
        int kind = r->kinds[(int)(u * r->num_kinds) % r->num_kinds];
        r->kind_of[i] = kind;
        make_pair(&scene, kind, &pr, S, r->x + (size_t)i * img, r->x + (size_t)(B + i) * img,
                  r->blur + (size_t)i * img);
        tokenize(&r->vocab, scene.caption, T, r->tokens + (size_t)i * T);
        memcpy(r->tokens + (size_t)(B + i) * T, r->tokens + (size_t)i * T, T * sizeof(int32_t));
    }
}

/* clip: scenes index0 .. index0 + B - 1 of the (seed, split) stream, their images under the
 * empty prompt in rows 0 .. B-1 and their captions on the blank canvas in rows B .. 2B-1; which
 * images and captions agree into r->same (equal captions all do). */
static void fill_clip(Run *r, uint64_t seed, WorldSplit split, uint64_t index0, int B)
{
    const ModelConfig *mc = &r->model.cfg;
    int S = mc->image_size, T = mc->text_len;
    size_t img = cfg_image_numel(mc);
#pragma omp parallel for schedule(dynamic, 2)
    for (int i = 0; i < B; i++) {
        Scene scene;
        world_sample_scene(seed, index0 + i, split, &scene);
        world_render(&scene, S, r->x + (size_t)i * img);
        memset(r->tokens + (size_t)i * T, 0, T * sizeof(int32_t));
        clip_blank_canvas(S, r->x + (size_t)(B + i) * img);
        tokenize(&r->vocab, scene.caption, T, r->tokens + (size_t)(B + i) * T);
        snprintf(r->caption[i], sizeof r->caption[i], "%s", scene.caption);
    }
    for (int i = 0; i < B; i++)
        for (int j = 0; j < B; j++) r->same[i * B + j] = strcmp(r->caption[i], r->caption[j]) == 0;
}

/* clip: the batch's InfoNCE loss, matched images, and the mean cosine of each image with its
 * caption; with `grad`, the loss's gradient on the model's output into r->dv. */
static double clip_batch(Run *r, const RewardTrainConfig *c, int B, int grad, int *correct,
                         double *cosine)
{
    size_t img = cfg_image_numel(&r->model.cfg);
    policy_forward(r->pol, 2 * B, r->x, r->t, r->tokens, r->v);
    clip_normalise(r->v, 2 * B, img, r->e, r->norm);
    double loss =
        clip_batch_loss(r->e, r->e + (size_t)B * img, r->same, B, img, (float)c->temperature,
                        r->clip_work, r->de, r->de + (size_t)B * img, correct);
    *cosine = 0;
    for (int i = 0; i < B; i++) {
        double dot = 0;
        for (size_t k = 0; k < img; k++)
            dot += (double)r->e[(size_t)i * img + k] * r->e[(size_t)(B + i) * img + k];
        *cosine += dot / B;
    }
    if (grad) clip_normalise_grad(r->e, r->norm, r->de, 2 * B, img, r->dv);
    return loss;
}

/* Scores the 2B rows of the batch into r->score. */
static void score_batch(Run *r, int B)
{
    size_t img = cfg_image_numel(&r->model.cfg);
    policy_forward(r->pol, 2 * B, r->x, r->t, r->tokens, r->v);
    pref_scores(r->v, 2 * B, img, r->score);
}

/* One optimizer step; the batch's loss, accuracy and mean margin into the out-parameters. */
static void train_step(Run *r, const RewardTrainConfig *c, int step, double *loss, double *acc,
                       double *margin, double *grad_norm)
{
    int B = c->batch_size, correct;
    size_t img = cfg_image_numel(&r->model.cfg);
    if (r->clip) {
        fill_clip(r, (uint64_t)c->seed, WORLD_SPLIT_TRAIN, (uint64_t)step * B, B);
        *loss = clip_batch(r, c, B, 1, &correct, margin);
    } else {
        fill_pairs(r, (uint64_t)c->seed, WORLD_SPLIT_TRAIN, (uint64_t)step * B, B);
        score_batch(r, B);
        *loss = pref_pair_loss(r->score, r->score + B, B, r->dscore, r->dscore + B, &correct);
        *margin = 0;
        for (int i = 0; i < B; i++) *margin += (r->score[i] - r->score[B + i]) / B;
        pref_score_grad(r->dscore, 2 * B, img, r->dv);
    }
    *acc = (double)correct / B;
    policy_zero_grad(r->pol);
    policy_backward(r->pol, r->dv);
    r->opt.cfg.lr = (float)lr_at(c, step);
    *grad_norm = policy_adamw_step(r->pol, &r->opt);
}

/* The held-out accuracy into the metrics object o: pref's pairs overall and per degradation;
 * clip's images whose own caption is the most similar of their batch's. */
static void evaluate(Run *r, const RewardTrainConfig *c, json_t *o)
{
    if (r->clip) {
        int matched = 0;
        for (int first = 0; first < c->eval_pairs; first += c->batch_size) {
            int B = c->eval_pairs - first < c->batch_size ? c->eval_pairs - first : c->batch_size,
                correct;
            double cosine;
            fill_clip(r, EVAL_SEED, WORLD_SPLIT_HELDOUT, (uint64_t)first, B);
            clip_batch(r, c, B, 0, &correct, &cosine);
            matched += correct;
        }
        json_object_set_new(o, "eval_accuracy", json_real((double)matched / c->eval_pairs));
        return;
    }
    int right[REWARD_DEGRADATIONS] = {0}, seen[REWARD_DEGRADATIONS] = {0}, total_right = 0;
    for (int first = 0; first < c->eval_pairs; first += c->batch_size) {
        int B = c->eval_pairs - first < c->batch_size ? c->eval_pairs - first : c->batch_size;
        fill_pairs(r, EVAL_SEED, WORLD_SPLIT_HELDOUT, (uint64_t)first, B);
        score_batch(r, B);
        for (int i = 0; i < B; i++) {
            int ok = r->score[i] > r->score[B + i];
            right[r->kind_of[i]] += ok, seen[r->kind_of[i]]++, total_right += ok;
        }
    }
    json_t *by = json_object();
    for (int k = 0; k < REWARD_DEGRADATIONS; k++)
        if (seen[k])
            json_object_set_new(by, reward_degradation_names[k],
                                json_real((double)right[k] / seen[k]));
    json_object_set_new(o, "eval_accuracy", json_real((double)total_right / c->eval_pairs));
    json_object_set_new(o, "eval_accuracy_by", by);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int reward_train_run(const RewardTrainConfig *c, const char *out, int resume,
                     volatile sig_atomic_t *stop, ProgressFn progress, void *progress_ctx,
                     char *err, size_t errlen)
{
    if (strlen(out) > PATH_BUF - 128) {
        snprintf(err, errlen, "--out: the folder name is too long");
        return -1;
    }
    engine_set_threads(c->threads ? c->threads : (int)sysconf(_SC_NPROCESSORS_ONLN));
    if (make_dirs(out, err, errlen) ||
        settle_config("reward_train", reward_train_fields, reward_train_field_count, c, "steps",
                      out, resume, err, errlen))
        return -1;
    Run r;
    FILE *metrics = NULL;
    int rc = -1, start = 0;
    if (run_setup(&r, c, err, errlen)) goto done;
    TrainState ts = {.pol = r.pol,
                     .model = &r.model,
                     .vocab = &r.vocab,
                     .opt = &r.opt,
                     .rng = &r.rng,
                     .experiment = "reward_train"};
    if (resume && has_checkpoint(out) && (start = train_checkpoint_load(&ts, out, err, errlen)) < 0)
        goto done;
    if (!(metrics = metrics_open(out, "step", resume, start, err, errlen))) goto done;
    double w_loss = 0, w_acc = 0, w_margin = 0, w_time = 0;
    int window = 0;
    for (int step = start; step < c->steps; step++) {
        double t0 = now_s(), loss, acc, margin, grad_norm;
        train_step(&r, c, step, &loss, &acc, &margin, &grad_norm);
        double dt = now_s() - t0;
        w_loss += loss, w_acc += acc, w_margin += margin, w_time += dt, window++;
        int done_steps = step + 1;
        /* one line per step that logs or evaluates: a step is one event for the server */
        int logging = done_steps % c->log_every == 0 || done_steps == c->steps;
        int evaluating =
            (c->eval_every && done_steps % c->eval_every == 0) || done_steps == c->steps;
        if (logging || evaluating) {
            json_t *o = json_object();
            json_object_set_new(o, "step", json_integer(done_steps));
            if (logging) {
                json_object_set_new(o, "loss", json_real(w_loss / window));
                json_object_set_new(o, "accuracy", json_real(w_acc / window));
                json_object_set_new(o, r.clip ? "cosine" : "margin", json_real(w_margin / window));
                json_object_set_new(o, "lr", json_real(lr_at(c, step)));
                json_object_set_new(o, "grad_norm", json_real(grad_norm));
                json_object_set_new(o, "sec_per_step", json_real(w_time / window));
                w_loss = w_acc = w_margin = w_time = 0, window = 0;
            }
            if (evaluating) evaluate(&r, c, o);
            char *line = json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(7));
            fprintf(metrics, "%s\n", line);
            fflush(metrics);
            free(line);
            json_decref(o);
        }
        if (progress) progress(progress_ctx, done_steps, c->steps, loss, lr_at(c, step), dt);
        int stopping = stop && *stop;
        if (done_steps % c->checkpoint_every == 0 || done_steps == c->steps || stopping)
            if (train_checkpoint_save(&ts, out, done_steps, c->keep_checkpoints, err, errlen))
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
