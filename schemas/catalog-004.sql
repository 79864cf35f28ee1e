-- lvd catalog, schema version 4: dedup_edges loses its secondary index on image_b and gains an append-only
-- staging table (dedup_edges_found), and lvd-dedup records every searched pool image's nearest neighbour
-- (dedup_nearest), whatever its similarity.
--
-- Nothing looks edges up by their larger image: lvd-dedup reads a model's edges by the primary key
-- (model_id, image_a, image_b) and lvd-audit reads components and decisions. The index cost one random B-tree
-- insert per edge: at 1,000,000 pool images with ~13 edges each it doubled the pages every search transaction
-- dirtied (benchmarks/RESULTS.md, "Edge-heavy variant").
DROP INDEX IF EXISTS dedup_edges_b;

-- k-NN edges that a search found but has not yet moved into dedup_edges. Each search batch appends its edges
-- here in the transaction that marks its queries searched, so the search writes only new pages (dedup_edges,
-- keyed by (image_a, image_b), would take each batch's edges at positions all over the B-tree). When a run's
-- search ends (and before it decides anything), the rows are sorted and moved into dedup_edges in one
-- transaction, each pair once, and deleted here; a killed run's rows wait for the next run's move. Empty
-- between completed runs. A part file (--part) moves its own rows; --merge also takes any a part left behind.
CREATE TABLE dedup_edges_found (
    model_id INTEGER NOT NULL,  -- models.id of catalog.db
    image_a  INTEGER NOT NULL,  -- the smaller image id of the pair
    image_b  INTEGER NOT NULL,  -- the larger image id
    sim      REAL NOT NULL      -- their cosine (> threshold), as dedup_edges.sim; a pair found from both sides
                                -- in two batches appears twice with the same value
);

-- The nearest neighbour of every pool image lvd-dedup searched, in the pool and in each benchmark collection,
-- recorded whether or not it is above the thresholds (dedup_edges and dedup_benchmark_matches hold only the
-- pairs above them). lvd-audit draws their distribution, so a person can see what a lower threshold would
-- remove. One row per (model, pool image, searched collection); similarities as in catalog-003.sql.
--
--   pool rows       collection_id = 0 (no collection has id 0: ids start at 1). nearest_image_id is the most
--                   similar OTHER pool image among the k nearest the search returned (pool images with an
--                   identical SHA-256 are one image already, so never each other's neighbour); sim is
--                   recomputed from the stored embeddings exactly as an edge's is (float32 products summed in
--                   double, the smaller image id's vector first), so (with exact search) a pool image
--                   with an edge has sim = its strongest 'knn' edge. No row when the pool holds no other image.
--   benchmark rows  collection_id = the benchmark collection's id; nearest_image_id is its most similar image
--                   among the k searched, sim their cosine computed as for dedup_benchmark_matches (so equal
--                   to the image's strongest match there when it has one). No row when the benchmark has no
--                   image with an embedding of the model.
--   ties            the smaller nearest_image_id.
--   incremental     a later run searches only new pool images, but when a new image finds an older pool image
--   runs            among its k nearest with a higher similarity than the older image's row, that row is
--                   updated to the new image (and re-stamped with the later run). An older image whose nearest
--                   newer image does not have it among its own k nearest keeps its older row (with exact
--                   search this needs k pool images closer to the new image than the old one is). Benchmark
--                   rows never go stale: changing a benchmark changes the fingerprint, which needs --force.
--   parts           each part file holds the rows its searches observed; --merge keeps, per key, the row of
--                   highest sim (ties: smaller nearest_image_id), so parts give the rows of one run.
-- --force drops a model's rows with its other dedup rows.
CREATE TABLE dedup_nearest (
    model_id         INTEGER NOT NULL REFERENCES models(id),
    collection_id    INTEGER NOT NULL,  -- 0: the pool itself; else collections.id of the benchmark searched
                                        -- (no REFERENCES: 0 names no collection)
    image_id         INTEGER NOT NULL REFERENCES images(id), -- the pool image searched
    nearest_image_id INTEGER NOT NULL REFERENCES images(id), -- its most similar image in that collection
                                        -- (pool: another pool image; benchmark: an image of the benchmark)
    sim              REAL NOT NULL,     -- their cosine in [-1, 1], unitless; any value, above the threshold
                                        -- or not
    dedup_run_id     INTEGER REFERENCES dedup_runs(id), -- the run that last wrote the row (NULL in part files)
    PRIMARY KEY (model_id, collection_id, image_id)
) WITHOUT ROWID;
