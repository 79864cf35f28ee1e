/* phash.h — 64-bit DCT perceptual hash (the imagehash.phash definition, hash_size 8, highfreq_factor 4).
 *
 * Grayscale (ITU-R 601-2 luma, as Pillow's "L"), antialiased resize to 32x32, 2-D DCT-II, the top-left 8x8
 * coefficients (DC included) compared against their median: bit (63 - (8*row + col)) is 1 where the
 * coefficient is greater. Near-identical pictures (re-encoded, resized, small brightness change) land
 * within a few bits; unrelated pictures differ in about half the bits.
 */
#ifndef LVD_PHASH_H
#define LVD_PHASH_H

#include <stdint.h>

#include "image.h"

uint64_t phash_compute(const img_rgb *im);

/* Number of differing bits. */
int phash_distance(uint64_t a, uint64_t b);

#endif
