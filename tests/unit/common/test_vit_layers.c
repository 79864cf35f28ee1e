/* Finite-difference checks of every ViT layer's backward pass, and of the whole model's (vit_backward), on tiny
 * sizes: the analytic gradient of L = sum(out * r) (r random) must match central differences of L. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "vit.h"
#include "vit_layers.h"

static uint64_t rng_state = 88172645463325252ull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (2.0 / 16777216.0) - 1.0);
}
static float *rnd(size_t n, float scale)
{
    float *p = malloc(n * sizeof(float));
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale;
    return p;
}
static float *zeros(size_t n)
{
    float *p = calloc(n, sizeof(float));
    assert_non_null(p);
    return p;
}
static double dot(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* The loss as a function of the current contents of the probed buffer. */
typedef double (*loss_fn)(void *ctx);

/* Compares grad (analytic) with central differences of loss w.r.t. the elements of x (n values): every one,
 * or for large tensors 40 spread evenly over it (first and last included). */
static void check_grad(const char *what, float *x, const float *grad, size_t n, loss_fn f, void *ctx)
{
    const float eps = 2e-3f;
    const size_t probes = n <= 40 ? n : 40;
    double worst = 0;
    size_t worst_i = 0;
    for (size_t k = 0; k < probes; k++) {
        size_t i = probes == n ? k : k * (n - 1) / (probes - 1);
        float keep = x[i];
        x[i] = keep + eps;
        double lp = f(ctx);
        x[i] = keep - eps;
        double lm = f(ctx);
        x[i] = keep;
        double num = (lp - lm) / (2.0 * eps);
        double err = fabs(num - grad[i]) / (2e-2 + fabs(num)); /* float forward: ~1e-4 absolute FD noise */
        if (err > worst) {
            worst = err;
            worst_i = i;
        }
    }
    if (worst > 3e-2)
        fail_msg("%s: gradient %zu off by %.3g relative (analytic %g)", what, worst_i, worst, (double)grad[worst_i]);
}

/* ---- linear ---- */
typedef struct {
    float *x, *w, *b, *r, *out;
    int64_t n, in, oc;
} lin_ctx;
static double lin_loss(void *c)
{
    lin_ctx *k = c;
    linear_forward(k->out, k->x, k->w, k->b, 1, k->n, k->in, k->oc);
    return dot(k->out, k->r, (size_t)(k->n * k->oc));
}
static void test_linear(void **st)
{
    (void)st;
    lin_ctx k = {.n = 5, .in = 7, .oc = 6};
    k.x = rnd(35, 1), k.w = rnd(42, 1), k.b = rnd(6, 1), k.r = rnd(30, 1), k.out = zeros(30);
    float *dx = zeros(35), *dw = zeros(42), *db = zeros(6);
    lin_loss(&k);
    linear_backward(dx, dw, db, k.r, k.x, k.w, k.n, k.in, k.oc);
    check_grad("linear dx", k.x, dx, 35, lin_loss, &k);
    check_grad("linear dw", k.w, dw, 42, lin_loss, &k);
    check_grad("linear db", k.b, db, 6, lin_loss, &k);
    /* Backward accumulates: a second call doubles every gradient. */
    float first = dw[3];
    linear_backward(dx, dw, db, k.r, k.x, k.w, k.n, k.in, k.oc);
    assert_float_equal(dw[3], 2 * first, 1e-5);
    free(k.x), free(k.w), free(k.b), free(k.r), free(k.out), free(dx), free(dw), free(db);
}

/* A sample's rows of linear_forward (and of the patch embedding built on it) do not depend on the batch: the
 * same sample alone, at another position, among other samples, or with another thread count gives the same
 * bits (vit.h, batch invariance). 400 output channels: a full column block and a partial one; odd row count. */
