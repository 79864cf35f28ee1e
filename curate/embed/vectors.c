/* vectors.c — embedding files and their catalog rows, model names and identities (see vectors.h). */
#include "vectors.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "atomic_file.h"
#include "err.h"
#include "log.h"
#include "sha256.h"

void embed_out_init(embed_out *o, stage *st, const char *name, npy_dtype dtype, int64_t file_rows)
{
    memset(o, 0, sizeof *o);
    o->st = st;
    o->cat = st->cat;
    o->main_ro = st->part.count > 1 ? st->main_ro : NULL;
    o->name = name;
    o->dtype = dtype;
    o->file_rows = file_rows;
    o->model_id = -1;
    o->main_model_id = o->main_skip_id = -1;
}

int embed_out_alloc(embed_out *o)
{
    o->rows = malloc(sizeof(float) * (size_t)o->file_rows * (size_t)o->dim);
    o->ids = malloc(sizeof(int64_t) * (size_t)o->file_rows);
    if (!o->rows || !o->ids)
        return lvd_fail("out of memory for %" PRId64 " rows of %d floats (lower --file-rows)", o->file_rows,
                        (int)o->dim);
    return 0;
}

void embed_out_free(embed_out *o)
{
    free(o->rows);
    free(o->ids);
    o->rows = NULL;
    o->ids = NULL;
    o->n = 0;
}

/* The largest file number of prefix recorded for model_id in c, or -1. Names are prefix + 6 digits + ".npy".
 * Names are matched by bytes: SQLite's length() and substr() count characters, which differ from strlen() as
 * soon as a collection name is not ASCII, and LIKE/GLOB would read '_', '%', '*', '[' in it as wildcards. So:
 * a range of `file` in its BINARY (memcmp) order from prefix"000000.npy" to prefix"999999.npy", answered by
 * the index embeddings_file (model_id, file, row) from its upper end; every name in the range that is exactly
 * as many bytes long starts with prefix, and only its last 10 bytes go through GLOB (cast back to text: GLOB
 * matches nothing on a BLOB). */
static int max_file_no(catalog *c, int64_t model_id, const char *prefix, int64_t *out_no)
{
    *out_no = -1;
    if (!c || model_id < 0)
        return 0;
    size_t plen = strlen(prefix);
    char lo[640], hi[640]; /* prefix (less than the 512 bytes of embed_out.prefix) + "NNNNNN.npy" */
    if (snprintf(lo, sizeof lo, "%s000000.npy", prefix) >= (int)sizeof lo ||
        snprintf(hi, sizeof hi, "%s999999.npy", prefix) >= (int)sizeof hi)
        return lvd_fail("%s: file name prefix too long", prefix);
    sqlite3_stmt *st = catalog_stmt(c, "SELECT file FROM embeddings WHERE model_id = ?1 AND file BETWEEN ?2 AND ?3"
                                       " AND length(CAST(file AS BLOB)) = ?4"
                                       " AND CAST(substr(CAST(file AS BLOB), ?4 - 9) AS TEXT)"
                                       " GLOB '[0-9][0-9][0-9][0-9][0-9][0-9].npy'"
                                       " ORDER BY file DESC LIMIT 1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, model_id);
    sqlite3_bind_text(st, 2, lo, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, hi, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, (int64_t)plen + 10); /* bytes */
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *f = (const char *)sqlite3_column_text(st, 0);
        *out_no = strtoll(f + plen, NULL, 10);
    } else if (rc != SQLITE_DONE) {
        lvd_fail("%s: %s", catalog_path(c), sqlite3_errmsg(catalog_db(c)));
        sqlite3_reset(st);
        return -1;
    }
    sqlite3_reset(st);
    return 0;
}

