/*
 * ops.h: the CPU kernels of the model, each a forward and its backward with the same name stem
 * (llm.c style, so the CUDA backend can be read against these line by line).
 *
 * Conventions: row-major; a "row" is one token's feature vector. Backward functions ADD into
 * parameter gradients (dW, db, ...) and either write or add into input gradients as each comment
 * says. Every reduction is split over the non-reduced dimension or done in a fixed order, so
 * results depend on the thread count at most through BLAS, never through our loops.
 * Matrix products go through cblas_sgemm; the rest is plain C with OpenMP.
 */
#ifndef CHUNKGRPO_OPS_H
#define CHUNKGRPO_OPS_H

#include <stddef.h>
#include <stdint.h>

/* Sets the threads of both the BLAS library and our OpenMP loops (n >= 1). OpenBLAS reads its
 * environment only at load, so this is the way to change it at run time. */
void engine_set_threads(int n);
int engine_threads(void);

/* out[M,N] = in[M,K] W[N,K]^T + b[N] (b may be NULL). */
void linear_forward(float *out, const float *in, const float *W, const float *b, int M, int K,
                    int N);

/* dW[N,K] += dout^T in; db[N] += column sums of dout (if db); din[M,K] = dout W, or += when
 * din_accumulate (if din). */
void linear_backward(float *din, float *dW, float *db, const float *dout, const float *in,
                     const float *W, int M, int K, int N, int din_accumulate);

/* Non-affine LayerNorm (eps 1e-6) over rows of width C, then per-sample modulation:
 *   out[r] = xhat[r] * (1 + scale[b]) + shift[b], b = r / rows_per_sample.
 * Saves mean[rows] and rstd[rows]. shift/scale rows have stride mod_stride floats. */
void layernorm_modulate_forward(float *out, float *mean, float *rstd, const float *in,
                                const float *shift, const float *scale, int mod_stride, int B,
                                int rows_per_sample, int C);

/* dout -> din (ADDED), dshift/dscale (ADDED, stride mod_stride). */
void layernorm_modulate_backward(float *din, float *dshift, float *dscale, int mod_stride,
                                 const float *dout, const float *in, const float *mean,
                                 const float *rstd, const float *scale, int B, int rows_per_sample,
                                 int C);

/* h_out[r] = h_in[r] + gate[b] * x[r] (gate stride mod_stride); h_out may be h_in. */
void gate_residual_forward(float *h_out, const float *h_in, const float *x, const float *gate,
                           int mod_stride, int B, int rows_per_sample, int C);
/* Given dh: dx = dh * gate (written), dgate[b] += sum_r dh[r] x[r]. */
void gate_residual_backward(float *dx, float *dgate, int mod_stride, const float *dh,
                            const float *x, const float *gate, int B, int rows_per_sample, int C);

/* Split qkv [B, S, 3d] into heads [B, H, S, dh] with per-head RMS norm of q and k (eps 1e-6)
 * times q_norm / k_norm [dh]. Saves q_rstd, k_rstd [B, S, H]. */
void qkv_heads_forward(float *qh, float *kh, float *vh, float *q_rstd, float *k_rstd,
                       const float *qkv, const float *q_norm, const float *k_norm, int B, int S,
                       int H, int dh);
/* dqh, dkh, dvh [B, H, S, dh] -> dqkv [B, S, 3d] (written); dq_norm, dk_norm [dh] (ADDED).
 * scratch: B*H*2*dh floats. */
void qkv_heads_backward(float *dqkv, float *dq_norm, float *dk_norm, float *scratch,
                        const float *dqh, const float *dkh, const float *dvh, const float *qkv,
                        const float *q_rstd, const float *k_rstd, const float *q_norm,
                        const float *k_norm, int B, int S, int H, int dh);

/* Softmax attention per (b, head) over all S positions; keys j with key_mask[b*S + j] == 0 are
 * excluded. Saves probabilities att [B, H, S, S]; writes out [B, S, H*dh] (heads concatenated). */
void attention_forward(float *out, float *att, const float *qh, const float *kh, const float *vh,
                       const uint8_t *key_mask, int B, int S, int H, int dh);
/* dout [B, S, H*dh] -> dqh, dkh, dvh [B, H, S, dh] (written).
 * scratch: attention_backward_scratch(S, dh) floats per OpenMP thread. */
size_t attention_backward_scratch(int S, int dh);
void attention_backward(float *dqh, float *dkh, float *dvh, float *scratch, const float *dout,
                        const float *att, const float *qh, const float *kh, const float *vh, int B,
                        int S, int H, int dh);

void gelu_forward(float *out, const float *in, size_t n);
/* din = dout * gelu'(in) (written). */
void gelu_backward(float *din, const float *dout, const float *in, size_t n);
void silu_forward(float *out, const float *in, size_t n);
/* din = dout * silu'(in) (written, or ADDED when accumulate). */
void silu_backward(float *din, const float *dout, const float *in, size_t n, int accumulate);

/* out[b, 0:128] = cos(1000 t freq_k), out[b, 128:256] = sin(1000 t freq_k). */
void timestep_embedding(float *out, const float *t, int B);

/* Image [B, S, S, C] <-> patches [B, N, p*p*C] (spec/model.md order). */
void patchify(float *patches, const float *x, int B, int S, int C, int p);
void unpatchify(float *x, const float *patches, int B, int S, int C, int p);

#endif
