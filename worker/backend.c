/*
 * backend.c: the Policy over the CPU engine or the CUDA library. See backend.h.
 */
#include "backend.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "errbuf.h"

int backend_from_name(const char *name, BackendKind *out)
{
    for (int i = 0; backend_names[i]; i++)
        if (strcmp(name, backend_names[i]) == 0) return *out = (BackendKind)i, 0;
    return -1;
}

/* ---- the CUDA library, loaded on first use ------------------------------------------------- */

#define CUDA_LIBRARY "libchunkgrpo_cuda.so"

/* Every entry point of cuda_engine.h the worker uses: (member, symbol). The members' types come
 * from the header's own declarations, so a changed signature fails to compile here. */
#define CUDA_ENTRIES(X)                                                                            \
    X(probe, cuda_probe)                                                                           \
    X(engine_new, cuda_engine_new)                                                                 \
    X(engine_free, cuda_engine_free)                                                               \
    X(set_params, cuda_engine_set_params)                                                          \
    X(get_params, cuda_engine_get_params)                                                          \
    X(zero_grad, cuda_engine_zero_grad)                                                            \
    X(forward_host, cuda_forward_host)                                                             \
    X(backward_host, cuda_backward_host)                                                           \
    X(adamw_step, cuda_adamw_step)                                                                 \
    X(get_moments, cuda_adamw_get_moments)                                                         \
    X(set_moments, cuda_adamw_set_moments)                                                         \
    X(rollout_new, cuda_rollout_new)                                                               \
    X(rollout_free, cuda_rollout_free)                                                             \
    X(rollout_run, cuda_rollout_run)                                                               \
    X(rollout_set_late, cuda_rollout_set_late)                                                     \
    X(items_backward, cuda_grpo_items_backward)

#define CUDA_MEMBER(member, symbol) __typeof__(symbol) *member;
static struct {
    int loaded; /* 1 loaded, -1 failed (reason in why) */
    char why[PATH_MAX + 512];
    CUDA_ENTRIES(CUDA_MEMBER)
} cuda;
#undef CUDA_MEMBER

void library_path(const char *env_var, const char *name, char *path, size_t len)
{
    const char *env = getenv(env_var);
    if (env && *env) {
        snprintf(path, len, "%s", env);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    snprintf(path, len, "%s/%s", slash ? exe : ".", name);
}

static int cuda_load(void)
{
    if (cuda.loaded) return cuda.loaded > 0 ? 0 : -1;
    char path[PATH_MAX + 64];
    library_path("CHUNKGRPO_CUDA_LIB", CUDA_LIBRARY, path, sizeof path);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(cuda.why, sizeof cuda.why,
                 "the CUDA backend is not available: %s (it is built with the worker wherever "
                 "nvcc exists; set CHUNKGRPO_CUDA_LIB to use another copy)",
                 dlerror());
        cuda.loaded = -1;
        return -1;
    }
#define CUDA_SYMBOL(member, symbol) {(void **)&cuda.member, #symbol},
    struct {
        void **slot;
        const char *name;
    } syms[] = {CUDA_ENTRIES(CUDA_SYMBOL)};
#undef CUDA_SYMBOL
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        if (!(*syms[i].slot = dlsym(h, syms[i].name))) {
            snprintf(cuda.why, sizeof cuda.why, "%s has no %s: built from another version?", path,
                     syms[i].name);
            dlclose(h);
            cuda.loaded = -1;
            return -1;
        }
    }
    cuda.loaded = 1;
    return 0;
}

int backend_available(BackendKind kind, char *err, size_t errlen)
{
    if (kind == BACKEND_CPU) return 0;
    if (cuda_load()) {
        errbuf_printf(err, errlen, "%s", cuda.why);
        return -1;
    }
    return cuda.probe(NULL, 0, err, errlen);
}

