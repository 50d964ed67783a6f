/*
 * kernels.cu: the device kernels of the CUDA backend. See kernels.cuh for the contracts and
 * ops.h for the maths each one mirrors.
 *
 * Row-wise ops (norms, softmax) give one warp to a row; reductions that produce a parameter or
 * modulation gradient give one thread to an output element and walk the rows in order, so that
 * every result is deterministic (no atomics anywhere in the backend).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "kernels.cuh"

#define NORM_EPS 1e-6f
#define GELU_C 0.7978845608028654f /* sqrt(2/pi) */
#define LOG_SQRT_2PI 0.91893853320467274178
#define TOKEN_PAD_ID 0
#define THREADS 256
#define ROWS_PER_BLOCK (THREADS / 32) /* one warp per row */

void cuda_fail(const char *what, const char *file, int line, const char *msg)
{
    fprintf(stderr, "chunkgrpo: CUDA failure at %s:%d: %s: %s\n", file, line, what, msg);
    exit(70);
}

static __device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

static __device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum of one double per thread over the block (blockDim.x a multiple of 32, <= 1024); the
 * result is valid in thread 0. Fixed tree: deterministic. */
static __device__ double block_sum_double(double v)
{
    __shared__ double warp_part[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane == 0) warp_part[warp] = v;
    __syncthreads();
    double total = 0.0;
    if (threadIdx.x == 0)
        for (int w = 0; w < (int)blockDim.x / 32; w++) total += warp_part[w];
    __syncthreads();
    return total;
}

/* ---- linear helpers ------------------------------------------------------------------------ */

static __global__ void bias_broadcast_kernel(float *out, const float *b, int M, int N)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)M * N) out[i] = b[i % N];
}

void k_bias_broadcast(cudaStream_t s, float *out, const float *b, int M, int N)
{
    bias_broadcast_kernel<<<ceil_div((size_t)M * N, THREADS), THREADS, 0, s>>>(out, b, M, N);
    CUDA_CHECK_LAUNCH();
}

/* ---- layer norm + modulation --------------------------------------------------------------- */

static __global__ void ln_mod_fwd_kernel(float *out, float *mean, float *rstd, const float *in,
                                         size_t in_ss, const float *shift, const float *scale,
                                         int ms, int B, int R, int C)
{
    int row = blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= B * R) return;
    int b = row / R, rr = row % R;
    const float *x = in + b * in_ss + (size_t)rr * C;
    float s = 0.0f;
    for (int i = lane; i < C; i += 32) s += x[i];
    float m = warp_sum(s) / C;
    float v = 0.0f;
    for (int i = lane; i < C; i += 32) v += (x[i] - m) * (x[i] - m);
    float rs = 1.0f / sqrtf(warp_sum(v) / C + NORM_EPS);
    const float *sh = shift + (size_t)b * ms, *sc = scale + (size_t)b * ms;
    float *y = out + (size_t)row * C;
    for (int i = lane; i < C; i += 32) y[i] = (x[i] - m) * rs * (1.0f + sc[i]) + sh[i];
    if (lane == 0) mean[row] = m, rstd[row] = rs;
}

void k_layernorm_modulate_forward(cudaStream_t s, float *out, float *mean, float *rstd,
                                  const float *in, size_t in_ss, const float *shift,
                                  const float *scale, int ms, int B, int R, int C)
{
    ln_mod_fwd_kernel<<<ceil_div((size_t)B * R, ROWS_PER_BLOCK), THREADS, 0, s>>>(
        out, mean, rstd, in, in_ss, shift, scale, ms, B, R, C);
    CUDA_CHECK_LAUNCH();
}

static __global__ void ln_mod_bwd_din_kernel(float *din, const float *dout, const float *in,
                                             size_t in_ss, const float *mean, const float *rstd,
                                             const float *scale, int ms, int B, int R, int C)
{
    int row = blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (row >= B * R) return;
    int b = row / R, rr = row % R;
    size_t off = b * in_ss + (size_t)rr * C;
    const float *x = in + off, *dy = dout + (size_t)row * C, *sc = scale + (size_t)b * ms;
    float *dx = din + off;
    float m = mean[row], rs = rstd[row], s1 = 0.0f, s2 = 0.0f;
    for (int i = lane; i < C; i += 32) {
        float xh = (x[i] - m) * rs, dxh = dy[i] * (1.0f + sc[i]);
        s1 += dxh;
        s2 += dxh * xh;
    }
    s1 = warp_sum(s1) / C;
    s2 = warp_sum(s2) / C;
    for (int i = lane; i < C; i += 32) {
        float xh = (x[i] - m) * rs;
        dx[i] += rs * (dy[i] * (1.0f + sc[i]) - s1 - xh * s2);
    }
}

/* Per-sample sums over rows (modulation gradients): a block of RED_COLS features x RED_GROUPS
 * row groups; group g sums rows g, g + RED_GROUPS, ... in order, then the groups' partials are
 * added in group order. Fixed shapes, so the result is deterministic. */
#define RED_COLS 32
#define RED_GROUPS 8

/* Adds the RED_GROUPS partials of each column (held in part[group][col]) in order; thread
 * (group 0, col) returns the total, the others 0. */
static __device__ float reduce_groups(float (*part)[RED_COLS], float v)
{
    int col = threadIdx.x % RED_COLS, grp = threadIdx.x / RED_COLS;
    part[grp][col] = v;
    __syncthreads();
    float total = 0.0f;
    if (grp == 0)
        for (int k = 0; k < RED_GROUPS; k++) total += part[k][col];
    __syncthreads();
    return total;
}

