/*
 * cmd_serve.c: `chunkgrpo-worker serve --server URL [--token-file F] [--name NAME]
 * [--backend cpu|cuda] [--threads N] [--work DIR] [--once]`, the worker's uplink to the control
 * server: it registers, leases experiments one at a time, runs each, and reports back: metrics
 * and the runner's output as events, images, models and checkpoints as artifacts, progress in
 * heartbeats; a cancel, a lost lease or a stop ends the run with a checkpoint. The token comes
 * from --token-file or $CHUNKGRPO_TOKEN, never from the command line (ps shows it to everyone).
 *
 * Design. The serve loop is a supervisor: each experiment runs as a child process, this very
 * binary's `run DIR/exp-ID/config.json --out DIR/exp-ID/run [--resume] [--backend B]`. So
 *  - every runner works unchanged, with its checkpoints, exact resume and signal handling
 *    (SIGTERM: checkpoint, exit 130), as a user runs it by hand;
 *  - a crash, an abort or an out-of-memory kill ends one experiment (failed, with the runner's
 *    last line as the reason), never the worker and its bookkeeping;
 *  - the run folder's files are the uplink's buffer: the runner appends metrics.jsonl and its
 *    output log and writes images and checkpoints; the supervisor tails them and records in
 *    DIR/exp-ID/uplink.json how far the server has them. An unreachable server costs only
 *    delay: training goes on and the backlog is sent (tries spaced from 0.5 s doubling to 30 s)
 *    when it answers again. A metrics event's sequence number is its iteration + 1, not its line
 *    number: a run resumed on another machine starts a new metrics.jsonl, and its lines must
 *    still get the numbers the first machine used, so that the server stores each one once.
 * One thread and blocking libcurl calls with time-outs (uplink.h). While a run goes on, a tick
 * every 0.5 s reaps the child (waitpid WNOHANG), heartbeats when due, sends new events (<= 200
 * a POST) and, every 2 s, uploads the latest checkpoint and then new or changed artifacts (for
 * at most 1 s a tick: a backlog of images never delays a stop or a cancel); a heartbeat also
 * goes out between uploads when due, so a long backlog never lets a short lease lapse. Without
 * threads there are no locks: a signal only sets a flag, which the tick reads.
 *
 * Checkpoints go up file by file as checkpoints/F/..., then the marker checkpoints/latest (text
 * F), and only once the metrics up to F are sent, so the marker always names a complete
 * checkpoint whose history the server has. A worker that leases an experiment resumes from its
 * own run folder when that holds the newer checkpoint, else from the server's (downloaded, each
 * file checked against its sha256).
 *
 * Exit status: 0 after --once or a clean stop (SIGTERM/SIGINT: the run checkpoints, everything
 * is uploaded and the experiment goes back to the queue); 2 usage (no token); 3 the server
 * refused the token, or the backend cannot run here; 4 the work folder cannot be written.
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <ftw.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "commands.h"
#include "experiment.h"
#include "runners/runner_util.h"
#include "sha256.h"
#include "uplink.h"

#define TICK_MS 500
#define SCAN_MS 2000        /* artifacts: a walk of the run folder at most this often */
#define SCAN_BUDGET_MS 1000 /* and uploads from it for at most this long per tick */
#define LEASE_WAIT_S 20
#define BATCH_EVENTS 200
#define BATCH_BYTES (512 << 10)      /* half the server's default JSON body limit */
#define LOG_BACKLOG_MAX (64ll << 20) /* unsent runner output beyond this is dropped */
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define STOP_FLUSH_MS 60000              /* how long a stopping worker tries to hand over */
#define LOG_SEQ_BASE 1000000000000ll     /* log events: base + attempt * per attempt + line */
#define LOG_SEQ_PER_ATTEMPT 1000000000ll /* metrics events stay below the base */

/* What a call to the server came to. */
enum {
    NET_OK,    /* answered 2xx */
    NET_RETRY, /* no answer, or a server error: try again after the back-off */
    NET_LOST,  /* 404 / 409: the lease (or the worker) is gone */
    NET_FATAL, /* 401 / 403: the token is refused */
    NET_BAD,   /* another 4xx: this request will never succeed; skip it */
};

/* Why the supervisor stopped the runner; a later reason only replaces an earlier, lesser one. */
enum { ASK_NONE, ASK_STOP, ASK_CANCEL, ASK_LOST, ASK_FATAL };

/* SIGTERM / SIGINT: 1 after the first, 2 after more. The first lets a long-polling lease run out
 * (at most LEASE_WAIT_S): aborted on our side, it would still be granted on the server's, to a
 * connection nobody reads, and the experiment would wait for that lease to expire (an attempt
 * lost). A lease that comes is handed back at once. A second signal ends the poll now. */
static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
    stop_requested = stop_requested ? 2 : 1;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleeps ms, or less when a signal comes. */
