/* lvd-vit — the ViT core on its own: run a checkpoint on a tensor, benchmark an architecture, describe a
 * checkpoint, or write a deterministic random one.
 *
 *   lvd-vit forward --model M.safetensors --input X.npy --output Y.npy [--output-kind cls|patch|all|layers:N]
 *   lvd-vit bench --arch vit_small --img 224 --batch B [--train] [--iters K]
 *   lvd-vit info --model M.safetensors
 *   lvd-vit init --arch A --out M.safetensors [--seed S] [--img PIXELS] [--ls-init G]
 *   lvd-vit sgemm [--n 2048] [--iters 5]
 *
 * train/: the model side of the suite. lvd_vit.c is the ViT core's own tool; the core (vit, vit_layers,
 * posembed, vit_io) is in common/ because lvd-embed runs it too. The trainer's and evaluator's modules will
 * live here.
 */
#include <cblas.h>
#include <getopt.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "log.h"
#include "npy.h"
#include "opts.h"
#include "vit.h"
#include "vit_io.h"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

static const char *usage =
    "usage: lvd-vit COMMAND [options]\n"
    "\n"
    "  forward --model M.safetensors --input X.npy --output Y.npy [--output-kind KIND] [--batch B]\n"
    "      Runs the model on X, float32 (B, 3, H, W), already normalised; H and W multiples of the patch.\n"
    "      KIND: cls (B, D) normed CLS [default]; patch (B, N, D) normed patch tokens; all (B, 1+R+N, D) every\n"
    "      normed token (CLS, registers, patches); layers:N (N, B, N_patch, D) normed patch tokens of the last\n"
    "      N blocks (get_intermediate_layers). --batch: images per pass (default 32).\n"
    "  bench --arch NAME [--img 224] [--batch 32] [--train] [--iters 5] [--warmup 1]\n"
    "      Forward (with --train: forward + backward) on random inputs; prints images/s and GFLOP/s as JSON.\n"
    "  info --model M.safetensors\n"
    "      The checkpoint's architecture and parameter count, as JSON.\n"
    "  init --arch NAME --out M.safetensors [--seed 0] [--img PIXELS] [--ls-init 1.0]\n"
    "      A deterministic randomly initialised model (the official init). --img sets the positional grid to\n"
    "      PIXELS / patch (default: the preset's 37 x 37, i.e. 518 pixels).\n"
    "  sgemm [--n 2048] [--iters 5]\n"
    "      The machine's SGEMM rate (OpenBLAS, n x n x n, same threads) in GFLOP/s, as JSON: the peak that\n"
    "      bench figures are compared with.\n"
    "\n"
    "common: --threads N (default: all cores), --quiet, --verbose, --help, --version\n"
    "architectures: vit_small vit_base vit_large vit_giant2 vit_tiny vit_pico, each optionally _reg4\n";

enum { O_N = 255, O_MODEL = 256, O_INPUT, O_OUTPUT, O_KIND, O_BATCH, O_ARCH, O_IMG, O_TRAIN, O_ITERS, O_WARMUP, O_OUT, O_SEED,
       O_LS, O_THREADS, O_QUIET, O_VERBOSE, O_VERSION };

typedef struct args {
    const char *model, *input, *output, *kind, *arch, *out;
    int64_t batch, img, iters, warmup, seed, threads, n;
    double ls_init;
    int train;
} args;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process (all threads): robust to other load on the machine, unlike wall time. */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *ffn_name(vit_ffn f) { return f == VIT_FFN_SWIGLU ? "swiglu" : "mlp"; }
static const char *pos_name(vit_pos_mode p) { return p == VIT_POS_SIZE_AA ? "size_aa" : "offset"; }

static void print_config(const vit_config *c, size_t n_params)
{
    printf("{\"patch\":%d,\"pos_grid\":%d,\"dim\":%d,\"depth\":%d,\"heads\":%d,\"ffn\":\"%s\",\"ffn_hidden\":%d,"
           "\"n_reg\":%d,\"pos_mode\":\"%s\",\"layerscale\":%d,\"params\":%zu}\n",
           c->patch, c->pos_grid, c->dim, c->depth, c->heads, ffn_name(c->ffn), c->ffn_hidden, c->n_reg,
           pos_name(c->pos_mode), c->layerscale, n_params);
}

