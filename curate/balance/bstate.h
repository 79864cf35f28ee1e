/* bstate.h — the state one lvd-balance run shares between its modules: the options, the configuration, the
 * model, the pool, the tree and the sample. bpool.h loads the pool, btree.h settles the tree (built, or
 * brought up to date with the pool) and loads it, bsample.h draws and records the sample and the summary. The
 * executable owns it.
 *
 * Images are identified by their images.id; the pool and the tree's points are sorted by id. A pool image's
 * vector is row `row` of mapped file `file` of the run's vec_files set (vecfiles.h): nothing is copied until a
 * k-means needs the vectors in memory. Schema: schemas/catalog-007.sql, whose definitions this follows.
 */
#ifndef LVD_BALANCE_BSTATE_H
#define LVD_BALANCE_BSTATE_H

#include <stdint.h>

#include "bconfig.h"
#include "catalog.h"
#include "hkmeans.h"
#include "sampler.h"
#include "stage.h"
#include "vecfiles.h"

typedef struct bal_item {
    int64_t id;   /* images.id */
    int64_t row;  /* row in its .npy file */
    int32_t file; /* index in the run's vec_files set */
} bal_item;

typedef struct bal_opts {
    const char *model;        /* --model: the embeddings clustered */
    const char *dedup_model;  /* --dedup-model, NULL: the only model with dedup results */
    const char *config_path;  /* --config */
    const char *from;         /* --from, NULL: the config's `from` */
    int64_t target;           /* --target, -1: the config's target_size */
    int rebuild;              /* --rebuild: build a new tree even if the current one fits */
    int json;
} bal_opts;

typedef struct bal_ctx {
    bal_opts o;
    const char *work;
    stage st;
    bconfig cfg;
    char source[16];          /* "dedup" | "retrieve" */
    int64_t model_id, dedup_model_id; /* dedup_model_id 0 for source retrieve */
    int32_t dim;
    vec_files vf;
    bal_item *pool;           /* (npool) by id */
    int64_t npool;
    /* the tree (btree.h) */
    char tree_params[2048];   /* the tree-shaping config keys as JSON */
    char tree_fp[65];
    int64_t tree_id;          /* balance_trees.id of the current tree */
    int64_t built_points;     /* pool images it was built on */
    int built_now;            /* 1: this run built it */
    int64_t added_now, removed_now; /* points assigned to / deleted from an existing tree by this run */
    int64_t added_total;      /* points assigned since the tree was built (this run included) */
    hkm_tree t;               /* the tree as stored: t.n points, labels, dists, per level k, parents, sizes */
    int64_t *ids;             /* (t.n) the images.id of the tree's points, ascending */
    double objective[HKM_MAX_LEVELS]; /* per level, when built */
    /* the sample (bsample.h) */
    int64_t target;           /* in effect */
    int64_t sample_id;
    int sampled_now;          /* 1: this run drew the sample */
    bal_sample s;             /* the sample, when drawn this run or reloaded */
    int64_t total, distinct;
} bal_ctx;

/* Records "<catalog path>: <what>: <SQLite's message>" and returns -1. */
int bal_db_error(catalog *c, const char *what);

/* The vector of pool item it (x->dim floats) into out. 0 or -1 (message names the file). */
int bal_item_vec(const bal_ctx *x, const bal_item *it, float *out);

void bal_ctx_release(bal_ctx *x);

#endif
