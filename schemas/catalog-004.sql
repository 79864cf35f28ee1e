-- lvd catalog, schema version 4: dedup_edges loses its secondary index on image_b.
--
-- Nothing looks edges up by their larger image: lvd-dedup reads a model's edges by the primary key
-- (model_id, image_a, image_b) and lvd-audit reads components and decisions. The index cost one random B-tree
-- insert per edge: at 1,000,000 pool images with ~13 edges each it doubled the pages every search transaction
-- dirtied (benchmarks/RESULTS.md, "Edge-heavy variant").
DROP INDEX IF EXISTS dedup_edges_b;
