/* verify.c — lvd-manifest verify: does a manifest still describe readable data?
 *
 * Always: every shard exists and holds at least the bytes the manifest recorded (a shard that has grown is
 * fine, since shards are append-only: it is noted, not failed). --deep also reads every sample and checks its
 * data_sha256, that it decodes (common/image.h) as the recorded format to the recorded width x height, and
 * each shard's sha256 over its first `bytes` bytes. Every problem is reported on its own line naming the shard
 * path or the sample key, and the run goes on; a summary follows. Exit 0 clean, 1 if anything failed, 2 usage.
 *
 * The manifest is opened with MANIFEST_OPEN_LENIENT so that bad shards are reported (all of them) rather than
 * stopping the open at the first; samples of a missing shard are counted, not listed one by one.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include "cli.h"
#include "cmds.h"
#include "image.h"
#include "manifest.h"
#include "sha256.h"

#define VERIFY_MAX_PIXELS (1ull << 28) /* decode refuses more: no working image is near this */
#define HASH_BLOCK (1u << 20)          /* bytes per read when hashing a shard */

static const char verify_usage[] =
    "usage: lvd-manifest verify M.db [--deep] [--json] [--threads N]\n"
    "\n"
    "Checks that every shard the manifest names exists with at least its recorded bytes (grown is fine: shards\n"
    "are append-only). Each problem is printed on its own line with the shard path or sample key; exit 0 when\n"
    "clean, 1 when anything failed.\n"
    "\n"
    "  --deep           also read every sample: data SHA-256, decodes as its format at its width x height;\n"
    "                   and each shard's SHA-256 over its recorded bytes\n"
    "  --threads N      threads for --deep (default: the online CPUs)\n"
    "  --json           print {\"manifest\", \"deep\", \"shards\", \"samples\", \"checked\", \"failures\": [{\"shard\"|\"key\",\n"
    "                   \"error\"}], \"grown\": [paths], \"ok\"} on stdout instead of text\n";

typedef struct vjob {
    const manifest *m;
    const uint8_t *shard_bad; /* [nshards] 1 = missing: its samples are not read */
    char **err;               /* [n] a failure message per sample, NULL when it passed */
    atomic_size_t next;
    atomic_size_t checked;
    int oom;
} vjob;

static char *dupmsg(const char *s)
{
    char *d = strdup(s);
    return d ? d : (char *)"out of memory";
}

/* One sample: checked read, then decode; returns NULL or the message (malloc'ed, without the key). */
static char *check_sample(const manifest *m, size_t i, uint8_t **buf, size_t *cap)
{
    manifest_sample s;
    manifest_sample_meta(m, i, &s);
    if (s.length > *cap) {
        uint8_t *nb = realloc(*buf, (size_t)s.length);
        if (!nb)
            return dupmsg("out of memory");
        *buf = nb;
        *cap = (size_t)s.length;
    }
    size_t len;
    if (manifest_read_checked(m, i, *buf, *cap, &len) != 0) {
        /* The reader's message starts with the key; keep what follows it. */
        const char *e = lvd_errmsg();
        if (!strncmp(e, s.key, 64) && e[64] == ':')
            e += 66;
        return dupmsg(e);
    }
    img_format f = img_sniff(*buf, len);
    char msg[512];
    if (strcmp(img_format_name(f), s.format) != 0) {
        snprintf(msg, sizeof msg, "bytes are %s, manifest records %s", img_format_name(f), s.format);
        return dupmsg(msg);
    }
    img_rgb im = {0};
    img_status st = img_decode(*buf, len, VERIFY_MAX_PIXELS, 0, 0, &im);
    if (st != IMG_OK) {
        snprintf(msg, sizeof msg, "does not decode: %s", lvd_errmsg());
        return dupmsg(msg);
    }
    uint32_t w = im.w, h = im.h;
    img_free(&im);
    if ((int64_t)w != s.width || (int64_t)h != s.height) {
        snprintf(msg, sizeof msg, "decodes to %" PRIu32 "x%" PRIu32 ", manifest records %" PRId32 "x%" PRId32, w, h,
                 s.width, s.height);
        return dupmsg(msg);
    }
    return NULL;
}

static void *verify_worker(void *arg)
{
    vjob *j = arg;
    uint8_t *buf = NULL;
    size_t cap = 0;
    size_t n = manifest_count(j->m);
    for (;;) {
        size_t i = atomic_fetch_add(&j->next, 1);
        if (i >= n)
            break;
        manifest_sample s;
        manifest_sample_meta(j->m, i, &s);
        if (j->shard_bad[s.shard])
            continue;
        j->err[i] = check_sample(j->m, i, &buf, &cap);
        atomic_fetch_add(&j->checked, 1);
    }
    free(buf);
    return NULL;
}

