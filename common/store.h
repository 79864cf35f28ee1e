/* store.h — appending files to the work directory's tar shards, with catalog-tracked commit points.
 *
 * A store owns the current shard of one kind ("raw" originals or "img" working images) for one writer (the
 * whole work directory, or one part of a partitioned run, which gets its own shard names). Protocol per
 * batch, which is what makes kill -9 safe:
 *   1. store_append() the batch's files (buffered in the shard, not yet durable);
 *   2. catalog_begin(); insert the rows that point at the appended data;
 *   3. store_sync(): flush + fsync every shard touched, and record each one's new committed size in `shards`
 *      inside the same transaction;
 *   4. catalog_commit().
 * A crash anywhere before 4 leaves bytes past the committed size, which store_open truncates away.
 * Shards roll over at max_bytes; their rows are inserted when the shard is created.
 */
#ifndef LVD_STORE_H
#define LVD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "catalog.h"

typedef struct store store;

/* work: the work directory. kind: "raw" or "img". tag: "" for the whole work directory, or a part tag such
 * as "p1of2" that goes into shard names (shards/raw-p1of2-000000.tar). Reopens the newest shard of this kind
 * and tag if it has room, truncating any uncommitted tail; fails if a shard is shorter than its committed
 * size (data lost: the message names the file and both sizes). */
int store_open(store **out, catalog *cat, const char *work, const char *kind, const char *tag, uint64_t max_bytes);

/* Appends `<key>.<ext>` with len bytes, and `<key>.json` with meta_json if non-NULL. *shard_id and *offset
 * receive where the data lives. */
int store_append(store *s, const char *key, const char *ext, const void *data, size_t len, const char *meta_json,
                 int64_t *shard_id, uint64_t *offset);

/* Content addressing of original bytes. store_find_image: the id of the image whose bytes have this hex
 * SHA-256: 1 found, 0 not stored yet, -1 error. store_add_image: appends bytes not stored yet as
 * `<sha>.<ext>` (+ `<sha>.json` with meta_json) and inserts their `images` row (format: the sniffed format
 * name) inside the caller's open batch transaction; *image_id gets the new row. */
int store_find_image(catalog *cat, const char *sha, int64_t *image_id);
int store_add_image(store *s, const char *sha, const char *format, const char *ext, const void *data, size_t len,
                    const char *meta_json, int64_t run_id, int64_t *image_id);

/* Step 3 above: call inside the batch's transaction. */
int store_sync(store *s);

/* Closes the writer without syncing (after a failed batch or at the end of a run, once synced). */
void store_close(store *s);

/* Path of a shard file by its catalog row (relative path joined with work); buf of cap bytes. */
int store_shard_path(catalog *cat, const char *work, int64_t shard_id, char *buf, size_t cap);

/* Reads `len` bytes at `offset` of shard `shard_id`. */
int store_read(catalog *cat, const char *work, int64_t shard_id, uint64_t offset, void *buf, size_t len);

#endif
