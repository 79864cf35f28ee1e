/* train_step — the C side of the training-step benchmark (benchmarks/train_step.sh): lvd-train's step
 * (train/step.h) on random crops, as benchmarks/train_step_torch.py runs PyTorch's.
 *
 *   train_step [--arch vit_small] [--batch 16] [--global-size 224] [--local-size 98] [--locals 8]
 *              [--prototypes 65536] [--threads 2] [--iters 3] [--warmup 1] [--recompute BLOCKS]
 *
 * One step: teacher on the 2B global crops -> shared head on CLS and masked tokens -> softmax centering; the
 * student on the masked global crops and the local crops -> heads -> DINO, iBOT, KoLeo; backward; clipping 3.0
 * per module; AdamW; EMA. The recipe is ssl_default_config's (heads 2048 / 256, shared iBOT head) at patch 14 with
 * the given sizes and no drop path (as the PyTorch side). Crops are N(0, 1) floats; masks come from the collate
 * (train/masking.h). Prints one JSON line: images/s, CPU seconds per image, seconds per step, peak RSS (MB).
 */
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "err.h"
#include "train/masking.h"
#include "train/recipe.h"
#include "train/step.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static double cpu_seconds(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + 1e-6 * (double)u.ru_utime.tv_usec + (double)u.ru_stime.tv_sec +
           1e-6 * (double)u.ru_stime.tv_usec;
}

static int set(recipe *r, const char *key, const char *value)
{
    char a[256];
    snprintf(a, sizeof a, "%s=%s", key, value);
    return recipe_set(r, a, "train_step");
}

static void fill_normal(float *x, size_t n, uint64_t *s)
{
    for (size_t i = 0; i + 1 < n; i += 2) {
        *s = *s * 6364136223846793005ull + 1442695040888963407ull;
        double u1 = ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
        *s = *s * 6364136223846793005ull + 1442695040888963407ull;
        double u2 = ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
        double r = sqrt(-2.0 * log(u1));
        x[i] = (float)(r * cos(6.283185307179586 * u2));
        x[i + 1] = (float)(r * sin(6.283185307179586 * u2));
    }
}

int main(int argc, char **argv)
{
    const char *arch = "vit_small";
    int batch = 16, gsize = 224, lsize = 98, locals = 8, protos = 65536, threads = 2, iters = 3, warmup = 1;
    const char *recompute = "-1";
    static const struct option opts[] = {
        {"arch", required_argument, NULL, 'a'}, {"batch", required_argument, NULL, 'b'},
        {"global-size", required_argument, NULL, 'g'}, {"local-size", required_argument, NULL, 'l'},
        {"locals", required_argument, NULL, 'n'}, {"prototypes", required_argument, NULL, 'k'},
        {"threads", required_argument, NULL, 't'}, {"iters", required_argument, NULL, 'i'},
        {"warmup", required_argument, NULL, 'w'}, {"recompute", required_argument, NULL, 'r'},
        {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'a': arch = optarg; break;
        case 'b': batch = atoi(optarg); break;
        case 'g': gsize = atoi(optarg); break;
        case 'l': lsize = atoi(optarg); break;
        case 'n': locals = atoi(optarg); break;
        case 'k': protos = atoi(optarg); break;
        case 't': threads = atoi(optarg); break;
        case 'i': iters = atoi(optarg); break;
        case 'w': warmup = atoi(optarg); break;
        case 'r': recompute = optarg; break;
        default: fprintf(stderr, "train_step: unknown option\n"); return 2;
        }
    }
    static recipe r;
    recipe_defaults(&r);
    char v[64];
    int rc = set(&r, "student.arch", arch) | set(&r, "student.patch_size", "14") |
             set(&r, "student.drop_path_rate", "0") | set(&r, "train.recompute_blocks", recompute);
    snprintf(v, sizeof v, "%d", batch);
    rc |= set(&r, "train.batch_size_per_gpu", v);
    snprintf(v, sizeof v, "%d", gsize);
    rc |= set(&r, "crops.global_crops_size", v);
    snprintf(v, sizeof v, "%d", lsize);
    rc |= set(&r, "crops.local_crops_size", v);
    snprintf(v, sizeof v, "%d", locals);
    rc |= set(&r, "crops.local_crops_number", v);
    snprintf(v, sizeof v, "%d", protos);
    rc |= set(&r, "dino.head_n_prototypes", v);
    if (rc != 0 || recipe_finish(&r, 1) != 0) {
        fprintf(stderr, "train_step: %s\n", lvd_errmsg());
        return 1;
    }
    vit_set_threads(threads);
    train_model *m;
    if (train_model_create(&r, 1, &m) != 0) {
        fprintf(stderr, "train_step: %s\n", lvd_errmsg());
        return 1;
    }
    train_model_init_weights(m, 0);

    size_t ng = (size_t)2 * batch * 3 * gsize * gsize, nl = (size_t)locals * batch * 3 * lsize * lsize;
    float *global = malloc(ng * sizeof(float)), *local = malloc((nl ? nl : 1) * sizeof(float));
    mask_gen g;
    mask_batch mb;
    mask_rng mr;
    if (!global || !local || mask_gen_default(&g, gsize, 14) != 0 ||
        mask_batch_init(&mb, 2 * batch, m->n_tokens) != 0) {
        fprintf(stderr, "train_step: setup failed\n");
        return 1;
    }
    uint64_t s = 42;
    mask_rng_seed(&mr, 7);
    double t_steps = 0.0, cpu_steps = 0.0, loss = 0.0;
    for (int it = 0; it < warmup + iters; it++) {
        fill_normal(global, ng, &s);
        fill_normal(local, nl, &s);
        if (mask_collate(&g, &mr, 0.1, 0.5, 0.5, &mb) != 0)
            return 1;
        double t0 = now(), c0 = cpu_seconds();
        train_step_report rep;
        if (train_step(m, global, local, mb.masks, &rep) != 0) {
            fprintf(stderr, "train_step: %s\n", lvd_errmsg());
            return 1;
        }
        double t1 = now(), c1 = cpu_seconds();
        if (it >= warmup) {
            t_steps += t1 - t0;
            cpu_steps += c1 - c0;
        }
        loss = rep.terms.total;
        fprintf(stderr, "step %d: %.2f s, total loss %.4f\n", it, t1 - t0, loss);
    }
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    fprintf(stderr, "activations: student global %.1f MB, student local %.1f MB, shared (backward scratch, "
            "teacher) %.1f MB; parameters (student, gradient, teacher, 2 moments) %.1f MB\n",
            vit_run_bytes(m->s_run_g) / 1e6, m->s_run_l ? vit_run_bytes(m->s_run_l) / 1e6 : 0.0,
            m->shared_bytes / 1e6, 5.0 * (double)m->opt.n_floats * 4 / 1e6);
    double step_s = t_steps / iters;
    printf("{\"side\": \"lvd\", \"arch\": \"%s\", \"batch\": %d, \"global\": %d, \"local\": %d, \"locals\": %d, "
           "\"prototypes\": %d, \"recompute\": %d, \"threads\": %d, \"iters\": %d, \"step_s\": %.2f, \"images_per_s\": %.3f, "
           "\"cpu_s_per_image\": %.4f, \"max_rss_mb\": %.1f, \"loss\": %.4f}\n",
           arch, batch, gsize, lsize, locals, protos, r.train.recompute_blocks, threads, iters, step_s, batch / step_s,
           cpu_steps / iters / batch, (double)u.ru_maxrss / 1024.0, loss);
    mask_batch_free(&mb);
    free(global);
    free(local);
    train_model_free(m);
    return 0;
}
