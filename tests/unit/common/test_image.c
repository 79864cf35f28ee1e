/* test_image.c — image sniffing/probing/decoding/encoding, resampling and phash against Pillow references.
 *
 * Fixtures and expected pixels come from tests/unit/image_ref.py (Pillow + numpy), run once per test run
 * into a scratch directory under /tmp.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "scratch.h"

#include "err.h"
#include "image.h"
#include "decode/phash.h"
#include "resize.h"

#define PY "/usr/bin/python3"
#define PIL_LIMIT 178956970ull /* Pillow's decompression-bomb error threshold */

static char g_dir[64];     /* scratch directory with the fixtures */
static char g_script[4096]; /* path of image_ref.py */

/* ----------------------------------------------------------------------------------------------------------
 * Helpers
 */

static const char *fx(const char *fmt, ...)
{
    static char path[4][512];
    static int slot;
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    slot = (slot + 1) % 4;
    snprintf(path[slot], sizeof path[slot], "%s/%s", g_dir, name);
    return path[slot];
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void spit(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* .raw: u32 LE w, u32 LE h, w*h*3 RGB bytes */
static void load_raw(const char *path, img_rgb *im)
{
    size_t len;
    uint8_t *d = slurp(path, &len);
    assert_true(len >= 8);
    uint32_t w = (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 24;
    uint32_t h = (uint32_t)d[4] | (uint32_t)d[5] << 8 | (uint32_t)d[6] << 16 | (uint32_t)d[7] << 24;
    assert_int_equal(len, 8 + (size_t)w * h * 3);
    assert_int_equal(img_alloc(im, w, h), 0);
    memcpy(im->px, d + 8, (size_t)w * h * 3);
    free(d);
}

static img_status decode_file(const char *path, uint64_t max_pixels, uint32_t min_w, uint32_t min_h, img_rgb *out)
{
    size_t len;
    uint8_t *d = slurp(path, &len);
    img_status st = img_decode(d, len, max_pixels, min_w, min_h, out);
    free(d);
    return st;
}

/* Mean and max absolute channel difference of two images of the same size. */
static double mean_diff(const img_rgb *got, const img_rgb *want, int *max_abs, const char *what)
{
    if (got->w != want->w || got->h != want->h)
        fail_msg("%s: size %ux%u, expected %ux%u", what, got->w, got->h, want->w, want->h);
    size_t n = (size_t)got->w * got->h * 3;
    double sum = 0;
    int mx = 0;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)got->px[i] - (int)want->px[i]);
        sum += d;
        if (d > mx)
            mx = d;
    }
    *max_abs = mx;
    return sum / (double)n;
}

/* Asserts equal sizes and mean/max absolute channel differences within bounds. */
static void assert_close(const img_rgb *got, const img_rgb *want, double max_mean, int max_abs, const char *what)
{
    int mx;
    double mean = mean_diff(got, want, &mx, what);
    if (mean > max_mean || mx > max_abs)
        fail_msg("%s: mean abs diff %.3f (limit %.3f), max %d (limit %d)", what, mean, max_mean, mx, max_abs);
}

static void check_decode(const char *file, const char *ref, double max_mean, int max_abs)
{
    img_rgb got, want;
    img_status st = decode_file(fx("%s", file), PIL_LIMIT, 0, 0, &got);
    if (st != IMG_OK)
        fail_msg("%s: status %d: %s", file, st, lvd_errmsg());
    load_raw(fx("%s", ref), &want);
    assert_close(&got, &want, max_mean, max_abs, file);
    img_free(&got);
    img_free(&want);
}

static int setup(void **state)
{
    (void)state;
    if (scratch_make(g_dir, sizeof g_dir, "image") != 0)
        return -1;
    char cmd[8192];
    snprintf(cmd, sizeof cmd, PY " %s gen %s", g_script, g_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "# reference generator failed: %s\n", cmd);
        return -1;
    }
    if (access(fx("fashion_missing"), F_OK) == 0)
        printf("# dataset-fashion-mnist is not installed: phash tests use synthetic pictures only\n");
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return scratch_remove(g_dir);
}

/* ----------------------------------------------------------------------------------------------------------
 * Sniffing and probing
 */

static void test_sniff_real_files(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        img_format fmt;
        const char *name, *ext;
    } cases[] = {
        {"sniff.jpg", IMG_FMT_JPEG, "jpeg", "jpg"}, {"sniff.png", IMG_FMT_PNG, "png", "png"},
        {"sniff.webp", IMG_FMT_WEBP, "webp", "webp"}, {"sniff.gif", IMG_FMT_GIF, "gif", "gif"},
        {"sniff.tif", IMG_FMT_TIFF, "tiff", "tif"}, {"sniff.bmp", IMG_FMT_BMP, "bmp", "bmp"},
        {"sniff.ico", IMG_FMT_ICO, "ico", "ico"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        uint8_t *d = slurp(fx("%s", cases[i].file), &len);
        assert_int_equal(img_sniff(d, len), cases[i].fmt);
        assert_int_equal(img_sniff(d, 32), cases[i].fmt); /* 32 bytes are enough */
        assert_string_equal(img_format_name(cases[i].fmt), cases[i].name);
        assert_string_equal(img_format_ext(cases[i].fmt), cases[i].ext);
        /* recognised-but-undecodable formats are refused by probe and decode */
        if (cases[i].fmt != IMG_FMT_JPEG && cases[i].fmt != IMG_FMT_PNG && cases[i].fmt != IMG_FMT_WEBP) {
            img_format f;
            uint32_t w, h;
            int o;
            img_rgb im;
            assert_int_equal(img_probe(d, len, &f, &w, &h, &o), IMG_UNSUPPORTED);
            assert_int_equal(f, cases[i].fmt);
            assert_int_equal(img_decode(d, len, PIL_LIMIT, 0, 0, &im), IMG_UNSUPPORTED);
            assert_null(im.px);
            assert_true(strlen(lvd_errmsg()) > 0);
        }
        free(d);
    }
}

