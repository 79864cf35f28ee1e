/* stage.c — work directory, target catalog, run record and part merging (see stage.h). */
#include "stage.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "lock.h"
#include "log.h"
#include "sha256.h"

void stage_fingerprint(const char *text, char out[65]) { sha256_hex(text, strlen(text), out); }

static int ensure_dir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return lvd_fail_errno("cannot create directory %s", path);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return lvd_fail("%s exists and is not a directory", path);
    return 0;
}

int stage_open(stage *s, const char *name, const char *work, const char *part_arg, const char *params_json,
               const char *fingerprint, int flags)
{
    int wait = (flags & STAGE_WAIT) ? CATALOG_WAIT : 0;
    memset(s, 0, sizeof *s);
    s->name = name;
    if (snprintf(s->work, sizeof s->work, "%s", work) >= (int)sizeof s->work)
        return lvd_fail("work directory path too long");
    if (part_resolve(part_arg, &s->part) != 0)
        return -1;
    snprintf(s->part_text, sizeof s->part_text, "%u/%u", s->part.index, s->part.count);
    if (ensure_dir(work) != 0)
        return -1;
    char path[STAGE_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/catalog.db", work);
    if (s->part.count == 1) {
        if (catalog_open(&s->cat, path, wait) != 0)
            return -1;
    } else {
        /* A partitioned run never writes catalog.db (SQLite locking is unsafe on network file systems);
         * it reads it when present, to skip what is already done. */
        if (access(path, F_OK) == 0 && catalog_open(&s->main_ro, path, CATALOG_READONLY) != 0)
            return -1;
        snprintf(s->shard_tag, sizeof s->shard_tag, "p%uof%u", s->part.index, s->part.count);
        snprintf(path, sizeof path, "%s/parts", work);
        if (ensure_dir(path) != 0)
            goto fail;
        snprintf(path, sizeof path, "%s/parts/%s-%u-of-%u.db", work, name, s->part.index, s->part.count);
        if (catalog_open(&s->cat, path, CATALOG_PART | wait) != 0)
            goto fail;
    }
    if (catalog_run_start(s->cat, name, s->part_text, params_json, fingerprint, &s->run_id) != 0)
        goto fail;
    return 0;
fail:
    catalog_close(s->main_ro);
    catalog_close(s->cat);
    s->main_ro = s->cat = NULL;
    return -1;
}

int stage_close(stage *s, const char *status, const char *summary_json)
{
    int rc = 0;
    if (s->cat && catalog_run_finish(s->cat, s->run_id, status, summary_json) != 0)
        rc = -1;
    catalog_close(s->main_ro);
    catalog_close(s->cat);
    s->main_ro = s->cat = NULL;
    return rc;
}

/* Folding one part file into catalog.db. Ids of runs and shards are shifted past the catalog's largest id;
 * collections are matched by name and images by SHA-256 (bytes fetched by two parts are one image; the
 * second copy stays unreferenced in its shard). Part rows win over catalog rows for the same URL or decode,
 * because a part only holds what it (re)did. */
static const char *merge_sql =
    "CREATE TEMP TABLE IF NOT EXISTS off(runs INTEGER, shards INTEGER);"
    "DELETE FROM temp.off;"
    "INSERT INTO temp.off SELECT (SELECT coalesce(max(id), 0) FROM main.runs),"
    "                            (SELECT coalesce(max(id), 0) FROM main.shards);"
    "INSERT INTO main.runs(id, stage, part, params, fingerprint, started_at, finished_at, status, summary,"
    "                      committed_at, pid, host)"
    "  SELECT id + (SELECT runs FROM temp.off), stage, part, params, fingerprint, started_at, finished_at,"
    "         status, summary, committed_at, pid, host FROM p.runs;"
    "INSERT OR IGNORE INTO main.collections(name, role, created_at)"
    "  SELECT name, role, created_at FROM p.collections;"
    "INSERT INTO main.shards(id, path, kind, committed, members)"
    "  SELECT id + (SELECT shards FROM temp.off), path, kind, committed, members FROM p.shards;"
    "INSERT OR IGNORE INTO main.images(sha256, bytes, format, shard_id, offset, run_id, created_at)"
    "  SELECT sha256, bytes, format, shard_id + (SELECT shards FROM temp.off), offset,"
    "         run_id + (SELECT runs FROM temp.off), created_at FROM p.images;"
    /* Part-local image ids become catalog ids through the SHA-256. */
    "CREATE TEMP TABLE IF NOT EXISTS imap(old INTEGER PRIMARY KEY, new INTEGER);"
    "DELETE FROM temp.imap;"
    "INSERT INTO temp.imap SELECT pi.id, mi.id FROM p.images pi JOIN main.images mi ON mi.sha256 = pi.sha256;"
    "CREATE TEMP TABLE IF NOT EXISTS cmap(old INTEGER PRIMARY KEY, new INTEGER);"
    "DELETE FROM temp.cmap;"
    "INSERT INTO temp.cmap SELECT pc.id, mc.id FROM p.collections pc JOIN main.collections mc ON mc.name = pc.name;"
    "INSERT INTO main.urls(url, collection_id, key, caption, extra, source, status, transient, http_status,"
    "                      final_url, content_type, bytes, sha256, image_id, attempts, error, first_at, last_at,"
    "                      run_id)"
    "  SELECT u.url, (SELECT new FROM temp.cmap WHERE old = u.collection_id), u.key, u.caption, u.extra, u.source,"
    "         u.status, u.transient, u.http_status, u.final_url, u.content_type, u.bytes, u.sha256,"
    "         (SELECT new FROM temp.imap WHERE old = u.image_id), u.attempts, u.error, u.first_at, u.last_at,"
    "         u.run_id + (SELECT runs FROM temp.off) FROM p.urls u WHERE true"
    "  ON CONFLICT(url) DO UPDATE SET status = excluded.status, transient = excluded.transient,"
    "     http_status = excluded.http_status, final_url = excluded.final_url,"
    "     content_type = excluded.content_type, bytes = excluded.bytes, sha256 = excluded.sha256,"
    "     image_id = excluded.image_id, attempts = main.urls.attempts + excluded.attempts,"
    "     error = excluded.error, first_at = coalesce(main.urls.first_at, excluded.first_at),"
    "     last_at = excluded.last_at, run_id = excluded.run_id;"
    "INSERT OR REPLACE INTO main.members(collection_id, key, image_id, label, source, run_id)"
    "  SELECT (SELECT new FROM temp.cmap WHERE old = m.collection_id), m.key,"
    "         (SELECT new FROM temp.imap WHERE old = m.image_id), m.label, m.source,"
    "         m.run_id + (SELECT runs FROM temp.off) FROM p.members m;"
    /* Decode parts refer to catalog.db's image ids directly (they read images from it). */
    "INSERT OR REPLACE INTO main.decodes(image_id, fingerprint, status, error, format, width, height, out_width,"
    "                                    out_height, phash, shard_id, offset, size, out_format, run_id, created_at)"
    "  SELECT image_id, fingerprint, status, error, format, width, height, out_width, out_height, phash,"
    "         shard_id + (SELECT shards FROM temp.off), offset, size, out_format,"
    "         run_id + (SELECT runs FROM temp.off), created_at FROM p.decodes;"
    /* Embedding parts also refer to catalog.db's image ids. Models are matched by name; a part that gave the
     * name another identity (lvd-embed --force) replaces it, and the name's old rows go. */
    "DELETE FROM main.embeddings WHERE model_id IN (SELECT mm.id FROM main.models mm JOIN p.models pm"
    "  ON pm.name = mm.name WHERE pm.sha256 IS NOT mm.sha256 OR pm.preprocess IS NOT mm.preprocess"
    "  OR pm.dim IS NOT mm.dim);"
    "UPDATE main.models SET (sha256, preprocess, dim, created_at) ="
    "  (SELECT pm.sha256, pm.preprocess, pm.dim, pm.created_at FROM p.models pm WHERE pm.name = main.models.name)"
    "  WHERE EXISTS (SELECT 1 FROM p.models pm WHERE pm.name = main.models.name AND (pm.sha256 IS NOT"
    "  main.models.sha256 OR pm.preprocess IS NOT main.models.preprocess OR pm.dim IS NOT main.models.dim));"
    "INSERT OR IGNORE INTO main.models(name, sha256, preprocess, dim, created_at)"
    "  SELECT name, sha256, preprocess, dim, created_at FROM p.models;"
    "CREATE TEMP TABLE IF NOT EXISTS mmap(old INTEGER PRIMARY KEY, new INTEGER);"
    "DELETE FROM temp.mmap;"
    "INSERT INTO temp.mmap SELECT pm.id, mm.id FROM p.models pm JOIN main.models mm ON mm.name = pm.name;"
    "INSERT OR REPLACE INTO main.embeddings(model_id, image_id, file, row, run_id)"
    "  SELECT (SELECT new FROM temp.mmap WHERE old = e.model_id), e.image_id, e.file, e.row,"
    "         e.run_id + (SELECT runs FROM temp.off) FROM p.embeddings e;"
    /* Dedup parts (lvd-dedup --part) hold search results keyed by catalog.db's model and image ids; the
     * decisions are computed by lvd-dedup --merge after folding. */
    "INSERT OR IGNORE INTO main.dedup_edges(model_id, image_a, image_b, sim, kind, phash_dist)"
    "  SELECT model_id, image_a, image_b, sim, kind, phash_dist FROM p.dedup_edges;"
    /* Edges a part staged but did not fold (killed after its last batch): lvd-dedup folds them before deciding. */
    "INSERT INTO main.dedup_edges_found(model_id, image_a, image_b, sim)"
    "  SELECT model_id, image_a, image_b, sim FROM p.dedup_edges_found;"
    "INSERT OR IGNORE INTO main.dedup_benchmark_matches(model_id, image_id, collection_id, bench_image_id, sim)"
    "  SELECT model_id, image_id, collection_id, bench_image_id, sim FROM p.dedup_benchmark_matches;"
    "INSERT OR REPLACE INTO main.dedup_searched(model_id, image_id, fingerprint)"
    "  SELECT model_id, image_id, fingerprint FROM p.dedup_searched;"
    /* Nearest neighbours: per key the most similar row wins (ties: the smaller neighbour id), whichever part
     * or earlier run observed it (catalog-004.sql). */
    "INSERT INTO main.dedup_nearest(model_id, collection_id, image_id, nearest_image_id, sim)"
    "  SELECT model_id, collection_id, image_id, nearest_image_id, sim FROM p.dedup_nearest WHERE true"
    "  ON CONFLICT(model_id, collection_id, image_id) DO UPDATE SET nearest_image_id = excluded.nearest_image_id,"
    "     sim = excluded.sim, dedup_run_id = NULL"
    "  WHERE excluded.sim > main.dedup_nearest.sim OR (excluded.sim = main.dedup_nearest.sim"
    "     AND excluded.nearest_image_id < main.dedup_nearest.nearest_image_id);"
    /* Retrieval parts (lvd-retrieve --part) hold seed searches and centroid assignments keyed by catalog.db's
     * row, k-means and image ids (catalog-006.sql). A part's search of a seed is complete (it merged catalog.db's
     * stored neighbours in), so it replaces the seed's stored one; the selections are computed by
     * lvd-retrieve --merge after folding. */
    "DELETE FROM main.retrieve_hits WHERE (row_id, seed_image_id) IN"
    "  (SELECT row_id, seed_image_id FROM p.retrieve_seeds);"
    "INSERT INTO main.retrieve_hits(row_id, seed_image_id, rank, image_id, sim)"
    "  SELECT row_id, seed_image_id, rank, image_id, sim FROM p.retrieve_hits;"
    "INSERT INTO main.retrieve_seeds(row_id, seed_image_id, searched_gen)"
    "  SELECT row_id, seed_image_id, searched_gen FROM p.retrieve_seeds WHERE true"
    "  ON CONFLICT(row_id, seed_image_id) DO UPDATE SET searched_gen = excluded.searched_gen;"
    "INSERT OR REPLACE INTO main.retrieve_assign(kmeans_id, image_id, cluster, sim)"
    "  SELECT kmeans_id, image_id, cluster, sim FROM p.retrieve_assign;";

static int merge_one(catalog *cat, const char *path)
{
    sqlite3_stmt *st = catalog_stmt(cat, "ATTACH DATABASE ?1 AS p");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, path, -1, SQLITE_TRANSIENT);
    if (catalog_step_done(cat, st) != 0)
        return -1;
    int rc = catalog_begin(cat);
    if (rc == 0 && (rc = catalog_exec(cat, merge_sql)) == 0)
        rc = catalog_commit(cat);
    if (rc != 0) {
        lvd_fail_ctx("merging %s", path);
        catalog_rollback(cat);
    }
    if (catalog_exec(cat, "DETACH DATABASE p") != 0 && rc == 0)
        rc = -1;
    return rc;
}

