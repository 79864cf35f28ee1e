/* safetensors.c — safetensors reader (mmap, validated header) and F32 writer: see safetensors.h. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "atomic_file.h"
#include "err.h"
#include "f16.h"
#include "shape.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define ST_HEADER_MAX ((uint64_t)100 << 20) /* the reference implementation's limit: 100 MB */

struct st_file {
    char *path;
    uint8_t *map;
    size_t map_len;
    st_tensor *tensors; /* n, sorted by data offset */
    size_t n;
    char *names;        /* all tensor names, NUL-separated */
    char **meta;        /* 2 * n_meta strings: key, value */
    size_t n_meta;
};

/* ---------------------------------------------------------------------------------------------------- */
/* dtypes */

static const struct {
    const char *name;
    size_t size;
    st_dtype dtype;
} st_dtypes[] = {
    {"F32", 4, ST_F32},   {"F16", 2, ST_F16},  {"BF16", 2, ST_BF16}, {"F64", 8, ST_OTHER},
    {"I64", 8, ST_OTHER}, {"U64", 8, ST_OTHER}, {"I32", 4, ST_OTHER}, {"U32", 4, ST_OTHER},
    {"I16", 2, ST_OTHER}, {"U16", 2, ST_OTHER}, {"I8", 1, ST_OTHER},  {"U8", 1, ST_OTHER},
    {"BOOL", 1, ST_OTHER}, {"F8_E4M3", 1, ST_OTHER}, {"F8_E5M2", 1, ST_OTHER},
};

/* ---------------------------------------------------------------------------------------------------- */
/* reading */

void st_close(st_file *f)
{
    if (!f)
        return;
    if (f->map)
        munmap(f->map, f->map_len);
    if (f->meta) {
        for (size_t i = 0; i < 2 * f->n_meta; i++)
            free(f->meta[i]);
        free(f->meta);
    }
    free(f->tensors);
    free(f->names);
    free(f->path);
    free(f);
}

size_t st_count(const st_file *f) { return f->n; }

const st_tensor *st_at(const st_file *f, size_t i) { return i < f->n ? &f->tensors[i] : NULL; }

const st_tensor *st_find(const st_file *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const char *st_meta(const st_file *f, const char *key)
{
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0)
            return f->meta[2 * i + 1];
    return NULL;
}

int64_t st_numel(const st_tensor *t) { return shape_numel(t->ndim, t->shape); }

int st_to_f32(const st_tensor *t, float *dst)
{
    size_t n = (size_t)st_numel(t);
    switch (t->dtype) {
    case ST_F32:
        if (n)
            memcpy(dst, t->data, n * 4);
        return 0;
    case ST_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, t->data + 2 * i, 2);
            dst[i] = f16_to_f32(h);
        }
        return 0;
    case ST_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, t->data + 2 * i, 2);
            uint32_t x = (uint32_t)h << 16;
            memcpy(&dst[i], &x, 4);
        }
        return 0;
    default:
        return lvd_fail("tensor %s: dtype %s cannot be converted to float32 (need F32, F16 or BF16)", t->name,
                        t->dtype_name);
    }
}

/* A JSON number that is a non-negative integer below 2^53, into *out. */
static int json_uint(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j))
        return -1;
    double d = j->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d)
        return -1;
    *out = (uint64_t)d;
    return 0;
}

typedef struct span {
    uint64_t begin, end;
    size_t idx;
} span;

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int name_cmp(const void *a, const void *b)
{
    const st_tensor *x = a, *y = b;
    return strcmp(x->name, y->name);
}

