/*
 * test_adamw.c: the engine's AdamW (worker/engine/adamw.c) against PyTorch.
 * tests/reference/make_adamw_fixture.py ran torch.nn.utils.clip_grad_norm_ + torch.optim.AdamW in
 * float64 for four steps over 3001 parameters, with gradients whose norms make clipping bind on
 * steps 0 and 2 only. The float32 engine must match the parameters after every step to a
 * relative error of 1e-5 (max|engine - ref| / max|ref|) and each step's change to 1e-4, return
 * the unclipped norm, and give the same bits for any thread count. A double-precision hand
 * computation on a tiny vector covers grad_clip <= 0 (no clipping) and the clip coefficient.
 */
#include <stdlib.h>

#include "adamw.h"
#include "ops.h"
#include "rng.h"
#include "safetensors.h"
#include "test.h"

#define FIXTURE "tests/reference/fixtures/adamw.safetensors"
#define PARAM_TOL 1e-5  /* on the parameters themselves */
#define UPDATE_TOL 1e-4 /* on param.k - param.(k-1), about 1e-2 of the parameters' scale */
#define STEPS 4

static double rel_err(const float *a, const float *ref, size_t n)
{
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - ref[i]));
        scale = fmax(scale, fabs((double)ref[i]));
    }
    return scale > 0 ? diff / scale : diff;
}

/* The fixture, opened and checked: tensors of length n, hyperparameters and norms parsed. */
typedef struct {
    StFile *f;
    size_t n;
    AdamWConfig cfg;
    const float *param[STEPS + 1];  /* [n] param.0 .. param.4 */
    const float *update[STEPS + 1]; /* [n] update.1 .. update.4 (index 0 unused) */
    const float *grad[STEPS];       /* [n] grad.0 .. grad.3 */
    double norm[STEPS];             /* clip_grad_norm_'s result per step */
} Fixture;

static int meta_double(const StFile *f, const char *key, double *out)
{
    const char *s = st_meta(f, key);
    char *end;
    if (!s) {
        CHECK_MSG(0, "%s: no __metadata__ '%s'", FIXTURE, key);
        return -1;
    }
    *out = strtod(s, &end);
    CHECK_MSG(*end == '\0' && end != s, "%s: __metadata__ '%s' = \"%s\" is not a number", FIXTURE,
              key, s);
    return *end == '\0' && end != s ? 0 : -1;
}

/* Returns 0 with fx filled (close it with st_close(fx->f)), or -1 after recording a failure. */
static int fixture_open(Fixture *fx)
{
    char err[512], name[32];
    memset(fx, 0, sizeof *fx);
    if (st_open(FIXTURE, &fx->f, err, sizeof err) != 0) {
        CHECK_MSG(0, "%s", err);
        return -1;
    }
    double n, lr, b1, b2, eps, wd, clip, steps;
    if (meta_double(fx->f, "n", &n) || meta_double(fx->f, "steps", &steps) ||
        meta_double(fx->f, "lr", &lr) || meta_double(fx->f, "beta1", &b1) ||
        meta_double(fx->f, "beta2", &b2) || meta_double(fx->f, "eps", &eps) ||
        meta_double(fx->f, "weight_decay", &wd) || meta_double(fx->f, "grad_clip", &clip))
        goto fail;
    CHECK_MSG(steps == STEPS, "fixture has %g steps, expected %d", steps, STEPS);
    fx->n = (size_t)n;
    fx->cfg = (AdamWConfig){.lr = (float)lr, .beta1 = (float)b1, .beta2 = (float)b2,
                            .eps = (float)eps, .weight_decay = (float)wd, .grad_clip = (float)clip};
    const int64_t shape[1] = {(int64_t)fx->n};
    for (int k = 0; k <= STEPS; k++) {
        snprintf(name, sizeof name, "param.%d", k);
        if (!(fx->param[k] = st_get_f32(fx->f, name, 1, shape, err, sizeof err))) goto fail_err;
        if (k == 0) continue;
        snprintf(name, sizeof name, "update.%d", k);
        if (!(fx->update[k] = st_get_f32(fx->f, name, 1, shape, err, sizeof err))) goto fail_err;
    }
    for (int k = 0; k < STEPS; k++) {
        snprintf(name, sizeof name, "grad.%d", k);
        if (!(fx->grad[k] = st_get_f32(fx->f, name, 1, shape, err, sizeof err))) goto fail_err;
        snprintf(name, sizeof name, "norm.%d", k);
        if (meta_double(fx->f, name, &fx->norm[k])) goto fail;
    }
    return 0;
fail_err:
    CHECK_MSG(0, "%s", err);
fail:
    st_close(fx->f);
    fx->f = NULL;
    return -1;
}

