/*
 * sampler_cpu.c: the batched trajectory sampler on the CPU model (see sampler.h for the contract;
 * the steps it takes are in sampler.c).
 *
 * The sampler loops over steps outside and model batches inside: each step's noise is drawn for
 * all n trajectories at once (so it is independent of the batch size), then every batch of at
 * most the Activations' size runs the model on x_i and takes its transitions. A trajectory whose
 * input repeats the previous trajectory's (the same x_i and prompt: every member of a group at
 * the first step when the group shares its initial noise) takes its velocity instead of a model
 * row of its own. Runs of consecutive rows are read in place; other batches are gathered into
 * scratch rows. A data-parallel slice (noise_first, noise_total) draws its rows' part of every
 * whole-batch draw (draw_rows).
 */
#include "sampler.h"

#include <stdlib.h>
#include <string.h>

#include "errbuf.h"
#include "tokenizer.h"

struct Sampler {
    SamplerConfig cfg;
    ModelConfig mcfg;
    int n, B;
    int total;         /* the whole batch's size: noise_total, or n */
    size_t img;        /* S*S*C */
    float *sigmas;     /* [steps+1] */
    float *t;          /* [B] this step's sigma for every row */
    float *xb;         /* [B, img] gathered inputs of a batch */
    int32_t *tokb;     /* [B, T] gathered prompts of a batch */
    int *uniq;         /* [n] the trajectories whose input is new at this step, ascending */
    int *src;          /* [n] the index in uniq of the input trajectory k repeats or is */
    int32_t *uncond;   /* [B, T] all PAD: the unconditional branch */
    float *v;          /* [B, img] (guided) velocity */
    float *vu;         /* [B, img] unconditional velocity (guidance only) */
    float *mu;         /* [n, img] SDE means of the current step */
    float *z;          /* [n, img] this step's noise (SDE from an Rng) */
    const Model *late; /* hybrid sampling: the model of transitions late_from.. (or NULL) */
    int late_from;
};

void sampler_set_late_model(Sampler *s, const Model *late, int from_step)
{
    s->late = late;
    s->late_from = from_step;
}

Sampler *sampler_new(const ModelConfig *cfg, const SamplerConfig *sc, int n, int batch, char *err,
                     size_t errlen)
{
    if (sampler_config_validate(sc, err, errlen) != 0) return NULL;
    if (n < 1 || batch < 1) {
        errbuf_printf(err, errlen, "sampler needs n >= 1 and batch >= 1 (got n %d, batch %d)", n,
                      batch);
        return NULL;
    }
    size_t img = cfg_image_numel(cfg);
    int total = sc->noise_total ? sc->noise_total : n;
    if ((long long)sc->noise_first + n > total) {
        errbuf_printf(err, errlen,
                      "sampler: the slice noise_first %d .. %lld (n %d) lies past noise_total %d",
                      sc->noise_first, (long long)sc->noise_first + n - 1, n, total);
        return NULL;
    }
    if (total != n && img % 4 != 0) {
        errbuf_printf(err, errlen,
                      "sampler: noise_total %d slices the batch, which needs an image of a "
                      "multiple of 4 floats (S*S*C = %zu) so every row starts on a Philox block",
                      total, img);
        return NULL;
    }
    Sampler *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->cfg = *sc;
    s->mcfg = *cfg;
    s->n = n;
    s->B = batch;
    s->img = img;
    s->total = total;
    size_t Bi = (size_t)batch * s->img, T = (size_t)cfg->text_len;
    s->sigmas = malloc(((size_t)sc->steps + 1) * sizeof *s->sigmas);
    s->t = malloc((size_t)batch * sizeof *s->t);
    s->xb = calloc(Bi, sizeof *s->xb);
    s->tokb = calloc((size_t)batch * T, sizeof *s->tokb);
    s->uncond = calloc((size_t)batch * T, sizeof *s->uncond); /* TOKEN_PAD == 0 */
    s->v = malloc(Bi * sizeof *s->v);
    s->uniq = malloc((size_t)n * sizeof *s->uniq);
    s->src = malloc((size_t)n * sizeof *s->src);
    if (!s->sigmas || !s->t || !s->xb || !s->tokb || !s->uncond || !s->v || !s->uniq || !s->src)
        goto oom;
    if (sc->guidance && !(s->vu = malloc(Bi * sizeof *s->vu))) goto oom;
    if (sc->kind == SAMPLER_SDE) {
        s->mu = malloc((size_t)n * s->img * sizeof *s->mu);
        s->z = malloc((size_t)n * s->img * sizeof *s->z);
        if (!s->mu || !s->z) goto oom;
    }
    flow_schedule(sc->steps, sc->shift, s->sigmas);
    return s;
oom:
    sampler_free(s);
    errbuf_printf(err, errlen, "out of memory planning a sampler for %d trajectories", n);
    return NULL;
}

