/*
 * config.c: the table-driven experiment-config parser and printer. See config.h.
 */
#include "config.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "jsonutil.h"

static void set_value(const ConfigField *f, void *cfg, const json_t *v)
{
    char *p = (char *)cfg + f->offset;
    switch (f->type) {
    case CONFIG_INT: *(int *)p = (int)json_integer_value(v); break;
    case CONFIG_INT64: *(int64_t *)p = (int64_t)json_integer_value(v); break;
    case CONFIG_FLOAT: *(double *)p = json_number_value(v); break;
    case CONFIG_BOOL: *(int *)p = json_is_true(v); break;
    case CONFIG_STRING: snprintf(p, CONFIG_STRING_MAX, "%s", json_string_value(v)); break;
    }
}

/* Checks v against the field; on error writes "config.NAME: ..." into err. */
static int check_value(const ConfigField *f, const json_t *v, char *err, size_t errlen)
{
    char got[64];
    if (json_is_string(v)) snprintf(got, sizeof got, "\"%.40s\"", json_string_value(v));
    else snprintf(got, sizeof got, "%s", json_type_name(v));
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
        if (f->choices) {
            for (const char *const *c = f->choices; *c; c++)
                if (strcmp(*c, json_string_value(v)) == 0) return 0;
            size_t used = (size_t)snprintf(err, errlen, "config.%s: %s is not one of", f->name, got);
            for (const char *const *c = f->choices; *c && used < errlen; c++)
                used += (size_t)snprintf(err + used, errlen - used, " \"%s\"", *c);
            return -1;
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
