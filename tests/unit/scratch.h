/* scratch.h — a scratch directory per unit-test program: made under /tmp, removed with its contents. */
#ifndef LVD_TEST_SCRATCH_H
#define LVD_TEST_SCRATCH_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
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

#endif
