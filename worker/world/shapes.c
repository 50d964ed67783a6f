/*
 * shapes.c: the synthetic world of shapes.h: palette, grammar (parse and format), the seeded
 * scene generator, the anti-aliased renderer and the fixed prompt sets.
 *
 * Randomness comes only from Philox (rng.h), addressed as (key = seed, counter low = index,
 * counter high = stream << 40 | block), so scene `index` never depends on any other scene and
 * the train, held-out and caption streams never share draws. Generation never fails: held-out
 * filtering and layout placement are rejection loops over more draws of the same stream, and the
 * constraints are loose enough that they end after a few tries.
 */
#include "shapes.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errbuf.h"
#include "rng.h"

/* Hue order. Chosen so that every pair is at least 0.4 apart in RGB and every colour at least
 * 0.6 from the white background (tests/unit/test_world.c checks both). */
const PaletteColor world_palette[] = {
    {"red", {0.80f, 0.05f, 0.12f}},    {"orange", {0.98f, 0.47f, 0.00f}},
    {"yellow", {1.00f, 0.90f, 0.10f}}, {"green", {0.10f, 0.65f, 0.15f}},
    {"cyan", {0.00f, 0.80f, 0.85f}},   {"blue", {0.10f, 0.25f, 0.95f}},
    {"purple", {0.50f, 0.10f, 0.70f}}, {"pink", {0.95f, 0.40f, 0.75f}},
};
#define NUM_COLORS 8
const int world_palette_size = NUM_COLORS;
const float world_background[3] = {1.0f, 1.0f, 1.0f};
const char *const world_shape_names[SHAPE_KINDS] = {"circle", "square", "triangle"};
const char *const world_shape_plurals[SHAPE_KINDS] = {"circles", "squares", "triangles"};
const char *const world_size_names[SIZE_KINDS] = {"small", "medium", "large"};
const float world_size_radius[SIZE_KINDS] = {0.09f, 0.13f, 0.18f};
const char *const world_caption_kind_names[CAPTION_KINDS] = {"single", "count", "pair", "relation"};
const char *const world_position_phrases[POS_KINDS] = {
    "", "at the top", "at the bottom", "on the left", "on the right", "in the center"};
const char *const world_relation_phrases[REL_KINDS] = {"", "left of", "right of", "above", "below"};
const char *const world_template_names[TEMPLATE_KINDS] = {"plain", "sized", "positioned",
                                                          "count", "pair",  "relation"};

static const char *const count_words[4] = {NULL, NULL, "two", "three"};

/* Colour-shape pairs the training split never shows (indices into world_palette). */
static const struct {
    int color;
    ShapeKind shape;
} heldout_pairs[] = {
    {5, SHAPE_CIRCLE},   /* blue circle */
    {3, SHAPE_SQUARE},   /* green square */
    {2, SHAPE_TRIANGLE}, /* yellow triangle */
    {7, SHAPE_SQUARE},   /* pink square */
};
#define NUM_HELDOUT_PAIRS ((int)(sizeof heldout_pairs / sizeof heldout_pairs[0]))

/* Layout constants, fractions of the image side. */
#define EDGE 0.02f          /* an object's box keeps this far from the border */
#define GAP 0.05f           /* two objects' boxes are this far apart on at least one axis */
#define SIZE_JITTER 0.06f   /* radius = nominal * (1 +- SIZE_JITTER) */
#define REGION_MARGIN 0.04f /* "at the top": cy <= 1/3 - REGION_MARGIN when generated */
#define REGION_BAND 0.15f   /* top/bottom keep |cx - 0.5| <= this, left/right |cy - 0.5| */

/* ---- Draws */

enum { STREAM_SAMPLE = 1, STREAM_CAPTION = 8, STREAM_PROMPTS = 9 };

typedef struct {
    uint64_t key, ctr, block;
    uint32_t w[4];
    int used;
} Draw;

static void draw_init(Draw *d, uint64_t seed, uint64_t index, uint64_t stream)
{
    d->key = seed;
    d->ctr = index;
    d->block = stream << 40;
    d->used = 4;
}

static uint32_t draw_u32(Draw *d)
{
    if (d->used == 4) {
        philox4x32(d->key, d->ctr, d->block++, d->w);
        d->used = 0;
    }
    return d->w[d->used++];
}

static float draw_unit(Draw *d)
{
    return (float)(draw_u32(d) >> 8) * (1.0f / 16777216.0f);
}

static float draw_range(Draw *d, float lo, float hi)
{
    return lo + (hi - lo) * draw_unit(d);
}

static int draw_below(Draw *d, int n)
{
    return (int)(((uint64_t)draw_u32(d) * (uint64_t)n) >> 32);
}

/* ---- Grammar */

