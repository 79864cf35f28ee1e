/* stats.c — lvd-manifest stats: what a manifest holds, per source row and method, and how big.
 *
 * Reads the SQLite file alone (mfile.h: read-only, immutable), so it works on a manifest whose shards are on
 * another machine. Every number goes into one cJSON report; --json prints it and the text is rendered from
 * it, so the two never disagree. The keys are documented in README.md ("Manifest: lvd-manifest").
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "mfile.h"

#define PROG "lvd-manifest stats"
#define TOP_PAIRS 10        /* row pairs listed by overlap */
#define HIST_FIRST 32       /* the first bucket is [0, 32) pixels; then powers of two */
#define HIST_LAST 16384     /* the last bucket is [16384, infinity) */

static const char usage[] =
    "Usage: lvd-manifest stats M.db [--json]\n"
    "Counts of a manifest: samples, shards and bytes; per source row and method the images, distinct seeds,\n"
    "collisions and images shared with other rows; samples chosen by several rows and the row pairs that\n"
    "overlap most; histograms of the working and original image sizes (longer side). Needs only M.db.\n\n"
    "  --json                  the report as JSON on stdout (keys: README.md)\n"
    "  --help\n";

typedef struct ctx {
    sqlite3 *db;
    const char *path;
} ctx;

static int oom(void) { return lvd_fail("out of memory building the stats report"); }

static int sql_fail(ctx *c) { return lvd_fail("%s: %s", c->path, sqlite3_errmsg(c->db)); }

static int prepare(ctx *c, const char *sql, sqlite3_stmt **st)
{
    return sqlite3_prepare_v2(c->db, sql, -1, st, NULL) == SQLITE_OK ? 0 : sql_fail(c);
}

/* Integers of the first row of sql into out[0..n-1] (NULL reads as 0). */
static int q_ints(ctx *c, const char *sql, int64_t *out, int n)
{
    sqlite3_stmt *st;
    if (prepare(c, sql, &st) != 0)
        return -1;
    int rc = sqlite3_step(st);
    for (int i = 0; i < n; i++)
        out[i] = rc == SQLITE_ROW ? sqlite3_column_int64(st, i) : 0;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sql_fail(c);
}

/* {text: count} from rows (text, count) of sql, in row order. */
static int q_counts(ctx *c, const char *sql, cJSON *obj)
{
    sqlite3_stmt *st;
    if (prepare(c, sql, &st) != 0)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (!cJSON_AddNumberToObject(obj, mfile_col_text(st, 0), (double)sqlite3_column_int64(st, 1))) {
            sqlite3_finalize(st);
            return oom();
        }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(c);
}

static int bucket(int64_t side)
{
    int b = 0;
    for (int64_t lo = HIST_FIRST; lo <= HIST_LAST && side >= lo; lo *= 2)
        b++;
    return b;
}

/* The size histograms: buckets [0, 32), [32, 64), ..., [16384, inf) of the longer side in pixels. */
static int histograms(ctx *c, cJSON *r)
{
    enum { NB = 11 }; /* [0,32) + 32..8192 (9 buckets) + [16384, inf) */
    int64_t work[NB] = {0}, orig[NB] = {0};
    sqlite3_stmt *st;
    if (prepare(c, "SELECT max(width, height), max(orig_width, orig_height) FROM samples", &st) != 0)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        work[bucket(sqlite3_column_int64(st, 0))]++;
        orig[bucket(sqlite3_column_int64(st, 1))]++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_fail(c);
    const char *names[2] = {"size_histogram", "orig_size_histogram"};
    int64_t *counts[2] = {work, orig};
    for (int h = 0; h < 2; h++) {
        cJSON *a = cJSON_AddArrayToObject(r, names[h]);
        if (!a)
            return oom();
        for (int i = 0; i < NB; i++) {
            cJSON *o = cJSON_CreateObject();
            if (!o || !cJSON_AddItemToArray(a, o)) {
                cJSON_Delete(o);
                return oom();
            }
            int64_t lo = i == 0 ? 0 : (int64_t)HIST_FIRST << (i - 1);
            cJSON_AddNumberToObject(o, "lo", (double)lo);
            if (i + 1 < NB)
                cJSON_AddNumberToObject(o, "hi", (double)((int64_t)HIST_FIRST << i));
            else
                cJSON_AddNullToObject(o, "hi");
            cJSON_AddNumberToObject(o, "count", (double)counts[h][i]);
        }
    }
    return 0;
}

