/* export.c — lvd-manifest export: the manifest's samples as plain webdataset tars, for tools outside lvd.
 *
 * DIR/shard-000000.tar, shard-000001.tar, ... hold, per sample, KEY.<ext> (the working image: jpg for jpeg,
 * webp for webp) and KEY.json (its metadata and why it was chosen), and with --copy-original KEY.orig.<ext>
 * (the original bytes, from the work directory's raw shards). Samples come in key order, or with --shuffle S
 * in the order of manifest_order(seed S, epoch 0, rank 0 of 1) keeping each sample's first occurrence: every
 * sample appears once whatever its weight, and its JSON carries the weight for a loader to apply.
 *
 * A shard is closed before the sample that would take it past --shard-size (data and headers, in bytes;
 * suffixes are decimal: 1GB = 10^9); a shard always holds at least one sample. Every member's mtime is the
 * manifest's created_at, so the same manifest and options give byte-identical tars.
 *
 * Resumable: after each shard is flushed and fsynced, DIR/export-state.json (written atomically) records the
 * manifest's identity (SHA-256 of the file), the options, and the completed shards. A rerun with the same
 * manifest and options keeps the completed shards and rewrites the next one from its start; a different
 * manifest or options in a non-empty DIR is an error unless --force (which starts over). At the end
 * DIR/index.json lists the shards: {"manifest", "manifest_sha256", "name", "samples", "shards": [{"path",
 * "samples", "members" (tar members), "bytes", "sha256"}], "shuffle": the seed as text (64 bits do not fit a
 * JSON double) or null}.
 * Every sample's bytes are checked against data_sha256 as they are copied: a mismatch stops the export with a
 * message naming the key (lvd-manifest verify --deep lists every such sample).
 */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "atomic_file.h"
#include "catalog.h"
#include "cli.h"
#include "cmds.h"
#include "image.h"
#include "manifest.h"
#include "sha256.h"
#include "shard.h"
#include "store.h"

#define STATE_NAME "export-state.json"
#define INDEX_NAME "index.json"
#define TAR_BLOCK 512
#define DEFAULT_SHARD_SIZE 1000000000ull /* 1GB */

static const char export_usage[] =
    "usage: lvd-manifest export M.db --webdataset DIR [--shard-size 1GB] [--shuffle SEED]\n"
    "                           [--copy-original --work W] [--force] [--json]\n"
    "\n"
    "Writes DIR/shard-NNNNNN.tar (webdataset): KEY.jpg or KEY.webp (the working image) and KEY.json (key, id,\n"
    "sizes, url, caption, label, weight, sources) per sample, in key order; every sample once, whatever its\n"
    "weight (the JSON carries it). Then DIR/index.json. A killed export resumes where it stopped. Bytes are\n"
    "checked against the manifest's SHA-256 as they are copied; a mismatch stops the export, naming the key.\n"
    "\n"
    "  --shard-size N   close a shard before it would pass N bytes (suffixes K/KB, M/MB, G/GB, T/TB: powers of\n"
    "                   1000; default 1GB)\n"
    "  --shuffle SEED   sample order of manifest_order(SEED, epoch 0, rank 0 of 1), first occurrences\n"
    "  --copy-original  also KEY.orig.<ext>: the original bytes, from the work directory (needs --work W)\n"
    "  --force          start over in a DIR holding another export\n"
    "  --quiet          errors only on stderr\n"
    "  --json           print a summary on stdout: {\"dir\", \"samples\", \"shards\", \"written\", \"kept\"}\n";

typedef struct exp_opts {
    const char *manifest, *dir, *work;
    uint64_t shard_size;
    int shuffle;
    uint64_t seed;
    int copy_original, force, json;
} exp_opts;

/* "1GB", "500M", "4096": bytes, decimal suffixes; 0 or -1. */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    uint64_t mul = 1;
    const char *suf = end;
    if (*suf) {
        switch (*suf == 'k' ? 'K' : *suf) {
        case 'K': mul = 1000ull; break;
        case 'M': mul = 1000000ull; break;
        case 'G': mul = 1000000000ull; break;
        case 'T': mul = 1000000000000ull; break;
        default: return -1;
        }
        suf++;
        if (*suf == 'B')
            suf++;
        if (*suf)
            return -1;
    }
    if (v == 0 || v > UINT64_MAX / mul)
        return -1;
    *out = v * mul;
    return 0;
}

