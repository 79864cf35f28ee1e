/* test_augment.c — the multi-crop augmentation (train/augment.h): configuration and probabilities, the
 * statistics of the parameter draws (and the box draws against torchvision's RandomResizedCrop.get_params),
 * determinism (seed, sample, epoch; call order and threads), each operation and whole crops against
 * torchvision / Pillow with the same parameters, and DINOv2's composed pipeline run with torch's generator,
 * whose recorded parameters the C chain must reproduce. References: tests/unit/train/augment_ref.py, run on
 * files this test writes into a scratch directory.
 *
 * Tolerances found (torchvision 0.14, Pillow 9.4): every operation but the blur is byte-exact (the colour
 * operations on all 2^24 colours), the float tensor bit-exact given the bytes; the blur leaves ~1e-5 of the
 * values one level away (torch's float32 convolution sums in its own order), allowed up to 1e-3.
 */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "scratch.h"

#include "err.h"
#include "train/augment.h"

static char g_dir[64];      /* scratch directory */
static char g_script[4096]; /* augment_ref.py */

/* ----------------------------------------------------------------------------------------------------------
 * Helpers
 */

/* A deterministic photo-like w x h RGB picture: smooth colour fields, hard-edged blocks of saturated and
 * extreme colours, and noise, so that every operation meets clipping, flat areas and edges. */
static uint8_t *make_picture(int32_t w, int32_t h, uint32_t seed)
{
    uint8_t *px = malloc((size_t)w * h * 3);
    assert_non_null(px);
    uint32_t s = seed * 2654435761u + 1;
    for (int32_t y = 0; y < h; y++)
        for (int32_t x = 0; x < w; x++) {
            uint8_t *p = px + ((size_t)y * w + x) * 3;
            s = s * 1664525u + 1013904223u;
            int noise = (int)(s >> 28) - 8;
            double fx = (double)x / w, fy = (double)y / h;
            int v[3] = {(int)(128 + 110 * sin(6.1 * fx + 2.0 * fy + seed)),
                        (int)(128 + 110 * cos(3.3 * fy - 4.0 * fx)), (int)(255 * fx * fy)};
            int block = ((x * 8) / w + (y * 8) / h * 8) % 11;
            if (block == 3) { /* pure colours and black / white */
                static const uint8_t pure[8][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {255, 255, 0},
                                                   {0, 255, 255}, {255, 0, 255}, {0, 0, 0}, {255, 255, 255}};
                const uint8_t *q = pure[((x * 32) / w) % 8];
                v[0] = q[0], v[1] = q[1], v[2] = q[2];
                noise = 0;
            }
            for (int c = 0; c < 3; c++) {
                int t = v[c] + noise;
                p[c] = (uint8_t)(t < 0 ? 0 : t > 255 ? 255 : t);
            }
        }
    return px;
}