static void sleep_ms(int64_t ms)
{
    if (ms <= 0) return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s serve: ", progname);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* snprintf for paths: 0, or -1 when the result does not fit in len bytes. */
__attribute__((format(printf, 3, 4))) static int path_printf(char *buf, size_t len, const char *fmt,
                                                             ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

typedef struct {
    const char *url, *name, *backend, *work; /* backend NULL: each config's own */
    int threads, once;                       /* threads 0: the configs' own */
    Uplink *up;
    char worker_id[64];
    int64_t heartbeat_ms;
    int64_t retry_at, backoff_ms; /* after a failed call, none before retry_at */
} Serve;

typedef struct {
    int64_t id;
    int attempt;
    const json_t *config; /* the lease's effective config (borrowed) */
    const char *iter_key; /* the metrics' numbering field (ExperimentKind.metrics_key) */
    int64_t total;        /* iterations or steps; 0 for kinds without */
    char dir[PATH_BUF], run[PATH_BUF + 8], metrics[PATH_BUF + 32], log[PATH_BUF + 16];
    char state[PATH_BUF + 16], config_path[PATH_BUF + 16];
    pid_t pid;
    int reaped, wstatus, signaled, ask;
    int log_fd;        /* the runner's output (O_APPEND), for our own notes too */
    const char *phase; /* for the progress: preparing, running, stopping, uploading */
    int64_t iteration; /* the newest the metrics show */
    int64_t last_heartbeat, next_scan, scan_until;
    int more; /* the last scan left files for the next */
    /* what the server has: kept in uplink.json */
    int64_t metrics_sent; /* bytes of metrics.jsonl */
    json_t *uploaded;     /* {artifact name: [size, mtime in ns]} */
    char checkpoint_sent[64];
    int dirty;
    /* this lease's runner output (a new log per lease) */
    int64_t log_sent, log_lines, log_seq_base;
} Job;

/* Sorts a call's result, spacing retries after failures; messages go to stderr. */
static int classify(Serve *s, int status, const char *err)
{
    if (status >= 200 && status < 300) {
        s->backoff_ms = 0;
        return NET_OK;
    }
    if (status == 401 || status == 403) {
        say("%s", err);
        return NET_FATAL;
    }
    if (status == 404 || status == 409) return NET_LOST;
    if (status < 0 || status >= 500 || status == 429) {
        s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (s->backoff_ms > BACKOFF_MAX_MS) s->backoff_ms = BACKOFF_MAX_MS;
        s->retry_at = now_ms() + s->backoff_ms;
        if (stop_requested < 2 || status >= 0) /* an interrupted long poll is no news */
            say("%s (next try in %.1f s)", err, s->backoff_ms / 1000.0);
        return NET_RETRY;
    }
    say("%s", err);
    return NET_BAD;
}

static int waiting(const Serve *s)
{
    return now_ms() < s->retry_at;
}

/* ---- the runner ------------------------------------------------------------------------- */

static void ask_runner(Job *j, int why)
{
    if (why > j->ask) j->ask = why;
    if (j->pid > 0 && !j->reaped && !j->signaled) {
        kill(j->pid, SIGTERM); /* the runner checkpoints and exits */
        j->signaled = 1;
        j->phase = "stopping";
    }
}

/* A line of our own in the runner's log, so that it reaches the server among the runner's. */
__attribute__((format(printf, 2, 3))) static void note(Job *j, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n > sizeof line - 2) n = (int)sizeof line - 2;
    fprintf(stderr, "%s serve: experiment %" PRId64 ": %s\n", progname, j->id, line);
    line[n++] = '\n';
    if (j->log_fd >= 0) {
        ssize_t w = write(j->log_fd, line, (size_t)n);
        (void)w; /* a note that cannot be written is only lost */
    }
}

/* Starts `run` on the job's config as a child whose stdout and stderr go to the log. */
static int spawn_runner(const Serve *s, Job *j, int resume)
{
    char *argv[] = {
        (char *)progname, "run", j->config_path, "--out", j->run, NULL, NULL, NULL, NULL};
    int argc = 5;
    if (resume) argv[argc++] = "--resume";
    if (s->backend) argv[argc++] = "--backend", argv[argc++] = (char *)s->backend;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        /* its own process group: a Ctrl-C at the terminal reaches the runner only through the
         * supervisor, which forwards one SIGTERM; and it stops with a checkpoint if the
         * supervisor dies (SIGKILL included) */
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(1);
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int in = open("/dev/null", O_RDONLY);
        if (in < 0 || dup2(in, 0) < 0 || dup2(j->log_fd, 1) < 0 || dup2(j->log_fd, 2) < 0)
            _exit(127);
        close_range(3, ~0U, 0); /* the server connections stay with the supervisor */
        execv("/proc/self/exe", argv);
        dprintf(2, "%s: cannot start the runner (/proc/self/exe): %s\n", progname, strerror(errno));
        _exit(127);
    }
    j->pid = pid;
    return 0;
}

static void reap(Job *j)
{
    if (!j->reaped && waitpid(j->pid, &j->wstatus, WNOHANG) == j->pid) j->reaped = 1;
}

