/* lvd_import.c — lvd-import: brings local images (a directory tree, a path list, webdataset tars) into a
 * collection, through the same content-addressed raw shards as the crawler.
 *
 * Per file: read the bytes, sniff the format (non-images are skipped), SHA-256 them; a member (collection,
 * key) that already points at the same bytes is left alone; bytes not yet in `images` are appended to
 * WORK/shards/raw-NNNNNN.tar as "<sha256>.<ext>" + "<sha256>.json"; the image and member rows go into the
 * batch transaction, which ends with store_sync() and then the commit (store.h), so kill -9 at any point
 * leaves a catalog that a rerun completes.
 *
 * curate/import/: lvd_import.c alone; its pieces (urllist, store, shard, image sniffing, catalog) are the ones
 * lvd-crawl also uses, in common/.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog.h"
#include "config.h"
#include "err.h"
#include "image.h"
#include "log.h"
#include "opts.h"
#include "part.h"
#include "progress.h"
#include "sha256.h"
#include "shard.h"
#include "stage.h"
#include "store.h"
#include "urllist.h"

#define PROG "lvd-import"
#define EXIT_USAGE 2
#define FILE_MAX_BYTES ((uint64_t)1 << 30)  /* larger inputs are reported, not imported */
#define CLS_MAX_BYTES ((uint64_t)4096)      /* a webdataset .cls member holds a short label */
#define JSON_MAX_BYTES ((uint64_t)1 << 20)  /* a webdataset .json member is small metadata */
#define BATCH_SHARDS 4                      /* a batch commits once it has appended this many shards' worth */
#define NOT_IMAGE_REPORTED 20               /* not-an-image files logged one by one; the rest are counted */
#define LONG_NAME_REPORTED 20               /* tar members with too long a name, likewise */

/* ---- growable strings ---- */

typedef struct strbuf {
    char *p;
    size_t len, cap; /* bytes used (without the NUL), bytes allocated */
} strbuf;

static int sb_reserve(strbuf *b, size_t extra)
{
    if (extra > SIZE_MAX / 2 - b->len)
        return lvd_fail("string too long");
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return lvd_fail("out of memory");
    b->p = p;
    b->cap = cap;
    return 0;
}