static void test_sniff_crafted(void **state)
{
    (void)state;
    /* ISO-BMFF ftyp boxes and SVG text written from their specifications */
    static const uint8_t avif[] = "\0\0\0\x1c" "ftypavif\0\0\0\0avifmif1miaf";
    static const uint8_t avis[] = "\0\0\0\x18" "ftypavis\0\0\0\0avis";
    static const uint8_t heic[] = "\0\0\0\x18" "ftypheic\0\0\0\0mif1heic";
    static const uint8_t heix[] = "\0\0\0\x18" "ftypheix\0\0\0\0mif1heix";
    static const uint8_t mif1[] = "\0\0\0\x18" "ftypmif1\0\0\0\0mif1heic";
    static const uint8_t msf1[] = "\0\0\0\x18" "ftypmsf1\0\0\0\0msf1hevc";
    static const uint8_t mif1_avif[] = "\0\0\0\x1c" "ftypmif1\0\0\0\0mif1avifmiaf";
    static const uint8_t mp4[] = "\0\0\0\x18" "ftypisom\0\0\0\0isomiso2";
    static const char svg1[] = "<svg xmlns=\"http://www.w3.org/2000/svg\"/>";
    static const char svg2[] = "\xEF\xBB\xBF  <?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg width=\"1\"/>";
    static const char html[] = "<?xml version=\"1.0\"?><html><body>no</body></html>";
    static const uint8_t ico[] = {0, 0, 1, 0, 1, 0, 16, 16};
    assert_int_equal(img_sniff(avif, sizeof avif - 1), IMG_FMT_AVIF);
    assert_int_equal(img_sniff(avis, sizeof avis - 1), IMG_FMT_AVIF);
    assert_int_equal(img_sniff(heic, sizeof heic - 1), IMG_FMT_HEIC);
    assert_int_equal(img_sniff(heix, sizeof heix - 1), IMG_FMT_HEIC);
    assert_int_equal(img_sniff(mif1, sizeof mif1 - 1), IMG_FMT_HEIC);
    assert_int_equal(img_sniff(msf1, sizeof msf1 - 1), IMG_FMT_HEIC);
    assert_int_equal(img_sniff(mif1_avif, sizeof mif1_avif - 1), IMG_FMT_AVIF);
    assert_int_equal(img_sniff(mp4, sizeof mp4 - 1), IMG_FMT_UNKNOWN);
    assert_int_equal(img_sniff((const uint8_t *)svg1, strlen(svg1)), IMG_FMT_SVG);
    assert_int_equal(img_sniff((const uint8_t *)svg2, strlen(svg2)), IMG_FMT_SVG);
    assert_int_equal(img_sniff((const uint8_t *)html, strlen(html)), IMG_FMT_UNKNOWN);
    assert_int_equal(img_sniff(ico, sizeof ico), IMG_FMT_ICO);
    assert_string_equal(img_format_name(IMG_FMT_AVIF), "avif");
    assert_string_equal(img_format_ext(IMG_FMT_HEIC), "heic");
    assert_string_equal(img_format_ext(IMG_FMT_SVG), "svg");
    assert_string_equal(img_format_name(IMG_FMT_UNKNOWN), "unknown");
    assert_string_equal(img_format_ext(IMG_FMT_UNKNOWN), "bin");
}

static void test_sniff_unknown_and_short(void **state)
{
    (void)state;
    static const char *texts[] = {"hello world, this is not an image at all", "BMW is a car, not a bitmap file!",
                                  "<html><head></head></html>", "RIFF\x10\0\0\0WAVEfmt "};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++)
        assert_int_equal(img_sniff((const uint8_t *)texts[i], strlen(texts[i])), IMG_FMT_UNKNOWN);
    uint8_t noise[64];
    uint32_t s = 12345;
    for (size_t i = 0; i < sizeof noise; i++) {
        s = s * 1103515245u + 12345u;
        noise[i] = (uint8_t)(s >> 16);
    }
    noise[0] = 0x42; /* not a magic start */
    assert_int_equal(img_sniff(noise, sizeof noise), IMG_FMT_UNKNOWN);
    assert_int_equal(img_sniff(NULL, 0), IMG_FMT_UNKNOWN);
    assert_int_equal(img_sniff(noise, 0), IMG_FMT_UNKNOWN);
    /* every real magic cut one byte short is no longer recognised */
    static const char *files[] = {"sniff.jpg", "sniff.png", "sniff.webp", "sniff.gif", "sniff.tif", "sniff.ico"};
    static const size_t magic_len[] = {3, 8, 12, 6, 4, 6};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t len;
        uint8_t *d = slurp(fx("%s", files[i]), &len);
        assert_int_not_equal(img_sniff(d, magic_len[i]), IMG_FMT_UNKNOWN);
        assert_int_equal(img_sniff(d, magic_len[i] - 1), IMG_FMT_UNKNOWN);
        free(d);
    }
    img_format f;
    uint32_t w, h;
    int o;
    assert_int_equal(img_probe((const uint8_t *)texts[0], strlen(texts[0]), &f, &w, &h, &o), IMG_UNSUPPORTED);
    assert_int_equal(f, IMG_FMT_UNKNOWN);
}

