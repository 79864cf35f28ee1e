/* test_optim.c — the optimizer (train/optim.h) against PyTorch (tests/unit/train/optim_ref.py): a small ViT
 * backbone and two heads registered by their official names, three iterations of per-module clipping, AdamW
 * with the schedules' lr / wd / last-layer lr (frozen, then thawed) and the teacher EMA; parameters, teacher,
 * moments and norms must match torch.optim.AdamW + clip_grad_norm_ + the foreach EMA to 1e-6 (relative to
 * each tensor's largest value; the differences seen are float32 rounding, ~2e-7).
 * The name rules (layer id, lr and wd multipliers, last layer) are checked against a hand-written table and,
 * for every tensor of several ViT configurations and heads plus odd names, against a Python port of
 * get_vit_lr_decay_rate / get_params_groups_with_decay. Also: registration errors, clipping only above the
 * maximum, lr 0 still moves the moments, a tensor without teacher copy. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "train/optim.h"
#include "vit.h"

#define PY "/usr/bin/python3"
#define REL_TOL 1e-6

static char g_dir[64];
static char g_srcdir[512];

static uint64_t g_rng = 0x2545F4914F6CDD1Dull;

/* splitmix64 -> approximately normal values (sum of uniforms), enough for test data */
static double rnd_u01(void)
{
    uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * 0x1.0p-53;
}

static float rnd_normal(double std)
{
    double s = 0;
    for (int i = 0; i < 12; i++)
        s += rnd_u01();
    return (float)((s - 6.0) * std);
}

static void fill(float *x, size_t n, double std)
{
    for (size_t i = 0; i < n; i++)
        x[i] = rnd_normal(std);
}

static vit_config small_cfg(void)
{
    vit_config c = {.patch = 4, .pos_grid = 3, .dim = 16, .depth = 3, .heads = 2, .ffn_hidden = 24,
                    .ffn = VIT_FFN_MLP, .n_reg = 2, .pos_mode = VIT_POS_SIZE_AA, .layerscale = 1};
    return c;
}

/* ---------------------------------------------------------------------------------------------------- */
/* the name rules */

typedef struct rule_row {
    int32_t n_blocks;
    const char *name;
    int32_t layer_id;
    double lr_mult; /* with decay 0.9, patch_embed_lr_mult 0.2 */
    double wd_mult;
    int32_t last;
} rule_row;

static void test_rule_table(void **state)
{
    (void)state;
    const rule_row rows[] = {
        {12, "cls_token", 0, 0.2541865828329, 1, 0},             /* 0.9^13 */
        {12, "pos_embed", 0, 0.2541865828329, 1, 0},
        {12, "mask_token", 0, 0.2541865828329, 1, 0},
        {12, "register_tokens", 0, 0.2541865828329, 1, 0},
        {12, "patch_embed.proj.weight", 0, 0.2541865828329 * 0.2, 1, 0},
        {12, "patch_embed.proj.bias", 0, 0.2541865828329 * 0.2, 0, 0},
        {12, "blocks.0.norm1.weight", 1, 0.282429536481, 0, 0},  /* 0.9^12 */
        {12, "blocks.0.attn.qkv.weight", 1, 0.282429536481, 1, 0},
        {12, "blocks.0.attn.qkv.bias", 1, 0.282429536481, 0, 0},
        {12, "blocks.0.ls1.gamma", 1, 0.282429536481, 0, 0},
        {12, "blocks.11.mlp.fc2.weight", 12, 0.9, 1, 0},
        {12, "blocks.11.mlp.w12.weight", 12, 0.9, 1, 0},
        {12, "blocks.11.ls2.gamma", 12, 0.9, 0, 0},
        {12, "norm.weight", 13, 1.0, 0, 0},
        {12, "norm.bias", 13, 1.0, 0, 0},
        {0, "mlp.0.weight", 1, 1.0, 1, 0},                       /* heads: 0.9^0 */
        {0, "mlp.4.bias", 1, 1.0, 0, 0},
        {0, "last_layer.weight_g", 1, 1.0, 1, 1},
        {0, "last_layer.weight_v", 1, 1.0, 1, 1},
        {0, "backbone.blocks.3.norm1.weight", 4, 1 / 0.729, 0, 0}, /* full names, n_blocks 0: 0.9^(0+1-4) */
        {0, "backbone.patch_embed.proj.weight", 0, 0.9 * 0.2, 1, 0},
        {24, "blocks.5.residual.weight", 25, 1.0, 1, 0},          /* "residual." keeps depth + 1 */
    };
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
        optim_rule r;
        assert_int_equal(optim_param_rule(rows[i].name, rows[i].n_blocks, 0.9, 0.2, &r), 0);
        if (r.layer_id != rows[i].layer_id || fabs(r.lr_multiplier - rows[i].lr_mult) > 1e-12 ||
            r.wd_multiplier != rows[i].wd_mult || r.is_last_layer != rows[i].last)
            fail_msg("%s (%d blocks): layer %d lr x%.15g wd x%g last %d, want %d %.15g %g %d", rows[i].name,
                     (int)rows[i].n_blocks, (int)r.layer_id, r.lr_multiplier, r.wd_multiplier, (int)r.is_last_layer,
                     (int)rows[i].layer_id, rows[i].lr_mult, rows[i].wd_mult, (int)rows[i].last);
    }
    optim_rule r;
    assert_int_equal(optim_param_rule("blocks.x.norm1.weight", 12, 0.9, 0.2, &r), -1);
    assert_true(strstr(lvd_errmsg(), "block number") != NULL);
}

