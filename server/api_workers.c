/*
 * api_workers.c: the worker protocol (architecture.md): register, lease with a long poll,
 * heartbeat, events in batches with sequence numbers, artifact uploads, complete; and the
 * workers list. A worker token acts only for the workers it registered.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "handlers.h"

int check_worker(Server *srv, Request *rq, const char *worker_id)
{
    if (!worker_id || !*worker_id) {
        reply_error(rq, 400, "bad_request", "worker_id", "worker_id: required");
        return -1;
    }
    if ((rq->caps & CAP_ADMIN) || store_worker_owned(srv->store, worker_id, rq->token_id)) return 0;
    reply_error(rq, 403, "forbidden", "worker_id",
                "worker_id: %s is not a worker registered with this token", worker_id);
    return -1;
}

int h_worker_register(Server *srv, Request *rq)
{
    static const struct {
        const char *name;
        json_type type;
    } fields[] = {{"name", JSON_STRING},       {"backend", JSON_STRING},  {"device", JSON_STRING},
                  {"memory_mb", JSON_INTEGER}, {"threads", JSON_INTEGER}, {"version", JSON_STRING}};
    json_t *body = rq_json(srv, rq);
    if (!body) return REPLIED;
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        size_t i = 0;
        while (i < sizeof fields / sizeof fields[0] && strcmp(fields[i].name, key) != 0) i++;
        if (i == sizeof fields / sizeof fields[0] || json_typeof(v) != fields[i].type) {
            int ret = reply_error(rq, 400, "bad_request", key,
                                  i == sizeof fields / sizeof fields[0] ? "%s: unknown field"
                                                                        : "%s: wrong type",
                                  key);
            json_decref(body); /* key lives in body */
            return ret;
        }
    }
    char id[32], err[512];
    StoreRc rc = store_worker_register(srv->store, rq->token_id, body, id, err, sizeof err);
    json_decref(body);
    if (rc != STORE_OK) return reply_store_error(rq, rc, err);
    server_log(srv, 2, "worker %s registered", id);
    int lease = srv->limits.lease_seconds;
    return reply_json(rq, 201,
                      json_pack("{s:s, s:i, s:i}", "worker_id", id, "lease_seconds", lease,
                                "heartbeat_seconds", lease / 3 > 0 ? lease / 3 : 1));
}

int h_worker_list(Server *srv, Request *rq)
{
    json_t *w = store_workers(srv->store);
    if (!w) return reply_error(rq, 500, "internal", NULL, "listing workers failed");
    return reply_json(rq, 200, w);
}

int h_lease(Server *srv, Request *rq)
{
    const char *wid = rq->params[0];
    if (check_worker(srv, rq, wid)) return REPLIED;
    long long wait_s;
    if (rq_query_int(rq, "wait", 20, 0, 60, &wait_s)) return REPLIED;
    int64_t deadline = now_ms() + wait_s * 1000;
    int fd = rq_fd(rq);
    for (;;) {
        int draining;
        uint64_t seen = hub_generation(&srv->hub, NULL, &draining);
        if (draining) return reply_empty(rq, 204);
        /* a worker that went away (killed mid-poll) must not be handed an experiment */
        if (peer_left(fd)) return reply_drop(rq);
        json_t *lease = NULL;
        char err[512];
        StoreRc rc = store_lease(srv->store, wid, (int64_t)srv->limits.lease_seconds * 1000, &lease,
                                 err, sizeof err);
        if (rc == STORE_OK) {
            server_log(srv, 2, "worker %s leased experiment %lld", wid,
                       (long long)json_integer_value(
                           json_object_get(json_object_get(lease, "experiment"), "id")));
            return reply_json(rq, 200, lease);
        }
        if (rc != STORE_EMPTY) return reply_store_error(rq, rc, err);
        int64_t left = deadline - now_ms();
        if (left <= 0) return reply_empty(rq, 204);
        if (hub_wait(&srv->hub, &seen, left < 1000 ? (int)left : 1000)) return reply_empty(rq, 204);
    }
}

