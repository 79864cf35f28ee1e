-- lvd catalog, schema version 1: the ledger of every URL, image, decode and run of a work directory.
-- Migrations are applied in order on open (common/catalog.c); never edit a released migration, add a new one.
-- Times are ISO 8601 UTC text. Paths are relative to the work directory.

-- One row per stage invocation: which stage wrote a row, when, with which parameters.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    stage       TEXT NOT NULL,                 -- crawl, import, decode, ...
    part        TEXT NOT NULL DEFAULT '0/1',   -- I/N of a partitioned run
    params      TEXT NOT NULL,                 -- JSON of the options that shape results
    fingerprint TEXT NOT NULL,                 -- hex SHA-256 of the result-shaping parameters
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    status      TEXT NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
    summary     TEXT                           -- JSON counts at the end
);

-- Named sets of images: the web pool, seed datasets, evaluation benchmarks.
CREATE TABLE collections (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    role       TEXT NOT NULL CHECK (role IN ('pool', 'seed', 'benchmark')),
    created_at TEXT NOT NULL
);

-- Tar shards; bytes past `committed` are not part of the catalog and are truncated on the next append.
CREATE TABLE shards (
    id        INTEGER PRIMARY KEY,
    path      TEXT NOT NULL UNIQUE,
    kind      TEXT NOT NULL CHECK (kind IN ('raw', 'img')),
    committed INTEGER NOT NULL DEFAULT 0,     -- bytes: end of the last committed member
    members   INTEGER NOT NULL DEFAULT 0      -- committed members (files, not samples)
);

-- Original image bytes, content-addressed: the same bytes from two sources are one image.
CREATE TABLE images (
    id         INTEGER PRIMARY KEY,
    sha256     TEXT NOT NULL UNIQUE,          -- of the original bytes, lowercase hex
    bytes      INTEGER NOT NULL,
    format     TEXT NOT NULL,                 -- sniffed from magic bytes: jpeg, png, webp, gif, unknown, ...
    shard_id   INTEGER NOT NULL REFERENCES shards(id),
    offset     INTEGER NOT NULL,              -- of the data in the shard
    run_id     INTEGER REFERENCES runs(id),
    created_at TEXT NOT NULL
);

-- Every URL ever listed, with the outcome of its last fetch attempt.
CREATE TABLE urls (
    id            INTEGER PRIMARY KEY,
    url           TEXT NOT NULL UNIQUE,
    collection_id INTEGER NOT NULL REFERENCES collections(id),
    key           TEXT NOT NULL,              -- the list's key column, else derived from the URL
    caption       TEXT,
    extra         TEXT,                       -- other list columns, JSON object
    source        TEXT NOT NULL,              -- "list.csv:12"
    status        TEXT NOT NULL DEFAULT 'pending', -- pending, ok, bad_type, or a fetch status (fetch.h)
    transient     INTEGER NOT NULL DEFAULT 0, -- 1 if --retry-failed should try it again
    http_status   INTEGER,
    final_url     TEXT,
    content_type  TEXT,
    bytes         INTEGER,
    sha256        TEXT,
    image_id      INTEGER REFERENCES images(id),
    attempts      INTEGER NOT NULL DEFAULT 0,
    error         TEXT,
    first_at      TEXT,                       -- first attempt
    last_at       TEXT,                       -- last attempt
    run_id        INTEGER REFERENCES runs(id),
    UNIQUE (collection_id, key)
);
CREATE INDEX urls_status ON urls(status, transient);

-- Membership of images in collections, under the key the source gave (URL key, relative path, tar key).
CREATE TABLE members (
    collection_id INTEGER NOT NULL REFERENCES collections(id),
    key           TEXT NOT NULL,
    image_id      INTEGER NOT NULL REFERENCES images(id),
    label         TEXT,                       -- seeds and benchmarks: class label, if known
    source        TEXT,                       -- file path, tar member or URL
    run_id        INTEGER REFERENCES runs(id),
    PRIMARY KEY (collection_id, key)
);
CREATE INDEX members_image ON members(image_id);

-- Validation and the working image, one row per image for the decode parameters last used on it.
CREATE TABLE decodes (
    image_id    INTEGER PRIMARY KEY REFERENCES images(id),
    fingerprint TEXT NOT NULL,                -- decode parameters; a different value means "redo"
    status      TEXT NOT NULL,                -- ok, unsupported, too_many_pixels, truncated, corrupt,
                                              -- too_small, bad_aspect, error
    error       TEXT,
    format      TEXT,                         -- decoded format
    width       INTEGER,                      -- original size after EXIF orientation, pixels
    height      INTEGER,
    out_width   INTEGER,                      -- working image size
    out_height  INTEGER,
    phash       TEXT,                         -- 64-bit DCT hash, 16 hex digits
    shard_id    INTEGER REFERENCES shards(id),
    offset      INTEGER,
    size        INTEGER,
    out_format  TEXT,                         -- jpeg or webp
    run_id      INTEGER REFERENCES runs(id),
    created_at  TEXT NOT NULL
);
CREATE INDEX decodes_status ON decodes(status);
