/*
 * sampler.h: flow-matching samplers of spec/algorithm.md sections 1 and 2: the shifted schedule,
 * the deterministic ODE (Euler) step, the SDE step with its Gaussian log-probability (`flow`, as
 * Flow-GRPO, `dance`, as DanceGRPO, and `cps`, coefficients-preserving sampling), and a batched
 * sampler that records whole trajectories for
 * GRPO.
 *
 * Notation (algorithm.md): images x [S, S, C]; noise level sigma = t in [0, 1] (1 = pure noise);
 * the model predicts the velocity v = v_theta(x_t, t, prompt); generation runs sigma_0 = 1 down
 * to sigma_N = 0 in N transitions. Transition i maps x_i to x_{i+1} using v(x_i, sigma_i).
 *
 * The last transition: the image handed to rewards is x0_hat = x_{N-1} - sigma_{N-1} v, the
 * model's clean prediction at the last step's input. For the ODE that equals x_N; for the SDE,
 * x_N = mu + s z carries noise that never reaches the reward, so transition N-1 is recorded
 * (x_N and its log-probability) but is NOT trainable: a trainer uses transitions 0 .. N-2
 * (sampler_trainable_steps), index 0 = highest noise.
 *
 * The pieces GRPO reuses are exposed separately: sde_step_coeffs gives, for one transition, the
 * linear form of the mean (mu = cx * x + cv * v) and the std s; sde_mean, sde_sample, sde_logp
 * and sde_logp_grad_mu act on flat arrays. With new parameters a trainer recomputes v, then
 * mu = sde_mean(...), logp_new = sde_logp(x_{i+1}, mu, s), and back-propagates through
 *   d logp / d mu = (x' - mu) / (s^2 * numel),   d mu / d v = cv.
 *
 * Randomness comes from rng.h (Philox, counter-based), drawn for all n trajectories at once in a
 * fixed order, so the noise does not depend on the thread count or on the model batch size:
 *   1. the initial noise x_0 = x_1-of-flow-matching: ceil(n / g) * S*S*C normals when
 *      trajectories share noise in groups of g, else n * S*S*C;
 *   2. for the SDE, before each transition i = 0 .. N-1, n * S*S*C normals z_i.
 * The ODE draws only (1). With noise_first / noise_total (a data-parallel slice of a larger
 * batch) each draw takes the slice's rows out of the whole batch's draw, by counter, and the Rng
 * ends past the whole batch's draw. Trajectories are bit-identical for any thread count; for
 * another model batch size they agree to float rounding (about 1e-7 relative: the GEMMs see other
 * row counts), so a trainer that must reproduce logp_old exactly recomputes with the rollout's
 * batching.
 *
 * Memory: sampler_new and trajectory_new allocate everything; sampler_run never allocates.
 * The engine knows nothing of JSON or files. A Sampler and a Trajectory belong to one thread at a
 * time (the calls use OpenMP inside).
 */
#ifndef CHUNKGRPO_SAMPLER_H
#define CHUNKGRPO_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "rng.h"

#define SAMPLER_MAX_STEPS 1000

typedef enum { SAMPLER_ODE = 0, SAMPLER_SDE = 1 } SamplerKind;
typedef enum { SDE_FLOW = 0, SDE_DANCE = 1, SDE_CPS = 2 } SdeKind;

/* "flow", "dance" or "cps" (as configs and trajectory files spell them), and back: 0, or -1
 * (kind untouched) for any other name. */
const char *sde_kind_name(SdeKind kind);
int sde_kind_from_name(const char *name, SdeKind *kind);

/*
 * The shifted schedule: s_i = 1 - i/N, sigmas[i] = shift*s_i / (1 + (shift-1)*s_i), i = 0..N
 * (so sigmas[0] = 1, sigmas[N] = 0, strictly decreasing for shift > 0). Computed in double,
 * stored as float. sigmas has room for steps + 1 values (caller's buffer).
 */
void flow_schedule(int steps, float shift, float *sigmas);

/* One transition's constants. */
typedef struct {
    float sigma, sigma_next; /* sigma_i, sigma_{i+1} */
    /* SDE noise strength: flow eta*sqrt(sigma/(1-sigma_g)); dance eta; cps sin(eta pi / 2) */
    float sigma_t;
    /* flow, dance: s = sigma_t * sqrt(sigma - sigma_next); cps: sigma_next * sigma_t (0 at the
     * last transition, which is then deterministic) */
    float std;
    float cx, cv; /* mu = cx * x + cv * v */
} SdeStep;

