/* run.c — the item lists, vector access and error text of an lvd-dedup run (see run.h). */
#include "run.h"

#include <inttypes.h>
#include <stdlib.h>

#include "err.h"

const char *const dedup_brule_names[] = {"component", "image", NULL};
const char *const dedup_keep_names[] = {"pixels", "bytes", "id", NULL};

int dedup_items_push(dedup_items *s, const dedup_item *it)
{
    if (s->n == s->cap) {
        int64_t cap = s->cap ? 2 * s->cap : 1024;
        dedup_item *nv = realloc(s->v, (size_t)cap * sizeof *nv);
        if (!nv)
            return lvd_fail("out of memory (%" PRId64 " images)", cap);
        s->v = nv;
        s->cap = cap;
    }
    s->v[s->n++] = *it;
    return 0;
}

int64_t dedup_items_find(const dedup_items *s, int64_t id)
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

int dedup_item_vec(const dedup_ctx *x, const dedup_item *it, float *out)
{
    return vf_row(&x->vf, it->file, it->row, out);
}

int dedup_db_error(catalog *c, const char *what)
{
    return lvd_fail("%s: %s: %s", catalog_path(c), what, sqlite3_errmsg(catalog_db(c)));
}

void dedup_ctx_release(dedup_ctx *x)
{
    vf_free(&x->vf);
    free(x->pool.v);
    x->pool.v = NULL;
    x->pool.n = x->pool.cap = 0;
    for (int b = 0; b < x->nb; b++) {
        free(x->b[b].im.v);
        x->b[b].im.v = NULL;
        x->b[b].im.n = x->b[b].im.cap = 0;
    }
}
