/*
 * test_align.c: the align reward (worker/rewards/align.h), validated on the world's own
 * renderings. The figures the issue asks for are printed and asserted here:
 *   - 1000 held-out scenes (every held-out prompt, several layouts) with their own captions:
 *     mean >= 0.97, at 32x32 and at 64x64;
 *   - the same scenes with captions shuffled between them: mean < 0.2;
 *   - Gaussian noise, salt-and-pepper speckle and blur on a correct rendering: every image
 *     scores strictly lower, and the mean drops by a clear margin;
 *   - washed-out, textured, fragmented and cluttered renderings, wrong colours, shapes,
 *     sizes, positions and relations all lose score, with partial credit for near misses;
 *   - an empty image scores ~0; scores are deterministic; the 8-bit path agrees; speed;
 *   - the reward components a grpo config weighs (rewards/reward.h) come from the right
 *     requirements, and their weighted sum is what the weights say.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "experiment.h"
#include "rewards/align.h"
#include "rewards/reward.h"
#include "rng.h"
#include "test.h"
#include "world/shapes.h"

#define NSCENES 1000

static AlignWorkspace *ws;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Scene k of the validation set: held-out prompt k % 64 with layout k. */
static const char *heldout_scene(int k, Scene *s)
{
    int n;
    const char *const *p = world_prompts(PROMPTS_HELDOUT, &n);
    const char *cap = p[k % n];
    if (world_scene_for_caption(cap, 2024, (uint64_t)k, s, NULL, 0) != 0) return NULL;
    return cap;
}

static float score(const char *prompt, const float *img, int S, AlignResult *r)
{
    AlignResult local;
    char err[256];
    if (!r) r = &local;
    if (align_score(ws, prompt, img, S, r, err, sizeof err) != 0) {
        fprintf(stderr, "  align_score: %s\n", err);
        return -1.0f;
    }
    return r->score;
}

static float score_scene(const Scene *s, const char *prompt, int S, float *img)
{
    world_render(s, S, img);
    return score(prompt, img, S, NULL);
}

static void print_result(const char *prompt, const AlignResult *r)
{
    fprintf(stderr, "    \"%s\": %.3f\n", prompt, r->score);
    for (int i = 0; i < r->num_requirements; i++)
        fprintf(stderr, "      %-8s %-28s %.3f  %s\n", r->req[i].kind, r->req[i].target,
                r->req[i].score, r->req[i].detail);
}

static void own_captions_at(int S)
{
    float *img = malloc((size_t)S * S * 3 * sizeof *img);
    double sum = 0;
    float worst = 1.0f;
    int below = 0;
    for (int k = 0; k < NSCENES; k++) {
        Scene s;
        const char *cap = heldout_scene(k, &s);
        float v = score_scene(&s, cap, S, img);
        sum += v;
        below += v < 0.9f;
        if (v < worst) {
            worst = v;
        }
    }
    double mean = sum / NSCENES;
    fprintf(stderr,
            "  %dx%d: %d held-out scenes with their own captions: mean %.4f, min %.4f, "
            "%d below 0.9\n",
            S, S, NSCENES, mean, worst, below);
    CHECK(mean >= 0.97);
    free(img);
}

static void test_own_captions_32(void)
{
    own_captions_at(32);
}

static void test_own_captions_64(void)
{
    own_captions_at(64);
}

/* Also the training prompts, and the world's own training scenes (random layouts). */
static void test_own_captions_train(void)
{
    enum { S = 32 };
    static float img[S * S * 3];
    double sum = 0;
    for (int k = 0; k < NSCENES; k++) {
        Scene s;
        world_sample_scene(77, (uint64_t)k, WORLD_SPLIT_TRAIN, &s);
        sum += score_scene(&s, s.caption, S, img);
    }
    fprintf(stderr, "  32x32: %d training scenes with their own captions: mean %.4f\n", NSCENES,
            sum / NSCENES);
    CHECK(sum / NSCENES >= 0.97);
}

static void test_shuffled_captions(void)
{
    enum { S = 32 };
    static float img[S * S * 3];
    double sum = 0;
    for (int k = 0; k < NSCENES; k++) {
        Scene s, other;
        heldout_scene(k, &s);
        /* another scene's caption: a different prompt (k + 1 + k % 63 modulo 64 never equals k) */
        const char *cap = heldout_scene(k + 1 + (k * 7) % 63, &other);
        sum += score_scene(&s, cap, S, img);
    }
    double mean = sum / NSCENES;
    fprintf(stderr, "  32x32: the same scenes with shuffled captions: mean %.4f\n", mean);
    CHECK(mean < 0.2);
}

