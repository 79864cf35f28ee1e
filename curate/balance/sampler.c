/* sampler.c — balanced top-down sampling: see sampler.h. */
#include "sampler.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "brng.h"
#include "err.h"

int64_t bal_water_level(const int64_t *cap, int64_t m, int64_t target)
{
    int64_t mx = 0, sum = 0;
    for (int64_t i = 0; i < m; i++) {
        mx = cap[i] > mx ? cap[i] : mx;
        sum += cap[i];
    }
    if (sum <= target)
        return mx;
    int64_t lo = 0, hi = mx; /* f(lo) <= target < f(hi) */
    while (hi - lo > 1) {
        int64_t mid = lo + (hi - lo) / 2, f = 0;
        for (int64_t i = 0; i < m; i++)
            f += cap[i] < mid ? cap[i] : mid;
        if (f <= target)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* The walk's state. */
typedef struct walk {
    const hkm_tree *t;
    bal_sample *s;
    int32_t mult;
    char strategy;
    brng r;
    int64_t *cstart[HKM_MAX_LEVELS]; /* level l >= 1: children of each level-(l+1) cluster: cstart (k + 1) */
    int64_t *child[HKM_MAX_LEVELS];  /* ... and their indices (k of level l), ascending per parent */
    int64_t *pstart, *pts;           /* points of each level-1 cluster, ascending ('r') or by distance ('c') */
    int64_t *capbuf, *qbuf, *idx;    /* scratch of the largest sibling group */
} walk;

static int64_t max_cap(const int64_t *cap, int64_t m)
{
    int64_t mx = 0;
    for (int64_t i = 0; i < m; i++)
        mx = cap[i] > mx ? cap[i] : mx;
    return mx;
}

/* Water-fills target over m clusters of capacities cap into q (m). Returns the water level. */
static int64_t water(walk *w, const int64_t *cap, int64_t m, int64_t target, int64_t *q)
{
    int64_t x = bal_water_level(cap, m, target), sum = 0, nc = 0;
    for (int64_t i = 0; i < m; i++) {
        q[i] = cap[i] < x ? cap[i] : x;
        sum += q[i];
    }
    int64_t rem = target - sum; /* < the clusters above x, unless every cluster is at its capacity */
    if (rem > 0 && sum < target && x < max_cap(cap, m)) {
        for (int64_t i = 0; i < m; i++)
            if (cap[i] > x)
                w->idx[nc++] = i;
        brng_choose(&w->r, w->idx, nc, rem);
        for (int64_t j = 0; j < rem; j++)
            q[w->idx[j]]++;
    }
    return x;
}

static void leaf(walk *w, int64_t c, int64_t q)
{
    int64_t *p = w->pts + w->pstart[c], s = w->pstart[c + 1] - w->pstart[c];
    if (s == 0 || q == 0)
        return;
    int64_t reps = q / s, rem = q - reps * s;
    for (int64_t i = 0; i < s; i++)
        w->s->copies[p[i]] = (int32_t)reps;
    if (rem > 0) {
        if (w->strategy == 'r') {
            memcpy(w->idx, p, (size_t)s * sizeof *p); /* ascending */
            brng_choose(&w->r, w->idx, s, rem);
            for (int64_t j = 0; j < rem; j++)
                w->s->copies[w->idx[j]]++;
        } else {
            for (int64_t j = 0; j < rem; j++)
                w->s->copies[p[j]]++;
        }
    }
}

/* Cluster c of level l (0-based) with quota q: its subtree. 0, or -1 out of memory. */
static int descend(walk *w, int32_t l, int64_t c, int64_t q)
{
    if (l == 0) {
        leaf(w, c, q);
        return 0;
    }
    const int64_t *ch = w->child[l - 1] + w->cstart[l - 1][c];
    int64_t m = w->cstart[l - 1][c + 1] - w->cstart[l - 1][c];
    const int64_t *size = w->t->level[l - 1].size;
    int64_t *cap = malloc((size_t)(m ? m : 1) * sizeof *cap), *qq = malloc((size_t)(m ? m : 1) * sizeof *qq);
    if (!cap || !qq) {
        free(cap);
        free(qq);
        return lvd_fail("balance sampler: out of memory for %" PRId64 " children", m);
    }
    for (int64_t i = 0; i < m; i++)
        cap[i] = size[ch[i]] * w->mult;
    int64_t x = water(w, cap, m, q, qq);
    int64_t sumcap = 0;
    for (int64_t i = 0; i < m; i++)
        sumcap += cap[i];
    if (sumcap > q && (w->s->cap[l - 1] == INT64_MAX || x > w->s->cap[l - 1]))
        w->s->cap[l - 1] = x;
    for (int64_t i = 0; i < m; i++)
        w->s->quota[l - 1][ch[i]] = qq[i];
    int rc = 0;
    for (int64_t i = 0; i < m && rc == 0; i++)
        rc = descend(w, l - 1, ch[i], qq[i]);
    free(cap);
    free(qq);
    return rc;
}

/* Sorting points of a leaf by (distance, index). */
typedef struct pkey {
    float d;
    int64_t i;
} pkey;

static int pkey_cmp(const void *a, const void *b)
{
    const pkey *p = a, *q = b;
    if (p->d != q->d)
        return p->d < q->d ? -1 : 1;
    return (p->i > q->i) - (p->i < q->i);
}

void bal_sample_free(bal_sample *s)
{
    if (!s)
        return;
    free(s->copies);
    for (int32_t l = 0; l < HKM_MAX_LEVELS; l++)
        free(s->quota[l]);
    memset(s, 0, sizeof *s);
}

/* Groups m items by their label lab (k labels) into start (k + 1) and members (m), ascending. */
static void group_i64(const int32_t *lab, int64_t m, int32_t k, int64_t *start, int64_t *mem, int64_t *fill)
{
    memset(start, 0, (size_t)(k + 1) * sizeof *start);
    for (int64_t i = 0; i < m; i++)
        start[lab[i] + 1]++;
    for (int32_t c = 0; c < k; c++)
        start[c + 1] += start[c];
    memcpy(fill, start, (size_t)k * sizeof *fill);
    for (int64_t i = 0; i < m; i++)
        mem[fill[lab[i]]++] = i;
}

int bal_sample_run(const hkm_tree *t, int64_t target, int32_t multiplier, char strategy, uint64_t seed,
                   bal_sample *s)
{
    memset(s, 0, sizeof *s);
    if (!t || t->n_levels < 1 || t->n < 1)
        return lvd_fail("balance sampler: no tree");
    if (target < 0 || multiplier < 1)
        return lvd_fail("balance sampler: target_size must be >= 0 and multiplier >= 1 (got %" PRId64 ", %" PRId32
                        ")", target, multiplier);
    if (strategy != 'c' && strategy != 'r')
        return lvd_fail("balance sampler: sampling must be c or r (got '%c')", strategy);
    const int32_t L = t->n_levels;
    const int64_t n = t->n;
    walk w = {.t = t, .s = s, .mult = multiplier, .strategy = strategy, .r = brng_make(seed, BRNG_SAMPLER)};
    int64_t kmax = 0;
    for (int32_t l = 0; l < L; l++)
        kmax = t->level[l].k > kmax ? t->level[l].k : kmax;
    int64_t big = n > kmax ? n : kmax;
    int rc = -1;
    s->n = n;
    s->n_levels = L;
    s->copies = calloc((size_t)n, sizeof *s->copies);
    w.pstart = malloc((size_t)(t->level[0].k + 1) * sizeof *w.pstart);
    w.pts = malloc((size_t)n * sizeof *w.pts);
    w.idx = malloc((size_t)big * sizeof *w.idx);
    int64_t *fill = malloc((size_t)big * sizeof *fill), *cap = NULL;
    int ok = s->copies && w.pstart && w.pts && w.idx && fill;
    for (int32_t l = 0; ok && l < L; l++) {
        s->cap[l] = INT64_MAX;
        s->quota[l] = calloc((size_t)t->level[l].k, sizeof *s->quota[l]);
        ok = s->quota[l] != NULL;
        if (ok && l + 1 < L) {
            w.cstart[l] = malloc((size_t)(t->level[l + 1].k + 1) * sizeof *w.cstart[l]);
            w.child[l] = malloc((size_t)t->level[l].k * sizeof *w.child[l]);
            ok = w.cstart[l] && w.child[l];
            if (ok)
                group_i64(t->level[l + 1].parent, t->level[l].k, t->level[l + 1].k, w.cstart[l], w.child[l], fill);
        }
    }
    if (!ok) {
        lvd_fail("balance sampler: out of memory for %" PRId64 " points", n);
        goto done;
    }
    group_i64(t->label, n, t->level[0].k, w.pstart, w.pts, fill);
    if (strategy == 'c') {
        pkey *keys = malloc((size_t)n * sizeof *keys);
        if (!keys) {
            lvd_fail("balance sampler: out of memory for %" PRId64 " points", n);
            goto done;
        }
        for (int64_t i = 0; i < n; i++)
            keys[i] = (pkey){t->dist[w.pts[i]], w.pts[i]};
        for (int32_t c = 0; c < t->level[0].k; c++)
            qsort(keys + w.pstart[c], (size_t)(w.pstart[c + 1] - w.pstart[c]), sizeof *keys, pkey_cmp);
        for (int64_t i = 0; i < n; i++)
            w.pts[i] = keys[i].i;
        free(keys);
    }
    /* the top level: all its clusters share the target */
    const hkm_level *top = &t->level[L - 1];
    cap = calloc((size_t)top->k + 1, sizeof *cap);
    int64_t sumcap = 0;
    if (!cap) {
        lvd_fail("balance sampler: out of memory");
        goto done;
    }
    for (int32_t c = 0; c < top->k; c++)
        sumcap += cap[c] = top->size[c] * multiplier;
    int64_t x = water(&w, cap, top->k, target, s->quota[L - 1]);
    if (sumcap > target)
        s->cap[L - 1] = x;
    for (int32_t c = 0; c < top->k; c++)
        if (descend(&w, L - 1, c, s->quota[L - 1][c]) != 0)
            goto done;
    for (int64_t i = 0; i < n; i++)
        s->total += s->copies[i];
    rc = 0;
done:
    for (int32_t l = 0; l < L; l++) {
        free(w.cstart[l]);
        free(w.child[l]);
    }
    free(w.pstart);
    free(w.pts);
    free(w.idx);
    free(fill);
    free(cap);
    return rc;
}
