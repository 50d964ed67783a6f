/*
 * checkpoint.c: model checkpoints and training state on top of common/safetensors.c (see
 * checkpoint.h for the file contents). The config travels as JSON inside __metadata__ and is
 * read through one table of fields, so the writer and the strict reader cannot drift apart.
 */
#include "checkpoint.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonutil.h"
#include "safetensors.h"

static void ck_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void ck_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Prefixes err (already holding a message) with "<path>: ". */
static void ck_prefix(char *err, size_t errlen, const char *path)
{
    if (!err || errlen == 0) return;
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", err);
    snprintf(err, errlen, "%s: %s", path, tmp);
}

/* ---------------------------------------------------------------------------------------------
 * the config as JSON
 */

static const struct {
    const char *key;
    size_t offset;
} config_fields[] = {
    {"image_size", offsetof(ModelConfig, image_size)},
    {"channels", offsetof(ModelConfig, channels)},
    {"patch", offsetof(ModelConfig, patch)},
    {"dim", offsetof(ModelConfig, dim)},
    {"depth", offsetof(ModelConfig, depth)},
    {"heads", offsetof(ModelConfig, heads)},
    {"mlp_ratio", offsetof(ModelConfig, mlp_ratio)},
    {"text_len", offsetof(ModelConfig, text_len)},
    {"vocab_size", offsetof(ModelConfig, vocab_size)},
};
#define NUM_CONFIG_FIELDS (sizeof config_fields / sizeof config_fields[0])

static int *config_field(ModelConfig *c, size_t i)
{
    return (int *)((char *)c + config_fields[i].offset);
}

/* Compact JSON of cfg, keys in table order; malloc'd, NULL when memory runs out. */
static char *config_to_json(const ModelConfig *cfg)
{
    json_t *o = json_object();
    int bad = !o;
    ModelConfig c = *cfg;
    for (size_t i = 0; !bad && i < NUM_CONFIG_FIELDS; i++)
        bad = json_object_set_new(o, config_fields[i].key, json_integer(*config_field(&c, i)));
    char *s = bad ? NULL : json_dumps(o, JSON_COMPACT);
    json_decref(o);
    return s;
}

/* Parses the config JSON strictly (no unknown or missing keys, integers in int range) and
 * validates the result. Returns 0, or -1 with a message (no path prefix). */
static int config_from_json(const char *text, ModelConfig *cfg, char *err, size_t errlen)
{
    json_error_t je;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        ck_err(err, errlen, "metadata 'config' is not valid JSON (line %d, column %d): %s", je.line,
               je.column, je.text);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(root)) {
        ck_err(err, errlen, "metadata 'config' is a JSON %s, expected an object",
               json_type_name(root));
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        size_t i = 0;
        while (i < NUM_CONFIG_FIELDS && strcmp(config_fields[i].key, key) != 0) i++;
        if (i == NUM_CONFIG_FIELDS) {
            ck_err(err, errlen, "config: unknown key '%s'", key);
            goto out;
        }
    }
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < NUM_CONFIG_FIELDS; i++) {
        const char *k = config_fields[i].key;
        json_t *v = json_object_get(root, k);
        if (!v) {
            ck_err(err, errlen, "config: missing key '%s'", k);
            goto out;
        }
        if (!json_is_integer(v)) {
            ck_err(err, errlen, "config.%s is a JSON %s, expected an integer", k,
                   json_type_name(v));
            goto out;
        }
        json_int_t x = json_integer_value(v);
        if (x < INT_MIN || x > INT_MAX) {
            ck_err(err, errlen, "config.%s = %" JSON_INTEGER_FORMAT " does not fit an int", k, x);
            goto out;
        }
        *config_field(cfg, i) = (int)x;
    }
    rc = model_config_validate(cfg, err, errlen);
out:
    json_decref(root);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * exact decimal and float metadata
 */

/* Parses a non-negative decimal integer (digits only, no sign or spaces) up to max.
 * Returns 0, or -1. */
