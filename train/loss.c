/* loss.c — see loss.h. */
#include "loss.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "err.h"

/* ---- teacher targets ---------------------------------------------------------------------------------- */

void dino_softmax_center_teacher(float *probs, const float *t, const float *center, float temp, int64_t n,
                                 int64_t k)
{
    const float inv = 1.0f / temp;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *ti = t + i * k;
        float *pi = probs + i * k;
        float mx = ti[0] - center[0];
        for (int64_t j = 1; j < k; j++)
            mx = ti[j] - center[j] > mx ? ti[j] - center[j] : mx;
        double sum = 0.0;
        for (int64_t j = 0; j < k; j++) {
            pi[j] = expf((ti[j] - center[j] - mx) * inv);
            sum += (double)pi[j];
        }
        const float is = (float)(1.0 / sum);
        for (int64_t j = 0; j < k; j++)
            pi[j] *= is;
    }
}

/* sums[j] = sum over the n rows of x (n, k) of x[i, j], in double. Threads own disjoint column ranges and walk
 * the rows in order, so memory is read row by row and each sum's order is fixed. */
static void column_sums(double *sums, const float *x, int64_t n, int64_t k)
{
#pragma omp parallel
    {
        int nt = omp_get_num_threads(), id = omp_get_thread_num();
        int64_t j0 = k * id / nt, j1 = k * (id + 1) / nt;
        for (int64_t j = j0; j < j1; j++)
            sums[j] = 0.0;
        for (int64_t i = 0; i < n; i++) {
            const float *row = x + i * k;
            for (int64_t j = j0; j < j1; j++)
                sums[j] += (double)row[j];
        }
    }
}

/* buf (n) = the reduction over the processes, or unchanged on one process. */
static int reduce(const ssl_reduce *r, double *buf, int64_t n, ssl_reduce_op op)
{
    if (!r || !r->fn)
        return 0;
    if (r->fn(buf, n, op, r->ctx) != 0)
        return lvd_fail_ctx("all-reduce of %lld values", (long long)n);
    return 0;
}

int dino_center_update(float *center, const float *t, float momentum, int64_t n, int64_t k, double *ws,
                       const ssl_reduce *red)
{
    /* ws[0 .. k) the column sums, ws[k] the row count: one all-reduce for both */
    if (n > 0)
        column_sums(ws, t, n, k);
    else
        memset(ws, 0, (size_t)k * sizeof(double));
    ws[k] = (double)n;
    if (reduce(red, ws, k + 1, SSL_REDUCE_SUM) != 0)
        return -1;
    if (!(ws[k] > 0.0))
        return 0;
    for (int64_t j = 0; j < k; j++)
        center[j] = (float)((double)center[j] * (double)momentum + ws[j] / ws[k] * (1.0 - (double)momentum));
    return 0;
}

int dino_sinkhorn_knopp_teacher(float *q, const float *t, float temp, int64_t n, int64_t k, int32_t n_iter,
                                double *ws, const ssl_reduce *red)
{
    if (k < 1 || n < 0)
        return lvd_fail("sinkhorn-knopp: %lld samples of %lld prototypes", (long long)n, (long long)k);
    const float inv = 1.0f / temp;
    /* the shift must be the same on every process, or their Q would be on different scales */
    double g[2] = {-INFINITY, (double)n};
    for (int64_t i = 0; i < n * k; i++)
        g[0] = t[i] > g[0] ? t[i] : g[0];
    if (reduce(red, g, 1, SSL_REDUCE_MAX) != 0 || reduce(red, g + 1, 1, SSL_REDUCE_SUM) != 0)
        return -1;
    const float mx = (float)g[0];
    const double nb = g[1]; /* B: samples over every process */
    /* per-row sums in ws, added in row order: deterministic whatever the threads */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double part = 0.0;
        for (int64_t j = 0; j < k; j++) {
            float e = expf((t[i * k + j] - mx) * inv);
            q[i * k + j] = e;
            part += (double)e;
        }
        ws[i] = part;
    }
    double total = 0.0;
    for (int64_t i = 0; i < n; i++)
        total += ws[i];
    if (reduce(red, &total, 1, SSL_REDUCE_SUM) != 0)
        return -1;
    const float inv_total = (float)(1.0 / total);
    for (int64_t i = 0; i < n * k; i++)
        q[i] *= inv_total;
    double *rows = ws; /* per prototype: the sum over samples (a row of the code's K-by-B Q) */
    for (int32_t it = 0; it < n_iter; it++) {
        if (n > 0)
            column_sums(rows, q, n, k);
        else
            memset(rows, 0, (size_t)k * sizeof(double));
        if (reduce(red, rows, k, SSL_REDUCE_SUM) != 0)
            return -1;
        for (int64_t j = 0; j < k; j++)
            rows[j] = 1.0 / (rows[j] * (double)k);
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) {
            float *qi = q + i * k;
            double s = 0.0;
            for (int64_t j = 0; j < k; j++) {
                qi[j] = (float)((double)qi[j] * rows[j]);
                s += (double)qi[j];
            }
            /* columns to 1/B, and on the last iteration the final "Q *= B" folded in */
            double f = (it == n_iter - 1 ? 1.0 : 1.0 / nb) / s;
            for (int64_t j = 0; j < k; j++)
                qi[j] = (float)((double)qi[j] * f);
        }
    }
    if (n_iter <= 0)
        for (int64_t i = 0; i < n * k; i++)
            q[i] *= (float)nb;
    return 0;
}

