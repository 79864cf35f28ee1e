/* test_manifest.c — the manifest reader (common/manifest.h) against manifests built here with the SQLite C
 * API, the embedded schema and shard_writer: open errors, byte-exact reads, checked reads, the epoch order
 * against a reference permutation written from the header's text, concurrent reads. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "manifest.h"
#include "manifest_schema.h"
#include "sha256.h"
#include "shard.h"

static char scratch[64];

/* A fixture: n samples of random bytes (1..3000 bytes each) over nshards shards, weights 1 + (i % 3). */
typedef struct fixture {
    char db[256];
    char shard_path[4][320];
    size_t n, nshards;
    uint8_t **data;
    size_t *len;
    uint32_t *weight;
    char (*key)[SHA256_HEX];
} fixture;

static uint64_t xs = 88172645463325252ull;
static uint64_t xorshift(void)
{
    xs ^= xs << 13;
    xs ^= xs >> 7;
    xs ^= xs << 17;
    return xs;
}

static void exec_sql(sqlite3 *db, const char *sql)
{
    char *e = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &e) != SQLITE_OK)
        fail_msg("SQL failed: %s: %s", e, sql);
}

/* Writes the fixture under scratch/<name>/ with info.schema_version = version. */
static void make_fixture(fixture *f, const char *name, size_t n, size_t nshards, int version)
{
    memset(f, 0, sizeof *f);
    char dir[256];
    scratch_join(dir, sizeof dir, scratch, name);
    assert_int_equal(mkdir(dir, 0755), 0);
    char shards_dir[300];
    snprintf(shards_dir, sizeof shards_dir, "%s/shards", dir);
    assert_int_equal(mkdir(shards_dir, 0755), 0);
    scratch_join(f->db, sizeof f->db, dir, "m.db");
    f->n = n;
    f->nshards = nshards;
    f->data = calloc(n, sizeof *f->data);
    f->len = calloc(n, sizeof *f->len);
    f->weight = calloc(n, sizeof *f->weight);
    f->key = calloc(n, sizeof *f->key);
    uint64_t *off = calloc(n, sizeof *off);
    assert_true(f->data && f->len && f->weight && f->key && off);
    /* Keys are SHA-256 of distinct bytes; ids follow key order as the schema says. */
    for (size_t i = 0; i < n; i++) {
        f->len[i] = 1 + xorshift() % 3000;
        f->data[i] = malloc(f->len[i]);
        for (size_t k = 0; k < f->len[i]; k++)
            f->data[i][k] = (uint8_t)xorshift();
        f->weight[i] = 1 + (uint32_t)(i % 3);
    }
    for (size_t i = 0; i < n; i++)
        sha256_hex(f->data[i], f->len[i], f->key[i]);
    /* sort by key (insertion sort: fixtures are small) */
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && strcmp(f->key[j - 1], f->key[j]) > 0; j--) {
            char t[SHA256_HEX];
            memcpy(t, f->key[j], SHA256_HEX);
            memcpy(f->key[j], f->key[j - 1], SHA256_HEX);
            memcpy(f->key[j - 1], t, SHA256_HEX);
            uint8_t *d = f->data[j];
            f->data[j] = f->data[j - 1];
            f->data[j - 1] = d;
            size_t l = f->len[j];
            f->len[j] = f->len[j - 1];
            f->len[j - 1] = l;
        }
    uint64_t bytes[4];
    char sha[4][SHA256_HEX];
    for (size_t s = 0; s < nshards; s++) {
        snprintf(f->shard_path[s], sizeof f->shard_path[s], "%s/shards/img-%06zu.tar", dir, s);
        shard_writer *w;
        assert_int_equal(shard_writer_open(&w, f->shard_path[s], 0), 0);
        for (size_t i = s; i < n; i += nshards) {
            char member[80];
            snprintf(member, sizeof member, "%s.jpg", f->key[i]);
            assert_int_equal(shard_writer_add(w, member, f->data[i], f->len[i], &off[i]), 0);
        }
        assert_int_equal(shard_writer_flush(w, &bytes[s]), 0);
        assert_int_equal(shard_writer_close(w), 0);
        size_t flen;
        uint8_t *whole = scratch_slurp(f->shard_path[s], &flen);
        assert_true(flen >= bytes[s]);
        sha256_hex(whole, (size_t)bytes[s], sha[s]);
        free(whole);
    }
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
    exec_sql(db, manifest_schema[0]);
    exec_sql(db, "BEGIN");
    char sql[512];
    snprintf(sql, sizeof sql,
             "INSERT INTO info VALUES ('schema_version', '%d'), ('name', 'm'), ('created_at', '2026-01-01T00:00:00Z')",
             version);
    exec_sql(db, sql);
    for (size_t s = 0; s < nshards; s++) {
        /* Relative paths, as lvd-manifest build writes them: resolved against the manifest's folder. */
        snprintf(sql, sizeof sql, "INSERT INTO shards VALUES (%zu, 'shards/img-%06zu.tar', %" PRIu64 ", '%s')", s + 1,
                 s, bytes[s], sha[s]);
        exec_sql(db, sql);
    }
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO samples (id, key, image_sha256, data_sha256, shard_id, offset,"
                                        " length, format, width, height, orig_width, orig_height, weight)"
                                        " VALUES (?1, ?2, ?2, ?2, ?3, ?4, ?5, 'jpeg', 7, 5, 70, 50, ?6)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)i + 1);
        sqlite3_bind_text(st, 2, f->key[i], 64, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)(i % nshards) + 1);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)off[i]);
        sqlite3_bind_int64(st, 5, (sqlite3_int64)f->len[i]);
        sqlite3_bind_int64(st, 6, f->weight[i]);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    exec_sql(db, "COMMIT");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    free(off);
}

