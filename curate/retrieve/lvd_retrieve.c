/* lvd-retrieve — selects pool images near seed datasets, per row of a seed registry (the second half of the
 * LVD-142M recipe, DINOv2 §3 and Table 15): as_is (the seed images themselves), sample (each seed image's k
 * nearest pool images), cluster (pool images of the k-means clusters that hold more than min_seeds seeds).
 * Every decision is recorded in the catalog (catalog-006.sql).
 *
 * Three phases over the run state of run.h:
 *   prepare  (pool.h, cluster.h; one-part runs and --prepare) the pool and its generation, the rows and their
 *            parameters, the k-means of cluster rows (trained once, then reused until --recluster).
 *   search   (sample.h, cluster.h) seed searches and centroid assignments that the stored results lack,
 *            committed in batches, so a killed run resumes; --part I/N does its share into its part file.
 *   select   (select.h; one-part runs and --merge) each pending row's selection from the stored results.
 * --merge folds the parts in and then runs as a one-part run does, which finds nothing left to search when
 * every part ran: the result is that of one run.
 *
 * curate/retrieve/ (k-means and k-NN search are common/kmeans.h and common/knn.h, shared with lvd-balance
 * and lvd-dedup):
 *   lvd_retrieve.c options and the phases
 *   registry.[ch]  the seed registry (schemas/lvd142m.yaml)
 *   run.[ch]       the run state the modules share
 *   pool.[ch]      models, pool, rows and seeds; their record (prepare)
 *   sample.[ch]    sample rows: k nearest pool images per seed, incremental
 *   cluster.[ch]   cluster rows: k-means training and assignment
 *   select.[ch]    selections, the run record, the CSV export
 *
 * Over MPI (mpirun -np N lvd-retrieve ...): rank 0 runs the stage and the other ranks serve its k-means training
 * and assignments (common/kmeans_ranks.h), which give the results of one process.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "cli.h"
#include "cluster.h"
#include "kmeans_ranks.h"
#include "opts.h"
#include "pool.h"
#include "registry.h"
#include "run.h"
#include "sample.h"
#include "select.h"
#include "stage.h"

#define PROG "lvd-retrieve"

static const char usage[] =
    "Usage: lvd-retrieve --work DIR --model NAME [options]\n"
    "       lvd-retrieve --work DIR --model NAME --merge [options]\n"
    "Selects pool images near the seed datasets of a registry, row by row (DINOv2's LVD-142M retrieval):\n"
    "as_is rows take the seed images, sample rows each seed image's k nearest pool images, cluster rows the\n"
    "pool images of the k-means clusters holding more than min_seeds of the row's seed images. The pool is\n"
    "every pool image kept by lvd-dedup with an embedding of --model. Incremental: a rerun does only what is new.\n\n"
    "  --model NAME            embeddings of pool and seeds used for retrieval (lvd-embed --name)\n"
    "  --dedup-model NAME      whose dedup decisions define the pool (default: the only model with dedup\n"
    "                          results)\n"
    "  --no-dedup              retrieve from every pool image instead (must be explicit)\n"
    "  --registry FILE         the seed registry (default: the shipped lvd142m.yaml, Table 15 of the paper)\n"
    "  --only ROW,...          only these rows of the registry\n"
    "  --scale auto|none       auto (default): a cluster row's clusters and cap scale with pool size / 744M\n"
    "                          (the paper's pool), at least 1; per_cluster does not (cluster sizes do not)\n"
    "  --clusters N  --per-cluster N  --cap N  --min-seeds N\n"
    "                          every cluster row's value, taken as given (default: the registry's)\n"
    "  --recluster             train the k-means again (default: reuse it, assigning new pool images)\n"
    "  --kmeans-iters N (20)   --kmeans-seed S (1234)\n"
    "  --exact-max N           exact (flat) search up to N pool vectors, IVF beyond (200000)\n"
    "  --factory STR           FAISS index_factory string for the approximate index   --nprobe N\n"
    "  --batch N               seeds per search call and committed transaction (4096)\n"
    "  --prepare               record the pool, the rows and the k-means, and stop: run it before --part\n"
    "  --csv FILE              write every selection of the model's latest results as CSV\n"
    "  --force                 redo rows recorded with other parameters (their results are dropped)\n"
    "  --part I/N              search a share of the seeds and assignments (I in 0..N-1) into\n"
    "                          WORK/parts/retrieve-I-of-N.db; then --merge\n" CLI_STAGE_HELP
    "  --config FILE.yaml  --json  --quiet | --verbose  --version  --help\n\n"
    "Over MPI (mpirun -np N lvd-retrieve ..., srun --mpi=pmix ...) the run is one run whose k-means training\n"
    "and assignments spread over the N processes, with the results of one process (--part I/N still makes\n"
    "it a part).\n";

enum {
    OPT_MODEL = OPT_FIRST_STAGE_OPTION, OPT_DEDUP_MODEL, OPT_NO_DEDUP, OPT_REGISTRY, OPT_ONLY, OPT_SCALE,
    OPT_CLUSTERS, OPT_PER_CLUSTER, OPT_CAP, OPT_MIN_SEEDS, OPT_RECLUSTER, OPT_KM_ITERS, OPT_KM_SEED, OPT_EXACT_MAX,
    OPT_FACTORY, OPT_NPROBE, OPT_BATCH, OPT_PREPARE, OPT_CSV
};

static const char *const scale_names[] = {"none", "auto", NULL};

/* The default registry: the installed copy, else the source tree's (a build that is not installed). */
static const char *default_registry(void)
{
    if (access(LVD_REGISTRY_INSTALLED, R_OK) == 0)
        return LVD_REGISTRY_INSTALLED;
    return LVD_REGISTRY_SOURCE;
}