static int cmd_info(const args *a)
{
    vit_model *m;
    if (!a->model)
        return lvd_fail("info needs --model");
    if (vit_load(a->model, NULL, 0, &m) != 0)
        return -1;
    print_config(&m->cfg, m->n_params);
    vit_free(m);
    return 0;
}

static int cmd_init(const args *a)
{
    vit_config c;
    if (!a->arch || !a->out)
        return lvd_fail("init needs --arch and --out");
    if (vit_preset(a->arch, &c) != 0)
        return -1;
    if (a->img > 0) {
        if (a->img % c.patch)
            return lvd_fail("--img %lld is not a multiple of the patch size %d", (long long)a->img, c.patch);
        c.pos_grid = (int32_t)(a->img / c.patch);
    }
    vit_model *m;
    if (vit_create(&c, &m) != 0)
        return -1;
    vit_init_random(m, (uint64_t)a->seed, (float)a->ls_init);
    int rc = vit_save(m, a->out, 0);
    if (rc == 0)
        log_info("wrote %s: %s, %zu parameters, random (seed %lld)", a->out, a->arch, m->n_params,
                 (long long)a->seed);
    vit_free(m);
    return rc;
}

/* Output kinds of forward. */
typedef enum { K_CLS, K_PATCH, K_ALL, K_LAYERS } out_kind;

static int parse_kind(const char *s, out_kind *k, int32_t *n_layers)
{
    *n_layers = 0;
    if (!s || strcmp(s, "cls") == 0)
        *k = K_CLS;
    else if (strcmp(s, "patch") == 0)
        *k = K_PATCH;
    else if (strcmp(s, "all") == 0)
        *k = K_ALL;
    else if (strncmp(s, "layers:", 7) == 0) {
        int64_t n;
        if (opt_int("--output-kind layers:N", s + 7, 1, 1024, &n) != 0)
            return -1;
        *k = K_LAYERS;
        *n_layers = (int32_t)n;
    } else
        return lvd_fail("--output-kind: '%s' is not cls, patch, all or layers:N", s);
    return 0;
}

