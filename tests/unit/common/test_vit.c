/* Parity of the C ViT with PyTorch: tests/vit/vit_ref.py builds the DINOv2 ViT in PyTorch for several
 * configurations (MLP / SwiGLU, registers, masks, both positional resampling modes, non-square inputs), saves
 * random weights with the official names, inputs, outputs and gradients; this test loads each checkpoint with
 * vit_load, runs forward and backward with 1 and 2 threads, and compares: outputs to 1e-4 and gradients to
 * 1e-3, relative to the largest reference magnitude of each tensor. Results must not depend on anything but
 * the thread count: the same thread count twice gives bit-identical outputs.
 *
 * Usage: test_vit SRCDIR (the tests/ directory; the fixtures are generated into a scratch directory). */
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "err.h"
#include "npy.h"
#include "safetensors.h"
#include "vit.h"
#include "vit_io.h"

static char fixtures[4096];

static int exists(const char *dir, const char *name)
{
    char p[8192];
    struct stat st;
    if (snprintf(p, sizeof p, "%s/%s", dir, name) >= (int)sizeof p)
        return 0;
    return stat(p, &st) == 0;
}

static void load(const char *dir, const char *name, npy_array *a)
{
    char p[8192];
    if (snprintf(p, sizeof p, "%s/%s", dir, name) >= (int)sizeof p)
        fail_msg("path too long");
    if (npy_read(p, a) != 0)
        fail_msg("%s", lvd_errmsg());
}

/* max |got - ref| / max |ref| over n values. */
static double rel_err(const float *got, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        num = e > num ? e : num;
        den = fabs(ref[i]) > den ? fabs(ref[i]) : den;
    }
    return den > 0 ? num / den : num;
}

static void expect_close(const char *cfg, const char *what, int threads, const float *got, const float *ref,
                         size_t n, double tol)
{
    double e = rel_err(got, ref, n);
    print_message("# %s %s (%d threads): relative error %.2e\n", cfg, what, threads, e);
    if (!(e <= tol))
        fail_msg("%s: %s with %d threads differs from PyTorch by %.3g (tolerance %.0e)", cfg, what, threads, e, tol);
}

/* Train runs that recompute the first block or every block (activation checkpointing) give the same outputs,
 * gradients and dL/dx bit for bit as one that keeps every activation, with drop path on and off. */
static void check_recompute(const char *name, vit_model *m, int b, int h, int w, const float *x, const uint8_t *masks,
                            const float *dcls, const float *dreg, const float *dpatch)
{
    size_t nx = (size_t)b * 3 * (size_t)h * (size_t)w;
    float *grads[4], *gxs[4], *cls[4];
    size_t nc = (size_t)b * (size_t)m->cfg.dim;
    /* keep all, recompute the first block, recompute every block; keep all with the backward scratch and the
     * arena in caller buffers that start as NaN (so a buffer missed by the layout would show) */
    const int32_t variants[4] = {0, 1, -1, 0};
    float *ext_a = NULL, *ext_s = NULL;
    for (int dp = 0; dp < 2; dp++) {
        for (int rc = 0; rc < 4; rc++) {
            vit_run_opts o = {.batch = b, .height = h, .width = w, .train = 1, .recompute = variants[rc]};
            if (rc == 3) {
                size_t na, ns;
                assert_int_equal(vit_run_sizes(m, &o, &na, &ns), 0);
                assert_true(ns > 0);
                ext_a = malloc(na * sizeof(float));
                ext_s = malloc(ns * sizeof(float));
                for (size_t i = 0; i < na; i++)
                    ext_a[i] = NAN;
                for (size_t i = 0; i < ns; i++)
                    ext_s[i] = NAN;
                o.arena = ext_a;
                o.scratch = ext_s;
            }
            vit_run *r;
            if (vit_run_create(m, &o, &r) != 0)
                fail_msg("%s", lvd_errmsg());
            assert_int_equal(vit_forward(m, r, x, masks, dp ? 0.25f : 0.0f, 11), 0);
            cls[rc] = malloc(nc * sizeof(float));
            memcpy(cls[rc], vit_out_cls(r), nc * sizeof(float));
            gxs[rc] = calloc(nx, sizeof(float));
            vit_zero_grads(m);
            if (vit_backward(m, r, dcls, dreg, dpatch, gxs[rc]) != 0)
                fail_msg("%s", lvd_errmsg());
            grads[rc] = malloc(m->n_params * sizeof(float));
            memcpy(grads[rc], m->grad_mem, m->n_params * sizeof(float));
            vit_run_free(r);
            free(ext_a);
            free(ext_s);
            ext_a = ext_s = NULL;
        }
        for (int rc = 1; rc < 4; rc++)
            if (memcmp(cls[0], cls[rc], nc * sizeof(float)) || memcmp(gxs[0], gxs[rc], nx * sizeof(float)) ||
                memcmp(grads[0], grads[rc], m->n_params * sizeof(float)))
                fail_msg("%s: the train run recomputing %d blocks differs from the keeping one (drop path %s)",
                         name, (int)variants[rc], dp ? "0.25" : "off");
        for (int rc = 0; rc < 4; rc++) {
            free(cls[rc]);
            free(gxs[rc]);
            free(grads[rc]);
        }
    }
}

