/*
 * test_sampler.c: the samplers (worker/engine/sampler.c) against the float64 PyTorch reference
 * (tests/reference/sampler_ref.py, fixture written by make_sampler_fixtures.py), plus the
 * properties algorithm.md states: the first flow-SDE std of 0.70 at 17 steps / shift 3 / eta 0.7,
 * the log-probability at x' = mu, its gradient, guidance with w = 1, determinism across thread
 * counts and batch sizes, shared initial noise, the documented order of noise draws, and
 * data-parallel slices that draw exactly their rows' noise of the whole batch.
 * Parity is measured as max|c - ref| / max|ref| per tensor and must be <= 1e-4.
 */
#include <stdlib.h>

#include "checkpoint.h"
#include "model.h"
#include "ops.h"
#include "rng.h"
#include "safetensors.h"
#include "sampler.h"
#include "test.h"
#include "tokenizer.h"

static const float *get(const StFile *f, const char *name)
{
    char err[256];
    const float *p = st_get_f32(f, name, -1, NULL, err, sizeof err);
    if (!p) fprintf(stderr, "  %s\n", err);
    return p;
}

static void test_schedule(void)
{
    StFile *f = NULL;
    char err[256];
    if (st_open(FIXTURES "sampler.safetensors", &f, err, sizeof err)) TEST_SKIP("%s", err);
    float s17[18], s5[6];
    flow_schedule(17, 3.0f, s17);
    flow_schedule(5, 1.0f, s5);
    const float *r17 = get(f, "schedule.17"), *r5 = get(f, "schedule.5");
    CHECK(r17 && r5);
    if (r17 && r5) {
        CHECK(test_rel_err(s17, r17, 18) <= 1e-7);
        CHECK(test_rel_err(s5, r5, 6) <= 1e-7);
    }
    CHECK(s17[0] == 1.0f && s17[17] == 0.0f);
    for (int i = 0; i < 17; i++) CHECK(s17[i + 1] < s17[i]);
    CHECK_CLOSE(s5[1], 0.8, 1e-7, 0);
    CHECK_CLOSE(s17[1], 0.979592, 1e-6, 0); /* 3*(16/17) / (1 + 2*(16/17)) = 48/49 */
    st_close(f);
}

/* The eta the fixture was made with for an SDE kind (make_sampler_fixtures.py: ETA, or CPS_ETA
 * for cps, in the metadata); NaN when the entry is missing, which fails every comparison. */
static float fixture_eta(const StFile *f, SdeKind kind)
{
    const char *s = st_meta(f, kind == SDE_CPS ? "cps_eta" : "eta");
    return s ? strtof(s, NULL) : NAN;
}

static void test_step_against_reference(void)
{
    StFile *f = NULL;
    char err[256];
    if (st_open(FIXTURES "sampler.safetensors", &f, err, sizeof err)) TEST_SKIP("%s", err);
    const float *x = get(f, "step.x"), *v = get(f, "step.v"), *z = get(f, "step.z");
    if (!x || !v || !z) {
        CHECK(0);
        st_close(f);
        return;
    }
    enum { n = 2, img = 4 * 4 * 3 };
    float sig[18], mu[n * img], xn[n * img];
    flow_schedule(17, 3.0f, sig);
    const int cases[] = {0, 1, 8, 15, 16};
    const char *names[] = {"flow", "dance", "cps"};
    double worst_mu = 0, worst_std = 0, worst_lp = 0;
    for (int k = 0; k < 3; k++) {
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            int i = cases[c];
            SdeStep st;
            sde_step_coeffs(sig, 17, i, (SdeKind)k, fixture_eta(f, (SdeKind)k), &st);
            sde_mean(&st, x, v, n * img, mu);
            sde_sample(mu, st.std, z, n * img, xn);
            float lp[n];
            for (int b = 0; b < n; b++) lp[b] = sde_logp(xn + b * img, mu + b * img, st.std, img);
            char name[64];
            snprintf(name, sizeof name, "step.%s.%d.mu", names[k], i);
            const float *rmu = get(f, name);
            snprintf(name, sizeof name, "step.%s.%d.std", names[k], i);
            const float *rstd = get(f, name);
            snprintf(name, sizeof name, "step.%s.%d.logp", names[k], i);
            const float *rlp = get(f, name);
            if (!rmu || !rstd || !rlp) {
                CHECK(0);
                continue;
            }
            /* the last cps step is deterministic: std and logp 0 on both sides */
            double em = test_rel_err(mu, rmu, n * img);
            double es = *rstd == 0.0f ? fabs(st.std) : test_rel_err(&st.std, rstd, 1);
            double el = *rstd == 0.0f ? fabs(lp[0]) + fabs(lp[1]) : test_rel_err(lp, rlp, n);
            CHECK_MSG(em <= TOLERANCE, "%s step %d: mu relative error %.3e", names[k], i, em);
            CHECK_MSG(es <= TOLERANCE, "%s step %d: std %.9g vs %.9g", names[k], i, st.std, *rstd);
            CHECK_MSG(el <= TOLERANCE, "%s step %d: logp relative error %.3e", names[k], i, el);
            worst_mu = fmax(worst_mu, em), worst_std = fmax(worst_std, es);
            worst_lp = fmax(worst_lp, el);
        }
    }
    fprintf(stderr,
            "  single steps (flow, dance, cps x 5 sigmas): worst relative error mu %.2e, std %.2e, "
            "logp %.2e\n",
            worst_mu, worst_std, worst_lp);
    st_close(f);
}

