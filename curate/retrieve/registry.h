/* registry.h — the seed registry of lvd-retrieve: which seed datasets to retrieve pool images for, and how.
 * The shipped registry is schemas/lvd142m.yaml (the 27 rows of the DINOv2 paper's Table 15); its header
 * comment is the user's documentation of the format.
 *
 * Format: one YAML document, a mapping with the keys
 *   defaults:  optional mapping of clusters, per_cluster, cap, min_seeds: the values of every cluster row
 *              that does not set its own (otherwise the paper's, REGISTRY_DEFAULT_*)
 *   rows:      required, non-empty sequence of row mappings with the keys
 *     name         required, unique, registry_check_name's rule
 *     method       required: as_is | sample | cluster
 *     dataset      required, a label (at most REGISTRY_TEXT_MAX bytes, no control characters)
 *     task, split  optional labels ("" when absent or null)
 *     collection   the seed collection (catalog_check_collection_name's rule); default registry_slug(dataset)
 *     k            required on sample rows, refused on others: integer >= 1
 *     clusters, per_cluster, cap (>= 1), min_seeds (>= 0): integers, refused on rows other than cluster rows
 *     paper_seeds, paper_final: optional integers >= 0 (the paper's counts; REGISTRY_UNKNOWN when absent)
 * '-' and '_' are the same in keys and in method names (as in --config files). Integers are plain decimal
 * scalars without a leading zero (YAML 1.1 reads 010 as 8). Unknown keys, keys given twice, other YAML
 * types, values too long and a second YAML document are errors. Every error about the file's content reads
 * "FILE:LINE: what is wrong" (LINE 1-based: the line of the offending key or value, or of the row for a
 * missing key; YAML syntax errors at libyaml's line).
 */
#ifndef LVD_RETRIEVE_REGISTRY_H
#define LVD_RETRIEVE_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "sha256.h"

#define REGISTRY_NAME_MAX 64         /* bytes of a row name */
#define REGISTRY_TEXT_MAX 200        /* bytes of task, dataset, split */
#define REGISTRY_COLLECTION_MAX 200  /* bytes of a collection name (CATALOG_NAME_MAX) */
#define REGISTRY_FILE_MAX (16 << 20) /* bytes of a registry file: larger is refused as not a registry */
#define REGISTRY_ROWS_MAX 65536      /* rows of a registry */
#define REGISTRY_UNKNOWN (-1)        /* paper_seeds / paper_final not given */

/* The paper's cluster retrieval (docs/dinov2-recipe.md §1): 100,000 k-means clusters of the pool; a cluster
 * holding more than 3 seed images gives 10,000 of its images; at most 1M images per dataset. */
#define REGISTRY_DEFAULT_CLUSTERS 100000
#define REGISTRY_DEFAULT_PER_CLUSTER 10000
#define REGISTRY_DEFAULT_CAP 1000000
#define REGISTRY_DEFAULT_MIN_SEEDS 3

typedef enum registry_method {
    REGISTRY_AS_IS = 0,   /* the seed images themselves */
    REGISTRY_SAMPLE = 1,  /* each seed image's k nearest pool images, each retrieved image counted once */
    REGISTRY_CLUSTER = 2, /* pool images of the k-means clusters that hold more than min_seeds seed images */
} registry_method;

typedef struct registry_row {
    char name[REGISTRY_NAME_MAX + 1];
    char task[REGISTRY_TEXT_MAX + 1];             /* "" when not given */
    char dataset[REGISTRY_TEXT_MAX + 1];
    char split[REGISTRY_TEXT_MAX + 1];            /* "" when not given */
    char collection[REGISTRY_COLLECTION_MAX + 1]; /* given, or registry_slug(dataset) */
    registry_method method;
    int64_t k;           /* sample: pool neighbours per seed image (>= 1); 0 on other rows */
    int64_t clusters;    /* cluster: k-means centroids over the pool (>= 1); 0 on other rows */
    int64_t per_cluster; /* cluster: images a qualifying cluster gives at most, nearest its centroid (>= 1) */
    int64_t cap;         /* cluster: images the row takes at most (>= 1) */
    int64_t min_seeds;   /* cluster: a cluster qualifies when it holds MORE than this many seed images (>= 0) */
    int64_t paper_seeds; /* the paper's seed images, or REGISTRY_UNKNOWN */
    int64_t paper_final; /* the paper's final images of the row, or REGISTRY_UNKNOWN */
    int line;            /* 1-based line of the row in the file */
    int collection_given; /* 1 if the file sets collection, 0 if it is the slug of dataset */
} registry_row;

typedef struct registry {
    char *path;                /* the file, as given to registry_load */
    char *text;                /* its whole content, text_len bytes plus a NUL */
    size_t text_len;           /* bytes */
    char sha256[SHA256_HEX];   /* lowercase hex SHA-256 of the text_len bytes of text */
    int nrows;
    registry_row *rows;        /* nrows, in file order */
} registry;

/* Reads and validates the registry at path into *r (zeroed first; free it with registry_free, also after a
 * failure). Returns 0, or -1 with a message: "FILE:LINE: ..." for anything wrong in the file, "FILE: ..." when
 * it cannot be read or is over REGISTRY_FILE_MAX bytes, "out of memory". Every failure but the last is the
 * user's to fix, i.e. a usage error of the program that was given the file. */
int registry_load(const char *path, registry *r);

/* The same for a registry already in memory (len bytes at text, copied; e.g. one built into a program):
 * path names it in messages and in r->path. */
int registry_parse(const char *path, const char *text, size_t len, registry *r);

/* Frees what registry_load or registry_parse allocated and zeroes *r; r may be zeroed or NULL. */
void registry_free(registry *r);

/* Index of the row named name, or -1. */
int registry_find(const registry *r, const char *name);

/* `--only ROW,...`: sets keep[i] (r->nrows entries) to 1 for the rows named in the comma-separated list only
 * and to 0 for the others. Blanks around a name are ignored and a name may repeat; only NULL selects every
 * row. Returns the number of rows selected (>= 1), or -1 with a message for an empty list or item, or a name
 * that is no row (listing the valid names). */
int registry_select(const registry *r, const char *only, uint8_t *keep);

/* The slug of a dataset name into out (cap bytes): ASCII letters lower-cased, every run of bytes other than
 * ASCII letters and digits turned into one '-', none at either end ("Oxford-IIIT Pet" -> "oxford-iiit-pet").
 * Returns its length in bytes (0 when name has no ASCII letter or digit), or -1 with a message when it does
 * not fit in cap - 1 bytes. */
int registry_slug(const char *name, char *out, size_t cap);

/* The rule for row names, which --only lists separate by commas and run records carry: 1 to
 * REGISTRY_NAME_MAX bytes of a-z, 0-9, '-', '_', '.', the first a letter or digit. 0, or -1 with a message
 * quoting the name and giving the rule. */
int registry_check_name(const char *name);

/* "as_is", "sample" or "cluster". */
const char *registry_method_name(registry_method m);

#endif
