/*
 * store.c: the control server's database on SQLite. See store.h for the contract and
 * schema/001_init.sql for the tables.
 *
 * One connection (opened NOMUTEX) behind s->mu. Every statement is prepared once at open with
 * SQLITE_PREPARE_PERSISTENT into s->stmt[] and reset right after each use, so no statement keeps
 * a read transaction open (which would pin the WAL). Every state change runs in BEGIN IMMEDIATE
 * ... COMMIT (tx_begin / tx_end), and the notify callback runs after the commit, outside the lock
 * (unlock). Status changes are C code over an ExpState: exp_load, change the fields, exp_save,
 * which writes the row and adds the status event.
 */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- the statements ---- */

/* An experiment row as exp_json reads it; column 7 is the config (NULL in lists). */
#define EXP_HEAD                                                                                   \
    "SELECT id, COALESCE(name, kind || '-' || id), kind, status, priority, attempts, "             \
    "max_attempts, "
#define EXP_TAIL                                                                                   \
    ", created_at, started_at, finished_at, error, worker_id, cancel_requested, parent_id, "       \
    "progress, latest FROM experiments "
#define ART_COLS "SELECT name, content_type, size, sha256, iteration, created_at FROM artifacts "

enum {
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_EXP_GET,
    ST_EXP_LIST, /* ST_EXP_LIST + (status ? 1 : 0) + (kind ? 2 : 0) */
    ST_EXP_LIST_STATUS,
    ST_EXP_LIST_KIND,
    ST_EXP_LIST_BOTH,
    ST_EXP_BY_KEY,
    ST_EXP_INSERT,
    ST_EXP_STATE,
    ST_EXP_SAVE,
    ST_EXP_CANCEL_REQUEST,
    ST_EXP_DELETE,
    ST_EXP_LATEST,
    ST_EXP_SET_LATEST,
    ST_EXP_SET_PROGRESS,
    ST_QUEUE_HEAD,
    ST_EXPIRED,
    ST_HEARTBEAT,
    ST_EVENT_INSERT,
    ST_NEXT_SEQ,
    ST_EVENTS_AFTER,
    ST_EVENTS_AFTER_EXP,
    ST_LAST_EVENT,
    ST_EXP_LAST_EVENT,
    ST_POINT_INSERT,
    ST_POINTS_KEY,
    ST_POINTS_ALL,
    ST_LOGS,
    ST_ARTIFACT_UPSERT,
    ST_ARTIFACTS,
    ST_ARTIFACT_GET,
    ST_CHECKPOINT,
    ST_CHECKPOINT_FILES,
    ST_CHECKPOINT_FORGET,
    ST_WORKER_INSERT,
    ST_WORKER_SEEN,
    ST_WORKERS,
    ST_WORKER_OWNED,
    ST_TOKEN_INSERT,
    ST_TOKEN_LOOKUP,
    ST_TOKENS,
    ST_TOKEN_REVOKE,
    ST_TOKEN_COUNT,
    ST_STATUS_COUNTS,
    ST_WORKER_COUNTS,
    ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_EXP_GET] = EXP_HEAD "config" EXP_TAIL "WHERE id = ?1",
    /* ?1 below this id, ?2 status, ?3 kind, ?4 limit; one statement per filter so that each
     * uses its index */
    [ST_EXP_LIST] = EXP_HEAD "NULL" EXP_TAIL "WHERE id < ?1 ORDER BY id DESC LIMIT ?4",
    [ST_EXP_LIST_STATUS] =
        EXP_HEAD "NULL" EXP_TAIL "WHERE status = ?2 AND id < ?1 ORDER BY id DESC LIMIT ?4",
    [ST_EXP_LIST_KIND] =
        EXP_HEAD "NULL" EXP_TAIL "WHERE kind = ?3 AND id < ?1 ORDER BY id DESC LIMIT ?4",
    [ST_EXP_LIST_BOTH] = EXP_HEAD
    "NULL" EXP_TAIL "WHERE status = ?2 AND kind = ?3 AND id < ?1 ORDER BY id DESC LIMIT ?4",
    [ST_EXP_BY_KEY] = "SELECT id, name, config, priority, max_attempts, parent_id FROM experiments "
                      "WHERE idempotency_key = ?1",
    [ST_EXP_INSERT] =
        "INSERT INTO experiments (name, kind, status, priority, max_attempts, config, "
        "created_at, idempotency_key, parent_id) "
        "VALUES (?1, ?2, 'queued', ?3, ?4, ?5, ?6, ?7, ?8)",
    [ST_EXP_STATE] = "SELECT status, attempts, max_attempts, worker_id, lease_expires_at, "
                     "started_at, finished_at, cancel_requested FROM experiments WHERE id = ?1",
    [ST_EXP_SAVE] = "UPDATE experiments SET status = ?2, attempts = ?3, worker_id = ?4, "
                    "lease_expires_at = ?5, started_at = ?6, finished_at = ?7, "
                    "cancel_requested = ?8, error = ?9 WHERE id = ?1",
    [ST_EXP_CANCEL_REQUEST] = "UPDATE experiments SET cancel_requested = 1 WHERE id = ?1",
    [ST_EXP_DELETE] = "DELETE FROM experiments WHERE id = ?1",
    [ST_EXP_LATEST] = "SELECT latest FROM experiments WHERE id = ?1",
    [ST_EXP_SET_LATEST] = "UPDATE experiments SET latest = ?2 WHERE id = ?1",
    [ST_EXP_SET_PROGRESS] = "UPDATE experiments SET progress = ?2 WHERE id = ?1",
    [ST_QUEUE_HEAD] =
        "SELECT id FROM experiments WHERE status = 'queued' ORDER BY priority DESC, id LIMIT 1",
    [ST_EXPIRED] = "SELECT id FROM experiments WHERE status = 'running' AND lease_expires_at < ?1 "
                   "ORDER BY id",
    [ST_HEARTBEAT] = "UPDATE experiments SET lease_expires_at = ?3, progress = COALESCE(?4, "
                     "progress) WHERE id = ?1 AND status = 'running' AND worker_id = ?2 "
                     "RETURNING cancel_requested",
    [ST_EVENT_INSERT] = "INSERT INTO events (experiment_id, worker_seq, type, ts, data) "
                        "VALUES (?1, ?2, ?3, ?4, ?5) "
                        "ON CONFLICT (experiment_id, worker_seq) DO NOTHING",
    [ST_NEXT_SEQ] = "SELECT COALESCE(MAX(worker_seq), 0) + 1 FROM events WHERE experiment_id = ?1",
    [ST_EVENTS_AFTER] = "SELECT id, experiment_id, type, ts, data FROM events WHERE id > ?2 "
                        "ORDER BY id LIMIT ?3",
    [ST_EVENTS_AFTER_EXP] = "SELECT id, experiment_id, type, ts, data FROM events "
                            "WHERE experiment_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    [ST_LAST_EVENT] = "SELECT COALESCE(MAX(id), 0) FROM events",
    [ST_EXP_LAST_EVENT] = "SELECT COALESCE(MAX(id), 0) FROM events WHERE experiment_id = ?1",
    [ST_POINT_INSERT] =
        "INSERT INTO metric_points (experiment_id, event_id, key, iteration, value) "
        "VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_POINTS_KEY] = "SELECT key, iteration, value FROM metric_points WHERE experiment_id = ?1 "
                      "AND key = ?3 AND event_id > ?2 ORDER BY iteration, event_id",
    [ST_POINTS_ALL] = "SELECT key, iteration, value FROM metric_points WHERE experiment_id = ?1 "
                      "AND event_id > ?2 ORDER BY key, iteration, event_id",
    [ST_LOGS] = "SELECT id, ts, data FROM events WHERE experiment_id = ?1 AND type = 'log' "
                "AND id > ?2 ORDER BY id LIMIT ?3",
    [ST_ARTIFACT_UPSERT] =
        "INSERT INTO artifacts (experiment_id, name, content_type, size, sha256, iteration, "
        "created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (experiment_id, name) DO "
        "UPDATE SET content_type = excluded.content_type, size = excluded.size, sha256 = "
        "excluded.sha256, iteration = excluded.iteration, created_at = excluded.created_at",
    [ST_ARTIFACTS] = ART_COLS "WHERE experiment_id = ?1 ORDER BY name",
    [ST_ARTIFACT_GET] = ART_COLS "WHERE experiment_id = ?1 AND name = ?2",
    /* the range is the prefix "checkpoints/" in a form the (experiment_id, name) index serves
     * ('0' follows '/') */
    [ST_CHECKPOINT] = ART_COLS "WHERE experiment_id = ?1 AND name >= 'checkpoints/' AND "
                               "name < 'checkpoints0' ORDER BY created_at DESC, id DESC LIMIT 1",
    [ST_CHECKPOINT_FILES] = "SELECT name FROM artifacts WHERE experiment_id = ?1 AND name >= "
                            "'checkpoints/' AND name < 'checkpoints0' ORDER BY name DESC",
    [ST_CHECKPOINT_FORGET] = "DELETE FROM artifacts WHERE experiment_id = ?1 AND name = ?2",
    [ST_WORKER_INSERT] = "INSERT INTO workers (id, token_id, name, backend, device, version, "
                         "memory_mb, threads, registered_at, last_seen_at) "
                         "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)",
    [ST_WORKER_SEEN] = "UPDATE workers SET last_seen_at = ?2 WHERE id = ?1",
    [ST_WORKERS] = "SELECT w.id, w.name, w.backend, w.device, w.memory_mb, w.threads, "
                   "w.registered_at, w.last_seen_at, (SELECT e.id FROM experiments e WHERE "
                   "e.status = 'running' AND e.worker_id = w.id ORDER BY e.id LIMIT 1) "
                   "FROM workers w ORDER BY w.last_seen_at DESC, w.id",
    [ST_WORKER_OWNED] = "SELECT 1 FROM workers WHERE id = ?1 AND token_id = ?2",
    [ST_TOKEN_INSERT] = "INSERT INTO tokens (name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
    [ST_TOKEN_LOOKUP] = "SELECT id, role FROM tokens WHERE hash = ?1 AND revoked_at IS NULL",
    [ST_TOKENS] = "SELECT id, name, role, created_at, revoked_at IS NOT NULL FROM tokens "
                  "ORDER BY id",
    [ST_TOKEN_REVOKE] = "UPDATE tokens SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
    [ST_TOKEN_COUNT] = "SELECT count(*) FROM tokens WHERE revoked_at IS NULL",
    [ST_STATUS_COUNTS] = "SELECT status, count(*) FROM experiments GROUP BY status",
    [ST_WORKER_COUNTS] = "SELECT count(*), COALESCE(SUM(last_seen_at >= ?1), 0) FROM workers",
};