/*
 * The constants of transition i (0 <= i < steps) of schedule sigmas[0..steps], with
 * h = sigma - sigma_next:
 *   flow:  sigma_t = eta * sqrt(sigma / (1 - sigma_g)), sigma_g = sigma, except sigma_g =
 *          sigmas[1] when sigma == 1 (the first step; guards the division)
 *   dance: sigma_t = eta
 *   mu = x - h * (v + sigma_t^2 / (2 sigma) * (x + (1 - sigma) v)), i.e.
 *   cx = 1 - h sigma_t^2 / (2 sigma),  cv = -h (1 + sigma_t^2 (1 - sigma) / (2 sigma)),
 *   std = sigma_t * sqrt(h).
 *   cps (coefficients-preserving sampling; Wang and Yu 2025, arXiv:2509.05952), 0 < eta <= 1:
 *          with x0_hat = x - sigma v and eps_hat = x + (1 - sigma) v (the model's clean image
 *          and noise), theta = eta pi / 2:
 *          mu = (1 - sigma_next) x0_hat + sigma_next cos(theta) eps_hat,
 *          std = sigma_next sin(theta),
 *          so x_next = mu + std z holds exactly (1 - sigma_next) of x0_hat and noise of total
 *          scale sigma_next: the noise level the schedule promises, where the flow SDE's
 *          discretisation leaves excess noise in the image. eta 1 replaces all of the predicted
 *          noise with fresh noise. The last transition (sigma_next = 0) has std 0: x_N = x0_hat.
 * Everything is computed in double and rounded once. With N = 17, shift 3, eta 0.7 the flow
 * SDE's first std is 0.700 (sigma_1 = 0.9796, sigma_t = 4.9).
 */
void sde_step_coeffs(const float *sigmas, int steps, int i, SdeKind kind, float eta, SdeStep *out);

/* The SDE's own settings: a known kind and a finite eta > 0, at most 1 for cps. Returns 0, or -1
 * with a message naming the setting in err. (sampler_config_validate and grpo_items_validate
 * both call it.) */
int sde_validate(SdeKind kind, float eta, char *err, size_t errlen);

/* mu[k] = c->cx * x[k] + c->cv * v[k], k < n. Arrays are the caller's; mu may alias x or v. */
void sde_mean(const SdeStep *c, const float *x, const float *v, size_t n, float *mu);

/* x_next[k] = mu[k] + std * z[k]. x_next may alias mu. */
void sde_sample(const float *mu, float std, const float *z, size_t n, float *x_next);

/*
 * The transition's log-probability: the MEAN over the n elements of
 *   -(x_next - mu)^2 / (2 std^2) - log std - log sqrt(2 pi)
 * (summed in double). std must be >= 0; a deterministic transition (std 0, the last of cps)
 * has no density and records 0, as the ODE's steps do (it is never trained).
 */
float sde_logp(const float *x_next, const float *mu, float std, size_t n);

/*
 * The gradient of scale * sde_logp(x_next, mu, std, n) with respect to mu, WRITTEN into dmu:
 *   dmu[k] = scale * (x_next[k] - mu[k]) / (std^2 * n).
 * (For the chain rule to v, multiply by SdeStep.cv.)
 */
void sde_logp_grad_mu(const float *x_next, const float *mu, float std, size_t n, float scale,
                      float *dmu);

/* The Euler step x_next = x - (sigma - sigma_next) * v. x_next may alias x. */
void ode_step(const float *x, const float *v, float sigma, float sigma_next, size_t n,
              float *x_next);

/* The clean-image prediction x0_hat = x - t * v. x0 may alias x. */
void predict_x0(const float *x, const float *v, float t, size_t n, float *x0);

/* Classifier-free guidance: v = vu + w (v - vu), in place over n elements (v holds the
 * conditional velocity on entry). */
void guidance_combine(float *v, const float *vu, float w, size_t n);

/* Its gradient: dv [2 n] holds d/dv in its first n on entry; on return w d/dv there (for the
 * conditional velocity) and (1 - w) d/dv in the next n (for the unconditional one). */
void guidance_backward(float *dv, float w, size_t n);

typedef struct {
    int steps;        /* N transitions, 1 .. SAMPLER_MAX_STEPS (paper 17) */
    float shift;      /* schedule shift > 0 (paper 3) */
    SamplerKind kind; /* ODE or SDE */
    SdeKind sde;      /* for the SDE: flow, dance or cps */
    float eta;        /* SDE noise strength > 0 (paper 0.7; cps: at most 1); ignored by the ODE */
    int guidance;     /* 1: classifier-free guidance with cfg_scale; 0: conditional only */
    float cfg_scale;  /* w: v = v_uncond + w (v_cond - v_uncond), uncond = all-PAD tokens */
    int noise_group;  /* initial noise: 0 = independent per trajectory; g >= 1 =
                       * init_same_noise, trajectories [k g, k g + g) share one draw
                       * (g >= n: one draw for all) */
    /* Data parallel: this sampler's n trajectories are rows noise_first .. noise_first + n - 1
     * of a batch of noise_total (0: noise_total = n, noise_first 0, the whole batch) drawn from
     * the same Rng: each row draws exactly the noise it would draw in the whole batch, and the
     * Rng advances past the whole batch's draws. So ranks that each sample their slice from a
     * copy of one Rng reproduce a single run of the whole batch bit for bit, and end with the
     * same Rng. A slice (noise_total != n) needs S*S*C a multiple of 4 (every row starts on a
     * Philox block) and, with noise_group g >= 1, noise_first a multiple of g (a group's shared
     * noise cannot be split). CPU sampler only. */
    int noise_first;
    int noise_total;
} SamplerConfig;

