/* bpool.h — the models and the pool of an lvd-balance run, read from catalog.db (see bstate.h and
 * schemas/catalog-007.sql, "pool"). */
#ifndef LVD_BALANCE_BPOOL_H
#define LVD_BALANCE_BPOOL_H

#include "bstate.h"

/* The embedding model (x->o.model: its id and dim) and, for source dedup, the dedup model that defines the
 * pool: --dedup-model, else the only model with dedup decisions. A missing model, a dedup model without
 * decisions or several candidates is an error that says what to run or pass. Reads x->st.cat. */
int bal_pool_load_models(bal_ctx *x);

/* The pool into x->pool (by id): source dedup, pool-collection images kept by the dedup model; source
 * retrieve, the union of the model's latest retrieval selections (rows with status 'done'); in both cases those
 * with an embedding of the model. Warns about the images of the source without one. An empty pool is an error
 * saying why. */
int bal_pool_load(bal_ctx *x);

#endif
