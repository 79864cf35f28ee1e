/* select.c — selections from the stored search results, the run record and the CSV export (see select.h). */
#include "select.h"

#include <inttypes.h>
#include <string.h>

#include "err.h"
#include "log.h"

/* Runs sql with ?1 = row id and ?2..?5 = a..d (unused ones ignored). */
static int exec4(catalog *c, const char *sql, int64_t row, int64_t a, int64_t b, int64_t d, int64_t e)
{
    sqlite3_stmt *st = catalog_stmt(c, sql);
    if (!st)
        return -1;
    int n = sqlite3_bind_parameter_count(st);
    int64_t v[5] = {row, a, b, d, e};
    for (int i = 0; i < n && i < 5; i++)
        sqlite3_bind_int64(st, i + 1, v[i]);
    return catalog_step_done(c, st);
}

static int count_of(catalog *c, const char *sql, int64_t row, int64_t *out)
{
    sqlite3_stmt *st = catalog_stmt(c, sql);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, row);
    int rc = sqlite3_step(st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : rt_db_error(c, "counting selections");
}

static int select_as_is(rt_ctx *x, rt_row *r)
{
    catalog *c = x->st.cat;
    for (int64_t i = 0; i < r->seeds.n; i++)
        if (exec4(c, "INSERT INTO retrieve_selections(row_id, image_id, seed_image_id, rank, sim, collisions)"
                     " VALUES (?1, ?2, ?2, 0, 1.0, 0)", r->id, r->seeds.v[i].id, 0, 0, 0) != 0)
            return -1;
    r->retrieved = r->unique_images = r->final = r->seeds.n;
    r->collisions = r->capped = 0;
    return 0;
}

static int select_sample(rt_ctx *x, rt_row *r)
{
    catalog *c = x->st.cat;
    /* Searches of seeds that left the collection are dropped, then every hit of a current seed counts. */
    static const char *const drop[] = {
        "DELETE FROM retrieve_hits WHERE row_id = ?1 AND seed_image_id NOT IN (SELECT m.image_id FROM members m"
        " WHERE m.collection_id = ?2)",
        "DELETE FROM retrieve_seeds WHERE row_id = ?1 AND seed_image_id NOT IN (SELECT m.image_id FROM members m"
        " WHERE m.collection_id = ?2)"};
    for (int i = 0; i < 2; i++)
        if (exec4(c, drop[i], r->id, r->collection_id, 0, 0, 0) != 0)
            return -1;
    if (exec4(c, "INSERT INTO retrieve_selections(row_id, image_id, seed_image_id, rank, sim, collisions)"
                 " SELECT ?1, image_id, seed_image_id, rank, sim, n - 1 FROM ("
                 "  SELECT h.image_id, h.seed_image_id, h.rank, h.sim,"
                 "         row_number() OVER (PARTITION BY h.image_id ORDER BY h.sim DESC, h.seed_image_id) AS pick,"
                 "         count(*) OVER (PARTITION BY h.image_id) AS n"
                 "  FROM retrieve_hits h WHERE h.row_id = ?1)"
                 " WHERE pick = 1",
              r->id, 0, 0, 0, 0) != 0)
        return -1;
    if (count_of(c, "SELECT count(*) FROM retrieve_hits WHERE row_id = ?1", r->id, &r->retrieved) != 0 ||
        count_of(c, "SELECT count(*) FROM retrieve_selections WHERE row_id = ?1", r->id, &r->unique_images) != 0)
        return -1;
    r->collisions = r->retrieved - r->unique_images;
    r->final = r->unique_images;
    r->capped = 0;
    return 0;
}