static void test_probe(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        img_format fmt;
        uint32_t w, h;
        int o;
    } cases[] = {
        {"jpeg_rgb.jpg", IMG_FMT_JPEG, 96, 64, 1},   {"png_rgba.png", IMG_FMT_PNG, 96, 64, 1},
        {"webp_lossy.webp", IMG_FMT_WEBP, 96, 64, 1}, {"webp_alpha.webp", IMG_FMT_WEBP, 96, 64, 1},
        {"exif_6.jpg", IMG_FMT_JPEG, 48, 32, 6},      {"exif_3.jpg", IMG_FMT_JPEG, 48, 32, 3},
        {"exif_mm6.jpg", IMG_FMT_JPEG, 48, 32, 6},    {"big.jpg", IMG_FMT_JPEG, 1600, 1200, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        uint8_t *d = slurp(fx("%s", cases[i].file), &len);
        img_format f;
        uint32_t w, h;
        int o;
        img_status st = img_probe(d, len, &f, &w, &h, &o);
        if (st != IMG_OK)
            fail_msg("%s: %d %s", cases[i].file, st, lvd_errmsg());
        assert_int_equal(f, cases[i].fmt);
        assert_int_equal(w, cases[i].w);
        assert_int_equal(h, cases[i].h);
        assert_int_equal(o, cases[i].o);
        free(d);
    }
}

/* ----------------------------------------------------------------------------------------------------------
 * Decoding
 */

static void test_decode_jpeg(void **state)
{
    (void)state;
    /* same libjpeg underneath, but allow for a different IDCT/upsampling choice */
    check_decode("jpeg_rgb.jpg", "jpeg_rgb.raw", 1.5, 12);
    check_decode("jpeg_prog.jpg", "jpeg_prog.raw", 1.5, 12);
    check_decode("jpeg_gray.jpg", "jpeg_gray.raw", 1.5, 12);
    /* CMYK saved by Pillow (inverted, Adobe marker) vs Pillow's CMYK -> RGB; 1 level of rounding */
    check_decode("jpeg_cmyk.jpg", "jpeg_cmyk.raw", 1.5, 12);
    img_rgb g;
    assert_int_equal(decode_file(fx("jpeg_gray.jpg"), PIL_LIMIT, 0, 0, &g), IMG_OK);
    for (size_t i = 0; i < (size_t)g.w * g.h; i++) /* grey expands to R = G = B */
        assert_true(g.px[3 * i] == g.px[3 * i + 1] && g.px[3 * i] == g.px[3 * i + 2]);
    img_free(&g);
}

static void test_decode_png(void **state)
{
    (void)state;
    check_decode("png_rgb.png", "png_rgb.raw", 0.0, 0);
    check_decode("png_p.png", "png_p.raw", 0.0, 0);
    check_decode("png_l.png", "png_l.raw", 0.0, 0);
    /* alpha over white: Pillow's alpha_composite rounds through fixed point, allow one level */
    check_decode("png_rgba.png", "png_rgba.raw", 0.05, 1);
    check_decode("png_ptrns.png", "png_ptrns.raw", 0.05, 1);
    /* 16-bit samples keep their high byte (reference: numpy >> 8); allow rounding instead of truncation */
    check_decode("png_i16.png", "png_i16.raw", 0.6, 1);
    check_decode("png_rgb16.png", "png_rgb16.raw", 0.6, 1);
}

static void test_decode_webp(void **state)
{
    (void)state;
    check_decode("webp_lossless.webp", "webp_lossless.raw", 0.0, 0);
    check_decode("webp_lossy.webp", "webp_lossy.raw", 0.5, 4);
    check_decode("webp_alpha.webp", "webp_alpha.raw", 0.05, 1);
}

static void test_exif_orientation(void **state)
{
    (void)state;
    for (int o = 1; o <= 8; o++) {
        img_rgb got, want;
        assert_int_equal(decode_file(fx("exif_%d.jpg", o), PIL_LIMIT, 0, 0, &got), IMG_OK);
        load_raw(fx("exif_%d.raw", o), &want);
        assert_int_equal(got.w, o >= 5 ? 32 : 48);
        char what[32];
        snprintf(what, sizeof what, "orientation %d", o);
        assert_close(&got, &want, 1.5, 12, what);
        img_free(&got);
        img_free(&want);
    }
    check_decode("exif_mm6.jpg", "exif_mm6.raw", 1.5, 12);
}

static void test_exif_hostile(void **state)
{
    (void)state;
    img_rgb want;
    load_raw(fx("hostile.raw"), &want);
    for (int i = 0; i < 7; i++) {
        size_t len;
        uint8_t *d = slurp(fx("hostile_%d.jpg", i), &len);
        img_format f;
        uint32_t w, h;
        int o = 0;
        assert_int_equal(img_probe(d, len, &f, &w, &h, &o), IMG_OK);
        assert_int_equal(o, 1);
        img_rgb got;
        assert_int_equal(img_decode(d, len, PIL_LIMIT, 0, 0, &got), IMG_OK);
        char what[32];
        snprintf(what, sizeof what, "hostile exif %d", i);
        assert_close(&got, &want, 1.5, 12, what); /* not rotated: 48x32 */
        img_free(&got);
        free(d);
    }
    img_free(&want);
}

