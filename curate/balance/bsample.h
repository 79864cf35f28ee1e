/* bsample.h — the sample of lvd-balance: drawn from the current tree as stored (sampler.h) and recorded
 * (balance_samples, balance_sample, balance_quotas: schemas/catalog-007.sql), and the run's summary.
 *
 * A sample is drawn again only when its fingerprint changes: the tree, its points and their leaf clusters,
 * target, multiplier, sampling and seed. The rows of the samples it replaces (of this tree and of the older
 * trees of the same model and source) are deleted in the same transaction, so each (model, source) has one
 * current sample, which lvd-manifest build --from balance reads. */
#ifndef LVD_BALANCE_BSAMPLE_H
#define LVD_BALANCE_BSAMPLE_H

#include <cjson/cJSON.h>

#include "bstate.h"

/* Draws and records the sample of x->t (bal_tree_load first) to x->target unless the current one has the same
 * fingerprint (x->sampled_now 0). Sets x->sample_id, x->total and x->distinct. */
int bal_sample_settle(bal_ctx *x);

/* The run's summary: pool, tree (built now or when, growth since), per level k, sizes (min / median / max,
 * empty clusters), objective; the sample: target, size, distinct images, largest and smallest leaf quotas.
 * NULL when out of memory. */
cJSON *bal_summary(bal_ctx *x);

#endif
