/* lvd-dedup — removes near-duplicates inside the pool and pool images that are near-duplicates of benchmark
 * images, with the embeddings of one model, and records every decision with its evidence (catalog-003.sql).
 *
 * Two phases:
 *   search  every pool image without a decision (and not searched yet with these parameters) queries the
 *           index of all pool embeddings (k + 1 neighbours, itself dropped) and one index per benchmark
 *           collection (k neighbours). Pairs above the thresholds are stored (dedup_edges,
 *           dedup_benchmark_matches) with the image's dedup_searched row, one transaction per batch of
 *           queries, so a killed run resumes where it stopped. A partitioned run (--part I/N) searches its
 *           share of the images (by SHA-256) into its part file.
 *   decide  (one-part runs, and --merge after folding the parts) union-find over the stored edges of every
 *           decided or searched image, plus pHash pairs when asked; components that hold a newly searched
 *           image get their component and decision rows (re)written in one transaction. Components without a
 *           new image are left as they are: recomputing them would give the same rows.
 * Similarities are recomputed from the memory-mapped rows (float32 products summed in double, in index
 * order), so an edge has the same value whichever side found it and in whichever part.
 *
 * The indexes are rebuilt from the memory-mapped embeddings on every run that has something to search,
 * rather than persisted: the catalog stays the only state (a saved index could disagree with it after a
 * crash or an lvd-embed --force), every part of a partitioned run needs the whole index anyway, and adding
 * the vectors is one pass over data the search reads regardless. What a persisted index would save is the
 * IVF training above --exact-max vectors.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "cli.h"
#include "dedup_graph.h"
#include "dedup_vec.h"
#include "knn.h"
#include "opts.h"
#include "progress.h"
#include "sha256.h"
#include "stage.h"

#define PROG "lvd-dedup"
#define MAX_BENCH 256
#define SIM_SLACK 1e-3 /* FAISS similarities within this of a threshold are recomputed exactly */

static const char usage[] =
    "Usage: lvd-dedup --work DIR --model NAME [options]\n"
    "       lvd-dedup --work DIR --model NAME [same options] --merge\n"
    "Near-duplicate removal in the pool (collections with role pool) with the embeddings of model NAME\n"
    "(lvd-embed --name), and removal of pool images that are near-duplicates of benchmark images (collections\n"
    "with role benchmark). Every decision is recorded in the catalog (dedup_decisions, dedup_components,\n"
    "dedup_edges, dedup_benchmark_matches, dedup_runs); lvd-audit shows them.\n\n"
    "  --model NAME              the embedding model (required)\n"
    "  --k N                     nearest neighbours searched per pool image, in the pool and in each\n"
    "                            benchmark (64)\n"
    "  --threshold T             pool images with cosine > T are joined (0.6)\n"
    "  --benchmark-threshold T   a pool image with cosine > T to a benchmark image is removed (0.45)\n"
    "  --benchmark-rule RULE     component: the pool image's whole component goes (DINOv2's rule);\n"
    "                            image: only the matching pool image (component)\n"
    "  --keep-rule RULE          the image a component keeps: pixels = largest original width*height, then\n"
    "                            lowest image id; bytes = largest original file, then lowest id; id = lowest\n"
    "                            image id (pixels)\n"
    "  --phash-distance D        also join images whose pHashes differ by at most D bits (0..10; off by\n"
    "                            default; 0 joins identical pHashes). Identical bytes are one image anyway.\n"
    "  --batch N                 queries per search call and committed transaction (65536): the IVF lists\n"
    "                            are scanned once per batch for all its queries, so larger is faster; a\n"
    "                            killed run redoes at most one batch\n"
    "  --exact-max N             exact (flat) search up to N pool vectors, IVF beyond (200000)\n"
    "  --factory STR             FAISS index_factory string for the approximate index (e.g. IVF4096,PQ32)\n"
    "  --nprobe N                IVF lists searched (automatic)\n"
    "  --force                   drop the model's dedup rows and recompute everything (needed to change\n"
    "                            k, thresholds or rules once decisions exist, or after benchmarks change)\n"
    "  --part I/N | --merge      partitioned search: each part searches its share of the new images into\n"
    "                            WORK/parts/dedup-I-of-N.db; --merge (with the same options) folds the parts\n"
    "                            and computes the components once\n"
    "  --config FILE.yaml  --json  --quiet | --verbose  --version  --help\n"
    "Incremental: a rerun searches only pool images without a decision and merges them into the existing\n"
    "components (a component that gains an image re-chooses its kept image); nothing new does nothing.\n";

enum {
    OPT_MODEL = OPT_FIRST_STAGE_OPTION, OPT_K, OPT_THRESHOLD, OPT_BTHRESHOLD, OPT_BRULE, OPT_KEEP, OPT_PHASH,
    OPT_BATCH, OPT_EXACT_MAX, OPT_FACTORY, OPT_NPROBE
};

static const char *const brule_names[] = {"component", "image", NULL};
enum { KEEP_PIXELS = 0, KEEP_BYTES = 1, KEEP_ID = 2 };
static const char *const keep_names[] = {"pixels", "bytes", "id", NULL};
static const char *const decision_names[] = {"kept", "duplicate", "benchmark"};
static const char *const kind_names[] = {"knn", "phash"};

typedef struct params {
    const char *model;
    int32_t k;
    double threshold, bthreshold;
    int brule, keep;
    int32_t phash; /* -1: off */
    int64_t batch;
    int64_t exact_max;
    const char *factory;
    int32_t nprobe; /* 0: automatic */
} params;

/* One pool (or benchmark) image with an embedding. */
typedef struct item {
    int64_t id;       /* images.id */
    int64_t row;      /* row in its .npy file */
    int64_t score;    /* keep-rule score */
    uint64_t phash;
    int32_t file;     /* index in the vec_files set */
    uint8_t has_phash, decided, searched, query;
    char sha[65];     /* pool images: for the part hash */
} item;

typedef struct items {
    item *v;
    int64_t n, cap;
} items;

typedef struct bench {
    int64_t id; /* collections.id */
    char name[128];
    items im;
    int64_t members; /* images in the collection, with or without an embedding */
    int64_t removed; /* pool images removed for it (summary) */
} bench;

typedef struct ctx {
    params p;
    const char *work;
    int force, json, merge;
    int64_t model_id;
    char model_sha[65];
    int32_t dim;
    char ptext[1024];
    char fp[65];
    stage st;
    vec_files vf;
    items pool;
    bench *b;
    int nb;
    char index_desc[512];
    /* counts for the summary */
    int64_t searched, new_decided, changed_components, edges_found, matches_found;
} ctx;

/* ---------------------------------------------------------------------------------------------------------
 * helpers
 */

