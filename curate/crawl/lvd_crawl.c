/* lvd-crawl — URL lists to raw shards: list ingestion into the catalog, then fetching every pending URL with
 * the libcurl engine, content-addressed storage of image bodies, one transaction per batch of results.
 *
 * curate/crawl/ (what only lvd-crawl uses; lists, store, shards and catalog are in common/):
 *   lvd_crawl.c  options, list ingestion, the fetch loop and its batch commits
 *   fetch.[ch]   the libcurl multi engine: concurrency, per-host pacing, retries, body and redirect caps
 *   robots.[ch]  robots.txt parsing and matching, X-Robots-Tag opt-outs
 *   netaddr.[ch] classifies IPv4 and IPv6 addresses, so non-public destinations are refused (SSRF safety)
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "cli.h"
#include "fetch.h"
#include "image.h"
#include "opts.h"
#include "part.h"
#include "progress.h"
#include "sha256.h"
#include "stage.h"
#include "store.h"
#include "urllist.h"

#define URL_CAP 8192      /* longest URL fetched; longer ones are recorded as malformed */
#define FEED_CHUNK 4096   /* pending URLs read from the catalog at a time */
#define MALFORMED_SHOWN 20 /* malformed lines logged per list before only counting */

static const char usage[] =
    "Usage: lvd-crawl --work DIR [options] LIST...\n"
    "       lvd-crawl --work DIR --merge [--allow-partial]\n"
    "Adds the URLs of each LIST (.txt, .csv, .tsv, .jsonl, optionally .gz) to the catalog and fetches every\n"
    "URL that has no result yet into WORK/shards/raw-NNNNNN.tar.\n\n"
    "Input:\n"
    "  --collection NAME       pool collection the URLs belong to (default pool); the name is a directory\n"
    "                          name: UTF-8, 1-200 bytes, no '/' or control characters, not . or .., no\n"
    "                          leading or trailing space\n"
    "  --url-col, --caption-col, --key-col NAME   csv/tsv/jsonl columns (url, caption, key)\n"
    "Fetching:\n"
    "  --concurrency N         transfers in flight (64)      --per-host N      per host (4)\n"
    "  --host-interval SEC     min seconds between requests to one host (0)\n"
    "  --connect-timeout SEC (10)  --timeout SEC (30)  --low-speed-limit B/S (1024) --low-speed-time SEC (10)\n"
    "  --max-bytes SIZE        body cap (32M)                --max-redirects N (5)\n"
    "  --retries N             retries of transient failures (2)   --max-retry-after SEC (60)\n"
    "  --user-agent TEXT       --allow-private (allow loopback/private addresses)\n"
    "  --ignore-robots         do not fetch or honour robots.txt\n"
    "  --ignore-xrobots        do not honour X-Robots-Tag opt-outs\n"
    "Stage:\n"
    "  --retry-failed          fetch again the URLs whose last failure was transient\n"
    "  --force                 fetch every listed URL again\n"
    "  --part I/N              process only part I of N, numbered 0..N-1 (else from Slurm/MPI variables),\n"
    "                          writing WORK/parts/crawl-I-of-N.db; then --merge folds the parts into catalog.db\n"
    CLI_STAGE_HELP
    "  --batch N               results per committed transaction (256)\n"
    "  --shard-size SIZE       roll over raw shards at this size (1G)\n"
    "  --config FILE.yaml      options from a YAML file (command line wins)\n"
    "  --json                  print a JSON summary on stdout   --quiet | --verbose   --version   --help\n";

