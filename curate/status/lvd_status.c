/* lvd_status.c — lvd-status: what a work directory's catalog holds, what failed, and what needs attention.
 *
 * Read-only: the catalog is opened with CATALOG_READONLY and never created or migrated. Every query fills one
 * cJSON report; --json prints it as is and the text output is rendered from the same report, so the two
 * never disagree.
 *
 * curate/status/: lvd_status.c alone; it reads the catalog (common/catalog.h) and writes no data.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "catalog.h"
#include "err.h"
#include "lock.h"
#include "log.h"

#define PROGRAM "lvd-status"
#define TOP_ERRORS 10
#define LAST_RUNS 10
#define FAIL_RATE_NUM 3 /* a run warns when failed / attempted > 3/10 */
#define FAIL_RATE_DEN 10
#define PLACEHOLDER_HOSTS 5 /* distinct hosts serving the same bytes that make them look like a placeholder */
#define PLACEHOLDER_SHOWN 5
#define PARTS_SHOWN 4      /* part file names listed per stage in a warning */
#define TEXT_MESSAGE_MAX 160 /* bytes of an error message shown in text output */

typedef struct status_opts {
    const char *work;
    int json;
    enum log_level level;
} status_opts;

/* ---- cJSON helpers: each returns 0, or -1 with "out of memory" recorded ---- */

static int oom(void) { return lvd_fail("out of memory building the status report"); }

static int jnum(cJSON *o, const char *key, double v)
{
    return cJSON_AddNumberToObject(o, key, v) ? 0 : oom();
}

static int jstr(cJSON *o, const char *key, const char *v)
{
    if (!v)
        return cJSON_AddNullToObject(o, key) ? 0 : oom();
    return cJSON_AddStringToObject(o, key, v) ? 0 : oom();
}

/* A new object appended to array a, or NULL (message set). */
static cJSON *jpush_object(cJSON *a)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddItemToArray(a, o)) {
        cJSON_Delete(o);
        oom();
        return NULL;
    }
    return o;
}

