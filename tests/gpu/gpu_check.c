/*
 * gpu_check.c: `make gpu-check`, the CUDA backend's parity tests and GPU benchmark in one
 * program, for a machine with a GPU, CUDA and a C compiler but none of the project's other
 * libraries (fixtures come from the .cgraw files beside the safetensors ones).
 *
 * Parity (each in fp32 mode against the 1e-4 bound, and in the default tf32 mode against 1e-3;
 * relative error = max|gpu - ref| / max|ref| per tensor):
 *   forward and backward of the tiny model against PyTorch (tiny_*.cgraw);
 *   samplers against PyTorch (sampler.cgraw): SDE flow and dance log-probabilities and final
 *     images, the ODE trajectory, classifier-free guidance; inference attention both through
 *     the batched products and the flash-style kernel;
 *   the GRPO step against PyTorch (grpo.cgraw): step-level, Chunk-GRPO, sequence-level and KL
 *     cases: ratios, losses, KL, clip decisions and the parameter gradient;
 *   AdamW with clipping against the CPU backend's adamw.c (itself checked against PyTorch);
 *   the device Philox noise against rng.c, bit for bit.
 * Benchmark (PyTorch on the same GPU in the same run, tests/gpu/bench_torch.py, whose docstring
 * defines the two workloads): SDE sampling image-steps per second and seconds per Chunk-GRPO
 * iteration, small and base presets, with the achieved TFLOP/s.
 *
 *   gpu_check FIXTURE_DIR [--no-bench] [--no-compile] [--python PY]
 * (--no-compile leaves out the torch.compile peer, whose compilation takes the longest).
 * Exit status 0 when every parity check passed.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cgraw.h"
#include "cuda_engine.h"
#include "../reference/perturb.h"

static int failures, checks;
static const char *fixdir;

static double rel_err(const float *a, const float *ref, size_t n)
{
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - ref[i]));
        scale = fmax(scale, fabs((double)ref[i]));
    }
    return scale > 0 ? diff / scale : diff;
}

/* Which precision a check runs in, and whether its bound counts: rows of a setting that the
 * product does not use by default (TF32 training) are printed as "info" for the record. */
typedef struct {
    CudaMath math;
    const char *pass; /* "sample" or "train" */
    int counted;
} Prec;

/* One table row of the parity section. */
static void report(const char *what, Prec p, double err, double bound)
{
    int ok = err <= bound;
    if (p.counted) checks++, failures += !ok;
    char prec[32];
    snprintf(prec, sizeof prec, "%s %s", p.pass, cuda_math_name(p.math));
    printf("  %-4s %-60s %-12s rel err %.2e (bound %.0e)\n",
           !p.counted ? "info"
           : ok       ? "ok"
                      : "FAIL",
           what, prec, err, bound);
}

/* The bounds: fp32 as the CPU backend, tf32 1e-3; bf16 (8-bit mantissas) is only
 * reported against a loose 3e-2. */
static double bound_of(CudaMath m)
{
    return m == CUDA_MATH_FP32 ? 1e-4 : m == CUDA_MATH_TF32 ? 1e-3 : 3e-2;
}

static CgRaw *open_fixture(const char *name)
{
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/%s.cgraw", fixdir, name);
    CgRaw *f = cgraw_open(path, err, sizeof err);
    if (!f) {
        fprintf(stderr, "gpu_check: %s\n", err);
        exit(2);
    }
    return f;
}

static const float *need_f32(const CgRaw *f, const char *name, size_t n)
{
    char err[512];
    const float *p = cgraw_f32(f, name, n, err, sizeof err);
    if (!p) fprintf(stderr, "gpu_check: %s\n", err), exit(2);
    return p;
}

static const int32_t *need_i32(const CgRaw *f, const char *name, size_t n)
{
    char err[512];
    const int32_t *p = cgraw_i32(f, name, n, err, sizeof err);
    if (!p) fprintf(stderr, "gpu_check: %s\n", err), exit(2);
    return p;
}

static const char *need_meta(const CgRaw *f, const char *key)
{
    const char *v = cgraw_meta(f, key);
    if (!v) fprintf(stderr, "gpu_check: %s: no meta %s\n", cgraw_path(f), key), exit(2);
    return v;
}

/* The tiny model of the fixtures: preset "tiny" with the fixture's vocabulary size, every
 * tensor loaded by name. */
