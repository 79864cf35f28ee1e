/* atomic_file.c — temporary file beside the target, fsync, rename, fsync of the directory. */
#include "atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"

#define TMP_TRIES 100 /* names tried when earlier ones exist (left by a crashed writer, or a racing one) */

static atomic_uint tmp_counter;

static void release(atomic_file *af)
{
    free(af->path); /* tmp lives in the same allocation */
    *af = (atomic_file){.path = NULL, .tmp = NULL, .fd = -1, .f = NULL};
}

/* Closes the stream or descriptor, if open; returns close's result (0 when nothing was open). */
static int close_file(atomic_file *af)
{
    int rc = 0;
    if (af->f)
        rc = fclose(af->f);
    else if (af->fd >= 0)
        rc = close(af->fd);
    af->f = NULL;
    af->fd = -1;
    return rc;
}

int atomic_file_open(atomic_file *af, const char *path)
{
    *af = (atomic_file){.fd = -1};
    size_t plen = strlen(path);
    size_t tcap = plen + 48; /* ".tmp." + pid + "." + counter */
    char *mem = malloc(plen + 1 + tcap);
    if (!mem)
        return lvd_fail("%s: out of memory", path);
    memcpy(mem, path, plen + 1);
    af->path = mem;
    af->tmp = mem + plen + 1;
    for (int i = 0; i < TMP_TRIES; i++) {
        snprintf(af->tmp, tcap, "%s.tmp.%ld.%u", path, (long)getpid(), atomic_fetch_add(&tmp_counter, 1u));
        af->fd = open(af->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (af->fd >= 0)
            return 0;
        if (errno != EEXIST)
            break;
    }
    lvd_fail_errno("%s: cannot create the temporary file %s", path, af->tmp);
    release(af);
    return -1;
}

int atomic_file_write(atomic_file *af, const void *buf, size_t n)
{
    if (af->f) {
        if (n > 0 && fwrite(buf, 1, n, af->f) != n)
            return lvd_fail_errno("%s: writing %s", af->path, af->tmp);
        return 0;
    }
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = write(af->fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return lvd_fail_errno("%s: writing %s", af->path, af->tmp);
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

FILE *atomic_file_stream(atomic_file *af)
{
    if (!af->f && !(af->f = fdopen(af->fd, "w")))
        lvd_fail_errno("%s: cannot open a stream on %s", af->path, af->tmp);
    return af->f;
}

/* fsyncs the directory holding path, so that the rename is durable. A directory this process may write but
 * not open for reading cannot be synced and is passed over; so are file systems without directory fsync. */
static int sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return lvd_fail("%s: out of memory", path);
    int rc = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != EACCES && errno != EPERM)
            rc = lvd_fail_errno("%s: cannot open its directory %s to sync it", path, dir);
    } else {
        if (fsync(fd) != 0 && errno != EINVAL)
            rc = lvd_fail_errno("%s: cannot sync its directory %s", path, dir);
        close(fd);
    }
    free(dir);
    return rc;
}

int atomic_file_commit(atomic_file *af)
{
    if (af->f && (fflush(af->f) != 0 || ferror(af->f))) {
        lvd_fail_errno("%s: writing %s", af->path, af->tmp);
        goto fail;
    }
    /* EINVAL: the file is something that cannot be synced (not a regular file system); nothing to wait for. */
    if (fsync(af->f ? fileno(af->f) : af->fd) != 0 && errno != EINVAL) {
        lvd_fail_errno("%s: cannot fsync %s", af->path, af->tmp);
        goto fail;
    }
    if (close_file(af) != 0) {
        lvd_fail_errno("%s: closing %s", af->path, af->tmp);
        goto fail;
    }
    if (rename(af->tmp, af->path) != 0) {
        lvd_fail_errno("%s: cannot rename %s to it", af->path, af->tmp);
        goto fail;
    }
    int rc = sync_dir(af->path);
    release(af);
    return rc;
fail:
    atomic_file_abort(af);
    return -1;
}

void atomic_file_abort(atomic_file *af)
{
    if (!af->path)
        return;
    int e = errno;
    close_file(af);
    unlink(af->tmp);
    release(af);
    errno = e;
}

int atomic_file_mkdirs(const char *dir)
{
    char *tmp = strdup(dir);
    if (!tmp)
        return lvd_fail("out of memory");
    int rc = 0;
    for (char *p = tmp + 1; rc == 0; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            rc = lvd_fail_errno("cannot create directory %s", tmp);
        *p = c;
        if (c == '\0')
            break;
    }
    free(tmp);
    return rc;
}
