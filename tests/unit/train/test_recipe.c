/* test_recipe.c — lvd-train's configuration: the official DINOv2 YAML files read as they are, overrides,
 * errors that name file, line and key, and RUN/config.yaml read back to the same values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "train/recipe.h"

static char scratch[64];

static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    scratch_join(path, sizeof path, scratch, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

/* The structure and values of dinov2/configs/ssl_default_config.yaml, as the official file spells them
 * (nesting, the compute_precision tree, the 'MODEL' section, comments, quoted strings, 1.0e-05). */
static const char ssl_default[] =
    "MODEL:\n"
    "  WEIGHTS: ''\n"
    "compute_precision:\n"
    "  grad_scaler: true\n"
    "  teacher:\n"
    "    backbone:\n"
    "      sharding_strategy: SHARD_GRAD_OP\n"
    "      mixed_precision:\n"
    "        param_dtype: fp16\n"
    "        reduce_dtype: fp16\n"
    "        buffer_dtype: fp32\n"
    "  student:\n"
    "    dino_head:\n"
    "      sharding_strategy: SHARD_GRAD_OP\n"
    "dino:\n"
    "  loss_weight: 1.0\n"
    "  head_n_prototypes: 65536\n"
    "  head_bottleneck_dim: 256\n"
    "  head_nlayers: 3\n"
    "  head_hidden_dim: 2048\n"
    "  koleo_loss_weight: 0.1\n"
    "ibot:\n"
    "  loss_weight: 1.0\n"
    "  mask_sample_probability: 0.5\n"
    "  mask_ratio_min_max:\n"
    "  - 0.1\n"
    "  - 0.5\n"
    "  separate_head: false\n"
    "  head_n_prototypes: 65536\n"
    "  head_bottleneck_dim: 256\n"
    "  head_nlayers: 3\n"
    "  head_hidden_dim: 2048\n"
    "train:\n"
    "  batch_size_per_gpu: 64\n"
    "  dataset_path: ImageNet:split=TRAIN\n"
    "  output_dir: .\n"
    "  saveckp_freq: 20\n"
    "  seed: 0\n"
    "  num_workers: 10\n"
    "  OFFICIAL_EPOCH_LENGTH: 1250\n"
    "  cache_dataset: true\n"
    "  centering: \"centering\" # or \"sinkhorn_knopp\"\n"
    "student:\n"
    "  arch: vit_large\n"
    "  patch_size: 16\n"
    "  drop_path_rate: 0.3\n"
    "  layerscale: 1.0e-05\n"
    "  drop_path_uniform: true\n"
    "  pretrained_weights: ''\n"
    "  ffn_layer: \"mlp\"\n"
    "  block_chunks: 0\n"
    "  qkv_bias: true\n"
    "  proj_bias: true\n"
    "  ffn_bias: true\n"
    "  num_register_tokens: 0\n"
    "  interpolate_antialias: false\n"
    "  interpolate_offset: 0.1\n"
    "teacher:\n"
    "  momentum_teacher: 0.992\n"
    "  final_momentum_teacher: 1\n"
    "  warmup_teacher_temp: 0.04\n"
    "  teacher_temp: 0.07\n"
    "  warmup_teacher_temp_epochs: 30\n"
    "optim:\n"
    "  epochs: 100\n"
    "  weight_decay: 0.04\n"
    "  weight_decay_end: 0.4\n"
    "  base_lr: 0.004  # learning rate for a batch size of 1024\n"
    "  lr: 0.  # will be set after applying scaling rule\n"
    "  warmup_epochs: 10\n"
    "  min_lr: 1.0e-06\n"
    "  clip_grad: 3.0\n"
    "  freeze_last_layer_epochs: 1\n"
    "  scaling_rule: sqrt_wrt_1024\n"
    "  patch_embed_lr_mult: 0.2\n"
    "  layerwise_decay: 0.9\n"
    "  adamw_beta1: 0.9\n"
    "  adamw_beta2: 0.999\n"
    "crops:\n"
    "  global_crops_scale:\n"
    "  - 0.32\n"
    "  - 1.0\n"
    "  local_crops_number: 8\n"
    "  local_crops_scale:\n"
    "  - 0.05\n"
    "  - 0.32\n"
    "  global_crops_size: 224\n"
    "  local_crops_size: 96\n"
    "evaluation:\n"
    "  eval_period_iterations: 12500\n";