enum {
    OPT_COLLECTION = OPT_FIRST_STAGE_OPTION, OPT_URL_COL, OPT_CAPTION_COL, OPT_KEY_COL, OPT_CONCURRENCY,
    OPT_PER_HOST, OPT_HOST_INTERVAL, OPT_CONNECT_TIMEOUT, OPT_TIMEOUT, OPT_LOW_SPEED_LIMIT, OPT_LOW_SPEED_TIME,
    OPT_MAX_BYTES, OPT_MAX_REDIRECTS, OPT_RETRIES, OPT_MAX_RETRY_AFTER, OPT_USER_AGENT, OPT_ALLOW_PRIVATE,
    OPT_IGNORE_ROBOTS, OPT_IGNORE_XROBOTS, OPT_BATCH, OPT_SHARD_SIZE
};

typedef struct crawl {
    stage st;
    store *raw;
    int64_t collection;
    int batch;             /* results per transaction */
    int in_batch;          /* results in the open transaction */
    /* feed */
    int64_t feed_last_id;  /* highest url id handed out */
    int retry_failed;
    struct {
        int64_t id;
        char *url;
    } chunk[FEED_CHUNK];
    int chunk_n, chunk_pos;
    int feed_done;
    /* counters */
    uint64_t fetched, ok, new_images, stored_bytes;
    uint64_t by_status[FETCH_STATUS_COUNT + 1]; /* + bad_type */
    progress prog;
    uint64_t errors;
} crawl;

static const char *status_name(int i) { return i == FETCH_STATUS_COUNT ? "bad_type" : fetch_status_name(i); }

/* Derived key of a URL without a key column: stable across runs and machines. */
static void url_key(const char *url, char out[20])
{
    char hex[SHA256_HEX];
    sha256_hex(url, strlen(url), hex);
    snprintf(out, 20, "u%.16s", hex);
}

/* What catalog.db says of url, for a partitioned run: 0 absent, 1 listed and still pending (*key: its key,
 * malloc'ed), 2 it has a result; -1 on error. */
