/*
 * test_checkpoint.c: model checkpoints and training state (worker/checkpoint.c).
 *
 * Round trips are bit-exact (a tiny model with seeded weights; AdamW moments, hyperparameters
 * and RNG state). Every malformed checkpoint is built with st_writer from a good model with one
 * thing changed, and the test asserts that loading fails with a message naming the tensor, key
 * or field, and leaves the model and vocabulary freed (zeroed; ASan/valgrind catch leaks).
 */
#include "checkpoint.h"
#include "safetensors.h"
#include "test.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int contains(const char *s, const char *needle) { return strstr(s, needle) != NULL; }

static const char *const words[] = {"<pad>", "<unk>", "red", "green", "blue", "circle", "square"};
#define NUM_WORDS 7

/* A tiny model with seeded weights and its vocabulary. Exits on failure (nothing to test). */
static void make_model(Model *m, Vocab *v, uint64_t seed)
{
    char err[256];
    ModelConfig cfg;
    if (model_config_preset("tiny", &cfg) != 0 ||
        vocab_from_words(v, words, NUM_WORDS, err, sizeof err) != 0) {
        fprintf(stderr, "setup: %s\n", err);
        exit(2);
    }
    cfg.vocab_size = v->size;
    if (model_init(m, &cfg) != 0) {
        fprintf(stderr, "setup: model_init failed\n");
        exit(2);
    }
    model_init_weights(m, seed);
    /* adaLN-Zero leaves some tensors zero; make every tensor distinct so a swap would show */
    for (size_t i = 0; i < m->num_params; i++)
        if (m->params[i] == 0.0f)
            m->params[i] = (float)i * 1e-7f;
}

/* Expects checkpoint_load to fail with every phrase (NULL-terminated) in the message, and the
 * model and vocabulary to come back zeroed. */
static void expect_load_fails(int line, const char *path, ...)
{
    Model m;
    Vocab v;
    CheckpointInfo info;
    char err[512] = "";
    memset(&m, 0x5A, sizeof m); /* "uninitialised" */
    memset(&v, 0x5A, sizeof v);
    int rc = checkpoint_load(path, &m, &v, &info, err, sizeof err);
    CHECK_MSG(rc == -1, "line %d: %s loaded", line, path);
    if (rc == 0) {
        model_free(&m);
        vocab_free(&v);
        return;
    }
    CHECK_MSG(m.params == NULL && m.tensors == NULL && m.num_tensors == 0, "line %d", line);
    CHECK_MSG(v.words == NULL && v.size == 0, "line %d", line);
    CHECK_MSG(contains(err, path), "line %d: message does not name the file: %s", line, err);
    va_list ap;
    va_start(ap, path);
    for (const char *ph; (ph = va_arg(ap, const char *));)
        CHECK_MSG(contains(err, ph), "line %d: '%s' not in: %s", line, ph, err);
    va_end(ap);
}
#define EXPECT_LOAD_FAILS(path, ...) expect_load_fails(__LINE__, (path), __VA_ARGS__, (const char *)NULL)

/* ---------------------------------------------------------------------------------------------
 * building variants of a good checkpoint with the writer
 */

typedef struct {
    const char *skip;     /* leave this tensor out */
    const char *reshape;  /* write this tensor with its two dimensions swapped (1-D: one more) */
    const char *retype;   /* write this tensor with dtype retype_dt */
    StDtype retype_dt;
    const char *extra;    /* add a tensor of this name, F32 [4] */
    const char *format;   /* NULL: the right one; "": leave it out */
    const char *config;   /* NULL: the right one; "": leave it out */
    const char *vocab;    /* NULL: the right one; "": leave it out */
    const char *step;     /* NULL: leave it out */
    const char *experiment;
    const char *note;     /* an extra metadata key */
} Variant;

static char good_config[256];