static void test_linear_batch_invariant(void **st)
{
    (void)st;
    const int64_t bsz = 5, t = 37, in = 96, oc = 400;
    float *x = rnd((size_t)(bsz * t * in), 1), *w = rnd((size_t)(oc * in), 0.1f), *b = rnd((size_t)oc, 1);
    float *all = zeros((size_t)(bsz * t * oc)), *one = zeros((size_t)(t * oc));
    float *rev_x = zeros((size_t)(bsz * t * in)), *rev = zeros((size_t)(bsz * t * oc));
    for (int64_t s = 0; s < bsz; s++)
        memcpy(rev_x + (bsz - 1 - s) * t * in, x + s * t * in, sizeof(float) * (size_t)(t * in));
    for (int threads = 1; threads <= 2; threads++) {
        vit_set_threads(threads);
        linear_forward(all, x, w, b, bsz, t, in, oc);
        linear_forward(rev, rev_x, w, b, bsz, t, in, oc);
        for (int64_t s = 0; s < bsz; s++) {
            linear_forward(one, x + s * t * in, w, b, 1, t, in, oc);
            assert_memory_equal(one, all + s * t * oc, sizeof(float) * (size_t)(t * oc));
            assert_memory_equal(one, rev + (bsz - 1 - s) * t * oc, sizeof(float) * (size_t)(t * oc));
        }
    }
    /* The patch embedding: image 2 of 3 against image 2 alone. */
    const int64_t h = 28, wd = 42, p = 7, d = 40, n = (h / p) * (wd / p), px = 3 * h * wd;
    float *img = rnd((size_t)(3 * px), 1), *pw = rnd((size_t)(d * 3 * p * p), 0.1f), *pb = rnd((size_t)d, 1);
    float *cols = zeros((size_t)(3 * n * 3 * p * p)), *pe3 = zeros((size_t)(3 * n * d));
    float *pe1 = zeros((size_t)(n * d));
    patch_embed_forward(pe3, cols, img, pw, pb, 3, h, wd, p, d);
    patch_embed_forward(pe1, cols, img + 2 * px, pw, pb, 1, h, wd, p, d);
    assert_memory_equal(pe1, pe3 + 2 * n * d, sizeof(float) * (size_t)(n * d));
    vit_set_threads(2);
    free(x), free(w), free(b), free(all), free(one), free(rev_x), free(rev);
    free(img), free(pw), free(pb), free(cols), free(pe3), free(pe1);
}

/* The elementwise layers run over flat ranges split between threads, so an element may fall in a vectorised
 * loop body or in a scalar tail depending on the batch: both must give the same bits (no FMA contraction,
 * meson.build). Every start offset 0..15 and both thread counts against one reference. */
static void test_elementwise_position_invariant(void **st)
{
    (void)st;
    const int64_t n = 1001, h = 77;
    float *x = rnd((size_t)n, 4), *ref = zeros((size_t)n), *got = zeros((size_t)n);
    float *xs = rnd((size_t)(2 * h * 13), 4), *sref = zeros((size_t)(h * 13)), *sgot = zeros((size_t)(h * 13));
    vit_set_threads(1);
    gelu_forward(ref, x, n);
    swiglu_forward(sref, xs, 13, h);
    for (int threads = 1; threads <= 2; threads++) {
        vit_set_threads(threads);
        for (int64_t k = 0; k < 16; k++) {
            gelu_forward(got + k, x + k, n - k);
            assert_memory_equal(got + k, ref + k, sizeof(float) * (size_t)(n - k));
        }
        /* SwiGLU row by row: row 5 alone equals row 5 of all 13. */
        swiglu_forward(sgot, xs + 5 * 2 * h, 1, h);
        assert_memory_equal(sgot, sref + 5 * h, sizeof(float) * (size_t)h);
    }
    vit_set_threads(2);
    free(x), free(ref), free(got), free(xs), free(sref), free(sgot);
}

/* ---- layernorm ---- */
typedef struct {
    float *x, *w, *b, *r, *out, *mean, *rstd;
    int64_t n, c;
} ln_ctx;
static double ln_loss(void *c)
{
    ln_ctx *k = c;
    layernorm_forward(k->out, k->mean, k->rstd, k->x, k->w, k->b, k->n, k->c);
    return dot(k->out, k->r, (size_t)(k->n * k->c));
}
static void test_layernorm(void **st)
{
    (void)st;
    ln_ctx k = {.n = 4, .c = 9};
    k.x = rnd(36, 2), k.w = rnd(9, 1), k.b = rnd(9, 1), k.r = rnd(36, 1), k.out = zeros(36);
    k.mean = zeros(4), k.rstd = zeros(4);
    ln_loss(&k);
    /* Normalised rows: mean 0 and variance 1 before the affine part. */
    double m = 0;
    for (int j = 0; j < 9; j++)
        m += (k.x[j] - k.mean[0]);
    assert_true(fabs(m) < 1e-5);
    float *dx = zeros(36), *dw = zeros(9), *db = zeros(9);
    layernorm_backward(dx, dw, db, k.r, k.x, k.w, k.mean, k.rstd, k.n, k.c);
    check_grad("layernorm dx", k.x, dx, 36, ln_loss, &k);
    check_grad("layernorm dw", k.w, dw, 9, ln_loss, &k);
    check_grad("layernorm db", k.b, db, 9, ln_loss, &k);
    free(k.x), free(k.w), free(k.b), free(k.r), free(k.out), free(k.mean), free(k.rstd), free(dx), free(dw), free(db);
}