static int main_url_state(crawl *c, const char *url, char **key)
{
    *key = NULL;
    sqlite3_stmt *q = catalog_stmt(c->st.main_ro, "SELECT status, key FROM urls WHERE url = ?1");
    if (!q)
        return -1;
    sqlite3_bind_text(q, 1, url, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(q), state = 0;
    if (rc == SQLITE_ROW) {
        state = strcmp((const char *)sqlite3_column_text(q, 0), "pending") == 0 ? 1 : 2;
        if (state == 1 && !(*key = strdup((const char *)sqlite3_column_text(q, 1))))
            state = lvd_fail("out of memory");
    } else if (rc != SQLITE_DONE) {
        state = catalog_step_fail(c->st.main_ro, q);
    }
    sqlite3_reset(q);
    return state;
}

/* Adds one list entry as a pending URL, under key_over if not NULL. Returns 1 if new, 0 if already known, -1
 * on error. */
static int insert_url(crawl *c, const urllist_entry *e, const char *source, const char *key_over)
{
    catalog *cat = c->st.cat;
    char derived[20];
    url_key(e->url, derived);
    const char *key = key_over ? key_over : e->key ? e->key : derived;
    for (int attempt = 0; attempt < 2; attempt++) {
        sqlite3_stmt *st = catalog_stmt(cat, "INSERT OR IGNORE INTO urls(url, collection_id, key, caption, extra,"
                                             " source) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
        if (!st)
            return -1;
        sqlite3_bind_text(st, 1, e->url, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 2, c->collection);
        sqlite3_bind_text(st, 3, key, -1, SQLITE_TRANSIENT);
        if (e->caption)
            sqlite3_bind_text(st, 4, e->caption, -1, SQLITE_TRANSIENT);
        if (e->extra_json)
            sqlite3_bind_text(st, 5, e->extra_json, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 6, source, -1, SQLITE_TRANSIENT);
        if (catalog_step_done(cat, st) != 0)
            return -1;
        if (sqlite3_changes(catalog_db(cat)) == 1)
            return 1;
        sqlite3_stmt *q = catalog_stmt(cat, "SELECT 1 FROM urls WHERE url = ?1");
        if (!q)
            return -1;
        sqlite3_bind_text(q, 1, e->url, -1, SQLITE_TRANSIENT);
        int seen = sqlite3_step(q) == SQLITE_ROW;
        sqlite3_reset(q);
        if (seen)
            return 0;
        /* Another URL already uses this key in the collection: keep the URL under its derived key. */
        log_warn("%s: key '%s' is already used by another URL; using key %s", source, key, derived);
        key = derived;
    }
    return 0;
}

/* Adds one list entry as a pending URL. Returns 1 if new, 0 if already known, -1 on error. A partitioned run
 * skips the URLs catalog.db has a result for; a URL catalog.db lists as still pending (a one-part run killed
 * before fetching it) is this part's to fetch, under the key catalog.db gave it, so that the merge updates that
 * row and its member instead of adding others. */
static int add_url(crawl *c, const urllist_entry *e, const char *source)
{
    char *main_key = NULL;
    if (c->st.main_ro) {
        int state = main_url_state(c, e->url, &main_key);
        if (state < 0)
            return -1;
        if (state == 2)
            return 0;
    }
    int rc = insert_url(c, e, source, main_key);
    free(main_key);
    return rc;
}

static int ingest_list(crawl *c, const char *path, const urllist_opts *uo, uint64_t *listed, uint64_t *added,
                       uint64_t *malformed)
{
    urllist *l;
    if (urllist_open(&l, path, uo) != 0)
        return -1;
    urllist_entry e;
    int rc, shown = 0;
    uint64_t in_tx = 0;
    char source[STAGE_PATH_MAX + 32];
    if (catalog_begin(c->st.cat) != 0)
        goto fail;
    while ((rc = urllist_next(l, &e)) != URLLIST_EOF) {
        if (rc == URLLIST_ERROR)
            goto fail;
        if (rc == URLLIST_ENTRY && strlen(e.url) >= URL_CAP) {
            rc = URLLIST_BAD;
            e.error = "URL longer than 8191 bytes";
        }
        if (rc == URLLIST_BAD) {
            (*malformed)++;
            if (shown++ < MALFORMED_SHOWN)
                log_warn("%s:%" PRIu64 ": malformed line skipped: %s", path, e.line, e.error);
            continue;
        }
        if (!part_owns(&c->st.part, e.url, strlen(e.url)))
            continue;
        (*listed)++;
        snprintf(source, sizeof source, "%s:%" PRIu64, path, e.line);
        int r = add_url(c, &e, source);
        if (r < 0)
            goto fail;
        *added += (uint64_t)r;
        if (++in_tx == 10000) {
            if (catalog_commit(c->st.cat) != 0 || catalog_begin(c->st.cat) != 0)
                goto fail;
            in_tx = 0;
        }
    }
    if (catalog_commit(c->st.cat) != 0)
        goto fail;
    if (shown > MALFORMED_SHOWN)
        log_warn("%s: %d more malformed lines not shown", path, shown - MALFORMED_SHOWN);
    urllist_close(l);
    return 0;
fail:
    catalog_rollback(c->st.cat);
    urllist_close(l);
    return lvd_fail_ctx("%s", path);
}

/* --retry-failed in a partitioned run: transient failures recorded in catalog.db become pending URLs of
 * this part file. */
static int copy_transient(crawl *c)
{
    if (!c->st.main_ro)
        return 0;
    sqlite3_stmt *q = catalog_stmt(c->st.main_ro, "SELECT url, key, caption, extra, source FROM urls WHERE transient = 1");
    if (!q)
        return -1;
    if (catalog_begin(c->st.cat) != 0)
        return -1;
    while (sqlite3_step(q) == SQLITE_ROW) {
        const char *url = (const char *)sqlite3_column_text(q, 0);
        if (!part_owns(&c->st.part, url, strlen(url)))
            continue;
        sqlite3_stmt *st = catalog_stmt(c->st.cat, "INSERT OR IGNORE INTO urls(url, collection_id, key, caption,"
                                                   " extra, source) VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
        if (!st)
            goto fail;
        for (int i = 0; i < 5; i++)
            sqlite3_bind_value(st, i == 0 ? 1 : i + 2, sqlite3_column_value(q, i));
        sqlite3_bind_int64(st, 2, c->collection);
        if (catalog_step_done(c->st.cat, st) != 0)
            goto fail;
    }
    sqlite3_reset(q);
    return catalog_commit(c->st.cat);
fail:
    sqlite3_reset(q);
    catalog_rollback(c->st.cat);
    return -1;
}

static void free_chunk(crawl *c)
{
    for (int i = 0; i < c->chunk_n; i++)
        free(c->chunk[i].url);
    c->chunk_n = c->chunk_pos = 0;
}

static int feed(void *ctx, uint64_t *id, char *url, size_t cap)
{
    crawl *c = ctx;
    if (c->chunk_pos == c->chunk_n) {
        free_chunk(c);
        if (c->feed_done)
            return 0;
        sqlite3_stmt *st = catalog_stmt(c->st.cat, "SELECT id, url FROM urls WHERE id > ?1 AND status = 'pending'"
                                                   " ORDER BY id LIMIT ?2");
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, c->feed_last_id);
        sqlite3_bind_int(st, 2, FEED_CHUNK);
        while (sqlite3_step(st) == SQLITE_ROW) {
            c->chunk[c->chunk_n].id = sqlite3_column_int64(st, 0);
            c->chunk[c->chunk_n].url = strdup((const char *)sqlite3_column_text(st, 1));
            if (!c->chunk[c->chunk_n].url) {
                sqlite3_reset(st);
                return lvd_fail("out of memory");
            }
            c->feed_last_id = c->chunk[c->chunk_n].id;
            c->chunk_n++;
        }
        sqlite3_reset(st);
        if (c->chunk_n < FEED_CHUNK)
            c->feed_done = 1;
        if (c->chunk_n == 0)
            return 0;
    }
    *id = (uint64_t)c->chunk[c->chunk_pos].id;
    snprintf(url, cap, "%s", c->chunk[c->chunk_pos].url);
    c->chunk_pos++;
    return 1;
}

/* Stores a successful body; *image_id gets the image, new or already known. */
static int store_body(crawl *c, const fetch_result *r, img_format fmt, const char *sha, const char *key,
                      int64_t *image_id)
{
    int found = store_find_image(c->st.cat, sha, image_id);
    if (found != 0)
        return found < 0 ? -1 : 0;
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "url", r->url);
    cJSON_AddStringToObject(meta, "key", key);
    cJSON_AddStringToObject(meta, "sha256", sha);
    if (r->content_type)
        cJSON_AddStringToObject(meta, "content_type", r->content_type);
    char *meta_text = cJSON_PrintUnformatted(meta);
    cJSON_Delete(meta);
    if (!meta_text)
        return lvd_fail("out of memory");
    int rc = store_add_image(c->raw, sha, img_format_name(fmt), img_format_ext(fmt), r->body, r->body_len,
                             meta_text, c->st.run_id, image_id);
    free(meta_text);
    if (rc != 0)
        return -1;
    c->new_images++;
    c->stored_bytes += r->body_len;
    return 0;
}

static int commit_batch(crawl *c)
{
    if (store_sync(c->raw) != 0 || catalog_commit(c->st.cat) != 0)
        return -1;
    c->in_batch = 0;
    return 0;
}

static int record_result(crawl *c, const fetch_result *r, const char *key);

static int done(void *ctx, const fetch_result *r)
{
    crawl *c = ctx;
    sqlite3_stmt *q = catalog_stmt(c->st.cat, "SELECT key FROM urls WHERE id = ?1");
    if (!q)
        return -1;
    sqlite3_bind_int64(q, 1, (int64_t)r->id);
    char *key = NULL; /* keys come from user lists: copied whole, never cut to a buffer */
    if (sqlite3_step(q) == SQLITE_ROW)
        key = strdup((const char *)sqlite3_column_text(q, 0));
    sqlite3_reset(q);
    if (!key)
        return lvd_fail("url id %" PRIu64 ": no such row, or out of memory", r->id);
    int rc = record_result(c, r, key);
    free(key);
    return rc;
}

/* Records one fetch result for the URL whose member key is `key`. */
static int record_result(crawl *c, const fetch_result *r, const char *key)
{
    catalog *cat = c->st.cat;
    int status = (int)r->status;
    int transient = fetch_status_transient(r->status, r->http_status);
    char err[512] = "";
    if (r->error)
        snprintf(err, sizeof err, "%s", r->error);
    int64_t image_id = -1;
    char sha[SHA256_HEX] = "";

    if (r->status == FETCH_OK) {
        img_format fmt = img_sniff(r->body, r->body_len);
        if (fmt == IMG_FMT_UNKNOWN || fmt == IMG_FMT_SVG) {
            /* Sniffed, not trusted from the header: an HTML error page served as image/jpeg is no image. */
            status = FETCH_STATUS_COUNT;
            transient = 0;
            unsigned char b[4] = {0};
            memcpy(b, r->body, r->body_len < 4 ? r->body_len : 4);
            snprintf(err, sizeof err, "body is not an image (Content-Type %s, first bytes %02x %02x %02x %02x)",
                     r->content_type ? r->content_type : "none", b[0], b[1], b[2], b[3]);
        } else {
            sha256_hex(r->body, r->body_len, sha);
            if (store_body(c, r, fmt, sha, key, &image_id) != 0)
                return -1;
            sqlite3_stmt *m = catalog_stmt(cat, "INSERT OR IGNORE INTO members(collection_id, key, image_id, source,"
                                                " run_id) VALUES (?1, ?2, ?3, ?4, ?5)");
            if (!m)
                return -1;
            sqlite3_bind_int64(m, 1, c->collection);
            sqlite3_bind_text(m, 2, key, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(m, 3, image_id);
            sqlite3_bind_text(m, 4, r->url, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int64(m, 5, c->st.run_id);
            if (catalog_step_done(cat, m) != 0)
                return -1;
            c->ok++;
        }
    }
    char t0[32], t1[32];
    catalog_format_time(r->started > 0 ? r->started : r->finished, t0);
    catalog_format_time(r->finished, t1);
    sqlite3_stmt *u = catalog_stmt(
        cat, "UPDATE urls SET status = ?1, transient = ?2, http_status = ?3, final_url = ?4, content_type = ?5,"
             " bytes = ?6, sha256 = ?7, image_id = ?8, attempts = attempts + ?9, error = ?10,"
             " first_at = coalesce(first_at, ?11), last_at = ?12, run_id = ?13 WHERE id = ?14");
    if (!u)
        return -1;
    sqlite3_bind_text(u, 1, status_name(status), -1, SQLITE_STATIC);
    sqlite3_bind_int(u, 2, transient);
    if (r->http_status)
        sqlite3_bind_int64(u, 3, r->http_status);
    if (r->final_url)
        sqlite3_bind_text(u, 4, r->final_url, -1, SQLITE_TRANSIENT);
    if (r->content_type)
        sqlite3_bind_text(u, 5, r->content_type, -1, SQLITE_TRANSIENT);
    if (r->body)
        sqlite3_bind_int64(u, 6, (int64_t)r->body_len);
    if (sha[0])
        sqlite3_bind_text(u, 7, sha, -1, SQLITE_TRANSIENT);
    if (image_id >= 0)
        sqlite3_bind_int64(u, 8, image_id);
    sqlite3_bind_int(u, 9, r->attempts);
    if (err[0])
        sqlite3_bind_text(u, 10, err, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(u, 11, t0, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(u, 12, t1, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(u, 13, c->st.run_id);
    sqlite3_bind_int64(u, 14, (int64_t)r->id);
    if (catalog_step_done(cat, u) != 0)
        return -1;

    c->fetched++;
    c->by_status[status]++;
    if (status != FETCH_OK)
        c->errors++;
    if (++c->in_batch >= c->batch && (commit_batch(c) != 0 || catalog_begin(cat) != 0))
        return -1;
    progress_update(&c->prog, c->fetched, c->errors);
    return 0;
}

static cJSON *summary(const crawl *c, uint64_t listed, uint64_t added, uint64_t malformed, uint64_t pending)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "stage", "crawl");
    cJSON_AddStringToObject(j, "part", c->st.part_text);
    cJSON_AddNumberToObject(j, "listed", (double)listed);
    cJSON_AddNumberToObject(j, "new_urls", (double)added);
    cJSON_AddNumberToObject(j, "malformed_lines", (double)malformed);
    cJSON_AddNumberToObject(j, "to_fetch", (double)pending);
    cJSON_AddNumberToObject(j, "fetched", (double)c->fetched);
    cJSON_AddNumberToObject(j, "ok", (double)c->ok);
    cJSON_AddNumberToObject(j, "new_images", (double)c->new_images);
    cJSON_AddNumberToObject(j, "stored_bytes", (double)c->stored_bytes);
    cJSON *h = cJSON_AddObjectToObject(j, "status");
    for (int i = 0; i <= FETCH_STATUS_COUNT; i++)
        if (c->by_status[i])
            cJSON_AddNumberToObject(h, status_name(i), (double)c->by_status[i]);
    return j;
}

int main(int argc, char **argv)
{
    int ac;
    char **av;
    cli_begin("lvd-crawl", argc, argv, &ac, &av);
    static const struct option longopts[] = {
        CLI_COMMON_OPTIONS,
        CLI_STAGE_OPTIONS,
        {"collection", required_argument, NULL, OPT_COLLECTION},
        {"url-col", required_argument, NULL, OPT_URL_COL},
        {"caption-col", required_argument, NULL, OPT_CAPTION_COL},
        {"key-col", required_argument, NULL, OPT_KEY_COL},
        {"concurrency", required_argument, NULL, OPT_CONCURRENCY},
        {"per-host", required_argument, NULL, OPT_PER_HOST},
        {"host-interval", required_argument, NULL, OPT_HOST_INTERVAL},
        {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"low-speed-limit", required_argument, NULL, OPT_LOW_SPEED_LIMIT},
        {"low-speed-time", required_argument, NULL, OPT_LOW_SPEED_TIME},
        {"max-bytes", required_argument, NULL, OPT_MAX_BYTES},
        {"max-redirects", required_argument, NULL, OPT_MAX_REDIRECTS},
        {"retries", required_argument, NULL, OPT_RETRIES},
        {"max-retry-after", required_argument, NULL, OPT_MAX_RETRY_AFTER},
        {"user-agent", required_argument, NULL, OPT_USER_AGENT},
        {"allow-private", no_argument, NULL, OPT_ALLOW_PRIVATE},
        {"ignore-robots", no_argument, NULL, OPT_IGNORE_ROBOTS},
        {"ignore-xrobots", no_argument, NULL, OPT_IGNORE_XROBOTS},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"shard-size", required_argument, NULL, OPT_SHARD_SIZE},
        {NULL, 0, NULL, 0}};
    const char *work = NULL, *collection = "pool";
    int json = 0;
    cli_stage_args sa = {0};
    urllist_opts uo = {.url_col = "url", .caption_col = "caption", .key_col = "key"};
    fetch_opts fo;
    fetch_opts_default(&fo);
    crawl *c = calloc(1, sizeof *c);
    if (!c)
        return EXIT_FAIL;
    c->batch = 256;
    uint64_t shard_size = (uint64_t)1 << 30;
    int opt;
    int64_t iv;
    double dv;
    while ((opt = getopt_long(ac, av, "h", longopts, NULL)) != -1) {
        if (cli_common(opt, "lvd-crawl", usage, &work, &json) || cli_stage_option(opt, &sa))
            continue;
        int bad = 0;
        switch (opt) {
        case OPT_COLLECTION: collection = optarg; break;
        case OPT_URL_COL: uo.url_col = optarg; break;
        case OPT_CAPTION_COL: uo.caption_col = optarg; break;
        case OPT_KEY_COL: uo.key_col = optarg; break;
        case OPT_CONCURRENCY: bad = opt_int("--concurrency", optarg, 1, 100000, &iv); fo.concurrency = (int)iv; break;
        case OPT_PER_HOST: bad = opt_int("--per-host", optarg, 1, 10000, &iv); fo.per_host = (int)iv; break;
        case OPT_HOST_INTERVAL: bad = opt_seconds("--host-interval", optarg, &fo.host_interval); break;
        case OPT_CONNECT_TIMEOUT: bad = opt_seconds("--connect-timeout", optarg, &fo.connect_timeout); break;
        case OPT_TIMEOUT: bad = opt_seconds("--timeout", optarg, &fo.timeout); break;
        case OPT_LOW_SPEED_LIMIT: bad = opt_int("--low-speed-limit", optarg, 0, INT32_MAX, &iv); fo.low_speed_limit = (long)iv; break;
        case OPT_LOW_SPEED_TIME: bad = opt_seconds("--low-speed-time", optarg, &dv); fo.low_speed_time = (long)(dv + 0.5); break;
        case OPT_MAX_BYTES: bad = opt_bytes("--max-bytes", optarg, &fo.max_bytes); break;
        case OPT_MAX_REDIRECTS: bad = opt_int("--max-redirects", optarg, 0, 50, &iv); fo.max_redirects = (int)iv; break;
        case OPT_RETRIES: bad = opt_int("--retries", optarg, 0, 100, &iv); fo.retries = (int)iv; break;
        case OPT_MAX_RETRY_AFTER: bad = opt_seconds("--max-retry-after", optarg, &fo.max_retry_after); break;
        case OPT_USER_AGENT: fo.user_agent = optarg; break;
        case OPT_ALLOW_PRIVATE: fo.allow_private = 1; break;
        case OPT_IGNORE_ROBOTS: fo.respect_robots = 0; break;
        case OPT_IGNORE_XROBOTS: fo.respect_xrobots = 0; break;
        case OPT_BATCH: bad = opt_int("--batch", optarg, 1, 1000000, &iv); c->batch = (int)iv; break;
        case OPT_SHARD_SIZE: bad = opt_bytes("--shard-size", optarg, &shard_size); break;
        default: cli_usage_error("lvd-crawl", "unknown option");
        }
        if (bad)
            cli_usage_error("lvd-crawl", lvd_errmsg());
    }
    if (!work)
        cli_usage_error("lvd-crawl", "--work DIR is required");
    if (sa.merge)
        return cli_merge("crawl", work, cli_stage_flags(&sa), json);
    /* The rule catalog_collection applies when it creates the collection, checked before anything is written. */
    if (catalog_check_collection_name(collection) != 0)
        cli_usage_errorf("lvd-crawl", "--collection: %s", lvd_errmsg());
    c->retry_failed = sa.retry_failed;
    int force = sa.force;

    /* Parameters that shape results go into the run record. */
    cJSON *params = cJSON_CreateObject();
    cJSON_AddStringToObject(params, "collection", collection);
    cJSON_AddNumberToObject(params, "max_bytes", (double)fo.max_bytes);
    cJSON_AddNumberToObject(params, "max_redirects", fo.max_redirects);
    cJSON_AddNumberToObject(params, "retries", fo.retries);
    cJSON_AddNumberToObject(params, "timeout", fo.timeout);
    cJSON_AddStringToObject(params, "user_agent", fo.user_agent);
    cJSON_AddBoolToObject(params, "robots", fo.respect_robots);
    cJSON_AddBoolToObject(params, "xrobots", fo.respect_xrobots);
    cJSON_AddBoolToObject(params, "allow_private", fo.allow_private);
    cJSON *lists = cJSON_AddArrayToObject(params, "lists");
    for (int i = optind; i < ac; i++)
        cJSON_AddItemToArray(lists, cJSON_CreateString(av[i]));
    char *params_text = cJSON_PrintUnformatted(params);
    cJSON_Delete(params);
    char fp[65];
    stage_fingerprint(params_text, fp);
    if (stage_open(&c->st, "crawl", work, sa.part, params_text, fp, cli_stage_flags(&sa)) != 0) {
        free(params_text);
        log_error("%s", lvd_errmsg());
        return EXIT_FAIL;
    }
    free(params_text);
    int rc = EXIT_FAIL;
    uint64_t listed = 0, added = 0, malformed = 0;
    int64_t pending = 0;
    fetch_engine *eng = NULL;
    if (catalog_collection(c->st.cat, collection, "pool", &c->collection) != 0)
        goto out;
    for (int i = optind; i < ac; i++)
        if (ingest_list(c, av[i], &uo, &listed, &added, &malformed) != 0)
            goto out;
    if (optind < ac)
        log_info("%" PRIu64 " URLs listed, %" PRIu64 " new, %" PRIu64 " malformed lines", listed, added, malformed);
    if (c->retry_failed) {
        if (copy_transient(c) != 0 ||
            catalog_exec(c->st.cat, "UPDATE urls SET status = 'pending' WHERE transient = 1") != 0)
            goto out;
    }
    if (force && catalog_exec(c->st.cat, "UPDATE urls SET status = 'pending'") != 0)
        goto out;
    if (catalog_query_int(c->st.cat, "SELECT count(*) FROM urls WHERE status = 'pending'", 0, &pending) != 0)
        goto out;
    if (pending == 0) {
        log_info("crawl: 0 new URLs to fetch");
    } else {
        log_info("fetching %" PRId64 " URLs", pending);
        if (store_open(&c->raw, c->st.cat, work, "raw", c->st.shard_tag, shard_size) != 0 ||
            fetch_engine_new(&eng, &fo) != 0)
            goto out;
        progress_init(&c->prog, "crawl", (uint64_t)pending);
        if (catalog_begin(c->st.cat) != 0)
            goto out;
        if (fetch_engine_run(eng, feed, done, c) != 0 || commit_batch(c) != 0) {
            catalog_rollback(c->st.cat);
            goto out;
        }
        progress_finish(&c->prog);
    }
    rc = EXIT_OK;
out:
    if (rc != EXIT_OK)
        log_error("%s", lvd_errmsg());
    free_chunk(c);
    fetch_engine_free(eng);
    store_close(c->raw);
    cJSON *sum = summary(c, listed, added, malformed, (uint64_t)pending);
    char *sum_text = cJSON_PrintUnformatted(sum);
    cJSON_Delete(sum);
    if (stage_close(&c->st, rc == EXIT_OK ? "done" : "failed", sum_text) != 0) {
        log_error("%s", lvd_errmsg());
        rc = EXIT_FAIL;
    }
    if (rc == EXIT_OK) {
        log_info("crawl: %" PRIu64 " fetched, %" PRIu64 " ok, %" PRIu64 " new images, %" PRIu64 " failed",
                 c->fetched, c->ok, c->new_images, c->errors);
        if (json && sum_text)
            printf("%s\n", sum_text);
    }
    free(sum_text);
    config_free_argv(ac, av);
    free(c);
    return rc;
}
