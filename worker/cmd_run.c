/*
 * cmd_run.c: `chunkgrpo-worker run CONFIG.json --out DIR [--resume] [--backend cpu|cuda]`, the
 * standalone runner of an experiment (without a server): validates the config (--backend
 * overrides its "backend" field), runs the experiment kind it names, and draws a progress bar with
 * an ETA on a terminal (a line per 10% otherwise). SIGINT or SIGTERM stops the run at the end of
 * the current step with a checkpoint, so `--resume` continues it exactly. A second Ctrl-C (SIGINT)
 * ends the process at once; repeated SIGTERMs do not, because supervisors often send one to the
 * process and another to its group (coreutils `timeout` does), and those must not turn a clean stop
 * into a kill. SIGKILL is the way to force an end.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "commands.h"
#include "config.h"
#include "errbuf.h"
#include "experiment.h"
#include "runners/eval.h"
#include "dist.h"
#include "runners/grpo_runner.h"
#include "runners/pretrain.h"
#include "runners/profile.h"
#include "runners/reward_train.h"
#include "sampler.h"

_Static_assert(EXPERIMENT_MAX_STEPS == SAMPLER_MAX_STEPS,
               "the config tables' bound on steps must be the sampler's");

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    stop_requested = 1;
    if (sig == SIGINT) signal(SIGINT, SIG_DFL); /* the second Ctrl-C is not caught */
}

typedef struct {
    const char *metric; /* what the per-step value is: "loss", "reward" */
    int tty;
    double sec_per_step; /* smoothed, for the ETA */
    int last_decile;
} Progress;

static void format_duration(char *buf, size_t len, double s)
{
    if (s >= 3600)
        snprintf(buf, len, "%dh%02dm", (int)(s / 3600), (int)(s / 60) % 60);
    else
        snprintf(buf, len, "%dm%02ds", (int)(s / 60), (int)s % 60);
}

static void show_progress(void *ctx, int64_t step, int64_t total, double value, double lr,
                          double sec_per_step)
{
    Progress *p = ctx;
    p->sec_per_step =
        p->sec_per_step > 0 ? 0.9 * p->sec_per_step + 0.1 * sec_per_step : sec_per_step;
    char eta[32];
    format_duration(eta, sizeof eta, p->sec_per_step * (double)(total - step));
    int pct = (int)(100 * step / total);
    if (p->tty) {
        char bar[31];
        int fill = (int)(30 * step / total);
        for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
        bar[30] = '\0';
        fprintf(stderr, "\r%lld/%lld [%s] %3d%% %s %.4f lr %.2e %.3f s/step ETA %s  ",
                (long long)step, (long long)total, bar, pct, p->metric, value, lr, p->sec_per_step,
                eta);
        if (step == total) fputc('\n', stderr);
    } else if (pct / 10 != p->last_decile || step == total) {
        p->last_decile = pct / 10;
        fprintf(stderr, "step %lld/%lld (%d%%) %s %.4f lr %.2e %.3f s/step ETA %s\n",
                (long long)step, (long long)total, pct, p->metric, value, lr, p->sec_per_step, eta);
    }
}

static int run_pretrain(const void *cfg, const char *out, int resume, Progress *p, char *err,
                        size_t errlen)
{
    return pretrain_run(cfg, out, resume, &stop_requested, show_progress, p, err, errlen);
}

static int run_grpo(const void *cfg, const char *out, int resume, Progress *p, char *err,
                    size_t errlen)
{
    return grpo_run(cfg, out, resume, &stop_requested, show_progress, p, err, errlen);
}

static int run_eval(const void *cfg, const char *out, int resume, Progress *p, char *err,
                    size_t errlen)
{
    (void)resume, (void)p; /* an evaluation is short and simply runs again */
    return eval_run(cfg, out, err, errlen);
}

static int run_profile(const void *cfg, const char *out, int resume, Progress *p, char *err,
                       size_t errlen)
{
    (void)resume, (void)p; /* a profile is short and simply runs again */
    return profile_run(cfg, out, err, errlen);
}

/* How this worker runs each experiment kind of common/experiment.h (by its name). */
typedef struct {
    const char *kind;
    const char *metric; /* what the per-step value is: "loss", "reward" */
    int (*run)(const void *cfg, const char *out, int resume, Progress *p, char *err, size_t errlen);
} Runner;

static int run_reward_train(const void *cfg, const char *out, int resume, Progress *p, char *err,
                            size_t errlen)
{
    return reward_train_run(cfg, out, resume, &stop_requested, show_progress, p, err, errlen);
}

