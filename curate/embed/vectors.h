/* vectors.h — where the embeddings of a model live, and the identity a model name stands for.
 *
 * Files: WORK/embeddings/<name>/<collection>/part-NNNNNN.npy (partitioned runs: part-pIofN-NNNNNN.npy), each a
 * C-order (rows, dim) float16 or float32 array of L2-normalised rows. Catalog: one `models` row per name
 * (sha256, preprocess, dim: the identity) and one `embeddings` row per (model, image) naming its file and row.
 *
 * Writing (embed_out): rows collect in memory until a file holds file_rows of them; the file is written whole
 * (npy_write: temporary name + rename) and only then are its catalog rows committed, in one transaction. A
 * crash in between leaves an orphan file that no row points at; file numbers come from the catalog, so the next
 * run writes the same name again and replaces it.
 *
 * Identity: a name embedded from a checkpoint is recorded with the SHA-256 of its weights, its preprocessing
 * (JSON text) and its dim; a name created by lvd-embed --import has preprocess "imported" and the SHA-256 of the
 * file that created it. Another identity under a recorded name is an error unless forced (the name then moves:
 * its old rows are dropped). Errors name the catalog file and say how to resolve the conflict.
 */
#ifndef LVD_EMBED_STORE_H
#define LVD_EMBED_STORE_H

#include <stdint.h>

#include "catalog.h"
#include "npy.h"
#include "stage.h"

typedef struct embed_identity {
    char sha[65];          /* lowercase hex SHA-256: of the weights, or of the imported file (see above) */
    char preprocess[256];  /* JSON of the evaluation transform and pooling, or "imported" */
    int32_t dim;           /* floats per row */
} embed_identity;

/* The writer of one model name's rows, one collection at a time. Set up with embed_out_init; the caller sets
 * dim before embed_out_alloc. Fields past `dim` are the writer's own. */
typedef struct embed_out {
    stage *st;             /* the run: work directory, shard tag (part), run id, part count */
    catalog *cat;          /* target catalog (catalog.db or the part file) */
    catalog *main_ro;      /* partitioned runs: catalog.db, read-only (may be NULL) */
    const char *name;      /* model name (not copied) */
    int64_t model_id;      /* in cat: set by embed_model_register / embed_import_register */
    int64_t main_model_id; /* partitioned runs: the name's id in catalog.db (any identity), or -1 */
    int64_t main_skip_id;  /* id in catalog.db whose rows count as done (same identity, no --force), or -1 */
    int32_t dim;
    npy_dtype dtype;       /* of the files */
    int64_t file_rows;     /* rows per file */
    float *rows;           /* file_rows x dim */
    int64_t *ids;          /* file_rows image ids */
    int64_t n;             /* rows collected */
    char prefix[512];      /* "embeddings/<name>/<collection>/part-" (+ "pIofN-") */
    int64_t next_no;       /* number of the next file */
    uint64_t written, files; /* rows and files committed by this writer */
} embed_out;

/* Zeroes *o and binds it to the run st (cat = st->cat; main_ro = st->main_ro when st is partitioned) and the
 * name (not copied). Model ids start at -1 (main_*) until registration. */
void embed_out_init(embed_out *o, stage *st, const char *name, npy_dtype dtype, int64_t file_rows);

/* Allocates the buffers of one file (file_rows x dim floats + file_rows ids); o->dim must be set. 0 or -1. */
int embed_out_alloc(embed_out *o);

/* Frees the buffers (rows not flushed are lost). */
void embed_out_free(embed_out *o);

/* Starts the files of one collection: makes its directory, sets the prefix, and numbers the next file after
 * every file either catalog records for the name under that prefix (a part never overwrites catalog.db's
 * files). The collection name must follow catalog_check_collection_name(). 0 or -1. */
int embed_out_begin_collection(embed_out *o, const char *collection);

/* Adds one row of dim floats (already L2-normalised) for image_id; writes the file when it is full. 0 or -1. */
int embed_out_add(embed_out *o, int64_t image_id, const float *row);

/* Writes the rows collected so far (if any) as the next file, then commits their catalog rows. At most
 * 1000000 files per prefix. 0 or -1 (on -1 no catalog row of the file is committed). */
int embed_out_flush(embed_out *o);

/* 1 if the target catalog already holds a row of o's model for image_id, 0 if not, -1 on error. */
int embed_have_row(const embed_out *o, int64_t image_id);

/* L2-normalises v (n floats) in place, in double; returns the norm it had (0: v is left as is). */
double embed_l2_normalise(float *v, int32_t n);

/* The model row of name in c: 1 found (id and identity filled), 0 none, -1 error. */
int embed_model_lookup(catalog *c, const char *name, int64_t *id, embed_identity *idn);

/* 1 if a and b are the same identity (sha, preprocess and dim). */
int embed_same_identity(const embed_identity *a, const embed_identity *b);

/* 1 if idn is that of imported embeddings (preprocess "imported"). */
int embed_is_imported(const embed_identity *idn);

/* Checkpoint runs: finds or creates the model row of o->name with identity want in the target catalog (and
 * looks at catalog.db in partitioned runs, setting main_model_id / main_skip_id). Another recorded identity
 * is an error unless force. force with another identity: the row takes this identity and all the name's rows
 * are dropped. force with the same identity: the rows of the images of collections coll_ids (nc of them;
 * 0 = all) are dropped, so those images are embedded again (a part file drops all its rows of the name).
 * Sets o->model_id. 0 or -1. */
int embed_model_register(embed_out *o, const embed_identity *want, int force, const int64_t *coll_ids, int nc);

/* --import (catalog.db only; imports take no part): finds or creates the imported model row of o->name.
 * A name created by --import takes rows from any number of files (other collections, new members) of the same
 * dim and keeps its identity: sha256 stays that of the file that created it, so what is keyed on the model
 * identity (lvd-dedup's fingerprint) sees added rows as new work, not as another model. force drops the rows of
 * the images of collection coll_id first; if it dropped any, the identity becomes embed_derived_identity() (the
 * name's vectors changed). A name of a checkpoint model (preprocess not "imported") or of another dim is an
 * error, unless force, which moves the name: all its rows are dropped. file_sha: SHA-256 of npy_path (named in
 * messages). sha_out gets the identity kept. Sets o->model_id. 0 or -1. */
int embed_import_register(embed_out *o, const char *npy_path, const char *file_sha, int32_t dim, int force,
                          int64_t coll_id, char sha_out[65]);

/* The identity a forced import gives a name whose rows it replaced: SHA-256 of "<old_sha>\n<file_sha>\n", so it
 * differs from both and from every earlier value. */
void embed_derived_identity(const char *old_sha, const char *file_sha, char out[65]);

#endif
