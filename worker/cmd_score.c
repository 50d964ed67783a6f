/*
 * cmd_score.c: two subcommands around the shapes world.
 *
 * `chunkgrpo-worker score --reward align|pref|clip [--model M] (--prompt TEXT IMAGE.png... |
 * --pairs FILE.jsonl)` scores PNG images with a reward and prints one JSON object per image and
 * line (JSON Lines), in input order:
 *   {"image":"a.png","prompt":"a red circle","reward":"align","score":0.93,
 *    "requirements":[{"kind":"object","target":"red circle","score":0.95,"detail":"..."},...]}
 * (pref and clip, the learned models at --model, give the score alone).
 * (plus "line": N, the line of the pairs file, with --pairs). The mean goes to stderr. Every
 * prompt and every line of the pairs file is checked before the first image is read; messages
 * name the flag, or FILE:LINE and the field.
 *
 * `chunkgrpo-worker render` draws the world's ground truth: the scene of a caption (or of a
 * split of the generator) as a PNG, and lists the prompt sets.
 *
 * Exit status as commands.h: 2 usage, 3 bad input (a prompt outside the grammar, an unreadable
 * or malformed file, a non-square image), 4 a failed write (the PNG, or stdout).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "experiment.h"
#include "jsonutil.h"
#include "png.h"
#include "rewards/align.h"
#include "rewards/learned.h"
#include "world/shapes.h"

/* ---- score */

typedef struct {
    char *prompt; /* owned */
    char *image;  /* owned; resolved against the pairs file's folder */
    int line;     /* of the pairs file; 0 for --prompt */
} ScoreItem;

typedef struct {
    ScoreItem *items;
    int n, cap;
} ScoreList;

static void score_list_free(ScoreList *l)
{
    for (int i = 0; i < l->n; i++) {
        free(l->items[i].prompt);
        free(l->items[i].image);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

/* Appends (copies of) prompt and image; -1 when memory runs out. */
static int score_list_add(ScoreList *l, const char *prompt, const char *image, int line)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        ScoreItem *items = realloc(l->items, (size_t)cap * sizeof *items);
        if (!items) return -1;
        l->items = items;
        l->cap = cap;
    }
    ScoreItem *it = &l->items[l->n];
    it->prompt = strdup(prompt);
    it->image = strdup(image);
    it->line = line;
    if (!it->prompt || !it->image) {
        free(it->prompt);
        free(it->image);
        return -1;
    }
    l->n++;
    return 0;
}

/* image, resolved against the folder of `base` unless absolute; malloc'd. */
static char *resolve_path(const char *base, const char *image)
{
    const char *slash = strrchr(base, '/');
    if (image[0] == '/' || !slash) return strdup(image);
    size_t dl = (size_t)(slash - base) + 1, il = strlen(image);
    char *p = malloc(dl + il + 1);
    if (!p) return NULL;
    memcpy(p, base, dl);
    memcpy(p + dl, image, il + 1);
    return p;
}

/* Reads the pairs file: one JSON object per non-blank line with exactly the string fields
 * "prompt" and "image". Returns 0, or the exit status after a message naming FILE:LINE. */
