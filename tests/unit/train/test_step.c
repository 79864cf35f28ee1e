/* test_step.c — whole DINOv2 training iterations (train/step.c) against PyTorch: tests/unit/train/step_ref.py runs
 * the official definitions (DinoVisionTransformer, DINOHead, the losses and ssl_meta_arch.forward_backward,
 * per-module clip_grad_norm_, apply_optim_scheduler + torch.optim.AdamW over the layer-decayed parameter groups,
 * update_teacher, build_schedulers) in float64 on the same weights, crops and masks. Per case (a shared head with
 * softmax centering and active clipping; registers, SwiGLU, no LayerScale and a separate iBOT head with
 * Sinkhorn-Knopp; distillation from a frozen teacher of another width and depth with its own separate iBOT head,
 * the student unmasked, iBOT on every patch token, the EMA of the student kept): the schedules' values and every
 * loss term of each of 3 iterations to 1e-5 relative, every parameter gradient of the first to 1e-3 (max-norm
 * ||a - b||_max / ||b||_max, before clipping), the gradient norms per module, and the student's and teacher's
 * parameters and the centers after the 3 iterations to 1e-4.
 * Then, on the same case: an exact resume (state saved after iteration 1 and loaded into a new model gives
 * iteration 2 bit for bit) and a non-finite loss (the step refuses, names the term and leaves the parameters
 * and moments untouched). The distillation case also checks that the frozen teacher's parameters never change and
 * that every patch token of the global crops is an iBOT token. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"
#include "relerr.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "safetensors.h"
#include "train/recipe.h"
#include "train/state.h"
#include "train/step.h"

#define TOL_TERM 1e-5
#define TOL_GRAD 1e-3
#define TOL_PARAM 1e-4
#define N_STEPS 3

static char g_script[4096];
static char g_dir[256];
static char g_gen[512];

static void check(const char *what, double e, double tol)
{
    if (!(e <= tol))
        fail_msg("%s: relative error %.3g > %.0e", what, e, tol);
}

/* ---- the case's files -------------------------------------------------------------------------------- */

static cJSON *load_json(const char *path)
{
    size_t len;
    uint8_t *text = scratch_slurp(path, &len);
    cJSON *j = cJSON_ParseWithLength((const char *)text, len);
    free(text);
    if (!j)
        fail_msg("%s: not JSON", path);
    return j;
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v)
        fail_msg("config.json: no '%s'", key);
    if (cJSON_IsBool(v))
        return cJSON_IsTrue(v) ? 1.0 : 0.0;
    if (!cJSON_IsNumber(v))
        fail_msg("config.json: '%s' is not a number", key);
    return v->valuedouble;
}

static const cJSON *obj(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsObject(v))
        fail_msg("config.json: no object '%s'", key);
    return v;
}

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v))
        fail_msg("config.json: no string '%s'", key);
    return v->valuestring;
}

static void set(recipe *r, const char *fmt, ...) LVD_PRINTF(2, 3);
static void set(recipe *r, const char *fmt, ...)
{
    char a[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a, sizeof a, fmt, ap);
    va_end(ap);
    if (recipe_set(r, a, "test") != 0)
        fail_msg("%s: %s", a, lvd_errmsg());
}

static void vit_of(const cJSON *v, vit_config *vc)
{
    memset(vc, 0, sizeof *vc);
    vc->patch = (int32_t)num(v, "patch");
    vc->pos_grid = (int32_t)num(v, "pos_grid");
    vc->dim = (int32_t)num(v, "dim");
    vc->depth = (int32_t)num(v, "depth");
    vc->heads = (int32_t)num(v, "heads");
    vc->ffn = strcmp(str(v, "ffn"), "swiglu") == 0 ? VIT_FFN_SWIGLU : VIT_FFN_MLP;
    vc->ffn_hidden = (int32_t)num(v, "ffn_hidden");
    vc->n_reg = (int32_t)num(v, "n_reg");
    vc->pos_mode = strcmp(str(v, "pos_mode"), "size_aa") == 0 ? VIT_POS_SIZE_AA : VIT_POS_OFFSET;
    vc->layerscale = num(v, "layerscale") > 0.0;
}

