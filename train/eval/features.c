/* features.c — normalised CLS features of a collection (see features.h), batches double buffered through
 * the shared loader thread (common/embed_loader.h) while the model runs the previous batch. */
#include "features.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed_loader.h"
#include "err.h"
#include "log.h"
#include "progress.h"

/* A growing buffer of NUL-terminated strings. */
typedef struct strbuf {
    char *p;
    size_t n, cap;
} strbuf;

static int strbuf_add(strbuf *b, const char *s)
{
    size_t len = strlen(s) + 1;
    if (b->n + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + len)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np)
            return lvd_fail("out of memory");
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    return 0;
}

/* One member to embed: its image, where its working image is, and its key and label (offsets into the
 * string buffer `all`). About 48 bytes per member. */
typedef struct item {
    int64_t image_id;
    int64_t shard;          /* index into the shard paths */
    uint64_t offset, size;  /* the working image's bytes in that shard */
    size_t key, label;      /* offsets into all */
} item;

typedef struct ctx {
    vit_model *m;
    vit_run *run_full, *run_tail;
    int32_t tail_n, batch;
    uint32_t crop;
    eval_set *out;
    int32_t n_blocks, avgpool; /* linear features (features.h); 0: the normalised CLS */
    float *patch, *cls;        /* linear features: vit_intermediate's (n_blocks, batch, N, D) and (n_blocks,
                                  batch, D) */
    int64_t cap;
    strbuf keys, labels; /* of the rows kept (the output) */
    strbuf all;          /* keys and labels of every item */
    strbuf shards;       /* the working-image shard paths, absolute */
    size_t *shard_off;   /* offsets into shards, by shard index */
    int64_t *shard_ids;  /* catalog shards.id of each index (sorted: shards are listed by id) */
    int64_t nshards;
    item *items; /* every member to embed, in key order */
    int64_t nitems;
    progress prog;
} ctx;

static int list_shards(catalog *c, const char *work, ctx *x)
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT id, path FROM shards WHERE kind = 'img' ORDER BY id");
    if (!st)
        return -1;
    int64_t cap = 0;
    int rc;
    char path[EMBED_LOADER_PATH_MAX];
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (x->nshards == cap) {
            cap = cap ? 2 * cap : 64;
            size_t *no = realloc(x->shard_off, (size_t)cap * sizeof *no);
            if (no)
                x->shard_off = no;
            int64_t *ni = realloc(x->shard_ids, (size_t)cap * sizeof *ni);
            if (ni)
                x->shard_ids = ni;
            if (!no || !ni) {
                sqlite3_reset(st);
                return lvd_fail("out of memory");
            }
        }
        if (snprintf(path, sizeof path, "%s/%s", work, (const char *)sqlite3_column_text(st, 1)) >= (int)sizeof path) {
            sqlite3_reset(st);
            return lvd_fail("%s: shard path too long", catalog_path(c));
        }
        x->shard_ids[x->nshards] = sqlite3_column_int64(st, 0);
        x->shard_off[x->nshards++] = x->shards.n;
        if (strbuf_add(&x->shards, path) != 0) {
            sqlite3_reset(st);
            return -1;
        }
    }
    if (rc != SQLITE_DONE)
        return catalog_step_fail(c, st);
    sqlite3_reset(st);
    return 0;
}

static int64_t shard_index(const ctx *x, int64_t id)
{
    int64_t lo = 0, hi = x->nshards;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (x->shard_ids[mid] < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < x->nshards && x->shard_ids[lo] == id ? lo : -1;
}

static int list_items(catalog *c, const char *work, int64_t coll, ctx *x)
{
    if (list_shards(c, work, x) != 0)
        return -1;
    sqlite3_stmt *st = catalog_stmt(
        c, "SELECT m.image_id, m.key, coalesce(m.label, ''), d.shard_id, d.offset, d.size FROM members m"
           " LEFT JOIN decodes d ON d.image_id = m.image_id AND d.status = 'ok' AND d.shard_id IS NOT NULL"
           " WHERE m.collection_id = ?1 ORDER BY m.key");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, coll);
    int64_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        x->out->members++;
        if (sqlite3_column_type(st, 3) == SQLITE_NULL) {
            x->out->undecoded++;
            continue;
        }
        if (x->nitems == cap) {
            cap = cap ? 2 * cap : 1024;
            item *ni = realloc(x->items, (size_t)cap * sizeof *ni);
            if (!ni) {
                sqlite3_reset(st);
                return lvd_fail("out of memory");
            }
            x->items = ni;
        }
        item *it = &x->items[x->nitems];
        it->image_id = sqlite3_column_int64(st, 0);
        it->shard = shard_index(x, sqlite3_column_int64(st, 3));
        if (it->shard < 0) {
            sqlite3_reset(st);
            return lvd_fail("%s: image %" PRId64 ": its working image's shard %lld is not an img shard",
                            catalog_path(c), it->image_id, (long long)sqlite3_column_int64(st, 3));
        }
        it->offset = (uint64_t)sqlite3_column_int64(st, 4);
        it->size = (uint64_t)sqlite3_column_int64(st, 5);
        it->key = x->all.n;
        if (strbuf_add(&x->all, (const char *)sqlite3_column_text(st, 1)) != 0) {
            sqlite3_reset(st);
            return -1;
        }
        it->label = x->all.n;
        if (strbuf_add(&x->all, (const char *)sqlite3_column_text(st, 2)) != 0) {
            sqlite3_reset(st);
            return -1;
        }
        x->nitems++;
    }
    if (rc != SQLITE_DONE)
        return catalog_step_fail(c, st);
    sqlite3_reset(st);
    return 0;
}

