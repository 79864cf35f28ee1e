/* manifest.c — reading an lvd manifest (manifest.h).
 *
 * manifest_open reads the SQLite file once: it sizes one arena from the tables (sample records, shard records,
 * info pairs and every string they point at), fills it, opens each shard file once, and closes SQLite. After
 * that the manifest is immutable: every reader function only reads the arena and calls pread(2) on shard
 * descriptors, so any number of threads may use it at once.
 */
#include "manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "sha256.h"

typedef struct mshard {
    const char *path;   /* resolved against the manifest's folder */
    const char *sha256; /* recorded, of [0, bytes) */
    uint64_t bytes;     /* recorded committed size */
    uint64_t size;      /* the file's size at open (0 when missing) */
    int fd;             /* -1 when missing */
    int err;            /* errno of a failed open, else 0 */
    int as_built;       /* what follows `bytes` is only zeros, at most TAIL_MAX bytes: the archive's end marker */
} mshard;

/* A tar writer ends the archive with two zero blocks after the last member, and Python's tarfile pads that to
 * its 10240-byte record: a shard holding only such zeros past its recorded bytes is the shard as built. */
#define TAIL_MAX 10240

typedef struct minfo {
    const char *key, *value;
} minfo;

struct manifest {
    char *arena; /* everything below points into it */
    const char *path;
    size_t n, nshards, ninfo;
    manifest_sample *samples; /* [n], id order */
    mshard *shards;           /* [nshards], id order */
    minfo *info;              /* [ninfo] */
    uint64_t epoch_len;       /* sum of weights */
};

/* ---- opening the SQLite file ---- */

/* "file:" URI of path, read-only and immutable (no journal, WAL or lock file is touched: a manifest is never
 * written after its build, and it may sit on a read-only or network file system). '?', '#' and '%' would end
 * or escape the path part of the URI, so they are percent-encoded. Returns malloc'ed text or NULL. */
static char *ro_uri(const char *path)
{
    size_t n = strlen(path);
    char *u = malloc(3 * n + 64);
    if (!u)
        return NULL;
    /* An absolute path gets an empty authority ("file:///..."), so a path starting with "//" is not read as
     * a host name. */
    char *p = u + sprintf(u, "%s", path[0] == '/' ? "file://" : "file:");
    for (const char *s = path; *s; s++) {
        if (*s == '?' || *s == '#' || *s == '%')
            p += sprintf(p, "%%%02X", (unsigned char)*s);
        else
            *p++ = *s;
    }
    strcpy(p, "?mode=ro&immutable=1");
    return u;
}

int manifest_db_open(struct sqlite3 **out, const char *path)
{
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0)
        return lvd_fail_errno("manifest %s", path);
    if (!S_ISREG(st.st_mode))
        return lvd_fail("manifest %s: not a regular file", path);
    char *uri = ro_uri(path);
    if (!uri)
        return lvd_fail("manifest %s: out of memory", path);
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, NULL);
    free(uri);
    if (rc != SQLITE_OK) {
        lvd_fail("manifest %s: cannot open: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return -1;
    }
    /* The first statement reads the header: a file that is not SQLite fails here (SQLITE_NOTADB). */
    sqlite3_stmt *st_ver = NULL;
    rc = sqlite3_prepare_v2(db, "SELECT value FROM info WHERE key = 'schema_version'", -1, &st_ver, NULL);
    if (rc != SQLITE_OK) {
        int ec = sqlite3_errcode(db);
        if (ec == SQLITE_NOTADB || ec == SQLITE_CORRUPT)
            lvd_fail("manifest %s: not an SQLite database (%s)", path, sqlite3_errmsg(db));
        else
            lvd_fail("manifest %s: not an lvd manifest (%s)", path, sqlite3_errmsg(db));
        sqlite3_close(db);
        return -1;
    }
    rc = sqlite3_step(st_ver);
    if (rc != SQLITE_ROW) {
        if (rc == SQLITE_DONE)
            lvd_fail("manifest %s: not an lvd manifest (its info table has no schema_version)", path);
        else
            lvd_fail("manifest %s: %s", path, sqlite3_errmsg(db));
        sqlite3_finalize(st_ver);
        sqlite3_close(db);
        return -1;
    }
    const char *v = (const char *)sqlite3_column_text(st_ver, 0);
    char *end = NULL;
    errno = 0;
    long ver = v ? strtol(v, &end, 10) : 0;
    if (!v || end == v || *end || errno || ver < 1) {
        lvd_fail("manifest %s: schema_version '%s' is not a positive integer", path, v ? v : "");
        sqlite3_finalize(st_ver);
        sqlite3_close(db);
        return -1;
    }
    sqlite3_finalize(st_ver);
    if (ver > MANIFEST_SCHEMA_VERSION) {
        sqlite3_close(db);
        return lvd_fail("manifest %s: schema version %ld is newer than this lvd reads (%d); use a newer lvd", path,
                        ver, MANIFEST_SCHEMA_VERSION);
    }
    *out = db;
    return 0;
}

