/* test_masking.c — iBOT block masks (train/masking.h). Exact invariants in C: a mask never exceeds its target,
 * every single block is one rectangle inside the grid within its budget, the default geometry is train.py's,
 * the batch's targets fall one per stratum of linspace(0.1, 0.5, n + 1), the first int(B * p) get masks and the
 * shuffle spreads them over the slots, indices / weights / counts agree, a seed gives the same masks. The
 * distributions (masked count, components, extent and position; block sides, areas, failures; per-stratum
 * targets) are compared with a Python port of DINOv2's MaskingGenerator and collate
 * (tests/unit/train/masking_ref.py), which also proves its comparison detects a subtly wrong generator. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "train/masking.h"

#define PY "/usr/bin/python3"

static char g_dir[64];
static char g_srcdir[512]; /* tests/ */

static mask_gen gen16(void)
{
    mask_gen g;
    assert_int_equal(mask_gen_default(&g, 224, 14), 0);
    return g;
}

/* ---------------------------------------------------------------------------------------------------- */

static void test_default_geometry(void **state)
{
    (void)state;
    mask_gen g = gen16();
    assert_int_equal(g.height, 16);
    assert_int_equal(g.width, 16);
    assert_int_equal(g.min_num_patches, 4);
    assert_true(g.max_num_patches == 128.0);
    assert_true(fabs(g.log_aspect_min - log(0.3)) < 1e-15);
    assert_true(fabs(g.log_aspect_max - log(1 / 0.3)) < 1e-15);
    /* patch 16 at 224: 14 x 14, ((0.5 * 224) // 16 * 224) // 16 = (7 * 224) // 16 = 98 */
    assert_int_equal(mask_gen_default(&g, 224, 16), 0);
    assert_int_equal(g.height, 14);
    assert_true(g.max_num_patches == 98.0);
    assert_int_equal(mask_gen_default(&g, 225, 14), -1);
    assert_true(strstr(lvd_errmsg(), "multiple") != NULL);
    assert_int_equal(mask_gen_init(&g, 0, 4, 4, 8, 0.3, 0), -1);
    assert_int_equal(mask_gen_init(&g, 4, 4, 4, 8, 0.0, 0), -1);
}

static void test_never_exceeds_target(void **state)
{
    (void)state;
    mask_gen g = gen16();
    mask_rng r;
    mask_rng_seed(&r, 1);
    uint8_t m[256];
    int64_t short_total = 0;
    for (int32_t target = 0; target <= 200; target++)
        for (int rep = 0; rep < 40; rep++) {
            int32_t n = mask_generate(&g, &r, target, m);
            int32_t sum = 0;
            for (int i = 0; i < 256; i++) {
                assert_true(m[i] == 0 || m[i] == 1);
                sum += m[i];
            }
            assert_int_equal(sum, n);
            assert_true(n <= target);
            short_total += target - n;
        }
    /* the generator stops early only when ten tries in a row fail: rare, but it happens at large targets */
    assert_true(short_total > 0);
}

static void test_block_is_rectangle(void **state)
{
    (void)state;
    mask_gen g;
    assert_int_equal(mask_gen_init(&g, 12, 20, 4, 120, 0.3, 0), 0);
    mask_rng r;
    mask_rng_seed(&r, 2);
    uint8_t m[240];
    int failed = 0, small = 0;
    for (int rep = 0; rep < 5000; rep++) {
        double budget = 1 + rep % 60;
        memset(m, 0, sizeof m);
        int32_t n = mask_add_block(&g, &r, m, budget);
        assert_true(n >= 0 && n <= budget);
        int r0 = 99, r1 = -1, c0 = 99, c1 = -1, sum = 0;
        for (int i = 0; i < 12; i++)
            for (int j = 0; j < 20; j++)
                if (m[i * 20 + j]) {
                    sum++;
                    r0 = i < r0 ? i : r0;
                    r1 = i > r1 ? i : r1;
                    c0 = j < c0 ? j : c0;
                    c1 = j > c1 ? j : c1;
                }
        assert_int_equal(sum, n);
        if (n == 0) {
            failed++;
            continue;
        }
        /* one full rectangle, strictly narrower than the grid on both sides (`w < width and h < height`) */
        assert_int_equal((r1 - r0 + 1) * (c1 - c0 + 1), n);
        assert_true(r1 - r0 + 1 < 12 && c1 - c0 + 1 < 20);
        if (budget >= 4 && n < 4)
            small++;
    }
    /* the aspect range lets rounding make 3-patch blocks (3 x 1) from a 4-patch target: allowed, not common */
    assert_true(small < 5000 / 10);
    assert_true(failed < 5000 / 10);
}