static void write_variant(const char *path, const Model *m, const Vocab *v, const Variant *o)
{
    StWriter *w = st_writer_new();
    char *vt = vocab_to_text(v);
    const char *fmt = o->format ? o->format : CHECKPOINT_FORMAT;
    const char *cfg = o->config ? o->config : good_config;
    const char *voc = o->vocab ? o->vocab : vt;
    if (*fmt)
        st_writer_meta(w, "format", fmt);
    if (*cfg)
        st_writer_meta(w, "config", cfg);
    if (*voc)
        st_writer_meta(w, "vocab", voc);
    if (o->step)
        st_writer_meta(w, "step", o->step);
    if (o->experiment)
        st_writer_meta(w, "experiment", o->experiment);
    if (o->note)
        st_writer_meta(w, "note", o->note);
    double *wide = NULL;
    static const float extra[4] = {1, 2, 3, 4};
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo *t = &m->tensors[i];
        const float *data = m->params + t->offset;
        int64_t shape[2] = {t->shape[0], t->shape[1]};
        int ndim = t->ndim;
        StDtype dt = ST_F32;
        if (o->skip && strcmp(o->skip, t->name) == 0)
            continue;
        if (o->reshape && strcmp(o->reshape, t->name) == 0) {
            if (ndim == 2) {
                shape[0] = t->shape[1];
                shape[1] = t->shape[0];
            } else {
                ndim = 2;
                shape[1] = 1; /* [n] -> [n, 1]: same bytes, different rank */
            }
        }
        const void *bytes = data;
        if (o->retype && strcmp(o->retype, t->name) == 0) {
            dt = o->retype_dt;
            if (st_dtype_size(dt) == 8) {
                wide = malloc(t->numel * sizeof *wide);
                for (size_t k = 0; k < t->numel; k++)
                    wide[k] = data[k];
                bytes = wide;
            }
        }
        st_writer_add(w, t->name, dt, ndim, shape, bytes);
    }
    if (o->extra) {
        int64_t s4[1] = {4};
        st_writer_add(w, o->extra, ST_F32, 1, s4, extra);
    }
    char err[256];
    if (st_writer_save(w, path, err, sizeof err) != 0) {
        fprintf(stderr, "write_variant: %s\n", err);
        exit(2);
    }
    st_writer_free(w);
    free(wide);
    free(vt);
}

/* ---------------------------------------------------------------------------------------------
 * round trips
 */

static void test_round_trip(void)
{
    Model m, m2;
    Vocab v, v2;
    make_model(&m, &v, 1234);
    char err[512] = "";
    const char *path = test_tmp_path("ckpt.safetensors");
    CheckpointInfo info = {.step = 4321};
    snprintf(info.experiment, sizeof info.experiment, "exp-0007 \"quoted\"");
    CHECK_MSG(checkpoint_save(path, &m, &v, &info, err, sizeof err) == 0, "%s", err);

    CheckpointInfo got;
    memset(&got, 0x33, sizeof got);
    CHECK_MSG(checkpoint_load(path, &m2, &v2, &got, err, sizeof err) == 0, "%s", err);
    if (!m2.params) {
        model_free(&m);
        vocab_free(&v);
        return;
    }
    CHECK(memcmp(&m.cfg, &m2.cfg, sizeof m.cfg) == 0);
    CHECK(m2.num_params == m.num_params && m2.num_tensors == m.num_tensors);
    CHECK(memcmp(m.params, m2.params, m.num_params * sizeof(float)) == 0); /* bit-exact */
    int zero_grads = 1;
    for (size_t i = 0; i < m2.num_params; i++)
        zero_grads &= m2.grads[i] == 0.0f;
    CHECK(zero_grads);
    CHECK(v2.size == NUM_WORDS);
    for (int i = 0; i < v2.size && i < NUM_WORDS; i++)
        CHECK(strcmp(v2.words[i], words[i]) == 0);
    CHECK(vocab_lookup(&v2, "circle", 6) == 5);
    CHECK(got.step == 4321 && strcmp(got.experiment, "exp-0007 \"quoted\"") == 0);

    /* the file is what the spec says: metadata, and tensors in the model's order, all F32 */
    StFile *f;
    CHECK_MSG(st_open(path, &f, err, sizeof err) == 0, "%s", err);
    if (f) {
        CHECK(strcmp(st_meta(f, "format"), "chunkgrpo-dit/1") == 0);
        CHECK_MSG(strcmp(st_meta(f, "config"), "{\"image_size\":16,\"channels\":3,\"patch\":4,"
                         "\"dim\":32,\"depth\":2,\"heads\":2,\"mlp_ratio\":4,\"text_len\":8,"
                         "\"vocab_size\":7}") == 0, "%s", st_meta(f, "config"));
        CHECK(strcmp(st_meta(f, "vocab"), "<pad>\n<unk>\nred\ngreen\nblue\ncircle\nsquare") == 0);
        CHECK(strcmp(st_meta(f, "step"), "4321") == 0);
        CHECK(st_count(f) == m.num_tensors);
        for (int i = 0; i < st_count(f) && i < m.num_tensors; i++) {
            const StTensor *t = st_tensor(f, i);
            CHECK(strcmp(t->name, m.tensors[i].name) == 0 && t->dtype == ST_F32);
        }
        CHECK(strcmp(st_tensor(f, 0)->name, "txt.tok_emb") == 0);
        st_close(f);
    }

    /* no info: no experiment/step in the file; loading reports "" and 0 */
    model_free(&m2);
    vocab_free(&v2);
    CHECK_MSG(checkpoint_save(path, &m, &v, NULL, err, sizeof err) == 0, "%s", err);
    CHECK_MSG(checkpoint_load(path, &m2, &v2, &got, err, sizeof err) == 0, "%s", err);
    CHECK(got.step == 0 && got.experiment[0] == '\0');
    CHECK(m2.params && memcmp(m.params, m2.params, m.num_params * sizeof(float)) == 0);
    model_free(&m2);
    vocab_free(&v2);
    /* info may be NULL on load too */
    CHECK_MSG(checkpoint_load(path, &m2, &v2, NULL, err, sizeof err) == 0, "%s", err);
    model_free(&m2);
    vocab_free(&v2);
    model_free(&m);
    vocab_free(&v);
}

