/* test_catalog.c — the catalog (open, migrations, collections, runs) and the shard store's commit protocol:
 * what a crash between append and commit leaves behind, shard rollover, and lost committed data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "catalog.h"
#include "err.h"
#include "sha256.h"
#include "shard.h"
#include "store.h"

static char dir[256];

static int setup(void **state)
{
    (void)state;
    return scratch_make(dir, sizeof dir, "catalog");
}

static int teardown(void **state)
{
    (void)state;
    return scratch_remove(dir);
}

static void path_in(char *buf, size_t cap, const char *name) { snprintf(buf, cap, "%s/%s", dir, name); }

static off_t file_size(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 ? st.st_size : -1;
}

static void test_open_migrates_and_refuses_newer(void **state)
{
    (void)state;
    char p[300];
    path_in(p, sizeof p, "a.db");
    catalog *c;
    assert_int_equal(catalog_open(&c, p, 0), 0);
    assert_int_equal(catalog_schema_version(c), catalog_schema_latest());
    int64_t n = -1;
    assert_int_equal(catalog_query_int(c, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN"
                                          " ('runs','collections','shards','images','urls','members','decodes')",
                                       0, &n), 0);
    assert_int_equal(n, 7);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(catalog_db(c), "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    /* Foreign keys are enforced in catalog.db: an image pointing at no shard is refused. */
    assert_int_not_equal(catalog_exec(c, "INSERT INTO images(sha256, bytes, format, shard_id, offset, created_at)"
                                         " VALUES ('x', 1, 'jpeg', 999, 0, 'now')"), 0);
    assert_non_null(strstr(lvd_errmsg(), "FOREIGN KEY"));
    /* A newer schema than this build knows is refused, naming both versions. */
    assert_int_equal(catalog_exec(c, "UPDATE meta SET value = '99' WHERE key = 'schema_version'"), 0);
    catalog_close(c);
    assert_int_equal(catalog_open(&c, p, 0), -1);
    assert_non_null(strstr(lvd_errmsg(), "99"));
    assert_non_null(strstr(lvd_errmsg(), p));
    /* Read-only opening of a missing catalog fails and creates nothing. */
    path_in(p, sizeof p, "missing.db");
    assert_int_equal(catalog_open(&c, p, CATALOG_READONLY), -1);
    assert_int_equal(access(p, F_OK), -1);
}

/* One writer per file: a second writable open fails at once naming the first (its run once started), a reader
 * is not stopped; a 'running' row left by a dead writer is marked interrupted at its last commit by the next
 * writable open, and every commit on a handle with a run stamps committed_at. */
static void test_one_writer_and_interrupted_runs(void **state)
{
    (void)state;
    char p[300];
    path_in(p, sizeof p, "locked.db");
    catalog *c, *c2, *r;
    assert_int_equal(catalog_open(&c, p, 0), 0);
    int64_t run;
    assert_int_equal(catalog_run_start(c, "crawl", "0/1", "{}", "fp", &run), 0);
    assert_int_equal(catalog_open(&c2, p, 0), -1);
    char want[64];
    snprintf(want, sizeof want, "pid %ld on host", (long)getpid());
    assert_non_null(strstr(lvd_errmsg(), "is in use by"));
    assert_non_null(strstr(lvd_errmsg(), want));
    assert_non_null(strstr(lvd_errmsg(), "stage crawl"));
    assert_non_null(strstr(lvd_errmsg(), "--wait"));
    assert_int_equal(catalog_open(&r, p, CATALOG_READONLY), 0); /* readers are never refused */
    catalog_close(r);

    /* Two commits: committed_at follows the later one. */
    int64_t n = 0;
    assert_int_equal(catalog_begin(c), 0);
    assert_int_equal(catalog_exec(c, "INSERT INTO collections(name, role, created_at) VALUES ('a', 'pool', 'x')"), 0);
    assert_int_equal(catalog_commit(c), 0);
    assert_int_equal(catalog_query_int(c, "SELECT count(*) FROM runs WHERE committed_at IS NOT NULL", 0, &n), 0);
    assert_int_equal(n, 1);
    /* A dead run: its row says running, its last commit was at a known time. */
    assert_int_equal(catalog_exec(c, "UPDATE runs SET committed_at = '2026-01-02T03:04:05.678Z';"
                                     "INSERT INTO runs(stage, part, params, fingerprint, started_at, status)"
                                     " VALUES ('decode', '0/1', '{}', 'fp', '2026-01-01T00:00:00.000Z', 'running')"),
                     0);
    catalog_close(c); /* the process "dies": the rows stay as they are */
    assert_int_equal(catalog_open(&c, p, CATALOG_READONLY), 0);
    assert_int_equal(catalog_query_int(c, "SELECT count(*) FROM runs WHERE status = 'running'", 0, &n), 0);
    assert_int_equal(n, 2);
    catalog_close(c);

    assert_int_equal(catalog_open(&c2, p, 0), 0);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(catalog_db(c2), "SELECT status, finished_at FROM runs ORDER BY id", -1, &st,
                                        NULL), SQLITE_OK);
    const char *want_fin[2] = {"2026-01-02T03:04:05.678Z", "2026-01-01T00:00:00.000Z"}; /* none: its start */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), "interrupted");
        assert_string_equal((const char *)sqlite3_column_text(st, 1), want_fin[i]);
    }
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    catalog_close(c2);
}

