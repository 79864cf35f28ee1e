/* test_posembed.c — the positional-embedding resampling against PyTorch: F.interpolate(bicubic) exactly as
 * DINOv2's interpolate_pos_encoding calls it (scale factor (g + 0.1) / M without antialias, or size with
 * antialias), forward values and autograd gradients, for up/down/equal/non-square grids and the real
 * 37 -> 16 x 16 case. References come from tests/vit/vit_ref.py (PyTorch), run into a scratch directory.
 * Also: the weight matrices' structure (rows sum to 1, antialias widens the support, the +0.1 offset makes an
 * M -> M resample differ from the identity), backward = transpose and accumulates, and bad arguments. */
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
#include "npy.h"
#include "posembed.h"

#define PY "/usr/bin/python3"
#define TOL 1e-5 /* max abs error / max abs value */

static char g_script[4096];
static char g_dir[256];

typedef struct pe_case {
    char name[64];
    int32_t m, gh, gw, d;
    vit_pos_mode mode;
} pe_case;

#define MAX_CASES 64
static pe_case g_cases[MAX_CASES];
static int g_ncases;

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

static float frand(void) /* uniform in [-1, 1) */
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((double)(g_rng >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

static const char *mode_name(vit_pos_mode m)
{
    return m == VIT_POS_OFFSET ? "offset" : "size_aa";
}

/* Loads posembed/<case>/<file>.npy and checks its shape. */
static void load(const pe_case *c, const char *file, int64_t d0, int64_t d1, int64_t d2, npy_array *a)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/posembed/%s/%s.npy", g_dir, c->name, file);
    if (npy_read(path, a) != 0)
        fail_msg("%s", lvd_errmsg());
    if (a->ndim != 3 || a->shape[0] != d0 || a->shape[1] != d1 || a->shape[2] != d2)
        fail_msg("%s: unexpected shape", path);
}

static double rel_err(const float *got, const float *want, size_t n)
{
    double err = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - (double)want[i]);
        if (!(e <= err)) /* NaN-safe: a NaN makes the error NaN, which fails the comparison */
            err = e;
        if (fabs((double)want[i]) > scale)
            scale = fabs((double)want[i]);
    }
    return err / (scale > 0.0 ? scale : 1.0);
}

static int setup(void **state)
{
    (void)state;
    if (scratch_make(g_dir, sizeof g_dir, "posembed") != 0)
        return -1;
    char cmd[8192];
    snprintf(cmd, sizeof cmd, PY " %s %s --only posembed > /dev/null", g_script, g_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "# reference generator failed: %s\n", cmd);
        return -1;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/posembed/cases.txt", g_dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "# no case list %s\n", path);
        return -1;
    }
    char line[256], mode[32];
    while (fgets(line, sizeof line, f) && g_ncases < MAX_CASES) {
        pe_case *c = &g_cases[g_ncases];
        if (sscanf(line, "%63s %d %d %d %31s %d", c->name, &c->m, &c->gh, &c->gw, mode, &c->d) != 6) {
            fprintf(stderr, "# bad line in %s: %s", path, line);
            fclose(f);
            return -1;
        }
        c->mode = strcmp(mode, "offset") == 0 ? VIT_POS_OFFSET : VIT_POS_SIZE_AA;
        g_ncases++;
    }
    fclose(f);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    return scratch_remove(g_dir);
}

