/*
 * png.c: PNG reading and writing through libpng (see png.h for the contract).
 *
 * libpng reports errors by calling an error function that must not return; ours copies the
 * message into a per-call PngErr and longjmps back to the setjmp in the calling function, which
 * frees everything and formats one message naming the file. Locals that change after setjmp and
 * are read after the longjmp are volatile, as C11 7.13.2.1 requires.
 *
 * libpng's header is included by its versioned path: this file's own header is also called
 * png.h, and the build puts common/ on the include path ahead of the system directories.
 */
#include "png.h"

#include <errno.h>
#include <fcntl.h>
#include <libpng16/png.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <stdarg.h>

typedef struct {
    char msg[256]; /* libpng's last error message */
} PngErr;

__attribute__((format(printf, 3, 4))) static void errbuf_printf(char *err, size_t errlen,
                                                                const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void pngio_error(png_structp png, png_const_charp msg)
{
    PngErr *e = png_get_error_ptr(png);
    snprintf(e->msg, sizeof e->msg, "%s", msg ? msg : "unknown libpng error");
    png_longjmp(png, 1);
}

/* Warnings (an unknown ancillary chunk, a bad sRGB profile) never stop a read; stay quiet. */
static void pngio_warning(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

/* Our own I/O callbacks, so that a short read is reported as truncation and a failed write
 * carries errno's text (libpng's defaults say only "Read Error" / "Write Error"). */
static void pngio_read(png_structp png, png_bytep data, size_t len)
{
    FILE *fp = png_get_io_ptr(png);
    if (fread(data, 1, len, fp) != len)
        png_error(png, ferror(fp) ? "read failed" : "file is truncated");
}

static void pngio_write(png_structp png, png_bytep data, size_t len)
{
    FILE *fp = png_get_io_ptr(png);
    if (fwrite(data, 1, len, fp) != len) {
        char m[160];
        snprintf(m, sizeof m, "write failed: %s", strerror(errno));
        png_error(png, m); /* copied by pngio_error before the longjmp */
    }
}

static void pngio_flush(png_structp png)
{
    FILE *fp = png_get_io_ptr(png);
    (void)fflush(fp);
}

/* Makes the rename durable. Best effort: the new file is complete and in place by now. */
static void pngio_fsync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) {
        snprintf(dir, sizeof dir, ".");
    } else if (slash == path) {
        snprintf(dir, sizeof dir, "/");
    } else {
        if ((size_t)(slash - path) >= sizeof dir) return;
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/*
 * Encodes rgb into the already-open fp. Returns 0, or -1 with pe->msg set. Kept apart from the
 * file handling so that the setjmp frame holds no state the caller must clean up after a longjmp
 * except the libpng structs.
 */
static int pngio_encode(FILE *fp, const uint8_t *rgb, int w, int h, PngErr *pe)
{
    png_structp png =
        png_create_write_struct(PNG_LIBPNG_VER_STRING, pe, pngio_error, pngio_warning);
    if (!png) {
        snprintf(pe->msg, sizeof pe->msg, "out of memory");
        return -1;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_write_struct(&png, NULL);
        snprintf(pe->msg, sizeof pe->msg, "out of memory");
        return -1;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_set_write_fn(png, fp, pngio_write, pngio_flush);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < h; y++) png_write_row(png, rgb + (size_t)y * (size_t)w * 3);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int png_write_rgb(const char *path, const uint8_t *rgb, int w, int h, char *err, size_t errlen)
{
    if (w < 1 || h < 1 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE) {
        errbuf_printf(err, errlen, "%s: cannot write a %dx%d image (sides must be 1..%d)", path, w,
                      h, IMAGE_MAX_SIDE);
        return -1;
    }
    if (!rgb) {
        errbuf_printf(err, errlen, "%s: no pixel data", path);
        return -1;
    }
    size_t tlen = strlen(path) + 5;
    char *tmp = malloc(tlen);
    if (!tmp) {
        errbuf_printf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    snprintf(tmp, tlen, "%s.tmp", path);
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        errbuf_printf(err, errlen, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    PngErr pe = {{0}};
    int rc = pngio_encode(fp, rgb, w, h, &pe);
    if (rc != 0) {
        errbuf_printf(err, errlen, "%s: writing %s failed: %s", path, tmp, pe.msg);
        fclose(fp);
        unlink(tmp);
        free(tmp);
        return -1;
    }
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        errbuf_printf(err, errlen, "%s: writing %s failed: %s", path, tmp, strerror(errno));
        fclose(fp);
        unlink(tmp);
        free(tmp);
        return -1;
    }
    if (fclose(fp) != 0) {
        errbuf_printf(err, errlen, "%s: closing %s failed: %s", path, tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        errbuf_printf(err, errlen, "%s: renaming %s into place failed: %s", path, tmp,
                      strerror(errno));
        unlink(tmp);
        free(tmp);
        return -1;
    }
    pngio_fsync_dir(path);
    free(tmp);
    return 0;
}

int png_encode_rgb(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *len, char *err,
                   size_t errlen)
{
    *out = NULL, *len = 0;
    if (w < 1 || h < 1 || w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || !rgb) {
        errbuf_printf(err, errlen, "cannot encode a %dx%d image (sides must be 1..%d)", w, h,
                      IMAGE_MAX_SIDE);
        return -1;
    }
    char *buf = NULL;
    size_t size = 0;
    FILE *fp = open_memstream(&buf, &size); /* the encoder writes to a FILE: give it memory */
    if (!fp) {
        errbuf_printf(err, errlen, "cannot encode a PNG: %s", strerror(errno));
        return -1;
    }
    PngErr pe = {{0}};
    int rc = pngio_encode(fp, rgb, w, h, &pe);
    if (fclose(fp) != 0 && rc == 0) {
        snprintf(pe.msg, sizeof pe.msg, "%s", strerror(errno));
        rc = -1;
    }
    if (rc != 0) {
        errbuf_printf(err, errlen, "cannot encode a PNG: %s", pe.msg);
        free(buf);
        return -1;
    }
    *out = (uint8_t *)buf, *len = size;
    return 0;
}

/*
 * Decodes the PNG whose 8 signature bytes have already been read from fp. Returns 0 with *out
 * (malloc'd, owned by the caller) and the size, or -1 with pe->msg set and nothing allocated.
 */
static int pngio_decode(FILE *fp, uint8_t **out, int *w, int *h, PngErr *pe)
{
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, pe, pngio_error, pngio_warning);
    if (!png) {
        snprintf(pe->msg, sizeof pe->msg, "out of memory");
        return -1;
    }
    png_infop info = png_create_info_struct(png);
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        snprintf(pe->msg, sizeof pe->msg, "out of memory");
        return -1;
    }
    uint8_t *volatile buf = NULL;
    png_bytep *volatile rows = NULL;
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(buf);
        free(rows);
        return -1;
    }
    png_set_read_fn(png, fp, pngio_read);
    png_set_sig_bytes(png, 8);
    png_set_user_limits(png, IMAGE_MAX_SIDE, IMAGE_MAX_SIDE);
    png_read_info(png, info);

    png_uint_32 pw, ph;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &pw, &ph, &depth, &ctype, &interlace, NULL, NULL);
    /* Every input becomes 8-bit RGB. tRNS is ignored (never turned into alpha), real alpha is
     * stripped: the callers (rewards, tests) look at colours, not coverage. */
    if (ctype == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16) png_set_strip_16(png);
    if (ctype & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(png);
    (void)png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8 ||
        png_get_rowbytes(png, info) != (size_t)pw * 3)
        png_error(png, "unsupported pixel layout after conversion to 8-bit RGB");

    buf = malloc((size_t)pw * ph * 3);
    rows = malloc((size_t)ph * sizeof *rows);
    if (!buf || !rows) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < ph; y++) rows[y] = buf + (size_t)y * pw * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    *out = buf;
    *w = (int)pw;
    *h = (int)ph;
    return 0;
}