int world_pair_is_heldout(int color, ShapeKind shape)
{
    for (int i = 0; i < NUM_HELDOUT_PAIRS; i++)
        if (heldout_pairs[i].color == color && heldout_pairs[i].shape == shape) return 1;
    return 0;
}

static int spec_is_heldout(const CaptionSpec *s)
{
    int distinct = s->kind == CAPTION_PAIR || s->kind == CAPTION_RELATION ? 2 : 1;
    for (int i = 0; i < distinct; i++)
        if (world_pair_is_heldout(s->color[i], s->shape[i])) return 1;
    return s->kind == CAPTION_RELATION && s->relation == REL_ABOVE && s->shape[0] == SHAPE_TRIANGLE;
}

/* "a" or "an" before word w ("an orange circle"). */
static const char *article(const char *w)
{
    return strchr("aeiou", w[0]) ? "an" : "a";
}

void world_format_caption(const CaptionSpec *s, char *buf, size_t len)
{
    const char *c0 = world_palette[s->color[0]].name, *s0 = world_shape_names[s->shape[0]];
    const char *c1 = world_palette[s->color[1]].name, *s1 = world_shape_names[s->shape[1]];
    switch (s->kind) {
    case CAPTION_SINGLE:
        if (s->size == SIZE_MEDIUM)
            snprintf(buf, len, "%s %s %s%s%s", article(c0), c0, s0,
                     s->position == POS_ANY ? "" : " ", world_position_phrases[s->position]);
        else
            snprintf(buf, len, "a %s %s %s%s%s", world_size_names[s->size], c0, s0,
                     s->position == POS_ANY ? "" : " ", world_position_phrases[s->position]);
        break;
    case CAPTION_COUNT:
        snprintf(buf, len, "%s %s %s", count_words[s->num_objects], c0,
                 world_shape_plurals[s->shape[0]]);
        break;
    case CAPTION_PAIR:
    case CAPTION_RELATION:
        snprintf(buf, len, "%s %s %s %s %s %s %s", article(c0), c0, s0,
                 s->kind == CAPTION_PAIR ? "and" : world_relation_phrases[s->relation], article(c1),
                 c1, s1);
        break;
    default: snprintf(buf, len, "?"); break;
    }
}

/* A caption split into lower-case words, as the tokenizer splits it. */
#define PARSE_MAX_WORDS 16
#define PARSE_WORD_LEN 16
typedef struct {
    char w[PARSE_MAX_WORDS][PARSE_WORD_LEN];
    int n;
    int overflow; /* more words than PARSE_MAX_WORDS */
} Words;

static void split_words(const char *text, Words *ws)
{
    ws->n = 0;
    ws->overflow = 0;
    for (const char *c = text; *c;) {
        if (!(isascii((unsigned char)*c) && isalnum((unsigned char)*c))) {
            c++;
            continue;
        }
        size_t len = 0;
        char *dst = ws->n < PARSE_MAX_WORDS ? ws->w[ws->n] : NULL;
        for (; isascii((unsigned char)*c) && isalnum((unsigned char)*c); c++) {
            /* A word too long for the buffer keeps its first characters and a '~', which no
             * grammar word contains, so it fails to match. */
            if (dst && len < PARSE_WORD_LEN - 2)
                dst[len++] = (char)tolower((unsigned char)*c);
            else if (dst)
                dst[PARSE_WORD_LEN - 2] = '~', len = PARSE_WORD_LEN - 1;
        }
        if (dst) dst[len] = '\0';
        if (ws->n < PARSE_MAX_WORDS)
            ws->n++;
        else
            ws->overflow = 1;
    }
}

static int find_word(const char *w, const char *const *table, int n)
{
    for (int i = 0; i < n; i++)
        if (table[i] && strcmp(w, table[i]) == 0) return i;
    return -1;
}

static int color_index(const char *w)
{
    for (int i = 0; i < NUM_COLORS; i++)
        if (strcmp(w, world_palette[i].name) == 0) return i;
    return -1;
}

typedef struct {
    const Words *ws;
    int i;
    char *err;
    size_t errlen;
} Cursor;

static const char *cur_peek(const Cursor *c)
{
    return c->i < c->ws->n ? c->ws->w[c->i] : NULL;
}

/* Reports what was expected at the cursor and returns -1. */
static int cur_fail(Cursor *c, const char *expected)
{
    const char *w = cur_peek(c);
    if (w)
        errbuf_printf(c->err, c->errlen, "word %d \"%s\": expected %s", c->i + 1, w, expected);
    else
        errbuf_printf(c->err, c->errlen, "caption ends after word %d: expected %s", c->i, expected);
    return -1;
}

