/*
 * local_workers.c: the workers the server starts itself (--local-workers N). Each is
 * `chunkgrpo-worker serve` beside the server's binary, pointed at the server's own address with a
 * worker token made for this start (passed in the environment, never on a command line), its log
 * in DATA/workers/N.log. A worker that exits is started again after a back-off (1 s doubling to
 * 60 s; reset once a worker has run for a minute). On shutdown each gets SIGTERM, which makes it
 * checkpoint and hand its experiment back to the queue; the server waits for them (SIGKILL after
 * a grace period) before it stops serving, since they need it to say so.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "handlers.h"
#include "local_workers.h"

#define GRACE_MS 120000

extern char **environ;

static void spawn(LocalWorker *w);

static void on_restart_timer(uv_timer_t *t)
{
    spawn(t->data);
}

static void on_closed(uv_handle_t *h)
{
    LocalWorker *w = h->data;
    LocalWorkers *lw = w->pool;
    w->running = 0;
    if (lw->stopping) {
        int left = 0;
        for (int i = 0; i < lw->n; i++) left += lw->w[i].running;
        if (left == 0 && lw->on_stopped) {
            uv_timer_stop(&lw->kill_timer);
            lw->on_stopped(lw->ctx);
            lw->on_stopped = NULL;
        }
        return;
    }
    int64_t ran = now_ms() - w->started_ms;
    if (ran > 60000) w->failures = 0;
    int64_t delay = 1000ll << (w->failures < 6 ? w->failures : 6);
    if (delay > 60000) delay = 60000;
    w->failures++;
    server_log(lw->srv, 1, "local worker %d ended; starting it again in %lld s", w->index,
               (long long)(delay / 1000));
    uv_timer_start(&w->restart, on_restart_timer, (uint64_t)delay, 0);
}

static void on_exit_cb(uv_process_t *p, int64_t status, int signal)
{
    LocalWorker *w = p->data;
    server_log(w->pool->srv, signal && !w->pool->stopping ? 1 : 2,
               "local worker %d (pid %d) exited: status %lld, signal %d", w->index, p->pid,
               (long long)status, signal);
    uv_close((uv_handle_t *)p, on_closed);
}

static void spawn(LocalWorker *w)
{
    LocalWorkers *lw = w->pool;
    if (lw->stopping) return;
    char work[PATH_MAX + 64], log[PATH_MAX + 64], name[32], threads[16];
    snprintf(work, sizeof work, "%s/workers/%d", lw->data_dir, w->index);
    snprintf(log, sizeof log, "%s/workers/%d.log", lw->data_dir, w->index);
    snprintf(name, sizeof name, "local-%d", w->index);
    snprintf(threads, sizeof threads, "%d", lw->threads);
    char *args[] = {lw->exe,
                    "serve",
                    "--server",
                    lw->url,
                    "--work",
                    work,
                    "--name",
                    name,
                    "--backend",
                    lw->backend,
                    lw->threads ? "--threads" : NULL,
                    threads,
                    NULL};
    /* the environment plus the token and, for --gpus, this worker's GPU */
    int n = 0;
    while (environ[n]) n++;
    char **env = calloc((size_t)n + 3, sizeof *env);
    char token_env[128], gpu_env[64];
    if (!env) return;
    int k = 0;
    for (int i = 0; i < n; i++)
        if (strncmp(environ[i], "CHUNKGRPO_TOKEN=", 16) &&
            strncmp(environ[i], "CUDA_VISIBLE_DEVICES=", 21))
            env[k++] = environ[i];
    snprintf(token_env, sizeof token_env, "CHUNKGRPO_TOKEN=%s", lw->token);
    env[k++] = token_env;
    if (w->gpu[0]) {
        snprintf(gpu_env, sizeof gpu_env, "CUDA_VISIBLE_DEVICES=%s", w->gpu);
        env[k++] = gpu_env;
    }
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                     {.flags = fd >= 0 ? UV_INHERIT_FD : UV_IGNORE, .data.fd = fd},
                                     {.flags = fd >= 0 ? UV_INHERIT_FD : UV_IGNORE, .data.fd = fd}};
    uv_process_options_t opts = {.exit_cb = on_exit_cb,
                                 .file = lw->exe,
                                 .args = args,
                                 .env = env,
                                 .stdio_count = 3,
                                 .stdio = stdio,
                                 /* its own session: a Ctrl-C meant for the server reaches the
                                  * worker as the server's SIGTERM, once */
                                 .flags = UV_PROCESS_DETACHED};
    w->proc.data = w;
    int rc = uv_spawn(lw->loop, &w->proc, &opts);
    free(env);
    if (fd >= 0) close(fd);
    w->started_ms = now_ms();
    if (rc != 0) {
        server_log(lw->srv, 0, "local worker %d: cannot start %s: %s", w->index, lw->exe,
                   uv_strerror(rc));
        uv_close((uv_handle_t *)&w->proc, on_closed); /* counts as an exit: back-off, retry */
        w->running = 1;
        return;
    }
    w->running = 1;
    server_log(lw->srv, 2, "local worker %d started (pid %d, log %s)", w->index, w->proc.pid, log);
}

