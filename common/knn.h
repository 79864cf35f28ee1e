/* knn.h — nearest-neighbour search over L2-normalised float32 vectors by inner product (= cosine), through
 * FAISS's official C API (the headers in faiss/c_api/; the subset lvd uses is implemented in faiss_c_impl.cpp
 * against Debian's libfaiss.a, so this module and its callers are plain C).
 *
 * Index choice: exact IndexFlatIP (under an IDMap, for the caller's ids) when the indexed set has at most
 * opts.exact_max vectors; beyond it an approximate index from an index_factory string: by default
 * KNN_AUTO_FACTORY_FMT with nlist a power of two near KNN_AUTO_LISTS_PER_SQRT * sqrt(n), or the caller's
 * factory string, e.g. "IVF4096,PQ32" (its index must take ids: IVF ones do; prefix others, such as HNSW32 or
 * Flat, with "IDMap,"). IVF indexes are trained on a sample of at most opts.train_max vectors and searched
 * with opts.nprobe lists. The automatic parameters are those benchmarks/dedup_knn.sh measured on 1,000,000 x
 * 384 clustered vectors (see benchmarks/RESULTS.md). Why IVF-Flat: in Debian's generic (SSE2) build of FAISS
 * the IVF list scan is plain C++ at ~0.3 us per 384-d vector, while k-means training, list assignment and flat
 * search run on OpenBLAS SGEMM; IVF-PQ and IVF-SQ8 trained or scanned slower there, and IVF-Flat's lists can be
 * scanned by SGEMM (list-major, below). The cost is ~nprobe * n / nlist scanned vectors per query, which
 * KNN_AUTO_SCAN bounds. knn_describe says which index was chosen and the recall to
 * expect, for logs.
 *
 * List-major scan: an IVF-Flat index (the automatic choice, or a factory string "IVF<n>,Flat") is searched
 * list by list rather than query by query. The quantizer picks each query's nprobe lists as FAISS's IVF does;
 * then every list is searched once for all the queries of a batch that probe it, through an IndexFlatIP over
 * the list's vectors (FAISS's BLAS inner-product block plus heap for 20+ queries), lists in parallel, and each
 * query's nprobe partial top-k are merged. The answer is that of IndexIVFFlat with the same quantizer and
 * nprobe (same lists, each scanned exhaustively) up to float rounding and the order of ties; the speed is that
 * of SGEMM instead of one scalar dot product per (query, vector). It pays for large query batches (all of a
 * pool's images), where each list is scanned for many queries at once. Candidates of one sub-batch of queries
 * (nprobe x k per query) are bounded to 256 MB. opts.faiss_scan keeps FAISS's own scan (the baseline of
 * benchmarks/dedup_knn.sh). knn_save writes a plain IndexIVFFlat; knn_load gives an index FAISS scans.
 *
 * Shapes: vectors are row-major (n, d) float32; search results are (nq, k) similarities (descending per
 * row) and ids (the caller's int64 ids given to knn_add; -1, with similarity -inf, where fewer than k results
 * exist). Large inputs are processed in batches of at most opts.batch rows, so memory stays bounded by the
 * index plus one batch. Thread count: FAISS's OpenMP threads (omp_set_num_threads).
 *
 * Errors follow err.h (0 / -1 and lvd_errmsg()); failures inside FAISS carry FAISS's own message.
 */
#ifndef LVD_KNN_H
#define LVD_KNN_H

#include <inttypes.h> /* PRId64 in KNN_AUTO_FACTORY_FMT */
#include <stddef.h>
#include <stdint.h>

/* The automatic choice (measured, see above): factory format; lists per sqrt(n); nprobe: enough lists to scan
 * about KNN_AUTO_SCAN vectors per query (n / nlist per list), at least KNN_AUTO_NPROBE_MIN; the recall@64
 * to expect; the least training vectors per list; the default training sample size. */
#define KNN_AUTO_FACTORY_FMT "IVF%" PRId64 ",Flat"
#define KNN_AUTO_LISTS_PER_SQRT 4.0
#define KNN_AUTO_SCAN 2048
#define KNN_AUTO_NPROBE_MIN 8
#define KNN_AUTO_EXPECTED_RECALL 0.95
#define KNN_AUTO_MIN_TRAIN 40
#define KNN_TRAIN_MAX_DEFAULT 163840

