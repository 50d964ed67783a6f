/*
 * test_safetensors.c: the safetensors reader and writer (common/safetensors.c).
 *
 * A round trip through the writer, alignment of the data handed out, the typed accessors, the
 * writer's own checks and atomic save, then one test per malformed input: each bad file is
 * built byte by byte in a temporary directory, and the test asserts that st_open fails AND that
 * its message names the problem (and the tensor, and the file). The same bytes also go through
 * st_open_mem, which must agree.
 */
#include "safetensors.h"
#include "test.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long sz = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, fp);
    fclose(fp);
    return b;
}

/* A file = 8-byte length (header_len, or the real length when header_len is UINT64_MAX) +
 * header + data. Returns the malloc'd bytes and their count. */
static unsigned char *make_raw(uint64_t header_len, const char *header, const void *data,
                               size_t data_len, size_t *n)
{
    size_t hl = strlen(header);
    uint64_t L = header_len == UINT64_MAX ? hl : header_len;
    *n = 8 + hl + data_len;
    unsigned char *b = malloc(*n + 1);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)(L >> (8 * i));
    memcpy(b + 8, header, hl);
    if (data_len)
        memcpy(b + 8 + hl, data, data_len);
    return b;
}

static int contains(const char *s, const char *needle) { return strstr(s, needle) != NULL; }

/* Writes the bytes to name, and asserts that both st_open and st_open_mem fail with messages
 * containing every phrase (NULL-terminated), and that the file's message names the file. */
static void expect_bad_bytes(int line, const char *name, const unsigned char *b, size_t n, ...)
{
    const char *path = test_tmp_path(name);
    write_bytes(path, b, n);
    char err[512] = "", merr[512] = "";
    StFile *f = (StFile *)1, *mf = (StFile *)1;
    int rc = st_open(path, &f, err, sizeof err);
    int mrc = st_open_mem(b, n, &mf, merr, sizeof merr);
    CHECK_MSG(rc == -1 && f == NULL, "line %d: st_open accepted %s", line, name);
    CHECK_MSG(mrc == -1 && mf == NULL, "line %d: st_open_mem accepted %s", line, name);
    if (rc == 0)
        st_close(f);
    if (mrc == 0)
        st_close(mf);
    CHECK_MSG(contains(err, path), "line %d: message does not name the file: %s", line, err);
    CHECK_MSG(contains(merr, "<memory>"), "line %d: %s", line, merr);
    va_list ap;
    va_start(ap, n);
    for (const char *ph; (ph = va_arg(ap, const char *));) {
        CHECK_MSG(contains(err, ph), "line %d: '%s' not in: %s", line, ph, err);
        CHECK_MSG(contains(merr, ph), "line %d: '%s' not in: %s", line, ph, merr);
    }
    va_end(ap);
}

#define EXPECT_BAD(name, header_len, header, data, data_len, ...)                           \
    do {                                                                                    \
        size_t n_;                                                                          \
        unsigned char *b_ = make_raw((header_len), (header), (data), (data_len), &n_);      \
        expect_bad_bytes(__LINE__, (name), b_, n_, __VA_ARGS__, (const char *)NULL);        \
        free(b_);                                                                           \
    } while (0)

#define AUTO UINT64_MAX

static const unsigned char zeros[256];

/* ---------------------------------------------------------------------------------------------
 * round trip, alignment, accessors
 */

