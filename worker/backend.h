/*
 * backend.h: the one place where the worker meets the engine's backends. Runners sample, train
 * and step the optimizer through a Policy and never call either backend directly:
 *   cpu   the engine in this binary (model_cpu.c, sampler_cpu.c, grpo_cpu.c), always present;
 *   cuda  the CUDA backend (worker/engine/cuda/), loaded at run time from libchunkgrpo_cuda.so
 *         beside the worker binary (or $CHUNKGRPO_CUDA_LIB), so the worker itself never links
 *         CUDA and runs on machines without it. The library is built wherever nvcc exists.
 *
 * A Policy owns the device copy of a model (on the CPU: it borrows the host Model and keeps
 * activations for `batch` rows), an optional frozen reference for the KL term, and the GRPO
 * step's buffers. The host Model stays the master for checkpoints and evaluations: policy_pull
 * brings it (and the AdamW moments) up to date from the device, policy_push sends it back after
 * a resume. On the CPU both are no-ops, since the host Model is the policy.
 *
 * Results: the CPU backend is bit-identical for any thread count; the CUDA backend agrees with
 * it to float rounding (fp32 training, TF32 sampling: see cuda_engine.h), not bit for bit.
 */
#ifndef CHUNKGRPO_BACKEND_H
#define CHUNKGRPO_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "adamw.h"
#include "cuda/cuda_engine.h" /* the backend's C API: CudaMath; no CUDA types */
#include "experiment.h"       /* backend_names, precision_names */
#include "grpo.h"
#include "model.h"
#include "rng.h"
#include "sampler.h"

/* Its names (backend_names in common/experiment.h) are in BackendKind order, the precisions
 * (precision_names) in CudaMath order. */
typedef enum { BACKEND_CPU = 0, BACKEND_CUDA = 1 } BackendKind;

/* The kind called name ("cpu" or "cuda"); -1 for another name. */
int backend_from_name(const char *name, BackendKind *out);

/* Where the worker loads an optional library from (the CUDA backend, MPI): the file $env_var
 * names, else `name` beside the running binary. */
void library_path(const char *env_var, const char *name, char *path, size_t len);

/* Whether kind can run here: 0, or -1 with the reason (no CUDA library beside the worker, no
 * driver, no device) in err. Loads the CUDA library on first use. */
int backend_available(BackendKind kind, char *err, size_t errlen);

/* The device kind runs on, as a worker names it when it registers: the CPU's model (from
 * /proc/cpuinfo; "unknown CPU" where it names none) or the GPU's name and compute capability.
 * Returns 0, or -1 with the reason when kind cannot run here (as backend_available). */
int backend_device_name(BackendKind kind, char *name, size_t namelen, char *err, size_t errlen);

typedef struct Policy Policy;

/* A policy over model m (borrowed; it must outlive the policy) for model calls of up to batch
 * rows, with the frozen reference ref (borrowed) or NULL; `sampling` is the CUDA backend's
 * sampling precision (ignored on the CPU). NULL with a message when the backend
 * is unavailable or memory runs out. */
Policy *policy_new(BackendKind kind, CudaMath sampling, Model *m, const Model *ref, int batch,
                   char *err, size_t errlen);
void policy_free(Policy *p);

/* policy_new for a config's "backend" and "precision" fields (validated choices); a failure
 * names the field: 'config.backend = "cuda": no usable CUDA device (...)'. */
Policy *policy_for_config(const char *backend, const char *precision, Model *m, const Model *ref,
                          int batch, char *err, size_t errlen);
int policy_batch(const Policy *p);
BackendKind policy_kind(const Policy *p);
/* The host model the policy was made over (its parameters are current after policy_pull). */
Model *policy_model(const Policy *p);

typedef struct PolicySampler PolicySampler;

/* A sampler of n trajectories with settings sc on the policy's model (calls of policy_batch
 * rows). NULL with a message for a bad setting or no memory. */
PolicySampler *policy_sampler_new(Policy *p, const SamplerConfig *sc, int n, char *err,
                                  size_t errlen);
void policy_sampler_free(PolicySampler *s);

/* Hybrid sampling (sampler_set_late_model): from transition from_step on, the sampler takes the
 * velocity from the policy `late` (its current weights; same model size, backend and batch), or
 * plainly again with late NULL. Returns 0, or -1 with a message when late does not match. */
int policy_sampler_set_late(PolicySampler *s, Policy *late, int from_step, char *err,
                            size_t errlen);

/* sampler_run through the policy into tr: tokens [n, T], noise from rng. The CUDA backend copies
 * the whole x back only when need_x (sigmas, tokens, logp and x0_hat always); the CPU fills it
 * anyway. Returns 0, or -1 with a message. */
int policy_sample(PolicySampler *s, const int32_t *tokens, Rng *rng, Trajectory *tr, int need_x,
                  char *err, size_t errlen);

/* grpo_items_backward on trajectories the sampler `from` produced last (tr is that run's).
 * Adds to the policy's gradient. Returns 0, or -1 with a message. */
int policy_items_backward(Policy *p, PolicySampler *from, const Trajectory *tr, const GrpoConfig *c,
                          const GrpoItem *items, int n_items, float scale, GrpoItemStats *stats,
                          char *err, size_t errlen);

/* model_forward (keeping what a backward needs) and model_backward on host arrays, B <= batch
 * rows: for losses computed on the host (flow-matching pretraining). */
void policy_forward(Policy *p, int B, const float *x, const float *t, const int32_t *tokens,
                    float *v);
void policy_backward(Policy *p, const float *dv);

void policy_zero_grad(Policy *p);

/* One AdamW step of the policy's parameters (opt's settings and step count; the CUDA backend
 * keeps the moments on the device). Returns the gradient norm before clipping. */
double policy_adamw_step(Policy *p, AdamW *opt);

/* Device -> host: the model's parameters, and opt's moments when opt is set. */
void policy_pull(Policy *p, AdamW *opt);
/* Host -> device: the model's parameters, and opt's moments when opt is set. */
void policy_push(Policy *p, const AdamW *opt);

#endif
