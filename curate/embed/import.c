/* import.c — embeddings computed elsewhere into the embedding store (see import.h). */
#include "import.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "err.h"
#include "log.h"
#include "npy.h"

typedef struct keyline {
    char *key;
    int64_t image_id;
    int64_t line;  /* 0-based */
    int dup;       /* an earlier line names the same image */
    int64_t again; /* the first later line with the same key, or -1 */
} keyline;

/* By image id, then line. */
static int cmp_keyline(const void *a, const void *b)
{
    const keyline *x = *(keyline *const *)a, *y = *(keyline *const *)b;
    if (x->image_id != y->image_id)
        return (x->image_id > y->image_id) - (x->image_id < y->image_id);
    return (x->line > y->line) - (x->line < y->line);
}

/* By key (bytes), then line. */
static int cmp_keytext(const void *a, const void *b)
{
    const keyline *x = *(keyline *const *)a, *y = *(keyline *const *)b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->line > y->line) - (x->line < y->line);
}

/* A key on two lines of path would give one member two rows: an error naming the first few such keys, in file
 * order, with the line of their first occurrence and of their first repeat (1-based). 0 or -1. */
static int check_repeated_keys(const char *path, keyline *keys, int64_t n)
{
    if (n < 2)
        return 0;
    keyline **order = malloc(sizeof *order * (size_t)n);
    if (!order)
        return lvd_fail("%s: out of memory", path);
    for (int64_t i = 0; i < n; i++)
        order[i] = &keys[i];
    qsort(order, (size_t)n, sizeof *order, cmp_keytext);
    /* Equal keys are adjacent, by line: the first of a run notes the line of the second. */
    for (int64_t i = 1; i < n; i++)
        if (!strcmp(order[i]->key, order[i - 1]->key) && (i < 2 || strcmp(order[i - 1]->key, order[i - 2]->key)))
            order[i - 1]->again = order[i]->line;
    free(order);
    char listed[800] = "";
    size_t ll = 0;
    int64_t nrep = 0;
    for (int64_t i = 0; i < n; i++) {
        if (keys[i].again < 0)
            continue;
        if (nrep < 5 && ll < sizeof listed - 200)
            ll += (size_t)snprintf(listed + ll, sizeof listed - ll, "%s '%.120s' on lines %" PRId64 " and %" PRId64,
                                   nrep ? "," : "", keys[i].key, i + 1, keys[i].again + 1);
        nrep++;
    }
    if (!nrep)
        return 0;
    return lvd_fail("%s: %" PRId64 " key%s listed more than once:%s%s; line i names the member whose row is row i, "
                    "so a key may be listed once", path, nrep, nrep == 1 ? " is" : "s are", listed,
                    nrep > 5 ? ", ..." : "");
}

/* The lines of path as keys (image ids unresolved, -1). On -1 *out_keys still holds the keys read so far (free
 * them). */
static int read_keys(const char *path, keyline **out_keys, int64_t *out_n)
{
    *out_keys = NULL;
    *out_n = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return lvd_fail_errno("cannot open %s", path);
    keyline *keys = NULL;
    int64_t n = 0, cap = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    int rc = 0;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0) {
            rc = lvd_fail("%s:%" PRId64 ": empty key", path, n + 1);
            break;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            keyline *nk = realloc(keys, sizeof *keys * (size_t)cap);
            if (!nk) {
                rc = lvd_fail("%s: out of memory", path);
                break;
            }
            keys = nk;
        }
        keys[n].image_id = -1;
        keys[n].line = n;
        keys[n].dup = 0;
        keys[n].again = -1;
        if (!(keys[n].key = strdup(line))) {
            rc = lvd_fail("%s: out of memory", path);
            break;
        }
        n++;
    }
    if (rc == 0 && ferror(f))
        rc = lvd_fail_errno("reading %s", path);
    free(line);
    fclose(f);
    *out_keys = keys;
    *out_n = n;
    return rc;
}

