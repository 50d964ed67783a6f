/*
 * chart.h: a small raster line chart written as a PNG, for reports that people look at (the
 * temporal-dynamics profile with its chunk boundaries). No text: the JSON beside the chart holds
 * the numbers; the chart shows the shape.
 */
#ifndef CHUNKGRPO_CHART_H
#define CHUNKGRPO_CHART_H

#include <stddef.h>

/*
 * Draws y[0..n) as a line with dots (one tick per point on the x axis), a shaded band from lo to
 * hi (either may be NULL), and a vertical line before each point index in boundaries[0..nb)
 * (e.g. where a chunk starts), on a white w x h canvas, y from 0 to 1.1 x the largest value.
 * Writes the PNG at path. Returns 0, or -1 with a message in err.
 */
int chart_png(const char *path, int w, int h, const float *y, const float *lo, const float *hi,
              int n, const int *boundaries, int nb, char *err, size_t errlen);

#endif
