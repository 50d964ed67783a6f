/*
 * grpo_cpu.c: the model-level GRPO / Chunk-GRPO micro-step on the CPU model (see grpo.h for the
 * contract; the chunk objective it applies is in grpo.c).
 *
 * The step packs every transition of its items into rows: row r holds a transition of item
 * row_item[r], computed by model row row_model[r]. Rows whose model input is the same (the same
 * transition, prompt and x_k, as the first transition of every trajectory of a group sampled
 * from shared noise) share one model row: the forward runs each distinct input once, and since the
 * model's Jacobian is then the same for all of them, the backward runs once on the sum of their
 * velocity gradients (exact but for the order of float sums). Per-row work (the mean, the
 * log-probability, the KL term, the velocity gradient) runs one row per OpenMP iteration with its
 * sums in a fixed order; per-item work (the chunk loss) runs serially in item order. So nothing
 * depends on the thread count. Guided, model rows [U, 2 U) repeat rows [0, U) with the all-PAD
 * prompt, in the same forward and the same backward.
 */
#include "grpo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "errbuf.h"

/* ------------------------------------------------------------------------------------------ */
/* The model-level training function                                                           */

struct GrpoWorkspace {
    ModelConfig cfg;
    int B;
    size_t img;
    /* per model row (distinct inputs; guided, the unconditional copies follow) */
    float *x;        /* [B, img] x_k */
    float *t;        /* [B] sigma_k */
    int32_t *tokens; /* [B, T] */
    int *model_step; /* [B] transition index k */
    SdeStep *coef;   /* [B] transition k's constants */
    float *v;        /* [B, img] policy velocity */
    float *v_ref;    /* [B, img] reference velocity, then reused for mu_ref */
    float *mu;       /* [B, img] policy mean */
    double *kl;      /* [B] per-step KL */
    float *dv;       /* [B, img] d objective / d v, summed over the rows sharing the model row */
    /* per row (one trained transition of one item) */
    float *row_dv;   /* [B, img] the row's own d objective / d v */
    float *logp_new; /* [B] */
    float *logp_old; /* [B] */
    float *dlogp;    /* [B] d loss / d logp_new */
    int *row_item;   /* [B] */
    int *row_model;  /* [B] the model row that computes it (and so its transition) */
};

GrpoWorkspace *grpo_workspace_new(const ModelConfig *cfg, int batch)
{
    if (batch < 1) return NULL;
    GrpoWorkspace *ws = calloc(1, sizeof *ws);
    if (!ws) return NULL;
    ws->cfg = *cfg;
    ws->B = batch;
    ws->img = cfg_image_numel(cfg);
    size_t B = (size_t)batch, Bi = B * ws->img;
    ws->x = malloc(Bi * sizeof *ws->x);
    ws->t = malloc(B * sizeof *ws->t);
    ws->tokens = malloc(B * (size_t)cfg->text_len * sizeof *ws->tokens);
    ws->v = malloc(Bi * sizeof *ws->v);
    ws->v_ref = malloc(Bi * sizeof *ws->v_ref);
    ws->mu = malloc(Bi * sizeof *ws->mu);
    ws->dv = malloc(Bi * sizeof *ws->dv);
    ws->row_dv = malloc(Bi * sizeof *ws->row_dv);
    ws->logp_new = malloc(B * sizeof *ws->logp_new);
    ws->logp_old = malloc(B * sizeof *ws->logp_old);
    ws->dlogp = malloc(B * sizeof *ws->dlogp);
    ws->kl = malloc(B * sizeof *ws->kl);
    ws->coef = malloc(B * sizeof *ws->coef);
    ws->row_item = malloc(B * sizeof *ws->row_item);
    ws->row_model = malloc(B * sizeof *ws->row_model);
    ws->model_step = malloc(B * sizeof *ws->model_step);
    if (!ws->x || !ws->t || !ws->tokens || !ws->v || !ws->v_ref || !ws->mu || !ws->dv ||
        !ws->row_dv || !ws->logp_new || !ws->logp_old || !ws->dlogp || !ws->kl || !ws->coef ||
        !ws->row_item || !ws->row_model || !ws->model_step) {
        grpo_workspace_free(ws);
        return NULL;
    }
    return ws;
}

void grpo_workspace_free(GrpoWorkspace *ws)
{
    if (!ws) return;
    free(ws->x);
    free(ws->t);
    free(ws->tokens);
    free(ws->v);
    free(ws->v_ref);
    free(ws->mu);
    free(ws->dv);
    free(ws->row_dv);
    free(ws->logp_new);
    free(ws->logp_old);
    free(ws->dlogp);
    free(ws->kl);
    free(ws->coef);
    free(ws->row_item);
    free(ws->row_model);
    free(ws->model_step);
    free(ws);
}

static int same_config(const ModelConfig *a, const ModelConfig *b)
{
    return a->image_size == b->image_size && a->channels == b->channels && a->patch == b->patch &&
           a->dim == b->dim && a->depth == b->depth && a->heads == b->heads &&
           a->mlp_ratio == b->mlp_ratio && a->text_len == b->text_len &&
           a->vocab_size == b->vocab_size;
}

