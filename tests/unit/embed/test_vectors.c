/* test_vectors.c — the embedding store: files of file_rows rows and their catalog rows (rollover, numbering
 * from the catalog over orphan files, float16 files, a failed file commits nothing), model identities
 * (conflicts, --force moves and partial drops, partitioned runs looking at catalog.db) and imported names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "catalog.h"
#include "embed/vectors.h"
#include "err.h"
#include "npy.h"
#include "sha256.h"
#include "stage.h"

#define N_IMAGES 10
#define DIM 4

static char dir[256];
static int work_no;

static int setup(void **state)
{
    (void)state;
    return scratch_make(dir, sizeof dir, "embed-store");
}

static int teardown(void **state)
{
    (void)state;
    return scratch_remove(dir);
}

/* A fresh work directory whose catalog has images 1..N_IMAGES, members of collection "pool" (1..6, keys k1..)
 * and "bench" (7..N_IMAGES), and an open one-part "embed" run in *st. */
static void new_work(stage *st, char *work, size_t cap)
{
    snprintf(work, cap, "%s/w%d", dir, ++work_no);
    if (stage_open(st, "embed", work, "0/1", "{}", "fp", 0) != 0)
        fail_msg("%s", lvd_errmsg());
    char sql[512];
    assert_int_equal(catalog_exec(st->cat, "INSERT INTO shards(id, path, kind) VALUES (1, 'shards/raw-000000.tar', 'raw');"
                                           "INSERT INTO collections(id, name, role, created_at) VALUES"
                                           " (1, 'pool', 'pool', 'now'), (2, 'bench', 'benchmark', 'now')"),
                     0);
    for (int i = 1; i <= N_IMAGES; i++) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO images(id, sha256, bytes, format, shard_id, offset, created_at)"
                 " VALUES (%d, 'sha%d', 10, 'jpeg', 1, 0, 'now');"
                 "INSERT INTO members(collection_id, key, image_id) VALUES (%d, 'k%d', %d)",
                 i, i, i <= 6 ? 1 : 2, i, i);
        if (catalog_exec(st->cat, sql) != 0)
            fail_msg("%s", lvd_errmsg());
    }
}

static int64_t count(catalog *c, const char *sql)
{
    int64_t n = -1;
    if (catalog_query_int(c, sql, -1, &n) != 0)
        fail_msg("%s", lvd_errmsg());
    return n;
}

/* The (file, row) of image_id's row of model_id; file gets "" when there is none. */
static void row_of(catalog *c, int64_t model_id, int64_t image_id, char *file, size_t cap, int64_t *row)
{
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(catalog_db(c), "SELECT file, row FROM embeddings WHERE model_id = ?1"
                                                       " AND image_id = ?2", -1, &q, NULL), SQLITE_OK);
    sqlite3_bind_int64(q, 1, model_id);
    sqlite3_bind_int64(q, 2, image_id);
    file[0] = '\0';
    *row = -1;
    if (sqlite3_step(q) == SQLITE_ROW) {
        snprintf(file, cap, "%s", (const char *)sqlite3_column_text(q, 0));
        *row = sqlite3_column_int64(q, 1);
    }
    sqlite3_finalize(q);
}

static embed_identity ident(const char *sha_char, const char *pre, int32_t dim)
{
    embed_identity id;
    memset(&id, 0, sizeof id);
    for (int i = 0; i < 64; i++)
        id.sha[i] = sha_char[0];
    snprintf(id.preprocess, sizeof id.preprocess, "%s", pre);
    id.dim = dim;
    return id;
}

/* Row v of image id: a unit vector that differs per image (e_{id mod DIM} scaled, plus a small id term). */
static void unit_row(int64_t id, float *v)
{
    double s = 0;
    for (int d = 0; d < DIM; d++) {
        v[d] = (float)(d == id % DIM ? 1.0 : 0.0) + 0.01f * (float)(id * (d + 1));
        s += (double)v[d] * v[d];
    }
    for (int d = 0; d < DIM; d++)
        v[d] = (float)(v[d] / sqrt(s));
}

static void close_stage(stage *st) { assert_int_equal(stage_close(st, "done", NULL), 0); }

