/*
 * test_server_store.c: the server's database (server/store.c) over a temporary data folder and
 * the real schema/ migrations: experiments (create, idempotency, list with filters and cursors,
 * cancel, retry, delete with files), the queue (order, leases, heartbeats, completion, expiry),
 * worker events (duplicates, validation, latest and progress), metrics downsampling, logs,
 * artifacts, workers, tokens, reopening, a failing migration, the notify callback, threads, a
 * SIGKILLed writer, and the throughput the server needs. Run from the repository root.
 */
#include "store.h"
#include "test.h"

#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#define SCHEMA "schema"
#define HOUR_MS (3600 * 1000LL)

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#else
#define SANITIZED 0
#endif

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void rm_rf(const char *path)
{
    nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* A fresh data folder under the suite's temporary folder. */
static const char *fresh_dir(const char *name)
{
    const char *dir = test_tmp_path(name);
    rm_rf(dir);
    return dir;
}

static Store *open_at(const char *dir)
{
    char err[512] = "";
    Store *s = store_open(dir, SCHEMA, err, sizeof err);
    CHECK_MSG(s != NULL, "%s", err);
    return s;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static json_t *config_of(int seed)
{
    return json_pack("{s:s, s:i, s:f, s:s, s:b}", "kind", "grpo", "seed", seed, "lr", 1e-4,
                     "preset", "tiny", "ema", 1);
}

/* Creates a queued experiment; 0 on failure. */
static int64_t create(Store *s, const char *name, const char *kind, int priority, int max_attempts)
{
    json_t *cfg = config_of(priority);
    NewExperiment e = {.name = name,
                       .kind = kind,
                       .config = cfg,
                       .priority = priority,
                       .max_attempts = max_attempts};
    int64_t id = 0;
    int existed = -1;
    char err[512] = "";
    StoreRc rc = store_experiment_create(s, &e, &id, &existed, err, sizeof err);
    CHECK_MSG(rc == STORE_OK && existed == 0 && id > 0, "rc %d: %s", rc, err);
    json_decref(cfg);
    return id;
}

static void worker(Store *s, int64_t token_id, char wid[24])
{
    char err[512] = "";
    json_t *caps = json_pack("{s:s, s:s, s:s, s:i, s:i, s:s}", "name", "box", "backend", "cpu",
                             "device", "Xeon", "memory_mb", 4096, "threads", 2, "version", "0.1");
    StoreRc rc = store_worker_register(s, token_id, caps, wid, err, sizeof err);
    CHECK_MSG(rc == STORE_OK, "%s", err);
    json_decref(caps);
}

/* Leases the queue head to wid; its id, or 0 when the queue is empty. */
static int64_t lease(Store *s, const char *wid, int64_t lease_ms)
{
    json_t *l = NULL;
    char err[512] = "";
    StoreRc rc = store_lease(s, wid, lease_ms, &l, err, sizeof err);
    CHECK_MSG(rc == STORE_OK || rc == STORE_EMPTY, "rc %d: %s", rc, err);
    int64_t id = json_integer_value(json_object_get(json_object_get(l, "experiment"), "id"));
    json_decref(l);
    return id;
}

static const char *str_of(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

static json_int_t int_of(const json_t *o, const char *key)
{
    return json_integer_value(json_object_get(o, key));
}

/* "2026-11-27T05:08:38.123Z" */
static int is_time(const char *t)
{
    static const char pattern[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (!t || strlen(t) != sizeof pattern - 1) return 0;
    for (size_t i = 0; pattern[i]; i++)
        if (pattern[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != pattern[i]) return 0;
    return 1;
}

static const char *status_of(Store *s, int64_t id)
{
    static char buf[16];
    json_t *x = store_experiment_get(s, id);
    snprintf(buf, sizeof buf, "%s", x ? str_of(x, "status") : "(none)");
    json_decref(x);
    return buf;
}

static int count_events(Store *s, int64_t id, const char *type)
{
    json_t *ev = store_events_after(s, id, 0, 1000000);
    size_t i;
    json_t *e;
    int n = 0;
    json_array_foreach(ev, i, e) n += !type || !strcmp(str_of(e, "type"), type);
    json_decref(ev);
    return n;
}

/* Sends a batch given as JSON text. */
static StoreRc send(Store *s, int64_t id, const char *wid, const char *batch, int *accepted,
                    int *dups, int64_t *next_seq, char *err, size_t errlen)
{
    json_error_t je;
    json_t *ev = json_loads(batch, 0, &je);
    CHECK_MSG(ev != NULL, "%s", je.text);
    StoreRc rc = store_add_events(s, id, wid, ev, accepted, dups, next_seq, err, errlen);
    json_decref(ev);
    return rc;
}

/* One value of a raw SQL query on DATA/chunkgrpo.db (the test's own connection). */
static int64_t sql_int(const char *dir, const char *sql)
{
    char path[512];
    snprintf(path, sizeof path, "%s/chunkgrpo.db", dir);
    sqlite3 *db;
    sqlite3_stmt *q;
    int64_t v = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
        sqlite3_prepare_v2(db, sql, -1, &q, NULL) == SQLITE_OK) {
        if (sqlite3_step(q) == SQLITE_ROW) v = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
    }
    sqlite3_close(db);
    return v;
}

static void test_create_get_list(void)
{
    const char *dir = fresh_dir("create");
    Store *s = open_at(dir);
    if (!s) return;
    CHECK(exists(test_tmp_path("create/artifacts")));
    CHECK(strcmp(store_data_dir(s), dir) == 0);
    int64_t ids[6];
    for (int i = 0; i < 6; i++)
        ids[i] = create(s, i == 0 ? "first" : NULL, i % 2 ? "eval" : "grpo", 0, 3);
    CHECK(ids[0] < ids[1] && ids[4] < ids[5]);

    json_t *x = store_experiment_get(s, ids[0]);
    json_t *cfg = config_of(0);
    CHECK(x && int_of(x, "id") == ids[0]);
    CHECK(x && !strcmp(str_of(x, "name"), "first"));
    CHECK(x && !strcmp(str_of(x, "kind"), "grpo") && !strcmp(str_of(x, "status"), "queued"));
    CHECK(x && int_of(x, "priority") == 0 && int_of(x, "attempts") == 0 &&
          int_of(x, "max_attempts") == 3);
    CHECK(x && json_equal(json_object_get(x, "config"), cfg));
    CHECK(x && is_time(str_of(x, "created_at")));
    CHECK(x && json_is_null(json_object_get(x, "started_at")) &&
          json_is_null(json_object_get(x, "finished_at")) &&
          json_is_null(json_object_get(x, "error")) &&
          json_is_null(json_object_get(x, "worker_id")) &&
          json_is_false(json_object_get(x, "cancel_requested")) &&
          json_is_null(json_object_get(x, "parent_id")) &&
          json_is_null(json_object_get(x, "progress")));
    CHECK(x && json_is_object(json_object_get(x, "latest")) &&
          json_object_size(json_object_get(x, "latest")) == 0);
    json_decref(x);
    json_decref(cfg);

    /* no name: KIND-ID; a clone names its parent */
    x = store_experiment_get(s, ids[1]);
    char want[32];
    snprintf(want, sizeof want, "eval-%lld", (long long)ids[1]);
    CHECK(x && !strcmp(str_of(x, "name"), want));
    json_decref(x);
    json_t *c = config_of(9);
    NewExperiment e = {.kind = "grpo", .config = c, .max_attempts = 1, .parent_id = ids[0]};
    int64_t clone;
    int existed;
    char err[512] = "";
    CHECK(store_experiment_create(s, &e, &clone, &existed, err, sizeof err) == STORE_OK);
    x = store_experiment_get(s, clone);
    CHECK(x && int_of(x, "parent_id") == ids[0]);
    json_decref(x);
    CHECK(store_experiment_get(s, 999999) == NULL);
    CHECK(count_events(s, ids[0], "status") == 1);

    /* invalid input */
    int64_t none = -1;
    e.max_attempts = 0;
    CHECK(store_experiment_create(s, &e, &none, &existed, err, sizeof err) == STORE_INVALID);
    CHECK(strstr(err, "max_attempts") != NULL && none == 0);
    e.max_attempts = 1;
    e.kind = "";
    CHECK(store_experiment_create(s, &e, &none, &existed, err, sizeof err) == STORE_INVALID);
    e.kind = "grpo";
    e.config = json_array_get(NULL, 0);
    CHECK(store_experiment_create(s, &e, &none, &existed, err, sizeof err) == STORE_INVALID);
    CHECK(strstr(err, "config") != NULL);
    json_decref(c);

    /* the whole list, newest first, without configs */
    int64_t next = -1;
    json_t *all = store_experiment_list(s, NULL, NULL, 0, 50, &next);
    CHECK(json_array_size(all) == 7 && next == 0);
    CHECK(int_of(json_array_get(all, 0), "id") == clone);
    CHECK(int_of(json_array_get(all, 6), "id") == ids[0]);
    CHECK(json_object_get(json_array_get(all, 0), "config") == NULL);
    CHECK(is_time(str_of(json_array_get(all, 3), "created_at")));
    json_decref(all);

    /* filters */
    json_t *evals = store_experiment_list(s, NULL, "eval", 0, 50, &next);
    CHECK(json_array_size(evals) == 3);
    json_decref(evals);
    CHECK(store_experiment_cancel(s, ids[2], err, sizeof err) == STORE_OK);
    json_t *canceled = store_experiment_list(s, "canceled", NULL, 0, 50, &next);
    CHECK(json_array_size(canceled) == 1 && int_of(json_array_get(canceled, 0), "id") == ids[2]);
    json_decref(canceled);
    json_t *both = store_experiment_list(s, "queued", "grpo", 0, 50, &next);
    CHECK(json_array_size(both) == 3); /* ids[0], ids[4], clone */
    json_decref(both);

    /* cursor pagination: 7 items in pages of 3 */
    int64_t cursor = 0, seen[8];
    int pages = 0, n = 0;
    do {
        json_t *page = store_experiment_list(s, NULL, NULL, cursor, 3, &next);
        size_t i;
        json_t *it;
        json_array_foreach(page, i, it) if (n < 8) seen[n++] = int_of(it, "id");
        json_decref(page);
        cursor = next;
        pages++;
    } while (cursor && pages < 10);
    CHECK(pages == 3 && n == 7);
    for (int i = 1; i < n; i++) CHECK(seen[i] < seen[i - 1]);
    store_close(s);
}

static void test_idempotency(void)
{
    Store *s = open_at(fresh_dir("idem"));
    if (!s) return;
    json_t *c1 = config_of(1), *c2 = config_of(2);
    /* the same config with its keys in another order is the same body */
    json_t *c1b = json_pack("{s:b, s:s, s:f, s:i, s:s}", "ema", 1, "preset", "tiny", "lr", 1e-4,
                            "seed", 1, "kind", "grpo");
    NewExperiment e = {
        .name = "run", .kind = "grpo", .config = c1, .max_attempts = 3, .idempotency_key = "key-1"};
    int64_t id1 = 0, id2 = 0;
    int existed = -1;
    char err[512] = "";
    CHECK(store_experiment_create(s, &e, &id1, &existed, err, sizeof err) == STORE_OK && !existed);
    e.config = c1b;
    CHECK(store_experiment_create(s, &e, &id2, &existed, err, sizeof err) == STORE_OK);
    CHECK(existed == 1 && id2 == id1);
    CHECK(count_events(s, id1, "status") == 1);
    e.config = c2;
    CHECK(store_experiment_create(s, &e, &id2, &existed, err, sizeof err) == STORE_CONFLICT);
    CHECK(strstr(err, "Idempotency-Key") != NULL);
    e.config = c1;
    e.name = "other";
    CHECK(store_experiment_create(s, &e, &id2, &existed, err, sizeof err) == STORE_CONFLICT);
    e.name = NULL;
    CHECK(store_experiment_create(s, &e, &id2, &existed, err, sizeof err) == STORE_CONFLICT);
    e.idempotency_key = NULL;
    CHECK(store_experiment_create(s, &e, &id2, &existed, err, sizeof err) == STORE_OK);
    CHECK(!existed && id2 != id1);
    int64_t next;
    json_t *all = store_experiment_list(s, NULL, NULL, 0, 10, &next);
    CHECK(json_array_size(all) == 2);
    json_decref(all);
    json_decref(c1);
    json_decref(c1b);
    json_decref(c2);
    store_close(s);
}

static void test_queue_order(void)
{
    Store *s = open_at(fresh_dir("queue"));
    if (!s) return;
    char wid[24];
    worker(s, 1, wid);
    int64_t a = create(s, "a", "grpo", 0, 3), b = create(s, "b", "grpo", 5, 3);
    int64_t c = create(s, "c", "grpo", 5, 3), d = create(s, "d", "grpo", 1, 3);
    int64_t e = create(s, "e", "grpo", -2, 3);
    CHECK(lease(s, wid, HOUR_MS) == b);
    CHECK(lease(s, wid, HOUR_MS) == c);
    CHECK(lease(s, wid, HOUR_MS) == d);
    CHECK(lease(s, wid, HOUR_MS) == a);
    CHECK(lease(s, wid, HOUR_MS) == e);
    json_t *l = NULL;
    char err[512] = "";
    CHECK(store_lease(s, wid, HOUR_MS, &l, err, sizeof err) == STORE_EMPTY && l == NULL);
    CHECK(store_lease(s, "w-0000000000000000", HOUR_MS, &l, err, sizeof err) == STORE_NOT_FOUND);
    store_close(s);
}

static void test_lease_heartbeat_complete(void)
{
    Store *s = open_at(fresh_dir("lease"));
    if (!s) return;
    char wid[24], other[24], err[512] = "";
    worker(s, 1, wid);
    worker(s, 1, other);
    int64_t id = create(s, "x", "grpo", 0, 3);
    int64_t t0 = wall_ms();
    json_t *l = NULL;
    CHECK(store_lease(s, wid, 30000, &l, err, sizeof err) == STORE_OK);
    json_t *x = json_object_get(l, "experiment");
    CHECK(int_of(x, "id") == id && !strcmp(str_of(x, "status"), "running"));
    CHECK(json_is_object(json_object_get(x, "config")));
    CHECK(!strcmp(str_of(x, "worker_id"), wid) && is_time(str_of(x, "started_at")));
    CHECK(int_of(l, "attempt") == 1 && int_of(x, "attempts") == 1);
    CHECK(is_time(str_of(l, "lease_expires_at")));
    CHECK(int_of(l, "next_seq") == 1);
    CHECK(json_is_null(json_object_get(l, "checkpoint")));
    json_decref(l);
    CHECK(count_events(s, id, "status") == 2);

    int cancel = -1;
    int64_t expires = 0;
    json_t *progress = json_pack("{s:i, s:i, s:s}", "iteration", 3, "total", 10, "phase", "train");
    CHECK(store_heartbeat(s, wid, id, 30000, progress, &cancel, &expires, err, sizeof err) ==
          STORE_OK);
    CHECK(cancel == 0 && expires >= t0 + 30000 && expires <= wall_ms() + 30000);
    x = store_experiment_get(s, id);
    CHECK(json_equal(json_object_get(x, "progress"), progress));
    json_decref(x);
    CHECK(count_events(s, id, "progress") == 1);
    CHECK(store_heartbeat(s, wid, id, 30000, NULL, &cancel, &expires, err, sizeof err) == STORE_OK);
    CHECK(count_events(s, id, "progress") == 1);
    json_t *bad = json_pack("{s:s}", "iteration", "three");
    CHECK(store_heartbeat(s, wid, id, 30000, bad, &cancel, &expires, err, sizeof err) ==
          STORE_INVALID);
    CHECK(strstr(err, "progress.iteration") != NULL);
    json_decref(bad);
    json_decref(progress);

    /* another worker holds no lease on it */
    CHECK(store_heartbeat(s, other, id, 30000, NULL, &cancel, &expires, err, sizeof err) ==
          STORE_CONFLICT);
    CHECK(store_complete(s, other, id, "succeeded", NULL, err, sizeof err) == STORE_CONFLICT);
    CHECK(store_heartbeat(s, wid, 424242, 30000, NULL, &cancel, &expires, err, sizeof err) ==
          STORE_NOT_FOUND);
    CHECK(store_complete(s, wid, id, "done", NULL, err, sizeof err) == STORE_INVALID);

    CHECK(store_complete(s, wid, id, "succeeded", NULL, err, sizeof err) == STORE_OK);
    x = store_experiment_get(s, id);
    CHECK(!strcmp(str_of(x, "status"), "succeeded") && is_time(str_of(x, "finished_at")));
    json_decref(x);
    CHECK(store_heartbeat(s, wid, id, 30000, NULL, &cancel, &expires, err, sizeof err) ==
          STORE_CONFLICT);
    CHECK(store_complete(s, wid, id, "succeeded", NULL, err, sizeof err) == STORE_CONFLICT);

    /* failed keeps its reason; requeue gives the attempt back */
    int64_t f = create(s, "f", "grpo", 0, 3);
    CHECK(lease(s, wid, 30000) == f);
    CHECK(store_complete(s, wid, f, "failed", "CUDA out of memory", err, sizeof err) == STORE_OK);
    x = store_experiment_get(s, f);
    CHECK(!strcmp(str_of(x, "status"), "failed") &&
          !strcmp(str_of(x, "error"), "CUDA out of memory"));
    json_decref(x);
    json_t *ev = store_events_after(s, f, 0, 100);
    json_t *last = json_object_get(json_array_get(ev, json_array_size(ev) - 1), "data");
    CHECK(!strcmp(str_of(last, "status"), "failed") &&
          !strcmp(str_of(last, "error"), "CUDA out of memory"));
    json_decref(ev);
    int64_t r = create(s, "r", "grpo", 0, 3);
    CHECK(lease(s, wid, 30000) == r);
    CHECK(store_complete(s, wid, r, "requeue", NULL, err, sizeof err) == STORE_OK);
    x = store_experiment_get(s, r);
    CHECK(!strcmp(str_of(x, "status"), "queued") && int_of(x, "attempts") == 0);
    CHECK(json_is_null(json_object_get(x, "worker_id")));
    json_decref(x);
    CHECK(lease(s, other, 30000) == r);
    store_close(s);
}

static void test_cancel(void)
{
    Store *s = open_at(fresh_dir("cancel"));
    if (!s) return;
    char wid[24], err[512] = "";
    worker(s, 1, wid);
    int64_t q = create(s, "q", "grpo", 0, 3);
    CHECK(store_experiment_cancel(s, q, err, sizeof err) == STORE_OK);
    json_t *x = store_experiment_get(s, q);
    CHECK(!strcmp(str_of(x, "status"), "canceled") && is_time(str_of(x, "finished_at")));
    json_decref(x);
    CHECK(store_experiment_cancel(s, q, err, sizeof err) == STORE_CONFLICT);
    CHECK(store_experiment_cancel(s, 777, err, sizeof err) == STORE_NOT_FOUND);
    CHECK(lease(s, wid, 30000) == 0); /* nothing queued */

    int64_t r = create(s, "r", "grpo", 0, 3);
    CHECK(lease(s, wid, 30000) == r);
    CHECK(store_experiment_cancel(s, r, err, sizeof err) == STORE_OK);
    x = store_experiment_get(s, r);
    CHECK(!strcmp(str_of(x, "status"), "running") &&
          json_is_true(json_object_get(x, "cancel_requested")));
    json_decref(x);
    CHECK(store_experiment_cancel(s, r, err, sizeof err) == STORE_OK); /* asked again: no change */
    int cancel = 0;
    int64_t expires;
    CHECK(store_heartbeat(s, wid, r, 30000, NULL, &cancel, &expires, err, sizeof err) == STORE_OK);
    CHECK(cancel == 1);
    CHECK(store_complete(s, wid, r, "canceled", NULL, err, sizeof err) == STORE_OK);
    CHECK(!strcmp(status_of(s, r), "canceled"));

    /* a worker shutting down while a cancel is pending ends it canceled, not queued */
    int64_t t = create(s, "t", "grpo", 0, 3);
    CHECK(lease(s, wid, 30000) == t);
    CHECK(store_experiment_cancel(s, t, err, sizeof err) == STORE_OK);
    CHECK(store_complete(s, wid, t, "requeue", NULL, err, sizeof err) == STORE_OK);
    CHECK(!strcmp(status_of(s, t), "canceled"));
    store_close(s);
}

static void test_retry(void)
{
    Store *s = open_at(fresh_dir("retry"));
    if (!s) return;
    char wid[24], err[512] = "";
    worker(s, 1, wid);
    int64_t id = create(s, "x", "grpo", 0, 3);
    CHECK(store_experiment_retry(s, id, err, sizeof err) == STORE_CONFLICT); /* queued */
    CHECK(lease(s, wid, 30000) == id);
    CHECK(store_experiment_retry(s, id, err, sizeof err) == STORE_CONFLICT); /* running */
    CHECK(store_complete(s, wid, id, "failed", "boom", err, sizeof err) == STORE_OK);
    CHECK(store_experiment_retry(s, id, err, sizeof err) == STORE_OK);
    json_t *x = store_experiment_get(s, id);
    CHECK(!strcmp(str_of(x, "status"), "queued") && int_of(x, "attempts") == 0);
    CHECK(json_is_null(json_object_get(x, "error")) &&
          json_is_null(json_object_get(x, "finished_at")));
    CHECK(json_is_null(json_object_get(x, "started_at")));
    json_decref(x);
    CHECK(lease(s, wid, 30000) == id);
    CHECK(store_complete(s, wid, id, "succeeded", NULL, err, sizeof err) == STORE_OK);
    CHECK(store_experiment_retry(s, id, err, sizeof err) == STORE_CONFLICT);
    CHECK(store_experiment_retry(s, 31337, err, sizeof err) == STORE_NOT_FOUND);
    store_close(s);
}

static void test_expiry(void)
{
    Store *s = open_at(fresh_dir("expiry"));
    if (!s) return;
    char wid[24], err[512] = "";
    worker(s, 1, wid);
    int64_t id = create(s, "x", "grpo", 0, 2);
    int req = -1, failed = -1;
    CHECK(lease(s, wid, 1000) == id);
    CHECK(store_expire_leases(s, wall_ms(), &req, &failed, err, sizeof err) == STORE_OK);
    CHECK(req == 0 && failed == 0 && !strcmp(status_of(s, id), "running"));

    CHECK(store_expire_leases(s, wall_ms() + 10000, &req, &failed, err, sizeof err) == STORE_OK);
    CHECK(req == 1 && failed == 0);
    json_t *x = store_experiment_get(s, id);
    CHECK(!strcmp(str_of(x, "status"), "queued") && int_of(x, "attempts") == 1);
    CHECK(str_of(x, "error") && !strcmp(str_of(x, "error"), "lease expired; attempt 1 of 2"));
    json_decref(x);
    /* the old holder finds its lease gone */
    int cancel;
    int64_t expires;
    CHECK(store_heartbeat(s, wid, id, 1000, NULL, &cancel, &expires, err, sizeof err) ==
          STORE_CONFLICT);

    CHECK(lease(s, wid, 1000) == id);
    CHECK(store_expire_leases(s, wall_ms() + 10000, &req, &failed, err, sizeof err) == STORE_OK);
    CHECK(req == 0 && failed == 1);
    x = store_experiment_get(s, id);
    CHECK(!strcmp(str_of(x, "status"), "failed") && int_of(x, "attempts") == 2);
    CHECK(!strcmp(str_of(x, "error"), "lease expired; attempt 2 of 2"));
    CHECK(is_time(str_of(x, "finished_at")));
    json_decref(x);
    /* status events: queued, running, queued, running, failed */
    CHECK(count_events(s, id, "status") == 5);

    /* a pending cancel wins over the requeue */
    int64_t c = create(s, "c", "grpo", 0, 3);
    CHECK(lease(s, wid, 1000) == c);
    CHECK(store_experiment_cancel(s, c, err, sizeof err) == STORE_OK);
    CHECK(store_expire_leases(s, wall_ms() + 10000, &req, &failed, err, sizeof err) == STORE_OK);
    CHECK(!strcmp(status_of(s, c), "canceled"));
    store_close(s);
}

static void test_events(void)
{
    Store *s = open_at(fresh_dir("events"));
    if (!s) return;
    char wid[24], other[24], err[512] = "";
    worker(s, 1, wid);
    worker(s, 1, other);
    int64_t id = create(s, "x", "grpo", 0, 3);
    int acc = -1, dups = -1;
    int64_t next = -1;
    const char *batch =
        "[{\"seq\": 1, \"type\": \"metrics\", \"data\": {\"iteration\": 1, \"values\": "
        "{\"loss\": 0.5, \"reward\": 2}}},"
        " {\"seq\": 2, \"type\": \"log\", \"ts\": \"2026-11-27T06:08:38.5+01:00\", \"data\": "
        "{\"level\": \"info\", \"message\": \"hello\"}},"
        " {\"seq\": 3, \"type\": \"progress\", \"data\": {\"iteration\": 1, \"total\": 10}}]";
    /* not leased yet */
    CHECK(send(s, id, wid, batch, &acc, &dups, &next, err, sizeof err) == STORE_CONFLICT);
    CHECK(lease(s, wid, 30000) == id);
    CHECK(send(s, id + 1000, wid, batch, &acc, &dups, &next, err, sizeof err) == STORE_NOT_FOUND);
    CHECK(send(s, id, other, batch, &acc, &dups, &next, err, sizeof err) == STORE_CONFLICT);
    CHECK(send(s, id, wid, batch, &acc, &dups, &next, err, sizeof err) == STORE_OK);
    CHECK(acc == 3 && dups == 0 && next == 4);
    /* a retried batch adds nothing */
    CHECK(send(s, id, wid, batch, &acc, &dups, &next, err, sizeof err) == STORE_OK);
    CHECK(acc == 0 && dups == 3 && next == 4);
    /* a seq twice in one batch, a gap, new values */
    CHECK(
        send(
            s, id, wid,
            "[{\"seq\": 3, \"type\": \"log\", \"data\": {\"level\": \"warn\", \"message\": \"x\"}},"
            " {\"seq\": 7, \"type\": \"metrics\", \"data\": {\"iteration\": 2, \"values\": "
            "{\"loss\": 0.25}}},"
            " {\"seq\": 7, \"type\": \"metrics\", \"data\": {\"iteration\": 2, \"values\": "
            "{\"loss\": 9}}}]",
            &acc, &dups, &next, err, sizeof err) == STORE_OK);
    CHECK(acc == 1 && dups == 2 && next == 8);

    json_t *x = store_experiment_get(s, id);
    json_t *latest = json_object_get(x, "latest");
    CHECK(json_object_size(latest) == 2);
    CHECK(json_real_value(json_object_get(latest, "loss")) == 0.25);
    CHECK(json_integer_value(json_object_get(latest, "reward")) == 2);
    CHECK(int_of(json_object_get(x, "progress"), "total") == 10);
    json_decref(x);

    /* the event's own time, in UTC */
    json_t *logs = store_logs(s, id, 0, 100);
    json_t *items = json_object_get(logs, "items");
    CHECK(json_array_size(items) == 1);
    CHECK(!strcmp(str_of(json_array_get(items, 0), "ts"), "2026-11-27T05:08:38.500Z"));
    json_decref(logs);

    /* malformed batches name the event and store nothing */
    static const struct {
        const char *batch, *message;
    } bad[] = {
        {"[{\"seq\": 20, \"type\": \"log\", \"data\": {\"level\": \"i\", \"message\": \"m\"}},"
         " {\"seq\": 21, \"type\": \"log\", \"data\": {\"level\": \"i\", \"message\": \"m\"}},"
         " {\"type\": \"log\", \"data\": {\"level\": \"i\", \"message\": \"m\"}}]",
         "events[2].seq: expected a positive integer"},
        {"[{\"seq\": 0, \"type\": \"log\", \"data\": {}}]", "events[0].seq"},
        {"[{\"seq\": 20, \"type\": \"status\", \"data\": {}}]", "events[0].type"},
        {"[{\"seq\": 20, \"type\": \"log\", \"ts\": \"yesterday\", \"data\": {\"level\": \"i\", "
         "\"message\": \"m\"}}]",
         "events[0].ts"},
        {"[{\"seq\": 20, \"type\": \"metrics\", \"data\": {\"iteration\": 1, \"values\": "
         "{\"loss\": \"high\"}}}]",
         "events[0].data.values.loss"},
        {"[{\"seq\": 20, \"type\": \"metrics\", \"data\": {\"values\": {}}}]",
         "events[0].data.iteration"},
        {"[{\"seq\": 20, \"type\": \"log\", \"data\": {\"level\": \"i\"}}]",
         "events[0].data.message"},
        {"[{\"seq\": 20, \"type\": \"progress\", \"data\": {\"iteration\": 1}}]",
         "events[0].data.total"},
        {"[{\"seq\": 20, \"type\": \"log\", \"data\": [1]}]", "events[0].data"},
        {"[7]", "events[0]: expected an object"},
        {"{\"seq\": 1}", "events: expected an array"},
    };
    int before = count_events(s, id, NULL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        CHECK_MSG(send(s, id, wid, bad[i].batch, &acc, &dups, &next, err, sizeof err) ==
                      STORE_INVALID,
                  "case %zu", i);
        CHECK_MSG(strncmp(err, bad[i].message, strlen(bad[i].message)) == 0, "case %zu: %s", i,
                  err);
    }
    CHECK(count_events(s, id, NULL) == before);

    /* an empty batch is fine; after completion the worker may send no more */
    CHECK(send(s, id, wid, "[]", &acc, &dups, &next, err, sizeof err) == STORE_OK);
    CHECK(acc == 0 && next == 8);
    CHECK(store_complete(s, wid, id, "succeeded", NULL, err, sizeof err) == STORE_OK);
    CHECK(send(s, id, wid, batch, &acc, &dups, &next, err, sizeof err) == STORE_CONFLICT);
    store_close(s);
}

static void test_events_after(void)
{
    Store *s = open_at(fresh_dir("after"));
    if (!s) return;
    char wid[24], err[512] = "";
    worker(s, 1, wid);
    CHECK(store_last_event_id(s) == 0);
    int64_t a = create(s, "a", "grpo", 0, 3), b = create(s, "b", "grpo", 0, 3);
    CHECK(lease(s, wid, 30000) == a && lease(s, wid, 30000) == b);
    int acc, dups;
    int64_t next;
    for (int i = 1; i <= 5; i++) {
        char batch[256];
        snprintf(batch, sizeof batch,
                 "[{\"seq\": %d, \"type\": \"log\", \"data\": {\"level\": \"info\", "
                 "\"message\": \"m%d\"}}]",
                 i, i);
        CHECK(send(s, a, wid, batch, &acc, &dups, &next, err, sizeof err) == STORE_OK);
        CHECK(send(s, b, wid, batch, &acc, &dups, &next, err, sizeof err) == STORE_OK);
    }
    /* 2 creates + 2 leases + 10 logs */
    json_t *all = store_events_after(s, 0, 0, 1000);
    CHECK(json_array_size(all) == 14);
    size_t i;
    json_t *e;
    int64_t prev = 0;
    json_array_foreach(all, i, e)
    {
        CHECK(int_of(e, "id") > prev);
        prev = int_of(e, "id");
        CHECK(is_time(str_of(e, "ts")) && json_is_object(json_object_get(e, "data")));
        CHECK(int_of(e, "experiment_id") == a || int_of(e, "experiment_id") == b);
    }
    CHECK(store_last_event_id(s) == prev);
    int64_t mid = int_of(json_array_get(all, 6), "id");
    json_decref(all);

    json_t *only_b = store_events_after(s, b, 0, 1000);
    CHECK(json_array_size(only_b) == 7);
    json_array_foreach(only_b, i, e) CHECK(int_of(e, "experiment_id") == b);
    json_decref(only_b);
    json_t *tail = store_events_after(s, 0, mid, 1000);
    CHECK(json_array_size(tail) == 7 && int_of(json_array_get(tail, 0), "id") > mid);
    json_decref(tail);
    json_t *two = store_events_after(s, a, mid, 2);
    CHECK(json_array_size(two) == 2);
    json_t *d = json_object_get(json_array_get(two, 0), "data");
    CHECK(!strcmp(str_of(json_array_get(two, 0), "type"), "log") && str_of(d, "message"));
    json_decref(two);
    json_t *none = store_events_after(s, 0, prev, 1000);
    CHECK(none && json_array_size(none) == 0);
    json_decref(none);

    /* logs: pages, and last_event_id to resume from */
    json_t *l = store_logs(s, a, 0, 3);
    CHECK(json_array_size(json_object_get(l, "items")) == 3);
    int64_t resume = int_of(l, "last_event_id");
    CHECK(resume == int_of(json_array_get(json_object_get(l, "items"), 2), "id"));
    json_t *item = json_array_get(json_object_get(l, "items"), 0);
    CHECK(!strcmp(str_of(item, "level"), "info") && !strcmp(str_of(item, "message"), "m1"));
    json_decref(l);
    l = store_logs(s, a, resume, 3);
    CHECK(json_array_size(json_object_get(l, "items")) == 2);
    CHECK(!strcmp(str_of(json_array_get(json_object_get(l, "items"), 1), "message"), "m5"));
    resume = int_of(l, "last_event_id");
    json_decref(l);
    l = store_logs(s, a, resume, 3);
    CHECK(json_array_size(json_object_get(l, "items")) == 0 &&
          int_of(l, "last_event_id") == resume);
    json_decref(l);
    CHECK(store_logs(s, 4242, 0, 3) == NULL);
    store_close(s);
}

static void test_metrics_downsampling(void)
{
    Store *s = open_at(fresh_dir("metrics"));
    if (!s) return;
    char wid[24], err[512] = "";
    worker(s, 1, wid);
    int64_t id = create(s, "x", "grpo", 0, 3);
    CHECK(lease(s, wid, HOUR_MS) == id);
    /* 10,000 points of loss (value = 2 * iteration), acc every 1000 iterations */
    int acc, dups, seq = 0;
    int64_t next, half_event = 0;
    for (int batch = 0; batch < 100; batch++) {
        json_t *ev = json_array();
        for (int k = 0; k < 100; k++) {
            int it = batch * 100 + k;
            json_t *values = json_pack("{s:f}", "loss", 2.0 * it);
            if (it % 1000 == 0) json_object_set_new(values, "acc", json_real(it / 1000.0));
            json_array_append_new(ev,
                                  json_pack("{s:i, s:s, s:{s:i, s:o}}", "seq", ++seq, "type",
                                            "metrics", "data", "iteration", it, "values", values));
        }
        CHECK(store_add_events(s, id, wid, ev, &acc, &dups, &next, err, sizeof err) == STORE_OK);
        CHECK(acc == 100);
        json_decref(ev);
        if (batch == 49) half_event = store_last_event_id(s);
    }
    json_t *m = store_metrics(s, id, NULL, 0, 0, 100);
    CHECK(int_of(m, "last_event_id") == store_last_event_id(s));
    json_t *series = json_object_get(m, "series");
    CHECK(json_object_size(series) == 2);
    json_t *its = json_object_get(json_object_get(series, "loss"), "iteration");
    json_t *vals = json_object_get(json_object_get(series, "loss"), "value");
    CHECK(json_array_size(its) == 100 && json_array_size(vals) == 100);
    CHECK(json_integer_value(json_array_get(its, 0)) == 0);
    CHECK(json_number_value(json_array_get(vals, 0)) == 0.0);
    CHECK(json_integer_value(json_array_get(its, 99)) == 9999);
    CHECK(json_number_value(json_array_get(vals, 99)) == 19998.0);
    /* 9998 middle points in 98 buckets: the first holds iterations 1..102 */
    CHECK_CLOSE(json_number_value(json_array_get(its, 1)), 51.5, 1e-9, 0);
    CHECK_CLOSE(json_number_value(json_array_get(vals, 1)), 103.0, 1e-9, 0);
    for (size_t i = 1; i < 100; i++) {
        double it = json_number_value(json_array_get(its, i));
        CHECK(it > json_number_value(json_array_get(its, i - 1)));
        CHECK_CLOSE(json_number_value(json_array_get(vals, i)), 2 * it, 1e-6, 1e-12);
    }
    json_t *acc_s = json_object_get(series, "acc");
    CHECK(json_array_size(json_object_get(acc_s, "iteration")) == 10);
    CHECK(json_integer_value(json_array_get(json_object_get(acc_s, "iteration"), 9)) == 9000);
    CHECK(json_number_value(json_array_get(json_object_get(acc_s, "value"), 9)) == 9.0);
    json_decref(m);

    /* chosen keys, everything, after an event, tiny limits */
    const char *keys[] = {"acc", "nope"};
    m = store_metrics(s, id, keys, 2, 0, 100);
    CHECK(json_object_size(json_object_get(m, "series")) == 1);
    CHECK(json_object_get(json_object_get(m, "series"), "acc") != NULL);
    json_decref(m);
    m = store_metrics(s, id, keys, 1, 0, 100000);
    CHECK(json_array_size(json_object_get(json_object_get(json_object_get(m, "series"), "acc"),
                                          "value")) == 10);
    json_decref(m);
    m = store_metrics(s, id, NULL, 0, 0, 100000);
    CHECK(json_array_size(json_object_get(json_object_get(json_object_get(m, "series"), "loss"),
                                          "value")) == 10000);
    json_decref(m);
    m = store_metrics(s, id, NULL, 0, half_event, 100000);
    its = json_object_get(json_object_get(json_object_get(m, "series"), "loss"), "iteration");
    CHECK(json_array_size(its) == 5000 && json_integer_value(json_array_get(its, 0)) == 5000);
    json_decref(m);
    m = store_metrics(s, id, keys, 1, 0, 2);
    its = json_object_get(json_object_get(json_object_get(m, "series"), "acc"), "iteration");
    CHECK(json_array_size(its) == 2 && json_integer_value(json_array_get(its, 0)) == 0 &&
          json_integer_value(json_array_get(its, 1)) == 9000);
    json_decref(m);
    m = store_metrics(s, id, NULL, 0, store_last_event_id(s), 100);
    CHECK(m && json_object_size(json_object_get(m, "series")) == 0);
    CHECK(int_of(m, "last_event_id") == store_last_event_id(s));
    json_decref(m);
    CHECK(store_metrics(s, id + 1, NULL, 0, 0, 100) == NULL);
    store_close(s);
}

static void test_artifacts(void)
{
    Store *s = open_at(fresh_dir("artifacts"));
    if (!s) return;
    char wid[24], err[512] = "";
    worker(s, 1, wid);
    int64_t id = create(s, "x", "grpo", 0, 3);
    const char *h1 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const char *h2 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    CHECK(lease(s, wid, 30000) == id);
    CHECK(store_artifact_add(s, id, "eval.json", "application/json", 10, h1, 5, err, sizeof err) ==
          STORE_OK);
    CHECK(store_artifact_add(s, id, "checkpoints/step-1/model.safetensors",
                             "application/octet-stream", 100, h1, 1, err, sizeof err) == STORE_OK);
    CHECK(store_artifact_add(s, id, "checkpoints/step-2/model.safetensors",
                             "application/octet-stream", 200, h2, 2, err, sizeof err) == STORE_OK);
    CHECK(store_artifact_add(s, id, "eval.json", "application/json", 12, h2, -1, err, sizeof err) ==
          STORE_OK);
    json_t *l = store_artifacts(s, id);
    json_t *items = json_object_get(l, "items");
    CHECK(json_array_size(items) == 3);
    CHECK(
        !strcmp(str_of(json_array_get(items, 0), "name"), "checkpoints/step-1/model.safetensors"));
    json_t *ev = json_array_get(items, 2);
    CHECK(!strcmp(str_of(ev, "name"), "eval.json") && int_of(ev, "size") == 12);
    CHECK(!strcmp(str_of(ev, "sha256"), h2) && json_is_null(json_object_get(ev, "iteration")));
    CHECK(!strcmp(str_of(ev, "content_type"), "application/json") &&
          is_time(str_of(ev, "created_at")));
    json_decref(l);
    json_t *a = store_artifact_get(s, id, "checkpoints/step-2/model.safetensors");
    CHECK(a && int_of(a, "size") == 200 && int_of(a, "iteration") == 2);
    json_decref(a);
    CHECK(store_artifact_get(s, id, "missing") == NULL);
    CHECK(store_artifact_get(s, id + 1, "eval.json") == NULL);
    CHECK(store_artifacts(s, id + 1) == NULL);
    CHECK(count_events(s, id, "artifact") == 4);

    static const char *const bad[] = {"",     "/etc/passwd", "../x", "a/../../x",
                                      "a//b", "a/./b",       "a/"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        CHECK_MSG(store_artifact_add(s, id, bad[i], "text/plain", 1, h1, 0, err, sizeof err) ==
                      STORE_INVALID,
                  "\"%s\"", bad[i]);
    CHECK(store_artifact_add(s, id + 1, "x", "text/plain", 1, h1, 0, err, sizeof err) ==
          STORE_NOT_FOUND);

    /* the next lease resumes from the newest checkpoint */
    CHECK(store_complete(s, wid, id, "requeue", NULL, err, sizeof err) == STORE_OK);
    json_t *le = NULL;
    CHECK(store_lease(s, wid, 30000, &le, err, sizeof err) == STORE_OK);
    json_t *cp = json_object_get(le, "checkpoint");
    CHECK(json_is_object(cp) &&
          !strcmp(str_of(cp, "name"), "checkpoints/step-2/model.safetensors"));
    CHECK(int_of(le, "attempt") == 1);
    json_decref(le);
    store_close(s);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void test_delete(void)
{
    const char *dir = fresh_dir("delete");
    Store *s = open_at(dir);
    if (!s) return;
    char wid[24], err[512] = "", path[512];
    worker(s, 1, wid);
    int64_t keep = create(s, "keep", "grpo", 0, 3), id = create(s, "x", "grpo", 0, 3);
    CHECK(lease(s, wid, 30000) == keep && lease(s, wid, 30000) == id);
    int acc, dups;
    int64_t next;
    CHECK(send(s, id, wid,
               "[{\"seq\": 1, \"type\": \"metrics\", \"data\": {\"iteration\": 1, \"values\": "
               "{\"loss\": 1}}}]",
               &acc, &dups, &next, err, sizeof err) == STORE_OK);
    char folder[400];
    snprintf(folder, sizeof folder, "%s/artifacts/%lld", dir, (long long)id);
    snprintf(path, sizeof path, "%s/sub", folder);
    CHECK(mkdir(folder, 0700) == 0 && mkdir(path, 0700) == 0);
    snprintf(path, sizeof path, "%s/sub/a.txt", folder);
    write_file(path, "hello");
    CHECK(store_artifact_add(s, id, "sub/a.txt", "text/plain", 5,
                             "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", 1,
                             err, sizeof err) == STORE_OK);

    CHECK(store_experiment_delete(s, id, err, sizeof err) == STORE_CONFLICT); /* running */
    CHECK(strstr(err, "running") != NULL);
    CHECK(store_complete(s, wid, id, "succeeded", NULL, err, sizeof err) == STORE_OK);
    CHECK(store_experiment_delete(s, id, err, sizeof err) == STORE_OK);
    CHECK(!exists(folder) && exists(test_tmp_path("delete/artifacts")));
    CHECK(store_experiment_get(s, id) == NULL);
    CHECK(count_events(s, id, NULL) == 0);
    CHECK(store_metrics(s, id, NULL, 0, 0, 10) == NULL);
    CHECK(store_artifacts(s, id) == NULL);
    /* raw rows: every table's are gone, the other experiment's stay */
    CHECK(sql_int(dir, "SELECT count(*) FROM metric_points") == 0);
    CHECK(sql_int(dir, "SELECT count(*) FROM artifacts") == 0);
    CHECK(sql_int(dir, "SELECT count(DISTINCT experiment_id) FROM events") == 1);
    CHECK(store_experiment_delete(s, id, err, sizeof err) == STORE_NOT_FOUND);
    CHECK(!strcmp(status_of(s, keep), "running") && count_events(s, keep, NULL) == 2);

    /* a new experiment never takes a deleted one's id */
    int64_t again = create(s, "again", "grpo", 0, 3);
    CHECK(again > id);
    store_close(s);
}

static void test_tokens(void)
{
    Store *s = open_at(fresh_dir("tokens"));
    if (!s) return;
    char err[512] = "", role[16];
    const char *h1 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const char *h2 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    int64_t a = 0, b = 0, got = 0;
    CHECK(store_token_count(s) == 0);
    CHECK(store_token_create(s, "admin", "admin", h1, &a, err, sizeof err) == STORE_OK && a > 0);
    CHECK(store_token_create(s, "ci", "worker", h2, &b, err, sizeof err) == STORE_OK && b > a);
    CHECK(store_token_create(s, "x", "root", h2, &got, err, sizeof err) == STORE_INVALID);
    CHECK(store_token_create(s, "x", "read", "abc", &got, err, sizeof err) == STORE_INVALID);
    CHECK(store_token_count(s) == 2);
    CHECK(store_token_lookup(s, h2, &got, role) == STORE_OK && got == b && !strcmp(role, "worker"));
    CHECK(store_token_lookup(s, "00", &got, role) == STORE_NOT_FOUND);
    CHECK(store_token_revoke(s, b, err, sizeof err) == STORE_OK);
    CHECK(store_token_revoke(s, b, err, sizeof err) == STORE_OK);
    CHECK(store_token_revoke(s, 99, err, sizeof err) == STORE_NOT_FOUND);
    CHECK(store_token_lookup(s, h2, &got, role) == STORE_NOT_FOUND);
    CHECK(store_token_lookup(s, h1, &got, role) == STORE_OK && !strcmp(role, "admin"));
    CHECK(store_token_count(s) == 1);
    json_t *t = store_tokens(s);
    json_t *items = json_object_get(t, "items");
    CHECK(json_array_size(items) == 2);
    CHECK(json_is_false(json_object_get(json_array_get(items, 0), "revoked")));
    CHECK(json_is_true(json_object_get(json_array_get(items, 1), "revoked")));
    CHECK(!strcmp(str_of(json_array_get(items, 1), "name"), "ci"));
    CHECK(is_time(str_of(json_array_get(items, 1), "created_at")));
    CHECK(json_object_get(json_array_get(items, 1), "hash") == NULL);
    json_decref(t);
    store_close(s);
}

static void test_workers_and_counts(void)
{
    Store *s = open_at(fresh_dir("workers"));
    if (!s) return;
    char a[24], b[24], err[512] = "";
    worker(s, 7, a);
    worker(s, 8, b);
    CHECK(strlen(a) == 18 && !strncmp(a, "w-", 2) && strspn(a + 2, "0123456789abcdef") == 16);
    CHECK(strcmp(a, b) != 0);
    CHECK(store_worker_owned(s, a, 7) == 1 && store_worker_owned(s, a, 8) == 0);
    CHECK(store_worker_owned(s, "w-nope", 7) == 0);
    json_t *bad = json_pack("{s:s}", "threads", "two");
    char wid[24];
    CHECK(store_worker_register(s, 7, bad, wid, err, sizeof err) == STORE_INVALID);
    CHECK(strstr(err, "threads") != NULL);
    json_decref(bad);
    json_t *bare = json_object(); /* every field is optional */
    CHECK(store_worker_register(s, 7, bare, wid, err, sizeof err) == STORE_OK);
    json_decref(bare);

    int64_t id = create(s, "x", "grpo", 0, 3);
    create(s, "y", "grpo", 0, 3);
    int64_t z = create(s, "z", "grpo", 0, 3);
    CHECK(lease(s, a, 30000) == id);
    CHECK(store_experiment_cancel(s, z, err, sizeof err) == STORE_OK);
    json_t *w = store_workers(s);
    json_t *items = json_object_get(w, "items");
    CHECK(json_array_size(items) == 3);
    size_t i;
    json_t *it;
    int found = 0;
    json_array_foreach(items, i, it)
    {
        CHECK(is_time(str_of(it, "registered_at")) && is_time(str_of(it, "last_seen_at")));
        double age = json_number_value(json_object_get(it, "heartbeat_age_s"));
        CHECK(age >= 0 && age < 60);
        if (strcmp(str_of(it, "id"), a)) {
            CHECK(json_is_null(json_object_get(it, "experiment_id")));
            continue;
        }
        found = 1;
        CHECK(int_of(it, "experiment_id") == id && !strcmp(str_of(it, "name"), "box"));
        CHECK(!strcmp(str_of(it, "backend"), "cpu") && !strcmp(str_of(it, "device"), "Xeon"));
        CHECK(int_of(it, "memory_mb") == 4096 && int_of(it, "threads") == 2);
    }
    CHECK(found);
    json_decref(w);

    json_t *c = store_counts(s);
    CHECK(int_of(c, "queued") == 1 && int_of(c, "running") == 1 && int_of(c, "canceled") == 1);
    CHECK(int_of(c, "succeeded") == 0 && int_of(c, "failed") == 0);
    CHECK(int_of(c, "workers") == 3 && int_of(c, "workers_active") == 3);
    json_decref(c);
    store_close(s);
}

static void test_reopen(void)
{
    const char *dir = fresh_dir("reopen");
    Store *s = open_at(dir);
    if (!s) return;
    char wid[24], err[512] = "";
    worker(s, 3, wid);
    int64_t id = create(s, "x", "grpo", 4, 3);
    CHECK(lease(s, wid, HOUR_MS) == id);
    int acc, dups;
    int64_t next;
    CHECK(send(s, id, wid,
               "[{\"seq\": 1, \"type\": \"metrics\", \"data\": {\"iteration\": 1, \"values\": "
               "{\"loss\": 1.5}}}]",
               &acc, &dups, &next, err, sizeof err) == STORE_OK);
    int64_t last = store_last_event_id(s);
    store_close(s);
    CHECK(sql_int(dir, "PRAGMA user_version") == 1);

    s = open_at(dir); /* 001 is not applied again: its CREATE TABLEs would fail */
    if (!s) return;
    CHECK(sql_int(dir, "PRAGMA user_version") == 1);
    json_t *x = store_experiment_get(s, id);
    CHECK(x && !strcmp(str_of(x, "status"), "running") && int_of(x, "priority") == 4);
    CHECK(x && json_real_value(json_object_get(json_object_get(x, "latest"), "loss")) == 1.5);
    json_decref(x);
    CHECK(store_last_event_id(s) == last);
    CHECK(store_worker_owned(s, wid, 3) == 1);
    CHECK(send(s, id, wid,
               "[{\"seq\": 1, \"type\": \"metrics\", \"data\": {\"iteration\": 1, "
               "\"values\": {\"loss\": 1.5}}}]",
               &acc, &dups, &next, err, sizeof err) == STORE_OK);
    CHECK(acc == 0 && dups == 1 && next == 2);
    CHECK(sql_int(dir, "SELECT count(*) FROM pragma_journal_mode WHERE journal_mode = 'wal'") == 1);
    store_close(s);
}

static void test_migrations(void)
{
    const char *schema = fresh_dir("schema-bad"), *dir = fresh_dir("migrate");
    char err[512] = "", path[512];
    CHECK(mkdir(schema, 0700) == 0);
    char *init = NULL;
    FILE *f = fopen(SCHEMA "/001_init.sql", "r");
    CHECK(f != NULL);
    if (!f) return;
    size_t cap = 1 << 16;
    init = calloc(1, cap);
    size_t n = fread(init, 1, cap - 1, f);
    fclose(f);
    CHECK(n > 0 && n < cap - 1);
    snprintf(path, sizeof path, "%s/001_init.sql", schema);
    write_file(path, init);
    free(init);
    snprintf(path, sizeof path, "%s/README.md", schema); /* not a migration */
    write_file(path, "ignored");

    /* 002 fails halfway: its first statement is rolled back with it */
    snprintf(path, sizeof path, "%s/002_bad.sql", schema);
    write_file(path, "CREATE TABLE half (x INTEGER);\nINSERT INTO nowhere VALUES (1);\n");
    CHECK(store_open(dir, schema, err, sizeof err) == NULL);
    CHECK_MSG(strstr(err, "002_bad.sql") && strstr(err, "no such table: nowhere"), "%s", err);
    CHECK(sql_int(dir, "PRAGMA user_version") == 1);
    CHECK(sql_int(dir, "SELECT count(*) FROM sqlite_master WHERE name = 'half'") == 0);

    /* fixed: 002 applies once */
    write_file(path, "CREATE TABLE half (x INTEGER);\nINSERT INTO half VALUES (1);\n");
    Store *s = store_open(dir, schema, err, sizeof err);
    CHECK_MSG(s != NULL, "%s", err);
    store_close(s);
    s = store_open(dir, schema, err, sizeof err);
    CHECK_MSG(s != NULL, "%s", err);
    store_close(s);
    CHECK(sql_int(dir, "PRAGMA user_version") == 2);
    CHECK(sql_int(dir, "SELECT count(*) FROM half") == 1);

    /* a database newer than the files, and two files of one version, are refused */
    CHECK(store_open(dir, SCHEMA, err, sizeof err) == NULL);
    CHECK_MSG(strstr(err, "version 2") != NULL, "%s", err);
    snprintf(path, sizeof path, "%s/002_same.sql", schema);
    write_file(path, "SELECT 1;");
    CHECK(store_open(dir, schema, err, sizeof err) == NULL);
    CHECK_MSG(strstr(err, "same version") != NULL, "%s", err);
    CHECK(store_open(dir, test_tmp_path("no-such-schema"), err, sizeof err) == NULL);
    CHECK(strstr(err, "no-such-schema") != NULL);
    rm_rf(schema);
}

typedef struct {
    Store *s;
    int calls;
    int64_t last_seen;
} NotifyProbe;

static void on_notify(void *ctx)
{
    NotifyProbe *p = ctx;
    p->calls++;
    p->last_seen = store_last_event_id(p->s); /* would deadlock if called under the lock */
}

static void test_notify(void)
{
    Store *s = open_at(fresh_dir("notify"));
    if (!s) return;
    NotifyProbe p = {.s = s};
    store_set_notify(s, on_notify, &p);
    char wid[24], err[512] = "";
    worker(s, 1, wid);
    CHECK(p.calls == 0);
    int64_t id = create(s, "x", "grpo", 0, 3);
    CHECK(p.calls == 1 && p.last_seen == store_last_event_id(s));
    json_decref(store_experiment_get(s, id));
    CHECK(lease(s, wid, 30000) == id);
    CHECK(p.calls == 2);
    CHECK(lease(s, wid, 30000) == 0); /* empty: nothing new */
    CHECK(p.calls == 2);
    int acc, dups, cancel;
    int64_t next, exp;
    const char *batch =
        "[{\"seq\": 1, \"type\": \"log\", \"data\": {\"level\": \"i\", \"message\": \"m\"}}]";
    CHECK(send(s, id, wid, batch, &acc, &dups, &next, err, sizeof err) == STORE_OK);
    CHECK(p.calls == 3);
    CHECK(send(s, id, wid, batch, &acc, &dups, &next, err, sizeof err) == STORE_OK);
    CHECK(p.calls == 3); /* only duplicates */
    CHECK(store_heartbeat(s, wid, id, 30000, NULL, &cancel, &exp, err, sizeof err) == STORE_OK);
    CHECK(p.calls == 3);
    CHECK(store_experiment_cancel(s, 999, err, sizeof err) == STORE_NOT_FOUND);
    CHECK(p.calls == 3);
    CHECK(store_complete(s, wid, id, "requeue", NULL, err, sizeof err) == STORE_OK);
    CHECK(p.calls == 4);
    store_close(s);
}

typedef struct {
    Store *s;
    int64_t token;
    int errors;
} Hammer;

/* Each thread registers a worker, creates experiments, leases them and sends events, while
 * reading them back. */
static void *hammer(void *arg)
{
    Hammer *h = arg;
    char wid[24], err[512];
    json_t *caps = json_pack("{s:s}", "name", "t");
    if (store_worker_register(h->s, h->token, caps, wid, err, sizeof err) != STORE_OK) h->errors++;
    json_decref(caps);
    json_t *cfg = config_of(1);
    for (int i = 0; i < 40; i++) {
        NewExperiment e = {.kind = "grpo", .config = cfg, .max_attempts = 3};
        int64_t id, next;
        int existed, acc, dups;
        if (store_experiment_create(h->s, &e, &id, &existed, err, sizeof err) != STORE_OK)
            h->errors++;
        json_t *x = store_experiment_get(h->s, id);
        if (!x) h->errors++;
        json_decref(x);
        json_t *l = NULL;
        StoreRc rc = store_lease(h->s, wid, HOUR_MS, &l, err, sizeof err);
        if (rc != STORE_OK) {
            h->errors += rc != STORE_EMPTY;
            continue;
        }
        int64_t got = json_integer_value(json_object_get(json_object_get(l, "experiment"), "id"));
        json_decref(l);
        json_t *ev = json_pack("[{s:i, s:s, s:{s:i, s:{s:f}}}]", "seq", 1, "type", "metrics",
                               "data", "iteration", i, "values", "loss", 1.0);
        if (store_add_events(h->s, got, wid, ev, &acc, &dups, &next, err, sizeof err) != STORE_OK ||
            acc != 1)
            h->errors++;
        json_decref(ev);
        if (store_complete(h->s, wid, got, "succeeded", NULL, err, sizeof err) != STORE_OK)
            h->errors++;
    }
    json_decref(cfg);
    return NULL;
}

static void test_threads(void)
{
    Store *s = open_at(fresh_dir("threads"));
    if (!s) return;
    enum { N = 4 };
    pthread_t t[N];
    Hammer h[N];
    for (int i = 0; i < N; i++) {
        h[i] = (Hammer){.s = s, .token = i + 1};
        pthread_create(&t[i], NULL, hammer, &h[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        CHECK(h[i].errors == 0);
    }
    json_t *c = store_counts(s);
    CHECK(int_of(c, "succeeded") + int_of(c, "queued") == N * 40);
    json_decref(c);
    store_close(s);
}

/* A child writes in a loop and reports each committed experiment through a pipe; SIGKILL at
 * ~200 ms must leave an intact database with every reported experiment and its events. */
static void test_crash_durability(void)
{
    const char *dir = fresh_dir("crash");
    int fds[2];
    CHECK(pipe(fds) == 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        char err[512], wid[24];
        Store *s = store_open(dir, SCHEMA, err, sizeof err);
        json_t *caps = json_object();
        if (!s || store_worker_register(s, 1, caps, wid, err, sizeof err) != STORE_OK) _exit(3);
        json_t *cfg = config_of(5);
        for (;;) {
            NewExperiment e = {.kind = "grpo", .config = cfg, .max_attempts = 3};
            int64_t id, got, next;
            int existed, acc, dups;
            json_t *l = NULL;
            if (store_experiment_create(s, &e, &id, &existed, err, sizeof err) != STORE_OK ||
                store_lease(s, wid, HOUR_MS, &l, err, sizeof err) != STORE_OK)
                _exit(4);
            got = json_integer_value(json_object_get(json_object_get(l, "experiment"), "id"));
            json_decref(l);
            json_t *ev = json_array();
            for (int k = 1; k <= 5; k++)
                json_array_append_new(ev, json_pack("{s:i, s:s, s:{s:i, s:{s:f, s:f}}}", "seq", k,
                                                    "type", "metrics", "data", "iteration", k,
                                                    "values", "loss", 1.0 / k, "reward", k * 0.1));
            if (got != id ||
                store_add_events(s, id, wid, ev, &acc, &dups, &next, err, sizeof err) != STORE_OK)
                _exit(5);
            json_decref(ev);
            if (write(fds[1], &id, sizeof id) != sizeof id) _exit(6);
        }
    }
    close(fds[1]);
    CHECK(pid > 0);
    if (pid <= 0) return;
    usleep(200 * 1000);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child status %d", status);
    static int64_t ids[100000];
    size_t n = 0;
    for (ssize_t r; n < 100000 && (r = read(fds[0], &ids[n], sizeof ids[0])) == sizeof ids[0];) n++;
    close(fds[0]);
    CHECK_MSG(n > 0, "the child committed nothing in 200 ms");

    char path[512];
    snprintf(path, sizeof path, "%s/chunkgrpo.db", dir);
    sqlite3 *db;
    sqlite3_stmt *q;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    CHECK(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &q, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(q) == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(q, 0), "ok"));
    sqlite3_finalize(q);
    CHECK(sqlite3_prepare_v2(db, "PRAGMA foreign_key_check", -1, &q, NULL) == SQLITE_OK);
    CHECK(sqlite3_step(q) == SQLITE_DONE);
    sqlite3_finalize(q);
    sqlite3_close(db);

    Store *s = open_at(dir);
    if (!s) return;
    int missing = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *x = store_experiment_get(s, ids[i]);
        /* created, leased, 5 metrics events and their 10 points */
        int ok = x && !strcmp(str_of(x, "status"), "running") &&
                 count_events(s, ids[i], NULL) == 7 &&
                 json_object_size(json_object_get(x, "latest")) == 2;
        json_t *m = ok ? store_metrics(s, ids[i], NULL, 0, 0, 100) : NULL;
        ok = ok && json_array_size(json_object_get(
                       json_object_get(json_object_get(m, "series"), "loss"), "value")) == 5;
        missing += !ok;
        json_decref(m);
        json_decref(x);
    }
    CHECK_MSG(missing == 0, "%d of %zu reported experiments incomplete", missing, n);
    fprintf(stderr, "  crash: %zu experiments committed before SIGKILL, all intact\n", n);
    store_close(s);
}

/* The server's needs: GET /experiments/{id} at >10,000/s on 2 cores and >20,000 metric points/s
 * ingested. Printed always; enforced (single thread, with margin) outside sanitizer builds. */
static void test_throughput(void)
{
    Store *s = open_at(fresh_dir("speed"));
    if (!s) return;
    char wid[24], err[512] = "";
    worker(s, 1, wid);
    /* a config the size of a real grpo one (~60 fields) */
    json_t *cfg = config_of(1);
    for (int i = 0; i < 60; i++) {
        char key[32];
        snprintf(key, sizeof key, "field_%02d", i);
        json_object_set_new(cfg, key, i % 2 ? json_real(i * 0.001) : json_string("some-value"));
    }
    NewExperiment e = {.kind = "grpo", .config = cfg, .max_attempts = 3};
    int64_t id;
    int existed;
    CHECK(store_experiment_create(s, &e, &id, &existed, err, sizeof err) == STORE_OK);
    json_decref(cfg);
    CHECK(lease(s, wid, HOUR_MS) == id);

    /* 100 batches of 100 events x 20 values */
    json_t *batches[100];
    for (int b = 0; b < 100; b++) {
        batches[b] = json_array();
        for (int k = 0; k < 100; k++) {
            json_t *values = json_object();
            for (int v = 0; v < 20; v++) {
                char key[16];
                snprintf(key, sizeof key, "metric_%02d", v);
                json_object_set_new(values, key, json_real((b * 100 + k) * 0.01 + v));
            }
            json_array_append_new(batches[b],
                                  json_pack("{s:i, s:s, s:{s:i, s:o}}", "seq", b * 100 + k + 1,
                                            "type", "metrics", "data", "iteration", b * 100 + k,
                                            "values", values));
        }
    }
    double t0 = mono_s();
    for (int b = 0; b < 100; b++) {
        int acc, dups;
        int64_t next;
        CHECK(store_add_events(s, id, wid, batches[b], &acc, &dups, &next, err, sizeof err) ==
              STORE_OK);
        json_decref(batches[b]);
    }
    double points_s = 200000 / (mono_s() - t0);

    int gets = 20000;
    t0 = mono_s();
    for (int i = 0; i < gets; i++) json_decref(store_experiment_get(s, id));
    double gets_s = gets / (mono_s() - t0);

    t0 = mono_s();
    json_t *m = store_metrics(s, id, NULL, 0, 0, 2000);
    double metrics_ms = (mono_s() - t0) * 1000;
    CHECK(json_object_size(json_object_get(m, "series")) == 20);
    json_decref(m);
    fprintf(stderr,
            "  throughput: %.0f metric points/s ingested, %.0f experiment gets/s (one thread), "
            "all 200,000 points downsampled in %.1f ms\n",
            points_s, gets_s, metrics_ms);
    if (!SANITIZED) {
        CHECK_MSG(points_s > 40000, "%.0f points/s", points_s);
        CHECK_MSG(gets_s > 20000, "%.0f gets/s", gets_s);
    }
    store_close(s);
}

int main(void)
{
    if (!exists(SCHEMA "/001_init.sql")) {
        fprintf(stderr, "run from the repository root (no " SCHEMA "/001_init.sql here)\n");
        return 2;
    }
    test_tmpdir_create();
    TEST_RUN(test_create_get_list);
    TEST_RUN(test_idempotency);
    TEST_RUN(test_queue_order);
    TEST_RUN(test_lease_heartbeat_complete);
    TEST_RUN(test_cancel);
    TEST_RUN(test_retry);
    TEST_RUN(test_expiry);
    TEST_RUN(test_events);
    TEST_RUN(test_events_after);
    TEST_RUN(test_metrics_downsampling);
    TEST_RUN(test_artifacts);
    TEST_RUN(test_delete);
    TEST_RUN(test_tokens);
    TEST_RUN(test_workers_and_counts);
    TEST_RUN(test_reopen);
    TEST_RUN(test_migrations);
    TEST_RUN(test_notify);
    TEST_RUN(test_threads);
    TEST_RUN(test_crash_durability);
    TEST_RUN(test_throughput);
    rm_rf(test_tmpdir);
    return test_summary("server_store");
}
