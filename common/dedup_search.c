/* dedup_search.c — the k-NN search phase of lvd-dedup (see dedup_search.h). */
#include "dedup_search.h"

#include <inttypes.h>
#include <stdlib.h>

#include "err.h"
#include "knn.h"
#include "log.h"
#include "progress.h"

#define SIM_SLACK 1e-3 /* FAISS similarities within this of a threshold are recomputed exactly */

/* An index over the vectors of s (ids = positions in s), built in batches from the mapped rows. */
static int build_index(dedup_ctx *x, const dedup_items *s, int64_t exact_max, knn_index **out)
{
    *out = NULL;
    knn_opts o;
    knn_opts_default(&o);
    if (exact_max > 0)
        o.exact_max = exact_max;
    o.factory = x->p.factory;
    if (x->p.nprobe > 0)
        o.nprobe = x->p.nprobe;
    knn_index *ix = NULL;
    if (knn_create(x->dim, s->n, &o, &ix) != 0)
        return -1;
    int64_t bs = o.batch > 0 ? o.batch : 65536;
    float *buf = malloc((size_t)bs * (size_t)x->dim * sizeof *buf);
    int64_t *ids = malloc((size_t)bs * sizeof *ids);
    if (!buf || !ids) {
        lvd_fail("out of memory for an index batch of %" PRId64 " rows", bs);
        goto fail;
    }
    if (knn_needs_training(ix)) {
        /* An evenly spaced sample, in batches of at most bs rows. */
        int64_t m = o.train_max > 0 && o.train_max < s->n ? o.train_max : s->n;
        float *tb = malloc((size_t)m * (size_t)x->dim * sizeof *tb);
        if (!tb) {
            lvd_fail("out of memory for a training sample of %" PRId64 " rows", m);
            goto fail;
        }
        for (int64_t i = 0; i < m; i++)
            if (dedup_item_vec(x, &s->v[(int64_t)((double)i * (double)s->n / (double)m)],
                               tb + (size_t)i * (size_t)x->dim) != 0) {
                free(tb);
                goto fail;
            }
        int r = knn_train(ix, tb, m);
        free(tb);
        if (r != 0)
            goto fail;
    }
    for (int64_t at = 0; at < s->n; at += bs) {
        int64_t n = s->n - at < bs ? s->n - at : bs;
        for (int64_t i = 0; i < n; i++) {
            ids[i] = at + i;
            if (dedup_item_vec(x, &s->v[at + i], buf + (size_t)i * (size_t)x->dim) != 0)
                goto fail;
        }
        if (knn_add(ix, buf, ids, n) != 0)
            goto fail;
    }
    free(buf);
    free(ids);
    *out = ix;
    return 0;
fail:
    free(buf);
    free(ids);
    knn_free(ix);
    return -1;
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

/* Inserts a batch's edges in (image_a, image_b) order, each pair once, and counts the new ones in
 * x->edges_found. Sorted inserts touch each B-tree page of dedup_edges once per batch instead of once per edge
 * (at 1,000,000 images with ~13 edges each, random inserts were bound by page reads). The two directions of a
 * pair found in one batch carry the same similarity (computed in image id order). */
static int insert_edges(dedup_ctx *x, found_edge *fe, int64_t n)
{
    qsort(fe, (size_t)n, sizeof *fe, found_edge_order);
    for (int64_t i = 0; i < n; i++) {
        if (i > 0 && fe[i].a == fe[i - 1].a && fe[i].b == fe[i - 1].b)
            continue;
        sqlite3_stmt *st = catalog_stmt(x->st.cat, "INSERT INTO dedup_edges(model_id, image_a, image_b, sim, kind) "
                                                   "VALUES (?1, ?2, ?3, ?4, 'knn') ON CONFLICT DO NOTHING");
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, x->model_id);
        sqlite3_bind_int64(st, 2, fe[i].a);
        sqlite3_bind_int64(st, 3, fe[i].b);
        sqlite3_bind_double(st, 4, fe[i].sim);
        if (catalog_step_done(x->st.cat, st) != 0)
            return -1;
        x->edges_found += sqlite3_changes(catalog_db(x->st.cat));
    }
    return 0;
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
    if (!bix || !q || !v || !sims || !ids || !qi || !fe) {
        lvd_fail("out of memory for search batches of %" PRId64 " queries", bs);
        goto out;
    }
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
            for (int32_t j = 0; j < kk; j++) {
                int64_t id = ids[(size_t)i * (size_t)kk + (size_t)j];
                if (id < 0 || id == qi[i])
                    continue;
                if (sims[(size_t)i * (size_t)kk + (size_t)j] <= x->p.threshold - SIM_SLACK)
                    break; /* descending */
                if (dedup_item_vec(x, &x->pool.v[id], v) != 0)
                    goto fail_tx;
                /* Lower image id first, so both directions sum the same products in the same order. */
                double s = me->id < x->pool.v[id].id ? vf_dot(qv, v, d) : vf_dot(v, qv, d);
                if (s > x->p.threshold) {
                    int64_t o = x->pool.v[id].id;
                    fe[nfe++] = (found_edge){.a = me->id < o ? me->id : o, .b = me->id < o ? o : me->id, .sim = s};
                }
            }
        }
        if (insert_edges(x, fe, nfe) != 0)
            goto fail_tx;
        for (int b = 0; b < x->nb; b++) {
            if (!bix[b])
                continue;
            int32_t kb = x->p.k < x->b[b].im.n ? x->p.k : (int32_t)x->b[b].im.n;
            if (knn_search(bix[b], q, n, kb, sims, ids) != 0)
                goto fail_tx;
            for (int64_t i = 0; i < n; i++) {
                const float *qv = q + (size_t)i * (size_t)d;
                for (int32_t j = 0; j < kb; j++) {
                    int64_t id = ids[(size_t)i * (size_t)kb + (size_t)j];
                    if (id < 0)
                        continue;
                    if (sims[(size_t)i * (size_t)kb + (size_t)j] <= x->p.bthreshold - SIM_SLACK)
                        break;
                    if (dedup_item_vec(x, &x->b[b].im.v[id], v) != 0)
                        goto fail_tx;
                    double s = vf_dot(qv, v, d);
                    if (s > x->p.bthreshold) {
                        if (insert_match(x, x->pool.v[qi[i]].id, x->b[b].id, x->b[b].im.v[id].id, s) != 0)
                            goto fail_tx;
                        x->matches_found++;
                    }
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
        x->searched += n;
        progress_update(&prog, (uint64_t)x->searched, 0);
    }
    progress_finish(&prog);
    rc = 0;
    goto out;
fail_tx:
    catalog_rollback(x->st.cat);
out:
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