/* o: a writer of model name on st with rows of DIM columns, file_rows a file; given an identity, also registered
 * as it (no --force) and allocated, failing the test otherwise. */
static void open_out(embed_out *o, stage *st, const char *name, npy_dtype dtype, int64_t file_rows,
                     const embed_identity *id)
{
    embed_out_init(o, st, name, dtype, file_rows);
    o->dim = DIM;
    if (id && (embed_model_register(o, id, 0, NULL, 0) != 0 || embed_out_alloc(o) != 0))
        fail_msg("%s", lvd_errmsg());
}

static void test_rollover_and_numbering(void **state)
{
    (void)state;
    stage st;
    char work[300];
    new_work(&st, work, sizeof work);
    embed_identity want = ident("a", "{\"resize\":256}", DIM);
    embed_out o;
    open_out(&o, &st, "m1", NPY_F32, 3, &want);
    assert_int_equal(embed_out_begin_collection(&o, "pool"), 0);
    assert_true(o.model_id > 0);
    float v[DIM];
    for (int64_t id = 1; id <= 6; id++) {
        unit_row(id, v);
        assert_int_equal(embed_out_add(&o, id, v), 0);
        /* a file is committed exactly when it holds file_rows rows */
        assert_int_equal(count(st.cat, "SELECT count(*) FROM embeddings"), id / 3 * 3);
    }
    unit_row(7, v);
    assert_int_equal(embed_out_add(&o, 7, v), 0);
    assert_int_equal(embed_out_flush(&o), 0);
    assert_int_equal(embed_out_flush(&o), 0); /* nothing collected: no empty file */
    assert_int_equal(o.written, 7);
    assert_int_equal(o.files, 3);
    char file[600], want_file[600], path[900];
    int64_t row;
    for (int64_t id = 1; id <= 7; id++) {
        row_of(st.cat, o.model_id, id, file, sizeof file, &row);
        snprintf(want_file, sizeof want_file, "embeddings/m1/pool/part-%06" PRId64 ".npy", (id - 1) / 3);
        assert_string_equal(file, want_file);
        assert_int_equal(row, (id - 1) % 3);
        snprintf(path, sizeof path, "%s/%s", work, file);
        npy_array a = {0};
        if (npy_read(path, &a) != 0)
            fail_msg("%s", lvd_errmsg());
        assert_int_equal(a.dtype, NPY_F32);
        assert_int_equal(a.ndim, 2);
        assert_int_equal(a.shape[0], id <= 6 ? 3 : 1);
        assert_int_equal(a.shape[1], DIM);
        unit_row(id, v);
        for (int d = 0; d < DIM; d++)
            assert_true(a.data[row * DIM + d] == v[d]);
        npy_free(&a);
    }
    assert_int_equal(embed_have_row(&o, 7), 1);
    assert_int_equal(embed_have_row(&o, 8), 0);

    /* An orphan file past the last recorded one (a crash between file and rows) is overwritten: numbers come
     * from the catalog, not from the directory. */
    snprintf(path, sizeof path, "%s/embeddings/m1/pool/part-000003.npy", work);
    scratch_spit(path, "orphan", 6);
    snprintf(path, sizeof path, "%s/embeddings/m1/pool/part-000007.npy", work);
    scratch_spit(path, "orphan", 6);
    embed_out_free(&o);
    embed_out o2;
    open_out(&o2, &st, "m1", NPY_F16, 3, &want);
    assert_int_equal(embed_out_begin_collection(&o2, "pool"), 0);
    assert_int_equal(o2.next_no, 3);
    unit_row(8, v);
    assert_int_equal(embed_out_add(&o2, 8, v), 0);
    assert_int_equal(embed_out_flush(&o2), 0);
    row_of(st.cat, o2.model_id, 8, file, sizeof file, &row);
    assert_string_equal(file, "embeddings/m1/pool/part-000003.npy");
    snprintf(path, sizeof path, "%s/%s", work, file);
    npy_array a = {0};
    if (npy_read(path, &a) != 0)
        fail_msg("%s", lvd_errmsg());
    assert_int_equal(a.dtype, NPY_F16);
    assert_int_equal(a.shape[0], 1);
    for (int d = 0; d < DIM; d++)
        assert_true(fabsf(a.data[d] - v[d]) < 1e-3f);
    npy_free(&a);
    /* Another collection numbers its own files from 0. */
    assert_int_equal(embed_out_begin_collection(&o2, "bench"), 0);
    assert_int_equal(o2.next_no, 0);
    embed_out_free(&o2);
    close_stage(&st);
}