static void write_raw(const char *name, const uint8_t *px, int32_t w, int32_t h)
{
    char path[512];
    scratch_join(path, sizeof path, g_dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint32_t hdr[2] = {(uint32_t)w, (uint32_t)h}; /* little-endian host (x86-64, aarch64) */
    assert_int_equal(fwrite(hdr, 4, 2, f), 2);
    assert_int_equal(fwrite(px, 1, (size_t)w * h * 3, f), (size_t)w * h * 3);
    assert_int_equal(fclose(f), 0);
}

static void write_f32(const char *name, const float *v, size_t n)
{
    char path[512];
    scratch_join(path, sizeof path, g_dir, name);
    scratch_spit(path, v, n * sizeof(float));
}

/* ----------------------------------------------------------------------------------------------------------
 * Configuration and probabilities
 */

static void test_config(void **state)
{
    (void)state;
    aug_config c;
    aug_config_default(&c);
    assert_int_equal(c.global_size, 224);
    assert_int_equal(c.local_size, 96);
    assert_int_equal(c.n_local, 8);
    assert_true(c.global_scale[0] == 0.32 && c.global_scale[1] == 1.0);
    assert_true(c.local_scale[0] == 0.05 && c.local_scale[1] == 0.32);
    assert_true(c.jitter[0] == 0.4 && c.jitter[1] == 0.4 && c.jitter[2] == 0.2 && c.jitter[3] == 0.1);
    assert_int_equal(c.paper_probabilities, 0);
    assert_int_equal(aug_config_check(&c), 0);

    /* the released code's effective blur probabilities by default, the paper's on request */
    static const double released[3] = {0.0, 0.9, 0.5}, paper[3] = {1.0, 0.1, 0.5}, sol[3] = {0.0, 0.2, 0.0};
    for (int k = 0; k < 3; k++) {
        aug_probs p = aug_crop_probs(&c, (aug_kind)k);
        assert_true(p.blur == released[k] && p.solarize == sol[k]);
        assert_true(p.flip == 0.5 && p.jitter == 0.8 && p.gray == 0.2);
    }
    c.paper_probabilities = 1;
    for (int k = 0; k < 3; k++) {
        aug_probs p = aug_crop_probs(&c, (aug_kind)k);
        assert_true(p.blur == paper[k] && p.solarize == sol[k]);
    }

    aug_config bad = c;
    bad.n_local = AUG_MAX_LOCAL + 1;
    assert_int_equal(aug_config_check(&bad), -1);
    assert_non_null(strstr(lvd_errmsg(), "local crops"));
    bad = c;
    bad.global_scale[0] = 0.0;
    assert_int_equal(aug_config_check(&bad), -1);
    bad = c;
    bad.local_scale[1] = 1.5;
    assert_int_equal(aug_config_check(&bad), -1);
    bad = c;
    bad.global_size = 4;
    assert_int_equal(aug_config_check(&bad), -1);
    bad = c;
    bad.jitter[3] = 0.6;
    assert_int_equal(aug_config_check(&bad), -1);
    bad = c;
    bad.jitter[0] = NAN;
    assert_int_equal(aug_config_check(&bad), -1);
    aug_params ap;
    assert_int_equal(aug_draw(&bad, 1, 0, 0, 100, 100, &ap), -1);
    assert_int_equal(aug_draw(&c, 1, 0, 0, 0, 100, &ap), -1);
}

/* ----------------------------------------------------------------------------------------------------------
 * Draw statistics
 */

/* |count - n p| within 5 binomial standard deviations (exact when p is 0 or 1). */
static void assert_rate(const char *what, long count, long n, double p)
{
    double mean = n * p, sd = sqrt(n * p * (1.0 - p));
    printf("# %-28s %6ld / %ld = %.4f (p %.2f)\n", what, count, n, (double)count / n, p);
    if (fabs((double)count - mean) > 5.0 * sd + 1e-9)
        fail_msg("%s: %ld of %ld, expected %.1f +- %.1f", what, count, n, mean, 5.0 * sd);
}

static void check_rates(const aug_config *c, uint64_t seed, int32_t sw, int32_t sh, long samples)
{
    static const char *kinds[3] = {"global1", "global2", "local"};
    long n[3] = {0}, flip[3] = {0}, jit[3] = {0}, gray[3] = {0}, blur[3] = {0}, sol[3] = {0};
    long pos[4][4] = {{0}}, njit = 0, fallback = 0;
    double sum_area[3] = {0};
    for (long s = 0; s < samples; s++) {
        aug_params ap;
        assert_int_equal(aug_draw(c, seed, (uint64_t)s, 3, sw, sh, &ap), 0);
        assert_int_equal(ap.n_crops, 2 + c->n_local);
        for (int k = 0; k < ap.n_crops; k++) {
            const aug_crop_params *p = &ap.crop[k];
            int kind = k < 2 ? k : 2;
            const double *scale = k < 2 ? c->global_scale : c->local_scale;
            assert_int_equal(p->size, k < 2 ? c->global_size : c->local_size);
            /* the box lies inside the source */
            assert_true(p->top >= 0 && p->left >= 0 && p->height >= 1 && p->width >= 1);
            assert_true(p->top + p->height <= sh && p->left + p->width <= sw);
            /* a box from the tries has its area fraction in the scale range and its aspect in (3/4, 4/3),
             * up to the rounding of both sides to integers (half a pixel each) */
            double a = (double)p->width * p->height / ((double)sw * sh);
            double amin = (p->width - 0.5) * (p->height - 0.5) / ((double)sw * sh);
            double amax = (p->width + 0.5) * (p->height + 0.5) / ((double)sw * sh);
            double rmin = (p->width - 0.5) / (p->height + 0.5), rmax = (p->width + 0.5) / (p->height - 0.5);
            int in_range = amax >= scale[0] && amin <= scale[1] && rmax >= 0.75 && rmin <= 4.0 / 3.0;
            if (!in_range) {
                /* only the fallback (the centred whole image, clamped to the ratio range) is outside */
                fallback++;
                assert_int_equal(p->top, (sh - p->height) / 2);
                assert_int_equal(p->left, (sw - p->width) / 2);
            }
            sum_area[kind] += a;
            n[kind]++;
            flip[kind] += p->flip;
            gray[kind] += p->gray;
            blur[kind] += p->blur;
            sol[kind] += p->solarize;
            if (p->n_ops) {
                jit[kind]++;
                njit++;
                assert_int_equal(p->n_ops, 4);
                int seen = 0;
                for (int i = 0; i < 4; i++) {
                    assert_true(p->ops[i] < 4);
                    seen |= 1 << p->ops[i];
                    pos[p->ops[i]][i]++;
                }
                assert_int_equal(seen, 15);
                assert_true(p->brightness >= 0.6f && p->brightness <= 1.4f);
                assert_true(p->contrast >= 0.6f && p->contrast <= 1.4f);
                assert_true(p->saturation >= 0.8f && p->saturation <= 1.2f);
                assert_true(p->hue >= -0.1f && p->hue <= 0.1f);
            }
            if (p->blur)
                assert_true(p->sigma >= 0.1f && p->sigma <= 2.0f);
        }
    }
    printf("# %dx%d, %s probabilities: %ld fallback boxes\n", (int)sw, (int)sh,
           c->paper_probabilities ? "paper" : "released", fallback);
    for (int k = 0; k < 3; k++) {
        aug_probs pr = aug_crop_probs(c, (aug_kind)k);
        char what[64];
        snprintf(what, sizeof what, "%s flip", kinds[k]);
        assert_rate(what, flip[k], n[k], pr.flip);
        snprintf(what, sizeof what, "%s jitter", kinds[k]);
        assert_rate(what, jit[k], n[k], pr.jitter);
        snprintf(what, sizeof what, "%s grayscale", kinds[k]);
        assert_rate(what, gray[k], n[k], pr.gray);
        snprintf(what, sizeof what, "%s blur", kinds[k]);
        assert_rate(what, blur[k], n[k], pr.blur);
        snprintf(what, sizeof what, "%s solarize", kinds[k]);
        assert_rate(what, sol[k], n[k], pr.solarize);
        /* Local boxes (area <= 0.32) always fit a square source at the first try, so their area fraction
         * is uniform on the scale range; large global boxes with a lopsided aspect do not fit and are drawn
         * again, which pulls the global mean below the middle. */
        const double *scale = k < 2 ? c->global_scale : c->local_scale;
        double mid = 0.5 * (scale[0] + scale[1]), mean = sum_area[k] / n[k];
        printf("# %-28s %.4f (middle of the range: %.4f)\n", k == 2 ? "local mean area" : "global mean area",
               mean, mid);
        if (sw == sh && k == 2)
            assert_true(fabs(mean - mid) < 0.005);
        assert_true(mean > scale[0] && mean < mid + 0.005);
    }
    /* a uniform permutation puts each adjustment in each position a quarter of the time */
    long worst = 0;
    for (int op = 0; op < 4; op++)
        for (int i = 0; i < 4; i++) {
            long dev = labs(pos[op][i] - njit / 4);
            worst = dev > worst ? dev : worst;
            if ((double)dev > 5.0 * sqrt(njit * 0.25 * 0.75) + 1.0)
                fail_msg("adjustment %d at position %d: %ld of %ld jittered crops", op, i, pos[op][i], njit);
        }
    printf("# %-28s %ld jittered crops, largest deviation from a quarter %ld\n", "jitter order", njit, worst);
    if (sw == sh)
        assert_true(fallback < samples / 100);
}

static void test_draw_statistics(void **state)
{
    (void)state;
    aug_config c;
    aug_config_default(&c);
    check_rates(&c, 42, 512, 512, 10000);
    c.paper_probabilities = 1;
    check_rates(&c, 43, 640, 427, 10000); /* another seed: independent draws */
}

/* A 100 x 1000 source admits no global box of area >= 0.32 with aspect >= 3/4, so every global crop is the
 * fallback: the full width, height round(100 / (3/4)) = 133, centred. A 1000 x 100 one: height 100, width
 * round(100 * 4/3) = 133. */
static void test_draw_fallback(void **state)
{
    (void)state;
    aug_config c;
    aug_config_default(&c);
    for (uint64_t s = 0; s < 200; s++) {
        aug_params ap;
        assert_int_equal(aug_draw(&c, 7, s, 0, 100, 1000, &ap), 0);
        for (int k = 0; k < 2; k++) {
            assert_int_equal(ap.crop[k].width, 100);
            assert_int_equal(ap.crop[k].height, 133);
            assert_int_equal(ap.crop[k].left, 0);
            assert_int_equal(ap.crop[k].top, (1000 - 133) / 2);
        }
        assert_int_equal(aug_draw(&c, 7, s, 0, 1000, 100, &ap), 0);
        for (int k = 0; k < 2; k++) {
            assert_int_equal(ap.crop[k].width, 133);
            assert_int_equal(ap.crop[k].height, 100);
            assert_int_equal(ap.crop[k].top, 0);
            assert_int_equal(ap.crop[k].left, (1000 - 133) / 2);
        }
    }
    /* jitter strengths of 0 are skipped (torchvision's None), the rest keep their drawn order */
    c.jitter[1] = 0.0;
    c.jitter[3] = 0.0;
    long seen = 0;
    for (uint64_t s = 0; s < 100; s++) {
        aug_params ap;
        assert_int_equal(aug_draw(&c, 7, s, 0, 300, 200, &ap), 0);
        for (int k = 0; k < ap.n_crops; k++) {
            const aug_crop_params *p = &ap.crop[k];
            if (!p->n_ops)
                continue;
            seen++;
            assert_int_equal(p->n_ops, 2);
            for (int i = 0; i < 2; i++)
                assert_true(p->ops[i] == AUG_BRIGHTNESS || p->ops[i] == AUG_SATURATION);
            assert_true(p->ops[0] != p->ops[1]);
        }
    }
    assert_true(seen > 500);
}

/* The box distribution against torchvision's own RandomResizedCrop.get_params (augment_ref.py boxes: KS tests
 * on area, aspect and centre, and the fallback share): a square source, a tall one where most large boxes are
 * drawn again or fall back, and a landscape one, each with the global and the local scales. */
static void test_boxes_vs_torchvision(void **state)
{
    (void)state;
    static const int32_t src[3][2] = {{512, 512}, {200, 700}, {640, 427}};
    aug_config c;
    aug_config_default(&c);
    c.n_local = 1;
    char path[512];
    scratch_join(path, sizeof path, g_dir, "boxes.txt");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 3; i++)
        for (uint64_t s = 0; s < 10000; s++) {
            aug_params ap;
            assert_int_equal(aug_draw(&c, 11, s, 0, src[i][0], src[i][1], &ap), 0);
            /* crop 0 (global) and crop 2 (local): crop 1 is another draw of the same distribution */
            for (int k = 0; k < 3; k += 2) {
                const aug_crop_params *p = &ap.crop[k];
                const double *sc = k == 0 ? c.global_scale : c.local_scale;
                fprintf(f, "%d %d %g %g %d %d %d %d\n", (int)src[i][0], (int)src[i][1], sc[0], sc[1], (int)p->top,
                        (int)p->left, (int)p->height, (int)p->width);
            }
        }
    assert_int_equal(fclose(f), 0);
    char args[600], out[4096];
    snprintf(args, sizeof args, "boxes '%s'", path);
    scratch_python(g_script, args, out, sizeof out);
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
        printf("# %s\n", line);
}