/* ---- degradations of correct renderings */

typedef void (*Degrade)(float *img, int S, uint64_t seed);

static void add_gaussian(float *img, int S, uint64_t seed, float sigma)
{
    Rng r;
    rng_seed(&r, seed);
    static float z[64 * 64 * 3];
    rng_normal(&r, z, (size_t)S * S * 3);
    for (int i = 0; i < S * S * 3; i++) img[i] += sigma * z[i];
}

static void noise_01(float *img, int S, uint64_t seed)
{
    add_gaussian(img, S, seed, 0.1f); /* in [-1, 1] units: 5% of the range */
}

static void noise_02(float *img, int S, uint64_t seed)
{
    add_gaussian(img, S, seed, 0.2f);
}

/* Salt and pepper: a fraction of the pixels set to random colours. */
static void speckle(float *img, int S, uint64_t seed, float frac)
{
    Rng r;
    rng_seed(&r, seed);
    static float u[64 * 64 * 4];
    rng_uniform(&r, u, (size_t)S * S * 4);
    for (int p = 0; p < S * S; p++) {
        if (u[4 * p] >= frac) continue;
        for (int c = 0; c < 3; c++) img[3 * p + c] = 2.0f * u[4 * p + 1 + c] - 1.0f;
    }
}

static void speckle_2(float *img, int S, uint64_t seed)
{
    speckle(img, S, seed, 0.02f);
}

static void speckle_5(float *img, int S, uint64_t seed)
{
    speckle(img, S, seed, 0.05f);
}

/* Separable Gaussian blur with sigma in pixels (kernel radius 2 sigma), edges clamped. */
static void blur(float *img, int S, float sigma)
{
    static float tmp[64 * 64 * 3];
    float k[9];
    int R = (int)ceilf(2.0f * sigma);
    if (R > 4) R = 4;
    float norm = 0;
    for (int i = -R; i <= R; i++) norm += k[i + R] = expf(-0.5f * i * i / (sigma * sigma));
    for (int i = 0; i <= 2 * R; i++) k[i] /= norm;
    for (int pass = 0; pass < 2; pass++) {
        float *src = pass ? tmp : img, *dst = pass ? img : tmp;
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                for (int c = 0; c < 3; c++) {
                    float acc = 0;
                    for (int i = -R; i <= R; i++) {
                        int xx = pass ? x : x + i, yy = pass ? y + i : y;
                        xx = xx < 0 ? 0 : xx >= S ? S - 1 : xx;
                        yy = yy < 0 ? 0 : yy >= S ? S - 1 : yy;
                        acc += k[i + R] * src[3 * (yy * S + xx) + c];
                    }
                    dst[3 * (y * S + x) + c] = acc;
                }
    }
}

static void blur_07(float *img, int S, uint64_t seed)
{
    (void)seed;
    blur(img, S, 0.7f);
}

static void blur_10(float *img, int S, uint64_t seed)
{
    (void)seed;
    blur(img, S, 1.0f);
}

/* Every object pixel moved halfway to the background. */
static void washed_out(float *img, int S, uint64_t seed)
{
    (void)seed;
    for (int i = 0; i < S * S * 3; i++) {
        float bg = 2.0f * world_background[i % 3] - 1.0f;
        img[i] = 0.5f * (img[i] + bg);
    }
}

/* Noise only where there is an object: a textured object on a clean background. */
static void textured(float *img, int S, uint64_t seed)
{
    Rng r;
    rng_seed(&r, seed);
    static float z[64 * 64 * 3];
    rng_normal(&r, z, (size_t)S * S * 3);
    for (int p = 0; p < S * S; p++) {
        int object = 0;
        for (int c = 0; c < 3; c++) object |= img[3 * p + c] != 2.0f * world_background[c] - 1.0f;
        for (int c = 0; object && c < 3; c++) img[3 * p + c] += 0.25f * z[3 * p + c];
    }
}

/* Background-coloured stripes every fourth row: every object broken into pieces. */
static void fragmented(float *img, int S, uint64_t seed)
{
    (void)seed;
    for (int y = 1; y < S; y += 4)
        for (int x = 0; x < S; x++)
            for (int c = 0; c < 3; c++)
                img[3 * (y * S + x) + c] = 2.0f * world_background[c] - 1.0f;
}