static int select_cluster(rt_ctx *x, rt_row *r)
{
    catalog *c = x->st.cat;
    /* The row's seeds per cluster, and each such cluster's pool size. */
    if (exec4(c, "INSERT INTO retrieve_clusters(row_id, cluster, size, seeds, chosen, taken, kept)"
                 " SELECT ?1, s.cluster, (SELECT count(*) FROM retrieve_assign a JOIN retrieve_pool p ON"
                 "   p.model_id = ?3 AND p.image_id = a.image_id WHERE a.kmeans_id = ?2 AND a.cluster = s.cluster),"
                 "   s.n, s.n > ?5, 0, 0"
                 " FROM (SELECT a.cluster, count(*) AS n FROM retrieve_assign a WHERE a.kmeans_id = ?2 AND a.image_id IN"
                 "   (SELECT m.image_id FROM members m JOIN embeddings e ON e.image_id = m.image_id AND e.model_id = ?3"
                 "    WHERE m.collection_id = ?4) GROUP BY a.cluster) s",
              r->id, r->kmeans_id, x->model_id, r->collection_id, r->min_seeds) != 0)
        return -1;
    if (exec4(c, "UPDATE retrieve_clusters SET taken = min(size, ?2) WHERE row_id = ?1 AND chosen = 1", r->id,
              r->per_cluster, 0, 0, 0) != 0)
        return -1;
    if (exec4(c, "INSERT INTO retrieve_selections(row_id, image_id, rank, sim, cluster, collisions)"
                 " SELECT ?1, image_id, rank, sim, cluster, 0 FROM ("
                 "  SELECT a.image_id, a.cluster, a.sim,"
                 "         row_number() OVER (PARTITION BY a.cluster ORDER BY a.sim DESC, a.image_id) - 1 AS rank"
                 "  FROM retrieve_assign a JOIN retrieve_pool p ON p.model_id = ?3 AND p.image_id = a.image_id"
                 "  WHERE a.kmeans_id = ?2 AND a.cluster IN (SELECT cluster FROM retrieve_clusters WHERE row_id = ?1"
                 "        AND chosen = 1))"
                 " WHERE rank < ?4 ORDER BY sim DESC, image_id LIMIT ?5",
              r->id, r->kmeans_id, x->model_id, r->per_cluster, r->cap) != 0)
        return -1;
    if (exec4(c, "UPDATE retrieve_clusters SET kept = (SELECT count(*) FROM retrieve_selections s WHERE s.row_id = ?1"
                 " AND s.cluster = retrieve_clusters.cluster) WHERE row_id = ?1 AND chosen = 1",
              r->id, 0, 0, 0, 0) != 0)
        return -1;
    if (count_of(c, "SELECT coalesce(sum(taken), 0) FROM retrieve_clusters WHERE row_id = ?1", r->id, &r->retrieved) != 0 ||
        count_of(c, "SELECT count(*) FROM retrieve_selections WHERE row_id = ?1", r->id, &r->final) != 0)
        return -1;
    r->unique_images = r->retrieved;
    r->collisions = 0;
    r->capped = r->retrieved - r->final;
    return 0;
}

/* The row's recorded counts (rows selected by an earlier run), for the summary. */
static int read_counts(catalog *c, rt_row *r)
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT coalesce(seeds, 0), coalesce(retrieved, 0), coalesce(collisions, 0),"
                                       " coalesce(unique_images, 0), coalesce(capped, 0), coalesce(final, 0), status"
                                       " FROM retrieve_rows WHERE id = ?1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, r->id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        r->n_seeds = sqlite3_column_int64(st, 0);
        r->retrieved = sqlite3_column_int64(st, 1);
        r->collisions = sqlite3_column_int64(st, 2);
        r->unique_images = sqlite3_column_int64(st, 3);
        r->capped = sqlite3_column_int64(st, 4);
        r->final = sqlite3_column_int64(st, 5);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : rt_db_error(c, "reading retrieve_rows");
}

