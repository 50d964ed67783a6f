/*
 * adamw.h: AdamW (Loshchilov & Hutter, decoupled weight decay) over the model's flat parameter
 * buffer, with global gradient-norm clipping. One flat loop; the moments are two contiguous
 * buffers shaped like the parameters.
 */
#ifndef CHUNKGRPO_ADAMW_H
#define CHUNKGRPO_ADAMW_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
    float grad_clip; /* max global L2 norm of the gradient; <= 0 disables clipping */
} AdamWConfig;

typedef struct {
    AdamWConfig cfg;
    size_t n;
    int64_t step; /* optimizer steps taken */
    float *m;     /* [n] first moment; owned */
    float *v;     /* [n] second moment; owned */
} AdamW;

/* Allocates zeroed moments for n parameters. Returns 0, or -1 when memory runs out. */
int adamw_init(AdamW *opt, const AdamWConfig *cfg, size_t n);
void adamw_free(AdamW *opt);

/* Global L2 norm of g[0..n). Deterministic for a fixed thread count. */
double grad_global_norm(const float *g, size_t n);

/* One step: when the global norm of grads exceeds cfg.grad_clip, the gradient is scaled by
 * grad_clip / (norm + 1e-6) as it is read (grads itself is not modified), as PyTorch's
 * clip_grad_norm_ does; then the AdamW update of params. Returns the norm before clipping.
 * Allocates nothing. */
double adamw_step(AdamW *opt, float *params, const float *grads);

#endif
