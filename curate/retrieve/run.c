/* run.c — item lists, vector access and error text of an lvd-retrieve run (see run.h). */
#include "run.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "err.h"

int rt_items_push(rt_items *s, const rt_item *it)
{
    if (s->n == s->cap) {
        int64_t cap = s->cap ? 2 * s->cap : 1024;
        rt_item *nv = realloc(s->v, (size_t)cap * sizeof *nv);
        if (!nv)
            return lvd_fail("out of memory (%" PRId64 " images)", cap);
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = *it;
    return 0;
}

int64_t rt_items_find(const rt_items *s, int64_t id)
{
    int64_t lo = 0, hi = s->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (s->v[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->n && s->v[lo].id == id ? lo : -1;
}

int rt_item_vec(const rt_ctx *x, const rt_item *it, float *out) { return vf_row(&x->vf, it->file, it->row, out); }

int rt_db_error(catalog *c, const char *what)
{
    return lvd_fail("%s: %s: %s", catalog_path(c), what, sqlite3_errmsg(catalog_db(c)));
}

int rt_part_owns(const rt_ctx *x, int64_t image_id)
{
    char key[24];
    int n = snprintf(key, sizeof key, "%" PRId64, image_id);
    return part_owns(&x->st.part, key, (size_t)n);
}

void rt_ctx_release(rt_ctx *x)
{
    vf_free(&x->vf);
    free(x->pool.v);
    x->pool.v = NULL;
    x->pool.n = x->pool.cap = 0;
    for (int i = 0; i < x->nrows; i++)
        free(x->rows[i].seeds.v);
    free(x->rows);
    x->rows = NULL;
    x->nrows = 0;
    for (int i = 0; i < x->nkm; i++)
        free(x->km[i].centroids);
    x->nkm = 0;
    registry_free(&x->reg);
}