/* SHA-256 of the shard's first `bytes` bytes against the recorded one; NULL or a message. */
static char *check_shard_hash(const manifest *m, size_t k, uint8_t *block)
{
    uint64_t bytes = manifest_shard_bytes(m, k);
    sha256_ctx *c = sha256_new();
    if (!c)
        return dupmsg("out of memory");
    for (uint64_t off = 0; off < bytes;) {
        size_t len = bytes - off < HASH_BLOCK ? (size_t)(bytes - off) : HASH_BLOCK;
        if (manifest_shard_pread(m, k, off, block, len) != 0) {
            uint8_t d[SHA256_BYTES];
            sha256_final(c, d);
            return dupmsg(lvd_errmsg());
        }
        sha256_update(c, block, len);
        off += len;
    }
    uint8_t d[SHA256_BYTES];
    char hex[SHA256_HEX];
    sha256_final(c, d);
    sha256_to_hex(d, hex);
    if (strcmp(hex, manifest_shard_sha256(m, k)) != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "SHA-256 of its first %" PRIu64 " bytes is %s, manifest records %s", bytes, hex,
                 manifest_shard_sha256(m, k));
        return dupmsg(msg);
    }
    return NULL;
}

int manifest_cmd_verify(int argc, char **argv)
{
    enum { O_DEEP = 1, O_JSON, O_THREADS };
    static const struct option longopts[] = {{"deep", no_argument, NULL, O_DEEP},
                                             {"json", no_argument, NULL, O_JSON},
                                             {"threads", required_argument, NULL, O_THREADS},
                                             {"help", no_argument, NULL, 'h'},
                                             {NULL, 0, NULL, 0}};
    const char *prog = "lvd-manifest verify";
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int deep = 0, json = 0, threads = ncpu > 0 && ncpu <= 64 ? (int)ncpu : 2, ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case O_DEEP: deep = 1; break;
        case O_JSON: json = 1; break;
        case O_THREADS: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 1024)
                cli_usage_errorf(prog, "--threads '%s': need 1..1024", optarg);
            threads = (int)v;
            break;
        }
        case 'h': fputs(verify_usage, stdout); return EXIT_OK;
        case ':': cli_usage_errorf(prog, "option %s needs a value", argv[optind - 1]); break;
        default: cli_usage_errorf(prog, "unknown option %s", argv[optind - 1]); break;
        }
    }
    if (optind + 1 != argc)
        cli_usage_error(prog, "give exactly one manifest file");
    const char *path = argv[optind];
    manifest *m;
    if (manifest_open_flags(&m, path, MANIFEST_OPEN_LENIENT) != 0) {
        /* The file itself is unusable: one failure, nothing more to check. */
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "manifest", path);
            cJSON *fa = cJSON_AddArrayToObject(o, "failures");
            cJSON *f = cJSON_CreateObject();
            cJSON_AddStringToObject(f, "manifest", path);
            cJSON_AddStringToObject(f, "error", lvd_errmsg());
            cJSON_AddItemToArray(fa, f);
            cJSON_AddBoolToObject(o, "ok", 0);
            char *t = cJSON_PrintUnformatted(o);
            if (t)
                puts(t);
            free(t);
            cJSON_Delete(o);
        } else {
            printf("FAIL %s\n", lvd_errmsg());
        }
        return EXIT_FAIL;
    }
    size_t ns = manifest_shard_count(m), n = manifest_count(m);
    cJSON *report = cJSON_CreateObject(), *failures = cJSON_CreateArray(), *grown = cJSON_CreateArray();
    size_t nfail = 0, skipped = 0;
    uint8_t *shard_bad = calloc(ns ? ns : 1, 1);
    char **err = calloc(n ? n : 1, sizeof *err);
    uint8_t *block = deep ? malloc(HASH_BLOCK) : NULL;
    if (!report || !failures || !grown || !shard_bad || !err || (deep && !block)) {
        log_error("out of memory");
        return EXIT_FAIL;
    }
    size_t *in_shard = calloc(ns ? ns : 1, sizeof *in_shard); /* samples per shard, for missing shards */
    for (size_t i = 0; i < n && in_shard; i++) {
        manifest_sample s;
        manifest_sample_meta(m, i, &s);
        in_shard[s.shard]++;
    }
