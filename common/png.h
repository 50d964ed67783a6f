/*
 * png.h: PNG files through libpng: an atomic RGB writer, a forgiving reader that always hands
 * back 8-bit RGB, the float-image to RGB conversion, and a grid (contact sheet) writer.
 *
 * Images in memory are row-major, 3 bytes per pixel (R, G, B), no row padding: pixel (y, x)
 * channel c is rgb[(y * w + x) * 3 + c].
 *
 * Writers produce 8-bit RGB, non-interlaced PNGs. They write `<path>.tmp`, fsync it and rename it
 * over `<path>`: a crash leaves the old file or the new one, never half of one; on failure the
 * temporary file is removed and `path` is untouched.
 *
 * Every error is one message, starting with the path, written into err (err may be NULL when
 * errlen is 0). libpng's own errors are caught with setjmp inside these functions: nothing leaks
 * and nothing is printed; libpng's warnings are ignored.
 *
 * common/ knows nothing of the model; the float layout [S, S, C] with values in [-1, 1] is the
 * one model.md uses for images. All functions are reentrant (no global state) and may be called
 * from several threads at once on different files.
 */
#ifndef CHUNKGRPO_PNG_H
#define CHUNKGRPO_PNG_H

#include <stddef.h>
#include <stdint.h>

/* The largest side accepted by the reader and the writers (guards w*h*3 against overflow and
 * a hostile header against a huge allocation). */
#define IMAGE_MAX_SIDE 16384

/*
 * Writes the w x h RGB image `rgb` (w*h*3 bytes, borrowed, read during the call only) to path.
 * Returns 0, or -1 with a message naming the path (bad size, cannot create, libpng error,
 * write/fsync/rename failure).
 */
int png_write_rgb(const char *path, const uint8_t *rgb, int w, int h, char *err, size_t errlen);

/*
 * Encodes the w x h RGB image `rgb` as a PNG file's bytes in memory, for sending over the network.
 * Returns 0 with *out (malloc'd, *len bytes, OWNED BY THE CALLER, free() it), or -1 with *out =
 * NULL and a message.
 */
int png_encode_rgb(const uint8_t *rgb, int w, int h, uint8_t **out, size_t *len, char *err,
                   size_t errlen);

/*
 * Reads the PNG at path and converts it to 8-bit RGB: palette and grayscale (any bit depth) are
 * expanded, 16-bit channels are reduced to 8 bits, an alpha channel (or tRNS chunk) is dropped
 * (not composited), interlaced files are de-interlaced.
 * Returns 0 with *rgb (malloc'd, w*h*3 bytes, OWNED BY THE CALLER, free() it), *w and *h set;
 * or -1 with *rgb = NULL and a message naming the path (missing file, not a PNG, truncated,
 * corrupt data, too large).
 */
int png_read_rgb(const char *path, uint8_t **rgb, int *w, int *h, char *err, size_t errlen);

/*
 * Converts one image img [S, S, C] with values in [-1, 1] to rgb [S, S, 3]:
 * byte = round((v + 1) * 127.5), clamped to 0..255 (NaN gives 0). C == 1 is replicated to grey;
 * C >= 3 uses the first three channels. Both buffers are the caller's.
 */
void image_to_rgb8(const float *img, int S, int C, uint8_t *rgb);

/*
 * Writes n images imgs [n, S, S, C] (values in [-1, 1], borrowed) as one grid image:
 * `cols` columns (cols <= 0 picks ceil(sqrt(n)); cols > n is reduced to n), rows = ceil(n/cols),
 * image k at row k / cols, column k % cols, with `pad` pixels (>= 0) of white around and between
 * the tiles; empty cells in the last row are white. The file is
 *   width  = cols * S + (cols + 1) * pad,  height = rows * S + (rows + 1) * pad.
 * Returns 0, or -1 with a message naming the path (n < 1, S < 1, C not 1 or >= 3, pad < 0, too
 * large, no memory, or any png_write_rgb failure).
 */
int png_write_grid(const char *path, const float *imgs, int n, int S, int C, int cols, int pad,
                   char *err, size_t errlen);

#endif