/* Everything grpo_items_backward relies on, checked before anything runs. */
static int items_check(const GrpoWorkspace *ws, const Model *m, const Activations *a,
                       const Model *ref, const Activations *ref_acts, const Trajectory *tr,
                       const GrpoConfig *c, const GrpoItem *items, int n_items, float scale,
                       char *err, size_t errlen)
{
    const ModelConfig *mc = &m->cfg;
    if (cfg_image_numel(mc) != ws->img || mc->text_len != ws->cfg.text_len) {
        errbuf_printf(err, errlen, "workspace planned for another model size");
        return -1;
    }
    if (acts_capacity(a) != ws->B) {
        errbuf_printf(err, errlen, "workspace planned for batch %d, given activations of batch %d",
                      ws->B, acts_capacity(a));
        return -1;
    }
    if (c->kl_coef > 0.0f) {
        if (!ref) {
            errbuf_printf(err, errlen, "kl_coef %g needs the reference model (ref is NULL)",
                          c->kl_coef);
            return -1;
        }
        if (!same_config(&ref->cfg, mc)) {
            errbuf_printf(err, errlen, "the reference model's config differs from the policy's");
            return -1;
        }
        if (ref_acts && acts_capacity(ref_acts) != ws->B) {
            errbuf_printf(err, errlen,
                          "reference activations have batch %d, the workspace batch %d",
                          acts_capacity(ref_acts), ws->B);
            return -1;
        }
    }
    if (tr->img != ws->img || tr->text_len != mc->text_len) {
        errbuf_printf(err, errlen, "trajectory images or prompts do not match the model");
        return -1;
    }
    return grpo_items_validate(mc, tr, c, items, n_items, scale, ws->B, err, errlen);
}

/* The model row among the first `urows` that already holds transition k's input x_k with the
 * prompt tok, or -1. Only rows of the same transition can match, and in practice only the first
 * transition of trajectories that started from the same noise does. */
static int find_model_row(const GrpoWorkspace *ws, int urows, int k, const float *xk,
                          const int32_t *tok)
{
    const size_t T = (size_t)ws->cfg.text_len;
    for (int u = 0; u < urows; u++)
        if (ws->model_step[u] == k &&
            same_model_input(ws->x + (size_t)u * ws->img, ws->tokens + (size_t)u * T, xk, tok,
                             ws->img, T))
            return u;
    return -1;
}

/* The recorded x_{k+1} that row r's transition reached. */
static const float *next_x(const GrpoWorkspace *ws, const Trajectory *tr, const GrpoItem *items,
                           int r)
{
    int k = ws->model_step[ws->row_model[r]];
    return tr->x + ((size_t)(k + 1) * tr->n + items[ws->row_item[r]].traj) * ws->img;
}