/* One part file name of WORK/parts: "<stage>-I-of-N.db", or "<stage>-I-of-N.db.merged" once folded in. */
typedef struct part_file {
    uint32_t index, count;
    int merged;
    char *name;
} part_file;

/* Parses d_name as a part file of stage `name`; 1 if it is one. I and N are plain decimals, 0 <= I < N. */
static int parse_part_name(const char *d_name, const char *name, part_file *pf)
{
    size_t plen = strlen(name);
    if (strncmp(d_name, name, plen) != 0 || d_name[plen] != '-')
        return 0;
    const char *p = d_name + plen + 1;
    uint64_t v[2];
    for (int k = 0; k < 2; k++) {
        if (*p < '0' || *p > '9')
            return 0;
        v[k] = 0;
        while (*p >= '0' && *p <= '9' && v[k] <= UINT32_MAX)
            v[k] = v[k] * 10 + (uint64_t)(*p++ - '0');
        if (k == 0) {
            if (strncmp(p, "-of-", 4) != 0)
                return 0;
            p += 4;
        }
    }
    if (v[1] == 0 || v[1] > UINT32_MAX || v[0] >= v[1])
        return 0;
    if (strcmp(p, ".db") == 0)
        pf->merged = 0;
    else if (strcmp(p, ".db.merged") == 0)
        pf->merged = 1;
    else
        return 0;
    pf->index = (uint32_t)v[0];
    pf->count = (uint32_t)v[1];
    return 1;
}

