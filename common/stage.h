/* stage.h — what every curation stage shares: the work directory, the target catalog (catalog.db, or the
 * part file of a partitioned run), the run record, and the --merge of part files.
 *
 * With one part the stage writes WORK/catalog.db. With --part I/N (N > 1) it writes only
 * WORK/parts/<stage>-I-of-N.db (a catalog with the same schema) and its own shards, and may read catalog.db
 * read-only; `lvd-<stage> --merge` folds every part file of that stage into catalog.db and renames each part
 * file to *.merged, so a merge is never applied twice.
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

/* Creates the work directory if needed, resolves the part (arg = --part value or NULL), opens the target
 * catalog and records a run with params_json and its fingerprint. */
int stage_open(stage *s, const char *name, const char *work, const char *part_arg, const char *params_json,
               const char *fingerprint);

/* Records the run's end ("done"/"failed", summary may be NULL) and closes the catalogs. */
int stage_close(stage *s, const char *status, const char *summary_json);

/* Folds WORK/parts/<name>-*-of-*.db into WORK/catalog.db, one transaction per part file; *merged gets the
 * number of part files folded in. */
int stage_merge(const char *name, const char *work, int *merged);

/* Hex SHA-256 of text: the parameter fingerprint of a stage. */
void stage_fingerprint(const char *text, char out[65]);

#endif