/* The JSON columns of an experiment (config, progress, latest) as last parsed, in slots
 * direct-mapped by id. A slot is used while its column's text is unchanged: copying a parsed
 * value costs a fraction of parsing it again, and GET /experiments/{id} is the hot path. */
#define JSON_CACHE 256

typedef struct {
    char *text; /* the column's text (not NUL-terminated) */
    size_t len;
    json_t *value;
} ParsedText;

struct Store {
    pthread_mutex_t mu;
    sqlite3 *db;
    sqlite3_stmt *stmt[ST_COUNT];
    char *data_dir;
    void (*notify)(void *ctx);
    void *notify_ctx;
    int notify_pending;              /* the open transaction added events */
    ParsedText cache[JSON_CACHE][3]; /* config, progress, latest */
};

/* ---- small helpers ---- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void format_time(int64_t ms, char out[STORE_TIME_LEN])
{
    int64_t sec = ms / 1000, frac = ms % 1000;
    if (frac < 0) { /* floor division for times before 1970 */
        frac += 1000;
        sec--;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, STORE_TIME_LEN, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)frac);
}

/* Reads n digits at *p into *v. */
static int digits(const char **p, int n, int *v)
{
    *v = 0;
    for (int i = 0; i < n; i++, (*p)++) {
        if (**p < '0' || **p > '9') return -1;
        *v = *v * 10 + (**p - '0');
    }
    return 0;
}

/* An RFC 3339 time ("2026-11-27T05:08:38.123Z", "2026-11-27T06:08:38+01:00") as unix ms. */
static int parse_time(const char *s, int64_t *ms)
{
    static const int width[6] = {4, 2, 2, 2, 2, 2};
    static const char sep[5] = {'-', '-', 'T', ':', ':'};
    int f[6];
    for (int i = 0; i < 6; i++) {
        if (digits(&s, width[i], &f[i])) return -1;
        if (i == 5) break;
        char c = *s++;
        if (c != sep[i] && !(sep[i] == 'T' && c == 't')) return -1;
    }
    if (f[1] < 1 || f[1] > 12 || f[2] < 1 || f[2] > 31 || f[3] > 23 || f[4] > 59 || f[5] > 60)
        return -1;
    int frac = 0;
    if (*s == '.') {
        int scale = 100;
        if (s[1] < '0' || s[1] > '9') return -1;
        for (s++; *s >= '0' && *s <= '9'; s++, scale /= 10) frac += (*s - '0') * scale;
    }
    int offset_min = 0;
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        int sign = *s++ == '-' ? -1 : 1, oh, om;
        if (digits(&s, 2, &oh) || *s++ != ':' || digits(&s, 2, &om) || oh > 23 || om > 59)
            return -1;
        offset_min = sign * (oh * 60 + om);
    } else {
        return -1;
    }
    if (*s) return -1;
    struct tm tm = {.tm_year = f[0] - 1900,
                    .tm_mon = f[1] - 1,
                    .tm_mday = f[2],
                    .tm_hour = f[3],
                    .tm_min = f[4],
                    .tm_sec = f[5]};
    *ms = ((int64_t)timegm(&tm) - offset_min * 60) * 1000 + frac;
    return 0;
}

static int is_terminal(const char *status)
{
    return !strcmp(status, "succeeded") || !strcmp(status, "failed") || !strcmp(status, "canceled");
}

/* mkdir -p with mode 0700 for the folders it makes. */
static int mkdir_p(const char *path)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0700) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    return mkdir(buf, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* rm -rf; a missing path is no error. */
static int remove_tree(const char *path)
{
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) == 0) return 0;
    return errno == ENOENT ? 0 : -1;
}

/* A whole file, NUL-terminated (malloc'ed), or NULL with errno set. */
static char *read_file(const char *path)
{
    errno = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)n + 1)) &&
        fread(buf, 1, (size_t)n, f) == (size_t)n) {
        buf[n] = 0;
    } else {
        free(buf);
        buf = NULL;
    }
    int e = errno ? errno : EIO;
    fclose(f);
    if (!buf) errno = e;
    return buf;
}

/* ---- SQLite helpers ---- */

static void done(sqlite3_stmt *q)
{
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
}

static StoreRc db_err(Store *s, char *err, size_t errlen)
{
    set_err(err, errlen, "database: %s", sqlite3_errmsg(s->db));
    return STORE_ERROR;
}

/* Steps q to its end (rows are ignored) and resets it. */
static StoreRc run(Store *s, sqlite3_stmt *q, char *err, size_t errlen)
{
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) continue;
    StoreRc out = rc == SQLITE_DONE ? STORE_OK : db_err(s, err, errlen);
    done(q);
    return out;
}

/* Steps q once: 1 on a row (the caller reads it, then calls done), 0 when there is none (q is
 * reset), -1 on an error (err filled, q reset). */
static int step_row(Store *s, sqlite3_stmt *q, char *err, size_t errlen)
{
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) return 1;
    if (rc != SQLITE_DONE) db_err(s, err, errlen);
    done(q);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void bind_text(sqlite3_stmt *q, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(q, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(q, i);
}

/* 0 binds NULL: the columns where 0 means "none". */
static void bind_opt(sqlite3_stmt *q, int i, int64_t v)
{
    if (v)
        sqlite3_bind_int64(q, i, v);
    else
        sqlite3_bind_null(q, i);
}

static int is_null(sqlite3_stmt *q, int c)
{
    return sqlite3_column_type(q, c) == SQLITE_NULL;
}

static json_t *col_text(sqlite3_stmt *q, int c)
{
    return is_null(q, c) ? json_null() : json_string((const char *)sqlite3_column_text(q, c));
}

static json_t *col_int(sqlite3_stmt *q, int c)
{
    return is_null(q, c) ? json_null() : json_integer(sqlite3_column_int64(q, c));
}

static json_t *col_time(sqlite3_stmt *q, int c)
{
    if (is_null(q, c)) return json_null();
    char buf[STORE_TIME_LEN];
    format_time(sqlite3_column_int64(q, c), buf);
    return json_string(buf);
}

/* A JSON text column, parsed (null when NULL). */
static json_t *col_json(sqlite3_stmt *q, int c)
{
    if (is_null(q, c)) return json_null();
    json_t *v = json_loadb((const char *)sqlite3_column_blob(q, c),
                           (size_t)sqlite3_column_bytes(q, c), JSON_DECODE_ANY, NULL);
    return v ? v : json_null();
}

static void lock(Store *s)
{
    pthread_mutex_lock(&s->mu);
}

/* Unlocks, then calls the notify callback when the transaction just committed added events. */
static void unlock(Store *s)
{
    void (*fn)(void *) = s->notify_pending ? s->notify : NULL;
    void *ctx = s->notify_ctx;
    s->notify_pending = 0;
    pthread_mutex_unlock(&s->mu);
    if (fn) fn(ctx);
}

static StoreRc tx_begin(Store *s, char *err, size_t errlen)
{
    return run(s, s->stmt[ST_BEGIN], err, errlen);
}

/* Ends the transaction tx_begin opened: COMMIT when rc is STORE_OK or STORE_EMPTY (nothing was
 * refused), else ROLLBACK. Returns rc, or STORE_ERROR when the commit failed. */
static StoreRc tx_end(Store *s, StoreRc rc, char *err, size_t errlen)
{
    if (rc == STORE_OK || rc == STORE_EMPTY) {
        StoreRc c = run(s, s->stmt[ST_COMMIT], err, errlen);
        if (c == STORE_OK) return rc;
        rc = c;
    }
    if (!sqlite3_get_autocommit(s->db)) { /* SQLite may have rolled back already */
        sqlite3_step(s->stmt[ST_ROLLBACK]);
        done(s->stmt[ST_ROLLBACK]);
    }
    s->notify_pending = 0;
    return rc;
}

/* ---- open, migrations, close ---- */

typedef struct {
    long version;
    char name[256];
} Migration;

static int migration_cmp(const void *a, const void *b)
{
    long x = ((const Migration *)a)->version, y = ((const Migration *)b)->version;
    return (x > y) - (x < y);
}

/* NNN_name.sql: the version NNN, or -1 for any other name. */
static long migration_version(const char *name)
{
    size_t nd = strspn(name, "0123456789"), len = strlen(name);
    if (nd == 0 || nd > 9 || name[nd] != '_' || len < 4 || strcmp(name + len - 4, ".sql") != 0)
        return -1;
    return strtol(name, NULL, 10);
}

static int pragma_int(sqlite3 *db, const char *sql, long *v)
{
    sqlite3_stmt *q;
    if (sqlite3_prepare_v2(db, sql, -1, &q, NULL) != SQLITE_OK) return -1;
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) *v = sqlite3_column_int(q, 0);
    sqlite3_finalize(q);
    return rc == SQLITE_ROW ? 0 : -1;
}

/* One migration file in one transaction with its user_version. */
static int migration_apply(sqlite3 *db, const char *path, long version, char *err, size_t errlen)
{
    char *sql = read_file(path);
    if (!sql) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    char pragma[64], *msg = NULL;
    snprintf(pragma, sizeof pragma, "PRAGMA user_version = %ld", version);
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, &msg);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, pragma, NULL, NULL, &msg);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, "COMMIT", NULL, NULL, &msg);
    free(sql);
    if (rc == SQLITE_OK) return 0;
    set_err(err, errlen, "%s: %s", path, msg ? msg : sqlite3_errmsg(db));
    sqlite3_free(msg);
    if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return -1;
}