int backend_device_name(BackendKind kind, char *name, size_t namelen, char *err, size_t errlen)
{
    if (backend_available(kind, err, errlen)) return -1;
    if (kind == BACKEND_CUDA) return cuda.probe(name, namelen, err, errlen);
    snprintf(name, namelen, "unknown CPU");
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) != 0 || !colon) continue;
        colon += 1 + strspn(colon + 1, " \t");
        colon[strcspn(colon, "\n")] = '\0';
        snprintf(name, namelen, "%s", colon);
        break;
    }
    if (f) fclose(f);
    return 0;
}

/* ---- the policy ---------------------------------------------------------------------------- */

struct Policy {
    BackendKind kind;
    Model *m;
    const Model *ref;
    int batch;
    /* cpu */
    Activations *acts, *ref_acts;
    GrpoWorkspace *ws;
    /* cuda */
    CudaEngine *e, *ref_e;
};

struct PolicySampler {
    Policy *p;
    Sampler *s;     /* cpu */
    CudaRollout *r; /* cuda */
};

Policy *policy_new(BackendKind kind, CudaMath sampling, Model *m, const Model *ref, int batch,
                   char *err, size_t errlen)
{
    if (backend_available(kind, err, errlen)) return NULL;
    Policy *p = calloc(1, sizeof *p);
    if (!p) {
        errbuf_printf(err, errlen, "out of memory");
        return NULL;
    }
    p->kind = kind, p->m = m, p->ref = ref, p->batch = batch;
    if (kind == BACKEND_CPU) {
        p->acts = acts_new(&m->cfg, batch);
        p->ref_acts = ref ? acts_new(&m->cfg, batch) : NULL;
        p->ws = grpo_workspace_new(&m->cfg, batch);
        if (!p->acts || (ref && !p->ref_acts) || !p->ws) {
            errbuf_printf(err, errlen, "out of memory for activations of %d rows", batch);
            policy_free(p);
            return NULL;
        }
        return p;
    }
    /* training passes stay in fp32, the engine's default (cuda_engine.h says why) */
    if (!(p->e = cuda.engine_new(m, batch, sampling, err, errlen)) ||
        (ref && !(p->ref_e = cuda.engine_new(ref, batch, sampling, err, errlen)))) {
        policy_free(p);
        return NULL;
    }
    return p;
}

Policy *policy_for_config(const char *backend, const char *precision, Model *m, const Model *ref,
                          int batch, char *err, size_t errlen)
{
    BackendKind kind;
    int math = 0;
    while (precision_names[math] && strcmp(precision_names[math], precision) != 0) math++;
    if (backend_from_name(backend, &kind) || !precision_names[math]) {
        errbuf_printf(err, errlen, "config.%s = \"%s\" is not one of its choices",
                      precision_names[math] ? "backend" : "precision",
                      precision_names[math] ? backend : precision);
        return NULL;
    }
    char inner[600];
    Policy *p = policy_new(kind, (CudaMath)math, m, ref, batch, inner, sizeof inner);
    if (!p) errbuf_printf(err, errlen, "config.backend = \"%s\": %s", backend, inner);
    return p;
}

void policy_free(Policy *p)
{
    if (!p) return;
    acts_free(p->acts);
    acts_free(p->ref_acts);
    grpo_workspace_free(p->ws);
    if (p->e) cuda.engine_free(p->e);
    if (p->ref_e) cuda.engine_free(p->ref_e);
    free(p);
}

int policy_batch(const Policy *p)
{
    return p->batch;
}

BackendKind policy_kind(const Policy *p)
{
    return p->kind;
}

Model *policy_model(const Policy *p)
{
    return p->m;
}

