/* catalog.c — SQLite catalog: open, migrate, statement cache, runs, collections (see catalog.h). */
#include "catalog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "catalog_migrations.h"
#define CATALOG_SCHEMA_VERSION CATALOG_MIGRATIONS_COUNT
#include "err.h"
#include "lock.h"
#include "log.h"

#define STMT_CACHE 64 /* distinct SQL texts a process uses; more is a programming error */

struct catalog {
    sqlite3 *db;
    char *path;
    int flags;
    struct {
        const char *sql; /* SQLite's copy of the statement text (sqlite3_sql), compared by text */
        sqlite3_stmt *st;
    } cache[STMT_CACHE];
    int ncache;
    lvd_lock lock;  /* writable catalogs: held from open to close (lock.h) */
    int64_t run_id; /* the run started on this handle (catalog_run_start), 0 if none: commits stamp it */
};

static int db_fail(catalog *c, const char *what)
{
    return lvd_fail("%s: %s: %s", c->path, what, sqlite3_errmsg(c->db));
}

int catalog_schema_latest(void) { return CATALOG_SCHEMA_VERSION; }

int catalog_exec(catalog *c, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(c->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        lvd_fail("%s: %s", c->path, msg ? msg : sqlite3_errmsg(c->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int catalog_query_int(catalog *c, const char *sql, int64_t dflt, int64_t *out)
{
    sqlite3_stmt *st = catalog_stmt(c, sql);
    if (!st)
        return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_type(st, 0) == SQLITE_NULL ? dflt : sqlite3_column_int64(st, 0);
    else if (rc == SQLITE_DONE)
        *out = dflt;
    else
        return db_fail(c, sql);
    sqlite3_reset(st);
    return 0;
}

int catalog_schema_version(catalog *c)
{
    int64_t has_meta = 0, v = 0;
    if (catalog_query_int(c, "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='meta'", 0,
                          &has_meta) != 0)
        return -1;
    if (!has_meta)
        return 0;
    if (catalog_query_int(c, "SELECT CAST(value AS INTEGER) FROM meta WHERE key='schema_version'", 0, &v) != 0)
        return -1;
    return (int)v;
}

/* Applies every migration past the file's version, each with its version bump in one transaction. Foreign
 * keys are off meanwhile (the pragma is a no-op inside a transaction, so it is set around them): a migration
 * may rebuild a table that others refer to (catalog-005.sql), which SQLite's documented procedure does with
 * them off; rebuilt tables keep their ids. */
static int migrate(catalog *c)
{
    int v = catalog_schema_version(c);
    if (v < 0)
        return -1;
    if (v > CATALOG_SCHEMA_VERSION)
        return lvd_fail("%s: catalog schema version %d is newer than this lvd understands (%d); use a newer lvd",
                        c->path, v, CATALOG_SCHEMA_VERSION);
    if (v == CATALOG_SCHEMA_VERSION)
        return 0;
    if (catalog_exec(c, "PRAGMA foreign_keys=OFF") != 0)
        return -1;
    for (int i = v; i < CATALOG_SCHEMA_VERSION; i++) {
        if (catalog_exec(c, "BEGIN IMMEDIATE") != 0)
            return -1;
        char bump[160];
        snprintf(bump, sizeof bump,
                 "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                 "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', '%d');",
                 i + 1);
        if (catalog_exec(c, catalog_migrations[i]) != 0 || catalog_exec(c, bump) != 0) {
            lvd_fail_ctx("migrating catalog to schema version %d", i + 1);
            sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
            return -1;
        }
        if (catalog_exec(c, "COMMIT") != 0)
            return -1;
    }
    return (c->flags & CATALOG_PART) ? 0 : catalog_exec(c, "PRAGMA foreign_keys=ON");
}

/* The program name for holder texts ("lvd-crawl"). */
static const char *program_name(void)
{
    extern char *program_invocation_short_name; /* glibc */
    return program_invocation_short_name;
}

/* Marks every 'running' run of a catalog this process holds the lock of: none is alive (lock.h). */
static int mark_interrupted(catalog *c)
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT id, stage, part, started_at, coalesce(committed_at, started_at),"
                                       " pid, host FROM runs WHERE status = 'running' ORDER BY id");
    if (!st)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char who[300] = "";
        if (sqlite3_column_type(st, 5) != SQLITE_NULL)
            snprintf(who, sizeof who, ", pid %lld on host %s", (long long)sqlite3_column_int64(st, 5),
                     (const char *)sqlite3_column_text(st, 6));
        log_warn("%s: run %lld (%s %s%s, started %s) did not finish: marked interrupted at its last commit, %s",
                 c->path, (long long)sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
                 (const char *)sqlite3_column_text(st, 2), who, (const char *)sqlite3_column_text(st, 3),
                 (const char *)sqlite3_column_text(st, 4));
    }
    if (rc != SQLITE_DONE)
        return catalog_step_fail(c, st);
    sqlite3_reset(st);
    return catalog_exec(c, "UPDATE runs SET status = 'interrupted', finished_at = coalesce(committed_at, started_at)"
                           " WHERE status = 'running'");
}

int catalog_open(catalog **out, const char *path, int flags)
{
    *out = NULL;
    catalog *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(path))) {
        free(c);
        return lvd_fail("%s: out of memory", path);
    }
    c->flags = flags;
    c->lock.fd = -1;
    if (!(flags & CATALOG_READONLY)) {
        /* One writer per file: taken before SQLite opens it, so a second writer neither migrates nor waits on
         * SQLite's busy timeout, and says at once who holds it. */
        char lock_path[4200], me[300], holder[LOCK_HOLDER_MAX], now[32];
        snprintf(lock_path, sizeof lock_path, "%s.lock", path);
        lock_whoami(me, sizeof me);
        catalog_now(now);
        snprintf(holder, sizeof holder, "%s (%s, since %s)", program_name(), me, now);
        if (lock_acquire(&c->lock, lock_path, path, holder, flags & CATALOG_WAIT) != 0) {
            catalog_close(c);
            return -1;
        }
    }
    int oflags = (flags & CATALOG_READONLY) ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE;
    if (sqlite3_open_v2(path, &c->db, oflags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        lvd_fail("%s: cannot open catalog: %s", path, c->db ? sqlite3_errmsg(c->db) : "out of memory");
        catalog_close(c);
        return -1;
    }
    /* A busy timeout lets a status query or a second reader wait out a writer's commit. */
    sqlite3_busy_timeout(c->db, 30000);
    sqlite3_extended_result_codes(c->db, 1);
    const char *pragmas = (flags & CATALOG_READONLY) ? "PRAGMA foreign_keys=ON;"
                          : (flags & CATALOG_PART)   ? "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                                                       "PRAGMA foreign_keys=OFF;"
                                                     : "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                                                       "PRAGMA foreign_keys=ON;";
    if (catalog_exec(c, pragmas) != 0)
        goto fail;
    if (flags & CATALOG_READONLY) {
        int v = catalog_schema_version(c);
        if (v < 0)
            goto fail;
        if (v != CATALOG_SCHEMA_VERSION) {
            lvd_fail("%s: catalog schema version %d, this lvd expects %d (open it read-write once to migrate)",
                     path, v, CATALOG_SCHEMA_VERSION);
            goto fail;
        }
    } else if (migrate(c) != 0 || mark_interrupted(c) != 0) {
        goto fail;
    }
    *out = c;
    return 0;
fail:
    catalog_close(c);
    return -1;
}

