/*
 * fuzz_config.c: libFuzzer harness for the experiment-config validator (common/experiment.c over
 * common/config.c), the one the control server runs on every submitted config and the worker
 * runs before `run`.
 *
 * Each input is used twice:
 *  - as JSON (json_loadb with JSON_REJECT_DUPLICATES, as the server reads bodies and the worker
 *    reads files; inputs that do not parse are skipped) for experiment_config_validate. A
 *    rejection must explain itself with a message about the config ("config..."). An accepted
 *    config's effective config (config_parse's defaults filled in, printed by config_to_json)
 *    must have every field of its kind's table, must validate again, and must be a fixed point:
 *    parse(to_json(parse(x))) == to_json(parse(x)), in memory and after a round trip through
 *    JSON text (the server stores effective configs as text and a worker reads them back).
 *  - as a chunk spec: byte 0 picks trainable = 1..64, the rest (NUL-terminated) is the spec for
 *    chunk_spec_parse. When it succeeds, sizes are positive and sum to trainable, uniform's K is
 *    1..trainable, auto and dynamic have no count.
 * A violated invariant calls abort(). No globals, no leaks.
 *
 * Build and run (seed corpus in tests/fuzz/corpus/config/; `make fuzz` does this):
 *   clang -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Icommon \
 *       tests/fuzz/fuzz_config.c common/experiment.c common/config.c common/jsonutil.c \
 *       -ljansson -o fuzz_config
 *   ./fuzz_config -dict=tests/fuzz/config.dict -max_total_time=60 NEW_DIR tests/fuzz/corpus/config/
 *   ./fuzz_config -runs=0 tests/fuzz/corpus/config/          # replay only
 */
#include "config.h"
#include "experiment.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SPEC_MAX 4096 /* longer specs are cut: strtol's work is linear, nothing is gained */

static void fuzz_chunk_spec(const uint8_t *data, size_t size)
{
    if (size == 0) return;
    int trainable = data[0] % 64 + 1;
    size_t n = size - 1 < SPEC_MAX ? size - 1 : SPEC_MAX;
    char *spec = malloc(n + 1);
    ChunkSpec *cs = malloc(sizeof *cs); /* 4 KB: on the heap so ASan sees overruns of size[] */
    if (!spec || !cs) abort();
    memcpy(spec, data + 1, n);
    spec[n] = 0;
    char err[256] = "";
    int rc = chunk_spec_parse(spec, trainable, cs, err, sizeof err);
    if (rc == 0) {
        switch (cs->kind) {
        case CHUNK_SPEC_SIZES: {
            long sum = 0;
            if (cs->count < 1 || cs->count > EXPERIMENT_MAX_STEPS) abort();
            for (int i = 0; i < cs->count; i++) {
                if (cs->size[i] < 1) abort();
                sum += cs->size[i];
            }
            if (sum != trainable) abort();
            break;
        }
        case CHUNK_SPEC_UNIFORM:
            if (cs->count < 1 || cs->count > trainable) abort();
            break;
        case CHUNK_SPEC_AUTO:
        case CHUNK_SPEC_DYNAMIC:
            if (cs->count != 0) abort();
            break;
        default: abort();
        }
    } else if (rc != -1 || strncmp(err, "config.chunks", 13) != 0) {
        abort();
    }
    free(cs);
    free(spec);
}

/* experiment_config_parse of obj into a new struct of k's size, and its effective config; NULL
 * when obj does not parse. */
static json_t *effective(const ExperimentKind *k, const json_t *obj)
{
    char err[256];
    void *cfg = calloc(1, k->config_size);
    if (!cfg) abort();
    json_t *out = NULL;
    if (experiment_config_parse(k, obj, cfg, err, sizeof err) == 0)
        out = config_to_json(k->name, k->fields, k->field_count, cfg);
    free(cfg);
    return out;
}

static void fuzz_config(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *obj = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj) return;
    char err[256] = "";
    int rc = experiment_config_validate(obj, err, sizeof err);
    if (rc != 0) {
        /* a rejection names the config (and, for a field, "config.NAME") */
        if (rc != -1 || strncmp(err, "config", 6) != 0) abort();
        json_decref(obj);
        return;
    }
    const ExperimentKind *k = experiment_kind_of(obj, err, sizeof err);
    if (!k) abort(); /* validate accepted a config without a known kind */

    json_t *eff = effective(k, obj);
    if (!eff) abort(); /* validate and parse disagree */
    if (json_object_size(eff) != (size_t)k->field_count + 1) abort(); /* "kind" + every field */
    if (experiment_config_validate(eff, err, sizeof err) != 0) abort();
    json_t *again = effective(k, eff);
    if (!again || !json_equal(again, eff)) abort();

    /* the same through text, as the server stores it and a worker reads it back */
    char *text = json_dumps(eff, JSON_COMPACT);
    if (!text) abort();
    json_t *back = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!back || !json_equal(back, eff)) abort();
    json_t *back_eff = effective(k, back);
    if (!back_eff || !json_equal(back_eff, eff)) abort();

    json_decref(back_eff);
    json_decref(back);
    free(text);
    json_decref(again);
    json_decref(eff);
    json_decref(obj);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_chunk_spec(data, size);
    fuzz_config(data, size);
    return 0;
}
