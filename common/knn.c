/* knn.c — k-NN search by inner product through FAISS's C API (see knn.h). */
#include "knn.h"

#include "err.h"

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexFlat_c.h>
#include <faiss/c_api/IndexIVFFlat_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/MetaIndexes_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define KNN_NAME_MAX 256

/* List-major search keeps the candidates of one sub-batch of queries, (queries, nprobe, k) similarities and
 * ids, within this many bytes (see knn.h). */
#define KNN_LISTS_CAND_BYTES ((size_t)256 << 20)

/* One inverted list of a list-major IVF-Flat index: its vectors in an IndexFlatIP and the caller's ids. */
typedef struct knn_list {
    FaissIndex *flat; /* IndexFlatIP (d) over the list's vectors, in the order added */
    int64_t *ids;     /* (n) the caller's ids, same order */
    int64_t n, cap;
} knn_list;

struct knn_index {
    FaissIndex *fx;            /* owns everything below it */
    int32_t d;
    int exact;                 /* 1: flat (exact) index */
    int ivf;                   /* 1: the index contains an IVF (nprobe applies) */
    int auto_choice;           /* 1: index and nprobe chosen by knn_create (not the caller) */
    int64_t nlist;             /* IVF lists (0: unknown or not IVF) */
    int32_t nprobe;            /* IVF lists searched (0: not IVF) */
    int64_t train_max;
    int64_t batch;
    uint64_t seed;
    double recall;             /* last knn_recall result, < 0 if never measured */
    int32_t recall_k;
    int64_t recall_nq;
    char name[KNN_NAME_MAX];   /* factory string, or what a loaded index is */
    /* List-major IVF-Flat (see knn.h): fx is the trained IVF, left empty; its quantizer assigns vectors and
     * queries to lists, and the vectors live in lists[nlist]. NULL: FAISS's own index holds and scans them. */
    knn_list *lists;
    int64_t lists_total;       /* vectors in all lists */
};

/* FAISS's message for the last failed C API call of this thread. */
static const char *ferr(void)
{
    const char *m = faiss_get_last_error();
    return m && *m ? m : "unknown FAISS error";
}

void knn_opts_default(knn_opts *o)
{
    memset(o, 0, sizeof *o);
    o->exact_max = 200000;
    o->factory = NULL;
    o->nprobe = 0;
    o->train_max = KNN_TRAIN_MAX_DEFAULT;
    o->batch = 65536;
    o->seed = 1;
}

/* The automatic IVF size for n vectors: a power of two near KNN_AUTO_LISTS_PER_SQRT * sqrt(n), with at least
 * KNN_AUTO_MIN_TRAIN training vectors per list available (FAISS's k-means warns below 39) and at least 1. */
static int64_t auto_nlist(int64_t n, int64_t train_max)
{
    double want = KNN_AUTO_LISTS_PER_SQRT * sqrt((double)(n > 1 ? n : 1));
    int64_t nl = 1;
    while ((double)(nl * 2) <= want * 1.41421356)
        nl *= 2;
    int64_t avail = n < train_max ? n : train_max;
    while (nl > 1 && nl * KNN_AUTO_MIN_TRAIN > avail)
        nl /= 2;
    return nl;
}

/* The automatic nprobe for nlist lists over n vectors (see knn.h: measured by benchmarks/dedup_knn.sh). */
static int32_t auto_nprobe(int64_t nlist, int64_t n)
{
    double per_list = (double)(n > nlist ? n : nlist) / (double)nlist;
    int64_t p = (int64_t)ceil((double)KNN_AUTO_SCAN / per_list);
    if (p < KNN_AUTO_NPROBE_MIN)
        p = KNN_AUTO_NPROBE_MIN;
    if (p > nlist)
        p = nlist;
    return (int32_t)p;
}

/* "IVF<nlist>..." at the start of a factory string or after a comma: nlist, else 0. */
static int64_t factory_nlist(const char *f)
{
    for (const char *p = f; (p = strstr(p, "IVF")) != NULL; p += 3)
        if (p == f || p[-1] == ',') {
            char *end;
            long long v = strtoll(p + 3, &end, 10);
            if (end != p + 3 && v > 0)
                return (int64_t)v;
        }
    return 0;
}

