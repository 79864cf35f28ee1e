/* lock.h — one writer per catalog file: an exclusive lock on "<catalog>.lock" that says who holds it.
 *
 * Every program that opens a catalog for writing (WORK/catalog.db, or a part file WORK/parts/<stage>-I-of-N.db)
 * holds an exclusive flock(2) on the file beside it until it closes the catalog. The kernel drops the lock when
 * the process ends, however it ends (kill -9 included), so a lock that can be taken proves that no live process
 * writes that catalog; on NFS, Linux emulates flock with POSIX byte-range locks arbitrated by the server, so
 * the proof holds across hosts. The holder keeps one line of text in the file saying who it is (program, run,
 * pid, host, start time); a program that finds the lock taken quotes it. The lock file is never removed while
 * in use (a process waiting on a removed inode would hold a lock nobody else sees).
 */
#ifndef LVD_LOCK_H
#define LVD_LOCK_H

#include <stddef.h>

#define LOCK_HOLDER_MAX 512 /* bytes of holder text kept, NUL included */

typedef struct lvd_lock {
    int fd; /* the open lock file while held, else -1 */
} lvd_lock;

/* Takes the exclusive lock on path, creating the file if needed, and records holder (one line) in it.
 * A lock found busy is tried again for up to a second first (lock_probe holds it for microseconds).
 * Held by another process: with wait == 0, -1 with the message "<what> is in use by <their holder text>";
 * with wait != 0, logs that it waits (and for whom) and blocks until the lock is free. Other errors: -1 with
 * the path and errno text. */
int lock_acquire(lvd_lock *l, const char *path, const char *what, const char *holder, int wait);

/* Replaces the holder text of a held lock (e.g. once the run has an id). */
int lock_describe(lvd_lock *l, const char *holder);

/* Drops the lock (closing the file); a no-op on a lock not held. */
void lock_release(lvd_lock *l);

/* Whether some process holds the lock at path: 1 (its holder text copied into holder, n bytes), 0 if not or
 * if there is no lock file, -1 on error. Takes and drops a shared lock to find out, so it never blocks. */
int lock_probe(const char *path, char *holder, size_t n);

/* "pid 4242 on host node7": this process, for holder texts. */
void lock_whoami(char *out, size_t n);

#endif
