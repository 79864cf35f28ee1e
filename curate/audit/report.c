/* report.c — the dedup audit report, built from SELECTs over the schema-3 dedup tables. */
#include "report.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* ---- cJSON and SQL helpers: each returns 0, or -1 with a message ---- */

static int oom(void) { return lvd_fail("out of memory building the audit report"); }

static int jnum(cJSON *o, const char *key, double v) { return cJSON_AddNumberToObject(o, key, v) ? 0 : oom(); }

static int jstr(cJSON *o, const char *key, const char *v)
{
    if (!v)
        return cJSON_AddNullToObject(o, key) ? 0 : oom();
    return cJSON_AddStringToObject(o, key, v) ? 0 : oom();
}

/* Adds column i of st under key: its number, or null when the column is NULL. */
static int jcol_num(cJSON *o, const char *key, sqlite3_stmt *st, int i)
{
    if (sqlite3_column_type(st, i) == SQLITE_NULL)
        return cJSON_AddNullToObject(o, key) ? 0 : oom();
    return jnum(o, key, sqlite3_column_double(st, i));
}

static int jadd(cJSON *o, const char *key, cJSON *v)
{
    if (!v)
        return -1;
    if (!cJSON_AddItemToObject(o, key, v)) {
        cJSON_Delete(v);
        return oom();
    }
    return 0;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : NULL;
}

/* Up to 4 integers of the first row of sql (parameters ?1 = a, ?2 = b when present); NULL reads as 0. */
static int query_ints(catalog *c, const char *sql, int64_t a, int64_t b, int64_t *out, int n)
{
    sqlite3_stmt *st = catalog_stmt(c, sql);
    if (!st)
        return -1;
    int np = sqlite3_bind_parameter_count(st);
    if (np >= 1)
        sqlite3_bind_int64(st, 1, a);
    if (np >= 2)
        sqlite3_bind_int64(st, 2, b);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return catalog_step_fail(c, st);
    for (int i = 0; i < n; i++)
        out[i] = rc == SQLITE_ROW ? sqlite3_column_int64(st, i) : 0;
    sqlite3_reset(st);
    return 0;
}

/* Sets the fields of o (already in its array) from the current row of st. */
typedef int (*row_fill)(catalog *c, sqlite3_stmt *st, cJSON *o, void *ctx);

/* The one loop of every list section: runs sql with ?1..?n bound to params[0..n) and appends one object per
 * row to arr, filled by fill(c, st, o, ctx). The statement is reset on every path. */
static int query_rows(catalog *c, const char *sql, const int64_t *params, int n, cJSON *arr, row_fill fill,
                      void *ctx)
{
    sqlite3_stmt *st = catalog_stmt(c, sql);
    if (!st)
        return -1;
    for (int i = 0; i < n; i++)
        sqlite3_bind_int64(st, i + 1, params[i]);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(arr, o)) {
            cJSON_Delete(o);
            sqlite3_reset(st);
            return oom();
        }
        if (fill(c, st, o, ctx) != 0) {
            sqlite3_reset(st);
            return -1;
        }
    }
    if (rc != SQLITE_DONE)
        return catalog_step_fail(c, st);
    sqlite3_reset(st);
    return 0;
}

/* Ranks of a pair list: the first row gets rank, each next one rank + dir (dir +1 or -1). bench: the
 * benchmark collection of benchmark pairs (0 for self-dedup). */
typedef struct pair_ctx {
    int64_t rank;
    int dir;
    int64_t bench;
} pair_ctx;

/* The two pair lists of section o, which holds `removed` removals: top_pairs, the `top` of highest similarity
 * (sql_top, similarity descending; ranks 1, 2, ...), then threshold_pairs, up to `top` more nearest the
 * threshold (sql_low, ascending; ranks removed, removed - 1, ...), so no removal is in both. The queries bind
 * ?1 model, then ?2 bench for a benchmark (bench > 0), then the row limit; fill reads one pair row. */
static int pair_lists(catalog *c, cJSON *o, const char *sql_top, const char *sql_low, int64_t model, int64_t bench,
                      int64_t removed, int32_t top, row_fill fill)
{
    cJSON *tp = cJSON_AddArrayToObject(o, "top_pairs"), *lp = tp ? cJSON_AddArrayToObject(o, "threshold_pairs") : NULL;
    if (!lp)
        return oom();
    int64_t n_top = removed < top ? removed : top;
    int64_t n_low = removed - n_top < top ? removed - n_top : top;
    int64_t params[3] = {model, bench, 0};
    int n = bench > 0 ? 3 : 2; /* the limit is the last parameter */
    pair_ctx top_ctx = {1, 1, bench}, low_ctx = {removed, -1, bench};
    params[n - 1] = n_top;
    if (n_top > 0 && query_rows(c, sql_top, params, n, tp, fill, &top_ctx) != 0)
        return -1;
    params[n - 1] = n_low;
    if (n_low > 0 && query_rows(c, sql_low, params, n, lp, fill, &low_ctx) != 0)
        return -1;
    return 0;
}

/* ---- models ---- */

/* The model whose `what` results ("dedup", "retrieval") to report, among those sql lists (id, name; by name):
 * `name`, or the only one. None listed: an error naming `stage` to run first, or, when optional (and no name
 * is asked for), *model_id = 0. Several and no name: an error naming `option`. */
static int pick_model(catalog *c, const char *sql, const char *name, const char *what, const char *stage,
                      const char *option, int optional, int64_t *model_id, char **name_out)
{
    *model_id = 0;
    if (name_out)
        *name_out = NULL;
    sqlite3_stmt *st = catalog_stmt(c, sql);
    if (!st)
        return -1;
    int64_t found = -1, n = 0;
    char names[512] = "";
    size_t used = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *nm = col_text(st, 1);
        if (!nm)
            nm = "";
        if (used < sizeof names - 1) {
            int w = snprintf(names + used, sizeof names - used, "%s%s", n ? ", " : "", nm);
            used = w > 0 && (size_t)w < sizeof names - used ? used + (size_t)w : sizeof names - 1;
        }
        n++;
        if (name ? strcmp(nm, name) == 0 : n == 1)
            found = sqlite3_column_int64(st, 0);
    }
    if (rc != SQLITE_DONE)
        return catalog_step_fail(c, st);
    sqlite3_reset(st);
    if (n == 0 && optional && !name)
        return 0;
    if (n == 0)
        return lvd_fail("%s: no %s results for any model; run %s first", catalog_path(c), what, stage);
    if (name && found < 0)
        return lvd_fail("%s: model '%s' has no %s results (models with results: %s)", catalog_path(c), name, what,
                        names);
    if (!name && n > 1)
        return lvd_fail("%s: %" PRId64 " models have %s results (%s); choose one with %s", catalog_path(c), n, what,
                        names, option);
    *model_id = found;
    if (name_out) {
        if (name) {
            *name_out = strdup(name);
        } else {
            size_t l = strcspn(names, ",");
            *name_out = strndup(names, l);
        }
        if (!*name_out)
            return oom();
    }
    return 0;
}

