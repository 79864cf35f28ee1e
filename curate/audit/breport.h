/* breport.h — what lvd-balance did, read from the catalog (schema 7, catalog-007.sql): the report's
 * `balance` object, rendered as text by lvd-audit and as a section of the HTML page (page.h).
 *
 * Read-only, like report.h. The object, for the current sample of one model (the newest balance_samples row
 * of its trees):
 *   {model, model_id,
 *    tree {id, source, n_levels, built_points, points, created_at, config_path},
 *    sample {id, target, multiplier, sampling, total, distinct, points, created_at},
 *    levels [ per level 1..n_levels: {level, k, clusters (with points), objective (null when not recorded),
 *      before {min, p10, p25, median, p75, p90, max}: the clusters' point counts (those with points),
 *      after {the same}: their quotas in the sample (copies counted), max_ratio_before, max_ratio_after
 *      (max / min over those clusters; null when the min is 0)} ],
 *    largest [cluster], smallest [cluster]: the AUDIT_BALANCE_CLUSTERS top-level clusters with the most and
 *      the fewest points (ties: lower cluster), cluster = {cluster, size, quota, images [{image, copies}]}:
 *      up to AUDIT_CLUSTER_IMAGES_BALANCE of its sampled images, most copies first (ties: lower image id)}
 * where image is {id, key, collection, sha256} as report.h (key and collection of its first pool
 * membership). Quantiles are the lower nearest rank: sorted value at index floor((n - 1) q). */
#ifndef LVD_AUDIT_BREPORT_H
#define LVD_AUDIT_BREPORT_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "catalog.h"

#define AUDIT_BALANCE_CLUSTERS 3       /* largest and smallest top-level clusters shown */
#define AUDIT_CLUSTER_IMAGES_BALANCE 4 /* sampled images shown per such cluster */

/* The model whose balance sample to report: name, or NULL for the only model with one; none gives
 * *model_id = 0 (not an error, also for catalogs older than schema 7). Fails naming the candidates when
 * several exist, or when `name` has none. *name_out (may be NULL) gets a malloc'ed copy of the name. */
int audit_balance_model(catalog *c, const char *name, int64_t *model_id, char **name_out);

/* The balance object of model_id (named model). NULL on failure (message set). */
cJSON *audit_balance(catalog *c, int64_t model_id, const char *model);

#endif