/* Every tensor name of a few ViTs and heads, plus odd names, against the Python port. */
static void test_rules_against_python(void **state)
{
    (void)state;
    char in[256], out[256];
    scratch_join(in, sizeof in, g_dir, "names.txt");
    scratch_join(out, sizeof out, g_dir, "rules.txt");
    FILE *f = fopen(in, "w");
    assert_non_null(f);
    const char *presets[] = {"vit_small", "vit_pico_reg4", "vit_giant2"};
    int n_names = 0;
    for (size_t p = 0; p < sizeof presets / sizeof *presets; p++) {
        vit_config c;
        assert_int_equal(vit_preset(presets[p], &c), 0);
        if (p == 2)
            c.depth = 14; /* keep it small; two-digit block numbers matter */
        vit_model *m;
        assert_int_equal(vit_create(&c, &m), 0);
        for (size_t i = 0; i < m->n_tensors; i++, n_names++)
            fprintf(f, "%d %s\n", (int)c.depth, m->tensors[i].name);
        vit_free(m);
    }
    const char *heads[] = {"mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias", "mlp.4.weight",
                           "mlp.4.bias", "last_layer.weight_g", "last_layer.weight_v", "mlp.weight"};
    for (size_t i = 0; i < sizeof heads / sizeof *heads; i++, n_names++)
        fprintf(f, "0 %s\n", heads[i]);
    const char *odd[] = {"backbone.blocks.7.attn.proj.bias", "backbone.norm.weight", "backbone.cls_token",
                         "blocks.2.residual.x", "x.blocks.3.y", "normal_blocks.4.w", "gamma_thing",
                         "backbone.register_tokens", "patch_embed_extra.bias"};
    for (size_t i = 0; i < sizeof odd / sizeof *odd; i++, n_names += 2) {
        fprintf(f, "0 %s\n", odd[i]);
        fprintf(f, "9 %s\n", odd[i]);
    }
    fclose(f);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, PY " '%s/unit/train/optim_ref.py' rules '%s' '%s'", g_srcdir, in, out);
    if (system(cmd) != 0)
        fail_msg("reference failed: %s", cmd);
    FILE *fi = fopen(in, "r"), *fo = fopen(out, "r");
    assert_non_null(fi);
    assert_non_null(fo);
    int n = 0, nb, lid, last;
    char name[128], name2[128];
    double lr, wd;
    while (fscanf(fi, "%d %127s", &nb, name) == 2) {
        assert_int_equal(fscanf(fo, "%d %lf %lf %d %127s", &lid, &lr, &wd, &last, name2), 5);
        assert_string_equal(name, name2);
        optim_rule r;
        assert_int_equal(optim_param_rule(name, nb, 0.9, 0.2, &r), 0);
        if (r.layer_id != lid || fabs(r.lr_multiplier - lr) > 1e-15 * lr || r.wd_multiplier != wd ||
            r.is_last_layer != last)
            fail_msg("%s (%d blocks): layer %d lr x%.17g wd x%g last %d; the reference %d %.17g %g %d", name, nb,
                     (int)r.layer_id, r.lr_multiplier, r.wd_multiplier, (int)r.is_last_layer, lid, lr, wd, last);
        n++;
    }
    assert_int_equal(n, n_names);
    fclose(fi);
    fclose(fo);
}

/* ---------------------------------------------------------------------------------------------------- */
/* against torch */

typedef struct head_tensor {
    const char *name;
    size_t count;
} head_tensor;