static void free_fixture(fixture *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->data[i]);
    free(f->data);
    free(f->len);
    free(f->weight);
    free(f->key);
}

static void assert_contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle))
        fail_msg("expected '%s' in message '%s'", needle, hay);
}

/* ---- open errors ---- */

static void test_open_errors(void **state)
{
    (void)state;
    manifest *m = (manifest *)1;
    char p[256];
    scratch_join(p, sizeof p, scratch, "nope.db");
    assert_int_equal(manifest_open(&m, p), -1);
    assert_null(m);
    assert_contains(lvd_errmsg(), p);
    assert_contains(lvd_errmsg(), "No such file");

    scratch_join(p, sizeof p, scratch, "garbage.db");
    char junk[4096];
    memset(junk, 'x', sizeof junk);
    scratch_spit(p, junk, sizeof junk);
    assert_int_equal(manifest_open(&m, p), -1);
    assert_contains(lvd_errmsg(), p);
    assert_contains(lvd_errmsg(), "not an SQLite database");

    /* An SQLite file that is not a manifest. */
    scratch_join(p, sizeof p, scratch, "other.db");
    sqlite3 *db;
    assert_int_equal(sqlite3_open(p, &db), SQLITE_OK);
    exec_sql(db, "CREATE TABLE t (x)");
    sqlite3_close(db);
    assert_int_equal(manifest_open(&m, p), -1);
    assert_contains(lvd_errmsg(), "not an lvd manifest");

    fixture f;
    make_fixture(&f, "newer", 5, 1, MANIFEST_SCHEMA_VERSION + 1);
    assert_int_equal(manifest_open(&m, f.db), -1);
    assert_contains(lvd_errmsg(), f.db);
    char v[64];
    snprintf(v, sizeof v, "schema version %d", MANIFEST_SCHEMA_VERSION + 1);
    assert_contains(lvd_errmsg(), v);
    snprintf(v, sizeof v, "(%d)", MANIFEST_SCHEMA_VERSION);
    assert_contains(lvd_errmsg(), v);
    free_fixture(&f);

    make_fixture(&f, "missing", 6, 2, 1);
    assert_int_equal(unlink(f.shard_path[1]), 0);
    assert_int_equal(manifest_open(&m, f.db), -1);
    assert_contains(lvd_errmsg(), f.shard_path[1]);
    assert_contains(lvd_errmsg(), "No such file");
    /* Lenient: opens, says which shard is missing, reads the others, fails on the missing one's samples. */
    assert_int_equal(manifest_open_flags(&m, f.db, MANIFEST_OPEN_LENIENT), 0);
    assert_int_equal(manifest_shard_status(m, 1, NULL, NULL), MANIFEST_SHARD_MISSING);
    assert_int_equal(manifest_shard_status(m, 0, NULL, NULL), MANIFEST_SHARD_OK); /* only the tar end marker */
    uint8_t buf[4096];
    size_t len;
    assert_int_equal(manifest_read(m, 0, buf, sizeof buf, &len), 0);
    assert_int_equal(manifest_read(m, 1, buf, sizeof buf, &len), -1);
    assert_contains(lvd_errmsg(), f.key[1]);
    assert_contains(lvd_errmsg(), f.shard_path[1]);
    manifest_close(m);
    /* A directory where the shard should be opens (O_RDONLY) but is not a shard. */
    assert_int_equal(mkdir(f.shard_path[1], 0755), 0);
    assert_int_equal(manifest_open(&m, f.db), -1);
    assert_contains(lvd_errmsg(), "not a regular file");
    assert_int_equal(manifest_open_flags(&m, f.db, MANIFEST_OPEN_LENIENT), 0);
    assert_int_equal(manifest_shard_status(m, 1, NULL, NULL), MANIFEST_SHARD_MISSING);
    manifest_close(m);
    free_fixture(&f);

    make_fixture(&f, "short", 6, 2, 1);
    assert_int_equal(manifest_open(&m, f.db), 0);
    uint64_t recorded = manifest_shard_bytes(m, 0);
    manifest_close(m);
    assert_int_equal(truncate(f.shard_path[0], (off_t)recorded - 1), 0);
    assert_int_equal(manifest_open(&m, f.db), -1);
    char want[512];
    snprintf(want, sizeof want, "shard %s: %" PRIu64 " bytes, manifest records %" PRIu64 " (truncated?)",
             f.shard_path[0], recorded - 1, recorded);
    assert_contains(lvd_errmsg(), want);
    assert_int_equal(manifest_open_flags(&m, f.db, MANIFEST_OPEN_LENIENT), 0);
    uint64_t size;
    assert_int_equal(manifest_shard_status(m, 0, &size, NULL), MANIFEST_SHARD_SHORT);
    assert_int_equal(size, recorded - 1);
    manifest_close(m);
    free_fixture(&f);
}