static void test_collections_and_runs(void **state)
{
    (void)state;
    char p[300];
    path_in(p, sizeof p, "b.db");
    catalog *c;
    assert_int_equal(catalog_open(&c, p, 0), 0);
    int64_t a, b;
    assert_int_equal(catalog_collection(c, "pool", "pool", &a), 0);
    assert_int_equal(catalog_collection(c, "pool", "pool", &b), 0);
    assert_int_equal(a, b);
    assert_int_equal(catalog_collection(c, "pool", NULL, &b), 0);
    assert_int_equal(a, b);
    assert_int_equal(catalog_collection(c, "pool", "benchmark", &b), -1);
    assert_non_null(strstr(lvd_errmsg(), "'pool'"));
    assert_non_null(strstr(lvd_errmsg(), "'benchmark'"));
    assert_int_equal(catalog_collection(c, "x", "bogus", &b), -1);
    assert_int_equal(catalog_collection(c, "nope", NULL, &b), -1);
    int64_t run;
    assert_int_equal(catalog_run_start(c, "crawl", "0/1", "{\"a\":1}", "fp", &run), 0);
    assert_int_equal(catalog_run_finish(c, run, "done", "{\"ok\":3}"), 0);
    int64_t done = 0;
    assert_int_equal(catalog_query_int(c, "SELECT count(*) FROM runs WHERE status = 'done' AND finished_at IS NOT"
                                          " NULL AND summary = '{\"ok\":3}'", 0, &done), 0);
    assert_int_equal(done, 1);
    catalog_close(c);
}

/* Appends n members "k<i>" (i from first) of (i % 4000) + 1 bytes of value i & 0xff; shard[k] and offs[k]
 * receive where member first + k went. */
static void append_n(store *s, int first, int n, int64_t *shard, uint64_t *offs)
{
    for (int k = 0; k < n; k++) {
        int i = first + k;
        char key[16], data[4096];
        snprintf(key, sizeof key, "k%d", i);
        memset(data, i & 0xff, sizeof data);
        assert_int_equal(store_append(s, key, "bin", data, (size_t)(i % 4000) + 1, "{}", &shard[k], &offs[k]), 0);
    }
}

/* Collection names become directory names (WORK/embeddings/<model>/<collection>/): catalog_collection refuses
 * to create a collection whose name cannot be one, and creates nothing; UTF-8 names are fine. */
