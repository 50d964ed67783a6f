/*
 * model_cpu.c: the diffusion transformer on the CPU (spec/model.md): activation planning (one
 * arena per batch size) and the forward and backward passes, composed from ops.c (OpenBLAS +
 * OpenMP). The config, the parameter layout and initialisation are in model.c.
 */
#include "model.h"

#include <stdlib.h>
#include <string.h>

#include "acts_layout.h"
#include "ops.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* Token 0 is PAD (spec/model.md); the engine core does not depend on the tokenizer. */
#define TOKEN_PAD_ID 0

/* ---- activations --------------------------------------------------------------------------- */

typedef struct {
    float *h_in;                /* [B, S, d] block input (the residual stream) */
    float *mod;                 /* [B, 6d] shift_a scale_a gate_a shift_m scale_m gate_m */
    float *ln1_mean, *ln1_rstd; /* [B, S] */
    float *a;                   /* [B, S, d] modulated LN(h_in) */
    float *qkv;                 /* [B, S, 3d] */
    float *q_rstd, *k_rstd;     /* [B, S, H] */
    float *qh, *kh, *vh;        /* [B, H, S, dh] normed q, k; v */
    float *att;                 /* [B, H, S, S] softmax probabilities */
    float *attn;                /* [B, S, d] attention output, heads concatenated */
    float *proj;                /* [B, S, d] */
    float *h_mid;               /* [B, S, d] after the attention residual */
    float *ln2_mean, *ln2_rstd; /* [B, S] */
    float *mlp_in;              /* [B, S, d] modulated LN(h_mid) */
    float *fc1;                 /* [B, S, F] pre-activation */
    float *gelu;                /* [B, S, F] */
    float *fc2;                 /* [B, S, d] */
} BlockActs;

struct Activations {
    ModelConfig cfg;
    int B;        /* rows of the next pass */
    int capacity; /* rows planned for */
    int text_len; /* text positions of the last forward: up to its batch's last non-PAD token */
    float *arena; /* one allocation holds every buffer below */
    size_t arena_floats;
    /* forward */
    int32_t *tokens;            /* [B, T] */
    uint8_t *key_mask;          /* [B, S] 1 = attend */
    int *text_count;            /* [B] non-PAD tokens */
    float *patches;             /* [B, N, P] */
    float *tfreq;               /* [B, 256] */
    float *t1, *t1s;            /* [B, d] pre/post SiLU */
    float *pooled_mean;         /* [B, d] */
    float *c, *sc;              /* [B, d] conditioning, silu(c) */
    BlockActs *blocks;          /* [L] */
    float *h_last;              /* [B, S, d] output of the last block */
    float *fmod;                /* [B, 2d] final shift, scale */
    float *lnf_mean, *lnf_rstd; /* [B, N] */
    float *fin_in;              /* [B, N, d] */
    float *out;                 /* [B, N, P] */
    /* backward scratch */
    float *d_out;              /* [B, N, P] */
    float *d_h;                /* [B, S, d] gradient of the residual stream */
    float *d_x;                /* [B, S, d] */
    float *d_big;              /* [B, S, max(3d, F)] */
    float *d_qh, *d_kh, *d_vh; /* [B, H, S, dh] */
    float *d_mod;              /* [B, 6d] */
    float *d_sc, *d_c;         /* [B, d] */
    float *d_vec;              /* [B, d] */
    float *scratch;            /* norm-weight partial sums, or per-thread attention scratch */
};

int acts_batch(const Activations *a)
{
    return a->B;
}

int acts_capacity(const Activations *a)
{
    return a->capacity;
}

void acts_set_batch(Activations *a, int B)
{
    if (B >= 1 && B <= a->capacity) a->B = B;
}

/* Points every buffer of a into base (when base is set) and returns the floats they need, so
 * one walk both sizes and lays out the arena (the model's buffers are acts_layout.h's list). */
