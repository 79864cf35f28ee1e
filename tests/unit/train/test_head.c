/* test_head.c — the DINO head (train/head.c) against PyTorch: the official DINOHead rewritten in
 * tests/unit/train/head_ref.py, same float32 weights and inputs, references in float64. Outputs to 1e-5 and
 * every parameter gradient and the input gradient to 1e-3 (max-norm relative error ||a - b||_max / ||b||_max),
 * for nlayers 1, 2, 3, 4, and the recipe's 384 -> 2048 -> 2048 -> 256 -> 65536 head forward at 2 rows.
 * Also: the tensor names and shapes are the official state-dict ones, backward accumulates, the init's
 * statistics, and bad arguments. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"
#include "relerr.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "train/head.h"
#include "npy.h"

#define TOL_FWD 1e-5
#define TOL_BWD 1e-3

static char g_script[4096];
static char g_dir[256];
static char g_gen[512];

/* Loads <case>/<name>.npy, checks it holds count floats with the given leading dims (d1 0: 1-D). */
static float *load(const char *cs, const char *name, int64_t d0, int64_t d1)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s.npy", g_gen, cs, name);
    npy_array a;
    if (npy_read(path, &a) != 0)
        fail_msg("%s", lvd_errmsg());
    if (a.ndim != (d1 ? 2 : 1) || a.shape[0] != d0 || (d1 && a.shape[1] != d1))
        fail_msg("%s: unexpected shape", path);
    return a.data;
}

static int setup(void **state)
{
    return scratch_setup_fixtures(state, g_dir, sizeof g_dir, "head", g_gen, sizeof g_gen, g_script, "gen");
}

typedef struct hcase {
    dino_head_config cfg;
    int64_t rows;
    int backward;
} hcase;

static hcase read_meta(const char *cs)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/meta.txt", g_gen, cs);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    long long v[7];
    assert_int_equal(fscanf(f, "%lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
                            &v[6]),
                     7);
    fclose(f);
    hcase c = {{v[0], v[1], v[2], v[3], (int32_t)v[4]}, v[5], (int)v[6]};
    return c;
}

/* Loads every parameter of the case into h (names and shapes from dino_head_tensor_at must match the files). */
static void load_params(const char *cs, dino_head *h)
{
    for (int i = 0; i < dino_head_ntensors(&h->cfg); i++) {
        dino_head_tensor t;
        assert_int_equal(dino_head_tensor_at(&h->cfg, i, &t), 0);
        float *p = load(cs, t.name, t.shape[0], t.ndim == 2 ? t.shape[1] : 0);
        memcpy(h->params + t.offset, p, t.count * sizeof(float));
        free(p);
    }
}

