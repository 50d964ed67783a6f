/*
 * test_cgraw.c: the cgraw fixture reader (tests/gpu/cgraw.c) and the committed .cgraw fixtures.
 *
 * Every committed tests/reference/fixtures/X.cgraw must hold exactly the tensors of X.safetensors
 * as the project's safetensors reader sees them (same order, name, dtype, shape and bytes) and
 * its metadata minus the multi-line values; then a hand-written file with the corner cases the
 * fixtures lack (a scalar, an empty tensor, a tensor at an offset its dtype does not divide,
 * meta values with spaces or empty); then truncated and malformed files, each of which must fail
 * with a message that names the file and the problem (and the line or tensor).
 * Whether the .cgraw files are up to date with the .safetensors is tests/cli/fixtures.sh's job.
 */
#include "../gpu/cgraw.h"
#include "safetensors.h"
#include "test.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *const fixture_names[] = {"tiny_model", "tiny_inputs", "tiny_expected",
                                            "sampler",    "grpo",        "adamw"};

static void write_bytes(const char *path, const void *buf, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (!fp || fwrite(buf, 1, n, fp) != n) {
        perror(path);
        exit(2);
    }
    fclose(fp);
}

static unsigned char *read_bytes(const char *path, size_t *n)
{
    *n = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, fp);
    fclose(fp);
    return b;
}

static int contains(const char *s, const char *needle)
{
    return strstr(s, needle) != NULL;
}

/* ---------------------------------------------------------------------------------------------
 * the committed fixtures
 */

static void test_fixtures_match_safetensors(void)
{
    for (size_t k = 0; k < sizeof fixture_names / sizeof fixture_names[0]; k++) {
        char st_path[256], raw_path[256], err[512] = "";
        snprintf(st_path, sizeof st_path, FIXTURES "%s.safetensors", fixture_names[k]);
        snprintf(raw_path, sizeof raw_path, FIXTURES "%s.cgraw", fixture_names[k]);
        StFile *st = NULL;
        CHECK_MSG(st_open(st_path, &st, err, sizeof err) == 0, "%s", err);
        CgRaw *raw = cgraw_open(raw_path, err, sizeof err);
        CHECK_MSG(raw != NULL, "%s", err);
        if (!st || !raw) {
            st_close(st);
            cgraw_close(raw);
            continue;
        }
        CHECK(strcmp(cgraw_path(raw), raw_path) == 0);
        CHECK_MSG(cgraw_count(raw) == st_count(st), "%s: %d tensors, %s has %d", raw_path,
                  cgraw_count(raw), st_path, st_count(st));
        CHECK(cgraw_count(raw) > 0);
        for (int i = 0; i < st_count(st) && i < cgraw_count(raw); i++) {
            const StTensor *s = st_tensor(st, i);
            const CgTensor *c = cgraw_tensor(raw, i);
            CHECK_MSG(strcmp(c->name, s->name) == 0, "%s: tensor %d is '%s', expected '%s'",
                      raw_path, i, c->name, s->name);
            CHECK_MSG(cgraw_find(raw, s->name) == c, "%s: cgraw_find('%s')", raw_path, s->name);
            CHECK_MSG(strcmp(c->dtype, st_dtype_name(s->dtype)) == 0 &&
                          c->elem_size == st_dtype_size(s->dtype),
                      "%s: '%s' is %s, expected %s", raw_path, s->name, c->dtype,
                      st_dtype_name(s->dtype));
            int same_shape = c->ndim == s->ndim;
            for (int d = 0; d < CGRAW_MAX_DIMS; d++)
                same_shape = same_shape && c->shape[d] == s->shape[d];
            CHECK_MSG(same_shape && c->numel == s->numel && c->nbytes == s->nbytes &&
                          c->offset == s->begin,
                      "%s: '%s': shape, size or offset differs", raw_path, s->name);
            CHECK_MSG(c->data && (uintptr_t)c->data % c->elem_size == 0,
                      "%s: '%s' data NULL or misaligned", raw_path, s->name);
            CHECK_MSG(c->nbytes == s->nbytes && memcmp(c->data, st_data(st, s), s->nbytes) == 0,
                      "%s: '%s': bytes differ from %s", raw_path, s->name, st_path);
        }
        CHECK(cgraw_tensor(raw, cgraw_count(raw)) == NULL);
        CHECK(cgraw_tensor(raw, -1) == NULL);
        CHECK(cgraw_find(raw, "no such tensor") == NULL);
        for (int i = 0; i < st_meta_count(st); i++) {
            const char *key, *value;
            st_meta_entry(st, i, &key, &value);
            const char *got = cgraw_meta(raw, key);
            if (strchr(value, '\n'))
                CHECK_MSG(got == NULL, "%s: multi-line meta '%s' should be left out", raw_path,
                          key);
            else
                CHECK_MSG(got && strcmp(got, value) == 0, "%s: meta '%s' is '%s', expected '%s'",
                          raw_path, key, got ? got : "(absent)", value);
        }
        CHECK(cgraw_meta(raw, "no such key") == NULL);
        st_close(st);
        cgraw_close(raw);
    }
}

