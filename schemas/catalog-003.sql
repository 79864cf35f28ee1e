-- lvd catalog, schema version 3: near-duplicate removal inside the pool and benchmark decontamination
-- (lvd-dedup). Everything is per embedding model: the same pool deduplicated with two models keeps two
-- independent sets of rows. Similarities are cosines of the model's L2-normalised embeddings, in [-1, 1].
--
-- Definitions used by the columns below:
--   graph      pool images (role pool, decoded ok, with an embedding of the model) are nodes. An edge joins
--              two pool images when one is among the other's k nearest neighbours with cosine > threshold
--              (kind 'knn'), or when their pHashes differ by at most phash_distance bits (kind 'phash';
--              only when --phash-distance is given). Images with identical SHA-256 are one image already.
--              pHash pairs are stored as a spanning subset, not all of them: images with equal pHashes are
--              chained in image id order, and two pHash values within the distance are joined through their
--              lowest-id images. Components are the same as with every pair; the weakest link and each image's
--              strongest edge are taken over the stored edges.
--   component  a connected component of that graph (union-find). Its id is the smallest image id among its
--              members, so it is the same whatever order the edges were found in (one run, parts, rounds).
--   spanning   the maximum spanning forest: edges taken in descending similarity (ties: smaller image ids
--   forest     first), an edge kept if it joins two different trees (Kruskal). Its weakest edge inside a
--              component is the maximin chaining link: the largest t such that the edges with similarity
--              >= t still connect the whole component. A low value means the component holds images joined
--              only transitively.
--   benchmark  a pool image whose cosine to an image of a `benchmark` collection is > benchmark_threshold
--   match      (searched among its k nearest benchmark images, per benchmark collection).

-- One row per lvd-dedup run that changed decisions of a model (written by the run, or by --merge for a
-- partitioned run): the parameters that shaped the result, queryable without parsing runs.params.
CREATE TABLE dedup_runs (
    id                  INTEGER PRIMARY KEY,
    run_id              INTEGER NOT NULL REFERENCES runs(id), -- the stage run (stage 'dedup') that wrote it
    model_id            INTEGER NOT NULL REFERENCES models(id), -- --model: the embedding model deduplicated
    fingerprint         TEXT NOT NULL,    -- hex SHA-256 of the result-shaping parameters below; a model's
                                          -- decisions all come from runs with one fingerprint (else --force)
    k                   INTEGER NOT NULL, -- --k: nearest neighbours searched per pool image (self and benchmark)
    threshold           REAL NOT NULL,    -- --threshold: a self edge needs cosine strictly above this
    benchmark_threshold REAL NOT NULL,    -- --benchmark-threshold: a benchmark match needs cosine strictly above
    benchmark_rule      TEXT NOT NULL CHECK (benchmark_rule IN ('component', 'image')),
                                          -- component: a match removes the pool image's whole component
                                          -- (DINOv2); image: only the matching pool image
    keep_rule           TEXT NOT NULL,    -- --keep-rule: which member a component keeps, e.g. 'pixels' =
                                          -- largest original width*height, then lowest image id
    phash_distance      INTEGER,          -- --phash-distance: pHash Hamming distance <= this joins images;
                                          -- NULL = pHash joining off
    index_desc          TEXT,             -- knn_describe() of the pool index searched (exact / IVF, recall)
    new_images          INTEGER NOT NULL DEFAULT 0, -- pool images decided for the first time by this run
    changed_components  INTEGER NOT NULL DEFAULT 0, -- components (re)computed by this run
    forced              INTEGER NOT NULL DEFAULT 0, -- 1 if --force dropped earlier decisions of the model
    created_at          TEXT NOT NULL
);
CREATE INDEX dedup_runs_model ON dedup_runs(model_id, id);

