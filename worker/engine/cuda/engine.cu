/*
 * engine.cu: the model on the device: parameters and activations in device memory, the forward
 * and backward passes composed from kernels.cu and cuBLAS exactly as model_cpu.c composes them
 * from ops.c (read the two side by side), and AdamW.
 *
 * cuBLAS is column-major; a row-major X [M, K] is the column-major X^T, so each product below is
 * written for the transposes (out^T = W in^T for out = in W^T, and so on).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acts_layout.h"
#include "engine_internal.cuh"
#include "errbuf.h"
#include "kernels.cuh"

/* Sequences at least this long run sampling attention in the flash-style kernel. On an H100 the
 * batched products were 3x faster at the base preset's 272 tokens (make gpu-check prints both),
 * so the kernel is kept for long sequences, where the [B, H, S, S] probabilities grow large. */
#define FLASH_MIN_SEQ_DEFAULT 2048

typedef struct {
    float *h_in, *mod, *ln1_mean, *ln1_rstd, *a, *qkv, *q_rstd, *k_rstd, *qh, *kh, *vh, *att;
    float *attn, *proj, *h_mid, *ln2_mean, *ln2_rstd, *mlp_in, *fc1, *gelu, *fc2;
} DevBlockActs;

/* model_cpu.c's Activations, on the device, plus the attention's head-layout scratch. */
struct DevActs {
    int32_t *tokens;
    uint8_t *key_mask;
    int *text_count;
    float *arena;
    float *patches, *tfreq, *t1, *t1s, *pooled_mean, *c, *sc;
    DevBlockActs *blocks; /* host array of device pointers */
    float *h_last, *fmod, *lnf_mean, *lnf_rstd, *fin_in, *out;
    float *d_out, *d_h, *d_x, *d_big, *d_qh, *d_kh, *d_vh, *d_mod, *d_sc, *d_c, *d_vec;
    float *heads;   /* [B, H, S, dh] attention output, or its gradient, in head layout */
    float *d_att;   /* [B, H, S, S] gradient of the probabilities */
    float *scratch; /* norm-weight partial sums */
};

/* ---- public helpers ------------------------------------------------------------------------ */

int cuda_math_parse(const char *name, CudaMath *out)
{
    static const char *names[] = {"tf32", "fp32", "bf16"};
    for (int i = 0; i < 3; i++)
        if (strcmp(name, names[i]) == 0) return *out = (CudaMath)i, 0;
    return -1;
}

const char *cuda_math_name(CudaMath m)
{
    return m == CUDA_MATH_FP32 ? "fp32" : m == CUDA_MATH_BF16 ? "bf16" : "tf32";
}

int cuda_probe(char *name, size_t namelen, char *err, size_t errlen)
{
    int count = 0;
    cudaError_t st = cudaGetDeviceCount(&count);
    if (st != cudaSuccess || count == 0) {
        const char *why = st == cudaErrorInsufficientDriver
                              ? "the NVIDIA driver is missing or older than this build's CUDA"
                          : st == cudaErrorNoDevice || count == 0 ? "the driver sees no GPU"
                                                                  : "CUDA could not start";
        if (err)
            errbuf_printf(err, errlen, "no usable CUDA device: %s (%s)", why,
                          st != cudaSuccess ? cudaGetErrorString(st) : "0 devices");
        return -1;
    }
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    if (name) snprintf(name, namelen, "%s (sm_%d%d)", prop.name, prop.major, prop.minor);
    return 0;
}

void cuda_sync(void)
{
    CUDA_CHECK(cudaDeviceSynchronize());
}

/* ---- allocation ---------------------------------------------------------------------------- */

/* Device pointer of the same tensor as host pointer hp (a view into host base hb). */
#define REBASE(dst, src, field, db, hb) ((dst).field = (db) + ((src).field - (hb)))