static void test_round_trip(void)
{
    float a[6] = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    int32_t b[4] = {7, -1, INT32_MAX, INT32_MIN};
    uint8_t c[3] = {1, 2, 255};
    double d = 3.141592653589793;
    int64_t sa[2] = {2, 3}, sb[1] = {4}, sc[1] = {3}, se[2] = {0, 5};

    StWriter *w = st_writer_new();
    CHECK(w != NULL);
    CHECK(st_writer_add(w, "a.weight", ST_F32, 2, sa, a) == 0);
    CHECK(st_writer_add(w, "b", ST_I32, 1, sb, b) == 0);
    CHECK(st_writer_add(w, "c", ST_U8, 1, sc, c) == 0);
    CHECK(st_writer_add(w, "d", ST_F64, 0, NULL, &d) == 0);
    CHECK(st_writer_add(w, "empty", ST_F32, 2, se, NULL) == 0);
    CHECK(st_writer_meta(w, "format", "test/1") == 0);
    CHECK(st_writer_meta(w, "note", "quotes \" and\nnewlines, unicode \xc3\xa9") == 0);
    CHECK(st_writer_meta(w, "format", "test/2") == 0); /* replaces */
    const char *path = test_tmp_path("rt.safetensors");
    char err[256] = "";
    CHECK_MSG(st_writer_save(w, path, err, sizeof err) == 0, "%s", err);
    st_writer_free(w);

    /* layout: data starts on an 8-byte boundary, header padded with spaces, no .tmp left */
    size_t n = 0;
    unsigned char *raw = read_bytes(path, &n);
    CHECK(raw != NULL && n >= 8);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--)
        hl = (hl << 8) | raw[i];
    CHECK(hl % 8 == 0);
    CHECK(8 + hl + 24 + 16 + 3 + 8 == n);
    CHECK(raw[8] == '{');
    size_t last = 8 + hl - 1;
    while (raw[last] == ' ')
        last--;
    CHECK(raw[last] == '}');
    CHECK(access(test_tmp_path("rt.safetensors.tmp"), F_OK) != 0);

    StFile *f = NULL;
    CHECK_MSG(st_open(path, &f, err, sizeof err) == 0, "%s", err);
    if (!f) {
        free(raw);
        return;
    }
    CHECK(st_count(f) == 5);
    /* file order = data order = add order (the empty tensor sits at the end) */
    const char *order[5] = {"a.weight", "b", "c", "d", "empty"};
    for (int i = 0; i < 5 && i < st_count(f); i++)
        CHECK_MSG(strcmp(st_tensor(f, i)->name, order[i]) == 0, "%d: %s", i,
                  st_tensor(f, i)->name);
    CHECK(st_tensor(f, 5) == NULL);

    const StTensor *t = st_find(f, "a.weight");
    CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3);
    CHECK(t && t->numel == 6 && t->nbytes == 24 && t->begin == 0 && t->end == 24);
    CHECK(t && memcmp(st_data(f, t), a, sizeof a) == 0);
    t = st_find(f, "b");
    CHECK(t && t->dtype == ST_I32 && memcmp(st_data(f, t), b, sizeof b) == 0);
    t = st_find(f, "c");
    CHECK(t && t->dtype == ST_U8 && memcmp(st_data(f, t), c, sizeof c) == 0);
    t = st_find(f, "d");
    CHECK(t && t->dtype == ST_F64 && t->ndim == 0 && t->numel == 1);
    CHECK(t && memcmp(st_data(f, t), &d, sizeof d) == 0);
    t = st_find(f, "empty");
    CHECK(t && t->numel == 0 && t->nbytes == 0 && st_data(f, t) != NULL);
    for (int i = 0; i < st_count(f); i++) { /* aligned even when empty or at an odd offset */
        const StTensor *ti = st_tensor(f, i);
        CHECK_MSG((uintptr_t)st_data(f, ti) % st_dtype_size(ti->dtype) == 0, "%s", ti->name);
    }
    CHECK(st_find(f, "nope") == NULL);
    CHECK(st_find(f, "") == NULL);

    CHECK(st_meta_count(f) == 2);
    CHECK(st_meta(f, "format") && strcmp(st_meta(f, "format"), "test/2") == 0);
    CHECK(st_meta(f, "note") &&
          strcmp(st_meta(f, "note"), "quotes \" and\nnewlines, unicode \xc3\xa9") == 0);
    CHECK(st_meta(f, "missing") == NULL);
    const char *k, *v;
    st_meta_entry(f, 0, &k, &v);
    CHECK(strcmp(k, "format") == 0 && strcmp(v, "test/2") == 0);
    CHECK(strcmp(st_label(f), path) == 0);
    st_close(f);

    /* the same bytes from memory; the buffer may go away before the data is used */
    unsigned char *copy = malloc(n);
    memcpy(copy, raw, n);
    CHECK_MSG(st_open_mem(copy, n, &f, err, sizeof err) == 0, "%s", err);
    memset(copy, 0xAA, n);
    free(copy);
    if (f) {
        t = st_find(f, "b");
        CHECK(t && memcmp(st_data(f, t), b, sizeof b) == 0);
        st_close(f);
    }

    /* saving the same writer content twice gives identical bytes (deterministic header) */
    free(raw);
}

