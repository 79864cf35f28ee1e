/* scratch.h — a scratch directory per unit-test program (made under /tmp, removed with its contents) and the
 * file helpers tests use in it. Include <cmocka.h> first: the file helpers fail the running test on error. */
#ifndef LVD_TEST_SCRATCH_H
#define LVD_TEST_SCRATCH_H

#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Makes /tmp/lvd-test-<tag>-XXXXXX into buf (cap bytes). Returns 0 or -1. */
static inline int scratch_make(char *buf, size_t cap, const char *tag)
{
    if (snprintf(buf, cap, "/tmp/lvd-test-%s-XXXXXX", tag) >= (int)cap)
        return -1;
    return mkdtemp(buf) ? 0 : -1;
}

static inline int scratch_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Removes dir and everything below it, without following links. Returns 0 or -1. */
static inline int scratch_remove(const char *dir)
{
    return nftw(dir, scratch_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* dir/name into out (cap bytes); fails the test when it does not fit. */
static inline void scratch_join(char *out, size_t cap, const char *dir, const char *name)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    assert_true(n > 0 && (size_t)n < cap);
}

/* The whole file at path, malloc'ed, with a NUL after its *len bytes; fails the test when it cannot be read. */
static inline uint8_t *scratch_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    assert_int_equal(fseek(f, 0, SEEK_SET), 0);
    uint8_t *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = 0;
    *len = (size_t)n;
    return buf;
}

/* Writes len bytes of data to path (created or truncated); fails the test on error. */
static inline void scratch_spit(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len)
        assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Runs the shell command cmd with stderr joined to stdout; fails the test, showing the output, unless it
 * exits 0. The output (up to 4095 bytes) goes to out (cap bytes, NUL-terminated) unless out is NULL. */
static inline void scratch_run(const char *cmd, char *out, size_t cap)
{
    char full[4096];
    assert_true(snprintf(full, sizeof full, "%s 2>&1", cmd) < (int)sizeof full);
    FILE *p = popen(full, "r");
    assert_non_null(p);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, p);
    buf[n] = '\0';
    if (pclose(p) != 0)
        fail_msg("%s failed: %s", cmd, buf);
    if (out && cap > 0) {
        size_t k = n < cap - 1 ? n : cap - 1;
        memcpy(out, buf, k);
        out[k] = '\0';
    }
}

/* Runs `/usr/bin/python3 'script' args` as scratch_run does: fails the test unless it exits 0; output to out. */
static inline void scratch_python(const char *script, const char *args, char *out, size_t cap)
{
    char cmd[4096];
    assert_true(snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' %s", script, args) < (int)sizeof cmd);
    scratch_run(cmd, out, cap);
}

/* Group setup of a test whose reference fixtures a Python script writes: makes the scratch directory (tag as
 * in scratch_make) into dir (cap bytes) and its subdirectory gen/ into gen (gen_cap bytes), then runs
 * `/usr/bin/python3 'script' verb 'gen'`. Returns 0 or -1 (a group setup fails no test itself); pair it with
 * scratch_teardown, which gets dir through the group state. */
static inline int scratch_setup_fixtures(void **state, char *dir, size_t cap, const char *tag, char *gen,
                                         size_t gen_cap, const char *script, const char *verb)
{
    if (scratch_make(dir, cap, tag) != 0)
        return -1;
    *state = dir;
    if (snprintf(gen, gen_cap, "%s/gen", dir) >= (int)gen_cap || mkdir(gen, 0755) != 0)
        return -1;
    char cmd[4096];
    if (snprintf(cmd, sizeof cmd, "/usr/bin/python3 '%s' %s '%s'", script, verb, gen) >= (int)sizeof cmd)
        return -1;
    return system(cmd) == 0 ? 0 : -1;
}

/* Group teardown: removes the scratch directory scratch_setup_fixtures put in the group state. */
static inline int scratch_teardown(void **state)
{
    return *state ? scratch_remove(*state) : 0;
}

#endif
