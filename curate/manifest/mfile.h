/* mfile.h — what build, stats and diff share: opening a manifest file read-only with its checks, and small
 * SQL and path helpers. Private to curate/manifest/ (the trainer's reader is common/manifest.h, which also
 * opens the shards; stats and diff need only the SQLite file, so they work on a manifest whose shards are
 * elsewhere).
 *
 * Errors follow err.h: 0 or -1 with a message naming the file.
 */
#ifndef LVD_MANIFEST_MFILE_H
#define LVD_MANIFEST_MFILE_H

#include <sqlite3.h>
#include <stdint.h>

#define MFILE_SCHEMA_VERSION 1 /* the newest manifest schema stats and diff read (schemas/manifest-001.sql) */

/* Opens `path` read-only and immutable (a manifest is never modified, so SQLite needs no lock, journal or
 * -shm file and works on a read-only medium). Refused, naming the file: a missing file, a directory, a file
 * that is not SQLite, an SQLite file that is not an lvd manifest (no info table with a schema_version, or a
 * table of schema version 1 missing), a schema_version that is not a positive integer or is newer than
 * MFILE_SCHEMA_VERSION. *version gets the file's schema version (may be NULL). */
int mfile_open(const char *path, sqlite3 **out, int *version);

/* ATTACHes manifest `path` to db as schema `name` with the same checks as mfile_open. */
int mfile_attach(sqlite3 *db, const char *path, const char *name);

/* "file:" URI of path (percent-encoded) with the query ("mode=ro&immutable=1"); malloc'ed, NULL when out of
 * memory. */
char *mfile_uri(const char *path, const char *query);

/* Value of info key `key` (malloc'ed) or NULL when absent (*out NULL, return 0). schema: "main" or an attached
 * name. */
int mfile_info(sqlite3 *db, const char *schema, const char *key, const char *path, char **out);

/* The path of `to` relative to directory `from`; both absolute and normalised (realpath output). "../" as
 * needed; "." components never appear. malloc'ed, NULL when out of memory. */
char *mfile_relpath(const char *from, const char *to);

/* Text of column i, "" for NULL. */
const char *mfile_col_text(sqlite3_stmt *st, int i);

#endif