static void fill_slot(ctx *x, embed_load_slot *s, int64_t first)
{
    s->n = 0;
    for (int64_t i = first; i < x->nitems && s->n < x->batch; i++) {
        embed_load_item *li = &s->items[s->n++];
        li->image_id = x->items[i].image_id;
        snprintf(li->path, sizeof li->path, "%s", x->shards.p + x->shard_off[x->items[i].shard]);
        li->offset = x->items[i].offset;
        li->size = x->items[i].size;
        li->error[0] = '\0';
    }
}

/* Runs a loaded slot through the model and appends a normalised CLS row per image that loaded. */
static int run_slot(ctx *x, embed_load_slot *s, int64_t first)
{
    vit_run *r = x->run_full;
    if (s->n != x->batch) {
        if (!x->run_tail || x->tail_n != s->n) {
            vit_run_free(x->run_tail);
            x->run_tail = NULL;
            vit_run_opts ro = {.batch = s->n, .height = (int32_t)x->crop, .width = (int32_t)x->crop,
                               .keep_layers = x->n_blocks};
            if (vit_run_create(x->m, &ro, &x->run_tail) != 0)
                return -1;
            x->tail_n = s->n;
        }
        r = x->run_tail;
    }
    if (vit_forward(x->m, r, s->x, NULL, 0.0f, 0) != 0)
        return -1;
    const float *cls = vit_out_cls(r);
    const int32_t D = x->m->cfg.dim, nb = x->n_blocks;
    const int64_t N = (int64_t)(x->crop / (uint32_t)x->m->cfg.patch) * (x->crop / (uint32_t)x->m->cfg.patch);
    if (nb > 0 && vit_intermediate(x->m, r, nb, 1, x->patch, x->cls) != 0)
        return -1;
    eval_set *o = x->out;
    for (int i = 0; i < s->n; i++) {
        const item *it = &x->items[first + i];
        if (!s->items[i].ok) {
            log_warn("%s: not evaluated: %s", x->all.p + it->key, s->items[i].error);
            o->failed++;
            continue;
        }
        if (nb > 0) { /* create_linear_input: [cls of the last nb blocks, oldest first ; mean patch token] */
            float *row = o->x + (size_t)o->n * (size_t)o->dim;
            for (int32_t l = 0; l < nb; l++)
                memcpy(row + (size_t)l * D, x->cls + ((size_t)l * s->n + i) * D, (size_t)D * sizeof *row);
            if (x->avgpool) {
                const float *p = x->patch + (((size_t)(nb - 1) * s->n + i) * N) * D;
                for (int32_t d = 0; d < D; d++) {
                    double a = 0;
                    for (int64_t t = 0; t < N; t++)
                        a += p[t * D + d];
                    row[(size_t)nb * D + d] = (float)(a / (double)N);
                }
            }
            o->image_id[o->n] = it->image_id;
            if (strbuf_add(&x->keys, x->all.p + it->key) != 0 || strbuf_add(&x->labels, x->all.p + it->label) != 0)
                return -1;
            o->n++;
            continue;
        }
        float *row = o->x + (size_t)o->n * (size_t)D;
        double ss = 0;
        for (int32_t d = 0; d < D; d++)
            ss += (double)cls[(size_t)i * D + d] * cls[(size_t)i * D + d];
        /* F.normalize: x / max(||x||, 1e-12) */
        double nrm = sqrt(ss);
        float inv = (float)(1.0 / (nrm > 1e-12 ? nrm : 1e-12));
        for (int32_t d = 0; d < D; d++)
            row[d] = cls[(size_t)i * D + d] * inv;
        o->image_id[o->n] = it->image_id;
        if (strbuf_add(&x->keys, x->all.p + it->key) != 0 || strbuf_add(&x->labels, x->all.p + it->label) != 0)
            return -1;
        o->n++;
    }
    return 0;
}

