/* btree.c — building, updating and loading the tree of lvd-balance (see btree.h). */
#include "btree.h"

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

/* Float64 squared distance of a and b (d floats), as hkmeans.c measures a point's distance. */
static double sqdist(const float *a, const float *b, int32_t d)
{
    double s = 0;
    for (int32_t j = 0; j < d; j++) {
        double t = (double)a[j] - (double)b[j];
        s += t * t;
    }
    return s;
}

void bal_tree_params(bal_ctx *x)
{
    const hkm_opts *h = &x->cfg.hk;
    char lv[1536] = "";
    for (int32_t l = 0; l < h->n_levels; l++) {
        size_t n = strlen(lv);
        const hkm_level_opts *o = &h->level[l];
        snprintf(lv + n, sizeof lv - n,
                 "%s{\"n_clusters\":%d,\"n_splits\":%d,\"n_resampling_steps\":%d,\"sample_size\":%d,"
                 "\"sampling_strategy\":\"%c\"}",
                 l ? "," : "", (int)o->k, (int)o->n_splits, (int)o->n_resampling_steps, (int)o->sample_size,
                 o->strategy);
    }
    snprintf(x->tree_params, sizeof x->tree_params,
             "{\"model_id\":%" PRId64 ",\"source\":\"%s\",\"dedup_model_id\":%" PRId64 ",\"n_levels\":%d,"
             "\"n_iters\":%d,\"seed\":%" PRIu64 ",\"levels\":[%s]}",
             x->model_id, x->source, x->dedup_model_id, (int)h->n_levels, (int)h->n_iters, h->seed, lv);
    stage_fingerprint(x->tree_params, x->tree_fp);
}

/* The current tree of (model, source): *id (0: none), its fingerprint and dedup model. */
static int current_tree(bal_ctx *x, int64_t *id, char fp[65])
{
    *id = 0;
    sqlite3_stmt *st = catalog_stmt(x->st.cat, "SELECT id, fingerprint FROM balance_trees WHERE model_id = ?1 AND"
                                               " source = ?2 ORDER BY id DESC LIMIT 1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    sqlite3_bind_text(st, 2, x->source, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        snprintf(fp, 65, "%s", (const char *)sqlite3_column_text(st, 1));
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : bal_db_error(x->st.cat, "reading balance_trees");
}

/* The whole text of the config file into a malloc'ed string. */
static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        lvd_fail_errno("cannot read %s", path);
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *s = malloc(cap);
    while (s) {
        size_t r = fread(s + n, 1, cap - n - 1, f);
        n += r;
        if (n + 1 < cap)
            break;
        char *t = realloc(s, cap * 2);
        if (!t) {
            free(s);
            s = NULL;
            break;
        }
        s = t;
        cap *= 2;
    }
    if (s)
        s[n] = 0;
    else
        lvd_fail("out of memory reading %s", path);
    fclose(f);
    return s;
}

/* Inserts one balance_points row. */
static int put_point(catalog *c, int64_t tree, int64_t image, int32_t level, int32_t cluster, float dist,
                     int64_t added)
{
    sqlite3_stmt *st = catalog_stmt(c, "INSERT INTO balance_points(tree_id, image_id, level, cluster, dist, added)"
                                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, tree);
    sqlite3_bind_int64(st, 2, image);
    sqlite3_bind_int(st, 3, level);
    sqlite3_bind_int(st, 4, cluster);
    sqlite3_bind_double(st, 5, (double)dist);
    sqlite3_bind_int64(st, 6, added);
    return catalog_step_done(c, st);
}

