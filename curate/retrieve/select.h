/* select.h — the select phase of lvd-retrieve: each pending row's selection from the stored search results,
 * written to retrieve_selections (and retrieve_clusters) in catalog.db, one transaction per row; then the run's
 * record (retrieve_runs) and its summary. One-part runs and --merge.
 *
 *   as_is    the row's seed images (seed = itself, rank 0, similarity 1).
 *   sample   every pool image among the k nearest of some seed of the row, once: with the (seed, rank,
 *            similarity) of its most similar seed (ties: the lower seed image id) and the number of other seeds
 *            that found it (collisions). retrieved = seeds x neighbours found, unique = distinct images.
 *   cluster  the row's seeds counted per cluster of its k-means; a cluster with more than min_seeds of them is
 *            chosen; each chosen cluster gives its per_cluster pool images nearest the centroid (similarity
 *            descending, ties: lower image id); if the row then holds more than cap images, those farthest from
 *            their centroid go first (the same order over the whole row) until cap remain.
 */
#ifndef LVD_RETRIEVE_SELECT_H
#define LVD_RETRIEVE_SELECT_H

#include <cjson/cJSON.h>
#include <stdio.h>

#include "run.h"

/* Selects every pending row and records the run; *summary gets the JSON summary of every row of the run
 * (owned by the caller), *selected the number of rows selected now. */
int rt_select(rt_ctx *x, cJSON **summary, int *selected);

/* Writes every selection of the model's latest results as CSV to f: row, method, image_sha256, image_key,
 * seed_key, rank, similarity, cluster, collisions (keys: the image's first membership, by collection id and
 * key; for seeds, its key in the row's collection). */
int rt_select_csv(rt_ctx *x, catalog *c, FILE *f);

#endif
