/* vit.c — see vit.h. */
#include "vit.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "posembed.h"
#include "vit_layers.h"

/* ---- configuration --------------------------------------------------------------------------------------- */

int32_t vit_swiglu_hidden(int32_t dim)
{
    int32_t h = (int32_t)(4.0 * dim * 2.0 / 3.0);
    return (h + 7) / 8 * 8;
}

int vit_preset(const char *name, vit_config *out)
{
    static const struct {
        const char *name;
        int32_t dim, depth, heads;
        vit_ffn ffn;
    } presets[] = {
        {"vit_small", 384, 12, 6, VIT_FFN_MLP},   {"vit_base", 768, 12, 12, VIT_FFN_MLP},
        {"vit_large", 1024, 24, 16, VIT_FFN_MLP}, {"vit_giant2", 1536, 40, 24, VIT_FFN_SWIGLU},
        {"vit_tiny", 192, 12, 3, VIT_FFN_MLP},    {"vit_pico", 64, 4, 4, VIT_FFN_MLP},
    };
    size_t base_len = strlen(name);
    int reg4 = 0;
    if (base_len > 5 && strcmp(name + base_len - 5, "_reg4") == 0) {
        reg4 = 1;
        base_len -= 5;
    }
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        if (strlen(presets[i].name) != base_len || strncmp(presets[i].name, name, base_len) != 0)
            continue;
        memset(out, 0, sizeof *out);
        out->patch = 14;
        out->pos_grid = 37;
        out->dim = presets[i].dim;
        out->depth = presets[i].depth;
        out->heads = presets[i].heads;
        out->ffn = presets[i].ffn;
        out->ffn_hidden = out->ffn == VIT_FFN_SWIGLU ? vit_swiglu_hidden(out->dim) : 4 * out->dim;
        out->n_reg = reg4 ? 4 : 0;
        out->pos_mode = reg4 ? VIT_POS_SIZE_AA : VIT_POS_OFFSET;
        out->layerscale = 1;
        return 0;
    }
    return lvd_fail("unknown architecture '%s' (vit_small, vit_base, vit_large, vit_giant2, vit_tiny, vit_pico, "
                    "each optionally with _reg4)",
                    name);
}

int vit_config_check(const vit_config *c)
{
    if (c->patch < 1 || c->patch > 64)
        return lvd_fail("patch size %d out of range 1..64", c->patch);
    if (c->pos_grid < 1 || c->pos_grid > 1024)
        return lvd_fail("positional grid %d out of range 1..1024", c->pos_grid);
    if (c->dim < 1 || c->depth < 1 || c->heads < 1)
        return lvd_fail("dim %d, depth %d and heads %d must be positive", c->dim, c->depth, c->heads);
    if (c->dim % c->heads != 0)
        return lvd_fail("dim %d is not a multiple of heads %d", c->dim, c->heads);
    if (c->ffn_hidden < 1)
        return lvd_fail("FFN hidden size %d must be positive", c->ffn_hidden);
    if (c->ffn != VIT_FFN_MLP && c->ffn != VIT_FFN_SWIGLU)
        return lvd_fail("unknown FFN kind %d", (int)c->ffn);
    if (c->n_reg < 0 || c->n_reg > 64)
        return lvd_fail("register count %d out of range 0..64", c->n_reg);
    if (c->pos_mode != VIT_POS_OFFSET && c->pos_mode != VIT_POS_SIZE_AA)
        return lvd_fail("unknown positional resampling mode %d", (int)c->pos_mode);
    return 0;
}

/* ---- parameters ------------------------------------------------------------------------------------------ */

/* Appends a tensor to the table (when t is not NULL) and returns its offset; *off advances by its size. */
static void add_tensor(vit_tensor *t, size_t *n, size_t *off, const char *name, int32_t ndim, int64_t d0, int64_t d1,
                       int64_t d2, int64_t d3)
{
    int64_t dims[4] = {d0, d1, d2, d3};
    size_t count = 1;
    for (int32_t i = 0; i < ndim; i++)
        count *= (size_t)dims[i];
    if (t) {
        vit_tensor *e = &t[*n];
        snprintf(e->name, sizeof e->name, "%s", name);
        e->ndim = ndim;
        for (int32_t i = 0; i < 4; i++)
            e->shape[i] = i < ndim ? dims[i] : 0;
        e->offset = *off;
        e->count = count;
    }
    (*n)++;
    *off += count;
}