/* dinov2/configs/train/vitl14.yaml's structure and values. */
static const char vitl14[] =
    "dino:\n"
    "  head_n_prototypes: 131072\n"
    "  head_bottleneck_dim: 384\n"
    "ibot:\n"
    "  separate_head: true\n"
    "  head_n_prototypes: 131072\n"
    "train:\n"
    "  batch_size_per_gpu: 32\n"
    "  dataset_path: ImageNet22k\n"
    "  centering: sinkhorn_knopp\n"
    "student:\n"
    "  arch: vit_large\n"
    "  patch_size: 14\n"
    "  drop_path_rate: 0.4\n"
    "  ffn_layer: swiglufused\n"
    "  block_chunks: 4\n"
    "teacher:\n"
    "  momentum_teacher: 0.994\n"
    "optim:\n"
    "  epochs: 500\n"
    "  weight_decay_end: 0.2\n"
    "  base_lr: 2.0e-04  # learning rate for a batch size of 1024\n"
    "  warmup_epochs: 80\n"
    "  layerwise_decay: 1.0\n"
    "crops:\n"
    "  local_crops_size: 98";

static void test_official_default_equals_builtin(void **state)
{
    (void)state;
    recipe a, b;
    recipe_defaults(&a);
    recipe_defaults(&b);
    /* Start b from something else so that every value must come from the file. */
    memset(&b, 0x5a, offsetof(recipe, ignored));
    b.ignored[0] = '\0';
    snprintf(b.student.arch, RECIPE_STR, "vit_small");
    b.student.pretrained_weights[0] = 'x';
    b.student.pretrained_weights[1] = '\0';
    b.crops.paper_probabilities = 0;
    b.train.threads = 0;
    b.train.recompute_blocks = -1; /* lvd's own keys are not in the official file */
    b.distillation.enabled = 0;    /* nor is dinov3's distillation section */
    b.distillation.full_cfg_path[0] = b.distillation.checkpoint_path[0] = '\0';
    assert_int_equal(recipe_load_file(&b, write_file("ssl_default_config.yaml", ssl_default)), 0);
    assert_string_equal(b.student.arch, "vit_large");
    assert_string_equal(b.student.pretrained_weights, "");
    assert_int_equal(b.dino.head_n_prototypes, 65536);
    assert_int_equal(b.train.official_epoch_length, 1250);
    assert_true(b.ibot.mask_ratio_min_max[0] == 0.1 && b.ibot.mask_ratio_min_max[1] == 0.5);
    assert_true(b.student.layerscale == 1.0e-05);
    assert_true(b.optim.base_lr == 0.004 && b.optim.lr == 0.0);
    assert_int_equal(b.train.centering, RECIPE_CENTERING);
    assert_true(b.teacher.final_momentum_teacher == 1.0);
    /* Every known value equals the built-in default (the struct, padding aside, field by field via dump). */
    char da[8192], db[8192];
    assert_true(recipe_dump(&a, da, sizeof da) > 0);
    assert_true(recipe_dump(&b, db, sizeof db) > 0);
    assert_string_equal(da, db);
    /* The GPU-only entries were accepted and listed once each. */
    assert_string_equal(recipe_ignored(&b), "MODEL, compute_precision, train.dataset_path, train.output_dir, "
                                            "train.cache_dataset, student.block_chunks");
}

static void test_vitl14_over_default(void **state)
{
    (void)state;
    recipe r;
    recipe_defaults(&r);
    assert_int_equal(recipe_load_file(&r, write_file("vitl14.yaml", vitl14)), 0);
    assert_int_equal(r.dino.head_n_prototypes, 131072);
    assert_int_equal(r.dino.head_bottleneck_dim, 384);
    assert_int_equal(r.ibot.separate_head, 1);
    assert_int_equal(r.ibot.head_bottleneck_dim, 256); /* not in vitl14.yaml: the default stays */
    assert_int_equal(r.train.centering, RECIPE_SINKHORN_KNOPP);
    assert_int_equal(r.student.patch_size, 14);
    assert_string_equal(r.student.ffn_layer, "swiglufused");
    assert_true(r.optim.base_lr == 2.0e-04 && r.optim.weight_decay == 0.04 && r.optim.weight_decay_end == 0.2);
    assert_int_equal(r.crops.local_crops_size, 98);
    assert_int_equal(r.crops.global_crops_size, 224);
    /* lr = base_lr * sqrt(batch * ranks / 1024): 32 x 8 ranks */
    assert_int_equal(recipe_finish(&r, 8), 0);
    assert_true(fabs(r.optim.lr - 2.0e-04 * sqrt(256.0 / 1024.0)) < 1e-18);
}

