/*
 * store.h: the control server's database (SQLite, WAL): experiments and their queue with
 * leases, events (status, metrics, logs, progress, artifacts) under one increasing id that the
 * Server-Sent Events resume from, metric points, artifacts, workers and tokens. docs/api.md gives
 * the JSON shapes these functions return.
 *
 * One connection behind a mutex: every function is safe from any thread, and every state change
 * is one transaction, so a crash at any moment leaves the database consistent. Schema migrations
 * are the files schema/NNN_name.sql, applied in order at open (PRAGMA user_version).
 *
 * Functions that change state return a StoreRc with a message in err; those that read return new
 * jansson references (NULL when the thing does not exist). Times are unix milliseconds inside,
 * RFC 3339 strings in the JSON.
 */
#ifndef CHUNKGRPO_STORE_H
#define CHUNKGRPO_STORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Store Store;

/* Unix milliseconds now (wall clock). */
int64_t now_ms(void);
/* Room for any int in the struct tm fields, so that no truncation is possible. */
#define STORE_TIME_LEN 80
/* unix milliseconds as RFC 3339 UTC with milliseconds: "2026-11-27T05:08:38.123Z" */
void format_time(int64_t ms, char out[STORE_TIME_LEN]);
/* An artifact name: a relative path of [A-Za-z0-9._-] segments, none "." or "..", at most 200
 * bytes, so it stays inside the experiment's folder. */
int store_artifact_name_ok(const char *name);

typedef enum {
    STORE_OK = 0,
    STORE_NOT_FOUND = 1, /* no such experiment, token, worker, artifact */
    STORE_CONFLICT = 2,  /* the state does not allow it (message says why) */
    STORE_EMPTY = 3,     /* store_lease: nothing queued */
    STORE_INVALID = 4,   /* malformed input (the message names it, as "events[3].seq: ...") */
    STORE_ERROR = -1,    /* SQLite or I/O failure */
} StoreRc;

/* Opens (creating) DATA_DIR/chunkgrpo.db and applies the migrations of schema_dir. */
Store *store_open(const char *data_dir, const char *schema_dir, char *err, size_t errlen);
void store_close(Store *s);
const char *store_data_dir(const Store *s);

/* Called (outside the store's lock) after every commit that added events or queued work, so
 * that SSE streams and long-polling leases wake up. */
void store_set_notify(Store *s, void (*fn)(void *ctx), void *ctx);

/* ---- experiments ---- */
typedef struct {
    const char *name;            /* may be NULL: then "KIND-ID" */
    const char *kind;            /* the config's kind */
    const json_t *config;        /* the effective config (validated by the caller) */
    int priority;                /* higher first */
    int max_attempts;            /* >= 1 */
    const char *idempotency_key; /* NULL or the client's key */
    int64_t parent_id;           /* clone: the experiment it came from, else 0 */
} NewExperiment;

/* Creates a queued experiment (and its first status event). With an idempotency key already
 * used: the same config and name give *existed = 1 and that experiment's id; another body is
 * STORE_CONFLICT. */
StoreRc store_experiment_create(Store *s, const NewExperiment *e, int64_t *id, int *existed,
                                char *err, size_t errlen);
json_t *store_experiment_get(Store *s, int64_t id);
/* Newest first; status / kind may be NULL; cursor 0 = from the newest; *next_cursor 0 = end. */
json_t *store_experiment_list(Store *s, const char *status, const char *kind, int64_t cursor,
                              int limit, int64_t *next_cursor);
StoreRc store_experiment_cancel(Store *s, int64_t id, char *err, size_t errlen);
StoreRc store_experiment_retry(Store *s, int64_t id, char *err, size_t errlen);
/* Terminal experiments only: rows and the folder DATA/artifacts/ID. */
StoreRc store_experiment_delete(Store *s, int64_t id, char *err, size_t errlen);

/* ---- the queue ---- */
/* Leases the next queued experiment (priority, then age) to worker_id for lease_ms: running,
 * attempts + 1, a status event. *lease = {"experiment", "attempt", "lease_expires_at",
 * "next_seq", "checkpoint"}. STORE_EMPTY when nothing is queued. */
StoreRc store_lease(Store *s, const char *worker_id, int64_t lease_ms, json_t **lease, char *err,
                    size_t errlen);
/* Renews the lease of experiment id held by worker_id (progress: an object stored as the
 * experiment's progress and sent as a progress event, or NULL). *cancel = 1 when a cancel was
 * asked. STORE_CONFLICT when the experiment is not running under this worker any more. */