int audit_model(catalog *c, const char *name, int optional, int64_t *model_id, char **name_out)
{
    return pick_model(c,
                      "SELECT m.id, m.name FROM models m WHERE EXISTS"
                      " (SELECT 1 FROM dedup_runs r WHERE r.model_id = m.id) ORDER BY m.name",
                      name, "dedup", "lvd-dedup", "--model", optional, model_id, name_out);
}

int audit_retrieve_model(catalog *c, const char *name, int64_t *model_id, char **name_out)
{
    *model_id = 0;
    if (name_out)
        *name_out = NULL;
    /* The audit opens catalogs read-only, without migrating them: one written before lvd-retrieve existed
     * (schema < 6) has no retrieval tables, which means no retrieval results. */
    int64_t tables = 0;
    if (query_ints(c, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'retrieve_rows'", 0, 0,
                   &tables, 1) != 0)
        return -1;
    if (tables == 0)
        return name ? lvd_fail("%s: model '%s' has no retrieval results (the catalog has no retrieval tables)",
                               catalog_path(c), name)
                    : 0;
    return pick_model(c,
                      "SELECT m.id, m.name FROM models m WHERE EXISTS"
                      " (SELECT 1 FROM retrieve_rows r WHERE r.model_id = m.id) ORDER BY m.name",
                      name, "retrieval", "lvd-retrieve", "--retrieve-model", 1, model_id, name_out);
}

/* ---- bands and bins ---- */

void audit_bands(double t, double *edges, int32_t *n)
{
    int32_t k = 0;
    edges[k++] = t;
    for (int i = 1; i <= 9; i++) {
        double e = i / 10.0;
        if (e > t)
            edges[k++] = e;
    }
    if (0.95 > t)
        edges[k++] = 0.95;
    /* A threshold at or above 1 (nothing can pass it) still gets one band. */
    double last = 1.0 > t ? 1.0 : t + 0.05;
    edges[k++] = last;
    *n = k - 1;
}

void audit_hist_bins(double lo_value, double t, double *edges, int32_t *n)
{
    static const double widths[] = {0.01, 0.02, 0.025, 0.05, 0.1, 0.2};
    double lo = lo_value < t ? lo_value : t;
    if (!isfinite(lo) || lo < -1.0)
        lo = -1.0;
    if (lo > 0.99)
        lo = 0.99;
    double w = 0.2, start = -1.0;
    int32_t nb = 0;
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) {
        w = widths[i];
        start = floor(lo / w) * w;
        if (fabs(start - t) < 1e-12)
            start -= w;
        nb = (int32_t)ceil((1.0 - start) / w - 1e-9);
        if (nb <= 40)
            break;
    }
    if (nb < 1)
        nb = 1;
    if (nb > AUDIT_BINS_MAX)
        nb = AUDIT_BINS_MAX;
    for (int32_t i = 0; i < nb; i++)
        edges[i] = start + i * w;
    edges[nb] = 1.0;
    *n = nb;
}

int32_t audit_bin_of(const double *edges, int32_t n, double v)
{
    if (!(v >= edges[0]))
        return -1;
    for (int32_t i = n - 1; i > 0; i--)
        if (v >= edges[i])
            return i;
    return 0;
}

/* {edges, counts} of values (edges from audit_hist_bins) as a cJSON object, or NULL. */
static cJSON *hist_obj(const double *edges, int32_t n, const int64_t *counts)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *e = cJSON_AddArrayToObject(o, "edges"), *k = e ? cJSON_AddArrayToObject(o, "counts") : NULL;
    if (!k) {
        cJSON_Delete(o);
        oom();
        return NULL;
    }
    for (int32_t i = 0; i <= n; i++)
        if (!cJSON_AddItemToArray(e, cJSON_CreateNumber(round(edges[i] * 1e9) / 1e9)))
            goto fail;
    for (int32_t i = 0; i < n; i++)
        if (!cJSON_AddItemToArray(k, cJSON_CreateNumber((double)counts[i])))
            goto fail;
    return o;
fail:
    cJSON_Delete(o);
    oom();
    return NULL;
}

/* Histogram of the non-NULL first column of sql (?1 = a, ?2 = b) around threshold t; bins start at the
 * smallest value or t. */
static cJSON *hist_query(catalog *c, const char *min_sql, const char *sql, int64_t a, int64_t b, double t)
{
    double lo = t;
    sqlite3_stmt *st = catalog_stmt(c, min_sql);
    if (!st)
        return NULL;
    sqlite3_bind_int64(st, 1, a);
    if (sqlite3_bind_parameter_count(st) >= 2)
        sqlite3_bind_int64(st, 2, b);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        lo = sqlite3_column_double(st, 0);
    else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        catalog_step_fail(c, st);
        return NULL;
    }
    sqlite3_reset(st);
    double edges[AUDIT_BINS_MAX + 1];
    int64_t counts[AUDIT_BINS_MAX] = {0};
    int32_t n;
    audit_hist_bins(lo, t, edges, &n);
    if (!(st = catalog_stmt(c, sql)))
        return NULL;
    sqlite3_bind_int64(st, 1, a);
    if (sqlite3_bind_parameter_count(st) >= 2)
        sqlite3_bind_int64(st, 2, b);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_type(st, 0) == SQLITE_NULL)
            continue;
        int32_t i = audit_bin_of(edges, n, sqlite3_column_double(st, 0));
        if (i >= 0)
            counts[i]++;
    }
    if (rc != SQLITE_DONE) {
        catalog_step_fail(c, st);
        return NULL;
    }
    sqlite3_reset(st);
    return hist_obj(edges, n, counts);
}

/* ---- images ---- */

/* {id, key, collection, sha256} of image id, with the key of its membership in collection prefer (0: its
 * first pool membership); cJSON null for id <= 0. NULL on failure. */
static cJSON *image_obj(catalog *c, int64_t id, int64_t prefer)
{
    if (id <= 0) {
        cJSON *n = cJSON_CreateNull();
        if (!n)
            oom();
        return n;
    }
    sqlite3_stmt *st = catalog_stmt(c, "SELECT i.sha256, m.key, col.name FROM images i"
                                       " LEFT JOIN members m ON m.image_id = i.id"
                                       " LEFT JOIN collections col ON col.id = m.collection_id"
                                       " WHERE i.id = ?1"
                                       " ORDER BY (m.collection_id = ?2) DESC, (col.role = 'pool') DESC,"
                                       " m.collection_id, m.key LIMIT 1");
    if (!st)
        return NULL;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, prefer);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        catalog_step_fail(c, st);
        return NULL;
    }
    cJSON *o = cJSON_CreateObject();
    if (!o || jnum(o, "id", (double)id) || jstr(o, "key", rc == SQLITE_ROW ? col_text(st, 1) : NULL) ||
        jstr(o, "collection", rc == SQLITE_ROW ? col_text(st, 2) : NULL) ||
        jstr(o, "sha256", rc == SQLITE_ROW ? col_text(st, 0) : NULL)) {
        sqlite3_reset(st);
        cJSON_Delete(o);
        oom();
        return NULL;
    }
    sqlite3_reset(st);
    return o;
}

