/* test_vit_io.c — ViT checkpoints: save -> load is bit-exact, the architecture is inferred from the tensors
 * (depth, D, patch, grid, FFN kind and size, registers, layerscale) and from metadata / defaults / overrides
 * (heads, pos_mode); missing, unexpected and mis-shaped tensors are errors naming each one; a "backbone."
 * prefix is accepted; official-style .pth files converted by scripts/convert_checkpoint.py load with torch's
 * values (fixtures from tests/unit/tensor_ref.py). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "safetensors.h"
#include "sha256.h"
#include "vit.h"
#include "vit_io.h"

static char scratch[64];
static char srcdir[512]; /* tests/ */

/* ---------------------------------------------------------------------------------------------------- */
/* helpers */

static vit_config cfg_mlp(void)
{
    vit_config c = {.patch = 4, .pos_grid = 3, .dim = 32, .depth = 2, .heads = 2, .ffn_hidden = 48,
                    .ffn = VIT_FFN_MLP, .n_reg = 0, .pos_mode = VIT_POS_OFFSET, .layerscale = 1};
    return c;
}

static vit_config cfg_swiglu(void)
{
    vit_config c = {.patch = 2, .pos_grid = 4, .dim = 48, .depth = 3, .heads = 3, .ffn_hidden = 0,
                    .ffn = VIT_FFN_SWIGLU, .n_reg = 4, .pos_mode = VIT_POS_SIZE_AA, .layerscale = 1};
    c.ffn_hidden = vit_swiglu_hidden(48);
    return c;
}

static vit_config cfg_plain(void)
{
    /* no layerscale, registers with the offset mode (only metadata can say so), 7 blocks */
    vit_config c = {.patch = 3, .pos_grid = 2, .dim = 16, .depth = 7, .heads = 4, .ffn_hidden = 20,
                    .ffn = VIT_FFN_MLP, .n_reg = 2, .pos_mode = VIT_POS_OFFSET, .layerscale = 0};
    return c;
}

static vit_model *make_model(const vit_config *c, uint64_t seed)
{
    vit_model *m;
    if (vit_create(c, &m) != 0)
        fail_msg("vit_create: %s", lvd_errmsg());
    vit_init_random(m, seed, 1e-5f);
    /* biases and LayerNorms start at constants; make every parameter distinct so a mix-up shows */
    for (size_t i = 0; i < m->n_params; i++)
        m->param_mem[i] += (float)((i * 2654435761u) % 1000) * 1e-4f;
    return m;
}

static void assert_cfg_equal(const vit_config *a, const vit_config *b)
{
    assert_int_equal(a->patch, b->patch);
    assert_int_equal(a->pos_grid, b->pos_grid);
    assert_int_equal(a->dim, b->dim);
    assert_int_equal(a->depth, b->depth);
    assert_int_equal(a->heads, b->heads);
    assert_int_equal(a->ffn_hidden, b->ffn_hidden);
    assert_int_equal(a->ffn, b->ffn);
    assert_int_equal(a->n_reg, b->n_reg);
    assert_int_equal(a->pos_mode, b->pos_mode);
    assert_int_equal(a->layerscale, b->layerscale);
}

/* Variants of a model's state dict written with st_write. */
typedef struct variant {
    const char *prefix;    /* before every name, or NULL */
    const char *drop[4];   /* names left out */
    const char *extra;     /* a (3,) tensor added, or NULL */
    const char *reshape;   /* this tensor's last dimension + 1 */
    const char *unprefix;  /* with prefix: this one tensor keeps its bare name */
    int heads_tensors;     /* add dino_head.* / ibot_head.* tensors */
    const char *meta_heads, *meta_pos; /* metadata values, or NULL for none */
} variant;

