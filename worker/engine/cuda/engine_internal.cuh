/*
 * engine_internal.cuh: the CudaEngine as engine.cu and rollout.cu share it: device passes on
 * device pointers, without the host copies of the public API.
 */
#ifndef CHUNKGRPO_CUDA_ENGINE_INTERNAL_CUH
#define CHUNKGRPO_CUDA_ENGINE_INTERNAL_CUH

#include "cuda_engine.h"
#include "cuda_util.cuh"

typedef struct DevActs DevActs;

struct CudaEngine {
    ModelConfig cfg;
    CudaMath math, train_math;
    cublasComputeType_t sample_compute, train_compute; /* from math, train_math */
    cublasComputeType_t compute;                       /* the current pass's */
    int capacity;                                      /* rows the activations hold */
    size_t num_params;
    float *params, *grads, *adam_m, *adam_v; /* device, [num_params] each */
    ParamTensors p, g;                       /* views into params / grads (device pointers) */
    DevActs *a;
    float *ones;                  /* [capacity * seq_len] for bias gradients */
    double *norm, *norm_partials; /* gradient norm and its partial sums */
    float *x_in, *t_in, *v_out;   /* staging for the host API: [capacity, img], [capacity] */
    int32_t *tok_in;              /* [capacity, T] */
    int grad_ready;               /* the last forward kept what a backward needs */
    int flash_min_seq;            /* no-grad passes use flash attention from this length on */
    cudaStream_t stream;
    cublasHandle_t blas;
};

/* What a forward is for: sampling (sampling precision; sequences of at least flash_min_seq
 * tokens run the flash-style attention), the frozen reference of the KL term (training
 * precision, no backward), or training (training precision, keeps what a backward needs). */
typedef enum { PASS_SAMPLE, PASS_REFERENCE, PASS_TRAIN } PassKind;

/* v [B, img] = model(x [B, img], t [B], tokens [B, T]), all device pointers, B <= capacity. */
void engine_forward(CudaEngine *e, int B, const float *x, const float *t, const int32_t *tokens,
                    float *v, PassKind pass);
/* ADDS the parameter gradient of the last (training) forward given dv [B, img] (device). */
void engine_backward(CudaEngine *e, const float *dv);

#endif
