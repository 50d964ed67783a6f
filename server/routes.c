/*
 * routes.c: the API's route table (docs/api.md): method, path pattern, what the token must
 * allow, how the body is read, and the handler.
 */
#include "handlers.h"

const Route routes[] = {
    {"GET", "/api/v1/health", CAP_NONE, BODY_NONE, h_health},
    {"GET", "/api/v1/openapi.json", CAP_READ, BODY_NONE, h_openapi},
    {"GET", "/api/v1/schema/experiment", CAP_READ, BODY_NONE, h_experiment_schema},
    {"GET", "/metrics", CAP_READ, BODY_NONE, h_metrics},
    {"POST", "/api/v1/experiments", CAP_WRITE, BODY_JSON, h_experiment_create},
    {"GET", "/api/v1/experiments", CAP_READ, BODY_NONE, h_experiment_list},
    {"GET", "/api/v1/experiments/{}", CAP_READ, BODY_NONE, h_experiment_get},
    {"DELETE", "/api/v1/experiments/{}", CAP_WRITE, BODY_NONE, h_experiment_delete},
    {"POST", "/api/v1/experiments/{}/cancel", CAP_WRITE, BODY_NONE, h_experiment_cancel},
    {"POST", "/api/v1/experiments/{}/retry", CAP_WRITE, BODY_NONE, h_experiment_retry},
    {"POST", "/api/v1/experiments/{}/clone", CAP_WRITE, BODY_JSON, h_experiment_clone},
    {"GET", "/api/v1/experiments/{}/diff/{}", CAP_READ, BODY_NONE, h_experiment_diff},
    {"GET", "/api/v1/experiments/{}/metrics", CAP_READ, BODY_NONE, h_metrics_history},
    {"GET", "/api/v1/experiments/{}/logs", CAP_READ, BODY_NONE, h_logs},
    {"GET", "/api/v1/experiments/{}/events", CAP_READ, BODY_NONE, h_events_one},
    {"POST", "/api/v1/experiments/{}/events", CAP_WORKER, BODY_JSON, h_events_post},
    {"GET", "/api/v1/events", CAP_READ, BODY_NONE, h_events_all},
    {"GET", "/api/v1/experiments/{}/artifacts", CAP_READ, BODY_NONE, h_artifact_list},
    {"GET", "/api/v1/experiments/{}/artifacts/{*}", CAP_READ, BODY_NONE, h_artifact_get},
    {"PUT", "/api/v1/experiments/{}/artifacts/{*}", CAP_WORKER, BODY_UPLOAD, h_artifact_put},
    {"POST", "/api/v1/experiments/{}/complete", CAP_WORKER, BODY_JSON, h_complete},
    {"POST", "/api/v1/workers/register", CAP_WORKER, BODY_JSON, h_worker_register},
    {"GET", "/api/v1/workers", CAP_READ, BODY_NONE, h_worker_list},
    {"POST", "/api/v1/workers/{}/lease", CAP_WORKER, BODY_NONE, h_lease},
    {"POST", "/api/v1/workers/{}/heartbeat", CAP_WORKER, BODY_JSON, h_heartbeat},
    {"POST", "/api/v1/tokens", CAP_ADMIN, BODY_JSON, h_token_create},
    {"GET", "/api/v1/tokens", CAP_ADMIN, BODY_NONE, h_token_list},
    {"DELETE", "/api/v1/tokens/{}", CAP_ADMIN, BODY_NONE, h_token_delete},
};
const int route_count = sizeof routes / sizeof routes[0];
_Static_assert(sizeof routes / sizeof routes[0] <= ROUTE_MAX, "prom.c counts ROUTE_MAX routes");
