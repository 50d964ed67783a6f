/*
 * rollout.cu: sampling and the GRPO step on the device: sampler_cpu.c's loop and grpo_cpu.c's
 * grpo_items_backward, with the trajectories kept in device memory between the two. Only the
 * scalars of the clipped objective (a few per row) cross to the host, where grpo_chunk_loss (the
 * same function the CPU backend uses) turns them into each row's gradient coefficient.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine_internal.cuh"
#include "errbuf.h"
#include "kernels.cuh"

struct CudaRollout {
    SamplerConfig cfg;
    int n, batch, T;
    size_t img;
    float *sigmas;   /* host [steps + 1] */
    float *x;        /* [steps + 1, n, img] */
    float *logp;     /* [steps, n] */
    float *x0_hat;   /* [n, img] */
    int32_t *tokens; /* [n, T] */
    int32_t *uncond; /* [batch, T] all PAD */
    float *z;        /* [n, img] this transition's noise */
    float *v, *vu;   /* [batch, img] */
    float *t;        /* [batch] */
    /* the GRPO step */
    GrpoRow *rows_dev, *rows_host; /* [batch] */
    float *t_rows_host;            /* [batch] */
    float *xb, *mu, *v_ref, *dv;   /* [batch, img] */
    int32_t *tokb;                 /* [batch, T] */
    double *logp_new, *kl;         /* device [batch] */
    double *logp_new_host, *kl_host;
    float *logp_new_f, *logp_old_f, *dlogp; /* host [batch] */
    int *row_item;                          /* host [batch] */
    CudaEngine *late; /* hybrid sampling: the engine of transitions late_from.. (or NULL) */
    int late_from;
};

void cuda_rollout_set_late(CudaRollout *r, CudaEngine *late, int from_step)
{
    r->late = late;
    r->late_from = from_step;
}

void cuda_rollout_free(CudaRollout *r)
{
    if (!r) return;
    cudaFree(r->x), cudaFree(r->logp), cudaFree(r->x0_hat), cudaFree(r->tokens);
    cudaFree(r->uncond), cudaFree(r->z), cudaFree(r->v), cudaFree(r->vu), cudaFree(r->t);
    cudaFree(r->rows_dev), cudaFree(r->xb), cudaFree(r->mu), cudaFree(r->v_ref), cudaFree(r->dv);
    cudaFree(r->tokb), cudaFree(r->logp_new), cudaFree(r->kl);
    free(r->sigmas), free(r->rows_host), free(r->t_rows_host), free(r->logp_new_host);
    free(r->kl_host), free(r->logp_new_f), free(r->logp_old_f), free(r->dlogp), free(r->row_item);
    free(r);
}