static void test_dct_scaling(void **state)
{
    (void)state;
    img_rgb im, want;
    assert_int_equal(decode_file(fx("big.jpg"), PIL_LIMIT, 200, 150, &im), IMG_OK);
    assert_int_equal(im.w, 200);
    assert_int_equal(im.h, 150);
    load_raw(fx("big_8.raw"), &want); /* Pillow's draft((200,150)): libjpeg's own 1/8 decode */
    assert_close(&im, &want, 1.5, 12, "1/8 decode");
    img_free(&want);
    img_free(&im);
    assert_int_equal(decode_file(fx("big.jpg"), PIL_LIMIT, 201, 150, &im), IMG_OK);
    assert_int_equal(im.w, 400);
    assert_int_equal(im.h, 300);
    img_free(&im);
    /* M/8 scales between the powers of two: 4/8 would give 600 < 601 rows, so 5/8 (1000x750). */
    assert_int_equal(decode_file(fx("big.jpg"), PIL_LIMIT, 800, 601, &im), IMG_OK);
    assert_int_equal(im.w, 1000);
    assert_int_equal(im.h, 750);
    load_raw(fx("big_5of8.raw"), &want);
    /* IDCT scaling and bicubic resampling differ at the synthetic picture's sharp edges (max ~50 levels);
     * the mean is what shows the same picture at the same geometry. */
    assert_close(&im, &want, 1.5, 64, "5/8 decode");
    img_free(&want);
    img_free(&im);
    assert_int_equal(decode_file(fx("big.jpg"), PIL_LIMIT, 1401, 600, &im), IMG_OK);
    assert_int_equal(im.w, 1600);
    assert_int_equal(im.h, 1200);
    img_free(&im);
    assert_int_equal(decode_file(fx("big.jpg"), PIL_LIMIT, 0, 0, &im), IMG_OK);
    assert_int_equal(im.w, 1600);
    img_free(&im);
    /* orientation 6: output is 1200x1600, the minimum applies to the output sides */
    assert_int_equal(decode_file(fx("big_o6.jpg"), PIL_LIMIT, 150, 200, &im), IMG_OK);
    assert_int_equal(im.w, 150);
    assert_int_equal(im.h, 200);
    img_free(&im);
    assert_int_equal(decode_file(fx("big_o6.jpg"), PIL_LIMIT, 200, 150, &im), IMG_OK);
    assert_int_equal(im.w, 300);
    assert_int_equal(im.h, 400);
    img_free(&im);
    /* other formats ignore the minimum */
    assert_int_equal(decode_file(fx("png_rgb.png"), PIL_LIMIT, 10, 10, &im), IMG_OK);
    assert_int_equal(im.w, 96);
    img_free(&im);
}

static void test_truncated(void **state)
{
    (void)state;
    static const char *files[] = {"big.jpg", "jpeg_rgb.jpg", "png_rgb.png", "png_rgba.png", "webp_lossy.webp",
                                  "webp_lossless.webp", "webp_alpha.webp"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t len;
        uint8_t *d = slurp(fx("%s", files[i]), &len);
        static const double cuts[] = {0.5, 0.9};
        for (size_t c = 0; c < 2; c++) {
            size_t cut = (size_t)(len * cuts[c]);
            uint8_t *part = malloc(cut); /* exact-size copy so overreads show up under sanitizers */
            assert_non_null(part);
            memcpy(part, d, cut);
            lvd_err_clear();
            img_rgb im;
            img_status st = img_decode(part, cut, PIL_LIMIT, 0, 0, &im);
            if (st != IMG_TRUNCATED && st != IMG_CORRUPT)
                fail_msg("%s cut at %zu/%zu: status %d", files[i], cut, len, st);
            assert_null(im.px);
            assert_true(strlen(lvd_errmsg()) > 0);
            free(part);
        }
        /* a header cut short fails the probe too */
        img_format f;
        uint32_t w, h;
        int o;
        lvd_err_clear();
        img_status st = img_probe(d, 20, &f, &w, &h, &o);
        assert_true(st == IMG_TRUNCATED || st == IMG_CORRUPT);
        assert_true(strlen(lvd_errmsg()) > 0);
        free(d);
    }
    /* the scan data of a baseline JPEG ending early is "premature end of data" */
    size_t len;
    uint8_t *d = slurp(fx("big.jpg"), &len);
    img_rgb im;
    assert_int_equal(img_decode(d, len / 2, PIL_LIMIT, 0, 0, &im), IMG_TRUNCATED);
    assert_non_null(strstr(lvd_errmsg(), "Premature end"));
    free(d);
}

static void test_garbage_after_soi(void **state)
{
    (void)state;
    size_t n = 65536;
    uint8_t *d = malloc(n);
    assert_non_null(d);
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        d[i] = (uint8_t)(s >> 24);
    }
    d[0] = 0xFF;
    d[1] = 0xD8;
    d[2] = 0xFF;
    img_rgb im;
    lvd_err_clear();
    assert_int_equal(img_decode(d, n, PIL_LIMIT, 0, 0, &im), IMG_CORRUPT);
    assert_null(im.px);
    assert_non_null(strstr(lvd_errmsg(), "jpeg"));
    free(d);
}

/* Probe and refuse declared-huge images inside a child whose address space is capped at 2 GiB: a 50000 x
 * 50000 RGB buffer (7.5 GB) could not be allocated there, so passing proves nothing was. */
static int bomb_child(void)
{
#if defined(__SANITIZE_ADDRESS__)
    const int capped = 0; /* AddressSanitizer reserves terabytes of shadow memory: no address-space cap */
#else
    const int capped = 1;
    struct rlimit rl = {(rlim_t)2 << 30, (rlim_t)2 << 30};
    if (setrlimit(RLIMIT_AS, &rl) != 0)
        return 100;
#endif
    size_t len;
    uint8_t *d = slurp(fx("bomb.png"), &len);
    if (len > 200)
        return 101;
    img_format f;
    uint32_t w, h;
    int o;
    if (img_probe(d, len, &f, &w, &h, &o) != IMG_OK || f != IMG_FMT_PNG || w != 50000 || h != 50000)
        return 102;
    img_rgb im;
    if (img_decode(d, len, PIL_LIMIT, 0, 0, &im) != IMG_TOO_MANY_PIXELS || im.px != NULL)
        return 103;
    if (strstr(lvd_errmsg(), "50000x50000") == NULL)
        return 104;
    /* without the limit the allocation itself fails cleanly */
    if (capped && img_decode(d, len, UINT64_MAX, 0, 0, &im) != IMG_NOMEM)
        return 105;
    free(d);
    d = slurp(fx("bomb.jpg"), &len);
    if (img_probe(d, len, &f, &w, &h, &o) != IMG_OK || w != 60000 || h != 60000)
        return 106;
    if (img_decode(d, len, PIL_LIMIT, 0, 0, &im) != IMG_TOO_MANY_PIXELS)
        return 107;
    free(d);
    d = slurp(fx("bomb.webp"), &len);
    if (img_probe(d, len, &f, &w, &h, &o) != IMG_OK || w != 16384 || h != 16384)
        return 108;
    if (img_decode(d, len, PIL_LIMIT, 0, 0, &im) != IMG_TOO_MANY_PIXELS)
        return 109;
    free(d);
    return 0;
}

