/* search.h — the search phase of lvd-dedup: every pool image flagged query (dedup_pool_select_queries)
 * queries the index of all pool embeddings (k + 1 neighbours, itself dropped) and one index per benchmark
 * collection (k neighbours). Pairs above the thresholds are stored (dedup_edges, dedup_benchmark_matches) with
 * the image's dedup_searched row, one transaction per batch of queries, so a killed run resumes where it
 * stopped. A partitioned run (--part I/N) searches its share of the images (by SHA-256) into its part file.
 * Similarities are recomputed from the memory-mapped rows (float32 products summed in double, in index order),
 * so an edge has the same value whichever side found it and in whichever part.
 *
 * The indexes are rebuilt from the memory-mapped embeddings on every run that has something to search,
 * rather than persisted: the catalog stays the only state (a saved index could disagree with it after a
 * crash or an lvd-embed --force), every part of a partitioned run needs the whole index anyway, and adding
 * the vectors is one pass over data the search reads regardless. What a persisted index would save is the
 * IVF training above --exact-max vectors.
 */
#ifndef LVD_DEDUP_SEARCH_H
#define LVD_DEDUP_SEARCH_H

#include <stdint.h>

#include "run.h"

/* Searches every pool image flagged query (nq of them) and writes to x->st.cat: edges with cosine above
 * x->p.threshold (to dedup_edges_found, then folded as by dedup_search_fold), benchmark matches above
 * x->p.bthreshold, and each query's dedup_searched row with x->fp. Sets the images' searched flags,
 * x->index_desc (the pool index) and the counts x->searched, x->edges_found and x->matches_found. Memory: the
 * indexes plus one batch (x->p.batch queries x (k + 1) results). 0 or -1 (batches committed before a failure
 * stay, and the next run folds their edges). */
int dedup_search(dedup_ctx *x, int64_t nq);

/* Moves the model's rows of dedup_edges_found in catalog c into dedup_edges (sorted, each pair once, existing
 * pairs kept) and deletes them, in one transaction; adds the new edges to x->edges_found. Nothing to do
 * (the usual case, a cheap check) returns 0 at once. Run before anything reads dedup_edges: a killed search
 * leaves its committed batches' edges staged. 0 or -1. */
int dedup_search_fold(dedup_ctx *x, catalog *c);

#endif
