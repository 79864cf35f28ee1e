/* step.c — one DINOv2 training iteration (step.h). */
#include "train/step.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "train/masking.h"

static int reduce_f64(double *buf, int64_t n, ssl_reduce_op op, void *ctx)
{
    return dist_reduce_f64(ctx, buf, n, op == SSL_REDUCE_MAX);
}

static int reduce_f32(float *buf, size_t n, float scale, void *ctx)
{
    return dist_sum_f32(ctx, buf, n, scale);
}

train_reduce train_reduce_of(lvd_dist *d)
{
    if (!d || d->ranks <= 1)
        return (train_reduce){.ranks = 1};
    return (train_reduce){.ranks = d->ranks, .sum_f32 = reduce_f32, .f64 = {reduce_f64, d}, .ctx = d};
}

int train_vit_config(const recipe *r, vit_config *out)
{
    vit_config c;
    if (vit_preset(r->student.arch, &c) != 0)
        return lvd_fail("student.arch '%s': not an architecture of the ViT core", r->student.arch);
    if (!r->student.qkv_bias || !r->student.proj_bias || !r->student.ffn_bias)
        return lvd_fail("student.qkv_bias, proj_bias and ffn_bias must be true: the ViT core has those biases");
    c.patch = r->student.patch_size;
    if (c.patch < 1 || r->crops.global_crops_size % c.patch != 0 || r->crops.local_crops_size % c.patch != 0)
        return lvd_fail("crops.global_crops_size %d and local_crops_size %d must be multiples of "
                        "student.patch_size %d", r->crops.global_crops_size, r->crops.local_crops_size, c.patch);
    c.pos_grid = r->crops.global_crops_size / c.patch; /* build_model's img_size = global_crops_size */
    c.n_reg = r->student.num_register_tokens;
    if (strcmp(r->student.ffn_layer, "mlp") == 0) {
        c.ffn = VIT_FFN_MLP;
        c.ffn_hidden = 4 * c.dim;
    } else if (strcmp(r->student.ffn_layer, "swiglu") == 0 || strcmp(r->student.ffn_layer, "swiglufused") == 0) {
        c.ffn = VIT_FFN_SWIGLU;
        c.ffn_hidden = vit_swiglu_hidden(c.dim);
    } else {
        return lvd_fail("student.ffn_layer '%s': mlp, swiglu or swiglufused", r->student.ffn_layer);
    }
    c.layerscale = r->student.layerscale > 0.0;
    if (!r->student.interpolate_antialias && fabs(r->student.interpolate_offset - 0.1) < 1e-12)
        c.pos_mode = VIT_POS_OFFSET;
    else if (r->student.interpolate_antialias && r->student.interpolate_offset == 0.0)
        c.pos_mode = VIT_POS_SIZE_AA;
    else
        return lvd_fail("student.interpolate_antialias %s with interpolate_offset %g: the ViT core resamples "
                        "positions either without antialias at offset 0.1 or with antialias at offset 0",
                        r->student.interpolate_antialias ? "true" : "false", r->student.interpolate_offset);
    if (vit_config_check(&c) != 0)
        return -1;
    *out = c;
    return 0;
}

/* ---- creation ------------------------------------------------------------------------------------------ */

/* Carves n floats (or int64s) off an arena cursor; the cursor is kept 64-byte aligned. */
static void *carve(char **cur, size_t bytes)
{
    void *p = *cur;
    *cur += (bytes + 63) & ~(size_t)63;
    return p;
}

static int add_head(train_model *m, const char *name, dino_head *s, dino_head *t)
{
    int32_t mod;
    if (optim_add_module(&m->opt, name, 0, &mod) != 0)
        return -1;
    int n = dino_head_ntensors(&s->cfg);
    for (int i = 0; i < n; i++) {
        dino_head_tensor ht;
        if (dino_head_tensor_at(&s->cfg, i, &ht) != 0 ||
            optim_add_tensor(&m->opt, mod, ht.name, s->params + ht.offset, s->grads + ht.offset,
                             t->params + ht.offset, ht.count) != 0)
            return -1;
    }
    return 0;
}

static int head_config(dino_head_config *h, int64_t in_dim, int32_t k, int32_t bottleneck, int32_t hidden,
                       int32_t nlayers)
{
    h->in_dim = in_dim;
    h->prototypes = k;
    h->bottleneck = bottleneck;
    h->hidden = hidden;
    h->nlayers = nlayers;
    return dino_head_config_check(h);
}

