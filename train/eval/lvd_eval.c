/* lvd-eval — measures what a ViT learned. `lvd-eval knn`: DINOv2's weighted k-NN classification
 * (dinov2/eval/knn.py) of one labelled catalog collection by another; `lvd-eval linear`: linear classifiers on
 * frozen features (dinov2/eval/linear.py).
 *
 * train/eval/:
 *   lvd_eval.c     options, the label mapping, the report
 *   features.[ch]  normalised CLS features of a collection (DINOv2's evaluation transform, the loader thread)
 *   knn_vote.[ch]  the k-NN vote: softmax(sim / T) weights over the max_k neighbours, top-1 / top-5
 *   linear.[ch]    the grid of linear classifiers, full-batch SGD with momentum and a cosine schedule
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "atomic_file.h"
#include "catalog.h"
#include "cli.h"
#include "embed_loader.h"
#include "features.h"
#include "knn_vote.h"
#include "linear.h"
#include "npy.h"
#include "opts.h"
#include "progress.h"
#include "vit.h"
#include "vit_io.h"

#define PROG "lvd-eval"

static const char usage[] =
    "usage: lvd-eval knn --model CKPT --work W --train COLLECTION --test COLLECTION [options]\n"
    "\n"
    "k-NN classification as DINOv2 evaluates its features: the L2-normalised CLS token of every image of both\n"
    "collections (Resize 256 bicubic, CenterCrop 224, ImageNet normalisation), each test image's nearest\n"
    "train images by cosine, weights softmax(similarity / T) over the largest k, top-1 and top-5 accuracy\n"
    "per k. Labels are the collections' member labels (lvd-import --label-from / --label-col).\n"
    "\n"
    "  --model CKPT            ViT checkpoint (safetensors, official DINOv2 names; lvd-train's teacher)\n"
    "  --work W                the work directory whose catalog holds both collections (read only)\n"
    "  --train NAME            labelled collection the neighbours come from\n"
    "  --test NAME             labelled collection that is classified\n"
    "  --k LIST                neighbours, comma separated (10,20,100,200)\n"
    "  --temperature T         of the voting softmax (0.07)\n"
    "  --resize N  --crop N    evaluation transform (256, 224)\n"
    "  --batch N               images per forward pass (32)\n"
    "  --threads N             model and vote threads (all CPUs)   --loaders N  threads reading images (1)\n"
    "  --save-features DIR     also write DIR/{train,test}.npy (float32 rows) and DIR/{train,test}.tsv\n"
    "                          (key, label, image id per row)\n"
    "  --json  --quiet | --verbose  --version  --help\n";

static const char linear_usage[] =
    "usage: lvd-eval linear --model CKPT --work W --train COLLECTION --test COLLECTION [options]\n"
    "\n"
    "Linear evaluation as DINOv2's eval/linear.py: frozen features of both collections (the evaluation transform\n"
    "of knn; the CLS tokens of the last --blocks blocks after the final norm, with --avgpool also the mean patch\n"
    "token, concatenated, not normalised), a linear classifier per learning rate of --lr trained on the train\n"
    "collection less a held-out part (every --val-every-th image of each class), the one most right on the\n"
    "held-out part scored on the test collection (top-1). Training: full-batch SGD with momentum, cosine\n"
    "learning rate to 0, weights from 0 (train/eval/linear.h).\n"
    "\n"
    "  --model CKPT  --work W  --train NAME  --test NAME    as knn\n"
    "  --blocks N              CLS tokens of the last N blocks (1)   --avgpool  add the mean patch token\n"
    "  --lr LIST               learning rates, comma separated (0.001,0.003,0.01,0.03,0.1,0.3,1,3)\n"
    "  --steps N               full-batch steps (300)\n"
    "  --momentum M            (0.9)   --weight-decay WD  (0)\n"
    "  --val-every P           hold out every P-th train image of each class (10)\n"
    "  --resize N  --crop N  --batch N  --threads N  --loaders N    as knn\n"
    "  --save-features DIR     as knn, and DIR/linear_weight.npy (lr, class, feature) and linear_bias.npy\n"
    "  --json  --quiet | --verbose  --version  --help\n";

enum { OPT_MODEL = OPT_FIRST_STAGE_OPTION, OPT_TRAIN, OPT_TEST, OPT_K, OPT_TEMP, OPT_RESIZE, OPT_CROP, OPT_BATCH,
       OPT_THREADS, OPT_LOADERS, OPT_SAVE, OPT_BLOCKS, OPT_AVGPOOL, OPT_LR, OPT_STEPS, OPT_MOMENTUM, OPT_WD,
       OPT_VAL_EVERY };

/* Sorted unique non-empty labels of a set: the class names. */
static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Row pointers into the set's label buffer. */
static const char **label_ptrs(const eval_set *s)
{
    const char **p = malloc((size_t)(s->n ? s->n : 1) * sizeof *p);
    if (!p)
        return NULL;
    const char *at = s->labels;
    for (int64_t i = 0; i < s->n; i++) {
        p[i] = at;
        at += strlen(at) + 1;
    }
    return p;
}