static void test_overlap_budget(void **state)
{
    (void)state;
    /* a block over masked patches counts only its new ones against the budget */
    mask_gen g;
    assert_int_equal(mask_gen_init(&g, 8, 8, 4, 64, 0.3, 0), 0);
    mask_rng r;
    mask_rng_seed(&r, 3);
    uint8_t m[64];
    for (int rep = 0; rep < 2000; rep++) {
        memset(m, 0, sizeof m);
        for (int i = 0; i < 64; i += 3)
            m[i] = 1;
        int before = 0, after = 0;
        for (int i = 0; i < 64; i++)
            before += m[i];
        int32_t n = mask_add_block(&g, &r, m, 5);
        for (int i = 0; i < 64; i++)
            after += m[i];
        assert_int_equal(after - before, n);
        assert_true(n <= 5);
    }
}

static void test_determinism(void **state)
{
    (void)state;
    mask_gen g = gen16();
    mask_batch a, b;
    assert_int_equal(mask_batch_init(&a, 16, 256), 0);
    assert_int_equal(mask_batch_init(&b, 16, 256), 0);
    mask_rng ra, rb;
    mask_rng_seed(&ra, 42);
    mask_rng_seed(&rb, 42);
    for (int it = 0; it < 5; it++) {
        assert_int_equal(mask_collate(&g, &ra, 0.1, 0.5, 0.5, &a), 0);
        assert_int_equal(mask_collate(&g, &rb, 0.1, 0.5, 0.5, &b), 0);
        assert_memory_equal(a.masks, b.masks, 16 * 256);
        assert_int_equal(a.n_masked, b.n_masked);
    }
    mask_rng_seed(&rb, 43);
    assert_int_equal(mask_collate(&g, &rb, 0.1, 0.5, 0.5, &b), 0);
    assert_true(memcmp(a.masks, b.masks, 16 * 256) != 0);
    mask_batch_free(&a);
    mask_batch_free(&b);
}