static void test_deterministic_bytes(void)
{
    float x[3] = {1, 2, 3};
    int64_t s[1] = {3};
    char err[256];
    size_t n1 = 0, n2 = 0;
    for (int r = 0; r < 2; r++) {
        StWriter *w = st_writer_new();
        st_writer_meta(w, "k", "v");
        st_writer_add(w, "x", ST_F32, 1, s, x);
        CHECK_MSG(st_writer_save(w, test_tmp_path(r ? "det2" : "det1"), err, sizeof err) == 0, "%s",
                  err);
        st_writer_free(w);
    }
    unsigned char *a = read_bytes(test_tmp_path("det1"), &n1), *b = read_bytes(test_tmp_path("det2"), &n2);
    CHECK(a && b && n1 == n2 && memcmp(a, b, n1) == 0);
    free(a);
    free(b);
}

static void test_empty_file_ok(void)
{
    /* no tensors, no metadata: "{}" padded to 8 */
    StWriter *w = st_writer_new();
    char err[256] = "";
    CHECK_MSG(st_writer_save(w, test_tmp_path("empty.st"), err, sizeof err) == 0, "%s", err);
    st_writer_free(w);
    StFile *f;
    CHECK_MSG(st_open(test_tmp_path("empty.st"), &f, err, sizeof err) == 0, "%s", err);
    if (f) {
        CHECK(st_count(f) == 0 && st_meta_count(f) == 0);
        st_close(f);
    }
    /* metadata-only header from another writer, unpadded */
    size_t n = 0;
    unsigned char *b = make_raw(AUTO, "{\"__metadata__\":{\"a\":\"b\"}}", NULL, 0, &n);
    CHECK_MSG(st_open_mem(b, n, &f, err, sizeof err) == 0, "%s", err);
    if (f) {
        CHECK(st_meta(f, "a") && strcmp(st_meta(f, "a"), "b") == 0);
        st_close(f);
    }
    free(b);
    /* "__metadata__": null is read as no metadata, as the reference implementation does */
    b = make_raw(AUTO, "{\"__metadata__\":null,\"x\":{\"dtype\":\"U8\",\"shape\":[2],"
                 "\"data_offsets\":[0,2]}}", "ab", 2, &n);
    CHECK_MSG(st_open_mem(b, n, &f, err, sizeof err) == 0, "%s", err);
    if (f) {
        CHECK(st_meta_count(f) == 0 && st_count(f) == 1);
        CHECK(memcmp(st_data(f, st_find(f, "x")), "ab", 2) == 0);
        st_close(f);
    }
    free(b);
}