static const struct {
    const char *name;
    Degrade fn;
    float min_drop;  /* the mean must fall at least this much */
    int every_image; /* and every image strictly */
} degradations[] = {
    {"gaussian noise sigma 0.1", noise_01, 0.15f, 1},
    {"gaussian noise sigma 0.2", noise_02, 0.5f, 1},
    {"speckle 2% of pixels", speckle_2, 0.15f, 1},
    {"speckle 5% of pixels", speckle_5, 0.3f, 1},
    {"blur sigma 0.7 px", blur_07, 0.15f, 1},
    {"blur sigma 1 px", blur_10, 0.3f, 1},
    {"washed out halfway", washed_out, 0.5f, 1},
    {"textured objects", textured, 0.3f, 1},
    {"fragmented by stripes", fragmented, 0.3f, 1},
};

static void test_degradations(void)
{
    enum { S = 32, N = 256 };
    static float clean_img[S * S * 3], img[S * S * 3];
    for (size_t d = 0; d < sizeof degradations / sizeof degradations[0]; d++) {
        double before = 0, after = 0;
        int not_lower = 0;
        for (int k = 0; k < N; k++) {
            Scene s;
            const char *cap = heldout_scene(k, &s);
            float a = score_scene(&s, cap, S, clean_img);
            memcpy(img, clean_img, sizeof img);
            degradations[d].fn(img, S, (uint64_t)k + 1);
            float b = score(cap, img, S, NULL);
            before += a;
            after += b;
            if (!(b < a) && not_lower++ < 2) {
                AlignResult r;
                score(cap, img, S, &r);
                fprintf(stderr, "  %s: not lower (%.4f -> %.4f) on\n", degradations[d].name, a, b);
                print_result(cap, &r);
            }
        }
        before /= N;
        after /= N;
        fprintf(stderr, "  %-26s mean %.3f -> %.3f (drop %.3f), %d of %d images not lower\n",
                degradations[d].name, before, after, before - after, not_lower, N);
        CHECK(before - after >= degradations[d].min_drop);
        if (degradations[d].every_image) CHECK(not_lower == 0);
    }
}

/* An extra object the prompt does not ask for costs score; a second one more. */
static void test_clutter(void)
{
    enum { S = 32 };
    static float img[S * S * 3];
    Scene s;
    world_scene_for_caption("a red circle", 1, 0, &s, NULL, 0);
    s.objects[0].cx = 0.25f, s.objects[0].cy = 0.25f;
    float base = score_scene(&s, s.caption, S, img);
    s.num_objects = 2;
    s.objects[1] = (SceneObject){SHAPE_SQUARE, 5, SIZE_MEDIUM, 0.7f, 0.7f, 0.12f};
    float one = score_scene(&s, s.caption, S, img);
    s.num_objects = 3;
    s.objects[2] = (SceneObject){SHAPE_TRIANGLE, 3, SIZE_SMALL, 0.25f, 0.75f, 0.08f};
    float two = score_scene(&s, s.caption, S, img);
    fprintf(stderr,
            "  \"a red circle\": alone %.3f, with a blue square %.3f, and a green "
            "triangle %.3f\n",
            base, one, two);
    CHECK(base > 0.97f);
    CHECK(one < base - 0.3f);
    CHECK(two < one);
    /* counting: a third red circle for "two red circles" */
    world_scene_for_caption("two red circles", 1, 0, &s, NULL, 0);
    float two_ok = score_scene(&s, s.caption, S, img);
    world_scene_for_caption("three red circles", 1, 0, &s, NULL, 0);
    float three = score_scene(&s, "two red circles", S, img);
    world_scene_for_caption("a red circle", 1, 0, &s, NULL, 0);
    float one_only = score_scene(&s, "two red circles", S, img);
    fprintf(stderr, "  \"two red circles\": two %.3f, three %.3f, one %.3f\n", two_ok, three,
            one_only);
    CHECK(two_ok > 0.97f);
    CHECK(three < 0.7f);
    CHECK(one_only < 0.7f);
}

static void test_empty_image(void)
{
    enum { S = 32 };
    static float img[S * S * 3];
    Scene s;
    memset(&s, 0, sizeof s);
    int n;
    const char *const *p = world_prompts(PROMPTS_HELDOUT, &n);
    float worst = 0;
    for (int i = 0; i < n; i++) worst = fmaxf(worst, score_scene(&s, p[i], S, img));
    fprintf(stderr, "  empty background: at most %.4f over the held-out prompts\n", worst);
    CHECK(worst < 0.01f);
    /* a uniformly wrong image: all one palette colour */
    for (int i = 0; i < S * S * 3; i++) img[i] = 2.0f * world_palette[0].rgb[i % 3] - 1.0f;
    float flood = score("a red square", img, S, NULL);
    fprintf(stderr, "  an image flooded red for \"a red square\": %.4f\n", flood);
    CHECK(flood < 0.3f);
}

