/* embed_loader.c — the double-buffered batch loader of lvd-embed and lvd-eval (see embed_loader.h). */
#include "embed_loader.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "image.h"
#include "preprocess.h"
#include "shard.h"

enum { SLOT_EMPTY = 0, SLOT_QUEUED, SLOT_READY };

/* scratch/cap: the worker's resize buffer, grown as needed (freed by the caller). */
static void load_item(embed_loader *l, embed_load_item *it, float *x, uint8_t **scratch, size_t *cap)
{
    img_rgb im = {0};
    uint8_t *data = malloc(it->size ? it->size : 1);
    it->ok = 0;
    if (!data) {
        snprintf(it->error, sizeof it->error, "out of memory reading %" PRIu64 " bytes", it->size);
        return;
    }
    if (shard_read_at(it->path, it->offset, data, it->size) != 0) {
        snprintf(it->error, sizeof it->error, "%s", lvd_errmsg());
        goto done;
    }
    img_status s = img_decode(data, it->size, (uint64_t)1 << 34, 0, 0, &im);
    if (s != IMG_OK) {
        snprintf(it->error, sizeof it->error, "working image at %.150s:%" PRIu64 ": %.200s", it->path, it->offset,
                 lvd_errmsg());
        goto done;
    }
    size_t need = preprocess_scratch_bytes(im.w, im.h, l->resize, l->crop);
    if (need > *cap) {
        uint8_t *nb = realloc(*scratch, need);
        if (nb) {
            *scratch = nb;
            *cap = need;
        }
    }
    if (preprocess_image(&im, l->resize, l->crop, x, *scratch, *cap) != 0) {
        snprintf(it->error, sizeof it->error, "%s", lvd_errmsg());
        goto done;
    }
    it->ok = 1;
done:
    img_free(&im);
    free(data);
}

static void *load_worker(void *arg)
{
    embed_loader *l = arg;
    embed_load_slot *s = l->cur;
    size_t per = (size_t)3 * l->crop * l->crop;
    uint8_t *scratch = NULL;
    size_t cap = 0;
    int i;
    while ((i = atomic_fetch_add(&l->cur_next, 1)) < s->n)
        load_item(l, &s->items[i], s->x + (size_t)i * per, &scratch, &cap);
    free(scratch);
    return NULL;
}

static void *loader_main(void *arg)
{
    embed_loader *l = arg;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        while (!l->stop && l->slots[l->next].state != SLOT_QUEUED)
            pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop) {
            pthread_mutex_unlock(&l->mu);
            return NULL;
        }
        embed_load_slot *s = &l->slots[l->next];
        pthread_mutex_unlock(&l->mu);
        l->cur = s;
        atomic_store(&l->cur_next, 0);
        pthread_t tid[EMBED_LOADER_MAX_THREADS];
        int started = 0;
        for (int t = 1; t < l->threads && t < s->n; t++)
            if (pthread_create(&tid[started], NULL, load_worker, l) == 0)
                started++;
        load_worker(l);
        for (int t = 0; t < started; t++)
            pthread_join(tid[t], NULL);
        pthread_mutex_lock(&l->mu);
        s->state = SLOT_READY;
        l->next ^= 1;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
    }
}

void embed_loader_queue(embed_loader *l, int k)
{
    pthread_mutex_lock(&l->mu);
    l->slots[k].state = SLOT_QUEUED;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

void embed_loader_wait(embed_loader *l, int k)
{
    pthread_mutex_lock(&l->mu);
    while (l->slots[k].state != SLOT_READY)
        pthread_cond_wait(&l->cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
}

void embed_loader_release(embed_loader *l, int k)
{
    pthread_mutex_lock(&l->mu);
    l->slots[k].state = SLOT_EMPTY;
    pthread_mutex_unlock(&l->mu);
}

int embed_loader_next(embed_loader *l)
{
    pthread_mutex_lock(&l->mu);
    int k = l->next;
    pthread_mutex_unlock(&l->mu);
    return k;
}

int embed_loader_start(embed_loader *l, int threads, int32_t batch, uint32_t resize, uint32_t crop)
{
    if (threads < 1 || threads > EMBED_LOADER_MAX_THREADS || batch < 1 || crop < 1 || crop > resize)
        return lvd_fail("loader: bad parameters (threads %d, batch %d, resize %u, crop %u)", threads, (int)batch,
                        (unsigned)resize, (unsigned)crop);
    l->threads = threads;
    l->resize = resize;
    l->crop = crop;
    for (int k = 0; k < 2; k++) {
        l->slots[k].items = calloc((size_t)batch, sizeof(embed_load_item));
        l->slots[k].x = malloc(sizeof(float) * (size_t)batch * 3 * (size_t)crop * (size_t)crop);
        if (!l->slots[k].items || !l->slots[k].x)
            return lvd_fail("out of memory for two batches of %d images of %ux%u", (int)batch, (unsigned)crop,
                            (unsigned)crop);
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->sync_init = 1;
    if (pthread_create(&l->tid, NULL, loader_main, l) != 0)
        return lvd_fail("cannot start the loader thread");
    l->started = 1;
    return 0;
}

void embed_loader_free(embed_loader *l)
{
    if (l->started) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->tid, NULL);
        l->started = 0;
    }
    if (l->sync_init) {
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
        l->sync_init = 0;
    }
    for (int k = 0; k < 2; k++) {
        free(l->slots[k].items);
        free(l->slots[k].x);
        l->slots[k].items = NULL;
        l->slots[k].x = NULL;
    }
}