/* Validates the parsed header against the data section (data_len bytes at data) and fills f. */
static int load_header(st_file *f, const cJSON *root, const uint8_t *data, uint64_t data_len)
{
    const char *path = f->path;
    if (!cJSON_IsObject(root))
        return lvd_fail("%s: safetensors header is not a JSON object", path);
    size_t n = 0, names_len = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0)
            continue;
        n++;
        names_len += strlen(e->string) + 1;
    }
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    f->names = malloc(names_len ? names_len : 1);
    span *spans = calloc(n ? n : 1, sizeof *spans);
    if (!f->tensors || !f->names || !spans) {
        free(spans);
        return lvd_fail("%s: out of memory", path);
    }
    int rc = -1;
    int have_meta = 0;
    char *np = f->names;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (have_meta++) {
                lvd_fail("%s: safetensors header has __metadata__ twice", path);
                goto out;
            }
            if (!cJSON_IsObject(e)) {
                lvd_fail("%s: safetensors __metadata__ is not an object", path);
                goto out;
            }
            size_t nm = 0;
            for (const cJSON *m = e->child; m; m = m->next)
                nm++;
            f->meta = calloc(2 * nm + 1, sizeof *f->meta);
            if (!f->meta) {
                lvd_fail("%s: out of memory", path);
                goto out;
            }
            for (const cJSON *m = e->child; m; m = m->next) {
                if (!cJSON_IsString(m)) {
                    lvd_fail("%s: safetensors metadata value of '%s' is not a string", path, m->string);
                    goto out;
                }
                f->meta[2 * f->n_meta] = strdup(m->string);
                f->meta[2 * f->n_meta + 1] = strdup(m->valuestring);
                f->n_meta++;
                if (!f->meta[2 * f->n_meta - 2] || !f->meta[2 * f->n_meta - 1]) {
                    lvd_fail("%s: out of memory", path);
                    goto out;
                }
            }
            continue;
        }
        const char *name = e->string;
        st_tensor *t = &f->tensors[f->n];
        size_t nl = strlen(name);
        memcpy(np, name, nl + 1);
        t->name = np;
        np += nl + 1;
        if (!cJSON_IsObject(e)) {
            lvd_fail("%s: tensor '%s': header entry is not an object", path, name);
            goto out;
        }
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
        const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(jd) || !cJSON_IsArray(js) || !cJSON_IsArray(jo)) {
            lvd_fail("%s: tensor '%s': needs string 'dtype', array 'shape' and array 'data_offsets'", path, name);
            goto out;
        }
        size_t item = 0;
        for (size_t k = 0; k < sizeof st_dtypes / sizeof st_dtypes[0]; k++)
            if (strcmp(jd->valuestring, st_dtypes[k].name) == 0) {
                item = st_dtypes[k].size;
                t->dtype = st_dtypes[k].dtype;
            }
        if (item == 0) {
            lvd_fail("%s: tensor '%s': unknown dtype '%.32s'", path, name, jd->valuestring);
            goto out;
        }
        snprintf(t->dtype_name, sizeof t->dtype_name, "%s", jd->valuestring);
        int nd = cJSON_GetArraySize(js);
        if (nd > ST_MAX_DIMS) {
            lvd_fail("%s: tensor '%s': %d dimensions (max %d)", path, name, nd, ST_MAX_DIMS);
            goto out;
        }
        t->ndim = nd;
        int k = 0;
        for (const cJSON *d = js->child; d; d = d->next, k++) {
            uint64_t v;
            if (json_uint(d, &v) != 0) {
                lvd_fail("%s: tensor '%s': shape entry %d is not a non-negative integer", path, name, k);
                goto out;
            }
            t->shape[k] = (int64_t)v;
        }
        uint64_t count;
        if (shape_count(t->ndim, t->shape, 16, &count, NULL) != 0) { /* json_uint: never negative */
            lvd_fail("%s: tensor '%s': shape too large", path, name);
            goto out;
        }
        uint64_t b, en;
        if (cJSON_GetArraySize(jo) != 2 || json_uint(cJSON_GetArrayItem(jo, 0), &b) != 0 ||
            json_uint(cJSON_GetArrayItem(jo, 1), &en) != 0 || b > en) {
            lvd_fail("%s: tensor '%s': data_offsets must be [begin, end] with 0 <= begin <= end", path, name);
            goto out;
        }
        if (en > data_len) {
            lvd_fail("%s: tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] outside the data section of %" PRIu64
                     " bytes",
                     path, name, b, en, data_len);
            goto out;
        }
        if (en - b != count * item) {
            lvd_fail("%s: tensor '%s': %" PRIu64 " data bytes, but %s x shape needs %" PRIu64, path, name, en - b,
                     t->dtype_name, count * item);
            goto out;
        }
        t->data = data + b;
        t->nbytes = (size_t)(en - b);
        spans[f->n] = (span){b, en, f->n};
        f->n++;
    }

    /* Duplicate names (cJSON keeps both). */
    if (f->n > 1) {
        st_tensor *sorted = malloc(f->n * sizeof *sorted);
        if (!sorted) {
            lvd_fail("%s: out of memory", path);
            goto out;
        }
        memcpy(sorted, f->tensors, f->n * sizeof *sorted);
        qsort(sorted, f->n, sizeof *sorted, name_cmp);
        for (size_t i = 1; i < f->n; i++)
            if (strcmp(sorted[i - 1].name, sorted[i].name) == 0) {
                lvd_fail("%s: tensor '%s' appears twice in the header", path, sorted[i].name);
                free(sorted);
                goto out;
            }
        free(sorted);
    }

    /* Overlaps, then file order. Empty tensors overlap nothing. */
    qsort(spans, f->n, sizeof *spans, span_cmp);
    uint64_t last_end = 0;
    size_t last_idx = SIZE_MAX;
    for (size_t i = 0; i < f->n; i++) {
        if (spans[i].begin == spans[i].end)
            continue;
        if (last_idx != SIZE_MAX && spans[i].begin < last_end) {
            lvd_fail("%s: tensors '%s' and '%s' overlap in the data section", path, f->tensors[last_idx].name,
                     f->tensors[spans[i].idx].name);
            goto out;
        }
        last_end = spans[i].end;
        last_idx = spans[i].idx;
    }
    st_tensor *ordered = malloc((f->n ? f->n : 1) * sizeof *ordered);
    if (!ordered) {
        lvd_fail("%s: out of memory", path);
        goto out;
    }
    for (size_t i = 0; i < f->n; i++)
        ordered[i] = f->tensors[spans[i].idx];
    free(f->tensors);
    f->tensors = ordered;
    rc = 0;