/* "a" or "an": either is accepted, the canonical form picks the right one. */
static int cur_article(Cursor *c)
{
    const char *w = cur_peek(c);
    if (!w || (strcmp(w, "a") != 0 && strcmp(w, "an") != 0)) return cur_fail(c, "\"a\" or \"an\"");
    c->i++;
    return 0;
}

static int cur_expect(Cursor *c, const char *word)
{
    const char *w = cur_peek(c);
    if (!w || strcmp(w, word) != 0) {
        char what[32];
        snprintf(what, sizeof what, "\"%s\"", word);
        return cur_fail(c, what);
    }
    c->i++;
    return 0;
}

#define COLOR_LIST "a colour (red, orange, yellow, green, cyan, blue, purple, pink)"
#define SHAPE_LIST "a shape (circle, square, triangle)"

/* [size] COLOUR SHAPE after "a"; size is left alone when allow_size is 0. */
static int parse_object(Cursor *c, int allow_size, SizeKind *size, int *color, ShapeKind *shape)
{
    const char *w = cur_peek(c);
    if (allow_size && w && (strcmp(w, "small") == 0 || strcmp(w, "large") == 0)) {
        *size = strcmp(w, "small") == 0 ? SIZE_SMALL : SIZE_LARGE;
        c->i++;
        w = cur_peek(c);
    }
    if (w && (strcmp(w, "small") == 0 || strcmp(w, "large") == 0 || strcmp(w, "medium") == 0))
        return cur_fail(c, allow_size ? COLOR_LIST " (\"medium\" is never said)"
                                      : COLOR_LIST " (sizes only in single-object captions)");
    if (!w || (*color = color_index(w)) < 0) return cur_fail(c, COLOR_LIST);
    c->i++;
    w = cur_peek(c);
    int k = w ? find_word(w, world_shape_names, SHAPE_KINDS) : -1;
    if (k < 0) return cur_fail(c, SHAPE_LIST);
    *shape = (ShapeKind)k;
    c->i++;
    return 0;
}

static int cur_end(Cursor *c)
{
    return cur_peek(c) ? cur_fail(c, "the end of the caption") : 0;
}

int world_parse_caption(const char *caption, CaptionSpec *out, char *err, size_t errlen)
{
    Words ws;
    split_words(caption, &ws);
    memset(out, 0, sizeof *out);
    out->size = SIZE_MEDIUM;
    if (ws.overflow) {
        errbuf_printf(err, errlen, "more than %d words", PARSE_MAX_WORDS);
        return -1;
    }
    Cursor c = {&ws, 0, err, errlen};
    const char *w = cur_peek(&c);
    if (!w) {
        errbuf_printf(err, errlen, "empty caption");
        return -1;
    }
    int n = find_word(w, count_words, 4);
    if (n >= 2) { /* two|three COLOUR SHAPEs */
        out->kind = CAPTION_COUNT;
        out->num_objects = n;
        c.i++;
        w = cur_peek(&c);
        if (!w || (out->color[0] = color_index(w)) < 0) return cur_fail(&c, COLOR_LIST);
        c.i++;
        w = cur_peek(&c);
        int k = w ? find_word(w, world_shape_plurals, SHAPE_KINDS) : -1;
        if (k < 0) return cur_fail(&c, "a plural shape (circles, squares, triangles)");
        out->shape[0] = out->shape[1] = (ShapeKind)k;
        out->color[1] = out->color[0];
        c.i++;
        return cur_end(&c);
    }
    if (cur_article(&c) != 0) {
        errbuf_printf(err, errlen, "word 1 \"%s\": expected \"a\", \"an\", \"two\" or \"three\"",
                      w);
        return -1;
    }
    if (parse_object(&c, 1, &out->size, &out->color[0], &out->shape[0]) != 0) return -1;
    out->kind = CAPTION_SINGLE;
    out->num_objects = 1;
    out->color[1] = out->color[0];
    out->shape[1] = out->shape[0];
    w = cur_peek(&c);
    if (!w) return 0;
    int second = 0;
    if (strcmp(w, "at") == 0 || strcmp(w, "on") == 0 || strcmp(w, "in") == 0) {
        int start = c.i;
        for (int p = POS_TOP; p < POS_KINDS; p++) {
            char phrase[32];
            Words pw;
            snprintf(phrase, sizeof phrase, "%s", world_position_phrases[p]);
            split_words(phrase, &pw);
            int ok = c.i + pw.n <= ws.n;
            for (int j = 0; ok && j < pw.n; j++) ok = strcmp(ws.w[c.i + j], pw.w[j]) == 0;
            if (ok) {
                out->position = (PositionKind)p;
                c.i += pw.n;
                return cur_end(&c);
            }
        }
        c.i = start;
        return cur_fail(&c, "a position (at the top, at the bottom, on the left, on the right, "
                            "in the center)");
    } else if (strcmp(w, "and") == 0) {
        out->kind = CAPTION_PAIR;
        c.i++;
        second = 1;
    } else if (strcmp(w, "left") == 0 || strcmp(w, "right") == 0) {
        out->kind = CAPTION_RELATION;
        out->relation = w[0] == 'l' ? REL_LEFT_OF : REL_RIGHT_OF;
        c.i++;
        if (cur_expect(&c, "of") != 0) return -1;
        second = 1;
    } else if (strcmp(w, "above") == 0 || strcmp(w, "below") == 0) {
        out->kind = CAPTION_RELATION;
        out->relation = w[1] == 'b' ? REL_ABOVE : REL_BELOW;
        c.i++;
        second = 1;
    } else {
        return cur_fail(&c, "the end, a position, \"and\" or a relation (left of, right of, "
                            "above, below)");
    }
    if (second) {
        if (out->size != SIZE_MEDIUM) {
            errbuf_printf(err, errlen, "size words (\"%s\") appear only in single-object captions",
                          world_size_names[out->size]);
            return -1;
        }
        out->num_objects = 2;
        SizeKind unused = SIZE_MEDIUM;
        if (cur_article(&c) != 0) return -1;
        if (parse_object(&c, 0, &unused, &out->color[1], &out->shape[1]) != 0) return -1;
        if (cur_end(&c) != 0) return -1;
        if (out->color[0] == out->color[1] && out->shape[0] == out->shape[1]) {
            errbuf_printf(err, errlen,
                          "both objects are %s %ss: the world says \"two %s %s\" instead",
                          world_palette[out->color[0]].name, world_shape_names[out->shape[0]],
                          world_palette[out->color[0]].name, world_shape_plurals[out->shape[0]]);
            return -1;
        }
    }
    return 0;
}