static const pe_case *find_case(const char *name)
{
    for (int i = 0; i < g_ncases; i++)
        if (strcmp(g_cases[i].name, name) == 0)
            return &g_cases[i];
    fail_msg("reference case %s is missing", name);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------------------- */

static void test_against_torch(void **state)
{
    (void)state;
    /* the list covers both modes, up, down, equal, non-square and the released models' 37 -> 16 x 16 */
    assert_true(g_ncases >= 16);
    const char *required[] = {"up_offset",    "up_aa",        "down_offset", "down_aa",     "equal_offset",
                              "equal_aa",     "nonsq_offset", "nonsq_aa",    "real_offset", "real_aa"};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++)
        find_case(required[i]);

    double worst_f = 0.0, worst_b = 0.0;
    for (int i = 0; i < g_ncases; i++) {
        const pe_case *c = &g_cases[i];
        npy_array src, dst, ddst, dsrc;
        load(c, "src", c->m, c->m, c->d, &src);
        load(c, "dst", c->gh, c->gw, c->d, &dst);
        load(c, "ddst", c->gh, c->gw, c->d, &ddst);
        load(c, "dsrc", c->m, c->m, c->d, &dsrc);
        size_t nd = (size_t)c->gh * (size_t)c->gw * (size_t)c->d, ns = (size_t)c->m * (size_t)c->m * (size_t)c->d;
        float *out = malloc(nd * sizeof *out), *grad = calloc(ns, sizeof *grad);
        assert_non_null(out);
        assert_non_null(grad);
        assert_int_equal(posembed_forward(src.data, c->m, c->d, c->gh, c->gw, c->mode, out), 0);
        assert_int_equal(posembed_backward(ddst.data, c->m, c->d, c->gh, c->gw, c->mode, grad), 0);
        double ef = rel_err(out, dst.data, nd), eb = rel_err(grad, dsrc.data, ns);
        printf("# %-18s %2d -> %2d x %2d %-7s forward %.2e backward %.2e\n", c->name, c->m, c->gh, c->gw,
               mode_name(c->mode), ef, eb);
        if (!(ef < TOL) || !(eb < TOL))
            fail_msg("%s: relative error forward %.3e backward %.3e (limit %.0e)", c->name, ef, eb, TOL);
        worst_f = fmax(worst_f, ef);
        worst_b = fmax(worst_b, eb);
        free(out);
        free(grad);
        npy_free(&src);
        npy_free(&dst);
        npy_free(&ddst);
        npy_free(&dsrc);
    }
    printf("# worst relative error: forward %.2e, backward %.2e\n", worst_f, worst_b);
}

/* The tolerance separates the two modes by orders of magnitude on the real case: a resampler that confused
 * them (or dropped the offset or the antialiasing) would be far outside it. */
static void test_modes_are_distinguishable(void **state)
{
    (void)state;
    const char *names[] = {"real_offset", "real_aa", "down_aa", "equal_offset"};
    for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
        const pe_case *c = find_case(names[k]);
        npy_array src, dst;
        load(c, "src", c->m, c->m, c->d, &src);
        load(c, "dst", c->gh, c->gw, c->d, &dst);
        size_t nd = (size_t)c->gh * (size_t)c->gw * (size_t)c->d;
        float *out = malloc(nd * sizeof *out);
        assert_non_null(out);
        vit_pos_mode other = c->mode == VIT_POS_OFFSET ? VIT_POS_SIZE_AA : VIT_POS_OFFSET;
        assert_int_equal(posembed_forward(src.data, c->m, c->d, c->gh, c->gw, other, out), 0);
        double e = rel_err(out, dst.data, nd);
        printf("# %s computed in the other mode: relative error %.2e\n", c->name, e);
        assert_true(e > 100 * TOL);
        free(out);
        npy_free(&src);
        npy_free(&dst);
    }
}

static void test_weight_structure(void **state)
{
    (void)state;
    static float w[64 * 64];
    for (int32_t n_in = 1; n_in <= 40; n_in += 3) {
        for (int32_t n_out = 1; n_out <= 40; n_out += 2) {
            for (int mode = 0; mode < 2; mode++) {
                assert_int_equal(posembed_weights(n_in, n_out, (vit_pos_mode)mode, w), 0);
                int32_t max_taps = 0;
                for (int32_t i = 0; i < n_out; i++) {
                    double sum = 0.0;
                    int32_t taps = 0;
                    for (int32_t j = 0; j < n_in; j++) {
                        sum += w[i * n_in + j];
                        taps += w[i * n_in + j] != 0.0f;
                    }
                    if (fabs(sum - 1.0) > 1e-5)
                        fail_msg("%s %d -> %d: row %d sums to %.7f", mode_name((vit_pos_mode)mode), n_in, n_out,
                                 i, sum);
                    max_taps = taps > max_taps ? taps : max_taps;
                }
                if (mode == VIT_POS_OFFSET)
                    assert_true(max_taps <= 4); /* plain bicubic: 4 neighbours */
                else if (n_in >= 3 * n_out && n_in >= 8)
                    assert_true(max_taps > 4); /* antialiasing widens the filter when shrinking */
            }
        }
    }
    /* M -> M: identity with exact size, a slight resample with the +0.1 offset (scale M / (M + 0.1)) */
    const int32_t m = 37;
    assert_int_equal(posembed_weights(m, m, VIT_POS_SIZE_AA, w), 0);
    for (int32_t i = 0; i < m; i++)
        for (int32_t j = 0; j < m; j++)
            assert_true(fabsf(w[i * m + j] - (i == j ? 1.0f : 0.0f)) < 1e-7f);
    assert_int_equal(posembed_weights(m, m, VIT_POS_OFFSET, w), 0);
    double off = 0.0;
    for (int32_t i = 0; i < m; i++)
        off = fmax(off, fabs(w[i * m + i] - 1.0));
    assert_true(off > 1e-3);
}