/* a 3-layer DINO head of in 16, hidden 20, bottleneck 6, 40 prototypes; the iBOT head smaller */
static const head_tensor g_dino[] = {{"mlp.0.weight", 20 * 16}, {"mlp.0.bias", 20},  {"mlp.2.weight", 20 * 20},
                                     {"mlp.2.bias", 20},        {"mlp.4.weight", 6 * 20}, {"mlp.4.bias", 6},
                                     {"last_layer.weight_g", 40}, {"last_layer.weight_v", 40 * 6}};
static const head_tensor g_ibot[] = {{"mlp.0.weight", 8 * 16}, {"mlp.0.bias", 8}, {"mlp.2.weight", 4 * 8},
                                     {"mlp.2.bias", 4}, {"last_layer.weight_g", 12}, {"last_layer.weight_v", 12 * 4}};

typedef struct head_mem {
    float *p, *g, *t;
    size_t n;
} head_mem;

static void head_alloc(head_mem *h, const head_tensor *ts, size_t nt)
{
    h->n = 0;
    for (size_t i = 0; i < nt; i++)
        h->n += ts[i].count;
    h->p = malloc(h->n * sizeof(float));
    h->g = malloc(h->n * sizeof(float));
    h->t = malloc(h->n * sizeof(float));
    assert_true(h->p && h->g && h->t);
    fill(h->p, h->n, 0.05);
    fill(h->t, h->n, 0.05);
}

static void head_register(optim *o, const char *mname, head_mem *h, const head_tensor *ts, size_t nt)
{
    int32_t mi;
    assert_int_equal(optim_add_module(o, mname, 0, &mi), 0);
    size_t off = 0;
    for (size_t i = 0; i < nt; i++) {
        assert_int_equal(optim_add_tensor(o, mi, ts[i].name, h->p + off, h->g + off, h->t + off, ts[i].count), 0);
        off += ts[i].count;
    }
}

static void write_floats(const char *name, const float *x, size_t n, const char *mode)
{
    char p[256];
    scratch_join(p, sizeof p, g_dir, name);
    FILE *f = fopen(p, mode);
    assert_non_null(f);
    assert_int_equal(fwrite(x, sizeof(float), n, f), n);
    fclose(f);
}

/* All registered tensors' values of one kind concatenated in registration order. */
enum which { W_PARAM, W_TEACHER, W_GRAD, W_M, W_V };
static float *gather(const optim *o, enum which w)
{
    float *out = malloc(o->n_floats * sizeof(float));
    assert_non_null(out);
    size_t off = 0;
    for (size_t i = 0; i < o->n_tensors; i++) {
        const optim_tensor *t = &o->tensors[i];
        const float *src = w == W_PARAM ? t->param : w == W_TEACHER ? t->teacher : w == W_GRAD ? t->grad
                           : w == W_M   ? t->m
                                        : t->v;
        memcpy(out + off, src, t->count * sizeof(float));
        off += t->count;
    }
    return out;
}

static void compare_file(const optim *o, const char *file, enum which w, const char *what)
{
    char p[256];
    scratch_join(p, sizeof p, g_dir, file);
    size_t len;
    float *ref = (float *)scratch_slurp(p, &len);
    assert_int_equal(len, o->n_floats * sizeof(float));
    float *got = gather(o, w);
    size_t off = 0;
    double worst = 0;
    for (size_t i = 0; i < o->n_tensors; i++) {
        const optim_tensor *t = &o->tensors[i];
        /* relative to the tensor's largest value: torch's kernels fuse multiply-adds (and order its norm
         * reductions) differently, so elements differ by a few float32 ulps of the operands, and where an
         * update cancels the value those ulps are large relative to the element itself */
        double scale = 0;
        for (size_t k = 0; k < t->count; k++)
            scale = fmax(scale, fabs(ref[off + k]));
        for (size_t k = 0; k < t->count; k++) {
            double a = got[off + k], b = ref[off + k];
            double err = fabs(a - b) / fmax(scale, 1e-30);
            worst = fmax(worst, err);
            if (!(err <= REL_TOL))
                fail_msg("%s of %s.%s[%zu]: %.9g, torch %.9g (error relative to the tensor's largest value %.3g)", what,
                         o->modules[t->module].name, t->name, k, a, b, err);
        }
        off += t->count;
    }
    print_message("# %s: worst error relative to the tensor's largest value %.3g\n", what, worst);
    free(ref);
    free(got);
}

