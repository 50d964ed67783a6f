/*
 * kernels.cuh: the device kernels of the CUDA backend, one launcher per ops.c function (same
 * name stem, same contract: see ops.h), plus the few pieces model_cpu.c, sampler_cpu.c and
 * adamw.c compute inline. Every launcher runs on the given stream and checks its launch.
 * Matrix products are not here: engine.cu calls cuBLAS for them.
 */
#ifndef CHUNKGRPO_CUDA_KERNELS_CUH
#define CHUNKGRPO_CUDA_KERNELS_CUH

#include <stddef.h>
#include <stdint.h>

#include "cuda_util.cuh"

/* out[r, :] = b (rows of width N), the bias that a GEMM with beta = 1 then adds to. */
void k_bias_broadcast(cudaStream_t s, float *out, const float *b, int M, int N);

/*
 * layernorm_modulate_forward with strided input: sample b's rows start at
 * in + b * in_sample_stride (so the final layer can read the image rows of the residual stream
 * in place); out is compact [B, rows_per_sample, C].
 */
void k_layernorm_modulate_forward(cudaStream_t s, float *out, float *mean, float *rstd,
                                  const float *in, size_t in_sample_stride, const float *shift,
                                  const float *scale, int mod_stride, int B, int rows_per_sample,
                                  int C);
/* Its backward: din (ADDED, strided like in), dshift/dscale (ADDED). */
void k_layernorm_modulate_backward(cudaStream_t s, float *din, float *dshift, float *dscale,
                                   int mod_stride, const float *dout, const float *in,
                                   size_t in_sample_stride, const float *mean, const float *rstd,
                                   const float *scale, int B, int rows_per_sample, int C);

/* h_out[r] = h_in[r] + gate[b] * x[r] (h_out may equal h_in). */
void k_gate_residual_forward(cudaStream_t s, float *h_out, const float *h_in, const float *x,
                             const float *gate, int mod_stride, int B, int rows_per_sample, int C);
/* dx = dh * gate (written); dgate[b] += sum_r dh[r] x[r]. */
void k_gate_residual_backward(cudaStream_t s, float *dx, float *dgate, int mod_stride,
                              const float *dh, const float *x, const float *gate, int B,
                              int rows_per_sample, int C);

void k_qkv_heads_forward(cudaStream_t s, float *qh, float *kh, float *vh, float *q_rstd,
                         float *k_rstd, const float *qkv, const float *q_norm, const float *k_norm,
                         int B, int S, int H, int dh);
/* scratch: at least 2 * dh * ceil(B*S*H / 256) floats (per-slice partial norm gradients). */
void k_qkv_heads_backward(cudaStream_t s, float *dqkv, float *dq_norm, float *dk_norm,
                          float *scratch, const float *dqh, const float *dkh, const float *dvh,
                          const float *qkv, const float *q_rstd, const float *k_rstd,
                          const float *q_norm, const float *k_norm, int B, int S, int H, int dh);
size_t k_qkv_heads_backward_scratch(int B, int S, int H, int dh);

/* In place over scores [B*H, S, S] (already scaled): masked softmax per row. */
void k_softmax_masked(cudaStream_t s, float *att, const uint8_t *key_mask, int B, int H, int S);
/* In place: dP -> dS = P * (dP - rowsum(P dP)) * scale. */
void k_softmax_backward(cudaStream_t s, float *dP, const float *P, int rows, int S, float scale);
/* [B, H, S, dh] <-> [B, S, H*dh] */
void k_heads_to_rows(cudaStream_t s, float *out, const float *heads, int B, int S, int H, int dh);
void k_rows_to_heads(cudaStream_t s, float *heads, const float *rows, int B, int S, int H, int dh);
/*
 * Flash-style attention forward (no probabilities saved): one thread block per (b, h, 32
 * queries), keys streamed through shared memory in tiles with an online softmax. For passes
 * that need no backward (sampling), where the [B, H, S, S] probabilities would cost memory
 * traffic quadratic in S. out [B, S, H*dh]. dh <= 128.
 */
void k_flash_attention_forward(cudaStream_t s, float *out, const float *qh, const float *kh,
                               const float *vh, const uint8_t *key_mask, int B, int S, int H,
                               int dh);

/* fc1 epilogue: pre = pre + b (in place), out = gelu_tanh(pre). */
void k_bias_gelu_forward(cudaStream_t s, float *out, float *pre, const float *b, int M, int N);
void k_gelu_backward(cudaStream_t s, float *din, const float *dout, const float *in, size_t n);
void k_silu_forward(cudaStream_t s, float *out, const float *in, size_t n);
void k_silu_backward(cudaStream_t s, float *din, const float *dout, const float *in, size_t n,
                     int accumulate);
/* y += x */
void k_add(cudaStream_t s, float *y, const float *x, size_t n);
void k_fill(cudaStream_t s, float *y, float value, size_t n);

void k_timestep_embedding(cudaStream_t s, float *out, const float *t, int B);
void k_patchify(cudaStream_t s, float *patches, const float *x, int B, int S, int C, int p);
void k_unpatchify(cudaStream_t s, float *x, const float *patches, int B, int S, int C, int p);