static void test_first_step_std(void)
{
    float sig[18];
    flow_schedule(17, 3.0f, sig);
    SdeStep st;
    sde_step_coeffs(sig, 17, 0, SDE_FLOW, 0.7f, &st);
    CHECK_CLOSE(st.std, 0.70, 1e-3, 0); /* algorithm.md: "comes out at 0.70" */
    CHECK_CLOSE(st.sigma_t, 4.9, 1e-4, 0);
    sde_step_coeffs(sig, 17, 0, SDE_DANCE, 0.7f, &st);
    CHECK_CLOSE(st.std, 0.7 * sqrt(1.0 - 48.0 / 49.0), 1e-6, 0);
    /* flow and dance agree where sigma / (1 - sigma) = 1, i.e. sigma = 0.5 */
    float s2[3] = {1.0f, 0.5f, 0.0f};
    SdeStep a, b;
    sde_step_coeffs(s2, 2, 1, SDE_FLOW, 0.7f, &a);
    sde_step_coeffs(s2, 2, 1, SDE_DANCE, 0.7f, &b);
    CHECK(a.std == b.std && a.cx == b.cx && a.cv == b.cv);
    /* one step from 1 to 0: sigma_g = sigmas[1] = 0, no division by zero */
    float s1[2] = {1.0f, 0.0f};
    sde_step_coeffs(s1, 1, 0, SDE_FLOW, 0.7f, &a);
    CHECK(isfinite(a.std) && isfinite(a.cx) && isfinite(a.cv));
    CHECK_CLOSE(a.std, 0.7, 1e-6, 0);
}

/* cps keeps the coefficients of x_t = (1 - t) x0 + t eps: when the model's velocity is exact
 * (v = eps - x0), every step's mean holds (1 - sigma_next) x0 + sigma_next cos(theta) eps and
 * its std is sigma_next sin(theta), so x_next has noise of total scale sigma_next. As eta goes
 * to 0 the step becomes the Euler (ODE) step. */
static void test_cps_preserves_coefficients(void)
{
    enum { n = 48 };
    float sig[12], x0[n], eps[n], x[n], v[n], mu[n], ode[n];
    flow_schedule(11, 3.0f, sig);
    Rng r;
    rng_seed(&r, 9);
    rng_normal(&r, x0, n);
    rng_normal(&r, eps, n);
    const float etas[] = {0.3f, 0.7f, 1.0f};
    for (size_t e = 0; e < sizeof etas / sizeof etas[0]; e++) {
        double theta = etas[e] * M_PI / 2.0;
        for (int i = 0; i < 11; i++) {
            double s = sig[i], sn = sig[i + 1];
            for (int k = 0; k < n; k++) {
                x[k] = (float)((1.0 - s) * x0[k] + s * eps[k]);
                v[k] = eps[k] - x0[k];
            }
            SdeStep st;
            sde_step_coeffs(sig, 11, i, SDE_CPS, etas[e], &st);
            sde_mean(&st, x, v, n, mu);
            double worst = 0.0;
            for (int k = 0; k < n; k++) {
                double want = (1.0 - sn) * x0[k] + sn * cos(theta) * eps[k];
                worst = fmax(worst, fabs(mu[k] - want));
            }
            CHECK_MSG(worst <= 2e-6, "eta %g step %d: mean off by %.3e", etas[e], i, worst);
            CHECK_CLOSE(st.std, sn * sin(theta), 1e-6, 1e-6);
            CHECK_CLOSE(st.sigma_t, sin(theta), 1e-6, 0);
        }
    }
    SdeStep last;
    sde_step_coeffs(sig, 11, 10, SDE_CPS, 0.8f, &last);
    CHECK(last.std == 0.0f); /* sigma_11 = 0: the last step lands on x0_hat */
    CHECK(sde_logp(x, x, 0.0f, n) == 0.0f);
    for (int i = 0; i < 11; i++) {
        SdeStep st;
        sde_step_coeffs(sig, 11, i, SDE_CPS, 1e-3f, &st);
        sde_mean(&st, x, v, n, mu);
        ode_step(x, v, sig[i], sig[i + 1], n, ode);
        double e = test_rel_err(mu, ode, n);
        CHECK_MSG(e <= 1e-5, "eta 1e-3 step %d: %.3e from the Euler step", i, e);
    }
}