static void test_against_torch(void **state)
{
    (void)state;
    vit_config c = small_cfg();
    vit_model *s, *t;
    assert_int_equal(vit_create(&c, &s), 0);
    assert_int_equal(vit_create(&c, &t), 0);
    vit_init_random(s, 11, 0.1f);
    vit_init_random(t, 12, 0.1f);
    assert_int_equal(vit_alloc_grads(s), 0);
    head_mem dino, ibot;
    head_alloc(&dino, g_dino, sizeof g_dino / sizeof *g_dino);
    head_alloc(&ibot, g_ibot, sizeof g_ibot / sizeof *g_ibot);

    optim_config oc;
    optim_config_defaults(&oc);
    optim o;
    assert_int_equal(optim_init(&o, &oc), 0);
    int32_t bi;
    assert_int_equal(optim_add_vit(&o, "backbone", s, t, &bi), 0);
    assert_int_equal(bi, 0);
    head_register(&o, "dino_head", &dino, g_dino, sizeof g_dino / sizeof *g_dino);
    head_register(&o, "ibot_head", &ibot, g_ibot, sizeof g_ibot / sizeof *g_ibot);
    assert_int_equal(optim_finalize(&o), 0);
    assert_int_equal(o.n_tensors, s->n_tensors + 8 + 6);

    char p[256];
    scratch_join(p, sizeof p, g_dir, "model.txt");
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    for (int32_t mi = 0; mi < o.n_modules; mi++)
        fprintf(f, "module %s %d\n", o.modules[mi].name, (int)o.modules[mi].n_blocks);
    for (size_t i = 0; i < o.n_tensors; i++)
        fprintf(f, "tensor %s %s %zu\n", o.modules[o.tensors[i].module].name, o.tensors[i].name, o.tensors[i].count);
    fclose(f);
    float *x = gather(&o, W_PARAM);
    write_floats("param.f32", x, o.n_floats, "wb");
    free(x);
    x = gather(&o, W_TEACHER);
    write_floats("teacher.f32", x, o.n_floats, "wb");
    free(x);

    /* lr, wd, last-layer lr (frozen for two steps), momentum, clip: large enough lr to move the weights */
    const double steps[3][5] = {{1e-2, 0.04, 0.0, 0.992, 3.0}, {2e-2, 0.1, 0.0, 0.993, 3.0},
                                {3e-2, 0.3, 3e-2, 0.995, 3.0}};
    scratch_join(p, sizeof p, g_dir, "steps.txt");
    f = fopen(p, "w");
    assert_non_null(f);
    double norms[3][3];
    for (int k = 0; k < 3; k++) {
        fprintf(f, "%.17g %.17g %.17g %.17g %.17g\n", steps[k][0], steps[k][1], steps[k][2], steps[k][3],
                steps[k][4]);
        /* backbone gradients well above the clip norm, DINO head below it, iBOT head above */
        fill(s->grad_mem, s->n_params, 0.3);
        fill(dino.g, dino.n, 0.02);
        fill(ibot.g, ibot.n, 0.5);
        char name[32];
        snprintf(name, sizeof name, "grad%d.f32", k);
        x = gather(&o, W_GRAD);
        write_floats(name, x, o.n_floats, "wb");
        free(x);
        assert_int_equal(optim_clip_grads(&o, steps[k][4], norms[k]), 0);
        assert_int_equal(optim_step(&o, steps[k][0], steps[k][1], steps[k][2]), 0);
        optim_update_teacher(&o, steps[k][3]);
    }
    fclose(f);
    assert_true(norms[0][0] > 3.0 && norms[0][1] < 3.0 && norms[0][2] > 3.0);

    char cmd[1024];
    snprintf(cmd, sizeof cmd, PY " '%s/unit/train/optim_ref.py' run '%s'", g_srcdir, g_dir);
    if (system(cmd) != 0)
        fail_msg("reference failed: %s", cmd);
    compare_file(&o, "ref_param.f32", W_PARAM, "parameter");
    compare_file(&o, "ref_teacher.f32", W_TEACHER, "teacher");
    compare_file(&o, "ref_m.f32", W_M, "exp_avg");
    compare_file(&o, "ref_v.f32", W_V, "exp_avg_sq");
    scratch_join(p, sizeof p, g_dir, "ref_norms.txt");
    f = fopen(p, "r");
    assert_non_null(f);
    for (int k = 0; k < 3; k++)
        for (int mi = 0; mi < 3; mi++) {
            double want;
            assert_int_equal(fscanf(f, "%lf", &want), 1);
            if (fabs(norms[k][mi] - want) > 1e-6 * want)
                fail_msg("step %d module %d: gradient norm %.9g, torch %.9g", k, mi, norms[k][mi], want);
        }
    fclose(f);

    optim_free(&o);
    vit_free(s);
    vit_free(t);
    free(dino.p), free(dino.g), free(dino.t);
    free(ibot.p), free(ibot.g), free(ibot.t);
}

/* ---------------------------------------------------------------------------------------------------- */
/* behaviour by hand */

