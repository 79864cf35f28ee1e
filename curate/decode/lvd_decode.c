/* lvd-decode — validates, decodes, filters, hashes and resizes every stored image that has no decode for the
 * current parameters, writing working images to WORK/shards/img-NNNNNN.tar. Worker threads decode a chunk of
 * images in parallel; the main thread appends their outputs and commits one transaction per batch.
 *
 * curate/decode/ (decode and resize themselves are common/image.h and common/resize.h, shared with lvd-embed
 * and lvd-audit):
 *   lvd_decode.c options, worker threads, filters, working-image shards and batch commits
 *   phash.[ch]   the 64-bit DCT perceptual hash stored with each decode (lvd-dedup reads the stored value)
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "cli.h"
#include "image.h"
#include "opts.h"
#include "phash.h"
#include "progress.h"
#include "resize.h"
#include "sha256.h"
#include "shard.h"
#include "stage.h"
#include "store.h"

#define CHUNK 64 /* images decoded in parallel between two writes; bounds memory to CHUNK working images */

static const char usage[] =
    "Usage: lvd-decode --work DIR [options]\n"
    "       lvd-decode --work DIR --merge [--allow-partial]\n"
    "Validates and decodes every stored image without a decode for these parameters, filters it, computes its\n"
    "perceptual hash, and writes a resized working image to WORK/shards/img-NNNNNN.tar.\n\n"
    "  --collection NAME       only images of this collection (repeatable; default: all)\n"
    "  --resize-mode MODE      keep_ratio | keep_ratio_largest | center_crop | no (keep_ratio)\n"
    "  --size N                target side in pixels (512)\n"
    "  --resize-only-if-bigger never enlarge\n"
    "  --min-side N            images with a shorter side are too_small (64)\n"
    "  --max-aspect R          images with a longer/shorter side ratio above R are bad_aspect (4)\n"
    "  --max-pixels N          images declaring more pixels are refused before decoding (178956970)\n"
    "  --format jpeg|webp      working image encoding (jpeg)   --quality Q (95)\n"
    "  --threads N             decoding threads (number of CPUs)\n"
    "  --batch N               images per committed transaction (256)\n"
    "  --shard-size SIZE       roll over working shards at this size (1G)\n"
    "  --force                 decode everything again        --retry-failed  redo images that hit I/O errors\n"
    "  --part I/N              partitioned run, I in 0..N-1 (see lvd-crawl --help)\n"
    CLI_STAGE_HELP
    "  --config FILE.yaml  --json  --quiet | --verbose  --version  --help\n";

enum {
    OPT_COLLECTION = OPT_FIRST_STAGE_OPTION, OPT_RESIZE_MODE, OPT_SIZE, OPT_ONLY_BIGGER, OPT_MIN_SIDE,
    OPT_MAX_ASPECT, OPT_MAX_PIXELS, OPT_FORMAT, OPT_QUALITY, OPT_THREADS, OPT_BATCH, OPT_SHARD_SIZE
};

typedef struct params {
    resize_mode mode;
    uint32_t size;
    int only_if_bigger;
    uint32_t min_side;
    double max_aspect;
    uint64_t max_pixels;
    int webp;
    int quality;
} params;

/* One image's work and result. */
typedef struct job {
    int64_t image_id;
    char sha[SHA256_HEX];
    uint64_t bytes;
    char path[STAGE_PATH_MAX + 256]; /* raw shard */
    uint64_t offset;
    /* result */
    const char *status;
    char error[512];
    const char *format;
    uint32_t w, h, ow, oh;
    uint64_t phash;
    uint8_t *out;
    size_t out_len;
} job;

static void job_fail(job *j, const char *status, const char *fmt, ...) LVD_PRINTF(3, 4);
static void job_fail(job *j, const char *status, const char *fmt, ...)
{
    j->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(j->error, sizeof j->error, fmt, ap);
    va_end(ap);
}