/* ---- header: parameters and pool counts ---- */

static int params_report(catalog *c, int64_t model, cJSON *r, double *threshold, double *bthreshold)
{
    int64_t v[2];
    if (query_ints(c, "SELECT count(*), max(id) FROM dedup_runs WHERE model_id = ?1", model, 0, v, 2) != 0 ||
        jnum(r, "dedup_runs", (double)v[0]))
        return -1;
    sqlite3_stmt *st = catalog_stmt(c, "SELECT k, threshold, benchmark_threshold, benchmark_rule, keep_rule,"
                                       " phash_distance, index_desc, fingerprint, created_at"
                                       " FROM dedup_runs WHERE id = ?1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, v[1]);
    if (sqlite3_step(st) != SQLITE_ROW)
        return catalog_step_fail(c, st);
    *threshold = sqlite3_column_double(st, 1);
    *bthreshold = sqlite3_column_double(st, 2);
    cJSON *p = cJSON_AddObjectToObject(r, "params");
    int bad = !p || jstr(r, "last_run", col_text(st, 8)) || jnum(p, "k", sqlite3_column_double(st, 0)) ||
              jnum(p, "threshold", *threshold) || jnum(p, "benchmark_threshold", *bthreshold) ||
              jstr(p, "benchmark_rule", col_text(st, 3)) || jstr(p, "keep_rule", col_text(st, 4)) ||
              jcol_num(p, "phash_distance", st, 5) || jstr(p, "index", col_text(st, 6)) ||
              jstr(p, "fingerprint", col_text(st, 7));
    sqlite3_reset(st);
    return bad ? (p ? -1 : oom()) : 0;
}

static int pool_report(catalog *c, int64_t model, cJSON *r)
{
    int64_t v[4], undecided = 0;
    if (query_ints(c,
                   "SELECT count(*), total(decision = 'kept'), total(decision = 'duplicate'),"
                   " total(decision = 'benchmark') FROM dedup_decisions WHERE model_id = ?1",
                   model, 0, v, 4) != 0 ||
        query_ints(c,
                   "SELECT count(*) FROM embeddings e WHERE e.model_id = ?1"
                   " AND EXISTS (SELECT 1 FROM members m JOIN collections col ON col.id = m.collection_id"
                   "             WHERE m.image_id = e.image_id AND col.role = 'pool')"
                   " AND NOT EXISTS (SELECT 1 FROM dedup_decisions d"
                   "                 WHERE d.model_id = ?1 AND d.image_id = e.image_id)",
                   model, 0, &undecided, 1) != 0)
        return -1;
    cJSON *p = cJSON_AddObjectToObject(r, "pool");
    if (!p)
        return oom();
    return jnum(p, "decided", (double)v[0]) || jnum(p, "kept", (double)v[1]) ||
                   jnum(p, "duplicate", (double)v[2]) || jnum(p, "benchmark", (double)v[3]) ||
                   jnum(p, "removed", (double)(v[2] + v[3])) || jnum(p, "undecided", (double)undecided)
               ? -1
               : 0;
}

/* ---- nearest neighbours (dedup_nearest, catalog-004.sql) ---- */

void audit_flag_thresholds(double t, double *out, int32_t *n)
{
    int32_t k = 0;
    for (int i = -AUDIT_FLAG_BELOW; i <= AUDIT_FLAG_ABOVE; i++) {
        double v = i == 0 ? t : round((t + 0.05 * i) * 1e9) / 1e9;
        if (v >= -1.0 && v < 1.0)
            out[k++] = v;
    }
    *n = k;
}

/* o.nearest for collection coll (0: the pool) of model: {images, min_sim, max_sim, histogram, flagged}. */
static int nearest_report(catalog *c, int64_t model, int64_t coll, double t, cJSON *o)
{
    cJSON *nr = cJSON_AddObjectToObject(o, "nearest");
    if (!nr)
        return oom();
    sqlite3_stmt *st = catalog_stmt(c, "SELECT count(*), min(sim), max(sim) FROM dedup_nearest"
                                       " WHERE model_id = ?1 AND collection_id = ?2");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, model);
    sqlite3_bind_int64(st, 2, coll);
    if (sqlite3_step(st) != SQLITE_ROW)
        return catalog_step_fail(c, st);
    int64_t n = sqlite3_column_int64(st, 0);
    double lo = n > 0 ? sqlite3_column_double(st, 1) : t;
    int bad = jnum(nr, "images", (double)n) || jcol_num(nr, "min_sim", st, 1) || jcol_num(nr, "max_sim", st, 2);
    sqlite3_reset(st);
    if (bad)
        return -1;
    double edges[AUDIT_BINS_MAX + 1], thr[AUDIT_FLAG_MAX];
    int64_t counts[AUDIT_BINS_MAX] = {0}, flagged[AUDIT_FLAG_MAX] = {0};
    int32_t nb, nt;
    audit_hist_bins(lo, t, edges, &nb);
    audit_flag_thresholds(t, thr, &nt);
    st = catalog_stmt(c, "SELECT sim FROM dedup_nearest WHERE model_id = ?1 AND collection_id = ?2");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, model);
    sqlite3_bind_int64(st, 2, coll);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        double v = sqlite3_column_double(st, 0);
        int32_t i = audit_bin_of(edges, nb, v);
        if (i >= 0)
            counts[i]++;
        for (int32_t j = 0; j < nt; j++)
            flagged[j] += v > thr[j];
    }
    if (rc != SQLITE_DONE)
        return catalog_step_fail(c, st);
    sqlite3_reset(st);
    if (jadd(nr, "histogram", hist_obj(edges, nb, counts)))
        return -1;
    cJSON *fl = cJSON_AddArrayToObject(nr, "flagged");
    if (!fl)
        return oom();
    for (int32_t j = 0; j < nt; j++) {
        cJSON *f = cJSON_CreateObject();
        if (!f || !cJSON_AddItemToArray(fl, f)) {
            cJSON_Delete(f);
            return oom();
        }
        if (jnum(f, "threshold", thr[j]) || jnum(f, "images", (double)flagged[j]) ||
            (thr[j] == t && !cJSON_AddTrueToObject(f, "used")))
            return -1;
    }
    return 0;
}

/* ---- benchmarks ---- */

/* The benchmark removals of model ?1 from collection ?2, one pair a row (image_id, bench_image_id, bench_sim,
 * bench_via_image_id, component) for bench_pair_row; pair_lists adds the order and LIMIT ?3. */
#define BENCH_PAIRS_SQL                                                                                        \
    "SELECT image_id, bench_image_id, bench_sim, bench_via_image_id, component FROM dedup_decisions"          \
    " WHERE model_id = ?1 AND decision = 'benchmark' AND bench_collection_id = ?2"