/* The shapes of the optimizer's tensors, in its order: the backbone's from the model, the heads' from
 * dino_head_tensor_at. */
static int fill_shapes(train_model *m)
{
    m->shapes = calloc(m->opt.n_tensors, sizeof *m->shapes);
    if (!m->shapes)
        return lvd_fail("out of memory (tensor shapes)");
    size_t i = 0;
    for (size_t j = 0; j < m->student->n_tensors; j++, i++) {
        m->shapes[i].ndim = m->student->tensors[j].ndim;
        memcpy(m->shapes[i].shape, m->student->tensors[j].shape, sizeof m->shapes[i].shape);
    }
    const dino_head *heads[2] = {&m->s_dino, m->separate_ibot ? &m->s_ibot : NULL};
    for (int h = 0; h < 2 && heads[h]; h++) {
        int n = dino_head_ntensors(&heads[h]->cfg);
        for (int k = 0; k < n; k++, i++) {
            dino_head_tensor ht;
            dino_head_tensor_at(&heads[h]->cfg, k, &ht);
            m->shapes[i].ndim = ht.ndim;
            m->shapes[i].shape[0] = ht.shape[0];
            m->shapes[i].shape[1] = ht.shape[1];
        }
    }
    if (i != m->opt.n_tensors)
        return lvd_fail("internal: %zu shapes for %zu optimizer tensors", i, m->opt.n_tensors);
    return 0;
}

/* The frozen teacher of a distillation (tr: its run's recipe; tvc: its backbone, NULL: from tr) and the checks
 * that it can give the student's targets. hd is the student's DINO head, ibot_k its iBOT prototypes. *hdt and *hit
 * receive the teacher's head configurations. */
static int create_distill_teacher(train_model *m, const recipe *tr, const vit_config *tvc, const dino_head_config *hd,
                                  int64_t ibot_k, dino_head_config *hdt, dino_head_config *hit)
{
    vit_config c;
    if (tvc)
        c = *tvc;
    else if (train_vit_config(tr, &c) != 0)
        return lvd_fail_ctx("the distillation teacher's configuration");
    if (c.patch != m->vc.patch)
        return lvd_fail("distillation: the teacher's patch size %d is not the student's %d: iBOT pairs the two "
                        "networks' patch tokens", c.patch, m->vc.patch);
    if (vit_create(&c, &m->dt) != 0)
        return -1;
    if (head_config(hdt, c.dim, tr->dino.head_n_prototypes, tr->dino.head_bottleneck_dim, tr->dino.head_hidden_dim,
                    tr->dino.head_nlayers) != 0)
        return lvd_fail_ctx("the distillation teacher's dino head");
    if (hdt->prototypes != hd->prototypes)
        return lvd_fail("distillation: the teacher's dino.head_n_prototypes %lld differs from the student's %lld: "
                        "the DINO loss compares their logits prototype by prototype",
                        (long long)hdt->prototypes, (long long)hd->prototypes);
    m->dt_separate = tr->ibot.loss_weight > 0.0 && tr->ibot.separate_head;
    if (m->dt_separate && head_config(hit, c.dim, tr->ibot.head_n_prototypes, tr->ibot.head_bottleneck_dim,
                                      tr->ibot.head_hidden_dim, tr->ibot.head_nlayers) != 0)
        return lvd_fail_ctx("the distillation teacher's ibot head");
    int64_t t_ibot_k = m->dt_separate ? hit->prototypes : hdt->prototypes;
    if (m->do_ibot && t_ibot_k != ibot_k)
        return lvd_fail("distillation: the teacher's iBOT prototypes (%s %lld) differ from the student's %lld",
                        m->dt_separate ? "ibot.head_n_prototypes" : "dino.head_n_prototypes, a shared head",
                        (long long)t_ibot_k, (long long)ibot_k);
    if (dino_head_init(&m->dt_dino, hdt, 0) != 0 || (m->dt_separate && dino_head_init(&m->dt_ibot, hit, 0) != 0))
        return -1;
    return 0;
}

