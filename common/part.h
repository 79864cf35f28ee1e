/* part.h — `--part I/N`: which share of the items a partitioned run owns.
 *
 * An item belongs to part (hash(key) mod N), with a fixed 64-bit FNV-1a hash of the key's bytes, so every
 * run and every machine agrees. I and N come from --part, else from SLURM_ARRAY_TASK_ID /
 * SLURM_ARRAY_TASK_COUNT, else from OMPI_COMM_WORLD_RANK / OMPI_COMM_WORLD_SIZE, else PMI_RANK / PMI_SIZE,
 * else 0/1 (one part: the run writes catalog.db directly). I is 0-based.
 */
#ifndef LVD_PART_H
#define LVD_PART_H

#include <stddef.h>
#include <stdint.h>

typedef struct lvd_part {
    uint32_t index; /* I, 0 <= I < N */
    uint32_t count; /* N >= 1 */
    const char *source; /* where it came from: "--part", "SLURM", "OpenMPI", "PMI" or "default" (static) */
} lvd_part;

/* Parses "I/N" (0 <= I < N, N >= 1). Returns 0 or -1 with a message quoting the text. */
int part_parse(const char *text, lvd_part *out);

/* arg is the --part value or NULL; falls back to the environment as described above. Invalid environment
 * values are an error that names the variable. */
int part_resolve(const char *arg, lvd_part *out);

uint64_t part_hash(const char *key, size_t len);

/* 1 if the item with this key belongs to part p. */
int part_owns(const lvd_part *p, const char *key, size_t len);

#endif
