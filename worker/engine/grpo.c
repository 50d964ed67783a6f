/*
 * grpo.c: the BLAS-free half of GRPO / Chunk-GRPO (see grpo.h for the contract, algorithm.md
 * sections 3 to 6 for the method): advantages, chunking, chunk selection and the clipped chunk
 * objective. The model-level micro-step, which runs the CPU model, is in grpo_cpu.c.
 */
#include "grpo.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "errbuf.h"

/* ------------------------------------------------------------------------------------------ */
/* Advantages                                                                                  */

int grpo_advantages(const float *rewards, int groups, int group_size, float adv_clip, float *adv)
{
    int equal_groups = 0;
    for (int g = 0; g < groups; g++) {
        const float *r = rewards + (size_t)g * group_size;
        float *a = adv + (size_t)g * group_size;
        int all_equal = 1;
        for (int j = 1; j < group_size; j++) all_equal &= r[j] == r[0];
        if (all_equal) { /* also group_size 1: no spread, no signal */
            for (int j = 0; j < group_size; j++) a[j] = 0.0f;
            equal_groups++;
            continue;
        }
        double mean = 0.0, ss = 0.0;
        for (int j = 0; j < group_size; j++) mean += r[j];
        mean /= group_size;
        for (int j = 0; j < group_size; j++) ss += ((double)r[j] - mean) * ((double)r[j] - mean);
        double denom = sqrt(ss / (group_size - 1)) + GRPO_STD_EPS;
        double clip = adv_clip;
        /* the values are read before any is written, so adv may alias rewards */
        for (int j = 0; j < group_size; j++) {
            double v = ((double)r[j] - mean) / denom;
            a[j] = (float)(v < -clip ? -clip : v > clip ? clip : v);
        }
    }
    return equal_groups;
}

/* ------------------------------------------------------------------------------------------ */
/* Chunking                                                                                    */

/* Every chunking splits 1 .. GRPO_MAX_CHUNKS trainable steps into 1 .. trainable chunks. */
static int check_split(int k, int trainable, char *err, size_t errlen)
{
    if (trainable < 1 || trainable > GRPO_MAX_CHUNKS) {
        errbuf_printf(err, errlen, "trainable steps must be in [1, %d], got %d", GRPO_MAX_CHUNKS,
                      trainable);
        return -1;
    }
    if (k < 1 || k > trainable) {
        errbuf_printf(err, errlen, "%d chunks for %d trainable steps; need 1 to %d", k, trainable,
                      trainable);
        return -1;
    }
    return 0;
}

int chunking_from_sizes(const int *sizes, int k, int trainable, Chunking *out, char *err,
                        size_t errlen)
{
    if (check_split(k, trainable, err, errlen)) return -1;
    long sum = 0;
    for (int j = 0; j < k; j++) {
        if (sizes[j] < 1) {
            errbuf_printf(err, errlen, "chunk %d has size %d; every chunk needs at least 1 step", j,
                          sizes[j]);
            return -1;
        }
        sum += sizes[j];
    }
    if (sum != trainable) {
        errbuf_printf(err, errlen, "chunk sizes sum to %ld, but there are %d trainable steps", sum,
                      trainable);
        return -1;
    }
    out->count = k;
    for (int j = 0, s = 0; j < k; s += sizes[j], j++) {
        out->start[j] = s;
        out->size[j] = sizes[j];
    }
    return 0;
}

int chunking_uniform(int k, int trainable, Chunking *out, char *err, size_t errlen)
{
    if (check_split(k, trainable, err, errlen)) return -1;
    int base = trainable / k, larger = trainable % k;
    out->count = k;
    for (int j = 0, s = 0; j < k; j++) {
        out->start[j] = s;
        out->size[j] = base + (j >= k - larger); /* the larger ones last */
        s += out->size[j];
    }
    return 0;
}

/*
 * Dynamic programme over (chunks used c, steps covered j): best[c][j] is the least total
 * within-chunk sum of squares of curve[0, j) in c chunks, with pen[c][j] the sum of squared
 * sizes of that split (the tie-break) and from[c][j] the start of its last chunk. The cost of
 * a last chunk [i, j) is accumulated while i walks down from j - 1 (Welford's running mean and
 * M2, stable where prefix sums of squares would cancel).
 */
