/*
 * uplink.c: the worker protocol over libcurl, and the line framing. See uplink.h.
 */
#include "uplink.h"

#include <curl/curl.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "errbuf.h"

#define CONNECT_TIMEOUT_S 5
#define CALL_TIMEOUT_S 60
#define SLOW_BYTES_PER_S 1024 /* file transfers: slower than this for SLOW_SECONDS ends them */
#define SLOW_SECONDS 30
#define REPLY_MAX (16 << 20) /* a JSON answer larger than this is not the server's */

struct Uplink {
    CURL *h;
    char *url;  /* without a trailing slash */
    char *auth; /* "Authorization: Bearer TOKEN" */
    volatile sig_atomic_t *stop;
    char curl_err[CURL_ERROR_SIZE];
};

/* An answer's body: in memory (JSON, short texts) or into a file (downloads). */
typedef struct {
    char *data;
    size_t len, cap, limit;
    FILE *file;
} Sink;

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
    Sink *s = ctx;
    size_t bytes = size * n;
    if (s->file) return fwrite(p, 1, bytes, s->file);
    if (s->len + bytes + 1 > s->limit) return 0; /* ends the transfer: CURLE_WRITE_ERROR */
    if (s->len + bytes + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + bytes + 1) cap *= 2;
        char *grown = realloc(s->data, cap);
        if (!grown) return 0;
        s->data = grown, s->cap = cap;
    }
    memcpy(s->data + s->len, p, bytes);
    s->len += bytes;
    s->data[s->len] = '\0';
    return bytes;
}

/* Long polls only: a non-zero return aborts the transfer once a second stop was asked. */
static int on_progress(void *ctx, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                       curl_off_t ulnow)
{
    volatile sig_atomic_t *stop = ctx;
    return stop && *stop >= 2;
}

Uplink *uplink_new(const char *url, const char *token, volatile sig_atomic_t *stop, char *err,
                   size_t errlen)
{
    Uplink *u = calloc(1, sizeof *u);
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/') n--;
    if (u) {
        u->h = curl_easy_init();
        u->url = strndup(url, n);
        u->auth = malloc(strlen(token) + 32);
        u->stop = stop;
    }
    if (!u || !u->h || !u->url || !u->auth) {
        errbuf_printf(err, errlen, "cannot start libcurl (out of memory?)");
        uplink_free(u);
        return NULL;
    }
    sprintf(u->auth, "Authorization: Bearer %s", token);
    return u;
}

void uplink_free(Uplink *u)
{
    if (!u) return;
    if (u->h) curl_easy_cleanup(u->h);
    free(u->url);
    if (u->auth) memset(u->auth, 0, strlen(u->auth)); /* the token leaves no copy behind */
    free(u->auth);
    free(u);
}

/* The handle reset for a request to the server's path, answering into sink. */
static void prepare(Uplink *u, const char *path, Sink *sink, int file_transfer)
{
    CURL *h = u->h;
    curl_easy_reset(h); /* keeps the open connections */
    char *url = malloc(strlen(u->url) + strlen(path) + 1);
    if (url) sprintf(url, "%s%s", u->url, path);
    curl_easy_setopt(h, CURLOPT_URL, url ? url : "");
    free(url); /* libcurl copies string options */
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S);
    if (file_transfer) {
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, (long)SLOW_BYTES_PER_S);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, (long)SLOW_SECONDS);
    } else {
        curl_easy_setopt(h, CURLOPT_TIMEOUT, (long)CALL_TIMEOUT_S);
    }
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, u->curl_err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, sink);
    u->curl_err[0] = '\0';
}

/* Runs the prepared request: the status, or -1 with the reason. For an error status, err gets
 * the server's message (its JSON error body) or the bare status. */
static int perform(Uplink *u, struct curl_slist *headers, const char *what, const Sink *sink,
                   char *err, size_t errlen)
{
    curl_easy_setopt(u->h, CURLOPT_HTTPHEADER, headers);
    CURLcode rc = curl_easy_perform(u->h);
    if (rc != CURLE_OK) {
        errbuf_printf(err, errlen, "%s: %s", what,
                      rc == CURLE_ABORTED_BY_CALLBACK ? "interrupted"
                      : u->curl_err[0]                ? u->curl_err
                                                      : curl_easy_strerror(rc));
        return -1;
    }
    long status = 0;
    curl_easy_getinfo(u->h, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 400) {
        json_t *body = sink->data ? json_loads(sink->data, 0, NULL) : NULL;
        const char *msg =
            json_string_value(json_object_get(json_object_get(body, "error"), "message"));
        errbuf_printf(err, errlen, "%s: HTTP %ld%s%s", what, status, msg ? ": " : "",
                      msg ? msg : "");
        json_decref(body);
    }
    return (int)status;
}

