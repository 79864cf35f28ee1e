/* pool.c — models, pool, rows and seeds of an lvd-retrieve run, and their record in the catalog (see pool.h). */
#include "pool.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "sha256.h"

int rt_pool_load_models(rt_ctx *x)
{
    catalog *c = x->src;
    if (catalog_model(c, x->o.model, &x->model_id, x->model_sha, &x->dim) != 0)
        return -1;
    if (!x->model_id)
        return lvd_fail("%s: no model named '%s' (embed the pool and the seed collections first: lvd-embed --name "
                        "%s)", catalog_path(c), x->o.model, x->o.model);
    if (x->dim <= 0)
        return lvd_fail("%s: model '%s' has dim %d", catalog_path(c), x->o.model, (int)x->dim);
    x->dedup_model_id = 0;
    if (x->o.no_dedup)
        return 0;
    if (x->o.dedup_model) {
        if (catalog_model(c, x->o.dedup_model, &x->dedup_model_id, NULL, NULL) != 0)
            return -1;
        if (!x->dedup_model_id)
            return lvd_fail("%s: no model named '%s' (--dedup-model)", catalog_path(c), x->o.dedup_model);
        int n;
        int64_t first;
        if (catalog_dedup_models(c, x->dedup_model_id, &n, &first, NULL, 0) != 0)
            return -1;
        if (n == 0)
            return lvd_fail("%s: model '%s' has no dedup results (run lvd-dedup --model %s first, or pass "
                            "--no-dedup to retrieve from the whole pool)", catalog_path(c), x->o.dedup_model,
                            x->o.dedup_model);
        return 0;
    }
    char names[512];
    int n;
    if (catalog_dedup_models(c, 0, &n, &x->dedup_model_id, names, sizeof names) != 0)
        return -1;
    if (n == 0)
        return lvd_fail("%s: no model has dedup results: run lvd-dedup first, or pass --no-dedup to retrieve from "
                        "the whole pool", catalog_path(c));
    if (n > 1)
        return lvd_fail("%s: several models have dedup results (%s): say which defines the pool with "
                        "--dedup-model", catalog_path(c), names);
    return 0;
}