static void run_case(const char *cs, double *worst_fwd, double *worst_bwd)
{
    hcase c = read_meta(cs);
    dino_head h;
    dino_head_run r;
    assert_int_equal(dino_head_init(&h, &c.cfg, c.backward), 0);
    assert_int_equal(dino_head_run_init(&r, &c.cfg, c.rows, c.backward), 0);
    load_params(cs, &h);
    const int64_t n = c.rows, k = c.cfg.prototypes, in = c.cfg.in_dim;
    float *x = load(cs, "x", n, in), *want = load(cs, "out", n, k);
    float *out = malloc((size_t)(n * k) * sizeof(float));
    assert_non_null(out);
    assert_int_equal(dino_head_forward(&h, &r, out, x, n), 0);
    double ef = rel_err(out, want, (size_t)(n * k));
    printf("# %s: forward %.2e\n", cs, ef);
    assert_true(ef < TOL_FWD);
    if (ef > *worst_fwd)
        *worst_fwd = ef;
    if (c.backward) {
        float *dout = load(cs, "dout", n, k), *dxw = load(cs, "dx", n, in);
        float *dx = calloc((size_t)(n * in), sizeof(float));
        assert_non_null(dx);
        assert_int_equal(dino_head_backward(&h, &r, dx, dout, x, n), 0);
        double e = rel_err(dx, dxw, (size_t)(n * in));
        printf("# %s: d x %.2e\n", cs, e);
        assert_true(e < TOL_BWD);
        double eb = e;
        for (int i = 0; i < dino_head_ntensors(&c.cfg); i++) {
            dino_head_tensor t;
            dino_head_tensor_at(&c.cfg, i, &t);
            char gname[64];
            snprintf(gname, sizeof gname, "grad.%s", t.name);
            float *gw = load(cs, gname, t.shape[0], t.ndim == 2 ? t.shape[1] : 0);
            e = rel_err(h.grads + t.offset, gw, t.count);
            printf("# %s: d %s %.2e\n", cs, t.name, e);
            assert_true(e < TOL_BWD);
            eb = e > eb ? e : eb;
            free(gw);
        }
        if (eb > *worst_bwd)
            *worst_bwd = eb;

        /* backward accumulates: a second pass (after a fresh forward) doubles every gradient */
        float *g1 = malloc(h.n_params * sizeof(float));
        assert_non_null(g1);
        memcpy(g1, h.grads, h.n_params * sizeof(float));
        assert_int_equal(dino_head_forward(&h, &r, out, x, n), 0);
        assert_int_equal(dino_head_backward(&h, &r, dx, dout, x, n), 0);
        for (size_t i = 0; i < h.n_params; i++)
            assert_true(fabsf(h.grads[i] - 2.0f * g1[i]) <= 1e-5f * (1.0f + fabsf(g1[i])));
        /* and a NULL dx still gives the parameter gradients */
        dino_head_zero_grad(&h);
        assert_int_equal(dino_head_backward(&h, &r, NULL, dout, x, n), 0);
        assert_true(rel_err(h.grads, g1, h.n_params) < 1e-6);
        free(g1);
        free(dout);
        free(dxw);
        free(dx);
    }
    free(x);
    free(want);
    free(out);
    dino_head_run_free(&r);
    dino_head_free(&h);
}

static void test_against_torch(void **state)
{
    (void)state;
    const char *cases[] = {"l3", "l1", "l2", "l4_one_row", "real"};
    double wf = 0.0, wb = 0.0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        run_case(cases[i], &wf, &wb);
    printf("# worst: forward %.2e (tolerance %.0e), gradients %.2e (tolerance %.0e)\n", wf, TOL_FWD, wb, TOL_BWD);
}

static void test_names(void **state)
{
    (void)state;
    dino_head_config c3 = {384, 2048, 256, 65536, 3}, c1 = {384, 2048, 256, 65536, 1};
    const char *n3[] = {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight",
                        "mlp.4.bias", "last_layer.weight_g", "last_layer.weight_v"};
    assert_int_equal(dino_head_ntensors(&c3), 8);
    size_t off = 0;
    for (int i = 0; i < 8; i++) {
        dino_head_tensor t;
        assert_int_equal(dino_head_tensor_at(&c3, i, &t), 0);
        assert_string_equal(t.name, n3[i]);
        assert_int_equal(t.offset, off);
        off += t.count;
    }
    dino_head_tensor t;
    dino_head_tensor_at(&c3, 2, &t);
    assert_int_equal(t.shape[0], 2048);
    assert_int_equal(t.shape[1], 2048);
    dino_head_tensor_at(&c3, 6, &t);
    assert_int_equal(t.ndim, 2);
    assert_int_equal(t.shape[0], 65536);
    assert_int_equal(t.shape[1], 1);
    /* 384*2048 + 2048 + 2048^2 + 2048 + 2048*256 + 256 + 65536 + 65536*256 */
    assert_int_equal(off, 786432 + 2048 + 4194304 + 2048 + 524288 + 256 + 65536 + 16777216);
    assert_int_equal(dino_head_ntensors(&c1), 4);
    dino_head_tensor_at(&c1, 0, &t);
    assert_string_equal(t.name, "mlp.weight");
    assert_int_equal(t.shape[0], 256);
    assert_int_equal(t.shape[1], 384);
    dino_head_tensor_at(&c1, 1, &t);
    assert_string_equal(t.name, "mlp.bias");
    assert_int_equal(dino_head_tensor_at(&c1, 4, &t), -1);
    assert_int_equal(dino_head_tensor_at(&c1, -1, &t), -1);
}