/* Builds a tree of the whole pool and records it (files, then one transaction). */
static int build(bal_ctx *x)
{
    const int64_t n = x->npool;
    const int32_t d = x->dim, L = x->cfg.hk.n_levels;
    float *xs = malloc((size_t)n * (size_t)d * sizeof *xs);
    if (!xs)
        return lvd_fail("out of memory for the %" PRId64 " x %d embeddings of the pool", n, (int)d);
    for (int64_t i = 0; i < n; i++)
        if (bal_item_vec(x, &x->pool[i], xs + (size_t)i * (size_t)d) != 0) {
            free(xs);
            return -1;
        }
    hkm_tree t;
    double t0 = progress_now();
    log_info("building a %d-level tree of %" PRId64 " pool images (model '%s', from %s)", (int)L, n, x->o.model,
             x->source);
    int rc = hkm_build(xs, n, d, &x->cfg.hk, &t);
    free(xs);
    if (rc != 0) {
        hkm_free(&t);
        return lvd_fail_ctx("balancing model '%s'", x->o.model);
    }
    double secs = progress_now() - t0;
    for (int32_t l = 0; l < L; l++)
        log_info("level %d: %d clusters, objective %.6g, %d k-means runs: k-means++ %.2f s, %" PRId64
                 " Lloyd iterations %.2f s (first run, on all items: %.4f s per iteration), assignments %.2f s",
                 (int)l + 1, (int)t.level[l].k, t.level[l].objective, (int)t.level[l].runs, t.level[l].init_s,
                 t.level[l].lloyd_iters, t.level[l].lloyd_s, t.level[l].first_iter_s, t.level[l].assign_s);
    log_info("tree built in %.1f s", secs);
    char *cfg_text = read_text(x->o.config_path);
    if (!cfg_text) {
        hkm_free(&t);
        return -1;
    }
    catalog *c = x->st.cat;
    char now[32], dir[STAGE_PATH_MAX + 300];
    catalog_now(now);
    if (catalog_begin(c) != 0) {
        free(cfg_text);
        hkm_free(&t);
        return -1;
    }
    sqlite3_stmt *st = catalog_stmt(c, "INSERT INTO balance_trees(model_id, source, dedup_model_id, n_levels, params,"
                                       " fingerprint, config_path, config, built_points, seconds, created_at, run_id)"
                                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)");
    if (!st)
        goto fail;
    sqlite3_bind_int64(st, 1, x->model_id);
    sqlite3_bind_text(st, 2, x->source, -1, SQLITE_STATIC);
    if (x->dedup_model_id)
        sqlite3_bind_int64(st, 3, x->dedup_model_id);
    sqlite3_bind_int(st, 4, L);
    sqlite3_bind_text(st, 5, x->tree_params, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, x->tree_fp, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, x->o.config_path, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, cfg_text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 9, n);
    sqlite3_bind_double(st, 10, secs);
    sqlite3_bind_text(st, 11, now, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 12, x->st.run_id);
    if (catalog_step_done(c, st) != 0)
        goto fail;
    int64_t id = sqlite3_last_insert_rowid(catalog_db(c));
    /* The points and clusters of the trees this one replaces are never read again. */
    st = catalog_stmt(c, "DELETE FROM balance_points WHERE tree_id IN (SELECT id FROM balance_trees WHERE"
                         " model_id = ?1 AND source = ?2 AND id < ?3)");
    if (!st)
        goto fail;
    sqlite3_bind_int64(st, 1, x->model_id);
    sqlite3_bind_text(st, 2, x->source, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, id);
    if (catalog_step_done(c, st) != 0)
        goto fail;
    snprintf(dir, sizeof dir, "%s/balance/%s", x->work, x->o.model);
    if (atomic_file_mkdirs(dir) != 0)
        goto fail;
    for (int32_t l = 0; l < L; l++) {
        const hkm_level *lv = &t.level[l];
        char rel[600], path[STAGE_PATH_MAX + 700], sha[65];
        snprintf(rel, sizeof rel, "balance/%s/tree-%" PRId64 "-level-%d.npy", x->o.model, id, (int)l + 1);
        snprintf(path, sizeof path, "%s/%s", x->work, rel);
        if (kmeans_save(path, lv->centroids, lv->k, d) != 0 || sha256_file(path, sha) != 0)
            goto fail;
        st = catalog_stmt(c, "INSERT INTO balance_levels(tree_id, level, k, path, sha256, objective, runs)"
                             " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
        if (!st)
            goto fail;
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int(st, 2, l + 1);
        sqlite3_bind_int(st, 3, lv->k);
        sqlite3_bind_text(st, 4, rel, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 5, sha, -1, SQLITE_TRANSIENT);
        if (isfinite(lv->objective))
            sqlite3_bind_double(st, 6, lv->objective);
        sqlite3_bind_int(st, 7, lv->runs);
        if (catalog_step_done(c, st) != 0)
            goto fail;
        for (int32_t k = 0; k < lv->k; k++) {
            st = catalog_stmt(c, "INSERT INTO balance_clusters(tree_id, level, cluster, parent, built_size)"
                                 " VALUES (?1, ?2, ?3, ?4, ?5)");
            if (!st)
                goto fail;
            sqlite3_bind_int64(st, 1, id);
            sqlite3_bind_int(st, 2, l + 1);
            sqlite3_bind_int(st, 3, k);
            if (l + 1 < L)
                sqlite3_bind_int(st, 4, t.level[l + 1].parent[k]);
            sqlite3_bind_int64(st, 5, lv->size[k]);
            if (catalog_step_done(c, st) != 0)
                goto fail;
        }
    }
    for (int64_t i = 0; i < n; i++)
        for (int32_t l = 0; l < L; l++)
            if (put_point(c, id, x->pool[i].id, l + 1, t.label[(size_t)l * n + i], t.dist[(size_t)l * n + i], 0) != 0)
                goto fail;
    if (catalog_commit(c) != 0)
        goto fail;
    free(cfg_text);
    hkm_free(&t);
    x->tree_id = id;
    x->built_now = 1;
    return 0;
fail:
    catalog_rollback(c);
    free(cfg_text);
    hkm_free(&t);
    return lvd_fail_ctx("recording the tree of model '%s'", x->o.model);
}

/* The centroids of level `level` of tree `id`, checked against their recorded SHA-256 and shape. */
static int load_centroids(bal_ctx *x, int64_t id, int32_t level, float **cent, int32_t *k)
{
    sqlite3_stmt *st = catalog_stmt(x->st.cat, "SELECT path, sha256, k FROM balance_levels WHERE tree_id = ?1 AND"
                                               " level = ?2");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int(st, 2, level);
    char rel[600] = "", sha[65] = "", path[STAGE_PATH_MAX + 700], got[65];
    int64_t want = 0;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        snprintf(rel, sizeof rel, "%s", (const char *)sqlite3_column_text(st, 0));
        snprintf(sha, sizeof sha, "%s", (const char *)sqlite3_column_text(st, 1));
        want = sqlite3_column_int64(st, 2);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? lvd_fail("%s: tree %" PRId64 " has no level %d", catalog_path(x->st.cat), id,
                                            (int)level)
                                 : bal_db_error(x->st.cat, "reading balance_levels");
    snprintf(path, sizeof path, "%s/%s", x->work, rel);
    if (sha256_file(path, got) != 0)
        return lvd_fail_ctx("tree %" PRId64 " of model '%s' (run with --rebuild to build it again)", id, x->o.model);
    if (strcmp(got, sha) != 0)
        return lvd_fail("%s: the centroids of tree %" PRId64 " changed since they were recorded (SHA-256 %s, "
                        "recorded %s); run with --rebuild to build the tree again", path, id, got, sha);
    int32_t d = 0;
    if (kmeans_load(path, x->dim, cent, k, &d) != 0)
        return -1;
    if (*k != want) {
        free(*cent);
        *cent = NULL;
        return lvd_fail("%s: %d centroids, recorded %" PRId64, path, (int)*k, want);
    }
    return 0;
}

/* The parents of level `level`'s clusters (k of them) into par (level < n_levels). */
static int load_parents(bal_ctx *x, int64_t id, int32_t level, int32_t k, int32_t *par)
{
    sqlite3_stmt *st = catalog_stmt(x->st.cat, "SELECT cluster, parent FROM balance_clusters WHERE tree_id = ?1 AND"
                                               " level = ?2");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int(st, 2, level);
    for (int32_t c = 0; c < k; c++)
        par[c] = -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t c = sqlite3_column_int64(st, 0);
        if (c >= 0 && c < k && sqlite3_column_type(st, 1) != SQLITE_NULL)
            par[c] = (int32_t)sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return bal_db_error(x->st.cat, "reading balance_clusters");
    for (int32_t c = 0; c < k; c++)
        if (par[c] < 0)
            return lvd_fail("%s: tree %" PRId64 ": cluster %d of level %d has no parent", catalog_path(x->st.cat), id,
                            (int)c, (int)level);
    return 0;
}

/* The image ids of tree `id`'s points (ascending) into *out. */
static int tree_ids(bal_ctx *x, int64_t id, int64_t **out, int64_t *n)
{
    int64_t cap = 0;
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st = catalog_stmt(x->st.cat, "SELECT image_id FROM balance_points WHERE tree_id = ?1 AND level = 1"
                                               " ORDER BY image_id");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 4096;
            int64_t *v = realloc(*out, (size_t)cap * sizeof *v);
            if (!v) {
                sqlite3_reset(st);
                return lvd_fail("out of memory for the tree's points");
            }
            *out = v;
        }
        (*out)[(*n)++] = sqlite3_column_int64(st, 0);
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : bal_db_error(x->st.cat, "reading balance_points");
}