/* Applies schema_dir's NNN_name.sql files newer than the database's user_version, in order. */
static int migrate(Store *s, const char *dir, char *err, size_t errlen)
{
    DIR *d = opendir(dir);
    if (!d) {
        set_err(err, errlen, "schema folder %s: %s", dir, strerror(errno));
        return -1;
    }
    Migration *m = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (struct dirent *de; (de = readdir(d));) {
        long v = migration_version(de->d_name);
        if (v < 0) continue;
        if (strlen(de->d_name) >= sizeof m->name) {
            set_err(err, errlen, "%s/%s: name too long", dir, de->d_name);
            rc = -1;
            break;
        }
        if (n == cap) {
            Migration *bigger = realloc(m, (cap = cap ? 2 * cap : 8) * sizeof *m);
            if (!bigger) {
                set_err(err, errlen, "out of memory");
                rc = -1;
                break;
            }
            m = bigger;
        }
        m[n].version = v;
        strcpy(m[n++].name, de->d_name);
    }
    closedir(d);
    if (rc == 0 && n == 0) {
        set_err(err, errlen, "schema folder %s: no NNN_name.sql files", dir);
        rc = -1;
    }
    if (rc == 0) qsort(m, n, sizeof *m, migration_cmp);
    for (size_t i = 1; rc == 0 && i < n; i++)
        if (m[i].version == m[i - 1].version) {
            set_err(err, errlen, "%s: %s and %s have the same version", dir, m[i - 1].name,
                    m[i].name);
            rc = -1;
        }
    long current = 0;
    if (rc == 0 && pragma_int(s->db, "PRAGMA user_version", &current)) rc = db_err(s, err, errlen);
    if (rc == 0 && current > m[n - 1].version) {
        set_err(err, errlen, "the database is at schema version %ld, newer than %s/%s", current,
                dir, m[n - 1].name);
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (m[i].version <= current) continue;
        char path[PATH_MAX + 256];
        snprintf(path, sizeof path, "%s/%s", dir, m[i].name);
        rc = migration_apply(s->db, path, m[i].version, err, errlen);
    }
    free(m);
    return rc;
}

Store *store_open(const char *data_dir, const char *schema_dir, char *err, size_t errlen)
{
    Store *s = calloc(1, sizeof *s);
    if (!s || !(s->data_dir = strdup(data_dir))) {
        free(s);
        set_err(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    char path[PATH_MAX + 32];
    snprintf(path, sizeof path, "%s/artifacts", data_dir);
    if (mkdir_p(path) != 0) {
        set_err(err, errlen, "%s: %s", path, strerror(errno));
        goto fail;
    }
    snprintf(path, sizeof path, "%s/chunkgrpo.db", data_dir);
    if (sqlite3_open_v2(path, &s->db,
                        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK) {
        set_err(err, errlen, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 5000);
    /* pragmas outside any transaction: foreign_keys is a silent no-op inside one */
    char *msg = NULL;
    if (sqlite3_exec(s->db,
                     "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; "
                     "PRAGMA foreign_keys = ON",
                     NULL, NULL, &msg) != SQLITE_OK) {
        set_err(err, errlen, "%s: %s", path, msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        goto fail;
    }
    if (migrate(s, schema_dir, err, errlen)) goto fail;
    for (int i = 0; i < ST_COUNT; i++)
        if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i],
                               NULL) != SQLITE_OK) {
            set_err(err, errlen, "preparing \"%.60s\": %s", stmt_sql[i], sqlite3_errmsg(s->db));
            goto fail;
        }
    return s;
fail:
    store_close(s);
    return NULL;
}

void store_close(Store *s)
{
    if (!s) return;
    for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(s->stmt[i]);
    for (int i = 0; i < JSON_CACHE; i++)
        for (int k = 0; k < 3; k++) {
            free(s->cache[i][k].text);
            json_decref(s->cache[i][k].value);
        }
    sqlite3_close(s->db);
    pthread_mutex_destroy(&s->mu);
    free(s->data_dir);
    free(s);
}

const char *store_data_dir(const Store *s)
{
    return s->data_dir;
}

void store_set_notify(Store *s, void (*fn)(void *ctx), void *ctx)
{
    pthread_mutex_lock(&s->mu);
    s->notify = fn;
    s->notify_ctx = ctx;
    pthread_mutex_unlock(&s->mu);
}

/* ---- experiment state and events ---- */

typedef struct {
    int64_t id;
    char status[16];
    int64_t attempts, max_attempts;
    char worker_id[32];              /* "" = none */
    int64_t lease_expires_at;        /* 0 = none */
    int64_t started_at, finished_at; /* 0 = none */
    int cancel_requested;
} ExpState;

/* STORE_NOT_FOUND (with a message) when experiment id does not exist. */
static StoreRc exp_load(Store *s, int64_t id, ExpState *st, char *err, size_t errlen)
{
    sqlite3_stmt *q = s->stmt[ST_EXP_STATE];
    sqlite3_bind_int64(q, 1, id);
    int r = step_row(s, q, err, errlen);
    if (r <= 0) {
        if (r == 0) set_err(err, errlen, "experiment %lld does not exist", (long long)id);
        return r == 0 ? STORE_NOT_FOUND : STORE_ERROR;
    }
    memset(st, 0, sizeof *st);
    st->id = id;
    snprintf(st->status, sizeof st->status, "%s", (const char *)sqlite3_column_text(q, 0));
    st->attempts = sqlite3_column_int64(q, 1);
    st->max_attempts = sqlite3_column_int64(q, 2);
    if (!is_null(q, 3))
        snprintf(st->worker_id, sizeof st->worker_id, "%s",
                 (const char *)sqlite3_column_text(q, 3));
    st->lease_expires_at = sqlite3_column_int64(q, 4);
    st->started_at = sqlite3_column_int64(q, 5);
    st->finished_at = sqlite3_column_int64(q, 6);
    st->cancel_requested = sqlite3_column_int(q, 7);
    done(q);
    return STORE_OK;
}

/* Adds an event (data: JSON text) to experiment id; seq 0 is a server event, with no worker
 * seq. *event_id = 0 when the worker seq was already stored. */
static StoreRc event_insert(Store *s, int64_t id, int64_t seq, const char *type, int64_t ts,
                            const char *data_text, int64_t *event_id, char *err, size_t errlen)
{
    sqlite3_stmt *q = s->stmt[ST_EVENT_INSERT];
    sqlite3_bind_int64(q, 1, id);
    bind_opt(q, 2, seq);
    sqlite3_bind_text(q, 3, type, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, ts);
    sqlite3_bind_text(q, 5, data_text, -1, SQLITE_STATIC);
    StoreRc rc = run(s, q, err, errlen);
    *event_id = rc == STORE_OK && sqlite3_changes(s->db) ? sqlite3_last_insert_rowid(s->db) : 0;
    if (*event_id) s->notify_pending = 1;
    return rc;
}

/* A server event of experiment id; takes ownership of data. */
static StoreRc event_add(Store *s, int64_t id, const char *type, int64_t ts, json_t *data,
                         char *err, size_t errlen)
{
    char *text = json_dumps(data, JSON_COMPACT);
    json_decref(data);
    if (!text) {
        set_err(err, errlen, "out of memory");
        return STORE_ERROR;
    }
    int64_t event_id;
    StoreRc rc = event_insert(s, id, 0, type, ts, text, &event_id, err, errlen);
    free(text);
    return rc;
}

/* Writes st to its row, with error as the experiment's error, and adds the status event. */
static StoreRc exp_save(Store *s, const ExpState *st, const char *error, int64_t now, char *err,
                        size_t errlen)
{
    sqlite3_stmt *q = s->stmt[ST_EXP_SAVE];
    sqlite3_bind_int64(q, 1, st->id);
    sqlite3_bind_text(q, 2, st->status, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, st->attempts);
    bind_text(q, 4, st->worker_id[0] ? st->worker_id : NULL);
    bind_opt(q, 5, st->lease_expires_at);
    bind_opt(q, 6, st->started_at);
    bind_opt(q, 7, st->finished_at);
    sqlite3_bind_int(q, 8, st->cancel_requested);
    bind_text(q, 9, error);
    StoreRc rc = run(s, q, err, errlen);
    if (rc != STORE_OK) return rc;
    json_t *data =
        json_pack("{s:s, s:I}", "status", st->status, "attempts", (json_int_t)st->attempts);
    if (error) json_object_set_new(data, "error", json_string(error));
    return event_add(s, st->id, "status", now, data, err, errlen);
}

static void set_queued(ExpState *st)
{
    snprintf(st->status, sizeof st->status, "queued");
    st->worker_id[0] = 0;
    st->lease_expires_at = 0;
    st->finished_at = 0;
}

static void set_finished(ExpState *st, const char *status, int64_t now)
{
    snprintf(st->status, sizeof st->status, "%s", status);
    st->lease_expires_at = 0;
    st->finished_at = now;
}

/* Column c of q as JSON (null when NULL), through the cache slot p. */
static json_t *cached_json(ParsedText *p, sqlite3_stmt *q, int c)
{
    if (is_null(q, c)) return json_null();
    const void *text = sqlite3_column_blob(q, c);
    size_t len = (size_t)sqlite3_column_bytes(q, c);
    if (!p->value || p->len != len || memcmp(p->text, text, len) != 0) {
        char *copy = malloc(len ? len : 1);
        if (!copy) return col_json(q, c);
        memcpy(copy, text, len);
        free(p->text);
        json_decref(p->value);
        p->text = copy;
        p->len = len;
        p->value = col_json(q, c);
    }
    return json_deep_copy(p->value);
}

/* The experiment row q is on, as docs/api.md shapes it (config only when with_config). */
static json_t *exp_json(Store *s, sqlite3_stmt *q, int with_config)
{
    ParsedText *slot = s->cache[(uint64_t)sqlite3_column_int64(q, 0) % JSON_CACHE];
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer(sqlite3_column_int64(q, 0)));
    json_object_set_new(o, "name", col_text(q, 1));
    json_object_set_new(o, "kind", col_text(q, 2));
    json_object_set_new(o, "status", col_text(q, 3));
    json_object_set_new(o, "priority", json_integer(sqlite3_column_int64(q, 4)));
    json_object_set_new(o, "attempts", json_integer(sqlite3_column_int64(q, 5)));
    json_object_set_new(o, "max_attempts", json_integer(sqlite3_column_int64(q, 6)));
    if (with_config) json_object_set_new(o, "config", cached_json(&slot[0], q, 7));
    json_object_set_new(o, "created_at", col_time(q, 8));
    json_object_set_new(o, "started_at", col_time(q, 9));
    json_object_set_new(o, "finished_at", col_time(q, 10));
    json_object_set_new(o, "error", col_text(q, 11));
    json_object_set_new(o, "worker_id", col_text(q, 12));
    json_object_set_new(o, "cancel_requested", json_boolean(sqlite3_column_int(q, 13)));
    json_object_set_new(o, "parent_id", col_int(q, 14));
    json_object_set_new(o, "progress", cached_json(&slot[1], q, 15));
    json_object_set_new(o, "latest", cached_json(&slot[2], q, 16));
    return o;
}

/* With the lock held. */
static json_t *exp_get_locked(Store *s, int64_t id)
{
    sqlite3_stmt *q = s->stmt[ST_EXP_GET];
    sqlite3_bind_int64(q, 1, id);
    if (step_row(s, q, NULL, 0) != 1) return NULL;
    json_t *x = exp_json(s, q, 1);
    done(q);
    return x;
}

/* A single-integer query on experiment id (next_seq, last event), or fallback when it fails. */
static int64_t query_int(Store *s, int stmt, int64_t id, int64_t fallback)
{
    sqlite3_stmt *q = s->stmt[stmt];
    if (id) sqlite3_bind_int64(q, 1, id);
    if (step_row(s, q, NULL, 0) != 1) return fallback;
    int64_t v = sqlite3_column_int64(q, 0);
    done(q);
    return v;
}

/* ---- experiments ---- */

static StoreRc create_tx(Store *s, const NewExperiment *e, const char *config_text, int64_t *id,
                         int *existed, char *err, size_t errlen)
{
    if (e->idempotency_key) {
        sqlite3_stmt *q = s->stmt[ST_EXP_BY_KEY];
        sqlite3_bind_text(q, 1, e->idempotency_key, -1, SQLITE_STATIC);
        int r = step_row(s, q, err, errlen);
        if (r < 0) return STORE_ERROR;
        if (r == 1) {
            const char *name = (const char *)sqlite3_column_text(q, 1);
            int same = (name ? e->name && !strcmp(name, e->name) : !e->name) &&
                       !strcmp((const char *)sqlite3_column_text(q, 2), config_text) &&
                       sqlite3_column_int(q, 3) == e->priority &&
                       sqlite3_column_int(q, 4) == e->max_attempts &&
                       sqlite3_column_int64(q, 5) == e->parent_id;
            *id = sqlite3_column_int64(q, 0);
            done(q);
            if (!same) {
                set_err(err, errlen,
                        "Idempotency-Key already used by experiment %lld (another body)",
                        (long long)*id);
                return STORE_CONFLICT;
            }
            *existed = 1;
            return STORE_OK;
        }
    }
    int64_t now = now_ms();
    sqlite3_stmt *q = s->stmt[ST_EXP_INSERT];
    bind_text(q, 1, e->name);
    sqlite3_bind_text(q, 2, e->kind, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 3, e->priority);
    sqlite3_bind_int(q, 4, e->max_attempts);
    sqlite3_bind_text(q, 5, config_text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 6, now);
    bind_text(q, 7, e->idempotency_key);
    bind_opt(q, 8, e->parent_id);
    StoreRc rc = run(s, q, err, errlen);
    if (rc != STORE_OK) return rc;
    *id = sqlite3_last_insert_rowid(s->db);
    return event_add(s, *id, "status", now,
                     json_pack("{s:s, s:i}", "status", "queued", "attempts", 0), err, errlen);
}

StoreRc store_experiment_create(Store *s, const NewExperiment *e, int64_t *id, int *existed,
                                char *err, size_t errlen)
{
    *existed = 0;
    *id = 0;
    if (!e->kind || !*e->kind) {
        set_err(err, errlen, "kind: required");
        return STORE_INVALID;
    }
    if (!json_is_object(e->config)) {
        set_err(err, errlen, "config: expected an object");
        return STORE_INVALID;
    }
    if (e->max_attempts < 1) {
        set_err(err, errlen, "max_attempts: expected at least 1");
        return STORE_INVALID;
    }
    /* sorted keys: the idempotency check compares the text */
    char *config_text = json_dumps(e->config, JSON_COMPACT | JSON_SORT_KEYS);
    if (!config_text) {
        set_err(err, errlen, "out of memory");
        return STORE_ERROR;
    }
    lock(s);
    StoreRc rc = tx_begin(s, err, errlen);
    if (rc == STORE_OK)
        rc = tx_end(s, create_tx(s, e, config_text, id, existed, err, errlen), err, errlen);
    unlock(s);
    free(config_text);
    return rc;
}

json_t *store_experiment_get(Store *s, int64_t id)
{
    lock(s);
    json_t *x = exp_get_locked(s, id);
    unlock(s);
    return x;
}

json_t *store_experiment_list(Store *s, const char *status, const char *kind, int64_t cursor,
                              int limit, int64_t *next_cursor)
{
    *next_cursor = 0;
    lock(s);
    sqlite3_stmt *q = s->stmt[ST_EXP_LIST + (status ? 1 : 0) + (kind ? 2 : 0)];
    sqlite3_bind_int64(q, 1, cursor > 0 ? cursor : INT64_MAX);
    bind_text(q, 2, status);
    bind_text(q, 3, kind);
    sqlite3_bind_int64(q, 4, (int64_t)limit + 1); /* one more tells whether a next page exists */
    json_t *items = json_array();
    int rc, n = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (n++ == limit) {
            *next_cursor =
                json_integer_value(json_object_get(json_array_get(items, limit - 1), "id"));
            break;
        }
        json_array_append_new(items, exp_json(s, q, 0));
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        json_decref(items);
        items = NULL;
    }
    done(q);
    unlock(s);
    return items;
}

