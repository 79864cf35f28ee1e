/* test_loader.c — the batch loader of lvd-embed: every item lands in its own row of the slot's tensor with
 * DINOv2's evaluation transform applied, both slots are used in turn, short batches work, and an item that
 * cannot be read or decoded is marked failed with an error naming its file, without disturbing the others.
 *
 * Images are solid colours (PNG, lossless), so the expected tensor is known without the code under test: every
 * value of channel c is (colour[c] / 255 - mean[c]) / std[c], whatever the size, resize and crop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed_loader.h"
#include "err.h"
#include "image.h"

#define RESIZE 12
#define CROP 8

static const float MEAN[3] = {0.485f, 0.456f, 0.406f}, STD[3] = {0.229f, 0.224f, 0.225f};

static char dir[256], pack[300];

/* Image i: w x h solid colour colour_of(i). */
static void colour_of(int i, uint8_t c[3])
{
    c[0] = (uint8_t)(20 + 37 * i);
    c[1] = (uint8_t)(250 - 23 * i);
    c[2] = (uint8_t)(90 + 11 * i);
}

typedef struct placed {
    uint64_t offset, size;
} placed;

#define N_IMG 7
static placed at[N_IMG];

/* Writes N_IMG PNGs of various sizes into one file after a header of junk, recording where each is. */
static int setup(void **state)
{
    (void)state;
    if (scratch_make(dir, sizeof dir, "embed-loader") != 0)
        return -1;
    snprintf(pack, sizeof pack, "%s/pack.bin", dir);
    FILE *f = fopen(pack, "wb");
    if (!f)
        return -1;
    static const uint32_t sizes[N_IMG][2] = {{16, 16}, {40, 12}, {9, 30}, {12, 12}, {100, 37}, {13, 14}, {25, 60}};
    uint64_t off = 0;
    for (int i = 0; i < N_IMG; i++) {
        fputs("junk", f);
        off += 4;
        img_rgb im = {0};
        if (img_alloc(&im, sizes[i][0], sizes[i][1]) != 0)
            return -1;
        uint8_t c[3];
        colour_of(i, c);
        for (size_t p = 0; p < (size_t)im.w * im.h; p++)
            memcpy(im.px + 3 * p, c, 3);
        uint8_t *png;
        size_t len;
        if (img_encode_png(&im, &png, &len) != 0)
            return -1;
        img_free(&im);
        if (fwrite(png, 1, len, f) != len)
            return -1;
        free(png);
        at[i].offset = off;
        at[i].size = len;
        off += len;
    }
    return fclose(f);
}

static int teardown(void **state)
{
    (void)state;
    return scratch_remove(dir);
}

static void set_item(embed_load_item *it, int64_t id, const char *path, uint64_t offset, uint64_t size)
{
    memset(it, 0, sizeof *it);
    it->image_id = id;
    snprintf(it->path, sizeof it->path, "%s", path);
    it->offset = offset;
    it->size = size;
    it->ok = -1; /* the loader must set it */
}

/* Row `row` of x holds image img's expected tensor. */
static void check_row(const float *x, int row, int img)
{
    uint8_t c[3];
    colour_of(img, c);
    const float *r = x + (size_t)row * 3 * CROP * CROP;
    for (int ch = 0; ch < 3; ch++) {
        float want = ((float)c[ch] / 255.0f - MEAN[ch]) / STD[ch];
        for (int p = 0; p < CROP * CROP; p++)
            if (fabsf(r[ch * CROP * CROP + p] - want) > 1e-4f)
                fail_msg("row %d (image %d) channel %d pixel %d: %g, want %g", row, img, ch, p,
                         (double)r[ch * CROP * CROP + p], (double)want);
    }
}

