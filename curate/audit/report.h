/* report.h — what lvd-dedup removed and why, read from the catalog (schema 3, catalog-003.sql, and the
 * nearest neighbours of schema 4, catalog-004.sql), and what lvd-retrieve selected (schema 6, catalog-006.sql).
 *
 * Read-only: every function only runs SELECTs, so it works on a catalog opened with CATALOG_READONLY while a
 * stage is writing (WAL readers see the last committed state).
 *
 * The report is one cJSON object (what `lvd-audit --json` prints; text and HTML are rendered from it):
 *   catalog, model, model_id, dedup_runs, last_run, params {k, threshold, benchmark_threshold,
 *     benchmark_rule, keep_rule, phash_distance, index, fingerprint}, top
 *   pool {decided, kept, duplicate, benchmark, removed, undecided}
 *   benchmarks [ per collection of role benchmark, by name:
 *     {name, images, embedded, threshold, removed, removed_direct, removed_component,
 *      matches, matched_pool_images, matched_benchmark_images,
 *      bands [{lo, hi, removed}], histogram {edges [...], counts [...]}, nearest,
 *      top_pairs [pair], threshold_pairs [pair]} ]
 *   self {threshold, components, multi_components, largest_size, images, removed, chained,
 *     sizes [{min, max, components, images}], histogram {edges, counts}, kept_histogram {edges, counts},
 *     nearest, largest [component], weakest [component], top_pairs [pair], threshold_pairs [pair]}
 *   retrieval (only when a retrieval model is audited, see below)
 * Without dedup results (a catalog that only ran lvd-retrieve) the report is {catalog, model: null,
 * model_id: null, top, retrieval}.
 * where
 *   image     {id, key, collection, sha256}: key and collection of the image's membership in the collection
 *             concerned (a benchmark image: that benchmark; a seed image: the row's seed collection), else of
 *             its first pool membership
 *   pair      benchmark: {rank, sim, image (removed pool image), ref (benchmark image), via (the member whose
 *             match removed the component, or null when the image matched itself), component};
 *             self: {rank, sim (the edge that removed it), image (removed duplicate), ref (the other end of
 *             that edge), kept (the image kept for the component), kept_sim (direct cosine), kind, component}
 *   component {component, size, kept (image or null), removed_duplicate, removed_benchmark, weakest_sim,
 *             weakest_kind, weakest_a, weakest_b (images), strongest_sim}
 *   nearest   the nearest neighbour of every searched pool image (dedup_nearest), above the threshold or not:
 *             benchmark: its most similar image of that benchmark; self: its most similar other pool image.
 *             {images (pool images with a row), min_sim, max_sim (null when none), histogram {edges, counts}
 *             (bins of audit_hist_bins from the lowest similarity, so it also shows what lies below the
 *             threshold), flagged [{threshold, images, used (true on the run's threshold only)}]}: for
 *             thresholds t - 0.2, ..., t + 0.15 in steps of 0.05 (audit_flag_thresholds), the pool images
 *             whose nearest similarity is strictly above it. Benchmark: the images that would match directly
 *             (the component rule removes their components too); self: the images that would have an edge,
 *             i.e. sit in a component of more than one image (one image of each such component is kept).
 * Lists: top_pairs are the `top` removals of highest similarity (descending, ties by image id);
 * threshold_pairs the removals of lowest similarity, nearest the threshold (ascending), never repeating a
 * pair of top_pairs, so both together show min(removed, 2 top) removals. largest: components of more than
 * one image by size (descending); weakest: by weakest_sim (ascending, the most chained first).
 * Similarity bands (audit_bands) and histogram bins (audit_hist_bins) are lower-inclusive, upper-exclusive;
 * the last band and bin also hold values at or above their upper edge (cosines of 1 + rounding).
 *
 * retrieval: the results of one retrieval model (retrieve_* tables; "pool", "row", "rank" as catalog-006.sql
 * defines them):
 *   {model, model_id, runs (retrieve_runs rows),
 *    run {id, created_at, pool_size, pool_gen, registry_path, registry_sha256, scale, dedup_model (null:
 *      --no-dedup), params (the run's options, JSON)}: the latest run that selected (null when none),
 *    pool {size, generation, dedup_model, updated_at}: the pool now (retrieve_state; null when none),
 *    totals {rows, done, pending, skipped, final, final_by_method {as_is, sample, cluster}, distinct_images,
 *      paper_final}: final sums the rows' final counts (a pool image in two rows counts twice),
 *      distinct_images counts the images selected by any row, paper_final sums the paper's final counts of
 *      the rows that were not skipped (those that have one),
 *    rows [ per retrieve_rows row, in the order they were first recorded (registry order):
 *      {id, name, task, dataset, split, method, collection, collection_id, status, reason (skipped: why),
 *       k (sample), clusters, per_cluster, cap, min_seeds, kmeans_id (cluster),
 *       seeds, retrieved, collisions, unique, capped, final (as recorded by the last selection; null for a
 *       skipped row, whose selections are dropped), paper_seeds, paper_final (null when the registry has
 *       none), selected_gen,
 *       histogram: {edges, counts} of the similarity of every selection (sample: to its seed; cluster: to its
 *         centroid), bins of audit_hist_bins(lowest similarity, 1); null for as_is and skipped rows and rows
 *         without selections. sample and cluster rows that ran also have selections (their count), sim_min,
 *         sim_mean, sim_max.
 *       sample: seeds_with_hits, top_pairs [{rank, sim, seed (image), image (its nearest pool image,
 *         retrieve_hits rank 0), collisions (of that image's selection)}]: the `top` seeds whose nearest image
 *         is most similar (similarity descending, ties: lower seed image id), ranks 1, 2, ...
 *       cluster: clusters_with_seeds, chosen, seeds_in_chosen, chosen_clusters [{cluster, size, seeds, taken,
 *         kept, images [{rank, sim, image}]}]: the `top` chosen clusters with the most seeds (ties: lower
 *         cluster), each with its AUDIT_CLUSTER_IMAGES selected images nearest the centroid} ]}
 */