static void test_alignment(void)
{
    /* U8[3] first puts the F32 at byte 3 and the F64 at byte 11 of the data buffer: a file the
     * format allows but where pointers into the buffer would be misaligned. */
    uint8_t u[3] = {9, 8, 7};
    float x[2] = {0.25f, -8.5f};
    double y[1] = {1e300};
    int16_t h[1] = {-3};
    int64_t s3[1] = {3}, s2[1] = {2}, s1[1] = {1};
    StWriter *w = st_writer_new();
    st_writer_add(w, "u", ST_U8, 1, s3, u);
    st_writer_add(w, "x", ST_F32, 1, s2, x);
    st_writer_add(w, "h", ST_I16, 1, s1, h);
    st_writer_add(w, "y", ST_F64, 1, s1, y);
    char err[256] = "";
    CHECK_MSG(st_writer_save(w, test_tmp_path("align"), err, sizeof err) == 0, "%s", err);
    st_writer_free(w);

    StFile *f;
    CHECK_MSG(st_open(test_tmp_path("align"), &f, err, sizeof err) == 0, "%s", err);
    if (!f)
        return;
    CHECK(st_find(f, "x")->begin == 3 && st_find(f, "y")->begin == 13);
    for (int i = 0; i < st_count(f); i++) {
        const StTensor *t = st_tensor(f, i);
        uintptr_t p = (uintptr_t)st_data(f, t);
        CHECK_MSG(p % st_dtype_size(t->dtype) == 0, "tensor %s misaligned", t->name);
    }
    const float *xf = st_get_f32(f, "x", 1, s2, err, sizeof err);
    CHECK(xf && ((uintptr_t)xf % _Alignof(float)) == 0 && xf[0] == 0.25f && xf[1] == -8.5f);
    const double *yd = st_data(f, st_find(f, "y"));
    CHECK(((uintptr_t)yd % _Alignof(double)) == 0 && yd[0] == 1e300);
    const int16_t *hp = st_data(f, st_find(f, "h"));
    CHECK(hp[0] == -3);
    st_close(f);

    /* the first tensor of an ordinary file sits on the 64-byte-aligned start of the buffer */
    float big[16] = {0};
    int64_t s16[1] = {16};
    w = st_writer_new();
    st_writer_add(w, "big", ST_F32, 1, s16, big);
    st_writer_save(w, test_tmp_path("align2"), err, sizeof err);
    st_writer_free(w);
    CHECK_MSG(st_open(test_tmp_path("align2"), &f, err, sizeof err) == 0, "%s", err);
    if (f) {
        CHECK((uintptr_t)st_data(f, st_find(f, "big")) % 64 == 0);
        st_close(f);
    }
}

static void test_typed_accessors(void)
{
    float x[6] = {0};
    int32_t ids[4] = {1, 2, 3, 4};
    int64_t s23[2] = {2, 3}, s32[2] = {3, 2}, s6[1] = {6}, s4[1] = {4};
    StWriter *w = st_writer_new();
    st_writer_add(w, "x", ST_F32, 2, s23, x);
    st_writer_add(w, "ids", ST_I32, 1, s4, ids);
    char err[256] = "";
    const char *path = test_tmp_path("typed");
    CHECK_MSG(st_writer_save(w, path, err, sizeof err) == 0, "%s", err);
    st_writer_free(w);
    StFile *f;
    CHECK_MSG(st_open(path, &f, err, sizeof err) == 0, "%s", err);
    if (!f)
        return;
    CHECK(st_get_f32(f, "x", 2, s23, err, sizeof err) != NULL);
    CHECK(st_get_f32(f, "x", -1, NULL, err, sizeof err) != NULL);
    const int32_t *ip = st_get_i32(f, "ids", 1, s4, err, sizeof err);
    CHECK(ip && ip[3] == 4);

    CHECK(st_get_f32(f, "x", 2, s32, err, sizeof err) == NULL);
    CHECK_MSG(contains(err, "tensor 'x' has shape [2, 3], expected [3, 2]") && contains(err, path),
              "%s", err);
    CHECK(st_get_f32(f, "x", 1, s6, err, sizeof err) == NULL);
    CHECK_MSG(contains(err, "expected [6]"), "%s", err);
    CHECK(st_get_f32(f, "ids", 1, s4, err, sizeof err) == NULL);
    CHECK_MSG(contains(err, "tensor 'ids' has dtype I32, expected F32"), "%s", err);
    CHECK(st_get_i32(f, "x", 2, s23, err, sizeof err) == NULL);
    CHECK_MSG(contains(err, "tensor 'x' has dtype F32, expected I32"), "%s", err);
    CHECK(st_get_f32(f, "nope", 1, s4, err, sizeof err) == NULL);
    CHECK_MSG(contains(err, "tensor 'nope' not found"), "%s", err);
    st_close(f);

    /* the one-shot helper */
    float *data = NULL;
    int ndim = -1;
    int64_t shape[ST_MAX_DIMS];
    CHECK_MSG(st_load_f32(path, "x", &data, &ndim, shape, err, sizeof err) == 0, "%s", err);
    CHECK(data && ndim == 2 && shape[0] == 2 && shape[1] == 3);
    free(data);
    CHECK(st_load_f32(path, "ids", &data, &ndim, shape, err, sizeof err) == -1 && !data);
    CHECK_MSG(contains(err, "'ids'") && contains(err, "I32"), "%s", err);
    CHECK(st_load_f32(test_tmp_path("nonexistent"), "x", &data, &ndim, shape, err, sizeof err) == -1);
    CHECK_MSG(contains(err, "cannot open"), "%s", err);
}

