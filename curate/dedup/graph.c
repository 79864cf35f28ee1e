/* graph.c — components, spanning-forest weakest links, kept images, benchmark removals, pHash pairs
 * (see graph.h). */
#include "graph.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "unionfind.h"

static int edge_order(const void *pa, const void *pb)
{
    const dg_edge *x = pa, *y = pb;
    if (x->sim != y->sim)
        return x->sim > y->sim ? -1 : 1;
    if (x->a != y->a)
        return x->a < y->a ? -1 : 1;
    if (x->b != y->b)
        return x->b < y->b ? -1 : 1;
    return x->kind - y->kind;
}

void dg_result_free(dg_result *r)
{
    free(r->comp); /* one allocation holds every array */
    memset(r, 0, sizeof *r);
}

int dg_compute(const dg_input *in, dg_edge *edges, int64_t nedges, dg_result *r)
{
    memset(r, 0, sizeof *r);
    int32_t n = in->n;
    for (int64_t e = 0; e < nedges; e++)
        if (edges[e].a < 0 || edges[e].a >= edges[e].b || edges[e].b >= n)
            return lvd_fail("dedup graph: bad edge %lld (%d, %d) over %d nodes", (long long)e, (int)edges[e].a,
                            (int)edges[e].b, (int)n);
    if (nedges > INT32_MAX)
        return lvd_fail("dedup graph: %lld edges exceed the int32 edge index", (long long)nedges);
    enum { NARR = 12 };
    size_t nn = (size_t)(n > 0 ? n : 1);
    int32_t *mem = malloc(NARR * nn * sizeof(int32_t));
    if (!mem)
        return lvd_fail("dedup graph over %d nodes: out of memory", (int)n);
    r->n = n;
    int32_t **arrs[NARR] = {&r->comp, &r->decision, &r->edge, &r->bench_via, &r->size, &r->kept, &r->weakest,
                            &r->strongest, &r->best_bench, &r->removed_dup, &r->removed_bench, NULL};
    for (int k = 0; k < NARR - 1; k++)
        *arrs[k] = mem + (size_t)k * nn;
    int32_t *removed = mem + (size_t)(NARR - 1) * nn; /* per node: 1 if removed for a benchmark */
    unionfind u;
    if (uf_init(&u, n) != 0) {
        dg_result_free(r);
        return -1;
    }
    qsort(edges, (size_t)nedges, sizeof *edges, edge_order);
    for (int32_t i = 0; i < n; i++) {
        r->edge[i] = r->bench_via[i] = r->kept[i] = r->weakest[i] = r->strongest[i] = r->best_bench[i] = -1;
        r->removed_dup[i] = r->removed_bench[i] = 0;
        removed[i] = 0;
    }
    /* Kruskal in sorted order: an edge joining two trees is a spanning-forest edge. Remember the last one per
     * final component afterwards (the weakest, since the order is descending). */
    for (int64_t e = 0; e < nedges; e++) {
        int32_t a = edges[e].a, b = edges[e].b;
        if (r->edge[a] < 0)
            r->edge[a] = (int32_t)e;
        if (r->edge[b] < 0)
            r->edge[b] = (int32_t)e;
        if (uf_union(&u, a, b))
            edges[e].kind |= 0x100; /* tree-edge mark, cleared below */
    }
    for (int32_t i = 0; i < n; i++) {
        r->comp[i] = uf_min(&u, i);
        r->size[i] = 0;
    }
    for (int32_t i = 0; i < n; i++)
        r->size[r->comp[i]]++;
    for (int64_t e = 0; e < nedges; e++) {
        int32_t c = r->comp[edges[e].a];
        if (r->strongest[c] < 0)
            r->strongest[c] = (int32_t)e;
        if (edges[e].kind & 0x100) {
            r->weakest[c] = (int32_t)e;
            edges[e].kind &= ~0x100;
        }
    }
    uf_free(&u);
    /* Benchmarks: the component's strongest match (sim descending, then lowest index). */
    for (int32_t i = 0; i < n; i++) {
        if (!in->has_bench[i])
            continue;
        int32_t c = r->comp[i], b = r->best_bench[c];
        if (b < 0 || in->bench_sim[i] > in->bench_sim[b])
            r->best_bench[c] = i;
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t c = r->comp[i];
        if (in->has_bench[i]) {
            removed[i] = 1;
            r->bench_via[i] = i;
        } else if (in->bench_rule == DG_RULE_COMPONENT && r->best_bench[c] >= 0) {
            removed[i] = 1;
            r->bench_via[i] = r->best_bench[c];
        }
        if (removed[i])
            continue;
        int32_t k = r->kept[c];
        if (k < 0 || in->score[i] > in->score[k]) /* ties keep the lower index, seen first */
            r->kept[c] = i;
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t c = r->comp[i];
        if (removed[i]) {
            r->decision[i] = DG_BENCHMARK;
            r->removed_bench[c]++;
        } else if (r->kept[c] == i) {
            r->decision[i] = DG_KEPT;
        } else {
            r->decision[i] = DG_DUPLICATE;
            r->removed_dup[c]++;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * pHash pairs
 */

typedef struct hv {
    uint64_t key; /* the hash, or one block of it */
    int32_t node; /* lowest node with this hash */
    int32_t u;    /* index of the distinct hash */
} hv;

static int hv_order(const void *pa, const void *pb)
{
    const hv *x = pa, *y = pb;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->node < y->node ? -1 : x->node > y->node;
}

typedef struct edge_buf {
    dg_edge *e;
    int64_t n, cap;
} edge_buf;

static int push(edge_buf *b, int32_t x, int32_t y, int32_t d)
{
    if (b->n == b->cap) {
        int64_t cap = b->cap ? 2 * b->cap : 1024;
        dg_edge *ne = realloc(b->e, (size_t)cap * sizeof *ne);
        if (!ne)
            return lvd_fail("pHash pairs: out of memory");
        b->e = ne;
        b->cap = cap;
    }
    b->e[b->n++] = (dg_edge){.a = x < y ? x : y, .b = x < y ? y : x, .kind = DG_PHASH, .phash_dist = d, .sim = 0};
    return 0;
}

static int pair_order(const void *pa, const void *pb)
{
    const dg_edge *x = pa, *y = pb;
    if (x->a != y->a)
        return x->a < y->a ? -1 : 1;
    return x->b < y->b ? -1 : x->b > y->b;
}

int dg_phash_pairs(const uint64_t *hash, const uint8_t *has, int32_t n, int32_t max_dist, dg_edge **out,
                   int64_t *nout)
{
    *out = NULL;
    *nout = 0;
    if (max_dist < 0 || max_dist > DG_PHASH_MAX_DIST)
        return lvd_fail("pHash distance %d out of range 0..%d", (int)max_dist, DG_PHASH_MAX_DIST);
    edge_buf b = {0};
    int64_t m = 0;
    for (int32_t i = 0; i < n; i++)
        m += has[i] != 0;
    hv *v = malloc((size_t)(m > 0 ? m : 1) * sizeof *v);
    if (!v)
        return lvd_fail("pHash pairs: out of memory");
    m = 0;
    for (int32_t i = 0; i < n; i++)
        if (has[i])
            v[m++] = (hv){.key = hash[i], .node = i};
    qsort(v, (size_t)m, sizeof *v, hv_order);
    /* Equal hashes: chain consecutive nodes; keep one entry (the lowest node) per distinct hash. */
    int64_t nu = 0;
    for (int64_t i = 0; i < m; i++) {
        if (i > 0 && v[i].key == v[i - 1].key) {
            if (push(&b, v[i - 1].node, v[i].node, 0) != 0)
                goto fail;
            continue;
        }
        v[nu++] = v[i];
    }
    if (max_dist > 0 && nu > 1) {
        uint64_t *full = malloc((size_t)nu * sizeof *full);
        if (!full)
            goto oom;
        for (int64_t i = 0; i < nu; i++) {
            full[i] = v[i].key;
            v[i].u = (int32_t)i;
        }
        int32_t nb = max_dist + 1;
        for (int32_t blk = 0; blk < nb; blk++) {
            int32_t lo = 64 * blk / nb, hi = 64 * (blk + 1) / nb; /* bits [lo, hi) */
            uint64_t mask = (hi - lo == 64) ? ~0ull : ((1ull << (hi - lo)) - 1) << lo;
            for (int64_t i = 0; i < nu; i++)
                v[i].key = full[v[i].u] & mask;
            qsort(v, (size_t)nu, sizeof *v, hv_order);
            for (int64_t s = 0; s < nu;) {
                int64_t e = s + 1;
                while (e < nu && v[e].key == v[s].key)
                    e++;
                for (int64_t x = s; x < e; x++)
                    for (int64_t y = x + 1; y < e; y++) {
                        int d = __builtin_popcountll(full[v[x].u] ^ full[v[y].u]);
                        if (d <= max_dist && push(&b, v[x].node, v[y].node, d) != 0) {
                            free(full);
                            goto fail;
                        }
                    }
                s = e;
            }
        }
        free(full);
        /* A pair matching in several blocks was found several times. */
        qsort(b.e, (size_t)b.n, sizeof *b.e, pair_order);
        int64_t w = 0;
        for (int64_t i = 0; i < b.n; i++)
            if (w == 0 || b.e[i].a != b.e[w - 1].a || b.e[i].b != b.e[w - 1].b)
                b.e[w++] = b.e[i];
        b.n = w;
    }
    free(v);
    *out = b.e;
    *nout = b.n;
    return 0;
oom:
    lvd_fail("pHash pairs: out of memory");
fail:
    free(v);
    free(b.e);
    return -1;
}
