/* image.h — image format sniffing, header probing, safe decoding to RGB, and encoding.
 *
 * Formats are recognised by magic bytes, never by file name or Content-Type. JPEG goes through libjpeg-turbo,
 * PNG through libspng, WebP through libwebp. Dimensions are read from the header before any pixel memory is
 * allocated, so decompression bombs are refused cheaply. Decoders never abort the process: corrupt or
 * truncated input comes back as a status with the decoder's own message (lvd_errmsg()).
 *
 * Pixels: img_rgb is 8-bit RGB, interleaved, rows packed (stride = 3 * w), top-left origin, after applying
 * the JPEG EXIF orientation. Grayscale, CMYK/YCCK (Adobe inverted) and palette images are converted to RGB;
 * alpha is composited on white.
 */
#ifndef LVD_IMAGE_H
#define LVD_IMAGE_H

#include <stddef.h>
#include <stdint.h>

typedef enum img_format {
    IMG_FMT_UNKNOWN = 0,
    IMG_FMT_JPEG,
    IMG_FMT_PNG,
    IMG_FMT_WEBP,
    IMG_FMT_GIF,  /* recognised, not decoded */
    IMG_FMT_TIFF, /* recognised, not decoded */
    IMG_FMT_BMP,  /* recognised, not decoded */
    IMG_FMT_AVIF, /* recognised (ftyp avif/avis), not decoded */
    IMG_FMT_HEIC, /* recognised (ftyp heic/heix/mif1), not decoded */
    IMG_FMT_SVG,  /* recognised (text starting with <svg or <?xml ... <svg), not decoded */
    IMG_FMT_ICO   /* recognised, not decoded */
} img_format;

typedef enum img_status {
    IMG_OK = 0,
    IMG_UNSUPPORTED,     /* a format we recognise but do not decode, or not an image at all */
    IMG_TOO_MANY_PIXELS, /* header declares more than max_pixels */
    IMG_TRUNCATED,       /* data ends early (libjpeg "premature end", short PNG/WebP) */
    IMG_CORRUPT,         /* the decoder rejected the data */
    IMG_NOMEM            /* allocation failed */
} img_status;

typedef struct img_rgb {
    uint32_t w, h; /* pixels */
    uint8_t *px;   /* w*h*3 bytes, owned: free with img_free */
} img_rgb;

/* Format from the first bytes (needs at most 32). */
img_format img_sniff(const uint8_t *data, size_t len);

/* "jpeg", "png", "webp", "gif", ... , "unknown". */
const char *img_format_name(img_format f);

/* File extension for the format: "jpg", "png", "webp", "gif", "tif", "bmp", "avif", "heic", "svg", "ico",
 * "bin" for unknown. */
const char *img_format_ext(img_format f);

/* Reads the format and the stored (pre-orientation) dimensions from the header without decoding pixels;
 * *orientation gets the EXIF orientation 1..8 for JPEG (1 if absent or not JPEG). Returns IMG_OK,
 * IMG_UNSUPPORTED (unknown/undecodable format), IMG_TRUNCATED or IMG_CORRUPT. */
img_status img_probe(const uint8_t *data, size_t len, img_format *fmt, uint32_t *w, uint32_t *h,
                     int *orientation);

/* Decodes to RGB. Refuses with IMG_TOO_MANY_PIXELS if the header's w*h exceeds max_pixels, before
 * allocating. min_w/min_h (in output orientation; 0 = full size) let JPEG decode at the smallest M/8 scale,
 * M = 1..8 (libjpeg-turbo DCT scaling), that keeps both output sides >= min_w, min_h, rounded up from 3 to 4 and
 * from 6 or 7 to 8 (scales without SIMD IDCTs; see jpeg_pick_scale); other formats decode at full size. On failure out->px is NULL and lvd_errmsg() holds the decoder's message. */
img_status img_decode(const uint8_t *data, size_t len, uint64_t max_pixels, uint32_t min_w, uint32_t min_h,
                      img_rgb *out);

/* Allocates w*h*3 bytes (0 or -1). */
int img_alloc(img_rgb *im, uint32_t w, uint32_t h);
void img_free(img_rgb *im);

/* Encoders: *out is malloc'ed (caller frees), *out_len its size. quality 1..100. Return 0 or -1. */
int img_encode_jpeg(const img_rgb *im, int quality, uint8_t **out, size_t *out_len);
int img_encode_webp(const img_rgb *im, int quality, uint8_t **out, size_t *out_len);
int img_encode_png(const img_rgb *im, uint8_t **out, size_t *out_len);

#endif