/* ---- cross-entropies ---------------------------------------------------------------------------------- */

/* For each row i of s (n, k), with the target T_i = the sum of the n_t teacher rows t + (c * b + i % b) * k,
 * c < n_t (student row i is image i % b of its crop; teacher crop c holds rows c * b ...):
 *   losses[i] = - w_i * sum_j T_ij * log_softmax(s_i / temp)_j,
 *   ds_i += gscale * w_i / temp * (sum_j T_ij * softmax(s_i / temp) - T_i)     (w_i = 1 when w is NULL).
 * Callers sum losses in row order, so the value is deterministic. */
static void xent_rows(double *losses, float *ds, double gscale, const float *s, const float *t, int64_t n_t,
                      int64_t b, const float *w, int64_t n, int64_t k, float temp)
{
    /* exponentials in float (expf, relative error ~1e-7), sums in double */
    const float inv = 1.0f / temp;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        const float *si = s + i * k;
        float mx = si[0];
        for (int64_t j = 1; j < k; j++)
            mx = si[j] > mx ? si[j] : mx;
        double z = 0.0;
        for (int64_t j = 0; j < k; j++)
            z += (double)expf((si[j] - mx) * inv);
        /* log_softmax(s / temp)_j = (s_j - mx) / temp - lz */
        const double lz = log(z);
        double dot = 0.0, tsum = 0.0;
        for (int64_t c = 0; c < n_t; c++) {
            const float *ti = t + (c * b + i % b) * k;
            double dc = 0.0, sc = 0.0;
            for (int64_t j = 0; j < k; j++) {
                dc += (double)ti[j] * (double)((si[j] - mx) * inv);
                sc += (double)ti[j];
            }
            dot += dc - sc * lz;
            tsum += sc;
        }
        const double wi = w ? (double)w[i] : 1.0;
        losses[i] = -wi * dot;
        if (ds) {
            float *dsi = ds + i * k;
            const float f = (float)(gscale * wi * (double)inv), ft = (float)tsum, flz = (float)lz;
            for (int64_t j = 0; j < k; j++) {
                float tj = 0.0f;
                for (int64_t c = 0; c < n_t; c++)
                    tj += t[(c * b + i % b) * k + j];
                float p = expf((si[j] - mx) * inv - flz);
                if (dsi == si) /* in place: element j of the row is read above, then replaced */
                    dsi[j] = f * (ft * p - tj);
                else
                    dsi[j] += f * (ft * p - tj);
            }
        }
    }
}

static double sum_d(const double *x, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    return s;
}

double dino_loss_xent(float *ds, double gscale, const float *s, int64_t n_s, const float *t, int64_t n_t,
                      int64_t b, int64_t k, float temp, double *ws)
{
    if (n_s < 1 || n_t < 1 || b < 1)
        return 0.0;
    /* each (student crop, teacher crop) pair contributes its mean over b rows: a weight of 1/b per row */
    xent_rows(ws, ds, gscale / (double)b, s, t, n_t, b, NULL, n_s * b, k, temp);
    return sum_d(ws, n_s * b) / (double)b;
}

double ibot_loss_forward_masked(float *ds, double gscale, const float *s, const float *t, const float *w,
                                int64_t m, int64_t n_images, int64_t k, float temp, double *ws)
{
    if (m < 1 || n_images < 1)
        return 0.0;
    /* b = m: token i is matched to teacher row i */
    xent_rows(ws, ds, gscale / (double)n_images, s, t, 1, m, w, m, k, temp);
    return sum_d(ws, m) / (double)n_images;
}