static void rebase_views(ParamTensors *out, const ParamTensors *in, float *db, const float *hb,
                         int depth)
{
    REBASE(*out, *in, tok_emb, db, hb);
    REBASE(*out, *in, txt_pos, db, hb);
    REBASE(*out, *in, pool_w, db, hb);
    REBASE(*out, *in, pool_b, db, hb);
    REBASE(*out, *in, patch_w, db, hb);
    REBASE(*out, *in, patch_b, db, hb);
    REBASE(*out, *in, img_pos, db, hb);
    REBASE(*out, *in, t1_w, db, hb);
    REBASE(*out, *in, t1_b, db, hb);
    REBASE(*out, *in, t2_w, db, hb);
    REBASE(*out, *in, t2_b, db, hb);
    REBASE(*out, *in, fin_ada_w, db, hb);
    REBASE(*out, *in, fin_ada_b, db, hb);
    REBASE(*out, *in, fin_w, db, hb);
    REBASE(*out, *in, fin_b, db, hb);
    for (int l = 0; l < depth; l++) {
        BlockTensors *o = &out->blocks[l];
        const BlockTensors *i = &in->blocks[l];
        REBASE(*o, *i, ada_w, db, hb);
        REBASE(*o, *i, ada_b, db, hb);
        REBASE(*o, *i, qkv_w, db, hb);
        REBASE(*o, *i, qkv_b, db, hb);
        REBASE(*o, *i, q_norm, db, hb);
        REBASE(*o, *i, k_norm, db, hb);
        REBASE(*o, *i, proj_w, db, hb);
        REBASE(*o, *i, proj_b, db, hb);
        REBASE(*o, *i, fc1_w, db, hb);
        REBASE(*o, *i, fc1_b, db, hb);
        REBASE(*o, *i, fc2_w, db, hb);
        REBASE(*o, *i, fc2_b, db, hb);
    }
}
#undef REBASE

/* Lays out (base set) or sizes (base NULL) the float buffers of the activations: acts_layout.h's
 * list, then the attention's head-layout buffers. */
static size_t plan_dev_arena(DevActs *a, const ModelConfig *c, size_t B, float *base)
{
    size_t d = c->dim, F = cfg_mlp_dim(c), N = cfg_img_tokens(c), P = cfg_patch_dim(c);
    size_t S = cfg_seq_len(c), H = c->heads, dh = cfg_head_dim(c), BSd = B * S * d;
    size_t big = 3 * d > F ? 3 * d : F;
    size_t off = 0;
    /* 64-float alignment (256 bytes) for every buffer: cuBLAS and vector loads like it */
#define TAKE(field, n) (field = base ? base + off : NULL, off += ((n) + 63) / 64 * 64)
    ACTS_TAKE_CONDITIONING(TAKE, a);
    for (int l = 0; l < c->depth; l++) ACTS_TAKE_BLOCK(TAKE, &a->blocks[l]);
    ACTS_TAKE_FINAL_AND_GRADIENTS(TAKE, a);
    TAKE(a->heads, BSd);
    TAKE(a->d_att, B * H * S * S);
    TAKE(a->scratch, k_qkv_heads_backward_scratch((int)B, (int)S, (int)H, (int)dh));
#undef TAKE
    return off;
}

static cublasComputeType_t compute_of(CudaMath m)
{
    return m == CUDA_MATH_FP32   ? CUBLAS_COMPUTE_32F
           : m == CUDA_MATH_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF
                                 : CUBLAS_COMPUTE_32F_FAST_TF32;
}

void cuda_engine_set_train_math(CudaEngine *e, CudaMath math)
{
    e->train_math = math;
    e->train_compute = compute_of(math);
}

/* cudaMalloc that reports instead of failing hard: construction may run out of memory. */
static int dev_alloc(void **p, size_t bytes, const char *what, char *err, size_t errlen)
{
    cudaError_t st = cudaMalloc(p, bytes ? bytes : 1);
    if (st == cudaSuccess) return 0;
    *p = NULL;
    errbuf_printf(err, errlen, "cannot allocate %.1f MiB of device memory for %s: %s",
                  bytes / 1048576.0, what, cudaGetErrorString(st));
    return -1;
}