static void test_bad_collection_and_failed_file(void **state)
{
    (void)state;
    stage st;
    char work[300];
    new_work(&st, work, sizeof work);
    embed_identity want = ident("b", "{}", DIM);
    embed_out o;
    open_out(&o, &st, "m2", NPY_F32, 4, &want);
    /* Names a catalog made before the rule may hold: refused, with nothing made under embeddings/m2/. */
    const char *bad[] = {"", "..", ".", "a/b", "a\nb"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(embed_out_begin_collection(&o, bad[i]), -1);
        assert_non_null(strstr(lvd_errmsg(), "is not allowed"));
    }
    char m2[400];
    snprintf(m2, sizeof m2, "%s/embeddings/m2", work);
    assert_int_equal(access(m2, F_OK), -1);
    /* The collection's directory becomes a file: writing fails, names the file, and commits no row. */
    assert_int_equal(embed_out_begin_collection(&o, "pool"), 0);
    char d[400];
    snprintf(d, sizeof d, "%s/embeddings/m2/pool", work);
    assert_int_equal(rmdir(d), 0);
    scratch_spit(d, "x", 1);
    float v[DIM];
    unit_row(1, v);
    assert_int_equal(embed_out_add(&o, 1, v), 0);
    assert_int_equal(embed_out_flush(&o), -1);
    assert_non_null(strstr(lvd_errmsg(), "embeddings/m2/pool/part-000000.npy"));
    assert_int_equal(count(st.cat, "SELECT count(*) FROM embeddings"), 0);
    assert_int_equal(o.written, 0);
    embed_out_free(&o);
    close_stage(&st);
}

/* The number of the next file of collection coll for o's model, failing the test on error. */
static int64_t next_no_of(embed_out *o, const char *coll)
{
    if (embed_out_begin_collection(o, coll) != 0)
        fail_msg("%s", lvd_errmsg());
    return o->next_no;
}

/* File numbers are found by the bytes of the prefix: a collection whose name is not ASCII (SQLite's length()
 * and substr() count characters, not bytes) continues after its own files, and a name with LIKE/GLOB
 * metacharacters, or differing from another only in case, never counts the other's files. */
static void test_numbering_is_byte_exact(void **state)
{
    (void)state;
    stage st;
    char work[300];
    new_work(&st, work, sizeof work);
    embed_identity want = ident("c", "{}", DIM);
    embed_out o;
    open_out(&o, &st, "m", NPY_F32, 1, &want);
    float v[DIM];
    /* Pairs (first, then): `first` gets files part-000000 and -000001; `then` must still start at 0. */
    static const char *const pairs[][2] = {
        {"café", "cafë"},   /* same length in characters, other bytes */
        {"xzy", "x_y"},     /* LIKE's any-one-character */
        {"xabcy", "x%y"},   /* LIKE's any-characters */
        {"xQy", "x?y"},     /* GLOB's any-one-character */
        {"xabcz", "x*z"},   /* GLOB's any-characters */
        {"wy", "w[y]"},     /* GLOB's character class */
        {"CASE", "case"},   /* LIKE ignores ASCII case */
    };
    char sql[200], file[600], want_file[600];
    int64_t row;
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
        snprintf(sql, sizeof sql, "INSERT INTO collections(name, role, created_at) VALUES ('%s', 'pool', 'now'),"
                                  " ('%s', 'pool', 'now')", pairs[i][0], pairs[i][1]);
        assert_int_equal(catalog_exec(st.cat, sql), 0);
        /* Each pair under its own model name, so that images 1..3 serve every pair. */
        char name[32];
        snprintf(name, sizeof name, "m%zu", i);
        embed_out_free(&o);
        open_out(&o, &st, name, NPY_F32, 1, &want);
        for (int64_t k = 0; k < 2; k++) {
            assert_int_equal(next_no_of(&o, pairs[i][0]), k);
            unit_row(1 + k, v);
            assert_int_equal(embed_out_add(&o, 1 + k, v), 0);
        }
        assert_int_equal(next_no_of(&o, pairs[i][1]), 0);
        unit_row(3, v);
        assert_int_equal(embed_out_add(&o, 3, v), 0);
        /* A later writer of either collection continues after that collection's own last file. */
        embed_out_free(&o);
        open_out(&o, &st, name, NPY_F32, 1, &want);
        assert_int_equal(next_no_of(&o, pairs[i][0]), 2);
        assert_int_equal(next_no_of(&o, pairs[i][1]), 1);
        for (int64_t k = 0; k < 3; k++) {
            row_of(st.cat, o.model_id, 1 + k, file, sizeof file, &row);
            snprintf(want_file, sizeof want_file, "embeddings/%s/%s/part-%06d.npy", name, pairs[i][k < 2 ? 0 : 1],
                     k < 2 ? (int)k : 0);
            assert_string_equal(file, want_file);
            assert_int_equal(row, 0);
        }
    }
    embed_out_free(&o);
    close_stage(&st);
}

