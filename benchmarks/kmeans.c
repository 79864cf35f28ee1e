/* kmeans.c — common/kmeans measured (driven by benchmarks/kmeans.sh).
 *
 *   kmeans run --npy X.npy --k K [--iterations 20] [--mppc 256] [--seed S] [--threads T]
 *              [--init random|plusplus|greedy] [--batch 65536] [--out-centroids C.npy] [--out-labels L.i32]
 *       Reads X (n, d) float32, trains K centroids with kmeans_train (spherical, max_points_per_centroid
 *       --mppc, so n_train = min(n, K * mppc)), then assigns all n rows with kmeans_assign in batches of
 *       --batch rows, as lvd-retrieve streams its pool. Prints one JSON line: phase times (wall and CPU), the
 *       per-iteration objective (mean cosine of the training rows), the mean cosine of all n rows to their
 *       centroid ("mean_cos"; with --init greedy, lvd-balance's k-means: squared L2, exactly --iterations
 *       updates, an empty cluster keeping its centroid, and "mean_cos" is the mean squared distance), and the
 *       cluster sizes of the assignment. Writes the centroids and the labels (int32) when asked.
 *   kmeans assign --npy X.npy --centroids C.npy [--threads T] [--batch 65536] --labels L.i32
 *       Assigns X to the centroids of C (e.g. FAISS's) and prints the time and the share of rows whose label
 *       equals the one in L (e.g. FAISS's search of the same centroids): a check of kmeans_assign at scale.
 *
 * Timings are CLOCK_MONOTONIC (wall) and CLOCK_PROCESS_CPUTIME_ID (CPU of all threads). */
#include "err.h"
#include "kmeans.h"
#include "npy.h"

#include <inttypes.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct args {
    const char *npy, *out_centroids, *out_labels, *centroids, *labels;
    int64_t mppc, batch;
    int32_t k, iterations, threads, init;
    uint64_t seed;
} args;

static double now(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int die(const char *what)
{
    fprintf(stderr, "kmeans: %s%s%s\n", what, *lvd_errmsg() ? ": " : "", lvd_errmsg());
    return 1;
}

/* Reads a 2-D float32 .npy into x (n, d). */
static int load_x(const char *path, npy_array *a)
{
    if (npy_read(path, a) != 0)
        return -1;
    if (a->ndim != 2 || a->shape[0] < 1 || a->shape[1] < 1) {
        npy_free(a);
        return lvd_fail("%s: not a non-empty 2-D array", path);
    }
    return 0;
}

/* Assigns all rows of x (n, d) in batches; labels (n), scores (n). Returns 0 or -1. */
static int assign_batches(const float *x, int64_t n, int32_t d, const float *c, int32_t k, int spherical,
                          int32_t threads, int64_t batch, int32_t *labels, float *scores)
{
    for (int64_t at = 0; at < n; at += batch) {
        int64_t b = n - at < batch ? n - at : batch;
        if (kmeans_assign(x + at * d, b, d, c, k, spherical, threads, labels + at, scores + at) != 0)
            return -1;
    }
    return 0;
}

static int write_labels(const char *path, const int32_t *labels, int64_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(labels, sizeof *labels, (size_t)n, f) != (size_t)n || fclose(f) != 0)
        return lvd_fail_errno("writing %s", path);
    return 0;
}

static int cmd_run(const args *a)
{
    npy_array xa;
    if (load_x(a->npy, &xa) != 0)
        return die("reading the vectors");
    int64_t n = xa.shape[0];
    int32_t d = (int32_t)xa.shape[1], k = a->k;
    kmeans_opts o;
    kmeans_opts_default(&o);
    o.k = k;
    o.iterations = a->iterations;
    o.seed = a->seed;
    o.max_points_per_centroid = a->mppc;
    o.threads = a->threads;
    o.init = a->init == 1 ? KMEANS_INIT_PLUSPLUS : a->init == 3 ? KMEANS_INIT_GREEDY : KMEANS_INIT_RANDOM;
    if (o.init == KMEANS_INIT_GREEDY) { /* lvd-balance's k-means: squared L2, fixed iterations, empty kept */
        o.spherical = 0;
        o.fixed_iterations = 1;
        o.empty = KMEANS_EMPTY_KEEP;
    }
    float *c = malloc((size_t)k * (size_t)d * sizeof *c);
    double *obj = calloc((size_t)(a->iterations > 0 ? a->iterations : 1), sizeof *obj);
    int32_t *labels = malloc((size_t)n * sizeof *labels);
    float *scores = malloc((size_t)n * sizeof *scores);
    int64_t *sizes = calloc((size_t)k, sizeof *sizes);
    if (!c || !obj || !labels || !scores || !sizes)
        return die("out of memory");
    kmeans_stats st = {.objective = obj};

    double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
    if (kmeans_train(xa.data, n, d, &o, c, &st) != 0)
        return die("kmeans_train");
    double w1 = now(CLOCK_MONOTONIC), c1 = now(CLOCK_PROCESS_CPUTIME_ID);
    if (assign_batches(xa.data, n, d, c, k, o.spherical, a->threads, a->batch, labels, scores) != 0)
        return die("kmeans_assign");
    double w2 = now(CLOCK_MONOTONIC), c2 = now(CLOCK_PROCESS_CPUTIME_ID);

    double mean = 0;
    for (int64_t i = 0; i < n; i++) {
        mean += scores[i];
        sizes[labels[i]]++;
    }
    mean /= (double)n;
    int64_t smin = INT64_MAX, smax = 0, empty = 0;
    for (int32_t j = 0; j < k; j++) {
        smin = sizes[j] < smin ? sizes[j] : smin;
        smax = sizes[j] > smax ? sizes[j] : smax;
        empty += sizes[j] == 0;
    }
    if (a->out_centroids && kmeans_save(a->out_centroids, c, k, d) != 0)
        return die("saving the centroids");
    if (a->out_labels && write_labels(a->out_labels, labels, n) != 0)
        return die("saving the labels");
    printf("{\"side\": \"lvd\", \"n\": %" PRId64 ", \"d\": %" PRId32 ", \"k\": %" PRId32 ", \"threads\": %d, "
           "\"n_train\": %" PRId64 ", \"iterations\": %" PRId32 ", \"repaired\": %" PRId64 ", "
           "\"train_s\": %.3f, \"train_cpu_s\": %.3f, \"assign_s\": %.3f, \"assign_cpu_s\": %.3f, "
           "\"mean_cos\": %.6f, \"size_min\": %" PRId64 ", \"size_max\": %" PRId64 ", \"empty\": %" PRId64
           ", \"objective\": [",
           n, d, k, a->threads > 0 ? a->threads : omp_get_max_threads(), st.n_train, st.iterations, st.repaired,
           w1 - w0, c1 - c0, w2 - w1, c2 - c1, mean, smin, smax, empty);
    for (int32_t i = 0; i < st.iterations; i++)
        printf("%s%.6f", i ? ", " : "", obj[i]);
    printf("]}\n");
    free(c);
    free(obj);
    free(labels);
    free(scores);
    free(sizes);
    npy_free(&xa);
    return 0;
}

