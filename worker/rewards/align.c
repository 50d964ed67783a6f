/*
 * align.c: the align reward of align.h.
 *
 * The pipeline, per image:
 *   1. pixels: clamp to [0, 1]; "ink" = how far a pixel is from the background, soft
 *      (0 below INK_T0, 1 above INK_T1); "core" = pixels at least CORE_T from it.
 *   2. segmentation: union-find over 4-neighbouring core pixels whose colours point the same
 *      way from the background (MERGE_COS), so two touching objects of different colours stay
 *      apart while an object's anti-aliased edge and mild texture stay with it.
 *   3. candidates: the MAX_CANDIDATES largest components of at least MIN_PIXELS pixels. Each gets
 *      a colour (mean of its interior pixels), a texture (how far those stray from the line
 *      background -> colour, and how rough their coverage is), a soft coverage mask over its box
 *      grown by 2 pixels (each pixel's position on that line, for pixels of the same hue and not
 *      claimed by another component) and, for each shape, a fit: size from the soft area,
 *      centre from the centroid, and the soft IoU of the mask with the world renderer's
 *      template of that shape (world_object_coverage).
 *   4. matching: every injective assignment of the prompt's objects to candidates (or to
 *      nothing) is tried; the one with the highest requirement total wins.
 *   5. cleanliness: ink outside the matched objects (their core pixels and a one-pixel ring),
 *      summed and divided by the image area, gives clean = 1 / (1 + U / CLEAN_SCALE).
 * Scores: object = colour * shape * texture * extent; size, position, relation and count are
 * graded ramps multiplied by the confidence (object score) of the objects they speak of, so a
 * misplaced object of the wrong colour earns nothing twice; count = confidence / (1 + number
 * of look-alike extras).
 */
#include "rewards/align.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errbuf.h"
#include "world/shapes.h"

/* Pixels, colours in [0, 1] RGB; Euclidean distances. */
#define INK_T0 0.06f /* deviations from the background below this are free (model noise) */
#define INK_T1 0.30f /* ... and above this count in full */
#define CORE_T 0.25f /* an object pixel is at least this far from the background */
/* Neighbouring core pixels are one object when their colours, seen from the background, point
 * the same way (cosine >= MERGE_COS, 10 degrees): an anti-aliased edge is the object's colour
 * washed towards the background, same direction; the closest palette colours are 20 degrees
 * apart. */
#define MERGE_COS 0.985f
/* A pixel of an object's window counts as coverage in full when its colour, seen from the
 * background, is within acos(COVER_COS_FULL) = 14 degrees of the object's, not at all beyond
 * acos(COVER_COS_ZERO) = 26 degrees. */
#define COVER_COS_ZERO 0.90f
#define COVER_COS_FULL 0.97f
#define MIN_PIXELS 3 /* smaller components are speckle, not candidates */
#define MAX_CANDIDATES 8
/* Requirement ramps. */
#define COLOR_SIGMA 0.30f /* colour score exp(-(d / sigma)^2): 0.1 -> 0.89, 0.44 -> 0.12 */
/* Texture factor exp(-(t / sigma)^2): Gaussian noise of 0.05 per channel gives t of about 0.1
 * and a factor of about 0.8. */
#define TEXTURE_SIGMA 0.20f
/* Shape score = ramp(IoU of the asked shape, IOU_LO, IOU_HI) * ramp(its lead over the best
 * other shape, LEAD_ZERO, LEAD_FULL). Rendered shapes fit their own template at IoU >= 0.99;
 * a circle fits the square template (and back) at 0.84, a triangle the others at 0.69-0.71:
 * a circle asked to be a square scores about 0.1, a blob halfway between them about 0.7. */
#define IOU_LO 0.60f
#define IOU_HI 0.90f
#define LEAD_ZERO -0.20f
#define LEAD_FULL 0.08f
/* Extent: objects of the world have half-extents 0.085 to 0.19; a blob much smaller (a dot) or
 * much larger (a flooded canvas) is not an object of the prompt. */
#define EXTENT_MIN_ZERO 0.03f
#define EXTENT_MIN_FULL 0.06f
#define EXTENT_MAX_FULL 0.22f
#define EXTENT_MAX_ZERO 0.30f
#define CLEAN_SCALE 0.02f /* unexplained ink of 2% of the image halves the score */

