/* build.c — lvd-manifest build: a work directory's curated corpus as one self-contained manifest file
 * (schemas/manifest-001.sql).
 *
 *   --from retrieve  (default) the union of the latest lvd-retrieve selections of one retrieval model: every
 *                    registry row of that model with status 'done' (LVD-142M: the retrieved images are the
 *                    curated set);
 *   --from dedup     every pool image one dedup model kept (the uncurated baseline of the paper's Table 2);
 *   --from balance   the current sample of lvd-balance for one model (the newest balance_samples row of its
 *                    trees), each image with weight = its copies in the sample (catalog-007.sql).
 *
 * The catalog is opened read-only (catalog.h: no lock, no migration) and read inside one read transaction,
 * so a stage writing meanwhile cannot make the manifest mix two states. The selection and its first
 * membership and URL go to TEMP tables of that read-only connection (SQLite keeps them outside the catalog
 * file). A selected image is a sample when it has a decode with status 'ok' and a working image; the others
 * are counted, warned about and recorded in info.counts, never dropped silently.
 *
 * The cost of a build is reading bytes: every used img shard is hashed over its committed bytes (1 MiB
 * reads), and every sample's working image is read back (pread on a cached descriptor) and hashed into
 * data_sha256, both on --threads threads (SQLite stays on the calling thread: batches of BATCH samples
 * are read from the catalog, hashed in parallel, then inserted in order). Samples are written in key order
 * (images.sha256), so two builds of one catalog write the same rows; only info.created_at differs.
 *
 * The file is written as "<out>.tmp-<pid>" beside --out inside one transaction, closed, fsynced, and then
 * linked to --out (no --force: link(2) fails if --out appeared meanwhile, so an existing manifest is never
 * replaced) or renamed over it (--force), and the directory is fsynced. On failure, SIGINT, SIGTERM or
 * SIGHUP the temporary file is removed; one left by a killed build (SIGKILL) is removed by the next build
 * of the same --out once its pid is gone.
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "catalog.h"
#include "cli.h"
#include "cmds.h"
#include "manifest_schema.h"
#include "mfile.h"
#include "opts.h"
#include "progress.h"
#include "sha256.h"

#define PROG "lvd-manifest build"
#define HASH_BLOCK (1u << 20)  /* bytes per read when hashing a shard */
#define FD_CACHE 128           /* shard descriptors kept open while reading samples (key order is random) */
#define THREADS_DEFAULT 2      /* threads reading and hashing (--threads) */
#define THREADS_MAX 64
#define BATCH 64               /* samples read, hashed and inserted per round (a few MB of images) */
#define WARN_KEYS 5            /* keys named in the warning about selected images without a working image */
#define SCHEMA_VERSION_TEXT "1"

static const char usage[] =
    "Usage: lvd-manifest build --work DIR --out M.db [options]\n"
    "Writes the curated corpus of a work directory as one self-contained SQLite manifest\n"
    "(schemas/manifest-001.sql): samples in key order with their working image's shard, offset, length and\n"
    "SHA-256, why each was chosen, and the provenance. Never modifies an existing manifest.\n\n"
    "  --work DIR              the work directory (its catalog is only read)\n"
    "  --out M.db              the manifest to write; it must not exist unless --force\n"
    "  --from SOURCE           retrieve (default): the union of the latest lvd-retrieve results;\n"
    "                          dedup: every pool image lvd-dedup kept; balance: lvd-balance's sample\n"
    "  --model NAME            the retrieval model (--from retrieve), dedup model (--from dedup) or\n"
    "                          balanced model (--from balance);\n"
    "                          default: the only model with results\n"
    "  --name NAME             info.name (default: the file name of --out without .db)\n"
    "  --absolute              shard paths absolute (default: relative to the folder of --out)\n"
    "  --force                 replace an existing --out (atomically: a rename)\n"
    "  --threads N             threads reading and hashing shards and working images (2)\n"
    "  --json                  print a summary as JSON on stdout\n"
    "  --quiet | --verbose  --version  --help\n";

enum { SRC_RETRIEVE, SRC_DEDUP, SRC_BALANCE };
static const char *const source_names[] = {"retrieve", "dedup", "balance", NULL};

enum { OPT_OUT = OPT_FIRST_STAGE_OPTION, OPT_FROM, OPT_MODEL, OPT_NAME, OPT_ABSOLUTE, OPT_THREADS };

typedef struct bshard {
    int64_t cat_id;  /* catalog shards.id */
    char *cat_path;  /* catalog shards.path (relative to the work directory) */
    char *file;      /* the file opened: work directory (real path) + cat_path */
    char *path;      /* as written to the manifest (relative or absolute) */
    int64_t committed;
    char sha[SHA256_HEX];
} bshard;

typedef struct build {
    const char *work, *out, *name, *model;
    int source, absolute, force, json;
    int threads;        /* --threads: reading and hashing threads (SQLite stays on the calling one) */
    char *cat_path;     /* WORK/catalog.db */
    char *work_real;    /* realpath of WORK */
    char *out_dir;      /* realpath of the folder of --out */
    char *tmp;          /* the temporary file */
    catalog *cat;
    sqlite3 *db;        /* the manifest being written */
    int64_t model_id;
    char *model_name;
    int64_t dedup_model_id; /* retrieve: the pool's dedup model (0: --no-dedup); dedup: = model_id; balance:
                               the tree's (0: a tree of the retrieval results) */
    int64_t balance_sample; /* balance: the balance_samples.id taken */
    bshard *shards;     /* sorted by manifest path; ids are index + 1 */
    size_t nshards;
    size_t *by_cat;     /* shard indices sorted by cat_id */
    int64_t selected, samples, sources, bytes;
    int64_t not_decoded, decode_failed, no_working_image;
    cJSON *row_counts;  /* {row: images} */
} build;

/* The temporary file's name for the signal handler (a fixed buffer: async-signal-safe to read). */
static char g_tmp[PATH_MAX + 64];

static void on_signal(int sig)
{
    if (g_tmp[0])
        unlink(g_tmp);
    signal(sig, SIG_DFL);
    raise(sig);
}

static int oom(void) { return lvd_fail("out of memory"); }

/* ---- catalog queries ---- */

static int step_fail(build *b, sqlite3_stmt *st) { return catalog_step_fail(b->cat, st); }

/* One integer from sql with ?1 = a (if the statement has a parameter); no row or NULL gives 0. */
static int q_int(build *b, const char *sql, int64_t a, int64_t *out)
{
    sqlite3_stmt *st = catalog_stmt(b->cat, sql);
    if (!st)
        return -1;
    if (sqlite3_bind_parameter_count(st) > 0)
        sqlite3_bind_int64(st, 1, a);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return step_fail(b, st);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return 0;
}

/* The model with results among the rows of sql (id, name), by --model or as the only one. `what` names the
 * results ("lvd-retrieve"), for the messages. */
static int pick_model(build *b, const char *sql, const char *what)
{
    sqlite3_stmt *st = catalog_stmt(b->cat, sql);
    if (!st)
        return -1;
    char names[1024] = "";
    size_t used = 0;
    int64_t n = 0, found = 0;
    char *found_name = NULL;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *nm = mfile_col_text(st, 1);
        if (used < sizeof names - 1) {
            int w = snprintf(names + used, sizeof names - used, "%s%s", n ? ", " : "", nm);
            used = w > 0 && (size_t)w < sizeof names - used ? used + (size_t)w : sizeof names - 1;
        }
        n++;
        if (b->model ? strcmp(nm, b->model) == 0 : n == 1) {
            found = sqlite3_column_int64(st, 0);
            free(found_name);
            if (!(found_name = strdup(nm))) {
                sqlite3_reset(st);
                return oom();
            }
        }
    }
    if (rc != SQLITE_DONE) {
        free(found_name);
        return step_fail(b, st);
    }
    sqlite3_reset(st);
    int err = 0;
    if (n == 0)
        err = lvd_fail("%s: no %s results for any model; run %s first", b->work, what, what);
    else if (b->model && !found)
        err = lvd_fail("%s: model '%s' has no %s results (models with results: %s)", b->work, b->model, what, names);
    else if (!b->model && n > 1)
        err = lvd_fail("%s: %" PRId64 " models have %s results (%s); choose one with --model", b->work, n, what,
                       names);
    if (err) {
        free(found_name);
        return -1;
    }
    b->model_id = found;
    b->model_name = found_name;
    return 0;
}

