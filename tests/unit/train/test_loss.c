/* test_loss.c — DINOv2's losses (train/loss.c) against PyTorch: the official DINOLoss, iBOTPatchLoss and KoLeoLoss
 * and ssl_meta_arch.forward_backward rewritten in tests/unit/train/loss_ref.py (one process, float64 from the
 * same float32 inputs). Single functions: softmax centering and the center update, Sinkhorn-Knopp, the DINO
 * cross-entropy over crop lists, iBOT's forward_masked, KoLeo (also with two equal rows) and the collate's mask
 * bookkeeping; the all-reduce hook, with two threads standing in for two processes (their split batch must
 * give the one-process Sinkhorn-Knopp and center). Whole steps from the backbone outputs on, through
 * train/head.c's student and teacher heads: shared head with softmax centering, separate iBOT head with
 * Sinkhorn-Knopp, and nlayers 1 / 3 both ways;
 * every loss_dict term and the total, the centers after the update, every student head parameter gradient and
 * the gradients of the backbone's CLS and patch outputs. Tolerances: values 1e-5 relative, centers 1e-6,
 * targets 1e-5, gradients 1e-3 (max-norm: ||a - b||_max / ||b||_max). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"
#include "relerr.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "train/head.h"
#include "train/loss.h"
#include "npy.h"

#define TOL_VAL 1e-5
#define TOL_CENTER 1e-6
#define TOL_GRAD 1e-3

static char g_script[4096];
static char g_dir[256];
static char g_gen[512];
static double g_worst_val, g_worst_grad, g_worst_center;

/* Checks one comparison against its tolerance, prints it and keeps the worst per kind. */
static void check(const char *what, double e, double tol, double *worst)
{
    printf("# %s %.2e\n", what, e);
    if (!(e < tol))
        fail_msg("%s: error %.3e over %.0e", what, e, tol);
    if (e > *worst)
        *worst = e;
}

/* Loads <sub>/<name>.npy with count floats (shape only checked by count, the shapes are the generator's). */
static float *load(const char *sub, const char *name, int64_t count)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/%s.npy", g_gen, sub, name);
    npy_array a;
    if (npy_read(path, &a) != 0)
        fail_msg("%s", lvd_errmsg());
    if (npy_count(&a) != count)
        fail_msg("%s: %lld values, expected %lld", path, (long long)npy_count(&a), (long long)count);
    return a.data;
}

static double value(const char *key)
{
    char path[4096], k[64];
    snprintf(path, sizeof path, "%s/units/values.txt", g_gen);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    double v;
    while (fscanf(f, "%63s %lf", k, &v) == 2)
        if (strcmp(k, key) == 0) {
            fclose(f);
            return v;
        }
    fclose(f);
    fail_msg("no value %s", key);
    return 0.0;
}

static int setup(void **state)
{
    return scratch_setup_fixtures(state, g_dir, sizeof g_dir, "loss", g_gen, sizeof g_gen, g_script, "gen");
}

/* ---- single functions -------------------------------------------------------------------------------- */

static void test_softmax_center(void **state)
{
    (void)state;
    float *t = load("units", "sc_t", 8 * 128), *c = load("units", "sc_center", 128);
    float *want = load("units", "sc_probs", 8 * 128), *cwant = load("units", "sc_center_new", 128);
    float probs[8 * 128];
    dino_softmax_center_teacher(probs, t, c, 0.04f, 8, 128);
    check("softmax centering", rel_err(probs, want, 8 * 128), TOL_VAL, &g_worst_val);
    double ws[129];
    assert_int_equal(dino_center_update(c, t, 0.9f, 8, 128, ws, NULL), 0);
    check("center update", rel_err(c, cwant, 128), TOL_CENTER, &g_worst_center);
    free(t), free(c), free(want), free(cwant);
}