/* ----------------------------------------------------------------------------------------------------------
 * Determinism
 */

#define DET_W 203
#define DET_H 151
#define DET_SAMPLES 12

typedef struct det_job {
    const aug_config *c;
    const uint8_t *px;
    float *global, *local; /* DET_SAMPLES of each sample's crops */
    int first, step;       /* samples first, first + step, ... in descending order */
    int rc;
} det_job;

static size_t det_gsz(const aug_config *c)
{
    return (size_t)2 * 3 * c->global_size * c->global_size;
}

static size_t det_lsz(const aug_config *c)
{
    return (size_t)c->n_local * 3 * c->local_size * c->local_size;
}

static void *det_worker(void *arg)
{
    det_job *j = arg;
    size_t cap = aug_scratch_bytes(j->c, DET_W, DET_H);
    uint8_t *scratch = malloc(cap);
    j->rc = scratch ? 0 : -1;
    int last = j->first;
    while (last + j->step < DET_SAMPLES)
        last += j->step;
    for (int s = last; s >= j->first && j->rc == 0; s -= j->step)
        j->rc = aug_sample(j->c, 99, (uint64_t)s, 5, j->px, DET_W, DET_H, j->global + s * det_gsz(j->c),
                           j->local + s * det_lsz(j->c), NULL, scratch, cap);
    free(scratch);
    return NULL;
}