/* ---- loading ---- */

static int sql_fail(sqlite3 *db, const char *path)
{
    return lvd_fail("manifest %s: %s", path, sqlite3_errmsg(db));
}

/* One integer from sql (no parameters), NULL read as 0. */
static int query_u64(sqlite3 *db, const char *path, const char *sql, uint64_t *out)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return sql_fail(db, path);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        return sql_fail(db, path);
    }
    sqlite3_int64 v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    *out = v < 0 ? 0 : (uint64_t)v;
    return 0;
}

/* A bump allocator over the text part of the arena; sizes were summed beforehand, so running out means the
 * tables changed between the queries (impossible for an immutable file) or a bug: checked anyway. */
typedef struct textbuf {
    char *p, *end;
} textbuf;

static const char *text_put(textbuf *t, const char *a, size_t alen, const char *b)
{
    size_t blen = b ? strlen(b) : 0;
    if ((size_t)(t->end - t->p) < alen + blen + 1)
        return NULL;
    char *s = t->p;
    memcpy(s, a, alen);
    if (blen)
        memcpy(s + alen, b, blen);
    s[alen + blen] = '\0';
    t->p += alen + blen + 1;
    return s;
}

static int is_hex64(const unsigned char *s)
{
    if (!s)
        return 0;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    return s[64] == '\0';
}

static void close_shards(manifest *m)
{
    for (size_t i = 0; i < m->nshards; i++)
        if (m->shards[i].fd >= 0)
            close(m->shards[i].fd);
}

/* Fails while a row is current: the message is formatted before finalizing, since it may quote the row's
 * text, which sqlite3_finalize frees. */
#define ROW_FAIL(...)                                                                                         \
    do {                                                                                                      \
        lvd_fail(__VA_ARGS__);                                                                                \
        sqlite3_finalize(st);                                                                                 \
        return -1;                                                                                            \
    } while (0)

/* Fills the arena of m (sized by the caller) from db. */
/* folder_len: bytes of path up to and including its last '/' (0 when it has none): the prefix a relative
 * shard path gets. */
