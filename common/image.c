/* image.c — format sniffing, header probing, bomb-safe decoding to RGB, and encoding (see image.h). */
#include "image.h"

#include <setjmp.h>
#include <stdio.h> /* jpeglib.h needs FILE and size_t first */
#include <stdlib.h>
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>
#include <spng.h>
#include <webp/decode.h>
#include <webp/encode.h>

#include "err.h"

/* ---------------------------------------------------------------------------------------------------------
 * Sniffing
 */

static int has_prefix(const uint8_t *d, size_t len, const char *magic, size_t n)
{
    return len >= n && memcmp(d, magic, n) == 0;
}

/* ISO-BMFF: [size u32][ftyp][major brand][minor version u32][compatible brands...]. Images usually carry the
 * decisive brand as major; "mif1"/"msf1" are generic HEIF brands, so an "avif" among the compatible brands
 * (inside the box and the bytes given) makes the file AVIF. */
static img_format sniff_ftyp(const uint8_t *d, size_t len)
{
    if (len < 12 || memcmp(d + 4, "ftyp", 4) != 0)
        return IMG_FMT_UNKNOWN;
    const uint8_t *brand = d + 8;
    if (memcmp(brand, "avif", 4) == 0 || memcmp(brand, "avis", 4) == 0)
        return IMG_FMT_AVIF;
    if (memcmp(brand, "heic", 4) == 0 || memcmp(brand, "heix", 4) == 0)
        return IMG_FMT_HEIC;
    if (memcmp(brand, "mif1", 4) == 0 || memcmp(brand, "msf1", 4) == 0) {
        size_t box = ((size_t)d[0] << 24) | ((size_t)d[1] << 16) | ((size_t)d[2] << 8) | d[3];
        size_t end = box < len ? box : len;
        for (size_t off = 16; off + 4 <= end; off += 4)
            if (memcmp(d + off, "avif", 4) == 0 || memcmp(d + off, "avis", 4) == 0)
                return IMG_FMT_AVIF;
        return IMG_FMT_HEIC;
    }
    return IMG_FMT_UNKNOWN;
}

/* SVG is text: skip a UTF-8 BOM and white space, then either "<svg" directly, or an XML prolog, comment or
 * doctype followed by "<svg" within the first 1 KiB (a prolog alone is longer than 32 bytes). */
static img_format sniff_svg(const uint8_t *d, size_t len)
{
    size_t i = 0;
    if (len >= 3 && d[0] == 0xEF && d[1] == 0xBB && d[2] == 0xBF)
        i = 3;
    while (i < len && (d[i] == ' ' || d[i] == '\t' || d[i] == '\r' || d[i] == '\n'))
        i++;
    const uint8_t *t = d + i;
    size_t n = len - i;
    if (has_prefix(t, n, "<svg", 4))
        return IMG_FMT_SVG;
    if (!has_prefix(t, n, "<?xml", 5) && !has_prefix(t, n, "<!--", 4) && !has_prefix(t, n, "<!DOCTYPE", 9))
        return IMG_FMT_UNKNOWN;
    size_t lim = n < 1024 ? n : 1024;
    for (size_t k = 0; k + 4 <= lim; k++)
        if (memcmp(t + k, "<svg", 4) == 0)
            return IMG_FMT_SVG;
    return IMG_FMT_UNKNOWN;
}

img_format img_sniff(const uint8_t *data, size_t len)
{
    if (data == NULL)
        return IMG_FMT_UNKNOWN;
    if (has_prefix(data, len, "\xFF\xD8\xFF", 3))
        return IMG_FMT_JPEG;
    if (has_prefix(data, len, "\x89PNG\r\n\x1A\n", 8))
        return IMG_FMT_PNG;
    if (len >= 12 && memcmp(data, "RIFF", 4) == 0 && memcmp(data + 8, "WEBP", 4) == 0)
        return IMG_FMT_WEBP;
    if (has_prefix(data, len, "GIF87a", 6) || has_prefix(data, len, "GIF89a", 6))
        return IMG_FMT_GIF;
    if (has_prefix(data, len, "II*\0", 4) || has_prefix(data, len, "MM\0*", 4))
        return IMG_FMT_TIFF;
    /* "BM" alone matches plenty of text; require a known DIB header size at offset 14 as well. */
    if (len >= 18 && data[0] == 'B' && data[1] == 'M') {
        uint32_t dib = (uint32_t)data[14] | ((uint32_t)data[15] << 8) | ((uint32_t)data[16] << 16) |
                       ((uint32_t)data[17] << 24);
        if (dib == 12 || dib == 16 || dib == 40 || dib == 52 || dib == 56 || dib == 64 || dib == 108 ||
            dib == 124)
            return IMG_FMT_BMP;
    }
    /* ICO: reserved 0, type 1, then a non-zero image count. */
    if (len >= 6 && memcmp(data, "\0\0\1\0", 4) == 0 && (data[4] | data[5]) != 0)
        return IMG_FMT_ICO;
    img_format f = sniff_ftyp(data, len);
    if (f != IMG_FMT_UNKNOWN)
        return f;
    return sniff_svg(data, len);
}