StoreRc store_heartbeat(Store *s, const char *worker_id, int64_t id, int64_t lease_ms,
                        const json_t *progress, int *cancel, int64_t *expires_at, char *err,
                        size_t errlen);
/* The lease holder ends the attempt: "succeeded", "failed" (error = the reason), "canceled", or
 * "requeue" (back to the queue, the attempt not counted: a worker shutting down). */
StoreRc store_complete(Store *s, const char *worker_id, int64_t id, const char *status,
                       const char *error, char *err, size_t errlen);
/* Leases past their time: back to the queue, or failed when attempts reached max_attempts. */
StoreRc store_expire_leases(Store *s, int64_t now_ms, int *requeued, int *failed, char *err,
                            size_t errlen);

/* ---- events, metrics, logs ---- */
/* A worker's batch [{"seq", "type", "ts"?, "data"}] for experiment id, in one transaction; a seq
 * already stored is counted in *duplicates and skipped. Types: metrics (data {"iteration",
 * "values": {key: number}}: each number becomes a metric point, and "latest" of the experiment
 * is updated), log ({"level", "message"}), progress (stored as the experiment's progress). Only
 * the current lease holder may send (STORE_CONFLICT otherwise); a malformed event is
 * STORE_INVALID naming it, and nothing of the batch is stored. */
StoreRc store_add_events(Store *s, int64_t id, const char *worker_id, const json_t *events,
                         int *accepted, int *duplicates, int64_t *next_seq, char *err,
                         size_t errlen);
/* Events after after_id (experiment id, or every experiment when id is 0), oldest first, at most
 * limit: [{"id", "experiment_id", "type", "ts", "data"}]. */
json_t *store_events_after(Store *s, int64_t id, int64_t after_id, int limit);
int64_t store_last_event_id(Store *s);
/* {"last_event_id", "series": {key: {"iteration": [], "value": []}}}: the points of keys (NULL =
 * all keys) after event after_id, each series reduced to at most max_points (bucket means, the
 * first and last points kept). NULL when the experiment does not exist. */
json_t *store_metrics(Store *s, int64_t id, const char *const *keys, int nkeys, int64_t after_id,
                      int max_points);
/* {"items": [{"id", "ts", "level", "message"}], "last_event_id"}. */
json_t *store_logs(Store *s, int64_t id, int64_t after_id, int limit);

/* ---- artifacts ---- */
/* Records a file already in place at DATA/artifacts/ID/NAME (replacing a row of the same name)
 * and adds an artifact event. */
StoreRc store_artifact_add(Store *s, int64_t id, const char *name, const char *content_type,
                           int64_t size, const char *sha256_hex, int64_t iteration, char *err,
                           size_t errlen);
json_t *store_artifacts(Store *s, int64_t id); /* {"items": [...]} or NULL */
json_t *store_artifact_get(Store *s, int64_t id, const char *name);
/* Checkpoint retention: of the folders checkpoints/F/ of experiment id, forgets every one but
 * `latest` (the folder checkpoints/latest names) and the newest `keep` by name (folders are named
 * by zero-padded iteration). Returns the forgotten artifact names as a JSON array (for the caller
 * to delete their files, after the rows are gone), or NULL on a database error. */
json_t *store_checkpoints_prune(Store *s, int64_t id, const char *latest, int keep);

/* ---- workers ---- */
/* caps: {"name", "backend", "device", "memory_mb", "threads", "version"}; writes "w-" + 16 hex
 * digits to worker_id (at least 24 bytes). */
StoreRc store_worker_register(Store *s, int64_t token_id, const json_t *caps, char *worker_id,
                              char *err, size_t errlen);
json_t *store_workers(Store *s); /* {"items": [...]} with heartbeat_age_s and experiment_id */
/* 1 when worker_id is registered under token_id. */
int store_worker_owned(Store *s, const char *worker_id, int64_t token_id);

/* ---- tokens (stored as sha256 hex of the secret) ---- */
StoreRc store_token_create(Store *s, const char *name, const char *role, const char *hash_hex,
                           int64_t *id, char *err, size_t errlen);
/* The role (read, write, worker, admin) of an unrevoked token: STORE_NOT_FOUND otherwise. */
StoreRc store_token_lookup(Store *s, const char *hash_hex, int64_t *id, char role[16]);
json_t *store_tokens(Store *s);
StoreRc store_token_revoke(Store *s, int64_t id, char *err, size_t errlen);
int store_token_count(Store *s);

/* ---- for /metrics ---- */
/* {"queued": n, "running": n, "succeeded": n, "failed": n, "canceled": n, "workers": n,
 *  "workers_active": n (a heartbeat in the last minute)} */
json_t *store_counts(Store *s);

#endif
