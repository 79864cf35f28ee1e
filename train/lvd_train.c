/* lvd-train — DINOv2 self-supervised pretraining (DINO + iBOT + KoLeo, multi-crop, EMA teacher) from a manifest.
 *
 * train/:
 *   lvd_train.c       options, the recipe's three layers (defaults, --config, key=value), the report
 *   trainer.[ch]      the loop and RUN/'s files (metrics, state, checkpoint, resume)
 *   step.[ch]         one iteration: student, teacher, heads, losses, backward, AdamW, EMA
 *   state.[ch]        the training state and the teacher checkpoint on disk
 *   dist.[ch]         the processes of a data-parallel run (MPI, optional at build time)
 *   recipe, schedule, optim, head, loss, masking, augment, loader: the recipe's parts, each with its header
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "opts.h"
#include "dist.h"
#include "train/recipe.h"
#include "train/trainer.h"

#define PROG "lvd-train"

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

static const char usage[] =
    "usage: lvd-train --config C.yaml --manifest M.db --out RUN [--resume] [options] [key=value ...]\n"
    "       lvd-train ... --init-from OLD_RUN/training_state.safetensors crops.global_crops_size=518 ...\n"
    "       lvd-train ... distillation.enabled=true distillation.checkpoint_path=BIG_RUN/training_state.safetensors\n"
    "\n"
    "DINOv2 pretraining of a ViT from the samples of an lvd-manifest manifest. The configuration has the DINOv2\n"
    "YAML keys and nesting (dinov2/configs/ssl_default_config.yaml): its defaults, then --config (an official\n"
    "file such as vitl14.yaml, or a preset of schemas/train/), then key=value arguments\n"
    "(train.batch_size_per_gpu=16, optim.base_lr=0.004, crops.local_crops_number=8, ...).\n"
    "\n"
    "Data parallel: mpirun -np N lvd-train ... (or srun --mpi=pmix, scripts/slurm/train.sbatch) runs N\n"
    "ranks, each on batch_size_per_gpu images of a global batch of N times that; rank 0 writes RUN; --resume\n"
    "needs the same N.\n"
    "\n"
    "High-resolution phase: --init-from starts a new RUN from another run's student, teacher, heads and centers\n"
    "(a training state, or a backbone checkpoint) with the same architecture, at a new crops.global_crops_size:\n"
    "pos_embed is resampled bicubically to the new patch grid, AdamW starts fresh at iteration 0 and every\n"
    "schedule runs over this phase's own optim.epochs x OFFICIAL_EPOCH_LENGTH iterations (set them short, and\n"
    "a lower optim.base_lr, for the paper's compressed schedules).\n"
    "\n"
    "Distillation (distillation.enabled=true): a frozen teacher of its own architecture, the teacher run's\n"
    "training state (distillation.checkpoint_path, heads included) and config (distillation.full_cfg_path,\n"
    "default config.yaml beside the checkpoint), gives the DINO and iBOT targets; its prototypes must be the\n"
    "student's. The student gets no masking and no drop path, iBOT covers every patch token of the global\n"
    "crops; the EMA of the student is kept and is the model written as teacher_checkpoint.safetensors.\n"
    "metrics.jsonl says \"mode\": \"distillation\".\n"
    "\n"
    "  --config C.yaml     the recipe (optional with --resume: RUN/config.yaml is used)\n"
    "  --manifest M.db     the samples (lvd-manifest build)\n"
    "  --out RUN           run directory: config.yaml, metrics.jsonl, training_state.safetensors,\n"
    "                      teacher_checkpoint.safetensors (official DINOv2 backbone names)\n"
    "  --resume            continue RUN from its training state (exactly: same parameters as an\n"
    "                      uninterrupted run at the same thread count)\n"
    "  --save-every N      iterations between saves of the state and the checkpoint\n"
    "                      (train.OFFICIAL_EPOCH_LENGTH)\n"
    "  --max-iter N        stop once N iterations are done (optim.epochs x OFFICIAL_EPOCH_LENGTH); 0 on a new\n"
    "                      RUN writes its initial state and checkpoint and stops\n"
    "  --init-from FILE    start a new RUN from FILE's weights (see above)\n"
    "  --threads N         compute threads (train.threads; 0 = all CPUs); loader threads: train.num_workers\n"
    "  --print-config      print the whole configuration as YAML and exit\n"
    "  --quiet | --verbose  --version  --help\n";

enum { OPT_CONFIG = 1000, OPT_MANIFEST, OPT_OUT, OPT_RESUME, OPT_SAVE_EVERY, OPT_MAX_ITER, OPT_THREADS,
       OPT_PRINT, OPT_QUIET, OPT_VERBOSE, OPT_VERSION, OPT_HELP, OPT_INIT_FROM };

static int usage_error(const char *msg)
{
    fprintf(stderr, "%s: %s\nTry '%s --help'.\n", PROG, msg, PROG);
    return EXIT_USAGE;
}

static int run(const char *config, const char *manifest, const char *out, int resume, int print,
               int64_t save_every, int64_t max_iter, int threads_set, int64_t threads, const char *init_from,
               int argc, char **argv, lvd_dist *dist);

int main(int argc, char **argv)
{
    log_set_program(PROG);
    static const struct option longopts[] = {
        {"config", required_argument, NULL, OPT_CONFIG}, {"manifest", required_argument, NULL, OPT_MANIFEST},
        {"out", required_argument, NULL, OPT_OUT}, {"resume", no_argument, NULL, OPT_RESUME},
        {"save-every", required_argument, NULL, OPT_SAVE_EVERY}, {"max-iter", required_argument, NULL, OPT_MAX_ITER},
        {"threads", required_argument, NULL, OPT_THREADS}, {"print-config", no_argument, NULL, OPT_PRINT},
        {"quiet", no_argument, NULL, OPT_QUIET}, {"verbose", no_argument, NULL, OPT_VERBOSE},
        {"version", no_argument, NULL, OPT_VERSION}, {"help", no_argument, NULL, OPT_HELP},
        {"init-from", required_argument, NULL, OPT_INIT_FROM},
        {NULL, 0, NULL, 0}};
    const char *config = NULL, *manifest = NULL, *out = NULL, *init_from = NULL;
    int resume = 0, print = 0, threads_set = 0;
    int64_t save_every = 0, max_iter = -1, threads = 0; /* max_iter -1: the recipe's total */
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_CONFIG: config = optarg; break;
        case OPT_MANIFEST: manifest = optarg; break;
        case OPT_OUT: out = optarg; break;
        case OPT_RESUME: resume = 1; break;
        case OPT_SAVE_EVERY:
            if (opt_int("--save-every", optarg, 1, INT64_MAX, &save_every) != 0)
                return usage_error(lvd_errmsg());
            break;
        case OPT_MAX_ITER:
            if (opt_int("--max-iter", optarg, 0, INT64_MAX, &max_iter) != 0)
                return usage_error(lvd_errmsg());
            break;
        case OPT_THREADS:
            if (opt_int("--threads", optarg, 0, 4096, &threads) != 0)
                return usage_error(lvd_errmsg());
            threads_set = 1;
            break;
        case OPT_INIT_FROM: init_from = optarg; break;
        case OPT_PRINT: print = 1; break;
        case OPT_QUIET: log_set_level(LOG_ERROR); break;
        case OPT_VERBOSE: log_set_level(LOG_DEBUG); break;
        case OPT_VERSION: printf("%s %s\n", PROG, LVD_VERSION); return EXIT_OK;
        case OPT_HELP: fputs(usage, stdout); return EXIT_OK;
        default: return usage_error("unknown option");
        }
    }
    if (!print && (!manifest || !out))
        return usage_error("--manifest and --out are required");

    /* Under an MPI launcher: one rank of a data-parallel run (common/dist.h), known before the recipe is finished
     * (its lr scaling rule sees the global batch). Rank 0 reports; the others say only warnings and errors,
     * their lines marked with their rank. */
    static lvd_dist dist;
    if (dist_init(&dist, &argc, &argv) != 0) {
        log_error("%s", lvd_errmsg());
        return EXIT_FAIL;
    }
    static char prog[64];
    if (dist.ranks > 1) {
        snprintf(prog, sizeof prog, "%s[rank %d/%d]", PROG, dist.rank, dist.ranks);
        log_set_program(prog);
        if (dist.rank > 0 && log_get_level() > LOG_WARN)
            log_set_level(LOG_WARN);
    }
    int rc = run(config, manifest, out, resume, print, save_every, max_iter, threads_set, threads, init_from, argc,
                 argv, &dist);
    dist_finalize(&dist);
    return rc;
}