const char *img_format_name(img_format f)
{
    switch (f) {
    case IMG_FMT_JPEG: return "jpeg";
    case IMG_FMT_PNG: return "png";
    case IMG_FMT_WEBP: return "webp";
    case IMG_FMT_GIF: return "gif";
    case IMG_FMT_TIFF: return "tiff";
    case IMG_FMT_BMP: return "bmp";
    case IMG_FMT_AVIF: return "avif";
    case IMG_FMT_HEIC: return "heic";
    case IMG_FMT_SVG: return "svg";
    case IMG_FMT_ICO: return "ico";
    case IMG_FMT_UNKNOWN: break;
    }
    return "unknown";
}

const char *img_format_ext(img_format f)
{
    switch (f) {
    case IMG_FMT_JPEG: return "jpg";
    case IMG_FMT_PNG: return "png";
    case IMG_FMT_WEBP: return "webp";
    case IMG_FMT_GIF: return "gif";
    case IMG_FMT_TIFF: return "tif";
    case IMG_FMT_BMP: return "bmp";
    case IMG_FMT_AVIF: return "avif";
    case IMG_FMT_HEIC: return "heic";
    case IMG_FMT_SVG: return "svg";
    case IMG_FMT_ICO: return "ico";
    case IMG_FMT_UNKNOWN: break;
    }
    return "bin";
}

/* ---------------------------------------------------------------------------------------------------------
 * Buffers
 */

int img_alloc(img_rgb *im, uint32_t w, uint32_t h)
{
    im->w = im->h = 0;
    im->px = NULL;
    if (w == 0 || h == 0)
        return lvd_fail("image: cannot allocate an empty %ux%u image", (unsigned)w, (unsigned)h);
    uint64_t bytes = (uint64_t)w * h * 3;
    if (bytes > SIZE_MAX)
        return lvd_fail("image: %ux%u does not fit in memory", (unsigned)w, (unsigned)h);
    im->px = malloc((size_t)bytes);
    if (im->px == NULL)
        return lvd_fail("image: out of memory for %ux%u pixels", (unsigned)w, (unsigned)h);
    im->w = w;
    im->h = h;
    return 0;
}

void img_free(img_rgb *im)
{
    if (im == NULL)
        return;
    free(im->px);
    im->px = NULL;
    im->w = im->h = 0;
}

static img_status check_pixels(const char *what, uint32_t w, uint32_t h, uint64_t max_pixels)
{
    uint64_t n = (uint64_t)w * h; /* both < 2^32: cannot overflow 64 bits */
    if (n > max_pixels) {
        lvd_fail("%s: %ux%u = %llu pixels exceeds the limit of %llu", what, (unsigned)w, (unsigned)h,
                 (unsigned long long)n, (unsigned long long)max_pixels);
        return IMG_TOO_MANY_PIXELS;
    }
    if (w == 0 || h == 0) {
        lvd_fail("%s: empty image (%ux%u)", what, (unsigned)w, (unsigned)h);
        return IMG_CORRUPT;
    }
    return IMG_OK;
}

/* a * b / 255 rounded to nearest, for a, b in 0..255 */
static inline uint8_t mul255(unsigned a, unsigned b)
{
    return (uint8_t)((a * b + 127) / 255);
}

/* RGBA (n pixels, 4 bytes each) over a white background into RGB (3 bytes each). dst may alias src. */
static void composite_on_white(uint8_t *dst, const uint8_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned a = src[4 * i + 3];
        for (int c = 0; c < 3; c++)
            dst[3 * i + c] = (uint8_t)((src[4 * i + c] * a + 255u * (255u - a) + 127) / 255);
    }
}

/* ---------------------------------------------------------------------------------------------------------
 * EXIF orientation
 *
 * APP1 payload: "Exif\0\0", then a TIFF header (II|MM, 42, u32 offset of IFD0 from the TIFF start), IFD0 =
 * u16 entry count then 12-byte entries (u16 tag, u16 type, u32 count, 4 bytes value/offset). Everything
 * is hostile: every read is checked against the payload length, and the entry count is not trusted.
 */

static uint32_t rd16(const uint8_t *p, int be)
{
    return be ? ((uint32_t)p[0] << 8) | p[1] : ((uint32_t)p[1] << 8) | p[0];
}

static uint32_t rd32(const uint8_t *p, int be)
{
    return be ? ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]
              : ((uint32_t)p[3] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[1] << 8) | p[0];
}

