/* diff.c — lvd-manifest diff A.db B.db: the samples B adds to A and removes from it, by key, overall and per
 * source row, and the rows whose membership changed.
 *
 * A sample counts under every row it has in the manifest it is in: an added sample under its rows in B, a
 * removed one under its rows in A. A sample in both may still join or leave a row (another seed found it, a
 * cluster changed): per row, `joined` counts the (key, row) pairs of B that A lacks and `left` those of A
 * that B lacks, added and removed samples included. Like stats, it reads only the two SQLite files (B is
 * ATTACHed to A's read-only connection; the (key, row) pairs go to TEMP tables). Exit 0 whatever differs.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmds.h"
#include "mfile.h"

#define PROG "lvd-manifest diff"
#define TEXT_KEYS 20 /* keys listed per direction in the text output without --all */

static const char usage[] =
    "Usage: lvd-manifest diff A.db B.db [--json] [--all]\n"
    "The samples B adds to A and removes from it (by key), overall and per source row, and the rows whose\n"
    "membership changed. Needs only the two files.\n\n"
    "  --json                  the report as JSON on stdout (every added and removed key; README.md)\n"
    "  --all                   text: list every added and removed key (default: the first 20 of each)\n"
    "  --help\n";

enum { OPT_ALL = OPT_FIRST_STAGE_OPTION };

typedef struct ctx {
    sqlite3 *db;
    const char *a, *b;
} ctx;

static int oom(void) { return lvd_fail("out of memory building the diff"); }

static int sql_fail(ctx *c) { return lvd_fail("%s, %s: %s", c->a, c->b, sqlite3_errmsg(c->db)); }

static int exec(ctx *c, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(c->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        lvd_fail("%s, %s: %s", c->a, c->b, msg ? msg : sqlite3_errmsg(c->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* {"count": n, "keys": [...]} of the keys sql returns. */
static int keys_of(ctx *c, const char *sql, cJSON *parent, const char *name)
{
    cJSON *o = cJSON_AddObjectToObject(parent, name);
    cJSON *keys = o ? cJSON_AddArrayToObject(o, "keys") : NULL;
    if (!keys)
        return oom();
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK)
        return sql_fail(c);
    int rc, n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *k = cJSON_CreateString(mfile_col_text(st, 0));
        if (!k || !cJSON_AddItemToArray(keys, k)) {
            cJSON_Delete(k);
            sqlite3_finalize(st);
            return oom();
        }
        n++;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return sql_fail(c);
    return cJSON_AddNumberToObject(o, "count", n) ? 0 : oom();
}

/* Sets field `field` of rows[row] from rows (row, n) of sql. */
static int row_field(ctx *c, cJSON *rows, const char *sql, const char *field)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK)
        return sql_fail(c);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = cJSON_GetObjectItemCaseSensitive(rows, mfile_col_text(st, 0));
        if (o)
            cJSON_SetNumberValue(cJSON_GetObjectItemCaseSensitive(o, field), (double)sqlite3_column_int64(st, 1));
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : sql_fail(c);
}

static int64_t q_int(ctx *c, const char *sql, int *err)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK) {
        *err = sql_fail(c);
        return 0;
    }
    int rc = sqlite3_step(st);
    int64_t v = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        *err = sql_fail(c);
    return v;
}