static void load_tiny(Model *m)
{
    CgRaw *f = open_fixture("tiny_model");
    ModelConfig cfg;
    model_config_preset("tiny", &cfg);
    const CgTensor *te = cgraw_find(f, "txt.tok_emb");
    if (!te) fprintf(stderr, "gpu_check: tiny_model: no txt.tok_emb\n"), exit(2);
    cfg.vocab_size = (int)te->shape[0];
    if (model_init(m, &cfg)) fprintf(stderr, "gpu_check: out of memory\n"), exit(2);
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo *ti = &m->tensors[i];
        memcpy(m->params + ti->offset, need_f32(f, ti->name, ti->numel), ti->numel * 4);
    }
    cgraw_close(f);
}

static CudaEngine *engine_or_die(const Model *m, int batch, CudaMath math)
{
    char err[512];
    CudaEngine *e = cuda_engine_new(m, batch, math, err, sizeof err);
    if (!e) fprintf(stderr, "gpu_check: %s\n", err), exit(2);
    return e;
}

/* Worst per-tensor relative error of a gradient buffer against ref (model layout), with the
 * name of the worst tensor. */
static double grad_err(const Model *m, const float *g, const float *ref, const char **worst)
{
    double w = 0;
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo *ti = &m->tensors[i];
        double e = rel_err(g + ti->offset, ref + ti->offset, ti->numel);
        if (e > w) w = e, *worst = ti->name;
    }
    return w;
}

/* ---- parity -------------------------------------------------------------------------------- */

static void check_model(const Model *m, Prec pr)
{
    CudaMath math = pr.math;
    CgRaw *in = open_fixture("tiny_inputs"), *ex = open_fixture("tiny_expected");
    const ModelConfig *c = &m->cfg;
    int B = 3;
    size_t img = cfg_image_numel(c);
    float *v = malloc(B * img * 4), *g = malloc(m->num_params * 4),
          *ref = malloc(m->num_params * 4);
    CudaEngine *e = engine_or_die(m, B, math);
    cuda_engine_set_train_math(e, math);
    cuda_forward_host(e, B, need_f32(in, "x", B * img), need_f32(in, "t", B),
                      need_i32(in, "tokens", (size_t)B * c->text_len), v);
    report("forward: velocity (tiny, batch 3)", pr, rel_err(v, need_f32(ex, "v", B * img), B * img),
           bound_of(math));
    cuda_engine_zero_grad(e);
    cuda_backward_host(e, need_f32(in, "dv", B * img));
    cuda_engine_get_grads(e, g);
    for (int i = 0; i < m->num_tensors; i++) {
        char name[64];
        snprintf(name, sizeof name, "grad.%s", m->tensors[i].name);
        memcpy(ref + m->tensors[i].offset, need_f32(ex, name, m->tensors[i].numel),
               m->tensors[i].numel * 4);
    }
    const char *worst = "";
    double eg = grad_err(m, g, ref, &worst);
    char what[128];
    snprintf(what, sizeof what, "backward: every parameter gradient (worst %s)", worst);
    report(what, pr, eg, bound_of(math));
    cuda_engine_free(e);
    free(v), free(g), free(ref);
    cgraw_close(in), cgraw_close(ex);
}

