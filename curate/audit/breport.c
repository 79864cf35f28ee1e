/* breport.c — the balance part of the audit report (see breport.h). */
#include "breport.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

static int db_err(catalog *c) { return lvd_fail("%s: %s", catalog_path(c), sqlite3_errmsg(catalog_db(c))); }

int audit_balance_model(catalog *c, const char *name, int64_t *model_id, char **name_out)
{
    *model_id = 0;
    if (name_out)
        *name_out = NULL;
    int64_t has = 0;
    if (catalog_query_int(c, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'balance_samples'",
                          0, &has) != 0)
        return -1;
    if (!has)
        return name ? lvd_fail("%s: no lvd-balance results (run lvd-balance first)", catalog_path(c)) : 0;
    sqlite3_stmt *st = catalog_stmt(c, "SELECT m.id, m.name FROM models m WHERE EXISTS (SELECT 1 FROM balance_samples s"
                                       " JOIN balance_trees t ON t.id = s.tree_id WHERE t.model_id = m.id) ORDER BY m.name");
    if (!st)
        return -1;
    char names[512] = "";
    int n = 0, rc;
    int64_t found = 0;
    char found_name[256] = "";
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *nm = (const char *)sqlite3_column_text(st, 1);
        size_t len = strlen(names);
        snprintf(names + len, sizeof names - len, "%s%s", len ? ", " : "", nm);
        if (name ? strcmp(nm, name) == 0 : n == 0) {
            found = sqlite3_column_int64(st, 0);
            snprintf(found_name, sizeof found_name, "%s", nm);
        }
        n++;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return db_err(c);
    if (name && !found)
        return lvd_fail("%s: model '%s' has no lvd-balance results%s%s", catalog_path(c), name,
                        n ? " (models with results: " : "", n ? names : "");
    if (!name && n > 1)
        return lvd_fail("%s: %d models have lvd-balance results (%s); choose one with --balance-model",
                        catalog_path(c), n, names);
    if (!found)
        return 0;
    *model_id = found;
    if (name_out && !(*name_out = strdup(found_name)))
        return lvd_fail("out of memory");
    return 0;
}

/* {id, key, collection, sha256} of image id: its first pool membership (by collection name, then key). */
static cJSON *image_json(catalog *c, int64_t id)
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT i.sha256, m.key, k.name FROM images i LEFT JOIN members m ON"
                                       " m.image_id = i.id LEFT JOIN collections k ON k.id = m.collection_id"
                                       " WHERE i.id = ?1 ORDER BY (k.role = 'pool') DESC, k.name, m.key LIMIT 1");
    if (!st)
        return NULL;
    sqlite3_bind_int64(st, 1, id);
    cJSON *o = NULL;
    if (sqlite3_step(st) == SQLITE_ROW && (o = cJSON_CreateObject())) {
        cJSON_AddNumberToObject(o, "id", (double)id);
        for (int i = 0; i < 3; i++) {
            static const char *const keys[] = {"sha256", "key", "collection"};
            const char *v = (const char *)sqlite3_column_text(st, i);
            if (v)
                cJSON_AddStringToObject(o, keys[i], v);
            else
                cJSON_AddNullToObject(o, keys[i]);
        }
    }
    sqlite3_reset(st);
    if (!o)
        lvd_fail("image %" PRId64 ": not in the catalog", id);
    return o;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* {min, p10, ..., max} of v (n >= 1, sorted in place). */
static cJSON *quantiles(int64_t *v, int64_t n)
{
    static const char *const keys[] = {"min", "p10", "p25", "median", "p75", "p90", "max"};
    static const double q[] = {0, 0.1, 0.25, 0.5, 0.75, 0.9, 1};
    qsort(v, (size_t)n, sizeof *v, cmp_i64);
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; o && i < 7; i++)
        cJSON_AddNumberToObject(o, keys[i], (double)v[(int64_t)((double)(n - 1) * q[i])]);
    return o;
}

