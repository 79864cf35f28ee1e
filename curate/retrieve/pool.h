/* pool.h — the prepare phase of lvd-retrieve: the models, the pool, the registry rows and their seed images,
 * read from catalog.db, and (one-part runs and --prepare) recorded in it: the pool's generation
 * (retrieve_state, retrieve_pool) and each row's parameters (retrieve_rows), with the rows whose selection has
 * to be computed again marked pending. A partitioned run only checks that catalog.db's record is current.
 */
#ifndef LVD_RETRIEVE_POOL_H
#define LVD_RETRIEVE_POOL_H

#include "run.h"

/* The retrieval model (x->o.model) and the dedup model that defines the pool: --dedup-model, else the only
 * model with dedup decisions; none is an error unless --no-dedup. Reads x->src. */
int rt_pool_load_models(rt_ctx *x);

/* The pool (x->pool, by id, gen 0): pool-collection images kept by the dedup model (or all with --no-dedup)
 * that have an embedding of the retrieval model; warns about kept pool images without one. */
int rt_pool_load(rt_ctx *x);

/* The rows of x->reg selected by --only into x->rows, with their parameters, collections and seed images.
 * A missing, empty or non-seed collection skips the row (reason set). Seed images without an embedding of the
 * model are an error naming the collection to embed, unless their decode failed (then a warning). */
int rt_pool_load_rows(rt_ctx *x);

/* Compares the pool with retrieve_pool and records it in x->st.cat (one-part runs): images entering get the
 * next generation, images leaving are dropped along with the sample searches that found them (their seeds
 * are searched again). Sets each item's gen and x->gen. A pool defined by another dedup model than before is
 * an error unless --force (which drops the model's retrieval results). */
int rt_pool_record(rt_ctx *x);

/* Records every row in retrieve_rows (one-part runs): a new row, or one whose fingerprint, seeds, pool
 * generation or k-means changed, becomes pending. A recorded row with other parameters is an error unless
 * --force (which drops its results). Call after the k-means are settled (cluster.h). */
int rt_pool_record_rows(rt_ctx *x);

/* Partitioned runs: checks that catalog.db's record (pool, rows) is what this run computes, else an error
 * that says to run lvd-retrieve --prepare first; takes the rows' ids and the items' generations from it. */
int rt_pool_check_prepared(rt_ctx *x);

/* Drops every retrieval result of the row (hits, seed state, selections, clusters) in catalog c. */
int rt_pool_drop_row_results(catalog *c, int64_t row_id);

#endif
