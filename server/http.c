/*
 * http.c: the libmicrohttpd glue. One thread per connection (SSE streams and long-polling leases
 * block in their handlers without holding anyone else up); each request is routed on its first
 * call, so a wrong path, method, token, content type or declared size is answered before its body
 * is read; JSON bodies are gathered within --max-body, uploads streamed to a temporary file and
 * hashed on the way. Static files are served from web/ and never from outside it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include "server.h"

int in_list(const char *s, const char *const *list)
{
    for (int i = 0; s && list[i]; i++)
        if (strcmp(s, list[i]) == 0) return 1;
    return 0;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void server_log(const Server *srv, int level, const char *fmt, ...)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    if (level > srv->log_level) return;
    char stamp[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    va_list ap;
    va_start(ap, fmt);
    flockfile(stderr);
    fprintf(stderr, "%s %-5s ", stamp, names[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    funlockfile(stderr);
    va_end(ap);
}

int role_caps(const char *role)
{
    if (strcmp(role, "read") == 0) return CAP_READ;
    if (strcmp(role, "write") == 0) return CAP_READ | CAP_WRITE;
    if (strcmp(role, "worker") == 0) return CAP_READ | CAP_WORKER;
    if (strcmp(role, "admin") == 0) return CAP_READ | CAP_WRITE | CAP_WORKER | CAP_ADMIN;
    return 0;
}

/* ---- replies ---- */

static int queue(Request *rq, unsigned status, struct MHD_Response *resp)
{
    if (!resp) return MHD_NO;
    rq->status = (int)status;
    rq->answered = 1;
    int ret = MHD_queue_response(rq->conn, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static struct MHD_Response *json_response(json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT | JSON_REAL_PRECISION(9));
    json_decref(body);
    if (!text) return NULL;
    size_t n = strlen(text);
    struct MHD_Response *resp = MHD_create_response_from_buffer(n, text, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(text);
        return NULL;
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    return resp;
}

int reply_json(Request *rq, unsigned status, json_t *body)
{
    return queue(rq, status, json_response(body));
}

int reply_created(Request *rq, json_t *body, const char *location)
{
    struct MHD_Response *resp = json_response(body);
    if (resp) MHD_add_response_header(resp, "Location", location);
    return queue(rq, 201, resp);
}

int reply_error(Request *rq, unsigned status, const char *code, const char *field, const char *fmt,
                ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    json_t *e = json_pack("{s:s, s:s}", "code", code, "message", msg);
    if (field) json_object_set_new(e, "field", json_string(field));
    struct MHD_Response *resp = json_response(json_pack("{s:o}", "error", e));
    if (resp && status == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    return queue(rq, status, resp);
}

int reply_empty(Request *rq, unsigned status)
{
    return queue(rq, status, MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT));
}

int reply_drop(Request *rq)
{
    rq->status = 499;
    rq->answered = 1;
    return MHD_NO;
}

int reply_text(Request *rq, unsigned status, const char *content_type, const char *text)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_MUST_COPY);
    if (resp) MHD_add_response_header(resp, "Content-Type", content_type);
    return queue(rq, status, resp);
}

const char *error_field(const char *message, char *field, size_t fieldlen)
{
    if (strncmp(message, "config.", 7) != 0) return NULL;
    size_t n = strcspn(message, ": ");
    if (n >= fieldlen) return NULL;
    memcpy(field, message, n);
    field[n] = 0;
    return field;
}

int reply_store_error(Request *rq, StoreRc rc, const char *err)
{
    switch (rc) {
    case STORE_NOT_FOUND: return reply_error(rq, 404, "not_found", NULL, "%s", err);
    case STORE_CONFLICT: return reply_error(rq, 409, "conflict", NULL, "%s", err);
    case STORE_INVALID: {
        char field[128];
        size_t n = strcspn(err, ": ");
        if (n >= sizeof field || err[n] != ':') n = 0;
        memcpy(field, err, n);
        field[n] = 0;
        return reply_error(rq, 400, "bad_request", n ? field : NULL, "%s", err);
    }
    default: return reply_error(rq, 500, "internal", NULL, "%s", err);
    }
}