static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!s || !*s) return -1;
    for (const char *c = s; *c; c++)
        if (*c < '0' || *c > '9') return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max) return -1;
    *out = (uint64_t)v;
    return 0;
}

/* Parses a float written with "%.9g" (or any full strtof syntax). Returns 0, or -1. */
static int parse_float(const char *s, float *out)
{
    if (!s || !*s || *s == ' ' || *s == '\t' || *s == '\n') return -1;
    char *end;
    float v = strtof(s, &end);
    if (*end) return -1;
    *out = v;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * checkpoints
 */

int checkpoint_save(const char *path, const Model *m, const Vocab *vocab,
                    const CheckpointInfo *info, char *err, size_t errlen)
{
    if (vocab->size != m->cfg.vocab_size) {
        ck_err(err, errlen, "%s: the vocabulary has %d words but config.vocab_size = %d", path,
               vocab->size, m->cfg.vocab_size);
        return -1;
    }
    int rc = -1;
    char *config = config_to_json(&m->cfg);
    char *words = vocab_to_text(vocab);
    StWriter *w = st_writer_new();
    if (!config || !words || !w) {
        ck_err(err, errlen, "%s: out of memory", path);
        goto out;
    }
    st_writer_meta(w, "format", CHECKPOINT_FORMAT);
    st_writer_meta(w, "config", config);
    st_writer_meta(w, "vocab", words);
    if (info) {
        char step[32];
        if (info->step < 0) {
            ck_err(err, errlen, "%s: negative step %" PRId64, path, info->step);
            goto out;
        }
        if (info->experiment[0]) st_writer_meta(w, "experiment", info->experiment);
        snprintf(step, sizeof step, "%" PRId64, info->step);
        st_writer_meta(w, "step", step);
    }
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo *t = &m->tensors[i];
        int64_t shape[2] = {t->shape[0], t->shape[1]};
        st_writer_add(w, t->name, ST_F32, t->ndim, shape, m->params + t->offset);
    }
    rc = st_writer_save(w, path, err, errlen); /* reports any add/meta failure too */
out:
    st_writer_free(w);
    free(words);
    free(config);
    return rc;
}

/* Reads the metadata of an open checkpoint into cfg, vocab and info. */
static int checkpoint_read_meta(const StFile *f, ModelConfig *cfg, Vocab *vocab,
                                CheckpointInfo *info, char *err, size_t errlen)
{
    const char *format = st_meta(f, "format");
    if (!format) {
        ck_err(err, errlen,
               "__metadata__ has no 'format' (expected \"%s\"); not a chunkgrpo "
               "checkpoint?",
               CHECKPOINT_FORMAT);
        return -1;
    }
    if (strcmp(format, CHECKPOINT_FORMAT) != 0) {
        ck_err(err, errlen, "format is \"%s\", expected \"%s\"", format, CHECKPOINT_FORMAT);
        return -1;
    }
    const char *config = st_meta(f, "config");
    if (!config) {
        ck_err(err, errlen, "__metadata__ has no 'config'");
        return -1;
    }
    if (config_from_json(config, cfg, err, errlen) != 0) return -1;
    const char *words = st_meta(f, "vocab");
    if (!words) {
        ck_err(err, errlen, "__metadata__ has no 'vocab'");
        return -1;
    }
    if (vocab_from_text(vocab, words, err, errlen) != 0) return -1;
    if (vocab->size != cfg->vocab_size) {
        ck_err(err, errlen, "config.vocab_size = %d but the vocabulary has %d words",
               cfg->vocab_size, vocab->size);
        return -1;
    }
    const char *exp = st_meta(f, "experiment");
    const char *step = st_meta(f, "step");
    if (exp && strlen(exp) >= CHECKPOINT_EXPERIMENT_MAX) {
        ck_err(err, errlen, "metadata 'experiment' is %zu bytes, longer than the %d allowed",
               strlen(exp), CHECKPOINT_EXPERIMENT_MAX - 1);
        return -1;
    }
    uint64_t s = 0;
    if (step && parse_u64(step, INT64_MAX, &s) != 0) {
        ck_err(err, errlen, "metadata 'step' = \"%s\" is not a non-negative decimal integer", step);
        return -1;
    }
    if (info) {
        memset(info, 0, sizeof *info);
        if (exp) snprintf(info->experiment, sizeof info->experiment, "%s", exp);
        info->step = (int64_t)s;
    }
    return 0;
}