int rt_pool_load(rt_ctx *x)
{
    catalog *c = x->src;
    x->pool.n = 0;
    /* Pool members, kept by the dedup model (unless --no-dedup), with an embedding of the retrieval model. */
    sqlite3_stmt *st = catalog_stmt(
        c, "SELECT e.image_id, e.file, e.row FROM embeddings e WHERE e.model_id = ?1"
           " AND EXISTS (SELECT 1 FROM members m JOIN collections c ON c.id = m.collection_id"
           "             WHERE m.image_id = e.image_id AND c.role = 'pool')"
           " AND (?2 = 0 OR EXISTS (SELECT 1 FROM dedup_decisions d WHERE d.model_id = ?2"
           "                        AND d.image_id = e.image_id AND d.decision = 'kept'))"
           " ORDER BY e.image_id");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    sqlite3_bind_int64(st, 2, x->dedup_model_id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        rt_item it = {.id = sqlite3_column_int64(st, 0), .row = sqlite3_column_int64(st, 2)};
        if (vf_index(&x->vf, x->work, (const char *)sqlite3_column_text(st, 1), &it.file) != 0 ||
            rt_items_push(&x->pool, &it) != 0) {
            sqlite3_reset(st);
            return -1;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return rt_db_error(c, "reading pool embeddings");
    if (x->dedup_model_id) {
        int64_t kept = 0;
        st = catalog_stmt(c, "SELECT count(*) FROM dedup_decisions d WHERE d.model_id = ?1 AND d.decision = 'kept'");
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, x->dedup_model_id);
        if (sqlite3_step(st) == SQLITE_ROW)
            kept = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        if (kept > x->pool.n)
            log_warn("%" PRId64 " of the %" PRId64 " pool images kept by dedup have no embedding of model '%s' and "
                     "are not retrieved from (embed them with lvd-embed --name %s)", kept - x->pool.n, kept,
                     x->o.model, x->o.model);
    }
    return 0;
}

/* The seed images of collection cid with an embedding of the model, into r->seeds (by id); the count of
 * members whose decode failed into *undecodable; members that could be embedded but are not are an error. */
static int load_seeds(rt_ctx *x, rt_row *r, int64_t cid, int64_t *undecodable)
{
    catalog *c = x->src;
    sqlite3_stmt *st = catalog_stmt(c, "SELECT DISTINCT e.image_id, e.file, e.row FROM members m JOIN embeddings e"
                                       " ON e.image_id = m.image_id AND e.model_id = ?2 WHERE m.collection_id = ?1"
                                       " ORDER BY e.image_id");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, cid);
    sqlite3_bind_int64(st, 2, x->model_id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        rt_item it = {.id = sqlite3_column_int64(st, 0), .row = sqlite3_column_int64(st, 2)};
        if (vf_index(&x->vf, x->work, (const char *)sqlite3_column_text(st, 1), &it.file) != 0 ||
            rt_items_push(&r->seeds, &it) != 0) {
            sqlite3_reset(st);
            return -1;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return rt_db_error(c, "reading seed embeddings");
    /* Members without an embedding: failed decodes cannot have one; the others are work left to do. */
    st = catalog_stmt(c, "SELECT count(DISTINCT m.image_id),"
                         " count(DISTINCT CASE WHEN d.status IS NOT NULL AND d.status <> 'ok' THEN m.image_id END)"
                         " FROM members m LEFT JOIN decodes d ON d.image_id = m.image_id WHERE m.collection_id = ?1"
                         " AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.image_id = m.image_id AND"
                         " e.model_id = ?2)");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, cid);
    sqlite3_bind_int64(st, 2, x->model_id);
    int64_t missing = 0, bad = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        missing = sqlite3_column_int64(st, 0);
        bad = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    *undecodable = bad;
    if (missing > bad)
        return lvd_fail("%s: row '%s': %" PRId64 " seed images of collection '%s' have no embedding of model '%s': "
                        "embed them first (lvd-decode, then lvd-embed --name %s --collection %s)",
                        catalog_path(c), r->reg->name, missing - bad, r->reg->collection, x->o.model, x->o.model,
                        r->reg->collection);
    return 0;
}

/* The row's result-shaping parameters as JSON, and the k-means it shares. */
static void row_params(rt_ctx *x, rt_row *r)
{
    const registry_row *g = r->reg;
    r->k = (int32_t)g->k;
    r->clusters_setting = x->o.clusters > 0 ? x->o.clusters : g->clusters;
    r->per_cluster = x->o.per_cluster > 0 ? x->o.per_cluster : g->per_cluster;
    r->cap_setting = x->o.cap > 0 ? x->o.cap : g->cap;
    r->min_seeds = x->o.min_seeds >= 0 ? x->o.min_seeds : g->min_seeds;
    /* --scale auto scales the registry's counts with the pool (values given on the command line are taken
     * as they are). The number of clusters is fixed when the k-means is trained; the cap follows the pool. */
    int scale_clusters = x->o.scale_auto && x->o.clusters <= 0;
    int scale_cap = x->o.scale_auto && x->o.cap <= 0;
    snprintf(r->km_setting, sizeof r->km_setting, "%s:%" PRId64, scale_clusters ? "auto" : "fixed",
             r->clusters_setting);
    r->cap = r->cap_setting;
    if (scale_cap) {
        double v = llround((double)r->cap_setting * (double)x->pool.n / RT_PAPER_POOL);
        r->cap = v < 1 ? 1 : (int64_t)v;
    }
    char dedup[24];
    snprintf(dedup, sizeof dedup, x->dedup_model_id ? "%" PRId64 : "null", x->dedup_model_id);
    switch (r->method) {
    case REGISTRY_AS_IS:
        snprintf(r->param_text, sizeof r->param_text, "{\"method\":\"as_is\",\"collection\":\"%s\"}",
                 g->collection);
        break;
    case REGISTRY_SAMPLE:
        snprintf(r->param_text, sizeof r->param_text,
                 "{\"method\":\"sample\",\"collection\":\"%s\",\"k\":%d,\"model_sha256\":\"%s\",\"dedup_model\":%s,"
                 "\"exact_max\":%" PRId64 ",\"factory\":%s%s%s,\"nprobe\":%d}",
                 g->collection, (int)r->k, x->model_sha, dedup, x->o.exact_max, x->o.factory ? "\"" : "",
                 x->o.factory ? x->o.factory : "null", x->o.factory ? "\"" : "", (int)x->o.nprobe);
        break;
    default:
        snprintf(r->param_text, sizeof r->param_text,
                 "{\"method\":\"cluster\",\"collection\":\"%s\",\"clusters\":\"%s\",\"per_cluster\":%" PRId64
                 ",\"cap\":\"%s:%" PRId64 "\",\"min_seeds\":%" PRId64 ",\"model_sha256\":\"%s\",\"dedup_model\":%s,"
                 "\"kmeans_seed\":%" PRIu64 ",\"kmeans_iters\":%d}",
                 g->collection, r->km_setting, r->per_cluster, scale_cap ? "auto" : "fixed", r->cap_setting,
                 r->min_seeds, x->model_sha, dedup, x->o.kmeans_seed, (int)x->o.kmeans_iters);
        break;
    }
    stage_fingerprint(r->param_text, r->fp);
}

/* Hex SHA-256 of the seed ids of r: a row whose seed set changes is selected again. */
static void seeds_digest(rt_row *r)
{
    sha256_ctx *h = sha256_new();
    uint8_t d[32] = {0};
    if (h) {
        for (int64_t i = 0; i < r->seeds.n; i++) {
            char line[32];
            int n = snprintf(line, sizeof line, "%" PRId64 ",", r->seeds.v[i].id);
            sha256_update(h, line, (size_t)n);
        }
        sha256_final(h, d);
    }
    sha256_to_hex(d, r->seeds_digest);
}

int rt_pool_load_rows(rt_ctx *x)
{
    uint8_t *keep = calloc((size_t)x->reg.nrows + 1, 1);
    x->rows = calloc((size_t)x->reg.nrows + 1, sizeof *x->rows);
    if (!keep || !x->rows) {
        free(keep);
        return lvd_fail("out of memory");
    }
    if (registry_select(&x->reg, x->o.only, keep) < 0) {
        free(keep);
        return -1;
    }
    x->nrows = 0;
    for (int i = 0; i < x->reg.nrows; i++) {
        if (!keep[i])
            continue;
        rt_row *r = &x->rows[x->nrows++];
        r->reg = &x->reg.rows[i];
        r->method = r->reg->method;
        r->collection_id = -1;
        row_params(x, r);
        sqlite3_stmt *st = catalog_stmt(x->src, "SELECT id, role, (SELECT count(*) FROM members m WHERE"
                                                " m.collection_id = collections.id) FROM collections WHERE name = ?1");
        if (!st) {
            free(keep);
            return -1;
        }
        sqlite3_bind_text(st, 1, r->reg->collection, -1, SQLITE_TRANSIENT);
        int64_t members = 0;
        char role[16] = "";
        if (sqlite3_step(st) == SQLITE_ROW) {
            r->collection_id = sqlite3_column_int64(st, 0);
            snprintf(role, sizeof role, "%s", (const char *)sqlite3_column_text(st, 1));
            members = sqlite3_column_int64(st, 2);
        }
        sqlite3_reset(st);
        if (r->collection_id < 0) {
            r->skipped = 1;
            snprintf(r->reason, sizeof r->reason, "no collection '%s' (import it: lvd-import --collection %s "
                     "--role seed ...)", r->reg->collection, r->reg->collection);
        } else if (strcmp(role, "seed") != 0) {
            r->skipped = 1;
            snprintf(r->reason, sizeof r->reason, "collection '%s' has role %s, not seed", r->reg->collection,
                     role);
        } else if (members == 0) {
            r->skipped = 1;
            snprintf(r->reason, sizeof r->reason, "collection '%s' is empty", r->reg->collection);
        } else {
            int64_t bad = 0;
            if (load_seeds(x, r, r->collection_id, &bad) != 0) {
                free(keep);
                return -1;
            }
            if (bad > 0)
                log_warn("row '%s': %" PRId64 " images of collection '%s' failed to decode and are not used as seeds",
                         r->reg->name, bad, r->reg->collection);
            if (r->seeds.n == 0) {
                r->skipped = 1;
                snprintf(r->reason, sizeof r->reason, "collection '%s' has no image with an embedding of '%s'",
                         r->reg->collection, x->o.model);
            }
        }
        if (!r->skipped && r->method != REGISTRY_AS_IS && x->pool.n == 0) {
            r->skipped = 1;
            snprintf(r->reason, sizeof r->reason, "the pool is empty");
        }
        seeds_digest(r);
        r->n_seeds = r->seeds.n;
    }
    free(keep);
    return 0;
}

/* Deletes the sample searches (hits and seed state) of the model's seeds whose hits include image `gone`:
 * they are searched again from scratch, since their next neighbour is unknown. */
static int drop_searches_finding(catalog *c, int64_t model_id, int64_t gone)
{
    static const char *const sql[] = {
        "DELETE FROM retrieve_seeds WHERE (row_id, seed_image_id) IN (SELECT h.row_id, h.seed_image_id FROM"
        " retrieve_hits h JOIN retrieve_rows r ON r.id = h.row_id WHERE r.model_id = ?1 AND h.image_id = ?2)",
        "DELETE FROM retrieve_hits WHERE (row_id, seed_image_id) IN (SELECT h.row_id, h.seed_image_id FROM"
        " retrieve_hits h JOIN retrieve_rows r ON r.id = h.row_id WHERE r.model_id = ?1 AND h.image_id = ?2)",
    };
    for (size_t i = 0; i < sizeof sql / sizeof *sql; i++) {
        sqlite3_stmt *st = catalog_stmt(c, sql[i]);
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, model_id);
        sqlite3_bind_int64(st, 2, gone);
        if (catalog_step_done(c, st) != 0)
            return -1;
    }
    return 0;
}