/* One level's entry. */
static cJSON *level_json(catalog *c, int64_t sample, int64_t tree, int32_t level)
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT k, objective FROM balance_levels WHERE tree_id = ?1 AND level = ?2");
    if (!st)
        return NULL;
    sqlite3_bind_int64(st, 1, tree);
    sqlite3_bind_int(st, 2, level);
    cJSON *o = cJSON_CreateObject();
    if (!o) {
        sqlite3_reset(st);
        return NULL;
    }
    cJSON_AddNumberToObject(o, "level", level);
    if (sqlite3_step(st) == SQLITE_ROW) {
        cJSON_AddNumberToObject(o, "k", (double)sqlite3_column_int64(st, 0));
        if (sqlite3_column_type(st, 1) == SQLITE_NULL)
            cJSON_AddNullToObject(o, "objective");
        else
            cJSON_AddNumberToObject(o, "objective", sqlite3_column_double(st, 1));
    }
    sqlite3_reset(st);
    st = catalog_stmt(c, "SELECT size, quota FROM balance_quotas WHERE sample_id = ?1 AND level = ?2 AND size > 0");
    if (!st) {
        cJSON_Delete(o);
        return NULL;
    }
    sqlite3_bind_int64(st, 1, sample);
    sqlite3_bind_int(st, 2, level);
    int64_t n = 0, cap = 0, *sz = NULL, *qt = NULL;
    int rc, oom = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            int64_t *a = realloc(sz, (size_t)cap * sizeof *a);
            if (a)
                sz = a;
            int64_t *b = realloc(qt, (size_t)cap * sizeof *b);
            if (b)
                qt = b;
            if (!a || !b) {
                oom = 1;
                break;
            }
        }
        sz[n] = sqlite3_column_int64(st, 0);
        qt[n++] = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    if (oom || (rc != SQLITE_DONE && rc != SQLITE_ROW)) {
        oom ? lvd_fail("out of memory") : db_err(c);
        free(sz);
        free(qt);
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddNumberToObject(o, "clusters", (double)n);
    if (n > 0) {
        cJSON_AddItemToObject(o, "before", quantiles(sz, n));
        cJSON_AddItemToObject(o, "after", quantiles(qt, n));
        cJSON_AddNumberToObject(o, "max_ratio_before", (double)sz[n - 1] / (double)sz[0]);
        if (qt[0] > 0)
            cJSON_AddNumberToObject(o, "max_ratio_after", (double)qt[n - 1] / (double)qt[0]);
        else
            cJSON_AddNullToObject(o, "max_ratio_after");
    }
    free(sz);
    free(qt);
    return o;
}

/* The largest (desc 1) or smallest top-level clusters with their sampled images. */
static cJSON *clusters_json(catalog *c, int64_t sample, int64_t tree, int32_t top, int desc)
{
    sqlite3_stmt *st = catalog_stmt(c, desc ? "SELECT cluster, size, quota FROM balance_quotas WHERE sample_id = ?1 AND"
                                              " level = ?2 AND size > 0 ORDER BY size DESC, cluster LIMIT ?3"
                                            : "SELECT cluster, size, quota FROM balance_quotas WHERE sample_id = ?1 AND"
                                              " level = ?2 AND size > 0 ORDER BY size, cluster LIMIT ?3");
    if (!st)
        return NULL;
    sqlite3_bind_int64(st, 1, sample);
    sqlite3_bind_int(st, 2, top);
    sqlite3_bind_int(st, 3, AUDIT_BALANCE_CLUSTERS);
    int64_t cl[AUDIT_BALANCE_CLUSTERS][3];
    int n = 0, rc;
    while (n < AUDIT_BALANCE_CLUSTERS && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < 3; i++)
            cl[n][i] = sqlite3_column_int64(st, i);
        n++;
    }
    sqlite3_reset(st);
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) {
        cJSON *o = cJSON_CreateObject(), *imgs = o ? cJSON_AddArrayToObject(o, "images") : NULL;
        if (!imgs) {
            cJSON_Delete(o);
            cJSON_Delete(a);
            lvd_fail("out of memory");
            return NULL;
        }
        cJSON_AddItemToArray(a, o);
        cJSON_AddNumberToObject(o, "cluster", (double)cl[i][0]);
        cJSON_AddNumberToObject(o, "size", (double)cl[i][1]);
        cJSON_AddNumberToObject(o, "quota", (double)cl[i][2]);
        st = catalog_stmt(c, "SELECT b.image_id, b.copies FROM balance_sample b JOIN balance_points p ON p.tree_id = ?2"
                             " AND p.image_id = b.image_id AND p.level = ?3 AND p.cluster = ?4 WHERE b.sample_id = ?1"
                             " ORDER BY b.copies DESC, b.image_id LIMIT ?5");
        if (!st) {
            cJSON_Delete(a);
            return NULL;
        }
        sqlite3_bind_int64(st, 1, sample);
        sqlite3_bind_int64(st, 2, tree);
        sqlite3_bind_int(st, 3, top);
        sqlite3_bind_int64(st, 4, cl[i][0]);
        sqlite3_bind_int(st, 5, AUDIT_CLUSTER_IMAGES_BALANCE);
        int64_t ids[AUDIT_CLUSTER_IMAGES_BALANCE], cp[AUDIT_CLUSTER_IMAGES_BALANCE];
        int m = 0;
        while (m < AUDIT_CLUSTER_IMAGES_BALANCE && sqlite3_step(st) == SQLITE_ROW) {
            ids[m] = sqlite3_column_int64(st, 0);
            cp[m++] = sqlite3_column_int64(st, 1);
        }
        sqlite3_reset(st);
        for (int j = 0; j < m; j++) {
            cJSON *e = cJSON_CreateObject(), *img = image_json(c, ids[j]);
            if (!e || !img) {
                cJSON_Delete(e);
                cJSON_Delete(img);
                cJSON_Delete(a);
                return NULL;
            }
            cJSON_AddItemToObject(e, "image", img);
            cJSON_AddNumberToObject(e, "copies", (double)cp[j]);
            cJSON_AddItemToArray(imgs, e);
        }
    }
    return a;
}

