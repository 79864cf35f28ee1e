/* part.c — `--part I/N` and its environment fallbacks (see part.h). */
#include "part.h"

#include "err.h"

#include <stdlib.h>
#include <string.h>

/* Parses a decimal uint32 with nothing else around it (no sign, no spaces). */
static int parse_u32(const char *s, size_t len, uint32_t *out)
{
    if (len == 0 || len > 10)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > UINT32_MAX)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

int part_parse(const char *text, lvd_part *out)
{
    const char *slash = text ? strchr(text, '/') : NULL;
    uint32_t i, n;
    if (!slash || parse_u32(text, (size_t)(slash - text), &i) < 0 || parse_u32(slash + 1, strlen(slash + 1), &n) < 0)
        return lvd_fail("--part: \"%s\" is not of the form I/N (e.g. 0/4)", text ? text : "");
    if (n < 1)
        return lvd_fail("--part: \"%s\": N must be at least 1", text);
    if (i >= n)
        return lvd_fail("--part: \"%s\": parts are numbered 0..%u (0 <= I < N)", text, n - 1);
    out->index = i;
    out->count = n;
    out->source = "--part";
    return 0;
}

/* Looks up an environment variable; empty counts as unset. */
static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int env_u32(const char *name, uint32_t *out)
{
    const char *v = env(name);
    if (parse_u32(v, strlen(v), out) < 0)
        return lvd_fail("%s=\"%s\" is not a non-negative integer", name, v);
    return 0;
}

/* I from index_var, N from count_var; both must be set or neither. Returns 1 if found, 0 if neither is set,
 * -1 on an invalid value. min_var, if set, is subtracted from I: Slurm arrays are often numbered from 1
 * (--array=1-N), and SLURM_ARRAY_TASK_MIN is the first id. */
static int from_env(const char *index_var, const char *count_var, const char *min_var, const char *source,
                    lvd_part *out)
{
    if (!env(index_var) && !env(count_var))
        return 0;
    if (!env(index_var))
        return lvd_fail("%s is set but %s is not", count_var, index_var);
    if (!env(count_var))
        return lvd_fail("%s is set but %s is not", index_var, count_var);
    uint32_t i, n, min = 0;
    if (env_u32(index_var, &i) < 0 || env_u32(count_var, &n) < 0)
        return -1;
    if (min_var && env(min_var) && env_u32(min_var, &min) < 0)
        return -1;
    if (i < min)
        return lvd_fail("%s=%u is below %s=%u", index_var, i, min_var, min);
    i -= min;
    if (n < 1)
        return lvd_fail("%s=%u: need at least one part", count_var, n);
    if (i >= n)
        return lvd_fail("%s=%u%s is not below %s=%u", index_var, i + min, min ? " (minus the array's first id)" : "",
                        count_var, n);
    out->index = i;
    out->count = n;
    out->source = source;
    return 1;
}

int part_resolve(const char *arg, lvd_part *out)
{
    if (arg)
        return part_parse(arg, out);
    static const struct {
        const char *index_var, *count_var, *min_var, *source;
    } sources[] = {
        {"SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM"},
        {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", NULL, "OpenMPI"},
        {"PMI_RANK", "PMI_SIZE", NULL, "PMI"},
    };
    for (size_t s = 0; s < sizeof sources / sizeof sources[0]; s++) {
        int rc = from_env(sources[s].index_var, sources[s].count_var, sources[s].min_var, sources[s].source, out);
        if (rc != 0)
            return rc < 0 ? -1 : 0;
    }
    out->index = 0;
    out->count = 1;
    out->source = "default";
    return 0;
}

uint64_t part_hash(const char *key, size_t len)
{
    uint64_t h = 14695981039346656037ULL; /* FNV-1a 64 offset basis */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ULL; /* FNV 64 prime */
    }
    return h;
}

int part_owns(const lvd_part *p, const char *key, size_t len)
{
    return part_hash(key, len) % p->count == p->index;
}