static int load_tables(manifest *m, sqlite3 *db, const char *path, textbuf *tb, size_t folder_len)
{
    sqlite3_stmt *st = NULL;
    int rc;
    /* info */
    if (sqlite3_prepare_v2(db, "SELECT key, value FROM info ORDER BY key", -1, &st, NULL) != SQLITE_OK)
        return sql_fail(db, path);
    size_t k = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && k < m->ninfo) {
        const char *key = (const char *)sqlite3_column_text(st, 0);
        const char *val = (const char *)sqlite3_column_text(st, 1);
        m->info[k].key = text_put(tb, key ? key : "", key ? strlen(key) : 0, NULL);
        m->info[k].value = text_put(tb, val ? val : "", val ? strlen(val) : 0, NULL);
        if (!m->info[k].key || !m->info[k].value)
            goto changed;
        k++;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        goto sqlerr;
    if (k != m->ninfo)
        goto changed;
    sqlite3_finalize(st);

    /* shards: ids 1..n, paths resolved against the manifest's folder */
    if (sqlite3_prepare_v2(db, "SELECT id, path, bytes, sha256 FROM shards ORDER BY id", -1, &st, NULL) != SQLITE_OK)
        return sql_fail(db, path);
    k = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (k >= m->nshards)
            goto changed;
        sqlite3_int64 id = sqlite3_column_int64(st, 0);
        const char *sp = (const char *)sqlite3_column_text(st, 1);
        sqlite3_int64 bytes = sqlite3_column_int64(st, 2);
        const unsigned char *sha = sqlite3_column_text(st, 3);
        if (id != (sqlite3_int64)k + 1) {
            ROW_FAIL("manifest %s: shard ids are not 1..%zu (id %lld at position %zu)", path, m->nshards,
                            (long long)id, k + 1);
        }
        if (!sp || !*sp || bytes < 0 || !is_hex64(sha)) {
            ROW_FAIL("manifest %s: shard %lld has an empty path, negative bytes or a malformed sha256", path,
                            (long long)id);
        }
        mshard *s = &m->shards[k];
        if (sp[0] == '/' || folder_len == 0)
            s->path = text_put(tb, sp, strlen(sp), NULL);
        else
            s->path = text_put(tb, path, folder_len, sp); /* "<folder>/" + sp */
        s->sha256 = text_put(tb, (const char *)sha, 64, NULL);
        if (!s->path || !s->sha256)
            goto changed;
        s->bytes = (uint64_t)bytes;
        k++;
    }
    if (rc != SQLITE_DONE)
        goto sqlerr;
    if (k != m->nshards)
        goto changed;
    sqlite3_finalize(st);

    /* samples, in id order */
    static const char sql_samples[] =
        "SELECT id, key, data_sha256, shard_id, offset, length, format, width, height, orig_width, orig_height,"
        " weight FROM samples ORDER BY id";
    if (sqlite3_prepare_v2(db, sql_samples, -1, &st, NULL) != SQLITE_OK)
        return sql_fail(db, path);
    /* The few distinct formats are stored once. */
    const char *formats[8];
    size_t nformats = 0;
    k = 0;
    m->epoch_len = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (k >= m->n)
            goto changed;
        manifest_sample *x = &m->samples[k];
        x->id = sqlite3_column_int64(st, 0);
        const unsigned char *key = sqlite3_column_text(st, 1);
        const unsigned char *dsha = sqlite3_column_text(st, 2);
        sqlite3_int64 shard_id = sqlite3_column_int64(st, 3);
        sqlite3_int64 off = sqlite3_column_int64(st, 4);
        sqlite3_int64 len = sqlite3_column_int64(st, 5);
        const char *fmt = (const char *)sqlite3_column_text(st, 6);
        sqlite3_int64 w = sqlite3_column_int64(st, 7), h = sqlite3_column_int64(st, 8);
        sqlite3_int64 ow = sqlite3_column_int64(st, 9), oh = sqlite3_column_int64(st, 10);
        sqlite3_int64 weight = sqlite3_column_int64(st, 11);
        if (x->id != (int64_t)k + 1) {
            ROW_FAIL("manifest %s: sample ids are not 1..%zu (id %lld at position %zu)", path, m->n,
                            (long long)x->id, k + 1);
        }
        if (!is_hex64(key) || !is_hex64(dsha)) {
            ROW_FAIL("manifest %s: sample %lld: key or data_sha256 is not 64 lowercase hex digits", path,
                            (long long)x->id);
        }
        if (shard_id < 1 || (uint64_t)shard_id > m->nshards) {
            ROW_FAIL("manifest %s: sample %s: shard_id %lld is not a shard (1..%zu)", path,
                            (const char *)key, (long long)shard_id, m->nshards);
        }
        const mshard *sh = &m->shards[shard_id - 1];
        if (off < 0 || len < 0 || (uint64_t)off > sh->bytes || (uint64_t)len > sh->bytes - (uint64_t)off) {
            ROW_FAIL("manifest %s: sample %s: bytes [%lld, %lld + %lld) lie outside shard %s's recorded "
                            "%" PRIu64 " bytes",
                            path, (const char *)key, (long long)off, (long long)off, (long long)len, sh->path,
                            sh->bytes);
        }
        if (weight < 1 || weight > UINT32_MAX || w < 0 || h < 0 || ow < 0 || oh < 0 || w > INT32_MAX ||
            h > INT32_MAX || ow > INT32_MAX || oh > INT32_MAX || !fmt) {
            ROW_FAIL("manifest %s: sample %s: weight, size or format out of range", path, (const char *)key);
        }
        x->key = text_put(tb, (const char *)key, 64, NULL);
        x->data_sha256 = text_put(tb, (const char *)dsha, 64, NULL);
        if (!x->key || !x->data_sha256)
            goto changed;
        const char *f = NULL;
        for (size_t j = 0; j < nformats && !f; j++)
            if (!strcmp(formats[j], fmt))
                f = formats[j];
        if (!f) {
            if (nformats == sizeof formats / sizeof formats[0]) {
                sqlite3_finalize(st);
                return lvd_fail("manifest %s: more than %zu distinct sample formats", path, nformats);
            }
            f = formats[nformats++] = text_put(tb, fmt, strlen(fmt), NULL);
            if (!f)
                goto changed;
        }
        x->format = f;
        x->shard = (uint32_t)(shard_id - 1);
        x->offset = (uint64_t)off;
        x->length = (uint64_t)len;
        x->width = (int32_t)w;
        x->height = (int32_t)h;
        x->orig_width = (int32_t)ow;
        x->orig_height = (int32_t)oh;
        x->weight = (uint32_t)weight;
        m->epoch_len += x->weight;
        k++;
    }
    if (rc != SQLITE_DONE)
        goto sqlerr;
    if (k != m->n)
        goto changed;
    sqlite3_finalize(st);
    return 0;