out:
    free(spans);
    return rc;
}

int st_open(const char *path, st_file **out)
{
    *out = NULL;
    st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return lvd_fail("%s: out of memory", path);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        lvd_fail_errno("%s: cannot open", path);
        st_close(f);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        lvd_fail_errno("%s: stat", path);
        close(fd);
        st_close(f);
        return -1;
    }
    if (st.st_size < 8) {
        close(fd);
        st_close(f);
        return lvd_fail("%s: not a safetensors file (%lld bytes, shorter than the 8-byte header length)", path,
                        (long long)st.st_size);
    }
    f->map_len = (size_t)st.st_size;
    void *map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        lvd_fail_errno("%s: mmap", path);
        st_close(f);
        return -1;
    }
    f->map = map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | f->map[i];
    if (hlen > f->map_len - 8) {
        lvd_fail("%s: safetensors header length %" PRIu64 " is larger than the file (%zu bytes)", path, hlen,
                 f->map_len);
        st_close(f);
        return -1;
    }
    if (hlen > ST_HEADER_MAX || hlen < 2) {
        lvd_fail("%s: safetensors header length %" PRIu64 " is implausible", path, hlen);
        st_close(f);
        return -1;
    }
    const char *text = (const char *)f->map + 8;
    if (text[0] != '{') {
        lvd_fail("%s: safetensors header does not start with '{'", path);
        st_close(f);
        return -1;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)hlen, &end, 0);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        long off = (at && at >= text && at <= text + hlen) ? (long)(at - text) : -1;
        lvd_fail("%s: safetensors header is not valid JSON (near byte %ld)", path, off);
        st_close(f);
        return -1;
    }
    for (const char *p = end; p && p < text + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0') {
            cJSON_Delete(root);
            lvd_fail("%s: safetensors header has bytes after the JSON object", path);
            st_close(f);
            return -1;
        }
    int rc = load_header(f, root, f->map + 8 + hlen, f->map_len - 8 - hlen);
    cJSON_Delete(root);
    if (rc != 0) {
        st_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* writing */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_printf(sbuf *b, const char *fmt, ...) LVD_PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string literal. Bytes >= 0x80 pass through (UTF-8). */
static void sb_json_str(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_put(b, e, 2);
        } else if (c < 0x20) {
            sb_printf(b, "\\u%04x", c);
        } else {
            sb_put(b, (const char *)&c, 1);
        }
    }
    sb_put(b, "\"", 1);
}