static int bench_pair_row(catalog *c, sqlite3_stmt *st, cJSON *o, void *ctx)
{
    pair_ctx *pc = ctx;
    int64_t img = sqlite3_column_int64(st, 0), via = sqlite3_column_int64(st, 3);
    /* image_obj reuses one cached statement, distinct from st. */
    if (jnum(o, "rank", (double)pc->rank) || jcol_num(o, "sim", st, 2) || jadd(o, "image", image_obj(c, img, 0)) ||
        jadd(o, "ref", image_obj(c, sqlite3_column_int64(st, 1), pc->bench)) ||
        jadd(o, "via", image_obj(c, via != img ? via : 0, 0)) ||
        jnum(o, "component", (double)sqlite3_column_int64(st, 4)))
        return -1;
    pc->rank += pc->dir;
    return 0;
}


static int benchmark_report(catalog *c, int64_t model, int64_t bench, double t, int32_t top, cJSON *o)
{
    int64_t images[2], removed[2], matches[3];
    if (query_ints(c,
                   "SELECT count(DISTINCT m.image_id), count(DISTINCT e.image_id) FROM members m"
                   " LEFT JOIN embeddings e ON e.image_id = m.image_id AND e.model_id = ?1"
                   " WHERE m.collection_id = ?2",
                   model, bench, images, 2) != 0 ||
        query_ints(c,
                   "SELECT count(*), total(bench_via_image_id = image_id) FROM dedup_decisions"
                   " WHERE model_id = ?1 AND decision = 'benchmark' AND bench_collection_id = ?2",
                   model, bench, removed, 2) != 0 ||
        query_ints(c,
                   "SELECT count(*), count(DISTINCT image_id), count(DISTINCT bench_image_id)"
                   " FROM dedup_benchmark_matches WHERE model_id = ?1 AND collection_id = ?2",
                   model, bench, matches, 3) != 0)
        return -1;
    if (jnum(o, "images", (double)images[0]) || jnum(o, "embedded", (double)images[1]) ||
        jnum(o, "threshold", t) || jnum(o, "removed", (double)removed[0]) ||
        jnum(o, "removed_direct", (double)removed[1]) ||
        jnum(o, "removed_component", (double)(removed[0] - removed[1])) || jnum(o, "matches", (double)matches[0]) ||
        jnum(o, "matched_pool_images", (double)matches[1]) || jnum(o, "matched_benchmark_images", (double)matches[2]))
        return -1;

    /* Bands of the similarity that removed each image. */
    double edges[AUDIT_BANDS_MAX + 1];
    int64_t counts[AUDIT_BANDS_MAX] = {0};
    int32_t nb;
    audit_bands(t, edges, &nb);
    sqlite3_stmt *st = catalog_stmt(c, "SELECT bench_sim FROM dedup_decisions WHERE model_id = ?1"
                                       " AND decision = 'benchmark' AND bench_collection_id = ?2");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, model);
    sqlite3_bind_int64(st, 2, bench);
    int rc;
    int64_t below = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int32_t i = audit_bin_of(edges, nb, sqlite3_column_double(st, 0));
        if (i >= 0)
            counts[i]++;
        else
            below++;
    }
    if (rc != SQLITE_DONE)
        return catalog_step_fail(c, st);
    sqlite3_reset(st);
    cJSON *bands = cJSON_AddArrayToObject(o, "bands");
    if (!bands)
        return oom();
    for (int32_t i = 0; i < nb; i++) {
        cJSON *b = cJSON_CreateObject();
        if (!b || !cJSON_AddItemToArray(bands, b)) {
            cJSON_Delete(b);
            return oom();
        }
        if (jnum(b, "lo", round(edges[i] * 1e9) / 1e9) || jnum(b, "hi", round(edges[i + 1] * 1e9) / 1e9) ||
            jnum(b, "removed", (double)counts[i]))
            return -1;
    }
    if (below > 0 && jnum(o, "removed_below_threshold", (double)below)) /* only from an inconsistent catalog */
        return -1;
    if (jadd(o, "histogram",
             hist_query(c,
                        "SELECT min(bench_sim) FROM dedup_decisions WHERE model_id = ?1"
                        " AND decision = 'benchmark' AND bench_collection_id = ?2",
                        "SELECT bench_sim FROM dedup_decisions WHERE model_id = ?1"
                        " AND decision = 'benchmark' AND bench_collection_id = ?2",
                        model, bench, t)))
        return -1;

    if (nearest_report(c, model, bench, t, o) != 0)
        return -1;
    return pair_lists(c, o, BENCH_PAIRS_SQL " ORDER BY bench_sim DESC, image_id LIMIT ?3",
                      BENCH_PAIRS_SQL " ORDER BY bench_sim ASC, image_id DESC LIMIT ?3", model, bench, removed[0], top,
                      bench_pair_row);
}

static int benchmark_row(catalog *c, sqlite3_stmt *st, cJSON *o, void *ctx)
{
    (void)c;
    (void)ctx;
    return jstr(o, "name", col_text(st, 1)) || jnum(o, "collection_id", (double)sqlite3_column_int64(st, 0)) ? -1 : 0;
}

static int benchmarks_report(catalog *c, int64_t model, double t, int32_t top, cJSON *r)
{
    cJSON *arr = cJSON_AddArrayToObject(r, "benchmarks");
    if (!arr)
        return oom();
    /* Ids first: the per-benchmark queries reuse cached statements, so this one must be finished. */
    if (query_rows(c, "SELECT id, name FROM collections WHERE role = 'benchmark' ORDER BY name", NULL, 0, arr,
                   benchmark_row, NULL) != 0)
        return -1;
    cJSON *o;
    cJSON_ArrayForEach(o, arr)
    {
        int64_t id = (int64_t)cJSON_GetObjectItemCaseSensitive(o, "collection_id")->valuedouble;
        if (benchmark_report(c, model, id, t, top, o) != 0)
            return lvd_fail_ctx("benchmark %s", cJSON_GetObjectItemCaseSensitive(o, "name")->valuestring);
    }
    return 0;
}

/* ---- self-dedup ---- */

static int component_row(catalog *c, sqlite3_stmt *st, cJSON *o, void *ctx)
{
    (void)ctx;
    return jnum(o, "component", (double)sqlite3_column_int64(st, 0)) ||
                   jnum(o, "size", (double)sqlite3_column_int64(st, 1)) ||
                   jadd(o, "kept", image_obj(c, sqlite3_column_int64(st, 2), 0)) ||
                   jnum(o, "removed_duplicate", (double)sqlite3_column_int64(st, 3)) ||
                   jnum(o, "removed_benchmark", (double)sqlite3_column_int64(st, 4)) ||
                   jcol_num(o, "weakest_sim", st, 5) || jstr(o, "weakest_kind", col_text(st, 6)) ||
                   jadd(o, "weakest_a", image_obj(c, sqlite3_column_int64(st, 7), 0)) ||
                   jadd(o, "weakest_b", image_obj(c, sqlite3_column_int64(st, 8), 0)) ||
                   jcol_num(o, "strongest_sim", st, 9)
               ? -1
               : 0;
}