static void test_logp_pieces(void)
{
    enum { n = 37 };
    float mu[n], xn[n], z[n], dmu[n];
    Rng r;
    rng_seed(&r, 3);
    rng_normal(&r, mu, n);
    rng_normal(&r, z, n);
    float s = 0.37f;
    /* at x' = mu only the normalisation is left */
    CHECK_CLOSE(sde_logp(mu, mu, s, n), -log(0.37) - 0.5 * log(2 * M_PI), 1e-6, 0);
    sde_sample(mu, s, z, n, xn);
    double want = 0;
    for (int k = 0; k < n; k++) want += -0.5 * z[k] * z[k];
    want = want / n - log(0.37) - 0.5 * log(2 * M_PI);
    CHECK_CLOSE(sde_logp(xn, mu, s, n), want, 1e-5, 1e-5);

    /* the gradient against central differences (logp is quadratic in mu: exact up to rounding) */
    sde_logp_grad_mu(xn, mu, s, n, 2.0f, dmu);
    for (int k = 0; k < n; k += 6) {
        float save = mu[k], eps = 1e-2f;
        mu[k] = save + eps;
        double up = sde_logp(xn, mu, s, n);
        mu[k] = save - eps;
        double dn = sde_logp(xn, mu, s, n);
        mu[k] = save;
        double fd = 2.0 * (up - dn) / (2.0 * eps);
        CHECK_CLOSE(dmu[k], fd, 2e-4, 2e-3);
        CHECK_CLOSE(dmu[k], 2.0 * (xn[k] - mu[k]) / (s * s * n), 1e-6, 1e-5);
    }

    /* the ODE step and x0 prediction */
    float x[3] = {1, 2, 3}, v[3] = {0.5f, -1, 2}, o[3];
    ode_step(x, v, 0.8f, 0.6f, 3, o);
    CHECK_CLOSE(o[0], 0.9, 1e-6, 0);
    CHECK_CLOSE(o[1], 2.2, 1e-6, 0);
    predict_x0(x, v, 0.5f, 3, o);
    CHECK_CLOSE(o[2], 2.0, 1e-6, 0);
    /* the mean written through the coefficients equals the formula of algorithm.md */
    float sig[18];
    flow_schedule(17, 3.0f, sig);
    SdeStep st;
    sde_step_coeffs(sig, 17, 5, SDE_FLOW, 0.7f, &st);
    double sg = sig[5], h = sig[5] - sig[6], stt = st.sigma_t;
    double mu_ref = x[1] - h * (v[1] + stt * stt / (2 * sg) * (x[1] + (1 - sg) * v[1]));
    sde_mean(&st, x, v, 3, o);
    CHECK_CLOSE(o[1], mu_ref, 1e-6, 1e-6);
}

/* Loads the tiny model; returns 0 or skips. */
static int load_tiny(Model *m, Vocab *vocab)
{
    char err[512];
    if (checkpoint_load(FIXTURES "tiny_model.safetensors", m, vocab, NULL, err, sizeof err)) {
        fprintf(stderr, "  %s\n", err);
        return -1;
    }
    return 0;
}

/* Runs one configuration with explicit noise at the given model batch size. */
static Trajectory *run_noise(const Model *m, const SamplerConfig *sc, int n, int B,
                             const int32_t *tokens, const float *x_init, const float *z)
{
    char err[256];
    Sampler *s = sampler_new(&m->cfg, sc, n, B, err, sizeof err);
    Activations *a = acts_new(&m->cfg, B);
    Trajectory *tr = trajectory_new(&m->cfg, n, sc->steps);
    int rc = s && a && tr ? sampler_run_noise(s, m, a, tokens, x_init, z, tr, err, sizeof err) : -1;
    CHECK_MSG(rc == 0, "%s", err);
    sampler_free(s);
    acts_free(a);
    if (rc) {
        trajectory_free(tr);
        return NULL;
    }
    return tr;
}

static void test_full_samples_against_reference(void)
{
    Model m;
    Vocab vocab;
    StFile *f = NULL;
    char err[256];
    if (st_open(FIXTURES "sampler.safetensors", &f, err, sizeof err)) TEST_SKIP("%s", err);
    if (load_tiny(&m, &vocab)) {
        st_close(f);
        TEST_SKIP("no tiny model");
    }
    const int32_t *tokens = st_get_i32(f, "tokens", -1, NULL, NULL, 0);
    const float *x_init = get(f, "x_init"), *z = get(f, "z");
    CHECK(tokens && x_init && z);
    if (!tokens || !x_init || !z) goto done;
    int n = 3, N = 8;
    size_t img = cfg_image_numel(&m.cfg), ni = (size_t)n * img;
    SamplerConfig sc;
    sampler_config_default(&sc);
    sc.steps = N;
    sc.shift = 3.0f;

    struct {
        const char *name;
        SamplerKind kind;
        SdeKind sde;
        int guidance;
    } runs[] = {{"ode", SAMPLER_ODE, SDE_FLOW, 0},
                {"sde_flow", SAMPLER_SDE, SDE_FLOW, 0},
                {"sde_dance", SAMPLER_SDE, SDE_DANCE, 0},
                {"sde_cps", SAMPLER_SDE, SDE_CPS, 0},
                {"ode_cfg", SAMPLER_ODE, SDE_FLOW, 1}};
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        sc.kind = runs[r].kind;
        sc.sde = runs[r].sde;
        sc.eta = fixture_eta(f, runs[r].sde);
        sc.guidance = runs[r].guidance;
        sc.cfg_scale = 2.5f;
        /* batch 2 for 3 trajectories: one full batch and one padded one */
        Trajectory *tr = run_noise(&m, &sc, n, 2, tokens, x_init, z);
        if (!tr) continue;
        char name[64];
        const float *ref;
        fprintf(stderr, "  %-9s relative error:", runs[r].name);
        snprintf(name, sizeof name, "%s.x0_hat", runs[r].name);
        if ((ref = get(f, name))) {
            double e = test_rel_err(tr->x0_hat, ref, ni);
            CHECK_MSG(e <= TOLERANCE, "%s: %.3e", name, e);
            fprintf(stderr, " x0_hat %.2e", e);
        }
        snprintf(name, sizeof name, "%s.x", runs[r].name);
        if (st_find(f, name) && (ref = get(f, name))) {
            double e = test_rel_err(tr->x, ref, (size_t)(N + 1) * ni);
            CHECK_MSG(e <= TOLERANCE, "%s: %.3e", name, e);
            fprintf(stderr, " x[0..%d] %.2e", N, e);
        }
        snprintf(name, sizeof name, "%s.logp", runs[r].name);
        if (st_find(f, name) && (ref = get(f, name))) {
            double e = test_rel_err(tr->logp, ref, (size_t)N * n);
            CHECK_MSG(e <= TOLERANCE, "%s: %.3e", name, e);
            fprintf(stderr, " logp %.2e", e);
        }
        fputc('\n', stderr);
        if (runs[r].kind == SAMPLER_ODE) {
            /* the ODE's last step lands on x0_hat; logp is 0 */
            CHECK(test_rel_err(tr->x + (size_t)N * ni, tr->x0_hat, ni) <= 1e-6);
            for (int k = 0; k < N * n; k++) CHECK(tr->logp[k] == 0.0f);
        }
        if (runs[r].sde == SDE_CPS && runs[r].kind == SAMPLER_SDE) {
            /* so does cps's deterministic last step, whose logp is 0; the others are densities */
            CHECK(test_rel_err(tr->x + (size_t)N * ni, tr->x0_hat, ni) <= 1e-6);
            for (int k = 0; k < n; k++) CHECK(tr->logp[(size_t)(N - 1) * n + k] == 0.0f);
            for (int k = 0; k < (N - 1) * n; k++)
                CHECK(isfinite(tr->logp[k]) && tr->logp[k] != 0.0f);
        }
        trajectory_free(tr);
    }