static int read_pairs(const char *path, ScoreList *out)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "%s score: %s: cannot open: %s\n", progname, path, strerror(errno));
        return EXIT_BAD_INPUT;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        int blank = 1;
        for (ssize_t i = 0; i < len && blank; i++) blank = strchr(" \t\r\n", line[i]) != NULL;
        if (blank) continue;
        if ((size_t)len != strlen(line)) {
            fprintf(stderr, "%s score: %s:%d: a NUL byte in the line\n", progname, path, lineno);
            rc = EXIT_BAD_INPUT;
            break;
        }
        json_error_t e;
        json_t *obj = json_loads(line, JSON_REJECT_DUPLICATES, &e);
        if (!obj) {
            fprintf(stderr, "%s score: %s:%d: column %d: %s\n", progname, path, lineno, e.column,
                    e.text);
            rc = EXIT_BAD_INPUT;
            break;
        }
        const char *fields[2] = {"prompt", "image"}, *vals[2] = {NULL, NULL};
        if (!json_is_object(obj)) {
            fprintf(stderr,
                    "%s score: %s:%d: expected an object {\"prompt\": ..., \"image\": ...}, "
                    "got %s\n",
                    progname, path, lineno, json_type_name(obj));
            rc = EXIT_BAD_INPUT;
        }
        for (int k = 0; k < 2 && rc == 0; k++) {
            json_t *v = json_object_get(obj, fields[k]);
            if (!v) {
                fprintf(stderr, "%s score: %s:%d: missing field \"%s\"\n", progname, path, lineno,
                        fields[k]);
                rc = EXIT_BAD_INPUT;
            } else if (!json_is_string(v) || json_string_length(v) == 0) {
                fprintf(stderr,
                        "%s score: %s:%d: field \"%s\" must be a non-empty string, got "
                        "%s\n",
                        progname, path, lineno, fields[k],
                        json_is_string(v) ? "\"\"" : json_type_name(v));
                rc = EXIT_BAD_INPUT;
            } else if (strlen(json_string_value(v)) != json_string_length(v)) {
                fprintf(stderr, "%s score: %s:%d: field \"%s\" holds a NUL character\n", progname,
                        path, lineno, fields[k]);
                rc = EXIT_BAD_INPUT;
            } else {
                vals[k] = json_string_value(v);
            }
        }
        const char *key;
        json_t *v;
        if (rc == 0) {
            json_object_foreach(obj, key, v)
            {
                if (strcmp(key, "prompt") != 0 && strcmp(key, "image") != 0) {
                    fprintf(stderr,
                            "%s score: %s:%d: unknown field \"%s\" (only \"prompt\" and "
                            "\"image\")\n",
                            progname, path, lineno, key);
                    rc = EXIT_BAD_INPUT;
                    break;
                }
            }
        }
        char why[256];
        CaptionSpec spec;
        if (rc == 0 && world_parse_caption(vals[0], &spec, why, sizeof why) != 0) {
            fprintf(stderr,
                    "%s score: %s:%d: field \"prompt\": \"%.80s\" is not in the %s "
                    "grammar: %s\n",
                    progname, path, lineno, vals[0], WORLD_VERSION, why);
            rc = EXIT_BAD_INPUT;
        }
        if (rc == 0) {
            char *image = resolve_path(path, vals[1]);
            if (!image || score_list_add(out, vals[0], image, lineno) != 0) {
                fprintf(stderr, "%s score: out of memory\n", progname);
                rc = EXIT_IO;
            }
            free(image);
        }
        json_decref(obj);
    }
    if (rc == 0 && ferror(f)) {
        fprintf(stderr, "%s score: %s: read error: %s\n", progname, path, strerror(errno));
        rc = EXIT_BAD_INPUT;
    }
    if (rc == 0 && out->n == 0) {
        fprintf(stderr,
                "%s score: %s: no pairs (expected JSON lines {\"prompt\": ..., \"image\": "
                "...})\n",
                progname, path);
        rc = EXIT_BAD_INPUT;
    }
    free(line);
    fclose(f);
    return rc;
}

/* One result as a JSON line on stdout: reward's score, and align's breakdown r (NULL for
 * other rewards). Returns 0, or -1 when a string is not valid UTF-8 (the caller reports it) or
 * memory runs out. */
static int print_result(const ScoreItem *it, const char *reward, double score, const AlignResult *r)
{
    json_t *o = json_object(), *reqs = json_array();
    int ok = o && reqs;
    ok = ok && json_object_set_new(o, "image", json_string(it->image)) == 0;
    if (ok && it->line) ok = json_object_set_new(o, "line", json_integer(it->line)) == 0;
    ok = ok && json_object_set_new(o, "prompt", json_string(it->prompt)) == 0;
    ok = ok && json_object_set_new(o, "reward", json_string(reward)) == 0;
    ok = ok && json_object_set_new(o, "score", json_real(score)) == 0;
    for (int i = 0; ok && r && i < r->num_requirements; i++) {
        const AlignRequirement *q = &r->req[i];
        json_t *e = json_pack("{s:s, s:s, s:f, s:s}", "kind", q->kind, "target", q->target, "score",
                              (double)q->score, "detail", q->detail);
        ok = e && json_array_append_new(reqs, e) == 0;
    }
    if (ok && r) {
        ok = json_object_set_new(o, "requirements", reqs) == 0;
        reqs = NULL;
    }
    char *s =
        ok ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6)) : NULL;
    json_decref(reqs);
    json_decref(o);
    if (!s) return -1;
    fputs(s, stdout);
    fputc('\n', stdout);
    free(s);
    return 0;
}

/* Scores every item in order with align, or with the learned model pm (the reward `reward`)
 * when it is set. Returns 0 or an exit status. */
