/* log.h — leveled logging to stderr, shared by every executable.
 *
 * Lines look like "lvd-crawl: warn: urls.txt:12: malformed line: no scheme". --quiet shows errors only,
 * --verbose adds debug lines. Thread-safe: each line is formatted first and written with one write().
 */
#ifndef LVD_LOG_H
#define LVD_LOG_H

#include "err.h"

enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 };

/* Sets the program name shown on each line (default "lvd"). Not copied: pass a string that outlives use. */
void log_set_program(const char *name);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);

void log_msg(enum log_level level, const char *fmt, ...) LVD_PRINTF(2, 3);

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
