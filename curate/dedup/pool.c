/* pool.c — the model, benchmarks, pool and parameters of an lvd-dedup run, from the catalog (see
 * pool.h). */
#include "pool.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "sha256.h"

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

/* The model row of catalog c and a digest of the benchmark images with embeddings (so adding benchmark
 * images or embeddings changes the fingerprint). */
int dedup_pool_load_model(dedup_ctx *x, catalog *c)
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT id, sha256, dim FROM models WHERE name = ?1");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, x->p.model, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            return dedup_db_error(c, "reading models");
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
int dedup_pool_load_benchmarks(dedup_ctx *x, catalog *c, char digest[65])
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT id, name, (SELECT count(*) FROM members m WHERE m.collection_id = "
                                       "collections.id) FROM collections WHERE role = 'benchmark' ORDER BY id");
    if (!st)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (x->nb == DEDUP_MAX_BENCH) {
            sqlite3_reset(st);
            return lvd_fail("%s: more than %d benchmark collections", catalog_path(c), DEDUP_MAX_BENCH);
        }
        dedup_bench *b = &x->b[x->nb++];
        memset(b, 0, sizeof *b);
        b->id = sqlite3_column_int64(st, 0);
        snprintf(b->name, sizeof b->name, "%s", (const char *)sqlite3_column_text(st, 1));
        b->members = sqlite3_column_int64(st, 2);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return dedup_db_error(c, "reading collections");
    sha256_ctx *h = sha256_new();
    if (!h)
        return lvd_fail("out of memory");
    for (int i = 0; i < x->nb; i++) {
        dedup_bench *b = &x->b[i];
        st = catalog_stmt(c, "SELECT DISTINCT e.image_id, e.file, e.row FROM members m JOIN embeddings e ON "
                             "e.image_id = m.image_id AND e.model_id = ?2 WHERE m.collection_id = ?1 ORDER BY "
                             "e.image_id");
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, b->id);
        sqlite3_bind_int64(st, 2, x->model_id);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            dedup_item it = {.id = sqlite3_column_int64(st, 0), .row = sqlite3_column_int64(st, 2)};
            if (vf_index(&x->vf, x->work, (const char *)sqlite3_column_text(st, 1), &it.file) != 0 ||
                dedup_items_push(&b->im, &it) != 0) {
                sqlite3_reset(st);
                sha256_final(h, (uint8_t[32]){0});
                return -1;
            }
        }
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) {
            sha256_final(h, (uint8_t[32]){0});
            return dedup_db_error(c, "reading benchmark embeddings");
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

void dedup_pool_make_params(dedup_ctx *x, const char *bdigest)
{
    char ph[16], np[16];
    snprintf(ph, sizeof ph, x->p.phash < 0 ? "null" : "%d", (int)x->p.phash);
    snprintf(np, sizeof np, x->p.nprobe <= 0 ? "null" : "%d", (int)x->p.nprobe);
    snprintf(x->ptext, sizeof x->ptext,
             "{\"model\":\"%s\",\"model_sha256\":\"%s\",\"k\":%d,\"threshold\":%.17g,\"benchmark_threshold\":%.17g,"
             "\"benchmark_rule\":\"%s\",\"keep_rule\":\"%s\",\"phash_distance\":%s,\"exact_max\":%" PRId64
             ",\"factory\":%s%s%s,\"nprobe\":%s,\"benchmarks\":\"%s\"}",
             x->p.model, x->model_sha, (int)x->p.k, x->p.threshold, x->p.bthreshold, dedup_brule_names[x->p.brule],
             dedup_keep_names[x->p.keep], ph, x->p.exact_max, x->p.factory ? "\"" : "",
             x->p.factory ? x->p.factory : "null", x->p.factory ? "\"" : "", np, bdigest);
    stage_fingerprint(x->ptext, x->fp);
}

/* Existing decisions or searches of the model with other parameters: an error unless --force. */
int dedup_pool_check_fingerprint(dedup_ctx *x, catalog *c)
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
        return dedup_db_error(c, "reading dedup state");
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
                    dedup_brule_names[x->p.brule], dedup_keep_names[x->p.keep], ph, x->p.model);
}

int dedup_pool_drop_model_rows(dedup_ctx *x, catalog *c)
{
    static const char *const sql[] = {
        "DELETE FROM dedup_decisions WHERE model_id = ?1", "DELETE FROM dedup_components WHERE model_id = ?1",
        "DELETE FROM dedup_edges WHERE model_id = ?1", "DELETE FROM dedup_benchmark_matches WHERE model_id = ?1",
        "DELETE FROM dedup_searched WHERE model_id = ?1", "DELETE FROM dedup_nearest WHERE model_id = ?1",
        "DELETE FROM dedup_edges_found WHERE model_id = ?1"};
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

/* Pool images with an embedding of the model, sorted by id, from catalog src. decided/searched flags come
 * from src (ignored with --force in a partitioned run, whose catalog.db rows the merge replaces). */
int dedup_pool_load(dedup_ctx *x, catalog *src, int use_state)
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
        dedup_item it = {.id = sqlite3_column_int64(st, 0), .row = sqlite3_column_int64(st, 2)};
        snprintf(it.sha, sizeof it.sha, "%s", (const char *)sqlite3_column_text(st, 3));
        it.score = x->p.keep == DEDUP_KEEP_PIXELS  ? sqlite3_column_int64(st, 4)
                   : x->p.keep == DEDUP_KEEP_BYTES ? sqlite3_column_int64(st, 5)
                                                   : 0;
        it.has_phash = (uint8_t)parse_phash((const char *)sqlite3_column_text(st, 6), &it.phash);
        it.decided = use_state && sqlite3_column_int(st, 7);
        it.searched = use_state && sqlite3_column_int(st, 8);
        if (vf_index(&x->vf, x->work, (const char *)sqlite3_column_text(st, 1), &it.file) != 0 ||
            dedup_items_push(&x->pool, &it) != 0) {
            sqlite3_reset(st);
            return -1;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return dedup_db_error(src, "reading pool embeddings");
    return 0;
}

int dedup_pool_select_queries(dedup_ctx *x, int parted, int64_t *nq)
{
    *nq = 0;
    for (int64_t i = 0; i < x->pool.n; i++) {
        dedup_item *it = &x->pool.v[i];
        if (it->decided || it->searched || !part_owns(&x->st.part, it->sha, 64))
            continue;
        if (parted) {
            sqlite3_stmt *st = catalog_stmt(x->st.cat, "SELECT 1 FROM dedup_searched WHERE model_id = ?1 AND "
                                                       "image_id = ?2 AND fingerprint = ?3");
            if (!st)
                return -1;
            sqlite3_bind_int64(st, 1, x->model_id);
            sqlite3_bind_int64(st, 2, it->id);
            sqlite3_bind_text(st, 3, x->fp, -1, SQLITE_STATIC);
            int have = sqlite3_step(st) == SQLITE_ROW;
            sqlite3_reset(st);
            if (have)
                continue;
        }
        it->query = 1;
        (*nq)++;
    }
    return 0;
}