/* A sample recorded past its shard's bytes, and ids with a gap: inconsistent tables are refused. */
static void test_inconsistent(void **state)
{
    (void)state;
    fixture f;
    make_fixture(&f, "bad", 4, 1, 1);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f.db, &db), SQLITE_OK);
    exec_sql(db, "UPDATE samples SET offset = (SELECT bytes FROM shards) WHERE id = 2");
    sqlite3_close(db);
    manifest *m;
    assert_int_equal(manifest_open(&m, f.db), -1);
    assert_contains(lvd_errmsg(), f.key[1]);
    assert_contains(lvd_errmsg(), "outside");
    assert_int_equal(sqlite3_open(f.db, &db), SQLITE_OK);
    exec_sql(db, "UPDATE samples SET offset = 0 WHERE id = 2; UPDATE samples SET id = 9 WHERE id = 3");
    sqlite3_close(db);
    assert_int_equal(manifest_open(&m, f.db), -1);
    assert_contains(lvd_errmsg(), "not 1..4");
    free_fixture(&f);
}

/* ---- reads ---- */

static void test_read(void **state)
{
    (void)state;
    fixture f;
    make_fixture(&f, "read", 40, 3, 1);
    manifest *m;
    assert_int_equal(manifest_open(&m, f.db), 0);
    assert_int_equal(manifest_count(m), 40);
    assert_int_equal(manifest_shard_count(m), 3);
    assert_string_equal(manifest_info(m, "name"), "m");
    assert_null(manifest_info(m, "nope"));
    assert_string_equal(manifest_shard_path(m, 2), f.shard_path[2]);
    uint64_t L = 0;
    for (size_t i = 0; i < f.n; i++)
        L += f.weight[i];
    assert_int_equal(manifest_epoch_length(m), L);
    uint8_t buf[4096];
    for (size_t i = 0; i < f.n; i++) {
        manifest_sample s;
        assert_int_equal(manifest_sample_meta(m, i, &s), 0);
        assert_int_equal(s.id, (int64_t)i + 1);
        assert_string_equal(s.key, f.key[i]);
        assert_int_equal(s.weight, f.weight[i]);
        assert_int_equal(s.width, 7);
        assert_string_equal(s.format, "jpeg");
        size_t len = 0;
        assert_int_equal(manifest_read(m, i, buf, sizeof buf, &len), 0);
        assert_int_equal(len, f.len[i]);
        assert_memory_equal(buf, f.data[i], len);
        assert_int_equal(manifest_read_checked(m, i, buf, sizeof buf, &len), 0);
    }
    size_t len;
    assert_int_equal(manifest_read(m, 40, buf, sizeof buf, &len), -1);
    size_t big = 0;
    for (size_t i = 0; i < f.n; i++)
        if (f.len[i] > f.len[big])
            big = i;
    assert_int_equal(manifest_read(m, big, buf, f.len[big] - 1, &len), -1);
    assert_contains(lvd_errmsg(), f.key[big]);
    manifest_close(m);

    /* Flip one byte of sample 5's data in its shard: read succeeds, read_checked names the key. */
    assert_int_equal(manifest_open(&m, f.db), 0);
    manifest_sample s;
    manifest_sample_meta(m, 5, &s);
    manifest_close(m);
    FILE *fp = fopen(f.shard_path[s.shard], "r+b");
    assert_non_null(fp);
    fseek(fp, (long)(s.offset + s.length / 2), SEEK_SET);
    int c = fgetc(fp);
    fseek(fp, (long)(s.offset + s.length / 2), SEEK_SET);
    fputc(c ^ 0x20, fp);
    fclose(fp);
    assert_int_equal(manifest_open(&m, f.db), 0);
    assert_int_equal(manifest_read(m, 5, buf, sizeof buf, &len), 0);
    assert_int_equal(manifest_read_checked(m, 5, buf, sizeof buf, &len), -1);
    char want[256];
    snprintf(want, sizeof want, "%s: data SHA-256 mismatch in %s at %" PRIu64, f.key[5], f.shard_path[s.shard],
             s.offset);
    assert_contains(lvd_errmsg(), want);
    assert_int_equal(manifest_read_checked(m, 4, buf, sizeof buf, &len), 0);
    manifest_close(m);
    free_fixture(&f);
}

