/*
 * api_admin.c: health, the OpenAPI document, the experiment config schema, the Prometheus
 * counters, and bearer tokens (created with a role, stored only as their sha256, shown once).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "experiment.h"
#include "handlers.h"

int h_health(Server *srv, Request *rq)
{
    return reply_json(rq, 200,
                      json_pack("{s:s, s:s, s:I}", "status", "ok", "version", SERVER_VERSION,
                                "uptime_s", (json_int_t)((now_ms() - srv->started_ms) / 1000)));
}

int h_openapi(Server *srv, Request *rq)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/openapi.json", srv->schema_dir);
    return reply_file(rq, path, "application/json", NULL);
}

int h_experiment_schema(Server *srv, Request *rq)
{
    char *text = experiment_schema_json();
    if (!text) return reply_error(rq, 500, "internal", NULL, "out of memory");
    int ret = reply_text(rq, 200, "application/schema+json", text);
    free(text);
    return ret;
}

int h_metrics(Server *srv, Request *rq)
{
    char *text = prom_render(srv);
    if (!text) return reply_error(rq, 500, "internal", NULL, "rendering the counters failed");
    int ret = reply_text(rq, 200, "text/plain; version=0.0.4; charset=utf-8", text);
    free(text);
    return ret;
}

int token_new(Store *store, const char *name, const char *role, char secret[80], int64_t *id,
              char *err, size_t errlen)
{
    uint8_t raw[32], digest[32];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        snprintf(err, errlen, "no randomness for a token");
        return -1;
    }
    char hex[65];
    sha256_hex(raw, hex); /* 32 random bytes as 64 hex digits */
    snprintf(secret, 80, "cgp_%s", hex);
    sha256(secret, strlen(secret), digest);
    sha256_hex(digest, hex);
    return store_token_create(store, name, role, hex, id, err, errlen) == STORE_OK ? 0 : -1;
}

int h_token_create(Server *srv, Request *rq)
{
    json_t *body = rq_json(srv, rq);
    if (!body) return REPLIED;
    const char *name = json_string_value(json_object_get(body, "name"));
    const char *role = json_string_value(json_object_get(body, "role"));
    int ret;
    if (!name || !*name || strlen(name) > 200) {
        ret = reply_error(rq, 400, "bad_request", "name", "name: expected 1 to 200 characters");
    } else if (!role || !role_caps(role)) {
        ret = reply_error(rq, 400, "bad_request", "role",
                          "role: expected read, write, worker or admin");
    } else {
        char secret[80], err[512];
        int64_t id;
        if (token_new(srv->store, name, role, secret, &id, err, sizeof err))
            ret = reply_error(rq, 500, "internal", NULL, "%s", err);
        else
            ret = reply_json(rq, 201,
                             json_pack("{s:I, s:s, s:s, s:s}", "id", (json_int_t)id, "name", name,
                                       "role", role, "token", secret));
    }
    json_decref(body);
    return ret;
}

int h_token_list(Server *srv, Request *rq)
{
    json_t *t = store_tokens(srv->store);
    if (!t) return reply_error(rq, 500, "internal", NULL, "listing tokens failed");
    return reply_json(rq, 200, t);
}

int h_token_delete(Server *srv, Request *rq)
{
    char *end;
    long long id = strtoll(rq->params[0], &end, 10);
    if (*end || id <= 0)
        return reply_error(rq, 404, "not_found", NULL, "no token %s", rq->params[0]);
    char err[512];
    StoreRc rc = store_token_revoke(srv->store, id, err, sizeof err);
    if (rc != STORE_OK) return reply_store_error(rq, rc, err);
    return reply_empty(rq, 204);
}