/* Drops every retrieval result of the model (--force on a pool defined otherwise). */
static int drop_model_results(catalog *c, int64_t model_id)
{
    static const char *const sql[] = {
        "DELETE FROM retrieve_hits WHERE row_id IN (SELECT id FROM retrieve_rows WHERE model_id = ?1)",
        "DELETE FROM retrieve_seeds WHERE row_id IN (SELECT id FROM retrieve_rows WHERE model_id = ?1)",
        "DELETE FROM retrieve_selections WHERE row_id IN (SELECT id FROM retrieve_rows WHERE model_id = ?1)",
        "DELETE FROM retrieve_clusters WHERE row_id IN (SELECT id FROM retrieve_rows WHERE model_id = ?1)",
        "DELETE FROM retrieve_assign WHERE kmeans_id IN (SELECT id FROM retrieve_kmeans WHERE model_id = ?1)",
        "DELETE FROM retrieve_kmeans WHERE model_id = ?1",
        "DELETE FROM retrieve_pool WHERE model_id = ?1",
        "UPDATE retrieve_rows SET status = 'pending' WHERE model_id = ?1",
    };
    for (size_t i = 0; i < sizeof sql / sizeof *sql; i++) {
        sqlite3_stmt *st = catalog_stmt(c, sql[i]);
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, model_id);
        if (catalog_step_done(c, st) != 0)
            return -1;
    }
    return 0;
}

