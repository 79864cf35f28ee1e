/* shape.h — element counts of the dense arrays lvd reads and writes (.npy arrays, safetensors tensors): a shape
 * is ndim int64_t extents, C order. Header-only, so every module that has a shape can count it without linking
 * another one.
 */
#ifndef LVD_SHAPE_H
#define LVD_SHAPE_H

#include <stdint.h>

/* Number of elements of shape[0..ndim): their product, 1 for ndim 0. For a shape already checked with
 * shape_count (no negative extent, no overflow). */
static inline int64_t shape_numel(int32_t ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int32_t i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

/* The element count of a shape taken from a file or a caller, into *count. Extents are checked in order:
 * returns -1 at the first negative one (its index into *bad when bad is not NULL), -2 as soon as the product
 * times item_max (bytes per element, the largest the caller multiplies by, > 0) would exceed UINT64_MAX, else 0.
 * Records no message: the caller names the file or tensor. */
static inline int shape_count(int32_t ndim, const int64_t *shape, uint64_t item_max, uint64_t *count, int32_t *bad)
{
    uint64_t n = 1;
    for (int32_t i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            if (bad)
                *bad = i;
            return -1;
        }
        uint64_t d = (uint64_t)shape[i];
        if (d != 0 && n > UINT64_MAX / item_max / d)
            return -2;
        n *= d;
    }
    *count = n;
    return 0;
}

#endif
