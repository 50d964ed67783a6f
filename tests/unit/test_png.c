/*
 * test_png.c: the PNG reader and writers (common/png.c): round trips, conversion of grey,
 * palette and RGBA files to RGB, the float-to-byte mapping, the grid layout, and the errors for
 * missing, foreign, truncated and corrupt files (each must name the file; ASan checks that the
 * setjmp error paths free everything).
 */
#include "png.h"
#include "test.h"

#include <libpng16/png.h> /* only to write grey/palette/RGBA inputs for the reader */
#include <stdint.h>
#include <sys/stat.h>

static uint8_t *random_rgb(int w, int h, unsigned seed)
{
    uint8_t *p = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++) {
        seed = seed * 1664525u + 1013904223u;
        p[i] = (uint8_t)(seed >> 24);
    }
    return p;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void test_round_trip(void)
{
    int sizes[][2] = {{1, 1}, {7, 5}, {16, 16}, {33, 2}};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        int w = sizes[k][0], h = sizes[k][1];
        uint8_t *src = random_rgb(w, h, 42u + (unsigned)k);
        const char *path = test_tmp_path("rt.png");
        char err[512] = "";
        CHECK_MSG(png_write_rgb(path, src, w, h, err, sizeof err) == 0, "%s", err);
        CHECK(!file_exists(test_tmp_path("rt.png.tmp")));
        uint8_t *got = NULL;
        int gw = 0, gh = 0;
        CHECK_MSG(png_read_rgb(path, &got, &gw, &gh, err, sizeof err) == 0, "%s", err);
        CHECK(gw == w && gh == h);
        CHECK(got && memcmp(got, src, (size_t)w * h * 3) == 0);
        free(got);
        free(src);
        unlink(path);
    }
}

/* The in-memory encoder's bytes are the PNG file the reader reads back. */
static void test_encode_in_memory(void)
{
    int w = 13, h = 6;
    uint8_t *src = random_rgb(w, h, 7), *png = NULL, *got = NULL;
    size_t len = 0;
    char err[512] = "";
    CHECK_MSG(png_encode_rgb(src, w, h, &png, &len, err, sizeof err) == 0, "%s", err);
    CHECK(png && len > 8 && memcmp(png, "\x89PNG\r\n\x1a\n", 8) == 0);
    const char *path = test_tmp_path("mem.png");
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(png, 1, len, f) == len);
    if (f) fclose(f);
    int gw = 0, gh = 0;
    CHECK_MSG(png_read_rgb(path, &got, &gw, &gh, err, sizeof err) == 0, "%s", err);
    CHECK(gw == w && gh == h && got && memcmp(got, src, (size_t)w * h * 3) == 0);
    free(png);
    CHECK(png_encode_rgb(src, 0, h, &png, &len, err, sizeof err) == -1 && !png && len == 0);
    CHECK(strstr(err, "0x6") != NULL);
    free(got), free(src);
    unlink(path);
}

static void test_overwrite_is_atomic(void)
{
    const char *path = test_tmp_path("ow.png");
    char err[512] = "";
    uint8_t *a = random_rgb(4, 4, 1), *b = random_rgb(9, 3, 2);
    CHECK(png_write_rgb(path, a, 4, 4, err, sizeof err) == 0);
    CHECK(png_write_rgb(path, b, 9, 3, err, sizeof err) == 0);
    uint8_t *got = NULL;
    int w, h;
    CHECK(png_read_rgb(path, &got, &w, &h, err, sizeof err) == 0);
    CHECK(w == 9 && h == 3 && got && memcmp(got, b, 81) == 0);
    free(got);
    /* a failed write leaves the old file alone */
    CHECK(png_write_rgb(path, a, 0, 4, err, sizeof err) == -1);
    CHECK(strstr(err, path) != NULL);
    CHECK(png_read_rgb(path, &got, &w, &h, err, sizeof err) == 0 && w == 9);
    free(got);
    free(a);
    free(b);
    unlink(path);
}