static cJSON *row_summary(const rt_row *r)
{
    const registry_row *g = r->reg;
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "row", g->name);
    cJSON_AddStringToObject(o, "method", registry_method_name(r->method));
    cJSON_AddStringToObject(o, "collection", g->collection);
    cJSON_AddStringToObject(o, "status", r->skipped ? "skipped" : "done");
    if (r->skipped)
        cJSON_AddStringToObject(o, "reason", r->reason);
    if (r->method == REGISTRY_SAMPLE)
        cJSON_AddNumberToObject(o, "k", r->k);
    if (r->method == REGISTRY_CLUSTER && !r->skipped) {
        cJSON_AddNumberToObject(o, "clusters", (double)r->clusters);
        cJSON_AddNumberToObject(o, "per_cluster", (double)r->per_cluster);
        cJSON_AddNumberToObject(o, "cap", (double)r->cap);
        cJSON_AddNumberToObject(o, "min_seeds", (double)r->min_seeds);
        cJSON_AddNumberToObject(o, "kmeans", (double)r->kmeans_id);
    }
    cJSON_AddNumberToObject(o, "seeds", (double)r->n_seeds);
    cJSON_AddNumberToObject(o, "retrieved", (double)r->retrieved);
    cJSON_AddNumberToObject(o, "collisions", (double)r->collisions);
    cJSON_AddNumberToObject(o, "unique", (double)r->unique_images);
    cJSON_AddNumberToObject(o, "capped", (double)r->capped);
    cJSON_AddNumberToObject(o, "final", (double)r->final);
    cJSON_AddNumberToObject(o, "searched_now", (double)r->searched);
    if (g->paper_seeds != REGISTRY_UNKNOWN)
        cJSON_AddNumberToObject(o, "paper_seeds", (double)g->paper_seeds);
    if (g->paper_final != REGISTRY_UNKNOWN)
        cJSON_AddNumberToObject(o, "paper_final", (double)g->paper_final);
    return o;
}

