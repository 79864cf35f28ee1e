/* store.c — shard appends with catalog-tracked commit points (see store.h). */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "atomic_file.h"
#include "err.h"
#include "shard.h"

#define STORE_PATH_MAX 4096
#define STORE_TOUCHED_MAX 8 /* shards one batch may span; rollover happens at most once per append */

struct store {
    catalog *cat;
    char work[STORE_PATH_MAX];
    char kind[8];
    char tag[32];
    uint64_t max_bytes;
    shard_writer *w;   /* the current shard */
    int64_t shard_id;  /* its catalog row */
    uint32_t number;   /* its NNNNNN */
    /* Shards written since the last sync: closed ones keep their final size here. */
    struct {
        int64_t id;
        uint64_t end;
        uint64_t members;
    } touched[STORE_TOUCHED_MAX];
    int ntouched;
    uint64_t pending_members; /* members appended to the current shard since the last sync */
};

static void shard_rel(const store *s, uint32_t number, char *buf, size_t cap)
{
    if (s->tag[0])
        snprintf(buf, cap, "shards/%s-%s-%06u.tar", s->kind, s->tag, number);
    else
        snprintf(buf, cap, "shards/%s-%06u.tar", s->kind, number);
}

/* Opens shard `number` (creating its row if new) for appending, truncating to its committed size. */
static int open_shard(store *s, uint32_t number)
{
    char rel[256], path[STORE_PATH_MAX + 256];
    shard_rel(s, number, rel, sizeof rel);
    snprintf(path, sizeof path, "%s/%s", s->work, rel);
    sqlite3_stmt *st = catalog_stmt(s->cat, "SELECT id, committed FROM shards WHERE path = ?1");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, rel, -1, SQLITE_TRANSIENT);
    int64_t id = -1;
    uint64_t committed = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        id = sqlite3_column_int64(st, 0);
        committed = (uint64_t)sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    if (id < 0) {
        st = catalog_stmt(s->cat, "INSERT INTO shards(path, kind) VALUES (?1, ?2)");
        if (!st)
            return -1;
        sqlite3_bind_text(st, 1, rel, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, s->kind, -1, SQLITE_TRANSIENT);
        if (catalog_step_done(s->cat, st) != 0)
            return -1;
        id = sqlite3_last_insert_rowid(catalog_db(s->cat));
    }
    if (shard_writer_open(&s->w, path, committed) != 0)
        return -1;
    s->shard_id = id;
    s->number = number;
    s->pending_members = 0;
    return 0;
}

int store_open(store **out, catalog *cat, const char *work, const char *kind, const char *tag, uint64_t max_bytes)
{
    *out = NULL;
    store *s = calloc(1, sizeof *s);
    if (!s)
        return lvd_fail("out of memory");
    s->cat = cat;
    s->max_bytes = max_bytes ? max_bytes : (uint64_t)1 << 30;
    if (snprintf(s->work, sizeof s->work, "%s", work) >= (int)sizeof s->work ||
        snprintf(s->kind, sizeof s->kind, "%s", kind) >= (int)sizeof s->kind ||
        snprintf(s->tag, sizeof s->tag, "%s", tag ? tag : "") >= (int)sizeof s->tag) {
        free(s);
        return lvd_fail("store: work path, kind or tag too long");
    }
    char dir[STORE_PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/shards", work);
    if (atomic_file_mkdirs(dir) != 0) {
        free(s);
        return -1;
    }
    /* The newest shard of this kind and tag: the one with the highest number in its name. */
    char pattern[128];
    if (s->tag[0])
        snprintf(pattern, sizeof pattern, "shards/%s-%s-[0-9][0-9][0-9][0-9][0-9][0-9].tar", s->kind, s->tag);
    else
        snprintf(pattern, sizeof pattern, "shards/%s-[0-9][0-9][0-9][0-9][0-9][0-9].tar", s->kind);
    sqlite3_stmt *st = catalog_stmt(cat, "SELECT path, committed FROM shards WHERE path GLOB ?1 ORDER BY path DESC LIMIT 1");
    if (!st) {
        free(s);
        return -1;
    }
    sqlite3_bind_text(st, 1, pattern, -1, SQLITE_TRANSIENT);
    uint32_t number = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *p = (const char *)sqlite3_column_text(st, 0);
        uint64_t committed = (uint64_t)sqlite3_column_int64(st, 1);
        number = (uint32_t)strtoul(p + strlen(p) - 10, NULL, 10);
        if (committed >= s->max_bytes)
            number++;
    }
    sqlite3_reset(st);
    if (open_shard(s, number) != 0) {
        free(s);
        return -1;
    }
    *out = s;
    return 0;
}

/* Remembers the current shard's size for the next store_sync. */
static int touch_current(store *s)
{
    uint64_t end = shard_writer_size(s->w);
    for (int i = 0; i < s->ntouched; i++) {
        if (s->touched[i].id == s->shard_id) {
            s->touched[i].end = end;
            s->touched[i].members = s->pending_members;
            return 0;
        }
    }
    if (s->ntouched == STORE_TOUCHED_MAX)
        return lvd_fail("store: one batch spans more than %d shards; sync more often", STORE_TOUCHED_MAX);
    s->touched[s->ntouched].id = s->shard_id;
    s->touched[s->ntouched].end = end;
    s->touched[s->ntouched].members = s->pending_members;
    s->ntouched++;
    return 0;
}

