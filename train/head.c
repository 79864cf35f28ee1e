/* head.c — see head.h. */
#include "head.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "vit_layers.h"

/* Output width of MLP layer i. */
static int64_t layer_out(const dino_head_config *c, int i)
{
    return i == c->nlayers - 1 ? c->bottleneck : c->hidden;
}

/* Input width of MLP layer i. */
static int64_t layer_in(const dino_head_config *c, int i)
{
    return i == 0 ? c->in_dim : c->hidden;
}

int dino_head_config_check(const dino_head_config *c)
{
    if (c->nlayers < 1 || c->nlayers > DINO_HEAD_MAX_LAYERS)
        return lvd_fail("dino head: nlayers %d outside 1..%d", (int)c->nlayers, DINO_HEAD_MAX_LAYERS);
    if (c->in_dim < 1 || c->bottleneck < 1 || c->prototypes < 1 || (c->nlayers > 1 && c->hidden < 1))
        return lvd_fail("dino head: sizes must be >= 1 (in %lld, hidden %lld, bottleneck %lld, prototypes %lld)",
                        (long long)c->in_dim, (long long)c->hidden, (long long)c->bottleneck,
                        (long long)c->prototypes);
    /* cblas takes int sizes and every product below must fit: keep each dimension and matrix small enough. */
    const int64_t lim = (int64_t)1 << 30;
    if (c->in_dim > lim || c->hidden > lim || c->bottleneck > lim || c->prototypes > lim ||
        c->prototypes * c->bottleneck > ((int64_t)1 << 40))
        return lvd_fail("dino head: sizes too large");
    return 0;
}

int dino_head_ntensors(const dino_head_config *c)
{
    return 2 * c->nlayers + 2;
}

int dino_head_tensor_at(const dino_head_config *c, int i, dino_head_tensor *t)
{
    if (i < 0 || i >= dino_head_ntensors(c))
        return lvd_fail("dino head: tensor index %d outside 0..%d", i, dino_head_ntensors(c) - 1);
    memset(t, 0, sizeof *t);
    size_t off = 0;
    for (int l = 0; l < c->nlayers; l++) {
        int64_t o = layer_out(c, l), in = layer_in(c, l);
        for (int part = 0; part < 2; part++) {
            size_t cnt = part == 0 ? (size_t)(o * in) : (size_t)o;
            if (2 * l + part == i) {
                /* nn.Sequential numbers its children, and every Linear but the last is followed by a GELU */
                if (c->nlayers == 1)
                    snprintf(t->name, sizeof t->name, "mlp.%s", part == 0 ? "weight" : "bias");
                else
                    snprintf(t->name, sizeof t->name, "mlp.%d.%s", 2 * l, part == 0 ? "weight" : "bias");
                t->ndim = part == 0 ? 2 : 1;
                t->shape[0] = o;
                t->shape[1] = part == 0 ? in : 0;
                t->offset = off;
                t->count = cnt;
                return 0;
            }
            off += cnt;
        }
    }
    if (i == 2 * c->nlayers) {
        snprintf(t->name, sizeof t->name, "last_layer.weight_g");
        t->ndim = 2;
        t->shape[0] = c->prototypes;
        t->shape[1] = 1;
        t->offset = off;
        t->count = (size_t)c->prototypes;
        return 0;
    }
    off += (size_t)c->prototypes;
    snprintf(t->name, sizeof t->name, "last_layer.weight_v");
    t->ndim = 2;
    t->shape[0] = c->prototypes;
    t->shape[1] = c->bottleneck;
    t->offset = off;
    t->count = (size_t)(c->prototypes * c->bottleneck);
    return 0;
}

