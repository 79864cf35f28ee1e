-- lvd catalog, schema version 6: retrieval of pool images near seed datasets (lvd-retrieve; DINOv2 paper §3
-- and Table 15). Everything is per retrieval model (--model, models.id): the same catalog retrieved with two
-- models keeps two independent sets of rows. Similarities are cosines of the model's L2-normalised
-- embeddings, in [-1, 1].
--
-- Definitions used by the columns below:
--   pool       the images lvd-retrieve selects from: members of `pool` collections that lvd-dedup kept
--              (dedup_decisions.decision = 'kept') with the dedup model (--dedup-model), or every pool image
--              with --no-dedup, that have an embedding of the retrieval model.
--   generation a counter per retrieval model, raised by every run that finds images entering or leaving the
--              pool. An image's gen is the generation it entered at; a seed searched at generation g has seen
--              every pool image with gen <= g, so an incremental run searches it against the newer images only.
--              A seed whose neighbours include an image that left is searched again from scratch.
--   row        one row of the seed registry (schemas/lvd142m.yaml): a seed collection and a method.
--              as_is: the seed images themselves; sample: each seed image's k nearest pool images; cluster:
--              pool images of the k-means clusters that hold more than min_seeds of the row's seeds.
--   rank       sample: 0-based position among a seed's neighbours by similarity (descending; ties: lower
--              image id first). cluster: 0-based position in its cluster by similarity to the centroid
--              (descending; ties: lower image id first).

-- One row per retrieval model: how its pool is defined and where its generation counter stands.
CREATE TABLE retrieve_state (
    model_id       INTEGER PRIMARY KEY,  -- models.id of the retrieval model
    dedup_model_id INTEGER,              -- models.id whose dedup decisions define the pool; NULL: --no-dedup
    gen            INTEGER NOT NULL,     -- current pool generation (0 before any image entered)
    pool_size      INTEGER NOT NULL,     -- pool images now
    updated_at     TEXT NOT NULL
);

-- The pool as the last run that updated it saw it. Images that leave it (removed by a later lvd-dedup, or
-- their embedding dropped) are deleted here, and from every selection.
CREATE TABLE retrieve_pool (
    model_id INTEGER NOT NULL,
    image_id INTEGER NOT NULL,   -- images.id
    gen      INTEGER NOT NULL,   -- the generation it entered at
    PRIMARY KEY (model_id, image_id)
) WITHOUT ROWID;
CREATE INDEX retrieve_pool_gen ON retrieve_pool(model_id, gen);

-- One row per (retrieval model, registry row) ever run: the row's parameters as used, and its counts after
-- the last run that selected for it. A row whose parameters change is an error unless --force, which drops
-- its results first.
CREATE TABLE retrieve_rows (
    id            INTEGER PRIMARY KEY,
    model_id      INTEGER NOT NULL,
    name          TEXT NOT NULL,      -- the registry row's name, e.g. 'imagenet1k-sample'
    task          TEXT,               -- registry: classification, fine-grained, segmentation, depth, retrieval
    dataset       TEXT,
    split         TEXT,
    method        TEXT NOT NULL CHECK (method IN ('as_is', 'sample', 'cluster')),
    collection    TEXT NOT NULL,      -- the seed collection's name
    collection_id INTEGER,            -- collections.id; NULL while it does not exist
    k             INTEGER,            -- sample: neighbours per seed image
    clusters      INTEGER,            -- cluster: k-means centroids (after --scale)
    per_cluster   INTEGER,            -- cluster: pool images taken from a chosen cluster at most
    cap           INTEGER,            -- cluster: images of the row at most
    min_seeds     INTEGER,            -- cluster: a cluster is chosen when it holds more than this many seeds
    kmeans_id     INTEGER,            -- cluster: the k-means its selection used (retrieve_kmeans.id)
    fingerprint   TEXT NOT NULL,      -- hex SHA-256 of the parameters that shape the row's result
    status        TEXT NOT NULL CHECK (status IN ('pending', 'done', 'skipped')),
                                      -- pending: set up, not selected yet (a partitioned run before --merge)
    reason        TEXT,               -- skipped: why (missing or empty collection, ...)
    seeds         INTEGER,            -- seed images of the collection with an embedding of the model
    retrieved     INTEGER,            -- sample: seeds x neighbours found (collisions counted each time);
                                      -- cluster: images taken from chosen clusters before the cap; as_is: seeds
    collisions    INTEGER,            -- sample: retrieved - unique (a pool image found by several seeds)
    unique_images INTEGER,            -- distinct images selected before the cap
    capped        INTEGER,            -- cluster: images dropped by the cap
    final         INTEGER,            -- images selected for the row (retrieve_selections rows)
    paper_seeds   INTEGER,            -- registry: the paper's seed count
    paper_final   INTEGER,            -- registry: the paper's final count
    seeds_digest  TEXT,               -- hex SHA-256 of the seed image ids the last selection used
    selected_gen  INTEGER,            -- the pool generation of the last selection
    retrieve_run_id INTEGER,          -- the retrieve_runs row that last selected for it
    UNIQUE (model_id, name)
);