static __global__ void ln_mod_bwd_mod_kernel(float *dshift, float *dscale, const float *dout,
                                             const float *in, size_t in_ss, const float *mean,
                                             const float *rstd, int ms, int B, int R, int C)
{
    __shared__ float part[RED_GROUPS][RED_COLS];
    int i = blockIdx.x * RED_COLS + threadIdx.x % RED_COLS, grp = threadIdx.x / RED_COLS;
    int b = blockIdx.y, live = i < C;
    float dsh = 0.0f, dsc = 0.0f;
    for (int rr = grp; live && rr < R; rr += RED_GROUPS) {
        size_t row = (size_t)b * R + rr;
        float dy = dout[row * C + i];
        float xh = (in[b * in_ss + (size_t)rr * C + i] - mean[row]) * rstd[row];
        dsh += dy;
        dsc += dy * xh;
    }
    dsh = reduce_groups(part, dsh);
    dsc = reduce_groups(part, dsc);
    if (live && grp == 0) {
        dshift[(size_t)b * ms + i] += dsh;
        dscale[(size_t)b * ms + i] += dsc;
    }
}

void k_layernorm_modulate_backward(cudaStream_t s, float *din, float *dshift, float *dscale, int ms,
                                   const float *dout, const float *in, size_t in_ss,
                                   const float *mean, const float *rstd, const float *scale, int B,
                                   int R, int C)
{
    ln_mod_bwd_din_kernel<<<ceil_div((size_t)B * R, ROWS_PER_BLOCK), THREADS, 0, s>>>(
        din, dout, in, in_ss, mean, rstd, scale, ms, B, R, C);
    CUDA_CHECK_LAUNCH();
    ln_mod_bwd_mod_kernel<<<dim3(ceil_div(C, RED_COLS), B), RED_COLS * RED_GROUPS, 0, s>>>(
        dshift, dscale, dout, in, in_ss, mean, rstd, ms, B, R, C);
    CUDA_CHECK_LAUNCH();
}

/* ---- gated residual ------------------------------------------------------------------------ */

static __global__ void gate_res_fwd_kernel(float *h_out, const float *h_in, const float *x,
                                           const float *gate, int ms, int R, int C, size_t n)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    size_t r = idx / C;
    int i = (int)(idx % C), b = (int)(r / R);
    h_out[idx] = h_in[idx] + gate[(size_t)b * ms + i] * x[idx];
}

void k_gate_residual_forward(cudaStream_t s, float *h_out, const float *h_in, const float *x,
                             const float *gate, int ms, int B, int R, int C)
{
    size_t n = (size_t)B * R * C;
    gate_res_fwd_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>(h_out, h_in, x, gate, ms, R, C, n);
    CUDA_CHECK_LAUNCH();
}

static __global__ void gate_res_bwd_kernel(float *dx, float *dgate, int ms, const float *dh,
                                           const float *x, const float *gate, int R, int C)
{
    __shared__ float part[RED_GROUPS][RED_COLS];
    int i = blockIdx.x * RED_COLS + threadIdx.x % RED_COLS, grp = threadIdx.x / RED_COLS;
    int b = blockIdx.y, live = i < C;
    float g = live ? gate[(size_t)b * ms + i] : 0.0f, acc = 0.0f;
    for (int rr = grp; live && rr < R; rr += RED_GROUPS) {
        size_t o = ((size_t)b * R + rr) * C + i;
        acc += dh[o] * x[o];
        dx[o] = dh[o] * g;
    }
    acc = reduce_groups(part, acc);
    if (live && grp == 0) dgate[(size_t)b * ms + i] += acc;
}

void k_gate_residual_backward(cudaStream_t s, float *dx, float *dgate, int ms, const float *dh,
                              const float *x, const float *gate, int B, int R, int C)
{
    gate_res_bwd_kernel<<<dim3(ceil_div(C, RED_COLS), B), RED_COLS * RED_GROUPS, 0, s>>>(
        dx, dgate, ms, dh, x, gate, R, C);
    CUDA_CHECK_LAUNCH();
}

/* ---- attention heads with QK RMS norm ------------------------------------------------------ */

/* Vector v enumerates (b, s, h) as the rstd arrays do: v = (b S + s) H + h. */
static __global__ void qkv_heads_fwd_kernel(float *qh, float *kh, float *vh, float *q_rstd,
                                            float *k_rstd, const float *qkv, const float *q_norm,
                                            const float *k_norm, int B, int S, int H, int dh)
{
    int v = blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (v >= B * S * H) return;
    int h = v % H, bs = v / H, b = bs / S, s = bs % S, d = H * dh;
    const float *row = qkv + (size_t)bs * 3 * d;
    const float *q = row + h * dh, *k = row + d + h * dh, *vv = row + 2 * d + h * dh;
    float sq = 0.0f, sk = 0.0f;
    for (int i = lane; i < dh; i += 32) sq += q[i] * q[i], sk += k[i] * k[i];
    float rq = 1.0f / sqrtf(warp_sum(sq) / dh + NORM_EPS);
    float rk = 1.0f / sqrtf(warp_sum(sk) / dh + NORM_EPS);
    size_t o = (((size_t)b * H + h) * S + s) * dh;
    for (int i = lane; i < dh; i += 32) {
        qh[o + i] = q[i] * rq * q_norm[i];
        kh[o + i] = k[i] * rk * k_norm[i];
        vh[o + i] = vv[i];
    }
    if (lane == 0) q_rstd[v] = rq, k_rstd[v] = rk;
}

void k_qkv_heads_forward(cudaStream_t s, float *qh, float *kh, float *vh, float *q_rstd,
                         float *k_rstd, const float *qkv, const float *q_norm, const float *k_norm,
                         int B, int S, int H, int dh)
{
    qkv_heads_fwd_kernel<<<ceil_div((size_t)B * S * H, ROWS_PER_BLOCK), THREADS, 0, s>>>(
        qh, kh, vh, q_rstd, k_rstd, qkv, q_norm, k_norm, B, S, H, dh);
    CUDA_CHECK_LAUNCH();
}

