/*
 * test_grpo.c: GRPO and Chunk-GRPO (worker/engine/grpo.c) against the float64 PyTorch reference
 * (tests/reference/grpo_ref.py, fixture grpo.safetensors written by make_grpo_fixtures.py), plus
 * the properties algorithm.md states:
 *   - advantages: unbiased std, clamp, all-equal groups give 0 and are counted;
 *   - chunking: size errors named, uniform sizes, the optimal segmentation equal to brute force;
 *   - chunk selection: deterministic, without replacement, frequencies of uniform and weighted
 *     sampling against their exact probabilities;
 *   - the clipped chunk loss and its derivative (torch.maximum / torch.clamp semantics, ties);
 *   - the model-level step on the tiny model: (a) at the rollout's parameters every ratio is 1
 *     to float precision; (b) at perturbed parameters the ratios, losses, clip decisions and all
 *     parameter gradients match PyTorch for step level, chunks [2,3], one chunk [5], cases where
 *     the clip binds, and (e) with the KL term; (c) chunk sizes all 1 equal an independent
 *     per-step computation; (d) the chunk ratio is the geometric mean of the step ratios; the
 *     result does not depend on the thread count or on how the items are packed into calls.
 * Parity is max|c - ref| / max|ref| per tensor (per parameter tensor for gradients), <= 1e-4.
 */
#include <stdint.h>
#include <stdlib.h>

#include "checkpoint.h"
#include "grpo.h"
#include "model.h"
#include "ops.h"
#include "rng.h"
#include "safetensors.h"
#include "sampler.h"
#include "test.h"
#include "tokenizer.h"
#include "../reference/perturb.h"

/* ------------------------------------------------------------------------------------------ */
/* Advantages                                                                                  */

static void test_advantages(void)
{
    /* by hand: {1, 2, 3}: mean 2, unbiased std 1 */
    float r[9] = {1, 2, 3, 5, 5, 5, 0, 0, 10}, adv[9];
    int equal = grpo_advantages(r, 3, 3, 5.0f, adv);
    CHECK(equal == 1);
    CHECK_CLOSE(adv[0], -1.0, 1e-6, 0);
    CHECK_CLOSE(adv[1], 0.0, 1e-7, 0);
    CHECK_CLOSE(adv[2], 1.0, 1e-6, 0);
    CHECK(adv[3] == 0.0f && adv[4] == 0.0f && adv[5] == 0.0f); /* all equal: exactly 0 */
    /* {0, 0, 10}: mean 10/3, std sqrt(100/3) */
    CHECK_CLOSE(adv[8], (20.0 / 3) / sqrt(100.0 / 3), 1e-6, 1e-6);
    /* the clamp */
    grpo_advantages(r, 3, 3, 0.5f, adv);
    CHECK(adv[0] == -0.5f && adv[2] == 0.5f && adv[8] == 0.5f);
    /* groups of one carry no signal and count as all-equal */
    CHECK(grpo_advantages(r, 9, 1, 5.0f, adv) == 9);
    for (int i = 0; i < 9; i++) CHECK(adv[i] == 0.0f);
    /* in place */
    float q[4] = {0, 1, 1, 0};
    CHECK(grpo_advantages(q, 2, 2, INFINITY, q) == 0);
    CHECK_CLOSE(q[0], -1 / sqrt(2.0), 1e-6, 0);
    CHECK_CLOSE(q[2], 1 / sqrt(2.0), 1e-6, 0);
    CHECK_CLOSE(q[3], -1 / sqrt(2.0), 1e-6, 0);

    /* against PyTorch */
    StFile *f = NULL;
    char err[256];
    if (st_open(FIXTURES "grpo.safetensors", &f, err, sizeof err)) TEST_SKIP("%s", err);
    const float *ar = st_get_f32(f, "adv.rewards", -1, NULL, err, sizeof err);
    const float *ae = st_get_f32(f, "adv.expected", -1, NULL, err, sizeof err);
    const float *rw = st_get_f32(f, "rewards", -1, NULL, err, sizeof err);
    const float *ra = st_get_f32(f, "advantages", -1, NULL, err, sizeof err);
    CHECK(ar && ae && rw && ra);
    if (ar && ae && rw && ra) {
        float got[16];
        /* groups: ordinary, all equal, clipped at 1.2, nearly equal (std << 1e-8's scale) */
        CHECK(grpo_advantages(ar, 4, 4, strtof(st_meta(f, "adv.clip"), NULL), got) == 1);
        double e = test_rel_err(got, ae, 16);
        CHECK_MSG(e <= 1e-6, "advantages vs torch: relative error %.3e", e);
        CHECK(got[8] == 1.2f); /* {1, 0, 0, 0}: (1 - 1/4) / 0.5 = 1.5, clamped */
        grpo_advantages(rw, 2, 3, 5.0f, got);
        e = test_rel_err(got, ra, 6);
        CHECK_MSG(e <= 1e-6, "rollout advantages vs torch: relative error %.3e", e);
    }
    st_close(f);
}

/* ------------------------------------------------------------------------------------------ */
/* Chunking                                                                                    */

static void test_chunking_sizes(void)
{
    Chunking ch;
    char err[256] = "";
    int paper[4] = {2, 3, 4, 7};
    CHECK(chunking_from_sizes(paper, 4, 16, &ch, err, sizeof err) == 0);
    CHECK(ch.count == 4 && ch.start[0] == 0 && ch.start[1] == 2 && ch.start[2] == 5 &&
          ch.start[3] == 9 && ch.size[3] == 7);

    int zero[3] = {2, 0, 14};
    CHECK(chunking_from_sizes(zero, 3, 16, &ch, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "chunk 1 has size 0") != NULL, "%s", err);
    int neg[2] = {-1, 17};
    CHECK(chunking_from_sizes(neg, 2, 16, &ch, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "chunk 0 has size -1") != NULL, "%s", err);
    int short_[3] = {2, 3, 10};
    CHECK(chunking_from_sizes(short_, 3, 16, &ch, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "sum to 15") && strstr(err, "16 trainable"), "%s", err);
    CHECK(chunking_from_sizes(paper, 0, 16, &ch, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "0 chunks") != NULL, "%s", err);
    CHECK(chunking_from_sizes(paper, 4, 0, &ch, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "trainable") != NULL, "%s", err);
    CHECK(chunking_from_sizes(paper, 4, 3, &ch, err, sizeof err) == -1);
    int ones[16];
    for (int i = 0; i < 16; i++) ones[i] = 1;
    CHECK(chunking_from_sizes(ones, 16, 16, &ch, err, sizeof err) == 0 && ch.start[15] == 15);

    /* uniform: the larger chunks last */
    CHECK(chunking_uniform(3, 16, &ch, err, sizeof err) == 0);
    CHECK(ch.count == 3 && ch.size[0] == 5 && ch.size[1] == 5 && ch.size[2] == 6 &&
          ch.start[2] == 10);
    CHECK(chunking_uniform(4, 16, &ch, err, sizeof err) == 0);
    CHECK(ch.size[0] == 4 && ch.size[3] == 4 && ch.start[3] == 12);
    CHECK(chunking_uniform(2, 5, &ch, err, sizeof err) == 0);
    CHECK(ch.size[0] == 2 && ch.size[1] == 3);
    CHECK(chunking_uniform(16, 16, &ch, err, sizeof err) == 0 && ch.size[7] == 1);
    CHECK(chunking_uniform(1, 16, &ch, err, sizeof err) == 0 && ch.size[0] == 16);
    CHECK(chunking_uniform(17, 16, &ch, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "17 chunks for 16") != NULL, "%s", err);
    CHECK(chunking_uniform(0, 16, &ch, err, sizeof err) == -1);
}