/* The official state dict, in its order. Returns the tensor count; fills t when not NULL. */
static size_t tensor_table(const vit_config *c, vit_tensor *t, size_t *total)
{
    size_t n = 0, off = 0;
    int64_t d = c->dim, hd = c->ffn_hidden, p = c->patch;
    int64_t f1 = c->ffn == VIT_FFN_SWIGLU ? 2 * hd : hd;
    add_tensor(t, &n, &off, "cls_token", 3, 1, 1, d, 0);
    add_tensor(t, &n, &off, "pos_embed", 3, 1, 1 + (int64_t)c->pos_grid * c->pos_grid, d, 0);
    if (c->n_reg > 0)
        add_tensor(t, &n, &off, "register_tokens", 3, 1, c->n_reg, d, 0);
    add_tensor(t, &n, &off, "mask_token", 2, 1, d, 0, 0);
    add_tensor(t, &n, &off, "patch_embed.proj.weight", 4, d, 3, p, p);
    add_tensor(t, &n, &off, "patch_embed.proj.bias", 1, d, 0, 0, 0);
    const char *fc1 = c->ffn == VIT_FFN_SWIGLU ? "w12" : "fc1", *fc2 = c->ffn == VIT_FFN_SWIGLU ? "w3" : "fc2";
    for (int32_t i = 0; i < c->depth; i++) {
        char name[VIT_NAME_MAX];
#define BT(suffix, ndim, a, b)                                                                                    \
    do {                                                                                                          \
        snprintf(name, sizeof name, "blocks.%d.%s", i, suffix);                                                   \
        add_tensor(t, &n, &off, name, ndim, a, b, 0, 0);                                                          \
    } while (0)
        BT("norm1.weight", 1, d, 0);
        BT("norm1.bias", 1, d, 0);
        BT("attn.qkv.weight", 2, 3 * d, d);
        BT("attn.qkv.bias", 1, 3 * d, 0);
        BT("attn.proj.weight", 2, d, d);
        BT("attn.proj.bias", 1, d, 0);
        if (c->layerscale)
            BT("ls1.gamma", 1, d, 0);
        BT("norm2.weight", 1, d, 0);
        BT("norm2.bias", 1, d, 0);
        char buf[32];
        snprintf(buf, sizeof buf, "mlp.%s.weight", fc1);
        BT(buf, 2, f1, d);
        snprintf(buf, sizeof buf, "mlp.%s.bias", fc1);
        BT(buf, 1, f1, 0);
        snprintf(buf, sizeof buf, "mlp.%s.weight", fc2);
        BT(buf, 2, d, hd);
        snprintf(buf, sizeof buf, "mlp.%s.bias", fc2);
        BT(buf, 1, d, 0);
        if (c->layerscale)
            BT("ls2.gamma", 1, d, 0);
#undef BT
    }
    add_tensor(t, &n, &off, "norm.weight", 1, d, 0, 0, 0);
    add_tensor(t, &n, &off, "norm.bias", 1, d, 0, 0, 0);
    if (total)
        *total = off;
    return n;
}

const vit_tensor *vit_find_tensor(const vit_model *m, const char *name)
{
    for (size_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0)
            return &m->tensors[i];
    return NULL;
}

/* Points the views v (blocks: storage for depth entries) into arena by the tensor table. */
static void bind_views(const vit_model *m, float *arena, vit_params *v, vit_block_params *blocks)
{
    memset(v, 0, sizeof *v);
    memset(blocks, 0, sizeof *blocks * (size_t)m->cfg.depth);
    v->blocks = blocks;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const vit_tensor *t = &m->tensors[i];
        float *ptr = arena + t->offset;
        const char *n = t->name;
        if (strcmp(n, "cls_token") == 0)
            v->cls_token = ptr;
        else if (strcmp(n, "pos_embed") == 0)
            v->pos_embed = ptr;
        else if (strcmp(n, "register_tokens") == 0)
            v->reg_tokens = ptr;
        else if (strcmp(n, "mask_token") == 0)
            v->mask_token = ptr;
        else if (strcmp(n, "patch_embed.proj.weight") == 0)
            v->patch_w = ptr;
        else if (strcmp(n, "patch_embed.proj.bias") == 0)
            v->patch_b = ptr;
        else if (strcmp(n, "norm.weight") == 0)
            v->norm_w = ptr;
        else if (strcmp(n, "norm.bias") == 0)
            v->norm_b = ptr;
        else {
            int bi = 0, used = 0;
            if (sscanf(n, "blocks.%d.%n", &bi, &used) != 1 || used == 0)
                continue;
            vit_block_params *b = &blocks[bi];
            const char *s = n + used;
            if (strcmp(s, "norm1.weight") == 0) b->norm1_w = ptr;
            else if (strcmp(s, "norm1.bias") == 0) b->norm1_b = ptr;
            else if (strcmp(s, "attn.qkv.weight") == 0) b->qkv_w = ptr;
            else if (strcmp(s, "attn.qkv.bias") == 0) b->qkv_b = ptr;
            else if (strcmp(s, "attn.proj.weight") == 0) b->proj_w = ptr;
            else if (strcmp(s, "attn.proj.bias") == 0) b->proj_b = ptr;
            else if (strcmp(s, "ls1.gamma") == 0) b->ls1 = ptr;
            else if (strcmp(s, "norm2.weight") == 0) b->norm2_w = ptr;
            else if (strcmp(s, "norm2.bias") == 0) b->norm2_b = ptr;
            else if (strcmp(s, "mlp.fc1.weight") == 0 || strcmp(s, "mlp.w12.weight") == 0) b->fc1_w = ptr;
            else if (strcmp(s, "mlp.fc1.bias") == 0 || strcmp(s, "mlp.w12.bias") == 0) b->fc1_b = ptr;
            else if (strcmp(s, "mlp.fc2.weight") == 0 || strcmp(s, "mlp.w3.weight") == 0) b->fc2_w = ptr;
            else if (strcmp(s, "mlp.fc2.bias") == 0 || strcmp(s, "mlp.w3.bias") == 0) b->fc2_b = ptr;
            else if (strcmp(s, "ls2.gamma") == 0) b->ls2 = ptr;
        }
    }
}