/* The heads' keys of a {dino, ibot} object. */
static void heads_of(recipe *r, const cJSON *dn, const cJSON *ib)
{
    set(r, "dino.head_n_prototypes=%d", (int)num(dn, "k"));
    set(r, "dino.head_bottleneck_dim=%d", (int)num(dn, "bottleneck"));
    set(r, "dino.head_hidden_dim=%d", (int)num(dn, "hidden"));
    set(r, "dino.head_nlayers=%d", (int)num(dn, "nlayers"));
    set(r, "ibot.separate_head=%s", num(ib, "separate") != 0.0 ? "true" : "false");
    set(r, "ibot.head_n_prototypes=%d", (int)num(ib, "k"));
    set(r, "ibot.head_bottleneck_dim=%d", (int)num(ib, "bottleneck"));
    set(r, "ibot.head_hidden_dim=%d", (int)num(ib, "hidden"));
    set(r, "ibot.head_nlayers=%d", (int)num(ib, "nlayers"));
}

/* The recipe and backbone of a case's config.json, through the recipe's own keys; for a distillation case also the
 * frozen teacher's recipe (*tr, its heads) and backbone (*tvc), and *distill = 1. */
static void case_config(const char *dir, recipe *r, vit_config *vc, recipe *tr, vit_config *tvc, int *distill)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/config.json", dir);
    cJSON *j = load_json(path);
    const cJSON *v = obj(j, "vit"), *dn = obj(j, "dino"), *ib = obj(j, "ibot"), *sc = obj(j, "sched"),
                *op = obj(j, "optim");
    vit_of(v, vc);
    double ls = num(v, "layerscale");
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(j, "distill");
    *distill = ds != NULL;
    if (ds) {
        vit_of(obj(ds, "vit"), tvc);
        recipe_defaults(tr);
        set(tr, "student.patch_size=%d", tvc->patch);
        heads_of(tr, obj(ds, "dino"), obj(ds, "ibot"));
    }

    recipe_defaults(r);
    set(r, "train.batch_size_per_gpu=%d", (int)num(j, "batch"));
    set(r, "crops.local_crops_number=%d", (int)num(j, "n_local"));
    set(r, "crops.global_crops_size=%d", (int)num(j, "global_size"));
    set(r, "crops.local_crops_size=%d", (int)num(j, "local_size"));
    set(r, "student.patch_size=%d", vc->patch);
    set(r, "student.layerscale=%.17g", ls);
    set(r, "student.num_register_tokens=%d", vc->n_reg);
    set(r, "student.drop_path_rate=0");
    heads_of(r, dn, ib);
    set(r, "dino.loss_weight=%.17g", num(dn, "loss_weight"));
    set(r, "dino.koleo_loss_weight=%.17g", num(dn, "koleo_loss_weight"));
    if (ds) {
        set(r, "distillation.enabled=true");
        set(r, "distillation.checkpoint_path=%s/distill_teacher.safetensors", dir);
    }
    set(r, "ibot.loss_weight=%.17g", num(ib, "loss_weight"));
    set(r, "train.centering=%s", str(j, "centering"));
    set(r, "train.OFFICIAL_EPOCH_LENGTH=%d", (int)num(sc, "OFFICIAL_EPOCH_LENGTH"));
    set(r, "optim.epochs=%d", (int)num(sc, "epochs"));
    set(r, "optim.base_lr=%.17g", num(sc, "base_lr"));
    set(r, "optim.min_lr=%.17g", num(sc, "min_lr"));
    set(r, "optim.warmup_epochs=%d", (int)num(sc, "warmup_epochs"));
    set(r, "optim.weight_decay=%.17g", num(sc, "weight_decay"));
    set(r, "optim.weight_decay_end=%.17g", num(sc, "weight_decay_end"));
    set(r, "optim.freeze_last_layer_epochs=%d", (int)num(sc, "freeze_last_layer_epochs"));
    set(r, "teacher.momentum_teacher=%.17g", num(sc, "momentum_teacher"));
    set(r, "teacher.final_momentum_teacher=%.17g", num(sc, "final_momentum_teacher"));
    set(r, "teacher.warmup_teacher_temp=%.17g", num(sc, "warmup_teacher_temp"));
    set(r, "teacher.teacher_temp=%.17g", num(sc, "teacher_temp"));
    set(r, "teacher.warmup_teacher_temp_epochs=%d", (int)num(sc, "warmup_teacher_temp_epochs"));
    set(r, "optim.adamw_beta1=%.17g", num(op, "beta1"));
    set(r, "optim.adamw_beta2=%.17g", num(op, "beta2"));
    set(r, "optim.layerwise_decay=%.17g", num(op, "layerwise_decay"));
    set(r, "optim.patch_embed_lr_mult=%.17g", num(op, "patch_embed_lr_mult"));
    set(r, "optim.clip_grad=%.17g", num(op, "clip_grad"));
    if (num(j, "batch") != num(sc, "batch_size"))
        fail_msg("config.json: batch and sched.batch_size differ");
    if (fabs(num(op, "eps") - 1e-8) > 0)
        fail_msg("config.json: AdamW eps %g, the trainer's is torch's 1e-8", num(op, "eps"));
    if (recipe_finish(r, 1) != 0)
        fail_msg("recipe_finish: %s", lvd_errmsg());
    if (fabs(r->optim.lr - num(sc, "lr")) > 1e-12 * num(sc, "lr"))
        fail_msg("lr %.17g from the recipe, the reference's %.17g", r->optim.lr, num(sc, "lr"));
    cJSON_Delete(j);
}

