/* test_atomic_file.c — files written through atomic_file appear under their name whole at commit and not
 * before: an existing target keeps its old bytes until then, abort leaves neither the target nor a temporary
 * file, two writers of one target never share a temporary file, write errors (a file size limit) and targets
 * in a missing, non-directory or non-writable directory fail with a message naming the target. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "scratch.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "atomic_file.h"
#include "err.h"

static char scratch[64];

/* ---------------------------------------------------------------------------------------------------- */
/* helpers */

/* A fresh empty directory scratch/name into out. */
static void fresh_dir(char *out, size_t cap, const char *name)
{
    scratch_join(out, cap, scratch, name);
    assert_int_equal(mkdir(out, 0755), 0);
}

/* Entries of dir other than . and .., their names joined by spaces into names (may be NULL). */
static int count_entries(const char *dir, char *names, size_t cap)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    if (names)
        names[0] = '\0';
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        n++;
        if (names)
            snprintf(names + strlen(names), cap - strlen(names), "%s ", e->d_name);
    }
    closedir(d);
    return n;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void assert_content(const char *path, const void *want, size_t n)
{
    size_t len;
    uint8_t *got = scratch_slurp(path, &len);
    assert_int_equal(len, n);
    assert_memory_equal(got, want, n);
    free(got);
}

static void assert_msg_has(const char *needle)
{
    if (!strstr(lvd_errmsg(), needle))
        fail_msg("error message \"%s\" lacks \"%s\"", lvd_errmsg(), needle);
}

/* ---------------------------------------------------------------------------------------------------- */
/* tests */

static void test_commit_makes_the_file_whole(void **state)
{
    (void)state;
    char dir[128], path[192], names[512];
    fresh_dir(dir, sizeof dir, "commit");
    scratch_join(path, sizeof path, dir, "data.bin");
    /* 3 MiB in uneven pieces: more than one write(2) may take */
    size_t n = (3u << 20) + 77;
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(i * 2654435761u >> 13);
    atomic_file af;
    if (atomic_file_open(&af, path) != 0)
        fail_msg("%s", lvd_errmsg());
    for (size_t off = 0; off < n;) {
        size_t k = n - off < 100003 ? n - off : 100003;
        assert_int_equal(atomic_file_write(&af, buf + off, k), 0);
        off += k;
        if (off == 1000003 || off == 100003) {
            /* not there before commit; the bytes sit in one temporary file beside it */
            assert_false(exists(path));
            assert_int_equal(count_entries(dir, names, sizeof names), 1);
            if (strncmp(names, "data.bin.tmp", 12) != 0)
                fail_msg("temporary file '%s' is not named after the target", names);
        }
    }
    if (atomic_file_commit(&af) != 0)
        fail_msg("%s", lvd_errmsg());
    assert_content(path, buf, n);
    assert_int_equal(count_entries(dir, names, sizeof names), 1); /* the target only */
    assert_string_equal(names, "data.bin ");
    /* mode 0644 less the umask, like any new file */
    mode_t um = umask(0);
    umask(um);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644 & ~um);
    /* an empty file is a file too */
    char empty[192];
    scratch_join(empty, sizeof empty, dir, "empty");
    assert_int_equal(atomic_file_open(&af, empty), 0);
    assert_int_equal(atomic_file_write(&af, "", 0), 0);
    assert_int_equal(atomic_file_commit(&af), 0);
    assert_content(empty, "", 0);
    free(buf);
}

static void test_stream_writes_commit_whole(void **state)
{
    (void)state;
    char dir[128], path[192];
    fresh_dir(dir, sizeof dir, "stream");
    scratch_join(path, sizeof path, dir, "rows.csv");
    atomic_file af;
    assert_int_equal(atomic_file_open(&af, path), 0);
    FILE *f = atomic_file_stream(&af);
    assert_non_null(f);
    assert_ptr_equal(atomic_file_stream(&af), f); /* the same stream again */
    char want[64 * 1000 + 1];
    size_t len = 0;
    for (int i = 0; i < 1000; i++) {
        fprintf(f, "row %05d,%s\n", i, i % 2 ? "odd" : "even");
        len += (size_t)snprintf(want + len, sizeof want - len, "row %05d,%s\n", i, i % 2 ? "odd" : "even");
    }
    assert_int_equal(atomic_file_write(&af, "end\n", 4), 0); /* goes through the stream, in order */
    memcpy(want + len, "end\n", 4);
    len += 4;
    assert_false(exists(path));
    assert_int_equal(atomic_file_commit(&af), 0);
    assert_content(path, want, len);
    assert_int_equal(count_entries(dir, NULL, 0), 1);
}