static float *alloc_floats(size_t n)
{
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    return aligned_alloc(64, bytes ? bytes : 64);
}

int vit_create(const vit_config *c, vit_model **out)
{
    *out = NULL;
    if (vit_config_check(c) != 0)
        return -1;
    vit_model *m = calloc(1, sizeof *m);
    if (!m)
        return lvd_fail("out of memory");
    m->cfg = *c;
    m->n_tensors = tensor_table(c, NULL, &m->n_params);
    m->tensors = calloc(m->n_tensors, sizeof *m->tensors);
    m->block_views = calloc(2 * (size_t)c->depth, sizeof *m->block_views);
    m->param_mem = alloc_floats(m->n_params);
    if (!m->tensors || !m->block_views || !m->param_mem) {
        size_t np = m->n_params;
        vit_free(m);
        return lvd_fail("out of memory for a model of %zu parameters", np);
    }
    tensor_table(c, m->tensors, NULL);
    memset(m->param_mem, 0, m->n_params * sizeof(float));
    bind_views(m, m->param_mem, &m->p, m->block_views);
    *out = m;
    return 0;
}

void vit_free(vit_model *m)
{
    if (!m)
        return;
    free(m->param_mem);
    free(m->grad_mem);
    free(m->tensors);
    free(m->block_views);
    free(m);
}

int vit_alloc_grads(vit_model *m)
{
    if (m->grad_mem)
        return 0;
    m->grad_mem = alloc_floats(m->n_params);
    if (!m->grad_mem)
        return lvd_fail("out of memory for %zu gradients", m->n_params);
    bind_views(m, m->grad_mem, &m->g, m->block_views + m->cfg.depth);
    vit_zero_grads(m);
    return 0;
}

void vit_zero_grads(vit_model *m)
{
    if (m->grad_mem)
        memset(m->grad_mem, 0, m->n_params * sizeof(float));
}

void vit_set_threads(int32_t n)
{
    if (n <= 0)
        n = omp_get_num_procs();
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

/* splitmix64: a small, portable generator, so a seed gives the same weights everywhere. */
static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *s) { return ((double)(splitmix(s) >> 11) + 0.5) / 9007199254740992.0; }

/* Normal(0, std) truncated to +-2 std (trunc_normal_ redraws; clamping by redraw keeps the same law). */
static void fill_normal(float *p, size_t n, double std, uint64_t *s)
{
    for (size_t i = 0; i < n; i++) {
        double z;
        do
            z = sqrt(-2.0 * log(uniform01(s))) * cos(6.283185307179586 * uniform01(s));
        while (z < -2.0 || z > 2.0);
        p[i] = (float)(z * std);
    }
}

void vit_init_random(vit_model *m, uint64_t seed, float ls_init)
{
    uint64_t s = seed ^ 0x6C76642D76697400ull; /* "lvd-vit" */
    for (size_t i = 0; i < m->n_tensors; i++) {
        const vit_tensor *t = &m->tensors[i];
        float *p = m->param_mem + t->offset;
        const char *n = t->name;
        size_t len = strlen(n);
        int is_weight = len > 7 && strcmp(n + len - 7, ".weight") == 0;
        int is_norm = strstr(n, "norm") != NULL;
        if (strcmp(n, "cls_token") == 0 || strcmp(n, "register_tokens") == 0)
            fill_normal(p, t->count, 1e-6, &s);
        else if (strcmp(n, "pos_embed") == 0)
            fill_normal(p, t->count, 0.02, &s);
        else if (strstr(n, ".gamma"))
            for (size_t j = 0; j < t->count; j++)
                p[j] = ls_init;
        else if (is_norm && is_weight)
            for (size_t j = 0; j < t->count; j++)
                p[j] = 1.0f;
        else if (is_weight)
            fill_normal(p, t->count, 0.02, &s);
        else
            memset(p, 0, t->count * sizeof(float));
    }
}

/* ---- runs ------------------------------------------------------------------------------------------------ */

typedef struct layer_acts {
    float *xin;          /* (B, T, D) block input (train: its own; inference: the running x) */
    float *ln1, *mean1, *rstd1;
    float *qkv;          /* (B, T, 3D) */
    float *ao;           /* (B, T, D) attention output before proj */
    float *po;           /* (B, T, D) proj output */
    float *x1;           /* (B, T, D) after the attention residual */
    float *ln2, *mean2, *rstd2;
    float *f1;           /* (B, T, F1) fc1 / w12 output */
    float *f2a;          /* (B, T, Hd) activation output */
    float *fo;           /* (B, T, D) fc2 / w3 output */
} layer_acts;