static void test_save_errors(void)
{
    Model m;
    Vocab v;
    make_model(&m, &v, 1);
    char err[512] = "";
    m.cfg.vocab_size = 8;
    CHECK(checkpoint_save(test_tmp_path("x"), &m, &v, NULL, err, sizeof err) == -1);
    CHECK_MSG(contains(err, "vocabulary has 7 words") && contains(err, "vocab_size = 8"), "%s",
              err);
    m.cfg.vocab_size = 7;
    CHECK(checkpoint_save(test_tmp_path("no/dir/x"), &m, &v, NULL, err, sizeof err) == -1);
    CHECK_MSG(contains(err, "no/dir/x"), "%s", err);
    CheckpointInfo info = {.step = -3};
    CHECK(checkpoint_save(test_tmp_path("x"), &m, &v, &info, err, sizeof err) == -1);
    CHECK_MSG(contains(err, "negative step"), "%s", err);
    CHECK(access(test_tmp_path("x"), F_OK) != 0);
    model_free(&m);
    vocab_free(&v);
}

/* ---------------------------------------------------------------------------------------------
 * malformed checkpoints
 */

static Model gm;
static Vocab gv;

static void variant(const char *name, const Variant *o)
{
    write_variant(test_tmp_path(name), &gm, &gv, o);
}

static void test_variant_control(void)
{
    /* the variant writer with no change gives a loadable, identical model */
    Variant o = {0};
    variant("control", &o);
    Model m;
    Vocab v;
    char err[512] = "";
    CHECK_MSG(checkpoint_load(test_tmp_path("control"), &m, &v, NULL, err, sizeof err) == 0, "%s",
              err);
    if (m.params) {
        CHECK(memcmp(m.params, gm.params, gm.num_params * sizeof(float)) == 0);
        model_free(&m);
        vocab_free(&v);
    }
}