static int64_t jint(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static const char *jtext(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* ---- SQL helpers ---- */

/* Text of column i, never NULL (NULL reads as ""). */
static const char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

/* A single integer from sql, whose only parameter (if any) ?1 is bound to id. NULL or no row reads as 0. */
static int query_count(catalog *c, const char *sql, int64_t id, int64_t *out)
{
    sqlite3_stmt *st = catalog_stmt(c, sql);
    if (!st)
        return -1;
    if (sqlite3_bind_parameter_count(st) > 0)
        sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return catalog_step_fail(c, st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return 0;
}

/* Rows (key TEXT, count INTEGER) of sql with ?1 = id, added to obj in row order; *total gets the sum. */
static int query_histogram(catalog *c, const char *sql, int64_t id, cJSON *obj, int64_t *total)
{
    sqlite3_stmt *st = catalog_stmt(c, sql);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    *total = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t n = sqlite3_column_int64(st, 1);
        *total += n;
        if (jnum(obj, col_text(st, 0), (double)n) != 0) {
            sqlite3_reset(st);
            return -1;
        }
    }
    if (rc != SQLITE_DONE)
        return catalog_step_fail(c, st);
    sqlite3_reset(st);
    return 0;
}

/* SQL function lvd_host(url): the lowercased host of "scheme://[userinfo@]host[:port][/...]", brackets kept
 * for IPv6 literals; NULL when the URL has no authority. */
static void sql_host(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    const char *url = (const char *)sqlite3_value_text(argv[0]);
    const char *p = url ? strstr(url, "://") : NULL;
    if (!p) {
        sqlite3_result_null(ctx);
        return;
    }
    p += 3;
    size_t alen = strcspn(p, "/?#");
    for (size_t i = alen; i > 0; i--) {
        if (p[i - 1] == '@') {
            p += i;
            alen -= i;
            break;
        }
    }
    size_t hlen;
    if (alen > 0 && p[0] == '[') {
        const char *close = memchr(p, ']', alen);
        hlen = close ? (size_t)(close - p) + 1 : alen;
    } else {
        const char *colon = memchr(p, ':', alen);
        hlen = colon ? (size_t)(colon - p) : alen;
    }
    while (hlen > 0 && p[hlen - 1] == '.') /* "example.com." is example.com */
        hlen--;
    if (hlen == 0) {
        sqlite3_result_null(ctx);
        return;
    }
    char *h = sqlite3_malloc64(hlen + 1);
    if (!h) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    for (size_t i = 0; i < hlen; i++)
        h[i] = (p[i] >= 'A' && p[i] <= 'Z') ? (char)(p[i] - 'A' + 'a') : p[i];
    h[hlen] = '\0';
    sqlite3_result_text(ctx, h, (int)hlen, sqlite3_free);
}

/* ---- report sections ---- */

static int collection_report(catalog *c, int64_t id, cJSON *o)
{
    int64_t urls = 0, members = 0, images = 0, decoded = 0, pending = 0;
    cJSON *url_status = cJSON_AddObjectToObject(o, "url_status");
    cJSON *decode_status = url_status ? cJSON_AddObjectToObject(o, "decode_status") : NULL;
    if (!decode_status)
        return oom();
    if (query_histogram(c,
                        "SELECT status, count(*) AS n FROM urls WHERE collection_id = ?1"
                        " GROUP BY status ORDER BY n DESC, status",
                        id, url_status, &urls) != 0 ||
        query_count(c, "SELECT count(*) FROM members WHERE collection_id = ?1", id, &members) != 0 ||
        query_count(c, "SELECT count(DISTINCT image_id) FROM members WHERE collection_id = ?1", id, &images) != 0 ||
        query_histogram(c,
                        "SELECT status, count(*) AS n FROM decodes"
                        " WHERE image_id IN (SELECT image_id FROM members WHERE collection_id = ?1)"
                        " GROUP BY status ORDER BY n DESC, status",
                        id, decode_status, &decoded) != 0 ||
        query_count(c,
                    "SELECT count(DISTINCT m.image_id) FROM members m WHERE m.collection_id = ?1"
                    " AND NOT EXISTS (SELECT 1 FROM decodes d WHERE d.image_id = m.image_id)",
                    id, &pending) != 0)
        return -1;
    return jnum(o, "urls", (double)urls) || jnum(o, "members", (double)members) ||
                   jnum(o, "images", (double)images) || jnum(o, "decoded", (double)decoded) ||
                   jnum(o, "decode_pending", (double)pending)
               ? -1
               : 0;
}

static int collections_report(catalog *c, cJSON *report)
{
    cJSON *arr = cJSON_AddArrayToObject(report, "collections");
    if (!arr)
        return oom();
    sqlite3_stmt *st = catalog_stmt(c, "SELECT id, name, role FROM collections ORDER BY id");
    if (!st)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = jpush_object(arr);
        if (!o || jstr(o, "name", col_text(st, 1)) || jstr(o, "role", col_text(st, 2)) ||
            collection_report(c, sqlite3_column_int64(st, 0), o) != 0) {
            sqlite3_reset(st);
            return -1;
        }
    }
    if (rc != SQLITE_DONE)
        return catalog_step_fail(c, st);
    sqlite3_reset(st);
    return 0;
}

static int storage_report(catalog *c, cJSON *report)
{
    int64_t images = 0, bytes = 0;
    if (query_count(c, "SELECT count(*) FROM images", 0, &images) != 0 ||
        query_count(c, "SELECT total(bytes) FROM images", 0, &bytes) != 0 ||
        jnum(report, "images", (double)images) || jnum(report, "bytes", (double)bytes))
        return -1;
    cJSON *shards = cJSON_AddObjectToObject(report, "shards");
    if (!shards)
        return oom();
    /* Both kinds always appear, so the report has one shape whatever the catalog holds. */
    static const char *const kinds[] = {"raw", "img"};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        cJSON *o = cJSON_AddObjectToObject(shards, kinds[k]);
        if (!o)
            return oom();
        sqlite3_stmt *st = catalog_stmt(
            c, "SELECT count(*), total(committed), total(members) FROM shards WHERE kind = ?1");
        if (!st)
            return -1;
        sqlite3_bind_text(st, 1, kinds[k], -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW)
            return catalog_step_fail(c, st);
        int64_t n = sqlite3_column_int64(st, 0), committed = sqlite3_column_int64(st, 1),
                members = sqlite3_column_int64(st, 2);
        sqlite3_reset(st);
        if (jnum(o, "shards", (double)n) || jnum(o, "committed", (double)committed) ||
            jnum(o, "members", (double)members))
            return -1;
    }
    return 0;
}

