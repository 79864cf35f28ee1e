/* shard.c — webdataset tar shards: buffered ustar writer with fsynced commit points, and a reader that
 * tells a torn tail from a corrupt archive (see shard.h). */
#include "shard.h"

#include "err.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TAR_BLOCK 512
#define TAR_NAME_FIELD 100
#define TAR_SIZE_LIMIT ((uint64_t)1 << 33) /* 11 octal digits: sizes must stay below 8 GiB */
#define TAR_MTIME_MAX (((uint64_t)1 << 33) - 1)
#define WRITE_BUF_BYTES ((size_t)1 << 20) /* appends are gathered into 1 MiB writes */
#define DIRECT_MIN ((size_t)1 << 18)      /* bodies of 256 KiB or more bypass the buffer */
#define PAX_MAX ((uint64_t)1 << 20)       /* larger pax or GNU long-name headers are treated as hostile */
#define PAX_NAME "././@PaxHeader"

/* Field offsets and widths of a ustar header block (POSIX.1-1988). */
enum {
    H_NAME = 0, H_MODE = 100, H_UID = 108, H_GID = 116, H_SIZE = 124, H_MTIME = 136, H_CHKSUM = 148,
    H_TYPE = 156, H_MAGIC = 257, H_VERSION = 263, H_PREFIX = 345,
    W_MODE = 8, W_UID = 8, W_GID = 8, W_SIZE = 12, W_MTIME = 12, W_CHKSUM = 8, W_PREFIX = 155,
};

static const uint8_t zero_blocks[2 * TAR_BLOCK];

static uint64_t pad_block(uint64_t n) { return (n + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK; }

static size_t decimal_digits(size_t n)
{
    size_t d = 1;
    while (n >= 10) {
        n /= 10;
        d++;
    }
    return d;
}

/* Writes all n bytes at off, retrying short writes; a write that makes no progress is ENOSPC. */
static int pwrite_all(int fd, const char *path, const void *buf, size_t n, uint64_t off)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            if (k == 0)
                errno = ENOSPC;
            return lvd_fail_errno("%s: writing %zu bytes at offset %llu", path, n, (unsigned long long)off);
        }
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