static int create(train_model *m, const recipe *r, const vit_config *vc, const recipe *tr, const vit_config *tvc,
                  int32_t ranks)
{
    m->rc = *r;
    if (r->distillation.enabled != (tr != NULL))
        return lvd_fail(tr ? "internal: a distillation teacher for a recipe without distillation.enabled"
                           : "distillation.enabled: the model needs the teacher's configuration "
                             "(train_model_create_distill)");
    m->distill = tr != NULL;
    if (!vc && train_vit_config(r, &m->vc) != 0)
        return -1;
    if (vc) {
        if (vc->patch != r->student.patch_size)
            return lvd_fail("the backbone's patch %d is not student.patch_size %d", vc->patch,
                            r->student.patch_size);
        if (r->crops.global_crops_size % vc->patch || r->crops.local_crops_size % vc->patch)
            return lvd_fail("crop sizes %d, %d are not multiples of the patch %d", r->crops.global_crops_size,
                            r->crops.local_crops_size, vc->patch);
        m->vc = *vc;
    }
    const int64_t d = m->vc.dim;
    m->ranks = ranks;
    m->red.ranks = 1;
    m->batch = r->train.batch_size_per_gpu;
    m->n_local = r->crops.local_crops_number;
    const int64_t b = m->batch, b2 = 2 * b, bl = (int64_t)m->n_local * b;
    const int32_t side = r->crops.global_crops_size / m->vc.patch;
    m->n_tokens = side * side;
    const int64_t n = m->n_tokens;
    m->drop_path = m->distill ? 0.0f : (float)r->student.drop_path_rate; /* distillation: no drop path */
    m->do_ibot = r->ibot.loss_weight > 0.0;
    m->separate_ibot = m->do_ibot && r->ibot.separate_head;
    /* The collate's upperbound: no batch of the loader masks more patches. Distillation: every patch token. */
    if (!m->do_ibot)
        m->max_masked = 0;
    else if (m->distill)
        m->max_masked = b2 * n;
    else
        m->max_masked = mask_upperbound((int32_t)b2, (int32_t)n, r->ibot.mask_ratio_min_max[0],
                                        r->ibot.mask_ratio_min_max[1], r->ibot.mask_sample_probability);

    if (vit_create(&m->vc, &m->student) != 0 || vit_create(&m->vc, &m->teacher) != 0 ||
        vit_alloc_grads(m->student) != 0)
        return -1;
    dino_head_config hd, hi;
    if (head_config(&hd, d, r->dino.head_n_prototypes, r->dino.head_bottleneck_dim, r->dino.head_hidden_dim,
                    r->dino.head_nlayers) != 0)
        return lvd_fail_ctx("dino head");
    if (dino_head_init(&m->s_dino, &hd, 1) != 0 || dino_head_init(&m->t_dino, &hd, 0) != 0)
        return -1;
    int64_t ibot_k = hd.prototypes;
    if (m->separate_ibot) {
        if (head_config(&hi, d, r->ibot.head_n_prototypes, r->ibot.head_bottleneck_dim, r->ibot.head_hidden_dim,
                        r->ibot.head_nlayers) != 0)
            return lvd_fail_ctx("ibot head");
        if (dino_head_init(&m->s_ibot, &hi, 1) != 0 || dino_head_init(&m->t_ibot, &hi, 0) != 0)
            return -1;
        ibot_k = hi.prototypes;
    }
    dino_head_config hdt = {0}, hit = {0};
    if (m->distill && create_distill_teacher(m, tr, tvc, &hd, ibot_k, &hdt, &hit) != 0)
        return -1;
    /* The network that gives the targets: the EMA teacher, or the frozen one in distillation. */
    vit_model *tgt = m->distill ? m->dt : m->teacher;
    const int t_sep = m->distill ? m->dt_separate : m->separate_ibot;
    const dino_head_config *t_hd = m->distill ? &hdt : &hd, *t_hi = m->distill ? &hit : &hi;
    const int64_t td = tgt->cfg.dim;

    optim_config oc;
    optim_config_defaults(&oc);
    oc.beta1 = r->optim.adamw_beta1;
    oc.beta2 = r->optim.adamw_beta2;
    oc.layerwise_decay = r->optim.layerwise_decay;
    oc.patch_embed_lr_mult = r->optim.patch_embed_lr_mult;
    if (optim_init(&m->opt, &oc) != 0 || optim_add_vit(&m->opt, "backbone", m->student, m->teacher, NULL) != 0 ||
        add_head(m, "dino_head", &m->s_dino, &m->t_dino) != 0 ||
        (m->separate_ibot && add_head(m, "ibot_head", &m->s_ibot, &m->t_ibot) != 0) ||
        optim_finalize(&m->opt) != 0 || fill_shapes(m) != 0)
        return -1;

    ssl_loss_config lc;
    ssl_loss_config_default(&lc, b, m->n_local, hd.prototypes, ibot_k, d, m->max_masked);
    lc.dino_weight = (float)r->dino.loss_weight;
    lc.ibot_weight = (float)r->ibot.loss_weight;
    lc.koleo_weight = (float)r->dino.koleo_loss_weight;
    lc.centering = r->train.centering == RECIPE_SINKHORN_KNOPP ? SSL_CENTERING_SINKHORN : SSL_CENTERING_SOFTMAX;
    lc.patch_targets_in_place = 1; /* the teacher's masked-token logits become the iBOT targets */
    if (ssl_loss_init(&m->loss, &lc) != 0)
        return -1;

    sched_recipe_config sc;
    sched_recipe_defaults(&sc);
    sc.epoch_length = r->train.official_epoch_length;
    sc.epochs = r->optim.epochs;
    sc.batch_size = (int64_t)m->batch * ranks;
    sc.base_lr = r->optim.base_lr;
    /* An explicit optim.lr wins over the scaling rule: give the schedule the base that scales to it. */
    double scale = sqrt((double)sc.batch_size / 1024.0);
    if (r->optim.lr > 0.0 && fabs(r->optim.lr - r->optim.base_lr * scale) > 1e-12 * r->optim.lr)
        sc.base_lr = r->optim.lr / scale;
    sc.min_lr = r->optim.min_lr;
    sc.warmup_epochs = r->optim.warmup_epochs;
    sc.weight_decay = r->optim.weight_decay;
    sc.weight_decay_end = r->optim.weight_decay_end;
    sc.momentum_teacher = r->teacher.momentum_teacher;
    sc.final_momentum_teacher = r->teacher.final_momentum_teacher;
    sc.warmup_teacher_temp = r->teacher.warmup_teacher_temp;
    sc.teacher_temp = r->teacher.teacher_temp;
    sc.warmup_teacher_temp_epochs = r->teacher.warmup_teacher_temp_epochs;
    sc.freeze_last_layer_epochs = r->optim.freeze_last_layer_epochs;
    if (sched_recipe_init(&m->sched, &sc) != 0)
        return -1;

    if (!r->student.drop_path_uniform && r->student.drop_path_rate > 0.0)
        return lvd_fail("student.drop_path_uniform false (a rate rising over the blocks) is not supported: the ViT "
                        "core applies student.drop_path_rate to every block");
    /* The student's two backward passes run one after the other, and the teacher's buffers are dead once its
     * outputs are copied (before the student's forward): one buffer serves as both backward scratches and as
     * the teacher run's arena. */
    const int32_t rc = r->train.recompute_blocks;
    vit_run_opts go = {.batch = (int32_t)b2, .height = r->crops.global_crops_size,
                       .width = r->crops.global_crops_size, .train = 1, .recompute = rc};
    vit_run_opts lo = {.batch = (int32_t)bl, .height = r->crops.local_crops_size,
                       .width = r->crops.local_crops_size, .train = 1, .recompute = rc};
    vit_run_opts to = {.batch = (int32_t)b2, .height = r->crops.global_crops_size,
                       .width = r->crops.global_crops_size};
    size_t a_g, s_g, a_l = 0, s_l = 0, a_t, s_t;
    if (vit_run_sizes(m->student, &go, &a_g, &s_g) != 0 || vit_run_sizes(tgt, &to, &a_t, &s_t) != 0 ||
        (m->n_local > 0 && vit_run_sizes(m->student, &lo, &a_l, &s_l) != 0))
        return -1;
    size_t shared = s_g > s_l ? s_g : s_l;
    shared = shared > a_t ? shared : a_t;
    m->shared_bytes = shared * sizeof(float);
    m->shared = aligned_alloc(64, (m->shared_bytes + 63) & ~(size_t)63);
    if (!m->shared)
        return lvd_fail("out of memory: %zu bytes of backward scratch", m->shared_bytes);
    go.scratch = lo.scratch = to.arena = m->shared;
    if (vit_run_create(m->student, &go, &m->s_run_g) != 0 || vit_run_create(tgt, &to, &m->t_run_g) != 0 ||
        (m->n_local > 0 && vit_run_create(m->student, &lo, &m->s_run_l) != 0))
        return -1;

    /* Head rows: the teacher's [global CLS ; masked tokens], the student's [local CLS ; global CLS ; masked
     * tokens]; with a separate iBOT head the masked tokens go through it instead. */
    const int64_t mm = m->max_masked;
    const int64_t t_rows = b2 + mm, s_rows = bl + b2 + mm;
    const int64_t t_head = t_sep ? b2 : t_rows, s_head = m->separate_ibot ? bl + b2 : s_rows;
    if (dino_head_run_init(&m->t_hrun, t_hd, t_head, 0) != 0 || dino_head_run_init(&m->s_hrun, &hd, s_head, 1) != 0)
        return -1;
    if (t_sep && mm > 0 && dino_head_run_init(&m->t_irun, t_hi, mm, 0) != 0)
        return -1;
    if (m->separate_ibot && mm > 0 && dino_head_run_init(&m->s_irun, &hi, mm, 1) != 0)
        return -1;
    const int64_t kd = hd.prototypes;
    size_t fl = sizeof(float);
    /* The logits' gradients replace the logits (ssl_loss_step in place): one (rows, K) buffer each. */
    size_t sizes[11] = {
        (size_t)(t_rows * td) * fl, (size_t)(t_head * kd) * fl,
        (size_t)(t_sep ? mm * ibot_k : 0) * fl,
        (size_t)(s_rows * d) * fl, (size_t)(s_head * kd) * fl, (size_t)(s_rows * d) * fl,
        (size_t)(m->separate_ibot ? mm * ibot_k : 0) * fl,
        (size_t)(b2 * n * d) * fl, (size_t)(b2 * n) * sizeof(int64_t), (size_t)(b2 * n) * fl,
        (size_t)(m->distill ? b2 * n : 0)};
    size_t total = 0;
    for (int i = 0; i < 11; i++)
        total += (sizes[i] + 63) & ~(size_t)63;
    m->arena = aligned_alloc(64, total);
    if (!m->arena)
        return lvd_fail("out of memory: %zu bytes of step buffers", total);
    char *cur = m->arena;
    m->t_in = carve(&cur, sizes[0]);
    m->t_out = carve(&cur, sizes[1]);
    m->t_iout = carve(&cur, sizes[2]);
    m->s_in = carve(&cur, sizes[3]);
    m->s_out = m->s_dout = carve(&cur, sizes[4]);
    m->s_din = carve(&cur, sizes[5]);
    m->s_iout = m->s_idout = carve(&cur, sizes[6]);
    m->d_patch_g = carve(&cur, sizes[7]);
    m->masked_idx = carve(&cur, sizes[8]);
    m->masked_w = carve(&cur, sizes[9]);
    m->all_masks = carve(&cur, sizes[10]);
    if (m->distill)
        memset(m->all_masks, 1, sizes[10]);
    m->d_cls_g = m->s_din + bl * d;
    return 0;
}