static const Runner runners[] = {
    {"pretrain", "loss", run_pretrain}, {"reward_train", "loss", run_reward_train},
    {"eval", "loss", run_eval},         {"grpo", "reward", run_grpo},
    {"profile", "loss", run_profile},
};

static const Runner *runner_of(const ExperimentKind *k)
{
    for (size_t i = 0; i < sizeof runners / sizeof runners[0]; i++)
        if (strcmp(runners[i].kind, k->name) == 0) return &runners[i];
    return NULL;
}

/* Whether the config's backend can run here (every kind has the field). */
static int check_backend(const ExperimentKind *k, const void *cfg, char *err, size_t errlen)
{
    for (int i = 0; i < k->field_count; i++) {
        if (strcmp(k->fields[i].name, "backend") != 0) continue;
        const char *name = (const char *)cfg + k->fields[i].offset;
        BackendKind kind;
        char why[1024];
        if (backend_from_name(name, &kind) == 0 && backend_available(kind, why, sizeof why)) {
            errbuf_printf(err, errlen, "config.backend = \"%s\": %s", name, why);
            return -1;
        }
    }
    return 0;
}

/* Under mpirun, joins the MPI world (dist.h); only grpo spreads over several ranks. */
static int join_ranks(const ExperimentKind *k, char *err, size_t errlen)
{
    if (dist_init(err, errlen)) return -1;
    if (dist_size() > 1 && strcmp(k->name, "grpo") != 0) {
        snprintf(err, errlen, "config.kind: \"%s\" runs in one process; only grpo runs on %d ranks",
                 k->name, dist_size());
        dist_finalize();
        return -1;
    }
    return 0;
}

int cmd_run(int argc, char **argv)
{
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},
        {"resume", no_argument, 0, 'r'},
        {"backend", required_argument, 0, 'b'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *out = NULL, *backend = NULL;
    int resume = 0, c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'r': resume = 1; break;
        case 'b': backend = optarg; break;
        case 'h':
            printf("usage: %s run CONFIG.json --out DIR [--resume] [--backend cpu|cuda]\n",
                   progname);
            return 0;
        case ':':
            fprintf(stderr, "%s run: %s needs a value\n", progname, argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "%s run: unknown option %s\n", progname, argv[optind - 1]);
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1 || !out) {
        fprintf(stderr,
                "%s run: usage: %s run CONFIG.json --out DIR [--resume] [--backend cpu|cuda]\n",
                progname, progname);
        return EXIT_USAGE;
    }
    char err[1024];
    json_t *root = config_load_file(argv[optind], err, sizeof err);
    if (!root) {
        fprintf(stderr, "%s: %s\n", progname, err);
        return EXIT_BAD_INPUT;
    }
    /* --backend overrides the config's field; the effective config.json records the choice */
    if (backend) json_object_set_new(root, "backend", json_string(backend));
    int rc = EXIT_BAD_INPUT;
    const ExperimentKind *k = experiment_kind_of(root, err, sizeof err);
    const Runner *runner = k ? runner_of(k) : NULL;
    void *cfg = k ? calloc(1, k->config_size) : NULL;
    if (!runner) {
        if (k) snprintf(err, sizeof err, "config.kind: this worker cannot run \"%s\"", k->name);
        fprintf(stderr, "%s: %s: %s\n", progname, argv[optind], err);
    } else if (!cfg) {
        fprintf(stderr, "%s: out of memory\n", progname);
        rc = EXIT_IO;
    } else if (experiment_config_parse(k, root, cfg, err, sizeof err)) {
        fprintf(stderr, "%s: %s: %s\n", progname, argv[optind], err);
    } else if (check_backend(k, cfg, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", progname, err); /* before the run folder is touched */
    } else if (join_ranks(k, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", progname, err);
    } else {
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        Progress p = {.metric = runner->metric, .tty = isatty(STDERR_FILENO), .last_decile = -1};
        int r = runner->run(cfg, out, resume, &p, err, sizeof err);
        if (r < 0) {
            if (dist_size() > 1)
                fprintf(stderr, "%s: rank %d: %s\n", progname, dist_rank(), err);
            else
                fprintf(stderr, "%s: %s\n", progname, err);
            dist_abort(EXIT_BAD_INPUT); /* the other ranks would wait for this one forever */
        } else if (r == 1 && dist_rank() == 0) {
            fprintf(stderr,
                    "\nstopped with a checkpoint; continue with: %s run %s --out %s --resume\n",
                    progname, argv[optind], out);
        }
        dist_finalize();
        rc = r < 0 ? EXIT_BAD_INPUT : r == 1 ? 130 : 0;
    }
    free(cfg);
    json_decref(root);
    return rc;
}