static void test_shape_format(void)
{
    char buf[64];
    int64_t s[3] = {1, 22, 333};
    st_format_shape(buf, sizeof buf, 3, s);
    CHECK(strcmp(buf, "[1, 22, 333]") == 0);
    st_format_shape(buf, sizeof buf, 0, s);
    CHECK(strcmp(buf, "[]") == 0);
    st_format_shape(buf, 5, 3, s);
    CHECK(strlen(buf) == 4);
    StDtype dt;
    CHECK(st_dtype_parse("BF16", &dt) == 0 && dt == ST_BF16 && st_dtype_size(dt) == 2);
    CHECK(st_dtype_parse("f32", &dt) == -1);
}

/* ---------------------------------------------------------------------------------------------
 * the writer's checks and atomic save
 */

static void test_writer_errors(void)
{
    float x[2] = {1, 2};
    int64_t s2[1] = {2}, neg[1] = {-1}, huge[3] = {INT64_MAX, INT64_MAX, 2};
    int64_t s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    char err[256];

    struct {
        const char *name;
        StDtype dt;
        int ndim;
        const int64_t *shape;
        const void *data;
        const char *phrase;
    } cases[] = {
        {"__metadata__", ST_F32, 1, s2, x, "reserved"},
        {"x", ST_F32, 1, s2, x, "added twice"},
        {"neg", ST_F32, 1, neg, x, "shape[0] is negative"},
        {"huge", ST_F32, 3, huge, x, "overflows"},
        {"rank", ST_F32, 9, s9, x, "rank 9"},
        {"dt", (StDtype)99, 1, s2, x, "bad dtype"},
        {"null", ST_F32, 1, s2, NULL, "data is NULL"},
        {"bad\xff", ST_F32, 1, s2, x, "UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        StWriter *w = st_writer_new();
        CHECK(st_writer_add(w, "x", ST_F32, 1, s2, x) == 0);
        CHECK_MSG(st_writer_add(w, cases[i].name, cases[i].dt, cases[i].ndim, cases[i].shape,
                                cases[i].data) == -1, "case %zu accepted", i);
        /* the error is sticky: a later good add does not clear it, and save reports it */
        st_writer_add(w, "later", ST_F32, 1, s2, x);
        const char *path = test_tmp_path("werr");
        CHECK(st_writer_save(w, path, err, sizeof err) == -1);
        CHECK_MSG(contains(err, cases[i].phrase) && contains(err, path), "case %zu: %s", i, err);
        CHECK(access(path, F_OK) != 0);
        st_writer_free(w);
    }
}

static void test_writer_atomic(void)
{
    float x[2] = {1, 2}, y[2] = {3, 4};
    int64_t s2[1] = {2};
    char err[256] = "";
    const char *path = test_tmp_path("atomic");

    StWriter *w = st_writer_new();
    st_writer_add(w, "x", ST_F32, 1, s2, x);
    CHECK(st_writer_save(w, path, err, sizeof err) == 0);
    st_writer_free(w);

    /* a save that fails (its temporary file cannot be created) leaves the old file alone */
    CHECK(mkdir(test_tmp_path("atomic.tmp"), 0755) == 0);
    w = st_writer_new();
    st_writer_add(w, "x", ST_F32, 1, s2, y);
    CHECK(st_writer_save(w, path, err, sizeof err) == -1);
    CHECK_MSG(contains(err, "atomic.tmp"), "%s", err);
    rmdir(test_tmp_path("atomic.tmp"));
    float *got = NULL;
    int nd;
    int64_t sh[ST_MAX_DIMS];
    CHECK(st_load_f32(path, "x", &got, &nd, sh, err, sizeof err) == 0 && got && got[0] == 1);
    free(got);

    /* a successful save replaces it */
    CHECK_MSG(st_writer_save(w, path, err, sizeof err) == 0, "%s", err);
    st_writer_free(w);
    CHECK(st_load_f32(path, "x", &got, &nd, sh, err, sizeof err) == 0 && got && got[0] == 3);
    free(got);
    CHECK(access(test_tmp_path("atomic.tmp"), F_OK) != 0);

    /* a directory that does not exist */
    w = st_writer_new();
    CHECK(st_writer_save(w, test_tmp_path("no/such/dir/file"), err, sizeof err) == -1);
    CHECK_MSG(contains(err, "no/such/dir/file") && contains(err, "cannot create"), "%s", err);
    st_writer_free(w);
}

/* ---------------------------------------------------------------------------------------------
 * malformed files
 */

static void test_bad_length_prefix(void)
{
    EXPECT_BAD("len_only", AUTO, "", NULL, 0, "not valid JSON"); /* a zero-length header */
    /* fewer than 8 bytes at all */
    const unsigned char five[5] = {1, 0, 0, 0, 0};
    expect_bad_bytes(__LINE__, "five", five, 5, "5 bytes", "too short for the 8-byte header length",
                     (const char *)NULL);
    expect_bad_bytes(__LINE__, "zero", five, 0, "0 bytes", "too short", (const char *)NULL);
    /* length larger than the file */
    EXPECT_BAD("past", 1000, "{}", NULL, 0, "header length 1000", "past the end of the file",
               "truncated");
    /* absurd length */
    EXPECT_BAD("absurd", (uint64_t)1 << 40, "{}", NULL, 0, "header length 1099511627776",
               "absurd");
    EXPECT_BAD("absurd2", UINT64_MAX - 1, "{}", NULL, 0, "absurd");
}

static void test_bad_json(void)
{
    EXPECT_BAD("syntax", AUTO, "{\"a\": {\"dtype\": \"F32\",\n \"shape\": [1,, 2]}}", NULL, 0,
               "not valid JSON", "line 2", "column");
    EXPECT_BAD("trunc_json", AUTO, "{\"a\": ", NULL, 0, "not valid JSON", "line 1");
    EXPECT_BAD("empty_json", AUTO, "", NULL, 0, "not valid JSON");
    EXPECT_BAD("array", AUTO, "[1, 2]", NULL, 0, "header is a JSON array, expected an object");
    EXPECT_BAD("scalar", AUTO, "\"x\"", NULL, 0, "not valid JSON"); /* no JSON_DECODE_ANY */
    EXPECT_BAD("trailing_garbage", AUTO, "{} x", NULL, 0, "not valid JSON");
    EXPECT_BAD("dup", AUTO,
               "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
               "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
               zeros, 2, "not valid JSON", "duplicate");
    EXPECT_BAD("dup_meta", AUTO, "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}", NULL, 0,
               "duplicate");
    const char nul_hdr[] = "{\"a\":1}";
    size_t n = 0;
    unsigned char *b = make_raw(AUTO, nul_hdr, NULL, 0, &n);
    b[10] = '\0'; /* a raw NUL inside the header */
    expect_bad_bytes(__LINE__, "nul", b, n, "not valid JSON", (const char *)NULL);
    free(b);
    EXPECT_BAD("bad_utf8", AUTO, "{\"\xff\":1}", NULL, 0, "not valid JSON");
}

static void test_bad_entry_fields(void)
{
    EXPECT_BAD("no_dtype", AUTO, "{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", zeros, 8,
               "tensor 'w': missing 'dtype'");
    EXPECT_BAD("no_shape", AUTO, "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", zeros, 8,
               "tensor 'w': missing 'shape'");
    EXPECT_BAD("no_offsets", AUTO, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2]}}", zeros, 8,
               "tensor 'w': missing 'data_offsets'");
    EXPECT_BAD("entry_type", AUTO, "{\"w\":\"F32\"}", NULL, 0,
               "tensor 'w': entry is a JSON string, expected an object");
    EXPECT_BAD("dtype_type", AUTO, "{\"w\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}",
               zeros, 8, "tensor 'w': 'dtype' is a JSON integer, expected a string");
    EXPECT_BAD("shape_type", AUTO,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":\"2\",\"data_offsets\":[0,8]}}", zeros, 8,
               "tensor 'w': 'shape' is a JSON string, expected an array");
    EXPECT_BAD("offsets_type", AUTO,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{\"a\":0}}}", zeros, 8,
               "tensor 'w': 'data_offsets' must be an array of 2 integers");
    EXPECT_BAD("offsets_len", AUTO,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,16]}}", zeros, 8,
               "tensor 'w': 'data_offsets' must be an array of 2 integers");
    EXPECT_BAD("offsets_real", AUTO,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.0]}}", zeros, 8,
               "tensor 'w': data_offsets[1] is a JSON real");
    EXPECT_BAD("offsets_neg", AUTO,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", zeros, 8,
               "tensor 'w': data_offsets[0] is negative (-8)");
    EXPECT_BAD("extra_key", AUTO,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"foo\":1}}",
               zeros, 8, "tensor 'w': unknown key 'foo'");
    EXPECT_BAD("unknown_dtype", AUTO,
               "{\"w\":{\"dtype\":\"F17\",\"shape\":[2],\"data_offsets\":[0,8]}}", zeros, 8,
               "tensor 'w': unknown dtype 'F17'");
    EXPECT_BAD("lower_dtype", AUTO,
               "{\"w\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", zeros, 8,
               "unknown dtype 'f32'");
}