/* Writes one row for each image in [lo, hi] into collection coll of o. */
static void write_rows(embed_out *o, const char *coll, int64_t lo, int64_t hi)
{
    float v[DIM];
    if (embed_out_begin_collection(o, coll) != 0)
        fail_msg("%s", lvd_errmsg());
    for (int64_t id = lo; id <= hi; id++) {
        unit_row(id, v);
        assert_int_equal(embed_out_add(o, id, v), 0);
    }
    assert_int_equal(embed_out_flush(o), 0);
}

static void test_identity_conflicts_and_force(void **state)
{
    (void)state;
    stage st;
    char work[300];
    new_work(&st, work, sizeof work);
    embed_identity a = ident("a", "{\"crop\":224}", DIM), b = ident("b", "{\"crop\":224}", DIM);
    embed_identity a2 = ident("a", "{\"crop\":112}", DIM);
    embed_out o;
    open_out(&o, &st, "vit", NPY_F32, 100, &a);
    int64_t id = o.model_id;
    write_rows(&o, "pool", 1, 6);
    write_rows(&o, "bench", 7, 10);

    /* Same identity: registering again keeps every row. */
    assert_int_equal(embed_model_register(&o, &a, 0, NULL, 0), 0);
    assert_int_equal(o.model_id, id);
    assert_int_equal(count(st.cat, "SELECT count(*) FROM embeddings"), 10);

    /* Other weights, or the same weights with other preprocessing: an error naming the catalog, the name and
     * both identities; nothing changes. */
    assert_int_equal(embed_model_register(&o, &b, 0, NULL, 0), -1);
    const char *m = lvd_errmsg();
    assert_non_null(strstr(m, "catalog.db"));
    assert_non_null(strstr(m, "model name 'vit'"));
    assert_non_null(strstr(m, "aaaaaaaaaaaa..."));
    assert_non_null(strstr(m, "bbbbbbbbbbbb..."));
    assert_non_null(strstr(m, "--force"));
    assert_int_equal(embed_model_register(&o, &a2, 0, NULL, 0), -1);
    assert_non_null(strstr(lvd_errmsg(), "{\"crop\":112}"));
    assert_int_equal(count(st.cat, "SELECT count(*) FROM embeddings"), 10);
    assert_int_equal(count(st.cat, "SELECT count(*) FROM models WHERE sha256 LIKE 'a%' AND dim = 4"), 1);

    /* --force with the same identity and named collections: only their images' rows go. */
    int64_t pool = 1;
    assert_int_equal(embed_model_register(&o, &a, 1, &pool, 1), 0);
    assert_int_equal(count(st.cat, "SELECT count(*) FROM embeddings"), 4);
    assert_int_equal(count(st.cat, "SELECT count(*) FROM embeddings WHERE image_id <= 6"), 0);
    /* ... and with no collection named, all of the name's rows. */
    write_rows(&o, "pool", 1, 6);
    assert_int_equal(embed_model_register(&o, &a, 1, NULL, 0), 0);
    assert_int_equal(count(st.cat, "SELECT count(*) FROM embeddings"), 0);

    /* --force with another identity moves the name: same row, new identity, no rows. */
    write_rows(&o, "pool", 1, 3);
    embed_identity b8 = ident("b", "{\"crop\":224}", 2 * DIM);
    assert_int_equal(embed_model_register(&o, &b8, 1, NULL, 0), 0);
    assert_int_equal(o.model_id, id);
    assert_int_equal(count(st.cat, "SELECT count(*) FROM embeddings"), 0);
    assert_int_equal(count(st.cat, "SELECT count(*) FROM models WHERE sha256 LIKE 'b%' AND dim = 8"), 1);
    assert_int_equal(count(st.cat, "SELECT count(*) FROM models"), 1);

    /* A checkpoint run into an imported name: the error says so. */
    char sha[65];
    embed_out_free(&o);
    embed_out_init(&o, &st, "imp", NPY_F32, 100);
    assert_int_equal(embed_import_register(&o, "x.npy", b.sha, DIM, 0, 1, sha), 0);
    assert_int_equal(embed_model_register(&o, &a, 0, NULL, 0), -1);
    assert_non_null(strstr(lvd_errmsg(), "holds imported embeddings"));
    close_stage(&st);
}