static void test_abort_leaves_nothing(void **state)
{
    (void)state;
    char dir[128], path[192];
    fresh_dir(dir, sizeof dir, "abort");
    scratch_join(path, sizeof path, dir, "gone.npy");
    atomic_file af;
    assert_int_equal(atomic_file_open(&af, path), 0);
    assert_int_equal(atomic_file_write(&af, "half a file", 11), 0);
    assert_int_equal(count_entries(dir, NULL, 0), 1);
    lvd_fail("the caller's own error");
    atomic_file_abort(&af);
    assert_string_equal(lvd_errmsg(), "the caller's own error"); /* abort keeps the message */
    assert_int_equal(count_entries(dir, NULL, 0), 0);
    atomic_file_abort(&af); /* twice: nothing left to do */
    /* with a stream */
    assert_int_equal(atomic_file_open(&af, path), 0);
    assert_non_null(atomic_file_stream(&af));
    fputs("buffered, never flushed", af.f);
    atomic_file_abort(&af);
    assert_int_equal(count_entries(dir, NULL, 0), 0);
}

static void test_existing_target_replaced_only_at_commit(void **state)
{
    (void)state;
    char dir[128], path[192];
    fresh_dir(dir, sizeof dir, "replace");
    scratch_join(path, sizeof path, dir, "model.safetensors");
    scratch_spit(path, "old bytes", 9);
    atomic_file af;
    assert_int_equal(atomic_file_open(&af, path), 0);
    assert_int_equal(atomic_file_write(&af, "the new, longer content", 23), 0);
    assert_content(path, "old bytes", 9);
    assert_int_equal(atomic_file_commit(&af), 0);
    assert_content(path, "the new, longer content", 23);
    assert_int_equal(count_entries(dir, NULL, 0), 1);
    /* an aborted rewrite keeps the content */
    assert_int_equal(atomic_file_open(&af, path), 0);
    assert_int_equal(atomic_file_write(&af, "x", 1), 0);
    atomic_file_abort(&af);
    assert_content(path, "the new, longer content", 23);
    assert_int_equal(count_entries(dir, NULL, 0), 1);
}

static void test_two_writers_of_one_target(void **state)
{
    (void)state;
    char dir[128], path[192];
    fresh_dir(dir, sizeof dir, "two");
    scratch_join(path, sizeof path, dir, "shared.bin");
    atomic_file a, b;
    assert_int_equal(atomic_file_open(&a, path), 0);
    assert_int_equal(atomic_file_open(&b, path), 0);
    assert_string_not_equal(a.tmp, b.tmp);
    assert_int_equal(count_entries(dir, NULL, 0), 2);
    assert_int_equal(atomic_file_write(&a, "AAAA", 4), 0);
    assert_int_equal(atomic_file_write(&b, "BB", 2), 0);
    assert_int_equal(atomic_file_commit(&a), 0);
    assert_content(path, "AAAA", 4);
    assert_int_equal(atomic_file_commit(&b), 0);
    assert_content(path, "BB", 2);
    assert_int_equal(count_entries(dir, NULL, 0), 1);
    /* a leftover of a crashed writer with the next name is stepped over, not reused */
    assert_int_equal(atomic_file_open(&a, path), 0);
    char next[256];
    snprintf(next, sizeof next, "%s", a.tmp);
    atomic_file_abort(&a);
    char *dot = strrchr(next, '.');
    assert_non_null(dot);
    snprintf(dot + 1, sizeof next - (size_t)(dot + 1 - next), "%u", (unsigned)strtoul(dot + 1, NULL, 10) + 1);
    scratch_spit(next, "stale", 5);
    assert_int_equal(atomic_file_open(&a, path), 0);
    assert_string_not_equal(a.tmp, next);
    assert_int_equal(atomic_file_write(&a, "C", 1), 0);
    assert_int_equal(atomic_file_commit(&a), 0);
    assert_content(path, "C", 1);
    assert_content(next, "stale", 5);
    assert_int_equal(unlink(next), 0);
}

static void test_missing_directory_names_the_path(void **state)
{
    (void)state;
    char path[256];
    scratch_join(path, sizeof path, scratch, "no/such/dir/r.csv");
    atomic_file af;
    lvd_err_clear();
    assert_int_equal(atomic_file_open(&af, path), -1);
    assert_msg_has(path);
    assert_msg_has("No such file or directory");
    atomic_file_abort(&af); /* harmless after a failed open */
    /* a path through a regular file */
    char file[192];
    scratch_join(file, sizeof file, scratch, "plain");
    scratch_spit(file, "x", 1);
    scratch_join(path, sizeof path, file, "inside.npy");
    assert_int_equal(atomic_file_open(&af, path), -1);
    assert_msg_has(path);
    assert_msg_has("Not a directory");
}

