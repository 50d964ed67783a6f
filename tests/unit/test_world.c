/*
 * test_world.c: the shapes world (worker/world/shapes.h): determinism, the grammar and the
 * vocabulary, the held-out split, the prompt sets (pinned by a hash: changing them needs a new
 * WORLD_VERSION), layouts that make every caption true, and the renderer (exact background and
 * object colours, anti-aliased edges, areas, speed).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "world/shapes.h"
#include "test.h"
#include "tokenizer.h"

#define SCENES 20000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float dist3(const float *a, const float *b)
{
    return sqrtf((a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) +
                 (a[2] - b[2]) * (a[2] - b[2]));
}

static void test_palette_separation(void)
{
    CHECK(world_palette_size == 8);
    float worst_pair = 9.0f, worst_bg = 9.0f;
    for (int i = 0; i < world_palette_size; i++) {
        worst_bg = fminf(worst_bg, dist3(world_palette[i].rgb, world_background));
        for (int j = i + 1; j < world_palette_size; j++)
            worst_pair = fminf(worst_pair, dist3(world_palette[i].rgb, world_palette[j].rgb));
    }
    fprintf(stderr, "  closest colours %.3f apart, closest to the background %.3f\n", worst_pair,
            worst_bg);
    CHECK(worst_pair >= 0.4f);
    CHECK(worst_bg >= 0.6f);
}

static void test_determinism(void)
{
    for (int split = 0; split < 3; split++) {
        for (uint64_t i = 0; i < 200; i++) {
            Scene a, b;
            memset(&a, 0x55, sizeof a); /* padding and unused objects must not matter */
            memset(&b, 0xaa, sizeof b);
            world_sample_scene(7, i, (WorldSplit)split, &a);
            world_sample_scene(7, i, (WorldSplit)split, &b);
            CHECK(memcmp(&a, &b, sizeof a) == 0);
        }
    }
    Scene a, b, c;
    world_sample_scene(7, 3, WORLD_SPLIT_ALL, &a);
    world_sample_scene(7, 4, WORLD_SPLIT_ALL, &b);
    world_sample_scene(8, 3, WORLD_SPLIT_ALL, &c);
    CHECK(memcmp(&a, &b, sizeof a) != 0);
    CHECK(memcmp(&a, &c, sizeof a) != 0);
    /* scene i does not depend on having generated scenes before it */
    Scene late;
    world_sample_scene(7, 123456789, WORLD_SPLIT_TRAIN, &late);
    for (uint64_t i = 0; i < 50; i++) world_sample_scene(7, i, WORLD_SPLIT_TRAIN, &a);
    world_sample_scene(7, 123456789, WORLD_SPLIT_TRAIN, &b);
    CHECK(memcmp(&late, &b, sizeof b) == 0);
}

/* Every caption tokenizes with vocabulary words only, within 12 tokens (the small model's
 * text_len), and every vocabulary word is used somewhere. */
static void test_vocabulary(void)
{
    int nv;
    const char *const *words = world_vocab(&nv);
    Vocab v;
    char err[256];
    CHECK(vocab_from_words(&v, words, nv, err, sizeof err) == 0);
    if (v.size == 0) return;
    int *used = calloc((size_t)nv, sizeof *used);
    int longest = 0, bad = 0;
    int32_t ids[32];
    for (int k = 0; k < SCENES + 400; k++) {
        const char *cap;
        Scene s;
        int n;
        if (k < SCENES) {
            world_sample_scene(11, (uint64_t)k, WORLD_SPLIT_ALL, &s);
            cap = s.caption;
        } else {
            const char *const *p = world_prompts(k % 2 ? PROMPTS_TRAIN : PROMPTS_HELDOUT, &n);
            cap = p[((k - SCENES) / 2) % n];
        }
        int count = tokenize(&v, cap, 32, ids);
        if (count > longest) longest = count;
        for (int i = 0; i < count && i < 32; i++) {
            if (ids[i] == TOKEN_UNK && bad++ < 5)
                fprintf(stderr, "  unknown word in \"%s\"\n", cap);
            used[ids[i]]++;
        }
    }
    fprintf(stderr, "  %d vocabulary words, longest caption %d tokens\n", nv, longest);
    CHECK(bad == 0);
    CHECK(longest <= 12);
    CHECK(longest <= WORLD_MAX_WORDS);
    for (int i = 2; i < nv; i++) CHECK_MSG(used[i] > 0, "word \"%s\" never used", words[i]);
    free(used);
    vocab_free(&v);
}

