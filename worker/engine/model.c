/*
 * model.c: config and presets, the parameter layout, initialisation, and the forward and
 * backward passes of the diffusion transformer (spec/model.md), composed from ops.c.
 */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errbuf.h"
#include "ops.h"
#ifdef _OPENMP
#include <omp.h>
#endif
#include "rng.h"

/* Token 0 is PAD (spec/model.md); the engine core does not depend on the tokenizer. */
#define TOKEN_PAD_ID 0

/* ---- config -------------------------------------------------------------------------------- */

int model_config_preset(const char *name, ModelConfig *cfg)
{
    static const struct {
        const char *name;
        ModelConfig cfg;
    } presets[] = {
        /* one preset per pair of lines, as the table in model.md */
        // clang-format off
        {"tiny", {.image_size = 16, .channels = 3, .patch = 4, .dim = 32, .depth = 2, .heads = 2,
                  .mlp_ratio = 4, .text_len = 8}},
        {"small", {.image_size = 32, .channels = 3, .patch = 4, .dim = 128, .depth = 4, .heads = 4,
                   .mlp_ratio = 4, .text_len = 12}},
        {"base", {.image_size = 64, .channels = 3, .patch = 4, .dim = 384, .depth = 12, .heads = 6,
                  .mlp_ratio = 4, .text_len = 16}},
        // clang-format on
    };
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (strcmp(presets[i].name, name) == 0) {
            *cfg = presets[i].cfg;
            return 0;
        }
    }
    return -1;
}

int model_config_validate(const ModelConfig *c, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        size_t offset;
        int lo, hi;
    } fields[] = {
        {"image_size", offsetof(ModelConfig, image_size), 2, 1024},
        {"channels", offsetof(ModelConfig, channels), 1, 4},
        {"patch", offsetof(ModelConfig, patch), 1, 64},
        {"dim", offsetof(ModelConfig, dim), 4, 8192},
        {"depth", offsetof(ModelConfig, depth), 1, 256},
        {"heads", offsetof(ModelConfig, heads), 1, 256},
        {"mlp_ratio", offsetof(ModelConfig, mlp_ratio), 1, 16},
        {"text_len", offsetof(ModelConfig, text_len), 1, 1024},
        {"vocab_size", offsetof(ModelConfig, vocab_size), 2, 1 << 24},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        int v = *(const int *)((const char *)c + fields[i].offset);
        if (v < fields[i].lo || v > fields[i].hi) {
            errbuf_printf(err, errlen, "config.%s = %d is out of range [%d, %d]", fields[i].name, v,
                          fields[i].lo, fields[i].hi);
            return -1;
        }
    }
    if (c->image_size % c->patch) {
        errbuf_printf(err, errlen, "config.patch = %d does not divide config.image_size = %d",
                      c->patch, c->image_size);
        return -1;
    }
    if (c->dim % c->heads) {
        errbuf_printf(err, errlen, "config.heads = %d does not divide config.dim = %d", c->heads,
                      c->dim);
        return -1;
    }
    if (c->dim % 4) { /* the 2D sin-cos position table splits dim into four quarters */
        errbuf_printf(err, errlen, "config.dim = %d must be a multiple of 4", c->dim);
        return -1;
    }
    return 0;
}

double model_forward_flops(const ModelConfig *c)
{
    double d = c->dim, F = cfg_mlp_dim(c), N = cfg_img_tokens(c), P = cfg_patch_dim(c);
    double S = cfg_seq_len(c);
    double f = 2 * d * d                                 /* txt.pool */
               + 2 * N * P * d                           /* img.patch */
               + 2 * MODEL_TIME_FREQ_DIM * d + 2 * d * d /* time MLP */
               + 2 * d * 2 * d + 2 * N * d * P;          /* final */
    double block =
        2 * d * 6 * d + 2 * S * d * 3 * d + 2 * 2 * S * S * d + 2 * S * d * d + 2 * 2 * S * d * F;
    return f + c->depth * block;
}

/* ---- parameter layout ---------------------------------------------------------------------- */

/* Walks the tensors of model.md's table in order. With `table`, records name/shape/offset;
 * with `views`, points each field of the ParamTensors into `base`. Returns the float count. */