done:
    st_close(f);
    vocab_free(&vocab);
    model_free(&m);
}

/* Fills x_init and z with noise and tokens with prompts for n trajectories. */
static void make_inputs(const ModelConfig *c, int n, int steps, int32_t *tokens, float *x_init,
                        float *z)
{
    Rng r;
    rng_seed(&r, 77);
    size_t img = cfg_image_numel(c);
    rng_normal(&r, x_init, (size_t)n * img);
    if (z) rng_normal(&r, z, (size_t)steps * n * img);
    for (int b = 0; b < n; b++)
        for (int i = 0; i < c->text_len; i++)
            tokens[b * c->text_len + i] =
                i < 2 + b % 4 ? 2 + (b * 7 + i * 3) % (c->vocab_size - 2) : 0;
}

static void test_guidance_w1_and_batch_sizes(void)
{
    Model m;
    Vocab vocab;
    if (load_tiny(&m, &vocab)) TEST_SKIP("no tiny model");
    int n = 5, N = 6;
    size_t img = cfg_image_numel(&m.cfg), ni = (size_t)n * img;
    int32_t *tokens = malloc((size_t)n * m.cfg.text_len * sizeof *tokens);
    float *x_init = malloc(ni * sizeof *x_init), *z = malloc((size_t)N * ni * sizeof *z);
    make_inputs(&m.cfg, n, N, tokens, x_init, z);
    SamplerConfig sc;
    sampler_config_default(&sc);
    sc.steps = N;
    Trajectory *plain = run_noise(&m, &sc, n, 2, tokens, x_init, z);
    sc.guidance = 1;
    sc.cfg_scale = 1.0f;
    Trajectory *w1 = run_noise(&m, &sc, n, 2, tokens, x_init, z);
    sc.cfg_scale = 0.0f; /* w = 0: purely unconditional */
    Trajectory *w0 = run_noise(&m, &sc, n, 2, tokens, x_init, z);
    sc.guidance = 0;
    int32_t *pad = calloc((size_t)n * m.cfg.text_len, sizeof *pad);
    Trajectory *uncond = run_noise(&m, &sc, n, 2, pad, x_init, z);
    if (plain && w1 && w0 && uncond) {
        double e = test_rel_err(w1->x, plain->x, (size_t)(N + 1) * ni);
        CHECK_MSG(e <= 1e-5, "cfg w=1 vs conditional: %.3e", e);
        CHECK(test_rel_err(w1->logp, plain->logp, (size_t)N * n) <= 1e-5);
        CHECK(test_rel_err(w0->x0_hat, uncond->x0_hat, ni) <= 1e-5);
        CHECK(test_rel_err(w0->x0_hat, plain->x0_hat, ni) > 1e-3); /* the prompt matters */
    }
    /* the model batch size (1, 2 = a partial last batch, 5 = all, 8 = more than all) changes
     * nothing */
    int Bs[] = {1, 5, 8};
    for (size_t k = 0; plain && k < sizeof Bs / sizeof Bs[0]; k++) {
        Trajectory *t = run_noise(&m, &sc, n, Bs[k], tokens, x_init, z);
        if (!t) continue;
        double e = test_rel_err(t->x, plain->x, (size_t)(N + 1) * ni);
        CHECK_MSG(e <= 1e-5, "batch %d vs 2: %.3e", Bs[k], e);
        CHECK(test_rel_err(t->logp, plain->logp, (size_t)N * n) <= 1e-5);
        fprintf(stderr, "  batch %d vs batch 2: relative difference %.2e%s\n", Bs[k], e,
                e == 0 ? " (bit-identical)" : "");
        trajectory_free(t);
    }
    trajectory_free(plain);
    trajectory_free(w1);
    trajectory_free(w0);
    trajectory_free(uncond);
    free(pad);
    free(tokens);
    free(x_init);
    free(z);
    vocab_free(&vocab);
    model_free(&m);
}