/* The run's parameters as JSON (the run record). */
static void make_params(rt_ctx *x)
{
    cJSON *p = cJSON_CreateObject();
    if (!p)
        return;
    cJSON_AddStringToObject(p, "model", x->o.model);
    cJSON_AddStringToObject(p, "model_sha256", x->model_sha);
    if (x->o.no_dedup)
        cJSON_AddNullToObject(p, "dedup_model");
    else
        cJSON_AddNumberToObject(p, "dedup_model_id", (double)x->dedup_model_id);
    cJSON_AddStringToObject(p, "registry", x->reg.path);
    cJSON_AddStringToObject(p, "registry_sha256", x->reg.sha256);
    if (x->o.only)
        cJSON_AddStringToObject(p, "only", x->o.only);
    cJSON_AddStringToObject(p, "scale", x->o.scale_auto ? "auto" : "none");
    if (x->o.clusters > 0)
        cJSON_AddNumberToObject(p, "clusters", (double)x->o.clusters);
    if (x->o.per_cluster > 0)
        cJSON_AddNumberToObject(p, "per_cluster", (double)x->o.per_cluster);
    if (x->o.cap > 0)
        cJSON_AddNumberToObject(p, "cap", (double)x->o.cap);
    if (x->o.min_seeds >= 0)
        cJSON_AddNumberToObject(p, "min_seeds", (double)x->o.min_seeds);
    cJSON_AddNumberToObject(p, "kmeans_iters", x->o.kmeans_iters);
    cJSON_AddNumberToObject(p, "kmeans_seed", (double)x->o.kmeans_seed);
    cJSON_AddNumberToObject(p, "exact_max", (double)x->o.exact_max);
    if (x->o.factory)
        cJSON_AddStringToObject(p, "factory", x->o.factory);
    if (x->o.nprobe > 0)
        cJSON_AddNumberToObject(p, "nprobe", x->o.nprobe);
    char *t = cJSON_PrintUnformatted(p);
    cJSON_Delete(p);
    snprintf(x->ptext, sizeof x->ptext, "%s", t ? t : "{}");
    cJSON_free(t);
    stage_fingerprint(x->ptext, x->fp);
}

