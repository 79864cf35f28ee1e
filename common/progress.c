/* progress.c — the progress line every stage shows (see progress.h). */
#include "progress.h"

#include "log.h"

#include <inttypes.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#define PROGRESS_TTY_PERIOD 0.2 /* seconds between TTY redraws: at most 5 a second */

double progress_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void progress_init(progress *p, const char *label, uint64_t total)
{
    p->label = label;
    p->total = total;
    p->done = 0;
    p->errors = 0;
    p->start = progress_now();
    p->last_print = p->start;
    p->interval = 10.0;
    p->tty = isatty(STDERR_FILENO);
    p->printed = 0;
}

/* Formats a duration in seconds as "42s", "3m07s" or "2h05m". */
static void format_duration(char *buf, size_t size, double s)
{
    if (s < 0 || s != s)
        s = 0;
    if (s > 1e9)
        s = 1e9; /* keeps the casts below in range; ~31 years is "forever" anyway */
    uint64_t t = (uint64_t)(s + 0.5);
    if (t < 60)
        snprintf(buf, size, "%" PRIu64 "s", t);
    else if (t < 3600)
        snprintf(buf, size, "%" PRIu64 "m%02" PRIu64 "s", t / 60, t % 60);
    else
        snprintf(buf, size, "%" PRIu64 "h%02" PRIu64 "m", t / 3600, t % 3600 / 60);
}

/* "decode 1234/5000 24.7% 312.4/s ETA 12s errors 17" while running; at the end the ETA becomes the
 * elapsed time ("in 16s"). Without a total: "decode 1234 312.4/s errors 17". */
static void format_line(const progress *p, double now, int final, char *buf, size_t size)
{
    double elapsed = now - p->start;
    double rate = elapsed > 0 ? (double)p->done / elapsed : 0;
    char when[48] = "";
    int n;
    if (p->total > 0) {
        double pct = 100.0 * (double)p->done / (double)p->total;
        n = snprintf(buf, size, "%s %" PRIu64 "/%" PRIu64 " %.1f%% %.1f/s", p->label, p->done, p->total, pct, rate);
        if (final) {
            format_duration(when, sizeof when, elapsed);
            snprintf(buf + n, n < 0 || (size_t)n >= size ? 0 : size - (size_t)n, " in %s errors %" PRIu64, when,
                     p->errors);
        } else {
            if (rate > 0 && p->done <= p->total) {
                char eta[sizeof when - 8];
                format_duration(eta, sizeof eta, (double)(p->total - p->done) / rate);
                snprintf(when, sizeof when, " ETA %s", eta);
            }
            snprintf(buf + n, n < 0 || (size_t)n >= size ? 0 : size - (size_t)n, "%s errors %" PRIu64, when,
                     p->errors);
        }
    } else {
        n = snprintf(buf, size, "%s %" PRIu64 " %.1f/s", p->label, p->done, rate);
        if (final) {
            format_duration(when, sizeof when, elapsed);
            snprintf(buf + n, n < 0 || (size_t)n >= size ? 0 : size - (size_t)n, " in %s errors %" PRIu64, when,
                     p->errors);
        } else {
            snprintf(buf + n, n < 0 || (size_t)n >= size ? 0 : size - (size_t)n, " errors %" PRIu64, p->errors);
        }
    }
}

/* Redraws the TTY line: carriage return, the text, clear to end of line; one write() so it is not torn. */
static void tty_draw(progress *p, double now, int final)
{
    char line[512];
    line[0] = '\r';
    format_line(p, now, final, line + 1, sizeof line - 8);
    size_t len = 0;
    while (line[len])
        len++;
    const char tail[] = "\033[K";
    for (size_t i = 0; i < sizeof tail - 1; i++)
        line[len++] = tail[i];
    if (final)
        line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
    p->printed = !final;
    p->last_print = now;
}

void progress_update(progress *p, uint64_t done, uint64_t errors)
{
    p->done = done;
    p->errors = errors;
    if (log_get_level() <= LOG_ERROR)
        return;
    double now = progress_now();
    if (p->tty) {
        if (!p->printed || now - p->last_print >= PROGRESS_TTY_PERIOD)
            tty_draw(p, now, 0);
    } else if (now - p->last_print >= p->interval) {
        char line[512];
        format_line(p, now, 0, line, sizeof line);
        log_info("%s", line);
        p->last_print = now;
    }
}

void progress_finish(progress *p)
{
    double now = progress_now();
    if (log_get_level() <= LOG_ERROR) {
        /* The level may have dropped mid-run; never leave a half-drawn line behind. */
        if (p->printed) {
            ssize_t w = write(STDERR_FILENO, "\n", 1);
            (void)w;
            p->printed = 0;
        }
        return;
    }
    if (p->tty) {
        tty_draw(p, now, 1);
    } else {
        char line[512];
        format_line(p, now, 1, line, sizeof line);
        log_info("%s", line);
        p->last_print = now;
    }
}
