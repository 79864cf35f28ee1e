/* trainer.c — lvd-train's loop and its files (trainer.h). */
#include "train/trainer.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic_file.h"
#include "err.h"
#include "log.h"
#include "manifest.h"
#include "progress.h"
#include "train/loader.h"
#include "train/state.h"
#include "train/step.h"

#define PATH_CAP 4096

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static int join(char *buf, const char *dir, const char *name)
{
    int n = snprintf(buf, PATH_CAP, "%s/%s", dir, name);
    return n > 0 && n < PATH_CAP ? 0 : lvd_fail("path too long: %s/%s", dir, name);
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int write_config(const recipe *r, const char *path)
{
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    if (!buf)
        return lvd_fail("out of memory");
    int n = recipe_dump(r, buf, cap);
    int rc = -1;
    atomic_file af;
    if (n < 0)
        lvd_fail("the recipe's dump exceeds %zu bytes", cap);
    else if (atomic_file_open(&af, path) == 0) {
        if (atomic_file_write(&af, buf, (size_t)n) == 0)
            rc = atomic_file_commit(&af);
        else
            atomic_file_abort(&af);
    }
    free(buf);
    return rc;
}

/* The "iteration" of one metrics line, or -1 if it has none. */
static int64_t line_iteration(const char *line)
{
    const char *p = strstr(line, "\"iteration\":");
    return p ? strtoll(p + 12, NULL, 10) : -1;
}

/* Keeps the metrics lines of iterations < keep (what the state covers), atomically. A missing file is fine. */
static int trim_metrics(const char *path, int64_t keep)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return errno == ENOENT ? 0 : lvd_fail_errno("%s", path);
    atomic_file af;
    if (atomic_file_open(&af, path) != 0) {
        fclose(f);
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) > 0) {
        int64_t it = line_iteration(line);
        if (it >= 0 && it < keep && line[len - 1] == '\n')
            rc = atomic_file_write(&af, line, (size_t)len);
    }
    free(line);
    fclose(f);
    if (rc != 0) {
        atomic_file_abort(&af);
        return -1;
    }
    return atomic_file_commit(&af);
}

static void json_num(FILE *f, const char *key, double v)
{
    if (isfinite(v))
        fprintf(f, ",\"%s\":%.9g", key, v);
    else
        fprintf(f, ",\"%s\":null", key);
}

static int write_metrics(FILE *f, const train_model *m, const train_step_report *r, uint64_t epoch, double step_s,
                         double load_s, uint64_t failed)
{
    fprintf(f, "{\"iteration\":%" PRId64 ",\"epoch\":%" PRIu64 ",\"mode\":\"%s\"", r->iteration, epoch,
            m->distill ? "distillation" : "ssl");
    json_num(f, "dino_local_crops_loss", r->terms.dino_local_crops_loss);
    json_num(f, "dino_global_crops_loss", r->terms.dino_global_crops_loss);
    json_num(f, "koleo_loss", r->terms.koleo_loss);
    json_num(f, "ibot_loss", r->terms.ibot_loss);
    json_num(f, "total_loss", r->terms.total);
    json_num(f, "lr", r->sched.lr);
    json_num(f, "wd", r->sched.wd);
    json_num(f, "last_layer_lr", r->sched.last_layer_lr);
    json_num(f, "momentum", r->sched.momentum);
    json_num(f, "teacher_temp", r->sched.teacher_temp);
    fprintf(f, ",\"grad_norm\":{");
    for (int32_t i = 0; i < r->n_modules; i++) {
        fprintf(f, "%s\"%s\":", i ? "," : "", m->opt.modules[i].name);
        if (isfinite(r->grad_norm[i]))
            fprintf(f, "%.9g", r->grad_norm[i]);
        else
            fprintf(f, "null");
    }
    fprintf(f, "},\"n_masked\":%" PRId64, r->n_masked);
    double total_s = step_s + load_s;
    json_num(f, "images_per_s", total_s > 0 ? (double)m->batch * m->ranks / total_s : 0.0);
    json_num(f, "step_s", step_s);
    json_num(f, "load_s", load_s);
    fprintf(f, ",\"failed\":%" PRIu64 "}\n", failed);
    if (fflush(f) != 0)
        return lvd_fail_errno("metrics.jsonl");
    return 0;
}