/* Reads up to n bytes at off into buf; stores the count (short only at end of file) in *got. */
static int pread_full(int fd, const char *path, void *buf, size_t n, uint64_t off, size_t *got)
{
    uint8_t *p = buf;
    size_t done = 0;
    while (done < n) {
        ssize_t k = pread(fd, p + done, n - done, (off_t)(off + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return lvd_fail_errno("%s: reading %zu bytes at offset %llu", path, n, (unsigned long long)off);
        if (k == 0)
            break;
        done += (size_t)k;
    }
    *got = done;
    return 0;
}

static int pread_exact(int fd, const char *path, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    if (pread_full(fd, path, buf, n, off, &got) != 0)
        return -1;
    if (got < n)
        return lvd_fail("%s: file ends early: got %zu of %zu bytes at offset %llu", path, got, n,
                        (unsigned long long)off);
    return 0;
}

/* width-1 octal digits, zero-padded, then NUL; v must fit. */
static void put_octal(uint8_t *field, size_t width, uint64_t v)
{
    field[width - 1] = '\0';
    for (size_t i = width - 1; i-- > 0;) {
        field[i] = (uint8_t)('0' + (v & 7));
        v >>= 3;
    }
}

/* Sum of the header bytes with the checksum field counted as spaces (unsigned, as POSIX specifies). */
static uint64_t header_sum(const uint8_t h[TAR_BLOCK])
{
    uint64_t sum = 0;
    for (size_t i = 0; i < TAR_BLOCK; i++)
        sum += (i >= H_CHKSUM && i < H_CHKSUM + W_CHKSUM) ? (uint64_t)' ' : h[i];
    return sum;
}

/* Some old writers summed signed chars; readers accept either sum. */
static int64_t header_sum_signed(const uint8_t h[TAR_BLOCK])
{
    int64_t sum = 0;
    for (size_t i = 0; i < TAR_BLOCK; i++)
        sum += (i >= H_CHKSUM && i < H_CHKSUM + W_CHKSUM) ? (int64_t)' ' : (int64_t)(signed char)h[i];
    return sum;
}

/* One ustar header: `name` is cut to the 100-byte field (a pax record carries the full name). */
static void make_header(uint8_t h[TAR_BLOCK], const char *name, size_t name_len, uint64_t size, char type,
                        uint64_t mtime)
{
    memset(h, 0, TAR_BLOCK);
    memcpy(h + H_NAME, name, name_len < TAR_NAME_FIELD ? name_len : TAR_NAME_FIELD);
    put_octal(h + H_MODE, W_MODE, 0644);
    put_octal(h + H_UID, W_UID, 0);
    put_octal(h + H_GID, W_GID, 0);
    put_octal(h + H_SIZE, W_SIZE, size);
    put_octal(h + H_MTIME, W_MTIME, mtime);
    h[H_TYPE] = (uint8_t)type;
    memcpy(h + H_MAGIC, "ustar", 6); /* "ustar\0" */
    memcpy(h + H_VERSION, "00", 2);
    /* checksum: 6 octal digits, NUL, space */
    put_octal(h + H_CHKSUM, 7, header_sum(h));
    h[H_CHKSUM + 7] = ' ';
}

/* ---------------------------------------------------------------------------------------------------- */
/* Writer */

struct shard_writer {
    int fd;
    char *path;
    uint64_t size;    /* end of the last member appended: where the next header goes */
    uint64_t buf_off; /* file offset of buf[0]; buf_off + buf_len == size between calls */
    uint8_t *buf;     /* WRITE_BUF_BYTES of pending bytes */
    size_t buf_len;
    int broken; /* a write failed: the file tail is unknown, only abandon/close remain */
    int64_t mtime; /* member mtime, seconds since the epoch; -1: the time of each add */
};

static int writer_drain(shard_writer *w)
{
    if (w->buf_len == 0)
        return 0;
    if (pwrite_all(w->fd, w->path, w->buf, w->buf_len, w->buf_off) != 0) {
        w->broken = 1;
        return -1;
    }
    w->buf_off += w->buf_len;
    w->buf_len = 0;
    return 0;
}

/* Queues n bytes after the pending ones; large pieces go straight to the file after the queue. */
static int writer_put(shard_writer *w, const void *src, size_t n)
{
    if (n >= DIRECT_MIN) {
        if (writer_drain(w) != 0)
            return -1;
        if (pwrite_all(w->fd, w->path, src, n, w->buf_off) != 0) {
            w->broken = 1;
            return -1;
        }
        w->buf_off += n;
        return 0;
    }
    if (w->buf_len + n > WRITE_BUF_BYTES && writer_drain(w) != 0)
        return -1;
    memcpy(w->buf + w->buf_len, src, n);
    w->buf_len += n;
    return 0;
}

static int writer_check(const shard_writer *w)
{
    if (w->broken)
        return lvd_fail("%s: an earlier write failed; the shard writer must be abandoned", w->path);
    return 0;
}

/* A new file's directory entry must be durable before anything in it is committed. */
static int sync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash == path ? strdup("/") : slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return lvd_fail("%s: out of memory", path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (fd < 0)
        rc = lvd_fail_errno("%s: opening directory %s", path, dir);
    else if (fsync(fd) != 0 && errno != EINVAL)
        rc = lvd_fail_errno("%s: syncing directory %s", path, dir);
    if (fd >= 0)
        close(fd);
    free(dir);
    return rc;
}

int shard_writer_open(shard_writer **out, const char *path, uint64_t committed)
{
    *out = NULL;
    if (committed % TAR_BLOCK != 0)
        return lvd_fail("%s: committed size %llu is not a multiple of %d", path, (unsigned long long)committed,
                        TAR_BLOCK);
    int created = 1;
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 && errno == EEXIST) {
        created = 0;
        fd = open(path, O_RDWR | O_CLOEXEC);
    }
    if (fd < 0)
        return lvd_fail_errno("%s: opening shard for writing", path);

    struct stat st;
    if (fstat(fd, &st) != 0) {
        lvd_fail_errno("%s: stat", path);
        goto fail;
    }
    uint64_t have = st.st_size > 0 ? (uint64_t)st.st_size : 0;
    if (have < committed) {
        lvd_fail("%s: shard is %llu bytes but %llu bytes were committed (committed data lost)", path,
                 (unsigned long long)have, (unsigned long long)committed);
        goto fail;
    }
    if (have > committed && ftruncate(fd, (off_t)committed) != 0) {
        lvd_fail_errno("%s: truncating from %llu to committed size %llu", path, (unsigned long long)have,
                       (unsigned long long)committed);
        goto fail;
    }
    if (created && sync_parent_dir(path) != 0)
        goto fail;

    shard_writer *w = calloc(1, sizeof *w);
    if (w) {
        w->path = strdup(path);
        w->buf = malloc(WRITE_BUF_BYTES);
    }
    if (!w || !w->path || !w->buf) {
        if (w) {
            free(w->path);
            free(w->buf);
            free(w);
        }
        lvd_fail("%s: out of memory", path);
        goto fail;
    }
    w->fd = fd;
    w->mtime = -1;
    w->size = committed;
    w->buf_off = committed;
    *out = w;
    return 0;

fail:
    close(fd);
    return -1;
}

void shard_writer_set_mtime(shard_writer *w, int64_t mtime) { w->mtime = mtime < 0 ? -1 : mtime; }

int shard_writer_add(shard_writer *w, const char *name, const void *data, size_t len, uint64_t *data_offset)
{
    if (writer_check(w) != 0)
        return -1;
    size_t name_len = strnlen(name, SHARD_NAME_MAX + 1);
    if (name_len == 0 || name_len > SHARD_NAME_MAX)
        return lvd_fail("%s: member name of %zu bytes (allowed 1..%d): %.40s...", w->path, strlen(name),
                        SHARD_NAME_MAX, name);
    if ((uint64_t)len >= TAR_SIZE_LIMIT)
        return lvd_fail("%s: member %s is %llu bytes; members must be under 8 GiB", w->path, name,
                        (unsigned long long)len);
    if (len > 0 && !data)
        return lvd_fail("%s: member %s has no data", w->path, name);

    time_t now = w->mtime >= 0 ? (time_t)w->mtime : time(NULL);
    uint64_t mtime = now < 0 ? 0 : (uint64_t)now > TAR_MTIME_MAX ? TAR_MTIME_MAX : (uint64_t)now;

    /* Layout: [pax header block + one block of "NNN path=<name>\n"] ustar header, data, zero padding. */
    uint8_t hdr[3 * TAR_BLOCK];
    size_t hdr_len = 0;
    if (name_len > TAR_NAME_FIELD) {
        size_t base = strlen(" path=") + name_len + 1; /* record bytes besides its own length digits */
        size_t rec = base + decimal_digits(base);
        if (decimal_digits(rec) != decimal_digits(base)) /* e.g. base 98: "101 path=..." */
            rec = base + decimal_digits(rec);
        make_header(hdr, PAX_NAME, strlen(PAX_NAME), rec, 'x', mtime);
        uint8_t *pax = hdr + TAR_BLOCK;
        memset(pax, 0, TAR_BLOCK);
        int k = snprintf((char *)pax, TAR_BLOCK, "%zu path=", rec);
        memcpy(pax + k, name, name_len);
        pax[(size_t)k + name_len] = '\n';
        hdr_len = 2 * TAR_BLOCK;
    }
    make_header(hdr + hdr_len, name, name_len, len, '0', mtime);
    hdr_len += TAR_BLOCK;

    uint64_t start = w->size;
    size_t pad = (size_t)(pad_block(len) - len);
    if (writer_put(w, hdr, hdr_len) != 0 || (len > 0 && writer_put(w, data, len) != 0) ||
        (pad > 0 && writer_put(w, zero_blocks, pad) != 0))
        return -1;
    w->size = start + hdr_len + pad_block(len);
    if (data_offset)
        *data_offset = start + hdr_len;
    return 0;
}

int shard_writer_flush(shard_writer *w, uint64_t *end)
{
    if (writer_check(w) != 0)
        return -1;
    if (writer_put(w, zero_blocks, sizeof zero_blocks) != 0 || writer_drain(w) != 0)
        return -1;
    if (fsync(w->fd) != 0 && errno != EINVAL) {
        w->broken = 1;
        return lvd_fail_errno("%s: fsync", w->path);
    }
    /* The next member overwrites the end marker. */
    w->buf_off = w->size;
    if (end)
        *end = w->size;
    return 0;
}

uint64_t shard_writer_size(const shard_writer *w) { return w->size; }

int shard_writer_close(shard_writer *w)
{
    if (!w)
        return 0;
    int rc = shard_writer_flush(w, NULL);
    if (close(w->fd) != 0 && rc == 0)
        rc = lvd_fail_errno("%s: close", w->path);
    free(w->path);
    free(w->buf);
    free(w);
    return rc;
}

void shard_writer_abandon(shard_writer *w)
{
    if (!w)
        return;
    close(w->fd);
    free(w->path);
    free(w->buf);
    free(w);
}

int shard_read_at(const char *path, uint64_t offset, void *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lvd_fail_errno("%s: opening shard", path);
    int rc = pread_exact(fd, path, buf, len, offset);
    close(fd);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------- */
/* Reader */

struct shard_reader {
    int fd;
    char *path;
    uint64_t file_size; /* as at open: the torn-tail test compares against it */
    uint64_t pos;       /* offset of the next header block */
    uint64_t valid_end; /* end of the last complete member */
    int torn;
    int done;
    int chained;                        /* an extended header ('x', 'L', 'K') was read since the last member */
    uint64_t first;                     /* offset of the first header of the member being read */
    int has_name;                       /* a pax "path" or GNU 'L' name waits for the next member */
    size_t name_len;                    /* its length in bytes; over SHARD_NAME_MAX, name is "" */
    char name[SHARD_NAME_MAX + 1];
    int has_size;                       /* a pax "size" waits for the next member */
    uint64_t size;
};

int shard_reader_open(shard_reader **out, const char *path)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lvd_fail_errno("%s: opening shard for reading", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        lvd_fail_errno("%s: stat", path);
        close(fd);
        return -1;
    }
    shard_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        close(fd);
        return lvd_fail("%s: out of memory", path);
    }
    r->fd = fd;
    r->file_size = st.st_size > 0 ? (uint64_t)st.st_size : 0;
    *out = r;
    return 0;
}