/* A JSON call: body (borrowed, may be NULL: an empty POST) to path; a 2xx JSON answer into
 * *reply when reply is set. abortable: a long poll that a stop ends. */
static int call_json(Uplink *u, const char *method, const char *path, const json_t *body,
                     json_t **reply, int abortable, const char *what, char *err, size_t errlen)
{
    if (reply) *reply = NULL;
    Sink sink = {.limit = REPLY_MAX};
    prepare(u, path, &sink, 0);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body && !text) {
        errbuf_printf(err, errlen, "%s: out of memory", what);
        return -1;
    }
    struct curl_slist *headers = curl_slist_append(NULL, u->auth);
    if (body) headers = curl_slist_append(headers, "Content-Type: application/json");
    if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(u->h, CURLOPT_POST, 1L);
        curl_easy_setopt(u->h, CURLOPT_POSTFIELDS, text ? text : "");
        curl_easy_setopt(u->h, CURLOPT_POSTFIELDSIZE, (long)(text ? strlen(text) : 0));
    }
    if (abortable) {
        curl_easy_setopt(u->h, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(u->h, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(u->h, CURLOPT_XFERINFODATA, (void *)u->stop);
    }
    int status = perform(u, headers, what, &sink, err, errlen);
    curl_slist_free_all(headers);
    free(text);
    if (status >= 200 && status < 300 && reply && status != 204) {
        json_error_t jerr;
        *reply = sink.data ? json_loads(sink.data, 0, &jerr) : NULL;
        if (!*reply) {
            errbuf_printf(err, errlen, "%s: HTTP %d with no JSON answer", what, status);
            status = -1;
        }
    }
    free(sink.data);
    return status;
}

int uplink_register(Uplink *u, const json_t *caps, json_t **reply, char *err, size_t errlen)
{
    return call_json(u, "POST", "/api/v1/workers/register", caps, reply, 1, "register", err,
                     errlen);
}

int uplink_lease(Uplink *u, const char *worker_id, int wait_s, json_t **lease, char *err,
                 size_t errlen)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/workers/%s/lease?wait=%d", worker_id, wait_s);
    return call_json(u, "POST", path, NULL, lease, 1, "lease", err, errlen);
}

int uplink_heartbeat(Uplink *u, const char *worker_id, int64_t experiment, const json_t *progress,
                     int *cancel, char *err, size_t errlen)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/workers/%s/heartbeat", worker_id);
    json_t *body = json_pack("{s:I}", "experiment_id", (json_int_t)experiment), *reply;
    if (progress) json_object_set(body, "progress", (json_t *)progress);
    int status = call_json(u, "POST", path, body, &reply, 0, "heartbeat", err, errlen);
    json_decref(body);
    *cancel = status == 200 && json_is_true(json_object_get(reply, "cancel"));
    json_decref(reply);
    return status;
}

int uplink_post_events(Uplink *u, int64_t experiment, const char *worker_id, const json_t *events,
                       char *err, size_t errlen)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/experiments/%" PRId64 "/events", experiment);
    json_t *body = json_pack("{s:s, s:O}", "worker_id", worker_id, "events", events);
    int status = call_json(u, "POST", path, body, NULL, 0, "events", err, errlen);
    json_decref(body);
    return status;
}

int uplink_complete(Uplink *u, int64_t experiment, const char *worker_id, const char *status,
                    const char *error, char *err, size_t errlen)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/experiments/%" PRId64 "/complete", experiment);
    json_t *body = json_pack("{s:s, s:s}", "worker_id", worker_id, "status", status);
    if (error) json_object_set_new(body, "error", json_string(error));
    int rc = call_json(u, "POST", path, body, NULL, 0, "complete", err, errlen);
    json_decref(body);
    return rc;
}

