-- lvd manifest, schema version 1: the curated corpus as one self-contained SQLite file (lvd-manifest build).
-- A manifest is written once (to a temporary file, fsynced, renamed) and never modified afterwards. It opens
-- with `sqlite3` or pandas without the work directory; only the image bytes stay in the tar shards it names.
-- Table and column names are a public contract: a reader of schema version 1 relies on them. A later version
-- adds tables or columns and raises info.schema_version; a reader refuses a version newer than its own.
-- Times are ISO 8601 UTC text. Hashes are lowercase hex SHA-256.

-- Provenance, one value per key (text; JSON where the value is structured):
--   schema_version  '1'
--   lvd_version     the lvd that built it
--   created_at      build time
--   name            --name (default: the manifest file's name without .db)
--   source          'retrieve', 'balance' or 'dedup' (--from)
--   catalog         the work directory's catalog identity: JSON {"path", "schema_version", "runs",
--                   "last_run_at", "images"}; with `source`, the parameters below it makes the build repeatable
--   registry        retrieve: the seed registry's whole text as the model's latest retrieval run read it
--   retrieval       retrieve: JSON {"model": {name, sha256, preprocess, dim}, "run": the retrieve_runs row's
--                   params, "retrieve_run" (its id), "registry_path", "registry_sha256", "scale", "pool_size",
--                   "pool_gen", "run_at", "rows": [{name, method, collection, status, reason (skipped rows),
--                   final}] every registry row of the model; the samples come from those with status 'done'}
--   dedup           JSON {"model": {name, sha256, preprocess, dim}, "params": the last dedup_runs row of that
--                   model: {dedup_run, run, fingerprint, k, threshold, benchmark_threshold, benchmark_rule,
--                   keep_rule, phash_distance, index, created_at}} (absent with a --no-dedup retrieval)
--   counts          JSON per-source counts: {"samples", "sources" (sample_sources rows), "rows": {row name:
--                   images}, "bytes" (sum of samples.length), "shards", "selected" (images the source chose),
--                   "without_working_image": {"total", "not_decoded", "decode_failed", "no_working_image"}:
--                   selected images that are not samples because they have no working image}
CREATE TABLE info (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The working-image tar shards (lvd-decode's `img` shards) the samples' bytes live in. Shards are append-only
-- in the work directory, so `bytes` is the shard's committed size when the manifest was built and `sha256` the
-- hash of those first `bytes` bytes: a shard that has grown since still holds every sample unchanged.
CREATE TABLE shards (
    id     INTEGER PRIMARY KEY,           -- 1..n in path order
    path   TEXT NOT NULL UNIQUE,          -- relative to the manifest's folder, or absolute (--absolute)
    bytes  INTEGER NOT NULL,              -- committed size at build time
    sha256 TEXT NOT NULL                  -- of bytes [0, bytes)
);

-- One row per selected image, ordered by key: id i is the i-th key in byte order (1-based).
CREATE TABLE samples (
    id           INTEGER PRIMARY KEY,     -- 1..n
    key          TEXT NOT NULL UNIQUE,    -- the image's original-bytes SHA-256 (64 hex digits): unique,
                                          -- stable across work directories, and a valid webdataset key
    image_sha256 TEXT NOT NULL,           -- SHA-256 of the original bytes (equal to key in version 1)
    data_sha256  TEXT NOT NULL,           -- SHA-256 of the stored working-image bytes [offset, offset+length)
    shard_id     INTEGER NOT NULL REFERENCES shards(id),
    offset       INTEGER NOT NULL,        -- bytes from the start of the shard to the working image's data
    length       INTEGER NOT NULL,        -- bytes of the working image
    format       TEXT NOT NULL,           -- working image format: 'jpeg' or 'webp'
    width        INTEGER NOT NULL,        -- working image size, pixels
    height       INTEGER NOT NULL,
    orig_width   INTEGER NOT NULL,        -- original image size after EXIF orientation, pixels
    orig_height  INTEGER NOT NULL,
    orig_format  TEXT,                    -- the original bytes' format (catalog images.format)
    orig_bytes   INTEGER,                 -- the original bytes' size
    collection   TEXT,                    -- the first collection (by name) the image is a member of
    member_key   TEXT,                    -- its key in that collection
    url          TEXT,                    -- the URL it was fetched from (the first by URL text), or NULL
    caption      TEXT,                    -- that URL's caption, or NULL
    label        TEXT,                    -- that membership's label (seed collections), or NULL
    weight       INTEGER NOT NULL DEFAULT 1 CHECK (weight >= 1) -- times it counts in an epoch (balance)
);

-- Why each sample was chosen: one row per (sample, source row). For --from retrieve, row is the registry row
-- name and method its method (as_is, sample, cluster) with the retrieve_selections evidence; for --from dedup,
-- row 'dedup' and method 'kept'; for --from balance, row 'balance' and method 'balance'.
CREATE TABLE sample_sources (
    sample_id  INTEGER NOT NULL REFERENCES samples(id),
    row        TEXT NOT NULL,
    method     TEXT NOT NULL,
    seed_key   TEXT,                      -- sample / as_is: the seed image's key (its SHA-256); else NULL
    rank       INTEGER,                   -- retrieve_selections.rank
    similarity REAL,                      -- retrieve_selections.sim
    cluster    INTEGER,                   -- cluster rows: the k-means cluster
    collisions INTEGER NOT NULL DEFAULT 0,-- sample rows: other seeds of the row that also found it
    PRIMARY KEY (sample_id, row)
) WITHOUT ROWID;
CREATE INDEX sample_sources_row ON sample_sources(row, method);

-- Counts per source row and method: images, and of those how many other rows also chose.
CREATE VIEW row_counts AS
SELECT s.row AS row, s.method AS method, COUNT(*) AS images,
       SUM(CASE WHEN (SELECT COUNT(*) FROM sample_sources o WHERE o.sample_id = s.sample_id) > 1
                THEN 1 ELSE 0 END) AS shared
FROM sample_sources s GROUP BY s.row, s.method ORDER BY s.row;