void catalog_close(catalog *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->ncache; i++)
        sqlite3_finalize(c->cache[i].st);
    if (c->db)
        sqlite3_close(c->db);
    lock_release(&c->lock); /* after SQLite has closed the file */
    free(c->path);
    free(c);
}

sqlite3 *catalog_db(catalog *c) { return c->db; }
const char *catalog_path(const catalog *c) { return c->path; }

sqlite3_stmt *catalog_stmt(catalog *c, const char *sql)
{
    for (int i = 0; i < c->ncache; i++) {
        if (strcmp(c->cache[i].sql, sql) == 0) {
            sqlite3_stmt *st = c->cache[i].st;
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return st;
        }
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(c->db, sql, -1, &st, NULL) != SQLITE_OK) {
        db_fail(c, "preparing statement");
        return NULL;
    }
    if (c->ncache == STMT_CACHE) {
        sqlite3_finalize(st);
        lvd_fail("%s: statement cache full (%d statements)", c->path, STMT_CACHE);
        return NULL;
    }
    /* Keyed by SQLite's own copy of the text: callers may build SQL dynamically and free it. */
    c->cache[c->ncache].sql = sqlite3_sql(st);
    c->cache[c->ncache].st = st;
    c->ncache++;
    return st;
}

int catalog_step_done(catalog *c, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) {
        sqlite3_reset(st);
        return 0;
    }
    return catalog_step_fail(c, st);
}

int catalog_step_fail(catalog *c, sqlite3_stmt *st)
{
    lvd_fail("%s: %s (in: %.120s)", c->path, sqlite3_errmsg(c->db), sqlite3_sql(st));
    sqlite3_reset(st);
    return -1;
}