static void test_frozen_and_clip(void **state)
{
    (void)state;
    optim_config oc;
    optim_config_defaults(&oc);
    optim o;
    assert_int_equal(optim_init(&o, &oc), 0);
    float p[4] = {1, -1, 0.5f, 2}, g[4] = {0.1f, 0.2f, -0.3f, 0.4f};
    float q[3] = {1, 2, 3}, gq[3] = {3, 4, 0}, tq[3] = {0, 0, 0};
    int32_t h;
    assert_int_equal(optim_add_module(&o, "dino_head", 0, &h), 0);
    assert_int_equal(optim_add_tensor(&o, h, "last_layer.weight_g", p, g, NULL, 4), 0);
    int32_t h2;
    assert_int_equal(optim_add_module(&o, "other", 0, &h2), 0);
    assert_int_equal(optim_add_tensor(&o, h2, "w", q, gq, tq, 3), 0);
    /* registration errors */
    assert_int_equal(optim_add_module(&o, "other", 0, NULL), -1);
    assert_int_equal(optim_add_tensor(&o, h2, "w", q, gq, tq, 3), -1);
    assert_true(strstr(lvd_errmsg(), "twice") != NULL);
    assert_int_equal(optim_add_tensor(&o, 7, "z", q, gq, tq, 3), -1);
    assert_int_equal(optim_step(&o, 1, 0, 0), -1); /* not finalized */
    assert_int_equal(optim_finalize(&o), 0);
    assert_int_equal(optim_add_tensor(&o, h2, "late", q, gq, tq, 3), -1);
    assert_non_null(optim_find(&o, "other", "w"));
    assert_null(optim_find(&o, "dino_head", "w"));

    /* clipping: "other" has norm 5 > 1 and is scaled to 1 / (5 + 1e-6) ; dino_head's 0.548 is left alone */
    double norms[2];
    assert_int_equal(optim_clip_grads(&o, 1.0, norms), 0);
    assert_true(fabs(norms[1] - 5.0) < 1e-6);
    assert_true(fabs(gq[0] - 3.0 / (5.0 + 1e-6)) < 1e-6 && fabs(gq[1] - 4.0 / (5.0 + 1e-6)) < 1e-6);
    assert_true(g[0] == 0.1f && g[3] == 0.4f);

    /* the last layer at lr 0: parameters stay, moments move */
    assert_int_equal(optim_step(&o, 0.1, 0.5, 0.0), 0);
    assert_true(p[0] == 1 && p[1] == -1 && p[2] == 0.5f && p[3] == 2);
    const optim_tensor *tl = optim_find(&o, "dino_head", "last_layer.weight_g");
    assert_true(tl->m[0] != 0 && tl->v[0] != 0);
    /* first AdamW step from zero moments: p * (1 - lr wd) - lr * sign(g) (up to eps) */
    float want0 = (float)(1.0 * (1 - 0.1 * 0.5) - 0.1);
    assert_true(fabsf(q[0] - want0) < 1e-6f);
    assert_true(fabsf(q[2] - (float)(3.0 * (1 - 0.05))) < 1e-6f); /* zero gradient: decay only */
    /* EMA: only the tensor with a teacher copy */
    optim_update_teacher(&o, 0.9);
    assert_true(fabsf(tq[0] - 0.1f * q[0]) < 1e-7f);
    /* non-finite gradients are reported and left alone */
    gq[1] = INFINITY;
    assert_int_equal(optim_clip_grads(&o, 1.0, NULL), -1);
    assert_true(strstr(lvd_errmsg(), "other") != NULL);
    optim_free(&o);

    /* a student without gradients cannot be registered */
    vit_config c = small_cfg();
    vit_model *s;
    assert_int_equal(vit_create(&c, &s), 0);
    assert_int_equal(optim_init(&o, &oc), 0);
    assert_int_equal(optim_add_vit(&o, "backbone", s, NULL, NULL), -1);
    assert_true(strstr(lvd_errmsg(), "vit_alloc_grads") != NULL);
    optim_free(&o);
    vit_free(s);
}

static int setup(void **state)
{
    (void)state;
    return scratch_make(g_dir, sizeof g_dir, "optim");
}

static int teardown(void **state)
{
    (void)state;
    return scratch_remove(g_dir);
}

int main(int argc, char **argv)
{
    snprintf(g_srcdir, sizeof g_srcdir, "%s", argc > 1 ? argv[1] : "tests");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rule_table),
        cmocka_unit_test(test_rules_against_python),
        cmocka_unit_test(test_against_torch),
        cmocka_unit_test(test_frozen_and_clip),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
