/* unionfind.h — disjoint sets over int32 element indices 0..n-1 (union by size, path halving).
 *
 * Memory: 8 bytes per element (parent and size, int32), one allocation. Amortised near-constant time per
 * operation, so joining E edges over N elements costs O(N + E). The representative returned by uf_find is an
 * implementation detail; callers that need a stable name for a set use uf_min (the smallest element).
 */
#ifndef LVD_UNIONFIND_H
#define LVD_UNIONFIND_H

#include <stdint.h>

typedef struct unionfind {
    int32_t n;
    int32_t *parent; /* n entries; parent[i] == i for a root */
    int32_t *size;   /* n entries; meaningful at roots: elements in the set */
    int32_t *min;    /* n entries; meaningful at roots: smallest element of the set */
} unionfind;

/* n singletons. Returns 0 or -1 (out of memory, message set). */
int uf_init(unionfind *u, int32_t n);
void uf_free(unionfind *u);

/* The root of i's set. */
int32_t uf_find(unionfind *u, int32_t i);

/* Joins the sets of a and b; returns 1 if they were different sets, 0 if already joined. */
int uf_union(unionfind *u, int32_t a, int32_t b);

/* The smallest element of i's set, and the number of elements in it. */
int32_t uf_min(unionfind *u, int32_t i);
int32_t uf_size(unionfind *u, int32_t i);

#endif