static void test_mkdirs(void **state)
{
    (void)state;
    char deep[256], file[192], inside[256];
    struct stat st;
    scratch_join(deep, sizeof deep, scratch, "a/b/c");
    assert_int_equal(atomic_file_mkdirs(deep), 0);
    assert_int_equal(stat(deep, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(atomic_file_mkdirs(deep), 0); /* existing: fine */
    scratch_join(deep, sizeof deep, scratch, "a/b/d/"); /* trailing slash */
    assert_int_equal(atomic_file_mkdirs(deep), 0);
    assert_int_equal(stat(deep, &st), 0);
    /* a parent that is a regular file: the error names the directory that could not be made */
    scratch_join(file, sizeof file, scratch, "plainfile");
    scratch_spit(file, "x", 1);
    scratch_join(inside, sizeof inside, file, "sub/dir");
    lvd_err_clear();
    assert_int_equal(atomic_file_mkdirs(inside), -1);
    assert_msg_has("cannot create directory");
    assert_msg_has(file);
}

/* Runs fn in a child process (as an unprivileged user when this is root, so permissions apply) and fails
 * unless it exits 0; fn returns a small number naming the check that failed, and its message is printed. */
static void in_child(int (*fn)(const char *), const char *arg, int drop_root)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (drop_root && geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
            _exit(99);
        int r = fn(arg);
        if (r != 0)
            fprintf(stderr, "# child check %d failed; message: %s\n", r, lvd_errmsg());
        fflush(NULL);
        _exit(r);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("child check failed (status %d)", st);
}

static int unwritable_child(const char *path)
{
    atomic_file af;
    if (atomic_file_open(&af, path) != -1)
        return 1;
    if (!strstr(lvd_errmsg(), path) || !strstr(lvd_errmsg(), "Permission denied"))
        return 2;
    return 0;
}

static void test_unwritable_directory_names_the_path(void **state)
{
    (void)state;
    char dir[128], path[192];
    fresh_dir(dir, sizeof dir, "readonly");
    assert_int_equal(chmod(scratch, 0711), 0); /* an unprivileged child may pass through */
    assert_int_equal(chmod(dir, 0555), 0);
    scratch_join(path, sizeof path, dir, "out.html");
    in_child(unwritable_child, path, 1);
    assert_int_equal(count_entries(dir, NULL, 0), 0);
    assert_int_equal(chmod(dir, 0755), 0);
    assert_int_equal(chmod(scratch, 0700), 0);
}

/* With files limited to 1000 bytes, writing more fails naming the target and leaves nothing behind. */
static int too_large_child(const char *path)
{
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit rl = {1000, 1000};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
        return 10;
    static char big[5000];
    memset(big, 'z', sizeof big);
    atomic_file af;
    if (atomic_file_open(&af, path) != 0)
        return 1;
    if (atomic_file_write(&af, big, sizeof big) != -1)
        return 2;
    if (!strstr(lvd_errmsg(), path) || !strstr(lvd_errmsg(), "File too large"))
        return 3;
    atomic_file_abort(&af);
    /* through a stream the error shows at commit */
    if (atomic_file_open(&af, path) != 0)
        return 4;
    FILE *f = atomic_file_stream(&af);
    if (!f)
        return 5;
    fwrite(big, 1, sizeof big, f);
    lvd_err_clear();
    if (atomic_file_commit(&af) != -1)
        return 6;
    if (!strstr(lvd_errmsg(), path))
        return 7;
    if (access(path, F_OK) == 0)
        return 8;
    return 0;
}

static void test_write_error_names_the_path(void **state)
{
    (void)state;
    char dir[128], path[192];
    fresh_dir(dir, sizeof dir, "toolarge");
    scratch_join(path, sizeof path, dir, "big.npy");
    in_child(too_large_child, path, 0);
    assert_int_equal(count_entries(dir, NULL, 0), 0);
}

static int setup(void **state)
{
    (void)state;
    return scratch_make(scratch, sizeof scratch, "atomic");
}

static int teardown(void **state)
{
    (void)state;
    return scratch_remove(scratch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_makes_the_file_whole),
        cmocka_unit_test(test_mkdirs),
        cmocka_unit_test(test_stream_writes_commit_whole),
        cmocka_unit_test(test_abort_leaves_nothing),
        cmocka_unit_test(test_existing_target_replaced_only_at_commit),
        cmocka_unit_test(test_two_writers_of_one_target),
        cmocka_unit_test(test_missing_directory_names_the_path),
        cmocka_unit_test(test_unwritable_directory_names_the_path),
        cmocka_unit_test(test_write_error_names_the_path),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