static int sb_addn(strbuf *b, const char *s, size_t n)
{
    if (sb_reserve(b, n) != 0)
        return -1;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

static int sb_add(strbuf *b, const char *s) { return sb_addn(b, s, strlen(s)); }

static void sb_cut(strbuf *b, size_t len)
{
    b->len = len;
    if (b->p)
        b->p[len] = '\0';
}

/* ---- the import run ---- */

typedef struct counts {
    uint64_t files;       /* inputs seen: files walked or listed, webdataset samples with an image member */
    uint64_t new_images;  /* bytes not in `images` before: appended to a shard */
    uint64_t present;     /* bytes already in `images` (from an earlier run or earlier in this one) */
    uint64_t changed;     /* existing members moved to different bytes */
    uint64_t not_image;   /* skipped: img_sniff does not recognise the bytes */
    uint64_t long_name;   /* skipped: tar members whose name is over SHARD_NAME_MAX bytes */
    uint64_t errors;      /* unreadable or missing inputs, malformed list lines or tars */
    uint64_t new_members; /* member rows inserted */
} counts;

typedef struct importer {
    stage *st;
    const char *collection;
    int64_t collection_id;
    uint64_t shard_size; /* bytes before a raw shard rolls over */
    int64_t batch;       /* files per transaction */
    store *store;        /* opened at the first new image, so a run with nothing new leaves shards untouched */
    int in_txn;
    int64_t in_batch;     /* files handled in the open transaction */
    uint64_t batch_bytes; /* shard bytes appended in it (headers and padding included) */
    counts n;
    progress prog;
} importer;

static void note_progress(importer *im)
{
    progress_update(&im->prog, im->n.files, im->n.errors);
}

/* A bad input: logged with the concerned path/line, counted, and the run goes on. */
static void input_error(importer *im, const char *msg)
{
    log_error("%s", msg);
    im->n.errors++;
}

static int batch_commit(importer *im)
{
    if (!im->in_txn)
        return 0;
    /* Data first, then the rows that point at it (store.h, steps 3-4). */
    if (im->store && store_sync(im->store) != 0)
        return -1;
    if (catalog_commit(im->st->cat) != 0)
        return -1;
    im->in_txn = 0;
    im->in_batch = 0;
    im->batch_bytes = 0;
    return 0;
}

static int batch_enter(importer *im)
{
    if (im->in_txn)
        return 0;
    if (catalog_begin(im->st->cat) != 0)
        return -1;
    im->in_txn = 1;
    im->in_batch = 0;
    im->batch_bytes = 0;
    return 0;
}

/* JSON text of the metadata stored next to new bytes; malloc'ed, NULL when out of memory. */
static char *meta_json(const importer *im, const char *key, const char *source, const char *label)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    char *text = NULL;
    if (cJSON_AddStringToObject(o, "collection", im->collection) && cJSON_AddStringToObject(o, "key", key) &&
        cJSON_AddStringToObject(o, "source", source) &&
        (label ? cJSON_AddStringToObject(o, "label", label) != NULL : cJSON_AddNullToObject(o, "label") != NULL))
        text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

/* The sha256 of the bytes member (collection, key) points at: 1 found (hex in have), 0 no member, -1 error. */
static int member_sha(importer *im, const char *key, char have[SHA256_HEX])
{
    catalog *cat = im->st->cat;
    sqlite3_stmt *q = catalog_stmt(cat, "SELECT i.sha256 FROM members m JOIN images i ON i.id = m.image_id "
                                        "WHERE m.collection_id = ?1 AND m.key = ?2");
    if (!q)
        return -1;
    sqlite3_bind_int64(q, 1, im->collection_id);
    sqlite3_bind_text(q, 2, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(q);
    int found = 0;
    if (rc == SQLITE_ROW) {
        const char *s = (const char *)sqlite3_column_text(q, 0);
        snprintf(have, SHA256_HEX, "%s", s ? s : "");
        found = 1;
    } else if (rc != SQLITE_DONE) {
        lvd_fail("%s: looking up member '%s': %s", catalog_path(cat), key, sqlite3_errmsg(catalog_db(cat)));
        found = -1;
    }
    sqlite3_reset(q);
    return found;
}

/* Appends new bytes to the raw shard and inserts their image row (inside the open transaction). */
static int store_new_image(importer *im, const char *sha, img_format fmt, const uint8_t *data, size_t len,
                           const char *key, const char *source, const char *label, int64_t *image_id)
{
    stage *st = im->st;
    if (!im->store && store_open(&im->store, st->cat, st->work, "raw", st->shard_tag, im->shard_size) != 0)
        return -1;
    char *meta = meta_json(im, key, source, label);
    if (!meta)
        return lvd_fail("out of memory");
    int rc = store_add_image(im->store, sha, img_format_name(fmt), img_format_ext(fmt), data, len, meta,
                             st->run_id, image_id);
    /* Two members, each a 512-byte header and data padded to 512 bytes. */
    im->batch_bytes += 1024 + (len + 511) / 512 * 512 + (strlen(meta) + 511) / 512 * 512;
    free(meta);
    if (rc != 0)
        return lvd_fail_ctx("storing %s", source);
    return 0;
}

static int put_member(importer *im, int exists, const char *key, int64_t image_id, const char *label,
                      const char *source)
{
    catalog *cat = im->st->cat;
    sqlite3_stmt *q = exists ? catalog_stmt(cat, "UPDATE members SET image_id = ?3, label = ?4, source = ?5, "
                                                 "run_id = ?6 WHERE collection_id = ?1 AND key = ?2")
                             : catalog_stmt(cat, "INSERT INTO members(collection_id, key, image_id, label, source, "
                                                 "run_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
    if (!q)
        return -1;
    sqlite3_bind_int64(q, 1, im->collection_id);
    sqlite3_bind_text(q, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 3, image_id);
    if (label)
        sqlite3_bind_text(q, 4, label, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, source, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 6, im->st->run_id);
    return catalog_step_done(cat, q);
}

/* One input's bytes under `key`. Non-images are skipped; everything else ends as a member of the collection.
 * Returns -1 only for failures of the catalog or the store, which stop the run. */
static int import_bytes(importer *im, const char *key, const uint8_t *data, size_t len, const char *label,
                        const char *source)
{
    img_format fmt = img_sniff(data, len);
    if (fmt == IMG_FMT_UNKNOWN) {
        im->n.not_image++;
        if (im->n.not_image <= NOT_IMAGE_REPORTED)
            log_warn("%s: not an image (unrecognised format), skipped", source);
        return 0;
    }
    char sha[SHA256_HEX], have[SHA256_HEX];
    sha256_hex(data, len, sha);
    if (batch_enter(im) != 0)
        return -1;
    int exists = member_sha(im, key, have);
    if (exists < 0)
        return -1;
    if (exists && strcmp(have, sha) == 0) {
        im->n.present++;
    } else {
        int64_t image_id = 0;
        int stored = store_find_image(im->st->cat, sha, &image_id);
        if (stored < 0)
            return -1;
        if (stored) {
            im->n.present++;
        } else {
            if (store_new_image(im, sha, fmt, data, len, key, source, label, &image_id) != 0)
                return -1;
            im->n.new_images++;
        }
        if (put_member(im, exists, key, image_id, label, source) != 0)
            return -1;
        if (exists) {
            im->n.changed++;
            log_debug("%s: member '%s' changed from %s to %s", source, key, have, sha);
        } else {
            im->n.new_members++;
        }
    }
    /* A batch may span only a few shards (store.h syncs a bounded set), so large bytes end it early. */
    if (++im->in_batch >= im->batch || im->batch_bytes >= BATCH_SHARDS * im->shard_size)
        return batch_commit(im);
    return 0;
}

/* Reads a whole regular file (symlinks are refused) into *data (malloc'ed; caller frees). */
static int read_file(const char *path, uint8_t **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return lvd_fail_errno("%s", path);
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        lvd_fail_errno("%s: stat", path);
        close(fd);
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return lvd_fail("%s: not a regular file", path);
    }
    uint64_t size = sb.st_size > 0 ? (uint64_t)sb.st_size : 0;
    if (size > FILE_MAX_BYTES) {
        close(fd);
        return lvd_fail("%s: %" PRIu64 " bytes, larger than the %" PRIu64 " bytes an import takes", path, size,
                        FILE_MAX_BYTES);
    }
    uint8_t *buf = malloc(size ? (size_t)size : 1);
    if (!buf) {
        close(fd);
        return lvd_fail("%s: out of memory for %" PRIu64 " bytes", path, size);
    }
    /* A file that shrinks while read is taken as it was read; one that grows is taken at its stat size. */
    size_t got = 0;
    while (got < size) {
        ssize_t k = read(fd, buf + got, (size_t)size - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            lvd_fail_errno("%s: reading", path);
            free(buf);
            close(fd);
            return -1;
        }
        if (k == 0)
            break;
        got += (size_t)k;
    }
    close(fd);
    *data = buf;
    *len = got;
    return 0;
}

/* One file on disk: read errors are counted and logged (with `where`, e.g. "list.csv:12: ", prefixed). */
static int import_file(importer *im, const char *path, const char *key, const char *label, const char *where)
{
    im->n.files++;
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = 0;
    if (read_file(path, &data, &len) != 0) {
        log_error("%s%s", where, lvd_errmsg());
        im->n.errors++;
    } else {
        rc = import_bytes(im, key, data, len, label, path);
    }
    free(data);
    note_progress(im);
    return rc;
}

/* ---- --dir ---- */

static int by_name(const struct dirent **a, const struct dirent **b) { return strcmp((*a)->d_name, (*b)->d_name); }

static int not_dots(const struct dirent *d) { return strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, ".."); }

/* Imports the tree under path->p (a directory), depth first in byte order of names. root_len: length of the
 * walked root in path, so keys are path->p + root_len + 1. label_dirs: label = parent directory name. */
static int walk_dir(importer *im, strbuf *path, size_t root_len, int label_dirs)
{
    struct dirent **ents = NULL;
    const char *dir = path->len ? path->p : "/";
    int n = scandir(dir, &ents, not_dots, by_name);
    if (n < 0) {
        lvd_fail_errno("%s: reading directory", dir);
        input_error(im, lvd_errmsg());
        return 0;
    }
    size_t base = path->len;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        sb_cut(path, base);
        if (sb_add(path, "/") != 0 || sb_add(path, ents[i]->d_name) != 0) {
            rc = -1;
            break;
        }
        struct stat sb;
        if (lstat(path->p, &sb) != 0) {
            lvd_fail_errno("%s", path->p);
            input_error(im, lvd_errmsg());
            continue;
        }
        if (S_ISDIR(sb.st_mode)) {
            rc = walk_dir(im, path, root_len, label_dirs);
        } else if (S_ISREG(sb.st_mode)) {
            const char *key = path->p + root_len + 1;
            /* The parent's name: the component before the file's, if the file is not in the root itself. */
            char *label = NULL;
            if (label_dirs && base > root_len) {
                const char *first = path->p + root_len + 1;
                const char *end = path->p + base;
                const char *start = end;
                while (start > first && start[-1] != '/')
                    start--;
                label = strndup(start, (size_t)(end - start));
                if (!label) {
                    rc = lvd_fail("out of memory");
                    break;
                }
            }
            rc = import_file(im, path->p, key, label, "");
            free(label);
        } else {
            log_debug("%s: not a regular file or directory, skipped", path->p);
        }
    }
    for (int i = 0; i < n; i++)
        free(ents[i]);
    free(ents);
    sb_cut(path, base);
    return rc;
}