/* Revokes the tokens of earlier starts' local workers, then makes this start's. */
static int make_token(LocalWorkers *lw, char *err, size_t errlen)
{
    json_t *tokens = store_tokens(lw->srv->store);
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(tokens, "items"), i, t)
    {
        const char *name = json_string_value(json_object_get(t, "name"));
        if (name && strcmp(name, "local-workers") == 0 &&
            !json_is_true(json_object_get(t, "revoked")))
            store_token_revoke(lw->srv->store, json_integer_value(json_object_get(t, "id")), err,
                               errlen);
    }
    json_decref(tokens);
    int64_t id;
    return token_new(lw->srv->store, "local-workers", "worker", lw->token, &id, err, errlen);
}

int local_workers_start(LocalWorkers *lw, Server *srv, uv_loop_t *loop, const LocalWorkerSpec *spec,
                        int port, char *err, size_t errlen)
{
    memset(lw, 0, sizeof *lw);
    lw->srv = srv;
    lw->loop = loop;
    lw->n = spec->count;
    lw->threads = spec->threads;
    snprintf(lw->backend, sizeof lw->backend, "%s", spec->backend);
    snprintf(lw->data_dir, sizeof lw->data_dir, "%s", spec->data_dir);
    snprintf(lw->url, sizeof lw->url, "http://127.0.0.1:%d", port);
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[len > 0 ? len : 0] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(lw->exe, sizeof lw->exe, "%s/chunkgrpo-worker", exe);
    if (access(lw->exe, X_OK) != 0) {
        snprintf(err, errlen, "--local-workers: %s is not there (make builds it)", lw->exe);
        return -1;
    }
    char dir[PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s/workers", lw->data_dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot make %s: %s", dir, strerror(errno));
        return -1;
    }
    if (make_token(lw, err, errlen)) return -1;
    if (!(lw->w = calloc((size_t)lw->n, sizeof *lw->w))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    uv_timer_init(loop, &lw->kill_timer);
    lw->kill_timer.data = lw;
    for (int i = 0; i < lw->n; i++) {
        LocalWorker *w = &lw->w[i];
        w->pool = lw;
        w->index = i;
        if (spec->gpus[0]) { /* the i-th of a comma-separated list */
            const char *p = spec->gpus;
            for (int j = 0; j < i && (p = strchr(p, ',')); j++) p++;
            if (p) snprintf(w->gpu, sizeof w->gpu, "%.*s", (int)strcspn(p, ","), p);
        }
        uv_timer_init(loop, &w->restart);
        w->restart.data = w;
        spawn(w);
    }
    return 0;
}

void local_workers_kill(LocalWorkers *lw)
{
    lw->stopping = 1;
    for (int i = 0; i < lw->n; i++) {
        uv_timer_stop(&lw->w[i].restart);
        if (lw->w[i].running && !uv_is_closing((uv_handle_t *)&lw->w[i].proc)) {
            server_log(lw->srv, 1, "local worker %d: SIGKILL", i);
            uv_process_kill(&lw->w[i].proc, SIGKILL);
        }
    }
}

static void on_grace_over(uv_timer_t *t)
{
    server_log(((LocalWorkers *)t->data)->srv, 1, "local workers did not stop in time");
    local_workers_kill(t->data);
}

void local_workers_stop(LocalWorkers *lw, void (*on_stopped)(void *ctx), void *ctx)
{
    lw->stopping = 1;
    lw->on_stopped = on_stopped;
    lw->ctx = ctx;
    int left = 0;
    for (int i = 0; i < lw->n; i++) {
        uv_timer_stop(&lw->w[i].restart);
        if (lw->w[i].running && !uv_is_closing((uv_handle_t *)&lw->w[i].proc)) {
            uv_process_kill(&lw->w[i].proc, SIGTERM);
            left++;
        } else if (lw->w[i].running) {
            left++;
        }
    }
    if (left == 0) {
        lw->on_stopped = NULL;
        on_stopped(ctx);
        return;
    }
    server_log(lw->srv, 2,
               "stopping %d local worker(s): each checkpoints and hands back its experiment", left);
    uv_timer_start(&lw->kill_timer, on_grace_over, GRACE_MS, 0);
}