/* One sampler case against the fixture; flash_min_seq 0 forces the flash-style attention. */
static void check_sampler_case(const Model *m, CgRaw *f, Prec pr, SamplerKind kind, SdeKind sde,
                               int guidance, int flash)
{
    CudaMath math = pr.math;
    const ModelConfig *c = &m->cfg;
    int n = 3, steps = atoi(need_meta(f, "steps"));
    size_t img = cfg_image_numel(c);
    SamplerConfig sc;
    sampler_config_default(&sc);
    sc.steps = steps;
    sc.shift = strtof(need_meta(f, "shift"), NULL);
    sc.eta = strtof(need_meta(f, sde == SDE_CPS ? "cps_eta" : "eta"), NULL);
    sc.kind = kind;
    sc.sde = sde;
    sc.guidance = guidance;
    sc.cfg_scale = guidance ? strtof(need_meta(f, "cfg_scale"), NULL) : 1.0f;
    char err[512];
    CudaEngine *e = engine_or_die(m, 2, math); /* batch 2 < n: a partial second call */
    cuda_engine_set_flash_min_seq(e, flash ? 0 : 1 << 30);
    CudaRollout *r = cuda_rollout_new(e, &sc, n, err, sizeof err);
    Trajectory *tr = trajectory_new(c, n, steps);
    if (!r || !tr) fprintf(stderr, "gpu_check: %s\n", err), exit(2);
    const float *z = kind == SAMPLER_SDE ? need_f32(f, "z", (size_t)steps * n * img) : NULL;
    if (cuda_rollout_run_noise(r, e, need_i32(f, "tokens", (size_t)n * c->text_len),
                               need_f32(f, "x_init", n * img), z, tr, 1, err, sizeof err))
        fprintf(stderr, "gpu_check: %s\n", err), exit(2);
    char name[32];
    if (kind == SAMPLER_SDE)
        snprintf(name, sizeof name, "sde_%s", sde_kind_name(sde));
    else
        snprintf(name, sizeof name, "%s", guidance ? "ode_cfg" : "ode");
    const char *att = flash ? "flash attention" : "batched attention";
    char key[64], what[128];
    snprintf(key, sizeof key, "%s.x0_hat", name);
    snprintf(what, sizeof what, "sampler %s: final images (%s)", name, att);
    report(what, pr, rel_err(tr->x0_hat, need_f32(f, key, n * img), n * img), bound_of(math));
    if (kind == SAMPLER_SDE) {
        snprintf(key, sizeof key, "%s.logp", name);
        snprintf(what, sizeof what, "sampler %s: log-probabilities (%s)", name, att);
        report(what, pr, rel_err(tr->logp, need_f32(f, key, (size_t)steps * n), (size_t)steps * n),
               bound_of(math));
    }
    snprintf(key, sizeof key, "%s.x", name);
    if (cgraw_find(f, key)) {
        size_t nx = (size_t)(steps + 1) * n * img;
        snprintf(what, sizeof what, "sampler %s: whole trajectory (%s)", name, att);
        report(what, pr, rel_err(tr->x, need_f32(f, key, nx), nx), bound_of(math));
    }
    trajectory_free(tr);
    cuda_rollout_free(r);
    cuda_engine_free(e);
}

static void check_sampler(const Model *m, Prec pr)
{
    CgRaw *f = open_fixture("sampler");
    for (int flash = 0; flash <= 1; flash++) {
        check_sampler_case(m, f, pr, SAMPLER_SDE, SDE_FLOW, 0, flash);
        check_sampler_case(m, f, pr, SAMPLER_SDE, SDE_DANCE, 0, flash);
        check_sampler_case(m, f, pr, SAMPLER_SDE, SDE_CPS, 0, flash);
        check_sampler_case(m, f, pr, SAMPLER_ODE, SDE_FLOW, 0, flash);
    }
    check_sampler_case(m, f, pr, SAMPLER_ODE, SDE_FLOW, 1, 0);
    cgraw_close(f);
}

/*
 * The GRPO cases of grpo.cgraw. The recorded trajectories are replayed into the device rollout
 * through cuda_rollout_run_noise with theta0 (which recorded them), so the device holds the
 * rollout; then theta1 (theta0 perturbed) trains the fixture's items.
 */