static void test_write_errors(void)
{
    char err[512] = "";
    uint8_t px[3] = {1, 2, 3};
    const char *path = test_tmp_path("no-such-dir/x.png");
    CHECK(png_write_rgb(path, px, 1, 1, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "no-such-dir/x.png") && strstr(err, "cannot create"), "%s", err);
    CHECK(png_write_rgb(test_tmp_path("big.png"), px, IMAGE_MAX_SIDE + 1, 1, err, sizeof err) ==
          -1);
    CHECK(strstr(err, "big.png") != NULL);
    CHECK(png_write_rgb(test_tmp_path("null.png"), NULL, 1, 1, err, sizeof err) == -1);
    CHECK(!file_exists(test_tmp_path("null.png")));
    /* err may be NULL when errlen is 0 */
    CHECK(png_write_rgb(path, px, 1, 1, NULL, 0) == -1);
}

/* Writes a file with libpng's simplified API in the given format. */
static int write_format(const char *path, uint32_t format, int w, int h, const void *pixels,
                        const void *colormap, int entries)
{
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    im.width = (png_uint_32)w;
    im.height = (png_uint_32)h;
    im.format = format;
    im.colormap_entries = (png_uint_32)entries;
    int ok = png_image_write_to_file(&im, path, 0, pixels, 0, colormap);
    png_image_free(&im);
    return ok ? 0 : -1;
}

static void test_read_converts_formats(void)
{
    char err[512] = "";
    uint8_t *got = NULL;
    int w, h;

    /* grey 8-bit: replicated into R, G and B */
    uint8_t grey[6] = {0, 50, 100, 150, 200, 255};
    const char *pg = test_tmp_path("grey.png");
    CHECK(write_format(pg, PNG_FORMAT_GRAY, 3, 2, grey, NULL, 0) == 0);
    CHECK_MSG(png_read_rgb(pg, &got, &w, &h, err, sizeof err) == 0, "%s", err);
    CHECK(w == 3 && h == 2);
    for (int i = 0; got && i < 6; i++)
        CHECK(got[3 * i] == grey[i] && got[3 * i + 1] == grey[i] && got[3 * i + 2] == grey[i]);
    free(got);
    unlink(pg);

    /* RGBA: the alpha channel is dropped, colours kept (fully opaque pixels: the simplified
     * writer stores colours as given) */
    uint8_t rgba[2 * 2 * 4] = {10, 20, 30, 255, 40, 50, 60, 255, 70, 80, 90, 255, 1, 2, 3, 255};
    const char *pa = test_tmp_path("rgba.png");
    CHECK(write_format(pa, PNG_FORMAT_RGBA, 2, 2, rgba, NULL, 0) == 0);
    CHECK_MSG(png_read_rgb(pa, &got, &w, &h, err, sizeof err) == 0, "%s", err);
    CHECK(w == 2 && h == 2);
    for (int i = 0; got && i < 4; i++)
        CHECK(got[3 * i] == rgba[4 * i] && got[3 * i + 1] == rgba[4 * i + 1] &&
              got[3 * i + 2] == rgba[4 * i + 2]);
    free(got);
    unlink(pa);

    /* palette: indices expanded through the colour map */
    uint8_t cmap[3 * 3] = {255, 0, 0, 0, 255, 0, 0, 0, 255};
    uint8_t idx[4] = {0, 1, 2, 1};
    const char *pp = test_tmp_path("pal.png");
    CHECK(write_format(pp, PNG_FORMAT_RGB_COLORMAP, 4, 1, idx, cmap, 3) == 0);
    CHECK_MSG(png_read_rgb(pp, &got, &w, &h, err, sizeof err) == 0, "%s", err);
    CHECK(w == 4 && h == 1);
    for (int i = 0; got && i < 4; i++) CHECK(memcmp(got + 3 * i, cmap + 3 * idx[i], 3) == 0);
    free(got);
    unlink(pp);
}

