/* Batch invariance of the ViT forward pass: an image's outputs must not depend on the other images of its
 * batch, on its position in the batch or on the batch size. lvd-embed's last batch is smaller than the others
 * and `--part I/N` batches other images together, so without this a partitioned run's embeddings differ from a
 * single run's in the last bits (and dedup decisions at the threshold can flip).
 *
 * Random-weight models (vit_init_random) of several shapes run 32 distinct images as one batch with 1 thread,
 * then with 1, 2 and 3 threads the same batch, sub-batches and permutations of it: [a], [c, a], [a, b, c],
 * 7 images shuffled, and the 32 reversed. For every image, the CLS, register and patch outputs, every block's
 * output (keep_layers, before the final norm) and the rows lvd-embed pools from them (cls, mean, cls+mean) must
 * equal, bit for bit, those of the same image in the first batch: vit.h promises independence from the thread
 * count too. A mismatch names the first block whose output differs. A last case checks that inference and
 * train runs give the same outputs.
 *
 * Usage: test_vit_batch [SRCDIR] (unused: everything is generated here). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "embed/pooling.h"
#include "err.h"
#include "vit.h"

#define N_IMG 32

typedef struct shape {
    const char *name;
    vit_config cfg;
    int32_t img;
} shape;

/* Deterministic inputs: uniform in [-2, 2), about the range of ImageNet-normalised pixels. */
static void fill_images(float *x, size_t n, uint64_t seed)
{
    uint64_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        x[i] = (float)((double)(s >> 40) * (4.0 / 16777216.0) - 2.0);
    }
}

/* Everything one forward gives for each image, copied out of the run. */
typedef struct outputs {
    int32_t b;
    float *cls, *reg, *patch; /* (B, D), (B, R, D), (B, N, D) */
    float *blocks;            /* (depth, B, T', D): vit_intermediate without norm, CLS first then patches */
    float *pooled[3];         /* per embed_pool_kind: (B, embed_pool_dim) */
} outputs;

static void outputs_free(outputs *o)
{
    free(o->cls), free(o->reg), free(o->patch), free(o->blocks);
    for (int k = 0; k < 3; k++)
        free(o->pooled[k]);
    memset(o, 0, sizeof *o);
}

/* Runs the images idx[0..b) of all (N_IMG, 3, H, W) as one batch. */
static void run_batch(vit_model *m, int32_t img, const float *all, const int *idx, int32_t b, int32_t train,
                      outputs *o)
{
    const vit_config *c = &m->cfg;
    int64_t px = 3 * (int64_t)img * img, n = (int64_t)(img / c->patch) * (img / c->patch), d = c->dim;
    float *x = malloc(sizeof(float) * (size_t)(b * px));
    assert_non_null(x);
    for (int32_t i = 0; i < b; i++)
        memcpy(x + i * px, all + idx[i] * px, sizeof(float) * (size_t)px);
    vit_run_opts ro = {.batch = b, .height = img, .width = img, .train = train,
                       .keep_layers = train ? 0 : c->depth};
    vit_run *r;
    if (vit_run_create(m, &ro, &r) != 0)
        fail_msg("%s", lvd_errmsg());
    if (vit_forward(m, r, x, NULL, 0.0f, 0) != 0)
        fail_msg("%s", lvd_errmsg());
    memset(o, 0, sizeof *o);
    o->b = b;
    o->cls = malloc(sizeof(float) * (size_t)(b * d));
    o->patch = malloc(sizeof(float) * (size_t)(b * n * d));
    assert_true(o->cls && o->patch);
    memcpy(o->cls, vit_out_cls(r), sizeof(float) * (size_t)(b * d));
    memcpy(o->patch, vit_out_patch(r), sizeof(float) * (size_t)(b * n * d));
    if (c->n_reg > 0) {
        o->reg = malloc(sizeof(float) * (size_t)(b * c->n_reg * d));
        assert_non_null(o->reg);
        memcpy(o->reg, vit_out_reg(r), sizeof(float) * (size_t)(b * c->n_reg * d));
    }
    /* Block outputs as (depth, B, 1 + N, D): the CLS row, then the patch rows. */
    int64_t depth = c->depth, tk = 1 + n;
    o->blocks = malloc(sizeof(float) * (size_t)(depth * b * tk * d));
    float *lp = malloc(sizeof(float) * (size_t)(depth * b * n * d));
    float *lc = malloc(sizeof(float) * (size_t)(depth * b * d));
    assert_true(o->blocks && lp && lc);
    if (vit_intermediate(m, r, (int32_t)depth, 0, lp, lc) != 0)
        fail_msg("%s", lvd_errmsg());
    for (int64_t l = 0; l < depth; l++)
        for (int64_t i = 0; i < b; i++) {
            float *dst = o->blocks + (l * b + i) * tk * d;
            memcpy(dst, lc + (l * b + i) * d, sizeof(float) * (size_t)d);
            memcpy(dst + d, lp + (l * b + i) * n * d, sizeof(float) * (size_t)(n * d));
        }
    free(lp);
    free(lc);
    for (int k = 0; k < 3; k++) {
        int32_t pd = embed_pool_dim((embed_pool_kind)k, (int32_t)d);
        o->pooled[k] = malloc(sizeof(float) * (size_t)(b * pd));
        assert_non_null(o->pooled[k]);
        for (int32_t i = 0; i < b; i++)
            embed_pool(o->pooled[k] + (int64_t)i * pd, (embed_pool_kind)k, o->cls + i * d, o->patch + i * n * d,
                       (int32_t)n, (int32_t)d);
    }
    vit_run_free(r);
    free(x);
}

