/*
 * test_reference.c: the engine against PyTorch. tests/reference/make_fixtures.py wrote the
 * `tiny` model with random non-zero weights, inputs with PAD tokens, UNK and an all-PAD prompt,
 * and the float64 output and parameter gradients of sum(v * dv). The float32 engine must match
 * every tensor to a relative error of 1e-4, measured as max|engine - ref| / max|ref|.
 */
#include <stdlib.h>

#include "adamw.h"
#include "checkpoint.h"
#include "model.h"
#include "ops.h"
#include "safetensors.h"
#include "test.h"
#include "tokenizer.h"


static void compare_at_threads(int threads)
{
    char err[512];
    Model m;
    Vocab vocab;
    StFile *in = NULL, *ref = NULL;
    if (checkpoint_load(FIXTURES "tiny_model.safetensors", &m, &vocab, NULL, err, sizeof err)) {
        CHECK_MSG(0, "%s", err);
        return;
    }
    CHECK(st_open(FIXTURES "tiny_inputs.safetensors", &in, err, sizeof err) == 0);
    CHECK(st_open(FIXTURES "tiny_expected.safetensors", &ref, err, sizeof err) == 0);
    if (!in || !ref) goto done;
    engine_set_threads(threads);
    const StTensor *xt = st_find(in, "x");
    int B = (int)xt->shape[0];
    size_t n = (size_t)B * cfg_image_numel(&m.cfg);
    float *v = malloc(n * sizeof *v);
    Activations *a = acts_new(&m.cfg, B);
    model_forward(&m, a, st_get_f32(in, "x", -1, NULL, NULL, 0), st_get_f32(in, "t", -1, NULL, NULL, 0),
                  st_get_i32(in, "tokens", -1, NULL, NULL, 0), v);
    double ev = test_rel_err(v, st_get_f32(ref, "v", -1, NULL, NULL, 0), n);
    CHECK_MSG(ev <= TOLERANCE, "v: relative error %.3e", ev);

    model_zero_grad(&m);
    model_backward(&m, a, st_get_f32(in, "dv", -1, NULL, NULL, 0));
    double worst = 0.0;
    const char *worst_name = "";
    for (int i = 0; i < m.num_tensors; i++) {
        const TensorInfo *ti = &m.tensors[i];
        char name[64];
        snprintf(name, sizeof name, "grad.%s", ti->name);
        const float *g = st_get_f32(ref, name, -1, NULL, err, sizeof err);
        if (!g) {
            CHECK_MSG(0, "%s", err);
            continue;
        }
        double e = test_rel_err(m.grads + ti->offset, g, ti->numel);
        CHECK_MSG(e <= TOLERANCE, "%s: relative error %.3e", name, e);
        if (e > worst) worst = e, worst_name = ti->name;
    }
    fprintf(stderr, "  %d thread(s): v relative error %.2e; worst of %d gradients %.2e (%s)\n",
            threads, ev, m.num_tensors, worst, worst_name);
    acts_free(a);
    free(v);
done:
    st_close(in);
    st_close(ref);
    vocab_free(&vocab);
    model_free(&m);
}

static void test_pytorch_parity_one_thread(void) { compare_at_threads(1); }
static void test_pytorch_parity_two_threads(void) { compare_at_threads(2); }

