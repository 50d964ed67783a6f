/*
 * fuzz_router.c: libFuzzer harness for the control server's request router (router_match over
 * the table of server/routes.c) and the JSON limit checks every request body goes through
 * (json_check_depth and json_check_strings, server/http.c).
 *
 * Input: byte 0 picks the method (GET, POST, PUT, DELETE, HEAD, PATCH, OPTIONS), the rest, cut at
 * its first NUL and at 8 KiB, is the path. Invariants (abort() on violation):
 *  - a matched route has the asked method (HEAD takes GET routes), as many params as its pattern
 *    has "{}" and "{*}", each non-empty and shorter than ROUTE_PARAM_MAX, a "{}" param without
 *    '/'; the params put back into the pattern give the path exactly;
 *  - the route is the first of the table that an independent segment-wise matcher (ref_fits)
 *    finds for that method; NULL means none: 405 when some route takes the path under another
 *    method (allow = exactly those methods, in table order), 404 when none does.
 * The whole input is also a JSON text: json_check_depth(text, 32) must accept exactly the valid
 * texts whose parsed nesting is at most 32 (it must never let a deeper one through; it should not
 * reject a shallower one), and json_check_strings(v, 16) must reject exactly the values with a
 * string or key longer than 16 bytes.
 *
 * routes.c's table points at every handler, so the harness links the whole server library
 * (every server/ source but main.c) and the common files it needs; none of that code runs here.
 *
 * Build and run (seed corpus in tests/fuzz/corpus/router/; `make fuzz` does this):
 *   clang -g -O1 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -Iserver -Icommon \
 *       tests/fuzz/fuzz_router.c $(ls server/[a-z]*.c | grep -v main.c) common/sha256.c \
 *       common/experiment.c common/config.c common/jsonutil.c \
 *       -lmicrohttpd -lsqlite3 -luv -lpthread -ljansson -o fuzz_router
 *   ./fuzz_router -dict=tests/fuzz/router.dict -max_len=9000 -max_total_time=60 NEW_DIR \
 *       tests/fuzz/corpus/router/
 *   ./fuzz_router -runs=0 tests/fuzz/corpus/router/          # replay only
 */
#include "server.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_MAX_FUZZ 8192
#define DEPTH_LIMIT 32
#define STRING_LIMIT 16

static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"};

/* Whether path fits pattern, computed a second way: segment by segment, for patterns whose
 * placeholders are whole segments (every route of the table; checked by whole_segments). */
static int ref_fits(const char *pattern, const char *path)
{
    const char *p = pattern, *s = path;
    for (;;) {
        if (!*p) return !*s;
        if (*p != '/' || *s != '/') return 0;
        p++, s++;
        size_t pl = strcspn(p, "/"), sl = strcspn(s, "/");
        if (pl == 3 && memcmp(p, "{*}", 3) == 0) { /* the rest of the path, slashes and all */
            size_t rest = strlen(s);
            return !p[3] && rest > 0 && rest < ROUTE_PARAM_MAX;
        }
        if (pl == 2 && memcmp(p, "{}", 2) == 0) {
            if (sl == 0 || sl >= ROUTE_PARAM_MAX) return 0;
        } else if (pl != sl || memcmp(p, s, sl) != 0) {
            return 0;
        }
        p += pl;
        s += sl;
    }
}

/* 1 when every '{' of pattern opens a "{}" or "{*}" that is a whole segment. */
static int whole_segments(const char *pattern)
{
    for (const char *b = strchr(pattern, '{'); b; b = strchr(b + 1, '{')) {
        size_t n = strncmp(b, "{}", 2) == 0 ? 2 : strncmp(b, "{*}", 3) == 0 ? 3 : 0;
        if (!n || b == pattern || b[-1] != '/' || (b[n] && b[n] != '/')) return 0;
    }
    return 1;
}

/* The params put back into pattern; abort() unless they are well-formed and give path. */
static void check_params(const Route *r, const Request *rq, const char *path)
{
    int n = 0;
    for (const char *q = r->pattern; (q = strchr(q, '{')); q++)
        if (strncmp(q, "{}", 2) == 0 || strncmp(q, "{*}", 3) == 0) n++;
    if (rq->nparams != n || n > ROUTE_MAX_PARAMS) abort();

    size_t cap = strlen(path) + 1;
    char *rebuilt = malloc(cap), *w = rebuilt;
    if (!rebuilt) abort();
    int i = 0;
    for (const char *q = r->pattern; *q;) {
        int star = strncmp(q, "{*}", 3) == 0;
        if (star || strncmp(q, "{}", 2) == 0) {
            const char *v = rq->params[i++];
            size_t len = strnlen(v, ROUTE_PARAM_MAX);
            if (len == 0 || len >= ROUTE_PARAM_MAX || (!star && memchr(v, '/', len))) abort();
            if ((size_t)(w - rebuilt) + len >= cap) abort(); /* longer than the path */
            memcpy(w, v, len);
            w += len;
            q += star ? 3 : 2;
        } else {
            if ((size_t)(w - rebuilt) + 1 >= cap) abort();
            *w++ = *q++;
        }
    }
    *w = 0;
    if (strcmp(rebuilt, path) != 0) abort();
    free(rebuilt);
}