static void test_read_errors(void)
{
    char err[512] = "";
    uint8_t *got = (uint8_t *)1;
    int w = 7, h = 7;

    const char *missing = test_tmp_path("missing.png");
    CHECK(png_read_rgb(missing, &got, &w, &h, err, sizeof err) == -1);
    CHECK(got == NULL && w == 0 && h == 0);
    CHECK_MSG(strstr(err, "missing.png") && strstr(err, "cannot open"), "%s", err);

    const char *text = test_tmp_path("text.png");
    FILE *f = fopen(text, "wb");
    fputs("this is not a png file at all\n", f);
    fclose(f);
    CHECK(png_read_rgb(text, &got, &w, &h, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "text.png") && strstr(err, "not a PNG"), "%s", err);
    unlink(text);

    const char *empty = test_tmp_path("empty.png");
    f = fopen(empty, "wb");
    fclose(f);
    CHECK(png_read_rgb(empty, &got, &w, &h, err, sizeof err) == -1);
    CHECK_MSG(strstr(err, "empty.png") && strstr(err, "not a PNG"), "%s", err);
    unlink(empty);

    /* a valid file cut at several lengths: every cut is an error naming the file */
    int W = 24, H = 24;
    uint8_t *src = random_rgb(W, H, 9);
    const char *good = test_tmp_path("good.png");
    CHECK(png_write_rgb(good, src, W, H, err, sizeof err) == 0);
    long n = file_size(good);
    uint8_t *bytes = malloc((size_t)n);
    f = fopen(good, "rb");
    CHECK(fread(bytes, 1, (size_t)n, f) == (size_t)n);
    fclose(f);
    const char *cut = test_tmp_path("cut.png");
    long cuts[] = {8, 12, 20, 33, 40, n / 2, n - 13, n - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        f = fopen(cut, "wb");
        fwrite(bytes, 1, (size_t)cuts[k], f);
        fclose(f);
        got = (uint8_t *)1;
        err[0] = '\0';
        CHECK_MSG(png_read_rgb(cut, &got, &w, &h, err, sizeof err) == -1, "cut at %ld", cuts[k]);
        CHECK(got == NULL);
        CHECK_MSG(strstr(err, "cut.png") != NULL, "cut at %ld: '%s'", cuts[k], err);
    }
    CHECK(strstr(err, "truncated") != NULL);

    /* a flipped byte inside the image data: libpng's CRC check fails */
    bytes[n / 2] ^= 0x5a;
    const char *bad = test_tmp_path("crc.png");
    f = fopen(bad, "wb");
    fwrite(bytes, 1, (size_t)n, f);
    fclose(f);
    got = (uint8_t *)1;
    CHECK(png_read_rgb(bad, &got, &w, &h, err, sizeof err) == -1);
    CHECK(got == NULL);
    CHECK_MSG(strstr(err, "crc.png") && strstr(err, "bad PNG"), "%s", err);
    unlink(bad);
    unlink(cut);
    unlink(good);
    free(bytes);
    free(src);
}

static void test_image_to_rgb8(void)
{
    float img[2 * 2 * 3] = {-1.0f, 1.0f,  0.0f,   -3.0f, 2.0f,   0.5f,
                            NAN,   -0.5f, 0.999f, 1e30f, -1e30f, -0.996f};
    uint8_t rgb[12];
    image_to_rgb8(img, 2, 3, rgb);
    uint8_t want[12] = {0, 255, 128, 0, 255, 191, 0, 64, 255, 255, 0, 1};
    for (int i = 0; i < 12; i++)
        CHECK_MSG(rgb[i] == want[i], "i=%d got %d want %d", i, rgb[i], want[i]);

    float g[4] = {-1.0f, 0.0f, 1.0f, 0.25f};
    uint8_t rg[12];
    image_to_rgb8(g, 2, 1, rg);
    uint8_t wg[4] = {0, 128, 255, 159};
    for (int i = 0; i < 4; i++)
        CHECK(rg[3 * i] == wg[i] && rg[3 * i + 1] == wg[i] && rg[3 * i + 2] == wg[i]);
}

