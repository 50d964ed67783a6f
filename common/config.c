/*
 * config.c: the table-driven experiment-config parser and printer. See config.h.
 */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "jsonutil.h"

static int choice_index(const ConfigField *f, const char *name)
{
    for (int i = 0; f->choices && f->choices[i]; i++)
        if (strcmp(f->choices[i], name) == 0) return i;
    return -1;
}

/* v is an object that check_weights accepted. */
static void set_weights(const ConfigField *f, ConfigWeights *out, const json_t *v)
{
    memset(out, 0, sizeof *out);
    const char *key;
    const json_t *w;
    json_object_foreach((json_t *)v, key, w) out->w[choice_index(f, key)] = json_number_value(w);
}

static void set_value(const ConfigField *f, void *cfg, const json_t *v)
{
    char *p = (char *)cfg + f->offset;
    switch (f->type) {
    case CONFIG_INT: *(int *)p = (int)json_integer_value(v); break;
    case CONFIG_INT64: *(int64_t *)p = (int64_t)json_integer_value(v); break;
    case CONFIG_FLOAT: *(double *)p = json_number_value(v); break;
    case CONFIG_BOOL: *(int *)p = json_is_true(v); break;
    case CONFIG_STRING: snprintf(p, CONFIG_STRING_MAX, "%s", json_string_value(v)); break;
    case CONFIG_WEIGHTS: set_weights(f, (ConfigWeights *)p, v); break;
    case CONFIG_WEIGHTS_LIST: {
        ConfigWeightsList *list = (ConfigWeightsList *)p;
        list->count = (int)json_array_size(v);
        for (int i = 0; i < list->count; i++) set_weights(f, &list->item[i], json_array_get(v, i));
        break;
    }
    }
}

static void describe(const json_t *v, char *got, size_t len)
{
    if (json_is_string(v))
        snprintf(got, len, "\"%.40s\"", json_string_value(v));
    else
        snprintf(got, len, "%s", json_type_name(v));
}

/* "config.PATH: NAME is not one of "a" "b" ..." into err. */
static void not_a_choice(const ConfigField *f, const char *path, const char *name, char *err,
                         size_t errlen)
{
    size_t used = (size_t)snprintf(err, errlen, "config.%s: %s is not one of", path, name);
    for (const char *const *c = f->choices; c && *c && used < errlen; c++)
        used += (size_t)snprintf(err + used, errlen - used, " \"%s\"", *c);
}

/* Checks one weights object v at config.PATH (the field's name, or NAME[i] in a list). */
static int check_weights(const ConfigField *f, const char *path, const json_t *v, char *err,
                         size_t errlen)
{
    char got[64];
    describe(v, got, sizeof got);
    if (!json_is_object(v)) {
        snprintf(err, errlen, "config.%s: expected an object of weights like {\"%s\": 1}, got %s",
                 path, f->choices ? f->choices[0] : "name", got);
        return -1;
    }
    const char *key;
    const json_t *w;
    int positive = 0;
    json_object_foreach((json_t *)v, key, w)
    {
        char where[160], quoted[80];
        snprintf(where, sizeof where, "%s.%.60s", path, key);
        snprintf(quoted, sizeof quoted, "\"%.60s\"", key);
        if (choice_index(f, key) < 0) {
            not_a_choice(f, path, quoted, err, errlen);
            return -1;
        }
        describe(w, got, sizeof got);
        if (!json_is_number(w)) {
            snprintf(err, errlen, "config.%s: expected a number, got %s", where, got);
            return -1;
        }
        double x = json_number_value(w);
        if (!(x >= f->lo && x <= f->hi)) {
            snprintf(err, errlen, "config.%s: %g is out of range [%g, %g]", where, x, f->lo, f->hi);
            return -1;
        }
        positive |= x > 0;
    }
    if (!positive) {
        snprintf(err, errlen, "config.%s: give at least one of its names a weight above 0", path);
        return -1;
    }
    return 0;
}