typedef struct knn_opts {
    int64_t exact_max;   /* flat (exact) search up to this many indexed vectors (default 200,000) */
    const char *factory; /* NULL: automatic choice; else an index_factory string (metric inner product) */
    int32_t nprobe;      /* IVF lists searched (0 = automatic, see KNN_AUTO_SCAN) */
    int64_t train_max;   /* training vectors at most: knn_train samples this many from what it is given
                            (default KNN_TRAIN_MAX_DEFAULT). The automatic nlist keeps >= KNN_AUTO_MIN_TRAIN
                            per list, so the default caps it at 4096: raise train_max for sets beyond ~2M. */
    int64_t batch;       /* rows per add/search batch (default 65,536) */
    uint64_t seed;       /* which rows knn_train samples (FAISS's k-means uses its own fixed seed) */
    int faiss_scan;      /* 1: IVF-Flat searched by FAISS's own per-query scan, not list-major (default 0) */
} knn_opts;

/* Defaults above. */
void knn_opts_default(knn_opts *o);

typedef struct knn_index knn_index;

/* Creates an index for d-dimensional vectors, sized for about n_expected vectors (decides exact vs IVF); o NULL
 * means the defaults. A factory string FAISS rejects fails here, with FAISS's message. An IVF index must be
 * trained before use: knn_train with a sample (e.g. evenly spaced vectors of the set to be added). */
int knn_create(int32_t d, int64_t n_expected, const knn_opts *o, knn_index **out);
void knn_free(knn_index *ix);

/* The dimension the index was created (or saved) with; callers check their vectors against it. */
int32_t knn_dim(const knn_index *ix);

/* 1 if the index needs knn_train before knn_add / knn_search. knn_train on an index that needs no training
 * does nothing; given more than opts.train_max vectors it trains on a random sample of train_max of them. */
int knn_needs_training(const knn_index *ix);
int knn_train(knn_index *ix, const float *x, int64_t n);

/* Adds n vectors (n x knn_dim) with the caller's ids. Fails on an untrained index. */
int knn_add(knn_index *ix, const float *x, const int64_t *ids, int64_t n);

/* For each of nq queries: the k most similar indexed vectors (sims, ids: nq x k). Fails on an untrained index. */
int knn_search(knn_index *ix, const float *q, int64_t nq, int32_t k, float *sims, int64_t *ids);

/* Vector i (d floats) of a set the caller holds elsewhere (memory-mapped files, a subset of a list) into out;
 * 0 or -1 with a message. */
typedef int (*knn_row_fn)(void *ctx, int64_t i, float *out);

/* An index over the n vectors get() yields, with ids 0..n-1: created for n vectors (o NULL: defaults), trained
 * when it needs it on an evenly spaced sample of at most opts.train_max of them, then filled in batches of
 * opts.batch rows, so memory stays the index plus one batch. */
int knn_build(int32_t d, int64_t n, const knn_opts *o, knn_row_fn get, void *ctx, knn_index **out);

/* Number of indexed vectors. */
int64_t knn_count(const knn_index *ix);

/* One line for logs: "IndexFlatIP (exact), 12000 vectors, d 384" or "IVF4096,Flat nprobe 64, 2000000 vectors,
 * d 384, expected recall@64 >= 0.95 on clustered data (measure: knn_recall)"; after knn_recall, the measured
 * recall instead of the expected one. */
void knn_describe(const knn_index *ix, char *buf, size_t cap);

/* Recall of ix against exact search on nq sample queries q (k neighbours each): the fraction of the exact
 * top-k found by ix (a result tied in similarity with the exact k-th counts as found). Builds a temporary flat
 * index over x (n vectors, which must carry ids 0..n-1 in ix), so it needs n x d floats of memory. */
int knn_recall(knn_index *ix, const float *x, int64_t n, const float *q, int64_t nq, int32_t k, double *recall);

/* Persists / restores an index (faiss write_index / read_index) so incremental runs search new vectors
 * against the existing index without rebuilding it. knn_save writes a temporary file, fsyncs and renames it.
 * knn_load fails, naming the file, when the index's dimension is not d (d 0: any) or its metric is not the
 * inner product; IVF parameters (nlist, nprobe) come from the file. */
int knn_save(knn_index *ix, const char *path);
int knn_load(const char *path, int32_t d, knn_index **out);

#endif
