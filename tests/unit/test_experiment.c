/*
 * test_experiment.c: the experiment kinds of the common library as the control server uses them
 * (this suite links libcommon alone): experiment_config_validate on valid configs of every kind
 * and on each kind of error, which must name the field; the checks across fields; the chunks
 * spec; the registry's tables; the generated schema.
 */
#include <string.h>

#include "experiment.h"
#include "test.h"

/* experiment_config_validate of a JSON text; -2 when the text itself is not JSON. */
static int validate(const char *text, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *o = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!o) {
        snprintf(err, errlen, "test JSON: %s", jerr.text);
        return -2;
    }
    int rc = experiment_config_validate(o, err, errlen);
    json_decref(o);
    return rc;
}

static void expect_valid(const char *text)
{
    char err[512] = "";
    int rc = validate(text, err, sizeof err);
    CHECK_MSG(rc == 0, "%s -> rc %d, \"%s\"", text, rc, err);
}

static void expect_error(const char *text, const char *phrase)
{
    char err[512] = "";
    int rc = validate(text, err, sizeof err);
    CHECK_MSG(rc == -1 && strstr(err, phrase), "%s -> rc %d, \"%s\" (wanted \"%s\")", text, rc, err,
              phrase);
}

static void test_valid_config_of_every_kind(void)
{
    char text[64];
    for (int i = 0; i < experiment_kind_count; i++) { /* every default */
        snprintf(text, sizeof text, "{\"kind\": \"%s\"}", experiment_kinds[i].name);
        expect_valid(text);
    }
    expect_valid("{\"kind\": \"pretrain\", \"preset\": \"tiny\", \"steps\": 100, \"lr\": 3e-4, "
                 "\"seed\": 7, \"ema_decay\": 0, \"backend\": \"cuda\", \"precision\": \"bf16\"}");
    expect_valid(
        "{\"kind\": \"eval\", \"model\": \"m.safetensors\", \"prompts\": \"train\", "
        "\"mode\": \"hybrid\", \"base_model\": \"base.safetensors\", \"same_noise\": true}");
    expect_valid("{\"kind\": \"grpo\", \"chunks\": \"2,3,4,7\", \"steps\": 17, \"lr\": 2e-5, "
                 "\"sde\": \"dance\", \"eval_mode\": \"hybrid\", \"threads\": 2}");
    expect_valid("{\"kind\": \"grpo\", \"chunks\": \"uniform:16\"}");
    expect_valid("{\"kind\": \"grpo\", \"sde\": \"cps\", \"eta\": 1}");
    expect_valid("{\"kind\": \"grpo\", \"chunks\": \"dynamic\", \"chunk_count\": 16}");
    expect_valid("{\"kind\": \"profile\", \"steps\": 6, \"chunk_count\": 2, \"max_chunks\": 5}");
}

static void test_kind_errors_list_the_kinds(void)
{
    expect_error("{\"kind\": \"finetune\"}",
                 "config.kind: \"finetune\" is not one of \"pretrain\" \"eval\" \"grpo\" "
                 "\"reward_train\" \"profile\"");
    expect_error("{\"steps\": 3}", "config.kind: missing; expected one of \"pretrain\"");
    expect_error("{\"kind\": 3}", "config.kind: integer is not one of \"pretrain\"");
    expect_error("[{\"kind\": \"grpo\"}]", "config: expected a JSON object, got array");
    expect_error("null", "config: expected a JSON object, got null");
}