CudaEngine *cuda_engine_new(const Model *m, int batch, CudaMath math, char *err, size_t errlen)
{
    if (cuda_probe(NULL, 0, err, errlen) != 0) return NULL;
    if (batch < 1) {
        errbuf_printf(err, errlen, "the CUDA engine needs batch >= 1 (got %d)", batch);
        return NULL;
    }
    const ModelConfig *c = &m->cfg;
    CudaEngine *e = (CudaEngine *)calloc(1, sizeof *e);
    DevActs *a = (DevActs *)calloc(1, sizeof *a);
    BlockTensors *pb = (BlockTensors *)calloc((size_t)c->depth, sizeof *pb);
    BlockTensors *gb = (BlockTensors *)calloc((size_t)c->depth, sizeof *gb);
    DevBlockActs *ab = (DevBlockActs *)calloc((size_t)c->depth, sizeof *ab);
    if (!e || !a || !pb || !gb || !ab) {
        free(e), free(a), free(pb), free(gb), free(ab);
        errbuf_printf(err, errlen, "out of host memory for the CUDA engine");
        return NULL;
    }
    e->cfg = *c;
    e->math = math;
    e->sample_compute = compute_of(math);
    cuda_engine_set_train_math(e, CUDA_MATH_FP32);
    e->capacity = batch;
    e->num_params = m->num_params;
    e->flash_min_seq = FLASH_MIN_SEQ_DEFAULT;
    e->a = a;
    e->p.blocks = pb;
    e->g.blocks = gb;
    a->blocks = ab;
    CUDA_CHECK(cudaStreamCreateWithFlags(&e->stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&e->blas));
    CUBLAS_CHECK(cublasSetStream(e->blas, e->stream));

    size_t np = m->num_params * sizeof(float), S = cfg_seq_len(c), img = cfg_image_numel(c);
    size_t arena_floats = plan_dev_arena(a, c, (size_t)batch, NULL);
    size_t ones_n = (size_t)batch * S;
    if (dev_alloc((void **)&e->params, np, "the parameters", err, errlen) ||
        dev_alloc((void **)&e->grads, np, "the gradients", err, errlen) ||
        dev_alloc((void **)&e->adam_m, np, "the AdamW moments", err, errlen) ||
        dev_alloc((void **)&e->adam_v, np, "the AdamW moments", err, errlen) ||
        dev_alloc((void **)&a->arena, arena_floats * sizeof(float), "the activations", err,
                  errlen) ||
        dev_alloc((void **)&a->tokens, (size_t)batch * c->text_len * sizeof(int32_t), "tokens", err,
                  errlen) ||
        dev_alloc((void **)&a->key_mask, (size_t)batch * S, "the key mask", err, errlen) ||
        dev_alloc((void **)&a->text_count, (size_t)batch * sizeof(int), "token counts", err,
                  errlen) ||
        dev_alloc((void **)&e->ones, ones_n * sizeof(float), "a ones vector", err, errlen) ||
        dev_alloc((void **)&e->norm, sizeof(double), "the gradient norm", err, errlen) ||
        dev_alloc((void **)&e->norm_partials, k_grad_norm_partials(m->num_params) * sizeof(double),
                  "the gradient norm", err, errlen) ||
        dev_alloc((void **)&e->x_in, (size_t)batch * img * sizeof(float), "input images", err,
                  errlen) ||
        dev_alloc((void **)&e->v_out, (size_t)batch * img * sizeof(float), "output velocities", err,
                  errlen) ||
        dev_alloc((void **)&e->t_in, (size_t)batch * sizeof(float), "noise levels", err, errlen) ||
        dev_alloc((void **)&e->tok_in, (size_t)batch * c->text_len * sizeof(int32_t), "tokens", err,
                  errlen)) {
        cuda_engine_free(e);
        return NULL;
    }
    plan_dev_arena(a, c, (size_t)batch, a->arena);
    rebase_views(&e->p, &m->p, e->params, m->params, c->depth);
    rebase_views(&e->g, &m->p, e->grads, m->params, c->depth); /* same offsets */
    k_fill(e->stream, e->ones, 1.0f, ones_n);
    CUDA_CHECK(cudaMemsetAsync(e->adam_m, 0, np, e->stream));
    CUDA_CHECK(cudaMemsetAsync(e->adam_v, 0, np, e->stream));
    cuda_engine_set_params(e, m->params);
    cuda_engine_zero_grad(e);
    CUDA_CHECK(cudaStreamSynchronize(e->stream));
    return e;
}

void cuda_engine_free(CudaEngine *e)
{
    if (!e) return;
    DevActs *a = e->a;
    if (a) {
        cudaFree(a->arena), cudaFree(a->tokens), cudaFree(a->key_mask), cudaFree(a->text_count);
        free(a->blocks);
        free(a);
    }
    cudaFree(e->params), cudaFree(e->grads), cudaFree(e->adam_m), cudaFree(e->adam_v);
    cudaFree(e->ones), cudaFree(e->norm), cudaFree(e->norm_partials);
    cudaFree(e->x_in), cudaFree(e->v_out), cudaFree(e->t_in), cudaFree(e->tok_in);
    if (e->blas) cublasDestroy(e->blas);
    if (e->stream) cudaStreamDestroy(e->stream);
    free(e->p.blocks);
    free(e->g.blocks);
    free(e);
}

