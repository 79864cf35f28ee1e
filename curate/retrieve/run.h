/* run.h — the state one lvd-retrieve run shares between its modules: the options, the retrieval model, the
 * pool, the registry rows with their seed images, the mapped embedding files and the run's stage. pool.h
 * loads and records it (the prepare phase), sample.h and cluster.h search (partitionable), select.h turns the
 * stored search results into selections (one-part runs and --merge). The executable owns it.
 *
 * Images are identified by their images.id; item lists are sorted by id, so a lookup is a binary search. An
 * item's vector is row `row` of mapped file `file` of the run's vec_files set (vecfiles.h): nothing is copied.
 * Schema: schemas/catalog-006.sql, whose definitions (pool, generation, rank) this module follows.
 */
#ifndef LVD_RETRIEVE_RUN_H
#define LVD_RETRIEVE_RUN_H

#include <stdint.h>

#include "catalog.h"
#include "dist.h"
#include "registry.h"
#include "stage.h"
#include "vecfiles.h"

/* The paper's retrieval pool (after dedup, §3), the size its cluster parameters were chosen for. */
#define RT_PAPER_POOL 744000000.0

/* Extra neighbours asked of FAISS per seed beyond k: candidates are re-ranked by the exact (float64)
 * similarity, ties broken by the lower image id, so float32 rounding inside FAISS cannot reorder the k-th. */
#define RT_SAMPLE_SLACK 16

typedef struct rt_item {
    int64_t id;   /* images.id */
    int64_t row;  /* row in its .npy file */
    int32_t file; /* index in the run's vec_files set */
    int32_t gen;  /* pool images: the generation it entered at; seeds: unused */
} rt_item;

typedef struct rt_items {
    rt_item *v;
    int64_t n, cap;
} rt_items;

/* One registry row as this run uses it: the registry's values (not owned), resolved parameters, catalog
 * ids, the seed images and the counts of the summary. */
typedef struct rt_row {
    const registry_row *reg; /* the registry row */
    registry_method method;
    int32_t k;               /* sample */
    int64_t clusters, per_cluster, cap, min_seeds; /* cluster, in effect (clusters: of its k-means; cap:
                                                       after --scale for the current pool) */
    int64_t clusters_setting, cap_setting; /* cluster: the registry's or --clusters/--cap value */
    char km_setting[64];     /* cluster: which k-means it shares, "auto:<clusters>" or "fixed:<clusters>" */
    char param_text[1280];   /* the result-shaping parameters as JSON (fingerprinted) */
    char fp[65];
    int64_t id;              /* retrieve_rows.id (0 until recorded) */
    int64_t collection_id;   /* -1: the collection does not exist */
    int skipped;             /* 1: not run this time, reason says why */
    char reason[640];
    int pending;             /* its selection must be (re)computed */
    int only;                /* selected by --only (all rows when --only is absent) */
    rt_items seeds;          /* seed images with an embedding of the model, by id */
    char seeds_digest[65];
    int64_t kmeans_id;       /* cluster: the k-means it uses */
    /* counts of the last selection (summary) */
    int64_t n_seeds, retrieved, collisions, unique_images, capped, final;
    int64_t searched;        /* this run: seeds searched (sample) or assigned (cluster) */
} rt_row;

/* One k-means of the pool (retrieve_kmeans), shared by every cluster row with its number of centroids. */
typedef struct rt_kmeans {
    int64_t id;
    int64_t clusters;
    float *centroids;        /* (clusters, dim) */
    int64_t pool_size, pool_gen; /* when trained */
} rt_kmeans;

#define RT_MAX_KMEANS 32

typedef struct rt_opts {
    const char *model, *dedup_model; /* dedup_model NULL: the only model with dedup decisions */
    int no_dedup;
    const char *registry_path;
    const char *only;                /* --only ROW,... or NULL */
    int scale_auto;                  /* --scale auto (1) or none (0) */
    int64_t clusters, per_cluster, cap, min_seeds; /* global overrides, -1 = registry or paper default */
    int32_t kmeans_iters;
    uint64_t kmeans_seed;
    int recluster, prepare_only, force, merge;
    int64_t exact_max;               /* flat search up to this many pool vectors */
    const char *factory;
    int32_t nprobe;
    int64_t batch;                   /* seeds per search call and transaction */
    const char *csv_path;
    int json;
} rt_opts;

typedef struct rt_ctx {
    rt_opts o;
    const char *work;
    stage st;
    catalog *src;            /* where the pool, seeds and state are read: catalog.db (st.cat, or main_ro) */
    int parted;              /* a --part I/N run with N > 1 */
    registry reg;
    int64_t model_id, dedup_model_id; /* dedup_model_id 0: --no-dedup */
    char model_sha[65];
    int32_t dim;
    vec_files vf;
    rt_items pool;           /* by id */
    int32_t gen;             /* the current pool generation */
    int64_t pool_entered, pool_left; /* this run */
    rt_row *rows;
    int nrows;
    rt_kmeans km[RT_MAX_KMEANS];
    int nkm;
    char ptext[2048];        /* the run's parameters as JSON */
    char fp[65];
    double assign_s;         /* wall seconds in kmeans_assign so far (logged; the benchmark reads it) */
    lvd_dist *dist;          /* NULL: one process; else the k-means runs over its ranks (kmeans_ranks.h) */
} rt_ctx;

int rt_items_push(rt_items *s, const rt_item *it);
int64_t rt_items_find(const rt_items *s, int64_t id);

/* The vector of it (x->dim floats) into out. 0 or -1 (message names the file). */
int rt_item_vec(const rt_ctx *x, const rt_item *it, float *out);

/* Records "<catalog path>: <what>: <SQLite's message>" and returns -1. */
int rt_db_error(catalog *c, const char *what);

/* 1 if this run's part owns the image (its id, in decimal, hashed as the part key). */
int rt_part_owns(const rt_ctx *x, int64_t image_id);

void rt_ctx_release(rt_ctx *x);

#endif