/* A manifest path holding '?', '#' and '%' (URI syntax characters), opened from a relative path. */
static void test_uri_chars(void **state)
{
    (void)state;
    fixture f;
    make_fixture(&f, "q?x#y%20z", 3, 1, 1);
    manifest *m;
    assert_int_equal(manifest_open(&m, f.db), 0);
    uint8_t buf[4096];
    size_t len;
    assert_int_equal(manifest_read_checked(m, 2, buf, sizeof buf, &len), 0);
    manifest_close(m);
    char cwd[512];
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(scratch), 0);
    assert_int_equal(manifest_open(&m, "q?x#y%20z/m.db"), 0);
    assert_string_equal(manifest_shard_path(m, 0), "q?x#y%20z/shards/img-000000.tar");
    assert_int_equal(manifest_read_checked(m, 1, buf, sizeof buf, &len), 0);
    manifest_close(m);
    assert_int_equal(chdir(cwd), 0);
    free_fixture(&f);
}

/* ---- the epoch order: a reference written from manifest.h's text, separately from manifest.c ---- */

static uint64_t ref_next(uint64_t *state)
{
    *state = *state + 0x9e3779b97f4a7c15ull;
    uint64_t z = *state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The whole shuffled epoch as 1-based ids (length *L). */
static int64_t *ref_epoch(const fixture *f, uint64_t seed, uint64_t epoch, size_t *L)
{
    size_t total = 0;
    for (size_t i = 0; i < f->n; i++)
        total += f->weight[i];
    int64_t *list = malloc(total * sizeof *list);
    size_t p = 0;
    for (size_t id = 1; id <= f->n; id++)
        for (uint32_t k = 0; k < f->weight[id - 1]; k++)
            list[p++] = (int64_t)id;
    uint64_t state = seed * 0x9e3779b97f4a7c15ull + epoch;
    for (size_t i = total - 1; i >= 1; i--) {
        size_t j = (size_t)(ref_next(&state) % (uint64_t)(i + 1));
        int64_t t = list[i];
        list[i] = list[j];
        list[j] = t;
    }
    *L = total;
    return list;
}

static void test_reference_prng(void **state)
{
    (void)state;
    /* splitmix64 from state 0: the published first outputs (Vigna's splitmix64.c). */
    uint64_t s = 0;
    assert_int_equal(ref_next(&s), 0xe220a8397b1dcdafull);
    assert_int_equal(ref_next(&s), 0x6e789e6aa1b965f4ull);
    assert_int_equal(ref_next(&s), 0x06c45d188009454full);
}

static void test_order(void **state)
{
    (void)state;
    fixture f;
    make_fixture(&f, "order", 50, 2, 1);
    manifest *m;
    assert_int_equal(manifest_open(&m, f.db), 0);
    const uint32_t Rs[] = {1, 2, 3, 7};
    for (size_t ri = 0; ri < 4; ri++) {
        uint32_t R = Rs[ri];
        for (uint64_t epoch = 0; epoch < 2; epoch++) {
            size_t L;
            int64_t *ref = ref_epoch(&f, 12345, epoch, &L);
            uint32_t *count = calloc(f.n, sizeof *count);
            size_t total = 0;
            for (uint32_t r = 0; r < R; r++) {
                uint32_t *ord, *again;
                size_t n, n2;
                assert_int_equal(manifest_order(m, 12345, epoch, r, R, &ord, &n), 0);
                assert_int_equal(manifest_order(m, 12345, epoch, r, R, &again, &n2), 0);
                assert_int_equal(n, n2);
                assert_memory_equal(ord, again, n * sizeof *ord);
                assert_int_equal(n, L / R + (r < L % R ? 1 : 0));
                for (size_t k = 0; k < n; k++) {
                    assert_true(ord[k] < f.n);
                    count[ord[k]]++;
                    /* 0-based index = id - 1, at position r + k*R of the reference */
                    assert_int_equal((int64_t)ord[k] + 1, ref[r + k * R]);
                }
                total += n;
                free(ord);
                free(again);
            }
            assert_int_equal(total, L);
            for (size_t i = 0; i < f.n; i++)
                assert_int_equal(count[i], f.weight[i]);
            free(count);
            free(ref);
        }
    }
    /* Epochs and seeds differ. */
    uint32_t *a, *b, *c;
    size_t na, nb, nc;
    assert_int_equal(manifest_order(m, 1, 0, 0, 1, &a, &na), 0);
    assert_int_equal(manifest_order(m, 1, 1, 0, 1, &b, &nb), 0);
    assert_int_equal(manifest_order(m, 2, 0, 0, 1, &c, &nc), 0);
    assert_true(memcmp(a, b, na * sizeof *a) != 0);
    assert_true(memcmp(a, c, na * sizeof *a) != 0);
    free(a);
    free(b);
    free(c);
    /* More ranks than entries: the last ranks get nothing, still a valid pointer. */
    uint32_t *e;
    size_t ne;
    assert_int_equal(manifest_order(m, 1, 0, 199, 200, &e, &ne), 0);
    assert_int_equal(ne, 0);
    free(e);
    assert_int_equal(manifest_order(m, 1, 0, 3, 3, &e, &ne), -1);
    manifest_close(m);
    free_fixture(&f);
}

/* ---- concurrent reads ---- */

typedef struct reader_arg {
    const manifest *m;
    const fixture *f;
    int start, bad;
} reader_arg;

static void *reader(void *p)
{
    reader_arg *a = p;
    uint8_t buf[4096];
    for (int round = 0; round < 20; round++)
        for (size_t k = 0; k < a->f->n; k++) {
            size_t i = (k * 7 + (size_t)a->start) % a->f->n;
            size_t len;
            int rc = round & 1 ? manifest_read_checked(a->m, i, buf, sizeof buf, &len)
                               : manifest_read(a->m, i, buf, sizeof buf, &len);
            if (rc != 0 || len != a->f->len[i] || memcmp(buf, a->f->data[i], len) != 0)
                a->bad++;
        }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    fixture f;
    make_fixture(&f, "threads", 61, 3, 1);
    manifest *m;
    assert_int_equal(manifest_open(&m, f.db), 0);
    pthread_t t[8];
    reader_arg a[8];
    for (int i = 0; i < 8; i++) {
        a[i] = (reader_arg){m, &f, i * 5, 0};
        assert_int_equal(pthread_create(&t[i], NULL, reader, &a[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(a[i].bad, 0);
    }
    manifest_close(m);
    free_fixture(&f);
}

int main(void)
{
    if (scratch_make(scratch, sizeof scratch, "manifest") != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_errors),  cmocka_unit_test(test_inconsistent),
        cmocka_unit_test(test_read),         cmocka_unit_test(test_uri_chars),
        cmocka_unit_test(test_reference_prng), cmocka_unit_test(test_order),
        cmocka_unit_test(test_threads),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    scratch_remove(scratch);
    return rc;
}
