/*
 * test_model.c: the engine's model on its own: parameter layout, determinism across thread
 * counts, a finite-difference check of the gradient, and the initialisation of model.md.
 * (The comparison against PyTorch lives in test_reference.c.)
 */
#include <cblas.h>
#include <omp.h>
#include <stdlib.h>

#include "model.h"
#include "rng.h"
#include "test.h"

/* A tiny model whose every weight is random and non-zero, so every path carries gradient. */
static void random_model(Model *m, uint64_t seed)
{
    ModelConfig cfg;
    model_config_preset("tiny", &cfg);
    cfg.vocab_size = 20;
    CHECK(model_init(m, &cfg) == 0);
    Rng r;
    rng_seed(&r, seed);
    rng_normal(&r, m->params, m->num_params);
    for (size_t i = 0; i < m->num_params; i++) m->params[i] *= 0.2f;
    for (int l = 0; l < cfg.depth; l++) {
        for (int i = 0; i < cfg_head_dim(&cfg); i++) {
            m->p.blocks[l].q_norm[i] += 1.0f;
            m->p.blocks[l].k_norm[i] += 1.0f;
        }
    }
}

typedef struct {
    int B;
    float *x, *t, *dv, *v;
    int32_t *tokens;
} Batch;

static Batch random_batch(const ModelConfig *c, int B, uint64_t seed)
{
    Batch b = {.B = B};
    size_t n = (size_t)B * cfg_image_numel(c);
    b.x = malloc(n * sizeof(float));
    b.dv = malloc(n * sizeof(float));
    b.v = malloc(n * sizeof(float));
    b.t = malloc((size_t)B * sizeof(float));
    b.tokens = malloc((size_t)B * c->text_len * sizeof(int32_t));
    Rng r;
    rng_seed(&r, seed);
    rng_normal(&r, b.x, n);
    rng_normal(&r, b.dv, n);
    rng_uniform(&r, b.t, (size_t)B);
    for (int i = 0; i < B; i++) {
        for (int j = 0; j < c->text_len; j++) {
            /* sample 0 all PAD; others have trailing PAD and a PAD hole */
            int tok = (i == 0 || j >= c->text_len - 2 || j == 2)
                          ? 0
                          : 1 + (i * 7 + j * 3) % (c->vocab_size - 1);
            b.tokens[i * c->text_len + j] = tok;
        }
    }
    return b;
}

static void batch_free(Batch *b)
{
    free(b->x), free(b->t), free(b->dv), free(b->v), free(b->tokens);
}

static double loss_of(const Model *m, Activations *a, const Batch *b)
{
    model_forward(m, a, b->x, b->t, b->tokens, b->v);
    double s = 0.0;
    size_t n = (size_t)b->B * cfg_image_numel(&m->cfg);
    for (size_t i = 0; i < n; i++) s += (double)b->v[i] * b->dv[i];
    return s;
}

static void test_layout(void)
{
    ModelConfig cfg;
    CHECK(model_config_preset("small", &cfg) == 0);
    cfg.vocab_size = 64;
    Model m;
    CHECK(model_init(&m, &cfg) == 0);
    CHECK(m.num_tensors == 11 + 12 * cfg.depth + 4);
    CHECK(strcmp(m.tensors[0].name, "txt.tok_emb") == 0);
    CHECK(strcmp(m.tensors[11].name, "blocks.0.ada.weight") == 0);
    CHECK(strcmp(m.tensors[m.num_tensors - 1].name, "final.linear.bias") == 0);
    size_t off = 0;
    for (int i = 0; i < m.num_tensors; i++) {
        CHECK(m.tensors[i].offset == off);
        off += m.tensors[i].numel;
    }
    CHECK(off == m.num_params);
    const TensorInfo *ti = model_find_tensor(&m, "blocks.2.fc2.weight");
    CHECK(ti && ti->shape[0] == 128 && ti->shape[1] == 512);
    CHECK(ti && m.params + ti->offset == m.p.blocks[2].fc2_w);
    CHECK(ti && m.grads + ti->offset == m.g.blocks[2].fc2_w);
    CHECK(model_find_tensor(&m, "blocks.4.fc2.weight") == NULL);
    model_free(&m);
}

static void test_config_validation(void)
{
    ModelConfig cfg;
    char err[200];
    CHECK(model_config_preset("nope", &cfg) == -1);
    model_config_preset("tiny", &cfg);
    cfg.vocab_size = 10;
    CHECK(model_config_validate(&cfg, err, sizeof err) == 0);
    cfg.patch = 5;
    CHECK(model_config_validate(&cfg, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "patch"), "%s", err);
    model_config_preset("tiny", &cfg);
    cfg.vocab_size = 10;
    cfg.heads = 3;
    CHECK(model_config_validate(&cfg, err, sizeof err) == -1 && strstr(err, "heads"));
    cfg.heads = 2;
    cfg.depth = 0;
    CHECK(model_config_validate(&cfg, err, sizeof err) == -1 && strstr(err, "depth"));
}