int grpo_items_backward(GrpoWorkspace *ws, Model *m, Activations *a, const Model *ref,
                        Activations *ref_acts, const Trajectory *tr, const GrpoConfig *c,
                        const GrpoItem *items, int n_items, float scale, GrpoItemStats *stats,
                        char *err, size_t errlen)
{
    if (items_check(ws, m, a, ref, ref_acts, tr, c, items, n_items, scale, err, errlen)) return -1;
    if (n_items == 0) return 0;
    const int n = tr->n, B = ws->B, T = m->cfg.text_len;
    const size_t img = ws->img;
    const int use_kl = c->kl_coef > 0.0f;

    /* pack the rows, and the model rows of their distinct inputs (x_k, sigma_k, the prompt) */
    int rows = 0, urows = 0;
    for (int i = 0; i < n_items; i++) {
        const GrpoItem *it = &items[i];
        for (int s = 0; s < it->size; s++, rows++) {
            int k = it->start + s;
            const float *xk = tr->x + ((size_t)k * n + it->traj) * img;
            const int32_t *tok = tr->tokens + (size_t)it->traj * T;
            int u = find_model_row(ws, urows, k, xk, tok);
            if (u < 0) {
                u = urows++;
                ws->model_step[u] = k;
                sde_step_coeffs(tr->sigmas, tr->steps, k, c->sde, c->eta, &ws->coef[u]);
                memcpy(ws->x + (size_t)u * img, xk, img * sizeof *ws->x);
                ws->t[u] = tr->sigmas[k];
                memcpy(ws->tokens + (size_t)u * T, tok, (size_t)T * sizeof *ws->tokens);
            }
            ws->row_model[rows] = u;
            ws->row_item[rows] = i;
            ws->logp_old[rows] = tr->logp[(size_t)k * n + it->traj];
        }
    }
    /* guided: the same model rows again with the unconditional (all-PAD) prompt */
    const int model_rows = urows * grpo_rows_per_transition(c);
    if (c->guidance) {
        memcpy(ws->x + (size_t)urows * img, ws->x, (size_t)urows * img * sizeof *ws->x);
        memcpy(ws->t + urows, ws->t, (size_t)urows * sizeof *ws->t);
        memset(ws->tokens + (size_t)urows * T, 0, (size_t)urows * T * sizeof *ws->tokens);
    }
    /* the passes run exactly model_rows rows (no padding); the batch is restored before
     * returning */
    Activations *ref_a = ref_acts ? ref_acts : a;
    acts_set_batch(a, model_rows);
    if (use_kl) acts_set_batch(ref_a, model_rows);

    /* the reference first, so that it may borrow a before the policy's forward fills it */
    if (use_kl) model_forward(ref, ref_a, ws->x, ws->t, ws->tokens, ws->v_ref);
    model_forward(m, a, ws->x, ws->t, ws->tokens, ws->v);
    if (c->guidance) {
        size_t count = (size_t)urows * img;
        guidance_combine(ws->v, ws->v + count, c->cfg_scale, count);
        if (use_kl) guidance_combine(ws->v_ref, ws->v_ref + count, c->cfg_scale, count);
    }

    /* per model row: mu and the KL term (mu_ref overwrites v_ref) */
#pragma omp parallel for schedule(static)
    for (int u = 0; u < urows; u++) {
        const SdeStep *st = &ws->coef[u];
        size_t off = (size_t)u * img;
        const float *xu = ws->x + off;
        float *mu = ws->mu + off;
        sde_mean(st, xu, ws->v + off, img, mu);
        ws->kl[u] = 0.0;
        if (use_kl) {
            float *mu_ref = ws->v_ref + off;
            sde_mean(st, xu, mu_ref, img, mu_ref);
            double sum = 0.0;
            for (size_t e = 0; e < img; e++) {
                double d = (double)mu[e] - (double)mu_ref[e];
                sum += d * d;
            }
            double sd = st->std;
            ws->kl[u] = sum / (double)img / (2.0 * sd * sd);
        }
    }
    /* per row: logp_new against the row's own recorded x_{k+1} */
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        int u = ws->row_model[r];
        ws->logp_new[r] =
            sde_logp(next_x(ws, tr, items, r), ws->mu + (size_t)u * img, ws->coef[u].std, img);
    }

    /* per item: the chunk loss, in item order */
    int any_grad = use_kl;
    for (int i = 0, r0 = 0; i < n_items; r0 += items[i].size, i++) {
        const GrpoItem *it = &items[i];
        int clipped = 0;
        float ratio = 1.0f;
        float loss = grpo_chunk_loss(ws->logp_new + r0, ws->logp_old + r0, it->size, it->advantage,
                                     c->clip_eps, ws->dlogp + r0, &clipped, &ratio);
        for (int s = 0; s < it->size; s++) any_grad |= ws->dlogp[r0 + s] != 0.0f;
        if (stats) {
            double kl = 0.0, lpn = 0.0, lpo = 0.0;
            for (int s = 0; s < it->size; s++) {
                kl += ws->kl[ws->row_model[r0 + s]];
                lpn += ws->logp_new[r0 + s];
                lpo += ws->logp_old[r0 + s];
            }
            kl /= it->size;
            stats[i].ratio = ratio;
            stats[i].clipped = clipped;
            stats[i].kl = (float)kl;
            stats[i].loss = (float)((double)loss + (double)c->kl_coef * kl);
            stats[i].logp_new = (float)(lpn / it->size);
            stats[i].logp_old = (float)(lpo / it->size);
        }
    }
    /* every chunk clipped and no KL, or scale 0: the gradient is exactly zero */
    if (!any_grad || scale == 0.0f) {
        acts_set_batch(a, B);
        if (use_kl) acts_set_batch(ref_a, B);
        return 0;
    }

    /* per row: its dv = scale * cv * (dlogp * dlogp/dmu + kl_coef/size * dKL/dmu) */
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *dv = ws->row_dv + (size_t)r * img;
        int u = ws->row_model[r];
        const SdeStep *st = &ws->coef[u];
        const GrpoItem *it = &items[ws->row_item[r]];
        size_t off = (size_t)u * img;
        const float *mu = ws->mu + off;
        sde_logp_grad_mu(next_x(ws, tr, items, r), mu, st->std, img, scale * ws->dlogp[r] * st->cv,
                         dv);
        if (use_kl) {
            /* d/dmu of kl_coef/size * mean((mu - mu_ref)^2) / (2 s^2) */
            float g = (float)((double)scale * c->kl_coef * st->cv /
                              ((double)it->size * img * (double)st->std * st->std));
            const float *mu_ref = ws->v_ref + off;
            for (size_t e = 0; e < img; e++) dv[e] += g * (mu[e] - mu_ref[e]);
        }
    }
    /* per model row: the sum of its rows' dv, in row order */
#pragma omp parallel for schedule(static)
    for (int u = 0; u < urows; u++) {
        float *dv = ws->dv + (size_t)u * img;
        memset(dv, 0, img * sizeof *dv);
        for (int r = 0; r < rows; r++) {
            const float *d = ws->row_dv + (size_t)r * img;
            if (ws->row_model[r] == u)
                for (size_t e = 0; e < img; e++) dv[e] += d[e];
        }
    }
    if (c->guidance) guidance_backward(ws->dv, c->cfg_scale, (size_t)urows * img);
    model_backward(m, a, ws->dv);
    acts_set_batch(a, B);
    if (use_kl) acts_set_batch(ref_a, B);
    return 0;
}