static void test_bad_tensors(void)
{
    variant("missing", &(Variant){.skip = "blocks.1.k_norm.weight"});
    EXPECT_LOAD_FAILS(test_tmp_path("missing"), "tensor 'blocks.1.k_norm.weight' not found");

    variant("misshaped", &(Variant){.reshape = "blocks.0.fc1.weight"});
    EXPECT_LOAD_FAILS(test_tmp_path("misshaped"), "tensor 'blocks.0.fc1.weight' has shape [32, 128], "
                      "expected [128, 32]");
    variant("rank", &(Variant){.reshape = "final.linear.bias"});
    EXPECT_LOAD_FAILS(test_tmp_path("rank"), "tensor 'final.linear.bias' has shape [48, 1], "
                      "expected [48]");

    variant("f64", &(Variant){.retype = "img.pos_emb", .retype_dt = ST_F64});
    EXPECT_LOAD_FAILS(test_tmp_path("f64"), "tensor 'img.pos_emb' has dtype F64, expected F32");
    variant("i32", &(Variant){.retype = "txt.tok_emb", .retype_dt = ST_I32});
    EXPECT_LOAD_FAILS(test_tmp_path("i32"), "tensor 'txt.tok_emb' has dtype I32, expected F32");

    variant("extra", &(Variant){.extra = "blocks.2.qkv.weight"});
    EXPECT_LOAD_FAILS(test_tmp_path("extra"), "unexpected tensor 'blocks.2.qkv.weight'");
    variant("extra2", &(Variant){.extra = "ema.txt.tok_emb"});
    EXPECT_LOAD_FAILS(test_tmp_path("extra2"), "unexpected tensor 'ema.txt.tok_emb'");
}