static int set_nprobe(knn_index *ix, int32_t nprobe)
{
    FaissParameterSpace *ps = NULL;
    if (faiss_ParameterSpace_new(&ps) != 0)
        return lvd_fail("faiss: %s", ferr());
    int r = faiss_ParameterSpace_set_index_parameter(ps, ix->fx, "nprobe", (double)nprobe);
    faiss_ParameterSpace_free(ps);
    if (r != 0)
        return lvd_fail("faiss: setting nprobe %" PRId32 " on index \"%s\": %s", nprobe, ix->name, ferr());
    ix->nprobe = nprobe;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * List-major IVF-Flat (see knn.h). Results equal those of FAISS's IndexIVFFlat with the same quantizer and
 * nprobe (the same lists are scanned exhaustively), up to float rounding and the order of ties; the scan is a
 * BLAS inner-product block per list instead of one scalar dot product per (query, vector).
 */

/* Makes ix list-major when its index is a bare IndexIVFFlat (FAISS's own scan otherwise). */
static int lists_init(knn_index *ix)
{
    FaissIndexIVF *ivf = faiss_IndexIVF_cast(ix->fx);
    if (!ivf || !faiss_IndexIVFFlat_cast(ix->fx))
        return 0;
    int64_t nl = (int64_t)faiss_IndexIVF_nlist(ivf);
    ix->lists = calloc((size_t)nl, sizeof *ix->lists);
    if (!ix->lists)
        return lvd_fail("knn: out of memory for %" PRId64 " inverted lists", nl);
    ix->nlist = nl;
    for (int64_t l = 0; l < nl; l++)
        if (faiss_IndexFlatIP_new_with((FaissIndexFlatIP **)&ix->lists[l].flat, ix->d) != 0)
            return lvd_fail("faiss: creating IndexFlatIP (d %" PRId32 ") for list %" PRId64 ": %s", ix->d, l, ferr());
    return 0;
}

/* Buckets n labels in [0, nl) (others skipped) by counting sort: offs (nl + 1) and order (positions of the
 * labels, grouped by label, in input order within a label). */
static void bucket(const int64_t *lab, int64_t n, int64_t nl, int64_t *offs, int64_t *order)
{
    memset(offs, 0, (size_t)(nl + 1) * sizeof *offs);
    for (int64_t i = 0; i < n; i++)
        if (lab[i] >= 0 && lab[i] < nl)
            offs[lab[i] + 1]++;
    for (int64_t l = 0; l < nl; l++)
        offs[l + 1] += offs[l];
    int64_t *fill = offs; /* offs[l] advances while filling; shifted back below */
    for (int64_t i = 0; i < n; i++)
        if (lab[i] >= 0 && lab[i] < nl)
            order[fill[lab[i]]++] = i;
    for (int64_t l = nl; l > 0; l--)
        offs[l] = offs[l - 1];
    offs[0] = 0;
}

/* Adds n vectors (batch rows at most) to the lists their nearest centroid names. */
static int lists_add(knn_index *ix, const float *x, const int64_t *ids, int64_t n)
{
    FaissIndex *qz = faiss_IndexIVF_quantizer(faiss_IndexIVF_cast(ix->fx));
    size_t d = (size_t)ix->d;
    float *dist = malloc((size_t)n * sizeof *dist), *buf = malloc((size_t)n * d * sizeof *buf);
    int64_t *lab = malloc((size_t)n * sizeof *lab), *order = malloc((size_t)n * sizeof *order);
    int64_t *offs = malloc((size_t)(ix->nlist + 1) * sizeof *offs);
    int rc = -1;
    if (!dist || !buf || !lab || !order || !offs) {
        lvd_fail("knn: out of memory adding %" PRId64 " vectors", n);
        goto out;
    }
    if (faiss_Index_search(qz, n, x, 1, dist, lab) != 0) {
        lvd_fail("faiss: assigning %" PRId64 " vectors to the lists of \"%s\": %s", n, ix->name, ferr());
        goto out;
    }
    for (int64_t i = 0; i < n; i++)
        if (lab[i] < 0 || lab[i] >= ix->nlist) {
            lvd_fail("knn: vector %" PRId64 " (id %" PRId64 ") has no nearest list in \"%s\" (not finite?)", i,
                     ids[i], ix->name);
            goto out;
        }
    bucket(lab, n, ix->nlist, offs, order);
    for (int64_t l = 0; l < ix->nlist; l++) {
        int64_t m = offs[l + 1] - offs[l];
        if (m == 0)
            continue;
        knn_list *li = &ix->lists[l];
        if (li->n + m > li->cap) {
            int64_t cap = li->cap ? li->cap : 16;
            while (cap < li->n + m)
                cap *= 2;
            int64_t *p = realloc(li->ids, (size_t)cap * sizeof *p);
            if (!p) {
                lvd_fail("knn: out of memory for the ids of list %" PRId64, l);
                goto out;
            }
            li->ids = p;
            li->cap = cap;
        }
        for (int64_t j = 0; j < m; j++) {
            int64_t i = order[offs[l] + j];
            memcpy(buf + (size_t)j * d, x + (size_t)i * d, d * sizeof *buf);
            li->ids[li->n + j] = ids[i];
        }
        if (faiss_Index_add(li->flat, m, buf) != 0) {
            lvd_fail("faiss: adding %" PRId64 " vectors to list %" PRId64 " of \"%s\": %s", m, l, ix->name, ferr());
            goto out;
        }
        li->n += m;
        ix->lists_total += m;
    }
    rc = 0;
out:
    free(dist);
    free(buf);
    free(lab);
    free(order);
    free(offs);
    return rc;
}

/* The k best of np runs of k candidates each (similarities descending, padded with -inf / -1) into sims/ids;
 * head: np ints of scratch. */
static void merge_runs(const float *cs, const int64_t *ci, int32_t np, int32_t k, int32_t *head, float *sims,
                       int64_t *ids)
{
    memset(head, 0, (size_t)np * sizeof *head);
    for (int32_t j = 0; j < k; j++) {
        int32_t best = -1;
        float bs = -INFINITY;
        for (int32_t r = 0; r < np; r++) {
            if (head[r] >= k)
                continue;
            size_t at = (size_t)r * (size_t)k + (size_t)head[r];
            if (ci[at] >= 0 && (best < 0 || cs[at] > bs)) {
                best = r;
                bs = cs[at];
            }
        }
        if (best < 0) {
            sims[j] = -INFINITY;
            ids[j] = -1;
            continue;
        }
        size_t at = (size_t)best * (size_t)k + (size_t)head[best]++;
        sims[j] = cs[at];
        ids[j] = ci[at];
    }
}

/* Searches nq queries: the quantizer picks each query's nprobe lists, queries are grouped by list, each list
 * is searched (IndexFlatIP, BLAS for 20+ queries) for all its queries at once, lists in parallel (FAISS and
 * OpenBLAS run single-threaded inside), then each query's nprobe result runs are merged. */
static int lists_search(knn_index *ix, const float *q, int64_t nq, int32_t k, float *sims, int64_t *ids)
{
    if (nq == 0)
        return 0;
    FaissIndex *qz = faiss_IndexIVF_quantizer(faiss_IndexIVF_cast(ix->fx));
    size_t d = (size_t)ix->d;
    int32_t np = ix->nprobe > 0 ? ix->nprobe : 1;
    size_t per_query = (size_t)np * (size_t)k * (sizeof(float) + sizeof(int64_t));
    int64_t sb = (int64_t)(KNN_LISTS_CAND_BYTES / per_query);
    if (sb < 1)
        sb = 1;
    if (sb > ix->batch)
        sb = ix->batch;
    if (sb > nq)
        sb = nq;
    size_t npairs = (size_t)sb * (size_t)np;
    float *pd = malloc(npairs * sizeof *pd), *cs = malloc(npairs * (size_t)k * sizeof *cs);
    int64_t *pl = malloc(npairs * sizeof *pl), *order = malloc(npairs * sizeof *order);
    int64_t *offs = malloc((size_t)(ix->nlist + 1) * sizeof *offs), *ci = malloc(npairs * (size_t)k * sizeof *ci);
    int rc = -1;
    if (!pd || !cs || !pl || !order || !offs || !ci) {
        lvd_fail("knn: out of memory for %" PRId64 " queries x %" PRId32 " lists x k %" PRId32, sb, np, k);
        goto out;
    }
    for (int64_t at = 0; at < nq; at += sb) {
        int64_t b = nq - at < sb ? nq - at : sb;
        const float *qb = q + (size_t)at * d;
        if (faiss_Index_search(qz, b, qb, np, pd, pl) != 0) {
            lvd_fail("faiss: choosing the %" PRId32 " lists of %" PRId64 " queries in \"%s\": %s", np, b, ix->name,
                     ferr());
            goto out;
        }
        int64_t bp = b * np;
        for (size_t i = 0; i < (size_t)bp * (size_t)k; i++) {
            cs[i] = -INFINITY;
            ci[i] = -1;
        }
        bucket(pl, bp, ix->nlist, offs, order);
        int64_t most = 1; /* queries of the busiest list (scratch rows per thread) */
        for (int64_t l = 0; l < ix->nlist; l++)
            if (offs[l + 1] - offs[l] > most)
                most = offs[l + 1] - offs[l];
        int failed = 0;
        char why[512] = "";
#pragma omp parallel
        {
            float *qs = malloc((size_t)most * d * sizeof *qs), *ds = malloc((size_t)most * (size_t)k * sizeof *ds);
            int64_t *ls = malloc((size_t)most * (size_t)k * sizeof *ls);
            if (!qs || !ds || !ls) {
#pragma omp critical(knn_fail)
                if (!failed) {
                    failed = 1;
                    snprintf(why, sizeof why, "knn: out of memory for %" PRId64 " queries of one list", most);
                }
            }
#pragma omp for schedule(dynamic, 4)
            for (int64_t l = 0; l < ix->nlist; l++) {
                const knn_list *li = &ix->lists[l];
                int64_t m = offs[l + 1] - offs[l];
                if (m == 0 || li->n == 0 || !qs || !ds || !ls)
                    continue;
                int32_t kl = li->n < k ? (int32_t)li->n : k;
                for (int64_t j = 0; j < m; j++)
                    memcpy(qs + (size_t)j * d, qb + (size_t)(order[offs[l] + j] / np) * d, d * sizeof *qs);
                if (faiss_Index_search(li->flat, m, qs, kl, ds, ls) != 0) {
#pragma omp critical(knn_fail)
                    if (!failed) {
                        failed = 1;
                        snprintf(why, sizeof why, "faiss: searching list %" PRId64 " of \"%s\": %s", l, ix->name,
                                 ferr());
                    }
                    continue;
                }
                for (int64_t j = 0; j < m; j++) {
                    size_t run = (size_t)order[offs[l] + j] * (size_t)k; /* (query, probe) pair's run */
                    for (int32_t r = 0; r < kl; r++) {
                        int64_t pos = ls[(size_t)j * (size_t)kl + (size_t)r];
                        if (pos < 0 || pos >= li->n)
                            break;
                        cs[run + (size_t)r] = ds[(size_t)j * (size_t)kl + (size_t)r];
                        ci[run + (size_t)r] = li->ids[pos];
                    }
                }
            }
            free(qs);
            free(ds);
            free(ls);
        }
        if (failed) {
            lvd_fail("%s", why);
            goto out;
        }
#pragma omp parallel
        {
            int32_t *head = malloc((size_t)np * sizeof *head);
            if (!head) {
#pragma omp critical(knn_fail)
                failed = 1;
            }
#pragma omp for schedule(static)
            for (int64_t i = 0; i < b; i++) {
                size_t o = (size_t)i * (size_t)np * (size_t)k;
                if (head)
                    merge_runs(cs + o, ci + o, np, k, head, sims + (size_t)(at + i) * (size_t)k,
                               ids + (size_t)(at + i) * (size_t)k);
            }
            free(head);
        }
        if (failed) {
            lvd_fail("knn: out of memory merging the results of %" PRId64 " queries", b);
            goto out;
        }
    }
    rc = 0;
out:
    free(pd);
    free(cs);
    free(pl);
    free(order);
    free(offs);
    free(ci);
    return rc;
}

/* For knn_save: puts the lists' vectors into the (empty) FAISS IVF, so the file is a plain IndexIVFFlat;
 * lists_unfill empties it again. FAISS assigns each vector to the list it was in: same quantizer, same rule. */
static int lists_fill(knn_index *ix)
{
    for (int64_t l = 0; l < ix->nlist; l++) {
        const knn_list *li = &ix->lists[l];
        if (li->n == 0)
            continue;
        float *xb = NULL;
        size_t sz = 0;
        faiss_IndexFlat_xb(faiss_IndexFlat_cast(li->flat), &xb, &sz);
        if (faiss_Index_add_with_ids(ix->fx, li->n, xb, li->ids) != 0)
            return lvd_fail("faiss: copying list %" PRId64 " into \"%s\" for saving: %s", l, ix->name, ferr());
    }
    return 0;
}

int knn_create(int32_t d, int64_t n_expected, const knn_opts *o, knn_index **out)
{
    *out = NULL;
    knn_opts def;
    if (!o) {
        knn_opts_default(&def);
        o = &def;
    }
    if (d <= 0 || d > 65536)
        return lvd_fail("knn: dimension %" PRId32 " out of range 1..65536", d);
    if (n_expected < 0)
        return lvd_fail("knn: expected vector count %" PRId64 " is negative", n_expected);
    if (o->nprobe < 0 || o->train_max < 0 || o->batch < 0)
        return lvd_fail("knn: negative nprobe, train_max or batch in the options");
    knn_index *ix = calloc(1, sizeof *ix);
    if (!ix)
        return lvd_fail("knn: out of memory");
    ix->d = d;
    ix->train_max = o->train_max > 0 ? o->train_max : KNN_TRAIN_MAX_DEFAULT;
    ix->batch = o->batch > 0 ? o->batch : 65536;
    ix->seed = o->seed;
    ix->recall = -1.0;
    if (o->factory) {
        if (!*o->factory || strlen(o->factory) >= sizeof ix->name) {
            free(ix);
            return lvd_fail("knn: factory string is empty or longer than %d bytes", KNN_NAME_MAX - 1);
        }
        snprintf(ix->name, sizeof ix->name, "%s", o->factory);
        ix->nlist = factory_nlist(ix->name);
        ix->ivf = ix->nlist > 0;
    } else if (n_expected <= o->exact_max) {
        snprintf(ix->name, sizeof ix->name, "IDMap,Flat");
        ix->exact = 1;
        ix->auto_choice = 1;
    } else {
        ix->nlist = auto_nlist(n_expected, ix->train_max);
        snprintf(ix->name, sizeof ix->name, KNN_AUTO_FACTORY_FMT, ix->nlist);
        ix->ivf = 1;
        ix->auto_choice = o->nprobe == 0; /* the expected recall holds for the automatic nprobe only */
    }
    if (faiss_index_factory(&ix->fx, (int)d, ix->name, METRIC_INNER_PRODUCT) != 0) {
        lvd_fail("faiss: index factory \"%s\" (d %" PRId32 "): %s", ix->name, d, ferr());
        free(ix);
        return -1;
    }
    if (ix->ivf) {
        int32_t np = o->nprobe > 0 ? o->nprobe : auto_nprobe(ix->nlist, n_expected);
        if (np > ix->nlist)
            np = (int32_t)ix->nlist;
        if (set_nprobe(ix, np) != 0 || (!o->faiss_scan && lists_init(ix) != 0)) {
            knn_free(ix);
            return -1;
        }
    }
    *out = ix;
    return 0;
}

void knn_free(knn_index *ix)
{
    if (!ix)
        return;
    for (int64_t l = 0; ix->lists && l < ix->nlist; l++) {
        if (ix->lists[l].flat)
            faiss_Index_free(ix->lists[l].flat);
        free(ix->lists[l].ids);
    }
    free(ix->lists);
    if (ix->fx)
        faiss_Index_free(ix->fx);
    free(ix);
}

int32_t knn_dim(const knn_index *ix)
{
    return ix->d;
}

int knn_needs_training(const knn_index *ix)
{
    return faiss_Index_is_trained(ix->fx) ? 0 : 1;
}

/* splitmix64: the sample's random stream. */
static uint64_t mix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int knn_train(knn_index *ix, const float *x, int64_t n)
{
    if (!knn_needs_training(ix))
        return 0;
    if (n <= 0 || !x)
        return lvd_fail("knn: training \"%s\" needs at least one vector (got %" PRId64 ")", ix->name, n);
    const float *t = x;
    float *sample = NULL;
    int64_t m = n;
    if (n > ix->train_max) {
        /* Selection sampling (Knuth's algorithm S): train_max distinct rows, in file order. */
        m = ix->train_max;
        sample = malloc((size_t)m * (size_t)ix->d * sizeof *sample);
        if (!sample)
            return lvd_fail("knn: out of memory for a training sample of %" PRId64 " x %" PRId32, m, ix->d);
        uint64_t s = ix->seed;
        int64_t got = 0;
        for (int64_t i = 0; i < n && got < m; i++) {
            double u = (double)(mix64(&s) >> 11) * 0x1.0p-53;
            if ((double)(n - i) * u < (double)(m - got)) {
                memcpy(sample + (size_t)got * (size_t)ix->d, x + (size_t)i * (size_t)ix->d,
                       (size_t)ix->d * sizeof *sample);
                got++;
            }
        }
        t = sample;
    }
    int r = faiss_Index_train(ix->fx, m, t);
    free(sample);
    if (r != 0)
        return lvd_fail("faiss: training \"%s\" on %" PRId64 " vectors: %s", ix->name, m, ferr());
    return 0;
}

int knn_add(knn_index *ix, const float *x, const int64_t *ids, int64_t n)
{
    if (n < 0 || (n > 0 && (!x || !ids)))
        return lvd_fail("knn: adding %" PRId64 " vectors needs vectors and ids", n);
    if (knn_needs_training(ix))
        return lvd_fail("knn: index \"%s\" is not trained: call knn_train before knn_add", ix->name);
    for (int64_t at = 0; at < n; at += ix->batch) {
        int64_t b = n - at < ix->batch ? n - at : ix->batch;
        if (ix->lists) {
            if (lists_add(ix, x + (size_t)at * (size_t)ix->d, ids + at, b) != 0)
                return -1;
            continue;
        }
        if (faiss_Index_add_with_ids(ix->fx, b, x + (size_t)at * (size_t)ix->d, ids + at) != 0)
            return lvd_fail("faiss: adding %" PRId64 " vectors to \"%s\": %s", b, ix->name, ferr());
    }
    return 0;
}

int knn_search(knn_index *ix, const float *q, int64_t nq, int32_t k, float *sims, int64_t *ids)
{
    if (k <= 0)
        return lvd_fail("knn: k must be positive (got %" PRId32 ")", k);
    if (nq < 0 || (nq > 0 && (!q || !sims || !ids)))
        return lvd_fail("knn: searching %" PRId64 " queries needs queries and result buffers", nq);
    if (knn_needs_training(ix))
        return lvd_fail("knn: index \"%s\" is not trained: call knn_train and knn_add before knn_search", ix->name);
    if (ix->lists)
        return lists_search(ix, q, nq, k, sims, ids);
    for (int64_t at = 0; at < nq; at += ix->batch) {
        int64_t b = nq - at < ix->batch ? nq - at : ix->batch;
        size_t o = (size_t)at * (size_t)k;
        if (faiss_Index_search(ix->fx, b, q + (size_t)at * (size_t)ix->d, k, sims + o, ids + o) != 0)
            return lvd_fail("faiss: searching %" PRId64 " queries (k %" PRId32 ") in \"%s\": %s", b, k, ix->name,
                            ferr());
        for (size_t i = o; i < o + (size_t)b * (size_t)k; i++)
            if (ids[i] < 0) {
                ids[i] = -1;
                sims[i] = -INFINITY;
            }
    }
    return 0;
}

int64_t knn_count(const knn_index *ix)
{
    if (ix->lists)
        return ix->lists_total;
    return faiss_Index_ntotal(ix->fx);
}

void knn_describe(const knn_index *ix, char *buf, size_t cap)
{
    if (!buf || cap == 0)
        return;
    int64_t n = knn_count(ix);
    char rec[160];
    if (ix->recall >= 0)
        snprintf(rec, sizeof rec, ", recall@%" PRId32 " %.4f measured on %" PRId64 " queries", ix->recall_k, ix->recall,
                 ix->recall_nq);
    else if (ix->auto_choice && ix->ivf)
        snprintf(rec, sizeof rec, ", expected recall@64 >= %.2f on clustered data (measure: knn_recall)",
                 KNN_AUTO_EXPECTED_RECALL);
    else
        snprintf(rec, sizeof rec, ", recall not measured (knn_recall)");
    if (ix->exact)
        snprintf(buf, cap, "IndexFlatIP (exact), %" PRId64 " vectors, d %" PRId32, n, ix->d);
    else if (ix->ivf)
        snprintf(buf, cap, "%s nprobe %" PRId32 ", %" PRId64 " vectors, d %" PRId32 "%s", ix->name, ix->nprobe, n,
                 ix->d, rec);
    else
        snprintf(buf, cap, "%s, %" PRId64 " vectors, d %" PRId32 "%s", ix->name, n, ix->d, rec);
}

/* Number of entries of a (k ids) found in e (k exact ids with similarities es, descending); an entry of a that
 * is not in e still counts when its similarity ties the k-th exact one (which of several tied vectors comes
 * k-th is arbitrary). */
static int64_t overlap(const int64_t *a, const float *as, const int64_t *e, const float *es, int32_t k)
{
    float kth = -INFINITY;
    for (int32_t j = 0; j < k; j++)
        if (e[j] >= 0)
            kth = es[j];
    int64_t hit = 0;
    for (int32_t i = 0; i < k; i++) {
        if (a[i] < 0)
            continue;
        int found = 0;
        for (int32_t j = 0; j < k && !found; j++)
            found = e[j] == a[i];
        if (!found && as[i] >= kth - 1e-6f * fabsf(kth))
            found = 1;
        hit += found;
    }
    return hit;
}

int knn_recall(knn_index *ix, const float *x, int64_t n, const float *q, int64_t nq, int32_t k, double *recall)
{
    *recall = 0.0;
    if (n <= 0 || nq <= 0 || k <= 0 || !x || !q)
        return lvd_fail("knn: recall needs indexed vectors, queries and k > 0 (n %" PRId64 ", nq %" PRId64
                        ", k %" PRId32 ")", n, nq, k);
    FaissIndexFlatIP *flat = NULL;
    if (faiss_IndexFlatIP_new_with(&flat, ix->d) != 0)
        return lvd_fail("faiss: creating IndexFlatIP (d %" PRId32 "): %s", ix->d, ferr());
    FaissIndex *fl = (FaissIndex *)flat;
    int rc = -1;
    size_t cnt = (size_t)nq * (size_t)k;
    float *asims = malloc(cnt * sizeof *asims), *esims = malloc(cnt * sizeof *esims);
    int64_t *aids = malloc(cnt * sizeof *aids), *eids = malloc(cnt * sizeof *eids);
    if (!asims || !esims || !aids || !eids) {
        lvd_fail("knn: out of memory for recall results (%" PRId64 " x %" PRId32 ")", nq, k);
        goto done;
    }
    for (int64_t at = 0; at < n; at += ix->batch) {
        int64_t b = n - at < ix->batch ? n - at : ix->batch;
        if (faiss_Index_add(fl, b, x + (size_t)at * (size_t)ix->d) != 0) {
            lvd_fail("faiss: adding %" PRId64 " vectors to IndexFlatIP: %s", b, ferr());
            goto done;
        }
    }
    for (int64_t at = 0; at < nq; at += ix->batch) {
        int64_t b = nq - at < ix->batch ? nq - at : ix->batch;
        size_t o = (size_t)at * (size_t)k;
        if (faiss_Index_search(fl, b, q + (size_t)at * (size_t)ix->d, k, esims + o, eids + o) != 0) {
            lvd_fail("faiss: exact search for recall: %s", ferr());
            goto done;
        }
    }
    if (knn_search(ix, q, nq, k, asims, aids) != 0)
        goto done;
    int64_t hit = 0, want = 0;
    for (int64_t i = 0; i < nq; i++) {
        size_t o = (size_t)i * (size_t)k;
        for (int32_t j = 0; j < k; j++)
            want += eids[o + (size_t)j] >= 0;
        hit += overlap(aids + o, asims + o, eids + o, esims + o, k);
    }
    *recall = want > 0 ? (double)hit / (double)want : 1.0;
    ix->recall = *recall;
    ix->recall_k = k;
    ix->recall_nq = nq;
    rc = 0;
done:
    free(asims);
    free(esims);
    free(aids);
    free(eids);
    faiss_Index_free(fl);
    return rc;
}

int knn_save(knn_index *ix, const char *path)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return lvd_fail("knn: index path too long: %s", path);
    int filled = ix->lists ? lists_fill(ix) : 0;
    int wrote = filled == 0 ? faiss_write_index_fname(ix->fx, tmp) : -1;
    if (wrote != 0 && filled == 0)
        lvd_fail("faiss: writing index \"%s\" to %s: %s", ix->name, path, ferr());
    if (ix->lists && faiss_Index_reset(ix->fx) != 0 && wrote == 0) {
        lvd_fail("faiss: emptying \"%s\" after saving: %s", ix->name, ferr());
        wrote = -1;
    }
    if (wrote != 0) {
        unlink(tmp);
        return -1;
    }
    int fd = open(tmp, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0) {
        lvd_fail_errno("knn: syncing %s", tmp);
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        lvd_fail_errno("knn: renaming %s to %s", tmp, path);
        unlink(tmp);
        return -1;
    }
    return 0;
}

