/*
 * api_experiments.c: experiments (create, list, get, cancel, retry, clone, delete, diff) and
 * what they produced (metrics history, logs, artifacts). Configs are validated by the same
 * tables as the worker's (common/experiment.c) and stored as the effective config, every default
 * filled in, so that a diff or a clone sees exactly what runs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "experiment.h"
#include "handlers.h"

/* The effective config of obj: a new reference, or NULL with a message naming the field. */
static json_t *effective_config(const json_t *obj, const char **kind, char *err, size_t errlen)
{
    const ExperimentKind *k = experiment_kind_of(obj, err, errlen);
    if (!k) return NULL;
    void *cfg = calloc(1, k->config_size);
    if (!cfg) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    json_t *out = NULL;
    if (experiment_config_parse(k, obj, cfg, err, errlen) == 0)
        out = config_to_json(k->name, k->fields, k->field_count, cfg);
    free(cfg);
    *kind = k->name;
    return out;
}

/* 400 naming a field of the body: returns -1 for the caller to pass on. */
static int bad_field(Request *rq, const char *field, const char *what)
{
    reply_error(rq, 400, "bad_request", field, "%s: %s", field, what);
    return -1;
}

/* Checks body's keys against allowed and reads the optional "name", "priority" and
 * "max_attempts" of a create or clone body into e. 0, or -1 after replying. */
static int read_options(Server *srv, Request *rq, const json_t *body, const char *const *allowed,
                        NewExperiment *e)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)body, key, v)
    {
        if (!in_list(key, allowed)) return bad_field(rq, key, "unknown field");
    }
    e->max_attempts = srv->limits.max_attempts;
    if ((v = json_object_get(body, "name")) && !json_is_null(v)) {
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 200)
            return bad_field(rq, "name", "expected a string of 1 to 200 characters");
        e->name = json_string_value(v);
    }
    if ((v = json_object_get(body, "priority"))) {
        if (!json_is_integer(v) || llabs(json_integer_value(v)) > 1000000)
            return bad_field(rq, "priority", "expected an integer in [-1000000, 1000000]");
        e->priority = (int)json_integer_value(v);
    }
    if ((v = json_object_get(body, "max_attempts"))) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 100)
            return bad_field(rq, "max_attempts", "expected an integer in [1, 100]");
        e->max_attempts = (int)json_integer_value(v);
    }
    return 0;
}

/* Validates config, stores the experiment and answers 201 (200 for a known idempotency key). */
static int create_from(Server *srv, Request *rq, const json_t *config, NewExperiment *e)
{
    char err[1024], field[128];
    if (!json_is_object(config))
        return reply_error(rq, 400, "invalid_config", "config", "config: expected an object");
    json_t *eff = effective_config(config, &e->kind, err, sizeof err);
    if (!eff)
        return reply_error(rq, 400, "invalid_config", error_field(err, field, sizeof field), "%s",
                           err);
    e->config = eff;
    int64_t id;
    int existed = 0;
    StoreRc rc = store_experiment_create(srv->store, e, &id, &existed, err, sizeof err);
    json_decref(eff);
    if (rc != STORE_OK) return reply_store_error(rq, rc, err);
    json_t *x = store_experiment_get(srv->store, id);
    if (!x)
        return reply_error(rq, 500, "internal", NULL, "experiment %lld vanished", (long long)id);
    if (existed) return reply_json(rq, 200, x);
    server_log(srv, 2, "experiment %lld queued (%s)", (long long)id, e->kind);
    char location[64];
    snprintf(location, sizeof location, "/api/v1/experiments/%lld", (long long)id);
    return reply_created(rq, x, location);
}

int h_experiment_create(Server *srv, Request *rq)
{
    static const char *const allowed[] = {"config", "name", "priority", "max_attempts", NULL};
    json_t *body = rq_json(srv, rq);
    if (!body) return REPLIED;
    NewExperiment e = {.idempotency_key = rq_header(rq, "Idempotency-Key")};
    int ret = REPLIED;
    if (e.idempotency_key && strlen(e.idempotency_key) > 200)
        bad_field(rq, "Idempotency-Key", "at most 200 characters");
    else if (read_options(srv, rq, body, allowed, &e) == 0)
        ret = create_from(srv, rq, json_object_get(body, "config"), &e);
    json_decref(body);
    return ret;
}

