/* test_preprocess.c — the evaluation transform: torchvision's Resize/CenterCrop geometry (sizes and the
 * half-to-even rounding of the crop origin), crop placement on images that need no resampling, ImageNet
 * normalisation, and the resampling path against a direct resize_plane call. Expected values are worked
 * out by hand from torchvision's formulas in the comments, not taken from the code under test. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "image.h"
#include "preprocess.h"
#include "resize.h"

static void geom(uint32_t w, uint32_t h, uint32_t rs, uint32_t cr, uint32_t rw, uint32_t rh, uint32_t left,
                 uint32_t top)
{
    preprocess_geom g;
    assert_int_equal(preprocess_geometry(w, h, rs, cr, &g), 0);
    assert_int_equal(g.rw, rw);
    assert_int_equal(g.rh, rh);
    assert_int_equal(g.left, left);
    assert_int_equal(g.top, top);
    assert_int_equal(g.crop, cr);
}

static void test_geometry(void **state)
{
    (void)state;
    /* Square: 256 x 256, crop (256-224)/2 = 16. */
    geom(512, 512, 256, 224, 256, 256, 16, 16);
    /* Portrait 512 x 768: long = int(256 * 768 / 512) = 384; top = round(160 / 2) = 80. */
    geom(512, 768, 256, 224, 256, 384, 16, 80);
    /* Landscape 640 x 480: long = int(256 * 640 / 480) = int(341.33) = 341; left = round(117 / 2 = 58.5) = 58
     * (half to even). */
    geom(640, 480, 256, 224, 341, 256, 58, 16);
    /* 300 x 200: long = int(256 * 1.5) = 384; left = 80. */
    geom(300, 200, 256, 224, 384, 256, 80, 16);
    /* 200 x 303: long = int(256 * 303 / 200) = int(387.84) = 387 (truncated, not rounded); top =
     * round(163 / 2 = 81.5) = 82 (half to even goes up here). */
    geom(200, 303, 256, 224, 256, 387, 16, 82);
    /* Odd leftover on the short side: resize 225, crop 224: round(0.5) = 0. */
    geom(100, 100, 225, 224, 225, 225, 0, 0);
    /* resize 227: round(1.5) = 2. */
    geom(100, 100, 227, 224, 227, 227, 2, 2);
    /* crop == resize: no crop. */
    geom(28, 28, 224, 224, 224, 224, 0, 0);
}

static void test_geometry_errors(void **state)
{
    (void)state;
    preprocess_geom g;
    assert_int_equal(preprocess_geometry(100, 100, 200, 224, &g), -1);
    assert_non_null(strstr(lvd_errmsg(), "crop 224 is larger than resize 200"));
    assert_int_equal(preprocess_geometry(0, 100, 256, 224, &g), -1);
}

/* Image whose pixel (x, y) channel c is a known function, so crop placement can be read off the output. */
static void fill(img_rgb *im)
{
    for (uint32_t y = 0; y < im->h; y++)
        for (uint32_t x = 0; x < im->w; x++)
            for (int c = 0; c < 3; c++)
                im->px[((size_t)y * im->w + x) * 3 + c] = (uint8_t)((x * 7 + y * 13 + c * 50) & 255);
}

static void test_crop_and_normalise_without_resampling(void **state)
{
    (void)state;
    /* 256 x 301: the short side is already 256, long = int(256 * 301 / 256) = 301, so the resize is the
     * identity; top = round(77 / 2 = 38.5) = 38, left = 16. */
    img_rgb im;
    assert_int_equal(img_alloc(&im, 256, 301), 0);
    fill(&im);
    uint32_t crop = 224;
    float *out = malloc(sizeof(float) * 3 * crop * crop);
    assert_non_null(out);
    assert_int_equal(preprocess_image(&im, 256, crop, out, NULL, 0), 0);
    const double mean[3] = {0.485, 0.456, 0.406}, std[3] = {0.229, 0.224, 0.225};
    for (uint32_t c = 0; c < 3; c++)
        for (uint32_t y = 0; y < crop; y += 17)
            for (uint32_t x = 0; x < crop; x += 13) {
                uint32_t sx = x + 16, sy = y + 38;
                double v = (double)(((sx * 7 + sy * 13 + c * 50) & 255)) / 255.0;
                double want = (v - mean[c]) / std[c];
                assert_true(fabs((double)out[(size_t)c * crop * crop + (size_t)y * crop + x] - want) < 1e-5);
            }
    free(out);
    img_free(&im);
}

static void test_constant_image(void **state)
{
    (void)state;
    /* A constant image stays constant under any resampling: every output is (v/255 - mean) / std. */
    img_rgb im;
    assert_int_equal(img_alloc(&im, 97, 61), 0);
    for (size_t i = 0; i < (size_t)97 * 61; i++) {
        im.px[i * 3] = 200;
        im.px[i * 3 + 1] = 100;
        im.px[i * 3 + 2] = 0;
    }
    uint32_t crop = 56;
    float *out = malloc(sizeof(float) * 3 * crop * crop);
    assert_non_null(out);
    assert_int_equal(preprocess_image(&im, 64, crop, out, NULL, 0), 0);
    const double want[3] = {(200 / 255.0 - 0.485) / 0.229, (100 / 255.0 - 0.456) / 0.224, (0 - 0.406) / 0.225};
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < (size_t)crop * crop; i++)
            assert_true(fabs((double)out[(size_t)c * crop * crop + i] - want[c]) < 1e-5);
    free(out);
    img_free(&im);
}

static void test_resampled_window(void **state)
{
    (void)state;
    /* 120 x 90 -> resize 64: long = int(64 * 120 / 90) = 85, left = round(29 / 2 = 14.5) = 14, top = 4.
     * The output must be exactly that window of resize_plane's 85 x 64 bicubic result. */
    img_rgb im;
    assert_int_equal(img_alloc(&im, 120, 90), 0);
    fill(&im);
    uint8_t *ref = malloc(85 * 64 * 3);
    assert_non_null(ref);
    assert_int_equal(resize_plane(im.px, 120, 90, 3, ref, 85, 64, RESIZE_FILTER_BICUBIC), 0);
    uint32_t crop = 56;
    float *out = malloc(sizeof(float) * 3 * crop * crop);
    assert_non_null(out);
    uint8_t scratch[85 * 64 * 3];
    assert_int_equal(preprocess_scratch_bytes(120, 90, 64, crop), sizeof scratch);
    assert_int_equal(preprocess_image(&im, 64, crop, out, scratch, sizeof scratch), 0);
    const double mean[3] = {0.485, 0.456, 0.406}, std[3] = {0.229, 0.224, 0.225};
    for (uint32_t c = 0; c < 3; c++)
        for (uint32_t y = 0; y < crop; y++)
            for (uint32_t x = 0; x < crop; x++) {
                double v = ref[((size_t)(y + 4) * 85 + x + 14) * 3 + c] / 255.0;
                assert_true(fabs((double)out[(size_t)c * crop * crop + (size_t)y * crop + x] -
                                 (v - mean[c]) / std[c]) < 1e-5);
            }
    free(out);
    free(ref);
    img_free(&im);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_geometry),
        cmocka_unit_test(test_geometry_errors),
        cmocka_unit_test(test_crop_and_normalise_without_resampling),
        cmocka_unit_test(test_constant_image),
        cmocka_unit_test(test_resampled_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