/* n tiles of constant colour k -> values chosen so each tile has distinct bytes */
static float *const_tiles(int n, int S, int C)
{
    float *imgs = malloc((size_t)n * S * S * C * sizeof *imgs);
    for (int k = 0; k < n; k++)
        for (int i = 0; i < S * S; i++)
            for (int c = 0; c < C; c++)
                imgs[((size_t)k * S * S + i) * C + c] = -1.0f + 0.1f * (float)(k + 1) + 0.01f * c;
    return imgs;
}

static void test_grid_layout(void)
{
    int n = 5, S = 3, C = 3, pad = 1;
    float *imgs = const_tiles(n, S, C);
    char err[512] = "";
    const char *path = test_tmp_path("grid.png");
    CHECK_MSG(png_write_grid(path, imgs, n, S, C, 3, pad, err, sizeof err) == 0, "%s", err);
    uint8_t *got = NULL;
    int w, h;
    CHECK(png_read_rgb(path, &got, &w, &h, err, sizeof err) == 0);
    CHECK(w == 3 * S + 4 * pad && h == 2 * S + 3 * pad);
    uint8_t tile[3 * 3 * 3];
    for (int y = 0; got && y < h; y++) {
        for (int x = 0; x < w; x++) {
            const uint8_t *p = got + ((size_t)y * w + x) * 3;
            int cx = (x - pad) / (S + pad), ox = (x - pad) % (S + pad);
            int cy = (y - pad) / (S + pad), oy = (y - pad) % (S + pad);
            int inside = x >= pad && y >= pad && ox < S && oy < S;
            int k = cy * 3 + cx;
            if (inside && k < n) {
                image_to_rgb8(imgs + (size_t)k * S * S * C, S, C, tile);
                CHECK_MSG(memcmp(p, tile + ((size_t)oy * S + ox) * 3, 3) == 0, "x=%d y=%d", x, y);
            } else {
                CHECK_MSG(p[0] == 255 && p[1] == 255 && p[2] == 255, "pad at x=%d y=%d", x, y);
            }
        }
    }
    free(got);

    /* cols <= 0: ceil(sqrt(5)) = 3 columns; cols > n: n columns; pad 0 */
    CHECK(png_write_grid(path, imgs, n, S, C, 0, 0, err, sizeof err) == 0);
    CHECK(png_read_rgb(path, &got, &w, &h, err, sizeof err) == 0 && w == 9 && h == 6);
    free(got);
    CHECK(png_write_grid(path, imgs, n, S, C, 99, 2, err, sizeof err) == 0);
    CHECK(png_read_rgb(path, &got, &w, &h, err, sizeof err) == 0);
    CHECK(w == 5 * S + 6 * 2 && h == S + 2 * 2);
    free(got);
    CHECK(png_write_grid(path, imgs, 4, S, C, 0, 0, err, sizeof err) == 0);
    CHECK(png_read_rgb(path, &got, &w, &h, err, sizeof err) == 0 && w == 6 && h == 6);
    free(got);

    /* bad arguments name the file */
    CHECK(png_write_grid(path, imgs, 0, S, C, 1, 0, err, sizeof err) == -1);
    CHECK(strstr(err, "grid.png") != NULL);
    CHECK(png_write_grid(path, imgs, n, S, 2, 1, 0, err, sizeof err) == -1);
    CHECK(png_write_grid(path, imgs, n, S, C, 1, -1, err, sizeof err) == -1);
    CHECK(png_write_grid(path, imgs, n, 10000, C, 5, 0, err, sizeof err) == -1);
    CHECK(strstr(err, "larger than") != NULL);
    unlink(path);
    free(imgs);
}

int main(void)
{
    test_tmpdir_create();
    TEST_RUN(test_round_trip);
    TEST_RUN(test_encode_in_memory);
    TEST_RUN(test_overwrite_is_atomic);
    TEST_RUN(test_write_errors);
    TEST_RUN(test_read_converts_formats);
    TEST_RUN(test_read_errors);
    TEST_RUN(test_image_to_rgb8);
    TEST_RUN(test_grid_layout);
    test_tmpdir_remove();
    return test_summary("png");
}