static void write_variant(const vit_model *m, const char *path, const variant *v)
{
    size_t cap = m->n_tensors + 4;
    st_write_tensor *t = calloc(cap, sizeof *t);
    char (*names)[VIT_NAME_MAX + 16] = calloc(cap, sizeof *names);
    float *big = NULL, zeros[16] = {0};
    assert_non_null(t);
    assert_non_null(names);
    size_t n = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const vit_tensor *vt = &m->tensors[i];
        int skip = 0;
        for (int k = 0; k < 4; k++)
            if (v->drop[k] && strcmp(v->drop[k], vt->name) == 0)
                skip = 1;
        if (skip)
            continue;
        int bare = v->unprefix && strcmp(v->unprefix, vt->name) == 0;
        snprintf(names[n], sizeof names[n], "%s%s", v->prefix && !bare ? v->prefix : "", vt->name);
        t[n].name = names[n];
        t[n].ndim = vt->ndim;
        for (int32_t k = 0; k < vt->ndim; k++)
            t[n].shape[k] = vt->shape[k];
        t[n].data = m->param_mem + vt->offset;
        if (v->reshape && strcmp(v->reshape, vt->name) == 0) {
            t[n].shape[vt->ndim - 1]++;
            size_t cnt = 1;
            for (int32_t k = 0; k < vt->ndim; k++)
                cnt *= (size_t)t[n].shape[k];
            big = calloc(cnt, sizeof *big);
            assert_non_null(big);
            t[n].data = big;
        }
        n++;
    }
    if (v->extra) {
        snprintf(names[n], sizeof names[n], "%s", v->extra);
        t[n] = (st_write_tensor){names[n], 1, {3}, zeros};
        n++;
    }
    if (v->heads_tensors) {
        t[n++] = (st_write_tensor){"dino_head.mlp.0.weight", 2, {2, 4}, zeros};
        t[n++] = (st_write_tensor){"ibot_head.last_layer.weight_g", 1, {3}, zeros};
    }
    const char *meta[4] = {"heads", v->meta_heads, "pos_mode", v->meta_pos};
    size_t nm = 0;
    if (v->meta_heads)
        nm = 1;
    if (v->meta_pos) {
        meta[2 * nm] = "pos_mode";
        meta[2 * nm + 1] = v->meta_pos;
        nm++;
    }
    if (st_write(path, t, n, meta, nm) != 0)
        fail_msg("st_write: %s", lvd_errmsg());
    free(big);
    free(names);
    free(t);
}

/* vit_load must fail with a message containing the path and every given phrase (NULL-terminated). */
static void expect_load_error(const char *path, const char *const *overrides, size_t n_ov, ...)
{
    vit_model *m = (vit_model *)(uintptr_t)1;
    lvd_err_clear();
    assert_int_equal(vit_load(path, overrides, n_ov, &m), -1);
    assert_null(m);
    const char *msg = lvd_errmsg();
    if (!strstr(msg, path))
        fail_msg("error does not name %s: %s", path, msg);
    va_list ap;
    va_start(ap, n_ov);
    const char *w;
    while ((w = va_arg(ap, const char *)))
        if (!strstr(msg, w))
            fail_msg("error lacks '%s': %s", w, msg);
    va_end(ap);
}

static void expect_same_params(const vit_model *a, const vit_model *b)
{
    assert_int_equal(a->n_params, b->n_params);
    assert_int_equal(a->n_tensors, b->n_tensors);
    assert_memory_equal(a->param_mem, b->param_mem, a->n_params * sizeof(float));
}

/* ---------------------------------------------------------------------------------------------------- */
/* round trip */

static void round_trip(const vit_config *c, const char *file)
{
    char p[256], p2[300];
    scratch_join(p, sizeof p, scratch, file);
    vit_model *m = make_model(c, 1234);
    if (vit_save(m, p, 0) != 0)
        fail_msg("vit_save: %s", lvd_errmsg());
    vit_model *l;
    if (vit_load(p, NULL, 0, &l) != 0)
        fail_msg("vit_load: %s", lvd_errmsg());
    assert_cfg_equal(&l->cfg, c);
    expect_same_params(m, l);
    for (size_t i = 0; i < m->n_tensors; i++)
        assert_string_equal(m->tensors[i].name, l->tensors[i].name);
    vit_config ic;
    if (vit_io_config(p, &ic) != 0)
        fail_msg("vit_io_config: %s", lvd_errmsg());
    assert_cfg_equal(&ic, c);

    /* the file holds the official names and metadata */
    st_file *f;
    assert_int_equal(st_open(p, &f), 0);
    assert_int_equal(st_count(f), m->n_tensors);
    assert_non_null(st_find(f, "cls_token"));
    assert_non_null(st_find(f, "blocks.1.attn.qkv.weight"));
    assert_string_equal(st_meta(f, "format"), "lvd-vit");
    char h[16];
    snprintf(h, sizeof h, "%d", c->heads);
    assert_string_equal(st_meta(f, "heads"), h);
    assert_string_equal(st_meta(f, "pos_mode"), c->pos_mode == VIT_POS_SIZE_AA ? "size_aa" : "offset");
    st_close(f);

    /* saving the loaded model gives the same bytes */
    snprintf(p2, sizeof p2, "%s.again", p);
    assert_int_equal(vit_save(l, p2, 0), 0);
    char s1[65], s2[65];
    assert_int_equal(sha256_file(p, s1), 0);
    assert_int_equal(sha256_file(p2, s2), 0);
    assert_string_equal(s1, s2);

    /* gradients: saved under the same names, loadable as a model */
    assert_int_equal(vit_save(m, p2, 1), -1); /* none allocated yet */
    assert_non_null(strstr(lvd_errmsg(), "gradients"));
    assert_int_equal(vit_alloc_grads(m), 0);
    for (size_t i = 0; i < m->n_params; i++)
        m->grad_mem[i] = (float)i * -0.5f;
    assert_int_equal(vit_save(m, p2, 1), 0);
    vit_model *g;
    assert_int_equal(vit_load(p2, NULL, 0, &g), 0);
    assert_memory_equal(g->param_mem, m->grad_mem, m->n_params * sizeof(float));
    vit_free(g);
    vit_free(l);
    vit_free(m);
}