/* The runner's last non-blank line (after any carriage return) into buf. */
static void last_log_line(const Job *j, char *buf, size_t len)
{
    buf[0] = '\0';
    int fd = open(j->log, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    char tail[4096];
    off_t size = lseek(fd, 0, SEEK_END),
          from = size > (off_t)sizeof tail ? size - (off_t)sizeof tail : 0;
    ssize_t n = pread(fd, tail, sizeof tail, from);
    close(fd);
    while (n > 0 && (tail[n - 1] == '\n' || tail[n - 1] == '\r' || tail[n - 1] == ' ')) n--;
    if (n <= 0) return;
    ssize_t start = n;
    while (start > 0 && tail[start - 1] != '\n' && tail[start - 1] != '\r') start--;
    snprintf(buf, len, "%.*s", (int)(n - start), tail + start);
}

/* ---- what the server has: uplink.json ---------------------------------------------------- */

static void state_load(Job *j)
{
    json_t *o = json_load_file(j->state, 0, NULL);
    if (json_integer_value(json_object_get(o, "experiment")) == j->id) {
        j->metrics_sent = json_integer_value(json_object_get(o, "metrics_sent"));
        const char *sent = json_string_value(json_object_get(o, "checkpoint"));
        snprintf(j->checkpoint_sent, sizeof j->checkpoint_sent, "%s", sent ? sent : "");
        json_t *up = json_object_get(o, "uploaded");
        if (json_is_object(up)) json_object_update(j->uploaded, up);
    }
    json_decref(o);
}

static void state_reset(Job *j)
{
    j->metrics_sent = 0;
    j->checkpoint_sent[0] = '\0';
    json_object_clear(j->uploaded);
    j->dirty = 1;
}

/* Written without fsync: a state lost in a crash only makes the server see some events and
 * files again, which it stores once. */
static void state_save(Job *j)
{
    if (!j->dirty || !*j->state) return;
    json_t *o = json_pack("{s:I, s:I, s:s, s:O}", "experiment", (json_int_t)j->id, "metrics_sent",
                          (json_int_t)j->metrics_sent, "checkpoint", j->checkpoint_sent, "uploaded",
                          j->uploaded);
    char tmp[sizeof j->state + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", j->state);
    if (o && json_dump_file(o, tmp, JSON_COMPACT) == 0 && rename(tmp, j->state) == 0) j->dirty = 0;
    json_decref(o);
}

/* ---- heartbeats ------------------------------------------------------------------------- */

/* Renews the lease when due; a cancel or a lost lease stops the runner. */
static int heartbeat(Serve *s, Job *j)
{
    if (j->ask >= ASK_LOST) return j->ask == ASK_LOST ? NET_LOST : NET_FATAL;
    if (j->last_heartbeat && now_ms() < j->last_heartbeat + s->heartbeat_ms) return NET_OK;
    if (waiting(s)) return NET_RETRY;
    json_t *progress =
        json_pack("{s:I, s:s}", "iteration", (json_int_t)j->iteration, "phase", j->phase);
    if (j->total > 0) json_object_set_new(progress, "total", json_integer(j->total));
    char err[512];
    int cancel = 0;
    int status = uplink_heartbeat(s->up, s->worker_id, j->id, progress, &cancel, err, sizeof err);
    json_decref(progress);
    int r = classify(s, status, err);
    if (r == NET_OK) {
        j->last_heartbeat = now_ms();
        if (cancel && j->ask < ASK_CANCEL && !j->reaped) {
            note(j, "canceled on the server: stopping the run with a checkpoint");
            ask_runner(j, ASK_CANCEL);
        }
    } else if (r == NET_LOST || r == NET_FATAL) {
        say("experiment %" PRId64 ": %s: stopping its run", j->id, err);
        ask_runner(j, r == NET_LOST ? ASK_LOST : ASK_FATAL);
    }
    return r;
}

/* ---- events ----------------------------------------------------------------------------- */

/* Reads the complete line at *off of f into *line (its length without the newline), or -1 when
 * none is complete yet. */
static ssize_t next_line(FILE *f, char **line, size_t *cap)
{
    ssize_t n = getline(line, cap, f);
    if (n <= 0 || (*line)[n - 1] != '\n') return -1;
    return n - 1;
}

/* Whether an event of `size` bytes still fits in the batch. */
static int batch_room(const json_t *batch, size_t bytes, size_t size)
{
    return json_array_size(batch) < BATCH_EVENTS &&
           (json_array_size(batch) == 0 || bytes + size <= BATCH_BYTES);
}

/* Metrics lines from *off into the batch. */
static void read_metrics(Job *j, int64_t *off, json_t *batch, size_t *bytes)
{
    FILE *f = fopen(j->metrics, "rb");
    if (!f) return;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && st.st_size < *off) *off = 0; /* rewritten: start over */
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    if (fseeko(f, *off, SEEK_SET) == 0) {
        while (batch_room(batch, *bytes, 0) && (n = next_line(f, &line, &cap)) >= 0) {
            if (!batch_room(batch, *bytes, (size_t)n + 64)) break;
            int64_t it;
            json_t *e = uplink_metrics_event(line, (size_t)n, j->iter_key, &it);
            if (e) {
                json_array_append_new(batch, e);
                *bytes += (size_t)n + 64;
                if (it > j->iteration) j->iteration = it;
            }
            *off += n + 1;
        }
    }
    free(line);
    fclose(f);
}

/* Counts the lines of fd in [from, to) and returns the offset just after the first newline at
 * or after `to` (or -1 when none is there yet). */
static int64_t skip_lines(int fd, int64_t from, int64_t to, int64_t *lines)
{
    char buf[1 << 16];
    for (int64_t at = from;;) {
        ssize_t n = pread(fd, buf, sizeof buf, at);
        if (n <= 0) return -1;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != '\n') continue;
            ++*lines;
            if (at + i >= to) return at + i + 1;
        }
        at += n;
    }
}

/* Runner output from *off into the batch; a backlog past LOG_BACKLOG_MAX loses its oldest
 * lines (never metrics), and one event says how many. */
static void read_log(Job *j, int64_t *off, int64_t *lines, json_t *batch, size_t *bytes)
{
    FILE *f = fopen(j->log, "rb");
    if (!f) return;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && st.st_size - *off > LOG_BACKLOG_MAX) {
        int64_t first = *lines, was = *off;
        int64_t to = skip_lines(fileno(f), *off, st.st_size - LOG_BACKLOG_MAX, lines);
        if (to > 0) {
            *off = to;
            char msg[256];
            snprintf(msg, sizeof msg,
                     "%" PRId64 " lines (%" PRId64 " bytes) of the runner's output were dropped: "
                     "the server was unreachable and the backlog passed %lld MiB",
                     *lines - first, to - was, LOG_BACKLOG_MAX >> 20);
            json_array_append_new(batch,
                                  uplink_log_event(msg, strlen(msg), j->log_seq_base + first));
            *bytes += sizeof msg;
        }
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    if (fseeko(f, *off, SEEK_SET) == 0) {
        while (batch_room(batch, *bytes, 0) && (n = next_line(f, &line, &cap)) >= 0) {
            size_t size = ((size_t)n < UPLINK_MESSAGE_MAX ? (size_t)n : UPLINK_MESSAGE_MAX) + 96;
            if (!batch_room(batch, *bytes, size)) break;
            json_t *e = uplink_log_event(line, (size_t)n, j->log_seq_base + *lines);
            if (e) {
                json_array_append_new(batch, e);
                *bytes += size;
            }
            *off += n + 1;
            ++*lines;
        }
    }
    free(line);
    fclose(f);
}