static void test_init_weights(void)
{
    Model m;
    ModelConfig cfg;
    model_config_preset("tiny", &cfg);
    cfg.vocab_size = 20;
    CHECK(model_init(&m, &cfg) == 0);
    model_init_weights(&m, 7);
    /* adaLN-Zero: a fresh model predicts v = final.linear.bias = 0 */
    for (int i = 0; i < 2 * cfg.dim * cfg.dim; i++) CHECK(m.p.fin_ada_w[i] == 0.0f);
    CHECK(m.p.blocks[1].q_norm[3] == 1.0f);
    /* img.pos_emb row 0 (grid 0,0): sin 0 = 0, cos 0 = 1 in every quarter */
    CHECK(m.p.img_pos[0] == 0.0f && m.p.img_pos[cfg.dim / 4] == 1.0f);
    /* Xavier bound of qkv: sqrt(6 / (d + 3d)) */
    float bound = sqrtf(6.0f / (4.0f * cfg.dim)), mx = 0.0f;
    for (int i = 0; i < 3 * cfg.dim * cfg.dim; i++) mx = fmaxf(mx, fabsf(m.p.blocks[0].qkv_w[i]));
    CHECK(mx <= bound && mx > 0.9f * bound);
    Model m2;
    CHECK(model_init(&m2, &cfg) == 0);
    model_init_weights(&m2, 7);
    CHECK(memcmp(m.params, m2.params, m.num_params * sizeof(float)) == 0);
    model_free(&m);
    model_free(&m2);
}

/* Our loops never reduce across threads, so with BLAS on one thread the forward and backward
 * are bit-identical whatever the OpenMP thread count. */
static void test_thread_count_invariance(void)
{
    Model m;
    random_model(&m, 3);
    Batch b = random_batch(&m.cfg, 3, 4);
    Activations *a = acts_new(&m.cfg, 3);
    int saved_blas = openblas_get_num_threads(), saved_omp = omp_get_max_threads();
    openblas_set_num_threads(1);
    size_t n = 3 * cfg_image_numel(&m.cfg);
    float *v1 = malloc(n * sizeof(float)), *g1 = malloc(m.num_params * sizeof(float));
    omp_set_num_threads(1);
    model_forward(&m, a, b.x, b.t, b.tokens, v1);
    model_zero_grad(&m);
    model_backward(&m, a, b.dv);
    memcpy(g1, m.grads, m.num_params * sizeof(float));
    omp_set_num_threads(2);
    model_forward(&m, a, b.x, b.t, b.tokens, b.v);
    model_zero_grad(&m);
    model_backward(&m, a, b.dv);
    CHECK(memcmp(v1, b.v, n * sizeof(float)) == 0);
    CHECK(memcmp(g1, m.grads, m.num_params * sizeof(float)) == 0);
    omp_set_num_threads(saved_omp);
    openblas_set_num_threads(saved_blas);
    free(v1), free(g1);
    acts_free(a);
    batch_free(&b);
    model_free(&m);
}

/* A pass over fewer rows than planned (acts_set_batch) gives those rows what the full batch
 * gives them, forward and backward, to float rounding (BLAS may pick another kernel for another
 * row count, so not bit for bit). */
static void test_smaller_batch_same_rows(void)
{
    Model m;
    random_model(&m, 5);
    Batch b = random_batch(&m.cfg, 3, 6);
    Activations *a = acts_new(&m.cfg, 3);
    size_t img = cfg_image_numel(&m.cfg);
    float *v2 = malloc(2 * img * sizeof(float)), *g3 = malloc(m.num_params * sizeof(float));
    memset(b.dv + 2 * img, 0, img * sizeof(float)); /* row 2 carries no gradient */
    model_forward(&m, a, b.x, b.t, b.tokens, b.v);
    model_zero_grad(&m);
    model_backward(&m, a, b.dv);
    memcpy(g3, m.grads, m.num_params * sizeof(float));
    acts_set_batch(a, 2);
    CHECK(acts_batch(a) == 2 && acts_capacity(a) == 3);
    model_forward(&m, a, b.x, b.t, b.tokens, v2);
    model_zero_grad(&m);
    model_backward(&m, a, b.dv);
    double ev = test_rel_err(v2, b.v, 2 * img);
    CHECK_MSG(ev < 1e-6, "output of the first two rows differs by %g", ev);
    double worst = test_rel_err(m.grads, g3, m.num_params);
    CHECK_MSG(worst < 1e-6, "gradient of the first two rows differs by %g", worst);
    acts_set_batch(a, 4); /* beyond the plan: ignored */
    CHECK(acts_batch(a) == 2);
    free(v2), free(g3);
    acts_free(a);
    batch_free(&b);
    model_free(&m);
}