CudaRollout *cuda_rollout_new(const CudaEngine *e, const SamplerConfig *sc, int n, char *err,
                              size_t errlen)
{
    if (sampler_config_validate(sc, err, errlen) != 0) return NULL;
    if (n < 1) {
        errbuf_printf(err, errlen, "a rollout needs n >= 1 trajectories (got %d)", n);
        return NULL;
    }
    CudaRollout *r = (CudaRollout *)calloc(1, sizeof *r);
    if (!r) goto oom;
    r->cfg = *sc;
    r->n = n;
    r->batch = e->capacity;
    r->T = e->cfg.text_len;
    r->img = cfg_image_numel(&e->cfg);
    {
        size_t img = r->img, N = (size_t)sc->steps, B = (size_t)r->batch, T = (size_t)r->T;
        size_t f = sizeof(float);
        r->sigmas = (float *)malloc((N + 1) * f);
        r->rows_host = (GrpoRow *)malloc(B * sizeof(GrpoRow));
        r->t_rows_host = (float *)malloc(B * f);
        r->logp_new_host = (double *)malloc(B * sizeof(double));
        r->kl_host = (double *)malloc(B * sizeof(double));
        r->logp_new_f = (float *)malloc(B * f);
        r->logp_old_f = (float *)malloc(B * f);
        r->dlogp = (float *)malloc(B * f);
        r->row_item = (int *)malloc(B * sizeof(int));
        if (!r->sigmas || !r->rows_host || !r->t_rows_host || !r->logp_new_host || !r->kl_host ||
            !r->logp_new_f || !r->logp_old_f || !r->dlogp || !r->row_item)
            goto oom;
        if (cudaMalloc(&r->x, (N + 1) * n * img * f) || cudaMalloc(&r->logp, N * n * f) ||
            cudaMalloc(&r->x0_hat, n * img * f) || cudaMalloc(&r->tokens, n * T * 4) ||
            cudaMalloc(&r->uncond, B * T * 4) || cudaMalloc(&r->z, n * img * f) ||
            cudaMalloc(&r->v, B * img * f) || cudaMalloc(&r->vu, B * img * f) ||
            cudaMalloc(&r->t, B * f) || cudaMalloc(&r->rows_dev, B * sizeof(GrpoRow)) ||
            cudaMalloc(&r->xb, B * img * f) || cudaMalloc(&r->mu, B * img * f) ||
            cudaMalloc(&r->v_ref, B * img * f) || cudaMalloc(&r->dv, B * img * f) ||
            cudaMalloc(&r->tokb, B * T * 4) || cudaMalloc(&r->logp_new, B * sizeof(double)) ||
            cudaMalloc(&r->kl, B * sizeof(double))) {
            cudaGetLastError(); /* clear the sticky allocation error */
            cuda_rollout_free(r);
            errbuf_printf(err, errlen, "out of device memory for %d trajectories of %d steps", n,
                          sc->steps);
            return NULL;
        }
        CUDA_CHECK(cudaMemset(r->uncond, 0, B * T * 4)); /* PAD = 0 */
    }
    flow_schedule(sc->steps, sc->shift, r->sigmas);
    return r;
oom:
    cuda_rollout_free(r);
    errbuf_printf(err, errlen, "out of host memory planning a rollout of %d trajectories", n);
    return NULL;
}

static int rollout_check(const CudaRollout *r, const CudaEngine *e, const int32_t *tokens,
                         const Trajectory *tr, char *err, size_t errlen)
{
    const ModelConfig *c = &e->cfg;
    if (cfg_image_numel(c) != r->img || c->text_len != r->T || e->capacity != r->batch) {
        errbuf_printf(err, errlen, "rollout planned for another model or batch size");
        return -1;
    }
    if (tr->n != r->n || tr->steps != r->cfg.steps || tr->img != r->img || tr->text_len != r->T) {
        errbuf_printf(err, errlen,
                      "trajectory holds %d x %d steps, the rollout makes %d x %d steps", tr->n,
                      tr->steps, r->n, r->cfg.steps);
        return -1;
    }
    for (size_t k = 0; k < (size_t)r->n * r->T; k++) {
        if (tokens[k] < 0 || tokens[k] >= c->vocab_size) {
            errbuf_printf(err, errlen,
                          "token id %d of trajectory %zu is outside the vocabulary [0, %d)",
                          (int)tokens[k], k / (size_t)r->T, c->vocab_size);
            return -1;
        }
    }
    return 0;
}

/* The sampler loop; x[0] already holds the initial noise. z_host [steps, n, img] or NULL to draw
 * the SDE noise from rng. */