static void test_partitioned_run_looks_at_catalog_db(void **state)
{
    (void)state;
    stage st;
    char work[300];
    new_work(&st, work, sizeof work);
    embed_identity a = ident("a", "{}", DIM), b = ident("b", "{}", DIM);
    embed_out o;
    open_out(&o, &st, "vit", NPY_F32, 100, &a);
    int64_t main_id = o.model_id;
    write_rows(&o, "pool", 1, 2);
    embed_out_free(&o);
    close_stage(&st);

    stage ps;
    if (stage_open(&ps, "embed", work, "1/2", "{}", "fp", 0) != 0)
        fail_msg("%s", lvd_errmsg());
    open_out(&o, &ps, "vit", NPY_F32, 100, NULL);
    assert_ptr_equal(o.main_ro, ps.main_ro);
    assert_int_equal(embed_model_register(&o, &b, 0, NULL, 0), -1);
    assert_non_null(strstr(lvd_errmsg(), "catalog.db: model name 'vit'"));
    assert_int_equal(embed_model_register(&o, &a, 0, NULL, 0), 0);
    assert_int_equal(o.main_model_id, main_id);
    assert_int_equal(o.main_skip_id, main_id); /* catalog.db's rows count as done */
    assert_int_equal(embed_model_register(&o, &a, 1, NULL, 0), 0);
    assert_int_equal(o.main_skip_id, -1);       /* --force: they do not */
    assert_int_equal(embed_out_alloc(&o), 0);
    assert_int_equal(embed_out_begin_collection(&o, "pool"), 0);
    assert_string_equal(o.prefix, "embeddings/vit/pool/part-p1of2-");
    float v[DIM];
    unit_row(3, v);
    assert_int_equal(embed_out_add(&o, 3, v), 0);
    assert_int_equal(embed_out_flush(&o), 0);
    char path[600];
    snprintf(path, sizeof path, "%s/embeddings/vit/pool/part-p1of2-000000.npy", work);
    assert_int_equal(access(path, F_OK), 0);
    assert_int_equal(count(ps.cat, "SELECT count(*) FROM embeddings"), 1);
    assert_int_equal(count(ps.main_ro, "SELECT count(*) FROM embeddings"), 2);
    embed_out_free(&o);
    close_stage(&ps);
}

