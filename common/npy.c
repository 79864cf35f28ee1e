/* npy.c — NumPy .npy files: see npy.h.
 *
 * Layout: "\x93NUMPY", major, minor, header length (2 bytes LE for 1.0, 4 bytes for 2.0/3.0), then a Python
 * dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } padded with spaces and ended by
 * '\n', then the raw array bytes. The header is parsed strictly: the three keys, nothing else.
 */
#include "npy.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "atomic_file.h"
#include "err.h"
#include "f16.h"
#include "shape.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c assumes a little-endian host"
#endif

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_HEADER_MAX (1u << 20) /* a header of more than 1 MiB is not a float array */

/* ---------------------------------------------------------------------------------------------------- */
/* float16 */

uint16_t npy_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) {
        if (ax == 0x7f800000u)
            return (uint16_t)(sign | 0x7c00u); /* inf */
        uint16_t m = (uint16_t)((ax & 0x007fffffu) >> 13); /* NaN: keep the top payload bits, stay NaN */
        if (m == 0)
            m = 1;
        return (uint16_t)(sign | 0x7c00u | m);
    }
    if (ax >= 0x477ff000u) /* >= 65520 rounds to infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* below 2^-14: subnormal half or zero */
        if (ax <= 0x33000000u) /* <= 2^-25: rounds to zero (2^-25 is a tie, to even) */
            return sign;
        uint32_t e = ax >> 23;                       /* 103..112 */
        uint32_t m = (ax & 0x007fffffu) | 0x00800000u;
        uint32_t shift = 126 - e;                    /* value / 2^-24 = m >> shift */
        uint32_t h = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1u)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = (ax >> 13) - ((127u - 15u) << 10);
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1u)))
        h++; /* a carry into the exponent is the right result */
    return (uint16_t)(sign | h);
}

float npy_f16_to_f32(uint16_t h) { return f16_to_f32(h); }

/* ---------------------------------------------------------------------------------------------------- */
/* header */

int64_t npy_count(const npy_array *a) { return shape_numel(a->ndim, a->shape); }