static void check_grpo(const Model *m0, Prec pr)
{
    CudaMath math = pr.math;
    CgRaw *f = open_fixture("grpo");
    const ModelConfig *c = &m0->cfg;
    int steps = atoi(need_meta(f, "steps"));
    int n = atoi(need_meta(f, "groups")) * atoi(need_meta(f, "group_size"));
    size_t img = cfg_image_numel(c), T = (size_t)c->text_len;
    SdeKind sde = SDE_FLOW;
    if (sde_kind_from_name(need_meta(f, "sde"), &sde))
        fprintf(stderr, "gpu_check: grpo fixture: unknown sde\n"), exit(2);
    float eta = strtof(need_meta(f, "eta"), NULL);
    Model m1;
    model_init(&m1, c);
    memcpy(m1.params, m0->params, m0->num_params * 4);
    perturb_params(m1.params, m1.num_params, strtod(need_meta(f, "perturb_scale"), NULL),
                   strtoull(need_meta(f, "perturb_seed"), NULL, 10));

    /* the recorded rollout, loaded into the device as if sampled there */
    const float *xs = need_f32(f, "x", (size_t)(steps + 1) * n * img);
    Trajectory *tr = trajectory_new(c, n, steps);
    memcpy(tr->x, xs, (size_t)(steps + 1) * n * img * 4);
    const float *logp_old = need_f32(f, "logp_old", (size_t)steps * n);
    memcpy(tr->sigmas, need_f32(f, "sigmas", steps + 1), (size_t)(steps + 1) * 4);
    memcpy(tr->tokens, need_i32(f, "tokens", n * T), n * T * 4);

    const char *cases[] = {"step", "chunk", "seq", "kl", "cfg", "cfgkl", "cps"};
    for (int ci = 0; ci < (int)(sizeof cases / sizeof cases[0]); ci++) {
        char key[64], err[512];
        snprintf(key, sizeof key, "%s.items", cases[ci]);
        const CgTensor *ti = cgraw_find(f, key);
        int n_items = ti ? (int)ti->shape[0] : 0;
        const int32_t *it = need_i32(f, key, (size_t)n_items * 3);
        snprintf(key, sizeof key, "%s.adv", cases[ci]);
        const float *adv = need_f32(f, key, n_items);
        GrpoItem items[64];
        int rows = 0;
        for (int i = 0; i < n_items && i < 64; i++) {
            items[i] = (GrpoItem){it[3 * i], it[3 * i + 1], it[3 * i + 2], adv[i]};
            rows += items[i].size;
        }
        GrpoConfig gc = {.sde = sde, .eta = eta};
        snprintf(key, sizeof key, "%s.eps", cases[ci]);
        gc.clip_eps = strtof(need_meta(f, key), NULL);
        snprintf(key, sizeof key, "%s.kl_coef", cases[ci]);
        gc.kl_coef = strtof(need_meta(f, key), NULL);
        snprintf(key, sizeof key, "%s.scale", cases[ci]);
        float scale = strtof(need_meta(f, key), NULL);
        /* a guided or cps case scores the recorded x against its own policy's logp_old */
        memcpy(tr->logp, logp_old, (size_t)steps * n * 4);
        snprintf(key, sizeof key, "%s.cfg_scale", cases[ci]);
        int own_logp = cgraw_meta(f, key) != NULL;
        if (own_logp) {
            gc.guidance = 1;
            gc.cfg_scale = strtof(cgraw_meta(f, key), NULL);
        }
        snprintf(key, sizeof key, "%s.sde", cases[ci]);
        if (cgraw_meta(f, key)) {
            if (sde_kind_from_name(cgraw_meta(f, key), &gc.sde))
                fprintf(stderr, "gpu_check: %s: unknown sde\n", cases[ci]), exit(2);
            own_logp = 1;
        }
        if (own_logp) {
            snprintf(key, sizeof key, "%s.logp_old", cases[ci]);
            memcpy(tr->logp, need_f32(f, key, (size_t)(steps - 1) * n),
                   (size_t)(steps - 1) * n * 4);
        }
        int batch = rows * grpo_rows_per_transition(&gc);

        CudaEngine *e = engine_or_die(&m1, batch, math);
        CudaEngine *ref = gc.kl_coef > 0 ? engine_or_die(m0, batch, math) : NULL;
        cuda_engine_set_train_math(e, math);
        if (ref) cuda_engine_set_train_math(ref, math);
        SamplerConfig sc;
        sampler_config_default(&sc);
        sc.steps = steps;
        sc.shift = strtof(need_meta(f, "shift"), NULL);
        sc.eta = eta;
        sc.sde = gc.sde;
        CudaRollout *r = cuda_rollout_new(e, &sc, n, err, sizeof err);
        if (!r) fprintf(stderr, "gpu_check: %s\n", err), exit(2);
        if (cuda_rollout_load(r, e, tr, err, sizeof err))
            fprintf(stderr, "gpu_check: %s\n", err), exit(2);
        GrpoItemStats st[64];
        cuda_engine_zero_grad(e);
        if (cuda_grpo_items_backward(r, e, ref, tr, &gc, items, n_items, scale, st, err,
                                     sizeof err))
            fprintf(stderr, "gpu_check: %s: %s\n", cases[ci], err), exit(2);
        float ratio[64], loss[64], kl[64], *g = malloc(m1.num_params * 4);
        int clip_same = 1;
        snprintf(key, sizeof key, "%s.clipped", cases[ci]);
        const int32_t *clipped = need_i32(f, key, n_items);
        for (int i = 0; i < n_items; i++) {
            ratio[i] = st[i].ratio, loss[i] = st[i].loss, kl[i] = st[i].kl;
            clip_same &= st[i].clipped == clipped[i];
        }
        char what[128];
        const char *nm = cases[ci];
        snprintf(key, sizeof key, "%s.ratio", nm);
        snprintf(what, sizeof what, "grpo %s (%d items): ratios", nm, n_items);
        report(what, pr, rel_err(ratio, need_f32(f, key, n_items), n_items), bound_of(math));
        snprintf(key, sizeof key, "%s.loss", nm);
        snprintf(what, sizeof what, "grpo %s: losses", nm);
        report(what, pr, rel_err(loss, need_f32(f, key, n_items), n_items), bound_of(math));
        if (gc.kl_coef > 0) {
            snprintf(key, sizeof key, "%s.kl", nm);
            snprintf(what, sizeof what, "grpo %s: KL to the reference", nm);
            report(what, pr, rel_err(kl, need_f32(f, key, n_items), n_items), bound_of(math));
        }
        snprintf(what, sizeof what, "grpo %s: clip decisions equal PyTorch's", nm);
        report(what, pr, clip_same ? 0.0 : 1.0, 0.0);
        cuda_engine_get_grads(e, g);
        snprintf(key, sizeof key, "%s.grad", nm);
        const char *worst = "";
        double eg = grad_err(&m1, g, need_f32(f, key, m1.num_params), &worst);
        snprintf(what, sizeof what, "grpo %s: parameter gradient (worst %s)", nm, worst);
        report(what, pr, eg, bound_of(math));
        free(g);
        cuda_rollout_free(r);
        cuda_engine_free(e);
        cuda_engine_free(ref);
    }
    trajectory_free(tr);
    model_free(&m1);
    cgraw_close(f);
}