-- One row per lvd-retrieve run that wrote results (a one-part run, or --merge): its parameters.
CREATE TABLE retrieve_runs (
    id              INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES runs(id),
    model_id        INTEGER NOT NULL,
    dedup_model_id  INTEGER,           -- NULL: --no-dedup
    registry_path   TEXT NOT NULL,
    registry_sha256 TEXT NOT NULL,
    registry        TEXT NOT NULL,     -- the registry file's whole text
    scale           TEXT NOT NULL,     -- 'auto' or 'none'
    pool_size       INTEGER NOT NULL,
    pool_gen        INTEGER NOT NULL,
    params          TEXT NOT NULL,     -- JSON: every option that shapes results
    summary         TEXT,              -- JSON: per-row counts
    created_at      TEXT NOT NULL
);

-- Sample rows: each seed image's k nearest pool images, kept so that pool images added later are searched
-- against the seeds alone and merged (the result equals a search from scratch).
CREATE TABLE retrieve_hits (
    row_id        INTEGER NOT NULL,   -- retrieve_rows.id
    seed_image_id INTEGER NOT NULL,   -- images.id of the seed image
    rank          INTEGER NOT NULL,   -- 0 .. k-1
    image_id      INTEGER NOT NULL,   -- the pool image
    sim           REAL NOT NULL,      -- cosine between the two
    PRIMARY KEY (row_id, seed_image_id, rank)
) WITHOUT ROWID;
CREATE INDEX retrieve_hits_image ON retrieve_hits(row_id, image_id);

-- Sample rows: the pool generation each seed image was last searched at (see "generation").
CREATE TABLE retrieve_seeds (
    row_id        INTEGER NOT NULL,
    seed_image_id INTEGER NOT NULL,
    searched_gen  INTEGER NOT NULL,
    PRIMARY KEY (row_id, seed_image_id)
) WITHOUT ROWID;

-- Spherical k-means of a model's pool (per setting, the newest is current; --recluster trains a new one). The
-- centroids, (clusters, dim) float32 unit vectors, are WORK/clusters/<model>/kmeans-<id>-<clusters>.npy.
CREATE TABLE retrieve_kmeans (
    id           INTEGER PRIMARY KEY,
    model_id     INTEGER NOT NULL,
    clusters     INTEGER NOT NULL,
    setting      TEXT NOT NULL,       -- what chose that number: 'auto:<n>' (--scale auto: n scaled with the
                                      -- pool when trained) or 'fixed:<n>'; rows with one setting share it
    path         TEXT NOT NULL,       -- relative to WORK
    sha256       TEXT NOT NULL,       -- of that file
    seed         INTEGER NOT NULL,    -- --kmeans-seed
    iterations   INTEGER NOT NULL,    -- --kmeans-iters
    train_points INTEGER NOT NULL,    -- pool images it was trained on (a sample when the pool is large)
    pool_size    INTEGER NOT NULL,    -- pool images when trained
    pool_gen     INTEGER NOT NULL,    -- pool generation when trained
    objective    REAL,                -- mean cosine of the training points to their centroid
    created_at   TEXT NOT NULL,
    run_id       INTEGER REFERENCES runs(id)
);
CREATE INDEX retrieve_kmeans_model ON retrieve_kmeans(model_id, setting, id);

-- The nearest centroid of every pool image and of every seed image of cluster rows, per k-means.
CREATE TABLE retrieve_assign (
    kmeans_id INTEGER NOT NULL,
    image_id  INTEGER NOT NULL,
    cluster   INTEGER NOT NULL,       -- 0 .. clusters-1 (ties: the lower index)
    sim       REAL NOT NULL,          -- cosine to that centroid
    PRIMARY KEY (kmeans_id, image_id)
) WITHOUT ROWID;
CREATE INDEX retrieve_assign_cluster ON retrieve_assign(kmeans_id, cluster, sim);

-- Cluster rows: every cluster holding at least one seed of the row.
CREATE TABLE retrieve_clusters (
    row_id  INTEGER NOT NULL,
    cluster INTEGER NOT NULL,
    size    INTEGER NOT NULL,         -- pool images in it
    seeds   INTEGER NOT NULL,         -- the row's seed images in it
    chosen  INTEGER NOT NULL,         -- 1 if seeds > min_seeds
    taken   INTEGER NOT NULL,         -- images taken from it (at most per_cluster), before the row's cap
    kept    INTEGER NOT NULL,         -- of those, after the cap
    PRIMARY KEY (row_id, cluster)
) WITHOUT ROWID;

-- What each row selected (the latest results), one row per (row, image).
CREATE TABLE retrieve_selections (
    row_id        INTEGER NOT NULL,   -- retrieve_rows.id
    image_id      INTEGER NOT NULL,   -- images.id
    seed_image_id INTEGER,            -- as_is: itself; sample: the seed that found it most similar (ties: the
                                      -- lower seed image id); cluster: NULL
    rank          INTEGER,            -- see "rank" (as_is: 0)
    sim           REAL,               -- sample: cosine to that seed; cluster: to its centroid; as_is: 1
    cluster       INTEGER,            -- cluster rows: its cluster
    collisions    INTEGER NOT NULL DEFAULT 0, -- sample: how many other seeds of the row also found it
    PRIMARY KEY (row_id, image_id)
) WITHOUT ROWID;
CREATE INDEX retrieve_selections_image ON retrieve_selections(image_id);