struct vit_run {
    vit_run_opts o;
    int64_t b, gh, gw, n, t, d, hd, f1, heads, r, p;
    int32_t depth;
    float *mem;
    size_t bytes;
    float *cols;         /* (B*N, 3 p p) unfolded patches */
    float *pos;          /* (N, D) positional embedding of the patch grid */
    float *pe;           /* (B, N, D) patch embedding output */
    float *x0;           /* (B, T, D) tokens entering block 0 */
    layer_acts *layers;  /* depth entries (inference: every entry shares one set of buffers) */
    float *xfinal;       /* (B, T, D) output of the last block */
    float *kept;         /* inference: (keep_layers, B, T, D) outputs of the last blocks */
    float *lnf, *meanf, *rstdf;
    float *out_cls, *out_reg, *out_patch;
    float *ds;           /* (depth, 2, B) drop-path scales */
    uint8_t *mask;       /* (B, N) */
    int32_t has_mask;
    /* backward scratch (train only) */
    float *g_x, *g_x2, *g_ln, *g_qkv, *g_ao, *g_po, *g_f1, *g_f2a, *g_fo, *g_pe, *g_cols, *g_pos;
};

/* Bump allocation of 64-byte aligned float arrays inside one arena; a first pass with base NULL sizes it. */
typedef struct bump {
    float *base;
    size_t used; /* floats */
} bump;

static float *take(bump *bp, int64_t n)
{
    size_t at = bp->used;
    bp->used += ((size_t)n + 15) / 16 * 16;
    return bp->base ? bp->base + at : NULL;
}


/* Assigns every buffer of r (sizes only when the bases are NULL): the backward pass's scratch from sp, the rest
 * from bp (the same bump when the run owns its scratch). */
static void run_layout(vit_run *r, bump *bp, bump *sp)
{
    int64_t bt = r->b * r->t, btd = bt * r->d;
    int train = r->o.train;
    r->cols = take(bp, r->b * r->n * 3 * r->p * r->p);
    r->pos = take(bp, r->n * r->d);
    r->pe = take(bp, r->b * r->n * r->d);
    r->x0 = take(bp, btd);
    if (train) {
        /* Every block keeps what its backward cannot cheaply recompute; block l's input is block l-1's
         * output. The LayerNorm outputs and the FFN activation are recomputed in the backward pass from the
         * kept inputs (the same function on the same bits, so the same values), so every block shares one
         * buffer for each: 6 D of the 18 D floats per token a block would otherwise keep. */
        float *ln = take(bp, btd), *f2a = take(bp, bt * r->hd);
        /* The first `recompute` blocks keep only their input: the rest is one set of buffers that the
         * backward pass refills block by block (activation checkpointing); later blocks keep their own. */
        const int32_t nrc = r->o.recompute < 0 || r->o.recompute > r->depth ? r->depth : r->o.recompute;
        layer_acts shared = {0};
        if (nrc > 0) {
            shared.mean1 = take(bp, bt);
            shared.rstd1 = take(bp, bt);
            shared.qkv = take(bp, 3 * btd);
            shared.ao = take(bp, btd);
            shared.po = take(bp, btd);
            shared.x1 = take(bp, btd);
            shared.mean2 = take(bp, bt);
            shared.rstd2 = take(bp, bt);
            shared.f1 = take(bp, bt * r->f1);
            shared.fo = take(bp, btd);
        }
        for (int32_t l = 0; l < nrc; l++) {
            r->layers[l] = shared;
            r->layers[l].ln1 = r->layers[l].ln2 = ln;
            r->layers[l].f2a = f2a;
        }
        for (int32_t l = nrc; l < r->depth; l++) {
            layer_acts *a = &r->layers[l];
            a->ln1 = ln;
            a->mean1 = take(bp, bt);
            a->rstd1 = take(bp, bt);
            a->qkv = take(bp, 3 * btd);
            a->ao = take(bp, btd);
            a->po = take(bp, btd);
            a->x1 = take(bp, btd);
            a->ln2 = ln;
            a->mean2 = take(bp, bt);
            a->rstd2 = take(bp, bt);
            a->f1 = take(bp, bt * r->f1);
            a->f2a = f2a;
            a->fo = take(bp, btd);
        }
        /* Block l reads block l-1's output (block 0 reads x0); the last block's output is xfinal. */
        float *prev = r->x0;
        for (int32_t l = 0; l < r->depth; l++) {
            r->layers[l].xin = prev;
            prev = take(bp, btd);
        }
        r->xfinal = prev;
        r->ds = take(bp, 2 * (int64_t)r->depth * r->b);
        /* Only vit_backward reads or writes these (vit_run_opts.scratch). */
        r->g_x = take(sp, btd);
        r->g_x2 = take(sp, btd);
        r->g_ln = take(sp, btd);
        r->g_qkv = take(sp, 3 * btd);
        r->g_ao = take(sp, btd);
        r->g_po = take(sp, btd);
        r->g_f1 = take(sp, bt * r->f1);
        r->g_f2a = take(sp, bt * r->hd);
        r->g_fo = take(sp, btd);
        r->g_pe = take(sp, r->b * r->n * r->d);
        r->g_cols = take(sp, r->b * r->n * 3 * r->p * r->p);
        r->g_pos = take(sp, r->n * r->d);
    } else {
        /* One set of buffers reused by every block; x is updated in place; GELU runs in place. */
        layer_acts a = {0};
        a.xin = r->x0;
        a.ln1 = a.ln2 = take(bp, btd);
        a.qkv = take(bp, 3 * btd);
        a.ao = take(bp, btd);
        a.po = a.fo = take(bp, btd);
        a.f1 = take(bp, bt * r->f1);
        a.f2a = r->f1 == r->hd ? a.f1 : take(bp, bt * r->hd);
        for (int32_t l = 0; l < r->depth; l++)
            r->layers[l] = a;
        r->xfinal = r->x0;
        r->kept = take(bp, (int64_t)r->o.keep_layers * btd);
    }
    r->lnf = take(bp, btd);
    r->meanf = take(bp, bt);
    r->rstdf = take(bp, bt);
    r->out_cls = take(bp, r->b * r->d);
    r->out_reg = take(bp, r->b * r->r * r->d);
    r->out_patch = take(bp, r->b * r->n * r->d);
    r->mask = (uint8_t *)take(bp, (r->b * r->n + 3) / 4);
}

