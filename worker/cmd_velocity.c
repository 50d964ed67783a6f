/*
 * cmd_velocity.c: `chunkgrpo-worker velocity`, the model's output and parameter gradients on
 * the user's inputs, for checking the engine against one's own PyTorch code.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "commands.h"
#include "model.h"
#include "ops.h"
#include "safetensors.h"
#include "tokenizer.h"

/* Parses a positive int flag value; names the flag on error. */
int parse_positive(const char *flag, const char *s, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < 1 || v > 4096) {
        fprintf(stderr, "%s: %s expects a positive integer, got \"%s\"\n", progname, flag, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* The batch size of tensor `name` in f, after checking that it has rank ndim and that its
 * trailing dimensions equal tail[0..ndim-1); -1 with a message naming the tensor otherwise. */
static int batch_of(const StFile *f, const char *name, StDtype dt, int ndim, const int64_t *tail,
                    const char *expected)
{
    const StTensor *t = st_find(f, name);
    if (!t) {
        fprintf(stderr, "%s: %s: missing tensor '%s' (expected %s %s)\n", progname, st_label(f),
                name, st_dtype_name(dt), expected);
        return -1;
    }
    int ok = t->dtype == dt && t->ndim == ndim && t->shape[0] >= 1;
    for (int i = 1; ok && i < ndim; i++) ok = t->shape[i] == tail[i - 1];
    if (!ok) {
        char shape[64];
        st_format_shape(shape, sizeof shape, t->ndim, t->shape);
        fprintf(stderr, "%s: %s: tensor '%s' is %s %s, expected %s %s\n", progname, st_label(f),
                name, st_dtype_name(t->dtype), shape, st_dtype_name(dt), expected);
        return -1;
    }
    return (int)t->shape[0];
}

int cmd_velocity(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},
        {"inputs", required_argument, 0, 'i'},
        {"out", required_argument, 0, 'o'},
        {"grad", no_argument, 0, 'g'},
        {"threads", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *model_path = NULL, *inputs_path = NULL, *out_path = NULL;
    int want_grad = 0, threads = 0, c;
    optind = 1;
    opterr = 0; /* our own messages, which name the program and the command */
    while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'i': inputs_path = optarg; break;
        case 'o': out_path = optarg; break;
        case 'g': want_grad = 1; break;
        case 't':
            if (parse_positive("--threads", optarg, &threads)) return EXIT_USAGE;
            break;
        case 'h':
            printf("usage: %s velocity --model M --inputs IN --out OUT [--grad] [--threads N]\n"
                   "(see %s help)\n",
                   progname, progname);
            return 0;
        case ':':
            fprintf(stderr, "%s velocity: %s needs a value\n", progname, argv[optind - 1]);
            return EXIT_USAGE;
        default:
            fprintf(stderr, "%s velocity: unknown option %s (see %s help)\n", progname,
                    argv[optind - 1], progname);
            return EXIT_USAGE;
        }
    }
    const char *missing = !model_path    ? "--model"
                          : !inputs_path ? "--inputs"
                          : !out_path    ? "--out"
                                         : NULL;
    if (missing) {
        fprintf(stderr, "%s velocity: %s is required\n", progname, missing);
        return EXIT_USAGE;
    }
    if (optind < argc) {
        fprintf(stderr, "%s velocity: unexpected argument \"%s\" (the command takes only flags)\n",
                progname, argv[optind]);
        return EXIT_USAGE;
    }
    if (threads) engine_set_threads(threads);

    char err[512];
    int rc = EXIT_BAD_INPUT;
    Model m;
    Vocab vocab;
    StFile *in = NULL;
    Activations *acts = NULL;
    StWriter *w = NULL;
    float *v = NULL;
    if (checkpoint_load(model_path, &m, &vocab, NULL, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", progname, err);
        return EXIT_BAD_INPUT;
    }
    const ModelConfig *cfg = &m.cfg;
    if (st_open(inputs_path, &in, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", progname, err);
        goto done;
    }
    char img_shape[64];
    snprintf(img_shape, sizeof img_shape, "[B, %d, %d, %d]", cfg->image_size, cfg->image_size,
             cfg->channels);
    const int64_t img_tail[3] = {cfg->image_size, cfg->image_size, cfg->channels};
    int B = batch_of(in, "x", ST_F32, 4, img_tail, img_shape);
    if (B < 0) goto done;
    const int64_t t_shape[1] = {B}, tok_full[2] = {B, cfg->text_len};
    const int64_t img_full[4] = {B, cfg->image_size, cfg->image_size, cfg->channels};
    const float *x = st_get_f32(in, "x", 4, img_full, err, sizeof err);
    const float *t = x ? st_get_f32(in, "t", 1, t_shape, err, sizeof err) : NULL;
    const int32_t *tokens = t ? st_get_i32(in, "tokens", 2, tok_full, err, sizeof err) : NULL;
    const float *dv = NULL;
    if (tokens && want_grad) dv = st_get_f32(in, "dv", 4, img_full, err, sizeof err);
    if (!x || !t || !tokens || (want_grad && !dv)) { /* err names the tensor and both shapes */
        fprintf(stderr, "%s: %s\n", progname, err);
        goto done;
    }
    for (int i = 0; i < B * cfg->text_len; i++) {
        if (tokens[i] < 0 || tokens[i] >= cfg->vocab_size) {
            fprintf(stderr,
                    "%s: %s: tensor 'tokens' holds id %d at [%d, %d], outside the "
                    "vocabulary [0, %d)\n",
                    progname, st_label(in), tokens[i], i / cfg->text_len, i % cfg->text_len,
                    cfg->vocab_size);
            goto done;
        }
    }

    rc = EXIT_IO;
    size_t n = (size_t)B * cfg_image_numel(cfg);
    acts = acts_new(cfg, B);
    v = malloc(n * sizeof *v);
    w = st_writer_new();
    if (!acts || !v || !w) {
        fprintf(stderr, "%s: out of memory for batch %d\n", progname, B);
        goto done;
    }
    model_forward(&m, acts, x, t, tokens, v);
    st_writer_add(w, "v", ST_F32, 4, img_full, v);
    if (want_grad) {
        model_zero_grad(&m);
        model_backward(&m, acts, dv);
        for (int i = 0; i < m.num_tensors; i++) {
            const TensorInfo *ti = &m.tensors[i];
            char name[64];
            int64_t shape[2] = {ti->shape[0], ti->shape[1]};
            snprintf(name, sizeof name, "grad.%s", ti->name);
            st_writer_add(w, name, ST_F32, ti->ndim, shape, m.grads + ti->offset);
        }
    }
    st_writer_meta(w, "format", "chunkgrpo-velocity/1");
    if (st_writer_save(w, out_path, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", progname, err);
        goto done;
    }
    rc = 0;
done:
    st_writer_free(w);
    free(v);
    acts_free(acts);
    st_close(in);
    vocab_free(&vocab);
    model_free(&m);
    return rc;
}
