/* sample.h — the search phase of sample rows: each seed image's k nearest pool images by cosine.
 *
 * A seed is searched when it has no search yet, or when the pool's generation passed the one it was searched
 * at (retrieve_seeds). From scratch, it is searched against the whole pool; incrementally, only against the
 * pool images that entered after its search, and the result is merged with its stored neighbours: both give
 * the k most similar pool images by the exact similarity (float64 dot product of the stored vectors), ties
 * broken by the lower image id, so an incremental run equals a run from scratch. FAISS proposes
 * k + RT_SAMPLE_SLACK candidates per seed (exact search up to --exact-max indexed vectors, IVF beyond, as
 * lvd-dedup); they are re-ranked exactly. Results are committed per --batch of seeds, so a killed run resumes.
 * A partitioned run searches the seeds its part owns (by image id) into its part file, reading the stored
 * neighbours from catalog.db.
 */
#ifndef LVD_RETRIEVE_SAMPLE_H
#define LVD_RETRIEVE_SAMPLE_H

#include "run.h"

/* Searches every seed of the sample rows that needs it; each row's count of seeds searched goes to
 * r->searched. */
int rt_sample_search(rt_ctx *x);

#endif