/* Within-chunk sum of squares of a segmentation, two-pass in double. */
static double seg_cost(const float *curve, const int *sizes, int k)
{
    double total = 0.0;
    for (int j = 0, s = 0; j < k; s += sizes[j], j++) {
        double mean = 0.0;
        for (int i = 0; i < sizes[j]; i++) mean += curve[s + i];
        mean /= sizes[j];
        for (int i = 0; i < sizes[j]; i++) total += (curve[s + i] - mean) * (curve[s + i] - mean);
    }
    return total;
}

typedef struct {
    const float *curve;
    int n, k;
    int sizes[16];
    double best, second;
    int best_sizes[16];
} Brute;

/* Every composition of the remaining steps into the remaining chunks. */
static void brute(Brute *b, int j, int left)
{
    if (j == b->k - 1) {
        b->sizes[j] = left;
        double c = seg_cost(b->curve, b->sizes, b->k);
        if (c < b->best) {
            b->second = b->best;
            b->best = c;
            memcpy(b->best_sizes, b->sizes, sizeof b->sizes);
        } else if (c < b->second) {
            b->second = c;
        }
        return;
    }
    for (int s = 1; s <= left - (b->k - 1 - j); s++) {
        b->sizes[j] = s;
        brute(b, j + 1, left - s);
    }
}

static void test_chunking_optimal_brute_force(void)
{
    Rng rng;
    rng_seed(&rng, 77);
    char err[256];
    int cases = 0, unique = 0;
    for (int n = 1; n <= 12; n++) {
        for (int k = 1; k <= n; k++) {
            for (int rep = 0; rep < 3; rep++) {
                float curve[16];
                rng_uniform(&rng, curve, (size_t)n);
                if (rep == 2) /* a decreasing curve, like the relative L1 one */
                    for (int i = 1; i < n; i++) curve[i] = curve[i - 1] * (0.5f + 0.5f * curve[i]);
                Chunking ch;
                CHECK(chunking_optimal(curve, n, k, &ch, err, sizeof err) == 0);
                CHECK(ch.count == k);
                int sum = 0;
                for (int j = 0; j < k; j++) {
                    CHECK(ch.size[j] >= 1 && ch.start[j] == sum);
                    sum += ch.size[j];
                }
                CHECK(sum == n);
                Brute b = {.curve = curve, .n = n, .k = k, .best = INFINITY, .second = INFINITY};
                brute(&b, 0, n);
                double c = seg_cost(curve, ch.size, k);
                CHECK_MSG(c <= b.best * (1 + 1e-12) + 1e-15, "n %d k %d: dp %.17g brute %.17g", n,
                          k, c, b.best);
                if (b.second > b.best * (1 + 1e-9) + 1e-12) { /* a unique optimum */
                    unique++;
                    CHECK_MSG(memcmp(ch.size, b.best_sizes, (size_t)k * sizeof(int)) == 0,
                              "n %d k %d: a different split of the same cost", n, k);
                }
                cases++;
            }
        }
    }
    fprintf(stderr, "  %d random curves (n <= 12, every k): dp = brute force (%d unique optima)\n",
            cases, unique);
}

static void test_chunking_optimal_curves(void)
{
    char err[256];
    Chunking ch, un;
    /* the prototype's relative L1 curve (algorithm.md section 5) */
    const float proto[16] = {0.75f, 0.77f, 0.54f, 0.45f, 0.41f, 0.38f, 0.36f, 0.35f,
                             0.35f, 0.35f, 0.35f, 0.35f, 0.35f, 0.35f, 0.35f, 0.35f};
    for (int k = 1; k <= 6; k++) {
        CHECK(chunking_optimal(proto, 16, k, &ch, err, sizeof err) == 0);
        fprintf(stderr, "  prototype curve, k = %d:", k);
        for (int j = 0; j < ch.count; j++) fprintf(stderr, " %d", ch.size[j]);
        fprintf(stderr, "  (cost %.5f)\n", seg_cost(proto, ch.size, ch.count));
    }
    CHECK(chunking_optimal(proto, 16, 4, &ch, err, sizeof err) == 0);
    CHECK(ch.size[0] == 2 && ch.size[1] == 1 && ch.size[2] == 2 && ch.size[3] == 11);
    /* the paper's [2,3,4,7] costs more under this criterion */
    int paper[4] = {2, 3, 4, 7};
    CHECK(seg_cost(proto, paper, 4) > seg_cost(proto, ch.size, 4));

    /* a flat curve: every split costs 0, the tie-break gives the uniform one */
    float flat[16];
    for (int i = 0; i < 16; i++) flat[i] = 0.35f;
    for (int k = 1; k <= 16; k++) {
        CHECK(chunking_optimal(flat, 16, k, &ch, err, sizeof err) == 0);
        CHECK(chunking_uniform(k, 16, &un, err, sizeof err) == 0);
        CHECK_MSG(memcmp(ch.size, un.size, (size_t)k * sizeof(int)) == 0, "flat, k = %d", k);
    }
    /* two flat levels: the step is found */
    float two[10] = {1, 1, 1, 1, 2, 2, 2, 2, 2, 2};
    CHECK(chunking_optimal(two, 10, 2, &ch, err, sizeof err) == 0);
    CHECK(ch.size[0] == 4 && ch.size[1] == 6);

    /* errors, and the largest size */
    CHECK(chunking_optimal(proto, 16, 0, &ch, err, sizeof err) == -1);
    CHECK(chunking_optimal(proto, 16, 17, &ch, err, sizeof err) == -1);
    float bad[3] = {1, NAN, 2};
    CHECK(chunking_optimal(bad, 3, 2, &ch, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "curve value 1") != NULL, "%s", err);
    int n = GRPO_MAX_CHUNKS;
    float *big = malloc((size_t)n * sizeof *big);
    for (int i = 0; i < n; i++) big[i] = i < n / 2 ? 1.0f : 0.0f;
    CHECK(chunking_optimal(big, n, 2, &ch, err, sizeof err) == 0);
    CHECK(ch.size[0] == n / 2);
    free(big);
}

/* ------------------------------------------------------------------------------------------ */
/* Chunk selection                                                                             */

static void test_select_basics(void)
{
    Chunking ch;
    char err[256];
    CHECK(chunking_uniform(16, 16, &ch, err, sizeof err) == 0);
    Rng a, b;
    rng_seed(&a, 5);
    rng_seed(&b, 5);
    int x[16], y[16];
    for (int rep = 0; rep < 50; rep++) {
        uint64_t before = a.counter;
        CHECK(chunk_select(ch.count, 8, NULL, &a, x) == 0);
        CHECK(a.counter == before + 2); /* ceil(8 / 4) blocks */
        CHECK(chunk_select(ch.count, 8, NULL, &b, y) == 0);
        CHECK(memcmp(x, y, sizeof(int) * 8) == 0); /* a pure function of the rng state */
        for (int i = 0; i < 8; i++) {
            CHECK(x[i] >= 0 && x[i] < 16);
            if (i) CHECK(x[i] > x[i - 1]); /* sorted and distinct */
        }
    }
    /* all of them, and none */
    CHECK(chunk_select(ch.count, 16, NULL, &a, x) == 0);
    for (int i = 0; i < 16; i++) CHECK(x[i] == i);
    uint64_t before = a.counter;
    CHECK(chunk_select(ch.count, 0, NULL, &a, x) == 0 && a.counter == before);
    /* weighted: all of them, zero weights last, errors */
    float w[16] = {0};
    w[3] = 1.0f;
    CHECK(chunk_select(ch.count, 2, w, &a, x) == 0);
    CHECK(x[0] == 0 && x[1] == 3); /* 3 first, then the zero weights in order */
    CHECK(chunk_select(ch.count, 17, NULL, &a, x) == -1);
    CHECK(chunk_select(ch.count, -1, NULL, &a, x) == -1);
    w[3] = 0.0f;
    CHECK(chunk_select(ch.count, 1, w, &a, x) == -1); /* all zero */
    w[3] = -1.0f;
    CHECK(chunk_select(ch.count, 1, w, &a, x) == -1);
    w[3] = NAN;
    CHECK(chunk_select(ch.count, 1, w, &a, x) == -1);
}