/* Checks v against the field; on error writes "config.NAME: ..." into err. */
static int check_value(const ConfigField *f, const json_t *v, char *err, size_t errlen)
{
    char got[64];
    describe(v, got, sizeof got);
    switch (f->type) {
    case CONFIG_INT:
    case CONFIG_INT64:
        if (!json_is_integer(v)) {
            snprintf(err, errlen, "config.%s: expected an integer, got %s", f->name, got);
            return -1;
        }
        if ((double)json_integer_value(v) < f->lo || (double)json_integer_value(v) > f->hi) {
            snprintf(err, errlen, "config.%s: %lld is out of range [%.0f, %.0f]", f->name,
                     (long long)json_integer_value(v), f->lo, f->hi);
            return -1;
        }
        return 0;
    case CONFIG_FLOAT:
        if (!json_is_number(v)) {
            snprintf(err, errlen, "config.%s: expected a number, got %s", f->name, got);
            return -1;
        }
        if (!(json_number_value(v) >= f->lo && json_number_value(v) <= f->hi)) {
            snprintf(err, errlen, "config.%s: %g is out of range [%g, %g]", f->name,
                     json_number_value(v), f->lo, f->hi);
            return -1;
        }
        return 0;
    case CONFIG_BOOL:
        if (!json_is_boolean(v)) {
            snprintf(err, errlen, "config.%s: expected true or false, got %s", f->name, got);
            return -1;
        }
        return 0;
    case CONFIG_STRING:
        if (!json_is_string(v)) {
            snprintf(err, errlen, "config.%s: expected a string, got %s", f->name, got);
            return -1;
        }
        if (strlen(json_string_value(v)) >= CONFIG_STRING_MAX) {
            snprintf(err, errlen, "config.%s: longer than %d characters", f->name,
                     CONFIG_STRING_MAX - 1);
            return -1;
        }
        if (f->choices && choice_index(f, json_string_value(v)) < 0) {
            not_a_choice(f, f->name, got, err, errlen);
            return -1;
        }
        return 0;
    case CONFIG_WEIGHTS: return check_weights(f, f->name, v, err, errlen);
    case CONFIG_WEIGHTS_LIST:
        if (!json_is_array(v)) {
            snprintf(err, errlen, "config.%s: expected a list of weight objects, got %s", f->name,
                     got);
            return -1;
        }
        if (json_array_size(v) > CONFIG_LIST_MAX) {
            snprintf(err, errlen, "config.%s: %zu entries; at most %d", f->name, json_array_size(v),
                     CONFIG_LIST_MAX);
            return -1;
        }
        for (size_t i = 0; i < json_array_size(v); i++) {
            char path[96];
            snprintf(path, sizeof path, "%s[%zu]", f->name, i);
            if (check_weights(f, path, json_array_get(v, i), err, errlen)) return -1;
        }
        return 0;
    }
    return -1;
}

int config_parse(const json_t *obj, const char *kind, const ConfigField *fields, int count,
                 void *out, char *err, size_t errlen)
{
    if (!json_is_object(obj)) {
        snprintf(err, errlen, "config: expected a JSON object, got %s", json_type_name(obj));
        return -1;
    }
    for (int i = 0; i < count; i++) {
        json_error_t jerr;
        json_t *def = json_loads(fields[i].def, JSON_DECODE_ANY, &jerr);
        /* a bad default is a bug in the table: report it like any other field error */
        int rc = def ? check_value(&fields[i], def, err, errlen) : -1;
        if (!def) snprintf(err, errlen, "config.%s: bad default %s", fields[i].name, fields[i].def);
        if (rc == 0) set_value(&fields[i], out, def);
        json_decref(def);
        if (rc) return -1;
    }
    const json_t *k = json_object_get(obj, "kind");
    if (!k || !json_is_string(k) || strcmp(json_string_value(k), kind) != 0) {
        snprintf(err, errlen, "config.kind: expected \"%s\"", kind);
        return -1;
    }
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        if (strcmp(key, "kind") == 0) continue;
        const ConfigField *f = NULL;
        for (int i = 0; i < count && !f; i++)
            if (strcmp(fields[i].name, key) == 0) f = &fields[i];
        if (!f) {
            snprintf(err, errlen, "config.%s: unknown field for kind \"%s\"", key, kind);
            return -1;
        }
        if (check_value(f, v, err, errlen)) return -1;
        set_value(f, out, v);
    }
    return 0;
}

static json_t *weights_json(const ConfigField *f, const ConfigWeights *w)
{
    json_t *o = json_object();
    for (int i = 0; f->choices && f->choices[i]; i++)
        if (w->w[i] != 0) json_object_set_new(o, f->choices[i], json_real(w->w[i]));
    return o;
}

json_t *config_to_json(const char *kind, const ConfigField *fields, int count, const void *cfg)
{
    json_t *o = json_object();
    json_object_set_new(o, "kind", json_string(kind));
    for (int i = 0; i < count; i++) {
        const char *p = (const char *)cfg + fields[i].offset;
        json_t *v = NULL;
        switch (fields[i].type) {
        case CONFIG_INT: v = json_integer(*(const int *)p); break;
        case CONFIG_INT64: v = json_integer(*(const int64_t *)p); break;
        case CONFIG_FLOAT: v = json_real(*(const double *)p); break;
        case CONFIG_BOOL: v = json_boolean(*(const int *)p); break;
        case CONFIG_STRING: v = json_string(p); break;
        case CONFIG_WEIGHTS: v = weights_json(&fields[i], (const ConfigWeights *)p); break;
        case CONFIG_WEIGHTS_LIST: {
            const ConfigWeightsList *list = (const ConfigWeightsList *)p;
            v = json_array();
            for (int k = 0; k < list->count; k++)
                json_array_append_new(v, weights_json(&fields[i], &list->item[k]));
            break;
        }
        }
        json_object_set_new(o, fields[i].name, v);
    }
    return o;
}

json_t *config_load_file(const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) snprintf(err, errlen, "%s:%d:%d: %s", path, jerr.line, jerr.column, jerr.text);
    return root;
}