/* The most frequent error messages of both ledgers; identical messages of one stage are one row. */
static int errors_report(catalog *c, cJSON *report)
{
    cJSON *arr = cJSON_AddArrayToObject(report, "errors");
    if (!arr)
        return oom();
    sqlite3_stmt *st = catalog_stmt(
        c, "SELECT stage, message, n FROM ("
           " SELECT 'crawl' AS stage, error AS message, count(*) AS n FROM urls"
           "  WHERE error IS NOT NULL AND error <> '' GROUP BY error"
           " UNION ALL"
           " SELECT 'decode', error, count(*) FROM decodes"
           "  WHERE error IS NOT NULL AND error <> '' GROUP BY error)"
           " ORDER BY n DESC, stage, message LIMIT 10");
    if (!st)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = jpush_object(arr);
        if (!o || jstr(o, "stage", col_text(st, 0)) || jnum(o, "count", (double)sqlite3_column_int64(st, 2)) ||
            jstr(o, "message", col_text(st, 1))) {
            sqlite3_reset(st);
            return -1;
        }
    }
    if (rc != SQLITE_DONE)
        return catalog_step_fail(c, st);
    sqlite3_reset(st);
    return 0;
}

/* The last runs, newest first; summary is the parsed JSON, or the raw text if it does not parse.
 * A row still 'running' while nobody holds the catalog's lock (lock.h) belongs to a process that died: it is
 * shown as "interrupted" at its last commit ("recorded_status": "running"; the next writer marks it so), with a
 * warning. A live one gets "holder", the lock's text. */
static int runs_report(catalog *c, const char *cat_path, cJSON *report, cJSON *warnings)
{
    cJSON *arr = cJSON_AddArrayToObject(report, "runs");
    if (!arr)
        return oom();
    char lock_path[4200], holder[LOCK_HOLDER_MAX]; /* cat_path is at most a work path (4096) + "/catalog.db" */
    snprintf(lock_path, sizeof lock_path, "%s.lock", cat_path);
    int held = -2; /* probed once, at the first running row */
    sqlite3_stmt *st = catalog_stmt(c, "SELECT id, stage, part, started_at, finished_at, status, summary,"
                                       " coalesce(committed_at, started_at), pid, host"
                                       " FROM runs ORDER BY id DESC LIMIT 10");
    if (!st)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = jpush_object(arr);
        const char *finished = (const char *)sqlite3_column_text(st, 4);
        const char *status = (const char *)sqlite3_column_text(st, 5);
        const char *summary = (const char *)sqlite3_column_text(st, 6);
        int dead = 0;
        if (strcmp(status, "running") == 0) {
            if (held == -2 && (held = lock_probe(lock_path, holder, sizeof holder)) < 0) {
                sqlite3_reset(st);
                return -1;
            }
            dead = !held;
        }
        if (dead) {
            finished = (const char *)sqlite3_column_text(st, 7);
            status = "interrupted";
        }
        if (!o || jnum(o, "id", (double)sqlite3_column_int64(st, 0)) || jstr(o, "stage", col_text(st, 1)) ||
            jstr(o, "part", col_text(st, 2)) || jstr(o, "started", col_text(st, 3)) ||
            jstr(o, "finished", finished) || jstr(o, "status", status) ||
            (dead && jstr(o, "recorded_status", "running")) ||
            (held == 1 && !strcmp(status, "running") && jstr(o, "holder", holder)) ||
            (sqlite3_column_type(st, 8) != SQLITE_NULL &&
             (jnum(o, "pid", (double)sqlite3_column_int64(st, 8)) || jstr(o, "host", col_text(st, 9))))) {
            sqlite3_reset(st);
            return -1;
        }
        if (dead) {
            char *msg = NULL;
            cJSON *w = jpush_object(warnings);
            if (!w || asprintf(&msg, "run %lld (%s %s, started %s) did not finish: its process is gone; the last "
                               "commit was at %s. Run lvd-%s again to go on from there.",
                               (long long)sqlite3_column_int64(st, 0), col_text(st, 1), col_text(st, 2),
                               col_text(st, 3), finished, col_text(st, 1)) < 0) {
                sqlite3_reset(st);
                return oom();
            }
            int bad = jstr(w, "kind", "interrupted") || jnum(w, "run", (double)sqlite3_column_int64(st, 0)) ||
                      jstr(w, "stage", col_text(st, 1)) || jstr(w, "message", msg);
            free(msg);
            if (bad) {
                sqlite3_reset(st);
                return -1;
            }
        }
        cJSON *sj = summary ? cJSON_Parse(summary) : NULL;
        if (!sj)
            sj = summary ? cJSON_CreateString(summary) : cJSON_CreateNull();
        if (!sj || !cJSON_AddItemToObject(o, "summary", sj)) {
            cJSON_Delete(sj);
            sqlite3_reset(st);
            return oom();
        }
    }
    if (rc != SQLITE_DONE)
        return catalog_step_fail(c, st);
    sqlite3_reset(st);
    return 0;
}