/* One step's crops and masks. */
typedef struct step_input {
    float *global, *local;
    uint8_t *masks;
} step_input;

static float *tensor_f32(const st_file *f, const char *path, const char *name, size_t want)
{
    const st_tensor *t = st_find(f, name);
    if (!t)
        fail_msg("%s: no %s", path, name);
    if ((size_t)st_numel(t) != want)
        fail_msg("%s: %s has %lld values, expected %zu", path, name, (long long)st_numel(t), want);
    float *p = malloc(want * sizeof(float));
    assert_non_null(p);
    assert_int_equal(st_to_f32(t, p), 0);
    return p;
}

static void load_step(const char *dir, int k, const train_model *m, step_input *s)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/step%d.safetensors", dir, k);
    st_file *f;
    if (st_open(path, &f) != 0)
        fail_msg("%s", lvd_errmsg());
    int64_t b2 = 2 * (int64_t)m->batch, g = m->rc.crops.global_crops_size, l = m->rc.crops.local_crops_size;
    s->global = tensor_f32(f, path, "global", (size_t)(b2 * 3 * g * g));
    s->local = tensor_f32(f, path, "local", (size_t)(m->n_local * m->batch * 3 * l * l));
    float *mk = tensor_f32(f, path, "masks", (size_t)(b2 * m->n_tokens));
    s->masks = malloc((size_t)(b2 * m->n_tokens));
    assert_non_null(s->masks);
    for (int64_t i = 0; i < b2 * m->n_tokens; i++)
        s->masks[i] = mk[i] != 0.0f;
    free(mk);
    st_close(f);
}

static void free_step(step_input *s)
{
    free(s->global);
    free(s->local);
    free(s->masks);
}

/* "name value" lines of a text file: the value of name. */
static double text_value(const char *path, const char *name)
{
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    char key[128];
    double v;
    while (fscanf(f, "%127s %lf", key, &v) == 2)
        if (strcmp(key, name) == 0) {
            fclose(f);
            return v;
        }
    fclose(f);
    fail_msg("%s: no %s", path, name);
    return 0.0;
}

static void check_step(const char *dir, int k, const train_step_report *rep)
{
    char path[1024], what[1400];
    snprintf(path, sizeof path, "%s/step%d_sched.txt", dir, k);
    FILE *f = fopen(path, "r");
    if (!f)
        fail_msg("cannot open %s", path);
    double s[5];
    if (fscanf(f, "%lf %lf %lf %lf %lf", &s[0], &s[1], &s[2], &s[3], &s[4]) != 5)
        fail_msg("%s: expected 5 values", path);
    fclose(f);
    const double got[5] = {rep->sched.lr, rep->sched.wd, rep->sched.momentum, rep->sched.teacher_temp,
                           rep->sched.last_layer_lr};
    static const char *sn[5] = {"lr", "wd", "momentum", "teacher_temp", "last_layer_lr"};
    for (int i = 0; i < 5; i++) {
        snprintf(what, sizeof what, "%s step %d %s", dir, k, sn[i]);
        check(what, rel1(got[i], s[i]), 1e-12);
    }
    snprintf(path, sizeof path, "%s/step%d_terms.txt", dir, k);
    const double terms[5] = {rep->terms.dino_local_crops_loss, rep->terms.dino_global_crops_loss,
                             rep->terms.koleo_loss, rep->terms.ibot_loss, rep->terms.total};
    static const char *tn[5] = {"dino_local_crops_loss", "dino_global_crops_loss", "koleo_loss", "ibot_loss",
                                "total"};
    for (int i = 0; i < 5; i++) {
        double want = text_value(path, tn[i]);
        snprintf(what, sizeof what, "%s step %d %s (%.9g, reference %.9g)", dir, k, tn[i], terms[i], want);
        check(what, rel1(terms[i], want), TOL_TERM);
        printf("# %s step %d %-24s %.9g  rel err %.2e\n", strrchr(dir, '/') + 1, k, tn[i], terms[i],
               rel1(terms[i], want));
    }
}