static void rollout_loop(CudaRollout *r, CudaEngine *e, const float *z_host, Rng *rng)
{
    const SamplerConfig *c = &r->cfg;
    int n = r->n, N = c->steps, T = r->T;
    size_t img = r->img, ni = (size_t)n * img;
    CudaEngine *first = e;
    for (int i = 0; i < N; i++) {
        if (r->late && i == r->late_from) { /* hybrid: the late engine's stream takes over */
            CUDA_CHECK(cudaStreamSynchronize(e->stream));
            e = r->late;
        }
        cudaStream_t s = e->stream;
        const float *xi = r->x + (size_t)i * ni;
        float *xn = r->x + (size_t)(i + 1) * ni;
        SdeStep st;
        memset(&st, 0, sizeof st);
        if (c->kind == SAMPLER_SDE) {
            if (z_host) {
                CUDA_CHECK(cudaMemcpyAsync(r->z, z_host + (size_t)i * ni, ni * sizeof(float),
                                           cudaMemcpyHostToDevice, s));
            } else {
                k_rng_normal(s, r->z, ni, rng->key, rng->counter);
                rng->counter += (ni + 3) / 4;
            }
            sde_step_coeffs(r->sigmas, N, i, c->sde, c->eta, &st);
        }
        k_fill(s, r->t, r->sigmas[i], (size_t)r->batch);
        for (int b0 = 0; b0 < n; b0 += r->batch) {
            int nb = n - b0 < r->batch ? n - b0 : r->batch;
            size_t off = (size_t)b0 * img;
            const int32_t *tok = r->tokens + (size_t)b0 * T;
            engine_forward(e, nb, xi + off, r->t, tok, r->v, PASS_SAMPLE);
            if (c->guidance) {
                engine_forward(e, nb, xi + off, r->t, r->uncond, r->vu, PASS_SAMPLE);
                k_guidance(s, r->v, r->vu, c->cfg_scale, (size_t)nb * img);
            }
            float *x0 = i == N - 1 ? r->x0_hat + off : NULL;
            float *lp = r->logp + (size_t)i * n + b0;
            if (c->kind == SAMPLER_ODE)
                k_ode_step(s, xn + off, lp, x0, xi + off, r->v, r->sigmas[i], r->sigmas[i + 1], nb,
                           img);
            else
                k_sde_step(s, xn + off, lp, x0, xi + off, r->v, r->z + off, st.cx, st.cv, st.std,
                           r->sigmas[i], nb, img);
        }
    }
    if (e != first) CUDA_CHECK(cudaStreamSynchronize(e->stream)); /* before first's copies */
}