static void test_round_trip(void **state)
{
    (void)state;
    vit_config a = cfg_mlp(), b = cfg_swiglu(), c = cfg_plain();
    round_trip(&a, "mlp.safetensors");
    round_trip(&b, "swiglu.safetensors");
    round_trip(&c, "plain.safetensors");
}

/* sha256_file (the checkpoint identity lvd-embed records) against sha256sum, across 64 KiB blocks. */
static void test_sha256(void **state)
{
    (void)state;
    char p[256], cmd[400], want[80] = {0};
    scratch_join(p, sizeof p, scratch, "hashme.bin");
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    for (int i = 0; i < 300000; i++)
        fputc((i * 7) & 0xff, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "sha256sum '%s'", p);
    FILE *s = popen(cmd, "r");
    assert_non_null(s);
    assert_non_null(fgets(want, sizeof want, s));
    pclose(s);
    want[64] = '\0';
    char got[65];
    assert_int_equal(sha256_file(p, got), 0);
    assert_string_equal(got, want);
    scratch_join(p, sizeof p, scratch, "absent.bin");
    assert_int_equal(sha256_file(p, got), -1);
    assert_non_null(strstr(lvd_errmsg(), p));
}

/* ---------------------------------------------------------------------------------------------------- */
/* inference of heads and pos_mode */

static void test_heads_and_pos_mode(void **state)
{
    (void)state;
    char p[256];
    vit_config ic;
    vit_model *l;

    /* D 128, no metadata: heads 128 / 64 = 2, offset without registers, size_aa with them */
    vit_config c = cfg_mlp();
    c.dim = 128;
    c.heads = 8;
    c.depth = 1;
    vit_model *m = make_model(&c, 5);
    scratch_join(p, sizeof p, scratch, "nometa.safetensors");
    write_variant(m, p, &(variant){0});
    assert_int_equal(vit_io_config(p, &ic), 0);
    assert_int_equal(ic.heads, 2);
    assert_int_equal(ic.pos_mode, VIT_POS_OFFSET);
    assert_int_equal(ic.dim, 128);
    assert_int_equal(ic.depth, 1);
    /* overrides win */
    const char *ov[] = {"heads=8", "pos_mode=size_aa"};
    assert_int_equal(vit_load(p, ov, 2, &l), 0);
    assert_int_equal(l->cfg.heads, 8);
    assert_int_equal(l->cfg.pos_mode, VIT_POS_SIZE_AA);
    expect_same_params(m, l);
    vit_free(l);
    vit_free(m);

    c.n_reg = 4;
    m = make_model(&c, 6);
    scratch_join(p, sizeof p, scratch, "nometa_reg.safetensors");
    write_variant(m, p, &(variant){0});
    assert_int_equal(vit_io_config(p, &ic), 0);
    assert_int_equal(ic.n_reg, 4);
    assert_int_equal(ic.pos_mode, VIT_POS_SIZE_AA);
    /* metadata wins over the default, overrides over metadata */
    scratch_join(p, sizeof p, scratch, "meta_reg.safetensors");
    write_variant(m, p, &(variant){.meta_heads = "4", .meta_pos = "offset"});
    assert_int_equal(vit_io_config(p, &ic), 0);
    assert_int_equal(ic.heads, 4);
    assert_int_equal(ic.pos_mode, VIT_POS_OFFSET);
    const char *ov2[] = {"pos_mode=size_aa"};
    assert_int_equal(vit_load(p, ov2, 1, &l), 0);
    assert_int_equal(l->cfg.heads, 4);
    assert_int_equal(l->cfg.pos_mode, VIT_POS_SIZE_AA);
    vit_free(l);

    /* bad overrides and metadata */
    const char *bad1[] = {"depth=3"}, *bad2[] = {"heads=x"}, *bad3[] = {"pos_mode=bicubic"}, *bad4[] = {"heads=5"};
    expect_load_error(p, bad1, 1, "depth=3", NULL);
    expect_load_error(p, bad2, 1, "heads=x", NULL);
    expect_load_error(p, bad3, 1, "pos_mode=bicubic", NULL);
    expect_load_error(p, bad4, 1, "heads 5", NULL); /* 128 % 5 != 0 */
    scratch_join(p, sizeof p, scratch, "badmeta.safetensors");
    write_variant(m, p, &(variant){.meta_heads = "many"});
    expect_load_error(p, NULL, 0, "heads", "many", NULL);
    write_variant(m, p, &(variant){.meta_pos = "nearest"});
    expect_load_error(p, NULL, 0, "pos_mode", "nearest", NULL);
    vit_free(m);

    /* D 32 without metadata: heads cannot be guessed; heads= makes it load */
    c = cfg_mlp();
    m = make_model(&c, 7);
    scratch_join(p, sizeof p, scratch, "d32.safetensors");
    write_variant(m, p, &(variant){0});
    expect_load_error(p, NULL, 0, "heads", "32", NULL);
    const char *ov3[] = {"heads=2"};
    assert_int_equal(vit_load(p, ov3, 1, &l), 0);
    assert_cfg_equal(&l->cfg, &c);
    expect_same_params(m, l);
    vit_free(l);
    vit_free(m);
}

