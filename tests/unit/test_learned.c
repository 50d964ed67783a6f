/*
 * test_learned.c: the learned rewards' arithmetic. pref: the score of a row is the mean of the
 * model's output, its gradient an equal share on every element, and the Bradley-Terry loss's
 * gradient matches finite differences (also where exp would overflow). clip: the InfoNCE loss
 * through the normalisation matches finite differences, with two images sharing a caption.
 */
#include "rewards/learned.h"
#include "test.h"

static void test_scores_and_their_gradient(void)
{
    float v[6] = {1, 2, 3, -1, -1, 5}, s[2], ds[2] = {0.6f, -3}, dv[6];
    pref_scores(v, 2, 3, s);
    CHECK(s[0] == 2.0f && s[1] == 1.0f);
    pref_score_grad(ds, 2, 3, dv);
    for (int k = 0; k < 3; k++) CHECK(dv[k] == 0.2f && dv[3 + k] == -1.0f);
}

static void test_pair_loss_matches_finite_differences(void)
{
    float chosen[4] = {0.5f, -2, 30, -40}, rejected[4] = {0.1f, 1, -30, 40};
    float dc[4], dr[4];
    int correct;
    double loss = pref_pair_loss(chosen, rejected, 4, dc, dr, &correct);
    CHECK(correct == 2);
    /* log(1+e^-0.4) + log(1+e^3) + ~0 + ~80, over 4 pairs */
    CHECK_CLOSE(loss, (log1p(exp(-0.4)) + log1p(exp(3.0)) + log1p(exp(-60.0)) + 80.0) / 4, 1e-6,
                1e-9);
    for (int i = 0; i < 4; i++) {
        CHECK(dc[i] == -dr[i] && dc[i] <= 0);
        float h = 1e-2f, save = chosen[i], g1[4], g2[4];
        int c;
        chosen[i] = save + h;
        double up = pref_pair_loss(chosen, rejected, 4, g1, g2, &c);
        chosen[i] = save - h;
        double down = pref_pair_loss(chosen, rejected, 4, g1, g2, &c);
        chosen[i] = save;
        CHECK_CLOSE(dc[i], (up - down) / (2 * h), 1e-5, 1e-3);
    }
    CHECK(isfinite(loss) && dc[3] < -0.2499f); /* a pair lost by 80 still has a gradient */
}

/* The clip loss of raw rows vi [B, D], vt [B, D] through the normalisation, and its gradient. */
static double clip_of(const float *vi, const float *vt, const uint8_t *same, int B, int D,
                      float *gvi, float *gvt, int *correct)
{
    float ei[64], et[64], ni[8], nt[8], dei[64], det[64];
    clip_normalise(vi, B, (size_t)D, ei, ni);
    clip_normalise(vt, B, (size_t)D, et, nt);
    double work[2 * 8 * 8];
    double loss = clip_batch_loss(ei, et, same, B, (size_t)D, 0.5f, work, dei, det, correct);
    clip_normalise_grad(ei, ni, dei, B, (size_t)D, gvi);
    clip_normalise_grad(et, nt, det, B, (size_t)D, gvt);
    return loss;
}

static void test_clip_loss_matches_finite_differences(void)
{
    enum { B = 3, D = 4 };
    float vi[B * D] = {1, 0.2f, -0.3f, 0.5f, 0.1f, 1.1f, 0.4f, -0.2f, -0.5f, 0.3f, 0.9f, 0.2f};
    float vt[B * D] = {0.8f, 0.1f, 0.0f, 0.7f, 0.2f, 0.9f, 0.5f, 0.1f, -0.2f, 0.8f, 0.6f, 0.1f};
    /* images 1 and 2 share a caption: both captions fit both */
    uint8_t same[B * B] = {1, 0, 0, 0, 1, 1, 0, 1, 1};
    float gvi[B * D], gvt[B * D], g1[B * D], g2[B * D];
    int correct, c;
    double loss = clip_of(vi, vt, same, B, D, gvi, gvt, &correct);
    CHECK(isfinite(loss) && loss > 0 && correct >= 1);
    for (int k = 0; k < B * D; k++) {
        for (int side = 0; side < 2; side++) {
            float *v = side ? vt : vi, save = v[k], h = 1e-3f;
            v[k] = save + h;
            double up = clip_of(vi, vt, same, B, D, g1, g2, &c);
            v[k] = save - h;
            double down = clip_of(vi, vt, same, B, D, g1, g2, &c);
            v[k] = save;
            CHECK_CLOSE((side ? gvt : gvi)[k], (up - down) / (2 * h), 2e-4, 2e-3);
        }
    }
    /* an embedding's length does not matter, only its direction */
    float scaled[B * D];
    for (int k = 0; k < B * D; k++) scaled[k] = 3 * vi[k];
    CHECK_CLOSE(clip_of(scaled, vt, same, B, D, g1, g2, &c), loss, 1e-6, 1e-6);
}

int main(void)
{
    TEST_RUN(test_scores_and_their_gradient);
    TEST_RUN(test_pair_loss_matches_finite_differences);
    TEST_RUN(test_clip_loss_matches_finite_differences);
    return test_summary("learned");
}
