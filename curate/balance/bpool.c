/* bpool.c — the models and the pool of an lvd-balance run (see bpool.h). */
#include "bpool.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"

int bal_db_error(catalog *c, const char *what)
{
    return lvd_fail("%s: %s: %s", catalog_path(c), what, sqlite3_errmsg(catalog_db(c)));
}

int bal_item_vec(const bal_ctx *x, const bal_item *it, float *out) { return vf_row(&x->vf, it->file, it->row, out); }

void bal_ctx_release(bal_ctx *x)
{
    vf_free(&x->vf);
    free(x->pool);
    free(x->ids);
    hkm_free(&x->t);
    bal_sample_free(&x->s);
    x->pool = NULL;
    x->ids = NULL;
}

int bal_pool_load_models(bal_ctx *x)
{
    catalog *c = x->st.cat;
    if (catalog_model(c, x->o.model, &x->model_id, NULL, &x->dim) != 0)
        return -1;
    if (!x->model_id)
        return lvd_fail("%s: no embeddings of model '%s' (embed the pool first: lvd-embed --name %s)",
                        catalog_path(c), x->o.model, x->o.model);
    if (x->dim <= 0)
        return lvd_fail("%s: model '%s' has dim %d", catalog_path(c), x->o.model, (int)x->dim);
    x->dedup_model_id = 0;
    if (strcmp(x->source, "dedup") != 0)
        return 0;
    if (x->o.dedup_model) {
        if (catalog_model(c, x->o.dedup_model, &x->dedup_model_id, NULL, NULL) != 0)
            return -1;
        if (!x->dedup_model_id)
            return lvd_fail("%s: no model named '%s' (--dedup-model)", catalog_path(c), x->o.dedup_model);
        int n;
        int64_t first;
        if (catalog_dedup_models(c, x->dedup_model_id, &n, &first, NULL, 0) != 0)
            return -1;
        if (n == 0)
            return lvd_fail("%s: model '%s' has no dedup results (run lvd-dedup --model %s first)", catalog_path(c),
                            x->o.dedup_model, x->o.dedup_model);
        return 0;
    }
    char names[512];
    int n;
    if (catalog_dedup_models(c, 0, &n, &x->dedup_model_id, names, sizeof names) != 0)
        return -1;
    if (n == 0)
        return lvd_fail("%s: no model has dedup results: run lvd-dedup first (the default pool is what it kept), "
                        "or balance the retrieval results with --from retrieve", catalog_path(c));
    if (n > 1)
        return lvd_fail("%s: several models have dedup results (%s): say which defines the pool with "
                        "--dedup-model", catalog_path(c), names);
    return 0;
}

static int push(bal_ctx *x, int64_t *cap, const bal_item *it)
{
    if (x->npool == *cap) {
        int64_t nc = *cap ? *cap * 2 : 4096;
        bal_item *v = realloc(x->pool, (size_t)nc * sizeof *v);
        if (!v)
            return lvd_fail("out of memory for the pool");
        x->pool = v;
        *cap = nc;
    }
    x->pool[x->npool++] = *it;
    return 0;
}

int bal_pool_load(bal_ctx *x)
{
    catalog *c = x->st.cat;
    int dedup = strcmp(x->source, "dedup") == 0;
    /* The source's images (sel) and those of them with an embedding of the model. */
    const char *sql_pool =
        dedup ? "SELECT e.image_id, e.file, e.row FROM embeddings e WHERE e.model_id = ?1"
                " AND EXISTS (SELECT 1 FROM members m JOIN collections c ON c.id = m.collection_id"
                "             WHERE m.image_id = e.image_id AND c.role = 'pool')"
                " AND EXISTS (SELECT 1 FROM dedup_decisions d WHERE d.model_id = ?2"
                "             AND d.image_id = e.image_id AND d.decision = 'kept')"
                " ORDER BY e.image_id"
              : "SELECT e.image_id, e.file, e.row FROM embeddings e WHERE e.model_id = ?1"
                " AND e.image_id IN (SELECT s.image_id FROM retrieve_selections s JOIN retrieve_rows r"
                "                    ON r.id = s.row_id WHERE r.model_id = ?1 AND r.status = 'done' AND ?2 = ?2)"
                " ORDER BY e.image_id";
    const char *sql_source =
        dedup ? "SELECT count(*) FROM dedup_decisions d WHERE d.model_id = ?2 AND d.decision = 'kept'"
                " AND EXISTS (SELECT 1 FROM members m JOIN collections c ON c.id = m.collection_id"
                "             WHERE m.image_id = d.image_id AND c.role = 'pool') AND ?1 = ?1"
              : "SELECT count(DISTINCT s.image_id) FROM retrieve_selections s JOIN retrieve_rows r ON r.id = s.row_id"
                " WHERE r.model_id = ?1 AND r.status = 'done' AND ?2 = ?2";
    sqlite3_stmt *st = catalog_stmt(c, sql_pool);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    sqlite3_bind_int64(st, 2, x->dedup_model_id);
    int64_t cap = 0;
    int rc;
    x->npool = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        bal_item it = {.id = sqlite3_column_int64(st, 0), .row = sqlite3_column_int64(st, 2)};
        if (vf_index(&x->vf, x->work, (const char *)sqlite3_column_text(st, 1), &it.file) != 0 ||
            push(x, &cap, &it) != 0) {
            sqlite3_reset(st);
            return -1;
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return bal_db_error(c, "reading pool embeddings");
    int64_t all = 0;
    st = catalog_stmt(c, sql_source);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, x->model_id);
    sqlite3_bind_int64(st, 2, x->dedup_model_id);
    if (sqlite3_step(st) == SQLITE_ROW)
        all = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    const char *what = dedup ? "pool images kept by dedup" : "images selected by lvd-retrieve";
    if (all == 0)
        return lvd_fail("%s: empty pool: no %s%s", catalog_path(c), what,
                        dedup ? "" : " for this model (run lvd-retrieve --model first)");
    if (x->npool == 0)
        return lvd_fail("%s: empty pool: none of the %" PRId64 " %s has an embedding of model '%s' (embed them: "
                        "lvd-embed --name %s)", catalog_path(c), all, what, x->o.model, x->o.model);
    if (all > x->npool)
        log_warn("%" PRId64 " of the %" PRId64 " %s have no embedding of model '%s' and are not balanced (embed "
                 "them with lvd-embed --name %s)", all - x->npool, all, what, x->o.model, x->o.model);
    return 0;
}