static size_t plan_arena(Activations *a, float *base)
{
    const ModelConfig *c = &a->cfg;
    size_t B = a->capacity, d = c->dim, F = cfg_mlp_dim(c), N = cfg_img_tokens(c),
           P = cfg_patch_dim(c);
    size_t S = cfg_seq_len(c), H = c->heads, dh = cfg_head_dim(c), BSd = B * S * d;
    size_t big = 3 * d > F ? 3 * d : F;
    size_t threads = 1;
#ifdef _OPENMP
    threads = (size_t)omp_get_max_threads();
#endif
    size_t att_scratch = threads * attention_backward_scratch((int)S, (int)dh);
    size_t scratch = B * H * 2 * dh > att_scratch ? B * H * 2 * dh : att_scratch;
    size_t off = 0;
#define TAKE(field, n) (field = base ? base + off : NULL, off += (n))
    ACTS_TAKE_CONDITIONING(TAKE, a);
    for (int l = 0; l < c->depth; l++) ACTS_TAKE_BLOCK(TAKE, &a->blocks[l]);
    ACTS_TAKE_FINAL_AND_GRADIENTS(TAKE, a);
    TAKE(a->scratch, scratch);
#undef TAKE
    return off;
}

Activations *acts_new(const ModelConfig *c, int B)
{
    Activations *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->cfg = *c;
    a->B = a->capacity = B;
    a->blocks = calloc((size_t)c->depth, sizeof *a->blocks);
    a->tokens = malloc((size_t)B * c->text_len * sizeof *a->tokens);
    a->key_mask = malloc((size_t)B * cfg_seq_len(c));
    a->text_count = malloc((size_t)B * sizeof *a->text_count);
    if (a->blocks) {
        a->arena_floats = plan_arena(a, NULL);
        a->arena = malloc(a->arena_floats * sizeof(float));
    }
    if (!a->arena || !a->tokens || !a->key_mask || !a->text_count) {
        acts_free(a);
        return NULL;
    }
    plan_arena(a, a->arena);
    return a;
}

void acts_free(Activations *a)
{
    if (!a) return;
    free(a->arena);
    free(a->tokens);
    free(a->key_mask);
    free(a->text_count);
    free(a->blocks);
    free(a);
}

/* ---- forward ------------------------------------------------------------------------------- */

/* Text positions a batch needs: up to its last non-PAD token (captions are padded at the end).
 * The positions after it are masked keys, so no image token reads them and their own rows never
 * reach the output; the passes leave them out. 0 when every row is all PAD. */
static int batch_text_len(const int32_t *tokens, int B, int text_len)
{
    int T = 0;
    for (int b = 0; b < B; b++)
        for (int i = text_len - 1; i >= T; i--)
            if (tokens[b * text_len + i] != TOKEN_PAD_ID) {
                T = i + 1;
                break;
            }
    return T;
}

/* One transformer block: h_in (in k) -> h_out. */
static void block_forward(const BlockTensors *w, BlockActs *k, float *h_out, const float *sc,
                          const uint8_t *key_mask, const ModelConfig *c, int B, int S)
{
    int d = c->dim, H = c->heads, dh = cfg_head_dim(c), F = cfg_mlp_dim(c);
    int rows = B * S, m6 = 6 * d;
    const float *shift_a = k->mod, *scale_a = k->mod + d, *gate_a = k->mod + 2 * d;
    const float *shift_m = k->mod + 3 * d, *scale_m = k->mod + 4 * d, *gate_m = k->mod + 5 * d;

    linear_forward(k->mod, sc, w->ada_w, w->ada_b, B, d, m6);
    layernorm_modulate_forward(k->a, k->ln1_mean, k->ln1_rstd, k->h_in, shift_a, scale_a, m6, B, S,
                               d);
    linear_forward(k->qkv, k->a, w->qkv_w, w->qkv_b, rows, d, 3 * d);
    qkv_heads_forward(k->qh, k->kh, k->vh, k->q_rstd, k->k_rstd, k->qkv, w->q_norm, w->k_norm, B, S,
                      H, dh);
    attention_forward(k->attn, k->att, k->qh, k->kh, k->vh, key_mask, B, S, H, dh);
    linear_forward(k->proj, k->attn, w->proj_w, w->proj_b, rows, d, d);
    gate_residual_forward(k->h_mid, k->h_in, k->proj, gate_a, m6, B, S, d);

    layernorm_modulate_forward(k->mlp_in, k->ln2_mean, k->ln2_rstd, k->h_mid, shift_m, scale_m, m6,
                               B, S, d);
    linear_forward(k->fc1, k->mlp_in, w->fc1_w, w->fc1_b, rows, d, F);
    gelu_forward(k->gelu, k->fc1, (size_t)rows * F);
    linear_forward(k->fc2, k->gelu, w->fc2_w, w->fc2_b, rows, F, d);
    gate_residual_forward(h_out, k->h_mid, k->fc2, gate_m, m6, B, S, d);
}