/* Non-ok rows of one run among its attempted items, and the most common non-ok status. */
static int run_failures(catalog *c, int is_crawl, int64_t run, int64_t *attempted, int64_t *failed,
                        char **cause, int64_t *cause_n)
{
    *cause = NULL;
    *cause_n = 0;
    if (is_crawl) {
        if (query_count(c, "SELECT count(*) FROM urls WHERE run_id = ?1 AND status <> 'pending'", run,
                        attempted) != 0 ||
            query_count(c, "SELECT count(*) FROM urls WHERE run_id = ?1 AND status NOT IN ('pending', 'ok')", run,
                        failed) != 0)
            return -1;
    } else if (query_count(c, "SELECT count(*) FROM decodes WHERE run_id = ?1", run, attempted) != 0 ||
               query_count(c, "SELECT count(*) FROM decodes WHERE run_id = ?1 AND status <> 'ok'", run,
                           failed) != 0) {
        return -1;
    }
    sqlite3_stmt *st =
        is_crawl ? catalog_stmt(c, "SELECT status, count(*) AS n FROM urls"
                                   " WHERE run_id = ?1 AND status NOT IN ('pending', 'ok')"
                                   " GROUP BY status ORDER BY n DESC, status LIMIT 1")
                 : catalog_stmt(c, "SELECT status, count(*) AS n FROM decodes WHERE run_id = ?1 AND status <> 'ok'"
                                   " GROUP BY status ORDER BY n DESC, status LIMIT 1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, run);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *cause_n = sqlite3_column_int64(st, 1);
        if (!(*cause = strdup(col_text(st, 0)))) {
            sqlite3_reset(st);
            return oom();
        }
    } else if (rc != SQLITE_DONE) {
        return catalog_step_fail(c, st);
    }
    sqlite3_reset(st);
    return 0;
}

/* One warning per stage (crawl, decode) whose most recent run failed on more than 30% of its items. */
static int failure_warnings(catalog *c, cJSON *warnings)
{
    static const char *const stages[] = {"crawl", "decode"};
    for (size_t s = 0; s < sizeof stages / sizeof stages[0]; s++) {
        int is_crawl = s == 0;
        const char *unit = is_crawl ? "URLs" : "images";
        sqlite3_stmt *st = catalog_stmt(c, "SELECT max(id) FROM runs WHERE stage = ?1");
        if (!st)
            return -1;
        sqlite3_bind_text(st, 1, stages[s], -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_ROW)
            return catalog_step_fail(c, st);
        int none = sqlite3_column_type(st, 0) == SQLITE_NULL;
        int64_t run = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        if (none)
            continue;
        int64_t attempted = 0, failed = 0, cause_n = 0;
        char *cause;
        if (run_failures(c, is_crawl, run, &attempted, &failed, &cause, &cause_n) != 0)
            return -1;
        /* Integer comparison: exactly 30% does not warn, whatever the rounding of a double would do. */
        if (attempted == 0 || failed * FAIL_RATE_DEN <= attempted * FAIL_RATE_NUM) {
            free(cause);
            continue;
        }
        double rate = (double)failed / (double)attempted;
        char *msg;
        if (asprintf(&msg, "%s run %" PRId64 ": %.1f%% of %" PRId64 " %s failed; most common: %s (%" PRId64 " %s)",
                     stages[s], run, 100.0 * rate, attempted, unit, cause ? cause : "?", cause_n, unit) < 0) {
            free(cause);
            return oom();
        }
        cJSON *o = jpush_object(warnings);
        int bad = !o || jstr(o, "kind", "failure_rate") || jstr(o, "stage", stages[s]) ||
                  jnum(o, "run", (double)run) || jnum(o, "attempted", (double)attempted) ||
                  jnum(o, "failed", (double)failed) || jnum(o, "rate", rate) || jstr(o, "cause", cause) ||
                  jnum(o, "cause_count", (double)cause_n) || jstr(o, "message", msg);
        free(msg);
        free(cause);
        if (bad)
            return -1;
    }
    return 0;
}