static int rows_section(ctx *c, cJSON *r)
{
    cJSON *a = cJSON_AddArrayToObject(r, "rows");
    if (!a)
        return oom();
    sqlite3_stmt *st;
    if (prepare(c,
                "SELECT row, method, count(*), count(DISTINCT seed_key), sum(collisions),"
                " sum(CASE WHEN (SELECT count(*) FROM sample_sources o WHERE o.sample_id = s.sample_id) > 1"
                " THEN 1 ELSE 0 END) FROM sample_sources s GROUP BY row, method ORDER BY row, method",
                &st) != 0)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(a, o)) {
            cJSON_Delete(o);
            sqlite3_finalize(st);
            return oom();
        }
        int64_t images = sqlite3_column_int64(st, 2), shared = sqlite3_column_int64(st, 5);
        cJSON_AddStringToObject(o, "row", mfile_col_text(st, 0));
        cJSON_AddStringToObject(o, "method", mfile_col_text(st, 1));
        cJSON_AddNumberToObject(o, "images", (double)images);
        cJSON_AddNumberToObject(o, "seeds", (double)sqlite3_column_int64(st, 3));
        cJSON_AddNumberToObject(o, "collisions", (double)sqlite3_column_int64(st, 4));
        cJSON_AddNumberToObject(o, "shared", (double)shared);
        cJSON_AddNumberToObject(o, "exclusive", (double)(images - shared));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(c);
}

static int duplicates_section(ctx *c, cJSON *r)
{
    cJSON *d = cJSON_AddObjectToObject(r, "duplicates");
    cJSON *by = d ? cJSON_AddObjectToObject(d, "by_rows") : NULL;
    if (!by)
        return oom();
    if (q_counts(c,
                 "SELECT n, count(*) FROM (SELECT count(*) AS n FROM sample_sources GROUP BY sample_id)"
                 " GROUP BY n ORDER BY n",
                 by) != 0)
        return -1;
    int64_t multi = 0;
    cJSON *it;
    cJSON_ArrayForEach(it, by) if (atoll(it->string) > 1) multi += (int64_t)it->valuedouble;
    cJSON_AddNumberToObject(d, "in_several_rows", (double)multi);
    cJSON *pairs = cJSON_AddArrayToObject(d, "pairs");
    if (!pairs)
        return oom();
    sqlite3_stmt *st;
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT a.row, b.row, count(*) AS n FROM sample_sources a JOIN sample_sources b"
             " ON b.sample_id = a.sample_id AND b.row > a.row GROUP BY a.row, b.row ORDER BY n DESC, a.row, b.row"
             " LIMIT %d",
             TOP_PAIRS);
    if (prepare(c, sql, &st) != 0)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = cJSON_CreateObject();
        if (!o || !cJSON_AddItemToArray(pairs, o)) {
            cJSON_Delete(o);
            sqlite3_finalize(st);
            return oom();
        }
        cJSON_AddStringToObject(o, "a", mfile_col_text(st, 0));
        cJSON_AddStringToObject(o, "b", mfile_col_text(st, 1));
        cJSON_AddNumberToObject(o, "images", (double)sqlite3_column_int64(st, 2));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(c);
}

