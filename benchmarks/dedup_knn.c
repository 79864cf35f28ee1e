/* dedup_knn.c — the k-NN graph part of lvd-dedup, measured (driven by benchmarks/dedup_knn.sh).
 *
 *   dedup_knn gen   --out X.npy --n N --d D [--seed S]
 *       Writes N L2-normalised float32 vectors (a .npy, written through a memory mapping) drawn from a
 *       three-level Gaussian mixture: N/20000 themes, N/1000 topics around them, 20 sub-topics per topic and
 *       the points around those (cosine ~0.8 within a sub-topic, ~0.6 within a topic). 1% of the rows are
 *       planted near-duplicates of an earlier row (cosine ~0.999); X.npy.dups lists them as int64 pairs
 *       (row, earlier row).
 *   dedup_knn graph --npy X.npy --k K [--factory F] [--nprobe P] [--exact-max E] [--sample M] [--out-sample S]
 *                   [--threads T] [--faiss-scan 0|1]
 *       Builds the index knn.c chooses for N vectors (or F; E: knn_opts.exact_max) over the memory-mapped
 *       rows, then searches all N rows for their K nearest neighbours in batches: the k-NN graph lvd-dedup
 *       thresholds. Writes the graph rows of M evenly spaced sample queries to S (for recall) and prints one
 *       JSON line: phase times (wall and CPU), the index description, how many planted near-duplicates the
 *       graph links, and the number of edges with cosine >= 0.95. --faiss-scan 1 searches an IVF-Flat index
 *       with FAISS's own per-query list scan instead of knn.c's list-major one (the search's baseline).
 *   dedup_knn exact --npy X.npy --k K --sample M --in-sample S [--queries Q] [--threads T]
 *       Exact search through FAISS IndexFlatIP (knn.c with exact_max >= N): the exact neighbours of the M
 *       sample queries, the recall@K of the graph rows in S against them, and the time of Q more queries,
 *       extrapolated to all N rows (the exact k-NN graph's cost). Prints one JSON line.
 *
 * Timings are CLOCK_MONOTONIC (wall) and CLOCK_PROCESS_CPUTIME_ID (CPU of all threads). */
#include "err.h"
#include "knn.h"

#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct args {
    const char *out, *npy, *factory, *sample_out, *sample_in;
    int64_t n, sample, queries, exact_max;
    int32_t d, k, nprobe, threads, faiss_scan;
    uint64_t seed;
} args;

static double now(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct stopwatch {
    double wall, cpu;
} stopwatch;

static stopwatch sw_start(void)
{
    return (stopwatch){now(CLOCK_MONOTONIC), now(CLOCK_PROCESS_CPUTIME_ID)};
}

static stopwatch sw_since(stopwatch s)
{
    return (stopwatch){now(CLOCK_MONOTONIC) - s.wall, now(CLOCK_PROCESS_CPUTIME_ID) - s.cpu};
}

static int die(const char *what)
{
    fprintf(stderr, "dedup_knn: %s%s%s\n", what, *lvd_errmsg() ? ": " : "", lvd_errmsg());
    return 1;
}

/* ------------------------------------------------------------------------------------------------------------
 * random numbers */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) /* (0, 1) */
{
    return ((double)(rng_next(s) >> 11) + 0.5) * 0x1.0p-53;
}

/* v = normalise(base + sigma * N(0, I/d)) for d-vectors. */
static void perturb(float *v, const float *base, int32_t d, double sigma, uint64_t *s)
{
    double scale = sigma / sqrt((double)d), norm = 0;
    for (int32_t j = 0; j < d; j += 2) {
        double r = sqrt(-2.0 * log(rng_unit(s))), a = 2.0 * M_PI * rng_unit(s);
        v[j] = (float)((base ? base[j] : 0.0) + scale * r * cos(a));
        if (j + 1 < d)
            v[j + 1] = (float)((base ? base[j + 1] : 0.0) + scale * r * sin(a));
    }
    for (int32_t j = 0; j < d; j++)
        norm += (double)v[j] * v[j];
    norm = 1.0 / sqrt(norm);
    for (int32_t j = 0; j < d; j++)
        v[j] = (float)(v[j] * norm);
}