/* dx = r (dy w - xhat mean(dy w xhat)) for one head vector, by one warp. */
static __device__ void rms_backward_warp(float *dx, const float *dy, const float *x, float r,
                                         const float *w, int n, int lane)
{
    float dot = 0.0f;
    for (int i = lane; i < n; i += 32) dot += dy[i] * w[i] * x[i] * r;
    dot = warp_sum(dot) / n;
    for (int i = lane; i < n; i += 32) dx[i] = r * (dy[i] * w[i] - x[i] * r * dot);
}

static __global__ void qkv_heads_bwd_kernel(float *dqkv, const float *dqh, const float *dkh,
                                            const float *dvh, const float *qkv, const float *q_rstd,
                                            const float *k_rstd, const float *q_norm,
                                            const float *k_norm, int B, int S, int H, int dh)
{
    int v = blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32, lane = threadIdx.x % 32;
    if (v >= B * S * H) return;
    int h = v % H, bs = v / H, b = bs / S, s = bs % S, d = H * dh;
    size_t o = (((size_t)b * H + h) * S + s) * dh;
    const float *row = qkv + (size_t)bs * 3 * d;
    float *drow = dqkv + (size_t)bs * 3 * d;
    rms_backward_warp(drow + h * dh, dqh + o, row + h * dh, q_rstd[v], q_norm, dh, lane);
    rms_backward_warp(drow + d + h * dh, dkh + o, row + d + h * dh, k_rstd[v], k_norm, dh, lane);
    for (int i = lane; i < dh; i += 32) drow[2 * d + h * dh + i] = dvh[o + i];
}

#define NORM_SLICE 256 /* head vectors per partial sum of the norm-weight gradients */

/* Block = one slice of vectors; thread i < dh sums dw_q[i], dw_k[i] over it in order. */
static __global__ void qkv_norm_partials_kernel(float *partials, const float *dqh, const float *dkh,
                                                const float *qkv, const float *q_rstd,
                                                const float *k_rstd, int B, int S, int H, int dh)
{
    int i = threadIdx.x, d = H * dh, nvec = B * S * H;
    if (i >= dh) return;
    float aq = 0.0f, ak = 0.0f;
    int v0 = blockIdx.x * NORM_SLICE, v1 = min(v0 + NORM_SLICE, nvec);
    for (int v = v0; v < v1; v++) {
        int h = v % H, bs = v / H, b = bs / S, s = bs % S;
        size_t o = (((size_t)b * H + h) * S + s) * dh;
        const float *row = qkv + (size_t)bs * 3 * d;
        aq += dqh[o + i] * row[h * dh + i] * q_rstd[v];
        ak += dkh[o + i] * row[d + h * dh + i] * k_rstd[v];
    }
    partials[(size_t)blockIdx.x * 2 * dh + i] = aq;
    partials[(size_t)blockIdx.x * 2 * dh + dh + i] = ak;
}

static __global__ void qkv_norm_sum_kernel(float *dq_norm, float *dk_norm, const float *partials,
                                           int slices, int dh)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= 2 * dh) return;
    float acc = 0.0f;
    for (int k = 0; k < slices; k++) acc += partials[(size_t)k * 2 * dh + i];
    if (i < dh)
        dq_norm[i] += acc;
    else
        dk_norm[i - dh] += acc;
}

size_t k_qkv_heads_backward_scratch(int B, int S, int H, int dh)
{
    return (size_t)ceil_div((size_t)B * S * H, NORM_SLICE) * 2 * dh;
}

void k_qkv_heads_backward(cudaStream_t s, float *dqkv, float *dq_norm, float *dk_norm,
                          float *scratch, const float *dqh, const float *dkh, const float *dvh,
                          const float *qkv, const float *q_rstd, const float *k_rstd,
                          const float *q_norm, const float *k_norm, int B, int S, int H, int dh)
{
    size_t nvec = (size_t)B * S * H;
    qkv_heads_bwd_kernel<<<ceil_div(nvec, ROWS_PER_BLOCK), THREADS, 0, s>>>(
        dqkv, dqh, dkh, dvh, qkv, q_rstd, k_rstd, q_norm, k_norm, B, S, H, dh);
    CUDA_CHECK_LAUNCH();
    int slices = (int)ceil_div(nvec, NORM_SLICE);
    int threads = (dh + 31) / 32 * 32;
    qkv_norm_partials_kernel<<<slices, threads, 0, s>>>(scratch, dqh, dkh, qkv, q_rstd, k_rstd, B,
                                                        S, H, dh);
    CUDA_CHECK_LAUNCH();
    qkv_norm_sum_kernel<<<ceil_div(2 * dh, 128), 128, 0, s>>>(dq_norm, dk_norm, scratch, slices,
                                                              dh);
    CUDA_CHECK_LAUNCH();
}

/* ---- attention ----------------------------------------------------------------------------- */

static __global__ void softmax_masked_kernel(float *att, const uint8_t *key_mask, int H, int S,
                                             size_t rows)
{
    size_t row = (size_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    int b = (int)(row / S / H);
    const uint8_t *mask = key_mask + (size_t)b * S;
    float *p = att + row * S;
    float mx = -INFINITY;
    for (int j = lane; j < S; j += 32)
        if (mask[j]) mx = fmaxf(mx, p[j]);
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < S; j += 32) {
        float e = mask[j] ? expf(p[j] - mx) : 0.0f;
        p[j] = e;
        sum += e;
    }
    float inv = 1.0f / warp_sum(sum);
    for (int j = lane; j < S; j += 32) p[j] *= inv;
}

void k_softmax_masked(cudaStream_t s, float *att, const uint8_t *key_mask, int B, int H, int S)
{
    size_t rows = (size_t)B * H * S;
    softmax_masked_kernel<<<ceil_div(rows, ROWS_PER_BLOCK), THREADS, 0, s>>>(att, key_mask, H, S,
                                                                             rows);
    CUDA_CHECK_LAUNCH();
}