int chunking_optimal(const float *curve, int trainable, int k, Chunking *out, char *err,
                     size_t errlen)
{
    if (check_split(k, trainable, err, errlen)) return -1;
    for (int i = 0; i < trainable; i++) {
        if (!isfinite(curve[i])) {
            errbuf_printf(err, errlen, "curve value %d is not finite (%g)", i, curve[i]);
            return -1;
        }
    }
    int n = trainable;
    size_t cells = (size_t)(k + 1) * (n + 1);
    double *best = malloc(cells * sizeof *best);
    int64_t *pen = malloc(cells * sizeof *pen);
    int *from = malloc(cells * sizeof *from);
    if (!best || !pen || !from) {
        free(best);
        free(pen);
        free(from);
        errbuf_printf(err, errlen, "out of memory segmenting %d steps into %d chunks", n, k);
        return -1;
    }
#define AT(c, j) ((size_t)(c) * (n + 1) + (j))
    for (int j = 0; j <= n; j++) { /* zero chunks cover zero steps only */
        best[AT(0, j)] = j == 0 ? 0.0 : INFINITY;
        pen[AT(0, j)] = 0;
    }
    for (int c = 1; c <= k; c++) {
        /* j steps in c chunks needs c <= j, and leaves k - c chunks for n - j steps */
        for (int j = c; j <= n - (k - c); j++) {
            double bc = INFINITY, mean = 0.0, m2 = 0.0;
            int64_t bp = 0;
            int bi = -1;
            for (int i = j - 1; i >= c - 1; i--) { /* last chunk [i, j) */
                int len = j - i;
                double x = curve[i], d = x - mean;
                mean += d / len;
                m2 += d * (x - mean);
                double cost = best[AT(c - 1, i)] + m2;
                int64_t p = pen[AT(c - 1, i)] + (int64_t)len * len;
                /* i walks down, so on a full tie the earlier candidate (larger i, smaller
                 * last chunk) would win; "<=" on the penalty hands it to the larger last
                 * chunk instead */
                if (cost < bc || (cost == bc && p <= bp && cost < INFINITY)) {
                    bc = cost;
                    bp = p;
                    bi = i;
                }
            }
            best[AT(c, j)] = bc;
            pen[AT(c, j)] = bp;
            from[AT(c, j)] = bi;
        }
    }
    out->count = k;
    for (int c = k, j = n; c >= 1; c--) {
        int i = from[AT(c, j)];
        out->start[c - 1] = i;
        out->size[c - 1] = j - i;
        j = i;
    }
#undef AT
    free(best);
    free(pen);
    free(from);
    return 0;
}

