/* npy.h — NumPy .npy files (format 1.0/2.0/3.0 read, 1.0 written): what lvd-embed writes and lvd-vit reads.
 *
 * Only C-order, little-endian float32 ('<f4') and float16 ('<f2') arrays of up to NPY_MAX_DIMS dimensions.
 * Readers convert float16 to float32. Errors name the file and what was wrong (dtype, order, shape, size).
 */
#ifndef LVD_NPY_H
#define LVD_NPY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define NPY_MAX_DIMS 8

typedef enum npy_dtype { NPY_F32 = 0, NPY_F16 = 1 } npy_dtype;

typedef struct npy_array {
    npy_dtype dtype;               /* dtype in the file */
    int32_t ndim;
    int64_t shape[NPY_MAX_DIMS];
    float *data;                   /* float32, product(shape) elements, malloc'ed; NULL for 0 elements */
} npy_array;

/* Number of elements: product of shape (1 for ndim 0). */
int64_t npy_count(const npy_array *a);

/* Reads path whole into a (data converted to float32). Returns 0 or -1. */
int npy_read(const char *path, npy_array *a);

/* Frees a->data and zeroes *a. */
void npy_free(npy_array *a);

/* Writes a float32 buffer of the given shape as dtype (float16 rounds to nearest even). Written to a
 * temporary name, fsync'ed and renamed, so a crash never leaves a half-written file under path. */
int npy_write(const char *path, const float *data, int32_t ndim, const int64_t *shape, npy_dtype dtype);

/* float32 <-> IEEE half, round to nearest even; exposed for tests and for in-memory float16 buffers.
 * npy_f16_to_f32 is f16.h's f16_to_f32 (exact). */
uint16_t npy_f32_to_f16(float f);
float npy_f16_to_f32(uint16_t h);

#endif