/* The run record's parameters, once they are known (the model's identity is read from the catalog). */
static int record_params(rt_ctx *x)
{
    sqlite3_stmt *st = catalog_stmt(x->st.cat, "UPDATE runs SET params = ?1, fingerprint = ?2 WHERE id = ?3");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, x->ptext, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, x->fp, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, x->st.run_id);
    return catalog_step_done(x->st.cat, st);
}

/* The phases of one process on an open stage: see the top of the file. */
static int run(rt_ctx *x, cJSON **summary)
{
    x->parted = x->st.part.count > 1;
    x->src = x->parted ? x->st.main_ro : x->st.cat;
    if (!x->src)
        return lvd_fail("%s/catalog.db: no catalog (import, decode, embed and dedup a pool first)", x->work);
    if (x->parted && x->o.prepare_only)
        return lvd_fail("--prepare records catalog.db: run it without --part");
    vf_init(&x->vf, 0);
    if (rt_pool_load_models(x) != 0)
        return -1;
    vf_free(&x->vf);
    vf_init(&x->vf, x->dim);
    make_params(x);
    if (record_params(x) != 0)
        return -1;
    if (catalog_exec(x->st.cat, "PRAGMA cache_size = -262144") != 0 || rt_pool_load(x) != 0 ||
        rt_pool_load_rows(x) != 0)
        return -1;
    if (x->parted) {
        if (rt_pool_check_prepared(x) != 0 || rt_cluster_prepare(x, 0) != 0)
            return -1;
    } else if (rt_pool_record(x) != 0 || rt_cluster_prepare(x, 1) != 0 || rt_pool_record_rows(x) != 0) {
        return -1;
    }
    if (x->o.prepare_only) {
        int pending = 0;
        for (int i = 0; i < x->nrows; i++)
            pending += x->rows[i].pending;
        log_info("prepared: %d rows (%d to select), pool of %" PRId64 " images at generation %d; now run the parts "
                 "(--part I/N) and --merge", x->nrows, pending, x->pool.n, (int)x->gen);
        return 0;
    }
    if (rt_sample_search(x) != 0 || rt_cluster_assign(x) != 0)
        return -1;
    if (x->parted)
        return 0;
    int selected = 0;
    if (rt_select(x, summary, &selected) != 0)
        return -1;
    if (selected == 0)
        log_info("nothing new to retrieve: every row is up to date");
    return 0;
}