/* retrieve_state of the model: *found, its dedup model and generation. */
static int read_state(catalog *c, int64_t model_id, int *found, int64_t *dedup_id, int32_t *gen)
{
    *found = 0;
    sqlite3_stmt *st = catalog_stmt(c, "SELECT coalesce(dedup_model_id, 0), gen FROM retrieve_state WHERE model_id = ?1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, model_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *found = 1;
        *dedup_id = sqlite3_column_int64(st, 0);
        *gen = (int32_t)sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : rt_db_error(c, "reading retrieve_state");
}

/* The name of model id (for messages), or "(none)". */
static void model_name(catalog *c, int64_t id, char *out, size_t cap)
{
    snprintf(out, cap, "(none: --no-dedup)");
    sqlite3_stmt *st = id ? catalog_stmt(c, "SELECT name FROM models WHERE id = ?1") : NULL;
    if (!st)
        return;
    sqlite3_bind_int64(st, 1, id);
    if (sqlite3_step(st) == SQLITE_ROW)
        snprintf(out, cap, "'%s'", (const char *)sqlite3_column_text(st, 0));
    sqlite3_reset(st);
}

int rt_pool_record(rt_ctx *x)
{
    catalog *c = x->st.cat;
    int found;
    int64_t old_dedup = 0;
    int32_t gen = 0;
    if (read_state(c, x->model_id, &found, &old_dedup, &gen) != 0)
        return -1;
    if (catalog_begin(c) != 0)
        return -1;
    if (found && old_dedup != x->dedup_model_id) {
        char was[160], now[160];
        model_name(c, old_dedup, was, sizeof was);
        model_name(c, x->dedup_model_id, now, sizeof now);
        if (!x->o.force) {
            catalog_rollback(c);
            return lvd_fail("%s: model '%s' retrieved from the pool deduplicated with %s; this run's pool is "
                            "deduplicated with %s. Pass the same --dedup-model / --no-dedup, or --force to drop "
                            "the model's retrieval results", catalog_path(c), x->o.model, was, now);
        }
        log_info("--force: the pool is now defined by %s (was %s): the model's retrieval results are dropped", now,
                 was);
        if (drop_model_results(c, x->model_id) != 0)
            goto fail;
        gen = 0;
    }
    /* Walk the stored pool and the current one, both by id. */
    sqlite3_stmt *st = catalog_stmt(c, "SELECT image_id, gen FROM retrieve_pool WHERE model_id = ?1 ORDER BY image_id");
    if (!st)
        goto fail;
    sqlite3_bind_int64(st, 1, x->model_id);
    int64_t *gone = NULL, ngone = 0, capgone = 0;
    int64_t i = 0, entered = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        int32_t g = (int32_t)sqlite3_column_int64(st, 1);
        while (i < x->pool.n && x->pool.v[i].id < id)
            x->pool.v[i++].gen = -1; /* new: stamped below */
        if (i < x->pool.n && x->pool.v[i].id == id) {
            x->pool.v[i++].gen = g;
            continue;
        }
        if (ngone == capgone) {
            capgone = capgone ? 2 * capgone : 1024;
            int64_t *ng = realloc(gone, (size_t)capgone * sizeof *ng);
            if (!ng) {
                sqlite3_reset(st);
                free(gone);
                lvd_fail("out of memory");
                goto fail;
            }
            gone = ng;
        }
        gone[ngone++] = id;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        free(gone);
        rt_db_error(c, "reading retrieve_pool");
        goto fail;
    }
    for (; i < x->pool.n; i++)
        x->pool.v[i].gen = -1;
    for (int64_t j = 0; j < x->pool.n; j++)
        entered += x->pool.v[j].gen < 0;
    int32_t next = gen + (entered > 0 || ngone > 0);
    for (int64_t j = 0; j < ngone; j++) {
        sqlite3_stmt *d = catalog_stmt(c, "DELETE FROM retrieve_pool WHERE model_id = ?1 AND image_id = ?2");
        if (!d || (sqlite3_bind_int64(d, 1, x->model_id), sqlite3_bind_int64(d, 2, gone[j]), catalog_step_done(c, d)) != 0 ||
            drop_searches_finding(c, x->model_id, gone[j]) != 0) {
            free(gone);
            goto fail;
        }
    }
    free(gone);
    for (int64_t j = 0; j < x->pool.n; j++) {
        if (x->pool.v[j].gen >= 0)
            continue;
        x->pool.v[j].gen = next;
        sqlite3_stmt *ins = catalog_stmt(c, "INSERT INTO retrieve_pool(model_id, image_id, gen) VALUES (?1, ?2, ?3)");
        if (!ins)
            goto fail;
        sqlite3_bind_int64(ins, 1, x->model_id);
        sqlite3_bind_int64(ins, 2, x->pool.v[j].id);
        sqlite3_bind_int64(ins, 3, next);
        if (catalog_step_done(c, ins) != 0)
            goto fail;
    }
    char now[32];
    catalog_now(now);
    st = catalog_stmt(c, "INSERT INTO retrieve_state(model_id, dedup_model_id, gen, pool_size, updated_at)"
                         " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(model_id) DO UPDATE SET"
                         " dedup_model_id = excluded.dedup_model_id, gen = excluded.gen,"
                         " pool_size = excluded.pool_size, updated_at = excluded.updated_at");
    if (!st)
        goto fail;
    sqlite3_bind_int64(st, 1, x->model_id);
    if (x->dedup_model_id)
        sqlite3_bind_int64(st, 2, x->dedup_model_id);
    sqlite3_bind_int64(st, 3, next);
    sqlite3_bind_int64(st, 4, x->pool.n);
    sqlite3_bind_text(st, 5, now, -1, SQLITE_TRANSIENT);
    if (catalog_step_done(c, st) != 0 || catalog_commit(c) != 0)
        goto fail;
    x->gen = next;
    x->pool_entered = entered;
    x->pool_left = ngone;
    if (entered || ngone)
        log_info("pool: %" PRId64 " images (%" PRId64 " new, %" PRId64 " left since the last run), generation %d",
                 x->pool.n, entered, ngone, (int)next);
    else
        log_info("pool: %" PRId64 " images, unchanged (generation %d)", x->pool.n, (int)next);
    return 0;
fail:
    catalog_rollback(c);
    return -1;
}

