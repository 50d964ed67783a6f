/*
 * adamw.c: AdamW with decoupled weight decay and global gradient-norm clipping. See adamw.h.
 */
#include "adamw.h"

#include <math.h>
#include <stdlib.h>

int adamw_init(AdamW *opt, const AdamWConfig *cfg, size_t n)
{
    opt->cfg = *cfg;
    opt->n = n;
    opt->step = 0;
    opt->m = calloc(n, sizeof *opt->m);
    opt->v = calloc(n, sizeof *opt->v);
    if (!opt->m || !opt->v) {
        adamw_free(opt);
        return -1;
    }
    return 0;
}

void adamw_free(AdamW *opt)
{
    free(opt->m);
    free(opt->v);
    opt->m = opt->v = NULL;
}

double grad_global_norm(const float *g, size_t n)
{
    /* At most MAX_PARTS chunks whose size depends only on n, each summed in order, then the
     * partial sums added in order: the result depends on neither schedule nor thread count, and
     * the partials live on the stack (no allocation inside a training step). */
    enum { MAX_PARTS = 1024, MIN_CHUNK = 4096 };
    double partial[MAX_PARTS];
    size_t chunk = (n + MAX_PARTS - 1) / MAX_PARTS;
    if (chunk < MIN_CHUNK) chunk = MIN_CHUNK;
    size_t parts = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < parts; c++) {
        double s = 0.0;
        size_t end = (c + 1) * chunk < n ? (c + 1) * chunk : n;
        for (size_t i = c * chunk; i < end; i++) s += (double)g[i] * g[i];
        partial[c] = s;
    }
    double total = 0.0;
    for (size_t c = 0; c < parts; c++) total += partial[c];
    return sqrt(total);
}

double adamw_step(AdamW *opt, float *params, const float *grads)
{
    const AdamWConfig *c = &opt->cfg;
    double norm = grad_global_norm(grads, opt->n);
    float scale = 1.0f;
    if (c->grad_clip > 0 && norm > c->grad_clip) scale = (float)(c->grad_clip / (norm + 1e-6));
    opt->step++;
    float bc1 = 1.0f - powf(c->beta1, (float)opt->step);
    float bc2 = 1.0f - powf(c->beta2, (float)opt->step);
    float lr = c->lr, b1 = c->beta1, b2 = c->beta2, eps = c->eps, wd = c->weight_decay;
    float *m = opt->m, *v = opt->v;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < opt->n; i++) {
        float g = grads[i] * scale;
        m[i] = b1 * m[i] + (1.0f - b1) * g;
        v[i] = b2 * v[i] + (1.0f - b2) * g * g;
        float mhat = m[i] / bc1, vhat = v[i] / bc2;
        params[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * params[i]);
    }
    return norm;
}