int checkpoint_load(const char *path, Model *m, Vocab *vocab, CheckpointInfo *info, char *err,
                    size_t errlen)
{
    memset(m, 0, sizeof *m);
    memset(vocab, 0, sizeof *vocab);
    StFile *f = NULL;
    if (st_open(path, &f, err, errlen) != 0) return -1; /* the message already names the file */

    ModelConfig cfg;
    if (checkpoint_read_meta(f, &cfg, vocab, info, err, errlen) != 0) {
        ck_prefix(err, errlen, path);
        goto fail;
    }
    if (model_init(m, &cfg) != 0) {
        ck_err(err, errlen, "%s: out of memory for the model's parameters", path);
        goto fail;
    }
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo *t = &m->tensors[i];
        int64_t shape[2] = {t->shape[0], t->shape[1]};
        const float *src = st_get_f32(f, t->name, t->ndim, shape, err, errlen);
        if (!src) goto fail; /* names the file, the tensor, and what was expected */
        memcpy(m->params + t->offset, src, t->numel * sizeof(float));
    }
    for (int i = 0; i < st_count(f); i++) {
        const StTensor *t = st_tensor(f, i);
        if (!model_find_tensor(m, t->name)) {
            ck_err(err, errlen,
                   "%s: unexpected tensor '%s' (not part of the model for this "
                   "config)",
                   path, t->name);
            goto fail;
        }
    }
    st_close(f);
    return 0;
fail:
    st_close(f);
    model_free(m);
    memset(m, 0, sizeof *m);
    vocab_free(vocab);
    memset(vocab, 0, sizeof *vocab);
    return -1;
}

/* ---------------------------------------------------------------------------------------------
 * training state
 */

static const struct {
    const char *key;
    size_t offset;
} adamw_fields[] = {
    {"adamw.lr", offsetof(AdamWConfig, lr)},
    {"adamw.beta1", offsetof(AdamWConfig, beta1)},
    {"adamw.beta2", offsetof(AdamWConfig, beta2)},
    {"adamw.eps", offsetof(AdamWConfig, eps)},
    {"adamw.weight_decay", offsetof(AdamWConfig, weight_decay)},
    {"adamw.grad_clip", offsetof(AdamWConfig, grad_clip)},
};
#define NUM_ADAMW_FIELDS (sizeof adamw_fields / sizeof adamw_fields[0])