/* Everything after the options and the processes: the recipe, then the run. */
static int run(const char *config, const char *manifest, const char *out, int resume, int print,
               int64_t save_every, int64_t max_iter, int threads_set, int64_t threads, const char *init_from,
               int argc, char **argv, lvd_dist *dist)
{

    /* The recipe: defaults, the file (or the run's own config.yaml when resuming without --config), then
     * key=value. */
    static recipe r;
    recipe_defaults(&r);
    char run_config[4096];
    if (!config && resume && out) {
        snprintf(run_config, sizeof run_config, "%s/config.yaml", out);
        config = run_config;
    }
    if (!config && !print)
        return usage_error("--config is required (or --resume on a RUN that has its config.yaml)");
    if (config && recipe_load_file(&r, config) != 0) {
        log_error("%s", lvd_errmsg());
        return EXIT_USAGE;
    }
    for (int i = optind; i < argc; i++) {
        if (!strchr(argv[i], '='))
            return usage_error("arguments after the options are key=value settings");
        if (recipe_set(&r, argv[i], "command line") != 0) {
            log_error("%s", lvd_errmsg());
            return EXIT_USAGE;
        }
    }
    if (recipe_finish(&r, dist->ranks) != 0) {
        log_error("%s", lvd_errmsg());
        return EXIT_USAGE;
    }
    if (recipe_ignored(&r)[0])
        log_warn("ignored (they only mean something to the GPU code): %s", recipe_ignored(&r));
    if (print) {
        static char buf[1 << 16];
        if (recipe_dump(&r, buf, sizeof buf) < 0) {
            log_error("the configuration does not fit the dump buffer");
            return EXIT_FAIL;
        }
        fputs(buf, stdout);
        return EXIT_OK;
    }

    trainer_opts o = {.rc = &r, .manifest = manifest, .out = out, .resume = resume,
                      .save_every = save_every > 0 ? save_every : r.train.official_epoch_length,
                      .max_iter = max_iter, .threads = threads_set ? (int32_t)threads : r.train.threads,
                      .init_from = init_from};
    o.dist = dist;
    trainer_result res;
    if (trainer_run(&o, &res) != 0) {
        log_error("%s", lvd_errmsg());
        return EXIT_FAIL;
    }
    if (res.end_iter > res.start_iter)
        log_info("%s: iterations %" PRId64 " to %" PRId64 " in %.1f s%s; %" PRIu64 " sample%s skipped", out,
                 res.start_iter, res.end_iter, res.seconds,
                 res.interrupted ? " (interrupted, state saved: --resume continues)" : "", res.failed,
                 res.failed == 1 ? "" : "s");
    return EXIT_OK;
}