/* A run's dimensions and its (empty) layer table, no buffers yet. */
static int vit_run_create_shape(const vit_model *m, const vit_run_opts *o, vit_run **out)
{
    *out = NULL;
    const vit_config *c = &m->cfg;
    if (o->batch < 1 || o->height < c->patch || o->width < c->patch)
        return lvd_fail("input shape (%d, 3, %d, %d) is empty or smaller than one %d-pixel patch", o->batch,
                        o->height, o->width, c->patch);
    if (o->height % c->patch || o->width % c->patch)
        return lvd_fail("input %d x %d is not a multiple of the patch size %d", o->height, o->width, c->patch);
    if (o->keep_layers < 0 || o->keep_layers > c->depth)
        return lvd_fail("keep_layers %d out of range 0..%d", o->keep_layers, c->depth);
    vit_run *r = calloc(1, sizeof *r);
    if (!r)
        return lvd_fail("out of memory");
    r->o = *o;
    r->b = o->batch;
    r->p = c->patch;
    r->gh = o->height / c->patch;
    r->gw = o->width / c->patch;
    r->n = r->gh * r->gw;
    r->r = c->n_reg;
    r->t = 1 + r->r + r->n;
    r->d = c->dim;
    r->hd = c->ffn_hidden;
    r->f1 = c->ffn == VIT_FFN_SWIGLU ? 2 * r->hd : r->hd;
    r->heads = c->heads;
    r->depth = c->depth;
    r->layers = calloc((size_t)c->depth, sizeof *r->layers);
    if (!r->layers) {
        free(r);
        return lvd_fail("out of memory");
    }
    *out = r;
    return 0;
}

int vit_run_create(const vit_model *m, const vit_run_opts *o, vit_run **out)
{
    vit_run *r;
    if (vit_run_create_shape(m, o, &r) != 0)
        return -1;
    *out = NULL;
    bump bp = {0}, sp = {0};
    run_layout(r, &bp, o->scratch ? &sp : &bp);
    r->bytes = bp.used * sizeof(float);
    r->mem = o->arena ? NULL : alloc_floats(bp.used);
    if (!o->arena && !r->mem) {
        double mb = (double)r->bytes / 1e6;
        vit_run_free(r);
        return lvd_fail("out of memory for %.1f MB of activations (batch %d, %d x %d%s)", mb, o->batch, o->height,
                        o->width, o->train ? ", train" : "");
    }
    bp.base = o->arena ? o->arena : r->mem;
    bp.used = 0;
    sp.base = o->scratch;
    sp.used = 0;
    run_layout(r, &bp, o->scratch ? &sp : &bp);
    *out = r;
    return 0;
}

int vit_run_sizes(const vit_model *m, const vit_run_opts *o, size_t *arena_floats, size_t *scratch_floats)
{
    vit_run *r;
    if (vit_run_create_shape(m, o, &r) != 0)
        return -1;
    bump bp = {0}, sp = {0};
    run_layout(r, &bp, &sp);
    *arena_floats = bp.used;
    *scratch_floats = sp.used;
    free(r->layers);
    free(r);
    return 0;
}

void vit_run_free(vit_run *r)
{
    if (!r)
        return;
    free(r->mem);
    free(r->layers);
    free(r);
}

size_t vit_run_bytes(const vit_run *r) { return r->bytes; }

const float *vit_out_cls(const vit_run *r) { return r->out_cls; }
const float *vit_out_reg(const vit_run *r) { return r->r > 0 ? r->out_reg : NULL; }
const float *vit_out_patch(const vit_run *r) { return r->out_patch; }

/* ---- forward --------------------------------------------------------------------------------------------- */

/* The positional embedding of the run's patch grid: pos_embed[1:] as is when the grid is M x M, else
 * resampled (the official code skips resampling exactly when npatch == M*M and the input is square). */
