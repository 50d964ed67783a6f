/*
 * cuda_engine.h: the CUDA backend of the engine, as a plain C API (no CUDA types leak out, so
 * the worker and the tests compile it with the C compiler).
 *
 * It computes what the CPU backend computes (model_cpu.c, sampler_cpu.c, grpo_cpu.c), entirely
 * on the device: a CudaEngine holds one model's parameters, gradients and AdamW moments and the
 * activations for `batch` rows in device memory; a CudaRollout holds n trajectories there. Only
 * the per-transition log-probabilities, the final images and (on request) the whole trajectory
 * come back to the host, where the rewards are scored. The kernels mirror ops.c function by
 * function (kernels.cu); matrix products go through cuBLAS.
 *
 * Randomness is rng.h's Philox 4x32-10 computed on the device in the same order as the CPU, so
 * the same seed gives the same noise on both backends (to the last bit of each normal, up to the
 * libm/CUDA difference in double-precision log and cos, which rounding to float hides).
 *
 * Precision, set apart for sampling and for training: CUDA_MATH_TF32 runs matrix products on
 * tensor cores in TF32 with float accumulation; CUDA_MATH_FP32 in full float (the CPU backend's
 * accuracy); CUDA_MATH_BF16 lets cuBLAS down-convert the float operands to bfloat16 on tensor
 * cores, the float parameters staying the master copy. Defaults: sampling TF32, training FP32.
 * Why training is float: the policy-gradient step compares log-probabilities whose ratio must
 * be exact well inside clip ranges of 1e-4 (the paper's is 5e-5), and the KL term
 * differentiates the small difference of two forwards; on the fixtures, TF32 training put the
 * gradients 1e-3 to 4e-3 off (make gpu-check shows it), fp32 1e-6. Sampling loses nothing to
 * TF32: each step's log-probability depends on the drawn noise alone (x' - mu = std z).
 * Everything outside matrix products is float, with double for the log-probability and
 * gradient-norm sums, as on the CPU.
 *
 * Failure: construction reports a missing driver, device or memory as an error message; a CUDA
 * or cuBLAS call that fails later (a lost device) prints the call, file and line and exits with
 * status 70, because no engine state can be trusted after it.
 */
#ifndef CHUNKGRPO_CUDA_ENGINE_H
#define CHUNKGRPO_CUDA_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" { /* the engine's C headers too, when a .cu file includes this */
#endif

#include "adamw.h"
#include "grpo.h"
#include "model.h"
#include "rng.h"
#include "sampler.h"

typedef enum { CUDA_MATH_TF32 = 0, CUDA_MATH_FP32 = 1, CUDA_MATH_BF16 = 2 } CudaMath;

/* "tf32", "fp32", "bf16" -> *out; returns 0, or -1 for another name. */
int cuda_math_parse(const char *name, CudaMath *out);
const char *cuda_math_name(CudaMath m);

/* Whether a usable GPU is present: 0 with its name (and compute capability) in name, or -1 with
 * the reason ("no CUDA driver", "no CUDA device") in err. Either buffer may be NULL. */
int cuda_probe(char *name, size_t namelen, char *err, size_t errlen);

typedef struct CudaEngine CudaEngine;

/* A device copy of model m (its current parameters; gradients zero) with activations for up to
 * `batch` rows; math is the sampling precision (training starts at FP32). NULL with a message
 * when no GPU is usable or memory runs out. */
CudaEngine *cuda_engine_new(const Model *m, int batch, CudaMath math, char *err, size_t errlen);
/* The precision of training passes (their forward, backward and the KL reference's forward). */
void cuda_engine_set_train_math(CudaEngine *e, CudaMath math);
void cuda_engine_free(CudaEngine *e);
int cuda_engine_batch(const CudaEngine *e);

/* Sampling passes run attention in a flash-style kernel for sequences of at least min_seq tokens
 * (default 2048); 0 means always, INT_MAX never. Training forwards always keep the
 * probabilities. For tests and benchmarks. */
void cuda_engine_set_flash_min_seq(CudaEngine *e, int min_seq);