int rt_select(rt_ctx *x, cJSON **summary, int *selected)
{
    catalog *c = x->st.cat;
    *summary = NULL;
    *selected = 0;
    int64_t rrun = 0;
    char now[32];
    catalog_now(now);
    int any = 0;
    for (int i = 0; i < x->nrows; i++)
        any |= x->rows[i].pending && !x->rows[i].skipped;
    if (any) {
        sqlite3_stmt *st = catalog_stmt(c, "INSERT INTO retrieve_runs(run_id, model_id, dedup_model_id, registry_path,"
                                           " registry_sha256, registry, scale, pool_size, pool_gen, params, created_at)"
                                           " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, x->st.run_id);
        sqlite3_bind_int64(st, 2, x->model_id);
        if (x->dedup_model_id)
            sqlite3_bind_int64(st, 3, x->dedup_model_id);
        sqlite3_bind_text(st, 4, x->reg.path, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, x->reg.sha256, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 6, x->reg.text, (int)x->reg.text_len, SQLITE_STATIC);
        sqlite3_bind_text(st, 7, x->o.scale_auto ? "auto" : "none", -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 8, x->pool.n);
        sqlite3_bind_int64(st, 9, x->gen);
        sqlite3_bind_text(st, 10, x->ptext, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 11, now, -1, SQLITE_TRANSIENT);
        if (catalog_step_done(c, st) != 0)
            return -1;
        rrun = sqlite3_last_insert_rowid(catalog_db(c));
    }
    cJSON *rows = cJSON_CreateArray();
    if (!rows)
        return lvd_fail("out of memory");
    for (int i = 0; i < x->nrows; i++) {
        rt_row *r = &x->rows[i];
        if (r->skipped) {
            if (r->id && (catalog_begin(c) != 0 || exec4(c, "DELETE FROM retrieve_selections WHERE row_id = ?1", r->id, 0,
                                                         0, 0, 0) != 0 ||
                          exec4(c, "DELETE FROM retrieve_clusters WHERE row_id = ?1", r->id, 0, 0, 0, 0) != 0 ||
                          catalog_commit(c) != 0))
                goto fail;
            log_info("row %s: skipped: %s", r->reg->name, r->reason);
        } else if (r->pending) {
            if (catalog_begin(c) != 0 ||
                exec4(c, "DELETE FROM retrieve_selections WHERE row_id = ?1", r->id, 0, 0, 0, 0) != 0 ||
                exec4(c, "DELETE FROM retrieve_clusters WHERE row_id = ?1", r->id, 0, 0, 0, 0) != 0)
                goto fail;
            int rc = r->method == REGISTRY_AS_IS ? select_as_is(x, r)
                     : r->method == REGISTRY_SAMPLE ? select_sample(x, r)
                                                    : select_cluster(x, r);
            if (rc != 0)
                goto fail;
            sqlite3_stmt *st = catalog_stmt(c, "UPDATE retrieve_rows SET status = 'done', reason = NULL, seeds = ?2,"
                                               " retrieved = ?3, collisions = ?4, unique_images = ?5, capped = ?6,"
                                               " final = ?7, seeds_digest = ?8, selected_gen = ?9, kmeans_id = ?10,"
                                               " clusters = ?11, cap = ?12, retrieve_run_id = ?13 WHERE id = ?1");
            if (!st)
                goto fail;
            sqlite3_bind_int64(st, 1, r->id);
            sqlite3_bind_int64(st, 2, r->seeds.n);
            sqlite3_bind_int64(st, 3, r->retrieved);
            sqlite3_bind_int64(st, 4, r->collisions);
            sqlite3_bind_int64(st, 5, r->unique_images);
            sqlite3_bind_int64(st, 6, r->capped);
            sqlite3_bind_int64(st, 7, r->final);
            sqlite3_bind_text(st, 8, r->seeds_digest, -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 9, x->gen);
            if (r->method == REGISTRY_CLUSTER) {
                sqlite3_bind_int64(st, 10, r->kmeans_id);
                sqlite3_bind_int64(st, 11, r->clusters);
                sqlite3_bind_int64(st, 12, r->cap);
            }
            sqlite3_bind_int64(st, 13, rrun);
            if (catalog_step_done(c, st) != 0 || catalog_commit(c) != 0)
                goto fail;
            (*selected)++;
            log_info("row %s (%s): %" PRId64 " seeds, %" PRId64 " retrieved, %" PRId64 " collisions, %" PRId64
                     " capped, %" PRId64 " selected", r->reg->name, registry_method_name(r->method), r->seeds.n,
                     r->retrieved, r->collisions, r->capped, r->final);
        } else if (read_counts(c, r) != 0) {
            goto fail;
        }
        cJSON *o = row_summary(r);
        if (!o || !cJSON_AddItemToArray(rows, o)) {
            cJSON_Delete(o);
            lvd_fail("out of memory");
            goto fail;
        }
    }
    if (rrun) {
        char *text = cJSON_PrintUnformatted(rows);
        sqlite3_stmt *st = text ? catalog_stmt(c, "UPDATE retrieve_runs SET summary = ?2 WHERE id = ?1") : NULL;
        int rc = st ? (sqlite3_bind_int64(st, 1, rrun), sqlite3_bind_text(st, 2, text, -1, SQLITE_TRANSIENT),
                       catalog_step_done(c, st))
                    : -1;
        cJSON_free(text);
        if (rc != 0)
            goto fail;
    }
    *summary = rows;
    return 0;
fail:
    catalog_rollback(c);
    cJSON_Delete(rows);
    return -1;
}

/* s as one CSV field: quoted when it holds a comma, a quote or a line break (quotes doubled). */
static void csv_field(FILE *f, const char *s)
{
    if (!s)
        return;
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

int rt_select_csv(rt_ctx *x, catalog *c, FILE *f)
{
    sqlite3_stmt *st = catalog_stmt(
        c, "SELECT r.name, r.method, i.sha256,"
           " (SELECT m.key FROM members m WHERE m.image_id = s.image_id ORDER BY m.collection_id, m.key LIMIT 1),"
           " (SELECT m.key FROM members m WHERE m.image_id = s.seed_image_id AND m.collection_id = r.collection_id"
           "  ORDER BY m.key LIMIT 1),"
           " s.rank, s.sim, s.cluster, s.collisions"
           " FROM retrieve_selections s JOIN retrieve_rows r ON r.id = s.row_id JOIN images i ON i.id = s.image_id"
           " WHERE r.model_id = ?1 AND r.status = 'done' ORDER BY r.name, s.image_id");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    fputs("row,method,image_sha256,image_key,seed_key,rank,similarity,cluster,collisions\n", f);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < 9; i++) {
            if (i)
                fputc(',', f);
            if (sqlite3_column_type(st, i) == SQLITE_NULL)
                continue;
            if (i == 6)
                fprintf(f, "%.9g", sqlite3_column_double(st, i));
            else
                csv_field(f, (const char *)sqlite3_column_text(st, i));
        }
        fputc('\n', f);
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : rt_db_error(c, "reading retrieve_selections");
}
