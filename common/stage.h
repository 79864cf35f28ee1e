/* stage.h — what every curation stage shares: the work directory, the target catalog (catalog.db, or the
 * part file of a partitioned run), the run record, and the --merge of part files.
 *
 * With one part the stage writes WORK/catalog.db. With --part I/N (N > 1; parts are numbered 0..N-1) it writes
 * only WORK/parts/<stage>-I-of-N.db (a catalog with the same schema) and its own shards, and may read catalog.db
 * read-only; `lvd-<stage> --merge` folds every part file of that stage into catalog.db and renames each part
 * file to *.merged, so a merge is never applied twice. Whichever file a run writes, it holds that catalog's lock
 * (catalog.h) from open to close: one writer per file.
 */
#ifndef LVD_STAGE_H
#define LVD_STAGE_H

#include <stdint.h>

#include "catalog.h"
#include "part.h"

#define STAGE_PATH_MAX 4096

typedef struct stage {
    const char *name;          /* "crawl", "decode", ... */
    char work[STAGE_PATH_MAX]; /* work directory */
    lvd_part part;
    char part_text[32];        /* "I/N" */
    char shard_tag[32];        /* "" or "pIofN": goes into shard names */
    catalog *cat;              /* where this run writes */
    catalog *main_ro;          /* partitioned runs: catalog.db read-only, or NULL if it does not exist */
    int64_t run_id;
} stage;

enum stage_flags {
    STAGE_WAIT = CATALOG_WAIT, /* wait for a catalog another process holds, instead of failing at once */
    STAGE_ALLOW_PARTIAL = 16   /* stage_merge: merge a split with missing parts (warning), not an error */
};

/* Creates the work directory if needed, resolves the part (arg = --part value or NULL), opens the target
 * catalog (taking its lock; flags: STAGE_WAIT) and records a run with params_json and its fingerprint. */
int stage_open(stage *s, const char *name, const char *work, const char *part_arg, const char *params_json,
               const char *fingerprint, int flags);

/* Records the run's end ("done"/"failed", summary may be NULL) and closes the catalogs. */
int stage_close(stage *s, const char *status, const char *summary_json);

typedef struct stage_part {
    uint32_t index, count; /* part I of N */
} stage_part;

typedef struct stage_merge_result {
    int merged;           /* part files folded in by this merge */
    int already;          /* part files folded in before (renamed *.merged) */
    int nmissing;         /* parts of the splits merged now that were never written */
    stage_part *missing;  /* nmissing entries, by (N, I); free with stage_merge_result_free */
} stage_merge_result;

/* Folds WORK/parts/<name>-I-of-N.db into WORK/catalog.db (created if absent), one transaction per part file.
 * First, per split (all the parts written for one N) that has something to merge, it lists the parts it found
 * against 0..N-1 (log lines): a part neither there nor merged before is missing, and any missing part is an
 * error that merges nothing, unless flags has STAGE_ALLOW_PARTIAL (then a warning; merge again once the rest is
 * written). A part still being written (its lock held) is an error that merges nothing. A work directory that
 * does not exist, or holds neither a catalog nor part files of the stage, is an error ("nothing to merge");
 * with a catalog and no unmerged parts the merge does nothing and says so. flags may also have STAGE_WAIT. */
int stage_merge(const char *name, const char *work, int flags, stage_merge_result *r);
void stage_merge_result_free(stage_merge_result *r);

/* Hex SHA-256 of text: the parameter fingerprint of a stage. */
void stage_fingerprint(const char *text, char out[65]);

#endif
