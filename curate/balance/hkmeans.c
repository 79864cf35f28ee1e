/* hkmeans.c — hierarchical k-means with resampling: see hkmeans.h. */
#include "hkmeans.h"

#include <inttypes.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "brng.h"
#include "err.h"
#include "kmeans.h"
#include "kmeans_ranks.h"

uint64_t hkm_run_seed(uint64_t seed, int32_t level, int32_t run, int64_t split)
{
    return seed + ((uint64_t)level << 40) + ((uint64_t)run << 20) + (uint64_t)split;
}

/* Float64 squared distance of a and b (d floats). */
static double d2(const float *a, const float *b, int32_t d)
{
    double s = 0;
    for (int32_t j = 0; j < d; j++) {
        double t = (double)a[j] - (double)b[j];
        s += t * t;
    }
    return s;
}

/* One k-means run (hkmeans.h) of k = min(k, m) centroids on items (m, d) into c (k, d); *k_out the k used. */
static int run_kmeans(const float *items, int64_t m, int32_t d, int32_t k, int32_t n_iters, uint64_t seed,
                      const hkm_opts *ho, float *c, int32_t *k_out, hkm_level *lv)
{
    kmeans_opts o;
    kmeans_opts_default(&o);
    o.k = (int64_t)k < m ? k : (int32_t)m;
    o.iterations = n_iters;
    o.seed = seed;
    o.spherical = 0;
    o.init = KMEANS_INIT_GREEDY;
    o.max_points_per_centroid = 0;
    o.threads = ho->threads;
    o.fixed_iterations = 1;
    o.empty = KMEANS_EMPTY_KEEP;
    *k_out = o.k;
    kmeans_stats st = {0};
    if (kmr_train(ho->dist, items, m, d, &o, c, &st) != 0)
        return -1;
    lv->init_s += st.init_s;
    lv->lloyd_s += st.iterations_s;
    lv->lloyd_iters += st.iterations;
    return 0;
}

/* kmeans_assign (squared L2) of items (m, d) to c (k, d), its time added to lv->assign_s. */
static int assign_timed(const float *items, int64_t m, int32_t d, const float *c, int32_t k, const hkm_opts *ho,
                        int32_t *lab, hkm_level *lv)
{
    double t0 = omp_get_wtime();
    int rc = kmr_assign(ho->dist, items, m, d, c, k, 0, ho->threads, lab, NULL);
    lv->assign_s += omp_get_wtime() - t0;
    return rc;
}

/* Members of each cluster, ascending: start (k + 1), mem (m), from labels (m). No scratch: start[c + 1]
 * (cluster c's end) serves as its fill cursor from the end, then becomes its beginning, shifted into start[c]. */
static void group(const int32_t *lab, int64_t m, int32_t k, int64_t *start, int64_t *mem)
{
    memset(start, 0, (size_t)(k + 1) * sizeof *start);
    for (int64_t i = 0; i < m; i++)
        start[lab[i] + 1]++;
    for (int32_t c = 0; c < k; c++)
        start[c + 1] += start[c];
    for (int64_t i = m - 1; i >= 0; i--) /* from the end, so each cluster fills downwards in ascending order */
        mem[--start[lab[i] + 1]] = i;
    for (int32_t c = 0; c < k; c++) /* start[c + 1] now holds cluster c's first position */
        start[c] = start[c + 1];
    start[k] = m;
}

/* Distance-key sort for strategy 'c'. */
typedef struct dkey {
    double d;
    int64_t i;
} dkey;

static int dkey_cmp(const void *a, const void *b)
{
    const dkey *p = a, *q = b;
    if (p->d != q->d)
        return p->d < q->d ? -1 : 1;
    return (p->i > q->i) - (p->i < q->i);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t p = *(const int64_t *)a, q = *(const int64_t *)b;
    return (p > q) - (p < q);
}

