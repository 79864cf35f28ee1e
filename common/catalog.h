/* catalog.h — the work directory's SQLite catalog: opening, migrations, transactions, runs, collections.
 *
 * One SQLite file per work directory (WORK/catalog.db), or per part of a partitioned run
 * (WORK/parts/<stage>-I-of-N.db, same schema). Opened in WAL mode with foreign keys on (off for part files,
 * whose rows refer to ids of catalog.db). The schema version is kept in the `meta` table; migrations from
 * schemas/catalog-NNN.sql are applied in order on open, each in one transaction. All SQL goes through
 * prepared statements; catalog_stmt() caches them by their SQL text.
 */
#ifndef LVD_CATALOG_H
#define LVD_CATALOG_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

typedef struct catalog catalog;

enum catalog_flags {
    CATALOG_READONLY = 1, /* open an existing catalog read-only (no migrations) */
    CATALOG_PART = 2,     /* a part file: foreign keys off */
    CATALOG_WAIT = 4      /* writable opens: wait for the catalog's lock instead of failing at once */
};

/* Opens or creates the catalog at path and brings its schema up to date. A catalog whose version is newer
 * than this build knows is refused with both versions in the message.
 * A writable open first takes the catalog's lock ("<path>.lock", lock.h) and holds it until catalog_close: one
 * writing process per catalog file. If another process holds it, the open fails at once with a message naming
 * the holder (program, run, stage, pid, host, start time), or waits for it with CATALOG_WAIT. Holding the lock,
 * it marks every run still 'running' as 'interrupted' (finished_at: its last commit), since none is alive. */
int catalog_open(catalog **out, const char *path, int flags);
void catalog_close(catalog *c);

sqlite3 *catalog_db(catalog *c);
const char *catalog_path(const catalog *c);

/* Schema version of the open file, and of this build. */
int catalog_schema_version(catalog *c);
int catalog_schema_latest(void);

/* A cached prepared statement for sql (reset and with bindings cleared); NULL on error (message set).
 * The cache is keyed by the text, so pass the same literal each time. */
sqlite3_stmt *catalog_stmt(catalog *c, const char *sql);

/* Runs SQL without results (may hold several statements). */
int catalog_exec(catalog *c, const char *sql);

/* Steps a statement to completion (SQLITE_DONE expected); -1 with the SQLite message otherwise. */
int catalog_step_done(catalog *c, sqlite3_stmt *st);

/* Records the failure of a step of st ("PATH: sqlite message (in: SQL...)"), resets st and returns -1: for
 * callers that step rows themselves and see an error code. */
int catalog_step_fail(catalog *c, sqlite3_stmt *st);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. A commit on a handle with a started run also stamps the run's
 * committed_at, in the same transaction. */
int catalog_begin(catalog *c);
int catalog_commit(catalog *c);
void catalog_rollback(catalog *c);

/* Records the start of a stage run (with this process's pid and host); *run_id gets its id. part is "I/N".
 * The catalog's lock then names the run. */
int catalog_run_start(catalog *c, const char *stage, const char *part, const char *params_json,
                      const char *fingerprint, int64_t *run_id);
/* status: "done" or "failed"; summary_json may be NULL. */
int catalog_run_finish(catalog *c, int64_t run_id, const char *status, const char *summary_json);

/* The rule for collection names, which become directory names (WORK/embeddings/<model>/<collection>/):
 * valid UTF-8 of 1 to CATALOG_NAME_MAX bytes; no '/', no control character (U+0000..U+001F, U+007F, and the
 * C1 controls U+0080..U+009F); not "." or ".."; no leading or trailing space. Anything else is allowed
 * (café, spaces inside, '%', '*', ...). 0 if name follows it, else -1 with a message quoting the name (control
 * characters and bytes that are not UTF-8 shown as \xNN) and saying what is allowed. */
#define CATALOG_NAME_MAX 200 /* bytes */
int catalog_check_collection_name(const char *name);

/* The id of collection `name`, creating it with `role` if new (name checked by catalog_check_collection_name;
 * existing collections are looked up by any name). An existing collection with another role is an error naming
 * both roles. role NULL: look up only (-1 with a message if missing). */
int catalog_collection(catalog *c, const char *name, const char *role, int64_t *id);

/* Model `name`: its id (0 when there is none), SHA-256 (sha: 65 bytes, may be NULL) and dim (may be NULL).
 * 0 or -1 (a database error). */
int catalog_model(catalog *c, const char *name, int64_t *id, char sha[65], int32_t *dim);

/* The models that have dedup decisions (whose dedup-kept pool a stage can read): *count of them, *first_id
 * the lowest id (0 if none), names their names in id order, ", "-separated (cut to cap bytes). With only_id
 * non-zero, that model alone is considered (*count 0 or 1). 0 or -1. */
int catalog_dedup_models(catalog *c, int64_t only_id, int *count, int64_t *first_id, char *names, size_t cap);

/* Current time as ISO 8601 UTC with milliseconds, e.g. "2026-11-26T10:38:05.123Z". */
void catalog_now(char buf[32]);

/* The same format for t seconds since the epoch. */
void catalog_format_time(double t, char buf[32]);

/* Single-value queries: the first column of the first row, or dflt when there is no row. -1 on error. */
int catalog_query_int(catalog *c, const char *sql, int64_t dflt, int64_t *out);

#endif