static void test_field_errors_name_the_field(void)
{
    expect_error("{\"kind\": \"pretrain\", \"learning_rate\": 1e-3}",
                 "config.learning_rate: unknown field for kind \"pretrain\"");
    expect_error("{\"kind\": \"eval\", \"chunks\": \"auto\"}",
                 "config.chunks: unknown field for kind \"eval\"");
    expect_error("{\"kind\": \"grpo\", \"iterations\": \"many\"}",
                 "config.iterations: expected an integer, got \"many\"");
    expect_error("{\"kind\": \"grpo\", \"same_noise\": 1}",
                 "config.same_noise: expected true or false");
    expect_error("{\"kind\": \"profile\", \"model\": 5}", "config.model: expected a string");
    expect_error("{\"kind\": \"grpo\", \"lr\": 2}", "config.lr: 2 is out of range [0, 1]");
    expect_error("{\"kind\": \"profile\", \"steps\": 1001}",
                 "config.steps: 1001 is out of range [2, 1000]");
    expect_error("{\"kind\": \"pretrain\", \"seed\": -1}", "config.seed: -1 is out of range");
    expect_error("{\"kind\": \"grpo\", \"sde\": \"ito\"}",
                 "config.sde: \"ito\" is not one of \"flow\" \"dance\" \"cps\"");
    expect_error("{\"kind\": \"eval\", \"backend\": \"tpu\"}",
                 "config.backend: \"tpu\" is not one of \"cpu\" \"cuda\"");
    expect_error("{\"kind\": \"pretrain\", \"precision\": \"fp16\"}",
                 "config.precision: \"fp16\" is not one of \"tf32\" \"fp32\" \"bf16\"");
}

static void test_checks_across_fields(void)
{
    expect_error("{\"kind\": \"grpo\", \"chunks\": \"2,2\"}",
                 "config.chunks: chunk sizes sum to 4, but there are 16 trainable steps");
    expect_error("{\"kind\": \"grpo\", \"chunks\": \"2,3\", \"steps\": 7}",
                 "config.chunks: chunk sizes sum to 5, but there are 6 trainable steps");
    expect_error("{\"kind\": \"grpo\", \"chunks\": \"uniform:17\"}",
                 "config.chunks: \"uniform:17\": K must be 1..16");
    expect_error("{\"kind\": \"grpo\", \"chunks\": \"fast\"}",
                 "config.chunks: \"fast\" is not sizes like");
    expect_error("{\"kind\": \"grpo\", \"chunks\": \"auto\", \"chunk_count\": 17}",
                 "config.chunk_count: at most steps - 1 = 16 chunks");
    expect_error(
        "{\"kind\": \"grpo\", \"chunks\": \"2,3,4,7\", \"chunk_rewards\": [{\"align\": 1}]}",
        "config.chunk_rewards: 1 entries, but the run trains 4 chunks");
    /* cps's eta is a fraction of a quarter turn; flow takes the same 1.2 */
    expect_error("{\"kind\": \"grpo\", \"sde\": \"cps\", \"eta\": 1.2}",
                 "config.eta: 1.2, but the cps SDE takes eta in (0, 1]");
    expect_error("{\"kind\": \"profile\", \"sde\": \"cps\", \"eta\": 1.5}", "config.eta: 1.5");
    expect_error("{\"kind\": \"eval\", \"sde\": \"cps\", \"eta\": 2}", "config.eta: 2");
    expect_error("{\"kind\": \"grpo\", \"method\": \"grpo\", \"steps\": 4, \"train_leading\": 4}",
                 "config.train_leading: 4, but the run has only 3 steps (step level)");
    expect_error("{\"kind\": \"grpo\", \"chunk_count\": 3, \"train_leading\": -1}",
                 "config.train_leading");
    expect_error("{\"kind\": \"grpo\", \"chunk_count\": 3, \"chunk_rewards\": [{\"align\": 1}]}",
                 "config.chunk_rewards: 1 entries, but the run trains 3 chunks");
    expect_error("{\"kind\": \"grpo\", \"method\": \"grpo\", \"steps\": 4, \"chunk_rewards\": "
                 "[{\"align\": 1}, {\"align\": 1}]}",
                 "config.chunk_rewards: 2 entries, but the run trains 3 steps (step level)");
    expect_valid("{\"kind\": \"grpo\", \"chunks\": \"uniform:2\", \"rewards\": {\"align\": 1, "
                 "\"clean\": 0.5}, \"chunk_rewards\": [{\"position\": 1}, {\"object\": 1}]}");
    expect_error("{\"kind\": \"grpo\", \"rewards\": {\"pickscore\": 1}}",
                 "config.rewards: \"pickscore\" is not one of \"align\" \"clean\" \"object\"");
    /* the remote reward needs its server, and the server an http(s) URL */
    expect_error("{\"kind\": \"grpo\", \"rewards\": {\"align\": 1, \"remote\": 0.5}}",
                 "config.rewards: weighs the remote reward, but config.remote_url names no reward "
                 "server");
    expect_error("{\"kind\": \"grpo\", \"chunks\": \"uniform:2\", \"chunk_rewards\": "
                 "[{\"align\": 1}, {\"remote\": 1}]}",
                 "config.chunk_rewards: weighs the remote reward");
    expect_error("{\"kind\": \"grpo\", \"remote_url\": \"ftp://host/score\"}",
                 "config.remote_url: \"ftp://host/score\" is not an http:// or https:// URL");
    expect_error("{\"kind\": \"grpo\", \"remote_url\": \"http://h\", \"remote_batch\": 0}",
                 "config.remote_batch");
    expect_error("{\"kind\": \"grpo\", \"rewards\": {\"align\": 1, \"pref\": 1}}",
                 "config.rewards: weighs the pref reward, but config.pref_model names no "
                 "preference model");
    expect_error("{\"kind\": \"grpo\", \"chunks\": \"uniform:2\", \"chunk_rewards\": "
                 "[{\"clip\": 1}, {\"align\": 1}]}",
                 "config.chunk_rewards: weighs the clip reward, but config.clip_model names no "
                 "contrastive model");
    expect_valid("{\"kind\": \"grpo\", \"clip_model\": \"m.safetensors\", \"rewards\": "
                 "{\"align\": 1, \"clip\": 0.5}}");
    expect_error("{\"kind\": \"reward_train\", \"degradations\": \"noise,fog\"}",
                 "config.degradations: \"fog\" is not one of noise, blur, ink, colour, missing");
    expect_error("{\"kind\": \"reward_train\", \"degradations\": \",\"}",
                 "config.degradations: name at least one");
    expect_valid("{\"kind\": \"reward_train\", \"degradations\": \"colour, missing\"}");
    /* a list names each degradation once however often it repeats it, in the names' order */
    int kinds[REWARD_DEGRADATIONS];
    char err[256];
    CHECK(reward_degradations_parse("missing,noise,missing,noise,missing,noise", kinds, err,
                                    sizeof err) == 2 &&
          kinds[0] == 0 && kinds[1] == 4);
    /* a server with weight 0 is a reward logged beside the training one */
    expect_valid("{\"kind\": \"grpo\", \"remote_url\": \"https://scores.example/\"}");
    expect_valid("{\"kind\": \"grpo\", \"remote_url\": \"http://127.0.0.1:8600\", "
                 "\"rewards\": {\"align\": 1, \"remote\": 2}}");
    /* step-level GRPO never reads the chunks */
    expect_valid("{\"kind\": \"grpo\", \"method\": \"grpo\", \"chunks\": \"2,2\"}");
    expect_error("{\"kind\": \"profile\", \"steps\": 6, \"chunk_count\": 9}",
                 "config.chunk_count: at most steps - 1 = 5 chunks");
    expect_error("{\"kind\": \"profile\", \"steps\": 6, \"chunk_count\": 2}",
                 "config.max_chunks: at most steps - 1 = 5 chunks");
    expect_error("{\"kind\": \"eval\", \"mode\": \"hybrid\"}",
                 "config.base_model: hybrid evaluation needs the base checkpoint");
}