static void check_norms(const char *dir, int k, const train_model *m, const train_step_report *rep)
{
    char path[1024], what[1400];
    snprintf(path, sizeof path, "%s/step%d_norms.txt", dir, k);
    for (int32_t i = 0; i < rep->n_modules; i++) {
        double want = text_value(path, m->opt.modules[i].name);
        snprintf(what, sizeof what, "%s step %d grad norm %s (%.9g, reference %.9g)", dir, k,
                 m->opt.modules[i].name, rep->grad_norm[i], want);
        check(what, rel1(rep->grad_norm[i], want), TOL_GRAD);
    }
}

/* The gradients before clipping: the clipped ones times (norm + 1e-6) / clip in clipped modules. */
static void check_grads(const char *dir, const train_model *m, const train_step_report *rep)
{
    char path[1024], name[256], what[1400];
    snprintf(path, sizeof path, "%s/step0_grads.safetensors", dir);
    st_file *f;
    if (st_open(path, &f) != 0)
        fail_msg("%s", lvd_errmsg());
    double worst = 0.0;
    int clipped = 0;
    for (size_t i = 0; i < m->opt.n_tensors; i++) {
        const optim_tensor *t = &m->opt.tensors[i];
        double norm = rep->grad_norm[t->module], clip = m->rc.optim.clip_grad;
        double unscale = clip > 0.0 && clip / (norm + 1e-6) < 1.0 ? (norm + 1e-6) / clip : 1.0;
        clipped |= unscale != 1.0;
        snprintf(name, sizeof name, "%s.%s", m->opt.modules[t->module].name, t->name);
        float *want = tensor_f32(f, path, name, t->count);
        float *got = malloc(t->count * sizeof(float));
        assert_non_null(got);
        for (size_t j = 0; j < t->count; j++)
            got[j] = (float)(t->grad[j] * unscale);
        double e = rel_err(got, want, t->count);
        snprintf(what, sizeof what, "%s gradient of %s", dir, name);
        check(what, e, TOL_GRAD);
        if (e > worst)
            worst = e;
        free(want);
        free(got);
    }
    st_close(f);
    printf("# %s: %zu parameter gradients, worst max-norm relative error %.2e%s\n", strrchr(dir, '/') + 1,
           m->opt.n_tensors, worst, clipped ? " (clipping active)" : "");
}