static int cmd_forward(const args *a)
{
    out_kind kind = K_CLS;
    int32_t n_layers;
    if (!a->model || !a->input || !a->output)
        return lvd_fail("forward needs --model, --input and --output");
    if (parse_kind(a->kind, &kind, &n_layers) != 0)
        return -1;
    vit_model *m = NULL;
    vit_run *r = NULL;
    npy_array x = {0};
    float *out = NULL;
    int rc = -1;
    if (vit_load(a->model, NULL, 0, &m) != 0)
        goto done;
    if (npy_read(a->input, &x) != 0)
        goto done;
    const vit_config *c = &m->cfg;
    if (x.ndim != 4 || x.shape[1] != 3) {
        lvd_fail("%s: expected a float32 (B, 3, H, W) tensor, got %d dimensions%s", a->input, x.ndim,
                 x.ndim == 4 ? " with a channel count other than 3" : "");
        goto done;
    }
    int64_t b = x.shape[0], h = x.shape[2], w = x.shape[3];
    if (h % c->patch || w % c->patch) {
        lvd_fail("%s: image %lld x %lld is not a multiple of the patch size %d", a->input, (long long)h,
                 (long long)w, c->patch);
        goto done;
    }
    if (kind == K_LAYERS && n_layers > c->depth) {
        lvd_fail("--output-kind layers:%d: the model has %d blocks", n_layers, c->depth);
        goto done;
    }
    int64_t n = (h / c->patch) * (w / c->patch), t = 1 + c->n_reg + n, d = c->dim;
    int64_t per_image = kind == K_CLS ? d : kind == K_PATCH ? n * d : kind == K_ALL ? t * d : n_layers * n * d;
    out = malloc((size_t)(b * per_image) * sizeof(float));
    if (!out) {
        lvd_fail("out of memory for the output");
        goto done;
    }
    int64_t bs = a->batch < b ? a->batch : b;
    vit_run_opts o = {.batch = (int32_t)bs, .height = (int32_t)h, .width = (int32_t)w,
                      .keep_layers = kind == K_LAYERS ? n_layers : 0};
    if (vit_run_create(m, &o, &r) != 0)
        goto done;
    float *layer_buf = NULL;
    if (kind == K_LAYERS && !(layer_buf = malloc((size_t)(n_layers * bs * n * d) * sizeof(float)))) {
        lvd_fail("out of memory");
        goto done;
    }
    for (int64_t b0 = 0; b0 < b; b0 += bs) {
        int64_t nb = b - b0 < bs ? b - b0 : bs;
        if (nb != bs) { /* last, smaller batch: a run of its own shape */
            vit_run_free(r);
            o.batch = (int32_t)nb;
            if (vit_run_create(m, &o, &r) != 0)
                break;
        }
        if (vit_forward(m, r, x.data + b0 * 3 * h * w, NULL, 0.0f, 0) != 0)
            break;
        const float *cls = vit_out_cls(r), *reg = vit_out_reg(r), *patch = vit_out_patch(r);
        for (int64_t i = 0; i < nb; i++) {
            float *dst = out + (b0 + i) * per_image;
            if (kind == K_CLS)
                memcpy(dst, cls + i * d, (size_t)d * sizeof(float));
            else if (kind == K_PATCH)
                memcpy(dst, patch + i * n * d, (size_t)(n * d) * sizeof(float));
            else if (kind == K_ALL) {
                memcpy(dst, cls + i * d, (size_t)d * sizeof(float));
                if (c->n_reg)
                    memcpy(dst + d, reg + i * c->n_reg * d, (size_t)(c->n_reg * d) * sizeof(float));
                memcpy(dst + (1 + c->n_reg) * d, patch + i * n * d, (size_t)(n * d) * sizeof(float));
            }
        }
        if (kind == K_LAYERS) {
            if (vit_intermediate(m, r, n_layers, 1, layer_buf, NULL) != 0)
                break;
            /* (n_layers, nb, N, D) of this batch into (n_layers, B, N, D) */
            for (int32_t k = 0; k < n_layers; k++)
                memcpy(out + ((int64_t)k * b + b0) * n * d, layer_buf + (int64_t)k * nb * n * d,
                       (size_t)(nb * n * d) * sizeof(float));
        }
        if (b0 + nb == b)
            rc = 0;
    }
    free(layer_buf);
    if (rc != 0)
        goto done;
    int64_t shape[4];
    int32_t nd;
    if (kind == K_CLS) {
        nd = 2, shape[0] = b, shape[1] = d;
    } else if (kind == K_PATCH) {
        nd = 3, shape[0] = b, shape[1] = n, shape[2] = d;
    } else if (kind == K_ALL) {
        nd = 3, shape[0] = b, shape[1] = t, shape[2] = d;
    } else {
        nd = 4, shape[0] = n_layers, shape[1] = b, shape[2] = n, shape[3] = d;
    }
    rc = npy_write(a->output, out, nd, shape, NPY_F32);
done:
    free(out);
    npy_free(&x);
    vit_run_free(r);
    vit_free(m);
    return rc;
}

/* Deterministic pseudo-random inputs for bench (values in [-2, 2], like normalised pixels). */
static void fill_input(float *x, size_t n)
{
    uint32_t s = 12345u;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)((s >> 8) * (4.0 / 16777216.0) - 2.0);
    }
}