static void test_bad_shapes(void)
{
    EXPECT_BAD("neg_dim", AUTO,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,8]}}", zeros, 8,
               "tensor 'w': shape[1] is negative (-1)");
    EXPECT_BAD("real_dim", AUTO,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", zeros, 8,
               "tensor 'w': shape[0] is a JSON real, expected a non-negative integer");
    EXPECT_BAD("str_dim", AUTO,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", zeros, 8,
               "tensor 'w': shape[0] is a JSON string");
    EXPECT_BAD("bool_dim", AUTO,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[true],\"data_offsets\":[0,8]}}", zeros, 8,
               "shape[0] is a JSON boolean");
    EXPECT_BAD("rank9", AUTO,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}",
               zeros, 8, "tensor 'w': shape has 9 dimensions");
    EXPECT_BAD("numel", AUTO,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", zeros, 20,
               "tensor 'w': shape [2, 3] of F32 needs 24 bytes but data_offsets [0, 20] span 20");
    EXPECT_BAD("numel_dtype", AUTO,
               "{\"w\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,8]}}", zeros, 8,
               "needs 16 bytes");
    /* 2^32 * 2^32 wraps to 0 in 64 bits, which would match an empty range if unchecked */
    EXPECT_BAD("overflow_numel", AUTO,
               "{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],"
               "\"data_offsets\":[0,0]}}", NULL, 0, "tensor 'w'", "overflows");
    /* 2^62 elements of 4 bytes wraps to 0 */
    EXPECT_BAD("overflow_bytes", AUTO,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
               "\"data_offsets\":[0,0]}}", NULL, 0, "tensor 'w'", "overflows");
    EXPECT_BAD("too_big_int", AUTO,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],"
               "\"data_offsets\":[0,0]}}", NULL, 0, "not valid JSON", "too big");
}