typedef struct run_ctx {
    const trainer_opts *o;
    char state_path[PATH_CAP], ckpt_path[PATH_CAP], metrics_path[PATH_CAP], config_path[PATH_CAP];
    char hash[65];
    manifest *man;
    train_loader *loader;
    train_batch batch;
    train_model *model;
    FILE *metrics;
    int64_t saved_iter;     /* the iteration of the state on disk, -1 if none */
    uint64_t failed0;       /* samples skipped before this invocation (from the state) */
    uint64_t failed;        /* samples skipped so far, every rank's */
    lvd_dist one, *d;     /* the processes (one: a lvd_dist of one rank) */
    int writer;             /* rank 0: writes RUN/'s files */
} run_ctx;

/* Whether any rank has `flag` set: every rank calls it at the same point. -1 if the all-reduce fails. */
static int any_rank(run_ctx *c, int flag)
{
    int64_t any;
    if (dist_max_i64(c->d, flag ? 1 : 0, &any) != 0)
        return -1;
    return any != 0;
}

/* The ranks' verdict on a step that each rank may have failed: 0 if none failed. A rank that did not fail
 * reports the other's failure (whose message is in that rank's own log). */
static int agree(run_ctx *c, int rc, const char *what)
{
    int any = any_rank(c, rc != 0);
    if (any < 0)
        return -1;
    if (any && rc == 0)
        return lvd_fail("%s failed on another rank (its message is above, from that rank)", what);
    return rc;
}

/* Every rank calls it: the ranks' stream positions gathered, their parameters compared, rank 0 writes. */
static int save(run_ctx *c)
{
    train_state_meta *meta = calloc(1, sizeof *meta);
    uint64_t mine[2], *all = malloc((size_t)c->d->ranks * 2 * sizeof *all);
    int rc = meta && all ? 0 : lvd_fail("out of memory");
    rc = agree(c, rc, "saving");
    if (rc == 0) {
        train_loader_tell(c->loader, &mine[0], &mine[1]);
        rc = dist_allgather_u64(c->d, mine, 2, all);
    }
    if (rc == 0)
        rc = dist_check(c->d, train_model_hash(c->model), "parameters, moments or centers");
    if (rc == 0 && c->writer) {
        meta->epoch = mine[0];
        meta->position = mine[1];
        meta->ranks = (uint32_t)c->d->ranks;
        for (int32_t r = 0; r < c->d->ranks; r++) {
            meta->rank_epoch[r] = all[2 * r];
            meta->rank_position[r] = all[2 * r + 1];
        }
        meta->failed = c->failed;
        memcpy(meta->config_sha256, c->hash, sizeof meta->config_sha256);
        /* The teacher first: a crash between the two leaves a state whose checkpoint is newer, never older. */
        if (train_save_teacher(c->model, c->ckpt_path) != 0 || train_state_save(c->model, meta, c->state_path) != 0)
            rc = lvd_fail_ctx("saving iteration %" PRId64, train_model_iteration(c->model));
        rc = agree(c, rc, "saving");
    } else if (rc == 0) {
        rc = agree(c, rc, "saving the state (rank 0)");
    }
    free(meta);
    free(all);
    if (rc != 0)
        return -1;
    c->saved_iter = train_model_iteration(c->model);
    log_debug("saved the state of iteration %" PRId64, c->saved_iter);
    return 0;
}