/* Runs the fixture's four steps with cfg from param.0 into params[n] (the caller's buffer),
 * storing each step's returned norm. Returns 0, or -1 when adamw_init fails. */
static int run_steps(const Fixture *fx, const AdamWConfig *cfg, float *params, double *norms)
{
    AdamW opt;
    if (adamw_init(&opt, cfg, fx->n) != 0) return -1;
    memcpy(params, fx->param[0], fx->n * sizeof *params);
    for (int k = 0; k < STEPS; k++) norms[k] = adamw_step(&opt, params, fx->grad[k]);
    adamw_free(&opt);
    return 0;
}

static void test_matches_torch(void)
{
    Fixture fx;
    if (fixture_open(&fx)) return;
    float *p = malloc(fx.n * sizeof *p), *prev = malloc(fx.n * sizeof *prev);
    float *delta = malloc(fx.n * sizeof *delta);
    AdamW opt;
    CHECK(p && prev && delta);
    if (!p || !prev || !delta || adamw_init(&opt, &fx.cfg, fx.n) != 0) {
        CHECK_MSG(0, "out of memory");
        goto done;
    }
    CHECK(opt.step == 0);
    memcpy(p, fx.param[0], fx.n * sizeof *p);
    int clipped = 0, unclipped = 0;
    for (int k = 0; k < STEPS; k++) {
        memcpy(prev, p, fx.n * sizeof *p);
        double norm = adamw_step(&opt, p, fx.grad[k]);
        CHECK_MSG(opt.step == k + 1, "after step %d the counter is %lld", k + 1,
                  (long long)opt.step);
        /* the norm before clipping: torch's (float64 over the same F32 values) and our own */
        CHECK_CLOSE(norm, fx.norm[k], 0.0, 1e-9);
        CHECK(norm == grad_global_norm(fx.grad[k], fx.n));
        if (norm > fx.cfg.grad_clip) clipped++; else unclipped++;

        double ep = rel_err(p, fx.param[k + 1], fx.n);
        for (size_t i = 0; i < fx.n; i++) delta[i] = p[i] - prev[i];
        double eu = rel_err(delta, fx.update[k + 1], fx.n);
        CHECK_MSG(ep <= PARAM_TOL, "step %d: params relative error %.3e > %g", k + 1, ep, PARAM_TOL);
        CHECK_MSG(eu <= UPDATE_TOL, "step %d: update relative error %.3e > %g", k + 1, eu,
                  UPDATE_TOL);
        fprintf(stderr, "  step %d: norm %.6f%s, params rel err %.2e, update rel err %.2e\n",
                k + 1, norm, norm > fx.cfg.grad_clip ? " (clipped)" : "", ep, eu);
    }
    /* the fixture must exercise both branches, or it proves less than it claims */
    CHECK_MSG(clipped >= 1 && unclipped >= 1, "clipping bound on %d of %d steps", clipped, STEPS);
    adamw_free(&opt);
done:
    free(p);
    free(prev);
    free(delta);
    st_close(fx.f);
}