int h_heartbeat(Server *srv, Request *rq)
{
    const char *wid = rq->params[0];
    if (check_worker(srv, rq, wid)) return REPLIED;
    json_t *body = rq_json(srv, rq);
    if (!body) return REPLIED;
    json_t *idv = json_object_get(body, "experiment_id"),
           *progress = json_object_get(body, "progress");
    int ret;
    if (!json_is_integer(idv) || json_integer_value(idv) <= 0) {
        ret = reply_error(rq, 400, "bad_request", "experiment_id",
                          "experiment_id: expected a positive integer");
    } else if (progress && !json_is_object(progress)) {
        ret = reply_error(rq, 400, "bad_request", "progress", "progress: expected an object");
    } else {
        int cancel = 0;
        int64_t expires = 0;
        char err[512];
        StoreRc rc = store_heartbeat(srv->store, wid, json_integer_value(idv),
                                     (int64_t)srv->limits.lease_seconds * 1000, progress, &cancel,
                                     &expires, err, sizeof err);
        if (rc != STORE_OK) {
            ret = reply_store_error(rq, rc, err);
        } else {
            char when[STORE_TIME_LEN];
            format_time(expires, when);
            json_t *x = json_pack("{s:b, s:s}", "cancel", cancel, "lease_expires_at", when);
            ret = reply_json(rq, 200, x);
        }
    }
    json_decref(body);
    return ret;
}

/* The worker_id of a body, checked against the token. NULL after replying. */
static const char *body_worker(Server *srv, Request *rq, json_t *body)
{
    const char *wid = json_string_value(json_object_get(body, "worker_id"));
    return check_worker(srv, rq, wid) ? NULL : wid;
}

int h_events_post(Server *srv, Request *rq)
{
    int64_t id = rq_id(rq, 0);
    if (!id) return REPLIED;
    json_t *body = rq_json(srv, rq);
    if (!body) return REPLIED;
    const char *wid = body_worker(srv, rq, body);
    json_t *events = json_object_get(body, "events");
    int ret = REPLIED;
    if (!wid) {
        /* replied */
    } else if (!json_is_array(events)) {
        ret = reply_error(rq, 400, "bad_request", "events", "events: expected an array");
    } else {
        int accepted = 0, dups = 0;
        int64_t next_seq = 0;
        char err[512];
        StoreRc rc = store_add_events(srv->store, id, wid, events, &accepted, &dups, &next_seq, err,
                                      sizeof err);
        if (rc == STORE_INVALID)
            ret = reply_error(rq, 400, "bad_request", NULL, "%s", err);
        else if (rc != STORE_OK)
            ret = reply_store_error(rq, rc, err);
        else
            ret = reply_json(rq, 200,
                             json_pack("{s:i, s:i, s:I}", "accepted", accepted, "duplicates", dups,
                                       "next_seq", (json_int_t)next_seq));
    }
    json_decref(body);
    return ret;
}

int h_complete(Server *srv, Request *rq)
{
    static const char *const statuses[] = {"succeeded", "failed", "canceled", "requeue", NULL};
    int64_t id = rq_id(rq, 0);
    if (!id) return REPLIED;
    json_t *body = rq_json(srv, rq);
    if (!body) return REPLIED;
    const char *wid = body_worker(srv, rq, body);
    const char *status = json_string_value(json_object_get(body, "status"));
    json_t *errv = json_object_get(body, "error");
    int ret = REPLIED;
    if (!wid) {
        /* replied */
    } else if (!in_list(status, statuses)) {
        ret = reply_error(rq, 400, "bad_request", "status",
                          "status: expected succeeded, failed, canceled or requeue");
    } else if (errv && !json_is_null(errv) && !json_is_string(errv)) {
        ret = reply_error(rq, 400, "bad_request", "error", "error: expected a string");
    } else {
        char err[512];
        StoreRc rc =
            store_complete(srv->store, wid, id, status, json_string_value(errv), err, sizeof err);
        if (rc != STORE_OK) {
            ret = reply_store_error(rq, rc, err);
        } else {
            server_log(srv, 2, "experiment %lld %s (worker %s)", (long long)id, status, wid);
            ret = reply_json(rq, 200, store_experiment_get(srv->store, id));
        }
    }
    json_decref(body);
    return ret;
}

static const char *artifact_type(const char *name, const char *header)
{
    static const char *const types[][2] = {
        {".png", "image/png"},
        {".json", "application/json"},
        {".jsonl", "application/x-ndjson"},
        {".txt", "text/plain; charset=utf-8"},
        {".safetensors", "application/octet-stream"},
    };
    const char *dot = strrchr(name, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i][0]) == 0) return types[i][1];
    if (header && *header && strncmp(header, "application/x-www-form-urlencoded", 33) != 0)
        return header;
    return "application/octet-stream";
}