static int cmd_bench(const args *a)
{
    vit_config c;
    if (!a->arch)
        return lvd_fail("bench needs --arch");
    if (vit_preset(a->arch, &c) != 0)
        return -1;
    if (a->img % c.patch)
        return lvd_fail("--img %lld is not a multiple of the patch size %d", (long long)a->img, c.patch);
    c.pos_grid = (int32_t)(a->img / c.patch); /* as trained at this size: no positional resampling */
    vit_model *m;
    if (vit_create(&c, &m) != 0)
        return -1;
    vit_init_random(m, 0, 1e-5f);
    vit_run_opts o = {.batch = (int32_t)a->batch, .height = (int32_t)a->img, .width = (int32_t)a->img,
                      .train = a->train};
    vit_run *r = NULL;
    int rc = -1;
    size_t nx = (size_t)(a->batch * 3 * a->img * a->img);
    float *x = malloc(nx * sizeof(float)), *dx = NULL;
    float *dcls = NULL;
    if (!x || vit_run_create(m, &o, &r) != 0)
        goto done;
    fill_input(x, nx);
    if (a->train) {
        if (vit_alloc_grads(m) != 0)
            goto done;
        dx = malloc(nx * sizeof(float));
        dcls = malloc((size_t)(a->batch * c.dim) * sizeof(float));
        if (!dx || !dcls) {
            lvd_fail("out of memory");
            goto done;
        }
        fill_input(dcls, (size_t)(a->batch * c.dim));
    }
    double t_total = 0.0, c_total = 0.0;
    for (int64_t it = 0; it < a->warmup + a->iters; it++) {
        double t0 = now_s(), c0 = cpu_s();
        if (vit_forward(m, r, x, NULL, 0.0f, 0) != 0)
            goto done;
        if (a->train && vit_backward(m, r, dcls, NULL, vit_out_patch(r), dx) != 0)
            goto done;
        if (it >= a->warmup) {
            t_total += now_s() - t0;
            c_total += cpu_s() - c0;
        }
    }
    double imgs = (double)(a->batch * a->iters);
    double flops = vit_flops(&c, (int32_t)a->img, (int32_t)a->img) * (a->train ? 3.0 : 1.0) * imgs;
    printf("{\"arch\":\"%s\",\"img\":%lld,\"batch\":%lld,\"threads\":%lld,\"train\":%d,\"iters\":%lld,"
           "\"seconds\":%.6f,\"images_per_s\":%.3f,\"gflops\":%.3f,\"cpu_seconds\":%.6f,\"images_per_cpu_s\":%.4f,"
           "\"gflop_per_image\":%.4f,\"activation_mb\":%.1f}\n",
           a->arch, (long long)a->img, (long long)a->batch, (long long)omp_get_max_threads(), a->train, (long long)a->iters,
           t_total, imgs / t_total, flops / t_total / 1e9, c_total, imgs / c_total, flops / imgs / 1e9,
           (double)vit_run_bytes(r) / 1e6);
    rc = 0;
done:
    free(x);
    free(dx);
    free(dcls);
    vit_run_free(r);
    vit_free(m);
    return rc;
}

static int cmd_sgemm(const args *a)
{
    size_t nn = (size_t)(a->n * a->n);
    float *x = malloc(nn * sizeof(float)), *y = malloc(nn * sizeof(float)), *z = malloc(nn * sizeof(float));
    if (!x || !y || !z) {
        free(x), free(y), free(z);
        return lvd_fail("out of memory for three %lld x %lld matrices", (long long)a->n, (long long)a->n);
    }
    fill_input(x, nn);
    fill_input(y, nn);
    int n = (int)a->n;
    double best = 1e30, best_cpu = 1e30;
    for (int64_t it = 0; it < a->warmup + a->iters; it++) {
        double t0 = now_s(), c0 = cpu_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, x, n, y, n, 0.0f, z, n);
        double dt = now_s() - t0, dc = cpu_s() - c0;
        if (it >= a->warmup && dt < best)
            best = dt;
        if (it >= a->warmup && dc < best_cpu)
            best_cpu = dc;
    }
    double fl = 2.0 * n * (double)n * n;
    printf("{\"n\":%d,\"threads\":%d,\"best_seconds\":%.5f,\"gflops\":%.3f,\"best_cpu_seconds\":%.5f,"
           "\"gflop_per_cpu_s\":%.3f}\n",
           n, omp_get_max_threads(), best, fl / best / 1e9, best_cpu, fl / best_cpu / 1e9);
    free(x), free(y), free(z);
    return 0;
}