/* "bytes=a-b", "bytes=a-" or "bytes=-n" over a file of size n: 1 with [*from, *to], 0 when the
 * header is absent or not a single byte range (the whole file is sent), -1 when unsatisfiable. */
static int parse_range(const char *h, int64_t size, int64_t *from, int64_t *to)
{
    if (!h || strncmp(h, "bytes=", 6) != 0 || strchr(h, ',')) return 0;
    const char *p = h + 6;
    char *end;
    if (*p == '-') {
        long long n = strtoll(p + 1, &end, 10);
        if (*end || n <= 0) return 0;
        if (size == 0) return -1;
        *from = n >= size ? 0 : size - n;
        *to = size - 1;
        return 1;
    }
    long long a = strtoll(p, &end, 10);
    if (end == p || *end != '-' || a < 0) return 0;
    p = end + 1;
    long long b = size - 1;
    if (*p) {
        b = strtoll(p, &end, 10);
        if (*end || b < a) return 0;
    }
    if (a >= size) return -1;
    *from = a;
    *to = b >= size ? size - 1 : b;
    return 1;
}

int reply_file(Request *rq, const char *path, const char *content_type, const char *etag)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd >= 0) close(fd);
        return reply_error(rq, 404, "not_found", NULL, "no such file");
    }
    int64_t from = 0, to = st.st_size - 1;
    int ranged = parse_range(rq_header(rq, "Range"), st.st_size, &from, &to);
    if (ranged < 0) {
        close(fd);
        char cr[64];
        snprintf(cr, sizeof cr, "bytes */%lld", (long long)st.st_size);
        struct MHD_Response *resp =
            json_response(json_pack("{s:{s:s, s:s}}", "error", "code", "range_not_satisfiable",
                                    "message", "the range starts past the end of the file"));
        if (resp) MHD_add_response_header(resp, "Content-Range", cr);
        return queue(rq, 416, resp);
    }
    struct MHD_Response *resp =
        MHD_create_response_from_fd_at_offset64((uint64_t)(to - from + 1), fd, (uint64_t)from);
    if (!resp) {
        close(fd);
        return MHD_NO;
    }
    MHD_add_response_header(resp, "Content-Type", content_type);
    MHD_add_response_header(resp, "Accept-Ranges", "bytes");
    if (etag) {
        char quoted[80];
        snprintf(quoted, sizeof quoted, "\"%s\"", etag);
        MHD_add_response_header(resp, "ETag", quoted);
    }
    if (ranged) {
        char cr[96];
        snprintf(cr, sizeof cr, "bytes %lld-%lld/%lld", (long long)from, (long long)to,
                 (long long)st.st_size);
        MHD_add_response_header(resp, "Content-Range", cr);
    }
    return queue(rq, ranged ? 206 : 200, resp);
}

/* ---- request helpers ---- */