/* ---- activations ---- */
typedef struct {
    float *x, *r, *out;
    int64_t n, h;
    int swiglu;
} act_ctx;
static double act_loss(void *c)
{
    act_ctx *k = c;
    if (k->swiglu) {
        swiglu_forward(k->out, k->x, k->n, k->h);
        return dot(k->out, k->r, (size_t)(k->n * k->h));
    }
    gelu_forward(k->out, k->x, k->n);
    return dot(k->out, k->r, (size_t)k->n);
}
static void test_gelu(void **st)
{
    (void)st;
    act_ctx k = {.n = 40};
    k.x = rnd(40, 4), k.r = rnd(40, 1), k.out = zeros(40);
    act_loss(&k);
    for (int i = 0; i < 40; i++) /* exact (erf) GELU, not the tanh approximation */
        assert_true(fabs(k.out[i] - 0.5 * k.x[i] * (1.0 + erf(k.x[i] / sqrt(2.0)))) < 1e-6);
    float *dx = zeros(40);
    gelu_backward(dx, k.r, k.x, k.n);
    check_grad("gelu", k.x, dx, 40, act_loss, &k);
    free(k.x), free(k.r), free(k.out), free(dx);
}
static void test_swiglu(void **st)
{
    (void)st;
    act_ctx k = {.n = 3, .h = 5, .swiglu = 1};
    k.x = rnd(30, 3), k.r = rnd(15, 1), k.out = zeros(15);
    act_loss(&k);
    double x1 = k.x[10 + 2], x2 = k.x[10 + 5 + 2]; /* row 1, column 2 */
    assert_true(fabs(k.out[5 + 2] - x1 / (1 + exp(-x1)) * x2) < 1e-6);
    float *dx = zeros(30);
    swiglu_backward(dx, k.r, k.x, k.n, k.h);
    check_grad("swiglu", k.x, dx, 30, act_loss, &k);
    free(k.x), free(k.r), free(k.out), free(dx);
}

/* ---- residual with layerscale and drop path ---- */
typedef struct {
    float *x, *y, *g, *s, *r, *out;
} res_ctx;
static double res_loss(void *c)
{
    res_ctx *k = c;
    residual_forward(k->out, k->x, k->y, k->g, k->s, 2, 3, 4);
    return dot(k->out, k->r, 24);
}
static void test_residual(void **st)
{
    (void)st;
    float s[2] = {0.0f, 1.25f}; /* sample 0 dropped, sample 1 kept with 1 / keep */
    res_ctx k = {.x = rnd(24, 1), .y = rnd(24, 1), .g = rnd(4, 1), .s = s, .r = rnd(24, 1), .out = zeros(24)};
    res_loss(&k);
    assert_float_equal(k.out[0], k.x[0], 0); /* dropped branch */
    assert_float_equal(k.out[12 + 1], k.x[13] + 1.25f * k.g[1] * k.y[13], 1e-6);
    float *dx = zeros(24), *dy = zeros(24), *dg = zeros(4);
    residual_backward(dx, dy, dg, k.r, k.y, k.g, k.s, 2, 3, 4);
    check_grad("residual dx", k.x, dx, 24, res_loss, &k);
    check_grad("residual dy", k.y, dy, 24, res_loss, &k);
    check_grad("residual dgamma", k.g, dg, 4, res_loss, &k);
    free(k.x), free(k.y), free(k.g), free(k.r), free(k.out), free(dx), free(dy), free(dg);
}

