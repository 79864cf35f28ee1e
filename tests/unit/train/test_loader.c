/* test_loader.c — lvd-train's loader over a manifest written by loader_ref.py (Pillow + tarfile): the stream
 * follows manifest_order across epochs, a failed sample's slot takes the next entry, every slot holds the crops
 * augment.h draws for its occurrence (recomputed here from the decoded picture), the crop-major layout, the
 * same batches on 1 and 3 threads, seek/tell for an exact resume, and the counted failures. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "image.h"
#include "log.h"
#include "manifest.h"
#include "train/augment.h"
#include "train/loader.h"

static char dir[256], gen[300], script[1024]; /* script: loader_ref.py */
static int bad_sample = -1;
static manifest *M;

static int setup(void **state)
{
    if (scratch_setup_fixtures(state, dir, sizeof dir, "loader", gen, sizeof gen, script, "make") != 0)
        return -1;
    char cmd[2400], out[64];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' make '%s/again'", script, dir);
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(out, sizeof out, p))
        return -1;
    pclose(p);
    bad_sample = atoi(out);
    char db[400];
    snprintf(db, sizeof db, "%s/again/m.db", dir);
    log_set_level(LOG_ERROR);
    return manifest_open(&M, db);
}

static int teardown(void **state)
{
    manifest_close(M);
    return scratch_teardown(state);
}

static train_loader_opts opts(int threads, uint32_t rank, uint32_t ranks)
{
    train_loader_opts o = {.m = M, .seed = 7, .batch = 4, .rank = rank, .ranks = ranks, .patch = 8,
                           .mask_ratio = {0.1, 0.5}, .mask_probability = 0.5, .threads = threads};
    aug_config_default(&o.aug);
    o.aug.global_size = 32;
    o.aug.local_size = 16;
    o.aug.n_local = 3;
    return o;
}

/* The reference stream: (sample, epoch, occurrence) entries of rank r of R from (epoch, position). */
typedef struct ref_stream {
    uint32_t *order;
    size_t n;
    uint64_t epoch, pos;
    uint32_t rank, ranks;
} ref_stream;

static void ref_next(ref_stream *s, uint32_t *sample, uint64_t *epoch, uint64_t *occ)
{
    while (s->pos >= s->n) {
        free(s->order);
        s->epoch++;
        assert_int_equal(manifest_order(M, 7, s->epoch, s->rank, s->ranks, &s->order, &s->n), 0);
        s->pos = 0;
    }
    *sample = s->order[s->pos];
    *epoch = s->epoch;
    *occ = s->pos * s->ranks + s->rank;
    s->pos++;
}

static void check_stream(uint32_t rank, uint32_t ranks)
{
    train_loader_opts o = opts(2, rank, ranks);
    train_loader *l;
    assert_int_equal(train_loader_open(&l, &o), 0);
    train_batch b;
    assert_int_equal(train_batch_alloc(l, &b), 0);
    ref_stream s = {.rank = rank, .ranks = ranks};
    assert_int_equal(manifest_order(M, 7, 0, rank, ranks, &s.order, &s.n), 0);
    size_t G = 3 * 32 * 32, L = 3 * 16 * 16;
    float *g = malloc(2 * G * sizeof *g), *lc = malloc(3 * L * sizeof *lc);
    uint64_t failed = 0;
    for (int bi = 0; bi < 9; bi++) { /* 36 entries: more than an epoch of 35 (1 rank) */
        assert_int_equal(train_loader_next(l, &b), 0);
        /* Round 1: slots 0..3 take the next 4 entries; failed slots (in slot order) take the following ones. */
        uint32_t want[4];
        uint64_t ep[4], oc[4];
        int32_t todo[4], nt = 4;
        for (int k = 0; k < 4; k++)
            todo[k] = k;
        while (nt > 0) {
            int32_t left = 0;
            for (int32_t k = 0; k < nt; k++) {
                uint32_t smp;
                uint64_t e, c;
                ref_next(&s, &smp, &e, &c);
                if ((int)smp == bad_sample) {
                    failed++;
                    todo[left++] = todo[k];
                    continue;
                }
                want[todo[k]] = smp;
                ep[todo[k]] = e;
                oc[todo[k]] = c;
            }
            nt = left;
        }
        for (int k = 0; k < 4; k++) {
            assert_int_equal(b.samples[k], want[k]);
            /* The slot's crops are those augment.h draws for that occurrence of the decoded picture. */
            manifest_sample meta;
            assert_int_equal(manifest_sample_meta(M, want[k], &meta), 0);
            uint8_t *bytes = malloc(meta.length);
            size_t len;
            assert_int_equal(manifest_read(M, want[k], bytes, meta.length, &len), 0);
            img_rgb im = {0};
            assert_int_equal(img_decode(bytes, len, 1u << 28, 0, 0, &im), IMG_OK);
            assert_int_equal(aug_sample(&o.aug, 7, oc[k], ep[k], im.px, (int32_t)im.w, (int32_t)im.h, g, lc, NULL,
                                        NULL, 0),
                             0);
            assert_memory_equal(b.global + (size_t)k * G, g, G * sizeof *g);
            assert_memory_equal(b.global + (size_t)(4 + k) * G, g + G, G * sizeof *g);
            for (int c = 0; c < 3; c++)
                assert_memory_equal(b.local + (size_t)(c * 4 + k) * L, lc + (size_t)c * L, L * sizeof *lc);
            img_free(&im);
            free(bytes);
        }
        /* The masks: 2B global crops of 16 patches, half of them masked. */
        assert_int_equal(b.masks.n_images, 8);
        assert_int_equal(b.masks.n_images_masked, 4);
    }
    assert_int_equal(train_loader_failed(l), failed);
    assert_true(failed >= 1);
    free(g);
    free(lc);
    free(s.order);
    train_batch_free(&b);
    train_loader_close(l);
}

