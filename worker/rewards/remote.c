/*
 * remote.c: the reward server's client over libcurl and jansson. See remote.h.
 */
#include "rewards/remote.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "errbuf.h"
#include "png.h"

#define CONNECT_TIMEOUT_S 5
#define ANSWER_MAX (64 << 20) /* a /v1/score answer larger than this is not a reward server's */
#define BACKOFF_FIRST_S 0.5
#define BACKOFF_MAX_S 30.0
#define URL_MAX 1024

struct RemoteReward {
    CURL *h;
    char *url; /* without a trailing slash */
    char *reward;
    char *auth;  /* "Authorization: Bearer ..." from $CHUNKGRPO_REMOTE_TOKEN, or NULL */
    char id[32]; /* the first part of every request_id */
    double timeout_s;
    int retries, batch;
    char curl_err[CURL_ERROR_SIZE];
};

char *base64_encode(const uint8_t *data, size_t len)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len) v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < len) v |= data[i + 2];
        *o++ = abc[v >> 18 & 63];
        *o++ = abc[v >> 12 & 63];
        *o++ = i + 1 < len ? abc[v >> 6 & 63] : '=';
        *o++ = i + 2 < len ? abc[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* An answer's body, in memory. */
typedef struct {
    char *data;
    size_t len, cap;
} Body;

static size_t on_body(char *p, size_t size, size_t n, void *ctx)
{
    Body *b = ctx;
    size_t bytes = size * n;
    if (b->len + bytes + 1 > ANSWER_MAX) return 0; /* ends the transfer: CURLE_WRITE_ERROR */
    if (b->len + bytes + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + bytes + 1) cap *= 2;
        char *grown = realloc(b->data, cap);
        if (!grown) return 0;
        b->data = grown, b->cap = cap;
    }
    memcpy(b->data + b->len, p, bytes);
    b->len += bytes;
    b->data[b->len] = '\0';
    return bytes;
}

/* The server's reason for an error status: {"error": {"message"}}, {"error": "..."}, or the
 * start of the body as text. */
static void error_reason(const Body *b, char *out, size_t outlen)
{
    out[0] = '\0';
    if (!b->data) return;
    json_t *j = json_loads(b->data, 0, NULL), *e = json_object_get(j, "error");
    const char *msg =
        json_is_string(e) ? json_string_value(e) : json_string_value(json_object_get(e, "message"));
    if (msg)
        snprintf(out, outlen, ": %s", msg);
    else
        snprintf(out, outlen, ": %.120s", b->data);
    json_decref(j);
}

/* One request: GET path, or POST body to it. Returns the HTTP status with the answer in *b, or
 * -1 when no answer came (connection, time-out), with the reason in err. */