/* ---- attention ---- */
typedef struct {
    float *qkv, *r, *out, *att;
    int64_t b, t, c, h;
} att_ctx;
static double att_loss(void *c)
{
    att_ctx *k = c;
    assert_int_equal(attention_forward(k->out, k->att, k->qkv, k->b, k->t, k->c, k->h), 0);
    return dot(k->out, k->r, (size_t)(k->b * k->t * k->c));
}
static void test_attention(void **st)
{
    (void)st;
    att_ctx k = {.b = 2, .t = 5, .c = 8, .h = 2};
    size_t nq = 2 * 5 * 24, no = 2 * 5 * 8;
    k.qkv = rnd(nq, 1.5), k.r = rnd(no, 1), k.out = zeros(no), k.att = zeros(2 * 2 * 25);
    att_loss(&k);
    /* Keeping the probabilities or not gives the same output; rows of att sum to 1. */
    float *out2 = zeros(no);
    assert_int_equal(attention_forward(out2, NULL, k.qkv, k.b, k.t, k.c, k.h), 0);
    assert_memory_equal(out2, k.out, no * sizeof(float));
    double rs = 0;
    for (int j = 0; j < 5; j++)
        rs += k.att[5 + j];
    assert_true(fabs(rs - 1.0) < 1e-6);
    /* One output by hand: sample 1, token 3, head 1, channel 2 of the head. */
    {
        int64_t bi = 1, ti = 3, hh = 1, dh = 4, ch = 2;
        double sc[5], mx = -1e30, sum = 0, o = 0;
        for (int j = 0; j < 5; j++) {
            double s = 0;
            for (int e = 0; e < dh; e++)
                s += k.qkv[(bi * 5 + ti) * 24 + hh * dh + e] * k.qkv[(bi * 5 + j) * 24 + 8 + hh * dh + e];
            sc[j] = s / 2.0;
            mx = sc[j] > mx ? sc[j] : mx;
        }
        for (int j = 0; j < 5; j++)
            sum += exp(sc[j] - mx);
        for (int j = 0; j < 5; j++)
            o += exp(sc[j] - mx) / sum * k.qkv[(bi * 5 + j) * 24 + 16 + hh * dh + ch];
        assert_true(fabs(o - k.out[(bi * 5 + ti) * 8 + hh * dh + ch]) < 1e-5);
    }
    float *dq = zeros(nq);
    assert_int_equal(attention_backward(dq, k.r, k.qkv, k.att, k.b, k.t, k.c, k.h), 0);
    check_grad("attention", k.qkv, dq, nq, att_loss, &k);
    /* Without saved probabilities (att NULL, as training runs): recomputed, the same bits. */
    float *dq2 = zeros(nq);
    assert_int_equal(attention_backward(dq2, k.r, k.qkv, NULL, k.b, k.t, k.c, k.h), 0);
    assert_memory_equal(dq, dq2, nq * sizeof *dq);
    free(k.qkv), free(k.r), free(k.out), free(k.att), free(out2), free(dq), free(dq2);
}

/* ---- patch embedding ---- */
typedef struct {
    float *x, *w, *b, *r, *out, *cols;
} pe_ctx;
static double pe_loss(void *c)
{
    pe_ctx *k = c;
    patch_embed_forward(k->out, k->cols, k->x, k->w, k->b, 2, 4, 6, 2, 3);
    return dot(k->out, k->r, 2 * 6 * 3);
}
static void test_patch_embed(void **st)
{
    (void)st;
    size_t nx = 2 * 3 * 4 * 6, nw = 3 * 3 * 2 * 2, no = 2 * 6 * 3;
    pe_ctx k = {.x = rnd(nx, 1), .w = rnd(nw, 1), .b = rnd(3, 1), .r = rnd(no, 1), .out = zeros(no),
                .cols = zeros(2 * 6 * 12)};
    pe_loss(&k);
    /* Output (sample 1, patch row 1, col 2, channel 2) = conv by hand (stride = kernel = 2). */
    double o = k.b[2];
    for (int ch = 0; ch < 3; ch++)
        for (int ky = 0; ky < 2; ky++)
            for (int kx = 0; kx < 2; kx++)
                o += k.w[((2 * 3 + ch) * 2 + ky) * 2 + kx] * k.x[((1 * 3 + ch) * 4 + 2 + ky) * 6 + 4 + kx];
    assert_true(fabs(o - k.out[(1 * 6 + 1 * 3 + 2) * 3 + 2]) < 1e-5);
    float *dx = zeros(nx), *dw = zeros(nw), *db = zeros(3), *dcols = zeros(2 * 6 * 12);
    patch_embed_backward(dx, dw, db, dcols, k.r, k.cols, k.w, 2, 4, 6, 2, 3);
    check_grad("patch dx", k.x, dx, nx, pe_loss, &k);
    check_grad("patch dw", k.w, dw, nw, pe_loss, &k);
    check_grad("patch db", k.b, db, 3, pe_loss, &k);
    free(k.x), free(k.w), free(k.b), free(k.r), free(k.out), free(k.cols), free(dx), free(dw), free(db), free(dcols);
}

