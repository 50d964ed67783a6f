/*
 * test_pref.c: the preference reward's arithmetic: the score of a row is the mean of the
 * model's output, its gradient an equal share on every element, and the Bradley-Terry loss's
 * gradient matches finite differences (also where exp would overflow).
 */
#include "rewards/pref.h"
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

int main(void)
{
    TEST_RUN(test_scores_and_their_gradient);
    TEST_RUN(test_pair_loss_matches_finite_differences);
    return test_summary("pref");
}
