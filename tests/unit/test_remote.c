/*
 * test_remote.c: the reward server client's pieces that need no server: base64 and the reading
 * of a /v1/score answer (tests/cli/remote_reward.sh runs the client against the example server).
 */
#include <stdint.h>

#include "rewards/remote.h"
#include "test.h"

static void test_base64(void)
{
    /* RFC 4648 section 10 */
    static const char *const in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const want[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                       "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char *got = base64_encode((const uint8_t *)in[i], strlen(in[i]));
        CHECK_MSG(got && strcmp(got, want[i]) == 0, "\"%s\" -> %s", in[i], got ? got : "NULL");
        free(got);
    }
    uint8_t all[256];
    for (int i = 0; i < 256; i++) all[i] = (uint8_t)i;
    char *got = base64_encode(all, sizeof all);
    CHECK(got && strlen(got) == 344 && strncmp(got, "AAECAwQF", 8) == 0 &&
          strcmp(got + 336, "/P3+/w==") == 0);
    free(got);
}

/* Parses body for request "r-0" with items 10..12; returns the parser's result. */
static int parse(const char *body, float *scores, RemoteScoreStats *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    for (int i = 0; i < 3; i++) scores[i] = -7;
    return remote_parse_results(body, "r-0", 10, 3, scores, st, err, errlen);
}

static void test_parse_results(void)
{
    float s[3];
    RemoteScoreStats st;
    char err[256] = "";
    /* answers in any order; an item error gives NAN and is counted with its message */
    CHECK_MSG(parse("{\"request_id\":\"r-0\",\"results\":[{\"id\":\"12\",\"score\":0.25},"
                    "{\"id\":\"10\",\"score\":-1e3},{\"id\":\"11\",\"error\":\"bad image\"}]}",
                    s, &st, err, sizeof err) == 0,
              "%s", err);
    CHECK(s[0] == -1000.0f && isnan(s[1]) && s[2] == 0.25f);
    CHECK(st.item_errors == 1 && strcmp(st.first_error, "item 11: bad image") == 0);

    /* every way an answer can break the protocol names its field */
    static const struct {
        const char *body, *want;
    } bad[] = {
        {"not json", "not a JSON object"},
        {"[1, 2]", "not a JSON object"},
        {"{\"results\":[]}", "request_id: answered nothing for request \"r-0\""},
        {"{\"request_id\":\"r-1\",\"results\":[]}", "request_id: answered \"r-1\""},
        {"{\"request_id\":\"r-0\"}", "results: missing or not an array"},
        {"{\"request_id\":\"r-0\",\"results\":{}}", "results: missing or not an array"},
        {"{\"request_id\":\"r-0\",\"results\":[{\"id\":\"10\",\"score\":1},"
         "{\"id\":\"11\",\"score\":1}]}",
         "results: no answer for item \"12\""},
        {"{\"request_id\":\"r-0\",\"results\":[{\"id\":\"13\",\"score\":1}]}",
         "results[0].id: \"13\" names no item"},
        {"{\"request_id\":\"r-0\",\"results\":[{\"id\":\"1x\",\"score\":1}]}",
         "results[0].id: \"1x\" names no item"},
        {"{\"request_id\":\"r-0\",\"results\":[{\"id\":10,\"score\":1}]}",
         "results[0].id: missing or not a string"},
        {"{\"request_id\":\"r-0\",\"results\":[{\"id\":\"10\",\"score\":1},"
         "{\"id\":\"10\",\"score\":2}]}",
         "results[1].id: \"10\" answered twice"},
        {"{\"request_id\":\"r-0\",\"results\":[{\"id\":\"10\",\"score\":\"0.5\"}]}",
         "results[0].score: not a finite number"},
        {"{\"request_id\":\"r-0\",\"results\":[{\"id\":\"10\"}]}",
         "results[0].score: missing (and no error given)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = parse(bad[i].body, s, &st, err, sizeof err);
        CHECK_MSG(rc == -1 && strstr(err, bad[i].want), "%s -> %d \"%s\"", bad[i].body, rc, err);
    }
}

int main(void)
{
    TEST_RUN(test_base64);
    TEST_RUN(test_parse_results);
    return test_summary("remote");
}