/* AdamW on the device against adamw.c, four steps with clipping active in some. */
static void check_adamw(const Model *m)
{
    Prec pr = {CUDA_MATH_FP32, "train", 1}; /* no matrix products: one precision */
    size_t n = m->num_params;
    CudaEngine *e = engine_or_die(m, 1, CUDA_MATH_FP32);
    AdamWConfig ac = {.lr = 1e-2f,
                      .beta1 = 0.9f,
                      .beta2 = 0.99f,
                      .eps = 1e-8f,
                      .weight_decay = 0.1f,
                      .grad_clip = 1.0f};
    AdamW cpu, gpu;
    adamw_init(&cpu, &ac, n);
    adamw_init(&gpu, &ac, n);
    float *p = malloc(n * 4), *g = malloc(n * 4), *pd = malloc(n * 4);
    memcpy(p, m->params, n * 4);
    Rng rng;
    rng_seed(&rng, 7);
    double worst_norm = 0;
    for (int s = 0; s < 4; s++) {
        rng_normal(&rng, g, n);
        float gs = s % 2 ? 1e-3f : 0.05f; /* clipping binds on the even steps */
        for (size_t i = 0; i < n; i++) g[i] *= gs;
        double nc = adamw_step(&cpu, p, g);
        /* the device gradient buffer gets the same values through a backward-free path */
        cuda_engine_set_grads(e, g);
        double ng = cuda_adamw_step(e, &gpu);
        worst_norm = fmax(worst_norm, fabs(ng - nc) / nc);
    }
    cuda_engine_get_params(e, pd);
    report("adamw: parameters after 4 steps vs adamw.c", pr, rel_err(pd, p, n), 1e-6);
    report("adamw: gradient norms vs adamw.c", pr, worst_norm, 1e-9);
    adamw_free(&cpu), adamw_free(&gpu);
    free(p), free(g), free(pd);
    cuda_engine_free(e);
}

