/* lock.c — exclusive catalog locks with holder text (see lock.h). */
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "err.h"
#include "log.h"

void lock_whoami(char *out, size_t n)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "?");
    host[sizeof host - 1] = '\0';
    snprintf(out, n, "pid %ld on host %s", (long)getpid(), host);
}

/* The holder text of an open lock file: its first line, at most n - 1 bytes. */
static void read_holder(int fd, char *holder, size_t n)
{
    ssize_t got = pread(fd, holder, n - 1, 0);
    holder[got > 0 ? got : 0] = '\0';
    holder[strcspn(holder, "\n")] = '\0';
    if (!holder[0])
        snprintf(holder, n, "another process (it has not said who yet)");
}

int lock_describe(lvd_lock *l, const char *holder)
{
    size_t len = strnlen(holder, LOCK_HOLDER_MAX - 2);
    char line[LOCK_HOLDER_MAX];
    memcpy(line, holder, len);
    line[len] = '\n';
    /* Truncate first, so a reader never sees the tail of a longer previous text. */
    if (ftruncate(l->fd, 0) != 0 || pwrite(l->fd, line, len + 1, 0) != (ssize_t)(len + 1))
        return lvd_fail_errno("cannot write the lock file");
    return 0;
}

int lock_acquire(lvd_lock *l, const char *path, const char *what, const char *holder, int wait)
{
    l->fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (l->fd < 0)
        return lvd_fail_errno("cannot open lock file %s", path);
    /* lock_probe holds a shared lock for a few microseconds: a busy lock is tried again for up to a second
     * before it counts as held, so that a reader's probe never makes a writer fail. */
    int rc = -1, e = 0;
    for (int tries = 0; tries < 20; tries++) {
        if ((rc = flock(l->fd, LOCK_EX | LOCK_NB)) == 0 || (e = errno) != EWOULDBLOCK)
            break;
        usleep(50 * 1000);
    }
    if (rc != 0) {
        char who[LOCK_HOLDER_MAX];
        if (e != EWOULDBLOCK) {
            lock_release(l);
            errno = e;
            return lvd_fail_errno("cannot lock %s", path);
        }
        read_holder(l->fd, who, sizeof who);
        if (!wait) {
            lock_release(l);
            return lvd_fail("%s is in use by %s; wait for it to end, or pass --wait to wait for it", what, who);
        }
        log_info("%s is in use by %s: waiting for it to end", what, who);
        while (flock(l->fd, LOCK_EX) != 0) {
            if (errno != EINTR) {
                e = errno;
                lock_release(l);
                errno = e;
                return lvd_fail_errno("cannot lock %s", path);
            }
        }
    }
    if (lock_describe(l, holder) != 0) {
        lvd_fail_ctx("%s", path);
        lock_release(l);
        return -1;
    }
    return 0;
}

void lock_release(lvd_lock *l)
{
    if (l->fd >= 0)
        close(l->fd); /* closing the only descriptor of the open file drops the flock */
    l->fd = -1;
}

int lock_probe(const char *path, char *holder, size_t n)
{
    holder[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : lvd_fail_errno("cannot open lock file %s", path);
    int held = 0;
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) {
        flock(fd, LOCK_UN);
    } else if (errno == EWOULDBLOCK) {
        held = 1;
        read_holder(fd, holder, n);
    } else {
        int e = errno;
        close(fd);
        errno = e;
        return lvd_fail_errno("cannot probe lock file %s", path);
    }
    close(fd);
    return held;
}