/* sampler_run from an Rng: n trajectories, model batch B, at `threads` threads. */
static Trajectory *run_rng(const Model *m, const SamplerConfig *sc, int n, int B, int threads,
                           const int32_t *tokens, uint64_t seed, Rng *rng_out)
{
    char err[256];
    engine_set_threads(threads);
    Sampler *s = sampler_new(&m->cfg, sc, n, B, err, sizeof err);
    Activations *a = acts_new(&m->cfg, B);
    Trajectory *tr = trajectory_new(&m->cfg, n, sc->steps);
    Rng r;
    rng_seed(&r, seed);
    int rc = s && a && tr ? sampler_run(s, m, a, tokens, &r, tr, err, sizeof err) : -1;
    CHECK_MSG(rc == 0, "%s", err);
    if (rng_out) *rng_out = r;
    sampler_free(s);
    acts_free(a);
    if (rc) {
        trajectory_free(tr);
        return NULL;
    }
    return tr;
}

static int same_bits(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof *a) == 0;
}

static void test_threads_determinism(void)
{
    Model m;
    Vocab vocab;
    if (load_tiny(&m, &vocab)) TEST_SKIP("no tiny model");
    int n = 6, N = 5;
    size_t img = cfg_image_numel(&m.cfg), ni = (size_t)n * img;
    int32_t *tokens = malloc((size_t)n * m.cfg.text_len * sizeof *tokens);
    float *x_init = malloc(ni * sizeof *x_init);
    make_inputs(&m.cfg, n, N, tokens, x_init, NULL);
    SamplerConfig sc;
    sampler_config_default(&sc);
    sc.steps = N;
    sc.guidance = 1;
    sc.cfg_scale = 3.0f;
    int before = engine_threads();
    Trajectory *t1 = run_rng(&m, &sc, n, 4, 1, tokens, 9, NULL);
    Trajectory *t2 = run_rng(&m, &sc, n, 4, 2, tokens, 9, NULL);
    Trajectory *t3 = run_rng(&m, &sc, n, 4, 3, tokens, 9, NULL);
    Trajectory *o = run_rng(&m, &sc, n, 4, 2, tokens, 10, NULL);
    engine_set_threads(before);
    if (t1 && t2 && t3 && o) {
        size_t all = (size_t)(N + 1) * ni;
        CHECK(same_bits(t1->x, t2->x, all) && same_bits(t1->x, t3->x, all));
        CHECK(same_bits(t1->logp, t2->logp, (size_t)N * n) &&
              same_bits(t1->logp, t3->logp, (size_t)N * n));
        CHECK(same_bits(t1->x0_hat, t2->x0_hat, ni) && same_bits(t1->x0_hat, t3->x0_hat, ni));
        CHECK(!same_bits(t1->x0_hat, o->x0_hat, ni)); /* another seed, other samples */
    }
    trajectory_free(t1);
    trajectory_free(t2);
    trajectory_free(t3);
    trajectory_free(o);
    free(tokens);
    free(x_init);
    vocab_free(&vocab);
    model_free(&m);
}