/* Initial noise (independent and grouped) from the device Philox against rng.c, bit for bit. */
static void check_rng(const Model *m)
{
    const ModelConfig *c = &m->cfg;
    int n = 6;
    size_t img = cfg_image_numel(c);
    char err[512];
    CudaEngine *e = engine_or_die(m, n, CUDA_MATH_FP32);
    SamplerConfig sc;
    sampler_config_default(&sc);
    sc.steps = 1;
    sc.kind = SAMPLER_ODE;
    int32_t *tok = calloc((size_t)n * c->text_len, 4);
    float *host = malloc(n * img * 4);
    for (int g = 0; g <= 4; g += 4) {
        sc.noise_group = g;
        CudaRollout *r = cuda_rollout_new(e, &sc, n, err, sizeof err);
        Trajectory *tr = trajectory_new(c, n, 1);
        Rng dev, cpu;
        rng_seed(&dev, 1234), rng_seed(&cpu, 1234);
        dev.counter = cpu.counter = 99;
        cuda_rollout_run(r, e, tok, &dev, tr, 1, err, sizeof err);
        int draws = g ? (n + g - 1) / g : n;
        rng_normal(&cpu, host, (size_t)draws * img);
        size_t diff = 0;
        for (int k = 0; k < n; k++)
            for (size_t j = 0; j < img; j++)
                diff += tr->x[(size_t)k * img + j] != host[(size_t)(g ? k / g : k) * img + j];
        char what[128];
        snprintf(what, sizeof what, "rng: %s initial noise equals rng.c's (%zu differ)",
                 g ? "grouped" : "independent", diff);
        report(what, (Prec){CUDA_MATH_FP32, "sample", 1},
               diff == 0 && dev.counter == cpu.counter ? 0.0 : 1.0, 0.0);
        trajectory_free(tr);
        cuda_rollout_free(r);
    }
    free(tok), free(host);
    cuda_engine_free(e);
}

/* ---- benchmark ----------------------------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* bench_torch.py's token pattern */
static void bench_tokens(int32_t *tok, int n, int T, int groups_of)
{
    for (int k = 0; k < n; k++) {
        int prompt = groups_of ? k / groups_of : k;
        for (int i = 0; i < T; i++)
            tok[(size_t)k * T + i] = i < 5 ? 2 + (prompt * 7 + i * 3) % 62 : 0;
    }
}

typedef struct {
    double sample_ips, sample_tflops, iter_s, iter_tflops;
    double sample_ips_batched; /* sampling with the flash-style attention turned off */
    double iter_s_tf32;        /* the iteration with training in tf32 too */
} BenchResult;

#define BENCH_WARMUP 2
#define BENCH_REPEAT 7

