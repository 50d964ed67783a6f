/*
 * main.c: chunkgrpo-server. Flags, the database and the admin token at first start, the HTTP
 * daemon, and a libuv loop for what is not a request: signals (a graceful stop on SIGINT or
 * SIGTERM) and the lease clock that puts abandoned experiments back in the queue.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <signal.h>
#include <uv.h>

#include "handlers.h"
#include "local_workers.h"

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: chunkgrpo-server [options]\n"
        "  --listen HOST:PORT      address to serve (default 127.0.0.1:8080; port 0 = any free)\n"
        "  --data DIR              database, artifacts and admin token (default ./var)\n"
        "  --web DIR               dashboard files (default: web/dist or web/ beside bin/)\n"
        "  --schema DIR            migrations and openapi.json (default: schema/ beside bin/)\n"
        "  --new-token ROLE[:NAME] create a token (read, write, worker, admin), print it, exit\n"
        "  --lease-seconds N       a lease lasts N s without a heartbeat (default 30)\n"
        "  --max-attempts N        attempts before an experiment fails (default 3)\n"
        "  --max-body BYTES        JSON request bodies (default 1048576)\n"
        "  --max-upload BYTES      artifact uploads (default 1073741824)\n"
        "  --max-depth N           JSON nesting (default 32)\n"
        "  --max-string BYTES      any JSON string (default 65536)\n"
        "  --max-connections N     open connections (default 1024)\n"
        "  --local-workers N       workers the server starts and supervises (default 0)\n"
        "  --worker-backend B      their backend: cpu or cuda (default cpu)\n"
        "  --worker-threads N      threads of each (default: the worker's own choice)\n"
        "  --gpus LIST             their GPUs, worker i on the i-th: 0,1,...\n"
        "  --log-level L           error, warn, info or debug (default info)\n"
        "  --help                  this text\n");
}

/* A number flag in [lo, hi], or exit 2 naming the flag. */
static long long number_flag(const char *flag, const char *v, long long lo, long long hi)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "chunkgrpo-server: %s: expected an integer in [%lld, %lld], got \"%s\"\n",
                flag, lo, hi, v);
        exit(2);
    }
    return x;
}

