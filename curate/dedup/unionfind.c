/* unionfind.c — disjoint sets (see unionfind.h). */
#include "unionfind.h"

#include <stdlib.h>

#include "err.h"

int uf_init(unionfind *u, int32_t n)
{
    u->n = n;
    u->parent = malloc(3 * (size_t)(n > 0 ? n : 1) * sizeof(int32_t));
    if (!u->parent)
        return lvd_fail("union-find over %d elements: out of memory", (int)n);
    u->size = u->parent + n;
    u->min = u->size + n;
    for (int32_t i = 0; i < n; i++) {
        u->parent[i] = i;
        u->size[i] = 1;
        u->min[i] = i;
    }
    return 0;
}

void uf_free(unionfind *u)
{
    free(u->parent);
    u->parent = u->size = u->min = NULL;
    u->n = 0;
}

int32_t uf_find(unionfind *u, int32_t i)
{
    while (u->parent[i] != i) {
        u->parent[i] = u->parent[u->parent[i]];
        i = u->parent[i];
    }
    return i;
}

int uf_union(unionfind *u, int32_t a, int32_t b)
{
    a = uf_find(u, a);
    b = uf_find(u, b);
    if (a == b)
        return 0;
    if (u->size[a] < u->size[b]) {
        int32_t t = a;
        a = b;
        b = t;
    }
    u->parent[b] = a;
    u->size[a] += u->size[b];
    if (u->min[b] < u->min[a])
        u->min[a] = u->min[b];
    return 1;
}

int32_t uf_min(unionfind *u, int32_t i) { return u->min[uf_find(u, i)]; }
int32_t uf_size(unionfind *u, int32_t i) { return u->size[uf_find(u, i)]; }