static void test_bombs(void **state)
{
    (void)state;
    fflush(stdout);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(bomb_child());
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) != 0)
        fail_msg("bomb check %d failed", WEXITSTATUS(status));
}

/* Random byte corruption of valid files: whatever the decoders make of it, the contract holds (status and
 * pixels agree, failures carry a message) and nothing crashes; meant to be run under sanitizers too. */
static void test_mutations(void **state)
{
    (void)state;
    static const char *files[] = {"jpeg_rgb.jpg", "exif_6.jpg", "jpeg_cmyk.jpg", "png_rgba.png",
                                  "png_p.png",    "png_rgb16.png", "webp_lossy.webp", "webp_alpha.webp"};
    uint64_t s = 88172645463325252ull;
    int ok = 0, failed = 0;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        size_t len;
        uint8_t *orig = slurp(fx("%s", files[i]), &len);
        uint8_t *d = malloc(len);
        assert_non_null(d);
        for (int it = 0; it < 150; it++) {
            memcpy(d, orig, len);
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            int flips = 1 + (int)(s % 8);
            for (int k = 0; k < flips; k++) {
                s ^= s << 13, s ^= s >> 7, s ^= s << 17;
                d[s % len] = (uint8_t)(s >> 32);
            }
            lvd_err_clear();
            img_rgb im;
            img_status st = img_decode(d, len, PIL_LIMIT, 0, 0, &im);
            if (st == IMG_OK) {
                assert_non_null(im.px);
                assert_true(im.w > 0 && im.h > 0);
                ok++;
            } else {
                assert_null(im.px);
                assert_true(strlen(lvd_errmsg()) > 0);
                failed++;
            }
            img_free(&im);
            img_format f;
            uint32_t w, h;
            int o;
            st = img_probe(d, len, &f, &w, &h, &o);
            assert_true(o >= 1 && o <= 8);
        }
        free(d);
        free(orig);
    }
    printf("# corrupted files: %d decoded anyway, %d refused\n", ok, failed);
    assert_true(failed > 0);
}

/* ----------------------------------------------------------------------------------------------------------
 * Encoders: Pillow decodes what we wrote
 */

/* Writes our encoding, has Pillow decode it, and compares with the source: lossless must be exact; lossy must
 * lose no more than Pillow's own encoder at the same quality (pil_ref: Pillow's round trip), plus a margin. */
static void check_encoded(const uint8_t *data, size_t len, const char *name, img_format fmt, const img_rgb *src,
                          const char *pil_ref)
{
    assert_int_equal(img_sniff(data, len), fmt);
    spit(fx("%s", name), data, len);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, PY " %s decode %s %s.raw", g_script, fx("%s", name), fx("%s", name));
    assert_int_equal(system(cmd), 0);
    img_rgb back;
    load_raw(fx("%s.raw", name), &back);
    if (pil_ref == NULL) {
        assert_close(&back, src, 0.0, 0, name);
    } else {
        img_rgb pil;
        load_raw(fx("%s", pil_ref), &pil);
        int mx_ours, mx_pil;
        double ours = mean_diff(&back, src, &mx_ours, name), theirs = mean_diff(&pil, src, &mx_pil, pil_ref);
        printf("# %s: mean abs error %.3f (max %d); Pillow at the same quality %.3f (max %d)\n", name, ours, mx_ours,
               theirs, mx_pil);
        if (ours > theirs + 0.5 || ours > 6.0)
            fail_msg("%s: mean abs error %.3f vs Pillow's %.3f", name, ours, theirs);
        img_free(&pil);
    }
    img_free(&back);
}

static void test_encoders(void **state)
{
    (void)state;
    img_rgb src;
    load_raw(fx("png_rgb.raw"), &src);
    uint8_t *out;
    size_t len;
    assert_int_equal(img_encode_png(&src, &out, &len), 0);
    check_encoded(out, len, "enc.png", IMG_FMT_PNG, &src, NULL);
    free(out);
    assert_int_equal(img_encode_jpeg(&src, 95, &out, &len), 0);
    check_encoded(out, len, "enc95.jpg", IMG_FMT_JPEG, &src, "enc_pil95_jpg.raw");
    size_t len95 = len;
    free(out);
    assert_int_equal(img_encode_jpeg(&src, 30, &out, &len), 0);
    assert_true(len < len95); /* quality is honoured */
    free(out);
    assert_int_equal(img_encode_webp(&src, 95, &out, &len), 0);
    check_encoded(out, len, "enc95.webp", IMG_FMT_WEBP, &src, "enc_pil95_webp.raw");
    len95 = len;
    free(out);
    assert_int_equal(img_encode_webp(&src, 30, &out, &len), 0);
    assert_true(len < len95);
    free(out);
    /* a smooth picture survives JPEG q=95 nearly intact */
    img_rgb smooth;
    assert_int_equal(img_alloc(&smooth, 64, 48), 0);
    for (uint32_t y = 0; y < 48; y++)
        for (uint32_t x = 0; x < 64; x++) {
            smooth.px[(y * 64 + x) * 3] = (uint8_t)(x * 3);
            smooth.px[(y * 64 + x) * 3 + 1] = (uint8_t)(y * 4);
            smooth.px[(y * 64 + x) * 3 + 2] = (uint8_t)(128 + x - y);
        }
    assert_int_equal(img_encode_jpeg(&smooth, 95, &out, &len), 0);
    spit(fx("smooth.jpg"), out, len);
    free(out);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, PY " %s decode %s %s", g_script, fx("smooth.jpg"), fx("smooth.raw"));
    assert_int_equal(system(cmd), 0);
    img_rgb back;
    load_raw(fx("smooth.raw"), &back);
    assert_close(&back, &smooth, 1.0, 6, "smooth q95 jpeg");
    img_free(&back);
    img_free(&smooth);

    img_rgb empty = {0, 0, NULL};
    assert_int_equal(img_encode_png(&empty, &out, &len), -1);
    assert_null(out);
    assert_int_equal(img_encode_jpeg(&empty, 90, &out, &len), -1);
    assert_int_equal(img_encode_webp(&empty, 90, &out, &len), -1);
    assert_int_equal(img_alloc(&empty, 0, 5), -1);
    img_free(&src);
}