static int write_features(const char *dir, const char *which, const eval_set *s)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.npy", dir, which);
    int64_t shape[2] = {s->n, s->dim};
    if (npy_write(path, s->x, 2, shape, NPY_F32) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/%s.tsv", dir, which);
    atomic_file af;
    if (atomic_file_open(&af, path) != 0)
        return -1;
    const char *k = s->keys, *l = s->labels;
    for (int64_t i = 0; i < s->n; i++) {
        char line[1200];
        int n = snprintf(line, sizeof line, "%s\t%s\t%" PRId64 "\n", k, l, s->image_id[i]);
        if (atomic_file_write(&af, line, (size_t)n) != 0)
            return -1;
        k += strlen(k) + 1;
        l += strlen(l) + 1;
    }
    return atomic_file_commit(&af);
}

static cJSON *set_json(const char *name, const eval_set *s, int64_t labelled)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "collection", name);
    cJSON_AddNumberToObject(o, "members", (double)s->members);
    cJSON_AddNumberToObject(o, "images", (double)s->n);
    cJSON_AddNumberToObject(o, "labelled", (double)labelled);
    cJSON_AddNumberToObject(o, "undecoded", (double)s->undecoded);
    cJSON_AddNumberToObject(o, "failed", (double)s->failed);
    return o;
}

/* What both commands take: the model, the collections, the transform and the threads. */
typedef struct eval_args {
    const char *model, *work, *train, *test, *save;
    int json;
    int64_t resize, crop, batch, threads, loaders;
} eval_args;

#define EVAL_COMMON_LONGOPTS                                                                                       \
    CLI_COMMON_OPTIONS, {"model", required_argument, NULL, OPT_MODEL}, {"train", required_argument, NULL, OPT_TRAIN}, \
        {"test", required_argument, NULL, OPT_TEST}, {"resize", required_argument, NULL, OPT_RESIZE},               \
        {"crop", required_argument, NULL, OPT_CROP}, {"batch", required_argument, NULL, OPT_BATCH},                 \
        {"threads", required_argument, NULL, OPT_THREADS}, {"loaders", required_argument, NULL, OPT_LOADERS},       \
        {"save-features", required_argument, NULL, OPT_SAVE}

/* One option of eval_args: 1 when c was one (*bad: 0 or -1 after a bad value), 2 for --version / --help
 * (printed: the command returns EXIT_OK), 0 when c is the command's own. */
static int common_opt(int c, const char *arg, const char *cmd_usage, eval_args *a, int *bad)
{
    *bad = 0;
    switch (c) {
    case OPT_QUIET: log_set_level(LOG_WARN); return 1;
    case OPT_VERBOSE: log_set_level(LOG_DEBUG); return 1;
    case OPT_JSON: a->json = 1; return 1;
    case OPT_VERSION: printf("%s %s\n", PROG, LVD_VERSION); return 2;
    case OPT_HELP: fputs(cmd_usage, stdout); return 2;
    case OPT_WORK: a->work = arg; return 1;
    case OPT_MODEL: a->model = arg; return 1;
    case OPT_TRAIN: a->train = arg; return 1;
    case OPT_TEST: a->test = arg; return 1;
    case OPT_SAVE: a->save = arg; return 1;
    case OPT_RESIZE: *bad = opt_int("--resize", arg, 1, 8192, &a->resize); return 1;
    case OPT_CROP: *bad = opt_int("--crop", arg, 1, 8192, &a->crop); return 1;
    case OPT_BATCH: *bad = opt_int("--batch", arg, 1, 4096, &a->batch); return 1;
    case OPT_THREADS: *bad = opt_int("--threads", arg, 1, 1024, &a->threads); return 1;
    case OPT_LOADERS: *bad = opt_int("--loaders", arg, 1, EMBED_LOADER_MAX_THREADS, &a->loaders); return 1;
    default: return 0;
    }
}