/* Floats of a and b (n each) that differ in their bits. */
static int64_t bits_differ(const float *a, const float *b, int64_t n)
{
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        k += memcmp(a + i, b + i, sizeof(float)) != 0;
    return k;
}

/* Image idx[i] at position i of got against the same image in ref, the batch of every image in order. Returns
 * the number of images with any output that differs; the first few are described. */
static int compare(const shape *s, int threads, const char *batch_name, const outputs *got, const int *idx,
                   const outputs *ref)
{
    const vit_config *c = &s->cfg;
    int64_t n = (int64_t)(s->img / c->patch) * (s->img / c->patch), d = c->dim, tk = 1 + n, R = c->n_reg;
    int bad = 0;
    for (int32_t i = 0; i < got->b; i++) {
        int32_t j = idx[i];
        struct {
            const char *what;
            const float *a, *b;
            int64_t count;
        } outs[] = {
            {"cls", got->cls + i * d, ref->cls + j * d, d},
            {"patch", got->patch + i * n * d, ref->patch + j * n * d, n * d},
            {"registers", R ? got->reg + i * R * d : NULL, R ? ref->reg + j * R * d : NULL, R * d},
            {"pooled cls", got->pooled[0] + i * d, ref->pooled[0] + j * d, d},
            {"pooled mean", got->pooled[1] + i * d, ref->pooled[1] + j * d, d},
            {"pooled cls+mean", got->pooled[2] + i * 2 * d, ref->pooled[2] + j * 2 * d, 2 * d},
        };
        char what[512] = "";
        size_t len = 0;
        for (size_t k = 0; k < sizeof outs / sizeof outs[0]; k++) {
            int64_t nd = outs[k].count ? bits_differ(outs[k].a, outs[k].b, outs[k].count) : 0;
            if (nd && len < sizeof what)
                len += (size_t)snprintf(what + len, sizeof what - len, "%s%s %lld/%lld", len ? ", " : "",
                                        outs[k].what, (long long)nd, (long long)outs[k].count);
        }
        if (!len)
            continue;
        if (bad++ >= 3)
            continue;
        /* The first block whose output differs locates the layer that depends on the batch. */
        int64_t first = -1, first_nd = 0;
        for (int64_t l = 0; l < c->depth && first < 0; l++) {
            first_nd = bits_differ(got->blocks + (l * got->b + i) * tk * d, ref->blocks + (l * ref->b + j) * tk * d,
                                   tk * d);
            if (first_nd)
                first = l;
        }
        print_message("# %s, %d thread(s), batch %s: image %d (position %d of %d) differs in %s floats; first "
                      "differing block output: %lld (%lld floats)\n",
                      s->name, threads, batch_name, j, i, got->b, what, (long long)first, (long long)first_nd);
    }
    if (bad > 3)
        print_message("# %s, %d thread(s), batch %s: %d more images differ\n", s->name, threads, batch_name,
                      bad - 3);
    return bad;
}

