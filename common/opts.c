/* opts.c — strict parsing of option values (see opts.h).
 *
 * "Strict" means the whole text must be the value: no leading or trailing spaces, no junk after the number,
 * no empty strings, no silent wrap-around or clamping on overflow.
 */
#include "opts.h"

#include "err.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Options are named as the user typed them: "--workers" whether name is "workers" or "--workers". */
static const char *dashes(const char *name) { return name[0] == '-' ? "" : "--"; }

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Length of the decimal number ([+-]digits[.digits][e[+-]digits]) at the start of s, 0 if none. Only
 * these characters are accepted, so strtod's "inf", "nan", hex floats and leading spaces never get in. */
static size_t number_span(const char *s)
{
    size_t i = 0, digits = 0;
    if (s[i] == '+' || s[i] == '-')
        i++;
    while (is_digit(s[i]))
        i++, digits++;
    if (s[i] == '.') {
        i++;
        while (is_digit(s[i]))
            i++, digits++;
    }
    if (digits == 0)
        return 0;
    if (s[i] == 'e' || s[i] == 'E') {
        size_t j = i + 1;
        if (s[j] == '+' || s[j] == '-')
            j++;
        if (is_digit(s[j])) {
            while (is_digit(s[j]))
                j++;
            i = j;
        }
    }
    return i;
}

int opt_int(const char *name, const char *text, int64_t min, int64_t max, int64_t *out)
{
    if (!text || !*text)
        return lvd_fail("%s%s: empty value, expected an integer", dashes(name), name);
    size_t i = (text[0] == '+' || text[0] == '-') ? 1 : 0;
    if (!is_digit(text[i]))
        return lvd_fail("%s%s: \"%s\" is not an integer", dashes(name), name, text);
    while (is_digit(text[i]))
        i++;
    if (text[i] != '\0')
        return lvd_fail("%s%s: \"%s\" is not an integer", dashes(name), name, text);
    errno = 0;
    long long v = strtoll(text, NULL, 10);
    if (errno == ERANGE || v < min || v > max)
        return lvd_fail("%s%s: \"%s\" is out of range [%" PRId64 ", %" PRId64 "]", dashes(name), name, text, min,
                        max);
    *out = v;
    return 0;
}

int opt_double(const char *name, const char *text, double min, double max, double *out)
{
    if (!text || !*text)
        return lvd_fail("%s%s: empty value, expected a number", dashes(name), name);
    size_t n = number_span(text);
    if (n == 0 || text[n] != '\0')
        return lvd_fail("%s%s: \"%s\" is not a number", dashes(name), name, text);
    errno = 0;
    double v = strtod(text, NULL);
    /* ERANGE on underflow gives a denormal or zero, which is a fine answer; overflow gives inf. */
    if (!isfinite(v) || v < min || v > max)
        return lvd_fail("%s%s: \"%s\" is out of range [%g, %g]", dashes(name), name, text, min, max);
    *out = v;
    return 0;
}

int opt_bytes(const char *name, const char *text, uint64_t *out)
{
    if (!text || !*text)
        return lvd_fail("%s%s: empty value, expected a size", dashes(name), name);
    if (text[0] == '-')
        return lvd_fail("%s%s: \"%s\": a size cannot be negative", dashes(name), name, text);
    size_t i = 0;
    uint64_t v = 0;
    while (is_digit(text[i])) {
        unsigned d = (unsigned)(text[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return lvd_fail("%s%s: \"%s\" is too large", dashes(name), name, text);
        v = v * 10 + d;
        i++;
    }
    if (i == 0)
        return lvd_fail("%s%s: \"%s\" is not a size (e.g. 512, 64K, 32M, 1G)", dashes(name), name, text);
    /* Suffixes are binary whichever spelling is used: K = KB = KiB = 1024. */
    static const struct {
        const char *suffix;
        unsigned shift;
    } units[] = {{"", 0},   {"B", 0},    {"K", 10},  {"KB", 10}, {"KiB", 10}, {"M", 20},  {"MB", 20},
                 {"MiB", 20}, {"G", 30},  {"GB", 30}, {"GiB", 30}, {"T", 40},  {"TB", 40}, {"TiB", 40}};
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        if (strcasecmp(text + i, units[u].suffix) != 0)
            continue;
        if (units[u].shift && v > (UINT64_MAX >> units[u].shift))
            return lvd_fail("%s%s: \"%s\" is too large", dashes(name), name, text);
        *out = v << units[u].shift;
        return 0;
    }
    return lvd_fail("%s%s: \"%s\" is not a size (e.g. 512, 64K, 32M, 1G)", dashes(name), name, text);
}

int opt_seconds(const char *name, const char *text, double *out)
{
    if (!text || !*text)
        return lvd_fail("%s%s: empty value, expected a duration", dashes(name), name);
    if (text[0] == '-')
        return lvd_fail("%s%s: \"%s\": a duration cannot be negative", dashes(name), name, text);
    size_t n = number_span(text);
    if (n == 0)
        return lvd_fail("%s%s: \"%s\" is not a duration (e.g. 10, 2.5, 500ms, 3s, 2m, 1h)", dashes(name), name,
                        text);
    static const struct {
        const char *suffix;
        double scale;
    } units[] = {{"", 1}, {"s", 1}, {"ms", 1e-3}, {"m", 60}, {"h", 3600}};
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        if (strcasecmp(text + n, units[u].suffix) != 0)
            continue;
        double v = strtod(text, NULL) * units[u].scale;
        if (!isfinite(v))
            return lvd_fail("%s%s: \"%s\" is too large", dashes(name), name, text);
        *out = v;
        return 0;
    }
    return lvd_fail("%s%s: \"%s\" is not a duration (e.g. 10, 2.5, 500ms, 3s, 2m, 1h)", dashes(name), name, text);
}

int opt_choice(const char *name, const char *text, const char *const *choices, int *out)
{
    for (int i = 0; text && choices[i]; i++) {
        if (strcmp(text, choices[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    /* "--mode: "x" is not one of: a, b, c"; the list is cut to what the error buffer holds. */
    char list[LVD_ERR_MAX];
    size_t used = 0;
    list[0] = '\0';
    for (int i = 0; choices[i] && used < sizeof list; i++) {
        int n = snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", choices[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
    return lvd_fail("%s%s: \"%s\" is not one of: %s", dashes(name), name, text ? text : "", list);
}