#define FAIL_LINE(kind, name, msg)                                                                            \
    do {                                                                                                      \
        nfail++;                                                                                              \
        if (json) {                                                                                           \
            cJSON *f_ = cJSON_CreateObject();                                                                 \
            cJSON_AddStringToObject(f_, kind, name);                                                          \
            cJSON_AddStringToObject(f_, "error", msg);                                                        \
            cJSON_AddItemToArray(failures, f_);                                                               \
        } else {                                                                                              \
            printf("FAIL %s %s: %s\n", kind, name, msg);                                                      \
        }                                                                                                     \
    } while (0)
    for (size_t k = 0; k < ns; k++) {
        uint64_t size;
        const char *why;
        const char *sp = manifest_shard_path(m, k);
        char msg[512];
        switch (manifest_shard_status(m, k, &size, &why)) {
        case MANIFEST_SHARD_MISSING:
            shard_bad[k] = 1;
            skipped += in_shard ? in_shard[k] : 0;
            snprintf(msg, sizeof msg, "missing (%s); its %zu samples cannot be read", why, in_shard ? in_shard[k] : 0);
            FAIL_LINE("shard", sp, msg);
            continue;
        case MANIFEST_SHARD_SHORT:
            snprintf(msg, sizeof msg, "%" PRIu64 " bytes, manifest records %" PRIu64 " (truncated?)", size,
                     manifest_shard_bytes(m, k));
            FAIL_LINE("shard", sp, msg);
            continue; /* its hash cannot match; --deep still reads the samples that lie before its end */
        case MANIFEST_SHARD_GROWN:
            cJSON_AddItemToArray(grown, cJSON_CreateString(sp));
            if (!json)
                printf("note: shard %s has grown to %" PRIu64 " bytes (manifest records %" PRIu64
                       "; append-only, its samples are unchanged)\n",
                       sp, size, manifest_shard_bytes(m, k));
            break;
        case MANIFEST_SHARD_OK: break;
        }
        if (deep) {
            char *e = check_shard_hash(m, k, block);
            if (e) {
                FAIL_LINE("shard", sp, e);
                free(e);
            }
        }
    }
    size_t checked = 0;
    if (deep && n) {
        vjob j = {.m = m, .shard_bad = shard_bad, .err = err};
        atomic_init(&j.next, 0);
        atomic_init(&j.checked, 0);
        pthread_t *tid = calloc((size_t)threads, sizeof *tid);
        int started = 0;
        for (int t = 0; tid && t < threads; t++)
            if (pthread_create(&tid[t], NULL, verify_worker, &j) == 0)
                started++;
        if (started == 0)
            verify_worker(&j);
        for (int t = 0; t < started; t++)
            pthread_join(tid[t], NULL);
        free(tid);
        checked = atomic_load(&j.checked);
        for (size_t i = 0; i < n; i++) {
            if (!err[i])
                continue;
            manifest_sample s;
            manifest_sample_meta(m, i, &s);
            FAIL_LINE("key", s.key, err[i]);
            if (strcmp(err[i], "out of memory") != 0)
                free(err[i]);
        }
    }
#undef FAIL_LINE
    if (json) {
        cJSON_AddStringToObject(report, "manifest", path);
        cJSON_AddBoolToObject(report, "deep", deep);
        cJSON_AddNumberToObject(report, "shards", (double)ns);
        cJSON_AddNumberToObject(report, "samples", (double)n);
        cJSON_AddNumberToObject(report, "checked", (double)checked);
        cJSON_AddItemToObject(report, "failures", failures);
        cJSON_AddItemToObject(report, "grown", grown);
        cJSON_AddBoolToObject(report, "ok", nfail == 0);
        char *t = cJSON_PrintUnformatted(report);
        if (t)
            puts(t);
        free(t);
    } else {
        cJSON_Delete(failures);
        cJSON_Delete(grown);
        if (deep)
            printf("%s: %zu shards, %zu samples, %zu read and checked (%zu in missing shards): %zu failure%s\n",
                   path, ns, n, checked, skipped, nfail, nfail == 1 ? "" : "s");
        else
            printf("%s: %zu shards, %zu samples: %zu failure%s%s\n", path, ns, n, nfail, nfail == 1 ? "" : "s",
                   nfail ? "" : " (shards only; --deep reads every sample)");
    }
    cJSON_Delete(report);
    free(in_shard);
    free(block);
    free(err);
    free(shard_bad);
    manifest_close(m);
    return nfail ? EXIT_FAIL : EXIT_OK;
}
