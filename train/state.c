/* state.c — the training state and the teacher checkpoint (state.h). */
#include "train/state.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "safetensors.h"
#include "sha256.h"
#include "vit_io.h"

#define STATE_FORMAT "lvd-train-state"

/* The four arrays of an optimizer tensor, under these prefixes. */
enum { ARR_STUDENT, ARR_TEACHER, ARR_M, ARR_V, N_ARR };
static const char *const arr_prefix[N_ARR] = {"student", "teacher", "adamw.exp_avg", "adamw.exp_avg_sq"};

static float *arr_ptr(const optim_tensor *t, int a)
{
    switch (a) {
    case ARR_STUDENT: return t->param;
    case ARR_TEACHER: return t->teacher;
    case ARR_M: return t->m;
    default: return t->v;
    }
}

static int tensor_name(char *buf, size_t cap, const train_model *m, const optim_tensor *t, int a)
{
    int n = snprintf(buf, cap, "%s.%s.%s", arr_prefix[a], m->opt.modules[t->module].name, t->name);
    return n > 0 && (size_t)n < cap ? 0 : lvd_fail("tensor name too long: %s.%s", arr_prefix[a], t->name);
}

int train_recipe_hash(const recipe *r, char hex[65])
{
    size_t cap = 1 << 16;
    char *buf = malloc(cap);
    if (!buf)
        return lvd_fail("out of memory");
    int n = recipe_dump(r, buf, cap);
    if (n < 0) {
        free(buf);
        return lvd_fail("the recipe's dump exceeds %zu bytes", cap);
    }
    sha256_hex(buf, (size_t)n, hex);
    free(buf);
    return 0;
}

#define NAME_CAP (OPTIM_NAME_MAX * 2 + 32)

int train_state_save(const train_model *m, const train_state_meta *meta, const char *path)
{
    const size_t nt = m->opt.n_tensors, n = nt * N_ARR + 2;
    st_write_tensor *w = calloc(n, sizeof *w);
    char *names = calloc(n, NAME_CAP);
    if (!w || !names) {
        free(w);
        free(names);
        return lvd_fail("out of memory");
    }
    int rc = -1;
    size_t k = 0;
    for (int a = 0; a < N_ARR; a++)
        for (size_t i = 0; i < nt; i++, k++) {
            const optim_tensor *t = &m->opt.tensors[i];
            const train_shape *s = train_model_shape(m, i);
            if (tensor_name(names + k * NAME_CAP, NAME_CAP, m, t, a) != 0)
                goto out;
            w[k].name = names + k * NAME_CAP;
            w[k].ndim = s->ndim;
            for (int32_t j = 0; j < s->ndim; j++)
                w[k].shape[j] = s->shape[j];
            w[k].data = arr_ptr(t, a);
        }
    w[k] = (st_write_tensor){.name = "dino_loss.center", .ndim = 2, .shape = {1, m->loss.cfg.dino_k},
                             .data = m->loss.dino_center};
    k++;
    w[k] = (st_write_tensor){.name = "ibot_patch_loss.center", .ndim = 2, .shape = {1, m->loss.cfg.ibot_k},
                             .data = m->loss.ibot_center};
    k++;
    char it[32], ep[32], pos[32], failed[32];
    snprintf(it, sizeof it, "%" PRId64, m->opt.steps);
    snprintf(ep, sizeof ep, "%" PRIu64, meta->epoch);
    snprintf(pos, sizeof pos, "%" PRIu64, meta->position);
    snprintf(failed, sizeof failed, "%" PRIu64, meta->failed);
    uint32_t ranks = meta->ranks ? meta->ranks : 1;
    char nr[16], *rp = NULL;
    snprintf(nr, sizeof nr, "%" PRIu32, ranks);
    if (ranks > TRAIN_STATE_MAX_RANKS) {
        rc = lvd_fail("%s: %" PRIu32 " ranks, at most %d", path, ranks, TRAIN_STATE_MAX_RANKS);
        goto out;
    }
    if (ranks > 1) {
        size_t cap = (size_t)ranks * 44 + 1, len = 0;
        if (!(rp = malloc(cap))) {
            rc = lvd_fail("out of memory");
            goto out;
        }
        rp[0] = 0;
        for (uint32_t r = 0; r < ranks; r++)
            len += (size_t)snprintf(rp + len, cap - len, "%s%" PRIu64 ":%" PRIu64, r ? "," : "", meta->rank_epoch[r],
                                    meta->rank_position[r]);
    }
    const char *kv[] = {"format", STATE_FORMAT, "iteration", it, "epoch", ep, "position", pos,
                        "failed", failed, "config_sha256", meta->config_sha256, "ranks", nr,
                        "rank_positions", rp ? rp : ""};
    rc = st_write(path, w, k, kv, sizeof kv / sizeof kv[0] / 2 - (rp ? 0 : 1));
    free(rp);
out:
    free(w);
    free(names);
    return rc;
}

static int meta_u64(const st_file *f, const char *path, const char *key, uint64_t *out)
{
    const char *v = st_meta(f, key);
    char *end;
    if (!v || !*v)
        return lvd_fail("%s: no '%s' in the metadata", path, key);
    unsigned long long x = strtoull(v, &end, 10);
    if (*end)
        return lvd_fail("%s: metadata '%s' is '%s', not a count", path, key, v);
    *out = x;
    return 0;
}

