/* vit_io.c — ViT checkpoints as safetensors with the official DINOv2 key names: see vit_io.h. */
#include "vit_io.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "safetensors.h"

#define BACKBONE_PREFIX "backbone."

/* A checkpoint being read: the open file and the prefix its backbone keys carry ("" or "backbone."). */
typedef struct ckpt {
    const char *path;
    st_file *st;
    const char *prefix;
} ckpt;

/* Keys of a training checkpoint's projection heads, which a backbone load ignores. */
static int is_head_key(const char *name)
{
    return strncmp(name, "dino_head.", 10) == 0 || strncmp(name, "ibot_head.", 10) == 0;
}

static const st_tensor *ck_find(const ckpt *c, const char *name)
{
    char full[VIT_NAME_MAX + 16];
    snprintf(full, sizeof full, "%s%s", c->prefix, name);
    return st_find(c->st, full);
}

/* The model-relative name of file tensor t, or NULL when it is not a backbone key (head or foreign prefix). */
static const char *ck_local_name(const ckpt *c, const st_tensor *t)
{
    size_t pl = strlen(c->prefix);
    if (strncmp(t->name, c->prefix, pl) != 0)
        return NULL;
    return t->name + pl;
}

static void shape_str(char *out, size_t cap, int32_t ndim, const int64_t *shape)
{
    size_t o = 0;
    o += (size_t)snprintf(out, cap, "(");
    for (int32_t i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (o < cap)
        snprintf(out + o, cap - o, ")");
}

/* Message accumulator: problems joined by "; ", cut with "..." when the buffer is full. */
typedef struct problems {
    char buf[LVD_ERR_MAX - 128];
    size_t len;
    int n, full;
} problems;

static void problem(problems *p, const char *fmt, ...) LVD_PRINTF(2, 3);
static void problem(problems *p, const char *fmt, ...)
{
    p->n++;
    if (p->full)
        return;
    char one[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(one, sizeof one, fmt, ap);
    va_end(ap);
    const char *sep = p->len ? "; " : "";
    if (p->len + strlen(sep) + strlen(one) + 6 > sizeof p->buf) {
        snprintf(p->buf + p->len, sizeof p->buf - p->len, "%s...", sep);
        p->full = 1;
        return;
    }
    p->len += (size_t)snprintf(p->buf + p->len, sizeof p->buf - p->len, "%s%s", sep, one);
}

static int parse_pos_int(const char *s, int32_t *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end != '\0' || v <= 0 || v > INT32_MAX)
        return -1;
    *out = (int32_t)v;
    return 0;
}

static int parse_pos_mode(const char *s, vit_pos_mode *out)
{
    if (strcmp(s, "offset") == 0)
        *out = VIT_POS_OFFSET;
    else if (strcmp(s, "size_aa") == 0)
        *out = VIT_POS_SIZE_AA;
    else
        return -1;
    return 0;
}

/* Opens path and determines the key prefix. */
static int ck_open(const char *path, ckpt *c)
{
    memset(c, 0, sizeof *c);
    c->path = path;
    c->prefix = "";
    if (st_open(path, &c->st) != 0)
        return -1;
    for (size_t i = 0; i < st_count(c->st); i++)
        if (strncmp(st_at(c->st, i)->name, BACKBONE_PREFIX, strlen(BACKBONE_PREFIX)) == 0) {
            c->prefix = BACKBONE_PREFIX;
            break;
        }
    return 0;
}

/* Infers the configuration from the tensors, metadata and overrides. */
static int ck_config(const ckpt *c, const char *const *overrides, size_t n_overrides, vit_config *cfg)
{
    const char *path = c->path;
    memset(cfg, 0, sizeof *cfg);
    const st_tensor *cls = ck_find(c, "cls_token");
    if (!cls || cls->ndim < 1)
        return lvd_fail("%s: missing tensor %scls_token (needed to infer the model dimension)", path, c->prefix);
    int64_t d = cls->shape[cls->ndim - 1];
    if (d <= 0 || d > INT32_MAX || st_numel(cls) != d)
        return lvd_fail("%s: tensor %scls_token has a bad shape", path, c->prefix);
    cfg->dim = (int32_t)d;

    const st_tensor *pw = ck_find(c, "patch_embed.proj.weight");
    if (!pw)
        return lvd_fail("%s: missing tensor %spatch_embed.proj.weight (needed to infer the patch size)", path,
                        c->prefix);
    if (pw->ndim != 4 || pw->shape[2] != pw->shape[3] || pw->shape[2] <= 0 || pw->shape[2] > 4096) {
        char s[96];
        shape_str(s, sizeof s, pw->ndim, pw->shape);
        return lvd_fail("%s: tensor %spatch_embed.proj.weight has shape %s, expected (D, 3, p, p)", path, c->prefix,
                        s);
    }
    cfg->patch = (int32_t)pw->shape[2];

    const st_tensor *pe = ck_find(c, "pos_embed");
    if (!pe)
        return lvd_fail("%s: missing tensor %spos_embed (needed to infer the position grid)", path, c->prefix);
    if (pe->ndim != 3 || pe->shape[1] < 2) {
        char s[96];
        shape_str(s, sizeof s, pe->ndim, pe->shape);
        return lvd_fail("%s: tensor %spos_embed has shape %s, expected (1, 1 + M*M, D)", path, c->prefix, s);
    }
    int64_t mm = pe->shape[1] - 1, m = 1;
    while ((m + 1) * (m + 1) <= mm)
        m++;
    if (m * m != mm)
        return lvd_fail("%s: tensor %spos_embed has %" PRId64 " patch positions, not a square grid", path,
                        c->prefix, mm);
    cfg->pos_grid = (int32_t)m;

    /* depth: the highest block index + 1 */
    int64_t depth = 0;
    for (size_t i = 0; i < st_count(c->st); i++) {
        const char *n = ck_local_name(c, st_at(c->st, i));
        if (!n || strncmp(n, "blocks.", 7) != 0)
            continue;
        char *end;
        errno = 0;
        long long b = strtoll(n + 7, &end, 10);
        if (errno || end == n + 7 || *end != '.' || b < 0 || b > 100000)
            continue; /* reported as unexpected when loading */
        if (b + 1 > depth)
            depth = b + 1;
    }
    if (depth == 0)
        return lvd_fail("%s: no %sblocks.N.* tensors: cannot infer the depth", path, c->prefix);
    cfg->depth = (int32_t)depth;

    const st_tensor *fc1 = ck_find(c, "blocks.0.mlp.fc1.weight");
    const st_tensor *w12 = ck_find(c, "blocks.0.mlp.w12.weight");
    if (fc1 && w12)
        return lvd_fail("%s: block 0 has both mlp.fc1 and mlp.w12: cannot tell the FFN kind", path);
    if (fc1) {
        if (fc1->ndim != 2 || fc1->shape[0] <= 0 || fc1->shape[0] > INT32_MAX)
            return lvd_fail("%s: tensor %sblocks.0.mlp.fc1.weight has a bad shape", path, c->prefix);
        cfg->ffn = VIT_FFN_MLP;
        cfg->ffn_hidden = (int32_t)fc1->shape[0];
    } else if (w12) {
        if (w12->ndim != 2 || w12->shape[0] <= 0 || w12->shape[0] % 2 != 0 || w12->shape[0] / 2 > INT32_MAX)
            return lvd_fail("%s: tensor %sblocks.0.mlp.w12.weight has a bad shape", path, c->prefix);
        cfg->ffn = VIT_FFN_SWIGLU;
        cfg->ffn_hidden = (int32_t)(w12->shape[0] / 2);
    } else {
        return lvd_fail("%s: missing tensor %sblocks.0.mlp.fc1.weight (or mlp.w12.weight for SwiGLU)", path,
                        c->prefix);
    }

    const st_tensor *reg = ck_find(c, "register_tokens");
    if (reg) {
        if (reg->ndim != 3 || reg->shape[1] <= 0 || reg->shape[1] > 4096)
            return lvd_fail("%s: tensor %sregister_tokens has a bad shape", path, c->prefix);
        cfg->n_reg = (int32_t)reg->shape[1];
    }
    cfg->layerscale = ck_find(c, "blocks.0.ls1.gamma") != NULL;

    /* heads and pos_mode: metadata, else defaults; then overrides */
    int have_heads = 0;
    const char *mh = st_meta(c->st, "heads");
    if (mh) {
        if (parse_pos_int(mh, &cfg->heads) != 0)
            return lvd_fail("%s: metadata heads='%s' is not a positive integer", path, mh);
        have_heads = 1;
    }
    cfg->pos_mode = cfg->n_reg > 0 ? VIT_POS_SIZE_AA : VIT_POS_OFFSET;
    const char *mp = st_meta(c->st, "pos_mode");
    if (mp && parse_pos_mode(mp, &cfg->pos_mode) != 0)
        return lvd_fail("%s: metadata pos_mode='%s' (expected offset or size_aa)", path, mp);
    for (size_t i = 0; i < n_overrides; i++) {
        const char *o = overrides[i];
        if (strncmp(o, "heads=", 6) == 0) {
            if (parse_pos_int(o + 6, &cfg->heads) != 0)
                return lvd_fail("%s: override '%s': heads must be a positive integer", path, o);
            have_heads = 1;
        } else if (strncmp(o, "pos_mode=", 9) == 0) {
            if (parse_pos_mode(o + 9, &cfg->pos_mode) != 0)
                return lvd_fail("%s: override '%s': pos_mode must be offset or size_aa", path, o);
        } else {
            return lvd_fail("%s: unknown override '%s' (known: heads=, pos_mode=)", path, o);
        }
    }
    if (!have_heads) {
        if (cfg->dim % 64 != 0)
            return lvd_fail("%s: no 'heads' metadata and D = %d is not a multiple of 64; pass heads=", path,
                            cfg->dim);
        cfg->heads = cfg->dim / 64;
    }
    if (vit_config_check(cfg) != 0)
        return lvd_fail_ctx("%s: inferred configuration", path);
    return 0;
}

int vit_io_config(const char *path, vit_config *out)
{
    ckpt c;
    if (ck_open(path, &c) != 0)
        return -1;
    int rc = ck_config(&c, NULL, 0, out);
    st_close(c.st);
    return rc;
}

int vit_load(const char *path, const char *const *overrides, size_t n_overrides, vit_model **out)
{
    *out = NULL;
    ckpt c;
    if (ck_open(path, &c) != 0)
        return -1;
    vit_config cfg;
    vit_model *m = NULL;
    int rc = -1;
    if (ck_config(&c, overrides, n_overrides, &cfg) != 0)
        goto out;
    if (vit_create(&cfg, &m) != 0) {
        lvd_fail_ctx("%s", path);
        goto out;
    }

    /* Every model tensor present with its shape and a float dtype; every file tensor known. */
    problems p = {0};
    for (size_t i = 0; i < m->n_tensors; i++) {
        const vit_tensor *vt = &m->tensors[i];
        const st_tensor *t = ck_find(&c, vt->name);
        if (!t) {
            problem(&p, "missing tensor %s%s", c.prefix, vt->name);
            continue;
        }
        int same = t->ndim == vt->ndim;
        for (int32_t k = 0; same && k < t->ndim; k++)
            same = t->shape[k] == vt->shape[k];
        if (!same) {
            char a[96], b[96];
            shape_str(a, sizeof a, t->ndim, t->shape);
            shape_str(b, sizeof b, vt->ndim, vt->shape);
            problem(&p, "tensor %s has shape %s, expected %s", t->name, a, b);
            continue;
        }
        if (t->dtype == ST_OTHER)
            problem(&p, "tensor %s has dtype %s (need F32, F16 or BF16)", t->name, t->dtype_name);
    }
    for (size_t i = 0; i < st_count(c.st); i++) {
        const st_tensor *t = st_at(c.st, i);
        if (is_head_key(t->name))
            continue;
        const char *local = ck_local_name(&c, t);
        if (!local || !vit_find_tensor(m, local))
            problem(&p, "unexpected tensor %s", t->name);
    }
    if (p.n > 0) {
        lvd_fail("%s: %d problem%s: %s", path, p.n, p.n == 1 ? "" : "s", p.buf);
        goto out;
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        const vit_tensor *vt = &m->tensors[i];
        if (st_to_f32(ck_find(&c, vt->name), m->param_mem + vt->offset) != 0) {
            lvd_fail_ctx("%s", path);
            goto out;
        }
    }
    *out = m;
    m = NULL;
    rc = 0;
out:
    vit_free(m);
    st_close(c.st);
    return rc;
}

int vit_save(const vit_model *m, const char *path, int grads)
{
    const float *base = grads ? m->grad_mem : m->param_mem;
    if (!base)
        return lvd_fail("%s: the model has no %s to save", path, grads ? "gradients" : "parameters");
    st_write_tensor *t = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *t);
    if (!t)
        return lvd_fail("%s: out of memory", path);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const vit_tensor *vt = &m->tensors[i];
        t[i].name = vt->name;
        t[i].ndim = vt->ndim;
        for (int32_t k = 0; k < vt->ndim; k++)
            t[i].shape[k] = vt->shape[k];
        t[i].data = base + vt->offset;
    }
    char heads[16];
    snprintf(heads, sizeof heads, "%d", (int)m->cfg.heads);
    const char *meta[] = {"format", "lvd-vit", "heads", heads, "pos_mode",
                          m->cfg.pos_mode == VIT_POS_SIZE_AA ? "size_aa" : "offset"};
    int rc = st_write(path, t, m->n_tensors, meta, 3);
    free(t);
    return rc;
}