/* Near misses earn partial credit, ordered by how near they are. */
static void test_reward_components(void)
{
    static const char *const kinds[] = {"align",    "clean", "object", "size", "position",
                                        "relation", "count", "pref",   "clip", "remote"};
    for (int k = 0; k < REWARD_COMPONENTS; k++)
        CHECK(strcmp(experiment_reward_names[k], kinds[k]) == 0);
    enum { S = 32 };
    static float img[S * S * 3];
    const char *const prompts[] = {"a red square", "two green triangles",
                                   "a blue circle left of a yellow square"};
    for (int p = 0; p < 3; p++) {
        Scene s;
        AlignResult res;
        CHECK(world_scene_for_caption(prompts[p], 5, (uint64_t)p, &s, NULL, 0) == 0);
        if (p == 2) s.objects[0].color = 1; /* orange where blue was asked */
        world_render(&s, S, img);
        CHECK(score(prompts[p], img, S, &res) >= 0);
        float comp[REWARD_COMPONENTS];
        reward_components(&res, comp);
        CHECK(comp[REWARD_ALIGN] == res.score && comp[REWARD_CLEAN] == res.clean);
        CHECK(comp[REWARD_PREF] == 0 && comp[REWARD_CLIP] == 0 && comp[REWARD_REMOTE] == 0);
        for (int k = REWARD_OBJECT; k < REWARD_PREF; k++) {
            double sum = 0;
            int n = 0;
            for (int i = 0; i < res.num_requirements; i++)
                if (strcmp(res.req[i].kind, kinds[k]) == 0) sum += res.req[i].score, n++;
            CHECK_MSG(fabsf(comp[k] - (n ? (float)(sum / n) : 1.0f)) < 1e-6f, "\"%s\" %s: %g",
                      prompts[p], kinds[k], comp[k]);
        }
        if (p == 1) CHECK(comp[REWARD_RELATION] == 1.0f && comp[REWARD_COUNT_KIND] > 0.9f);
        if (p == 2) /* the wrong colour costs its object (and the relation it cannot anchor) */
            CHECK(comp[REWARD_OBJECT] < 0.8f && comp[REWARD_RELATION] < 0.5f &&
                  comp[REWARD_SIZE] == 1.0f && comp[REWARD_COUNT_KIND] == 1.0f);
        ConfigWeights w = {{0}};
        w.w[REWARD_ALIGN] = 1, w.w[REWARD_CLEAN] = 0.5, w.w[REWARD_COUNT_KIND] = 2;
        float want = comp[REWARD_ALIGN] + 0.5f * comp[REWARD_CLEAN] + 2 * comp[REWARD_COUNT_KIND];
        CHECK(fabsf(reward_weighted(&w, comp) - want) < 1e-6f);
    }
}

