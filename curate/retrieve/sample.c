/* sample.c — k nearest pool images of each seed image, from scratch or incrementally (see sample.h). */
#include "sample.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "knn.h"
#include "log.h"
#include "progress.h"

/* A neighbour of a seed: a pool image and its exact similarity. */
typedef struct hit {
    int64_t id;
    double sim;
} hit;

/* Descending similarity, then ascending image id: the order of ranks (catalog-006.sql). */
static int hit_order(const void *pa, const void *pb)
{
    const hit *a = pa, *b = pb;
    if (a->sim != b->sim)
        return a->sim > b->sim ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* One seed to search: its row, its position in the row's seeds, the generation of its stored search (-1:
 * none) and where that search is stored. */
typedef struct job {
    int row;
    int64_t seed;
    int32_t from_gen;
    catalog *stored;
} job;

static int job_order(const void *pa, const void *pb)
{
    const job *a = pa, *b = pb;
    if (a->from_gen != b->from_gen)
        return a->from_gen < b->from_gen ? -1 : 1;
    if (a->row != b->row)
        return a->row < b->row ? -1 : 1;
    return a->seed < b->seed ? -1 : a->seed > b->seed;
}

/* The searched_gen of every seed of row r stored in c, merged into gens[] (r->seeds order; -1 = none) where
 * c has one; *where[i] set to c for those. */
static int read_seed_state(catalog *c, const rt_row *r, int32_t *gens, catalog **where)
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT seed_image_id, searched_gen FROM retrieve_seeds WHERE row_id = ?1"
                                       " ORDER BY seed_image_id");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, r->id);
    int64_t i = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(st, 0);
        while (i < r->seeds.n && r->seeds.v[i].id < id)
            i++;
        if (i < r->seeds.n && r->seeds.v[i].id == id) {
            gens[i] = (int32_t)sqlite3_column_int64(st, 1);
            where[i] = c;
        }
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : rt_db_error(c, "reading retrieve_seeds");
}

/* The pool items a search from generation g covers (gen > g), as positions into x->pool. */
typedef struct subset {
    const rt_ctx *x;
    int64_t *pos;
    int64_t n;
} subset;

static int subset_row(void *ctx, int64_t i, float *out)
{
    const subset *s = ctx;
    return rt_item_vec(s->x, &s->x->pool.v[s->pos[i]], out);
}

/* The stored neighbours of (row, seed) in c, appended to h (*n entries, room for at least k). */
static int read_hits(catalog *c, int64_t row_id, int64_t seed_id, hit *h, int32_t *n)
{
    sqlite3_stmt *st = catalog_stmt(c, "SELECT image_id, sim FROM retrieve_hits WHERE row_id = ?1 AND"
                                       " seed_image_id = ?2 ORDER BY rank");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, row_id);
    sqlite3_bind_int64(st, 2, seed_id);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        h[*n].id = sqlite3_column_int64(st, 0);
        h[*n].sim = sqlite3_column_double(st, 1);
        (*n)++;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : rt_db_error(c, "reading retrieve_hits");
}

/* Writes the k best of h[0..n) as the seed's neighbours and stamps its search with the current generation. */
static int write_hits(rt_ctx *x, const rt_row *r, int64_t seed_id, const hit *h, int32_t n)
{
    catalog *c = x->st.cat;
    sqlite3_stmt *st = catalog_stmt(c, "DELETE FROM retrieve_hits WHERE row_id = ?1 AND seed_image_id = ?2");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, r->id);
    sqlite3_bind_int64(st, 2, seed_id);
    if (catalog_step_done(c, st) != 0)
        return -1;
    for (int32_t i = 0; i < n && i < r->k; i++) {
        st = catalog_stmt(c, "INSERT INTO retrieve_hits(row_id, seed_image_id, rank, image_id, sim) VALUES (?1, ?2,"
                             " ?3, ?4, ?5)");
        if (!st)
            return -1;
        sqlite3_bind_int64(st, 1, r->id);
        sqlite3_bind_int64(st, 2, seed_id);
        sqlite3_bind_int(st, 3, i);
        sqlite3_bind_int64(st, 4, h[i].id);
        sqlite3_bind_double(st, 5, h[i].sim);
        if (catalog_step_done(c, st) != 0)
            return -1;
    }
    st = catalog_stmt(c, "INSERT INTO retrieve_seeds(row_id, seed_image_id, searched_gen) VALUES (?1, ?2, ?3)"
                         " ON CONFLICT(row_id, seed_image_id) DO UPDATE SET searched_gen = excluded.searched_gen");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, r->id);
    sqlite3_bind_int64(st, 2, seed_id);
    sqlite3_bind_int64(st, 3, x->gen);
    return catalog_step_done(c, st);
}