static int exif_orientation(const uint8_t *seg, size_t len)
{
    if (len < 6 || memcmp(seg, "Exif\0\0", 6) != 0)
        return 0;
    const uint8_t *t = seg + 6;
    size_t n = len - 6;
    if (n < 8)
        return 0;
    int be;
    if (t[0] == 'I' && t[1] == 'I')
        be = 0;
    else if (t[0] == 'M' && t[1] == 'M')
        be = 1;
    else
        return 0;
    if (rd16(t + 2, be) != 42)
        return 0;
    uint32_t ifd = rd32(t + 4, be);
    if (ifd < 8 || ifd > n || n - ifd < 2)
        return 0;
    uint32_t count = rd16(t + ifd, be);
    size_t room = (n - ifd - 2) / 12; /* whole entries that actually fit */
    if (count > room)
        count = (uint32_t)room;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = t + ifd + 2 + (size_t)12 * i;
        if (rd16(e, be) != 0x0112)
            continue;
        uint32_t type = rd16(e + 2, be), cnt = rd32(e + 4, be);
        uint32_t v;
        if (type == 3 && cnt >= 1) /* SHORT, stored left-justified in the value field */
            v = rd16(e + 8, be);
        else if (type == 4 && cnt >= 1) /* LONG, seen from some writers */
            v = rd32(e + 8, be);
        else
            return 0;
        return v >= 1 && v <= 8 ? (int)v : 0;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------------------
 * JPEG (libjpeg-turbo)
 *
 * libjpeg reports fatal errors through error_exit, which must not return: we longjmp back with the message
 * formatted. The in-memory source reports running out of data as the JWRN_JPEG_EOF warning and then feeds
 * a fake EOI, producing a grey-padded picture; we stop there instead and call it truncated. Other warnings
 * (extraneous bytes, bad restart markers) are common in real files that display fine, so they are ignored.
 */

#define JPEG_MAX_SCANS 1000 /* progressive files with thousands of tiny scans are a known CPU bomb */

struct jpeg_err {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int truncated;
    char msg[JMSG_LENGTH_MAX];
};

static void jpeg_err_exit(j_common_ptr cinfo)
{
    struct jpeg_err *e = (struct jpeg_err *)cinfo->err;
    cinfo->err->format_message(cinfo, e->msg);
    longjmp(e->jump, 1);
}

static void jpeg_err_emit(j_common_ptr cinfo, int level)
{
    struct jpeg_err *e = (struct jpeg_err *)cinfo->err;
    if (level >= 0) /* trace messages */
        return;
    cinfo->err->num_warnings++;
    if (cinfo->err->msg_code == JWRN_JPEG_EOF) {
        e->truncated = 1;
        cinfo->err->format_message(cinfo, e->msg);
        longjmp(e->jump, 1);
    }
}

static void jpeg_err_output(j_common_ptr cinfo)
{
    (void)cinfo; /* library code does not print */
}

static void jpeg_progress(j_common_ptr cinfo)
{
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > JPEG_MAX_SCANS) {
        struct jpeg_err *e = (struct jpeg_err *)cinfo->err;
        snprintf(e->msg, sizeof e->msg, "more than %d progressive scans", JPEG_MAX_SCANS);
        longjmp(e->jump, 1);
    }
}

/* Everything a JPEG decode touches between setjmp and longjmp lives here, owned by the caller of
 * jpeg_run, so its values are well defined after the jump. */
struct jpeg_job {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_err err;
    struct jpeg_progress_mgr progress;
    const uint8_t *data;
    size_t len;
    int probe_only;
    uint64_t max_pixels;
    uint32_t min_w, min_h;
    /* results */
    img_status status;
    uint32_t w, h; /* stored (header) size */
    int orientation;
    uint8_t *row;  /* one scanline of output_components bytes per pixel */
    img_rgb img;   /* decoded, stored orientation */
};

static int jpeg_find_orientation(j_decompress_ptr cinfo)
{
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m != NULL; m = m->next) {
        if (m->marker != JPEG_APP0 + 1)
            continue;
        int o = exif_orientation(m->data, m->data_length);
        if (o != 0)
            return o;
        if (m->data_length >= 6 && memcmp(m->data, "Exif\0\0", 6) == 0)
            return 1; /* the first Exif segment decides, even when it is unreadable */
    }
    return 1;
}

