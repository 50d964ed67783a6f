/*
 * server.h: what the control server's parts share: the Server (settings, database, event hub,
 * HTTP daemon), a Request as the handlers see it, the route table's entries, and the reply
 * helpers. docs/api.md is the API; http.c is the libmicrohttpd glue, router.c the route table,
 * api_*.c the handlers, sse.c the event hub and streams, prom.c the /metrics counters.
 */
#ifndef CHUNKGRPO_SERVER_H
#define CHUNKGRPO_SERVER_H

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>

#include "sha256.h"
#include "store.h"

struct MHD_Daemon;
struct MHD_Connection;

#define SERVER_VERSION "0.1.0"

/* What a token may do. A role is a set of these: read = READ; write = READ|WRITE;
 * worker = READ|WORKER; admin = all. */
enum { CAP_NONE = 0, CAP_READ = 1, CAP_WRITE = 2, CAP_WORKER = 4, CAP_ADMIN = 8 };
int role_caps(const char *role); /* 0 for an unknown role */

typedef struct {
    size_t max_body;   /* JSON request bodies, bytes */
    size_t max_upload; /* artifact uploads, bytes */
    int max_depth;     /* JSON nesting */
    size_t max_string; /* any JSON string or key, bytes */
    int max_connections;
    int lease_seconds; /* how long a lease lasts without a heartbeat */
    int max_attempts;  /* default for experiments that do not say */
} Limits;

/* New events or queued work: SSE streams and long-polling leases wait on this. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    uint64_t generation; /* bumped on every notify */
    int stopping;
    int draining; /* shutting down: no new leases (pending long polls answer 204) */
    int sse_clients;
} Hub;

typedef struct {
    Limits limits;
    Store *store;
    Hub hub;
    struct MHD_Daemon *daemon;
    char web_dir[4096];    /* realpath of the dashboard's files ("" = none) */
    char schema_dir[4096]; /* migrations and openapi.json */
    int64_t started_ms;
    int log_level; /* 0 error, 1 warn, 2 info, 3 debug */
} Server;

typedef enum { BODY_NONE, BODY_JSON, BODY_UPLOAD } BodyKind;

struct Request;
typedef int (*Handler)(Server *srv, struct Request *rq);

typedef struct {
    const char *method;
    const char *pattern; /* "/api/v1/experiments/{}"; "{}" one segment, "{*}" the rest */
    int caps;            /* what the token must allow (CAP_NONE: no token needed) */
    BodyKind body;
    Handler handler;
} Route;

#define ROUTE_MAX_PARAMS 4
#define ROUTE_PARAM_MAX 512

typedef struct Request {
    struct MHD_Connection *conn;
    const char *method, *path;
    const Route *route; /* NULL for static files and errors before routing */
    int route_index;    /* for the per-route counters; -1 none */
    char params[ROUTE_MAX_PARAMS][ROUTE_PARAM_MAX];
    int nparams;
    int caps;
    int64_t token_id;
    /* BODY_JSON */
    char *body;
    size_t body_len, body_cap;
    int too_large;
    /* BODY_UPLOAD: streamed to a temporary file while hashed */
    int upload_fd;
    char upload_tmp[4200];
    size_t upload_len;
    Sha256 upload_sha;
    int upload_failed;
    int64_t started_ns;
    int status; /* what was answered, for the counters */
    int answered;
} Request;

/* The route table (router.c) and its matcher: the route, or NULL with *status 404 (no such
 * path) or 405 (the path exists; allow gets its methods, comma separated). */
#define ROUTE_MAX 64 /* prom.c keeps counters for this many routes */
extern const Route routes[];
extern const int route_count;
const Route *router_match(const char *method, const char *path, Request *rq, int *status,
                          char *allow, size_t allowlen);

/* ---- replies (each queues the response on the request's connection; returns MHD_YES/NO) ---- */
#define REPLIED 1 /* MHD_YES: what a handler returns once a reply_* call has answered */
int reply_json(Request *rq, unsigned status, json_t *body); /* steals body */
/* 201 Created with a Location header. */
int reply_created(Request *rq, json_t *body, const char *location);
/* {"error": {"code", "message", "field"?}}; field may be NULL */
int reply_error(Request *rq, unsigned status, const char *code, const char *field, const char *fmt,
                ...) __attribute__((format(printf, 5, 6)));
int reply_empty(Request *rq, unsigned status);
/* The client has gone: no reply, the connection is closed (counted as status 499). */
int reply_drop(Request *rq);
int reply_text(Request *rq, unsigned status, const char *content_type, const char *text);
/* A file with its content type, ETag and byte ranges (Range header). */
int reply_file(Request *rq, const char *path, const char *content_type, const char *etag);
/* A StoreRc other than STORE_OK as an error reply (404 / 409 / 500). */
int reply_store_error(Request *rq, StoreRc rc, const char *err);
/* "config.lr: ..." -> "config.lr" into field; NULL when the message names no field. */
const char *error_field(const char *message, char *field, size_t fieldlen);

/* ---- request helpers ---- */
const char *rq_header(Request *rq, const char *name);
const char *rq_query(Request *rq, const char *name);
/* Parses the JSON body within the limits: NULL after replying 400 with what was wrong. */
json_t *rq_json(Server *srv, Request *rq);
/* 1 when the client of fd has closed its end (a zero-timeout poll). */
int peer_left(int fd);
/* The request's socket, or -1. */
int rq_fd(Request *rq);
/* A path parameter as a positive id: 0 after replying 404. */
int64_t rq_id(Request *rq, int index);
/* A query integer in [lo, hi] (def when absent): -1 after replying 400 naming the parameter. */
int rq_query_int(Request *rq, const char *name, long long def, long long lo, long long hi,
                 long long *out);

/* Checks a JSON text's nesting depth without parsing it (the depth limit stops the parser from
 * being driven deep) and, after parsing, every string's length. 0, or -1 with a message. */
int json_check_depth(const char *text, size_t len, int max_depth, char *err, size_t errlen);
int json_check_strings(const json_t *v, size_t max_len, char *err, size_t errlen);

/* ---- the event hub (sse.c) ---- */
void hub_init(Hub *h);
void hub_notify(void *hub); /* store_set_notify's callback */
void hub_stop(Hub *h);
void hub_drain(Hub *h); /* no new leases from now on */
/* The generation now (what hub_wait compares with), and the stopping and draining flags where
 * asked. Read it before looking for work, so that work added in between is not missed. */
uint64_t hub_generation(Hub *h, int *stopping, int *draining);
/* Waits until the generation passes *seen or timeout_ms; returns 1 when stopping. */
int hub_wait(Hub *h, uint64_t *seen, int timeout_ms);

/* ---- counters for /metrics (prom.c) ---- */
void prom_count_request(int route_index, unsigned status, double seconds);
char *prom_render(Server *srv); /* Prometheus text; caller frees */

/* ---- logging ---- */
void server_log(const Server *srv, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* 1 when s is one of the NULL-terminated list's strings. */
int in_list(const char *s, const char *const *list);

/* ---- the HTTP daemon (http.c) ---- */
int http_start(Server *srv, const char *host, int port, int *bound_port, char *err, size_t errlen);
void http_stop(Server *srv);

#endif