static void check_shape(const shape *s)
{
    vit_model *m;
    if (vit_create(&s->cfg, &m) != 0)
        fail_msg("%s", lvd_errmsg());
    /* ls_init 1: LayerScale at its trained order of magnitude rather than the tiny init, so every block
     * changes the tokens. */
    vit_init_random(m, 7, 1.0f);
    int64_t px = 3 * (int64_t)s->img * s->img;
    float *all = malloc(sizeof(float) * (size_t)(N_IMG * px));
    assert_non_null(all);
    fill_images(all, (size_t)(N_IMG * px), 11);

    int full[N_IMG], rev[N_IMG];
    for (int i = 0; i < N_IMG; i++) {
        full[i] = i;
        rev[i] = N_IMG - 1 - i;
    }
    static const int one[] = {5}, two[] = {17, 5}, three[] = {5, 11, 17}, seven[] = {31, 0, 17, 5, 22, 9, 11};
    const struct {
        const char *name;
        const int *idx;
        int32_t b;
    } batches[] = {
        {"32 in order", full, N_IMG}, {"[a]", one, 1}, {"[c, a]", two, 2}, {"[a, b, c]", three, 3},
        {"7 shuffled", seven, 7}, {"32 reversed", rev, N_IMG},
    };
    /* The reference: the 32 in order with 1 thread. 3 threads split 32 images and the blocks unevenly. */
    int bad = 0;
    outputs ref;
    vit_set_threads(1);
    run_batch(m, s->img, all, full, N_IMG, 0, &ref);
    for (int threads = 1; threads <= 3; threads++) {
        vit_set_threads(threads);
        for (size_t k = threads == 1 ? 1 : 0; k < sizeof batches / sizeof batches[0]; k++) {
            outputs got;
            run_batch(m, s->img, all, batches[k].idx, batches[k].b, 0, &got);
            bad += compare(s, threads, batches[k].name, &got, batches[k].idx, &ref);
            outputs_free(&got);
        }
    }
    outputs_free(&ref);
    vit_set_threads(0);
    free(all);
    vit_free(m);
    if (bad)
        fail_msg("%s: %d images have outputs that depend on the batch or the threads (see above)", s->name, bad);
}

/* DINOv2's small model at its real width and FFN (GEMMs of 384..1536 columns), 2 blocks, 112 pixels: T = 65. */
static void test_small_width(void **st)
{
    (void)st;
    shape s = {.name = "vit_small x2 blocks, 112 px", .img = 112};
    assert_int_equal(vit_preset("vit_small", &s.cfg), 0);
    s.cfg.depth = 2;
    check_shape(&s);
}

/* Registers and antialiased resampling at the 224-pixel grid lvd-embed uses (T = 1 + 4 + 256). */
static void test_pico_reg4_224(void **st)
{
    (void)st;
    shape s = {.name = "vit_pico_reg4, 224 px", .img = 224};
    assert_int_equal(vit_preset("vit_pico_reg4", &s.cfg), 0);
    check_shape(&s);
}

/* SwiGLU FFN, no LayerScale, an odd width and a non-default patch. */
static void test_swiglu_plain(void **st)
{
    (void)st;
    shape s = {.name = "swiglu, no layerscale, 80 px / 10", .img = 80};
    s.cfg = (vit_config){.patch = 10, .pos_grid = 6, .dim = 72, .depth = 2, .heads = 3, .ffn = VIT_FFN_SWIGLU,
                         .n_reg = 0, .pos_mode = VIT_POS_OFFSET, .layerscale = 0};
    s.cfg.ffn_hidden = vit_swiglu_hidden(s.cfg.dim);
    check_shape(&s);
}

/* A train run's forward computes what an inference run computes, bit for bit (the trainer's features and
 * lvd-embed's agree), at every batch size. */
static void test_train_matches_inference(void **st)
{
    (void)st;
    vit_config c;
    assert_int_equal(vit_preset("vit_pico", &c), 0);
    vit_model *m;
    if (vit_create(&c, &m) != 0)
        fail_msg("%s", lvd_errmsg());
    vit_init_random(m, 3, 1.0f);
    const int32_t img = 56;
    int64_t px = 3 * img * img, d = c.dim, n = (img / c.patch) * (img / c.patch);
    float *all = malloc(sizeof(float) * (size_t)(N_IMG * px));
    assert_non_null(all);
    fill_images(all, (size_t)(N_IMG * px), 5);
    int idx[N_IMG];
    for (int i = 0; i < N_IMG; i++)
        idx[i] = i;
    for (int threads = 1; threads <= 2; threads++) {
        vit_set_threads(threads);
        for (int32_t b = 1; b <= N_IMG; b += 15) {
            outputs inf, tr;
            run_batch(m, img, all, idx, b, 0, &inf);
            run_batch(m, img, all, idx, b, 1, &tr);
            assert_int_equal(bits_differ(inf.cls, tr.cls, b * d), 0);
            assert_int_equal(bits_differ(inf.patch, tr.patch, b * n * d), 0);
            outputs_free(&inf);
            outputs_free(&tr);
        }
    }
    vit_set_threads(0);
    free(all);
    vit_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_width),
        cmocka_unit_test(test_pico_reg4_224),
        cmocka_unit_test(test_swiglu_plain),
        cmocka_unit_test(test_train_matches_inference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