int world_caption_is_heldout(const char *caption)
{
    /* A scan for the two patterns rather than a parse, so that it also answers for text
     * outside the grammar ("big yellow triangles!"). */
    Words ws;
    split_words(caption, &ws);
    for (int i = 0; i < ws.n; i++) {
        int col = color_index(ws.w[i]);
        if (col >= 0 && i + 1 < ws.n) {
            int k = find_word(ws.w[i + 1], world_shape_names, SHAPE_KINDS);
            if (k < 0) k = find_word(ws.w[i + 1], world_shape_plurals, SHAPE_KINDS);
            if (k >= 0 && world_pair_is_heldout(col, (ShapeKind)k)) return 1;
        }
        if (strcmp(ws.w[i], "above") == 0 && i > 0 && strcmp(ws.w[i - 1], "triangle") == 0)
            return 1;
    }
    return 0;
}

/* ---- Vocabulary */

static const char *const vocab_words[] = {
    "<pad>",   "<unk>",     "a",    "an",     "small", "large",  "red",    "orange",   "yellow",
    "green",   "cyan",      "blue", "purple", "pink",  "circle", "square", "triangle", "circles",
    "squares", "triangles", "two",  "three",  "and",   "left",   "right",  "of",       "above",
    "below",   "at",        "on",   "in",     "the",   "top",    "bottom", "center",
};

const char *const *world_vocab(int *count)
{
    *count = (int)(sizeof vocab_words / sizeof vocab_words[0]);
    return vocab_words;
}

/* ---- Layout */

static float draw_radius(Draw *d, SizeKind s)
{
    return world_size_radius[s] * (1.0f - SIZE_JITTER + 2.0f * SIZE_JITTER * draw_unit(d));
}

static int boxes_apart(const SceneObject *a, const SceneObject *b)
{
    float m = a->radius + b->radius + GAP;
    return fabsf(a->cx - b->cx) >= m || fabsf(a->cy - b->cy) >= m;
}

static void place_single(Draw *d, PositionKind pos, SceneObject *o)
{
    float lo = o->radius + EDGE, hi = 1.0f - lo;
    float third = 1.0f / 3.0f - REGION_MARGIN;
    switch (pos) {
    case POS_TOP:
    case POS_BOTTOM:
        o->cx = draw_range(d, 0.5f - REGION_BAND, 0.5f + REGION_BAND);
        o->cy = pos == POS_TOP ? draw_range(d, lo, third) : draw_range(d, 1.0f - third, hi);
        break;
    case POS_LEFT:
    case POS_RIGHT:
        o->cx = pos == POS_LEFT ? draw_range(d, lo, third) : draw_range(d, 1.0f - third, hi);
        o->cy = draw_range(d, 0.5f - REGION_BAND, 0.5f + REGION_BAND);
        break;
    case POS_CENTER:
        o->cx = draw_range(d, 0.5f - 0.6f * WORLD_CENTER_RADIUS, 0.5f + 0.6f * WORLD_CENTER_RADIUS);
        o->cy = draw_range(d, 0.5f - 0.6f * WORLD_CENTER_RADIUS, 0.5f + 0.6f * WORLD_CENTER_RADIUS);
        break;
    default:
        o->cx = draw_range(d, lo, hi);
        o->cy = draw_range(d, lo, hi);
        break;
    }
}