/* Bytes served under many hosts are usually a "no image" placeholder, not a real image. */
static int placeholder_warning(catalog *c, cJSON *warnings)
{
    if (sqlite3_create_function(catalog_db(c), "lvd_host", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, sql_host,
                                NULL, NULL) != SQLITE_OK)
        return lvd_fail("%s: registering lvd_host(): %s", catalog_path(c), sqlite3_errmsg(catalog_db(c)));
    sqlite3_stmt *st = catalog_stmt(
        c, "SELECT h, n FROM ("
           " SELECT coalesce(u.sha256, i.sha256) AS h, count(DISTINCT lvd_host(u.url)) AS n"
           " FROM urls u LEFT JOIN images i ON i.id = u.image_id"
           " WHERE coalesce(u.sha256, i.sha256) IS NOT NULL GROUP BY 1)"
           " WHERE n >= ?1 ORDER BY n DESC, h");
    if (!st)
        return -1;
    sqlite3_bind_int(st, 1, PLACEHOLDER_HOSTS);
    cJSON *o = NULL, *hashes = NULL;
    int64_t count = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!o && (!(o = jpush_object(warnings)) || jstr(o, "kind", "placeholder") ||
                   !(hashes = cJSON_AddArrayToObject(o, "hashes")))) {
            sqlite3_reset(st);
            return o ? oom() : -1;
        }
        if (count++ >= PLACEHOLDER_SHOWN)
            continue;
        cJSON *h = jpush_object(hashes);
        if (!h || jstr(h, "sha256", col_text(st, 0)) || jnum(h, "hosts", (double)sqlite3_column_int64(st, 1))) {
            sqlite3_reset(st);
            return -1;
        }
    }
    if (rc != SQLITE_DONE)
        return catalog_step_fail(c, st);
    sqlite3_reset(st);
    if (!o)
        return 0;
    char *msg = NULL;
    if (asprintf(&msg, "%" PRId64 " image%s look%s like placeholders: the same bytes came from URLs on >= %d hosts",
                 count, count == 1 ? "" : "s", count == 1 ? "s" : "", PLACEHOLDER_HOSTS) < 0)
        return oom();
    int bad = jnum(o, "count", (double)count) || jstr(o, "message", msg);
    free(msg);
    return bad ? -1 : 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted names of the files in WORK/parts ending in ".db"; a merged part is renamed to *.merged. */
static int list_parts(const char *work, char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    char *dir = NULL;
    if (asprintf(&dir, "%s/parts", work) < 0)
        return oom();
    DIR *d = opendir(dir);
    if (!d) {
        int missing = errno == ENOENT || errno == ENOTDIR;
        int rc = missing ? 0 : lvd_fail_errno("%s: cannot list part files", dir);
        free(dir);
        return rc;
    }
    free(dir);
    size_t cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len <= 3 || strcmp(e->d_name + len - 3, ".db") != 0)
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **grown = realloc(*out, cap * sizeof *grown);
            if (!grown)
                goto nomem;
            *out = grown;
        }
        if (!((*out)[*n] = strdup(e->d_name)))
            goto nomem;
        (*n)++;
    }
    closedir(d);
    if (*n > 1)
        qsort(*out, *n, sizeof **out, cmp_str);
    return 0;
nomem:
    closedir(d);
    return oom();
}

/* The warning for names[0..n), the part files of one stage (stage "" when a name has no "<stage>-"). */
static int part_stage_warning(cJSON *warnings, const char *work, const char *stage, char *const *names, size_t n)
{
    char *list = NULL, *msg = NULL;
    size_t llen = 0;
    FILE *f = open_memstream(&list, &llen);
    if (!f)
        return oom();
    for (size_t k = 0; k < n && k < PARTS_SHOWN; k++)
        fprintf(f, "%sparts/%s", k ? ", " : "", names[k]);
    if (n > PARTS_SHOWN)
        fputs(", ...", f);
    if (fclose(f) != 0) {
        free(list);
        return oom();
    }
    const char *s = n == 1 ? "" : "s";
    int len = stage[0] ? asprintf(&msg, "%zu part file%s of %s not merged into catalog.db (%s); run lvd-%s --work %s --merge",
                                  n, s, stage, list, stage, work)
                       : asprintf(&msg, "%zu part file%s not merged into catalog.db (%s); run their stage with --merge",
                                  n, s, list);
    free(list);
    if (len < 0)
        return oom();
    cJSON *o = jpush_object(warnings);
    cJSON *files = NULL;
    int rc = !o || jstr(o, "kind", "parts_not_merged") || jstr(o, "stage", stage[0] ? stage : NULL) ||
                     jstr(o, "message", msg)
                 ? -1
             : !(files = cJSON_AddArrayToObject(o, "files")) ? oom()
                                                              : 0;
    free(msg);
    for (size_t k = 0; rc == 0 && k < n; k++) {
        cJSON *e = cJSON_CreateString(names[k]);
        if (!e || !cJSON_AddItemToArray(files, e)) {
            cJSON_Delete(e);
            rc = oom();
        }
    }
    return rc;
}