static void test_heldout_split(void)
{
    int train_held = 0, held_not = 0, all_held = 0;
    int kinds_train[CAPTION_KINDS] = {0}, kinds_held[CAPTION_KINDS] = {0};
    int rel_rule = 0;
    for (uint64_t i = 0; i < SCENES; i++) {
        Scene s;
        CaptionSpec spec;
        world_sample_scene(3, i, WORLD_SPLIT_TRAIN, &s);
        if (world_caption_is_heldout(s.caption) && train_held++ < 5)
            fprintf(stderr, "  train scene %d: \"%s\"\n", (int)i, s.caption);
        if (world_parse_caption(s.caption, &spec, NULL, 0) == 0) kinds_train[spec.kind]++;
        world_sample_scene(3, i, WORLD_SPLIT_HELDOUT, &s);
        if (!world_caption_is_heldout(s.caption) && held_not++ < 5)
            fprintf(stderr, "  held-out scene %d: \"%s\"\n", (int)i, s.caption);
        if (world_parse_caption(s.caption, &spec, NULL, 0) == 0) {
            kinds_held[spec.kind]++;
            rel_rule += spec.kind == CAPTION_RELATION && spec.relation == REL_ABOVE &&
                        spec.shape[0] == SHAPE_TRIANGLE;
        }
        world_sample_scene(3, i, WORLD_SPLIT_ALL, &s);
        all_held += world_caption_is_heldout(s.caption);
    }
    fprintf(stderr,
            "  split ALL: %.1f%% of scenes held out; held-out split: %d by the relation "
            "rule\n",
            100.0 * all_held / SCENES, rel_rule);
    CHECK(train_held == 0);
    CHECK(held_not == 0);
    CHECK(all_held > SCENES / 10 && all_held < SCENES / 2);
    CHECK(rel_rule > 0);
    for (int k = 0; k < CAPTION_KINDS; k++) CHECK(kinds_train[k] > 0 && kinds_held[k] > 0);

    CHECK(world_caption_is_heldout("a blue circle"));
    CHECK(world_caption_is_heldout("two yellow triangles"));
    CHECK(world_caption_is_heldout("a large green square at the top"));
    CHECK(world_caption_is_heldout("a red circle left of a pink square"));
    CHECK(world_caption_is_heldout("a red triangle above a cyan circle"));
    CHECK(!world_caption_is_heldout("a cyan circle below a red triangle"));
    CHECK(!world_caption_is_heldout("a red circle above a cyan triangle"));
    CHECK(!world_caption_is_heldout("a blue square and a yellow circle"));
    CHECK(world_caption_is_heldout("Big BLUE circles!")); /* outside the grammar too */
}

/* FNV-1a over the prompts, newline-joined. */
static uint64_t prompts_hash(PromptSetKind kind)
{
    int n;
    const char *const *p = world_prompts(kind, &n);
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) {
        for (const char *c = p[i]; *c; c++) h = (h ^ (unsigned char)*c) * 1099511628211ull;
        h = (h ^ '\n') * 1099511628211ull;
    }
    return h;
}

