/*
 * model.c: the BLAS-free half of the diffusion transformer (spec/model.md): config and presets,
 * the forward FLOP count, the parameter layout and initialisation. The CPU activations and the
 * forward and backward passes are in model_cpu.c.
 */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errbuf.h"
#include "rng.h"

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
