/* lvd-embed — turns the decoded working images of a work directory into L2-normalised embeddings, one
 * (rows, dim) .npy file at a time under WORK/embeddings/<name>/<collection>/, with catalog rows mapping
 * (model, image) to (file, row). Or imports embeddings computed elsewhere (--import).
 *
 * Pipeline: the main thread selects the next batch of images from the catalog and hands it to the loader
 * thread, which reads, decodes and preprocesses it (with a few helper threads) while the main thread runs
 * the previous batch through the ViT: two input buffers, double buffering. Rows collect in memory until a
 * file is full; the file is written whole (temporary name + rename) and only then are its catalog rows
 * committed. A crash in between leaves an orphan file that no row points at; file numbers come from the
 * catalog, so the next run writes the same name again and replaces it.
 *
 * --import adds one file's rows for one collection per run; a name created by --import collects the rows of
 * any number of such runs (pool and benchmark collections under one model name, as lvd-dedup needs) and keeps
 * the identity of its first file (import_register).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic_file.h"
#include "catalog.h"
#include "cli.h"
#include "image.h"
#include "npy.h"
#include "opts.h"
#include "preprocess.h"
#include "progress.h"
#include "sha256.h"
#include "shard.h"
#include "stage.h"
#include "vit.h"
#include "vit_io.h"

#define PROG "lvd-embed"
#define MAX_COLL 64
#define MAX_LOADERS 16
#define NAME_MAX_LEN 100
#define NORM_TOL 1e-3 /* |norm - 1| above this counts as "not normalised" on import */

static const char usage[] =
    "Usage: lvd-embed --work DIR --model M.safetensors [--name NAME] [options]\n"
    "       lvd-embed --work DIR --collection C --import E.npy --keys K.txt --name NAME\n"
    "       lvd-embed --work DIR --merge\n"
    "Embeds every decoded working image (decode status ok) that has no embedding for this model yet, with\n"
    "DINOv2's evaluation transform (resize the shorter side, bicubic; center crop; ImageNet normalisation),\n"
    "and writes L2-normalised rows to WORK/embeddings/NAME/COLLECTION/part-NNNNNN.npy.\n\n"
    "  --model FILE            ViT checkpoint (safetensors, DINOv2 key names)\n"
    "  --name NAME             model name: directory under embeddings/ and catalog key (default: the\n"
    "                          checkpoint's file name without .safetensors); letters, digits, . _ -\n"
    "  --collection NAME       only images of this collection (repeatable; default: all collections)\n"
    "  --resize N              shorter side before cropping (256)\n"
    "  --crop N                center crop side, a multiple of the patch size (224)\n"
    "  --pool cls|mean|cls+mean  features: normed CLS token (cls), mean of the normed patch tokens (mean),\n"
    "                          or their concatenation [cls, mean] (cls+mean); every row is L2-normalised\n"
    "  --dtype float16|float32 dtype of the .npy files (float16)\n"
    "  --batch N               images per forward pass (32)\n"
    "  --threads N             threads of the ViT (number of CPUs)\n"
    "  --loaders N             threads reading and preprocessing the next batch (1 per 2 CPUs, at least 1)\n"
    "  --file-rows N           rows per .npy file (8192); a file and its catalog rows are committed together\n"
    "  --import E.npy          import a (rows, dim) float16/float32 array computed elsewhere: row i belongs to\n"
    "  --keys K.txt            the member of --collection whose key is line i of K.txt; rows that are not\n"
    "                          unit length are normalised (and counted); needs no --model. A NAME created by\n"
    "                          --import takes further imports of the same dim (other collections, new members):\n"
    "                          images that already have a row of NAME are skipped (\"already present\")\n"
    "  --force                 embed everything again (with --import: replace the rows of the collection's\n"
    "                          images); also lets NAME move to another model (other weights or preprocessing,\n"
    "                          imported <-> checkpoint, another dim): the name's old catalog rows are dropped\n"
    "                          and its .npy files are rewritten from part 0 (files past the new last part are\n"
    "                          left unreferenced)\n"
    "  --part I/N | --merge    partitioned runs (see lvd-crawl --help); parts write part-pIofN-NNNNNN.npy\n"
    "  --config FILE.yaml  --json  --quiet | --verbose  --version  --help\n"
    "A model's identity is the SHA-256 of its weights plus its preprocessing; a NAME already recorded with\n"
    "another identity is an error unless --force. An imported NAME's identity is the SHA-256 of the file that\n"
    "created it: later imports add rows and keep it (an --import --force that replaces rows derives a new one).\n"
    "--import into a NAME embedded with --model, or --model into an imported NAME, is an error unless --force.\n";

enum {
    OPT_COLLECTION = OPT_FIRST_STAGE_OPTION, OPT_MODEL, OPT_NAME, OPT_RESIZE, OPT_CROP, OPT_POOL, OPT_DTYPE,
    OPT_BATCH, OPT_THREADS, OPT_LOADERS, OPT_FILE_ROWS, OPT_IMPORT, OPT_KEYS
};

enum { POOL_CLS = 0, POOL_MEAN = 1, POOL_CLS_MEAN = 2 };
static const char *const pool_names[] = {"cls", "mean", "cls+mean", NULL};
static const char *const dtype_names[] = {"float16", "float32", NULL};

/* ---------------------------------------------------------------------------------------------------------
 * Output: rows collected for the current file of one collection, the model row, file numbering.
 */

typedef struct out {
    stage *st;
    catalog *cat;          /* target catalog (catalog.db or the part file) */
    catalog *main_ro;      /* partitioned runs: catalog.db, read-only (may be NULL) */
    const char *name;      /* model name */
    int64_t model_id;      /* in cat */
    int64_t main_model_id; /* partitioned runs: the name's id in catalog.db (any identity), or -1 */
    int64_t main_skip_id;  /* id in catalog.db whose rows count as done (same identity, no --force), or -1 */
    int32_t dim;
    npy_dtype dtype;
    int64_t file_rows;
    float *rows;           /* file_rows x dim */
    int64_t *ids;          /* file_rows image ids */
    int64_t n;             /* rows collected */
    char prefix[512];      /* "embeddings/<name>/<collection>/part-" (+ "pIofN-") */
    int64_t next_no;       /* number of the next file */
    uint64_t written, files;
} out;

