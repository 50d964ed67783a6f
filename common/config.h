/*
 * config.h: experiment configs as tables of fields (name, type, bounds, default, meaning), in the
 * manner of redis's config table: one generic parser and printer over jansson, and one table per
 * experiment kind (common/experiment.c).
 *
 * Parsing is strict: every field has a default; an unknown field, a value of the wrong type, out
 * of range or not among the choices is an error whose message names the field
 * ("config.lr: expected a number in [0, 1], got \"fast\""). The effective config (defaults filled
 * in) can be printed back as JSON, so every run records exactly what it ran with.
 */
#ifndef CHUNKGRPO_CONFIG_H
#define CHUNKGRPO_CONFIG_H

#include <jansson.h>
#include <stddef.h>

typedef enum {
    CONFIG_INT,     /* int field; lo..hi inclusive */
    CONFIG_INT64,   /* int64_t field (seeds, step counts); lo..hi inclusive */
    CONFIG_FLOAT,   /* double field; lo..hi inclusive */
    CONFIG_BOOL,    /* int field, 0 or 1 */
    CONFIG_STRING,  /* char[CONFIG_STRING_MAX] field; choices, when set, lists the allowed values */
    CONFIG_WEIGHTS, /* ConfigWeights: an object {"name": weight, ...}, names from choices, weights
                     * in lo..hi, at least one above 0 */
    CONFIG_WEIGHTS_LIST, /* ConfigWeightsList: an array of such objects (may be empty) */
} ConfigType;

#define CONFIG_STRING_MAX 256
#define CONFIG_WEIGHTS_MAX 16 /* names a weights field may choose from */
#define CONFIG_LIST_MAX 64    /* entries of a weights list */

/* w[i] is the weight of the field's choices[i]; 0 where the object does not name it. */
typedef struct {
    double w[CONFIG_WEIGHTS_MAX];
} ConfigWeights;

typedef struct {
    int count;
    ConfigWeights item[CONFIG_LIST_MAX];
} ConfigWeightsList;

typedef struct {
    const char *name;
    ConfigType type;
    size_t offset;              /* offsetof the field in the config struct */
    double lo, hi;              /* bounds for numbers */
    const char *def;            /* default, written as JSON text ("3e-4", "true", "\"small\"") */
    const char *const *choices; /* NULL-terminated: a string's allowed values (NULL = any), a
                                 * weights field's names (at most CONFIG_WEIGHTS_MAX) */
    const char *doc;            /* what it means, and why the default */
} ConfigField;

/* Fills *out (a struct laid out as the table says) with every default, then with the values of
 * obj. `kind` is checked against obj's "kind" field, which is allowed and required.
 * Returns 0, or -1 with a message naming the field in err. */
int config_parse(const json_t *obj, const char *kind, const ConfigField *fields, int count,
                 void *out, char *err, size_t errlen);

/* The effective config as a new JSON object ("kind" first, then the table's order). The caller
 * owns the reference. */
json_t *config_to_json(const char *kind, const ConfigField *fields, int count, const void *cfg);

/* Loads a JSON file (duplicate keys rejected) into a new reference; NULL with an error naming
 * the file, line and column. */
json_t *config_load_file(const char *path, char *err, size_t errlen);

#endif