int png_read_rgb(const char *path, uint8_t **rgb, int *w, int *h, char *err, size_t errlen)
{
    *rgb = NULL;
    *w = *h = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        errbuf_printf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    uint8_t sig[8];
    size_t got = fread(sig, 1, sizeof sig, fp);
    if (got < sizeof sig || png_sig_cmp(sig, 0, sizeof sig) != 0) {
        if (ferror(fp))
            errbuf_printf(err, errlen, "%s: read failed: %s", path, strerror(errno));
        else
            errbuf_printf(err, errlen, "%s: not a PNG file (no PNG signature)", path);
        fclose(fp);
        return -1;
    }
    PngErr pe = {{0}};
    int rc = pngio_decode(fp, rgb, w, h, &pe);
    fclose(fp);
    if (rc != 0) {
        errbuf_printf(err, errlen, "%s: bad PNG: %s", path, pe.msg);
        return -1;
    }
    return 0;
}

static uint8_t pngio_to_byte(float v)
{
    float t = (v + 1.0f) * 127.5f;
    if (!(t > 0.0f)) return 0; /* also NaN */
    if (t >= 255.0f) return 255;
    return (uint8_t)(t + 0.5f);
}

/* image_to_rgb8 into a destination whose rows are `stride` bytes apart. */
static void pngio_tile(const float *img, int S, int C, uint8_t *dst, size_t stride)
{
    for (int y = 0; y < S; y++) {
        uint8_t *row = dst + (size_t)y * stride;
        const float *src = img + (size_t)y * S * C;
        for (int x = 0; x < S; x++) {
            const float *p = src + (size_t)x * C;
            if (C >= 3) {
                row[3 * x + 0] = pngio_to_byte(p[0]);
                row[3 * x + 1] = pngio_to_byte(p[1]);
                row[3 * x + 2] = pngio_to_byte(p[2]);
            } else {
                uint8_t g = pngio_to_byte(p[0]);
                row[3 * x + 0] = row[3 * x + 1] = row[3 * x + 2] = g;
            }
        }
    }
}