static size_t walk_layout(const ModelConfig *c, TensorInfo *table, int *count, ParamTensors *views,
                          float *base)
{
    size_t off = 0;
    int n = 0;
    int d = c->dim, F = cfg_mlp_dim(c), P = cfg_patch_dim(c), dh = cfg_head_dim(c);
#define TENSOR(field_ptr, rows, cols, ...)                                                         \
    do {                                                                                           \
        if (table) {                                                                               \
            TensorInfo *ti = &table[n];                                                            \
            snprintf(ti->name, sizeof ti->name, __VA_ARGS__);                                      \
            ti->ndim = (cols) ? 2 : 1;                                                             \
            ti->shape[0] = (rows);                                                                 \
            ti->shape[1] = (cols) ? (cols) : 0;                                                    \
            ti->offset = off;                                                                      \
            ti->numel = (size_t)(rows) * ((cols) ? (cols) : 1);                                    \
        }                                                                                          \
        if (views) field_ptr = base + off;                                                         \
        off += (size_t)(rows) * ((cols) ? (cols) : 1);                                             \
        n++;                                                                                       \
    } while (0)
    ParamTensors dummy_views;
    BlockTensors dummy_block;
    ParamTensors *v = views ? views : &dummy_views;
    TENSOR(v->tok_emb, c->vocab_size, d, "txt.tok_emb");
    TENSOR(v->txt_pos, c->text_len, d, "txt.pos_emb");
    TENSOR(v->pool_w, d, d, "txt.pool.weight");
    TENSOR(v->pool_b, d, 0, "txt.pool.bias");
    TENSOR(v->patch_w, d, P, "img.patch.weight");
    TENSOR(v->patch_b, d, 0, "img.patch.bias");
    TENSOR(v->img_pos, cfg_img_tokens(c), d, "img.pos_emb");
    TENSOR(v->t1_w, d, MODEL_TIME_FREQ_DIM, "time.fc1.weight");
    TENSOR(v->t1_b, d, 0, "time.fc1.bias");
    TENSOR(v->t2_w, d, d, "time.fc2.weight");
    TENSOR(v->t2_b, d, 0, "time.fc2.bias");
    for (int l = 0; l < c->depth; l++) {
        BlockTensors *bt = views ? &v->blocks[l] : &dummy_block;
        TENSOR(bt->ada_w, 6 * d, d, "blocks.%d.ada.weight", l);
        TENSOR(bt->ada_b, 6 * d, 0, "blocks.%d.ada.bias", l);
        TENSOR(bt->qkv_w, 3 * d, d, "blocks.%d.qkv.weight", l);
        TENSOR(bt->qkv_b, 3 * d, 0, "blocks.%d.qkv.bias", l);
        TENSOR(bt->q_norm, dh, 0, "blocks.%d.q_norm.weight", l);
        TENSOR(bt->k_norm, dh, 0, "blocks.%d.k_norm.weight", l);
        TENSOR(bt->proj_w, d, d, "blocks.%d.proj.weight", l);
        TENSOR(bt->proj_b, d, 0, "blocks.%d.proj.bias", l);
        TENSOR(bt->fc1_w, F, d, "blocks.%d.fc1.weight", l);
        TENSOR(bt->fc1_b, F, 0, "blocks.%d.fc1.bias", l);
        TENSOR(bt->fc2_w, d, F, "blocks.%d.fc2.weight", l);
        TENSOR(bt->fc2_b, d, 0, "blocks.%d.fc2.bias", l);
    }
    TENSOR(v->fin_ada_w, 2 * d, d, "final.ada.weight");
    TENSOR(v->fin_ada_b, 2 * d, 0, "final.ada.bias");
    TENSOR(v->fin_w, P, d, "final.linear.weight");
    TENSOR(v->fin_b, P, 0, "final.linear.bias");
#undef TENSOR
    if (count) *count = n;
    return off;
}

int model_init(Model *m, const ModelConfig *cfg)
{
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    int n = 0;
    m->num_params = walk_layout(cfg, NULL, &n, NULL, NULL);
    m->num_tensors = n;
    m->tensors = calloc((size_t)n, sizeof *m->tensors);
    m->params = calloc(m->num_params, sizeof *m->params);
    m->grads = calloc(m->num_params, sizeof *m->grads);
    m->p.blocks = calloc((size_t)cfg->depth, sizeof *m->p.blocks);
    m->g.blocks = calloc((size_t)cfg->depth, sizeof *m->g.blocks);
    if (!m->tensors || !m->params || !m->grads || !m->p.blocks || !m->g.blocks) {
        model_free(m);
        return -1;
    }
    walk_layout(cfg, m->tensors, NULL, &m->p, m->params);
    walk_layout(cfg, NULL, NULL, &m->g, m->grads);
    return 0;
}

