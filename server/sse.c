/*
 * sse.c: the event hub and the Server-Sent Events streams. The store calls hub_notify after every
 * commit that adds events or queues work; streams and long-polling leases wait on the hub's
 * generation counter. A stream reads the events table after its last id, so a client that
 * reconnects with Last-Event-ID misses nothing, and every client reads at its own pace (one slow
 * client never holds up the rest or the API).
 */
#include <errno.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "handlers.h"

#define KEEPALIVE_MS 15000
#define PEER_CHECK_MS 1000 /* how soon a stream whose client left frees its connection */
#define EVENTS_PER_READ 256

void hub_init(Hub *h)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_init(&h->mu, NULL);
    h->generation = 0;
    h->stopping = 0;
    h->draining = 0;
    h->sse_clients = 0;
}

void hub_notify(void *hub)
{
    Hub *h = hub;
    pthread_mutex_lock(&h->mu);
    h->generation++;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mu);
}

void hub_drain(Hub *h)
{
    pthread_mutex_lock(&h->mu);
    h->draining = 1;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mu);
}

void hub_stop(Hub *h)
{
    pthread_mutex_lock(&h->mu);
    h->stopping = 1;
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mu);
}

uint64_t hub_generation(Hub *h, int *stopping, int *draining)
{
    pthread_mutex_lock(&h->mu);
    uint64_t g = h->generation;
    if (stopping) *stopping = h->stopping;
    if (draining) *draining = h->draining;
    pthread_mutex_unlock(&h->mu);
    return g;
}

int hub_wait(Hub *h, uint64_t *seen, int timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
    if (until.tv_nsec >= 1000000000) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&h->mu);
    while (!h->stopping && h->generation == *seen)
        if (pthread_cond_timedwait(&h->cond, &h->mu, &until) == ETIMEDOUT) break;
    *seen = h->generation;
    int stopping = h->stopping;
    pthread_mutex_unlock(&h->mu);
    return stopping;
}

typedef struct {
    Server *srv;
    int fd;                /* the client's socket, to notice when it leaves */
    int64_t experiment_id; /* 0: every experiment */
    int64_t last_id;
    char *buf;
    size_t len, off, cap;
} Stream;

static int append(Stream *st, const char *text, size_t n)
{
    if (st->len + n > st->cap) {
        size_t cap = st->cap ? st->cap : 8192;
        while (cap < st->len + n) cap *= 2;
        char *b = realloc(st->buf, cap);
        if (!b) return -1;
        st->buf = b;
        st->cap = cap;
    }
    memcpy(st->buf + st->len, text, n);
    st->len += n;
    return 0;
}

/* Formats the events after last_id into the buffer; returns how many. */
static int fill(Stream *st)
{
    json_t *events =
        store_events_after(st->srv->store, st->experiment_id, st->last_id, EVENTS_PER_READ);
    if (!events) return -1;
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        json_t *data = json_deep_copy(json_object_get(e, "data"));
        if (!json_is_object(data)) {
            json_decref(data);
            data = json_object();
        }
        json_object_set(data, "experiment_id", json_object_get(e, "experiment_id"));
        json_object_set(data, "ts", json_object_get(e, "ts"));
        char *text = json_dumps(data, JSON_COMPACT | JSON_REAL_PRECISION(9));
        json_decref(data);
        st->last_id = json_integer_value(json_object_get(e, "id"));
        char head[128];
        int n = snprintf(head, sizeof head, "id: %lld\nevent: %s\ndata: ", (long long)st->last_id,
                         json_string_value(json_object_get(e, "type")));
        if (!text || append(st, head, (size_t)n) || append(st, text, strlen(text)) ||
            append(st, "\n\n", 2)) {
            free(text);
            json_decref(events);
            return -1;
        }
        free(text);
    }
    int count = (int)json_array_size(events);
    json_decref(events);
    return count;
}

static ssize_t read_stream(void *cls, uint64_t pos, char *out, size_t max)
{
    Stream *st = cls;
    Hub *hub = &st->srv->hub;
    while (st->off == st->len) {
        st->off = st->len = 0;
        int stopping;
        uint64_t seen = hub_generation(hub, &stopping, NULL);
        if (stopping) return MHD_CONTENT_READER_END_OF_STREAM;
        int n = fill(st);
        if (n < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (n > 0) break;
        /* wait for news in slices: a client that left would otherwise hold its connection (and
         * its place under --max-connections) until the next keep-alive write fails */
        uint64_t before = seen;
        for (int waited = 0; seen == before && waited < KEEPALIVE_MS; waited += PEER_CHECK_MS) {
            if (hub_wait(hub, &seen, PEER_CHECK_MS)) return MHD_CONTENT_READER_END_OF_STREAM;
            if (peer_left(st->fd)) return MHD_CONTENT_READER_END_WITH_ERROR;
        }
        if (seen != before) continue; /* something happened: look again */
        /* nothing new within the interval: a comment keeps proxies and clients from timing out */
        if (append(st, ": keep-alive\n\n", 14)) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    (void)pos;
    size_t n = st->len - st->off < max ? st->len - st->off : max;
    memcpy(out, st->buf + st->off, n);
    st->off += n;
    return (ssize_t)n;
}

static void free_stream(void *cls)
{
    Stream *st = cls;
    pthread_mutex_lock(&st->srv->hub.mu);
    st->srv->hub.sse_clients--;
    pthread_mutex_unlock(&st->srv->hub.mu);
    free(st->buf);
    free(st);
}

static int start_stream(Server *srv, Request *rq, int64_t experiment_id)
{
    const char *last = rq_header(rq, "Last-Event-ID");
    if (!last) last = rq_query(rq, "last_event_id");
    long long last_id = 0;
    if (last && *last) {
        char *end;
        last_id = strtoll(last, &end, 10);
        if (*end || last_id < 0)
            return reply_error(rq, 400, "bad_request", "Last-Event-ID",
                               "Last-Event-ID: expected an event id");
    }
    Stream *st = calloc(1, sizeof *st);
    if (!st) return reply_error(rq, 500, "internal", NULL, "out of memory");
    st->srv = srv;
    st->fd = rq_fd(rq);
    st->experiment_id = experiment_id;
    st->last_id = last_id;
    if (append(st, "retry: 3000\n\n", 13)) {
        free(st);
        return reply_error(rq, 500, "internal", NULL, "out of memory");
    }
    pthread_mutex_lock(&srv->hub.mu);
    srv->hub.sse_clients++;
    pthread_mutex_unlock(&srv->hub.mu);
    struct MHD_Response *resp =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16384, read_stream, st, free_stream);
    if (!resp) {
        free_stream(st);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", "text/event-stream");
    MHD_add_response_header(resp, "Cache-Control", "no-cache");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    rq->status = 200;
    rq->answered = 1;
    int ret = MHD_queue_response(rq->conn, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

int h_events_one(Server *srv, Request *rq)
{
    int64_t id = rq_id(rq, 0);
    if (!id) return REPLIED;
    json_t *x = store_experiment_get(srv->store, id);
    if (!x) return reply_error(rq, 404, "not_found", NULL, "no experiment %lld", (long long)id);
    json_decref(x);
    return start_stream(srv, rq, id);
}

int h_events_all(Server *srv, Request *rq)
{
    return start_stream(srv, rq, 0);
}