/* Copies what the host trajectory receives, and waits. */
static void rollout_copy_back(CudaRollout *r, CudaEngine *e, const int32_t *tokens, Trajectory *tr,
                              int copy_x)
{
    cudaStream_t s = e->stream;
    int n = r->n, N = r->cfg.steps;
    size_t img = r->img;
    memcpy(tr->sigmas, r->sigmas, ((size_t)N + 1) * sizeof(float));
    memcpy(tr->tokens, tokens, (size_t)n * r->T * sizeof(int32_t));
    CUDA_CHECK(cudaMemcpyAsync(tr->logp, r->logp, (size_t)N * n * sizeof(float),
                               cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaMemcpyAsync(tr->x0_hat, r->x0_hat, (size_t)n * img * sizeof(float),
                               cudaMemcpyDeviceToHost, s));
    if (copy_x)
        CUDA_CHECK(cudaMemcpyAsync(tr->x, r->x, ((size_t)N + 1) * n * img * sizeof(float),
                                   cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
}

int cuda_rollout_run(CudaRollout *r, CudaEngine *e, const int32_t *tokens, Rng *rng, Trajectory *tr,
                     int copy_x, char *err, size_t errlen)
{
    if (rollout_check(r, e, tokens, tr, err, errlen) != 0) return -1;
    cudaStream_t s = e->stream;
    int n = r->n, g = r->cfg.noise_group;
    size_t img = r->img;
    CUDA_CHECK(cudaMemcpyAsync(r->tokens, tokens, (size_t)n * r->T * sizeof(int32_t),
                               cudaMemcpyHostToDevice, s));
    /* the initial noise: the CPU's rng_normal of n (or ceil(n / g)) images, then its copies */
    size_t draws = g == 0 ? (size_t)n : (size_t)(n + g - 1) / g;
    k_rng_normal_grouped(s, r->x, n, img, g, rng->key, rng->counter);
    rng->counter += (draws * img + 3) / 4;
    rollout_loop(r, e, NULL, rng);
    rollout_copy_back(r, e, tokens, tr, copy_x);
    return 0;
}

int cuda_rollout_run_noise(CudaRollout *r, CudaEngine *e, const int32_t *tokens,
                           const float *x_init, const float *z, Trajectory *tr, int copy_x,
                           char *err, size_t errlen)
{
    if (rollout_check(r, e, tokens, tr, err, errlen) != 0) return -1;
    if (r->cfg.kind == SAMPLER_SDE && !z) {
        errbuf_printf(err, errlen, "the SDE sampler needs its noise z [steps, n, S, S, C]");
        return -1;
    }
    cudaStream_t s = e->stream;
    CUDA_CHECK(cudaMemcpyAsync(r->tokens, tokens, (size_t)r->n * r->T * sizeof(int32_t),
                               cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(r->x, x_init, (size_t)r->n * r->img * sizeof(float),
                               cudaMemcpyHostToDevice, s));
    rollout_loop(r, e, z, NULL);
    rollout_copy_back(r, e, tokens, tr, copy_x);
    return 0;
}

int cuda_rollout_load(CudaRollout *r, CudaEngine *e, const Trajectory *tr, char *err, size_t errlen)
{
    if (tr->n != r->n || tr->steps != r->cfg.steps || tr->img != r->img || tr->text_len != r->T) {
        errbuf_printf(err, errlen, "trajectory holds %d x %d steps, the rollout %d x %d steps",
                      tr->n, tr->steps, r->n, r->cfg.steps);
        return -1;
    }
    size_t nx = ((size_t)r->cfg.steps + 1) * r->n * r->img;
    CUDA_CHECK(cudaMemcpyAsync(r->x, tr->x, nx * sizeof(float), cudaMemcpyHostToDevice, e->stream));
    CUDA_CHECK(cudaMemcpyAsync(r->tokens, tr->tokens, (size_t)r->n * r->T * sizeof(int32_t),
                               cudaMemcpyHostToDevice, e->stream));
    CUDA_CHECK(cudaStreamSynchronize(e->stream));
    return 0;
}

/* grpo_items_backward's argument checks, for the device version. */
static int items_check(const CudaRollout *r, const CudaEngine *e, const CudaEngine *ref,
                       const Trajectory *tr, const GrpoConfig *c, const GrpoItem *items,
                       int n_items, float scale, char *err, size_t errlen)
{
    if (tr->n != r->n || tr->steps != r->cfg.steps || tr->img != r->img) {
        errbuf_printf(err, errlen, "the trajectory is not the rollout's last run");
        return -1;
    }
    if (c->kl_coef > 0.0f &&
        (!ref || ref->capacity != e->capacity || ref->num_params != e->num_params)) {
        errbuf_printf(err, errlen,
                      "kl_coef %g needs a reference engine of the same model and batch",
                      c->kl_coef);
        return -1;
    }
    return grpo_items_validate(&e->cfg, tr, c, items, n_items, scale, e->capacity, err, errlen);
}

int cuda_grpo_items_backward(CudaRollout *r, CudaEngine *e, CudaEngine *ref, const Trajectory *tr,
                             const GrpoConfig *c, const GrpoItem *items, int n_items, float scale,
                             GrpoItemStats *stats, char *err, size_t errlen)
{
    if (items_check(r, e, ref, tr, c, items, n_items, scale, err, errlen)) return -1;
    if (n_items == 0) return 0;
    cudaStream_t s = e->stream;
    const int n = r->n, T = r->T, use_kl = c->kl_coef > 0.0f;
    const size_t img = r->img;

    int rows = 0;
    for (int i = 0; i < n_items; i++) {
        for (int k = items[i].start; k < items[i].start + items[i].size; k++, rows++) {
            GrpoRow *row = &r->rows_host[rows];
            SdeStep st;
            sde_step_coeffs(tr->sigmas, tr->steps, k, c->sde, c->eta, &st);
            *row = (GrpoRow){.traj = items[i].traj,
                             .step = k,
                             .t = tr->sigmas[k],
                             .cx = st.cx,
                             .cv = st.cv,
                             .std = st.std,
                             .dlogp_coef = 0,
                             .kl_coef_row = 0};
            r->t_rows_host[rows] = tr->sigmas[k];
            r->row_item[rows] = i;
            r->logp_old_f[rows] = tr->logp[(size_t)k * n + items[i].traj];
        }
    }
    /* guided: rows [rows, 2 rows) repeat the first ones with the all-PAD prompt (grpo_cpu.c) */
    const int model_rows = rows * grpo_rows_per_transition(c);
    if (c->guidance) memcpy(r->t_rows_host + rows, r->t_rows_host, rows * sizeof(float));
    CUDA_CHECK(cudaMemcpyAsync(r->rows_dev, r->rows_host, rows * sizeof(GrpoRow),
                               cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(r->t, r->t_rows_host, model_rows * sizeof(float),
                               cudaMemcpyHostToDevice, s));
    k_grpo_gather(s, r->xb, r->tokb, r->rows_dev, rows, r->x, r->tokens, n, img, T);
    if (c->guidance) {
        CUDA_CHECK(cudaMemcpyAsync(r->xb + rows * img, r->xb, rows * img * sizeof(float),
                                   cudaMemcpyDeviceToDevice, s));
        CUDA_CHECK(cudaMemsetAsync(r->tokb + (size_t)rows * T, 0, (size_t)rows * T * 4, s));
    }
    if (use_kl) {
        /* the reference runs on its own stream: order it after the gather */
        CUDA_CHECK(cudaStreamSynchronize(s));
        engine_forward(ref, model_rows, r->xb, r->t, r->tokb, r->v_ref, PASS_REFERENCE);
        CUDA_CHECK(cudaStreamSynchronize(ref->stream));
    }
    engine_forward(e, model_rows, r->xb, r->t, r->tokb, r->v, PASS_TRAIN);
    if (c->guidance) {
        k_guidance(s, r->v, r->v + rows * img, c->cfg_scale, rows * img);
        if (use_kl) k_guidance(s, r->v_ref, r->v_ref + rows * img, c->cfg_scale, rows * img);
    }
    k_grpo_logp(s, r->mu, r->logp_new, r->kl, use_kl ? r->v_ref : NULL, r->xb, r->v, r->rows_dev,
                rows, r->x, n, img);
    CUDA_CHECK(cudaMemcpyAsync(r->logp_new_host, r->logp_new, rows * sizeof(double),
                               cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(
        cudaMemcpyAsync(r->kl_host, r->kl, rows * sizeof(double), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    for (int k = 0; k < rows; k++) r->logp_new_f[k] = (float)r->logp_new_host[k];

    /* per item: the chunk loss, in item order (grpo_cpu.c's loop) */
    int any_grad = use_kl;
    for (int i = 0, r0 = 0; i < n_items; r0 += items[i].size, i++) {
        const GrpoItem *it = &items[i];
        int clipped = 0;
        float ratio = 1.0f;
        float loss = grpo_chunk_loss(r->logp_new_f + r0, r->logp_old_f + r0, it->size,
                                     it->advantage, c->clip_eps, r->dlogp + r0, &clipped, &ratio);
        for (int k = 0; k < it->size; k++) any_grad |= r->dlogp[r0 + k] != 0.0f;
        if (stats) {
            double kl = 0.0, lpn = 0.0, lpo = 0.0;
            for (int k = 0; k < it->size; k++) {
                kl += r->kl_host[r0 + k];
                lpn += r->logp_new_f[r0 + k];
                lpo += r->logp_old_f[r0 + k];
            }
            kl /= it->size;
            stats[i] = (GrpoItemStats){.ratio = ratio,
                                       .loss = (float)((double)loss + (double)c->kl_coef * kl),
                                       .kl = (float)kl,
                                       .logp_new = (float)(lpn / it->size),
                                       .logp_old = (float)(lpo / it->size),
                                       .clipped = clipped};
        }
    }
    if (!any_grad || scale == 0.0f) return 0;

    /* per row: dv = dlogp_coef (x' - mu) + kl_coef_row (mu - mu_ref), as grpo_cpu.c rounds them */
    for (int k = 0; k < rows; k++) {
        GrpoRow *row = &r->rows_host[k];
        const GrpoItem *it = &items[r->row_item[k]];
        float g = scale * r->dlogp[k] * row->cv;
        row->dlogp_coef = (float)((double)g / ((double)row->std * row->std * (double)img));
        row->kl_coef_row = use_kl ? (float)((double)scale * c->kl_coef * row->cv /
                                            ((double)it->size * img * (double)row->std * row->std))
                                  : 0.0f;
    }
    CUDA_CHECK(cudaMemcpyAsync(r->rows_dev, r->rows_host, rows * sizeof(GrpoRow),
                               cudaMemcpyHostToDevice, s));
    k_grpo_dv(s, r->dv, r->mu, use_kl ? r->v_ref : NULL, r->rows_dev, rows, r->x, n, img);
    if (c->guidance) k_guidance_backward(s, r->dv, c->cfg_scale, rows * img);
    engine_backward(e, r->dv);
    return 0;
}