/* "parts_not_merged" (every unmerged part file) and one warning per stage that has some. */
static int parts_warnings(const char *work, cJSON *report, cJSON *warnings)
{
    char **names;
    size_t n;
    if (list_parts(work, &names, &n) != 0)
        return -1;
    cJSON *all = cJSON_AddArrayToObject(report, "parts_not_merged");
    int rc = all ? 0 : oom();
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char *path = NULL;
        cJSON *e = NULL;
        if (asprintf(&path, "parts/%s", names[i]) < 0)
            path = NULL;
        if (!path || !(e = cJSON_CreateString(path)) || !cJSON_AddItemToArray(all, e)) {
            cJSON_Delete(e);
            rc = oom();
        }
        free(path);
    }
    /* names are sorted, so the files of one stage are adjacent. */
    for (size_t i = 0, j; rc == 0 && i < n; i = j) {
        size_t plen = strcspn(names[i], "-");
        int has_stage = names[i][plen] == '-';
        for (j = i + 1; j < n && has_stage && strncmp(names[j], names[i], plen + 1) == 0; j++)
            ;
        char *stage = strndup(names[i], has_stage ? plen : 0);
        rc = stage ? part_stage_warning(warnings, work, stage, names + i, j - i) : oom();
        free(stage);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* The whole report: one object with every section; NULL on failure (message set). */
static cJSON *status_report(catalog *c, const char *work, const char *cat_path)
{
    cJSON *r = cJSON_CreateObject();
    if (!r) {
        oom();
        return NULL;
    }
    cJSON *warnings = NULL;
    if (jstr(r, "work", work) || jstr(r, "catalog", cat_path) ||
        jnum(r, "schema_version", catalog_schema_version(c)) || collections_report(c, r) != 0 ||
        storage_report(c, r) != 0 || errors_report(c, r) != 0 ||
        (!(warnings = cJSON_AddArrayToObject(r, "warnings")) && oom()) || runs_report(c, cat_path, r, warnings) != 0 ||
        failure_warnings(c, warnings) != 0 ||
        placeholder_warning(c, warnings) != 0 || parts_warnings(work, r, warnings) != 0) {
        cJSON_Delete(r);
        return NULL;
    }
    return r;
}

/* ---- text output ---- */

/* Writes s (NULL reads as "-") with control bytes replaced by '?', cut at max bytes on a UTF-8 boundary with
 * "..." marking the cut: messages carry text from servers and files, which must not drive the terminal.
 * Returns the bytes written. */
static size_t put_clean(FILE *f, const char *s, size_t max)
{
    if (!s)
        s = "-";
    size_t len = strlen(s), cut = len;
    if (len > max) {
        cut = max;
        while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
            cut--;
    }
    for (size_t i = 0; i < cut; i++) {
        unsigned char ch = (unsigned char)s[i];
        fputc(ch < 0x20 || ch == 0x7F ? '?' : ch, f);
    }
    if (cut < len) {
        fputs("...", f);
        return cut + 3;
    }
    return cut;
}

/* A left-aligned column: s cut to width, padded to width plus a two-space gap. */
static void put_col(FILE *f, const char *s, size_t width)
{
    size_t n = put_clean(f, s, width);
    fprintf(f, "%*s", (int)(n < width ? width - n + 2 : 2), "");
}

static void human_bytes(int64_t b, char out[32])
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double v = (double)b;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof units / sizeof units[0]) {
        v /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(out, 32, "%" PRId64 " B", b);
    else
        snprintf(out, 32, "%.1f %s", v, units[u]);
}

/* "ok 120, dns 61, http 19" from a histogram object; "-" when empty. */
static void put_histogram(FILE *f, const cJSON *h)
{
    const cJSON *e;
    int first = 1;
    cJSON_ArrayForEach(e, h)
    {
        fputs(first ? "" : ", ", f);
        put_clean(f, e->string, 64);
        fprintf(f, " %" PRId64, (int64_t)e->valuedouble);
        first = 0;
    }
    if (first)
        fputc('-', f);
}