static StoreRc cancel_tx(Store *s, int64_t id, char *err, size_t errlen)
{
    ExpState st;
    StoreRc rc = exp_load(s, id, &st, err, errlen);
    if (rc != STORE_OK) return rc;
    if (!strcmp(st.status, "queued")) {
        set_finished(&st, "canceled", now_ms());
        return exp_save(s, &st, NULL, st.finished_at, err, errlen);
    }
    if (!strcmp(st.status, "running")) {
        /* the worker learns it at its next heartbeat and ends the attempt "canceled" */
        sqlite3_stmt *q = s->stmt[ST_EXP_CANCEL_REQUEST];
        sqlite3_bind_int64(q, 1, id);
        return run(s, q, err, errlen);
    }
    set_err(err, errlen, "experiment %lld is already %s", (long long)id, st.status);
    return STORE_CONFLICT;
}

/* Runs fn(s, id) as one transaction under the lock. */
static StoreRc id_tx(Store *s, StoreRc (*fn)(Store *, int64_t, char *, size_t), int64_t id,
                     char *err, size_t errlen)
{
    lock(s);
    StoreRc rc = tx_begin(s, err, errlen);
    if (rc == STORE_OK) rc = tx_end(s, fn(s, id, err, errlen), err, errlen);
    unlock(s);
    return rc;
}

StoreRc store_experiment_cancel(Store *s, int64_t id, char *err, size_t errlen)
{
    return id_tx(s, cancel_tx, id, err, errlen);
}

static StoreRc retry_tx(Store *s, int64_t id, char *err, size_t errlen)
{
    ExpState st;
    StoreRc rc = exp_load(s, id, &st, err, errlen);
    if (rc != STORE_OK) return rc;
    if (strcmp(st.status, "failed") && strcmp(st.status, "canceled")) {
        set_err(err, errlen, "experiment %lld is %s: only failed or canceled ones are retried",
                (long long)id, st.status);
        return STORE_CONFLICT;
    }
    set_queued(&st);
    st.attempts = 0;
    st.started_at = 0;
    st.cancel_requested = 0;
    return exp_save(s, &st, NULL, now_ms(), err, errlen);
}

StoreRc store_experiment_retry(Store *s, int64_t id, char *err, size_t errlen)
{
    return id_tx(s, retry_tx, id, err, errlen);
}

static StoreRc delete_tx(Store *s, int64_t id, char *err, size_t errlen)
{
    ExpState st;
    StoreRc rc = exp_load(s, id, &st, err, errlen);
    if (rc != STORE_OK) return rc;
    if (!is_terminal(st.status)) {
        set_err(err, errlen, "experiment %lld is %s: only finished experiments can be deleted",
                (long long)id, st.status);
        return STORE_CONFLICT;
    }
    sqlite3_stmt *q = s->stmt[ST_EXP_DELETE];
    sqlite3_bind_int64(q, 1, id);
    return run(s, q, err, errlen); /* events, points and artifacts go with it (ON DELETE CASCADE) */
}

StoreRc store_experiment_delete(Store *s, int64_t id, char *err, size_t errlen)
{
    StoreRc rc = id_tx(s, delete_tx, id, err, errlen);
    if (rc != STORE_OK) return rc;
    /* after the commit: a crash in between leaves files without rows, never rows without files */
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/artifacts/%lld", s->data_dir, (long long)id);
    if (remove_tree(path) != 0) {
        set_err(err, errlen, "experiment %lld deleted, but removing %s failed: %s", (long long)id,
                path, strerror(errno));
        return STORE_ERROR;
    }
    return STORE_OK;
}

/* ---- the queue ---- */

/* The artifact row q is on. */
static json_t *artifact_json(sqlite3_stmt *q)
{
    return json_pack("{s:o, s:o, s:I, s:o, s:o, s:o}", "name", col_text(q, 0), "content_type",
                     col_text(q, 1), "size", (json_int_t)sqlite3_column_int64(q, 2), "sha256",
                     col_text(q, 3), "iteration", col_int(q, 4), "created_at", col_time(q, 5));
}