sqlerr:
    sqlite3_finalize(st);
    return sql_fail(db, path);
changed:
    sqlite3_finalize(st);
    return lvd_fail("manifest %s: tables changed while reading (the file must not be written)", path);
}

/* Opens every shard once; strict mode fails on the first missing or short one. */
static int open_shards(manifest *m, int flags)
{
    for (size_t i = 0; i < m->nshards; i++) {
        mshard *s = &m->shards[i];
        s->fd = open(s->path, O_RDONLY | O_CLOEXEC);
        if (s->fd < 0) {
            s->err = errno;
            if (!(flags & MANIFEST_OPEN_LENIENT))
                return lvd_fail_errno("manifest %s: shard %s", m->path, s->path);
            continue;
        }
        struct stat st;
        if (fstat(s->fd, &st) != 0)
            return lvd_fail_errno("manifest %s: shard %s", m->path, s->path);
        if (!S_ISREG(st.st_mode)) { /* a directory opens O_RDONLY too, and fails only at the first read */
            close(s->fd);
            s->fd = -1;
            s->err = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
            if (!(flags & MANIFEST_OPEN_LENIENT))
                return lvd_fail("manifest %s: shard %s: not a regular file", m->path, s->path);
            continue;
        }
        s->size = (uint64_t)st.st_size;
        if (s->size < s->bytes && !(flags & MANIFEST_OPEN_LENIENT))
            return lvd_fail("manifest %s: shard %s: %" PRIu64 " bytes, manifest records %" PRIu64 " (truncated?)",
                            m->path, s->path, s->size, s->bytes);
        s->as_built = s->size == s->bytes;
        if (s->size > s->bytes && s->size - s->bytes <= TAIL_MAX) {
            uint8_t tail[TAIL_MAX];
            size_t n = (size_t)(s->size - s->bytes);
            ssize_t got = pread(s->fd, tail, n, (off_t)s->bytes);
            s->as_built = got == (ssize_t)n;
            for (size_t i = 0; s->as_built && i < n; i++)
                s->as_built = tail[i] == 0;
        }
    }
    return 0;
}