/* ---- --list ---- */

typedef struct list_input {
    urllist *l;
    const char *name; /* as given, for messages */
    char *dir;        /* absolute directory of the list: base of relative paths */
} list_input;

static void list_close(list_input *r)
{
    urllist_close(r->l);
    free(r->dir);
    memset(r, 0, sizeof *r);
}

/* Opens the list (a csv/tsv header must name path_col) and resolves its directory. label_required:
 * --label-col was given explicitly, so a header without that column is an error too. */
static int list_open(list_input *r, const char *path, const char *path_col, const char *label_col,
                     int label_required)
{
    memset(r, 0, sizeof *r);
    r->name = path;
    urllist_opts uo = {.url_col = path_col, .label_col = label_col, .label_required = label_required,
                       .values_are_paths = 1};
    if (urllist_open(&r->l, path, &uo) != 0) {
        /* urllist's messages start with the path; the copy keeps lvd_fail from reading its own buffer. */
        char msg[LVD_ERR_MAX];
        snprintf(msg, sizeof msg, "%s", lvd_errmsg());
        return lvd_fail("--list %s", msg);
    }
    /* Relative paths in the list are relative to the list's own directory. */
    char *copy = strdup(path);
    if (!copy) {
        list_close(r);
        return lvd_fail("out of memory");
    }
    char *slash = strrchr(copy, '/');
    const char *dir = slash ? (slash == copy ? "/" : (*slash = '\0', copy)) : ".";
    r->dir = realpath(dir, NULL);
    free(copy);
    if (!r->dir) {
        lvd_fail_errno("--list %s: resolving its directory", path);
        list_close(r);
        return -1;
    }
    return 0;
}