/* {name, sha256, preprocess, dim} of a model; preprocess parsed when it is JSON. */
static cJSON *model_json(build *b, int64_t id)
{
    sqlite3_stmt *st = catalog_stmt(b->cat, "SELECT name, sha256, preprocess, dim FROM models WHERE id = ?1");
    if (!st)
        return NULL;
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        if (rc == SQLITE_DONE)
            lvd_fail("%s: model id %" PRId64 " is missing from the models table", b->cat_path, id);
        else
            step_fail(b, st);
        sqlite3_reset(st);
        return NULL;
    }
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "name", mfile_col_text(st, 0));
        cJSON_AddStringToObject(o, "sha256", mfile_col_text(st, 1));
        cJSON *pp = cJSON_Parse(mfile_col_text(st, 2));
        if (pp)
            cJSON_AddItemToObject(o, "preprocess", pp);
        else
            cJSON_AddStringToObject(o, "preprocess", mfile_col_text(st, 2));
        cJSON_AddNumberToObject(o, "dim", (double)sqlite3_column_int64(st, 3));
    } else {
        oom();
    }
    sqlite3_reset(st);
    return o;
}

/* ---- the selection ---- */

/* Fills TEMP table sel(image_id) with the selected images of the source. */
static int select_images(build *b)
{
    /* smap: images.id -> samples.id, filled as samples are written (a TEMP table, not memory: it scales with
     * the corpus), so that sources are read in sample order by a join. */
    /* weight: the copies of an image in a balance sample, else 1 (schemas/manifest-001.sql). */
    if (catalog_exec(b->cat, "CREATE TEMP TABLE sel (image_id INTEGER PRIMARY KEY, weight INTEGER NOT NULL DEFAULT 1);"
                             "CREATE TEMP TABLE smap (image_id INTEGER PRIMARY KEY, sample_id INTEGER NOT NULL)") != 0)
        return -1;
    const char *sql;
    if (b->source == SRC_RETRIEVE)
        sql = "INSERT INTO temp.sel(image_id) SELECT DISTINCT s.image_id FROM retrieve_selections s"
              " JOIN retrieve_rows r ON r.id = s.row_id WHERE r.model_id = ?1 AND r.status = 'done'";
    else if (b->source == SRC_BALANCE)
        sql = "INSERT INTO temp.sel(image_id, weight) SELECT image_id, copies FROM balance_sample"
              " WHERE sample_id = ?1";
    else
        sql = "INSERT INTO temp.sel(image_id) SELECT image_id FROM dedup_decisions"
              " WHERE model_id = ?1 AND decision = 'kept'";
    sqlite3_stmt *st = catalog_stmt(b->cat, sql);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, b->source == SRC_BALANCE ? b->balance_sample : b->model_id);
    if (catalog_step_done(b->cat, st) != 0)
        return -1;
    if (q_int(b, "SELECT count(*) FROM temp.sel", 0, &b->selected) != 0)
        return -1;
    /* The first membership (by collection name, then key) and the first URL (by URL text) of each selected
     * image. urls has no index on image_id: one pass over urls, probing sel, instead of a scan per image. */
    return catalog_exec(
        b->cat,
        "CREATE TEMP TABLE fmem (image_id INTEGER PRIMARY KEY, collection TEXT, key TEXT, label TEXT);"
        "INSERT INTO temp.fmem SELECT image_id, collection, key, label FROM ("
        " SELECT m.image_id, c.name AS collection, m.key, m.label,"
        "  row_number() OVER (PARTITION BY m.image_id ORDER BY c.name, m.key) AS rn"
        " FROM temp.sel s JOIN members m ON m.image_id = s.image_id JOIN collections c ON c.id = m.collection_id)"
        " WHERE rn = 1;"
        "CREATE TEMP TABLE furl (image_id INTEGER PRIMARY KEY, url TEXT, caption TEXT);"
        "INSERT INTO temp.furl SELECT image_id, url, caption FROM ("
        " SELECT u.image_id, u.url, u.caption, row_number() OVER (PARTITION BY u.image_id ORDER BY u.url) AS rn"
        " FROM urls u JOIN temp.sel s ON s.image_id = u.image_id)"
        " WHERE rn = 1;");
}

/* ---- shards ---- */

static int cmp_by_cat(const void *x, const void *y, void *ctx)
{
    const bshard *s = ctx;
    int64_t a = s[*(const size_t *)x].cat_id, c = s[*(const size_t *)y].cat_id;
    return a < c ? -1 : a > c;
}

static int cmp_by_path(const void *x, const void *y)
{
    return strcmp(((const bshard *)x)->path, ((const bshard *)y)->path);
}

/* Streams the first `committed` bytes of the open shard into its SHA-256. */
static int hash_shard(build *b, bshard *s, int fd)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0)
        return lvd_fail_errno("%s: cannot stat shard", s->file);
    if (sb.st_size < s->committed)
        return lvd_fail("%s: shard is %" PRId64 " bytes, shorter than its %" PRId64 " committed bytes in %s",
                        s->file, (int64_t)sb.st_size, s->committed, b->cat_path);
    sha256_ctx *h = sha256_new();
    uint8_t *blk = malloc(HASH_BLOCK);
    if (!h || !blk) {
        free(blk);
        if (h) {
            uint8_t d[SHA256_BYTES];
            sha256_final(h, d);
        }
        return oom();
    }
    int64_t off = 0;
    while (off < s->committed) {
        size_t want = (size_t)(s->committed - off < HASH_BLOCK ? s->committed - off : HASH_BLOCK);
        ssize_t r = pread(fd, blk, want, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (r == 0)
                errno = EIO;
            lvd_fail_errno("%s: cannot read shard at offset %" PRId64, s->file, off);
            uint8_t d[SHA256_BYTES];
            sha256_final(h, d);
            free(blk);
            return -1;
        }
        sha256_update(h, blk, (size_t)r);
        off += r;
    }
    uint8_t d[SHA256_BYTES];
    sha256_final(h, d);
    sha256_to_hex(d, s->sha);
    free(blk);
    return 0;
}

/* One shard-hashing thread: shards first, first + threads, ... */
typedef struct shasher {
    build *b;
    size_t first;
    int failed;
    char err[LVD_ERR_MAX]; /* its message (messages are per thread, err.h) */
} shasher;

static void *shasher_run(void *arg)
{
    shasher *h = arg;
    for (size_t i = h->first; i < h->b->nshards && !h->failed; i += (size_t)h->b->threads) {
        bshard *s = &h->b->shards[i];
        int fd = open(s->file, O_RDONLY | O_CLOEXEC);
        int r = fd < 0 ? lvd_fail_errno("%s: cannot open shard", s->file) : hash_shard(h->b, s, fd);
        if (fd >= 0)
            close(fd);
        if (r != 0) {
            h->failed = 1;
            snprintf(h->err, sizeof h->err, "%s", lvd_errmsg());
        } else {
            log_debug("shard %s: %" PRId64 " bytes, sha256 %s", s->path, s->committed, s->sha);
        }
    }
    return NULL;
}

