/* graph.h — the decisions of near-duplicate removal, computed from a similarity graph: connected
 * components, the maximum spanning forest's weakest link per component, one kept image per component, and
 * benchmark removals. Pure computation over int32 node indices (no I/O); lvd-dedup feeds it from the catalog.
 *
 * Nodes are 0..n-1, numbered in increasing image id, so "lowest index" = "lowest image id" and a component's
 * id (its smallest index) does not depend on the order edges were found in. Edges are undirected, a < b.
 *
 * Definitions (the same words as schemas/catalog-003.sql):
 *   component      connected component of the graph (union-find).
 *   spanning forest edges in descending similarity, ties by (a, b) ascending, kept when they join two trees
 *                  (Kruskal). Its weakest edge in a component is the maximin chaining link.
 *   strongest edge of a node: its incident edge first in that same order.
 *   kept           per component, among the members not removed for a benchmark, the highest `score`, then
 *                  the lowest index (score = original pixels, file bytes, or 0 for "lowest id").
 *   benchmark      a node with a match (bench_sim given) is removed; under DG_RULE_COMPONENT its whole
 *                  component goes with it, attributed to the component's strongest match (sim descending, then
 *                  lowest node index).
 * Memory: O(n + E), one sort of the edges.
 */
#ifndef LVD_DEDUP_GRAPH_H
#define LVD_DEDUP_GRAPH_H

#include <stddef.h>
#include <stdint.h>

enum { DG_KNN = 0, DG_PHASH = 1 };                          /* edge kinds */
enum { DG_KEPT = 0, DG_DUPLICATE = 1, DG_BENCHMARK = 2 };   /* decisions */
enum { DG_RULE_COMPONENT = 0, DG_RULE_IMAGE = 1 };          /* benchmark rules */

typedef struct dg_edge {
    int32_t a, b; /* node indices, a < b */
    int32_t kind; /* DG_KNN or DG_PHASH */
    int32_t phash_dist; /* -1 when unknown */
    double sim;
} dg_edge;

typedef struct dg_input {
    int32_t n;
    const int64_t *score;      /* n: keep-rule score, higher is kept first */
    const uint8_t *has_bench;  /* n: 1 if the node has a benchmark match above the threshold */
    const double *bench_sim;   /* n: the node's strongest match (meaningful where has_bench) */
    int32_t bench_rule;        /* DG_RULE_COMPONENT or DG_RULE_IMAGE */
} dg_input;

typedef struct dg_result {
    int32_t n;
    /* per node */
    int32_t *comp;        /* component id: smallest node index of the component */
    int32_t *decision;    /* DG_KEPT / DG_DUPLICATE / DG_BENCHMARK */
    int32_t *edge;        /* index into the (sorted) edges of the node's strongest edge, -1 for a singleton */
    int32_t *bench_via;   /* DG_BENCHMARK: the node whose match removed it (itself or a component member); -1 */
    /* per component, indexed by component id (meaningful where comp[i] == i) */
    int32_t *size;
    int32_t *kept;        /* kept node, -1 if every member was removed */
    int32_t *weakest;     /* index into the sorted edges of the weakest spanning-forest edge, -1 for singletons */
    int32_t *strongest;   /* index of the strongest edge inside the component, -1 for singletons */
    int32_t *best_bench;  /* member with the component's strongest benchmark match, -1 if none */
    int32_t *removed_dup, *removed_bench;
} dg_result;

/* Sorts edges in place into the spanning-forest order (sim descending, then a, b ascending) and computes r.
 * Edges must have 0 <= a < b < n. Returns 0 or -1 (out of memory or a bad edge, message set). */
int dg_compute(const dg_input *in, dg_edge *edges, int64_t nedges, dg_result *r);
void dg_result_free(dg_result *r);

/* Pairs of nodes whose 64-bit pHashes differ by at most max_dist bits (0 <= max_dist <= DG_PHASH_MAX_DIST).
 * Nodes with has[i] == 0 take no part. Nodes with identical hashes are chained (each joined to the previous
 * one in index order) rather than joined pairwise, and two hash values within max_dist are joined through
 * their lowest-index nodes: the pairs connect exactly what "distance <= max_dist" connects, with O(n)
 * pairs for groups of equal hashes. Candidates come from the pigeonhole principle (max_dist + 1 blocks of
 * the hash, one matching exactly). *out (malloc'ed, caller frees) gets *nout edges of kind DG_PHASH, a < b,
 * sim 0 (the caller fills it in), phash_dist set. */
#define DG_PHASH_MAX_DIST 10
int dg_phash_pairs(const uint64_t *hash, const uint8_t *has, int32_t n, int32_t max_dist, dg_edge **out,
                   int64_t *nout);

#endif
