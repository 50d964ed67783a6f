/*
 * shapes.h: the synthetic world. Captioned scenes of 1 to 3 flat objects (a shape, a colour from
 * a fixed palette, a size, a position) on a plain background, a deterministic seeded generator,
 * an anti-aliased renderer at any image size, the vocabulary, and the fixed, versioned prompt
 * sets (training prompts, and held-out prompts with colour-shape pairs and relations that
 * pretraining never shows).
 *
 * Knows nothing of JSON, files or the model. Images are float [S, S, 3], channels last, values in
 * [-1, 1] (the model's domain). Coordinates are fractions of the image side, x to the right and y
 * down; pixel (row i, column j) covers [j/S, (j+1)/S] x [i/S, (i+1)/S].
 *
 * The grammar (docs/prompts.md has the full story), every word lower case, "an" before "orange":
 *   single    "a [small|large] COLOUR SHAPE [at the top|at the bottom|on the left|on the right|
 *             in the center]"            (no size word = medium)
 *   count     "two|three COLOUR SHAPEs"
 *   pair      "a COLOUR SHAPE and a COLOUR SHAPE"
 *   relation  "a COLOUR SHAPE left of|right of|above|below a COLOUR SHAPE"
 * Held out of WORLD_SPLIT_TRAIN: the colour-shape pairs blue circle, green square, yellow triangle
 * and pink square (in any template), and the relation "above" with a triangle as its subject
 * ("a red triangle above a cyan circle"; "a cyan circle below a red triangle" is trained).
 *
 * Everything here is a pure function of its arguments or read-only data, so any thread may call
 * it at any time.
 */
#ifndef CHUNKGRPO_SHAPES_H
#define CHUNKGRPO_SHAPES_H

#include <stddef.h>
#include <stdint.h>

#define WORLD_VERSION "shapes-v1"
#define WORLD_MAX_OBJECTS 3
#define WORLD_CAPTION_MAX 128
#define WORLD_MAX_WORDS 10 /* the longest caption has 8 words; tokenizers may assume <= 12 */

typedef enum { SHAPE_CIRCLE, SHAPE_SQUARE, SHAPE_TRIANGLE, SHAPE_KINDS } ShapeKind;
typedef enum { SIZE_SMALL, SIZE_MEDIUM, SIZE_LARGE, SIZE_KINDS } SizeKind;

typedef struct {
    const char *name; /* "red" */
    float rgb[3];     /* in [0, 1] */
} PaletteColor;

extern const PaletteColor world_palette[]; /* world_palette_size entries */
extern const int world_palette_size;
extern const float world_background[3];                    /* in [0, 1] */
extern const char *const world_shape_names[SHAPE_KINDS];   /* "circle", "square", "triangle" */
extern const char *const world_shape_plurals[SHAPE_KINDS]; /* "circles", ... */
extern const char *const world_size_names[SIZE_KINDS];     /* "small", "medium", "large" */
/* Nominal half-extent (the `radius` of SceneObject) of each size class; scenes jitter it by
 * +-6%, so the classes never overlap (0.085-0.095, 0.122-0.138, 0.169-0.191): at 32x32 a
 * small object is about 6 pixels across, a large one 12. */
extern const float world_size_radius[SIZE_KINDS];

typedef struct {
    ShapeKind shape;
    int color; /* index into world_palette */
    SizeKind size;
    float cx, cy; /* centre, fraction of the image side, y down */
    /* Half-extent, fraction of the image side: every shape fills the axis-aligned box
     * [cx - radius, cx + radius] x [cy - radius, cy + radius]. A circle has this radius, a
     * square this half-side, a triangle is upright with its apex at the top middle of the box
     * and its base the bottom side (fill ratios of the box: pi/4, 1, 1/2). */
    float radius;
} SceneObject;

typedef struct {
    int num_objects;
    SceneObject objects[WORLD_MAX_OBJECTS]; /* in caption order: subject first */
    char caption[WORLD_CAPTION_MAX];
} Scene;

/* Which scenes the generator may produce. */
typedef enum {
    WORLD_SPLIT_TRAIN,   /* pretraining: never a held-out colour-shape pair or relation */
    WORLD_SPLIT_HELDOUT, /* only scenes whose caption is held out */
    WORLD_SPLIT_ALL,
} WorldSplit;

/* Scene number `index` of the stream (seed, split): a pure function of its arguments. */
void world_sample_scene(uint64_t seed, uint64_t index, WorldSplit split, Scene *out);

/* A scene that matches `caption` (one of the captions this world generates, e.g. from a prompt
 * set), with layout drawn from (seed, index). Returns 0, or -1 with a message in err when the
 * caption is not in the world's grammar. out->caption is the canonical form of the caption
 * (single spaces, lower case), equal to `caption` for every caption the world produces. */
