/* html.c — escaped HTML output and an inline SVG histogram. */
#include "html.h"

#include <math.h>
#include <string.h>

#include "err.h"

void html_text(FILE *f, const char *s)
{
    if (!s)
        return;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&#39;", f); break;
        case '\t':
        case '\n': fputc(*p, f); break;
        default:
            if (*p < 0x20 || *p == 0x7f)
                fputs("&#xFFFD;", f);
            else
                fputc(*p, f);
        }
    }
}

/* Shortest of %.2f/%.3f/... that shows v without trailing zeros beyond 2 decimals ("0.45", "0.6", "1"). */
static void put_num(FILE *f, double v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%.4f", v);
    char *dot = strchr(buf, '.');
    if (dot) {
        char *end = buf + strlen(buf);
        while (end > dot + 1 && end[-1] == '0')
            *--end = '\0';
        if (end == dot + 1)
            *dot = '\0';
    }
    fputs(strcmp(buf, "-0") == 0 ? "0" : buf, f);
}

int html_histogram_svg(FILE *f, const html_hist *h)
{
    if (!h || h->nbins < 1 || !h->edges || !h->counts)
        return lvd_fail("histogram: needs at least one bin with edges and counts");
    if (h->width < 120 || h->height < 80)
        return lvd_fail("histogram: drawing of %dx%d px is too small (at least 120x80)", (int)h->width,
                        (int)h->height);
    int64_t top = 0;
    for (int32_t i = 0; i < h->nbins; i++) {
        if (!(h->edges[i] < h->edges[i + 1]))
            return lvd_fail("histogram: bin edges must increase (edge %d is %g, edge %d is %g)", (int)i,
                            h->edges[i], (int)i + 1, h->edges[i + 1]);
        if (h->counts[i] < 0)
            return lvd_fail("histogram: bin %d has a negative count", (int)i);
        if (h->counts[i] > top)
            top = h->counts[i];
    }
    if (!isfinite(h->edges[0]) || !isfinite(h->edges[h->nbins]))
        return lvd_fail("histogram: bin edges must be finite");

    /* Plot area inside margins for the title (top), tick labels (bottom) and the y label (left). */
    const double ml = 44, mr = 12, mt = 26, mb = 38;
    const double pw = h->width - ml - mr, ph = h->height - mt - mb;
    const double x0 = h->edges[0], x1 = h->edges[h->nbins];
    double lo = x0, hi = x1;
    if (!isnan(h->marker) && isfinite(h->marker)) { /* keep an off-range threshold visible */
        if (h->marker < lo)
            lo = h->marker;
        if (h->marker > hi)
            hi = h->marker;
    }
    const double span = hi - lo;
#define SX(v) (ml + ((v) - lo) / span * pw)
#define SY(c) (mt + ph - (top > 0 ? (double)(c) / (double)top * ph : 0.0))

    fprintf(f, "<svg class=\"hist\" width=\"%d\" height=\"%d\""
               " viewBox=\"0 0 %d %d\" role=\"img\" aria-label=\"",
            (int)h->width, (int)h->height, (int)h->width, (int)h->height);
    html_text(f, h->title);
    fputs("\">\n", f);
    fprintf(f, "<rect x=\"0\" y=\"0\" width=\"%d\" height=\"%d\" fill=\"#ffffff\"/>\n", (int)h->width,
            (int)h->height);
    if (h->title) {
        fprintf(f, "<text x=\"%.1f\" y=\"16\" font-size=\"13\" font-weight=\"bold\" fill=\"#222\">", ml);
        html_text(f, h->title);
        fputs("</text>\n", f);
    }
    /* Axes. */
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\"/>\n", ml, mt + ph, ml + pw,
            mt + ph);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#444\"/>\n", ml, mt, ml, mt + ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\" fill=\"#444\">%lld</text>\n",
            ml - 4, mt + 4, (long long)top);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\" fill=\"#444\">0</text>\n", ml - 4,
            mt + ph);

    for (int32_t i = 0; i < h->nbins; i++) {
        double a = SX(h->edges[i]), b = SX(h->edges[i + 1]);
        double y = SY(h->counts[i]);
        double w = b - a > 2 ? b - a - 1 : b - a;
        fprintf(f, "<rect class=\"bar\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#4a7fb5\""
                   " data-lo=\"",
                a, y, w, mt + ph - y);
        put_num(f, h->edges[i]);
        fputs("\" data-hi=\"", f);
        put_num(f, h->edges[i + 1]);
        fprintf(f, "\" data-count=\"%lld\"><title>", (long long)h->counts[i]);
        put_num(f, h->edges[i]);
        fputs("&#8211;", f);
        put_num(f, h->edges[i + 1]);
        fprintf(f, ": %lld</title></rect>\n", (long long)h->counts[i]);
    }

    /* Tick labels at the edges, every step-th so that labels (about 34 px wide) do not overlap. */
    int32_t step = 1;
    while (step < h->nbins && pw / ((double)h->nbins / step) < 34)
        step++;
    for (int32_t i = 0; i <= h->nbins; i += step) {
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"middle\" fill=\"#444\">",
                SX(h->edges[i]), mt + ph + 13);
        put_num(f, h->edges[i]);
        fputs("</text>\n", f);
    }
    if (h->x_label) {
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\" fill=\"#222\">",
                ml + pw / 2, mt + ph + 30);
        html_text(f, h->x_label);
        fputs("</text>\n", f);
    }
    if (!isnan(h->marker) && isfinite(h->marker)) {
        double x = SX(h->marker);
        fprintf(f, "<line class=\"threshold\" x1=\"%.2f\" y1=\"%.1f\" x2=\"%.2f\" y2=\"%.1f\" stroke=\"#d62728\""
                   " stroke-width=\"2\" stroke-dasharray=\"5,3\" data-value=\"",
                x, mt - 4, x, mt + ph);
        put_num(f, h->marker);
        fputs("\"/>\n", f);
        if (h->marker_label) {
            int right = x > ml + pw * 0.7; /* keep the label inside the drawing */
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"%s\" fill=\"#d62728\">",
                    right ? x - 4 : x + 4, mt + 8, right ? "end" : "start");
            html_text(f, h->marker_label);
            fputs("</text>\n", f);
        }
    }
    fputs("</svg>\n", f);
#undef SX
#undef SY
    return 0;
}