/* Sends every complete metrics and log line not yet sent. NET_OK once all are. */
static int send_events(Serve *s, Job *j)
{
    for (;;) {
        int r = heartbeat(s, j);
        if (r == NET_LOST || r == NET_FATAL) return r;
        if (waiting(s)) return NET_RETRY;
        json_t *batch = json_array();
        size_t bytes = 0;
        int64_t metrics_off = j->metrics_sent, log_off = j->log_sent, log_lines = j->log_lines;
        read_metrics(j, &metrics_off, batch, &bytes);
        read_log(j, &log_off, &log_lines, batch, &bytes);
        if (metrics_off == j->metrics_sent && log_off == j->log_sent) {
            json_decref(batch);
            return NET_OK;
        }
        r = NET_OK;
        if (json_array_size(batch) > 0) {
            char err[512];
            int status = uplink_post_events(s->up, j->id, s->worker_id, batch, err, sizeof err);
            r = classify(s, status, err);
            if (r == NET_BAD) say("dropping %zu events the server refused", json_array_size(batch));
        }
        json_decref(batch);
        if (r != NET_OK && r != NET_BAD) return r;
        j->dirty |= j->metrics_sent != metrics_off;
        j->metrics_sent = metrics_off, j->log_sent = log_off, j->log_lines = log_lines;
    }
}

/* ---- artifacts -------------------------------------------------------------------------- */

/* The files of a run folder worth showing (paths relative to it; checkpoints apart). */
static const char *const artifact_patterns[] = {
    "config.json",       "eval.json",    "profile.json",  "*.png",         "model*.safetensors",
    "eval/iter-*/*.png", "groups/*.png", "groups/*.json", "samples/*.png", "eval/iter-*/eval.json",
};

static int worth_uploading(const char *rel)
{
    for (size_t i = 0; i < sizeof artifact_patterns / sizeof artifact_patterns[0]; i++)
        if (fnmatch(artifact_patterns[i], rel, FNM_PATHNAME) == 0) return 1;
    return 0;
}

/* The number after "iter-" or "step-" in name, or -1. */
static int64_t name_iteration(const char *name)
{
    const char *p = strstr(name, "iter-");
    if (!p) p = strstr(name, "step-");
    return p ? strtoll(p + 5, NULL, 10) : -1;
}

static int64_t artifact_iteration(const Job *j, const char *name)
{
    int64_t it = name_iteration(name);
    if (it < 0 && strncmp(name, "model", 5) == 0) it = j->total > 0 ? j->total : j->iteration;
    return it;
}