static void print_collections(FILE *f, const cJSON *r)
{
    const cJSON *col;
    cJSON_ArrayForEach(col, cJSON_GetObjectItemCaseSensitive(r, "collections"))
    {
        fputs("\ncollection ", f);
        put_clean(f, jtext(col, "name"), 200);
        fputs(" (", f);
        put_clean(f, jtext(col, "role"), 16);
        fprintf(f, ")\n  urls     %12" PRId64 "  ", jint(col, "urls"));
        put_histogram(f, cJSON_GetObjectItemCaseSensitive(col, "url_status"));
        fprintf(f, "\n  members  %12" PRId64 "\n", jint(col, "members"));
        fprintf(f, "  images   %12" PRId64 "\n", jint(col, "images"));
        fprintf(f, "  decoded  %12" PRId64 "  ", jint(col, "decoded"));
        put_histogram(f, cJSON_GetObjectItemCaseSensitive(col, "decode_status"));
        fprintf(f, "\n  pending  %12" PRId64 "  images without a decode\n", jint(col, "decode_pending"));
    }
}

static void print_storage(FILE *f, const cJSON *r)
{
    char hb[32];
    human_bytes(jint(r, "bytes"), hb);
    fprintf(f, "\nstorage\n  images   %12" PRId64 "\n  stored   %12s  %" PRId64 " bytes\n", jint(r, "images"), hb,
            jint(r, "bytes"));
    const cJSON *kind;
    cJSON_ArrayForEach(kind, cJSON_GetObjectItemCaseSensitive(r, "shards"))
    {
        human_bytes(jint(kind, "committed"), hb);
        fprintf(f, "  %-3s      %12" PRId64 "  shards, %s committed, %" PRId64 " members\n", kind->string,
                jint(kind, "shards"), hb, jint(kind, "members"));
    }
}

static void print_errors(FILE *f, const cJSON *r)
{
    const cJSON *errs = cJSON_GetObjectItemCaseSensitive(r, "errors"), *e;
    fprintf(f, "\nerrors (top %d)\n", TOP_ERRORS);
    if (cJSON_GetArraySize(errs) == 0)
        fputs("  none\n", f);
    cJSON_ArrayForEach(e, errs)
    {
        /* "crawl:      61  message" */
        fputs("  ", f);
        size_t n = put_clean(f, jtext(e, "stage"), 16);
        fprintf(f, ":%*s%8" PRId64 "  ", (int)(n < 7 ? 7 - n : 0), "", jint(e, "count"));
        put_clean(f, jtext(e, "message"), TEXT_MESSAGE_MAX);
        fputc('\n', f);
    }
}

static void print_runs(FILE *f, const cJSON *r)
{
    const cJSON *runs = cJSON_GetObjectItemCaseSensitive(r, "runs"), *run;
    fprintf(f, "\nruns (last %d, newest first)\n", LAST_RUNS);
    if (cJSON_GetArraySize(runs) == 0) {
        fputs("  none\n", f);
        return;
    }
    fprintf(f, "  %6s  %-8s  %-7s  %-11s  %-24s  %s\n", "id", "stage", "part", "status", "started", "finished");
    cJSON_ArrayForEach(run, runs)
    {
        fprintf(f, "  %6" PRId64 "  ", jint(run, "id"));
        put_col(f, jtext(run, "stage"), 8);
        put_col(f, jtext(run, "part"), 7);
        put_col(f, jtext(run, "status"), 11);
        put_col(f, jtext(run, "started"), 24);
        put_clean(f, jtext(run, "finished"), 24);
        fputc('\n', f);
    }
}

static void print_warnings(FILE *f, const cJSON *r)
{
    const cJSON *warns = cJSON_GetObjectItemCaseSensitive(r, "warnings"), *w;
    if (cJSON_GetArraySize(warns) > 0)
        fputc('\n', f);
    cJSON_ArrayForEach(w, warns)
    {
        fputs("warning: ", f);
        put_clean(f, jtext(w, "message"), 4096);
        fputc('\n', f);
        const cJSON *h;
        cJSON_ArrayForEach(h, cJSON_GetObjectItemCaseSensitive(w, "hashes"))
        {
            fputs("  ", f);
            put_clean(f, jtext(h, "sha256"), 64);
            fprintf(f, "  %" PRId64 " hosts\n", jint(h, "hosts"));
        }
        const char *kind = jtext(w, "kind");
        if (kind && strcmp(kind, "placeholder") == 0 && jint(w, "count") > PLACEHOLDER_SHOWN)
            fprintf(f, "  ... and %" PRId64 " more\n", jint(w, "count") - PLACEHOLDER_SHOWN);
    }
}