PolicySampler *policy_sampler_new(Policy *p, const SamplerConfig *sc, int n, char *err,
                                  size_t errlen)
{
    PolicySampler *s = calloc(1, sizeof *s);
    if (!s) {
        errbuf_printf(err, errlen, "out of memory");
        return NULL;
    }
    s->p = p;
    if (p->kind == BACKEND_CPU) {
        s->s = sampler_new(&p->m->cfg, sc, n, p->batch, err, errlen);
    } else if (sc->noise_first != 0 || (sc->noise_total != 0 && sc->noise_total != n)) {
        errbuf_printf(err, errlen,
                      "noise slicing (data-parallel ranks) runs on the cpu backend only");
    } else {
        s->r = cuda.rollout_new(p->e, sc, n, err, errlen);
    }
    if (!s->s && !s->r) {
        free(s);
        return NULL;
    }
    return s;
}

void policy_sampler_free(PolicySampler *s)
{
    if (!s) return;
    sampler_free(s->s);
    if (s->r) cuda.rollout_free(s->r);
    free(s);
}

int policy_sampler_set_late(PolicySampler *s, Policy *late, int from_step, char *err, size_t errlen)
{
    if (late && (late->kind != s->p->kind || late->m->num_params != s->p->m->num_params ||
                 late->batch != s->p->batch)) {
        errbuf_printf(err, errlen,
                      "hybrid sampling needs a late model of the same size, backend "
                      "and batch");
        return -1;
    }
    if (s->p->kind == BACKEND_CPU)
        sampler_set_late_model(s->s, late ? late->m : NULL, from_step);
    else
        cuda.rollout_set_late(s->r, late ? late->e : NULL, from_step);
    return 0;
}

int policy_sample(PolicySampler *s, const int32_t *tokens, Rng *rng, Trajectory *tr, int need_x,
                  char *err, size_t errlen)
{
    Policy *p = s->p;
    if (p->kind == BACKEND_CPU) {
        acts_set_batch(p->acts, p->batch); /* after a policy_forward of fewer rows */
        return sampler_run(s->s, p->m, p->acts, tokens, rng, tr, err, errlen);
    }
    return cuda.rollout_run(s->r, p->e, tokens, rng, tr, need_x, err, errlen);
}

int policy_items_backward(Policy *p, PolicySampler *from, const Trajectory *tr, const GrpoConfig *c,
                          const GrpoItem *items, int n_items, float scale, GrpoItemStats *stats,
                          char *err, size_t errlen)
{
    if (p->kind == BACKEND_CPU)
        return grpo_items_backward(p->ws, p->m, p->acts, p->ref, p->ref_acts, tr, c, items, n_items,
                                   scale, stats, err, errlen);
    return cuda.items_backward(from->r, p->e, p->ref_e, tr, c, items, n_items, scale, stats, err,
                               errlen);
}

void policy_forward(Policy *p, int B, const float *x, const float *t, const int32_t *tokens,
                    float *v)
{
    if (p->kind == BACKEND_CPU) {
        acts_set_batch(p->acts, B);
        model_forward(p->m, p->acts, x, t, tokens, v);
    } else {
        cuda.forward_host(p->e, B, x, t, tokens, v);
    }
}

void policy_backward(Policy *p, const float *dv)
{
    if (p->kind == BACKEND_CPU)
        model_backward(p->m, p->acts, dv);
    else
        cuda.backward_host(p->e, dv);
}

void policy_zero_grad(Policy *p)
{
    if (p->kind == BACKEND_CPU)
        model_zero_grad(p->m);
    else
        cuda.zero_grad(p->e);
}

double policy_adamw_step(Policy *p, AdamW *opt)
{
    if (p->kind == BACKEND_CPU) return adamw_step(opt, p->m->params, p->m->grads);
    return cuda.adamw_step(p->e, opt);
}

void policy_pull(Policy *p, AdamW *opt)
{
    if (p->kind == BACKEND_CPU) return;
    cuda.get_params(p->e, p->m->params);
    if (opt) cuda.get_moments(p->e, opt->m, opt->v);
}

void policy_push(Policy *p, const AdamW *opt)
{
    if (p->kind == BACKEND_CPU) return;
    cuda.set_params(p->e, p->m->params);
    if (opt) cuda.set_moments(p->e, opt->m, opt->v);
}
