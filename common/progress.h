/* progress.h — the progress line every stage shows.
 *
 * On a TTY (stderr) a single line rewritten in place: "decode 1234/5000 24.7% 312.4/s ETA 12s errors 17".
 * Otherwise a plain log line every `interval` seconds (default 10) and one at the end, so logs of batch
 * jobs stay readable. Quiet mode (log level error) shows nothing. total = 0 means unknown (no %/ETA).
 */
#ifndef LVD_PROGRESS_H
#define LVD_PROGRESS_H

#include <stdint.h>

typedef struct progress {
    const char *label;   /* e.g. "crawl" */
    uint64_t total;      /* items expected, 0 if unknown */
    uint64_t done;       /* items finished */
    uint64_t errors;     /* items that ended in an error status */
    double start;        /* monotonic seconds at init */
    double last_print;   /* monotonic seconds of the last output */
    double interval;     /* seconds between plain lines (non-TTY) */
    int tty;             /* stderr is a terminal */
    int printed;         /* a TTY line is on screen and needs a newline at the end */
} progress;

void progress_init(progress *p, const char *label, uint64_t total);

/* Sets the counters and prints if due (TTY: at most 5 times a second). */
void progress_update(progress *p, uint64_t done, uint64_t errors);

/* Prints the final line (always, unless quiet). */
void progress_finish(progress *p);

/* Monotonic clock in seconds. */
double progress_now(void);

#endif