/* Components of more than one image of model ?1, as component_row reads them; callers add the order and
 * LIMIT ?2. */
#define COMPONENTS_SQL                                                                                         \
    "SELECT component, size, kept_image_id, removed_duplicate, removed_benchmark, weakest_sim,"                \
    " weakest_kind, weakest_a, weakest_b, strongest_sim FROM dedup_components WHERE model_id = ?1 AND size > 1"

static int self_pair_row(catalog *c, sqlite3_stmt *st, cJSON *o, void *ctx)
{
    pair_ctx *pc = ctx;
    if (jnum(o, "rank", (double)pc->rank) || jcol_num(o, "sim", st, 2) ||
        jadd(o, "image", image_obj(c, sqlite3_column_int64(st, 0), 0)) ||
        jadd(o, "ref", image_obj(c, sqlite3_column_int64(st, 1), 0)) ||
        jadd(o, "kept", image_obj(c, sqlite3_column_int64(st, 3), 0)) || jcol_num(o, "kept_sim", st, 4) ||
        jstr(o, "kind", col_text(st, 5)) || jnum(o, "component", (double)sqlite3_column_int64(st, 6)))
        return -1;
    pc->rank += pc->dir;
    return 0;
}

/* The duplicates removed by self-dedup of model ?1, one pair a row for self_pair_row; pair_lists adds the order
 * and LIMIT ?2. */
#define SELF_PAIRS_SQL                                                                                         \
    "SELECT image_id, edge_image_id, edge_sim, kept_image_id, kept_sim, edge_kind, component"                 \
    " FROM dedup_decisions WHERE model_id = ?1 AND decision = 'duplicate'"


/* Adds {min, max, components, images} to arr. */
static int size_bucket(cJSON *arr, int64_t lo, int64_t hi, int64_t comps, int64_t imgs)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddItemToArray(arr, o)) {
        cJSON_Delete(o);
        return oom();
    }
    return jnum(o, "min", (double)lo) || jnum(o, "max", (double)hi) || jnum(o, "components", (double)comps) ||
                   jnum(o, "images", (double)imgs)
               ? -1
               : 0;
}

/* Component sizes in power-of-two buckets: 1, 2, 3-4, 5-8, ... (only buckets that hold components). */
static int sizes_report(catalog *c, int64_t model, cJSON *s)
{
    cJSON *arr = cJSON_AddArrayToObject(s, "sizes");
    if (!arr)
        return oom();
    sqlite3_stmt *st = catalog_stmt(c, "SELECT size, count(*) FROM dedup_components WHERE model_id = ?1"
                                       " GROUP BY size ORDER BY size");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, model);
    int rc;
    int64_t lo = 0, hi = 0, comps = 0, imgs = 0; /* the open bucket; none while comps == 0 */
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t size = sqlite3_column_int64(st, 0), n = sqlite3_column_int64(st, 1);
        if (comps > 0 && size > hi) {
            if (size_bucket(arr, lo, hi, comps, imgs) != 0) {
                sqlite3_reset(st);
                return -1;
            }
            comps = imgs = 0;
        }
        if (comps == 0) {
            lo = hi = 1;
            while (size > hi) {
                lo = hi + 1;
                hi *= 2;
            }
        }
        comps += n;
        imgs += n * size;
    }
    if (rc != SQLITE_DONE)
        return catalog_step_fail(c, st);
    sqlite3_reset(st);
    return comps > 0 ? size_bucket(arr, lo, hi, comps, imgs) : 0;
}

static int self_report(catalog *c, int64_t model, double t, int32_t top, cJSON *r)
{
    cJSON *s = cJSON_AddObjectToObject(r, "self");
    if (!s)
        return oom();
    int64_t v[4], dup[2];
    if (query_ints(c,
                   "SELECT count(*), total(size > 1), max(size), total(size) FROM dedup_components"
                   " WHERE model_id = ?1",
                   model, 0, v, 4) != 0)
        return -1;
    sqlite3_stmt *st = catalog_stmt(c, "SELECT count(*), total(kept_sim IS NOT NULL AND kept_sim <= ?2)"
                                       " FROM dedup_decisions WHERE model_id = ?1 AND decision = 'duplicate'");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, model);
    sqlite3_bind_double(st, 2, t);
    if (sqlite3_step(st) != SQLITE_ROW)
        return catalog_step_fail(c, st);
    dup[0] = sqlite3_column_int64(st, 0);
    dup[1] = sqlite3_column_int64(st, 1);
    sqlite3_reset(st);
    if (jnum(s, "threshold", t) || jnum(s, "components", (double)v[0]) || jnum(s, "multi_components", (double)v[1]) ||
        jnum(s, "largest_size", (double)v[2]) || jnum(s, "images", (double)v[3]) || jnum(s, "removed", (double)dup[0]) ||
        jnum(s, "chained", (double)dup[1]) || sizes_report(c, model, s) != 0)
        return -1;
    if (jadd(s, "histogram",
             hist_query(c, "SELECT min(edge_sim) FROM dedup_decisions WHERE model_id = ?1 AND decision = 'duplicate'",
                        "SELECT edge_sim FROM dedup_decisions WHERE model_id = ?1 AND decision = 'duplicate'", model,
                        0, t)) ||
        jadd(s, "kept_histogram",
             hist_query(c, "SELECT min(kept_sim) FROM dedup_decisions WHERE model_id = ?1 AND decision = 'duplicate'",
                        "SELECT kept_sim FROM dedup_decisions WHERE model_id = ?1 AND decision = 'duplicate'", model,
                        0, t)))
        return -1;
    if (nearest_report(c, model, 0, t, s) != 0)
        return -1;
    cJSON *largest = cJSON_AddArrayToObject(s, "largest"), *weakest = largest ? cJSON_AddArrayToObject(s, "weakest") : NULL;
    if (!weakest)
        return oom();
    if (query_rows(c, COMPONENTS_SQL " ORDER BY size DESC, component LIMIT ?2", (int64_t[]){model, top}, 2, largest,
                   component_row, NULL) != 0 ||
        query_rows(c, COMPONENTS_SQL " AND weakest_sim IS NOT NULL ORDER BY weakest_sim, component LIMIT ?2",
                   (int64_t[]){model, top}, 2, weakest, component_row, NULL) != 0)
        return -1;
    return pair_lists(c, s, SELF_PAIRS_SQL " ORDER BY edge_sim DESC, image_id LIMIT ?2",
                      SELF_PAIRS_SQL " ORDER BY edge_sim ASC, image_id DESC LIMIT ?2", model, 0, dup[0], top,
                      self_pair_row);
}

/* ---- retrieval (catalog-006.sql) ---- */

/* A count column of a retrieve_rows row: null for a skipped row, whose columns still hold the counts of an
 * earlier selection that select.c dropped with the row's selections. */
static int rrow_count(cJSON *o, const char *key, sqlite3_stmt *st, int i, int skipped)
{
    if (skipped)
        return cJSON_AddNullToObject(o, key) ? 0 : oom();
    return jcol_num(o, key, st, i);
}