int train_state_save(const char *path, const AdamW *opt, const Rng *rng, int64_t iteration,
                     char *err, size_t errlen)
{
    if (iteration < 0 || opt->step < 0) {
        ck_err(err, errlen, "%s: negative iteration (%" PRId64 ") or adamw step (%" PRId64 ")",
               path, iteration, opt->step);
        return -1;
    }
    StWriter *w = st_writer_new();
    if (!w) {
        ck_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    char buf[64];
    st_writer_meta(w, "format", TRAIN_STATE_FORMAT);
    snprintf(buf, sizeof buf, "%" PRId64, iteration);
    st_writer_meta(w, "iteration", buf);
    snprintf(buf, sizeof buf, "%" PRId64, opt->step);
    st_writer_meta(w, "adamw.step", buf);
    snprintf(buf, sizeof buf, "%" PRIu64, rng->key);
    st_writer_meta(w, "rng.key", buf);
    snprintf(buf, sizeof buf, "%" PRIu64, rng->counter);
    st_writer_meta(w, "rng.counter", buf);
    for (size_t i = 0; i < NUM_ADAMW_FIELDS; i++) {
        float v = *(const float *)((const char *)&opt->cfg + adamw_fields[i].offset);
        snprintf(buf, sizeof buf, "%.9g", (double)v);
        st_writer_meta(w, adamw_fields[i].key, buf);
    }
    int64_t shape[1] = {(int64_t)opt->n};
    st_writer_add(w, "adamw.m", ST_F32, 1, shape, opt->m);
    st_writer_add(w, "adamw.v", ST_F32, 1, shape, opt->v);
    int rc = st_writer_save(w, path, err, errlen);
    st_writer_free(w);
    return rc;
}

/* A required metadata value, or NULL with a message. */
static const char *need_meta(const StFile *f, const char *key, char *err, size_t errlen)
{
    const char *v = st_meta(f, key);
    if (!v) ck_err(err, errlen, "%s: __metadata__ has no '%s'", st_label(f), key);
    return v;
}

int train_state_load(const char *path, AdamW *opt, Rng *rng, int64_t *iteration, char *err,
                     size_t errlen)
{
    StFile *f = NULL;
    if (st_open(path, &f, err, errlen) != 0) return -1;
    int rc = -1;
    const char *v;

    if (!(v = need_meta(f, "format", err, errlen))) goto out;
    if (strcmp(v, TRAIN_STATE_FORMAT) != 0) {
        ck_err(err, errlen, "%s: format is \"%s\", expected \"%s\"", path, v, TRAIN_STATE_FORMAT);
        goto out;
    }

    /* Parse everything into locals first: a failure must leave opt, rng and iteration alone. */
    static const struct {
        const char *key;
        uint64_t max;
    } ints[] = {
        {"iteration", INT64_MAX},
        {"adamw.step", INT64_MAX},
        {"rng.key", UINT64_MAX},
        {"rng.counter", UINT64_MAX},
    };
    uint64_t iv[4];
    for (size_t i = 0; i < 4; i++) {
        if (!(v = need_meta(f, ints[i].key, err, errlen))) goto out;
        if (parse_u64(v, ints[i].max, &iv[i]) != 0) {
            ck_err(err, errlen,
                   "%s: metadata '%s' = \"%s\" is not a decimal integer in [0, %" PRIu64 "]", path,
                   ints[i].key, v, ints[i].max);
            goto out;
        }
    }
    AdamWConfig cfg = opt->cfg;
    for (size_t i = 0; i < NUM_ADAMW_FIELDS; i++) {
        if (!(v = need_meta(f, adamw_fields[i].key, err, errlen))) goto out;
        float *dst = (float *)((char *)&cfg + adamw_fields[i].offset);
        if (parse_float(v, dst) != 0) {
            ck_err(err, errlen, "%s: metadata '%s' = \"%s\" is not a number", path,
                   adamw_fields[i].key, v);
            goto out;
        }
    }

    const StTensor *tm = st_find(f, "adamw.m");
    if (tm && tm->ndim == 1 && (uint64_t)tm->shape[0] != (uint64_t)opt->n) {
        ck_err(err, errlen,
               "%s: the state holds moments for %" PRId64 " parameters, the model "
               "has %zu",
               path, tm->shape[0], opt->n);
        goto out;
    }
    int64_t shape[1] = {(int64_t)opt->n};
    const float *m = st_get_f32(f, "adamw.m", 1, shape, err, errlen);
    const float *vv = m ? st_get_f32(f, "adamw.v", 1, shape, err, errlen) : NULL;
    if (!m || !vv) goto out;
    for (int i = 0; i < st_count(f); i++) {
        const char *name = st_tensor(f, i)->name;
        if (strcmp(name, "adamw.m") != 0 && strcmp(name, "adamw.v") != 0) {
            ck_err(err, errlen, "%s: unexpected tensor '%s' in a train state", path, name);
            goto out;
        }
    }

    if (opt->n) {
        memcpy(opt->m, m, opt->n * sizeof(float));
        memcpy(opt->v, vv, opt->n * sizeof(float));
    }
    opt->cfg = cfg;
    opt->step = (int64_t)iv[1];
    rng->key = iv[2];
    rng->counter = iv[3];
    *iteration = (int64_t)iv[0];
    rc = 0;
out:
    st_close(f);
    return rc;
}