static uint64_t padded(uint64_t n) { return (n + TAR_BLOCK - 1) / TAR_BLOCK * TAR_BLOCK; }

static const char *image_ext(const char *format)
{
    if (!strcmp(format, "jpeg"))
        return "jpg";
    return format; /* webp (and any later format) is its own extension */
}

/* The manifest's created_at as seconds since the epoch (the members' mtime), 0 if absent or unparsable. */
static int64_t created_at_time(const manifest *m)
{
    const char *s = manifest_info(m, "created_at");
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    if (!s || !strptime(s, "%Y-%m-%dT%H:%M:%S", &tm))
        return 0;
    time_t t = timegm(&tm);
    return t < 0 ? 0 : (int64_t)t;
}

/* ---- per-sample content ---- */

typedef struct exporter {
    const exp_opts *o;
    manifest *m;
    sqlite3 *db;
    sqlite3_stmt *st_meta, *st_src;
    catalog *cat;
    sqlite3_stmt *st_orig;
    uint8_t *buf;
    size_t cap;
    uint8_t *obuf;
    size_t ocap;
} exporter;

static int grow(uint8_t **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    uint8_t *nb = realloc(*buf, need);
    if (!nb)
        return lvd_fail("out of memory for %zu bytes", need);
    *buf = nb;
    *cap = need;
    return 0;
}

static cJSON *col_json(sqlite3_stmt *st, int i)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_NULL: return cJSON_CreateNull();
    case SQLITE_INTEGER: return cJSON_CreateNumber((double)sqlite3_column_int64(st, i));
    case SQLITE_FLOAT: return cJSON_CreateNumber(sqlite3_column_double(st, i));
    default: return cJSON_CreateString((const char *)sqlite3_column_text(st, i));
    }
}

/* KEY.json's text (malloc'ed). */
static char *sample_json(exporter *e, const manifest_sample *s)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "key", s->key);
    cJSON_AddNumberToObject(o, "id", (double)s->id);
    cJSON_AddNumberToObject(o, "width", s->width);
    cJSON_AddNumberToObject(o, "height", s->height);
    cJSON_AddNumberToObject(o, "orig_width", s->orig_width);
    cJSON_AddNumberToObject(o, "orig_height", s->orig_height);
    sqlite3_bind_int64(e->st_meta, 1, s->id);
    if (sqlite3_step(e->st_meta) == SQLITE_ROW) {
        cJSON_AddItemToObject(o, "url", col_json(e->st_meta, 0));
        cJSON_AddItemToObject(o, "caption", col_json(e->st_meta, 1));
        cJSON_AddItemToObject(o, "label", col_json(e->st_meta, 2));
    }
    sqlite3_reset(e->st_meta);
    cJSON_AddNumberToObject(o, "weight", s->weight);
    cJSON *src = cJSON_AddArrayToObject(o, "sources");
    static const char *const names[] = {"row", "method", "seed_key", "rank", "similarity", "cluster"};
    sqlite3_bind_int64(e->st_src, 1, s->id);
    int rc;
    while ((rc = sqlite3_step(e->st_src)) == SQLITE_ROW) {
        cJSON *r = cJSON_CreateObject();
        for (int i = 0; i < 6; i++)
            cJSON_AddItemToObject(r, names[i], col_json(e->st_src, i));
        cJSON_AddItemToArray(src, r);
    }
    sqlite3_reset(e->st_src);
    char *t = rc == SQLITE_DONE ? cJSON_PrintUnformatted(o) : NULL;
    if (rc != SQLITE_DONE)
        lvd_fail("manifest %s: reading sample_sources of %s: %s", e->o->manifest, s->key, sqlite3_errmsg(e->db));
    else if (!t)
        lvd_fail("out of memory");
    cJSON_Delete(o);
    return t;
}