/* ------------------------------------------------------------------------------------------------------------
 * .npy through a memory mapping (format 1.0, '<f4', C order, 2-D) */

typedef struct mapped {
    void *base;
    size_t len;
    float *x;
    int64_t n;
    int32_t d;
} mapped;

static int npy_map_write(const char *path, int64_t n, int32_t d, mapped *m)
{
    char hdr[128];
    int h = snprintf(hdr + 10, sizeof hdr - 10,
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (%" PRId64 ", %" PRId32 "), }", n, d);
    int total = 10 + h + 1;
    int pad = (64 - total % 64) % 64;
    memcpy(hdr, "\x93NUMPY\x01\x00", 8);
    int hl = h + pad + 1;
    hdr[8] = (char)(hl & 0xff);
    hdr[9] = (char)(hl >> 8);
    memset(hdr + 10 + h, ' ', (size_t)pad);
    hdr[10 + h + pad] = '\n';
    size_t off = (size_t)(10 + hl), len = off + (size_t)n * (size_t)d * sizeof(float);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return lvd_fail_errno("creating %s", path);
    if (ftruncate(fd, (off_t)len) != 0 || pwrite(fd, hdr, off, 0) != (ssize_t)off) {
        lvd_fail_errno("writing %s", path);
        close(fd);
        return -1;
    }
    void *b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (b == MAP_FAILED)
        return lvd_fail_errno("mapping %s", path);
    *m = (mapped){b, len, (float *)((char *)b + off), n, d};
    return 0;
}

static int npy_map_read(const char *path, mapped *m)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lvd_fail_errno("opening %s", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return lvd_fail_errno("stat %s", path);
    }
    void *b = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (b == MAP_FAILED)
        return lvd_fail_errno("mapping %s", path);
    const unsigned char *p = b;
    int64_t n = 0;
    int32_t d = 0;
    size_t off = 0;
    if (st.st_size >= 10 && memcmp(p, "\x93NUMPY", 6) == 0) {
        size_t hl = p[6] == 1 ? (size_t)(p[8] | p[9] << 8)
                              : (size_t)(p[8] | p[9] << 8 | p[10] << 16 | (size_t)p[11] << 24);
        off = (p[6] == 1 ? 10 : 12) + hl;
        char hdr[512] = {0};
        memcpy(hdr, p + (p[6] == 1 ? 10 : 12), hl < sizeof hdr - 1 ? hl : sizeof hdr - 1);
        const char *sh = strstr(hdr, "'shape': (");
        long long a = 0, c = 0;
        if (!strstr(hdr, "'<f4'") || !strstr(hdr, "'fortran_order': False") || !sh ||
            sscanf(sh, "'shape': (%lld, %lld)", &a, &c) != 2)
            off = 0;
        n = a;
        d = (int32_t)c;
    }
    if (off == 0 || n <= 0 || d <= 0 || (uint64_t)st.st_size != off + (uint64_t)n * (uint64_t)d * 4) {
        munmap(b, (size_t)st.st_size);
        return lvd_fail("%s: not a 2-D C-order little-endian float32 .npy of the size its header says", path);
    }
    *m = (mapped){b, (size_t)st.st_size, (float *)((char *)b + off), n, d};
    return 0;
}