static int score_items(const ScoreList *l, const char *pairs_path, const char *reward,
                       LearnedReward *pm)
{
    AlignWorkspace *ws = NULL;
    int ws_size = 0, rc = 0;
    double sum = 0;
    for (int i = 0; i < l->n && rc == 0; i++) {
        const ScoreItem *it = &l->items[i];
        char where[4200] = ""; /* names the line of the pairs file the image came from */
        if (it->line)
            snprintf(where, sizeof where, "%s:%d: field \"image\": ", pairs_path, it->line);
        uint8_t *rgb = NULL;
        int w, h;
        char err[512];
        if (png_read_rgb(it->image, &rgb, &w, &h, err, sizeof err) != 0) {
            fprintf(stderr, "%s score: %s%s\n", progname, where, err);
            rc = EXIT_BAD_INPUT;
            break;
        }
        if (pm) {
            float *img = malloc((size_t)w * h * 3 * sizeof(float)), score = 0;
            for (size_t k = 0; img && k < (size_t)w * h * 3; k++) img[k] = rgb[k] / 127.5f - 1.0f;
            if (!img) {
                fprintf(stderr, "%s score: out of memory for a %dx%d image\n", progname, w, h);
                rc = EXIT_IO;
            } else if (w != h || learned_score_images(pm, (const char *const *)&it->prompt, img, 1,
                                                      w, &score, err, sizeof err) != 0) {
                if (w != h) snprintf(err, sizeof err, "image is %dx%d, not square", w, h);
                fprintf(stderr, "%s score: %s%s: %s\n", progname, where, it->image, err);
                rc = EXIT_BAD_INPUT;
            } else if (print_result(it, reward, score, NULL) != 0) {
                fprintf(stderr, "%s score: %s%s: the image path or the prompt is not valid UTF-8\n",
                        progname, where, it->image);
                rc = EXIT_BAD_INPUT;
            }
            sum += score;
            free(img);
            free(rgb);
            continue;
        }
        if (w != h || w > ALIGN_MAX_SIZE) {
            fprintf(stderr,
                    "%s score: %s%s: image is %dx%d; align scores square images up to "
                    "%dx%d\n",
                    progname, where, it->image, w, h, ALIGN_MAX_SIZE, ALIGN_MAX_SIZE);
            free(rgb);
            rc = EXIT_BAD_INPUT;
            break;
        }
        if (w > ws_size) { /* one workspace, grown to the largest image so far */
            align_workspace_free(ws);
            ws = align_workspace_new(w);
            ws_size = ws ? w : 0;
            if (!ws) {
                fprintf(stderr, "%s score: out of memory for a %dx%d image\n", progname, w, h);
                free(rgb);
                rc = EXIT_IO;
                break;
            }
        }
        AlignResult r;
        if (align_score_rgb8(ws, it->prompt, rgb, w, h, &r, err, sizeof err) != 0) {
            fprintf(stderr, "%s score: %s%s: %s\n", progname, where, it->image, err);
            rc = EXIT_BAD_INPUT;
        } else if (print_result(it, "align", r.score, &r) != 0) {
            fprintf(stderr, "%s score: %s%s: the image path or the prompt is not valid UTF-8\n",
                    progname, where, it->image);
            rc = EXIT_BAD_INPUT;
        }
        sum += r.score;
        free(rgb);
    }
    align_workspace_free(ws);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "%s score: writing to stdout: %s\n", progname, strerror(errno));
        return EXIT_IO;
    }
    if (rc == 0)
        fprintf(stderr, "%s: %d image%s, mean %.4f\n", reward, l->n, l->n == 1 ? "" : "s",
                sum / l->n);
    return rc;
}

static void score_usage(FILE *out)
{
    fprintf(out,
            "usage: %s score --reward align|pref|clip [--model M] --prompt TEXT IMAGE.png...\n"
            "       %s score --reward align|pref|clip [--model M] --pairs FILE.jsonl\n"
            "Prints one JSON object per image (JSON Lines) with the score and, for align, its\n"
            "breakdown. pref and clip are learned models at --model (kind reward_train;\n"
            "models/pref-small.safetensors, models/clip-small.safetensors), which score images\n"
            "of their own size.\n"
            "FILE.jsonl: one {\"prompt\": ..., \"image\": ...} per line; image paths are "
            "relative\nto the folder of FILE.jsonl. See docs/prompts.md.\n",
            progname, progname);
}

