/*
 * handlers.h: the route handlers (docs/api.md). api_experiments.c: experiments, metrics, logs,
 * artifacts; api_workers.c: the worker protocol and the workers list; api_admin.c: health,
 * OpenAPI, schema, /metrics, tokens; sse.c: the event streams.
 */
#ifndef CHUNKGRPO_HANDLERS_H
#define CHUNKGRPO_HANDLERS_H

#include "server.h"

int h_health(Server *srv, Request *rq);
int h_openapi(Server *srv, Request *rq);
int h_experiment_schema(Server *srv, Request *rq);
int h_metrics(Server *srv, Request *rq);
int h_token_create(Server *srv, Request *rq);
int h_token_list(Server *srv, Request *rq);
int h_token_delete(Server *srv, Request *rq);

int h_experiment_create(Server *srv, Request *rq);
int h_experiment_list(Server *srv, Request *rq);
int h_experiment_get(Server *srv, Request *rq);
int h_experiment_delete(Server *srv, Request *rq);
int h_experiment_cancel(Server *srv, Request *rq);
int h_experiment_retry(Server *srv, Request *rq);
int h_experiment_clone(Server *srv, Request *rq);
int h_experiment_diff(Server *srv, Request *rq);
int h_metrics_history(Server *srv, Request *rq);
int h_logs(Server *srv, Request *rq);
int h_artifact_list(Server *srv, Request *rq);
int h_artifact_get(Server *srv, Request *rq);

int h_events_one(Server *srv, Request *rq);
int h_events_all(Server *srv, Request *rq);

int h_worker_register(Server *srv, Request *rq);
int h_worker_list(Server *srv, Request *rq);
int h_lease(Server *srv, Request *rq);
int h_heartbeat(Server *srv, Request *rq);
int h_events_post(Server *srv, Request *rq);
int h_artifact_put(Server *srv, Request *rq);
int h_complete(Server *srv, Request *rq);

/* The token's bearer may act as worker_id (its own registration, or an admin): 0, or -1 after
 * replying 400 (no id) / 403. */
int check_worker(Server *srv, Request *rq, const char *worker_id);

/* Makes a token with role: its secret ("cgp_" + 64 hex digits) into secret, only its sha256
 * into the store. 0, or -1 with a message. */
int token_new(Store *store, const char *name, const char *role, char secret[80], int64_t *id,
              char *err, size_t errlen);

#endif
