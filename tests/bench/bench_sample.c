/*
 * bench_sample.c: times the engine's SDE sampler (worker/engine/sampler.h) on one preset: `runs`
 * calls of sampler_run, each n trajectories of `steps` flow-SDE transitions run as one model
 * batch, with the noise drawn and every x, logp and x0_hat recorded, as a GRPO rollout does.
 * Prints one JSON line; the comparison with PyTorch and the medians are made by bench_sample.sh.
 *
 *   bench_sample [--preset small] [--batch 32] [--steps 17] [--runs 5] [--threads 2]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "ops.h"
#include "bench_util.h"
#include "rng.h"
#include "sampler.h"

int main(int argc, char **argv)
{
    const char *preset = "small";
    int B = 32, steps = 17, runs = 5, threads = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--preset"))
            preset = argv[i + 1];
        else if (!strcmp(argv[i], "--batch"))
            B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps"))
            steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--runs"))
            runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_sample: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    if (B < 1 || steps < 1 || runs < 1 || threads < 1) {
        fprintf(stderr, "bench_sample: bad preset, batch, steps, runs or threads\n");
        return 2;
    }
    engine_set_threads(threads);
    Model m;
    Rng r;
    rng_seed(&r, 1);
    if (bench_random_model(&m, preset, &r)) {
        fprintf(stderr, "bench_sample: unknown preset %s (or no memory)\n", preset);
        return 2;
    }
    const ModelConfig cfg = m.cfg;

    SamplerConfig sc;
    sampler_config_default(&sc); /* flow SDE, eta 0.7, shift 3 */
    sc.steps = steps;
    char err[256];
    Sampler *s = sampler_new(&cfg, &sc, B, B, err, sizeof err);
    Activations *a = acts_new(&cfg, B);
    Trajectory *tr = trajectory_new(&cfg, B, steps);
    int32_t *tokens = calloc((size_t)B * cfg.text_len, sizeof *tokens);
    double *ms = malloc((size_t)runs * sizeof *ms);
    if (!s || !a || !tr || !tokens || !ms) {
        fprintf(stderr, "bench_sample: %s\n", s ? "out of memory" : err);
        return 1;
    }
    for (int b = 0; b < B; b++) /* prompts of varying length, some all PAD */
        for (int i = 0; i < (b * 5) % (cfg.text_len + 1); i++)
            tokens[b * cfg.text_len + i] = 2 + (b + 3 * i) % 60;

    /* warm-up: page in the arena and trajectory, start the threads */
    if (sampler_run(s, &m, a, tokens, &r, tr, err, sizeof err)) {
        fprintf(stderr, "bench_sample: %s\n", err);
        return 1;
    }
    for (int i = 0; i < runs; i++) {
        double t0 = now_ms();
        sampler_run(s, &m, a, tokens, &r, tr, err, sizeof err);
        ms[i] = now_ms() - t0;
    }
    double lp = 0;
    for (int i = 0; i < steps * B; i++) lp += tr->logp[i];

    const char *wait = getenv("OMP_WAIT_POLICY");
    printf("{\"peer\":\"chunkgrpo\",\"preset\":\"%s\",\"batch\":%d,\"steps\":%d,\"threads\":%d,"
           "\"omp_wait_policy\":\"%s\",\"mean_logp\":%.4f,\"sample_ms\":[",
           preset, B, steps, threads, wait && *wait ? wait : "default", lp / (steps * B));
    for (int i = 0; i < runs; i++) printf("%s%.3f", i ? "," : "", ms[i]);
    printf("]}\n");
    free(ms);
    free(tokens);
    trajectory_free(tr);
    acts_free(a);
    sampler_free(s);
    model_free(&m);
    return 0;
}