int cuda_engine_batch(const CudaEngine *e)
{
    return e->capacity;
}

void cuda_engine_set_flash_min_seq(CudaEngine *e, int min_seq)
{
    e->flash_min_seq = min_seq;
}

void cuda_engine_set_params(CudaEngine *e, const float *params)
{
    CUDA_CHECK(cudaMemcpyAsync(e->params, params, e->num_params * sizeof(float),
                               cudaMemcpyHostToDevice, e->stream));
    CUDA_CHECK(cudaStreamSynchronize(e->stream));
}

void cuda_engine_get_params(const CudaEngine *e, float *params)
{
    CUDA_CHECK(cudaMemcpyAsync(params, e->params, e->num_params * sizeof(float),
                               cudaMemcpyDeviceToHost, e->stream));
    CUDA_CHECK(cudaStreamSynchronize(e->stream));
}

void cuda_engine_get_grads(const CudaEngine *e, float *grads)
{
    CUDA_CHECK(cudaMemcpyAsync(grads, e->grads, e->num_params * sizeof(float),
                               cudaMemcpyDeviceToHost, e->stream));
    CUDA_CHECK(cudaStreamSynchronize(e->stream));
}

void cuda_engine_set_grads(CudaEngine *e, const float *grads)
{
    CUDA_CHECK(cudaMemcpyAsync(e->grads, grads, e->num_params * sizeof(float),
                               cudaMemcpyHostToDevice, e->stream));
    CUDA_CHECK(cudaStreamSynchronize(e->stream));
}

void cuda_engine_zero_grad(CudaEngine *e)
{
    CUDA_CHECK(cudaMemsetAsync(e->grads, 0, e->num_params * sizeof(float), e->stream));
}

/* ---- matrix products ----------------------------------------------------------------------- */

static void gemm(CudaEngine *e, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                 float alpha, const float *A, int lda, const float *B, int ldb, float beta,
                 float *C, int ldc)
{
    CUBLAS_CHECK(cublasGemmEx(e->blas, ta, tb, m, n, k, &alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F,
                              ldb, &beta, C, CUDA_R_32F, ldc, e->compute, CUBLAS_GEMM_DEFAULT));
}

static void gemm_batched(CudaEngine *e, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                         int k, float alpha, const float *A, int lda, long long sa, const float *B,
                         int ldb, long long sb, float beta, float *C, int ldc, long long sc,
                         int count)
{
    CUBLAS_CHECK(cublasGemmStridedBatchedEx(e->blas, ta, tb, m, n, k, &alpha, A, CUDA_R_32F, lda,
                                            sa, B, CUDA_R_32F, ldb, sb, &beta, C, CUDA_R_32F, ldc,
                                            sc, count, e->compute, CUBLAS_GEMM_DEFAULT));
}

/* out[M,N] = in[M,K] W[N,K]^T + b[N] (b may be NULL). */
static void linear_forward(CudaEngine *e, float *out, const float *in, const float *W,
                           const float *b, int M, int K, int N)
{
    if (b) k_bias_broadcast(e->stream, out, b, M, N);
    gemm(e, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, 1.0f, W, K, in, K, b ? 1.0f : 0.0f, out, N);
}

/* ops.h's linear_backward: dW += dout^T in, db += column sums, din = (or +=) dout W. */
static void linear_backward(CudaEngine *e, float *din, float *dW, float *db, const float *dout,
                            const float *in, const float *W, int M, int K, int N,
                            int din_accumulate)
{
    gemm(e, CUBLAS_OP_N, CUBLAS_OP_T, K, N, M, 1.0f, in, K, dout, N, 1.0f, dW, K);
    if (din)
        gemm(e, CUBLAS_OP_N, CUBLAS_OP_N, K, M, N, 1.0f, W, K, dout, N,
             din_accumulate ? 1.0f : 0.0f, din, K);
    if (db) {
        float one = 1.0f;
        CUBLAS_CHECK(
            cublasSgemv(e->blas, CUBLAS_OP_N, N, M, &one, dout, N, e->ones, 1, &one, db, 1));
    }
}

/* ---- forward ------------------------------------------------------------------------------- */