static cJSON *report(ctx *c)
{
    if (exec(c, "CREATE TEMP TABLE pa (key TEXT, row TEXT, PRIMARY KEY (key, row)) WITHOUT ROWID;"
                "INSERT INTO temp.pa SELECT s.key, x.row FROM main.sample_sources x"
                " JOIN main.samples s ON s.id = x.sample_id;"
                "CREATE TEMP TABLE pb (key TEXT, row TEXT, PRIMARY KEY (key, row)) WITHOUT ROWID;"
                "INSERT INTO temp.pb SELECT s.key, x.row FROM b.sample_sources x"
                " JOIN b.samples s ON s.id = x.sample_id;"
                "CREATE INDEX temp.pa_row ON pa(row); CREATE INDEX temp.pb_row ON pb(row);") != 0)
        return NULL;
    cJSON *r = cJSON_CreateObject();
    if (!r) {
        oom();
        return NULL;
    }
    int err = 0;
    cJSON_AddStringToObject(r, "a", c->a);
    cJSON_AddStringToObject(r, "b", c->b);
    cJSON_AddNumberToObject(r, "a_samples", (double)q_int(c, "SELECT count(*) FROM main.samples", &err));
    cJSON_AddNumberToObject(r, "b_samples", (double)q_int(c, "SELECT count(*) FROM b.samples", &err));
    cJSON_AddNumberToObject(r, "common", (double)q_int(c, "SELECT count(*) FROM main.samples a JOIN b.samples bb"
                                                          " ON bb.key = a.key", &err));
    /* Same key, other working-image bytes (decoded again with other parameters). */
    cJSON_AddNumberToObject(r, "data_changed",
                            (double)q_int(c, "SELECT count(*) FROM main.samples a JOIN b.samples bb ON bb.key = a.key"
                                             " WHERE bb.data_sha256 <> a.data_sha256", &err));
    if (err || keys_of(c, "SELECT key FROM b.samples WHERE key NOT IN (SELECT key FROM main.samples) ORDER BY key", r,
                       "added") != 0 ||
        keys_of(c, "SELECT key FROM main.samples WHERE key NOT IN (SELECT key FROM b.samples) ORDER BY key", r,
                "removed") != 0) {
        cJSON_Delete(r);
        return NULL;
    }
    cJSON *rows = cJSON_AddObjectToObject(r, "rows");
    sqlite3_stmt *st;
    if (!rows || sqlite3_prepare_v2(c->db, "SELECT row FROM temp.pa UNION SELECT row FROM temp.pb ORDER BY row", -1,
                                    &st, NULL) != SQLITE_OK) {
        rows ? sql_fail(c) : oom();
        cJSON_Delete(r);
        return NULL;
    }
    static const char *const fields[] = {"a", "b", "added", "removed", "joined", "left"};
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cJSON *o = cJSON_AddObjectToObject(rows, mfile_col_text(st, 0));
        for (size_t i = 0; o && i < sizeof fields / sizeof fields[0]; i++)
            if (!cJSON_AddNumberToObject(o, fields[i], 0))
                o = NULL;
        if (!o) {
            err = oom();
            break;
        }
    }
    sqlite3_finalize(st);
    if (!err && rc != SQLITE_DONE)
        err = sql_fail(c);
    if (err || row_field(c, rows, "SELECT row, count(*) FROM temp.pa GROUP BY row", "a") != 0 ||
        row_field(c, rows, "SELECT row, count(*) FROM temp.pb GROUP BY row", "b") != 0 ||
        row_field(c, rows,
                  "SELECT row, count(*) FROM temp.pb WHERE key NOT IN (SELECT key FROM main.samples) GROUP BY row",
                  "added") != 0 ||
        row_field(c, rows,
                  "SELECT row, count(*) FROM temp.pa WHERE key NOT IN (SELECT key FROM b.samples) GROUP BY row",
                  "removed") != 0 ||
        row_field(c, rows,
                  "SELECT row, count(*) FROM temp.pb WHERE NOT EXISTS"
                  " (SELECT 1 FROM temp.pa WHERE pa.key = pb.key AND pa.row = pb.row) GROUP BY row",
                  "joined") != 0 ||
        row_field(c, rows,
                  "SELECT row, count(*) FROM temp.pa WHERE NOT EXISTS"
                  " (SELECT 1 FROM temp.pb WHERE pb.key = pa.key AND pb.row = pa.row) GROUP BY row",
                  "left") != 0) {
        cJSON_Delete(r);
        return NULL;
    }
    cJSON *changed = cJSON_AddArrayToObject(r, "changed_rows");
    if (!changed) {
        oom();
        cJSON_Delete(r);
        return NULL;
    }
    cJSON *it;
    cJSON_ArrayForEach(it, rows)
    {
        if (cJSON_GetObjectItemCaseSensitive(it, "joined")->valuedouble > 0 ||
            cJSON_GetObjectItemCaseSensitive(it, "left")->valuedouble > 0)
            cJSON_AddItemToArray(changed, cJSON_CreateString(it->string));
    }
    return r;
}

static int64_t jint(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? (int64_t)v->valuedouble : 0;
}

static void print_keys(const cJSON *o, char sign, int all)
{
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(o, "keys"), *it;
    int n = 0, total = cJSON_GetArraySize(keys);
    cJSON_ArrayForEach(it, keys)
    {
        if (!all && n == TEXT_KEYS) {
            printf("  ... and %d more (--all lists them)\n", total - n);
            break;
        }
        printf("  %c %s\n", sign, it->valuestring);
        n++;
    }
}

static void print_text(const cJSON *r, int all)
{
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(r, "added"), *rem = cJSON_GetObjectItemCaseSensitive(r, "removed");
    printf("%s (%" PRId64 " samples) -> %s (%" PRId64 " samples): %" PRId64 " added, %" PRId64 " removed, %" PRId64
           " in both",
           cJSON_GetObjectItemCaseSensitive(r, "a")->valuestring, jint(r, "a_samples"),
           cJSON_GetObjectItemCaseSensitive(r, "b")->valuestring, jint(r, "b_samples"), jint(add, "count"),
           jint(rem, "count"), jint(r, "common"));
    if (jint(r, "data_changed"))
        printf(" (%" PRId64 " of them with other working-image bytes)", jint(r, "data_changed"));
    printf("\n\n%-28s %9s %9s %9s %9s %9s %9s\n", "row", "A", "B", "added", "removed", "joined", "left");
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(r, "rows"))
    {
        printf("%-28s %9" PRId64 " %9" PRId64 " %9" PRId64 " %9" PRId64 " %9" PRId64 " %9" PRId64 "%s\n", it->string,
               jint(it, "a"), jint(it, "b"), jint(it, "added"), jint(it, "removed"), jint(it, "joined"),
               jint(it, "left"), jint(it, "joined") || jint(it, "left") ? "  changed" : "");
    }
    if (jint(add, "count")) {
        printf("\nadded:\n");
        print_keys(add, '+', all);
    }
    if (jint(rem, "count")) {
        printf("\nremoved:\n");
        print_keys(rem, '-', all);
    }
}

int manifest_cmd_diff(int argc, char **argv)
{
    static const struct option longopts[] = {{"json", no_argument, NULL, OPT_JSON},
                                             {"all", no_argument, NULL, OPT_ALL},
                                             {"help", no_argument, NULL, OPT_HELP},
                                             {NULL, 0, NULL, 0}};
    int json = 0, all = 0, opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_JSON: json = 1; break;
        case OPT_ALL: all = 1; break;
        case 'h':
        case OPT_HELP: fputs(usage, stdout); return EXIT_OK;
        default: cli_usage_errorf(PROG, "unknown option %.100s", argv[optind - 1]);
        }
    }
    if (optind + 2 != argc)
        cli_usage_error(PROG, "two manifests are required: A.db B.db");
    ctx c = {.a = argv[optind], .b = argv[optind + 1]};
    if (mfile_open(c.a, &c.db, NULL) != 0 || mfile_attach(c.db, c.b, "b") != 0) {
        log_error("%s", lvd_errmsg());
        sqlite3_close(c.db);
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
        print_text(r, all);
    }
    cJSON_Delete(r);
    sqlite3_close(c.db);
    return rc;
}