static cJSON *report(ctx *c)
{
    cJSON *r = cJSON_CreateObject();
    if (!r) {
        oom();
        return NULL;
    }
    cJSON_AddStringToObject(r, "manifest", c->path);
    cJSON *info = cJSON_AddObjectToObject(r, "info");
    static const char *const keys[] = {"name", "source", "created_at", "lvd_version", "schema_version"};
    int err = !info;
    for (size_t i = 0; !err && i < sizeof keys / sizeof keys[0]; i++) {
        char *v = NULL;
        if (mfile_info(c->db, "main", keys[i], c->path, &v) != 0) {
            err = 1;
            break;
        }
        if (v)
            cJSON_AddStringToObject(info, keys[i], v);
        else
            cJSON_AddNullToObject(info, keys[i]);
        free(v);
    }
    int64_t s[5], sh = 0, src = 0;
    if (!err)
        err = q_ints(c, "SELECT count(*), coalesce(sum(length), 0), coalesce(sum(orig_bytes), 0),"
                        " coalesce(sum(weight), 0), count(DISTINCT shard_id) FROM samples", s, 5) != 0 ||
              q_ints(c, "SELECT count(*) FROM shards", &sh, 1) != 0 ||
              q_ints(c, "SELECT count(*) FROM sample_sources", &src, 1) != 0;
    if (!err) {
        cJSON_AddNumberToObject(r, "samples", (double)s[0]);
        cJSON_AddNumberToObject(r, "sources", (double)src);
        cJSON_AddNumberToObject(r, "shards", (double)sh);
        cJSON_AddNumberToObject(r, "shards_used", (double)s[4]);
        cJSON_AddNumberToObject(r, "bytes", (double)s[1]);
        cJSON_AddNumberToObject(r, "orig_bytes", (double)s[2]);
        cJSON_AddNumberToObject(r, "weight_sum", (double)s[3]);
        cJSON *f = cJSON_AddObjectToObject(r, "formats"), *of = cJSON_AddObjectToObject(r, "orig_formats");
        err = !f || !of ||
              q_counts(c, "SELECT format, count(*) FROM samples GROUP BY format ORDER BY format", f) != 0 ||
              q_counts(c, "SELECT coalesce(orig_format, 'unknown'), count(*) FROM samples GROUP BY 1 ORDER BY 1",
                       of) != 0;
    }
    if (!err)
        err = rows_section(c, r) != 0 || duplicates_section(c, r) != 0 || histograms(c, r) != 0;
    /* What build counted but could not include (info.counts), when the manifest says. */
    if (!err) {
        char *counts = NULL;
        if (mfile_info(c->db, "main", "counts", c->path, &counts) != 0) {
            err = 1;
        } else {
            cJSON *n = counts ? cJSON_Parse(counts) : NULL;
            cJSON *w = n ? cJSON_DetachItemFromObjectCaseSensitive(n, "without_working_image") : NULL;
            if (w)
                cJSON_AddItemToObject(r, "without_working_image", w);
            else
                cJSON_AddNullToObject(r, "without_working_image");
            cJSON_Delete(n);
            free(counts);
        }
    }
    if (err) {
        cJSON_Delete(r);
        return NULL;
    }
    return r;
}