int rt_pool_drop_row_results(catalog *c, int64_t row_id)
{
    static const char *const sql[] = {
        "DELETE FROM retrieve_hits WHERE row_id = ?1", "DELETE FROM retrieve_seeds WHERE row_id = ?1",
        "DELETE FROM retrieve_selections WHERE row_id = ?1", "DELETE FROM retrieve_clusters WHERE row_id = ?1"};
    for (size_t i = 0; i < sizeof sql / sizeof *sql; i++) {
        sqlite3_stmt *st = catalog_stmt(c, sql[i]);
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, row_id);
        if (catalog_step_done(c, st) != 0)
            return -1;
    }
    return 0;
}

int rt_pool_record_rows(rt_ctx *x)
{
    catalog *c = x->st.cat;
    if (catalog_begin(c) != 0)
        return -1;
    for (int i = 0; i < x->nrows; i++) {
        rt_row *r = &x->rows[i];
        const registry_row *g = r->reg;
        sqlite3_stmt *st = catalog_stmt(c, "SELECT id, fingerprint, status, seeds_digest, selected_gen,"
                                           " coalesce(kmeans_id, 0) FROM retrieve_rows WHERE model_id = ?1 AND name = ?2");
        if (!st)
            goto fail;
        sqlite3_bind_int64(st, 1, x->model_id);
        sqlite3_bind_text(st, 2, g->name, -1, SQLITE_TRANSIENT);
        int known = 0, same_fp = 0, same_seeds = 0, done = 0;
        int64_t sel_gen = -1, km = 0;
        if (sqlite3_step(st) == SQLITE_ROW) {
            known = 1;
            r->id = sqlite3_column_int64(st, 0);
            same_fp = strcmp((const char *)sqlite3_column_text(st, 1), r->fp) == 0;
            done = strcmp((const char *)sqlite3_column_text(st, 2), "done") == 0;
            const char *sd = (const char *)sqlite3_column_text(st, 3);
            same_seeds = sd && strcmp(sd, r->seeds_digest) == 0;
            sel_gen = sqlite3_column_type(st, 4) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 4);
            km = sqlite3_column_int64(st, 5);
        }
        sqlite3_reset(st);
        if (known && !same_fp) {
            if (!x->o.force) {
                catalog_rollback(c);
                return lvd_fail("%s: row '%s' of model '%s' was retrieved with other parameters; this run's are %s. "
                                "Pass the same options and registry values, or --force to retrieve it again",
                                catalog_path(c), g->name, x->o.model, r->param_text);
            }
            if (rt_pool_drop_row_results(c, r->id) != 0)
                goto fail;
        }
        if (known && x->o.force && same_fp && rt_pool_drop_row_results(c, r->id) != 0)
            goto fail;
        r->pending = !r->skipped && (!known || !same_fp || !done || !same_seeds || x->o.force ||
                                     (r->method != REGISTRY_AS_IS && sel_gen != x->gen) ||
                                     (r->method == REGISTRY_CLUSTER && km != r->kmeans_id));
        st = catalog_stmt(c, "INSERT INTO retrieve_rows(model_id, name, task, dataset, split, method, collection,"
                             " collection_id, k, clusters, per_cluster, cap, min_seeds, kmeans_id, fingerprint, status,"
                             " reason, paper_seeds, paper_final) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
                             " ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19) ON CONFLICT(model_id, name) DO UPDATE SET"
                             " task = excluded.task, dataset = excluded.dataset, split = excluded.split,"
                             " method = excluded.method, collection = excluded.collection,"
                             " collection_id = excluded.collection_id, k = excluded.k, clusters = excluded.clusters,"
                             " per_cluster = excluded.per_cluster, cap = excluded.cap, min_seeds = excluded.min_seeds,"
                             " kmeans_id = excluded.kmeans_id, fingerprint = excluded.fingerprint,"
                             " status = CASE WHEN ?20 THEN excluded.status ELSE status END,"
                             " reason = excluded.reason, paper_seeds = excluded.paper_seeds,"
                             " paper_final = excluded.paper_final");
        if (!st)
            goto fail;
        sqlite3_bind_int64(st, 1, x->model_id);
        sqlite3_bind_text(st, 2, g->name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, g->task, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, g->dataset, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 5, g->split, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 6, registry_method_name(r->method), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 7, g->collection, -1, SQLITE_TRANSIENT);
        if (r->collection_id >= 0)
            sqlite3_bind_int64(st, 8, r->collection_id);
        if (r->method == REGISTRY_SAMPLE)
            sqlite3_bind_int64(st, 9, r->k);
        if (r->method == REGISTRY_CLUSTER) {
            sqlite3_bind_int64(st, 10, r->clusters);
            sqlite3_bind_int64(st, 11, r->per_cluster);
            sqlite3_bind_int64(st, 12, r->cap);
            sqlite3_bind_int64(st, 13, r->min_seeds);
            if (r->kmeans_id > 0)
                sqlite3_bind_int64(st, 14, r->kmeans_id);
        }
        sqlite3_bind_text(st, 15, r->fp, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 16, r->skipped ? "skipped" : "pending", -1, SQLITE_STATIC);
        if (r->skipped)
            sqlite3_bind_text(st, 17, r->reason, -1, SQLITE_STATIC);
        if (g->paper_seeds != REGISTRY_UNKNOWN)
            sqlite3_bind_int64(st, 18, g->paper_seeds);
        if (g->paper_final != REGISTRY_UNKNOWN)
            sqlite3_bind_int64(st, 19, g->paper_final);
        sqlite3_bind_int(st, 20, r->pending || r->skipped);
        if (catalog_step_done(c, st) != 0)
            goto fail;
        if (!known)
            r->id = sqlite3_last_insert_rowid(catalog_db(c));
    }
    return catalog_commit(c);