int64_t ibot_mask_select(int64_t *indices, float *weights, const uint8_t *masks, int64_t n_images,
                         int64_t n_patches)
{
    int64_t m = 0;
    for (int64_t i = 0; i < n_images; i++) {
        int64_t cnt = 0;
        for (int64_t p = 0; p < n_patches; p++)
            cnt += masks[i * n_patches + p] != 0;
        float wt = 1.0f / (float)(cnt > 1 ? cnt : 1);
        for (int64_t p = 0; p < n_patches; p++)
            if (masks[i * n_patches + p]) {
                indices[m] = i * n_patches + p;
                weights[m] = wt;
                m++;
            }
    }
    return m;
}

/* ---- KoLeo -------------------------------------------------------------------------------------------- */

/* Layout of koleo's scratch: xn (n, d), dxn (n, d), norms (n), dist (n), nn index (n, stored as float-sized
 * int32 slots). */
size_t koleo_workspace_floats(int64_t n, int64_t d)
{
    return (size_t)(2 * n * d + 3 * n);
}

double koleo_loss(float *dx, double gscale, const float *x, int64_t n, int64_t d, float *ws)
{
    if (n < 1 || d < 1)
        return 0.0;
    float *xn = ws, *dxn = ws + n * d, *norms = ws + 2 * n * d, *dist = norms + n;
    int32_t *nn = (int32_t *)(dist + n);
    const double eps = KOLEO_EPS;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double s = 0.0;
        for (int64_t j = 0; j < d; j++)
            s += (double)x[i * d + j] * (double)x[i * d + j];
        double nrm = sqrt(s);
        norms[i] = (float)nrm;
        double den = nrm > eps ? nrm : eps;
        for (int64_t j = 0; j < d; j++)
            xn[i * d + j] = (float)((double)x[i * d + j] / den);
    }
    /* nearest neighbour by inner product (n is a per-GPU batch: the n^2 d loop is small) */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double best = -INFINITY;
        int32_t bi = 0;
        for (int64_t q = 0; q < n; q++) {
            double dot = -1.0;
            if (q != i) {
                dot = 0.0;
                for (int64_t j = 0; j < d; j++)
                    dot += (double)xn[i * d + j] * (double)xn[q * d + j];
            }
            if (dot > best) {
                best = dot;
                bi = (int32_t)q;
            }
        }
        nn[i] = bi;
        double s = 0.0;
        for (int64_t j = 0; j < d; j++) {
            double df = (double)xn[i * d + j] - (double)xn[(int64_t)bi * d + j] + eps;
            s += df * df;
        }
        dist[i] = (float)sqrt(s);
    }
    double loss = 0.0;
    for (int64_t i = 0; i < n; i++)
        loss -= log((double)dist[i] + eps);
    loss /= (double)n;
    if (!dx)
        return loss;

    /* dL/d diff_i = -diff_i / (n dist_i (dist_i + eps)) (0 when dist_i = 0, as torch's norm backward);
     * + to row i, - to row nn[i]. Scattered serially: several rows can share a neighbour. */
    memset(dxn, 0, (size_t)(n * d) * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        double di = dist[i];
        if (!(di > 0.0))
            continue;
        double f = -1.0 / ((double)n * di * (di + eps));
        int64_t q = nn[i];
        for (int64_t j = 0; j < d; j++) {
            double g = f * ((double)xn[i * d + j] - (double)xn[q * d + j] + eps);
            dxn[i * d + j] += (float)g;
            dxn[q * d + j] -= (float)g;
        }
    }
    /* through xn = x / max(||x||, eps) */
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double nrm = norms[i];
        const float *u = xn + i * d, *g = dxn + i * d;
        float *o = dx + i * d;
        if (nrm > eps) {
            double p = 0.0;
            for (int64_t j = 0; j < d; j++)
                p += (double)u[j] * (double)g[j];
            for (int64_t j = 0; j < d; j++)
                o[j] += (float)(gscale * ((double)g[j] - (double)u[j] * p) / nrm);
        } else {
            for (int64_t j = 0; j < d; j++)
                o[j] += (float)(gscale * (double)g[j] / eps);
        }
    }
    return loss;
}

/* ---- the combination ---------------------------------------------------------------------------------- */