static void run_config(const char *name)
{
    char dir[8192], path[8300];
    snprintf(dir, sizeof dir, "%s/%s", fixtures, name);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    vit_model *m;
    if (vit_load(path, NULL, 0, &m) != 0)
        fail_msg("%s", lvd_errmsg());
    const vit_config *c = &m->cfg;
    npy_array x, cls, patch, reg = {0}, mask = {0}, layers = {0}, layers_cls = {0}, dcls, dpatch, dreg = {0}, dx;
    load(dir, "x.npy", &x);
    load(dir, "cls.npy", &cls);
    load(dir, "patch.npy", &patch);
    load(dir, "d_cls.npy", &dcls);
    load(dir, "d_patch.npy", &dpatch);
    load(dir, "dx.npy", &dx);
    if (c->n_reg > 0) {
        load(dir, "reg.npy", &reg);
        load(dir, "d_reg.npy", &dreg);
    }
    if (exists(dir, "mask.npy"))
        load(dir, "mask.npy", &mask);
    int32_t keep = 0;
    if (exists(dir, "layers.npy")) {
        load(dir, "layers.npy", &layers);
        load(dir, "layers_cls.npy", &layers_cls);
        keep = (int32_t)layers.shape[0];
    }
    int32_t b = (int32_t)x.shape[0], h = (int32_t)x.shape[2], w = (int32_t)x.shape[3];
    int64_t n = (int64_t)(h / c->patch) * (w / c->patch), d = c->dim;
    uint8_t *masks = NULL;
    if (mask.data) {
        masks = malloc((size_t)(b * n));
        for (int64_t i = 0; i < b * n; i++)
            masks[i] = mask.data[i] != 0.0f;
    }
    snprintf(path, sizeof path, "%s/grads.safetensors", dir);
    st_file *gref;
    if (st_open(path, &gref) != 0)
        fail_msg("%s", lvd_errmsg());

    float *first_cls = NULL;
    for (int threads = 1; threads <= 2; threads++) {
        vit_set_threads(threads);
        for (int rep = 0; rep < (threads == 2 ? 2 : 1); rep++) {
            /* An inference run (no saved attention) and a train run must both match. */
            for (int train = 0; train <= 1; train++) {
                vit_run_opts o = {.batch = b, .height = h, .width = w, .train = train, .keep_layers = keep};
                vit_run *r;
                if (vit_run_create(m, &o, &r) != 0)
                    fail_msg("%s", lvd_errmsg());
                assert_int_equal(vit_forward(m, r, x.data, masks, 0.0f, 0), 0);
                expect_close(name, train ? "cls (train run)" : "cls", threads, vit_out_cls(r), cls.data,
                             (size_t)(b * d), 1e-4);
                expect_close(name, "patch tokens", threads, vit_out_patch(r), patch.data, (size_t)(b * n * d), 1e-4);
                if (c->n_reg > 0)
                    expect_close(name, "register tokens", threads, vit_out_reg(r), reg.data,
                                 (size_t)(b * c->n_reg * d), 1e-4);
                if (keep > 0) {
                    float *lp = malloc((size_t)(keep * b * n * d) * sizeof(float));
                    float *lc = malloc((size_t)(keep * b * d) * sizeof(float));
                    assert_int_equal(vit_intermediate(m, r, keep, 1, lp, lc), 0);
                    expect_close(name, "intermediate layers", threads, lp, layers.data, (size_t)(keep * b * n * d),
                                 1e-4);
                    expect_close(name, "intermediate CLS", threads, lc, layers_cls.data, (size_t)(keep * b * d), 1e-4);
                    free(lp);
                    free(lc);
                }
                if (threads == 2 && train == 0) {
                    if (!first_cls) {
                        first_cls = malloc((size_t)(b * d) * sizeof(float));
                        memcpy(first_cls, vit_out_cls(r), (size_t)(b * d) * sizeof(float));
                    } else
                        assert_memory_equal(first_cls, vit_out_cls(r), (size_t)(b * d) * sizeof(float));
                }
                if (train && rep == 0) {
                    float *gx = calloc((size_t)(b * 3 * h * w), sizeof(float));
                    assert_int_equal(vit_alloc_grads(m), 0);
                    vit_zero_grads(m);
                    if (vit_backward(m, r, dcls.data, reg.data ? dreg.data : NULL, dpatch.data, gx) != 0)
                        fail_msg("%s", lvd_errmsg());
                    expect_close(name, "dL/dx", threads, gx, dx.data, (size_t)(b * 3 * h * w), 1e-3);
                    assert_int_equal(st_count(gref), m->n_tensors);
                    double worst = 0;
                    const char *worst_name = "";
                    for (size_t i = 0; i < m->n_tensors; i++) {
                        const vit_tensor *t = &m->tensors[i];
                        const st_tensor *gt = st_find(gref, t->name);
                        if (!gt)
                            fail_msg("%s: reference has no gradient for %s", name, t->name);
                        assert_int_equal(st_numel(gt), (int64_t)t->count);
                        float *ref = malloc(t->count * sizeof(float));
                        assert_int_equal(st_to_f32(gt, ref), 0);
                        double e = rel_err(m->grad_mem + t->offset, ref, t->count);
                        if (e > worst) {
                            worst = e;
                            worst_name = t->name;
                        }
                        free(ref);
                    }
                    print_message("# %s gradients (%d threads): worst relative error %.2e (%s)\n", name, threads,
                                  worst, worst_name);
                    if (!(worst <= 1e-3))
                        fail_msg("%s: gradient of %s differs from PyTorch by %.3g", name, worst_name, worst);
                    free(gx);
                }
                vit_run_free(r);
            }
        }
    }
    check_recompute(name, m, (int)b, (int)h, (int)w, x.data, masks, dcls.data, reg.data ? dreg.data : NULL,
                    dpatch.data);
    free(first_cls);
    free(masks);
    st_close(gref);
    npy_free(&x), npy_free(&cls), npy_free(&patch), npy_free(&reg), npy_free(&mask), npy_free(&layers);
    npy_free(&layers_cls), npy_free(&dcls), npy_free(&dpatch), npy_free(&dreg), npy_free(&dx);
    vit_free(m);
}