static void attention_forward(CudaEngine *e, DevBlockActs *k, int B, PassKind pass)
{
    const ModelConfig *c = &e->cfg;
    int S = cfg_seq_len(c), H = c->heads, dh = cfg_head_dim(c);
    long long sS = (long long)S * dh, SS = (long long)S * S;
    if (pass == PASS_SAMPLE && S >= e->flash_min_seq &&
        dh <= 128) { /* the kernel holds dh <= 128 */
        k_flash_attention_forward(e->stream, k->attn, k->qh, k->kh, k->vh, e->a->key_mask, B, S, H,
                                  dh);
        return;
    }
    /* P = softmax(Q K^T / sqrt(dh)), then O = P V per (b, h); O goes back to row layout */
    gemm_batched(e, CUBLAS_OP_T, CUBLAS_OP_N, S, S, dh, 1.0f / sqrtf((float)dh), k->kh, dh, sS,
                 k->qh, dh, sS, 0.0f, k->att, S, SS, B * H);
    k_softmax_masked(e->stream, k->att, e->a->key_mask, B, H, S);
    gemm_batched(e, CUBLAS_OP_N, CUBLAS_OP_N, dh, S, S, 1.0f, k->vh, dh, sS, k->att, S, SS, 0.0f,
                 e->a->heads, dh, sS, B * H);
    k_heads_to_rows(e->stream, k->attn, e->a->heads, B, S, H, dh);
}

static void block_forward(CudaEngine *e, const BlockTensors *w, DevBlockActs *k, float *h_out,
                          int B, PassKind pass)
{
    const ModelConfig *c = &e->cfg;
    cudaStream_t s = e->stream;
    int d = c->dim, S = cfg_seq_len(c), H = c->heads, dh = cfg_head_dim(c), F = cfg_mlp_dim(c);
    int rows = B * S, m6 = 6 * d;
    size_t Sd = (size_t)S * d;
    const float *shift_a = k->mod, *scale_a = k->mod + d, *gate_a = k->mod + 2 * d;
    const float *shift_m = k->mod + 3 * d, *scale_m = k->mod + 4 * d, *gate_m = k->mod + 5 * d;

    linear_forward(e, k->mod, e->a->sc, w->ada_w, w->ada_b, B, d, m6);
    k_layernorm_modulate_forward(s, k->a, k->ln1_mean, k->ln1_rstd, k->h_in, Sd, shift_a, scale_a,
                                 m6, B, S, d);
    linear_forward(e, k->qkv, k->a, w->qkv_w, w->qkv_b, rows, d, 3 * d);
    k_qkv_heads_forward(s, k->qh, k->kh, k->vh, k->q_rstd, k->k_rstd, k->qkv, w->q_norm, w->k_norm,
                        B, S, H, dh);
    attention_forward(e, k, B, pass);
    linear_forward(e, k->proj, k->attn, w->proj_w, w->proj_b, rows, d, d);
    k_gate_residual_forward(s, k->h_mid, k->h_in, k->proj, gate_a, m6, B, S, d);

    k_layernorm_modulate_forward(s, k->mlp_in, k->ln2_mean, k->ln2_rstd, k->h_mid, Sd, shift_m,
                                 scale_m, m6, B, S, d);
    gemm(e, CUBLAS_OP_T, CUBLAS_OP_N, F, rows, d, 1.0f, w->fc1_w, d, k->mlp_in, d, 0.0f, k->fc1, F);
    k_bias_gelu_forward(s, k->gelu, k->fc1, w->fc1_b, rows, F);
    linear_forward(e, k->fc2, k->gelu, w->fc2_w, w->fc2_b, rows, F, d);
    k_gate_residual_forward(s, h_out, k->h_mid, k->fc2, gate_m, m6, B, S, d);
}