int st_write(const char *path, const st_write_tensor *t, size_t n, const char *const *meta_kv, size_t n_meta)
{
    sbuf b = {0};
    sb_put(&b, "{", 1);
    if (n_meta > 0) {
        sb_json_str(&b, "__metadata__");
        sb_put(&b, ":{", 2);
        for (size_t i = 0; i < n_meta; i++) {
            if (!meta_kv[2 * i] || !meta_kv[2 * i + 1]) {
                free(b.p);
                return lvd_fail("%s: metadata entry %zu is NULL", path, i);
            }
            if (i)
                sb_put(&b, ",", 1);
            sb_json_str(&b, meta_kv[2 * i]);
            sb_put(&b, ":", 1);
            sb_json_str(&b, meta_kv[2 * i + 1]);
        }
        sb_put(&b, "}", 1);
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const st_write_tensor *w = &t[i];
        if (!w->name || !w->name[0] || strcmp(w->name, "__metadata__") == 0) {
            free(b.p);
            return lvd_fail("%s: tensor %zu has an invalid name", path, i);
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(t[j].name, w->name) == 0) {
                free(b.p);
                return lvd_fail("%s: tensor '%s' given twice", path, w->name);
            }
        if (w->ndim < 0 || w->ndim > ST_MAX_DIMS) {
            free(b.p);
            return lvd_fail("%s: tensor '%s': %d dimensions (max %d)", path, w->name, w->ndim, ST_MAX_DIMS);
        }
        uint64_t count;
        int shape_rc = shape_count(w->ndim, w->shape, 4, &count, NULL);
        if (shape_rc != 0) {
            free(b.p);
            return lvd_fail("%s: tensor '%s': %s", path, w->name,
                            shape_rc == -1 ? "negative shape entry" : "shape too large");
        }
        if (count > 0 && !w->data) {
            free(b.p);
            return lvd_fail("%s: tensor '%s' has no data", path, w->name);
        }
        if (n_meta > 0 || i > 0)
            sb_put(&b, ",", 1);
        sb_json_str(&b, w->name);
        sb_put(&b, ":{\"dtype\":\"F32\",\"shape\":[", strlen(":{\"dtype\":\"F32\",\"shape\":["));
        for (int32_t k = 0; k < w->ndim; k++)
            sb_printf(&b, "%s%" PRId64, k ? "," : "", w->shape[k]);
        sb_printf(&b, "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", off, off + 4 * count);
        off += 4 * count;
    }
    sb_put(&b, "}", 1);
    while (!b.oom && b.len % 8 != 0)
        sb_put(&b, " ", 1);
    if (b.oom) {
        free(b.p);
        return lvd_fail("%s: out of memory", path);
    }

    atomic_file af;
    if (atomic_file_open(&af, path) != 0) {
        free(b.p);
        return -1;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)b.len >> (8 * i));
    if (atomic_file_write(&af, len8, 8) != 0 || atomic_file_write(&af, b.p, b.len) != 0)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        size_t count = (size_t)shape_numel(t[i].ndim, t[i].shape);
        if (count > 0 && atomic_file_write(&af, t[i].data, count * 4) != 0)
            goto fail;
    }
    int rc = atomic_file_commit(&af);
    free(b.p);
    return rc;
fail:
    atomic_file_abort(&af);
    free(b.p);
    return -1;
}