/* Clusters one level's items (m, d) into lv (centroids, k) and lab (m): hkmeans.h "A level". */
static int cluster_level(const float *items, int64_t m, int32_t d, const hkm_opts *o, int32_t li, hkm_level *lv,
                         int32_t *lab)
{
    const hkm_level_opts *lo = &o->level[li];
    int32_t level = li + 1, k = 0, rc = -1;
    float *c = malloc((size_t)lo->k * d * sizeof *c), *sub = NULL, *sc = NULL;
    int64_t *start = malloc((size_t)(lo->k + 1) * sizeof *start), *mem = malloc((size_t)m * sizeof *mem);
    int64_t *pick = malloc((size_t)m * sizeof *pick);
    dkey *keys = malloc((size_t)m * sizeof *keys);
    if (!c || !start || !mem || !pick || !keys) {
        lvd_fail("hkmeans level %" PRId32 ": out of memory", level);
        goto done;
    }
    lv->runs = 0;
    lv->init_s = lv->lloyd_s = lv->assign_s = lv->first_iter_s = 0;
    lv->lloyd_iters = 0;
    if (run_kmeans(items, m, d, lo->k, o->n_iters, hkm_run_seed(o->seed, level, 0, 0), o, c, &k, lv) !=
            0 ||
        assign_timed(items, m, d, c, k, o, lab, lv) != 0)
        goto fail;
    lv->first_iter_s = lv->lloyd_iters > 0 ? lv->lloyd_s / (double)lv->lloyd_iters : 0.0;
    lv->runs++;
    if (lo->sample_size > 1)
        for (int32_t step = 1; step <= lo->n_resampling_steps; step++) {
            uint64_t seed = hkm_run_seed(o->seed, level, step, 0);
            group(lab, m, k, start, mem);
            brng r = brng_make(seed, BRNG_RESAMPLE);
            int64_t u = 0;
            for (int32_t ci = 0; ci < k; ci++) {
                int64_t s = start[ci + 1] - start[ci], t = s < lo->sample_size ? s : lo->sample_size;
                int64_t *a = mem + start[ci];
                if (lo->strategy == 'r') {
                    brng_choose(&r, a, s, t);
                } else {
                    for (int64_t q = 0; q < s; q++)
                        keys[q] = (dkey){d2(items + a[q] * d, c + (size_t)ci * d, d), a[q]};
                    qsort(keys, (size_t)s, sizeof *keys, dkey_cmp);
                    for (int64_t q = 0; q < t; q++)
                        a[q] = keys[q].i;
                }
                memcpy(pick + u, a, (size_t)t * sizeof *pick);
                u += t;
            }
            qsort(pick, (size_t)u, sizeof *pick, cmp_i64);
            float *ux = malloc((size_t)u * d * sizeof *ux);
            if (!ux) {
                lvd_fail("hkmeans level %" PRId32 ": out of memory for %" PRId64 " resampled items", level, u);
                goto done;
            }
            for (int64_t q = 0; q < u; q++)
                memcpy(ux + q * d, items + pick[q] * d, (size_t)d * sizeof *ux);
            int32_t k2;
            int e = run_kmeans(ux, u, d, k, o->n_iters, seed, o, c, &k2, lv);
            free(ux);
            if (e != 0)
                goto fail;
            k = k2;
            if (assign_timed(items, m, d, c, k, o, lab, lv) != 0)
                goto fail;
            lv->runs++;
        }
    if (lo->n_splits > 1) {
        group(lab, m, k, start, mem);
        size_t cap = (size_t)k * lo->n_splits;
        if ((int64_t)cap > m)
            cap = (size_t)m;
        float *nc = malloc(cap * d * sizeof *nc);
        int32_t *slab = malloc((size_t)m * sizeof *slab);
        sub = malloc((size_t)m * d * sizeof *sub);
        sc = malloc((size_t)lo->n_splits * d * sizeof *sc);
        int64_t *cnt = malloc((size_t)lo->n_splits * sizeof *cnt);
        int32_t *newid = malloc((size_t)lo->n_splits * sizeof *newid);
        int32_t nk = 0;
        int ok = nc && slab && sub && sc && cnt && newid;
        if (!ok)
            lvd_fail("hkmeans level %" PRId32 ": out of memory for the splits", level);
        for (int32_t ci = 0; ok && ci < k; ci++) {
            int64_t s = start[ci + 1] - start[ci], *a = mem + start[ci];
            if (s == 0)
                continue;
            for (int64_t q = 0; q < s; q++)
                memcpy(sub + q * d, items + a[q] * d, (size_t)d * sizeof *sub);
            int32_t kk;
            if (run_kmeans(sub, s, d, lo->n_splits, o->n_iters, hkm_run_seed(o->seed, level, 0, 1 + (int64_t)ci),
                           o, sc, &kk, lv) != 0 ||
                assign_timed(sub, s, d, sc, kk, o, slab, lv) != 0) {
                ok = 0;
                break;
            }
            lv->runs++;
            memset(cnt, 0, (size_t)kk * sizeof *cnt);
            for (int64_t q = 0; q < s; q++)
                cnt[slab[q]]++;
            for (int32_t j = 0; j < kk; j++)
                if (cnt[j] > 0) {
                    newid[j] = nk;
                    memcpy(nc + (size_t)nk * d, sc + (size_t)j * d, (size_t)d * sizeof *nc);
                    nk++;
                }
            for (int64_t q = 0; q < s; q++)
                lab[a[q]] = newid[slab[q]];
        }
        free(slab);
        free(cnt);
        free(newid);
        if (!ok) {
            free(nc);
            goto fail;
        }
        free(c);
        c = nc;
        k = nk;
    }
    double obj = 0;
    for (int64_t i = 0; i < m; i++)
        obj += d2(items + i * d, c + (size_t)lab[i] * d, d);
    lv->objective = obj / (double)m;
    lv->k = k;
    lv->centroids = c;
    c = NULL;
    rc = 0;
    goto done;
fail:
    lvd_fail_ctx("hkmeans level %" PRId32, level);
done:
    free(c);
    free(sub);
    free(sc);
    free(start);
    free(mem);
    free(pick);
    free(keys);
    return rc;
}