int world_scene_for_caption(const char *caption, uint64_t seed, uint64_t index, Scene *out,
                            char *err, size_t errlen);

/* Renders the scene into img [S, S, 3], values in [-1, 1], anti-aliased (exact coverage along
 * x, 16 sub-rows along y). Pixels no object touches are exactly the background; pixels inside
 * an object exactly its colour. S >= 1. */
void world_render(const Scene *scene, int S, float *img);

/* Coverage in [0, 1] of object o over the pixel window [x0, x0 + w) x [y0, y0 + h) of an S x S
 * image, written to cov [h, w] (the renderer's own anti-aliasing; the window may extend past the
 * image). The align reward fits these as shape templates. */
void world_object_coverage(const SceneObject *o, int S, int x0, int y0, int w, int h, float *cov);

/* The vocabulary: every word a caption can contain, "<pad>" first and "<unk>" second. */
const char *const *world_vocab(int *count);

typedef enum { PROMPTS_TRAIN, PROMPTS_HELDOUT } PromptSetKind;

/* A fixed, versioned prompt set (WORLD_VERSION): training prompts for RL and held-out prompts
 * for evaluation. Returns the prompts and sets *count. Built once on first use (thread-safe);
 * the strings live for the whole process. */
const char *const *world_prompts(PromptSetKind kind, int *count);

/* True when the caption contains a held-out colour-shape pair or relation. */
int world_caption_is_heldout(const char *caption);

/* ---- The grammar, for the align reward and other readers of captions. */

typedef enum {
    CAPTION_SINGLE,
    CAPTION_COUNT,
    CAPTION_PAIR,
    CAPTION_RELATION,
    CAPTION_KINDS
} CaptionKind;
typedef enum {
    POS_ANY, /* not said */
    POS_TOP,
    POS_BOTTOM,
    POS_LEFT,
    POS_RIGHT,
    POS_CENTER,
    POS_KINDS
} PositionKind;
typedef enum { REL_NONE, REL_LEFT_OF, REL_RIGHT_OF, REL_ABOVE, REL_BELOW, REL_KINDS } RelationKind;

extern const char *const world_caption_kind_names[CAPTION_KINDS]; /* "single", "count", ... */
extern const char *const world_position_phrases[POS_KINDS];       /* "", "at the top", ... */
extern const char *const world_relation_phrases[REL_KINDS];       /* "", "left of", ... */

/* What a caption says. Objects in caption order; a count caption has num_objects copies of
 * color[0] / shape[0]. */
typedef struct {
    CaptionKind kind;
    int num_objects; /* single 1, count 2 or 3, pair and relation 2 */
    int color[2];    /* [0] the subject, [1] the second object of a pair or relation */
    ShapeKind shape[2];
    SizeKind size;         /* single only; SIZE_MEDIUM means "not said" */
    PositionKind position; /* single only */
    RelationKind relation; /* relation only */
} CaptionSpec;

/* The caption templates, as the generator draws them and the prompt sets list them
 * (docs/prompts.md): one object plain ("a red circle"), sized ("a large red circle") or placed
 * ("a red circle at the top", any size); a count; a pair; a relation. */
typedef enum {
    TEMPLATE_PLAIN,
    TEMPLATE_SIZED,
    TEMPLATE_PLACED,
    TEMPLATE_COUNT,
    TEMPLATE_PAIR,
    TEMPLATE_RELATION,
    TEMPLATE_KINDS
} CaptionTemplate;
extern const char *const world_template_names[TEMPLATE_KINDS]; /* "plain", ..., "relation" */

/* The template of a parsed caption. */
CaptionTemplate world_caption_template(const CaptionSpec *spec);

/* Parses a caption (case and punctuation are ignored, as the tokenizer does). Returns 0, or -1
 * with a message naming the word at fault in err. */
int world_parse_caption(const char *caption, CaptionSpec *out, char *err, size_t errlen);

/* The canonical caption of spec into buf (WORLD_CAPTION_MAX is always enough). */
void world_format_caption(const CaptionSpec *spec, char *buf, size_t len);

/* True when the colour-shape pair is held out of the training split. */
int world_pair_is_heldout(int color, ShapeKind shape);

/* Position regions, as the generator and the align reward read them: "at the top" means the
 * centre is in the upper third (cy < 1/3), "bottom" the lower third, "left"/"right" likewise for
 * cx, "in the center" within WORLD_CENTER_RADIUS of (0.5, 0.5) on both axes. Relations compare
 * centres along one axis ("A left of B": A.cx < B.cx); the generator keeps a gap of at least
 * WORLD_RELATION_GAP on that axis and at most WORLD_RELATION_SKEW on the other. */
#define WORLD_CENTER_RADIUS 0.1f
#define WORLD_RELATION_GAP 0.3f
#define WORLD_RELATION_SKEW 0.12f

#endif