static void test_collate_invariants(void **state)
{
    (void)state;
    mask_gen g = gen16();
    const int32_t B = 2 * 12; /* two global crops of 12 images */
    mask_batch b;
    assert_int_equal(mask_batch_init(&b, B, 256), 0);
    mask_rng r;
    mask_rng_seed(&r, 5);
    int slot_masked[24] = {0};
    const int iters = 2000;
    for (int it = 0; it < iters; it++) {
        assert_int_equal(mask_collate(&g, &r, 0.1, 0.5, 0.5, &b), 0);
        assert_int_equal(b.n_images_masked, 12);
        /* stratum i of linspace(0.1, 0.5, 13) gives targets in [int(256 r_i), int(256 r_(i+1))] */
        int32_t sorted[24], n = 0;
        for (int i = 0; i < B; i++)
            if (b.targets[i] > 0) {
                int k = n++;
                while (k > 0 && sorted[k - 1] > b.targets[i]) {
                    sorted[k] = sorted[k - 1];
                    k--;
                }
                sorted[k] = b.targets[i];
                slot_masked[i]++;
            }
        assert_int_equal(n, 12);
        int64_t upper = 0;
        for (int k = 0; k < 12; k++) {
            double lo = 0.1 + 0.4 * k / 12.0, hi = 0.1 + 0.4 * (k + 1) / 12.0;
            assert_true(sorted[k] >= (int)(256 * lo) - 1 && sorted[k] <= (int)(256 * hi) + 1);
            upper += (int64_t)(256 * hi + 1e-6);
        }
        assert_true(llabs(b.upperbound - upper) <= 12);
        /* indices ascending into masked cells, weights 1 / count of the image, counts <= targets */
        int64_t total = 0;
        for (int i = 0; i < B; i++) {
            assert_true(b.counts[i] <= b.targets[i]);
            int c = 0;
            for (int t = 0; t < 256; t++)
                c += b.masks[i * 256 + t];
            assert_int_equal(c, b.counts[i]);
            total += c;
        }
        assert_int_equal(b.n_masked, total);
        double wsum = 0;
        for (int64_t k = 0; k < b.n_masked; k++) {
            if (k > 0)
                assert_true(b.indices[k] > b.indices[k - 1]);
            assert_int_equal(b.masks[b.indices[k]], 1);
            int img = (int)(b.indices[k] / 256);
            assert_true(fabsf(b.weights[k] - 1.0f / (float)b.counts[img]) == 0.0f);
            wsum += b.weights[k];
        }
        /* each masked image's weights sum to 1 */
        int n_nonempty = 0;
        for (int i = 0; i < B; i++)
            n_nonempty += b.counts[i] > 0;
        assert_true(fabs(wsum - n_nonempty) < 1e-4);
    }
    /* the shuffle: every slot is masked about half the time (without it the first 12 always would be) */
    for (int i = 0; i < B; i++)
        assert_true(slot_masked[i] > iters * 0.4 && slot_masked[i] < iters * 0.6);

    /* odd sizes: int(B * p) truncates, p = 0 masks nothing, p = 1 everything */
    mask_batch c;
    assert_int_equal(mask_batch_init(&c, 7, 256), 0);
    assert_int_equal(mask_collate(&g, &r, 0.1, 0.5, 0.5, &c), 0);
    assert_int_equal(c.n_images_masked, 3);
    assert_int_equal(mask_collate(&g, &r, 0.1, 0.5, 0.0, &c), 0);
    assert_int_equal(c.n_masked, 0);
    assert_int_equal(mask_collate(&g, &r, 0.1, 0.5, 1.0, &c), 0);
    assert_int_equal(c.n_images_masked, 7);
    for (int i = 0; i < 7; i++)
        assert_true(c.targets[i] > 0);
    assert_int_equal(mask_collate(&g, &r, 0.5, 0.1, 0.5, &c), -1);
    mask_batch_free(&c);
    assert_int_equal(mask_batch_init(&c, 4, 196), 0);
    assert_int_equal(mask_collate(&g, &r, 0.1, 0.5, 0.5, &c), -1); /* sized for another grid */
    mask_batch_free(&c);
    mask_batch_free(&b);
}

/* ---------------------------------------------------------------------------------------------------- */
/* against the Python port */

static FILE *open_in(const char *name, const char *mode)
{
    char p[256];
    scratch_join(p, sizeof p, g_dir, name);
    FILE *f = fopen(p, mode);
    if (!f)
        fail_msg("cannot open %s", p);
    return f;
}

static void write_gen_case(FILE *cases, const mask_gen *g, double min_aspect, int32_t target, int k,
                           uint64_t seed)
{
    char name[64];
    snprintf(name, sizeof name, "gen_%dx%d_%d.u8", (int)g->height, (int)g->width, (int)target);
    fprintf(cases, "gen %d %d %d %.17g %.17g %d %d %s\n", (int)g->height, (int)g->width, (int)g->min_num_patches,
            g->max_num_patches, min_aspect, (int)target, k, name);
    size_t n = (size_t)g->height * (size_t)g->width;
    uint8_t *m = malloc(n);
    assert_non_null(m);
    mask_rng r;
    mask_rng_seed(&r, seed);
    FILE *f = open_in(name, "wb");
    for (int i = 0; i < k; i++) {
        mask_generate(g, &r, target, m);
        assert_int_equal(fwrite(m, 1, n, f), n);
    }
    fclose(f);
    free(m);
}

static void write_block_case(FILE *cases, const mask_gen *g, double min_aspect, double budget, int k,
                             uint64_t seed)
{
    char name[64];
    snprintf(name, sizeof name, "block_%dx%d_%g.u8", (int)g->height, (int)g->width, budget);
    fprintf(cases, "block %d %d %d %.17g %.17g %.17g %d %s\n", (int)g->height, (int)g->width,
            (int)g->min_num_patches, g->max_num_patches, min_aspect, budget, k, name);
    size_t n = (size_t)g->height * (size_t)g->width;
    uint8_t *m = malloc(n);
    assert_non_null(m);
    mask_rng r;
    mask_rng_seed(&r, seed);
    FILE *f = open_in(name, "wb");
    for (int i = 0; i < k; i++) {
        memset(m, 0, n);
        mask_add_block(g, &r, m, budget);
        assert_int_equal(fwrite(m, 1, n, f), n);
    }
    fclose(f);
    free(m);
}