/* ----------------------------------------------------------------------------------------------------------
 * Geometry and resampling
 */

static void assert_plan(resize_plan p, uint32_t rw, uint32_t rh, uint32_t cx, uint32_t cy, uint32_t cw, uint32_t ch)
{
    if (p.rw != rw || p.rh != rh || p.cx != cx || p.cy != cy || p.cw != cw || p.ch != ch)
        fail_msg("plan %u x %u crop (%u,%u) %ux%u, expected %u x %u crop (%u,%u) %ux%u", p.rw, p.rh, p.cx, p.cy,
                 p.cw, p.ch, rw, rh, cx, cy, cw, ch);
}

static void test_resize_compute(void **state)
{
    (void)state;
    assert_string_equal(resize_mode_name(RESIZE_NO), "no");
    assert_string_equal(resize_mode_name(RESIZE_KEEP_RATIO), "keep_ratio");
    assert_string_equal(resize_mode_name(RESIZE_KEEP_RATIO_LARGEST), "keep_ratio_largest");
    assert_string_equal(resize_mode_name(RESIZE_CENTER_CROP), "center_crop");
    /* expected values worked by hand from img2dataset's definitions */
    assert_plan(resize_compute(RESIZE_NO, 256, 0, 1024, 768), 1024, 768, 0, 0, 1024, 768);
    assert_plan(resize_compute(RESIZE_KEEP_RATIO, 256, 0, 1024, 768), 341, 256, 0, 0, 341, 256);
    assert_plan(resize_compute(RESIZE_KEEP_RATIO, 256, 0, 768, 1024), 256, 341, 0, 0, 256, 341);
    assert_plan(resize_compute(RESIZE_KEEP_RATIO, 256, 0, 500, 500), 256, 256, 0, 0, 256, 256);
    assert_plan(resize_compute(RESIZE_KEEP_RATIO, 256, 0, 200, 100), 512, 256, 0, 0, 512, 256);
    assert_plan(resize_compute(RESIZE_KEEP_RATIO_LARGEST, 256, 0, 1024, 768), 256, 192, 0, 0, 256, 192);
    assert_plan(resize_compute(RESIZE_KEEP_RATIO_LARGEST, 256, 0, 300, 1000), 77, 256, 0, 0, 77, 256);
    assert_plan(resize_compute(RESIZE_CENTER_CROP, 256, 0, 1024, 768), 341, 256, 42, 0, 256, 256);
    assert_plan(resize_compute(RESIZE_CENTER_CROP, 256, 0, 300, 1000), 256, 853, 0, 298, 256, 256);
    assert_plan(resize_compute(RESIZE_CENTER_CROP, 256, 0, 100, 50), 512, 256, 128, 0, 256, 256);
    /* rounding: 4 * 2/3 = 2.67 -> 3; 5 * 1/2 = 2.5 -> 2 (Python's round-half-even) */
    assert_plan(resize_compute(RESIZE_KEEP_RATIO, 2, 0, 3, 4), 2, 3, 0, 0, 2, 3);
    assert_plan(resize_compute(RESIZE_KEEP_RATIO, 1, 0, 2, 5), 1, 2, 0, 0, 1, 2);
    assert_plan(resize_compute(RESIZE_KEEP_RATIO, 1, 0, 2, 7), 1, 4, 0, 0, 1, 4);
    /* only_if_bigger */
    assert_plan(resize_compute(RESIZE_KEEP_RATIO, 256, 1, 200, 100), 200, 100, 0, 0, 200, 100);
    assert_plan(resize_compute(RESIZE_KEEP_RATIO, 256, 1, 1024, 256), 1024, 256, 0, 0, 1024, 256);
    assert_plan(resize_compute(RESIZE_KEEP_RATIO, 256, 1, 1024, 257), 1020, 256, 0, 0, 1020, 256);
    assert_plan(resize_compute(RESIZE_KEEP_RATIO_LARGEST, 256, 1, 300, 100), 256, 85, 0, 0, 256, 85);
    assert_plan(resize_compute(RESIZE_KEEP_RATIO_LARGEST, 256, 1, 200, 100), 200, 100, 0, 0, 200, 100);
    assert_plan(resize_compute(RESIZE_CENTER_CROP, 256, 1, 200, 100), 200, 100, 0, 0, 200, 100);
    assert_plan(resize_compute(RESIZE_CENTER_CROP, 256, 1, 400, 100), 400, 100, 72, 0, 256, 100);
    assert_plan(resize_compute(RESIZE_CENTER_CROP, 64, 1, 200, 100), 128, 64, 32, 0, 64, 64);
    /* extreme aspect ratios */
    assert_plan(resize_compute(RESIZE_KEEP_RATIO_LARGEST, 256, 0, 10000, 1), 256, 1, 0, 0, 256, 1);
    assert_plan(resize_compute(RESIZE_KEEP_RATIO_LARGEST, 256, 0, 1, 10000), 1, 256, 0, 0, 1, 256);
    assert_plan(resize_compute(RESIZE_KEEP_RATIO, 256, 0, 10000, 10), 256000, 256, 0, 0, 256000, 256);
    assert_plan(resize_compute(RESIZE_CENTER_CROP, 256, 0, 1, 10000), 256, 2560000, 0, 1279872, 256, 256);
    assert_plan(resize_compute(RESIZE_KEEP_RATIO, 256, 0, UINT32_MAX, 1), UINT32_MAX, 256, 0, 0, UINT32_MAX, 256);
}