static int setup(run_ctx *c, trainer_result *res)
{
    const trainer_opts *o = c->o;
    const recipe *r = o->rc;
    const int32_t rank = c->d->rank, ranks = c->d->ranks;
    int prc = (c->writer && atomic_file_mkdirs(o->out) != 0) ||
                      join(c->state_path, o->out, "training_state.safetensors") != 0 ||
                      join(c->ckpt_path, o->out, "teacher_checkpoint.safetensors") != 0 ||
                      join(c->metrics_path, o->out, "metrics.jsonl") != 0 ||
                      join(c->config_path, o->out, "config.yaml") != 0 || train_recipe_hash(r, c->hash) != 0
                  ? -1
                  : 0;
    /* Agreed before the next collective, so that a rank failing here cannot pair with another's all-reduce. */
    if (agree(c, prc, "preparing RUN") != 0)
        return -1;
    int have_state = file_exists(c->state_path);
    if (ranks > 1) { /* every rank must see the same RUN */
        int any = any_rank(c, have_state), all = any_rank(c, !have_state);
        if (any < 0 || all < 0)
            return -1;
        if (any && all)
            return lvd_fail("%s: some ranks see a training state and some do not: RUN must be on a file system "
                            "every rank shares", o->out);
    }
    if (have_state && !o->resume)
        return lvd_fail("%s holds a training state: pass --resume to continue it, or choose another --out",
                        o->out);
    if (manifest_open(&c->man, o->manifest) != 0)
        return lvd_fail_ctx("--manifest %s", o->manifest);
    if (manifest_count(c->man) == 0)
        return lvd_fail("--manifest %s has no samples", o->manifest);

    train_loader_opts lo = {0};
    lo.m = c->man;
    aug_config_default(&lo.aug);
    lo.aug.global_size = r->crops.global_crops_size;
    lo.aug.local_size = r->crops.local_crops_size;
    lo.aug.n_local = r->crops.local_crops_number;
    memcpy(lo.aug.global_scale, r->crops.global_crops_scale, sizeof lo.aug.global_scale);
    memcpy(lo.aug.local_scale, r->crops.local_crops_scale, sizeof lo.aug.local_scale);
    lo.aug.paper_probabilities = r->crops.paper_probabilities;
    lo.seed = (uint64_t)r->train.seed;
    lo.batch = r->train.batch_size_per_gpu;
    lo.rank = (uint32_t)rank;
    lo.ranks = (uint32_t)ranks;
    lo.patch = r->student.patch_size;
    memcpy(lo.mask_ratio, r->ibot.mask_ratio_min_max, sizeof lo.mask_ratio);
    lo.mask_probability = r->ibot.mask_sample_probability;
    lo.threads = r->train.num_workers > 0 ? r->train.num_workers : 1;
    if (train_loader_open(&c->loader, &lo) != 0 || train_batch_alloc(c->loader, &c->batch) != 0)
        return -1;
    if (r->distillation.enabled) {
        recipe tr;
        if (train_distill_recipe(r, &tr) != 0 ||
            train_model_create_distill(r, NULL, &tr, NULL, ranks, &c->model) != 0 ||
            train_load_distill_teacher(c->model, r->distillation.checkpoint_path) != 0)
            return -1;
    } else if (train_model_create(r, ranks, &c->model) != 0) {
        return -1;
    }
    if (ranks > 1) {
        train_reduce red = train_reduce_of(c->d);
        if (train_model_set_reduce(c->model, &red) != 0)
            return -1;
    }

    if (have_state) {
        train_state_meta *meta = calloc(1, sizeof *meta);
        if (!meta)
            return lvd_fail("out of memory");
        int rc = train_state_load(c->model, c->state_path, meta);
        if (rc == 0 && (int32_t)meta->ranks != ranks)
            rc = lvd_fail("%s was written by %" PRIu32 " process%s and this run has %" PRId32 ": resume with the "
                          "same number (mpirun -np %" PRIu32 "), or start a new --out", c->state_path, meta->ranks,
                          meta->ranks == 1 ? "" : "es", ranks, meta->ranks);
        if (rc == 0 && strcmp(meta->config_sha256, c->hash) != 0)
            rc = lvd_fail("%s was written under another configuration than this one (%s holds the run's): "
                          "resume with the same --config and key=value settings, or without any",
                          c->state_path, c->config_path);
        if (rc == 0)
            rc = train_loader_seek(c->loader, meta->rank_epoch[rank], meta->rank_position[rank]);
        if (rc == 0) {
            c->failed0 = c->failed = meta->failed;
            c->saved_iter = meta->iteration;
            if (c->writer)
                rc = trim_metrics(c->metrics_path, meta->iteration);
        }
        if (rc == 0 && o->init_from)
            log_info("%s has a training state: --init-from %s is not used", o->out, o->init_from);
        if (rc == 0)
            log_info("resuming %s at iteration %" PRId64 " (epoch %" PRIu64 ", position %" PRIu64 ")", o->out,
                     meta->iteration, meta->rank_epoch[rank], meta->rank_position[rank]);
        free(meta);
        if (rc != 0)
            return -1;
    } else {
        train_model_init_weights(c->model, (uint64_t)r->train.seed);
        if (o->init_from && r->student.pretrained_weights[0])
            return lvd_fail("--init-from and student.pretrained_weights: give one");
        if (o->init_from) {
            if (train_init_from(c->model, o->init_from) != 0)
                return -1;
            log_info("a new phase from %s: iteration 0, fresh optimizer state", o->init_from);
        } else if (r->student.pretrained_weights[0] && train_load_weights(c->model, r->student.pretrained_weights) != 0)
            return lvd_fail_ctx("student.pretrained_weights");
        if (c->writer && (write_config(r, c->config_path) != 0 || trim_metrics(c->metrics_path, 0) != 0))
            return -1;
    }
    res->start_iter = res->end_iter = train_model_iteration(c->model);
    if (c->writer) {
        c->metrics = fopen(c->metrics_path, "a");
        if (!c->metrics)
            return lvd_fail_errno("%s", c->metrics_path);
    }
    return 0;
}