/* The original bytes of key from the work directory's store: into e->obuf, *len, *ext. */
static int original_bytes(exporter *e, const char *key, size_t *len, const char **ext)
{
    sqlite3_bind_text(e->st_orig, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(e->st_orig);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(e->st_orig);
        if (rc == SQLITE_DONE)
            return lvd_fail("%s: not an image of the catalog %s/catalog.db (--copy-original)", key, e->o->work);
        return catalog_step_fail(e->cat, e->st_orig);
    }
    int64_t bytes = sqlite3_column_int64(e->st_orig, 0), shard_id = sqlite3_column_int64(e->st_orig, 1);
    int64_t off = sqlite3_column_int64(e->st_orig, 2);
    sqlite3_reset(e->st_orig);
    char path[4096];
    if (bytes < 0 || off < 0 || store_shard_path(e->cat, e->o->work, shard_id, path, sizeof path) != 0 ||
        grow(&e->obuf, &e->ocap, (size_t)bytes + 1) != 0 ||
        shard_read_at(path, (uint64_t)off, e->obuf, (size_t)bytes) != 0)
        return lvd_fail_ctx("%s: original bytes", key);
    *len = (size_t)bytes;
    *ext = img_format_ext(img_sniff(e->obuf, *len));
    return 0;
}

/* Bytes one sample adds to a shard (headers + padded data of its members), with its members' contents. */
typedef struct sample_members {
    size_t len;
    char *json;
    size_t olen;
    const char *oext;
    uint64_t bytes;
} sample_members;

static int prepare_sample(exporter *e, size_t idx, manifest_sample *s, sample_members *sm)
{
    manifest_sample_meta(e->m, idx, s);
    memset(sm, 0, sizeof *sm);
    if (grow(&e->buf, &e->cap, (size_t)s->length + 1) != 0)
        return -1;
    /* Checked: an export must not copy bytes that no longer match the manifest. */
    if (manifest_read_checked(e->m, idx, e->buf, e->cap, &sm->len) != 0)
        return -1;
    sm->json = sample_json(e, s);
    if (!sm->json)
        return -1;
    sm->bytes = TAR_BLOCK + padded(sm->len) + TAR_BLOCK + padded(strlen(sm->json));
    if (e->o->copy_original) {
        if (original_bytes(e, s->key, &sm->olen, &sm->oext) != 0) {
            free(sm->json);
            return -1;
        }
        sm->bytes += TAR_BLOCK + padded(sm->olen);
    }
    return 0;
}

static int add_sample(exporter *e, shard_writer *w, const manifest_sample *s, const sample_members *sm)
{
    char name[SHARD_NAME_MAX + 1];
    snprintf(name, sizeof name, "%s.%s", s->key, image_ext(s->format));
    if (shard_writer_add(w, name, e->buf, sm->len, NULL) != 0)
        return -1;
    snprintf(name, sizeof name, "%s.json", s->key);
    if (shard_writer_add(w, name, sm->json, strlen(sm->json), NULL) != 0)
        return -1;
    if (e->o->copy_original) {
        snprintf(name, sizeof name, "%s.orig.%s", s->key, sm->oext);
        if (shard_writer_add(w, name, e->obuf, sm->olen, NULL) != 0)
            return -1;
    }
    return 0;
}

/* ---- state ---- */

static cJSON *options_json(const exp_opts *o)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "shard_size", (double)o->shard_size);
    if (o->shuffle) {
        char seed[32];
        snprintf(seed, sizeof seed, "%" PRIu64, o->seed); /* text: a 64-bit seed does not fit a double */
        cJSON_AddStringToObject(j, "shuffle", seed);
    } else {
        cJSON_AddNullToObject(j, "shuffle");
    }
    cJSON_AddBoolToObject(j, "copy_original", o->copy_original);
    return j;
}

static int write_json_file(const char *path, const cJSON *j)
{
    char *t = cJSON_Print(j);
    if (!t)
        return lvd_fail("%s: out of memory", path);
    atomic_file af;
    int rc = atomic_file_open(&af, path);
    if (rc == 0) {
        rc = atomic_file_write(&af, t, strlen(t));
        if (rc == 0)
            rc = atomic_file_write(&af, "\n", 1);
        if (rc == 0)
            rc = atomic_file_commit(&af);
        else
            atomic_file_abort(&af);
    }
    free(t);
    return rc;
}

static cJSON *read_json_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *t = n >= 0 ? malloc((size_t)n + 1) : NULL;
    cJSON *j = NULL;
    if (t && fread(t, 1, (size_t)n, f) == (size_t)n) {
        t[n] = '\0';
        j = cJSON_Parse(t);
    }
    free(t);
    fclose(f);
    return j;
}