/* The img shards the samples use, hashed, in path order. */
static int load_shards(build *b)
{
    sqlite3_stmt *st = catalog_stmt(
        b->cat, "SELECT DISTINCT sh.id, sh.path, sh.kind, sh.committed FROM temp.sel s"
                " JOIN decodes d ON d.image_id = s.image_id JOIN shards sh ON sh.id = d.shard_id"
                " WHERE d.status = 'ok' ORDER BY sh.path");
    if (!st)
        return -1;
    size_t cap = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (strcmp(mfile_col_text(st, 2), "img") != 0) {
            lvd_fail("%s: shard %s holds working images but is of kind '%s', not 'img'", b->cat_path,
                     mfile_col_text(st, 1), mfile_col_text(st, 2));
            sqlite3_reset(st);
            return -1;
        }
        if (b->nshards == cap) {
            cap = cap ? 2 * cap : 16;
            bshard *n = realloc(b->shards, cap * sizeof *n);
            if (!n) {
                sqlite3_reset(st);
                return oom();
            }
            b->shards = n;
        }
        bshard *s = &b->shards[b->nshards];
        memset(s, 0, sizeof *s);
        s->cat_id = sqlite3_column_int64(st, 0);
        s->committed = sqlite3_column_int64(st, 3);
        b->nshards++;
        if (!(s->cat_path = strdup(mfile_col_text(st, 1))) ||
            asprintf(&s->file, "%s/%s", b->work_real, s->cat_path) < 0) {
            s->file = NULL;
            sqlite3_reset(st);
            return oom();
        }
    }
    if (rc != SQLITE_DONE)
        return step_fail(b, st);
    sqlite3_reset(st);
    if (b->nshards && !(b->by_cat = malloc(b->nshards * sizeof *b->by_cat)))
        return oom();
    for (size_t i = 0; i < b->nshards; i++) {
        bshard *s = &b->shards[i];
        char real[PATH_MAX];
        if (!realpath(s->file, real))
            return lvd_fail_errno("%s: cannot open shard (catalog %s)", s->file, b->cat_path);
        s->path = b->absolute ? strdup(real) : mfile_relpath(b->out_dir, real);
        if (!s->path)
            return oom();
    }
    /* The hashes: --threads threads take every --threads-th shard. */
    shasher hs[THREADS_MAX];
    pthread_t th[THREADS_MAX];
    int started[THREADS_MAX] = {0};
    for (int t = 0; t < b->threads; t++)
        hs[t] = (shasher){.b = b, .first = (size_t)t};
    for (int t = 1; t < b->threads && b->nshards > (size_t)t; t++)
        started[t] = pthread_create(&th[t], NULL, shasher_run, &hs[t]) == 0;
    shasher_run(&hs[0]);
    for (int t = 1; t < b->threads; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else if (b->nshards > (size_t)t)
            shasher_run(&hs[t]);
    }
    for (int t = 0; t < b->threads; t++)
        if (hs[t].failed)
            return lvd_fail("%s", hs[t].err);
    /* Ids in the order of the paths as written (the catalog's order, unless a shard is a symlink elsewhere). */
    qsort(b->shards, b->nshards, sizeof *b->shards, cmp_by_path);
    for (size_t i = 0; i < b->nshards; i++)
        b->by_cat[i] = i;
    qsort_r(b->by_cat, b->nshards, sizeof *b->by_cat, cmp_by_cat, b->shards);
    return 0;
}