-- Graph edges between pool images (see "graph" above), stored once per unordered pair (image_a < image_b).
-- Kept so incremental runs can recompute a component that new images join, and so the audit can draw them.
-- Partitioned runs write the edges of their share of query images to their part file; --merge folds them.
CREATE TABLE dedup_edges (
    model_id     INTEGER NOT NULL REFERENCES models(id),
    image_a      INTEGER NOT NULL REFERENCES images(id), -- the smaller image id of the pair
    image_b      INTEGER NOT NULL REFERENCES images(id), -- the larger image id
    sim          REAL NOT NULL,       -- cosine between the two embeddings (for 'phash' edges it may be
                                      -- below the threshold: the edge exists because of the pHash)
    kind         TEXT NOT NULL CHECK (kind IN ('knn', 'phash')), -- 'knn' when the k-NN search found it
                                      -- with cosine > threshold (even if the pHashes also match), else
                                      -- 'phash' (its cosine can exceed the threshold when neither image is
                                      -- among the other's k nearest)
    phash_dist   INTEGER,             -- Hamming distance of the two pHashes when pHash joining is on and it
                                      -- is at most phash_distance, else NULL
    dedup_run_id INTEGER REFERENCES dedup_runs(id), -- the run that found it (NULL in part files)
    PRIMARY KEY (model_id, image_a, image_b)
) WITHOUT ROWID;
CREATE INDEX dedup_edges_b ON dedup_edges(model_id, image_b); -- dropped by catalog-004.sql

-- Every (pool image, benchmark image) pair with cosine > benchmark_threshold among the k nearest images of
-- each benchmark collection to the pool image. The audit shows the top pairs and similarity bands from it.
CREATE TABLE dedup_benchmark_matches (
    model_id      INTEGER NOT NULL REFERENCES models(id),
    image_id      INTEGER NOT NULL REFERENCES images(id),      -- the pool image
    collection_id INTEGER NOT NULL REFERENCES collections(id), -- the benchmark collection searched
    bench_image_id INTEGER NOT NULL REFERENCES images(id),     -- the benchmark image matched
    sim           REAL NOT NULL,                               -- their cosine (> benchmark_threshold)
    dedup_run_id  INTEGER REFERENCES dedup_runs(id),           -- the run that found it (NULL in part files)
    PRIMARY KEY (model_id, image_id, collection_id, bench_image_id)
) WITHOUT ROWID;
CREATE INDEX dedup_benchmark_matches_bench ON dedup_benchmark_matches(model_id, bench_image_id);
CREATE INDEX dedup_benchmark_matches_sim ON dedup_benchmark_matches(model_id, sim);

-- One row per component (of every size, singletons included) of a model's pool graph.
CREATE TABLE dedup_components (
    model_id       INTEGER NOT NULL REFERENCES models(id),
    component      INTEGER NOT NULL,  -- component id = the smallest image id among its members
    size           INTEGER NOT NULL,  -- member pool images
    kept_image_id  INTEGER REFERENCES images(id), -- the member kept (chosen by keep_rule among members not
                                      -- removed for benchmarks); NULL when every member was removed
    removed_duplicate INTEGER NOT NULL, -- members removed as duplicates of kept_image_id
    removed_benchmark INTEGER NOT NULL, -- members removed for benchmarks
    weakest_sim    REAL,              -- weakest edge of the component's maximum spanning forest (the maximin
                                      -- chaining link, see above); NULL for a singleton
    weakest_a      INTEGER REFERENCES images(id), -- its two images (weakest_a < weakest_b)
    weakest_b      INTEGER REFERENCES images(id),
    weakest_kind   TEXT,              -- 'knn' or 'phash': the kind of that edge
    strongest_sim  REAL,              -- strongest edge inside the component; NULL for a singleton
    bench_image_id INTEGER REFERENCES images(id), -- strongest benchmark match of any member (NULL: none)
    bench_via_image_id INTEGER REFERENCES images(id), -- the member holding that match
    bench_sim      REAL,              -- its cosine (> benchmark_threshold), else NULL
    dedup_run_id   INTEGER NOT NULL REFERENCES dedup_runs(id), -- the run that last (re)computed it
    PRIMARY KEY (model_id, component)
) WITHOUT ROWID;

