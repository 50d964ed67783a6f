/*
 * local_workers.h: the worker processes the server starts and supervises itself
 * (--local-workers N); see local_workers.c.
 */
#ifndef CHUNKGRPO_LOCAL_WORKERS_H
#define CHUNKGRPO_LOCAL_WORKERS_H

#include <limits.h>
#include <uv.h>

#include "server.h"

typedef struct {
    int count;
    const char *backend; /* cpu or cuda */
    const char *gpus;    /* "" or "0,1,...": worker i sees the i-th GPU only */
    int threads;         /* per worker; 0 = the worker's default */
    const char *data_dir;
} LocalWorkerSpec;

struct LocalWorkers;
typedef struct {
    uv_process_t proc;
    uv_timer_t restart;
    struct LocalWorkers *pool;
    int index, running, failures;
    int64_t started_ms;
    char gpu[16];
} LocalWorker;

typedef struct LocalWorkers {
    Server *srv;
    uv_loop_t *loop;
    LocalWorker *w;
    int n, threads, stopping;
    char exe[PATH_MAX + 32], url[64], token[80], backend[8], data_dir[PATH_MAX];
    uv_timer_t kill_timer;
    void (*on_stopped)(void *ctx);
    void *ctx;
} LocalWorkers;

/* Makes this start's worker token and starts spec->count workers against the server's port.
 * 0, or -1 with a message. */
int local_workers_start(LocalWorkers *lw, Server *srv, uv_loop_t *loop, const LocalWorkerSpec *spec,
                        int port, char *err, size_t errlen);
/* SIGTERM to every worker; on_stopped(ctx) runs once all have exited (SIGKILL after a grace
 * period). */
void local_workers_stop(LocalWorkers *lw, void (*on_stopped)(void *ctx), void *ctx);

/* SIGKILL to every worker now (a forced stop: their experiments' leases will expire). */
void local_workers_kill(LocalWorkers *lw);

#endif
