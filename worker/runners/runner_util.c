/*
 * runner_util.c: see runner_util.h.
 */
#include "runner_util.h"

#include <dirent.h>
#include <math.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checkpoint.h"
#include "model.h"
#include "world/shapes.h"

int make_dirs(const char *path, char *err, size_t errlen)
{
    char buf[PATH_BUF];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        snprintf(err, errlen, "%s: path too long", path);
        return -1;
    }
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char keep = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
                snprintf(err, errlen, "%s: cannot create folder: %s", buf, strerror(errno));
                return -1;
            }
            *p = keep;
            if (!keep) break;
        }
    }
    return 0;
}

int write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen)
{
    char tmp[PATH_BUF + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        snprintf(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
        return -1;
    }
    ssize_t n = write(fd, data, len);
    int ok = n == (ssize_t)len && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int read_small_file(const char *path, char *buf, size_t buflen, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
        return -1;
    }
    size_t n = fread(buf, 1, buflen - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) buf[--n] = '\0';
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void prune_checkpoints(const char *out, int keep)
{
    char dir[PATH_BUF];
    snprintf(dir, sizeof dir, "%s/checkpoints", out);
    DIR *d = opendir(dir);
    if (!d) return;
    char *names[4096];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 4096)
        if (strncmp(de->d_name, "step-", 5) == 0) names[n++] = strdup(de->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, by_name); /* zero-padded: name order = step order */
    for (int i = 0; i < n; i++) {
        if (names[i] && i < n - keep) {
            char sub[2 * PATH_BUF], file[3 * PATH_BUF];
            snprintf(sub, sizeof sub, "%s/%s", dir, names[i]);
            DIR *s = opendir(sub);
            while (s && (de = readdir(s))) {
                if (de->d_name[0] == '.') continue;
                snprintf(file, sizeof file, "%s/%s", sub, de->d_name);
                unlink(file);
            }
            if (s) closedir(s);
            rmdir(sub);
        }
        free(names[i]);
    }
}

FILE *metrics_open(const char *out, const char *key, int resume, long step, char *err,
                   size_t errlen)
{
    char field[64];
    snprintf(field, sizeof field, "\"%s\":", key);
    char path[PATH_BUF];
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    if (resume) {
        FILE *in = fopen(path, "r");
        if (in) {
            char tmp[PATH_BUF + 8], line[8192];
            snprintf(tmp, sizeof tmp, "%s.tmp", path);
            FILE *keep = fopen(tmp, "w");
            if (!keep) {
                fclose(in);
                snprintf(err, errlen, "%s: cannot write: %s", tmp, strerror(errno));
                return NULL;
            }
            while (fgets(line, sizeof line, in)) {
                const char *s = strstr(line, field);
                if (s && strtol(s + strlen(field), NULL, 10) > step) continue;
                fputs(line, keep);
            }
            fclose(in);
            if (fclose(keep) != 0 || rename(tmp, path) != 0) {
                snprintf(err, errlen, "%s: cannot rewrite: %s", path, strerror(errno));
                return NULL;
            }
        }
    }
    FILE *f = fopen(path, resume ? "a" : "w");
    if (!f) snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
    return f;
}

int settle_config(const char *kind, const ConfigField *fields, int count, const void *cfg,
                  const char *growable, const char *out, int resume, char *err, size_t errlen)
{
    char path[PATH_BUF];
    json_t *now = config_to_json(kind, fields, count, cfg);
    int rc = 0;
    if (!resume && has_checkpoint(out)) {
        snprintf(err, errlen,
                 "%s already holds a run; resume it with --resume or choose another --out", out);
        rc = -1;
    }
    snprintf(path, sizeof path, "%s/config.json", out);
    if (rc == 0 && resume && access(path, F_OK) == 0) {
        json_t *before = config_load_file(path, err, errlen);
        if (!before) rc = -1;
        const char *key;
        json_t *v;
        json_object_foreach(now, key, v)
        {
            if (rc || strcmp(key, growable) == 0) continue;
            json_t *old = json_object_get(before, key);
            if (!old || !json_equal(old, v)) {
                char *a = json_dumps(v, JSON_ENCODE_ANY);
                char *b = old ? json_dumps(old, JSON_ENCODE_ANY) : NULL;
                snprintf(err, errlen,
                         "config.%s is %s, but the run in %s was started with %s; only %s may "
                         "change on resume",
                         key, a, out, b ? b : "nothing", growable);
                free(a), free(b);
                rc = -1;
            }
        }
        json_decref(before);
    }
    if (rc == 0) {
        char *text = json_dumps(now, JSON_INDENT(2));
        rc = write_file_atomic(path, text, strlen(text), err, errlen);
        free(text);
    }
    json_decref(now);
    return rc;
}

SdeKind sde_kind_named(const char *name)
{
    SdeKind kind = SDE_FLOW;
    sde_kind_from_name(name, &kind);
    return kind;
}

void sampler_settings(SamplerConfig *sc, SamplerKind kind, int steps, double shift, double eta,
                      const char *sde)
{
    sampler_config_default(sc);
    sc->kind = kind;
    sc->steps = steps;
    sc->shift = (float)shift;
    sc->eta = (float)eta;
    sc->sde = sde_kind_named(sde);
}

int checkpoint_folder_new(const char *out, int step, char *dir, size_t dirlen, char *err,
                          size_t errlen)
{
    snprintf(dir, dirlen, "%s/checkpoints/step-%07d", out, step);
    return make_dirs(dir, err, errlen);
}

int checkpoint_folder_publish(const char *out, int step, int keep, char *err, size_t errlen)
{
    char path[PATH_BUF + 32], name[32];
    snprintf(name, sizeof name, "step-%07d", step);
    snprintf(path, sizeof path, "%s/checkpoints/latest", out);
    if (write_file_atomic(path, name, strlen(name), err, errlen)) return -1;
    prune_checkpoints(out, keep);
    return 0;
}

int checkpoint_folder_latest(const char *out, char *dir, size_t dirlen, char *err, size_t errlen)
{
    char path[PATH_BUF + 32], name[64];
    snprintf(path, sizeof path, "%s/checkpoints/latest", out);
    if (read_small_file(path, name, sizeof name, err, errlen)) return -1;
    snprintf(dir, dirlen, "%s/checkpoints/%s", out, name);
    return 0;
}

int has_checkpoint(const char *out)
{
    char path[PATH_BUF + 32];
    snprintf(path, sizeof path, "%s/checkpoints/latest", out);
    return access(path, F_OK) == 0;
}

static int prompt_list_add(PromptList *p, const char *caption)
{
    const char **grown = realloc(p->items, ((size_t)p->count + 1) * sizeof *grown);
    if (!grown) return -1;
    p->items = grown;
    p->items[p->count++] = caption;
    return 0;
}

int prompt_list_load(const char *spec, const char *field, PromptList *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    int train = strcmp(spec, "train") == 0 || strcmp(spec, "all") == 0;
    int heldout = strcmp(spec, "heldout") == 0 || strcmp(spec, "all") == 0;
    if (train || heldout) {
        for (int set = 0; set < 2; set++) {
            if (!(set == 0 ? train : heldout)) continue;
            int n;
            const char *const *prompts =
                world_prompts(set == 0 ? PROMPTS_TRAIN : PROMPTS_HELDOUT, &n);
            for (int i = 0; i < n; i++)
                if (prompt_list_add(out, prompts[i])) goto oom;
        }
        return 0;
    }
    FILE *f = fopen(spec, "rb");
    if (!f) {
        snprintf(err, errlen,
                 "config.%s: \"%s\" is not train, heldout or all, and no file of "
                 "that name can be read: %s",
                 field, spec, strerror(errno));
        return -1;
    }
    size_t cap = 0, len = 0;
    for (int c; (c = fgetc(f)) != EOF;) {
        if (len + 2 > cap) {
            cap = cap ? 2 * cap : 4096;
            char *grown = realloc(out->text, cap);
            if (!grown) {
                fclose(f);
                goto oom;
            }
            out->text = grown;
        }
        out->text[len++] = (char)c;
    }
    fclose(f);
    if (!out->text && !(out->text = calloc(1, 1))) goto oom;
    out->text[len] = '\0';
    int line = 0;
    for (char *s = out->text; s && *s;) {
        char *nl = strchr(s, '\n');
        if (nl) *nl = '\0';
        line++;
        size_t n = strlen(s);
        if (n && s[n - 1] == '\r') s[--n] = '\0';
        if (n && s[0] != '#') {
            Scene scene;
            char why[256];
            if (world_scene_for_caption(s, 0, 0, &scene, why, sizeof why)) {
                snprintf(err, errlen, "config.%s: %s line %d: \"%.80s\": %s", field, spec, line, s,
                         why);
                prompt_list_free(out);
                return -1;
            }
            /* the canonical form (lower case, single spaces) is never longer */
            if (strlen(scene.caption) <= n) strcpy(s, scene.caption);
            if (prompt_list_add(out, s)) goto oom;
        }
        s = nl ? nl + 1 : NULL;
    }
    if (out->count == 0) {
        snprintf(err, errlen, "config.%s: %s holds no prompt", field, spec);
        prompt_list_free(out);
        return -1;
    }
    return 0;
oom:
    prompt_list_free(out);
    snprintf(err, errlen, "config.%s: out of memory", field);
    return -1;
}

void prompt_list_free(PromptList *p)
{
    free(p->items);
    free(p->text);
    memset(p, 0, sizeof *p);
}

int model_config_for(const char *preset, int dim, int depth, int heads, int mlp_ratio,
                     int vocab_size, ModelConfig *mc, char *err, size_t errlen)
{
    model_config_preset(preset, mc);
    if (dim) mc->dim = dim;
    if (depth) mc->depth = depth;
    if (heads) mc->heads = heads;
    if (mlp_ratio) mc->mlp_ratio = mlp_ratio;
    mc->vocab_size = vocab_size;
    return model_config_validate(mc, err, errlen);
}

/* dir/name: the model's weights, or the EMA's in the same layout */
static int save_weights(const TrainState *s, const float *params, const char *dir, const char *name,
                        int step, char *err, size_t errlen)
{
    char path[PATH_BUF + 64];
    CheckpointInfo info = {.step = step};
    snprintf(info.experiment, sizeof info.experiment, "%s", s->experiment);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    Model view = *s->model;
    view.params = (float *)params;
    return checkpoint_save(path, &view, s->vocab, &info, err, errlen);
}

int train_checkpoint_save(const TrainState *s, const char *out, int step, int keep, char *err,
                          size_t errlen)
{
    char dir[PATH_BUF], path[PATH_BUF + 64];
    if (checkpoint_folder_new(out, step, dir, sizeof dir, err, errlen)) return -1;
    policy_pull(s->pol, s->opt);
    if (save_weights(s, s->model->params, dir, "model.safetensors", step, err, errlen) ||
        (s->ema && save_weights(s, s->ema, dir, "ema.safetensors", step, err, errlen)))
        return -1;
    snprintf(path, sizeof path, "%s/train_state.safetensors", dir);
    if (train_state_save(path, s->opt, s->rng, step, err, errlen)) return -1;
    return checkpoint_folder_publish(out, step, keep, err, errlen);
}

/* Copies the weights of dir/name into params, which must hold the model's size. */
static int load_weights(const TrainState *s, const char *dir, const char *name, float *params,
                        CheckpointInfo *info, char *err, size_t errlen)
{
    char path[PATH_BUF + 64];
    Model m;
    Vocab vocab;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (checkpoint_load(path, &m, &vocab, info, err, errlen)) return -1;
    vocab_free(&vocab);
    int ok = m.num_params == s->model->num_params;
    if (ok) memcpy(params, m.params, m.num_params * sizeof(float));
    model_free(&m);
    if (!ok) snprintf(err, errlen, "%s: the model's size differs from this config's", path);
    return ok ? 0 : -1;
}

int train_checkpoint_load(const TrainState *s, const char *out, char *err, size_t errlen)
{
    char path[PATH_BUF + 64], dir[PATH_BUF];
    CheckpointInfo info;
    if (checkpoint_folder_latest(out, dir, sizeof dir, err, errlen) ||
        load_weights(s, dir, "model.safetensors", s->model->params, &info, err, errlen) ||
        (s->ema && load_weights(s, dir, "ema.safetensors", s->ema, NULL, err, errlen)))
        return -1;
    int64_t iteration;
    snprintf(path, sizeof path, "%s/train_state.safetensors", dir);
    if (train_state_load(path, s->opt, s->rng, &iteration, err, errlen)) return -1;
    if (iteration != info.step) {
        snprintf(err, errlen, "%s: train state at step %lld but weights at step %lld", dir,
                 (long long)iteration, (long long)info.step);
        return -1;
    }
    policy_push(s->pol, s->opt);
    return (int)iteration;
}

int train_model_save(const TrainState *s, const char *out, int steps, char *err, size_t errlen)
{
    policy_pull(s->pol, NULL);
    return save_weights(s, s->model->params, out, "model.safetensors", steps, err, errlen) ||
                   (s->ema &&
                    save_weights(s, s->ema, out, "model_ema.safetensors", steps, err, errlen))
               ? -1
               : 0;
}

double warmup_cosine_lr(double lr, int warmup, int steps, double min_ratio, int step)
{
    if (step < warmup) return lr * (step + 1) / warmup;
    double span = steps - warmup;
    double progress = span > 1 ? (step - warmup) / (span - 1) : 1.0;
    double cosine = 0.5 * (1.0 + cos(M_PI * progress));
    return lr * (min_ratio + (1.0 - min_ratio) * cosine);
}