static void test_bad_ranges(void)
{
    EXPECT_BAD("begin_gt_end", AUTO,
               "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", zeros, 8,
               "tensor 'w': data_offsets [8, 4] begin after end");
    EXPECT_BAD("past_data", AUTO,
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"x\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", zeros, 20,
               "tensor 'x' data_offsets [8, 24] run past the end of the data (20 bytes); "
               "file truncated?");
    EXPECT_BAD("overlap", AUTO,
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", zeros, 16,
               "tensors 'a' [0, 16] and 'b' [8, 16] overlap");
    /* header order b, a: the overlap is found in data order */
    EXPECT_BAD("overlap2", AUTO,
               "{\"b\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[4,16]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", zeros, 16,
               "'a' [0, 8] and 'b' [4, 16] overlap");
    EXPECT_BAD("same_range", AUTO,
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", zeros, 8,
               "'a' [0, 8] and 'b' [0, 8] overlap");
    EXPECT_BAD("hole", AUTO,
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", zeros, 12,
               "hole of 4 bytes", "tensor 'b'");
    EXPECT_BAD("trailing", AUTO,
               "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", zeros, 10,
               "6 trailing bytes");
    EXPECT_BAD("data_no_tensors", AUTO, "{}", zeros, 3, "3 trailing bytes");
}