/* Assigns the pool images not in the tree down it and deletes the tree's points that left the pool. */
static int update(bal_ctx *x, int64_t id)
{
    int64_t *have = NULL, nhave = 0;
    if (tree_ids(x, id, &have, &nhave) != 0)
        return -1;
    /* Both lists are sorted by id: one merge finds what entered and what left. */
    bal_item *in = malloc((size_t)(x->npool ? x->npool : 1) * sizeof *in);
    int64_t *out = malloc((size_t)(nhave ? nhave : 1) * sizeof *out), nin = 0, nout = 0;
    if (!in || !out) {
        free(have);
        free(in);
        free(out);
        return lvd_fail("out of memory");
    }
    for (int64_t i = 0, j = 0; i < x->npool || j < nhave;) {
        if (j == nhave || (i < x->npool && x->pool[i].id < have[j]))
            in[nin++] = x->pool[i++];
        else if (i == x->npool || have[j] < x->pool[i].id)
            out[nout++] = have[j++];
        else
            i++, j++;
    }
    free(have);
    int rc = -1;
    const int32_t L = x->cfg.hk.n_levels, d = x->dim;
    float *cent[HKM_MAX_LEVELS] = {0}, *xs = NULL;
    int32_t k[HKM_MAX_LEVELS] = {0}, *par[HKM_MAX_LEVELS] = {0}, *lab = NULL;
    catalog *c = x->st.cat;
    if (nin == 0 && nout == 0) {
        rc = 0;
        goto done;
    }
    if (nin > 0) {
        for (int32_t l = 0; l < L; l++) {
            if (load_centroids(x, id, l + 1, &cent[l], &k[l]) != 0)
                goto done;
            if (l + 1 < L) {
                par[l] = malloc((size_t)k[l] * sizeof *par[l]);
                if (!par[l]) {
                    lvd_fail("out of memory");
                    goto done;
                }
            }
        }
        for (int32_t l = 0; l + 1 < L; l++)
            if (load_parents(x, id, l + 1, k[l], par[l]) != 0)
                goto done;
        xs = malloc((size_t)nin * (size_t)d * sizeof *xs);
        lab = malloc((size_t)nin * sizeof *lab);
        if (!xs || !lab) {
            lvd_fail("out of memory for %" PRId64 " new pool images", nin);
            goto done;
        }
        for (int64_t i = 0; i < nin; i++)
            if (bal_item_vec(x, &in[i], xs + (size_t)i * (size_t)d) != 0)
                goto done;
        if (kmr_assign(x->cfg.hk.dist, xs, nin, d, cent[0], k[0], 0, x->cfg.hk.threads, lab, NULL) != 0)
            goto done;
    }
    if (catalog_begin(c) != 0)
        goto done;
    for (int64_t i = 0; i < nout; i++) {
        sqlite3_stmt *st = catalog_stmt(c, "DELETE FROM balance_points WHERE tree_id = ?1 AND image_id = ?2");
        if (!st)
            goto fail;
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, out[i]);
        if (catalog_step_done(c, st) != 0)
            goto fail;
    }
    for (int64_t i = 0; i < nin; i++) {
        const float *v = xs + (size_t)i * (size_t)d;
        int32_t cl = lab[i];
        for (int32_t l = 0; l < L; l++) {
            if (l > 0)
                cl = par[l - 1][cl];
            if (put_point(c, id, in[i].id, l + 1, cl, (float)sqdist(v, cent[l] + (size_t)cl * (size_t)d, d),
                          x->st.run_id) != 0)
                goto fail;
        }
    }
    if (catalog_commit(c) != 0)
        goto fail;
    x->added_now = nin;
    x->removed_now = nout;
    if (nin)
        log_info("%" PRId64 " new pool image%s assigned down tree %" PRId64, nin, nin == 1 ? "" : "s", id);
    if (nout)
        log_info("%" PRId64 " image%s that left the pool removed from tree %" PRId64, nout, nout == 1 ? "" : "s", id);
    rc = 0;
    goto done;