int embed_import(embed_out *o, const char *npy_path, const char *file_sha, const char *keys_path, const char *coll,
                 int force, embed_import_counts *ic, char model_sha[65])
{
    keyline *keys = NULL;
    int64_t nk = 0;
    npy_array a = {0};
    int rc = -1;
    if (read_keys(keys_path, &keys, &nk) != 0 || npy_read(npy_path, &a) != 0)
        goto out;
    if (a.ndim != 2) {
        lvd_fail("%s: expected a 2-D (rows, dim) array, found %d dimensions", npy_path, (int)a.ndim);
        goto out;
    }
    if (a.shape[0] != nk) {
        lvd_fail("%s has %" PRId64 " rows but %s has %" PRId64 " keys: row i must belong to the key on line i",
                 npy_path, a.shape[0], keys_path, nk);
        goto out;
    }
    if (a.shape[1] < 1 || a.shape[1] > (1 << 20)) {
        lvd_fail("%s: %" PRId64 " columns is not an embedding dimension", npy_path, a.shape[1]);
        goto out;
    }
    if (check_repeated_keys(keys_path, keys, nk) != 0)
        goto out;
    int64_t coll_id;
    if (catalog_collection(o->cat, coll, NULL, &coll_id) != 0)
        goto out;
    /* Keys -> image ids; report the first few unknown keys with their line numbers. */
    char listed[1024] = "";
    size_t ll = 0;
    int64_t unknown = 0;
    for (int64_t i = 0; i < nk; i++) {
        sqlite3_stmt *st = catalog_stmt(o->cat, "SELECT image_id FROM members WHERE collection_id = ?1 AND key = ?2");
        if (!st)
            goto out;
        sqlite3_bind_int64(st, 1, coll_id);
        sqlite3_bind_text(st, 2, keys[i].key, -1, SQLITE_STATIC);
        int r = sqlite3_step(st);
        if (r == SQLITE_ROW)
            keys[i].image_id = sqlite3_column_int64(st, 0);
        sqlite3_reset(st);
        if (r != SQLITE_ROW && r != SQLITE_DONE) {
            lvd_fail("%s: %s", catalog_path(o->cat), sqlite3_errmsg(catalog_db(o->cat)));
            goto out;
        }
        if (r == SQLITE_DONE) {
            if (unknown < 5 && ll < sizeof listed - 200)
                ll += (size_t)snprintf(listed + ll, sizeof listed - ll, "%s line %" PRId64 " '%.120s'",
                                       unknown ? "," : "", i + 1, keys[i].key);
            unknown++;
        }
    }
    if (unknown) {
        lvd_fail("%s: %" PRId64 " key%s not in collection '%s':%s%s", keys_path, unknown, unknown == 1 ? " is" : "s are",
                 coll, listed, unknown > 5 ? ", ..." : "");
        goto out;
    }
    int32_t dim = (int32_t)a.shape[1];
    for (int64_t i = 0; i < nk; i++) {
        float *row = a.data + (size_t)i * (size_t)dim;
        for (int32_t d = 0; d < dim; d++)
            if (!isfinite(row[d])) {
                lvd_fail("%s: row %" PRId64 " (key '%s', line %" PRId64 " of %s) is not finite", npy_path, i,
                         keys[i].key, i + 1, keys_path);
                goto out;
            }
        double norm = embed_l2_normalise(row, dim);
        if (norm == 0) {
            lvd_fail("%s: row %" PRId64 " (key '%s', line %" PRId64 " of %s) is all zeros and cannot be normalised",
                     npy_path, i, keys[i].key, i + 1, keys_path);
            goto out;
        }
        if (fabs(norm - 1.0) > EMBED_IMPORT_NORM_TOL)
            ic->normalised++;
    }
    if (ic->normalised)
        log_warn("%s: %" PRIu64 " of %" PRId64 " rows were not L2-normalised (|norm - 1| > %g): normalised them",
                 npy_path, ic->normalised, nk, EMBED_IMPORT_NORM_TOL);
    o->dim = dim;
    if (embed_import_register(o, npy_path, file_sha, dim, force, coll_id, model_sha) != 0 || embed_out_alloc(o) != 0 ||
        embed_out_begin_collection(o, coll) != 0)
        goto out;
    /* One row per image: the same image under two keys (two members with the same bytes) keeps the row of its
     * first line. */
    keyline **order = malloc(sizeof *order * (size_t)(nk ? nk : 1));
    if (!order) {
        lvd_fail("out of memory");
        goto out;
    }
    for (int64_t i = 0; i < nk; i++)
        order[i] = &keys[i];
    qsort(order, (size_t)nk, sizeof *order, cmp_keyline);
    for (int64_t i = 1; i < nk; i++)
        if (order[i]->image_id == order[i - 1]->image_id)
            order[i]->dup = 1;
    free(order);
    for (int64_t i = 0; i < nk; i++) {
        if (keys[i].dup) {
            ic->dup_images++;
            continue;
        }
        int h = embed_have_row(o, keys[i].image_id);
        if (h < 0)
            goto out;
        if (h) {
            ic->already++;
            continue;
        }
        if (embed_out_add(o, keys[i].image_id, a.data + (size_t)i * (size_t)dim) != 0)
            goto out;
        ic->rows++;
    }
    if (embed_out_flush(o) != 0)
        goto out;
    rc = 0;
out:
    for (int64_t i = 0; i < nk; i++)
        free(keys[i].key);
    free(keys);
    npy_free(&a);
    return rc;
}