static void test_chunk_spec(void)
{
    ChunkSpec s;
    char err[256];
    CHECK(chunk_spec_parse("2,3,4,7", 16, &s, err, sizeof err) == 0);
    CHECK(s.kind == CHUNK_SPEC_SIZES && s.count == 4);
    CHECK(s.size[0] == 2 && s.size[1] == 3 && s.size[2] == 4 && s.size[3] == 7);
    CHECK(chunk_spec_parse("16", 16, &s, err, sizeof err) == 0 && s.count == 1);
    CHECK(chunk_spec_parse("uniform:3", 16, &s, err, sizeof err) == 0);
    CHECK(s.kind == CHUNK_SPEC_UNIFORM && s.count == 3);
    CHECK(chunk_spec_parse("auto", 16, &s, err, sizeof err) == 0 && s.kind == CHUNK_SPEC_AUTO);
    CHECK(chunk_spec_parse("dynamic", 16, &s, err, sizeof err) == 0);
    CHECK(s.kind == CHUNK_SPEC_DYNAMIC);
    const char *bad[] = {"", "2,,14", "0,16", "-2,18", "2;14", "uniform:", "uniform:0", "auto:4"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        int rc = chunk_spec_parse(bad[i], 16, &s, err, sizeof err);
        CHECK_MSG(rc == -1 && strncmp(err, "config.chunks: ", 15) == 0, "\"%s\" -> %d \"%s\"",
                  bad[i], rc, err);
    }
}