static void test_typed_accessors(void)
{
    char err[512] = "";
    const char *path = FIXTURES "tiny_inputs.cgraw";
    CgRaw *f = cgraw_open(path, err, sizeof err);
    CHECK_MSG(f != NULL, "%s", err);
    if (!f) return;
    const CgTensor *x = cgraw_find(f, "x");
    CHECK(x && x->ndim == 4 && x->shape[0] == 3 && x->shape[3] == 3 && x->numel == 2304);
    CHECK(cgraw_f32(f, "x", 3 * 16 * 16 * 3, err, sizeof err) == (const float *)x->data);
    CHECK(cgraw_f32(f, "x", 0, err, sizeof err) == (const float *)x->data); /* 0: any count */
    CHECK(cgraw_i32(f, "tokens", 24, err, sizeof err) != NULL);

    CHECK(cgraw_f32(f, "x", 2305, err, sizeof err) == NULL);
    CHECK_MSG(contains(err, path) && contains(err, "'x'") && contains(err, "2304") &&
                  contains(err, "2305"),
              "%s", err);
    CHECK(cgraw_f32(f, "tokens", 0, err, sizeof err) == NULL);
    CHECK_MSG(contains(err, path) && contains(err, "'tokens'") && contains(err, "I32") &&
                  contains(err, "expected F32"),
              "%s", err);
    CHECK(cgraw_i32(f, "x", 0, err, sizeof err) == NULL);
    CHECK_MSG(contains(err, "'x'") && contains(err, "expected I32"), "%s", err);
    CHECK(cgraw_f32(f, "nope", 0, err, sizeof err) == NULL);
    CHECK_MSG(contains(err, path) && contains(err, "no tensor 'nope'"), "%s", err);
    CHECK(cgraw_f32(f, "nope", 0, NULL, 0) == NULL); /* no message buffer is fine */
    cgraw_close(f);
    cgraw_close(NULL);
}

/* ---------------------------------------------------------------------------------------------
 * a hand-written file with the corner cases
 */

