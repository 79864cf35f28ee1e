/* decide.c — components and decisions of lvd-dedup from the stored edges, and the summary (see
 * decide.h). */
#include "decide.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "graph.h"
#include "err.h"
#include "log.h"

static const char *const decision_names[] = {"kept", "duplicate", "benchmark"};
static const char *const kind_names[] = {"knn", "phash"};

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
int dedup_decide(dedup_ctx *x, catalog *c)
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
    dedup_items nodes = {0}; /* copies of the node items, sorted by id (for id -> node lookups) */
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
        const dedup_item *it = &x->pool.v[i];
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
    sqlite3_stmt *st =
        catalog_stmt(c, "SELECT image_a, image_b, sim, kind, phash_dist FROM dedup_edges WHERE model_id = ?1");
    if (!st)
        goto out;
    sqlite3_bind_int64(st, 1, x->model_id);
    int src;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t a = dedup_items_find(&nodes, sqlite3_column_int64(st, 0));
        int64_t b = dedup_items_find(&nodes, sqlite3_column_int64(st, 1));
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
        dedup_db_error(c, "reading dedup_edges");
        goto out;
    }
    /* Benchmark matches: each node's strongest (sim descending, then collection and image ids ascending). */
    st = catalog_stmt(c, "SELECT image_id, collection_id, bench_image_id, sim FROM dedup_benchmark_matches "
                         "WHERE model_id = ?1 ORDER BY image_id, sim DESC, collection_id, bench_image_id");
    if (!st)
        goto out;
    sqlite3_bind_int64(st, 1, x->model_id);
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t a = dedup_items_find(&nodes, sqlite3_column_int64(st, 0));
        if (a < 0 || has_bench[a])
            continue;
        has_bench[a] = 1;
        bm[a] = (bmatch){.coll = sqlite3_column_int64(st, 1), .bimage = sqlite3_column_int64(st, 2),
                         .sim = sqlite3_column_double(st, 3)};
        bsim[a] = bm[a].sim;
    }
    sqlite3_reset(st);
    if (src != SQLITE_DONE) {
        dedup_db_error(c, "reading dedup_benchmark_matches");
        goto out;
    }
    /* Old components, to drop their rows when they merge into a changed one. */
    st = catalog_stmt(c, "SELECT image_id, component FROM dedup_decisions WHERE model_id = ?1");
    if (!st)
        goto out;
    sqlite3_bind_int64(st, 1, x->model_id);
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t a = dedup_items_find(&nodes, sqlite3_column_int64(st, 0));
        if (a >= 0)
            old_comp[a] = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    if (src != SQLITE_DONE) {
        dedup_db_error(c, "reading dedup_decisions");
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
            const dedup_item *ia = &nodes.v[pe[i].a], *ib = &nodes.v[pe[i].b];
            if (ia->decided && ib->decided)
                continue;
            if (dedup_item_vec(x, ia, va) != 0 || dedup_item_vec(x, ib, vb) != 0)
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
    sqlite3_bind_text(st, 7, dedup_brule_names[x->p.brule], -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, dedup_keep_names[x->p.keep], -1, SQLITE_STATIC);
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
                if (dedup_item_vec(x, &nodes.v[i], va) != 0 || dedup_item_vec(x, &nodes.v[kept], vb) != 0)
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
        "UPDATE dedup_nearest SET dedup_run_id = ?2 WHERE model_id = ?1 AND dedup_run_id IS NULL",
        "UPDATE dedup_runs SET changed_components = ?3 WHERE id = ?2"};
    for (size_t i = 0; i < sizeof stamp / sizeof *stamp; i++) {
        st = catalog_stmt(c, stamp[i]);
        if (!st)
            goto out;
        sqlite3_bind_int64(st, 1, x->model_id);
        sqlite3_bind_int64(st, 2, drun);
        if (i == sizeof stamp / sizeof *stamp - 1)
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

cJSON *dedup_decide_summary(dedup_ctx *x, catalog *c, int decided_here)
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
    cJSON_AddNumberToObject(s, "nearest_written", (double)x->nearest_written);
    cJSON_AddNumberToObject(s, "nearest_updated", (double)x->nearest_updated);
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
    cJSON_AddNumberToObject(s, "undecided",
                            (double)(x->pool.n - (int64_t)cJSON_GetObjectItem(s, "decided")->valuedouble));
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