int embed_out_begin_collection(embed_out *o, const char *collection)
{
    /* Collections made before the rule existed may have any name; this one becomes a directory name. */
    if (catalog_check_collection_name(collection) != 0)
        return -1;
    const char *tag = o->st->shard_tag;
    if (snprintf(o->prefix, sizeof o->prefix, "embeddings/%s/%s/part-%s%s", o->name, collection, tag,
                 tag[0] ? "-" : "") >= (int)sizeof o->prefix)
        return lvd_fail("collection name '%s' is too long", collection);
    int64_t a, b;
    if (max_file_no(o->cat, o->model_id, o->prefix, &a) != 0 ||
        max_file_no(o->main_ro, o->main_model_id, o->prefix, &b) != 0)
        return -1;
    o->next_no = (a > b ? a : b) + 1;
    char dir[STAGE_PATH_MAX + 600];
    snprintf(dir, sizeof dir, "%s/embeddings/%s/%s", o->st->work, o->name, collection);
    return atomic_file_mkdirs(dir);
}

int embed_out_flush(embed_out *o)
{
    if (o->n == 0)
        return 0;
    if (o->next_no > 999999)
        return lvd_fail("%s: more than 1000000 files; use a larger --file-rows", o->prefix);
    char rel[600], path[STAGE_PATH_MAX + 700];
    snprintf(rel, sizeof rel, "%s%06" PRId64 ".npy", o->prefix, o->next_no);
    snprintf(path, sizeof path, "%s/%s", o->st->work, rel);
    int64_t shape[2] = {o->n, o->dim};
    if (npy_write(path, o->rows, 2, shape, o->dtype) != 0)
        return -1;
    if (catalog_begin(o->cat) != 0)
        return -1;
    for (int64_t i = 0; i < o->n; i++) {
        sqlite3_stmt *st = catalog_stmt(o->cat, "INSERT OR REPLACE INTO embeddings(model_id, image_id, file, row,"
                                                " run_id) VALUES (?1, ?2, ?3, ?4, ?5)");
        if (!st)
            goto fail;
        sqlite3_bind_int64(st, 1, o->model_id);
        sqlite3_bind_int64(st, 2, o->ids[i]);
        sqlite3_bind_text(st, 3, rel, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 4, i);
        sqlite3_bind_int64(st, 5, o->st->run_id);
        if (catalog_step_done(o->cat, st) != 0)
            goto fail;
    }
    if (catalog_commit(o->cat) != 0)
        goto fail;
    log_debug("wrote %s (%" PRId64 " rows)", rel, o->n);
    o->written += (uint64_t)o->n;
    o->files++;
    o->next_no++;
    o->n = 0;
    return 0;
fail:
    catalog_rollback(o->cat);
    return -1;
}

int embed_out_add(embed_out *o, int64_t image_id, const float *row)
{
    memcpy(o->rows + (size_t)o->n * (size_t)o->dim, row, sizeof(float) * (size_t)o->dim);
    o->ids[o->n++] = image_id;
    return o->n == o->file_rows ? embed_out_flush(o) : 0;
}

double embed_l2_normalise(float *v, int32_t n)
{
    double s = 0;
    for (int32_t i = 0; i < n; i++)
        s += (double)v[i] * v[i];
    double norm = sqrt(s);
    if (norm > 0)
        for (int32_t i = 0; i < n; i++)
            v[i] = (float)(v[i] / norm);
    return norm;
}

int embed_model_lookup(catalog *c, const char *name, int64_t *id, embed_identity *idn)
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT id, sha256, preprocess, dim FROM models WHERE name = ?1");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *id = sqlite3_column_int64(st, 0);
        snprintf(idn->sha, sizeof idn->sha, "%s", (const char *)sqlite3_column_text(st, 1));
        snprintf(idn->preprocess, sizeof idn->preprocess, "%s", (const char *)sqlite3_column_text(st, 2));
        idn->dim = (int32_t)sqlite3_column_int64(st, 3);
        sqlite3_reset(st);
        return 1;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return lvd_fail("%s: %s", catalog_path(c), sqlite3_errmsg(catalog_db(c)));
    return 0;
}

int embed_same_identity(const embed_identity *a, const embed_identity *b)
{
    return !strcmp(a->sha, b->sha) && !strcmp(a->preprocess, b->preprocess) && a->dim == b->dim;
}

int embed_is_imported(const embed_identity *idn) { return !strcmp(idn->preprocess, "imported"); }

