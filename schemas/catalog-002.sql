-- lvd catalog, schema version 2: embedding models and where each image's embedding row lives (lvd-embed).

-- One row per embedding model name. The identity of a model is its weights (SHA-256 of the checkpoint
-- file, or of the imported .npy file that created the name) plus its preprocessing; a name keeps one identity
-- (lvd-embed --force reassigns it and drops the old rows). An imported name collects the rows of several
-- --import runs (one collection each, same dim) and keeps its identity; an --import --force that replaces
-- rows gives it a new one, derived from the old identity and the new file.
CREATE TABLE models (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,          -- --name: the directory under WORK/embeddings/
    sha256     TEXT NOT NULL,                 -- of the weights file (or of the imported .npy file)
    preprocess TEXT NOT NULL,                 -- JSON {"resize","crop","pool","dtype"}, or "imported"
    dim        INTEGER NOT NULL,              -- floats per embedding row
    created_at TEXT NOT NULL
);

-- One L2-normalised embedding per (model, image): row `row` of the .npy file `file`.
CREATE TABLE embeddings (
    model_id INTEGER NOT NULL REFERENCES models(id),
    image_id INTEGER NOT NULL REFERENCES images(id),
    file     TEXT NOT NULL,                   -- relative to the work directory:
                                              -- embeddings/<model>/<collection>/part-NNNNNN.npy
    row      INTEGER NOT NULL,                -- 0-based row of the (rows, dim) array
    run_id   INTEGER REFERENCES runs(id),
    PRIMARY KEY (model_id, image_id)
);
CREATE INDEX embeddings_file ON embeddings(model_id, file, row);