static void print_text(FILE *f, const cJSON *r)
{
    fputs("catalog  ", f);
    put_clean(f, jtext(r, "catalog"), 4096);
    fprintf(f, " (schema %" PRId64 ")\n", jint(r, "schema_version"));
    print_collections(f, r);
    print_storage(f, r);
    print_errors(f, r);
    print_runs(f, r);
    print_warnings(f, r);
}

/* ---- command line ---- */

static void usage(FILE *f)
{
    fprintf(f, "usage: " PROGRAM " --work DIR [--json] [--quiet|--verbose]\n"
               "\n"
               "Summarises the catalog of a work directory: collections, URL and decode outcomes, storage,\n"
               "the most frequent errors, recent runs, and warnings (high failure rates, placeholder images,\n"
               "part files not merged). Read-only.\n"
               "\n"
               "  --work DIR     work directory holding catalog.db\n"
               "  --json         print one JSON object on stdout instead of text\n"
               "  --quiet        log errors only\n"
               "  --verbose      log debug lines\n"
               "  -h, --help     show this help\n"
               "  --version      show the version\n");
}

/* 0: run; 1: done (help or version printed); 2: usage error (reported). */
static int parse_args(int argc, char **argv, status_opts *o)
{
    enum { OPT_WORK = 256, OPT_JSON, OPT_QUIET, OPT_VERBOSE, OPT_VERSION };
    static const struct option longopts[] = {
        {"work", required_argument, NULL, OPT_WORK},   {"json", no_argument, NULL, OPT_JSON},
        {"quiet", no_argument, NULL, OPT_QUIET},       {"verbose", no_argument, NULL, OPT_VERBOSE},
        {"help", no_argument, NULL, 'h'},              {"version", no_argument, NULL, OPT_VERSION},
        {NULL, 0, NULL, 0},
    };
    int quiet = 0, verbose = 0, ch;
    *o = (status_opts){.level = LOG_INFO};
    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case OPT_WORK: o->work = optarg; break;
        case OPT_JSON: o->json = 1; break;
        case OPT_QUIET: quiet = 1; break;
        case OPT_VERBOSE: verbose = 1; break;
        case 'h': usage(stdout); return 1;
        case OPT_VERSION: printf(PROGRAM " " LVD_VERSION "\n"); return 1;
        case ':': log_error("option %s needs a value; see --help", argv[optind - 1]); return 2;
        default: log_error("unknown option %s; see --help", argv[optind - 1]); return 2;
        }
    }
    if (optind < argc) {
        log_error("unexpected argument '%s'; see --help", argv[optind]);
        return 2;
    }
    if (!o->work || !o->work[0]) {
        log_error("--work DIR is required; see --help");
        return 2;
    }
    if (quiet && verbose) {
        log_error("--quiet and --verbose exclude each other");
        return 2;
    }
    o->level = quiet ? LOG_ERROR : verbose ? LOG_DEBUG : LOG_INFO;
    return 0;
}

int main(int argc, char **argv)
{
    log_set_program(PROGRAM);
    status_opts o;
    int prc = parse_args(argc, argv, &o);
    if (prc != 0)
        return prc == 1 ? 0 : 2;
    log_set_level(o.level);

    char *path = NULL;
    if (asprintf(&path, "%s/catalog.db", o.work) < 0) {
        log_error("out of memory");
        return 1;
    }
    struct stat sb;
    if (stat(path, &sb) != 0) {
        log_error("%s: no catalog here (%s); is --work the right directory?", path, strerror(errno));
        free(path);
        return 1;
    }
    catalog *c = NULL;
    cJSON *report = NULL;
    if (catalog_open(&c, path, CATALOG_READONLY) != 0 || !(report = status_report(c, o.work, path))) {
        log_error("%s", lvd_errmsg());
        catalog_close(c);
        free(path);
        return 1;
    }
    log_debug("%s: schema version %d", path, catalog_schema_version(c));
    catalog_close(c);
    free(path);

    int rc = 0;
    if (o.json) {
        char *text = cJSON_Print(report);
        if (!text) {
            log_error("out of memory printing the status report");
            rc = 1;
        } else {
            printf("%s\n", text);
            cJSON_free(text);
        }
    } else {
        print_text(stdout, report);
    }
    cJSON_Delete(report);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        log_error("writing to stdout: %s", strerror(errno));
        rc = 1;
    }
    return rc;
}