static void test_init(void **state)
{
    (void)state;
    dino_head_config c = {64, 256, 32, 1000, 3};
    dino_head h, h2;
    assert_int_equal(dino_head_init(&h, &c, 0), 0);
    assert_int_equal(dino_head_init(&h2, &c, 0), 0);
    assert_null(h.grads);
    dino_head_init_weights(&h, 7);
    dino_head_init_weights(&h2, 7);
    assert_memory_equal(h.params, h2.params, h.n_params * sizeof(float));
    dino_head_init_weights(&h2, 8);
    assert_true(memcmp(h.params, h2.params, h.n_params * sizeof(float)) != 0);
    for (int l = 0; l < 3; l++) {
        int64_t o = l == 2 ? 32 : 256, in = l == 0 ? 64 : 256;
        double s = 0.0, s2 = 0.0;
        for (int64_t i = 0; i < o * in; i++) {
            s += h.w[l][i];
            s2 += (double)h.w[l][i] * h.w[l][i];
        }
        double mean = s / (double)(o * in), sd = sqrt(s2 / (double)(o * in) - mean * mean);
        assert_true(fabs(mean) < 0.001);
        assert_true(fabs(sd - 0.02) < 0.0005);
        for (int64_t i = 0; i < o; i++)
            assert_true(h.b[l][i] == 0.0f);
    }
    double bound = 1.0 / sqrt(32.0), s2 = 0.0;
    for (int64_t i = 0; i < 1000 * 32; i++) {
        assert_true(fabs(h.weight_v[i]) <= bound);
        s2 += (double)h.weight_v[i] * h.weight_v[i];
    }
    assert_true(fabs(sqrt(s2 / 32000.0) - bound / sqrt(3.0)) < 0.01 * bound);
    for (int64_t k = 0; k < 1000; k++)
        assert_true(h.weight_g[k] == 1.0f);
    dino_head_free(&h);
    dino_head_free(&h2);
}

static void test_bad_args(void **state)
{
    (void)state;
    dino_head_config bad = {32, 64, 16, 128, 0};
    dino_head h;
    dino_head_run r;
    assert_int_equal(dino_head_init(&h, &bad, 1), -1);
    assert_non_null(strstr(lvd_errmsg(), "nlayers"));
    bad.nlayers = DINO_HEAD_MAX_LAYERS + 1;
    assert_int_equal(dino_head_config_check(&bad), -1);
    bad.nlayers = 3;
    bad.prototypes = 0;
    assert_int_equal(dino_head_config_check(&bad), -1);
    dino_head_config c = {8, 16, 4, 10, 2}, other = {8, 16, 4, 11, 2};
    assert_int_equal(dino_head_run_init(&r, &c, 0, 1), -1);
    assert_int_equal(dino_head_init(&h, &c, 0), 0);
    assert_int_equal(dino_head_run_init(&r, &c, 3, 0), 0);
    float x[4 * 8] = {0}, out[4 * 11], dout[3 * 10] = {0};
    for (int i = 0; i < 32; i++)
        x[i] = (float)i * 0.1f;
    dino_head_init_weights(&h, 1);
    assert_int_equal(dino_head_forward(&h, &r, out, x, 4), -1); /* more rows than the run holds */
    assert_int_equal(dino_head_forward(&h, &r, out, x, 3), 0);
    assert_int_equal(dino_head_backward(&h, &r, NULL, dout, x, 3), -1); /* no gradient arena */
    dino_head_run_free(&r);
    dino_head h2;
    assert_int_equal(dino_head_init(&h2, &other, 1), 0);
    assert_int_equal(dino_head_run_init(&r, &c, 3, 1), 0);
    assert_int_equal(dino_head_forward(&h2, &r, out, x, 3), -1); /* run for another configuration */
    assert_int_equal(dino_head_forward(&h, &r, out, x, 3), 0);
    dino_head h3;
    assert_int_equal(dino_head_init(&h3, &c, 1), 0);
    assert_int_equal(dino_head_backward(&h3, &r, NULL, dout, x, 2), -1); /* rows differ from the forward */
    assert_int_equal(dino_head_backward(&h3, &r, NULL, dout, x, 3), 0);
    dino_head_free(&h3);
    dino_head_free(&h2);
    dino_head_run_free(&r);
    dino_head_free(&h);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s TESTS_SOURCE_DIR\n", argv[0]);
        return 2;
    }
    snprintf(g_script, sizeof g_script, "%s/unit/train/head_ref.py", argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_torch),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_init),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, setup, scratch_teardown);
}