int cmd_score(int argc, char **argv)
{
    static const struct option opts[] = {
        {"reward", required_argument, 0, 'r'}, {"prompt", required_argument, 0, 'p'},
        {"pairs", required_argument, 0, 'f'},  {"model", required_argument, 0, 'm'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0},
    };
    const char *reward = NULL, *prompt = NULL, *pairs = NULL, *model = NULL;
    int c;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'r': reward = optarg; break;
        case 'p': prompt = optarg; break;
        case 'f': pairs = optarg; break;
        case 'm': model = optarg; break;
        case 'h': score_usage(stdout); return 0;
        case ':':
            fprintf(stderr, "%s score: %s needs a value\n", progname, argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "%s score: unknown option %s (see %s help)\n", progname,
                    argv[optind - 1], progname);
            return EXIT_USAGE;
        }
    }
    if (!reward) {
        fprintf(stderr, "%s score: --reward is required (available: align, pref, clip)\n",
                progname);
        return EXIT_USAGE;
    }
    int learned = -1; /* the LearnedKind of a learned reward */
    for (int k = 0; k < EXPERIMENT_LEARNED; k++)
        if (strcmp(reward, experiment_learned_names[k]) == 0) learned = k;
    if (learned < 0 && strcmp(reward, "align") != 0) {
        fprintf(stderr, "%s score: --reward \"%s\" is not known (available: align, pref, clip)\n",
                progname, reward);
        return EXIT_USAGE;
    }
    if ((learned >= 0) != (model != NULL)) {
        if (learned >= 0)
            fprintf(stderr, "%s score: --reward %s needs --model (a reward_train checkpoint)\n",
                    progname, reward);
        else
            fprintf(stderr, "%s score: --model is for --reward pref or clip\n", progname);
        return EXIT_USAGE;
    }
    if (!prompt == !pairs) {
        fprintf(stderr, "%s score: give either --prompt TEXT with images, or --pairs FILE.jsonl\n",
                progname);
        return EXIT_USAGE;
    }
    if (prompt && optind == argc) {
        fprintf(stderr, "%s score: --prompt needs at least one IMAGE.png after the flags\n",
                progname);
        return EXIT_USAGE;
    }
    if (pairs && optind < argc) {
        fprintf(stderr,
                "%s score: unexpected argument \"%s\" (with --pairs, images come from the "
                "file)\n",
                progname, argv[optind]);
        return EXIT_USAGE;
    }
    ScoreList list = {0};
    int rc = 0;
    if (prompt) {
        CaptionSpec spec;
        char why[256];
        if (world_parse_caption(prompt, &spec, why, sizeof why) != 0) {
            fprintf(stderr, "%s score: --prompt \"%.80s\" is not in the %s grammar: %s\n", progname,
                    prompt, WORLD_VERSION, why);
            return EXIT_BAD_INPUT;
        }
        for (int i = optind; i < argc && rc == 0; i++) {
            if (score_list_add(&list, prompt, argv[i], 0) != 0) {
                fprintf(stderr, "%s score: out of memory\n", progname);
                rc = EXIT_IO;
            }
        }
    } else {
        rc = read_pairs(pairs, &list);
    }
    LearnedReward *pm = NULL;
    if (rc == 0 && learned >= 0) {
        char err[1024];
        if (!(pm = learned_open(model, (LearnedKind)learned, 1, err, sizeof err))) {
            fprintf(stderr, "%s score: --model: %s\n", progname, err);
            rc = EXIT_BAD_INPUT;
        }
    }
    if (rc == 0) rc = score_items(&list, pairs, reward, pm);
    learned_close(pm);
    score_list_free(&list);
    return rc;
}

/* ---- render */

static void render_usage(FILE *out)
{
    fprintf(out,
            "usage: %s render --caption TEXT [--size 32] [--seed 1] [--index 0] --out FILE.png\n"
            "       %s render --split train|heldout|all [--size 32] [--seed 1] [--index 0] "
            "--out FILE.png\n"
            "       %s render --list train|heldout\n",
            progname, progname, progname);
}