void model_forward(const Model *m, Activations *a, const float *x, const float *t,
                   const int32_t *tokens, float *v_out)
{
    const ModelConfig *c = &m->cfg;
    const ParamTensors *p = &m->p;
    int B = a->B, d = c->dim, Tmax = c->text_len, N = cfg_img_tokens(c), P = cfg_patch_dim(c);
    float *h = a->blocks[0].h_in;

    int T = batch_text_len(tokens, B, Tmax), S = T + N;
    a->text_len = T; /* for the backward of this pass */

    /* text tokens, their key mask, and the mean embedding of the non-PAD tokens */
    memcpy(a->tokens, tokens, (size_t)B * Tmax * sizeof *tokens);
    memset(a->pooled_mean, 0, (size_t)B * d * sizeof(float));
    for (int b = 0; b < B; b++) {
        int count = 0;
        float *pm = a->pooled_mean + (size_t)b * d;
        for (int i = 0; i < T; i++) {
            int tok = tokens[b * Tmax + i];
            const float *e = p->tok_emb + (size_t)tok * d;
            float *hr = h + ((size_t)b * S + i) * d;
            for (int k = 0; k < d; k++) hr[k] = e[k] + p->txt_pos[(size_t)i * d + k];
            a->key_mask[(size_t)b * S + i] = tok != TOKEN_PAD_ID;
            if (tok != TOKEN_PAD_ID) {
                count++;
                for (int k = 0; k < d; k++) pm[k] += e[k];
            }
        }
        memset(a->key_mask + (size_t)b * S + T, 1, (size_t)N);
        a->text_count[b] = count;
        for (int k = 0; count && k < d; k++) pm[k] /= (float)count;
    }

    /* image tokens: one GEMM over all samples into scratch (d_x is free until backward), then
     * scattered into each sample's sequence with the position table added */
    patchify(a->patches, x, B, c->image_size, c->channels, c->patch);
    linear_forward(a->d_x, a->patches, p->patch_w, p->patch_b, B * N, P, d);
    for (int b = 0; b < B; b++) {
        float *hi = h + ((size_t)b * S + T) * d;
        const float *src = a->d_x + (size_t)b * N * d;
        for (size_t k = 0; k < (size_t)N * d; k++) hi[k] = src[k] + p->img_pos[k];
    }

    /* conditioning c = time MLP + pooled text */
    timestep_embedding(a->tfreq, t, B);
    linear_forward(a->t1, a->tfreq, p->t1_w, p->t1_b, B, MODEL_TIME_FREQ_DIM, d);
    silu_forward(a->t1s, a->t1, (size_t)B * d);
    linear_forward(a->c, a->t1s, p->t2_w, p->t2_b, B, d, d);
    linear_forward(a->d_vec, a->pooled_mean, p->pool_w, p->pool_b, B, d, d);
    for (size_t i = 0; i < (size_t)B * d; i++) a->c[i] += a->d_vec[i];
    silu_forward(a->sc, a->c, (size_t)B * d);

    for (int l = 0; l < c->depth; l++) {
        float *h_out = l + 1 < c->depth ? a->blocks[l + 1].h_in : a->h_last;
        block_forward(&p->blocks[l], &a->blocks[l], h_out, a->sc, a->key_mask, c, B, S);
    }

    /* final layer on the image tokens only: modulated LN, linear, un-patchify */
    linear_forward(a->fmod, a->sc, p->fin_ada_w, p->fin_ada_b, B, d, 2 * d);
    for (int b = 0; b < B; b++) {
        const float *hi = a->h_last + ((size_t)b * S + T) * d;
        layernorm_modulate_forward(a->fin_in + (size_t)b * N * d, a->lnf_mean + (size_t)b * N,
                                   a->lnf_rstd + (size_t)b * N, hi, a->fmod + (size_t)b * 2 * d,
                                   a->fmod + (size_t)b * 2 * d + d, 2 * d, 1, N, d);
    }
    linear_forward(a->out, a->fin_in, p->fin_w, p->fin_b, B * N, d, P);
    unpatchify(v_out, a->out, B, c->image_size, c->channels, c->patch);
}

