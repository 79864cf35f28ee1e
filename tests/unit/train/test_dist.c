/* test_dist.c — data-parallel training steps (common/dist.c, train/step.c's train_reduce_of) under a real
 * mpirun with 2 ranks: each rank runs train_step on its half of a global batch, and rank 0 also runs one process
 * on the whole batch (batch_size_per_gpu doubled, the same global batch for the lr's scaling rule). After several
 * steps the replicas' parameters, the teacher, the AdamW moments and the centers equal the one process's to
 * 1e-5 (max |a - b| / max |b| over each module: see model_err), the reported loss terms (the mean over the
 * ranks) and gradient norms equal its to 1e-5, and the two ranks hold the same bits. Two cases: a shared head
 * with softmax centering and clipping, and a separate iBOT head with Sinkhorn-Knopp (whose sums over the samples are
 * all-reduced). KoLeo is off: dinov2 computes it over each rank's own batch, which one process cannot
 * reproduce. Then: a non-finite input on one rank stops both ranks at the same step (no rank waits for the
 * other), and without the gradients' all-reduce the ranks' parameters differ and dist_check says so.
 *
 * Run as `mpirun -np 2 test_dist` (tests/meson.build); rank 0 prints TAP. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "dist.h"
#include "train/recipe.h"
#include "train/step.h"

#define N_STEPS 4
#define TOL 1e-5
#define B 2          /* images per rank */
#define RANKS 2
#define G 32         /* global crop side: 8 x 8 patches of 4 */
#define L 16         /* local crop side */
#define NL 2         /* local crops */

static lvd_dist g_dist;
static int g_case = 0, g_failed_total = 0;