void image_to_rgb8(const float *img, int S, int C, uint8_t *rgb)
{
    pngio_tile(img, S, C, rgb, (size_t)S * 3);
}

int png_write_grid(const char *path, const float *imgs, int n, int S, int C, int cols, int pad,
                   char *err, size_t errlen)
{
    if (n < 1 || S < 1 || pad < 0 || !(C == 1 || C >= 3) || !imgs) {
        errbuf_printf(err, errlen, "%s: bad grid (n=%d, S=%d, C=%d, pad=%d)", path, n, S, C, pad);
        return -1;
    }
    if (cols <= 0) {
        cols = (int)ceil(sqrt((double)n));
        while ((long long)cols * cols < n) cols++; /* guard the floating-point ceiling */
    }
    if (cols > n) cols = n;
    int rows = (n + cols - 1) / cols;
    long long W = (long long)cols * S + (long long)(cols + 1) * pad;
    long long H = (long long)rows * S + (long long)(rows + 1) * pad;
    if (W > IMAGE_MAX_SIDE || H > IMAGE_MAX_SIDE) {
        errbuf_printf(err, errlen, "%s: grid of %lldx%lld pixels is larger than %d per side", path,
                      W, H, IMAGE_MAX_SIDE);
        return -1;
    }
    size_t stride = (size_t)W * 3;
    uint8_t *canvas = malloc(stride * (size_t)H);
    if (!canvas) {
        errbuf_printf(err, errlen, "%s: out of memory for a %lldx%lld grid", path, W, H);
        return -1;
    }
    memset(canvas, 255, stride * (size_t)H);
    for (int k = 0; k < n; k++) {
        size_t x0 = (size_t)pad + (size_t)(k % cols) * (size_t)(S + pad);
        size_t y0 = (size_t)pad + (size_t)(k / cols) * (size_t)(S + pad);
        pngio_tile(imgs + (size_t)k * S * S * C, S, C, canvas + y0 * stride + x0 * 3, stride);
    }
    int rc = png_write_rgb(path, canvas, (int)W, (int)H, err, errlen);
    free(canvas);
    return rc;
}