void ssl_loss_config_default(ssl_loss_config *c, int64_t batch, int64_t n_local, int64_t dino_k, int64_t ibot_k,
                             int64_t cls_dim, int64_t max_masked)
{
    memset(c, 0, sizeof *c);
    c->batch = batch;
    c->n_local = n_local;
    c->dino_k = dino_k;
    c->ibot_k = ibot_k;
    c->cls_dim = cls_dim;
    c->max_masked = max_masked;
    c->student_temp = 0.1f;
    c->center_momentum = 0.9f;
    c->dino_weight = 1.0f;
    c->ibot_weight = 1.0f;
    c->koleo_weight = 0.1f;
    c->centering = SSL_CENTERING_SOFTMAX;
}

static int64_t max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

int ssl_loss_init(ssl_loss *l, const ssl_loss_config *cfg)
{
    memset(l, 0, sizeof *l);
    const ssl_loss_config *c = cfg;
    if (c->batch < 1 || c->n_local < 0 || c->dino_k < 1 || c->ibot_k < 1 || c->cls_dim < 1 || c->max_masked < 0)
        return lvd_fail("ssl loss: bad sizes (batch %lld, n_local %lld, dino_k %lld, ibot_k %lld, cls_dim %lld, "
                        "max_masked %lld)",
                        (long long)c->batch, (long long)c->n_local, (long long)c->dino_k, (long long)c->ibot_k,
                        (long long)c->cls_dim, (long long)c->max_masked);
    if (!(c->student_temp > 0.0f) || c->centering < SSL_CENTERING_SOFTMAX || c->centering > SSL_CENTERING_SINKHORN)
        return lvd_fail("ssl loss: student_temp must be > 0 and centering softmax or sinkhorn");
    l->cfg = *c;
    int64_t b2 = 2 * c->batch;
    size_t nws = (size_t)max64(max64(c->n_local * c->batch, b2), max64(c->max_masked, max64(c->dino_k, c->ibot_k) + 1));
    const int64_t patch_targets = c->patch_targets_in_place ? 0 : c->max_masked * c->ibot_k;
    size_t nf = (size_t)c->dino_k + 2 * (size_t)c->ibot_k + (size_t)(b2 * c->dino_k) + (size_t)patch_targets +
                koleo_workspace_floats(c->batch, c->cls_dim);
    /* doubles first, so they are aligned */
    l->arena = calloc(1, nws * sizeof(double) + nf * sizeof(float));
    if (!l->arena)
        return lvd_fail("ssl loss: cannot allocate %zu bytes", nws * sizeof(double) + nf * sizeof(float));
    l->ws = l->arena;
    float *p = (float *)(l->ws + nws);
    l->dino_center = p;
    p += c->dino_k;
    l->ibot_center = p;
    p += c->ibot_k;
    l->dino_targets = p;
    p += b2 * c->dino_k;
    l->ibot_targets = c->patch_targets_in_place ? NULL : p;
    p += patch_targets;
    l->center_prev = p;
    p += c->ibot_k;
    l->koleo_ws = p;
    return 0;
}

void ssl_loss_free(ssl_loss *l)
{
    free(l->arena);
    memset(l, 0, sizeof *l);
}