int h_experiment_clone(Server *srv, Request *rq)
{
    static const char *const allowed[] = {"changes", "name", "priority", "max_attempts", NULL};
    int64_t id = rq_id(rq, 0);
    if (!id) return REPLIED;
    json_t *body = rq_json(srv, rq);
    if (!body) return REPLIED;
    json_t *orig = store_experiment_get(srv->store, id),
           *changes = json_object_get(body, "changes");
    NewExperiment e = {.parent_id = id};
    int ret = REPLIED;
    if (!orig) {
        ret = reply_error(rq, 404, "not_found", NULL, "no experiment %lld", (long long)id);
    } else if (changes && !json_is_object(changes)) {
        bad_field(rq, "changes", "expected an object of config fields");
    } else if (read_options(srv, rq, body, allowed, &e) == 0) {
        json_t *config = json_deep_copy(json_object_get(orig, "config"));
        /* a change to null removes the field, so the new config takes its default (JSON
         * merge patch, RFC 7396, at the top level) */
        const char *key;
        json_t *v;
        json_object_foreach(changes, key, v)
        {
            if (json_is_null(v)) json_object_del(config, key);
            else json_object_set(config, key, v);
        }
        if (!json_object_get(body, "priority"))
            e.priority = (int)json_integer_value(json_object_get(orig, "priority"));
        ret = create_from(srv, rq, config, &e);
        json_decref(config);
    }
    json_decref(orig);
    json_decref(body);
    return ret;
}

int h_experiment_list(Server *srv, Request *rq)
{
    static const char *const statuses[] = {"queued", "running",  "succeeded",
                                           "failed", "canceled", NULL};
    const char *status = rq_query(rq, "status"), *kind = rq_query(rq, "kind");
    if (status && *status) {
        if (!in_list(status, statuses))
            return reply_error(rq, 400, "bad_request", "status",
                               "status: \"%s\" is not one of queued, running, succeeded, failed, "
                               "canceled",
                               status);
    } else {
        status = NULL;
    }
    if (kind && *kind && !experiment_kind_find(kind))
        return reply_error(rq, 400, "bad_request", "kind", "kind: \"%s\" is not an experiment kind",
                           kind);
    if (kind && !*kind) kind = NULL;
    long long limit, cursor;
    if (rq_query_int(rq, "limit", 50, 1, 500, &limit) ||
        rq_query_int(rq, "cursor", 0, 0, INT64_MAX, &cursor))
        return REPLIED;
    int64_t next = 0;
    json_t *items = store_experiment_list(srv->store, status, kind, cursor, (int)limit, &next);
    if (!items) return reply_error(rq, 500, "internal", NULL, "listing failed");
    char nc[32];
    snprintf(nc, sizeof nc, "%lld", (long long)next);
    return reply_json(rq, 200,
                      json_pack("{s:o, s:o}", "items", items, "next_cursor",
                                next ? json_string(nc) : json_null()));
}

int h_experiment_get(Server *srv, Request *rq)
{
    int64_t id = rq_id(rq, 0);
    if (!id) return REPLIED;
    json_t *x = store_experiment_get(srv->store, id);
    if (!x) return reply_error(rq, 404, "not_found", NULL, "no experiment %lld", (long long)id);
    return reply_json(rq, 200, x);
}

/* cancel, retry and delete: a store call, then the experiment as it now is (or 204). */
static int change_state(Server *srv, Request *rq, StoreRc (*fn)(Store *, int64_t, char *, size_t),
                        int empty_reply)
{
    int64_t id = rq_id(rq, 0);
    if (!id) return REPLIED;
    char err[512];
    StoreRc rc = fn(srv->store, id, err, sizeof err);
    if (rc != STORE_OK) return reply_store_error(rq, rc, err);
    if (empty_reply) return reply_empty(rq, 204);
    return reply_json(rq, 200, store_experiment_get(srv->store, id));
}

int h_experiment_cancel(Server *srv, Request *rq)
{
    return change_state(srv, rq, store_experiment_cancel, 0);
}

int h_experiment_retry(Server *srv, Request *rq)
{
    return change_state(srv, rq, store_experiment_retry, 0);
}

int h_experiment_delete(Server *srv, Request *rq)
{
    return change_state(srv, rq, store_experiment_delete, 1);
}

