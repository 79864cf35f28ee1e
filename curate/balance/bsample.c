/* bsample.c — drawing, recording and summarising the sample of lvd-balance (see bsample.h). */
#include "bsample.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "sha256.h"

/* The sample's fingerprint: its parameters, the tree and each point's (id, leaf cluster). */
static void fingerprint(const bal_ctx *x, char out[65])
{
    sha256_ctx *h = sha256_new();
    uint8_t dg[32] = {0};
    if (h) {
        char head[256];
        int n = snprintf(head, sizeof head, "tree=%" PRId64 ",target=%" PRId64 ",multiplier=%d,sampling=%c,seed=%"
                         PRIu64 ";", x->tree_id, x->target, (int)x->cfg.multiplier, x->cfg.sampling, x->cfg.hk.seed);
        sha256_update(h, head, (size_t)n);
        for (int64_t i = 0; i < x->t.n; i++) {
            int64_t rec[2] = {x->ids[i], x->t.label[i]};
            sha256_update(h, rec, sizeof rec);
        }
        sha256_final(h, dg);
    }
    sha256_to_hex(dg, out);
}

/* Deletes the rows of every sample of (model, source) but `keep`. */
static int drop_older(bal_ctx *x, int64_t keep)
{
    static const char *const sql[] = {
        "DELETE FROM balance_sample WHERE sample_id IN (SELECT s.id FROM balance_samples s JOIN balance_trees t ON"
        " t.id = s.tree_id WHERE t.model_id = ?1 AND t.source = ?2 AND s.id <> ?3)",
        "DELETE FROM balance_quotas WHERE sample_id IN (SELECT s.id FROM balance_samples s JOIN balance_trees t ON"
        " t.id = s.tree_id WHERE t.model_id = ?1 AND t.source = ?2 AND s.id <> ?3)"};
    for (int q = 0; q < 2; q++) {
        sqlite3_stmt *st = catalog_stmt(x->st.cat, sql[q]);
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, x->model_id);
        sqlite3_bind_text(st, 2, x->source, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, keep);
        if (catalog_step_done(x->st.cat, st) != 0)
            return -1;
    }
    return 0;
}

