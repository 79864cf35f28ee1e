/* btree.h — the tree of an lvd-balance run: built by hierarchical k-means (hkmeans.h) on the pool and stored
 * (centroids as .npy files, clusters and points in the catalog, schemas/catalog-007.sql), or brought up to date
 * with the pool without recomputing it: images that entered are assigned to their nearest level-1 centroid
 * (squared L2, float64-exact, ties to the lower index: kmeans_assign) and follow the stored parents up, with
 * their squared distance to each level's centroid; images that left are deleted from it.
 *
 * Files before rows: a level's centroids are written whole (fsynced, renamed) under
 * WORK/balance/<model>/tree-<id>-level-<l>.npy before the transaction that records the tree commits, so a
 * failure leaves the committed tree as it was (a file no row names is overwritten by the next build). */
#ifndef LVD_BALANCE_BTREE_H
#define LVD_BALANCE_BTREE_H

#include "bstate.h"

/* The tree-shaping configuration (x->cfg.hk, the model, the source and the dedup model) as JSON into
 * x->tree_params and its fingerprint into x->tree_fp. */
void bal_tree_params(bal_ctx *x);

/* Makes the current tree of (model, source) fit the pool x->pool: builds a new one when there is none or with
 * --rebuild; otherwise assigns the images that entered and deletes those that left (x->added_now,
 * x->removed_now). A current tree built with other parameters (x->tree_fp) is an error that says to pass
 * --rebuild. Sets x->tree_id and x->built_now. */
int bal_tree_settle(bal_ctx *x);

/* Loads the current tree as stored into x->t (points by id in x->ids; labels, distances, per level k,
 * parents and sizes; no centroids) with x->built_points, x->added_total and x->objective. */
int bal_tree_load(bal_ctx *x);

#endif