/* Points the named tensors of h into base (params or grads). */
static void carve(const dino_head_config *c, float *base, float **w, float **b, float **g, float **v)
{
    dino_head_tensor t;
    for (int l = 0; l < c->nlayers; l++) {
        dino_head_tensor_at(c, 2 * l, &t);
        w[l] = base + t.offset;
        dino_head_tensor_at(c, 2 * l + 1, &t);
        b[l] = base + t.offset;
    }
    dino_head_tensor_at(c, 2 * c->nlayers, &t);
    *g = base + t.offset;
    dino_head_tensor_at(c, 2 * c->nlayers + 1, &t);
    *v = base + t.offset;
}

int dino_head_init(dino_head *h, const dino_head_config *cfg, int with_grads)
{
    memset(h, 0, sizeof *h);
    if (dino_head_config_check(cfg) != 0)
        return -1;
    h->cfg = *cfg;
    dino_head_tensor last;
    dino_head_tensor_at(cfg, dino_head_ntensors(cfg) - 1, &last);
    h->n_params = last.offset + last.count;
    h->params = calloc(h->n_params, sizeof(float));
    if (!h->params)
        return lvd_fail("dino head: cannot allocate %zu parameters", h->n_params);
    carve(cfg, h->params, h->w, h->b, &h->weight_g, &h->weight_v);
    if (with_grads) {
        h->grads = calloc(h->n_params, sizeof(float));
        if (!h->grads) {
            dino_head_free(h);
            return lvd_fail("dino head: cannot allocate %zu gradients", h->n_params);
        }
        carve(cfg, h->grads, h->dw, h->db, &h->dweight_g, &h->dweight_v);
    }
    return 0;
}

void dino_head_free(dino_head *h)
{
    free(h->params);
    free(h->grads);
    memset(h, 0, sizeof *h);
}

void dino_head_zero_grad(dino_head *h)
{
    if (h->grads)
        memset(h->grads, 0, h->n_params * sizeof(float));
}

/* ---- initialisation ------------------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1): 53 random bits, offset by half a step so that log() never sees 0. */
static double unif01(uint64_t *s)
{
    return ((double)(splitmix64(s) >> 11) + 0.5) / 9007199254740992.0;
}