static int cmp_part(const void *a, const void *b)
{
    const part_file *x = a, *y = b;
    if (x->count != y->count)
        return x->count < y->count ? -1 : 1;
    if (x->index != y->index)
        return x->index < y->index ? -1 : 1;
    return x->merged - y->merged;
}

/* Appends "I/N" to a list being written into buf (", " between items), up to 12 items, then "... (K more)". */
static void list_part(char *buf, size_t cap, int *items, uint32_t i, uint32_t n)
{
    size_t len = strlen(buf);
    if (*items < 12)
        snprintf(buf + len, cap - len, "%s%u/%u", *items ? ", " : "", i, n);
    (*items)++;
}

static void list_end(char *buf, size_t cap, int items)
{
    size_t len = strlen(buf);
    if (items > 12)
        snprintf(buf + len, cap - len, " ... (%d more)", items - 12);
    if (items == 0)
        snprintf(buf, cap, "none");
}

void stage_merge_result_free(stage_merge_result *r)
{
    free(r->missing);
    r->missing = NULL;
    r->nmissing = 0;
}

/* Records part i/n as missing in r (a growing array). */
static int add_missing(stage_merge_result *r, uint32_t i, uint32_t n, size_t *cap)
{
    if ((size_t)r->nmissing == *cap) {
        size_t nc = *cap ? 2 * *cap : 16;
        stage_part *m = realloc(r->missing, nc * sizeof *m);
        if (!m)
            return lvd_fail("out of memory listing missing parts");
        r->missing = m;
        *cap = nc;
    }
    r->missing[r->nmissing++] = (stage_part){i, n};
    return 0;
}