static long attempt(RemoteReward *rr, const char *path, const char *body, Body *b, char *err,
                    size_t errlen)
{
    CURL *h = rr->h;
    curl_easy_reset(h); /* keeps the open connection */
    char url[URL_MAX + 32];
    snprintf(url, sizeof url, "%s%s", rr->url, path);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(rr->timeout_s * 1000));
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, rr->curl_err);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    struct curl_slist *headers = rr->auth ? curl_slist_append(NULL, rr->auth) : NULL;
    if (body) headers = curl_slist_append(headers, "Content-Type: application/json");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    if (body) {
        curl_easy_setopt(h, CURLOPT_POST, 1L);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    rr->curl_err[0] = '\0';
    CURLcode rc = curl_easy_perform(h);
    curl_slist_free_all(headers);
    if (rc != CURLE_OK) {
        errbuf_printf(err, errlen, "%s", rr->curl_err[0] ? rr->curl_err : curl_easy_strerror(rc));
        return -1;
    }
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    return status;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* A request with its retries: 0 with the 2xx answer in *b, or -1 with a message naming the URL.
 * *retries counts the repeats. */
static int call(RemoteReward *rr, const char *path, const char *body, Body *b, int *retries,
                char *err, size_t errlen)
{
    double wait = BACKOFF_FIRST_S;
    for (int k = 0;; k++) {
        char why[512];
        free(b->data);
        *b = (Body){0};
        long status = attempt(rr, path, body, b, why, sizeof why);
        if (status >= 200 && status < 300) return 0;
        int again = status < 0 || status == 429 || status >= 500;
        if (status >= 0) {
            char reason[200];
            error_reason(b, reason, sizeof reason);
            snprintf(why, sizeof why, "HTTP %ld%s", status, reason);
        }
        if (!again || k == rr->retries) {
            errbuf_printf(err, errlen, "%s%s: %s%s", rr->url, path, why,
                          again ? " (no more retries: config.remote_retries)" : "");
            return -1;
        }
        sleep_s(wait);
        wait = fmin(2 * wait, BACKOFF_MAX_S);
        (*retries)++;
    }
}

RemoteReward *remote_reward_open(const RemoteSettings *s, char *err, size_t errlen)
{
    size_t n = strlen(s->url);
    if (n > URL_MAX) {
        errbuf_printf(err, errlen, "remote reward: the URL is longer than %d bytes", URL_MAX);
        return NULL;
    }
    RemoteReward *rr = calloc(1, sizeof *rr);
    while (n > 0 && s->url[n - 1] == '/') n--;
    if (rr) {
        rr->h = curl_easy_init();
        rr->url = strndup(s->url, n);
        rr->reward = strdup(s->reward);
        rr->timeout_s = s->timeout_s;
        rr->retries = s->retries;
        rr->batch = s->batch > 0 ? s->batch : 1;
        const char *token = getenv("CHUNKGRPO_REMOTE_TOKEN");
        if (token && *token && (rr->auth = malloc(strlen(token) + 32)))
            sprintf(rr->auth, "Authorization: Bearer %s", token);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        snprintf(rr->id, sizeof rr->id, "%lx%lx", (unsigned long)getpid(),
                 (unsigned long)(now.tv_sec * 1000 + now.tv_nsec / 1000000) & 0xffffffffUL);
    }
    if (!rr || !rr->h || !rr->url || !rr->reward) {
        errbuf_printf(err, errlen, "remote reward: cannot start libcurl (out of memory?)");
        remote_reward_close(rr);
        return NULL;
    }
    Body b = {0};
    int retries = 0;
    char why[600];
    if (call(rr, "/v1/health", NULL, &b, &retries, why, sizeof why)) {
        errbuf_printf(err, errlen, "remote reward server (config.remote_url) not ready: %s", why);
        remote_reward_close(rr);
        rr = NULL;
    }
    free(b.data);
    return rr;
}

void remote_reward_close(RemoteReward *rr)
{
    if (!rr) return;
    if (rr->h) curl_easy_cleanup(rr->h);
    free(rr->url);
    free(rr->reward);
    if (rr->auth) memset(rr->auth, 0, strlen(rr->auth)); /* the token leaves no copy behind */
    free(rr->auth);
    free(rr);
}

/* The id of a result as an item index in first .. first + count - 1, or -1. */
static int result_index(const char *id, int first, int count)
{
    char *end;
    errno = 0;
    long v = strtol(id, &end, 10);
    if (!*id || *end || errno || v < first || v >= (long)first + count) return -1;
    return (int)(v - first);
}

int remote_parse_results(const char *body, const char *request_id, int first, int count,
                         float *scores, RemoteScoreStats *st, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *j = json_loads(body ? body : "", 0, &jerr);
    int rc = -1;
    char *seen = calloc((size_t)count, 1);
    json_t *results = json_object_get(j, "results");
    const char *rid = json_string_value(json_object_get(j, "request_id"));
    if (!seen) {
        errbuf_printf(err, errlen, "out of memory");
    } else if (!json_is_object(j)) {
        errbuf_printf(err, errlen, "the answer is not a JSON object (%s)",
                      j ? "another JSON value" : jerr.text);
    } else if (!rid || strcmp(rid, request_id) != 0) {
        errbuf_printf(err, errlen, "request_id: answered %s%s%s for request \"%s\"",
                      rid ? "\"" : "", rid ? rid : "nothing", rid ? "\"" : "", request_id);
    } else if (!json_is_array(results)) {
        errbuf_printf(err, errlen, "results: missing or not an array");
    } else {
        size_t i;
        json_t *r;
        rc = 0;
        json_array_foreach(results, i, r)
        {
            const char *id = json_string_value(json_object_get(r, "id"));
            int k = id ? result_index(id, first, count) : -1;
            json_t *score = json_object_get(r, "score"), *e = json_object_get(r, "error");
            if (k < 0 || seen[k]) {
                errbuf_printf(err, errlen, "results[%zu].id: %s%s%s %s", i, id ? "\"" : "",
                              id ? id : "missing or not a string", id ? "\"" : "",
                              k < 0 ? "names no item of the request" : "answered twice");
                rc = -1;
                break;
            }
            if (json_is_string(e)) {
                scores[k] = NAN;
                if (!st->item_errors++)
                    snprintf(st->first_error, sizeof st->first_error, "item %s: %s", id,
                             json_string_value(e));
            } else if (json_is_number(score) && isfinite(json_number_value(score))) {
                scores[k] = (float)json_number_value(score);
            } else {
                errbuf_printf(err, errlen, "results[%zu].score: %s", i,
                              score ? "not a finite number" : "missing (and no error given)");
                rc = -1;
                break;
            }
            seen[k] = 1;
        }
        for (int k = 0; rc == 0 && k < count; k++)
            if (!seen[k]) {
                errbuf_printf(err, errlen, "results: no answer for item \"%d\"", first + k);
                rc = -1;
            }
    }
    free(seen);
    json_decref(j);
    return rc;
}

/* The JSON body of one request: items first .. first + count - 1. NULL when out of memory or
 * an image cannot be encoded (err says which). */
static char *score_request(const RemoteReward *rr, const char *request_id, int first, int count,
                           const char *const *prompts, const float *imgs, int S, int C, char *err,
                           size_t errlen)
{
    json_t *items = json_array(), *req = NULL;
    uint8_t *rgb = malloc((size_t)S * S * 3);
    char *text = NULL;
    int ok = items && rgb;
    for (int k = 0; ok && k < count; k++) {
        int i = first + k;
        uint8_t *png = NULL;
        size_t len = 0;
        image_to_rgb8(imgs + (size_t)i * S * S * C, S, C, rgb);
        char id[16], why[256];
        snprintf(id, sizeof id, "%d", i);
        if (png_encode_rgb(rgb, S, S, &png, &len, why, sizeof why)) {
            errbuf_printf(err, errlen, "image %d: %s", i, why);
            ok = 0;
            break;
        }
        char *b64 = base64_encode(png, len);
        free(png);
        ok = b64 && json_array_append_new(items, json_pack("{s:s, s:s, s:s}", "id", id, "prompt",
                                                           prompts[i], "image_png_b64", b64)) == 0;
        free(b64);
    }
    if (ok) {
        req = json_pack("{s:s, s:s, s:O}", "request_id", request_id, "reward", rr->reward, "items",
                        items);
        text = req ? json_dumps(req, JSON_COMPACT) : NULL;
        if (!text) errbuf_printf(err, errlen, "out of memory");
    } else if (!err || !err[0]) {
        errbuf_printf(err, errlen, "out of memory");
    }
    json_decref(req);
    json_decref(items);
    free(rgb);
    return text;
}

int remote_reward_score(RemoteReward *rr, const char *tag, const char *what, int n,
                        const char *const *prompts, const float *imgs, int S, int C, float *scores,
                        RemoteScoreStats *st, char *err, size_t errlen)
{
    memset(st, 0, sizeof *st);
    for (int first = 0, k = 0; first < n; first += rr->batch, k++) {
        int count = n - first < rr->batch ? n - first : rr->batch;
        char request_id[160], why[600] = "";
        snprintf(request_id, sizeof request_id, "%s-%s-%d", rr->id, tag, k);
        char *body =
            score_request(rr, request_id, first, count, prompts, imgs, S, C, why, sizeof why);
        Body b = {0};
        int rc = !body ? -1 : call(rr, "/v1/score", body, &b, &st->retries, why, sizeof why);
        if (rc == 0) {
            st->requests++;
            char bad[400];
            if ((rc = remote_parse_results(b.data, request_id, first, count, scores + first, st,
                                           bad, sizeof bad)))
                snprintf(why, sizeof why, "%s/v1/score, request %s: %s", rr->url, request_id, bad);
        }
        free(body);
        free(b.data);
        if (rc) {
            errbuf_printf(err, errlen, "remote reward: %s", why);
            return -1;
        }
    }
    if (2 * st->item_errors > n) {
        errbuf_printf(err, errlen,
                      "remote reward: the server failed on %d of the %d images of %s (%s)",
                      st->item_errors, n, what, st->first_error);
        return -1;
    }
    return 0;
}