/* Copies the F32 tensor `name` of exactly count floats into dst. */
static int load_tensor(const st_file *f, const char *path, const char *name, const train_shape *s, size_t count,
                       float *dst)
{
    const st_tensor *t = st_find(f, name);
    if (!t)
        return lvd_fail("%s: tensor %s is missing (a state of another configuration?)", path, name);
    int ok = t->dtype == ST_F32 && st_numel(t) == (int64_t)count && (!s || t->ndim == s->ndim);
    for (int32_t j = 0; ok && s && j < s->ndim; j++)
        ok = t->shape[j] == s->shape[j];
    if (!ok)
        return lvd_fail("%s: tensor %s has dtype %s and %lld values, not the model's F32 %zu", path, name,
                        t->dtype_name, (long long)st_numel(t), count);
    return st_to_f32(t, dst);
}

int train_state_load(train_model *m, const char *path, train_state_meta *meta)
{
    st_file *f;
    if (st_open(path, &f) != 0)
        return -1;
    int rc = -1;
    const char *fmt = st_meta(f, "format");
    if (!fmt || strcmp(fmt, STATE_FORMAT) != 0) {
        lvd_fail("%s: not an lvd-train state (format '%s')", path, fmt ? fmt : "");
        goto out;
    }
    uint64_t it = 0;
    if (meta_u64(f, path, "iteration", &it) != 0 || meta_u64(f, path, "epoch", &meta->epoch) != 0 ||
        meta_u64(f, path, "position", &meta->position) != 0 || meta_u64(f, path, "failed", &meta->failed) != 0)
        goto out;
    const char *h = st_meta(f, "config_sha256");
    snprintf(meta->config_sha256, sizeof meta->config_sha256, "%s", h ? h : "");
    /* ranks: absent in a one-process state of before data parallelism */
    uint64_t nr = 1;
    if (st_meta(f, "ranks") && meta_u64(f, path, "ranks", &nr) != 0)
        goto out;
    if (nr < 1 || nr > TRAIN_STATE_MAX_RANKS) {
        lvd_fail("%s: metadata 'ranks' is %llu, not 1 to %d", path, (unsigned long long)nr, TRAIN_STATE_MAX_RANKS);
        goto out;
    }
    meta->ranks = (uint32_t)nr;
    meta->rank_epoch[0] = meta->epoch;
    meta->rank_position[0] = meta->position;
    if (nr > 1) {
        const char *p = st_meta(f, "rank_positions");
        for (uint64_t r = 0; r < nr; r++) {
            char *end;
            if (!p || (r > 0 && *p++ != ',')) {
                p = NULL;
                break;
            }
            meta->rank_epoch[r] = strtoull(p, &end, 10);
            if (end == p || *end != ':') {
                p = NULL;
                break;
            }
            p = end + 1;
            meta->rank_position[r] = strtoull(p, &end, 10);
            p = end == p ? NULL : end;
            if (!p)
                break;
        }
        if (!p || *p) {
            lvd_fail("%s: metadata 'rank_positions' is not %llu epoch:position pairs", path, (unsigned long long)nr);
            goto out;
        }
    }
    char name[NAME_CAP];
    for (int a = 0; a < N_ARR; a++)
        for (size_t i = 0; i < m->opt.n_tensors; i++) {
            const optim_tensor *t = &m->opt.tensors[i];
            if (tensor_name(name, sizeof name, m, t, a) != 0 ||
                load_tensor(f, path, name, train_model_shape(m, i), t->count, arr_ptr(t, a)) != 0)
                goto out;
        }
    if (load_tensor(f, path, "dino_loss.center", NULL, (size_t)m->loss.cfg.dino_k, m->loss.dino_center) != 0 ||
        load_tensor(f, path, "ibot_patch_loss.center", NULL, (size_t)m->loss.cfg.ibot_k, m->loss.ibot_center) != 0)
        goto out;
    size_t expected = m->opt.n_tensors * N_ARR + 2;
    if (st_count(f) != expected) {
        lvd_fail("%s: %zu tensors, the model's state has %zu", path, st_count(f), expected);
        goto out;
    }
    m->opt.steps = (int64_t)it;
    meta->iteration = (int64_t)it;
    rc = 0;
out:
    st_close(f);
    return rc;
}

int train_load_weights(train_model *m, const char *path)
{
    st_file *f;
    if (st_open(path, &f) != 0)
        return -1;
    int rc = -1;
    int32_t found[8] = {0}, count[8] = {0};
    char name[NAME_CAP];
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < m->opt.n_tensors; i++) {
            const optim_tensor *t = &m->opt.tensors[i];
            const char *mod = m->opt.modules[t->module].name;
            snprintf(name, sizeof name, "%s.%s", mod, t->name);
            const st_tensor *st = st_find(f, name);
            if (!st && strcmp(mod, "backbone") == 0) {
                snprintf(name, sizeof name, "%s", t->name);
                st = st_find(f, name);
            }
            if (pass == 0) { /* count what is there, per module */
                count[t->module]++;
                found[t->module] += st != NULL;
                continue;
            }
            if (!st) {
                if (strcmp(mod, "backbone") == 0 || found[t->module] > 0) {
                    lvd_fail("%s: no tensor %s.%s (%d of the module's %d are there)", path, mod, t->name,
                             found[t->module], count[t->module]);
                    goto out;
                }
                continue;
            }
            if (load_tensor(f, path, name, train_model_shape(m, i), t->count, t->param) != 0)
                goto out;
        }
    for (int32_t k = 1; k < m->opt.n_modules; k++)
        if (found[k] == 0)
            log_info("%s has no %s: it keeps its initialisation", path, m->opt.modules[k].name);
    train_model_sync_teacher(m);
    rc = 0;
out:
    st_close(f);
    return rc;
}

int train_save_teacher(const train_model *m, const char *path)
{
    return vit_save(m->teacher, path, 0);
}