static void test_batches_in_turn(void **state)
{
    (void)state;
    embed_loader l;
    memset(&l, 0, sizeof l);
    if (embed_loader_start(&l, 3, 5, RESIZE, CROP) != 0)
        fail_msg("%s", lvd_errmsg());
    int k = embed_loader_next(&l);
    assert_true(k == 0 || k == 1);
    /* Batch 1: images 4, 0, 2, 6, 1 in that order (rows must follow items, not file order). */
    static const int order[5] = {4, 0, 2, 6, 1};
    embed_load_slot *s = &l.slots[k];
    for (int i = 0; i < 5; i++)
        set_item(&s->items[i], 100 + order[i], pack, at[order[i]].offset, at[order[i]].size);
    s->n = 5;
    embed_loader_queue(&l, k);
    /* Batch 2 (short, while batch 1 may still load): images 3 and 5. */
    embed_load_slot *s2 = &l.slots[k ^ 1];
    set_item(&s2->items[0], 103, pack, at[3].offset, at[3].size);
    set_item(&s2->items[1], 105, pack, at[5].offset, at[5].size);
    s2->n = 2;
    embed_loader_queue(&l, k ^ 1);
    embed_loader_wait(&l, k);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(s->items[i].ok, 1);
        assert_int_equal(s->items[i].image_id, 100 + order[i]);
        check_row(s->x, i, order[i]);
    }
    embed_loader_release(&l, k);
    embed_loader_wait(&l, k ^ 1);
    assert_int_equal(s2->items[0].ok, 1);
    assert_int_equal(s2->items[1].ok, 1);
    check_row(s2->x, 0, 3);
    check_row(s2->x, 1, 5);
    embed_loader_release(&l, k ^ 1);
    /* The loader goes on with slot k again. */
    assert_int_equal(embed_loader_next(&l), k);
    embed_loader_free(&l);
    embed_loader_free(&l); /* idempotent */
}

static void test_bad_items_are_reported(void **state)
{
    (void)state;
    embed_loader l;
    memset(&l, 0, sizeof l);
    if (embed_loader_start(&l, 2, 4, RESIZE, CROP) != 0)
        fail_msg("%s", lvd_errmsg());
    int k = embed_loader_next(&l);
    embed_load_slot *s = &l.slots[k];
    char missing[400];
    snprintf(missing, sizeof missing, "%s/no-such-shard.tar", dir);
    set_item(&s->items[0], 1, pack, at[1].offset, at[1].size);
    set_item(&s->items[1], 2, pack, at[2].offset, at[2].size / 2);     /* truncated image */
    set_item(&s->items[2], 3, missing, 0, 100);                         /* no file */
    set_item(&s->items[3], 4, pack, 0, at[0].offset + at[0].size + 4);  /* junk before the image */
    s->n = 4;
    embed_loader_queue(&l, k);
    embed_loader_wait(&l, k);
    assert_int_equal(s->items[0].ok, 1);
    check_row(s->x, 0, 1);
    assert_int_equal(s->items[1].ok, 0);
    assert_non_null(strstr(s->items[1].error, "pack.bin"));
    assert_int_equal(s->items[2].ok, 0);
    assert_non_null(strstr(s->items[2].error, "no-such-shard.tar"));
    assert_int_equal(s->items[3].ok, 0);
    assert_non_null(strstr(s->items[3].error, "pack.bin:0"));
    embed_loader_release(&l, k);
    embed_loader_free(&l);
}

static void test_start_refuses_bad_parameters(void **state)
{
    (void)state;
    embed_loader l;
    memset(&l, 0, sizeof l);
    assert_int_equal(embed_loader_start(&l, 1, 4, CROP - 1, CROP), -1); /* crop > resize */
    embed_loader_free(&l);
    memset(&l, 0, sizeof l);
    assert_int_equal(embed_loader_start(&l, EMBED_LOADER_MAX_THREADS + 1, 4, RESIZE, CROP), -1);
    embed_loader_free(&l);
    memset(&l, 0, sizeof l);
    embed_loader_free(&l); /* never started */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batches_in_turn),
        cmocka_unit_test(test_bad_items_are_reported),
        cmocka_unit_test(test_start_refuses_bad_parameters),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