static int import_list(importer *im, list_input *r, int label_dirs)
{
    strbuf full = {0};
    char where[64 + PATH_MAX];
    urllist_entry e;
    int rc = 0, k;
    while ((k = urllist_next(r->l, &e)) != URLLIST_EOF) {
        if (k == URLLIST_ERROR) {
            rc = -1;
            break;
        }
        snprintf(where, sizeof where, "%s:%" PRIu64 ": ", r->name, e.line);
        if (k == URLLIST_BAD) {
            im->n.files++;
            log_error("%s%s", where, e.error);
            im->n.errors++;
            continue;
        }
        const char *path = e.url, *label = e.label;
        sb_cut(&full, 0);
        if ((path[0] != '/' && (sb_add(&full, r->dir) != 0 || sb_add(&full, "/") != 0)) || sb_add(&full, path) != 0) {
            rc = -1;
            break;
        }
        char *dir_label = NULL;
        if (!label && label_dirs) {
            /* The parent directory's name of the path as resolved. */
            const char *end = strrchr(full.p, '/');
            const char *start = end;
            while (start > full.p && start[-1] != '/')
                start--;
            if (end > start && !(dir_label = strndup(start, (size_t)(end - start)))) {
                rc = lvd_fail("out of memory");
                break;
            }
            label = dir_label;
        }
        rc = import_file(im, full.p, path, label, where);
        free(dir_label);
        if (rc != 0)
            break;
    }
    free(full.p);
    return rc;
}

/* ---- --webdataset ---- */

typedef struct sample {
    int open;                          /* a sample is being gathered */
    char key[SHARD_NAME_MAX + 1];
    char member[SHARD_NAME_MAX + 1];   /* the image member's name */
    uint8_t *data;                     /* its bytes, or NULL if no image member yet */
    size_t len;
    char *label;
    int label_from_cls;                /* a .cls label wins over a .json one */
} sample;

static void sample_reset(sample *s)
{
    free(s->data);
    free(s->label);
    memset(s, 0, sizeof *s);
}

static int is_image_ext(const char *ext)
{
    static const char *const exts[] = {"jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", NULL};
    for (int i = 0; exts[i]; i++)
        if (strcasecmp(ext, exts[i]) == 0)
            return 1;
    return 0;
}

/* Reads the current member (at most cap bytes, else NULL with a message) into a NUL-terminated buffer. */
static char *read_member(shard_reader *rd, const shard_member *m, uint64_t cap, const char *tar)
{
    if (m->size > cap) {
        lvd_fail("%s: member %s is %" PRIu64 " bytes, more than the %" PRIu64 " allowed", tar, m->name, m->size, cap);
        return NULL;
    }
    char *buf = malloc((size_t)m->size + 1);
    if (!buf) {
        lvd_fail("%s: out of memory for member %s", tar, m->name);
        return NULL;
    }
    if (shard_reader_read(rd, m, buf) != 0) {
        free(buf);
        return NULL;
    }
    buf[m->size] = '\0';
    return buf;
}

/* Label text of a .cls member: the text without surrounding white space; NULL if empty. */
static char *cls_label(char *text)
{
    char *s = text, *e = text + strlen(text);
    while (*s && isspace((unsigned char)*s))
        s++;
    while (e > s && isspace((unsigned char)e[-1]))
        e--;
    return e > s ? strndup(s, (size_t)(e - s)) : NULL;
}

/* "label" or "cls" of a .json member (a string, or a number written as text); NULL if neither. */
static char *json_label(const char *text, size_t len)
{
    cJSON *o = cJSON_ParseWithLength(text, len);
    if (!o)
        return NULL;
    char *out = NULL;
    const char *names[] = {"label", "cls"};
    for (int i = 0; i < 2 && !out; i++) {
        const cJSON *v = cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, names[i]) : NULL;
        if (cJSON_IsString(v) && v->valuestring[0]) {
            out = strdup(v->valuestring);
        } else if (cJSON_IsNumber(v)) {
            char num[64];
            double d = v->valuedouble;
            if (d >= -1e15 && d <= 1e15 && d == (double)(long long)d)
                snprintf(num, sizeof num, "%lld", (long long)d);
            else
                snprintf(num, sizeof num, "%.17g", d);
            out = strdup(num);
        }
    }
    cJSON_Delete(o);
    return out;
}