static int grid_pos(const vit_model *m, vit_run *r)
{
    int32_t mg = m->cfg.pos_grid;
    const float *src = m->p.pos_embed + r->d;
    if (r->gh == mg && r->gw == mg) {
        memcpy(r->pos, src, (size_t)(r->n * r->d) * sizeof(float));
        return 0;
    }
    return posembed_forward(src, mg, (int32_t)r->d, (int32_t)r->gh, (int32_t)r->gw, m->cfg.pos_mode, r->pos);
}

/* Block l of a forward pass: a->xin -> xmid (after the attention residual) -> xout, with the per-sample
 * drop-path scales ds1, ds2 (NULL: none). The linear layers take (B, T) rather than B*T rows: per-image SGEMMs
 * keep an image's result independent of the rest of the batch (batch invariance, vit.h), and make a second
 * call on the same input give the same bits (what the backward pass's recomputation relies on). */
static int block_forward(const vit_model *m, vit_run *r, int32_t l, float *xmid, float *xout, const float *ds1,
                         const float *ds2)
{
    const vit_block_params *bp = &m->p.blocks[l];
    layer_acts *a = &r->layers[l];
    const float *xin = a->xin;
    int64_t b = r->b, t = r->t, d = r->d, bt = b * t;
    layernorm_forward(a->ln1, a->mean1, a->rstd1, xin, bp->norm1_w, bp->norm1_b, bt, d);
    linear_forward(a->qkv, a->ln1, bp->qkv_w, bp->qkv_b, b, t, d, 3 * d);
    if (attention_forward(a->ao, NULL, a->qkv, b, t, d, r->heads) != 0)
        return -1;
    linear_forward(a->po, a->ao, bp->proj_w, bp->proj_b, b, t, d, d);
    residual_forward(xmid, xin, a->po, bp->ls1, ds1, b, t, d);
    layernorm_forward(a->ln2, a->mean2, a->rstd2, xmid, bp->norm2_w, bp->norm2_b, bt, d);
    linear_forward(a->f1, a->ln2, bp->fc1_w, bp->fc1_b, b, t, d, r->f1);
    if (m->cfg.ffn == VIT_FFN_SWIGLU)
        swiglu_forward(a->f2a, a->f1, bt, r->hd);
    else
        gelu_forward(a->f2a, a->f1, bt * r->hd);
    linear_forward(a->fo, a->f2a, bp->fc2_w, bp->fc2_b, b, t, r->hd, d);
    residual_forward(xout, xmid, a->fo, bp->ls2, ds2, b, t, d);
    return 0;
}

int vit_forward(vit_model *m, vit_run *r, const float *x, const uint8_t *masks, float drop_path, uint64_t seed)
{
    const vit_params *p = &m->p;
    int64_t b = r->b, t = r->t, d = r->d, n = r->n, bt = b * t;
    if (drop_path < 0.0f || drop_path >= 1.0f)
        return lvd_fail("drop path rate %g out of range [0, 1)", (double)drop_path);
    if (drop_path > 0.0f && !r->o.train)
        return lvd_fail("drop path needs a train run");

    patch_embed_forward(r->pe, r->cols, x, p->patch_w, p->patch_b, b, r->o.height, r->o.width, r->p, d);
    if (grid_pos(m, r) != 0)
        return -1;
    r->has_mask = masks != NULL;
    if (masks)
        memcpy(r->mask, masks, (size_t)(b * n));

    /* tokens: [cls + pos0, registers, (patch or mask_token) + pos] */
#pragma omp parallel for schedule(static)
    for (int64_t bi = 0; bi < b; bi++) {
        float *xt = r->x0 + bi * t * d;
        for (int64_t j = 0; j < d; j++)
            xt[j] = p->cls_token[j] + p->pos_embed[j];
        if (r->r > 0)
            memcpy(xt + d, p->reg_tokens, (size_t)(r->r * d) * sizeof(float));
        for (int64_t i = 0; i < n; i++) {
            float *dst = xt + (1 + r->r + i) * d;
            const float *src = masks && masks[bi * n + i] ? p->mask_token : r->pe + (bi * n + i) * d;
            const float *pos = r->pos + i * d;
            for (int64_t j = 0; j < d; j++)
                dst[j] = src[j] + pos[j];
        }
    }

    /* Per-sample drop-path scales: 0 (branch dropped) or 1 / keep. */
    const float *ds1 = NULL, *ds2 = NULL;
    uint64_t rng = seed ^ 0x64726F7070617468ull;
    for (int32_t l = 0; l < r->depth; l++) {
        layer_acts *a = &r->layers[l];
        float *xin = a->xin;
        float *xmid = r->o.train ? a->x1 : xin;
        float *xout = r->o.train ? (l + 1 < r->depth ? r->layers[l + 1].xin : r->xfinal) : xin;
        if (r->o.train) {
            float *s = r->ds + (int64_t)l * 2 * b;
            for (int64_t i = 0; i < 2 * b; i++)
                s[i] = drop_path > 0.0f ? (uniform01(&rng) < 1.0 - drop_path ? 1.0f / (1.0f - drop_path) : 0.0f)
                                        : 1.0f;
            ds1 = s;
            ds2 = s + b;
        }
        if (block_forward(m, r, l, xmid, xout, ds1, ds2) != 0)
            return -1;
        int32_t k = l - (r->depth - r->o.keep_layers);
        if (!r->o.train && k >= 0)
            memcpy(r->kept + k * bt * d, xout, (size_t)(bt * d) * sizeof(float));
    }

    layernorm_forward(r->lnf, r->meanf, r->rstdf, r->xfinal, p->norm_w, p->norm_b, bt, d);
#pragma omp parallel for schedule(static)
    for (int64_t bi = 0; bi < b; bi++) {
        const float *row = r->lnf + bi * t * d;
        memcpy(r->out_cls + bi * d, row, (size_t)d * sizeof(float));
        if (r->r > 0)
            memcpy(r->out_reg + bi * r->r * d, row + d, (size_t)(r->r * d) * sizeof(float));
        memcpy(r->out_patch + bi * n * d, row + (1 + r->r) * d, (size_t)(n * d) * sizeof(float));
    }
    return 0;
}