int train_model_create(const recipe *r, int32_t ranks, train_model **out)
{
    return train_model_create_vit(r, NULL, ranks, out);
}

static int create_model(const recipe *r, const vit_config *vc, const recipe *tr, const vit_config *tvc,
                        int32_t ranks, train_model **out)
{
    *out = NULL;
    if (ranks < 1)
        return lvd_fail("ranks %d < 1", ranks);
    train_model *m = calloc(1, sizeof *m);
    if (!m)
        return lvd_fail("out of memory");
    if (create(m, r, vc, tr, tvc, ranks) != 0) {
        train_model_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

int train_model_create_vit(const recipe *r, const vit_config *vc, int32_t ranks, train_model **out)
{
    return create_model(r, vc, NULL, NULL, ranks, out);
}

int train_model_create_distill(const recipe *r, const vit_config *vc, const recipe *tr, const vit_config *tvc,
                               int32_t ranks, train_model **out)
{
    *out = NULL;
    if (!tr)
        return lvd_fail("internal: distillation without the teacher's recipe");
    return create_model(r, vc, tr, tvc, ranks, out);
}

void train_model_free(train_model *m)
{
    if (!m)
        return;
    vit_run_free(m->s_run_g);
    vit_run_free(m->s_run_l);
    vit_run_free(m->t_run_g);
    dino_head_run_free(&m->s_hrun);
    dino_head_run_free(&m->t_hrun);
    dino_head_run_free(&m->s_irun);
    dino_head_run_free(&m->t_irun);
    dino_head_free(&m->s_dino);
    dino_head_free(&m->t_dino);
    dino_head_free(&m->s_ibot);
    dino_head_free(&m->t_ibot);
    optim_free(&m->opt);
    ssl_loss_free(&m->loss);
    vit_free(m->student);
    vit_free(m->teacher);
    vit_free(m->dt);
    dino_head_free(&m->dt_dino);
    dino_head_free(&m->dt_ibot);
    free(m->arena);
    free(m->shared);
    free(m->shapes);
    free(m);
}

void train_model_sync_teacher(train_model *m)
{
    for (size_t i = 0; i < m->opt.n_tensors; i++) {
        const optim_tensor *t = &m->opt.tensors[i];
        memcpy(t->teacher, t->param, t->count * sizeof(float));
    }
}

void train_model_init_weights(train_model *m, uint64_t seed)
{
    vit_init_random(m->student, seed, (float)m->rc.student.layerscale);
    dino_head_init_weights(&m->s_dino, seed ^ 0x64696E6F68656164ull);      /* "dinohead" */
    if (m->separate_ibot)
        dino_head_init_weights(&m->s_ibot, seed ^ 0x69626F7468656164ull);  /* "ibothead" */
    train_model_sync_teacher(m);
}

int train_model_set_reduce(train_model *m, const train_reduce *r)
{
    if (!r || r->ranks == 1) {
        memset(&m->red, 0, sizeof m->red);
        m->red.ranks = 1;
        memset(&m->loss.reduce, 0, sizeof m->loss.reduce);
        return 0;
    }
    if (r->ranks != m->ranks || !r->sum_f32 || !r->f64.fn)
        return lvd_fail("internal: a reduction over %d ranks for a model built for %d", r->ranks, m->ranks);
    m->red = *r;
    m->loss.reduce = r->f64;
    return 0;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

uint64_t train_model_hash(const train_model *m)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < m->opt.n_tensors; i++) {
        const optim_tensor *t = &m->opt.tensors[i];
        size_t bytes = t->count * sizeof(float);
        h = fnv(h, t->param, bytes);
        if (t->teacher)
            h = fnv(h, t->teacher, bytes);
        h = fnv(h, t->m, bytes);
        h = fnv(h, t->v, bytes);
    }
    h = fnv(h, m->loss.dino_center, (size_t)m->loss.cfg.dino_k * sizeof(float));
    if (m->loss.ibot_center)
        h = fnv(h, m->loss.ibot_center, (size_t)m->loss.cfg.ibot_k * sizeof(float));
    if (m->dt) { /* the frozen teacher: every rank must have loaded the same */
        h = fnv(h, m->dt->param_mem, m->dt->n_params * sizeof(float));
        h = fnv(h, m->dt_dino.params, m->dt_dino.n_params * sizeof(float));
        if (m->dt_separate)
            h = fnv(h, m->dt_ibot.params, m->dt_ibot.n_params * sizeof(float));
    }
    return h;
}

/* The gradients' all-reduce (train_reduce): one call per contiguous run of the optimizer's tensors. */
static int reduce_grads(train_model *m)
{
    const float scale = 1.0f / (float)m->red.ranks;
    size_t i = 0;
    while (i < m->opt.n_tensors) {
        float *start = m->opt.tensors[i].grad;
        size_t n = m->opt.tensors[i].count, j = i + 1;
        while (j < m->opt.n_tensors && m->opt.tensors[j].grad == start + n)
            n += m->opt.tensors[j++].count;
        if (m->red.sum_f32(start, n, scale, m->red.ctx) != 0)
            return lvd_fail_ctx("iteration %lld", (long long)m->opt.steps);
        i = j;
    }
    return 0;
}

int64_t train_model_iteration(const train_model *m)
{
    return m->opt.steps;
}

const train_shape *train_model_shape(const train_model *m, size_t i)
{
    return i < m->opt.n_tensors ? &m->shapes[i] : NULL;
}

/* ---- the step ------------------------------------------------------------------------------------------ */

static uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* rows (nm, d) = src rows idx[j] of the flattened (2B * N, d) tokens. */
static void gather(float *rows, const float *src, const int64_t *idx, int64_t nm, int64_t d)
{
    for (int64_t j = 0; j < nm; j++)
        memcpy(rows + j * d, src + idx[j] * d, (size_t)d * sizeof(float));
}

static int finite_terms(const ssl_loss_terms *t, train_step_report *rep)
{
    const double v[5] = {t->dino_local_crops_loss, t->dino_global_crops_loss, t->koleo_loss, t->ibot_loss,
                         t->total};
    static const char *names[5] = {"dino_local_crops_loss", "dino_global_crops_loss", "koleo_loss", "ibot_loss",
                                   "total"};
    for (int i = 0; i < 5; i++)
        if (!isfinite(v[i])) {
            snprintf(rep->bad_term, sizeof rep->bad_term, "%s", names[i]);
            return lvd_fail("%s is %g at iteration %lld", names[i], v[i], (long long)rep->iteration);
        }
    return 0;
}

int train_step(train_model *m, const float *global, const float *local, const uint8_t *masks,
               train_step_report *rep)
{
    memset(rep, 0, sizeof *rep);
    const int64_t it = m->opt.steps;
    rep->iteration = it;
    sched_recipe_at(&m->sched, it, &rep->sched);
    const int64_t d = m->vc.dim, b2 = 2 * (int64_t)m->batch, bl = (int64_t)m->n_local * m->batch;
    const int64_t n = m->n_tokens, kd = m->s_dino.cfg.prototypes;
    /* The target network: the EMA teacher, or in distillation the frozen one (whose student sees no masks). */
    vit_model *tv = m->distill ? m->dt : m->teacher;
    const dino_head *th = m->distill ? &m->dt_dino : &m->t_dino, *thi = m->distill ? &m->dt_ibot : &m->t_ibot;
    const int t_sep = m->distill ? m->dt_separate : m->separate_ibot;
    const int64_t td = tv->cfg.dim;
    const uint8_t *s_masks = m->distill ? NULL : masks;

    /* The collate's mask bookkeeping; the student sees the masks even when iBOT is off, as in the code.
     * Distillation: every patch token, weight 1 / N. */
    int64_t nm = 0;
    if (m->do_ibot) {
        nm = ibot_mask_select(m->masked_idx, m->masked_w, m->distill ? m->all_masks : masks, b2, n);
        if (nm > m->max_masked)
            return lvd_fail("%lld masked patches in a batch, more than the %lld the collate can produce",
                            (long long)nm, (long long)m->max_masked);
    }
    rep->n_masked = nm;

    /* Teacher: backbone on the global crops, then the head(s). No gradient. */
    if (vit_forward(tv, m->t_run_g, global, NULL, 0.0f, 0) != 0)
        return -1;
    memcpy(m->t_in, vit_out_cls(m->t_run_g), (size_t)(b2 * td) * sizeof(float));
    gather(m->t_in + b2 * td, vit_out_patch(m->t_run_g), m->masked_idx, nm, td);
    float *t_patch;
    if (t_sep) {
        if (dino_head_forward(th, &m->t_hrun, m->t_out, m->t_in, b2) != 0 ||
            (nm > 0 && dino_head_forward(thi, &m->t_irun, m->t_iout, m->t_in + b2 * td, nm) != 0))
            return -1;
        t_patch = m->t_iout;
    } else {
        if (dino_head_forward(th, &m->t_hrun, m->t_out, m->t_in, b2 + nm) != 0)
            return -1;
        t_patch = m->t_out + b2 * kd;
    }

    /* Student: backbone on the masked global crops and on the local crops, then the head(s) on
     * [local CLS ; global CLS ; masked tokens]. */
    uint64_t dp_seed = mix64((uint64_t)m->rc.train.seed ^ mix64((uint64_t)it));
    if (vit_forward(m->student, m->s_run_g, global, s_masks, m->drop_path, dp_seed) != 0)
        return -1;
    if (bl > 0 && vit_forward(m->student, m->s_run_l, local, NULL, m->drop_path, mix64(dp_seed)) != 0)
        return -1;
    if (bl > 0)
        memcpy(m->s_in, vit_out_cls(m->s_run_l), (size_t)(bl * d) * sizeof(float));
    memcpy(m->s_in + bl * d, vit_out_cls(m->s_run_g), (size_t)(b2 * d) * sizeof(float));
    float *s_tok = m->s_in + (bl + b2) * d;
    gather(s_tok, vit_out_patch(m->s_run_g), m->masked_idx, nm, d);
    const int64_t s_rows = bl + b2 + nm, s_head = m->separate_ibot ? bl + b2 : s_rows;
    if (dino_head_forward(&m->s_dino, &m->s_hrun, m->s_out, m->s_in, s_head) != 0)
        return -1;
    if (m->separate_ibot && nm > 0 && dino_head_forward(&m->s_ibot, &m->s_irun, m->s_iout, s_tok, nm) != 0)
        return -1;

    /* Losses and their gradients with respect to the head outputs (and KoLeo's to the global CLS). The
     * gradients replace the logits in place; rows of a term that is off get a zero gradient. */
    memset(m->s_din, 0, (size_t)(s_rows * d) * sizeof(float));
    float *s_patch = m->separate_ibot ? m->s_iout : m->s_out + (bl + b2) * kd;
    float *ds_patch = m->separate_ibot ? m->s_idout : m->s_dout + (bl + b2) * kd;
    ssl_loss_inputs in = {
        .student_global = m->s_out + bl * kd, .student_local = bl > 0 ? m->s_out : NULL,
        .teacher_global = m->t_out, .student_cls = m->s_in + bl * d,
        .student_patch = s_patch, .teacher_patch = t_patch, .masks_weight = m->masked_w, .n_masked = nm,
        .teacher_patch_rw = t_patch};
    ssl_loss_grads g = {.student_global = m->s_dout + bl * kd, .student_local = bl > 0 ? m->s_dout : NULL,
                        .student_cls = m->d_cls_g, .student_patch = ds_patch};
    if (ssl_loss_step(&m->loss, &in, (float)rep->sched.teacher_temp, &rep->terms, &g) != 0)
        return -1;
    if (m->red.ranks > 1) { /* the mean over the ranks; a non-finite term anywhere makes every rank stop here */
        ssl_loss_terms *t = &rep->terms;
        double v[5] = {t->dino_local_crops_loss, t->dino_global_crops_loss, t->koleo_loss, t->ibot_loss, t->total};
        if (m->red.f64.fn(v, 5, SSL_REDUCE_SUM, m->red.f64.ctx) != 0)
            return lvd_fail_ctx("iteration %lld", (long long)it);
        const double inv = 1.0 / (double)m->red.ranks;
        t->dino_local_crops_loss = v[0] * inv;
        t->dino_global_crops_loss = v[1] * inv;
        t->koleo_loss = v[2] * inv;
        t->ibot_loss = v[3] * inv;
        t->total = v[4] * inv;
    }
    if (finite_terms(&rep->terms, rep) != 0)
        return -1;
    if (!(m->loss.cfg.dino_weight > 0.0f))
        memset(m->s_dout, 0, (size_t)((bl + b2) * kd) * sizeof(float));

    /* Backward: heads, then the backbone's two runs (their parameter gradients add up). */
    vit_zero_grads(m->student);
    dino_head_zero_grad(&m->s_dino);
    if (m->separate_ibot)
        dino_head_zero_grad(&m->s_ibot);
    if (dino_head_backward(&m->s_dino, &m->s_hrun, m->s_din, m->s_dout, m->s_in, s_head) != 0)
        return -1;
    if (m->separate_ibot && nm > 0 &&
        dino_head_backward(&m->s_ibot, &m->s_irun, m->s_din + (bl + b2) * d, m->s_idout, s_tok, nm) != 0)
        return -1;
    memset(m->d_patch_g, 0, (size_t)(b2 * n * d) * sizeof(float));
    const float *d_tok = m->s_din + (bl + b2) * d;
    for (int64_t j = 0; j < nm; j++)
        memcpy(m->d_patch_g + m->masked_idx[j] * d, d_tok + j * d, (size_t)d * sizeof(float));
    if (vit_backward(m->student, m->s_run_g, m->d_cls_g, NULL, m->d_patch_g, NULL) != 0)
        return -1;
    if (bl > 0 && vit_backward(m->student, m->s_run_l, m->s_din, NULL, NULL, NULL) != 0)
        return -1;

    if (m->red.ranks > 1 && reduce_grads(m) != 0)
        return -1;

    /* Clipping per module (the norms are reported either way), AdamW, the teacher's EMA. */
    rep->n_modules = m->opt.n_modules;
    double clip = m->rc.optim.clip_grad > 0.0 ? m->rc.optim.clip_grad : HUGE_VAL;
    if (optim_clip_grads(&m->opt, clip, rep->grad_norm) != 0) {
        for (int32_t i = 0; i < m->opt.n_modules; i++)
            if (!isfinite(rep->grad_norm[i])) {
                snprintf(rep->bad_term, sizeof rep->bad_term, "grad_norm %s", m->opt.modules[i].name);
                return lvd_fail("the gradient norm of %s is %g at iteration %lld", m->opt.modules[i].name,
                                rep->grad_norm[i], (long long)it);
            }
        return -1;
    }
    if (optim_step(&m->opt, rep->sched.lr, rep->sched.wd, rep->sched.last_layer_lr) != 0)
        return -1;
    optim_update_teacher(&m->opt, rep->sched.momentum);
    return 0;
}