/* root/sub when it is a folder, else "" */
static void beside_bin(const char *root, const char *sub, char *out, size_t outlen)
{
    struct stat st;
    char path[PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/%s", root, sub);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode) && realpath(path, out) && strlen(out) < outlen)
        return;
    out[0] = 0;
}

static int write_admin_token(Server *srv, const char *data_dir)
{
    char secret[80], err[512], path[PATH_MAX];
    int64_t id;
    if (token_new(srv->store, "admin", "admin", secret, &id, err, sizeof err)) {
        fprintf(stderr, "chunkgrpo-server: %s\n", err);
        return -1;
    }
    snprintf(path, sizeof path, "%s/admin.token", data_dir);
    unlink(path); /* a stale file from another database: the new one is made 0600 from the start */
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || dprintf(fd, "%s\n", secret) < 0 || fsync(fd) != 0) {
        fprintf(stderr, "chunkgrpo-server: cannot write %s: %s\n", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    close(fd);
    server_log(srv, 2, "first start: an admin token is in %s (mode 0600)", path);
    return 0;
}

static LocalWorkers local_workers;
static int have_local_workers, stop_requested;

static void stop_loop(void *loop)
{
    uv_stop(loop);
}

/* The local workers stop first: they need the server to hand their experiments back. Another
 * SIGTERM while that goes on changes nothing (make run's Ctrl-C reaches the server as SIGINT and
 * SIGTERM at once); a second SIGINT, a second Ctrl-C, stops now and kills the workers. */
static void on_signal(uv_signal_t *h, int signum)
{
    Server *srv = h->data;
    static int interrupts;
    interrupts += signum == SIGINT;
    if (stop_requested++) {
        if (signum != SIGINT || interrupts < 2) return;
        server_log(srv, 1, "second interrupt: stopping now");
        if (have_local_workers) local_workers_kill(&local_workers);
        uv_stop(h->loop);
        return;
    }
    server_log(srv, 2, "signal %d: stopping", signum);
    hub_drain(&srv->hub); /* idle workers' long polls end now, and nobody gets new work */
    if (have_local_workers)
        local_workers_stop(&local_workers, stop_loop, h->loop);
    else
        uv_stop(h->loop);
}

static void on_lease_clock(uv_timer_t *t)
{
    Server *srv = t->data;
    int requeued = 0, failed = 0;
    char err[512];
    if (store_expire_leases(srv->store, now_ms(), &requeued, &failed, err, sizeof err) != STORE_OK)
        server_log(srv, 0, "lease expiry: %s", err);
    else if (requeued || failed)
        server_log(srv, 1, "expired leases: %d back in the queue, %d failed", requeued, failed);
}

static void close_handle(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, 0, 'l'},
                                         {"data", required_argument, 0, 'd'},
                                         {"web", required_argument, 0, 'w'},
                                         {"schema", required_argument, 0, 's'},
                                         {"new-token", required_argument, 0, 't'},
                                         {"lease-seconds", required_argument, 0, 'L'},
                                         {"max-attempts", required_argument, 0, 'A'},
                                         {"max-body", required_argument, 0, 'B'},
                                         {"max-upload", required_argument, 0, 'U'},
                                         {"max-depth", required_argument, 0, 'D'},
                                         {"max-string", required_argument, 0, 'S'},
                                         {"max-connections", required_argument, 0, 'C'},
                                         {"local-workers", required_argument, 0, 'n'},
                                         {"worker-backend", required_argument, 0, 'b'},
                                         {"gpus", required_argument, 0, 'g'},
                                         {"log-level", required_argument, 0, 'v'},
                                         {"worker-threads", required_argument, 0, 'T'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    static Server srv = {.limits = {.max_body = 1 << 20,
                                    .max_upload = 1ull << 30,
                                    .max_depth = 32,
                                    .max_string = 65536,
                                    .max_connections = 1024,
                                    .lease_seconds = 30,
                                    .max_attempts = 3},
                         .log_level = 2};
    const char *listen = "127.0.0.1:8080", *data_dir = "./var", *web = NULL, *schema = NULL;
    const char *new_token = NULL;
    LocalWorkerSpec workers = {.backend = "cpu", .gpus = "", .data_dir = NULL};
    for (int c; (c = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (c) {
        case 'l': listen = optarg; break;
        case 'd': data_dir = optarg; break;
        case 'w': web = optarg; break;
        case 's': schema = optarg; break;
        case 't': new_token = optarg; break;
        case 'L':
            srv.limits.lease_seconds = (int)number_flag("--lease-seconds", optarg, 1, 86400);
            break;
        case 'A':
            srv.limits.max_attempts = (int)number_flag("--max-attempts", optarg, 1, 100);
            break;
        case 'B':
            srv.limits.max_body = (size_t)number_flag("--max-body", optarg, 1024, 1ll << 30);
            break;
        case 'U':
            srv.limits.max_upload = (size_t)number_flag("--max-upload", optarg, 1024, 1ll << 40);
            break;
        case 'D': srv.limits.max_depth = (int)number_flag("--max-depth", optarg, 2, 1000); break;
        case 'S':
            srv.limits.max_string = (size_t)number_flag("--max-string", optarg, 64, 1 << 30);
            break;
        case 'C':
            srv.limits.max_connections = (int)number_flag("--max-connections", optarg, 4, 100000);
            break;
        case 'n': workers.count = (int)number_flag("--local-workers", optarg, 0, 1024); break;
        case 'b': workers.backend = optarg; break;
        case 'g': workers.gpus = optarg; break;
        case 'T': workers.threads = (int)number_flag("--worker-threads", optarg, 1, 1024); break;
        case 'v': {
            static const char *const levels[] = {"error", "warn", "info", "debug"};
            int i = 0;
            while (i < 4 && strcmp(optarg, levels[i]) != 0) i++;
            if (i == 4) {
                fprintf(stderr,
                        "chunkgrpo-server: --log-level: expected error, warn, info or debug\n");
                return 2;
            }
            srv.log_level = i;
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "chunkgrpo-server: unexpected argument \"%s\"\n", argv[optind]);
        return 2;
    }
    if (strcmp(workers.backend, "cpu") != 0 && strcmp(workers.backend, "cuda") != 0) {
        fprintf(stderr, "chunkgrpo-server: --worker-backend: expected cpu or cuda\n");
        return 2;
    }
    if (workers.gpus[0] && strspn(workers.gpus, "0123456789,") != strlen(workers.gpus)) {
        fprintf(stderr, "chunkgrpo-server: --gpus: expected GPU numbers separated by commas\n");
        return 2;
    }
    workers.data_dir = data_dir;
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof host) {
        fprintf(stderr, "chunkgrpo-server: --listen: expected HOST:PORT, got \"%s\"\n", listen);
        return 2;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = 0;
    int port = (int)number_flag("--listen port", colon + 1, 0, 65535);

    /* bin/.. holds schema/ and web/ (a build tree or an install prefix) */
    char exe[PATH_MAX], root[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = 0;
    snprintf(root, sizeof root, "%s/..", dirname(exe));
    if (schema) {
        if (!realpath(schema, srv.schema_dir)) {
            fprintf(stderr, "chunkgrpo-server: --schema %s: %s\n", schema, strerror(errno));
            return 2;
        }
    } else {
        beside_bin(root, "schema", srv.schema_dir, sizeof srv.schema_dir);
    }
    if (web) {
        if (!realpath(web, srv.web_dir)) {
            fprintf(stderr, "chunkgrpo-server: --web %s: %s\n", web, strerror(errno));
            return 2;
        }
    } else {
        beside_bin(root, "web/dist", srv.web_dir, sizeof srv.web_dir);
        if (!srv.web_dir[0]) beside_bin(root, "web", srv.web_dir, sizeof srv.web_dir);
    }

    char err[1024];
    signal(SIGPIPE, SIG_IGN); /* a client gone mid-reply is an error return, not a death */
    hub_init(&srv.hub);
    srv.started_ms = now_ms();
    if (!(srv.store = store_open(data_dir, srv.schema_dir, err, sizeof err))) {
        fprintf(stderr, "chunkgrpo-server: %s\n", err);
        return 1;
    }
    store_set_notify(srv.store, hub_notify, &srv.hub);
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/tmp", data_dir);
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST) {
        fprintf(stderr, "chunkgrpo-server: cannot make %s: %s\n", tmp, strerror(errno));
        return 1;
    }
    if (new_token) {
        char role[32], name[256] = "token", secret[80];
        const char *sep = strchr(new_token, ':');
        size_t rl = sep ? (size_t)(sep - new_token) : strlen(new_token);
        snprintf(role, sizeof role, "%.*s", (int)(rl < sizeof role ? rl : 0), new_token);
        if (sep && sep[1]) snprintf(name, sizeof name, "%s", sep + 1);
        int64_t id;
        if (!role_caps(role)) {
            fprintf(
                stderr,
                "chunkgrpo-server: --new-token: role \"%s\" is not read, write, worker or admin\n",
                role);
            store_close(srv.store);
            return 2;
        }
        if (token_new(srv.store, name, role, secret, &id, err, sizeof err)) {
            fprintf(stderr, "chunkgrpo-server: %s\n", err);
            store_close(srv.store);
            return 1;
        }
        printf("%s\n", secret);
        store_close(srv.store);
        return 0;
    }
    if (store_token_count(srv.store) == 0 && write_admin_token(&srv, data_dir)) {
        store_close(srv.store);
        return 1;
    }

    int bound;
    if (http_start(&srv, host, port, &bound, err, sizeof err)) {
        fprintf(stderr, "chunkgrpo-server: %s\n", err);
        store_close(srv.store);
        return 1;
    }
    server_log(&srv, 2, "listening on http://%s:%d (data %s, dashboard %s)", host, bound, data_dir,
               srv.web_dir[0] ? srv.web_dir : "none");
    printf("chunkgrpo-server: listening on http://%s:%d\n", host, bound);
    fflush(stdout);

    uv_loop_t *loop = uv_default_loop();
    uv_signal_t sigint, sigterm;
    uv_timer_t lease_clock;
    uv_signal_init(loop, &sigint);
    uv_signal_init(loop, &sigterm);
    sigint.data = sigterm.data = lease_clock.data = &srv;
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    uv_timer_init(loop, &lease_clock);
    uv_timer_start(&lease_clock, on_lease_clock, 1000, 1000);
    if (workers.count > 0) {
        if (local_workers_start(&local_workers, &srv, loop, &workers, bound, err, sizeof err)) {
            fprintf(stderr, "chunkgrpo-server: %s\n", err);
            hub_stop(&srv.hub);
            http_stop(&srv);
            store_close(srv.store);
            return 1;
        }
        have_local_workers = 1;
    }
    uv_run(loop, UV_RUN_DEFAULT);

    /* graceful stop: streams and long polls end, connections finish, the database closes */
    hub_stop(&srv.hub);
    http_stop(&srv);
    uv_walk(loop, close_handle, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    uv_loop_close(loop);
    store_close(srv.store);
    server_log(&srv, 2, "stopped");
    return 0;
}