static void tap(int ok, const char *fmt, ...)
{
    if (g_dist.rank != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    printf("%s %d - ", ok ? "ok" : "not ok", ++g_case);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    g_failed_total += !ok;
}

static void diag(const char *fmt, ...)
{
    if (g_dist.rank != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    printf("# ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static int set(recipe *r, const char *kv)
{
    if (recipe_set(r, kv, "test") != 0) {
        fprintf(stderr, "%s: %s\n", kv, lvd_errmsg());
        return -1;
    }
    return 0;
}

/* The case's recipe for `batch` images per process and `ranks` processes. */
static int make_recipe(recipe *r, int separate_sk, int batch, int ranks)
{
    recipe_defaults(r);
    char b[64];
    snprintf(b, sizeof b, "train.batch_size_per_gpu=%d", batch);
    static const char *common[] = {
        "crops.local_crops_number=2", "crops.global_crops_size=32", "crops.local_crops_size=16",
        "student.patch_size=4", "student.drop_path_rate=0", "dino.head_n_prototypes=64",
        "dino.head_bottleneck_dim=16", "dino.head_hidden_dim=32", "dino.head_nlayers=3", "dino.koleo_loss_weight=0",
        "ibot.head_n_prototypes=48", "ibot.head_bottleneck_dim=16", "ibot.head_hidden_dim=32",
        "ibot.head_nlayers=3", "ibot.mask_sample_probability=1.0", "train.OFFICIAL_EPOCH_LENGTH=2",
        "optim.epochs=4", "optim.warmup_epochs=1", "optim.base_lr=0.05", "optim.clip_grad=0.5",
        "teacher.warmup_teacher_temp_epochs=1", "teacher.momentum_teacher=0.9"};
    if (set(r, b) != 0)
        return -1;
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++)
        if (set(r, common[i]) != 0)
            return -1;
    if (set(r, separate_sk ? "ibot.separate_head=true" : "ibot.separate_head=false") != 0 ||
        set(r, separate_sk ? "train.centering=sinkhorn_knopp" : "train.centering=centering") != 0)
        return -1;
    if (recipe_finish(r, ranks) != 0) {
        fprintf(stderr, "recipe_finish: %s\n", lvd_errmsg());
        return -1;
    }
    return 0;
}

static vit_config small_vit(int swiglu)
{
    vit_config c;
    memset(&c, 0, sizeof c);
    c.patch = 4;
    c.pos_grid = G / 4;
    c.dim = 32;
    c.depth = 2;
    c.heads = 2;
    c.ffn = swiglu ? VIT_FFN_SWIGLU : VIT_FFN_MLP;
    c.ffn_hidden = swiglu ? vit_swiglu_hidden(32) : 128;
    c.n_reg = swiglu ? 2 : 0;
    c.pos_mode = VIT_POS_OFFSET;
    c.layerscale = 1;
    return c;
}

static uint64_t next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float unif(uint64_t *s)
{
    return (float)((next(s) >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
}

/* The whole batch of step t: global (2 * RANKS * B, 3, G, G), local (NL * RANKS * B, 3, L, L), crop-major, and
 * masks (2 * RANKS * B, N): 6 of the 64 patches of each global crop (within both collates' upperbound). */
typedef struct batch {
    float *global, *local;
    uint8_t *masks;
} batch;

static void make_batch(int t, batch *x)
{
    const int64_t nb = RANKS * B, n = (G / 4) * (G / 4);
    uint64_t s = 1000 + (uint64_t)t;
    for (int64_t i = 0; i < 2 * nb * 3 * G * G; i++)
        x->global[i] = unif(&s);
    for (int64_t i = 0; i < NL * nb * 3 * L * L; i++)
        x->local[i] = unif(&s);
    memset(x->masks, 0, (size_t)(2 * nb * n));
    for (int64_t c = 0; c < 2 * nb; c++)
        for (int k = 0; k < 6;) {
            int64_t p = (int64_t)(next(&s) % (uint64_t)n);
            if (!x->masks[c * n + p]) {
                x->masks[c * n + p] = 1;
                k++;
            }
        }
}

/* Rank r's part: images r * B .. r * B + B - 1 of every crop. */
static void slice(const batch *x, int r, batch *y)
{
    const int64_t nb = RANKS * B, n = (G / 4) * (G / 4), gs = 3 * G * G, ls = 3 * L * L;
    for (int c = 0; c < 2; c++)
        for (int i = 0; i < B; i++) {
            int64_t src = c * nb + r * B + i, dst = c * B + i;
            memcpy(y->global + dst * gs, x->global + src * gs, (size_t)gs * sizeof(float));
            memcpy(y->masks + dst * n, x->masks + src * n, (size_t)n);
        }
    for (int c = 0; c < NL; c++)
        for (int i = 0; i < B; i++)
            memcpy(y->local + (c * B + i) * ls, x->local + (c * nb + r * B + i) * ls, (size_t)ls * sizeof(float));
}

static int alloc_batch(batch *x, int images)
{
    const int64_t n = (G / 4) * (G / 4);
    x->global = malloc((size_t)(2 * images * 3 * G * G) * sizeof(float));
    x->local = malloc((size_t)(NL * images * 3 * L * L) * sizeof(float));
    x->masks = malloc((size_t)(2 * images * n));
    return x->global && x->local && x->masks ? 0 : -1;
}

static void free_batch(batch *x)
{
    free(x->global);
    free(x->local);
    free(x->masks);
}

static double rel(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]), m = fabs((double)b[i]);
        num = d > num ? d : num;
        den = m > den ? m : den;
    }
    return den > 0 ? num / den : num;
}

static double rel1(double a, double b)
{
    return fabs(a - b) / (fabs(b) > 1e-30 ? fabs(b) : 1.0);
}

static void set_dist(train_model *m)
{
    train_reduce red = train_reduce_of(&g_dist);
    if (train_model_set_reduce(m, &red) != 0) {
        fprintf(stderr, "set_reduce: %s\n", lvd_errmsg());
        exit(1);
    }
}

/* The error of the replica d against the one process p, per module (backbone, heads) and array (student,
 * teacher, AdamW m and v): max |a - b| over the module's tensors / max |b| over them; the largest of those.
 * *tensor_worst: the largest per-tensor error (diagnostic: a tensor that starts at 0, a bias, has values of
 * the size of a few updates, where AdamW's m / sqrt(v) of near-zero gradients amplifies rounding). */
static double model_err(const train_model *d, const train_model *p, const char **worst, double *tensor_worst)
{
    double e = 0;
    *worst = "";
    *tensor_worst = 0;
    for (int32_t mod = 0; mod < d->opt.n_modules; mod++)
        for (int k = 0; k < 4; k++) {
            double num = 0, den = 0;
            for (size_t i = 0; i < d->opt.n_tensors; i++) {
                const optim_tensor *a = &d->opt.tensors[i], *b = &p->opt.tensors[i];
                if (a->module != mod || (k == 1 && !a->teacher))
                    continue;
                const float *x = k == 0 ? a->param : k == 1 ? a->teacher : k == 2 ? a->m : a->v;
                const float *y = k == 0 ? b->param : k == 1 ? b->teacher : k == 2 ? b->m : b->v;
                double tn = 0, td = 0;
                for (size_t j = 0; j < a->count; j++) {
                    tn = fmax(tn, fabs((double)x[j] - (double)y[j]));
                    td = fmax(td, fabs((double)y[j]));
                }
                num = fmax(num, tn);
                den = fmax(den, td);
                *tensor_worst = fmax(*tensor_worst, td > 0 ? tn / td : tn);
            }
            double r = den > 0 ? num / den : num;
            if (r > e) {
                e = r;
                *worst = d->opt.modules[mod].name;
            }
        }
    double c = rel(d->loss.dino_center, p->loss.dino_center, (size_t)d->loss.cfg.dino_k);
    if (c > e) {
        e = c;
        *worst = "dino center";
    }
    return e;
}

static void run_case(const char *name, int separate_sk)
{
    recipe rd, rp;
    vit_config vc = small_vit(separate_sk);
    train_model *md = NULL, *mp = NULL;
    if (make_recipe(&rd, separate_sk, B, RANKS) != 0 || train_model_create_vit(&rd, &vc, RANKS, &md) != 0) {
        fprintf(stderr, "%s: %s\n", name, lvd_errmsg());
        exit(1);
    }
    set_dist(md);
    train_model_init_weights(md, 77);
    if (g_dist.rank == 0) {
        if (make_recipe(&rp, separate_sk, RANKS * B, 1) != 0 || train_model_create_vit(&rp, &vc, 1, &mp) != 0) {
            fprintf(stderr, "%s: %s\n", name, lvd_errmsg());
            exit(1);
        }
        train_model_init_weights(mp, 77);
    }
    batch whole, part;
    if (alloc_batch(&whole, RANKS * B) != 0 || alloc_batch(&part, B) != 0)
        exit(1);
    double term_err = 0, norm_err = 0, lr_err = 0;
    int steps_ok = 1;
    for (int t = 0; t < N_STEPS; t++) {
        make_batch(t, &whole);
        slice(&whole, g_dist.rank, &part);
        train_step_report rd_rep, rp_rep;
        if (train_step(md, part.global, part.local, part.masks, &rd_rep) != 0) {
            fprintf(stderr, "%s step %d (rank %d): %s\n", name, t, g_dist.rank, lvd_errmsg());
            steps_ok = 0;
            break;
        }
        if (mp) {
            if (train_step(mp, whole.global, whole.local, whole.masks, &rp_rep) != 0) {
                fprintf(stderr, "%s one-process step %d: %s\n", name, t, lvd_errmsg());
                steps_ok = 0;
                break;
            }
            const double a[5] = {rd_rep.terms.dino_local_crops_loss, rd_rep.terms.dino_global_crops_loss,
                                 rd_rep.terms.koleo_loss, rd_rep.terms.ibot_loss, rd_rep.terms.total};
            const double b[5] = {rp_rep.terms.dino_local_crops_loss, rp_rep.terms.dino_global_crops_loss,
                                 rp_rep.terms.koleo_loss, rp_rep.terms.ibot_loss, rp_rep.terms.total};
            for (int k = 0; k < 5; k++)
                term_err = fmax(term_err, rel1(a[k], b[k]));
            for (int k = 0; k < rd_rep.n_modules; k++)
                norm_err = fmax(norm_err, rel1(rd_rep.grad_norm[k], rp_rep.grad_norm[k]));
            lr_err = fmax(lr_err, rel1(rd_rep.sched.lr, rp_rep.sched.lr));
            diag("%s step %d: total loss %.6f (2 ranks) %.6f (1 process), %lld masked patches per rank 0", name, t,
                 rd_rep.terms.total, rp_rep.terms.total, (long long)rd_rep.n_masked);
        }
    }
    int same = dist_check(&g_dist, train_model_hash(md), "parameters") == 0;
    tap(steps_ok, "%s: %d steps on 2 ranks and on one process", name, N_STEPS);
    tap(same, "%s: both ranks hold the same parameters, moments and centers, bit for bit", name);
    if (g_dist.rank == 0) {
        const char *worst;
        double tw;
        double e = model_err(md, mp, &worst, &tw);
        diag("%s: max error %.3g (%s; per tensor at most %.3g), loss terms %.3g, gradient norms %.3g, lr %.3g",
             name, e, worst, tw, term_err, norm_err, lr_err);
        tap(steps_ok && e <= TOL, "%s: parameters, teacher, moments, centers = one process's to 1e-5 (%.3g)", name, e);
        tap(steps_ok && term_err <= TOL && norm_err <= TOL && lr_err <= 1e-12,
            "%s: loss terms and gradient norms = one process's to 1e-5 (%.3g, %.3g)", name, term_err, norm_err);
    }
    free_batch(&whole);
    free_batch(&part);
    train_model_free(md);
    train_model_free(mp);
}

/* A NaN in rank 1's crops: both ranks refuse the step (the parameters untouched), neither waits forever. */
static void run_nonfinite(void)
{
    recipe r;
    vit_config vc = small_vit(0);
    train_model *m = NULL;
    if (make_recipe(&r, 0, B, RANKS) != 0 || train_model_create_vit(&r, &vc, RANKS, &m) != 0)
        exit(1);
    set_dist(m);
    train_model_init_weights(m, 5);
    const optim_tensor *t0 = &m->opt.tensors[0];
    float *p0 = malloc(t0->count * sizeof *p0);
    if (!p0)
        exit(1);
    memcpy(p0, t0->param, t0->count * sizeof *p0);
    batch whole, part;
    if (alloc_batch(&whole, RANKS * B) != 0 || alloc_batch(&part, B) != 0)
        exit(1);
    make_batch(0, &whole);
    slice(&whole, g_dist.rank, &part);
    if (g_dist.rank == 1)
        part.global[5] = NAN;
    train_step_report rep;
    int rc = train_step(m, part.global, part.local, part.masks, &rep);
    int64_t refused_everywhere;
    int64_t mine = rc != 0 && rep.bad_term[0] && !memcmp(p0, t0->param, t0->count * sizeof *p0) ? 0 : 1;
    free(p0);
    dist_max_i64(&g_dist, mine, &refused_everywhere);
    diag("non-finite on rank 1: rank 0 says '%s'", rc != 0 ? lvd_errmsg() : "(step ran)");
    tap(refused_everywhere == 0, "a non-finite loss on one rank stops every rank before the optimizer");
    free_batch(&whole);
    free_batch(&part);
    train_model_free(m);
}

/* Without the gradients' all-reduce the replicas drift apart, and the hash check catches it. */
static void run_no_reduce(void)
{
    recipe r;
    vit_config vc = small_vit(0);
    train_model *m = NULL;
    if (make_recipe(&r, 0, B, RANKS) != 0 || train_model_create_vit(&r, &vc, RANKS, &m) != 0)
        exit(1);
    train_model_init_weights(m, 5);
    batch whole, part;
    if (alloc_batch(&whole, RANKS * B) != 0 || alloc_batch(&part, B) != 0)
        exit(1);
    make_batch(0, &whole);
    slice(&whole, g_dist.rank, &part);
    train_step_report rep;
    int rc = train_step(m, part.global, part.local, part.masks, &rep);
    int differ = dist_check(&g_dist, train_model_hash(m), "parameters") != 0;
    tap(rc == 0 && differ, "without the all-reduces the ranks' parameters differ and the check says so");
    free_batch(&whole);
    free_batch(&part);
    train_model_free(m);
}

int main(int argc, char **argv)
{
    if (dist_init(&g_dist, &argc, &argv) != 0) {
        printf("1..1\nnot ok 1 - MPI: %s\n", lvd_errmsg());
        return 1;
    }
    if (g_dist.ranks != RANKS) {
        if (g_dist.rank == 0)
            printf("1..1\nnot ok 1 - run under mpirun -np %d (this is %d process%s)\n", RANKS, g_dist.ranks,
                   g_dist.ranks == 1 ? "" : "es");
        dist_finalize(&g_dist);
        return 1;
    }
    vit_set_threads(1);
    if (g_dist.rank == 0)
        printf("1..10\n");
    run_case("shared head, softmax centering", 0);
    run_case("separate iBOT head, Sinkhorn-Knopp, registers, SwiGLU", 1);
    run_nonfinite();
    run_no_reduce();
    dist_finalize(&g_dist);
    return g_failed_total ? 1 : 0;
}