void sampler_free(Sampler *s)
{
    if (!s) return;
    free(s->sigmas);
    free(s->t);
    free(s->xb);
    free(s->tokb);
    free(s->uncond);
    free(s->v);
    free(s->uniq);
    free(s->src);
    free(s->vu);
    free(s->mu);
    free(s->z);
    free(s);
}

static int sampler_check(const Sampler *s, const Model *m, const Activations *a,
                         const int32_t *tokens, const Trajectory *tr, char *err, size_t errlen)
{
    const ModelConfig *c = &m->cfg;
    if (acts_batch(a) != s->B) {
        errbuf_printf(err, errlen, "sampler planned for batch %d, given activations of batch %d",
                      s->B, acts_batch(a));
        return -1;
    }
    if (cfg_image_numel(c) != s->img || c->text_len != s->mcfg.text_len) {
        errbuf_printf(err, errlen, "sampler planned for another model size");
        return -1;
    }
    if (tr->n != s->n || tr->steps != s->cfg.steps || tr->img != s->img ||
        tr->text_len != c->text_len) {
        errbuf_printf(err, errlen,
                      "trajectory holds %d x %d steps, the sampler makes %d x %d steps", tr->n,
                      tr->steps, s->n, s->cfg.steps);
        return -1;
    }
    for (size_t k = 0; k < (size_t)s->n * c->text_len; k++) {
        if (tokens[k] < 0 || tokens[k] >= c->vocab_size) {
            errbuf_printf(err, errlen,
                          "token id %d of trajectory %zu is outside the vocabulary [0, %d)",
                          (int)tokens[k], k / (size_t)c->text_len, c->vocab_size);
            return -1;
        }
    }
    return 0;
}

/* Fills s->uniq and s->src for the inputs x_i; returns the number of distinct inputs. Groups
 * that share noise are runs of consecutive trajectories, so trajectory k is compared with the
 * last new input only: one comparison each. */
static int find_sources(Sampler *s, const float *xi, const int32_t *tokens)
{
    size_t img = s->img, T = (size_t)s->mcfg.text_len;
    int U = 0;
    for (int k = 0; k < s->n; k++) {
        int j = U ? s->uniq[U - 1] : -1;
        if (j < 0 || !same_model_input(xi + (size_t)j * img, tokens + (size_t)j * T,
                                       xi + (size_t)k * img, tokens + (size_t)k * T, img, T))
            s->uniq[U++] = k;
        s->src[k] = U - 1;
    }
    return U;
}

/*
 * The velocity of the nb trajectories rows[0 .. nb) at x_i into rows 0 .. nb of s->v ([B, img]).
 * Guided: v = v_u + w (v_c - v_u). The model runs exactly nb rows.
 */
static void sampler_velocity(Sampler *s, const Model *m, Activations *a, const float *xi,
                             const int32_t *tokens, const int *rows, int nb)
{
    size_t img = s->img, T = (size_t)s->mcfg.text_len;
    const float *xin = xi + (size_t)rows[0] * img;
    const int32_t *tin = tokens + (size_t)rows[0] * T;
    if (rows[nb - 1] - rows[0] != nb - 1) { /* not one run of consecutive rows: gather */
        for (int r = 0; r < nb; r++) {
            memcpy(s->xb + (size_t)r * img, xi + (size_t)rows[r] * img, img * sizeof *s->xb);
            memcpy(s->tokb + (size_t)r * T, tokens + (size_t)rows[r] * T, T * sizeof *s->tokb);
        }
        xin = s->xb;
        tin = s->tokb;
    }
    acts_set_batch(a, nb);
    model_forward(m, a, xin, s->t, tin, s->v);
    if (s->cfg.guidance) {
        model_forward(m, a, xin, s->t, s->uncond, s->vu);
        guidance_combine(s->v, s->vu, s->cfg.cfg_scale, (size_t)nb * img);
    }
    acts_set_batch(a, s->B);
}

/*
 * The draw of rows first .. first + rows - 1 of a batch of `total` rows of `per` normals each
 * into out [rows, per]: element k of that batch comes from block base + k/4 (base the counter
 * on entry), and the counter ends past the whole batch's blocks. first 0 and rows = total is
 * exactly rng_normal(rng, out, total * per). first * per must be a multiple of 4 unless first is
 * 0 (sampler_new).
 */
static void draw_rows(Rng *rng, float *out, int first, int rows, int total, size_t per)
{
    uint64_t base = rng->counter;
    rng->counter = base + (uint64_t)first * per / 4;
    rng_normal(rng, out, (size_t)rows * per);
    rng->counter = base + ((uint64_t)total * per + 3) / 4;
}