/* ---- backward ------------------------------------------------------------------------------ */

/* d_h holds dL/dh_out on entry and dL/dh_in on return; dL/dsilu(c) is added to d_sc. */
static void block_backward(const BlockTensors *w, BlockTensors *g, BlockActs *k, Activations *a,
                           const ModelConfig *c, int S)
{
    int B = a->B, d = c->dim, H = c->heads, dh = cfg_head_dim(c);
    int F = cfg_mlp_dim(c), rows = B * S, m6 = 6 * d;
    float *dmod = a->d_mod;
    memset(dmod, 0, (size_t)B * m6 * sizeof(float));
    const float *scale_a = k->mod + d, *gate_a = k->mod + 2 * d;
    const float *scale_m = k->mod + 4 * d, *gate_m = k->mod + 5 * d;

    /* h_out = h_mid + gate_m * fc2(gelu(fc1(mlp_in))) */
    gate_residual_backward(a->d_x, dmod + 5 * d, m6, a->d_h, k->fc2, gate_m, B, S, d);
    linear_backward(a->d_big, g->fc2_w, g->fc2_b, a->d_x, k->gelu, w->fc2_w, rows, F, d, 0);
    gelu_backward(a->d_big, a->d_big, k->fc1, (size_t)rows * F);
    linear_backward(a->d_x, g->fc1_w, g->fc1_b, a->d_big, k->mlp_in, w->fc1_w, rows, d, F, 0);
    /* d_h (the residual path) += LN-modulation backward of the MLP branch */
    layernorm_modulate_backward(a->d_h, dmod + 3 * d, dmod + 4 * d, m6, a->d_x, k->h_mid,
                                k->ln2_mean, k->ln2_rstd, scale_m, B, S, d);

    /* h_mid = h_in + gate_a * proj(attention(qkv(a))) */
    gate_residual_backward(a->d_x, dmod + 2 * d, m6, a->d_h, k->proj, gate_a, B, S, d);
    linear_backward(a->d_big, g->proj_w, g->proj_b, a->d_x, k->attn, w->proj_w, rows, d, d, 0);
    attention_backward(a->d_qh, a->d_kh, a->d_vh, a->scratch, a->d_big, k->att, k->qh, k->kh, k->vh,
                       B, S, H, dh);
    qkv_heads_backward(a->d_big, g->q_norm, g->k_norm, a->scratch, a->d_qh, a->d_kh, a->d_vh,
                       k->qkv, k->q_rstd, k->k_rstd, w->q_norm, w->k_norm, B, S, H, dh);
    linear_backward(a->d_x, g->qkv_w, g->qkv_b, a->d_big, k->a, w->qkv_w, rows, d, 3 * d, 0);
    layernorm_modulate_backward(a->d_h, dmod, dmod + d, m6, a->d_x, k->h_in, k->ln1_mean,
                                k->ln1_rstd, scale_a, B, S, d);

    /* mod = ada(silu(c)) */
    linear_backward(a->d_sc, g->ada_w, g->ada_b, dmod, a->sc, w->ada_w, B, d, m6, 1);
}