void hkm_free(hkm_tree *t)
{
    if (!t)
        return;
    for (int32_t l = 0; l < HKM_MAX_LEVELS; l++) {
        free(t->level[l].centroids);
        free(t->level[l].parent);
        free(t->level[l].size);
    }
    free(t->label);
    free(t->dist);
    memset(t, 0, sizeof *t);
}

int hkm_build(const float *x, int64_t n, int32_t d, const hkm_opts *o, hkm_tree *t)
{
    memset(t, 0, sizeof *t);
    if (!o || o->n_levels < 1 || o->n_levels > HKM_MAX_LEVELS)
        return lvd_fail("hkmeans: n_levels must be 1..%d (got %" PRId32 ")", HKM_MAX_LEVELS, o ? o->n_levels : 0);
    if (n < 1 || d < 1 || !x)
        return lvd_fail("hkmeans: need points (got n %" PRId64 ", d %" PRId32 ")", n, d);
    if (o->n_iters < 0 || o->threads < 0)
        return lvd_fail("hkmeans: n_iters and threads must be >= 0");
    for (int32_t l = 0; l < o->n_levels; l++) {
        const hkm_level_opts *lo = &o->level[l];
        if (lo->k < 1 || lo->n_splits < 1 || lo->n_resampling_steps < 0 || lo->sample_size < 1)
            return lvd_fail("hkmeans level %" PRId32 ": n_clusters, n_splits and sample_size must be >= 1 and "
                            "n_resampling_steps >= 0 (got %" PRId32 ", %" PRId32 ", %" PRId32 ", %" PRId32 ")",
                            l + 1, lo->k, lo->n_splits, lo->sample_size, lo->n_resampling_steps);
        if (lo->strategy != 'c' && lo->strategy != 'r')
            return lvd_fail("hkmeans level %" PRId32 ": sampling_strategy must be c or r", l + 1);
    }
    t->n = n;
    t->d = d;
    t->n_levels = o->n_levels;
    t->label = malloc((size_t)o->n_levels * n * sizeof *t->label);
    t->dist = malloc((size_t)o->n_levels * n * sizeof *t->dist);
    if (!t->label || !t->dist)
        return lvd_fail("hkmeans: out of memory for the labels of %" PRId64 " points", n);
    for (int32_t l = 0; l < o->n_levels; l++) {
        hkm_level *lv = &t->level[l];
        const float *items = l == 0 ? x : t->level[l - 1].centroids;
        int64_t m = l == 0 ? n : t->level[l - 1].k;
        int32_t *lab = l == 0 ? t->label : malloc((size_t)m * sizeof *lab);
        if (!lab)
            return lvd_fail("hkmeans level %" PRId32 ": out of memory", l + 1);
        if (cluster_level(items, m, d, o, l, lv, lab) != 0) {
            if (l > 0)
                free(lab);
            return -1;
        }
        int32_t *pl = t->label + (size_t)l * n;
        if (l > 0) {
            lv->parent = lab;
            const int32_t *below = t->label + (size_t)(l - 1) * n;
            for (int64_t i = 0; i < n; i++)
                pl[i] = lab[below[i]];
        }
        lv->size = calloc((size_t)lv->k, sizeof *lv->size);
        if (!lv->size)
            return lvd_fail("hkmeans level %" PRId32 ": out of memory", l + 1);
        float *pd = t->dist + (size_t)l * n;
        for (int64_t i = 0; i < n; i++) {
            lv->size[pl[i]]++;
            pd[i] = (float)d2(x + i * d, lv->centroids + (size_t)pl[i] * d, d);
        }
    }
    return 0;
}
