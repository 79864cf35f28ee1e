/* search.c — the k-NN search phase of lvd-dedup (see search.h).
 *
 * Besides the pairs above the thresholds, every query records its nearest neighbour in the pool and in each
 * benchmark (dedup_nearest, catalog-004.sql) whatever the similarity, in the same transaction: the candidates
 * within SIM_SLACK of the best FAISS similarity get the exact value (as edges do) and the most similar wins
 * (ties: smaller image id). A query that finds an older pool image (searched before this run) more similar
 * than that image's stored neighbour moves the older image's row to it. */
#include "search.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "knn.h"
#include "log.h"
#include "progress.h"

#define SIM_SLACK 1e-3 /* FAISS similarities within this of a threshold are recomputed exactly */

/* knn_build's view of an item list: the vector of its i-th item. */
typedef struct item_rows {
    const dedup_ctx *x;
    const dedup_items *s;
} item_rows;

static int item_row(void *ctx, int64_t i, float *out)
{
    const item_rows *r = ctx;
    return dedup_item_vec(r->x, &r->s->v[i], out);
}

/* An index over the vectors of s (ids = positions in s), built in batches from the mapped rows. */
static int build_index(dedup_ctx *x, const dedup_items *s, int64_t exact_max, knn_index **out)
{
    knn_opts o;
    knn_opts_default(&o);
    if (exact_max > 0)
        o.exact_max = exact_max;
    o.factory = x->p.factory;
    if (x->p.nprobe > 0)
        o.nprobe = x->p.nprobe;
    item_rows r = {x, s};
    return knn_build(x->dim, s->n, &o, item_row, &r, out);
}

/* A k-NN edge found in the current batch (a < b: image ids). */
typedef struct found_edge {
    int64_t a, b;
    double sim;
} found_edge;

static int found_edge_order(const void *pa, const void *pb)
{
    const found_edge *x = pa, *y = pb;
    if (x->a != y->a)
        return x->a < y->a ? -1 : 1;
    return x->b < y->b ? -1 : x->b > y->b;
}

/* Appends a batch's edges, each pair once, to dedup_edges_found (catalog-004.sql): appends touch only the
 * table's last pages, where inserts into dedup_edges at 1,000,000 images with ~13 edges each rewrote most of
 * its B-tree in every batch. dedup_search_fold moves them into dedup_edges. The two directions of a pair found
 * in one batch carry the same similarity (computed in image id order). */
static int insert_edges(dedup_ctx *x, found_edge *fe, int64_t n)
{
    qsort(fe, (size_t)n, sizeof *fe, found_edge_order);
    for (int64_t i = 0; i < n; i++) {
        if (i > 0 && fe[i].a == fe[i - 1].a && fe[i].b == fe[i - 1].b)
            continue;
        sqlite3_stmt *st = catalog_stmt(x->st.cat, "INSERT INTO dedup_edges_found(model_id, image_a, image_b, sim)"
                                                   " VALUES (?1, ?2, ?3, ?4)");
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, x->model_id);
        sqlite3_bind_int64(st, 2, fe[i].a);
        sqlite3_bind_int64(st, 3, fe[i].b);
        sqlite3_bind_double(st, 4, fe[i].sim);
        if (catalog_step_done(x->st.cat, st) != 0)
            return -1;
    }
    return 0;
}

int dedup_search_fold(dedup_ctx *x, catalog *c)
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT EXISTS (SELECT 1 FROM dedup_edges_found WHERE model_id = ?1)");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    int have = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0);
    sqlite3_reset(st);
    if (!have)
        return 0;
    double t0 = progress_now();
    if (catalog_begin(c) != 0)
        return -1;
    /* In (image_a, image_b) order, so dedup_edges takes them as appends within each key range. */
    st = catalog_stmt(c, "INSERT INTO dedup_edges(model_id, image_a, image_b, sim, kind)"
                         " SELECT model_id, image_a, image_b, sim, 'knn' FROM dedup_edges_found WHERE model_id = ?1"
                         " ORDER BY image_a, image_b ON CONFLICT DO NOTHING");
    if (!st)
        goto fail;
    sqlite3_bind_int64(st, 1, x->model_id);
    if (catalog_step_done(c, st) != 0)
        goto fail;
    int64_t added = sqlite3_changes(catalog_db(c));
    st = catalog_stmt(c, "DELETE FROM dedup_edges_found WHERE model_id = ?1");
    if (!st)
        goto fail;
    sqlite3_bind_int64(st, 1, x->model_id);
    if (catalog_step_done(c, st) != 0 || catalog_commit(c) != 0)
        goto fail;
    x->edges_found += added;
    log_info("%" PRId64 " new edges moved into dedup_edges in %.1f s", added, progress_now() - t0);
    return 0;
