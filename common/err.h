/* err.h — the one error convention of lvd.
 *
 * Library functions return 0 on success and -1 on failure (or a documented status enum). The function that
 * first sees a failure records a readable message naming the file, URL or key concerned with lvd_fail();
 * callers propagate -1 without overwriting it, or add context with lvd_fail_ctx(). The message lives in a
 * thread-local buffer, so worker threads do not race. Library code never calls exit().
 */
#ifndef LVD_ERR_H
#define LVD_ERR_H

#include <stddef.h>

#define LVD_ERR_MAX 1024 /* bytes of the recorded message, including the NUL */

#if defined(__GNUC__)
#define LVD_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LVD_PRINTF(a, b)
#endif

/* Records a message (printf format) and returns -1, so failures read `return lvd_fail("...", ...);`. */
int lvd_fail(const char *fmt, ...) LVD_PRINTF(1, 2);

/* Like lvd_fail, appending ": strerror(errno)" for the errno current at the call. */
int lvd_fail_errno(const char *fmt, ...) LVD_PRINTF(1, 2);

/* Prefixes the recorded message with context ("reading X: <old message>") and returns -1. */
int lvd_fail_ctx(const char *fmt, ...) LVD_PRINTF(1, 2);

/* The last recorded message of this thread ("" if none). Valid until the next lvd_fail* on this thread. */
const char *lvd_errmsg(void);

/* Clears this thread's message. */
void lvd_err_clear(void);

#endif