static void test_bad_metadata(void)
{
    EXPECT_BAD("meta_int", AUTO, "{\"__metadata__\":{\"format\":\"x\",\"step\":5}}", NULL, 0,
               "__metadata__ value for key 'step' is a JSON integer, expected a string");
    EXPECT_BAD("meta_null", AUTO, "{\"__metadata__\":{\"k\":null}}", NULL, 0,
               "key 'k' is a JSON null");
    EXPECT_BAD("meta_array", AUTO, "{\"__metadata__\":[\"a\"]}", NULL, 0,
               "__metadata__ is a JSON array, expected an object");
    EXPECT_BAD("meta_nested", AUTO, "{\"__metadata__\":{\"k\":{\"a\":\"b\"}}}", NULL, 0,
               "key 'k' is a JSON object");
}

static void test_not_a_file(void)
{
    char err[256] = "";
    StFile *f = (StFile *)1;
    CHECK(st_open(test_tmp_path("missing"), &f, err, sizeof err) == -1 && f == NULL);
    CHECK_MSG(contains(err, "missing") && contains(err, "cannot open") &&
              contains(err, "No such file"), "%s", err);
    CHECK(st_open(test_tmpdir, &f, err, sizeof err) == -1 && f == NULL);
    CHECK_MSG(contains(err, "not a regular file"), "%s", err);
    /* a tiny error buffer is still NUL-terminated; NULL with length 0 is allowed */
    char small[8];
    memset(small, 'x', sizeof small);
    CHECK(st_open(test_tmp_path("missing"), &f, small, sizeof small) == -1);
    CHECK(memchr(small, '\0', sizeof small) != NULL);
    CHECK(st_open(test_tmp_path("missing"), &f, NULL, 0) == -1);
    st_close(NULL);
}

/* Every prefix of a valid file must be rejected cleanly (a truncated download or a full disk). */
static void test_truncations(void)
{
    float x[4] = {1, 2, 3, 4};
    int64_t s[1] = {4};
    StWriter *w = st_writer_new();
    st_writer_meta(w, "k", "v");
    st_writer_add(w, "x", ST_F32, 1, s, x);
    st_writer_add(w, "y", ST_F32, 1, s, x);
    char err[256] = "";
    const char *path = test_tmp_path("full");
    CHECK(st_writer_save(w, path, err, sizeof err) == 0);
    st_writer_free(w);
    size_t n = 0;
    unsigned char *b = read_bytes(path, &n);
    int bad = 0;
    for (size_t len = 0; len < n; len++) {
        StFile *f = NULL;
        if (st_open_mem(b, len, &f, err, sizeof err) == 0) {
            bad++;
            st_close(f);
        } else if (len >= n - 32 && !contains(err, "file truncated?")) {
            bad++; /* cut inside the data: the message says so */
            fprintf(stderr, "  len %zu: %s\n", len, err);
        }
    }
    CHECK(bad == 0);
    /* and on disk, the message names the tensor that runs off the end */
    write_bytes(path, b, n - 5);
    CHECK(st_open(path, &(StFile *){NULL}, err, sizeof err) == -1);
    CHECK_MSG(contains(err, "tensor 'y' data_offsets [16, 32] run past the end of the data "
                            "(27 bytes); file truncated?"), "%s", err);
    free(b);
}

int main(void)
{
    test_tmpdir_create();
    TEST_RUN(test_round_trip);
    TEST_RUN(test_deterministic_bytes);
    TEST_RUN(test_empty_file_ok);
    TEST_RUN(test_alignment);
    TEST_RUN(test_typed_accessors);
    TEST_RUN(test_shape_format);
    TEST_RUN(test_writer_errors);
    TEST_RUN(test_writer_atomic);
    TEST_RUN(test_bad_length_prefix);
    TEST_RUN(test_bad_json);
    TEST_RUN(test_bad_entry_fields);
    TEST_RUN(test_bad_shapes);
    TEST_RUN(test_bad_ranges);
    TEST_RUN(test_bad_metadata);
    TEST_RUN(test_not_a_file);
    TEST_RUN(test_truncations);
    test_tmpdir_remove();
    return test_summary("safetensors");
}