/* The error for a checkpoint run whose identity want differs from the identity have recorded in catalog where. */
static int identity_conflict(const char *where, const char *name, const embed_identity *have,
                             const embed_identity *want)
{
    if (embed_is_imported(have))
        return lvd_fail("%s: model name '%s' holds imported embeddings (lvd-embed --import, dim %d): lvd-embed --model "
                        "cannot add rows to it. Use another --name, or --force to drop the imported embeddings of "
                        "'%s' and embed with this checkpoint (sha256 %.12s...)",
                        where, name, (int)have->dim, name, want->sha);
    return lvd_fail("%s: model name '%s' is recorded for weights sha256 %.12s... with preprocessing %s (dim %d); "
                    "this run has sha256 %.12s... with %s (dim %d). Use another --name, or --force to drop the "
                    "old embeddings of '%s' and embed again",
                    where, name, have->sha, have->preprocess, (int)have->dim, want->sha, want->preprocess,
                    (int)want->dim, name);
}

/* Deletes the embedding rows of model id in c: all of them, or with coll those of collection *coll's members.
 * 0 or -1. */
static int drop_rows(catalog *c, int64_t id, const int64_t *coll)
{
    sqlite3_stmt *st = coll ? catalog_stmt(c, "DELETE FROM embeddings WHERE model_id = ?1 AND image_id IN"
                                              " (SELECT image_id FROM members WHERE collection_id = ?2)")
                            : catalog_stmt(c, "DELETE FROM embeddings WHERE model_id = ?1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    if (coll)
        sqlite3_bind_int64(st, 2, *coll);
    return catalog_step_done(c, st);
}

/* Ends the transaction open on o->cat by recording the identity (sha, preprocess, dim) of o->name: a new models row
 * when id < 0 (o->model_id becomes its id), else row id rewritten; then commits. Rolls back on failure. 0 or -1. */
static int put_model_row(embed_out *o, int64_t id, const char *sha, const char *preprocess, int32_t dim)
{
    char now[32];
    catalog_now(now);
    sqlite3_stmt *st = id < 0 ? catalog_stmt(o->cat, "INSERT INTO models(name, sha256, preprocess, dim, created_at)"
                                                     " VALUES (?1, ?2, ?3, ?4, ?5)")
                              : catalog_stmt(o->cat, "UPDATE models SET sha256 = ?2, preprocess = ?3, dim = ?4,"
                                                     " created_at = ?5 WHERE id = ?1");
    if (!st)
        goto fail;
    if (id < 0)
        sqlite3_bind_text(st, 1, o->name, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_text(st, 2, sha, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, preprocess, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, dim);
    sqlite3_bind_text(st, 5, now, -1, SQLITE_TRANSIENT);
    if (catalog_step_done(o->cat, st) != 0)
        goto fail;
    if (id < 0)
        o->model_id = sqlite3_last_insert_rowid(catalog_db(o->cat));
    return catalog_commit(o->cat);
fail:
    catalog_rollback(o->cat);
    return -1;
}

int embed_model_register(embed_out *o, const embed_identity *want, int force, const int64_t *coll_ids, int nc)
{
    o->main_model_id = o->main_skip_id = -1;
    int64_t id;
    embed_identity have;
    if (o->main_ro) {
        int r = embed_model_lookup(o->main_ro, o->name, &id, &have);
        if (r < 0)
            return -1;
        if (r == 1) {
            o->main_model_id = id;
            if (embed_same_identity(&have, want))
                o->main_skip_id = force ? -1 : id;
            else if (!force)
                return identity_conflict(catalog_path(o->main_ro), o->name, &have, want);
        }
    }
    int r = embed_model_lookup(o->cat, o->name, &id, &have);
    if (r < 0)
        return -1;
    if (r == 1 && !embed_same_identity(&have, want) && !force)
        return identity_conflict(catalog_path(o->cat), o->name, &have, want);
    if (catalog_begin(o->cat) != 0)
        return -1;
    if (r == 1) {
        o->model_id = id;
        int some = force && embed_same_identity(&have, want) && nc > 0 && o->st->part.count == 1;
        for (int i = 0; force && i < (some ? nc : 1); i++)
            if (drop_rows(o->cat, id, some ? &coll_ids[i] : NULL) != 0)
                goto fail;
        if (embed_same_identity(&have, want))
            return catalog_commit(o->cat);
        log_warn("--force: model name '%s' moves from sha256 %.12s... %s to %.12s... %s; its old embeddings are "
                 "dropped", o->name, have.sha, have.preprocess, want->sha, want->preprocess);
    }
    return put_model_row(o, r == 1 ? id : -1, want->sha, want->preprocess, want->dim);
fail:
    catalog_rollback(o->cat);
    return -1;
}

void embed_derived_identity(const char *old_sha, const char *file_sha, char out[65])
{
    char text[160];
    snprintf(text, sizeof text, "%s\n%s\n", old_sha, file_sha);
    sha256_hex(text, strlen(text), out);
}

int embed_import_register(embed_out *o, const char *npy_path, const char *file_sha, int32_t dim, int force,
                          int64_t coll_id, char sha_out[65])
{
    int64_t id;
    embed_identity have;
    int r = embed_model_lookup(o->cat, o->name, &id, &have);
    if (r < 0)
        return -1;
    int imported = r == 1 && embed_is_imported(&have);
    if (r == 1 && !imported && !force)
        return lvd_fail("%s: model name '%s' holds embeddings computed by lvd-embed --model (weights sha256 %.12s..., "
                        "preprocessing %s, dim %d): --import adds rows only to a name created by --import. Use "
                        "another --name, or --force to drop the embeddings of '%s' and make it an imported model",
                        catalog_path(o->cat), o->name, have.sha, have.preprocess, (int)have.dim, o->name);
    if (imported && have.dim != dim && !force)
        return lvd_fail("%s: model name '%s' holds imported embeddings of dimension %d but %s has %d columns. Use "
                        "another --name, or --force to drop the embeddings of '%s' and import again",
                        catalog_path(o->cat), o->name, (int)have.dim, npy_path, (int)dim, o->name);
    if (catalog_begin(o->cat) != 0)
        return -1;
    int moves = r == 1 && (!imported || have.dim != dim);
    if (r == 1 && !force) {
        o->model_id = id;
        snprintf(sha_out, 65, "%s", have.sha);
        return catalog_commit(o->cat);
    }
    if (r == 1) {
        o->model_id = id;
        if (drop_rows(o->cat, id, moves ? NULL : &coll_id) != 0)
            goto fail;
        int64_t dropped = sqlite3_changes(catalog_db(o->cat));
        if (moves) {
            log_warn("--force: model name '%s' moves from sha256 %.12s... %s (dim %d) to imported embeddings (dim %d); "
                     "its old embeddings are dropped", o->name, have.sha, have.preprocess, (int)have.dim, (int)dim);
            snprintf(sha_out, 65, "%s", file_sha);
        } else if (dropped > 0) {
            embed_derived_identity(have.sha, file_sha, sha_out);
            log_info("--force: %" PRId64 " rows of '%s' replaced; its identity becomes %.12s... (was %.12s...)",
                     dropped, o->name, sha_out, have.sha);
        } else {
            snprintf(sha_out, 65, "%s", have.sha);
            return catalog_commit(o->cat);
        }
    } else {
        snprintf(sha_out, 65, "%s", file_sha);
    }
    return put_model_row(o, r == 1 ? id : -1, sha_out, "imported", dim);
fail:
    catalog_rollback(o->cat);
    return -1;
}

/* Used by resumes of partitioned runs and by imports (an image keeps its first row). */
int embed_have_row(const embed_out *o, int64_t image_id)
{
    sqlite3_stmt *q = catalog_stmt(o->cat, "SELECT 1 FROM embeddings WHERE model_id = ?1 AND image_id = ?2");
    if (!q)
        return -1;
    sqlite3_bind_int64(q, 1, o->model_id);
    sqlite3_bind_int64(q, 2, image_id);
    int rc = sqlite3_step(q);
    sqlite3_reset(q);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc != SQLITE_DONE)
        return lvd_fail("%s: %s", catalog_path(o->cat), sqlite3_errmsg(catalog_db(o->cat)));
    return 0;
}