/* Scatters n objects (radii set) anywhere, boxes apart. Rejection per object; a layout that
 * gets stuck starts over. */
static void place_scattered(Draw *d, SceneObject *obj, int n)
{
    for (int attempt = 0;; attempt++) {
        int placed = 0;
        for (int k = 0; k < n; k++) {
            float lo = obj[k].radius + EDGE, hi = 1.0f - lo;
            for (int tries = 0; tries < 64 && placed == k; tries++) {
                obj[k].cx = draw_range(d, lo, hi);
                obj[k].cy = draw_range(d, lo, hi);
                int ok = 1;
                for (int j = 0; j < k && ok; j++) ok = boxes_apart(&obj[j], &obj[k]);
                if (ok) placed = k + 1;
            }
            if (placed != k + 1) break;
        }
        if (placed == n || attempt > 1000) return; /* 3 medium objects always fit at once */
    }
}

/* Places subject a and object b so that the relation holds with room to spare: a gap of at
 * least WORLD_RELATION_GAP between centres on the relation's axis, at most
 * WORLD_RELATION_SKEW on the other. */
static void place_relation(Draw *d, RelationKind rel, SceneObject *a, SceneObject *b)
{
    /* `first` has the smaller coordinate on the axis: the subject of "left of" and "above". */
    SceneObject *first = rel == REL_LEFT_OF || rel == REL_ABOVE ? a : b;
    SceneObject *second = first == a ? b : a;
    int vertical = rel == REL_ABOVE || rel == REL_BELOW;
    float lo_f = first->radius + EDGE, hi_f = 1.0f - lo_f;
    float lo_s = second->radius + EDGE, hi_s = 1.0f - lo_s;
    float sep = fmaxf(WORLD_RELATION_GAP, first->radius + second->radius + GAP);
    float p_first = draw_range(d, lo_f, hi_s - sep);
    float p_second = draw_range(d, p_first + sep, hi_s);
    float q_first = draw_range(d, lo_f, hi_f);
    float q_second = draw_range(d, fmaxf(lo_s, q_first - WORLD_RELATION_SKEW),
                                fminf(hi_s, q_first + WORLD_RELATION_SKEW));
    if (vertical) {
        first->cy = p_first, second->cy = p_second;
        first->cx = q_first, second->cx = q_second;
    } else {
        first->cx = p_first, second->cx = p_second;
        first->cy = q_first, second->cy = q_second;
    }
}

/* Lays out a scene for spec with draws from d. */
static void layout(Draw *d, const CaptionSpec *spec, Scene *out)
{
    memset(out, 0, sizeof *out);
    out->num_objects = spec->num_objects;
    for (int k = 0; k < spec->num_objects; k++) {
        SceneObject *o = &out->objects[k];
        int which = spec->kind == CAPTION_COUNT ? 0 : k;
        o->shape = spec->shape[which];
        o->color = spec->color[which];
        o->size = spec->kind == CAPTION_SINGLE ? spec->size : SIZE_MEDIUM;
        o->radius = draw_radius(d, o->size);
    }
    switch (spec->kind) {
    case CAPTION_SINGLE: place_single(d, spec->position, &out->objects[0]); break;
    case CAPTION_RELATION:
        place_relation(d, spec->relation, &out->objects[0], &out->objects[1]);
        break;
    default: place_scattered(d, out->objects, spec->num_objects); break;
    }
    world_format_caption(spec, out->caption, sizeof out->caption);
}

/* ---- Templates: the caption shapes the generator draws and the prompt sets list */

CaptionTemplate world_caption_template(const CaptionSpec *s)
{
    switch (s->kind) {
    case CAPTION_COUNT: return TEMPLATE_COUNT;
    case CAPTION_PAIR: return TEMPLATE_PAIR;
    case CAPTION_RELATION: return TEMPLATE_RELATION;
    default: /* a single object: a said position makes it placed, whatever its size */
        return s->position != POS_ANY   ? TEMPLATE_PLACED
               : s->size != SIZE_MEDIUM ? TEMPLATE_SIZED
                                        : TEMPLATE_PLAIN;
    }
}

/* Pretraining mix. Half the scenes show one object, which teaches colour, shape, size and
 * position on their own; the rest teach counting and composition. */
static const float tpl_weight[TEMPLATE_KINDS] = {0.10f, 0.15f, 0.25f, 0.15f, 0.15f, 0.20f};