/* Ignoring the clip must move the result outside the tolerance, so the fixture can tell. */
static void test_fixture_detects_missing_clip(void)
{
    Fixture fx;
    if (fixture_open(&fx)) return;
    float *p = malloc(fx.n * sizeof *p);
    double norms[STEPS];
    AdamWConfig cfg = fx.cfg;
    cfg.grad_clip = 0.0f;
    if (!p || run_steps(&fx, &cfg, p, norms) != 0) {
        CHECK_MSG(0, "out of memory");
    } else {
        double e = rel_err(p, fx.param[STEPS], fx.n);
        CHECK_MSG(e > 10 * PARAM_TOL, "unclipped run is within %.3e of the clipped reference", e);
        for (int k = 0; k < STEPS; k++) CHECK_CLOSE(norms[k], fx.norm[k], 0.0, 1e-9);
    }
    free(p);
    st_close(fx.f);
}

/* One AdamW step in double precision, the textbook way: g scaled by `scale`, then
 * m, v, bias correction at step t, and decoupled weight decay on the parameter before the step. */
static void hand_step(const AdamWConfig *c, int t, double scale, double *p, double *m, double *v,
                      const float *g, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double gi = g[i] * scale;
        m[i] = c->beta1 * m[i] + (1 - c->beta1) * gi;
        v[i] = c->beta2 * v[i] + (1 - c->beta2) * gi * gi;
        double mhat = m[i] / (1 - pow(c->beta1, t)), vhat = v[i] / (1 - pow(c->beta2, t));
        p[i] = p[i] * (1 - c->lr * c->weight_decay) - c->lr * mhat / (sqrt(vhat) + c->eps);
    }
}

enum { TINY_N = 5 };
static const float tiny_p0[TINY_N] = {1.0f, -2.0f, 0.5f, 0.0f, 3.0f};
static const float tiny_g[2][TINY_N] = {
    {30.0f, -40.0f, 0.0f, 0.5f, -0.25f}, /* norm ~50.0: far above the clip of 1 */
    {-0.3f, 0.1f, 0.2f, 0.0f, 0.4f},     /* norm ~0.548: below it */
};

/* Runs two engine steps on the tiny vector with cfg and compares with hand_step, using the
 * clip coefficient the engine documents (clip / (norm + 1e-6) when norm > clip > 0). */
static void tiny_case(const AdamWConfig *cfg, float out[TINY_N])
{
    AdamW opt;
    float p[TINY_N];
    double hp[TINY_N], hm[TINY_N] = {0}, hv[TINY_N] = {0};
    memcpy(p, tiny_p0, sizeof p);
    for (int i = 0; i < TINY_N; i++) hp[i] = tiny_p0[i];
    if (adamw_init(&opt, cfg, TINY_N) != 0) {
        CHECK_MSG(0, "out of memory");
        return;
    }
    for (int t = 1; t <= 2; t++) {
        const float *g = tiny_g[t - 1];
        double sq = 0;
        for (int i = 0; i < TINY_N; i++) sq += (double)g[i] * g[i];
        double norm = sqrt(sq), scale = 1.0;
        if (cfg->grad_clip > 0 && norm > cfg->grad_clip) scale = cfg->grad_clip / (norm + 1e-6);
        double got = adamw_step(&opt, p, g);
        CHECK_CLOSE(got, norm, 0.0, 1e-12);
        CHECK(opt.step == t);
        hand_step(cfg, t, scale, hp, hm, hv, g, TINY_N);
        for (int i = 0; i < TINY_N; i++) CHECK_CLOSE(p[i], hp[i], 1e-6, 1e-6);
    }
    memcpy(out, p, sizeof p);
    adamw_free(&opt);
}