/* The largest file number of prefix recorded for model_id in c, or -1. Names are prefix + 6 digits + ".npy". */
static int max_file_no(catalog *c, int64_t model_id, const char *prefix, int64_t *out_no)
{
    *out_no = -1;
    if (!c || model_id < 0)
        return 0;
    sqlite3_stmt *st = catalog_stmt(c, "SELECT max(file) FROM embeddings WHERE model_id = ?1"
                                       " AND substr(file, 1, ?3) = ?2 AND length(file) = ?3 + 10");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, model_id);
    sqlite3_bind_text(st, 2, prefix, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, (int64_t)strlen(prefix));
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        const char *f = (const char *)sqlite3_column_text(st, 0);
        *out_no = strtoll(f + strlen(prefix), NULL, 10);
    } else if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        lvd_fail("%s: %s", catalog_path(c), sqlite3_errmsg(catalog_db(c)));
        sqlite3_reset(st);
        return -1;
    }
    sqlite3_reset(st);
    return 0;
}

/* Starts the files of one collection: directory, prefix, and the next number after every file either
 * catalog records (catalog.db's own files are never overwritten by a part). */
static int out_begin_collection(out *o, const char *collection)
{
    if (!collection[0] || strchr(collection, '/') || !strcmp(collection, ".") || !strcmp(collection, ".."))
        return lvd_fail("collection name '%s' cannot be a directory name under embeddings/%s/", collection, o->name);
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

/* Writes the collected rows as the next file, then commits their catalog rows. */
static int out_flush(out *o)
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

/* Adds one normalised row; writes the file when it is full. */
static int out_add(out *o, int64_t image_id, const float *row)
{
    memcpy(o->rows + (size_t)o->n * (size_t)o->dim, row, sizeof(float) * (size_t)o->dim);
    o->ids[o->n++] = image_id;
    return o->n == o->file_rows ? out_flush(o) : 0;
}

/* L2-normalises v in place; returns the norm it had. */
static double l2_normalise(float *v, int32_t n)
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

typedef struct identity {
    char sha[65];
    char preprocess[256];
    int32_t dim;
} identity;

/* The model row of name in c: 1 found (id and identity filled), 0 none, -1 error. */
static int model_lookup(catalog *c, const char *name, int64_t *id, identity *idn)
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

static int same_identity(const identity *a, const identity *b)
{
    return !strcmp(a->sha, b->sha) && !strcmp(a->preprocess, b->preprocess) && a->dim == b->dim;
}

static int is_imported(const identity *idn) { return !strcmp(idn->preprocess, "imported"); }

static int identity_conflict(const char *where, const char *name, const identity *have, const identity *want)
{
    if (is_imported(have))
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

/* Finds or creates the model row in the target catalog (and looks at catalog.db in partitioned runs).
 * --force with another identity: the row takes this identity and all the name's rows are dropped. --force
 * with the same identity: the rows of the images of collections coll_ids (nc of them; 0 = all) are dropped,
 * so those images are embedded again (a part file drops all its rows of the name). */
static int model_register(out *o, const identity *want, int force, const int64_t *coll_ids, int nc)
{
    o->main_model_id = o->main_skip_id = -1;
    int64_t id;
    identity have;
    if (o->main_ro) {
        int r = model_lookup(o->main_ro, o->name, &id, &have);
        if (r < 0)
            return -1;
        if (r == 1) {
            o->main_model_id = id;
            if (same_identity(&have, want))
                o->main_skip_id = force ? -1 : id;
            else if (!force)
                return identity_conflict(catalog_path(o->main_ro), o->name, &have, want);
        }
    }
    int r = model_lookup(o->cat, o->name, &id, &have);
    if (r < 0)
        return -1;
    if (r == 1 && !same_identity(&have, want) && !force)
        return identity_conflict(catalog_path(o->cat), o->name, &have, want);
    if (catalog_begin(o->cat) != 0)
        return -1;
    char now[32];
    catalog_now(now);
    sqlite3_stmt *st;
    if (r == 0) {
        st = catalog_stmt(o->cat, "INSERT INTO models(name, sha256, preprocess, dim, created_at)"
                                  " VALUES (?1, ?2, ?3, ?4, ?5)");
        if (!st)
            goto fail;
        sqlite3_bind_text(st, 1, o->name, -1, SQLITE_TRANSIENT);
    } else {
        o->model_id = id;
        int some = force && same_identity(&have, want) && nc > 0 && o->st->part.count == 1;
        for (int i = 0; force && i < (some ? nc : 1); i++) {
            st = some ? catalog_stmt(o->cat, "DELETE FROM embeddings WHERE model_id = ?1 AND image_id IN"
                                             " (SELECT image_id FROM members WHERE collection_id = ?2)")
                      : catalog_stmt(o->cat, "DELETE FROM embeddings WHERE model_id = ?1");
            if (!st)
                goto fail;
            sqlite3_bind_int64(st, 1, id);
            if (some)
                sqlite3_bind_int64(st, 2, coll_ids[i]);
            if (catalog_step_done(o->cat, st) != 0)
                goto fail;
        }
        if (same_identity(&have, want))
            return catalog_commit(o->cat);
        log_warn("--force: model name '%s' moves from sha256 %.12s... %s to %.12s... %s; its old embeddings are "
                 "dropped", o->name, have.sha, have.preprocess, want->sha, want->preprocess);
        st = catalog_stmt(o->cat, "UPDATE models SET sha256 = ?2, preprocess = ?3, dim = ?4, created_at = ?5"
                                  " WHERE id = ?1");
        if (!st)
            goto fail;
        sqlite3_bind_int64(st, 1, id);
    }
    sqlite3_bind_text(st, 2, want->sha, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, want->preprocess, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, want->dim);
    sqlite3_bind_text(st, 5, now, -1, SQLITE_TRANSIENT);
    if (catalog_step_done(o->cat, st) != 0)
        goto fail;
    if (r == 0)
        o->model_id = sqlite3_last_insert_rowid(catalog_db(o->cat));
    return catalog_commit(o->cat);
fail:
    catalog_rollback(o->cat);
    return -1;
}

/* The identity an --import --force gives a name whose rows it replaced: derived from the old identity and the
 * file, so it differs from both and from every earlier value (the name's vectors changed). */
static void derived_identity(const char *old_sha, const char *file_sha, char out[65])
{
    char text[160];
    snprintf(text, sizeof text, "%s\n%s\n", old_sha, file_sha);
    sha256_hex(text, strlen(text), out);
}

/* --import: finds or creates the imported model row of o->name (catalog.db; --import takes no --part).
 * A name created by --import takes rows from any number of files (other collections, new members) of the same
 * dim and keeps its identity: sha256 stays that of the file that created it, so what is keyed on the model
 * identity (lvd-dedup's fingerprint) sees added rows as new work, not as another model. --force drops the rows
 * of the images of collection coll_id first; if it dropped any, the identity becomes derived_identity() (the
 * name's vectors changed). A name of a checkpoint model (preprocess not "imported") or of another dim is an
 * error, unless --force, which moves the name: all its rows are dropped. sha_out gets the identity kept. */
static int import_register(out *o, const char *npy_path, const char *file_sha, int32_t dim, int force,
                           int64_t coll_id, char sha_out[65])
{
    int64_t id;
    identity have;
    int r = model_lookup(o->cat, o->name, &id, &have);
    if (r < 0)
        return -1;
    int imported = r == 1 && is_imported(&have);
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
    char now[32];
    catalog_now(now);
    sqlite3_stmt *st;
    int moves = r == 1 && (!imported || have.dim != dim);
    if (r == 1 && !force) {
        o->model_id = id;
        snprintf(sha_out, 65, "%s", have.sha);
        return catalog_commit(o->cat);
    }
    if (r == 1) {
        o->model_id = id;
        st = moves ? catalog_stmt(o->cat, "DELETE FROM embeddings WHERE model_id = ?1")
                   : catalog_stmt(o->cat, "DELETE FROM embeddings WHERE model_id = ?1 AND image_id IN"
                                          " (SELECT image_id FROM members WHERE collection_id = ?2)");
        if (!st)
            goto fail;
        sqlite3_bind_int64(st, 1, id);
        if (!moves)
            sqlite3_bind_int64(st, 2, coll_id);
        if (catalog_step_done(o->cat, st) != 0)
            goto fail;
        int64_t dropped = sqlite3_changes(catalog_db(o->cat));
        if (moves) {
            log_warn("--force: model name '%s' moves from sha256 %.12s... %s (dim %d) to imported embeddings (dim %d); "
                     "its old embeddings are dropped", o->name, have.sha, have.preprocess, (int)have.dim, (int)dim);
            snprintf(sha_out, 65, "%s", file_sha);
        } else if (dropped > 0) {
            derived_identity(have.sha, file_sha, sha_out);
            log_info("--force: %" PRId64 " rows of '%s' replaced; its identity becomes %.12s... (was %.12s...)",
                     dropped, o->name, sha_out, have.sha);
        } else {
            snprintf(sha_out, 65, "%s", have.sha);
            return catalog_commit(o->cat);
        }
        st = catalog_stmt(o->cat, "UPDATE models SET sha256 = ?2, preprocess = ?3, dim = ?4, created_at = ?5"
                                  " WHERE id = ?1");
        if (!st)
            goto fail;
        sqlite3_bind_int64(st, 1, id);
    } else {
        snprintf(sha_out, 65, "%s", file_sha);
        st = catalog_stmt(o->cat, "INSERT INTO models(name, sha256, preprocess, dim, created_at)"
                                  " VALUES (?1, ?2, ?3, ?4, ?5)");
        if (!st)
            goto fail;
        sqlite3_bind_text(st, 1, o->name, -1, SQLITE_TRANSIENT);
    }
    sqlite3_bind_text(st, 2, sha_out, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, "imported", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, dim);
    sqlite3_bind_text(st, 5, now, -1, SQLITE_TRANSIENT);
    if (catalog_step_done(o->cat, st) != 0)
        goto fail;
    if (r == 0)
        o->model_id = sqlite3_last_insert_rowid(catalog_db(o->cat));
    return catalog_commit(o->cat);
fail:
    catalog_rollback(o->cat);
    return -1;
}

static int out_alloc(out *o)
{
    o->rows = malloc(sizeof(float) * (size_t)o->file_rows * (size_t)o->dim);
    o->ids = malloc(sizeof(int64_t) * (size_t)o->file_rows);
    if (!o->rows || !o->ids)
        return lvd_fail("out of memory for %" PRId64 " rows of %d floats (lower --file-rows)", o->file_rows,
                        (int)o->dim);
    return 0;
}

/* 1 if the target catalog already holds a row for (model, image): resumes of partitioned runs. */
static int have_row(out *o, int64_t image_id)
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

/* ---------------------------------------------------------------------------------------------------------
 * Loader: reads, decodes and preprocesses one batch while the previous one runs in the model.
 */

typedef struct item {
    int64_t image_id;
    char path[STAGE_PATH_MAX + 256]; /* working image shard */
    uint64_t offset, size;
    int ok;
    char error[384];
} item;

enum { SLOT_EMPTY = 0, SLOT_QUEUED, SLOT_READY };

typedef struct slot {
    item *items;
    int n;
    float *x; /* (batch, 3, crop, crop) */
    int state;
} slot;

typedef struct loader {
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    slot slots[2];
    int next;  /* slot the loader takes next */
    int stop;
    int threads;
    uint32_t resize, crop;
    /* the slot being worked on, shared with the helper threads */
    slot *cur;
    atomic_int cur_next;
} loader;

/* scratch/cap: the worker's resize buffer, grown as needed (freed by the caller). */
static void load_item(loader *l, item *it, float *x, uint8_t **scratch, size_t *cap)
{
    img_rgb im = {0};
    uint8_t *data = malloc(it->size ? it->size : 1);
    it->ok = 0;
    if (!data) {
        snprintf(it->error, sizeof it->error, "out of memory reading %" PRIu64 " bytes", it->size);
        return;
    }
    if (shard_read_at(it->path, it->offset, data, it->size) != 0) {
        snprintf(it->error, sizeof it->error, "%s", lvd_errmsg());
        goto done;
    }
    img_status s = img_decode(data, it->size, (uint64_t)1 << 34, 0, 0, &im);
    if (s != IMG_OK) {
        snprintf(it->error, sizeof it->error, "working image at %.150s:%" PRIu64 ": %.200s", it->path, it->offset,
                 lvd_errmsg());
        goto done;
    }
    size_t need = preprocess_scratch_bytes(im.w, im.h, l->resize, l->crop);
    if (need > *cap) {
        uint8_t *nb = realloc(*scratch, need);
        if (nb) {
            *scratch = nb;
            *cap = need;
        }
    }
    if (preprocess_image(&im, l->resize, l->crop, x, *scratch, *cap) != 0) {
        snprintf(it->error, sizeof it->error, "%s", lvd_errmsg());
        goto done;
    }
    it->ok = 1;
done:
    img_free(&im);
    free(data);
}

static void *load_worker(void *arg)
{
    loader *l = arg;
    slot *s = l->cur;
    size_t per = (size_t)3 * l->crop * l->crop;
    uint8_t *scratch = NULL;
    size_t cap = 0;
    int i;
    while ((i = atomic_fetch_add(&l->cur_next, 1)) < s->n)
        load_item(l, &s->items[i], s->x + (size_t)i * per, &scratch, &cap);
    free(scratch);
    return NULL;
}

static void *loader_main(void *arg)
{
    loader *l = arg;
    for (;;) {
        pthread_mutex_lock(&l->mu);
        while (!l->stop && l->slots[l->next].state != SLOT_QUEUED)
            pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop) {
            pthread_mutex_unlock(&l->mu);
            return NULL;
        }
        slot *s = &l->slots[l->next];
        pthread_mutex_unlock(&l->mu);
        l->cur = s;
        atomic_store(&l->cur_next, 0);
        pthread_t tid[MAX_LOADERS];
        int started = 0;
        for (int t = 1; t < l->threads && t < s->n; t++)
            if (pthread_create(&tid[started], NULL, load_worker, l) == 0)
                started++;
        load_worker(l);
        for (int t = 0; t < started; t++)
            pthread_join(tid[t], NULL);
        pthread_mutex_lock(&l->mu);
        s->state = SLOT_READY;
        l->next ^= 1;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
    }
}

static void slot_queue(loader *l, int k)
{
    pthread_mutex_lock(&l->mu);
    l->slots[k].state = SLOT_QUEUED;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
}

static void slot_wait(loader *l, int k)
{
    pthread_mutex_lock(&l->mu);
    while (l->slots[k].state != SLOT_READY)
        pthread_cond_wait(&l->cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
}

/* ---------------------------------------------------------------------------------------------------------
 * Embedding with a model
 */

typedef struct embedder {
    out o;
    vit_model *m;
    vit_run *run_full, *run_tail;
    int32_t tail_n;
    int32_t batch;
    uint32_t resize, crop;
    int pool;
    catalog *src;        /* where images come from */
    loader ld;
    float *feat;         /* one row scratch */
    uint64_t failed;
    int64_t *failed_ids; /* sorted: images that failed this run, not tried again for another collection */
    size_t failed_cap;
    progress prog;
} embedder;

static int cmp_id(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The next images of collection coll_id after *last without a row for this model: up to batch of them in s.
 * Returns the count (0 at the end) or -1. */
static int fetch_batch(embedder *e, int64_t coll_id, int64_t *last, slot *s)
{
    static const char *sql =
        "SELECT d.image_id, i.sha256, sh.path, d.offset, d.size FROM decodes d"
        " JOIN images i ON i.id = d.image_id JOIN shards sh ON sh.id = d.shard_id"
        " WHERE d.image_id > ?2 AND d.status = 'ok'"
        " AND EXISTS (SELECT 1 FROM members m WHERE m.image_id = d.image_id AND m.collection_id = ?1)"
        " AND NOT EXISTS (SELECT 1 FROM embeddings x WHERE x.model_id = ?3 AND x.image_id = d.image_id)"
        " ORDER BY d.image_id LIMIT ?4";
    int partitioned = e->o.st->part.count > 1;
    s->n = 0;
    for (;;) {
        sqlite3_stmt *st = catalog_stmt(e->src, sql);
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, coll_id);
        sqlite3_bind_int64(st, 2, *last);
        sqlite3_bind_int64(st, 3, partitioned ? e->o.main_skip_id : e->o.model_id);
        sqlite3_bind_int(st, 4, e->batch * 4);
        int rows = 0, rc;
        while (s->n < e->batch && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            rows++;
            int64_t id = sqlite3_column_int64(st, 0);
            *last = id;
            const char *sha = (const char *)sqlite3_column_text(st, 1);
            if (e->failed && bsearch(&id, e->failed_ids, e->failed, sizeof *e->failed_ids, cmp_id))
                continue;
            if (partitioned) {
                if (!part_owns(&e->o.st->part, sha, strlen(sha)))
                    continue;
                int h = have_row(&e->o, id);
                if (h < 0) {
                    sqlite3_reset(st);
                    return -1;
                }
                if (h)
                    continue;
            }
            item *it = &s->items[s->n++];
            it->image_id = id;
            snprintf(it->path, sizeof it->path, "%s/%s", e->o.st->work, (const char *)sqlite3_column_text(st, 2));
            it->offset = (uint64_t)sqlite3_column_int64(st, 3);
            it->size = (uint64_t)sqlite3_column_int64(st, 4);
            it->error[0] = '\0';
        }
        sqlite3_reset(st);
        if (s->n == e->batch || rows == 0)
            return s->n;
    }
}

/* Images the run will embed, for the progress line (one part only: parts filter by hash). An image in two
 * collections counts once. */
static int count_pending(embedder *e, const int64_t *coll_ids, int nc, uint64_t *total)
{
    *total = 0;
    for (int i = 0; i < nc; i++) {
        sqlite3_stmt *st = catalog_stmt(
            e->src, "SELECT count(*) FROM decodes d WHERE d.status = 'ok'"
                    " AND EXISTS (SELECT 1 FROM members m WHERE m.image_id = d.image_id AND m.collection_id = ?1)"
                    " AND NOT EXISTS (SELECT 1 FROM members m2 WHERE m2.image_id = d.image_id"
                    "                 AND m2.collection_id IN (SELECT value FROM json_each(?3)))"
                    " AND NOT EXISTS (SELECT 1 FROM embeddings x WHERE x.model_id = ?2 AND x.image_id = d.image_id)");
        if (!st)
            return -1;
        char prev[MAX_COLL * 24 + 4];
        size_t n = (size_t)snprintf(prev, sizeof prev, "[");
        for (int j = 0; j < i; j++)
            n += (size_t)snprintf(prev + n, sizeof prev - n, "%s%" PRId64, j ? "," : "", coll_ids[j]);
        snprintf(prev + n, sizeof prev - n, "]");
        sqlite3_bind_int64(st, 1, coll_ids[i]);
        sqlite3_bind_int64(st, 2, e->o.model_id);
        sqlite3_bind_text(st, 3, prev, -1, SQLITE_TRANSIENT);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            *total += (uint64_t)sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        if (rc != SQLITE_ROW)
            return lvd_fail("%s: counting images to embed: %s", catalog_path(e->src), sqlite3_errmsg(catalog_db(e->src)));
    }
    return 0;
}

/* Runs the ready slot through the model and adds one pooled, normalised row per image that loaded. */
static int embed_slot(embedder *e, slot *s)
{
    for (int i = 0; i < s->n; i++)
        if (!s->items[i].ok) {
            log_warn("image %" PRId64 " not embedded: %s", s->items[i].image_id, s->items[i].error);
            if (e->failed == e->failed_cap) {
                size_t cap = e->failed_cap ? 2 * e->failed_cap : 64;
                int64_t *nf = realloc(e->failed_ids, cap * sizeof *nf);
                if (!nf)
                    return lvd_fail("out of memory");
                e->failed_ids = nf;
                e->failed_cap = cap;
            }
            size_t at = 0;
            while (at < e->failed && e->failed_ids[at] < s->items[i].image_id)
                at++;
            memmove(e->failed_ids + at + 1, e->failed_ids + at, (e->failed - at) * sizeof *e->failed_ids);
            e->failed_ids[at] = s->items[i].image_id;
            e->failed++;
        }
    vit_run *r = e->run_full;
    if (s->n != e->batch) {
        if (!e->run_tail || e->tail_n != s->n) {
            vit_run_free(e->run_tail);
            e->run_tail = NULL;
            vit_run_opts ro = {s->n, (int32_t)e->crop, (int32_t)e->crop, 0, 0};
            if (vit_run_create(e->m, &ro, &e->run_tail) != 0)
                return -1;
            e->tail_n = s->n;
        }
        r = e->run_tail;
    }
    if (vit_forward(e->m, r, s->x, NULL, 0.0f, 0) != 0)
        return -1;
    const float *cls = vit_out_cls(r), *patch = vit_out_patch(r);
    const int32_t D = e->m->cfg.dim, np = (int32_t)((e->crop / (uint32_t)e->m->cfg.patch) *
                                                   (e->crop / (uint32_t)e->m->cfg.patch));
    for (int i = 0; i < s->n; i++) {
        if (!s->items[i].ok)
            continue;
        float *f = e->feat;
        if (e->pool != POOL_MEAN)
            memcpy(f, cls + (size_t)i * D, sizeof(float) * (size_t)D);
        if (e->pool != POOL_CLS) {
            float *mean = f + (e->pool == POOL_CLS_MEAN ? D : 0);
            const float *p = patch + (size_t)i * np * D;
            for (int32_t d = 0; d < D; d++) {
                double acc = 0;
                for (int32_t t = 0; t < np; t++)
                    acc += p[(size_t)t * D + d];
                mean[d] = (float)(acc / np);
            }
        }
        l2_normalise(f, e->o.dim);
        if (out_add(&e->o, s->items[i].image_id, f) != 0)
            return -1;
    }
    return 0;
}

/* Embeds every pending image of one collection, double buffered. */
static int embed_collection(embedder *e, int64_t coll_id, const char *coll_name)
{
    if (out_begin_collection(&e->o, coll_name) != 0)
        return -1;
    loader *l = &e->ld;
    int64_t last = 0;
    /* Slots are used in turn across collections: start where the loader will look next (it is idle). */
    pthread_mutex_lock(&l->mu);
    int k = l->next;
    pthread_mutex_unlock(&l->mu);
    uint64_t before = e->o.written + (uint64_t)e->o.n;
    int n = fetch_batch(e, coll_id, &last, &l->slots[k]);
    if (n < 0)
        return -1;
    if (n > 0)
        slot_queue(l, k);
    int rc = 0;
    while (n > 0) {
        slot *next = &l->slots[k ^ 1];
        int nn = fetch_batch(e, coll_id, &last, next);
        if (nn < 0)
            rc = -1;
        if (nn > 0)
            slot_queue(l, k ^ 1);
        slot_wait(l, k);
        if (rc == 0 && embed_slot(e, &l->slots[k]) != 0)
            rc = -1;
        l->slots[k].state = SLOT_EMPTY;
        if (rc != 0) {
            if (nn > 0) { /* let the loader finish the queued slot before the buffers go away */
                slot_wait(l, k ^ 1);
                next->state = SLOT_EMPTY;
            }
            return -1;
        }
        progress_update(&e->prog, e->o.written + (uint64_t)e->o.n, e->failed);
        n = nn;
        k ^= 1;
    }
    if (out_flush(&e->o) != 0)
        return -1;
    uint64_t got = e->o.written - before;
    if (got)
        log_info("embed: %s: %" PRIu64 " images embedded", coll_name, got);
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * Import
 */

typedef struct keyline {
    char *key;
    int64_t image_id;
    int64_t line;  /* 0-based */
    int dup;       /* an earlier line names the same image */
} keyline;

/* By image id, then line. */
static int cmp_keyline(const void *a, const void *b)
{
    const keyline *x = *(keyline *const *)a, *y = *(keyline *const *)b;
    if (x->image_id != y->image_id)
        return (x->image_id > y->image_id) - (x->image_id < y->image_id);
    return (x->line > y->line) - (x->line < y->line);
}

static int read_keys(const char *path, keyline **out_keys, int64_t *out_n)
{
    *out_keys = NULL;
    *out_n = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return lvd_fail_errno("cannot open %s", path);
    keyline *keys = NULL;
    int64_t n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    int rc = 0;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0) {
            rc = lvd_fail("%s:%" PRId64 ": empty key", path, n + 1);
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            keyline *nk = realloc(keys, sizeof *keys * (size_t)cap);
            if (!nk) {
                rc = lvd_fail("%s: out of memory", path);
                break;
            }
            keys = nk;
        }
        keys[n].image_id = -1;
        keys[n].line = n;
        keys[n].dup = 0;
        if (!(keys[n].key = strdup(line))) {
            rc = lvd_fail("%s: out of memory", path);
            break;
        }
        n++;
    }
    if (rc == 0 && ferror(f))
        rc = lvd_fail_errno("reading %s", path);
    free(line);
    fclose(f);
    *out_keys = keys;
    *out_n = n;
    return rc;
}

static int file_sha256(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return lvd_fail_errno("cannot open %s", path);
    sha256_ctx *c = sha256_new();
    if (!c) {
        fclose(f);
        return lvd_fail("out of memory");
    }
    char buf[1 << 16];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0)
        sha256_update(c, buf, k);
    int err = ferror(f);
    fclose(f);
    uint8_t d[SHA256_BYTES];
    sha256_final(c, d);
    if (err)
        return lvd_fail_errno("reading %s", path);
    sha256_to_hex(d, hex);
    return 0;
}