static void check_resize(const img_rgb *src, const char *ref, uint32_t dw, uint32_t dh)
{
    img_rgb got, want;
    load_raw(fx("%s", ref), &want);
    assert_int_equal(want.w, dw);
    assert_int_equal(want.h, dh);
    assert_int_equal(img_resize(src, dw, dh, &got), 0);
    assert_close(&got, &want, 0.05, 1, ref); /* same fixed-point arithmetic as Pillow */
    img_free(&got);
    img_free(&want);
}

static void test_resize_vs_pillow(void **state)
{
    (void)state;
    img_rgb src;
    assert_int_equal(decode_file(fx("rsrc.png"), PIL_LIMIT, 0, 0, &src), IMG_OK);
    check_resize(&src, "r_down2.raw", 100, 75);
    check_resize(&src, "r_down73.raw", 27, 21); /* 200/7.3, 150/7.3 rounded */
    check_resize(&src, "r_up2.raw", 400, 300);
    check_resize(&src, "r_honly.raw", 77, 150);
    check_resize(&src, "r_vonly.raw", 200, 41);
    /* a whole center_crop plan against Pillow's resize + crop */
    resize_plan p = resize_compute(RESIZE_CENTER_CROP, 64, 0, src.w, src.h);
    img_rgb got, want;
    assert_int_equal(img_apply_plan(&src, &p, &got), 0);
    load_raw(fx("r_plan.raw"), &want);
    assert_close(&got, &want, 0.05, 1, "center_crop plan");
    img_free(&got);
    img_free(&want);
    /* a plan with nothing to do is a plain copy */
    p = resize_compute(RESIZE_NO, 0, 0, src.w, src.h);
    assert_int_equal(img_apply_plan(&src, &p, &got), 0);
    assert_close(&got, &src, 0.0, 0, "no-op plan");
    assert_ptr_not_equal(got.px, src.px);
    img_free(&got);
    assert_int_equal(img_resize(&src, 0, 10, &got), -1);
    assert_null(got.px);
    img_free(&src);
}

/* The resampler has several code paths for the same arithmetic (vector rows for RGB and for one channel,
 * portable rows for other channel counts and for rows whose vector reads would pass the end of the
 * buffer). They must agree exactly: an RGB resample equals each channel resampled alone, and equals the RGB
 * part of an RGBX resample. Sizes include 1-3 pixel sides, odd tap counts and enlargements. */
static void test_resize_paths_agree(void **state)
{
    (void)state;
    static const uint32_t sizes[][4] = {{300, 200, 256, 171}, {97, 61, 13, 7},  {5, 3, 11, 2},   {1, 9, 4, 3},
                                        {2, 2, 1, 1},       {64, 40, 64, 17}, {33, 50, 100, 50}, {700, 3, 31, 5},
                                        {8, 200, 3, 199},   {640, 480, 32, 32}};
    uint32_t seed = 12345;
    for (size_t c = 0; c < sizeof sizes / sizeof sizes[0]; c++) {
        uint32_t sw = sizes[c][0], sh = sizes[c][1], dw = sizes[c][2], dh = sizes[c][3];
        size_t sn = (size_t)sw * sh, dn = (size_t)dw * dh;
        uint8_t *rgb = malloc(sn * 3), *rgbx = malloc(sn * 4), *plane = malloc(sn);
        uint8_t *o3 = malloc(dn * 3), *o4 = malloc(dn * 4), *o1 = malloc(dn);
        assert_non_null(rgb && rgbx && plane && o3 && o4 && o1);
        for (size_t i = 0; i < sn * 3; i++) {
            seed = seed * 1103515245u + 12345u;
            /* extremes often, so that the clamp at 0 and 255 is exercised */
            uint8_t v = (uint8_t)(seed >> 16);
            rgb[i] = (seed >> 8) % 5 == 0 ? (v & 1 ? 255 : 0) : v;
        }
        for (size_t i = 0; i < sn; i++) {
            memcpy(rgbx + 4 * i, rgb + 3 * i, 3);
            rgbx[4 * i + 3] = (uint8_t)i;
        }
        for (int f = 0; f < 2; f++) {
            resize_filter filt = f ? RESIZE_FILTER_LANCZOS : RESIZE_FILTER_BICUBIC;
            assert_int_equal(resize_plane(rgb, sw, sh, 3, o3, dw, dh, filt), 0);
            assert_int_equal(resize_plane(rgbx, sw, sh, 4, o4, dw, dh, filt), 0);
            for (size_t i = 0; i < dn; i++)
                if (memcmp(o3 + 3 * i, o4 + 4 * i, 3) != 0)
                    fail_msg("%ux%u -> %ux%u filter %d: RGB and RGBX differ at pixel %zu", sw, sh, dw, dh, f, i);
            for (int ch = 0; ch < 3; ch++) {
                for (size_t i = 0; i < sn; i++)
                    plane[i] = rgb[3 * i + (size_t)ch];
                assert_int_equal(resize_plane(plane, sw, sh, 1, o1, dw, dh, filt), 0);
                for (size_t i = 0; i < dn; i++)
                    if (o1[i] != o3[3 * i + (size_t)ch])
                        fail_msg("%ux%u -> %ux%u filter %d: channel %d alone differs at pixel %zu (%u vs %u)", sw,
                                 sh, dw, dh, f, ch, i, o1[i], o3[3 * i + (size_t)ch]);
            }
        }
        free(rgb);
        free(rgbx);
        free(plane);
        free(o3);
        free(o4);
        free(o1);
    }
}

/* Scales without SIMD IDCTs are rounded up: 1100x800 from 1600x1200 needs 6/8 and gets 8/8; 500x300 needs
 * 3/8 and gets 4/8; 5/8 is kept (test_dct_scaling). */