int catalog_begin(catalog *c) { return catalog_exec(c, "BEGIN IMMEDIATE"); }
int catalog_commit(catalog *c)
{
    if (c->run_id > 0) {
        /* The run's last commit, in the same transaction: what an interrupted run is marked with. */
        char now[32];
        catalog_now(now);
        sqlite3_stmt *st = catalog_stmt(c, "UPDATE runs SET committed_at = ?1 WHERE id = ?2");
        if (!st)
            return -1;
        sqlite3_bind_text(st, 1, now, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, c->run_id);
        if (catalog_step_done(c, st) != 0)
            return -1;
    }
    return catalog_exec(c, "COMMIT");
}

void catalog_rollback(catalog *c)
{
    if (!sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

void catalog_format_time(double t, char buf[32])
{
    time_t s = (time_t)t;
    int ms = (int)((t - (double)s) * 1000.0);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, 32 - n, ".%03dZ", ms < 0 ? 0 : ms > 999 ? 999 : ms);
}

void catalog_now(char buf[32])
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    catalog_format_time((double)tv.tv_sec + (double)tv.tv_usec * 1e-6, buf);
}

int catalog_run_start(catalog *c, const char *stage, const char *part, const char *params_json,
                      const char *fingerprint, int64_t *run_id)
{
    char now[32], host[256];
    catalog_now(now);
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = '\0';
    sqlite3_stmt *st = catalog_stmt(c, "INSERT INTO runs(stage, part, params, fingerprint, started_at, pid, host)"
                                       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, stage, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, part, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, params_json ? params_json : "{}", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, fingerprint ? fingerprint : "", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, now, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 6, (int64_t)getpid());
    sqlite3_bind_text(st, 7, host, -1, SQLITE_TRANSIENT);
    if (catalog_step_done(c, st) != 0)
        return -1;
    *run_id = c->run_id = sqlite3_last_insert_rowid(c->db);
    if (c->lock.fd >= 0) {
        char holder[LOCK_HOLDER_MAX];
        snprintf(holder, sizeof holder, "%s run %lld (stage %s, part %s, pid %ld on host %s, started %s)",
                 program_name(), (long long)*run_id, stage, part, (long)getpid(), host, now);
        if (lock_describe(&c->lock, holder) != 0)
            return lvd_fail_ctx("%s.lock", c->path);
    }
    return 0;
}

int catalog_run_finish(catalog *c, int64_t run_id, const char *status, const char *summary_json)
{
    char now[32];
    catalog_now(now);
    sqlite3_stmt *st =
        catalog_stmt(c, "UPDATE runs SET finished_at = ?1, status = ?2, summary = ?3 WHERE id = ?4");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, now, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, status, -1, SQLITE_TRANSIENT);
    if (summary_json)
        sqlite3_bind_text(st, 3, summary_json, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, run_id);
    if (run_id == c->run_id)
        c->run_id = 0;
    return catalog_step_done(c, st);
}

/* Length in bytes of the UTF-8 sequence at s (at most n bytes available) and its code point in *cp, or 0 when
 * the bytes there are not well-formed UTF-8 (overlong forms, surrogates and values past U+10FFFF included). */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char b = s[0];
    size_t len;
    uint32_t v, min;
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    if (b >= 0xc2 && b <= 0xdf) {
        len = 2, v = b & 0x1fu, min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
        len = 3, v = b & 0x0fu, min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
        len = 4, v = b & 0x07u, min = 0x10000;
    } else {
        return 0; /* a continuation byte, or a lead byte only overlong or out-of-range forms start with */
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3fu);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

#define NAME_SHOWN 240 /* bytes of a name quoted in a message at most (more than CATALOG_NAME_MAX) */

/* name for a message, into out (cap bytes, "..." when cut): control characters and bytes that are not UTF-8
 * as \xNN, so a terminal shows what is there instead of acting on it. */
static void quote_name(const char *name, char *out, size_t cap)
{
    const unsigned char *s = (const unsigned char *)name;
    size_t n = strlen(name), o = 0, i = 0;
    while (i < n && o + 8 < cap && i < NAME_SHOWN) {
        uint32_t cp;
        size_t len = utf8_seq(s + i, n - i, &cp);
        if (len == 0 || cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f)) {
            for (size_t k = 0; k < (len ? len : 1) && o + 5 < cap; k++)
                o += (size_t)snprintf(out + o, cap - o, "\\x%02x", s[i + k]);
            i += len ? len : 1;
        } else {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        }
    }
    if (i < n && o + 4 < cap) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