static __global__ void softmax_bwd_kernel(float *dP, const float *P, size_t rows, int S,
                                          float scale)
{
    size_t row = (size_t)blockIdx.x * ROWS_PER_BLOCK + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float *p = P + row * S;
    float *dp = dP + row * S;
    float dot = 0.0f;
    for (int j = lane; j < S; j += 32) dot += p[j] * dp[j];
    dot = warp_sum(dot);
    for (int j = lane; j < S; j += 32) dp[j] = p[j] * (dp[j] - dot) * scale;
}

void k_softmax_backward(cudaStream_t s, float *dP, const float *P, int rows, int S, float scale)
{
    softmax_bwd_kernel<<<ceil_div((size_t)rows, ROWS_PER_BLOCK), THREADS, 0, s>>>(dP, P, rows, S,
                                                                                  scale);
    CUDA_CHECK_LAUNCH();
}

static __global__ void heads_rows_kernel(float *rows, float *heads, int to_rows, int B, int S,
                                         int H, int dh)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t n = (size_t)B * S * H * dh;
    if (idx >= n) return;
    int i = (int)(idx % dh);
    size_t rest = idx / dh;
    int h = (int)(rest % H), s = (int)(rest / H % S), b = (int)(rest / H / S);
    size_t hi = (((size_t)b * H + h) * S + s) * dh + i; /* idx is the row-layout index */
    if (to_rows)
        rows[idx] = heads[hi];
    else
        heads[hi] = rows[idx];
}

void k_heads_to_rows(cudaStream_t s, float *out, const float *heads, int B, int S, int H, int dh)
{
    size_t n = (size_t)B * S * H * dh;
    heads_rows_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>(out, (float *)heads, 1, B, S, H, dh);
    CUDA_CHECK_LAUNCH();
}

void k_rows_to_heads(cudaStream_t s, float *heads, const float *rows, int B, int S, int H, int dh)
{
    size_t n = (size_t)B * S * H * dh;
    heads_rows_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>((float *)rows, heads, 0, B, S, H,
                                                               dh);
    CUDA_CHECK_LAUNCH();
}

#define FLASH_KEYS 32    /* keys per shared-memory tile: one per lane */
#define FLASH_QUERIES 8  /* queries per block: one per warp */
#define FLASH_MAX_DH 128 /* head dims held per lane: FLASH_MAX_DH / 32 */

/*
 * One warp per query. For each tile of 32 keys, lane j scores key j against the query (from
 * shared memory), the warp updates the running max and sum (online softmax), and every lane
 * accumulates its dh/32 output features over the tile's keys.
 */
static __global__ void flash_fwd_kernel(float *out, const float *qh, const float *kh,
                                        const float *vh, const uint8_t *key_mask, int S, int H,
                                        int dh, float scale)
{
    /* K tile [32][dh + 1] (the pad puts lane j's key row in bank j: no conflicts when every
     * lane reads element i of its own key), V tile [32][dh], Q [8][dh] */
    extern __shared__ float smem[];
    int kst = dh + 1;
    float *Kt = smem, *Vt = Kt + FLASH_KEYS * kst, *Qs = Vt + FLASH_KEYS * dh;
    int bh = blockIdx.y, b = bh / H, h = bh % H;
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int q = blockIdx.x * FLASH_QUERIES + warp;
    const float *Q = qh + (size_t)bh * S * dh, *K = kh + (size_t)bh * S * dh;
    const float *V = vh + (size_t)bh * S * dh;
    const uint8_t *mask = key_mask + (size_t)b * S;
    for (int i = lane; i < dh; i += 32)
        Qs[warp * dh + i] = q < S ? Q[(size_t)q * dh + i] * scale : 0;
    float acc[FLASH_MAX_DH / 32];
    for (int c = 0; c < FLASH_MAX_DH / 32; c++) acc[c] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (int k0 = 0; k0 < S; k0 += FLASH_KEYS) {
        __syncthreads(); /* the previous tile is consumed (and Qs written, the first time) */
        for (int e = threadIdx.x; e < FLASH_KEYS * dh; e += blockDim.x) {
            int j = k0 + e / dh;
            Kt[(e / dh) * kst + e % dh] = j < S ? K[(size_t)j * dh + e % dh] : 0.0f;
            Vt[e] = j < S ? V[(size_t)j * dh + e % dh] : 0.0f;
        }
        __syncthreads();
        int j = k0 + lane;
        float sc = -INFINITY;
        if (j < S && mask[j]) {
            sc = 0.0f;
            for (int i = 0; i < dh; i++) sc += Qs[warp * dh + i] * Kt[lane * kst + i];
        }
        float m_new = fmaxf(m, warp_max(sc));
        if (m_new == -INFINITY) continue; /* every key so far masked */
        float p = sc == -INFINITY ? 0.0f : expf(sc - m_new);
        float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
        l = l * corr + warp_sum(p);
        for (int c = 0; c * 32 < dh; c++) acc[c] *= corr;
        for (int kk = 0; kk < FLASH_KEYS; kk++) {
            float pk = __shfl_sync(0xffffffffu, p, kk);
            for (int c = 0; c * 32 + lane < dh; c++) acc[c] += pk * Vt[kk * dh + c * 32 + lane];
        }
        m = m_new;
    }
    if (q >= S) return;
    float inv = 1.0f / l;
    float *o = out + ((size_t)b * S + q) * H * dh + h * dh;
    for (int c = 0; c * 32 + lane < dh; c++) o[c * 32 + lane] = acc[c] * inv;
}