/* A decimal u64 flag value. */
static int parse_u64(const char *flag, const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || s[0] == '+' || s[0] == ' ') {
        fprintf(stderr, "%s render: %s expects an integer in [0, 2^64), got \"%s\"\n", progname,
                flag, s);
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

int cmd_render(int argc, char **argv)
{
    static const struct option opts[] = {
        {"caption", required_argument, 0, 'c'},
        {"split", required_argument, 0, 'p'},
        {"size", required_argument, 0, 's'},
        {"seed", required_argument, 0, 'e'},
        {"index", required_argument, 0, 'i'},
        {"out", required_argument, 0, 'o'},
        {"list", required_argument, 0, 'l'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *caption = NULL, *split_name = NULL, *out_path = NULL, *list = NULL;
    int size = 32, c;
    uint64_t seed = 1, index = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'c': caption = optarg; break;
        case 'p': split_name = optarg; break;
        case 'o': out_path = optarg; break;
        case 'l': list = optarg; break;
        case 's':
            if (parse_positive("--size", optarg, &size)) return EXIT_USAGE;
            break;
        case 'e':
            if (parse_u64("--seed", optarg, &seed)) return EXIT_USAGE;
            break;
        case 'i':
            if (parse_u64("--index", optarg, &index)) return EXIT_USAGE;
            break;
        case 'h': render_usage(stdout); return 0;
        case ':':
            fprintf(stderr, "%s render: %s needs a value\n", progname, argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "%s render: unknown option %s (see %s help)\n", progname,
                    argv[optind - 1], progname);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s render: unexpected argument \"%s\" (the command takes only flags)\n",
                progname, argv[optind]);
        return EXIT_USAGE;
    }
    if (list) {
        if (caption || split_name || out_path) {
            fprintf(stderr, "%s render: --list takes no other flag\n", progname);
            return EXIT_USAGE;
        }
        int n;
        const char *const *p;
        if (strcmp(list, "train") == 0)
            p = world_prompts(PROMPTS_TRAIN, &n);
        else if (strcmp(list, "heldout") == 0)
            p = world_prompts(PROMPTS_HELDOUT, &n);
        else {
            fprintf(stderr, "%s render: --list expects train or heldout, got \"%s\"\n", progname,
                    list);
            return EXIT_USAGE;
        }
        for (int i = 0; i < n; i++) printf("%s\n", p[i]);
        if (fflush(stdout) != 0 || ferror(stdout)) {
            fprintf(stderr, "%s render: writing to stdout: %s\n", progname, strerror(errno));
            return EXIT_IO;
        }
        return 0;
    }
    if (!caption == !split_name) {
        fprintf(stderr,
                "%s render: give either --caption TEXT or --split train|heldout|all "
                "(or --list)\n",
                progname);
        return EXIT_USAGE;
    }
    if (!out_path) {
        fprintf(stderr, "%s render: --out is required\n", progname);
        return EXIT_USAGE;
    }
    Scene scene;
    if (caption) {
        char err[512];
        if (world_scene_for_caption(caption, seed, index, &scene, err, sizeof err) != 0) {
            fprintf(stderr, "%s render: --caption: %s\n", progname, err);
            return EXIT_BAD_INPUT;
        }
    } else {
        WorldSplit split;
        if (strcmp(split_name, "train") == 0)
            split = WORLD_SPLIT_TRAIN;
        else if (strcmp(split_name, "heldout") == 0)
            split = WORLD_SPLIT_HELDOUT;
        else if (strcmp(split_name, "all") == 0)
            split = WORLD_SPLIT_ALL;
        else {
            fprintf(stderr, "%s render: --split expects train, heldout or all, got \"%s\"\n",
                    progname, split_name);
            return EXIT_USAGE;
        }
        world_sample_scene(seed, index, split, &scene);
    }
    size_t n = (size_t)size * size * 3;
    float *img = malloc(n * sizeof *img);
    uint8_t *rgb = malloc(n);
    int rc = 0;
    char err[512];
    if (!img || !rgb) {
        fprintf(stderr, "%s render: out of memory for a %dx%d image\n", progname, size, size);
        rc = EXIT_IO;
    } else {
        world_render(&scene, size, img);
        image_to_rgb8(img, size, 3, rgb);
        if (png_write_rgb(out_path, rgb, size, size, err, sizeof err) != 0) {
            fprintf(stderr, "%s render: %s\n", progname, err);
            rc = EXIT_IO;
        } else {
            printf("%s\n", scene.caption);
        }
    }
    free(img);
    free(rgb);
    if (rc == 0 && (fflush(stdout) != 0 || ferror(stdout))) {
        fprintf(stderr, "%s render: writing to stdout: %s\n", progname, strerror(errno));
        rc = EXIT_IO;
    }
    return rc;
}