static void draw_pair(Draw *d, int *color, ShapeKind *shape)
{
    *color = draw_below(d, NUM_COLORS);
    *shape = (ShapeKind)draw_below(d, SHAPE_KINDS);
}

static void draw_spec(Draw *d, int tpl, CaptionSpec *s)
{
    memset(s, 0, sizeof *s);
    s->size = SIZE_MEDIUM;
    draw_pair(d, &s->color[0], &s->shape[0]);
    s->color[1] = s->color[0];
    s->shape[1] = s->shape[0];
    s->num_objects = 1;
    switch (tpl) {
    case TEMPLATE_PLAIN: s->kind = CAPTION_SINGLE; break;
    case TEMPLATE_SIZED:
        s->kind = CAPTION_SINGLE;
        s->size = draw_below(d, 2) ? SIZE_LARGE : SIZE_SMALL;
        break;
    case TEMPLATE_PLACED:
        s->kind = CAPTION_SINGLE;
        s->size = (SizeKind)draw_below(d, SIZE_KINDS);
        s->position = (PositionKind)(POS_TOP + draw_below(d, POS_KINDS - POS_TOP));
        break;
    case TEMPLATE_COUNT:
        s->kind = CAPTION_COUNT;
        s->num_objects = 2 + draw_below(d, 2);
        break;
    default: /* pair, relation: two different colour-shape pairs */
        s->kind = tpl == TEMPLATE_PAIR ? CAPTION_PAIR : CAPTION_RELATION;
        s->num_objects = 2;
        do draw_pair(d, &s->color[1], &s->shape[1]);
        while (s->color[1] == s->color[0] && s->shape[1] == s->shape[0]);
        if (tpl == TEMPLATE_RELATION) s->relation = (RelationKind)(REL_LEFT_OF + draw_below(d, 4));
        break;
    }
}

static int draw_template(Draw *d)
{
    float u = draw_unit(d), acc = 0.0f;
    for (int t = 0; t < TEMPLATE_KINDS - 1; t++) {
        acc += tpl_weight[t];
        if (u < acc) return t;
    }
    return TEMPLATE_KINDS - 1;
}

void world_sample_scene(uint64_t seed, uint64_t index, WorldSplit split, Scene *out)
{
    Draw d;
    draw_init(&d, seed, index, STREAM_SAMPLE + (uint64_t)split);
    CaptionSpec spec;
    for (;;) { /* about 1 in 4 specs is held out, so this ends quickly */
        draw_spec(&d, draw_template(&d), &spec);
        int held = spec_is_heldout(&spec);
        if (split == WORLD_SPLIT_ALL || held == (split == WORLD_SPLIT_HELDOUT)) break;
    }
    layout(&d, &spec, out);
}

int world_scene_for_caption(const char *caption, uint64_t seed, uint64_t index, Scene *out,
                            char *err, size_t errlen)
{
    CaptionSpec spec;
    char why[256];
    if (world_parse_caption(caption, &spec, why, sizeof why) != 0) {
        errbuf_printf(err, errlen, "caption \"%.80s\" is not in the %s grammar: %s", caption,
                      WORLD_VERSION, why);
        return -1;
    }
    Draw d;
    draw_init(&d, seed, index, STREAM_CAPTION);
    layout(&d, &spec, out);
    return 0;
}

/* ---- Rendering */

#define SUBROWS 16 /* coverage samples along y per pixel; exact along x */

/* The x-interval [*xl, *xr] (pixels) that a shape centred at (pcx, pcy) with half-extent pr
 * (pixels) covers at height y (pixels). Returns 0 when the row misses the shape. */
static int span_at(ShapeKind k, float pcx, float pcy, float pr, float y, float *xl, float *xr)
{
    float dy = y - pcy, half;
    if (dy <= -pr || dy >= pr) return 0;
    switch (k) {
    case SHAPE_CIRCLE: half = sqrtf(pr * pr - dy * dy); break;
    case SHAPE_SQUARE: half = pr; break;
    default: half = 0.5f * (dy + pr); break; /* apex at top (dy = -pr), base width 2 pr */
    }
    *xl = pcx - half;
    *xr = pcx + half;
    return half > 0.0f;
}

