/* opts.h — strict parsing of option values; every error names the option and quotes the value. */
#ifndef LVD_OPTS_H
#define LVD_OPTS_H

#include <stdint.h>

/* Integer in [min, max]. */
int opt_int(const char *name, const char *text, int64_t min, int64_t max, int64_t *out);

/* Floating-point number in [min, max]. */
int opt_double(const char *name, const char *text, double min, double max, double *out);

/* Byte size with an optional binary suffix: "512", "64K", "32M", "1G" (also KiB/MiB/GiB, case-insensitive). */
int opt_bytes(const char *name, const char *text, uint64_t *out);

/* Duration in seconds: "10", "2.5", "500ms", "3s", "2m", "1h". */
int opt_seconds(const char *name, const char *text, double *out);

/* One of a NULL-terminated list of words; *out is its index. */
int opt_choice(const char *name, const char *text, const char *const *choices, int *out);

#endif