static StoreRc lease_tx(Store *s, const char *worker_id, int64_t lease_ms, json_t **lease,
                        char *err, size_t errlen)
{
    int64_t now = now_ms();
    sqlite3_stmt *q = s->stmt[ST_WORKER_SEEN];
    sqlite3_bind_text(q, 1, worker_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, now);
    StoreRc rc = run(s, q, err, errlen);
    if (rc != STORE_OK) return rc;
    if (sqlite3_changes(s->db) == 0) {
        set_err(err, errlen, "worker %s is not registered", worker_id);
        return STORE_NOT_FOUND;
    }
    q = s->stmt[ST_QUEUE_HEAD];
    int r = step_row(s, q, err, errlen);
    if (r <= 0) return r == 0 ? STORE_EMPTY : STORE_ERROR;
    int64_t id = sqlite3_column_int64(q, 0);
    done(q);

    ExpState st;
    if ((rc = exp_load(s, id, &st, err, errlen)) != STORE_OK) return rc;
    snprintf(st.status, sizeof st.status, "running");
    st.attempts++;
    snprintf(st.worker_id, sizeof st.worker_id, "%s", worker_id);
    st.lease_expires_at = now + lease_ms;
    if (!st.started_at) st.started_at = now;
    st.finished_at = 0;
    if ((rc = exp_save(s, &st, NULL, now, err, errlen)) != STORE_OK) return rc;

    json_t *checkpoint = json_null();
    q = s->stmt[ST_CHECKPOINT];
    sqlite3_bind_int64(q, 1, id);
    if ((r = step_row(s, q, err, errlen)) < 0) return STORE_ERROR;
    if (r == 1) {
        checkpoint = artifact_json(q);
        done(q);
    }
    char expires[STORE_TIME_LEN];
    format_time(st.lease_expires_at, expires);
    json_t *x = exp_get_locked(s, id);
    *lease = x ? json_pack("{s:o, s:I, s:s, s:I, s:o}", "experiment", x, "attempt",
                           (json_int_t)st.attempts, "lease_expires_at", expires, "next_seq",
                           (json_int_t)query_int(s, ST_NEXT_SEQ, id, 1), "checkpoint", checkpoint)
               : NULL;
    if (!x) json_decref(checkpoint);
    if (!*lease) {
        set_err(err, errlen, "building the lease of experiment %lld failed", (long long)id);
        return STORE_ERROR;
    }
    return STORE_OK;
}

StoreRc store_lease(Store *s, const char *worker_id, int64_t lease_ms, json_t **lease, char *err,
                    size_t errlen)
{
    *lease = NULL;
    lock(s);
    StoreRc rc = tx_begin(s, err, errlen);
    if (rc == STORE_OK)
        rc = tx_end(s, lease_tx(s, worker_id, lease_ms, lease, err, errlen), err, errlen);
    unlock(s);
    if (rc != STORE_OK) {
        json_decref(*lease);
        *lease = NULL;
    }
    return rc;
}

/* Field checks: prefix names the object in the message ("events[3].data", or "" for none). */
static int check_count(const json_t *o, const char *key, const char *prefix, int required,
                       char *err, size_t errlen)
{
    const json_t *v = json_object_get(o, key);
    if ((!v && !required) || (json_is_integer(v) && json_integer_value(v) >= 0)) return 0;
    set_err(err, errlen, "%s%s%s: expected a non-negative integer", prefix, *prefix ? "." : "",
            key);
    return -1;
}

static int check_string(const json_t *o, const char *key, const char *prefix, int required,
                        char *err, size_t errlen)
{
    const json_t *v = json_object_get(o, key);
    if ((!v && !required) || json_is_string(v)) return 0;
    set_err(err, errlen, "%s%s%s: expected a string", prefix, *prefix ? "." : "", key);
    return -1;
}

/* A progress object: "iteration", "total" (counts), "phase" (a string), any other fields. */
static int check_progress(const json_t *p, const char *prefix, int required, char *err,
                          size_t errlen)
{
    if (!json_is_object(p)) {
        set_err(err, errlen, "%s: expected an object", prefix);
        return -1;
    }
    if (check_count(p, "iteration", prefix, required, err, errlen) ||
        check_count(p, "total", prefix, required, err, errlen) ||
        check_string(p, "phase", prefix, 0, err, errlen))
        return -1;
    return 0;
}

static StoreRc heartbeat_tx(Store *s, const char *worker_id, int64_t id, int64_t lease_ms,
                            const char *progress_text, int *cancel, int64_t *expires_at, char *err,
                            size_t errlen)
{
    int64_t now = now_ms();
    sqlite3_stmt *q = s->stmt[ST_HEARTBEAT];
    sqlite3_bind_int64(q, 1, id);
    sqlite3_bind_text(q, 2, worker_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, now + lease_ms);
    bind_text(q, 4, progress_text);
    int r = step_row(s, q, err, errlen);
    if (r < 0) return STORE_ERROR;
    if (r == 0) {
        ExpState st;
        StoreRc rc = exp_load(s, id, &st, err, errlen);
        if (rc != STORE_OK) return rc;
        set_err(err, errlen, "experiment %lld is %s%s%s: this worker's lease is gone",
                (long long)id, st.status, st.worker_id[0] ? " under worker " : "", st.worker_id);
        return STORE_CONFLICT;
    }
    *cancel = sqlite3_column_int(q, 0);
    *expires_at = now + lease_ms;
    done(q); /* before COMMIT: a RETURNING statement left open makes it fail */
    q = s->stmt[ST_WORKER_SEEN];
    sqlite3_bind_text(q, 1, worker_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, now);
    StoreRc rc = run(s, q, err, errlen);
    if (rc != STORE_OK || !progress_text) return rc;
    int64_t event_id;
    return event_insert(s, id, 0, "progress", now, progress_text, &event_id, err, errlen);
}

StoreRc store_heartbeat(Store *s, const char *worker_id, int64_t id, int64_t lease_ms,
                        const json_t *progress, int *cancel, int64_t *expires_at, char *err,
                        size_t errlen)
{
    *cancel = 0;
    *expires_at = 0;
    char *progress_text = NULL;
    if (progress) {
        if (check_progress(progress, "progress", 0, err, errlen)) return STORE_INVALID;
        if (!(progress_text = json_dumps(progress, JSON_COMPACT))) {
            set_err(err, errlen, "out of memory");
            return STORE_ERROR;
        }
    }
    lock(s);
    StoreRc rc = tx_begin(s, err, errlen);
    if (rc == STORE_OK)
        rc = tx_end(s,
                    heartbeat_tx(s, worker_id, id, lease_ms, progress_text, cancel, expires_at, err,
                                 errlen),
                    err, errlen);
    unlock(s);
    free(progress_text);
    return rc;
}

static StoreRc complete_tx(Store *s, const char *worker_id, int64_t id, const char *status,
                           const char *error, char *err, size_t errlen)
{
    ExpState st;
    StoreRc rc = exp_load(s, id, &st, err, errlen);
    if (rc != STORE_OK) return rc;
    if (strcmp(st.status, "running") || strcmp(st.worker_id, worker_id)) {
        set_err(err, errlen, "experiment %lld is %s%s%s: worker %s holds no lease on it",
                (long long)id, st.status, st.worker_id[0] ? " under worker " : "", st.worker_id,
                worker_id);
        return STORE_CONFLICT;
    }
    int64_t now = now_ms();
    if (!strcmp(status, "requeue") && !st.cancel_requested) {
        set_queued(&st);
        if (st.attempts > 0) st.attempts--; /* a shutdown is not the experiment's failure */
    } else {
        /* a worker that stops while a cancel is pending has done what was asked */
        set_finished(&st, !strcmp(status, "requeue") ? "canceled" : status, now);
    }
    return exp_save(s, &st, error, now, err, errlen);
}

StoreRc store_complete(Store *s, const char *worker_id, int64_t id, const char *status,
                       const char *error, char *err, size_t errlen)
{
    static const char *const statuses[] = {"succeeded", "failed", "canceled", "requeue"};
    int known = 0;
    for (size_t i = 0; status && i < sizeof statuses / sizeof statuses[0]; i++)
        known |= !strcmp(status, statuses[i]);
    if (!known) {
        set_err(err, errlen, "status: expected succeeded, failed, canceled or requeue");
        return STORE_INVALID;
    }
    lock(s);
    StoreRc rc = tx_begin(s, err, errlen);
    if (rc == STORE_OK)
        rc = tx_end(s, complete_tx(s, worker_id, id, status, error, err, errlen), err, errlen);
    unlock(s);
    return rc;
}

static StoreRc expire_tx(Store *s, int64_t now, int *requeued, int *failed, char *err,
                         size_t errlen)
{
    /* the ids first: rows are not changed under a running SELECT of the same table */
    int64_t *ids = NULL;
    size_t n = 0, cap = 0;
    sqlite3_stmt *q = s->stmt[ST_EXPIRED];
    sqlite3_bind_int64(q, 1, now);
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (n == cap) {
            int64_t *bigger = realloc(ids, (cap = cap ? 2 * cap : 16) * sizeof *ids);
            if (!bigger) break;
            ids = bigger;
        }
        ids[n++] = sqlite3_column_int64(q, 0);
    }
    StoreRc out = rc == SQLITE_DONE ? STORE_OK : STORE_ERROR;
    if (rc == SQLITE_ROW)
        set_err(err, errlen, "out of memory");
    else if (rc != SQLITE_DONE)
        db_err(s, err, errlen);
    done(q);
    for (size_t i = 0; out == STORE_OK && i < n; i++) {
        ExpState st;
        if ((out = exp_load(s, ids[i], &st, err, errlen)) != STORE_OK) break;
        char why[96];
        snprintf(why, sizeof why, "lease expired; attempt %lld of %lld", (long long)st.attempts,
                 (long long)st.max_attempts);
        if (st.cancel_requested) {
            set_finished(&st, "canceled", now); /* counted neither requeued nor failed */
        } else if (st.attempts >= st.max_attempts) {
            set_finished(&st, "failed", now);
            ++*failed;
        } else {
            set_queued(&st);
            ++*requeued;
        }
        out = exp_save(s, &st, why, now, err, errlen);
    }
    free(ids);
    return out;
}