static void test_mlp_plain(void **st) { (void)st; run_config("mlp_plain"); }
static void test_swiglu_reg_aa(void **st) { (void)st; run_config("swiglu_reg_aa"); }
static void test_mlp_offset_nonsq(void **st) { (void)st; run_config("mlp_offset_nonsq"); }
static void test_swiglu_offset_down(void **st) { (void)st; run_config("swiglu_offset_down"); }
static void test_mlp_reg_square_up(void **st) { (void)st; run_config("mlp_reg_square_up"); }

/* Every configuration the reference wrote is covered by a test case above. */
static void test_all_configs_covered(void **st)
{
    (void)st;
    static const char *known[] = {"mlp_plain", "swiglu_reg_aa", "mlp_offset_nonsq", "swiglu_offset_down",
                                  "mlp_reg_square_up"};
    DIR *dp = opendir(fixtures);
    assert_non_null(dp);
    struct dirent *e;
    int seen = 0;
    while ((e = readdir(dp))) {
        char dir[8192];
        if (snprintf(dir, sizeof dir, "%s/%s", fixtures, e->d_name) >= (int)sizeof dir)
            continue;
        if (e->d_name[0] == '.' || !exists(dir, "config.json"))
            continue;
        int ok = 0;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok |= strcmp(known[i], e->d_name) == 0;
        if (!ok)
            fail_msg("reference configuration %s has no test case", e->d_name);
        seen++;
    }
    closedir(dp);
    assert_int_equal(seen, 5);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: test_vit TESTS_SRCDIR\n");
        return 2;
    }
    snprintf(fixtures, sizeof fixtures, "/tmp/lvd-test-vit-%d", (int)getpid());
    char cmd[12288];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s/vit/vit_ref.py' '%s' > '%s.log' 2>&1", argv[1], fixtures,
             fixtures);
    if (system(cmd) != 0) {
        fprintf(stderr, "reference generation failed: see %s.log\n", fixtures);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp_plain),           cmocka_unit_test(test_swiglu_reg_aa),
        cmocka_unit_test(test_mlp_offset_nonsq),    cmocka_unit_test(test_swiglu_offset_down),
        cmocka_unit_test(test_mlp_reg_square_up),   cmocka_unit_test(test_all_configs_covered),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.log'", fixtures, fixtures);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", fixtures);
    return rc;
}