static void test_partial_credit(void)
{
    enum { S = 32 };
    static float img[S * S * 3];
    Scene s;
    const char *cap = "a red square";
    world_scene_for_caption(cap, 3, 0, &s, NULL, 0);
    float right = score_scene(&s, cap, S, img);
    s.objects[0].color = 1; /* orange: the nearest colour to red */
    float near = score_scene(&s, cap, S, img);
    s.objects[0].color = 5; /* blue */
    float far = score_scene(&s, cap, S, img);
    fprintf(stderr, "  \"%s\": red %.3f, orange %.3f, blue %.3f\n", cap, right, near, far);
    CHECK(right > 0.97f);
    CHECK(near > 0.05f && near < 0.7f);
    CHECK(far < near);
    CHECK(far < 0.02f);

    /* a colour between the palette's red and orange scores between them */
    static float mix[S * S * 3];
    s.objects[0].color = 0;
    world_render(&s, S, img);
    s.objects[0].color = 1;
    world_render(&s, S, mix);
    for (int i = 0; i < S * S * 3; i++) mix[i] = 0.75f * img[i] + 0.25f * mix[i];
    float between = score(cap, mix, S, NULL);
    fprintf(stderr, "  a quarter of the way from red to orange: %.3f\n", between);
    CHECK(between < right && between > near);

    /* shapes: a circle or a triangle where a square was asked */
    s.objects[0].color = 0;
    s.objects[0].shape = SHAPE_CIRCLE;
    float circle = score_scene(&s, cap, S, img);
    s.objects[0].shape = SHAPE_TRIANGLE;
    float triangle = score_scene(&s, cap, S, img);
    fprintf(stderr, "  \"%s\": circle %.3f, triangle %.3f\n", cap, circle, triangle);
    CHECK(circle < 0.5f && triangle < circle);
    CHECK(circle > 0.0f); /* similar shapes earn a little */

    /* sizes */
    world_scene_for_caption("a large red square", 3, 0, &s, NULL, 0);
    float large = score_scene(&s, "a large red square", S, img);
    s.objects[0].radius = world_size_radius[SIZE_MEDIUM];
    float medium = score_scene(&s, "a large red square", S, img);
    s.objects[0].radius = world_size_radius[SIZE_SMALL];
    float small = score_scene(&s, "a large red square", S, img);
    fprintf(stderr, "  \"a large red square\": large %.3f, medium %.3f, small %.3f\n", large,
            medium, small);
    CHECK(large > 0.97f && medium < large - 0.2f && small < medium);

    /* positions: the object moved from the top towards the bottom */
    world_scene_for_caption("a red square at the top", 3, 0, &s, NULL, 0);
    float prev = 2.0f;
    int monotone = 1;
    for (float y = 0.2f; y <= 0.81f; y += 0.1f) {
        s.objects[0].cy = y;
        float v = score_scene(&s, "a red square at the top", S, img);
        monotone &= v <= prev;
        prev = v;
    }
    CHECK(monotone);
    CHECK(prev < 0.55f);

    /* relations: the two objects swapped */
    cap = "a red square left of a blue triangle";
    world_scene_for_caption(cap, 3, 0, &s, NULL, 0);
    float holds = score_scene(&s, cap, S, img);
    SceneObject t = s.objects[0];
    s.objects[0].cx = s.objects[1].cx, s.objects[0].cy = s.objects[1].cy;
    s.objects[1].cx = t.cx, s.objects[1].cy = t.cy;
    float swapped = score_scene(&s, cap, S, img);
    fprintf(stderr, "  \"%s\": holds %.3f, swapped %.3f\n", cap, holds, swapped);
    CHECK(holds > 0.97f);
    CHECK(swapped < 0.7f && swapped > 0.5f); /* both objects right, the relation wrong */
}

/* Scores spread: GRPO needs groups whose rewards differ. Many small perturbations of one scene
 * give many distinct scores. */
static void test_graded(void)
{
    enum { S = 32 };
    static float img[S * S * 3];
    Scene s;
    const char *cap = "a purple triangle above a cyan circle";
    world_scene_for_caption(cap, 4, 0, &s, NULL, 0);
    float seen[40];
    int distinct = 0;
    for (int i = 0; i < 40; i++) {
        world_render(&s, S, img);
        add_gaussian(img, S, (uint64_t)i + 100, 0.01f * (float)(i % 8));
        float v = score(cap, img, S, NULL);
        int dup = 0;
        for (int j = 0; j < distinct; j++) dup |= seen[j] == v;
        if (!dup) seen[distinct++] = v;
    }
    fprintf(stderr, "  40 noisy variants of one scene: %d distinct scores\n", distinct);
    CHECK(distinct >= 30);
}

static void test_deterministic_and_rgb8(void)
{
    enum { S = 32 };
    static float img[S * S * 3];
    static uint8_t rgb[S * S * 3];
    float max_diff[2] = {0, 0};
    for (int k = 0; k < 400; k++) {
        Scene s;
        const char *cap = heldout_scene(k, &s);
        world_render(&s, S, img);
        int noisy = k % 2;
        if (noisy) noise_01(img, S, (uint64_t)k);
        AlignResult a, b, c;
        score(cap, img, S, &a);
        CHECK(align_score(NULL, cap, img, S, &b, NULL, 0) == 0); /* no workspace */
        CHECK(memcmp(&a, &b, sizeof a) == 0);
        for (int i = 0; i < S * S * 3; i++) {
            float v = (img[i] + 1.0f) * 127.5f;
            rgb[i] = (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : v + 0.5f);
        }
        CHECK(align_score_rgb8(ws, cap, rgb, S, S, &c, NULL, 0) == 0);
        max_diff[noisy] = fmaxf(max_diff[noisy], fabsf(c.score - a.score));
    }
    fprintf(stderr,
            "  8-bit against float: largest difference %.4f on clean renderings, %.4f "
            "on noisy ones\n",
            max_diff[0], max_diff[1]);
    CHECK(max_diff[0] < 0.01f);
    CHECK(max_diff[1] < 0.1f);
}

