/* shard.h — webdataset tar shards: append-only writer with crash-safe commit points, and a reader.
 *
 * A shard is a POSIX ustar file of members named "<key>.<ext>" (webdataset naming). The writer appends
 * members, and shard_writer_flush() writes the end-of-archive marker (two zero blocks) after the last member
 * and fsyncs, so a flushed shard is always a valid tar that `tar -t`, Python tarfile and webdataset read.
 * The caller records the returned end offset ("committed size") in the catalog only after the flush; on
 * reopen the writer truncates the file to the committed size, dropping any torn or uncommitted tail, and the
 * next append overwrites the old end marker.
 *
 * Offsets and sizes are in bytes from the start of the file. Data of a member starts at a 512-byte boundary.
 */
#ifndef LVD_SHARD_H
#define LVD_SHARD_H

#include <stddef.h>
#include <stdint.h>

/* Longest member name in bytes, written and read. Names of 101..255 bytes are written with a pax "path"
 * record; the reader returns members with longer names without their name (shard_reader_next). */
#define SHARD_NAME_MAX 255

typedef struct shard_writer shard_writer;

/* Opens `path` for appending, creating it (and nothing else) if missing. `committed` is the end of the last
 * member the caller has committed (0 for a new shard). A longer file is truncated to `committed` (torn or
 * uncommitted tail); a shorter file than `committed` is an error (committed data was lost), reported with
 * both sizes. Returns 0 or -1. */
int shard_writer_open(shard_writer **out, const char *path, uint64_t committed);

/* Appends one member `name` (1..SHARD_NAME_MAX bytes, no NUL) holding `len` bytes. *data_offset (may be
 * NULL) receives the offset of the member's data. Buffered: not durable until shard_writer_flush. A name
 * out of range is an error before any byte is written; the writer stays usable. */
int shard_writer_add(shard_writer *w, const char *name, const void *data, size_t len, uint64_t *data_offset);

/* Members added from now on carry this mtime (seconds since the epoch) instead of the time of the add, so that
 * a file written twice from the same input is the same bytes (lvd-manifest export). mtime < 0 restores the
 * default. */
void shard_writer_set_mtime(shard_writer *w, int64_t mtime);

/* Writes the end-of-archive marker, fsyncs the file, and stores in *end (may be NULL) the end offset of the
 * last member: the value to commit. */
int shard_writer_flush(shard_writer *w, uint64_t *end);

/* End offset of the last member appended so far (flushed or not): the shard's data size. */
uint64_t shard_writer_size(const shard_writer *w);

/* Flushes and closes; frees w (NULL is a no-op). Returns -1 if the final flush failed. */
int shard_writer_close(shard_writer *w);

/* Closes without flushing (used after a failed write): uncommitted bytes are dropped on the next open. */
void shard_writer_abandon(shard_writer *w);

/* Reads len bytes at offset of the shard at path into buf (a short file is an error naming the path). */
int shard_read_at(const char *path, uint64_t offset, void *buf, size_t len);

/* Member-by-member reading, for importing webdataset tars and for checks. */
typedef struct shard_reader shard_reader;

typedef struct shard_member {
    char name[SHARD_NAME_MAX + 1]; /* member name, e.g. "000123.jpg"; "" when name_len > SHARD_NAME_MAX */
    size_t name_len;               /* bytes in the name the archive gives the member */
    uint64_t offset;               /* offset of its first header: its pax or GNU header if it has one */
    uint64_t data_offset;          /* offset of the data in the file */
    uint64_t size;                 /* data bytes */
    uint64_t end;                  /* offset just past the padded data: the end of this member */
    char type;                     /* ustar typeflag: '0' regular file, '5' directory, ... */
} shard_member;

int shard_reader_open(shard_reader **out, const char *path);

/* Next member (regular files and others; pax/GNU long-name headers are consumed and applied).
 * Returns 1 with *m filled, 0 at the end of the archive, -1 on a malformed header or I/O error.
 * A file that stops inside a header or inside a member's data is a torn tail: returns 0 and sets
 * shard_reader_torn().
 *
 * A member whose name is longer than SHARD_NAME_MAX bytes (from a GNU 'L' or pax "path" record, which may
 * hold up to 1 MiB, or a 256-byte ustar prefix + name) is well-formed but cannot be one of a shard's: it is
 * returned (1) with m->name "" and its true length in m->name_len, its size and offsets filled as for any
 * member, so that the caller can report and skip it; the next call goes on with the member after it. No
 * part of the long name is kept, so it can never pass for another member's name. An empty name, a NUL in
 * a pax "path", a malformed pax record or an extended header over 1 MiB stay errors (-1). */
int shard_reader_next(shard_reader *r, shard_member *m);

/* Reads the data of the member last returned by shard_reader_next (buf holds m->size bytes). */
int shard_reader_read(shard_reader *r, const shard_member *m, void *buf);

/* 1 if reading stopped at a torn tail (an incomplete header or member). */
int shard_reader_torn(const shard_reader *r);

/* End offset of the last complete member read so far. */
uint64_t shard_reader_valid_end(const shard_reader *r);

void shard_reader_close(shard_reader *r);

#endif