static void check_final(const char *dir, const train_model *m)
{
    char path[1024], name[300], what[1400];
    snprintf(path, sizeof path, "%s/final.safetensors", dir);
    st_file *f;
    if (st_open(path, &f) != 0)
        fail_msg("%s", lvd_errmsg());
    double worst[2] = {0.0, 0.0};
    for (int who = 0; who < 2; who++)
        for (size_t i = 0; i < m->opt.n_tensors; i++) {
            const optim_tensor *t = &m->opt.tensors[i];
            snprintf(name, sizeof name, "%s.%s.%s", who ? "teacher" : "student", m->opt.modules[t->module].name,
                     t->name);
            float *want = tensor_f32(f, path, name, t->count);
            const float *got = who ? t->teacher : t->param;
            double e;
            size_t nl = strlen(t->name);
            if (nl > 13 && strcmp(t->name + nl - 13, "attn.qkv.bias") == 0) {
                /* The key bias: its gradient is zero in exact arithmetic (a shift shared by every key leaves the
                 * softmax alone), so float32 rounding noise, well above AdamW's eps, moves it by up to lr per step
                 * where float64 leaves it: the q and v parts to the tolerance, the k part within N_STEPS * lr. */
                size_t dd = t->count / 3;
                double eq = rel_err(got, want, dd), ev = rel_err(got + 2 * dd, want + 2 * dd, dd), ek = 0.0;
                for (size_t j = dd; j < 2 * dd; j++)
                    ek = fmax(ek, fabs((double)got[j] - (double)want[j]));
                snprintf(what, sizeof what, "%s after %d steps: %s (key part, absolute)", dir, N_STEPS, name);
                check(what, ek / (N_STEPS * m->rc.optim.lr), 1.0);
                e = fmax(eq, ev);
            } else {
                e = rel_err(got, want, t->count);
            }
            snprintf(what, sizeof what, "%s after %d steps: %s", dir, N_STEPS, name);
            check(what, e, TOL_PARAM);
            if (e > worst[who])
                worst[who] = e;
            free(want);
        }
    float *c = tensor_f32(f, path, "dino_center", (size_t)m->loss.cfg.dino_k);
    check("dino_center", rel_err(m->loss.dino_center, c, (size_t)m->loss.cfg.dino_k), TOL_PARAM);
    free(c);
    c = tensor_f32(f, path, "ibot_center", (size_t)m->loss.cfg.ibot_k);
    check("ibot_center", rel_err(m->loss.ibot_center, c, (size_t)m->loss.cfg.ibot_k), TOL_PARAM);
    free(c);
    st_close(f);
    printf("# %s: after %d steps, worst relative error student %.2e, teacher %.2e\n", strrchr(dir, '/') + 1,
           N_STEPS, worst[0], worst[1]);
}

static train_model *case_model(const char *dir)
{
    recipe r, tr;
    vit_config vc, tvc;
    int distill;
    case_config(dir, &r, &vc, &tr, &tvc, &distill);
    train_model *m;
    if (distill ? train_model_create_distill(&r, &vc, &tr, &tvc, 1, &m) != 0
                : train_model_create_vit(&r, &vc, 1, &m) != 0)
        fail_msg("train_model_create: %s", lvd_errmsg());
    char path[1024];
    snprintf(path, sizeof path, "%s/init.safetensors", dir);
    if (train_load_weights(m, path) != 0)
        fail_msg("%s", lvd_errmsg());
    if (distill && train_load_distill_teacher(m, r.distillation.checkpoint_path) != 0)
        fail_msg("%s", lvd_errmsg());
    return m;
}