/* ---------------------------------------------------------------------------------------------------- */
/* bad tensors */

static void test_bad_tensors(void **state)
{
    (void)state;
    char p[256];
    vit_config c = cfg_mlp();
    vit_model *m = make_model(&c, 9), *l;
    scratch_join(p, sizeof p, scratch, "bad.safetensors");

    write_variant(m, p, &(variant){.meta_heads = "2", .drop = {"blocks.1.attn.proj.bias"}});
    expect_load_error(p, NULL, 0, "missing tensor blocks.1.attn.proj.bias", NULL);

    write_variant(m, p,
                  &(variant){.meta_heads = "2", .drop = {"blocks.0.ls2.gamma", "norm.bias", "mask_token"}});
    expect_load_error(p, NULL, 0, "missing tensor blocks.0.ls2.gamma", "missing tensor norm.bias",
                      "missing tensor mask_token", "3 problems", NULL);

    write_variant(m, p, &(variant){.meta_heads = "2", .extra = "blocks.1.attn.extra.weight"});
    expect_load_error(p, NULL, 0, "unexpected tensor blocks.1.attn.extra.weight", NULL);
    write_variant(m, p, &(variant){.meta_heads = "2", .extra = "blocks.x.norm1.weight"});
    expect_load_error(p, NULL, 0, "unexpected tensor blocks.x.norm1.weight", NULL);

    write_variant(m, p, &(variant){.meta_heads = "2", .reshape = "blocks.1.mlp.fc2.weight"});
    expect_load_error(p, NULL, 0, "tensor blocks.1.mlp.fc2.weight has shape (32, 49), expected (32, 48)", NULL);
    write_variant(m, p, &(variant){.meta_heads = "2", .reshape = "mask_token"});
    expect_load_error(p, NULL, 0, "tensor mask_token has shape (1, 33), expected (1, 32)", NULL);

    /* an SwiGLU key in an MLP model */
    write_variant(m, p, &(variant){.meta_heads = "2", .extra = "blocks.0.mlp.w3.bias"});
    expect_load_error(p, NULL, 0, "unexpected tensor blocks.0.mlp.w3.bias", NULL);

    /* keys the architecture is inferred from */
    write_variant(m, p, &(variant){.meta_heads = "2", .drop = {"cls_token"}});
    expect_load_error(p, NULL, 0, "cls_token", NULL);
    write_variant(m, p, &(variant){.meta_heads = "2", .drop = {"patch_embed.proj.weight"}});
    expect_load_error(p, NULL, 0, "patch_embed.proj.weight", NULL);
    write_variant(m, p, &(variant){.meta_heads = "2", .drop = {"blocks.0.mlp.fc1.weight"}});
    expect_load_error(p, NULL, 0, "blocks.0.mlp.fc1.weight", NULL);

    /* "backbone." prefix, with a training checkpoint's heads */
    write_variant(m, p, &(variant){.prefix = "backbone.", .heads_tensors = 1, .meta_heads = "2"});
    if (vit_load(p, NULL, 0, &l) != 0)
        fail_msg("%s", lvd_errmsg());
    assert_cfg_equal(&l->cfg, &c);
    expect_same_params(m, l);
    vit_free(l);
    write_variant(m, p, &(variant){.prefix = "backbone.", .meta_heads = "2", .unprefix = "norm.bias"});
    expect_load_error(p, NULL, 0, "unexpected tensor norm.bias", "missing tensor backbone.norm.bias", NULL);
    write_variant(m, p, &(variant){.prefix = "backbone.", .meta_heads = "2", .drop = {"blocks.1.norm2.weight"}});
    expect_load_error(p, NULL, 0, "missing tensor backbone.blocks.1.norm2.weight", NULL);

    /* a depth hole: block 5 present, 2..4 missing */
    write_variant(m, p, &(variant){.meta_heads = "2", .extra = "blocks.5.norm1.bias"});
    expect_load_error(p, NULL, 0, "missing tensor blocks.2.norm1.weight", NULL);

    /* not a checkpoint at all */
    scratch_join(p, sizeof p, scratch, "absent.safetensors");
    expect_load_error(p, NULL, 0, "cannot open", NULL);
    vit_free(m);
}