/* Searches jobs j[0..nj) (one from_gen) against the pool images newer than it. */
static int search_group(rt_ctx *x, const job *j, int64_t nj, progress *prog)
{
    int32_t from = j[0].from_gen;
    subset s = {x, NULL, 0};
    s.pos = malloc((size_t)(x->pool.n ? x->pool.n : 1) * sizeof *s.pos);
    if (!s.pos)
        return lvd_fail("out of memory");
    for (int64_t i = 0; i < x->pool.n; i++)
        if (x->pool.v[i].gen > from)
            s.pos[s.n++] = i;
    int32_t kmax = 1;
    for (int64_t i = 0; i < nj; i++)
        if (x->rows[j[i].row].k > kmax)
            kmax = x->rows[j[i].row].k;
    knn_index *ix = NULL;
    int rc = -1;
    float *q = NULL, *sims = NULL, *pv = NULL;
    int64_t *ids = NULL;
    hit *h = NULL;
    int64_t bs = x->o.batch > 0 ? x->o.batch : 4096;
    int32_t kq = (int32_t)(s.n < kmax + RT_SAMPLE_SLACK ? s.n : kmax + RT_SAMPLE_SLACK);
    double t_build = progress_now();
    if (s.n > 0) {
        knn_opts o;
        knn_opts_default(&o);
        if (x->o.exact_max > 0)
            o.exact_max = x->o.exact_max;
        o.factory = x->o.factory;
        if (x->o.nprobe > 0)
            o.nprobe = x->o.nprobe;
        if (knn_build(x->dim, s.n, &o, subset_row, &s, &ix) != 0)
            goto out;
        char desc[512];
        knn_describe(ix, desc, sizeof desc);
        log_info("sample: %" PRId64 " seed searches against %s%s (index built in %.1f s)", nj, desc,
                 from >= 0 ? " (pool images newer than the seeds' last search)" : "", progress_now() - t_build);
    }
    /* Wall time of the searches alone, and of the search batches with their exact re-ranking and catalog
     * writes: the benchmark (benchmarks/retrieve_stage.sh) compares the first with FAISS's own search. */
    double t_search = 0, t_loop = progress_now();
    q = malloc((size_t)bs * (size_t)x->dim * sizeof *q);
    pv = malloc((size_t)x->dim * sizeof *pv);
    sims = malloc((size_t)bs * (size_t)(kq > 0 ? kq : 1) * sizeof *sims);
    ids = malloc((size_t)bs * (size_t)(kq > 0 ? kq : 1) * sizeof *ids);
    h = malloc((size_t)(kq + kmax + 1) * sizeof *h);
    if (!q || !pv || !sims || !ids || !h) {
        lvd_fail("out of memory for a search batch of %" PRId64 " seeds", bs);
        goto out;
    }
    for (int64_t at = 0; at < nj; at += bs) {
        int64_t nb = nj - at < bs ? nj - at : bs;
        for (int64_t i = 0; i < nb; i++) {
            const rt_row *r = &x->rows[j[at + i].row];
            if (rt_item_vec(x, &r->seeds.v[j[at + i].seed], q + (size_t)i * (size_t)x->dim) != 0)
                goto out;
        }
        double t0 = progress_now();
        if (kq > 0 && knn_search(ix, q, nb, kq, sims, ids) != 0)
            goto out;
        t_search += progress_now() - t0;
        if (catalog_begin(x->st.cat) != 0)
            goto out;
        for (int64_t i = 0; i < nb; i++) {
            const job *jb = &j[at + i];
            rt_row *r = &x->rows[jb->row];
            const float *qv = q + (size_t)i * (size_t)x->dim;
            int32_t n = 0;
            for (int32_t t = 0; t < kq; t++) {
                int64_t p = ids[(size_t)i * (size_t)kq + (size_t)t];
                if (p < 0)
                    continue;
                const rt_item *it = &x->pool.v[s.pos[p]];
                if (rt_item_vec(x, it, pv) != 0)
                    goto fail_tx;
                h[n].id = it->id;
                h[n].sim = vf_dot(qv, pv, x->dim);
                n++;
            }
            if (jb->from_gen >= 0 && read_hits(jb->stored, r->id, r->seeds.v[jb->seed].id, h, &n) != 0)
                goto fail_tx;
            qsort(h, (size_t)n, sizeof *h, hit_order);
            /* The same image can come from the stored and the new list only if the pool changed under it;
             * keep its first (best) occurrence. */
            int32_t w = 0;
            for (int32_t t = 0; t < n; t++)
                if (w == 0 || h[t].id != h[w - 1].id)
                    h[w++] = h[t];
            if (write_hits(x, r, r->seeds.v[jb->seed].id, h, w) != 0)
                goto fail_tx;
            r->searched++;
        }
        if (catalog_commit(x->st.cat) != 0)
            goto fail_tx;
        progress_update(prog, prog->done + (uint64_t)nb, 0);
    }
    if (nj > 0)
        log_info("sample: %" PRId64 " seeds searched for %d candidates each in %.1f s (%.1f s with re-ranking and"
                 " recording)", nj, (int)kq, t_search, progress_now() - t_loop);
    rc = 0;
    goto out;
fail_tx:
    catalog_rollback(x->st.cat);
out:
    knn_free(ix);
    free(s.pos);
    free(q);
    free(pv);
    free(sims);
    free(ids);
    free(h);
    return rc;
}