void model_backward(Model *m, Activations *a, const float *dv)
{
    const ModelConfig *c = &m->cfg;
    const ParamTensors *p = &m->p;
    ParamTensors *g = &m->g;
    int B = a->B, d = c->dim, Tmax = c->text_len, N = cfg_img_tokens(c), P = cfg_patch_dim(c);
    int T = a->text_len, S = T + N; /* the positions the forward ran */

    memset(a->d_sc, 0, (size_t)B * d * sizeof(float));

    /* final layer: only the image positions of the last residual stream receive gradient */
    patchify(a->d_out, dv, B, c->image_size, c->channels, c->patch);
    linear_backward(a->d_x, g->fin_w, g->fin_b, a->d_out, a->fin_in, p->fin_w, B * N, d, P, 0);
    memset(a->d_h, 0, (size_t)B * S * d * sizeof(float));
    float *dfmod = a->d_mod;
    memset(dfmod, 0, (size_t)B * 2 * d * sizeof(float));
    for (int b = 0; b < B; b++) {
        const float *hi = a->h_last + ((size_t)b * S + T) * d;
        layernorm_modulate_backward(a->d_h + ((size_t)b * S + T) * d, dfmod + (size_t)b * 2 * d,
                                    dfmod + (size_t)b * 2 * d + d, 2 * d,
                                    a->d_x + (size_t)b * N * d, hi, a->lnf_mean + (size_t)b * N,
                                    a->lnf_rstd + (size_t)b * N, a->fmod + (size_t)b * 2 * d + d, 1,
                                    N, d);
    }
    linear_backward(a->d_sc, g->fin_ada_w, g->fin_ada_b, dfmod, a->sc, p->fin_ada_w, B, d, 2 * d,
                    1);

    for (int l = c->depth - 1; l >= 0; l--)
        block_backward(&p->blocks[l], &g->blocks[l], &a->blocks[l], a, c, S);

    /* conditioning: c = t2(silu(t1(tfreq))) + pool(pooled_mean) */
    silu_backward(a->d_c, a->d_sc, a->c, (size_t)B * d, 0);
    linear_backward(a->d_vec, g->t2_w, g->t2_b, a->d_c, a->t1s, p->t2_w, B, d, d, 0);
    silu_backward(a->d_vec, a->d_vec, a->t1, (size_t)B * d, 0);
    linear_backward(NULL, g->t1_w, g->t1_b, a->d_vec, a->tfreq, p->t1_w, B, MODEL_TIME_FREQ_DIM, d,
                    0);
    linear_backward(a->d_vec, g->pool_w, g->pool_b, a->d_c, a->pooled_mean, p->pool_w, B, d, d, 0);

    /* image tokens: gather d_h's image rows into one block for a single GEMM */
    for (int b = 0; b < B; b++)
        memcpy(a->d_x + (size_t)b * N * d, a->d_h + ((size_t)b * S + T) * d,
               (size_t)N * d * sizeof(float));
    linear_backward(NULL, g->patch_w, g->patch_b, a->d_x, a->patches, p->patch_w, B * N, P, d, 0);
    for (int b = 0; b < B; b++) /* in sample order, so the sum does not depend on threads */
        for (size_t k = 0; k < (size_t)N * d; k++) g->img_pos[k] += a->d_x[(size_t)b * N * d + k];

    /* text tokens: embedding rows get the sequence gradient and their share of the pooled mean */
    for (int b = 0; b < B; b++) {
        const float *dpm = a->d_vec + (size_t)b * d;
        float share = a->text_count[b] ? 1.0f / (float)a->text_count[b] : 0.0f;
        for (int i = 0; i < T; i++) {
            int tok = a->tokens[b * Tmax + i];
            const float *dhr = a->d_h + ((size_t)b * S + i) * d;
            float *ge = g->tok_emb + (size_t)tok * d, *gp = g->txt_pos + (size_t)i * d;
            for (int k = 0; k < d; k++) {
                ge[k] += dhr[k];
                gp[k] += dhr[k];
            }
            if (tok != TOKEN_PAD_ID)
                for (int k = 0; k < d; k++) ge[k] += share * dpm[k];
        }
    }
}