static void test_noise_order_and_sharing(void)
{
    Model m;
    Vocab vocab;
    if (load_tiny(&m, &vocab)) TEST_SKIP("no tiny model");
    int n = 5, N = 4;
    size_t img = cfg_image_numel(&m.cfg), ni = (size_t)n * img;
    int32_t *tokens = malloc((size_t)n * m.cfg.text_len * sizeof *tokens);
    float *x_init = malloc(ni * sizeof *x_init), *z = malloc((size_t)N * ni * sizeof *z);
    make_inputs(&m.cfg, n, N, tokens, x_init, NULL);
    for (int b = 1; b < n; b++) /* one prompt for all, as a GRPO group */
        memcpy(tokens + b * m.cfg.text_len, tokens, m.cfg.text_len * sizeof *tokens);
    SamplerConfig sc;
    sampler_config_default(&sc);
    sc.steps = N;

    /* independent noise: the documented draws, replayed through the explicit-noise entry,
     * give the same bits, and the Rng ends past exactly those draws */
    Rng end;
    Trajectory *a = run_rng(&m, &sc, n, 2, 2, tokens, 5, &end);
    Rng r;
    rng_seed(&r, 5);
    rng_normal(&r, x_init, ni);
    for (int i = 0; i < N; i++) rng_normal(&r, z + (size_t)i * ni, ni);
    Trajectory *b = run_noise(&m, &sc, n, 2, tokens, x_init, z);
    if (a && b) {
        CHECK(same_bits(a->x, b->x, (size_t)(N + 1) * ni));
        CHECK(same_bits(a->logp, b->logp, (size_t)N * n));
        CHECK(end.counter == r.counter);
        CHECK(memcmp(a->x, a->x + img, img * sizeof(float)) != 0);
    }

    /* init_same_noise for all n: identical x_0, different x0_hat (variety from the SDE) */
    sc.noise_group = n;
    Trajectory *s = run_rng(&m, &sc, n, 2, 2, tokens, 5, NULL);
    if (s && a) {
        for (int k = 1; k < n; k++) {
            CHECK(same_bits(s->x, s->x + (size_t)k * img, img));
            CHECK(!same_bits(s->x0_hat, s->x0_hat + (size_t)k * img, img));
        }
        CHECK(same_bits(s->x, a->x, img)); /* the one draw is the first draw */
    }
    /* groups of 2: {0,1} {2,3} {4} */
    sc.noise_group = 2;
    Trajectory *g = run_rng(&m, &sc, n, 2, 2, tokens, 5, NULL);
    if (g && a) {
        CHECK(same_bits(g->x, g->x + img, img));
        CHECK(same_bits(g->x + 2 * img, g->x + 3 * img, img));
        CHECK(!same_bits(g->x, g->x + 2 * img, img));
        CHECK(!same_bits(g->x + 2 * img, g->x + 4 * img, img));
        CHECK(same_bits(g->x + 2 * img, a->x + img, img)); /* draw k is group k's */
        CHECK(same_bits(g->x + 4 * img, a->x + 2 * img, img));
    }
    /* the ODE from shared noise: every trajectory identical (one prompt) */
    sc.kind = SAMPLER_ODE;
    sc.noise_group = 100;
    Trajectory *od = run_rng(&m, &sc, n, 2, 2, tokens, 5, NULL);
    if (od)
        for (int k = 1; k < n; k++) CHECK(same_bits(od->x0_hat, od->x0_hat + (size_t)k * img, img));
    trajectory_free(a);
    trajectory_free(b);
    trajectory_free(s);
    trajectory_free(g);
    trajectory_free(od);
    free(tokens);
    free(x_init);
    free(z);
    vocab_free(&vocab);
    model_free(&m);
}

/* Trajectories that share an input (x_i and prompt) take one model row's velocity: six from one
 * initial noise, two prompts of three, sampled together give what each gives sampled alone. */
static void test_repeated_inputs_share_a_row(void)
{
    Model m;
    Vocab vocab;
    if (load_tiny(&m, &vocab)) TEST_SKIP("no tiny model");
    int n = 6, N = 4, T = m.cfg.text_len;
    size_t img = cfg_image_numel(&m.cfg), ni = (size_t)n * img;
    int32_t *tokens = malloc((size_t)n * T * sizeof *tokens);
    float *x_init = malloc(ni * sizeof *x_init), *z = malloc((size_t)N * ni * sizeof *z);
    float *z1 = malloc((size_t)N * img * sizeof *z1);
    make_inputs(&m.cfg, n, N, tokens, x_init, z);
    for (int b = 1; b < n; b++) {
        memcpy(x_init + (size_t)b * img, x_init, img * sizeof *x_init);
        memcpy(tokens + (size_t)b * T, tokens + (size_t)(b < 3 ? 0 : 3) * T, T * sizeof *tokens);
    }
    SamplerConfig sc;
    sampler_config_default(&sc);
    sc.steps = N;
    for (int guided = 0; guided <= 1; guided++) {
        sc.guidance = guided;
        sc.cfg_scale = 2.0f;
        Trajectory *all = run_noise(&m, &sc, n, 4, tokens, x_init, z);
        double worst = 0;
        for (int b = 0; all && b < n; b++) {
            for (int i = 0; i < N; i++)
                memcpy(z1 + (size_t)i * img, z + ((size_t)i * n + b) * img, img * sizeof *z1);
            Trajectory *one = run_noise(&m, &sc, 1, 1, tokens + (size_t)b * T, x_init, z1);
            if (!one) continue;
            for (int i = 0; i <= N; i++) {
                const float *xa = all->x + ((size_t)i * n + b) * img, *xo = one->x + i * img;
                worst = fmax(worst, test_rel_err(xa, xo, img));
                if (i < N) CHECK_CLOSE(all->logp[(size_t)i * n + b], one->logp[i], 0, 1e-5);
            }
            trajectory_free(one);
        }
        CHECK_MSG(worst <= 1e-5, "guided %d: together vs alone %.3e", guided, worst);
        fprintf(stderr, "  %s: 6 trajectories from one noise, together vs alone: %.2e\n",
                guided ? "guided" : "unguided", worst);
        trajectory_free(all);
    }
    free(tokens);
    free(x_init);
    free(z);
    free(z1);
    vocab_free(&vocab);
    model_free(&m);
}

/* Data-parallel slices: rows [f, f + k) of a batch of n, sampled alone from the same seed with
 * noise_first f and noise_total n, give those rows of the whole batch's run bit for bit (x at
 * every step, logp, x0_hat) and leave the Rng where the whole run leaves it; with independent
 * noise (including an odd start) and with groups of 3 sharing their initial noise. */