int manifest_open_flags(manifest **out, const char *path, int flags)
{
    *out = NULL;
    sqlite3 *db;
    if (manifest_db_open(&db, path) != 0)
        return -1;
    /* Sizes first, so the arena is one allocation: records, then text (octet lengths + NULs). */
    uint64_t n, nshards, ninfo, text_samples, text_shards, text_info;
    const char *folder_end = strrchr(path, '/');
    size_t folder_len = folder_end ? (size_t)(folder_end - path) + 1 : 0;
    if (query_u64(db, path, "SELECT COUNT(*) FROM samples", &n) != 0 ||
        query_u64(db, path, "SELECT COUNT(*) FROM shards", &nshards) != 0 ||
        query_u64(db, path, "SELECT COUNT(*) FROM info", &ninfo) != 0 ||
        query_u64(db, path,
                  "SELECT COALESCE(SUM(length(CAST(format AS BLOB)) + 1), 0) + COUNT(*) * 130 FROM samples",
                  &text_samples) != 0 ||
        query_u64(db, path, "SELECT COALESCE(SUM(length(CAST(path AS BLOB)) + 1 + 65), 0) FROM shards",
                  &text_shards) != 0 ||
        query_u64(db, path,
                  "SELECT COALESCE(SUM(length(CAST(key AS BLOB)) + length(CAST(value AS BLOB)) + 2), 0) FROM info",
                  &text_info) != 0) {
        sqlite3_close(db);
        return -1;
    }
    if (n > UINT32_MAX || nshards > UINT32_MAX) {
        sqlite3_close(db);
        return lvd_fail("manifest %s: %" PRIu64 " samples / %" PRIu64 " shards: more than this reader indexes", path,
                        n, nshards);
    }
    size_t plen = strlen(path);
    size_t rec = sizeof(struct manifest) + n * sizeof(manifest_sample) + nshards * sizeof(mshard) +
                 ninfo * sizeof(minfo);
    rec = (rec + 15) & ~(size_t)15;
    size_t text = text_samples + text_shards + nshards * folder_len + text_info + plen + 1;
    char *arena = calloc(1, rec + text);
    if (!arena) {
        sqlite3_close(db);
        return lvd_fail("manifest %s: out of memory for %" PRIu64 " samples", path, n);
    }
    manifest *m = (manifest *)arena;
    m->arena = arena;
    m->n = n;
    m->nshards = nshards;
    m->ninfo = ninfo;
    m->samples = (manifest_sample *)(arena + sizeof(struct manifest));
    m->shards = (mshard *)(m->samples + n);
    m->info = (minfo *)(m->shards + nshards);
    for (size_t i = 0; i < nshards; i++)
        m->shards[i].fd = -1;
    textbuf tb = {arena + rec, arena + rec + text};
    m->path = text_put(&tb, path, plen, NULL);
    int rc = load_tables(m, db, path, &tb, folder_len);
    sqlite3_close(db);
    if (rc == 0)
        rc = open_shards(m, flags);
    if (rc != 0) {
        manifest_close(m);
        return -1;
    }
    *out = m;
    return 0;
}

int manifest_open(manifest **out, const char *path) { return manifest_open_flags(out, path, 0); }

void manifest_close(manifest *m)
{
    if (!m)
        return;
    close_shards(m);
    free(m->arena);
}

/* ---- accessors ---- */

size_t manifest_count(const manifest *m) { return m->n; }
size_t manifest_shard_count(const manifest *m) { return m->nshards; }
const char *manifest_path(const manifest *m) { return m->path; }

const char *manifest_shard_path(const manifest *m, size_t shard)
{
    return shard < m->nshards ? m->shards[shard].path : NULL;
}

uint64_t manifest_shard_bytes(const manifest *m, size_t shard)
{
    return shard < m->nshards ? m->shards[shard].bytes : 0;
}

const char *manifest_shard_sha256(const manifest *m, size_t shard)
{
    return shard < m->nshards ? m->shards[shard].sha256 : NULL;
}

manifest_shard_state manifest_shard_status(const manifest *m, size_t shard, uint64_t *size, const char **why)
{
    if (size)
        *size = 0;
    if (why)
        *why = "";
    if (shard >= m->nshards)
        return MANIFEST_SHARD_MISSING;
    const mshard *s = &m->shards[shard];
    if (s->fd < 0) {
        if (why)
            *why = strerror(s->err);
        return MANIFEST_SHARD_MISSING;
    }
    if (size)
        *size = s->size;
    return s->size < s->bytes ? MANIFEST_SHARD_SHORT : s->as_built ? MANIFEST_SHARD_OK : MANIFEST_SHARD_GROWN;
}

const char *manifest_info(const manifest *m, const char *key)
{
    /* Few keys (about ten): a linear scan. */
    for (size_t i = 0; i < m->ninfo; i++)
        if (!strcmp(m->info[i].key, key))
            return m->info[i].value;
    return NULL;
}

int manifest_sample_meta(const manifest *m, size_t i, manifest_sample *out)
{
    if (i >= m->n)
        return lvd_fail("manifest %s: sample index %zu out of range (%zu samples)", m->path, i, m->n);
    *out = m->samples[i];
    return 0;
}

uint64_t manifest_epoch_length(const manifest *m) { return m->epoch_len; }

/* ---- reading ---- */

