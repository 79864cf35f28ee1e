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
    fprintf(f, "{\"iteration\":%" PRId64 ",\"epoch\":%" PRIu64, r->iteration, epoch);
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
    json_num(f, "images_per_s", total_s > 0 ? m->batch / total_s : 0.0);
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
} run_ctx;

static int save(run_ctx *c)
{
    train_state_meta meta = {0};
    train_loader_tell(c->loader, &meta.epoch, &meta.position);
    meta.failed = c->failed0 + train_loader_failed(c->loader);
    memcpy(meta.config_sha256, c->hash, sizeof meta.config_sha256);
    /* The teacher first: a crash between the two leaves a state whose checkpoint is newer, never older. */
    if (train_save_teacher(c->model, c->ckpt_path) != 0 || train_state_save(c->model, &meta, c->state_path) != 0)
        return lvd_fail_ctx("saving iteration %" PRId64, train_model_iteration(c->model));
    c->saved_iter = train_model_iteration(c->model);
    log_debug("saved the state of iteration %" PRId64, c->saved_iter);
    return 0;
}

static int setup(run_ctx *c, trainer_result *res)
{
    const trainer_opts *o = c->o;
    const recipe *r = o->rc;
    if (atomic_file_mkdirs(o->out) != 0 || join(c->state_path, o->out, "training_state.safetensors") != 0 ||
        join(c->ckpt_path, o->out, "teacher_checkpoint.safetensors") != 0 ||
        join(c->metrics_path, o->out, "metrics.jsonl") != 0 || join(c->config_path, o->out, "config.yaml") != 0 ||
        train_recipe_hash(r, c->hash) != 0)
        return -1;
    int have_state = file_exists(c->state_path);
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
    lo.rank = 0;
    lo.ranks = 1;
    lo.patch = r->student.patch_size;
    memcpy(lo.mask_ratio, r->ibot.mask_ratio_min_max, sizeof lo.mask_ratio);
    lo.mask_probability = r->ibot.mask_sample_probability;
    lo.threads = r->train.num_workers > 0 ? r->train.num_workers : 1;
    if (train_loader_open(&c->loader, &lo) != 0 || train_batch_alloc(c->loader, &c->batch) != 0)
        return -1;
    if (train_model_create(r, 1, &c->model) != 0)
        return -1;

    if (have_state) {
        train_state_meta meta;
        if (train_state_load(c->model, c->state_path, &meta) != 0)
            return -1;
        if (strcmp(meta.config_sha256, c->hash) != 0)
            return lvd_fail("%s was written under another configuration than this one (%s holds the run's): "
                            "resume with the same --config and key=value settings, or without any",
                            c->state_path, c->config_path);
        if (train_loader_seek(c->loader, meta.epoch, meta.position) != 0)
            return -1;
        c->failed0 = meta.failed;
        c->saved_iter = meta.iteration;
        if (trim_metrics(c->metrics_path, meta.iteration) != 0)
            return -1;
        log_info("resuming %s at iteration %" PRId64 " (epoch %" PRIu64 ", position %" PRIu64 ")", o->out,
                 meta.iteration, meta.epoch, meta.position);
    } else {
        train_model_init_weights(c->model, (uint64_t)r->train.seed);
        if (r->student.pretrained_weights[0] && train_load_weights(c->model, r->student.pretrained_weights) != 0)
            return lvd_fail_ctx("student.pretrained_weights");
        if (write_config(r, c->config_path) != 0 || trim_metrics(c->metrics_path, 0) != 0)
            return -1;
    }
    res->start_iter = res->end_iter = train_model_iteration(c->model);
    c->metrics = fopen(c->metrics_path, "a");
    if (!c->metrics)
        return lvd_fail_errno("%s", c->metrics_path);
    return 0;
}

static int loop(run_ctx *c, trainer_result *res)
{
    const uint64_t failed0 = c->failed0;
    const trainer_opts *o = c->o;
    const recipe *r = o->rc;
    int64_t total = (int64_t)r->optim.epochs * r->train.official_epoch_length;
    int64_t end = o->max_iter > 0 ? o->max_iter : total;
    int64_t it = train_model_iteration(c->model);
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
        if (train_loader_next(c->loader, &c->batch) != 0) {
            rc = lvd_fail_ctx("iteration %" PRId64, it);
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
        uint64_t failed = failed0 + train_loader_failed(c->loader);
        if (write_metrics(c->metrics, c->model, &rep, c->batch.epoch, e - b, b - a, failed) != 0) {
            rc = -1;
            break;
        }
        it = train_model_iteration(c->model);
        progress_update(&p, (uint64_t)(it - res->start_iter), failed);
        if (it % o->save_every == 0 || it == end || stop_requested) {
            if (save(c) != 0) {
                rc = -1;
                break;
            }
        }
        if (stop_requested) {
            res->interrupted = 1;
            break;
        }
    }
    progress_finish(&p);
    res->seconds = progress_now() - t0;
    res->end_iter = it;
    res->failed = failed0 + train_loader_failed(c->loader);
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
    stop_requested = 0;
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    int rc = setup(&c, res);
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
