/* cluster.h — the k-means of cluster rows: training (or reusing) one spherical k-means of the pool per
 * setting, and assigning pool images and the rows' seed images to their nearest centroid.
 *
 * Every cluster row with the same clusters setting ("auto:<n>" under --scale auto, "fixed:<n>" otherwise)
 * shares one k-means (retrieve_kmeans), reused by later runs until --recluster. Its number of centroids is
 * fixed when it is trained: the setting's n, or under --scale auto n x pool / RT_PAPER_POOL rounded (at least
 * 1), and never more than the pool. Training runs on an evenly spaced sample of at most 256 pool images per
 * centroid (FAISS's default max_points_per_centroid), common/kmeans.h with --kmeans-iters and --kmeans-seed.
 * The centroids go to WORK/clusters/<model>/kmeans-<id>-<clusters>.npy before the row that names them is
 * committed.
 *
 * Assignment is incremental: images that have no assignment for the k-means yet (pool images that entered
 * since, new seeds) are assigned, in batches committed one by one; a partitioned run assigns those its part
 * owns (by image id). The stored similarity is the exact (float64) cosine to the chosen centroid.
 */
#ifndef LVD_RETRIEVE_CLUSTER_H
#define LVD_RETRIEVE_CLUSTER_H

#include "run.h"

/* One-part runs: settles the k-means of every cluster row (trains the missing ones, or all with
 * --recluster), sets each row's kmeans_id and clusters; a row whose fixed number of clusters exceeds the
 * pool is skipped. Partitioned runs (trained = 0): loads the current ones from catalog.db, an error when one
 * is missing. */
int rt_cluster_prepare(rt_ctx *x, int train);

/* Assigns every image that needs it (see above). */
int rt_cluster_assign(rt_ctx *x);

#endif