/* Octal number field: leading spaces, digits, then NUL/space or the field's end. Base-256 sizes (high bit)
 * only appear for members of 8 GiB or more, which shards never hold. */
static int parse_octal(const uint8_t *f, size_t width, uint64_t *out)
{
    size_t i = 0;
    if (width > 0 && (f[0] & 0x80))
        return -1;
    while (i < width && f[i] == ' ')
        i++;
    uint64_t v = 0;
    for (; i < width && f[i] != '\0' && f[i] != ' '; i++) {
        if (f[i] < '0' || f[i] > '7')
            return -1;
        v = (v << 3) | (uint64_t)(f[i] - '0');
    }
    *out = v;
    return 0;
}

static int parse_decimal(const char *s, size_t n, uint64_t *out)
{
    if (n == 0 || n > 19)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

/* The name of a pax "path" or GNU 'L' record, for the next member. An empty name or one holding a NUL makes
 * the archive malformed. A name longer than SHARD_NAME_MAX is well-formed but does not fit shard_member: only
 * its length is kept, and the member it names is returned without a name for the caller to skip. */
static int set_pending_name(shard_reader *r, const char *s, size_t n, uint64_t at)
{
    if (n == 0 || memchr(s, '\0', n))
        return lvd_fail("%s: long member name of %zu bytes at offset %llu is empty or holds a NUL", r->path, n,
                        (unsigned long long)at);
    r->name_len = n;
    if (n > SHARD_NAME_MAX) {
        r->name[0] = '\0';
    } else {
        memcpy(r->name, s, n);
        r->name[n] = '\0';
    }
    r->has_name = 1;
    return 0;
}

/* Pax records "<len> <key>=<value>\n", len counting the whole record; applies "path" and "size". */
static int apply_pax(shard_reader *r, const char *d, size_t n, uint64_t at)
{
    size_t p = 0;
    while (p < n) {
        size_t sp = p;
        while (sp < n && sp - p < 20 && d[sp] != ' ')
            sp++;
        uint64_t rec = 0;
        if (sp >= n || d[sp] != ' ' || parse_decimal(d + p, sp - p, &rec) != 0 || rec <= sp - p + 1 ||
            rec > n - p || d[p + rec - 1] != '\n')
            return lvd_fail("%s: malformed pax record in the extended header at offset %llu", r->path,
                            (unsigned long long)at);
        const char *key = d + sp + 1;
        const char *rec_end = d + p + rec - 1; /* the '\n' */
        const char *eq = memchr(key, '=', (size_t)(rec_end - key));
        if (!eq)
            return lvd_fail("%s: pax record without '=' in the extended header at offset %llu", r->path,
                            (unsigned long long)at);
        size_t key_len = (size_t)(eq - key);
        const char *val = eq + 1;
        size_t val_len = (size_t)(rec_end - val);
        if (key_len == 4 && memcmp(key, "path", 4) == 0) {
            if (set_pending_name(r, val, val_len, at) != 0)
                return -1;
        } else if (key_len == 4 && memcmp(key, "size", 4) == 0) {
            if (parse_decimal(val, val_len, &r->size) != 0)
                return lvd_fail("%s: bad pax size in the extended header at offset %llu", r->path,
                                (unsigned long long)at);
            r->has_size = 1;
        }
        p += rec;
    }
    return 0;
}

static int reader_torn(shard_reader *r)
{
    r->torn = 1;
    r->done = 1;
    return 0;
}

int shard_reader_next(shard_reader *r, shard_member *m)
{
    uint8_t h[TAR_BLOCK];
    while (!r->done) {
        uint64_t at = r->pos;
        if (at == r->file_size) {
            /* No end marker: complete unless an extended header lost its member. */
            r->done = 1;
            if (r->has_name || r->has_size)
                r->torn = 1;
            return 0;
        }
        if (r->file_size - at < TAR_BLOCK)
            return reader_torn(r);
        if (pread_exact(r->fd, r->path, h, TAR_BLOCK, at) != 0)
            return -1;
        if (memcmp(h, zero_blocks, TAR_BLOCK) == 0) {
            r->done = 1;
            if (r->has_name || r->has_size)
                r->torn = 1;
            return 0;
        }
        if (!r->chained)
            r->first = at; /* as Python's tarfile counts a member's offset: its extended headers included */
        uint64_t stored = 0;
        if (parse_octal(h + H_CHKSUM, W_CHKSUM, &stored) != 0 ||
            (stored != header_sum(h) && (int64_t)stored != header_sum_signed(h)))
            return lvd_fail("%s: bad tar header checksum at offset %llu", r->path, (unsigned long long)at);
        uint64_t size = 0;
        if (parse_octal(h + H_SIZE, W_SIZE, &size) != 0)
            return lvd_fail("%s: unsupported or malformed size field in the tar header at offset %llu", r->path,
                            (unsigned long long)at);
        char type = h[H_TYPE] == '\0' || h[H_TYPE] == '7' ? '0' : (char)h[H_TYPE];
        int extended = type == 'x' || type == 'g' || type == 'L' || type == 'K';
        if (!extended && r->has_size)
            size = r->size;
        if (type >= '1' && type <= '6')
            size = 0; /* links, devices, directories and fifos carry no data in the archive */
        uint64_t data_off = at + TAR_BLOCK;
        if (size > r->file_size - data_off || pad_block(size) > r->file_size - data_off)
            return reader_torn(r);
        uint64_t end = data_off + pad_block(size);

        if (type == 'x' || type == 'L') {
            /* 'L' data is the name and a NUL. A name over SHARD_NAME_MAX is read whole all the same, for its
             * length, so that only its member is skipped; the bound is the pax one. */
            if (size > PAX_MAX)
                return lvd_fail("%s: extended header of %llu bytes at offset %llu is too large", r->path,
                                (unsigned long long)size, (unsigned long long)at);
            char *d = malloc(size + 1);
            if (!d)
                return lvd_fail("%s: out of memory", r->path);
            int rc = pread_exact(r->fd, r->path, d, (size_t)size, data_off);
            if (rc == 0 && type == 'x')
                rc = apply_pax(r, d, (size_t)size, at);
            else if (rc == 0)
                rc = set_pending_name(r, d, strnlen(d, (size_t)size), at);
            free(d);
            if (rc != 0)
                return -1;
            r->chained = 1;
            r->pos = end;
            continue;
        }
        if (type == 'g' || type == 'K') {
            /* Global pax defaults and link names do not affect shard members. A link name is still one of
             * the headers of the member after it (its offset starts there); global defaults are not. */
            if (type == 'K')
                r->chained = 1;
            r->pos = end;
            continue;
        }

        if (r->has_name) {
            memcpy(m->name, r->name, sizeof m->name);
            m->name_len = r->name_len;
        } else {
            size_t nl = strnlen((const char *)h + H_NAME, TAR_NAME_FIELD);
            size_t pl = memcmp(h + H_MAGIC, "ustar", 6) == 0 ? strnlen((const char *)h + H_PREFIX, W_PREFIX) : 0;
            size_t total = pl > 0 ? pl + 1 + nl : nl;
            if (nl == 0)
                return lvd_fail("%s: empty member name at offset %llu", r->path, (unsigned long long)at);
            m->name_len = total;
            if (total > SHARD_NAME_MAX) {
                /* a 155-byte prefix, '/' and a 100-byte name: one byte too many, returned without its name
                 * like the long names of extended headers */
                m->name[0] = '\0';
            } else {
                size_t k = 0;
                if (pl > 0) {
                    memcpy(m->name, h + H_PREFIX, pl);
                    m->name[pl] = '/';
                    k = pl + 1;
                }
                memcpy(m->name + k, h + H_NAME, nl);
                m->name[total] = '\0';
            }
        }
        m->offset = r->first;
        m->data_offset = data_off;
        m->size = size;
        m->end = end;
        m->type = type;
        r->has_name = 0;
        r->has_size = 0;
        r->chained = 0;
        r->pos = end;
        r->valid_end = end;
        return 1;
    }
    return 0;
}

int shard_reader_read(shard_reader *r, const shard_member *m, void *buf)
{
    if (m->data_offset > r->file_size || m->size > r->file_size - m->data_offset)
        return lvd_fail("%s: member %s (%llu bytes at offset %llu) runs past the end of the file", r->path,
                        m->name, (unsigned long long)m->size, (unsigned long long)m->data_offset);
    return pread_exact(r->fd, r->path, buf, (size_t)m->size, m->data_offset);
}

int shard_reader_torn(const shard_reader *r) { return r->torn; }

uint64_t shard_reader_valid_end(const shard_reader *r) { return r->valid_end; }

void shard_reader_close(shard_reader *r)
{
    if (!r)
        return;
    close(r->fd);
    free(r->path);
    free(r);
}