static void test_corner_cases(void)
{
    /* u8 [3] at 0, f32 [2] at 3 (misaligned for its dtype: copied), f64 scalar at 11 (idem),
     * an empty i64 [0, 5] at 19, i32 [1] at 19. */
    static const char header[] = "CGRAW1 5\n"
                                 "c U8 1 3 0 3\n"
                                 "a.weight F32 1 2 3 8\n"
                                 "d F64 0 11 8\n"
                                 "empty I64 2 0 5 19 0\n"
                                 "b I32 1 1 19 4\n"
                                 "meta format test/1\n"
                                 "meta note spaces  and\ttabs \n"
                                 "meta blank \n"
                                 "end\n";
    unsigned char data[23];
    const uint8_t c[3] = {1, 2, 255};
    const float a[2] = {1.5f, -2.0f};
    const double d = 3.141592653589793;
    const int32_t b = -7;
    memcpy(data, c, 3);
    memcpy(data + 3, a, 8);
    memcpy(data + 11, &d, 8);
    memcpy(data + 19, &b, 4);
    unsigned char file[sizeof header - 1 + sizeof data];
    memcpy(file, header, sizeof header - 1);
    memcpy(file + sizeof header - 1, data, sizeof data);
    const char *path = test_tmp_path("corner.cgraw");
    write_bytes(path, file, sizeof file);

    char err[512] = "";
    CgRaw *f = cgraw_open(path, err, sizeof err);
    CHECK_MSG(f != NULL, "%s", err);
    if (!f) return;
    CHECK(cgraw_count(f) == 5);
    const char *order[5] = {"c", "a.weight", "d", "empty", "b"};
    for (int i = 0; i < 5 && i < cgraw_count(f); i++) {
        const CgTensor *t = cgraw_tensor(f, i);
        CHECK_MSG(strcmp(t->name, order[i]) == 0, "%d: %s", i, t->name);
        CHECK_MSG((uintptr_t)t->data % t->elem_size == 0, "%s misaligned", t->name);
        CHECK(t->line == i + 2);
    }
    const CgTensor *t = cgraw_find(f, "c");
    CHECK(t && strcmp(t->dtype, "U8") == 0 && t->numel == 3 && memcmp(t->data, c, 3) == 0);
    const float *pa = cgraw_f32(f, "a.weight", 2, err, sizeof err);
    CHECK_MSG(pa && pa[0] == 1.5f && pa[1] == -2.0f, "%s", err);
    t = cgraw_find(f, "d");
    CHECK(t && t->ndim == 0 && t->numel == 1 && t->nbytes == 8 && t->elem_size == 8);
    CHECK(t && memcmp(t->data, &d, 8) == 0);
    t = cgraw_find(f, "empty");
    CHECK(t && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 5 && t->numel == 0 &&
          t->nbytes == 0 && t->data != NULL);
    const int32_t *pb = cgraw_i32(f, "b", 1, err, sizeof err);
    CHECK_MSG(pb && *pb == -7, "%s", err);
    CHECK(cgraw_meta(f, "format") && strcmp(cgraw_meta(f, "format"), "test/1") == 0);
    CHECK(cgraw_meta(f, "note") && strcmp(cgraw_meta(f, "note"), "spaces  and\ttabs ") == 0);
    CHECK(cgraw_meta(f, "blank") && strcmp(cgraw_meta(f, "blank"), "") == 0);
    CHECK(cgraw_meta(f, "meta") == NULL);
    cgraw_close(f);

    /* no tensors at all is a valid file */
    static const char none[] = "CGRAW1 0\nend\n";
    path = test_tmp_path("none.cgraw");
    write_bytes(path, none, sizeof none - 1);
    f = cgraw_open(path, err, sizeof err);
    CHECK_MSG(f != NULL && cgraw_count(f) == 0, "%s", err);
    cgraw_close(f);
}

/* ---------------------------------------------------------------------------------------------
 * truncated and malformed files
 */

/* Writes n bytes to a file called name, and checks that cgraw_open fails with a message naming
 * the file and containing every phrase (NULL-terminated list). */
static void expect_bad_bytes(int line, const char *name, const void *b, size_t n, ...)
{
    const char *path = test_tmp_path(name);
    write_bytes(path, b, n);
    char err[512] = "";
    CgRaw *f = cgraw_open(path, err, sizeof err);
    CHECK_MSG(f == NULL, "line %d: cgraw_open accepted %s", line, name);
    cgraw_close(f);
    CHECK_MSG(contains(err, path), "line %d: message does not name the file: %s", line, err);
    va_list ap;
    va_start(ap, n);
    for (const char *ph; (ph = va_arg(ap, const char *));)
        CHECK_MSG(contains(err, ph), "line %d: '%s' not in: %s", line, ph, err);
    va_end(ap);
    unlink(path);
}

/* A header (a string literal, NULs allowed) followed by data_len zero bytes. */
#define EXPECT_BAD(header, data_len, ...)                                                          \
    do {                                                                                           \
        size_t hl_ = sizeof(header) - 1, n_ = hl_ + (data_len);                                    \
        unsigned char *b_ = calloc(n_ + 1, 1);                                                     \
        memcpy(b_, header, hl_);                                                                   \
        expect_bad_bytes(__LINE__, "bad.cgraw", b_, n_, __VA_ARGS__, (const char *)NULL);          \
        free(b_);                                                                                  \
    } while (0)

