/*
 * align.h: the `align` reward, GenEval-like and graded. It parses a prompt of the shapes world
 * (world_parse_caption) into requirements (each object with its colour and shape, a size, a
 * position, a relation, an exact count), finds objects in the image by colour segmentation
 * against the known background, fits each object with the world's own circle, square and
 * triangle templates, and scores every requirement in [0, 1] with partial credit (colour
 * distance, template overlap, position error). The total is the mean of the requirement scores
 * times a cleanliness factor, so that ink the prompt does not ask for (clutter, speckle, noise,
 * fragments of a broken object, halos) always costs score.
 *
 * Deterministic: the same prompt and pixels give the same bits. No allocation per image when a
 * workspace is passed. Knows nothing of files or JSON; docs/prompts.md describes the scoring.
 */
#ifndef CHUNKGRPO_ALIGN_H
#define CHUNKGRPO_ALIGN_H

#include <stddef.h>
#include <stdint.h>

#define ALIGN_MAX_REQUIREMENTS 8
#define ALIGN_MAX_SIZE 1024 /* the largest image side scored */

typedef struct {
    const char *kind; /* static: "object", "size", "position", "relation", "count", "clean" */
    char target[64];  /* what was asked: "red circle", "large", "at the top", ... */
    float score;      /* in [0, 1] */
    char detail[160]; /* what was found, for people */
} AlignRequirement;

typedef struct {
    float score;           /* in [0, 1]: mean of the requirements but "clean", times "clean" */
    float clean;           /* the cleanliness factor, also the last requirement */
    int num_objects_found; /* candidate objects segmented in the image */
    int num_requirements;
    AlignRequirement req[ALIGN_MAX_REQUIREMENTS];
} AlignResult;

/* Scratch memory for images up to max_size x max_size. One per thread; NULL when memory runs
 * out or max_size is outside [1, ALIGN_MAX_SIZE]. */
typedef struct AlignWorkspace AlignWorkspace;
AlignWorkspace *align_workspace_new(int max_size);
void align_workspace_free(AlignWorkspace *ws);

/*
 * Scores img [S, S, 3] (channels last, values in [-1, 1]; outside values are clamped) against
 * prompt. ws may be NULL (a workspace is then allocated and freed inside the call); otherwise it
 * must hold S <= its max_size and be used by one thread at a time. Returns 0 with *out filled,
 * or -1 with a message in err: a prompt outside the shapes grammar, S out of range, no memory.
 */
int align_score(AlignWorkspace *ws, const char *prompt, const float *img, int S, AlignResult *out,
                char *err, size_t errlen);

/* The same for an 8-bit RGB image rgb [h, w, 3] (as png_read_rgb gives); w must equal h. */
int align_score_rgb8(AlignWorkspace *ws, const char *prompt, const uint8_t *rgb, int w, int h,
                     AlignResult *out, char *err, size_t errlen);

#endif
