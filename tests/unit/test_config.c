/*
 * test_config.c: the table-driven config parser: defaults, every kind of error naming the
 * field, and the effective config printed back.
 */
#include <stdint.h>

#include "config.h"
#include "test.h"

typedef struct {
    int n;
    int64_t big;
    double rate;
    int flag;
    char name[CONFIG_STRING_MAX];
    ConfigWeights mix;
    ConfigWeightsList per;
} Demo;

static const char *const names[] = {"alpha", "beta", NULL};
static const ConfigField fields[] = {
    {"n", CONFIG_INT, offsetof(Demo, n), 1, 10, "3", NULL, "a count"},
    {"big", CONFIG_INT64, offsetof(Demo, big), 0, 1e15, "123456789012", NULL, "a seed"},
    {"rate", CONFIG_FLOAT, offsetof(Demo, rate), 0, 1, "1e-3", NULL, "a rate"},
    {"flag", CONFIG_BOOL, offsetof(Demo, flag), 0, 0, "false", NULL, "a switch"},
    {"name", CONFIG_STRING, offsetof(Demo, name), 0, 0, "\"alpha\"", names, "a choice"},
    {"mix", CONFIG_WEIGHTS, offsetof(Demo, mix), 0, 10, "{\"beta\": 2}", names, "weights"},
    {"per", CONFIG_WEIGHTS_LIST, offsetof(Demo, per), 0, 10, "[]", names, "weights each"},
};
#define COUNT ((int)(sizeof fields / sizeof fields[0]))

static int parse(const char *text, Demo *d, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *o = json_loads(text, 0, &jerr);
    if (!o) {
        snprintf(err, errlen, "test JSON: %s", jerr.text);
        return -2;
    }
    int rc = config_parse(o, "demo", fields, COUNT, d, err, errlen);
    json_decref(o);
    return rc;
}

static void test_defaults(void)
{
    Demo d;
    char err[256];
    CHECK(parse("{\"kind\": \"demo\"}", &d, err, sizeof err) == 0);
    CHECK(d.n == 3 && d.big == 123456789012LL && d.rate == 1e-3 && d.flag == 0);
    CHECK(strcmp(d.name, "alpha") == 0);
    CHECK(parse("{\"kind\": \"demo\", \"n\": 10, \"rate\": 1, \"flag\": true, \"name\": \"beta\"}",
                &d, err, sizeof err) == 0);
    CHECK(d.n == 10 && d.rate == 1.0 && d.flag == 1 && strcmp(d.name, "beta") == 0);
    CHECK(d.mix.w[0] == 0 && d.mix.w[1] == 2 && d.per.count == 0);
}

static void test_weights(void)
{
    Demo d;
    char err[256];
    CHECK(parse("{\"kind\": \"demo\", \"mix\": {\"alpha\": 0.5, \"beta\": 0}, \"per\": [{\"beta\": "
                "1}, {\"alpha\": 3, \"beta\": 4}]}",
                &d, err, sizeof err) == 0);
    CHECK(d.mix.w[0] == 0.5 && d.mix.w[1] == 0);
    CHECK(d.per.count == 2 && d.per.item[0].w[0] == 0 && d.per.item[0].w[1] == 1);
    CHECK(d.per.item[1].w[0] == 3 && d.per.item[1].w[1] == 4);
    /* a list at the limit is fine, one more is named */
    char text[2048] = "{\"kind\": \"demo\", \"per\": [";
    for (int i = 0; i <= CONFIG_LIST_MAX; i++)
        strcat(text, i ? ", {\"alpha\": 1}" : "{\"alpha\": 1}");
    strcat(text, "]}");
    CHECK(parse(text, &d, err, sizeof err) == -1 &&
          strstr(err, "config.per: 65 entries; at most 64"));
    strcpy(strrchr(text, ','), "]}");
    CHECK(parse(text, &d, err, sizeof err) == 0 && d.per.count == CONFIG_LIST_MAX);
}

static void expect_error(const char *text, const char *phrase)
{
    Demo d;
    char err[256] = "";
    int rc = parse(text, &d, err, sizeof err);
    CHECK_MSG(rc == -1 && strstr(err, phrase), "%s -> rc %d, \"%s\" (wanted \"%s\")", text, rc, err,
              phrase);
}