void npy_free(npy_array *a)
{
    if (!a)
        return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

typedef struct hdr_parser {
    const char *p, *end, *start;
    const char *path;
} hdr_parser;

static void skip_ws(hdr_parser *h)
{
    while (h->p < h->end && (*h->p == ' ' || *h->p == '\t' || *h->p == '\n' || *h->p == '\r'))
        h->p++;
}

static int expect_char(hdr_parser *h, char c)
{
    skip_ws(h);
    if (h->p >= h->end || *h->p != c)
        return lvd_fail("%s: malformed .npy header: expected '%c' at byte %td", h->path, c, h->p - h->start);
    h->p++;
    return 0;
}

/* A quoted Python string ('...' or "...") without escapes into out (cap bytes). */
static int parse_str(hdr_parser *h, char *out, size_t cap)
{
    skip_ws(h);
    if (h->p >= h->end || (*h->p != '\'' && *h->p != '"'))
        return lvd_fail("%s: malformed .npy header: expected a string", h->path);
    char q = *h->p++;
    const char *s = h->p;
    while (h->p < h->end && *h->p != q && *h->p != '\\')
        h->p++;
    if (h->p >= h->end || *h->p != q)
        return lvd_fail("%s: malformed .npy header: unterminated or escaped string", h->path);
    size_t n = (size_t)(h->p - s);
    h->p++;
    if (n >= cap)
        return lvd_fail("%s: malformed .npy header: string of %zu bytes too long", h->path, n);
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

static int parse_shape(hdr_parser *h, npy_array *a)
{
    if (expect_char(h, '(') != 0)
        return lvd_fail("%s: malformed .npy header: 'shape' is not a tuple", h->path);
    a->ndim = 0;
    for (;;) {
        skip_ws(h);
        if (h->p < h->end && *h->p == ')') {
            h->p++;
            break;
        }
        if (h->p >= h->end || *h->p < '0' || *h->p > '9')
            return lvd_fail("%s: malformed .npy header: bad 'shape' entry", h->path);
        int64_t v = 0;
        while (h->p < h->end && *h->p >= '0' && *h->p <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return lvd_fail("%s: .npy shape entry too large", h->path);
            v = v * 10 + (*h->p - '0');
            h->p++;
        }
        if (h->p < h->end && *h->p == 'L') /* Python 2 longs */
            h->p++;
        if (a->ndim >= NPY_MAX_DIMS)
            return lvd_fail("%s: .npy array has more than %d dimensions", h->path, NPY_MAX_DIMS);
        a->shape[a->ndim++] = v;
        skip_ws(h);
        if (h->p < h->end && *h->p == ',') {
            h->p++;
            continue;
        }
        if (h->p < h->end && *h->p == ')') {
            h->p++;
            break;
        }
        return lvd_fail("%s: malformed .npy header: bad 'shape' tuple", h->path);
    }
    return 0;
}

/* Parses the header dict into a->dtype, a->ndim, a->shape. */
static int parse_header(const char *path, const char *text, size_t len, npy_array *a)
{
    hdr_parser h = {text, text + len, text, path};
    int have_descr = 0, have_order = 0, have_shape = 0;
    if (expect_char(&h, '{') != 0)
        return -1;
    for (;;) {
        skip_ws(&h);
        if (h.p < h.end && *h.p == '}') {
            h.p++;
            break;
        }
        char key[32];
        if (parse_str(&h, key, sizeof key) != 0 || expect_char(&h, ':') != 0)
            return -1;
        skip_ws(&h);
        if (strcmp(key, "descr") == 0) {
            char d[64];
            if (h.p < h.end && (*h.p == '[' || *h.p == '('))
                return lvd_fail("%s: unsupported .npy dtype: structured array (need '<f4' or '<f2')", path);
            if (parse_str(&h, d, sizeof d) != 0)
                return -1;
            if (strcmp(d, "<f4") == 0)
                a->dtype = NPY_F32;
            else if (strcmp(d, "<f2") == 0)
                a->dtype = NPY_F16;
            else if (d[0] == '>')
                return lvd_fail("%s: unsupported .npy dtype '%s': big-endian (need '<f4' or '<f2')", path, d);
            else
                return lvd_fail("%s: unsupported .npy dtype '%s' (need '<f4' or '<f2')", path, d);
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if ((size_t)(h.end - h.p) >= 5 && memcmp(h.p, "False", 5) == 0) {
                h.p += 5;
            } else if ((size_t)(h.end - h.p) >= 4 && memcmp(h.p, "True", 4) == 0) {
                return lvd_fail("%s: .npy array is in Fortran order (need C order)", path);
            } else {
                return lvd_fail("%s: malformed .npy header: bad 'fortran_order'", path);
            }
            have_order = 1;
        } else if (strcmp(key, "shape") == 0) {
            if (parse_shape(&h, a) != 0)
                return -1;
            have_shape = 1;
        } else {
            return lvd_fail("%s: malformed .npy header: unexpected key '%s'", path, key);
        }
        skip_ws(&h);
        if (h.p < h.end && *h.p == ',') {
            h.p++;
            continue;
        }
        if (h.p < h.end && *h.p == '}') {
            h.p++;
            break;
        }
        return lvd_fail("%s: malformed .npy header: expected ',' or '}' after '%s'", path, key);
    }
    skip_ws(&h);
    if (h.p != h.end)
        return lvd_fail("%s: malformed .npy header: trailing bytes after the dict", path);
    if (!have_descr || !have_order || !have_shape)
        return lvd_fail("%s: malformed .npy header: missing '%s'", path,
                        !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
    return 0;
}

/* ---------------------------------------------------------------------------------------------------- */
/* read */

static int read_full(FILE *f, void *buf, size_t n)
{
    return fread(buf, 1, n, f) == n ? 0 : -1;
}

int npy_read(const char *path, npy_array *a)
{
    memset(a, 0, sizeof *a);
    FILE *f = fopen(path, "rb");
    if (!f)
        return lvd_fail_errno("%s: cannot open", path);
    char *hdr = NULL;
    int rc = -1;
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        lvd_fail_errno("%s: stat", path);
        goto out;
    }
    uint8_t pre[12];
    if (st.st_size < 10 || read_full(f, pre, 10) != 0) {
        lvd_fail("%s: not a .npy file (shorter than the 10-byte preamble)", path);
        goto out;
    }
    if (memcmp(pre, NPY_MAGIC, NPY_MAGIC_LEN) != 0) {
        lvd_fail("%s: not a .npy file (bad magic)", path);
        goto out;
    }
    uint8_t major = pre[6], minor = pre[7];
    uint64_t hlen, pre_len;
    if (major == 1) {
        hlen = (uint64_t)pre[8] | ((uint64_t)pre[9] << 8);
        pre_len = 10;
    } else if (major == 2 || major == 3) {
        if (read_full(f, pre + 10, 2) != 0) {
            lvd_fail("%s: truncated .npy preamble", path);
            goto out;
        }
        hlen = (uint64_t)pre[8] | ((uint64_t)pre[9] << 8) | ((uint64_t)pre[10] << 16) | ((uint64_t)pre[11] << 24);
        pre_len = 12;
    } else {
        lvd_fail("%s: unsupported .npy format version %u.%u", path, major, minor);
        goto out;
    }
    if (hlen > NPY_HEADER_MAX || pre_len + hlen > (uint64_t)st.st_size) {
        lvd_fail("%s: .npy header length %" PRIu64 " exceeds the file (%lld bytes)", path, hlen,
                 (long long)st.st_size);
        goto out;
    }
    hdr = malloc(hlen + 1);
    if (!hdr) {
        lvd_fail("%s: out of memory", path);
        goto out;
    }
    if (read_full(f, hdr, hlen) != 0) {
        lvd_fail_errno("%s: reading the .npy header", path);
        goto out;
    }
    hdr[hlen] = '\0';
    if (parse_header(path, hdr, hlen, a) != 0)
        goto out;

    size_t item = a->dtype == NPY_F32 ? 4 : 2;
    uint64_t count;
    if (shape_count(a->ndim, a->shape, 8, &count, NULL) != 0) { /* parse_shape took digits only: never negative */
        lvd_fail("%s: .npy shape too large", path);
        goto out;
    }
    uint64_t want = count * item, have = (uint64_t)st.st_size - pre_len - hlen;
    if (want != have) {
        char shp[256];
        size_t o = 0;
        shp[0] = '\0';
        for (int32_t i = 0; i < a->ndim && o < sizeof shp; i++)
            o += (size_t)snprintf(shp + o, sizeof shp - o, "%s%" PRId64, i ? ", " : "", a->shape[i]);
        lvd_fail("%s: .npy data size mismatch: shape (%s) of %s needs %" PRIu64 " bytes, file has %" PRIu64 "%s",
                 path, shp, a->dtype == NPY_F32 ? "float32" : "float16", want, have,
                 have < want ? " (truncated)" : " (trailing bytes)");
        goto out;
    }
    if (count > SIZE_MAX / sizeof(float)) {
        lvd_fail("%s: .npy array too large for memory", path);
        goto out;
    }
    if (count > 0) {
        a->data = malloc((size_t)count * sizeof(float));
        if (!a->data) {
            lvd_fail("%s: out of memory for %" PRIu64 " floats", path, count);
            goto out;
        }
        if (a->dtype == NPY_F32) {
            if (read_full(f, a->data, (size_t)count * 4) != 0) {
                lvd_fail_errno("%s: reading .npy data", path);
                goto out;
            }
        } else {
            uint16_t buf[4096];
            size_t done = 0;
            while (done < count) {
                size_t k = count - done < 4096 ? (size_t)(count - done) : 4096;
                if (read_full(f, buf, k * 2) != 0) {
                    lvd_fail_errno("%s: reading .npy data", path);
                    goto out;
                }
                for (size_t i = 0; i < k; i++)
                    a->data[done + i] = npy_f16_to_f32(buf[i]);
                done += k;
            }
        }
    }
    rc = 0;
out:
    free(hdr);
    fclose(f);
    if (rc != 0) {
        free(a->data);
        memset(a, 0, sizeof *a);
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------------------- */
/* write */

int npy_write(const char *path, const float *data, int32_t ndim, const int64_t *shape, npy_dtype dtype)
{
    if (ndim < 0 || ndim > NPY_MAX_DIMS)
        return lvd_fail("%s: cannot write a .npy array of %d dimensions (max %d)", path, ndim, NPY_MAX_DIMS);
    if (dtype != NPY_F32 && dtype != NPY_F16)
        return lvd_fail("%s: unknown .npy dtype %d", path, (int)dtype);
    uint64_t count;
    int32_t bad = 0;
    int shape_rc = shape_count(ndim, shape, 8, &count, &bad);
    if (shape_rc == -1)
        return lvd_fail("%s: negative .npy shape entry %" PRId64, path, shape[bad]);
    if (shape_rc != 0)
        return lvd_fail("%s: .npy shape too large", path);
    if (count > 0 && !data)
        return lvd_fail("%s: no data for a .npy array of %" PRIu64 " elements", path, count);

    /* Header: dict, spaces, '\n'; 10 + length a multiple of 64 (what numpy writes). */
    char hdr[512];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (",
                     dtype == NPY_F32 ? "<f4" : "<f2");
    for (int32_t i = 0; i < ndim; i++)
        n += snprintf(hdr + n, sizeof hdr - (size_t)n, "%" PRId64 "%s", shape[i], ndim == 1 ? "," : (i + 1 < ndim ? ", " : ""));
    n += snprintf(hdr + n, sizeof hdr - (size_t)n, "), }");
    size_t total = ((size_t)10 + (size_t)n + 1 + 63) / 64 * 64;
    size_t hlen = total - 10;
    memset(hdr + n, ' ', hlen - (size_t)n - 1);
    hdr[hlen - 1] = '\n';
    uint8_t pre[10];
    memcpy(pre, NPY_MAGIC, NPY_MAGIC_LEN);
    pre[6] = 1;
    pre[7] = 0;
    pre[8] = (uint8_t)(hlen & 0xff);
    pre[9] = (uint8_t)(hlen >> 8);

    atomic_file af;
    if (atomic_file_open(&af, path) != 0)
        return -1;
    if (atomic_file_write(&af, pre, sizeof pre) != 0 || atomic_file_write(&af, hdr, hlen) != 0)
        goto fail;
    if (dtype == NPY_F32) {
        if (count > 0 && atomic_file_write(&af, data, (size_t)count * 4) != 0)
            goto fail;
    } else {
        uint16_t buf[4096];
        for (uint64_t done = 0; done < count;) {
            size_t k = count - done < 4096 ? (size_t)(count - done) : 4096;
            for (size_t i = 0; i < k; i++)
                buf[i] = npy_f32_to_f16(data[done + i]);
            if (atomic_file_write(&af, buf, k * 2) != 0)
                goto fail;
            done += k;
        }
    }
    return atomic_file_commit(&af);
fail:
    atomic_file_abort(&af);
    return -1;
}