static int64_t jint(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static const char *jtext(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : "-";
}

static void print_counts(const char *title, const cJSON *o)
{
    printf("%s:", title);
    const cJSON *it;
    int first = 1;
    cJSON_ArrayForEach(it, o)
    {
        printf("%s %s %" PRId64, first ? "" : ",", it->string, (int64_t)it->valuedouble);
        first = 0;
    }
    printf("%s\n", first ? " none" : "");
}

static void print_hist(const char *title, const cJSON *a)
{
    printf("%s\n", title);
    const cJSON *it;
    cJSON_ArrayForEach(it, a)
    {
        int64_t n = jint(it, "count");
        if (!n)
            continue;
        const cJSON *hi = cJSON_GetObjectItemCaseSensitive(it, "hi");
        char range[48];
        if (cJSON_IsNumber(hi))
            snprintf(range, sizeof range, "%" PRId64 "-%" PRId64, jint(it, "lo"), (int64_t)hi->valuedouble - 1);
        else
            snprintf(range, sizeof range, "%" PRId64 "+", jint(it, "lo"));
        printf("  %-12s %10" PRId64 "\n", range, n);
    }
}

static void print_text(const cJSON *r)
{
    const cJSON *info = cJSON_GetObjectItemCaseSensitive(r, "info");
    printf("manifest %s: '%s', source %s, built %s by lvd %s (schema %s)\n", jtext(r, "manifest"),
           jtext(info, "name"), jtext(info, "source"), jtext(info, "created_at"), jtext(info, "lvd_version"),
           jtext(info, "schema_version"));
    int64_t bytes = jint(r, "bytes");
    printf("%" PRId64 " samples, %" PRId64 " source rows, %" PRId64 " shard%s, %" PRId64
           " bytes of working images (%.1f MB; originals %.1f MB), weight sum %" PRId64 "\n",
           jint(r, "samples"), jint(r, "sources"), jint(r, "shards"), jint(r, "shards") == 1 ? "" : "s", bytes,
           (double)bytes / 1e6,
           (double)jint(r, "orig_bytes") / 1e6, jint(r, "weight_sum"));
    print_counts("working formats", cJSON_GetObjectItemCaseSensitive(r, "formats"));
    print_counts("original formats", cJSON_GetObjectItemCaseSensitive(r, "orig_formats"));
    const cJSON *w = cJSON_GetObjectItemCaseSensitive(r, "without_working_image");
    if (cJSON_IsObject(w) && jint(w, "total"))
        printf("selected but without a working image (not samples): %" PRId64 "\n", jint(w, "total"));
    printf("\n%-28s %-8s %10s %8s %10s %8s %9s\n", "row", "method", "images", "seeds", "collisions", "shared",
           "exclusive");
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(r, "rows"))
    {
        printf("%-28s %-8s %10" PRId64 " %8" PRId64 " %10" PRId64 " %8" PRId64 " %9" PRId64 "\n", jtext(it, "row"),
               jtext(it, "method"), jint(it, "images"), jint(it, "seeds"), jint(it, "collisions"),
               jint(it, "shared"), jint(it, "exclusive"));
    }
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(r, "duplicates");
    printf("\nsamples chosen by several rows: %" PRId64 "\n", jint(d, "in_several_rows"));
    const cJSON *pairs = cJSON_GetObjectItemCaseSensitive(d, "pairs");
    if (cJSON_GetArraySize(pairs) > 0) {
        printf("row pairs by shared samples:\n");
        cJSON_ArrayForEach(it, pairs)
        printf("  %s + %s: %" PRId64 "\n", jtext(it, "a"), jtext(it, "b"), jint(it, "images"));
    }
    printf("\n");
    print_hist("working image size (longer side, pixels):", cJSON_GetObjectItemCaseSensitive(r, "size_histogram"));
    print_hist("original size (longer side, pixels):", cJSON_GetObjectItemCaseSensitive(r, "orig_size_histogram"));
}

int manifest_cmd_stats(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"json", no_argument, NULL, OPT_JSON}, {"help", no_argument, NULL, OPT_HELP}, {NULL, 0, NULL, 0}};
    int json = 0, opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_JSON: json = 1; break;
        case 'h':
        case OPT_HELP: fputs(usage, stdout); return EXIT_OK;
        default: cli_usage_errorf(PROG, "unknown option %.100s", argv[optind - 1]);
        }
    }
    if (optind + 1 != argc)
        cli_usage_error(PROG, optind == argc ? "the manifest M.db is required" : "one manifest at a time");
    ctx c = {.path = argv[optind]};
    if (mfile_open(c.path, &c.db, NULL) != 0) {
        log_error("%s", lvd_errmsg());
        return EXIT_FAIL;
    }
    cJSON *r = report(&c);
    int rc = EXIT_OK;
    if (!r) {
        log_error("%s", lvd_errmsg());
        rc = EXIT_FAIL;
    } else if (json) {
        char *text = cJSON_Print(r);
        if (text)
            printf("%s\n", text);
        else
            rc = EXIT_FAIL;
        cJSON_free(text);
    } else {
        print_text(r);
    }
    cJSON_Delete(r);
    sqlite3_close(c.db);
    return rc;
}