/* Text rows of the residual stream h [B, S, d] (token + position embeddings), key_mask [B, S],
 * pooled_mean [B, d] (mean embedding of the non-PAD tokens), text_count [B]. */
void k_embed_text(cudaStream_t s, float *h, uint8_t *key_mask, float *pooled_mean, int *text_count,
                  const int32_t *tokens, const float *tok_emb, const float *txt_pos, int B, int T,
                  int S, int d);
/* Image rows: h[b, T + n] = patch_out[b, n] + img_pos[n]. */
void k_embed_image(cudaStream_t s, float *h, const float *patch_out, const float *img_pos, int B,
                   int T, int N, int S, int d);
/* dst [B, N, d] = image rows of src [B, S, d]. */
void k_gather_image_rows(cudaStream_t s, float *dst, const float *src, int B, int T, int N, int S,
                         int d);
/* g_img_pos[n] += sum_b d_img[b, n] (in sample order). */
void k_sum_over_batch(cudaStream_t s, float *dst, const float *src, int B, size_t n);
/* Embedding gradients: every text row's d_h into tok_emb and txt_pos, plus each non-PAD token's
 * share of the pooled mean's gradient; one thread per feature, rows in order (deterministic). */
void k_embed_text_backward(cudaStream_t s, float *g_tok_emb, float *g_txt_pos, const float *d_h,
                           const float *d_pooled, const int32_t *tokens, const int *text_count,
                           int B, int T, int S, int d);

/* Philox normals exactly as rng_normal: element i of a request of n at block counter base is
 * normal i of that request. */
void k_rng_normal(cudaStream_t s, float *out, size_t n, uint64_t key, uint64_t base);
/* Initial noise shared in groups of g (g = 0: independent): x[k, j] = normal (k / g) * img + j
 * of a request of ceil(n / g) * img normals (rng_normal + the CPU's copy, in one pass). */
void k_rng_normal_grouped(cudaStream_t s, float *x, int n, size_t img, int g, uint64_t key,
                          uint64_t base);

/* Per row r < rows: x_next = cx x + cv v + std z, logp[r] = sde_logp(x_next, mu, std);
 * with x0_hat set, also x0_hat = x - sigma v. The ODE variant: x_next = x - h v, logp 0. */
void k_sde_step(cudaStream_t s, float *x_next, float *logp, float *x0_hat, const float *x,
                const float *v, const float *z, float cx, float cv, float std, float sigma,
                int rows, size_t img);
void k_ode_step(cudaStream_t s, float *x_next, float *logp, float *x0_hat, const float *x,
                const float *v, float sigma, float sigma_next, int rows, size_t img);
/* v = vu + w (v - vu) */
void k_guidance(cudaStream_t s, float *v, const float *vu, float w, size_t n);
/* Backward of k_guidance over dv [2 n]: w d into the first n, (1 - w) d into the next n. */
void k_guidance_backward(cudaStream_t s, float *dv, float w, size_t n);

/* One GRPO row's inputs, gathered from the device trajectory. */
typedef struct {
    int traj, step;       /* transition `step` of trajectory traj */
    float t, cx, cv, std; /* sigma_step and its SDE constants */
    float dlogp_coef;     /* dv = dlogp_coef (x_next - mu) + kl_coef_row (mu - mu_ref) */
    float kl_coef_row;
} GrpoRow;
/* xb [rows, img] = x_step of each row's trajectory, tok [rows, T] its prompt. */
void k_grpo_gather(cudaStream_t s, float *xb, int32_t *tok, const GrpoRow *rows_dev, int rows,
                   const float *traj_x, const int32_t *traj_tokens, int n, size_t img, int T);
/* mu = cx x + cv v (into mu); logp_new[r] and, with v_ref set, kl[r] = mean((mu - mu_ref)^2) /
 * (2 std^2) where mu_ref = cx x + cv v_ref (written over v_ref). Sums in double. */
void k_grpo_logp(cudaStream_t s, float *mu, double *logp_new, double *kl, float *v_ref,
                 const float *xb, const float *v, const GrpoRow *rows_dev, int rows,
                 const float *traj_x, int n, size_t img);
/* dv per row from the coefficients (see GrpoRow). */
void k_grpo_dv(cudaStream_t s, float *dv, const float *mu, const float *mu_ref,
               const GrpoRow *rows_dev, int rows, const float *traj_x, int n, size_t img);

/* Gradient norm: partial sums of squares in double over fixed slices, then their total into
 * *norm (device); sizes depend only on n, so the result is deterministic. */
size_t k_grad_norm_partials(size_t n);
void k_grad_norm(cudaStream_t s, double *norm, double *partials, const float *g, size_t n);
/* The AdamW update of adamw.c, reading the norm from the device for the clip factor. */
void k_adamw(cudaStream_t s, float *params, float *m, float *v, const float *g, const double *norm,
             size_t n, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2,
             float grad_clip);

#endif