StoreRc store_expire_leases(Store *s, int64_t now, int *requeued, int *failed, char *err,
                            size_t errlen)
{
    *requeued = *failed = 0;
    lock(s);
    StoreRc rc = tx_begin(s, err, errlen);
    if (rc == STORE_OK)
        rc = tx_end(s, expire_tx(s, now, requeued, failed, err, errlen), err, errlen);
    unlock(s);
    if (rc != STORE_OK) *requeued = *failed = 0;
    return rc;
}

/* ---- events, metrics, logs ---- */

enum { EV_METRICS, EV_LOG, EV_PROGRESS };
static const char *const event_types[] = {"metrics", "log", "progress"};

/* One event of a worker's batch, checked before the lock is taken. */
typedef struct {
    int64_t seq, ts;
    int type;
    const json_t *data; /* borrowed from the caller's batch */
    char *text;         /* data as compact JSON (owned) */
} WorkerEvent;

/* STORE_INVALID naming the field, or STORE_ERROR when out of memory. */
static StoreRc event_parse(const json_t *e, size_t i, int64_t now, WorkerEvent *out, char *err,
                           size_t errlen)
{
    char at[48];
    snprintf(at, sizeof at, "events[%zu]", i);
    if (!json_is_object(e)) {
        set_err(err, errlen, "%s: expected an object", at);
        return STORE_INVALID;
    }
    const json_t *seq = json_object_get(e, "seq"), *type = json_object_get(e, "type");
    const json_t *ts = json_object_get(e, "ts"), *data = json_object_get(e, "data");
    if (!json_is_integer(seq) || json_integer_value(seq) <= 0) {
        set_err(err, errlen, "%s.seq: expected a positive integer", at);
        return STORE_INVALID;
    }
    out->seq = json_integer_value(seq);
    out->type = -1;
    for (int k = 0; k < 3 && json_is_string(type); k++)
        if (!strcmp(json_string_value(type), event_types[k])) out->type = k;
    if (out->type < 0) {
        set_err(err, errlen, "%s.type: expected metrics, log or progress", at);
        return STORE_INVALID;
    }
    out->ts = now;
    if (ts && !json_is_null(ts) &&
        (!json_is_string(ts) || parse_time(json_string_value(ts), &out->ts))) {
        set_err(err, errlen, "%s.ts: expected an RFC 3339 time such as 2026-11-27T05:08:38.123Z",
                at);
        return STORE_INVALID;
    }
    char dat[64];
    snprintf(dat, sizeof dat, "%s.data", at);
    if (!json_is_object(data)) {
        set_err(err, errlen, "%s: expected an object", dat);
        return STORE_INVALID;
    }
    out->data = data;
    if (out->type == EV_METRICS) {
        const json_t *values = json_object_get(data, "values"), *v;
        const char *key;
        if (check_count(data, "iteration", dat, 1, err, errlen)) return STORE_INVALID;
        if (!json_is_object(values)) {
            set_err(err, errlen, "%s.values: expected an object", dat);
            return STORE_INVALID;
        }
        json_object_foreach((json_t *)values, key, v)
        {
            if (*key && json_is_number(v)) continue;
            set_err(err, errlen, "%s.values.%s: expected a number under a non-empty key", dat, key);
            return STORE_INVALID;
        }
    } else if (out->type == EV_LOG) {
        if (check_string(data, "level", dat, 1, err, errlen) ||
            check_string(data, "message", dat, 1, err, errlen))
            return STORE_INVALID;
    } else if (check_progress(data, dat, 1, err, errlen)) {
        return STORE_INVALID;
    }
    if (!(out->text = json_dumps(data, JSON_COMPACT))) {
        set_err(err, errlen, "out of memory");
        return STORE_ERROR;
    }
    return STORE_OK;
}

/* The metric points of one stored metrics event, and "latest" updated in memory. */
static StoreRc metrics_insert(Store *s, int64_t id, int64_t event_id, const json_t *data,
                              json_t *latest, char *err, size_t errlen)
{
    json_int_t iteration = json_integer_value(json_object_get(data, "iteration"));
    const char *key;
    json_t *v;
    sqlite3_stmt *q = s->stmt[ST_POINT_INSERT];
    json_object_foreach(json_object_get(data, "values"), key, v)
    {
        sqlite3_bind_int64(q, 1, id);
        sqlite3_bind_int64(q, 2, event_id);
        sqlite3_bind_text(q, 3, key, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 4, iteration);
        sqlite3_bind_double(q, 5, json_number_value(v));
        StoreRc rc = run(s, q, err, errlen);
        if (rc != STORE_OK) return rc;
        json_object_set_new(latest, key,
                            json_is_integer(v) ? json_integer(json_integer_value(v))
                                               : json_real(json_real_value(v)));
    }
    return STORE_OK;
}

static StoreRc add_events_tx(Store *s, int64_t id, const char *worker_id, const WorkerEvent *ev,
                             size_t n, int *accepted, int *duplicates, int64_t *next_seq, char *err,
                             size_t errlen)
{
    ExpState st;
    StoreRc rc = exp_load(s, id, &st, err, errlen);
    if (rc != STORE_OK) return rc;
    if (strcmp(st.status, "running") || strcmp(st.worker_id, worker_id)) {
        set_err(err, errlen, "experiment %lld is %s%s%s: worker %s holds no lease on it",
                (long long)id, st.status, st.worker_id[0] ? " under worker " : "", st.worker_id,
                worker_id);
        return STORE_CONFLICT;
    }
    json_t *latest = NULL;
    const char *progress = NULL;
    for (size_t i = 0; rc == STORE_OK && i < n; i++) {
        int64_t event_id;
        rc = event_insert(s, id, ev[i].seq, event_types[ev[i].type], ev[i].ts, ev[i].text,
                          &event_id, err, errlen);
        if (rc != STORE_OK) break;
        if (!event_id) {
            ++*duplicates;
            continue;
        }
        ++*accepted;
        if (ev[i].type == EV_PROGRESS) progress = ev[i].text;
        if (ev[i].type != EV_METRICS) continue;
        if (!latest) {
            sqlite3_stmt *q = s->stmt[ST_EXP_LATEST];
            sqlite3_bind_int64(q, 1, id);
            if (step_row(s, q, err, errlen) != 1) {
                rc = STORE_ERROR;
                break;
            }
            latest = col_json(q, 0);
            done(q);
            if (!json_is_object(latest)) {
                json_decref(latest);
                latest = json_object();
            }
        }
        rc = metrics_insert(s, id, event_id, ev[i].data, latest, err, errlen);
    }
    char *latest_text = rc == STORE_OK && latest ? json_dumps(latest, JSON_COMPACT) : NULL;
    json_decref(latest);
    if (latest_text) {
        sqlite3_stmt *q = s->stmt[ST_EXP_SET_LATEST];
        sqlite3_bind_int64(q, 1, id);
        sqlite3_bind_text(q, 2, latest_text, -1, SQLITE_STATIC);
        rc = run(s, q, err, errlen);
        free(latest_text);
    } else if (rc == STORE_OK && latest) {
        set_err(err, errlen, "out of memory");
        rc = STORE_ERROR;
    }
    if (rc == STORE_OK && progress) {
        sqlite3_stmt *q = s->stmt[ST_EXP_SET_PROGRESS];
        sqlite3_bind_int64(q, 1, id);
        sqlite3_bind_text(q, 2, progress, -1, SQLITE_STATIC);
        rc = run(s, q, err, errlen);
    }
    if (rc == STORE_OK) *next_seq = query_int(s, ST_NEXT_SEQ, id, 1);
    return rc;
}

StoreRc store_add_events(Store *s, int64_t id, const char *worker_id, const json_t *events,
                         int *accepted, int *duplicates, int64_t *next_seq, char *err,
                         size_t errlen)
{
    *accepted = *duplicates = 0;
    *next_seq = 0;
    if (!json_is_array(events)) {
        set_err(err, errlen, "events: expected an array");
        return STORE_INVALID;
    }
    size_t n = json_array_size(events);
    WorkerEvent *ev = calloc(n ? n : 1, sizeof *ev);
    if (!ev) {
        set_err(err, errlen, "out of memory");
        return STORE_ERROR;
    }
    StoreRc rc = STORE_OK;
    int64_t now = now_ms();
    for (size_t i = 0; i < n && rc == STORE_OK; i++)
        rc = event_parse(json_array_get(events, i), i, now, &ev[i], err, errlen);
    if (rc == STORE_OK) {
        lock(s);
        rc = tx_begin(s, err, errlen);
        if (rc == STORE_OK)
            rc = tx_end(
                s,
                add_events_tx(s, id, worker_id, ev, n, accepted, duplicates, next_seq, err, errlen),
                err, errlen);
        unlock(s);
    }
    if (rc != STORE_OK) *accepted = *duplicates = 0;
    for (size_t i = 0; i < n; i++) free(ev[i].text);
    free(ev);
    return rc;
}

json_t *store_events_after(Store *s, int64_t id, int64_t after_id, int limit)
{
    lock(s);
    sqlite3_stmt *q = s->stmt[id ? ST_EVENTS_AFTER_EXP : ST_EVENTS_AFTER];
    sqlite3_bind_int64(q, 1, id);
    sqlite3_bind_int64(q, 2, after_id);
    sqlite3_bind_int(q, 3, limit);
    json_t *items = json_array();
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW)
        json_array_append_new(
            items,
            json_pack("{s:I, s:I, s:o, s:o, s:o}", "id", (json_int_t)sqlite3_column_int64(q, 0),
                      "experiment_id", (json_int_t)sqlite3_column_int64(q, 1), "type",
                      col_text(q, 2), "ts", col_time(q, 3), "data", col_json(q, 4)));
    done(q);
    unlock(s);
    if (rc != SQLITE_DONE) {
        json_decref(items);
        return NULL;
    }
    return items;
}

int64_t store_last_event_id(Store *s)
{
    lock(s);
    int64_t v = query_int(s, ST_LAST_EVENT, 0, 0);
    unlock(s);
    return v;
}

/* The points of one series, in iteration order. */
typedef struct {
    int64_t *iteration;
    double *value;
    size_t n, cap;
} Series;

