/* loader.c — batches of multi-crop samples from a manifest (see loader.h). */
#include "loader.h"

#include <inttypes.h>
#include <stdio.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "image.h"
#include "log.h"

#define MAX_THREADS 64
#define MAX_PIXELS (1ull << 28) /* a decoded source above this is refused (a stored working image never is) */

/* One worker's buffers, grown on demand. */
typedef struct worker {
    uint8_t *bytes;
    size_t bytes_cap;
    uint8_t *scratch;
    size_t scratch_cap;
    float *crops; /* (2, 3, G, G) then (n_local, 3, L, L): one sample's crops, as aug_sample writes them */
} worker;

struct train_loader {
    train_loader_opts o;
    size_t n;              /* samples */
    uint32_t *order;       /* the rank's order of the current epoch */
    size_t order_n;
    uint64_t epoch, pos;   /* the stream's next entry */
    uint64_t failed;
    mask_gen mg;
    size_t gfloats, lfloats; /* floats per global / local crop */
    worker w[MAX_THREADS];
};

/* An entry of the stream: the sample and its augmentation key. */
typedef struct entry {
    uint32_t sample;
    uint64_t epoch, occurrence;
} entry;

static int load_epoch(train_loader *l, uint64_t epoch)
{
    free(l->order);
    l->order = NULL;
    if (manifest_order(l->o.m, l->o.seed, epoch, l->o.rank, l->o.ranks, &l->order, &l->order_n) != 0)
        return -1;
    l->epoch = epoch;
    return 0;
}

/* The stream's next entry; moves on to the next epoch at the end of one. */
static int next_entry(train_loader *l, entry *e)
{
    while (l->pos >= l->order_n) {
        if (load_epoch(l, l->epoch + 1) != 0)
            return -1;
        l->pos = 0;
        if (l->order_n == 0)
            return lvd_fail("loader: rank %u of %u has no sample in epoch %" PRIu64, l->o.rank, l->o.ranks, l->epoch);
    }
    e->sample = l->order[l->pos];
    e->epoch = l->epoch;
    e->occurrence = l->pos * l->o.ranks + l->o.rank;
    l->pos++;
    return 0;
}

int train_loader_open(train_loader **out, const train_loader_opts *o)
{
    *out = NULL;
    if (!o->m || o->batch < 1 || o->ranks < 1 || o->rank >= o->ranks || o->threads < 1 || o->threads > MAX_THREADS ||
        o->patch < 1)
        return lvd_fail("loader: bad options (batch %d, rank %u of %u, threads %d, patch %d)", (int)o->batch, o->rank,
                        o->ranks, o->threads, (int)o->patch);
    if (aug_config_check(&o->aug) != 0)
        return -1;
    if (o->aug.global_size % o->patch != 0)
        return lvd_fail("loader: global crop size %d is not a multiple of the patch size %d", (int)o->aug.global_size,
                        (int)o->patch);
    if (manifest_count(o->m) == 0)
        return lvd_fail("loader: the manifest has no sample");
    train_loader *l = calloc(1, sizeof *l);
    if (!l)
        return lvd_fail("out of memory");
    l->o = *o;
    l->n = manifest_count(o->m);
    l->gfloats = (size_t)3 * (size_t)o->aug.global_size * (size_t)o->aug.global_size;
    l->lfloats = (size_t)3 * (size_t)o->aug.local_size * (size_t)o->aug.local_size;
    if (mask_gen_default(&l->mg, o->aug.global_size, o->patch) != 0 || train_loader_seek(l, 0, 0) != 0) {
        train_loader_close(l);
        return -1;
    }
    for (int t = 0; t < o->threads; t++)
        if (!(l->w[t].crops = malloc((2 * l->gfloats + (size_t)o->aug.n_local * l->lfloats) * sizeof(float)))) {
            train_loader_close(l);
            return lvd_fail("out of memory");
        }
    *out = l;
    return 0;
}

void train_loader_close(train_loader *l)
{
    if (!l)
        return;
    for (int t = 0; t < MAX_THREADS; t++) {
        free(l->w[t].bytes);
        free(l->w[t].scratch);
        free(l->w[t].crops);
    }
    free(l->order);
    free(l);
}

