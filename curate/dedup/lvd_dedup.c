/* lvd-dedup — removes near-duplicates inside the pool and pool images that are near-duplicates of benchmark
 * images, with the embeddings of one model, and records every decision with its evidence (catalog-003.sql).
 *
 * Two phases, over the run state of run.h (the model, benchmarks and pool loaded by pool.h):
 *   search  (search.h) every pool image without a decision (and not searched yet with these parameters)
 *           queries a k-NN index of the pool and one per benchmark collection; the pairs above the thresholds
 *           are stored one transaction per batch, so a killed run resumes where it stopped. A partitioned run
 *           (--part I/N) searches its share of the images (by SHA-256) into its part file.
 *   decide  (decide.h; one-part runs, and --merge after folding the parts) components over the stored
 *           edges, plus pHash pairs when asked; components that hold a newly searched image get their rows
 *           (re)written in one transaction.
 * Parameters are fingerprinted (dedup_pool_make_params): existing rows of the model made with others are an
 * error unless --force, which drops them first.
 *
 * curate/dedup/ (k-NN search itself is common/knn.h, shared with the benchmarks and later lvd-retrieve):
 *   lvd_dedup.c   options and the two phases
 *   run.[ch]      the run state the modules share
 *   pool.[ch]     the model, benchmarks, pool and parameters, read from the catalog
 *   search.[ch]   the search phase: k-NN edges, benchmark matches, nearest neighbours, batch commits
 *   decide.[ch]   the decide phase: components and decisions written back, the summary
 *   graph.[ch]    components, weakest links, kept images, benchmark removals, pHash pairs (pure, no I/O)
 *   unionfind.[ch] disjoint sets
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "catalog.h"
#include "cli.h"
#include "decide.h"
#include "graph.h"
#include "pool.h"
#include "run.h"
#include "search.h"
#include "opts.h"
#include "stage.h"

#define PROG "lvd-dedup"

static const char usage[] =
    "Usage: lvd-dedup --work DIR --model NAME [options]\n"
    "       lvd-dedup --work DIR --model NAME [same options] --merge\n"
    "Near-duplicate removal in the pool (collections with role pool) with the embeddings of model NAME\n"
    "(lvd-embed --name), and removal of pool images that are near-duplicates of benchmark images (collections\n"
    "with role benchmark). Every decision is recorded in the catalog (dedup_decisions, dedup_components,\n"
    "dedup_edges, dedup_benchmark_matches, dedup_runs), with each pool image's nearest neighbour in the pool\n"
    "and in each benchmark whatever its similarity (dedup_nearest); lvd-audit shows them.\n\n"
    "  --model NAME              the embedding model (required)\n"
    "  --k N                     nearest neighbours searched per pool image, in the pool and in each\n"
    "                            benchmark (64)\n"
    "  --threshold T             pool images with cosine > T are joined (0.6)\n"
    "  --benchmark-threshold T   a pool image with cosine > T to a benchmark image is removed (0.45)\n"
    "  --benchmark-rule RULE     component: the pool image's whole component goes (DINOv2's rule);\n"
    "                            image: only the matching pool image (component)\n"
    "  --keep-rule RULE          the image a component keeps: pixels = largest original width*height, then\n"
    "                            lowest image id; bytes = largest original file, then lowest id; id = lowest\n"
    "                            image id (pixels)\n"
    "  --phash-distance D        also join images whose pHashes differ by at most D bits (0..10; off by\n"
    "                            default; 0 joins identical pHashes). Identical bytes are one image anyway.\n"
    "  --batch N                 queries per search call and committed transaction (65536): the IVF lists\n"
    "                            are scanned once per batch for all its queries, so larger is faster; a\n"
    "                            killed run redoes at most one batch\n"
    "  --exact-max N             exact (flat) search up to N pool vectors, IVF beyond (200000)\n"
    "  --factory STR             FAISS index_factory string for the approximate index (e.g. IVF4096,PQ32)\n"
    "  --nprobe N                IVF lists searched (automatic)\n"
    "  --force                   drop the model's dedup rows and recompute everything (needed to change\n"
    "                            k, thresholds or rules once decisions exist, or after benchmarks change)\n"
    "  --part I/N | --merge      partitioned search: each part (I in 0..N-1) searches its share of the new\n"
    "                            images into WORK/parts/dedup-I-of-N.db; --merge (with the same options)\n"
    "                            folds the parts and computes the components once\n"
    CLI_STAGE_HELP
    "  --config FILE.yaml  --json  --quiet | --verbose  --version  --help\n"
    "Incremental: a rerun searches only pool images without a decision and merges them into the existing\n"
    "components (a component that gains an image re-chooses its kept image); nothing new does nothing.\n";

enum {
    OPT_MODEL = OPT_FIRST_STAGE_OPTION, OPT_K, OPT_THRESHOLD, OPT_BTHRESHOLD, OPT_BRULE, OPT_KEEP, OPT_PHASH,
    OPT_BATCH, OPT_EXACT_MAX, OPT_FACTORY, OPT_NPROBE
};

/* Opens catalog.db (read-write unless ro; wait: CATALOG_WAIT or 0), reads the model and benchmarks, and sets
 * the fingerprint. */