static int series_push(Series *p, int64_t iteration, double value)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 256;
        int64_t *it = realloc(p->iteration, cap * sizeof *it);
        if (it) p->iteration = it;
        double *v = realloc(p->value, cap * sizeof *v);
        if (v) p->value = v;
        if (!it || !v) return -1;
        p->cap = cap;
    }
    p->iteration[p->n] = iteration;
    p->value[p->n++] = value;
    return 0;
}

/* {"iteration": [...], "value": [...]} with at most max_points points (max_points < 1: all):
 * the first and the last point exact, the ones between in max_points - 2 buckets of about equal
 * counts, each given as its mean iteration and mean value. */
static json_t *series_json(const Series *p, int max_points)
{
    json_t *its = json_array(), *vals = json_array();
    size_t n = p->n;
    if (max_points < 1 || n <= (size_t)max_points) {
        for (size_t i = 0; i < n; i++) {
            json_array_append_new(its, json_integer(p->iteration[i]));
            json_array_append_new(vals, json_real(p->value[i]));
        }
    } else {
        if (max_points >= 2) {
            json_array_append_new(its, json_integer(p->iteration[0]));
            json_array_append_new(vals, json_real(p->value[0]));
        }
        size_t m = n - 2, buckets = max_points >= 2 ? (size_t)max_points - 2 : 0;
        for (size_t b = 0; b < buckets; b++) {
            size_t lo = 1 + b * m / buckets, hi = 1 + (b + 1) * m / buckets;
            double mi = 0, mv = 0;
            for (size_t i = lo; i < hi; i++) { /* running means: no overflow of a sum */
                mi += ((double)p->iteration[i] - mi) / (double)(i - lo + 1);
                mv += (p->value[i] - mv) / (double)(i - lo + 1);
            }
            json_array_append_new(its, json_real(mi));
            json_array_append_new(vals, json_real(mv));
        }
        json_array_append_new(its, json_integer(p->iteration[n - 1]));
        json_array_append_new(vals, json_real(p->value[n - 1]));
    }
    return json_pack("{s:o, s:o}", "iteration", its, "value", vals);
}

/* One key's points, as read under the lock; turned into JSON after it. */
typedef struct {
    char *key;
    Series p;
} KeySeries;

typedef struct {
    KeySeries *items;
    size_t n, cap;
} SeriesSet;

static void series_set_free(SeriesSet *set)
{
    for (size_t i = 0; i < set->n; i++) {
        free(set->items[i].key);
        free(set->items[i].p.iteration);
        free(set->items[i].p.value);
    }
    free(set->items);
}

/* Appends q's rows (key, iteration, value, in key order) to set, one entry per key. Only the
 * reading needs the store's lock; the JSON is built after it. */
static int points_read(sqlite3_stmt *q, SeriesSet *set)
{
    KeySeries *cur = NULL;
    int rc = SQLITE_DONE, failed = 0;
    while (!failed && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *k = (const char *)sqlite3_column_text(q, 0);
        if (!cur || strcmp(k, cur->key)) {
            if (set->n == set->cap) {
                size_t cap = set->cap ? 2 * set->cap : 16;
                KeySeries *items = realloc(set->items, cap * sizeof *items);
                if (!items) {
                    failed = 1;
                    break;
                }
                set->items = items, set->cap = cap;
            }
            cur = &set->items[set->n];
            *cur = (KeySeries){.key = strdup(k)};
            if (!cur->key) {
                failed = 1;
                break;
            }
            set->n++;
        }
        failed = series_push(&cur->p, sqlite3_column_int64(q, 1), sqlite3_column_double(q, 2));
    }
    done(q);
    return failed || rc != SQLITE_DONE ? -1 : 0;
}

json_t *store_metrics(Store *s, int64_t id, const char *const *keys, int nkeys, int64_t after_id,
                      int max_points)
{
    SeriesSet set = {0};
    int failed = 0;
    lock(s);
    int64_t last = query_int(s, ST_EXP_LAST_EVENT, id, -1);
    ExpState st;
    if (exp_load(s, id, &st, NULL, 0) != STORE_OK) failed = 1;
    for (int k = 0; !failed && k < (keys ? nkeys : 1); k++) {
        sqlite3_stmt *q = s->stmt[keys ? ST_POINTS_KEY : ST_POINTS_ALL];
        sqlite3_bind_int64(q, 1, id);
        sqlite3_bind_int64(q, 2, after_id);
        if (keys) sqlite3_bind_text(q, 3, keys[k], -1, SQLITE_STATIC);
        failed = points_read(q, &set);
    }
    unlock(s);
    json_t *series = NULL;
    if (!failed && last >= 0) {
        series = json_object();
        for (size_t i = 0; i < set.n; i++)
            json_object_set_new(series, set.items[i].key, series_json(&set.items[i].p, max_points));
    }
    series_set_free(&set);
    if (!series) return NULL;
    return json_pack("{s:I, s:o}", "last_event_id", (json_int_t)(last > after_id ? last : after_id),
                     "series", series);
}

json_t *store_logs(Store *s, int64_t id, int64_t after_id, int limit)
{
    lock(s);
    ExpState st;
    if (exp_load(s, id, &st, NULL, 0) != STORE_OK) {
        unlock(s);
        return NULL;
    }
    int64_t last = query_int(s, ST_EXP_LAST_EVENT, id, 0), last_item = after_id;
    sqlite3_stmt *q = s->stmt[ST_LOGS];
    sqlite3_bind_int64(q, 1, id);
    sqlite3_bind_int64(q, 2, after_id);
    sqlite3_bind_int(q, 3, limit);
    json_t *items = json_array();
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        json_t *data = col_json(q, 2);
        last_item = sqlite3_column_int64(q, 0);
        json_array_append_new(items,
                              json_pack("{s:I, s:o, s:O, s:O}", "id", (json_int_t)last_item, "ts",
                                        col_time(q, 1), "level", json_object_get(data, "level"),
                                        "message", json_object_get(data, "message")));
        json_decref(data);
    }
    done(q);
    unlock(s);
    if (rc != SQLITE_DONE) {
        json_decref(items);
        return NULL;
    }
    /* a full page resumes after its last item; otherwise nothing is left before the newest event */
    int full = (int)json_array_size(items) == limit;
    int64_t resume = full ? last_item : (last > after_id ? last : after_id);
    return json_pack("{s:o, s:I}", "items", items, "last_event_id", (json_int_t)resume);
}

/* ---- artifacts ---- */

int store_artifact_name_ok(const char *name)
{
    static const char allowed[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-";
    if (!name || !*name || *name == '/' || strlen(name) > 200) return 0;
    for (const char *seg = name;;) {
        size_t len = strcspn(seg, "/");
        if (len == 0 || (len == 1 && seg[0] == '.') || (len == 2 && !strncmp(seg, "..", 2)) ||
            strspn(seg, allowed) < len)
            return 0;
        seg += len;
        if (!*seg) return 1;
        seg++;
    }
}

static StoreRc artifact_add_tx(Store *s, int64_t id, const char *name, const char *content_type,
                               int64_t size, const char *sha256_hex, int64_t iteration, char *err,
                               size_t errlen)
{
    ExpState st;
    StoreRc rc = exp_load(s, id, &st, err, errlen);
    if (rc != STORE_OK) return rc;
    int64_t now = now_ms();
    sqlite3_stmt *q = s->stmt[ST_ARTIFACT_UPSERT];
    sqlite3_bind_int64(q, 1, id);
    sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, content_type, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, size);
    sqlite3_bind_text(q, 5, sha256_hex, -1, SQLITE_STATIC);
    if (iteration >= 0)
        sqlite3_bind_int64(q, 6, iteration);
    else
        sqlite3_bind_null(q, 6);
    sqlite3_bind_int64(q, 7, now);
    if ((rc = run(s, q, err, errlen)) != STORE_OK) return rc;
    json_t *data = json_pack("{s:s, s:s, s:I, s:s, s:o}", "name", name, "content_type",
                             content_type, "size", (json_int_t)size, "sha256", sha256_hex,
                             "iteration", iteration >= 0 ? json_integer(iteration) : json_null());
    return event_add(s, id, "artifact", now, data, err, errlen);
}

StoreRc store_artifact_add(Store *s, int64_t id, const char *name, const char *content_type,
                           int64_t size, const char *sha256_hex, int64_t iteration, char *err,
                           size_t errlen)
{
    if (!store_artifact_name_ok(name)) {
        set_err(err, errlen, "name: \"%s\" is not a relative path inside the experiment's folder",
                name ? name : "");
        return STORE_INVALID;
    }
    if (!content_type || !sha256_hex || size < 0) {
        set_err(err, errlen, "%s",
                !content_type ? "content_type: required"
                : !sha256_hex ? "sha256: required"
                              : "size: expected a non-negative integer");
        return STORE_INVALID;
    }
    lock(s);
    StoreRc rc = tx_begin(s, err, errlen);
    if (rc == STORE_OK)
        rc = tx_end(
            s, artifact_add_tx(s, id, name, content_type, size, sha256_hex, iteration, err, errlen),
            err, errlen);
    unlock(s);
    return rc;
}

json_t *store_artifacts(Store *s, int64_t id)
{
    lock(s);
    ExpState st;
    if (exp_load(s, id, &st, NULL, 0) != STORE_OK) {
        unlock(s);
        return NULL;
    }
    sqlite3_stmt *q = s->stmt[ST_ARTIFACTS];
    sqlite3_bind_int64(q, 1, id);
    json_t *items = json_array();
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) json_array_append_new(items, artifact_json(q));
    done(q);
    unlock(s);
    if (rc != SQLITE_DONE) {
        json_decref(items);
        return NULL;
    }
    return json_pack("{s:o}", "items", items);
}

json_t *store_artifact_get(Store *s, int64_t id, const char *name)
{
    lock(s);
    sqlite3_stmt *q = s->stmt[ST_ARTIFACT_GET];
    sqlite3_bind_int64(q, 1, id);
    sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
    json_t *a = NULL;
    if (step_row(s, q, NULL, 0) == 1) {
        a = artifact_json(q);
        done(q);
    }
    unlock(s);
    return a;
}