/* After the options: the required ones, the transform. 0 or EXIT_USAGE (reported). */
/* A comma-separated list of 1 to max numbers in [lo, hi] (integers if `integer`) into out, *n of them. 0, or -1
 * with the message naming the option and the value. */
static int opt_list(const char *name, const char *arg, int32_t max, int integer, double lo, double hi, double *out,
                    int32_t *n)
{
    *n = 0;
    char *dup = strdup(arg), *save_p = NULL;
    if (!dup)
        return lvd_fail("out of memory");
    int bad = 0;
    for (char *t = strtok_r(dup, ",", &save_p); t && !bad; t = strtok_r(NULL, ",", &save_p)) {
        int64_t v;
        if (*n == max)
            bad = lvd_fail("%s: at most %d values", name, max);
        else if (integer && (bad = opt_int(name, t, (int64_t)lo, (int64_t)hi, &v)) == 0)
            out[(*n)++] = (double)v;
        else if (!integer)
            bad = opt_double(name, t, lo, hi, &out[(*n)++]);
    }
    free(dup);
    if (!bad && *n == 0)
        bad = lvd_fail("%s: no value in '%s'", name, arg);
    return bad ? -1 : 0;
}

static int check_args(const eval_args *a, const char *cmd, const char *cmd_usage, int argc, char **argv)
{
    if (optind < argc) {
        log_error("unexpected argument '%s'", argv[optind]);
        return EXIT_USAGE;
    }
    if (!a->model || !a->work || !a->train || !a->test) {
        log_error("%s needs --model, --work, --train and --test", cmd);
        fputs(cmd_usage, stderr);
        return EXIT_USAGE;
    }
    if (a->crop > a->resize) {
        log_error("--crop %" PRId64 " is larger than --resize %" PRId64, a->crop, a->resize);
        return EXIT_USAGE;
    }
    return 0;
}

/* The labelled rows of both sets. Classes: the train collection's distinct labels, in byte order. Unlabelled
 * train rows are left out; unlabelled test rows are not scored; a test label that no train row has is scored as
 * wrong (label -1). The test rows are compacted in place in te->x. */
typedef struct labelled {
    const char **trl, **tel, **classes;
    int64_t ncls, ntr, nte, unseen;
    float *trx;     /* (ntr, dim) */
    int32_t *trlab; /* (ntr) */
    int32_t *telab; /* (nte); the rows are te->x's first nte */
} labelled;

static void labelled_free(labelled *L)
{
    free(L->trl);
    free(L->tel);
    free(L->classes);
    free(L->trlab);
    free(L->telab);
    free(L->trx);
    memset(L, 0, sizeof *L);
}

