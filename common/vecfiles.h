/* vecfiles.h — embedding rows read straight from memory-mapped .npy files (what lvd-embed writes:
 * WORK/embeddings/<model>/<collection>/part-NNNNNN.npy, C-order little-endian float16 or float32, shape
 * (rows, dim)), so a stage can gather any row of a million-row model without loading the files.
 *
 * A vec_files set holds the files of one model: vf_add maps a file (once per path) and checks its dtype,
 * order, 2-D shape, dim and size; vf_row converts one row to float32. Memory: the mappings (paged in by the
 * kernel on demand) plus one small record per file. Errors name the file and what is wrong.
 */
#ifndef LVD_DEDUP_VEC_H
#define LVD_DEDUP_VEC_H

#include <stddef.h>
#include <stdint.h>

typedef struct vec_file {
    char *path;
    void *map;            /* the whole file, read-only */
    size_t map_len;
    const uint8_t *data;  /* first element of row 0 */
    int64_t rows;
    int32_t f16;          /* 1: float16 ('<f2'), 0: float32 ('<f4') */
} vec_file;

typedef struct vec_files {
    int32_t dim;          /* floats per row; every file must have it */
    int32_t n, cap;
    vec_file *f;          /* in the order added: an index stays valid while files are added */
    int32_t *by_path;     /* n indices into f, sorted by path (binary search) */
} vec_files;

/* An empty set for rows of dim floats. */
void vf_init(vec_files *v, int32_t dim);
void vf_free(vec_files *v);

/* Maps path if it is not in the set yet. Returns 0 or -1 (message names path). Indices of files already in
 * the set do not change. */
int vf_add(vec_files *v, const char *path);

/* Index of a mapped path, or -1. */
int32_t vf_find(const vec_files *v, const char *path);

/* The index of WORK/rel (an embeddings.file value relative to the work directory) in the set, mapping the file
 * first if it is not there yet. 0 or -1 (message names the file). */
int vf_index(vec_files *v, const char *work, const char *rel, int32_t *out);

/* Row `row` of file `file` (an index from vf_find) as dim float32 values in out. -1 (message) if row is out of
 * range. */
int vf_row(const vec_files *v, int32_t file, int64_t row, float *out);

/* Inner product of two float32 vectors of length d, accumulated in double (deterministic for given inputs). */
double vf_dot(const float *a, const float *b, int32_t d);

#endif