/* The index of the shard with catalog id `id` (it is one of them: load_shards took every one decodes use). */
static bshard *shard_by_cat(build *b, int64_t id)
{
    size_t lo = 0, hi = b->nshards;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int64_t v = b->shards[b->by_cat[mid]].cat_id;
        if (v == id)
            return &b->shards[b->by_cat[mid]];
        if (v < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- writing ---- */

static int db_fail(build *b, const char *what)
{
    return lvd_fail("%s: %s: %s", b->tmp, what, sqlite3_errmsg(b->db));
}

static int db_exec(build *b, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(b->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        lvd_fail("%s: %s", b->tmp, msg ? msg : sqlite3_errmsg(b->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static int db_prepare(build *b, const char *sql, sqlite3_stmt **st)
{
    return sqlite3_prepare_v2(b->db, sql, -1, st, NULL) == SQLITE_OK ? 0 : db_fail(b, "cannot prepare");
}

static int db_done(build *b, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : db_fail(b, what);
}

static int write_shards(build *b)
{
    sqlite3_stmt *ins = NULL;
    if (db_prepare(b, "INSERT INTO shards(id, path, bytes, sha256) VALUES (?1, ?2, ?3, ?4)", &ins) != 0)
        return -1;
    for (size_t i = 0; i < b->nshards; i++) {
        sqlite3_bind_int64(ins, 1, (int64_t)i + 1);
        sqlite3_bind_text(ins, 2, b->shards[i].path, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 3, b->shards[i].committed);
        sqlite3_bind_text(ins, 4, b->shards[i].sha, -1, SQLITE_STATIC);
        if (db_done(b, ins, "cannot insert a shard") != 0) {
            sqlite3_finalize(ins);
            return -1;
        }
    }
    sqlite3_finalize(ins);
    return 0;
}

/* ---- reading and hashing the working images: --threads threads per batch ---- */

/* One selected image that is a sample: where its bytes are, and what its row gets. */
typedef struct job {
    int64_t image_id, off, size, w, h, ow, oh, obytes;
    int64_t weight; /* samples.weight */
    bshard *shard;
    char key[SHA256_HEX], hex[SHA256_HEX];
    char *text[7]; /* format, orig_format, collection, member_key, url, caption, label; NULL = SQL NULL */
} job;

/* One hashing thread's state: its own descriptor cache and buffer, so threads share nothing but the jobs. */
typedef struct reader {
    build *b;
    job *jobs;
    size_t njobs, first; /* it takes jobs first, first + threads, ... */
    int *fd;             /* per shard, -1 when closed */
    int open;
    size_t clock;        /* next victim when its share of FD_CACHE descriptors is open */
    uint8_t *buf;
    size_t cap;
    int failed;
    char err[LVD_ERR_MAX];
} reader;

static int reader_fd(reader *r, bshard *s)
{
    size_t i = (size_t)(s - r->b->shards);
    if (r->fd[i] >= 0)
        return r->fd[i];
    while (r->open >= (FD_CACHE / r->b->threads > 0 ? FD_CACHE / r->b->threads : 1)) {
        size_t v = r->clock;
        r->clock = (r->clock + 1) % r->b->nshards;
        if (r->fd[v] >= 0) {
            close(r->fd[v]);
            r->fd[v] = -1;
            r->open--;
        }
    }
    if ((r->fd[i] = open(s->file, O_RDONLY | O_CLOEXEC)) < 0)
        return lvd_fail_errno("%s: cannot open shard", s->file);
    r->open++;
    return r->fd[i];
}

/* Reads one sample's working image and hashes it into j->hex. */
static int hash_job(reader *r, job *j)
{
    bshard *s = j->shard;
    if (j->off < 0 || j->size < 0 || j->off + j->size > s->committed)
        return lvd_fail("%s: working image of %s at [%" PRId64 ", %" PRId64 ") lies outside the %" PRId64
                        " committed bytes of %s", r->b->cat_path, j->key, j->off, j->off + j->size, s->committed,
                        s->file);
    if ((size_t)j->size > r->cap) {
        uint8_t *n = realloc(r->buf, (size_t)j->size);
        if (!n)
            return oom();
        r->buf = n;
        r->cap = (size_t)j->size;
    }
    int fd = reader_fd(r, s);
    if (fd < 0)
        return -1;
    size_t got = 0, size = (size_t)j->size;
    while (got < size) {
        ssize_t n = pread(fd, r->buf + got, size - got, j->off + (int64_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return lvd_fail_errno("%s: cannot read the working image of %s at offset %" PRId64, s->file, j->key,
                                  j->off);
        }
        got += (size_t)n;
    }
    sha256_hex(r->buf, size, j->hex);
    return 0;
}

static void *reader_run(void *arg)
{
    reader *r = arg;
    for (size_t i = r->first; i < r->njobs && !r->failed; i += (size_t)r->b->threads)
        if (hash_job(r, &r->jobs[i]) != 0) {
            r->failed = 1;
            snprintf(r->err, sizeof r->err, "%s", lvd_errmsg()); /* messages are per thread (err.h) */
        }
    return NULL;
}

/* Hashes jobs[0..n) on --threads threads (the calling one included). */
static int hash_batch(reader *rd, job *jobs, size_t n)
{
    int nt = rd[0].b->threads;
    pthread_t th[THREADS_MAX];
    int started[THREADS_MAX] = {0};
    for (int t = 0; t < nt; t++) {
        rd[t].jobs = jobs;
        rd[t].njobs = n;
        rd[t].first = (size_t)t;
        rd[t].failed = 0;
    }
    for (int t = 1; t < nt && n > (size_t)t; t++)
        started[t] = pthread_create(&th[t], NULL, reader_run, &rd[t]) == 0;
    reader_run(&rd[0]);
    for (int t = 1; t < nt; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else if (n > (size_t)t)
            reader_run(&rd[t]); /* no thread: this one does its share */
    }
    for (int t = 0; t < nt; t++)
        if (rd[t].failed)
            return lvd_fail("%s", rd[t].err);
    return 0;
}

static void job_clear(job *j)
{
    for (int i = 0; i < 7; i++) {
        free(j->text[i]);
        j->text[i] = NULL;
    }
}

/* Fills j from the row of q (see write_samples' query); 0 or -1 (out of memory). */
static int job_fill(job *j, sqlite3_stmt *q, bshard *s)
{
    static const int cols[7] = {8, 2, 13, 14, 16, 17, 15};
    j->image_id = sqlite3_column_int64(q, 0);
    snprintf(j->key, sizeof j->key, "%s", mfile_col_text(q, 1));
    j->obytes = sqlite3_column_int64(q, 3);
    j->shard = s;
    j->off = sqlite3_column_int64(q, 6);
    j->size = sqlite3_column_int64(q, 7);
    j->w = sqlite3_column_int64(q, 9);
    j->h = sqlite3_column_int64(q, 10);
    j->ow = sqlite3_column_int64(q, 11);
    j->oh = sqlite3_column_int64(q, 12);
    j->weight = sqlite3_column_int64(q, 18);
    for (int i = 0; i < 7; i++) {
        j->text[i] = NULL;
        if (sqlite3_column_type(q, cols[i]) != SQLITE_NULL && !(j->text[i] = strdup(mfile_col_text(q, cols[i])))) {
            job_clear(j);
            return oom();
        }
    }
    return 0;
}

static void bind_opt(sqlite3_stmt *st, int i, const char *v)
{
    if (v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* Inserts the hashed jobs of a batch, in order, as the next samples. */
static int insert_batch(build *b, sqlite3_stmt *ins, job *jobs, size_t n)
{
    sqlite3_stmt *map = catalog_stmt(b->cat, "INSERT INTO temp.smap(image_id, sample_id) VALUES (?1, ?2)");
    if (!map)
        return -1;
    for (size_t k = 0; k < n; k++) {
        job *j = &jobs[k];
        b->samples++;
        b->bytes += j->size;
        sqlite3_bind_int64(map, 1, j->image_id);
        sqlite3_bind_int64(map, 2, b->samples);
        if (catalog_step_done(b->cat, map) != 0)
            return -1;
        sqlite3_bind_int64(ins, 1, b->samples);
        sqlite3_bind_text(ins, 2, j->key, -1, SQLITE_STATIC);
        sqlite3_bind_text(ins, 3, j->hex, -1, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 4, (int64_t)(j->shard - b->shards) + 1);
        sqlite3_bind_int64(ins, 5, j->off);
        sqlite3_bind_int64(ins, 6, j->size);
        bind_opt(ins, 7, j->text[0]);
        sqlite3_bind_int64(ins, 8, j->w);
        sqlite3_bind_int64(ins, 9, j->h);
        sqlite3_bind_int64(ins, 10, j->ow);
        sqlite3_bind_int64(ins, 11, j->oh);
        bind_opt(ins, 12, j->text[1]);
        sqlite3_bind_int64(ins, 13, j->obytes);
        for (int t = 2; t < 7; t++)
            bind_opt(ins, 12 + t, j->text[t]);
        sqlite3_bind_int64(ins, 19, j->weight);
        if (db_done(b, ins, "cannot insert a sample") != 0)
            return -1;
    }
    return 0;
}

/* The samples in key order; selected images without a working image are counted. Rows are read in batches
 * of BATCH, whose images are read and hashed on --threads threads, then inserted in order. */
static int write_samples(build *b)
{
    sqlite3_stmt *q = catalog_stmt(
        b->cat,
        "SELECT s.image_id, i.sha256, i.format, i.bytes, d.status, d.shard_id, d.offset, d.size, d.out_format,"
        " d.out_width, d.out_height, d.width, d.height, fm.collection, fm.key, fm.label, fu.url, fu.caption,"
        " s.weight FROM temp.sel s JOIN images i ON i.id = s.image_id LEFT JOIN decodes d ON d.image_id = s.image_id"
        " LEFT JOIN temp.fmem fm ON fm.image_id = s.image_id LEFT JOIN temp.furl fu ON fu.image_id = s.image_id"
        " ORDER BY i.sha256");
    if (!q)
        return -1;
    sqlite3_stmt *ins = NULL;
    if (db_prepare(b,
                   "INSERT INTO samples(id, key, image_sha256, data_sha256, shard_id, offset, length, format, width,"
                   " height, orig_width, orig_height, orig_format, orig_bytes, collection, member_key, url, caption,"
                   " label, weight) VALUES (?1, ?2, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,"
                   " ?16, ?17, ?18, ?19)",
                   &ins) != 0)
        return -1;
    job *jobs = calloc(BATCH, sizeof *jobs);
    reader rd[THREADS_MAX];
    memset(rd, 0, sizeof rd);
    int err = !jobs ? oom() : 0;
    for (int t = 0; !err && t < b->threads; t++) {
        rd[t].b = b;
        if (!(rd[t].fd = malloc((b->nshards ? b->nshards : 1) * sizeof *rd[t].fd)))
            err = oom();
        for (size_t i = 0; !err && i < b->nshards; i++)
            rd[t].fd[i] = -1;
    }
    size_t n = 0;
    char skipped[WARN_KEYS][SHA256_HEX];
    int nskipped = 0, rc = SQLITE_DONE, done = 0;
    progress pr;
    progress_init(&pr, "manifest", (uint64_t)b->selected);
    while (!err && !done) {
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            const char *key = mfile_col_text(q, 1);
            int nodec = sqlite3_column_type(q, 4) == SQLITE_NULL;
            int failed = !nodec && strcmp(mfile_col_text(q, 4), "ok") != 0;
            int noimg = !nodec && !failed && sqlite3_column_type(q, 5) == SQLITE_NULL;
            if (nodec || failed || noimg) {
                b->not_decoded += nodec;
                b->decode_failed += failed;
                b->no_working_image += noimg;
                if (nskipped < WARN_KEYS)
                    snprintf(skipped[nskipped++], SHA256_HEX, "%s", key);
                continue;
            }
            bshard *s = shard_by_cat(b, sqlite3_column_int64(q, 5));
            if (!s) { /* load_shards read the same snapshot: cannot happen, but never write a dangling shard id */
                err = lvd_fail("%s: shard id %" PRId64 " of %s vanished during the build", b->cat_path,
                               (int64_t)sqlite3_column_int64(q, 5), key);
                break;
            }
            if (job_fill(&jobs[n], q, s) != 0) {
                err = -1;
                break;
            }
            if (++n < BATCH)
                continue;
        } else {
            done = 1;
            if (rc != SQLITE_DONE) {
                err = step_fail(b, q);
                break;
            }
        }
        if (n && (hash_batch(rd, jobs, n) != 0 || insert_batch(b, ins, jobs, n) != 0))
            err = -1;
        for (size_t k = 0; k < n; k++)
            job_clear(&jobs[k]);
        n = 0;
        progress_update(&pr, (uint64_t)(b->samples + b->not_decoded + b->decode_failed + b->no_working_image),
                        (uint64_t)(b->not_decoded + b->decode_failed + b->no_working_image));
    }
    if (!err)
        progress_finish(&pr);
    for (size_t k = 0; k < n; k++)
        job_clear(&jobs[k]);
    for (int t = 0; t < b->threads; t++) {
        for (size_t i = 0; rd[t].fd && i < b->nshards; i++)
            if (rd[t].fd[i] >= 0)
                close(rd[t].fd[i]);
        free(rd[t].fd);
        free(rd[t].buf);
    }
    free(jobs);
    sqlite3_reset(q);
    sqlite3_finalize(ins);
    if (err)
        return -1;
    int64_t skip = b->not_decoded + b->decode_failed + b->no_working_image;
    if (skip) {
        char keys[WARN_KEYS * 70] = "";
        size_t used = 0;
        for (int i = 0; i < nskipped; i++)
            used += (size_t)snprintf(keys + used, sizeof keys - used, "%s%s", i ? ", " : "", skipped[i]);
        log_warn("%" PRId64 " of %" PRId64 " selected images have no working image and are not samples (%" PRId64
                 " not decoded yet: run lvd-decode; %" PRId64 " failed to decode; %" PRId64
                 " decoded without one): %s%s",
                 skip, b->selected, b->not_decoded, b->decode_failed, b->no_working_image, keys,
                 skip > nskipped ? ", ..." : "");
    }
    return 0;
}

/* Why each sample was chosen (schemas/manifest-001.sql, sample_sources). */
static int write_sources(build *b)
{
    sqlite3_stmt *ins = NULL;
    if (db_prepare(b,
                   "INSERT INTO sample_sources(sample_id, row, method, seed_key, rank, similarity, cluster, collisions)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                   &ins) != 0)
        return -1;
    /* balance: the cluster is the image's leaf (level-1) cluster of the tree. */
    const char *sql = b->source == SRC_RETRIEVE
                          ? "SELECT s.sample_id, r.name, r.method, si.sha256, x.rank, x.sim, x.cluster, x.collisions"
                            " FROM retrieve_selections x JOIN retrieve_rows r ON r.id = x.row_id"
                            " JOIN temp.smap s ON s.image_id = x.image_id LEFT JOIN images si ON si.id = x.seed_image_id"
                            " WHERE r.model_id = ?1 AND r.status = 'done' ORDER BY s.sample_id, r.name"
                          : b->source == SRC_BALANCE
                          ? "SELECT s.sample_id, 'balance', 'balance', NULL, NULL, NULL, x.cluster, 0 FROM temp.smap s"
                            " JOIN balance_sample x ON x.image_id = s.image_id AND x.sample_id = ?1 ORDER BY s.sample_id"
                          : "SELECT sample_id, 'dedup', 'kept', NULL, NULL, NULL, NULL, 0 FROM temp.smap"
                            " WHERE ?1 = ?1 ORDER BY sample_id";
    sqlite3_stmt *q = catalog_stmt(b->cat, sql);
    if (!q) {
        sqlite3_finalize(ins);
        return -1;
    }
    sqlite3_bind_int64(q, 1, b->source == SRC_BALANCE ? b->balance_sample : b->model_id);
    int rc, err = 0;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        for (int i = 0; i < 8; i++) {
            switch (sqlite3_column_type(q, i)) {
            case SQLITE_NULL: sqlite3_bind_null(ins, i + 1); break;
            case SQLITE_INTEGER: sqlite3_bind_int64(ins, i + 1, sqlite3_column_int64(q, i)); break;
            case SQLITE_FLOAT: sqlite3_bind_double(ins, i + 1, sqlite3_column_double(q, i)); break;
            default: sqlite3_bind_text(ins, i + 1, mfile_col_text(q, i), -1, SQLITE_TRANSIENT);
            }
        }
        if (db_done(b, ins, "cannot insert a sample source") != 0) {
            err = -1;
            break;
        }
        b->sources++;
    }
    if (!err && rc != SQLITE_DONE)
        err = step_fail(b, q);
    sqlite3_reset(q);
    sqlite3_finalize(ins);
    return err;
}

/* ---- info ---- */

static int put_info(build *b, const char *key, const char *value)
{
    sqlite3_stmt *st = NULL;
    if (db_prepare(b, "INSERT INTO info(key, value) VALUES (?1, ?2)", &st) != 0)
        return -1;
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    int r = db_done(b, st, "cannot insert an info row");
    sqlite3_finalize(st);
    return r;
}

/* put_info of a JSON value (consumed). */
static int put_json(build *b, const char *key, cJSON *v)
{
    char *text = v ? cJSON_PrintUnformatted(v) : NULL;
    cJSON_Delete(v);
    if (!text)
        return oom();
    int r = put_info(b, key, text);
    cJSON_free(text);
    return r;
}

static cJSON *catalog_json(build *b)
{
    int64_t runs = 0, images = 0;
    if (q_int(b, "SELECT count(*) FROM runs", 0, &runs) != 0 || q_int(b, "SELECT count(*) FROM images", 0, &images))
        return NULL;
    char real[PATH_MAX];
    const char *path = realpath(b->cat_path, real) ? real : b->cat_path;
    sqlite3_stmt *st = catalog_stmt(b->cat, "SELECT max(coalesce(finished_at, started_at)) FROM runs");
    if (!st)
        return NULL;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        step_fail(b, st);
        return NULL;
    }
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "path", path);
        cJSON_AddNumberToObject(o, "schema_version", catalog_schema_version(b->cat));
        cJSON_AddNumberToObject(o, "runs", (double)runs);
        if (sqlite3_column_type(st, 0) == SQLITE_NULL)
            cJSON_AddNullToObject(o, "last_run_at");
        else
            cJSON_AddStringToObject(o, "last_run_at", mfile_col_text(st, 0));
        cJSON_AddNumberToObject(o, "images", (double)images);
    } else {
        oom();
    }
    sqlite3_reset(st);
    return o;
}

/* info.dedup: the model and its last dedup_runs row's parameters; NULL with no dedup model (not an error when
 * *none is set). */
static cJSON *dedup_json(build *b, int64_t model_id)
{
    cJSON *o = cJSON_CreateObject(), *m = o ? model_json(b, model_id) : NULL;
    if (!m) {
        cJSON_Delete(o);
        if (!o)
            oom();
        return NULL;
    }
    cJSON_AddItemToObject(o, "model", m);
    sqlite3_stmt *st = catalog_stmt(
        b->cat, "SELECT id, run_id, fingerprint, k, threshold, benchmark_threshold, benchmark_rule, keep_rule,"
                " phash_distance, index_desc, created_at FROM dedup_runs WHERE model_id = ?1 ORDER BY id DESC LIMIT 1");
    if (!st) {
        cJSON_Delete(o);
        return NULL;
    }
    sqlite3_bind_int64(st, 1, model_id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        cJSON *p = cJSON_AddObjectToObject(o, "params");
        if (p) {
            cJSON_AddNumberToObject(p, "dedup_run", (double)sqlite3_column_int64(st, 0));
            cJSON_AddNumberToObject(p, "run", (double)sqlite3_column_int64(st, 1));
            cJSON_AddStringToObject(p, "fingerprint", mfile_col_text(st, 2));
            cJSON_AddNumberToObject(p, "k", (double)sqlite3_column_int64(st, 3));
            cJSON_AddNumberToObject(p, "threshold", sqlite3_column_double(st, 4));
            cJSON_AddNumberToObject(p, "benchmark_threshold", sqlite3_column_double(st, 5));
            cJSON_AddStringToObject(p, "benchmark_rule", mfile_col_text(st, 6));
            cJSON_AddStringToObject(p, "keep_rule", mfile_col_text(st, 7));
            if (sqlite3_column_type(st, 8) == SQLITE_NULL)
                cJSON_AddNullToObject(p, "phash_distance");
            else
                cJSON_AddNumberToObject(p, "phash_distance", (double)sqlite3_column_int64(st, 8));
            cJSON_AddStringToObject(p, "index", mfile_col_text(st, 9));
            cJSON_AddStringToObject(p, "created_at", mfile_col_text(st, 10));
        }
    } else if (rc != SQLITE_DONE) {
        step_fail(b, st);
        cJSON_Delete(o);
        return NULL;
    }
    sqlite3_reset(st);
    return o;
}

/* info.balance: the sample taken and the tree it was drawn from (catalog-007.sql). */
static int balance_info(build *b)
{
    sqlite3_stmt *st = catalog_stmt(
        b->cat, "SELECT s.id, s.tree_id, s.target, s.multiplier, s.sampling, s.seed, s.points, s.total,"
                " s.distinct_images, s.created_at, t.source, t.n_levels, t.params, t.config_path, t.built_points"
                " FROM balance_samples s JOIN balance_trees t ON t.id = s.tree_id WHERE s.id = ?1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, b->balance_sample);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        if (rc == SQLITE_DONE)
            lvd_fail("%s: balance sample %" PRId64 " vanished", b->cat_path, b->balance_sample);
        else
            step_fail(b, st);
        sqlite3_reset(st);
        return -1;
    }
    cJSON *o = cJSON_CreateObject(), *m = o ? model_json(b, b->model_id) : NULL;
    if (!m) {
        cJSON_Delete(o);
        sqlite3_reset(st);
        return o ? -1 : oom();
    }
    cJSON_AddItemToObject(o, "model", m);
    static const char *const ints[] = {"sample", "tree", "target", "multiplier", NULL, "seed", "points", "total",
                                       "distinct"};
    for (int i = 0; i < 9; i++)
        if (ints[i])
            cJSON_AddNumberToObject(o, ints[i], (double)sqlite3_column_int64(st, i));
    cJSON_AddStringToObject(o, "sampling", mfile_col_text(st, 4));
    cJSON_AddStringToObject(o, "sampled_at", mfile_col_text(st, 9));
    cJSON_AddStringToObject(o, "from", mfile_col_text(st, 10));
    cJSON_AddNumberToObject(o, "n_levels", (double)sqlite3_column_int64(st, 11));
    cJSON *tp = cJSON_Parse(mfile_col_text(st, 12));
    cJSON_AddItemToObject(o, "tree_params", tp ? tp : cJSON_CreateString(mfile_col_text(st, 12)));
    cJSON_AddStringToObject(o, "config_path", mfile_col_text(st, 13));
    cJSON_AddNumberToObject(o, "built_points", (double)sqlite3_column_int64(st, 14));
    sqlite3_reset(st);
    return put_json(b, "balance", o);
}

/* info.registry and info.retrieval from the model's latest retrieve_runs row and its registry rows. */
static int retrieval_info(build *b)
{
    sqlite3_stmt *st = catalog_stmt(
        b->cat, "SELECT id, registry, registry_path, registry_sha256, scale, pool_size, pool_gen, params, created_at"
                " FROM retrieve_runs WHERE model_id = ?1 ORDER BY id DESC LIMIT 1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, b->model_id);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        if (rc == SQLITE_DONE)
            lvd_fail("%s: model '%s' has retrieval rows but no retrieve_runs row", b->cat_path, b->model_name);
        else
            step_fail(b, st);
        sqlite3_reset(st);
        return -1;
    }
    cJSON *o = cJSON_CreateObject(), *m = o ? model_json(b, b->model_id) : NULL;
    if (!m) {
        cJSON_Delete(o);
        sqlite3_reset(st);
        return o ? -1 : oom();
    }
    cJSON_AddItemToObject(o, "model", m);
    cJSON *run = cJSON_Parse(mfile_col_text(st, 7));
    cJSON_AddItemToObject(o, "run", run ? run : cJSON_CreateString(mfile_col_text(st, 7)));
    cJSON_AddNumberToObject(o, "retrieve_run", (double)sqlite3_column_int64(st, 0));
    cJSON_AddStringToObject(o, "registry_path", mfile_col_text(st, 2));
    cJSON_AddStringToObject(o, "registry_sha256", mfile_col_text(st, 3));
    cJSON_AddStringToObject(o, "scale", mfile_col_text(st, 4));
    cJSON_AddNumberToObject(o, "pool_size", (double)sqlite3_column_int64(st, 5));
    cJSON_AddNumberToObject(o, "pool_gen", (double)sqlite3_column_int64(st, 6));
    cJSON_AddStringToObject(o, "run_at", mfile_col_text(st, 8));
    char *registry = strdup(mfile_col_text(st, 1));
    sqlite3_reset(st);
    if (!registry) {
        cJSON_Delete(o);
        return oom();
    }
    /* Every registry row of the model, done or not: which rows the union took and which it did not. */
    cJSON *rows = cJSON_AddArrayToObject(o, "rows");
    sqlite3_stmt *r = catalog_stmt(b->cat, "SELECT name, method, collection, status, reason, final FROM retrieve_rows"
                                           " WHERE model_id = ?1 ORDER BY name");
    int err = !rows || !r;
    if (!err) {
        sqlite3_bind_int64(r, 1, b->model_id);
        while ((rc = sqlite3_step(r)) == SQLITE_ROW) {
            cJSON *x = cJSON_CreateObject();
            if (!x || !cJSON_AddItemToArray(rows, x)) {
                cJSON_Delete(x);
                err = oom();
                break;
            }
            cJSON_AddStringToObject(x, "name", mfile_col_text(r, 0));
            cJSON_AddStringToObject(x, "method", mfile_col_text(r, 1));
            cJSON_AddStringToObject(x, "collection", mfile_col_text(r, 2));
            cJSON_AddStringToObject(x, "status", mfile_col_text(r, 3));
            if (sqlite3_column_type(r, 4) != SQLITE_NULL)
                cJSON_AddStringToObject(x, "reason", mfile_col_text(r, 4));
            cJSON_AddNumberToObject(x, "final", (double)sqlite3_column_int64(r, 5));
            if (strcmp(mfile_col_text(r, 3), "pending") == 0)
                log_warn("registry row '%s' of model '%s' is pending (a partitioned lvd-retrieve before --merge): "
                         "its selections are not in the manifest", mfile_col_text(r, 0), b->model_name);
        }
        if (!err && rc != SQLITE_DONE)
            err = step_fail(b, r);
        sqlite3_reset(r);
    }
    if (err || put_info(b, "registry", registry) != 0 || put_json(b, "retrieval", o) != 0) {
        if (err)
            cJSON_Delete(o);
        free(registry);
        return -1;
    }
    free(registry);
    return 0;
}

/* b->row_counts: {row: images} of the manifest's sample_sources, by row name. */
static int row_counts(build *b)
{
    sqlite3_stmt *st = NULL;
    if (db_prepare(b, "SELECT row, count(*) FROM sample_sources GROUP BY row ORDER BY row", &st) != 0)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if (!cJSON_AddNumberToObject(b->row_counts, mfile_col_text(st, 0), (double)sqlite3_column_int64(st, 1))) {
            sqlite3_finalize(st);
            return oom();
        }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : db_fail(b, "cannot count sources");
}

static int write_info(build *b)
{
    char now[32];
    catalog_now(now);
    if (put_info(b, "schema_version", SCHEMA_VERSION_TEXT) != 0 || put_info(b, "lvd_version", LVD_VERSION) != 0 ||
        put_info(b, "created_at", now) != 0 || put_info(b, "name", b->name) != 0 ||
        put_info(b, "source", source_names[b->source]) != 0)
        return -1;
    cJSON *c = catalog_json(b);
    if (!c || put_json(b, "catalog", c) != 0)
        return -1;
    if (b->source == SRC_RETRIEVE && retrieval_info(b) != 0)
        return -1;
    if (b->source == SRC_BALANCE && balance_info(b) != 0)
        return -1;
    if (b->dedup_model_id) {
        cJSON *d = dedup_json(b, b->dedup_model_id);
        if (!d || put_json(b, "dedup", d) != 0)
            return -1;
    }
    cJSON *n = cJSON_CreateObject();
    if (!n)
        return oom();
    cJSON_AddNumberToObject(n, "samples", (double)b->samples);
    cJSON_AddNumberToObject(n, "sources", (double)b->sources);
    if (row_counts(b) != 0) {
        cJSON_Delete(n);
        return -1;
    }
    cJSON_AddItemReferenceToObject(n, "rows", b->row_counts);
    cJSON_AddNumberToObject(n, "bytes", (double)b->bytes);
    cJSON_AddNumberToObject(n, "shards", (double)b->nshards);
    cJSON_AddNumberToObject(n, "selected", (double)b->selected);
    cJSON *w = cJSON_AddObjectToObject(n, "without_working_image");
    if (w) {
        cJSON_AddNumberToObject(w, "total", (double)(b->not_decoded + b->decode_failed + b->no_working_image));
        cJSON_AddNumberToObject(w, "not_decoded", (double)b->not_decoded);
        cJSON_AddNumberToObject(w, "decode_failed", (double)b->decode_failed);
        cJSON_AddNumberToObject(w, "no_working_image", (double)b->no_working_image);
    }
    return put_json(b, "counts", n);
}

/* ---- the temporary file and the final rename ---- */

/* Removes "<out base>.tmp-<pid>" files of builds that are no longer running (killed with SIGKILL). */
static void remove_stale_tmp(build *b)
{
    const char *slash = strrchr(b->out, '/');
    const char *base = slash ? slash + 1 : b->out;
    size_t bl = strlen(base);
    DIR *d = opendir(b->out_dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, base, bl) != 0 || strncmp(e->d_name + bl, ".tmp-", 5) != 0)
            continue;
        const char *p = e->d_name + bl + 5;
        char *end = NULL;
        long pid = strtol(p, &end, 10);
        if (end == p || *end || pid <= 0 || pid == (long)getpid())
            continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* alive (or not ours to judge) */
        char path[PATH_MAX + 300];
        snprintf(path, sizeof path, "%s/%s", b->out_dir, e->d_name);
        if (unlink(path) == 0)
            log_info("removed %s, left by a build that did not finish (pid %ld)", path, pid);
    }
    closedir(d);
}

static int fsync_path(const char *path, int dir)
{
    int fd = open(path, (dir ? O_DIRECTORY : 0) | O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lvd_fail_errno("%s: cannot open to fsync", path);
    int r = fsync(fd);
    close(fd);
    return r == 0 ? 0 : lvd_fail_errno("%s: fsync failed", path);
}

/* Makes the closed temporary file --out. */
static int publish(build *b)
{
    if (fsync_path(b->tmp, 0) != 0)
        return -1;
    if (b->force) {
        if (rename(b->tmp, b->out) != 0)
            return lvd_fail_errno("cannot rename %s to %s", b->tmp, b->out);
    } else {
        /* link(2) never replaces: an --out that appeared since the check stays as it was. */
        if (link(b->tmp, b->out) != 0) {
            if (errno == EEXIST)
                return lvd_fail("%s: already exists (a manifest is never modified; --force replaces it)", b->out);
            if (rename(b->tmp, b->out) != 0) /* a file system without hard links: rename after a fresh check */
                return lvd_fail_errno("cannot rename %s to %s", b->tmp, b->out);
        } else {
            unlink(b->tmp);
        }
    }
    g_tmp[0] = '\0';
    return fsync_path(b->out_dir, 1);
}

/* ---- orchestration ---- */

static int check_paths(build *b)
{
    struct stat sb;
    if (stat(b->work, &sb) != 0)
        return lvd_fail_errno("%s: cannot open work directory", b->work);
    if (!S_ISDIR(sb.st_mode))
        return lvd_fail("%s: not a directory (--work names a work directory)", b->work);
    if (asprintf(&b->cat_path, "%s/catalog.db", b->work) < 0) {
        b->cat_path = NULL;
        return oom();
    }
    if (stat(b->cat_path, &sb) != 0)
        return lvd_fail("%s: no catalog here (%s); is --work the right directory?", b->cat_path, strerror(errno));
    char real[PATH_MAX];
    if (!realpath(b->work, real) || !(b->work_real = strdup(real)))
        return lvd_fail_errno("%s: cannot resolve the work directory", b->work);
    char *dir = strdup(b->out);
    if (!dir)
        return oom();
    char *slash = strrchr(dir, '/');
    const char *d = slash ? (slash == dir ? "/" : (*slash = '\0', dir)) : ".";
    if (!realpath(d, real)) {
        lvd_fail_errno("%s: cannot write the manifest there: folder %s", b->out, d);
        free(dir);
        return -1;
    }
    free(dir);
    if (!(b->out_dir = strdup(real)))
        return oom();
    if (stat(b->out, &sb) == 0) {
        if (S_ISDIR(sb.st_mode))
            return lvd_fail("%s: is a directory; --out names the manifest file to write", b->out);
        if (!b->force)
            return lvd_fail("%s: already exists (a manifest is never modified; --force replaces it)", b->out);
    }
    return 0;
}

/* The model and its results, or the error of a source without any. */
static int choose_source(build *b)
{
    if (b->source == SRC_BALANCE) {
        int64_t n = 0;
        if (q_int(b, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'balance_samples'", 0, &n) != 0)
            return -1;
        if (n == 0) /* a catalog no lvd of schema 7 has opened for writing yet */
            return lvd_fail("no lvd-balance results in %s; run lvd-balance first", b->work);
        if (pick_model(b,
                       "SELECT m.id, m.name FROM models m WHERE EXISTS (SELECT 1 FROM balance_samples s JOIN"
                       " balance_trees t ON t.id = s.tree_id WHERE t.model_id = m.id) ORDER BY m.name",
                       "lvd-balance") != 0)
            return -1;
        /* The model's current sample: the newest of its trees' (each (model, source) keeps one). */
        if (q_int(b, "SELECT s.id FROM balance_samples s JOIN balance_trees t ON t.id = s.tree_id WHERE"
                     " t.model_id = ?1 ORDER BY s.id DESC LIMIT 1", b->model_id, &b->balance_sample) != 0)
            return -1;
        return q_int(b, "SELECT coalesce(t.dedup_model_id, 0) FROM balance_samples s JOIN balance_trees t ON"
                        " t.id = s.tree_id WHERE s.id = ?1", b->balance_sample, &b->dedup_model_id);
    }
    if (b->source == SRC_DEDUP) {
        if (pick_model(b,
                       "SELECT m.id, m.name FROM models m WHERE EXISTS"
                       " (SELECT 1 FROM dedup_decisions d WHERE d.model_id = m.id) ORDER BY m.name",
                       "lvd-dedup") != 0)
            return -1;
        b->dedup_model_id = b->model_id;
        return 0;
    }
    if (pick_model(b,
                   "SELECT m.id, m.name FROM models m WHERE EXISTS (SELECT 1 FROM retrieve_rows r"
                   " WHERE r.model_id = m.id AND r.status = 'done') ORDER BY m.name",
                   "lvd-retrieve") != 0)
        return -1;
    return q_int(b, "SELECT coalesce(dedup_model_id, 0) FROM retrieve_state WHERE model_id = ?1", b->model_id,
                 &b->dedup_model_id);
}

static int write_manifest(build *b)
{
    if (asprintf(&b->tmp, "%s.tmp-%ld", b->out, (long)getpid()) < 0) {
        b->tmp = NULL;
        return oom();
    }
    snprintf(g_tmp, sizeof g_tmp, "%s", b->tmp);
    unlink(b->tmp); /* a file of an earlier process that had our pid */
    if (sqlite3_open_v2(b->tmp, &b->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK)
        return lvd_fail("%s: cannot create: %s", b->tmp, b->db ? sqlite3_errmsg(b->db) : "out of memory");
    /* No journal: a failed build deletes the file; durability comes from the fsync before the rename. */
    if (db_exec(b, "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA foreign_keys=ON;") != 0 ||
        db_exec(b, manifest_schema[0]) != 0 || db_exec(b, "BEGIN") != 0)
        return -1;
    if (load_shards(b) != 0 || write_shards(b) != 0 || write_samples(b) != 0 || write_sources(b) != 0 || write_info(b) != 0)
        return -1;
    if (db_exec(b, "COMMIT") != 0)
        return -1;
    if (sqlite3_close(b->db) != SQLITE_OK)
        return lvd_fail("%s: cannot close: %s", b->tmp, sqlite3_errmsg(b->db));
    b->db = NULL;
    return publish(b);
}

static void build_free(build *b)
{
    if (b->db)
        sqlite3_close(b->db);
    if (g_tmp[0]) {
        unlink(g_tmp);
        g_tmp[0] = '\0';
    }
    catalog_close(b->cat);
    for (size_t i = 0; i < b->nshards; i++) {
        free(b->shards[i].cat_path);
        free(b->shards[i].file);
        free(b->shards[i].path);
    }
    free(b->shards);
    free(b->by_cat);
    free(b->cat_path);
    free(b->work_real);
    free(b->out_dir);
    free(b->tmp);
    free(b->model_name);
    cJSON_Delete(b->row_counts);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int manifest_cmd_build(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_OPTIONS,
        {"out", required_argument, NULL, OPT_OUT},
        {"from", required_argument, NULL, OPT_FROM},
        {"model", required_argument, NULL, OPT_MODEL},
        {"name", required_argument, NULL, OPT_NAME},
        {"absolute", no_argument, NULL, OPT_ABSOLUTE},
        {"force", no_argument, NULL, OPT_FORCE},
        {"threads", required_argument, NULL, OPT_THREADS},
        {NULL, 0, NULL, 0},
    };
    build b = {.source = SRC_RETRIEVE, .threads = THREADS_DEFAULT};
    int64_t iv;
    int opt;
    optind = 1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        if (cli_common(opt, "lvd-manifest", usage, &b.work, &b.json))
            continue;
        switch (opt) {
        case OPT_OUT: b.out = optarg; break;
        case OPT_FROM:
            if (opt_choice("--from", optarg, source_names, &b.source) != 0)
                cli_usage_error(PROG, lvd_errmsg());
            break;
        case OPT_MODEL: b.model = optarg; break;
        case OPT_NAME: b.name = optarg; break;
        case OPT_ABSOLUTE: b.absolute = 1; break;
        case OPT_FORCE: b.force = 1; break;
        case OPT_THREADS:
            if (opt_int("--threads", optarg, 1, THREADS_MAX, &iv) != 0)
                cli_usage_error(PROG, lvd_errmsg());
            b.threads = (int)iv;
            break;
        case ':': cli_usage_errorf(PROG, "option %.100s needs a value", argv[optind - 1]); break;
        default: cli_usage_errorf(PROG, "unknown option %.100s", argv[optind - 1]);
        }
    }
    if (!b.work || !b.work[0])
        cli_usage_error(PROG, "--work DIR is required");
    if (!b.out || !b.out[0])
        cli_usage_error(PROG, "--out M.db is required");
    if (optind < argc)
        cli_usage_errorf(PROG, "unexpected argument '%.100s'", argv[optind]);
    if (b.name && !b.name[0])
        cli_usage_error(PROG, "--name must not be empty");
    char *default_name = NULL;
    if (!b.name) {
        const char *slash = strrchr(b.out, '/');
        const char *base = slash ? slash + 1 : b.out;
        size_t l = strlen(base);
        if (l > 3 && strcmp(base + l - 3, ".db") == 0)
            l -= 3;
        if (!(default_name = strndup(base, l))) {
            log_error("out of memory");
            return EXIT_FAIL;
        }
        b.name = default_name;
    }
    b.row_counts = cJSON_CreateObject();
    struct sigaction sa = {.sa_handler = on_signal}, old[3];
    sigemptyset(&sa.sa_mask);
    const int sigs[3] = {SIGINT, SIGTERM, SIGHUP};
    for (int i = 0; i < 3; i++)
        sigaction(sigs[i], &sa, &old[i]);
    double t0 = now_s();
    int ok = b.row_counts && check_paths(&b) == 0 && catalog_open(&b.cat, b.cat_path, CATALOG_READONLY) == 0 &&
             /* one read transaction: every query below sees the same catalog */
             catalog_exec(b.cat, "BEGIN") == 0 && choose_source(&b) == 0;
    if (ok) {
        remove_stale_tmp(&b);
        ok = select_images(&b) == 0 && write_manifest(&b) == 0;
    }
    if (!ok)
        log_error("%s", b.row_counts ? lvd_errmsg() : "out of memory");
    double secs = now_s() - t0;
    if (ok) {
        log_info("wrote %s: %" PRId64 " samples (%" PRId64 " source rows) from %zu shard%s, %.1f MB of working "
                 "images read and hashed in %.2f s",
                 b.out, b.samples, b.sources, b.nshards, b.nshards == 1 ? "" : "s", (double)b.bytes / 1e6, secs);
        if (b.json) {
            cJSON *o = cJSON_CreateObject();
            if (o) {
                cJSON_AddStringToObject(o, "out", b.out);
                cJSON_AddStringToObject(o, "name", b.name);
                cJSON_AddStringToObject(o, "source", source_names[b.source]);
                cJSON_AddStringToObject(o, "model", b.model_name);
                cJSON_AddNumberToObject(o, "selected", (double)b.selected);
                cJSON_AddNumberToObject(o, "samples", (double)b.samples);
                cJSON_AddNumberToObject(o, "sources", (double)b.sources);
                cJSON_AddNumberToObject(o, "shards", (double)b.nshards);
                cJSON_AddNumberToObject(o, "bytes", (double)b.bytes);
                cJSON_AddNumberToObject(o, "without_working_image",
                                        (double)(b.not_decoded + b.decode_failed + b.no_working_image));
                cJSON_AddNumberToObject(o, "seconds", secs);
                char *text = cJSON_PrintUnformatted(o);
                if (text)
                    printf("%s\n", text);
                cJSON_free(text);
                cJSON_Delete(o);
            }
        }
    }
    build_free(&b);
    for (int i = 0; i < 3; i++)
        sigaction(sigs[i], &old[i], NULL);
    free(default_name);
    return ok ? EXIT_OK : EXIT_FAIL;
}