static void test_bad_config(void)
{
    /* the config says dim 64, the tensors were made for 32: the first tensor tells */
    char cfg[256];
    snprintf(cfg, sizeof cfg, "{\"image_size\":16,\"channels\":3,\"patch\":4,\"dim\":64,"
             "\"depth\":2,\"heads\":2,\"mlp_ratio\":4,\"text_len\":8,\"vocab_size\":7}");
    variant("dim", &(Variant){.config = cfg});
    EXPECT_LOAD_FAILS(test_tmp_path("dim"), "tensor 'txt.tok_emb' has shape [7, 32], expected [7, 64]");
    /* depth 1 in the config: block 1's tensors are unexpected */
    variant("depth", &(Variant){.config = "{\"image_size\":16,\"channels\":3,\"patch\":4,"
                                          "\"dim\":32,\"depth\":1,\"heads\":2,\"mlp_ratio\":4,"
                                          "\"text_len\":8,\"vocab_size\":7}"});
    EXPECT_LOAD_FAILS(test_tmp_path("depth"), "unexpected tensor 'blocks.1.ada.weight'");

    static const struct {
        const char *config;
        const char *phrase;
    } cases[] = {
        {"{\"image_size\":16,\"channels\":3,\"patch\":4,\"dim\":32,\"depth\":2,\"mlp_ratio\":4,"
         "\"text_len\":8,\"vocab_size\":7}", "config: missing key 'heads'"},
        {"{\"image_size\":16,\"channels\":3,\"patch\":4,\"dim\":32,\"depth\":2,\"heads\":2,"
         "\"mlp_ratio\":4,\"text_len\":8,\"vocab_size\":7,\"dropout\":0}",
         "config: unknown key 'dropout'"},
        {"{\"image_size\":16,\"channels\":3,\"patch\":4,\"dim\":32.0,\"depth\":2,\"heads\":2,"
         "\"mlp_ratio\":4,\"text_len\":8,\"vocab_size\":7}",
         "config.dim is a JSON real, expected an integer"},
        {"{\"image_size\":16,\"channels\":3,\"patch\":\"4\",\"dim\":32,\"depth\":2,\"heads\":2,"
         "\"mlp_ratio\":4,\"text_len\":8,\"vocab_size\":7}", "config.patch is a JSON string"},
        {"{\"image_size\":16,\"channels\":3,\"patch\":4,\"dim\":32,\"depth\":2,\"heads\":2,"
         "\"mlp_ratio\":4,\"text_len\":8,\"vocab_size\":7,\"depth\":3}", "duplicate"},
        {"{\"image_size\":16,\"channels\":3,\"patch\":4,\"dim\":32,\"depth\":0,\"heads\":2,"
         "\"mlp_ratio\":4,\"text_len\":8,\"vocab_size\":7}", "config.depth = 0 is out of range"},
        {"{\"image_size\":16,\"channels\":3,\"patch\":4,\"dim\":32,\"depth\":2,\"heads\":2,"
         "\"mlp_ratio\":4,\"text_len\":4294967304,\"vocab_size\":7}",
         "config.text_len = 4294967304 does not fit an int"},
        {"{\"image_size\":16,\"channels\":3,\"patch\":5,\"dim\":32,\"depth\":2,\"heads\":2,"
         "\"mlp_ratio\":4,\"text_len\":8,\"vocab_size\":7}", "config.patch = 5 does not divide"},
        {"{\"image_size\":16,", "metadata 'config' is not valid JSON (line 1"},
        {"[16, 3]", "metadata 'config' is a JSON array, expected an object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        variant("cfg", &(Variant){.config = cases[i].config});
        expect_load_fails((int)(1000 + i), test_tmp_path("cfg"), cases[i].phrase, (const char *)NULL);
    }
}

static void test_bad_metadata(void)
{
    variant("fmt", &(Variant){.format = "chunkgrpo-dit/2"});
    EXPECT_LOAD_FAILS(test_tmp_path("fmt"), "format is \"chunkgrpo-dit/2\", expected \"chunkgrpo-dit/1\"");
    variant("nofmt", &(Variant){.format = ""});
    EXPECT_LOAD_FAILS(test_tmp_path("nofmt"), "has no 'format'");
    variant("nocfg", &(Variant){.config = ""});
    EXPECT_LOAD_FAILS(test_tmp_path("nocfg"), "has no 'config'");
    variant("novocab", &(Variant){.vocab = ""});
    EXPECT_LOAD_FAILS(test_tmp_path("novocab"), "has no 'vocab'");

    /* 6 words against vocab_size 7 */
    variant("vsize", &(Variant){.vocab = "<pad>\n<unk>\nred\ngreen\nblue\ncircle"});
    EXPECT_LOAD_FAILS(test_tmp_path("vsize"), "config.vocab_size = 7 but the vocabulary has 6 words");
    variant("vbad", &(Variant){.vocab = "<pad>\n<unk>\nred\nred\nblue\ncircle\nsquare"});
    EXPECT_LOAD_FAILS(test_tmp_path("vbad"), "vocab");

    variant("step", &(Variant){.step = "-5"});
    EXPECT_LOAD_FAILS(test_tmp_path("step"), "metadata 'step' = \"-5\"");
    variant("step2", &(Variant){.step = "12x"});
    EXPECT_LOAD_FAILS(test_tmp_path("step2"), "metadata 'step'");
    variant("step3", &(Variant){.step = "9223372036854775808"});
    EXPECT_LOAD_FAILS(test_tmp_path("step3"), "metadata 'step'");
    char longexp[200];
    memset(longexp, 'e', sizeof longexp - 1);
    longexp[sizeof longexp - 1] = '\0';
    variant("exp", &(Variant){.experiment = longexp});
    EXPECT_LOAD_FAILS(test_tmp_path("exp"), "metadata 'experiment' is 199 bytes");

    /* unknown metadata keys are allowed (tools may annotate), and a valid step/experiment loads */
    variant("note", &(Variant){.note = "exported by hand", .step = "12", .experiment = "e1"});
    Model m;
    Vocab v;
    CheckpointInfo info;
    char err[512] = "";
    CHECK_MSG(checkpoint_load(test_tmp_path("note"), &m, &v, &info, err, sizeof err) == 0, "%s", err);
    if (m.params) {
        CHECK(info.step == 12 && strcmp(info.experiment, "e1") == 0);
        model_free(&m);
        vocab_free(&v);
    }
}

static void test_truncated_and_garbage(void)
{
    char err[512] = "";
    const char *path = test_tmp_path("trunc");
    CHECK_MSG(checkpoint_save(path, &gm, &gv, NULL, err, sizeof err) == 0, "%s", err);
    /* cut 100 bytes off the end: the last tensor (final.linear.bias, 192 bytes) runs off it */
    FILE *fp = fopen(path, "rb");
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fclose(fp);
    CHECK(truncate(path, n - 100) == 0);
    EXPECT_LOAD_FAILS(path, "tensor 'final.linear.bias' data_offsets", "file truncated?");
    CHECK(truncate(path, 5) == 0);
    EXPECT_LOAD_FAILS(path, "too short");
    fp = fopen(path, "wb");
    fputs("this is not a checkpoint at all", fp);
    fclose(fp);
    EXPECT_LOAD_FAILS(path, "header length");
    EXPECT_LOAD_FAILS(test_tmp_path("does-not-exist"), "cannot open");
    /* a train state is not a checkpoint */
    AdamW opt;
    AdamWConfig c = {.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    Rng r = {1, 2};
    CHECK(adamw_init(&opt, &c, 10) == 0);
    CHECK(train_state_save(path, &opt, &r, 0, err, sizeof err) == 0);
    EXPECT_LOAD_FAILS(path, "format is \"chunkgrpo-train-state/1\"");
    adamw_free(&opt);
}

/* ---------------------------------------------------------------------------------------------
 * training state
 */

static void fill_opt(AdamW *opt, size_t n)
{
    AdamWConfig c = {.lr = 3e-4f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                     .weight_decay = 0.01f, .grad_clip = 1.0f};
    c.lr = nextafterf(c.lr, 1.0f); /* an awkward value that only round-trips with 9 digits */
    if (adamw_init(opt, &c, n) != 0)
        exit(2);
    for (size_t i = 0; i < n; i++) {
        opt->m[i] = (float)sin((double)i) * 1e-3f;
        opt->v[i] = (float)(i % 17) * 1.1e-7f + 1e-38f * (float)(i % 3); /* subnormals too */
    }
    opt->step = 777;
}

static void test_train_state_round_trip(void)
{
    const size_t n = 1000;
    AdamW a, b;
    fill_opt(&a, n);
    Rng r = {.key = UINT64_MAX - 5, .counter = ((uint64_t)1 << 60) + 3};
    char err[512] = "";
    const char *path = test_tmp_path("state.safetensors");
    CHECK_MSG(train_state_save(path, &a, &r, INT64_C(123456789012), err, sizeof err) == 0, "%s",
              err);

    AdamWConfig other = {.lr = 1, .beta1 = 0.5f, .beta2 = 0.5f, .eps = 1, .weight_decay = 0,
                         .grad_clip = 0};
    CHECK(adamw_init(&b, &other, n) == 0);
    Rng r2 = {0, 0};
    int64_t it = -1;
    CHECK_MSG(train_state_load(path, &b, &r2, &it, err, sizeof err) == 0, "%s", err);
    CHECK(memcmp(a.m, b.m, n * sizeof(float)) == 0 && memcmp(a.v, b.v, n * sizeof(float)) == 0);
    CHECK(memcmp(&a.cfg, &b.cfg, sizeof a.cfg) == 0); /* every float bit-exact */
    CHECK(b.step == 777 && b.n == n);
    CHECK(r2.key == r.key && r2.counter == r.counter);
    CHECK(it == INT64_C(123456789012));

    StFile *f;
    CHECK(st_open(path, &f, err, sizeof err) == 0);
    if (f) {
        CHECK(strcmp(st_meta(f, "rng.key"), "18446744073709551610") == 0);
        CHECK(strcmp(st_meta(f, "format"), "chunkgrpo-train-state/1") == 0);
        CHECK(strcmp(st_meta(f, "adamw.beta1"), "0.899999976") == 0);
        st_close(f);
    }

    /* an empty model (n = 0) works too */
    AdamW e, e2;
    CHECK(adamw_init(&e, &other, 0) == 0 && adamw_init(&e2, &other, 0) == 0);
    CHECK_MSG(train_state_save(test_tmp_path("empty_state"), &e, &r, 0, err, sizeof err) == 0, "%s",
              err);
    CHECK_MSG(train_state_load(test_tmp_path("empty_state"), &e2, &r2, &it, err, sizeof err) == 0,
              "%s", err);
    adamw_free(&e);
    adamw_free(&e2);
    adamw_free(&a);
    adamw_free(&b);
}

/* Writes a train state for a (n = a->n) with one metadata key replaced (value NULL: left out)
 * and optionally an extra or retyped tensor. */
static void write_state_variant(const char *path, const AdamW *a, const char *key,
                                const char *value, const char *extra, int v_as_i32)
{
    static const char *const keys[] = {"format", "iteration", "adamw.step", "rng.key",
                                       "rng.counter", "adamw.lr", "adamw.beta1", "adamw.beta2",
                                       "adamw.eps", "adamw.weight_decay", "adamw.grad_clip"};
    static const char *const vals[] = {"chunkgrpo-train-state/1", "10", "5", "1", "2",
                                       "0.00100000005", "0.899999976", "0.999000013",
                                       "9.99999994e-09", "0", "1"};
    StWriter *w = st_writer_new();
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = vals[i];
        if (key && strcmp(key, keys[i]) == 0)
            v = value;
        if (v)
            st_writer_meta(w, keys[i], v);
    }
    int64_t s[1] = {(int64_t)a->n};
    st_writer_add(w, "adamw.m", ST_F32, 1, s, a->m);
    st_writer_add(w, "adamw.v", v_as_i32 ? ST_I32 : ST_F32, 1, s, a->v);
    if (extra)
        st_writer_add(w, extra, ST_F32, 1, s, a->m);
    char err[256];
    if (st_writer_save(w, path, err, sizeof err) != 0) {
        fprintf(stderr, "write_state_variant: %s\n", err);
        exit(2);
    }
    st_writer_free(w);
}

static void test_train_state_bad(void)
{
    AdamW a, b;
    fill_opt(&a, 64);
    fill_opt(&b, 64);
    b.step = 99;
    b.m[0] = 42.0f;
    AdamWConfig bcfg = b.cfg;
    Rng r = {5, 6};
    int64_t it = 7;
    char err[512] = "";
    const char *path = test_tmp_path("bad_state");

    /* control: the variant writer's defaults load */
    write_state_variant(path, &a, NULL, NULL, NULL, 0);
    AdamW c;
    fill_opt(&c, 64);
    Rng rc_ = {0, 0};
    int64_t itc;
    CHECK_MSG(train_state_load(path, &c, &rc_, &itc, err, sizeof err) == 0, "%s", err);
    CHECK(itc == 10 && c.step == 5 && rc_.key == 1 && rc_.counter == 2 && c.cfg.lr == 1e-3f);
    adamw_free(&c);

    static const struct {
        const char *key, *value, *extra;
        int v_i32;
        const char *phrase;
    } cases[] = {
        {"format", "chunkgrpo-dit/1", NULL, 0,
         "format is \"chunkgrpo-dit/1\", expected \"chunkgrpo-train-state/1\""},
        {"format", NULL, NULL, 0, "has no 'format'"},
        {"rng.counter", NULL, NULL, 0, "__metadata__ has no 'rng.counter'"},
        {"rng.key", "-1", NULL, 0, "metadata 'rng.key' = \"-1\" is not a decimal integer"},
        {"rng.key", "18446744073709551616", NULL, 0, "metadata 'rng.key'"},
        {"rng.key", " 12", NULL, 0, "metadata 'rng.key'"},
        {"iteration", "9223372036854775808", NULL, 0, "metadata 'iteration'"},
        {"adamw.step", "", NULL, 0, "metadata 'adamw.step'"},
        {"adamw.lr", "fast", NULL, 0, "metadata 'adamw.lr' = \"fast\" is not a number"},
        {"adamw.eps", "1e-8x", NULL, 0, "metadata 'adamw.eps'"},
        {"adamw.grad_clip", NULL, NULL, 0, "has no 'adamw.grad_clip'"},
        {NULL, NULL, "adamw.w", 0, "unexpected tensor 'adamw.w'"},
        {NULL, NULL, NULL, 1, "tensor 'adamw.v' has dtype I32, expected F32"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_state_variant(path, &a, cases[i].key, cases[i].value, cases[i].extra,
                            cases[i].v_i32);
        err[0] = '\0';
        CHECK_MSG(train_state_load(path, &b, &r, &it, err, sizeof err) == -1, "case %zu", i);
        CHECK_MSG(contains(err, cases[i].phrase) && contains(err, path), "case %zu: %s", i, err);
        /* nothing changed on failure */
        CHECK_MSG(b.step == 99 && b.m[0] == 42.0f && memcmp(&b.cfg, &bcfg, sizeof bcfg) == 0 &&
                  r.key == 5 && r.counter == 6 && it == 7, "case %zu changed the state", i);
    }

    /* moments for a different parameter count */
    AdamW small;
    fill_opt(&small, 63);
    CHECK(train_state_save(path, &small, &r, 1, err, sizeof err) == 0);
    CHECK(train_state_load(path, &b, &r, &it, err, sizeof err) == -1);
    CHECK_MSG(contains(err, "moments for 63 parameters, the model has 64"), "%s", err);
    /* a missing moment */
    StWriter *w = st_writer_new();
    st_writer_meta(w, "format", TRAIN_STATE_FORMAT);
    CHECK(st_writer_save(w, path, err, sizeof err) == 0);
    st_writer_free(w);
    CHECK(train_state_load(path, &b, &r, &it, err, sizeof err) == -1);
    CHECK_MSG(contains(err, "has no 'iteration'"), "%s", err);
    /* a checkpoint is not a train state */
    CHECK(checkpoint_save(path, &gm, &gv, NULL, err, sizeof err) == 0);
    CHECK(train_state_load(path, &b, &r, &it, err, sizeof err) == -1);
    CHECK_MSG(contains(err, "format is \"chunkgrpo-dit/1\""), "%s", err);
    CHECK(train_state_load(test_tmp_path("nope"), &b, &r, &it, err, sizeof err) == -1);
    CHECK_MSG(contains(err, "cannot open"), "%s", err);
    CHECK(b.step == 99 && r.key == 5 && it == 7);

    adamw_free(&small);
    adamw_free(&a);
    adamw_free(&b);
}

static void test_train_state_missing_tensor(void)
{
    AdamW a;
    fill_opt(&a, 8);
    const char *path = test_tmp_path("state_nov");
    StWriter *w = st_writer_new();
    char err[512] = "";
    static const char *const kv[][2] = {
        {"format", TRAIN_STATE_FORMAT}, {"iteration", "1"}, {"adamw.step", "1"},
        {"rng.key", "1"}, {"rng.counter", "1"}, {"adamw.lr", "1"}, {"adamw.beta1", "1"},
        {"adamw.beta2", "1"}, {"adamw.eps", "1"}, {"adamw.weight_decay", "1"},
        {"adamw.grad_clip", "1"}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        st_writer_meta(w, kv[i][0], kv[i][1]);
    int64_t s[1] = {8};
    st_writer_add(w, "adamw.m", ST_F32, 1, s, a.m);
    CHECK(st_writer_save(w, path, err, sizeof err) == 0);
    st_writer_free(w);
    Rng r;
    int64_t it;
    CHECK(train_state_load(path, &a, &r, &it, err, sizeof err) == -1);
    CHECK_MSG(contains(err, "tensor 'adamw.v' not found"), "%s", err);
    adamw_free(&a);
}

int main(void)
{
    test_tmpdir_create();
    make_model(&gm, &gv, 99);
    snprintf(good_config, sizeof good_config,
             "{\"image_size\":16,\"channels\":3,\"patch\":4,\"dim\":32,\"depth\":2,\"heads\":2,"
             "\"mlp_ratio\":4,\"text_len\":8,\"vocab_size\":7}");
    TEST_RUN(test_round_trip);
    TEST_RUN(test_save_errors);
    TEST_RUN(test_variant_control);
    TEST_RUN(test_bad_tensors);
    TEST_RUN(test_bad_config);
    TEST_RUN(test_bad_metadata);
    TEST_RUN(test_truncated_and_garbage);
    TEST_RUN(test_train_state_round_trip);
    TEST_RUN(test_train_state_bad);
    TEST_RUN(test_train_state_missing_tensor);
    model_free(&gm);
    vocab_free(&gv);
    test_tmpdir_remove();
    return test_summary("checkpoint");
}