/* One retrieve_rows row (RROWS_SQL's columns) as a row object, without the per-row lists (rrow_details). */
static int rrow_fill(catalog *c, sqlite3_stmt *st, cJSON *o, void *ctx)
{
    (void)c;
    (void)ctx;
    const char *method = col_text(st, 5), *status = col_text(st, 14);
    int skipped = status && strcmp(status, "skipped") == 0;
    int sample = method && strcmp(method, "sample") == 0, cluster = method && strcmp(method, "cluster") == 0;
    if (jnum(o, "id", (double)sqlite3_column_int64(st, 0)) || jstr(o, "name", col_text(st, 1)) ||
        jstr(o, "task", col_text(st, 2)) || jstr(o, "dataset", col_text(st, 3)) || jstr(o, "split", col_text(st, 4)) ||
        jstr(o, "method", method) || jstr(o, "collection", col_text(st, 6)) || jcol_num(o, "collection_id", st, 7) ||
        jstr(o, "status", status) || jstr(o, "reason", col_text(st, 15)))
        return -1;
    if (sample && jcol_num(o, "k", st, 8))
        return -1;
    if (cluster && (jcol_num(o, "clusters", st, 9) || jcol_num(o, "per_cluster", st, 10) ||
                    jcol_num(o, "cap", st, 11) || jcol_num(o, "min_seeds", st, 12) || jcol_num(o, "kmeans_id", st, 13)))
        return -1;
    return rrow_count(o, "seeds", st, 16, skipped) || rrow_count(o, "retrieved", st, 17, skipped) ||
                   rrow_count(o, "collisions", st, 18, skipped) || rrow_count(o, "unique", st, 19, skipped) ||
                   rrow_count(o, "capped", st, 20, skipped) || rrow_count(o, "final", st, 21, skipped) ||
                   jcol_num(o, "paper_seeds", st, 22) || jcol_num(o, "paper_final", st, 23) ||
                   jcol_num(o, "selected_gen", st, 24)
               ? -1
               : 0;
}

/* The model's (?1) registry rows, in the order first recorded, with the columns rrow_fill reads. */
#define RROWS_SQL                                                                                              \
    "SELECT id, name, task, dataset, split, method, collection, collection_id, k, clusters, per_cluster, cap,"  \
    " min_seeds, kmeans_id, status, reason, seeds, retrieved, collisions, unique_images, capped, final,"        \
    " paper_seeds, paper_final, selected_gen FROM retrieve_rows WHERE model_id = ?1 ORDER BY id"

/* A seed beside its nearest retrieved image (retrieve_hits rank 0): seed_image_id, image_id, sim, and the
 * collisions of that image's selection. ctx: the rank counter and the row's collection (the seed's key). */
static int seed_pair_row(catalog *c, sqlite3_stmt *st, cJSON *o, void *ctx)
{
    pair_ctx *pc = ctx;
    if (jnum(o, "rank", (double)pc->rank) || jcol_num(o, "sim", st, 2) ||
        jadd(o, "seed", image_obj(c, sqlite3_column_int64(st, 0), pc->bench)) ||
        jadd(o, "image", image_obj(c, sqlite3_column_int64(st, 1), 0)) || jcol_num(o, "collisions", st, 3))
        return -1;
    pc->rank += pc->dir;
    return 0;
}

/* An image of a chosen cluster: image_id, rank, sim (to the centroid). */
static int cluster_image_row(catalog *c, sqlite3_stmt *st, cJSON *o, void *ctx)
{
    (void)ctx;
    return jcol_num(o, "rank", st, 1) || jcol_num(o, "sim", st, 2) ||
                   jadd(o, "image", image_obj(c, sqlite3_column_int64(st, 0), 0))
               ? -1
               : 0;
}

/* ctx of chosen_cluster_row: the row and its k-means. */
typedef struct cluster_ctx {
    int64_t row, kmeans;
} cluster_ctx;

/* A chosen cluster (cluster, size, seeds, taken, kept) and its images nearest the centroid. */
static int chosen_cluster_row(catalog *c, sqlite3_stmt *st, cJSON *o, void *ctx)
{
    const cluster_ctx *cc = ctx;
    int64_t cluster = sqlite3_column_int64(st, 0);
    if (jnum(o, "cluster", (double)cluster) || jnum(o, "size", (double)sqlite3_column_int64(st, 1)) ||
        jnum(o, "seeds", (double)sqlite3_column_int64(st, 2)) ||
        jnum(o, "taken", (double)sqlite3_column_int64(st, 3)) ||
        jnum(o, "kept", (double)sqlite3_column_int64(st, 4)))
        return -1;
    cJSON *imgs = cJSON_AddArrayToObject(o, "images");
    if (!imgs)
        return oom();
    /* Walks the cluster's assignments in the (kmeans, cluster, sim) index order and keeps those the row
     * selected: a few index steps per image, where filtering the row's selections by cluster would read them
     * all (up to the row's cap) for every cluster listed. */
    return query_rows(c,
                      "SELECT a.image_id, s.rank, a.sim FROM retrieve_assign a JOIN retrieve_selections s"
                      " ON s.row_id = ?1 AND s.image_id = a.image_id AND s.cluster = a.cluster"
                      " WHERE a.kmeans_id = ?2 AND a.cluster = ?3 ORDER BY a.sim DESC, a.image_id LIMIT ?4",
                      (int64_t[]){cc->row, cc->kmeans, cluster, AUDIT_CLUSTER_IMAGES}, 4, imgs, cluster_image_row,
                      NULL);
}