/* Whether DIR holds anything besides nothing: an export (state, index, shards) or other files. */
static int dir_nonempty(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *de;
    int any = 0;
    while (!any && (de = readdir(d)))
        any = strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
    closedir(d);
    return any;
}

/* --force: removes a previous export's files (state, index, shard-*.tar); other files stay. */
static void remove_export(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    char p[4096];
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if ((!strncmp(de->d_name, "shard-", 6) && l > 4 && !strcmp(de->d_name + l - 4, ".tar")) ||
            !strcmp(de->d_name, STATE_NAME) || !strcmp(de->d_name, INDEX_NAME)) {
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
    }
    closedir(d);
}

/* The sample order: key order, or the first occurrences in the shuffled epoch. *order malloc'ed, n entries. */
static int export_order(manifest *m, const exp_opts *o, uint32_t **order, size_t *n)
{
    size_t cnt = manifest_count(m);
    if (!o->shuffle) {
        uint32_t *ord = malloc((cnt ? cnt : 1) * sizeof *ord);
        if (!ord)
            return lvd_fail("out of memory");
        for (size_t i = 0; i < cnt; i++)
            ord[i] = (uint32_t)i;
        *order = ord;
        *n = cnt;
        return 0;
    }
    uint32_t *ep;
    size_t L;
    if (manifest_order(m, o->seed, 0, 0, 1, &ep, &L) != 0)
        return -1;
    uint8_t *seen = calloc(cnt ? cnt : 1, 1);
    if (!seen) {
        free(ep);
        return lvd_fail("out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < L; i++)
        if (!seen[ep[i]]) {
            seen[ep[i]] = 1;
            ep[k++] = ep[i];
        }
    free(seen);
    *order = ep;
    *n = k;
    return 0;
}

/* Test hook: with LVD_EXPORT_TEST_STALL_AFTER=N the export stops making progress (sleeps) once N shards are
 * committed and the next one has members written but not flushed, so a test can kill it at that point. */
static void test_stall(size_t committed)
{
    const char *v = getenv("LVD_EXPORT_TEST_STALL_AFTER");
    if (v && *v && (size_t)strtoul(v, NULL, 10) == committed)
        for (;;)
            pause();
}

int manifest_cmd_export(int argc, char **argv)
{
    enum { O_DIR = 1, O_SIZE, O_SHUFFLE, O_COPY, O_WORK, O_FORCE, O_JSON, O_QUIET };
    static const struct option longopts[] = {{"webdataset", required_argument, NULL, O_DIR},
                                             {"shard-size", required_argument, NULL, O_SIZE},
                                             {"shuffle", required_argument, NULL, O_SHUFFLE},
                                             {"copy-original", no_argument, NULL, O_COPY},
                                             {"work", required_argument, NULL, O_WORK},
                                             {"force", no_argument, NULL, O_FORCE},
                                             {"json", no_argument, NULL, O_JSON},
                                             {"quiet", no_argument, NULL, O_QUIET},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *prog = "lvd-manifest export";
    exp_opts o = {.shard_size = DEFAULT_SHARD_SIZE};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case O_DIR: o.dir = optarg; break;
        case O_SIZE:
            if (parse_size(optarg, &o.shard_size) != 0)
                cli_usage_errorf(prog, "--shard-size '%s': need a positive size such as 1GB, 500MB or 4096", optarg);
            break;
        case O_SHUFFLE: {
            char *end;
            errno = 0;
            o.seed = strtoull(optarg, &end, 10);
            if (!*optarg || *optarg == '-' || *end || errno)
                cli_usage_errorf(prog, "--shuffle '%s': need an unsigned integer seed", optarg);
            o.shuffle = 1;
            break;
        }
        case O_COPY: o.copy_original = 1; break;
        case O_WORK: o.work = optarg; break;
        case O_FORCE: o.force = 1; break;
        case O_JSON: o.json = 1; break;
        case O_QUIET: log_set_level(LOG_ERROR); break;
        case 'h': fputs(export_usage, stdout); return EXIT_OK;
        case ':': cli_usage_errorf(prog, "option %s needs a value", argv[optind - 1]); break;
        default: cli_usage_errorf(prog, "unknown option %s", argv[optind - 1]); break;
        }
    }
    if (optind + 1 != argc)
        cli_usage_error(prog, "give exactly one manifest file");
    if (!o.dir)
        cli_usage_error(prog, "--webdataset DIR is required");
    if (o.copy_original && !o.work)
        cli_usage_error(prog, "--copy-original needs --work W (the original bytes live in its raw shards)");
    o.manifest = argv[optind];

    int ret = EXIT_FAIL;
    exporter e = {.o = &o};
    cJSON *state = NULL, *opts = NULL, *done_shards = NULL;
    uint32_t *order = NULL;
    size_t norder = 0;
    shard_writer *w = NULL;
    char manifest_sha[SHA256_HEX];
    char state_path[4096], index_path[4096];
    snprintf(state_path, sizeof state_path, "%s/%s", o.dir, STATE_NAME);
    snprintf(index_path, sizeof index_path, "%s/%s", o.dir, INDEX_NAME);

    if (manifest_open(&e.m, o.manifest) != 0 || manifest_db_open(&e.db, o.manifest) != 0 ||
        sha256_file(o.manifest, manifest_sha) != 0)
        goto fail;
    if (sqlite3_prepare_v2(e.db, "SELECT url, caption, label FROM samples WHERE id = ?1", -1, &e.st_meta, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(e.db,
                           "SELECT row, method, seed_key, rank, similarity, cluster FROM sample_sources"
                           " WHERE sample_id = ?1 ORDER BY row",
                           -1, &e.st_src, NULL) != SQLITE_OK) {
        lvd_fail("manifest %s: %s", o.manifest, sqlite3_errmsg(e.db));
        goto fail;
    }
    if (o.copy_original) {
        char cpath[4096];
        snprintf(cpath, sizeof cpath, "%s/catalog.db", o.work);
        if (catalog_open(&e.cat, cpath, CATALOG_READONLY) != 0)
            goto fail;
        e.st_orig = catalog_stmt(e.cat, "SELECT bytes, shard_id, offset FROM images WHERE sha256 = ?1");
        if (!e.st_orig)
            goto fail;
    }
    if (atomic_file_mkdirs(o.dir) != 0)
        goto fail;

    /* The previous export in DIR, if it is this one: its completed shards are kept. */
    opts = options_json(&o);
    cJSON *prev = read_json_file(state_path);
    int same = 0;
    if (prev) {
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(prev, "manifest_sha256");
        const cJSON *po = cJSON_GetObjectItemCaseSensitive(prev, "options");
        same = cJSON_IsString(ps) && !strcmp(ps->valuestring, manifest_sha) && po && cJSON_Compare(po, opts, 1);
    }
    if (!same && dir_nonempty(o.dir)) {
        if (!o.force) {
            lvd_fail("%s holds %s; use --force to replace it or choose an empty directory", o.dir,
                     prev ? "an export of another manifest or with other options" : "other files");
            cJSON_Delete(prev);
            goto fail;
        }
        remove_export(o.dir);
    }
    state = cJSON_CreateObject();
    cJSON_AddStringToObject(state, "manifest", o.manifest);
    cJSON_AddStringToObject(state, "manifest_sha256", manifest_sha);
    cJSON_AddItemToObject(state, "options", cJSON_Duplicate(opts, 1));
    done_shards = cJSON_AddArrayToObject(state, "shards");
    size_t pos = 0, kept = 0, written = 0;
    if (same) {
        /* Completed shards are kept if they still have their recorded size. */
        const cJSON *ps = cJSON_GetObjectItemCaseSensitive(prev, "shards");
        const cJSON *it;
        cJSON_ArrayForEach(it, ps)
        {
            const cJSON *pp = cJSON_GetObjectItemCaseSensitive(it, "path");
            const cJSON *pn = cJSON_GetObjectItemCaseSensitive(it, "samples");
            const cJSON *pb = cJSON_GetObjectItemCaseSensitive(it, "bytes");
            char sp[4096];
            struct stat st;
            if (!cJSON_IsString(pp) || !cJSON_IsNumber(pn) || !cJSON_IsNumber(pb))
                break;
            snprintf(sp, sizeof sp, "%s/%s", o.dir, pp->valuestring);
            if (stat(sp, &st) != 0 || (double)st.st_size != pb->valuedouble)
                break;
            cJSON_AddItemToArray(done_shards, cJSON_Duplicate(it, 1));
            pos += (size_t)pn->valuedouble;
            kept++;
        }
    }
    cJSON_Delete(prev);
    if (export_order(e.m, &o, &order, &norder) != 0)
        goto fail;
    if (pos > norder) {
        lvd_fail("%s: the recorded shards hold %zu samples, the manifest %zu", state_path, pos, norder);
        goto fail;
    }
    if (kept)
        log_info("resuming: %zu shard%s (%zu samples) already written", kept, kept == 1 ? "" : "s", pos);
    int64_t mtime = created_at_time(e.m);

    size_t shard_no = kept;
    while (pos < norder) {
        char name[64], sp[4096];
        snprintf(name, sizeof name, "shard-%06zu.tar", shard_no);
        snprintf(sp, sizeof sp, "%s/%s", o.dir, name);
        /* From its start: an incomplete shard of a killed run is rewritten (committed 0 truncates it). */
        if (shard_writer_open(&w, sp, 0) != 0)
            goto fail;
        shard_writer_set_mtime(w, mtime);
        size_t members = 0;
        while (pos < norder) {
            manifest_sample s;
            sample_members sm;
            if (prepare_sample(&e, order[pos], &s, &sm) != 0)
                goto fail;
            if (members > 0 && shard_writer_size(w) + sm.bytes > o.shard_size) {
                free(sm.json);
                break;
            }
            int rc = add_sample(&e, w, &s, &sm);
            free(sm.json);
            if (rc != 0)
                goto fail;
            members++;
            pos++;
            if (members == 1)
                test_stall(shard_no);
        }
        if (shard_writer_close(w) != 0) {
            w = NULL;
            goto fail;
        }
        w = NULL;
        char sha[SHA256_HEX];
        struct stat st;
        if (sha256_file(sp, sha) != 0)
            goto fail;
        if (stat(sp, &st) != 0) {
            lvd_fail_errno("%s", sp);
            goto fail;
        }
        cJSON *rec = cJSON_CreateObject();
        cJSON_AddStringToObject(rec, "path", name);
        cJSON_AddNumberToObject(rec, "samples", (double)members);
        cJSON_AddNumberToObject(rec, "members", (double)(members * (o.copy_original ? 3 : 2)));
        cJSON_AddNumberToObject(rec, "bytes", (double)st.st_size);
        cJSON_AddStringToObject(rec, "sha256", sha);
        cJSON_AddItemToArray(done_shards, rec);
        if (write_json_file(state_path, state) != 0)
            goto fail;
        log_info("%s: %zu samples, %lld bytes (%zu of %zu samples written)", sp, members, (long long)st.st_size,
                 pos, norder);
        shard_no++;
        written++;
    }

    cJSON *index = cJSON_CreateObject();
    cJSON_AddStringToObject(index, "manifest", o.manifest);
    cJSON_AddStringToObject(index, "manifest_sha256", manifest_sha);
    const char *mname = manifest_info(e.m, "name");
    if (mname)
        cJSON_AddStringToObject(index, "name", mname);
    else
        cJSON_AddNullToObject(index, "name");
    cJSON_AddNumberToObject(index, "samples", (double)norder);
    cJSON_AddItemToObject(index, "shards", cJSON_Duplicate(done_shards, 1));
    cJSON_AddItemToObject(index, "shuffle", cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(opts, "shuffle"), 1));
    int rc = write_json_file(index_path, index);
    cJSON_Delete(index);
    if (rc != 0)
        goto fail;
    log_info("%s: %zu samples in %d shards (%zu written, %zu kept from an earlier run)", o.dir, norder,
             cJSON_GetArraySize(done_shards), written, kept);
    if (o.json)
        printf("{\"dir\":\"%s\",\"samples\":%zu,\"shards\":%d,\"written\":%zu,\"kept\":%zu}\n", o.dir, norder,
               cJSON_GetArraySize(done_shards), written, kept);
    ret = EXIT_OK;
    goto done;
fail:
    log_error("%s", lvd_errmsg());
done:
    if (w)
        shard_writer_abandon(w);
    free(order);
    cJSON_Delete(state);
    cJSON_Delete(opts);
    sqlite3_finalize(e.st_meta);
    sqlite3_finalize(e.st_src);
    sqlite3_close(e.db);
    if (e.cat)
        catalog_close(e.cat);
    manifest_close(e.m);
    free(e.buf);
    free(e.obuf);
    return ret;
}