static void test_determinism(void **state)
{
    (void)state;
    aug_config c;
    aug_config_default(&c);
    c.global_size = 64; /* small crops keep the test quick; the code path is the same */
    c.local_size = 32;
    uint8_t *px = make_picture(DET_W, DET_H, 3);

    /* the same key gives the same parameters, any change of seed, sample or epoch other ones */
    aug_params a, b;
    assert_int_equal(aug_draw(&c, 99, 4, 5, DET_W, DET_H, &a), 0);
    assert_int_equal(aug_draw(&c, 99, 4, 5, DET_W, DET_H, &b), 0);
    assert_memory_equal(&a, &b, sizeof a);
    static const uint64_t keys[3][3] = {{100, 4, 5}, {99, 5, 5}, {99, 4, 6}};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(aug_draw(&c, keys[i][0], keys[i][1], keys[i][2], DET_W, DET_H, &b), 0);
        int same_boxes = 0;
        for (int k = 0; k < a.n_crops; k++)
            same_boxes += a.crop[k].top == b.crop[k].top && a.crop[k].left == b.crop[k].left &&
                          a.crop[k].width == b.crop[k].width;
        assert_true(same_boxes < 3);
        assert_memory_not_equal(&a, &b, sizeof a);
    }
    /* crops of one sample differ from each other */
    for (int k = 3; k < a.n_crops; k++)
        assert_memory_not_equal(&a.crop[2], &a.crop[k], sizeof a.crop[2]);

    /* one thread in ascending order vs two threads taking alternate samples in descending order */
    size_t gsz = det_gsz(&c), lsz = det_lsz(&c);
    float *g1 = malloc(DET_SAMPLES * gsz * sizeof(float)), *l1 = malloc(DET_SAMPLES * lsz * sizeof(float));
    float *g2 = malloc(DET_SAMPLES * gsz * sizeof(float)), *l2 = malloc(DET_SAMPLES * lsz * sizeof(float));
    assert_true(g1 && l1 && g2 && l2);
    for (int s = 0; s < DET_SAMPLES; s++) /* no caller scratch: the allocating path */
        assert_int_equal(aug_sample(&c, 99, (uint64_t)s, 5, px, DET_W, DET_H, g1 + s * gsz, l1 + s * lsz, NULL,
                                    NULL, 0), 0);
    det_job jobs[2] = {{&c, px, g2, l2, 0, 2, 0}, {&c, px, g2, l2, 1, 2, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, det_worker, &jobs[i]), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(jobs[i].rc, 0);
    }
    assert_memory_equal(g1, g2, DET_SAMPLES * gsz * sizeof(float));
    assert_memory_equal(l1, l2, DET_SAMPLES * lsz * sizeof(float));
    /* and the samples really differ */
    assert_memory_not_equal(g1, g1 + gsz, gsz * sizeof(float));

    /* aug_sample is aug_draw + aug_apply_crop per crop */
    aug_params ap;
    assert_int_equal(aug_sample(&c, 99, 7, 5, px, DET_W, DET_H, g2, l2, &ap, NULL, 0), 0);
    assert_int_equal(aug_draw(&c, 99, 7, 5, DET_W, DET_H, &b), 0);
    assert_memory_equal(&ap, &b, sizeof ap);
    float *one = malloc(gsz * sizeof(float));
    assert_non_null(one);
    assert_int_equal(aug_apply_crop(px, DET_W, DET_H, &ap.crop[1], one, NULL, 0), 0);
    assert_memory_equal(one, g2 + gsz / 2, gsz / 2 * sizeof(float));
    /* a scratch buffer below what the crop needs is refused */
    uint8_t small[16];
    assert_int_equal(aug_apply_crop(px, DET_W, DET_H, &ap.crop[1], one, small, sizeof small), -1);
    assert_non_null(strstr(lvd_errmsg(), "scratch"));
    free(one);
    free(g1);
    free(l1);
    free(g2);
    free(l2);
    free(px);
}