/* The similarity summary and lists of one row object o (filled by rrow_fill): see report.h. */
static int rrow_details(catalog *c, cJSON *o, int32_t top)
{
    int64_t row = audit_int(o, "id");
    const char *method = audit_text(o, "method"), *status = audit_text(o, "status");
    int sample = method && strcmp(method, "sample") == 0, cluster = method && strcmp(method, "cluster") == 0;
    int skipped = status && strcmp(status, "skipped") == 0;
    if (skipped || !(sample || cluster))
        return cJSON_AddNullToObject(o, "histogram") ? 0 : oom();
    sqlite3_stmt *st = catalog_stmt(c, "SELECT count(*), min(sim), avg(sim), max(sim) FROM retrieve_selections"
                                       " WHERE row_id = ?1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, row);
    if (sqlite3_step(st) != SQLITE_ROW)
        return catalog_step_fail(c, st);
    int64_t n = sqlite3_column_int64(st, 0);
    int bad = jnum(o, "selections", (double)n) || jcol_num(o, "sim_min", st, 1) || jcol_num(o, "sim_mean", st, 2) ||
              jcol_num(o, "sim_max", st, 3);
    sqlite3_reset(st);
    if (bad)
        return -1;
    /* No threshold here: bins from the lowest similarity up to 1 (t = 1 never falls on a bin edge). */
    if (n == 0) {
        if (!cJSON_AddNullToObject(o, "histogram"))
            return oom();
    } else if (jadd(o, "histogram",
                    hist_query(c, "SELECT min(sim) FROM retrieve_selections WHERE row_id = ?1",
                               "SELECT sim FROM retrieve_selections WHERE row_id = ?1", row, 0, 1.0)) != 0) {
        return -1;
    }
    if (sample) {
        int64_t seeds = 0;
        if (query_ints(c, "SELECT count(*) FROM retrieve_hits WHERE row_id = ?1 AND rank = 0", row, 0, &seeds, 1) ||
            jnum(o, "seeds_with_hits", (double)seeds))
            return -1;
        cJSON *tp = cJSON_AddArrayToObject(o, "top_pairs");
        if (!tp)
            return oom();
        pair_ctx pc = {1, 1, audit_int(o, "collection_id")};
        return query_rows(c,
                          "SELECT h.seed_image_id, h.image_id, h.sim, s.collisions FROM retrieve_hits h"
                          " LEFT JOIN retrieve_selections s ON s.row_id = h.row_id AND s.image_id = h.image_id"
                          " WHERE h.row_id = ?1 AND h.rank = 0 ORDER BY h.sim DESC, h.seed_image_id LIMIT ?2",
                          (int64_t[]){row, top}, 2, tp, seed_pair_row, &pc);
    }
    int64_t v[3];
    if (query_ints(c,
                   "SELECT count(*), total(chosen), total(CASE WHEN chosen THEN seeds ELSE 0 END)"
                   " FROM retrieve_clusters WHERE row_id = ?1",
                   row, 0, v, 3) != 0 ||
        jnum(o, "clusters_with_seeds", (double)v[0]) || jnum(o, "chosen", (double)v[1]) ||
        jnum(o, "seeds_in_chosen", (double)v[2]))
        return -1;
    cJSON *cl = cJSON_AddArrayToObject(o, "chosen_clusters");
    if (!cl)
        return oom();
    cluster_ctx cc = {row, audit_int(o, "kmeans_id")};
    return query_rows(c,
                      "SELECT cluster, size, seeds, taken, kept FROM retrieve_clusters WHERE row_id = ?1 AND chosen = 1"
                      " ORDER BY seeds DESC, cluster LIMIT ?2",
                      (int64_t[]){row, top}, 2, cl, chosen_cluster_row, &cc);
}

/* r.retrieval.run: the model's latest retrieve_runs row, or null. */
static int rrun_report(catalog *c, int64_t model, cJSON *r)
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT rr.id, rr.created_at, rr.pool_size, rr.pool_gen, rr.registry_path,"
                                       " rr.registry_sha256, rr.scale, dm.name, rr.params FROM retrieve_runs rr"
                                       " LEFT JOIN models dm ON dm.id = rr.dedup_model_id"
                                       " WHERE rr.model_id = ?1 ORDER BY rr.id DESC LIMIT 1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, model);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(st);
        return cJSON_AddNullToObject(r, "run") ? 0 : oom();
    }
    if (rc != SQLITE_ROW)
        return catalog_step_fail(c, st);
    cJSON *o = cJSON_AddObjectToObject(r, "run");
    int bad = !o || jnum(o, "id", (double)sqlite3_column_int64(st, 0)) || jstr(o, "created_at", col_text(st, 1)) ||
              jnum(o, "pool_size", (double)sqlite3_column_int64(st, 2)) ||
              jnum(o, "pool_gen", (double)sqlite3_column_int64(st, 3)) || jstr(o, "registry_path", col_text(st, 4)) ||
              jstr(o, "registry_sha256", col_text(st, 5)) || jstr(o, "scale", col_text(st, 6)) ||
              jstr(o, "dedup_model", col_text(st, 7));
    if (!bad) {
        /* The run's options as lvd-retrieve recorded them (JSON); kept as text if they do not parse. */
        const char *params = col_text(st, 8);
        cJSON *p = params ? cJSON_Parse(params) : NULL;
        bad = p ? jadd(o, "params", p) : jstr(o, "params", params);
    }
    sqlite3_reset(st);
    return bad ? (o ? -1 : oom()) : 0;
}

/* r.retrieval.pool: the pool now (retrieve_state), or null. */
static int rpool_report(catalog *c, int64_t model, cJSON *r)
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT s.pool_size, s.gen, dm.name, s.updated_at FROM retrieve_state s"
                                       " LEFT JOIN models dm ON dm.id = s.dedup_model_id WHERE s.model_id = ?1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, model);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(st);
        return cJSON_AddNullToObject(r, "pool") ? 0 : oom();
    }
    if (rc != SQLITE_ROW)
        return catalog_step_fail(c, st);
    cJSON *o = cJSON_AddObjectToObject(r, "pool");
    int bad = !o || jnum(o, "size", (double)sqlite3_column_int64(st, 0)) ||
              jnum(o, "generation", (double)sqlite3_column_int64(st, 1)) || jstr(o, "dedup_model", col_text(st, 2)) ||
              jstr(o, "updated_at", col_text(st, 3));
    sqlite3_reset(st);
    return bad ? (o ? -1 : oom()) : 0;
}

/* r.retrieval.totals (report.h). Skipped rows count for rows and skipped only: their recorded final counts
 * belong to selections that are gone. */
static int rtotals_report(catalog *c, int64_t model, cJSON *r)
{
    int64_t n[4], fin[4], distinct = 0;
    if (query_ints(c,
                   "SELECT count(*), total(status = 'done'), total(status = 'pending'), total(status = 'skipped')"
                   " FROM retrieve_rows WHERE model_id = ?1",
                   model, 0, n, 4) != 0 ||
        query_ints(c,
                   "SELECT total(CASE WHEN method = 'as_is' THEN final END), total(CASE WHEN method = 'sample'"
                   " THEN final END), total(CASE WHEN method = 'cluster' THEN final END), total(paper_final)"
                   " FROM retrieve_rows WHERE model_id = ?1 AND status <> 'skipped'",
                   model, 0, fin, 4) != 0 ||
        query_ints(c,
                   "SELECT count(DISTINCT s.image_id) FROM retrieve_selections s JOIN retrieve_rows r"
                   " ON r.id = s.row_id WHERE r.model_id = ?1 AND r.status <> 'skipped'",
                   model, 0, &distinct, 1) != 0)
        return -1;
    cJSON *t = cJSON_AddObjectToObject(r, "totals");
    if (!t)
        return oom();
    if (jnum(t, "rows", (double)n[0]) || jnum(t, "done", (double)n[1]) || jnum(t, "pending", (double)n[2]) ||
        jnum(t, "skipped", (double)n[3]) || jnum(t, "final", (double)(fin[0] + fin[1] + fin[2])))
        return -1;
    cJSON *m = cJSON_CreateObject();
    if (!m)
        return oom();
    if (jadd(t, "final_by_method", m)) /* m is freed when it cannot be added */
        return -1;
    return jnum(m, "as_is", (double)fin[0]) || jnum(m, "sample", (double)fin[1]) ||
                   jnum(m, "cluster", (double)fin[2]) ||
                   jnum(t, "distinct_images", (double)distinct) || jnum(t, "paper_final", (double)fin[3])
               ? -1
               : 0;
}

