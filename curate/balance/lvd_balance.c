/* lvd-balance — balances a pool's concepts by hierarchical k-means and balanced sampling (Vo et al. 2024,
 * "Automatic Data Curation for Self-Supervised Learning", ssl-data-curation): a tree of k-means levels over
 * the pool's embeddings, then a sample of a target size drawn top-down so that every cluster of every level gets
 * its share. Every result is recorded in the catalog (catalog-007.sql).
 *
 * Phases over the run state of bstate.h:
 *   pool    (bpool.h) the dedup-kept pool (--from dedup) or the latest retrieval selections (--from retrieve),
 *           with embeddings of --model.
 *   tree    (btree.h) built once, then kept: images entering the pool are assigned down it, images leaving it
 *           are deleted; --rebuild builds it again.
 *   sample  (bsample.h) drawn again when the tree's points or the sample's parameters changed.
 *
 * curate/balance/:
 *   lvd_balance.c options and the phases
 *   bconfig.[ch]  the configuration (ssl-data-curation's YAML keys, plus target_size, multiplier, sampling)
 *   hkmeans.[ch]  hierarchical k-means with resampling and splits (on common/kmeans.h)
 *   sampler.[ch]  the balanced sampler (water-filling quotas)
 *   brng.h        the seeded generator of the random choices
 *   bstate.h      the run state the modules share
 *   bpool.[ch]    models and pool
 *   btree.[ch]    the tree's record: build, incremental assignment, load
 *   bsample.[ch]  the sample's record and the summary
 *
 * Over MPI (mpirun -np N lvd-balance ...): rank 0 runs the stage and the other ranks serve its k-means runs and
 * assignments (common/kmeans_ranks.h), which give the results of one process.
 */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bpool.h"
#include "bsample.h"
#include "btree.h"
#include "cli.h"
#include "dist.h"
#include "kmeans_ranks.h"
#include "opts.h"

#define PROG "lvd-balance"

static const char usage[] =
    "Usage: lvd-balance --work DIR --model NAME --config B.yaml [options]\n"
    "Balances the pool by hierarchical k-means and samples it to a target size so that every cluster of every\n"
    "level gets its share (ssl-data-curation's method). The pool is every pool image kept by lvd-dedup (default)\n"
    "or the union of the latest lvd-retrieve selections, with an embedding of --model. Incremental: the tree is\n"
    "built once; new pool images are assigned down it, removed ones leave it; the sample is drawn again when the\n"
    "tree's points or the sample's parameters change.\n\n"
    "  --model NAME            the embeddings to cluster (lvd-embed --name)\n"
    "  --config FILE.yaml      the levels and the sample: ssl-data-curation's keys (n_levels, n_clusters,\n"
    "                          n_iters, n_splits, n_resampling_steps, sample_size, sampling_strategy, ...) plus\n"
    "                          target_size, multiplier, sampling, from, seed, threads (schemas/balance/)\n"
    "  --from dedup|retrieve   the pool (default: the config's `from`, else dedup)\n"
    "  --dedup-model NAME      --from dedup: whose dedup decisions define the pool (default: the only model\n"
    "                          with dedup results)\n"
    "  --target N              the sample's size (default: the config's target_size)\n"
    "  --rebuild               build the tree again (default: keep it, assigning new pool images)\n"
    "  --wait                  if another process is writing the catalog, wait for it (default: fail at once)\n"
    "  --json  --quiet | --verbose  --version  --help\n\n"
    "Over MPI (mpirun -np N lvd-balance ..., srun --mpi=pmix ...) the k-means runs and assignments spread over\n"
    "the N processes, with the results of one process.\n";

enum { OPT_MODEL = OPT_FIRST_STAGE_OPTION, OPT_CONFIG, OPT_FROM, OPT_DEDUP_MODEL, OPT_TARGET, OPT_REBUILD };

static const char *const from_names[] = {"dedup", "retrieve", NULL};

/* The run's parameters as JSON (the run record): the tree's and the sample's. */
static int record_params(bal_ctx *x)
{
    char text[3072], fp[65];
    snprintf(text, sizeof text, "{\"tree\":%s,\"config\":\"%s\",\"target\":%" PRId64 ",\"multiplier\":%d,"
             "\"sampling\":\"%c\",\"rebuild\":%s}", x->tree_params, x->o.config_path, x->target,
             (int)x->cfg.multiplier, x->cfg.sampling, x->o.rebuild ? "true" : "false");
    stage_fingerprint(text, fp);
    sqlite3_stmt *st = catalog_stmt(x->st.cat, "UPDATE runs SET params = ?1, fingerprint = ?2 WHERE id = ?3");
    if (!st)
        return -1;
    sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, fp, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, x->st.run_id);
    return catalog_step_done(x->st.cat, st);
}