void k_flash_attention_forward(cudaStream_t s, float *out, const float *qh, const float *kh,
                               const float *vh, const uint8_t *key_mask, int B, int S, int H,
                               int dh)
{
    size_t smem =
        ((size_t)FLASH_KEYS * (dh + 1) + (FLASH_KEYS + FLASH_QUERIES) * dh) * sizeof(float);
    dim3 grid(ceil_div(S, FLASH_QUERIES), B * H);
    flash_fwd_kernel<<<grid, FLASH_QUERIES * 32, smem, s>>>(out, qh, kh, vh, key_mask, S, H, dh,
                                                            1.0f / sqrtf((float)dh));
    CUDA_CHECK_LAUNCH();
}

/* ---- activations ----------------------------------------------------------------------------- */

static __device__ __forceinline__ float sigmoidf_(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

static __global__ void bias_gelu_kernel(float *out, float *pre, const float *b, int N, size_t n)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    float x = pre[idx] + b[idx % N];
    pre[idx] = x;
    float u = GELU_C * (x + 0.044715f * x * x * x);
    out[idx] = x * sigmoidf_(2.0f * u);
}

void k_bias_gelu_forward(cudaStream_t s, float *out, float *pre, const float *b, int M, int N)
{
    size_t n = (size_t)M * N;
    bias_gelu_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>(out, pre, b, N, n);
    CUDA_CHECK_LAUNCH();
}

static __global__ void gelu_bwd_kernel(float *din, const float *dout, const float *in, size_t n)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    float x = in[idx];
    float u = GELU_C * (x + 0.044715f * x * x * x);
    float sg = sigmoidf_(2.0f * u);
    float du = GELU_C * (1.0f + 3.0f * 0.044715f * x * x);
    din[idx] = dout[idx] * (sg + 2.0f * x * sg * (1.0f - sg) * du);
}

void k_gelu_backward(cudaStream_t s, float *din, const float *dout, const float *in, size_t n)
{
    gelu_bwd_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>(din, dout, in, n);
    CUDA_CHECK_LAUNCH();
}

static __global__ void silu_fwd_kernel(float *out, const float *in, size_t n)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < n) out[idx] = in[idx] * sigmoidf_(in[idx]);
}

void k_silu_forward(cudaStream_t s, float *out, const float *in, size_t n)
{
    silu_fwd_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>(out, in, n);
    CUDA_CHECK_LAUNCH();
}

static __global__ void silu_bwd_kernel(float *din, const float *dout, const float *in, size_t n,
                                       int accumulate)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    float sg = sigmoidf_(in[idx]);
    float g = dout[idx] * sg * (1.0f + in[idx] * (1.0f - sg));
    din[idx] = accumulate ? din[idx] + g : g;
}

void k_silu_backward(cudaStream_t s, float *din, const float *dout, const float *in, size_t n,
                     int accumulate)
{
    silu_bwd_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>(din, dout, in, n, accumulate);
    CUDA_CHECK_LAUNCH();
}

static __global__ void add_kernel(float *y, const float *x, size_t n)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < n) y[idx] += x[idx];
}

void k_add(cudaStream_t s, float *y, const float *x, size_t n)
{
    add_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>(y, x, n);
    CUDA_CHECK_LAUNCH();
}

static __global__ void fill_kernel(float *y, float value, size_t n)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < n) y[idx] = value;
}

void k_fill(cudaStream_t s, float *y, float value, size_t n)
{
    fill_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>(y, value, n);
    CUDA_CHECK_LAUNCH();
}

/* ---- embeddings ---------------------------------------------------------------------------- */

static __global__ void timestep_kernel(float *out, const float *t, int B)
{
    int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= B * 128) return;
    int b = idx / 128, k = idx % 128;
    double freq = exp(-log(10000.0) * k / 128);
    double arg = 1000.0 * (double)t[b] * freq;
    out[(size_t)b * 256 + k] = (float)cos(arg);
    out[(size_t)b * 256 + 128 + k] = (float)sin(arg);
}

void k_timestep_embedding(cudaStream_t s, float *out, const float *t, int B)
{
    timestep_kernel<<<ceil_div((size_t)B * 128, THREADS), THREADS, 0, s>>>(out, t, B);
    CUDA_CHECK_LAUNCH();
}

/* idx enumerates the patches layout [B, g, g, P]; the pixel is (b, i p + dy, j p + dx, c). */
static __global__ void patch_kernel(float *patches, float *x, int to_patches, int B, int S, int C,
                                    int p)
{
    int g = S / p, P = p * p * C;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)B * g * g * P) return;
    int q = (int)(idx % P);
    size_t cell = idx / P;
    int j = (int)(cell % g), i = (int)(cell / g % g), b = (int)(cell / g / g);
    int dy = q / (p * C), rem = q % (p * C);
    size_t xi = (((size_t)b * S + i * p + dy) * S + j * p) * C + rem;
    if (to_patches)
        patches[idx] = x[xi];
    else
        x[xi] = patches[idx];
}

void k_patchify(cudaStream_t s, float *patches, const float *x, int B, int S, int C, int p)
{
    size_t n = (size_t)B * S * S * C;
    patch_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>(patches, (float *)x, 1, B, S, C, p);
    CUDA_CHECK_LAUNCH();
}

void k_unpatchify(cudaStream_t s, float *x, const float *patches, int B, int S, int C, int p)
{
    size_t n = (size_t)B * S * S * C;
    patch_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>((float *)patches, x, 0, B, S, C, p);
    CUDA_CHECK_LAUNCH();
}