int vit_intermediate(const vit_model *m, const vit_run *r, int32_t n_layers, int32_t norm, float *patch, float *cls)
{
    int64_t b = r->b, t = r->t, d = r->d, n = r->n, bt = b * t;
    int32_t avail = r->o.train ? r->depth : r->o.keep_layers;
    if (n_layers < 1 || n_layers > avail)
        return lvd_fail("%d intermediate layers asked, the run keeps %d", n_layers, avail);
    float *tmp = norm ? alloc_floats((size_t)bt * (size_t)d) : NULL;
    if (norm && !tmp)
        return lvd_fail("out of memory");
    for (int32_t k = 0; k < n_layers; k++) {
        int32_t l = r->depth - n_layers + k; /* block index */
        const float *src;
        if (r->o.train)
            src = l + 1 < r->depth ? r->layers[l + 1].xin : r->xfinal;
        else
            src = r->kept + (int64_t)(l - (r->depth - r->o.keep_layers)) * bt * d;
        if (norm) {
            layernorm_forward(tmp, NULL, NULL, src, m->p.norm_w, m->p.norm_b, bt, d);
            src = tmp;
        }
        for (int64_t bi = 0; bi < b; bi++) {
            const float *row = src + bi * t * d;
            memcpy(patch + ((int64_t)k * b + bi) * n * d, row + (1 + r->r) * d, (size_t)(n * d) * sizeof(float));
            if (cls)
                memcpy(cls + ((int64_t)k * b + bi) * d, row, (size_t)d * sizeof(float));
        }
    }
    free(tmp);
    return 0;
}

/* ---- backward -------------------------------------------------------------------------------------------- */

static void zero(float *p, int64_t n) { memset(p, 0, (size_t)n * sizeof(float)); }

