/* run.h — the state one lvd-dedup run shares between its modules: the parameters, the pool and benchmark
 * images with an embedding of the model (pool.h loads them), the run's stage and mapped embedding files,
 * and the counts of the summary. search.h and decide.h work on it; the executable owns it.
 *
 * Images are identified by their images.id; item lists are sorted by id, so a lookup is a binary search and a
 * pool list's positions number its images in increasing id (what graph.h's nodes need). An item's vector
 * is row `row` of mapped file `file` of the run's vec_files set (vecfiles.h): nothing is copied.
 */
#ifndef LVD_DEDUP_RUN_H
#define LVD_DEDUP_RUN_H

#include <stdint.h>

#include "catalog.h"
#include "vecfiles.h"
#include "stage.h"

#define DEDUP_MAX_BENCH 256 /* benchmark collections one run handles (x->b has room for this many) */

/* Keep rules (--keep-rule): what the score of an image is; dedup_keep_names[rule] is the option value. */
enum { DEDUP_KEEP_PIXELS = 0, DEDUP_KEEP_BYTES = 1, DEDUP_KEEP_ID = 2 };

/* Option values, NULL-terminated (opt_choice), also written to the catalog and the fingerprint:
 * benchmark rules (0 component: the whole component goes, DINOv2's rule; 1 image: only the matching image)
 * and keep rules (DEDUP_KEEP_*). */
extern const char *const dedup_brule_names[];
extern const char *const dedup_keep_names[];

typedef struct dedup_params {
    const char *model;     /* embedding model name (lvd-embed --name) */
    int32_t k;             /* neighbours searched per pool image, in the pool and in each benchmark */
    double threshold, bthreshold; /* cosine above which pool images join / a benchmark match removes */
    int brule, keep;       /* indices into dedup_brule_names / dedup_keep_names */
    int32_t phash; /* -1: off */
    int64_t batch;         /* queries per search call and transaction */
    int64_t exact_max;     /* flat index up to this many pool vectors, IVF beyond */
    const char *factory;   /* FAISS index_factory string, or NULL (knn.h's default) */
    int32_t nprobe; /* 0: automatic */
} dedup_params;

/* One pool (or benchmark) image with an embedding. */
typedef struct dedup_item {
    int64_t id;       /* images.id */
    int64_t row;      /* row in its .npy file */
    int64_t score;    /* keep-rule score */
    uint64_t phash;
    int32_t file;     /* index in the vec_files set */
    uint8_t has_phash, decided, searched, query;
    char sha[65];     /* pool images: for the part hash */
} dedup_item;

typedef struct dedup_items {
    dedup_item *v;
    int64_t n, cap;
} dedup_items;

typedef struct dedup_bench {
    int64_t id; /* collections.id */
    char name[128];
    dedup_items im;
    int64_t members; /* images in the collection, with or without an embedding */
    int64_t removed; /* pool images removed for it (summary) */
} dedup_bench;

typedef struct dedup_ctx {
    dedup_params p;
    const char *work;      /* the work directory (not copied) */
    int force, json, merge;
    int64_t model_id;
    char model_sha[65];
    int32_t dim;
    char ptext[1024];      /* the parameters as JSON (the run's params) */
    char fp[65];           /* their fingerprint */
    stage st;
    vec_files vf;
    dedup_items pool;
    dedup_bench *b;        /* room for DEDUP_MAX_BENCH, the caller's */
    int nb;
    char index_desc[512];  /* the pool index searched this run, "" if none */
    /* counts for the summary */
    int64_t searched, new_decided, changed_components, edges_found, matches_found;
    int64_t nearest_written; /* dedup_nearest rows of the images searched (pool and benchmark rows) */
    int64_t nearest_updated; /* older pool images' pool rows moved to a newer, more similar image */
} dedup_ctx;

/* Appends *it to s (growing it). 0 or -1 (out of memory). */
int dedup_items_push(dedup_items *s, const dedup_item *it);

/* Index of image id in a list sorted by id, or -1. */
int64_t dedup_items_find(const dedup_items *s, int64_t id);

/* The vector of it (x->dim floats) into out. 0 or -1 (message names the file). */
int dedup_item_vec(const dedup_ctx *x, const dedup_item *it, float *out);

/* Records "<catalog path>: <what>: <SQLite's message>" and returns -1. */
int dedup_db_error(catalog *c, const char *what);

/* Frees what the run loaded into x: the mapped files, the pool and the benchmarks' image lists (not x->b). */
void dedup_ctx_release(dedup_ctx *x);

#endif