/* mkdir -p of path's folders (path itself is a file). */
static int make_parents(char *path)
{
    for (char *p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
        *p = 0;
        int rc = mkdir(path, 0755);
        *p = '/';
        if (rc != 0 && errno != EEXIST) return -1;
    }
    return 0;
}

/* After a new checkpoints/latest (the file at latest_path names its folder): forgets the older
 * checkpoint folders beyond `keep`, then deletes their files, so that a long run does not fill
 * the disk with checkpoints nobody resumes from. Best effort: a failure leaves files behind. */
static void prune_checkpoints(Server *srv, int64_t id, const char *latest_path, int keep)
{
    char latest[256] = "";
    FILE *f = fopen(latest_path, "r");
    if (f) {
        if (!fgets(latest, sizeof latest, f)) latest[0] = 0;
        fclose(f);
    }
    latest[strcspn(latest, "\r\n")] = 0;
    if (!latest[0] || strchr(latest, '/') || !store_artifact_name_ok(latest)) return;
    json_t *forgotten = store_checkpoints_prune(srv->store, id, latest, keep);
    size_t i;
    json_t *name;
    char path[8192];
    json_array_foreach(forgotten, i, name)
    {
        snprintf(path, sizeof path, "%s/artifacts/%lld/%s", store_data_dir(srv->store),
                 (long long)id, json_string_value(name));
        unlink(path);
        *strrchr(path, '/') = 0;
        rmdir(path); /* once its last file is gone */
    }
    json_decref(forgotten);
}

int h_artifact_put(Server *srv, Request *rq)
{
    int64_t id = rq_id(rq, 0);
    if (!id) return REPLIED;
    const char *name = rq->params[1];
    if (check_worker(srv, rq, rq_query(rq, "worker_id"))) return REPLIED;
    if (!store_artifact_name_ok(name))
        return reply_error(rq, 400, "bad_request", "name",
                           "name: \"%s\" must be a relative path of letters, digits, '.', '_' "
                           "and '-' (at most 200 characters)",
                           name);
    long long iteration;
    if (rq_query_int(rq, "iteration", -1, -1, INT64_MAX, &iteration)) return REPLIED;
    json_t *x = store_experiment_get(srv->store, id);
    if (!x) return reply_error(rq, 404, "not_found", NULL, "no experiment %lld", (long long)id);
    /* the checkpoint folders the server keeps: the config's own count, as the runner keeps (the
     * stored config is the effective one, so every kind that checkpoints has the field) */
    json_t *keep_v = json_object_get(json_object_get(x, "config"), "keep_checkpoints");
    int keep = json_is_integer(keep_v) ? (int)json_integer_value(keep_v) : -1;
    json_decref(x);
    uint8_t digest[32];
    char hex[65], path[8192];
    sha256_final(&rq->upload_sha, digest);
    sha256_hex(digest, hex);
    snprintf(path, sizeof path, "%s/artifacts/%lld/%s", store_data_dir(srv->store), (long long)id,
             name);
    /* durable before it is recorded: fsync the file, then rename it into place */
    if (fsync(rq->upload_fd) != 0 || make_parents(path) != 0 || rename(rq->upload_tmp, path) != 0)
        return reply_error(rq, 500, "internal", NULL, "storing %s failed: %s", name,
                           strerror(errno));
    rq->upload_tmp[0] = 0;
    char err[512];
    const char *type = artifact_type(name, rq_header(rq, "Content-Type"));
    StoreRc rc = store_artifact_add(srv->store, id, name, type, (int64_t)rq->upload_len, hex,
                                    iteration, err, sizeof err);
    if (rc != STORE_OK) return reply_store_error(rq, rc, err);
    if (keep > 0 && strcmp(name, "checkpoints/latest") == 0) prune_checkpoints(srv, id, path, keep);
    json_t *a = store_artifact_get(srv->store, id, name);
    char location[8300];
    snprintf(location, sizeof location, "/api/v1/experiments/%lld/artifacts/%s", (long long)id,
             name);
    return reply_created(rq, a, location);
}
