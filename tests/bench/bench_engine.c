/*
 * bench_engine.c: times the engine's forward and forward+backward at one preset and batch, and
 * OpenBLAS's own sgemm on the model's largest matrix shape, then prints one JSON line. The
 * comparison with PyTorch and the medians are made by bench_engine.sh.
 *
 *   bench_engine [--preset small] [--batch 32] [--runs 10] [--threads 2]
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "ops.h"
#include "bench_util.h"
#include "rng.h"

static void print_list(const char *key, const double *v, int n)
{
    printf("\"%s\":[", key);
    for (int i = 0; i < n; i++) printf("%s%.3f", i ? "," : "", v[i]);
    printf("]");
}

int main(int argc, char **argv)
{
    const char *preset = "small";
    int B = 32, runs = 10, threads = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--preset"))
            preset = argv[i + 1];
        else if (!strcmp(argv[i], "--batch"))
            B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--runs"))
            runs = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "bench_engine: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    if (B < 1 || runs < 1 || threads < 1) {
        fprintf(stderr, "bench_engine: bad preset, batch, runs or threads\n");
        return 2;
    }
    engine_set_threads(threads);
    Model m;
    Rng r;
    rng_seed(&r, 1);
    if (bench_random_model(&m, preset, &r)) {
        fprintf(stderr, "bench_engine: unknown preset %s (or no memory)\n", preset);
        return 2;
    }
    const ModelConfig cfg = m.cfg;
    size_t n = (size_t)B * cfg_image_numel(&cfg);
    float *x = malloc(n * sizeof *x), *dv = malloc(n * sizeof *dv), *v = malloc(n * sizeof *v);
    float *t = malloc((size_t)B * sizeof *t);
    int32_t *tokens = calloc((size_t)B * cfg.text_len, sizeof *tokens);
    Activations *a = acts_new(&cfg, B);
    if (!x || !dv || !v || !t || !tokens || !a) return 1;
    rng_normal(&r, x, n);
    rng_normal(&r, dv, n);
    rng_uniform(&r, t, (size_t)B);
    /* prompts of varying length, some all PAD, the first of the full text_len (the PyTorch side
     * draws such lengths too), so the forward runs every position, the work
     * model_forward_flops counts */
    for (int b = 0; b < B; b++) {
        int len = b == 0 ? cfg.text_len : (b * 5) % (cfg.text_len + 1);
        for (int i = 0; i < len; i++) tokens[b * cfg.text_len + i] = 2 + (b + i) % 60;
    }

    double *fwd = malloc(runs * sizeof *fwd), *fb = malloc(runs * sizeof *fb);
    for (int i = 0; i < 2; i++) { /* warm-up: page in the arena, start the BLAS threads */
        model_forward(&m, a, x, t, tokens, v);
        model_backward(&m, a, dv);
    }
    for (int i = 0; i < runs; i++) {
        double t0 = now_ms();
        model_forward(&m, a, x, t, tokens, v);
        fwd[i] = now_ms() - t0;
    }
    for (int i = 0; i < runs; i++) {
        double t0 = now_ms();
        model_zero_grad(&m);
        model_forward(&m, a, x, t, tokens, v);
        model_backward(&m, a, dv);
        fb[i] = now_ms() - t0;
    }

    /* OpenBLAS's own rate, with its own threads, on the model's biggest product
     * (fc1: [B*S, d] x [d, F]): the ceiling the engine's GEMMs could reach */
    openblas_set_num_threads(threads);
    int M = B * cfg_seq_len(&cfg), K = cfg.dim, N = cfg_mlp_dim(&cfg);
    float *A = malloc((size_t)M * K * 4), *W = malloc((size_t)N * K * 4),
          *C = malloc((size_t)M * N * 4);
    rng_normal(&r, A, (size_t)M * K);
    rng_normal(&r, W, (size_t)N * K);
    double best_gemm = 1e30;
    for (int i = 0; i < 3 + runs; i++) {
        double t0 = now_ms();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, W, K, 0.0f, C, N);
        double dt = now_ms() - t0;
        if (i >= 3 && dt < best_gemm) best_gemm = dt;
    }
    double gemm_gflops = 2.0 * M * N * K / (best_gemm * 1e6);

    printf("{\"peer\":\"chunkgrpo\",\"preset\":\"%s\",\"batch\":%d,\"threads\":%d,"
           "\"forward_gflop\":%.4f,\"blas_core\":\"%s\",\"sgemm_shape\":[%d,%d,%d],"
           "\"sgemm_gflops\":%.2f,",
           preset, B, threads, model_forward_flops(&cfg) * B / 1e9, openblas_get_corename(), M, K,
           N, gemm_gflops);
    print_list("forward_ms", fwd, runs);
    printf(",");
    print_list("fwdbwd_ms", fb, runs);
    printf("}\n");
    free(A), free(W), free(C), free(fwd), free(fb);
    free(x), free(dv), free(v), free(t), free(tokens);
    acts_free(a);
    model_free(&m);
    return 0;
}