/* ----------------------------------------------------------------------------------------------------------
 * Against torchvision
 */

static FILE *g_ops, *g_chain;

/* Writes `in` (w x h) as IN, applies op to a copy, writes OUT, adds the ops.txt line. param_c is what the C
 * side applies, param_txt what the line states (they differ only in negative controls). */
static void op_case(const char *name, const char *op, double param_c, const char *param_txt, const uint8_t *in,
                    int32_t w, int32_t h, const char *in_name)
{
    size_t n = (size_t)w * h;
    uint8_t *out = malloc(n * 3);
    float *tmp = malloc(n * 3 * sizeof(float));
    assert_true(out && tmp);
    memcpy(out, in, n * 3);
    char out_name[128];
    snprintf(out_name, sizeof out_name, "op_%s.raw", name[0] == '!' ? name + 1 : name);
    if (!strcmp(op, "flip"))
        aug_flip(out, w, h);
    else if (!strcmp(op, "brightness"))
        aug_brightness(out, n, (float)param_c);
    else if (!strcmp(op, "contrast"))
        aug_contrast(out, n, (float)param_c);
    else if (!strcmp(op, "saturation"))
        aug_saturation(out, n, (float)param_c);
    else if (!strcmp(op, "hue"))
        aug_hue(out, n, (float)param_c);
    else if (!strcmp(op, "grayscale"))
        aug_grayscale(out, n);
    else if (!strcmp(op, "blur"))
        assert_int_equal(aug_blur(out, w, h, (float)param_c, tmp), 0);
    else if (!strcmp(op, "solarize"))
        aug_solarize(out, n);
    else if (!strcmp(op, "to_tensor")) {
        aug_to_tensor(in, w, h, tmp);
        snprintf(out_name, sizeof out_name, "op_%s.f32", name);
        write_f32(out_name, tmp, n * 3);
    } else
        fail_msg("unknown op %s", op);
    if (strcmp(op, "to_tensor"))
        write_raw(out_name, out, w, h);
    fprintf(g_ops, "%s %s %s %s %s\n", name, op, param_txt, in_name, out_name);
    free(out);
    free(tmp);
}

/* A float32 factor as text that reads back as the same float32 (and so the same value Pillow gets). */
static const char *ftxt(float f)
{
    static char buf[8][32];
    static int slot;
    slot = (slot + 1) % 8;
    snprintf(buf[slot], sizeof buf[slot], "%.9g", (double)f);
    return buf[slot];
}

static void crop_case(const char *name, const uint8_t *src, int32_t sw, int32_t sh, const char *src_name,
                      int32_t top, int32_t left, int32_t ch, int32_t cw, int32_t size)
{
    uint8_t *out = malloc((size_t)size * size * 3), *box = malloc((size_t)ch * cw * 3);
    assert_true(out && box);
    assert_int_equal(aug_resized_crop(src, sw, sh, top, left, ch, cw, size, out, box), 0);
    char out_name[128], param[96];
    snprintf(out_name, sizeof out_name, "op_%s.raw", name);
    write_raw(out_name, out, size, size);
    snprintf(param, sizeof param, "%d,%d,%d,%d,%d", (int)top, (int)left, (int)ch, (int)cw, (int)size);
    fprintf(g_ops, "%s resized_crop %s %s %s\n", name, param, src_name, out_name);
    free(out);
    free(box);
}