void engine_forward(CudaEngine *e, int B, const float *x, const float *t, const int32_t *tokens,
                    float *v, PassKind pass)
{
    const ModelConfig *c = &e->cfg;
    const ParamTensors *p = &e->p;
    DevActs *a = e->a;
    cudaStream_t s = e->stream;
    int d = c->dim, T = c->text_len, N = cfg_img_tokens(c), P = cfg_patch_dim(c);
    int S = cfg_seq_len(c);
    float *h = a->blocks[0].h_in;
    e->compute = pass == PASS_SAMPLE ? e->sample_compute : e->train_compute;

    if (tokens != a->tokens)
        CUDA_CHECK(cudaMemcpyAsync(a->tokens, tokens, (size_t)B * T * sizeof(int32_t),
                                   cudaMemcpyDeviceToDevice, s));
    k_embed_text(s, h, a->key_mask, a->pooled_mean, a->text_count, a->tokens, p->tok_emb,
                 p->txt_pos, B, T, S, d);
    k_patchify(s, a->patches, x, B, c->image_size, c->channels, c->patch);
    linear_forward(e, a->d_x, a->patches, p->patch_w, p->patch_b, B * N, P, d);
    k_embed_image(s, h, a->d_x, p->img_pos, B, T, N, S, d);

    k_timestep_embedding(s, a->tfreq, t, B);
    linear_forward(e, a->t1, a->tfreq, p->t1_w, p->t1_b, B, MODEL_TIME_FREQ_DIM, d);
    k_silu_forward(s, a->t1s, a->t1, (size_t)B * d);
    linear_forward(e, a->c, a->t1s, p->t2_w, p->t2_b, B, d, d);
    linear_forward(e, a->d_vec, a->pooled_mean, p->pool_w, p->pool_b, B, d, d);
    k_add(s, a->c, a->d_vec, (size_t)B * d);
    k_silu_forward(s, a->sc, a->c, (size_t)B * d);

    for (int l = 0; l < c->depth; l++) {
        float *h_out = l + 1 < c->depth ? a->blocks[l + 1].h_in : a->h_last;
        block_forward(e, &p->blocks[l], &a->blocks[l], h_out, B, pass);
    }

    linear_forward(e, a->fmod, a->sc, p->fin_ada_w, p->fin_ada_b, B, d, 2 * d);
    k_layernorm_modulate_forward(s, a->fin_in, a->lnf_mean, a->lnf_rstd, a->h_last + (size_t)T * d,
                                 (size_t)S * d, a->fmod, a->fmod + d, 2 * d, B, N, d);
    linear_forward(e, a->out, a->fin_in, p->fin_w, p->fin_b, B * N, d, P);
    k_unpatchify(s, v, a->out, B, c->image_size, c->channels, c->patch);
    e->grad_ready = pass == PASS_TRAIN ? B : 0;
}

/* ---- backward ------------------------------------------------------------------------------ */

/* d_big holds dL/d(attention output) [B, S, d]; writes d_qh, d_kh, d_vh. */
static void attention_backward(CudaEngine *e, DevBlockActs *k, int B)
{
    const ModelConfig *c = &e->cfg;
    DevActs *a = e->a;
    int S = cfg_seq_len(c), H = c->heads, dh = cfg_head_dim(c), n = B * H;
    long long sS = (long long)S * dh, SS = (long long)S * S;
    k_rows_to_heads(e->stream, a->heads, a->d_big, B, S, H, dh); /* dO in head layout */
    gemm_batched(e, CUBLAS_OP_T, CUBLAS_OP_N, S, S, dh, 1.0f, k->vh, dh, sS, a->heads, dh, sS, 0.0f,
                 a->d_att, S, SS, n); /* dP = dO V^T */
    gemm_batched(e, CUBLAS_OP_N, CUBLAS_OP_T, dh, S, S, 1.0f, a->heads, dh, sS, k->att, S, SS, 0.0f,
                 a->d_vh, dh, sS, n); /* dV = P^T dO */
    k_softmax_backward(e->stream, a->d_att, k->att, n * S, S, 1.0f / sqrtf((float)dh));
    gemm_batched(e, CUBLAS_OP_N, CUBLAS_OP_N, dh, S, S, 1.0f, k->kh, dh, sS, a->d_att, S, SS, 0.0f,
                 a->d_qh, dh, sS, n); /* dQ = dS K */
    gemm_batched(e, CUBLAS_OP_N, CUBLAS_OP_T, dh, S, S, 1.0f, k->qh, dh, sS, a->d_att, S, SS, 0.0f,
                 a->d_kh, dh, sS, n); /* dK = dS^T Q */
}