cJSON *audit_balance(catalog *c, int64_t model_id, const char *model)
{
    sqlite3_stmt *st = catalog_stmt(
        c, "SELECT s.id, s.tree_id, s.target, s.multiplier, s.sampling, s.total, s.distinct_images, s.points,"
           " s.created_at, t.source, t.n_levels, t.built_points, t.created_at, t.config_path"
           " FROM balance_samples s JOIN balance_trees t ON t.id = s.tree_id WHERE t.model_id = ?1"
           " ORDER BY s.id DESC LIMIT 1");
    if (!st)
        return NULL;
    sqlite3_bind_int64(st, 1, model_id);
    if (sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_reset(st);
        lvd_fail("%s: model '%s' has no balance sample", catalog_path(c), model);
        return NULL;
    }
    cJSON *o = cJSON_CreateObject(), *tr = cJSON_CreateObject(), *sm = cJSON_CreateObject();
    if (!o || !tr || !sm) {
        sqlite3_reset(st);
        cJSON_Delete(o);
        cJSON_Delete(tr);
        cJSON_Delete(sm);
        lvd_fail("out of memory");
        return NULL;
    }
    int64_t sample = sqlite3_column_int64(st, 0), tree = sqlite3_column_int64(st, 1);
    int32_t L = (int32_t)sqlite3_column_int64(st, 10);
    cJSON_AddStringToObject(o, "model", model);
    cJSON_AddNumberToObject(o, "model_id", (double)model_id);
    cJSON_AddItemToObject(o, "tree", tr);
    cJSON_AddNumberToObject(tr, "id", (double)tree);
    cJSON_AddStringToObject(tr, "source", (const char *)sqlite3_column_text(st, 9));
    cJSON_AddNumberToObject(tr, "n_levels", L);
    cJSON_AddNumberToObject(tr, "built_points", (double)sqlite3_column_int64(st, 11));
    cJSON_AddNumberToObject(tr, "points", (double)sqlite3_column_int64(st, 7));
    cJSON_AddStringToObject(tr, "created_at", (const char *)sqlite3_column_text(st, 12));
    cJSON_AddStringToObject(tr, "config_path", (const char *)sqlite3_column_text(st, 13));
    cJSON_AddItemToObject(o, "sample", sm);
    cJSON_AddNumberToObject(sm, "id", (double)sample);
    cJSON_AddNumberToObject(sm, "target", (double)sqlite3_column_int64(st, 2));
    cJSON_AddNumberToObject(sm, "multiplier", (double)sqlite3_column_int64(st, 3));
    cJSON_AddStringToObject(sm, "sampling", (const char *)sqlite3_column_text(st, 4));
    cJSON_AddNumberToObject(sm, "total", (double)sqlite3_column_int64(st, 5));
    cJSON_AddNumberToObject(sm, "distinct", (double)sqlite3_column_int64(st, 6));
    cJSON_AddNumberToObject(sm, "points", (double)sqlite3_column_int64(st, 7));
    cJSON_AddStringToObject(sm, "created_at", (const char *)sqlite3_column_text(st, 8));
    sqlite3_reset(st);
    cJSON *lv = cJSON_AddArrayToObject(o, "levels");
    for (int32_t l = 1; lv && l <= L; l++) {
        cJSON *e = level_json(c, sample, tree, l);
        if (!e) {
            cJSON_Delete(o);
            return NULL;
        }
        cJSON_AddItemToArray(lv, e);
    }
    cJSON *big = clusters_json(c, sample, tree, L, 1), *small = big ? clusters_json(c, sample, tree, L, 0) : NULL;
    if (!small) {
        cJSON_Delete(big);
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddItemToObject(o, "largest", big);
    cJSON_AddItemToObject(o, "smallest", small);
    return o;
}