/* One thread per (sample, feature). */
static __global__ void embed_text_kernel(float *h, uint8_t *key_mask, float *pooled_mean,
                                         int *text_count, const int32_t *tokens,
                                         const float *tok_emb, const float *txt_pos, int B, int T,
                                         int S, int d)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (k >= d) return;
    int count = 0;
    float pm = 0.0f;
    for (int i = 0; i < T; i++) {
        int tok = tokens[(size_t)b * T + i];
        float e = tok_emb[(size_t)tok * d + k];
        h[((size_t)b * S + i) * d + k] = e + txt_pos[(size_t)i * d + k];
        if (tok != TOKEN_PAD_ID) count++, pm += e;
        if (k == 0) key_mask[(size_t)b * S + i] = tok != TOKEN_PAD_ID;
    }
    pooled_mean[(size_t)b * d + k] = count ? pm / (float)count : 0.0f;
    if (k == 0) {
        text_count[b] = count;
        for (int i = T; i < S; i++) key_mask[(size_t)b * S + i] = 1;
    }
}

void k_embed_text(cudaStream_t s, float *h, uint8_t *key_mask, float *pooled_mean, int *text_count,
                  const int32_t *tokens, const float *tok_emb, const float *txt_pos, int B, int T,
                  int S, int d)
{
    embed_text_kernel<<<dim3(ceil_div(d, 128), B), 128, 0, s>>>(
        h, key_mask, pooled_mean, text_count, tokens, tok_emb, txt_pos, B, T, S, d);
    CUDA_CHECK_LAUNCH();
}

static __global__ void embed_image_kernel(float *h, const float *patch_out, const float *img_pos,
                                          int T, int N, int S, int d, size_t n)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x; /* over [B, N, d] */
    if (idx >= n) return;
    size_t nd = (size_t)N * d, b = idx / nd, rest = idx % nd;
    h[(b * S + T) * d + rest] = patch_out[idx] + img_pos[rest];
}

void k_embed_image(cudaStream_t s, float *h, const float *patch_out, const float *img_pos, int B,
                   int T, int N, int S, int d)
{
    size_t n = (size_t)B * N * d;
    embed_image_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>(h, patch_out, img_pos, T, N, S, d,
                                                                n);
    CUDA_CHECK_LAUNCH();
}

static __global__ void gather_image_kernel(float *dst, const float *src, int T, int N, int S, int d,
                                           size_t n)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    size_t nd = (size_t)N * d, b = idx / nd, rest = idx % nd;
    dst[idx] = src[(b * S + T) * d + rest];
}

void k_gather_image_rows(cudaStream_t s, float *dst, const float *src, int B, int T, int N, int S,
                         int d)
{
    size_t n = (size_t)B * N * d;
    gather_image_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>(dst, src, T, N, S, d, n);
    CUDA_CHECK_LAUNCH();
}

static __global__ void sum_over_batch_kernel(float *dst, const float *src, int B, size_t n)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n) return;
    float acc = dst[idx];
    for (int b = 0; b < B; b++) acc += src[(size_t)b * n + idx];
    dst[idx] = acc;
}

void k_sum_over_batch(cudaStream_t s, float *dst, const float *src, int B, size_t n)
{
    sum_over_batch_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>(dst, src, B, n);
    CUDA_CHECK_LAUNCH();
}

static __global__ void embed_text_bwd_kernel(float *g_tok_emb, float *g_txt_pos, const float *d_h,
                                             const float *d_pooled, const int32_t *tokens,
                                             const int *text_count, int B, int T, int S, int d)
{
    int k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= d) return;
    for (int b = 0; b < B; b++) {
        float share = text_count[b] ? 1.0f / (float)text_count[b] : 0.0f;
        float dpm = d_pooled[(size_t)b * d + k];
        for (int i = 0; i < T; i++) {
            int tok = tokens[(size_t)b * T + i];
            float dh = d_h[((size_t)b * S + i) * d + k];
            g_tok_emb[(size_t)tok * d + k] += dh;
            g_txt_pos[(size_t)i * d + k] += dh;
            if (tok != TOKEN_PAD_ID) g_tok_emb[(size_t)tok * d + k] += share * dpm;
        }
    }
}

void k_embed_text_backward(cudaStream_t s, float *g_tok_emb, float *g_txt_pos, const float *d_h,
                           const float *d_pooled, const int32_t *tokens, const int *text_count,
                           int B, int T, int S, int d)
{
    embed_text_bwd_kernel<<<ceil_div(d, 128), 128, 0, s>>>(g_tok_emb, g_txt_pos, d_h, d_pooled,
                                                           tokens, text_count, B, T, S, d);
    CUDA_CHECK_LAUNCH();
}

/* ---- random numbers (rng.c on the device) -------------------------------------------------- */

static __device__ void philox4x32_dev(uint64_t key, uint64_t ctr_lo, uint32_t out[4])
{
    uint32_t c0 = (uint32_t)ctr_lo, c1 = (uint32_t)(ctr_lo >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int round = 0; round < 10; round++) {
        uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0, c1 = n1, c2 = n2, c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0, out[1] = c1, out[2] = c2, out[3] = c3;
}

/* Element e (0..3) of Philox block `blk`: the Box-Muller of rng_normal, in double. */
static __device__ float normal_of_block(const uint32_t w[4], int e)
{
    int pair = e / 2;
    double u1 = ((double)(w[2 * pair] >> 8) + 1.0) / 16777216.0;
    double u2 = (double)(w[2 * pair + 1] >> 8) / 16777216.0;
    double rad = sqrt(-2.0 * log(u1)), ang = 2.0 * 3.14159265358979323846 * u2;
    return (float)(e % 2 == 0 ? rad * cos(ang) : rad * sin(ang));
}

static __global__ void rng_normal_kernel(float *out, size_t n, uint64_t key, uint64_t base)
{
    size_t blk = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (blk * 4 >= n) return;
    uint32_t w[4];
    philox4x32_dev(key, base + blk, w);
    for (int e = 0; e < 4 && blk * 4 + e < n; e++) out[blk * 4 + e] = normal_of_block(w, e);
}

void k_rng_normal(cudaStream_t s, float *out, size_t n, uint64_t key, uint64_t base)
{
    rng_normal_kernel<<<ceil_div((n + 3) / 4, THREADS), THREADS, 0, s>>>(out, n, key, base);
    CUDA_CHECK_LAUNCH();
}

static __global__ void rng_grouped_kernel(float *x, int n, size_t img, int g, uint64_t key,
                                          uint64_t base)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)n * img) return;
    size_t k = idx / img, j = idx % img;
    size_t src = (g ? k / (size_t)g : k) * img + j; /* index within the request */
    uint32_t w[4];
    philox4x32_dev(key, base + src / 4, w);
    x[idx] = normal_of_block(w, (int)(src % 4));
}