static void test_select_uniform_frequencies(void)
{
    Chunking ch;
    char err[256];
    CHECK(chunking_uniform(5, 16, &ch, err, sizeof err) == 0);
    Rng rng;
    rng_seed(&rng, 11);
    /* one thread: rng_uniform opens an OpenMP region per call, which costs tens of
     * microseconds on a loaded machine; the draws are the same for any thread count */
    int threads = engine_threads();
    engine_set_threads(1);
    enum { draws = 100000 };
    int pairs[5][5] = {{0}};
    for (int d = 0; d < draws; d++) {
        int c[2];
        chunk_select(ch.count, 2, NULL, &rng, c);
        pairs[c[0]][c[1]]++;
    }
    /* every one of the 10 pairs with probability 1/10 */
    double p = 0.1, sd = sqrt(p * (1 - p) / draws), worst = 0;
    for (int i = 0; i < 5; i++)
        for (int j = i + 1; j < 5; j++) {
            double z = fabs(pairs[i][j] / (double)draws - p) / sd;
            worst = fmax(worst, z);
            CHECK_MSG(z < 5, "pair (%d, %d): %d of %d draws", i, j, pairs[i][j], draws);
        }
    fprintf(stderr, "  uniform selection, 2 of 5, %d draws: worst pair off by %.2f sd\n", draws,
            worst);
    engine_set_threads(threads);
}

static void test_select_weighted_frequencies(void)
{
    /* weights from the prototype curve over the paper's chunks, as section 6 defines them */
    const float proto[16] = {0.75f, 0.77f, 0.54f, 0.45f, 0.41f, 0.38f, 0.36f, 0.35f,
                             0.35f, 0.35f, 0.35f, 0.35f, 0.35f, 0.35f, 0.35f, 0.35f};
    Chunking ch;
    char err[256];
    int paper[4] = {2, 3, 4, 7};
    CHECK(chunking_from_sizes(paper, 4, 16, &ch, err, sizeof err) == 0);
    float w[4];
    chunk_weights_from_curve(&ch, proto, w);
    double means[4] = {0.76, (0.54 + 0.45 + 0.41) / 3, (0.38 + 0.36 + 0.35 + 0.35) / 4, 0.35};
    double tot = means[0] + means[1] + means[2] + means[3] + 4e-8;
    for (int j = 0; j < 4; j++) CHECK_CLOSE(w[j], (means[j] + 1e-8) / tot, 1e-6, 1e-6);

    /* sharper weights make a stronger test */
    const float wt[4] = {0.1f, 0.2f, 0.3f, 0.4f};
    int threads = engine_threads();
    engine_set_threads(1); /* as in the uniform test */
    for (int n_train = 1; n_train <= 3; n_train++) {
        Rng rng;
        rng_seed(&rng, 100 + n_train);
        enum { draws = 200000 };
        int hits[4] = {0};
        for (int d = 0; d < draws; d++) {
            int c[4];
            CHECK(chunk_select(ch.count, n_train, wt, &rng, c) == 0);
            for (int i = 0; i < n_train; i++) hits[c[i]]++;
        }
        /* exact inclusion probabilities of successive sampling without replacement */
        double incl[4] = {0};
        for (int a = 0; a < 4; a++) {
            double pa = wt[a];
            if (n_train >= 1) incl[a] += pa;
            for (int b = 0; b < 4; b++) {
                if (b == a) continue;
                double pb = wt[b];
                if (n_train >= 2) incl[a] += pb * pa / (1 - pb);
                for (int c = 0; c < 4 && n_train >= 3; c++) {
                    if (c == a || c == b) continue;
                    double pc = wt[c];
                    incl[a] += pb * pc / (1 - pb) * pa / (1 - pb - pc);
                }
            }
        }
        for (int a = 0; a < 4; a++) {
            double f = hits[a] / (double)draws, sd = sqrt(incl[a] * (1 - incl[a]) / draws);
            CHECK_MSG(fabs(f - incl[a]) < 5 * sd + 1e-12,
                      "%d of 4, chunk %d: frequency %.4f, probability %.4f", n_train, a, f,
                      incl[a]);
        }
        fprintf(stderr,
                "  weighted selection %d of 4, %d draws: inclusion %.4f %.4f %.4f %.4f (exact "
                "%.4f %.4f %.4f %.4f)\n",
                n_train, draws, hits[0] / (double)draws, hits[1] / (double)draws,
                hits[2] / (double)draws, hits[3] / (double)draws, incl[0], incl[1], incl[2],
                incl[3]);
    }
    engine_set_threads(threads);
}

/* ------------------------------------------------------------------------------------------ */
/* The clipped chunk loss                                                                      */

