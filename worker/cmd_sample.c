/*
 * cmd_sample.c: `chunkgrpo-worker sample`, images from a checkpoint and a prompt with the ODE or
 * SDE sampler (worker/engine/sampler.h), written as PNGs (common/png.h) and optionally as a
 * trajectory file for inspection or for checking against one's own sampler:
 *   DIR/sample_000.png ... one per sample: its x0_hat, the image rewards see
 *   DIR/grid.png           all samples, ceil(sqrt(n)) columns
 *   --trajectory FILE      x F32 [steps+1, n, S, S, C], logp F32 [steps, n], sigmas F32
 *                          [steps+1], x0_hat F32 [n, S, S, C], tokens I32 [n, T], with the
 *                          settings in __metadata__ (format "chunkgrpo-trajectory/1")
 * Every flag is checked before the model is loaded; messages name the flag.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend.h"
#include "checkpoint.h"
#include "commands.h"
#include "model.h"
#include "ops.h"
#include "png.h"
#include "safetensors.h"
#include "sampler.h"
#include "tokenizer.h"

#define SAMPLE_MAX_BATCH 32 /* the model batch: n is run in batches of at most this */
#define SAMPLE_GRID_PAD 2

static void sample_usage(FILE *out)
{
    fprintf(out,
            "usage: %s sample --model M --prompt TEXT --out DIR [--n 8] [--steps 17]\n"
            "         [--sampler ode|sde] [--sde flow|dance|cps] [--eta 0.7] [--shift 3]\n"
            "         [--seed 1] [--cfg W] [--same-noise] [--trajectory FILE.safetensors]\n"
            "         [--batch B]\n"
            "         [--threads N] [--backend cpu|cuda]\n"
            "(see %s help)\n",
            progname, progname);
}