static int items_push(items *s, const item *it)
{
    if (s->n == s->cap) {
        int64_t cap = s->cap ? 2 * s->cap : 1024;
        item *nv = realloc(s->v, (size_t)cap * sizeof *nv);
        if (!nv)
            return lvd_fail("out of memory (%" PRId64 " images)", cap);
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = *it;
    return 0;
}

static int db_error(catalog *c, const char *what)
{
    return lvd_fail("%s: %s: %s", catalog_path(c), what, sqlite3_errmsg(catalog_db(c)));
}

/* Maps WORK/<file> into the set and returns its index. */
static int file_index(ctx *x, const char *rel, int32_t *out)
{
    char path[STAGE_PATH_MAX + 512];
    snprintf(path, sizeof path, "%s/%s", x->work, rel);
    int32_t i = vf_find(&x->vf, path);
    if (i < 0) {
        if (vf_add(&x->vf, path) != 0)
            return -1;
        i = vf_find(&x->vf, path);
    }
    *out = i;
    return 0;
}

static int item_vec(const ctx *x, const item *it, float *out) { return vf_row(&x->vf, it->file, it->row, out); }

static int parse_phash(const char *s, uint64_t *out)
{
    if (!s || strlen(s) != 16)
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return 0;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 1;
}

/* Index of image id in a sorted item list, or -1. */
static int64_t find_item(const items *s, int64_t id)
{
    int64_t lo = 0, hi = s->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (s->v[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->n && s->v[lo].id == id ? lo : -1;
}

/* ---------------------------------------------------------------------------------------------------------
 * model, benchmarks, parameters
 */

/* The model row of catalog c and a digest of the benchmark images with embeddings (so adding benchmark
 * images or embeddings changes the fingerprint). */
static int load_model(ctx *x, catalog *c)
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT id, sha256, dim FROM models WHERE name = ?1");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, x->p.model, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            return db_error(c, "reading models");
        return lvd_fail("%s: no model named '%s' (embed the pool first: lvd-embed --name %s)", catalog_path(c),
                        x->p.model, x->p.model);
    }
    x->model_id = sqlite3_column_int64(st, 0);
    snprintf(x->model_sha, sizeof x->model_sha, "%s", (const char *)sqlite3_column_text(st, 1));
    x->dim = (int32_t)sqlite3_column_int64(st, 2);
    sqlite3_reset(st);
    if (x->dim <= 0)
        return lvd_fail("%s: model '%s' has dim %d", catalog_path(c), x->p.model, (int)x->dim);
    return 0;
}

/* Benchmark collections and their images with embeddings of the model, into x->b; digest into out. */
static int load_benchmarks(ctx *x, catalog *c, char digest[65])
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT id, name, (SELECT count(*) FROM members m WHERE m.collection_id = "
                                       "collections.id) FROM collections WHERE role = 'benchmark' ORDER BY id");
    if (!st)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (x->nb == MAX_BENCH) {
            sqlite3_reset(st);
            return lvd_fail("%s: more than %d benchmark collections", catalog_path(c), MAX_BENCH);
        }
        bench *b = &x->b[x->nb++];
        memset(b, 0, sizeof *b);
        b->id = sqlite3_column_int64(st, 0);
        snprintf(b->name, sizeof b->name, "%s", (const char *)sqlite3_column_text(st, 1));
        b->members = sqlite3_column_int64(st, 2);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return db_error(c, "reading collections");
    sha256_ctx *h = sha256_new();
    if (!h)
        return lvd_fail("out of memory");
    for (int i = 0; i < x->nb; i++) {
        bench *b = &x->b[i];
        st = catalog_stmt(c, "SELECT DISTINCT e.image_id, e.file, e.row FROM members m JOIN embeddings e ON "
                             "e.image_id = m.image_id AND e.model_id = ?2 WHERE m.collection_id = ?1 ORDER BY "
                             "e.image_id");
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, b->id);
        sqlite3_bind_int64(st, 2, x->model_id);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            item it = {.id = sqlite3_column_int64(st, 0), .row = sqlite3_column_int64(st, 2)};
            if (file_index(x, (const char *)sqlite3_column_text(st, 1), &it.file) != 0 || items_push(&b->im, &it) != 0) {
                sqlite3_reset(st);
                sha256_final(h, (uint8_t[32]){0});
                return -1;
            }
        }
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            sha256_final(h, (uint8_t[32]){0});
            return db_error(c, "reading benchmark embeddings");
        }
        char line[64];
        snprintf(line, sizeof line, "B%" PRId64 ":", b->id);
        sha256_update(h, line, strlen(line));
        for (int64_t j = 0; j < b->im.n; j++) {
            snprintf(line, sizeof line, "%" PRId64 ",", b->im.v[j].id);
            sha256_update(h, line, strlen(line));
        }
        if (b->im.n < b->members)
            log_warn("benchmark '%s': %" PRId64 " of %" PRId64 " images have no embedding of model '%s' and are "
                     "not searched (embed them with lvd-embed)", b->name, b->members - b->im.n, b->members,
                     x->p.model);
    }
    uint8_t d[32];
    sha256_final(h, d);
    sha256_to_hex(d, digest);
    return 0;
}

static void make_params(ctx *x, const char *bdigest)
{
    char ph[16], np[16];
    snprintf(ph, sizeof ph, x->p.phash < 0 ? "null" : "%d", (int)x->p.phash);
    snprintf(np, sizeof np, x->p.nprobe <= 0 ? "null" : "%d", (int)x->p.nprobe);
    snprintf(x->ptext, sizeof x->ptext,
             "{\"model\":\"%s\",\"model_sha256\":\"%s\",\"k\":%d,\"threshold\":%.17g,\"benchmark_threshold\":%.17g,"
             "\"benchmark_rule\":\"%s\",\"keep_rule\":\"%s\",\"phash_distance\":%s,\"exact_max\":%" PRId64
             ",\"factory\":%s%s%s,\"nprobe\":%s,\"benchmarks\":\"%s\"}",
             x->p.model, x->model_sha, (int)x->p.k, x->p.threshold, x->p.bthreshold, brule_names[x->p.brule],
             keep_names[x->p.keep], ph, x->p.exact_max, x->p.factory ? "\"" : "", x->p.factory ? x->p.factory : "null",
             x->p.factory ? "\"" : "", np, bdigest);
    stage_fingerprint(x->ptext, x->fp);
}