int vit_backward(vit_model *m, vit_run *r, const float *d_cls, const float *d_reg, const float *d_patch, float *dx)
{
    if (!r->o.train)
        return lvd_fail("backward needs a run created with train = 1");
    if (vit_alloc_grads(m) != 0)
        return -1;
    const vit_params *p = &m->p, *g = &m->g;
    int64_t b = r->b, t = r->t, d = r->d, n = r->n, bt = b * t, btd = bt * d;

    /* dL/d(final LayerNorm output), assembled from the three outputs. */
    float *dlnf = r->g_ln;
    zero(dlnf, btd);
    for (int64_t bi = 0; bi < b; bi++) {
        float *row = dlnf + bi * t * d;
        if (d_cls)
            memcpy(row, d_cls + bi * d, (size_t)d * sizeof(float));
        if (d_reg && r->r > 0)
            memcpy(row + d, d_reg + bi * r->r * d, (size_t)(r->r * d) * sizeof(float));
        if (d_patch)
            memcpy(row + (1 + r->r) * d, d_patch + bi * n * d, (size_t)(n * d) * sizeof(float));
    }
    float *gx = r->g_x, *gx2 = r->g_x2; /* gradient w.r.t. the current block output / input */
    zero(gx, btd);
    layernorm_backward(gx, g->norm_w, g->norm_b, dlnf, r->xfinal, p->norm_w, r->meanf, r->rstdf, bt, d);

    for (int32_t l = r->depth - 1; l >= 0; l--) {
        const vit_block_params *bp = &p->blocks[l], *gb = &g->blocks[l];
        layer_acts *a = &r->layers[l];
        const float *ds1 = r->ds + (int64_t)l * 2 * b, *ds2 = ds1 + b;
        /* With recompute: the block's forward again from its kept input (its output, the next block's input,
         * is rewritten with the same bits). */
        if ((r->o.recompute < 0 || l < r->o.recompute) &&
            block_forward(m, r, l, a->x1, l + 1 < r->depth ? r->layers[l + 1].xin : r->xfinal, ds1, ds2) != 0)
            return -1;
        /* xout = x1 + s2 * ls2 * fo; gx2 collects dL/dx1 */
        zero(gx2, btd);
        zero(r->g_fo, btd);
        residual_backward(gx2, r->g_fo, gb->ls2, gx, a->fo, bp->ls2, ds2, b, t, d);
        /* The activation and the LayerNorm outputs again (shared buffers, see run_layout). */
        if (m->cfg.ffn == VIT_FFN_SWIGLU)
            swiglu_forward(a->f2a, a->f1, bt, r->hd);
        else
            gelu_forward(a->f2a, a->f1, bt * r->hd);
        zero(r->g_f2a, bt * r->hd);
        linear_backward(r->g_f2a, gb->fc2_w, gb->fc2_b, r->g_fo, a->f2a, bp->fc2_w, bt, r->hd, d);
        zero(r->g_f1, bt * r->f1);
        if (m->cfg.ffn == VIT_FFN_SWIGLU)
            swiglu_backward(r->g_f1, r->g_f2a, a->f1, bt, r->hd);
        else
            gelu_backward(r->g_f1, r->g_f2a, a->f1, bt * r->hd);
        layernorm_forward(a->ln2, a->mean2, a->rstd2, a->x1, bp->norm2_w, bp->norm2_b, bt, d);
        zero(r->g_ln, btd);
        linear_backward(r->g_ln, gb->fc1_w, gb->fc1_b, r->g_f1, a->ln2, bp->fc1_w, bt, d, r->f1);
        layernorm_backward(gx2, gb->norm2_w, gb->norm2_b, r->g_ln, a->x1, bp->norm2_w, a->mean2, a->rstd2, bt, d);
        /* x1 = xin + s1 * ls1 * po; gx collects dL/dxin */
        zero(gx, btd);
        zero(r->g_po, btd);
        residual_backward(gx, r->g_po, gb->ls1, gx2, a->po, bp->ls1, ds1, b, t, d);
        zero(r->g_ao, btd);
        linear_backward(r->g_ao, gb->proj_w, gb->proj_b, r->g_po, a->ao, bp->proj_w, bt, d, d);
        zero(r->g_qkv, 3 * btd);
        if (attention_backward(r->g_qkv, r->g_ao, a->qkv, NULL, b, t, d, r->heads) != 0)
            return -1;
        layernorm_forward(a->ln1, a->mean1, a->rstd1, a->xin, bp->norm1_w, bp->norm1_b, bt, d);
        zero(r->g_ln, btd);
        linear_backward(r->g_ln, gb->qkv_w, gb->qkv_b, r->g_qkv, a->ln1, bp->qkv_w, bt, d, 3 * d);
        layernorm_backward(gx, gb->norm1_w, gb->norm1_b, r->g_ln, a->xin, bp->norm1_w, a->mean1, a->rstd1, bt, d);
    }

    /* Tokens: gx is dL/dx0. Sums over the batch run in sample order (deterministic). */
    zero(r->g_pos, n * d);
    for (int64_t bi = 0; bi < b; bi++) {
        const float *row = gx + bi * t * d;
        for (int64_t j = 0; j < d; j++) {
            g->cls_token[j] += row[j];
            g->pos_embed[j] += row[j];
        }
        for (int64_t j = 0; j < r->r * d; j++)
            g->reg_tokens[j] += row[d + j];
    }
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float *gp = r->g_pos + i * d;
        for (int64_t bi = 0; bi < b; bi++) {
            const float *src = gx + (bi * t + 1 + r->r + i) * d;
            float *gpe = r->g_pe + (bi * n + i) * d;
            int masked = r->has_mask && r->mask[bi * n + i];
            for (int64_t j = 0; j < d; j++) {
                gp[j] += src[j];
                gpe[j] = masked ? 0.0f : src[j];
            }
        }
    }
    if (r->has_mask)
        for (int64_t bi = 0; bi < b; bi++)
            for (int64_t i = 0; i < n; i++)
                if (r->mask[bi * n + i]) {
                    const float *src = gx + (bi * t + 1 + r->r + i) * d;
                    for (int64_t j = 0; j < d; j++)
                        g->mask_token[j] += src[j];
                }
    int32_t mg = m->cfg.pos_grid;
    if (r->gh == mg && r->gw == mg) {
        for (int64_t j = 0; j < n * d; j++)
            g->pos_embed[d + j] += r->g_pos[j];
    } else if (posembed_backward(r->g_pos, mg, (int32_t)d, (int32_t)r->gh, (int32_t)r->gw, m->cfg.pos_mode,
                                 g->pos_embed + d) != 0)
        return -1;
    patch_embed_backward(dx, g->patch_w, g->patch_b, r->g_cols, r->g_pe, r->cols, p->patch_w, b, r->o.height,
                         r->o.width, r->p, d);
    return 0;
}

double vit_flops(const vit_config *c, int32_t height, int32_t width)
{
    double n = (double)(height / c->patch) * (width / c->patch), t = 1 + c->n_reg + n, d = c->dim,
           hd = c->ffn_hidden;
    double f = 2.0 * n * 3 * c->patch * c->patch * d;
    double ffn = c->ffn == VIT_FFN_SWIGLU ? 6.0 * t * d * hd : 4.0 * t * d * hd;
    f += c->depth * (2.0 * t * d * 3 * d + 4.0 * t * t * d + 2.0 * t * d * d + ffn);
    return f;
}