void world_object_coverage(const SceneObject *o, int S, int x0, int y0, int w, int h, float *cov)
{
    float pcx = o->cx * (float)S, pcy = o->cy * (float)S, pr = o->radius * (float)S;
    for (int i = 0; i < h; i++) {
        float *row = cov + (size_t)i * w;
        memset(row, 0, (size_t)w * sizeof *row);
        float py = (float)(y0 + i);
        if (py + 1.0f <= pcy - pr || py >= pcy + pr) continue;
        for (int s = 0; s < SUBROWS; s++) {
            float xl, xr;
            if (!span_at(o->shape, pcx, pcy, pr, py + ((float)s + 0.5f) / SUBROWS, &xl, &xr))
                continue;
            /* pixels jl .. jr (absolute) are touched: partial at both ends, whole between */
            int jl = (int)floorf(xl), jr = (int)floorf(xr);
            if (jl == jr) {
                if (jl >= x0 && jl < x0 + w) row[jl - x0] += xr - xl;
                continue;
            }
            if (jl >= x0 && jl < x0 + w) row[jl - x0] += ((float)jl + 1.0f) - xl;
            if (jr >= x0 && jr < x0 + w) row[jr - x0] += xr - (float)jr;
            int a = jl + 1 > x0 ? jl + 1 : x0, b = jr < x0 + w ? jr : x0 + w;
            for (int j = a; j < b; j++) row[j - x0] += 1.0f;
        }
        for (int j = 0; j < w; j++) row[j] *= 1.0f / SUBROWS;
    }
}

void world_render(const Scene *scene, int S, float *img)
{
    float bg[3];
    for (int c = 0; c < 3; c++) bg[c] = 2.0f * world_background[c] - 1.0f;
    for (size_t p = 0; p < (size_t)S * S; p++)
        for (int c = 0; c < 3; c++) img[3 * p + c] = bg[c];
    enum { CHUNK = 256 };
    float cov[CHUNK];
    for (int k = 0; k < scene->num_objects; k++) {
        const SceneObject *o = &scene->objects[k];
        float col[3];
        for (int c = 0; c < 3; c++) col[c] = 2.0f * world_palette[o->color].rgb[c] - 1.0f;
        int xa = (int)floorf((o->cx - o->radius) * (float)S);
        int xb = (int)ceilf((o->cx + o->radius) * (float)S);
        int ya = (int)floorf((o->cy - o->radius) * (float)S);
        int yb = (int)ceilf((o->cy + o->radius) * (float)S);
        if (xa < 0) xa = 0;
        if (ya < 0) ya = 0;
        if (xb > S) xb = S;
        if (yb > S) yb = S;
        for (int y = ya; y < yb; y++) {
            for (int x = xa; x < xb; x += CHUNK) {
                int w = xb - x < CHUNK ? xb - x : CHUNK;
                world_object_coverage(o, S, x, y, w, 1, cov);
                for (int j = 0; j < w; j++) {
                    float a = cov[j];
                    if (a <= 0.0f) continue;
                    float *p = img + 3 * ((size_t)y * S + x + j);
                    /* (1 - a) p + a col is exactly col when a = 1 */
                    for (int c = 0; c < 3; c++) p[c] = (1.0f - a) * p[c] + a * col[c];
                }
            }
        }
    }
}

/* ---- Prompt sets */

/* Every spec of a template, in a fixed order. Returns the count; out may be NULL. */
static int enumerate_template(int tpl, CaptionSpec *out)
{
    int n = 0;
    for (int p0 = 0; p0 < NUM_COLORS * SHAPE_KINDS; p0++) {
        CaptionSpec s;
        memset(&s, 0, sizeof s);
        s.color[0] = s.color[1] = p0 / SHAPE_KINDS;
        s.shape[0] = s.shape[1] = (ShapeKind)(p0 % SHAPE_KINDS);
        s.size = SIZE_MEDIUM;
        s.num_objects = 1;
        s.kind = CAPTION_SINGLE;
#define EMIT()                                                                                     \
    do {                                                                                           \
        if (out) out[n] = s;                                                                       \
        n++;                                                                                       \
    } while (0)
        switch (tpl) {
        case TEMPLATE_PLAIN: EMIT(); break;
        case TEMPLATE_SIZED:
            for (int z = SIZE_SMALL; z <= SIZE_LARGE; z += 2) {
                s.size = (SizeKind)z;
                EMIT();
            }
            break;
        case TEMPLATE_PLACED:
            for (int z = 0; z < SIZE_KINDS; z++)
                for (int p = POS_TOP; p < POS_KINDS; p++) {
                    s.size = (SizeKind)z;
                    s.position = (PositionKind)p;
                    EMIT();
                }
            break;
        case TEMPLATE_COUNT:
            s.kind = CAPTION_COUNT;
            for (s.num_objects = 2; s.num_objects <= 3; s.num_objects++) EMIT();
            break;
        default:
            s.kind = tpl == TEMPLATE_PAIR ? CAPTION_PAIR : CAPTION_RELATION;
            s.num_objects = 2;
            for (int p1 = 0; p1 < NUM_COLORS * SHAPE_KINDS; p1++) {
                if (p1 == p0) continue;
                s.color[1] = p1 / SHAPE_KINDS;
                s.shape[1] = (ShapeKind)(p1 % SHAPE_KINDS);
                if (tpl == TEMPLATE_PAIR) {
                    EMIT();
                } else {
                    for (int r = REL_LEFT_OF; r < REL_KINDS; r++) {
                        s.relation = (RelationKind)r;
                        EMIT();
                    }
                }
            }
            break;
        }
#undef EMIT
    }
    return n;
}