void k_rng_normal_grouped(cudaStream_t s, float *x, int n, size_t img, int g, uint64_t key,
                          uint64_t base)
{
    rng_grouped_kernel<<<ceil_div((size_t)n * img, THREADS), THREADS, 0, s>>>(x, n, img, g, key,
                                                                              base);
    CUDA_CHECK_LAUNCH();
}

/* ---- sampler ------------------------------------------------------------------------------- */

/* Block per row. */
static __global__ void sde_step_kernel(float *x_next, float *logp, float *x0_hat, const float *x,
                                       const float *v, const float *z, float cx, float cv,
                                       float std, float sigma, size_t img)
{
    size_t off = (size_t)blockIdx.x * img;
    double sum = 0.0;
    for (size_t k = threadIdx.x; k < img; k += blockDim.x) {
        float xk = x[off + k], vk = v[off + k];
        float mu = cx * xk + cv * vk;
        float xn = mu + std * z[off + k];
        x_next[off + k] = xn;
        double dd = (double)xn - (double)mu;
        sum += dd * dd;
        if (x0_hat) x0_hat[off + k] = xk - sigma * vk;
    }
    sum = block_sum_double(sum);
    if (threadIdx.x == 0) {
        double sd = std; /* 0: deterministic (the last cps step), no density (sampler.h) */
        logp[blockIdx.x] =
            sd == 0.0 ? 0.0f : (float)(-sum / (2.0 * sd * sd * (double)img) - log(sd) - LOG_SQRT_2PI);
    }
}

void k_sde_step(cudaStream_t s, float *x_next, float *logp, float *x0_hat, const float *x,
                const float *v, const float *z, float cx, float cv, float std, float sigma,
                int rows, size_t img)
{
    sde_step_kernel<<<rows, THREADS, 0, s>>>(x_next, logp, x0_hat, x, v, z, cx, cv, std, sigma,
                                             img);
    CUDA_CHECK_LAUNCH();
}

static __global__ void ode_step_kernel(float *x_next, float *logp, float *x0_hat, const float *x,
                                       const float *v, float sigma, float h, size_t img)
{
    size_t off = (size_t)blockIdx.x * img;
    for (size_t k = threadIdx.x; k < img; k += blockDim.x) {
        float xk = x[off + k], vk = v[off + k];
        if (x0_hat) x0_hat[off + k] = xk - sigma * vk;
        x_next[off + k] = xk - h * vk;
    }
    if (threadIdx.x == 0) logp[blockIdx.x] = 0.0f;
}

void k_ode_step(cudaStream_t s, float *x_next, float *logp, float *x0_hat, const float *x,
                const float *v, float sigma, float sigma_next, int rows, size_t img)
{
    ode_step_kernel<<<rows, THREADS, 0, s>>>(x_next, logp, x0_hat, x, v, sigma, sigma - sigma_next,
                                             img);
    CUDA_CHECK_LAUNCH();
}

static __global__ void guidance_kernel(float *v, const float *vu, float w, size_t n)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < n) v[idx] = vu[idx] + w * (v[idx] - vu[idx]);
}

void k_guidance(cudaStream_t s, float *v, const float *vu, float w, size_t n)
{
    guidance_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>(v, vu, w, n);
    CUDA_CHECK_LAUNCH();
}

/* The gradient of v = v_u + w (v_c - v_u): dv [2 n] holds d/dv in its first n; afterwards
 * w d/dv there (the conditional rows) and (1 - w) d/dv after it (the unconditional ones). */
static __global__ void guidance_backward_kernel(float *dv, float w, size_t n)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx < n) {
        float d = dv[idx];
        dv[n + idx] = (1.0f - w) * d;
        dv[idx] = w * d;
    }
}

void k_guidance_backward(cudaStream_t s, float *dv, float w, size_t n)
{
    guidance_backward_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>(dv, w, n);
    CUDA_CHECK_LAUNCH();
}

/* ---- GRPO rows ----------------------------------------------------------------------------- */

static __device__ __forceinline__ const float *row_next(const GrpoRow *r, const float *traj_x,
                                                        int n, size_t img)
{
    return traj_x + ((size_t)(r->step + 1) * n + r->traj) * img;
}

static __global__ void grpo_gather_kernel(float *xb, int32_t *tok, const GrpoRow *rows_dev,
                                          const float *traj_x, const int32_t *traj_tokens, int n,
                                          size_t img, int T)
{
    const GrpoRow *r = &rows_dev[blockIdx.x];
    const float *src = traj_x + ((size_t)r->step * n + r->traj) * img;
    float *dst = xb + (size_t)blockIdx.x * img;
    for (size_t k = threadIdx.x; k < img; k += blockDim.x) dst[k] = src[k];
    for (int i = threadIdx.x; i < T; i += blockDim.x)
        tok[(size_t)blockIdx.x * T + i] = traj_tokens[(size_t)r->traj * T + i];
}

void k_grpo_gather(cudaStream_t s, float *xb, int32_t *tok, const GrpoRow *rows_dev, int rows,
                   const float *traj_x, const int32_t *traj_tokens, int n, size_t img, int T)
{
    grpo_gather_kernel<<<rows, THREADS, 0, s>>>(xb, tok, rows_dev, traj_x, traj_tokens, n, img, T);
    CUDA_CHECK_LAUNCH();
}

