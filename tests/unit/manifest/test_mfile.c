/* test_mfile.c — the manifest helpers of curate/manifest/mfile.h: relative shard paths (the answers worked out
 * by hand: ".." per component of the manifest's folder below the common prefix) and the URIs SQLite opens. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>

#include "manifest/mfile.h"

static void check_rel(const char *from, const char *to, const char *want)
{
    char *r = mfile_relpath(from, to);
    assert_non_null(r);
    assert_string_equal(r, want);
    free(r);
}

static void test_relpath(void **state)
{
    (void)state;
    check_rel("/data/run", "/data/run/work/shards/img-000000.tar", "work/shards/img-000000.tar");
    check_rel("/data/manifests", "/data/work/shards/img-000000.tar", "../work/shards/img-000000.tar");
    check_rel("/data/m/deep/er", "/data/work/s.tar", "../../../work/s.tar");
    check_rel("/", "/data/s.tar", "data/s.tar");
    check_rel("/data/m", "/s.tar", "../../s.tar");
    check_rel("/data/m", "/data/m", ".");
    check_rel("/data/m", "/data", "..");
    /* a common prefix of characters is not a common component */
    check_rel("/data/work2", "/data/work/s.tar", "../work/s.tar");
    check_rel("/data/work", "/data/work2/s.tar", "../work2/s.tar");
}

static void test_uri(void **state)
{
    (void)state;
    char *u = mfile_uri("/a b/c?d#e%f.db", "mode=ro&immutable=1");
    assert_non_null(u);
    assert_string_equal(u, "file:/a%20b/c%3Fd%23e%25f.db?mode=ro&immutable=1");
    free(u);
    u = mfile_uri("rel/m.db", "mode=ro");
    assert_string_equal(u, "file:rel/m.db?mode=ro");
    free(u);
}

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_relpath), cmocka_unit_test(test_uri)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