/* The scale M/8 to decode at (libjpeg-turbo scales in the IDCT, output side ceil(side * M / 8)): the smallest
 * M in 1..8 keeping both sides >= the wanted ones (want_w/want_h in stored orientation), except that 3 becomes
 * 4 and 6 or 7 become 8. M/8 rather than only 1/2, 1/4, 1/8: a 480-px picture headed for 256 decodes at 5/8
 * instead of full size. The exceptions are for speed: libjpeg-turbo has SIMD IDCTs only for 8x8, 4x4, 2x2
 * and 1x1 blocks, and with 4:2:0 chroma the chroma blocks of an M/8 decode use a 2M x 2M IDCT, so M = 3, 6, 7
 * run scalar 3x3/6x6/12x12 and 7x7/14x14 IDCTs. Measured on 600x800 photographs headed for 256, a 6/8
 * decode plus resampling cost more CPU than a full SIMD decode plus resampling from full size; 5/8 still
 * wins. Decoding larger never lowers the quality of the result. */
static unsigned jpeg_pick_scale(uint32_t w, uint32_t h, uint32_t want_w, uint32_t want_h)
{
    unsigned m = 8;
    for (unsigned k = 1; k < 8; k++) {
        uint64_t sw = ((uint64_t)w * k + 7) / 8, sh = ((uint64_t)h * k + 7) / 8;
        if (sw >= want_w && sh >= want_h) {
            m = k;
            break;
        }
    }
    if (m == 3)
        return 4;
    if (m == 6 || m == 7)
        return 8;
    return m;
}

/* CMYK as libjpeg returns it (4 bytes per pixel) to RGB. Adobe (Photoshop) files store inverted values,
 * i.e. 255 - ink; plain CMYK stores ink. */
static void cmyk_to_rgb(uint8_t *dst, const uint8_t *src, size_t n, int inverted)
{
    for (size_t i = 0; i < n; i++) {
        unsigned c = src[4 * i], m = src[4 * i + 1], y = src[4 * i + 2], k = src[4 * i + 3];
        if (!inverted) {
            c = 255 - c;
            m = 255 - m;
            y = 255 - y;
            k = 255 - k;
        }
        dst[3 * i] = mul255(c, k);
        dst[3 * i + 1] = mul255(m, k);
        dst[3 * i + 2] = mul255(y, k);
    }
}