/* Which specs of a template a quota row takes. */
enum { TAKE_TRAIN, TAKE_HELDOUT_PAIR, TAKE_HELDOUT_RELATION_ONLY };

static int spec_has_heldout_pair(const CaptionSpec *s)
{
    CaptionSpec t = *s;
    t.relation = REL_NONE; /* spec_is_heldout without the relation rule */
    if (t.kind == CAPTION_RELATION) t.kind = CAPTION_PAIR;
    return spec_is_heldout(&t);
}

static const struct {
    int tpl, take, quota;
} prompt_quotas[2][7] = {
    [PROMPTS_TRAIN] =
        {
            {TEMPLATE_PLAIN, TAKE_TRAIN, 20}, /* all of them */
            {TEMPLATE_SIZED, TAKE_TRAIN, 40}, /* all */
            {TEMPLATE_PLACED, TAKE_TRAIN, 56},
            {TEMPLATE_COUNT, TAKE_TRAIN, 40}, /* all */
            {TEMPLATE_PAIR, TAKE_TRAIN, 50},
            {TEMPLATE_RELATION, TAKE_TRAIN, 50},
            {-1, 0, 0},
        },
    [PROMPTS_HELDOUT] =
        {
            {TEMPLATE_PLAIN, TAKE_HELDOUT_PAIR, 4}, /* all */
            {TEMPLATE_SIZED, TAKE_HELDOUT_PAIR, 8}, /* all */
            {TEMPLATE_PLACED, TAKE_HELDOUT_PAIR, 8},
            {TEMPLATE_COUNT, TAKE_HELDOUT_PAIR, 8}, /* all */
            {TEMPLATE_PAIR, TAKE_HELDOUT_PAIR, 14},
            {TEMPLATE_RELATION, TAKE_HELDOUT_PAIR, 12},
            {TEMPLATE_RELATION, TAKE_HELDOUT_RELATION_ONLY, 10},
        },
};

#define MAX_PROMPTS 256
static char prompt_text[2][MAX_PROMPTS][WORLD_CAPTION_MAX];
static const char *prompt_ptr[2][MAX_PROMPTS];
static int prompt_count[2];
static pthread_once_t prompts_once = PTHREAD_ONCE_INIT;

/* Builds both sets: per quota row, every spec of the template that the row takes, shuffled by
 * a fixed Philox stream (Fisher-Yates), the first `quota` of them. */
static void build_prompts(void)
{
    static CaptionSpec all[NUM_COLORS * SHAPE_KINDS * (NUM_COLORS * SHAPE_KINDS - 1) * 4];
    for (int set = 0; set < 2; set++) {
        prompt_count[set] = 0;
        for (int row = 0; row < 7; row++) {
            int tpl = prompt_quotas[set][row].tpl, take = prompt_quotas[set][row].take;
            if (tpl < 0) break;
            int n = enumerate_template(tpl, all), m = 0;
            for (int i = 0; i < n; i++) {
                int held = spec_is_heldout(&all[i]), pair = spec_has_heldout_pair(&all[i]);
                int keep = take == TAKE_TRAIN          ? !held
                           : take == TAKE_HELDOUT_PAIR ? pair
                                                       : held && !pair;
                if (keep) all[m++] = all[i];
            }
            Draw d;
            draw_init(&d, 0x7368617065737631ull /* "shapesv1" */, (uint64_t)(set * 16 + row),
                      STREAM_PROMPTS);
            for (int i = m - 1; i > 0; i--) {
                int j = draw_below(&d, i + 1);
                CaptionSpec t = all[i];
                all[i] = all[j];
                all[j] = t;
            }
            int quota = prompt_quotas[set][row].quota;
            for (int i = 0; i < quota && i < m && prompt_count[set] < MAX_PROMPTS; i++) {
                int k = prompt_count[set]++;
                world_format_caption(&all[i], prompt_text[set][k], WORLD_CAPTION_MAX);
                prompt_ptr[set][k] = prompt_text[set][k];
            }
        }
    }
}

const char *const *world_prompts(PromptSetKind kind, int *count)
{
    pthread_once(&prompts_once, build_prompts);
    int set = kind == PROMPTS_HELDOUT ? 1 : 0;
    *count = prompt_count[set];
    return prompt_ptr[set];
}