static const char *img_status_text(img_status s)
{
    switch (s) {
    case IMG_OK: return "ok";
    case IMG_UNSUPPORTED: return "unsupported";
    case IMG_TOO_MANY_PIXELS: return "too_many_pixels";
    case IMG_TRUNCATED: return "truncated";
    case IMG_CORRUPT: return "corrupt";
    default: return "error";
    }
}

/* Decodes one image: read + verify, probe, filter, decode near the target size, pHash, resize, encode. */
static void decode_one(job *j, const params *p)
{
    uint8_t *data = malloc(j->bytes ? j->bytes : 1);
    img_rgb im = {0}, rs = {0}, outim = {0};
    if (!data) {
        job_fail(j, "error", "%s", "out of memory");
        return;
    }
    if (shard_read_at(j->path, j->offset, data, j->bytes) != 0) {
        job_fail(j, "error", "%s", lvd_errmsg());
        goto done;
    }
    char sha[SHA256_HEX];
    sha256_hex(data, j->bytes, sha);
    if (strcmp(sha, j->sha) != 0) {
        job_fail(j, "error", "bytes in %s do not match the recorded SHA-256", j->path);
        goto done;
    }
    img_format fmt;
    int orientation;
    uint32_t w, h;
    img_status s = img_probe(data, j->bytes, &fmt, &w, &h, &orientation);
    j->format = img_format_name(fmt);
    if (s == IMG_UNSUPPORTED) {
        job_fail(j, "unsupported", "%s images are not decoded", img_format_name(fmt));
        goto done;
    }
    if (s != IMG_OK) {
        job_fail(j, img_status_text(s), "%s", lvd_errmsg());
        goto done;
    }
    if (orientation >= 5) {
        uint32_t t = w;
        w = h;
        h = t;
    }
    j->w = w;
    j->h = h;
    if ((uint64_t)w * h > p->max_pixels) {
        job_fail(j, "too_many_pixels", "%ux%u = %" PRIu64 " pixels exceeds --max-pixels %" PRIu64, w, h,
                 (uint64_t)w * h, p->max_pixels);
        goto done;
    }
    uint32_t lo = w < h ? w : h, hi = w < h ? h : w;
    if (lo < p->min_side) {
        job_fail(j, "too_small", "shorter side %u px is below --min-side %u", lo, p->min_side);
        goto done;
    }
    if ((double)hi > p->max_aspect * (double)lo) {
        job_fail(j, "bad_aspect", "aspect ratio %.2f (%ux%u) exceeds --max-aspect %g", (double)hi / lo, w, h,
                 p->max_aspect);
        goto done;
    }
    resize_plan plan = resize_compute(p->mode, p->size, p->only_if_bigger, w, h);
    s = img_decode(data, j->bytes, p->max_pixels, plan.rw, plan.rh, &im);
    if (s != IMG_OK) {
        job_fail(j, img_status_text(s), "%s", lvd_errmsg());
        goto done;
    }
    /* Resample, hash, then crop: the pHash is taken from the uncropped working-size image, which costs a
     * fraction of hashing the full decode and sees the same picture (its own 32x32 resample dominates). */
    const img_rgb *base = &im;
    if (plan.rw != im.w || plan.rh != im.h) {
        if (img_resize(&im, plan.rw, plan.rh, &rs) != 0) {
            job_fail(j, "error", "%s", lvd_errmsg());
            goto done;
        }
        base = &rs;
    }
    j->phash = phash_compute(base);
    const img_rgb *final = base;
    if (plan.cw != base->w || plan.ch != base->h) {
        if (img_crop(base, plan.cx, plan.cy, plan.cw, plan.ch, &outim) != 0) {
            job_fail(j, "error", "%s", lvd_errmsg());
            goto done;
        }
        final = &outim;
    }
    j->ow = final->w;
    j->oh = final->h;
    int rc = p->webp ? img_encode_webp(final, p->quality, &j->out, &j->out_len)
                     : img_encode_jpeg(final, p->quality, &j->out, &j->out_len);
    if (rc != 0) {
        job_fail(j, "error", "%s", lvd_errmsg());
        goto done;
    }
    j->status = "ok";
done:
    img_free(&im);
    img_free(&rs);
    img_free(&outim);
    free(data);
}

