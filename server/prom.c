/*
 * prom.c: counters for GET /metrics in the Prometheus text format: requests and their latencies
 * by route (a histogram), the queue by status, workers, SSE clients. Counting is lock-free.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

#define NBUCKETS 10
static const double bucket_le[NBUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                           0.025,  0.05,  0.1,    0.5,   2.5};
static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx"};

typedef struct {
    atomic_ullong by_class[5];
    atomic_ullong buckets[NBUCKETS]; /* cumulative counts are made when rendering */
    atomic_ullong count;
    atomic_ullong micros;
} RouteStats;

/* [route_count] is the "other" row: static files and requests no route took */
static RouteStats stats[ROUTE_MAX + 1];

void prom_count_request(int route_index, unsigned status, double seconds)
{
    RouteStats *r =
        &stats[route_index >= 0 && route_index < route_count ? route_index : route_count];
    int c = status >= 100 && status < 600 ? (int)status / 100 - 1 : 4;
    atomic_fetch_add_explicit(&r->by_class[c], 1, memory_order_relaxed);
    int b = 0;
    while (b < NBUCKETS && seconds > bucket_le[b]) b++;
    if (b < NBUCKETS) atomic_fetch_add_explicit(&r->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&r->micros, (unsigned long long)(seconds * 1e6),
                              memory_order_relaxed);
}

char *prom_render(Server *srv)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    json_t *counts = store_counts(srv->store);
    static const char *const statuses[] = {"queued", "running", "succeeded", "failed", "canceled"};
    fprintf(f, "# HELP chunkgrpo_experiments Experiments by status.\n"
               "# TYPE chunkgrpo_experiments gauge\n");
    for (int i = 0; i < 5; i++)
        fprintf(f, "chunkgrpo_experiments{status=\"%s\"} %lld\n", statuses[i],
                (long long)json_integer_value(json_object_get(counts, statuses[i])));
    fprintf(
        f,
        "# HELP chunkgrpo_workers Registered workers, and those heard from in the last minute.\n"
        "# TYPE chunkgrpo_workers gauge\n"
        "chunkgrpo_workers{state=\"registered\"} %lld\n"
        "chunkgrpo_workers{state=\"active\"} %lld\n",
        (long long)json_integer_value(json_object_get(counts, "workers")),
        (long long)json_integer_value(json_object_get(counts, "workers_active")));
    json_decref(counts);
    pthread_mutex_lock(&srv->hub.mu);
    int clients = srv->hub.sse_clients;
    pthread_mutex_unlock(&srv->hub.mu);
    fprintf(f,
            "# HELP chunkgrpo_sse_clients Open Server-Sent Events streams.\n"
            "# TYPE chunkgrpo_sse_clients gauge\nchunkgrpo_sse_clients %d\n",
            clients);
    fprintf(f, "# HELP chunkgrpo_http_requests_total Requests by route and status class.\n"
               "# TYPE chunkgrpo_http_requests_total counter\n");
    for (int i = 0; i <= route_count; i++)
        for (int c = 0; c < 5; c++) {
            unsigned long long n = atomic_load(&stats[i].by_class[c]);
            if (n)
                fprintf(f, "chunkgrpo_http_requests_total{route=\"%s %s\",code=\"%s\"} %llu\n",
                        i < route_count ? routes[i].method : "GET",
                        i < route_count ? routes[i].pattern : "other", classes[c], n);
        }
    fprintf(f, "# HELP chunkgrpo_http_request_seconds Request latency by route.\n"
               "# TYPE chunkgrpo_http_request_seconds histogram\n");
    for (int i = 0; i <= route_count; i++) {
        unsigned long long count = atomic_load(&stats[i].count), cum = 0;
        if (!count) continue;
        char label[160];
        snprintf(label, sizeof label, "route=\"%s %s\"", i < route_count ? routes[i].method : "GET",
                 i < route_count ? routes[i].pattern : "other");
        for (int b = 0; b < NBUCKETS; b++) {
            cum += atomic_load(&stats[i].buckets[b]);
            fprintf(f, "chunkgrpo_http_request_seconds_bucket{%s,le=\"%g\"} %llu\n", label,
                    bucket_le[b], cum);
        }
        fprintf(f, "chunkgrpo_http_request_seconds_bucket{%s,le=\"+Inf\"} %llu\n", label, count);
        fprintf(f, "chunkgrpo_http_request_seconds_sum{%s} %.6f\n", label,
                (double)atomic_load(&stats[i].micros) / 1e6);
        fprintf(f, "chunkgrpo_http_request_seconds_count{%s} %llu\n", label, count);
    }
    fclose(f);
    return buf;
}