int eval_features(catalog *c, const char *work, const char *name, vit_model *m, const eval_feat_opts *o,
                  eval_set *out)
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT id FROM collections WHERE name = ?1");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int64_t coll = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    if (!coll)
        return lvd_fail("%s: no collection '%s' (lvd-import --collection %s ...)", catalog_path(c), name, name);
    ctx x = {.m = m, .batch = o->batch, .crop = o->crop, .out = out, .n_blocks = o->n_blocks,
             .avgpool = o->n_blocks > 0 && o->avgpool};
    if (o->n_blocks < 0 || o->n_blocks > m->cfg.depth)
        return lvd_fail("%" PRId32 " last blocks asked of a model of %d blocks", o->n_blocks, (int)m->cfg.depth);
    embed_loader ld;
    memset(&ld, 0, sizeof ld);
    int rc = -1;
    out->dim = x.n_blocks > 0 ? (x.n_blocks + x.avgpool) * m->cfg.dim : m->cfg.dim;
    if (list_items(c, work, coll, &x) != 0)
        goto done;
    if (x.n_blocks > 0) {
        size_t np = (size_t)(o->crop / (uint32_t)m->cfg.patch) * (o->crop / (uint32_t)m->cfg.patch);
        x.patch = malloc((size_t)x.n_blocks * (size_t)o->batch * np * (size_t)m->cfg.dim * sizeof *x.patch);
        x.cls = malloc((size_t)x.n_blocks * (size_t)o->batch * (size_t)m->cfg.dim * sizeof *x.cls);
        if (!x.patch || !x.cls) {
            lvd_fail("out of memory for the intermediate layers of a batch of %d", (int)o->batch);
            goto done;
        }
    }
    int64_t rows = x.nitems ? x.nitems : 1;
    out->x = malloc((size_t)rows * (size_t)out->dim * sizeof *out->x);
    out->image_id = malloc((size_t)rows * sizeof *out->image_id);
    if (!out->x || !out->image_id) {
        lvd_fail("out of memory for %" PRId64 " features of %d floats", x.nitems, (int)out->dim);
        goto done;
    }
    if (x.nitems == 0) {
        rc = 0;
        goto done;
    }
    vit_run_opts ro = {.batch = o->batch, .height = (int32_t)o->crop, .width = (int32_t)o->crop,
                       .keep_layers = x.n_blocks};
    if (vit_run_create(m, &ro, &x.run_full) != 0 ||
        embed_loader_start(&ld, o->loaders, o->batch, o->resize, o->crop) != 0)
        goto done;
    progress_init(&x.prog, name, (uint64_t)x.nitems);
    int k = embed_loader_next(&ld);
    int64_t first = 0;
    fill_slot(&x, &ld.slots[k], first);
    embed_loader_queue(&ld, k);
    int err = 0;
    while (first < x.nitems) {
        int64_t next = first + ld.slots[k].n;
        int queued = 0;
        if (next < x.nitems) {
            fill_slot(&x, &ld.slots[k ^ 1], next);
            embed_loader_queue(&ld, k ^ 1);
            queued = 1;
        }
        embed_loader_wait(&ld, k);
        if (run_slot(&x, &ld.slots[k], first) != 0)
            err = 1;
        embed_loader_release(&ld, k);
        if (err) {
            if (queued) {
                embed_loader_wait(&ld, k ^ 1);
                embed_loader_release(&ld, k ^ 1);
            }
            goto done;
        }
        progress_update(&x.prog, (uint64_t)next, (uint64_t)out->failed);
        first = next;
        k ^= 1;
    }
    progress_finish(&x.prog);
    rc = 0;
done:
    embed_loader_free(&ld);
    vit_run_free(x.run_full);
    vit_run_free(x.run_tail);
    free(x.patch);
    free(x.cls);
    free(x.items);
    free(x.all.p);
    free(x.shards.p);
    free(x.shard_off);
    free(x.shard_ids);
    out->keys = x.keys.p;
    out->labels = x.labels.p;
    return rc;
}

void eval_set_free(eval_set *s)
{
    free(s->x);
    free(s->image_id);
    free(s->keys);
    free(s->labels);
    memset(s, 0, sizeof *s);
}
