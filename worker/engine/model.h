/*
 * model.h: the diffusion transformer of spec/model.md (a small single-stream, FLUX-like DiT in
 * pixel space): its config and presets, the parameter layout, and forward/backward on the CPU.
 *
 * Memory layout (llm.c style): ONE contiguous float buffer holds every parameter in the order of
 * model.md's tensor table (global tensors, then block 0's tensors, block 1's, ..., then the final
 * layer); the gradient buffer has the same layout. `tensors` names each view (its checkpoint name,
 * shape and offset), and ParamTensors gives typed pointers into either buffer.
 *
 * Activations are planned once per batch size by acts_new(); model_forward() and model_backward()
 * never allocate. The engine knows nothing of JSON, files or HTTP.
 */
#ifndef CHUNKGRPO_MODEL_H
#define CHUNKGRPO_MODEL_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int image_size; /* S: square image side in pixels */
    int channels;   /* C: 3, values in [-1, 1] */
    int patch;      /* p: patch side */
    int dim;        /* d: hidden width */
    int depth;      /* L: transformer blocks */
    int heads;      /* H: attention heads, head dim d/H */
    int mlp_ratio;  /* MLP hidden = mlp_ratio * d */
    int text_len;   /* T: text tokens after padding/truncation */
    int vocab_size; /* V: from the vocabulary */
} ModelConfig;

/* Derived sizes. */
static inline int cfg_grid(const ModelConfig *c)
{
    return c->image_size / c->patch;
}
static inline int cfg_img_tokens(const ModelConfig *c)
{
    return cfg_grid(c) * cfg_grid(c);
} /* N */
static inline int cfg_patch_dim(const ModelConfig *c)
{
    return c->patch * c->patch * c->channels;
}
static inline int cfg_seq_len(const ModelConfig *c)
{
    return c->text_len + cfg_img_tokens(c);
}
static inline int cfg_head_dim(const ModelConfig *c)
{
    return c->dim / c->heads;
}
static inline int cfg_mlp_dim(const ModelConfig *c)
{
    return c->dim * c->mlp_ratio;
}
static inline size_t cfg_image_numel(const ModelConfig *c)
{
    return (size_t)c->image_size * c->image_size * c->channels;
}

#define MODEL_TIME_FREQ_DIM 256 /* sin-cos timestep embedding width */

/* Fills *cfg with preset "tiny", "small" or "base"; vocab_size is left 0 (it comes from the
 * vocabulary). Returns 0, or -1 for an unknown name. */
int model_config_preset(const char *name, ModelConfig *cfg);

/* Checks that every field is in range and the sizes divide (patch | image_size, heads | dim).
 * Returns 0, or -1 with a message naming the field in err. */
int model_config_validate(const ModelConfig *cfg, char *err, size_t errlen);

typedef struct {
    char name[40]; /* checkpoint name, e.g. "blocks.3.qkv.weight" */
    int ndim;      /* 1 or 2 */
    int shape[2];
    size_t offset; /* in floats, from the start of the parameter (or gradient) buffer */
    size_t numel;
} TensorInfo;

typedef struct {
    float *ada_w, *ada_b;   /* [6d, d], [6d] */
    float *qkv_w, *qkv_b;   /* [3d, d], [3d] */
    float *q_norm, *k_norm; /* [dh], [dh] */
    float *proj_w, *proj_b; /* [d, d], [d] */
    float *fc1_w, *fc1_b;   /* [F, d], [F] with F = mlp_ratio * d */
    float *fc2_w, *fc2_b;   /* [d, F], [d] */
} BlockTensors;

typedef struct {
    float *tok_emb;               /* [V, d] */
    float *txt_pos;               /* [T, d] */
    float *pool_w, *pool_b;       /* [d, d], [d] */
    float *patch_w, *patch_b;     /* [d, P], [d] with P = p*p*C */
    float *img_pos;               /* [N, d] */
    float *t1_w, *t1_b;           /* [d, 256], [d] */
    float *t2_w, *t2_b;           /* [d, d], [d] */
    BlockTensors *blocks;         /* [L] */
    float *fin_ada_w, *fin_ada_b; /* [2d, d], [2d] */
    float *fin_w, *fin_b;         /* [P, d], [P] */
} ParamTensors;

typedef struct {
    ModelConfig cfg;
    size_t num_params;
    int num_tensors;
    TensorInfo *tensors; /* [num_tensors], model.md order; owned */
    float *params;       /* [num_params]; owned */
    float *grads;        /* [num_params]; owned, zeroed by model_zero_grad */
    ParamTensors p;      /* views into params */
    ParamTensors g;      /* the same views into grads */
} Model;

/* Allocates the parameter and gradient buffers (both zero) for a validated config.
 * Returns 0, or -1 when memory runs out (m is then left freed). */
int model_init(Model *m, const ModelConfig *cfg);
void model_free(Model *m);

/* The initialisation of model.md, from a seed (Philox, so the result does not depend on thread
 * count): adaLN-Zero for ada/final, Xavier-uniform linears, N(0, 0.02) embeddings, a fixed 2D
 * sin-cos table for img.pos_emb, norm weights 1. */
void model_init_weights(Model *m, uint64_t seed);

const TensorInfo *model_find_tensor(const Model *m, const char *name);
void model_zero_grad(Model *m);

/* Forward FLOPs per sample (multiply-adds count 2); backward is about twice that. */
double model_forward_flops(const ModelConfig *cfg);

typedef struct Activations Activations;

/* Plans and allocates every buffer that forward and backward need for batch size B.
 * Returns NULL when memory runs out. */
Activations *acts_new(const ModelConfig *cfg, int B);
void acts_free(Activations *a);

/* The batch size the next forward/backward use, and the one the activations were planned for.
 * acts_set_batch lowers (or restores) the former to any B in [1, capacity]: the buffers stay,
 * the passes simply run fewer rows (no padding rows to compute). Each row gets what it would in
 * the full batch, to float rounding (BLAS may choose another kernel for another row count). */
int acts_batch(const Activations *a);
int acts_capacity(const Activations *a);
void acts_set_batch(Activations *a, int B);

/* v = model(x, t, tokens) for the batch of a:
 *   x [B, S, S, C] (channels last), t [B], tokens [B, T] (0 = PAD), v_out [B, S, S, C].
 * Token ids must be in [0, V). Keeps what model_backward needs in a. */
void model_forward(const Model *m, Activations *a, const float *x, const float *t,
                   const int32_t *tokens, float *v_out);

/* Given dL/dv [B, S, S, C] for the last model_forward on a, ADDS dL/dparam to m->grads
 * (call model_zero_grad first unless accumulating). */
void model_backward(Model *m, Activations *a, const float *dv);

#endif