/* Imports the gathered sample (if it has an image member) and starts afresh. */
static int sample_flush(importer *im, sample *s, const char *tar, strbuf *source)
{
    int rc = 0;
    if (s->open && s->data) {
        im->n.files++;
        sb_cut(source, 0);
        if (sb_add(source, tar) != 0 || sb_add(source, ":") != 0 || sb_add(source, s->member) != 0)
            rc = -1;
        else
            rc = import_bytes(im, s->key, s->data, s->len, s->label, source->p);
        note_progress(im);
    } else if (s->open) {
        log_debug("%s: sample '%s' has no image member, skipped", tar, s->key);
    }
    sample_reset(s);
    return rc;
}

/* Gathers one member into the current sample; member-level problems are counted, not fatal. */
static void sample_add(importer *im, sample *s, shard_reader *rd, const shard_member *m, const char *ext,
                       const char *tar)
{
    if (is_image_ext(ext)) {
        if (s->data)
            return; /* first image member wins */
        if (m->size > FILE_MAX_BYTES) {
            lvd_fail("%s: member %s is %" PRIu64 " bytes, larger than the %" PRIu64 " bytes an import takes", tar,
                     m->name, m->size, FILE_MAX_BYTES);
            im->n.files++;
            input_error(im, lvd_errmsg());
            return;
        }
        uint8_t *buf = malloc(m->size ? (size_t)m->size : 1);
        if (!buf || shard_reader_read(rd, m, buf) != 0) {
            if (!buf)
                lvd_fail("%s: out of memory for member %s", tar, m->name);
            free(buf);
            im->n.files++;
            input_error(im, lvd_errmsg());
            return;
        }
        s->data = buf;
        s->len = (size_t)m->size;
        snprintf(s->member, sizeof s->member, "%s", m->name);
    } else if (strcasecmp(ext, "cls") == 0 || (strcasecmp(ext, "json") == 0 && !s->label_from_cls)) {
        int is_cls = strcasecmp(ext, "cls") == 0;
        char *text = read_member(rd, m, is_cls ? CLS_MAX_BYTES : JSON_MAX_BYTES, tar);
        if (!text) {
            log_warn("%s (label not read)", lvd_errmsg());
            return;
        }
        char *label = is_cls ? cls_label(text) : json_label(text, (size_t)m->size);
        free(text);
        if (label) {
            free(s->label);
            s->label = label;
            s->label_from_cls = is_cls;
        }
    }
}

/* A regular tar member whose name is too long for shard_member (shard.h): it is not read, and the tar goes on
 * as if it did not hold it. Its key is unknown, so the open sample stays open: a later member joins it only
 * by having the sample's own key, and the other members of the skipped one's sample keep their key, so they
 * form that sample (imported if it still has an image, without a label that only the skipped member had)
 * and never join another. */
static void skip_long_name(importer *im, const char *tar, const shard_member *m)
{
    im->n.long_name++;
    if (im->n.long_name <= LONG_NAME_REPORTED)
        log_warn("%s: member at offset %" PRIu64 " has a name of %zu bytes (at most %d are taken), skipped", tar,
                 m->offset, m->name_len, SHARD_NAME_MAX);
}

static int import_tar(importer *im, const char *tar)
{
    shard_reader *rd = NULL;
    if (shard_reader_open(&rd, tar) != 0) {
        input_error(im, lvd_errmsg());
        return 0;
    }
    sample s = {0};
    strbuf source = {0};
    shard_member m;
    int rc = 0, k;
    uint64_t members = 0;
    while ((k = shard_reader_next(rd, &m)) == 1) {
        if (m.type != '0')
            continue;
        members++;
        if (m.name_len > SHARD_NAME_MAX) {
            skip_long_name(im, tar, &m);
            continue;
        }
        /* webdataset: the key runs up to the first '.' of the last path component. */
        const char *slash = strrchr(m.name, '/');
        const char *dot = strchr(slash ? slash + 1 : m.name, '.');
        if (!dot || dot == m.name) {
            log_debug("%s: member %s has no key.extension name, skipped", tar, m.name);
            continue;
        }
        size_t klen = (size_t)(dot - m.name);
        if (!s.open || strlen(s.key) != klen || memcmp(s.key, m.name, klen) != 0) {
            if ((rc = sample_flush(im, &s, tar, &source)) != 0)
                break;
            s.open = 1;
            memcpy(s.key, m.name, klen);
            s.key[klen] = '\0';
        }
        sample_add(im, &s, rd, &m, dot + 1, tar);
    }
    if (rc == 0 && k < 0)
        input_error(im, lvd_errmsg()); /* a malformed header: what came before it is kept */
    if (rc == 0)
        rc = sample_flush(im, &s, tar, &source);
    if (rc == 0 && shard_reader_torn(rd)) {
        log_warn("%s: the tar ends inside a member (torn tail after byte %" PRIu64 "); imported the %" PRIu64
                 " complete members before it",
                 tar, shard_reader_valid_end(rd), members);
        im->n.errors++;
    }
    sample_reset(&s);
    free(source.p);
    shard_reader_close(rd);
    return rc;
}