static int record(bal_ctx *x, const char *fp)
{
    catalog *c = x->st.cat;
    const bal_sample *s = &x->s;
    const hkm_tree *t = &x->t;
    int64_t distinct = 0;
    for (int64_t i = 0; i < s->n; i++)
        distinct += s->copies[i] > 0;
    char now[32];
    catalog_now(now);
    if (catalog_begin(c) != 0)
        return -1;
    sqlite3_stmt *st = catalog_stmt(c, "INSERT INTO balance_samples(tree_id, target, multiplier, sampling, seed,"
                                       " points, total, distinct_images, fingerprint, created_at, run_id)"
                                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
    if (!st)
        goto fail;
    char samp[2] = {x->cfg.sampling, 0};
    sqlite3_bind_int64(st, 1, x->tree_id);
    sqlite3_bind_int64(st, 2, x->target);
    sqlite3_bind_int(st, 3, x->cfg.multiplier);
    sqlite3_bind_text(st, 4, samp, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 5, (int64_t)x->cfg.hk.seed);
    sqlite3_bind_int64(st, 6, t->n);
    sqlite3_bind_int64(st, 7, s->total);
    sqlite3_bind_int64(st, 8, distinct);
    sqlite3_bind_text(st, 9, fp, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 10, now, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 11, x->st.run_id);
    if (catalog_step_done(c, st) != 0)
        goto fail;
    int64_t id = sqlite3_last_insert_rowid(catalog_db(c));
    if (drop_older(x, id) != 0)
        goto fail;
    for (int64_t i = 0; i < s->n; i++) {
        if (s->copies[i] == 0)
            continue;
        st = catalog_stmt(c, "INSERT INTO balance_sample(sample_id, image_id, copies, cluster) VALUES (?1, ?2, ?3, ?4)");
        if (!st)
            goto fail;
        sqlite3_bind_int64(st, 1, id);
        sqlite3_bind_int64(st, 2, x->ids[i]);
        sqlite3_bind_int(st, 3, s->copies[i]);
        sqlite3_bind_int(st, 4, t->label[i]);
        if (catalog_step_done(c, st) != 0)
            goto fail;
    }
    for (int32_t l = 0; l < t->n_levels; l++)
        for (int32_t k = 0; k < t->level[l].k; k++) {
            st = catalog_stmt(c, "INSERT INTO balance_quotas(sample_id, level, cluster, size, quota)"
                                 " VALUES (?1, ?2, ?3, ?4, ?5)");
            if (!st)
                goto fail;
            sqlite3_bind_int64(st, 1, id);
            sqlite3_bind_int(st, 2, l + 1);
            sqlite3_bind_int(st, 3, k);
            sqlite3_bind_int64(st, 4, t->level[l].size[k]);
            sqlite3_bind_int64(st, 5, s->quota[l][k]);
            if (catalog_step_done(c, st) != 0)
                goto fail;
        }
    if (catalog_commit(c) != 0)
        goto fail;
    x->sample_id = id;
    x->total = s->total;
    x->distinct = distinct;
    return 0;
fail:
    catalog_rollback(c);
    return lvd_fail_ctx("recording the sample of model '%s'", x->o.model);
}

int bal_sample_settle(bal_ctx *x)
{
    char fp[65];
    fingerprint(x, fp);
    catalog *c = x->st.cat;
    sqlite3_stmt *st = catalog_stmt(c, "SELECT id, fingerprint, total, distinct_images FROM balance_samples WHERE"
                                       " tree_id = ?1 ORDER BY id DESC LIMIT 1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->tree_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(st, 1), fp) == 0) {
        x->sample_id = sqlite3_column_int64(st, 0);
        x->total = sqlite3_column_int64(st, 2);
        x->distinct = sqlite3_column_int64(st, 3);
        sqlite3_reset(st);
        x->sampled_now = 0;
        return 0;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return bal_db_error(c, "reading balance_samples");
    bal_sample_free(&x->s);
    if (bal_sample_run(&x->t, x->target, x->cfg.multiplier, x->cfg.sampling, x->cfg.hk.seed, &x->s) != 0)
        return lvd_fail_ctx("sampling tree %" PRId64, x->tree_id);
    if (x->target > x->s.total)
        log_warn("target %" PRId64 " exceeds the %" PRId64 " points x multiplier %d of the tree: the sample takes "
                 "every point %d times", x->target, x->t.n, (int)x->cfg.multiplier, (int)x->cfg.multiplier);
    if (record(x, fp) != 0)
        return -1;
    x->sampled_now = 1;
    log_info("sample: %" PRId64 " (%" PRId64 " distinct images) of %" PRId64 " points", x->total, x->distinct, x->t.n);
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Level l's sizes: min, median (lower middle), max and empty clusters. */
static cJSON *level_json(const bal_ctx *x, int32_t l)
{
    const hkm_level *lv = &x->t.level[l];
    int64_t *v = malloc((size_t)lv->k * sizeof *v), empty = 0;
    cJSON *o = cJSON_CreateObject();
    if (!v || !o) {
        free(v);
        cJSON_Delete(o);
        return NULL;
    }
    for (int32_t k = 0; k < lv->k; k++) {
        v[k] = lv->size[k];
        empty += v[k] == 0;
    }
    qsort(v, (size_t)lv->k, sizeof *v, cmp_i64);
    cJSON_AddNumberToObject(o, "level", l + 1);
    cJSON_AddNumberToObject(o, "k", lv->k);
    cJSON_AddNumberToObject(o, "size_min", (double)v[0]);
    cJSON_AddNumberToObject(o, "size_median", (double)v[(lv->k - 1) / 2]);
    cJSON_AddNumberToObject(o, "size_max", (double)v[lv->k - 1]);
    cJSON_AddNumberToObject(o, "empty", (double)empty);
    if (isfinite(x->objective[l]))
        cJSON_AddNumberToObject(o, "objective", x->objective[l]);
    else
        cJSON_AddNullToObject(o, "objective");
    free(v);
    return o;
}

cJSON *bal_summary(bal_ctx *x)
{
    cJSON *o = cJSON_CreateObject(), *tree = cJSON_CreateObject(), *lv = cJSON_CreateArray(),
          *smp = cJSON_CreateObject();
    if (!o || !tree || !lv || !smp) {
        cJSON_Delete(o);
        cJSON_Delete(tree);
        cJSON_Delete(lv);
        cJSON_Delete(smp);
        return NULL;
    }
    cJSON_AddStringToObject(o, "stage", "balance");
    cJSON_AddStringToObject(o, "model", x->o.model);
    cJSON_AddStringToObject(o, "from", x->source);
    cJSON_AddNumberToObject(o, "pool", (double)x->npool);
    cJSON_AddItemToObject(o, "tree", tree);
    cJSON_AddNumberToObject(tree, "id", (double)x->tree_id);
    cJSON_AddBoolToObject(tree, "built_now", x->built_now);
    cJSON_AddNumberToObject(tree, "built_points", (double)x->built_points);
    cJSON_AddNumberToObject(tree, "points", (double)x->t.n);
    cJSON_AddNumberToObject(tree, "added_now", (double)x->added_now);
    cJSON_AddNumberToObject(tree, "removed_now", (double)x->removed_now);
    cJSON_AddNumberToObject(tree, "added_since_built", (double)x->added_total);
    /* How far the pool has grown since the build: what a --rebuild would cluster anew. */
    cJSON_AddNumberToObject(tree, "growth", x->built_points ? (double)x->t.n / (double)x->built_points - 1.0 : 0.0);
    cJSON_AddItemToObject(o, "levels", lv);
    for (int32_t l = 0; l < x->t.n_levels; l++) {
        cJSON *e = level_json(x, l);
        if (e)
            cJSON_AddItemToArray(lv, e);
    }
    cJSON_AddItemToObject(o, "sample", smp);
    cJSON_AddNumberToObject(smp, "id", (double)x->sample_id);
    cJSON_AddBoolToObject(smp, "sampled_now", x->sampled_now);
    cJSON_AddNumberToObject(smp, "target", (double)x->target);
    cJSON_AddNumberToObject(smp, "multiplier", x->cfg.multiplier);
    cJSON_AddNumberToObject(smp, "size", (double)x->total);
    cJSON_AddNumberToObject(smp, "distinct", (double)x->distinct);
    /* Leaf quotas over the leaves that have points (an empty leaf's quota is 0 by construction). */
    sqlite3_stmt *st = catalog_stmt(x->st.cat, "SELECT max(quota), min(quota) FROM balance_quotas WHERE sample_id = ?1"
                                               " AND level = 1 AND size > 0");
    if (st) {
        sqlite3_bind_int64(st, 1, x->sample_id);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
            cJSON_AddNumberToObject(smp, "leaf_quota_max", (double)sqlite3_column_int64(st, 0));
            cJSON_AddNumberToObject(smp, "leaf_quota_min", (double)sqlite3_column_int64(st, 1));
        }
        sqlite3_reset(st);
    }
    return o;
}
