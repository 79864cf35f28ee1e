/* cluster.c — k-means of the pool for cluster rows, and the assignment of images to centroids (see
 * cluster.h). */
#include "cluster.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomic_file.h"
#include "err.h"
#include "kmeans.h"
#include "kmeans_ranks.h"
#include "log.h"
#include "progress.h"
#include "sha256.h"

#define TRAIN_PER_CENTROID 256 /* training rows per centroid at most (FAISS's max_points_per_centroid) */
#define ASSIGN_BATCH 65536     /* images per assignment call and committed transaction */

/* The newest k-means of the model with this setting in c: *id (0: none), its clusters, path, sha and
 * pool size / generation when trained. */
static int newest_kmeans(catalog *c, int64_t model_id, const char *setting, int64_t *id, int64_t *clusters,
                         char *path, size_t pcap, char sha[65], int64_t *pool_size, int64_t *pool_gen)
{
    *id = 0;
    sqlite3_stmt *st = catalog_stmt(c, "SELECT id, clusters, path, sha256, pool_size, pool_gen FROM retrieve_kmeans"
                                       " WHERE model_id = ?1 AND setting = ?2 ORDER BY id DESC LIMIT 1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, model_id);
    sqlite3_bind_text(st, 2, setting, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        *clusters = sqlite3_column_int64(st, 1);
        snprintf(path, pcap, "%s", (const char *)sqlite3_column_text(st, 2));
        snprintf(sha, 65, "%s", (const char *)sqlite3_column_text(st, 3));
        *pool_size = sqlite3_column_int64(st, 4);
        *pool_gen = sqlite3_column_int64(st, 5);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : rt_db_error(c, "reading retrieve_kmeans");
}

/* Loads the centroids of a recorded k-means, checking the file against its recorded SHA-256 and shape. */
static int load_km(rt_ctx *x, rt_kmeans *km, const char *rel, const char *sha)
{
    char path[STAGE_PATH_MAX + 300], got[65];
    snprintf(path, sizeof path, "%s/%s", x->work, rel);
    if (sha256_file(path, got) != 0)
        return lvd_fail_ctx("k-means %" PRId64 " of model '%s' (run with --recluster to train it again)", km->id,
                            x->o.model);
    if (strcmp(got, sha) != 0)
        return lvd_fail("%s: the centroids of k-means %" PRId64 " changed since they were recorded (SHA-256 %s, "
                        "recorded %s); run with --recluster to train them again", path, km->id, got, sha);
    int32_t k = 0, d = 0;
    if (kmeans_load(path, x->dim, &km->centroids, &k, &d) != 0)
        return -1;
    if (k != km->clusters)
        return lvd_fail("%s: %d centroids, recorded %" PRId64, path, (int)k, km->clusters);
    return 0;
}

/* Trains a k-means of `clusters` centroids on the pool and records it (file, then row) in x->st.cat. */
static int train_km(rt_ctx *x, rt_kmeans *km, const char *setting)
{
    int64_t n = x->pool.n;
    int64_t m = km->clusters * TRAIN_PER_CENTROID;
    if (m > n)
        m = n;
    float *xs = malloc((size_t)m * (size_t)x->dim * sizeof *xs);
    km->centroids = malloc((size_t)km->clusters * (size_t)x->dim * sizeof *km->centroids);
    double *obj = calloc((size_t)(x->o.kmeans_iters > 0 ? x->o.kmeans_iters : 1), sizeof *obj);
    if (!xs || !km->centroids || !obj) {
        free(xs);
        free(obj);
        return lvd_fail("out of memory for a k-means training sample of %" PRId64 " x %d", m, (int)x->dim);
    }
    /* An evenly spaced sample of the pool (by id): the same pool gives the same sample. */
    for (int64_t i = 0; i < m; i++)
        if (rt_item_vec(x, &x->pool.v[(int64_t)((double)i * (double)n / (double)m)], xs + (size_t)i * (size_t)x->dim) != 0) {
            free(xs);
            free(obj);
            return -1;
        }
    kmeans_opts o;
    kmeans_opts_default(&o);
    o.k = (int32_t)km->clusters;
    o.iterations = x->o.kmeans_iters;
    o.seed = x->o.kmeans_seed;
    o.max_points_per_centroid = 0; /* the sample above is the training set */
    kmeans_stats ks = {.objective = obj};
    double t0 = progress_now();
    int rc = kmr_train(x->dist, xs, m, x->dim, &o, km->centroids, &ks);
    free(xs);
    if (rc != 0) {
        free(obj);
        return lvd_fail_ctx("k-means of model '%s' (%" PRId64 " clusters)", x->o.model, km->clusters);
    }
    double objective = ks.iterations > 0 ? obj[ks.iterations - 1] : NAN;
    free(obj);
    log_info("k-means: %" PRId64 " clusters of %" PRId64 " pool images trained on %" PRId64 " in %.1f s (%d "
             "iterations, mean cosine to the centroid %.4f, %" PRId64 " empty clusters repaired)",
             km->clusters, n, m, progress_now() - t0, (int)ks.iterations, objective, ks.repaired);
    catalog *c = x->st.cat;
    char now[32], rel[600], path[STAGE_PATH_MAX + 700], sha[65], dir[STAGE_PATH_MAX + 600];
    catalog_now(now);
    if (catalog_begin(c) != 0)
        return -1;
    sqlite3_stmt *st = catalog_stmt(c, "INSERT INTO retrieve_kmeans(model_id, clusters, setting, path, sha256, seed,"
                                       " iterations, train_points, pool_size, pool_gen, objective, created_at, run_id)"
                                       " VALUES (?1, ?2, ?3, '', '', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
    if (!st)
        goto fail;
    sqlite3_bind_int64(st, 1, x->model_id);
    sqlite3_bind_int64(st, 2, km->clusters);
    sqlite3_bind_text(st, 3, setting, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, (int64_t)x->o.kmeans_seed);
    sqlite3_bind_int64(st, 5, ks.iterations);
    sqlite3_bind_int64(st, 6, m);
    sqlite3_bind_int64(st, 7, n);
    sqlite3_bind_int64(st, 8, x->gen);
    if (isfinite(objective))
        sqlite3_bind_double(st, 9, objective);
    sqlite3_bind_text(st, 10, now, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 11, x->st.run_id);
    if (catalog_step_done(c, st) != 0)
        goto fail;
    km->id = sqlite3_last_insert_rowid(catalog_db(c));
    /* The file first (written whole, fsynced, renamed), then the commit of the row naming it: a crash in
     * between leaves a file no row names, which the same id overwrites next time. */
    snprintf(dir, sizeof dir, "%s/clusters/%s", x->work, x->o.model);
    snprintf(rel, sizeof rel, "clusters/%s/kmeans-%" PRId64 "-%" PRId64 ".npy", x->o.model, km->id, km->clusters);
    snprintf(path, sizeof path, "%s/%s", x->work, rel);
    if (atomic_file_mkdirs(dir) != 0 || kmeans_save(path, km->centroids, (int32_t)km->clusters, x->dim) != 0 ||
        sha256_file(path, sha) != 0)
        goto fail;
    st = catalog_stmt(c, "UPDATE retrieve_kmeans SET path = ?1, sha256 = ?2 WHERE id = ?3");
    if (!st)
        goto fail;
    sqlite3_bind_text(st, 1, rel, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, sha, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, km->id);
    if (catalog_step_done(c, st) != 0)
        goto fail;
    /* The assignments of the k-means this one replaces (--recluster) are never read again. */
    st = catalog_stmt(c, "DELETE FROM retrieve_assign WHERE kmeans_id IN (SELECT id FROM retrieve_kmeans WHERE"
                         " model_id = ?1 AND setting = ?2 AND id < ?3)");
    if (!st)
        goto fail;
    sqlite3_bind_int64(st, 1, x->model_id);
    sqlite3_bind_text(st, 2, setting, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, km->id);
    if (catalog_step_done(c, st) != 0 || catalog_commit(c) != 0)
        goto fail;
    km->pool_size = n;
    km->pool_gen = x->gen;
    return 0;
fail:
    catalog_rollback(c);
    return -1;
}

int rt_cluster_prepare(rt_ctx *x, int train)
{
    for (int ri = 0; ri < x->nrows; ri++) {
        rt_row *r = &x->rows[ri];
        if (r->method != REGISTRY_CLUSTER || r->skipped)
            continue;
        /* Rows with one setting share one k-means: the first row of a setting settles it. */
        rt_kmeans *km = NULL;
        for (int j = 0; j < ri && !km; j++)
            if (x->rows[j].method == REGISTRY_CLUSTER && !x->rows[j].skipped &&
                strcmp(x->rows[j].km_setting, r->km_setting) == 0)
                for (int t = 0; t < x->nkm; t++)
                    if (x->km[t].id == x->rows[j].kmeans_id)
                        km = &x->km[t];
        if (!km) {
            if (x->nkm == RT_MAX_KMEANS)
                return lvd_fail("more than %d k-means settings in one run", RT_MAX_KMEANS);
            km = &x->km[x->nkm];
            memset(km, 0, sizeof *km);
            char rel[600] = "", sha[65] = "";
            int64_t size = 0, gen = 0;
            if (newest_kmeans(x->src, x->model_id, r->km_setting, &km->id, &km->clusters, rel, sizeof rel, sha, &size,
                              &gen) != 0)
                return -1;
            int auto_k = strncmp(r->km_setting, "auto:", 5) == 0;
            int64_t want = r->clusters_setting;
            if (auto_k) {
                double v = llround((double)r->clusters_setting * (double)x->pool.n / RT_PAPER_POOL);
                want = v < 1 ? 1 : (int64_t)v;
            }
            if (want > x->pool.n)
                want = auto_k ? x->pool.n : want;
            if (km->id && !(train && x->o.recluster)) {
                if (load_km(x, km, rel, sha) != 0)
                    return -1;
                km->pool_size = size;
                km->pool_gen = gen;
                if (x->pool.n != size)
                    log_info("k-means %" PRId64 " (%" PRId64 " clusters) was trained on a pool of %" PRId64
                             " images; the pool now has %" PRId64 " (%+.1f%%): new images are assigned to its "
                             "centroids (--recluster trains it again)", km->id, km->clusters, size, x->pool.n,
                             size ? 100.0 * (double)(x->pool.n - size) / (double)size : 0.0);
            } else if (!train) {
                return lvd_fail("%s: no k-means for row '%s' (%s): run lvd-retrieve --prepare (with the same options, "
                                "without --part) first, then the parts", catalog_path(x->src), r->reg->name,
                                r->km_setting);
            } else if (want > x->pool.n) {
                r->skipped = 1;
                snprintf(r->reason, sizeof r->reason, "%" PRId64 " clusters is more than the pool's %" PRId64
                         " images", want, x->pool.n);
                continue;
            } else {
                km->clusters = want;
                if (train_km(x, km, r->km_setting) != 0)
                    return -1;
            }
            x->nkm++;
        }
        r->kmeans_id = km->id;
        r->clusters = km->clusters;
    }
    return 0;
}

/* The ids assigned by k-means km in c, sorted, into *out (*n). */
static int read_assigned(catalog *c, int64_t km, int64_t **out, int64_t *n)
{
    int64_t cap = 0;
    sqlite3_stmt *st = catalog_stmt(c, "SELECT image_id FROM retrieve_assign WHERE kmeans_id = ?1 ORDER BY image_id");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, km);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 4096;
            int64_t *nv = realloc(*out, (size_t)cap * sizeof *nv);
            if (!nv) {
                sqlite3_reset(st);
                return lvd_fail("out of memory");
            }
            *out = nv;
        }
        (*out)[(*n)++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : rt_db_error(c, "reading retrieve_assign");
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int item_ptr_order(const void *a, const void *b)
{
    int64_t x = (*(rt_item *const *)a)->id, y = (*(rt_item *const *)b)->id;
    return x < y ? -1 : x > y;
}

static int has_id(const int64_t *v, int64_t n, int64_t id)
{
    return bsearch(&id, v, (size_t)n, sizeof *v, cmp_i64) != NULL;
}

/* Assigns the items it[0..n) to km's centroids and records them, one transaction per batch. */
static int assign_items(rt_ctx *x, const rt_kmeans *km, rt_item **it, int64_t n, progress *prog)
{
    int64_t bs = ASSIGN_BATCH;
    float *v = malloc((size_t)(n < bs ? (n ? n : 1) : bs) * (size_t)x->dim * sizeof *v);
    int32_t *lab = malloc((size_t)(n < bs ? (n ? n : 1) : bs) * sizeof *lab);
    if (!v || !lab) {
        free(v);
        free(lab);
        return lvd_fail("out of memory for an assignment batch");
    }
    int rc = 0;
    for (int64_t at = 0; at < n && rc == 0; at += bs) {
        int64_t nb = n - at < bs ? n - at : bs;
        for (int64_t i = 0; i < nb && rc == 0; i++)
            rc = rt_item_vec(x, it[at + i], v + (size_t)i * (size_t)x->dim);
        if (rc != 0)
            break;
        double t0 = progress_now();
        rc = kmr_assign(x->dist, v, nb, x->dim, km->centroids, (int32_t)km->clusters, 1, 0, lab, NULL);
        x->assign_s += progress_now() - t0;
        if (rc != 0 || (rc = catalog_begin(x->st.cat)) != 0)
            break;
        for (int64_t i = 0; i < nb && rc == 0; i++) {
            sqlite3_stmt *st = catalog_stmt(x->st.cat, "INSERT OR REPLACE INTO retrieve_assign(kmeans_id, image_id,"
                                                       " cluster, sim) VALUES (?1, ?2, ?3, ?4)");
            if (!st) {
                rc = -1;
                break;
            }
            sqlite3_bind_int64(st, 1, km->id);
            sqlite3_bind_int64(st, 2, it[at + i]->id);
            sqlite3_bind_int(st, 3, lab[i]);
            sqlite3_bind_double(st, 4, vf_dot(v + (size_t)i * (size_t)x->dim,
                                              km->centroids + (size_t)lab[i] * (size_t)x->dim, x->dim));
            rc = catalog_step_done(x->st.cat, st);
        }
        if (rc == 0)
            rc = catalog_commit(x->st.cat);
        if (rc != 0)
            catalog_rollback(x->st.cat);
        progress_update(prog, prog->done + (uint64_t)nb, 0);
    }
    free(v);
    free(lab);
    return rc;
}

int rt_cluster_assign(rt_ctx *x)
{
    for (int t = 0; t < x->nkm; t++) {
        const rt_kmeans *km = &x->km[t];
        int64_t *done = NULL, nd = 0;
        if (read_assigned(x->src, km->id, &done, &nd) != 0 ||
            (x->parted && read_assigned(x->st.cat, km->id, &done, &nd) != 0)) {
            free(done);
            return -1;
        }
        qsort(done, (size_t)nd, sizeof *done, cmp_i64);
        /* Pool images, then the seeds of the rows sharing this k-means, each image once. */
        int64_t cap = x->pool.n + 16, n = 0;
        for (int ri = 0; ri < x->nrows; ri++)
            if (x->rows[ri].method == REGISTRY_CLUSTER && x->rows[ri].kmeans_id == km->id && !x->rows[ri].skipped)
                cap += x->rows[ri].seeds.n;
        rt_item **todo = malloc((size_t)cap * sizeof *todo);
        if (!todo) {
            free(done);
            return lvd_fail("out of memory");
        }
        for (int64_t i = 0; i < x->pool.n; i++)
            if (rt_part_owns(x, x->pool.v[i].id) && !has_id(done, nd, x->pool.v[i].id))
                todo[n++] = &x->pool.v[i];
        int64_t npool = n;
        for (int ri = 0; ri < x->nrows; ri++) {
            rt_row *r = &x->rows[ri];
            if (r->method != REGISTRY_CLUSTER || r->kmeans_id != km->id || r->skipped)
                continue;
            for (int64_t i = 0; i < r->seeds.n; i++) {
                rt_item *s = &r->seeds.v[i];
                if (rt_part_owns(x, s->id) && !has_id(done, nd, s->id) && rt_items_find(&x->pool, s->id) < 0)
                    todo[n++] = s;
            }
            r->searched += r->seeds.n;
        }
        /* A seed of two rows is assigned once. */
        qsort(todo + npool, (size_t)(n - npool), sizeof *todo, item_ptr_order);
        int64_t w = npool;
        for (int64_t j = npool; j < n; j++)
            if (w == npool || todo[j]->id != todo[w - 1]->id)
                todo[w++] = todo[j];
        n = w;
        free(done);
        if (n > 0) {
            progress prog;
            progress_init(&prog, "assign", (uint64_t)n);
            double t0 = progress_now();
            x->assign_s = 0;
            int rc = assign_items(x, km, todo, n, &prog);
            double t_all = progress_now() - t0;
            progress_finish(&prog);
            if (rc != 0) {
                free(todo);
                return -1;
            }
            log_info("k-means %" PRId64 ": %" PRId64 " pool images and %" PRId64 " seed images assigned in %.1f s"
                     " (%.1f s of nearest-centroid search)", km->id, npool, n - npool, t_all, x->assign_s);
        }
        free(todo);
    }
    return 0;
}