static void test_errors(void)
{
    static float img[16 * 16 * 3];
    static uint8_t rgb[16 * 12 * 3];
    AlignResult r;
    char err[256] = "";
    CHECK(align_score(ws, "a red blob", img, 16, &r, err, sizeof err) == -1);
    CHECK(strstr(err, "a red blob") && strstr(err, "word 3 \"blob\""));
    CHECK(align_score(ws, "a red circle", img, 0, &r, err, sizeof err) == -1);
    CHECK(strstr(err, "side 0"));
    CHECK(align_score(ws, "a red circle", img, 65, &r, err, sizeof err) == -1);
    CHECK(strstr(err, "workspace"));
    CHECK(align_score_rgb8(ws, "a red circle", rgb, 16, 12, &r, err, sizeof err) == -1);
    CHECK(strstr(err, "16x12"));
    CHECK(align_workspace_new(0) == NULL);
    CHECK(align_workspace_new(ALIGN_MAX_SIZE + 1) == NULL);
    /* NaN and out-of-range pixels are clamped, never propagated */
    for (int i = 0; i < 16 * 16 * 3; i++) img[i] = i % 7 == 0 ? NAN : i % 5 == 0 ? 7.0f : -3.0f;
    CHECK(align_score(ws, "a red circle", img, 16, &r, err, sizeof err) == 0);
    CHECK(r.score >= 0.0f && r.score <= 1.0f);
}

/* Any pixels at any small size: a score in [0, 1], never NaN. */
static void test_random_images(void)
{
    static float img[64 * 64 * 3];
    int n, bad = 0;
    const char *const *p = world_prompts(PROMPTS_TRAIN, &n);
    for (int k = 0; k < 300; k++) {
        int S = 1 + k % 64;
        Rng r;
        rng_seed(&r, (uint64_t)k);
        rng_uniform(&r, img, (size_t)S * S * 3);
        /* uniform noise, or blocks of a few flat colours */
        for (int i = 0; i < S * S * 3; i++)
            img[i] = k % 3 ? 2.0f * img[i] - 1.0f : (img[i - i % 12] > 0.5f ? 1.0f : -0.4f);
        AlignResult res;
        if (align_score(ws, p[k % n], img, S, &res, NULL, 0) != 0 || !(res.score >= 0.0f) ||
            !(res.score <= 1.0f))
            bad++;
        for (int i = 0; i < res.num_requirements; i++)
            bad += !(res.req[i].score >= 0.0f && res.req[i].score <= 1.0f);
    }
    CHECK(bad == 0);
}

static void test_speed(void)
{
    enum { S = 32, N = 256 };
    static float imgs[N][S * S * 3];
    const char *caps[N];
    for (int k = 0; k < N; k++) {
        Scene s;
        caps[k] = heldout_scene(k, &s);
        world_render(&s, S, imgs[k]);
        if (k % 2) noise_01(imgs[k], S, (uint64_t)k); /* noisy images have more components */
    }
    double best = 1e9;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_s();
        for (int k = 0; k < N; k++) score(caps[k], imgs[k], S, NULL);
        double dt = (now_s() - t0) / N;
        if (dt < best) best = dt;
    }
    fprintf(stderr, "  %.1f us per 32x32 image (half of them noisy)\n", best * 1e6);
#if defined(__SANITIZE_ADDRESS__)
    CHECK(best < 5e-3);
#else
    CHECK(best < 2e-4);
#endif
}

int main(void)
{
    ws = align_workspace_new(64);
    TEST_RUN(test_own_captions_32);
    TEST_RUN(test_own_captions_64);
    TEST_RUN(test_own_captions_train);
    TEST_RUN(test_shuffled_captions);
    TEST_RUN(test_degradations);
    TEST_RUN(test_clutter);
    TEST_RUN(test_empty_image);
    TEST_RUN(test_partial_credit);
    TEST_RUN(test_reward_components);
    TEST_RUN(test_graded);
    TEST_RUN(test_deterministic_and_rgb8);
    TEST_RUN(test_errors);
    TEST_RUN(test_random_images);
    TEST_RUN(test_speed);
    align_workspace_free(ws);
    return test_summary("align");
}