static void bench_preset(const char *preset, CudaMath math, BenchResult *out)
{
    ModelConfig cfg;
    model_config_preset(preset, &cfg);
    cfg.vocab_size = 64;
    Model m;
    model_init(&m, &cfg);
    Rng init;
    rng_seed(&init, 1);
    rng_normal(&init, m.params, m.num_params); /* N(0, 0.02) everywhere, as the peer */
    for (size_t i = 0; i < m.num_params; i++) m.params[i] *= 0.02f;
    double F = model_forward_flops(&cfg);
    char err[512];
    SamplerConfig sc;
    sampler_config_default(&sc);
    sc.noise_group = 0;

    /* sampling: 64 trajectories, one call of 64 per step */
    {
        int n = 64;
        CudaEngine *e = engine_or_die(&m, n, math);
        CudaRollout *r = cuda_rollout_new(e, &sc, n, err, sizeof err);
        Trajectory *tr = trajectory_new(&cfg, n, sc.steps);
        int32_t *tok = malloc((size_t)n * cfg.text_len * 4);
        bench_tokens(tok, n, cfg.text_len, 0);
        Rng rng;
        rng_seed(&rng, 2);
        double t[BENCH_REPEAT];
        for (int flash = 1; flash >= 0; flash--) {
            if (!flash) cuda_engine_set_flash_min_seq(e, 1 << 30);
            for (int i = 0; i < BENCH_WARMUP + BENCH_REPEAT; i++) {
                double t0 = now();
                cuda_rollout_run(r, e, tok, &rng, tr, 0, err, sizeof err);
                if (i >= BENCH_WARMUP) t[i - BENCH_WARMUP] = now() - t0;
            }
            double s = median(t, BENCH_REPEAT);
            if (flash) {
                out->sample_ips = n * sc.steps / s;
                out->sample_tflops = n * sc.steps * F / s / 1e12;
            } else {
                out->sample_ips_batched = n * sc.steps / s;
            }
        }
        free(tok);
        trajectory_free(tr);
        cuda_rollout_free(r);
        cuda_engine_free(e);
    }

    /* one Chunk-GRPO iteration: 4 prompts x 8, chunks 0 and 2 of 4 x 4 trained, AdamW per group */
    {
        int P = 4, G = 8, n = P * G, batch = 32;
        sc.noise_group = G;
        CudaEngine *e = engine_or_die(&m, batch, math);
        CudaRollout *r = cuda_rollout_new(e, &sc, n, err, sizeof err);
        Trajectory *tr = trajectory_new(&cfg, n, sc.steps);
        int32_t *tok = malloc((size_t)n * cfg.text_len * 4);
        bench_tokens(tok, n, cfg.text_len, G);
        AdamWConfig ac = {.lr = 1e-5f,
                          .beta1 = 0.9f,
                          .beta2 = 0.999f,
                          .eps = 1e-8f,
                          .weight_decay = 1e-4f,
                          .grad_clip = 1.0f};
        AdamW opt;
        adamw_init(&opt, &ac, 0);
        GrpoConfig gc = {.clip_eps = 1e-3f, .sde = SDE_FLOW, .eta = sc.eta, .kl_coef = 0};
        float rewards[32], adv[32];
        for (int k = 0; k < n; k++) rewards[k] = (float)((k * 37) % 11) / 10.0f;
        Rng rng;
        rng_seed(&rng, 3);
        double t[BENCH_REPEAT];
        for (int train_tf32 = 0; train_tf32 <= 1; train_tf32++) {
            if (train_tf32) cuda_engine_set_train_math(e, CUDA_MATH_TF32);
            for (int it = 0; it < BENCH_WARMUP + BENCH_REPEAT; it++) {
                double t0 = now();
                cuda_rollout_run(r, e, tok, &rng, tr, 0, err, sizeof err);
                grpo_advantages(rewards, P, G, 5.0f, adv);
                for (int grp = 0; grp < P; grp++) {
                    cuda_engine_zero_grad(e);
                    for (int call = 0; call < 2; call++) {
                        GrpoItem items[8];
                        for (int j = 0; j < 4; j++) {
                            int traj = grp * G + call * 4 + j;
                            items[2 * j] = (GrpoItem){traj, 0, 4, adv[traj]};
                            items[2 * j + 1] = (GrpoItem){traj, 8, 4, adv[traj]};
                        }
                        if (cuda_grpo_items_backward(r, e, NULL, tr, &gc, items, 8, 1.0f / (G * 2),
                                                     NULL, err, sizeof err))
                            fprintf(stderr, "gpu_check: %s\n", err), exit(2);
                    }
                    cuda_adamw_step(e, &opt);
                }
                cuda_sync();
                if (it >= BENCH_WARMUP) t[it - BENCH_WARMUP] = now() - t0;
            }
            double s = median(t, BENCH_REPEAT);
            if (train_tf32) {
                out->iter_s_tf32 = s;
            } else {
                out->iter_s = s;
                out->iter_tflops = (n * sc.steps * F + 3.0 * 256 * F) / s / 1e12;
            }
        }
        adamw_free(&opt);
        free(tok);
        trajectory_free(tr);
        cuda_rollout_free(r);
        cuda_engine_free(e);
    }
    model_free(&m);
}