static void test_import_register(void **state)
{
    (void)state;
    stage st;
    char work[300];
    new_work(&st, work, sizeof work);
    embed_out o;
    char f1[65], f2[65], sha[65], want[65];
    sha256_hex("file one", 8, f1);
    sha256_hex("file two", 8, f2);
    open_out(&o, &st, "imp", NPY_F32, 100, NULL);
    /* A new name takes the identity of the file that created it. */
    assert_int_equal(embed_import_register(&o, "one.npy", f1, DIM, 0, 1, sha), 0);
    assert_string_equal(sha, f1);
    assert_int_equal(count(st.cat, "SELECT count(*) FROM models WHERE name = 'imp' AND preprocess = 'imported'"), 1);
    assert_int_equal(embed_out_alloc(&o), 0);
    write_rows(&o, "pool", 1, 6);
    /* Another file of the same dim adds rows and keeps the identity. */
    assert_int_equal(embed_import_register(&o, "two.npy", f2, DIM, 0, 2, sha), 0);
    assert_string_equal(sha, f1);
    write_rows(&o, "bench", 7, 10);
    /* Another dim: an error naming the file and both dims. */
    assert_int_equal(embed_import_register(&o, "two.npy", f2, DIM + 1, 0, 2, sha), -1);
    assert_non_null(strstr(lvd_errmsg(), "dimension 4 but two.npy has 5 columns"));
    /* --force replacing rows of collection 2: they go, the identity becomes sha256("<old>\n<file>\n"). */
    assert_int_equal(embed_import_register(&o, "two.npy", f2, DIM, 1, 2, sha), 0);
    char text[200];
    snprintf(text, sizeof text, "%s\n%s\n", f1, f2);
    sha256_hex(text, strlen(text), want);
    assert_string_equal(sha, want);
    assert_int_equal(count(st.cat, "SELECT count(*) FROM embeddings"), 6);
    char q[300];
    snprintf(q, sizeof q, "SELECT count(*) FROM models WHERE name = 'imp' AND sha256 = '%s'", want);
    assert_int_equal(count(st.cat, q), 1);
    /* --force that drops nothing keeps the identity. */
    assert_int_equal(embed_import_register(&o, "two.npy", f1, DIM, 1, 2, sha), 0);
    assert_string_equal(sha, want);
    /* A checkpoint name: an error unless --force, which moves it (all rows dropped, the file's identity). */
    embed_identity a = ident("a", "{}", DIM);
    embed_out c;
    open_out(&c, &st, "ckpt", NPY_F32, 100, &a);
    write_rows(&c, "pool", 1, 2);
    assert_int_equal(embed_import_register(&c, "one.npy", f1, DIM, 0, 1, sha), -1);
    assert_non_null(strstr(lvd_errmsg(), "holds embeddings computed by lvd-embed --model"));
    assert_int_equal(embed_import_register(&c, "one.npy", f1, DIM, 1, 1, sha), 0);
    assert_string_equal(sha, f1);
    snprintf(q, sizeof q, "SELECT count(*) FROM embeddings WHERE model_id = %" PRId64, c.model_id);
    assert_int_equal(count(st.cat, q), 0);
    embed_out_free(&o);
    embed_out_free(&c);
    close_stage(&st);
}

static void test_l2_normalise(void **state)
{
    (void)state;
    float v[3] = {3, 0, 4};
    assert_true(fabs(embed_l2_normalise(v, 3) - 5.0) < 1e-12);
    assert_true(v[0] == 0.6f && v[1] == 0.0f && v[2] == 0.8f);
    float z[2] = {0, 0};
    assert_true(embed_l2_normalise(z, 2) == 0.0);
    assert_true(z[0] == 0.0f && z[1] == 0.0f);
}

static void test_sha256_file(void **state)
{
    (void)state;
    char p[300], got[65], want[65];
    snprintf(p, sizeof p, "%s/bytes.bin", dir);
    static uint8_t big[200000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + (i >> 9));
    scratch_spit(p, big, sizeof big); /* more than one 64 KiB block */
    assert_int_equal(sha256_file(p, got), 0);
    sha256_hex(big, sizeof big, want);
    assert_string_equal(got, want);
    snprintf(p, sizeof p, "%s/missing.bin", dir);
    assert_int_equal(sha256_file(p, got), -1);
    assert_non_null(strstr(lvd_errmsg(), "missing.bin"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rollover_and_numbering),
        cmocka_unit_test(test_bad_collection_and_failed_file),
        cmocka_unit_test(test_numbering_is_byte_exact),
        cmocka_unit_test(test_identity_conflicts_and_force),
        cmocka_unit_test(test_partitioned_run_looks_at_catalog_db),
        cmocka_unit_test(test_import_register),
        cmocka_unit_test(test_l2_normalise),
        cmocka_unit_test(test_sha256_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