static void test_stream_and_crops(void **state)
{
    (void)state;
    check_stream(0, 1);
    check_stream(1, 2);
}

static void next_n(train_loader *l, train_batch *b, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(train_loader_next(l, b), 0);
}

static void assert_batches_equal(const train_batch *a, const train_batch *b, size_t floats)
{
    assert_memory_equal(a->samples, b->samples, (size_t)a->b * sizeof *a->samples);
    assert_memory_equal(a->global, b->global, floats * sizeof(float));
    assert_int_equal(a->masks.n_masked, b->masks.n_masked);
    assert_memory_equal(a->masks.masks, b->masks.masks, (size_t)a->masks.n_images * (size_t)a->masks.n_tokens);
    assert_true(a->epoch == b->epoch && a->position == b->position);
}

static void test_threads_and_resume(void **state)
{
    (void)state;
    train_loader_opts o1 = opts(1, 0, 1), o3 = opts(3, 0, 1);
    train_loader *a, *c;
    assert_int_equal(train_loader_open(&a, &o1), 0);
    assert_int_equal(train_loader_open(&c, &o3), 0);
    train_batch ba, bc;
    assert_int_equal(train_batch_alloc(a, &ba), 0);
    assert_int_equal(train_batch_alloc(c, &bc), 0);
    size_t floats = 2 * 4 * 3 * 32 * 32 + 3 * 4 * 3 * 16 * 16;
    for (int i = 0; i < 12; i++) { /* across an epoch boundary */
        assert_int_equal(train_loader_next(a, &ba), 0);
        assert_int_equal(train_loader_next(c, &bc), 0);
        assert_batches_equal(&ba, &bc, floats);
    }
    /* Resume: a new loader put at a's place gives a's next batches. */
    uint64_t ep, pos;
    train_loader_tell(a, &ep, &pos);
    train_loader *r;
    assert_int_equal(train_loader_open(&r, &o3), 0);
    assert_int_equal(train_loader_seek(r, ep, pos), 0);
    train_batch br;
    assert_int_equal(train_batch_alloc(r, &br), 0);
    for (int i = 0; i < 3; i++) {
        next_n(a, &ba, 1);
        next_n(r, &br, 1);
        assert_batches_equal(&ba, &br, floats);
    }
    /* Another seed: other batches. */
    train_loader_opts o9 = opts(1, 0, 1);
    o9.seed = 9;
    train_loader *d;
    assert_int_equal(train_loader_open(&d, &o9), 0);
    train_batch bd;
    assert_int_equal(train_batch_alloc(d, &bd), 0);
    next_n(d, &bd, 1);
    assert_int_equal(train_loader_seek(a, 0, 0), 0);
    next_n(a, &ba, 1);
    assert_true(memcmp(ba.global, bd.global, floats * sizeof(float)) != 0);
    assert_int_equal(train_loader_seek(a, 0, 1000), -1);
    assert_non_null(strstr(lvd_errmsg(), "past the end"));
    train_batch_free(&ba);
    train_batch_free(&bc);
    train_batch_free(&br);
    train_batch_free(&bd);
    train_loader_close(a);
    train_loader_close(c);
    train_loader_close(r);
    train_loader_close(d);
}

static void test_bad_options(void **state)
{
    (void)state;
    train_loader *l;
    train_loader_opts o = opts(1, 0, 1);
    o.batch = 0;
    assert_int_equal(train_loader_open(&l, &o), -1);
    o = opts(1, 2, 2);
    assert_int_equal(train_loader_open(&l, &o), -1);
    o = opts(1, 0, 1);
    o.patch = 5; /* 32 is not a multiple of 5 */
    assert_int_equal(train_loader_open(&l, &o), -1);
    assert_non_null(strstr(lvd_errmsg(), "multiple of the patch size"));
}

/* A manifest none of whose samples decodes: a clear error, not an endless search. */
static void test_nothing_readable(void **state)
{
    (void)state;
    char cmd[2400], db[400];
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' bad '%s/bad' >/dev/null", script, dir);
    assert_int_equal(system(cmd), 0);
    snprintf(db, sizeof db, "%s/bad/m.db", dir);
    manifest *bad;
    assert_int_equal(manifest_open(&bad, db), 0);
    train_loader_opts o = opts(2, 0, 1);
    o.m = bad;
    train_loader *l;
    assert_int_equal(train_loader_open(&l, &o), 0);
    train_batch b;
    assert_int_equal(train_batch_alloc(l, &b), 0);
    assert_int_equal(train_loader_next(l, &b), -1);
    assert_non_null(strstr(lvd_errmsg(), "no sample of the manifest can be read and decoded"));
    assert_non_null(strstr(lvd_errmsg(), "does not decode"));
    assert_true(train_loader_failed(l) > 2);
    train_batch_free(&b);
    train_loader_close(l);
    manifest_close(bad);
}

int main(int argc, char **argv)
{
    snprintf(script, sizeof script, "%s/unit/train/loader_ref.py", argc > 1 ? argv[1] : "tests");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_and_crops),
        cmocka_unit_test(test_threads_and_resume),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_nothing_readable),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