const char *rq_header(Request *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

const char *rq_query(Request *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
}

int rq_query_int(Request *rq, const char *name, long long def, long long lo, long long hi,
                 long long *out)
{
    const char *v = rq_query(rq, name);
    if (!v || !*v) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (*end || errno || x < lo || x > hi) {
        reply_error(rq, 400, "bad_request", name, "query %s: expected an integer in [%lld, %lld]",
                    name, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

int peer_left(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLRDHUP};
    return fd >= 0 && poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

int rq_fd(Request *rq)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(rq->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    return ci ? ci->connect_fd : -1;
}

int64_t rq_id(Request *rq, int index)
{
    const char *p = rq->params[index];
    char *end;
    errno = 0;
    long long id = strtoll(p, &end, 10);
    if (!*p || *end || errno || id <= 0) {
        reply_error(rq, 404, "not_found", NULL, "no experiment %s", p);
        return 0;
    }
    return id;
}

int json_check_depth(const char *text, size_t len, int max_depth, char *err, size_t errlen)
{
    int depth = 0, in_string = 0;
    for (size_t i = 0; i < len; i++) {
        char c = text[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = 0;
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '{' || c == '[') {
            if (++depth > max_depth) {
                snprintf(err, errlen, "JSON nested deeper than %d levels", max_depth);
                return -1;
            }
        } else if (c == '}' || c == ']') {
            depth--;
        }
    }
    return 0;
}

int json_check_strings(const json_t *v, size_t max_len, char *err, size_t errlen)
{
    if (json_is_string(v)) {
        if (json_string_length(v) > max_len) {
            snprintf(err, errlen, "a string of %zu bytes is longer than the limit of %zu",
                     json_string_length(v), max_len);
            return -1;
        }
    } else if (json_is_object(v)) {
        const char *key;
        json_t *x;
        json_object_foreach((json_t *)v, key, x)
        {
            if (strlen(key) > max_len) {
                snprintf(err, errlen, "a key of %zu bytes is longer than the limit of %zu",
                         strlen(key), max_len);
                return -1;
            }
            if (json_check_strings(x, max_len, err, errlen)) return -1;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) if (json_check_strings(x, max_len, err, errlen)) return -1;
    }
    return 0;
}

json_t *rq_json(Server *srv, Request *rq)
{
    char err[256];
    if (rq->body_len == 0) {
        reply_error(rq, 400, "invalid_json", NULL, "the request needs a JSON body");
        return NULL;
    }
    if (json_check_depth(rq->body, rq->body_len, srv->limits.max_depth, err, sizeof err)) {
        reply_error(rq, 400, "invalid_json", NULL, "%s", err);
        return NULL;
    }
    json_error_t je;
    json_t *v = json_loadb(rq->body, rq->body_len, JSON_REJECT_DUPLICATES, &je);
    if (!v) {
        reply_error(rq, 400, "invalid_json", NULL, "line %d column %d: %s", je.line, je.column,
                    je.text);
        return NULL;
    }
    if (json_check_strings(v, srv->limits.max_string, err, sizeof err)) {
        json_decref(v);
        reply_error(rq, 400, "invalid_json", NULL, "%s", err);
        return NULL;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        reply_error(rq, 400, "invalid_json", NULL, "the body must be a JSON object");
        return NULL;
    }
    return v;
}

/* ---- static files ---- */

static const char *content_type_of(const char *path)
{
    static const char *const types[][2] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".json", "application/json"},
        {".png", "image/png"},
        {".svg", "image/svg+xml"},
        {".ico", "image/x-icon"},
        {".woff2", "font/woff2"},
        {".map", "application/json"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(path, '.');
    if (dot && !strchr(dot, '/'))
        for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
            if (strcmp(dot, types[i][0]) == 0) return types[i][1];
    return "application/octet-stream";
}

/* A GET outside the API: a file under web/, or index.html for the dashboard's own paths
 * (no extension). realpath() and a prefix check keep every answer inside web/. */
static int serve_static(Server *srv, Request *rq)
{
    if (!srv->web_dir[0]) return reply_error(rq, 404, "not_found", NULL, "no dashboard here");
    const char *path = rq->path;
    char want[8192], real[PATH_MAX];
    const char *last = strrchr(path, '/');
    int has_ext = last && strchr(last, '.');
    snprintf(want, sizeof want, "%s%s", srv->web_dir,
             strcmp(path, "/") == 0 || !has_ext ? "/index.html" : path);
    if (!realpath(want, real))
        return reply_error(rq, 404, "not_found", NULL, "no such file: %s", path);
    size_t n = strlen(srv->web_dir);
    if (strncmp(real, srv->web_dir, n) != 0 || (real[n] != '/' && real[n] != 0))
        return reply_error(rq, 404, "not_found", NULL, "no such file: %s", path);
    return reply_file(rq, real, content_type_of(real), NULL);
}

/* ---- the access handler ---- */

static int authenticate(Server *srv, Request *rq)
{
    const char *h = rq_header(rq, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return -1;
    const char *token = h + 7;
    while (*token == ' ') token++;
    uint8_t digest[32];
    char hex[65], role[16];
    sha256(token, strlen(token), digest);
    sha256_hex(digest, hex);
    if (store_token_lookup(srv->store, hex, &rq->token_id, role) != STORE_OK) return -1;
    rq->caps = role_caps(role);
    return 0;
}

static int route_first_call(Server *srv, Request *rq)
{
    int status;
    char allow[64] = "";
    int is_api = strncmp(rq->path, "/api/", 5) == 0 || strcmp(rq->path, "/metrics") == 0;
    rq->route = router_match(rq->method, rq->path, rq, &status, allow, sizeof allow);
    if (!rq->route && !is_api &&
        (strcmp(rq->method, "GET") == 0 || strcmp(rq->method, "HEAD") == 0))
        return serve_static(srv, rq);
    if (!rq->route) {
        if (status == 405) {
            struct MHD_Response *resp = json_response(
                json_pack("{s:{s:s, s:s}}", "error", "code", "method_not_allowed", "message",
                          "this path does not take that method; see the Allow header"));
            if (resp) MHD_add_response_header(resp, "Allow", allow);
            return queue(rq, 405, resp);
        }
        return reply_error(rq, 404, "not_found", NULL, "no such endpoint: %s %s", rq->method,
                           rq->path);
    }
    rq->route_index = (int)(rq->route - routes);
    if (rq->route->caps != CAP_NONE) {
        if (authenticate(srv, rq))
            return reply_error(rq, 401, "unauthorized", NULL,
                               "a valid bearer token is needed (Authorization: Bearer TOKEN)");
        if ((rq->caps & rq->route->caps) != rq->route->caps)
            return reply_error(rq, 403, "forbidden", NULL, "this token's role may not do that");
    }
    const char *len = rq_header(rq, "Content-Length");
    unsigned long long declared = len ? strtoull(len, NULL, 10) : 0;
    if (rq->route->body == BODY_JSON) {
        const char *ct = rq_header(rq, "Content-Type");
        if ((declared > 0 || (ct && *ct)) && (!ct || strncasecmp(ct, "application/json", 16) != 0))
            return reply_error(rq, 415, "unsupported_media_type", NULL,
                               "the body must be application/json");
        if (declared > srv->limits.max_body)
            return reply_error(rq, 413, "payload_too_large", NULL,
                               "the body is %llu bytes; the limit is %zu", declared,
                               srv->limits.max_body);
    } else if (rq->route->body == BODY_UPLOAD) {
        if (declared > srv->limits.max_upload)
            return reply_error(rq, 413, "payload_too_large", NULL,
                               "the upload is %llu bytes; the limit is %zu", declared,
                               srv->limits.max_upload);
        snprintf(rq->upload_tmp, sizeof rq->upload_tmp, "%s/tmp/upload-XXXXXX",
                 store_data_dir(srv->store));
        rq->upload_fd = mkstemp(rq->upload_tmp);
        if (rq->upload_fd < 0) {
            rq->upload_tmp[0] = 0;
            return reply_error(rq, 500, "internal", NULL, "cannot make a temporary file: %s",
                               strerror(errno));
        }
        sha256_init(&rq->upload_sha);
    }
    return MHD_YES;
}

static void take_body(Server *srv, Request *rq, const char *data, size_t n)
{
    if (rq->route->body == BODY_UPLOAD) {
        if (rq->upload_len + n > srv->limits.max_upload) rq->too_large = 1;
        if (rq->too_large || rq->upload_failed) return;
        sha256_update(&rq->upload_sha, data, n);
        for (size_t done = 0; done < n;) {
            ssize_t w = write(rq->upload_fd, data + done, n - done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                rq->upload_failed = 1;
                return;
            }
            done += (size_t)w;
        }
        rq->upload_len += n;
        return;
    }
    if (rq->route->body == BODY_NONE) return; /* a body where none is read is ignored */
    if (rq->body_len + n > srv->limits.max_body) rq->too_large = 1;
    if (rq->too_large) return;
    if (rq->body_len + n + 1 > rq->body_cap) {
        size_t cap = rq->body_cap ? rq->body_cap : 4096;
        while (cap < rq->body_len + n + 1) cap *= 2;
        char *b = realloc(rq->body, cap);
        if (!b) {
            rq->too_large = 1;
            return;
        }
        rq->body = b;
        rq->body_cap = cap;
    }
    memcpy(rq->body + rq->body_len, data, n);
    rq->body_len += n;
    rq->body[rq->body_len] = 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    Server *srv = cls;
    Request *rq = *con_cls;
    if (!rq) {
        rq = calloc(1, sizeof *rq);
        if (!rq) return MHD_NO;
        rq->conn = conn;
        rq->method = method;
        rq->path = url;
        rq->route_index = -1;
        rq->upload_fd = -1;
        rq->started_ns = mono_ns();
        *con_cls = rq;
        if (strlen(url) > 4096)
            return (enum MHD_Result)reply_error(rq, 414, "bad_request", NULL,
                                                "the URL is too long");
        return (enum MHD_Result)route_first_call(srv, rq);
    }
    if (rq->answered) { /* replied early: the rest of the body is dropped */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (*upload_data_size) {
        take_body(srv, rq, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (rq->too_large)
        return (enum MHD_Result)reply_error(
            rq, 413, "payload_too_large", NULL, "the body is over the limit of %zu bytes",
            rq->route->body == BODY_UPLOAD ? srv->limits.max_upload : srv->limits.max_body);
    if (rq->upload_failed)
        return (enum MHD_Result)reply_error(rq, 500, "internal", NULL,
                                            "writing the upload failed: %s", strerror(errno));
    int ret = rq->route->handler(srv, rq);
    if (!rq->answered) /* a handler that forgot to answer is a bug; never leave a client hanging */
        ret = reply_error(rq, 500, "internal", NULL, "no reply was made");
    return (enum MHD_Result)ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode code)
{
    Server *srv = cls;
    Request *rq = *con_cls;
    if (!rq) return;
    double seconds = (double)(mono_ns() - rq->started_ns) / 1e9;
    prom_count_request(rq->route_index, (unsigned)rq->status, seconds);
    server_log(srv, 3, "%s %s -> %d (%.1f ms)", rq->method, rq->path, rq->status, seconds * 1e3);
    if (rq->upload_fd >= 0) close(rq->upload_fd);
    if (rq->upload_tmp[0]) unlink(rq->upload_tmp); /* a handler that kept it renamed it */
    free(rq->body);
    free(rq);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    Server *srv = cls;
    if (srv->log_level < 1) return;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = 0;
    server_log(srv, 1, "http: %s", msg);
}

int http_start(Server *srv, const char *host, int port, int *bound_port, char *err, size_t errlen)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (strcmp(host, "localhost") == 0) host = "127.0.0.1";
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        snprintf(err, errlen, "--listen: \"%s\" is not an IPv4 address", host);
        return -1;
    }
    srv->daemon = MHD_start_daemon(
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG, 0, NULL,
        NULL, on_request, srv, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)srv->limits.max_connections, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv, MHD_OPTION_THREAD_STACK_SIZE,
        (size_t)512 * 1024, MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
    if (!srv->daemon) {
        snprintf(err, errlen, "cannot listen on %s:%d (in use, or not an address of this host?)",
                 host, port);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = info ? info->port : port;
    return 0;
}

void http_stop(Server *srv)
{
    if (!srv->daemon) return;
    MHD_stop_daemon(srv->daemon);
    srv->daemon = NULL;
}