int ssl_loss_step(ssl_loss *l, const ssl_loss_inputs *in, float teacher_temp, ssl_loss_terms *out,
                  const ssl_loss_grads *g)
{
    const ssl_loss_config *c = &l->cfg;
    const int64_t B = c->batch, K = c->dino_k, Kp = c->ibot_k, D = c->cls_dim, n_global = 2;
    memset(out, 0, sizeof *out);
    if (in->n_masked < 0 || in->n_masked > c->max_masked)
        return lvd_fail("ssl loss: %lld masked tokens outside 0..%lld", (long long)in->n_masked,
                        (long long)c->max_masked);
    if (!(teacher_temp > 0.0f))
        return lvd_fail("ssl loss: teacher_temp must be > 0");
    if (c->patch_targets_in_place && in->n_masked > 0 && !in->teacher_patch_rw)
        return lvd_fail("ssl loss: patch targets in place need the writable teacher_patch_rw");
    const int do_dino = c->dino_weight > 0.0f, do_koleo = do_dino && c->koleo_weight > 0.0f;
    const int do_ibot = c->ibot_weight > 0.0f && in->n_masked > 0;
    const float st = c->student_temp;

    /* teacher targets: the teacher rows are computed every step (the code does so whatever the weights) */
    const ssl_reduce *red = &l->reduce;
    int rc = 0;
    if (c->centering == SSL_CENTERING_SOFTMAX) {
        dino_softmax_center_teacher(l->dino_targets, in->teacher_global, l->dino_center, teacher_temp, n_global * B,
                                    K);
        rc |= dino_center_update(l->dino_center, in->teacher_global, c->center_momentum, n_global * B, K, l->ws,
                                 red);
        if (do_ibot && !c->patch_targets_in_place) {
            dino_softmax_center_teacher(l->ibot_targets, in->teacher_patch, l->ibot_center, teacher_temp,
                                        in->n_masked, Kp);
            rc |= dino_center_update(l->ibot_center, in->teacher_patch, c->center_momentum, in->n_masked, Kp, l->ws,
                                     red);
        } else if (do_ibot) {
            /* The logits are overwritten by the targets: the center's update (which reads the logits) first,
             * the targets then with the center as it was. */
            memcpy(l->center_prev, l->ibot_center, (size_t)Kp * sizeof(float));
            rc |= dino_center_update(l->ibot_center, in->teacher_patch_rw, c->center_momentum, in->n_masked, Kp,
                                     l->ws, red);
            dino_softmax_center_teacher(in->teacher_patch_rw, in->teacher_patch_rw, l->center_prev, teacher_temp,
                                        in->n_masked, Kp);
        }
    } else {
        rc |= dino_sinkhorn_knopp_teacher(l->dino_targets, in->teacher_global, teacher_temp, n_global * B, K, 3,
                                          l->ws, red);
        if (do_ibot)
            rc |= dino_sinkhorn_knopp_teacher(c->patch_targets_in_place ? in->teacher_patch_rw : l->ibot_targets,
                                              c->patch_targets_in_place ? in->teacher_patch_rw : in->teacher_patch,
                                              teacher_temp, in->n_masked, Kp, 3, l->ws, red);
    }
    const float *patch_targets = c->patch_targets_in_place ? in->teacher_patch_rw : l->ibot_targets;
    if (rc != 0)
        return -1;

    const int64_t n_local_terms = max64(c->n_local * n_global, 1);
    const int64_t n_global_terms = (n_global - 1) * n_global;
    const double terms = (double)(n_global_terms + n_local_terms);
    const float *tg = l->dino_targets;
    if (do_dino) {
        if (c->n_local > 0) {
            /* each local crop against both teacher crops */
            double lo = dino_loss_xent(g ? g->student_local : NULL, c->dino_weight / terms, in->student_local,
                                       c->n_local, tg, n_global, B, K, st, l->ws);
            out->dino_local_crops_loss = lo / terms;
        }
        /* the code: one DINOLoss over the 2B global rows against the teacher rows cat'd in reverse, a mean over
         * 2B rows, times loss_scales 2; per crop that is the sum of two means over B (crop 0 vs teacher crop 1,
         * crop 1 vs teacher crop 0) */
        float *dsg = g ? g->student_global : NULL;
        double gl = dino_loss_xent(dsg, c->dino_weight / terms, in->student_global, 1, tg + B * K, 1, B, K, st,
                                   l->ws);
        gl += dino_loss_xent(dsg ? dsg + B * K : NULL, c->dino_weight / terms, in->student_global + B * K, 1, tg, 1,
                             B, K, st, l->ws);
        out->dino_global_crops_loss = gl / terms;
        out->total += c->dino_weight * (out->dino_local_crops_loss + out->dino_global_crops_loss);
    }
    if (do_koleo) {
        /* each global crop's batch separately: two views of one image are not neighbours to push apart */
        double ks = 0.0;
        for (int64_t cr = 0; cr < n_global; cr++)
            ks += koleo_loss(g && g->student_cls ? g->student_cls + cr * B * D : NULL, c->koleo_weight,
                             in->student_cls + cr * B * D, B, D, l->koleo_ws);
        out->total += c->koleo_weight * ks;
        out->koleo_loss = c->koleo_weight * ks / 2.0;
    }
    if (do_ibot) {
        /* forward_masked * loss_scales (2) * ibot_loss_scale (1 / n_global) = forward_masked */
        double ib = ibot_loss_forward_masked(g ? g->student_patch : NULL, c->ibot_weight, in->student_patch,
                                             patch_targets, in->masks_weight, in->n_masked, n_global * B, Kp, st,
                                             l->ws);
        out->total += c->ibot_weight * ib;
        out->ibot_loss = ib / 2.0;
    }
    return 0;
}