/* A standard normal by Box-Muller (one of the pair; two uniforms per draw keep the stream simple). */
static double normal01(uint64_t *s)
{
    double u1 = unif01(s), u2 = unif01(s);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void dino_head_init_weights(dino_head *h, uint64_t seed)
{
    const dino_head_config *c = &h->cfg;
    uint64_t s = seed;
    for (int l = 0; l < c->nlayers; l++) {
        size_t n = (size_t)(layer_out(c, l) * layer_in(c, l));
        for (size_t i = 0; i < n; i++) {
            double x;
            do
                x = 0.02 * normal01(&s);
            while (x < -2.0 || x > 2.0);
            h->w[l][i] = (float)x;
        }
        memset(h->b[l], 0, (size_t)layer_out(c, l) * sizeof(float));
    }
    for (int64_t k = 0; k < c->prototypes; k++)
        h->weight_g[k] = 1.0f;
    double bound = 1.0 / sqrt((double)c->bottleneck);
    size_t nv = (size_t)(c->prototypes * c->bottleneck);
    for (size_t i = 0; i < nv; i++)
        h->weight_v[i] = (float)((2.0 * unif01(&s) - 1.0) * bound);
}

/* ---- run ------------------------------------------------------------------------------------------------ */

int dino_head_run_init(dino_head_run *r, const dino_head_config *cfg, int64_t max_rows, int with_backward)
{
    memset(r, 0, sizeof *r);
    if (dino_head_config_check(cfg) != 0)
        return -1;
    if (max_rows < 1 || max_rows > ((int64_t)1 << 30))
        return lvd_fail("dino head: max_rows %lld outside 1..2^30", (long long)max_rows);
    r->cfg = *cfg;
    r->max_rows = max_rows;
    r->with_backward = with_backward;
    int64_t k = cfg->prototypes, bn = cfg->bottleneck, wide = cfg->hidden > bn ? cfg->hidden : bn;
    size_t total = 0;
    for (int l = 0; l < cfg->nlayers; l++)
        total += (size_t)(max_rows * layer_out(cfg, l)) * (l < cfg->nlayers - 1 ? 2 : 1);
    total += (size_t)(max_rows * bn) + (size_t)max_rows + (size_t)(k * bn) + (size_t)k;
    if (with_backward)
        total += (size_t)(k * bn) + 2 * (size_t)(max_rows * wide);
    r->arena = malloc(total * sizeof(float));
    if (!r->arena)
        return lvd_fail("dino head: cannot allocate %zu floats of activations", total);
    float *p = r->arena;
    for (int l = 0; l < cfg->nlayers; l++) {
        r->pre[l] = p;
        p += max_rows * layer_out(cfg, l);
        if (l < cfg->nlayers - 1) {
            r->act[l] = p;
            p += max_rows * layer_out(cfg, l);
        }
    }
    r->y = p;
    p += max_rows * bn;
    r->znorm = p;
    p += max_rows;
    r->w_eff = p;
    p += k * bn;
    r->vnorm = p;
    p += k;
    if (with_backward) {
        r->dw_last = p;
        p += k * bn;
        r->dbuf[0] = p;
        p += max_rows * wide;
        r->dbuf[1] = p;
    }
    return 0;
}

void dino_head_run_free(dino_head_run *r)
{
    free(r->arena);
    memset(r, 0, sizeof *r);
}

static int same_config(const dino_head_config *a, const dino_head_config *b)
{
    return a->in_dim == b->in_dim && a->bottleneck == b->bottleneck && a->prototypes == b->prototypes &&
           a->nlayers == b->nlayers && (a->nlayers == 1 || a->hidden == b->hidden);
}

static double dot_d(const float *a, const float *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * (double)b[i];
    return s;
}

int dino_head_forward(const dino_head *h, dino_head_run *r, float *out, const float *x, int64_t n)
{
    const dino_head_config *c = &h->cfg;
    if (!same_config(c, &r->cfg))
        return lvd_fail("dino head forward: the run was made for another configuration");
    if (n < 1 || n > r->max_rows)
        return lvd_fail("dino head forward: %lld rows outside 1..%lld", (long long)n, (long long)r->max_rows);
    const float *in = x;
    for (int l = 0; l < c->nlayers; l++) {
        int64_t o = layer_out(c, l);
        /* one "sample" of n rows: linear_forward then splits the output channels over the threads */
        linear_forward(r->pre[l], in, h->w[l], h->b[l], 1, n, layer_in(c, l), o);
        if (l < c->nlayers - 1) {
            gelu_forward(r->act[l], r->pre[l], n * o);
            in = r->act[l];
        }
    }
    const int64_t bn = c->bottleneck, k = c->prototypes;
    const float *z = r->pre[c->nlayers - 1];
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        float nrm = (float)sqrt(dot_d(z + i * bn, z + i * bn, bn));
        r->znorm[i] = nrm;
        float inv = 1.0f / (nrm > DINO_HEAD_NORM_EPS ? nrm : DINO_HEAD_NORM_EPS);
        for (int64_t j = 0; j < bn; j++)
            r->y[i * bn + j] = z[i * bn + j] * inv;
    }
    /* The effective weight, recomputed each forward since v and g change every step: K * bottleneck floats,
     * small next to the (n, K) logits product. */
#pragma omp parallel for schedule(static)
    for (int64_t q = 0; q < k; q++) {
        const float *v = h->weight_v + q * bn;
        float nv = (float)sqrt(dot_d(v, v, bn));
        r->vnorm[q] = nv;
        float s = h->weight_g[q] / nv;
        for (int64_t j = 0; j < bn; j++)
            r->w_eff[q * bn + j] = v[j] * s;
    }
    /* the head's largest product, (n, bn) @ (bn, K): one multi-threaded SGEMM */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)k, (int)bn, 1.0f, r->y, (int)bn, r->w_eff,
                (int)bn, 0.0f, out, (int)k);
    r->n = n;
    return 0;
}