int store_append(store *s, const char *key, const char *ext, const void *data, size_t len, const char *meta_json,
                 int64_t *shard_id, uint64_t *offset)
{
    if (shard_writer_size(s->w) >= s->max_bytes) {
        /* Roll over: the full shard is flushed now; its committed size is recorded at the next sync. */
        if (touch_current(s) != 0 || shard_writer_flush(s->w, NULL) != 0)
            return -1;
        shard_writer_close(s->w);
        s->w = NULL;
        if (open_shard(s, s->number + 1) != 0)
            return -1;
    }
    char name[SHARD_NAME_MAX + 1];
    if (snprintf(name, sizeof name, "%s.%s", key, ext) >= (int)sizeof name)
        return lvd_fail("key '%.64s...' is too long for a shard member name", key);
    if (shard_writer_add(s->w, name, data, len, offset) != 0)
        return -1;
    s->pending_members++;
    if (meta_json) {
        snprintf(name, sizeof name, "%s.json", key);
        if (shard_writer_add(s->w, name, meta_json, strlen(meta_json), NULL) != 0)
            return -1;
        s->pending_members++;
    }
    *shard_id = s->shard_id;
    return touch_current(s);
}

int store_find_image(catalog *cat, const char *sha, int64_t *image_id)
{
    sqlite3_stmt *q = catalog_stmt(cat, "SELECT id FROM images WHERE sha256 = ?1");
    if (!q)
        return -1;
    sqlite3_bind_text(q, 1, sha, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(q), found = 0;
    if (rc == SQLITE_ROW) {
        *image_id = sqlite3_column_int64(q, 0);
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = lvd_fail("%s: looking up image %s: %s", catalog_path(cat), sha, sqlite3_errmsg(catalog_db(cat)));
    }
    sqlite3_reset(q);
    return found;
}

int store_add_image(store *s, const char *sha, const char *format, const char *ext, const void *data, size_t len,
                    const char *meta_json, int64_t run_id, int64_t *image_id)
{
    int64_t shard;
    uint64_t off;
    if (store_append(s, sha, ext, data, len, meta_json, &shard, &off) != 0)
        return -1;
    char now[32];
    catalog_now(now);
    sqlite3_stmt *st = catalog_stmt(s->cat, "INSERT INTO images(sha256, bytes, format, shard_id, offset, run_id,"
                                            " created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, sha, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, (int64_t)len);
    sqlite3_bind_text(st, 3, format, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, shard);
    sqlite3_bind_int64(st, 5, (int64_t)off);
    sqlite3_bind_int64(st, 6, run_id);
    sqlite3_bind_text(st, 7, now, -1, SQLITE_TRANSIENT);
    if (catalog_step_done(s->cat, st) != 0)
        return -1;
    *image_id = sqlite3_last_insert_rowid(catalog_db(s->cat));
    return 0;
}

int store_sync(store *s)
{
    if (s->ntouched == 0)
        return 0;
    /* Only the current shard can still hold unflushed bytes; rolled-over ones were flushed then. */
    if (shard_writer_flush(s->w, NULL) != 0)
        return -1;
    for (int i = 0; i < s->ntouched; i++) {
        sqlite3_stmt *st = catalog_stmt(s->cat, "UPDATE shards SET committed = ?1, members = members + ?2 WHERE id = ?3");
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, (int64_t)s->touched[i].end);
        sqlite3_bind_int64(st, 2, (int64_t)s->touched[i].members);
        sqlite3_bind_int64(st, 3, s->touched[i].id);
        if (catalog_step_done(s->cat, st) != 0)
            return -1;
    }
    s->ntouched = 0;
    s->pending_members = 0;
    return 0;
}

void store_close(store *s)
{
    if (!s)
        return;
    if (s->w)
        shard_writer_abandon(s->w);
    free(s);
}

int store_shard_path(catalog *cat, const char *work, int64_t shard_id, char *buf, size_t cap)
{
    sqlite3_stmt *st = catalog_stmt(cat, "SELECT path FROM shards WHERE id = ?1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, shard_id);
    int rc = -1;
    if (sqlite3_step(st) == SQLITE_ROW) {
        if (snprintf(buf, cap, "%s/%s", work, (const char *)sqlite3_column_text(st, 0)) < (int)cap)
            rc = 0;
        else
            lvd_fail("shard path too long");
    } else {
        lvd_fail("%s: no shard with id %lld", catalog_path(cat), (long long)shard_id);
    }
    sqlite3_reset(st);
    return rc;
}

int store_read(catalog *cat, const char *work, int64_t shard_id, uint64_t offset, void *buf, size_t len)
{
    char path[STORE_PATH_MAX + 256];
    if (store_shard_path(cat, work, shard_id, path, sizeof path) != 0)
        return -1;
    return shard_read_at(path, offset, buf, len);
}