#ifndef LVD_AUDIT_REPORT_H
#define LVD_AUDIT_REPORT_H

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>

#include "catalog.h"

#define AUDIT_BANDS_MAX 16
#define AUDIT_BINS_MAX 64
#define AUDIT_CLUSTER_IMAGES 4 /* images shown per chosen cluster of a retrieval row */

/* The model whose dedup results to report: name, or NULL for the only model with dedup results. Fails
 * naming the candidates when none or several exist, or when `name` has no dedup results; with optional and
 * no name, none is not an error and gives *model_id = 0. *name_out (may be NULL) gets a malloc'ed copy of
 * the name (NULL when none). */
int audit_model(catalog *c, const char *name, int optional, int64_t *model_id, char **name_out);

/* The model whose retrieval results to report: name, or NULL for the only model with retrieve_rows; none
 * gives *model_id = 0 (not an error, also for catalogs older than the retrieval tables). Fails naming the
 * candidates when several exist, or when `name` has none. *name_out as for audit_model. */
int audit_retrieve_model(catalog *c, const char *name, int64_t *model_id, char **name_out);

/* Band edges for a removal threshold t: t, then every k/10 (k = 1..9) and 0.95 above t, then 1. *n gets
 * the number of bands (edges has n + 1 values, at most AUDIT_BANDS_MAX + 1). E.g. 0.45 gives 0.45-0.5,
 * 0.5-0.6, ..., 0.9-0.95, 0.95-1. */
void audit_bands(double t, double *edges, int32_t *n);

/* Histogram bins for values >= lo_value next to a threshold t: equal widths w (0.01, 0.02, 0.025, 0.05, 0.1
 * or 0.2, the smallest giving at most 40 bins) from a multiple of w at or below min(lo_value, t) (one bin
 * lower when t falls on it, so the threshold line never sits on the left axis) up to 1. */
void audit_hist_bins(double lo_value, double t, double *edges, int32_t *n);

/* Thresholds of the nearest-neighbour "flagged" tables around the run's threshold t: t + 0.05 i for
 * i = -AUDIT_FLAG_BELOW..AUDIT_FLAG_ABOVE (t itself exactly, the others rounded to 9 decimals), those in
 * [-1, 1) only, ascending; *n gets their number (at most AUDIT_FLAG_MAX). */
#define AUDIT_FLAG_BELOW 4
#define AUDIT_FLAG_ABOVE 3
#define AUDIT_FLAG_MAX (AUDIT_FLAG_BELOW + AUDIT_FLAG_ABOVE + 1)
void audit_flag_thresholds(double t, double *out, int32_t *n);

/* Index of the band/bin holding v (see above), or -1 when v is below edges[0]. */
int32_t audit_bin_of(const double *edges, int32_t n, double v);

/* Builds the report of dedup model model_id (named model; 0: no dedup part) and retrieval model retrieve_id
 * (named retrieve_model; 0: no retrieval part) with `top` pairs, seeds or clusters per list (>= 0). NULL on
 * failure. */
cJSON *audit_report(catalog *c, int64_t model_id, const char *model, int64_t retrieve_id, const char *retrieve_model,
                    int32_t top);

/* Reading a report (or any object of it), for the renderers: member key of o (NULL when o is NULL, not an
 * object, or lacks it); that member as a number (NAN unless it is a number), as an integer (the number
 * truncated; 0 unless it is a number), or as a string (NULL unless it is a string). */
const cJSON *audit_get(const cJSON *o, const char *key);
double audit_num(const cJSON *o, const char *key);
int64_t audit_int(const cJSON *o, const char *key);
const char *audit_text(const cJSON *o, const char *key);

/* Writes every removal of model_id as CSV (RFC 4180, header line first), ordered by reason then image id:
 *   image_key, collection, reason, component, ref_key, ref_collection, similarity, ref_similarity,
 *   cause_key, image_sha256, ref_sha256
 * reason is 'duplicate' or 'benchmark'. ref: the kept image (duplicate) or the benchmark image matched
 * (benchmark; ref_collection is the benchmark). similarity: the cosine of the edge that removed the image,
 * whose pool end is cause_key (duplicate: its strongest edge into the component; benchmark: the member whose
 * match removed it, usually itself). ref_similarity: the direct cosine to ref. *rows gets the row count. */
int audit_csv(catalog *c, int64_t model_id, FILE *f, int64_t *rows);

#endif