/* backward is the transpose of forward (<F x, y> = <x, B y>) and accumulates into dsrc */
static void test_backward_is_transpose(void **state)
{
    (void)state;
    const int32_t m = 9, d = 3, gh = 5, gw = 13;
    float x[9 * 9 * 3], y[5 * 13 * 3], fx[5 * 13 * 3], by[9 * 9 * 3], by2[9 * 9 * 3];
    for (size_t i = 0; i < sizeof x / sizeof *x; i++)
        x[i] = frand();
    for (size_t i = 0; i < sizeof y / sizeof *y; i++)
        y[i] = frand();
    for (int mode = 0; mode < 2; mode++) {
        memset(by, 0, sizeof by);
        assert_int_equal(posembed_forward(x, m, d, gh, gw, (vit_pos_mode)mode, fx), 0);
        assert_int_equal(posembed_backward(y, m, d, gh, gw, (vit_pos_mode)mode, by), 0);
        double a = 0.0, b = 0.0, s = 0.0;
        for (size_t i = 0; i < sizeof y / sizeof *y; i++) {
            a += (double)fx[i] * y[i];
            s += fabs((double)fx[i] * y[i]);
        }
        for (size_t i = 0; i < sizeof x / sizeof *x; i++)
            b += (double)x[i] * by[i];
        assert_true(fabs(a - b) < 1e-5 * s);
        /* accumulation: starting from 1, the result is 1 + the gradient */
        for (size_t i = 0; i < sizeof by2 / sizeof *by2; i++)
            by2[i] = 1.0f;
        assert_int_equal(posembed_backward(y, m, d, gh, gw, (vit_pos_mode)mode, by2), 0);
        for (size_t i = 0; i < sizeof by2 / sizeof *by2; i++)
            assert_true(fabsf(by2[i] - 1.0f - by[i]) < 1e-5f);
    }
}

static void test_bad_arguments(void **state)
{
    (void)state;
    float w[16], buf[64] = {0};
    lvd_err_clear();
    assert_int_equal(posembed_weights(0, 4, VIT_POS_OFFSET, w), -1);
    assert_non_null(strstr(lvd_errmsg(), "n_in 0"));
    assert_int_equal(posembed_weights(4, -2, VIT_POS_SIZE_AA, w), -1);
    assert_non_null(strstr(lvd_errmsg(), "n_out -2"));
    assert_int_equal(posembed_weights(2, 2, (vit_pos_mode)7, w), -1);
    assert_non_null(strstr(lvd_errmsg(), "mode 7"));
    assert_int_equal(posembed_weights(2, 2, VIT_POS_OFFSET, NULL), -1);
    assert_int_equal(posembed_forward(buf, 2, 2, 0, 3, VIT_POS_OFFSET, buf), -1);
    assert_non_null(strstr(lvd_errmsg(), "grid 0 x 3"));
    assert_int_equal(posembed_backward(buf, 2, -1, 2, 2, VIT_POS_SIZE_AA, buf), -1);
    assert_non_null(strstr(lvd_errmsg(), "D -1"));
    assert_int_equal(posembed_forward(buf, 2, 2, 2, 2, (vit_pos_mode)-1, buf), -1);
    assert_non_null(strstr(lvd_errmsg(), "posembed"));
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s TESTS_SOURCE_DIR\n", argv[0]);
        return 2;
    }
    snprintf(g_script, sizeof g_script, "%s/vit/vit_ref.py", argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_torch),         cmocka_unit_test(test_modes_are_distinguishable),
        cmocka_unit_test(test_weight_structure),      cmocka_unit_test(test_backward_is_transpose),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