static void run_case(const char *name)
{
    char dir[700];
    snprintf(dir, sizeof dir, "%s/%s", g_gen, name);
    train_model *m = case_model(dir);
    step_input in[N_STEPS];
    for (int k = 0; k < N_STEPS; k++)
        load_step(dir, k, m, &in[k]);

    /* Three iterations against the reference; a saved state after the second. */
    char state[1024];
    snprintf(state, sizeof state, "%s/%s-state.safetensors", g_dir, name);
    train_step_report rep;
    float *frozen = NULL; /* the distillation teacher's parameters before the steps */
    if (m->distill) {
        frozen = malloc(m->dt->n_params * sizeof(float));
        assert_non_null(frozen);
        memcpy(frozen, m->dt->param_mem, m->dt->n_params * sizeof(float));
    }
    for (int k = 0; k < N_STEPS; k++) {
        if (train_step(m, in[k].global, in[k].local, in[k].masks, &rep) != 0)
            fail_msg("%s step %d: %s", name, k, lvd_errmsg());
        assert_int_equal(rep.iteration, k);
        if (m->distill) /* iBOT on every patch token of the 2B global crops, whatever the loader's masks */
            assert_int_equal(rep.n_masked, 2 * m->batch * m->n_tokens);
        check_step(dir, k, &rep);
        check_norms(dir, k, m, &rep);
        if (k == 0)
            check_grads(dir, m, &rep);
        if (k == 1) {
            train_state_meta meta = {.epoch = 0, .position = 7, .failed = 1};
            snprintf(meta.config_sha256, sizeof meta.config_sha256, "x");
            if (train_state_save(m, &meta, state) != 0)
                fail_msg("%s", lvd_errmsg());
        }
    }
    check_final(dir, m);
    if (frozen) {
        assert_memory_equal(frozen, m->dt->param_mem, m->dt->n_params * sizeof(float));
        free(frozen);
    }

    /* Exact resume: a new model from the state of iteration 2 runs iteration 2 to the same bits. */
    train_model *r = case_model(dir);
    train_state_meta meta;
    if (train_state_load(r, state, &meta) != 0)
        fail_msg("%s", lvd_errmsg());
    assert_int_equal(meta.iteration, 2);
    assert_int_equal(meta.position, 7);
    assert_int_equal(meta.failed, 1);
    assert_int_equal(train_model_iteration(r), 2);
    if (train_step(r, in[2].global, in[2].local, in[2].masks, &rep) != 0)
        fail_msg("resumed step: %s", lvd_errmsg());
    for (size_t i = 0; i < m->opt.n_tensors; i++) {
        const optim_tensor *a = &m->opt.tensors[i], *b = &r->opt.tensors[i];
        size_t bytes = a->count * sizeof(float);
        if (memcmp(a->param, b->param, bytes) || memcmp(a->teacher, b->teacher, bytes) ||
            memcmp(a->m, b->m, bytes) || memcmp(a->v, b->v, bytes))
            fail_msg("%s: after a resume, %s differs from the uninterrupted run", name, a->name);
    }
    assert_memory_equal(m->loss.dino_center, r->loss.dino_center, (size_t)m->loss.cfg.dino_k * sizeof(float));

    /* A NaN pixel: the step stops before the optimizer and names the term. */
    size_t pbytes = m->opt.n_floats * sizeof(float);
    float *before = malloc(pbytes), *mom = malloc(2 * pbytes);
    assert_non_null(before);
    assert_non_null(mom);
    for (size_t i = 0, off = 0; i < m->opt.n_tensors; off += m->opt.tensors[i].count, i++)
        memcpy(before + off, m->opt.tensors[i].param, m->opt.tensors[i].count * sizeof(float));
    memcpy(mom, m->opt.moment_mem, 2 * pbytes);
    in[0].global[5] = NAN;
    in[0].local[5] = NAN;
    int64_t it = train_model_iteration(m);
    assert_int_equal(train_step(m, in[0].global, in[0].local, in[0].masks, &rep), -1);
    assert_true(strstr(rep.bad_term, "loss") != NULL);
    assert_true(strstr(lvd_errmsg(), rep.bad_term) != NULL);
    assert_int_equal(train_model_iteration(m), it);
    for (size_t i = 0, off = 0; i < m->opt.n_tensors; off += m->opt.tensors[i].count, i++)
        assert_memory_equal(before + off, m->opt.tensors[i].param, m->opt.tensors[i].count * sizeof(float));
    assert_memory_equal(mom, m->opt.moment_mem, 2 * pbytes);
    free(before);
    free(mom);

    for (int k = 0; k < N_STEPS; k++)
        free_step(&in[k]);
    train_model_free(r);
    train_model_free(m);
}

static void test_shared(void **state)
{
    (void)state;
    run_case("shared");
}

static void test_separate(void **state)
{
    (void)state;
    run_case("separate");
}

static void test_distill(void **state)
{
    (void)state;
    run_case("distill");
}

/* What a distillation teacher must share with the student: prototypes and patch size; and a recipe with
 * distillation.enabled needs its teacher's. */