int train_batch_alloc(const train_loader *l, train_batch *b)
{
    memset(b, 0, sizeof *b);
    int32_t B = l->o.batch;
    size_t nf = (size_t)2 * (size_t)B * l->gfloats + (size_t)l->o.aug.n_local * (size_t)B * l->lfloats;
    b->global = malloc(nf * sizeof(float) + 1);
    b->samples = malloc((size_t)B * sizeof *b->samples);
    if (!b->global || !b->samples) {
        train_batch_free(b);
        return lvd_fail("out of memory for a batch of %d images", (int)B);
    }
    b->local = b->global + (size_t)2 * (size_t)B * l->gfloats;
    int32_t side = l->o.aug.global_size / l->o.patch;
    if (mask_batch_init(&b->masks, 2 * B, side * side) != 0) {
        train_batch_free(b);
        return -1;
    }
    b->b = B;
    return 0;
}

void train_batch_free(train_batch *b)
{
    free(b->global);
    free(b->samples);
    if (b->masks.masks)
        mask_batch_free(&b->masks);
    memset(b, 0, sizeof *b);
}

int train_loader_seek(train_loader *l, uint64_t epoch, uint64_t position)
{
    if (load_epoch(l, epoch) != 0)
        return -1;
    if (position > l->order_n)
        return lvd_fail("loader: position %" PRIu64 " is past the end of epoch %" PRIu64 " (%zu entries)", position,
                        epoch, l->order_n);
    l->pos = position;
    return 0;
}

void train_loader_tell(const train_loader *l, uint64_t *epoch, uint64_t *position)
{
    *epoch = l->epoch;
    *position = l->pos;
}

uint64_t train_loader_failed(const train_loader *l) { return l->failed; }

/* ---- one round of work: entries into batch slots ---- */

typedef struct job {
    train_loader *l;
    train_batch *b;
    const entry *e;     /* n entries */
    const int32_t *slot;/* the slot of each entry */
    int32_t n;
    uint8_t *ok;        /* per entry: 1 loaded, 0 failed */
    char (*why)[256];   /* per entry: the failure */
    atomic_int next;
    int hard_error;     /* out of memory: not a sample's fault */
    char hard_msg[LVD_ERR_MAX];
    pthread_mutex_t mu;
    int tid_next;
} job;

static int ensure(void **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    void *np = realloc(*p, need);
    if (!np)
        return -1;
    *p = np;
    *cap = need;
    return 0;
}

/* Loads entry k of the job into its slot with worker w's buffers. 1 loaded, 0 the sample failed, -1 hard. */
static int load_one(job *j, worker *w, int32_t k)
{
    train_loader *l = j->l;
    const entry *e = &j->e[k];
    manifest_sample meta;
    if (manifest_sample_meta(l->o.m, e->sample, &meta) != 0) {
        snprintf(j->why[k], sizeof j->why[k], "%s", lvd_errmsg());
        return 0;
    }
    if (ensure((void **)&w->bytes, &w->bytes_cap, meta.length ? (size_t)meta.length : 1) != 0)
        return -1;
    size_t len;
    if (manifest_read(l->o.m, e->sample, w->bytes, w->bytes_cap, &len) != 0) {
        snprintf(j->why[k], sizeof j->why[k], "%s", lvd_errmsg());
        return 0;
    }
    img_rgb im = {0};
    img_status st = img_decode(w->bytes, len, MAX_PIXELS, 0, 0, &im);
    if (st != IMG_OK) {
        snprintf(j->why[k], sizeof j->why[k], "%s: does not decode: %s", meta.key, lvd_errmsg());
        img_free(&im);
        return 0;
    }
    size_t need = aug_scratch_bytes(&l->o.aug, (int32_t)im.w, (int32_t)im.h);
    if (ensure((void **)&w->scratch, &w->scratch_cap, need ? need : 1) != 0) {
        img_free(&im);
        return -1;
    }
    float *g = w->crops, *lc = w->crops + 2 * l->gfloats;
    int rc = aug_sample(&l->o.aug, l->o.seed, e->occurrence, e->epoch, im.px, (int32_t)im.w, (int32_t)im.h, g, lc,
                        NULL, w->scratch, w->scratch_cap);
    img_free(&im);
    if (rc != 0) {
        snprintf(j->why[k], sizeof j->why[k], "%s: augmentation: %s", meta.key, lvd_errmsg());
        return 0;
    }
    /* Scatter into the batch's crop-major layout. */
    int32_t B = j->b->b, s = j->slot[k];
    memcpy(j->b->global + (size_t)s * l->gfloats, g, l->gfloats * sizeof(float));
    memcpy(j->b->global + ((size_t)B + (size_t)s) * l->gfloats, g + l->gfloats, l->gfloats * sizeof(float));
    for (int32_t c = 0; c < l->o.aug.n_local; c++)
        memcpy(j->b->local + ((size_t)c * (size_t)B + (size_t)s) * l->lfloats, lc + (size_t)c * l->lfloats,
               l->lfloats * sizeof(float));
    j->b->samples[s] = e->sample;
    return 1;
}