int h_experiment_diff(Server *srv, Request *rq)
{
    int64_t a = rq_id(rq, 0);
    if (!a) return REPLIED;
    int64_t b = rq_id(rq, 1);
    if (!b) return REPLIED;
    json_t *xa = store_experiment_get(srv->store, a), *xb = store_experiment_get(srv->store, b);
    int ret;
    if (!xa || !xb) {
        ret =
            reply_error(rq, 404, "not_found", NULL, "no experiment %lld", (long long)(xa ? b : a));
    } else {
        json_t *ca = json_object_get(xa, "config"), *cb = json_object_get(xb, "config");
        json_t *changed = json_object();
        const char *key;
        json_t *v;
        json_object_foreach(ca, key, v)
        {
            json_t *w = json_object_get(cb, key);
            if (!w || !json_equal(v, w))
                json_object_set_new(changed, key, json_pack("[O,O]", v, w ? w : json_null()));
        }
        json_object_foreach(cb, key, v) if (!json_object_get(ca, key))
            json_object_set_new(changed, key, json_pack("[n,O]", v));
        ret = reply_json(rq, 200,
                         json_pack("{s:I, s:I, s:o}", "a", (json_int_t)a, "b", (json_int_t)b,
                                   "changed", changed));
    }
    json_decref(xa);
    json_decref(xb);
    return ret;
}

int h_metrics_history(Server *srv, Request *rq)
{
    int64_t id = rq_id(rq, 0);
    if (!id) return REPLIED;
    long long after, max_points;
    if (rq_query_int(rq, "after", 0, 0, INT64_MAX, &after) ||
        rq_query_int(rq, "max_points", 2000, 2, 100000, &max_points))
        return REPLIED;
    /* keys=a,b,c: split in place in a copy */
    const char *keys_q = rq_query(rq, "keys");
    char *copy = keys_q && *keys_q ? strdup(keys_q) : NULL;
    const char *keys[256];
    int nkeys = 0;
    for (char *save = NULL, *k = copy ? strtok_r(copy, ",", &save) : NULL; k;
         k = strtok_r(NULL, ",", &save)) {
        if (nkeys == 256) {
            free(copy);
            return reply_error(rq, 400, "bad_request", "keys", "keys: at most 256 keys");
        }
        keys[nkeys++] = k;
    }
    json_t *m = store_metrics(srv->store, id, copy ? keys : NULL, nkeys, after, (int)max_points);
    free(copy);
    if (!m) return reply_error(rq, 404, "not_found", NULL, "no experiment %lld", (long long)id);
    return reply_json(rq, 200, m);
}

int h_logs(Server *srv, Request *rq)
{
    int64_t id = rq_id(rq, 0);
    if (!id) return REPLIED;
    long long after, limit;
    if (rq_query_int(rq, "after", 0, 0, INT64_MAX, &after) ||
        rq_query_int(rq, "limit", 500, 1, 10000, &limit))
        return REPLIED;
    json_t *l = store_logs(srv->store, id, after, (int)limit);
    if (!l) return reply_error(rq, 404, "not_found", NULL, "no experiment %lld", (long long)id);
    return reply_json(rq, 200, l);
}

int h_artifact_list(Server *srv, Request *rq)
{
    int64_t id = rq_id(rq, 0);
    if (!id) return REPLIED;
    json_t *l = store_artifacts(srv->store, id);
    if (!l) return reply_error(rq, 404, "not_found", NULL, "no experiment %lld", (long long)id);
    return reply_json(rq, 200, l);
}

int h_artifact_get(Server *srv, Request *rq)
{
    int64_t id = rq_id(rq, 0);
    if (!id) return REPLIED;
    const char *name = rq->params[1];
    json_t *a = store_artifact_get(srv->store, id, name);
    if (!a)
        return reply_error(rq, 404, "not_found", NULL, "experiment %lld has no artifact %s",
                           (long long)id, name);
    char path[8192];
    snprintf(path, sizeof path, "%s/artifacts/%lld/%s", store_data_dir(srv->store), (long long)id,
             name);
    int ret = reply_file(rq, path, json_string_value(json_object_get(a, "content_type")),
                         json_string_value(json_object_get(a, "sha256")));
    json_decref(a);
    return ret;
}