/* The tokenizer on the fixture's vocabulary: case, punctuation, UNK, truncation, padding. */
static void test_tokenizer_fixture_vocab(void)
{
    char err[256];
    Model m;
    Vocab v;
    if (checkpoint_load(FIXTURES "tiny_model.safetensors", &m, &v, NULL, err, sizeof err)) {
        CHECK_MSG(0, "%s", err);
        return;
    }
    int32_t ids[8];
    int n = tokenize(&v, "A RED circle, left-of  zebra!", 8, ids);
    CHECK(n == 6);
    CHECK(ids[0] == vocab_lookup(&v, "a", 1) && ids[0] > 1);
    CHECK(ids[1] == vocab_lookup(&v, "red", 3));
    CHECK(ids[3] == vocab_lookup(&v, "left", 4) && ids[4] == vocab_lookup(&v, "of", 2));
    CHECK(ids[5] == TOKEN_UNK && ids[6] == TOKEN_PAD && ids[7] == TOKEN_PAD);
    CHECK(tokenize(&v, "red red red red red red red red red red", 8, ids) == 10);
    CHECK(ids[7] == vocab_lookup(&v, "red", 3));
    CHECK(tokenize(&v, "", 8, ids) == 0 && ids[0] == TOKEN_PAD);
    char *text = vocab_to_text(&v);
    Vocab again;
    CHECK(vocab_from_text(&again, text, err, sizeof err) == 0 && again.size == v.size);
    free(text);
    vocab_free(&again);
    const char *bad[] = {"<pad>", "<unk>", "red", "Red"};
    CHECK(vocab_from_words(&again, bad, 4, err, sizeof err) == -1 && strstr(err, "\"Red\""));
    const char *dup[] = {"<pad>", "<unk>", "red", "red"};
    CHECK(vocab_from_words(&again, dup, 4, err, sizeof err) == -1 && strstr(err, "repeats"));
    vocab_free(&v);
    model_free(&m);
}

/* A checkpoint written by the engine, after a training step moved every weight, loads into the
 * PyTorch module (tests/reference/dit.py) and gives the engine's output. Needs /usr/bin/python3
 * with torch; skipped (and said so) where it is absent, as in CI. */
static void test_engine_checkpoint_in_pytorch(void)
{
    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0)
        TEST_SKIP("no PyTorch at /usr/bin/python3 (apt-get install python3-torch)");
    char err[512], cmd[1024];
    const char *ckpt = test_tmp_path("model.safetensors"), *vout = test_tmp_path("v.safetensors");
    Model m;
    Vocab vocab;
    StFile *in = NULL;
    if (checkpoint_load(FIXTURES "tiny_model.safetensors", &m, &vocab, NULL, err, sizeof err) ||
        st_open(FIXTURES "tiny_inputs.safetensors", &in, err, sizeof err)) {
        CHECK_MSG(0, "%s", err);
        return;
    }
    const float *x = st_get_f32(in, "x", -1, NULL, NULL, 0), *t = st_get_f32(in, "t", -1, NULL, NULL, 0);
    const int32_t *tok = st_get_i32(in, "tokens", -1, NULL, NULL, 0);
    int B = (int)st_find(in, "x")->shape[0];
    int64_t vshape[4] = {B, m.cfg.image_size, m.cfg.image_size, m.cfg.channels};
    size_t n = (size_t)B * cfg_image_numel(&m.cfg);
    float *v = malloc(n * sizeof *v);
    Activations *a = acts_new(&m.cfg, B);

    AdamW opt;
    AdamWConfig oc = {.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f,
                      .weight_decay = 0.01f, .grad_clip = 1.0f};
    CHECK(adamw_init(&opt, &oc, m.num_params) == 0);
    model_forward(&m, a, x, t, tok, v);
    model_zero_grad(&m);
    model_backward(&m, a, st_get_f32(in, "dv", -1, NULL, NULL, 0));
    adamw_step(&opt, m.params, m.grads);
    model_forward(&m, a, x, t, tok, v);

    CheckpointInfo info = {.experiment = "test", .step = 1};
    CHECK_MSG(checkpoint_save(ckpt, &m, &vocab, &info, err, sizeof err) == 0, "%s", err);
    StWriter *w = st_writer_new();
    st_writer_add(w, "v", ST_F32, 4, vshape, v);
    CHECK_MSG(st_writer_save(w, vout, err, sizeof err) == 0, "%s", err);
    st_writer_free(w);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -B tests/reference/check_checkpoint.py %s %s %s --tol 1e-4 >&2", ckpt,
             FIXTURES "tiny_inputs.safetensors", vout);
    CHECK_MSG(system(cmd) == 0, "%s", cmd);
    adamw_free(&opt);
    acts_free(a);
    free(v);
    st_close(in);
    vocab_free(&vocab);
    model_free(&m);
}

int main(void)
{
    test_tmpdir_create();
    TEST_RUN(test_pytorch_parity_one_thread);
    TEST_RUN(test_pytorch_parity_two_threads);
    TEST_RUN(test_tokenizer_fixture_vocab);
    TEST_RUN(test_engine_checkpoint_in_pytorch);
    test_tmpdir_remove();
    return test_summary("reference");
}