static void test_clip_disabled_by_nonpositive(void)
{
    AdamWConfig cfg = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f,
                       .weight_decay = 0.1f, .grad_clip = 0.0f};
    float off0[TINY_N], off_neg[TINY_N], on[TINY_N];
    tiny_case(&cfg, off0);
    cfg.grad_clip = -1.0f;
    tiny_case(&cfg, off_neg);
    CHECK(memcmp(off0, off_neg, sizeof off0) == 0);
    cfg.grad_clip = 1.0f;
    tiny_case(&cfg, on);
    /* a clipped first step shrinks the moments relative to the second step's gradient */
    double diff = 0;
    for (int i = 0; i < TINY_N; i++) diff = fmax(diff, fabs((double)on[i] - off0[i]));
    CHECK_MSG(diff > 1e-4, "clipping at 1 changed the result by only %.3e", diff);
}

/* The same bits for 1 and 2 threads: on the fixture and on a vector long enough for several of
 * grad_global_norm's chunks. */
static void test_threads_deterministic(void)
{
    int saved = engine_threads();
    Fixture fx;
    if (fixture_open(&fx) == 0) {
        float *p1 = malloc(fx.n * sizeof *p1), *p2 = malloc(fx.n * sizeof *p2);
        double n1[STEPS], n2[STEPS];
        if (!p1 || !p2) {
            CHECK_MSG(0, "out of memory");
        } else {
            engine_set_threads(1);
            int r1 = run_steps(&fx, &fx.cfg, p1, n1);
            engine_set_threads(2);
            int r2 = run_steps(&fx, &fx.cfg, p2, n2);
            CHECK(r1 == 0 && r2 == 0);
            CHECK_MSG(memcmp(p1, p2, fx.n * sizeof *p1) == 0, "fixture: params differ");
            CHECK_MSG(memcmp(n1, n2, sizeof n1) == 0, "fixture: norms differ");
        }
        free(p1);
        free(p2);
        st_close(fx.f);
    }

    const size_t n = 5 * 4096 + 77;
    AdamWConfig cfg = {.lr = 3e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                       .weight_decay = 0.05f, .grad_clip = 10.0f};
    float *p0 = malloc(n * sizeof *p0), *g = malloc(3 * n * sizeof *g);
    float *p[2] = {malloc(n * sizeof(float)), malloc(n * sizeof(float))};
    AdamW opt[2];
    double norms[2][3];
    memset(opt, 0, sizeof opt);
    if (!p0 || !g || !p[0] || !p[1]) {
        CHECK_MSG(0, "out of memory");
        goto done;
    }
    Rng rng;
    rng_seed(&rng, 77);
    rng_normal(&rng, p0, n);
    rng_normal(&rng, g, 3 * n); /* norm ~ sqrt(n) ~ 144: clipped to 10 */
    for (int r = 0; r < 2; r++) {
        engine_set_threads(r + 1);
        if (adamw_init(&opt[r], &cfg, n) != 0) {
            CHECK_MSG(0, "out of memory");
            goto done;
        }
        memcpy(p[r], p0, n * sizeof *p0);
        for (int k = 0; k < 3; k++) norms[r][k] = adamw_step(&opt[r], p[r], g + k * n);
    }
    CHECK_MSG(memcmp(p[0], p[1], n * sizeof(float)) == 0, "long vector: params differ");
    CHECK_MSG(memcmp(opt[0].m, opt[1].m, n * sizeof(float)) == 0, "long vector: m differs");
    CHECK_MSG(memcmp(opt[0].v, opt[1].v, n * sizeof(float)) == 0, "long vector: v differs");
    CHECK_MSG(memcmp(norms[0], norms[1], sizeof norms[0]) == 0, "long vector: norms differ");
    CHECK(norms[0][0] > cfg.grad_clip);
done:
    engine_set_threads(saved);
    adamw_free(&opt[0]);
    adamw_free(&opt[1]);
    free(p0);
    free(g);
    free(p[0]);
    free(p[1]);
}

int main(void)
{
    TEST_RUN(test_matches_torch);
    TEST_RUN(test_fixture_detects_missing_clip);
    TEST_RUN(test_clip_disabled_by_nonpositive);
    TEST_RUN(test_threads_deterministic);
    return test_summary("adamw");
}
