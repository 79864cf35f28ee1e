/* state.c — the training state and the teacher checkpoint (state.h). */
#include "train/state.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "log.h"
#include "posembed.h"
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
    char nr[16], heads[16], *rp = NULL;
    snprintf(heads, sizeof heads, "%" PRId32, m->vc.heads);
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
    const char *kv[] = {"format", STATE_FORMAT, "heads", heads, "iteration", it, "epoch", ep, "position", pos,
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

/* ---- distillation's teacher -------------------------------------------------------------------------- */

#define PATH_CAP 4096

int train_distill_recipe(const recipe *r, recipe *tr)
{
    const char *ck = r->distillation.checkpoint_path;
    FILE *f = fopen(ck, "rb");
    if (!f)
        return lvd_fail("distillation.checkpoint_path %s: %s (the teacher run's training_state.safetensors)", ck,
                        strerror(errno));
    fclose(f);
    char cfg[PATH_CAP];
    if (r->distillation.full_cfg_path[0]) {
        snprintf(cfg, sizeof cfg, "%s", r->distillation.full_cfg_path);
    } else {
        const char *slash = strrchr(ck, '/');
        int n = slash ? snprintf(cfg, sizeof cfg, "%.*s/config.yaml", (int)(slash - ck), ck)
                      : snprintf(cfg, sizeof cfg, "config.yaml");
        if (n < 0 || n >= (int)sizeof cfg)
            return lvd_fail("distillation.checkpoint_path %s: path too long", ck);
    }
    if (!(f = fopen(cfg, "rb")))
        return lvd_fail("distillation: the teacher's configuration %s: %s (set distillation.full_cfg_path to the "
                        "teacher run's config.yaml)", cfg, strerror(errno));
    fclose(f);
    recipe_defaults(tr);
    if (recipe_load_file(tr, cfg) != 0 || recipe_finish(tr, 1) != 0)
        return lvd_fail_ctx("distillation: the teacher's configuration");
    return 0;
}

/* Loads every tensor of head h from "<prefix><module>.<name>" of f. -1 naming the first missing one. */
static int load_head(const st_file *f, const char *path, const char *prefix, const char *module, dino_head *h)
{
    int n = dino_head_ntensors(&h->cfg);
    for (int i = 0; i < n; i++) {
        dino_head_tensor ht;
        char name[NAME_CAP];
        dino_head_tensor_at(&h->cfg, i, &ht);
        snprintf(name, sizeof name, "%s%s.%s", prefix, module, ht.name);
        train_shape sh = {.ndim = ht.ndim, .shape = {ht.shape[0], ht.shape[1]}};
        if (load_tensor(f, path, name, &sh, ht.count, h->params + ht.offset) != 0)
            return -1;
    }
    return 0;
}

int train_load_distill_teacher(train_model *m, const char *path)
{
    if (!m->distill)
        return lvd_fail("internal: not a distillation model");
    st_file *f;
    if (st_open(path, &f) != 0)
        return lvd_fail_ctx("distillation.checkpoint_path");
    int rc = -1;
    /* A training state holds the teacher run's EMA teacher under "teacher."; other files name modules bare. */
    const char *prefix = st_find(f, "teacher.backbone.cls_token") ? "teacher." : "";
    char name[NAME_CAP], probe[NAME_CAP];
    snprintf(probe, sizeof probe, "%sdino_head.%s", prefix,
             m->dt_dino.cfg.nlayers == 1 ? "mlp.weight" : "mlp.0.weight");
    if (!st_find(f, probe)) {
        lvd_fail("distillation.checkpoint_path %s has no DINO head (no %s): distillation needs the teacher's heads, "
                 "which its training_state.safetensors holds (teacher_checkpoint.safetensors is the backbone alone)",
                 path, probe);
        goto out;
    }
    for (size_t i = 0; i < m->dt->n_tensors; i++) {
        const vit_tensor *t = &m->dt->tensors[i];
        train_shape sh = {.ndim = t->ndim};
        memcpy(sh.shape, t->shape, sizeof sh.shape);
        snprintf(name, sizeof name, "%sbackbone.%s", prefix, t->name);
        if (load_tensor(f, path, name, &sh, t->count, m->dt->param_mem + t->offset) != 0) {
            lvd_fail_ctx("distillation teacher (architecture of distillation.full_cfg_path or the config.yaml "
                         "beside the checkpoint)");
            goto out;
        }
    }
    if (load_head(f, path, prefix, "dino_head", &m->dt_dino) != 0 ||
        (m->dt_separate && load_head(f, path, prefix, "ibot_head", &m->dt_ibot) != 0)) {
        lvd_fail_ctx("distillation teacher's heads");
        goto out;
    }
    log_info("distillation: the frozen teacher (D %d, depth %d, %d heads) from %s", m->dt->cfg.dim,
             m->dt->cfg.depth, m->dt->cfg.heads, path);
    rc = 0;
out:
    st_close(f);
    return rc;
}

/* ---- a new phase from another run's weights ---------------------------------------------------------- */

/* The backbone's prefix in f ("student.backbone.", "backbone." or ""), or NULL if f has no cls_token. */
static const char *backbone_prefix(const st_file *f, int is_state)
{
    static const char *const cands[3] = {"student.backbone.", "backbone.", ""};
    for (int i = is_state ? 0 : 1; i < 3; i++) {
        char name[NAME_CAP];
        snprintf(name, sizeof name, "%scls_token", cands[i]);
        if (st_find(f, name))
            return cands[i];
    }
    return NULL;
}

/* Checks that f's backbone (tensors under prefix) has m's width, depth, heads and patch. */
static int check_arch(const st_file *f, const char *path, const char *prefix, const train_model *m)
{
    char name[NAME_CAP];
    snprintf(name, sizeof name, "%scls_token", prefix);
    int64_t dim = st_numel(st_find(f, name)), patch = 0;
    snprintf(name, sizeof name, "%spatch_embed.proj.weight", prefix);
    const st_tensor *pw = st_find(f, name);
    if (pw && pw->ndim == 4)
        patch = pw->shape[2];
    int32_t depth = 0;
    for (;; depth++) {
        snprintf(name, sizeof name, "%sblocks.%d.norm1.weight", prefix, depth);
        if (!st_find(f, name))
            break;
    }
    /* No tensor shows the heads: lvd's files say them in the metadata. A file that does not (an official
     * checkpoint, a state written before the key existed) is taken to have the run's heads: no shape can
     * contradict it, and a D / 64 guess is wrong for the small archs (vit_pico has 4 heads of 16). */
    const vit_config *c = &m->vc;
    const char *hs = st_meta(f, "heads");
    int64_t heads = hs && *hs ? strtoll(hs, NULL, 10) : c->heads;
    if (dim != c->dim || depth != c->depth || heads != c->heads || patch != c->patch)
        return lvd_fail("--init-from %s: a ViT of width %lld, depth %d, %lld heads, patch %lld; this run's student "
                        "(student.arch %s, student.patch_size %d) has width %d, depth %d, %d heads, patch %d: a new "
                        "phase keeps the architecture", path, (long long)dim, depth, (long long)heads,
                        (long long)patch, m->rc.student.arch, m->rc.student.patch_size, c->dim, c->depth, c->heads,
                        c->patch);
    return 0;
}

/* Loads backbone tensor i of m from `name`: pos_embed of another grid is resampled (CLS row kept). */
static int load_backbone(const st_file *f, const char *path, const char *name, const train_model *m, size_t i,
                         float *dst)
{
    const optim_tensor *t = &m->opt.tensors[i];
    const st_tensor *st = st_find(f, name);
    if (!st || strcmp(t->name, "pos_embed") != 0 || st_numel(st) == (int64_t)t->count)
        return load_tensor(f, path, name, train_model_shape(m, i), t->count, dst);
    const int64_t d = m->vc.dim, n0 = st->ndim == 3 ? st->shape[1] - 1 : -1;
    int32_t m0 = (int32_t)llround(sqrt((double)(n0 > 0 ? n0 : 0)));
    if (st->dtype != ST_F32 || st->ndim != 3 || st->shape[0] != 1 || st->shape[2] != d || (int64_t)m0 * m0 != n0)
        return lvd_fail("%s: %s is not a (1, 1 + M * M, %lld) F32 positional embedding", path, name, (long long)d);
    float *src = malloc((size_t)st_numel(st) * sizeof(float));
    if (!src)
        return lvd_fail("out of memory");
    int rc = st_to_f32(st, src);
    if (rc == 0) {
        memcpy(dst, src, (size_t)d * sizeof(float));
        rc = posembed_forward(src + d, m0, (int32_t)d, m->vc.pos_grid, m->vc.pos_grid, m->vc.pos_mode, dst + d);
    }
    free(src);
    if (rc == 0)
        log_info("%s: pos_embed resampled from %dx%d to %dx%d (bicubic)", name, m0, m0, m->vc.pos_grid,
                 m->vc.pos_grid);
    return rc;
}

int train_init_from(train_model *m, const char *path)
{
    st_file *f;
    if (st_open(path, &f) != 0)
        return lvd_fail_ctx("--init-from");
    int rc = -1;
    const char *fmt = st_meta(f, "format");
    const int is_state = fmt && strcmp(fmt, STATE_FORMAT) == 0;
    const char *bprefix = backbone_prefix(f, is_state);
    if (!bprefix) {
        lvd_fail("--init-from %s: no cls_token: not a training state or ViT checkpoint", path);
        goto out;
    }
    if (check_arch(f, path, bprefix, m) != 0)
        goto out;
    char name[NAME_CAP];
    enum { MAX_MODULES = 8 }; /* backbone, dino_head, ibot_head today */
    int32_t found[MAX_MODULES] = {0};
    if (m->opt.n_modules > MAX_MODULES) {
        lvd_fail("internal: %d optimizer modules, --init-from handles %d", m->opt.n_modules, MAX_MODULES);
        goto out;
    }
    for (size_t i = 0; i < m->opt.n_tensors; i++) { /* which heads a checkpoint has */
        const optim_tensor *t = &m->opt.tensors[i];
        snprintf(name, sizeof name, "%s%s.%s", is_state ? "student." : "", m->opt.modules[t->module].name, t->name);
        found[t->module] += st_find(f, name) != NULL;
    }
    for (int who = 0; who < (is_state ? 2 : 1); who++)
        for (size_t i = 0; i < m->opt.n_tensors; i++) {
            const optim_tensor *t = &m->opt.tensors[i];
            const char *mod = m->opt.modules[t->module].name;
            const int backbone = strcmp(mod, "backbone") == 0;
            if (!is_state && !backbone && found[t->module] == 0)
                continue; /* a checkpoint without this head: it keeps its initialisation */
            if (is_state)
                snprintf(name, sizeof name, "%s.%s.%s", who ? "teacher" : "student", mod, t->name);
            else if (backbone)
                snprintf(name, sizeof name, "%s%s", bprefix, t->name);
            else
                snprintf(name, sizeof name, "%s.%s", mod, t->name);
            float *dst = who ? t->teacher : t->param;
            if ((backbone ? load_backbone(f, path, name, m, i, dst)
                          : load_tensor(f, path, name, train_model_shape(m, i), t->count, dst)) != 0) {
                lvd_fail_ctx("--init-from");
                goto out;
            }
        }
    if (!is_state) {
        for (int32_t k = 1; k < m->opt.n_modules; k++)
            if (found[k] == 0)
                log_info("%s has no %s: it keeps its initialisation", path, m->opt.modules[k].name);
        train_model_sync_teacher(m);
    } else { /* the centers, when the heads kept their prototypes (they did, or loading them failed above) */
        const st_tensor *c = st_find(f, "dino_loss.center");
        if (c && st_numel(c) == m->loss.cfg.dino_k && st_to_f32(c, m->loss.dino_center) != 0)
            goto out;
        c = st_find(f, "ibot_patch_loss.center");
        if (c && st_numel(c) == m->loss.cfg.ibot_k && st_to_f32(c, m->loss.ibot_center) != 0)
            goto out;
    }
    m->opt.steps = 0;
    rc = 0;
out:
    st_close(f);
    return rc;
}