static void test_noise_slices(void)
{
    Model m;
    Vocab vocab;
    if (load_tiny(&m, &vocab)) TEST_SKIP("no tiny model");
    int n = 6, N = 3, T = m.cfg.text_len;
    size_t img = cfg_image_numel(&m.cfg);
    int32_t *tokens = malloc((size_t)n * T * sizeof *tokens);
    float *x_init = malloc((size_t)n * img * sizeof *x_init);
    make_inputs(&m.cfg, n, N, tokens, x_init, NULL);
    for (int b = 1; b < n; b++) /* distinct prompts: no row repeats another's input */
        CHECK(memcmp(tokens + (size_t)(b - 1) * T, tokens + (size_t)b * T, T * sizeof *tokens));
    /* the model batch: 3 lines the whole run's batches up with the slices [0, 3) and [3, 6),
     * as ranks that each run their slice in one batch; the odd slice [1, 4) is compared at
     * batch 1, since another grouping of rows into a GEMM may round differently */
    const struct {
        int group, first, count, batch;
    } cases[] = {{0, 0, 3, 3}, {0, 3, 3, 3}, {0, 1, 3, 1}, {3, 0, 3, 3}, {3, 3, 3, 3}};
    int threads = engine_threads();
    SamplerConfig sc;
    sampler_config_default(&sc);
    sc.steps = N;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int g = cases[c].group, f = cases[c].first, k = cases[c].count, B = cases[c].batch;
        sc.noise_group = g;
        sc.noise_first = sc.noise_total = 0;
        Rng whole_end, end;
        Trajectory *whole = run_rng(&m, &sc, n, B, threads, tokens, 7, &whole_end);
        sc.noise_first = f;
        sc.noise_total = n;
        Trajectory *part = run_rng(&m, &sc, k, B, threads, tokens + (size_t)f * T, 7, &end);
        if (whole && part) {
            if (g) /* the groups do share their initial noise */
                CHECK(same_bits(whole->x, whole->x + 2 * img, img) &&
                      !same_bits(whole->x, whole->x + 3 * img, img));
            int x_same = 1, logp_same = 1;
            for (int i = 0; i <= N; i++) {
                x_same &= same_bits(part->x + (size_t)i * k * img,
                                    whole->x + ((size_t)i * n + f) * img, (size_t)k * img);
                if (i < N)
                    logp_same &= same_bits(part->logp + (size_t)i * k,
                                           whole->logp + (size_t)i * n + f, (size_t)k);
            }
            CHECK_MSG(x_same, "group %d, rows [%d, %d): x differs from the whole run's", g, f,
                      f + k);
            CHECK_MSG(logp_same, "group %d, rows [%d, %d): logp differs", g, f, f + k);
            CHECK_MSG(same_bits(part->x0_hat, whole->x0_hat + (size_t)f * img, (size_t)k * img),
                      "group %d, rows [%d, %d): x0_hat differs", g, f, f + k);
            CHECK_MSG(end.key == whole_end.key && end.counter == whole_end.counter,
                      "group %d, rows [%d, %d): rng counter %llu, the whole run's %llu", g, f,
                      f + k, (unsigned long long)end.counter,
                      (unsigned long long)whole_end.counter);
        }
        trajectory_free(whole);
        trajectory_free(part);
    }
    /* and a slice is not simply the first rows of a run of its own size */
    sc.noise_group = 0;
    sc.noise_first = sc.noise_total = 0;
    Trajectory *alone = run_rng(&m, &sc, 3, 3, threads, tokens + 3 * (size_t)T, 7, NULL);
    sc.noise_first = 3;
    sc.noise_total = n;
    Trajectory *slice = run_rng(&m, &sc, 3, 3, threads, tokens + 3 * (size_t)T, 7, NULL);
    if (alone && slice) CHECK(!same_bits(alone->x, slice->x, 3 * img));
    trajectory_free(alone);
    trajectory_free(slice);

    /* slices that cannot be drawn */
    char err[256] = "";
    Sampler *bad;
    int B = 3;
    sampler_config_default(&sc);
    sc.steps = N;
    sc.noise_first = 4;
    sc.noise_total = 6;
    CHECK((bad = sampler_new(&m.cfg, &sc, 3, B, err, sizeof err)) == NULL &&
          strstr(err, "noise_total"));
    sampler_free(bad);
    sc.noise_first = 3;
    CHECK((bad = sampler_new(&m.cfg, &sc, 3, B, err, sizeof err)) != NULL); /* the last rows */
    sampler_free(bad);
    sc.noise_group = 2; /* rows 3 .. 5 would split the group {2, 3} */
    CHECK((bad = sampler_new(&m.cfg, &sc, 3, B, err, sizeof err)) == NULL &&
          strstr(err, "noise_first 3 is not a multiple of noise_group 2"));
    sampler_free(bad);
    sc.noise_group = 0;
    sc.noise_total = 0; /* a start without a batch */
    CHECK(sampler_config_validate(&sc, err, sizeof err) == -1 && strstr(err, "noise_total"));
    sc.noise_first = -1;
    sc.noise_total = 6;
    CHECK(sampler_config_validate(&sc, err, sizeof err) == -1 && strstr(err, "noise_first"));
    sc.noise_first = 0;
    sc.noise_total = -1;
    CHECK(sampler_config_validate(&sc, err, sizeof err) == -1 && strstr(err, "noise_total"));
    ModelConfig odd = m.cfg; /* 3 x 3 x 3 = 27 floats: rows off the Philox blocks */
    odd.image_size = 3;
    sc.noise_total = 6;
    CHECK((bad = sampler_new(&odd, &sc, 3, B, err, sizeof err)) == NULL &&
          strstr(err, "multiple of 4"));
    sampler_free(bad);
    sc.noise_total = 3; /* the whole batch needs no alignment */
    CHECK((bad = sampler_new(&odd, &sc, 3, B, err, sizeof err)) != NULL);
    sampler_free(bad);
    free(tokens);
    free(x_init);
    vocab_free(&vocab);
    model_free(&m);
}