int knn_load(const char *path, int32_t d, knn_index **out)
{
    *out = NULL;
    if (access(path, R_OK) != 0)
        return lvd_fail_errno("knn: reading index %s", path);
    FaissIndex *fx = NULL;
    if (faiss_read_index_fname(path, 0, &fx) != 0)
        return lvd_fail("faiss: reading index %s: %s", path, ferr());
    int32_t fd = (int32_t)faiss_Index_d(fx);
    if (d > 0 && fd != d) {
        faiss_Index_free(fx);
        return lvd_fail("knn: index %s has dimension %" PRId32 ", expected %" PRId32, path, fd, d);
    }
    if (faiss_Index_metric_type(fx) != METRIC_INNER_PRODUCT) {
        faiss_Index_free(fx);
        return lvd_fail("knn: index %s does not use the inner-product metric", path);
    }
    knn_index *ix = calloc(1, sizeof *ix);
    if (!ix) {
        faiss_Index_free(fx);
        return lvd_fail("knn: out of memory");
    }
    knn_opts def;
    knn_opts_default(&def);
    ix->fx = fx;
    ix->d = fd;
    ix->train_max = def.train_max;
    ix->batch = def.batch;
    ix->seed = def.seed;
    ix->recall = -1.0;
    /* What it is: an IVF (possibly under an id map), a flat index under an id map, or something else. */
    FaissIndex *inner = fx;
    FaissIndexIDMap *idm = faiss_IndexIDMap_cast(fx);
    if (idm)
        inner = faiss_IndexIDMap_sub_index(idm);
    FaissIndexIVF *ivf = faiss_IndexIVF_cast(inner);
    if (ivf) {
        ix->ivf = 1;
        ix->nlist = (int64_t)faiss_IndexIVF_nlist(ivf);
        ix->nprobe = (int32_t)faiss_IndexIVF_nprobe(ivf);
        snprintf(ix->name, sizeof ix->name, "%sIVF%" PRId64 " (loaded from %s)", idm ? "IDMap," : "", ix->nlist, path);
    } else if (idm && faiss_IndexFlat_cast(inner)) {
        ix->exact = 1;
        snprintf(ix->name, sizeof ix->name, "IDMap,Flat");
    } else {
        snprintf(ix->name, sizeof ix->name, "index loaded from %s", path);
    }
    *out = ix;
    return 0;
}

