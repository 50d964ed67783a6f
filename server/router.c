/*
 * router.c: the matcher over the route table (routes.c): a pattern's "{}" takes one path
 * segment, "{*}" the rest of the path (artifact names with folders). A path that matches some
 * pattern under another method is a 405 with the methods it does take.
 */
#include <string.h>

#include "server.h"

/* 1 when path fits pattern, the parameters copied into rq (when rq is given). */
static int fits(const char *pattern, const char *path, Request *rq)
{
    int n = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (p[0] == '{' && p[1] == '*' && p[2] == '}') {
            size_t len = strlen(s);
            if (len == 0 || len >= ROUTE_PARAM_MAX || n == ROUTE_MAX_PARAMS) return 0;
            if (rq) memcpy(rq->params[n], s, len + 1);
            n++;
            s += len;
            p += 3;
            continue;
        }
        if (p[0] == '{' && p[1] == '}') {
            size_t len = strcspn(s, "/");
            if (len == 0 || len >= ROUTE_PARAM_MAX || n == ROUTE_MAX_PARAMS) return 0;
            if (rq) {
                memcpy(rq->params[n], s, len);
                rq->params[n][len] = 0;
            }
            n++;
            s += len;
            p += 2;
            continue;
        }
        if (*p != *s) return 0;
        p++;
        s++;
    }
    if (*p || *s) return 0;
    if (rq) rq->nparams = n;
    return 1;
}

const Route *router_match(const char *method, const char *path, Request *rq, int *status,
                          char *allow, size_t allowlen)
{
    const char *lookup = strcmp(method, "HEAD") == 0 ? "GET" : method;
    int path_known = 0;
    size_t used = 0;
    allow[0] = 0;
    for (int i = 0; i < route_count; i++) {
        if (!fits(routes[i].pattern, path, NULL)) continue;
        if (strcmp(routes[i].method, lookup) == 0) {
            fits(routes[i].pattern, path, rq);
            return &routes[i];
        }
        path_known = 1;
        if (!strstr(allow, routes[i].method) && used + strlen(routes[i].method) + 3 < allowlen)
            used += (size_t)snprintf(allow + used, allowlen - used, "%s%s", used ? ", " : "",
                                     routes[i].method);
    }
    *status = path_known ? 405 : 404;
    return NULL;
}