/* Applies p to src and writes the chain.txt line; stated (if not NULL) is what the line claims instead. */
static void chain_case(const char *name, const uint8_t *src, int32_t sw, int32_t sh, const char *src_name,
                       const aug_crop_params *p, const aug_crop_params *stated)
{
    size_t n = (size_t)p->size * p->size;
    uint8_t *u8 = malloc(n * 3);
    float *ten = malloc(n * 3 * sizeof(float));
    size_t cap = aug_crop_scratch_bytes(p, sw);
    uint8_t *scratch = malloc(cap);
    assert_true(u8 && ten && scratch);
    assert_int_equal(aug_apply_crop_u8(src, sw, sh, p, u8, ten, scratch, cap), 0);
    assert_int_equal(aug_apply_crop(src, sw, sh, p, ten, scratch, cap), 0);
    const char *base = name[0] == '!' ? name + 1 : name;
    char u8_name[128], f_name[128];
    snprintf(u8_name, sizeof u8_name, "chain_%s.raw", base);
    snprintf(f_name, sizeof f_name, "chain_%s.f32", base);
    write_raw(u8_name, u8, p->size, p->size);
    write_f32(f_name, ten, n * 3);
    const aug_crop_params *q = stated ? stated : p;
    char ops[8] = "-";
    for (int i = 0; i < q->n_ops; i++)
        ops[i] = (char)('0' + q->ops[i]);
    if (q->n_ops)
        ops[q->n_ops] = '\0';
    fprintf(g_chain, "%s %s %d %d %d %d %d %d %s %s %s %s %s %d %d %s %d %s %s\n", name, src_name, (int)q->size,
            (int)q->top, (int)q->left, (int)q->height, (int)q->width, q->flip, ops, ftxt(q->brightness),
            ftxt(q->contrast), ftxt(q->saturation), ftxt(q->hue), q->gray, q->blur, ftxt(q->sigma), q->solarize,
            u8_name, f_name);
    free(u8);
    free(ten);
    free(scratch);
}