/* Rank 0's main (kmr_main); dist NULL for one process. */
static int retrieve_main(int argc, char **argv, lvd_dist *dist)
{
    int ac;
    char **av;
    cli_begin(PROG, argc, argv, &ac, &av);
    static const struct option longopts[] = {
        CLI_COMMON_OPTIONS,
        CLI_STAGE_OPTIONS,
        {"model", required_argument, NULL, OPT_MODEL},
        {"dedup-model", required_argument, NULL, OPT_DEDUP_MODEL},
        {"no-dedup", no_argument, NULL, OPT_NO_DEDUP},
        {"registry", required_argument, NULL, OPT_REGISTRY},
        {"only", required_argument, NULL, OPT_ONLY},
        {"scale", required_argument, NULL, OPT_SCALE},
        {"clusters", required_argument, NULL, OPT_CLUSTERS},
        {"per-cluster", required_argument, NULL, OPT_PER_CLUSTER},
        {"cap", required_argument, NULL, OPT_CAP},
        {"min-seeds", required_argument, NULL, OPT_MIN_SEEDS},
        {"recluster", no_argument, NULL, OPT_RECLUSTER},
        {"kmeans-iters", required_argument, NULL, OPT_KM_ITERS},
        {"kmeans-seed", required_argument, NULL, OPT_KM_SEED},
        {"exact-max", required_argument, NULL, OPT_EXACT_MAX},
        {"factory", required_argument, NULL, OPT_FACTORY},
        {"nprobe", required_argument, NULL, OPT_NPROBE},
        {"batch", required_argument, NULL, OPT_BATCH},
        {"prepare", no_argument, NULL, OPT_PREPARE},
        {"csv", required_argument, NULL, OPT_CSV},
        {NULL, 0, NULL, 0},
    };
    rt_ctx *x = calloc(1, sizeof *x);
    if (!x) {
        log_error("out of memory");
        return EXIT_FAIL;
    }
    x->dist = dist;
    x->o = (rt_opts){.scale_auto = 1, .clusters = -1, .per_cluster = -1, .cap = -1, .min_seeds = -1,
                     .kmeans_iters = 20, .kmeans_seed = 1234, .exact_max = 200000, .batch = 4096};
    cli_stage_args sa = {0}; /* --retry-failed is moot: nothing fails transiently here */
    int opt, json = 0, choice;
    int64_t iv;
    optind = 1;
    while ((opt = getopt_long(ac, av, "h", longopts, NULL)) != -1) {
        if (cli_common(opt, PROG, usage, &x->work, &json) || cli_stage_option(opt, &sa))
            continue;
        int bad = 0;
        switch (opt) {
        case OPT_MODEL: x->o.model = optarg; break;
        case OPT_DEDUP_MODEL: x->o.dedup_model = optarg; break;
        case OPT_NO_DEDUP: x->o.no_dedup = 1; break;
        case OPT_REGISTRY: x->o.registry_path = optarg; break;
        case OPT_ONLY: x->o.only = optarg; break;
        case OPT_SCALE: bad = opt_choice("--scale", optarg, scale_names, &choice); x->o.scale_auto = choice; break;
        case OPT_CLUSTERS: bad = opt_int("--clusters", optarg, 1, INT32_MAX, &x->o.clusters); break;
        case OPT_PER_CLUSTER: bad = opt_int("--per-cluster", optarg, 1, INT64_MAX, &x->o.per_cluster); break;
        case OPT_CAP: bad = opt_int("--cap", optarg, 1, INT64_MAX, &x->o.cap); break;
        case OPT_MIN_SEEDS: bad = opt_int("--min-seeds", optarg, 0, INT64_MAX, &x->o.min_seeds); break;
        case OPT_RECLUSTER: x->o.recluster = 1; break;
        case OPT_KM_ITERS: bad = opt_int("--kmeans-iters", optarg, 1, 1000, &iv); x->o.kmeans_iters = (int32_t)iv; break;
        case OPT_KM_SEED: bad = opt_int("--kmeans-seed", optarg, 0, INT64_MAX, &iv); x->o.kmeans_seed = (uint64_t)iv; break;
        case OPT_EXACT_MAX: bad = opt_int("--exact-max", optarg, 1, INT64_MAX, &x->o.exact_max); break;
        case OPT_FACTORY: x->o.factory = optarg; break;
        case OPT_NPROBE: bad = opt_int("--nprobe", optarg, 1, 1 << 20, &iv); x->o.nprobe = (int32_t)iv; break;
        case OPT_BATCH: bad = opt_int("--batch", optarg, 1, 1 << 20, &x->o.batch); break;
        case OPT_PREPARE: x->o.prepare_only = 1; break;
        case OPT_CSV: x->o.csv_path = optarg; break;
        default: cli_usage_error(PROG, "unknown option");
        }
        if (bad)
            cli_usage_error(PROG, lvd_errmsg());
    }
    x->o.force = sa.force;
    x->o.merge = sa.merge;
    x->o.json = json;
    if (!x->work)
        cli_usage_error(PROG, "--work DIR is required");
    if (!x->o.model)
        cli_usage_error(PROG, "--model NAME is required (the lvd-embed --name of the embeddings to retrieve with)");
    if (optind < ac)
        cli_usage_error(PROG, "unexpected argument");
    if (x->o.no_dedup && x->o.dedup_model)
        cli_usage_error(PROG, "--no-dedup and --dedup-model exclude each other");
    if (x->o.merge && (sa.part || x->o.prepare_only))
        cli_usage_error(PROG, "--merge folds the parts: no --part or --prepare");
    if (x->o.prepare_only && sa.part)
        cli_usage_error(PROG, "--prepare records catalog.db: run it without --part");
    /* The registry is the user's input: anything wrong in it is a usage error naming the file and line. */
    if (!x->o.registry_path)
        x->o.registry_path = default_registry();
    if (registry_load(x->o.registry_path, &x->reg) != 0)
        cli_usage_error(PROG, lvd_errmsg());
    uint8_t *keep = calloc((size_t)x->reg.nrows + 1, 1);
    if (!keep || registry_select(&x->reg, x->o.only, keep) < 0)
        cli_usage_errorf(PROG, "--only: %s", keep ? lvd_errmsg() : "out of memory");
    free(keep);
    int flags = cli_stage_flags(&sa);
    int rc = EXIT_FAIL;
    cJSON *summary = NULL;
    if (x->o.merge) {
        stage_merge_result mr;
        int mrc = stage_merge("retrieve", x->work, flags, &mr);
        stage_merge_result_free(&mr);
        if (mrc != 0) {
            log_error("%s", lvd_errmsg());
            goto done;
        }
        if (mr.merged)
            log_info("merged %d part file%s", mr.merged, mr.merged == 1 ? "" : "s");
    }
    /* over MPI the ranks are one run (kmeans_ranks.h), not the parts their launcher variables name (part.h);
     * --part I/N still makes it a part */
    const char *part = x->o.merge || (dist && !sa.part) ? "0/1" : sa.part;
    if (stage_open(&x->st, "retrieve", x->work, part, "{}", "", flags) != 0) {
        log_error("%s", lvd_errmsg());
        goto done;
    }
    int ok = run(x, &summary) == 0;
    if (!ok)
        log_error("%s", lvd_errmsg());
    if (ok && x->o.csv_path && !x->parted) {
        FILE *f = fopen(x->o.csv_path, "w");
        if (!f || rt_select_csv(x, x->st.cat, f) != 0 || ferror(f)) {
            if (!f)
                lvd_fail_errno("cannot write %s", x->o.csv_path);
            log_error("%s", lvd_errmsg());
            ok = 0;
        }
        if (f && fclose(f) != 0 && ok) {
            log_error("cannot write %s", x->o.csv_path);
            ok = 0;
        }
    }
    cJSON *out = cJSON_CreateObject();
    if (out) {
        cJSON_AddStringToObject(out, "stage", "retrieve");
        cJSON_AddStringToObject(out, "model", x->o.model);
        cJSON_AddNumberToObject(out, "pool", (double)x->pool.n);
        cJSON_AddNumberToObject(out, "pool_generation", x->gen);
        cJSON_AddNumberToObject(out, "pool_new", (double)x->pool_entered);
        cJSON_AddNumberToObject(out, "pool_left", (double)x->pool_left);
        if (x->parted)
            cJSON_AddStringToObject(out, "part", x->st.part_text);
        if (x->o.prepare_only)
            cJSON_AddBoolToObject(out, "prepared", ok);
        if (summary)
            cJSON_AddItemToObject(out, "rows", summary);
        else
            cJSON_AddArrayToObject(out, "rows");
        summary = NULL;
    }
    char *text = out ? cJSON_PrintUnformatted(out) : NULL;
    if (stage_close(&x->st, ok ? "done" : "failed", text) != 0) {
        log_error("%s", lvd_errmsg());
        ok = 0;
    }
    if (json && text && ok)
        printf("%s\n", text);
    cJSON_free(text);
    cJSON_Delete(out);
    rc = ok ? EXIT_OK : EXIT_FAIL;
done:
    cJSON_Delete(summary);
    rt_ctx_release(x);
    free(x);
    config_free_argv(ac, av);
    return rc;
}

/* Under an MPI launcher (mpirun -np N lvd-retrieve ...) the ranks > 0 serve rank 0's k-means
 * (common/kmeans_ranks.h). */
int main(int argc, char **argv)
{
    log_set_program(PROG);
    return kmr_main(argc, argv, retrieve_main, EXIT_FAIL);
}