static void block_backward(CudaEngine *e, const BlockTensors *w, BlockTensors *g, DevBlockActs *k,
                           int B)
{
    const ModelConfig *c = &e->cfg;
    DevActs *a = e->a;
    cudaStream_t s = e->stream;
    int d = c->dim, S = cfg_seq_len(c), H = c->heads, dh = cfg_head_dim(c);
    int F = cfg_mlp_dim(c), rows = B * S, m6 = 6 * d;
    size_t Sd = (size_t)S * d;
    float *dmod = a->d_mod;
    CUDA_CHECK(cudaMemsetAsync(dmod, 0, (size_t)B * m6 * sizeof(float), s));
    const float *scale_a = k->mod + d, *gate_a = k->mod + 2 * d;
    const float *scale_m = k->mod + 4 * d, *gate_m = k->mod + 5 * d;

    k_gate_residual_backward(s, a->d_x, dmod + 5 * d, m6, a->d_h, k->fc2, gate_m, B, S, d);
    linear_backward(e, a->d_big, g->fc2_w, g->fc2_b, a->d_x, k->gelu, w->fc2_w, rows, F, d, 0);
    k_gelu_backward(s, a->d_big, a->d_big, k->fc1, (size_t)rows * F);
    linear_backward(e, a->d_x, g->fc1_w, g->fc1_b, a->d_big, k->mlp_in, w->fc1_w, rows, d, F, 0);
    k_layernorm_modulate_backward(s, a->d_h, dmod + 3 * d, dmod + 4 * d, m6, a->d_x, k->h_mid, Sd,
                                  k->ln2_mean, k->ln2_rstd, scale_m, B, S, d);

    k_gate_residual_backward(s, a->d_x, dmod + 2 * d, m6, a->d_h, k->proj, gate_a, B, S, d);
    linear_backward(e, a->d_big, g->proj_w, g->proj_b, a->d_x, k->attn, w->proj_w, rows, d, d, 0);
    attention_backward(e, k, B);
    k_qkv_heads_backward(s, a->d_big, g->q_norm, g->k_norm, a->scratch, a->d_qh, a->d_kh, a->d_vh,
                         k->qkv, k->q_rstd, k->k_rstd, w->q_norm, w->k_norm, B, S, H, dh);
    linear_backward(e, a->d_x, g->qkv_w, g->qkv_b, a->d_big, k->a, w->qkv_w, rows, d, 3 * d, 0);
    k_layernorm_modulate_backward(s, a->d_h, dmod, dmod + d, m6, a->d_x, k->h_in, Sd, k->ln1_mean,
                                  k->ln1_rstd, scale_a, B, S, d);

    linear_backward(e, a->d_sc, g->ada_w, g->ada_b, dmod, a->sc, w->ada_w, B, d, m6, 1);
}

void engine_backward(CudaEngine *e, const float *dv)
{
    const ModelConfig *c = &e->cfg;
    const ParamTensors *p = &e->p;
    ParamTensors *g = &e->g;
    DevActs *a = e->a;
    cudaStream_t s = e->stream;
    int B = e->grad_ready, d = c->dim, T = c->text_len, N = cfg_img_tokens(c);
    int P = cfg_patch_dim(c), S = cfg_seq_len(c);
    if (B == 0) {
        fprintf(stderr, "chunkgrpo: internal error: CUDA backward without a training forward\n");
        exit(70);
    }

    e->compute = e->train_compute;
    CUDA_CHECK(cudaMemsetAsync(a->d_sc, 0, (size_t)B * d * sizeof(float), s));
    k_patchify(s, a->d_out, dv, B, c->image_size, c->channels, c->patch);
    linear_backward(e, a->d_x, g->fin_w, g->fin_b, a->d_out, a->fin_in, p->fin_w, B * N, d, P, 0);
    CUDA_CHECK(cudaMemsetAsync(a->d_h, 0, (size_t)B * S * d * sizeof(float), s));
    CUDA_CHECK(cudaMemsetAsync(a->d_mod, 0, (size_t)B * 2 * d * sizeof(float), s));
    k_layernorm_modulate_backward(s, a->d_h + (size_t)T * d, a->d_mod, a->d_mod + d, 2 * d, a->d_x,
                                  a->h_last + (size_t)T * d, (size_t)S * d, a->lnf_mean,
                                  a->lnf_rstd, a->fmod + d, B, N, d);
    linear_backward(e, a->d_sc, g->fin_ada_w, g->fin_ada_b, a->d_mod, a->sc, p->fin_ada_w, B, d,
                    2 * d, 1);

    for (int l = c->depth - 1; l >= 0; l--)
        block_backward(e, &p->blocks[l], &g->blocks[l], &a->blocks[l], B);

    k_silu_backward(s, a->d_c, a->d_sc, a->c, (size_t)B * d, 0);
    linear_backward(e, a->d_vec, g->t2_w, g->t2_b, a->d_c, a->t1s, p->t2_w, B, d, d, 0);
    k_silu_backward(s, a->d_vec, a->d_vec, a->t1, (size_t)B * d, 0);
    linear_backward(e, NULL, g->t1_w, g->t1_b, a->d_vec, a->tfreq, p->t1_w, B, MODEL_TIME_FREQ_DIM,
                    d, 0);
    linear_backward(e, a->d_vec, g->pool_w, g->pool_b, a->d_c, a->pooled_mean, p->pool_w, B, d, d,
                    0);

    k_gather_image_rows(s, a->d_x, a->d_h, B, T, N, S, d);
    linear_backward(e, NULL, g->patch_w, g->patch_b, a->d_x, a->patches, p->patch_w, B * N, P, d,
                    0);
    k_sum_over_batch(s, g->img_pos, a->d_x, B, (size_t)N * d);
    k_embed_text_backward(s, g->tok_emb, g->txt_pos, a->d_h, a->d_vec, a->tokens, a->text_count, B,
                          T, S, d);
}