static void test_prompt_sets(void)
{
    int nt, nh;
    const char *const *t = world_prompts(PROMPTS_TRAIN, &nt);
    const char *const *h = world_prompts(PROMPTS_HELDOUT, &nh);
    CHECK(nt == 256);
    CHECK(nh == 64);
    int kinds[2][CAPTION_KINDS] = {{0}}, sized = 0, placed = 0, rel_rule = 0;
    int templates[2][TEMPLATE_KINDS] = {{0}};
    for (int set = 0; set < 2; set++) {
        const char *const *p = set ? h : t;
        int n = set ? nh : nt;
        for (int i = 0; i < n; i++) {
            CaptionSpec spec;
            char err[256], canon[WORLD_CAPTION_MAX];
            CHECK_MSG(world_parse_caption(p[i], &spec, err, sizeof err) == 0, "%s: %s", p[i], err);
            world_format_caption(&spec, canon, sizeof canon);
            CHECK_MSG(strcmp(canon, p[i]) == 0, "\"%s\" formats as \"%s\"", p[i], canon);
            kinds[set][spec.kind]++;
            templates[set][world_caption_template(&spec)]++;
            sized += spec.size != SIZE_MEDIUM;
            placed += spec.position != POS_ANY;
            rel_rule += set && spec.kind == CAPTION_RELATION && spec.relation == REL_ABOVE &&
                        spec.shape[0] == SHAPE_TRIANGLE;
            CHECK_MSG(world_caption_is_heldout(p[i]) == set, "\"%s\" in the wrong set", p[i]);
            for (int j = 0; j < i; j++) CHECK_MSG(strcmp(p[i], p[j]) != 0, "repeated \"%s\"", p[i]);
            for (int j = 0; set && j < nt; j++) CHECK(strcmp(p[i], t[j]) != 0);
        }
    }
    fprintf(stderr,
            "  train: %d single, %d count, %d pair, %d relation; held-out: %d, %d, %d, %d\n",
            kinds[0][0], kinds[0][1], kinds[0][2], kinds[0][3], kinds[1][0], kinds[1][1],
            kinds[1][2], kinds[1][3]);
    for (int k = 0; k < CAPTION_KINDS; k++) CHECK(kinds[0][k] > 0 && kinds[1][k] > 0);
    /* each template as many times as docs/prompts.md's table says, which the sets' quotas draw
     * template by template: so world_caption_template names every prompt's own template */
    static const int quota[2][TEMPLATE_KINDS] = {{20, 40, 56, 40, 50, 50}, {4, 8, 8, 8, 14, 22}};
    for (int set = 0; set < 2; set++)
        for (int k = 0; k < TEMPLATE_KINDS; k++)
            CHECK_MSG(templates[set][k] == quota[set][k], "%s set: %d %s prompts, want %d",
                      set ? "held-out" : "training", templates[set][k], world_template_names[k],
                      quota[set][k]);
    CHECK(sized > 0 && placed > 0 && rel_rule >= 10);
    /* Built once: the same pointers on every call. */
    int n2;
    CHECK(world_prompts(PROMPTS_TRAIN, &n2) == t && n2 == nt);
    /* The sets are WORLD_VERSION's: a change here needs a new version (and docs/prompts.md). */
    uint64_t ht = prompts_hash(PROMPTS_TRAIN), hh = prompts_hash(PROMPTS_HELDOUT);
    fprintf(stderr, "  prompt hashes %016llx %016llx\n", (unsigned long long)ht,
            (unsigned long long)hh);
    CHECK(strcmp(WORLD_VERSION, "shapes-v1") == 0);
    CHECK(ht == 0x0c9108bcd2de0896ull);
    CHECK(hh == 0x466678cc415342a7ull);
}

