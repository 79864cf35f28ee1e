/* pool.h — what an lvd-dedup run reads from the catalog before it searches: the model, the benchmark
 * collections and the pool, each image with the file and row of its embedding (mapped into x->vf, vecfiles.h);
 * the run's parameters and their fingerprint; and the check that the model's existing dedup rows were made
 * with the same parameters (or their removal, with --force).
 *
 * The fingerprint covers every option that changes a decision (model identity, k, thresholds, rules, pHash
 * distance, index options) and a digest of the benchmark images with embeddings, so adding benchmark images
 * or embeddings changes it. Errors name the catalog file and say how to resolve the conflict.
 */
#ifndef LVD_DEDUP_POOL_H
#define LVD_DEDUP_POOL_H

#include <stdint.h>

#include "catalog.h"
#include "run.h"

/* The model row of x->p.model in c: sets x->model_id, x->model_sha and x->dim. No such model is an error
 * that says to embed the pool first. 0 or -1. */
int dedup_pool_load_model(dedup_ctx *x, catalog *c);

/* Benchmark collections (role benchmark, by id) and their images with embeddings of the model (sorted by id),
 * appended to x->b / x->nb (at most DEDUP_MAX_BENCH in all); their files are mapped into x->vf, which must be
 * initialised for x->dim. digest gets the hex SHA-256 of the collection and image ids. Benchmark images without
 * an embedding are warned about (not searched). 0 or -1. */
int dedup_pool_load_benchmarks(dedup_ctx *x, catalog *c, char digest[65]);

/* The run's parameters as JSON into x->ptext (with bdigest, from dedup_pool_load_benchmarks) and their
 * fingerprint into x->fp. */
void dedup_pool_make_params(dedup_ctx *x, const char *bdigest);

/* Existing decisions or searches of the model in c with another fingerprint than x->fp: an error (naming the
 * earlier parameters and --force) unless there are none. 0 or -1. */
int dedup_pool_check_fingerprint(dedup_ctx *x, catalog *c);

/* Drops every dedup row of the model in c (decisions, components, edges, benchmark matches, searches), in one
 * transaction. 0 or -1. */
int dedup_pool_drop_model_rows(dedup_ctx *x, catalog *c);

/* Pool images (members of a collection with role pool) with an embedding of the model, sorted by id, from
 * catalog src into x->pool (score per x->p.keep, pHash when decoded, files mapped into x->vf). use_state: take
 * the decided / searched-with-x->fp flags from src (0: all clear). 0 or -1. */
int dedup_pool_load(dedup_ctx *x, catalog *src, int use_state);

/* Flags (query = 1) the pool images this run searches: neither decided nor searched, owned by the run's part
 * (by SHA-256) and, in a partitioned run (parted), not searched with x->fp in the part file already. *nq gets
 * their number. 0 or -1. */
int dedup_pool_select_queries(dedup_ctx *x, int parted, int64_t *nq);

#endif