static void test_collection_names(void **state)
{
    (void)state;
    char p[300];
    path_in(p, sizeof p, "names.db");
    catalog *c;
    assert_int_equal(catalog_open(&c, p, 0), 0);
    int64_t id;
    static const char *const bad[] = {"", ".", "..", "a/b", "/", "x\ty", "x\x7f", " a", "a "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(catalog_collection(c, bad[i], "pool", &id), -1);
        assert_non_null(strstr(lvd_errmsg(), "collection name"));
    }
    /* The rule itself. Byte counts are of UTF-8: 100 x "é" is 200 bytes (allowed), one more byte is not. */
    char e100[256] = "", e100a[256];
    for (int i = 0; i < 100; i++)
        strcat(e100, "\xc3\xa9");
    snprintf(e100a, sizeof e100a, "%sa", e100);
    char x200[202];
    memset(x200, 'x', 200);
    x200[200] = '\0';
    const char *ok[] = {"pool", "caf\xc3\xa9", "imagenet val", "a.b", "..a", ".hidden", "50%_[x]*?\\", x200, e100,
                        "\xe5\x90\x8d\xe5\x89\x8d", "\xf0\x9f\x93\xb7", "\xc2\xa0nbsp"};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        if (catalog_check_collection_name(ok[i]) != 0)
            fail_msg("'%s' refused: %s", ok[i], lvd_errmsg());
    static const struct {
        const char *name, *why;
    } no[] = {
        {"", "it is empty"},
        {".", "'.' is not a directory name"},
        {"..", "'..' is not a directory name"},
        {"a/b", "contains '/'"},
        {"a\x01", "control character U+0001"},
        {"a\x1f", "control character U+001F"},
        {"a\x7f", "control character U+007F"},
        {"a\xc2\x85", "control character U+0085"}, /* C1 NEL */
        {" a", "starts with a space"},
        {"a ", "ends with a space"},
        {"caf\xe9", "byte 4 is not UTF-8"},          /* Latin-1 */
        {"a\xc3", "byte 2 is not UTF-8"},            /* truncated */
        {"\xc0\xaf", "byte 1 is not UTF-8"},         /* overlong '/' */
        {"x\xe0\x80\xaf", "byte 2 is not UTF-8"},    /* overlong '/' */
        {"\xed\xa0\x80", "byte 1 is not UTF-8"},     /* surrogate U+D800 */
        {"\xf4\x90\x80\x80", "byte 1 is not UTF-8"}, /* past U+10FFFF */
        {"ab\x80", "byte 3 is not UTF-8"},           /* a lone continuation byte */
    };
    for (size_t i = 0; i < sizeof no / sizeof *no; i++) {
        assert_int_equal(catalog_check_collection_name(no[i].name), -1);
        if (!strstr(lvd_errmsg(), no[i].why))
            fail_msg("case %zu: '%s' not in: %s", i, no[i].why, lvd_errmsg());
        assert_non_null(strstr(lvd_errmsg(), "1 to 200 bytes"));
    }
    x200[0] = 'y';
    char x201[203];
    snprintf(x201, sizeof x201, "%sz", x200);
    assert_int_equal(catalog_check_collection_name(x201), -1);
    assert_non_null(strstr(lvd_errmsg(), "it has 201 bytes"));
    assert_non_null(strstr(lvd_errmsg(), "'yxxx")); /* the name */
    assert_int_equal(catalog_check_collection_name(e100a), -1);
    assert_non_null(strstr(lvd_errmsg(), "it has 201 bytes"));
    /* The message quotes the name, control characters and stray bytes as \xNN, UTF-8 as it is. */
    assert_int_equal(catalog_check_collection_name("caf\xc3\xa9\x1b[2J\xff/"), -1);
    assert_non_null(strstr(lvd_errmsg(), "collection name 'caf\xc3\xa9\\x1b[2J\\xff/' is not allowed"));
    assert_null(strchr(lvd_errmsg(), '\x1b'));

    int64_t n = -1;
    assert_int_equal(catalog_query_int(c, "SELECT count(*) FROM collections", -1, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(catalog_collection(c, "café", "pool", &id), 0);
    assert_int_equal(catalog_collection(c, "café", NULL, &n), 0);
    assert_int_equal(n, id);
    catalog_close(c);
}

static void test_store_crash_between_append_and_commit(void **state)
{
    (void)state;
    char p[300], shard0[300];
    path_in(p, sizeof p, "store.db");
    path_in(shard0, sizeof shard0, "shards/raw-000000.tar");
    catalog *c;
    assert_int_equal(catalog_open(&c, p, 0), 0);
    store *s;
    int64_t shard[64];
    uint64_t off[64];
    assert_int_equal(store_open(&s, c, dir, "raw", "", 0), 0);
    append_n(s, 0, 5, shard, off);
    assert_int_equal(catalog_begin(c), 0);
    assert_int_equal(store_sync(s), 0);
    assert_int_equal(catalog_commit(c), 0);
    int64_t committed = 0;
    assert_int_equal(catalog_query_int(c, "SELECT committed FROM shards", 0, &committed), 0);
    /* Flushed: the committed data plus the two-block end marker. */
    assert_int_equal(file_size(shard0), committed + 1024);
    /* A batch appended and synced but never committed (the process dies before COMMIT). */
    append_n(s, 5, 7, shard + 5, off + 5);
    assert_int_equal(catalog_begin(c), 0);
    assert_int_equal(store_sync(s), 0);
    catalog_rollback(c);
    store_close(s);
    assert_true(file_size(shard0) > committed + 1024);
    /* Reopening cuts the uncommitted tail; the next batch lands where the tail was. */
    assert_int_equal(store_open(&s, c, dir, "raw", "", 0), 0);
    assert_int_equal(file_size(shard0), committed);
    append_n(s, 12, 2, shard + 12, off + 12);
    assert_int_equal(off[12], off[4] + ((4 + 1 + 511) / 512) * 512 + 512 + 512 + 512);
    assert_int_equal(catalog_begin(c), 0);
    assert_int_equal(store_sync(s), 0);
    assert_int_equal(catalog_commit(c), 0);
    store_close(s);
    /* The shard reads as the 5 + 2 committed samples (data + json each), nothing of the lost batch. */
    shard_reader *r;
    assert_int_equal(shard_reader_open(&r, shard0), 0);
    shard_member m;
    int members = 0, lost = 0;
    while (shard_reader_next(r, &m) == 1) {
        members++;
        for (int i = 5; i < 12; i++) {
            char name[32];
            snprintf(name, sizeof name, "k%d.bin", i);
            lost += strcmp(m.name, name) == 0;
        }
    }
    assert_false(shard_reader_torn(r));
    shard_reader_close(r);
    assert_int_equal(members, 14);
    assert_int_equal(lost, 0);
    /* Data reads back through the catalog's location. */
    char buf[16];
    assert_int_equal(store_read(c, dir, shard[13], off[13], buf, 14), 0);
    for (int i = 0; i < 14; i++)
        assert_int_equal((unsigned char)buf[i], 13);
    int64_t members_row = 0;
    assert_int_equal(catalog_query_int(c, "SELECT members FROM shards", 0, &members_row), 0);
    assert_int_equal(members_row, 14);
    catalog_close(c);
}

static void commit_store(catalog *c, store *s)
{
    assert_int_equal(catalog_begin(c), 0);
    assert_int_equal(store_sync(s), 0);
    assert_int_equal(catalog_commit(c), 0);
}

static void test_store_rollover(void **state)
{
    (void)state;
    char p[300];
    path_in(p, sizeof p, "roll.db");
    catalog *c;
    assert_int_equal(catalog_open(&c, p, 0), 0);
    store *s;
    int64_t shard[64];
    uint64_t off[64];
    /* 8 KiB shards: members of up to 4000 bytes roll over inside one batch. */
    assert_int_equal(store_open(&s, c, dir, "img", "p1of2", 8192), 0);
    append_n(s, 3990, 6, shard, off);
    commit_store(c, s);
    store_close(s);
    int64_t nshards = 0;
    assert_int_equal(catalog_query_int(c, "SELECT count(*) FROM shards WHERE path LIKE 'shards/img-p1of2-%'", 0,
                                       &nshards), 0);
    assert_true(nshards >= 2);
    /* Every shard's committed size is what is on disk before the end marker, and members add up. */
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(catalog_db(c), "SELECT path, committed, members FROM shards", -1, &st,
                                        NULL), SQLITE_OK);
    int bad = 0;
    int64_t members = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        char f[600];
        snprintf(f, sizeof f, "%s/%s", dir, (const char *)sqlite3_column_text(st, 0));
        bad += file_size(f) != sqlite3_column_int64(st, 1) + 1024;
        members += sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    assert_int_equal(bad, 0);
    assert_int_equal(members, 12);
    /* Each member reads back from the shard the store said it went to. */
    for (int i = 3990; i < 3996; i++) {
        char buf[4096];
        size_t n = (size_t)(i % 4000) + 1;
        assert_int_equal(store_read(c, dir, shard[i - 3990], off[i - 3990], buf, n), 0);
        assert_int_equal((unsigned char)buf[0], i & 0xff);
        assert_int_equal((unsigned char)buf[n - 1], i & 0xff);
    }
    catalog_close(c);
}

static void test_store_reports_lost_committed_data(void **state)
{
    (void)state;
    char p[300], f[300];
    path_in(p, sizeof p, "lost.db");
    catalog *c;
    assert_int_equal(catalog_open(&c, p, 0), 0);
    store *s;
    int64_t shard[64];
    uint64_t off[64];
    assert_int_equal(store_open(&s, c, dir, "raw", "lost", 0), 0);
    append_n(s, 0, 3, shard, off);
    commit_store(c, s);
    store_close(s);
    /* Committed bytes vanish behind the catalog's back: reopening says so instead of appending. */
    path_in(f, sizeof f, "shards/raw-lost-000000.tar");
    assert_int_equal(truncate(f, 100), 0);
    assert_int_equal(store_open(&s, c, dir, "raw", "lost", 0), -1);
    assert_non_null(strstr(lvd_errmsg(), f));
    assert_int_equal(file_size(f), 100);
    catalog_close(c);
}

static void test_store_content_addressing(void **state)
{
    (void)state;
    char p[300];
    path_in(p, sizeof p, "ca.db");
    catalog *c;
    assert_int_equal(catalog_open(&c, p, 0), 0);
    store *s;
    assert_int_equal(store_open(&s, c, dir, "raw", "ca", 0), 0);
    static const char body[] = "\xff\xd8\xff not really a jpeg";
    char sha[SHA256_HEX];
    sha256_hex(body, sizeof body, sha);
    int64_t id = -1, again = -1, run = 0;
    assert_int_equal(catalog_run_start(c, "import", "0/1", "{}", "fp", &run), 0);
    assert_int_equal(store_find_image(c, sha, &id), 0);
    assert_int_equal(catalog_begin(c), 0);
    assert_int_equal(store_add_image(s, sha, "jpeg", "jpg", body, sizeof body, "{}", run, &id), 0);
    assert_int_equal(store_sync(s), 0);
    assert_int_equal(catalog_commit(c), 0);
    assert_true(id > 0);
    assert_int_equal(store_find_image(c, sha, &again), 1);
    assert_int_equal(again, id);
    /* The same bytes cannot become a second image row. */
    assert_int_equal(catalog_begin(c), 0);
    assert_int_equal(store_add_image(s, sha, "jpeg", "jpg", body, sizeof body, NULL, run, &again), -1);
    catalog_rollback(c);
    /* The row points at the bytes. */
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(catalog_db(c), "SELECT shard_id, offset, bytes, format FROM images", -1, &st,
                                        NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    char buf[sizeof body];
    assert_int_equal(sqlite3_column_int64(st, 2), (int64_t)sizeof body);
    assert_string_equal((const char *)sqlite3_column_text(st, 3), "jpeg");
    assert_int_equal(store_read(c, dir, sqlite3_column_int64(st, 0), (uint64_t)sqlite3_column_int64(st, 1), buf,
                                sizeof buf), 0);
    assert_memory_equal(buf, body, sizeof body);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    store_close(s);
    catalog_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_migrates_and_refuses_newer),
        cmocka_unit_test(test_collections_and_runs),
        cmocka_unit_test(test_one_writer_and_interrupted_runs),
        cmocka_unit_test(test_collection_names),
        cmocka_unit_test(test_store_crash_between_append_and_commit),
        cmocka_unit_test(test_store_rollover),
        cmocka_unit_test(test_store_reports_lost_committed_data),
        cmocka_unit_test(test_store_content_addressing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