typedef struct pool {
    job *jobs;
    int n;
    atomic_int next;
    const params *p;
} pool;

static void *worker(void *arg)
{
    pool *pl = arg;
    int i;
    while ((i = atomic_fetch_add(&pl->next, 1)) < pl->n)
        decode_one(&pl->jobs[i], pl->p);
    return NULL;
}

static void run_chunk(job *jobs, int n, const params *p, int threads)
{
    pool pl = {jobs, n, 0, p};
    pthread_t tid[64];
    int started = 0;
    for (int t = 1; t < threads && t < 64; t++)
        if (pthread_create(&tid[started], NULL, worker, &pl) == 0)
            started++;
    worker(&pl); /* the main thread works too */
    for (int t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
}

typedef struct decode {
    stage st;
    store *img;
    params p;
    uint64_t shard_size;
    char fp[65];
    uint64_t done, ok, errors;
    uint64_t by_status[8];
} decode;

static const char *status_names[] = {"ok", "unsupported", "too_many_pixels", "truncated", "corrupt",
                                     "too_small", "bad_aspect", "error"};

static int record(decode *d, job *j)
{
    catalog *cat = d->st.cat;
    int64_t shard = 0;
    uint64_t off = 0;
    if (j->out) {
        /* Opened on first use: opening truncates the shard to its committed end, which a run with
         * nothing to write should not do. */
        if (!d->img && store_open(&d->img, cat, d->st.work, "img", d->st.shard_tag, d->shard_size) != 0)
            return -1;
        char meta[256];
        snprintf(meta, sizeof meta, "{\"sha256\":\"%s\",\"width\":%u,\"height\":%u,\"phash\":\"%016" PRIx64 "\"}",
                 j->sha, j->ow, j->oh, j->phash);
        if (store_append(d->img, j->sha, d->p.webp ? "webp" : "jpg", j->out, j->out_len, meta, &shard, &off) != 0)
            return -1;
    }
    char now[32], ph[17];
    catalog_now(now);
    snprintf(ph, sizeof ph, "%016" PRIx64, j->phash);
    sqlite3_stmt *st = catalog_stmt(
        cat, "INSERT OR REPLACE INTO decodes(image_id, fingerprint, status, error, format, width, height,"
             " out_width, out_height, phash, shard_id, offset, size, out_format, run_id, created_at)"
             " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)");
    if (!st)
        return -1;
    int ok = strcmp(j->status, "ok") == 0;
    sqlite3_bind_int64(st, 1, j->image_id);
    sqlite3_bind_text(st, 2, d->fp, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, j->status, -1, SQLITE_STATIC);
    if (!ok)
        sqlite3_bind_text(st, 4, j->error, -1, SQLITE_TRANSIENT);
    if (j->format)
        sqlite3_bind_text(st, 5, j->format, -1, SQLITE_STATIC);
    if (j->w) {
        sqlite3_bind_int64(st, 6, j->w);
        sqlite3_bind_int64(st, 7, j->h);
    }
    if (ok) {
        sqlite3_bind_int64(st, 8, j->ow);
        sqlite3_bind_int64(st, 9, j->oh);
        sqlite3_bind_text(st, 10, ph, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 11, shard);
        sqlite3_bind_int64(st, 12, (int64_t)off);
        sqlite3_bind_int64(st, 13, (int64_t)j->out_len);
        sqlite3_bind_text(st, 14, d->p.webp ? "webp" : "jpeg", -1, SQLITE_STATIC);
    }
    sqlite3_bind_int64(st, 15, d->st.run_id);
    sqlite3_bind_text(st, 16, now, -1, SQLITE_TRANSIENT);
    if (catalog_step_done(cat, st) != 0)
        return -1;
    for (int k = 0; k < 8; k++)
        if (strcmp(j->status, status_names[k]) == 0)
            d->by_status[k]++;
    d->done++;
    if (ok)
        d->ok++;
    else
        d->errors++;
    return 0;
}

/* SQL selecting the images to decode after id ?2, in id order, at most ?3. In a partitioned run this reads
 * catalog.db; images the part file already decoded with these parameters are skipped by the caller. */
static char *select_sql(int ncoll)
{
    size_t cap = 1024 + (size_t)ncoll * 4;
    char *sql = malloc(cap);
    if (!sql)
        return NULL;
    int n = snprintf(sql, cap,
                     "SELECT i.id, i.sha256, i.bytes, s.path, i.offset FROM images i JOIN shards s ON s.id = i.shard_id"
                     " LEFT JOIN decodes d ON d.image_id = i.id AND d.fingerprint = ?1"
                     " WHERE (d.image_id IS NULL OR ?4) AND i.id > ?2");
    if (ncoll) {
        n += snprintf(sql + n, cap - (size_t)n, " AND i.id IN (SELECT m.image_id FROM members m JOIN collections c"
                                                " ON c.id = m.collection_id WHERE c.name IN (");
        for (int i = 0; i < ncoll; i++)
            n += snprintf(sql + n, cap - (size_t)n, "%s?%d", i ? "," : "", 5 + i);
        n += snprintf(sql + n, cap - (size_t)n, "))");
    }
    snprintf(sql + n, cap - (size_t)n, " ORDER BY i.id LIMIT ?3");
    return sql;
}

int main(int argc, char **argv)
{
    int ac;
    char **av;
    cli_begin("lvd-decode", argc, argv, &ac, &av);
    /* Every image allocates and frees buffers of 0.1-1 MB (decode, resample, encode). glibc would serve them
     * with mmap or hand freed heap tops back to the kernel, so each image paid page faults for memory it had
     * just released (about a tenth of decode CPU). Keep them in the heap: peak RSS grows by at most one set
     * of buffers per thread. */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    static const struct option longopts[] = {
        CLI_COMMON_OPTIONS,
        CLI_STAGE_OPTIONS,
        {"collection", required_argument, NULL, OPT_COLLECTION},
        {"resize-mode", required_argument, NULL, OPT_RESIZE_MODE},
        {"size", required_argument, NULL, OPT_SIZE},
        {"resize-only-if-bigger", no_argument, NULL, OPT_ONLY_BIGGER},
        {"min-side", required_argument, NULL, OPT_MIN_SIDE},
        {"max-aspect", required_argument, NULL, OPT_MAX_ASPECT},
        {"max-pixels", required_argument, NULL, OPT_MAX_PIXELS},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"quality", required_argument, NULL, OPT_QUALITY},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"shard-size", required_argument, NULL, OPT_SHARD_SIZE},
        {NULL, 0, NULL, 0}};
    static const char *const modes[] = {"no", "keep_ratio", "keep_ratio_largest", "center_crop", NULL};
    static const char *const formats[] = {"jpeg", "webp", NULL};
    const char *work = NULL;
    cli_stage_args sa = {0};
    char *collections[64];
    int ncoll = 0, json = 0, batch = 256;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = ncpu > 0 ? (int)ncpu : 1;
    uint64_t shard_size = (uint64_t)1 << 30;
    decode *d = calloc(1, sizeof *d);
    if (!d)
        return EXIT_FAIL;
    d->p = (params){RESIZE_KEEP_RATIO, 512, 0, 64, 4.0, 178956970, 0, 95};
    int opt, choice;
    int64_t iv;
    while ((opt = getopt_long(ac, av, "h", longopts, NULL)) != -1) {
        if (cli_common(opt, "lvd-decode", usage, &work, &json) || cli_stage_option(opt, &sa))
            continue;
        int bad = 0;
        switch (opt) {
        case OPT_COLLECTION:
            if (ncoll == 64)
                cli_usage_error("lvd-decode", "at most 64 --collection options");
            collections[ncoll++] = optarg;
            break;
        case OPT_RESIZE_MODE: bad = opt_choice("--resize-mode", optarg, modes, &choice); d->p.mode = (resize_mode)choice; break;
        case OPT_SIZE: bad = opt_int("--size", optarg, 1, 65535, &iv); d->p.size = (uint32_t)iv; break;
        case OPT_ONLY_BIGGER: d->p.only_if_bigger = 1; break;
        case OPT_MIN_SIDE: bad = opt_int("--min-side", optarg, 0, 1 << 30, &iv); d->p.min_side = (uint32_t)iv; break;
        case OPT_MAX_ASPECT: bad = opt_double("--max-aspect", optarg, 1.0, 1e9, &d->p.max_aspect); break;
        case OPT_MAX_PIXELS: bad = opt_int("--max-pixels", optarg, 1, INT64_MAX, &iv); d->p.max_pixels = (uint64_t)iv; break;
        case OPT_FORMAT: bad = opt_choice("--format", optarg, formats, &d->p.webp); break;
        case OPT_QUALITY: bad = opt_int("--quality", optarg, 1, 100, &iv); d->p.quality = (int)iv; break;
        case OPT_THREADS: bad = opt_int("--threads", optarg, 1, 64, &iv); threads = (int)iv; break;
        case OPT_BATCH: bad = opt_int("--batch", optarg, 1, 1000000, &iv); batch = (int)iv; break;
        case OPT_SHARD_SIZE: bad = opt_bytes("--shard-size", optarg, &shard_size); break;
        default: cli_usage_error("lvd-decode", "unknown option");
        }
        if (bad)
            cli_usage_error("lvd-decode", lvd_errmsg());
    }
    if (!work)
        cli_usage_error("lvd-decode", "--work DIR is required");
    if (optind < ac)
        cli_usage_error("lvd-decode", "unexpected argument");
    if (sa.merge)
        return cli_merge("decode", work, cli_stage_flags(&sa), json);
    int force = sa.force, retry_failed = sa.retry_failed;
    char ptext[256];
    snprintf(ptext, sizeof ptext,
             "{\"resize_mode\":\"%s\",\"size\":%u,\"resize_only_if_bigger\":%d,\"min_side\":%u,\"max_aspect\":%g,"
             "\"max_pixels\":%" PRIu64 ",\"format\":\"%s\",\"quality\":%d}",
             resize_mode_name(d->p.mode), d->p.size, d->p.only_if_bigger, d->p.min_side, d->p.max_aspect,
             d->p.max_pixels, d->p.webp ? "webp" : "jpeg", d->p.quality);
    stage_fingerprint(ptext, d->fp);
    if (stage_open(&d->st, "decode", work, sa.part, ptext, d->fp, cli_stage_flags(&sa)) != 0) {
        log_error("%s", lvd_errmsg());
        return EXIT_FAIL;
    }
    int rc = EXIT_FAIL;
    job *jobs = calloc(CHUNK, sizeof *jobs);
    char *sql = select_sql(ncoll);
    /* Images come from catalog.db; a partitioned run reads it read-only. */
    catalog *src = d->st.part.count > 1 ? d->st.main_ro : d->st.cat;
    progress prog;
    if (!jobs || !sql) {
        lvd_fail("out of memory");
        goto out;
    }
    if (!src) {
        log_info("decode: no catalog.db in %s yet: 0 new images", work);
        rc = EXIT_OK;
        goto out;
    }
    if (retry_failed && d->st.part.count == 1 &&
        catalog_exec(d->st.cat, "DELETE FROM decodes WHERE status = 'error'") != 0)
        goto out;
    d->shard_size = shard_size;
    progress_init(&prog, "decode", 0);
    int64_t last = 0;
    int in_batch = 0;
    if (catalog_begin(d->st.cat) != 0)
        goto out;
    for (;;) {
        sqlite3_stmt *st = catalog_stmt(src, sql);
        if (!st)
            goto fail_tx;
        sqlite3_bind_text(st, 1, d->fp, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, last);
        sqlite3_bind_int(st, 3, CHUNK * 4);
        sqlite3_bind_int(st, 4, force);
        for (int i = 0; i < ncoll; i++)
            sqlite3_bind_text(st, 5 + i, collections[i], -1, SQLITE_STATIC);
        int n = 0, rows = 0;
        while (n < CHUNK && sqlite3_step(st) == SQLITE_ROW) {
            rows++;
            job *j = &jobs[n];
            memset(j, 0, sizeof *j);
            j->image_id = sqlite3_column_int64(st, 0);
            last = j->image_id;
            snprintf(j->sha, sizeof j->sha, "%s", (const char *)sqlite3_column_text(st, 1));
            if (!part_owns(&d->st.part, j->sha, 64))
                continue;
            if (d->st.part.count > 1 && !force) {
                /* Resume of a partitioned run: skip what the part file already holds. */
                sqlite3_stmt *q = catalog_stmt(d->st.cat, "SELECT 1 FROM decodes WHERE image_id = ?1 AND fingerprint = ?2");
                if (!q)
                    goto fail_tx;
                sqlite3_bind_int64(q, 1, j->image_id);
                sqlite3_bind_text(q, 2, d->fp, -1, SQLITE_STATIC);
                int have = sqlite3_step(q) == SQLITE_ROW;
                sqlite3_reset(q);
                if (have)
                    continue;
            }
            j->bytes = (uint64_t)sqlite3_column_int64(st, 2);
            snprintf(j->path, sizeof j->path, "%s/%s", work, (const char *)sqlite3_column_text(st, 3));
            j->offset = (uint64_t)sqlite3_column_int64(st, 4);
            n++;
        }
        sqlite3_reset(st);
        if (rows == 0)
            break;
        run_chunk(jobs, n, &d->p, threads);
        for (int i = 0; i < n; i++) {
            int r = record(d, &jobs[i]);
            free(jobs[i].out);
            jobs[i].out = NULL;
            if (r != 0) {
                for (int k = i + 1; k < n; k++)
                    free(jobs[k].out);
                goto fail_tx;
            }
            if (++in_batch >= batch) {
                if ((d->img && store_sync(d->img) != 0) || catalog_commit(d->st.cat) != 0 || catalog_begin(d->st.cat) != 0)
                    goto fail_tx;
                in_batch = 0;
            }
        }
        progress_update(&prog, d->done, d->errors);
    }
    if ((d->img && store_sync(d->img) != 0) || catalog_commit(d->st.cat) != 0)
        goto fail_tx;
    if (d->done)
        progress_finish(&prog);
    rc = EXIT_OK;
    goto out;