/* ---------------------------------------------------------------------------------------------------- */
/* official-style .pth files through scripts/convert_checkpoint.py */

static void check_converted(const char *dir, const char *tag, const vit_config *want)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s.safetensors", dir, tag);
    vit_model *m;
    if (vit_load(p, NULL, 0, &m) != 0)
        fail_msg("vit_load %s: %s", p, lvd_errmsg());
    assert_cfg_equal(&m->cfg, want);
    /* every tensor torch had, with its shape and values; nothing else */
    snprintf(p, sizeof p, "%s/%s.ref", dir, tag);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    char line[512];
    size_t n = 0;
    while (fgets(line, sizeof line, f)) {
        char name[128];
        int nd, used;
        assert_int_equal(sscanf(line, "%127s %d%n", name, &nd, &used), 2);
        const vit_tensor *t = vit_find_tensor(m, name);
        if (!t)
            fail_msg("%s: torch tensor %s not in the model", tag, name);
        assert_int_equal(t->ndim, nd);
        char *s = line + used;
        for (int k = 0; k < nd; k++)
            assert_int_equal(t->shape[k], strtoll(s, &s, 10));
        snprintf(p, sizeof p, "%s/%s.%s.raw", dir, tag, name);
        size_t len;
        uint8_t *raw = scratch_slurp(p, &len);
        assert_int_equal(len, t->count * sizeof(float));
        if (memcmp(raw, m->param_mem + t->offset, len) != 0)
            fail_msg("%s: tensor %s differs from torch's values", tag, name);
        free(raw);
        n++;
    }
    fclose(f);
    assert_int_equal(n, m->n_tensors);
    vit_free(m);
}

static void test_converted_checkpoints(void **state)
{
    (void)state;
    char dir[128], cmd[4096];
    scratch_join(dir, sizeof dir, scratch, "dinov2");
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 '%s/unit/tensor_ref.py' fake-dinov2 '%s' && "
             "/usr/bin/python3 '%s/../scripts/convert_checkpoint.py' '%s/hub.pth' '%s/hub.safetensors' >/dev/null && "
             "/usr/bin/python3 '%s/../scripts/convert_checkpoint.py' --heads 2 '%s/teacher.pth' "
             "'%s/teacher.safetensors' >/dev/null",
             srcdir, dir, srcdir, dir, dir, srcdir, dir, dir);
    if (system(cmd) != 0)
        fail_msg("fixture generation or conversion failed: %s", cmd);
    vit_config hub = {.patch = 4, .pos_grid = 3, .dim = 64, .depth = 3, .heads = 1, .ffn_hidden = 96,
                      .ffn = VIT_FFN_MLP, .n_reg = 0, .pos_mode = VIT_POS_OFFSET, .layerscale = 1};
    vit_config teacher = {.patch = 2, .pos_grid = 4, .dim = 32, .depth = 4, .heads = 2, .ffn_hidden = 40,
                          .ffn = VIT_FFN_SWIGLU, .n_reg = 4, .pos_mode = VIT_POS_SIZE_AA, .layerscale = 1};
    check_converted(dir, "hub", &hub);
    check_converted(dir, "teacher", &teacher);
}

static int setup(void **state)
{
    (void)state;
    return scratch_make(scratch, sizeof scratch, "vitio");
}

static int teardown(void **state)
{
    (void)state;
    return scratch_remove(scratch);
}

int main(int argc, char **argv)
{
    snprintf(srcdir, sizeof srcdir, "%s", argc > 1 ? argv[1] : "tests");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_heads_and_pos_mode),
        cmocka_unit_test(test_bad_tensors),
        cmocka_unit_test(test_converted_checkpoints),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
