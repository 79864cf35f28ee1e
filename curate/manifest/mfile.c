/* mfile.c — opening manifests read-only with their checks; SQL and path helpers (mfile.h). */
#include "mfile.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "err.h"

/* The tables a schema version 1 reader relies on (schemas/manifest-001.sql). */
static const char *const required_tables[] = {"info", "shards", "samples", "sample_sources"};

char *mfile_uri(const char *path, const char *query)
{
    size_t n = strlen(path);
    char *u = malloc(3 * n + strlen(query) + 16);
    if (!u)
        return NULL;
    char *p = u;
    p += sprintf(p, "file:");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)path[i];
        /* Everything SQLite's URI parser treats specially ('?', '#', '%') and anything not plainly printable is
         * escaped; '/' stays a separator. */
        if (ch == '?' || ch == '#' || ch == '%' || ch <= ' ' || ch >= 0x7f)
            p += sprintf(p, "%%%02X", ch);
        else
            *p++ = (char)ch;
    }
    sprintf(p, "?%s", query);
    return u;
}

const char *mfile_col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

/* The message of a failed open or first read: a file that is not SQLite, a damaged one, or another error. */
static int open_fail(sqlite3 *db, const char *path)
{
    int code = sqlite3_errcode(db);
    if (code == SQLITE_NOTADB)
        return lvd_fail("%s: not an lvd manifest (not an SQLite database: %s)", path, sqlite3_errmsg(db));
    if (code == SQLITE_CORRUPT)
        return lvd_fail("%s: corrupt manifest (%s); build it again", path, sqlite3_errmsg(db));
    return lvd_fail("%s: cannot read manifest: %s", path, sqlite3_errmsg(db));
}

/* Checks the manifest attached as `schema` of db: the tables exist and the schema version is readable. */
static int check_schema(sqlite3 *db, const char *schema, const char *path, int *version)
{
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT name FROM \"%s\".sqlite_master WHERE type = 'table'", schema);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        return open_fail(db, path);
    }
    unsigned found = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = mfile_col_text(st, 0);
        for (size_t i = 0; i < sizeof required_tables / sizeof required_tables[0]; i++)
            if (strcmp(name, required_tables[i]) == 0)
                found |= 1u << i;
    }
    if (rc != SQLITE_DONE) {
        sqlite3_finalize(st);
        return open_fail(db, path);
    }
    sqlite3_finalize(st);
    if (!(found & 1u))
        return lvd_fail("%s: not an lvd manifest (an SQLite file without an info table)", path);
    char *v = NULL;
    if (mfile_info(db, schema, "schema_version", path, &v) != 0)
        return -1;
    if (!v)
        return lvd_fail("%s: not an lvd manifest (its info table has no schema_version)", path);
    char *end = NULL;
    errno = 0;
    long ver = strtol(v, &end, 10);
    if (errno || end == v || *end || ver < 1) {
        lvd_fail("%s: not an lvd manifest (schema_version '%.40s' is not a positive integer)", path, v);
        free(v);
        return -1;
    }
    free(v);
    if (ver > MFILE_SCHEMA_VERSION)
        return lvd_fail("%s: manifest schema version %ld is newer than this lvd-manifest reads (%d); use a newer lvd",
                        path, ver, MFILE_SCHEMA_VERSION);
    for (size_t i = 1; i < sizeof required_tables / sizeof required_tables[0]; i++)
        if (!(found & (1u << i)))
            return lvd_fail("%s: not a complete lvd manifest (schema version %ld without a %s table)", path, ver,
                            required_tables[i]);
    if (version)
        *version = (int)ver;
    return 0;
}

/* The checks before SQLite sees the file: SQLite would create a missing file, or fail vaguely on a folder. */
static int check_file(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return lvd_fail_errno("%s: cannot open manifest", path);
    if (S_ISDIR(sb.st_mode))
        return lvd_fail("%s: is a directory, not a manifest file", path);
    return 0;
}

int mfile_open(const char *path, sqlite3 **out, int *version)
{
    *out = NULL;
    if (check_file(path) != 0)
        return -1;
    char *uri = mfile_uri(path, "mode=ro&immutable=1");
    if (!uri)
        return lvd_fail("%s: out of memory", path);
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
    free(uri);
    if (rc != SQLITE_OK) {
        lvd_fail("%s: cannot open manifest: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return -1;
    }
    if (check_schema(db, "main", path, version) != 0) {
        sqlite3_close(db);
        return -1;
    }
    *out = db;
    return 0;
}

int mfile_attach(sqlite3 *db, const char *path, const char *name)
{
    if (check_file(path) != 0)
        return -1;
    char *uri = mfile_uri(path, "mode=ro&immutable=1");
    if (!uri)
        return lvd_fail("%s: out of memory", path);
    char sql[128];
    snprintf(sql, sizeof sql, "ATTACH DATABASE ?1 AS \"%s\"", name);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, uri, -1, SQLITE_TRANSIENT);
        rc = sqlite3_step(st);
    }
    free(uri);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE && rc != SQLITE_OK)
        return open_fail(db, path);
    return check_schema(db, name, path, NULL);
}

int mfile_info(sqlite3 *db, const char *schema, const char *key, const char *path, char **out)
{
    *out = NULL;
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT value FROM \"%s\".info WHERE key = ?1", schema);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return lvd_fail("%s: cannot read its info table: %s", path, sqlite3_errmsg(db));
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *out = strdup(mfile_col_text(st, 0));
        if (!*out) {
            sqlite3_finalize(st);
            return lvd_fail("%s: out of memory", path);
        }
    } else if (rc != SQLITE_DONE) {
        lvd_fail("%s: cannot read its info table: %s", path, sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return -1;
    }
    sqlite3_finalize(st);
    return 0;
}

/* The number of components of an absolute normalised path ("/" has none) and their start offsets. */
static size_t components(const char *p, size_t *starts, size_t max)
{
    size_t n = 0;
    for (size_t i = 0; p[i]; i++)
        if (p[i] != '/' && (i == 0 || p[i - 1] == '/')) {
            if (n < max)
                starts[n] = i;
            n++;
        }
    return n;
}

/* Length of the component at s (up to the next '/' or the end). */
static size_t comp_len(const char *s) { return strcspn(s, "/"); }

char *mfile_relpath(const char *from, const char *to)
{
    enum { MAXC = 512 }; /* components: PATH_MAX (4096) allows at most 2048; deeper paths fall back below */
    size_t fs[MAXC], ts[MAXC];
    size_t nf = components(from, fs, MAXC), nt = components(to, ts, MAXC);
    if (nf > MAXC || nt > MAXC)
        return strdup(to); /* absurdly deep: an absolute path is still a correct answer */
    size_t c = 0;
    while (c < nf && c < nt) {
        size_t lf = comp_len(from + fs[c]), lt = comp_len(to + ts[c]);
        if (lf != lt || memcmp(from + fs[c], to + ts[c], lf) != 0)
            break;
        c++;
    }
    size_t len = 3 * (nf - c) + strlen(to) + 2;
    char *r = malloc(len);
    if (!r)
        return NULL;
    char *p = r;
    for (size_t i = c; i < nf; i++)
        p += sprintf(p, "../");
    for (size_t i = c; i < nt; i++)
        p += sprintf(p, "%.*s%s", (int)comp_len(to + ts[i]), to + ts[i], i + 1 < nt ? "/" : "");
    if (p == r)
        *p++ = '.'; /* to == from */
    else if (p[-1] == '/')
        p--;
    *p = '\0';
    return r;
}