static void test_truncated(void)
{
    size_t n = 0;
    unsigned char *b = read_bytes(FIXTURES "tiny_inputs.cgraw", &n);
    CHECK(b != NULL && n > 100);
    if (!b) return;
    /* cut in the data block: the last tensor (dv, line 5) is short */
    expect_bad_bytes(__LINE__, "cut_data.cgraw", b, n - 10, "tensor 'dv'", "line 5", "truncated",
                     (const char *)NULL);
    /* cut in the middle of the data of x: x is the first tensor that runs past the end */
    expect_bad_bytes(__LINE__, "cut_x.cgraw", b, 200, "tensor 'x'", "line 2", "truncated",
                     (const char *)NULL);
    /* cut in the header, after the tensor lines but before "end" */
    const char *end = strstr((const char *)b, "\nend\n");
    CHECK(end != NULL);
    if (end)
        expect_bad_bytes(__LINE__, "cut_header.cgraw", b, (size_t)(end - (const char *)b) + 1,
                         "line 6", "before the 'end' line", "truncated", (const char *)NULL);
    /* cut in the middle of the first line, and an empty file */
    expect_bad_bytes(__LINE__, "cut_first.cgraw", b, 4, "line 1", "not a cgraw file",
                     (const char *)NULL);
    expect_bad_bytes(__LINE__, "empty.cgraw", b, 0, "line 1", "not a cgraw file",
                     (const char *)NULL);
    /* one byte too many */
    unsigned char *longer = malloc(n + 1);
    memcpy(longer, b, n);
    longer[n] = 0;
    expect_bad_bytes(__LINE__, "long.cgraw", longer, n + 1, "1 bytes after the last tensor",
                     (const char *)NULL);
    free(longer);
    free(b);
}

