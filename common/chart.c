/*
 * chart.c: see chart.h.
 */
#include "chart.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "png.h"

typedef struct {
    uint8_t *rgb;
    int w, h;
} Canvas;

static void plot(Canvas *c, int x, int y, const uint8_t col[3])
{
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    uint8_t *p = c->rgb + ((size_t)y * c->w + x) * 3;
    p[0] = col[0], p[1] = col[1], p[2] = col[2];
}

static void line(Canvas *c, int x0, int y0, int x1, int y1, const uint8_t col[3], int dash)
{
    int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int e = dx + dy, k = 0;
    for (;;) {
        if (!dash || (k++ / 4) % 2 == 0) plot(c, x0, y0, col);
        if (x0 == x1 && y0 == y1) break;
        int e2 = 2 * e;
        if (e2 >= dy) e += dy, x0 += sx;
        if (e2 <= dx) e += dx, y0 += sy;
    }
}

int chart_png(const char *path, int w, int h, const float *y, const float *lo, const float *hi,
              int n, const int *boundaries, int nb, char *err, size_t errlen)
{
    static const uint8_t axis[3] = {60, 60, 60}, curve[3] = {20, 60, 200},
                         band[3] = {200, 215, 240}, cut[3] = {210, 40, 40};
    if (n < 1 || w < 64 || h < 64) {
        snprintf(err, errlen, "%s: nothing to chart", path);
        return -1;
    }
    Canvas c = {.rgb = malloc((size_t)w * h * 3), .w = w, .h = h};
    if (!c.rgb) {
        snprintf(err, errlen, "%s: out of memory", path);
        return -1;
    }
    for (size_t i = 0; i < (size_t)w * h * 3; i++) c.rgb[i] = 255;
    float top = 0;
    for (int i = 0; i < n; i++) top = fmaxf(top, fmaxf(y[i], hi ? hi[i] : y[i]));
    top = top > 0 ? top * 1.1f : 1;
    int left = 30, right = w - 15, bottom = h - 25, upper = 15;
#define PX(i) (left + (int)lroundf((right - left) * ((i) + 0.5f) / n))
#define PY(v) (bottom - (int)lroundf((bottom - upper) * fminf(fmaxf((v) / top, 0), 1)))
    if (lo && hi) /* the band, linearly interpolated between the points */
        for (int i = 0; i < n; i++) {
            int j = i + 1 < n ? i + 1 : i;
            for (int x = PX(i); x <= PX(j); x++) {
                float t = j > i ? (float)(x - PX(i)) / (PX(j) - PX(i)) : 0;
                float a = lo[i] + t * (lo[j] - lo[i]), b = hi[i] + t * (hi[j] - hi[i]);
                for (int yy = PY(b); yy <= PY(a); yy++) plot(&c, x, yy, band);
            }
        }
    for (int k = 0; k < nb; k++) {
        int x = (PX(boundaries[k] - 1) + PX(boundaries[k])) / 2;
        line(&c, x, upper, x, bottom, cut, 1);
    }
    line(&c, left, bottom, right, bottom, axis, 0);
    line(&c, left, upper, left, bottom, axis, 0);
    for (int i = 0; i < n; i++) line(&c, PX(i), bottom, PX(i), bottom + 4, axis, 0);
    for (int i = 0; i + 1 < n; i++) line(&c, PX(i), PY(y[i]), PX(i + 1), PY(y[i + 1]), curve, 0);
    for (int i = 0; i < n; i++)
        for (int dy = -2; dy <= 2; dy++)
            for (int dx = -2; dx <= 2; dx++)
                if (dx * dx + dy * dy <= 5) plot(&c, PX(i) + dx, PY(y[i]) + dy, curve);
#undef PX
#undef PY
    int rc = png_write_rgb(path, c.rgb, w, h, err, errlen);
    free(c.rgb);
    return rc;
}