fail:
    catalog_rollback(c);
done:
    for (int32_t l = 0; l < HKM_MAX_LEVELS; l++) {
        free(cent[l]);
        free(par[l]);
    }
    free(xs);
    free(lab);
    free(in);
    free(out);
    return rc;
}

int bal_tree_settle(bal_ctx *x)
{
    int64_t id = 0;
    char fp[65] = "";
    bal_tree_params(x);
    if (current_tree(x, &id, fp) != 0)
        return -1;
    if (id && !x->o.rebuild) {
        if (strcmp(fp, x->tree_fp) != 0)
            return lvd_fail("%s: tree %" PRId64 " of model '%s' (from %s) was built with other parameters than %s "
                            "gives (levels, n_iters, seed or the dedup model): pass --rebuild to build a new tree",
                            catalog_path(x->st.cat), id, x->o.model, x->source, x->o.config_path);
        x->tree_id = id;
        return update(x, id);
    }
    return build(x);
}

int bal_tree_load(bal_ctx *x)
{
    catalog *c = x->st.cat;
    const int64_t id = x->tree_id;
    hkm_free(&x->t);
    free(x->ids);
    x->ids = NULL;
    int64_t n = 0;
    if (tree_ids(x, id, &x->ids, &n) != 0)
        return -1;
    if (n == 0)
        return lvd_fail("%s: tree %" PRId64 " has no points", catalog_path(c), id);
    hkm_tree *t = &x->t;
    sqlite3_stmt *st = catalog_stmt(c, "SELECT n_levels, built_points FROM balance_trees WHERE id = ?1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    int32_t L = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        L = (int32_t)sqlite3_column_int64(st, 0);
        x->built_points = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    if (L < 1 || L > HKM_MAX_LEVELS)
        return lvd_fail("%s: tree %" PRId64 " has %d levels", catalog_path(c), id, (int)L);
    t->n = n;
    t->d = x->dim;
    t->n_levels = L;
    t->label = malloc((size_t)L * (size_t)n * sizeof *t->label);
    t->dist = malloc((size_t)L * (size_t)n * sizeof *t->dist);
    if (!t->label || !t->dist)
        return lvd_fail("out of memory for the labels of %" PRId64 " points", n);
    st = catalog_stmt(c, "SELECT level, k, objective FROM balance_levels WHERE tree_id = ?1 ORDER BY level");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t l = sqlite3_column_int64(st, 0);
        if (l >= 1 && l <= L) {
            t->level[l - 1].k = (int32_t)sqlite3_column_int64(st, 1);
            x->objective[l - 1] = sqlite3_column_type(st, 2) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 2);
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return bal_db_error(c, "reading balance_levels");
    for (int32_t l = 0; l < L; l++) {
        hkm_level *lv = &t->level[l];
        if (lv->k < 1)
            return lvd_fail("%s: tree %" PRId64 " has no level %d", catalog_path(c), id, (int)l + 1);
        lv->size = calloc((size_t)lv->k, sizeof *lv->size);
        if (!lv->size)
            return lvd_fail("out of memory");
        if (l > 0) {
            lv->parent = malloc((size_t)t->level[l - 1].k * sizeof *lv->parent);
            if (!lv->parent || load_parents(x, id, l, t->level[l - 1].k, lv->parent) != 0)
                return lv->parent ? -1 : lvd_fail("out of memory");
        }
    }
    /* Points in id order, levels in order: row i of the result is the i-th id of x->ids. */
    st = catalog_stmt(c, "SELECT image_id, level, cluster, dist FROM balance_points WHERE tree_id = ?1"
                         " ORDER BY image_id, level");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    int64_t i = -1, prev = INT64_MIN, rows = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t img = sqlite3_column_int64(st, 0), l = sqlite3_column_int64(st, 1), cl = sqlite3_column_int64(st, 2);
        if (img != prev) {
            i++;
            prev = img;
        }
        if (i >= n || x->ids[i] != img || l < 1 || l > L || cl < 0 || cl >= t->level[l - 1].k) {
            sqlite3_reset(st);
            return lvd_fail("%s: tree %" PRId64 ": inconsistent point row (image %" PRId64 ", level %" PRId64
                            ", cluster %" PRId64 ")", catalog_path(c), id, img, l, cl);
        }
        t->label[(size_t)(l - 1) * (size_t)n + (size_t)i] = (int32_t)cl;
        t->dist[(size_t)(l - 1) * (size_t)n + (size_t)i] = (float)sqlite3_column_double(st, 3);
        t->level[l - 1].size[cl]++;
        rows++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return bal_db_error(c, "reading balance_points");
    if (rows != n * L)
        return lvd_fail("%s: tree %" PRId64 ": %" PRId64 " point rows for %" PRId64 " points of %d levels",
                        catalog_path(c), id, rows, n, (int)L);
    st = catalog_stmt(c, "SELECT count(*) FROM balance_points WHERE tree_id = ?1 AND level = 1 AND added <> 0");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    x->added_total = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return 0;
}