static void jpeg_run(struct jpeg_job *j)
{
    j_decompress_ptr cinfo = &j->cinfo;
    cinfo->err = jpeg_std_error(&j->err.pub);
    j->err.pub.error_exit = jpeg_err_exit;
    j->err.pub.emit_message = jpeg_err_emit;
    j->err.pub.output_message = jpeg_err_output;
    j->err.truncated = 0;
    j->err.msg[0] = '\0';
    if (setjmp(j->err.jump)) {
        j->status = j->err.truncated ? IMG_TRUNCATED : IMG_CORRUPT;
        lvd_fail("jpeg: %s", j->err.msg[0] ? j->err.msg : "decoder error");
        return;
    }
    jpeg_create_decompress(cinfo);
    /* libjpeg allocates only within this budget (whole-image coefficient buffers of progressive files
     * otherwise need a backing store, which this build lacks, so the decode fails cleanly). Up to 4
     * components of 2-byte coefficients per pixel, plus working room. */
    {
        uint64_t px = j->max_pixels < ((uint64_t)1 << 40) ? j->max_pixels : ((uint64_t)1 << 40);
        cinfo->mem->max_memory_to_use = (long)(px * 8 + ((uint64_t)64 << 20));
    }
    j->progress.progress_monitor = jpeg_progress;
    cinfo->progress = &j->progress;
    jpeg_save_markers(cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_save_markers(cinfo, JPEG_APP0 + 14, 0xFFFF);
    jpeg_mem_src(cinfo, j->data, (unsigned long)j->len);
    jpeg_read_header(cinfo, TRUE);
    j->w = cinfo->image_width;
    j->h = cinfo->image_height;
    j->orientation = jpeg_find_orientation(cinfo);
    if (j->probe_only) {
        j->status = IMG_OK;
        return;
    }
    j->status = check_pixels("jpeg", j->w, j->h, j->max_pixels);
    if (j->status != IMG_OK)
        return;

    int cmyk = 0;
    switch (cinfo->jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        cinfo->out_color_space = JCS_RGB;
        break;
    case JCS_CMYK:
    case JCS_YCCK: /* libjpeg turns YCCK into CMYK */
        cinfo->out_color_space = JCS_CMYK;
        cmyk = 1;
        break;
    default:
        j->status = IMG_UNSUPPORTED;
        lvd_fail("jpeg: unsupported colour space %d with %d components", (int)cinfo->jpeg_color_space,
                 cinfo->num_components);
        return;
    }
    if (j->min_w != 0 && j->min_h != 0) {
        int swap = j->orientation >= 5;
        cinfo->scale_num = 1;
        cinfo->scale_num = jpeg_pick_scale(j->w, j->h, swap ? j->min_h : j->min_w, swap ? j->min_w : j->min_h);
        cinfo->scale_denom = 8;
    }
    jpeg_start_decompress(cinfo);
    uint32_t ow = cinfo->output_width, oh = cinfo->output_height;
    int comps = cinfo->output_components;
    if (comps != (cmyk ? 4 : 3)) {
        j->status = IMG_CORRUPT;
        lvd_fail("jpeg: unexpected %d output components", comps);
        return;
    }
    if (img_alloc(&j->img, ow, oh) != 0) {
        j->status = IMG_NOMEM;
        return;
    }
    j->row = malloc((size_t)ow * (size_t)comps);
    if (j->row == NULL) {
        j->status = IMG_NOMEM;
        lvd_fail("jpeg: out of memory for a %u-pixel row", (unsigned)ow);
        return;
    }
    int inverted = cinfo->saw_Adobe_marker;
    while (cinfo->output_scanline < oh) {
        uint32_t y = cinfo->output_scanline;
        JSAMPROW rows[1] = {cmyk ? j->row : j->img.px + (size_t)y * ow * 3};
        if (jpeg_read_scanlines(cinfo, rows, 1) != 1)
            continue; /* suspension cannot happen with a memory source; the loop re-checks */
        if (cmyk)
            cmyk_to_rgb(j->img.px + (size_t)y * ow * 3, j->row, ow, inverted);
    }
    jpeg_finish_decompress(cinfo);
    j->status = IMG_OK;
}

static img_status jpeg_do(struct jpeg_job *j)
{
    jpeg_run(j);
    jpeg_destroy_decompress(&j->cinfo);
    free(j->row);
    j->row = NULL;
    if (j->status != IMG_OK)
        img_free(&j->img);
    return j->status;
}

/* Output (x, y) takes stored pixel (sx, sy); stored size sw x sh; outputs 5..8 are sh x sw. Matches
 * EXIF 274 / Pillow's exif_transpose: 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 clockwise,
 * 7 transverse, 8 rotate 90 counter-clockwise. */
static int apply_orientation(img_rgb *im, int o)
{
    if (o <= 1 || o > 8)
        return 0;
    uint32_t sw = im->w, sh = im->h;
    uint32_t ow = o >= 5 ? sh : sw, oh = o >= 5 ? sw : sh;
    img_rgb out;
    if (img_alloc(&out, ow, oh) != 0)
        return -1;
    for (uint32_t y = 0; y < oh; y++) {
        uint8_t *d = out.px + (size_t)y * ow * 3;
        for (uint32_t x = 0; x < ow; x++, d += 3) {
            uint32_t sx, sy;
            switch (o) {
            case 2: sx = sw - 1 - x; sy = y; break;
            case 3: sx = sw - 1 - x; sy = sh - 1 - y; break;
            case 4: sx = x; sy = sh - 1 - y; break;
            case 5: sx = y; sy = x; break;
            case 6: sx = y; sy = sh - 1 - x; break;
            case 7: sx = sw - 1 - y; sy = sh - 1 - x; break;
            default: sx = sw - 1 - y; sy = x; break; /* 8 */
            }
            memcpy(d, im->px + ((size_t)sy * sw + sx) * 3, 3);
        }
    }
    img_free(im);
    *im = out;
    return 0;
}

static img_status decode_jpeg(const uint8_t *data, size_t len, uint64_t max_pixels, uint32_t min_w,
                              uint32_t min_h, img_rgb *out)
{
    struct jpeg_job j;
    memset(&j, 0, sizeof j);
    j.data = data;
    j.len = len;
    j.max_pixels = max_pixels;
    j.min_w = min_w;
    j.min_h = min_h;
    img_status st = jpeg_do(&j);
    if (st != IMG_OK)
        return st;
    if (apply_orientation(&j.img, j.orientation) != 0) {
        img_free(&j.img);
        return IMG_NOMEM;
    }
    *out = j.img;
    return IMG_OK;
}

/* ---------------------------------------------------------------------------------------------------------
 * PNG (libspng)
 */

#define PNG_CHUNK_LIMIT ((size_t)16 << 20)  /* largest ancillary chunk kept */
#define PNG_CACHE_LIMIT ((size_t)64 << 20)  /* all ancillary chunks together */

static img_status png_status(int rc)
{
    switch (rc) {
    case SPNG_EOF:
    case SPNG_IO_EOF:
    case SPNG_EIDAT_TOO_SHORT:
        return IMG_TRUNCATED;
    case SPNG_EMEM:
        return IMG_NOMEM;
    default:
        return IMG_CORRUPT;
    }
}

static img_status png_fail(int rc, const char *step)
{
    img_status st = png_status(rc);
    lvd_fail("png: %s: %s", step, spng_strerror(rc));
    return st;
}

static spng_ctx *png_open(const uint8_t *data, size_t len, struct spng_ihdr *ihdr, img_status *st)
{
    spng_ctx *ctx = spng_ctx_new(0);
    if (ctx == NULL) {
        lvd_fail("png: out of memory for a decoder");
        *st = IMG_NOMEM;
        return NULL;
    }
    int rc;
    /* The pixel-count limit is ours (check_pixels); spng's per-side limits stay at the format maximum. */
    if ((rc = spng_set_image_limits(ctx, 0x7FFFFFFF, 0x7FFFFFFF)) != 0 ||
        (rc = spng_set_chunk_limits(ctx, PNG_CHUNK_LIMIT, PNG_CACHE_LIMIT)) != 0 ||
        (rc = spng_set_png_buffer(ctx, data, len)) != 0 || (rc = spng_get_ihdr(ctx, ihdr)) != 0) {
        *st = png_fail(rc, "reading the header");
        spng_ctx_free(ctx);
        return NULL;
    }
    *st = IMG_OK;
    return ctx;
}

static img_status decode_png(const uint8_t *data, size_t len, uint64_t max_pixels, img_rgb *out)
{
    struct spng_ihdr ihdr;
    img_status st;
    spng_ctx *ctx = png_open(data, len, &ihdr, &st);
    if (ctx == NULL)
        return st;
    st = check_pixels("png", ihdr.width, ihdr.height, max_pixels);
    if (st != IMG_OK)
        goto done;

    int alpha = ihdr.color_type == SPNG_COLOR_TYPE_GRAYSCALE_ALPHA || ihdr.color_type == SPNG_COLOR_TYPE_TRUECOLOR_ALPHA;
    if (!alpha) {
        struct spng_trns trns;
        int rc = spng_get_trns(ctx, &trns);
        if (rc == 0)
            alpha = 1;
        else if (rc != SPNG_ECHUNKAVAIL) {
            st = png_fail(rc, "reading chunks");
            goto done;
        }
    }
    int fmt = alpha ? SPNG_FMT_RGBA8 : SPNG_FMT_RGB8;
    size_t need;
    int rc = spng_decoded_image_size(ctx, fmt, &need);
    if (rc != 0) {
        st = png_fail(rc, "sizing the image");
        goto done;
    }
    if (img_alloc(out, ihdr.width, ihdr.height) != 0) {
        st = IMG_NOMEM;
        goto done;
    }
    uint8_t *buf = out->px;
    if (alpha) {
        buf = malloc(need);
        if (buf == NULL) {
            lvd_fail("png: out of memory for %zu bytes of RGBA", need);
            st = IMG_NOMEM;
            goto done;
        }
    } else if (need != (size_t)out->w * out->h * 3) {
        st = IMG_CORRUPT;
        lvd_fail("png: decoder wants %zu bytes for %ux%u RGB", need, (unsigned)out->w, (unsigned)out->h);
        goto done;
    }
    rc = spng_decode_image(ctx, buf, need, fmt, alpha ? SPNG_DECODE_TRNS : 0);
    if (rc != 0) {
        st = png_fail(rc, "decoding");
        if (buf != out->px)
            free(buf);
        goto done;
    }
    if (alpha) {
        composite_on_white(out->px, buf, (size_t)out->w * out->h);
        free(buf);
    }
    st = IMG_OK;
done:
    if (st != IMG_OK)
        img_free(out);
    spng_ctx_free(ctx);
    return st;
}

/* ---------------------------------------------------------------------------------------------------------
 * WebP (libwebp)
 */

static img_status webp_fail(VP8StatusCode rc, const char *step)
{
    const char *what;
    img_status st = IMG_CORRUPT;
    switch (rc) {
    case VP8_STATUS_OUT_OF_MEMORY: what = "out of memory"; st = IMG_NOMEM; break;
    case VP8_STATUS_INVALID_PARAM: what = "invalid parameter"; break;
    case VP8_STATUS_BITSTREAM_ERROR: what = "bitstream error"; break;
    case VP8_STATUS_UNSUPPORTED_FEATURE: what = "unsupported feature"; st = IMG_UNSUPPORTED; break;
    case VP8_STATUS_SUSPENDED: what = "suspended"; break;
    case VP8_STATUS_USER_ABORT: what = "aborted"; break;
    case VP8_STATUS_NOT_ENOUGH_DATA: what = "not enough data (truncated)"; st = IMG_TRUNCATED; break;
    default: what = "unknown error"; break;
    }
    lvd_fail("webp: %s: %s", step, what);
    return st;
}

static img_status decode_webp(const uint8_t *data, size_t len, uint64_t max_pixels, img_rgb *out)
{
    WebPDecoderConfig cfg;
    if (!WebPInitDecoderConfig(&cfg)) {
        lvd_fail("webp: library version mismatch");
        return IMG_UNSUPPORTED;
    }
    VP8StatusCode rc = WebPGetFeatures(data, len, &cfg.input);
    if (rc != VP8_STATUS_OK)
        return webp_fail(rc, "reading the header");
    if (cfg.input.has_animation) {
        lvd_fail("webp: animated WebP is not supported");
        return IMG_UNSUPPORTED;
    }
    if (cfg.input.width <= 0 || cfg.input.height <= 0) {
        lvd_fail("webp: bad size %dx%d", cfg.input.width, cfg.input.height);
        return IMG_CORRUPT;
    }
    img_status st = check_pixels("webp", (uint32_t)cfg.input.width, (uint32_t)cfg.input.height, max_pixels);
    if (st != IMG_OK)
        return st;
    if (img_alloc(out, (uint32_t)cfg.input.width, (uint32_t)cfg.input.height) != 0)
        return IMG_NOMEM;
    int alpha = cfg.input.has_alpha;
    size_t n = (size_t)out->w * out->h;
    uint8_t *buf = out->px;
    if (alpha) {
        buf = malloc(n * 4);
        if (buf == NULL) {
            img_free(out);
            lvd_fail("webp: out of memory for %zu bytes of RGBA", n * 4);
            return IMG_NOMEM;
        }
    }
    cfg.output.colorspace = alpha ? MODE_RGBA : MODE_RGB;
    cfg.output.is_external_memory = 1;
    cfg.output.u.RGBA.rgba = buf;
    cfg.output.u.RGBA.stride = (int)((alpha ? 4 : 3) * out->w);
    cfg.output.u.RGBA.size = n * (alpha ? 4 : 3);
    rc = WebPDecode(data, len, &cfg);
    WebPFreeDecBuffer(&cfg.output); /* external memory: releases nothing of ours */
    if (rc != VP8_STATUS_OK) {
        if (alpha)
            free(buf);
        img_free(out);
        return webp_fail(rc, "decoding");
    }
    if (alpha) {
        composite_on_white(out->px, buf, n);
        free(buf);
    }
    return IMG_OK;
}

/* ---------------------------------------------------------------------------------------------------------
 * Probe and decode entry points
 */

img_status img_probe(const uint8_t *data, size_t len, img_format *fmt, uint32_t *w, uint32_t *h,
                     int *orientation)
{
    img_format f = img_sniff(data, len);
    *fmt = f;
    *w = *h = 0;
    *orientation = 1;
    switch (f) {
    case IMG_FMT_JPEG: {
        struct jpeg_job j;
        memset(&j, 0, sizeof j);
        j.data = data;
        j.len = len;
        j.probe_only = 1;
        img_status st = jpeg_do(&j);
        if (st == IMG_OK) {
            *w = j.w;
            *h = j.h;
            *orientation = j.orientation;
        }
        return st;
    }
    case IMG_FMT_PNG: {
        struct spng_ihdr ihdr;
        img_status st;
        spng_ctx *ctx = png_open(data, len, &ihdr, &st);
        if (ctx == NULL)
            return st;
        spng_ctx_free(ctx);
        *w = ihdr.width;
        *h = ihdr.height;
        return IMG_OK;
    }
    case IMG_FMT_WEBP: {
        WebPBitstreamFeatures ft;
        VP8StatusCode rc = WebPGetFeatures(data, len, &ft);
        if (rc != VP8_STATUS_OK)
            return webp_fail(rc, "reading the header");
        *w = (uint32_t)ft.width;
        *h = (uint32_t)ft.height;
        return IMG_OK;
    }
    default:
        lvd_fail("image: %s is not a decodable format", img_format_name(f));
        return IMG_UNSUPPORTED;
    }
}

img_status img_decode(const uint8_t *data, size_t len, uint64_t max_pixels, uint32_t min_w, uint32_t min_h,
                      img_rgb *out)
{
    out->w = out->h = 0;
    out->px = NULL;
    img_format f = img_sniff(data, len);
    switch (f) {
    case IMG_FMT_JPEG: return decode_jpeg(data, len, max_pixels, min_w, min_h, out);
    case IMG_FMT_PNG: return decode_png(data, len, max_pixels, out);
    case IMG_FMT_WEBP: return decode_webp(data, len, max_pixels, out);
    default:
        lvd_fail("image: %s is not a decodable format", img_format_name(f));
        return IMG_UNSUPPORTED;
    }
}

/* ---------------------------------------------------------------------------------------------------------
 * Encoders
 */

static int check_encodable(const img_rgb *im, const char *what)
{
    if (im == NULL || im->px == NULL || im->w == 0 || im->h == 0)
        return lvd_fail("%s: nothing to encode", what);
    return 0;
}

static int clamp_quality(int q)
{
    return q < 1 ? 1 : q > 100 ? 100 : q;
}

struct jpeg_enc {
    struct jpeg_compress_struct cinfo;
    struct jpeg_err err;
    const img_rgb *im;
    int quality;
    unsigned char *buf;
    unsigned long len;
};

static int jpeg_enc_run(struct jpeg_enc *e)
{
    struct jpeg_compress_struct *c = &e->cinfo;
    c->err = jpeg_std_error(&e->err.pub);
    e->err.pub.error_exit = jpeg_err_exit;
    e->err.pub.output_message = jpeg_err_output;
    e->err.msg[0] = '\0';
    if (setjmp(e->err.jump))
        return lvd_fail("jpeg encode: %s", e->err.msg);
    jpeg_create_compress(c);
    jpeg_mem_dest(c, &e->buf, &e->len);
    c->image_width = e->im->w;
    c->image_height = e->im->h;
    c->input_components = 3;
    c->in_color_space = JCS_RGB;
    jpeg_set_defaults(c);
    jpeg_set_quality(c, e->quality, TRUE);
    jpeg_start_compress(c, TRUE);
    size_t stride = (size_t)e->im->w * 3;
    while (c->next_scanline < c->image_height) {
        JSAMPROW row[1] = {e->im->px + (size_t)c->next_scanline * stride};
        jpeg_write_scanlines(c, row, 1);
    }
    jpeg_finish_compress(c);
    return 0;
}

int img_encode_jpeg(const img_rgb *im, int quality, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (check_encodable(im, "jpeg encode") != 0)
        return -1;
    if (im->w > JPEG_MAX_DIMENSION || im->h > JPEG_MAX_DIMENSION)
        return lvd_fail("jpeg encode: %ux%u exceeds the format's %ld limit", (unsigned)im->w, (unsigned)im->h,
                        JPEG_MAX_DIMENSION);
    struct jpeg_enc e;
    memset(&e, 0, sizeof e);
    e.im = im;
    e.quality = clamp_quality(quality);
    int rc = jpeg_enc_run(&e);
    jpeg_destroy_compress(&e.cinfo);
    if (rc != 0) {
        free(e.buf); /* jpeg_mem_dest grows its buffer with malloc */
        return -1;
    }
    *out = e.buf;
    *out_len = e.len;
    return 0;
}

int img_encode_webp(const img_rgb *im, int quality, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (check_encodable(im, "webp encode") != 0)
        return -1;
    if (im->w > WEBP_MAX_DIMENSION || im->h > WEBP_MAX_DIMENSION)
        return lvd_fail("webp encode: %ux%u exceeds the format's %d limit", (unsigned)im->w, (unsigned)im->h,
                        WEBP_MAX_DIMENSION);
    uint8_t *enc = NULL;
    size_t n = WebPEncodeRGB(im->px, (int)im->w, (int)im->h, (int)(im->w * 3), (float)clamp_quality(quality),
                             &enc);
    if (n == 0) {
        WebPFree(enc);
        return lvd_fail("webp encode: encoder failed for %ux%u", (unsigned)im->w, (unsigned)im->h);
    }
    /* WebPFree is not free(); hand the caller a malloc'ed copy as the contract says */
    *out = malloc(n);
    if (*out == NULL) {
        WebPFree(enc);
        return lvd_fail("webp encode: out of memory for %zu bytes", n);
    }
    memcpy(*out, enc, n);
    WebPFree(enc);
    *out_len = n;
    return 0;
}

int img_encode_png(const img_rgb *im, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (check_encodable(im, "png encode") != 0)
        return -1;
    if (im->w > 0x7FFFFFFF || im->h > 0x7FFFFFFF)
        return lvd_fail("png encode: %ux%u exceeds the format's limit", (unsigned)im->w, (unsigned)im->h);
    spng_ctx *ctx = spng_ctx_new(SPNG_CTX_ENCODER);
    if (ctx == NULL)
        return lvd_fail("png encode: out of memory for an encoder");
    struct spng_ihdr ihdr = {
        .width = im->w, .height = im->h, .bit_depth = 8, .color_type = SPNG_COLOR_TYPE_TRUECOLOR};
    int rc, err = 0;
    size_t len = 0;
    if ((rc = spng_set_option(ctx, SPNG_ENCODE_TO_BUFFER, 1)) != 0 || (rc = spng_set_ihdr(ctx, &ihdr)) != 0 ||
        (rc = spng_encode_image(ctx, im->px, (size_t)im->w * im->h * 3, SPNG_FMT_PNG, SPNG_ENCODE_FINALIZE)) != 0) {
        spng_ctx_free(ctx);
        return lvd_fail("png encode: %s", spng_strerror(rc));
    }
    /* the buffer comes from spng's default allocator (malloc) and is now ours */
    uint8_t *buf = spng_get_png_buffer(ctx, &len, &err);
    spng_ctx_free(ctx);
    if (buf == NULL || err != 0) {
        free(buf);
        return lvd_fail("png encode: %s", spng_strerror(err));
    }
    *out = buf;
    *out_len = len;
    return 0;
}