static void test_sinkhorn(void **state)
{
    (void)state;
    const struct {
        const char *name;
        int64_t n, k;
        float temp;
    } cs[] = {{"sk1", 8, 128, 0.05f}, {"sk2", 37, 50, 0.07f}};
    for (size_t c = 0; c < 2; c++) {
        char nt[16], nq[16];
        snprintf(nt, sizeof nt, "%s_t", cs[c].name);
        snprintf(nq, sizeof nq, "%s_q", cs[c].name);
        int64_t n = cs[c].n, k = cs[c].k;
        float *t = load("units", nt, n * k), *want = load("units", nq, n * k);
        float *q = malloc((size_t)(n * k) * sizeof(float));
        double ws[128];
        assert_non_null(q);
        assert_int_equal(dino_sinkhorn_knopp_teacher(q, t, cs[c].temp, n, k, 3, ws, NULL), 0);
        check(cs[c].name, rel_err(q, want, (size_t)(n * k)), TOL_VAL, &g_worst_val);
        /* an assignment: each sample's row sums to 1 after the last column step */
        for (int64_t i = 0; i < n; i++) {
            double s = 0.0;
            for (int64_t j = 0; j < k; j++)
                s += q[i * k + j];
            assert_true(fabs(s - 1.0) < 1e-5);
        }
        /* in place, and with logits shifted by a constant (the max shift must cancel) */
        for (int64_t i = 0; i < n * k; i++)
            t[i] += 3.0f;
        assert_int_equal(dino_sinkhorn_knopp_teacher(t, t, cs[c].temp, n, k, 3, ws, NULL), 0);
        assert_true(rel_err(t, want, (size_t)(n * k)) < 1e-4);
        free(t), free(want), free(q);
    }
}

/* Two processes simulated by two threads: the reduction meets at a barrier, each thread copies its buffer into
 * its slot, and both then read the element-wise sum or max of the two slots (in slot order, so both get the
 * same bits). */
typedef struct twin_world {
    pthread_barrier_t bar;
    double slot[2][512];
    int calls[2];
} twin_world;

typedef struct twin_rank {
    twin_world *w;
    int rank;
    ssl_reduce red;
    const float *t;  /* this rank's rows */
    int64_t n, k;
    float *q;
    float *center;
    int rc;
} twin_rank;

static int reduce_twin(double *buf, int64_t n, ssl_reduce_op op, void *ctx)
{
    twin_rank *r = ctx;
    twin_world *w = r->w;
    if (n > 512)
        return lvd_fail("twin reduce: %lld values", (long long)n);
    w->calls[r->rank]++;
    memcpy(w->slot[r->rank], buf, (size_t)n * sizeof(double));
    pthread_barrier_wait(&w->bar);
    for (int64_t i = 0; i < n; i++)
        buf[i] = op == SSL_REDUCE_SUM ? w->slot[0][i] + w->slot[1][i]
                                      : (w->slot[0][i] > w->slot[1][i] ? w->slot[0][i] : w->slot[1][i]);
    pthread_barrier_wait(&w->bar);
    return 0;
}

static void *twin_main(void *arg)
{
    twin_rank *r = arg;
    double ws[512];
    r->rc = dino_sinkhorn_knopp_teacher(r->q, r->t, 0.07f, r->n, r->k, 3, ws, &r->red);
    r->rc |= dino_center_update(r->center, r->t, 0.9f, r->n, r->k, ws, &r->red);
    return NULL;
}

static int reduce_fail(double *buf, int64_t n, ssl_reduce_op op, void *ctx)
{
    (void)buf, (void)n, (void)op, (void)ctx;
    return lvd_fail("rank 1 is gone");
}