typedef struct {
    int pixels;         /* core pixels */
    int x0, y0, x1, y1; /* bounding box, inclusive */
} Component;

typedef struct {
    int comp;
    int pixels;
    float color[3];
    float texture;
    float area; /* soft, pixels */
    float iou[SHAPE_KINDS];
    SceneObject fit[SHAPE_KINDS]; /* fractions of the side */
} Candidate;

struct AlignWorkspace {
    int max_size;
    float *rgb;         /* [S, S, 3] in [0, 1] */
    float *ink;         /* [S, S] */
    int *parent;        /* [S, S] union-find, -1 = not core */
    int *label;         /* [S, S] component id or -1 */
    Component *comps;   /* [S * S] */
    float *obs, *tmpl;  /* [(S + 4)^2] coverage windows */
    uint8_t *explained; /* [S, S] */
};

AlignWorkspace *align_workspace_new(int max_size)
{
    if (max_size < 1 || max_size > ALIGN_MAX_SIZE) return NULL;
    AlignWorkspace *ws = calloc(1, sizeof *ws);
    if (!ws) return NULL;
    size_t n = (size_t)max_size * max_size, nw = (size_t)(max_size + 4) * (max_size + 4);
    ws->max_size = max_size;
    ws->rgb = malloc(3 * n * sizeof *ws->rgb);
    ws->ink = malloc(n * sizeof *ws->ink);
    ws->parent = malloc(n * sizeof *ws->parent);
    ws->label = malloc(n * sizeof *ws->label);
    ws->comps = malloc(n * sizeof *ws->comps);
    ws->obs = malloc(nw * sizeof *ws->obs);
    ws->tmpl = malloc(nw * sizeof *ws->tmpl);
    ws->explained = malloc(n);
    if (!ws->rgb || !ws->ink || !ws->parent || !ws->label || !ws->comps || !ws->obs || !ws->tmpl ||
        !ws->explained) {
        align_workspace_free(ws);
        return NULL;
    }
    return ws;
}

void align_workspace_free(AlignWorkspace *ws)
{
    if (!ws) return;
    free(ws->rgb);
    free(ws->ink);
    free(ws->parent);
    free(ws->label);
    free(ws->comps);
    free(ws->obs);
    free(ws->tmpl);
    free(ws->explained);
    free(ws);
}

static float dist3(const float *a, const float *b)
{
    float d0 = a[0] - b[0], d1 = a[1] - b[1], d2 = a[2] - b[2];
    return sqrtf(d0 * d0 + d1 * d1 + d2 * d2);
}

static float clamp01(float v)
{
    return v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
}

/* 1 at or past `full`, 0 at or before `zero`, linear between (either order). */
static float ramp(float v, float zero, float full)
{
    return clamp01((v - zero) / (full - zero));
}