int knn_build(int32_t d, int64_t n, const knn_opts *o, knn_row_fn get, void *ctx, knn_index **out)
{
    *out = NULL;
    knn_opts def;
    if (!o) {
        knn_opts_default(&def);
        o = &def;
    }
    knn_index *ix = NULL;
    if (knn_create(d, n, o, &ix) != 0)
        return -1;
    int64_t bs = o->batch > 0 ? o->batch : 65536;
    float *buf = malloc((size_t)bs * (size_t)d * sizeof *buf);
    int64_t *ids = malloc((size_t)bs * sizeof *ids);
    if (!buf || !ids) {
        lvd_fail("knn: out of memory for a batch of %" PRId64 " rows", bs);
        goto fail;
    }
    if (knn_needs_training(ix)) {
        int64_t m = o->train_max > 0 && o->train_max < n ? o->train_max : n;
        float *tb = malloc((size_t)m * (size_t)d * sizeof *tb);
        if (!tb) {
            lvd_fail("knn: out of memory for a training sample of %" PRId64 " rows", m);
            goto fail;
        }
        for (int64_t i = 0; i < m; i++)
            if (get(ctx, (int64_t)((double)i * (double)n / (double)m), tb + (size_t)i * (size_t)d) != 0) {
                free(tb);
                goto fail;
            }
        int r = knn_train(ix, tb, m);
        free(tb);
        if (r != 0)
            goto fail;
    }
    for (int64_t at = 0; at < n; at += bs) {
        int64_t nb = n - at < bs ? n - at : bs;
        for (int64_t i = 0; i < nb; i++) {
            ids[i] = at + i;
            if (get(ctx, at + i, buf + (size_t)i * (size_t)d) != 0)
                goto fail;
        }
        if (knn_add(ix, buf, ids, nb) != 0)
            goto fail;
    }
    free(buf);
    free(ids);
    *out = ix;
    return 0;
fail:
    free(buf);
    free(ids);
    knn_free(ix);
    return -1;
}