static __global__ void grpo_logp_kernel(float *mu, double *logp_new, double *kl, float *v_ref,
                                        const float *xb, const float *v, const GrpoRow *rows_dev,
                                        const float *traj_x, int n, size_t img)
{
    const GrpoRow *r = &rows_dev[blockIdx.x];
    const float *xn = row_next(r, traj_x, n, img);
    size_t off = (size_t)blockIdx.x * img;
    double sum = 0.0, klsum = 0.0;
    for (size_t k = threadIdx.x; k < img; k += blockDim.x) {
        float m = r->cx * xb[off + k] + r->cv * v[off + k];
        mu[off + k] = m;
        double dd = (double)xn[k] - (double)m;
        sum += dd * dd;
        if (v_ref) {
            float mr = r->cx * xb[off + k] + r->cv * v_ref[off + k];
            v_ref[off + k] = mr;
            double dk = (double)m - (double)mr;
            klsum += dk * dk;
        }
    }
    sum = block_sum_double(sum);
    klsum = block_sum_double(klsum);
    if (threadIdx.x == 0) {
        double sd = r->std;
        logp_new[blockIdx.x] = -sum / (2.0 * sd * sd * (double)img) - log(sd) - LOG_SQRT_2PI;
        kl[blockIdx.x] = v_ref ? klsum / (double)img / (2.0 * sd * sd) : 0.0;
    }
}

void k_grpo_logp(cudaStream_t s, float *mu, double *logp_new, double *kl, float *v_ref,
                 const float *xb, const float *v, const GrpoRow *rows_dev, int rows,
                 const float *traj_x, int n, size_t img)
{
    grpo_logp_kernel<<<rows, THREADS, 0, s>>>(mu, logp_new, kl, v_ref, xb, v, rows_dev, traj_x, n,
                                              img);
    CUDA_CHECK_LAUNCH();
}

static __global__ void grpo_dv_kernel(float *dv, const float *mu, const float *mu_ref,
                                      const GrpoRow *rows_dev, const float *traj_x, int n,
                                      size_t img)
{
    const GrpoRow *r = &rows_dev[blockIdx.x];
    const float *xn = row_next(r, traj_x, n, img);
    size_t off = (size_t)blockIdx.x * img;
    for (size_t k = threadIdx.x; k < img; k += blockDim.x) {
        float g = r->dlogp_coef * (xn[k] - mu[off + k]);
        if (mu_ref) g += r->kl_coef_row * (mu[off + k] - mu_ref[off + k]);
        dv[off + k] = g;
    }
}

void k_grpo_dv(cudaStream_t s, float *dv, const float *mu, const float *mu_ref,
               const GrpoRow *rows_dev, int rows, const float *traj_x, int n, size_t img)
{
    grpo_dv_kernel<<<rows, THREADS, 0, s>>>(dv, mu, mu_ref, rows_dev, traj_x, n, img);
    CUDA_CHECK_LAUNCH();
}

/* ---- optimizer ----------------------------------------------------------------------------- */

#define NORM_PARTS 1024

size_t k_grad_norm_partials(size_t n)
{
    (void)n;
    return NORM_PARTS;
}

/* Block c sums slice c (of a size fixed by n) in double. */
static __global__ void norm_partials_kernel(double *partials, const float *g, size_t n,
                                            size_t slice)
{
    size_t lo = blockIdx.x * slice, hi = lo + slice < n ? lo + slice : n;
    double s = 0.0;
    for (size_t i = lo + threadIdx.x; i < hi; i += blockDim.x) s += (double)g[i] * g[i];
    s = block_sum_double(s);
    if (threadIdx.x == 0) partials[blockIdx.x] = s;
}

static __global__ void norm_total_kernel(double *norm, const double *partials, int parts)
{
    double total = 0.0;
    for (int c = 0; c < parts; c++) total += partials[c];
    *norm = sqrt(total);
}

void k_grad_norm(cudaStream_t s, double *norm, double *partials, const float *g, size_t n)
{
    size_t slice = (n + NORM_PARTS - 1) / NORM_PARTS;
    if (slice < 4096) slice = 4096;
    int parts = (int)((n + slice - 1) / slice);
    norm_partials_kernel<<<parts, THREADS, 0, s>>>(partials, g, n, slice);
    CUDA_CHECK_LAUNCH();
    norm_total_kernel<<<1, 1, 0, s>>>(norm, partials, parts);
    CUDA_CHECK_LAUNCH();
}

static __global__ void adamw_kernel(float *params, float *m, float *v, const float *grads,
                                    const double *norm, size_t n, float lr, float b1, float b2,
                                    float eps, float wd, float bc1, float bc2, float grad_clip)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    double nr = *norm;
    float scale = grad_clip > 0 && nr > grad_clip ? (float)(grad_clip / (nr + 1e-6)) : 1.0f;
    float g = grads[i] * scale;
    float mi = b1 * m[i] + (1.0f - b1) * g;
    float vi = b2 * v[i] + (1.0f - b2) * g * g;
    m[i] = mi;
    v[i] = vi;
    float mhat = mi / bc1, vhat = vi / bc2;
    params[i] -= lr * (mhat / (sqrtf(vhat) + eps) + wd * params[i]);
}

void k_adamw(cudaStream_t s, float *params, float *m, float *v, const float *g, const double *norm,
             size_t n, float lr, float b1, float b2, float eps, float wd, float bc1, float bc2,
             float grad_clip)
{
    adamw_kernel<<<ceil_div(n, THREADS), THREADS, 0, s>>>(params, m, v, g, norm, n, lr, b1, b2, eps,
                                                          wd, bc1, bc2, grad_clip);
    CUDA_CHECK_LAUNCH();
}
