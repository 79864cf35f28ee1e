/* test_html.c — the pieces of lvd-audit's page and report that need no catalog: HTML escaping, the inline SVG
 * histogram (shape, threshold line, refusal of bad input), the similarity bands and histogram bins and which
 * bin a value falls in (boundaries included), and thumbnails (small images copied byte for byte, large ones
 * shrunk to the requested side, garbage refused with a message). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/report.h"
#include "audit/thumb.h"
#include "err.h"
#include "audit/html.h"
#include "image.h"

/* html_text(s) written to a memory stream; returns the malloc'ed text. */
static char *capture_text(const char *s)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    html_text(f, s);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0, at = 0, hl = strlen(hay), nl = strlen(needle);
    for (; at + nl <= hl; at++)
        n += memcmp(hay + at, needle, nl) == 0;
    return n;
}

static void test_escaping(void **state)
{
    (void)state;
    char *t = capture_text("a<b>&\"c\" 'd'\n\x01\x7f" "\xc3\xa9");
    assert_string_equal(t, "a&lt;b&gt;&amp;&quot;c&quot; &#39;d&#39;\n&#xFFFD;&#xFFFD;\xc3\xa9");
    free(t);
    t = capture_text(NULL);
    assert_string_equal(t, "");
    free(t);
}

static char *svg(const html_hist *h, int *rc)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    *rc = html_histogram_svg(f, h);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static void test_histogram(void **state)
{
    (void)state;
    double edges[] = {0.4, 0.5, 0.6, 0.8, 1.0};
    int64_t counts[] = {3, 0, 7, 1};
    html_hist h = {.title = "sims <x>", .x_label = "cosine", .nbins = 4, .edges = edges, .counts = counts,
                   .marker = 0.45, .marker_label = "threshold 0.45", .width = 400, .height = 150};
    int rc;
    char *s = svg(&h, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(count(s, "<rect class=\"bar\""), 4);
    assert_int_equal(count(s, "<line class=\"threshold\""), 1);
    assert_non_null(strstr(s, "data-value=\"0.45\""));
    assert_non_null(strstr(s, "data-lo=\"0.6\" data-hi=\"0.8\" data-count=\"7\""));
    assert_non_null(strstr(s, "sims &lt;x&gt;"));
    assert_null(strstr(s, "<x>"));
    assert_null(strstr(s, "http"));
    /* The tallest bar spans the plot height; an empty bin has none. */
    assert_non_null(strstr(s, "height=\"0.00\" fill=\"#4a7fb5\" data-lo=\"0.5\""));
    free(s);

    h.marker = NAN;
    s = svg(&h, &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(count(s, "class=\"threshold\""), 0);
    free(s);

    /* Refused shapes write nothing and say why. */
    double bad_edges[] = {0.4, 0.4, 0.6};
    html_hist b = h;
    b.nbins = 2;
    b.edges = bad_edges;
    s = svg(&b, &rc);
    assert_int_equal(rc, -1);
    assert_string_equal(s, "");
    assert_non_null(strstr(lvd_errmsg(), "increase"));
    free(s);
    b = h;
    b.nbins = 0;
    s = svg(&b, &rc);
    assert_int_equal(rc, -1);
    free(s);
    b = h;
    b.width = 10;
    s = svg(&b, &rc);
    assert_int_equal(rc, -1);
    assert_non_null(strstr(lvd_errmsg(), "too small"));
    free(s);
    int64_t neg[] = {1, -1, 0, 0};
    b = h;
    b.counts = neg;
    s = svg(&b, &rc);
    assert_int_equal(rc, -1);
    free(s);
}

static void test_bands(void **state)
{
    (void)state;
    double e[AUDIT_BANDS_MAX + 1];
    int32_t n;
    audit_bands(0.45, e, &n);
    double want[] = {0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0};
    assert_int_equal(n, 7);
    for (int i = 0; i <= n; i++)
        assert_true(fabs(e[i] - want[i]) < 1e-12);
    audit_bands(0.604169, e, &n); /* DataComp's threshold: its own first band */
    assert_int_equal(n, 5);
    assert_true(e[0] == 0.604169 && fabs(e[1] - 0.7) < 1e-12 && e[5] == 1.0);
    audit_bands(0.6, e, &n); /* 0.6 itself is not repeated */
    assert_int_equal(n, 5);
    assert_true(e[1] > 0.6);
    audit_bands(0.97, e, &n);
    assert_int_equal(n, 1);
    assert_true(e[0] == 0.97 && e[1] == 1.0);
    audit_bands(1.0, e, &n); /* nothing can pass it, still one band */
    assert_int_equal(n, 1);
    assert_true(e[1] > e[0]);

    audit_bands(0.45, e, &n);
    assert_int_equal(audit_bin_of(e, n, 0.4499), -1);
    assert_int_equal(audit_bin_of(e, n, 0.45), 0);
    assert_int_equal(audit_bin_of(e, n, 0.5), 1); /* lower-inclusive */
    assert_int_equal(audit_bin_of(e, n, 0.4999999), 0);
    assert_int_equal(audit_bin_of(e, n, 0.95), 6);
    assert_int_equal(audit_bin_of(e, n, 1.0), 6); /* the last band holds 1 and rounding above it */
    assert_int_equal(audit_bin_of(e, n, 1.0000002), 6);
    assert_int_equal(audit_bin_of(e, n, NAN), -1);
}

static void test_hist_bins(void **state)
{
    (void)state;
    double e[AUDIT_BINS_MAX + 1];
    int32_t n;
    const double cases[][2] = {{0.45, 0.45}, {0.3, 0.6}, {-0.9, 0.6}, {0.99, 0.6}, {0.6, 0.6}, {0.61, 0.604169}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        double lo = cases[c][0], t = cases[c][1];
        audit_hist_bins(lo, t, e, &n);
        assert_true(n >= 1 && n <= 40);
        assert_true(e[0] <= lo + 1e-12 && e[0] < t); /* the threshold line never sits on the left axis */
        assert_true(e[n] == 1.0);
        for (int32_t i = 0; i < n; i++)
            assert_true(e[i + 1] > e[i]);
        assert_true(audit_bin_of(e, n, lo) >= 0);
        assert_int_equal(audit_bin_of(e, n, 1.0), n - 1);
    }
}

/* A w x h gradient image encoded as fmt. */
static uint8_t *make_image(uint32_t w, uint32_t h, int png, size_t *len)
{
    img_rgb im;
    assert_int_equal(img_alloc(&im, w, h), 0);
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            uint8_t *p = im.px + 3 * ((size_t)y * w + x);
            p[0] = (uint8_t)(x * 255 / w);
            p[1] = (uint8_t)(y * 255 / h);
            p[2] = 128;
        }
    uint8_t *out = NULL;
    assert_int_equal(png ? img_encode_png(&im, &out, len) : img_encode_jpeg(&im, 90, &out, len), 0);
    img_free(&im);
    return out;
}

static void test_thumbs(void **state)
{
    (void)state;
    size_t len, tlen;
    uint8_t *big = make_image(400, 300, 0, &len), *th = NULL;
    const char *ext;
    uint32_t w, h;
    assert_int_equal(audit_thumb(big, len, 100, 85, &th, &tlen, &ext, &w, &h), 0);
    assert_string_equal(ext, "jpg");
    assert_int_equal(w, 100);
    assert_int_equal(h, 75);
    img_rgb back = {0};
    assert_int_equal(img_decode(th, tlen, 1u << 24, 0, 0, &back), IMG_OK);
    assert_int_equal(back.w, 100);
    assert_int_equal(back.h, 75);
    img_free(&back);
    free(th);
    free(big);

    /* Portrait: the longer side is the height. */
    big = make_image(90, 330, 0, &len);
    assert_int_equal(audit_thumb(big, len, 110, 85, &th, &tlen, &ext, &w, &h), 0);
    assert_int_equal(h, 110);
    assert_int_equal(w, 30);
    free(th);
    free(big);

    /* Small enough: the same bytes, in their own format. */
    uint8_t *small = make_image(50, 40, 1, &len);
    assert_int_equal(audit_thumb(small, len, 64, 85, &th, &tlen, &ext, &w, &h), 0);
    assert_string_equal(ext, "png");
    assert_int_equal(tlen, len);
    assert_memory_equal(th, small, len);
    assert_int_equal(w, 50);
    assert_int_equal(h, 40);
    free(th);

    /* Garbage and truncated data are refused with a message; bad arguments too. */
    static const uint8_t junk[] = "not an image at all, just text";
    assert_int_equal(audit_thumb(junk, sizeof junk, 64, 85, &th, &tlen, &ext, &w, &h), -1);
    assert_null(th);
    assert_non_null(strstr(lvd_errmsg(), "thumbnail"));
    assert_int_equal(audit_thumb(small, 20, 64, 85, &th, &tlen, &ext, &w, &h), -1);
    assert_int_equal(audit_thumb(small, len, 4, 85, &th, &tlen, &ext, &w, &h), -1);
    assert_int_equal(audit_thumb(small, len, 64, 0, &th, &tlen, &ext, &w, &h), -1);
    free(small);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escaping),  cmocka_unit_test(test_histogram), cmocka_unit_test(test_bands),
        cmocka_unit_test(test_hist_bins), cmocka_unit_test(test_thumbs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