static void test_chunk_loss(void)
{
    float lo[3] = {-1.0f, -0.5f, 0.25f}, ln[3], d[3], r;
    int clipped;
    const float eps = 0.01f;
    /* r = exp(0.05) > 1 + eps */
    for (int k = 0; k < 3; k++) ln[k] = lo[k] + (k == 1 ? 0.15f : 0.0f);
    double rr = exp(0.05);
    /* A > 0: the clipped branch wins, no gradient */
    float loss = grpo_chunk_loss(ln, lo, 3, 2.0f, eps, d, &clipped, &r);
    CHECK_CLOSE(r, rr, 1e-6, 1e-6);
    CHECK(clipped == 1 && d[0] == 0.0f && d[1] == 0.0f && d[2] == 0.0f);
    CHECK_CLOSE(loss, -2.0 * 1.01, 1e-6, 1e-6);
    /* A < 0: the unclipped branch wins: d loss / d logp_k = -A r / size */
    loss = grpo_chunk_loss(ln, lo, 3, -2.0f, eps, d, &clipped, &r);
    CHECK(clipped == 0);
    CHECK_CLOSE(loss, 2.0 * rr, 1e-6, 1e-6);
    for (int k = 0; k < 3; k++) CHECK_CLOSE(d[k], 2.0 * rr / 3, 1e-6, 1e-6);
    /* r < 1 - eps mirrors it */
    loss = grpo_chunk_loss(lo, ln, 3, -2.0f, eps, d, &clipped, &r);
    CHECK(clipped == 1 && d[0] == 0.0f);
    CHECK_CLOSE(loss, 2.0 * 0.99, 1e-6, 1e-6);
    grpo_chunk_loss(lo, ln, 3, 2.0f, eps, d, &clipped, &r);
    CHECK(clipped == 0);
    CHECK_CLOSE(d[2], -2.0 * exp(-0.05) / 3, 1e-6, 1e-6);
    /* inside the range: the two branches tie, half + half = the full gradient */
    grpo_chunk_loss(lo, lo, 3, 1.5f, eps, d, &clipped, &r);
    CHECK(r == 1.0f && clipped == 0);
    CHECK_CLOSE(d[1], -1.5 / 3, 1e-7, 0);
    /* eps = 0 and r = 1 exactly: on both bounds, which clamp includes */
    grpo_chunk_loss(lo, lo, 3, 1.5f, 0.0f, d, &clipped, &r);
    CHECK(clipped == 0);
    CHECK_CLOSE(d[1], -1.5 / 3, 1e-7, 0);
    /* A = 0 outside the range: a tie of zeros, no gradient, not "clipped" */
    loss = grpo_chunk_loss(ln, lo, 3, 0.0f, eps, d, &clipped, &r);
    CHECK(loss == 0.0f && d[0] == 0.0f && clipped == 0);
    /* the chunk ratio is the geometric mean of the step ratios */
    float sr[3];
    double prod = 1.0;
    for (int k = 0; k < 3; k++) {
        float dd;
        grpo_chunk_loss(&ln[k], &lo[k], 1, 1.0f, 1.0f, &dd, NULL, &sr[k]);
        prod *= sr[k];
    }
    grpo_chunk_loss(ln, lo, 3, 1.0f, 1.0f, d, NULL, &r);
    CHECK_CLOSE(r, cbrt(prod), 1e-7, 1e-6);
    /* the derivative against central differences, away from the kinks */
    float A = -0.7f;
    grpo_chunk_loss(ln, lo, 3, A, 0.2f, d, NULL, NULL);
    for (int k = 0; k < 3; k++) {
        float h = 1e-3f, save = ln[k], tmp[3];
        ln[k] = save + h;
        double up = grpo_chunk_loss(ln, lo, 3, A, 0.2f, tmp, NULL, NULL);
        ln[k] = save - h;
        double dn = grpo_chunk_loss(ln, lo, 3, A, 0.2f, tmp, NULL, NULL);
        ln[k] = save;
        CHECK_CLOSE(d[k], (up - dn) / (2 * h), 1e-4, 1e-3);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* The model-level step against PyTorch                                                        */

typedef struct {
    StFile *f;
    Model m0, m1; /* theta0 (the rollout's), theta1 (perturbed) */
    Vocab vocab;
    Trajectory *tr;
    int n, steps;
    SdeKind sde;
    float eta;
} Fix;

static void fix_close(Fix *x)
{
    st_close(x->f);
    model_free(&x->m0);
    model_free(&x->m1);
    vocab_free(&x->vocab);
    trajectory_free(x->tr);
    memset(x, 0, sizeof *x);
}

/* Loads the fixture, both models and the recorded trajectory; returns 0, or -1 (reason
 * printed). */
static int fix_open(Fix *x)
{
    char err[512];
    memset(x, 0, sizeof *x);
    if (st_open(FIXTURES "grpo.safetensors", &x->f, err, sizeof err)) goto fail;
    Vocab v1;
    if (checkpoint_load(FIXTURES "tiny_model.safetensors", &x->m0, &x->vocab, NULL, err,
                        sizeof err) ||
        checkpoint_load(FIXTURES "tiny_model.safetensors", &x->m1, &v1, NULL, err, sizeof err))
        goto fail;
    vocab_free(&v1);
    perturb_params(x->m1.params, x->m1.num_params, strtod(st_meta(x->f, "perturb_scale"), NULL),
                   strtoull(st_meta(x->f, "perturb_seed"), NULL, 10));
    x->steps = atoi(st_meta(x->f, "steps"));
    x->n = atoi(st_meta(x->f, "groups")) * atoi(st_meta(x->f, "group_size"));
    if (sde_kind_from_name(st_meta(x->f, "sde"), &x->sde)) goto fail;
    x->eta = strtof(st_meta(x->f, "eta"), NULL);
    x->tr = trajectory_new(&x->m0.cfg, x->n, x->steps);
    size_t img = cfg_image_numel(&x->m0.cfg), T = (size_t)x->m0.cfg.text_len;
    int64_t sx[5] = {x->steps + 1, x->n, 16, 16, 3}, sl[2] = {x->steps, x->n};
    int64_t st[1] = {x->steps + 1}, stok[2] = {x->n, (int64_t)T};
    const float *xs = st_get_f32(x->f, "x", 5, sx, err, sizeof err);
    const float *lp = xs ? st_get_f32(x->f, "logp_old", 2, sl, err, sizeof err) : NULL;
    const float *sg = lp ? st_get_f32(x->f, "sigmas", 1, st, err, sizeof err) : NULL;
    const int32_t *tok = sg ? st_get_i32(x->f, "tokens", 2, stok, err, sizeof err) : NULL;
    if (!x->tr || !tok) goto fail;
    memcpy(x->tr->x, xs, (size_t)(x->steps + 1) * x->n * img * sizeof(float));
    memcpy(x->tr->logp, lp, (size_t)x->steps * x->n * sizeof(float));
    memcpy(x->tr->sigmas, sg, (size_t)(x->steps + 1) * sizeof(float));
    memcpy(x->tr->tokens, tok, (size_t)x->n * T * sizeof(int32_t));
    /* the schedule the C sampler would use, to the bit */
    float own[SAMPLER_MAX_STEPS + 1];
    flow_schedule(x->steps, strtof(st_meta(x->f, "shift"), NULL), own);
    CHECK(memcmp(own, sg, (size_t)(x->steps + 1) * sizeof(float)) == 0);
    return 0;
fail:
    fprintf(stderr, "  %s\n", err);
    fix_close(x);
    return -1;
}

typedef struct {
    const char *name;
    int n_items;
    GrpoItem items[64];
    GrpoConfig cfg;
    float scale;
    const float *ratio, *loss, *kl, *grad;
    const int32_t *clipped;
    const float *logp_old; /* guided and cps cases: [trainable, n], their policy's at theta0 */
} Case;

static int case_load(Fix *x, const char *name, Case *c)
{
    char key[64], err[256];
    memset(c, 0, sizeof *c);
    c->name = name;
    snprintf(key, sizeof key, "%s.items", name);
    const StTensor *ti = st_find(x->f, key);
    if (!ti || ti->ndim != 2 || ti->shape[1] != 3 || ti->shape[0] > 64) return -1;
    c->n_items = (int)ti->shape[0];
    const int32_t *it = st_get_i32(x->f, key, -1, NULL, err, sizeof err);
    snprintf(key, sizeof key, "%s.adv", name);
    const float *adv = st_get_f32(x->f, key, -1, NULL, err, sizeof err);
    if (!it || !adv) return -1;
    for (int i = 0; i < c->n_items; i++)
        c->items[i] = (GrpoItem){it[3 * i], it[3 * i + 1], it[3 * i + 2], adv[i]};
    snprintf(key, sizeof key, "%s.eps", name);
    c->cfg.clip_eps = strtof(st_meta(x->f, key), NULL);
    snprintf(key, sizeof key, "%s.kl_coef", name);
    c->cfg.kl_coef = strtof(st_meta(x->f, key), NULL);
    snprintf(key, sizeof key, "%s.scale", name);
    c->scale = strtof(st_meta(x->f, key), NULL);
    c->cfg.sde = x->sde;
    c->cfg.eta = x->eta;
    snprintf(key, sizeof key, "%s.cfg_scale", name);
    const char *w = st_meta(x->f, key);
    if (w) {
        c->cfg.guidance = 1;
        c->cfg.cfg_scale = strtof(w, NULL);
    }
    snprintf(key, sizeof key, "%s.sde", name);
    const char *sde = st_meta(x->f, key);
    if (sde && sde_kind_from_name(sde, &c->cfg.sde)) return -1;
    if (w || sde) { /* the recorded x scored by this case's own policy at theta0 */
        snprintf(key, sizeof key, "%s.logp_old", name);
        int64_t shape[2] = {x->steps - 1, x->n};
        if (!(c->logp_old = st_get_f32(x->f, key, 2, shape, err, sizeof err))) return -1;
    }
    snprintf(key, sizeof key, "%s.ratio", name);
    c->ratio = st_get_f32(x->f, key, -1, NULL, err, sizeof err);
    snprintf(key, sizeof key, "%s.loss", name);
    c->loss = st_get_f32(x->f, key, -1, NULL, err, sizeof err);
    snprintf(key, sizeof key, "%s.kl", name);
    c->kl = st_get_f32(x->f, key, -1, NULL, err, sizeof err);
    snprintf(key, sizeof key, "%s.grad", name);
    c->grad = st_get_f32(x->f, key, -1, NULL, err, sizeof err);
    snprintf(key, sizeof key, "%s.clipped", name);
    c->clipped = st_get_i32(x->f, key, -1, NULL, err, sizeof err);
    return c->ratio && c->loss && c->kl && c->grad && c->clipped ? 0 : -1;
}

/* Runs a case's items through grpo_items_backward into m->grads (zeroed first): per_call items
 * per call (0 = all in one call), at batch = the most rows a call needs. separate_ref: give the
 * reference its own activations (else it borrows the policy's). A guided case scores the
 * trajectory against its own logp_old (restored afterwards). */
static int run_case(Fix *x, Model *m, const Case *c, int per_traj_calls, int separate_ref,
                    GrpoItemStats *stats)
{
    char err[256];
    /* group the items into calls */
    int first[64], count[64], calls = 0, batch = 0;
    for (int i = 0; i < c->n_items;) {
        int j = i, rows = 0;
        while (j < c->n_items && (!per_traj_calls || c->items[j].traj == c->items[i].traj))
            rows += c->items[j++].size;
        first[calls] = i;
        count[calls++] = j - i;
        batch = rows > batch ? rows : batch;
        i = j;
    }
    batch *= grpo_rows_per_transition(&c->cfg);
    size_t lp_count = (size_t)(x->steps - 1) * x->n;
    float saved_logp[64];
    if (c->logp_old) {
        memcpy(saved_logp, x->tr->logp, lp_count * sizeof *saved_logp);
        memcpy(x->tr->logp, c->logp_old, lp_count * sizeof *saved_logp);
    }
    GrpoWorkspace *ws = grpo_workspace_new(&m->cfg, batch);
    Activations *a = acts_new(&m->cfg, batch);
    Activations *ra = separate_ref ? acts_new(&m->cfg, batch) : NULL;
    const Model *ref = c->cfg.kl_coef > 0 ? &x->m0 : NULL;
    int rc = ws && a && (!separate_ref || ra) ? 0 : -1;
    model_zero_grad(m);
    for (int k = 0; k < calls && rc == 0; k++) {
        rc = grpo_items_backward(ws, m, a, ref, ra, x->tr, &c->cfg, c->items + first[k], count[k],
                                 c->scale, stats + first[k], err, sizeof err);
        CHECK_MSG(rc == 0, "%s: %s", c->name, err);
    }
    if (c->logp_old) memcpy(x->tr->logp, saved_logp, lp_count * sizeof *saved_logp);
    grpo_workspace_free(ws);
    acts_free(a);
    acts_free(ra);
    return rc;
}

/* Worst per-tensor gradient error; prints the worst tensor. */
static double grad_err(const Model *m, const float *ref, const char **worst_name)
{
    double worst = 0.0;
    for (int i = 0; i < m->num_tensors; i++) {
        const TensorInfo *ti = &m->tensors[i];
        double e = test_rel_err(m->grads + ti->offset, ref + ti->offset, ti->numel);
        if (e > worst) {
            worst = e;
            *worst_name = ti->name;
        }
    }
    return worst;
}

/* The sampler settings of the fixture's rollout (groups of 3 sharing their initial noise). */
static void fix_sampler_config(const Fix *x, SamplerConfig *sc)
{
    sampler_config_default(sc);
    sc->steps = x->steps;
    sc->eta = x->eta;
    sc->noise_group = 3;
}

/* Every trainable transition of every trajectory as an item of its own, advantage 1, into
 * items; returns their count. */
static int every_transition(const Fix *x, GrpoItem *items)
{
    int i = 0;
    for (int b = 0; b < x->n; b++)
        for (int k = 0; k < x->steps - 1; k++) items[i++] = (GrpoItem){b, k, 1, 1.0f};
    return i;
}

static void test_ratio_one_at_rollout_parameters(void)
{
    Fix x;
    if (fix_open(&x)) TEST_SKIP("no grpo fixture");
    char err[256];
    GrpoItem items[64];
    int rows = every_transition(&x, items);
    GrpoConfig cfg = {.clip_eps = 0.2f, .sde = x.sde, .eta = x.eta, .kl_coef = 0.0f};
    GrpoWorkspace *ws = grpo_workspace_new(&x.m0.cfg, rows);
    Activations *a = acts_new(&x.m0.cfg, rows);
    GrpoItemStats st[64];
    /* (a) on the fixture's trajectory, whose logp_old PyTorch computed in float64 */
    CHECK(grpo_items_backward(ws, &x.m0, a, NULL, NULL, x.tr, &cfg, items, rows, 1.0f, st, err,
                              sizeof err) == 0);
    double worst = 0;
    for (int i = 0; i < rows; i++) worst = fmax(worst, fabs(st[i].ratio - 1.0));
    CHECK_MSG(worst <= 2e-6, "max |ratio - 1| = %.3e", worst);
    fprintf(stderr, "  theta0 on the PyTorch rollout: max |ratio - 1| over %d steps %.2e\n", rows,
            worst);

    /* and on a rollout of the C sampler with its own log-probabilities */
    SamplerConfig sc;
    fix_sampler_config(&x, &sc);
    for (int B = 1; B <= x.n; B += x.n - 1) {
        Sampler *s = sampler_new(&x.m0.cfg, &sc, x.n, B, err, sizeof err);
        Activations *sa = acts_new(&x.m0.cfg, B);
        Trajectory *tr = trajectory_new(&x.m0.cfg, x.n, x.steps);
        Rng rng;
        rng_seed(&rng, 9);
        CHECK(sampler_run(s, &x.m0, sa, x.tr->tokens, &rng, tr, err, sizeof err) == 0);
        CHECK(grpo_items_backward(ws, &x.m0, a, NULL, NULL, tr, &cfg, items, rows, 1.0f, st, err,
                                  sizeof err) == 0);
        worst = 0;
        int exact = 0;
        for (int i = 0; i < rows; i++) {
            worst = fmax(worst, fabs(st[i].ratio - 1.0));
            exact += st[i].ratio == 1.0f;
        }
        CHECK_MSG(worst <= 2e-6, "max |ratio - 1| = %.3e", worst);
        fprintf(stderr,
                "  theta0 on a C rollout sampled at batch %d: max |ratio - 1| %.2e (%d of %d "
                "exactly 1)\n",
                B, worst, exact, rows);
        sampler_free(s);
        acts_free(sa);
        trajectory_free(tr);
    }
    grpo_workspace_free(ws);
    acts_free(a);
    fix_close(&x);
}

/* A guided C rollout recomputed by the guided objective at the same parameters: ratio 1; the
 * unguided objective on the same trajectory sees another policy (ratio far from 1); and a batch
 * that holds the transitions but not their unconditional rows is refused. */
static void test_guided_ratio_one(void)
{
    Fix x;
    if (fix_open(&x)) TEST_SKIP("no grpo fixture");
    char err[256];
    GrpoItem items[64];
    int rows = every_transition(&x, items);
    GrpoConfig cfg = {
        .clip_eps = 0.2f, .sde = x.sde, .eta = x.eta, .guidance = 1, .cfg_scale = 2.5f};
    SamplerConfig sc;
    fix_sampler_config(&x, &sc);
    sc.guidance = 1;
    sc.cfg_scale = cfg.cfg_scale;
    Sampler *s = sampler_new(&x.m0.cfg, &sc, x.n, x.n, err, sizeof err);
    Activations *sa = acts_new(&x.m0.cfg, x.n);
    Trajectory *tr = trajectory_new(&x.m0.cfg, x.n, x.steps);
    GrpoWorkspace *ws = grpo_workspace_new(&x.m0.cfg, 2 * rows);
    Activations *a = acts_new(&x.m0.cfg, 2 * rows);
    Rng rng;
    rng_seed(&rng, 11);
    GrpoItemStats st[64];
    CHECK(sampler_run(s, &x.m0, sa, x.tr->tokens, &rng, tr, err, sizeof err) == 0);
    CHECK(grpo_items_backward(ws, &x.m0, a, NULL, NULL, tr, &cfg, items, rows, 1.0f, st, err,
                              sizeof err) == 0);
    double worst = 0;
    for (int i = 0; i < rows; i++) worst = fmax(worst, fabs(st[i].ratio - 1.0));
    CHECK_MSG(worst <= 2e-6, "guided: max |ratio - 1| = %.3e", worst);
    GrpoConfig plain = cfg;
    plain.guidance = 0;
    CHECK(grpo_items_backward(ws, &x.m0, a, NULL, NULL, tr, &plain, items, rows, 1.0f, st, err,
                              sizeof err) == 0);
    double off = 0;
    for (int i = 0; i < rows; i++) off = fmax(off, fabs(st[i].ratio - 1.0));
    CHECK_MSG(off > 1e-4, "unguided on a guided rollout: max |ratio - 1| only %.3e", off);
    fprintf(stderr,
            "  guided C rollout (w 2.5): max |ratio - 1| %.2e guided, %.2e when scored "
            "unguided\n",
            worst, off);
    GrpoWorkspace *ws1 = grpo_workspace_new(&x.m0.cfg, rows);
    Activations *a1 = acts_new(&x.m0.cfg, rows);
    CHECK(grpo_items_backward(ws1, &x.m0, a1, NULL, NULL, tr, &cfg, items, rows, 1.0f, st, err,
                              sizeof err) == -1);
    CHECK_MSG(strstr(err, "60 model rows with guidance, more than the batch of 30") != NULL, "%s",
              err);
    cfg.cfg_scale = NAN;
    CHECK(grpo_items_backward(ws, &x.m0, a, NULL, NULL, tr, &cfg, items, 1, 1.0f, st, err,
                              sizeof err) == -1);
    CHECK_MSG(strstr(err, "cfg_scale must be finite") != NULL, "%s", err);
    grpo_workspace_free(ws1);
    acts_free(a1);
    grpo_workspace_free(ws);
    acts_free(a);
    sampler_free(s);
    acts_free(sa);
    trajectory_free(tr);
    fix_close(&x);
}

static void test_cases_against_pytorch(void)
{
    Fix x;
    if (fix_open(&x)) TEST_SKIP("no grpo fixture");
    const char *names[] = {"step", "chunk", "seq", "kl", "cfg", "cfgkl", "cps"};
    size_t np = x.m1.num_params;
    float *g_one = malloc(np * sizeof *g_one);
    for (int ci = 0; ci < (int)(sizeof names / sizeof names[0]); ci++) {
        Case c;
        if (case_load(&x, names[ci], &c)) {
            CHECK_MSG(0, "fixture case %s is missing or malformed", names[ci]);
            continue;
        }
        GrpoItemStats st[64], st1[64];
        /* one call per trajectory (the reference borrows the policy's activations), then all
         * items in one call (the reference on its own activations) */
        if (run_case(&x, &x.m1, &c, 1, 0, st) || (memcpy(g_one, x.m1.grads, np * 4), 0) ||
            run_case(&x, &x.m1, &c, 0, 1, st1))
            continue;
        float ratio[64], loss[64], kl[64];
        int clip_ok = 1, n_clipped = 0;
        double ratio_abs = 0;
        for (int i = 0; i < c.n_items; i++) {
            ratio[i] = st[i].ratio;
            loss[i] = st[i].loss;
            kl[i] = st[i].kl;
            clip_ok &= st[i].clipped == c.clipped[i] && st1[i].clipped == c.clipped[i];
            n_clipped += st[i].clipped;
            ratio_abs = fmax(ratio_abs, fabs((double)st[i].ratio - c.ratio[i]));
            ratio_abs = fmax(ratio_abs, fabs((double)st1[i].ratio - c.ratio[i]));
        }
        double er = test_rel_err(ratio, c.ratio, (size_t)c.n_items);
        double el = test_rel_err(loss, c.loss, (size_t)c.n_items);
        double ek = test_rel_err(kl, c.kl, (size_t)c.n_items);
        CHECK_MSG(er <= TOLERANCE, "%s: ratio relative error %.3e", c.name, er);
        CHECK_MSG(ratio_abs <= 1e-6, "%s: ratio off by %.3e", c.name, ratio_abs);
        CHECK_MSG(el <= TOLERANCE, "%s: loss relative error %.3e", c.name, el);
        CHECK_MSG(ek <= TOLERANCE, "%s: kl relative error %.3e", c.name, ek);
        CHECK_MSG(clip_ok, "%s: clip decisions differ from PyTorch", c.name);
        const char *w1 = "", *w2 = "";
        double eg = grad_err(&x.m1, c.grad, &w2);
        memcpy(x.m1.grads, g_one, np * 4);
        double eg1 = grad_err(&x.m1, c.grad, &w1);
        CHECK_MSG(eg1 <= TOLERANCE, "%s, a call per trajectory: %s grad relative error %.3e",
                  c.name, w1, eg1);
        CHECK_MSG(eg <= TOLERANCE, "%s, one call: %s grad relative error %.3e", c.name, w2, eg);
        fprintf(stderr,
                "  %-5s %-5s eps %.3g kl %g cfg %g, %2d items (%d clipped): ratio |err| %.1e, "
                "loss %.1e, kl %.1e, grads %.1e (%s) / one call %.1e\n",
                c.name, sde_kind_name(c.cfg.sde), c.cfg.clip_eps, c.cfg.kl_coef,
                c.cfg.guidance ? c.cfg.cfg_scale : 1.0, c.n_items, n_clipped, ratio_abs, el, ek,
                eg1, w1, eg);
    }
    free(g_one);
    fix_close(&x);
}

/* (c): chunk sizes all 1 against a separate per-step computation written from the formulas,
 * one forward per step at batch 1, not through grpo_items_backward. */
static void test_step_level_separately(void)
{
    Fix x;
    if (fix_open(&x)) TEST_SKIP("no grpo fixture");
    Case c;
    CHECK(case_load(&x, "step", &c) == 0);
    GrpoItemStats st[64];
    if (run_case(&x, &x.m1, &c, 0, 0, st)) goto done;
    size_t np = x.m1.num_params, img = cfg_image_numel(&x.m1.cfg);
    int T = x.m1.cfg.text_len;
    float *g_grpo = malloc(np * sizeof *g_grpo);
    memcpy(g_grpo, x.m1.grads, np * sizeof *g_grpo);
    model_zero_grad(&x.m1);
    Activations *a = acts_new(&x.m1.cfg, 1);
    float *v = malloc(img * sizeof *v), *mu = malloc(img * sizeof *mu);
    float *dv = malloc(img * sizeof *dv);
    double eps = c.cfg.clip_eps;
    int n_clipped = 0;
    for (int i = 0; i < c.n_items; i++) {
        const GrpoItem *it = &c.items[i];
        int k = it->start, b = it->traj;
        const float *xk = x.tr->x + ((size_t)k * x.n + b) * img;
        const float *xn = x.tr->x + ((size_t)(k + 1) * x.n + b) * img;
        float t = x.tr->sigmas[k];
        model_forward(&x.m1, a, xk, &t, x.tr->tokens + (size_t)b * T, v);
        SdeStep s;
        sde_step_coeffs(x.tr->sigmas, x.steps, k, x.sde, x.eta, &s);
        sde_mean(&s, xk, v, img, mu);
        double lp = sde_logp(xn, mu, s.std, img);
        double r = exp(lp - x.tr->logp[(size_t)k * x.n + b]), A = it->advantage;
        CHECK_CLOSE(r, st[i].ratio, 1e-7, 0);
        /* PPO: the clip binds when the ratio has left the range in the advantage's direction */
        if ((A > 0 && r > 1 + eps) || (A < 0 && r < 1 - eps)) {
            n_clipped++;
            continue;
        }
        /* d loss / d logp = -A r, then d logp / d mu and d mu / d v */
        sde_logp_grad_mu(xn, mu, s.std, img, (float)(c.scale * -A * r), dv);
        for (size_t e = 0; e < img; e++) dv[e] *= s.cv;
        model_backward(&x.m1, a, dv);
    }
    const char *w = "";
    float *g_sep = x.m1.grads;
    double e_sep = 0;
    for (int i = 0; i < x.m1.num_tensors; i++) {
        const TensorInfo *ti = &x.m1.tensors[i];
        double e = test_rel_err(g_grpo + ti->offset, g_sep + ti->offset, ti->numel);
        if (e > e_sep) e_sep = e, w = ti->name;
    }
    CHECK_MSG(e_sep <= 1e-5, "step level vs per-step computation: %s relative error %.3e", w,
              e_sep);
    CHECK(n_clipped > 0);
    fprintf(stderr,
            "  sizes all 1 vs a separate per-step computation (%d steps, %d clipped): worst "
            "gradient relative error %.1e (%s)\n",
            c.n_items, n_clipped, e_sep, w);
    free(g_grpo);
    free(v);
    free(mu);
    free(dv);
    acts_free(a);
done:
    fix_close(&x);
}

/* (d): the chunk ratio is the geometric mean of the step ratios, in PyTorch's step
 * log-probabilities and in the engine's own step-level figures. */
static void test_geometric_mean(void)
{
    Fix x;
    if (fix_open(&x)) TEST_SKIP("no grpo fixture");
    char err[256];
    int trainable = x.steps - 1;
    int64_t sh[2] = {trainable, x.n};
    const float *lp1 = st_get_f32(x.f, "logp_theta1", 2, sh, err, sizeof err);
    CHECK_MSG(lp1 != NULL, "%s", err);
    /* every step of every trajectory at theta1 as size-1 items */
    GrpoItem steps[64];
    GrpoItemStats sst[64];
    int rows = x.n * trainable;
    for (int b = 0, i = 0; b < x.n; b++)
        for (int k = 0; k < trainable; k++, i++) steps[i] = (GrpoItem){b, k, 1, 0.0f};
    GrpoConfig cfg = {.clip_eps = 0.2f, .sde = x.sde, .eta = x.eta};
    GrpoWorkspace *ws = grpo_workspace_new(&x.m1.cfg, rows);
    Activations *a = acts_new(&x.m1.cfg, rows);
    CHECK(grpo_items_backward(ws, &x.m1, a, NULL, NULL, x.tr, &cfg, steps, rows, 1.0f, sst, err,
                              sizeof err) == 0);
    const char *names[] = {"chunk", "seq", "kl"};
    double worst_ref = 0, worst_c = 0;
    for (int ci = 0; ci < 3 && lp1; ci++) {
        Case c;
        if (case_load(&x, names[ci], &c)) continue;
        for (int i = 0; i < c.n_items; i++) {
            const GrpoItem *it = &c.items[i];
            double lr = 0, lc = 0;
            for (int k = it->start; k < it->start + it->size; k++) {
                lr += log(exp((double)lp1[(size_t)k * x.n + it->traj] -
                              x.tr->logp[(size_t)k * x.n + it->traj]));
                lc += log(sst[it->traj * trainable + k].ratio);
            }
            worst_ref = fmax(worst_ref, fabs(exp(lr / it->size) - c.ratio[i]));
            /* the engine's chunk ratio for this item */
            GrpoItemStats one;
            GrpoItem item = *it;
            CHECK(grpo_items_backward(ws, &x.m1, a, NULL, NULL, x.tr, &cfg, &item, 1, 0.0f, &one,
                                      err, sizeof err) == 0);
            worst_c = fmax(worst_c, fabs(exp(lc / it->size) - one.ratio));
        }
    }
    CHECK_MSG(worst_ref <= 1e-7, "PyTorch chunk ratio vs geometric mean: %.3e", worst_ref);
    CHECK_MSG(worst_c <= 1e-6, "engine chunk ratio vs geometric mean: %.3e", worst_c);
    fprintf(stderr,
            "  chunk ratio = geometric mean of step ratios: PyTorch %.1e, engine %.1e (abs)\n",
            worst_ref, worst_c);
    grpo_workspace_free(ws);
    acts_free(a);
    fix_close(&x);
}

/* KL to the policy itself is 0 and adds nothing; the KL gradient alone matches a finite
 * difference of the KL term through the model. */
static void test_kl_properties(void)
{
    Fix x;
    if (fix_open(&x)) TEST_SKIP("no grpo fixture");
    Case c;
    CHECK(case_load(&x, "kl", &c) == 0);
    size_t np = x.m1.num_params;
    GrpoItemStats st[64];
    Case nokl = c;
    nokl.cfg.kl_coef = 0.0f;
    run_case(&x, &x.m1, &nokl, 0, 0, st);
    float *g0 = malloc(np * sizeof *g0);
    memcpy(g0, x.m1.grads, np * sizeof *g0);
    /* ref = the policy itself */
    char err[256];
    int rows = 0;
    for (int i = 0; i < c.n_items; i++) rows += c.items[i].size;
    GrpoWorkspace *ws = grpo_workspace_new(&x.m1.cfg, rows);
    Activations *a = acts_new(&x.m1.cfg, rows);
    model_zero_grad(&x.m1);
    CHECK(grpo_items_backward(ws, &x.m1, a, &x.m1, NULL, x.tr, &c.cfg, c.items, c.n_items, c.scale,
                              st, err, sizeof err) == 0);
    for (int i = 0; i < c.n_items; i++) CHECK(st[i].kl == 0.0f);
    CHECK(memcmp(g0, x.m1.grads, np * sizeof *g0) == 0);
    free(g0);

    /* KL only (every advantage 0): the loss is kl_coef * KL; compare the gradient along one
     * direction with a central difference of the summed item losses */
    Case kc = c;
    for (int i = 0; i < kc.n_items; i++) kc.items[i].advantage = 0.0f;
    kc.cfg.kl_coef = 1000.0f;
    model_zero_grad(&x.m1);
    CHECK(grpo_items_backward(ws, &x.m1, a, &x.m0, NULL, x.tr, &kc.cfg, kc.items, kc.n_items, 1.0f,
                              st, err, sizeof err) == 0);
    /* direction: the fixture's perturbation pattern itself */
    float *dir = malloc(np * sizeof *dir), *save = malloc(np * sizeof *save);
    memcpy(save, x.m1.params, np * sizeof *save);
    double dot = 0;
    for (size_t j = 0; j < np; j++) {
        dir[j] = x.m1.params[j] - x.m0.params[j];
        dot += (double)dir[j] * x.m1.grads[j];
    }
    double h = 0.25, lsum[2];
    for (int s = 0; s < 2; s++) {
        for (size_t j = 0; j < np; j++) x.m1.params[j] = save[j] + (s ? -h : h) * dir[j];
        model_zero_grad(&x.m1);
        CHECK(grpo_items_backward(ws, &x.m1, a, &x.m0, NULL, x.tr, &kc.cfg, kc.items, kc.n_items,
                                  1.0f, st, err, sizeof err) == 0);
        lsum[s] = 0;
        for (int i = 0; i < kc.n_items; i++) lsum[s] += st[i].loss;
    }
    memcpy(x.m1.params, save, np * sizeof *save);
    double fd = (lsum[0] - lsum[1]) / (2 * h);
    CHECK_MSG(fabs(fd - dot) <= 2e-3 * fabs(dot), "KL gradient . dir %.6e, difference %.6e", dot,
              fd);
    fprintf(stderr, "  KL gradient along the perturbation: %.6e, central difference %.6e\n", dot,
            fd);
    free(dir);
    free(save);
    grpo_workspace_free(ws);
    acts_free(a);
    fix_close(&x);
}

static void test_threads_and_errors(void)
{
    Fix x;
    if (fix_open(&x)) TEST_SKIP("no grpo fixture");
    Case c;
    CHECK(case_load(&x, "kl", &c) == 0);
    size_t np = x.m1.num_params;
    GrpoItemStats st[64], st2[64];
    int threads = engine_threads();
    engine_set_threads(1);
    run_case(&x, &x.m1, &c, 0, 1, st);
    float *g1 = malloc(np * sizeof *g1);
    memcpy(g1, x.m1.grads, np * sizeof *g1);
    for (int nt = 2; nt <= 3; nt++) {
        engine_set_threads(nt);
        run_case(&x, &x.m1, &c, 0, 1, st2);
        CHECK_MSG(memcmp(g1, x.m1.grads, np * sizeof *g1) == 0, "%d threads: other gradients", nt);
        CHECK(memcmp(st, st2, (size_t)c.n_items * sizeof *st) == 0);
    }
    engine_set_threads(threads);
    free(g1);

    /* errors: nothing runs, the gradient is untouched */
    char err[256] = "";
    GrpoWorkspace *ws = grpo_workspace_new(&x.m1.cfg, 4);
    Activations *a = acts_new(&x.m1.cfg, 4), *a5 = acts_new(&x.m1.cfg, 5);
    model_zero_grad(&x.m1);
    GrpoConfig cfg = {.clip_eps = 0.2f, .sde = x.sde, .eta = x.eta};
    GrpoItem big = {0, 0, 5, 1.0f};
    CHECK(grpo_items_backward(ws, &x.m1, a, NULL, NULL, x.tr, &cfg, &big, 1, 1.0f, NULL, err,
                              sizeof err) == -1);
    CHECK_MSG(strstr(err, "5 transitions, more than the batch of 4") != NULL, "%s", err);
    GrpoItem two[2] = {{0, 0, 2, 1.0f}, {1, 2, 3, 1.0f}};
    CHECK(grpo_items_backward(ws, &x.m1, a, NULL, NULL, x.tr, &cfg, two, 2, 1.0f, NULL, err,
                              sizeof err) == -1); /* 2 + 3 rows */
    GrpoItem late = {0, 4, 2, 1.0f};
    CHECK(grpo_items_backward(ws, &x.m1, a, NULL, NULL, x.tr, &cfg, &late, 1, 1.0f, NULL, err,
                              sizeof err) == -1);
    CHECK_MSG(strstr(err, "item 0") && strstr(err, "5 trainable"), "%s", err);
    GrpoItem bad_traj = {6, 0, 1, 1.0f};
    CHECK(grpo_items_backward(ws, &x.m1, a, NULL, NULL, x.tr, &cfg, &bad_traj, 1, 1.0f, NULL, err,
                              sizeof err) == -1);
    CHECK_MSG(strstr(err, "trajectory 6") != NULL, "%s", err);
    GrpoItem ok = {1, 0, 2, 1.0f};
    CHECK(grpo_items_backward(ws, &x.m1, a5, NULL, NULL, x.tr, &cfg, &ok, 1, 1.0f, NULL, err,
                              sizeof err) == -1);
    CHECK_MSG(strstr(err, "batch 4") != NULL, "%s", err);
    GrpoConfig kl = cfg;
    kl.kl_coef = 0.1f;
    CHECK(grpo_items_backward(ws, &x.m1, a, NULL, NULL, x.tr, &kl, &ok, 1, 1.0f, NULL, err,
                              sizeof err) == -1);
    CHECK_MSG(strstr(err, "reference") != NULL, "%s", err);
    GrpoConfig bad = cfg;
    bad.clip_eps = -1.0f;
    CHECK(grpo_items_backward(ws, &x.m1, a, NULL, NULL, x.tr, &bad, &ok, 1, 1.0f, NULL, err,
                              sizeof err) == -1);
    CHECK_MSG(strstr(err, "clip_eps") != NULL, "%s", err);
    bad = cfg;
    bad.eta = 0.0f;
    CHECK(grpo_items_backward(ws, &x.m1, a, NULL, NULL, x.tr, &bad, &ok, 1, 1.0f, NULL, err,
                              sizeof err) == -1);
    int nonzero = 0;
    for (size_t j = 0; j < np; j++) nonzero |= x.m1.grads[j] != 0.0f;
    CHECK(!nonzero);
    /* no items: nothing to do */
    CHECK(grpo_items_backward(ws, &x.m1, a, NULL, NULL, x.tr, &cfg, NULL, 0, 1.0f, NULL, err,
                              sizeof err) == 0);
    /* padding rows contribute nothing: 2 rows at batch 4 == the same 2 rows at batch 2 */
    CHECK(grpo_items_backward(ws, &x.m1, a, NULL, NULL, x.tr, &cfg, &ok, 1, 1.0f, st, err,
                              sizeof err) == 0);
    float *g4 = malloc(np * sizeof *g4);
    memcpy(g4, x.m1.grads, np * sizeof *g4);
    GrpoWorkspace *ws2 = grpo_workspace_new(&x.m1.cfg, 2);
    Activations *a2 = acts_new(&x.m1.cfg, 2);
    model_zero_grad(&x.m1);
    CHECK(grpo_items_backward(ws2, &x.m1, a2, NULL, NULL, x.tr, &cfg, &ok, 1, 1.0f, st2, err,
                              sizeof err) == 0);
    const char *w = "";
    double e = grad_err(&x.m1, g4, &w);
    CHECK_MSG(e <= 1e-5, "batch 4 (2 padding rows) vs batch 2: %s %.3e", w, e);
    CHECK_CLOSE(st[0].ratio, st2[0].ratio, 1e-6, 0);
    CHECK(grpo_workspace_new(&x.m1.cfg, 0) == NULL);
    free(g4);
    grpo_workspace_free(ws);
    grpo_workspace_free(ws2);
    acts_free(a);
    acts_free(a2);
    acts_free(a5);
    fix_close(&x);
}

int main(void)
{
    TEST_RUN(test_advantages);
    TEST_RUN(test_chunking_sizes);
    TEST_RUN(test_chunking_optimal_brute_force);
    TEST_RUN(test_chunking_optimal_curves);
    TEST_RUN(test_select_basics);
    TEST_RUN(test_select_uniform_frequencies);
    TEST_RUN(test_select_weighted_frequencies);
    TEST_RUN(test_chunk_loss);
    TEST_RUN(test_ratio_one_at_rollout_parameters);
    TEST_RUN(test_guided_ratio_one);
    TEST_RUN(test_cases_against_pytorch);
    TEST_RUN(test_step_level_separately);
    TEST_RUN(test_geometric_mean);
    TEST_RUN(test_kl_properties);
    TEST_RUN(test_threads_and_errors);
    return test_summary("grpo");
}