/* ---- options and orchestration ---- */

typedef struct options {
    const char *work, *collection, *role;
    const char *dir, *list;
    const char **tars;
    int ntars;
    int label_dirs;
    const char *path_col, *label_col;
    int label_col_given;
    uint64_t shard_size;
    int64_t batch;
    int json;
    int wait; /* --wait: wait for a catalog another process writes */
} options;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: " PROG " --work W --collection NAME --role pool|seed|benchmark\n"
            "                  (--dir D | --list F | --webdataset T [T...]) [options]\n"
            "\n"
            "Brings local images into a collection of the work directory's catalog, content-addressed by the\n"
            "SHA-256 of their bytes and stored in WORK/shards/raw-NNNNNN.tar. Reruns import only what is new.\n"
            "\n"
            "  --work W               work directory (created if missing)\n"
            "  --collection NAME      collection to import into (created with --role if new); the name is a\n"
            "                         directory name: UTF-8, 1-200 bytes, no '/' or control characters,\n"
            "                         not . or .., no leading or trailing space\n"
            "  --role ROLE            pool, seed or benchmark\n"
            "  --dir D                every regular file under D (recursively, symlinks not followed);\n"
            "                         key = path relative to D\n"
            "  --list F               paths listed in F: .txt one per line, .csv/.tsv with a header;\n"
            "                         relative paths are relative to F's directory; key = path as written\n"
            "  --webdataset T [T...]  webdataset tars: key = sample key, label from <key>.cls or <key>.json\n"
            "  --label-from parent-dir  label = name of the file's parent directory (--dir, --list)\n"
            "  --path-col NAME        csv/tsv column with the path (default path)\n"
            "  --label-col NAME       csv/tsv column with the label (default label, optional)\n"
            "  --shard-size BYTES     raw shard size before rolling over (default 1G)\n"
            "  --batch N              files per committed transaction (default 256)\n"
            "  --wait                 if another process is writing the catalog, wait for it (default: fail\n"
            "                         at once, naming it)\n"
            "  --json                 print the summary counts as a JSON object on stdout\n"
            "  --quiet | --verbose    errors only | debug lines too\n"
            "  --config F.yaml        options from a YAML file (the command line wins)\n"
            "  -h, --help             this help\n"
            "  --version              version\n");
}

enum {
    OPT_WORK = 256, OPT_COLLECTION, OPT_ROLE, OPT_DIR, OPT_LIST, OPT_WEBDATASET, OPT_LABEL_FROM, OPT_PATH_COL,
    OPT_LABEL_COL, OPT_SHARD_SIZE, OPT_BATCH, OPT_JSON, OPT_QUIET, OPT_VERBOSE, OPT_VERSION, OPT_WAIT
};