/* The value of "key": NUMBER in a JSON line, or NAN. */
static double json_number(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

/* Runs the PyTorch peer for a preset and mode; fills *out (NAN when it failed). */
static void bench_torch(const char *python, const char *preset, const char *mode, CudaMath math,
                        BenchResult *out)
{
    char cmd[512], line[8192];
    snprintf(cmd, sizeof cmd,
             "%s tests/gpu/bench_torch.py --preset %s --mode %s --precision %s --device cuda "
             "--repeat %d --warmup %d",
             python, preset, mode, cuda_math_name(math), BENCH_REPEAT, BENCH_WARMUP);
    out->sample_ips = out->sample_tflops = out->iter_s = out->iter_tflops = NAN;
    FILE *p = popen(cmd, "r");
    if (!p) return;
    while (fgets(line, sizeof line, p)) {
        if (!strstr(line, "\"peer\"")) continue;
        if (strstr(line, "\"error\"")) fprintf(stderr, "  pytorch %s %s: %s", preset, mode, line);
        out->sample_ips = json_number(line, "sample_image_steps_per_s");
        out->sample_tflops = json_number(line, "sample_tflops");
        out->iter_s = json_number(line, "iter_secs_median");
        out->iter_tflops = json_number(line, "iter_tflops");
    }
    pclose(p);
}

static void run_bench(const char *python, int with_compile)
{
    const char *presets[] = {"small", "base"};
    CudaMath math = CUDA_MATH_TF32;
    printf("\nbenchmark, medians of %d after %d warm-ups, PyTorch on the same GPU in this run:\n"
           "  chunkgrpo samples in tf32 and trains in fp32 (its defaults); PyTorch runs tf32 "
           "throughout\n",
           BENCH_REPEAT, BENCH_WARMUP);
    printf("  %-6s %-34s %12s %12s %12s %9s %9s\n", "preset", "measure", "chunkgrpo", "torch eager",
           "torch compile", "x eager", "x compile");
    for (int i = 0; i < 2; i++) {
        BenchResult c = {0}, te, tc;
        bench_preset(presets[i], math, &c);
        bench_torch(python, presets[i], "eager", math, &te);
        if (with_compile)
            bench_torch(python, presets[i], "compile", math, &tc);
        else
            tc.sample_ips = tc.sample_tflops = tc.iter_s = tc.iter_tflops = NAN;
        printf("  %-6s %-34s %12.0f %12.0f %12.0f %8.2fx %8.2fx\n", presets[i],
               "sampling image-steps/s (64 x 17)", c.sample_ips, te.sample_ips, tc.sample_ips,
               c.sample_ips / te.sample_ips, c.sample_ips / tc.sample_ips);
        printf("  %-6s %-34s %12.1f %12.1f %12.1f\n", presets[i], "  sampling TFLOP/s",
               c.sample_tflops, te.sample_tflops, tc.sample_tflops);
        printf("  %-6s %-34s %12.0f\n", presets[i], "  (attention: batched products only)",
               c.sample_ips_batched);
        printf("  %-6s %-34s %12.4f %12.4f %12.4f %8.2fx %8.2fx\n", presets[i],
               "GRPO iteration s (32 traj, 256 rows)", c.iter_s, te.iter_s, tc.iter_s,
               te.iter_s / c.iter_s, tc.iter_s / c.iter_s);
        printf("  %-6s %-34s %12.1f %12.1f %12.1f\n", presets[i], "  iteration TFLOP/s",
               c.iter_tflops, te.iter_tflops, tc.iter_tflops);
        printf("  %-6s %-34s %12.4f %12s %12s %8.2fx %8.2fx\n", presets[i],
               "  (training in tf32 too)", c.iter_s_tf32, "", "", te.iter_s / c.iter_s_tf32,
               tc.iter_s / c.iter_s_tf32);
        fflush(stdout);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: gpu_check FIXTURE_DIR [--no-bench] [--no-compile] [--python PY]\n");
        return 2;
    }
    fixdir = argv[1];
    int bench = 1, with_compile = 1;
    const char *python = "python3";
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--no-bench") == 0)
            bench = 0;
        else if (strcmp(argv[i], "--no-compile") == 0)
            with_compile = 0;
        else if (strcmp(argv[i], "--python") == 0 && i + 1 < argc)
            python = argv[++i];
    }
    char name[256], err[512];
    if (cuda_probe(name, sizeof name, err, sizeof err)) {
        fprintf(stderr, "gpu_check: %s\n", err);
        return 2;
    }
    printf("gpu_check on %s\n\nparity:\n", name);
    Model m;
    load_tiny(&m);
    check_rng(&m);
    check_adamw(&m);
    /* fp32 everywhere; then the defaults' sampling in tf32 (training stays fp32, covered by the
     * fp32 rows); then, for the record, training in tf32 and bf16, which the product does not
     * use by default (see cuda_engine.h) */
    Prec fp32_train = {CUDA_MATH_FP32, "train", 1}, fp32_sample = {CUDA_MATH_FP32, "sample", 1};
    check_model(&m, fp32_train);
    check_sampler(&m, fp32_sample);
    check_grpo(&m, fp32_train);
    check_sampler(&m, (Prec){CUDA_MATH_TF32, "sample", 1});
    check_sampler(&m, (Prec){CUDA_MATH_BF16, "sample", 1});
    check_model(&m, (Prec){CUDA_MATH_TF32, "train", 0});
    check_grpo(&m, (Prec){CUDA_MATH_TF32, "train", 0});
    check_model(&m, (Prec){CUDA_MATH_BF16, "train", 0});
    model_free(&m);
    printf("\n%d parity checks, %d failed\n", checks, failures);
    fflush(stdout);
    if (bench) run_bench(python, with_compile);
    return failures ? 1 : 0;
}
