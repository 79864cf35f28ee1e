/* test_schedule.c — DINOv2's CosineScheduler and the recipe's five schedules (train/schedule.h) against a
 * NumPy port of the official definitions (tests/unit/train/schedule_ref.py), every iteration to 1e-12: the
 * full default recipe (125,000 iterations), a scaled batch, edge cases (no warmup, one warmup iteration,
 * frozen iterations, an empty cosine part, iterations past the end, a last-layer freeze longer than training).
 * Also the recipe's landmarks by hand and the rejection of inconsistent settings. */
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
#include "train/schedule.h"

#define PY "/usr/bin/python3"
#define TOL 1e-12

static char g_dir[64];
static char g_srcdir[512];

typedef struct cos_case {
    double base, final;
    int64_t total, warmup;
    double start;
    int64_t freeze, n;
} cos_case;

static const cos_case g_cos[] = {
    {0.004, 1e-6, 1000, 100, 0.0, 0, 1100},
    {0.04, 0.4, 777, 0, 0.0, 0, 800},
    {0.992, 1.0, 50, 0, 0.0, 0, 60},
    {0.07, 0.07, 300, 300, 0.04, 0, 310},   /* the teacher temperature's shape: cosine part empty */
    {1.0, 0.1, 40, 1, 0.5, 0, 45},          /* one warmup iteration: linspace(start, base, 1) = [start] */
    {2.0, -1.0, 60, 10, -3.0, 7, 70},       /* frozen iterations first */
    {0.5, 0.25, 13, 2, 0.0, 0, 20},
    {0.3, 0.1, 0, 0, 0.0, 0, 3},            /* empty: final_value everywhere */
};
#define N_COS (sizeof g_cos / sizeof *g_cos)

static sched_recipe_config g_rec[3];
static int64_t g_rec_n[3];

static double *slurp_f64(int idx, size_t want)
{
    char name[64], p[256];
    snprintf(name, sizeof name, "case%d.f64", idx);
    scratch_join(p, sizeof p, g_dir, name);
    size_t len;
    uint8_t *raw = scratch_slurp(p, &len);
    assert_int_equal(len, want * sizeof(double));
    return (double *)raw;
}

static void cmp(const char *what, int64_t it, double got, double want)
{
    if (!(fabs(got - want) <= TOL))
        fail_msg("%s at iteration %lld: %.17g, the reference %.17g", what, (long long)it, got, want);
}

static void test_against_numpy(void **state)
{
    (void)state;
    char p[256];
    scratch_join(p, sizeof p, g_dir, "cases.txt");
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    for (size_t i = 0; i < N_COS; i++) {
        const cos_case *c = &g_cos[i];
        fprintf(f, "cosine %.17g %.17g %lld %lld %.17g %lld %lld\n", c->base, c->final, (long long)c->total,
                (long long)c->warmup, c->start, (long long)c->freeze, (long long)c->n);
    }
    /* the default recipe; a 3072 batch with short epochs; a last-layer freeze past the end of training */
    sched_recipe_defaults(&g_rec[0]);
    g_rec_n[0] = 125000 + 10;
    sched_recipe_defaults(&g_rec[1]);
    g_rec[1].epoch_length = 37;
    g_rec[1].epochs = 20;
    g_rec[1].batch_size = 3072;
    g_rec[1].warmup_epochs = 3;
    g_rec[1].warmup_teacher_temp_epochs = 5;
    g_rec[1].freeze_last_layer_epochs = 2;
    g_rec_n[1] = 37 * 20 + 5;
    sched_recipe_defaults(&g_rec[2]);
    g_rec[2].epoch_length = 10;
    g_rec[2].epochs = 4;
    g_rec[2].batch_size = 64;
    g_rec[2].warmup_epochs = 0;
    g_rec[2].warmup_teacher_temp_epochs = 0;
    g_rec[2].freeze_last_layer_epochs = 9;
    g_rec_n[2] = 45;
    for (int i = 0; i < 3; i++) {
        const sched_recipe_config *c = &g_rec[i];
        fprintf(f, "recipe %lld %lld %lld %.17g %.17g %lld %.17g %.17g %.17g %.17g %.17g %.17g %lld %lld %lld\n",
                (long long)c->epoch_length, (long long)c->epochs, (long long)c->batch_size, c->base_lr, c->min_lr,
                (long long)c->warmup_epochs, c->weight_decay, c->weight_decay_end, c->momentum_teacher,
                c->final_momentum_teacher, c->warmup_teacher_temp, c->teacher_temp,
                (long long)c->warmup_teacher_temp_epochs, (long long)c->freeze_last_layer_epochs,
                (long long)g_rec_n[i]);
    }
    fclose(f);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, PY " '%s/unit/train/schedule_ref.py' '%s'", g_srcdir, g_dir);
    if (system(cmd) != 0)
        fail_msg("reference failed: %s", cmd);

    for (size_t i = 0; i < N_COS; i++) {
        const cos_case *c = &g_cos[i];
        sched_cosine s;
        assert_int_equal(sched_cosine_init(&s, c->base, c->final, c->total, c->warmup, c->start, c->freeze), 0);
        double *want = slurp_f64((int)i, (size_t)c->n);
        for (int64_t it = 0; it < c->n; it++)
            cmp("cosine", it, sched_cosine_at(&s, it), want[it]);
        free(want);
    }
    for (int i = 0; i < 3; i++) {
        sched_recipe s;
        assert_int_equal(sched_recipe_init(&s, &g_rec[i]), 0);
        int64_t n = g_rec_n[i];
        double *want = slurp_f64((int)N_COS + i, (size_t)(5 * n));
        for (int64_t it = 0; it < n; it++) {
            sched_values v;
            sched_recipe_at(&s, it, &v);
            cmp("lr", it, v.lr, want[0 * n + it]);
            cmp("wd", it, v.wd, want[1 * n + it]);
            cmp("momentum", it, v.momentum, want[2 * n + it]);
            cmp("teacher temp", it, v.teacher_temp, want[3 * n + it]);
            cmp("last-layer lr", it, v.last_layer_lr, want[4 * n + it]);
        }
        free(want);
    }
}

