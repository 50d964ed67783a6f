/*
 * sampler.c: the BLAS-free half of the samplers (see sampler.h for the contract and algorithm.md
 * sections 1-2 for the maths): the schedule, the ODE and SDE steps with their log-probabilities,
 * the sampler config, trajectories and their relative-L1 curves. The batched trajectory sampler,
 * which runs the CPU model, is in sampler_cpu.c.
 */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "errbuf.h"

#define LOG_SQRT_2PI 0.91893853320467274178

void flow_schedule(int steps, float shift, float *sigmas)
{
    for (int i = 0; i <= steps; i++) {
        double s = 1.0 - (double)i / steps;
        sigmas[i] = (float)(shift * s / (1.0 + (shift - 1.0) * s));
    }
}

const char *sde_kind_name(SdeKind kind)
{
    return kind == SDE_CPS ? "cps" : kind == SDE_DANCE ? "dance" : "flow";
}

int sde_kind_from_name(const char *name, SdeKind *kind)
{
    for (SdeKind k = SDE_FLOW; k <= SDE_CPS; k++) {
        if (strcmp(name, sde_kind_name(k)) == 0) {
            *kind = k;
            return 0;
        }
    }
    return -1;
}

int sde_validate(SdeKind kind, float eta, char *err, size_t errlen)
{
    if (kind != SDE_FLOW && kind != SDE_DANCE && kind != SDE_CPS) {
        errbuf_printf(err, errlen, "sde must be flow, dance or cps (got %d)", (int)kind);
        return -1;
    }
    /* eta = 0 makes std 0 and the log-probability undefined; that sampler is the ODE */
    if (!(eta > 0.0f) || !isfinite(eta)) {
        errbuf_printf(err, errlen, "eta must be a finite number > 0 for the SDE, got %g", eta);
        return -1;
    }
    if (kind == SDE_CPS && eta > 1.0f) {
        errbuf_printf(err, errlen,
                      "eta must be at most 1 for the cps SDE (the fraction of a quarter turn "
                      "from predicted to fresh noise), got %g",
                      eta);
        return -1;
    }
    return 0;
}

void sde_step_coeffs(const float *sigmas, int steps, int i, SdeKind kind, float eta, SdeStep *out)
{
    double sigma = sigmas[i], next = sigmas[i + 1], h = sigma - next, st, std, cx, cv;
    if (kind == SDE_CPS) {
        /* mu = (1 - next) (x - sigma v) + next cos(theta) (x + (1 - sigma) v) */
        double theta = eta * M_PI / 2.0, c = next * cos(theta);
        st = sin(theta);
        std = next * st;
        cx = 1.0 - next + c;
        cv = -(1.0 - next) * sigma + c * (1.0 - sigma);
    } else {
        if (kind == SDE_DANCE) {
            st = eta;
        } else {
            /* sigma == 1 only at the first step; sigmas[1] (< 1) keeps the ratio finite there */
            double sg = sigma == 1.0 ? sigmas[1] : sigma;
            st = eta * sqrt(sigma / (1.0 - sg));
        }
        double k = st * st / (2.0 * sigma);
        std = st * sqrt(h);
        cx = 1.0 - h * k;
        cv = -h * (1.0 + k * (1.0 - sigma));
    }
    out->sigma = (float)sigma;
    out->sigma_next = (float)next;
    out->sigma_t = (float)st;
    out->std = (float)std;
    out->cx = (float)cx;
    out->cv = (float)cv;
}

void sde_mean(const SdeStep *c, const float *x, const float *v, size_t n, float *mu)
{
    float cx = c->cx, cv = c->cv;
    for (size_t k = 0; k < n; k++) mu[k] = cx * x[k] + cv * v[k];
}

void sde_sample(const float *mu, float std, const float *z, size_t n, float *x_next)
{
    for (size_t k = 0; k < n; k++) x_next[k] = mu[k] + std * z[k];
}

float sde_logp(const float *x_next, const float *mu, float std, size_t n)
{
    double sum = 0.0;
    for (size_t k = 0; k < n; k++) {
        double d = (double)x_next[k] - (double)mu[k];
        sum += d * d;
    }
    double s = std;
    if (s == 0.0) return 0.0f; /* deterministic: no density (sampler.h) */
    return (float)(-sum / (2.0 * s * s * (double)n) - log(s) - LOG_SQRT_2PI);
}

void sde_logp_grad_mu(const float *x_next, const float *mu, float std, size_t n, float scale,
                      float *dmu)
{
    float g = (float)((double)scale / ((double)std * std * (double)n));
    for (size_t k = 0; k < n; k++) dmu[k] = g * (x_next[k] - mu[k]);
}

void ode_step(const float *x, const float *v, float sigma, float sigma_next, size_t n,
              float *x_next)
{
    float h = sigma - sigma_next;
    for (size_t k = 0; k < n; k++) x_next[k] = x[k] - h * v[k];
}

void predict_x0(const float *x, const float *v, float t, size_t n, float *x0)
{
    for (size_t k = 0; k < n; k++) x0[k] = x[k] - t * v[k];
}

void guidance_combine(float *v, const float *vu, float w, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < n; k++) v[k] = vu[k] + w * (v[k] - vu[k]);
}

void guidance_backward(float *dv, float w, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < n; k++) {
        dv[n + k] = (1.0f - w) * dv[k];
        dv[k] *= w;
    }
}