static int loop(run_ctx *c, trainer_result *res)
{
    const trainer_opts *o = c->o;
    const recipe *r = o->rc;
    int64_t total = (int64_t)r->optim.epochs * r->train.official_epoch_length;
    int64_t end = o->max_iter >= 0 ? o->max_iter : total;
    int64_t it = train_model_iteration(c->model);
    if (it >= end && c->saved_iter < 0) /* --max-iter 0 on a new run: its initial state */
        return save(c);
    if (it >= end) {
        log_info("%s is at iteration %" PRId64 ": nothing to do (the run ends at %" PRId64 ")", o->out, it, end);
        return 0;
    }
    progress p;
    progress_init(&p, "train", (uint64_t)(end - it));
    double t0 = progress_now();
    int rc = 0;
    while (it < end) {
        double a = progress_now();
        int lrc = train_loader_next(c->loader, &c->batch);
        if (lrc != 0)
            lvd_fail_ctx("iteration %" PRId64, it);
        if (agree(c, lrc, "reading the batch") != 0) {
            rc = -1;
            break;
        }
        double b = progress_now();
        train_step_report rep;
        if (train_step(c->model, c->batch.global, c->batch.local, c->batch.masks.masks, &rep) != 0) {
            if (rep.bad_term[0]) {
                char why[512], kept[PATH_CAP + 64];
                snprintf(why, sizeof why, "%s", lvd_errmsg());
                if (c->saved_iter >= 0)
                    snprintf(kept, sizeof kept, "%s keeps the state of iteration %" PRId64, c->state_path,
                             c->saved_iter);
                else
                    snprintf(kept, sizeof kept, "no state was saved yet");
                rc = lvd_fail("stopped: %s; the parameters were not updated, %s", why, kept);
            } else
                rc = lvd_fail_ctx("iteration %" PRId64, it);
            break;
        }
        double e = progress_now();
        /* The ranks agree on a signal (one rank may get it an iteration before another) and sum their
         * skipped samples. */
        int stop = stop_requested;
        double v[2] = {stop ? 1.0 : 0.0, (double)train_loader_failed(c->loader)};
        if (dist_reduce_f64(c->d, v, 2, 0) != 0) {
            rc = -1;
            break;
        }
        stop = v[0] > 0;
        c->failed = c->failed0 + (uint64_t)v[1];
        int wrc = c->writer ? write_metrics(c->metrics, c->model, &rep, c->batch.epoch, e - b, b - a, c->failed) : 0;
        if (agree(c, wrc, "writing metrics.jsonl (rank 0)") != 0) {
            rc = -1;
            break;
        }
        it = train_model_iteration(c->model);
        progress_update(&p, (uint64_t)(it - res->start_iter), c->failed);
        if (it % o->save_every == 0 || it == end || stop) {
            if (save(c) != 0) {
                rc = -1;
                break;
            }
        }
        if (stop) {
            res->interrupted = 1;
            break;
        }
    }
    progress_finish(&p);
    res->seconds = progress_now() - t0;
    res->end_iter = it;
    res->failed = c->failed;
    return rc;
}

int trainer_run(const trainer_opts *o, trainer_result *res)
{
    memset(res, 0, sizeof *res);
    if (o->save_every <= 0)
        return lvd_fail("--save-every must be > 0");
    vit_set_threads(o->threads);
    run_ctx c;
    memset(&c, 0, sizeof c);
    c.o = o;
    c.saved_iter = -1;
    c.d = o->dist;
    if (!c.d) {
        c.one.ranks = 1;
        c.d = &c.one;
    }
    c.writer = c.d->rank == 0;
    stop_requested = 0;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int rc = setup(&c, res);
    rc = agree(&c, rc, "setting up");
    if (rc == 0)
        rc = dist_check(c.d, train_model_hash(c.model), "initial parameters");
    if (rc == 0)
        rc = loop(&c, res);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (c.metrics && fclose(c.metrics) != 0 && rc == 0)
        rc = lvd_fail_errno("%s", c.metrics_path);
    train_model_free(c.model);
    train_batch_free(&c.batch);
    train_loader_close(c.loader);
    manifest_close(c.man);
    return rc;
}
