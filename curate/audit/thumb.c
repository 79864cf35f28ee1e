/* thumb.c — thumbnails: copy when small enough, else decode, shrink and re-encode as JPEG. */
#include "thumb.h"

#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "image.h"
#include "resize.h"

int audit_thumb(const uint8_t *data, size_t len, uint32_t max_side, int quality, uint8_t **out, size_t *out_len,
                const char **ext, uint32_t *w, uint32_t *h)
{
    *out = NULL;
    *out_len = 0;
    if (max_side < 8 || quality < 1 || quality > 100)
        return lvd_fail("thumbnail: max side %u must be >= 8 and quality %d in 1..100", max_side, quality);
    img_format fmt;
    uint32_t sw, sh;
    int orientation;
    img_status st = img_probe(data, len, &fmt, &sw, &sh, &orientation);
    if (st != IMG_OK || (fmt != IMG_FMT_JPEG && fmt != IMG_FMT_PNG && fmt != IMG_FMT_WEBP))
        return lvd_fail("thumbnail: not a decodable JPEG, PNG or WebP image (%s)",
                        st != IMG_OK ? "bad header" : img_format_name(fmt));
    if (orientation >= 5) { /* 90-degree EXIF rotations swap the displayed sides */
        uint32_t t = sw;
        sw = sh;
        sh = t;
    }
    if (sw <= max_side && sh <= max_side && orientation == 1) {
        /* Already small: the bytes themselves are the thumbnail (browsers decode all three formats). */
        if (!(*out = malloc(len ? len : 1)))
            return lvd_fail("thumbnail: out of memory (%zu bytes)", len);
        memcpy(*out, data, len);
        *out_len = len;
        *ext = img_format_ext(fmt);
        *w = sw;
        *h = sh;
        return 0;
    }
    /* Longer side = max_side, the other rounded to nearest and at least 1. */
    uint32_t tw, th;
    if (sw >= sh) {
        tw = sw < max_side ? sw : max_side;
        th = (uint32_t)(((uint64_t)sh * tw + sw / 2) / sw);
    } else {
        th = sh < max_side ? sh : max_side;
        tw = (uint32_t)(((uint64_t)sw * th + sh / 2) / sh);
    }
    if (tw == 0)
        tw = 1;
    if (th == 0)
        th = 1;
    img_rgb full = {0}, small = {0};
    st = img_decode(data, len, AUDIT_THUMB_MAX_PIXELS, tw, th, &full);
    if (st != IMG_OK)
        return lvd_fail_ctx("thumbnail: decoding %s", img_format_name(fmt));
    int rc = 0;
    if (full.w == tw && full.h == th)
        small = full, full.px = NULL;
    else
        rc = img_resize(&full, tw, th, &small);
    img_free(&full);
    if (rc != 0)
        return lvd_fail_ctx("thumbnail: resizing to %ux%u", tw, th);
    rc = img_encode_jpeg(&small, quality, out, out_len);
    img_free(&small);
    if (rc != 0)
        return lvd_fail_ctx("thumbnail: encoding JPEG");
    *ext = "jpg";
    *w = tw;
    *h = th;
    return 0;
}