int manifest_shard_pread(const manifest *m, size_t shard, uint64_t offset, void *buf, size_t len)
{
    if (shard >= m->nshards)
        return lvd_fail("manifest %s: shard index %zu out of range (%zu shards)", m->path, shard, m->nshards);
    const mshard *s = &m->shards[shard];
    if (s->fd < 0) {
        errno = s->err;
        return lvd_fail_errno("shard %s", s->path);
    }
    /* pread may return fewer bytes than asked (signals, some file systems): loop until done or EOF. */
    uint8_t *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(s->fd, p + done, len - done, (off_t)(offset + done));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return lvd_fail_errno("shard %s: reading %zu bytes at %" PRIu64, s->path, len, offset);
        }
        if (r == 0)
            return lvd_fail("shard %s: ends at %" PRIu64 " bytes, before %" PRIu64 " (truncated?)", s->path,
                            offset + done, offset + len);
        done += (size_t)r;
    }
    return 0;
}

int manifest_read(const manifest *m, size_t i, void *buf, size_t cap, size_t *len)
{
    if (i >= m->n)
        return lvd_fail("manifest %s: sample index %zu out of range (%zu samples)", m->path, i, m->n);
    const manifest_sample *x = &m->samples[i];
    if (x->length > cap)
        return lvd_fail("%s: %" PRIu64 " bytes do not fit the %zu-byte buffer", x->key, x->length, cap);
    if (manifest_shard_pread(m, x->shard, x->offset, buf, (size_t)x->length) != 0)
        return lvd_fail_ctx("%s", x->key);
    *len = (size_t)x->length;
    return 0;
}

int manifest_read_checked(const manifest *m, size_t i, void *buf, size_t cap, size_t *len)
{
    if (manifest_read(m, i, buf, cap, len) != 0)
        return -1;
    const manifest_sample *x = &m->samples[i];
    char hex[SHA256_HEX];
    sha256_hex(buf, *len, hex);
    if (memcmp(hex, x->data_sha256, 64) != 0)
        return lvd_fail("%s: data SHA-256 mismatch in %s at %" PRIu64, x->key, m->shards[x->shard].path, x->offset);
    return 0;
}

/* ---- the epoch order (specified at the top of manifest.h) ---- */

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int manifest_order(const manifest *m, uint64_t seed, uint64_t epoch, uint32_t rank, uint32_t ranks,
                   uint32_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (ranks < 1 || rank >= ranks)
        return lvd_fail("manifest %s: rank %u of %u: need ranks >= 1 and rank < ranks", m->path, rank, ranks);
    uint64_t L = m->epoch_len;
    if (L > SIZE_MAX / sizeof(uint32_t))
        return lvd_fail("manifest %s: epoch of %" PRIu64 " entries is too long to shuffle here", m->path, L);
    /* Every rank shuffles the whole epoch (4 bytes per entry) and keeps its stride: ranks need no
     * communication to agree on the order. */
    uint32_t *list = malloc((size_t)(L ? L : 1) * sizeof *list);
    if (!list)
        return lvd_fail("manifest %s: out of memory for an epoch of %" PRIu64 " entries", m->path, L);
    size_t p = 0;
    for (size_t i = 0; i < m->n; i++)
        for (uint32_t w = 0; w < m->samples[i].weight; w++)
            list[p++] = (uint32_t)i;
    uint64_t state = seed * 0x9e3779b97f4a7c15ULL + epoch;
    for (uint64_t i = L ? L - 1 : 0; i >= 1; i--) {
        uint64_t j = splitmix64(&state) % (i + 1);
        uint32_t t = list[i];
        list[i] = list[j];
        list[j] = t;
    }
    size_t mine = (size_t)(L / ranks + (rank < L % ranks ? 1 : 0));
    /* Compact in place: position r + k*R moves to k, never ahead of a position still to be read. */
    for (size_t k = 0; k < mine; k++)
        list[k] = list[rank + k * (size_t)ranks];
    if (mine == 0) {
        free(list);
        list = malloc(sizeof *list); /* a valid pointer to free, for a rank with nothing this epoch */
        if (!list)
            return lvd_fail("out of memory");
    } else {
        uint32_t *shrunk = realloc(list, mine * sizeof *list);
        if (shrunk)
            list = shrunk;
    }
    *out = list;
    *n = mine;
    return 0;
}
