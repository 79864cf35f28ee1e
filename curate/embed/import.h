/* import.h — imports embeddings computed elsewhere into the embedding store (lvd-embed --import).
 *
 * Input: a (rows, dim) float16/float32 .npy file and a key file whose line i (one key per line, '\n' or "\r\n",
 * no empty lines) is the key of row i among the members of one collection. Every key must be a member of the
 * collection and appear on one line only (a key listed twice is an error naming both lines), and every value
 * finite; rows are L2-normalised (a row whose norm differs from 1 by more than
 * EMBED_IMPORT_NORM_TOL is counted, and a warning says how many; an all-zero row is an error). Rows then go
 * through embed_store: the name is registered with embed_import_register and each image gets one row. Errors
 * name the file and the row, line and key concerned.
 */
#ifndef LVD_EMBED_IMPORT_H
#define LVD_EMBED_IMPORT_H

#include <stdint.h>

#include "vectors.h"

#define EMBED_IMPORT_NORM_TOL 1e-3 /* |norm - 1| above this counts as "not normalised" */

typedef struct embed_import_counts {
    uint64_t rows;       /* rows written */
    uint64_t normalised; /* rows that were not unit length (normalised all the same) */
    uint64_t already;    /* images that already had a row of the name (kept; not written) */
    uint64_t dup_images; /* lines whose key names an image an earlier line's other key named (two members with
                          * the same bytes): the first line's row is kept */
} embed_import_counts;

/* Imports npy_path (file_sha: its SHA-256) with keys_path into collection coll of o's catalog (catalog.db: an
 * import takes no part) under o->name; o comes from embed_out_init and has no buffers yet (dim is the file's).
 * force: see embed_import_register. Images that already have a row of the name (any collection's) are counted
 * in ic->already, not written. ic (zeroed by the caller) gets the counts; model_sha the name's identity after
 * the run. Returns 0 or -1; validation (keys, values, identity) happens before any row is written. */
int embed_import(embed_out *o, const char *npy_path, const char *file_sha, const char *keys_path, const char *coll,
                 int force, embed_import_counts *ic, char model_sha[65]);

#endif
