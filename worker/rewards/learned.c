/*
 * learned.c: the learned rewards' scoring and losses. See learned.h.
 */
#include "rewards/learned.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "checkpoint.h"
#include "model.h"
#include "tokenizer.h"
#include "world/shapes.h"

struct LearnedReward {
    LearnedKind kind;
    Model model;
    Vocab vocab;
    Policy *pol;
    int batch;        /* images per call: 2 * batch model rows for clip */
    float *v, *t, *x; /* [rows, img], [rows] (all 0), clip's inputs [rows, img] */
    float *e, *norm;  /* clip: [rows, img], [rows] */
    int32_t *tokens;  /* [rows, T] */
};

void pref_scores(const float *v, int n, size_t img, float *score)
{
    for (int i = 0; i < n; i++) {
        double sum = 0;
        for (size_t k = 0; k < img; k++) sum += v[(size_t)i * img + k];
        score[i] = (float)(sum / (double)img);
    }
}

void pref_score_grad(const float *dscore, int n, size_t img, float *dv)
{
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < img; k++) dv[(size_t)i * img + k] = dscore[i] / (float)img;
}

double pref_pair_loss(const float *chosen, const float *rejected, int n, float *dchosen,
                      float *drejected, int *correct)
{
    double loss = 0;
    *correct = 0;
    for (int i = 0; i < n; i++) {
        double d = (double)chosen[i] - rejected[i];
        /* log(1 + e^-d) without overflow, and its derivative -1 / (1 + e^d) */
        loss += d > 0 ? log1p(exp(-d)) : -d + log1p(exp(d));
        double g = -1.0 / (1.0 + exp(d)) / n;
        dchosen[i] = (float)g, drejected[i] = (float)-g;
        *correct += d > 0;
    }
    return loss / n;
}

void clip_normalise(const float *v, int n, size_t dim, float *e, float *norm)
{
    for (int i = 0; i < n; i++) {
        double sq = 0;
        for (size_t k = 0; k < dim; k++)
            sq += (double)v[(size_t)i * dim + k] * v[(size_t)i * dim + k];
        norm[i] = (float)fmax(sqrt(sq), 1e-12);
        for (size_t k = 0; k < dim; k++) e[(size_t)i * dim + k] = v[(size_t)i * dim + k] / norm[i];
    }
}

void clip_normalise_grad(const float *e, const float *norm, const float *de, int n, size_t dim,
                         float *dv)
{
    for (int i = 0; i < n; i++) {
        const float *ei = e + (size_t)i * dim, *gi = de + (size_t)i * dim;
        double dot = 0;
        for (size_t k = 0; k < dim; k++) dot += (double)ei[k] * gi[k];
        for (size_t k = 0; k < dim; k++)
            dv[(size_t)i * dim + k] = (float)((gi[k] - ei[k] * dot) / norm[i]);
    }
}

/* Softmax cross-entropy of logits l[0..B) (stride `stride`) against the targets that `same`
 * marks (stride likewise), each positive weighted equally: adds the loss's gradient on the
 * logits, times `scale`, to g (same strides); returns the loss. */
static double soft_ce(const double *l, const uint8_t *same, size_t stride, int B, double scale,
                      double *g)
{
    double mx = -INFINITY, sum = 0;
    int pos = 0;
    for (int j = 0; j < B; j++) mx = fmax(mx, l[j * stride]), pos += same[j * stride];
    for (int j = 0; j < B; j++) sum += exp(l[j * stride] - mx);
    double lse = mx + log(sum), loss = 0;
    for (int j = 0; j < B; j++) {
        double p = exp(l[j * stride] - lse), t = same[j * stride] ? 1.0 / pos : 0.0;
        if (t > 0) loss -= t * (l[j * stride] - lse);
        g[j * stride] += scale * (p - t);
    }
    return loss;
}

double clip_batch_loss(const float *ei, const float *et, const uint8_t *same, int B, size_t dim,
                       float temperature, double *work, float *dei, float *det, int *correct)
{
    double *l = work, *g = work + (size_t)B * B; /* the logits and their gradient */
    memset(g, 0, (size_t)B * B * sizeof *g);
    *correct = 0;
    for (int i = 0; i < B; i++) {
        int best = 0;
        for (int j = 0; j < B; j++) {
            double dot = 0;
            for (size_t k = 0; k < dim; k++)
                dot += (double)ei[(size_t)i * dim + k] * et[(size_t)j * dim + k];
            l[(size_t)i * B + j] = dot / temperature;
            if (l[(size_t)i * B + j] > l[(size_t)i * B + best]) best = j;
        }
        *correct += same[(size_t)i * B + best];
    }
    /* images against captions (rows) and captions against images (columns), averaged */
    double loss = 0, scale = 0.5 / B;
    for (int i = 0; i < B; i++)
        loss += soft_ce(l + (size_t)i * B, same + (size_t)i * B, 1, B, scale, g + (size_t)i * B);
    for (int j = 0; j < B; j++) loss += soft_ce(l + j, same + j, (size_t)B, B, scale, g + j);
    memset(dei, 0, (size_t)B * dim * sizeof *dei);
    memset(det, 0, (size_t)B * dim * sizeof *det);
    for (int i = 0; i < B; i++)
        for (int j = 0; j < B; j++) {
            float gij = (float)(g[(size_t)i * B + j] / temperature);
            if (gij == 0) continue;
            for (size_t k = 0; k < dim; k++) {
                dei[(size_t)i * dim + k] += gij * et[(size_t)j * dim + k];
                det[(size_t)j * dim + k] += gij * ei[(size_t)i * dim + k];
            }
        }
    return loss * 0.5 / B;
}