static int label_sets(eval_set *tr, eval_set *te, const char *train, const char *test, labelled *L)
{
    memset(L, 0, sizeof *L);
    L->trl = label_ptrs(tr);
    L->tel = label_ptrs(te);
    L->classes = malloc((size_t)(tr->n ? tr->n : 1) * sizeof *L->classes);
    L->trlab = malloc((size_t)(tr->n ? tr->n : 1) * sizeof *L->trlab);
    L->telab = malloc((size_t)(te->n ? te->n : 1) * sizeof *L->telab);
    L->trx = malloc((size_t)(tr->n ? tr->n : 1) * (size_t)tr->dim * sizeof *L->trx);
    if (!L->trl || !L->tel || !L->classes || !L->trlab || !L->telab || !L->trx)
        return lvd_fail("out of memory");
    for (int64_t i = 0; i < tr->n; i++)
        if (L->trl[i][0])
            L->classes[L->ncls++] = L->trl[i];
    qsort(L->classes, (size_t)L->ncls, sizeof *L->classes, cmp_str);
    int64_t w = 0;
    for (int64_t i = 0; i < L->ncls; i++)
        if (w == 0 || strcmp(L->classes[i], L->classes[w - 1]) != 0)
            L->classes[w++] = L->classes[i];
    L->ncls = w;
    const size_t D = (size_t)tr->dim;
    for (int64_t i = 0; i < tr->n; i++) {
        if (!L->trl[i][0])
            continue;
        const char **hit = bsearch(&L->trl[i], L->classes, (size_t)L->ncls, sizeof *L->classes, cmp_str);
        memcpy(L->trx + (size_t)L->ntr * D, tr->x + (size_t)i * D, D * sizeof *L->trx);
        L->trlab[L->ntr++] = (int32_t)(hit - L->classes);
    }
    for (int64_t i = 0; i < te->n; i++) {
        if (!L->tel[i][0])
            continue;
        const char **hit =
            L->ncls ? bsearch(&L->tel[i], L->classes, (size_t)L->ncls, sizeof *L->classes, cmp_str) : NULL;
        if (!hit)
            L->unseen++;
        /* compact the labelled test rows in place (rows only move down) */
        memmove(te->x + (size_t)L->nte * D, te->x + (size_t)i * D, D * sizeof *te->x);
        L->telab[L->nte++] = hit ? (int32_t)(hit - L->classes) : -1;
    }
    if (L->ntr == 0)
        return lvd_fail("collection '%s': no labelled image with a working image (%" PRId64 " members, %" PRId64
                        " undecoded, %" PRId64 " failed to load): import it with --label-from or --label-col",
                        train, tr->members, tr->undecoded, tr->failed);
    if (L->nte == 0)
        return lvd_fail("collection '%s': no labelled image to classify (%" PRId64 " members, %" PRId64
                        " undecoded)", test, te->members, te->undecoded);
    return 0;
}

/* Opens the catalog and the model and computes both sets' features (fo's kind). 0 or -1. */
static int load_sets(const eval_args *a, const char *cmd, eval_feat_opts *fo, catalog **cat, vit_model **m,
                     eval_set *tr, eval_set *te, double *secs)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/catalog.db", a->work);
    if (access(path, F_OK) != 0)
        return lvd_fail("%s: no catalog (is --work the work directory?)", path);
    if (catalog_open(cat, path, CATALOG_READONLY) != 0)
        return -1;
    vit_set_threads((int32_t)a->threads);
    if (vit_load(a->model, NULL, 0, m) != 0)
        return -1;
    if (a->crop % (int64_t)(*m)->cfg.patch != 0)
        return lvd_fail("--crop %" PRId64 " is not a multiple of the model's patch size %d", a->crop,
                        (int)(*m)->cfg.patch);
    log_info("%s: model %s (dim %d, patch %d, depth %d)", cmd, a->model, (int)(*m)->cfg.dim, (int)(*m)->cfg.patch,
             (int)(*m)->cfg.depth);
    fo->resize = (uint32_t)a->resize;
    fo->crop = (uint32_t)a->crop;
    fo->batch = (int32_t)a->batch;
    fo->loaders = (int)a->loaders;
    double t0 = progress_now();
    if (eval_features(*cat, a->work, a->train, *m, fo, tr) != 0 ||
        eval_features(*cat, a->work, a->test, *m, fo, te) != 0)
        return -1;
    *secs = progress_now() - t0;
    if (a->save && (atomic_file_mkdirs(a->save) != 0 || write_features(a->save, "train", tr) != 0 ||
                    write_features(a->save, "test", te) != 0))
        return -1;
    return 0;
}