int uplink_list_artifacts(Uplink *u, int64_t experiment, json_t **items, char *err, size_t errlen)
{
    char path[256];
    snprintf(path, sizeof path, "/api/v1/experiments/%" PRId64 "/artifacts", experiment);
    json_t *reply;
    int status = call_json(u, "GET", path, NULL, &reply, 0, "artifacts", err, errlen);
    *items = NULL;
    if (status == 200) {
        *items = json_incref(json_object_get(reply, "items"));
        if (!json_is_array(*items)) {
            json_decref(*items);
            *items = NULL;
            errbuf_printf(err, errlen, "artifacts: the answer has no \"items\" array");
            status = -1;
        }
    }
    json_decref(reply);
    return status;
}

/* PUT of the body in file (len bytes) or, when file is NULL, in data. */
static int upload(Uplink *u, int64_t experiment, const char *worker_id, const char *name,
                  int64_t iteration, FILE *file, const void *data, size_t len, char *err,
                  size_t errlen)
{
    char path[512], what[300];
    int n = snprintf(path, sizeof path, "/api/v1/experiments/%" PRId64 "/artifacts/%s?worker_id=%s",
                     experiment, name, worker_id);
    if (iteration >= 0 && n > 0 && (size_t)n < sizeof path)
        snprintf(path + n, sizeof path - (size_t)n, "&iteration=%" PRId64, iteration);
    snprintf(what, sizeof what, "upload %s", name);
    Sink sink = {.limit = REPLY_MAX};
    prepare(u, path, &sink, 1);
    if (file) {
        curl_easy_setopt(u->h, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(u->h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
        curl_easy_setopt(u->h, CURLOPT_READDATA, file); /* the default reader is fread */
    } else {
        curl_easy_setopt(u->h, CURLOPT_CUSTOMREQUEST, "PUT");
        curl_easy_setopt(u->h, CURLOPT_POSTFIELDS, data);
        curl_easy_setopt(u->h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    struct curl_slist *headers = curl_slist_append(NULL, u->auth);
    headers = curl_slist_append(headers, "Content-Type: application/octet-stream");
    headers = curl_slist_append(headers, "Expect:"); /* no 100-continue round trip */
    int status = perform(u, headers, what, &sink, err, errlen);
    curl_slist_free_all(headers);
    free(sink.data);
    return status;
}

int uplink_upload_file(Uplink *u, int64_t experiment, const char *worker_id, const char *name,
                       int64_t iteration, const char *path, struct stat *sent, char *err,
                       size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f || fstat(fileno(f), sent) != 0) {
        errbuf_printf(err, errlen, "upload %s: %s: %s", name, path, strerror(errno));
        if (f) fclose(f);
        return -1;
    }
    int status = upload(u, experiment, worker_id, name, iteration, f, NULL, (size_t)sent->st_size,
                        err, errlen);
    fclose(f);
    return status;
}

int uplink_upload_data(Uplink *u, int64_t experiment, const char *worker_id, const char *name,
                       int64_t iteration, const void *data, size_t len, char *err, size_t errlen)
{
    return upload(u, experiment, worker_id, name, iteration, NULL, data, len, err, errlen);
}

/* GET of an artifact into sink. */
static int fetch(Uplink *u, int64_t experiment, const char *name, Sink *sink, char *err,
                 size_t errlen)
{
    char path[512], what[300];
    snprintf(path, sizeof path, "/api/v1/experiments/%" PRId64 "/artifacts/%s", experiment, name);
    snprintf(what, sizeof what, "download %s", name);
    prepare(u, path, sink, 1);
    struct curl_slist *headers = curl_slist_append(NULL, u->auth);
    int status = perform(u, headers, what, sink, err, errlen);
    curl_slist_free_all(headers);
    return status;
}

int uplink_download_file(Uplink *u, int64_t experiment, const char *name, const char *path,
                         char *err, size_t errlen)
{
    size_t n = strlen(path) + 8;
    char *tmp = malloc(n);
    if (!tmp) {
        errbuf_printf(err, errlen, "download %s: out of memory", name);
        return -1;
    }
    snprintf(tmp, n, "%s.tmp", path);
    Sink sink = {.file = fopen(tmp, "wb")};
    int status = -1;
    if (!sink.file) {
        errbuf_printf(err, errlen, "download %s: %s: %s", name, tmp, strerror(errno));
    } else {
        status = fetch(u, experiment, name, &sink, err, errlen);
        if (fclose(sink.file) != 0 && status == 200) {
            errbuf_printf(err, errlen, "download %s: %s: %s", name, tmp, strerror(errno));
            status = -1;
        }
        if (status == 200 && rename(tmp, path) != 0) {
            errbuf_printf(err, errlen, "download %s: %s: %s", name, path, strerror(errno));
            status = -1;
        }
        if (status != 200) unlink(tmp);
    }
    free(tmp);
    return status;
}

int uplink_download_text(Uplink *u, int64_t experiment, const char *name, char *buf, size_t buflen,
                         char *err, size_t errlen)
{
    Sink sink = {.limit = buflen};
    int status = fetch(u, experiment, name, &sink, err, errlen);
    if (status == 200) {
        size_t n = sink.len;
        while (n > 0 && isspace((unsigned char)sink.data[n - 1])) n--;
        memcpy(buf, sink.data ? sink.data : "", n);
        buf[n] = '\0';
    }
    free(sink.data);
    return status;
}

/* ---- framing ---- */

json_t *uplink_metrics_event(const char *line, size_t len, const char *key, int64_t *iteration)
{
    json_t *o = json_loadb(line, len, 0, NULL);
    json_t *it = json_object_get(o, key);
    if (!json_is_object(o) || !json_is_integer(it) || json_integer_value(it) < 0) {
        json_decref(o);
        return NULL;
    }
    *iteration = json_integer_value(it);
    json_t *values = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        if (!*k || strcmp(k, key) == 0) continue;
        if (json_is_number(v)) json_object_set(values, k, v);
        /* an object of numbers (grpo's eval_template: a mean per caption template) becomes a
         * series per member: eval_template.pair, ... */
        const char *member;
        json_t *x;
        json_object_foreach(json_is_object(v) ? v : NULL, member, x)
        {
            char name[64];
            if (json_is_number(x) && *member &&
                snprintf(name, sizeof name, "%s.%s", k, member) < (int)sizeof name)
                json_object_set(values, name, x);
        }
    }
    /* grpo's per-chunk ratio statistics become series of their own: chunk_ratio.K.mean, ... */
    size_t chunk;
    json_t *stats;
    json_array_foreach(json_object_get(o, "chunk_ratio"), chunk, stats)
    {
        const char *stat;
        json_t *x;
        json_object_foreach(stats, stat, x)
        {
            char name[64];
            snprintf(name, sizeof name, "chunk_ratio.%zu.%s", chunk, stat);
            if (json_is_number(x) && strlen(stat) < 32) json_object_set(values, name, x);
        }
    }
    json_t *e = json_pack("{s:I, s:s, s:{s:I, s:o}}", "seq", (json_int_t)(*iteration + 1), "type",
                          "metrics", "data", "iteration", (json_int_t)*iteration, "values", values);
    json_decref(o);
    return e;
}

/* The length of the valid UTF-8 sequence at s (n bytes left), or 0 when it is not one. */
static size_t utf8_length(const unsigned char *s, size_t n)
{
    size_t k = s[0] < 0x80         ? 1
               : (s[0] >> 5) == 6  ? 2
               : (s[0] >> 4) == 14 ? 3
               : (s[0] >> 3) == 30 ? 4
                                   : 0;
    if (k == 0 || k > n) return 0;
    for (size_t i = 1; i < k; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return k;
}

json_t *uplink_log_event(const char *line, size_t len, int64_t seq)
{
    const char *cr = memrchr(line, '\r', len);
    if (cr) len -= (size_t)(cr + 1 - line), line = cr + 1;
    while (len > 0 && isspace((unsigned char)line[len - 1])) len--;
    if (len == 0) return NULL;
    /* the message as valid UTF-8 (jansson refuses anything else), '?' for a bad byte */
    char msg[UPLINK_MESSAGE_MAX + 1];
    size_t used = 0;
    for (size_t i = 0; i < len;) {
        size_t k = utf8_length((const unsigned char *)line + i, len - i);
        if (used + (k ? k : 1) > UPLINK_MESSAGE_MAX) break;
        if (k)
            memcpy(msg + used, line + i, k);
        else
            msg[used] = '?';
        used += k ? k : 1;
        i += k ? k : 1;
    }
    msg[used] = '\0';
    static const char prefix[] = "chunkgrpo-worker:";
    int error = strncmp(msg, prefix, sizeof prefix - 1) == 0 || strcasestr(msg, "error");
    return json_pack("{s:I, s:s, s:{s:s, s:s}}", "seq", (json_int_t)seq, "type", "log", "data",
                     "level", error ? "error" : "info", "message", msg);
}