/* ---- approximations ---- */
static void test_exp_erf(void **st)
{
    (void)st;
    double worst_e = 0, worst_f = 0;
    for (double x = -80; x <= 80; x += 0.0137) {
        double e = fabs(vit_expf((float)x) - exp((float)x)) / exp((float)x);
        worst_e = e > worst_e ? e : worst_e;
    }
    for (double x = -6; x <= 6; x += 0.0013) {
        double e = fabs(vit_erff((float)x) - erf((float)x));
        worst_f = e > worst_f ? e : worst_f;
    }
    assert_true(worst_e < 1e-6);
    assert_true(worst_f < 5e-7);
}

/* ---- the whole model ---- */
typedef struct {
    vit_model *m;
    vit_run *r;
    float *x, *rc, *rr, *rp;
    uint8_t *mask;
    float drop;
} model_ctx;
static double model_loss(void *c)
{
    model_ctx *k = c;
    assert_int_equal(vit_forward(k->m, k->r, k->x, k->mask, k->drop, 7), 0);
    const vit_config *cf = &k->m->cfg;
    size_t d = (size_t)cf->dim;
    return dot(vit_out_cls(k->r), k->rc, 2 * d) + dot(vit_out_reg(k->r), k->rr, 2 * (size_t)cf->n_reg * d) +
           dot(vit_out_patch(k->r), k->rp, 2 * 6 * d);
}
static void model_case(vit_ffn ffn, int32_t n_reg, vit_pos_mode pm, int32_t grid, int masked, float drop)
{
    vit_config c = {.patch = 2, .pos_grid = grid, .dim = 8, .depth = 2, .heads = 2, .ffn = ffn, .n_reg = n_reg,
                    .pos_mode = pm, .layerscale = 1};
    c.ffn_hidden = ffn == VIT_FFN_SWIGLU ? 8 : 16;
    model_ctx k = {.drop = drop};
    assert_int_equal(vit_create(&c, &k.m), 0);
    for (size_t i = 0; i < k.m->n_params; i++)
        k.m->param_mem[i] = frand() * 0.5f;
    vit_run_opts o = {.batch = 2, .height = 4, .width = 6, .train = 1}; /* grid 2 x 3 */
    assert_int_equal(vit_run_create(k.m, &o, &k.r), 0);
    size_t nx = 2 * 3 * 4 * 6;
    k.x = rnd(nx, 1), k.rc = rnd(16, 1), k.rr = rnd(2 * 4 * 8 + 1, 1), k.rp = rnd(2 * 6 * 8, 1);
    uint8_t mask[12] = {1, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0};
    k.mask = masked ? mask : NULL;
    model_loss(&k);
    float *dx = zeros(nx);
    assert_int_equal(vit_alloc_grads(k.m), 0);
    vit_zero_grads(k.m);
    assert_int_equal(vit_backward(k.m, k.r, k.rc, n_reg ? k.rr : NULL, k.rp, dx), 0);
    check_grad("model dx", k.x, dx, nx, model_loss, &k);
    for (size_t i = 0; i < k.m->n_tensors; i++) {
        const vit_tensor *t = &k.m->tensors[i];
        check_grad(t->name, k.m->param_mem + t->offset, k.m->grad_mem + t->offset, t->count, model_loss, &k);
    }
    vit_run_free(k.r);
    vit_free(k.m);
    free(k.x), free(k.rc), free(k.rr), free(k.rp), free(dx);
}
static void test_model_mlp_offset(void **st)
{
    (void)st;
    model_case(VIT_FFN_MLP, 0, VIT_POS_OFFSET, 3, 1, 0.0f);
}
static void test_model_swiglu_reg_aa(void **st)
{
    (void)st;
    model_case(VIT_FFN_SWIGLU, 4, VIT_POS_SIZE_AA, 4, 1, 0.0f);
}
static void test_model_drop_path(void **st)
{
    (void)st;
    /* Drop path at 0.5 with a fixed seed drops the same branches in every evaluation. */
    model_case(VIT_FFN_MLP, 0, VIT_POS_SIZE_AA, 2, 0, 0.5f);
}

int main(void)
{
    vit_set_threads(2);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),          cmocka_unit_test(test_linear_batch_invariant),
        cmocka_unit_test(test_elementwise_position_invariant), cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_gelu),            cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_residual),        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_patch_embed),     cmocka_unit_test(test_exp_erf),
        cmocka_unit_test(test_model_mlp_offset), cmocka_unit_test(test_model_swiglu_reg_aa),
        cmocka_unit_test(test_model_drop_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