/* Host <-> device copies of the flat parameter / gradient buffers (model.h layout). */
void cuda_engine_set_params(CudaEngine *e, const float *params);
void cuda_engine_get_params(const CudaEngine *e, float *params);
void cuda_engine_get_grads(const CudaEngine *e, float *grads);
void cuda_engine_zero_grad(CudaEngine *e);
void cuda_engine_set_grads(CudaEngine *e, const float *grads);

/* model_forward / model_backward on host arrays, for B <= batch rows (copied in and out).
 * Token ids must be in [0, V). The backward uses the last forward. For tests and tools; the
 * sampler and trainer below keep their data on the device. */
void cuda_forward_host(CudaEngine *e, int B, const float *x, const float *t, const int32_t *tokens,
                       float *v);
void cuda_backward_host(CudaEngine *e, const float *dv);

/* One AdamW step with global-norm clipping (adamw.h semantics; opt->step is advanced, opt's
 * host moments are not used: the device keeps its own, zero at construction). Returns the
 * gradient norm before clipping. */
double cuda_adamw_step(CudaEngine *e, AdamW *opt);

/* The moments, for checkpoints: host buffers of num_params floats each. */
void cuda_adamw_get_moments(const CudaEngine *e, float *m, float *v);
void cuda_adamw_set_moments(CudaEngine *e, const float *m, const float *v);

typedef struct CudaRollout CudaRollout;

/* Device storage for n trajectories of sampler config sc (validated here) on engine e's model.
 * NULL with a message for a bad field or no memory. */
CudaRollout *cuda_rollout_new(const CudaEngine *e, const SamplerConfig *sc, int n, char *err,
                              size_t errlen);
void cuda_rollout_free(CudaRollout *r);

/*
 * sampler_run on the device: tokens [n, T] (host; ids checked), noise from rng (advanced exactly
 * as the CPU sampler advances it). The model runs in calls of at most the engine's batch rows.
 * Copies into the host trajectory tr: sigmas, tokens, logp and x0_hat always; the full x only
 * when copy_x (the profile's L1 curve needs it; training does not). Returns 0, or -1 with a
 * message (sizes that do not match, a token out of range).
 */
int cuda_rollout_run(CudaRollout *r, CudaEngine *e, const int32_t *tokens, Rng *rng, Trajectory *tr,
                     int copy_x, char *err, size_t errlen);

/* Hybrid sampling (sampler_set_late_model): from transition from_step on, runs take the
 * velocity from engine late (borrowed, the same model config and batch); NULL turns it off. */
void cuda_rollout_set_late(CudaRollout *r, CudaEngine *late, int from_step);

/* The same with explicit noise x_init [n, img] and z [steps, n, img] (z NULL for the ODE). */
int cuda_rollout_run_noise(CudaRollout *r, CudaEngine *e, const int32_t *tokens,
                           const float *x_init, const float *z, Trajectory *tr, int copy_x,
                           char *err, size_t errlen);

/* Loads a recorded host trajectory (its x and tokens; tr sized for r) into the device rollout,
 * as if the last run had produced it: to train on trajectories sampled elsewhere or replay a
 * fixture. Returns 0, or -1 with a message when the sizes differ. */
int cuda_rollout_load(CudaRollout *r, CudaEngine *e, const Trajectory *tr, char *err,
                      size_t errlen);

/*
 * grpo_items_backward on the device, for trajectories the last cuda_rollout_run of r recorded
 * (tr is that run's host trajectory: its sigmas, logp and the items are read from it; its x is
 * not needed). ref: the frozen reference engine for kl_coef > 0 (same config and batch), else
 * NULL. Same contract, semantics and checks as grpo_items_backward; the sum of the items' sizes
 * must be <= the engine's batch. Returns 0, or -1 with a message.
 */
int cuda_grpo_items_backward(CudaRollout *r, CudaEngine *e, CudaEngine *ref, const Trajectory *tr,
                             const GrpoConfig *c, const GrpoItem *items, int n_items, float scale,
                             GrpoItemStats *stats, char *err, size_t errlen);

/* Waits for the device (for timing). */
void cuda_sync(void);

#ifdef __cplusplus
}
#endif

#endif