/* The common loop. Noise for transition i: z_all + i*n*img when z_all is set, else drawn from
 * rng into s->z (SDE only). tr->x[0] already holds the initial noise. */
static void sampler_loop(Sampler *s, const Model *m, Activations *a, const int32_t *tokens,
                         const float *z_all, Rng *rng, Trajectory *tr)
{
    const SamplerConfig *c = &s->cfg;
    int n = s->n, N = c->steps;
    size_t img = s->img, ni = (size_t)n * img;
    memcpy(tr->sigmas, s->sigmas, ((size_t)N + 1) * sizeof *tr->sigmas);
    memcpy(tr->tokens, tokens, (size_t)n * s->mcfg.text_len * sizeof *tr->tokens);
    for (int i = 0; i < N; i++) {
        const float *xi = tr->x + (size_t)i * ni;
        float *xn = tr->x + (size_t)(i + 1) * ni;
        float *logp = tr->logp + (size_t)i * n;
        const float *z = NULL;
        SdeStep st = {0};
        if (c->kind == SAMPLER_SDE) {
            if (z_all) {
                z = z_all + (size_t)i * ni;
            } else {
                draw_rows(rng, s->z, c->noise_first, n, s->total, img);
                z = s->z;
            }
            sde_step_coeffs(s->sigmas, N, i, c->sde, c->eta, &st);
        }
        for (int b = 0; b < s->B; b++) s->t[b] = s->sigmas[i];
        int U = find_sources(s, xi, tokens);
        for (int u0 = 0; u0 < U; u0 += s->B) {
            int nb = U - u0 < s->B ? U - u0 : s->B;
            const int *rows = s->uniq + u0;
            sampler_velocity(s, s->late && i >= s->late_from ? s->late : m, a, xi, tokens, rows,
                             nb);
            /* the trajectories whose input ran in this batch, one per iteration: each
             * log-probability is summed in a fixed order */
#pragma omp parallel for schedule(static)
            for (int k = 0; k < n; k++) {
                int row = s->src[k] - u0;
                if (row < 0 || row >= nb) continue;
                size_t off = (size_t)k * img;
                const float *vr = s->v + (size_t)row * img;
                if (i == N - 1) predict_x0(xi + off, vr, s->sigmas[i], img, tr->x0_hat + off);
                if (c->kind == SAMPLER_ODE) {
                    ode_step(xi + off, vr, s->sigmas[i], s->sigmas[i + 1], img, xn + off);
                    logp[k] = 0.0f;
                } else {
                    /* logp is taken against the recorded (rounded) x_{i+1}, as a trainer
                     * recomputing mu with the same parameters will see it */
                    float *mu = s->mu + off;
                    sde_mean(&st, xi + off, vr, img, mu);
                    sde_sample(mu, st.std, z + off, img, xn + off);
                    logp[k] = sde_logp(xn + off, mu, st.std, img);
                }
            }
        }
    }
}

int sampler_run_noise(Sampler *s, const Model *m, Activations *a, const int32_t *tokens,
                      const float *x_init, const float *z, Trajectory *tr, char *err, size_t errlen)
{
    if (sampler_check(s, m, a, tokens, tr, err, errlen) != 0) return -1;
    if (s->cfg.kind == SAMPLER_SDE && !z) {
        errbuf_printf(err, errlen, "the SDE sampler needs its noise z [steps, n, S, S, C]");
        return -1;
    }
    memcpy(tr->x, x_init, (size_t)s->n * s->img * sizeof *tr->x);
    sampler_loop(s, m, a, tokens, z, NULL, tr);
    return 0;
}

int sampler_run(Sampler *s, const Model *m, Activations *a, const int32_t *tokens, Rng *rng,
                Trajectory *tr, char *err, size_t errlen)
{
    if (sampler_check(s, m, a, tokens, tr, err, errlen) != 0) return -1;
    int n = s->n, g = s->cfg.noise_group;
    size_t img = s->img;
    int first = s->cfg.noise_first, total = s->total;
    if (g == 0) {
        draw_rows(rng, tr->x, first, n, total, img);
    } else {
        /* one draw per group of g, spread downwards: the source of trajectory k is k / g <= k,
         * so no source is overwritten before it has been copied. A slice starts on a group
         * (noise_first is a multiple of g), so its local trajectory k takes the slice's draw
         * k / g, draw first / g + k / g of the whole batch. */
        int draws = (n + g - 1) / g;
        draw_rows(rng, tr->x, first / g, draws, (total + g - 1) / g, img);
        for (int k = n - 1; k >= 0; k--)
            if (k / g != k)
                memcpy(tr->x + (size_t)k * img, tr->x + (size_t)(k / g) * img, img * sizeof *tr->x);
    }
    sampler_loop(s, m, a, tokens, NULL, rng, tr);
    return 0;
}
