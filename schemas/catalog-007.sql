-- lvd catalog, schema version 7: balanced sampling of a pool by hierarchical k-means (lvd-balance; Vo et al.
-- 2024, ssl-data-curation; curate/balance/hkmeans.h and sampler.h give the method). Everything is per
-- embedding model (--model, models.id) and source (--from): each pair has its own tree.
--
-- Definitions used by the columns below:
--   pool     the images lvd-balance samples from, with an embedding of the model: source 'dedup', pool
--            images kept by the dedup model (dedup_decisions.decision = 'kept'); source 'retrieve', the union
--            of the latest lvd-retrieve selections of the model (retrieve_rows with status 'done').
--   tree     the hierarchical k-means of a pool: levels 1 .. n_levels, level 1 clusters the images, level
--            l > 1 the centroids of level l - 1. A point's cluster at level l is the parent of its cluster at
--            level l - 1. Images entering the pool after the tree was built are assigned to their nearest
--            level-1 centroid (squared L2, ties to the lower index) and follow the parents up; images leaving
--            it are deleted from the tree and from the sample.
--   dist     squared L2 distance of an image's embedding to its cluster's centroid at that level.
--   sample   the balanced sample of the tree's current points to a target size: per image a number of
--            copies (1 .. multiplier), the weight lvd-manifest build --from balance gives it.

-- One row per tree built (the newest of a (model, source) is current; --rebuild builds a new one).
CREATE TABLE balance_trees (
    id             INTEGER PRIMARY KEY,
    model_id       INTEGER NOT NULL,   -- models.id of the embeddings clustered
    source         TEXT NOT NULL CHECK (source IN ('dedup', 'retrieve')),
    dedup_model_id INTEGER,            -- source 'dedup': the model whose decisions define the pool
    n_levels       INTEGER NOT NULL,
    params         TEXT NOT NULL,      -- JSON: the config keys that shape the tree (levels, n_iters, seed)
    fingerprint    TEXT NOT NULL,      -- hex SHA-256 of params
    config_path    TEXT NOT NULL,
    config         TEXT NOT NULL,      -- the config file's whole text
    built_points   INTEGER NOT NULL,   -- pool images it was built on
    seconds        REAL,               -- wall time of the build
    created_at     TEXT NOT NULL,
    run_id         INTEGER REFERENCES runs(id)
);
CREATE INDEX balance_trees_model ON balance_trees(model_id, source, id);

-- Per tree and level: the centroids, (k, dim) float32, WORK/balance/<model>/tree-<id>-level-<l>.npy.
CREATE TABLE balance_levels (
    tree_id   INTEGER NOT NULL,        -- balance_trees.id
    level     INTEGER NOT NULL,        -- 1 .. n_levels
    k         INTEGER NOT NULL,        -- clusters (after splits)
    path      TEXT NOT NULL,           -- relative to WORK
    sha256    TEXT NOT NULL,           -- of that file
    objective REAL,                    -- mean squared L2 of the level's items to their centroids, when built
    runs      INTEGER NOT NULL,        -- k-means runs the level took (1 + resampling steps + splits)
    PRIMARY KEY (tree_id, level)
) WITHOUT ROWID;

-- Every cluster of a tree: its parent and its size when built.
CREATE TABLE balance_clusters (
    tree_id    INTEGER NOT NULL,
    level      INTEGER NOT NULL,
    cluster    INTEGER NOT NULL,       -- 0 .. k - 1
    parent     INTEGER,                -- its cluster at level + 1; NULL at the top level
    built_size INTEGER NOT NULL,       -- pool images in it when the tree was built
    PRIMARY KEY (tree_id, level, cluster)
) WITHOUT ROWID;

-- Every current point of the current tree, one row per level.
CREATE TABLE balance_points (
    tree_id  INTEGER NOT NULL,
    image_id INTEGER NOT NULL,         -- images.id
    level    INTEGER NOT NULL,
    cluster  INTEGER NOT NULL,
    dist     REAL NOT NULL,            -- see "dist"
    added    INTEGER NOT NULL,         -- 0: the tree was built on it; else the runs.id that assigned it
    PRIMARY KEY (tree_id, image_id, level)
) WITHOUT ROWID;
CREATE INDEX balance_points_cluster ON balance_points(tree_id, level, cluster);

-- One row per sample drawn (the newest of a tree is current).
CREATE TABLE balance_samples (
    id              INTEGER PRIMARY KEY,
    tree_id         INTEGER NOT NULL,
    target          INTEGER NOT NULL,  -- target_size / --target
    multiplier      INTEGER NOT NULL,  -- copies of one image at most
    sampling        TEXT NOT NULL CHECK (sampling IN ('r', 'c')), -- leaf remainder: random or closest
    seed            INTEGER NOT NULL,
    points          INTEGER NOT NULL,  -- tree points sampled from
    total           INTEGER NOT NULL,  -- sum of copies: min(target, points * multiplier)
    distinct_images INTEGER NOT NULL,
    fingerprint     TEXT NOT NULL,     -- of the tree state and the sample parameters
    created_at      TEXT NOT NULL,
    run_id          INTEGER REFERENCES runs(id)
);
CREATE INDEX balance_samples_tree ON balance_samples(tree_id, id);

-- The images of the current sample of each tree (older samples' rows are deleted).
CREATE TABLE balance_sample (
    sample_id INTEGER NOT NULL,        -- balance_samples.id
    image_id  INTEGER NOT NULL,
    copies    INTEGER NOT NULL CHECK (copies >= 1),
    cluster   INTEGER NOT NULL,        -- its level-1 (leaf) cluster
    PRIMARY KEY (sample_id, image_id)
) WITHOUT ROWID;

-- Per cluster of the current sample: points in it and the points allotted to it (its quota, copies counted).
CREATE TABLE balance_quotas (
    sample_id INTEGER NOT NULL,
    level     INTEGER NOT NULL,
    cluster   INTEGER NOT NULL,
    size      INTEGER NOT NULL,
    quota     INTEGER NOT NULL,
    PRIMARY KEY (sample_id, level, cluster)
) WITHOUT ROWID;
