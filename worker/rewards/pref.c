/*
 * pref.c: the learned preference reward's scoring and loss. See pref.h.
 */
#include "rewards/pref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "checkpoint.h"
#include "model.h"
#include "tokenizer.h"

struct PrefModel {
    Model model;
    Vocab vocab;
    Policy *pol;
    int batch;
    float *v, *t;    /* [batch, img], [batch] (all 0) */
    int32_t *tokens; /* [batch, T] */
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

PrefModel *pref_open(const char *path, int batch, char *err, size_t errlen)
{
    PrefModel *pm = calloc(1, sizeof *pm);
    if (!pm) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (checkpoint_load(path, &pm->model, &pm->vocab, NULL, err, errlen)) {
        free(pm);
        return NULL;
    }
    const ModelConfig *mc = &pm->model.cfg;
    size_t img = cfg_image_numel(mc);
    pm->batch = batch;
    pm->v = malloc((size_t)batch * img * sizeof(float));
    pm->t = calloc((size_t)batch, sizeof(float));
    pm->tokens = malloc((size_t)batch * mc->text_len * sizeof(int32_t));
    if (!pm->v || !pm->t || !pm->tokens ||
        !(pm->pol =
              policy_new(BACKEND_CPU, CUDA_MATH_FP32, &pm->model, NULL, batch, err, errlen))) {
        if (!pm->v || !pm->t || !pm->tokens) snprintf(err, errlen, "%s: out of memory", path);
        pref_close(pm);
        return NULL;
    }
    return pm;
}

void pref_close(PrefModel *pm)
{
    if (!pm) return;
    policy_free(pm->pol);
    free(pm->v), free(pm->t), free(pm->tokens);
    vocab_free(&pm->vocab);
    model_free(&pm->model);
    free(pm);
}

int pref_score_images(PrefModel *pm, const char *const *prompts, const float *imgs, int n, int S,
                      float *score, char *err, size_t errlen)
{
    const ModelConfig *mc = &pm->model.cfg;
    if (S != mc->image_size) {
        snprintf(err, errlen, "pref model: it scores %dx%d images, these are %dx%d", mc->image_size,
                 mc->image_size, S, S);
        return -1;
    }
    size_t img = cfg_image_numel(mc);
    for (int first = 0; first < n; first += pm->batch) {
        int rows = n - first < pm->batch ? n - first : pm->batch;
        for (int i = 0; i < rows; i++)
            tokenize(&pm->vocab, prompts[first + i], mc->text_len,
                     pm->tokens + (size_t)i * mc->text_len);
        policy_forward(pm->pol, rows, imgs + (size_t)first * img, pm->t, pm->tokens, pm->v);
        pref_scores(pm->v, rows, img, score + first);
    }
    return 0;
}
