/* manifest_read.c — benchmark driver of the manifest reader (common/manifest.h): reads every sample of a
 * manifest through manifest_read (or manifest_read_checked) with T threads and prints one JSON line:
 * {"samples", "bytes", "threads", "checked", "order", "seconds", "images_per_s", "mb_per_s", "open_seconds"}.
 *
 *   manifest_read M.db [--threads T] [--checked] [--shuffle SEED] [--passes P]
 *
 * --passes P reads the whole set P times (a longer, steadier measurement; images/s counts every read).
 *
 * Without --shuffle, thread t reads the samples in key order in blocks of 256 taken from a shared counter
 * (neighbouring samples mostly share a shard and a region of it); with --shuffle it reads epoch 0 of
 * manifest_order(SEED) as one rank, the trainer's access pattern. Every byte read is summed into a checksum so
 * the reads cannot be optimised away. Used by benchmarks/manifest_read.sh. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "manifest.h"

#define BLOCK 256 /* samples a thread takes from the shared counter at a time */

typedef struct job {
    const manifest *m;
    const uint32_t *order; /* NULL: key order */
    size_t n;      /* samples per pass */
    size_t total;  /* n * passes: reads to do */
    int checked;
    atomic_size_t next;
    atomic_uint_fast64_t bytes, sum;
    atomic_int failed;
} job;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *worker(void *arg)
{
    job *j = arg;
    size_t cap = 1 << 20;
    uint8_t *buf = malloc(cap);
    uint64_t bytes = 0, sum = 0;
    for (;;) {
        size_t start = atomic_fetch_add(&j->next, BLOCK);
        if (start >= j->total || !buf)
            break;
        size_t end = start + BLOCK < j->total ? start + BLOCK : j->total;
        for (size_t q = start; q < end; q++) {
            size_t k = q % j->n;
            size_t i = j->order ? j->order[k] : k, len;
            manifest_sample s;
            manifest_sample_meta(j->m, i, &s);
            if (s.length > cap) {
                free(buf);
                cap = (size_t)s.length;
                buf = malloc(cap);
                if (!buf)
                    break;
            }
            int rc = j->checked ? manifest_read_checked(j->m, i, buf, cap, &len) : manifest_read(j->m, i, buf, cap, &len);
            if (rc != 0) {
                fprintf(stderr, "manifest_read: %s\n", lvd_errmsg());
                atomic_store(&j->failed, 1);
                free(buf);
                return NULL;
            }
            bytes += len;
            sum += buf[0] + buf[len / 2] + buf[len - 1];
        }
    }
    free(buf);
    atomic_fetch_add(&j->bytes, bytes);
    atomic_fetch_add(&j->sum, sum);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int threads = 1, checked = 0, shuffle = 0, passes = 1;
    uint64_t seed = 0;
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--threads") && a + 1 < argc)
            threads = atoi(argv[++a]);
        else if (!strcmp(argv[a], "--passes") && a + 1 < argc)
            passes = atoi(argv[++a]);
        else if (!strcmp(argv[a], "--checked"))
            checked = 1;
        else if (!strcmp(argv[a], "--shuffle") && a + 1 < argc) {
            shuffle = 1;
            seed = strtoull(argv[++a], NULL, 10);
        } else if (argv[a][0] != '-' && !path)
            path = argv[a];
        else {
            fprintf(stderr, "usage: manifest_read M.db [--threads T] [--checked] [--shuffle SEED] [--passes P]\n");
            return 2;
        }
    }
    if (!path || threads < 1 || threads > 256 || passes < 1) {
        fprintf(stderr, "usage: manifest_read M.db [--threads T] [--checked] [--shuffle SEED] [--passes P]\n");
        return 2;
    }
    double t0 = now();
    manifest *m;
    if (manifest_open(&m, path) != 0) {
        fprintf(stderr, "manifest_read: %s\n", lvd_errmsg());
        return 1;
    }
    double t_open = now() - t0;
    job j = {.m = m, .n = manifest_count(m), .checked = checked};
    uint32_t *order = NULL;
    if (shuffle) {
        if (manifest_order(m, seed, 0, 0, 1, &order, &j.n) != 0) {
            fprintf(stderr, "manifest_read: %s\n", lvd_errmsg());
            return 1;
        }
        j.order = order;
    }
    j.total = j.n * (size_t)passes;
    atomic_init(&j.next, 0);
    atomic_init(&j.bytes, 0);
    atomic_init(&j.sum, 0);
    atomic_init(&j.failed, 0);
    pthread_t tid[256];
    double t1 = now();
    for (int t = 0; t < threads; t++)
        if (pthread_create(&tid[t], NULL, worker, &j) != 0) {
            fprintf(stderr, "manifest_read: cannot start thread %d\n", t);
            return 1;
        }
    for (int t = 0; t < threads; t++)
        pthread_join(tid[t], NULL);
    double secs = now() - t1;
    if (atomic_load(&j.failed))
        return 1;
    uint64_t bytes = atomic_load(&j.bytes);
    printf("{\"samples\": %zu, \"passes\": %d, \"bytes\": %" PRIu64 ", \"threads\": %d, \"checked\": %s, \"order\": \"%s\", "
           "\"seconds\": %.4f, \"images_per_s\": %.0f, \"mb_per_s\": %.1f, \"open_seconds\": %.4f, \"sum\": %" PRIu64
           "}\n",
           j.n, passes, bytes, threads, checked ? "true" : "false", shuffle ? "shuffled" : "key", secs,
           (double)j.total / secs,
           (double)bytes / 1e6 / secs, t_open, (uint64_t)atomic_load(&j.sum));
    free(order);
    manifest_close(m);
    return 0;
}