static void test_reduce(void **state)
{
    (void)state;
    /* sk2's 37 rows split 20 / 17 over two processes must give the one-process Sinkhorn-Knopp and center */
    const int64_t n = 37, k = 50, n0 = 20;
    float *t = load("units", "sk2_t", n * k), *want = load("units", "sk2_q", n * k);
    float *q = malloc((size_t)(n * k) * sizeof(float));
    float c_one[50] = {0}, c0[50] = {0}, c1[50] = {0};
    assert_non_null(q);
    for (int j = 0; j < 50; j++)
        c_one[j] = c0[j] = c1[j] = 0.01f * (float)j;
    double ws[64];
    assert_int_equal(dino_center_update(c_one, t, 0.9f, n, k, ws, NULL), 0);
    twin_world w;
    memset(&w, 0, sizeof w);
    assert_int_equal(pthread_barrier_init(&w.bar, NULL, 2), 0);
    twin_rank r[2] = {{&w, 0, {reduce_twin, &r[0]}, t, n0, k, q, c0, 0},
                      {&w, 1, {reduce_twin, &r[1]}, t + n0 * k, n - n0, k, q + n0 * k, c1, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&th[i], NULL, twin_main, &r[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&w.bar);
    assert_int_equal(r[0].rc, 0);
    assert_int_equal(r[1].rc, 0);
    assert_int_equal(w.calls[0], 3 + 3 + 1); /* max, count, total, each iteration's prototype sums; center */
    assert_int_equal(w.calls[1], w.calls[0]);
    check("sinkhorn over two processes", rel_err(q, want, (size_t)(n * k)), TOL_VAL, &g_worst_val);
    assert_true(rel_err(c0, c_one, 50) < TOL_CENTER);
    assert_memory_equal(c0, c1, sizeof c0);
    /* a process alone on its rows gets another answer: the reduction matters */
    assert_int_equal(dino_sinkhorn_knopp_teacher(q, t, 0.07f, n0, k, 3, ws, NULL), 0);
    assert_true(rel_err(q, want, (size_t)(n0 * k)) > 1e-3);
    ssl_reduce bad = {reduce_fail, NULL};
    assert_int_equal(dino_sinkhorn_knopp_teacher(q, t, 0.05f, n, k, 3, ws, &bad), -1);
    assert_non_null(strstr(lvd_errmsg(), "rank 1 is gone"));
    assert_int_equal(dino_center_update(c0, t, 0.9f, n, k, ws, &bad), -1);
    free(t), free(want), free(q);
}

static void test_dino_xent(void **state)
{
    (void)state;
    float *s = load("units", "dx_s", 12 * 128), *t = load("units", "dx_t", 8 * 128);
    float *want = load("units", "dx_ds", 12 * 128);
    float ds[12 * 128] = {0};
    double ws[12];
    double l = dino_loss_xent(ds, 1.0, s, 3, t, 2, 4, 128, 0.1f, ws);
    check("dino xent value", rel1(l, value("dx_loss")), TOL_VAL, &g_worst_val);
    check("dino xent d student", rel_err(ds, want, 12 * 128), TOL_GRAD, &g_worst_grad);
    /* accumulates, times gscale: now 1 + 2 = 3 times the gradient */
    dino_loss_xent(ds, 2.0, s, 3, t, 2, 4, 128, 0.1f, ws);
    for (int i = 0; i < 12 * 128; i++)
        want[i] *= 3.0f;
    assert_true(rel_err(ds, want, 12 * 128) < TOL_GRAD);
    free(s), free(t), free(want);
}

static void test_ibot(void **state)
{
    (void)state;
    float *s = load("units", "ib_s", 10 * 96), *t = load("units", "ib_t", 10 * 96);
    float *w = load("units", "ib_w", 10), *want = load("units", "ib_ds", 10 * 96);
    float ds[10 * 96] = {0};
    double ws[10];
    double l = ibot_loss_forward_masked(ds, 1.0, s, t, w, 10, 4, 96, 0.1f, ws);
    check("ibot value", rel1(l, value("ib_loss")), TOL_VAL, &g_worst_val);
    check("ibot d student", rel_err(ds, want, 10 * 96), TOL_GRAD, &g_worst_grad);
    free(s), free(t), free(w), free(want);
}

static void test_koleo(void **state)
{
    (void)state;
    const struct { const char *name; int64_t n, d; } cs[] = {{"ko", 6, 20}, {"ko_dup", 5, 8}};
    for (size_t c = 0; c < 2; c++) {
        char nx[16], ndx[16], nl[16];
        snprintf(nx, sizeof nx, "%s_x", cs[c].name);
        snprintf(ndx, sizeof ndx, "%s_dx", cs[c].name);
        snprintf(nl, sizeof nl, "%s_loss", cs[c].name);
        int64_t n = cs[c].n, d = cs[c].d;
        float *x = load("units", nx, n * d), *want = load("units", ndx, n * d);
        float *dx = calloc((size_t)(n * d), sizeof(float)), *ws = malloc(koleo_workspace_floats(n, d) * sizeof(float));
        assert_non_null(dx);
        assert_non_null(ws);
        double l = koleo_loss(dx, 1.0, x, n, d, ws);
        char what[64];
        snprintf(what, sizeof what, "%s value", cs[c].name);
        check(what, rel1(l, value(nl)), TOL_VAL, &g_worst_val);
        snprintf(what, sizeof what, "%s d x", cs[c].name);
        check(what, rel_err(dx, want, (size_t)(n * d)), TOL_GRAD, &g_worst_grad);
        free(x), free(want), free(dx), free(ws);
    }
}

static void test_mask_select(void **state)
{
    (void)state;
    float *mf = load("units", "mk_masks", 4 * 16);
    uint8_t masks[64];
    int64_t want_m = 0;
    for (int i = 0; i < 64; i++) {
        masks[i] = mf[i] != 0.0f;
        want_m += masks[i];
    }
    float *idx = load("units", "mk_idx", want_m), *w = load("units", "mk_w", want_m);
    int64_t got_idx[64];
    float got_w[64];
    assert_int_equal(ibot_mask_select(got_idx, got_w, masks, 4, 16), want_m);
    for (int64_t i = 0; i < want_m; i++) {
        assert_int_equal(got_idx[i], (int64_t)idx[i]);
        assert_true(fabsf(got_w[i] - w[i]) <= 1e-7f * w[i]);
    }
    free(mf), free(idx), free(w);
}

/* ---- whole steps --------------------------------------------------------------------------------------- */

typedef struct step_case {
    char name[64], centering[32];
    int64_t b, n_local, d, n_patches, dino_k, ibot_k, hidden, bn, upperbound;
    int separate, nlayers, ibot_nlayers;
    float teacher_temp;
} step_case;

static void load_head(const char *sub, const char *prefix, dino_head *h)
{
    for (int i = 0; i < dino_head_ntensors(&h->cfg); i++) {
        dino_head_tensor t;
        assert_int_equal(dino_head_tensor_at(&h->cfg, i, &t), 0);
        char name[96];
        snprintf(name, sizeof name, "%s%s", prefix, t.name);
        float *p = load(sub, name, (int64_t)t.count);
        memcpy(h->params + t.offset, p, t.count * sizeof(float));
        free(p);
    }
}

static void check_head_grads(const step_case *c, const char *prefix, const dino_head *h)
{
    for (int i = 0; i < dino_head_ntensors(&h->cfg); i++) {
        dino_head_tensor t;
        dino_head_tensor_at(&h->cfg, i, &t);
        char name[96], what[160];
        snprintf(name, sizeof name, "grad.%s%s", prefix, t.name);
        float *want = load(c->name, name, (int64_t)t.count);
        snprintf(what, sizeof what, "%s: d %s%s", c->name, prefix, t.name);
        check(what, rel_err(h->grads + t.offset, want, t.count), TOL_GRAD, &g_worst_grad);
        free(want);
    }
}

static void run_step(const step_case *c)
{
    const int64_t B = c->b, nl = c->n_local, D = c->d, np = c->n_patches, K = c->dino_k, Kp = c->ibot_k;
    const int64_t nlb = nl * B, ng = 2 * B;
    float *g_cls = load(c->name, "g_cls", ng * D), *l_cls = load(c->name, "l_cls", nlb * D);
    float *g_patch = load(c->name, "g_patch", ng * np * D), *t_cls = load(c->name, "t_cls", ng * D);
    float *t_patch = load(c->name, "t_patch", ng * np * D), *mf = load(c->name, "masks", ng * np);
    uint8_t *masks = malloc((size_t)(ng * np));
    int64_t *idx = malloc((size_t)(ng * np) * sizeof(int64_t));
    float *mw = malloc((size_t)(ng * np) * sizeof(float));
    assert_true(masks && idx && mw);
    for (int64_t i = 0; i < ng * np; i++)
        masks[i] = mf[i] != 0.0f;
    const int64_t M = ibot_mask_select(idx, mw, masks, ng, np);
    assert_true(M > 0 && M <= c->upperbound);

    /* student rows: the shared head sees [local CLS, global CLS, masked patches] in one pass, as the code */
    const int64_t rows = nlb + ng + (c->separate ? 0 : M);
    float *x = malloc((size_t)(rows * D) * sizeof(float)), *xp = malloc((size_t)(M * D) * sizeof(float));
    float *tx = malloc((size_t)((ng + M) * D) * sizeof(float));
    assert_true(x && xp && tx);
    memcpy(x, l_cls, (size_t)(nlb * D) * sizeof(float));
    memcpy(x + nlb * D, g_cls, (size_t)(ng * D) * sizeof(float));
    memcpy(tx, t_cls, (size_t)(ng * D) * sizeof(float));
    for (int64_t i = 0; i < M; i++) {
        memcpy(xp + i * D, g_patch + idx[i] * D, (size_t)D * sizeof(float));
        memcpy(tx + (ng + i) * D, t_patch + idx[i] * D, (size_t)D * sizeof(float));
    }
    if (!c->separate)
        memcpy(x + (nlb + ng) * D, xp, (size_t)(M * D) * sizeof(float));

    dino_head_config dc = {D, c->hidden, c->bn, K, c->nlayers}, ic = {D, c->hidden, c->bn, Kp, c->ibot_nlayers};
    dino_head sh, th, sih, tih;
    dino_head_run sr, tr, sir, tir;
    assert_int_equal(dino_head_init(&sh, &dc, 1), 0);
    assert_int_equal(dino_head_init(&th, &dc, 0), 0);
    load_head(c->name, "s.", &sh);
    load_head(c->name, "t.", &th);
    assert_int_equal(dino_head_run_init(&sr, &dc, rows, 1), 0);
    assert_int_equal(dino_head_run_init(&tr, &dc, ng + M, 0), 0);
    float *logits = malloc((size_t)(rows * K) * sizeof(float)), *tlog = malloc((size_t)((ng + M) * K) * sizeof(float));
    float *plog = malloc((size_t)(M * Kp) * sizeof(float)), *tplog = malloc((size_t)(M * Kp) * sizeof(float));
    assert_true(logits && tlog && plog && tplog);
    assert_int_equal(dino_head_forward(&sh, &sr, logits, x, rows), 0);
    if (c->separate) {
        assert_int_equal(dino_head_init(&sih, &ic, 1), 0);
        assert_int_equal(dino_head_init(&tih, &ic, 0), 0);
        load_head(c->name, "si.", &sih);
        load_head(c->name, "ti.", &tih);
        assert_int_equal(dino_head_run_init(&sir, &ic, M, 1), 0);
        assert_int_equal(dino_head_run_init(&tir, &ic, M, 0), 0);
        assert_int_equal(dino_head_forward(&sih, &sir, plog, xp, M), 0);
        assert_int_equal(dino_head_forward(&th, &tr, tlog, tx, ng), 0);
        assert_int_equal(dino_head_forward(&tih, &tir, tplog, tx + ng * D, M), 0);
    } else {
        assert_int_equal(dino_head_forward(&th, &tr, tlog, tx, ng + M), 0);
    }

    ssl_loss_config lc;
    ssl_loss_config_default(&lc, B, nl, K, Kp, D, c->upperbound);
    lc.centering = strcmp(c->centering, "centering") == 0 ? SSL_CENTERING_SOFTMAX : SSL_CENTERING_SINKHORN;
    ssl_loss L;
    assert_int_equal(ssl_loss_init(&L, &lc), 0);
    float *c0 = load(c->name, "dino_center0", K), *ci0 = load(c->name, "ibot_center0", Kp);
    memcpy(L.dino_center, c0, (size_t)K * sizeof(float));
    memcpy(L.ibot_center, ci0, (size_t)Kp * sizeof(float));

    float *dlog = calloc((size_t)(rows * K), sizeof(float)), *dplog = calloc((size_t)(M * Kp), sizeof(float));
    float *dgcls = calloc((size_t)(ng * D), sizeof(float));
    assert_true(dlog && dplog && dgcls);
    ssl_loss_inputs in = {
        .student_global = logits + nlb * K,
        .student_local = logits,
        .teacher_global = tlog,
        .student_cls = g_cls,
        .student_patch = c->separate ? plog : logits + (nlb + ng) * K,
        .teacher_patch = c->separate ? tplog : tlog + ng * K,
        .masks_weight = mw,
        .n_masked = M,
    };
    ssl_loss_grads gr = {
        .student_global = dlog + nlb * K,
        .student_local = dlog,
        .student_cls = dgcls,
        .student_patch = c->separate ? dplog : dlog + (nlb + ng) * K,
    };
    ssl_loss_terms terms;
    /* The trainer's in-place variant on copies, before the step moves the centers: the iBOT targets over the
     * teacher's patch logits, each logits gradient over its logits. Same values (== per element: 0 + x and x
     * differ only in the sign of a zero). */
    {
        ssl_loss_config ic2 = lc;
        ic2.patch_targets_in_place = 1;
        ssl_loss L2;
        assert_int_equal(ssl_loss_init(&L2, &ic2), 0);
        assert_null(L2.ibot_targets);
        memcpy(L2.dino_center, c0, (size_t)K * sizeof(float));
        memcpy(L2.ibot_center, ci0, (size_t)Kp * sizeof(float));
        float *lg2 = malloc((size_t)(rows * K) * sizeof(float)), *pl2 = malloc((size_t)(M * Kp) * sizeof(float));
        float *tp2 = malloc((size_t)(M * Kp) * sizeof(float)), *dg2 = calloc((size_t)(ng * D), sizeof(float));
        assert_true(lg2 && pl2 && tp2 && dg2);
        memcpy(lg2, logits, (size_t)(rows * K) * sizeof(float));
        memcpy(pl2, plog, (size_t)(M * Kp) * sizeof(float));
        memcpy(tp2, c->separate ? tplog : tlog + ng * K, (size_t)(M * Kp) * sizeof(float));
        ssl_loss_inputs in2 = in;
        in2.student_global = lg2 + nlb * K;
        in2.student_local = lg2;
        in2.student_patch = c->separate ? pl2 : lg2 + (nlb + ng) * K;
        in2.teacher_patch = NULL;
        in2.teacher_patch_rw = tp2;
        ssl_loss_grads g2 = {.student_global = lg2 + nlb * K, .student_local = lg2, .student_cls = dg2,
                             .student_patch = c->separate ? pl2 : lg2 + (nlb + ng) * K};
        ssl_loss_terms t2, t1;
        ssl_loss L1;
        assert_int_equal(ssl_loss_init(&L1, &lc), 0);
        memcpy(L1.dino_center, c0, (size_t)K * sizeof(float));
        memcpy(L1.ibot_center, ci0, (size_t)Kp * sizeof(float));
        float *d1 = calloc((size_t)(rows * K), sizeof(float)), *dp1 = calloc((size_t)(M * Kp), sizeof(float));
        float *dc1 = calloc((size_t)(ng * D), sizeof(float));
        ssl_loss_grads g1 = {.student_global = d1 + nlb * K, .student_local = d1, .student_cls = dc1,
                             .student_patch = c->separate ? dp1 : d1 + (nlb + ng) * K};
        assert_int_equal(ssl_loss_step(&L1, &in, c->teacher_temp, &t1, &g1), 0);
        assert_int_equal(ssl_loss_step(&L2, &in2, c->teacher_temp, &t2, &g2), 0);
        assert_memory_equal(&t1, &t2, sizeof t1);
        assert_memory_equal(L1.dino_center, L2.dino_center, (size_t)K * sizeof(float));
        assert_memory_equal(L1.ibot_center, L2.ibot_center, (size_t)Kp * sizeof(float));
        for (int64_t i = 0; i < rows * K; i++)
            if (!(lg2[i] == d1[i]))
                fail_msg("%s: in-place logits gradient %lld: %g, not %g", c->name, (long long)i, lg2[i], d1[i]);
        if (c->separate)
            for (int64_t i = 0; i < M * Kp; i++)
                if (!(pl2[i] == dp1[i]))
                    fail_msg("%s: in-place iBOT gradient %lld differs", c->name, (long long)i);
        for (int64_t i = 0; i < M * Kp; i++)
            if (!(tp2[i] == L1.ibot_targets[i]))
                fail_msg("%s: in-place iBOT target %lld: %g, not %g", c->name, (long long)i, tp2[i],
                         L1.ibot_targets[i]);
        free(lg2), free(pl2), free(tp2), free(dg2), free(d1), free(dp1), free(dc1);
        ssl_loss_free(&L1);
        ssl_loss_free(&L2);
    }
    assert_int_equal(ssl_loss_step(&L, &in, c->teacher_temp, &terms, &gr), 0);

    char path[4096];
    snprintf(path, sizeof path, "%s/%s/terms.txt", g_gen, c->name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    double want[5];
    assert_int_equal(fscanf(f, "%lf %lf %lf %lf %lf", &want[0], &want[1], &want[2], &want[3], &want[4]), 5);
    fclose(f);
    const double got[5] = {terms.dino_local_crops_loss, terms.dino_global_crops_loss, terms.koleo_loss,
                           terms.ibot_loss, terms.total};
    const char *tn[5] = {"dino_local_crops_loss", "dino_global_crops_loss", "koleo_loss", "ibot_loss", "total"};
    for (int i = 0; i < 5; i++) {
        char what[128];
        snprintf(what, sizeof what, "%s: %s (%.6f)", c->name, tn[i], got[i]);
        check(what, rel1(got[i], want[i]), TOL_VAL, &g_worst_val);
    }
    float *cw = load(c->name, "dino_center", K), *ciw = load(c->name, "ibot_center", Kp);
    char what[160];
    snprintf(what, sizeof what, "%s: dino center", c->name);
    check(what, rel_err(L.dino_center, cw, (size_t)K), TOL_CENTER, &g_worst_center);
    snprintf(what, sizeof what, "%s: ibot center", c->name);
    check(what, rel_err(L.ibot_center, ciw, (size_t)Kp), TOL_CENTER, &g_worst_center);
    if (lc.centering == SSL_CENTERING_SOFTMAX)
        assert_true(rel_err(L.dino_center, c0, (size_t)K) > 1e-3); /* the update did move it */

    /* backward through the heads, then the backbone outputs' gradients as the code's autograd sees them */
    float *dx = calloc((size_t)(rows * D), sizeof(float)), *dxp = calloc((size_t)(M * D), sizeof(float));
    float *dgp = calloc((size_t)(ng * np * D), sizeof(float));
    assert_true(dx && dxp && dgp);
    assert_int_equal(dino_head_backward(&sh, &sr, dx, dlog, x, rows), 0);
    const float *dpatch_rows = dx + (nlb + ng) * D;
    if (c->separate) {
        assert_int_equal(dino_head_backward(&sih, &sir, dxp, dplog, xp, M), 0);
        dpatch_rows = dxp;
    }
    for (int64_t i = 0; i < ng * D; i++)
        dgcls[i] += dx[nlb * D + i];
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < D; j++)
            dgp[idx[i] * D + j] += dpatch_rows[i * D + j];
    float *w1 = load(c->name, "grad.g_cls", ng * D), *w2 = load(c->name, "grad.l_cls", nlb * D);
    float *w3 = load(c->name, "grad.g_patch", ng * np * D);
    snprintf(what, sizeof what, "%s: d global CLS", c->name);
    check(what, rel_err(dgcls, w1, (size_t)(ng * D)), TOL_GRAD, &g_worst_grad);
    snprintf(what, sizeof what, "%s: d local CLS", c->name);
    check(what, rel_err(dx, w2, (size_t)(nlb * D)), TOL_GRAD, &g_worst_grad);
    snprintf(what, sizeof what, "%s: d patch tokens", c->name);
    check(what, rel_err(dgp, w3, (size_t)(ng * np * D)), TOL_GRAD, &g_worst_grad);
    check_head_grads(c, "s.", &sh);
    if (c->separate) {
        check_head_grads(c, "si.", &sih);
        dino_head_free(&sih), dino_head_free(&tih), dino_head_run_free(&sir), dino_head_run_free(&tir);
    }
    dino_head_free(&sh), dino_head_free(&th), dino_head_run_free(&sr), dino_head_run_free(&tr);
    ssl_loss_free(&L);
    free(g_cls), free(l_cls), free(g_patch), free(t_cls), free(t_patch), free(mf), free(masks), free(idx), free(mw);
    free(x), free(xp), free(tx), free(logits), free(tlog), free(plog), free(tplog), free(c0), free(ci0);
    free(dlog), free(dplog), free(dgcls), free(cw), free(ciw), free(dx), free(dxp), free(dgp), free(w1), free(w2);
    free(w3);
}

static void test_steps(void **state)
{
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s/cases.txt", g_gen);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    step_case c;
    int n = 0, seen_sep = 0, seen_sk = 0, seen_l1 = 0;
    long long v[11];
    while (fscanf(f, "%63s %lld %lld %lld %lld %lld %lld %lld %d %d %lld %lld %31s %f %lld", c.name, &v[0],
                  &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &c.nlayers, &c.ibot_nlayers, &v[7], &v[8], c.centering,
                  &c.teacher_temp, &v[9]) == 15) {
        c.b = v[0], c.n_local = v[1], c.d = v[2], c.n_patches = v[3], c.dino_k = v[4], c.ibot_k = v[5];
        c.separate = (int)v[6], c.hidden = v[7], c.bn = v[8], c.upperbound = v[9];
        seen_sep |= c.separate;
        seen_sk |= strcmp(c.centering, "sinkhorn_knopp") == 0;
        seen_l1 |= c.nlayers == 1 || c.ibot_nlayers == 1;
        run_step(&c);
        n++;
    }
    fclose(f);
    assert_true(n >= 3 && seen_sep && seen_sk && seen_l1);
    printf("# worst: values %.2e (tolerance %.0e), centers %.2e (%.0e), gradients %.2e (%.0e)\n", g_worst_val,
           TOL_VAL, g_worst_center, TOL_CENTER, g_worst_grad, TOL_GRAD);
}

static void test_bad_args(void **state)
{
    (void)state;
    ssl_loss_config c;
    ssl_loss L;
    ssl_loss_config_default(&c, 0, 2, 16, 16, 8, 4);
    assert_int_equal(ssl_loss_init(&L, &c), -1);
    assert_non_null(strstr(lvd_errmsg(), "batch"));
    ssl_loss_config_default(&c, 2, 2, 16, 16, 8, 4);
    c.student_temp = 0.0f;
    assert_int_equal(ssl_loss_init(&L, &c), -1);
    ssl_loss_config_default(&c, 2, 0, 16, 16, 8, 4);
    assert_int_equal(ssl_loss_init(&L, &c), 0);
    float s[4 * 16] = {0}, cls[4 * 8];
    for (int i = 0; i < 32; i++)
        cls[i] = (float)(i % 7) - 3.0f;
    ssl_loss_inputs in = {s, NULL, s, cls, s, s, NULL, 5, NULL};
    ssl_loss_terms t;
    assert_int_equal(ssl_loss_step(&L, &in, 0.04f, &t, NULL), -1); /* more masked tokens than max_masked */
    in.n_masked = 0;
    assert_int_equal(ssl_loss_step(&L, &in, 0.0f, &t, NULL), -1);
    /* no local crops and no masks: only the global term (uniform logits: log 16 each) and KoLeo */
    assert_int_equal(ssl_loss_step(&L, &in, 0.04f, &t, NULL), 0);
    assert_true(t.dino_local_crops_loss == 0.0 && t.ibot_loss == 0.0);
    assert_true(fabs(t.dino_global_crops_loss - 2.0 * log(16.0) / 3.0) < 1e-6);
    assert_true(fabs(t.total - t.dino_global_crops_loss - 2.0 * t.koleo_loss) < 1e-9);
    ssl_loss_free(&L);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s TESTS_SOURCE_DIR\n", argv[0]);
        return 2;
    }
    snprintf(g_script, sizeof g_script, "%s/unit/train/loss_ref.py", argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softmax_center), cmocka_unit_test(test_sinkhorn), cmocka_unit_test(test_reduce),
        cmocka_unit_test(test_dino_xent),      cmocka_unit_test(test_ibot),     cmocka_unit_test(test_koleo),
        cmocka_unit_test(test_mask_select),    cmocka_unit_test(test_steps),    cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, setup, scratch_teardown);
}