void model_free(Model *m)
{
    free(m->tensors);
    free(m->params);
    free(m->grads);
    free(m->p.blocks);
    free(m->g.blocks);
    memset(m, 0, sizeof *m);
}

const TensorInfo *model_find_tensor(const Model *m, const char *name)
{
    for (int i = 0; i < m->num_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

void model_zero_grad(Model *m)
{
    memset(m->grads, 0, m->num_params * sizeof *m->grads);
}

/* ---- initialisation ------------------------------------------------------------------------ */

static void fill_xavier(Rng *r, float *w, int fan_out, int fan_in)
{
    size_t n = (size_t)fan_out * fan_in;
    float a = sqrtf(6.0f / (float)(fan_in + fan_out));
    rng_uniform(r, w, n);
    for (size_t i = 0; i < n; i++) w[i] = (2.0f * w[i] - 1.0f) * a;
}

static void fill_normal(Rng *r, float *w, size_t n, float std)
{
    rng_normal(r, w, n);
    for (size_t i = 0; i < n; i++) w[i] *= std;
}

/* DiT/MAE 2D sin-cos table: channels [0, d/2) encode the row, [d/2, d) the column; each half is
 * [sin(pos * w_k), cos(pos * w_k)] with w_k = 10000^(-k / (d/4)), k = 0..d/4-1. */
static void fill_pos_2d(float *pos, int grid, int d)
{
    int q = d / 4;
    for (int i = 0; i < grid; i++) {
        for (int j = 0; j < grid; j++) {
            float *row = pos + ((size_t)i * grid + j) * d;
            for (int k = 0; k < q; k++) {
                double w = pow(10000.0, -(double)k / q);
                row[k] = (float)sin(i * w);
                row[q + k] = (float)cos(i * w);
                row[2 * q + k] = (float)sin(j * w);
                row[3 * q + k] = (float)cos(j * w);
            }
        }
    }
}

void model_init_weights(Model *m, uint64_t seed)
{
    const ModelConfig *c = &m->cfg;
    ParamTensors *p = &m->p;
    int d = c->dim, F = cfg_mlp_dim(c), P = cfg_patch_dim(c), dh = cfg_head_dim(c);
    Rng r;
    rng_seed(&r, seed);
    memset(m->params, 0, m->num_params * sizeof *m->params); /* zero: biases and adaLN-Zero */
    fill_normal(&r, p->tok_emb, (size_t)c->vocab_size * d, 0.02f);
    fill_normal(&r, p->txt_pos, (size_t)c->text_len * d, 0.02f);
    fill_xavier(&r, p->pool_w, d, d);
    fill_xavier(&r, p->patch_w, d, P);
    fill_pos_2d(p->img_pos, cfg_grid(c), d);
    fill_xavier(&r, p->t1_w, d, MODEL_TIME_FREQ_DIM);
    fill_xavier(&r, p->t2_w, d, d);
    for (int l = 0; l < c->depth; l++) {
        BlockTensors *b = &p->blocks[l];
        fill_xavier(&r, b->qkv_w, 3 * d, d);
        for (int i = 0; i < dh; i++) b->q_norm[i] = b->k_norm[i] = 1.0f;
        fill_xavier(&r, b->proj_w, d, d);
        fill_xavier(&r, b->fc1_w, F, d);
        fill_xavier(&r, b->fc2_w, d, F);
    }
}

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
 * one walk both sizes and lays out the arena. */
static size_t plan_arena(Activations *a, float *base)
{
    const ModelConfig *c = &a->cfg;
    size_t B = a->capacity, d = c->dim, F = cfg_mlp_dim(c), N = cfg_img_tokens(c), P = cfg_patch_dim(c);
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
    TAKE(a->patches, B * N * P);
    TAKE(a->tfreq, B * MODEL_TIME_FREQ_DIM);
    TAKE(a->t1, B * d);
    TAKE(a->t1s, B * d);
    TAKE(a->pooled_mean, B * d);
    TAKE(a->c, B * d);
    TAKE(a->sc, B * d);
    for (int l = 0; l < c->depth; l++) {
        BlockActs *k = &a->blocks[l];
        TAKE(k->h_in, BSd);
        TAKE(k->mod, 6 * d * B);
        TAKE(k->ln1_mean, B * S);
        TAKE(k->ln1_rstd, B * S);
        TAKE(k->a, BSd);
        TAKE(k->qkv, 3 * BSd);
        TAKE(k->q_rstd, B * S * H);
        TAKE(k->k_rstd, B * S * H);
        TAKE(k->qh, BSd);
        TAKE(k->kh, BSd);
        TAKE(k->vh, BSd);
        TAKE(k->att, B * H * S * S);
        TAKE(k->attn, BSd);
        TAKE(k->proj, BSd);
        TAKE(k->h_mid, BSd);
        TAKE(k->mlp_in, BSd);
        TAKE(k->ln2_mean, B * S);
        TAKE(k->ln2_rstd, B * S);
        TAKE(k->fc1, B * S * F);
        TAKE(k->gelu, B * S * F);
        TAKE(k->fc2, BSd);
    }
    TAKE(a->h_last, BSd);
    TAKE(a->fmod, 2 * B * d);
    TAKE(a->lnf_mean, B * N);
    TAKE(a->lnf_rstd, B * N);
    TAKE(a->fin_in, B * N * d);
    TAKE(a->out, B * N * P);
    TAKE(a->d_out, B * N * P);
    TAKE(a->d_h, BSd);
    TAKE(a->d_x, BSd);
    TAKE(a->d_big, B * S * big);
    TAKE(a->d_qh, BSd);
    TAKE(a->d_kh, BSd);
    TAKE(a->d_vh, BSd);
    TAKE(a->d_mod, 6 * B * d);
    TAKE(a->d_sc, B * d);
    TAKE(a->d_c, B * d);
    TAKE(a->d_vec, B * d);
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

/* One transformer block: h_in (in k) -> h_out. */
static void block_forward(const BlockTensors *w, BlockActs *k, float *h_out, const float *sc,
                          const uint8_t *key_mask, const ModelConfig *c, int B)
{
    int d = c->dim, S = cfg_seq_len(c), H = c->heads, dh = cfg_head_dim(c), F = cfg_mlp_dim(c);
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
    memcpy(k->h_mid, k->h_in, (size_t)rows * d * sizeof(float));
    gate_residual_forward(k->h_mid, k->proj, gate_a, m6, B, S, d);

    layernorm_modulate_forward(k->mlp_in, k->ln2_mean, k->ln2_rstd, k->h_mid, shift_m, scale_m, m6,
                               B, S, d);
    linear_forward(k->fc1, k->mlp_in, w->fc1_w, w->fc1_b, rows, d, F);
    gelu_forward(k->gelu, k->fc1, (size_t)rows * F);
    linear_forward(k->fc2, k->gelu, w->fc2_w, w->fc2_b, rows, F, d);
    memcpy(h_out, k->h_mid, (size_t)rows * d * sizeof(float));
    gate_residual_forward(h_out, k->fc2, gate_m, m6, B, S, d);
}

void model_forward(const Model *m, Activations *a, const float *x, const float *t,
                   const int32_t *tokens, float *v_out)
{
    const ModelConfig *c = &m->cfg;
    const ParamTensors *p = &m->p;
    int B = a->B, d = c->dim, T = c->text_len, N = cfg_img_tokens(c), P = cfg_patch_dim(c);
    int S = cfg_seq_len(c);
    float *h = a->blocks[0].h_in;

    /* text tokens, their key mask, and the mean embedding of the non-PAD tokens */
    memcpy(a->tokens, tokens, (size_t)B * T * sizeof *tokens);
    memset(a->pooled_mean, 0, (size_t)B * d * sizeof(float));
    for (int b = 0; b < B; b++) {
        int count = 0;
        float *pm = a->pooled_mean + (size_t)b * d;
        for (int i = 0; i < T; i++) {
            int tok = tokens[b * T + i];
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
        block_forward(&p->blocks[l], &a->blocks[l], h_out, a->sc, a->key_mask, c, B);
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
                           const ModelConfig *c)
{
    int B = a->B, d = c->dim, S = cfg_seq_len(c), H = c->heads, dh = cfg_head_dim(c);
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
    int B = a->B, d = c->dim, T = c->text_len, N = cfg_img_tokens(c), P = cfg_patch_dim(c);
    int S = cfg_seq_len(c);

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
        block_backward(&p->blocks[l], &g->blocks[l], &a->blocks[l], a, c);

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
            int tok = a->tokens[b * T + i];
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