/* ---- host API ------------------------------------------------------------------------------ */

void cuda_forward_host(CudaEngine *e, int B, const float *x, const float *t, const int32_t *tokens,
                       float *v)
{
    size_t img = cfg_image_numel(&e->cfg), T = (size_t)e->cfg.text_len;
    cudaStream_t s = e->stream;
    CUDA_CHECK(cudaMemcpyAsync(e->x_in, x, B * img * sizeof(float), cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaMemcpyAsync(e->t_in, t, B * sizeof(float), cudaMemcpyHostToDevice, s));
    CUDA_CHECK(
        cudaMemcpyAsync(e->a->tokens, tokens, B * T * sizeof(int32_t), cudaMemcpyHostToDevice, s));
    engine_forward(e, B, e->x_in, e->t_in, e->a->tokens, e->v_out, PASS_TRAIN);
    CUDA_CHECK(cudaMemcpyAsync(v, e->v_out, B * img * sizeof(float), cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
}

void cuda_backward_host(CudaEngine *e, const float *dv)
{
    size_t img = cfg_image_numel(&e->cfg);
    CUDA_CHECK(cudaMemcpyAsync(e->v_out, dv, e->grad_ready * img * sizeof(float),
                               cudaMemcpyHostToDevice, e->stream));
    engine_backward(e, e->v_out);
    CUDA_CHECK(cudaStreamSynchronize(e->stream));
}

double cuda_adamw_step(CudaEngine *e, AdamW *opt)
{
    const AdamWConfig *c = &opt->cfg;
    opt->step++;
    float bc1 = 1.0f - powf(c->beta1, (float)opt->step);
    float bc2 = 1.0f - powf(c->beta2, (float)opt->step);
    k_grad_norm(e->stream, e->norm, e->norm_partials, e->grads, e->num_params);
    k_adamw(e->stream, e->params, e->adam_m, e->adam_v, e->grads, e->norm, e->num_params, c->lr,
            c->beta1, c->beta2, c->eps, c->weight_decay, bc1, bc2, c->grad_clip);
    double norm = 0.0;
    CUDA_CHECK(cudaMemcpyAsync(&norm, e->norm, sizeof norm, cudaMemcpyDeviceToHost, e->stream));
    CUDA_CHECK(cudaStreamSynchronize(e->stream));
    return norm;
}

void cuda_adamw_get_moments(const CudaEngine *e, float *m, float *v)
{
    size_t bytes = e->num_params * sizeof(float);
    CUDA_CHECK(cudaMemcpyAsync(m, e->adam_m, bytes, cudaMemcpyDeviceToHost, e->stream));
    CUDA_CHECK(cudaMemcpyAsync(v, e->adam_v, bytes, cudaMemcpyDeviceToHost, e->stream));
    CUDA_CHECK(cudaStreamSynchronize(e->stream));
}

void cuda_adamw_set_moments(CudaEngine *e, const float *m, const float *v)
{
    size_t bytes = e->num_params * sizeof(float);
    CUDA_CHECK(cudaMemcpyAsync(e->adam_m, m, bytes, cudaMemcpyHostToDevice, e->stream));
    CUDA_CHECK(cudaMemcpyAsync(e->adam_v, v, bytes, cudaMemcpyHostToDevice, e->stream));
    CUDA_CHECK(cudaStreamSynchronize(e->stream));
}