void chunk_weights_from_curve(const Chunking *ch, const float *curve, float *weights)
{
    double w[GRPO_MAX_CHUNKS], total = 0.0;
    for (int j = 0; j < ch->count; j++) {
        double s = 0.0;
        for (int i = 0; i < ch->size[j]; i++) s += curve[ch->start[j] + i];
        w[j] = s / ch->size[j] + 1e-8;
        total += w[j];
    }
    for (int j = 0; j < ch->count; j++) weights[j] = (float)(w[j] / total);
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

int chunk_select(int count, int n_train, const float *weights, Rng *rng, int *chosen)
{
    if (n_train < 0 || n_train > count || count > GRPO_MAX_CHUNKS) return -1;
    double w[GRPO_MAX_CHUNKS];
    if (weights) {
        double total = 0.0;
        for (int j = 0; j < count; j++) {
            if (!(weights[j] >= 0.0f) || !isfinite(weights[j])) return -1;
            w[j] = weights[j];
            total += w[j];
        }
        if (!(total > 0.0)) return -1;
    }
    if (n_train == 0) return 0;
    float u[GRPO_MAX_CHUNKS];
    rng_uniform(rng, u, (size_t)n_train);
    if (!weights) {
        /* a partial Fisher-Yates shuffle: pick i takes a uniform index among the count - i
         * not yet taken */
        int idx[GRPO_MAX_CHUNKS];
        for (int j = 0; j < count; j++) idx[j] = j;
        for (int i = 0; i < n_train; i++) {
            int j = i + (int)((double)u[i] * (count - i));
            if (j > count - 1) j = count - 1;
            int t = idx[i];
            idx[i] = idx[j];
            idx[j] = t;
            chosen[i] = idx[i];
        }
    } else {
        char taken[GRPO_MAX_CHUNKS];
        memset(taken, 0, (size_t)count);
        for (int i = 0; i < n_train; i++) {
            double total = 0.0;
            int last = -1, any_left = -1;
            for (int j = 0; j < count; j++) {
                if (taken[j]) continue;
                if (any_left < 0) any_left = j;
                if (w[j] > 0.0) {
                    total += w[j];
                    last = j;
                }
            }
            int pick;
            if (last < 0) { /* only zero weights are left: take them in order */
                pick = any_left;
            } else {
                double target = (double)u[i] * total, cum = 0.0;
                pick = last; /* rounding can leave target at the very top */
                for (int j = 0; j < count; j++) {
                    if (taken[j] || w[j] <= 0.0) continue;
                    cum += w[j];
                    if (target < cum) {
                        pick = j;
                        break;
                    }
                }
            }
            taken[pick] = 1;
            chosen[i] = pick;
        }
    }
    qsort(chosen, (size_t)n_train, sizeof *chosen, cmp_int);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* The clipped chunk objective                                                                 */

float grpo_chunk_loss(const float *logp_new, const float *logp_old, int size, float advantage,
                      float clip_eps, float *dlogp_new, int *clipped, float *ratio)
{
    double mean_new = 0.0, mean_old = 0.0;
    for (int k = 0; k < size; k++) {
        mean_new += logp_new[k];
        mean_old += logp_old[k];
    }
    mean_new /= size;
    mean_old /= size;
    double r = exp(mean_new - mean_old), A = advantage;
    double lo = 1.0 - (double)clip_eps, hi = 1.0 + (double)clip_eps;
    int inside = r >= lo && r <= hi; /* torch.clamp passes the gradient at its bounds */
    double rc = r < lo ? lo : r > hi ? hi : r;
    double unclipped = -A * r, clipped_branch = -A * rc;
    /* d loss / d r through torch.maximum: the larger branch, half each on a tie */
    double g_u = -A, g_c = inside ? -A : 0.0, dr;
    if (unclipped > clipped_branch)
        dr = g_u;
    else if (clipped_branch > unclipped)
        dr = g_c;
    else
        dr = 0.5 * (g_u + g_c);
    float d = (float)(dr * r / size); /* d r / d logp_new[k] = r / size */
    for (int k = 0; k < size; k++) dlogp_new[k] = d;
    if (clipped) *clipped = clipped_branch > unclipped;
    if (ratio) *ratio = (float)r;
    return (float)(unclipped > clipped_branch ? unclipped : clipped_branch);
}

int grpo_items_validate(const ModelConfig *mc, const Trajectory *tr, const GrpoConfig *c,
                        const GrpoItem *items, int n_items, float scale, int batch, char *err,
                        size_t errlen)
{
    if (!(c->clip_eps >= 0.0f) || !isfinite(c->clip_eps)) {
        errbuf_printf(err, errlen, "clip_eps must be a finite number >= 0, got %g", c->clip_eps);
        return -1;
    }
    if (sde_validate(c->sde, c->eta, err, errlen) != 0) return -1;
    if (!(c->kl_coef >= 0.0f) || !isfinite(c->kl_coef)) {
        errbuf_printf(err, errlen, "kl_coef must be a finite number >= 0, got %g", c->kl_coef);
        return -1;
    }
    if (c->guidance && !isfinite(c->cfg_scale)) {
        errbuf_printf(err, errlen, "cfg_scale must be finite, got %g", c->cfg_scale);
        return -1;
    }
    if (!isfinite(scale)) {
        errbuf_printf(err, errlen, "scale must be finite, got %g", scale);
        return -1;
    }
    if (tr->steps < 2) {
        errbuf_printf(err, errlen, "a trajectory of %d step(s) has no trainable transition",
                      tr->steps);
        return -1;
    }
    if (n_items < 0) {
        errbuf_printf(err, errlen, "n_items must be >= 0, got %d", n_items);
        return -1;
    }
    int trainable = sampler_trainable_steps(tr->steps);
    long rows = 0;
    for (int i = 0; i < n_items; i++) {
        const GrpoItem *it = &items[i];
        if (it->traj < 0 || it->traj >= tr->n) {
            errbuf_printf(err, errlen, "item %d: trajectory %d is outside [0, %d)", i, it->traj,
                          tr->n);
            return -1;
        }
        if (it->start < 0 || it->size < 1 || it->start > trainable - it->size) {
            errbuf_printf(err, errlen,
                          "item %d: transitions [%d, %d + %d) are not inside the %d trainable "
                          "ones",
                          i, it->start, it->start, it->size, trainable);
            return -1;
        }
        if (!isfinite(it->advantage)) {
            errbuf_printf(err, errlen, "item %d: advantage is not finite", i);
            return -1;
        }
        const int32_t *tok = tr->tokens + (size_t)it->traj * mc->text_len;
        for (int k = 0; k < mc->text_len; k++) {
            if (tok[k] < 0 || tok[k] >= mc->vocab_size) {
                errbuf_printf(err, errlen,
                              "item %d: token id %d of trajectory %d is outside the vocabulary "
                              "[0, %d)",
                              i, (int)tok[k], it->traj, mc->vocab_size);
                return -1;
            }
        }
        rows += it->size;
    }
    long model_rows = rows * grpo_rows_per_transition(c);
    if (model_rows > batch) {
        char guided[64] = "";
        if (c->guidance)
            snprintf(guided, sizeof guided, ", %ld model rows with guidance", model_rows);
        errbuf_printf(err, errlen, "the items hold %ld transitions%s, more than the batch of %d",
                      rows, guided, batch);
        return -1;
    }
    return 0;
}
