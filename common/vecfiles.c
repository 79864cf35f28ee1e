/* vecfiles.c — memory-mapped .npy embedding files (see vecfiles.h). */
#include "vecfiles.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "npy.h"

void vf_init(vec_files *v, int32_t dim)
{
    memset(v, 0, sizeof *v);
    v->dim = dim;
}

void vf_free(vec_files *v)
{
    for (int32_t i = 0; i < v->n; i++) {
        if (v->f[i].map)
            munmap(v->f[i].map, v->f[i].map_len);
        free(v->f[i].path);
    }
    free(v->f);
    free(v->by_path);
    memset(v, 0, sizeof *v);
}

/* Lowest position in by_path whose path is >= path. */
static int32_t lower_bound(const vec_files *v, const char *path)
{
    int32_t lo = 0, hi = v->n;
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if (strcmp(v->f[v->by_path[mid]].path, path) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int32_t vf_find(const vec_files *v, const char *path)
{
    int32_t i = lower_bound(v, path);
    return i < v->n && strcmp(v->f[v->by_path[i]].path, path) == 0 ? v->by_path[i] : -1;
}

/* The value text after 'key': in the header dict, or NULL. */
static const char *dict_value(const char *h, const char *key)
{
    char pat[32];
    snprintf(pat, sizeof pat, "'%s':", key);
    const char *p = strstr(h, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    return p;
}

/* Parses the header dict: dtype, fortran order, 2-D shape. */
static int parse_header(const char *path, const char *h, int32_t *f16, int64_t *rows, int64_t *cols)
{
    const char *d = dict_value(h, "descr"), *o = dict_value(h, "fortran_order"), *s = dict_value(h, "shape");
    if (!d || !o || !s)
        return lvd_fail("%s: .npy header lacks %s", path, !d ? "descr" : !o ? "fortran_order" : "shape");
    if (strncmp(d, "'<f2'", 5) == 0 || strncmp(d, "'float16'", 9) == 0)
        *f16 = 1;
    else if (strncmp(d, "'<f4'", 5) == 0 || strncmp(d, "'float32'", 9) == 0)
        *f16 = 0;
    else
        return lvd_fail("%s: dtype %.8s is not supported (little-endian float16 '<f2' or float32 '<f4')", path, d);
    if (strncmp(o, "False", 5) != 0)
        return lvd_fail("%s: Fortran-order arrays are not supported (C order expected)", path);
    if (*s != '(')
        return lvd_fail("%s: malformed shape in .npy header", path);
    char *end;
    errno = 0;
    long long r = strtoll(s + 1, &end, 10);
    if (errno || end == s + 1 || *end != ',' || r < 0)
        return lvd_fail("%s: shape must be (rows, dim)", path);
    const char *q = end + 1;
    while (*q == ' ')
        q++;
    long long c = strtoll(q, &end, 10);
    if (errno || end == q || c <= 0)
        return lvd_fail("%s: shape must be (rows, dim)", path);
    while (*end == ' ' || *end == ',')
        end++;
    if (*end != ')')
        return lvd_fail("%s: shape must be 2-D (rows, dim)", path);
    *rows = r;
    *cols = c;
    return 0;
}

int vf_add(vec_files *v, const char *path)
{
    if (vf_find(v, path) >= 0)
        return 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return lvd_fail_errno("cannot open embeddings %s", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return lvd_fail_errno("cannot stat %s", path);
    }
    size_t len = (size_t)st.st_size;
    if (len < 12) {
        close(fd);
        return lvd_fail("%s: too short for a .npy file (%zu bytes)", path, len);
    }
    void *map = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return lvd_fail_errno("cannot map %s", path);
    const uint8_t *b = map;
    int rc = -1;
    if (memcmp(b, "\x93NUMPY", 6) != 0) {
        lvd_fail("%s: not a .npy file (bad magic)", path);
        goto out;
    }
    size_t hoff, hlen;
    if (b[6] == 1) {
        hoff = 10;
        hlen = (size_t)b[8] | (size_t)b[9] << 8;
    } else if (b[6] == 2 || b[6] == 3) {
        hoff = 12;
        hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
    } else {
        lvd_fail("%s: .npy format version %d is not supported", path, (int)b[6]);
        goto out;
    }
    if (hoff + hlen > len || hlen > 65536) {
        lvd_fail("%s: truncated .npy header", path);
        goto out;
    }
    char *h = malloc(hlen + 1);
    if (!h) {
        lvd_fail("out of memory");
        goto out;
    }
    memcpy(h, b + hoff, hlen);
    h[hlen] = 0;
    int32_t f16 = 0;
    int64_t rows = 0, cols = 0;
    int pr = parse_header(path, h, &f16, &rows, &cols);
    free(h);
    if (pr != 0)
        goto out;
    if (cols != v->dim) {
        lvd_fail("%s: rows have %lld values, the model's embeddings have %d", path, (long long)cols, (int)v->dim);
        goto out;
    }
    size_t need = hoff + hlen + (size_t)rows * (size_t)cols * (f16 ? 2 : 4);
    if (len < need) {
        lvd_fail("%s: truncated: %zu bytes, the header's shape (%lld, %lld) needs %zu", path, len, (long long)rows,
                 (long long)cols, need);
        goto out;
    }
    if (v->n == v->cap) {
        int32_t cap = v->cap ? 2 * v->cap : 16;
        vec_file *nf = realloc(v->f, (size_t)cap * sizeof *nf);
        if (nf)
            v->f = nf;
        int32_t *nb = nf ? realloc(v->by_path, (size_t)cap * sizeof *nb) : NULL;
        if (!nb) {
            lvd_fail("out of memory");
            goto out;
        }
        v->by_path = nb;
        v->cap = cap;
    }
    char *p = strdup(path);
    if (!p) {
        lvd_fail("out of memory");
        goto out;
    }
    int32_t at = lower_bound(v, path);
    memmove(v->by_path + at + 1, v->by_path + at, (size_t)(v->n - at) * sizeof *v->by_path);
    v->by_path[at] = v->n;
    v->f[v->n] = (vec_file){.path = p, .map = map, .map_len = len, .data = b + hoff + hlen, .rows = rows, .f16 = f16};
    v->n++;
    return 0;
out:
    munmap(map, len);
    return rc;
}

int vf_row(const vec_files *v, int32_t file, int64_t row, float *out)
{
    const vec_file *f = &v->f[file];
    if (row < 0 || row >= f->rows)
        return lvd_fail("%s: row %lld out of range (%lld rows)", f->path, (long long)row, (long long)f->rows);
    size_t d = (size_t)v->dim;
    if (f->f16) {
        const uint8_t *p = f->data + (size_t)row * d * 2;
        for (size_t i = 0; i < d; i++)
            out[i] = npy_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
    } else {
        memcpy(out, f->data + (size_t)row * d * 4, d * 4); /* little-endian host assumed, as npy.c */
    }
    return 0;
}

double vf_dot(const float *a, const float *b, int32_t d)
{
    double s = 0;
    for (int32_t i = 0; i < d; i++)
        s += (double)a[i] * (double)b[i];
    return s;
}

int vf_index(vec_files *v, const char *work, const char *rel, int32_t *out)
{
    char path[8192];
    if (snprintf(path, sizeof path, "%s/%s", work, rel) >= (int)sizeof path)
        return lvd_fail("embedding file path too long: %s/%s", work, rel);
    int32_t i = vf_find(v, path);
    if (i < 0) {
        if (vf_add(v, path) != 0)
            return -1;
        i = vf_find(v, path);
    }
    *out = i;
    return 0;
}
