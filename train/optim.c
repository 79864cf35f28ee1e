/* optim.c — see optim.h. */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* Tensors above this many floats are updated by all threads; smaller ones are not worth the fork. */
#define OPTIM_PAR_MIN 65536

/* ---------------------------------------------------------------------------------------------------- */
/* the name rules */

static int has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* int(s.split(".")[0]) for the text after a "blocks." match: digits up to the next '.' or the end. */
static int parse_block(const char *s, const char *name, int32_t *out)
{
    const char *e = s;
    int64_t v = 0;
    while (*e >= '0' && *e <= '9' && v < INT32_MAX) {
        v = v * 10 + (*e - '0');
        e++;
    }
    if (e == s || (*e != '.' && *e != '\0') || v >= INT32_MAX)
        return lvd_fail("parameter %s: no block number after \"blocks.\"", name);
    *out = (int32_t)v;
    return 0;
}

int optim_param_rule(const char *name, int32_t n_blocks, double layerwise_decay, double patch_embed_lr_mult,
                     optim_rule *out)
{
    /* get_vit_lr_decay_rate(name, decay, num_layers = n_blocks, force_is_backbone = n_blocks > 0) */
    int force = n_blocks > 0;
    int32_t layer_id = n_blocks + 1;
    if (strncmp(name, "backbone", 8) == 0 || force) {
        const char *hit;
        if (has(name, ".pos_embed") || has(name, ".patch_embed") || has(name, ".mask_token") ||
            has(name, ".cls_token") || has(name, ".register_tokens")) {
            layer_id = 0;
        } else if (force && (has(name, "pos_embed") || has(name, "patch_embed") || has(name, "mask_token") ||
                             has(name, "cls_token") || has(name, "register_tokens"))) {
            layer_id = 0;
        } else if ((hit = strstr(name, ".blocks.")) && !has(name, ".residual.")) {
            /* name[find(".blocks."):].split(".")[2]: the component after ".blocks." */
            if (parse_block(hit + 8, name, &layer_id) != 0)
                return -1;
            layer_id += 1;
        } else if ((hit = strstr(name, "blocks.")) && !has(name, "residual.")) {
            if (parse_block(hit + 7, name, &layer_id) != 0)
                return -1;
            layer_id += 1;
        }
    }
    out->layer_id = layer_id;
    out->lr_multiplier = pow(layerwise_decay, (double)(n_blocks + 1 - layer_id));
    /* get_params_groups_with_decay */
    out->is_last_layer = has(name, "last_layer");
    out->wd_multiplier = (ends_with(name, ".bias") || has(name, "norm") || has(name, "gamma")) ? 0.0 : 1.0;
    if (has(name, "patch_embed"))
        out->lr_multiplier *= patch_embed_lr_mult;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* registration */

void optim_config_defaults(optim_config *c)
{
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->layerwise_decay = 0.9;
    c->patch_embed_lr_mult = 0.2;
}

int optim_init(optim *o, const optim_config *c)
{
    memset(o, 0, sizeof *o);
    if (!(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1 && c->eps >= 0))
        return lvd_fail("AdamW: betas (%g, %g) must be in [0, 1) and eps %g >= 0", c->beta1, c->beta2, c->eps);
    o->cfg = *c;
    return 0;
}

void optim_free(optim *o)
{
    free(o->modules);
    free(o->tensors);
    free(o->moment_mem);
    memset(o, 0, sizeof *o);
}

static int copy_name(char *dst, const char *src, const char *what)
{
    size_t n = strlen(src);
    if (n == 0 || n >= OPTIM_NAME_MAX)
        return lvd_fail("%s name \"%s\": empty or longer than %d bytes", what, src, OPTIM_NAME_MAX - 1);
    memcpy(dst, src, n + 1);
    return 0;
}

int optim_add_module(optim *o, const char *name, int32_t n_blocks, int32_t *index)
{
    if (o->finalized)
        return lvd_fail("optimizer: module %s added after optim_finalize", name);
    if (n_blocks < 0)
        return lvd_fail("optimizer: module %s with %d blocks", name, (int)n_blocks);
    for (int32_t i = 0; i < o->n_modules; i++)
        if (strcmp(o->modules[i].name, name) == 0)
            return lvd_fail("optimizer: module %s registered twice", name);
    optim_module *mm = realloc(o->modules, sizeof *mm * (size_t)(o->n_modules + 1));
    if (!mm)
        return lvd_fail("optimizer: out of memory");
    o->modules = mm;
    optim_module *m = &o->modules[o->n_modules];
    if (copy_name(m->name, name, "module") != 0)
        return -1;
    m->n_blocks = n_blocks;
    if (index)
        *index = o->n_modules;
    o->n_modules++;
    return 0;
}

int optim_add_tensor(optim *o, int32_t module, const char *name, float *param, float *grad, float *teacher,
                     size_t count)
{
    if (o->finalized)
        return lvd_fail("optimizer: tensor %s added after optim_finalize", name);
    if (module < 0 || module >= o->n_modules)
        return lvd_fail("optimizer: tensor %s: no module %d", name, (int)module);
    if (!param || !grad || count == 0)
        return lvd_fail("optimizer: tensor %s.%s needs parameters, gradients and a size", o->modules[module].name,
                        name);
    for (size_t i = 0; i < o->n_tensors; i++)
        if (o->tensors[i].module == module && strcmp(o->tensors[i].name, name) == 0)
            return lvd_fail("optimizer: tensor %s.%s registered twice", o->modules[module].name, name);
    if (o->n_tensors == o->cap_tensors) {
        size_t cap = o->cap_tensors ? 2 * o->cap_tensors : 64;
        optim_tensor *t = realloc(o->tensors, sizeof *t * cap);
        if (!t)
            return lvd_fail("optimizer: out of memory");
        o->tensors = t;
        o->cap_tensors = cap;
    }
    optim_tensor *t = &o->tensors[o->n_tensors];
    memset(t, 0, sizeof *t);
    if (copy_name(t->name, name, "parameter") != 0)
        return -1;
    if (optim_param_rule(name, o->modules[module].n_blocks, o->cfg.layerwise_decay, o->cfg.patch_embed_lr_mult,
                         &t->rule) != 0)
        return lvd_fail_ctx("module %s", o->modules[module].name);
    t->module = module;
    t->param = param;
    t->grad = grad;
    t->teacher = teacher;
    t->count = count;
    o->n_tensors++;
    o->n_floats += count;
    return 0;
}

int optim_add_vit(optim *o, const char *name, vit_model *student, vit_model *teacher, int32_t *index)
{
    if (!student->grad_mem)
        return lvd_fail("optimizer: module %s: the student has no gradient arena (vit_alloc_grads)", name);
    if (teacher && (teacher->n_params != student->n_params || teacher->n_tensors != student->n_tensors))
        return lvd_fail("optimizer: module %s: teacher and student differ in layout", name);
    int32_t mi;
    if (optim_add_module(o, name, student->cfg.depth, &mi) != 0)
        return -1;
    for (size_t i = 0; i < student->n_tensors; i++) {
        const vit_tensor *t = &student->tensors[i];
        float *tp = teacher ? teacher->param_mem + t->offset : NULL;
        if (teacher && strcmp(teacher->tensors[i].name, t->name) != 0)
            return lvd_fail("optimizer: module %s: teacher tensor %s where the student has %s", name,
                            teacher->tensors[i].name, t->name);
        if (optim_add_tensor(o, mi, t->name, student->param_mem + t->offset, student->grad_mem + t->offset, tp,
                             t->count) != 0)
            return -1;
    }
    if (index)
        *index = mi;
    return 0;
}

int optim_finalize(optim *o)
{
    if (o->finalized)
        return lvd_fail("optimizer: finalized twice");
    if (o->n_floats == 0)
        return lvd_fail("optimizer: no parameters registered");
    o->moment_mem = calloc(2 * o->n_floats, sizeof(float));
    if (!o->moment_mem)
        return lvd_fail("optimizer: out of memory for the moments of %zu parameters", o->n_floats);
    size_t off = 0;
    for (size_t i = 0; i < o->n_tensors; i++) {
        o->tensors[i].m = o->moment_mem + off;
        o->tensors[i].v = o->moment_mem + o->n_floats + off;
        off += o->tensors[i].count;
    }
    o->finalized = 1;
    return 0;
}

const optim_tensor *optim_find(const optim *o, const char *module_name, const char *name)
{
    for (size_t i = 0; i < o->n_tensors; i++)
        if (strcmp(o->tensors[i].name, name) == 0 && strcmp(o->modules[o->tensors[i].module].name, module_name) == 0)
            return &o->tensors[i];
    return NULL;
}

/* ---------------------------------------------------------------------------------------------------- */
/* one iteration */

int optim_clip_grads(optim *o, double max_norm, double *norms)
{
    int rc = 0;
    for (int32_t mi = 0; mi < o->n_modules; mi++) {
        /* torch: per-tensor float32 norms, then the norm of those; here each tensor's sum of squares in double
         * (serial, so the result does not depend on the thread count) */
        double total_sq = 0.0;
        for (size_t i = 0; i < o->n_tensors; i++) {
            const optim_tensor *t = &o->tensors[i];
            if (t->module != mi)
                continue;
            double sq = 0.0;
            for (size_t k = 0; k < t->count; k++)
                sq += (double)t->grad[k] * (double)t->grad[k];
            double tn = (double)(float)sqrt(sq);
            total_sq += tn * tn;
        }
        float total = (float)sqrt(total_sq);
        if (norms)
            norms[mi] = (double)total;
        if (!isfinite(total)) {
            rc = lvd_fail("gradient clipping: module %s has a non-finite gradient norm", o->modules[mi].name);
            continue;
        }
        float coef = (float)max_norm / (total + 1e-6f);
        if (!(coef < 1.0f))
            continue; /* torch multiplies by the clamped coefficient, 1: a no-op */
        for (size_t i = 0; i < o->n_tensors; i++) {
            optim_tensor *t = &o->tensors[i];
            if (t->module != mi)
                continue;
            float *g = t->grad;
            size_t n = t->count;
#pragma omp parallel for schedule(static) if (n > OPTIM_PAR_MIN)
            for (size_t k = 0; k < n; k++)
                g[k] = g[k] * coef;
        }
    }
    return rc;
}

int optim_step(optim *o, double lr, double wd, double last_layer_lr)
{
    if (!o->finalized)
        return lvd_fail("optimizer: optim_step before optim_finalize");
    o->steps++;
    const double b1 = o->cfg.beta1, b2 = o->cfg.beta2;
    /* torch: bias_correction = 1 - beta ** step, step_size = lr / bc1, bc2_sqrt = sqrt(bc2) */
    const double bc1 = 1.0 - pow(b1, (double)o->steps);
    const double bc2_sqrt = sqrt(1.0 - pow(b2, (double)o->steps));
    const float f_b1 = (float)b1, f_1mb1 = (float)(1.0 - b1);
    const float f_b2 = (float)b2, f_1mb2 = (float)(1.0 - b2);
    const float f_bc2 = (float)bc2_sqrt, f_eps = (float)o->cfg.eps;
    for (size_t i = 0; i < o->n_tensors; i++) {
        optim_tensor *t = &o->tensors[i];
        /* apply_optim_scheduler */
        double t_lr = (t->rule.is_last_layer ? last_layer_lr : lr) * t->rule.lr_multiplier;
        double t_wd = wd * t->rule.wd_multiplier;
        const float decay = (float)(1.0 - t_lr * t_wd);
        const float step_size = (float)((t_lr / bc1) * -1.0);
        float *p = t->param, *m = t->m, *v = t->v;
        const float *g = t->grad;
        size_t n = t->count;
#pragma omp parallel for schedule(static) if (n > OPTIM_PAR_MIN)
        for (size_t k = 0; k < n; k++) {
            float pk = p[k] * decay;
            float gk = g[k];
            float mk = m[k] * f_b1;
            mk = mk + f_1mb1 * gk;
            float vk = v[k] * f_b2;
            vk = vk + f_1mb2 * gk * gk;
            float denom = sqrtf(vk) / f_bc2;
            denom = denom + f_eps;
            p[k] = pk + step_size * mk / denom;
            m[k] = mk;
            v[k] = vk;
        }
    }
    return 0;
}

void optim_update_teacher(optim *o, double momentum)
{
    const float f_m = (float)momentum, f_1mm = (float)(1.0 - momentum);
    for (size_t i = 0; i < o->n_tensors; i++) {
        optim_tensor *t = &o->tensors[i];
        if (!t->teacher)
            continue;
        float *tp = t->teacher;
        const float *s = t->param;
        size_t n = t->count;
        /* torch._foreach_mul_(teacher, m); torch._foreach_add_(teacher, student, alpha = 1 - m) */
#pragma omp parallel for schedule(static) if (n > OPTIM_PAR_MIN)
        for (size_t k = 0; k < n; k++) {
            float x = tp[k] * f_m;
            tp[k] = x + f_1mm * s[k];
        }
    }
}