int catalog_check_collection_name(const char *name)
{
    const unsigned char *s = (const unsigned char *)name;
    size_t n = strlen(name);
    char why[64] = "";
    if (n == 0)
        snprintf(why, sizeof why, "it is empty");
    else if (n > CATALOG_NAME_MAX)
        snprintf(why, sizeof why, "it has %zu bytes", n);
    else if (!strcmp(name, ".") || !strcmp(name, ".."))
        snprintf(why, sizeof why, "'%s' is not a directory name", name[1] ? ".." : ".");
    else if (s[0] == ' ' || s[n - 1] == ' ')
        snprintf(why, sizeof why, "it %s with a space", s[0] == ' ' ? "starts" : "ends");
    for (size_t i = 0; !why[0] && i < n;) {
        uint32_t cp;
        size_t len = utf8_seq(s + i, n - i, &cp);
        if (len == 0)
            snprintf(why, sizeof why, "byte %zu is not UTF-8", i + 1);
        else if (cp == '/')
            snprintf(why, sizeof why, "it contains '/'");
        else if (cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f))
            snprintf(why, sizeof why, "it contains the control character U+%04X", (unsigned)cp);
        i += len;
    }
    if (!why[0])
        return 0;
    char shown[420]; /* with the rest of the message, within LVD_ERR_MAX */
    quote_name(name, shown, sizeof shown);
    return lvd_fail("collection name '%s' is not allowed (%s): a collection name becomes a directory name "
                    "(WORK/embeddings/<model>/<collection>/), so it must be valid UTF-8 of 1 to %d bytes, without '/' "
                    "or control characters, not '.' or '..', and without a leading or trailing space; other "
                    "characters (letters of any script, spaces inside, punctuation) are allowed",
                    shown, why, CATALOG_NAME_MAX);
}

int catalog_collection(catalog *c, const char *name, const char *role, int64_t *id)
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT id, role FROM collections WHERE name = ?1");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        const char *have = (const char *)sqlite3_column_text(st, 1);
        int same = !role || strcmp(have, role) == 0;
        char have_copy[16];
        snprintf(have_copy, sizeof have_copy, "%s", have);
        sqlite3_reset(st);
        if (!same)
            return lvd_fail("collection '%s' already exists with role '%s', not '%s'", name, have_copy, role);
        return 0;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return db_fail(c, "looking up collection");
    if (!role)
        return lvd_fail("%s: no collection named '%s'", c->path, name);
    if (strcmp(role, "pool") && strcmp(role, "seed") && strcmp(role, "benchmark"))
        return lvd_fail("collection role must be pool, seed or benchmark, not '%s'", role);
    if (catalog_check_collection_name(name) != 0)
        return -1;
    char now[32];
    catalog_now(now);
    st = catalog_stmt(c, "INSERT INTO collections(name, role, created_at) VALUES (?1, ?2, ?3)");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, role, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, now, -1, SQLITE_TRANSIENT);
    if (catalog_step_done(c, st) != 0)
        return -1;
    *id = sqlite3_last_insert_rowid(c->db);
    return 0;
}

int catalog_model(catalog *c, const char *name, int64_t *id, char sha[65], int32_t *dim)
{
    *id = 0;
    sqlite3_stmt *st = catalog_stmt(c, "SELECT id, sha256, dim FROM models WHERE name = ?1");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        if (sha)
            snprintf(sha, 65, "%s", sqlite3_column_text(st, 1) ? (const char *)sqlite3_column_text(st, 1) : "");
        if (dim)
            *dim = (int32_t)sqlite3_column_int64(st, 2);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : db_fail(c, "reading models");
}

int catalog_dedup_models(catalog *c, int64_t only_id, int *count, int64_t *first_id, char *names, size_t cap)
{
    *count = 0;
    *first_id = 0;
    if (cap)
        names[0] = '\0';
    sqlite3_stmt *st = catalog_stmt(c, "SELECT m.id, m.name FROM models m WHERE (?1 = 0 OR m.id = ?1) AND EXISTS "
                                       "(SELECT 1 FROM dedup_decisions d WHERE d.model_id = m.id) ORDER BY m.id");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, only_id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if ((*count)++ == 0)
            *first_id = sqlite3_column_int64(st, 0);
        size_t len = cap ? strlen(names) : 0;
        if (len + 1 < cap)
            snprintf(names + len, cap - len, "%s%s", len ? ", " : "", (const char *)sqlite3_column_text(st, 1));
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : db_fail(c, "reading dedup models");
}