static cJSON *report_head(const char *kind, const eval_args *a, const eval_set *tr, const eval_set *te,
                          const labelled *L)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "eval", kind);
    cJSON_AddStringToObject(o, "model", a->model);
    cJSON_AddNumberToObject(o, "dim", tr->dim);
    cJSON_AddItemToObject(o, "train", set_json(a->train, tr, L->ntr));
    cJSON_AddItemToObject(o, "test", set_json(a->test, te, L->nte));
    cJSON_AddNumberToObject(o, "classes", (double)L->ncls);
    cJSON_AddNumberToObject(o, "test_unseen_label", (double)L->unseen);
    return o;
}

static void print_json(cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    if (s)
        puts(s);
    free(s);
    cJSON_Delete(o);
}

static int cmd_knn(int argc, char **argv)
{
    static const struct option longopts[] = {
        EVAL_COMMON_LONGOPTS,
        {"k", required_argument, NULL, OPT_K},
        {"temperature", required_argument, NULL, OPT_TEMP},
        {NULL, 0, NULL, 0},
    };
    eval_args a = {.resize = 256, .crop = 224, .batch = 32, .loaders = 1};
    int32_t nk = 4;
    int32_t ks[KNN_VOTE_MAX_KS] = {10, 20, 100, 200};
    double temp = 0.07;
    int c, bad = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int h = common_opt(c, optarg, usage, &a, &bad);
        if (h == 2)
            return EXIT_OK;
        if (h == 0) {
            switch (c) {
            case OPT_K: {
                double v[KNN_VOTE_MAX_KS];
                bad = opt_list("--k", optarg, KNN_VOTE_MAX_KS, 1, 1, 100000, v, &nk);
                for (int32_t i = 0; !bad && i < nk; i++)
                    ks[i] = (int32_t)v[i];
                break;
            }
            case OPT_TEMP: bad = opt_double("--temperature", optarg, 1e-6, 1e6, &temp); break;
            default: fputs(usage, stderr); return EXIT_USAGE;
            }
        }
        if (bad) {
            log_error("%s", lvd_errmsg());
            return EXIT_USAGE;
        }
    }
    int u = check_args(&a, "knn", usage, argc, argv);
    if (u)
        return u;

    int rc = EXIT_FAIL;
    catalog *cat = NULL;
    vit_model *m = NULL;
    eval_set tr = {0}, te = {0};
    labelled L = {0};
    eval_feat_opts fo = {0};
    double t_feat = 0;
    if (load_sets(&a, "knn", &fo, &cat, &m, &tr, &te, &t_feat) != 0 || label_sets(&tr, &te, a.train, a.test, &L) != 0)
        goto out;
    knn_vote_result res[KNN_VOTE_MAX_KS];
    double t0 = progress_now();
    if (knn_vote(L.trx, L.trlab, L.ntr, te.x, L.telab, L.nte, tr.dim, (int32_t)L.ncls, ks, nk, (float)temp,
                 (int)a.threads, res, NULL) != 0)
        goto out;
    double t_vote = progress_now() - t0;
    if (a.json) {
        cJSON *o = report_head("knn", &a, &tr, &te, &L);
        cJSON_AddNumberToObject(o, "temperature", temp);
        cJSON *arr = cJSON_AddArrayToObject(o, "results");
        for (int q = 0; q < nk; q++) {
            cJSON *r = cJSON_CreateObject();
            cJSON_AddNumberToObject(r, "k", res[q].k);
            cJSON_AddNumberToObject(r, "top1", (double)res[q].top1 / (double)L.nte);
            cJSON_AddNumberToObject(r, "top5", (double)res[q].top5 / (double)L.nte);
            cJSON_AddNumberToObject(r, "top1_correct", (double)res[q].top1);
            cJSON_AddNumberToObject(r, "top5_correct", (double)res[q].top5);
            cJSON_AddItemToArray(arr, r);
        }
        cJSON_AddNumberToObject(o, "features_s", t_feat);
        cJSON_AddNumberToObject(o, "vote_s", t_vote);
        print_json(o);
    } else {
        printf("k-NN of '%s' (%" PRId64 " labelled images) by '%s' (%" PRId64 " labelled images, %" PRId64
               " classes), T %.3g\n",
               a.test, L.nte, a.train, L.ntr, L.ncls, temp);
        if (L.unseen)
            printf("%" PRId64 " test images have a label no train image has (counted as wrong)\n", L.unseen);
        if (L.ncls <= 5)
            printf("%" PRId64 " classes: top-5 is always right\n", L.ncls);
        printf("%8s %9s %9s\n", "k", "top-1 %", "top-5 %");
        for (int q = 0; q < nk; q++)
            printf("%8d %9.2f %9.2f\n", (int)res[q].k, 100.0 * (double)res[q].top1 / (double)L.nte,
                   100.0 * (double)res[q].top5 / (double)L.nte);
    }
    if (tr.failed || te.failed)
        log_warn("%" PRId64 " images failed to load and were left out (listed above)", tr.failed + te.failed);
    rc = EXIT_OK;