/* Existing decisions or searches of the model with other parameters: an error unless --force. */
static int check_fingerprint(ctx *x, catalog *c)
{
    sqlite3_stmt *st = catalog_stmt(
        c, "SELECT fingerprint FROM dedup_searched WHERE model_id = ?1 AND fingerprint <> ?2 UNION ALL "
           "SELECT r.fingerprint FROM dedup_runs r WHERE r.id = (SELECT max(d.dedup_run_id) FROM dedup_decisions d "
           "WHERE d.model_id = ?1) AND r.fingerprint <> ?2 LIMIT 1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    sqlite3_bind_text(st, 2, x->fp, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return db_error(c, "reading dedup state");
    /* Say what the earlier parameters were. */
    char old[512] = "unknown parameters";
    st = catalog_stmt(c, "SELECT k, threshold, benchmark_threshold, benchmark_rule, keep_rule, phash_distance, id "
                         "FROM dedup_runs WHERE model_id = ?1 ORDER BY id DESC LIMIT 1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    if (sqlite3_step(st) == SQLITE_ROW)
        snprintf(old, sizeof old, "k %d, threshold %g, benchmark threshold %g, benchmark rule %s, keep rule %s, "
                 "pHash distance %s (dedup run %lld)",
                 sqlite3_column_int(st, 0), sqlite3_column_double(st, 1), sqlite3_column_double(st, 2),
                 (const char *)sqlite3_column_text(st, 3), (const char *)sqlite3_column_text(st, 4),
                 sqlite3_column_type(st, 5) == SQLITE_NULL ? "off" : (const char *)sqlite3_column_text(st, 5),
                 (long long)sqlite3_column_int64(st, 6));
    sqlite3_reset(st);
    char ph[16];
    snprintf(ph, sizeof ph, x->p.phash < 0 ? "off" : "%d", (int)x->p.phash);
    return lvd_fail("%s: model '%s' was deduplicated with other parameters or benchmarks or embeddings (%s); this "
                    "run has k %d, threshold %g, benchmark threshold %g, benchmark rule %s, keep rule %s, pHash "
                    "distance %s. Pass the same options, or --force to recompute every decision of '%s'",
                    catalog_path(c), x->p.model, old, (int)x->p.k, x->p.threshold, x->p.bthreshold,
                    brule_names[x->p.brule], keep_names[x->p.keep], ph, x->p.model);
}

static int drop_model_rows(ctx *x, catalog *c)
{
    static const char *const sql[] = {
        "DELETE FROM dedup_decisions WHERE model_id = ?1", "DELETE FROM dedup_components WHERE model_id = ?1",
        "DELETE FROM dedup_edges WHERE model_id = ?1", "DELETE FROM dedup_benchmark_matches WHERE model_id = ?1",
        "DELETE FROM dedup_searched WHERE model_id = ?1"};
    if (catalog_begin(c) != 0)
        return -1;
    for (size_t i = 0; i < sizeof sql / sizeof *sql; i++) {
        sqlite3_stmt *st = catalog_stmt(c, sql[i]);
        if (!st)
            goto fail;
        sqlite3_bind_int64(st, 1, x->model_id);
        if (catalog_step_done(c, st) != 0)
            goto fail;
    }
    return catalog_commit(c);
fail:
    catalog_rollback(c);
    return -1;
}

/* ---------------------------------------------------------------------------------------------------------
 * the pool
 */

/* Pool images with an embedding of the model, sorted by id, from catalog src. decided/searched flags come
 * from src (ignored with --force in a partitioned run, whose catalog.db rows the merge replaces). */
static int load_pool(ctx *x, catalog *src, int use_state)
{
    x->pool.n = 0;
    sqlite3_stmt *st = catalog_stmt(
        src, "SELECT e.image_id, e.file, e.row, i.sha256, coalesce(d.width * d.height, 0), i.bytes, d.phash,"
             " EXISTS (SELECT 1 FROM dedup_decisions dd WHERE dd.model_id = ?1 AND dd.image_id = e.image_id),"
             " EXISTS (SELECT 1 FROM dedup_searched s WHERE s.model_id = ?1 AND s.image_id = e.image_id AND"
             "         s.fingerprint = ?2)"
             " FROM embeddings e JOIN images i ON i.id = e.image_id LEFT JOIN decodes d ON d.image_id = e.image_id"
             " WHERE e.model_id = ?1 AND EXISTS (SELECT 1 FROM members m JOIN collections c ON"
             "   c.id = m.collection_id WHERE m.image_id = e.image_id AND c.role = 'pool')"
             " ORDER BY e.image_id");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    sqlite3_bind_text(st, 2, x->fp, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        item it = {.id = sqlite3_column_int64(st, 0), .row = sqlite3_column_int64(st, 2)};
        snprintf(it.sha, sizeof it.sha, "%s", (const char *)sqlite3_column_text(st, 3));
        it.score = x->p.keep == KEEP_PIXELS ? sqlite3_column_int64(st, 4)
                   : x->p.keep == KEEP_BYTES ? sqlite3_column_int64(st, 5)
                                             : 0;
        it.has_phash = (uint8_t)parse_phash((const char *)sqlite3_column_text(st, 6), &it.phash);
        it.decided = use_state && sqlite3_column_int(st, 7);
        it.searched = use_state && sqlite3_column_int(st, 8);
        if (file_index(x, (const char *)sqlite3_column_text(st, 1), &it.file) != 0 || items_push(&x->pool, &it) != 0) {
            sqlite3_reset(st);
            return -1;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return db_error(src, "reading pool embeddings");
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * search
 */

/* An index over the vectors of s (ids = positions in s), built in batches from the mapped rows. */
static int build_index(ctx *x, const items *s, int64_t exact_max, knn_index **out)
{
    *out = NULL;
    knn_opts o;
    knn_opts_default(&o);
    if (exact_max > 0)
        o.exact_max = exact_max;
    o.factory = x->p.factory;
    if (x->p.nprobe > 0)
        o.nprobe = x->p.nprobe;
    knn_index *ix = NULL;
    if (knn_create(x->dim, s->n, &o, &ix) != 0)
        return -1;
    int64_t bs = o.batch > 0 ? o.batch : 65536;
    float *buf = malloc((size_t)bs * (size_t)x->dim * sizeof *buf);
    int64_t *ids = malloc((size_t)bs * sizeof *ids);
    if (!buf || !ids) {
        lvd_fail("out of memory for an index batch of %" PRId64 " rows", bs);
        goto fail;
    }
    if (knn_needs_training(ix)) {
        /* An evenly spaced sample, in batches of at most bs rows. */
        int64_t m = o.train_max > 0 && o.train_max < s->n ? o.train_max : s->n;
        float *tb = malloc((size_t)m * (size_t)x->dim * sizeof *tb);
        if (!tb) {
            lvd_fail("out of memory for a training sample of %" PRId64 " rows", m);
            goto fail;
        }
        for (int64_t i = 0; i < m; i++)
            if (item_vec(x, &s->v[(int64_t)((double)i * (double)s->n / (double)m)], tb + (size_t)i * (size_t)x->dim) != 0) {
                free(tb);
                goto fail;
            }
        int r = knn_train(ix, tb, m);
        free(tb);
        if (r != 0)
            goto fail;
    }
    for (int64_t at = 0; at < s->n; at += bs) {
        int64_t n = s->n - at < bs ? s->n - at : bs;
        for (int64_t i = 0; i < n; i++) {
            ids[i] = at + i;
            if (item_vec(x, &s->v[at + i], buf + (size_t)i * (size_t)x->dim) != 0)
                goto fail;
        }
        if (knn_add(ix, buf, ids, n) != 0)
            goto fail;
    }
    free(buf);
    free(ids);
    *out = ix;
    return 0;
fail:
    free(buf);
    free(ids);
    knn_free(ix);
    return -1;
}

/* A k-NN edge found in the current batch (a < b: image ids). */
typedef struct found_edge {
    int64_t a, b;
    double sim;
} found_edge;

static int found_edge_order(const void *pa, const void *pb)
{
    const found_edge *x = pa, *y = pb;
    if (x->a != y->a)
        return x->a < y->a ? -1 : 1;
    return x->b < y->b ? -1 : x->b > y->b;
}

/* Inserts a batch's edges in (image_a, image_b) order, each pair once, and counts the new ones in
 * x->edges_found. Sorted inserts touch each B-tree page of dedup_edges once per batch instead of once per edge
 * (at 1,000,000 images with ~13 edges each, random inserts were bound by page reads). The two directions of a
 * pair found in one batch carry the same similarity (computed in image id order). */
static int insert_edges(ctx *x, found_edge *fe, int64_t n)
{
    qsort(fe, (size_t)n, sizeof *fe, found_edge_order);
    for (int64_t i = 0; i < n; i++) {
        if (i > 0 && fe[i].a == fe[i - 1].a && fe[i].b == fe[i - 1].b)
            continue;
        sqlite3_stmt *st = catalog_stmt(x->st.cat, "INSERT INTO dedup_edges(model_id, image_a, image_b, sim, kind) "
                                                   "VALUES (?1, ?2, ?3, ?4, 'knn') ON CONFLICT DO NOTHING");
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, x->model_id);
        sqlite3_bind_int64(st, 2, fe[i].a);
        sqlite3_bind_int64(st, 3, fe[i].b);
        sqlite3_bind_double(st, 4, fe[i].sim);
        if (catalog_step_done(x->st.cat, st) != 0)
            return -1;
        x->edges_found += sqlite3_changes(catalog_db(x->st.cat));
    }
    return 0;
}

static int insert_match(ctx *x, int64_t image, int64_t coll, int64_t bimage, double sim)
{
    sqlite3_stmt *st = catalog_stmt(x->st.cat, "INSERT INTO dedup_benchmark_matches(model_id, image_id, collection_id,"
                                               " bench_image_id, sim) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    sqlite3_bind_int64(st, 2, image);
    sqlite3_bind_int64(st, 3, coll);
    sqlite3_bind_int64(st, 4, bimage);
    sqlite3_bind_double(st, 5, sim);
    return catalog_step_done(x->st.cat, st);
}

static int mark_searched(ctx *x, int64_t image)
{
    sqlite3_stmt *st = catalog_stmt(x->st.cat, "INSERT OR REPLACE INTO dedup_searched(model_id, image_id, fingerprint) "
                                               "VALUES (?1, ?2, ?3)");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    sqlite3_bind_int64(st, 2, image);
    sqlite3_bind_text(st, 3, x->fp, -1, SQLITE_STATIC);
    return catalog_step_done(x->st.cat, st);
}

/* Searches every pool image flagged query; returns 0 or -1. */
static int search(ctx *x, int64_t nq)
{
    int32_t d = x->dim;
    knn_index *pix = NULL, **bix = calloc((size_t)(x->nb > 0 ? x->nb : 1), sizeof *bix);
    int64_t bs = x->p.batch;
    int32_t kk = x->p.k + 1; /* the image itself comes back too */
    if (kk > x->pool.n)
        kk = (int32_t)x->pool.n;
    int32_t kmax = kk > x->p.k ? kk : x->p.k;
    float *q = malloc((size_t)bs * (size_t)d * sizeof *q), *v = malloc((size_t)d * sizeof *v);
    float *sims = malloc((size_t)bs * (size_t)kmax * sizeof *sims);
    int64_t *ids = malloc((size_t)bs * (size_t)kmax * sizeof *ids), *qi = malloc((size_t)bs * sizeof *qi);
    found_edge *fe = malloc((size_t)bs * (size_t)kk * sizeof *fe); /* at most kk - 1 edges per query */
    int rc = -1;
    if (!bix || !q || !v || !sims || !ids || !qi || !fe) {
        lvd_fail("out of memory for search batches of %" PRId64 " queries", bs);
        goto out;
    }
    double t0 = progress_now();
    if (build_index(x, &x->pool, x->p.exact_max, &pix) != 0)
        goto out;
    knn_describe(pix, x->index_desc, sizeof x->index_desc);
    log_info("pool index: %s (built in %.1f s)", x->index_desc, progress_now() - t0);
    for (int b = 0; b < x->nb; b++) {
        if (x->b[b].im.n == 0)
            continue;
        if (build_index(x, &x->b[b].im, 0, &bix[b]) != 0)
            goto out;
        char desc[512];
        knn_describe(bix[b], desc, sizeof desc);
        log_info("benchmark '%s' index: %s", x->b[b].name, desc);
    }
    progress prog;
    progress_init(&prog, "dedup search", (uint64_t)nq);
    int64_t next = 0;
    while (next < x->pool.n) {
        int64_t n = 0;
        for (; next < x->pool.n && n < bs; next++) {
            if (!x->pool.v[next].query)
                continue;
            if (item_vec(x, &x->pool.v[next], q + (size_t)n * (size_t)d) != 0)
                goto out;
            qi[n++] = next;
        }
        if (n == 0)
            break;
        if (catalog_begin(x->st.cat) != 0)
            goto out;
        if (knn_search(pix, q, n, kk, sims, ids) != 0)
            goto fail_tx;
        int64_t nfe = 0;
        for (int64_t i = 0; i < n; i++) {
            const item *me = &x->pool.v[qi[i]];
            const float *qv = q + (size_t)i * (size_t)d;
            for (int32_t j = 0; j < kk; j++) {
                int64_t id = ids[(size_t)i * (size_t)kk + (size_t)j];
                if (id < 0 || id == qi[i])
                    continue;
                if (sims[(size_t)i * (size_t)kk + (size_t)j] <= x->p.threshold - SIM_SLACK)
                    break; /* descending */
                if (item_vec(x, &x->pool.v[id], v) != 0)
                    goto fail_tx;
                /* Lower image id first, so both directions sum the same products in the same order. */
                double s = me->id < x->pool.v[id].id ? vf_dot(qv, v, d) : vf_dot(v, qv, d);
                if (s > x->p.threshold) {
                    int64_t o = x->pool.v[id].id;
                    fe[nfe++] = (found_edge){.a = me->id < o ? me->id : o, .b = me->id < o ? o : me->id, .sim = s};
                }
            }
        }
        if (insert_edges(x, fe, nfe) != 0)
            goto fail_tx;
        for (int b = 0; b < x->nb; b++) {
            if (!bix[b])
                continue;
            int32_t kb = x->p.k < x->b[b].im.n ? x->p.k : (int32_t)x->b[b].im.n;
            if (knn_search(bix[b], q, n, kb, sims, ids) != 0)
                goto fail_tx;
            for (int64_t i = 0; i < n; i++) {
                const float *qv = q + (size_t)i * (size_t)d;
                for (int32_t j = 0; j < kb; j++) {
                    int64_t id = ids[(size_t)i * (size_t)kb + (size_t)j];
                    if (id < 0)
                        continue;
                    if (sims[(size_t)i * (size_t)kb + (size_t)j] <= x->p.bthreshold - SIM_SLACK)
                        break;
                    if (item_vec(x, &x->b[b].im.v[id], v) != 0)
                        goto fail_tx;
                    double s = vf_dot(qv, v, d);
                    if (s > x->p.bthreshold) {
                        if (insert_match(x, x->pool.v[qi[i]].id, x->b[b].id, x->b[b].im.v[id].id, s) != 0)
                            goto fail_tx;
                        x->matches_found++;
                    }
                }
            }
        }
        for (int64_t i = 0; i < n; i++) {
            if (mark_searched(x, x->pool.v[qi[i]].id) != 0)
                goto fail_tx;
            x->pool.v[qi[i]].searched = 1;
        }
        if (catalog_commit(x->st.cat) != 0)
            goto fail_tx;
        x->searched += n;
        progress_update(&prog, (uint64_t)x->searched, 0);
    }
    progress_finish(&prog);
    rc = 0;
    goto out;
fail_tx:
    catalog_rollback(x->st.cat);
out:
    knn_free(pix);
    for (int b = 0; bix && b < x->nb; b++)
        knn_free(bix[b]);
    free(bix);
    free(q);
    free(v);
    free(sims);
    free(ids);
    free(qi);
    free(fe);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------------
 * decide
 */

typedef struct bmatch {
    double sim;
    int64_t coll, bimage;
} bmatch;

static int edge_pair_order(const void *pa, const void *pb)
{
    const dg_edge *x = pa, *y = pb;
    if (x->a != y->a)
        return x->a < y->a ? -1 : 1;
    if (x->b != y->b)
        return x->b < y->b ? -1 : 1;
    return x->kind - y->kind; /* knn before phash */
}

static int push_edge(dg_edge **e, int64_t *n, int64_t *cap, dg_edge v)
{
    if (*n == *cap) {
        int64_t c = *cap ? 2 * *cap : 4096;
        dg_edge *ne = realloc(*e, (size_t)c * sizeof *ne);
        if (!ne)
            return lvd_fail("out of memory (%" PRId64 " edges)", c);
        *e = ne;
        *cap = c;
    }
    (*e)[(*n)++] = v;
    return 0;
}

/* The nodes: pool images decided or searched; node i = x->pool.v[node[i]]. */
static int decide(ctx *x, catalog *c)
{
    int rc = -1;
    int32_t d = x->dim;
    int64_t nn = 0, nnew = 0;
    for (int64_t i = 0; i < x->pool.n; i++) {
        nn += x->pool.v[i].decided || x->pool.v[i].searched;
        nnew += !x->pool.v[i].decided && x->pool.v[i].searched;
    }
    if (nnew == 0)
        return 0;
    if (nn > INT32_MAX)
        return lvd_fail("%" PRId64 " pool images exceed the int32 node index", nn);
    int64_t *node = malloc((size_t)nn * sizeof *node);
    items nodes = {0}; /* copies of the node items, sorted by id (for id -> node lookups) */
    int64_t *score = malloc((size_t)nn * sizeof *score);
    uint8_t *has_bench = calloc((size_t)nn, 1), *has_ph = calloc((size_t)nn, 1);
    double *bsim = malloc((size_t)nn * sizeof *bsim);
    bmatch *bm = calloc((size_t)nn, sizeof *bm);
    uint64_t *ph = malloc((size_t)nn * sizeof *ph);
    float *va = malloc((size_t)d * sizeof *va), *vb = malloc((size_t)d * sizeof *vb);
    int64_t *old_comp = malloc((size_t)nn * sizeof *old_comp);
    dg_edge *e = NULL, *pe = NULL;
    int64_t ne = 0, ecap = 0, npe = 0;
    dg_result r = {0};
    int in_tx = 0;
    if (!node || !score || !has_bench || !has_ph || !bsim || !bm || !ph || !va || !vb || !old_comp) {
        lvd_fail("out of memory for %" PRId64 " pool images", nn);
        goto out;
    }
    nodes.v = malloc((size_t)nn * sizeof *nodes.v);
    if (!nodes.v) {
        lvd_fail("out of memory for %" PRId64 " pool images", nn);
        goto out;
    }
    for (int64_t i = 0, j = 0; i < x->pool.n; i++) {
        const item *it = &x->pool.v[i];
        if (!(it->decided || it->searched))
            continue;
        node[j] = i;
        nodes.v[j] = *it;
        score[j] = it->score;
        ph[j] = it->phash;
        has_ph[j] = it->has_phash;
        old_comp[j] = -1;
        j++;
    }
    nodes.n = nodes.cap = nn;
    /* Stored edges between nodes. */
    sqlite3_stmt *st = catalog_stmt(c, "SELECT image_a, image_b, sim, kind, phash_dist FROM dedup_edges WHERE model_id = ?1");
    if (!st)
        goto out;
    sqlite3_bind_int64(st, 1, x->model_id);
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t a = find_item(&nodes, sqlite3_column_int64(st, 0)), b = find_item(&nodes, sqlite3_column_int64(st, 1));
        if (a < 0 || b < 0)
            continue;
        const char *kind = (const char *)sqlite3_column_text(st, 3);
        dg_edge v = {.a = (int32_t)a, .b = (int32_t)b, .sim = sqlite3_column_double(st, 2),
                     .kind = kind && strcmp(kind, "phash") == 0 ? DG_PHASH : DG_KNN,
                     .phash_dist = sqlite3_column_type(st, 4) == SQLITE_NULL ? -1 : sqlite3_column_int(st, 4)};
        if (push_edge(&e, &ne, &ecap, v) != 0) {
            sqlite3_reset(st);
            goto out;
        }
    }
    sqlite3_reset(st);
    if (src != SQLITE_DONE) {
        db_error(c, "reading dedup_edges");
        goto out;
    }
    /* Benchmark matches: each node's strongest (sim descending, then collection and image ids ascending). */
    st = catalog_stmt(c, "SELECT image_id, collection_id, bench_image_id, sim FROM dedup_benchmark_matches "
                         "WHERE model_id = ?1 ORDER BY image_id, sim DESC, collection_id, bench_image_id");
    if (!st)
        goto out;
    sqlite3_bind_int64(st, 1, x->model_id);
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t a = find_item(&nodes, sqlite3_column_int64(st, 0));
        if (a < 0 || has_bench[a])
            continue;
        has_bench[a] = 1;
        bm[a] = (bmatch){.coll = sqlite3_column_int64(st, 1), .bimage = sqlite3_column_int64(st, 2),
                         .sim = sqlite3_column_double(st, 3)};
        bsim[a] = bm[a].sim;
    }
    sqlite3_reset(st);
    if (src != SQLITE_DONE) {
        db_error(c, "reading dedup_benchmark_matches");
        goto out;
    }
    /* Old components, to drop their rows when they merge into a changed one. */
    st = catalog_stmt(c, "SELECT image_id, component FROM dedup_decisions WHERE model_id = ?1");
    if (!st)
        goto out;
    sqlite3_bind_int64(st, 1, x->model_id);
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t a = find_item(&nodes, sqlite3_column_int64(st, 0));
        if (a >= 0)
            old_comp[a] = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    if (src != SQLITE_DONE) {
        db_error(c, "reading dedup_decisions");
        goto out;
    }
    if (catalog_begin(c) != 0)
        goto out;
    in_tx = 1;
    /* pHash pairs touching a new node: cosine filled in, stored, and merged with the k-NN edges. */
    if (x->p.phash >= 0) {
        if (dg_phash_pairs(ph, has_ph, (int32_t)nn, x->p.phash, &pe, &npe) != 0)
            goto out;
        int64_t added = 0;
        for (int64_t i = 0; i < npe; i++) {
            const item *ia = &nodes.v[pe[i].a], *ib = &nodes.v[pe[i].b];
            if (ia->decided && ib->decided)
                continue;
            if (item_vec(x, ia, va) != 0 || item_vec(x, ib, vb) != 0)
                goto out;
            pe[i].sim = vf_dot(va, vb, d);
            st = catalog_stmt(c, "INSERT INTO dedup_edges(model_id, image_a, image_b, sim, kind, phash_dist) "
                                 "VALUES (?1, ?2, ?3, ?4, 'phash', ?5) ON CONFLICT(model_id, image_a, image_b) "
                                 "DO UPDATE SET phash_dist = excluded.phash_dist");
            if (!st)
                goto out;
            sqlite3_bind_int64(st, 1, x->model_id);
            sqlite3_bind_int64(st, 2, ia->id);
            sqlite3_bind_int64(st, 3, ib->id);
            sqlite3_bind_double(st, 4, pe[i].sim);
            sqlite3_bind_int(st, 5, pe[i].phash_dist);
            if (catalog_step_done(c, st) != 0 || push_edge(&e, &ne, &ecap, pe[i]) != 0)
                goto out;
            added++;
        }
        /* One edge per pair: the k-NN edge (sorted first) takes the pHash distance of a pHash duplicate. */
        qsort(e, (size_t)ne, sizeof *e, edge_pair_order);
        int64_t w = 0;
        for (int64_t i = 0; i < ne; i++) {
            if (w > 0 && e[w - 1].a == e[i].a && e[w - 1].b == e[i].b) {
                if (e[i].phash_dist >= 0)
                    e[w - 1].phash_dist = e[i].phash_dist;
                continue;
            }
            e[w++] = e[i];
        }
        ne = w;
        log_info("pHash distance <= %d: %" PRId64 " pairs, %" PRId64 " with a new image", (int)x->p.phash, npe, added);
    }
    dg_input in = {.n = (int32_t)nn, .score = score, .has_bench = has_bench, .bench_sim = bsim,
                   .bench_rule = x->p.brule == 0 ? DG_RULE_COMPONENT : DG_RULE_IMAGE};
    if (dg_compute(&in, e, ne, &r) != 0)
        goto out;
    /* The dedup run row. */
    char now[32];
    catalog_now(now);
    st = catalog_stmt(c, "INSERT INTO dedup_runs(run_id, model_id, fingerprint, k, threshold, benchmark_threshold,"
                         " benchmark_rule, keep_rule, phash_distance, index_desc, new_images, forced, created_at)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)");
    if (!st)
        goto out;
    sqlite3_bind_int64(st, 1, x->st.run_id);
    sqlite3_bind_int64(st, 2, x->model_id);
    sqlite3_bind_text(st, 3, x->fp, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, x->p.k);
    sqlite3_bind_double(st, 5, x->p.threshold);
    sqlite3_bind_double(st, 6, x->p.bthreshold);
    sqlite3_bind_text(st, 7, brule_names[x->p.brule], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, keep_names[x->p.keep], -1, SQLITE_STATIC);
    if (x->p.phash >= 0)
        sqlite3_bind_int(st, 9, x->p.phash);
    if (x->index_desc[0])
        sqlite3_bind_text(st, 10, x->index_desc, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 11, nnew);
    sqlite3_bind_int(st, 12, x->force);
    sqlite3_bind_text(st, 13, now, -1, SQLITE_STATIC);
    if (catalog_step_done(c, st) != 0)
        goto out;
    int64_t drun = sqlite3_last_insert_rowid(catalog_db(c));
    /* Components holding a new node. */
    uint8_t *changed = calloc((size_t)nn, 1);
    if (!changed) {
        lvd_fail("out of memory");
        goto out;
    }
    for (int64_t i = 0; i < nn; i++)
        if (!nodes.v[i].decided)
            changed[r.comp[i]] = 1;
    int64_t nchanged = 0;
    /* First drop the rows of the old components merged into changed ones (a new component may reuse an old
     * id), then write. */
    for (int64_t i = 0; i < nn; i++) {
        if (!changed[r.comp[i]] || old_comp[i] < 0)
            continue;
        st = catalog_stmt(c, "DELETE FROM dedup_components WHERE model_id = ?1 AND component = ?2");
        if (!st)
            goto out_changed;
        sqlite3_bind_int64(st, 1, x->model_id);
        sqlite3_bind_int64(st, 2, old_comp[i]);
        if (catalog_step_done(c, st) != 0)
            goto out_changed;
    }
    for (int64_t i = 0; i < nn; i++) {
        if (!changed[r.comp[i]])
            continue;
        int32_t cmp = r.comp[i], kept = r.kept[cmp];
        st = catalog_stmt(c, "INSERT OR REPLACE INTO dedup_decisions(model_id, image_id, decision, component,"
                             " kept_image_id, kept_sim, edge_image_id, edge_sim, edge_kind, bench_image_id,"
                             " bench_collection_id, bench_sim, bench_via_image_id, dedup_run_id)"
                             " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)");
        if (!st)
            goto out_changed;
        sqlite3_bind_int64(st, 1, x->model_id);
        sqlite3_bind_int64(st, 2, nodes.v[i].id);
        sqlite3_bind_text(st, 3, decision_names[r.decision[i]], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, nodes.v[cmp].id);
        if (kept >= 0) {
            sqlite3_bind_int64(st, 5, nodes.v[kept].id);
            double ks = 1.0;
            if (kept != i) {
                if (item_vec(x, &nodes.v[i], va) != 0 || item_vec(x, &nodes.v[kept], vb) != 0)
                    goto out_changed;
                ks = kept > i ? vf_dot(va, vb, d) : vf_dot(vb, va, d);
            }
            sqlite3_bind_double(st, 6, ks);
        }
        if (r.edge[i] >= 0) {
            const dg_edge *ed = &e[r.edge[i]];
            sqlite3_bind_int64(st, 7, nodes.v[ed->a == i ? ed->b : ed->a].id);
            sqlite3_bind_double(st, 8, ed->sim);
            sqlite3_bind_text(st, 9, kind_names[ed->kind], -1, SQLITE_STATIC);
        }
        int32_t via = r.decision[i] == DG_BENCHMARK ? r.bench_via[i] : has_bench[i] ? (int32_t)i : -1;
        if (via >= 0) {
            sqlite3_bind_int64(st, 10, bm[via].bimage);
            sqlite3_bind_int64(st, 11, bm[via].coll);
            sqlite3_bind_double(st, 12, bm[via].sim);
            sqlite3_bind_int64(st, 13, nodes.v[via].id);
        }
        sqlite3_bind_int64(st, 14, drun);
        if (catalog_step_done(c, st) != 0)
            goto out_changed;
        if (!nodes.v[i].decided)
            x->new_decided++;
        if (r.comp[i] != i)
            continue;
        /* The component row, once, at its smallest member. */
        nchanged++;
        st = catalog_stmt(c, "INSERT OR REPLACE INTO dedup_components(model_id, component, size, kept_image_id,"
                             " removed_duplicate, removed_benchmark, weakest_sim, weakest_a, weakest_b, weakest_kind,"
                             " strongest_sim, bench_image_id, bench_via_image_id, bench_sim, dedup_run_id)"
                             " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)");
        if (!st)
            goto out_changed;
        sqlite3_bind_int64(st, 1, x->model_id);
        sqlite3_bind_int64(st, 2, nodes.v[i].id);
        sqlite3_bind_int(st, 3, r.size[i]);
        if (kept >= 0)
            sqlite3_bind_int64(st, 4, nodes.v[kept].id);
        sqlite3_bind_int(st, 5, r.removed_dup[i]);
        sqlite3_bind_int(st, 6, r.removed_bench[i]);
        if (r.weakest[i] >= 0) {
            const dg_edge *w = &e[r.weakest[i]];
            sqlite3_bind_double(st, 7, w->sim);
            sqlite3_bind_int64(st, 8, nodes.v[w->a].id);
            sqlite3_bind_int64(st, 9, nodes.v[w->b].id);
            sqlite3_bind_text(st, 10, kind_names[w->kind], -1, SQLITE_STATIC);
            sqlite3_bind_double(st, 11, e[r.strongest[i]].sim);
        }
        int32_t bb = r.best_bench[i];
        if (bb >= 0) {
            sqlite3_bind_int64(st, 12, bm[bb].bimage);
            sqlite3_bind_int64(st, 13, nodes.v[bb].id);
            sqlite3_bind_double(st, 14, bm[bb].sim);
        }
        sqlite3_bind_int64(st, 15, drun);
        if (catalog_step_done(c, st) != 0)
            goto out_changed;
    }
    free(changed);
    changed = NULL;
    x->changed_components = nchanged;
    /* Stamp what this run found with its dedup run, and record the counts. */
    static const char *const stamp[] = {
        "UPDATE dedup_edges SET dedup_run_id = ?2 WHERE model_id = ?1 AND dedup_run_id IS NULL",
        "UPDATE dedup_benchmark_matches SET dedup_run_id = ?2 WHERE model_id = ?1 AND dedup_run_id IS NULL",
        "UPDATE dedup_runs SET changed_components = ?3 WHERE id = ?2"};
    for (size_t i = 0; i < sizeof stamp / sizeof *stamp; i++) {
        st = catalog_stmt(c, stamp[i]);
        if (!st)
            goto out;
        sqlite3_bind_int64(st, 1, x->model_id);
        sqlite3_bind_int64(st, 2, drun);
        if (i == 2)
            sqlite3_bind_int64(st, 3, nchanged);
        if (catalog_step_done(c, st) != 0)
            goto out;
    }
    if (catalog_commit(c) != 0)
        goto out;
    in_tx = 0;
    for (int64_t i = 0; i < nn; i++)
        x->pool.v[node[i]].decided = 1;
    rc = 0;
    goto out;
out_changed:
    free(changed);
out:
    if (in_tx)
        catalog_rollback(c);
    dg_result_free(&r);
    free(node);
    free(nodes.v);
    free(score);
    free(has_bench);
    free(has_ph);
    free(bsim);
    free(bm);
    free(ph);
    free(va);
    free(vb);
    free(old_comp);
    free(e);
    free(pe);
    return rc;
}

/* ---------------------------------------------------------------------------------------------------------
 * summary
 */

static cJSON *summary(ctx *x, catalog *c, int decided_here)
{
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "stage", "dedup");
    cJSON_AddStringToObject(s, "part", x->st.part_text);
    cJSON_AddStringToObject(s, "model", x->p.model);
    cJSON_AddNumberToObject(s, "pool_images", (double)x->pool.n);
    cJSON_AddNumberToObject(s, "searched", (double)x->searched);
    cJSON_AddNumberToObject(s, "new", (double)x->new_decided);
    cJSON_AddNumberToObject(s, "edges_found", (double)x->edges_found);
    cJSON_AddNumberToObject(s, "benchmark_matches_found", (double)x->matches_found);
    cJSON_AddStringToObject(s, "index", x->index_desc[0] ? x->index_desc : "none (nothing searched)");
    if (!decided_here)
        return s;
    int64_t v = 0;
    struct {
        const char *key, *sql;
    } q[] = {
        {"decided", "SELECT count(*) FROM dedup_decisions WHERE model_id = ?1"},
        {"components", "SELECT count(*) FROM dedup_components WHERE model_id = ?1"},
        {"components_multi", "SELECT count(*) FROM dedup_components WHERE model_id = ?1 AND size > 1"},
        {"kept", "SELECT count(*) FROM dedup_decisions WHERE model_id = ?1 AND decision = 'kept'"},
        {"removed_duplicate", "SELECT count(*) FROM dedup_decisions WHERE model_id = ?1 AND decision = 'duplicate'"},
        {"removed_benchmark", "SELECT count(*) FROM dedup_decisions WHERE model_id = ?1 AND decision = 'benchmark'"},
    };
    for (size_t i = 0; i < sizeof q / sizeof *q; i++) {
        sqlite3_stmt *st = catalog_stmt(c, q[i].sql);
        if (!st)
            continue;
        sqlite3_bind_int64(st, 1, x->model_id);
        v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
        sqlite3_reset(st);
        cJSON_AddNumberToObject(s, q[i].key, (double)v);
    }
    cJSON_AddNumberToObject(s, "undecided", (double)(x->pool.n - (int64_t)cJSON_GetObjectItem(s, "decided")->valuedouble));
    cJSON *per = cJSON_AddObjectToObject(s, "removed_per_benchmark");
    for (int b = 0; b < x->nb; b++) {
        sqlite3_stmt *st = catalog_stmt(c, "SELECT count(*) FROM dedup_decisions WHERE model_id = ?1 AND "
                                           "decision = 'benchmark' AND bench_collection_id = ?2");
        if (!st)
            continue;
        sqlite3_bind_int64(st, 1, x->model_id);
        sqlite3_bind_int64(st, 2, x->b[b].id);
        x->b[b].removed = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
        sqlite3_reset(st);
        cJSON_AddNumberToObject(per, x->b[b].name, (double)x->b[b].removed);
    }
    return s;
}

/* ---------------------------------------------------------------------------------------------------------
 * main
 */

/* Opens catalog.db (read-write unless ro), reads the model and benchmarks, and sets the fingerprint. */
static int prepare(ctx *x, int ro)
{
    char path[STAGE_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/catalog.db", x->work);
    FILE *f = fopen(path, "rb");
    if (!f)
        return lvd_fail("%s: no catalog (import, decode and embed a pool first)", path);
    fclose(f);
    catalog *c = NULL;
    if (catalog_open(&c, path, ro ? CATALOG_READONLY : 0) != 0)
        return -1;
    char digest[65];
    int rc = -1;
    if (load_model(x, c) == 0) {
        vf_init(&x->vf, x->dim);
        if (load_benchmarks(x, c, digest) == 0) {
            make_params(x, digest);
            rc = 0;
            if (!x->force && check_fingerprint(x, c) != 0)
                rc = -1;
            else if (x->force && !ro && drop_model_rows(x, c) != 0)
                rc = -1;
        }
    }
    catalog_close(c);
    return rc;
}

int main(int argc, char **argv)
{
    int ac;
    char **av;
    cli_begin(PROG, argc, argv, &ac, &av);
    static const struct option longopts[] = {
        CLI_COMMON_OPTIONS,
        CLI_STAGE_OPTIONS,
        {"model", required_argument, NULL, OPT_MODEL},
        {"k", required_argument, NULL, OPT_K},
        {"threshold", required_argument, NULL, OPT_THRESHOLD},
        {"benchmark-threshold", required_argument, NULL, OPT_BTHRESHOLD},
        {"benchmark-rule", required_argument, NULL, OPT_BRULE},
        {"keep-rule", required_argument, NULL, OPT_KEEP},
        {"phash-distance", required_argument, NULL, OPT_PHASH},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"exact-max", required_argument, NULL, OPT_EXACT_MAX},
        {"factory", required_argument, NULL, OPT_FACTORY},
        {"nprobe", required_argument, NULL, OPT_NPROBE},
        {NULL, 0, NULL, 0},
    };
    ctx *x = calloc(1, sizeof *x);
    bench *benches = calloc(MAX_BENCH, sizeof *benches);
    if (!x || !benches) {
        log_error("out of memory");
        return EXIT_FAIL;
    }
    x->b = benches;
    x->p = (params){.k = 64, .threshold = 0.6, .bthreshold = 0.45, .brule = 0, .keep = KEEP_PIXELS, .phash = -1,
                    .batch = 65536, .exact_max = 200000};
    cli_stage_args sa = {0}; /* --retry-failed is moot: nothing fails transiently here */
    int opt;
    optind = 1;
    while ((opt = getopt_long(ac, av, "h", longopts, NULL)) != -1) {
        if (cli_common(opt, PROG, usage, &x->work, &x->json) || cli_stage_option(opt, &sa))
            continue;
        int bad = 0;
        int64_t iv;
        switch (opt) {
        case OPT_MODEL: x->p.model = optarg; break;
        case OPT_K: bad = opt_int("--k", optarg, 1, 4096, &iv); x->p.k = (int32_t)iv; break;
        case OPT_THRESHOLD: bad = opt_double("--threshold", optarg, -1.0, 1.0, &x->p.threshold); break;
        case OPT_BTHRESHOLD: bad = opt_double("--benchmark-threshold", optarg, -1.0, 1.0, &x->p.bthreshold); break;
        case OPT_BRULE: bad = opt_choice("--benchmark-rule", optarg, brule_names, &x->p.brule); break;
        case OPT_KEEP: bad = opt_choice("--keep-rule", optarg, keep_names, &x->p.keep); break;
        case OPT_PHASH: bad = opt_int("--phash-distance", optarg, 0, DG_PHASH_MAX_DIST, &iv); x->p.phash = (int32_t)iv; break;
        case OPT_BATCH: bad = opt_int("--batch", optarg, 1, 1 << 20, &iv); x->p.batch = iv; break;
        case OPT_EXACT_MAX: bad = opt_int("--exact-max", optarg, 1, INT64_MAX, &iv); x->p.exact_max = iv; break;
        case OPT_FACTORY: x->p.factory = optarg; break;
        case OPT_NPROBE: bad = opt_int("--nprobe", optarg, 1, 1 << 20, &iv); x->p.nprobe = (int32_t)iv; break;
        default: cli_usage_error(PROG, "unknown option");
        }
        if (bad)
            cli_usage_error(PROG, lvd_errmsg());
    }
    const char *part_arg = sa.part;
    x->merge = sa.merge;
    x->force = sa.force;
    if (!x->work)
        cli_usage_error(PROG, "--work DIR is required");
    if (!x->p.model)
        cli_usage_error(PROG, "--model NAME is required (the lvd-embed --name of the embeddings to use)");
    if (optind < ac)
        cli_usage_error(PROG, "unexpected argument");
    if (x->merge && part_arg)
        cli_usage_error(PROG, "--merge folds the parts: no --part");
    lvd_part pp;
    if (!x->merge && part_resolve(part_arg, &pp) != 0)
        cli_usage_error(PROG, lvd_errmsg());
    int parted = !x->merge && pp.count > 1;

    int rc = EXIT_FAIL, stage_opened = 0, decided_here = 0;
    cJSON *sum = NULL;
    if (prepare(x, parted) != 0)
        goto out;
    if (x->merge) {
        int n;
        if (stage_merge("dedup", x->work, &n) != 0)
            goto out;
        log_info("merged %d part file%s", n, n == 1 ? "" : "s");
    }
    if (stage_open(&x->st, "dedup", x->work, x->merge ? "0/1" : part_arg, x->ptext, x->fp) != 0)
        goto out;
    stage_opened = 1;
    /* A larger page cache than SQLite's 2 MB default: edge inserts and the decisions of a million-image pool
     * touch hundreds of MB of B-tree pages (allocated only as used). */
    if (catalog_exec(x->st.cat, "PRAGMA cache_size = -262144") != 0)
        goto out;
    catalog *src = parted ? x->st.main_ro : x->st.cat;
    if (!src) {
        lvd_fail("%s/catalog.db: no catalog", x->work);
        goto out;
    }
    if (x->merge && !x->force && check_fingerprint(x, x->st.cat) != 0)
        goto out; /* parts searched with other options than this merge's */
    if (parted) {
        /* A part's own earlier searches with other parameters: dropped with --force, else an error. */
        if (x->force ? drop_model_rows(x, x->st.cat) != 0 : check_fingerprint(x, x->st.cat) != 0)
            goto out;
    }
    if (load_pool(x, src, !(parted && x->force)) != 0)
        goto out;
    int64_t nq = 0;
    if (!x->merge) {
        for (int64_t i = 0; i < x->pool.n; i++) {
            item *it = &x->pool.v[i];
            if (it->decided || it->searched || !part_owns(&x->st.part, it->sha, 64))
                continue;
            if (parted) {
                sqlite3_stmt *st = catalog_stmt(x->st.cat, "SELECT 1 FROM dedup_searched WHERE model_id = ?1 AND "
                                                           "image_id = ?2 AND fingerprint = ?3");
                if (!st)
                    goto out;
                sqlite3_bind_int64(st, 1, x->model_id);
                sqlite3_bind_int64(st, 2, it->id);
                sqlite3_bind_text(st, 3, x->fp, -1, SQLITE_STATIC);
                int have = sqlite3_step(st) == SQLITE_ROW;
                sqlite3_reset(st);
                if (have)
                    continue;
            }
            it->query = 1;
            nq++;
        }
        log_info("model '%s': %" PRId64 " pool images with embeddings, %" PRId64 " to search%s%s", x->p.model,
                 x->pool.n, nq, parted ? " in part " : "", parted ? x->st.part_text : "");
        if (nq > 0 && search(x, nq) != 0)
            goto out;
    }
    if (!parted) {
        if (decide(x, x->st.cat) != 0)
            goto out;
        decided_here = 1;
    }
    sum = summary(x, x->st.cat, decided_here);
    rc = EXIT_OK;
out:
    if (rc != EXIT_OK)
        log_error("%s", lvd_errmsg());
    char *sum_text = sum ? cJSON_PrintUnformatted(sum) : NULL;
    if (stage_opened && stage_close(&x->st, rc == EXIT_OK ? "done" : "failed", sum_text) != 0) {
        log_error("%s", lvd_errmsg());
        rc = EXIT_FAIL;
    }
    if (rc == EXIT_OK) {
        if (parted)
            log_info("dedup part %s: searched %" PRId64 " pool images (%" PRId64 " edges, %" PRId64
                     " benchmark matches); run lvd-dedup --merge with the same options when every part is done",
                     x->st.part_text, x->searched, x->edges_found, x->matches_found);
        else if (x->new_decided == 0)
            log_info("dedup: 0 new pool images for model '%s'", x->p.model);
        else {
            cJSON *g;
            double dup = (g = cJSON_GetObjectItem(sum, "removed_duplicate")) ? g->valuedouble : 0;
            double ben = (g = cJSON_GetObjectItem(sum, "removed_benchmark")) ? g->valuedouble : 0;
            double kept = (g = cJSON_GetObjectItem(sum, "kept")) ? g->valuedouble : 0;
            double comps = (g = cJSON_GetObjectItem(sum, "components")) ? g->valuedouble : 0;
            log_info("dedup: %" PRId64 " new pool images decided; model '%s': %.0f components, %.0f kept, %.0f "
                     "removed as duplicates, %.0f removed for benchmarks",
                     x->new_decided, x->p.model, comps, kept, dup, ben);
            for (int b = 0; b < x->nb; b++)
                log_info("benchmark '%s': %" PRId64 " pool images removed", x->b[b].name, x->b[b].removed);
        }
        if (x->json && sum_text)
            printf("%s\n", sum_text);
    }
    free(sum_text);
    cJSON_Delete(sum);
    vf_free(&x->vf);
    free(x->pool.v);
    for (int b = 0; b < x->nb; b++)
        free(x->b[b].im.v);
    free(benches);
    free(x);
    config_free_argv(ac, av);
    return rc;
}
