/* atomic_file.h — a file that appears under its name whole or not at all.
 *
 * The bytes go to a new temporary file beside the target, "<path>.tmp.<pid>.<n>" in the same directory (so
 * the final rename(2) stays on one file system and is atomic), created exclusively (O_EXCL: two writers never
 * share one) with mode 0644 less the umask. atomic_file_commit fsyncs the data, closes, renames the temporary
 * file over the target and fsyncs the directory, so after a crash the target holds either its old content or
 * the whole new one, never a part; an existing target is replaced only at that rename. atomic_file_abort
 * closes and removes the temporary file and leaves the target untouched.
 *
 *     atomic_file af;
 *     if (atomic_file_open(&af, path) != 0) return -1;
 *     if (atomic_file_write(&af, buf, n) != 0) { atomic_file_abort(&af); return -1; }
 *     return atomic_file_commit(&af);
 *
 * Errors are recorded with lvd_fail_errno() and name the target path (and the temporary one where it matters).
 * An atomic_file is used by one thread at a time; distinct ones may be written concurrently.
 */
#ifndef LVD_ATOMIC_FILE_H
#define LVD_ATOMIC_FILE_H

#include <stddef.h>
#include <stdio.h>

typedef struct atomic_file {
    char *path; /* the target (a copy, malloc'ed together with tmp) */
    char *tmp;  /* the temporary file's name */
    int fd;     /* descriptor of tmp; -1 when the file is not open */
    FILE *f;    /* stdio stream over fd once atomic_file_stream() made it, else NULL */
} atomic_file;

/* Creates the temporary file for path. Returns 0, or -1 (nothing left behind, af needs no abort): e.g. the
 * directory does not exist or is not writable. */
int atomic_file_open(atomic_file *af, const char *path);

/* Appends n bytes (all of them, retrying short writes and EINTR). Returns 0 or -1; after -1 call abort. */
int atomic_file_write(atomic_file *af, const void *buf, size_t n);

/* A buffered stdio stream over the temporary file, for fprintf-style writers; made on the first call, the
 * same stream afterwards. After it exists, write through it (atomic_file_write does too). NULL on failure
 * (message recorded); the file stays open for abort. commit flushes and checks it: a write error that stdio
 * kept (ferror) makes commit fail. Do not fclose it. */
FILE *atomic_file_stream(atomic_file *af);

/* Makes the content the target's: flush (stream), fsync, close, rename over path, fsync of the directory.
 * Returns 0, or -1 with the temporary file removed (the target keeps its old content unless only the final
 * directory fsync failed). af is released either way. */
int atomic_file_commit(atomic_file *af);

/* Closes and removes the temporary file; the target is untouched. Keeps the recorded error message. Safe on
 * an af that was committed, aborted, or whose open failed. */
void atomic_file_abort(atomic_file *af);

/* Creates directory dir and its missing parents (mode 0755, like mkdir -p); existing ones are fine.
 * Returns 0 or -1 naming the directory that could not be made. */
int atomic_file_mkdirs(const char *dir);

#endif