-- One row per pool image of a model that lvd-dedup has decided: its decision and the evidence for it.
-- An image without a row is new to the model's dedup (the next run searches it).
CREATE TABLE dedup_decisions (
    model_id       INTEGER NOT NULL REFERENCES models(id),
    image_id       INTEGER NOT NULL REFERENCES images(id), -- the pool image
    decision       TEXT NOT NULL CHECK (decision IN ('kept', 'duplicate', 'benchmark')),
                                      -- kept: in the curated pool; duplicate: removed, another member of its
                                      -- component is kept; benchmark: removed for a benchmark match
    component      INTEGER NOT NULL,  -- its component (dedup_components.component)
    kept_image_id  INTEGER REFERENCES images(id), -- the component's kept image (itself when kept; NULL when
                                      -- the whole component was removed)
    kept_sim       REAL,              -- cosine between this image and kept_image_id (1 for itself); under
                                      -- chaining it can be far below the threshold
    edge_image_id  INTEGER REFERENCES images(id), -- the other end of this image's strongest edge inside its
                                      -- component: the edge that links it to the component (NULL: singleton)
    edge_sim       REAL,              -- that edge's cosine: for a duplicate, "the similarity that removed it"
    edge_kind      TEXT,              -- 'knn' or 'phash'
    bench_image_id INTEGER REFERENCES images(id), -- decision benchmark: the benchmark image the removal is
                                      -- attributed to (this image's own strongest match if it has one, else
                                      -- the component's strongest match); other decisions: its own strongest
                                      -- match if any (image rule never leaves one on a kept image), else NULL
    bench_collection_id INTEGER REFERENCES collections(id), -- the benchmark collection of bench_image_id
    bench_sim      REAL,              -- cosine of that match
    bench_via_image_id INTEGER REFERENCES images(id), -- the pool image holding that match (itself, or the
                                      -- member of its component whose match removed the component)
    dedup_run_id   INTEGER NOT NULL REFERENCES dedup_runs(id), -- the run that last wrote this row
    PRIMARY KEY (model_id, image_id)
) WITHOUT ROWID;
CREATE INDEX dedup_decisions_component ON dedup_decisions(model_id, component);
CREATE INDEX dedup_decisions_decision ON dedup_decisions(model_id, decision);

-- Pool images searched by a partitioned run (part files only): the merge decides exactly these, and refuses
-- a set of parts that does not cover every new image.
CREATE TABLE dedup_searched (
    model_id    INTEGER NOT NULL,     -- models.id of catalog.db
    image_id    INTEGER NOT NULL,     -- images.id of catalog.db
    fingerprint TEXT NOT NULL,        -- the dedup fingerprint the part searched with
    PRIMARY KEY (model_id, image_id)
) WITHOUT ROWID;

-- The audit's view of removals: one row per removed pool image with the reason, the image it loses to and
-- the similarity of the edge that caused the removal.
--   duplicate: ref_image_id = the kept image of its component, cause_sim = edge_sim (its strongest edge into
--              the component, to cause_image_id), ref_sim = kept_sim (direct cosine to the kept image)
--   benchmark: ref_image_id = the benchmark image, cause_sim = ref_sim = bench_sim (the match of
--              cause_image_id = bench_via_image_id, itself or the member that took its component down)
CREATE VIEW dedup_removals AS
SELECT d.model_id, d.image_id, d.decision AS reason, d.component,
       CASE d.decision WHEN 'duplicate' THEN d.kept_image_id ELSE d.bench_image_id END AS ref_image_id,
       CASE d.decision WHEN 'duplicate' THEN d.kept_sim ELSE d.bench_sim END AS ref_sim,
       CASE d.decision WHEN 'duplicate' THEN d.edge_image_id ELSE d.bench_via_image_id END AS cause_image_id,
       CASE d.decision WHEN 'duplicate' THEN d.edge_sim ELSE d.bench_sim END AS cause_sim,
       d.bench_collection_id, d.dedup_run_id
FROM dedup_decisions d
WHERE d.decision <> 'kept';