/* Adds all rows of m to ix with ids 0..n-1, in batches (what both the graph and the exact index time). */
static int add_rows(knn_index *ix, const mapped *m)
{
    const int64_t bs = 65536;
    int64_t *ids = malloc((size_t)bs * sizeof *ids);
    if (!ids)
        return lvd_fail("out of memory for %" PRId64 " ids", bs);
    for (int64_t at = 0; at < m->n; at += bs) {
        int64_t b = m->n - at < bs ? m->n - at : bs;
        for (int64_t i = 0; i < b; i++)
            ids[i] = at + i;
        if (knn_add(ix, m->x + at * m->d, ids, b) != 0) {
            free(ids);
            return -1;
        }
    }
    free(ids);
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------
 * gen */

static int cmd_gen(const args *a)
{
    int64_t n = a->n;
    int32_t d = a->d;
    int64_t nsub_per = 20, ntop = n / 1000 > 4 ? n / 1000 : 4, nthm = n / 20000 > 2 ? n / 20000 : 2;
    int64_t nsub = ntop * nsub_per;
    uint64_t s = a->seed;
    float *thm = malloc((size_t)nthm * (size_t)d * sizeof *thm), *top = malloc((size_t)ntop * (size_t)d * sizeof *top);
    float *sub = malloc((size_t)nsub * (size_t)d * sizeof *sub);
    if (!thm || !top || !sub)
        return die("out of memory for the mixture centres");
    for (int64_t i = 0; i < nthm; i++)
        perturb(thm + i * d, NULL, d, 1.0, &s);
    for (int64_t i = 0; i < ntop; i++)
        perturb(top + i * d, thm + (int64_t)(rng_next(&s) % (uint64_t)nthm) * d, d, 1.0, &s);
    for (int64_t i = 0; i < nsub; i++)
        perturb(sub + i * d, top + (i / nsub_per) * d, d, 0.6, &s);
    mapped m = {0};
    if (npy_map_write(a->out, n, d, &m) != 0)
        return die("gen");
    char dpath[4096];
    snprintf(dpath, sizeof dpath, "%s.dups", a->out);
    FILE *df = fopen(dpath, "wb");
    if (!df) {
        lvd_fail_errno("creating %s", dpath);
        return die("gen");
    }
    int64_t ndup = 0;
    for (int64_t i = 0; i < n; i++) {
        float *v = m.x + i * d;
        if (i > 0 && rng_next(&s) % 100 == 0) {
            int64_t j = (int64_t)(rng_next(&s) % (uint64_t)i), pair[2] = {i, j};
            perturb(v, m.x + j * d, d, 0.05, &s);
            fwrite(pair, sizeof pair, 1, df);
            ndup++;
        } else {
            perturb(v, sub + (int64_t)(rng_next(&s) % (uint64_t)nsub) * d, d, 0.5, &s);
        }
    }
    if (fclose(df) != 0 || msync(m.base, m.len, MS_SYNC) != 0) {
        lvd_fail_errno("writing %s", a->out);
        return die("gen");
    }
    munmap(m.base, m.len);
    free(thm);
    free(top);
    free(sub);
    printf("{\"gen\": \"%s\", \"n\": %" PRId64 ", \"d\": %" PRId32 ", \"themes\": %" PRId64 ", \"topics\": %" PRId64
           ", \"subtopics\": %" PRId64 ", \"near_duplicates\": %" PRId64 "}\n",
           a->out, n, d, nthm, ntop, nsub, ndup);
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------
 * graph */

/* Row of sample query i (0 <= i < m) among n rows: evenly spaced. */
static int64_t sample_row(int64_t i, int64_t m, int64_t n)
{
    return (int64_t)((double)i * (double)n / (double)m);
}

static int cmd_graph(const args *a)
{
    mapped m = {0};
    if (npy_map_read(a->npy, &m) != 0)
        return die("graph");
    const int64_t n = m.n;
    const int32_t d = m.d, k = a->k;
    int64_t ms = a->sample < n ? a->sample : n;
    /* planted near-duplicates: dupof[row] = earlier row, -1 */
    int64_t *dupof = malloc((size_t)n * sizeof *dupof);
    if (!dupof)
        return die("out of memory");
    for (int64_t i = 0; i < n; i++)
        dupof[i] = -1;
    int64_t ndup = 0;
    char dpath[4096];
    snprintf(dpath, sizeof dpath, "%s.dups", a->npy);
    FILE *df = fopen(dpath, "rb");
    if (df) {
        int64_t pair[2];
        while (fread(pair, sizeof pair, 1, df) == 1)
            if (pair[0] >= 0 && pair[0] < n && pair[1] >= 0 && pair[1] < n) {
                dupof[pair[0]] = pair[1];
                ndup++;
            }
        fclose(df);
    }

    knn_opts o;
    knn_opts_default(&o);
    o.factory = a->factory;
    o.nprobe = a->nprobe;
    o.faiss_scan = a->faiss_scan;
    if (a->exact_max >= 0)
        o.exact_max = a->exact_max;
    knn_index *ix = NULL;
    stopwatch t0 = sw_start();
    if (knn_create(d, n, &o, &ix) != 0)
        return die("creating the index");
    if (knn_needs_training(ix) && knn_train(ix, m.x, n) != 0) /* knn_train samples train_max rows */
        return die("training");
    stopwatch t_train = sw_since(t0);
    stopwatch t1 = sw_start();
    if (add_rows(ix, &m) != 0)
        return die("adding");
    stopwatch t_add = sw_since(t1);

    /* The graph: every row against the index, in batches; each batch is looked at and dropped, as lvd-dedup
     * turns it into edges. */
    stopwatch t2 = sw_start();
    const int64_t qb = 65536; /* lvd-dedup's default --batch */
    float *sims = malloc((size_t)qb * (size_t)k * sizeof *sims);
    int64_t *res = malloc((size_t)qb * (size_t)k * sizeof *res);
    float *ssims = malloc((size_t)ms * (size_t)k * sizeof *ssims);
    int64_t *sres = malloc((size_t)ms * (size_t)k * sizeof *sres);
    if (!sims || !res || !ssims || !sres)
        return die("out of memory");
    int64_t next_sample = 0, dup_found = 0, edges95 = 0, self_first = 0;
    for (int64_t at = 0; at < n; at += qb) {
        int64_t b = n - at < qb ? n - at : qb;
        if (knn_search(ix, m.x + at * d, b, k, sims, res) != 0)
            return die("searching");
        for (int64_t i = 0; i < b; i++) {
            int64_t row = at + i;
            const int64_t *r = res + i * k;
            const float *s = sims + i * k;
            self_first += r[0] == row;
            for (int32_t j = 0; j < k; j++) {
                if (r[j] >= 0 && r[j] != row && s[j] >= 0.95f)
                    edges95++;
                if (dupof[row] >= 0 && r[j] == dupof[row])
                    dup_found++;
            }
            while (next_sample < ms && sample_row(next_sample, ms, n) == row) {
                memcpy(ssims + next_sample * k, s, (size_t)k * sizeof *s);
                memcpy(sres + next_sample * k, r, (size_t)k * sizeof *r);
                next_sample++;
            }
        }
    }
    stopwatch t_search = sw_since(t2);
    stopwatch t_all = sw_since(t0);
    char desc[512];
    knn_describe(ix, desc, sizeof desc);
    if (a->sample_out) {
        FILE *f = fopen(a->sample_out, "wb");
        if (!f || fwrite(sres, sizeof *sres, (size_t)(ms * k), f) != (size_t)(ms * k) ||
            fwrite(ssims, sizeof *ssims, (size_t)(ms * k), f) != (size_t)(ms * k) || fclose(f) != 0) {
            lvd_fail_errno("writing %s", a->sample_out);
            return die("graph");
        }
    }
    printf("{\"mode\": \"graph\", \"n\": %" PRId64 ", \"d\": %" PRId32 ", \"k\": %" PRId32 ", \"threads\": %d, "
           "\"index\": \"%s\", \"train_s\": %.2f, \"train_cpu_s\": %.2f, \"add_s\": %.2f, \"add_cpu_s\": %.2f, "
           "\"search_s\": %.2f, \"search_cpu_s\": %.2f, \"total_s\": %.2f, \"total_cpu_s\": %.2f, "
           "\"self_first\": %" PRId64 ", \"near_duplicates\": %" PRId64 ", \"near_duplicates_linked\": %" PRId64
           ", \"edges_ge_0.95\": %" PRId64 "}\n",
           n, d, k, omp_get_max_threads(), desc, t_train.wall, t_train.cpu, t_add.wall, t_add.cpu, t_search.wall,
           t_search.cpu, t_all.wall, t_all.cpu, self_first, ndup, dup_found, edges95);
    knn_free(ix);
    free(sims);
    free(res);
    free(ssims);
    free(sres);
    free(dupof);
    munmap(m.base, m.len);
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------
 * exact */

static int cmd_exact(const args *a)
{
    mapped m = {0};
    if (npy_map_read(a->npy, &m) != 0)
        return die("exact");
    const int64_t n = m.n;
    const int32_t d = m.d, k = a->k;
    int64_t ms = a->sample < n ? a->sample : n;
    size_t cnt = (size_t)ms * (size_t)k;
    int64_t *gres = malloc(cnt * sizeof *gres), *eres = malloc(cnt * sizeof *eres);
    float *gsims = malloc(cnt * sizeof *gsims), *esims = malloc(cnt * sizeof *esims);
    float *q = malloc((size_t)ms * (size_t)d * sizeof *q);
    if (!gres || !eres || !gsims || !esims || !q)
        return die("out of memory");
    FILE *f = fopen(a->sample_in, "rb");
    if (!f || fread(gres, sizeof *gres, cnt, f) != cnt || fread(gsims, sizeof *gsims, cnt, f) != cnt) {
        lvd_fail_errno("reading %s (graph rows of %" PRId64 " sample queries, k %" PRId32 ")", a->sample_in, ms, k);
        return die("exact");
    }
    fclose(f);
    for (int64_t i = 0; i < ms; i++)
        memcpy(q + i * d, m.x + sample_row(i, ms, n) * d, (size_t)d * sizeof *q);

    knn_opts o;
    knn_opts_default(&o);
    o.exact_max = n;
    knn_index *ix = NULL;
    stopwatch t0 = sw_start();
    if (knn_create(d, n, &o, &ix) != 0)
        return die("creating the exact index");
    if (add_rows(ix, &m) != 0)
        return die("adding");
    stopwatch t_add = sw_since(t0);
    stopwatch t1 = sw_start();
    if (knn_search(ix, q, ms, k, esims, eres) != 0)
        return die("exact search of the sample");
    stopwatch t_sample = sw_since(t1);

    /* recall@k of the graph rows: a graph neighbour counts when it is among the exact k, or ties the k-th */
    int64_t hit = 0, want = 0, hit1 = 0;
    for (int64_t i = 0; i < ms; i++) {
        const int64_t *g = gres + i * k, *e = eres + i * k;
        const float *gs = gsims + i * k, *es = esims + i * k;
        float kth = -INFINITY;
        for (int32_t j = 0; j < k; j++)
            if (e[j] >= 0) {
                want++;
                kth = es[j];
            }
        for (int32_t j = 0; j < k; j++) {
            if (g[j] < 0)
                continue;
            int found = 0;
            for (int32_t l = 0; l < k && !found; l++)
                found = e[l] == g[j];
            if (!found && gs[j] >= kth - 1e-6f * fabsf(kth))
                found = 1;
            hit += found;
        }
        hit1 += g[0] == e[0] || gs[0] >= es[0] - 1e-6f;
    }

    /* the baseline: exact search of more rows (not the sample's), extrapolated to all n */
    int64_t nb = a->queries < n ? a->queries : n;
    stopwatch t_base = {0, 0};
    if (nb > 0) {
        const int64_t qb = 2048;
        float *bs_sims = malloc((size_t)qb * (size_t)k * sizeof *bs_sims);
        int64_t *bs_res = malloc((size_t)qb * (size_t)k * sizeof *bs_res);
        float *bq = malloc((size_t)qb * (size_t)d * sizeof *bq);
        if (!bs_sims || !bs_res || !bq)
            return die("out of memory");
        stopwatch t2 = sw_start();
        for (int64_t at = 0; at < nb; at += qb) {
            int64_t b = nb - at < qb ? nb - at : qb;
            for (int64_t i = 0; i < b; i++)
                memcpy(bq + i * d, m.x + ((sample_row(at + i, nb, n) + 7) % n) * d, (size_t)d * sizeof *bq);
            if (knn_search(ix, bq, b, k, bs_sims, bs_res) != 0)
                return die("exact search");
        }
        t_base = sw_since(t2);
        free(bs_sims);
        free(bs_res);
        free(bq);
    }
    char desc[512];
    knn_describe(ix, desc, sizeof desc);
    double per = nb > 0 ? t_base.wall / (double)nb : t_sample.wall / (double)ms;
    double per_cpu = nb > 0 ? t_base.cpu / (double)nb : t_sample.cpu / (double)ms;
    printf("{\"mode\": \"exact\", \"n\": %" PRId64 ", \"d\": %" PRId32 ", \"k\": %" PRId32 ", \"threads\": %d, "
           "\"index\": \"%s\", \"sample\": %" PRId64 ", \"recall\": %.4f, \"recall_at_1\": %.4f, \"add_s\": %.2f, "
           "\"sample_search_s\": %.2f, \"queries\": %" PRId64 ", \"queries_s\": %.2f, \"queries_cpu_s\": %.2f, "
           "\"graph_extrapolated_s\": %.0f, \"graph_extrapolated_cpu_s\": %.0f}\n",
           n, d, k, omp_get_max_threads(), desc, ms, want ? (double)hit / (double)want : 1.0,
           (double)hit1 / (double)ms, t_add.wall, t_sample.wall, nb, t_base.wall, t_base.cpu,
           t_add.wall + per * (double)n, t_add.cpu + per_cpu * (double)n);
    knn_free(ix);
    free(gres);
    free(eres);
    free(gsims);
    free(esims);
    free(q);
    munmap(m.base, m.len);
    return 0;
}

/* ------------------------------------------------------------------------------------------------------------ */

static int usage(void)
{
    fprintf(stderr, "usage: dedup_knn gen --out X.npy --n N --d D [--seed S]\n"
                    "       dedup_knn graph --npy X.npy --k K [--factory F] [--nprobe P] [--sample M] "
                    "[--exact-max E] [--out-sample S] [--threads T] [--faiss-scan 0|1]\n"
                    "       dedup_knn exact --npy X.npy --k K --sample M --in-sample S [--queries Q] [--threads T]\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    args a = {.n = 1000000, .d = 384, .k = 64, .sample = 1000, .queries = 10000, .exact_max = -1, .seed = 1};
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return usage();
        i++;
        if (!strcmp(o, "--out"))
            a.out = v;
        else if (!strcmp(o, "--npy"))
            a.npy = v;
        else if (!strcmp(o, "--factory"))
            a.factory = v;
        else if (!strcmp(o, "--out-sample"))
            a.sample_out = v;
        else if (!strcmp(o, "--in-sample"))
            a.sample_in = v;
        else if (!strcmp(o, "--n"))
            a.n = strtoll(v, NULL, 10);
        else if (!strcmp(o, "--d"))
            a.d = (int32_t)strtol(v, NULL, 10);
        else if (!strcmp(o, "--k"))
            a.k = (int32_t)strtol(v, NULL, 10);
        else if (!strcmp(o, "--nprobe"))
            a.nprobe = (int32_t)strtol(v, NULL, 10);
        else if (!strcmp(o, "--sample"))
            a.sample = strtoll(v, NULL, 10);
        else if (!strcmp(o, "--exact-max"))
            a.exact_max = strtoll(v, NULL, 10);
        else if (!strcmp(o, "--queries"))
            a.queries = strtoll(v, NULL, 10);
        else if (!strcmp(o, "--threads"))
            a.threads = (int32_t)strtol(v, NULL, 10);
        else if (!strcmp(o, "--faiss-scan"))
            a.faiss_scan = (int32_t)strtol(v, NULL, 10);
        else if (!strcmp(o, "--seed"))
            a.seed = strtoull(v, NULL, 10);
        else
            return usage();
    }
    if (a.threads > 0)
        omp_set_num_threads(a.threads);
    if (a.n <= 0 || a.d <= 0 || a.k <= 0 || a.sample <= 0 || a.queries < 0)
        return usage();
    if (!strcmp(argv[1], "gen") && a.out)
        return cmd_gen(&a);
    if (!strcmp(argv[1], "graph") && a.npy)
        return cmd_graph(&a);
    if (!strcmp(argv[1], "exact") && a.npy && a.sample_in)
        return cmd_exact(&a);
    return usage();
}