typedef struct import_counts {
    uint64_t rows, normalised, already, dup_images;
} import_counts;

/* --import: validates keys and rows, registers the name (import_register) and writes the rows of images that
 * have no row of this name yet (any collection's); images that have one are counted in ic->already. file_sha:
 * SHA-256 of npy_path; model_sha gets the name's identity after the run. */
static int run_import(out *o, const char *npy_path, const char *file_sha, const char *keys_path, const char *coll,
                      int force, import_counts *ic, char model_sha[65])
{
    keyline *keys = NULL;
    int64_t nk = 0;
    npy_array a = {0};
    int rc = -1;
    if (read_keys(keys_path, &keys, &nk) != 0 || npy_read(npy_path, &a) != 0)
        goto out;
    if (a.ndim != 2) {
        lvd_fail("%s: expected a 2-D (rows, dim) array, found %d dimensions", npy_path, (int)a.ndim);
        goto out;
    }
    if (a.shape[0] != nk) {
        lvd_fail("%s has %" PRId64 " rows but %s has %" PRId64 " keys: row i must belong to the key on line i",
                 npy_path, a.shape[0], keys_path, nk);
        goto out;
    }
    if (a.shape[1] < 1 || a.shape[1] > (1 << 20)) {
        lvd_fail("%s: %" PRId64 " columns is not an embedding dimension", npy_path, a.shape[1]);
        goto out;
    }
    int64_t coll_id;
    if (catalog_collection(o->cat, coll, NULL, &coll_id) != 0)
        goto out;
    /* Keys -> image ids; report the first few unknown keys with their line numbers. */
    char listed[1024] = "";
    size_t ll = 0;
    int64_t unknown = 0;
    for (int64_t i = 0; i < nk; i++) {
        sqlite3_stmt *st = catalog_stmt(o->cat, "SELECT image_id FROM members WHERE collection_id = ?1 AND key = ?2");
        if (!st)
            goto out;
        sqlite3_bind_int64(st, 1, coll_id);
        sqlite3_bind_text(st, 2, keys[i].key, -1, SQLITE_STATIC);
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW)
            keys[i].image_id = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        if (r != SQLITE_ROW && r != SQLITE_DONE) {
            lvd_fail("%s: %s", catalog_path(o->cat), sqlite3_errmsg(catalog_db(o->cat)));
            goto out;
        }
        if (r == SQLITE_DONE) {
            if (unknown < 5 && ll < sizeof listed - 200)
                ll += (size_t)snprintf(listed + ll, sizeof listed - ll, "%s line %" PRId64 " '%.120s'",
                                       unknown ? "," : "", i + 1, keys[i].key);
            unknown++;
        }
    }
    if (unknown) {
        lvd_fail("%s: %" PRId64 " key%s not in collection '%s':%s%s", keys_path, unknown, unknown == 1 ? " is" : "s are",
                 coll, listed, unknown > 5 ? ", ..." : "");
        goto out;
    }
    int32_t dim = (int32_t)a.shape[1];
    for (int64_t i = 0; i < nk; i++) {
        float *row = a.data + (size_t)i * (size_t)dim;
        for (int32_t d = 0; d < dim; d++)
            if (!isfinite(row[d])) {
                lvd_fail("%s: row %" PRId64 " (key '%s', line %" PRId64 " of %s) is not finite", npy_path, i,
                         keys[i].key, i + 1, keys_path);
                goto out;
            }
        double norm = l2_normalise(row, dim);
        if (norm == 0) {
            lvd_fail("%s: row %" PRId64 " (key '%s', line %" PRId64 " of %s) is all zeros and cannot be normalised",
                     npy_path, i, keys[i].key, i + 1, keys_path);
            goto out;
        }
        if (fabs(norm - 1.0) > NORM_TOL)
            ic->normalised++;
    }
    if (ic->normalised)
        log_warn("%s: %" PRIu64 " of %" PRId64 " rows were not L2-normalised (|norm - 1| > %g): normalised them",
                 npy_path, ic->normalised, nk, NORM_TOL);
    o->dim = dim;
    if (import_register(o, npy_path, file_sha, dim, force, coll_id, model_sha) != 0 || out_alloc(o) != 0 ||
        out_begin_collection(o, coll) != 0)
        goto out;
    /* One row per image: the same image under two keys keeps the row of its first line. */
    keyline **order = malloc(sizeof *order * (size_t)(nk ? nk : 1));
    if (!order) {
        lvd_fail("out of memory");
        goto out;
    }
    for (int64_t i = 0; i < nk; i++)
        order[i] = &keys[i];
    qsort(order, (size_t)nk, sizeof *order, cmp_keyline);
    for (int64_t i = 1; i < nk; i++)
        if (order[i]->image_id == order[i - 1]->image_id)
            order[i]->dup = 1;
    free(order);
    for (int64_t i = 0; i < nk; i++) {
        if (keys[i].dup) {
            ic->dup_images++;
            continue;
        }
        int h = have_row(o, keys[i].image_id);
        if (h < 0)
            goto out;
        if (h) {
            ic->already++;
            continue;
        }
        if (out_add(o, keys[i].image_id, a.data + (size_t)i * (size_t)dim) != 0)
            goto out;
        ic->rows++;
    }
    if (out_flush(o) != 0)
        goto out;
    rc = 0;