static void test_parse_errors(void)
{
    static const struct {
        const char *caption, *expect;
    } bad[] = {
        {"", "empty"},
        {"the red circle", "word 1 \"the\""},
        {"a red", "caption ends after word 2: expected a shape"},
        {"a magenta circle", "word 2 \"magenta\": expected a colour"},
        {"a medium red circle", "\"medium\" is never said"},
        {"a red circle at the middle", "word 4 \"at\": expected a position"},
        {"a red circle left a blue square", "word 5 \"a\": expected \"of\""},
        {"a large red circle and a blue square", "only in single-object"},
        {"a red circle and a small blue square", "sizes only in single-object"},
        {"two red circle", "word 3 \"circle\": expected a plural shape"},
        {"four red circles", "word 1 \"four\""},
        {"a red circle and a red circle", "two red circles"},
        {"a red circle above", "caption ends after word 4"},
        {"a red circle in the center please", "word 7 \"please\": expected the end"},
        {"a a a a a a a a a a a a a a a a a", "more than 16 words"},
        {"a redredredredredredredred circle", "expected a colour"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CaptionSpec spec;
        char err[256] = "";
        CHECK_MSG(world_parse_caption(bad[i].caption, &spec, err, sizeof err) == -1,
                  "\"%s\" parsed", bad[i].caption);
        CHECK_MSG(strstr(err, bad[i].expect) != NULL, "\"%s\": message \"%s\" lacks \"%s\"",
                  bad[i].caption, err, bad[i].expect);
    }
    Scene s;
    char err[256] = "";
    CHECK(world_scene_for_caption("a red blob", 1, 0, &s, err, sizeof err) == -1);
    CHECK(strstr(err, "a red blob") && strstr(err, "shapes-v1") && strstr(err, "blob"));
    /* Case, punctuation, spacing and the article are forgiven; the scene's caption is canonical. */
    CHECK(world_scene_for_caption("A  Orange Circle, at the TOP.", 1, 0, &s, err, sizeof err) == 0);
    CHECK(strcmp(s.caption, "an orange circle at the top") == 0);
}

/* The layout of every scene makes its caption true, with the generator's margins. */
static int check_scene(const Scene *s)
{
    CaptionSpec spec;
    int ok = world_parse_caption(s->caption, &spec, NULL, 0) == 0;
    ok = ok && s->num_objects == spec.num_objects;
    for (int k = 0; ok && k < s->num_objects; k++) {
        const SceneObject *o = &s->objects[k];
        int which = spec.kind == CAPTION_COUNT ? 0 : k;
        ok = o->color == spec.color[which] && o->shape == spec.shape[which];
        SizeKind want = spec.kind == CAPTION_SINGLE ? spec.size : SIZE_MEDIUM;
        ok = ok && o->size == want && fabsf(o->radius / world_size_radius[want] - 1.0f) <= 0.0601f;
        /* inside the image with a 2% border */
        ok = ok && o->cx - o->radius >= 0.0199f && o->cx + o->radius <= 0.9801f &&
             o->cy - o->radius >= 0.0199f && o->cy + o->radius <= 0.9801f;
        for (int j = 0; ok && j < k; j++) { /* boxes apart by at least 5% on one axis */
            const SceneObject *q = &s->objects[j];
            float m = o->radius + q->radius + 0.0499f;
            ok = fabsf(o->cx - q->cx) >= m || fabsf(o->cy - q->cy) >= m;
        }
    }
    const SceneObject *a = &s->objects[0], *b = &s->objects[1];
    const float third = 1.0f / 3.0f;
    if (ok && spec.kind == CAPTION_SINGLE) {
        switch (spec.position) {
        case POS_TOP: ok = a->cy < third; break;
        case POS_BOTTOM: ok = a->cy > 1.0f - third; break;
        case POS_LEFT: ok = a->cx < third; break;
        case POS_RIGHT: ok = a->cx > 1.0f - third; break;
        case POS_CENTER:
            ok = fabsf(a->cx - 0.5f) <= WORLD_CENTER_RADIUS &&
                 fabsf(a->cy - 0.5f) <= WORLD_CENTER_RADIUS;
            break;
        default: break;
        }
    }
    if (ok && spec.kind == CAPTION_RELATION) {
        float g = WORLD_RELATION_GAP - 1e-5f, k = WORLD_RELATION_SKEW + 1e-5f;
        switch (spec.relation) {
        case REL_LEFT_OF: ok = b->cx - a->cx >= g && fabsf(a->cy - b->cy) <= k; break;
        case REL_RIGHT_OF: ok = a->cx - b->cx >= g && fabsf(a->cy - b->cy) <= k; break;
        case REL_ABOVE: ok = b->cy - a->cy >= g && fabsf(a->cx - b->cx) <= k; break;
        case REL_BELOW: ok = a->cy - b->cy >= g && fabsf(a->cx - b->cx) <= k; break;
        default: ok = 0; break;
        }
    }
    return ok;
}

static void test_layouts_true(void)
{
    int bad = 0;
    for (int split = 0; split < 3; split++) {
        for (uint64_t i = 0; i < SCENES; i++) {
            Scene s;
            world_sample_scene(5, i, (WorldSplit)split, &s);
            if (!check_scene(&s) && bad++ < 5)
                fprintf(stderr, "  split %d scene %d \"%s\" breaks its caption\n", split, (int)i,
                        s.caption);
        }
    }
    CHECK(bad == 0);
}

/* world_scene_for_caption gives back the caption it was asked for, with a true layout, for
 * every prompt of both sets and several layouts each. */
static void test_scene_for_caption_round_trip(void)
{
    int bad = 0;
    for (int set = 0; set < 2; set++) {
        int n;
        const char *const *p = world_prompts(set ? PROMPTS_HELDOUT : PROMPTS_TRAIN, &n);
        for (int i = 0; i < n; i++) {
            for (uint64_t idx = 0; idx < 20; idx++) {
                Scene s;
                char err[256];
                int rc = world_scene_for_caption(p[i], 99, idx, &s, err, sizeof err);
                if ((rc != 0 || strcmp(s.caption, p[i]) != 0 || !check_scene(&s)) && bad++ < 5)
                    fprintf(stderr, "  \"%s\" -> rc %d \"%s\"\n", p[i], rc, s.caption);
            }
            Scene a, b;
            world_scene_for_caption(p[i], 99, 0, &a, NULL, 0);
            world_scene_for_caption(p[i], 99, 1, &b, NULL, 0);
            CHECK(memcmp(&a.objects, &b.objects, sizeof a.objects) != 0); /* layouts vary */
        }
    }
    CHECK(bad == 0);
}

/* Background pixels exactly the background away from objects, object centres exactly their
 * colour, anti-aliased pixels on the segment between the two near edges. */
static void test_render_pixels(void)
{
    const int sizes[] = {16, 32, 64, 100};
    float *img = malloc(100 * 100 * 3 * sizeof *img);
    int bad_bg = 0, bad_centre = 0, bad_edge = 0, edges = 0;
    for (int si = 0; si < 4; si++) {
        int S = sizes[si];
        for (uint64_t i = 0; i < 300; i++) {
            Scene s;
            world_sample_scene(21, i, WORLD_SPLIT_ALL, &s);
            world_render(&s, S, img);
            for (int y = 0; y < S; y++) {
                for (int x = 0; x < S; x++) {
                    const float *p = img + 3 * (y * S + x);
                    float px = (x + 0.5f) / S, py = (y + 0.5f) / S;
                    int near = -1, nears = 0;
                    for (int k = 0; k < s.num_objects; k++) {
                        const SceneObject *o = &s.objects[k];
                        float m = o->radius + 0.75f / S; /* half a pixel diagonal, and some */
                        if (fabsf(px - o->cx) < m && fabsf(py - o->cy) < m) near = k, nears++;
                    }
                    /* At 16x16 the 5% gap between objects is under a pixel: a pixel can hold
                     * the edges of two. */
                    if (nears > 1) continue;
                    float rgb[3];
                    for (int c = 0; c < 3; c++) rgb[c] = (p[c] + 1.0f) * 0.5f;
                    if (near < 0) {
                        for (int c = 0; c < 3; c++)
                            bad_bg += p[c] != 2.0f * world_background[c] - 1.0f;
                        continue;
                    }
                    /* anything near an object lies on the segment background -> its colour */
                    const float *col = world_palette[s.objects[near].color].rgb;
                    float d_bg = dist3(rgb, world_background), d_col = dist3(rgb, col);
                    float whole = dist3(col, world_background);
                    if (fabsf(d_bg + d_col - whole) > 1e-4f && bad_edge++ < 5)
                        fprintf(stderr, "  S %d scene %d pixel (%d, %d) off the segment by %g\n", S,
                                (int)i, x, y, d_bg + d_col - whole);
                    edges += d_bg > 1e-3f && d_col > 1e-3f;
                }
            }
            for (int k = 0; k < s.num_objects; k++) {
                const SceneObject *o = &s.objects[k];
                /* a pixel well inside: the box centre (the triangle's lower middle) */
                float fy = o->shape == SHAPE_TRIANGLE ? o->cy + 0.4f * o->radius : o->cy;
                int x = (int)(o->cx * S), y = (int)(fy * S);
                if (o->radius * S < 3.0f) continue; /* too small for a fully covered pixel */
                for (int c = 0; c < 3; c++)
                    bad_centre +=
                        img[3 * (y * S + x) + c] != 2.0f * world_palette[o->color].rgb[c] - 1.0f;
            }
        }
    }
    CHECK(bad_bg == 0);
    CHECK(bad_centre == 0);
    CHECK(bad_edge == 0);
    CHECK(edges > 1000);
    free(img);
}

/* Coverage adds up to the shapes' areas: pi r^2, 4 r^2, 2 r^2. */
static void test_render_area(void)
{
    const float want[SHAPE_KINDS] = {(float)M_PI, 4.0f, 2.0f};
    enum { S = 64 };
    static float cov[S * S];
    for (int k = 0; k < SHAPE_KINDS; k++) {
        for (int t = 0; t < 20; t++) {
            SceneObject o = {(ShapeKind)k,     0, SIZE_MEDIUM, 0.3f + 0.017f * t, 0.6f - 0.011f * t,
                             0.05f + 0.01f * t};
            world_object_coverage(&o, S, 0, 0, S, S, cov);
            double area = 0;
            for (int i = 0; i < S * S; i++) area += cov[i];
            double r = o.radius * S;
            CHECK_CLOSE(area, want[k] * r * r, 0.0, 0.01);
        }
    }
    /* a window past the image edges sees the same coverage */
    SceneObject o = {SHAPE_CIRCLE, 0, SIZE_MEDIUM, 0.05f, 0.05f, 0.1f};
    static float win[40 * 40];
    world_object_coverage(&o, S, -10, -10, 40, 40, win);
    world_object_coverage(&o, S, 0, 0, S, S, cov);
    int same = 1;
    for (int y = 0; y < 30; y++)
        for (int x = 0; x < 30; x++) same &= win[(y + 10) * 40 + x + 10] == cov[y * S + x];
    CHECK(same);
}

static void test_render_speed(void)
{
    enum { N = 64, S = 32 };
    static float img[N * S * S * 3];
    Scene scenes[N];
    for (int i = 0; i < N; i++) world_sample_scene(1, (uint64_t)i, WORLD_SPLIT_TRAIN, &scenes[i]);
    double best = 1e9;
    for (int rep = 0; rep < 20; rep++) {
        double t0 = now_s();
        for (int i = 0; i < N; i++) world_render(&scenes[i], S, img + (size_t)i * S * S * 3);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    double t0 = now_s();
    for (int i = 0; i < 1000; i++) {
        Scene s;
        world_sample_scene(2, (uint64_t)i, WORLD_SPLIT_TRAIN, &s);
    }
    double gen = (now_s() - t0) / 1000;
    fprintf(stderr,
            "  render 64 scenes at 32x32: %.3f ms (best of 20); sample one scene: %.2f us\n",
            best * 1e3, gen * 1e6);
#if defined(__SANITIZE_ADDRESS__)
    CHECK(best < 0.1); /* sanitizers slow everything down several times */
#else
    CHECK(best < 0.003);
#endif
}

int main(void)
{
    TEST_RUN(test_palette_separation);
    TEST_RUN(test_determinism);
    TEST_RUN(test_vocabulary);
    TEST_RUN(test_heldout_split);
    TEST_RUN(test_prompt_sets);
    TEST_RUN(test_parse_errors);
    TEST_RUN(test_layouts_true);
    TEST_RUN(test_scene_for_caption_round_trip);
    TEST_RUN(test_render_pixels);
    TEST_RUN(test_render_area);
    TEST_RUN(test_render_speed);
    return test_summary("world");
}
