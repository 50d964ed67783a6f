/*
 * test_uplink.c: the uplink's line framing (worker/uplink.h): metrics.jsonl lines and the
 * runner's output as worker-protocol events, including the lines a crash or a terminal leaves.
 */
#include <string.h>

#include "test.h"
#include "uplink.h"

static json_t *metrics(const char *line, const char *key, int64_t *it)
{
    return uplink_metrics_event(line, strlen(line), key, it);
}

static json_t *data_of(json_t *e, const char *key)
{
    return json_object_get(json_object_get(e, "data"), key);
}

static void test_metrics_line(void)
{
    int64_t it = -1;
    json_t *e = metrics("{\"iteration\":7,\"loss\":0.5,\"lr\":1e-3,\"count\":3,\"chunks\":[1,2],"
                        "\"chunk_ratio\":[{\"mean\":1}],\"name\":\"x\",\"ok\":true}",
                        "iteration", &it);
    CHECK(e != NULL);
    CHECK(it == 7);
    /* the seq follows the iteration, so a resumed or moved run sends the same numbers */
    CHECK(json_integer_value(json_object_get(e, "seq")) == 8);
    CHECK(strcmp(json_string_value(json_object_get(e, "type")), "metrics") == 0);
    CHECK(json_integer_value(data_of(e, "iteration")) == 7);
    json_t *values = data_of(e, "values");
    /* loss, lr, count and chunk_ratio.0.mean: numbers only, not the key */
    CHECK(json_object_size(values) == 4);
    CHECK(json_integer_value(json_object_get(values, "chunk_ratio.0.mean")) == 1);
    CHECK(json_real_value(json_object_get(values, "loss")) == 0.5);
    CHECK(json_integer_value(json_object_get(values, "count")) == 3);
    CHECK(!json_object_get(values, "iteration") && !json_object_get(values, "ok"));
    json_decref(e);

    /* an object's numbers become series of their own; what is not a number stays out */
    e = metrics("{\"iteration\":3,\"eval_template\":{\"pair\":0.25,\"count\":1,\"x\":\"y\","
                "\"z\":[1],\"w\":{\"v\":2}}}",
                "iteration", &it);
    values = data_of(e, "values");
    CHECK(e && json_object_size(values) == 2);
    CHECK(json_real_value(json_object_get(values, "eval_template.pair")) == 0.25);
    CHECK(json_integer_value(json_object_get(values, "eval_template.count")) == 1);
    json_decref(e);

    e = metrics("{\"step\":100,\"loss\":1.25}", "step", &it);
    CHECK(e && it == 100 && json_integer_value(json_object_get(e, "seq")) == 101);
    json_decref(e);
    e = metrics("{\"iteration\":0,\"eval_align\":0.25}", "iteration", &it);
    CHECK(e && it == 0 && json_integer_value(json_object_get(e, "seq")) == 1);
    json_decref(e);
}

static void test_metrics_bad_lines(void)
{
    int64_t it = 42;
    const char *bad[] = {
        "",
        "{\"iteration\":3,\"loss\":0.5",    /* cut short by a crash */
        "{\"step\":3,\"loss\":0.5}",        /* another key */
        "{\"iteration\":-1,\"loss\":0.5}",  /* negative */
        "{\"iteration\":2.5,\"loss\":0.5}", /* not an integer */
        "[1, 2, 3]",
        "{\"iteration\":1} trailing",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_MSG(metrics(bad[i], "iteration", &it) == NULL, "line %zu: %s", i, bad[i]);
    CHECK(it == 42);
    /* only len bytes count: the newline and what follows are not the line's */
    const char *two = "{\"iteration\":1,\"a\":1}\n{\"iteration\":2";
    json_t *e = uplink_metrics_event(two, strchr(two, '\n') - two, "iteration", &it);
    CHECK(e && it == 1);
    json_decref(e);
}

static const char *level(json_t *e)
{
    return json_string_value(data_of(e, "level"));
}

static const char *message(json_t *e)
{
    return json_string_value(data_of(e, "message"));
}

static void test_log_lines(void)
{
    json_t *e = uplink_log_event("step 3/6 (50%) reward 0.1", 25, 1000000000005);
    CHECK(e && json_integer_value(json_object_get(e, "seq")) == 1000000000005);
    CHECK(strcmp(json_string_value(json_object_get(e, "type")), "log") == 0);
    CHECK(strcmp(level(e), "info") == 0 && strcmp(message(e), "step 3/6 (50%) reward 0.1") == 0);
    json_decref(e);
    const char *err = "chunkgrpo-worker: config.model: no such file";
    e = uplink_log_event(err, strlen(err), 1);
    CHECK(e && strcmp(level(e), "error") == 0);
    json_decref(e);
    e = uplink_log_event("CUDA Error at engine.cu:12", 26, 1);
    CHECK(e && strcmp(level(e), "error") == 0);
    json_decref(e);
    /* a terminal's progress bar redraws after \r: the last drawing is the line */
    const char *bar = "\r1/6 [#....]\r2/6 [##...]  ";
    e = uplink_log_event(bar, strlen(bar), 1);
    CHECK(e && strcmp(message(e), "2/6 [##...]") == 0);
    json_decref(e);
    CHECK(uplink_log_event("", 0, 1) == NULL);
    CHECK(uplink_log_event("  \r  ", 5, 1) == NULL);
}

static void test_log_line_limits(void)
{
    /* invalid UTF-8 becomes '?', valid multi-byte characters stay */
    const char bytes[] = "caf\xc3\xa9 \xff\xfe ok \xe2\x82";
    json_t *e = uplink_log_event(bytes, sizeof bytes - 1, 1);
    CHECK(e && strcmp(message(e), "caf\xc3\xa9 ?? ok ??") == 0);
    json_decref(e);
    /* a long line is cut to UPLINK_MESSAGE_MAX bytes, never inside a character */
    size_t n = UPLINK_MESSAGE_MAX + 100;
    char *lng = malloc(n);
    memset(lng, 'a', n);
    memcpy(lng + UPLINK_MESSAGE_MAX - 1, "\xc3\xa9", 2);
    e = uplink_log_event(lng, n, 1);
    CHECK(e && strlen(message(e)) == UPLINK_MESSAGE_MAX - 1);
    json_decref(e);
    free(lng);
}

int main(void)
{
    TEST_RUN(test_metrics_line);
    TEST_RUN(test_metrics_bad_lines);
    TEST_RUN(test_log_lines);
    TEST_RUN(test_log_line_limits);
    return test_summary("uplink");
}