static int uf_find(int *parent, int i)
{
    while (parent[i] != i) {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    return i;
}

static void uf_union(int *parent, int a, int b)
{
    a = uf_find(parent, a);
    b = uf_find(parent, b);
    /* the smaller index becomes the root: labels do not depend on the visiting order */
    if (a < b)
        parent[b] = a;
    else if (b < a)
        parent[a] = b;
}

/* Cosine of the angle between a - bg and b - bg. */
static float ray_cos(const float *a, const float *b)
{
    const float *bg = world_background;
    float a0 = a[0] - bg[0], a1 = a[1] - bg[1], a2 = a[2] - bg[2];
    float b0 = b[0] - bg[0], b1 = b[1] - bg[1], b2 = b[2] - bg[2];
    float dot = a0 * b0 + a1 * b1 + a2 * b2;
    float nn = (a0 * a0 + a1 * a1 + a2 * a2) * (b0 * b0 + b1 * b1 + b2 * b2);
    return dot / sqrtf(nn); /* callers pass pixels off the background: nn > 0 */
}

/* Steps 1 and 2: ink, core pixels, components. Returns the number of components. */
static int segment(AlignWorkspace *ws, int S)
{
    const float *bg = world_background;
    int n = S * S;
    for (int p = 0; p < n; p++) {
        float d = dist3(ws->rgb + 3 * p, bg);
        ws->ink[p] = clamp01((d - INK_T0) / (INK_T1 - INK_T0));
        ws->parent[p] = d >= CORE_T ? p : -1;
    }
    for (int y = 0; y < S; y++) {
        for (int x = 0; x < S; x++) {
            int p = y * S + x;
            if (ws->parent[p] < 0) continue;
            const float *c = ws->rgb + 3 * p;
            if (x > 0 && ws->parent[p - 1] >= 0 && ray_cos(c, c - 3) >= MERGE_COS)
                uf_union(ws->parent, p, p - 1);
            if (y > 0 && ws->parent[p - S] >= 0 && ray_cos(c, c - 3 * S) >= MERGE_COS)
                uf_union(ws->parent, p, p - S);
        }
    }
    int nc = 0;
    for (int p = 0; p < n; p++) {
        ws->label[p] = -1;
        if (ws->parent[p] < 0) continue;
        int root = uf_find(ws->parent, p);
        int x = p % S, y = p / S;
        if (root == p) { /* roots come first in raster order: ids in raster order of roots */
            ws->label[p] = nc;
            Component *c = &ws->comps[nc++];
            c->pixels = 0;
            c->x0 = c->x1 = x;
            c->y0 = c->y1 = y;
        } else {
            ws->label[p] = ws->label[root];
        }
        Component *c = &ws->comps[ws->label[p]];
        c->pixels++;
        if (x < c->x0) c->x0 = x;
        if (x > c->x1) c->x1 = x;
        if (y > c->y1) c->y1 = y;
    }
    return nc;
}

/* Where pixel q lies on the line background + a * axis (a = 1 at the object's colour). */
static float coverage_along(const float *q, const float *axis, float len2)
{
    const float *bg = world_background;
    return ((q[0] - bg[0]) * axis[0] + (q[1] - bg[1]) * axis[1] + (q[2] - bg[2]) * axis[2]) / len2;
}

/* True when pixel (x, y) belongs to another component, or touches one (8-neighbourhood) and
 * not component id: the anti-aliased rim of a neighbouring object. */
static int claimed_by_other(const AlignWorkspace *ws, int S, int id, int x, int y)
{
    int mine = 0, other = 0;
    int l = ws->label[y * S + x];
    if (l >= 0) return l != id;
    for (int yy = y - 1; yy <= y + 1; yy++)
        for (int xx = x - 1; xx <= x + 1; xx++) {
            if (xx < 0 || yy < 0 || xx >= S || yy >= S) continue;
            int m = ws->label[yy * S + xx];
            mine |= m == id;
            other |= m >= 0 && m != id;
        }
    return other && !mine;
}

static int is_inner(const AlignWorkspace *ws, int S, int id, int x, int y)
{
    if (x <= 0 || y <= 0 || x >= S - 1 || y >= S - 1) return 0;
    int p = y * S + x;
    return ws->label[p] == id && ws->label[p - 1] == id && ws->label[p + 1] == id &&
           ws->label[p - S] == id && ws->label[p + S] == id;
}

/* Step 3 for component `id`: colour, texture, coverage and the three template fits. */
static void analyse(AlignWorkspace *ws, int S, int id, Candidate *cand)
{
    const Component *c = &ws->comps[id];
    cand->comp = id;
    cand->pixels = c->pixels;
    /* colour: the mean over the interior pixels (all four neighbours in the component), or
     * over all its pixels when it has no interior */
    int use_inner = 0;
    for (int y = c->y0; y <= c->y1 && !use_inner; y++)
        for (int x = c->x0; x <= c->x1 && !use_inner; x++) use_inner = is_inner(ws, S, id, x, y);
    double sum[3] = {0, 0, 0};
    int count = 0;
    for (int y = c->y0; y <= c->y1; y++) {
        for (int x = c->x0; x <= c->x1; x++) {
            int p = y * S + x;
            if (ws->label[p] != id || (use_inner && !is_inner(ws, S, id, x, y))) continue;
            for (int k = 0; k < 3; k++) sum[k] += ws->rgb[3 * p + k];
            count++;
        }
    }
    for (int k = 0; k < 3; k++) cand->color[k] = (float)(sum[k] / count);
    /* texture: how far interior pixels stray from the line background -> colour (RMS of the
     * perpendicular part: noise and patterns of other hues), plus the roughness of the
     * coverage along that line at pixels two steps inside (their coverage minus the mean of
     * their neighbours'). Anti-aliased edges and blur move pixels along the line, smoothly,
     * and cost nothing. */
    const float *bg = world_background;
    float axis[3], len2 = 0.0f;
    for (int k = 0; k < 3; k++) {
        axis[k] = cand->color[k] - bg[k];
        len2 += axis[k] * axis[k];
    }
    double perp = 0, rough = 0;
    int inner = 0, deep = 0;
    for (int y = c->y0; y <= c->y1 && len2 > 0.0f; y++) {
        for (int x = c->x0; x <= c->x1; x++) {
            if (!is_inner(ws, S, id, x, y)) continue;
            const float *q = ws->rgb + 3 * (y * S + x);
            float a = coverage_along(q, axis, len2);
            for (int k = 0; k < 3; k++) {
                float d = q[k] - bg[k] - a * axis[k];
                perp += (double)d * d;
            }
            inner++;
            if (is_inner(ws, S, id, x - 1, y) && is_inner(ws, S, id, x + 1, y) &&
                is_inner(ws, S, id, x, y - 1) && is_inner(ws, S, id, x, y + 1)) {
                float nb = coverage_along(q - 3, axis, len2) + coverage_along(q + 3, axis, len2) +
                           coverage_along(q - 3 * S, axis, len2) +
                           coverage_along(q + 3 * S, axis, len2);
                float d = a - 0.25f * nb;
                rough += (double)d * d * len2;
                deep++;
            }
        }
    }
    cand->texture = (float)sqrt((inner ? perp / inner : 0.0) + (deep ? rough / deep : 0.0));

    /* soft coverage over the box grown by 2 pixels */
    int wx0 = c->x0 - 2, wy0 = c->y0 - 2, w = c->x1 - c->x0 + 5, h = c->y1 - c->y0 + 5;
    double A = 0, mx = 0, my = 0;
    for (int i = 0; i < h; i++) {
        for (int j = 0; j < w; j++) {
            int x = wx0 + j, y = wy0 + i;
            float a = 0.0f;
            if (x >= 0 && y >= 0 && x < S && y < S) {
                int p = y * S + x;
                if (len2 > 0.0f && !claimed_by_other(ws, S, id, x, y)) {
                    /* the projection, for pixels whose colour points along the axis (the
                     * faint edge of a neighbour of another hue does not) */
                    const float *q = ws->rgb + 3 * p;
                    a = clamp01(coverage_along(q, axis, len2));
                    if (a > 0.0f)
                        a *= ramp(ray_cos(q, cand->color), COVER_COS_ZERO, COVER_COS_FULL);
                }
            }
            ws->obs[i * w + j] = a;
            A += a;
            mx += a * (x + 0.5);
            my += a * (y + 0.5);
        }
    }
    cand->area = (float)A;
    if (len2 < 1e-4f || A < 0.5) { /* a colour that is the background's: no shape at all */
        for (int k = 0; k < SHAPE_KINDS; k++) {
            cand->iou[k] = 0.0f;
            cand->fit[k] = (SceneObject){(ShapeKind)k,
                                         0,
                                         SIZE_MEDIUM,
                                         (c->x0 + c->x1 + 1) * 0.5f / S,
                                         (c->y0 + c->y1 + 1) * 0.5f / S,
                                         0.0f};
        }
        return;
    }
    mx /= A;
    my /= A;
    static const float fill[SHAPE_KINDS] = {0.78539816f, 1.0f, 0.5f};
    for (int k = 0; k < SHAPE_KINDS; k++) {
        SceneObject *o = &cand->fit[k];
        float r = 0.5f * sqrtf((float)A / fill[k]); /* pixels */
        o->shape = (ShapeKind)k;
        o->color = 0;
        o->size = SIZE_MEDIUM;
        o->radius = r / (float)S;
        o->cx = (float)mx / (float)S;
        /* a triangle's centroid sits a third of the half-extent below its box centre */
        o->cy = ((float)my - (k == SHAPE_TRIANGLE ? r / 3.0f : 0.0f)) / (float)S;
        world_object_coverage(o, S, wx0, wy0, w, h, ws->tmpl);
        double inter = 0, uni = 0;
        for (int i = 0; i < w * h; i++) {
            float a = ws->obs[i], t = ws->tmpl[i];
            inter += a < t ? a : t;
            uni += a < t ? t : a;
        }
        /* template mass that falls outside the window counts in the union */
        double tmass = 0;
        for (int i = 0; i < w * h; i++) tmass += ws->tmpl[i];
        float full = (float)fill[k] * 4.0f * r * r;
        if (full > tmass) uni += full - tmass;
        cand->iou[k] = uni > 0 ? (float)(inter / uni) : 0.0f;
    }
}

/* Object score of candidate c for (colour, shape), with its factors. */
typedef struct {
    float score, color, shape, texture, extent;
} ObjectMatch;

static ObjectMatch match_object(const Candidate *c, int color, ShapeKind shape)
{
    ObjectMatch m;
    float d = dist3(c->color, world_palette[color].rgb);
    m.color = expf(-(d / COLOR_SIGMA) * (d / COLOR_SIGMA));
    float best_other = 0.0f;
    for (int k = 0; k < SHAPE_KINDS; k++)
        if (k != (int)shape && c->iou[k] > best_other) best_other = c->iou[k];
    m.shape = ramp(c->iou[shape], IOU_LO, IOU_HI) *
              ramp(c->iou[shape] - best_other, LEAD_ZERO, LEAD_FULL);
    m.texture = expf(-(c->texture / TEXTURE_SIGMA) * (c->texture / TEXTURE_SIGMA));
    float r = c->fit[shape].radius;
    m.extent =
        ramp(r, EXTENT_MIN_ZERO, EXTENT_MIN_FULL) * ramp(r, EXTENT_MAX_ZERO, EXTENT_MAX_FULL);
    m.score = m.color * m.shape * m.texture * m.extent;
    return m;
}

static float size_score(SizeKind want, float r)
{
    const float *R = world_size_radius;
    if (want == SIZE_SMALL) return ramp(r, R[SIZE_MEDIUM] * 1.1f, sqrtf(R[0] * R[1]));
    if (want == SIZE_LARGE) return ramp(r, R[SIZE_MEDIUM] * 0.9f, sqrtf(R[1] * R[2]));
    return 1.0f;
}

static float position_score(PositionKind pos, float cx, float cy)
{
    const float third = 1.0f / 3.0f;
    switch (pos) {
    case POS_TOP: return ramp(cy, 0.5f, third);
    case POS_BOTTOM: return ramp(cy, 0.5f, 1.0f - third);
    case POS_LEFT: return ramp(cx, 0.5f, third);
    case POS_RIGHT: return ramp(cx, 0.5f, 1.0f - third);
    case POS_CENTER:
        return ramp(fmaxf(fabsf(cx - 0.5f), fabsf(cy - 0.5f)), 0.25f, WORLD_CENTER_RADIUS);
    default: return 1.0f;
    }
}

/* How well "a REL b" holds between centres: the signed gap on the relation's axis, full
 * credit from RELATION_FULL on. */
#define RELATION_FULL 0.15f
static float relation_score(RelationKind rel, const SceneObject *a, const SceneObject *b)
{
    switch (rel) {
    case REL_LEFT_OF: return ramp(b->cx - a->cx, 0.0f, RELATION_FULL);
    case REL_RIGHT_OF: return ramp(a->cx - b->cx, 0.0f, RELATION_FULL);
    case REL_ABOVE: return ramp(b->cy - a->cy, 0.0f, RELATION_FULL);
    case REL_BELOW: return ramp(a->cy - b->cy, 0.0f, RELATION_FULL);
    default: return 0.0f;
    }
}

/* The scored requirements of one assignment (requested object i -> candidate assign[i], or -1),
 * without details: the matching step compares these totals. */
typedef struct {
    ObjectMatch obj[WORLD_MAX_OBJECTS];
    float size, position, relation, count;
    int extras;
    float total; /* sum of the requirement scores, "clean" aside */
    float hint;  /* colour and shape likeness of the matched candidates: breaks ties in favour
                  * of a match, so that a wrong object is reported rather than "not found" */
    int num;     /* number of requirements, "clean" aside */
} Evaluation;

/* table[i][k]: requested object i against candidate k, computed once per image. */
typedef ObjectMatch MatchTable[WORLD_MAX_OBJECTS][MAX_CANDIDATES];

static void evaluate(const CaptionSpec *spec, const Candidate *cands, int nc,
                     const MatchTable table, const int *assign, Evaluation *ev)
{
    memset(ev, 0, sizeof *ev);
    int n = spec->num_objects;
    for (int i = 0; i < n; i++) {
        int which = spec->kind == CAPTION_COUNT ? 0 : i;
        if (assign[i] >= 0) {
            ev->obj[i] = table[i][assign[i]];
            ev->hint += ev->obj[i].color + cands[assign[i]].iou[spec->shape[which]];
        }
        ev->total += ev->obj[i].score;
    }
    ev->num = n;
    if (spec->kind == CAPTION_SINGLE) {
        const Candidate *c = assign[0] >= 0 ? &cands[assign[0]] : NULL;
        const SceneObject *f = c ? &c->fit[spec->shape[0]] : NULL;
        if (spec->size != SIZE_MEDIUM) {
            ev->size = f ? size_score(spec->size, f->radius) * ev->obj[0].score : 0.0f;
            ev->total += ev->size;
            ev->num++;
        }
        if (spec->position != POS_ANY) {
            ev->position =
                f ? position_score(spec->position, f->cx, f->cy) * ev->obj[0].score : 0.0f;
            ev->total += ev->position;
            ev->num++;
        }
    } else if (spec->kind == CAPTION_RELATION) {
        if (assign[0] >= 0 && assign[1] >= 0) {
            const SceneObject *a = &cands[assign[0]].fit[spec->shape[0]];
            const SceneObject *b = &cands[assign[1]].fit[spec->shape[1]];
            ev->relation =
                relation_score(spec->relation, a, b) * sqrtf(ev->obj[0].score * ev->obj[1].score);
        }
        ev->total += ev->relation;
        ev->num++;
    } else if (spec->kind == CAPTION_COUNT) {
        /* look-alikes left over: unmatched candidates that would pass as one more */
        for (int k = 0; k < nc; k++) {
            int used = 0;
            for (int i = 0; i < n; i++) used |= assign[i] == k;
            if (!used && table[0][k].score >= 0.5f) ev->extras++;
        }
        /* exactness, as sure as the matched objects are (none found: no credit) */
        float conf = 0.0f;
        for (int i = 0; i < n; i++) conf += ev->obj[i].score;
        ev->count = conf / (float)n / (1.0f + (float)ev->extras);
        ev->total += ev->count;
        ev->num++;
    }
}

/* Step 4: the best assignment, by exhaustive search (at most 9 * 8 * 7 of them). */
static void best_assignment(const CaptionSpec *spec, const Candidate *cands, int nc, int *best,
                            Evaluation *best_ev)
{
    int n = spec->num_objects, a[WORLD_MAX_OBJECTS];
    MatchTable table;
    for (int i = 0; i < n; i++) {
        int which = spec->kind == CAPTION_COUNT ? 0 : i;
        for (int k = 0; k < nc; k++)
            table[i][k] = match_object(&cands[k], spec->color[which], spec->shape[which]);
    }
    for (int i = 0; i < n; i++) best[i] = -1;
    evaluate(spec, cands, nc, table, best, best_ev);
    /* odometer over {-1, 0 .. nc-1}^n, skipping repeats of a candidate */
    for (int i = 0; i < n; i++) a[i] = -1;
    for (;;) {
        int i = 0;
        while (i < n && ++a[i] >= nc) a[i++] = -1;
        if (i == n) break;
        int ok = 1;
        for (int x = 0; x < n && ok; x++)
            for (int y = x + 1; y < n && ok; y++) ok = a[x] < 0 || a[x] != a[y];
        if (!ok) continue;
        Evaluation ev;
        evaluate(spec, cands, nc, table, a, &ev);
        if (ev.total > best_ev->total || (ev.total == best_ev->total && ev.hint > best_ev->hint)) {
            *best_ev = ev;
            memcpy(best, a, (size_t)n * sizeof *a);
        }
    }
}

static const char *nearest_color_name(const float *rgb)
{
    int best = 0;
    for (int k = 1; k < world_palette_size; k++)
        if (dist3(rgb, world_palette[k].rgb) < dist3(rgb, world_palette[best].rgb)) best = k;
    return world_palette[best].name;
}

static AlignRequirement *add_req(AlignResult *out, const char *kind, float score)
{
    AlignRequirement *r = &out->req[out->num_requirements++];
    r->kind = kind;
    r->score = score;
    r->target[0] = r->detail[0] = '\0';
    return r;
}

static void describe_object(char *buf, size_t len, const Candidate *c, ShapeKind shape,
                            const ObjectMatch *m)
{
    const SceneObject *f = &c->fit[shape];
    snprintf(buf, len,
             "%s-ish blob at (%.2f, %.2f) r %.3f: colour %.2f, shape %.2f (IoU circle %.2f "
             "square %.2f triangle %.2f), texture %.2f, extent %.2f",
             nearest_color_name(c->color), f->cx, f->cy, f->radius, m->color, m->shape, c->iou[0],
             c->iou[1], c->iou[2], m->texture, m->extent);
}

static int score_pixels(AlignWorkspace *ws, const CaptionSpec *spec, int S, AlignResult *out)
{
    memset(out, 0, sizeof *out); /* no stale bytes: results compare with memcmp */
    int ncomp = segment(ws, S);
    /* the largest components, ties to the first in raster order */
    int order[MAX_CANDIDATES], nc = 0;
    for (int id = 0; id < ncomp; id++) {
        if (ws->comps[id].pixels < MIN_PIXELS) continue;
        int pos = nc < MAX_CANDIDATES ? nc++ : MAX_CANDIDATES;
        while (pos > 0 && ws->comps[order[pos - 1]].pixels < ws->comps[id].pixels) {
            if (pos < MAX_CANDIDATES) order[pos] = order[pos - 1];
            pos--;
        }
        if (pos < MAX_CANDIDATES) order[pos] = id;
    }
    Candidate cands[MAX_CANDIDATES];
    for (int k = 0; k < nc; k++) analyse(ws, S, order[k], &cands[k]);

    int assign[WORLD_MAX_OBJECTS];
    Evaluation ev;
    best_assignment(spec, cands, nc, assign, &ev);

    /* Step 5: ink that the matched objects do not explain */
    int n = S * S;
    memset(ws->explained, 0, (size_t)n);
    for (int i = 0; i < spec->num_objects; i++) {
        if (assign[i] < 0) continue;
        int id = cands[assign[i]].comp;
        const Component *c = &ws->comps[id];
        for (int y = c->y0; y <= c->y1; y++)
            for (int x = c->x0; x <= c->x1; x++) {
                if (ws->label[y * S + x] != id) continue;
                for (int yy = y - 1; yy <= y + 1; yy++)
                    for (int xx = x - 1; xx <= x + 1; xx++)
                        if (xx >= 0 && yy >= 0 && xx < S && yy < S) ws->explained[yy * S + xx] = 1;
            }
    }
    double unexplained = 0;
    for (int p = 0; p < n; p++)
        if (!ws->explained[p]) unexplained += ws->ink[p];
    float u = (float)(unexplained / n);
    float clean = 1.0f / (1.0f + u / CLEAN_SCALE);

    /* the breakdown */
    out->num_requirements = 0;
    out->num_objects_found = nc;
    for (int i = 0; i < spec->num_objects; i++) {
        int which = spec->kind == CAPTION_COUNT ? 0 : i;
        AlignRequirement *r = add_req(out, "object", ev.obj[i].score);
        snprintf(r->target, sizeof r->target, "%s %s", world_palette[spec->color[which]].name,
                 world_shape_names[spec->shape[which]]);
        if (assign[i] >= 0)
            describe_object(r->detail, sizeof r->detail, &cands[assign[i]], spec->shape[which],
                            &ev.obj[i]);
        else
            snprintf(r->detail, sizeof r->detail, "not found (%d candidate objects)", nc);
    }
    const SceneObject *f0 = assign[0] >= 0 ? &cands[assign[0]].fit[spec->shape[0]] : NULL;
    if (spec->kind == CAPTION_SINGLE && spec->size != SIZE_MEDIUM) {
        AlignRequirement *r = add_req(out, "size", ev.size);
        snprintf(r->target, sizeof r->target, "%s", world_size_names[spec->size]);
        if (f0)
            snprintf(r->detail, sizeof r->detail,
                     "half-extent %.3f (small %.2f, medium %.2f, "
                     "large %.2f), times object %.2f",
                     f0->radius, world_size_radius[0], world_size_radius[1], world_size_radius[2],
                     ev.obj[0].score);
        else
            snprintf(r->detail, sizeof r->detail, "no object");
    }
    if (spec->kind == CAPTION_SINGLE && spec->position != POS_ANY) {
        AlignRequirement *r = add_req(out, "position", ev.position);
        snprintf(r->target, sizeof r->target, "%s", world_position_phrases[spec->position]);
        if (f0)
            snprintf(r->detail, sizeof r->detail, "centre (%.2f, %.2f), times object %.2f", f0->cx,
                     f0->cy, ev.obj[0].score);
        else
            snprintf(r->detail, sizeof r->detail, "no object");
    }
    if (spec->kind == CAPTION_RELATION) {
        AlignRequirement *r = add_req(out, "relation", ev.relation);
        snprintf(r->target, sizeof r->target, "%s %s %s %s %s", world_palette[spec->color[0]].name,
                 world_shape_names[spec->shape[0]], world_relation_phrases[spec->relation],
                 world_palette[spec->color[1]].name, world_shape_names[spec->shape[1]]);
        if (assign[0] >= 0 && assign[1] >= 0) {
            const SceneObject *b = &cands[assign[1]].fit[spec->shape[1]];
            snprintf(r->detail, sizeof r->detail,
                     "centres (%.2f, %.2f) and (%.2f, %.2f), times objects %.2f %.2f", f0->cx,
                     f0->cy, b->cx, b->cy, ev.obj[0].score, ev.obj[1].score);
        } else {
            snprintf(r->detail, sizeof r->detail, "an object is missing");
        }
    }
    if (spec->kind == CAPTION_COUNT) {
        AlignRequirement *r = add_req(out, "count", ev.count);
        snprintf(r->target, sizeof r->target, "exactly %d", spec->num_objects);
        snprintf(r->detail, sizeof r->detail, "%d more look-alike object%s", ev.extras,
                 ev.extras == 1 ? "" : "s");
    }
    AlignRequirement *r = add_req(out, "clean", clean);
    snprintf(r->target, sizeof r->target, "nothing else");
    snprintf(r->detail, sizeof r->detail,
             "unexplained ink %.4f of the image (%d components, %d candidates)", u, ncomp, nc);
    out->clean = clean;
    out->score = ev.num ? ev.total / (float)ev.num * clean : 0.0f;
    return 0;
}

/* Parses the prompt and checks the size; sets *own when a workspace had to be made. */
static int prepare(AlignWorkspace **ws, int S, const char *prompt, CaptionSpec *spec, int *own,
                   char *err, size_t errlen)
{
    char why[200];
    *own = 0;
    if (world_parse_caption(prompt, spec, why, sizeof why) != 0) {
        errbuf_printf(err, errlen, "prompt \"%.80s\" is not in the %s grammar: %s", prompt,
                      WORLD_VERSION, why);
        return -1;
    }
    if (S < 1 || S > ALIGN_MAX_SIZE) {
        errbuf_printf(err, errlen, "image side %d outside [1, %d]", S, ALIGN_MAX_SIZE);
        return -1;
    }
    if (*ws && S > (*ws)->max_size) {
        errbuf_printf(err, errlen, "image side %d exceeds the workspace's %d", S, (*ws)->max_size);
        return -1;
    }
    if (!*ws) {
        *ws = align_workspace_new(S);
        if (!*ws) {
            errbuf_printf(err, errlen, "out of memory for a %dx%d workspace", S, S);
            return -1;
        }
        *own = 1;
    }
    return 0;
}

int align_score(AlignWorkspace *ws, const char *prompt, const float *img, int S, AlignResult *out,
                char *err, size_t errlen)
{
    CaptionSpec spec;
    int own;
    if (prepare(&ws, S, prompt, &spec, &own, err, errlen) != 0) return -1;
    size_t n = (size_t)S * S * 3;
    for (size_t i = 0; i < n; i++) {
        float v = 0.5f * (img[i] + 1.0f);
        ws->rgb[i] = v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f; /* NaN -> 0 */
    }
    int rc = score_pixels(ws, &spec, S, out);
    if (own) align_workspace_free(ws);
    return rc;
}

int align_score_rgb8(AlignWorkspace *ws, const char *prompt, const uint8_t *rgb, int w, int h,
                     AlignResult *out, char *err, size_t errlen)
{
    if (w != h) {
        errbuf_printf(err, errlen, "image is %dx%d: the align reward scores square images", w, h);
        return -1;
    }
    CaptionSpec spec;
    int own;
    if (prepare(&ws, w, prompt, &spec, &own, err, errlen) != 0) return -1;
    size_t n = (size_t)w * h * 3;
    for (size_t i = 0; i < n; i++) ws->rgb[i] = (float)rgb[i] * (1.0f / 255.0f);
    int rc = score_pixels(ws, &spec, w, out);
    if (own) align_workspace_free(ws);
    return rc;
}