int dino_head_backward(dino_head *h, dino_head_run *r, float *dx, const float *dout, const float *x, int64_t n)
{
    const dino_head_config *c = &h->cfg;
    if (!h->grads)
        return lvd_fail("dino head backward: the head has no gradient arena");
    if (!r->with_backward)
        return lvd_fail("dino head backward: the run was made without backward scratch");
    if (!same_config(c, &r->cfg))
        return lvd_fail("dino head backward: the run was made for another configuration");
    if (n != r->n)
        return lvd_fail("dino head backward: %lld rows but the last forward had %lld", (long long)n,
                        (long long)r->n);
    const int64_t bn = c->bottleneck, k = c->prototypes;

    /* Weight norm: dW = dout^T @ y (K, bn); with u = v / ||v|| and c = dW . u per row,
     * d g += c and d v += (g / ||v||) (dW - c u). */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)bn, (int)n, 1.0f, dout, (int)k, r->y,
                (int)bn, 0.0f, r->dw_last, (int)bn);
#pragma omp parallel for schedule(static)
    for (int64_t q = 0; q < k; q++) {
        const float *v = h->weight_v + q * bn, *dw = r->dw_last + q * bn;
        float nv = r->vnorm[q];
        double cq = dot_d(dw, v, bn) / nv;
        h->dweight_g[q] += (float)cq;
        float s = h->weight_g[q] / nv, cu = (float)(cq / nv);
        float *dv = h->dweight_v + q * bn;
        for (int64_t j = 0; j < bn; j++)
            dv[j] += s * (dw[j] - cu * v[j]);
    }

    /* dy = dout @ W_eff (n, bn), then through the normalisation into dz (dbuf[1]). */
    float *dy = r->dbuf[0], *dz = r->dbuf[1];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)bn, (int)k, 1.0f, dout, (int)k, r->w_eff,
                (int)bn, 0.0f, dy, (int)bn);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *yi = r->y + i * bn, *dyi = dy + i * bn;
        float *dzi = dz + i * bn;
        float nrm = r->znorm[i];
        if (nrm > DINO_HEAD_NORM_EPS) {
            /* y = z / ||z||: dz = (dy - y (y . dy)) / ||z|| */
            float p = (float)dot_d(yi, dyi, bn);
            for (int64_t j = 0; j < bn; j++)
                dzi[j] = (dyi[j] - yi[j] * p) / nrm;
        } else {
            /* y = z / eps: the clamp passes no gradient to the norm */
            for (int64_t j = 0; j < bn; j++)
                dzi[j] = dyi[j] / DINO_HEAD_NORM_EPS;
        }
    }

    /* The MLP from the top: dpre is the gradient of layer l's output, in dbuf[cur]. */
    int cur = 1;
    for (int l = c->nlayers - 1; l >= 0; l--) {
        int64_t o = layer_out(c, l), in = layer_in(c, l);
        const float *inp = l == 0 ? x : r->act[l - 1];
        float *dinp = NULL;
        if (l > 0) {
            dinp = r->dbuf[1 - cur]; /* d act[l-1], zeroed since linear_backward accumulates */
            memset(dinp, 0, (size_t)(n * in) * sizeof(float));
        } else {
            dinp = dx;
        }
        linear_backward(dinp, h->dw[l], h->db[l], r->dbuf[cur], inp, h->w[l], n, in, o);
        if (l > 0) {
            /* through GELU into dbuf[cur] (free now), which becomes d pre[l-1] */
            float *dpre = r->dbuf[cur];
            memset(dpre, 0, (size_t)(n * in) * sizeof(float));
            gelu_backward(dpre, dinp, r->pre[l - 1], n * in);
        }
    }
    return 0;
}