static void test_errors(void)
{
    char err[256] = "";
    SamplerConfig sc;
    sampler_config_default(&sc);
    CHECK(sampler_config_validate(&sc, err, sizeof err) == 0);
    sc.steps = 0;
    CHECK(sampler_config_validate(&sc, err, sizeof err) == -1 && strstr(err, "steps"));
    sampler_config_default(&sc);
    sc.shift = -1;
    CHECK(sampler_config_validate(&sc, err, sizeof err) == -1 && strstr(err, "shift"));
    sampler_config_default(&sc);
    sc.eta = 0;
    CHECK(sampler_config_validate(&sc, err, sizeof err) == -1 && strstr(err, "eta"));
    sc.kind = SAMPLER_ODE; /* eta is the SDE's only */
    CHECK(sampler_config_validate(&sc, err, sizeof err) == 0);
    sampler_config_default(&sc);
    sc.guidance = 1;
    sc.cfg_scale = NAN;
    CHECK(sampler_config_validate(&sc, err, sizeof err) == -1 && strstr(err, "cfg_scale"));
    sampler_config_default(&sc);
    sc.steps = 1000; /* sigma_1 = 1 - 1e-10 rounds to 1: a step with h = 0 */
    sc.shift = 1e7f;
    CHECK(sampler_config_validate(&sc, err, sizeof err) == -1 && strstr(err, "same float"));
    sampler_config_default(&sc);
    sc.sde = SDE_CPS;
    sc.eta = 1.0f; /* all of the predicted noise replaced: allowed */
    CHECK(sampler_config_validate(&sc, err, sizeof err) == 0);
    sc.eta = 1.2f;
    CHECK(sampler_config_validate(&sc, err, sizeof err) == -1 && strstr(err, "eta") &&
          strstr(err, "cps"));
    sampler_config_default(&sc);
    sc.sde = (SdeKind)7;
    CHECK(sampler_config_validate(&sc, err, sizeof err) == -1 && strstr(err, "sde"));
    sampler_config_default(&sc);
    sc.noise_group = -1;
    CHECK(sampler_config_validate(&sc, err, sizeof err) == -1 && strstr(err, "noise_group"));

    Model m;
    Vocab vocab;
    if (load_tiny(&m, &vocab)) TEST_SKIP("no tiny model");
    sampler_config_default(&sc);
    sc.steps = 3;
    CHECK(sampler_new(&m.cfg, &sc, 0, 2, err, sizeof err) == NULL);
    Sampler *s = sampler_new(&m.cfg, &sc, 3, 2, err, sizeof err);
    Activations *a3 = acts_new(&m.cfg, 3), *a2 = acts_new(&m.cfg, 2);
    Trajectory *tr = trajectory_new(&m.cfg, 3, 3), *tr4 = trajectory_new(&m.cfg, 3, 4);
    int32_t tokens[3 * 8] = {0};
    Rng r;
    rng_seed(&r, 1);
    CHECK(sampler_run(s, &m, a3, tokens, &r, tr, err, sizeof err) == -1 && strstr(err, "batch"));
    CHECK(sampler_run(s, &m, a2, tokens, &r, tr4, err, sizeof err) == -1);
    tokens[9] = m.cfg.vocab_size;
    CHECK(sampler_run(s, &m, a2, tokens, &r, tr, err, sizeof err) == -1 &&
          strstr(err, "vocabulary"));
    tokens[9] = 2;
    CHECK(sampler_run(s, &m, a2, tokens, &r, tr, err, sizeof err) == 0);
    float x_init[3 * 768] = {0};
    CHECK(sampler_run_noise(s, &m, a2, tokens, x_init, NULL, tr, err, sizeof err) == -1 &&
          strstr(err, "noise"));
    CHECK(trajectory_new(&m.cfg, 0, 3) == NULL);
    sampler_free(s);
    acts_free(a3);
    acts_free(a2);
    trajectory_free(tr);
    trajectory_free(tr4);
    vocab_free(&vocab);
    model_free(&m);
}

int main(void)
{
    TEST_RUN(test_schedule);
    TEST_RUN(test_step_against_reference);
    TEST_RUN(test_first_step_std);
    TEST_RUN(test_cps_preserves_coefficients);
    TEST_RUN(test_logp_pieces);
    TEST_RUN(test_full_samples_against_reference);
    TEST_RUN(test_guidance_w1_and_batch_sizes);
    TEST_RUN(test_threads_determinism);
    TEST_RUN(test_noise_order_and_sharing);
    TEST_RUN(test_repeated_inputs_share_a_row);
    TEST_RUN(test_noise_slices);
    TEST_RUN(test_errors);
    return test_summary("sampler");
}