fail_tx:
    catalog_rollback(d->st.cat);
out:
    if (rc != EXIT_OK)
        log_error("%s", lvd_errmsg());
    store_close(d->img);
    free(jobs);
    free(sql);
    cJSON *sum = cJSON_CreateObject();
    cJSON_AddStringToObject(sum, "stage", "decode");
    cJSON_AddStringToObject(sum, "part", d->st.part_text);
    cJSON_AddNumberToObject(sum, "decoded", (double)d->done);
    cJSON_AddNumberToObject(sum, "ok", (double)d->ok);
    cJSON_AddNumberToObject(sum, "failed", (double)d->errors);
    cJSON *h = cJSON_AddObjectToObject(sum, "status");
    for (int k = 0; k < 8; k++)
        if (d->by_status[k])
            cJSON_AddNumberToObject(h, status_names[k], (double)d->by_status[k]);
    char *sum_text = cJSON_PrintUnformatted(sum);
    cJSON_Delete(sum);
    if (stage_close(&d->st, rc == EXIT_OK ? "done" : "failed", sum_text) != 0) {
        log_error("%s", lvd_errmsg());
        rc = EXIT_FAIL;
    }
    if (rc == EXIT_OK) {
        if (d->done == 0)
            log_info("decode: 0 new images to decode");
        else
            log_info("decode: %" PRIu64 " decoded, %" PRIu64 " ok, %" PRIu64 " filtered or failed", d->done, d->ok,
                     d->errors);
        if (json && sum_text)
            printf("%s\n", sum_text);
    }
    free(sum_text);
    config_free_argv(ac, av);
    free(d);
    return rc;
}
