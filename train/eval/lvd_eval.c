/* lvd-eval — measures what a ViT learned. `lvd-eval knn`: DINOv2's weighted k-NN classification
 * (dinov2/eval/knn.py) of one labelled catalog collection by another.
 *
 * train/eval/:
 *   lvd_eval.c     options, the label mapping, the report
 *   features.[ch]  normalised CLS features of a collection (DINOv2's evaluation transform, the loader thread)
 *   knn_vote.[ch]  the k-NN vote: softmax(sim / T) weights over the max_k neighbours, top-1 / top-5
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

enum { OPT_MODEL = OPT_FIRST_STAGE_OPTION, OPT_TRAIN, OPT_TEST, OPT_K, OPT_TEMP, OPT_RESIZE, OPT_CROP, OPT_BATCH,
       OPT_THREADS, OPT_LOADERS, OPT_SAVE };

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

static int cmd_knn(int argc, char **argv)
{
    static const struct option longopts[] = {
        CLI_COMMON_OPTIONS,
        {"model", required_argument, NULL, OPT_MODEL},
        {"train", required_argument, NULL, OPT_TRAIN},
        {"test", required_argument, NULL, OPT_TEST},
        {"k", required_argument, NULL, OPT_K},
        {"temperature", required_argument, NULL, OPT_TEMP},
        {"resize", required_argument, NULL, OPT_RESIZE},
        {"crop", required_argument, NULL, OPT_CROP},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"threads", required_argument, NULL, OPT_THREADS},
        {"loaders", required_argument, NULL, OPT_LOADERS},
        {"save-features", required_argument, NULL, OPT_SAVE},
        {NULL, 0, NULL, 0},
    };
    const char *model = NULL, *work = NULL, *train = NULL, *test = NULL, *save = NULL;
    int json = 0, nk = 4;
    int32_t ks[KNN_VOTE_MAX_KS] = {10, 20, 100, 200};
    double temp = 0.07;
    int64_t resize = 256, crop = 224, batch = 32, threads = 0, loaders = 1;
    int c, bad = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_QUIET: log_set_level(LOG_WARN); break;
        case OPT_VERBOSE: log_set_level(LOG_DEBUG); break;
        case OPT_JSON: json = 1; break;
        case OPT_VERSION: printf("%s %s\n", PROG, LVD_VERSION); return EXIT_OK;
        case OPT_HELP: fputs(usage, stdout); return EXIT_OK;
        case OPT_WORK: work = optarg; break;
        case OPT_MODEL: model = optarg; break;
        case OPT_TRAIN: train = optarg; break;
        case OPT_TEST: test = optarg; break;
        case OPT_SAVE: save = optarg; break;
        case OPT_K: {
            nk = 0;
            char *dup = strdup(optarg), *save_p = NULL;
            for (char *t = dup ? strtok_r(dup, ",", &save_p) : NULL; t && !bad; t = strtok_r(NULL, ",", &save_p)) {
                int64_t v;
                if (nk == KNN_VOTE_MAX_KS) {
                    lvd_fail("--k: at most %d values", KNN_VOTE_MAX_KS);
                    bad = -1;
                } else if ((bad = opt_int("--k", t, 1, 100000, &v)) == 0)
                    ks[nk++] = (int32_t)v;
            }
            free(dup);
            if (!bad && nk == 0) {
                lvd_fail("--k: no value in '%s'", optarg);
                bad = -1;
            }
            break;
        }
        case OPT_TEMP: bad = opt_double("--temperature", optarg, 1e-6, 1e6, &temp); break;
        case OPT_RESIZE: bad = opt_int("--resize", optarg, 1, 8192, &resize); break;
        case OPT_CROP: bad = opt_int("--crop", optarg, 1, 8192, &crop); break;
        case OPT_BATCH: bad = opt_int("--batch", optarg, 1, 4096, &batch); break;
        case OPT_THREADS: bad = opt_int("--threads", optarg, 1, 1024, &threads); break;
        case OPT_LOADERS: bad = opt_int("--loaders", optarg, 1, EMBED_LOADER_MAX_THREADS, &loaders); break;
        default: fputs(usage, stderr); return EXIT_USAGE;
        }
        if (bad) {
            log_error("%s", lvd_errmsg());
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        log_error("unexpected argument '%s'", argv[optind]);
        return EXIT_USAGE;
    }
    if (!model || !work || !train || !test) {
        log_error("knn needs --model, --work, --train and --test");
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    if (crop > resize) {
        log_error("--crop %" PRId64 " is larger than --resize %" PRId64, crop, resize);
        return EXIT_USAGE;
    }

    int rc = EXIT_FAIL;
    catalog *cat = NULL;
    vit_model *m = NULL;
    eval_set tr = {0}, te = {0};
    const char **trl = NULL, **tel = NULL, **classes = NULL;
    int32_t *trlab = NULL, *telab = NULL;
    float *trx = NULL;
    int64_t ntr = 0, nte = 0, ncls = 0, unseen = 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/catalog.db", work);
    if (access(path, F_OK) != 0) {
        lvd_fail("%s: no catalog (is --work the work directory?)", path);
        goto out;
    }
    if (catalog_open(&cat, path, CATALOG_READONLY) != 0)
        goto out;
    vit_set_threads((int32_t)threads);
    if (vit_load(model, NULL, 0, &m) != 0)
        goto out;
    if (crop % (int64_t)m->cfg.patch != 0) {
        lvd_fail("--crop %" PRId64 " is not a multiple of the model's patch size %d", crop, (int)m->cfg.patch);
        goto out;
    }
    log_info("knn: model %s (dim %d, patch %d, depth %d)", model, (int)m->cfg.dim, (int)m->cfg.patch,
             (int)m->cfg.depth);
    eval_feat_opts fo = {(uint32_t)resize, (uint32_t)crop, (int32_t)batch, (int)loaders};
    double t0 = progress_now();
    if (eval_features(cat, work, train, m, &fo, &tr) != 0 || eval_features(cat, work, test, m, &fo, &te) != 0)
        goto out;
    double t_feat = progress_now() - t0;
    if (save && (atomic_file_mkdirs(save) != 0 || write_features(save, "train", &tr) != 0 ||
                 write_features(save, "test", &te) != 0))
        goto out;

    /* Classes: the train collection's distinct labels, in byte order. Unlabelled train rows do not vote;
     * unlabelled test rows are not scored; a test label that no train row has is scored as wrong. */
    trl = label_ptrs(&tr);
    tel = label_ptrs(&te);
    classes = malloc((size_t)(tr.n ? tr.n : 1) * sizeof *classes);
    trlab = malloc((size_t)(tr.n ? tr.n : 1) * sizeof *trlab);
    telab = malloc((size_t)(te.n ? te.n : 1) * sizeof *telab);
    trx = malloc((size_t)(tr.n ? tr.n : 1) * (size_t)tr.dim * sizeof *trx);
    if (!trl || !tel || !classes || !trlab || !telab || !trx) {
        lvd_fail("out of memory");
        goto out;
    }
    for (int64_t i = 0; i < tr.n; i++)
        if (trl[i][0])
            classes[ncls++] = trl[i];
    qsort(classes, (size_t)ncls, sizeof *classes, cmp_str);
    int64_t w = 0;
    for (int64_t i = 0; i < ncls; i++)
        if (w == 0 || strcmp(classes[i], classes[w - 1]) != 0)
            classes[w++] = classes[i];
    ncls = w;
    for (int64_t i = 0; i < tr.n; i++) {
        if (!trl[i][0])
            continue;
        const char **hit = bsearch(&trl[i], classes, (size_t)ncls, sizeof *classes, cmp_str);
        memcpy(trx + (size_t)ntr * (size_t)tr.dim, tr.x + (size_t)i * (size_t)tr.dim, (size_t)tr.dim * sizeof *trx);
        trlab[ntr++] = (int32_t)(hit - classes);
    }
    float *tex = te.x;
    for (int64_t i = 0; i < te.n; i++) {
        if (!tel[i][0])
            continue;
        const char **hit = ncls ? bsearch(&tel[i], classes, (size_t)ncls, sizeof *classes, cmp_str) : NULL;
        if (!hit)
            unseen++;
        /* compact the labelled test rows in place (rows only move down) */
        memmove(tex + (size_t)nte * (size_t)te.dim, te.x + (size_t)i * (size_t)te.dim, (size_t)te.dim * sizeof *tex);
        telab[nte++] = hit ? (int32_t)(hit - classes) : -1;
    }
    if (ntr == 0) {
        lvd_fail("collection '%s': no labelled image with a working image (%" PRId64 " members, %" PRId64
                 " undecoded, %" PRId64 " failed to load): import it with --label-from or --label-col",
                 train, tr.members, tr.undecoded, tr.failed);
        goto out;
    }
    if (nte == 0) {
        lvd_fail("collection '%s': no labelled image to classify (%" PRId64 " members, %" PRId64 " undecoded)", test,
                 te.members, te.undecoded);
        goto out;
    }
    knn_vote_result res[KNN_VOTE_MAX_KS];
    t0 = progress_now();
    if (knn_vote(trx, trlab, ntr, tex, telab, nte, tr.dim, (int32_t)ncls, ks, nk, (float)temp, (int)threads, res,
                 NULL) != 0)
        goto out;
    double t_vote = progress_now() - t0;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "eval", "knn");
        cJSON_AddStringToObject(o, "model", model);
        cJSON_AddNumberToObject(o, "dim", tr.dim);
        cJSON_AddItemToObject(o, "train", set_json(train, &tr, ntr));
        cJSON_AddItemToObject(o, "test", set_json(test, &te, nte));
        cJSON_AddNumberToObject(o, "classes", (double)ncls);
        cJSON_AddNumberToObject(o, "test_unseen_label", (double)unseen);
        cJSON_AddNumberToObject(o, "temperature", temp);
        cJSON *arr = cJSON_AddArrayToObject(o, "results");
        for (int q = 0; q < nk; q++) {
            cJSON *r = cJSON_CreateObject();
            cJSON_AddNumberToObject(r, "k", res[q].k);
            cJSON_AddNumberToObject(r, "top1", (double)res[q].top1 / (double)nte);
            cJSON_AddNumberToObject(r, "top5", (double)res[q].top5 / (double)nte);
            cJSON_AddNumberToObject(r, "top1_correct", (double)res[q].top1);
            cJSON_AddNumberToObject(r, "top5_correct", (double)res[q].top5);
            cJSON_AddItemToArray(arr, r);
        }
        cJSON_AddNumberToObject(o, "features_s", t_feat);
        cJSON_AddNumberToObject(o, "vote_s", t_vote);
        char *s = cJSON_PrintUnformatted(o);
        if (s)
            puts(s);
        free(s);
        cJSON_Delete(o);
    } else {
        printf("k-NN of '%s' (%" PRId64 " labelled images) by '%s' (%" PRId64 " labelled images, %" PRId64
               " classes), T %.3g\n",
               test, nte, train, ntr, ncls, temp);
        if (unseen)
            printf("%" PRId64 " test images have a label no train image has (counted as wrong)\n", unseen);
        if (ncls <= 5)
            printf("%" PRId64 " classes: top-5 is always right\n", ncls);
        printf("%8s %9s %9s\n", "k", "top-1 %", "top-5 %");
        for (int q = 0; q < nk; q++)
            printf("%8d %9.2f %9.2f\n", (int)res[q].k, 100.0 * (double)res[q].top1 / (double)nte,
                   100.0 * (double)res[q].top5 / (double)nte);
    }
    if (tr.failed || te.failed)
        log_warn("%" PRId64 " images failed to load and were left out (listed above)", tr.failed + te.failed);
    rc = EXIT_OK;
out:
    if (rc != EXIT_OK)
        log_error("%s", lvd_errmsg());
    free(trl);
    free(tel);
    free(classes);
    free(trlab);
    free(telab);
    free(trx);
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
        return ac < 2 ? EXIT_USAGE : EXIT_OK;
    }
    if (!strcmp(av[1], "--version")) {
        printf("%s %s\n", PROG, LVD_VERSION);
        return EXIT_OK;
    }
    if (!strcmp(av[1], "knn"))
        return cmd_knn(ac - 1, av + 1);
    log_error("unknown command '%s' (knn)", av[1]);
    return EXIT_USAGE;
}