static void test_distill_errors(void **state)
{
    (void)state;
    recipe r, tr;
    recipe_defaults(&r);
    set(&r, "student.arch=vit_pico");
    set(&r, "student.patch_size=14");
    set(&r, "crops.global_crops_size=28");
    set(&r, "crops.local_crops_size=14");
    set(&r, "crops.local_crops_number=1");
    set(&r, "train.batch_size_per_gpu=2");
    set(&r, "dino.head_n_prototypes=32");
    set(&r, "dino.head_hidden_dim=16");
    set(&r, "dino.head_bottleneck_dim=8");
    set(&r, "distillation.enabled=true");
    set(&r, "distillation.checkpoint_path=x");
    assert_int_equal(recipe_finish(&r, 1), 0);
    tr = r;
    train_model *m;
    assert_int_equal(train_model_create(&r, 1, &m), -1);
    assert_non_null(strstr(lvd_errmsg(), "train_model_create_distill"));
    set(&tr, "dino.head_n_prototypes=48");
    assert_int_equal(train_model_create_distill(&r, NULL, &tr, NULL, 1, &m), -1);
    assert_non_null(strstr(lvd_errmsg(), "dino.head_n_prototypes 48 differs from the student's 32"));
    set(&tr, "dino.head_n_prototypes=32");
    set(&tr, "ibot.separate_head=true");
    set(&tr, "ibot.head_n_prototypes=40");
    assert_int_equal(train_model_create_distill(&r, NULL, &tr, NULL, 1, &m), -1);
    assert_non_null(strstr(lvd_errmsg(), "iBOT prototypes (ibot.head_n_prototypes 40) differ from the student's 32"));
    set(&tr, "ibot.separate_head=false");
    set(&tr, "student.patch_size=7");
    assert_int_equal(train_model_create_distill(&r, NULL, &tr, NULL, 1, &m), -1);
    assert_non_null(strstr(lvd_errmsg(), "patch size 7 is not the student's 14"));
    set(&tr, "student.patch_size=14");
    set(&tr, "student.arch=vit_tiny");
    if (train_model_create_distill(&r, NULL, &tr, NULL, 1, &m) != 0)
        fail_msg("%s", lvd_errmsg());
    assert_int_equal(m->dt->cfg.dim, 192);
    assert_int_equal(m->drop_path == 0.0f, 1);
    train_model_free(m);
}

/* The recipe -> backbone mapping: build_model's img_size = global_crops_size, ffn_layer, layerscale. */
static void test_vit_config(void **state)
{
    (void)state;
    recipe r;
    recipe_defaults(&r);
    vit_config c;
    assert_int_equal(train_vit_config(&r, &c), 0);
    assert_int_equal(c.dim, 1024); /* ssl_default_config's vit_large */
    assert_int_equal(c.patch, 16); /* and patch_size */
    assert_int_equal(c.pos_grid, 224 / 16);
    assert_int_equal(c.ffn, VIT_FFN_MLP);
    assert_int_equal(c.ffn_hidden, 4 * 1024);
    assert_int_equal(c.layerscale, 1);
    assert_int_equal(c.pos_mode, VIT_POS_OFFSET);
    set(&r, "student.arch=vit_giant2");
    set(&r, "student.patch_size=14");
    set(&r, "crops.local_crops_size=98");
    set(&r, "student.ffn_layer=swiglufused");
    set(&r, "student.num_register_tokens=4");
    set(&r, "student.interpolate_antialias=true");
    set(&r, "student.interpolate_offset=0.0");
    set(&r, "student.layerscale=0");
    if (train_vit_config(&r, &c) != 0)
        fail_msg("%s", lvd_errmsg());
    assert_int_equal(c.pos_grid, 16);
    assert_int_equal(c.ffn, VIT_FFN_SWIGLU);
    assert_int_equal(c.ffn_hidden, 4096); /* the official SwiGLU hidden size of 1536 */
    assert_int_equal(c.n_reg, 4);
    assert_int_equal(c.layerscale, 0);
    assert_int_equal(c.pos_mode, VIT_POS_SIZE_AA);
    set(&r, "crops.local_crops_size=96"); /* not a multiple of the patch */
    assert_int_equal(train_vit_config(&r, &c), -1);
    assert_non_null(strstr(lvd_errmsg(), "local_crops_size 96"));
    set(&r, "crops.local_crops_size=98");
    set(&r, "student.qkv_bias=false");
    assert_int_equal(train_vit_config(&r, &c), -1);
    assert_non_null(strstr(lvd_errmsg(), "qkv_bias"));
}

static int setup(void **state)
{
    return scratch_setup_fixtures(state, g_dir, sizeof g_dir, "step", g_gen, sizeof g_gen, g_script, "gen");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s TESTS_SOURCE_DIR\n", argv[0]);
        return 2;
    }
    snprintf(g_script, sizeof g_script, "%s/unit/train/step_ref.py", argv[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vit_config),
        cmocka_unit_test(test_shared),
        cmocka_unit_test(test_separate),
        cmocka_unit_test(test_distill),
        cmocka_unit_test(test_distill_errors),
    };
    return cmocka_run_group_tests(tests, setup, scratch_teardown);
}
