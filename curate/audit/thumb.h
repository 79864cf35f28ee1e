/* thumb.h — small thumbnails of working images for the audit page.
 *
 * Working images are already JPEG or WebP (lvd-decode re-encodes them), usually a few hundred pixels on a
 * side. A thumbnail is those bytes unchanged when the image already fits, else the image decoded (JPEG at a
 * DCT scale near the target), shrunk with the antialiasing resampler of resize.h so that its longer side is
 * max_side pixels (aspect kept), and re-encoded as JPEG.
 */
#ifndef LVD_AUDIT_THUMB_H
#define LVD_AUDIT_THUMB_H

#include <stddef.h>
#include <stdint.h>

#define AUDIT_THUMB_MAX_PIXELS 100000000ull /* refuse to decode larger images (a thumbnail is not worth it) */

/* data: len bytes of an encoded image (JPEG, PNG or WebP). max_side >= 8 pixels, quality 1..100 (JPEG).
 * On success *out is malloc'ed (caller frees), *out_len its size, *ext "jpg", "png" or "webp" (static),
 * and *w, *h the thumbnail's size in pixels. Returns 0, or -1 with the decoder's message (undecodable or
 * unsupported bytes). */
int audit_thumb(const uint8_t *data, size_t len, uint32_t max_side, int quality, uint8_t **out, size_t *out_len,
                const char **ext, uint32_t *w, uint32_t *h);

#endif