/* The forward drops text positions after the batch's last non-PAD token. Whether a batch runs
 * all text_len positions (a full-length caption in row 2) or fewer (rows 0 and 1 alone: 6 of 8;
 * row 0 alone, all PAD: none), rows 0 and 1 must give the same velocities and gradients. */
static void test_trailing_pad_dropped(void)
{
    Model m;
    random_model(&m, 7);
    const ModelConfig *c = &m.cfg;
    Batch b = random_batch(c, 3, 8);
    int T = c->text_len;
    for (int j = 0; j < T; j++) b.tokens[2 * T + j] = 1 + j % (c->vocab_size - 1);
    size_t img = cfg_image_numel(c);
    memset(b.dv + 2 * img, 0, img * sizeof(float)); /* row 2 carries no gradient */
    Activations *a = acts_new(c, 3);
    float *g_full = malloc(m.num_params * sizeof(float)),
          *v_short = malloc(2 * img * sizeof(float));
    model_forward(&m, a, b.x, b.t, b.tokens, b.v);
    model_zero_grad(&m);
    model_backward(&m, a, b.dv);
    memcpy(g_full, m.grads, m.num_params * sizeof(float));
    for (int rows = 2; rows >= 1; rows--) {
        acts_set_batch(a, rows);
        model_forward(&m, a, b.x, b.t, b.tokens, v_short);
        model_zero_grad(&m);
        model_backward(&m, a, b.dv);
        double ev = test_rel_err(v_short, b.v, rows * img);
        CHECK_MSG(ev < 1e-6, "%d rows without the long caption: output differs by %g", rows, ev);
        if (rows == 2) {
            double eg = test_rel_err(m.grads, g_full, m.num_params);
            CHECK_MSG(eg < 1e-6, "without the long caption: gradient differs by %g", eg);
        }
    }
    free(g_full), free(v_short);
    acts_free(a);
    batch_free(&b);
    model_free(&m);
}

/* Central difference at step h, on parameter i. */
static double central_difference(Model *m, Activations *a, const Batch *b, size_t i, float h)
{
    float keep = m->params[i];
    m->params[i] = keep + h;
    double lp = loss_of(m, a, b);
    m->params[i] = keep - h;
    double lm = loss_of(m, a, b);
    m->params[i] = keep;
    return (lp - lm) / (2.0 * h);
}

/* Central differences on two parameters of every tensor (its largest gradient and a fixed
 * pick), a spot check independent of PyTorch. The forward runs in float and the loss is ~100, so
 * differences carry ~1e-4 of rounding noise at this step (worst seen 2.7e-2 of the bound): the
 * 5e-2 tolerance allows that, while a wrong gradient is off by far more; and the
 * largest-gradient probe keeps the check sharp where it matters. */
static void test_finite_difference(void)
{
    Model m;
    random_model(&m, 11);
    Batch b = random_batch(&m.cfg, 3, 12);
    Activations *a = acts_new(&m.cfg, 3);
    loss_of(&m, a, &b);
    model_zero_grad(&m);
    model_backward(&m, a, b.dv);
    int checked = 0, bad = 0;
    double worst = 0.0;
    for (int ti = 0; ti < m.num_tensors; ti++) {
        const TensorInfo *t = &m.tensors[ti];
        size_t largest = t->offset;
        for (size_t i = t->offset; i < t->offset + t->numel; i++)
            if (fabsf(m.grads[i]) > fabsf(m.grads[largest])) largest = i;
        size_t probes[2] = {largest, t->offset + (size_t)(ti * 7919) % t->numel};
        for (int k = 0; k < 2; k++) {
            size_t i = probes[k];
            double fd = central_difference(&m, a, &b, i, 5e-2f), an = m.grads[i];
            double err = fabs(fd - an) / (fabs(an) + 3e-2);
            if (err > worst) worst = err;
            if (err > 5e-2) {
                bad++;
                fprintf(stderr, "  %s[%zu]: analytic %.6g, finite difference %.6g\n", t->name,
                        i - t->offset, an, fd);
            }
            checked++;
        }
    }
    fprintf(stderr, "  finite differences: %d probes, worst error %.2e (of |grad| + 0.03)\n",
            checked, worst);
    CHECK(bad == 0);
    acts_free(a);
    batch_free(&b);
    model_free(&m);
}

int main(void)
{
    TEST_RUN(test_layout);
    TEST_RUN(test_config_validation);
    TEST_RUN(test_init_weights);
    TEST_RUN(test_thread_count_invariance);
    TEST_RUN(test_smaller_batch_same_rows);
    TEST_RUN(test_trailing_pad_dropped);
    TEST_RUN(test_finite_difference);
    return test_summary("model");
}