static void test_vs_torchvision(void **state)
{
    (void)state;
    char path[512];
    scratch_join(path, sizeof path, g_dir, "ops.txt");
    assert_non_null(g_ops = fopen(path, "w"));
    scratch_join(path, sizeof path, g_dir, "chain.txt");
    assert_non_null(g_chain = fopen(path, "w"));

    const int32_t W = 320, H = 240;
    uint8_t *photo = make_picture(W, H, 1);
    write_raw("photo.raw", photo, W, H);
    const int32_t OW = 157, OH = 211; /* odd sizes, portrait */
    uint8_t *odd = make_picture(OW, OH, 2);
    write_raw("odd.raw", odd, OW, OH);
    /* every 24-bit colour once (4096 x 4096): the colour operations are functions of the pixel (and, for
     * contrast, of the image mean), so this checks them exhaustively */
    const int32_t AW = 4096, AH = 4096;
    uint8_t *all = malloc((size_t)AW * AH * 3);
    assert_non_null(all);
    for (uint32_t i = 0; i < (uint32_t)AW * AH; i++) {
        all[3 * i] = (uint8_t)(i >> 16);
        all[3 * i + 1] = (uint8_t)(i >> 8);
        all[3 * i + 2] = (uint8_t)i;
    }
    write_raw("all.raw", all, AW, AH);

    /* RandomResizedCrop's crop + bicubic resize: shrinking, enlarging (a small local box), full-width boxes
     * (no copy), a box of the output size (no resampling), thin boxes */
    crop_case("rc_down", photo, W, H, "photo.raw", 10, 20, 200, 260, 224);
    crop_case("rc_up", photo, W, H, "photo.raw", 100, 150, 40, 31, 96);
    crop_case("rc_fullw", photo, W, H, "photo.raw", 5, 0, 230, 320, 224);
    crop_case("rc_whole", odd, OW, OH, "odd.raw", 0, 0, OH, OW, 96);
    crop_case("rc_same", photo, W, H, "photo.raw", 7, 9, 96, 96, 96);
    crop_case("rc_thin", odd, OW, OH, "odd.raw", 3, 150, 200, 7, 96);
    crop_case("rc_pixel", photo, W, H, "photo.raw", 239, 319, 1, 1, 8);

    op_case("flip", "flip", 0, "-", odd, OW, OH, "odd.raw");
    static const float bc[] = {0.6f, 0.8731f, 1.0f, 1.2345f, 1.4f};
    for (size_t i = 0; i < sizeof bc / sizeof bc[0]; i++) {
        char nm[64];
        snprintf(nm, sizeof nm, "bright%zu", i);
        op_case(nm, "brightness", bc[i], ftxt(bc[i]), photo, W, H, "photo.raw");
        snprintf(nm, sizeof nm, "contrast%zu", i);
        op_case(nm, "contrast", bc[i], ftxt(bc[i]), photo, W, H, "photo.raw");
        snprintf(nm, sizeof nm, "sat%zu", i);
        op_case(nm, "saturation", bc[i], ftxt(bc[i]), odd, OW, OH, "odd.raw");
    }
    static const float hues[] = {-0.5f, -0.1f, -0.0371f, 0.001f, 0.05f, 0.1f, 0.5f};
    for (size_t i = 0; i < sizeof hues / sizeof hues[0]; i++) {
        char nm[64];
        snprintf(nm, sizeof nm, "hue%zu", i);
        op_case(nm, "hue", hues[i], ftxt(hues[i]), photo, W, H, "photo.raw");
    }
    op_case("all_hue_neg", "hue", -0.0713f, ftxt(-0.0713f), all, AW, AH, "all.raw");
    op_case("all_hue_pos", "hue", 0.0999f, ftxt(0.0999f), all, AW, AH, "all.raw");
    op_case("all_bright", "brightness", 1.3172f, ftxt(1.3172f), all, AW, AH, "all.raw");
    op_case("all_bright_lo", "brightness", 0.6543f, ftxt(0.6543f), all, AW, AH, "all.raw");
    op_case("all_contrast", "contrast", 0.7011f, ftxt(0.7011f), all, AW, AH, "all.raw");
    op_case("all_sat", "saturation", 1.1573f, ftxt(1.1573f), all, AW, AH, "all.raw");
    op_case("all_sat_lo", "saturation", 0.8123f, ftxt(0.8123f), all, AW, AH, "all.raw");
    op_case("all_gray", "grayscale", 0, "-", all, AW, AH, "all.raw");
    op_case("all_solarize", "solarize", 0, "-", all, AW, AH, "all.raw");
    static const float sigmas[] = {0.1f, 0.5f, 1.3731f, 2.0f};
    for (size_t i = 0; i < sizeof sigmas / sizeof sigmas[0]; i++) {
        char nm[64];
        snprintf(nm, sizeof nm, "blur%zu", i);
        op_case(nm, "blur", sigmas[i], ftxt(sigmas[i]), photo, W, H, "photo.raw");
        snprintf(nm, sizeof nm, "blur_odd%zu", i);
        op_case(nm, "blur", sigmas[i], ftxt(sigmas[i]), odd, OW, OH, "odd.raw");
    }
    op_case("tensor", "to_tensor", 0, "-", odd, OW, OH, "odd.raw");
    /* negative controls: the oracle must notice a factor off by 0.01 and a blur with another sigma */
    op_case("!neg_bright", "brightness", 1.3f, ftxt(1.31f), photo, W, H, "photo.raw");
    op_case("!neg_blur", "blur", 1.0f, ftxt(1.1f), photo, W, H, "photo.raw");

    /* whole crops: drawn parameters of a few samples of both sources, both probability settings */
    aug_config c;
    aug_config_default(&c);
    int chains = 0, with_blur = 0, with_jitter = 0, with_sol = 0, with_gray = 0;
    for (int paper = 0; paper < 2; paper++) {
        c.paper_probabilities = paper;
        for (uint64_t s = 0; s < 3; s++) {
            int use_odd = (int)(s & 1);
            aug_params ap;
            assert_int_equal(aug_draw(&c, 2024, s, (uint64_t)paper, use_odd ? OW : W, use_odd ? OH : H, &ap), 0);
            for (int k = 0; k < ap.n_crops; k += (k < 2 ? 1 : 3)) {
                char nm[64];
                snprintf(nm, sizeof nm, "p%d_s%d_c%d", paper, (int)s, k);
                chain_case(nm, use_odd ? odd : photo, use_odd ? OW : W, use_odd ? OH : H,
                           use_odd ? "odd.raw" : "photo.raw", &ap.crop[k], NULL);
                chains++;
                with_blur += ap.crop[k].blur;
                with_jitter += ap.crop[k].n_ops > 0;
                with_sol += ap.crop[k].solarize;
                with_gray += ap.crop[k].gray;
            }
        }
    }
    /* every operation at once, in two orders, on both kinds of crop */
    aug_params ap;
    assert_int_equal(aug_draw(&c, 5, 5, 5, W, H, &ap), 0);
    static const uint8_t orders[2][4] = {{3, 2, 1, 0}, {1, 3, 0, 2}};
    for (int v = 0; v < 2; v++) {
        aug_crop_params p = ap.crop[v == 0 ? 1 : 2];
        p.flip = 1;
        p.n_ops = 4;
        memcpy(p.ops, orders[v], 4);
        p.brightness = 1.27f;
        p.contrast = 0.71f;
        p.saturation = 1.13f;
        p.hue = -0.083f;
        p.gray = (uint8_t)v;
        p.blur = 1;
        p.sigma = 0.77f;
        p.solarize = 1;
        char nm[64];
        snprintf(nm, sizeof nm, "everything%d", v);
        chain_case(nm, photo, W, H, "photo.raw", &p, NULL);
        p.blur = 0;
        snprintf(nm, sizeof nm, "everything_noblur%d", v);
        chain_case(nm, photo, W, H, "photo.raw", &p, NULL);
        if (v == 0) { /* negative control: the line swaps two adjustments */
            aug_crop_params q = p;
            q.ops[0] = p.ops[1];
            q.ops[1] = p.ops[0];
            chain_case("!neg_order", photo, W, H, "photo.raw", &p, &q);
        }
    }
    printf("# %d drawn crops: %d blurred, %d jittered, %d grayscale, %d solarized\n", chains, with_blur, with_jitter,
           with_gray, with_sol);
    assert_true(with_blur > 0 && with_jitter > 0);
    assert_int_equal(fclose(g_ops), 0);
    assert_int_equal(fclose(g_chain), 0);

    char args[600], out[4096];
    snprintf(args, sizeof args, "check '%s'", g_dir);
    scratch_python(g_script, args, out, sizeof out);
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
        printf("# %s\n", line);
    free(all);
    free(photo);
    free(odd);
}

/* DINOv2's pipeline itself (augment_ref.py dino: torchvision's transform classes composed as
 * augmentations.py does, run with torch's generator, their parameters recorded): the C chain with the recorded
 * parameters must give the same tensors; and the pipeline's blur / solarize rates per crop kind must be the
 * probabilities aug_crop_probs states, for the released code and for the paper. */
