/* html.h — writing self-contained HTML: escaped text and attributes, and an inline SVG histogram.
 *
 * Everything is written to a stdio stream; write errors are left in the stream's error flag for the caller to
 * check once (ferror/fclose), as with any stdio output. Nothing here refers to an external URL, script or
 * style sheet, so a page written with these functions renders offline.
 */
#ifndef LVD_HTML_H
#define LVD_HTML_H

#include <stdint.h>
#include <stdio.h>

/* Writes s as HTML text or as a double-quoted attribute value: & < > " ' are written as character
 * references, other control bytes (except tab and newline) as U+FFFD, so bytes from a catalog cannot end an
 * element or attribute early. NULL writes nothing. */
void html_text(FILE *f, const char *s);

/* A histogram drawn as an inline <svg> element (no script needed). Bins may have unequal widths:
 * bin i covers [edges[i], edges[i+1]) on the x axis, drawn to scale. */
typedef struct html_hist {
    const char *title;     /* shown above the bars and as the SVG's aria-label */
    const char *x_label;   /* under the x axis, e.g. "cosine similarity" */
    int32_t nbins;         /* >= 1 */
    const double *edges;   /* nbins + 1 increasing values */
    const int64_t *counts; /* nbins counts >= 0 */
    double marker;         /* x of a vertical line (the threshold), NAN for none; drawn even off range */
    const char *marker_label; /* text beside the line, e.g. "threshold 0.45" */
    int32_t width, height; /* size of the drawing in CSS pixels (>= 120 x 80) */
} html_hist;

/* Writes <svg class="hist" ...>: one <rect class="bar"> per bin with data-lo, data-hi and data-count
 * attributes and a <title> tooltip, x tick labels at the bin edges (thinned to fit), the largest count on
 * the y axis, and, if marker is a number, a <line class="threshold"> with its label. Returns 0, or -1 with
 * a message when the shape is invalid (nothing written). */
int html_histogram_svg(FILE *f, const html_hist *h);

#endif