/* The folder F of "checkpoints/F/FILE" into folder (NUL-terminated); 0 when name is not a file of
 * a checkpoint folder (checkpoints/latest is not). */
static int checkpoint_folder(const char *name, char *folder, size_t len)
{
    const char *f = name + strlen("checkpoints/"), *slash = strchr(f, '/');
    if (!slash || (size_t)(slash - f) >= len) return 0;
    memcpy(folder, f, (size_t)(slash - f));
    folder[slash - f] = 0;
    return 1;
}

static StoreRc prune_tx(Store *s, int64_t id, const char *latest, int keep, json_t *forgotten,
                        char *err, size_t errlen)
{
    sqlite3_stmt *q = s->stmt[ST_CHECKPOINT_FILES];
    sqlite3_bind_int64(q, 1, id);
    char folder[256], newest[256] = "";
    int folders = 0, rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) { /* newest folder first */
        const char *name = (const char *)sqlite3_column_text(q, 0);
        if (!checkpoint_folder(name, folder, sizeof folder)) continue;
        if (strcmp(folder, newest)) snprintf(newest, sizeof newest, "%s", folder), folders++;
        if (folders > keep && strcmp(folder, latest))
            json_array_append_new(forgotten, json_string(name));
    }
    done(q);
    if (rc != SQLITE_DONE) {
        set_err(err, errlen, "reading the checkpoints of experiment %lld: %s", (long long)id,
                sqlite3_errmsg(s->db));
        return STORE_ERROR;
    }
    size_t i;
    json_t *name;
    json_array_foreach(forgotten, i, name)
    {
        q = s->stmt[ST_CHECKPOINT_FORGET];
        sqlite3_bind_int64(q, 1, id);
        sqlite3_bind_text(q, 2, json_string_value(name), -1, SQLITE_STATIC);
        if (step_row(s, q, err, errlen) < 0) return STORE_ERROR;
    }
    return STORE_OK;
}

json_t *store_checkpoints_prune(Store *s, int64_t id, const char *latest, int keep)
{
    json_t *forgotten = json_array();
    char err[256];
    lock(s);
    StoreRc rc = tx_begin(s, err, sizeof err);
    if (rc == STORE_OK)
        rc = tx_end(s, prune_tx(s, id, latest, keep, forgotten, err, sizeof err), err, sizeof err);
    unlock(s);
    if (rc == STORE_OK) return forgotten;
    json_decref(forgotten);
    return NULL;
}

/* ---- workers ---- */

StoreRc store_worker_register(Store *s, int64_t token_id, const json_t *caps, char *worker_id,
                              char *err, size_t errlen)
{
    static const char *const strings[] = {"name", "backend", "device", "version"};
    static const char *const counts[] = {"memory_mb", "threads"};
    worker_id[0] = 0;
    if (!json_is_object(caps)) {
        set_err(err, errlen, "expected an object");
        return STORE_INVALID;
    }
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
        if (check_string(caps, strings[i], "", 0, err, errlen)) return STORE_INVALID;
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++)
        if (check_count(caps, counts[i], "", 0, err, errlen)) return STORE_INVALID;

    uint8_t r[8];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    ssize_t got = fd >= 0 ? read(fd, r, sizeof r) : -1;
    if (fd >= 0) close(fd);
    if (got != (ssize_t)sizeof r) {
        set_err(err, errlen, "/dev/urandom: %s", got < 0 ? strerror(errno) : "short read");
        return STORE_ERROR;
    }
    char id[24];
    snprintf(id, sizeof id, "w-%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3], r[4],
             r[5], r[6], r[7]);

    lock(s);
    sqlite3_stmt *q = s->stmt[ST_WORKER_INSERT];
    sqlite3_bind_text(q, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, token_id);
    for (int i = 0; i < 4; i++)
        bind_text(q, 3 + i, json_string_value(json_object_get(caps, strings[i])));
    for (int i = 0; i < 2; i++) {
        const json_t *v = json_object_get(caps, counts[i]);
        if (v) sqlite3_bind_int64(q, 7 + i, json_integer_value(v));
    }
    sqlite3_bind_int64(q, 9, now_ms());
    StoreRc rc = run(s, q, err, errlen); /* one statement: a transaction of its own */
    unlock(s);
    if (rc == STORE_OK) memcpy(worker_id, id, sizeof id);
    return rc;
}

json_t *store_workers(Store *s)
{
    int64_t now = now_ms();
    lock(s);
    sqlite3_stmt *q = s->stmt[ST_WORKERS];
    json_t *items = json_array();
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        double age = (double)(now - sqlite3_column_int64(q, 7)) / 1000.0;
        json_array_append_new(
            items,
            json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:f, s:o}", "id", col_text(q, 0),
                      "name", col_text(q, 1), "backend", col_text(q, 2), "device", col_text(q, 3),
                      "memory_mb", col_int(q, 4), "threads", col_int(q, 5), "registered_at",
                      col_time(q, 6), "last_seen_at", col_time(q, 7), "heartbeat_age_s",
                      age > 0 ? age : 0.0, "experiment_id", col_int(q, 8)));
    }
    done(q);
    unlock(s);
    if (rc != SQLITE_DONE) {
        json_decref(items);
        return NULL;
    }
    return json_pack("{s:o}", "items", items);
}

int store_worker_owned(Store *s, const char *worker_id, int64_t token_id)
{
    lock(s);
    sqlite3_stmt *q = s->stmt[ST_WORKER_OWNED];
    sqlite3_bind_text(q, 1, worker_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, token_id);
    int owned = step_row(s, q, NULL, 0) == 1;
    if (owned) done(q);
    unlock(s);
    return owned;
}

/* ---- tokens ---- */

StoreRc store_token_create(Store *s, const char *name, const char *role, const char *hash_hex,
                           int64_t *id, char *err, size_t errlen)
{
    static const char *const roles[] = {"read", "write", "worker", "admin"};
    int known = 0;
    for (size_t i = 0; role && i < 4; i++) known |= !strcmp(role, roles[i]);
    *id = 0;
    if (!name || !*name) {
        set_err(err, errlen, "name: required");
        return STORE_INVALID;
    }
    if (!known) {
        set_err(err, errlen, "role: expected read, write, worker or admin");
        return STORE_INVALID;
    }
    if (!hash_hex || strlen(hash_hex) != 64 || strspn(hash_hex, "0123456789abcdef") != 64) {
        set_err(err, errlen, "hash: expected 64 lowercase hex digits");
        return STORE_INVALID;
    }
    lock(s);
    sqlite3_stmt *q = s->stmt[ST_TOKEN_INSERT];
    sqlite3_bind_text(q, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, role, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, hash_hex, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, now_ms());
    StoreRc rc = run(s, q, err, errlen);
    if (rc == STORE_OK) *id = sqlite3_last_insert_rowid(s->db);
    unlock(s);
    return rc;
}

StoreRc store_token_lookup(Store *s, const char *hash_hex, int64_t *id, char role[16])
{
    lock(s);
    sqlite3_stmt *q = s->stmt[ST_TOKEN_LOOKUP];
    sqlite3_bind_text(q, 1, hash_hex, -1, SQLITE_STATIC);
    int r = step_row(s, q, NULL, 0);
    if (r == 1) {
        *id = sqlite3_column_int64(q, 0);
        snprintf(role, 16, "%s", (const char *)sqlite3_column_text(q, 1));
        done(q);
    }
    unlock(s);
    return r == 1 ? STORE_OK : r == 0 ? STORE_NOT_FOUND : STORE_ERROR;
}

json_t *store_tokens(Store *s)
{
    lock(s);
    sqlite3_stmt *q = s->stmt[ST_TOKENS];
    json_t *items = json_array();
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW)
        json_array_append_new(items,
                              json_pack("{s:I, s:o, s:o, s:o, s:b}", "id",
                                        (json_int_t)sqlite3_column_int64(q, 0), "name",
                                        col_text(q, 1), "role", col_text(q, 2), "created_at",
                                        col_time(q, 3), "revoked", sqlite3_column_int(q, 4)));
    done(q);
    unlock(s);
    if (rc != SQLITE_DONE) {
        json_decref(items);
        return NULL;
    }
    return json_pack("{s:o}", "items", items);
}

StoreRc store_token_revoke(Store *s, int64_t id, char *err, size_t errlen)
{
    lock(s);
    sqlite3_stmt *q = s->stmt[ST_TOKEN_REVOKE];
    sqlite3_bind_int64(q, 1, id);
    sqlite3_bind_int64(q, 2, now_ms());
    StoreRc rc = run(s, q, err, errlen);
    if (rc == STORE_OK && sqlite3_changes(s->db) == 0) {
        set_err(err, errlen, "token %lld does not exist", (long long)id);
        rc = STORE_NOT_FOUND;
    }
    unlock(s);
    return rc;
}

int store_token_count(Store *s)
{
    lock(s);
    int n = (int)query_int(s, ST_TOKEN_COUNT, 0, 0);
    unlock(s);
    return n;
}

/* ---- for /metrics ---- */

json_t *store_counts(Store *s)
{
    json_t *o = json_pack("{s:i, s:i, s:i, s:i, s:i}", "queued", 0, "running", 0, "succeeded", 0,
                          "failed", 0, "canceled", 0);
    lock(s);
    sqlite3_stmt *q = s->stmt[ST_STATUS_COUNTS];
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW)
        json_object_set_new(o, (const char *)sqlite3_column_text(q, 0),
                            json_integer(sqlite3_column_int64(q, 1)));
    done(q);
    q = s->stmt[ST_WORKER_COUNTS];
    sqlite3_bind_int64(q, 1, now_ms() - 60000);
    int r = rc == SQLITE_DONE ? step_row(s, q, NULL, 0) : -1;
    if (r == 1) {
        json_object_set_new(o, "workers", json_integer(sqlite3_column_int64(q, 0)));
        json_object_set_new(o, "workers_active", json_integer(sqlite3_column_int64(q, 1)));
        done(q);
    }
    unlock(s);
    if (r != 1) {
        json_decref(o);
        return NULL;
    }
    return o;
}