fail:
    catalog_rollback(c);
    return -1;
}

static int insert_match(dedup_ctx *x, int64_t image, int64_t coll, int64_t bimage, double sim)
{
    sqlite3_stmt *st = catalog_stmt(x->st.cat, "INSERT INTO dedup_benchmark_matches(model_id, image_id, collection_id,"
                                               " bench_image_id, sim) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    sqlite3_bind_int64(st, 2, image);
    sqlite3_bind_int64(st, 3, coll);
    sqlite3_bind_int64(st, 4, bimage);
    sqlite3_bind_double(st, 5, sim);
    return catalog_step_done(x->st.cat, st);
}

/* Records one observation of image's nearest neighbour in collection coll (0: the pool): a new row, or the
 * stored row replaced when this one is more similar (ties: the smaller neighbour id), so a row is the best of
 * everything searched (catalog-004.sql). *changed gets whether a row was written. */
static int upsert_nearest(dedup_ctx *x, int64_t image, int64_t coll, int64_t nearest, double sim, int *changed)
{
    sqlite3_stmt *st = catalog_stmt(
        x->st.cat, "INSERT INTO dedup_nearest(model_id, collection_id, image_id, nearest_image_id, sim)"
                   " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(model_id, collection_id, image_id) DO UPDATE SET"
                   " nearest_image_id = excluded.nearest_image_id, sim = excluded.sim, dedup_run_id = NULL"
                   " WHERE excluded.sim > dedup_nearest.sim OR (excluded.sim = dedup_nearest.sim AND"
                   " excluded.nearest_image_id < dedup_nearest.nearest_image_id)");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    sqlite3_bind_int64(st, 2, coll);
    sqlite3_bind_int64(st, 3, image);
    sqlite3_bind_int64(st, 4, nearest);
    sqlite3_bind_double(st, 5, sim);
    if (catalog_step_done(x->st.cat, st) != 0)
        return -1;
    if (changed)
        *changed = sqlite3_changes(catalog_db(x->st.cat)) > 0;
    return 0;
}

/* The pool's nearest neighbours in memory, position-indexed like x->pool: sim (-INFINITY: none known), the
 * neighbour's image id, and a flag for rows to write at the end of the batch, whose positions are listed in
 * changed[0..nchanged) (so a batch writes and clears only what it touched, not the whole pool). older: pool
 * images searched before this run (decided, or searched by an earlier attempt), whose rows a query may
 * improve. */
typedef struct nearest_mem {
    double *sim;
    int64_t *id;
    uint8_t *dirty, *older;
    int64_t *changed, nchanged;
} nearest_mem;

static void nearest_free(nearest_mem *m)
{
    free(m->sim);
    free(m->id);
    free(m->dirty);
    free(m->older);
    free(m->changed);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Allocates m (a batch touches at most per_batch positions) and reads the stored pool rows of the older
 * images (from catalog.db, read-only in a partitioned run: the part file holds only its own searches). */
static int nearest_init(dedup_ctx *x, nearest_mem *m, int64_t per_batch)
{
    int64_t n = x->pool.n > 0 ? x->pool.n : 1;
    if (per_batch > n)
        per_batch = n;
    m->sim = malloc((size_t)n * sizeof *m->sim);
    m->id = malloc((size_t)n * sizeof *m->id);
    m->dirty = calloc((size_t)n, 1);
    m->older = calloc((size_t)n, 1);
    m->changed = malloc((size_t)per_batch * sizeof *m->changed);
    if (!m->sim || !m->id || !m->dirty || !m->older || !m->changed)
        return lvd_fail("out of memory for the nearest neighbours of %" PRId64 " pool images", n);
    int64_t nolder = 0;
    for (int64_t i = 0; i < x->pool.n; i++) {
        const dedup_item *it = &x->pool.v[i];
        m->sim[i] = -INFINITY;
        m->id[i] = INT64_MAX;
        m->older[i] = !it->query && (it->decided || it->searched);
        nolder += m->older[i];
    }
    catalog *src = x->st.part.count > 1 ? x->st.main_ro : x->st.cat;
    if (nolder == 0 || !src)
        return 0;
    sqlite3_stmt *st = catalog_stmt(src, "SELECT image_id, nearest_image_id, sim FROM dedup_nearest"
                                         " WHERE model_id = ?1 AND collection_id = 0");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t i = dedup_items_find(&x->pool, sqlite3_column_int64(st, 0));
        if (i < 0 || !m->older[i])
            continue;
        m->id[i] = sqlite3_column_int64(st, 1);
        m->sim[i] = sqlite3_column_double(st, 2);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return dedup_db_error(src, "reading dedup_nearest");
    return 0;
}

/* Whether (sim, id) is a better nearest neighbour than the one known at pool position i. */
static int nearest_better(const nearest_mem *m, int64_t i, double sim, int64_t id)
{
    return sim > m->sim[i] || (sim == m->sim[i] && id < m->id[i]);
}

/* Records (sim, id) as the nearest neighbour known at pool position i when it is better. */
static void nearest_offer(nearest_mem *m, int64_t i, double sim, int64_t id)
{
    if (!nearest_better(m, i, sim, id))
        return;
    m->sim[i] = sim;
    m->id[i] = id;
    if (!m->dirty[i]) {
        m->dirty[i] = 1;
        m->changed[m->nchanged++] = i;
    }
}

static int mark_searched(dedup_ctx *x, int64_t image)
{
    sqlite3_stmt *st = catalog_stmt(x->st.cat, "INSERT OR REPLACE INTO dedup_searched(model_id, image_id, fingerprint) "
                                               "VALUES (?1, ?2, ?3)");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    sqlite3_bind_int64(st, 2, image);
    sqlite3_bind_text(st, 3, x->fp, -1, SQLITE_STATIC);
    return catalog_step_done(x->st.cat, st);
}

/* Searches every pool image flagged query; returns 0 or -1. */
int dedup_search(dedup_ctx *x, int64_t nq)
{
    int32_t d = x->dim;
    knn_index *pix = NULL, **bix = calloc((size_t)(x->nb > 0 ? x->nb : 1), sizeof *bix);
    int64_t bs = x->p.batch;
    int32_t kk = x->p.k + 1; /* the image itself comes back too */
    if (kk > x->pool.n)
        kk = (int32_t)x->pool.n;
    int32_t kmax = kk > x->p.k ? kk : x->p.k;
    float *q = malloc((size_t)bs * (size_t)d * sizeof *q), *v = malloc((size_t)d * sizeof *v);
    float *sims = malloc((size_t)bs * (size_t)kmax * sizeof *sims);
    int64_t *ids = malloc((size_t)bs * (size_t)kmax * sizeof *ids), *qi = malloc((size_t)bs * sizeof *qi);
    found_edge *fe = malloc((size_t)bs * (size_t)kk * sizeof *fe); /* at most kk - 1 edges per query */
    int rc = -1;
    nearest_mem nm = {0};
    if (!bix || !q || !v || !sims || !ids || !qi || !fe) {
        lvd_fail("out of memory for search batches of %" PRId64 " queries", bs);
        goto out;
    }
    if (nearest_init(x, &nm, bs * ((int64_t)kk + 1)) != 0) /* queries + older images they improve */
        goto out;
    double t0 = progress_now();
    if (build_index(x, &x->pool, x->p.exact_max, &pix) != 0)
        goto out;
    knn_describe(pix, x->index_desc, sizeof x->index_desc);
    log_info("pool index: %s (built in %.1f s)", x->index_desc, progress_now() - t0);
    for (int b = 0; b < x->nb; b++) {
        if (x->b[b].im.n == 0)
            continue;
        if (build_index(x, &x->b[b].im, 0, &bix[b]) != 0)
            goto out;
        char desc[512];
        knn_describe(bix[b], desc, sizeof desc);
        log_info("benchmark '%s' index: %s", x->b[b].name, desc);
    }
    progress prog;
    progress_init(&prog, "dedup search", (uint64_t)nq);
    int64_t next = 0;
    while (next < x->pool.n) {
        int64_t n = 0;
        for (; next < x->pool.n && n < bs; next++) {
            if (!x->pool.v[next].query)
                continue;
            if (dedup_item_vec(x, &x->pool.v[next], q + (size_t)n * (size_t)d) != 0)
                goto out;
            qi[n++] = next;
        }
        if (n == 0)
            break;
        if (catalog_begin(x->st.cat) != 0)
            goto out;
        if (knn_search(pix, q, n, kk, sims, ids) != 0)
            goto fail_tx;
        int64_t nfe = 0;
        for (int64_t i = 0; i < n; i++) {
            const dedup_item *me = &x->pool.v[qi[i]];
            const float *qv = q + (size_t)i * (size_t)d;
            double top = NAN; /* FAISS similarity of the first other image: the nearest candidates are within
                               * SIM_SLACK of it, and get the exact value */
            for (int32_t j = 0; j < kk; j++) {
                int64_t id = ids[(size_t)i * (size_t)kk + (size_t)j];
                if (id < 0 || id == qi[i])
                    continue;
                double fs = sims[(size_t)i * (size_t)kk + (size_t)j];
                if (isnan(top))
                    top = fs;
                int near = fs >= top - SIM_SLACK, edge = fs > x->p.threshold - SIM_SLACK;
                int older = nm.older[id] && fs > nm.sim[id] - SIM_SLACK;
                if (!near && !edge && !older)
                    continue; /* not break: an older image further down may still gain this query */
                if (dedup_item_vec(x, &x->pool.v[id], v) != 0)
                    goto fail_tx;
                /* Lower image id first, so both directions sum the same products in the same order. */
                int64_t o = x->pool.v[id].id;
                double s = me->id < o ? vf_dot(qv, v, d) : vf_dot(v, qv, d);
                if (near)
                    nearest_offer(&nm, qi[i], s, o);
                if (older)
                    nearest_offer(&nm, id, s, me->id);
                if (s > x->p.threshold)
                    fe[nfe++] = (found_edge){.a = me->id < o ? me->id : o, .b = me->id < o ? o : me->id, .sim = s};
            }
        }
        if (insert_edges(x, fe, nfe) != 0)
            goto fail_tx;
        /* Pool rows: the queries' own, and the older images this batch improved, in image id order (pool
         * positions are in id order). */
        qsort(nm.changed, (size_t)nm.nchanged, sizeof *nm.changed, cmp_i64);
        for (int64_t c = 0; c < nm.nchanged; c++) {
            int64_t i = nm.changed[c];
            int changed = 0;
            if (upsert_nearest(x, x->pool.v[i].id, 0, nm.id[i], nm.sim[i], &changed) != 0)
                goto fail_tx;
            if (nm.older[i])
                x->nearest_updated += changed;
            else
                x->nearest_written++;
        }
        for (int b = 0; b < x->nb; b++) {
            if (!bix[b])
                continue;
            int32_t kb = x->p.k < x->b[b].im.n ? x->p.k : (int32_t)x->b[b].im.n;
            if (knn_search(bix[b], q, n, kb, sims, ids) != 0)
                goto fail_tx;
            for (int64_t i = 0; i < n; i++) {
                const float *qv = q + (size_t)i * (size_t)d;
                double top = NAN, best = -INFINITY;
                int64_t best_id = -1;
                for (int32_t j = 0; j < kb; j++) {
                    int64_t id = ids[(size_t)i * (size_t)kb + (size_t)j];
                    if (id < 0)
                        continue;
                    double fs = sims[(size_t)i * (size_t)kb + (size_t)j];
                    if (isnan(top))
                        top = fs;
                    int near = fs >= top - SIM_SLACK;
                    if (!near && fs <= x->p.bthreshold - SIM_SLACK)
                        break; /* descending */
                    if (dedup_item_vec(x, &x->b[b].im.v[id], v) != 0)
                        goto fail_tx;
                    double s = vf_dot(qv, v, d);
                    int64_t bid = x->b[b].im.v[id].id;
                    if (near && (s > best || (s == best && bid < best_id))) {
                        best = s;
                        best_id = bid;
                    }
                    if (s > x->p.bthreshold) {
                        if (insert_match(x, x->pool.v[qi[i]].id, x->b[b].id, bid, s) != 0)
                            goto fail_tx;
                        x->matches_found++;
                    }
                }
                if (best_id >= 0) {
                    if (upsert_nearest(x, x->pool.v[qi[i]].id, x->b[b].id, best_id, best, NULL) != 0)
                        goto fail_tx;
                    x->nearest_written++;
                }
            }
        }
        for (int64_t i = 0; i < n; i++) {
            if (mark_searched(x, x->pool.v[qi[i]].id) != 0)
                goto fail_tx;
            x->pool.v[qi[i]].searched = 1;
        }
        if (catalog_commit(x->st.cat) != 0)
            goto fail_tx;
        for (int64_t c = 0; c < nm.nchanged; c++)
            nm.dirty[nm.changed[c]] = 0;
        nm.nchanged = 0;
        x->searched += n;
        progress_update(&prog, (uint64_t)x->searched, 0);
    }
    progress_finish(&prog);
    if (dedup_search_fold(x, x->st.cat) != 0)
        goto out;
    rc = 0;
    goto out;
fail_tx:
    catalog_rollback(x->st.cat);
out:
    nearest_free(&nm);
    knn_free(pix);
    for (int b = 0; bix && b < x->nb; b++)
        knn_free(bix[b]);
    free(bix);
    free(q);
    free(v);
    free(sims);
    free(ids);
    free(qi);
    free(fe);
    return rc;
}