/* Returns 0, or 1 for "done, exit 0" (help/version), or -1 (message set) for a usage error. */
static int parse_options(int argc, char **argv, options *o)
{
    static const struct option longs[] = {
        {"work", required_argument, NULL, OPT_WORK},
        {"collection", required_argument, NULL, OPT_COLLECTION},
        {"role", required_argument, NULL, OPT_ROLE},
        {"dir", required_argument, NULL, OPT_DIR},
        {"list", required_argument, NULL, OPT_LIST},
        {"webdataset", required_argument, NULL, OPT_WEBDATASET},
        {"label-from", required_argument, NULL, OPT_LABEL_FROM},
        {"path-col", required_argument, NULL, OPT_PATH_COL},
        {"label-col", required_argument, NULL, OPT_LABEL_COL},
        {"shard-size", required_argument, NULL, OPT_SHARD_SIZE},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"json", no_argument, NULL, OPT_JSON},
        {"quiet", no_argument, NULL, OPT_QUIET},
        {"verbose", no_argument, NULL, OPT_VERBOSE},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"wait", no_argument, NULL, OPT_WAIT},
        {NULL, 0, NULL, 0},
    };
    static const char *const roles[] = {"pool", "seed", "benchmark", NULL};
    static const char *const label_froms[] = {"parent-dir", NULL};
    memset(o, 0, sizeof *o);
    o->path_col = "path";
    o->label_col = "label";
    o->shard_size = (uint64_t)1 << 30;
    o->batch = 256;
    o->tars = calloc((size_t)argc + 1, sizeof *o->tars);
    if (!o->tars)
        return lvd_fail("out of memory");
    int c, idx;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":h", longs, NULL)) != -1) {
        switch (c) {
        case OPT_WORK: o->work = optarg; break;
        case OPT_WAIT: o->wait = 1; break;
        case OPT_COLLECTION: o->collection = optarg; break;
        case OPT_ROLE:
            if (opt_choice("--role", optarg, roles, &idx) != 0)
                return -1;
            o->role = roles[idx];
            break;
        case OPT_DIR: o->dir = optarg; break;
        case OPT_LIST: o->list = optarg; break;
        case OPT_WEBDATASET: o->tars[o->ntars++] = optarg; break;
        case OPT_LABEL_FROM:
            if (opt_choice("--label-from", optarg, label_froms, &idx) != 0)
                return -1;
            o->label_dirs = 1;
            break;
        case OPT_PATH_COL: o->path_col = optarg; break;
        case OPT_LABEL_COL:
            o->label_col = optarg;
            o->label_col_given = 1;
            break;
        case OPT_SHARD_SIZE:
            if (opt_bytes("--shard-size", optarg, &o->shard_size) != 0)
                return -1;
            if (o->shard_size < 4096)
                return lvd_fail("--shard-size: '%s' is too small (at least 4K)", optarg);
            break;
        case OPT_BATCH:
            if (opt_int("--batch", optarg, 1, 1000000, &o->batch) != 0)
                return -1;
            break;
        case OPT_JSON: o->json = 1; break;
        case OPT_QUIET: log_set_level(LOG_ERROR); break;
        case OPT_VERBOSE: log_set_level(LOG_DEBUG); break;
        case 'h': usage(stdout); return 1;
        case OPT_VERSION: printf(PROG " %s\n", LVD_VERSION); return 1;
        case ':': return lvd_fail("%s needs a value", argv[optind - 1]);
        default: return lvd_fail("unknown option '%s'", argv[optind - 1]);
        }
    }
    for (; optind < argc; optind++) {
        if (o->ntars == 0)
            return lvd_fail("unexpected argument '%s'", argv[optind]);
        o->tars[o->ntars++] = argv[optind]; /* --webdataset T1 T2 ...: the rest are more tars */
    }
    if (!o->work || !o->collection || !o->role)
        return lvd_fail("--work, --collection and --role are required");
    /* Checked here too, not only when catalog_collection creates it: a bad name is a usage error found
     * before the work directory is touched. */
    if (catalog_check_collection_name(o->collection) != 0)
        return lvd_fail_ctx("--collection");
    if ((o->dir != NULL) + (o->list != NULL) + (o->ntars > 0) != 1)
        return lvd_fail("give exactly one of --dir, --list and --webdataset");
    if (o->label_dirs && o->ntars > 0)
        return lvd_fail("--label-from parent-dir applies to --dir and --list, not --webdataset");
    return 0;
}

/* Inputs that do not exist are usage errors, found before anything is written. */
static int check_inputs(const options *o)
{
    struct stat sb;
    if (o->dir) {
        if (stat(o->dir, &sb) != 0)
            return lvd_fail_errno("--dir %s", o->dir);
        if (!S_ISDIR(sb.st_mode))
            return lvd_fail("--dir %s: not a directory", o->dir);
    }
    for (int i = 0; i < o->ntars; i++) {
        if (stat(o->tars[i], &sb) != 0)
            return lvd_fail_errno("--webdataset %s", o->tars[i]);
        if (!S_ISREG(sb.st_mode))
            return lvd_fail("--webdataset %s: not a regular file", o->tars[i]);
    }
    lvd_part p;
    if (part_resolve(NULL, &p) != 0)
        return -1;
    if (p.count > 1)
        return lvd_fail("lvd-import does not run partitioned, but %s assigns part %u/%u; run it as one process",
                        p.source, p.index, p.count);
    return 0;
}

/* The result-shaping options as JSON (malloc'ed) for the run record. */
static char *params_json(const options *o)
{
    cJSON *p = cJSON_CreateObject();
    if (!p)
        return NULL;
    cJSON_AddStringToObject(p, "collection", o->collection);
    cJSON_AddStringToObject(p, "role", o->role);
    if (o->dir)
        cJSON_AddStringToObject(p, "dir", o->dir);
    if (o->list) {
        cJSON_AddStringToObject(p, "list", o->list);
        cJSON_AddStringToObject(p, "path_col", o->path_col);
        cJSON_AddStringToObject(p, "label_col", o->label_col);
    }
    if (o->ntars) {
        cJSON *a = cJSON_AddArrayToObject(p, "webdataset");
        for (int i = 0; a && i < o->ntars; i++)
            cJSON_AddItemToArray(a, cJSON_CreateString(o->tars[i]));
    }
    cJSON_AddStringToObject(p, "label_from", o->label_dirs ? "parent-dir" : "none");
    char *text = cJSON_PrintUnformatted(p);
    cJSON_Delete(p);
    return text;
}