/* r.retrieval of model (named name), inside the report's read transaction. */
static int retrieval_report(catalog *c, int64_t model, const char *name, int32_t top, cJSON *r)
{
    cJSON *o = cJSON_AddObjectToObject(r, "retrieval");
    if (!o)
        return oom();
    int64_t runs = 0;
    if (jstr(o, "model", name) || jnum(o, "model_id", (double)model) ||
        query_ints(c, "SELECT count(*) FROM retrieve_runs WHERE model_id = ?1", model, 0, &runs, 1) != 0 ||
        jnum(o, "runs", (double)runs) || rrun_report(c, model, o) != 0 || rpool_report(c, model, o) != 0 ||
        rtotals_report(c, model, o) != 0)
        return -1;
    cJSON *rows = cJSON_AddArrayToObject(o, "rows");
    if (!rows)
        return oom();
    /* The rows first, then their lists, so that no statement of the list is still stepping. */
    if (query_rows(c, RROWS_SQL, (int64_t[]){model}, 1, rows, rrow_fill, NULL) != 0)
        return -1;
    cJSON *row;
    cJSON_ArrayForEach(row, rows)
    {
        if (rrow_details(c, row, top) != 0)
            return lvd_fail_ctx("retrieval row %s", audit_text(row, "name"));
    }
    return 0;
}

cJSON *audit_report(catalog *c, int64_t model_id, const char *model, int64_t retrieve_id, const char *retrieve_model,
                    int32_t top)
{
    if (top < 0)
        top = 0;
    /* One read transaction: every number of the report comes from the same committed state. */
    if (catalog_exec(c, "BEGIN") != 0)
        return NULL;
    cJSON *r = cJSON_CreateObject();
    double t = 0, bt = 0;
    int bad = !r || jstr(r, "catalog", catalog_path(c)) || jstr(r, "model", model);
    if (!bad && model_id > 0)
        bad = jnum(r, "model_id", (double)model_id) || jnum(r, "top", top) ||
              params_report(c, model_id, r, &t, &bt) != 0 || pool_report(c, model_id, r) != 0 ||
              benchmarks_report(c, model_id, bt, top, r) != 0 || self_report(c, model_id, t, top, r) != 0;
    else if (!bad)
        bad = (cJSON_AddNullToObject(r, "model_id") ? 0 : oom()) || jnum(r, "top", top);
    if (!bad && retrieve_id > 0)
        bad = retrieval_report(c, retrieve_id, retrieve_model, top, r) != 0;
    if (bad) {
        if (!r)
            oom();
        cJSON_Delete(r);
        catalog_exec(c, "ROLLBACK");
        return NULL;
    }
    catalog_exec(c, "COMMIT");
    return r;
}

/* ---- reading the report ---- */

const cJSON *audit_get(const cJSON *o, const char *key) { return cJSON_GetObjectItemCaseSensitive(o, key); }

double audit_num(const cJSON *o, const char *key)
{
    const cJSON *v = audit_get(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

int64_t audit_int(const cJSON *o, const char *key)
{
    const cJSON *v = audit_get(o, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

const char *audit_text(const cJSON *o, const char *key)
{
    const cJSON *v = audit_get(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- CSV ---- */

/* One RFC 4180 field: quoted when it holds a comma, quote, CR or LF (or leading/trailing space). */
static void csv_field(FILE *f, const char *s, int last)
{
    if (!s)
        s = "";
    size_t n = strlen(s);
    if (strpbrk(s, ",\"\r\n") || (n && (s[0] == ' ' || s[n - 1] == ' '))) {
        fputc('"', f);
        for (const char *p = s; *p; p++) {
            if (*p == '"')
                fputc('"', f);
            fputc(*p, f);
        }
        fputc('"', f);
    } else {
        fputs(s, f);
    }
    fputs(last ? "\r\n" : ",", f);
}

int audit_csv(catalog *c, int64_t model_id, FILE *f, int64_t *rows)
{
    *rows = 0;
    fputs("image_key,collection,reason,component,ref_key,ref_collection,similarity,ref_similarity,cause_key,"
          "image_sha256,ref_sha256\r\n",
          f);
    /* The removals in one snapshot: ids first (small rows), then keys per row. A read transaction keeps the
     * list and the lookups consistent while a writer commits. */
    if (catalog_exec(c, "BEGIN") != 0)
        return -1;
    sqlite3_stmt *st = catalog_stmt(c, "SELECT image_id, reason, component, ref_image_id, ref_sim,"
                                       " cause_image_id, cause_sim, bench_collection_id FROM dedup_removals"
                                       " WHERE model_id = ?1 ORDER BY reason, image_id");
    if (!st) {
        catalog_exec(c, "ROLLBACK");
        return -1;
    }
    sqlite3_bind_int64(st, 1, model_id);
    int rc, bad = 0;
    while (!bad && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *reason = col_text(st, 1);
        int is_bench = reason && strcmp(reason, "benchmark") == 0;
        int64_t bench = is_bench ? sqlite3_column_int64(st, 7) : 0;
        cJSON *img = image_obj(c, sqlite3_column_int64(st, 0), 0);
        cJSON *ref = image_obj(c, sqlite3_column_int64(st, 3), bench);
        cJSON *cause = image_obj(c, sqlite3_column_int64(st, 5), 0);
        if (!img || !ref || !cause) {
            bad = 1;
        } else {
            char comp[32], sim[32] = "", rsim[32] = "";
            snprintf(comp, sizeof comp, "%" PRId64, (int64_t)sqlite3_column_int64(st, 2));
            if (sqlite3_column_type(st, 6) != SQLITE_NULL)
                snprintf(sim, sizeof sim, "%.6f", sqlite3_column_double(st, 6));
            if (sqlite3_column_type(st, 4) != SQLITE_NULL)
                snprintf(rsim, sizeof rsim, "%.6f", sqlite3_column_double(st, 4));
            csv_field(f, audit_text(img, "key"), 0);
            csv_field(f, audit_text(img, "collection"), 0);
            csv_field(f, reason, 0);
            csv_field(f, comp, 0);
            csv_field(f, audit_text(ref, "key"), 0);
            csv_field(f, audit_text(ref, "collection"), 0);
            csv_field(f, sim, 0);
            csv_field(f, rsim, 0);
            csv_field(f, audit_text(cause, "key"), 0);
            csv_field(f, audit_text(img, "sha256"), 0);
            csv_field(f, audit_text(ref, "sha256"), 1);
            (*rows)++;
        }
        cJSON_Delete(img);
        cJSON_Delete(ref);
        cJSON_Delete(cause);
    }
    if (!bad && rc != SQLITE_DONE) {
        catalog_step_fail(c, st);
        bad = 1;
    }
    sqlite3_reset(st);
    catalog_exec(c, bad ? "ROLLBACK" : "COMMIT");
    return bad ? -1 : 0;
}