out:
    for (int64_t i = 0; i < nk; i++)
        free(keys[i].key);
    free(keys);
    npy_free(&a);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------------
 * main
 */

static int valid_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* The file name of path without directory and without the extension ext. */
static void default_name(const char *path, const char *ext, char *buf, size_t cap)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(buf, cap, "%s", b);
    size_t n = strlen(buf), e = strlen(ext);
    if (n > e && strcmp(buf + n - e, ext) == 0)
        buf[n - e] = '\0';
}

int main(int argc, char **argv)
{
    int ac;
    char **av;
    cli_begin(PROG, argc, argv, &ac, &av);
    static const struct option longopts[] = {
        CLI_COMMON_OPTIONS,
        CLI_STAGE_OPTIONS,
        {"collection", required_argument, NULL, OPT_COLLECTION},
        {"model", required_argument, NULL, OPT_MODEL},
        {"name", required_argument, NULL, OPT_NAME},
        {"resize", required_argument, NULL, OPT_RESIZE},
        {"crop", required_argument, NULL, OPT_CROP},
        {"pool", required_argument, NULL, OPT_POOL},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"loaders", required_argument, NULL, OPT_LOADERS},
        {"file-rows", required_argument, NULL, OPT_FILE_ROWS},
        {"import", required_argument, NULL, OPT_IMPORT},
        {"keys", required_argument, NULL, OPT_KEYS},
        {NULL, 0, NULL, 0}};
    const char *work = NULL, *model_path = NULL, *name_arg = NULL, *import_path = NULL, *keys_path = NULL;
    char *collections[MAX_COLL];
    cli_stage_args sa = {0}; /* --retry-failed is moot: failed images are simply not embedded yet */
    int ncoll = 0, json = 0, pool = POOL_CLS, dtype_i = 0;
    int64_t resize = 256, crop = 224, batch = 32, file_rows = 8192, iv;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = ncpu > 0 ? (int)ncpu : 1;
    int loaders = ncpu > 1 ? (int)(ncpu / 2) : 1;
    if (loaders > 8)
        loaders = 8;
    int opt;
    while ((opt = getopt_long(ac, av, "h", longopts, NULL)) != -1) {
        if (cli_common(opt, PROG, usage, &work, &json) || cli_stage_option(opt, &sa))
            continue;
        int bad = 0;
        switch (opt) {
        case OPT_COLLECTION:
            if (ncoll == MAX_COLL)
                cli_usage_error(PROG, "at most 64 --collection options");
            collections[ncoll++] = optarg;
            break;
        case OPT_MODEL: model_path = optarg; break;
        case OPT_NAME: name_arg = optarg; break;
        case OPT_RESIZE: bad = opt_int("--resize", optarg, 1, 8192, &resize); break;
        case OPT_CROP: bad = opt_int("--crop", optarg, 1, 8192, &crop); break;
        case OPT_POOL: bad = opt_choice("--pool", optarg, pool_names, &pool); break;
        case OPT_DTYPE: bad = opt_choice("--dtype", optarg, dtype_names, &dtype_i); break;
        case OPT_BATCH: bad = opt_int("--batch", optarg, 1, 4096, &batch); break;
        case OPT_THREADS: bad = opt_int("--threads", optarg, 1, 1024, &iv); threads = (int)iv; break;
        case OPT_LOADERS: bad = opt_int("--loaders", optarg, 1, MAX_LOADERS, &iv); loaders = (int)iv; break;
        case OPT_FILE_ROWS: bad = opt_int("--file-rows", optarg, 1, 1 << 24, &file_rows); break;
        case OPT_IMPORT: import_path = optarg; break;
        case OPT_KEYS: keys_path = optarg; break;
        default: cli_usage_error(PROG, "unknown option");
        }
        if (bad)
            cli_usage_error(PROG, lvd_errmsg());
    }
    if (!work)
        cli_usage_error(PROG, "--work DIR is required");
    if (optind < ac)
        cli_usage_error(PROG, "unexpected argument");
    if (sa.merge) {
        int mrc = cli_merge("embed", work, json);
        config_free_argv(ac, av);
        return mrc;
    }
    char name[NAME_MAX_LEN + 64];
    if (import_path) {
        if (model_path)
            cli_usage_error(PROG, "--import takes embeddings computed elsewhere: no --model");
        if (!keys_path)
            cli_usage_error(PROG, "--import needs --keys K.txt (line i: the key of row i)");
        if (ncoll != 1)
            cli_usage_error(PROG, "--import needs exactly one --collection");
        if (sa.part)
            cli_usage_error(PROG, "--import does not take --part");
        default_name(import_path, ".npy", name, sizeof name);
    } else {
        if (!model_path)
            cli_usage_error(PROG, "--model M.safetensors is required (or --import E.npy --keys K.txt)");
        if (keys_path)
            cli_usage_error(PROG, "--keys goes with --import");
        default_name(model_path, ".safetensors", name, sizeof name);
    }
    if (name_arg)
        snprintf(name, sizeof name, "%s", name_arg);
    if (!valid_name(name))
        cli_usage_errorf(PROG, "model name '%.200s' must be 1-%d letters, digits, '.', '_' or '-', not starting "
                         "with '.'%s", name, NAME_MAX_LEN, name_arg ? "" : " (set one with --name)");
    if (!import_path && crop > resize)
        cli_usage_error(PROG, "--crop must not exceed --resize (the crop is taken from the resized image)");

    /* The model's configuration first: the crop must tile into patches. */
    vit_config cfg = {0};
    identity want = {0};
    if (!import_path) {
        if (vit_io_config(model_path, &cfg) != 0) {
            log_error("%s", lvd_errmsg());
            return EXIT_FAIL;
        }
        if (crop % cfg.patch != 0)
            cli_usage_errorf(PROG, "--crop %" PRId64 " is not a multiple of the model's patch size %d (%s); try "
                             "--crop %" PRId64, crop, (int)cfg.patch, model_path,
                             crop / cfg.patch > 0 ? (crop / cfg.patch) * cfg.patch : cfg.patch);
        want.dim = pool == POOL_CLS_MEAN ? 2 * cfg.dim : cfg.dim;
        snprintf(want.preprocess, sizeof want.preprocess,
                 "{\"resize\":%" PRId64 ",\"crop\":%" PRId64 ",\"pool\":\"%s\",\"dtype\":\"%s\"}", resize, crop,
                 pool_names[pool], dtype_names[dtype_i]);
        if (vit_io_file_sha256(model_path, want.sha) != 0) {
            log_error("%s", lvd_errmsg());
            return EXIT_FAIL;
        }
    }

    /* The run's parameters: the checkpoint's identity, or the imported file, its SHA-256 and collection. */
    char ptext_buf[1024], fp[65], import_sha[65] = "", model_sha[65] = "";
    char *ptext = ptext_buf, *ptext_heap = NULL;
    if (import_path) {
        if (file_sha256(import_path, import_sha) != 0) {
            log_error("%s", lvd_errmsg());
            return EXIT_FAIL;
        }
        cJSON *pj = cJSON_CreateObject();
        cJSON_AddStringToObject(pj, "name", name);
        cJSON_AddStringToObject(pj, "preprocess", "imported");
        cJSON_AddNumberToObject(pj, "import", 1);
        cJSON_AddStringToObject(pj, "collection", collections[0]);
        cJSON_AddStringToObject(pj, "import_file", import_path);
        cJSON_AddStringToObject(pj, "import_sha256", import_sha);
        cJSON_AddBoolToObject(pj, "force", sa.force);
        ptext = ptext_heap = cJSON_PrintUnformatted(pj);
        cJSON_Delete(pj);
        if (!ptext) {
            log_error("out of memory");
            return EXIT_FAIL;
        }
    } else {
        snprintf(ptext_buf, sizeof ptext_buf, "{\"name\":\"%s\",\"sha256\":\"%s\",\"preprocess\":%s,\"import\":0}",
                 name, want.sha, want.preprocess);
        snprintf(model_sha, sizeof model_sha, "%s", want.sha);
    }
    stage_fingerprint(ptext, fp);
    embedder *e = calloc(1, sizeof *e);
    stage *st = calloc(1, sizeof *st);
    if (!e || !st) {
        log_error("out of memory");
        return EXIT_FAIL;
    }
    int opened = stage_open(st, "embed", work, sa.part, ptext, fp);
    free(ptext_heap);
    if (opened != 0) {
        log_error("%s", lvd_errmsg());
        return EXIT_FAIL;
    }
    out *o = &e->o;
    o->st = st;
    o->cat = st->cat;
    o->main_ro = st->part.count > 1 ? st->main_ro : NULL;
    o->name = name;
    o->dtype = dtype_i ? NPY_F32 : NPY_F16;
    o->file_rows = file_rows;
    o->main_model_id = o->main_skip_id = -1;
    import_counts ic = {0};
    cJSON *per_coll = cJSON_CreateObject();
    int rc = EXIT_FAIL, loader_started = 0, owned_names = 0;
    char *coll_names[MAX_COLL];
    double t0 = progress_now();

    if (import_path) {
        if (run_import(o, import_path, import_sha, keys_path, collections[0], sa.force, &ic, model_sha) != 0)
            goto out;
        cJSON_AddNumberToObject(per_coll, collections[0], (double)o->written);
        rc = EXIT_OK;
        goto out;
    }

    e->src = st->part.count > 1 ? st->main_ro : st->cat;
    if (!e->src) {
        log_info("embed: no catalog.db in %s yet: 0 new images", work);
        rc = EXIT_OK;
        goto out;
    }
    /* Collections to embed, by id in the source catalog: the named ones, else all of them. */
    int64_t coll_ids[MAX_COLL];
    int nc = 0;
    if (ncoll) {
        for (int i = 0; i < ncoll; i++) {
            if (catalog_collection(e->src, collections[i], NULL, &coll_ids[nc]) != 0)
                goto out;
            coll_names[nc++] = collections[i];
        }
    } else {
        sqlite3_stmt *q = catalog_stmt(e->src, "SELECT id, name FROM collections ORDER BY id");
        if (!q)
            goto out;
        while (sqlite3_step(q) == SQLITE_ROW) {
            if (nc == MAX_COLL) {
                sqlite3_reset(q);
                lvd_fail("more than %d collections: name the ones to embed with --collection", MAX_COLL);
                goto out;
            }
            coll_ids[nc] = sqlite3_column_int64(q, 0);
            coll_names[nc] = strdup((const char *)sqlite3_column_text(q, 1));
            if (!coll_names[nc]) {
                sqlite3_reset(q);
                lvd_fail("out of memory");
                goto out;
            }
            owned_names = ++nc;
        }
        sqlite3_reset(q);
    }

    o->dim = want.dim;
    e->batch = (int32_t)batch;
    e->resize = (uint32_t)resize;
    e->crop = (uint32_t)crop;
    e->pool = pool;
    if (model_register(o, &want, sa.force, coll_ids, ncoll ? nc : 0) != 0 || out_alloc(o) != 0)
        goto out;
    vit_set_threads(threads);
    if (vit_load(model_path, NULL, 0, &e->m) != 0)
        goto out;
    vit_run_opts ro = {(int32_t)batch, (int32_t)crop, (int32_t)crop, 0, 0};
    if (vit_run_create(e->m, &ro, &e->run_full) != 0)
        goto out;
    log_info("embed: model '%s' (%s, dim %d, patch %d, depth %d), %s, batch %" PRId64 ", %d threads + %d loaders",
             name, model_path, (int)e->m->cfg.dim, (int)e->m->cfg.patch, (int)e->m->cfg.depth, want.preprocess,
             batch, threads, loaders);
    if (!(e->feat = malloc(sizeof(float) * (size_t)o->dim))) {
        lvd_fail("out of memory");
        goto out;
    }
    loader *l = &e->ld;
    l->threads = loaders;
    l->resize = e->resize;
    l->crop = e->crop;
    for (int k = 0; k < 2; k++) {
        l->slots[k].items = calloc((size_t)batch, sizeof(item));
        l->slots[k].x = malloc(sizeof(float) * (size_t)batch * 3 * (size_t)crop * (size_t)crop);
        if (!l->slots[k].items || !l->slots[k].x) {
            lvd_fail("out of memory for two batches of %" PRId64 " images of %" PRId64 "x%" PRId64, batch, crop, crop);
            goto out;
        }
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    if (pthread_create(&l->tid, NULL, loader_main, l) != 0) {
        lvd_fail("cannot start the loader thread");
        goto out;
    }
    loader_started = 1;
    uint64_t total = 0;
    if (st->part.count == 1 && count_pending(e, coll_ids, nc, &total) != 0)
        goto out;
    progress_init(&e->prog, "embed", total);
    for (int i = 0; i < nc; i++) {
        uint64_t before = o->written;
        if (embed_collection(e, coll_ids[i], coll_names[i]) != 0)
            goto out;
        cJSON_AddNumberToObject(per_coll, coll_names[i], (double)(o->written - before));
    }
    if (o->written || e->failed)
        progress_finish(&e->prog);
    rc = EXIT_OK;
out:
    if (rc != EXIT_OK)
        log_error("%s", lvd_errmsg());
    if (loader_started) {
        pthread_mutex_lock(&e->ld.mu);
        e->ld.stop = 1;
        pthread_cond_broadcast(&e->ld.cv);
        pthread_mutex_unlock(&e->ld.mu);
        pthread_join(e->ld.tid, NULL);
    }
    double secs = progress_now() - t0;
    cJSON *sum = cJSON_CreateObject();
    cJSON_AddStringToObject(sum, "stage", "embed");
    cJSON_AddStringToObject(sum, "part", st->part_text);
    cJSON_AddStringToObject(sum, "model", name);
    cJSON_AddStringToObject(sum, "sha256", model_sha);
    cJSON_AddNumberToObject(sum, "dim", o->dim);
    cJSON_AddNumberToObject(sum, "embedded", (double)o->written);
    cJSON_AddNumberToObject(sum, "failed", (double)e->failed);
    cJSON_AddNumberToObject(sum, "files", (double)o->files);
    cJSON_AddItemToObject(sum, "collections", per_coll);
    if (import_path) {
        cJSON_AddNumberToObject(sum, "normalised", (double)ic.normalised);
        cJSON_AddNumberToObject(sum, "already_present", (double)ic.already);
        cJSON_AddStringToObject(sum, "import_sha256", import_sha);
        cJSON_AddNumberToObject(sum, "duplicate_images", (double)ic.dup_images);
    } else {
        cJSON_AddNumberToObject(sum, "seconds", secs);
        cJSON_AddNumberToObject(sum, "images_per_second", secs > 0 ? (double)o->written / secs : 0);
    }
    char *sum_text = cJSON_PrintUnformatted(sum);
    cJSON_Delete(sum);
    if (stage_close(st, rc == EXIT_OK ? "done" : "failed", sum_text) != 0) {
        log_error("%s", lvd_errmsg());
        rc = EXIT_FAIL;
    }
    if (rc == EXIT_OK) {
        if (o->written == 0)
            log_info("embed: 0 new images to embed%s", import_path ? " (every key already has a row)" : "");
        else
            log_info("embed: %" PRIu64 " embedded into %" PRIu64 " file%s under %s/embeddings/%s/%s", o->written,
                     o->files, o->files == 1 ? "" : "s", work, name,
                     e->failed ? "; some images failed (see the warnings)" : "");
        if (import_path && ic.already)
            log_info("embed: %" PRIu64 " image%s of '%s' already present (rows kept; --force replaces them)",
                     ic.already, ic.already == 1 ? "" : "s", name);
        if (json && sum_text)
            printf("%s\n", sum_text);
    }
    free(sum_text);
    for (int i = 0; i < owned_names; i++)
        free(coll_names[i]);
    for (int k = 0; k < 2; k++) {
        free(e->ld.slots[k].items);
        free(e->ld.slots[k].x);
    }
    if (e->run_full)
        vit_run_free(e->run_full);
    if (e->run_tail)
        vit_run_free(e->run_tail);
    if (e->m)
        vit_free(e->m);
    free(e->feat);
    free(e->failed_ids);
    free(o->rows);
    free(o->ids);
    free(e);
    free(st);
    config_free_argv(ac, av);
    return rc;
}