static void test_overrides(void **state)
{
    (void)state;
    recipe r;
    recipe_defaults(&r);
    assert_int_equal(recipe_set(&r, "train.batch_size_per_gpu=16", "command line"), 0);
    assert_int_equal(recipe_set(&r, "ibot.mask_ratio_min_max=[0.2, 0.4]", "command line"), 0);
    assert_int_equal(recipe_set(&r, "student.arch=vit_small", "command line"), 0);
    assert_int_equal(recipe_set(&r, "student.patch_size=14", "command line"), 0);
    assert_int_equal(recipe_set(&r, "crops.local_crops_size=98", "command line"), 0);
    assert_int_equal(recipe_set(&r, "crops.paper_probabilities=true", "command line"), 0);
    assert_int_equal(recipe_set(&r, "optim.lr=0.5", "command line"), 0);
    assert_int_equal(recipe_set(&r, "compute_precision.grad_scaler=false", "command line"), 0);
    assert_int_equal(r.train.batch_size_per_gpu, 16);
    assert_true(r.ibot.mask_ratio_min_max[0] == 0.2 && r.ibot.mask_ratio_min_max[1] == 0.4);
    assert_string_equal(r.student.arch, "vit_small");
    assert_int_equal(r.crops.paper_probabilities, 1);
    assert_int_equal(recipe_finish(&r, 1), 0);
    assert_true(r.optim.lr == 0.5); /* a given lr is kept */
    assert_string_equal(recipe_ignored(&r), "compute_precision");
}

static void expect_error(const char *file_text, const char *needle)
{
    recipe r;
    recipe_defaults(&r);
    assert_int_equal(recipe_load_file(&r, write_file("bad.yaml", file_text)), -1);
    if (!strstr(lvd_errmsg(), needle))
        fail_msg("error '%s' does not contain '%s'", lvd_errmsg(), needle);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error("optim:\n  base_lr: 0.1\n  bse_lr: 0.2\n", "bad.yaml:3: unknown key 'optim.bse_lr'");
    expect_error("dino:\n  head_n_prototypes: lots\n", "bad.yaml:2: dino.head_n_prototypes: 'lots' is not an integer");
    expect_error("dino:\n  head_n_prototypes: 1.5\n", "not an integer");
    expect_error("ibot:\n  mask_ratio_min_max: 0.3\n", "expected a list of two numbers");
    expect_error("ibot:\n  mask_ratio_min_max: [0.5, 0.1]\n", "the first value is larger");
    expect_error("ibot:\n  mask_sample_probability: 1.5\n", "outside [0, 1]");
    expect_error("train:\n  centering: sinkhorn\n", "not centering or sinkhorn_knopp");
    expect_error("student:\n  arch: vit_huge\n", "'vit_huge' is not one of vit_small");
    expect_error("student:\n  qkv_bias: yes please\n", "not true or false");
    expect_error("optim: 3\n", "unknown key 'optim' (a section");
    expect_error("- a\n- b\n", "must be a mapping");
    expect_error("optim:\n  base_lr: [1\n", "bad.yaml:");
    recipe r;
    recipe_defaults(&r);
    assert_int_equal(recipe_set(&r, "optim.nope=1", "command line"), -1);
    assert_non_null(strstr(lvd_errmsg(), "command line: unknown key 'optim.nope'"));
    assert_int_equal(recipe_set(&r, "optim.base_lr", "command line"), -1);
    assert_non_null(strstr(lvd_errmsg(), "expected key=value"));
    assert_int_equal(recipe_load_file(&r, "/nonexistent/c.yaml"), -1);
    assert_non_null(strstr(lvd_errmsg(), "/nonexistent/c.yaml"));
    /* recipe_finish: crops that do not fit the patch size */
    recipe_defaults(&r);
    r.student.patch_size = 14; /* 224 and 96: 96 is not a multiple of 14 */
    assert_int_equal(recipe_finish(&r, 1), -1);
    assert_non_null(strstr(lvd_errmsg(), "multiples of student.patch_size 14"));
}