static int prepare(dedup_ctx *x, int ro, int wait)
{
    char path[STAGE_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/catalog.db", x->work);
    FILE *f = fopen(path, "rb");
    if (!f)
        return lvd_fail("%s: no catalog (import, decode and embed a pool first)", path);
    fclose(f);
    catalog *c = NULL;
    if (catalog_open(&c, path, ro ? CATALOG_READONLY : wait) != 0)
        return -1;
    char digest[65];
    int rc = -1;
    if (dedup_pool_load_model(x, c) == 0) {
        vf_init(&x->vf, x->dim);
        if (dedup_pool_load_benchmarks(x, c, digest) == 0) {
            dedup_pool_make_params(x, digest);
            rc = 0;
            if (!x->force && dedup_pool_check_fingerprint(x, c) != 0)
                rc = -1;
            else if (x->force && !ro && dedup_pool_drop_model_rows(x, c) != 0)
                rc = -1;
        }
    }
    catalog_close(c);
    return rc;
}

int main(int argc, char **argv)
{
    int ac;
    char **av;
    cli_begin(PROG, argc, argv, &ac, &av);
    static const struct option longopts[] = {
        CLI_COMMON_OPTIONS,
        CLI_STAGE_OPTIONS,
        {"model", required_argument, NULL, OPT_MODEL},
        {"k", required_argument, NULL, OPT_K},
        {"threshold", required_argument, NULL, OPT_THRESHOLD},
        {"benchmark-threshold", required_argument, NULL, OPT_BTHRESHOLD},
        {"benchmark-rule", required_argument, NULL, OPT_BRULE},
        {"keep-rule", required_argument, NULL, OPT_KEEP},
        {"phash-distance", required_argument, NULL, OPT_PHASH},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"exact-max", required_argument, NULL, OPT_EXACT_MAX},
        {"factory", required_argument, NULL, OPT_FACTORY},
        {"nprobe", required_argument, NULL, OPT_NPROBE},
        {NULL, 0, NULL, 0},
    };
    dedup_ctx *x = calloc(1, sizeof *x);
    dedup_bench *benches = calloc(DEDUP_MAX_BENCH, sizeof *benches);
    if (!x || !benches) {
        log_error("out of memory");
        return EXIT_FAIL;
    }
    x->b = benches;
    x->p = (dedup_params){.k = 64, .threshold = 0.6, .bthreshold = 0.45, .brule = 0, .keep = DEDUP_KEEP_PIXELS,
                          .phash = -1, .batch = 65536, .exact_max = 200000};
    cli_stage_args sa = {0}; /* --retry-failed is moot: nothing fails transiently here */
    int opt;
    optind = 1;
    while ((opt = getopt_long(ac, av, "h", longopts, NULL)) != -1) {
        if (cli_common(opt, PROG, usage, &x->work, &x->json) || cli_stage_option(opt, &sa))
            continue;
        int bad = 0;
        int64_t iv;
        switch (opt) {
        case OPT_MODEL: x->p.model = optarg; break;
        case OPT_K: bad = opt_int("--k", optarg, 1, 4096, &iv); x->p.k = (int32_t)iv; break;
        case OPT_THRESHOLD: bad = opt_double("--threshold", optarg, -1.0, 1.0, &x->p.threshold); break;
        case OPT_BTHRESHOLD: bad = opt_double("--benchmark-threshold", optarg, -1.0, 1.0, &x->p.bthreshold); break;
        case OPT_BRULE: bad = opt_choice("--benchmark-rule", optarg, dedup_brule_names, &x->p.brule); break;
        case OPT_KEEP: bad = opt_choice("--keep-rule", optarg, dedup_keep_names, &x->p.keep); break;
        case OPT_PHASH: bad = opt_int("--phash-distance", optarg, 0, DG_PHASH_MAX_DIST, &iv); x->p.phash = (int32_t)iv; break;
        case OPT_BATCH: bad = opt_int("--batch", optarg, 1, 1 << 20, &iv); x->p.batch = iv; break;
        case OPT_EXACT_MAX: bad = opt_int("--exact-max", optarg, 1, INT64_MAX, &iv); x->p.exact_max = iv; break;
        case OPT_FACTORY: x->p.factory = optarg; break;
        case OPT_NPROBE: bad = opt_int("--nprobe", optarg, 1, 1 << 20, &iv); x->p.nprobe = (int32_t)iv; break;
        default: cli_usage_error(PROG, "unknown option");
        }
        if (bad)
            cli_usage_error(PROG, lvd_errmsg());
    }
    const char *part_arg = sa.part;
    x->merge = sa.merge;
    x->force = sa.force;
    if (!x->work)
        cli_usage_error(PROG, "--work DIR is required");
    if (!x->p.model)
        cli_usage_error(PROG, "--model NAME is required (the lvd-embed --name of the embeddings to use)");
    if (optind < ac)
        cli_usage_error(PROG, "unexpected argument");
    if (x->merge && part_arg)
        cli_usage_error(PROG, "--merge folds the parts: no --part");
    lvd_part pp;
    if (!x->merge && part_resolve(part_arg, &pp) != 0)
        cli_usage_error(PROG, lvd_errmsg());
    int parted = !x->merge && pp.count > 1;

    int rc = EXIT_FAIL, stage_opened = 0, decided_here = 0;
    cJSON *sum = NULL;
    int flags = cli_stage_flags(&sa);
    if (prepare(x, parted, flags & STAGE_WAIT) != 0)
        goto out;
    if (x->merge) {
        stage_merge_result mr;
        int mrc = stage_merge("dedup", x->work, flags, &mr);
        stage_merge_result_free(&mr);
        if (mrc != 0)
            goto out;
        log_info("merged %d part file%s", mr.merged, mr.merged == 1 ? "" : "s");
    }
    if (stage_open(&x->st, "dedup", x->work, x->merge ? "0/1" : part_arg, x->ptext, x->fp, flags) != 0)
        goto out;
    stage_opened = 1;
    /* A larger page cache than SQLite's 2 MB default: edge inserts and the decisions of a million-image pool
     * touch hundreds of MB of B-tree pages (allocated only as used). A second sorter thread for the ORDER BY
     * that moves the staged edges (3.7 -> 3.1 s for 1.3M edges). */
    if (catalog_exec(x->st.cat, "PRAGMA cache_size = -262144; PRAGMA threads = 2") != 0)
        goto out;
    catalog *src = parted ? x->st.main_ro : x->st.cat;
    if (!src) {
        lvd_fail("%s/catalog.db: no catalog", x->work);
        goto out;
    }
    if (x->merge && !x->force && dedup_pool_check_fingerprint(x, x->st.cat) != 0)
        goto out; /* parts searched with other options than this merge's */
    if (parted) {
        /* A part's own earlier searches with other parameters: dropped with --force, else an error. */
        if (x->force ? dedup_pool_drop_model_rows(x, x->st.cat) != 0 : dedup_pool_check_fingerprint(x, x->st.cat) != 0)
            goto out;
    }
    if (dedup_pool_load(x, src, !(parted && x->force)) != 0)
        goto out;
    int64_t nq = 0;
    if (!x->merge) {
        if (dedup_pool_select_queries(x, parted, &nq) != 0)
            goto out;
        log_info("model '%s': %" PRId64 " pool images with embeddings, %" PRId64 " to search%s%s", x->p.model,
                 x->pool.n, nq, parted ? " in part " : "", parted ? x->st.part_text : "");
        if (nq > 0 && dedup_search(x, nq) != 0)
            goto out;
    }
    /* Edges staged by a run killed after its last search batch (or by a part, after --merge). */
    if (dedup_search_fold(x, x->st.cat) != 0)
        goto out;
    if (!parted) {
        if (dedup_decide(x, x->st.cat) != 0)
            goto out;
        decided_here = 1;
    }
    sum = dedup_decide_summary(x, x->st.cat, decided_here);
    rc = EXIT_OK;
out:
    if (rc != EXIT_OK)
        log_error("%s", lvd_errmsg());
    char *sum_text = sum ? cJSON_PrintUnformatted(sum) : NULL;
    if (stage_opened && stage_close(&x->st, rc == EXIT_OK ? "done" : "failed", sum_text) != 0) {
        log_error("%s", lvd_errmsg());
        rc = EXIT_FAIL;
    }
    if (rc == EXIT_OK) {
        if (parted)
            log_info("dedup part %s: searched %" PRId64 " pool images (%" PRId64 " edges, %" PRId64
                     " benchmark matches); run lvd-dedup --merge with the same options when every part is done",
                     x->st.part_text, x->searched, x->edges_found, x->matches_found);
        else if (x->new_decided == 0)
            log_info("dedup: 0 new pool images for model '%s'", x->p.model);
        else {
            cJSON *g;
            double dup = (g = cJSON_GetObjectItem(sum, "removed_duplicate")) ? g->valuedouble : 0;
            double ben = (g = cJSON_GetObjectItem(sum, "removed_benchmark")) ? g->valuedouble : 0;
            double kept = (g = cJSON_GetObjectItem(sum, "kept")) ? g->valuedouble : 0;
            double comps = (g = cJSON_GetObjectItem(sum, "components")) ? g->valuedouble : 0;
            log_info("dedup: %" PRId64 " new pool images decided; model '%s': %.0f components, %.0f kept, %.0f "
                     "removed as duplicates, %.0f removed for benchmarks",
                     x->new_decided, x->p.model, comps, kept, dup, ben);
            for (int b = 0; b < x->nb; b++)
                log_info("benchmark '%s': %" PRId64 " pool images removed", x->b[b].name, x->b[b].removed);
        }
        if (x->json && sum_text)
            printf("%s\n", sum_text);
    }
    free(sum_text);
    cJSON_Delete(sum);
    dedup_ctx_release(x);
    free(benches);
    free(x);
    config_free_argv(ac, av);
    return rc;
}