/* The phases on an open stage: see the top of the file. */
static int run(bal_ctx *x)
{
    vf_init(&x->vf, 0);
    if (bal_pool_load_models(x) != 0)
        return -1;
    vf_free(&x->vf);
    vf_init(&x->vf, x->dim);
    bal_tree_params(x);
    if (record_params(x) != 0 || bal_pool_load(x) != 0 || bal_tree_settle(x) != 0 || bal_tree_load(x) != 0 ||
        bal_sample_settle(x) != 0)
        return -1;
    if (!x->built_now && !x->added_now && !x->removed_now && !x->sampled_now)
        log_info("nothing new to balance: tree %" PRId64 " holds the pool of %" PRId64 " images and sample %" PRId64
                 " is current", x->tree_id, x->npool, x->sample_id);
    return 0;
}

static int balance_main(int argc, char **argv, lvd_dist *dist);

/* Under an MPI launcher (mpirun -np N lvd-balance ...) the ranks > 0 serve rank 0's k-means. */
int main(int argc, char **argv)
{
    log_set_program(PROG);
    return kmr_main(argc, argv, balance_main, EXIT_FAIL);
}
/* Rank 0's main (kmr_main); dist NULL for one process. */
static int balance_main(int argc, char **argv, lvd_dist *dist)
{
    /* --config is the balance configuration (bconfig.h), not the option file of the other stages. */
    static const struct option longopts[] = {
        CLI_COMMON_OPTIONS,
        {"wait", no_argument, NULL, OPT_WAIT},
        {"model", required_argument, NULL, OPT_MODEL},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"from", required_argument, NULL, OPT_FROM},
        {"dedup-model", required_argument, NULL, OPT_DEDUP_MODEL},
        {"target", required_argument, NULL, OPT_TARGET},
        {"rebuild", no_argument, NULL, OPT_REBUILD},
        {NULL, 0, NULL, 0},
    };
    bal_ctx *x = calloc(1, sizeof *x);
    if (!x) {
        log_error("out of memory");
        return EXIT_FAIL;
    }
    x->o.target = -1;
    int opt, json = 0, choice, wait = 0;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (cli_common(opt, PROG, usage, &x->work, &json))
            continue;
        int bad = 0;
        switch (opt) {
        case OPT_WAIT: wait = 1; break;
        case OPT_MODEL: x->o.model = optarg; break;
        case OPT_CONFIG: x->o.config_path = optarg; break;
        case OPT_FROM: bad = opt_choice("--from", optarg, from_names, &choice); x->o.from = optarg; break;
        case OPT_DEDUP_MODEL: x->o.dedup_model = optarg; break;
        case OPT_TARGET: bad = opt_int("--target", optarg, 1, INT64_MAX, &x->o.target); break;
        case OPT_REBUILD: x->o.rebuild = 1; break;
        default: cli_usage_error(PROG, "unknown option");
        }
        if (bad)
            cli_usage_error(PROG, lvd_errmsg());
    }
    x->o.json = json;
    if (!x->work)
        cli_usage_error(PROG, "--work DIR is required");
    if (!x->o.model)
        cli_usage_error(PROG, "--model NAME is required (the lvd-embed --name of the embeddings to cluster)");
    if (!x->o.config_path)
        cli_usage_error(PROG, "--config FILE.yaml is required (the levels: see schemas/balance/)");
    if (optind < argc)
        cli_usage_error(PROG, "unexpected argument");
    /* The config is the user's input: anything wrong in it is a usage error naming file:line and the key. */
    if (bconfig_load(x->o.config_path, &x->cfg) != 0)
        cli_usage_error(PROG, lvd_errmsg());
    x->cfg.hk.dist = dist;
    if (x->cfg.ignored[0])
        log_warn("%s: ignored GPU / Slurm keys (this is one process on CPUs): %s", x->o.config_path, x->cfg.ignored);
    snprintf(x->source, sizeof x->source, "%s", x->o.from ? x->o.from : x->cfg.from);
    if (x->o.dedup_model && strcmp(x->source, "dedup") != 0)
        cli_usage_error(PROG, "--dedup-model applies to --from dedup only");
    x->target = x->o.target > 0 ? x->o.target : x->cfg.target_size;
    if (x->target <= 0)
        cli_usage_errorf(PROG, "no target size: give --target N or target_size in %s", x->o.config_path);
    if (x->cfg.hk.n_levels < 1)
        cli_usage_errorf(PROG, "%s: n_levels is required", x->o.config_path);
    char cat_path[STAGE_PATH_MAX + 16];
    snprintf(cat_path, sizeof cat_path, "%s/catalog.db", x->work);
    int rc = EXIT_FAIL;
    if (access(cat_path, F_OK) != 0) {
        log_error("%s: no catalog (import, decode, embed and dedup a pool first)", cat_path);
        goto done;
    }
    /* over MPI the ranks are one run (kmeans_ranks.h), not the parts their launcher variables name (part.h) */
    if (stage_open(&x->st, "balance", x->work, dist ? "0/1" : NULL, "{}", "", wait ? STAGE_WAIT : 0) != 0) {
        log_error("%s", lvd_errmsg());
        goto done;
    }
    int ok = run(x) == 0;
    if (!ok)
        log_error("%s", lvd_errmsg());
    cJSON *out = ok ? bal_summary(x) : NULL;
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
    bal_ctx_release(x);
    free(x);
    return rc;
}