static void fuzz_route(const uint8_t *data, size_t size)
{
    if (size == 0) return;
    const char *method = methods[data[0] % (sizeof methods / sizeof methods[0])];
    const char *lookup = strcmp(method, "HEAD") == 0 ? "GET" : method;
    size_t n = size - 1 < PATH_MAX_FUZZ ? size - 1 : PATH_MAX_FUZZ;
    char *path = malloc(n + 1);
    Request *rq = calloc(1, sizeof *rq); /* on the heap, so ASan sees writes past params */
    if (!path || !rq) abort();
    memcpy(path, data + 1, n);
    path[n] = 0; /* a NUL inside ends the path, as in a C string from libmicrohttpd */

    int status = 0;
    char allow[64]; /* http.c's size */
    memset(allow, 'x', sizeof allow);
    const Route *r = router_match(method, path, rq, &status, allow, sizeof allow);

    /* what the table says, by the reference matcher */
    int expect = -1, others = 0, all_whole = 1;
    char *fit = calloc((size_t)route_count + 1, 1);
    char want_allow[64] = "";
    size_t used = 0;
    if (!fit) abort();
    for (int i = 0; i < route_count && expect < 0; i++) {
        if (!whole_segments(routes[i].pattern)) {
            all_whole = 0;
            continue;
        }
        fit[i] = (char)ref_fits(routes[i].pattern, path);
        if (!fit[i]) continue;
        if (strcmp(routes[i].method, lookup) == 0) {
            expect = i; /* the router stops at the first match */
            break;
        }
        others = 1;
        int listed = 0;
        for (int j = 0; j < i; j++)
            if (fit[j] && strcmp(routes[j].method, routes[i].method) == 0) listed = 1;
        if (!listed && used + strlen(routes[i].method) + 3 < sizeof want_allow)
            used += (size_t)snprintf(want_allow + used, sizeof want_allow - used, "%s%s",
                                     used ? ", " : "", routes[i].method);
    }
    free(fit);

    if (r) {
        if (r < routes || r >= routes + route_count) abort();
        if (strcmp(r->method, lookup) != 0) abort();
        check_params(r, rq, path);
        if (all_whole && r != &routes[expect]) abort();
    } else {
        if (status != 404 && status != 405) abort();
        if (!memchr(allow, '\0', sizeof allow)) abort();
        if (status == 405 && !allow[0]) abort();
        if (all_whole) {
            if (expect >= 0) abort(); /* a route takes it */
            if (status != (others ? 405 : 404)) abort();
            if (status == 405 && strcmp(allow, want_allow) != 0) abort();
        }
    }
    free(rq);
    free(path);
}

/* Nesting of arrays and objects: 0 for a scalar, 1 for [] or {}. */
static int depth_of(const json_t *v)
{
    int d = 0;
    if (json_is_object(v)) {
        const char *key;
        json_t *x;
        json_object_foreach((json_t *)v, key, x)
        {
            int e = depth_of(x);
            if (e > d) d = e;
        }
        return d + 1;
    }
    if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            int e = depth_of(x);
            if (e > d) d = e;
        }
        return d + 1;
    }
    return 0;
}

/* The longest string or key in v, bytes. */
static size_t longest_string(const json_t *v)
{
    size_t m = 0;
    if (json_is_string(v)) return json_string_length(v);
    if (json_is_object(v)) {
        const char *key;
        json_t *x;
        json_object_foreach((json_t *)v, key, x)
        {
            size_t a = strlen(key), b = longest_string(x);
            if (a > m) m = a;
            if (b > m) m = b;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            size_t b = longest_string(x);
            if (b > m) m = b;
        }
    }
    return m;
}

static void fuzz_json_limits(const uint8_t *data, size_t size)
{
    char err[256] = "";
    int depth_rc = json_check_depth((const char *)data, size, DEPTH_LIMIT, err, sizeof err);
    if (depth_rc != 0 && (depth_rc != -1 || !err[0])) abort();
    json_error_t jerr;
    json_t *v = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!v) return;
    int d = depth_of(v);
    if (depth_rc == 0 && d > DEPTH_LIMIT) abort();  /* let a deeper text through */
    if (depth_rc != 0 && d <= DEPTH_LIMIT) abort(); /* refused a valid shallow one */
    err[0] = 0;
    int strings_rc = json_check_strings(v, STRING_LIMIT, err, sizeof err);
    if (strings_rc != 0 && (strings_rc != -1 || !err[0])) abort();
    if ((strings_rc == 0) != (longest_string(v) <= STRING_LIMIT)) abort();
    json_decref(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_route(data, size);
    fuzz_json_limits(data, size);
    return 0;
}