void sampler_config_default(SamplerConfig *c)
{
    memset(c, 0, sizeof *c);
    c->steps = 17;
    c->shift = 3.0f;
    c->kind = SAMPLER_SDE;
    c->sde = SDE_FLOW;
    c->eta = 0.7f;
    c->guidance = 0;
    c->cfg_scale = 1.0f;
    c->noise_group = 0;
    c->noise_first = 0;
    c->noise_total = 0;
}

int sampler_config_validate(const SamplerConfig *c, char *err, size_t errlen)
{
    if (c->steps < 1 || c->steps > SAMPLER_MAX_STEPS) {
        errbuf_printf(err, errlen, "steps must be in [1, %d], got %d", SAMPLER_MAX_STEPS, c->steps);
        return -1;
    }
    if (!(c->shift > 0.0f) || !isfinite(c->shift)) {
        errbuf_printf(err, errlen, "shift must be a finite number > 0, got %g", c->shift);
        return -1;
    }
    /* every transition needs h > 0 (so std > 0, and the flow SDE's sigma_1 < 1): an extreme
     * shift can round neighbouring levels together in float. Same arithmetic as flow_schedule. */
    float prev = 1.0f;
    for (int i = 1; i <= c->steps; i++) {
        double s = 1.0 - (double)i / c->steps;
        float sig = (float)(c->shift * s / (1.0 + (c->shift - 1.0) * s));
        if (!(sig < prev)) {
            errbuf_printf(err, errlen,
                          "shift %g with %d steps rounds sigma_%d and sigma_%d to the same float "
                          "(%.9g); use a smaller shift or fewer steps",
                          c->shift, c->steps, i - 1, i, prev);
            return -1;
        }
        prev = sig;
    }
    if (c->kind != SAMPLER_ODE && c->kind != SAMPLER_SDE) {
        errbuf_printf(err, errlen, "sampler must be ode or sde (got kind %d)", (int)c->kind);
        return -1;
    }
    if (c->kind == SAMPLER_SDE && sde_validate(c->sde, c->eta, err, errlen) != 0) return -1;
    if (c->guidance && !isfinite(c->cfg_scale)) {
        errbuf_printf(err, errlen, "cfg_scale must be finite, got %g", c->cfg_scale);
        return -1;
    }
    if (c->noise_group < 0) {
        errbuf_printf(err, errlen, "noise_group must be >= 0, got %d", c->noise_group);
        return -1;
    }
    if (c->noise_total < 0) {
        errbuf_printf(err, errlen, "sampler: noise_total must be >= 0 (0: the whole batch), got %d",
                      c->noise_total);
        return -1;
    }
    if (c->noise_first < 0) {
        errbuf_printf(err, errlen, "sampler: noise_first must be >= 0, got %d", c->noise_first);
        return -1;
    }
    if (c->noise_first > 0 && c->noise_total == 0) {
        errbuf_printf(err, errlen,
                      "sampler: noise_first %d needs noise_total, the size of the whole batch "
                      "the slice is taken from",
                      c->noise_first);
        return -1;
    }
    if (c->noise_group > 0 && c->noise_first % c->noise_group != 0) {
        errbuf_printf(err, errlen,
                      "sampler: noise_first %d is not a multiple of noise_group %d (a group's "
                      "shared noise cannot be split)",
                      c->noise_first, c->noise_group);
        return -1;
    }
    return 0;
}

Trajectory *trajectory_new(const ModelConfig *cfg, int n, int steps)
{
    if (n < 1 || steps < 1 || steps > SAMPLER_MAX_STEPS) return NULL;
    Trajectory *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->n = n;
    t->steps = steps;
    t->text_len = cfg->text_len;
    t->img = cfg_image_numel(cfg);
    size_t ni = (size_t)n * t->img;
    t->sigmas = calloc((size_t)steps + 1, sizeof *t->sigmas);
    t->x = calloc(((size_t)steps + 1) * ni, sizeof *t->x);
    t->logp = calloc((size_t)steps * n, sizeof *t->logp);
    t->x0_hat = calloc(ni, sizeof *t->x0_hat);
    t->tokens = calloc((size_t)n * cfg->text_len, sizeof *t->tokens);
    if (!t->sigmas || !t->x || !t->logp || !t->x0_hat || !t->tokens) {
        trajectory_free(t);
        return NULL;
    }
    return t;
}

void trajectory_free(Trajectory *t)
{
    if (!t) return;
    free(t->sigmas);
    free(t->x);
    free(t->logp);
    free(t->x0_hat);
    free(t->tokens);
    free(t);
}

int same_model_input(const float *xa, const int32_t *ta, const float *xb, const int32_t *tb,
                     size_t img, size_t text_len)
{
    return memcmp(ta, tb, text_len * sizeof *ta) == 0 && memcmp(xa, xb, img * sizeof *xa) == 0;
}

void trajectory_l1rel(const Trajectory *tr, int b, int count, float *curve)
{
    for (int i = 0; i < count; i++) {
        const float *x = tr->x + ((size_t)i * tr->n + b) * tr->img;
        const float *y = tr->x + ((size_t)(i + 1) * tr->n + b) * tr->img;
        double d = 0, s = 0;
        for (size_t k = 0; k < tr->img; k++) d += fabsf(y[k] - x[k]), s += fabsf(x[k]);
        curve[i] = (float)(s > 0 ? d / s : 0);
    }
}