/* Paper defaults: 17 steps, shift 3, SDE flow, eta 0.7, no guidance, independent noise, the
 * whole batch (noise_first and noise_total 0). */
void sampler_config_default(SamplerConfig *c);

/* Checks every field; returns 0, or -1 with a message naming the field in err. (What depends on
 * n and the image size, the slice's bounds and alignment, sampler_new checks.) */
int sampler_config_validate(const SamplerConfig *c, char *err, size_t errlen);

/* The trainable transitions of an N-step trajectory: 0 .. N-2 (see the header comment). */
static inline int sampler_trainable_steps(int steps)
{
    return steps - 1;
}

/* What a sampler run records for n trajectories of N steps (img = S*S*C floats per image).
 * Every array is owned by the Trajectory (trajectory_free); sampler_run overwrites them all. */
typedef struct {
    int n, steps, text_len;
    size_t img;      /* S*S*C */
    float *sigmas;   /* [steps+1] the schedule used */
    float *x;        /* [steps+1, n, img]: x[0] the initial noise, x[i+1] after transition i */
    float *logp;     /* [steps, n] per-transition log-probability (0 for the ODE) */
    float *x0_hat;   /* [n, img] x_{N-1} - sigma_{N-1} v: the final image, for rewards */
    int32_t *tokens; /* [n, text_len] the prompts used (a copy) */
} Trajectory;

/* Allocates a trajectory for n >= 1 trajectories of steps >= 1 transitions of model cfg (all
 * zero). NULL when memory runs out or a size is out of range. Free with trajectory_free. */
Trajectory *trajectory_new(const ModelConfig *cfg, int n, int steps);
void trajectory_free(Trajectory *t);

/* 1 when two model inputs are the same, bit for bit: the images x [img] and the prompts tokens
 * [text_len] (the transition is the caller's to match); the model gives them one velocity. */
int same_model_input(const float *xa, const int32_t *ta, const float *xb, const int32_t *tb,
                     size_t img, size_t text_len);

/* The relative L1 distance of the first `count` transitions of trajectory b (algorithm.md
 * section 5): curve[i] = mean|x_{i+1} - x_i| / mean|x_i| (0 where x_i is all zero), summed in
 * double. count <= tr->steps. */
void trajectory_l1rel(const Trajectory *tr, int b, int count, float *curve);

typedef struct Sampler Sampler;

/*
 * Plans a sampler for exactly n trajectories with the model run in batches of `batch` (the
 * Activations' batch size that sampler_run will be given). Copies *sc (validated here, with the
 * slice noise_first .. noise_first + n - 1 checked against noise_total and the image size).
 * Returns the plan (free with sampler_free), or NULL with a message in err (a bad field, or no
 * memory).
 */
Sampler *sampler_new(const ModelConfig *cfg, const SamplerConfig *sc, int n, int batch, char *err,
                     size_t errlen);
void sampler_free(Sampler *s);

/*
 * Hybrid sampling (algorithm.md section 7, the paper's "hybrid" evaluation: the first 30 of 50
 * steps with the trained model, the rest with the base model): from transition from_step on,
 * sampler_run takes the velocity from `late` instead of its model argument. late (borrowed, the
 * same config) NULL turns it off; from_step >= steps never switches.
 */
void sampler_set_late_model(Sampler *s, const Model *late, int from_step);

/*
 * Samples n trajectories: tokens [n, T] (borrowed; ids in [0, V)), noise from rng (advanced as
 * described above), into tr (allocated for this n, steps and model). m and a are borrowed; a
 * must have the plan's batch size and is overwritten. Guidance runs a second forward per batch.
 * A trajectory whose input at a step repeats the previous trajectory's (the same x_i and prompt:
 * every member of a noise group at the first step) takes its velocity instead of a model row of
 * its own, so a group of g sharing noise and prompt costs one row at that step, not g.
 * Returns 0, or -1 with a message when the arguments do not match the plan (batch, n, steps,
 * sizes) or a token id is out of range.
 */
int sampler_run(Sampler *s, const Model *m, Activations *a, const int32_t *tokens, Rng *rng,
                Trajectory *tr, char *err, size_t errlen);

/*
 * The same with explicit noise (for tests against a reference, or replaying a trajectory):
 * x_init [n, img] is the initial noise (noise_group, noise_first and noise_total are then
 * ignored), z [steps, n, img] the SDE
 * noise of each transition (NULL for the ODE). Both borrowed.
 */
int sampler_run_noise(Sampler *s, const Model *m, Activations *a, const int32_t *tokens,
                      const float *x_init, const float *z, Trajectory *tr, char *err,
                      size_t errlen);

#endif