static char *summary_json(const counts *n)
{
    char *text = NULL;
    if (asprintf(&text,
                 "{\"files\":%" PRIu64 ",\"new_images\":%" PRIu64 ",\"already_present\":%" PRIu64
                 ",\"changed\":%" PRIu64 ",\"skipped_not_image\":%" PRIu64 ",\"skipped_long_name\":%" PRIu64
                 ",\"errors\":%" PRIu64 ",\"new_members\":%" PRIu64 "}",
                 n->files, n->new_images, n->present, n->changed, n->not_image, n->long_name, n->errors,
                 n->new_members) < 0)
        return NULL;
    return text;
}

/* Walks the chosen input; -1 only on a failure that stops the run. */
static int run_import(importer *im, const options *o, list_input *list)
{
    if (o->dir) {
        /* Sources are absolute, so they still name the file when read from another directory. */
        char *root = realpath(o->dir, NULL);
        if (!root)
            return lvd_fail_errno("--dir %s", o->dir);
        strbuf path = {0};
        /* The root "/" is walked as "" so that children read "/name", not "//name". */
        int rc = sb_add(&path, strcmp(root, "/") == 0 ? "" : root);
        free(root);
        if (rc == 0)
            rc = walk_dir(im, &path, path.len, o->label_dirs);
        free(path.p);
        return rc;
    }
    if (o->list)
        return import_list(im, list, o->label_dirs);
    for (int i = 0; i < o->ntars; i++)
        if (import_tar(im, o->tars[i]) != 0)
            return -1;
    return 0;
}

int main(int argc, char **argv)
{
    log_set_program(PROG);
    int ac = 0;
    char **av = NULL;
    if (config_expand_argv(argc, argv, &ac, &av) != 0) {
        log_error("%s", lvd_errmsg());
        return EXIT_USAGE;
    }
    options o;
    int rc = parse_options(ac, av, &o);
    if (rc == 0 && check_inputs(&o) != 0)
        rc = -1;
    list_input list = {0};
    if (rc == 0 && o.list && list_open(&list, o.list, o.path_col, o.label_col, o.label_col_given) != 0)
        rc = -1;
    if (rc != 0) {
        if (rc < 0) {
            log_error("%s", lvd_errmsg());
            fprintf(stderr, "Try '" PROG " --help'.\n");
        }
        free(o.tars);
        config_free_argv(ac, av);
        return rc < 0 ? EXIT_USAGE : 0;
    }

    int status = 1;
    stage st;
    char fp[65];
    char *params = params_json(&o);
    char *summary = NULL;
    if (!params) {
        log_error("out of memory");
        goto out;
    }
    stage_fingerprint(params, fp);
    if (stage_open(&st, "import", o.work, NULL, params, fp, o.wait ? STAGE_WAIT : 0) != 0) {
        log_error("%s", lvd_errmsg());
        goto out;
    }
    importer im = {.st = &st, .collection = o.collection, .shard_size = o.shard_size, .batch = o.batch};
    progress_init(&im.prog, "import", 0);
    rc = catalog_collection(st.cat, o.collection, o.role, &im.collection_id);
    if (rc == 0) {
        rc = run_import(&im, &o, &list);
        if (rc == 0)
            rc = batch_commit(&im);
        note_progress(&im);
        progress_finish(&im.prog);
    }
    summary = summary_json(&im.n);
    if (rc != 0) {
        log_error("%s", lvd_errmsg());
        catalog_rollback(st.cat);
        store_close(im.store);
        stage_close(&st, "failed", summary);
        goto out;
    }
    store_close(im.store);
    if (im.n.not_image > NOT_IMAGE_REPORTED)
        log_warn("%" PRIu64 " more files that are not images were skipped",
                 im.n.not_image - NOT_IMAGE_REPORTED);
    if (im.n.long_name > LONG_NAME_REPORTED)
        log_warn("%" PRIu64 " more tar members with names over %d bytes were skipped",
                 im.n.long_name - LONG_NAME_REPORTED, SHARD_NAME_MAX);
    /* The long-name count only concerns tars, so it is shown only when there is one. */
    char long_names[64] = "";
    if (im.n.long_name > 0)
        snprintf(long_names, sizeof long_names, ", %" PRIu64 " skipped (name too long)", im.n.long_name);
    log_info("import: %" PRIu64 " files, %" PRIu64 " new images, %" PRIu64 " already present, %" PRIu64
             " changed, %" PRIu64 " skipped (not an image), %" PRIu64 " errors%s",
             im.n.files, im.n.new_images, im.n.present, im.n.changed, im.n.not_image, im.n.errors, long_names);
    if (stage_close(&st, "done", summary) != 0) {
        log_error("%s", lvd_errmsg());
        goto out;
    }
    if (o.json)
        printf("%s\n", summary ? summary : "{}");
    status = 0;
out:
    free(summary);
    free(params);
    list_close(&list);
    free(o.tars);
    config_free_argv(ac, av);
    return status;
}