int rt_sample_search(rt_ctx *x)
{
    job *jobs = NULL;
    int64_t nj = 0, cap = 0;
    int rc = -1;
    for (int ri = 0; ri < x->nrows; ri++) {
        rt_row *r = &x->rows[ri];
        if (r->method != REGISTRY_SAMPLE || r->skipped)
            continue;
        int32_t *gens = malloc((size_t)(r->seeds.n ? r->seeds.n : 1) * sizeof *gens);
        catalog **where = calloc((size_t)(r->seeds.n ? r->seeds.n : 1), sizeof *where);
        if (!gens || !where) {
            free(gens);
            free(where);
            lvd_fail("out of memory");
            goto out;
        }
        for (int64_t i = 0; i < r->seeds.n; i++)
            gens[i] = -1;
        /* catalog.db's state first, then the part file's own (a resumed part), which is newer. */
        if ((x->parted && read_seed_state(x->src, r, gens, where) != 0) || read_seed_state(x->st.cat, r, gens, where) != 0) {
            free(gens);
            free(where);
            goto out;
        }
        for (int64_t i = 0; i < r->seeds.n; i++) {
            if (gens[i] >= x->gen || !rt_part_owns(x, r->seeds.v[i].id))
                continue;
            if (nj == cap) {
                cap = cap ? 2 * cap : 1024;
                job *nj2 = realloc(jobs, (size_t)cap * sizeof *nj2);
                if (!nj2) {
                    free(gens);
                    free(where);
                    lvd_fail("out of memory");
                    goto out;
                }
                jobs = nj2;
            }
            jobs[nj++] = (job){.row = ri, .seed = i, .from_gen = gens[i], .stored = where[i]};
        }
        free(gens);
        free(where);
    }
    if (nj == 0) {
        rc = 0;
        goto out;
    }
    qsort(jobs, (size_t)nj, sizeof *jobs, job_order);
    progress prog;
    progress_init(&prog, "sample", nj);
    for (int64_t a = 0; a < nj;) {
        int64_t b = a;
        while (b < nj && jobs[b].from_gen == jobs[a].from_gen)
            b++;
        if (search_group(x, jobs + a, b - a, &prog) != 0) {
            progress_finish(&prog);
            goto out;
        }
        a = b;
    }
    progress_finish(&prog);
    rc = 0;
out:
    free(jobs);
    return rc;
}