/* Checks the part files of one split (pf[0..n), all written for the same N, sorted by index): lists what is
 * there and what is missing; missing parts are an error unless allowed. Splits with nothing to merge are
 * not checked: they were merged before (and warned about then, if partial). */
static int check_split(const char *name, const char *dir, const part_file *pf, size_t n, int allow_partial,
                       stage_merge_result *r, size_t *cap)
{
    uint32_t count = pf[0].count;
    size_t pending = 0;
    for (size_t k = 0; k < n; k++)
        pending += !pf[k].merged;
    if (pending == 0)
        return 0;
    char found[400] = "", before[400] = "", missing[400] = "";
    int nf = 0, nb = 0, nm = 0;
    uint32_t first = 0; /* the first missing index, for the message */
    size_t k = 0;
    for (uint32_t i = 0; i < count; i++) {
        int have = 0, was = 0;
        for (; k < n && pf[k].index == i; k++)
            pf[k].merged ? (was = 1) : (have = 1);
        if (have)
            list_part(found, sizeof found, &nf, i, count);
        else if (was)
            list_part(before, sizeof before, &nb, i, count);
        else {
            if (nm == 0)
                first = i;
            list_part(missing, sizeof missing, &nm, i, count);
            if (add_missing(r, i, count, cap) != 0)
                return -1;
        }
    }
    list_end(found, sizeof found, nf);
    list_end(before, sizeof before, nb);
    list_end(missing, sizeof missing, nm);
    log_info("%s/%s-*-of-%u.db: to merge %s; merged before %s; missing %s", dir, name, count, found, before,
             missing);
    if (nm == 0)
        return 0;
    if (!allow_partial)
        return lvd_fail("%s/%s-*-of-%u.db: parts of a %u-way split, missing %s (run lvd-%s --part %u/%u and the "
                        "others, then merge again; or pass --allow-partial to merge the %zu that are there)",
                        dir, name, count, count, missing, name, first, count, pending);
    log_warn("%s/%s-*-of-%u.db: merging %zu of %u parts; missing %s (--allow-partial): merge again once they "
             "are written", dir, name, count, pending, count, missing);
    return 0;
}

