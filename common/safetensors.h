/* safetensors.h — the safetensors checkpoint format: an 8-byte little-endian header length, a JSON header
 * {"name": {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}, then the raw
 * little-endian tensor bytes.
 *
 * Reading memory-maps the file and validates the header fully (offsets inside the file, sizes equal to
 * dtype size x product(shape), no overlaps) before any tensor is used; F32, F16 and BF16 tensors are
 * converted to float32 on request. Writing produces F32 tensors in the order given, 8-byte aligned header.
 */
#ifndef LVD_SAFETENSORS_H
#define LVD_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

typedef enum st_dtype { ST_F32 = 0, ST_F16, ST_BF16, ST_OTHER } st_dtype;

typedef struct st_tensor {
    const char *name;               /* owned by the st_file */
    st_dtype dtype;
    char dtype_name[16];            /* as written in the file, e.g. "F32", "I64" */
    int32_t ndim;
    int64_t shape[ST_MAX_DIMS];
    const uint8_t *data;            /* into the mapping */
    size_t nbytes;
} st_tensor;

typedef struct st_file st_file;

/* Opens and validates path. Returns 0 or -1 (message names the file and the problem). */
int st_open(const char *path, st_file **out);
void st_close(st_file *f);

/* Tensors in file order. */
size_t st_count(const st_file *f);
const st_tensor *st_at(const st_file *f, size_t i);

/* The tensor called name, or NULL. */
const st_tensor *st_find(const st_file *f, const char *name);

/* Metadata value for key, or NULL. */
const char *st_meta(const st_file *f, const char *key);

/* Element count of t. */
int64_t st_numel(const st_tensor *t);

/* Converts t to float32 into dst (st_numel(t) floats). Fails for dtypes other than F32/F16/BF16. */
int st_to_f32(const st_tensor *t, float *dst);

/* One tensor to write: float32 data of the given shape. */
typedef struct st_write_tensor {
    const char *name;
    int32_t ndim;
    int64_t shape[ST_MAX_DIMS];
    const float *data;
} st_write_tensor;

/* Writes n tensors (F32) plus optional metadata pairs (meta_kv: 2*n_meta strings, key then value) to path,
 * via a temporary file that is fsync'ed and renamed. */
int st_write(const char *path, const st_write_tensor *t, size_t n, const char *const *meta_kv, size_t n_meta);

#endif
