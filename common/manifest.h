/* manifest.h — reading an lvd manifest (schemas/manifest-001.sql): the trainer's data source.
 *
 * A manifest is a read-only SQLite file listing samples whose working-image bytes live in tar shards that it
 * names (paths relative to the manifest's folder, or absolute). manifest_open() loads the whole sample table
 * into one arena (about 210 bytes per sample on 64-bit: the 80-byte record and its key and data_sha256 as
 * 65-byte hex strings; plus the shard paths), opens every shard file once, and then closes SQLite: reading a
 * sample is one pread(2) on a shared descriptor, safe from any number of threads.
 *
 * Errors follow err.h: functions return 0 or -1 with a message that names the manifest, the shard or the
 * sample key.
 *
 * The epoch order (manifest_order) is specified exactly, so that another implementation can reproduce it:
 *   1. The epoch's list: sample ids 1..n (key order), each repeated `weight` times, in id order; length
 *      L = sum of weights.
 *   2. A PRNG: splitmix64 (Steele et al.: state += 0x9e3779b97f4a7c15; z = state; z = (z ^ z >> 30) *
 *      0xbf58476d1ce4e5b9; z = (z ^ z >> 27) * 0x94d049bb133111eb; return z ^ z >> 31) whose initial state
 *      is seed * 0x9e3779b97f4a7c15 + epoch (unsigned 64-bit arithmetic, wrapping).
 *   3. A Fisher-Yates shuffle of the list: for i = L-1 down to 1, j = next() % (i + 1), swap list[i], list[j].
 *   4. Rank r of R takes positions r, r+R, r+2R, ... of the shuffled list: ranks' lengths differ by at most
 *      one, and together they are exactly the epoch (a partition).
 * The order depends only on (manifest rows, seed, epoch, rank, ranks): not on threads, time or machine.
 */
#ifndef LVD_MANIFEST_H
#define LVD_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#define MANIFEST_SCHEMA_VERSION 1 /* the newest schema this reader understands */

typedef struct manifest manifest;

/* One sample's metadata, pointing into the manifest's arena (valid until manifest_close). */
typedef struct manifest_sample {
    int64_t id;              /* 1..n */
    const char *key;         /* 64 hex digits */
    const char *data_sha256; /* of the stored bytes, 64 hex digits */
    uint32_t shard;          /* index into the shards, 0-based (shards.id - 1) */
    uint64_t offset;         /* bytes into the shard */
    uint64_t length;         /* bytes of the working image */
    const char *format;      /* "jpeg" or "webp" */
    int32_t width, height;   /* working image, pixels */
    int32_t orig_width, orig_height;
    uint32_t weight;         /* >= 1 */
} manifest_sample;

/* Opens `path` read-only (SQLite immutable=1: never written, no journal or lock file created). Fails with a
 * clear message on a missing file, a file that is not an lvd manifest, a schema version newer than
 * MANIFEST_SCHEMA_VERSION, an inconsistent table (ids not 1..n, a sample outside its shard's recorded bytes),
 * or a shard that is missing or shorter than its recorded size (naming the shard's path: "shard X: N bytes,
 * manifest records M (truncated?)"). A shard longer than recorded is fine: shards are append-only.
 * The path may hold any characters ('?', '#' and '%' are escaped in the SQLite URI). */
int manifest_open(manifest **out, const char *path);

/* manifest_open_flags: MANIFEST_OPEN_LENIENT opens a manifest whose shards are missing or shorter than
 * recorded instead of failing (lvd-manifest verify reports every such shard): manifest_shard_status says what
 * is wrong with each, and reading a sample of a bad shard fails naming it. Everything else (the file, the
 * schema version, the tables' consistency) is checked as by manifest_open. flags 0 = manifest_open. */
#define MANIFEST_OPEN_LENIENT 1
int manifest_open_flags(manifest **out, const char *path, int flags);

/* Opens the SQLite file itself read-only (the same URI and checks as manifest_open: a readable lvd manifest
 * of schema version <= MANIFEST_SCHEMA_VERSION), for the tools that need columns the reader does not load
 * (url, caption, sample_sources). *out is closed with sqlite3_close. */
struct sqlite3;
int manifest_db_open(struct sqlite3 **out, const char *path);

/* Releases everything (NULL is a no-op). */
void manifest_close(manifest *m);

/* Samples (n) and shards. */
size_t manifest_count(const manifest *m);
size_t manifest_shard_count(const manifest *m);

/* The shard's path as opened (resolved against the manifest's folder) and its recorded bytes. */
const char *manifest_shard_path(const manifest *m, size_t shard);
uint64_t manifest_shard_bytes(const manifest *m, size_t shard);

/* The shard's recorded sha256 (64 hex digits, of its first `bytes` bytes). */
const char *manifest_shard_sha256(const manifest *m, size_t shard);

/* What opening found for a shard (always MANIFEST_SHARD_OK or _GROWN after a strict manifest_open). *size
 * (may be NULL) gets the file's size in bytes (0 when missing); *why (may be NULL) the open(2) error text of a
 * missing shard, else "". */
typedef enum manifest_shard_state {
    MANIFEST_SHARD_OK = 0,  /* the recorded bytes, followed by nothing but the tar end marker (zeros, <= 10240 bytes) */
    MANIFEST_SHARD_GROWN,   /* longer than recorded: appended to since the build, every sample still holds */
    MANIFEST_SHARD_SHORT,   /* shorter than recorded (truncated): samples past its end cannot be read */
    MANIFEST_SHARD_MISSING  /* could not be opened */
} manifest_shard_state;
manifest_shard_state manifest_shard_status(const manifest *m, size_t shard, uint64_t *size, const char **why);

/* Reads len bytes at offset of an opened shard through its shared descriptor (pread, thread-safe); an end of
 * file before offset + len is an error naming the shard. */
int manifest_shard_pread(const manifest *m, size_t shard, uint64_t offset, void *buf, size_t len);

/* The manifest's path as given to manifest_open. */
const char *manifest_path(const manifest *m);

/* A value of the info table, or NULL (pointing into the arena). */
const char *manifest_info(const manifest *m, const char *key);

/* Metadata of sample index i (0-based: id i+1). i out of range is an error. */
int manifest_sample_meta(const manifest *m, size_t i, manifest_sample *out);

/* Reads sample i's working-image bytes into buf (cap bytes; cap < length is an error naming the key) with one
 * pread, and stores the length in *len. Thread-safe. Does not check data_sha256 (manifest_sample_check does). */
int manifest_read(const manifest *m, size_t i, void *buf, size_t cap, size_t *len);

/* Reads sample i like manifest_read and checks the bytes against data_sha256: -1 with "<key>: data SHA-256
 * mismatch in <shard> at <offset>" if they differ. */
int manifest_read_checked(const manifest *m, size_t i, void *buf, size_t cap, size_t *len);

/* The sum of weights (the epoch's length L). */
uint64_t manifest_epoch_length(const manifest *m);

/* Rank `rank` of `ranks`: its part of epoch `epoch`'s shuffled order (see the top of this file), as 0-based
 * sample indices. *out is malloc'ed (the caller frees it), *n its length: L / ranks, plus one for the first
 * L % ranks ranks. ranks >= 1, rank < ranks. */
int manifest_order(const manifest *m, uint64_t seed, uint64_t epoch, uint32_t rank, uint32_t ranks,
                   uint32_t **out, size_t *n);

#endif