fail:
    catalog_rollback(c);
    return -1;
}

int rt_pool_check_prepared(rt_ctx *x)
{
    catalog *c = x->src;
    static const char *const hint = "run lvd-retrieve --prepare (with the same options, without --part) first, "
                                    "then the parts";
    int found;
    int64_t dedup = 0;
    int32_t gen = 0;
    if (read_state(c, x->model_id, &found, &dedup, &gen) != 0)
        return -1;
    if (!found || dedup != x->dedup_model_id)
        return lvd_fail("%s: model '%s' has no retrieval state for this pool: %s", catalog_path(c), x->o.model, hint);
    sqlite3_stmt *st = catalog_stmt(c, "SELECT image_id, gen FROM retrieve_pool WHERE model_id = ?1 ORDER BY image_id");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    int64_t i = 0;
    int rc, same = 1;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (i >= x->pool.n || x->pool.v[i].id != sqlite3_column_int64(st, 0)) {
            same = 0;
            break;
        }
        x->pool.v[i++].gen = (int32_t)sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return rt_db_error(c, "reading retrieve_pool");
    if (!same || i != x->pool.n)
        return lvd_fail("%s: the pool changed since it was last recorded: %s", catalog_path(c), hint);
    x->gen = gen;
    for (int k = 0; k < x->nrows; k++) {
        rt_row *r = &x->rows[k];
        st = catalog_stmt(c, "SELECT id, fingerprint, status FROM retrieve_rows WHERE model_id = ?1 AND name = ?2");
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, x->model_id);
        sqlite3_bind_text(st, 2, r->reg->name, -1, SQLITE_TRANSIENT);
        int ok = 0;
        if (sqlite3_step(st) == SQLITE_ROW) {
            r->id = sqlite3_column_int64(st, 0);
            ok = strcmp((const char *)sqlite3_column_text(st, 1), r->fp) == 0;
            r->pending = strcmp((const char *)sqlite3_column_text(st, 2), "pending") == 0;
        }
        sqlite3_reset(st);
        if (!ok && !r->skipped)
            return lvd_fail("%s: row '%s' is not prepared with these parameters: %s", catalog_path(c), r->reg->name,
                            hint);
    }
    return 0;
}