void clip_blank_canvas(int S, float *img)
{
    for (size_t k = 0; k < (size_t)S * S * 3; k++) img[k] = 2.0f * world_background[k % 3] - 1.0f;
}

LearnedReward *learned_open(const char *path, LearnedKind kind, int batch, char *err, size_t errlen)
{
    LearnedReward *lr = calloc(1, sizeof *lr);
    if (!lr) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (checkpoint_load(path, &lr->model, &lr->vocab, NULL, err, errlen)) {
        free(lr);
        return NULL;
    }
    const ModelConfig *mc = &lr->model.cfg;
    size_t img = cfg_image_numel(mc);
    int rows = kind == LEARNED_CLIP ? 2 * batch : batch;
    lr->kind = kind;
    lr->batch = batch;
    lr->v = malloc((size_t)rows * img * sizeof(float));
    lr->x = malloc((size_t)rows * img * sizeof(float));
    lr->e = malloc((size_t)rows * img * sizeof(float));
    lr->norm = malloc((size_t)rows * sizeof(float));
    lr->t = calloc((size_t)rows, sizeof(float));
    lr->tokens = calloc((size_t)rows * mc->text_len, sizeof(int32_t));
    int ok = lr->v && lr->x && lr->e && lr->norm && lr->t && lr->tokens;
    if (!ok ||
        !(lr->pol = policy_new(BACKEND_CPU, CUDA_MATH_FP32, &lr->model, NULL, rows, err, errlen))) {
        if (!ok) snprintf(err, errlen, "%s: out of memory", path);
        learned_close(lr);
        return NULL;
    }
    return lr;
}

void learned_close(LearnedReward *lr)
{
    if (!lr) return;
    policy_free(lr->pol);
    free(lr->v), free(lr->x), free(lr->e), free(lr->norm), free(lr->t), free(lr->tokens);
    vocab_free(&lr->vocab);
    model_free(&lr->model);
    free(lr);
}

int learned_score_images(LearnedReward *lr, const char *const *prompts, const float *imgs, int n,
                         int S, float *score, char *err, size_t errlen)
{
    const ModelConfig *mc = &lr->model.cfg;
    if (S != mc->image_size) {
        snprintf(err, errlen, "%s model: it scores %dx%d images, these are %dx%d",
                 lr->kind == LEARNED_CLIP ? "clip" : "pref", mc->image_size, mc->image_size, S, S);
        return -1;
    }
    size_t img = cfg_image_numel(mc);
    int T = mc->text_len;
    for (int first = 0; first < n; first += lr->batch) {
        int m = n - first < lr->batch ? n - first : lr->batch;
        if (lr->kind == LEARNED_PREF) {
            for (int i = 0; i < m; i++)
                tokenize(&lr->vocab, prompts[first + i], T, lr->tokens + (size_t)i * T);
            policy_forward(lr->pol, m, imgs + (size_t)first * img, lr->t, lr->tokens, lr->v);
            pref_scores(lr->v, m, img, score + first);
            continue;
        }
        /* clip: rows 0 .. m-1 the images under the empty prompt, m .. 2m-1 the captions */
        memcpy(lr->x, imgs + (size_t)first * img, (size_t)m * img * sizeof(float));
        memset(lr->tokens, 0, (size_t)m * T * sizeof(int32_t));
        for (int i = 0; i < m; i++) {
            clip_blank_canvas(S, lr->x + (size_t)(m + i) * img);
            tokenize(&lr->vocab, prompts[first + i], T, lr->tokens + (size_t)(m + i) * T);
        }
        policy_forward(lr->pol, 2 * m, lr->x, lr->t, lr->tokens, lr->v);
        clip_normalise(lr->v, 2 * m, img, lr->e, lr->norm);
        for (int i = 0; i < m; i++) {
            double dot = 0;
            for (size_t k = 0; k < img; k++)
                dot += (double)lr->e[(size_t)i * img + k] * lr->e[(size_t)(m + i) * img + k];
            score[first + i] = (float)dot;
        }
    }
    return 0;
}