static void test_bad_headers(void)
{
    /* the first line */
    EXPECT_BAD("\x93NUMPY\n", 0, "line 1", "not a cgraw file");
    EXPECT_BAD("CGRAW2 1\nend\n", 0, "line 1", "not a cgraw file", "CGRAW2 1");
    EXPECT_BAD("CGRAW1 x\nend\n", 0, "line 1", "expected 'CGRAW1 <count>'");
    EXPECT_BAD("CGRAW1 -1\nend\n", 0, "line 1", "expected 'CGRAW1 <count>'");
    EXPECT_BAD("CGRAW1 99999999999999999999\nend\n", 0, "line 1");
    EXPECT_BAD("CGRAW1 100001\nend\n", 0, "line 1", "above the limit");
    EXPECT_BAD("CGRAW1 0\r\nend\n", 0, "line 1", "carriage return");
    /* tensor lines: fields */
    EXPECT_BAD("CGRAW1 1\nx F31 1 2 0 8\nend\n", 8, "line 2", "tensor 'x'", "unknown dtype 'F31'");
    EXPECT_BAD("CGRAW1 1\nx  F32 1 2 0 8\nend\n", 8, "line 2", "empty field");
    EXPECT_BAD("CGRAW1 1\nx F32 1 2 0 8 \nend\n", 8, "line 2", "empty field");
    EXPECT_BAD("CGRAW1 1\nx F32 1\nend\n", 0, "line 2", "found 3 fields");
    EXPECT_BAD("CGRAW1 1\nx F32 9 1 1 1 1 1 1 1 1 1 0 4\nend\n", 4, "line 2", "more than 13");
    EXPECT_BAD("CGRAW1 1\nx F32 two 2 0 8\nend\n", 8, "line 2", "tensor 'x'", "ndim 'two'");
    EXPECT_BAD("CGRAW1 1\nx F32 2 2 0 8\nend\n", 8, "line 2", "ndim 2 needs 7 fields, found 6");
    EXPECT_BAD("CGRAW1 1\nx F32 1 2 0 8 9\nend\n", 8, "line 2", "ndim 1 needs 6 fields, found 7");
    EXPECT_BAD("CGRAW1 1\nx F32 1 -2 0 8\nend\n", 8, "line 2", "dimension 0 '-2'");
    EXPECT_BAD("CGRAW1 1\nx F32 1 02 0 8\nend\n", 8, "line 2", "dimension 0 '02'");
    EXPECT_BAD("CGRAW1 1\nx F32 1 99999999999999999999 0 8\nend\n", 8, "line 2", "dimension 0");
    EXPECT_BAD("CGRAW1 1\nx F32 2 4294967296 4294967296 0 8\nend\n", 8, "line 2",
               "shape too large");
    EXPECT_BAD("CGRAW1 1\nx F32 1 2 zero 8\nend\n", 8, "line 2", "byte_offset 'zero'");
    EXPECT_BAD("CGRAW1 1\nx F32 1 2 0 8.0\nend\n", 8, "line 2", "byte_length '8.0'");
    EXPECT_BAD("CGRAW1 1\nx\0y F32 1 2 0 8\nend\n", 8, "line 2", "NUL");
    /* tensor lines: sizes, tiling, names */
    EXPECT_BAD("CGRAW1 1\nx F32 2 2 3 0 20\nend\n", 20, "line 2", "tensor 'x'", "24 bytes",
               "byte_length says 20");
    EXPECT_BAD("CGRAW1 1\nx F32 1 2 4 8\nend\n", 12, "line 2", "byte_offset 4, expected 0");
    EXPECT_BAD("CGRAW1 2\nx F32 1 2 0 8\ny F32 1 1 12 4\nend\n", 16, "line 3", "tensor 'y'",
               "byte_offset 12, expected 8");
    EXPECT_BAD("CGRAW1 2\nx F32 1 1 0 4\nx F32 1 1 4 4\nend\n", 8, "line 3",
               "tensor 'x' already listed on line 2");
    EXPECT_BAD("CGRAW1 2\nx F32 1 1 0 4\nend\n", 4, "line 3", "expected tensor line 2 of the 2",
               "'end'");
    EXPECT_BAD("CGRAW1 1\nmeta a b\nx F32 1 1 0 4\nend\n", 4, "line 2",
               "expected tensor line 1 of the 1");
    /* after the tensor lines */
    EXPECT_BAD("CGRAW1 1\nx F32 1 1 0 4\ny F32 1 1 4 4\nend\n", 8, "line 3",
               "expected a meta line or 'end'", "'y F32 1 1 4 4'");
    EXPECT_BAD("CGRAW1 0\nmeta key\nend\n", 0, "line 2", "meta line needs 'meta <key> <value>'");
    EXPECT_BAD("CGRAW1 0\nmeta  value\nend\n", 0, "line 2", "meta line needs");
    EXPECT_BAD("CGRAW1 0\nmeta a 1\nmeta a 2\nend\n", 0, "line 3", "meta key 'a' appears twice");
    EXPECT_BAD("CGRAW1 0\nEND\n", 0, "line 2", "expected a meta line or 'end'");
    EXPECT_BAD("CGRAW1 0\nend \n", 0, "line 2", "expected a meta line or 'end'");
    /* the data block */
    EXPECT_BAD("CGRAW1 1\nx F32 1 2 0 8\nend\n", 7, "tensor 'x' (line 2)",
               "needs data bytes [0, 8)", "has only 7", "truncated");
    EXPECT_BAD("CGRAW1 1\nx F32 1 1 0 4\nend\n", 5, "1 bytes after the last tensor");
    EXPECT_BAD("CGRAW1 0\nend\n", 3, "3 bytes after the last tensor");
    /* not a file */
    char err[512] = "";
    const char *missing = test_tmp_path("missing.cgraw");
    CHECK(cgraw_open(missing, err, sizeof err) == NULL);
    CHECK_MSG(contains(err, missing) && contains(err, "cannot open"), "%s", err);
    CHECK(cgraw_open(test_tmpdir, err, sizeof err) == NULL); /* a directory */
    CHECK_MSG(contains(err, test_tmpdir), "%s", err);
}

int main(void)
{
    test_tmpdir_create();
    TEST_RUN(test_fixtures_match_safetensors);
    TEST_RUN(test_typed_accessors);
    TEST_RUN(test_corner_cases);
    TEST_RUN(test_truncated);
    TEST_RUN(test_bad_headers);
    test_tmpdir_remove();
    return test_summary("cgraw");
}