out:
    if (rc != EXIT_OK)
        log_error("%s", lvd_errmsg());
    labelled_free(&L);
    eval_set_free(&tr);
    eval_set_free(&te);
    vit_free(m);
    catalog_close(cat);
    return rc;
}

/* Writes the stacked classifiers as DIR/linear_weight.npy (Q, C, F) and DIR/linear_bias.npy (Q, C). */
static int write_classifiers(const char *dir, const float *W, const float *b, int32_t Q, int32_t C, int32_t F)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/linear_weight.npy", dir);
    int64_t sw[3] = {Q, C, F}, sb[2] = {Q, C};
    if (npy_write(path, W, 3, sw, NPY_F32) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/linear_bias.npy", dir);
    return npy_write(path, b, 2, sb, NPY_F32);
}

static int cmd_linear(int argc, char **argv)
{
    static const struct option longopts[] = {
        EVAL_COMMON_LONGOPTS,
        {"blocks", required_argument, NULL, OPT_BLOCKS},
        {"avgpool", no_argument, NULL, OPT_AVGPOOL},
        {"lr", required_argument, NULL, OPT_LR},
        {"steps", required_argument, NULL, OPT_STEPS},
        {"momentum", required_argument, NULL, OPT_MOMENTUM},
        {"weight-decay", required_argument, NULL, OPT_WD},
        {"val-every", required_argument, NULL, OPT_VAL_EVERY},
        {NULL, 0, NULL, 0},
    };
    eval_args a = {.resize = 256, .crop = 224, .batch = 32, .loaders = 1};
    int64_t blocks = 1, steps = 300, val_every = 10;
    int avgpool = 0;
    linear_opts lo = {.lr = {0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0}, .n_lr = 8, .momentum = 0.9};
    int c, bad = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int h = common_opt(c, optarg, linear_usage, &a, &bad);
        if (h == 2)
            return EXIT_OK;
        if (h == 0) {
            switch (c) {
            case OPT_BLOCKS: bad = opt_int("--blocks", optarg, 1, 64, &blocks); break;
            case OPT_AVGPOOL: avgpool = 1; break;
            case OPT_STEPS: bad = opt_int("--steps", optarg, 1, 1000000, &steps); break;
            case OPT_VAL_EVERY: bad = opt_int("--val-every", optarg, 2, 1000000, &val_every); break;
            case OPT_MOMENTUM: bad = opt_double("--momentum", optarg, 0, 0.999999, &lo.momentum); break;
            case OPT_WD: bad = opt_double("--weight-decay", optarg, 0, 1e6, &lo.weight_decay); break;
            case OPT_LR: bad = opt_list("--lr", optarg, LINEAR_MAX_LRS, 0, 1e-12, 1e6, lo.lr, &lo.n_lr); break;
            default: fputs(linear_usage, stderr); return EXIT_USAGE;
            }
        }
        if (bad) {
            log_error("%s", lvd_errmsg());
            return EXIT_USAGE;
        }
    }
    int u = check_args(&a, "linear", linear_usage, argc, argv);
    if (u)
        return u;
    lo.steps = (int32_t)steps;
    lo.threads = (int32_t)a.threads;

    int rc = EXIT_FAIL;
    catalog *cat = NULL;
    vit_model *m = NULL;
    eval_set tr = {0}, te = {0};
    labelled L = {0};
    eval_feat_opts fo = {.n_blocks = (int32_t)blocks, .avgpool = avgpool};
    float *fx = NULL, *vx = NULL, *W = NULL, *b = NULL;
    int32_t *fy = NULL, *vy = NULL;
    int64_t *seen = NULL, nf = 0, nv = 0;
    double t_feat = 0;
    if (load_sets(&a, "linear", &fo, &cat, &m, &tr, &te, &t_feat) != 0 ||
        label_sets(&tr, &te, a.train, a.test, &L) != 0)
        goto out;
    if (L.ncls < 2) {
        lvd_fail("collection '%s': %" PRId64 " class; a linear classifier needs 2 or more", a.train, L.ncls);
        goto out;
    }
    /* The held-out split: of each class's train rows in key order, every val_every-th (the val_every-th,
     * 2 val_every-th, ...) is held out for choosing the learning rate. */
    const int32_t F = tr.dim, C = (int32_t)L.ncls, Q = lo.n_lr;
    fx = malloc((size_t)L.ntr * F * sizeof *fx);
    vx = malloc((size_t)L.ntr * F * sizeof *vx);
    fy = malloc((size_t)L.ntr * sizeof *fy);
    vy = malloc((size_t)L.ntr * sizeof *vy);
    seen = calloc((size_t)C, sizeof *seen);
    W = malloc((size_t)Q * C * F * sizeof *W);
    b = malloc((size_t)Q * C * sizeof *b);
    if (!fx || !vx || !fy || !vy || !seen || !W || !b) {
        lvd_fail("out of memory for %" PRId64 " features of %d floats", L.ntr, (int)F);
        goto out;
    }
    for (int64_t i = 0; i < L.ntr; i++) {
        int held = ++seen[L.trlab[i]] % val_every == 0;
        float *dst = held ? vx + (size_t)nv * F : fx + (size_t)nf * F;
        memcpy(dst, L.trx + (size_t)i * F, (size_t)F * sizeof *dst);
        if (held)
            vy[nv++] = L.trlab[i];
        else
            fy[nf++] = L.trlab[i];
    }
    if (nv == 0) {
        lvd_fail("collection '%s': no class has %" PRId64 " labelled images, so nothing is held out to choose the "
                 "learning rate (lower --val-every)", a.train, val_every);
        goto out;
    }
    log_info("linear: %" PRId64 " train rows (%" PRId64 " held out), %d features, %d classes, %d learning rates, %d "
             "steps", nf, nv, (int)F, (int)C, (int)Q, (int)lo.steps);
    linear_fit_stats fs;
    double t0 = progress_now();
    if (linear_fit(fx, fy, nf, F, C, &lo, W, b, &fs) != 0)
        goto out;
    double t_fit = progress_now() - t0;
    int64_t vcor[LINEAR_MAX_LRS], tcor[LINEAR_MAX_LRS];
    if (linear_correct(vx, vy, nv, F, C, Q, W, b, vcor) != 0 ||
        linear_correct(te.x, L.telab, L.nte, F, C, Q, W, b, tcor) != 0)
        goto out;
    int32_t best = -1; /* the most right on the held-out rows; ties: the first of the grid */
    for (int32_t q = 0; q < Q; q++)
        if (!fs.diverged[q] && (best < 0 || vcor[q] > vcor[best]))
            best = q;
    if (best < 0) {
        lvd_fail("every learning rate of --lr diverged (the smallest was %g): give smaller ones", lo.lr[0]);
        goto out;
    }
    if (a.save && write_classifiers(a.save, W, b, Q, C, F) != 0)
        goto out;
    if (a.json) {
        cJSON *o = report_head("linear", &a, &tr, &te, &L);
        cJSON_AddNumberToObject(o, "blocks", (double)blocks);
        cJSON_AddBoolToObject(o, "avgpool", avgpool);
        cJSON_AddNumberToObject(o, "fit_rows", (double)nf);
        cJSON_AddNumberToObject(o, "val_rows", (double)nv);
        cJSON_AddNumberToObject(o, "val_every", (double)val_every);
        cJSON_AddNumberToObject(o, "steps", lo.steps);
        cJSON_AddNumberToObject(o, "momentum", lo.momentum);
        cJSON_AddNumberToObject(o, "weight_decay", lo.weight_decay);
        cJSON *arr = cJSON_AddArrayToObject(o, "grid");
        for (int32_t q = 0; q < Q; q++) {
            cJSON *r = cJSON_CreateObject();
            cJSON_AddNumberToObject(r, "lr", lo.lr[q]);
            cJSON_AddBoolToObject(r, "diverged", fs.diverged[q]);
            if (!fs.diverged[q])
                cJSON_AddNumberToObject(r, "train_loss", fs.loss[q]);
            cJSON_AddNumberToObject(r, "val_correct", (double)vcor[q]);
            cJSON_AddNumberToObject(r, "val_top1", (double)vcor[q] / (double)nv);
            cJSON_AddNumberToObject(r, "test_correct", (double)tcor[q]);
            cJSON_AddItemToArray(arr, r);
        }
        cJSON_AddNumberToObject(o, "best_lr", lo.lr[best]);
        cJSON_AddNumberToObject(o, "top1", (double)tcor[best] / (double)L.nte);
        cJSON_AddNumberToObject(o, "top1_correct", (double)tcor[best]);
        cJSON_AddNumberToObject(o, "features_s", t_feat);
        cJSON_AddNumberToObject(o, "fit_s", t_fit);
        print_json(o);
    } else {
        printf("linear classifiers on '%s' (%" PRId64 " labelled images, %" PRId64 " held out, %" PRId64
               " classes), %d features (%d block%s%s), %d steps\n",
               a.train, L.ntr, nv, L.ncls, (int)F, (int)blocks, blocks > 1 ? "s" : "", avgpool ? " + avgpool" : "",
               (int)lo.steps);
        printf("%10s %10s %9s %9s\n", "lr", "loss", "val %", "test %");
        for (int32_t q = 0; q < Q; q++) {
            if (fs.diverged[q])
                printf("%10.4g %10s %9s %9s\n", lo.lr[q], "diverged", "-", "-");
            else
                printf("%10.4g %10.4f %9.2f %9.2f%s\n", lo.lr[q], fs.loss[q], 100.0 * (double)vcor[q] / (double)nv,
                       100.0 * (double)tcor[q] / (double)L.nte, q == best ? "  <- best on the held-out rows" : "");
        }
        printf("top-1 on '%s' (%" PRId64 " labelled images): %.2f %%\n", a.test, L.nte,
               100.0 * (double)tcor[best] / (double)L.nte);
        if (L.unseen)
            printf("%" PRId64 " test images have a label no train image has (counted as wrong)\n", L.unseen);
    }
    if (tr.failed || te.failed)
        log_warn("%" PRId64 " images failed to load and were left out (listed above)", tr.failed + te.failed);
    rc = EXIT_OK;