static void test_parse_fills_the_struct(void)
{
    json_t *o = json_pack("{s:s, s:f, s:s}", "kind", "grpo", "lr", 5e-5, "chunks", "uniform:4");
    const ExperimentKind *k = experiment_kind_find("grpo");
    GrpoRunConfig c;
    char err[256];
    CHECK(k && k->config_size == sizeof c);
    CHECK(k && experiment_config_parse(k, o, &c, err, sizeof err) == 0);
    CHECK(c.lr == 5e-5 && strcmp(c.chunks, "uniform:4") == 0 && c.steps == 17);
    json_decref(o);
}

/* Each table: unique names (the parser takes the first of two), none called "kind", a doc each. */
static void test_tables_are_sound(void)
{
    CHECK(experiment_kind_count == 5);
    CHECK(experiment_kind_find("nope") == NULL && experiment_kind_find(NULL) == NULL);
    for (int i = 0; i < experiment_kind_count; i++) {
        const ExperimentKind *k = &experiment_kinds[i];
        CHECK(experiment_kind_find(k->name) == k);
        CHECK(k->description && k->description[0]);
        for (int a = 0; a < k->field_count; a++) {
            const ConfigField *f = &k->fields[a];
            CHECK_MSG(f->doc && f->doc[0] && strcmp(f->name, "kind") != 0, "%s.%s", k->name,
                      f->name);
            CHECK_MSG(f->offset < k->config_size, "%s.%s", k->name, f->name);
            for (int b = 0; b < a; b++)
                CHECK_MSG(strcmp(f->name, k->fields[b].name) != 0, "%s.%s twice", k->name, f->name);
        }
    }
}

static void test_schema_lists_every_kind_and_field(void)
{
    char *text = experiment_schema_json();
    CHECK(text && text[strlen(text) - 1] == '\n');
    json_error_t jerr;
    json_t *s = text ? json_loads(text, 0, &jerr) : NULL;
    CHECK(s != NULL);
    const json_t *branches = json_object_get(s, "oneOf");
    CHECK(json_array_size(branches) == (size_t)experiment_kind_count);
    for (int i = 0; i < experiment_kind_count && s; i++) {
        const ExperimentKind *k = &experiment_kinds[i];
        const json_t *b = json_array_get(branches, (size_t)i);
        const json_t *props = json_object_get(b, "properties");
        CHECK(strcmp(json_string_value(json_object_get(b, "title")), k->name) == 0);
        CHECK(json_is_false(json_object_get(b, "additionalProperties")));
        CHECK(json_object_size(props) == (size_t)k->field_count + 1);
        for (int f = 0; f < k->field_count; f++) {
            const json_t *p = json_object_get(props, k->fields[f].name);
            CHECK_MSG(p && json_object_get(p, "default") && json_object_get(p, "description"),
                      "%s.%s", k->name, k->fields[f].name);
            /* choices: a string's enum, a weights object's names, a weights list's items' names */
            const json_t *names = json_object_get(p, "enum");
            if (k->fields[f].type == CONFIG_WEIGHTS_LIST) p = json_object_get(p, "items");
            if (k->fields[f].type >= CONFIG_WEIGHTS)
                names = json_object_get(json_object_get(p, "propertyNames"), "enum");
            CHECK_MSG(!k->fields[f].choices || json_is_array(names), "%s.%s", k->name,
                      k->fields[f].name);
        }
    }
    json_decref(s);
    free(text);
}

int main(void)
{
    TEST_RUN(test_valid_config_of_every_kind);
    TEST_RUN(test_kind_errors_list_the_kinds);
    TEST_RUN(test_field_errors_name_the_field);
    TEST_RUN(test_checks_across_fields);
    TEST_RUN(test_chunk_spec);
    TEST_RUN(test_parse_fills_the_struct);
    TEST_RUN(test_tables_are_sound);
    TEST_RUN(test_schema_lists_every_kind_and_field);
    return test_summary("experiment");
}