static void test_recipe_landmarks(void **state)
{
    (void)state;
    sched_recipe_config c;
    sched_recipe_defaults(&c);
    c.batch_size = 3072;
    sched_recipe s;
    assert_int_equal(sched_recipe_init(&s, &c), 0);
    double peak = 0.004 * sqrt(3.0);
    assert_true(fabs(s.lr - peak) < 1e-15);
    sched_values v;
    sched_recipe_at(&s, 0, &v);
    assert_true(v.lr == 0.0 && v.last_layer_lr == 0.0);
    assert_true(fabs(v.wd - 0.04) < 1e-15 && fabs(v.momentum - 0.992) < 1e-15);
    assert_true(fabs(v.teacher_temp - 0.04) < 1e-15);
    /* end of warmup: the peak; the last layer is frozen for exactly the first epoch */
    sched_recipe_at(&s, 12499, &v);
    assert_true(v.lr == peak);
    sched_recipe_at(&s, 1249, &v);
    assert_true(v.last_layer_lr == 0.0 && v.lr > 0);
    sched_recipe_at(&s, 1250, &v);
    assert_true(v.last_layer_lr == v.lr && v.lr > 0);
    /* teacher temperature reaches 0.07 at the last warmup iteration and stays */
    sched_recipe_at(&s, 30 * 1250 - 1, &v);
    assert_true(fabs(v.teacher_temp - 0.07) < 1e-15);
    sched_recipe_at(&s, 90000, &v);
    assert_true(v.teacher_temp == 0.07);
    /* halfway through the weight decay's cosine: the mean of its ends */
    sched_recipe_at(&s, 62500, &v);
    assert_true(fabs(v.wd - 0.22) < 1e-12);
    sched_recipe_at(&s, 125000 - 1, &v);
    assert_true(v.lr > 1e-6 && v.lr < 1.01e-6 && v.momentum < 1.0 && v.momentum > 0.99999);
    sched_recipe_at(&s, 125000 + 7, &v);
    assert_true(v.lr == 1e-6 && v.wd == 0.4 && v.momentum == 1.0);
}

static void test_bad_settings(void **state)
{
    (void)state;
    sched_cosine s;
    assert_int_equal(sched_cosine_init(&s, 1, 0, 10, 8, 0, 3), -1);
    assert_true(strstr(lvd_errmsg(), "do not fit") != NULL);
    assert_int_equal(sched_cosine_init(&s, 1, 0, -1, 0, 0, 0), -1);
    sched_recipe_config c;
    sched_recipe_defaults(&c);
    c.warmup_epochs = 101;
    sched_recipe r;
    assert_int_equal(sched_recipe_init(&r, &c), -1);
    assert_true(strstr(lvd_errmsg(), "lr schedule") != NULL);
    sched_recipe_defaults(&c);
    c.batch_size = 0;
    assert_int_equal(sched_recipe_init(&r, &c), -1);
}

static int setup(void **state)
{
    (void)state;
    return scratch_make(g_dir, sizeof g_dir, "schedule");
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
        cmocka_unit_test(test_against_numpy),
        cmocka_unit_test(test_recipe_landmarks),
        cmocka_unit_test(test_bad_settings),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