int main(int argc, char **argv)
{
    log_set_program("lvd-vit");
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("lvd-vit %s\n", LVD_VERSION);
        return EXIT_OK;
    }
    const char *cmd = argv[1];
    args a = {.n = 2048, .batch = 32, .img = 224, .iters = 5, .warmup = 1, .seed = 0, .threads = 0, .ls_init = 1.0};
    int init_img_set = 0;
    static const struct option longopts[] = {
        {"model", required_argument, NULL, O_MODEL},   {"input", required_argument, NULL, O_INPUT},
        {"output", required_argument, NULL, O_OUTPUT}, {"output-kind", required_argument, NULL, O_KIND},
        {"batch", required_argument, NULL, O_BATCH},   {"arch", required_argument, NULL, O_ARCH},
        {"img", required_argument, NULL, O_IMG},       {"train", no_argument, NULL, O_TRAIN},
        {"iters", required_argument, NULL, O_ITERS},   {"warmup", required_argument, NULL, O_WARMUP},
        {"out", required_argument, NULL, O_OUT},       {"seed", required_argument, NULL, O_SEED},
        {"ls-init", required_argument, NULL, O_LS},    {"threads", required_argument, NULL, O_THREADS},
        {"quiet", no_argument, NULL, O_QUIET},         {"verbose", no_argument, NULL, O_VERBOSE},
        {"help", no_argument, NULL, 'h'},              {"version", no_argument, NULL, O_VERSION},
        {"n", required_argument, NULL, O_N},           {NULL, 0, NULL, 0}};
    int c, bad = 0;
    optind = 2;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case O_MODEL: a.model = optarg; break;
        case O_INPUT: a.input = optarg; break;
        case O_OUTPUT: a.output = optarg; break;
        case O_KIND: a.kind = optarg; break;
        case O_ARCH: a.arch = optarg; break;
        case O_OUT: a.out = optarg; break;
        case O_TRAIN: a.train = 1; break;
        case O_N: rc = opt_int("--n", optarg, 16, 32768, &a.n); break;
        case O_BATCH: rc = opt_int("--batch", optarg, 1, 65536, &a.batch); break;
        case O_IMG: rc = opt_int("--img", optarg, 1, 65536, &a.img); init_img_set = 1; break;
        case O_ITERS: rc = opt_int("--iters", optarg, 1, 1000000, &a.iters); break;
        case O_WARMUP: rc = opt_int("--warmup", optarg, 0, 1000000, &a.warmup); break;
        case O_SEED: rc = opt_int("--seed", optarg, 0, INT64_MAX, &a.seed); break;
        case O_THREADS: rc = opt_int("--threads", optarg, 0, 4096, &a.threads); break;
        case O_LS: rc = opt_double("--ls-init", optarg, 0.0, 1e6, &a.ls_init); break;
        case O_QUIET: log_set_level(LOG_ERROR); break;
        case O_VERBOSE: log_set_level(LOG_DEBUG); break;
        case O_VERSION: printf("lvd-vit %s\n", LVD_VERSION); return EXIT_OK;
        case 'h': fputs(usage, stdout); return EXIT_OK;
        default: bad = 1;
        }
        if (rc != 0) {
            fprintf(stderr, "lvd-vit: %s\n", lvd_errmsg());
            return EXIT_USAGE;
        }
    }
    if (bad || optind != argc) {
        fprintf(stderr, "lvd-vit: %s\nTry 'lvd-vit --help'.\n", bad ? "bad option" : "unexpected argument");
        return EXIT_USAGE;
    }
    vit_set_threads((int32_t)a.threads);
    int rc;
    if (strcmp(cmd, "forward") == 0)
        rc = cmd_forward(&a);
    else if (strcmp(cmd, "bench") == 0)
        rc = cmd_bench(&a);
    else if (strcmp(cmd, "sgemm") == 0)
        rc = cmd_sgemm(&a);
    else if (strcmp(cmd, "info") == 0)
        rc = cmd_info(&a);
    else if (strcmp(cmd, "init") == 0) {
        if (!init_img_set)
            a.img = 0;
        rc = cmd_init(&a);
    } else {
        fprintf(stderr, "lvd-vit: unknown command '%s' (forward, bench, info, init, sgemm)\n", cmd);
        return EXIT_USAGE;
    }
    if (rc != 0) {
        log_error("%s", lvd_errmsg());
        return EXIT_FAIL;
    }
    return EXIT_OK;
}