static int cmd_assign(const args *a)
{
    npy_array xa;
    if (load_x(a->npy, &xa) != 0)
        return die("reading the vectors");
    int64_t n = xa.shape[0];
    int32_t d = (int32_t)xa.shape[1], k, dc;
    float *c;
    if (kmeans_load(a->centroids, d, &c, &k, &dc) != 0)
        return die("reading the centroids");
    int32_t *labels = malloc((size_t)n * sizeof *labels), *ref = malloc((size_t)n * sizeof *ref);
    float *scores = malloc((size_t)n * sizeof *scores);
    if (!labels || !ref || !scores)
        return die("out of memory");
    FILE *f = fopen(a->labels, "rb");
    if (!f || fread(ref, sizeof *ref, (size_t)n, f) != (size_t)n) {
        lvd_fail_errno("reading %" PRId64 " labels from %s", n, a->labels);
        return die("reference labels");
    }
    fclose(f);
    double w0 = now(CLOCK_MONOTONIC), c0 = now(CLOCK_PROCESS_CPUTIME_ID);
    if (assign_batches(xa.data, n, d, c, k, 1, a->threads, a->batch, labels, scores) != 0)
        return die("kmeans_assign");
    double w1 = now(CLOCK_MONOTONIC), c1 = now(CLOCK_PROCESS_CPUTIME_ID);
    int64_t same = 0;
    double mean = 0;
    for (int64_t i = 0; i < n; i++) {
        same += labels[i] == ref[i];
        mean += scores[i];
    }
    printf("{\"side\": \"lvd-assign\", \"n\": %" PRId64 ", \"k\": %" PRId32 ", \"assign_s\": %.3f, "
           "\"assign_cpu_s\": %.3f, \"same_label\": %" PRId64 ", \"mean_cos\": %.6f}\n",
           n, k, w1 - w0, c1 - c0, same, mean / (double)n);
    free(c);
    free(labels);
    free(ref);
    free(scores);
    npy_free(&xa);
    return 0;
}

static int usage(void)
{
    fprintf(stderr, "usage: kmeans run --npy X.npy --k K [--iterations 20] [--mppc 256] [--seed S] [--threads T]\n"
                    "                  [--init random|plusplus|greedy] [--batch 65536] [--out-centroids C.npy]\n"
                    "                  [--out-labels L.i32]\n"
                    "       kmeans assign --npy X.npy --centroids C.npy --labels L.i32 [--threads T] [--batch B]\n");
    return 2;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage();
    args a = {.mppc = 256, .batch = 65536, .iterations = 20, .seed = 1234};
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v)
            return usage();
        i++;
        if (!strcmp(o, "--npy"))
            a.npy = v;
        else if (!strcmp(o, "--k"))
            a.k = (int32_t)atol(v);
        else if (!strcmp(o, "--iterations"))
            a.iterations = (int32_t)atol(v);
        else if (!strcmp(o, "--mppc"))
            a.mppc = atoll(v);
        else if (!strcmp(o, "--seed"))
            a.seed = strtoull(v, NULL, 10);
        else if (!strcmp(o, "--threads"))
            a.threads = (int32_t)atol(v);
        else if (!strcmp(o, "--init"))
            a.init = !strcmp(v, "plusplus") ? 1 : !strcmp(v, "greedy") ? 3 : 0;
        else if (!strcmp(o, "--batch"))
            a.batch = atoll(v);
        else if (!strcmp(o, "--out-centroids"))
            a.out_centroids = v;
        else if (!strcmp(o, "--out-labels"))
            a.out_labels = v;
        else if (!strcmp(o, "--centroids"))
            a.centroids = v;
        else if (!strcmp(o, "--labels"))
            a.labels = v;
        else
            return usage();
    }
    if (!a.npy || a.batch < 1)
        return usage();
    if (!strcmp(argv[1], "run") && a.k > 0)
        return cmd_run(&a);
    if (!strcmp(argv[1], "assign") && a.centroids && a.labels)
        return cmd_assign(&a);
    return usage();
}