static int64_t mtime_ns(const struct stat *st)
{
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* Uploads path as artifact name unless the server has this version of it (config.json goes
 * once: a resumed runner rewrites the same text). With budget, a file is left for a later scan
 * (j->more) once the scan's time is up, so that a backlog never holds up the tick. */
static int upload_if_new(Serve *s, Job *j, const char *name, const char *path, int budget)
{
    struct stat st;
    if (stat(path, &st) != 0) return NET_OK; /* gone (a pruned checkpoint): nothing to send */
    json_t *rec = json_object_get(j->uploaded, name);
    if (rec && (strcmp(name, "config.json") == 0 ||
                (json_integer_value(json_array_get(rec, 0)) == st.st_size &&
                 json_integer_value(json_array_get(rec, 1)) == mtime_ns(&st))))
        return NET_OK;
    if (budget && now_ms() >= j->scan_until) {
        j->more = 1;
        return NET_OK;
    }
    int r = heartbeat(s, j);
    if (r == NET_LOST || r == NET_FATAL) return r;
    if (waiting(s)) return NET_RETRY;
    char err[PATH_BUF + 256];
    struct stat sent;
    int status = uplink_upload_file(s->up, j->id, s->worker_id, name, artifact_iteration(j, name),
                                    path, &sent, err, sizeof err);
    if (status < 0 && access(path, F_OK) != 0) return NET_OK; /* vanished meanwhile */
    r = classify(s, status, err);
    if (r == NET_OK || r == NET_BAD) { /* a refused file (too large?) is not offered again */
        const struct stat *v = r == NET_OK ? &sent : &st;
        json_object_set_new(j->uploaded, name,
                            json_pack("[I, I]", (json_int_t)v->st_size, (json_int_t)mtime_ns(v)));
        j->dirty = 1;
        r = NET_OK;
    }
    return r;
}

/* Uploads the files worth showing under dir (rel: its path in the run folder, "" at the top). */
static int upload_tree(Serve *s, Job *j, const char *dir, const char *rel, int depth)
{
    DIR *d = opendir(dir);
    if (!d) return NET_OK;
    int r = NET_OK;
    struct dirent *e;
    while (r == NET_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.' || (depth == 0 && strcmp(e->d_name, "checkpoints") == 0)) continue;
        char path[PATH_BUF * 2], name[PATH_BUF];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        snprintf(name, sizeof name, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0) continue;
        if (S_ISDIR(st.st_mode) && depth < 3)
            r = upload_tree(s, j, path, name, depth + 1);
        else if (S_ISREG(st.st_mode) && worth_uploading(name))
            r = upload_if_new(s, j, name, path, 1);
    }
    closedir(d);
    return r;
}

/* The checkpoint folder run/checkpoints/latest names into folder ("" when none). */
static void latest_checkpoint(const Job *j, char *folder, size_t len)
{
    char path[sizeof j->run + 32], err[256];
    snprintf(path, sizeof path, "%s/checkpoints/latest", j->run);
    if (read_small_file(path, folder, len, err, sizeof err) != 0 || strchr(folder, '/'))
        folder[0] = '\0';
}

/* Every file of checkpoint folder F as checkpoints/F/NAME, then the marker checkpoints/latest. */
static int upload_checkpoint(Serve *s, Job *j, const char *folder)
{
    if (!*folder || strcmp(folder, j->checkpoint_sent) == 0) return NET_OK;
    char dir[sizeof j->run + 96];
    snprintf(dir, sizeof dir, "%s/checkpoints/%s", j->run, folder);
    DIR *d = opendir(dir);
    if (!d) return NET_OK; /* pruned already: a newer marker comes with the next scan */
    int r = NET_OK, files = 0;
    struct dirent *e;
    while (r == NET_OK && (e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[sizeof dir + 256], name[512];
        struct stat st;
        if (path_printf(path, sizeof path, "%s/%s", dir, e->d_name) ||
            path_printf(name, sizeof name, "checkpoints/%s/%s", folder, e->d_name) ||
            stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        r = upload_if_new(s, j, name, path, 0);
        files++;
    }
    closedir(d);
    if (r != NET_OK || files == 0 || access(dir, F_OK) != 0) return r; /* pruned meanwhile */
    if ((r = heartbeat(s, j)) == NET_LOST || r == NET_FATAL) return r;
    if (waiting(s)) return NET_RETRY;
    char err[512];
    int status =
        uplink_upload_data(s->up, j->id, s->worker_id, "checkpoints/latest", name_iteration(folder),
                           folder, strlen(folder), err, sizeof err);
    r = classify(s, status, err);
    if (r == NET_OK) {
        snprintf(j->checkpoint_sent, sizeof j->checkpoint_sent, "%s", folder);
        j->dirty = 1;
    }
    return r == NET_BAD ? NET_OK : r;
}

/* Brings the server up to date: events, then (every SCAN_MS, or now when final) the latest
 * checkpoint (first: it is what a resume needs) and the other artifacts, for at most
 * SCAN_BUDGET_MS unless final. NET_OK when it has everything (or the rest waits for a scan). */
static int sync_run(Serve *s, Job *j, int final)
{
    if (j->ask >= ASK_LOST) return j->ask == ASK_LOST ? NET_LOST : NET_FATAL;
    char folder[64];
    latest_checkpoint(j, folder, sizeof folder); /* before the events: their lines cover it */
    int r = send_events(s, j);
    if (r == NET_OK && (final || now_ms() >= j->next_scan)) {
        j->scan_until = final ? INT64_MAX : now_ms() + SCAN_BUDGET_MS;
        j->more = 0;
        r = upload_checkpoint(s, j, folder);
        if (r == NET_OK) r = upload_tree(s, j, j->run, "", 0);
        j->next_scan = j->more ? 0 : now_ms() + SCAN_MS; /* a backlog goes on at the next tick */
    }
    state_save(j);
    if (r == NET_LOST || r == NET_FATAL) ask_runner(j, r == NET_LOST ? ASK_LOST : ASK_FATAL);
    return r;
}

/* ---- where a run starts ----------------------------------------------------------------- */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* The iteration of the run folder's latest checkpoint, or -1 when it has none. */
static int64_t local_checkpoint(const Job *j)
{
    char folder[64];
    latest_checkpoint(j, folder, sizeof folder);
    return *folder ? name_iteration(folder) : -1;
}

/* Whether the local file at path has the given sha256 (hex). */
static int file_has_sha256(const char *path, const char *hex)
{
    FILE *f = fopen(path, "rb");
    if (!f || !hex) {
        if (f) fclose(f);
        return 0;
    }
    Sha256 c;
    sha256_init(&c);
    char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) sha256_update(&c, buf, n);
    fclose(f);
    uint8_t d[32];
    char got[65];
    sha256_final(&c, d);
    sha256_hex(d, got);
    return strcmp(got, hex) == 0;
}

static int folder_name_ok(const char *s)
{
    return *s && s[0] != '.' && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789._-") == strlen(s);
}

/* Downloads the server's checkpoint into the run folder when it is newer than the local one;
 * *from: the iteration the run resumes from (-1: none to resume). NET_OK or why not. */
static int settle_checkpoint(Serve *s, Job *j, int server_has_one, int64_t *from)
{
    *from = local_checkpoint(j);
    if (!server_has_one) return NET_OK;
    char folder[64], err[PATH_BUF + 256];
    int status = uplink_download_text(s->up, j->id, "checkpoints/latest", folder, sizeof folder,
                                      err, sizeof err);
    if (status == 404) return NET_OK; /* files but no marker yet: no complete checkpoint */
    int r = classify(s, status, err);
    if (r != NET_OK) return r;
    if (!folder_name_ok(folder)) {
        note(j, "the server's checkpoints/latest names \"%s\": not a checkpoint folder", folder);
        return NET_OK;
    }
    int64_t it = name_iteration(folder);
    if (it <= *from) return NET_OK;
    json_t *items = NULL;
    status = uplink_list_artifacts(s->up, j->id, &items, err, sizeof err);
    if ((r = classify(s, status, err)) != NET_OK) return r;
    char prefix[128], dir[sizeof j->run + 96];
    snprintf(prefix, sizeof prefix, "checkpoints/%s/", folder);
    snprintf(dir, sizeof dir, "%s/checkpoints/%s", j->run, folder);
    if (make_dirs(dir, err, sizeof err)) {
        say("%s", err);
        json_decref(items);
        return NET_BAD;
    }
    size_t i, files = 0;
    json_t *a;
    json_array_foreach(items, i, a)
    {
        const char *name = json_string_value(json_object_get(a, "name"));
        const char *sha = json_string_value(json_object_get(a, "sha256"));
        if (!name || strncmp(name, prefix, strlen(prefix)) != 0 ||
            !folder_name_ok(name + strlen(prefix)))
            continue;
        char path[sizeof dir + 256];
        snprintf(path, sizeof path, "%s/%s", dir, name + strlen(prefix));
        files++;
        if (file_has_sha256(path, sha)) continue; /* from an earlier try */
        if ((r = heartbeat(s, j)) == NET_LOST || r == NET_FATAL) break;
        status = uplink_download_file(s->up, j->id, name, path, err, sizeof err);
        if (status == 404) { /* gone meanwhile: this checkpoint is no use */
            json_decref(items);
            note(j, "the server's checkpoint %s lost %s: not resuming from it", folder, name);
            return NET_OK;
        }
        if ((r = classify(s, status, err)) != NET_OK) break;
        if (!file_has_sha256(path, sha)) { /* replaced on the server meanwhile? */
            unlink(path);
            say("download %s: its sha256 is not the one listed", name);
            r = classify(s, -1, "the checkpoint changed while it was downloaded");
            break;
        }
    }
    json_decref(items);
    if (r != NET_OK) return r;
    if (files == 0) {
        note(j, "the server's checkpoint %s has no files: not resuming from it", folder);
        return NET_OK;
    }
    char path[sizeof j->run + 32];
    snprintf(path, sizeof path, "%s/checkpoints/latest", j->run);
    if (write_file_atomic(path, folder, strlen(folder), err, sizeof err)) {
        say("%s", err);
        return NET_BAD;
    }
    snprintf(j->checkpoint_sent, sizeof j->checkpoint_sent, "%s", folder);
    j->dirty = 1;
    note(j, "downloaded checkpoint %s (iteration %" PRId64 ") from the server", folder, it);
    *from = it;
    return NET_OK;
}

/* The byte offset of metrics.jsonl just after its last line whose iteration is <= it: what a
 * runner resuming from it keeps of the file. */
static int64_t metrics_kept(const Job *j, int64_t it)
{
    FILE *f = fopen(j->metrics, "rb");
    if (!f) return 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int64_t off = 0, kept = 0, line_it;
    while ((n = next_line(f, &line, &cap)) >= 0) {
        off += n + 1;
        json_t *e = uplink_metrics_event(line, (size_t)n, j->iter_key, &line_it);
        json_decref(e);
        if (!e || line_it > it) break;
        kept = off;
    }
    free(line);
    fclose(f);
    return kept;
}

/* ---- one experiment --------------------------------------------------------------------- */

/* Writes DIR/exp-ID/config.json: the lease's config, with --threads when given. */
static int write_config(const Serve *s, Job *j, char *err, size_t errlen)
{
    json_t *c = json_deep_copy(j->config);
    if (s->threads) json_object_set_new(c, "threads", json_integer(s->threads));
    char *text = c ? json_dumps(c, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    int rc = text ? write_file_atomic(j->config_path, text, strlen(text), err, errlen) : -1;
    if (!text) snprintf(err, errlen, "%s: out of memory", j->config_path);
    free(text);
    json_decref(c);
    return rc;
}

/* The status the attempt ends with, and the reason for a failure. */
static const char *outcome(const Job *j, char *error, size_t len)
{
    error[0] = '\0';
    int code = WIFEXITED(j->wstatus) ? WEXITSTATUS(j->wstatus) : -1;
    if (code == 0) return "succeeded";
    if (j->ask == ASK_CANCEL) return "canceled";
    if (j->ask == ASK_STOP) return "requeue";
    /* stopped with a checkpoint by a signal not ours (systemd stops a whole cgroup at once, and
     * the runner may end before the tick sees the worker's own signal): it goes on later */
    if (code == 130) return "requeue";
    char line[1024];
    last_log_line(j, line, sizeof line);
    if (WIFSIGNALED(j->wstatus))
        snprintf(error, len, "the runner was killed by signal %d (%s)%s%s", WTERMSIG(j->wstatus),
                 strsignal(WTERMSIG(j->wstatus)), *line ? "; its last line: " : "", line);
    else if (*line)
        snprintf(error, len, "%s", line);
    else
        snprintf(error, len, "the runner exited with status %d", code);
    return "failed";
}

/* Tells the server how the attempt ended, after handing it everything when flush. While
 * stopping, gives up after STOP_FLUSH_MS without an answer (the lease then expires). */
static int finish(Serve *s, Job *j, const char *status, const char *error, int flush)
{
    j->phase = "uploading";
    int64_t give_up = INT64_MAX;
    for (;;) {
        int r = flush ? sync_run(s, j, 1) : NET_OK;
        if (r == NET_OK) {
            j->last_heartbeat = 0; /* the final progress, once everything is sent */
            r = heartbeat(s, j);
        }
        if (r == NET_OK) {
            char err[512];
            int code = uplink_complete(s->up, j->id, s->worker_id, status, error, err, sizeof err);
            if ((r = classify(s, code, err)) == NET_OK || r == NET_BAD) {
                say("experiment %" PRId64 ": %s%s%s", j->id, status, error ? ": " : "",
                    error ? error : "");
                return NET_OK;
            }
        }
        if (r == NET_LOST || r == NET_FATAL) {
            say("experiment %" PRId64 ": the lease is gone; the server keeps what it has", j->id);
            return r;
        }
        if (stop_requested && give_up == INT64_MAX) give_up = now_ms() + STOP_FLUSH_MS;
        if (now_ms() >= give_up) {
            say("experiment %" PRId64 ": the server did not answer; leaving it to the lease's "
                "expiry",
                j->id);
            return NET_RETRY;
        }
        heartbeat(s, j);
        sleep_ms(waiting(s) ? s->retry_at - now_ms() : TICK_MS);
    }
}

/* Runs the leased experiment to its end. Returns 0, or the worker's exit status when it must
 * end (the token refused: 3; the work folder unusable: 4). */
static int run_job(Serve *s, const json_t *lease)
{
    const json_t *x = json_object_get(lease, "experiment");
    Job job = {.id = json_integer_value(json_object_get(x, "id")),
               .attempt = (int)json_integer_value(json_object_get(lease, "attempt")),
               .config = json_object_get(x, "config"),
               .iter_key = "iteration",
               .log_fd = -1,
               .phase = "preparing",
               .uploaded = json_object()};
    Job *j = &job;
    const char *kind = json_string_value(json_object_get(j->config, "kind"));
    const ExperimentKind *k = experiment_kind_find(kind);
    if (k) { /* an unknown kind fails in the runner, with its message */
        j->iter_key = k->metrics_key;
        if (k->count_field)
            j->total = json_integer_value(json_object_get(j->config, k->count_field));
    }
    int64_t base = LOG_SEQ_BASE + (int64_t)j->attempt * LOG_SEQ_PER_ATTEMPT;
    int64_t next_seq = json_integer_value(json_object_get(lease, "next_seq"));
    /* a requeued attempt keeps its number: its earlier lines must not hide the new ones */
    j->log_seq_base = next_seq > base ? next_seq : base;
    say("leased experiment %" PRId64 " (%s, attempt %d)", j->id, kind ? kind : "?", j->attempt);

    char err[PATH_BUF + 256];
    int rc = 0, r;
    *err = '\0';
    if (!json_is_object(j->config) || j->id <= 0) {
        finish(s, j, "failed", "the lease holds no experiment config", 0);
        goto done;
    }
    if (stop_requested) { /* leased while stopping: hand it back untouched */
        finish(s, j, "requeue", NULL, 0);
        goto done;
    }
    /* --work is at most PATH_BUF - 200 bytes long (cmd_serve), so these fit */
    if (path_printf(j->dir, sizeof j->dir, "%s/exp-%" PRId64, s->work, j->id) ||
        path_printf(j->run, sizeof j->run, "%s/run", j->dir) ||
        path_printf(j->metrics, sizeof j->metrics, "%s/metrics.jsonl", j->run) ||
        path_printf(j->log, sizeof j->log, "%s/runner.log", j->dir) ||
        path_printf(j->state, sizeof j->state, "%s/uplink.json", j->dir) ||
        path_printf(j->config_path, sizeof j->config_path, "%s/config.json", j->dir) ||
        make_dirs(j->dir, err, sizeof err) || write_config(s, j, err, sizeof err) ||
        (j->log_fd = open(j->log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644)) < 0) {
        if (!*err) path_printf(err, sizeof err, "%s: %s", j->dir, strerror(errno));
        say("%s", err);
        finish(s, j, "requeue", NULL, 0); /* another worker may have room */
        rc = EXIT_IO;
        goto done;
    }
    state_load(j);

    /* where the run starts: the newer of the local and the server's checkpoints, or afresh */
    int64_t from = -1;
    int server_has = json_is_object(json_object_get(lease, "checkpoint"));
    for (;;) {
        r = heartbeat(s, j);
        if (r == NET_OK || r == NET_BAD) r = settle_checkpoint(s, j, server_has, &from);
        if (r != NET_RETRY || stop_requested) break;
        sleep_ms(waiting(s) ? s->retry_at - now_ms() : TICK_MS);
    }
    if (r == NET_LOST || r == NET_FATAL) {
        say("experiment %" PRId64 ": the lease is gone before the run started", j->id);
        rc = r == NET_FATAL ? EXIT_BAD_INPUT : 0;
        goto done;
    }
    if (stop_requested || j->ask == ASK_CANCEL) {
        finish(s, j, stop_requested ? "requeue" : "canceled", NULL, 0);
        goto done;
    }
    if (from >= 0) {
        /* cut metrics.jsonl as the resuming runner will, before it runs: the tail is never read
         * from a file about to be replaced */
        int64_t kept = metrics_kept(j, from);
        if (truncate(j->metrics, kept) != 0 && errno != ENOENT) kept = 0;
        if (j->metrics_sent > kept) j->metrics_sent = kept, j->dirty = 1;
        j->iteration = from;
        note(j, "resuming from the checkpoint of iteration %" PRId64, from);
    } else {
        nftw(j->run, remove_entry, 16, FTW_DEPTH | FTW_PHYS); /* a stale start: nothing to keep */
        state_reset(j);
    }
    state_save(j);
    if (spawn_runner(s, j, from >= 0) != 0) {
        snprintf(err, sizeof err, "cannot start the runner: %s", strerror(errno));
        finish(s, j, "failed", err, 1);
        goto done;
    }
    j->phase = "running";
    while (!j->reaped) {
        if (stop_requested && j->ask < ASK_STOP) {
            note(j, "the worker is stopping: the run ends with a checkpoint and goes back to the "
                    "queue");
            ask_runner(j, ASK_STOP);
        }
        heartbeat(s, j);
        sync_run(s, j, 0);
        reap(j);
        if (!j->reaped) sleep_ms(TICK_MS);
    }
    if (j->ask >= ASK_LOST) {
        rc = j->ask == ASK_FATAL ? EXIT_BAD_INPUT : 0;
        goto done;
    }
    char error[1200];
    const char *status = outcome(j, error, sizeof error);
    if (finish(s, j, status, *error ? error : NULL, 1) == NET_FATAL) rc = EXIT_BAD_INPUT;
done:
    state_save(j);
    if (j->log_fd >= 0) close(j->log_fd);
    json_decref(j->uploaded);
    return rc;
}

/* ---- the worker ------------------------------------------------------------------------- */

static int register_worker(Serve *s, const char *device, int threads)
{
    char name[256] = "";
    if (s->name)
        snprintf(name, sizeof name, "%s", s->name);
    else if (gethostname(name, sizeof name - 1) != 0)
        snprintf(name, sizeof name, "worker");
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    json_t *caps = json_pack("{s:s, s:s, s:s, s:I, s:i, s:s}", "name", name, "backend",
                             s->backend ? s->backend : "cpu", "device", device, "memory_mb",
                             (json_int_t)((double)pages * page / (1 << 20)), "threads", threads,
                             "version", WORKER_VERSION);
    json_t *reply = NULL;
    char err[512];
    int status = uplink_register(s->up, caps, &reply, err, sizeof err);
    json_decref(caps);
    int r = classify(s, status, err);
    if (r == NET_OK) {
        const char *id = json_string_value(json_object_get(reply, "worker_id"));
        int hb = (int)json_integer_value(json_object_get(reply, "heartbeat_seconds"));
        snprintf(s->worker_id, sizeof s->worker_id, "%s", id ? id : "");
        s->heartbeat_ms = hb > 0 ? hb * 1000ll : 10000;
        say("registered with %s as %s (%s, %s); heartbeat every %d s", s->url, s->worker_id, name,
            device, hb);
        if (!id) r = NET_BAD;
    }
    if (r == NET_FATAL)
        say("the server refused this worker's token: check --token-file or $CHUNKGRPO_TOKEN (a "
            "token of role worker)");
    json_decref(reply);
    return r;
}

/* Registers, then leases and runs experiments until a stop (or one, with --once). */
static int serve_loop(Serve *s, const char *device, int threads)
{
    int registered = 0;
    while (!stop_requested) {
        if (waiting(s)) {
            sleep_ms(s->retry_at - now_ms());
            continue;
        }
        if (!registered) {
            int r = register_worker(s, device, threads);
            if (r == NET_FATAL || r == NET_BAD || r == NET_LOST) return EXIT_BAD_INPUT;
            registered = r == NET_OK;
            continue;
        }
        json_t *lease = NULL;
        char err[512];
        int status = uplink_lease(s->up, s->worker_id, LEASE_WAIT_S, &lease, err, sizeof err);
        if (status == 200) {
            int rc = run_job(s, lease); /* even when a stop just came: it hands the lease back */
            json_decref(lease);
            if (rc || s->once) return rc;
        } else if (status == 404) {
            say("the server no longer knows worker %s: registering again", s->worker_id);
            registered = 0;
        } else if (status != 204) {
            int r = classify(s, status, err);
            if (r == NET_FATAL) return EXIT_BAD_INPUT;
            if (r == NET_BAD) s->retry_at = now_ms() + BACKOFF_MAX_MS;
        }
    }
    say("stopped");
    return 0;
}

/* The token: the first line of file, or $CHUNKGRPO_TOKEN. */
static int read_token(const char *file, char *token, size_t len)
{
    if (file) {
        char err[PATH_BUF + 128];
        if (read_small_file(file, token, len, err, sizeof err) != 0 || !*token) {
            say("--token-file %s: %s", file, *token ? err : "no token in it");
            return -1;
        }
        token[strcspn(token, "\r\n")] = '\0';
        return 0;
    }
    const char *env = getenv("CHUNKGRPO_TOKEN");
    if (!env || !*env) {
        say("no token: give --token-file FILE or set CHUNKGRPO_TOKEN (a token of role worker)");
        return -1;
    }
    snprintf(token, len, "%s", env);
    return 0;
}

static void serve_usage(FILE *out)
{
    fprintf(out,
            "usage: %s serve --server URL [--token-file F] [--name NAME] [--backend cpu|cuda]\n"
            "         [--threads N] [--work DIR] [--once]\n"
            "(the token comes from --token-file or $CHUNKGRPO_TOKEN; see %s help)\n",
            progname, progname);
}

int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"server", required_argument, 0, 's'},
        {"token-file", required_argument, 0, 't'},
        {"name", required_argument, 0, 'n'},
        {"backend", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 'T'},
        {"work", required_argument, 0, 'w'},
        {"once", no_argument, 0, 'o'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    Serve s = {.work = "./var/worker"};
    const char *token_file = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 's': s.url = optarg; break;
        case 't': token_file = optarg; break;
        case 'n': s.name = optarg; break;
        case 'b': s.backend = optarg; break;
        case 'w': s.work = optarg; break;
        case 'o': s.once = 1; break;
        case 'T':
            if (parse_positive("--threads", optarg, &s.threads)) return EXIT_USAGE;
            break;
        case 'h': serve_usage(stdout); return 0;
        case ':':
            fprintf(stderr, "%s serve: %s needs a value\n", progname, argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "%s serve: unknown option %s\n", progname, argv[optind - 1]);
            serve_usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc || !s.url) {
        if (!s.url) fprintf(stderr, "%s serve: --server URL is required\n", progname);
        serve_usage(stderr);
        return EXIT_USAGE;
    }
    if (strncmp(s.url, "http://", 7) != 0 && strncmp(s.url, "https://", 8) != 0) {
        fprintf(stderr, "%s serve: --server: expected http://HOST:PORT, got \"%s\"\n", progname,
                s.url);
        return EXIT_USAGE;
    }
    if (strlen(s.work) > PATH_BUF - 200) {
        fprintf(stderr, "%s serve: --work: the folder name is too long\n", progname);
        return EXIT_USAGE;
    }
    BackendKind kind = BACKEND_CPU;
    if (s.backend && backend_from_name(s.backend, &kind)) {
        fprintf(stderr, "%s serve: --backend: expected cpu or cuda, got \"%s\"\n", progname,
                s.backend);
        return EXIT_USAGE;
    }
    char token[1024], device[256], err[1024];
    if (read_token(token_file, token, sizeof token)) return EXIT_USAGE;
    /* a worker that cannot run its backend would fail every experiment it leased */
    if (backend_device_name(kind, device, sizeof device, err, sizeof err)) {
        fprintf(stderr, "%s serve: --backend %s: %s\n", progname, s.backend, err);
        return EXIT_BAD_INPUT;
    }
    if (make_dirs(s.work, err, sizeof err)) {
        fprintf(stderr, "%s serve: --work: %s\n", progname, err);
        return EXIT_IO;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
        fprintf(stderr, "%s serve: libcurl does not start\n", progname);
        return EXIT_IO;
    }
    struct sigaction sa = {.sa_handler = on_stop}; /* no SA_RESTART: a sleep ends at once */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    int rc = EXIT_IO;
    s.up = uplink_new(s.url, token, &stop_requested, err, sizeof err);
    memset(token, 0, sizeof token);
    if (!s.up) {
        fprintf(stderr, "%s serve: %s\n", progname, err);
    } else {
        int threads = s.threads ? s.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
        rc = serve_loop(&s, device, threads);
    }
    uplink_free(s.up);
    curl_global_cleanup();
    return rc;
}
