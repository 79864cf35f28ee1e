-- lvd catalog, schema version 5: runs that ended without saying so, and which process a run is.
--
-- A run killed by kill -9, the OOM killer or a lost node leaves its row 'running' forever. Every program that
-- opens a catalog for writing holds its lock (common/lock.h: an flock on "<catalog>.lock" that the kernel drops
-- when the process dies), so when one opens it, no live process owns a 'running' row: it marks each such row
-- 'interrupted' with finished_at = the time of the run's last committed transaction (committed_at), or its
-- start if it committed nothing. lvd-status, which only reads, shows such a row as interrupted already when
-- nobody holds the lock.
--
-- SQLite cannot change a CHECK constraint in place, so the table is rebuilt with the same ids (the rows of
-- other tables that refer to runs(id) stay valid; catalog.c runs migrations with foreign keys off, as SQLite's
-- documented table rebuild requires).
CREATE TABLE runs_v5 (
    id           INTEGER PRIMARY KEY,
    stage        TEXT NOT NULL,                 -- crawl, import, decode, ...
    part         TEXT NOT NULL DEFAULT '0/1',   -- I/N of a partitioned run
    params       TEXT NOT NULL,                 -- JSON of the options that shape results
    fingerprint  TEXT NOT NULL,                 -- hex SHA-256 of the result-shaping parameters
    started_at   TEXT NOT NULL,
    finished_at  TEXT,                          -- end time; for 'interrupted', the last commit
    status       TEXT NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'done', 'failed', 'interrupted')),
    summary      TEXT,                          -- JSON counts at the end
    committed_at TEXT,                          -- the run's last committed transaction (NULL: none yet)
    pid          INTEGER,                       -- the process that ran it (NULL for runs before schema 5)
    host         TEXT                           -- and its host name
);
INSERT INTO runs_v5(id, stage, part, params, fingerprint, started_at, finished_at, status, summary)
    SELECT id, stage, part, params, fingerprint, started_at, finished_at, status, summary FROM runs;
DROP TABLE runs;
ALTER TABLE runs_v5 RENAME TO runs;