static void write_batch_case(FILE *cases, const mask_gen *g, double min_aspect, int32_t n_img, int k,
                             uint64_t seed)
{
    char name[64];
    snprintf(name, sizeof name, "batch_%dx%d_%d.i32", (int)g->height, (int)g->width, (int)n_img);
    fprintf(cases, "batch %d %d %d %.17g %.17g %d 0.1 0.5 0.5 %d %s\n", (int)g->height, (int)g->width,
            (int)g->min_num_patches, g->max_num_patches, min_aspect, (int)n_img, k, name);
    mask_batch b;
    assert_int_equal(mask_batch_init(&b, n_img, g->height * g->width), 0);
    mask_rng r;
    mask_rng_seed(&r, seed);
    FILE *f = open_in(name, "wb");
    for (int i = 0; i < k; i++) {
        assert_int_equal(mask_collate(g, &r, 0.1, 0.5, 0.5, &b), 0);
        assert_int_equal(fwrite(b.targets, sizeof(int32_t), (size_t)n_img, f), (size_t)n_img);
        assert_int_equal(fwrite(b.counts, sizeof(int32_t), (size_t)n_img, f), (size_t)n_img);
    }
    fclose(f);
    mask_batch_free(&b);
}

static void test_against_python(void **state)
{
    (void)state;
    FILE *cases = open_in("cases.txt", "w");
    mask_gen g = gen16();
    const int K = 3000;
    int32_t targets[] = {5, 25, 51, 76, 102, 128};
    for (size_t i = 0; i < sizeof targets / sizeof *targets; i++)
        write_gen_case(cases, &g, 0.3, targets[i], K, 100 + i);
    write_block_case(cases, &g, 0.3, 128, 6000, 200);
    write_block_case(cases, &g, 0.3, 9, 6000, 201);
    write_block_case(cases, &g, 0.3, 2.5, 6000, 202); /* budget below min: area uniform in [2.5, 4] */
    mask_gen g14;
    assert_int_equal(mask_gen_default(&g14, 224, 16), 0);
    write_gen_case(cases, &g14, 0.3, 60, K, 300);
    mask_gen rect;
    assert_int_equal(mask_gen_init(&rect, 10, 24, 4, 120, 0.5, 0), 0);
    write_gen_case(cases, &rect, 0.5, 90, K, 400);
    write_block_case(cases, &rect, 0.5, 60, 6000, 401);
    write_batch_case(cases, &g, 0.3, 16, 1500, 500);
    write_batch_case(cases, &g14, 0.3, 10, 1500, 501);
    fclose(cases);

    char cmd[2048];
    snprintf(cmd, sizeof cmd, PY " '%s/unit/train/masking_ref.py' check '%s'", g_srcdir, g_dir);
    if (system(cmd) != 0)
        fail_msg("masks differ in distribution from the Python port of MaskingGenerator: %s", cmd);
}

static void test_python_check_has_power(void **state)
{
    (void)state;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, PY " '%s/unit/train/masking_ref.py' power", g_srcdir);
    if (system(cmd) != 0)
        fail_msg("the statistical comparison did not detect a wrong generator: %s", cmd);
}

static int setup(void **state)
{
    (void)state;
    return scratch_make(g_dir, sizeof g_dir, "masking");
}

static int teardown(void **state)
{
    (void)state;
    return scratch_remove(g_dir);
}

int main(int argc, char **argv)
{
    snprintf(g_srcdir, sizeof g_srcdir, "%s", argc > 1 ? argv[1] : "tests");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_geometry),
        cmocka_unit_test(test_never_exceeds_target),
        cmocka_unit_test(test_block_is_rectangle),
        cmocka_unit_test(test_overlap_budget),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_collate_invariants),
        cmocka_unit_test(test_against_python),
        cmocka_unit_test(test_python_check_has_power),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