/* A float flag value, finite and within [lo, hi] (lo excluded when lo_open). */
static int parse_float(const char *flag, const char *s, float lo, int lo_open, float hi, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    int ok = !errno && end != s && !*end && isfinite(v) && v <= hi && (lo_open ? v > lo : v >= lo);
    if (!ok) {
        fprintf(stderr, "%s sample: %s expects a number in %s%g, %g], got \"%s\"\n", progname, flag,
                lo_open ? "(" : "[", lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* A decimal u64 (no sign). */
static int parse_seed(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || s[0] == '+' || s[0] == ' ') {
        fprintf(stderr, "%s sample: --seed expects an integer in [0, 2^64), got \"%s\"\n", progname,
                s);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

/* mkdir -p; 0 or -1 with errno set. */
static int make_dirs(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
    struct stat st;
    if (stat(buf, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

/* The tokenizer's word characters: ASCII letters and digits, whatever the locale. */
static int word_char(int ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
}

/* Warns on stderr about the prompt's words that the vocabulary lacks (they become UNK), and
 * about words past the model's text length (dropped). The split is the tokenizer's. */
static void warn_prompt(const Vocab *v, const char *prompt, int T)
{
    char word[256];
    int words = 0;
    const char *p = prompt;
    while (*p) {
        while (*p && !word_char((unsigned char)*p)) p++;
        if (!*p) break;
        size_t len = 0;
        const char *start = p;
        while (*p && word_char((unsigned char)*p)) {
            if (len + 1 < sizeof word) word[len++] = (char)tolower((unsigned char)*p);
            p++;
        }
        word[len] = '\0';
        words++;
        if (words <= T && vocab_lookup(v, word, len) == TOKEN_UNK)
            fprintf(stderr,
                    "%s sample: warning: \"%.*s\" is not in the model's vocabulary "
                    "(it becomes <unk>)\n",
                    progname, (int)(p - start), start);
    }
    if (words == 0)
        fprintf(stderr, "%s sample: warning: the prompt has no words; sampling unconditionally\n",
                progname);
    else if (words > T)
        fprintf(stderr,
                "%s sample: warning: the prompt has %d words, the model reads %d; the rest "
                "is dropped\n",
                progname, words, T);
}

typedef struct {
    const char *model, *prompt, *out, *trajectory;
    BackendKind backend;
    int n, steps, batch, threads, same_noise;
    int kind_set, sde_set, eta_set;
    uint64_t seed;
    SamplerConfig sc;
} SampleArgs;

/* Parses argv into *a; returns 0, or the exit status (0 after --help is printed: *done = 1). */
static int sample_parse(int argc, char **argv, SampleArgs *a, int *done)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"prompt", required_argument, 0, 'p'},
        {"out", required_argument, 0, 'o'},
        {"n", required_argument, 0, 'n'},
        {"steps", required_argument, 0, 's'},
        {"sampler", required_argument, 0, 'k'},
        {"sde", required_argument, 0, 'd'},
        {"eta", required_argument, 0, 'e'},
        {"shift", required_argument, 0, 'f'},
        {"seed", required_argument, 0, 'r'},
        {"cfg", required_argument, 0, 'c'},
        {"same-noise", no_argument, 0, 'N'},
        {"trajectory", required_argument, 0, 'j'},
        {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'},
        {"backend", required_argument, 0, 'B'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    memset(a, 0, sizeof *a);
    sampler_config_default(&a->sc);
    a->sc.kind = SAMPLER_ODE; /* the command's default: clean images to look at */
    a->n = 8;
    a->steps = 17;
    a->seed = 1;
    *done = 0;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model = optarg; break;
        case 'p': a->prompt = optarg; break;
        case 'o': a->out = optarg; break;
        case 'j': a->trajectory = optarg; break;
        case 'n':
            if (parse_positive("--n", optarg, &a->n)) return EXIT_USAGE;
            break;
        case 's':
            if (parse_positive("--steps", optarg, &a->steps)) return EXIT_USAGE;
            if (a->steps > SAMPLER_MAX_STEPS) {
                fprintf(stderr, "%s sample: --steps must be at most %d, got %d\n", progname,
                        SAMPLER_MAX_STEPS, a->steps);
                return EXIT_USAGE;
            }
            break;
        case 'b':
            if (parse_positive("--batch", optarg, &a->batch)) return EXIT_USAGE;
            break;
        case 't':
            if (parse_positive("--threads", optarg, &a->threads)) return EXIT_USAGE;
            break;
        case 'B':
            if (backend_from_name(optarg, &a->backend)) {
                fprintf(stderr, "%s sample: --backend expects cpu or cuda, got \"%s\"\n", progname,
                        optarg);
                return EXIT_USAGE;
            }
            break;
        case 'k':
            if (strcmp(optarg, "ode") == 0)
                a->sc.kind = SAMPLER_ODE;
            else if (strcmp(optarg, "sde") == 0)
                a->sc.kind = SAMPLER_SDE;
            else {
                fprintf(stderr, "%s sample: --sampler expects ode or sde, got \"%s\"\n", progname,
                        optarg);
                return EXIT_USAGE;
            }
            a->kind_set = 1;
            break;
        case 'd':
            if (sde_kind_from_name(optarg, &a->sc.sde)) {
                fprintf(stderr, "%s sample: --sde expects flow, dance or cps, got \"%s\"\n",
                        progname, optarg);
                return EXIT_USAGE;
            }
            a->sde_set = 1;
            break;
        case 'e':
            if (parse_float("--eta", optarg, 0.0f, 1, 100.0f, &a->sc.eta)) return EXIT_USAGE;
            a->eta_set = 1;
            break;
        case 'f':
            if (parse_float("--shift", optarg, 0.0f, 1, 1000.0f, &a->sc.shift)) return EXIT_USAGE;
            break;
        case 'c':
            if (parse_float("--cfg", optarg, -100.0f, 0, 100.0f, &a->sc.cfg_scale))
                return EXIT_USAGE;
            a->sc.guidance = 1;
            break;
        case 'r':
            if (parse_seed(optarg, &a->seed)) return EXIT_USAGE;
            break;
        case 'N': a->same_noise = 1; break;
        case 'h':
            sample_usage(stdout);
            *done = 1;
            return 0;
        case ':':
            fprintf(stderr, "%s sample: %s needs a value\n", progname, argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "%s sample: unknown option %s (see %s help)\n", progname,
                    argv[optind - 1], progname);
            return EXIT_USAGE;
        }
    }
    const char *missing = !a->model    ? "--model"
                          : !a->prompt ? "--prompt"
                          : !a->out    ? "--out"
                                       : NULL;
    if (missing) {
        fprintf(stderr, "%s sample: %s is required\n", progname, missing);
        return EXIT_USAGE;
    }
    if (optind < argc) {
        fprintf(stderr, "%s sample: unexpected argument \"%s\" (the command takes only flags)\n",
                progname, argv[optind]);
        return EXIT_USAGE;
    }
    if (a->sc.kind == SAMPLER_ODE && (a->sde_set || a->eta_set)) {
        fprintf(stderr, "%s sample: %s applies to --sampler sde only\n", progname,
                a->sde_set ? "--sde" : "--eta");
        return EXIT_USAGE;
    }
    if (!*a->out) {
        fprintf(stderr, "%s sample: --out must name a folder\n", progname);
        return EXIT_USAGE;
    }
    if (a->trajectory && !*a->trajectory) {
        fprintf(stderr, "%s sample: --trajectory must name a file\n", progname);
        return EXIT_USAGE;
    }
    a->sc.steps = a->steps;
    a->sc.noise_group = a->same_noise ? a->n : 0;
    char err[256];
    if (sampler_config_validate(&a->sc, err, sizeof err) != 0) { /* e.g. --shift vs --steps */
        fprintf(stderr, "%s sample: %s\n", progname, err);
        return EXIT_USAGE;
    }
    if (!a->batch) a->batch = a->n < SAMPLE_MAX_BATCH ? a->n : SAMPLE_MAX_BATCH;
    if (a->batch > a->n) a->batch = a->n; /* a larger batch would only run padding */
    return 0;
}

/* The shortest "%.Ng" that reads back as exactly v (0.7f prints as "0.7", not "0.699999988"). */
static void format_float(char *buf, size_t len, float v)
{
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, len, "%.*g", prec, v);
        if (strtof(buf, NULL) == v) return;
    }
}

/* Writes the trajectory file. Returns 0, or -1 with err set. */
static int write_trajectory(const SampleArgs *a, const ModelConfig *cfg, const Trajectory *tr,
                            char *err, size_t errlen)
{
    int64_t S = cfg->image_size, C = cfg->channels, n = tr->n, N = tr->steps;
    const int64_t xs[5] = {N + 1, n, S, S, C}, ls[2] = {N, n}, ss[1] = {N + 1},
                  x0s[4] = {n, S, S, C}, ts[2] = {n, cfg->text_len};
    StWriter *w = st_writer_new();
    if (!w) {
        snprintf(err, errlen, "%s: out of memory", a->trajectory);
        return -1;
    }
    char buf[64];
    st_writer_add(w, "x", ST_F32, 5, xs, tr->x);
    st_writer_add(w, "logp", ST_F32, 2, ls, tr->logp);
    st_writer_add(w, "sigmas", ST_F32, 1, ss, tr->sigmas);
    st_writer_add(w, "x0_hat", ST_F32, 4, x0s, tr->x0_hat);
    st_writer_add(w, "tokens", ST_I32, 2, ts, tr->tokens);
    st_writer_meta(w, "format", "chunkgrpo-trajectory/1");
    st_writer_meta(w, "model", a->model);
    st_writer_meta(w, "prompt", a->prompt);
    st_writer_meta(w, "sampler", a->sc.kind == SAMPLER_ODE ? "ode" : "sde");
    if (a->sc.kind == SAMPLER_SDE) {
        st_writer_meta(w, "sde", sde_kind_name(a->sc.sde));
        format_float(buf, sizeof buf, a->sc.eta);
        st_writer_meta(w, "eta", buf);
    }
    snprintf(buf, sizeof buf, "%d", a->steps);
    st_writer_meta(w, "steps", buf);
    format_float(buf, sizeof buf, a->sc.shift);
    st_writer_meta(w, "shift", buf);
    snprintf(buf, sizeof buf, "%" PRIu64, a->seed);
    st_writer_meta(w, "seed", buf);
    if (a->sc.guidance) {
        format_float(buf, sizeof buf, a->sc.cfg_scale);
        st_writer_meta(w, "cfg", buf);
    }
    st_writer_meta(w, "same_noise", a->same_noise ? "true" : "false");
    int rc = st_writer_save(w, a->trajectory, err, errlen);
    st_writer_free(w);
    return rc;
}

int cmd_sample(int argc, char **argv)
{
    SampleArgs a;
    int done, rc = sample_parse(argc, argv, &a, &done);
    if (rc || done) return rc;
    if (a.threads) engine_set_threads(a.threads);

    char err[512];
    Model m;
    Vocab vocab;
    Policy *pol = NULL;
    PolicySampler *s = NULL;
    Trajectory *tr = NULL;
    int32_t *tokens = NULL;
    uint8_t *rgb = NULL;
    if (checkpoint_load(a.model, &m, &vocab, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", progname, err);
        return EXIT_BAD_INPUT;
    }
    const ModelConfig *cfg = &m.cfg;
    int T = cfg->text_len, S = cfg->image_size, C = cfg->channels;
    warn_prompt(&vocab, a.prompt, T);

    rc = EXIT_IO;
    if (make_dirs(a.out) != 0) {
        fprintf(stderr, "%s sample: --out %s: cannot create the folder: %s\n", progname, a.out,
                strerror(errno));
        goto done;
    }
    if (!(pol = policy_new(a.backend, CUDA_MATH_TF32, &m, NULL, a.batch, err, sizeof err))) {
        fprintf(stderr, "%s sample: --backend %s: %s\n", progname, backend_names[a.backend], err);
        rc = EXIT_BAD_INPUT;
        goto done;
    }
    s = policy_sampler_new(pol, &a.sc, a.n, err, sizeof err);
    if (!s) { /* the flags were checked above, so this is memory */
        fprintf(stderr, "%s sample: %s\n", progname, err);
        goto done;
    }
    tr = trajectory_new(cfg, a.n, a.steps);
    tokens = malloc((size_t)a.n * T * sizeof *tokens);
    rgb = malloc((size_t)S * S * 3);
    if (!tr || !tokens || !rgb) {
        fprintf(stderr, "%s sample: out of memory for %d samples\n", progname, a.n);
        goto done;
    }
    tokenize(&vocab, a.prompt, T, tokens);
    for (int b = 1; b < a.n; b++) memcpy(tokens + (size_t)b * T, tokens, T * sizeof *tokens);
    Rng rng;
    rng_seed(&rng, a.seed);
    if (policy_sample(s, tokens, &rng, tr, a.trajectory != NULL, err, sizeof err) != 0) {
        fprintf(stderr, "%s sample: %s\n", progname, err); /* not expected: inputs are ours */
        goto done;
    }

    char path[4200];
    for (int b = 0; b < a.n; b++) {
        snprintf(path, sizeof path, "%s/sample_%03d.png", a.out, b);
        image_to_rgb8(tr->x0_hat + (size_t)b * tr->img, S, C, rgb);
        if (png_write_rgb(path, rgb, S, S, err, sizeof err) != 0) {
            fprintf(stderr, "%s sample: %s\n", progname, err);
            goto done;
        }
        printf("%s\n", path);
    }
    snprintf(path, sizeof path, "%s/grid.png", a.out);
    if (png_write_grid(path, tr->x0_hat, a.n, S, C, 0, SAMPLE_GRID_PAD, err, sizeof err) != 0) {
        fprintf(stderr, "%s sample: %s\n", progname, err);
        goto done;
    }
    printf("%s\n", path);
    if (a.trajectory) {
        if (write_trajectory(&a, cfg, tr, err, sizeof err) != 0) {
            fprintf(stderr, "%s sample: --trajectory %s\n", progname, err);
            goto done;
        }
        printf("%s\n", a.trajectory);
    }
    rc = 0;
done:
    free(rgb);
    free(tokens);
    trajectory_free(tr);
    policy_sampler_free(s);
    policy_free(pol);
    vocab_free(&vocab);
    model_free(&m);
    return rc;
}