static void test_dct_scale_choice(void **state)
{
    (void)state;
    img_rgb im;
    assert_int_equal(decode_file(fx("big.jpg"), PIL_LIMIT, 1100, 800, &im), IMG_OK);
    assert_int_equal(im.w, 1600);
    assert_int_equal(im.h, 1200);
    img_free(&im);
    assert_int_equal(decode_file(fx("big.jpg"), PIL_LIMIT, 500, 300, &im), IMG_OK);
    assert_int_equal(im.w, 800);
    assert_int_equal(im.h, 600);
    img_free(&im);
    assert_int_equal(decode_file(fx("big.jpg"), PIL_LIMIT, 400, 300, &im), IMG_OK);
    assert_int_equal(im.w, 400);
    assert_int_equal(im.h, 300);
    img_free(&im);
}

static void test_crop(void **state)
{
    (void)state;
    img_rgb src, dst;
    assert_int_equal(img_alloc(&src, 7, 5), 0);
    for (uint32_t y = 0; y < 5; y++)
        for (uint32_t x = 0; x < 7; x++)
            for (int c = 0; c < 3; c++)
                src.px[(y * 7 + x) * 3 + c] = (uint8_t)(100 * c + 10 * y + x);
    assert_int_equal(img_crop(&src, 2, 1, 4, 3, &dst), 0);
    assert_int_equal(dst.w, 4);
    assert_int_equal(dst.h, 3);
    for (uint32_t y = 0; y < 3; y++)
        for (uint32_t x = 0; x < 4; x++)
            for (int c = 0; c < 3; c++)
                assert_int_equal(dst.px[(y * 4 + x) * 3 + c], 100 * c + 10 * (y + 1) + (x + 2));
    img_free(&dst);
    assert_int_equal(img_crop(&src, 0, 0, 7, 5, &dst), 0);
    assert_memory_equal(dst.px, src.px, 7 * 5 * 3);
    img_free(&dst);
    assert_int_equal(img_crop(&src, 4, 0, 4, 5, &dst), -1); /* one column past the edge */
    assert_null(dst.px);
    assert_true(strlen(lvd_errmsg()) > 0);
    assert_int_equal(img_crop(&src, 0, 0, 0, 5, &dst), -1);
    assert_int_equal(img_crop(&src, UINT32_MAX, 0, 2, 1, &dst), -1); /* x + w overflows 32 bits */
    img_free(&src);
}

/* ----------------------------------------------------------------------------------------------------------
 * Perceptual hash
 */

static uint64_t hash_file(const char *name)
{
    img_rgb im;
    img_status st = decode_file(fx("%s", name), PIL_LIMIT, 0, 0, &im);
    if (st != IMG_OK)
        fail_msg("%s: %s", name, lvd_errmsg());
    uint64_t h = phash_compute(&im);
    img_free(&im);
    return h;
}

static void test_phash(void **state)
{
    (void)state;
    assert_int_equal(phash_distance(0, 0), 0);
    assert_int_equal(phash_distance(0, UINT64_MAX), 64);
    assert_int_equal(phash_distance(0x8000000000000001ull, 1), 1);

    FILE *f = fopen(fx("ph_ref.txt"), "r");
    assert_non_null(f);
    char name[64];
    unsigned long long want;
    int n = 0, mismatches = 0;
    uint64_t png_hash[10];
    while (fscanf(f, "%63s %llx", name, &want) == 2) {
        uint64_t got = hash_file(name);
        int d = phash_distance(got, (uint64_t)want);
        if (d != 0) {
            printf("# %s: phash %016llx, reference %016llx (%d bits)\n", name, (unsigned long long)got, want, d);
            mismatches++;
        }
        int idx;
        if (sscanf(name, "ph_%d.png", &idx) == 1 && strstr(name, "q70") == NULL && idx >= 0 && idx < 10)
            png_hash[idx] = got;
        n++;
    }
    fclose(f);
    assert_int_equal(n, 20);
    assert_int_equal(mismatches, 0);

    int total = 0, pairs = 0;
    for (int i = 0; i < 10; i++) {
        char qname[32];
        snprintf(qname, sizeof qname, "ph_%d_q70.jpg", i);
        uint64_t q = hash_file(qname);
        int d = phash_distance(png_hash[i], q);
        if (d > 6)
            fail_msg("picture %d: JPEG q=70 re-encode is %d bits away", i, d);
        for (int j = i + 1; j < 10; j++) {
            total += phash_distance(png_hash[i], png_hash[j]);
            pairs++;
        }
    }
    double mean = (double)total / pairs;
    printf("# mean phash distance between unrelated pictures: %.1f bits\n", mean);
    assert_true(mean > 20.0);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s TESTS_SOURCE_DIR\n", argv[0]);
        return 2;
    }
    snprintf(g_script, sizeof g_script, "%s/unit/image_ref.py", argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sniff_real_files), cmocka_unit_test(test_sniff_crafted),
        cmocka_unit_test(test_sniff_unknown_and_short), cmocka_unit_test(test_probe),
        cmocka_unit_test(test_decode_jpeg), cmocka_unit_test(test_decode_png),
        cmocka_unit_test(test_decode_webp), cmocka_unit_test(test_exif_orientation),
        cmocka_unit_test(test_exif_hostile), cmocka_unit_test(test_dct_scaling),
        cmocka_unit_test(test_truncated), cmocka_unit_test(test_garbage_after_soi),
        cmocka_unit_test(test_bombs), cmocka_unit_test(test_mutations), cmocka_unit_test(test_encoders),
        cmocka_unit_test(test_resize_compute), cmocka_unit_test(test_resize_vs_pillow),
        cmocka_unit_test(test_resize_paths_agree), cmocka_unit_test(test_dct_scale_choice),
        cmocka_unit_test(test_crop), cmocka_unit_test(test_phash),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