out:
    if (rc != EXIT_OK)
        log_error("%s", lvd_errmsg());
    free(fx);
    free(vx);
    free(fy);
    free(vy);
    free(seen);
    free(W);
    free(b);
    labelled_free(&L);
    eval_set_free(&tr);
    eval_set_free(&te);
    vit_free(m);
    catalog_close(cat);
    return rc;
}

int main(int argc, char **argv)
{
    int ac;
    char **av;
    cli_begin(PROG, argc, argv, &ac, &av);
    if (ac < 2 || !strcmp(av[1], "--help") || !strcmp(av[1], "-h")) {
        fputs(usage, ac < 2 ? stderr : stdout);
        fputs("\n", ac < 2 ? stderr : stdout);
        fputs(linear_usage, ac < 2 ? stderr : stdout);
        return ac < 2 ? EXIT_USAGE : EXIT_OK;
    }
    if (!strcmp(av[1], "--version")) {
        printf("%s %s\n", PROG, LVD_VERSION);
        return EXIT_OK;
    }
    if (!strcmp(av[1], "knn"))
        return cmd_knn(ac - 1, av + 1);
    if (!strcmp(av[1], "linear"))
        return cmd_linear(ac - 1, av + 1);
    log_error("unknown command '%s' (knn, linear)", av[1]);
    return EXIT_USAGE;
}