static void test_dump_reads_back(void **state)
{
    (void)state;
    recipe a, b;
    recipe_defaults(&a);
    assert_int_equal(recipe_load_file(&a, write_file("vitl14.yaml", vitl14)), 0);
    assert_int_equal(recipe_set(&a, "student.pretrained_weights=/tmp/a \"quoted\" \\ path", "t"), 0);
    a.optim.base_lr = 1.0 / 3.0;
    a.train.seed = 1234567890123LL;
    char text[8192], again[8192];
    int n = recipe_dump(&a, text, sizeof text);
    assert_true(n > 0);
    recipe_defaults(&b);
    assert_int_equal(recipe_load_file(&b, write_file("config.yaml", text)), 0);
    assert_int_equal(recipe_dump(&b, again, sizeof again), n);
    assert_string_equal(text, again);
    assert_true(b.optim.base_lr == 1.0 / 3.0);
    assert_int_equal(b.train.seed, 1234567890123LL);
    assert_string_equal(b.student.pretrained_weights, "/tmp/a \"quoted\" \\ path");
    assert_int_equal(recipe_dump(&a, text, 64), -1); /* too small a buffer */
}

/* The distillation section: defaults (off, no paths), a file and key=value set it, the dump reads back, and
 * enabled without a checkpoint or with a value that is not a bool is an error naming the key. */
static void test_distillation_keys(void **state)
{
    (void)state;
    recipe r, b;
    recipe_defaults(&r);
    assert_int_equal(r.distillation.enabled, 0);
    assert_string_equal(r.distillation.checkpoint_path, "");
    assert_string_equal(r.distillation.full_cfg_path, "");
    assert_int_equal(recipe_finish(&r, 1), 0);
    recipe_defaults(&r);
    assert_int_equal(recipe_load_file(&r, write_file("distill.yaml", "distillation:\n  enabled: true\n"
                                                     "  checkpoint_path: /runs/g/training_state.safetensors\n")),
                     0);
    assert_int_equal(r.distillation.enabled, 1);
    assert_string_equal(r.distillation.checkpoint_path, "/runs/g/training_state.safetensors");
    assert_string_equal(r.distillation.full_cfg_path, "");
    assert_int_equal(recipe_set(&r, "distillation.full_cfg_path=/runs/g/config.yaml", "command line"), 0);
    assert_int_equal(recipe_finish(&r, 1), 0);
    char text[8192];
    assert_true(recipe_dump(&r, text, sizeof text) > 0);
    assert_non_null(strstr(text, "distillation:\n  enabled: true\n  full_cfg_path: \"/runs/g/config.yaml\"\n"
                                 "  checkpoint_path: \"/runs/g/training_state.safetensors\"\n"));
    recipe_defaults(&b);
    assert_int_equal(recipe_load_file(&b, write_file("config.yaml", text)), 0);
    assert_int_equal(b.distillation.enabled, 1);
    assert_string_equal(b.distillation.full_cfg_path, "/runs/g/config.yaml");

    expect_error("distillation:\n  enabled: maybe\n", "bad.yaml:2: distillation.enabled: 'maybe' is not true or false");
    expect_error("distillation:\n  teacher: x\n", "unknown key 'distillation.teacher'");
    recipe_defaults(&r);
    assert_int_equal(recipe_set(&r, "distillation.enabled=true", "command line"), 0);
    assert_int_equal(recipe_finish(&r, 1), -1);
    assert_non_null(strstr(lvd_errmsg(), "distillation.enabled needs distillation.checkpoint_path"));
}

/* Every preset of schemas/train/ loads over the defaults and passes recipe_finish. */
static void test_presets(void **state)
{
    (void)state;
    const char *root = getenv("LVD_SOURCE_ROOT");
    assert_non_null(root);
    static const struct {
        const char *file, *arch;
        int32_t patch, local;
    } presets[] = {{"vits14.yaml", "vit_small", 14, 98},  {"vitb14.yaml", "vit_base", 14, 98},
                   {"vitl14.yaml", "vit_large", 14, 98},  {"vitg14.yaml", "vit_giant2", 14, 98},
                   {"fmnist-pico.yaml", "vit_pico", 14, 28}};
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/schemas/train/%s", root, presets[i].file);
        recipe r;
        recipe_defaults(&r);
        if (recipe_load_file(&r, path) != 0 || recipe_finish(&r, 1) != 0)
            fail_msg("%s: %s", presets[i].file, lvd_errmsg());
        assert_string_equal(r.student.arch, presets[i].arch);
        assert_int_equal(r.student.patch_size, presets[i].patch);
        assert_int_equal(r.crops.local_crops_size, presets[i].local);
        assert_string_equal(recipe_ignored(&r), "");
    }
}

int main(void)
{
    if (scratch_make(scratch, sizeof scratch, "recipe") != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_official_default_equals_builtin),
        cmocka_unit_test(test_vitl14_over_default),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_dump_reads_back),
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_distillation_keys),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    scratch_remove(scratch);
    return rc;
}
