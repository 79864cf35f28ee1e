/* decide.h — the decide phase of lvd-dedup and its summary. Runs in one-part runs, and in --merge after
 * the parts are folded in: union-find over the stored edges of every decided or searched image, plus pHash
 * pairs when asked (graph.h computes the components and decisions); components that hold a newly
 * searched image get their component and decision rows (re)written in one transaction. Components without a
 * new image are left as they are: recomputing them would give the same rows. Every decision is recorded with
 * its evidence (catalog-003.sql: dedup_decisions, dedup_components, dedup_runs).
 */
#ifndef LVD_DEDUP_DECIDE_H
#define LVD_DEDUP_DECIDE_H

#include <cjson/cJSON.h>

#include "catalog.h"
#include "run.h"

/* Decides the pool images of x->pool that are searched but not decided (none: does nothing, returns 0),
 * from the edges and benchmark matches of the model in c (the run's catalog), and writes the dedup_runs row of
 * run x->st.run_id, the changed components' rows, and the stamps of this run's edges and matches, in one
 * transaction. pHash edges (x->p.phash >= 0) touching a new image are stored with their cosine. Sets the
 * decided flags, x->new_decided and x->changed_components. Memory: O(pool + edges). 0 or -1 (nothing
 * written). */
int dedup_decide(dedup_ctx *x, catalog *c);

/* The --json summary of the run (caller frees with cJSON_Delete): the search counts, and with decided_here the
 * model's totals in c (decisions, components, kept, removed) and the removals per benchmark (also stored in
 * x->b[i].removed). */
cJSON *dedup_decide_summary(dedup_ctx *x, catalog *c, int decided_here);

#endif