int stage_merge(const char *name, const char *work, int flags, stage_merge_result *r)
{
    memset(r, 0, sizeof *r);
    int wait = (flags & STAGE_WAIT) ? CATALOG_WAIT : 0;
    struct stat sb;
    if (stat(work, &sb) != 0)
        return lvd_fail_errno("%s: no work directory to merge into", work);
    if (!S_ISDIR(sb.st_mode))
        return lvd_fail("%s: not a directory", work);
    char dir[STAGE_PATH_MAX + 16], path[STAGE_PATH_MAX + 300], cat_path[STAGE_PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/parts", work);
    snprintf(cat_path, sizeof cat_path, "%s/catalog.db", work);
    int have_catalog = access(cat_path, F_OK) == 0;

    part_file *pf = NULL;
    size_t n = 0, cap = 0, mcap = 0;
    int rc = 0;
    DIR *d = opendir(dir);
    if (!d && errno != ENOENT)
        return lvd_fail_errno("cannot read %s", dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        part_file one;
        if (!parse_part_name(e->d_name, name, &one))
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            part_file *np = realloc(pf, cap * sizeof *pf);
            if (!np) {
                rc = lvd_fail("out of memory listing %s", dir);
                break;
            }
            pf = np;
        }
        if (!(one.name = strdup(e->d_name))) {
            rc = lvd_fail("out of memory listing %s", dir);
            break;
        }
        pf[n++] = one;
    }
    if (d)
        closedir(d);
    if (rc != 0)
        goto out;
    /* Sorted by (N, I), so the merged ids do not depend on directory order. */
    qsort(pf, n, sizeof *pf, cmp_part);
    size_t pending = 0;
    for (size_t k = 0; k < n; k++) {
        pending += !pf[k].merged;
        r->already += pf[k].merged;
    }
    if (pending == 0) {
        if (!have_catalog && n == 0) {
            rc = lvd_fail("%s: nothing to merge: no catalog.db and no parts/%s-I-of-N.db (a partitioned run "
                          "lvd-%s --part I/N writes them)", work, name, name);
            goto out;
        }
        log_info("nothing to merge: no unmerged %s/%s-I-of-N.db (%d merged before)", dir, name, r->already);
        goto out;
    }
    for (size_t k = 0; k < n && rc == 0;) {
        size_t k2 = k;
        while (k2 < n && pf[k2].count == pf[k].count)
            k2++;
        rc = check_split(name, dir, pf + k, k2 - k, flags & STAGE_ALLOW_PARTIAL, r, &mcap);
        k = k2;
    }
    /* A part still being written is not merged, nor is anything else: merge once it has ended. */
    for (size_t k = 0; k < n && rc == 0; k++) {
        if (pf[k].merged)
            continue;
        char holder[LOCK_HOLDER_MAX];
        snprintf(path, sizeof path, "%s/%s.lock", dir, pf[k].name);
        int held = lock_probe(path, holder, sizeof holder);
        if (held < 0)
            rc = -1;
        else if (held)
            rc = lvd_fail("%s/%s is still being written by %s; merge once it has ended", dir, pf[k].name, holder);
    }
    if (rc != 0)
        goto out;

    catalog *cat = NULL;
    if ((rc = catalog_open(&cat, cat_path, wait)) != 0)
        goto out;
    for (size_t k = 0; k < n && rc == 0; k++) {
        if (pf[k].merged)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, pf[k].name);
        /* Opened (locked, migrated, its dead runs marked interrupted) and held open until renamed, so no
         * other process writes the part while it is folded in. */
        catalog *pc = NULL;
        if ((rc = catalog_open(&pc, path, CATALOG_PART)) != 0)
            break;
        if ((rc = merge_one(cat, path)) != 0) {
            catalog_close(pc);
            break;
        }
        char done[STAGE_PATH_MAX + 320];
        snprintf(done, sizeof done, "%s.merged", path);
        if (rename(path, done) != 0) {
            rc = lvd_fail_errno("merged %s but cannot rename it to %s; remove it by hand before merging again",
                                path, done);
            catalog_close(pc);
            break;
        }
        catalog_close(pc);
        /* WAL side files of the part belong to the renamed database no more. */
        snprintf(done, sizeof done, "%s-wal", path);
        unlink(done);
        snprintf(done, sizeof done, "%s-shm", path);
        unlink(done);
        log_info("merged %s", path);
        r->merged++;
    }
    catalog_close(cat);
out:
    for (size_t k = 0; k < n; k++)
        free(pf[k].name);
    free(pf);
    return rc;
}