static void *work(void *arg)
{
    job *j = arg;
    pthread_mutex_lock(&j->mu);
    worker *w = &j->l->w[j->tid_next++];
    pthread_mutex_unlock(&j->mu);
    for (;;) {
        int32_t k = atomic_fetch_add(&j->next, 1);
        if (k >= j->n)
            break;
        int r = load_one(j, w, k);
        if (r < 0) {
            pthread_mutex_lock(&j->mu);
            if (!j->hard_error) {
                j->hard_error = 1;
                snprintf(j->hard_msg, sizeof j->hard_msg, "loader: out of memory");
            }
            pthread_mutex_unlock(&j->mu);
            r = 0;
        }
        j->ok[k] = (uint8_t)r;
    }
    return NULL;
}

/* Loads n entries into their slots on the loader's threads. */
static int run_round(train_loader *l, train_batch *b, const entry *e, const int32_t *slot, int32_t n, uint8_t *ok,
                     char (*why)[256])
{
    job j = {.l = l, .b = b, .e = e, .slot = slot, .n = n, .ok = ok, .why = why};
    atomic_init(&j.next, 0);
    pthread_mutex_init(&j.mu, NULL);
    int nt = l->o.threads < n ? l->o.threads : n;
    pthread_t tid[MAX_THREADS];
    int started = 0;
    for (int t = 1; t < nt; t++)
        if (pthread_create(&tid[t], NULL, work, &j) == 0)
            started = t;
        else
            break;
    work(&j); /* the calling thread works too, with the next free worker buffers */
    for (int t = 1; t <= started; t++)
        pthread_join(tid[t], NULL);
    pthread_mutex_destroy(&j.mu);
    if (j.hard_error)
        return lvd_fail("%s", j.hard_msg);
    return 0;
}

int train_loader_next(train_loader *l, train_batch *b)
{
    int32_t B = l->o.batch;
    if (b->b != B)
        return lvd_fail("loader: the batch was allocated for %d images, the loader makes %d", (int)b->b, (int)B);
    b->epoch = l->epoch;
    b->position = l->pos;
    if (l->pos >= l->order_n) { /* the batch starts at the next epoch's beginning */
        b->epoch = l->epoch + 1;
        b->position = 0;
    }
    entry *e = malloc((size_t)B * sizeof *e);
    int32_t *slot = malloc((size_t)B * sizeof *slot), *todo = malloc((size_t)B * sizeof *todo);
    uint8_t *ok = malloc((size_t)B);
    char(*why)[256] = malloc((size_t)B * sizeof *why);
    int rc = -1;
    if (!e || !slot || !todo || !ok || !why) {
        lvd_fail("out of memory");
        goto out;
    }
    /* Round 1 fills slots 0..B-1 with the next B entries; each later round gives the slots that failed, in
     * slot order, the entries that follow: the batch depends only on the stream, never on thread timing. */
    int32_t ntodo = B;
    for (int32_t s = 0; s < B; s++)
        todo[s] = s;
    uint64_t tried_since_success = 0;
    char last_why[256] = "";
    while (ntodo > 0) {
        for (int32_t k = 0; k < ntodo; k++) {
            if (next_entry(l, &e[k]) != 0)
                goto out;
            slot[k] = todo[k];
        }
        if (run_round(l, b, e, slot, ntodo, ok, why) != 0)
            goto out;
        int32_t left = 0;
        for (int32_t k = 0; k < ntodo; k++) {
            if (ok[k]) {
                tried_since_success = 0;
                continue;
            }
            l->failed++;
            tried_since_success++;
            log_warn("sample %" PRIu32 " skipped: %s", e[k].sample, why[k]);
            memcpy(last_why, why[k], sizeof last_why);
            todo[left++] = slot[k];
        }
        ntodo = left;
        if (tried_since_success > l->n) {
            lvd_fail("loader: no sample of the manifest can be read and decoded (the last: %s)", last_why);
            goto out;
        }
    }
    /* Masks of the 2B global crops, from a stream keyed by the batch's start. */
    mask_rng r;
    mask_rng_seed(&r, l->o.seed * 0x9e3779b97f4a7c15ULL ^ (b->epoch * 0xbf58476d1ce4e5b9ULL + b->position + 1));
    if (mask_collate(&l->mg, &r, l->o.mask_ratio[0], l->o.mask_ratio[1], l->o.mask_probability, &b->masks) != 0)
        goto out;
    rc = 0;
out:
    free(e);
    free(slot);
    free(todo);
    free(ok);
    free(why);
    return rc;
}