static void test_vs_dinov2_pipeline(void **state)
{
    (void)state;
    const int32_t W = 320, H = 240;
    uint8_t *photo = make_picture(W, H, 4);
    write_raw("src.raw", photo, W, H);
    char args[600], out[4096], path[512];
    snprintf(args, sizeof args, "dino '%s'", g_dir);
    scratch_python(g_script, args, out, sizeof out);

    scratch_join(path, sizeof path, g_dir, "dino.txt");
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char line[1024];
    int crops = 0, blurred = 0, jittered = 0;
    long off_one = 0, values = 0;
    double worst_exact = 0.0;
    while (fgets(line, sizeof line, f)) {
        char name[64], src[64], ops[8], u8n[64], fn[80];
        int size, top, left, height, width, flip, gray, blur, sol;
        double b, c, sat, hue, sigma;
        assert_int_equal(sscanf(line, "%63s %63s %d %d %d %d %d %d %7s %lf %lf %lf %lf %d %d %lf %d %63s %79s", name,
                                src, &size, &top, &left, &height, &width, &flip, ops, &b, &c, &sat, &hue, &gray, &blur,
                                &sigma, &sol, u8n, fn), 19);
        aug_crop_params p = {0};
        p.size = size, p.top = top, p.left = left, p.height = height, p.width = width, p.flip = (uint8_t)flip;
        if (strcmp(ops, "-"))
            for (const char *o = ops; *o && p.n_ops < 4; o++)
                p.ops[p.n_ops++] = (uint8_t)(*o - '0');
        p.brightness = (float)b, p.contrast = (float)c, p.saturation = (float)sat, p.hue = (float)hue;
        p.gray = (uint8_t)gray, p.blur = (uint8_t)blur, p.sigma = (float)sigma, p.solarize = (uint8_t)sol;
        size_t n = (size_t)3 * size * size, len;
        float *got = malloc(n * sizeof(float));
        assert_non_null(got);
        assert_int_equal(aug_apply_crop(photo, W, H, &p, got, NULL, 0), 0);
        scratch_join(path, sizeof path, g_dir, fn);
        uint8_t *want_bytes = scratch_slurp(path, &len);
        assert_int_equal(len, n * sizeof(float));
        const float *want = (const float *)(const void *)want_bytes;
        /* the bytes agree (tensor within 1e-6), except after a blur: one level (1 / 255 / std) on few values */
        long ones = 0;
        for (size_t i = 0; i < n; i++) {
            double d = fabs((double)got[i] - want[i]);
            if (d <= 1e-6) {
                worst_exact = d > worst_exact ? d : worst_exact;
                continue;
            }
            if (!blur || d > 1.0 / 255.0 / 0.224 + 1e-6)
                fail_msg("%s: value %zu is %.7f, torchvision %.7f", name, i, (double)got[i], (double)want[i]);
            ones++;
        }
        if (ones > (long)(n / 1000))
            fail_msg("%s: %ld of %zu values one level away", name, ones, n);
        off_one += ones;
        values += (long)n;
        crops++;
        blurred += blur;
        jittered += p.n_ops > 0;
        free(got);
        free(want_bytes);
    }
    fclose(f);
    printf("# %d crops of the DINOv2 pipeline (%d blurred, %d jittered): %ld of %ld values one level away, the "
           "rest within %.2g\n", crops, blurred, jittered, off_one, values, worst_exact);
    assert_int_equal(crops, 30);

    /* the rates: "rates SETTING N blur(g1 g2 local) solarize(g1 g2 local)" */
    int settings = 0;
    for (char *l = strtok(out, "\n"); l; l = strtok(NULL, "\n")) {
        char setting[16];
        long n, cnt[6];
        if (sscanf(l, "rates %15s %ld %ld %ld %ld %ld %ld %ld", setting, &n, &cnt[0], &cnt[1], &cnt[2], &cnt[3],
                   &cnt[4], &cnt[5]) != 8)
            continue;
        aug_config c;
        aug_config_default(&c);
        c.paper_probabilities = !strcmp(setting, "paper");
        static const char *kinds[3] = {"global1", "global2", "local"};
        for (int k = 0; k < 3; k++) {
            aug_probs pr = aug_crop_probs(&c, (aug_kind)k);
            char what[64];
            snprintf(what, sizeof what, "dinov2 %s %s blur", setting, kinds[k]);
            assert_rate(what, cnt[k], n, pr.blur);
            snprintf(what, sizeof what, "dinov2 %s %s solarize", setting, kinds[k]);
            assert_rate(what, cnt[3 + k], n, pr.solarize);
        }
        settings++;
    }
    assert_int_equal(settings, 2);
    free(photo);
}

static int setup(void **state)
{
    if (scratch_make(g_dir, sizeof g_dir, "augment") != 0)
        return -1;
    *state = g_dir;
    return 0;
}

int main(int argc, char **argv)
{
    snprintf(g_script, sizeof g_script, "%s/unit/train/augment_ref.py", argc > 1 ? argv[1] : "tests");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config),        cmocka_unit_test(test_draw_statistics),
        cmocka_unit_test(test_draw_fallback), cmocka_unit_test(test_boxes_vs_torchvision),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_vs_torchvision), cmocka_unit_test(test_vs_dinov2_pipeline),
    };
    return cmocka_run_group_tests(tests, setup, scratch_teardown);
}