static void test_errors_name_the_field(void)
{
    expect_error("{\"kind\": \"demo\", \"m\": 1}", "config.m: unknown field");
    expect_error("{\"kind\": \"demo\", \"n\": 1.5}", "config.n: expected an integer, got real");
    expect_error("{\"kind\": \"demo\", \"n\": 11}", "config.n: 11 is out of range [1, 10]");
    expect_error("{\"kind\": \"demo\", \"n\": 99999999999}",
                 "config.n: 99999999999 is out of range");
    expect_error("{\"kind\": \"demo\", \"rate\": \"fast\"}",
                 "config.rate: expected a number, got \"fast\"");
    expect_error("{\"kind\": \"demo\", \"rate\": -0.1}", "config.rate: -0.1 is out of range");
    expect_error("{\"kind\": \"demo\", \"flag\": 1}", "config.flag: expected true or false");
    expect_error("{\"kind\": \"demo\", \"name\": \"gamma\"}",
                 "config.name: \"gamma\" is not one of \"alpha\" \"beta\"");
    expect_error("{\"kind\": \"demo\", \"name\": null}",
                 "config.name: expected a string, got null");
    expect_error("{\"kind\": \"demo\", \"mix\": \"alpha\"}",
                 "config.mix: expected an object of weights like {\"alpha\": 1}, got \"alpha\"");
    expect_error("{\"kind\": \"demo\", \"mix\": {\"gamma\": 1}}",
                 "config.mix: \"gamma\" is not one of \"alpha\" \"beta\"");
    expect_error("{\"kind\": \"demo\", \"mix\": {\"alpha\": \"1\"}}",
                 "config.mix.alpha: expected a number, got \"1\"");
    expect_error("{\"kind\": \"demo\", \"mix\": {\"alpha\": -1}}",
                 "config.mix.alpha: -1 is out of range [0, 10]");
    expect_error("{\"kind\": \"demo\", \"mix\": {}}",
                 "config.mix: give at least one of its names a weight above 0");
    expect_error("{\"kind\": \"demo\", \"mix\": {\"alpha\": 0}}", "config.mix: give at least one");
    expect_error("{\"kind\": \"demo\", \"per\": {\"alpha\": 1}}",
                 "config.per: expected a list of weight objects, got object");
    expect_error("{\"kind\": \"demo\", \"per\": [{\"alpha\": 1}, {\"beta\": 11}]}",
                 "config.per[1].beta: 11 is out of range [0, 10]");
    expect_error("{\"kind\": \"demo\", \"per\": [{\"alpha\": 1}, null]}",
                 "config.per[1]: expected an object of weights");
    expect_error("{\"n\": 2}", "config.kind: expected \"demo\"");
    expect_error("{\"kind\": \"other\"}", "config.kind: expected \"demo\"");
    expect_error("[1]", "config: expected a JSON object");
}

static void test_effective_config_round_trip(void)
{
    Demo d, again;
    char err[256];
    CHECK(parse("{\"kind\": \"demo\", \"rate\": 0.1, \"name\": \"beta\", \"mix\": {\"alpha\": 1, "
                "\"beta\": 0.25}, \"per\": [{\"beta\": 1}]}",
                &d, err, sizeof err) == 0);
    json_t *o = config_to_json("demo", fields, COUNT, &d);
    CHECK(json_object_size(o) == COUNT + 1);
    CHECK(config_parse(o, "demo", fields, COUNT, &again, err, sizeof err) == 0);
    CHECK(again.n == d.n && again.big == d.big && again.rate == d.rate && again.flag == d.flag);
    CHECK(strcmp(again.name, d.name) == 0);
    CHECK(memcmp(&again.mix, &d.mix, sizeof d.mix) == 0);
    CHECK(again.per.count == 1 && memcmp(&again.per.item[0], &d.per.item[0], sizeof d.mix) == 0);
    json_decref(o);
}

static void test_load_file_errors(void)
{
    char err[256];
    CHECK(config_load_file("/nonexistent/cfg.json", err, sizeof err) == NULL);
    CHECK(strstr(err, "/nonexistent/cfg.json") != NULL);
    test_tmpdir_create();
    const char *p = test_tmp_path("dup.json");
    FILE *f = fopen(p, "w");
    fputs("{\"kind\": \"demo\",\n \"n\": 1, \"n\": 2}", f);
    fclose(f);
    CHECK(config_load_file(p, err, sizeof err) == NULL);
    CHECK_MSG(strstr(err, "dup.json:2:") && strstr(err, "duplicate"), "%s", err);
    test_tmpdir_remove();
}

int main(void)
{
    TEST_RUN(test_defaults);
    TEST_RUN(test_weights);
    TEST_RUN(test_errors_name_the_field);
    TEST_RUN(test_effective_config_round_trip);
    TEST_RUN(test_load_file_errors);
    return test_summary("config");
}
